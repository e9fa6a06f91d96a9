//! Where a run's rows go and how they become visible: one interface, two implementations.
//!
//! Why this module exists: the pipeline (inputs -> lines -> events -> writer) produces the same thing whatever
//! the output is: staged Parquet files, a rejects file and a report. What differs is how they are published:
//! - [`hive`]: a local Hive-partitioned folder, published by switching versions of hard-linked trees (one
//!   rename is the commit point), with an OS lock against a second run;
//! - [`delta`]: Delta Lake tables, local or in object storage, published by optimistic commits (no lock:
//!   concurrent runs and shards retry on conflict).
//!
//! Each also answers what the run needs to know before reading: whether these inputs were already loaded,
//! and which files hold the ids that count as already loaded.

pub mod delta;
pub mod file;
pub mod hive;
pub mod inventory;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use crate::datafile::DataFile;
use crate::error::Result;
use crate::layout::Format;
use crate::layout::PartitionMode;
use crate::options::LoadOptions;
use crate::report::{AccountsReport, CommitReport, FileReport, Progress};
use crate::staging::Staging;
use crate::writer::StagedFile;

/// A run read and staged, waiting to be published.
pub struct Staged {
    pub run: String,
    pub started_at: String,
    /// The inputs' names, in the order the rows' origins number them.
    pub inputs: Vec<String>,
    /// The staged `groups` files.
    pub files: Vec<StagedFile>,
    /// The staged rejects file, if anything was rejected.
    pub rejects: Option<PathBuf>,
    /// Rows and rejects counted, for the progress display.
    pub rows: u64,
    pub rejected: u64,
    /// The staged files' rows folded into accounts while they were written (none with `--no-accounts`).
    pub fold: Option<Box<crate::accounts::Folded>>,
}

impl Staged {
    /// The name stem of the run's report and rejects files (`_runs/<stem>.json`, `_rejects/<stem>.ndjson`).
    pub fn stem(&self) -> String {
        crate::layout::run_stem(&self.started_at, &self.run)
    }
}

/// How far a run's rows got.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Visibility {
    /// None of them published, as the load decided (too many rejects, too few rows, already loaded).
    #[default]
    Held,
    /// Delta: the record written just before the commit that makes them visible.
    CommitPending,
    /// Visible to readers.
    Published,
    /// A run with the same id committed first (a retried shard): this one added nothing.
    SameRunFirst,
}

/// What publishing did, as a value: the load fills in the run's report from it.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    pub visibility: Visibility,
    /// The run's `groups` files as published (paths relative to the output).
    pub files: Vec<FileReport>,
    /// Partition path -> rows the run added.
    pub partitions: BTreeMap<String, u64>,
    /// `--mode overwrite`: partition path -> rows of earlier runs removed.
    pub replaced: BTreeMap<String, u64>,
    /// Where the rejects went (relative to the output), when there were any.
    pub rejects_file: Option<String>,
    pub accounts: Option<AccountsReport>,
    /// Delta: the versions committed, and the duplicates of concurrent commits dropped before committing
    /// (the load moves those rows from written to duplicates).
    pub commit: Option<CommitReport>,
}

impl Outcome {
    /// Counts the published file `f` (at `path`) and its rows in its partition.
    pub fn add_file(&mut self, path: String, f: &StagedFile) {
        *self.partitions.entry(f.partition.clone()).or_insert(0) += f.rows;
        self.files.push(FileReport {
            path,
            rows: f.rows,
            bytes: f.bytes,
        });
    }
}

/// The run's record (its report) for what publishing did so far, as the load writes it: the table stores
/// these bytes where the format keeps a run's record, at the moment the format needs it.
pub type Record<'a> = &'a dyn Fn(&Outcome) -> Result<Vec<u8>>;

/// What publishing needs besides the run itself.
pub struct Context<'a> {
    pub opts: &'a LoadOptions,
    /// When the run started (RFC 3339, UTC), as its report says.
    pub started_at: &'a str,
    pub pool: &'a Arc<rayon::ThreadPool>,
    pub progress: &'a Progress,
    pub started: Instant,
    /// With `--shard`: this shard's share of the listing.
    pub shard: Option<crate::report::ShardReport>,
}

/// Opens the output a run loads into: `--format`, or (without it) delta for an object-store URL and hive for
/// a local folder. A URL with `--format hive` is refused: the hive publish relies on renames and links, which
/// object stores do not have.
/// Returns it with the partitioning the run uses (`--partition`, or the dataset's when not given).
pub fn open(opts: &LoadOptions) -> Result<(Box<dyn Table>, PartitionMode)> {
    let url = opts.output.url().is_some();
    let format = match (opts.format, url) {
        (Some(Format::Hive), true) => {
            return Err(crate::error::Error::Usage(format!(
                "--format hive needs a local --output: its atomic publish switches versions with renames and \
                 links, which object stores do not have. {} is object storage: use --format delta (the \
                 default there)",
                opts.output
            )));
        }
        _ => opts.format(),
    };
    if let Some(path) = opts.output.local() {
        check_not_nested(path)?;
    }
    Ok(match format {
        Format::Hive => {
            let (t, p) = hive::Hive::open(opts)?;
            (Box::new(t), p)
        }
        Format::Delta => {
            let (t, p) = delta::Delta::open(opts)?;
            (Box::new(t), p)
        }
        Format::Parquet => {
            let (t, p) = file::SingleFile::open(opts)?;
            (Box::new(t), p)
        }
    })
}

/// Reads the inventory of the dataset at `opts.output` (which must hold one) from its metadata, with its
/// `last_runs` newest records: no lock, nothing written ([`inventory`]).
pub fn inventory(opts: &LoadOptions, last_runs: usize) -> Result<inventory::Inventory> {
    match opts.output.local() {
        Some(path) if hive::is_hive(path)? => hive::inventory(path, last_runs),
        _ => delta::inventory::inventory(opts, last_runs),
    }
}

/// A deletion request, as a table carries it out ([`Table::forget`]).
pub struct ForgetRequest<'a> {
    /// The ids as given: what raw lines (the rejects) hold.
    pub ids: &'a crate::privacy::Ids,
    /// The ids as the `groups` columns hold them (hashed where the dataset hashes the column).
    pub row_ids: &'a crate::privacy::Ids,
    /// Also remove what still holds the old data: earlier versions, files kept for time travel, the log
    /// entries that describe them.
    pub purge: bool,
    /// The name stem of the request's record (`_runs/<stem>.json`).
    pub stem: String,
    /// Added to the names of rewritten files (Delta never reuses a name).
    pub tag: String,
}

/// What forgetting did, as a value: the command renders the request's record and summary from it.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Forgotten {
    /// `groups` rows removed, in all and by partition path.
    pub rows_removed: u64,
    pub partitions: BTreeMap<String, u64>,
    /// `groups` files rewritten without the rows, and files removed because every row of theirs went.
    pub files_rewritten: u64,
    pub files_removed: u64,
    /// Groups that lost a row (their `accounts` rows are rebuilt from what remains, or removed).
    pub groups_affected: u64,
    /// Lines removed from the rejects files, and the files rewritten (or removed when nothing was left).
    pub reject_lines_removed: u64,
    pub rejects_files_changed: u64,
    pub accounts: Option<AccountsReport>,
    /// `accounts` rows gone: the groups with no row left.
    pub accounts_rows_removed: u64,
    /// hive: the version published; Delta: the `groups` and `accounts` versions committed.
    pub version: Option<u64>,
    pub accounts_version: Option<u64>,
    /// Delta: commit attempts that found the table moved on and were made again.
    pub retries: u64,
    /// `--suppress`: ids newly recorded as suppressed.
    pub suppressed_ids: u64,
    /// `--purge`: earlier versions, files and log entries removed.
    pub purged: Option<Purged>,
    /// What still holds the removed data after this request (empty after `--purge`), in words.
    pub still_held: Vec<String>,
}

impl Forgotten {
    /// True when the request found something to remove.
    pub fn changed(&self) -> bool {
        self.rows_removed > 0 || self.reject_lines_removed > 0 || self.suppressed_ids > 0
    }
}

/// What `--purge` removed.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Purged {
    /// hive: earlier versions of the dataset.
    pub versions: u64,
    /// Delta: data files no longer in the latest version.
    pub files: u64,
    /// Delta: log entries before the checkpoint written at the latest version.
    pub log_entries: u64,
}

/// The request's record for what forgetting did: the table stores these bytes where the format keeps records.
pub type ForgetRecord<'a> = &'a dyn Fn(&Forgotten) -> Result<Vec<u8>>;

/// A compaction, as a table carries it out ([`Table::compact`]).
pub struct CompactRequest {
    /// Files are rewritten into files of about this size.
    pub target_bytes: u64,
    /// The partitions it may touch.
    pub range: crate::compact::DateRange,
    /// Say what would be done, change nothing.
    pub dry_run: bool,
    /// Row groups of the rewritten files are cut near this size.
    pub row_group_bytes: usize,
    /// The name stem of the compaction's record (`_runs/<stem>.json`).
    pub stem: String,
    /// In the names of the files written (never reused).
    pub tag: String,
}

/// What compaction did (or, in a dry run, would do) to one partition.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct PartitionCompacted {
    pub partition: String,
    pub files_before: u64,
    pub files_after: u64,
    /// Rows and bytes of the files rewritten.
    pub rows: u64,
    pub bytes: u64,
}

/// What compaction did, as a value: the command renders its record and summary from it.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Compacted {
    pub dry_run: bool,
    /// Partitions of `groups` looked at, and those rewritten (listed).
    pub partitions_seen: u64,
    pub partitions: Vec<PartitionCompacted>,
    /// Files of the partitions looked at, before and after.
    pub files_before: u64,
    pub files_after: u64,
    pub files_rewritten: u64,
    pub files_written: u64,
    pub rows_rewritten: u64,
    pub bytes_rewritten: u64,
    pub bytes_written: u64,
    /// hive: the version published; Delta: the `groups` version committed.
    pub version: Option<u64>,
    /// Delta: attempts made again because another commit came first.
    pub retries: u64,
    /// Delta: the version a checkpoint was written at.
    pub checkpoint: Option<u64>,
    /// Delta: files that no version within `--vacuum-retention` needs, deleted.
    pub vacuumed: u64,
}

impl Compacted {
    /// Adds a partition's plan to the totals (and lists it when it rewrites files).
    pub fn add(&mut self, plan: &crate::compact::PartitionPlan) {
        self.partitions_seen += 1;
        self.files_before += plan.files_before() as u64;
        self.files_after += plan.files_after() as u64;
        if plan.outputs.is_empty() {
            return;
        }
        let rewritten = plan.rewritten().count() as u64;
        self.files_rewritten += rewritten;
        self.files_written += plan.outputs.len() as u64;
        self.rows_rewritten += plan.rows_rewritten();
        self.bytes_rewritten += plan.bytes_rewritten();
        self.partitions.push(PartitionCompacted {
            partition: plan.partition.clone(),
            files_before: plan.files_before() as u64,
            files_after: plan.files_after() as u64,
            rows: plan.rows_rewritten(),
            bytes: plan.bytes_rewritten(),
        });
    }
}

/// The compaction's record for what it did: the table stores these bytes where the format keeps records.
pub type CompactRecord<'a> = &'a dyn Fn(&Compacted) -> Result<Vec<u8>>;

/// A published run with the same id as this one: these inputs are already loaded.
#[derive(Debug, Clone)]
pub struct EarlierRun {
    /// When it started (from its report), or `earlier` when its report cannot say.
    pub started_at: String,
    /// The run committed its rows but stopped before it finished (a Delta run killed or cut off right after
    /// its commit): this run finishes it, bringing `accounts` up to date and completing its report.
    pub unfinished: Option<crate::report::Unfinished>,
}

/// Whether the local folder `dir` is the root of a dataset: a hive one (its state folder) or a Delta one (its
/// `groups` table's log).
pub(crate) fn is_dataset(dir: &std::path::Path) -> bool {
    std::fs::symlink_metadata(dir.join(crate::layout::STATE_DIR)).is_ok_and(|m| m.is_dir())
        || dir
            .join(crate::layout::GROUPS_DIR)
            .join("_delta_log")
            .is_dir()
}

/// Refuses (exit 2, touching nothing) an output inside a dataset (a folder of one, its state folder, or a
/// Delta table's own folder), or one that holds a dataset in its folders: loading there would write a second
/// dataset into the first, and break every reader of it (DuckDB's glob over `groups/**` sees two layouts).
fn check_not_nested(out: &std::path::Path) -> Result<()> {
    let refuse = |why: String| {
        Err(crate::error::Error::Usage(format!(
            "--output {} {why}: a dataset inside another breaks the readers of both; choose a folder of its \
             own",
            out.display()
        )))
    };
    let lexical = std::path::absolute(out).unwrap_or_else(|_| out.to_path_buf());
    let canonical = std::fs::canonicalize(out).ok();
    for path in std::iter::once(&lexical).chain(canonical.as_ref()) {
        if path
            .components()
            .any(|c| c.as_os_str() == crate::layout::STATE_DIR)
        {
            return refuse("is inside a dataset's hidden state folder".into());
        }
        for a in path.ancestors().skip(1) {
            if is_dataset(a) || a.join("_delta_log").is_dir() {
                return refuse(format!("is inside the dataset at {}", a.display()));
            }
        }
    }
    if out.join("_delta_log").is_dir() {
        return refuse("is a Delta table, not a dataset's folder".into());
    }
    // Datasets in its folders (two levels down: `out/a/` and `out/a/b/`).
    let mut dirs = vec![(out.to_path_buf(), 0)];
    while let Some((dir, depth)) = dirs.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            let name = e.file_name();
            let hidden = name.to_string_lossy().starts_with('.');
            if hidden || !e.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            let path = e.path();
            if is_dataset(&path) {
                return refuse(format!("holds the dataset at {}", path.display()));
            }
            if depth < 1 {
                dirs.push((path, depth + 1));
            }
        }
    }
    Ok(())
}

/// [`check_not_nested`] for an object-store output: no prefix above it is a dataset (its `groups/_delta_log/`)
/// or a Delta table (its `_delta_log/`).
pub(crate) fn check_not_nested_url(out: &crate::store::Location) -> Result<()> {
    let parts: Vec<&str> = out
        .path
        .as_ref()
        .split('/')
        .filter(|p| !p.is_empty())
        .collect();
    for n in (0..parts.len()).rev() {
        let above = out.at(&parts[..n].join("/"));
        for marker in ["groups/_delta_log", "_delta_log"] {
            if above.join(marker).any()? {
                return Err(crate::error::Error::Usage(format!(
                    "--output {} is inside the Delta {} at {}: a dataset inside another breaks the readers \
                     of both; choose a prefix of its own",
                    out.url,
                    if marker == "_delta_log" {
                        "table"
                    } else {
                        "dataset"
                    },
                    above.url
                )));
            }
        }
    }
    Ok(())
}

/// A dataset a run loads into.
pub trait Table {
    /// The published run with this id, if one already loaded these inputs.
    fn already_loaded(&self, run_id: &str) -> Result<Option<EarlierRun>>;

    /// The dataset's partitions (as buckets of `mode`) whose ids count as already loaded (all but `exclude`),
    /// with their files: what the dedupe window may read.
    fn earlier(
        &self,
        mode: PartitionMode,
        exclude: &BTreeSet<i64>,
    ) -> Result<Vec<(i64, Vec<DataFile>)>>;

    /// A new staging folder for the run.
    fn staging(&self) -> Result<Staging>;

    /// Where the dataset keeps its privacy records (pseudonymisation settings, suppressed ids), outside any
    /// version: hive `.group-loader/privacy/`, Delta `_privacy/`. `None` for one Parquet file (no dataset).
    fn privacy_dir(&self) -> Result<Option<crate::store::Location>>;

    /// True when the dataset holds rows already.
    fn has_rows(&self) -> Result<bool>;

    /// Publishes the run's rows, `accounts`, its rejects and its record ([`Record`]).
    fn publish_rows(
        &mut self,
        run: Staged,
        staging: &Staging,
        ctx: &Context<'_>,
        record: Record<'_>,
    ) -> Result<Outcome>;

    /// Publishes only the run's rejects and its record, which says why the rows were held.
    fn keep_record(
        &mut self,
        run: Staged,
        staging: &Staging,
        ctx: &Context<'_>,
        record: Record<'_>,
    ) -> Result<Outcome>;

    /// Removes every `groups` row the request names (rewriting only the files that hold one), rebuilds
    /// `accounts` from the rows that remain, removes the rejects' lines that hold the ids, and stores the
    /// request's record, as one step of the format; with `purge`, then removes what still holds the old data.
    /// A request that finds nothing changes nothing (but still purges when asked).
    fn forget(
        &mut self,
        request: &ForgetRequest<'_>,
        staging: &Staging,
        ctx: &Context<'_>,
        record: ForgetRecord<'_>,
    ) -> Result<Forgotten>;

    /// Rewrites runs of small `groups` files of each partition into files near the target size (rows and
    /// their order kept), as one step of the format, and stores the compaction's record. `accounts` is not
    /// touched: no row changes.
    fn compact(
        &mut self,
        request: &CompactRequest,
        staging: &Staging,
        ctx: &Context<'_>,
        record: CompactRecord<'_>,
    ) -> Result<Compacted>;

    /// The inputs were already loaded by `earlier`: nothing of this run's own is published, but `accounts` is
    /// kept as the options ask, and a Delta run that stopped right after its commit is finished.
    fn keep_accounts(
        &mut self,
        earlier: &EarlierRun,
        staging: &Staging,
        ctx: &Context<'_>,
    ) -> Result<Outcome>;
}
