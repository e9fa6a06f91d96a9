//! Compaction of the `groups` Delta table: one commit that removes runs of small files and adds their
//! rewrites, every action with `dataChange: false` (as Delta's OPTIMIZE writes them), then a checkpoint.
//!
//! Why this is its own file: the commit removes other runs' files while loads may be committing, so, as a
//! deletion request's, it is built from the files live at the version it commits on and made again when
//! another commit came first. It only ever rewrites files that were live when it started and still are: a
//! file a load adds meanwhile is left for the next compaction, and a rewrite whose sources a deletion or an
//! overwrite removed meanwhile is dropped (and its upload deleted), so no commit of anyone is lost. Because
//! no row changes, `accounts` and the concurrent-duplicates check read such a commit as a reorganisation
//! ([`super::accounts`]).

use std::collections::{BTreeMap, HashMap, HashSet};

use deltalake::kernel::{Action, Add};
use deltalake::protocol::DeltaOperation;
use rayon::prelude::*;

use super::log::{
    LiveFile, delta_err, live_files, partition_path, partition_values, remove_action,
};
use super::{Delta, MAX_COMMIT_ATTEMPTS, Patience, kept_moving, retry_commit, stats};
use crate::compact::{self, Candidate, Output, PartitionPlan};
use crate::error::{Error, Result};
use crate::layout::GROUPS_DIR;
use crate::staging::Staging;
use crate::store::{self, block_on};
use crate::table::{CompactRecord, CompactRequest, Compacted, Context};

/// Where the files a compaction writes are staged.
const COMPACT_DIR: &str = "compact";

impl Delta {
    pub(super) fn compact_all(
        &mut self,
        request: &CompactRequest,
        staging: &Staging,
        ctx: &Context<'_>,
        record: CompactRecord<'_>,
    ) -> Result<Compacted> {
        let url = self.groups_url();
        if self.groups.version().is_none() {
            return Ok(Compacted {
                dry_run: request.dry_run,
                ..Compacted::default()
            });
        }
        self.check_protocol()?;
        // The files live when the compaction started: the only ones it rewrites.
        let mut eligible: Option<HashSet<String>> = None;
        // The upload of each output, by its sources.
        let mut uploaded: HashMap<Vec<String>, Add> = HashMap::new();
        let mut patience = Patience::new(store::retry_timeout());
        for attempt in 0..MAX_COMMIT_ATTEMPTS {
            if let Err(e) = self.latest_groups() {
                patience.again(e, &url)?;
                continue;
            }
            let live = live_files(&self.groups, &url)?;
            let eligible =
                eligible.get_or_insert_with(|| live.iter().map(|f| f.path.clone()).collect());
            let plans = plan(&live, eligible, request);
            let mut done = Compacted {
                dry_run: request.dry_run,
                ..Compacted::default()
            };
            for p in &plans {
                done.add(p);
            }
            let wanted: HashSet<Vec<String>> = plans
                .iter()
                .flat_map(|p| p.outputs.iter().map(|o| sources_of(p, o)))
                .collect();
            self.drop_stale(&mut uploaded, &wanted)?;
            if request.dry_run || done.files_written == 0 {
                return Ok(done);
            }
            let jobs: Vec<(&PartitionPlan, usize)> = plans
                .iter()
                .flat_map(|p| (0..p.outputs.len()).map(move |n| (p, n)))
                .filter(|(p, n)| !uploaded.contains_key(&sources_of(p, &p.outputs[*n])))
                .collect();
            let codec = ctx.opts.codec;
            let new: Vec<(Vec<String>, Add)> = ctx.pool.install(|| {
                jobs.par_iter()
                    .map(|&(p, n)| {
                        let add = self.rewrite(p, n, staging, request, codec)?;
                        Ok((sources_of(p, &p.outputs[n]), add))
                    })
                    .collect::<Result<Vec<_>>>()
            })?;
            uploaded.extend(new);
            let actions = commit_actions(&plans, &live, &uploaded, &mut done);
            match self.try_compact_commit(actions, request) {
                Ok(version) => {
                    done.version = Some(version);
                    done.retries = attempt as u64;
                    return self.after_compaction(done, request, ctx, record);
                }
                Err(e) => retry_commit(e, &mut patience, &url)?,
            }
        }
        Err(kept_moving(url))
    }

    /// Refuses (exit 2) a `groups` table another writer changed to need more than plain Parquet files to read
    /// (deletion vectors, column mapping: reader protocol 2 or 3): rewriting its files as they are could bring
    /// deleted rows back or mislabel columns.
    fn check_protocol(&self) -> Result<()> {
        let url = self.groups_url();
        let state = self.groups.snapshot().map_err(delta_err(&url))?;
        let protocol = serde_json::to_value(state.protocol()).unwrap_or_default();
        let reader = protocol["minReaderVersion"].as_i64().unwrap_or(1);
        if reader <= 1 {
            return Ok(());
        }
        Err(Error::Usage(format!(
            "{url} needs Delta readers of protocol version {reader} (features {}): another writer changed the \
             table, and compaction only rewrites the plain data files group-loader writes (rewriting files with \
             deletion vectors or mapped columns could bring deleted rows back). Nothing was changed; compact it \
             with the tool that changed it (OPTIMIZE)",
            protocol["readerFeatures"]
        )))
    }

    /// After the commit: a checkpoint at its version (the log is read from there on), the vacuum of what no
    /// version within `--vacuum-retention` needs, and the record.
    fn after_compaction(
        &mut self,
        mut done: Compacted,
        request: &CompactRequest,
        ctx: &Context<'_>,
        record: CompactRecord<'_>,
    ) -> Result<Compacted> {
        let url = self.groups_url();
        let after = Error::after_publish;
        block_on(self.groups.update_state())
            .map_err(delta_err(&url))
            .map_err(after("the checkpoint"))?;
        block_on(deltalake::checkpoints::create_checkpoint(
            &self.groups,
            None,
        ))
        .map_err(delta_err(&url))
        .map_err(after("the checkpoint"))?;
        done.checkpoint = self.groups.version();
        done.vacuumed = self
            .vacuum(ctx.opts.vacuum_retention)
            .map_err(after("the vacuum"))?;
        self.put_report(&request.stem, record(&done)?)
            .map_err(after("writing the compaction's record"))?;
        Ok(done)
    }

    /// Deletes the uploads of outputs no longer planned (a source of theirs left the table meanwhile).
    fn drop_stale(
        &self,
        uploaded: &mut HashMap<Vec<String>, Add>,
        wanted: &HashSet<Vec<String>>,
    ) -> Result<()> {
        let stale: Vec<Vec<String>> = uploaded
            .keys()
            .filter(|k| !wanted.contains(*k))
            .cloned()
            .collect();
        for key in stale {
            if let Some(add) = uploaded.remove(&key) {
                self.root
                    .join(&format!("{GROUPS_DIR}/{}", add.path))
                    .delete()?;
            }
        }
        Ok(())
    }

    /// Downloads an output's sources, writes them as one file, and uploads it; returns its Add.
    fn rewrite(
        &self,
        p: &PartitionPlan,
        n: usize,
        staging: &Staging,
        request: &CompactRequest,
        codec: crate::layout::Codec,
    ) -> Result<Add> {
        let o = &p.outputs[n];
        let name = compact::output_name(&request.tag, p, o, n);
        let dir = staging.dir().join(COMPACT_DIR).join(&p.partition);
        std::fs::create_dir_all(&dir).map_err(Error::io("creating directory", &dir))?;
        let mut sources = Vec::new();
        for (k, &i) in o.sources.iter().enumerate() {
            let local = dir.join(format!("{name}.source-{k:05}"));
            let remote = self.root.join(&format!("{GROUPS_DIR}/{}", p.files[i].path));
            crate::atomic::write_copy(&local, &mut remote.open_stream()?)?;
            sources.push(local);
        }
        let into = dir.join(&name);
        let written = crate::writer::concatenate(&sources, &into, codec, request.row_group_bytes);
        for s in &sources {
            let _ = std::fs::remove_file(s);
        }
        let (_, bytes) = written?;
        let (_, stats) = stats::of_file(&into)?;
        let path = match p.partition.is_empty() {
            true => name,
            false => format!("{}/{name}", p.partition),
        };
        let add = Add {
            path,
            partition_values: partition_values(&p.partition),
            size: bytes as i64,
            // Its place in the partition's order is its first source's.
            modification_time: p.written_of(o) as i64,
            data_change: false,
            stats: Some(stats),
            tags: None,
            deletion_vector: None,
            base_row_id: None,
            default_row_commit_version: None,
            clustering_provider: None,
        };
        self.root
            .join(&format!("{GROUPS_DIR}/{}", add.path))
            .upload(&into)?;
        let _ = std::fs::remove_file(&into);
        Ok(add)
    }

    fn try_compact_commit(
        &self,
        actions: Vec<Action>,
        request: &CompactRequest,
    ) -> std::result::Result<u64, deltalake::DeltaTableError> {
        let op = DeltaOperation::Optimize {
            predicate: None,
            target_size: request.target_bytes as i64,
        };
        self.commit_groups_once(
            self.groups.snapshot()?,
            actions,
            op,
            None,
            ("group_loader_compact", &request.stem),
        )
    }
}

/// The commit's actions: for each output, the Removes of its sources and its Add (counted in `done`).
fn commit_actions(
    plans: &[PartitionPlan],
    live: &[LiveFile],
    uploaded: &HashMap<Vec<String>, Add>,
    done: &mut Compacted,
) -> Vec<Action> {
    let by_path: HashMap<&str, &LiveFile> = live.iter().map(|f| (f.path.as_str(), f)).collect();
    let mut actions = Vec::new();
    for p in plans {
        for o in &p.outputs {
            let add = &uploaded[&sources_of(p, o)];
            done.bytes_written += add.size as u64;
            for &i in &o.sources {
                let f = by_path[p.files[i].path.as_str()];
                actions.push(reorganised(remove_action(
                    f.path.clone(),
                    Some(f.size),
                    Some(f.values.clone()),
                )));
            }
            actions.push(Action::Add(add.clone()));
        }
    }
    actions
}

/// A Remove that says no data changed.
fn reorganised(action: Action) -> Action {
    match action {
        Action::Remove(mut r) => {
            r.data_change = false;
            Action::Remove(r)
        }
        other => other,
    }
}

/// The plan of each partition the range keeps, over the live files that are `eligible`.
fn plan(
    live: &[LiveFile],
    eligible: &HashSet<String>,
    request: &CompactRequest,
) -> Vec<PartitionPlan> {
    let mut by_partition: BTreeMap<String, Vec<Candidate>> = BTreeMap::new();
    for f in live.iter().filter(|f| eligible.contains(&f.path)) {
        let partition = partition_path(&f.values);
        if !request.range.keeps(&partition) {
            continue;
        }
        by_partition.entry(partition).or_default().push(Candidate {
            path: f.path.clone(),
            bytes: f.size.max(0) as u64,
            rows: f.rows.unwrap_or(0) as u64,
            written: f.written as i128,
        });
    }
    by_partition
        .into_iter()
        .map(|(partition, files)| compact::plan(partition, files, request.target_bytes))
        .collect()
}

/// The paths of an output's sources: what identifies its upload across attempts.
fn sources_of(p: &PartitionPlan, o: &Output) -> Vec<String> {
    o.sources.iter().map(|&i| p.files[i].path.clone()).collect()
}
