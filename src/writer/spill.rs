//! Rows of partitions too small to be worth a row group of their own, kept on disk until the end of the run.
//!
//! Why this exists: the memory limit holds however many partitions a run writes. A partition's buffer costs
//! its column builders before its first row, so ten thousand partitions with a row each would take gigabytes;
//! written out as they come, they would make a file (and a row group) per row. Instead, when the buffers are
//! over their budget and what fills them is many small partitions, those partitions' rows are written here,
//! sorted by partition, as one uncompressed Arrow IPC file per spill. At the end of the run the spill files
//! are merged by partition, so each partition is written once, whole and in input order, with one file open
//! at a time.
//!
//! A partition that spilled once keeps spilling (its later rows must follow the spilled ones). Spill files are
//! merged sixteen at a time as they accumulate (the newest level first), so the merge at the end reads a
//! bounded number of files, each one batch at a time: a batch holds at most [`MAX_BATCH_ROWS`] rows.

use std::fs::{self, File};
use std::io::{BufReader, BufWriter};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, Int64Array, RecordBatch, UInt32Array, UInt64Array};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::ipc::reader::FileReader;
use arrow::ipc::writer::FileWriter;

use super::Origin;
use crate::error::{Error, Result};

/// Files of one level merged into one of the next.
const MERGE_WAYS: usize = 16;
/// The most rows a spilled batch holds (large buffers of a spilling partition are cut).
pub(super) const MAX_BATCH_ROWS: usize = 4096;
/// The columns after the groups columns: the partition, each row's cleared traits, and its origin.
const EXTRA: [(&str, DataType); 6] = [
    ("__bucket", DataType::Int64),
    ("__cleared", DataType::UInt32),
    ("__input", DataType::UInt32),
    ("__line", DataType::UInt64),
    ("__offset", DataType::UInt64),
    ("__index", DataType::UInt32),
];

/// One partition's rows from one spill (or a part of them), in input order.
pub(super) struct Spilled {
    pub bucket: i64,
    /// The rows, in the `groups` schema.
    pub batch: RecordBatch,
    /// `(row in batch, cleared mask)` of the rows that cleared a trait.
    pub cleared: Vec<(u32, u32)>,
    /// Each row's origin (empty when the writer keeps none).
    pub origins: Vec<Origin>,
}

/// The spill files of a run, oldest first, each with its level; removed on drop.
pub(super) struct Spill {
    dir: PathBuf,
    groups: SchemaRef,
    schema: SchemaRef,
    files: Vec<(u32, PathBuf)>,
    next: u64,
}

impl Drop for Spill {
    fn drop(&mut self) {
        // Best effort: the staging folder goes with the run in any case.
        let _ = fs::remove_dir_all(&self.dir);
    }
}

impl Spill {
    /// A spill in `dir` (created on the first write) for rows of schema `groups`.
    pub(super) fn new(dir: PathBuf, groups: SchemaRef) -> Spill {
        let mut fields: Vec<Field> = groups.fields().iter().map(|f| f.as_ref().clone()).collect();
        fields.extend(EXTRA.iter().map(|(n, t)| Field::new(*n, t.clone(), false)));
        Spill {
            dir,
            schema: Arc::new(Schema::new(fields)),
            groups,
            files: Vec::new(),
            next: 0,
        }
    }

    pub(super) fn is_empty(&self) -> bool {
        self.files.is_empty()
    }

    /// Writes the rows of several partitions (sorted by bucket) as a new spill file, then merges files
    /// sixteen at a time while a level holds that many.
    pub(super) fn write(&mut self, parts: Vec<Spilled>) -> Result<()> {
        if parts.is_empty() {
            return Ok(());
        }
        let path = self.write_file(parts.into_iter().map(Ok))?;
        self.files.push((0, path));
        while let Some(&(level, _)) = self.files.last() {
            let same = self
                .files
                .iter()
                .rev()
                .take_while(|(l, _)| *l == level)
                .count();
            if same < MERGE_WAYS {
                break;
            }
            let merged: Vec<(u32, PathBuf)> = self.files.split_off(self.files.len() - same);
            let paths: Vec<PathBuf> = merged.into_iter().map(|(_, p)| p).collect();
            let reader = Merge::open(&paths, self.groups.clone())?;
            let path = self.write_file(reader)?;
            for p in &paths {
                let _ = fs::remove_file(p);
            }
            self.files.push((level + 1, path));
        }
        Ok(())
    }

    /// The spilled rows of every partition, by bucket, and within one in input order.
    pub(super) fn merged(&self) -> Result<Merge> {
        let paths: Vec<PathBuf> = self.files.iter().map(|(_, p)| p.clone()).collect();
        Merge::open(&paths, self.groups.clone())
    }

    fn write_file(&mut self, parts: impl Iterator<Item = Result<Spilled>>) -> Result<PathBuf> {
        fs::create_dir_all(&self.dir).map_err(Error::io("creating directory", &self.dir))?;
        self.next += 1;
        let path = self.dir.join(format!("spill-{:06}.arrow", self.next));
        let file = File::create(&path).map_err(Error::io("creating", &path))?;
        let err =
            |e: arrow::error::ArrowError| Error::io("writing", &path)(std::io::Error::other(e));
        let mut w = FileWriter::try_new(BufWriter::new(file), &self.schema).map_err(err)?;
        for part in parts {
            let part = part?;
            let mut start = 0;
            while start < part.batch.num_rows() {
                let len = MAX_BATCH_ROWS.min(part.batch.num_rows() - start);
                w.write(&self.encode(&part, start, len)?).map_err(err)?;
                start += len;
            }
        }
        w.finish().map_err(err)?;
        Ok(path)
    }

    /// Rows `start..start + len` of `part` with the extra columns.
    fn encode(&self, part: &Spilled, start: usize, len: usize) -> Result<RecordBatch> {
        let mut columns: Vec<ArrayRef> = part.batch.slice(start, len).columns().to_vec();
        let mut cleared = vec![0u32; len];
        for &(r, mask) in &part.cleared {
            let r = r as usize;
            if (start..start + len).contains(&r) {
                cleared[r - start] = mask;
            }
        }
        let origin = |r: usize| part.origins.get(r).copied().unwrap_or(Origin::NONE);
        let rows = start..start + len;
        columns.push(Arc::new(Int64Array::from(vec![part.bucket; len])));
        columns.push(Arc::new(UInt32Array::from(cleared)));
        columns.push(Arc::new(UInt32Array::from_iter_values(
            rows.clone().map(|r| origin(r).input),
        )));
        columns.push(Arc::new(UInt64Array::from_iter_values(
            rows.clone().map(|r| origin(r).line),
        )));
        columns.push(Arc::new(UInt64Array::from_iter_values(
            rows.clone().map(|r| origin(r).offset),
        )));
        columns.push(Arc::new(UInt32Array::from_iter_values(
            rows.map(|r| origin(r).index),
        )));
        Ok(RecordBatch::try_new(self.schema.clone(), columns)?)
    }
}

/// A merge of spill files by bucket: each file is read one batch at a time, and among the files' next
/// batches the one of the lowest bucket comes first (of two with the same bucket, the older file's).
pub(super) struct Merge {
    groups: SchemaRef,
    files: Vec<(PathBuf, FileReader<BufReader<File>>, Option<RecordBatch>)>,
}

impl Merge {
    fn open(paths: &[PathBuf], groups: SchemaRef) -> Result<Merge> {
        let mut files = Vec::with_capacity(paths.len());
        for path in paths {
            let file = File::open(path).map_err(Error::io("opening", path))?;
            let mut reader =
                FileReader::try_new(BufReader::new(file), None).map_err(|e| read_error(path, e))?;
            let head = reader.next().transpose().map_err(|e| read_error(path, e))?;
            files.push((path.clone(), reader, head));
        }
        Ok(Merge { groups, files })
    }

    fn decode(&self, batch: RecordBatch, path: &Path) -> Result<Spilled> {
        let n = self.groups.fields().len();
        let col = |i: usize| batch.column(n + i).clone();
        let bad = || {
            read_error(
                path,
                arrow::error::ArrowError::SchemaError("columns".into()),
            )
        };
        let bucket = col(0)
            .as_any()
            .downcast_ref::<Int64Array>()
            .ok_or_else(bad)?
            .value(0);
        let u32s = |i: usize| {
            col(i)
                .as_any()
                .downcast_ref::<UInt32Array>()
                .cloned()
                .ok_or_else(bad)
        };
        let u64s = |i: usize| {
            col(i)
                .as_any()
                .downcast_ref::<UInt64Array>()
                .cloned()
                .ok_or_else(bad)
        };
        let (masks, input, line, offset, index) =
            (u32s(1)?, u32s(2)?, u64s(3)?, u64s(4)?, u32s(5)?);
        let rows = batch.num_rows();
        let cleared = (0..rows)
            .filter(|&r| masks.value(r) != 0)
            .map(|r| (r as u32, masks.value(r)))
            .collect();
        let origins = (0..rows)
            .map(|r| Origin {
                input: input.value(r),
                line: line.value(r),
                offset: offset.value(r),
                index: index.value(r),
            })
            .collect();
        let batch = RecordBatch::try_new(self.groups.clone(), batch.columns()[..n].to_vec())?;
        Ok(Spilled {
            bucket,
            batch,
            cleared,
            origins,
        })
    }

    fn bucket_of(batch: &RecordBatch, n: usize) -> i64 {
        batch
            .column(n)
            .as_any()
            .downcast_ref::<Int64Array>()
            .filter(|a| !a.is_empty())
            .map_or(i64::MAX, |a| a.value(0))
    }
}

impl Iterator for Merge {
    type Item = Result<Spilled>;

    fn next(&mut self) -> Option<Result<Spilled>> {
        let n = self.groups.fields().len();
        let (i, _) = self
            .files
            .iter()
            .enumerate()
            .filter_map(|(i, (_, _, head))| head.as_ref().map(|b| (i, Self::bucket_of(b, n))))
            .min_by_key(|&(i, bucket)| (bucket, i))?;
        let (path, reader, head) = &mut self.files[i];
        let batch = head.take()?;
        let path = path.clone();
        match reader.next().transpose() {
            Ok(next) => *head = next,
            Err(e) => return Some(Err(read_error(&path, e))),
        }
        Some(self.decode(batch, &path))
    }
}

fn read_error(path: &Path, e: arrow::error::ArrowError) -> Error {
    Error::io("reading spill file", path)(std::io::Error::other(e))
}
