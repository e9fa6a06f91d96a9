//! The Delta log and tables, as delta-rs gives them: opening and creating the tables, the log store of our
//! object stores, the schema and partition columns, the live files of a version, and uploads.
//!
//! Why this module exists: these are the small pieces every Delta step needs (the `groups` commit, the
//! `accounts` commit, the dedupe window's listing), kept apart from what a run decides to commit.

use std::collections::HashMap;
use std::future::IntoFuture;
use std::sync::{Arc, Once};

use deltalake::kernel::transaction::TransactionError;
use deltalake::kernel::{Action, DataType as DeltaType, Remove, StructField};
use deltalake::logstore::{
    LogStore, LogStoreFactory, ObjectStoreRef, StorageConfig, default_logstore, logstore_factories,
};
use deltalake::protocol::SaveMode;
use deltalake::{DeltaResult, DeltaTable, DeltaTableBuilder, DeltaTableError};
use futures::{StreamExt, TryStreamExt};
use url::Url;

use crate::error::{Error, Result};
use crate::layout::PartitionMode;
use crate::schema::{Column, Kind};
use crate::store::{self, Location, block_on};

/// Registers the log store of the object-store schemes with delta-rs: every store we open supports
/// conditional put (S3 `If-None-Match`, GCS generation preconditions, Azure `If-None-Match`), so delta-rs'
/// default log store (a commit creates the next log file only if it does not exist) is safe for concurrent
/// writers.
pub(super) fn register_log_stores() {
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

pub(super) fn delta_err(url: &str) -> impl Fn(DeltaTableError) -> Error + '_ {
    move |e| {
        let message = e.to_string();
        store::no_credentials(url, &message).unwrap_or_else(|| Error::Delta {
            url: url.to_string(),
            source: Box::new(e),
        })
    }
}

/// Opens the Delta table at `root/name` (not loaded when there is none yet).
pub(super) fn open_table(root: &Location, name: &str) -> Result<DeltaTable> {
    let loc = root.join(name);
    let url = Url::parse(&format!("{}/", loc.url))
        .map_err(|e| Error::Usage(format!("invalid URL {}: {e}", loc.url)))?;
    // A local table's folder must exist before delta-rs opens (or creates) the table in it.
    if let Ok(dir) = url.to_file_path() {
        std::fs::create_dir_all(&dir).map_err(Error::io("creating directory", &dir))?;
    }
    let mut table = DeltaTableBuilder::from_url(url.clone())
        .and_then(|b| b.with_storage_backend(root.store.clone(), url).build())
        .map_err(delta_err(&loc.url))?;
    match block_on(table.load()) {
        Ok(()) | Err(DeltaTableError::NotATable(_)) => Ok(table),
        Err(e) => Err(delta_err(&loc.url)(e)),
    }
}

/// The partition columns of `groups` for a partitioning.
pub(super) fn partition_columns(mode: PartitionMode) -> Vec<String> {
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
pub(super) fn delta_fields(columns: &[Column], partition: PartitionMode) -> Vec<StructField> {
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
pub(super) fn partition_values(path: &str) -> HashMap<String, Option<String>> {
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
pub(super) fn bucket_of(
    mode: PartitionMode,
    values: &HashMap<String, Option<String>>,
) -> Option<i64> {
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

/// A data file of a table's loaded version.
pub(super) struct LiveFile {
    /// Relative to the table's root.
    pub path: String,
    pub size: i64,
    pub rows: Option<usize>,
    pub values: HashMap<String, Option<String>>,
    /// Its Add's `modificationTime` (milliseconds): when it was written, the order of a partition's rows.
    pub written: i64,
}

/// The data files of a table's loaded version (none when the table does not exist yet).
pub(super) fn live_files(table: &DeltaTable, url: &str) -> Result<Vec<LiveFile>> {
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
                written: f.modification_time(),
            })
            .try_collect(),
    )
    .map_err(delta_err(url))
}

/// `dt=...[/hr=..]` of a file's partition values (as staged files name partitions).
pub(super) fn partition_path(values: &HashMap<String, Option<String>>) -> String {
    let get = |k: &str| values.get(k).cloned().flatten();
    match (get("dt"), get("hr")) {
        (Some(dt), Some(hr)) => format!("dt={dt}/hr={:02}", hr.parse::<u32>().unwrap_or_default()),
        (Some(dt), None) => format!("dt={dt}"),
        _ => String::new(),
    }
}

pub(super) fn is_conflict(e: &DeltaTableError) -> bool {
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

/// Errors of the store under a commit (a connection closed or reset, a timeout): the commit may or may not
/// have landed, and trying again is safe (a commit is a conditional create of the next log file).
pub(super) fn is_transient(e: &DeltaTableError) -> bool {
    matches!(
        e,
        DeltaTableError::ObjectStore { .. }
            | DeltaTableError::Transaction {
                source: TransactionError::ObjectStore { .. }
                    | TransactionError::LogStoreError { .. }
            }
    )
}

/// An error opening a table, reworded when its cause is a partition value no Delta reader parses (a date
/// outside 0001-01-01 to 9999-12-31, written by an earlier version of the tool): which commit added it, and
/// how to take it back.
pub(super) fn diagnose_partitions(table: &Location, error: Error) -> Error {
    if !error.to_string().contains("Failed to parse value") {
        return error;
    }
    let log = table.join("_delta_log");
    let Ok(objects) = log.list() else {
        return error;
    };
    let mut commits: Vec<(u64, object_store::path::Path)> = objects
        .into_iter()
        .filter_map(|m| {
            let name = m.location.filename()?.strip_suffix(".json")?.parse().ok()?;
            Some((name, m.location))
        })
        .collect();
    commits.sort();
    let latest = commits.last().map(|(v, _)| *v);
    for (version, path) in &commits {
        let Ok(Some(bytes)) = log.child(path.clone()).get_bytes() else {
            continue;
        };
        for line in bytes.split(|&b| b == b'\n') {
            let Ok(action) = serde_json::from_slice::<serde_json::Value>(line) else {
                continue;
            };
            let values = &action["add"]["partitionValues"];
            let bad = values
                .as_object()
                .into_iter()
                .flatten()
                .find(|(k, v)| !partition_value_ok(k, v.as_str().unwrap_or("")));
            if let Some((k, v)) = bad {
                let v = v.as_str().unwrap_or_default();
                let undo = if Some(*version) == latest {
                    format!(
                        "It is the table's latest commit: deleting its log file {} takes the table back to \
                         version {}, as it was before that commit (the data files the commit added are then \
                         removed by a later run's vacuum)",
                        log.child(path.clone()).url,
                        version.saturating_sub(1)
                    )
                } else {
                    "Later commits were made on top of it: restore the version before it with a Delta tool"
                        .into()
                };
                return Error::DeltaState {
                    url: table.url.clone(),
                    message: format!(
                        "the table cannot be read: version {version} added a file in partition {k}={v}, which no \
                         Delta reader parses (dates run from 0001-01-01 to 9999-12-31); an earlier version of \
                         group-loader wrote it from a time whose offset carried it out of that range. {undo}. \
                         Cause: {error}"
                    ),
                };
            }
        }
    }
    error
}

/// Whether a partition value of `groups` is one every Delta reader parses.
fn partition_value_ok(key: &str, value: &str) -> bool {
    match key {
        "dt" => PartitionMode::Day
            .bucket_of_path(&format!("dt={value}"))
            .is_some(),
        "hr" => value.parse::<u32>().is_ok_and(|h| h < 24),
        _ => true,
    }
}

/// Checks every partition value a commit would write: a date of years 0001 to 9999 (`dt`) and an hour of 0 to
/// 23 (`hr`), as every Delta reader parses them. A value outside that range would make the table unreadable to
/// them for good, so it is never committed.
pub(super) fn check_partition_values(
    mode: PartitionMode,
    actions: &[Action],
    url: &str,
) -> Result<()> {
    for action in actions {
        if let Action::Add(add) = action
            && bucket_of(mode, &add.partition_values).is_none()
        {
            return Err(Error::Internal(format!(
                "the commit to {url} would add {} with partition values {:?}, which Delta readers cannot \
                 parse; nothing was committed",
                add.path, add.partition_values
            )));
        }
    }
    Ok(())
}

/// A random token for file names that must never have been used.
pub(super) fn uuid_token() -> String {
    let nanos = chrono::Utc::now().timestamp_nanos_opt().unwrap_or_default() as u64;
    let h = xxhash_rust::xxh3::xxh3_64(format!("{}-{nanos}", std::process::id()).as_bytes());
    format!("{h:016x}")
}

/// Creates the table `name` (or loads it when another run created it first).
pub(super) fn create(
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
                Err(Error::DeltaState {
                    url,
                    message: "cannot create the table".into(),
                })
            }
        }
    }
}

/// Uploads local files to their locations, several at once.
pub(super) fn upload_all(uploads: Vec<(Location, std::path::PathBuf)>) -> Result<()> {
    let results: Vec<Result<()>> = block_on(
        futures::stream::iter(uploads)
            .map(|(to, from)| async move {
                tokio::task::spawn_blocking(move || to.upload(&from))
                    .await
                    .unwrap_or_else(|e| Err(Error::Internal(format!("an upload task failed: {e}"))))
            })
            .buffer_unordered(8)
            .collect(),
    );
    results.into_iter().collect()
}

/// A Remove action for a data file.
pub(super) fn remove_action(
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
