//! Partitioning rows and writing them as Parquet (SPEC §6.1), within a memory budget.
//!
//! Why this module exists: warehouse-friendly files (one file per partition per run, large row groups) and
//! a bounded memory footprint pull in opposite directions; this module owns that trade. Rows are appended to
//! per-partition Arrow builders in input order; a partition's buffer becomes a row group when it reaches the
//! row-group size, or earlier when all buffers together exceed the budget (largest first). Row groups of
//! different partitions are encoded in parallel. Files are written into the run's staging folder under names
//! no reader globs (`.parquet.partial`); [`crate::publish`] renames them into place.

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, sync_channel};

use arrow::array::{ArrayRef, RecordBatch, StringBuilder, TimestampMicrosecondBuilder};
use arrow::datatypes::SchemaRef;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, GzipLevel, ZstdLevel};
use parquet::file::metadata::KeyValue;
use parquet::file::properties::WriterProperties;
use parquet::schema::types::ColumnPath;
use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::mapping::{Cell, Row};
use crate::schema::{self, COLUMNS, Col, Kind};
use crate::values::{self, Micros};

/// How the dataset is partitioned (`--partition`).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum PartitionMode {
    /// `groups/dt=YYYY-MM-DD/`
    Day,
    /// `groups/dt=YYYY-MM-DD/hr=HH/`
    Hour,
    /// All files directly in `groups/`.
    None,
}

impl PartitionMode {
    const MICROS_PER_HOUR: i64 = 3_600_000_000;

    /// The bucket a time falls in (days or hours since the epoch; always 0 with `none`).
    pub fn bucket(self, t: Micros) -> i64 {
        match self.bucket_micros() {
            Some(d) => t.div_euclid(d),
            None => 0,
        }
    }

    /// How long one partition lasts, in microseconds (`None`: one partition holds all time).
    pub fn bucket_micros(self) -> Option<i64> {
        match self {
            PartitionMode::Day => Some(24 * Self::MICROS_PER_HOUR),
            PartitionMode::Hour => Some(Self::MICROS_PER_HOUR),
            PartitionMode::None => None,
        }
    }

    /// The bucket of a partition path (`dt=2026-11-25`, `dt=2026-11-25/hr=07`, or empty), if it is one of
    /// this mode's paths.
    pub fn bucket_of_path(self, path: &str) -> Option<i64> {
        let parse_day = |dt: &str| {
            let date =
                chrono::NaiveDate::parse_from_str(dt.strip_prefix("dt=")?, "%Y-%m-%d").ok()?;
            Some(date.and_hms_opt(0, 0, 0)?.and_utc().timestamp_micros())
        };
        let t = match self {
            PartitionMode::None => return path.is_empty().then_some(0),
            PartitionMode::Day if !path.contains('/') => parse_day(path)?,
            PartitionMode::Hour => {
                let (dt, hr) = path.split_once('/')?;
                let hr: i64 = hr
                    .strip_prefix("hr=")
                    .filter(|h| h.len() == 2)?
                    .parse()
                    .ok()?;
                if !(0..24).contains(&hr) {
                    return None;
                }
                parse_day(dt)? + hr * Self::MICROS_PER_HOUR
            }
            PartitionMode::Day => return None,
        };
        let bucket = self.bucket(t);
        (self.path(t) == path).then_some(bucket)
    }

    /// The partition path of a bucket.
    pub fn path_of_bucket(self, bucket: i64) -> String {
        self.path(bucket.saturating_mul(self.bucket_micros().unwrap_or(0)))
    }

    /// The partition path of a time: `dt=2026-11-25`, `dt=2026-11-25/hr=07`, or empty.
    pub fn path(self, t: Micros) -> String {
        let Some((y, m, d, h)) = values::civil(t) else {
            return String::new();
        };
        match self {
            PartitionMode::Day => format!("dt={y:04}-{m:02}-{d:02}"),
            PartitionMode::Hour => format!("dt={y:04}-{m:02}-{d:02}/hr={h:02}"),
            PartitionMode::None => String::new(),
        }
    }
}

/// Parquet compression codec (`--compression`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Codec {
    Zstd,
    Snappy,
    Gzip,
    /// LZ4_RAW, the LZ4 codec current Parquet readers agree on.
    Lz4,
    None,
}

impl Codec {
    pub(crate) fn parquet(self) -> Compression {
        match self {
            Codec::Zstd => Compression::ZSTD(ZstdLevel::default()),
            Codec::Snappy => Compression::SNAPPY,
            Codec::Gzip => Compression::GZIP(GzipLevel::default()),
            Codec::Lz4 => Compression::LZ4_RAW,
            Codec::None => Compression::UNCOMPRESSED,
        }
    }
}

/// Sizing of row groups and files.
#[derive(Debug, Clone)]
pub struct WriterConfig {
    pub partition: PartitionMode,
    pub codec: Codec,
    /// A partition's buffer becomes a row group at this many (estimated, uncompressed) bytes.
    pub row_group_bytes: usize,
    /// All partition buffers together stay under this many bytes (largest flushed first).
    pub buffer_budget: usize,
    /// A file is closed, and the partition's next rows start a new file, past this many bytes.
    pub file_max_bytes: usize,
    /// At most this many files are open at once (least recently written closed first).
    pub max_open_files: usize,
    /// Keep each row's [`Origin`] beside its file (for outputs that may drop rows after staging).
    pub origins: bool,
}

/// A finished file in the staging folder.
#[derive(Debug, Clone)]
pub struct StagedFile {
    /// The partition path (`dt=...`), empty with `--partition none`.
    pub partition: String,
    /// Sequence number of the file within its partition for this run.
    pub seq: u32,
    pub staged: PathBuf,
    pub rows: u64,
    pub bytes: u64,
    /// Where each row came from, in row order ([`Origin::BYTES`] each), when the writer keeps origins.
    pub origins: Option<PathBuf>,
}

/// Where a row came from: the input (its index in the run), line, byte offset, and index in a batch
/// envelope. Kept beside a staged file so that a row dropped after staging (a duplicate of a concurrent
/// commit) can still be listed in the rejects file with its place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Origin {
    pub input: u32,
    pub line: u64,
    pub offset: u64,
    /// `u32::MAX` when the row is not an element of a batch.
    pub index: u32,
}

impl Origin {
    pub const BYTES: usize = 24;

    pub(crate) fn write(&self, out: &mut impl std::io::Write) -> std::io::Result<()> {
        out.write_all(&self.input.to_le_bytes())?;
        out.write_all(&self.line.to_le_bytes())?;
        out.write_all(&self.offset.to_le_bytes())?;
        out.write_all(&self.index.to_le_bytes())
    }

    /// Reads the origins file of a staged file.
    pub fn read_all(path: &std::path::Path) -> Result<Vec<Origin>> {
        let bytes = fs::read(path).map_err(Error::io("reading", path))?;
        Ok(bytes
            .chunks_exact(Self::BYTES)
            .map(|c| {
                let u32_at = |i: usize| u32::from_le_bytes([c[i], c[i + 1], c[i + 2], c[i + 3]]);
                let u64_at = |i: usize| {
                    let mut b = [0u8; 8];
                    b.copy_from_slice(&c[i..i + 8]);
                    u64::from_le_bytes(b)
                };
                Origin {
                    input: u32_at(0),
                    line: u64_at(4),
                    offset: u64_at(12),
                    index: u32_at(20),
                }
            })
            .collect())
    }

    /// The index in a batch envelope, if any.
    pub fn batch_index(&self) -> Option<usize> {
        (self.index != u32::MAX).then_some(self.index as usize)
    }
}

/// An Arrow builder for a column of one [`Kind`] (shared with the `accounts` writer).
pub(crate) enum ColumnBuilder {
    Text(StringBuilder),
    Time(TimestampMicrosecondBuilder),
}

impl ColumnBuilder {
    pub(crate) fn new(kind: Kind) -> Self {
        match kind {
            Kind::Text | Kind::Json => ColumnBuilder::Text(StringBuilder::new()),
            Kind::Time => {
                ColumnBuilder::Time(TimestampMicrosecondBuilder::new().with_timezone("UTC"))
            }
        }
    }

    /// Appends a cell; returns the bytes it adds to the buffer (estimated).
    pub(crate) fn append(&mut self, cell: &Cell<'_>) -> usize {
        match (self, cell) {
            (ColumnBuilder::Text(b), Cell::Text(t)) => {
                b.append_value(t);
                t.len() + 4
            }
            (ColumnBuilder::Time(b), Cell::Time(t)) => {
                b.append_value(*t);
                8
            }
            (ColumnBuilder::Text(b), _) => {
                b.append_null();
                4
            }
            (ColumnBuilder::Time(b), _) => {
                b.append_null();
                8
            }
        }
    }

    pub(crate) fn finish(&mut self) -> ArrayRef {
        match self {
            ColumnBuilder::Text(b) => Arc::new(b.finish()),
            ColumnBuilder::Time(b) => Arc::new(b.finish()),
        }
    }
}

struct OpenFile {
    writer: ArrowWriter<File>,
    path: PathBuf,
    seq: u32,
    rows: u64,
    /// `(row in file, Row::cleared)` for rows that sent a reserved trait without a value.
    cleared: Vec<(u64, u32)>,
    /// The rows' origins, in row order (when kept).
    origins: Option<(PathBuf, std::io::BufWriter<File>)>,
}

impl OpenFile {
    /// Writes one batch as one row group, and its rows' origins. Runs on a pool thread.
    fn write_row_group(&mut self, batch: &RecordBatch, origins: &[Origin]) -> Result<()> {
        if let Some((path, out)) = &mut self.origins {
            for o in origins {
                o.write(out).map_err(Error::io("writing", path.as_path()))?;
            }
        }
        let parquet_err = |source| Error::Parquet {
            path: self.path.clone(),
            source,
        };
        self.writer.write(batch).map_err(parquet_err)?;
        self.writer.flush().map_err(|source| Error::Parquet {
            path: self.path.clone(),
            source,
        })?;
        self.rows += batch.num_rows() as u64;
        Ok(())
    }

    /// Finishes the file: footer written, data synced to disk.
    fn close(mut self, partition: &str) -> Result<StagedFile> {
        if !self.cleared.is_empty() {
            self.writer.append_key_value_metadata(KeyValue::new(
                schema::META_CLEARED_TRAITS.to_string(),
                cleared_json(&self.cleared),
            ));
        }
        let path = self.path;
        let inner = self.writer.into_inner().map_err(|source| Error::Parquet {
            path: path.clone(),
            source,
        })?;
        inner.sync_all().map_err(Error::io("syncing", &path))?;
        let bytes = inner.metadata().map_err(Error::io("reading", &path))?.len();
        let origins = match self.origins {
            Some((origins, out)) => {
                out.into_inner()
                    .map_err(|e| Error::io("writing", &origins)(e.into_error()))?;
                Some(origins)
            }
            None => None,
        };
        Ok(StagedFile {
            partition: partition.to_string(),
            seq: self.seq,
            staged: path,
            rows: self.rows,
            bytes,
            origins,
        })
    }
}

/// The `cleared` metadata of a file: `{"column": [row, ...], ...}`, columns in schema order, rows ascending.
pub(crate) fn cleared_json(cleared: &[(u64, u32)]) -> String {
    let mut by_col: BTreeMap<usize, Vec<u64>> = BTreeMap::new();
    for &(row, mask) in cleared {
        for (c, _) in COLUMNS
            .iter()
            .enumerate()
            .filter(|(c, _)| mask & (1 << c) != 0)
        {
            by_col.entry(c).or_default().push(row);
        }
    }
    let named: serde_json::Map<String, serde_json::Value> = by_col
        .into_iter()
        .map(|(c, rows)| (COLUMNS[c].name.to_string(), rows.into()))
        .collect();
    serde_json::Value::Object(named).to_string()
}

/// A partition's file: none yet (or closed), open and idle, or lent to a pool task writing a row group.
enum Slot {
    Closed,
    Idle(Box<OpenFile>),
    /// A row group of `bytes` buffered bytes is being encoded; the file comes back through the channel.
    Busy {
        bytes: usize,
        done: Receiver<(Box<OpenFile>, Result<()>)>,
    },
}

struct Partition {
    path: String,
    builders: Vec<ColumnBuilder>,
    buffered_rows: usize,
    buffered_bytes: usize,
    /// `(row in buffer, Row::cleared)` of buffered rows that cleared a trait.
    buffered_cleared: Vec<(u32, u32)>,
    /// Origins of the buffered rows (when kept).
    buffered_origins: Vec<Origin>,
    slot: Slot,
    next_seq: u32,
    last_write: u64,
}

impl Partition {
    fn new(path: String) -> Self {
        Partition {
            path,
            builders: COLUMNS.iter().map(|c| ColumnBuilder::new(c.kind)).collect(),
            buffered_rows: 0,
            buffered_bytes: 0,
            buffered_cleared: Vec::new(),
            buffered_origins: Vec::new(),
            slot: Slot::Closed,
            next_seq: 0,
            last_write: 0,
        }
    }

    /// Waits for the row group in flight, if any. Returns the bytes it held.
    fn wait(&mut self) -> Result<usize> {
        if !matches!(self.slot, Slot::Busy { .. }) {
            return Ok(0);
        }
        let Slot::Busy { bytes, done } = std::mem::replace(&mut self.slot, Slot::Closed) else {
            return Ok(0);
        };
        match done.recv() {
            Ok((file, result)) => {
                self.slot = Slot::Idle(file);
                result.map(|()| bytes)
            }
            Err(_) => Err(Error::Io {
                action: "writing",
                path: PathBuf::from(&self.path),
                source: std::io::Error::other("internal: a row-group task ended without answering"),
            }),
        }
    }

    fn close(&mut self) -> Result<Option<StagedFile>> {
        self.wait()?;
        match std::mem::replace(&mut self.slot, Slot::Closed) {
            Slot::Idle(file) => file.close(&self.path).map(Some),
            _ => Ok(None),
        }
    }
}

/// Writes the rows of one run into per-partition Parquet files in a staging folder.
///
/// The caller appends rows in input order on its own thread; full buffers become row groups that are encoded
/// on the thread pool while the caller goes on. Row groups of one partition are written in order (a partition
/// waits for its previous row group before lending its file again), so the files do not depend on timing.
pub struct GroupsWriter {
    dir: PathBuf,
    config: WriterConfig,
    props: WriterProperties,
    schema: SchemaRef,
    pool: Arc<rayon::ThreadPool>,
    partitions: Vec<Partition>,
    by_bucket: HashMap<i64, usize>,
    buffered_bytes: usize,
    clock: u64,
    finished: Vec<StagedFile>,
}

/// Columns whose values rarely repeat: dictionary encoding would be tried and abandoned on every row group.
const NO_DICTIONARY: &[Col] = &[
    Col::Id,
    Col::UserId,
    Col::AnonymousId,
    Col::ReceivedAt,
    Col::SentAt,
    Col::OriginalTimestamp,
    Col::Timestamp,
    Col::ExtraTraits,
    Col::ExtraContext,
    Col::Extra,
];

/// A Parquet writer for a file of the dataset. The JSON columns are written with Parquet's `JSON` logical type
/// (from the Arrow schema's canonical JSON extension), but the Arrow schema embedded in the file is the plain
/// one (text): readers of the embedded schema, and Delta readers checking it against the table's `string`
/// columns (polars' `read_delta`), see text; readers of the Parquet type (DuckDB, BigQuery) see JSON.
pub(crate) fn arrow_writer(
    file: File,
    schema: SchemaRef,
    mut props: WriterProperties,
) -> parquet::errors::Result<ArrowWriter<File>> {
    parquet::arrow::add_encoded_arrow_schema_to_metadata(
        &schema::without_extensions(&schema),
        &mut props,
    );
    let options = parquet::arrow::arrow_writer::ArrowWriterOptions::new()
        .with_properties(props)
        .with_skip_arrow_metadata(true);
    ArrowWriter::try_new_with_options(file, schema, options)
}

/// Properties every Parquet file of the dataset shares: the codec (never the library's default of none),
/// row groups cut by the caller, and the tool and schema versions as key/value metadata.
pub(crate) fn file_properties(codec: Codec) -> parquet::file::properties::WriterPropertiesBuilder {
    WriterProperties::builder()
        .set_compression(codec.parquet())
        .set_max_row_group_row_count(None)
        .set_created_by(format!("group-loader {}", schema::TOOL_VERSION))
        .set_key_value_metadata(Some(vec![
            KeyValue::new(
                schema::META_TOOL_VERSION.to_string(),
                schema::TOOL_VERSION.to_string(),
            ),
            KeyValue::new(
                schema::META_SCHEMA_VERSION.to_string(),
                schema::SCHEMA_VERSION.to_string(),
            ),
        ]))
}

/// The properties of a `groups` file.
pub(crate) fn groups_properties(codec: Codec) -> WriterProperties {
    without_dictionary(codec, NO_DICTIONARY.iter().map(|col| col.column().name))
}

/// The traits groups share (an industry, a plan, a city): the only `accounts` columns that keep a dictionary.
/// Every other column holds one value a group (its id, its own name, email or address line, its times and
/// versions); with a row a group those hardly repeat, so a dictionary would be filled up to its page limit and
/// abandoned in every file.
const ACCOUNTS_SHARED_TRAITS: &[Col] = &[
    Col::Industry,
    Col::Employees,
    Col::Plan,
    Col::AddressCity,
    Col::AddressState,
    Col::AddressPostalCode,
    Col::AddressCountry,
];

/// The properties of an `accounts` file.
pub(crate) fn accounts_properties(codec: Codec) -> WriterProperties {
    let shared = |name: &str| {
        ACCOUNTS_SHARED_TRAITS
            .iter()
            .any(|c| c.column().name == name)
    };
    without_dictionary(
        codec,
        schema::ACCOUNT_COLUMNS
            .iter()
            .map(|c| c.name)
            .filter(|name| !shared(name)),
    )
}

fn without_dictionary<'a>(
    codec: Codec,
    columns: impl Iterator<Item = &'a str>,
) -> WriterProperties {
    columns
        .fold(file_properties(codec), |props, name| {
            props.set_column_dictionary_enabled(ColumnPath::from(name), false)
        })
        .build()
}

impl GroupsWriter {
    /// `dir`: the staging folder of `groups/`; row groups are encoded on `pool`.
    pub fn new(dir: PathBuf, config: WriterConfig, pool: Arc<rayon::ThreadPool>) -> Self {
        GroupsWriter {
            dir,
            props: groups_properties(config.codec),
            config,
            schema: schema::groups_schema(),
            pool,
            partitions: Vec::new(),
            by_bucket: HashMap::new(),
            buffered_bytes: 0,
            clock: 0,
            finished: Vec::new(),
        }
    }

    /// Appends one row to its partition's buffer (in input order).
    pub fn append(&mut self, row: &Row<'_>, origin: Origin) {
        let t = row.partition_time();
        let bucket = self.config.partition.bucket(t);
        let mode = self.config.partition;
        let partitions = &mut self.partitions;
        let index = *self.by_bucket.entry(bucket).or_insert_with(|| {
            partitions.push(Partition::new(mode.path(t)));
            partitions.len() - 1
        });
        let p = &mut self.partitions[index];
        let mut bytes = 0;
        for (builder, cell) in p.builders.iter_mut().zip(row.cells.iter()) {
            bytes += builder.append(cell);
        }
        if row.cleared != 0 {
            p.buffered_cleared
                .push((p.buffered_rows as u32, row.cleared));
        }
        if self.config.origins {
            p.buffered_origins.push(origin);
        }
        p.buffered_rows += 1;
        p.buffered_bytes += bytes;
        self.buffered_bytes += bytes;
    }

    /// Starts the row groups that are due: buffers at the row-group size, and, when all buffers together
    /// exceed the budget, the largest ones until half the budget is left (several at once, encoded in
    /// parallel). Called between chunks, so where row groups end depends on the input only.
    pub fn flush_due(&mut self) -> Result<()> {
        let mut due: Vec<usize> = (0..self.partitions.len())
            .filter(|&i| self.partitions[i].buffered_bytes >= self.config.row_group_bytes)
            .collect();
        if self.buffered_bytes > self.config.buffer_budget {
            let mut by_size: Vec<usize> = (0..self.partitions.len())
                .filter(|i| !due.contains(i))
                .collect();
            by_size.sort_by_key(|&i| (std::cmp::Reverse(self.partitions[i].buffered_bytes), i));
            let mut left = self.buffered_bytes
                - due
                    .iter()
                    .map(|&i| self.partitions[i].buffered_bytes)
                    .sum::<usize>();
            for i in by_size {
                if left <= self.config.buffer_budget / 2 {
                    break;
                }
                left -= self.partitions[i].buffered_bytes;
                due.push(i);
            }
        }
        due.sort_unstable();
        for i in due {
            self.start_row_group(i)?;
        }
        Ok(())
    }

    /// Bytes held by row groups being encoded.
    fn in_flight(&self) -> usize {
        self.partitions
            .iter()
            .map(|p| match p.slot {
                Slot::Busy { bytes, .. } => bytes,
                _ => 0,
            })
            .sum()
    }

    /// Turns partition `i`'s buffer into a row group and hands it to the pool.
    fn start_row_group(&mut self, i: usize) -> Result<()> {
        if self.partitions[i].buffered_rows == 0 {
            return Ok(());
        }
        // Back-pressure: buffers plus row groups in flight stay within twice the budget.
        while self.buffered_bytes + self.in_flight() > 2 * self.config.buffer_budget {
            let Some(j) = self
                .partitions
                .iter()
                .position(|p| matches!(p.slot, Slot::Busy { .. }))
            else {
                break;
            };
            self.partitions[j].wait()?;
        }
        self.partitions[i].wait()?;
        let mut file = self.take_file(i)?;
        let p = &mut self.partitions[i];
        let base = file.rows;
        file.cleared.extend(
            p.buffered_cleared
                .drain(..)
                .map(|(r, mask)| (base + u64::from(r), mask)),
        );
        let columns: Vec<ArrayRef> = p.builders.iter_mut().map(ColumnBuilder::finish).collect();
        let batch = RecordBatch::try_new(self.schema.clone(), columns)?;
        let origins = std::mem::take(&mut p.buffered_origins);
        let bytes = p.buffered_bytes;
        p.buffered_rows = 0;
        p.buffered_bytes = 0;
        self.buffered_bytes -= bytes;
        let (tx, rx) = sync_channel(1);
        p.slot = Slot::Busy { bytes, done: rx };
        self.pool.spawn(move || {
            let mut file = file;
            let result = file.write_row_group(&batch, &origins);
            drop(batch);
            let _ = tx.send((file, result));
        });
        Ok(())
    }

    /// The open file of partition `i` (which is not busy), opening one if needed: closing the least recently
    /// written file when too many are open, and rolling over to a new file past the size limit.
    fn take_file(&mut self, i: usize) -> Result<Box<OpenFile>> {
        self.clock += 1;
        self.partitions[i].last_write = self.clock;
        if let Slot::Idle(f) = std::mem::replace(&mut self.partitions[i].slot, Slot::Closed) {
            if f.writer.bytes_written() < self.config.file_max_bytes {
                return Ok(f);
            }
            let path = self.partitions[i].path.clone();
            self.finished.push(f.close(&path)?);
        }
        let open = self
            .partitions
            .iter()
            .filter(|p| !matches!(p.slot, Slot::Closed))
            .count();
        if open >= self.config.max_open_files.max(1) {
            let lru = (0..self.partitions.len())
                .filter(|&j| !matches!(self.partitions[j].slot, Slot::Closed))
                .min_by_key(|&j| self.partitions[j].last_write);
            if let Some(j) = lru
                && let Some(f) = self.partitions[j].close()?
            {
                self.finished.push(f);
            }
        }
        let p = &mut self.partitions[i];
        let dir = self.dir.join(&p.path);
        fs::create_dir_all(&dir).map_err(Error::io("creating directory", &dir))?;
        let seq = p.next_seq;
        p.next_seq += 1;
        let path = dir.join(format!("part-{seq:05}.parquet.partial"));
        let origins_path = path.with_extension("origins");
        let file = File::create(&path).map_err(Error::io("creating", &path))?;
        let writer =
            arrow_writer(file, self.schema.clone(), self.props.clone()).map_err(|source| {
                Error::Parquet {
                    path: path.clone(),
                    source,
                }
            })?;
        Ok(Box::new(OpenFile {
            writer,
            path,
            seq,
            rows: 0,
            cleared: Vec::new(),
            origins: if self.config.origins {
                let f =
                    File::create(&origins_path).map_err(Error::io("creating", &origins_path))?;
                Some((origins_path, std::io::BufWriter::new(f)))
            } else {
                None
            },
        }))
    }

    /// Writes every remaining buffer and closes every file. Returns the files, by partition and sequence.
    pub fn finish(mut self) -> Result<Vec<StagedFile>> {
        for i in 0..self.partitions.len() {
            self.start_row_group(i)?;
        }
        // Wait here, off the pool: a pool thread blocked on a task queued behind it could wait forever.
        for p in &mut self.partitions {
            p.wait()?;
        }
        let partitions = std::mem::take(&mut self.partitions);
        let closed: Vec<Option<StagedFile>> = self.pool.install(|| {
            partitions
                .into_par_iter()
                .map(|mut p| p.close())
                .collect::<Result<_>>()
        })?;
        let mut files = self.finished;
        files.extend(closed.into_iter().flatten());
        files.sort_by(|a, b| (a.partition.as_str(), a.seq).cmp(&(b.partition.as_str(), b.seq)));
        Ok(files)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_paths() {
        let t = values::parse_time_str("2026-11-25T07:30:00Z").unwrap();
        assert_eq!(PartitionMode::Day.path(t), "dt=2026-11-25");
        assert_eq!(PartitionMode::Hour.path(t), "dt=2026-11-25/hr=07");
        assert_eq!(PartitionMode::None.path(t), "");
        // The last microsecond of a day is still that day; before the epoch too.
        let end = values::parse_time_str("2026-11-25T23:59:59.999999Z").unwrap();
        assert_eq!(PartitionMode::Day.bucket(end), PartitionMode::Day.bucket(t));
        assert_eq!(PartitionMode::Day.path(-1), "dt=1969-12-31");
        assert_eq!(PartitionMode::Hour.path(-1), "dt=1969-12-31/hr=23");
    }

    #[test]
    fn partition_paths_round_trip_through_buckets() {
        for mode in [PartitionMode::Day, PartitionMode::Hour] {
            for t in [
                "2026-11-25T07:30:00Z",
                "1969-12-31T23:00:00Z",
                "0001-01-01T00:00:00Z",
            ] {
                let t = values::parse_time_str(t).unwrap();
                let b = mode.bucket(t);
                assert_eq!(mode.bucket_of_path(&mode.path(t)), Some(b), "{mode:?} {t}");
                assert_eq!(mode.path_of_bucket(b), mode.path(t));
            }
        }
        // 2026-11-25 is day 20,782 since the epoch (date -u -d 2026-11-25 +%s = 1795564800 = 20,782 x 86,400).
        assert_eq!(
            PartitionMode::Day.bucket_of_path("dt=2026-11-25"),
            Some(20_782)
        );
        assert_eq!(
            PartitionMode::Hour.bucket_of_path("dt=2026-11-25/hr=07"),
            Some(20_782 * 24 + 7)
        );
        for (mode, bad) in [
            (PartitionMode::Day, "dt=2026-11-25/hr=07"),
            (PartitionMode::Day, "dt=2026-02-30"),
            (PartitionMode::Day, "dt=2026-1-5"),
            (PartitionMode::Hour, "dt=2026-11-25"),
            (PartitionMode::Hour, "dt=2026-11-25/hr=24"),
            (PartitionMode::Hour, "dt=2026-11-25/hr=7"),
            (PartitionMode::None, "dt=2026-11-25"),
        ] {
            assert_eq!(mode.bucket_of_path(bad), None, "{mode:?} {bad}");
        }
        assert_eq!(PartitionMode::None.bucket_of_path(""), Some(0));
    }

    #[test]
    fn accounts_files_keep_dictionaries_only_for_traits_groups_share() {
        // A name that is not a column would be ignored by the Parquet writer, keeping its dictionary.
        let names: Vec<&str> = schema::ACCOUNT_COLUMNS.iter().map(|c| c.name).collect();
        let props = accounts_properties(Codec::Zstd);
        let one_a_group = [
            "group_id",
            "name",
            "email",
            "phone",
            "website",
            "avatar",
            "description",
            "created_at",
            "address_street",
            "trait_id",
            "extra_traits",
            "first_seen_at",
            "last_seen_at",
            "trait_versions",
        ];
        for name in one_a_group {
            assert!(names.contains(&name), "{name} is not an accounts column");
            assert!(!props.dictionary_enabled(&ColumnPath::from(name)), "{name}");
        }
        for shared in [
            "industry",
            "plan",
            "employees",
            "address_city",
            "address_country",
        ] {
            assert!(
                names.contains(&shared),
                "{shared} is not an accounts column"
            );
            assert!(
                props.dictionary_enabled(&ColumnPath::from(shared)),
                "{shared}"
            );
        }
    }
}
