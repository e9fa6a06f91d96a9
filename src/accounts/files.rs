//! The accounts table's files: reading `groups` rows as events and snapshot rows as accounts, writing a bucket,
//! and the `part-BBBBB-of-NNNNN` names.
//!
//! Why this is its own file: the register rule (the parent module) is what people reason about; this is the
//! Parquet plumbing around it (projections, the cleared-traits metadata, builders), which changes for other
//! reasons.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, RecordBatch, StringArray, StringBuilder, TimestampMicrosecondArray,
    TimestampMicrosecondBuilder,
};
use compact_str::CompactString;

use crate::datafile::DataFile;
use crate::error::{Error, Result};
use crate::layout::ACCOUNTS_DIR;
use crate::layout::Codec;
use crate::mapping::Cell;
use crate::schema::{self, ACCOUNT_COLUMNS, COLUMNS, Col, Kind, TRAIT_COLS};
use crate::writer::ColumnBuilder;

use super::{
    Account, BATCH_ROWS, Bucket, Event, Key, NT, Register, Version, VersionsDoc, trait_name,
};

pub(super) fn group_hash(group_id: &str) -> u64 {
    xxhash_rust::xxh3::xxh3_64(group_id.as_bytes())
}

/// The bucket of a group among `n` (a power of two).
pub(super) fn bucket(group_id: &str, n: u32) -> u32 {
    (group_hash(group_id) & u64::from(n - 1)) as u32
}

/// `part-BBBBB-of-NNNNN.parquet`, or with a suffix (`part-BBBBB-of-NNNNN-<suffix>.parquet`) where a table
/// must never reuse a name (Delta: a file of the current version is never overwritten).
pub(super) fn file_name(b: u32, n: u32, suffix: Option<&str>) -> String {
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

pub(super) fn column<'a, T: 'static>(
    batch: &'a RecordBatch,
    name: &str,
    file: &DataFile,
) -> Result<&'a T> {
    batch
        .column_by_name(name)
        .and_then(|c| c.as_any().downcast_ref::<T>())
        .ok_or_else(|| file.error(format!("no column {name} of the expected type")))
}

/// The trait columns of a `groups` or `accounts` batch, in schema order.
pub(super) fn trait_columns<'a>(
    batch: &'a RecordBatch,
    file: &DataFile,
) -> Result<Vec<&'a ArrayRef>> {
    TRAIT_COLS
        .map(|c| batch.column_by_name(COLUMNS[c].name))
        .collect::<Option<_>>()
        .ok_or_else(|| file.error("missing a trait column".into()))
}

pub(super) fn open_parquet(
    file: &DataFile,
    columns: &[&str],
) -> Result<(
    parquet::arrow::arrow_reader::ParquetRecordBatchReader,
    Option<String>,
)> {
    let (reader, meta) = file.columns(columns)?;
    Ok((reader, crate::writer::cleared_record(meta.file_metadata())))
}

/// Columns of a `groups` file the merge reads.
pub(super) fn groups_columns() -> Vec<&'static str> {
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
pub(super) fn read_events(
    path: &DataFile,
    b: u32,
    n: u32,
    f: &mut dyn FnMut(&str, &Event<'_>),
) -> Result<()> {
    let (reader, cleared) = open_parquet(path, &groups_columns())?;
    let cleared_rows = cleared_masks(path, cleared)?;
    let mut row_base = 0u64;
    for batch in reader {
        let batch = batch.map_err(|e| path.cause(e))?;
        let mask = |r: usize| {
            cleared_rows
                .get(&(row_base + r as u64))
                .copied()
                .unwrap_or(0)
        };
        batch_events(&batch, path, &mask, &|g| bucket(g, n) == b, f)?;
        row_base += batch.num_rows() as u64;
    }
    Ok(())
}

/// Row -> bit mask of the columns it cleared (bit `c`: column `c` of the schema, as the writer records it), from
/// a `groups` file's cleared-traits record ([`crate::writer::decode_cleared`]).
pub(super) fn cleared_masks(path: &DataFile, json: Option<String>) -> Result<HashMap<u64, u32>> {
    let mut cleared_rows: HashMap<u64, u32> = HashMap::new();
    if let Some(json) = json {
        let pairs = crate::writer::decode_cleared(&json)
            .map_err(|e| path.error(format!("bad {}: {e}", schema::META_CLEARED_TRAITS)))?;
        for (r, mask) in pairs {
            *cleared_rows.entry(r).or_default() |= mask;
        }
    }
    Ok(cleared_rows)
}

/// Calls `f` with the event of each row of a batch of `groups` columns ([`groups_columns`]) whose group
/// `keep` accepts; `mask` gives a row's cleared trait columns.
pub(super) fn batch_events(
    batch: &RecordBatch,
    path: &DataFile,
    mask: &dyn Fn(usize) -> u32,
    keep: &dyn Fn(&str) -> bool,
    f: &mut dyn FnMut(&str, &Event<'_>),
) -> Result<()> {
    let columns = EventColumns::new(batch, path)?;
    for r in 0..batch.num_rows() {
        let group = columns.group(r)?;
        if !keep(group) {
            continue;
        }
        let event = columns.event(r, mask(r));
        if event
            .extra_traits
            .is_some_and(|t| crate::json::for_each_member(t, |_, _| {}).is_err())
        {
            return Err(path.error("extra_traits is not a JSON object".into()));
        }
        f(group, &event);
    }
    Ok(())
}

/// The columns of a batch of `groups` rows that make an [`Event`], found once per batch.
pub(super) struct EventColumns<'a> {
    path: &'a DataFile,
    gid: &'a StringArray,
    ts: &'a TimestampMicrosecondArray,
    rcv: &'a TimestampMicrosecondArray,
    id: &'a StringArray,
    extras: &'a StringArray,
    traits: Vec<&'a ArrayRef>,
}

impl<'a> EventColumns<'a> {
    /// `path` only names the file in errors.
    pub(super) fn new(batch: &'a RecordBatch, path: &'a DataFile) -> Result<Self> {
        Ok(EventColumns {
            path,
            gid: column::<StringArray>(batch, Col::GroupId.column().name, path)?,
            ts: column::<TimestampMicrosecondArray>(batch, Col::Timestamp.column().name, path)?,
            rcv: column::<TimestampMicrosecondArray>(batch, Col::ReceivedAt.column().name, path)?,
            id: column::<StringArray>(batch, Col::Id.column().name, path)?,
            extras: column::<StringArray>(batch, Col::ExtraTraits.column().name, path)?,
            traits: trait_columns(batch, path)?,
        })
    }

    /// The group of row `r` (an error where `group_id` or `timestamp` is null: [`Self::event`] needs both).
    pub(super) fn group(&self, r: usize) -> Result<&'a str> {
        if self.gid.is_null(r) || self.ts.is_null(r) {
            return Err(self.path.error("null group_id or timestamp".into()));
        }
        Ok(self.gid.value(r))
    }

    /// The event of row `r` (whose [`Self::group`] was checked), with `mask` its cleared trait columns.
    /// `extra_traits` is not checked to be an object here.
    pub(super) fn event(&self, r: usize, mask: u32) -> Event<'a> {
        let mut columns: [Option<Option<Cow<'a, str>>>; NT] = Default::default();
        for ((i, col), c) in self.traits.iter().enumerate().zip(TRAIT_COLS) {
            if !col.is_null(r) {
                columns[i] = Some(Some(cell_value(col, r)));
            } else if mask & (1 << c) != 0 {
                columns[i] = Some(None);
            }
        }
        Event {
            timestamp: self.ts.value(r),
            received_at: (!self.rcv.is_null(r)).then(|| self.rcv.value(r)),
            id: (!self.id.is_null(r)).then(|| self.id.value(r)),
            columns,
            extra_traits: (!self.extras.is_null(r)).then(|| self.extras.value(r)),
        }
    }
}

/// A non-null cell of a trait column as a register value (times as decimal microseconds).
pub(super) fn cell_value(col: &ArrayRef, r: usize) -> Cow<'_, str> {
    if let Some(t) = col.as_any().downcast_ref::<StringArray>() {
        Cow::Borrowed(t.value(r))
    } else if let Some(t) = col.as_any().downcast_ref::<TimestampMicrosecondArray>() {
        Cow::Owned(t.value(r).to_string())
    } else {
        Cow::Borrowed("")
    }
}
/// Reads the accounts of one snapshot file whose group falls in bucket `b` of `n`.
pub(super) fn read_snapshot(path: &DataFile, b: u32, n: u32, into: &mut Bucket) -> Result<()> {
    let names: Vec<&str> = ACCOUNT_COLUMNS.iter().map(|c| c.name).collect();
    let (reader, _) = open_parquet(path, &names)?;
    let err = |message: String| path.error(message);
    for batch in reader {
        let batch = batch.map_err(|e| path.cause(e))?;
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
                crate::json::for_each_member(extras.value(r), |k, v| {
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
            acc.text_bytes = acc.counted_text_bytes();
            match into.accounts.get_mut(group) {
                Some(existing) => existing.absorb(acc, &mut into.keys),
                None => {
                    into.accounts.insert(group.into(), acc);
                }
            }
        }
    }
    Ok(())
}

/// Writes one bucket's accounts, sorted by `group_id`, to `path`. Returns the number of rows.
pub(super) fn write_bucket(path: &Path, bucket: Bucket, codec: Codec) -> Result<u64> {
    let Bucket { keys, accounts } = bucket;
    let mut rows: Vec<(CompactString, Account)> = accounts.into_iter().collect();
    rows.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    let schema = schema::accounts_schema();
    let props = crate::writer::accounts_properties(codec);
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
pub(super) fn register_cell(i: usize, reg: Option<&Register>) -> Cell<'_> {
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
