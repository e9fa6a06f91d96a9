//! Partitioning rows and writing them as Parquet (SPEC §6.1), within a memory budget.
//!
//! Why this module exists: warehouse-friendly files (one file per partition per run, large row groups) and
//! a bounded memory footprint pull in opposite directions; this module owns that trade. Rows are appended to
//! per-partition Arrow builders in input order; a partition's buffer becomes a row group when it reaches the
//! row-group size, or earlier when all buffers together exceed the budget (largest first). Row groups of
//! different partitions are encoded in parallel. Files are written into the run's staging folder under names
//! no reader globs (`.parquet.partial`); [`crate::publish`] renames them into place.

use std::collections::HashMap;
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{ArrayRef, RecordBatch, StringBuilder, TimestampMicrosecondBuilder};
use arrow::datatypes::SchemaRef;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, GzipLevel, ZstdLevel};
use parquet::file::metadata::KeyValue;
use parquet::file::properties::WriterProperties;
use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::mapping::{Cell, Row};
use crate::schema::{self, COLUMNS, Kind};
use crate::values::{self, Micros};

/// How the dataset is partitioned (`--partition`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
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

    /// The bucket a time falls in (days or hours since the epoch).
    fn bucket(self, t: Micros) -> i64 {
        match self {
            PartitionMode::Day => t.div_euclid(24 * Self::MICROS_PER_HOUR),
            PartitionMode::Hour => t.div_euclid(Self::MICROS_PER_HOUR),
            PartitionMode::None => 0,
        }
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
    fn parquet(self) -> Compression {
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
}

enum ColumnBuilder {
    Text(StringBuilder),
    Time(TimestampMicrosecondBuilder),
}

impl ColumnBuilder {
    fn new(kind: Kind) -> Self {
        match kind {
            Kind::Text | Kind::Json => ColumnBuilder::Text(StringBuilder::new()),
            Kind::Time => {
                ColumnBuilder::Time(TimestampMicrosecondBuilder::new().with_timezone("UTC"))
            }
        }
    }

    /// Appends a cell; returns the bytes it adds to the buffer (estimated).
    fn append(&mut self, cell: &Cell<'_>) -> usize {
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

    fn finish(&mut self) -> ArrayRef {
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
}

struct Partition {
    path: String,
    builders: Vec<ColumnBuilder>,
    buffered_rows: usize,
    buffered_bytes: usize,
    file: Option<OpenFile>,
    next_seq: u32,
    rows: u64,
    last_write: u64,
    flush_now: bool,
}

impl Partition {
    fn new(path: String) -> Self {
        Partition {
            path,
            builders: COLUMNS.iter().map(|c| ColumnBuilder::new(c.kind)).collect(),
            buffered_rows: 0,
            buffered_bytes: 0,
            file: None,
            next_seq: 0,
            rows: 0,
            last_write: 0,
            flush_now: false,
        }
    }

    /// Writes the buffer as one row group of the open file.
    fn flush(&mut self, schema: &SchemaRef) -> Result<()> {
        self.flush_now = false;
        if self.buffered_rows == 0 {
            return Ok(());
        }
        let columns: Vec<ArrayRef> = self
            .builders
            .iter_mut()
            .map(ColumnBuilder::finish)
            .collect();
        let batch = RecordBatch::try_new(schema.clone(), columns)?;
        let rows = self.buffered_rows as u64;
        self.buffered_rows = 0;
        self.buffered_bytes = 0;
        let Some(file) = self.file.as_mut() else {
            return Err(Error::Io {
                action: "writing",
                path: PathBuf::from(&self.path),
                source: std::io::Error::other("internal: no open file for partition"),
            });
        };
        let parquet_err = |path: &Path| {
            let path = path.to_path_buf();
            move |source| Error::Parquet { path, source }
        };
        file.writer.write(&batch).map_err(parquet_err(&file.path))?;
        file.writer.flush().map_err(parquet_err(&file.path))?;
        file.rows += rows;
        self.rows += rows;
        Ok(())
    }

    /// Finishes the open file: footer written, data synced to disk.
    fn close(&mut self) -> Result<Option<StagedFile>> {
        let Some(file) = self.file.take() else {
            return Ok(None);
        };
        let path = file.path;
        let inner = file.writer.into_inner().map_err(|source| Error::Parquet {
            path: path.clone(),
            source,
        })?;
        inner.sync_all().map_err(Error::io("syncing", &path))?;
        let bytes = inner.metadata().map_err(Error::io("reading", &path))?.len();
        Ok(Some(StagedFile {
            partition: self.path.clone(),
            seq: file.seq,
            staged: path,
            rows: file.rows,
            bytes,
        }))
    }
}

/// Writes the rows of one run into per-partition Parquet files in a staging folder.
pub struct GroupsWriter {
    dir: PathBuf,
    config: WriterConfig,
    props: WriterProperties,
    schema: SchemaRef,
    partitions: Vec<Partition>,
    by_bucket: HashMap<i64, usize>,
    buffered_bytes: usize,
    clock: u64,
    finished: Vec<StagedFile>,
}

impl GroupsWriter {
    /// `dir`: the staging folder of `groups/`.
    pub fn new(dir: PathBuf, config: WriterConfig) -> Self {
        let props = WriterProperties::builder()
            .set_compression(config.codec.parquet())
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
            .build();
        GroupsWriter {
            dir,
            config,
            props,
            schema: schema::groups_schema(),
            partitions: Vec::new(),
            by_bucket: HashMap::new(),
            buffered_bytes: 0,
            clock: 0,
            finished: Vec::new(),
        }
    }

    /// Appends one row to its partition's buffer (in input order).
    pub fn append(&mut self, row: &Row<'_>) {
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
        p.buffered_rows += 1;
        p.buffered_bytes += bytes;
        self.buffered_bytes += bytes;
        if p.buffered_bytes >= self.config.row_group_bytes {
            p.flush_now = true;
        }
    }

    /// Bytes buffered in all partitions.
    pub fn buffered_bytes(&self) -> usize {
        self.buffered_bytes
    }

    /// Writes the row groups that are due: full buffers, and the largest buffers while over the budget.
    /// Called between chunks, so where row groups end depends on the input only, never on thread timing.
    pub fn flush_due(&mut self) -> Result<()> {
        let mut over = self
            .buffered_bytes
            .saturating_sub(self.config.buffer_budget);
        if over > 0 {
            let mut by_size: Vec<usize> = (0..self.partitions.len()).collect();
            by_size.sort_by_key(|&i| {
                std::cmp::Reverse((self.partitions[i].buffered_bytes, usize::MAX - i))
            });
            for i in by_size {
                if over == 0 {
                    break;
                }
                let p = &mut self.partitions[i];
                p.flush_now = true;
                over = over.saturating_sub(p.buffered_bytes);
            }
        }
        self.flush_marked()
    }

    fn flush_marked(&mut self) -> Result<()> {
        let marked: Vec<usize> = (0..self.partitions.len())
            .filter(|&i| self.partitions[i].flush_now)
            .collect();
        if marked.is_empty() {
            return Ok(());
        }
        for &i in &marked {
            self.ensure_open(i)?;
        }
        let schema = &self.schema;
        let file_max = self.config.file_max_bytes;
        let closed: Vec<Option<StagedFile>> = self
            .partitions
            .par_iter_mut()
            .filter(|p| p.flush_now)
            .map(|p| {
                p.flush(schema)?;
                let full = p
                    .file
                    .as_ref()
                    .is_some_and(|f| f.writer.bytes_written() >= file_max);
                if full { p.close() } else { Ok(None) }
            })
            .collect::<Result<_>>()?;
        self.finished.extend(closed.into_iter().flatten());
        self.buffered_bytes = self.partitions.iter().map(|p| p.buffered_bytes).sum();
        Ok(())
    }

    /// Opens a file for partition `i` if it has none, closing the least recently written file when too many
    /// are open.
    fn ensure_open(&mut self, i: usize) -> Result<()> {
        self.clock += 1;
        self.partitions[i].last_write = self.clock;
        if self.partitions[i].file.is_some() {
            return Ok(());
        }
        let open = self.partitions.iter().filter(|p| p.file.is_some()).count();
        if open >= self.config.max_open_files.max(1) {
            let lru = (0..self.partitions.len())
                .filter(|&j| self.partitions[j].file.is_some() && !self.partitions[j].flush_now)
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
        let file = File::create(&path).map_err(Error::io("creating", &path))?;
        let writer = ArrowWriter::try_new(file, self.schema.clone(), Some(self.props.clone()))
            .map_err(|source| Error::Parquet {
                path: path.clone(),
                source,
            })?;
        p.file = Some(OpenFile {
            writer,
            path,
            seq,
            rows: 0,
        });
        Ok(())
    }

    /// Writes every remaining buffer and closes every file. Returns the files, by partition and sequence.
    pub fn finish(mut self) -> Result<Vec<StagedFile>> {
        for p in &mut self.partitions {
            p.flush_now = p.buffered_rows > 0;
        }
        self.flush_marked()?;
        let closed: Vec<Option<StagedFile>> = self
            .partitions
            .par_iter_mut()
            .map(Partition::close)
            .collect::<Result<_>>()?;
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
}
