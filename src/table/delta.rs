//! Delta Lake tables (SPEC §6.4): `OUT/groups` (partitioned by `dt`, and `hr` with `--partition hour`) and
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

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::future::IntoFuture;
use std::path::Path;
use std::sync::{Arc, Once};

use deltalake::kernel::transaction::{CommitBuilder, CommitProperties, TransactionError};
use deltalake::kernel::{Action, Add, DataType as DeltaType, Remove, StructField, Transaction};
use deltalake::logstore::{
    LogStore, LogStoreFactory, ObjectStoreRef, StorageConfig, default_logstore, get_actions,
    logstore_factories,
};
use deltalake::protocol::{DeltaOperation, SaveMode};
use deltalake::{DeltaResult, DeltaTable, DeltaTableBuilder, DeltaTableError};
use futures::{StreamExt, TryStreamExt};
use url::Url;

use crate::accounts::{self, ACCOUNTS_DIR};
use crate::datafile::DataFile;
use crate::dataset::{self, GROUPS_DIR, REJECTS_DIR, RUNS_DIR};
use crate::error::{Error, Result};
use crate::load::{LoadOptions, Mode};
use crate::report::{AccountsReport, CommitReport, FileReport, NotPublished, Phase, Report};
use crate::schema::{self, COLUMNS, Column, Kind};
use crate::store::{self, Location, block_on};
use crate::table::{Context, Ingested, Staging, Table};
use crate::writer::{PartitionMode, StagedFile};

/// The `txn` application id that marks a run's commit to `groups` (its run id appended).
const RUN_APP: &str = "group-loader/run/";
/// The `txn` application id whose version, in `accounts`, is the `groups` version it reflects (-1: none, so
/// the next run rebuilds it from every `groups` file).
const REFLECTS_APP: &str = "group-loader/groups-version";
/// Commits tried before a run gives up (each after the table moved on under it).
const MAX_COMMIT_ATTEMPTS: usize = 100;
/// Orphans (uploaded, never committed: a killed run's) are vacuumed only when at least this old, so that the
/// uploads of runs committing right now are never taken for orphans.
const ORPHAN_MIN_AGE: chrono::Duration = chrono::Duration::hours(24);

/// A dataset of Delta tables.
pub struct Delta {
    root: Location,
    partition: PartitionMode,
    groups: DeltaTable,
    accounts: DeltaTable,
}

/// Registers the log store of the object-store schemes with delta-rs: every store we open supports
/// conditional put (S3 `If-None-Match`, GCS generation preconditions, Azure `If-None-Match`), so delta-rs'
/// default log store (a commit creates the next log file only if it does not exist) is safe for concurrent
/// writers.
fn register_log_stores() {
    struct ConditionalPut;
    impl LogStoreFactory for ConditionalPut {
        fn with_options(
            &self,
            prefixed_store: ObjectStoreRef,
            root_store: ObjectStoreRef,
            location: &Url,
            options: &StorageConfig,
        ) -> DeltaResult<Arc<dyn LogStore>> {
            Ok(default_logstore(
                prefixed_store,
                root_store,
                location,
                options,
            ))
        }
    }
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        for scheme in store::SCHEMES {
            if let Ok(url) = Url::parse(&format!("{scheme}://")) {
                logstore_factories().insert(url, Arc::new(ConditionalPut));
            }
        }
    });
}

fn delta_err(url: &str) -> impl Fn(DeltaTableError) -> Error + '_ {
    move |e| Error::Delta {
        url: url.to_string(),
        message: e.to_string(),
    }
}

/// Opens the Delta table at `root/name` (not loaded when there is none yet).
fn open_table(root: &Location, name: &str) -> Result<DeltaTable> {
    let loc = root.join(name);
    let url = Url::parse(&format!("{}/", loc.url))
        .map_err(|e| Error::Usage(format!("invalid URL {}: {e}", loc.url)))?;
    let mut table = DeltaTableBuilder::from_url(url.clone())
        .and_then(|b| b.with_storage_backend(root.store.clone(), url).build())
        .map_err(delta_err(&loc.url))?;
    match block_on(table.load()) {
        Ok(()) | Err(DeltaTableError::NotATable(_)) => Ok(table),
        Err(e) => Err(delta_err(&loc.url)(e)),
    }
}

/// The partition columns of `groups` for a partitioning.
fn partition_columns(mode: PartitionMode) -> Vec<String> {
    match mode {
        PartitionMode::Day => vec!["dt".into()],
        PartitionMode::Hour => vec!["dt".into(), "hr".into()],
        PartitionMode::None => Vec::new(),
    }
}

fn delta_type(c: &Column) -> DeltaType {
    match c.kind {
        Kind::Text | Kind::Json => DeltaType::STRING,
        Kind::Time => DeltaType::TIMESTAMP,
    }
}

/// The Delta schema of a table: its columns, then the partition columns (`dt` a date, `hr` an integer).
fn delta_fields(columns: &[Column], partition: PartitionMode) -> Vec<StructField> {
    let mut fields: Vec<StructField> = columns
        .iter()
        .map(|c| StructField::new(c.name, delta_type(c), c.nullable))
        .collect();
    for p in partition_columns(partition) {
        let t = if p == "dt" {
            DeltaType::DATE
        } else {
            DeltaType::INTEGER
        };
        fields.push(StructField::new(p, t, false));
    }
    fields
}

/// The partition values of a staged file's partition path (`dt=2024-03-01/hr=07` -> dt, hr "7").
fn partition_values(path: &str) -> HashMap<String, Option<String>> {
    path.split('/')
        .filter_map(|part| part.split_once('='))
        .map(|(k, v)| {
            let v = if k == "hr" {
                v.trim_start_matches('0').to_string()
            } else {
                v.to_string()
            };
            let v = if v.is_empty() { "0".to_string() } else { v };
            (k.to_string(), Some(v))
        })
        .collect()
}

/// The bucket of a file's partition values (the inverse of [`partition_values`]).
fn bucket_of(mode: PartitionMode, values: &HashMap<String, Option<String>>) -> Option<i64> {
    let get = |k: &str| values.get(k).cloned().flatten();
    let path = match mode {
        PartitionMode::None => String::new(),
        PartitionMode::Day => format!("dt={}", get("dt")?),
        PartitionMode::Hour => {
            let hr: u32 = get("hr")?.parse().ok()?;
            format!("dt={}/hr={hr:02}", get("dt")?)
        }
    };
    mode.bucket_of_path(&path)
}

impl Delta {
    /// Opens the dataset at `opts.output` (a URL, or a local folder with `--format delta`), refusing a
    /// `--partition` other than the one `groups` was created with, or a local hive dataset.
    pub fn open(opts: &LoadOptions) -> Result<Delta> {
        register_log_stores();
        let out = opts.output.to_string_lossy();
        let root = if store::is_url(&out) {
            Location::parse(&out)?
        } else {
            crate::publish::check_output(&opts.output)?;
            if let Some(shape) = dataset::recorded_shape(&opts.output)?
                && shape.format == crate::dataset::Format::Hive
            {
                return Err(Error::Usage(format!(
                    "{out} was created with --format hive; this run asks for --format delta. A dataset keeps \
                     one layout: run with --format hive, or load into a new --output"
                )));
            }
            Location::local(&opts.output)?
        };
        let groups = open_table(&root, GROUPS_DIR)?;
        if let Ok(state) = groups.snapshot() {
            let recorded = state.metadata().partition_columns().to_vec();
            if recorded != partition_columns(opts.partition) {
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
        Ok(Delta {
            root,
            partition: opts.partition,
            groups,
            accounts,
        })
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

    /// The commit of a run's rows to `groups`, retried on top of concurrent commits. `None` when a commit of
    /// the same run is already in the table.
    fn commit_groups(
        &mut self,
        run: &str,
        adds: &[Add],
        overwrite: bool,
        replaced: &mut BTreeMap<String, u64>,
    ) -> Result<Option<(u64, usize)>> {
        let url = self.groups_url();
        let partitions: BTreeSet<String> = adds
            .iter()
            .map(|a| partition_path(&a.partition_values))
            .collect();
        for attempt in 0..MAX_COMMIT_ATTEMPTS {
            self.latest_groups()?;
            let state = self.groups.snapshot().map_err(delta_err(&url))?;
            let log_store = self.groups.log_store();
            let app = format!("{RUN_APP}{run}");
            if block_on(state.transaction_version(log_store.as_ref(), &app))
                .map_err(delta_err(&url))?
                .is_some()
            {
                return Ok(None);
            }
            let mut actions: Vec<Action> = adds.iter().cloned().map(Action::Add).collect();
            replaced.clear();
            if overwrite {
                // Every file of the partitions this run writes, at the version it commits on top of.
                for f in live_files(&self.groups, &url)? {
                    let p = partition_path(&f.values);
                    if partitions.contains(&p) {
                        *replaced.entry(p).or_insert(0) += f.rows.unwrap_or(0) as u64;
                        actions.push(remove_action(f.path, Some(f.size), Some(f.values)));
                    }
                }
            }
            let op = DeltaOperation::Write {
                mode: if overwrite {
                    SaveMode::Overwrite
                } else {
                    SaveMode::Append
                },
                partition_by: Some(partition_columns(self.partition)).filter(|p| !p.is_empty()),
                predicate: None,
            };
            let props = CommitProperties::default()
                .with_max_retries(0)
                .with_application_transaction(Transaction::new_with_last_update(
                    app,
                    0,
                    Some(chrono::Utc::now().timestamp_millis()),
                ))
                .with_metadata([("group_loader_run".to_string(), serde_json::json!(run))]);
            let committed = block_on(async {
                CommitBuilder::from(props)
                    .with_actions(actions)
                    .build(Some(state), log_store.clone(), op)
                    .await
            });
            match committed {
                Ok(c) => return Ok(Some((c.version(), attempt))),
                Err(e) if is_conflict(&e) => continue,
                Err(e) => return Err(delta_err(&url)(e)),
            }
        }
        Err(Error::Delta {
            url,
            message: format!(
                "the table kept moving: no commit after {MAX_COMMIT_ATTEMPTS} attempts"
            ),
        })
    }

    /// Uploads the run's staged `groups` files (in parallel) and returns their Add actions.
    fn upload_groups(
        &self,
        run: &str,
        files: &[StagedFile],
        report: &mut Report,
    ) -> Result<Vec<Add>> {
        let token = uuid_token();
        let mut adds = Vec::with_capacity(files.len());
        let mut uploads = Vec::with_capacity(files.len());
        for f in files {
            let name = format!("part-{run}-{token}-{:05}.parquet", f.seq);
            let rel = if f.partition.is_empty() {
                name
            } else {
                format!("{}/{name}", f.partition)
            };
            let (rows, stats) = stats::of_file(&f.staged)?;
            adds.push(Add {
                path: rel.clone(),
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
            });
            *report.partitions.entry(f.partition.clone()).or_insert(0) += rows;
            report.files.push(FileReport {
                path: format!("{GROUPS_DIR}/{rel}"),
                rows,
                bytes: f.bytes,
            });
            uploads.push((
                self.root.join(&format!("{GROUPS_DIR}/{rel}")),
                f.staged.clone(),
            ));
        }
        upload_all(uploads)?;
        Ok(adds)
    }

    /// Brings `accounts` up to date with the latest `groups` version (SPEC §9): the `groups` commits it does
    /// not reflect yet are merged into it (or, after files left `groups`, it is rebuilt from every file), and
    /// the new snapshot committed with the `groups` version it reflects. Retried when another run commits
    /// first. With `--no-accounts`, empties it instead.
    fn update_accounts(
        &mut self,
        ctx: &Context<'_>,
        staging: &Staging,
    ) -> Result<(Option<AccountsReport>, Option<u64>)> {
        let url = self.root.join(ACCOUNTS_DIR).url;
        for _ in 0..MAX_COMMIT_ATTEMPTS {
            if self.groups.version().is_none() {
                return Ok((None, None));
            }
            block_on(self.groups.update_state()).map_err(delta_err(&self.groups_url()))?;
            if self.accounts.version().is_none() {
                if !ctx.opts.accounts {
                    return Ok((None, None));
                }
                self.accounts = create(
                    &self.root,
                    ACCOUNTS_DIR,
                    &schema::ACCOUNT_COLUMNS,
                    PartitionMode::None,
                )?;
            }
            block_on(self.accounts.update_state()).map_err(delta_err(&url))?;
            let plan = accounts_plan(self, ctx, staging)?;
            let Some(plan) = plan else {
                let groups = self.accounts_rows()?;
                let version = self.accounts.version();
                return Ok((
                    ctx.opts.accounts.then_some(AccountsReport {
                        groups,
                        files_written: 0,
                        buckets: 0,
                        rebuilt: false,
                    }),
                    version,
                ));
            };
            match self.commit_accounts(plan.actions, plan.reflects)? {
                Some(version) => return Ok((plan.report, Some(version))),
                None => continue,
            }
        }
        Err(Error::Delta {
            url,
            message: format!(
                "the table kept moving: no commit after {MAX_COMMIT_ATTEMPTS} attempts"
            ),
        })
    }

    fn accounts_rows(&self) -> Result<u64> {
        let files = live_files(&self.accounts, &self.root.join(ACCOUNTS_DIR).url)?;
        Ok(files.iter().map(|f| f.rows.unwrap_or(0) as u64).sum())
    }

    /// Commits to `accounts` on top of the version loaded; `None` when another commit came first.
    fn commit_accounts(&mut self, actions: Vec<Action>, reflects: i64) -> Result<Option<u64>> {
        let url = self.root.join(ACCOUNTS_DIR).url;
        let state = self.accounts.snapshot().map_err(delta_err(&url))?;
        let props = CommitProperties::default()
            .with_max_retries(0)
            .with_application_transaction(Transaction::new_with_last_update(
                REFLECTS_APP,
                reflects,
                Some(chrono::Utc::now().timestamp_millis()),
            ));
        let op = DeltaOperation::Write {
            mode: SaveMode::Overwrite,
            partition_by: None,
            predicate: None,
        };
        let committed = block_on(async {
            CommitBuilder::from(props)
                .with_actions(actions)
                .build(Some(state), self.accounts.log_store(), op)
                .await
        });
        match committed {
            Ok(c) => Ok(Some(c.version())),
            Err(e) if is_conflict(&e) => Ok(None),
            Err(e) => Err(delta_err(&url)(e)),
        }
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

/// A data file of a table's loaded version.
struct LiveFile {
    /// Relative to the table's root.
    path: String,
    size: i64,
    rows: Option<usize>,
    values: HashMap<String, Option<String>>,
}

/// The data files of a table's loaded version (none when the table does not exist yet).
fn live_files(table: &DeltaTable, url: &str) -> Result<Vec<LiveFile>> {
    let Ok(state) = table.snapshot() else {
        return Ok(Vec::new());
    };
    block_on(
        state
            .snapshot()
            .file_views(table.log_store().as_ref(), None)
            .map_ok(|f| LiveFile {
                path: f.path().to_string(),
                size: f.size(),
                rows: f.num_records(),
                values: f.partition_values_map(),
            })
            .try_collect(),
    )
    .map_err(delta_err(url))
}

/// `dt=...[/hr=..]` of a file's partition values (as staged files name partitions).
fn partition_path(values: &HashMap<String, Option<String>>) -> String {
    let get = |k: &str| values.get(k).cloned().flatten();
    match (get("dt"), get("hr")) {
        (Some(dt), Some(hr)) => format!("dt={dt}/hr={:02}", hr.parse::<u32>().unwrap_or_default()),
        (Some(dt), None) => format!("dt={dt}"),
        _ => String::new(),
    }
}

fn is_conflict(e: &DeltaTableError) -> bool {
    matches!(
        e,
        DeltaTableError::VersionAlreadyExists(_)
            | DeltaTableError::Transaction {
                source: TransactionError::MaxCommitAttempts(_)
                    | TransactionError::CommitConflict(_)
                    | TransactionError::VersionAlreadyExists(_)
            }
    )
}

/// A random token for file names that must never have been used.
fn uuid_token() -> String {
    let nanos = chrono::Utc::now().timestamp_nanos_opt().unwrap_or_default() as u64;
    let h = xxhash_rust::xxh3::xxh3_64(format!("{}-{nanos}", std::process::id()).as_bytes());
    format!("{h:016x}")
}

/// Creates the table `name` (or loads it when another run created it first).
fn create(
    root: &Location,
    name: &str,
    columns: &[Column],
    partition: PartitionMode,
) -> Result<DeltaTable> {
    let table = open_table(root, name)?;
    if table.version().is_some() {
        return Ok(table);
    }
    let url = root.join(name).url;
    let created = block_on(
        table
            .create()
            .with_table_name(name)
            .with_columns(delta_fields(columns, partition))
            .with_partition_columns(partition_columns(partition))
            .with_save_mode(SaveMode::Ignore)
            .with_configuration_property(deltalake::TableProperty::CheckpointInterval, Some("10"))
            .into_future(),
    );
    match created {
        Ok(t) => Ok(t),
        // Another run created it at the same moment: use theirs.
        Err(_) => {
            let t = open_table(root, name)?;
            if t.version().is_some() {
                Ok(t)
            } else {
                Err(Error::Delta {
                    url,
                    message: "cannot create the table".into(),
                })
            }
        }
    }
}

/// Uploads local files to their locations, several at once.
fn upload_all(uploads: Vec<(Location, std::path::PathBuf)>) -> Result<()> {
    let results: Vec<Result<()>> = block_on(
        futures::stream::iter(uploads)
            .map(|(to, from)| async move {
                tokio::task::spawn_blocking(move || to.upload(&from))
                    .await
                    .unwrap_or_else(|e| {
                        Err(Error::Io {
                            action: "uploading",
                            path: "upload task".into(),
                            source: std::io::Error::other(e.to_string()),
                        })
                    })
            })
            .buffer_unordered(8)
            .collect(),
    );
    results.into_iter().collect()
}

/// What a commit to `accounts` holds.
struct AccountsPlan {
    actions: Vec<Action>,
    reflects: i64,
    report: Option<AccountsReport>,
}

/// The commit that brings `accounts` up to date, or `None` when it is.
fn accounts_plan(d: &Delta, ctx: &Context<'_>, staging: &Staging) -> Result<Option<AccountsPlan>> {
    let groups_url = d.groups_url();
    let accounts_url = d.root.join(ACCOUNTS_DIR).url;
    let gstate = d.groups.snapshot().map_err(delta_err(&groups_url))?;
    let astate = d.accounts.snapshot().map_err(delta_err(&accounts_url))?;
    let latest = gstate.version();
    let reflected =
        block_on(astate.transaction_version(d.accounts.log_store().as_ref(), REFLECTS_APP))
            .map_err(delta_err(&accounts_url))?
            .unwrap_or(-1);
    let snapshot = accounts_files(d)?;
    let now = chrono::Utc::now().timestamp_millis();
    let remove = |f: &accounts::SnapshotFile| {
        let path = f.rel.strip_prefix(ACCOUNTS_DIR).unwrap_or(&f.rel);
        remove_action(path.to_string_lossy().into_owned(), None, None)
    };
    if !ctx.opts.accounts {
        // Never stale: emptied, and marked for a rebuild by the next run that keeps it.
        if snapshot.is_empty() && reflected == -1 {
            return Ok(None);
        }
        return Ok(Some(AccountsPlan {
            actions: snapshot.iter().map(remove).collect(),
            reflects: -1,
            report: None,
        }));
    }
    if reflected >= latest as i64 {
        return Ok(None);
    }
    // The groups commits accounts has not seen: their added files, unless files left groups since (or there
    // is nothing to build on), which calls for a rebuild from every file of the latest version.
    let mut rebuild = reflected < 0;
    let mut added: Vec<String> = Vec::new();
    if !rebuild {
        let log_store = d.groups.log_store();
        for v in (reflected + 1) as u64..=latest {
            let Some(bytes) =
                block_on(log_store.read_commit_entry(v)).map_err(delta_err(&groups_url))?
            else {
                rebuild = true; // the log was cleaned up since: start again from the files
                break;
            };
            for action in get_actions(v, &bytes).map_err(delta_err(&groups_url))? {
                match action {
                    Action::Add(a) => added.push(a.path),
                    Action::Remove(_) => rebuild = true,
                    _ => {}
                }
            }
        }
    }
    let live = groups_files(d)?;
    let (run_files, kept_files) = if rebuild {
        (Vec::new(), live.into_values().collect())
    } else {
        let wanted: BTreeSet<&String> = added.iter().collect();
        (
            live.into_iter()
                .filter(|(p, _)| wanted.contains(p))
                .map(|(_, f)| f)
                .collect(),
            Vec::new(),
        )
    };
    let token = uuid_token();
    let merged = accounts::merge(&accounts::Merge {
        staging: staging.dir(),
        snapshot: &snapshot,
        run_files,
        rebuild,
        kept_files,
        name_suffix: Some(&token),
        codec: ctx.opts.codec,
        budget: ctx.opts.accounts_budget,
        pool: ctx.pool,
    })?;
    let mut actions = Vec::new();
    let mut uploads = Vec::new();
    for (from, to) in &merged.adds {
        let name = to
            .strip_prefix(ACCOUNTS_DIR)
            .unwrap_or(to)
            .to_string_lossy()
            .into_owned();
        let (_, stats) = stats::of_file(from)?;
        let size = std::fs::metadata(from)
            .map_err(Error::io("reading", from))?
            .len();
        actions.push(Action::Add(Add {
            path: name.clone(),
            partition_values: HashMap::new(),
            size: size as i64,
            modification_time: now,
            data_change: true,
            stats: Some(stats),
            tags: None,
            deletion_vector: None,
            base_row_id: None,
            default_row_commit_version: None,
            clustering_provider: None,
        }));
        uploads.push((d.root.join(&format!("{ACCOUNTS_DIR}/{name}")), from.clone()));
    }
    upload_all(uploads)?;
    let removed: BTreeSet<&Path> = merged.removes.iter().map(|p| p.as_path()).collect();
    actions.extend(
        snapshot
            .iter()
            .filter(|f| removed.contains(f.rel.as_path()))
            .map(remove),
    );
    Ok(Some(AccountsPlan {
        actions,
        reflects: latest as i64,
        report: Some(AccountsReport {
            groups: merged.groups,
            files_written: merged.adds.len(),
            buckets: merged.buckets,
            rebuilt: merged.rebuilt,
        }),
    }))
}

/// A Remove action for a data file.
fn remove_action(
    path: String,
    size: Option<i64>,
    partition_values: Option<HashMap<String, Option<String>>>,
) -> Action {
    Action::Remove(Remove {
        path,
        data_change: true,
        deletion_timestamp: Some(chrono::Utc::now().timestamp_millis()),
        extended_file_metadata: Some(size.is_some()),
        partition_values,
        size,
        tags: None,
        deletion_vector: None,
        base_row_id: None,
        default_row_commit_version: None,
    })
}

/// The live files of `groups` at the loaded version, by path (relative to the table).
fn groups_files(d: &Delta) -> Result<BTreeMap<String, DataFile>> {
    Ok(live_files(&d.groups, &d.groups_url())?
        .into_iter()
        .map(|f| {
            let location = d.root.join(&format!("{GROUPS_DIR}/{}", f.path));
            let file = DataFile::Remote {
                location,
                size: f.size as u64,
            };
            (f.path, file)
        })
        .collect())
}

/// The live files of `accounts`, as snapshot files.
fn accounts_files(d: &Delta) -> Result<Vec<accounts::SnapshotFile>> {
    let mut found = Vec::new();
    for LiveFile { path, size, .. } in live_files(&d.accounts, &d.root.join(ACCOUNTS_DIR).url)? {
        let Some((bucket, of)) = accounts::parse_file_name(&path) else {
            continue;
        };
        found.push(accounts::SnapshotFile {
            bucket,
            of,
            file: DataFile::Remote {
                location: d.root.join(&format!("{ACCOUNTS_DIR}/{path}")),
                size: size as u64,
            },
            rel: Path::new(ACCOUNTS_DIR).join(&path),
        });
    }
    found.sort_by_key(|f| (f.bucket, f.of));
    Ok(found)
}

impl Table for Delta {
    fn already_loaded(&self, run_id: &str) -> Result<Option<String>> {
        let Ok(state) = self.groups.snapshot() else {
            return Ok(None);
        };
        let app = format!("{RUN_APP}{run_id}");
        let committed = block_on(state.transaction_version(self.groups.log_store().as_ref(), &app))
            .map_err(delta_err(&self.groups_url()))?;
        if committed.is_none() {
            return Ok(None);
        }
        // When: from the run's report, if it was written.
        let report = self
            .root
            .join(&format!("{RUNS_DIR}/{run_id}.json"))
            .get_bytes()?;
        let when = report
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
            .and_then(|r| r["started_at"].as_str().map(str::to_string))
            .unwrap_or_else(|| "earlier".to_string());
        Ok(Some(when))
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
        Staging::create(
            std::env::temp_dir()
                .join("group-loader")
                .join(crate::table::staging_name()),
        )
    }

    fn publish(&mut self, run: Ingested, staging: Staging, ctx: &Context<'_>) -> Result<Report> {
        let Ingested {
            mut report,
            files,
            rejects,
        } = run;
        let already_loaded = report.not_published == Some(NotPublished::AlreadyLoaded);
        let mut commit = CommitReport::default();
        if report.published {
            ctx.progress.phase(
                Phase::Publishing,
                report.counts.rows_written,
                report.counts.rejected_total(),
            );
            let adds = self.upload_groups(&report.run.clone(), &files, &mut report)?;
            let overwrite = ctx.opts.mode == Mode::Overwrite;
            match self.commit_groups(&report.run.clone(), &adds, overwrite, &mut report.replaced)? {
                Some((version, retries)) => {
                    commit.groups_version = Some(version);
                    commit.retries = retries as u64;
                }
                None => {
                    // A run with the same id committed meanwhile (a retried shard): nothing new.
                    report.published = false;
                    report.not_published = Some(NotPublished::AlreadyLoaded);
                    report.already_loaded = Some("a concurrent run".into());
                    report.files.clear();
                    report.partitions.clear();
                }
            }
        }
        if report.published || already_loaded {
            ctx.progress.phase(
                Phase::Accounts,
                report.counts.rows_written,
                report.counts.rejected_total(),
            );
            let (accounts, version) = self.update_accounts(ctx, &staging)?;
            report.accounts = accounts;
            commit.accounts_version = version;
            commit.files_vacuumed = self.vacuum(ctx.opts.vacuum_retention)?;
        }
        if report.not_published != Some(NotPublished::AlreadyLoaded) {
            if let Some(from) = &rejects {
                let rel = format!("{REJECTS_DIR}/{}.ndjson", report.run);
                self.root.join(&rel).upload(from)?;
                report.rejects_file = Some(rel);
            }
            report.commit = Some(commit);
            report.elapsed_s = ctx.started.elapsed().as_secs_f64();
            self.root
                .join(&format!("{RUNS_DIR}/{}.json", report.run))
                .put_bytes(crate::load::report_json(&report)?)?;
        } else {
            report.commit = Some(commit);
        }
        let _ = staging.discard();
        Ok(report)
    }
}

/// Column statistics of a data file, for its Add action (SPEC §6.4: so readers skip files).
mod stats {
    use std::path::Path;

    use parquet::file::reader::{FileReader, SerializedFileReader};
    use parquet::file::statistics::Statistics;
    use serde_json::{Map, Value};

    use crate::error::{Error, Result};

    /// Strings longer than this are not given min/max (Delta readers compare prefixes; an exact value or
    /// nothing is always safe).
    const MAX_STRING_STAT: usize = 32;

    /// `(rows, stats JSON)` of a Parquet file: `numRecords`, `nullCount` of every column, and `minValues` /
    /// `maxValues` of the time columns (to the millisecond, min rounded down and max up) and of text columns
    /// whose values are short.
    pub fn of_file(path: &Path) -> Result<(u64, String)> {
        let file = std::fs::File::open(path).map_err(Error::io("opening", path))?;
        let reader = SerializedFileReader::new(file).map_err(|e| Error::Dataset {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        let meta = reader.metadata();
        let rows = meta.file_metadata().num_rows().max(0) as u64;
        let schema = meta.file_metadata().schema_descr();
        let (mut nulls, mut mins, mut maxs) = (Map::new(), Map::new(), Map::new());
        for c in 0..schema.num_columns() {
            let name = schema.column(c).name().to_string();
            let mut null_count = 0u64;
            let mut min: Option<Stat> = None;
            let mut max: Option<Stat> = None;
            let mut usable = true;
            for rg in meta.row_groups() {
                let Some(stats) = rg.column(c).statistics() else {
                    usable = false;
                    continue;
                };
                null_count += stats.null_count_opt().unwrap_or(0);
                match Stat::range(stats) {
                    Some((lo, hi)) => {
                        min = Some(match min {
                            Some(m) if m <= lo => m,
                            _ => lo,
                        });
                        max = Some(match max {
                            Some(m) if m >= hi => m,
                            _ => hi,
                        });
                    }
                    None => {
                        // All null in this row group is fine; anything else unknown spoils min/max.
                        if stats.null_count_opt() != Some(rg.num_rows() as u64) {
                            usable = false;
                        }
                    }
                }
            }
            nulls.insert(name.clone(), Value::from(null_count));
            if let (true, Some(lo), Some(hi)) = (usable, min, max) {
                mins.insert(name.clone(), lo.json(false));
                maxs.insert(name, hi.json(true));
            }
        }
        let doc = serde_json::json!({
            "numRecords": rows,
            "minValues": mins,
            "maxValues": maxs,
            "nullCount": nulls,
        });
        Ok((rows, doc.to_string()))
    }

    #[derive(Debug, Clone, PartialEq, PartialOrd)]
    enum Stat {
        Micros(i64),
        Text(String),
    }

    impl Stat {
        /// The exact min and max of a column chunk, when they are usable.
        fn range(s: &Statistics) -> Option<(Stat, Stat)> {
            match s {
                Statistics::Int64(v) => {
                    Some((Stat::Micros(*v.min_opt()?), Stat::Micros(*v.max_opt()?)))
                }
                Statistics::ByteArray(v) if v.min_is_exact() && v.max_is_exact() => {
                    let text = |b: &parquet::data_type::ByteArray| {
                        std::str::from_utf8(b.data())
                            .ok()
                            .filter(|t| t.chars().count() <= MAX_STRING_STAT)
                            .map(|t| Stat::Text(t.to_string()))
                    };
                    Some((text(v.min_opt()?)?, text(v.max_opt()?)?))
                }
                _ => None,
            }
        }

        fn json(&self, round_up: bool) -> Value {
            match self {
                Stat::Text(t) => Value::from(t.as_str()),
                Stat::Micros(us) => {
                    let ms = if round_up {
                        us.div_euclid(1000) + i64::from(us.rem_euclid(1000) != 0)
                    } else {
                        us.div_euclid(1000)
                    };
                    let t = chrono::DateTime::from_timestamp_millis(ms).unwrap_or_default();
                    Value::from(t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string())
                }
            }
        }
    }
}
