//! The merge of a run into the accounts snapshot, bucket by bucket (the parent module's doc says why buckets).
//!
//! Why this is its own file: choosing the bucket count against the memory budget and deciding which files a
//! new snapshot keeps, adds and drops is the part that touches the table's layout; the registers and the files
//! it reads and writes live beside it.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use arrow::array::StringArray;
use rayon::prelude::*;

use crate::datafile::DataFile;
use crate::error::Result;
use crate::layout::Codec;
use crate::schema::Col;

use super::fold::Folded;
use super::spill::Spill;
use super::{BYTES_PER_GROUP, Bucket, Event};
use crate::layout::ACCOUNTS_DIR;

/// How many buckets the budget is shared between, so the most merged at once: each gets this share of the budget
/// whatever the thread count. A constant, not `--threads`, so that the bucket count, and with it every file of
/// the snapshot, depends on the input and the budget only (a pool with more threads merges this many buckets
/// at a time).
const MERGE_WAYS: u64 = 8;

/// The folder of the staging area that holds the spill files while the merge runs.
const SPILL_DIR: &str = "accounts-spill";

use super::files::*;

/// What the merge needs to know about the run.
pub struct Merge<'a> {
    /// Where to write the new snapshot files (inside the run's staging folder).
    pub staging: &'a Path,
    /// The current snapshot's files ([`snapshot_files`]).
    pub snapshot: &'a [SnapshotFile],
    /// This run's `groups` files (staged, or committed by the runs being merged) that `fold` does not hold.
    pub run_files: Vec<DataFile>,
    /// This run's rows, folded while they were written ([`super::Fold`]): they are not read again.
    pub fold: Option<&'a Folded>,
    /// Rebuild from every `groups` file of the new version (`kept_files` + `run_files`) instead of merging
    /// into the current snapshot.
    pub rebuild: bool,
    /// The current version's `groups` files that the new version keeps (read only when rebuilding).
    pub kept_files: Vec<DataFile>,
    /// Added to new file names where a table must never reuse one (Delta).
    pub name_suffix: Option<&'a str>,
    pub codec: Codec,
    /// Bytes the accounts being merged may take in memory (all buckets merged at once together).
    pub budget: u64,
    /// Buckets are merged in parallel on this pool, one per thread and at most `MERGE_WAYS` at once.
    pub pool: &'a rayon::ThreadPool,
}

/// The outcome: new snapshot files (staged path, final path relative to the output), the current snapshot's
/// files the new version drops, and the number of groups in the new snapshot.
#[derive(Debug, Default)]
pub struct Merged {
    pub adds: Vec<(PathBuf, PathBuf)>,
    pub removes: Vec<PathBuf>,
    pub groups: u64,
    /// Groups that reached more `extra_traits` keys than a group keeps ([`super::MAX_EXTRA_KEYS`]).
    pub groups_over_key_limit: u64,
    pub buckets: u32,
    pub rebuilt: bool,
    /// Rows the fold held, and rows read from `groups` files.
    pub rows_folded: u64,
    pub rows_read: u64,
}

impl Merged {
    /// What the run's report says of it.
    pub fn report(&self) -> crate::report::AccountsReport {
        crate::report::AccountsReport {
            groups: self.groups,
            files_written: self.adds.len(),
            buckets: self.buckets,
            rebuilt: self.rebuilt,
            groups_over_key_limit: self.groups_over_key_limit,
            rows_folded: self.rows_folded,
            rows_read: self.rows_read,
        }
    }
}

/// Merges the run into the snapshot (or rebuilds it), bucket by bucket. See the module doc.
pub fn merge(m: &Merge<'_>) -> Result<Merged> {
    let old = if m.rebuild { &[][..] } else { m.snapshot };
    let old_n = old.first().map_or(0, |f| f.of);
    if let Some(f) = old.iter().find(|f| f.of != old_n) {
        return Err(f
            .file
            .error("snapshot files of different bucket counts".into()));
    }
    let sources: Vec<&DataFile> = if m.rebuild {
        m.kept_files.iter().chain(&m.run_files).collect()
    } else {
        m.run_files.iter().collect()
    };
    let (n, touched, rows_read) = layout(m, &sources, old, old_n)?;

    let mut merged = Merged {
        buckets: n,
        rebuilt: m.rebuild,
        rows_folded: m.fold.map_or(0, Folded::rows),
        rows_read,
        ..Merged::default()
    };
    let old_by_bucket: HashMap<u32, &DataFile> = old.iter().map(|f| (f.bucket, &f.file)).collect();
    // With more buckets to fill than threads, each source is decoded once and its rows routed to the buckets
    // (`spill`), instead of every bucket decoding every source. With as many as threads or fewer, decoding a
    // source once per bucket costs no more than writing and reading the spill (measured on 1M events, 2
    // buckets), so it is not used.
    // A bucket kept as it is: same layout, and no event of the run touches it.
    let kept_as_is = |b: u32| n == old_n && !touched[b as usize];
    let filled = (0..n).filter(|&b| !kept_as_is(b)).count();
    let spill = if filled > m.pool.current_num_threads() && !sources.is_empty() {
        let dir = m.staging.join(SPILL_DIR);
        Some(Spill::route(&sources, n, &dir, m.pool)?)
    } else {
        None
    };
    // One bucket: its new file (staged, final) and rows, or the rows of the old file it keeps; and its groups
    // over the key limit.
    let one = |b: u32| -> Result<BucketDone> {
        let old_file = if old_n > 0 {
            old_by_bucket.get(&(b % old_n)).copied()
        } else {
            None
        };
        if kept_as_is(b) {
            return Ok((
                None,
                old_file.map(|p| p.rows()).transpose()?.unwrap_or(0),
                0,
            ));
        }
        let mut state = Bucket::default();
        if let Some(p) = old_file {
            read_snapshot(p, b, n, &mut state)?;
        }
        if let Some(fold) = m.fold {
            fold.absorb_into(b, n, &mut state)?;
        }
        let mut apply = |group: &str, event: &Event<'_>| state.apply(group, event);
        match &spill {
            Some(spill) => spill.read_bucket(b, n, &mut apply)?,
            None => {
                for p in &sources {
                    read_events(p, b, n, &mut apply)?;
                }
            }
        }
        if state.accounts.is_empty() {
            return Ok((None, 0, 0));
        }
        let over = state.accounts.values().filter(|a| a.over_key_limit).count() as u64;
        let name = file_name(b, n, m.name_suffix);
        let staged = m.staging.join(ACCOUNTS_DIR).join(&name);
        let rows = write_bucket(&staged, state, m.codec)?;
        Ok((
            Some((staged, Path::new(ACCOUNTS_DIR).join(name))),
            rows,
            over,
        ))
    };
    let done = in_waves(m.pool, n, one)?;
    for (file, rows, over) in done {
        merged.groups += rows;
        merged.groups_over_key_limit += over;
        merged.adds.extend(file);
    }
    // Files of the current snapshot not rewritten under the same name are dropped (a rebuild, a new layout).
    for f in m.snapshot {
        let rewritten = merged.adds.iter().any(|(_, to)| *to == f.rel);
        // (A rebuild has no old layout, so nothing is kept as it is.)
        let kept = kept_as_is(f.bucket);
        if !rewritten && !kept {
            merged.removes.push(f.rel.clone());
        }
    }
    Ok(merged)
}

/// What merging one bucket gave: its new file (staged, final), its rows, its groups over the key limit.
type BucketDone = (Option<(PathBuf, PathBuf)>, u64, u64);

/// Runs `one` for every bucket on `pool`, one bucket per thread and never more than `MERGE_WAYS` at once (each
/// holds its share of the budget), and gives the results in bucket order.
fn in_waves<T: Send>(
    pool: &rayon::ThreadPool,
    n: u32,
    one: impl Fn(u32) -> Result<T> + Sync,
) -> Result<Vec<T>> {
    let wave = if pool.current_num_threads() > MERGE_WAYS as usize {
        MERGE_WAYS as u32
    } else {
        n.max(1)
    };
    let mut done = Vec::with_capacity(n as usize);
    for start in (0..n).step_by(wave as usize) {
        let buckets = start..n.min(start + wave);
        done.extend(pool.install(|| {
            buckets
                .into_par_iter()
                .with_max_len(1)
                .map(&one)
                .collect::<Result<Vec<_>>>()
        })?);
    }
    Ok(done)
}

/// The bucket count of the new snapshot (a power of two, never fewer than the current one's), which buckets
/// the events touch and the sources' rows, from one cheap pass over the sources' `group_id`.
fn layout(
    m: &Merge<'_>,
    sources: &[&DataFile],
    old: &[SnapshotFile],
    old_n: u32,
) -> Result<(u32, Vec<bool>, u64)> {
    // The groups the events name (their hashes: the bucket of a group is its hash modulo the bucket count),
    // from one cheap pass over `group_id`. Past a share of the budget the set is dropped and every event
    // counts as a new group (more buckets than needed, never too few).
    let cap = (m.budget / 16 / 16) as usize;
    let mut hashes: Option<std::collections::HashSet<u64>> = match m.fold {
        Some(fold) => fold.hashes().cloned(),
        None => Some(Default::default()),
    };
    let folded_rows = m.fold.map_or(0, Folded::rows);
    let mut event_rows = folded_rows;
    for p in sources {
        let (reader, _) = open_parquet(p, &[Col::GroupId.column().name])?;
        for batch in reader {
            let batch = batch.map_err(|e| p.cause(e))?;
            let gid = column::<StringArray>(&batch, Col::GroupId.column().name, p)?;
            event_rows += batch.num_rows() as u64;
            if let Some(set) = &mut hashes {
                set.extend((0..batch.num_rows()).map(|r| group_hash(gid.value(r))));
                if set.len() > cap {
                    hashes = None;
                }
            }
        }
    }
    // Upper bound of the groups after the merge: the snapshot's plus the events' (some may be the same).
    let mut estimate = hashes.as_ref().map_or(event_rows, |h| h.len() as u64);
    for f in old {
        estimate += f.file.rows()?;
    }
    let per_bucket = (m.budget / MERGE_WAYS / BYTES_PER_GROUP).max(64);
    // Once there is real work, at least as many buckets as may be merged at once, so that the cores share it.
    let floor = if estimate > 4 * per_bucket.min(16_384) {
        MERGE_WAYS
    } else {
        1
    };
    let wanted = estimate.div_ceil(per_bucket).max(floor);
    let n = (wanted.next_power_of_two().min(1 << 16) as u32).max(old_n.max(1));
    let touched: Vec<bool> = match &hashes {
        Some(set) => {
            let mut t = vec![false; n as usize];
            for h in set {
                t[(h & u64::from(n - 1)) as usize] = true;
            }
            t
        }
        None => vec![true; n as usize],
    };
    Ok((n, touched, event_rows - folded_rows))
}
