//! The `accounts` table (SPEC §9): the latest state of every group, merged run after run.
//!
//! Why this module exists: `groups` answers "what did each Group call say"; warehouse users ask "what plan is
//! Initech on now". This module folds `groups` rows into one row per `group_id` and keeps that snapshot
//! correct however runs are retried, split or late.
//!
//! The rule. Every trait column (`name` ... `trait_id`, the same columns as `groups`) and every top-level key
//! of `extra_traits` is a last-writer-wins register. An event writes a register when it sends the trait: a
//! value sets it, `null` (or a value that did not fit the column) clears it, a trait not sent leaves it alone.
//! The write wins when the event's version `(timestamp, received_at, id)` is greater than the stored one
//! (null sorts first); on an exact tie the greater value wins (a value beats a clear). That order is total, so
//! merging is commutative, associative and idempotent: the same events twice, in any order, split across any
//! runs, late or early, give the same table. `first_seen_at`/`last_seen_at` are the min/max `timestamp`.
//!
//! Where the versions live. Each row's `trait_versions` column holds, as JSON,
//! `{"versions": [[timestamp_us, received_at_us|null, id|null], ...], "columns": {"plan": 0, ...},
//! "extra_traits": {"key": 1, ...}}`: for each register, the index of the version that last wrote it. A key in
//! `trait_versions.extra_traits` but not in `extra_traits` is a cleared key (a tombstone, so that an older event
//! cannot bring it back).
//!
//! Where "sent as null" comes from. `groups` reads null both for a trait sent as null and one not sent, so the
//! writer records the rows that cleared a trait in each `groups` file's key/value metadata
//! ([`schema::META_CLEARED_TRAITS`]). `accounts` is therefore a pure function of the `groups` files: a run merges
//! its own staged files into the previous snapshot, and when there is no snapshot to build on (first run
//! with accounts, after `--no-accounts`, or `--mode overwrite`, which removes rows) it rebuilds from every
//! `groups` file of the new version.
//!
//! Memory. The snapshot is split into buckets by a hash of `group_id` (`part-BBBBB-of-NNNNN.parquet`). Buckets
//! are merged one per thread, each holding its groups in memory; the bucket count (a power of two) is chosen so
//! that the snapshot's groups plus the distinct groups of the run fit the budget at `BYTES_PER_GROUP` each,
//! and only grows. A bucket that no event of the run touches is kept as it is. Each bucket reads the run's rows
//! again (filtered by hash), so many buckets cost repeated reads, not memory.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, RecordBatch, StringArray, StringBuilder, TimestampMicrosecondArray,
    TimestampMicrosecondBuilder,
};
use compact_str::CompactString;
use parquet::arrow::ProjectionMask;
use rayon::prelude::*;
use serde::Deserialize;

use crate::datafile::DataFile;
use crate::error::{Error, Result};
use crate::mapping::Cell;
use crate::schema::{self, ACCOUNT_COLUMNS, COLUMNS, Col, Kind, TRAIT_COLS};
use crate::writer::{Codec, ColumnBuilder};

/// The folder of the table inside a version (and `OUT/accounts`).
pub const ACCOUNTS_DIR: &str = "accounts";
/// Number of trait columns.
const NT: usize = Col::TraitId as usize - Col::Name as usize + 1;
/// Estimated memory of one group in a bucket being merged (its registers, versions and strings), for sizing.
const BYTES_PER_GROUP: u64 = 2048;
/// Rows per row group of an accounts file.
const BATCH_ROWS: usize = 65_536;

/// `(timestamp, received_at, id)` of the event that wrote a register; ordered field by field, null first.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Version {
    pub timestamp: i64,
    pub received_at: Option<i64>,
    pub id: Option<CompactString>,
}

/// A register's value: the text of a trait column (for `created_at`, its microseconds in decimal), or the raw
/// JSON of an extras key. `None`: cleared.
pub type Value = Option<CompactString>;

/// Register keys: `0..NT` are the trait columns, in schema order; from `NT` on, extras keys interned in a
/// [`Keys`] table shared by every account of a bucket (the same few keys repeat across groups).
type Key = u32;

/// The extras keys of a bucket.
#[derive(Debug, Default)]
pub struct Keys {
    names: Vec<Box<str>>,
    ids: HashMap<Box<str>, Key>,
}

impl Keys {
    fn id(&mut self, name: &str) -> Key {
        if let Some(&k) = self.ids.get(name) {
            return k;
        }
        let k = (NT + self.names.len()) as Key;
        self.names.push(name.into());
        self.ids.insert(name.into(), k);
        k
    }

    fn name(&self, key: Key) -> &str {
        self.names.get(key as usize - NT).map_or("", |n| n.as_ref())
    }
}

/// One register: its key, which version wrote it, and the value.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Register {
    key: Key,
    version: u32,
    value: Value,
}

/// The state of one group: 64 bytes, plus its registers (24 bytes each) and values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    first_seen: i64,
    last_seen: i64,
    /// Versions referenced by the registers (each added once).
    versions: Vec<Version>,
    /// Registers sorted by key.
    regs: Vec<Register>,
}

/// What one event (a `groups` row) says about its group, borrowed from the batch it was read from (values
/// are copied only when they win a register).
#[derive(Debug, Clone)]
pub struct Event<'a> {
    pub timestamp: i64,
    pub received_at: Option<i64>,
    pub id: Option<&'a str>,
    /// Per trait column: `None` not sent, `Some(None)` cleared, `Some(Some(v))` set.
    pub columns: [Option<Option<Cow<'a, str>>>; NT],
    /// Top-level keys of `extra_traits` with their raw JSON (`None`: sent as `null`).
    pub extras: Vec<(Cow<'a, str>, Option<&'a str>)>,
}

/// A version as compared: `(timestamp, received_at, id)`.
type VersionKey<'a> = (i64, Option<i64>, Option<&'a str>);

impl Version {
    fn key(&self) -> VersionKey<'_> {
        (self.timestamp, self.received_at, self.id.as_deref())
    }
}

impl Event<'_> {
    fn key(&self) -> VersionKey<'_> {
        (self.timestamp, self.received_at, self.id)
    }
}

impl Account {
    fn new(timestamp: i64) -> Self {
        Account {
            first_seen: timestamp,
            last_seen: timestamp,
            versions: Vec::new(),
            regs: Vec::new(),
        }
    }

    /// The index of version `v` in `versions`, adding it if needed.
    fn version_index(&mut self, v: VersionKey<'_>) -> u32 {
        if let Some(i) = self.versions.iter().rposition(|x| x.key() == v) {
            return i as u32;
        }
        self.versions.push(Version {
            timestamp: v.0,
            received_at: v.1,
            id: v.2.map(Into::into),
        });
        (self.versions.len() - 1) as u32
    }

    fn get(&self, key: Key) -> Option<&Register> {
        self.regs
            .binary_search_by_key(&key, |r| r.key)
            .ok()
            .map(|i| &self.regs[i])
    }

    /// Writes `(version, value)` into register `key` if it beats what the register holds.
    fn offer(&mut self, key: Key, version: VersionKey<'_>, value: Option<&str>) {
        match self.regs.binary_search_by_key(&key, |r| r.key) {
            Ok(i) => {
                let r = &self.regs[i];
                let held = self.versions[r.version as usize].key();
                if (version, value) > (held, r.value.as_deref()) {
                    let v = self.version_index(version);
                    self.regs[i].version = v;
                    self.regs[i].value = value.map(Into::into);
                }
            }
            Err(i) => {
                let v = self.version_index(version);
                self.regs.insert(
                    i,
                    Register {
                        key,
                        version: v,
                        value: value.map(Into::into),
                    },
                );
            }
        }
    }

    /// Applies one event (the register rule of the module doc).
    pub fn apply(&mut self, keys: &mut Keys, event: &Event<'_>) {
        let ts = event.timestamp;
        self.first_seen = self.first_seen.min(ts);
        self.last_seen = self.last_seen.max(ts);
        for (i, sent) in event.columns.iter().enumerate() {
            if let Some(value) = sent {
                self.offer(i as Key, event.key(), value.as_deref());
            }
        }
        for (key, value) in &event.extras {
            let key = keys.id(key);
            self.offer(key, event.key(), *value);
        }
        // Versions no register uses any more are dropped now and then (and always before writing).
        if self.versions.len() > 2 * self.regs.len().max(4) {
            self.drop_unused_versions();
        }
    }

    /// Merges another state of the same group (one bucket read from a coarser snapshot file holds no two
    /// states of a group, but merging keeps this correct whatever the files hold).
    fn absorb(&mut self, other: Account) {
        self.first_seen = self.first_seen.min(other.first_seen);
        self.last_seen = self.last_seen.max(other.last_seen);
        for r in &other.regs {
            let v = other.versions[r.version as usize].key();
            self.offer(r.key, v, r.value.as_deref());
        }
    }

    /// Keeps `versions` to those still referenced, in version order (so the state, and its text, do not
    /// depend on the order events were applied in).
    fn drop_unused_versions(&mut self) {
        let mut used: Vec<u32> = self.regs.iter().map(|r| r.version).collect();
        used.sort_unstable();
        used.dedup();
        if used.len() == self.versions.len() && self.versions.windows(2).all(|w| w[0] < w[1]) {
            return;
        }
        used.sort_by(|a, b| self.versions[*a as usize].cmp(&self.versions[*b as usize]));
        let versions: Vec<Version> = used
            .iter()
            .map(|&i| self.versions[i as usize].clone())
            .collect();
        for r in &mut self.regs {
            r.version = used
                .iter()
                .position(|u| *u == r.version)
                .unwrap_or_default() as u32;
        }
        self.versions = versions;
    }

    /// `extra_traits` as written: the keys holding a value, in key order; null when there are none.
    fn extra_traits_json(&self, keys: &Keys) -> Option<String> {
        let mut members: Vec<(&str, &str)> = self
            .regs
            .iter()
            .filter(|r| r.key as usize >= NT)
            .filter_map(|r| r.value.as_deref().map(|v| (keys.name(r.key), v)))
            .collect();
        if members.is_empty() {
            return None;
        }
        members.sort_unstable();
        let mut out = String::new();
        for (key, raw) in members {
            out.push(if out.is_empty() { '{' } else { ',' });
            crate::parse::push_json_str(&mut out, key);
            out.push(':');
            out.push_str(raw);
        }
        out.push('}');
        Some(out)
    }

    /// `trait_versions` as written (the [`VersionsDoc`] layout; built by hand, it is written for every row):
    /// versions in version order, columns in schema order, extras keys in key order.
    fn versions_json(&self, keys: &Keys, out: &mut String) {
        use std::fmt::Write;
        out.clear();
        out.push_str(r#"{"versions":["#);
        for (i, v) in self.versions.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            let _ = write!(out, "[{},", v.timestamp);
            match v.received_at {
                Some(r) => {
                    let _ = write!(out, "{r},");
                }
                None => out.push_str("null,"),
            }
            match &v.id {
                Some(id) => crate::parse::push_json_str(out, id),
                None => out.push_str("null"),
            }
            out.push(']');
        }
        out.push_str(r#"],"columns":{"#);
        let mut first = true;
        for r in self.regs.iter().filter(|r| (r.key as usize) < NT) {
            if !std::mem::take(&mut first) {
                out.push(',');
            }
            crate::parse::push_json_str(out, trait_name(r.key));
            let _ = write!(out, ":{}", r.version);
        }
        out.push_str(r#"},"extra_traits":{"#);
        let mut extras: Vec<(&str, u32)> = self
            .regs
            .iter()
            .filter(|r| r.key as usize >= NT)
            .map(|r| (keys.name(r.key), r.version))
            .collect();
        extras.sort_unstable();
        for (i, (key, version)) in extras.into_iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            crate::parse::push_json_str(out, key);
            let _ = write!(out, ":{version}");
        }
        out.push_str("}}");
    }
}

/// The name of trait column `i` (`0..NT`).
fn trait_name(i: Key) -> &'static str {
    COLUMNS[Col::Name as usize + i as usize].name
}

/// The JSON of the `trait_versions` column (read with serde; written by [`Account::versions_json`]).
#[derive(Debug, Deserialize)]
struct VersionsDoc {
    versions: Vec<(i64, Option<i64>, Option<String>)>,
    columns: BTreeMap<String, u32>,
    extra_traits: BTreeMap<String, u32>,
}

fn group_hash(group_id: &str) -> u64 {
    xxhash_rust::xxh3::xxh3_64(group_id.as_bytes())
}

/// The bucket of a group among `n` (a power of two).
fn bucket(group_id: &str, n: u32) -> u32 {
    (group_hash(group_id) & u64::from(n - 1)) as u32
}

/// `part-BBBBB-of-NNNNN.parquet`, or with a suffix (`part-BBBBB-of-NNNNN-<suffix>.parquet`) where a table
/// must never reuse a name (Delta: a file of the current version is never overwritten).
fn file_name(b: u32, n: u32, suffix: Option<&str>) -> String {
    match suffix {
        Some(s) => format!("part-{b:05}-of-{n:05}-{s}.parquet"),
        None => format!("part-{b:05}-of-{n:05}.parquet"),
    }
}

/// Parses `part-BBBBB-of-NNNNN[-suffix].parquet`.
pub fn parse_file_name(name: &str) -> Option<(u32, u32)> {
    let rest = name.strip_prefix("part-")?.strip_suffix(".parquet")?;
    let (b, rest) = rest.split_once("-of-")?;
    let n = rest.split('-').next()?;
    let (b, n): (u32, u32) = (b.parse().ok()?, n.parse().ok()?);
    (b.to_string().len() <= 5 && n > 0 && b < n && u32::is_power_of_two(n)).then_some((b, n))
}

fn column<'a, T: 'static>(batch: &'a RecordBatch, name: &str, file: &DataFile) -> Result<&'a T> {
    batch
        .column_by_name(name)
        .and_then(|c| c.as_any().downcast_ref::<T>())
        .ok_or_else(|| file.error(format!("no column {name} of the expected type")))
}

/// The trait columns of a `groups` or `accounts` batch, in schema order.
fn trait_columns<'a>(batch: &'a RecordBatch, file: &DataFile) -> Result<Vec<&'a ArrayRef>> {
    TRAIT_COLS
        .map(|c| batch.column_by_name(COLUMNS[c].name))
        .collect::<Option<_>>()
        .ok_or_else(|| file.error("missing a trait column".into()))
}

fn open_parquet(
    file: &DataFile,
    columns: &[&str],
) -> Result<(
    parquet::arrow::arrow_reader::ParquetRecordBatchReader,
    Option<String>,
)> {
    let path = file;
    let builder = file.reader()?;
    let cleared = builder
        .metadata()
        .file_metadata()
        .key_value_metadata()
        .and_then(|kv| {
            kv.iter()
                .find(|k| k.key == schema::META_CLEARED_TRAITS)
                .and_then(|k| k.value.clone())
        });
    let fields = builder.schema().fields();
    let indices: Vec<usize> = columns
        .iter()
        .filter_map(|name| fields.iter().position(|f| f.name() == name))
        .collect();
    if indices.len() != columns.len() {
        return Err(path.error(format!("expected the columns {columns:?}")));
    }
    let mask = ProjectionMask::roots(builder.parquet_schema(), indices);
    let reader = builder
        .with_projection(mask)
        .with_batch_size(8192)
        .build()
        .map_err(|e| path.error(e.to_string()))?;
    Ok((reader, cleared))
}

/// Columns of a `groups` file the merge reads.
fn groups_columns() -> Vec<&'static str> {
    let mut v = vec![
        Col::GroupId.column().name,
        Col::Timestamp.column().name,
        Col::ReceivedAt.column().name,
        Col::Id.column().name,
        Col::ExtraTraits.column().name,
    ];
    v.extend(TRAIT_COLS.map(|c| COLUMNS[c].name));
    v
}

/// Reads the events of one `groups` file whose group falls in bucket `b` of `n`, calling `f` with each.
fn read_events(path: &DataFile, b: u32, n: u32, f: &mut dyn FnMut(&str, &Event<'_>)) -> Result<()> {
    let (reader, cleared) = open_parquet(path, &groups_columns())?;
    // Row -> bit mask of cleared trait columns (bit i: trait column i).
    let mut cleared_rows: HashMap<u64, u32> = HashMap::new();
    if let Some(json) = cleared {
        let by_col: BTreeMap<String, Vec<u64>> = serde_json::from_str(&json)
            .map_err(|e| path.error(format!("bad {}: {e}", schema::META_CLEARED_TRAITS)))?;
        for (name, rows) in by_col {
            let Some(i) = TRAIT_COLS.clone().position(|c| COLUMNS[c].name == name) else {
                continue;
            };
            for r in rows {
                *cleared_rows.entry(r).or_default() |= 1 << i;
            }
        }
    }
    let mut row_base = 0u64;
    for batch in reader {
        let batch = batch.map_err(|e| path.error(e.to_string()))?;
        let gid = column::<StringArray>(&batch, Col::GroupId.column().name, path)?;
        let ts = column::<TimestampMicrosecondArray>(&batch, Col::Timestamp.column().name, path)?;
        let rcv = column::<TimestampMicrosecondArray>(&batch, Col::ReceivedAt.column().name, path)?;
        let id = column::<StringArray>(&batch, Col::Id.column().name, path)?;
        let extras = column::<StringArray>(&batch, Col::ExtraTraits.column().name, path)?;
        let traits = trait_columns(&batch, path)?;
        for r in 0..batch.num_rows() {
            if gid.is_null(r) || ts.is_null(r) {
                return Err(path.error("null group_id or timestamp".into()));
            }
            let group = gid.value(r);
            if bucket(group, n) != b {
                continue;
            }
            let mask = cleared_rows
                .get(&(row_base + r as u64))
                .copied()
                .unwrap_or(0);
            let mut columns: [Option<Option<Cow<'_, str>>>; NT] = Default::default();
            for (i, col) in traits.iter().enumerate() {
                if !col.is_null(r) {
                    columns[i] = Some(Some(cell_value(col, r)));
                } else if mask & (1 << i) != 0 {
                    columns[i] = Some(None);
                }
            }
            let mut extra_list = Vec::new();
            if !extras.is_null(r) {
                let ok = crate::parse::for_each_member(extras.value(r), |k, v| {
                    extra_list.push((k, (v.trim() != "null").then_some(v)));
                });
                if ok.is_err() {
                    return Err(path.error("extra_traits is not a JSON object".into()));
                }
            }
            let event = Event {
                timestamp: ts.value(r),
                received_at: (!rcv.is_null(r)).then(|| rcv.value(r)),
                id: (!id.is_null(r)).then(|| id.value(r)),
                columns,
                extras: extra_list,
            };
            f(group, &event);
        }
        row_base += batch.num_rows() as u64;
    }
    Ok(())
}

/// A non-null cell of a trait column as a register value (times as decimal microseconds).
fn cell_value(col: &ArrayRef, r: usize) -> Cow<'_, str> {
    if let Some(t) = col.as_any().downcast_ref::<StringArray>() {
        Cow::Borrowed(t.value(r))
    } else if let Some(t) = col.as_any().downcast_ref::<TimestampMicrosecondArray>() {
        Cow::Owned(t.value(r).to_string())
    } else {
        Cow::Borrowed("")
    }
}

/// The accounts of one bucket being merged.
#[derive(Default)]
struct Bucket {
    keys: Keys,
    accounts: HashMap<CompactString, Account>,
}

impl Bucket {
    fn apply(&mut self, group: &str, event: &Event<'_>) {
        let keys = &mut self.keys;
        match self.accounts.get_mut(group) {
            Some(acc) => acc.apply(keys, event),
            None => {
                let mut acc = Account::new(event.timestamp);
                acc.apply(keys, event);
                self.accounts.insert(group.into(), acc);
            }
        }
    }
}

/// Reads the accounts of one snapshot file whose group falls in bucket `b` of `n`.
fn read_snapshot(path: &DataFile, b: u32, n: u32, into: &mut Bucket) -> Result<()> {
    let names: Vec<&str> = ACCOUNT_COLUMNS.iter().map(|c| c.name).collect();
    let (reader, _) = open_parquet(path, &names)?;
    let err = |message: String| path.error(message);
    for batch in reader {
        let batch = batch.map_err(|e| err(e.to_string()))?;
        let gid = column::<StringArray>(&batch, "group_id", path)?;
        let first = column::<TimestampMicrosecondArray>(&batch, "first_seen_at", path)?;
        let last = column::<TimestampMicrosecondArray>(&batch, "last_seen_at", path)?;
        let extras = column::<StringArray>(&batch, "extra_traits", path)?;
        let versions = column::<StringArray>(&batch, "trait_versions", path)?;
        let traits = trait_columns(&batch, path)?;
        for r in 0..batch.num_rows() {
            let group = gid.value(r);
            if bucket(group, n) != b {
                continue;
            }
            let doc: VersionsDoc = serde_json::from_str(versions.value(r))
                .map_err(|e| err(format!("bad trait_versions: {e}")))?;
            let mut acc = Account::new(first.value(r));
            acc.last_seen = last.value(r);
            acc.versions = doc
                .versions
                .into_iter()
                .map(|(timestamp, received_at, id)| Version {
                    timestamp,
                    received_at,
                    id: id.map(Into::into),
                })
                .collect();
            let n_versions = acc.versions.len() as u32;
            let check = |i: u32| {
                if i < n_versions {
                    Ok(i)
                } else {
                    Err(err("trait_versions index out of range".into()))
                }
            };
            for (i, col) in traits.iter().enumerate() {
                if let Some(&v) = doc.columns.get(trait_name(i as Key)) {
                    acc.regs.push(Register {
                        key: i as Key,
                        version: check(v)?,
                        value: (!col.is_null(r)).then(|| cell_value(col, r).into()),
                    });
                }
            }
            let mut values: HashMap<String, CompactString> = HashMap::new();
            if !extras.is_null(r) {
                crate::parse::for_each_member(extras.value(r), |k, v| {
                    values.insert(k.into_owned(), v.into());
                })
                .map_err(|_| err("extra_traits is not a JSON object".into()))?;
            }
            for (key, v) in doc.extra_traits {
                acc.regs.push(Register {
                    key: into.keys.id(&key),
                    version: check(v)?,
                    value: values.remove(&key),
                });
            }
            acc.regs.sort_unstable_by_key(|r| r.key);
            match into.accounts.get_mut(group) {
                Some(existing) => existing.absorb(acc),
                None => {
                    into.accounts.insert(group.into(), acc);
                }
            }
        }
    }
    Ok(())
}

/// Writes one bucket's accounts, sorted by `group_id`, to `path`. Returns the number of rows.
fn write_bucket(path: &Path, bucket: Bucket, codec: Codec) -> Result<u64> {
    let Bucket { keys, accounts } = bucket;
    let mut rows: Vec<(CompactString, Account)> = accounts.into_iter().collect();
    rows.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    let schema = schema::accounts_schema();
    let props = crate::writer::file_properties(codec).build();
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).map_err(Error::io("creating directory", dir))?;
    }
    let file = File::create(path).map_err(Error::io("creating", path))?;
    let parquet_err = |source| Error::Parquet {
        path: path.to_path_buf(),
        source,
    };
    let mut writer =
        crate::writer::arrow_writer(file, schema.clone(), props).map_err(parquet_err)?;
    let n = rows.len() as u64;
    for chunk in rows.chunks_mut(BATCH_ROWS) {
        let mut gid = StringBuilder::new();
        let mut traits: Vec<ColumnBuilder> = TRAIT_COLS
            .map(|c| ColumnBuilder::new(COLUMNS[c].kind))
            .collect();
        let mut extras = StringBuilder::new();
        let mut first = TimestampMicrosecondBuilder::new().with_timezone("UTC");
        let mut last = TimestampMicrosecondBuilder::new().with_timezone("UTC");
        let mut versions = StringBuilder::new();
        let mut text = String::new();
        for (group, acc) in chunk.iter_mut() {
            acc.drop_unused_versions();
            gid.append_value(group);
            for (i, b) in traits.iter_mut().enumerate() {
                b.append(&register_cell(i, acc.get(i as Key)));
            }
            extras.append_option(acc.extra_traits_json(&keys));
            first.append_value(acc.first_seen);
            last.append_value(acc.last_seen);
            acc.versions_json(&keys, &mut text);
            versions.append_value(&text);
        }
        let mut columns: Vec<ArrayRef> = vec![Arc::new(gid.finish())];
        columns.extend(traits.iter_mut().map(ColumnBuilder::finish));
        columns.push(Arc::new(extras.finish()));
        columns.push(Arc::new(first.finish()));
        columns.push(Arc::new(last.finish()));
        columns.push(Arc::new(versions.finish()));
        let batch = RecordBatch::try_new(schema.clone(), columns)?;
        writer.write(&batch).map_err(parquet_err)?;
    }
    let file = writer.into_inner().map_err(parquet_err)?;
    file.sync_all().map_err(Error::io("syncing", path))?;
    Ok(n)
}

/// The cell trait column `i` shows for a register (times are held as decimal microseconds).
fn register_cell(i: usize, reg: Option<&Register>) -> Cell<'_> {
    match reg.and_then(|r| r.value.as_deref()) {
        None => Cell::Null,
        Some(v) if COLUMNS[Col::Name as usize + i].kind == Kind::Time => {
            v.parse().map_or(Cell::Null, Cell::Time)
        }
        Some(v) => Cell::Text(Cow::Borrowed(v)),
    }
}

/// One file of the current `accounts` snapshot.
#[derive(Debug, Clone)]
pub struct SnapshotFile {
    pub bucket: u32,
    /// The bucket count of the snapshot it belongs to.
    pub of: u32,
    pub file: DataFile,
    /// Its path relative to the output (`accounts/part-...parquet`).
    pub rel: PathBuf,
}

/// What the merge needs to know about the run.
pub struct Merge<'a> {
    /// Where to write the new snapshot files (inside the run's staging folder).
    pub staging: &'a Path,
    /// The current snapshot's files ([`snapshot_files`]).
    pub snapshot: &'a [SnapshotFile],
    /// This run's `groups` files (staged, or committed by the runs being merged).
    pub run_files: Vec<DataFile>,
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
    /// Buckets are merged in parallel on this pool, one per thread.
    pub pool: &'a rayon::ThreadPool,
}

/// The outcome: new snapshot files (staged path, final path relative to the output), the current snapshot's
/// files the new version drops, and the number of groups in the new snapshot.
#[derive(Debug, Default)]
pub struct Merged {
    pub adds: Vec<(PathBuf, PathBuf)>,
    pub removes: Vec<PathBuf>,
    pub groups: u64,
    pub buckets: u32,
    pub rebuilt: bool,
}

/// The files of the current snapshot of a local (hive) dataset.
pub fn snapshot_files(out: &Path) -> Result<Vec<SnapshotFile>> {
    let dir = out.join(ACCOUNTS_DIR);
    let entries = match fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io("reading directory", &dir)(e)),
    };
    let mut files = Vec::new();
    for e in entries {
        let e = e.map_err(Error::io("reading directory", &dir))?;
        let name = e.file_name();
        if let Some((b, n)) = name.to_str().and_then(parse_file_name) {
            files.push(SnapshotFile {
                bucket: b,
                of: n,
                file: DataFile::Local(e.path()),
                rel: Path::new(ACCOUNTS_DIR).join(name),
            });
        }
    }
    files.sort_by_key(|f| (f.bucket, f.of));
    Ok(files)
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
    // The groups the events name (their hashes: the bucket of a group is its hash modulo the bucket count),
    // from one cheap pass over `group_id`. Past a share of the budget the set is dropped and every event
    // counts as a new group (more buckets than needed, never too few).
    let cap = (m.budget / 16 / 16) as usize;
    let mut hashes: Option<std::collections::HashSet<u64>> = Some(Default::default());
    let mut event_rows = 0u64;
    for p in &sources {
        let (reader, _) = open_parquet(p, &[Col::GroupId.column().name])?;
        for batch in reader {
            let batch = batch.map_err(|e| p.error(e.to_string()))?;
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
    let threads = m.pool.current_num_threads().max(1) as u64;
    let per_bucket = (m.budget / threads / BYTES_PER_GROUP).max(64);
    // At least one bucket per thread once there is real work, so that every core merges.
    let floor = if estimate > 4 * per_bucket.min(16_384) {
        threads
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

    let mut merged = Merged {
        buckets: n,
        rebuilt: m.rebuild,
        ..Merged::default()
    };
    let old_by_bucket: HashMap<u32, &DataFile> = old.iter().map(|f| (f.bucket, &f.file)).collect();
    // One bucket: its new file (staged, final) and rows, or the rows of the old file it keeps.
    let one = |b: u32| -> Result<(Option<(PathBuf, PathBuf)>, u64)> {
        let old_file = if old_n > 0 {
            old_by_bucket.get(&(b % old_n)).copied()
        } else {
            None
        };
        if n == old_n && !touched[b as usize] {
            // Untouched and same layout: the file is kept as it is.
            return Ok((None, old_file.map(|p| p.rows()).transpose()?.unwrap_or(0)));
        }
        let mut state = Bucket::default();
        if let Some(p) = old_file {
            read_snapshot(p, b, n, &mut state)?;
        }
        for p in &sources {
            read_events(p, b, n, &mut |group, event| state.apply(group, event))?;
        }
        if state.accounts.is_empty() {
            return Ok((None, 0));
        }
        let name = file_name(b, n, m.name_suffix);
        let staged = m.staging.join(ACCOUNTS_DIR).join(&name);
        let rows = write_bucket(&staged, state, m.codec)?;
        Ok((Some((staged, Path::new(ACCOUNTS_DIR).join(name))), rows))
    };
    let done: Vec<(Option<(PathBuf, PathBuf)>, u64)> = m.pool.install(|| {
        (0..n)
            .into_par_iter()
            .with_max_len(1)
            .map(one)
            .collect::<Result<_>>()
    })?;
    for (file, rows) in done {
        merged.groups += rows;
        merged.adds.extend(file);
    }
    // Files of the current snapshot not rewritten under the same name are dropped (a rebuild, a new layout).
    for f in m.snapshot {
        let rewritten = merged.adds.iter().any(|(_, to)| *to == f.rel);
        let kept = !m.rebuild && f.of == n && !touched[f.bucket as usize];
        if !rewritten && !kept {
            merged.removes.push(f.rel.clone());
        }
    }
    Ok(merged)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(ts: i64, rcv: Option<i64>, id: &str) -> Version {
        Version {
            timestamp: ts,
            received_at: rcv,
            id: Some(id.into()),
        }
    }

    const PLAN: Key = (Col::Plan as usize - Col::Name as usize) as Key;

    fn plan_event<'a>(version: &'a Version, plan: Option<Option<&'static str>>) -> Event<'a> {
        let mut columns: [Option<Option<Cow<'_, str>>>; NT] = Default::default();
        columns[PLAN as usize] = plan.map(|p| p.map(Cow::Borrowed));
        Event {
            timestamp: version.timestamp,
            received_at: version.received_at,
            id: version.id.as_deref(),
            columns,
            extras: Vec::new(),
        }
    }

    fn plan(acc: &Account) -> Option<Option<String>> {
        acc.get(PLAN)
            .map(|r| r.value.as_deref().map(str::to_string))
    }

    #[test]
    fn versions_order_by_timestamp_then_received_at_then_id_null_first() {
        assert!(v(2, None, "a") > v(1, Some(9), "z"));
        assert!(v(1, Some(1), "a") > v(1, None, "z"));
        assert!(v(1, Some(1), "b") > v(1, Some(1), "a"));
        let no_id = Version {
            timestamp: 1,
            received_at: Some(1),
            id: None,
        };
        assert!(v(1, Some(1), "") > no_id);
        assert!(
            v(1, Some(1), "").key() > no_id.key(),
            "the compared key orders the same way"
        );
    }

    #[test]
    fn newer_wins_null_clears_absent_keeps_late_loses() {
        let keys = &mut Keys::default();
        let mut acc = Account::new(10);
        let (a, b, c, d, e) = (
            v(10, None, "a"),
            v(20, None, "b"),
            v(30, None, "c"),
            v(40, None, "d"),
            v(50, None, "e"),
        );
        acc.apply(keys, &plan_event(&a, Some(Some("free"))));
        acc.apply(keys, &plan_event(&c, Some(None)));
        assert_eq!(plan(&acc), Some(None), "null clears");
        acc.apply(keys, &plan_event(&b, Some(Some("pro"))));
        assert_eq!(
            plan(&acc),
            Some(None),
            "a late, older event does not bring it back"
        );
        acc.apply(keys, &plan_event(&d, None));
        assert_eq!(plan(&acc), Some(None), "not sent: kept");
        acc.apply(keys, &plan_event(&e, Some(Some("team"))));
        assert_eq!(plan(&acc), Some(Some("team".into())));
        assert_eq!((acc.first_seen, acc.last_seen), (10, 50));
    }

    #[test]
    fn exact_ties_break_on_the_value_so_order_does_not_matter() {
        let keys = &mut Keys::default();
        let x = v(1, None, "x");
        let a = plan_event(&x, Some(Some("a")));
        let b = plan_event(&x, Some(Some("b")));
        let c = plan_event(&x, Some(None));
        let mut one = Account::new(1);
        let mut two = Account::new(1);
        for e in [&a, &b, &c] {
            one.apply(keys, e);
        }
        for e in [&c, &b, &a, &a] {
            two.apply(keys, e);
        }
        assert_eq!(plan(&one), plan(&two));
        assert_eq!(plan(&one), Some(Some("b".into())));
    }

    #[test]
    fn extras_keys_are_registers_with_tombstones() {
        let keys = &mut Keys::default();
        let mut acc = Account::new(1);
        let e = |ts, extras: Vec<(&'static str, Option<&'static str>)>| Event {
            timestamp: ts,
            received_at: None,
            id: Some("m"),
            columns: Default::default(),
            extras: extras
                .into_iter()
                .map(|(k, x)| (Cow::Borrowed(k), x))
                .collect(),
        };
        acc.apply(
            keys,
            &e(1, vec![("seats", Some("5")), ("tier", Some("\"gold\""))]),
        );
        acc.apply(keys, &e(3, vec![("tier", None)]));
        acc.apply(
            keys,
            &e(2, vec![("tier", Some("\"silver\"")), ("seats", Some("7"))]),
        );
        acc.drop_unused_versions();
        assert_eq!(
            acc.extra_traits_json(keys).as_deref(),
            Some(r#"{"seats":7}"#)
        );
        let mut text = String::new();
        acc.versions_json(keys, &mut text);
        let doc: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(
            doc,
            serde_json::json!({
                "versions": [[2, null, "m"], [3, null, "m"]],
                "columns": {},
                "extra_traits": {"seats": 0, "tier": 1}
            }),
            "the tombstone of `tier` is kept, unused versions are dropped, versions in order"
        );
    }

    #[test]
    fn bucket_file_names_round_trip() {
        assert_eq!(parse_file_name(&file_name(3, 8, None)), Some((3, 8)));
        assert_eq!(
            parse_file_name(&file_name(3, 8, Some("9f2c-1"))),
            Some((3, 8))
        );
        assert_eq!(
            parse_file_name("part-00003-of-00008-x.parquet"),
            Some((3, 8))
        );
        assert_eq!(parse_file_name("part-00003-of-00006.parquet"), None);
        assert_eq!(parse_file_name("part-00008-of-00008.parquet"), None);
        assert_eq!(parse_file_name("other.parquet"), None);
    }
}
