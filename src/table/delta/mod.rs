//! Delta Lake tables: `OUT/groups` (partitioned by `dt`, and `hr` with `--partition hour`) and
//! `OUT/accounts`, local or in object storage, with `OUT/_runs/` and `OUT/_rejects/` beside them.
//!
//! Why this module exists: it is the [`Table`] that warehouses read where they are (Spark, Databricks, Trino,
//! Athena, Snowflake and BigQuery external tables, delta-rs, polars, DuckDB's `delta_scan`). The `deltalake`
//! crate (delta-rs) owns the log, the protocol and the commit; this module decides what a run commits:
//! - one commit to `groups` per run: the run's files (with row counts and column statistics, so readers skip
//!   files), a `txn` action naming the run (so a repeated run commits nothing new), and with `--mode overwrite`
//!   the removal of the files of the partitions it writes;
//! - then one commit to `accounts`, whose `txn` records the `groups` version it reflects; any run (of any
//!   inputs) first brings a lagging `accounts` up to date, by merging the `groups` commits it has not seen;
//! - commits are optimistic: a run that finds the table moved on commits again on top of it (no lock). On S3
//!   a commit is a conditional write (`If-None-Match: *`) of the next log file, so no lock service is needed;
//! - files no version newer than `--vacuum-retention` needs are vacuumed by later runs.
//!
//! Data files are written locally by the run's own Parquet writer and uploaded under names never used before
//! (a run id and a random token), so no commit ever overwrites a file another version reads.

mod accounts;
mod compact;
mod concurrent;
mod forget;
pub mod glue;
pub(crate) mod inventory;
mod log;
mod runs;
mod stats;

use std::collections::{BTreeMap, BTreeSet};

use deltalake::DeltaTable;
use deltalake::kernel::transaction::{CommitBuilder, CommitProperties};
use deltalake::kernel::{Action, Add, Transaction};
use deltalake::protocol::{DeltaOperation, SaveMode};

use self::log::{
    LiveFile, bucket_of, check_partition_values, create, delta_err, is_conflict, is_transient,
    live_files, open_table, partition_columns, partition_path, partition_values,
    register_log_stores, remove_action, upload_all, uuid_token,
};
use crate::datafile::DataFile;
use crate::dedupe::Reach;
use crate::error::{Error, Result};
use crate::layout::ACCOUNTS_DIR;
use crate::layout::GROUPS_DIR;
use crate::layout::PartitionMode;
use crate::options::{LoadOptions, Mode, Output};
use crate::report::{CommitReport, Phase};
use crate::schema::COLUMNS;
use crate::staging::Staging;
use crate::store::{self, Location, block_on};
use crate::table::{Context, EarlierRun, Outcome, Record, Staged, Table, Visibility};
use crate::writer::StagedFile;

/// The `txn` application id that marks a run's commit to `groups` (its run id appended).
const RUN_APP: &str = "group-loader/run/";
/// The `txn` application id whose version, in `accounts`, is the `groups` version it reflects (-1: none, so
/// the next run rebuilds it from every `groups` file).
const REFLECTS_APP: &str = "group-loader/groups-version";
/// Commits tried before a run gives up (each after the table moved on under it). Each failed attempt means
/// another run committed, so N shards finishing at the same moment need at most N attempts each: this bounds a
/// table that never stops moving, not the number of shards (README, *Scaling out*).
const MAX_COMMIT_ATTEMPTS: usize = 1_000;
/// Orphans (uploaded, never committed: a killed run's) are vacuumed only when at least this old, so that the
/// uploads of runs committing right now are never taken for orphans.
const ORPHAN_MIN_AGE: chrono::Duration = chrono::Duration::hours(24);

/// A staged `groups` file of the run, uploaded, waiting for the commit.
pub(super) struct Pending {
    staged: StagedFile,
    /// Its partition's bucket.
    bucket: i64,
    add: Add,
}

/// A dataset of Delta tables.
pub struct Delta {
    root: Location,
    partition: PartitionMode,
    groups: DeltaTable,
    accounts: DeltaTable,
    /// The `groups` files when the run started: the dedupe window compared the run with these (or left them
    /// out of reach); files committed since are compared before the commit.
    base: BTreeSet<String>,
}

impl Delta {
    /// Opens the dataset at `opts.output` (a URL, or a local folder with `--format delta`), refusing a
    /// `--partition` other than the one `groups` was created with, or a local hive dataset.
    /// Returns it with the partitioning the run uses: `--partition` when given, else the one `groups` has.
    pub fn open(opts: &LoadOptions) -> Result<(Delta, PartitionMode)> {
        register_log_stores();
        let out = opts.output.to_string();
        let root = match &opts.output {
            Output::Url(url) => Location::parse(url)?,
            Output::Local(path) => {
                crate::table::hive::check_output(path)?;
                if crate::table::hive::is_hive(path)? {
                    return Err(Error::Usage(format!(
                        "{out} was created with --format hive; this run asks for --format delta. A dataset \
                         keeps one layout: run with --format hive, or load into a new --output"
                    )));
                }
                let abs = std::path::absolute(path).map_err(Error::io("reading", path))?;
                if url::Url::from_directory_path(&abs).is_ok_and(|u| u.as_str().contains('%')) {
                    return Err(needs_one_spelling(&abs.display().to_string()));
                }
                Location::local(path)?
            }
        };
        if root.url.contains('%') {
            return Err(needs_one_spelling(&root.url));
        }
        if opts.output.url().is_some() {
            probe(&root)?;
            crate::table::check_not_nested_url(&root)?;
        }
        let groups = open_table(&root, GROUPS_DIR)
            .map_err(|e| log::diagnose_partitions(&root.join(GROUPS_DIR), e))?;
        let mut partition = opts.partition;
        if let Ok(state) = groups.snapshot() {
            let recorded = state.metadata().partition_columns().to_vec();
            let recorded_mode = match recorded.len() {
                0 => PartitionMode::None,
                1 => PartitionMode::Day,
                _ => PartitionMode::Hour,
            };
            if !opts.partition_given {
                // The table's partitioning is the default of every later run.
                partition = recorded_mode;
            }
            if recorded != partition_columns(partition) {
                let name = match recorded.len() {
                    0 => "none",
                    1 => "day",
                    _ => "hour",
                };
                return Err(Error::Usage(format!(
                    "{out} was created with --partition {name} (groups is partitioned by {recorded:?}); a dataset \
                     keeps one layout: run with --partition {name}, or load into a new --output"
                )));
            }
        }
        let accounts = open_table(&root, ACCOUNTS_DIR)?;
        let live = live_files(&groups, &root.join(GROUPS_DIR).url)
            .map_err(|e| log::diagnose_partitions(&root.join(GROUPS_DIR), e))?;
        let unreadable: Vec<String> = live
            .iter()
            .filter(|f| bucket_of(partition, &f.values).is_none())
            .map(|f| f.path.clone())
            .collect();
        if let Some(first) = unreadable.first() {
            eprintln!(
                "group-loader: warning: {} holds {} file(s) in partitions outside the dates 0001-01-01 to \
                 9999-12-31 (the first: {first}), written by an earlier version of group-loader. deltalake, \
                 polars and Spark cannot read the table until they are removed (delete their rows, e.g. \
                 DELETE FROM the table WHERE dt < '0001-01-01' OR dt > '9999-12-31', with a Delta tool that \
                 reads it)",
                root.join(GROUPS_DIR).url,
                unreadable.len()
            );
        }
        let base = live.into_iter().map(|f| f.path).collect();
        Ok((
            Delta {
                root,
                partition,
                groups,
                accounts,
                base,
            },
            partition,
        ))
    }

    fn groups_url(&self) -> String {
        self.root.join(GROUPS_DIR).url
    }

    /// Reloads `groups` to its latest version, creating the table if there is none yet.
    fn latest_groups(&mut self) -> Result<()> {
        let url = self.groups_url();
        if self.groups.version().is_none() {
            self.groups = create(&self.root, GROUPS_DIR, &COLUMNS, self.partition)?;
        }
        block_on(self.groups.update_state()).map_err(delta_err(&url))
    }

    /// The files other runs committed since this one started and that it has not compared with yet, in
    /// partitions within the window of its own (those being replaced by overwrite aside), by partition bucket:
    /// where its rows could be duplicates.
    fn committed_since(
        &self,
        live: &[LiveFile],
        checked: &mut BTreeSet<String>,
        replaced: Option<&BTreeSet<String>>,
        reach: Reach,
        pending: &[Pending],
    ) -> BTreeMap<i64, Vec<DataFile>> {
        let mut new: BTreeMap<i64, Vec<DataFile>> = BTreeMap::new();
        for f in live {
            let p = partition_path(&f.values);
            if self.base.contains(&f.path)
                || checked.contains(&f.path)
                || replaced.is_some_and(|r| r.contains(&p))
            {
                continue;
            }
            let Some(bucket) = bucket_of(self.partition, &f.values) else {
                continue;
            };
            if pending.iter().any(|q| reach.covers(bucket, q.bucket)) {
                new.entry(bucket).or_default().push(DataFile::Remote {
                    location: self.root.join(&format!("{GROUPS_DIR}/{}", f.path)),
                    size: f.size as u64,
                });
            }
            checked.insert(f.path.clone());
        }
        new
    }

    /// The commit of a run's rows to `groups`, retried on top of concurrent commits. Before each attempt, the
    /// files committed since the run started (in partitions within the window of its own) are compared with
    /// its rows, and duplicates dropped ([`concurrent`]); the run's record ([`runs`]) is uploaded before the
    /// first attempt and again whenever that changed its files. A commit whose answer is lost (a connection
    /// closed or reset) is looked for in the log and tried again, until `--retry-timeout`. Returns the version
    /// and the attempts that failed, or `None` when another run with the same id committed first.
    fn commit_groups(
        &mut self,
        ctx: &Context<'_>,
        run: &Staged,
        pending: &mut [Pending],
        outcome: &mut Outcome,
        staging: &Staging,
        record: Record<'_>,
    ) -> Result<Option<(u64, usize)>> {
        let url = self.groups_url();
        let stem = run.stem();
        let run_id = run.run.as_str();
        let overwrite = ctx.opts.mode == Mode::Overwrite;
        let reach = ctx.opts.reach();
        let rejects = staging.rejects();
        let partitions: BTreeSet<String> =
            pending.iter().map(|p| p.staged.partition.clone()).collect();
        let mut checked: BTreeSet<String> = BTreeSet::new();
        let mut patience = Patience::new(store::retry_timeout());
        self.put_pending(&stem, pending, &rejects, outcome, record)?;
        for attempt in 0..MAX_COMMIT_ATTEMPTS {
            if let Err(e) = self.latest_groups() {
                patience.again(e, &url)?;
                continue;
            }
            if let Some(earlier) = self.run_commit(run_id)? {
                // Ours when it added exactly our files (their names hold this attempt's token).
                let ours: BTreeSet<String> = pending
                    .iter()
                    .filter(|p| p.staged.rows > 0)
                    .map(|p| p.add.path.clone())
                    .collect();
                return Ok((earlier.adds == ours).then_some((earlier.version, attempt)));
            }
            let live = live_files(&self.groups, &url)?;
            let replaced = overwrite.then_some(&partitions);
            let new = self.committed_since(&live, &mut checked, replaced, reach, pending);
            if !new.is_empty() {
                let how = concurrent::Dropping {
                    reach,
                    budget: ctx.opts.dedupe_budget().max(64 << 20),
                    codec: ctx.opts.codec,
                    rejects: &rejects,
                };
                let dropped = outcome.commit.get_or_insert_default();
                let changed = concurrent::drop_duplicates(
                    pending,
                    new.into_iter().collect(),
                    &how,
                    &run.inputs,
                    &mut dropped.concurrent_duplicates,
                )?;
                if !changed.is_empty() {
                    self.upload_again(run_id, pending, &changed)?;
                    self.put_pending(&stem, pending, &rejects, outcome, record)?;
                }
            }
            let actions =
                self.groups_actions(pending, overwrite.then_some((&partitions, live)), outcome);
            check_partition_values(self.partition, &actions, &url)?;
            let state = self.groups.snapshot().map_err(delta_err(&url))?;
            let committed = self.try_commit(state, actions, run_id, overwrite);
            match committed {
                Ok(version) => return Ok(Some((version, attempt))),
                Err(e) => retry_commit(e, &mut patience, &url)?,
            }
        }
        Err(kept_moving(url))
    }

    /// One attempt at the run's commit to `groups` on top of `state`, with its `txn`, and no retry of its own.
    fn try_commit(
        &self,
        state: &deltalake::table::state::DeltaTableState,
        actions: Vec<Action>,
        run_id: &str,
        overwrite: bool,
    ) -> std::result::Result<u64, deltalake::DeltaTableError> {
        let op = DeltaOperation::Write {
            mode: if overwrite {
                SaveMode::Overwrite
            } else {
                SaveMode::Append
            },
            partition_by: Some(partition_columns(self.partition)).filter(|p| !p.is_empty()),
            predicate: None,
        };
        self.commit_groups_once(
            state,
            actions,
            op,
            Some(format!("{RUN_APP}{run_id}")),
            ("group_loader_run", run_id),
        )
    }

    /// One attempt at a commit to `groups` on top of `state`, with no retry of its own (each caller's loop
    /// makes it again on top of the latest version): with the `txn` of `app` when given (version 0, the
    /// commit's time), and `(key, value)` in its commitInfo.
    fn commit_groups_once(
        &self,
        state: &deltalake::table::state::DeltaTableState,
        actions: Vec<Action>,
        op: DeltaOperation,
        app: Option<String>,
        (key, value): (&str, &str),
    ) -> std::result::Result<u64, deltalake::DeltaTableError> {
        let mut props = CommitProperties::default()
            .with_max_retries(0)
            .with_metadata([(key.to_string(), serde_json::json!(value))]);
        if let Some(app) = app {
            props = props.with_application_transaction(Transaction::new_with_last_update(
                app,
                0,
                Some(chrono::Utc::now().timestamp_millis()),
            ));
        }
        block_on(async {
            CommitBuilder::from(props)
                .with_actions(actions)
                .build(Some(state), self.groups.log_store(), op)
                .await
        })
        .map(|c| c.version())
    }

    /// The actions of the run's commit to `groups`: its files, and with `--mode overwrite` the removal of every
    /// file of the partitions it writes at the version it commits on top of (counted in `outcome.replaced`).
    fn groups_actions(
        &self,
        pending: &[Pending],
        overwrite: Option<(&BTreeSet<String>, Vec<LiveFile>)>,
        outcome: &mut Outcome,
    ) -> Vec<Action> {
        let mut actions: Vec<Action> = pending
            .iter()
            .filter(|p| p.staged.rows > 0)
            .map(|p| Action::Add(p.add.clone()))
            .collect();
        outcome.replaced.clear();
        if let Some((partitions, live)) = overwrite {
            for f in live {
                let p = partition_path(&f.values);
                if partitions.contains(&p) {
                    *outcome.replaced.entry(p).or_insert(0) += f.rows.unwrap_or(0) as u64;
                    actions.push(remove_action(f.path, Some(f.size), Some(f.values)));
                }
            }
        }
        actions
    }

    /// Uploads the run's staged `groups` files (several at once), each under a name never used before.
    fn upload_groups(&self, run: &str, files: Vec<StagedFile>) -> Result<Vec<Pending>> {
        let mut pending = Vec::with_capacity(files.len());
        for staged in files {
            let bucket = self
                .partition
                .bucket_of_path(&staged.partition)
                .unwrap_or_default();
            let add = self.add_for(run, &staged)?;
            pending.push(Pending {
                staged,
                bucket,
                add,
            });
        }
        upload_all(pending.iter().map(|p| self.upload_of(p)).collect())?;
        Ok(pending)
    }

    /// Uploads again the files `changed` (rewritten without duplicates) under new names; the old uploads
    /// were never committed and are deleted.
    fn upload_again(&self, run: &str, pending: &mut [Pending], changed: &[usize]) -> Result<()> {
        let mut uploads = Vec::new();
        for &i in changed {
            let old = self
                .root
                .join(&format!("{GROUPS_DIR}/{}", pending[i].add.path));
            old.delete()?;
            if pending[i].staged.rows > 0 {
                pending[i].add = self.add_for(run, &pending[i].staged)?;
                uploads.push(self.upload_of(&pending[i]));
            }
        }
        upload_all(uploads)
    }

    /// The Add action of a staged file, under a new name, with its statistics.
    fn add_for(&self, run: &str, f: &StagedFile) -> Result<Add> {
        let name = format!("part-{run}-{}-{:05}.parquet", uuid_token(), f.seq);
        let path = if f.partition.is_empty() {
            name
        } else {
            format!("{}/{name}", f.partition)
        };
        let (_, stats) = stats::of_file(&f.staged)?;
        Ok(Add {
            path,
            partition_values: partition_values(&f.partition),
            size: f.bytes as i64,
            modification_time: chrono::Utc::now().timestamp_millis(),
            data_change: true,
            stats: Some(stats),
            tags: None,
            deletion_vector: None,
            base_row_id: None,
            default_row_commit_version: None,
            clustering_provider: None,
        })
    }

    fn upload_of(&self, p: &Pending) -> (Location, std::path::PathBuf) {
        (
            self.root.join(&format!("{GROUPS_DIR}/{}", p.add.path)),
            p.staged.staged.clone(),
        )
    }

    /// Deletes files no version newer than `retention` needs (and, when older than a day, files no version
    /// ever referenced: uploads of runs killed before their commit).
    fn vacuum(&mut self, retention: std::time::Duration) -> Result<u64> {
        let mut deleted = 0;
        let retention = chrono::Duration::from_std(retention).unwrap_or(chrono::Duration::MAX);
        for name in [GROUPS_DIR, ACCOUNTS_DIR] {
            let table = if name == GROUPS_DIR {
                &self.groups
            } else {
                &self.accounts
            };
            if table.version().is_none() {
                continue;
            }
            let url = self.root.join(name).url;
            for (mode, keep) in [
                (deltalake::operations::vacuum::VacuumMode::Lite, retention),
                (
                    deltalake::operations::vacuum::VacuumMode::Full,
                    retention.max(ORPHAN_MIN_AGE),
                ),
            ] {
                let (_, metrics) = block_on(async {
                    table
                        .clone()
                        .vacuum()
                        .with_retention_period(keep)
                        .with_enforce_retention_duration(false)
                        .with_mode(mode)
                        .await
                })
                .map_err(delta_err(&url))?;
                deleted += metrics.files_deleted.len() as u64;
            }
        }
        Ok(deleted)
    }
}

impl Table for Delta {
    fn already_loaded(&self, run_id: &str) -> Result<Option<EarlierRun>> {
        self.earlier_run(run_id)
    }

    fn earlier(
        &self,
        mode: PartitionMode,
        exclude: &BTreeSet<i64>,
    ) -> Result<Vec<(i64, Vec<DataFile>)>> {
        let mut by_bucket: BTreeMap<i64, Vec<DataFile>> = BTreeMap::new();
        for LiveFile {
            path, size, values, ..
        } in live_files(&self.groups, &self.groups_url())?
        {
            let Some(bucket) = bucket_of(mode, &values) else {
                continue;
            };
            if exclude.contains(&bucket) {
                continue;
            }
            by_bucket.entry(bucket).or_default().push(DataFile::Remote {
                location: self.root.join(&format!("{GROUPS_DIR}/{path}")),
                size: size as u64,
            });
        }
        Ok(by_bucket.into_iter().collect())
    }

    fn staging(&self) -> Result<Staging> {
        // Directly in the temporary folder, under a name of its own (never inside a shared folder another
        // user could have created, or replaced by a link).
        Staging::create(
            std::env::temp_dir().join(format!("group-loader-{}", crate::staging::staging_name())),
        )
    }

    fn privacy_dir(&self) -> Result<Option<Location>> {
        Ok(Some(self.root.join(crate::layout::PRIVACY_DIR)))
    }

    fn has_rows(&self) -> Result<bool> {
        Ok(!live_files(&self.groups, &self.groups_url())?.is_empty())
    }

    fn publish_rows(
        &mut self,
        mut run: Staged,
        staging: &Staging,
        ctx: &Context<'_>,
        record: Record<'_>,
    ) -> Result<Outcome> {
        ctx.progress
            .phase(Phase::Publishing, run.rows, run.rejected);
        let mut outcome = Outcome {
            commit: Some(CommitReport::default()),
            ..Outcome::default()
        };
        let files = std::mem::take(&mut run.files);
        let mut pending = self.upload_groups(&run.run, files)?;
        let committed =
            self.commit_groups(ctx, &run, &mut pending, &mut outcome, staging, record)?;
        let Some((version, retries)) = committed else {
            // A run with the same id committed meanwhile (a retried shard): nothing new.
            self.remove_record(&run.stem())?;
            outcome.visibility = Visibility::SameRunFirst;
            outcome.files.clear();
            outcome.partitions.clear();
            outcome.rejects_file = None;
            return Ok(outcome);
        };
        outcome.visibility = Visibility::Published;
        if let Some(c) = outcome.commit.as_mut() {
            c.groups_version = Some(version);
            c.retries = retries as u64;
        }
        // From here on the rows are live: a failure says so (exit 6), and a re-run finishes the run.
        ctx.progress.phase(Phase::Accounts, run.rows, run.rejected);
        // The fold holds the rows as staged: of no use once rows were dropped as concurrent duplicates.
        let rewritten = outcome
            .commit
            .as_ref()
            .is_some_and(|c| c.concurrent_duplicates > 0);
        let ours: BTreeSet<String> = pending
            .iter()
            .filter(|p| p.staged.rows > 0)
            .map(|p| p.add.path.clone())
            .collect();
        let fold = run
            .fold
            .as_deref()
            .filter(|_| !rewritten)
            .map(|f| (f, &ours));
        self.accounts_and_vacuum(ctx, staging, &mut outcome, fold)?;
        self.put_report(&run.stem(), record(&outcome)?)
            .map_err(Error::after_publish("writing the report"))?;
        Ok(outcome)
    }

    fn keep_record(
        &mut self,
        run: Staged,
        staging: &Staging,
        _ctx: &Context<'_>,
        record: Record<'_>,
    ) -> Result<Outcome> {
        // Over the reject ratio or under --min-rows: the rejects and the record only, saying why.
        let mut outcome = Outcome::default();
        self.put_rejects(&run.stem(), &staging.rejects(), &mut outcome)?;
        self.put_report(&run.stem(), record(&outcome)?)?;
        Ok(outcome)
    }

    fn forget(
        &mut self,
        request: &crate::table::ForgetRequest<'_>,
        staging: &Staging,
        ctx: &Context<'_>,
        record: crate::table::ForgetRecord<'_>,
    ) -> Result<crate::table::Forgotten> {
        self.forget_all(request, staging, ctx, record)
    }

    fn compact(
        &mut self,
        request: &crate::table::CompactRequest,
        staging: &Staging,
        ctx: &Context<'_>,
        record: crate::table::CompactRecord<'_>,
    ) -> Result<crate::table::Compacted> {
        self.compact_all(request, staging, ctx, record)
    }

    fn keep_accounts(
        &mut self,
        earlier: &EarlierRun,
        staging: &Staging,
        ctx: &Context<'_>,
    ) -> Result<Outcome> {
        let mut outcome = Outcome {
            commit: Some(CommitReport::default()),
            ..Outcome::default()
        };
        ctx.progress.phase(Phase::Accounts, 0, 0);
        self.accounts_and_vacuum(ctx, staging, &mut outcome, None)?;
        if let Some(unfinished) = &earlier.unfinished {
            self.finish_unfinished(ctx.started_at, &outcome, unfinished)
                .map_err(Error::after_publish(
                    "completing the report of the run it finished",
                ))?;
        }
        Ok(outcome)
    }
}

impl Delta {
    /// Brings `accounts` up to date and vacuums, after the rows are live: a failure is one after publishing.
    fn accounts_and_vacuum(
        &mut self,
        ctx: &Context<'_>,
        staging: &Staging,
        outcome: &mut Outcome,
        fold: Option<accounts::OurFold<'_>>,
    ) -> Result<()> {
        let after = |step| Error::after_publish(step);
        let (accounts, version) = self
            .update_accounts(ctx, staging, fold)
            .map_err(after("the accounts update"))?;
        outcome.accounts = accounts;
        let vacuumed = self
            .vacuum(ctx.opts.vacuum_retention)
            .map_err(after("the vacuum"))?;
        if let Some(c) = outcome.commit.as_mut() {
            c.accounts_version = version;
            c.files_vacuumed = vacuumed;
        }
        Ok(())
    }
}

/// Writes and deletes a small object under the output before anything is read, so that a missing bucket, a
/// store that does not answer or a role that may not write is found at once (exit 1, naming the URL), not
/// after the whole input was read. The object is created twice with create-if-absent, the write every Delta
/// commit is: a store that takes the second one too (an S3-compatible server that ignores `If-None-Match`)
/// would let two runs committing at once overwrite each other's commit, and is refused (exit 2).
fn probe(root: &Location) -> Result<()> {
    let probe = root.join(&format!(
        "{}/.probe-{}",
        crate::layout::RUNS_DIR,
        uuid_token()
    ));
    let body = b"group-loader checks it may write here\n";
    probe.create_bytes(body.to_vec())?;
    let again = probe.create_bytes(body.to_vec());
    probe.delete()?;
    match again? {
        false => Ok(()),
        true => Err(Error::Usage(format!(
            "{}: the store does not honour create-if-absent writes: a second create of {} succeeded where it \
             must fail (If-None-Match: * on S3, x-goog-if-generation-match: 0 on GCS). Every Delta commit is \
             such a write; on this store two runs committing at once would overwrite each other's commit and \
             lose its rows. Use a store that honours conditional writes (Amazon S3, GCS, Azure, and recent \
             MinIO, Ceph and R2 do), or a local --output",
            root.url, probe.url
        ))),
    }
}

/// The refusal of a Delta dataset path that readers spell two ways: deltalake's file list and polars' reader
/// percent-encode a space (or any character a URL must encode) again, and look for the data files at
/// `my%20data/...` while the log is at `my data/`; no spelling serves every reader.
fn needs_one_spelling(place: &str) -> Error {
    Error::Usage(format!(
        "{place}: a Delta dataset's path must be written with letters, digits and - _ . ~ = / only: a space or \
         any other character a URL must percent-encode is read at two different places by deltalake and \
         polars (the log under one spelling, the data files under the other). Choose such a path (or \
         --format hive for a local folder)"
    ))
}

/// After a commit attempt failed with `e`: `Ok` to try again (another run committed first, or the store did
/// not answer and `--retry-timeout` has not passed: the commit may have landed), else the error to give up with.
fn retry_commit(e: deltalake::DeltaTableError, patience: &mut Patience, url: &str) -> Result<()> {
    if is_conflict(&e) {
        return Ok(());
    }
    if is_transient(&e) {
        patience.sent = true;
        return patience.again(delta_err(url)(e), url);
    }
    Err(delta_err(url)(e))
}

/// The error of a table that never stopped moving under a commit.
fn kept_moving(url: String) -> Error {
    Error::DeltaState {
        url,
        message: format!("the table kept moving: no commit after {MAX_COMMIT_ATTEMPTS} attempts"),
    }
}

/// How long a commit keeps trying when the store does not answer: until `--retry-timeout` has passed since the
/// first try, with pauses that grow to a few seconds.
struct Patience {
    deadline: std::time::Instant,
    pause: std::time::Duration,
    /// A commit was sent whose outcome is unknown: giving up then cannot say "nothing was published".
    sent: bool,
}

impl Patience {
    fn new(timeout: std::time::Duration) -> Self {
        Patience {
            deadline: std::time::Instant::now() + timeout,
            pause: std::time::Duration::from_millis(100),
            sent: false,
        }
    }

    /// After a failed request: pauses and returns to try again, or gives up with `error` once the time is up.
    fn again(&mut self, error: Error, url: &str) -> Result<()> {
        if std::time::Instant::now() >= self.deadline {
            return Err(if self.sent {
                Error::CommitUncertain {
                    url: url.to_string(),
                    source: Box::new(error),
                }
            } else {
                error
            });
        }
        std::thread::sleep(self.pause);
        self.pause = (self.pause * 2).min(std::time::Duration::from_secs(5));
        Ok(())
    }
}
