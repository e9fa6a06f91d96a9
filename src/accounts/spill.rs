//! Routing the run's `groups` rows to the accounts buckets in one pass, through spill files.
//!
//! Why this exists: a bucket is merged by reading every event of the run and keeping those of its groups, so
//! with `n` buckets every `groups` file used to be decoded `n` times (8 times for a million groups at the
//! default memory limit; for a rebuild on object storage, downloaded `n` times). Here each file is decoded
//! once, on the pool, and the columns the merge reads are written out, split by bucket, as uncompressed Arrow
//! IPC streams in the staging folder; a bucket then reads only its own rows, which costs a copy, not a decode.
//! The spill files are removed when the merge ends, whether it succeeds or not.
//!
//! The cleared traits of a row (the `groups` file's metadata, keyed by row number) travel with it as one more
//! column, [`CLEARED`]. At most [`MAX_PARTS`] streams are open per file being routed: with more buckets than
//! that, bucket `b` reads spill part `b % parts` and keeps its own groups (a cheap filter on hashed ids).

use std::fs::{self, File};
use std::io::{BufReader, BufWriter};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{Array, RecordBatch, StringArray, UInt32Array};
use arrow::compute::take_record_batch;
use arrow::datatypes::{DataType, Field, Schema};
use arrow::error::ArrowError;
use arrow::ipc::reader::StreamReader;
use arrow::ipc::writer::StreamWriter;
use rayon::prelude::*;

use crate::datafile::DataFile;
use crate::error::{Error, Result};
use crate::schema::Col;

use super::Event;
use super::files::{batch_events, bucket, cleared_masks, column, groups_columns, open_parquet};

/// The column of a spilled batch holding each row's cleared-trait mask.
const CLEARED: &str = "__cleared_traits";
/// The most spill streams a routed file writes at once (file handles per thread).
const MAX_PARTS: u32 = 64;

/// The spill files of a merge, by part; removed on drop.
pub(super) struct Spill {
    dir: PathBuf,
    parts: u32,
    files: Vec<Vec<PathBuf>>,
}

impl Drop for Spill {
    fn drop(&mut self) {
        // Best effort: the staging folder is removed with the run in any case.
        let _ = fs::remove_dir_all(&self.dir);
    }
}

impl Spill {
    /// Routes every row of `sources` to its part, decoding each file once (files in parallel on `pool`).
    pub(super) fn route(
        sources: &[&DataFile],
        n: u32,
        dir: &Path,
        pool: &rayon::ThreadPool,
    ) -> Result<Spill> {
        let parts = n.min(MAX_PARTS);
        fs::create_dir_all(dir).map_err(Error::io("creating directory", dir))?;
        let mut spill = Spill {
            dir: dir.to_path_buf(),
            parts,
            files: vec![Vec::new(); parts as usize],
        };
        let routed: Vec<Vec<(u32, PathBuf)>> = pool.install(|| {
            sources
                .par_iter()
                .enumerate()
                .with_max_len(1)
                .map(|(i, src)| route_file(src, i, parts, dir))
                .collect::<Result<_>>()
        })?;
        for (part, path) in routed.into_iter().flatten() {
            spill.files[part as usize].push(path);
        }
        Ok(spill)
    }

    /// Calls `f` with each spilled event of bucket `b` of `n`.
    pub(super) fn read_bucket(
        &self,
        b: u32,
        n: u32,
        f: &mut dyn FnMut(&str, &Event<'_>),
    ) -> Result<()> {
        let part = (b % self.parts) as usize;
        let filter = self.parts != n;
        for path in &self.files[part] {
            let file = DataFile::Local(path.clone());
            let open = File::open(path).map_err(Error::io("opening", path))?;
            let reader =
                StreamReader::try_new(BufReader::new(open), None).map_err(|e| file.cause(e))?;
            for batch in reader {
                let batch = batch.map_err(|e| file.cause(e))?;
                let cleared = column::<UInt32Array>(&batch, CLEARED, &file)?;
                let mask = |r: usize| cleared.value(r);
                let keep = |g: &str| !filter || bucket(g, n) == b;
                batch_events(&batch, &file, &mask, &keep, f)?;
            }
        }
        Ok(())
    }
}

/// Routes one `groups` file (the `i`th source): its rows, with their cleared masks, into one spill stream
/// per part it has rows for. Returns the streams written.
fn route_file(src: &DataFile, i: usize, parts: u32, dir: &Path) -> Result<Vec<(u32, PathBuf)>> {
    let (reader, cleared) = open_parquet(src, &groups_columns())?;
    let cleared_rows = cleared_masks(src, cleared)?;
    let mut writers: Vec<Option<(PathBuf, StreamWriter<BufWriter<File>>)>> =
        (0..parts).map(|_| None).collect();
    let mut row_base = 0u64;
    for batch in reader {
        let batch = batch.map_err(|e| src.cause(e))?;
        let rows = batch.num_rows();
        let gid = column::<StringArray>(&batch, Col::GroupId.column().name, src)?;
        let masks: UInt32Array = (0..rows)
            .map(|r| {
                cleared_rows
                    .get(&(row_base + r as u64))
                    .copied()
                    .unwrap_or(0)
            })
            .collect();
        let mut by_part: Vec<Vec<u32>> = vec![Vec::new(); parts as usize];
        for r in 0..rows {
            if gid.is_null(r) {
                return Err(src.error("null group_id".into()));
            }
            by_part[bucket(gid.value(r), parts) as usize].push(r as u32);
        }
        let batch = with_cleared(batch, masks).map_err(|e| src.cause(e))?;
        for (part, rows) in by_part.into_iter().enumerate() {
            if rows.is_empty() {
                continue;
            }
            let slot = &mut writers[part];
            if slot.is_none() {
                let path = dir.join(format!("{part:05}-{i:06}.arrows"));
                let file = File::create(&path).map_err(Error::io("creating", &path))?;
                let writer = StreamWriter::try_new(BufWriter::new(file), &batch.schema())
                    .map_err(|e| src.cause(e))?;
                *slot = Some((path, writer));
            }
            let part_batch =
                take_record_batch(&batch, &UInt32Array::from(rows)).map_err(|e| src.cause(e))?;
            if let Some((path, writer)) = slot {
                writer.write(&part_batch).map_err(write_error(path))?;
            }
        }
        row_base += rows as u64;
    }
    let mut written = Vec::new();
    for (part, slot) in writers.into_iter().enumerate() {
        if let Some((path, mut writer)) = slot {
            writer.finish().map_err(write_error(&path))?;
            written.push((part as u32, path));
        }
    }
    Ok(written)
}

/// The error of writing spill file `path`.
fn write_error(path: &Path) -> impl FnOnce(ArrowError) -> Error + '_ {
    move |e| Error::io("writing", path)(std::io::Error::other(e))
}

/// The batch with the [`CLEARED`] column added.
fn with_cleared(
    batch: RecordBatch,
    masks: UInt32Array,
) -> std::result::Result<RecordBatch, ArrowError> {
    let schema = batch.schema();
    let mut fields: Vec<Arc<Field>> = schema.fields().iter().cloned().collect();
    fields.push(Arc::new(Field::new(CLEARED, DataType::UInt32, false)));
    let mut columns = batch.columns().to_vec();
    columns.push(Arc::new(masks));
    RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use arrow::array::{ArrayRef, TimestampMicrosecondArray, new_null_array};
    use parquet::arrow::ArrowWriter;
    use parquet::file::metadata::KeyValue;
    use parquet::file::properties::WriterProperties;

    use super::*;
    use crate::schema::{self, COLUMNS};

    const ROWS: usize = 300;
    /// Rows whose `plan` the file's metadata records as cleared.
    const CLEARED_ROWS: [usize; 2] = [3, 200];

    /// A `groups` file of `ROWS` rows over 50 groups (`timestamp` = row number), every trait null, `plan`
    /// cleared on `CLEARED_ROWS`.
    fn groups_file(path: &Path) {
        let schema = schema::groups_schema();
        let columns: Vec<ArrayRef> = schema
            .fields()
            .iter()
            .map(|f| -> ArrayRef {
                match f.name().as_str() {
                    "group_id" => Arc::new(StringArray::from_iter_values(
                        (0..ROWS).map(|i| format!("g{}", i % 50)),
                    )),
                    "timestamp" => Arc::new(
                        TimestampMicrosecondArray::from_iter_values(0..ROWS as i64)
                            .with_timezone("UTC"),
                    ),
                    _ => new_null_array(f.data_type(), ROWS),
                }
            })
            .collect();
        let batch = RecordBatch::try_new(schema.clone(), columns).unwrap();
        let props = WriterProperties::builder()
            .set_key_value_metadata(Some(vec![KeyValue::new(
                schema::META_CLEARED_TRAITS.into(),
                format!("{{\"plan\":{CLEARED_ROWS:?}}}"),
            )]))
            .build();
        let mut w = ArrowWriter::try_new(File::create(path).unwrap(), schema, Some(props)).unwrap();
        w.write(&batch).unwrap();
        w.close().unwrap();
    }

    /// Routes the same file twice into `n` buckets and reads every bucket back: each row arrives twice, in its
    /// own bucket only, with its cleared `plan`; the spill folder is gone once the spill is dropped.
    fn round_trip(n: u32) {
        let tmp = tempfile::tempdir().unwrap();
        let file = DataFile::Local(tmp.path().join("g.parquet"));
        groups_file(&tmp.path().join("g.parquet"));
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .build()
            .unwrap();
        let dir = tmp.path().join("spill");
        let spill = Spill::route(&[&file, &file], n, &dir, &pool).unwrap();
        let plan = COLUMNS.iter().position(|c| c.name == "plan").unwrap()
            - COLUMNS.iter().position(|c| c.name == "name").unwrap();
        let mut seen: BTreeMap<i64, (usize, Option<Option<String>>)> = BTreeMap::new();
        for b in 0..n {
            spill
                .read_bucket(b, n, &mut |group, event| {
                    assert_eq!(bucket(group, n), b, "{group} read in bucket {b} of {n}");
                    assert_eq!(group, format!("g{}", event.timestamp % 50));
                    let e = seen.entry(event.timestamp).or_default();
                    e.0 += 1;
                    e.1 = event.columns[plan].clone().map(|v| v.map(String::from));
                })
                .unwrap();
        }
        assert_eq!(seen.len(), ROWS, "{n} buckets");
        for (ts, (times, plan)) in seen {
            assert_eq!(times, 2, "row {ts}, {n} buckets");
            let cleared = CLEARED_ROWS.contains(&(ts as usize));
            assert_eq!(plan, cleared.then_some(None), "row {ts}, {n} buckets");
        }
        assert!(dir.exists());
        drop(spill);
        assert!(!dir.exists(), "the spill folder is removed on drop");
    }

    #[test]
    fn routes_every_row_once_per_source_to_its_bucket_with_its_cleared_traits() {
        round_trip(4);
        // More buckets than spill parts: buckets share a part and filter it.
        round_trip(2 * MAX_PARTS);
    }
}
