//! Partitioning rows and writing them as Parquet, within a memory budget.
//!
//! Why this module exists: warehouse-friendly files (one file per partition per run, large row groups) and
//! a bounded memory footprint pull in opposite directions; this module owns that trade. Rows are appended to
//! per-partition Arrow builders in input order; a partition's buffer becomes a row group when it reaches the
//! row-group size, or earlier when all buffers together exceed the budget (largest first). Row groups of
//! different partitions are encoded in parallel. Files are written into the run's staging folder under names
//! no reader globs (`.parquet.partial`); [`crate::publish`] renames them into place.

mod file;
mod spill;

mod rewrite;
use spill::{Spill, Spilled};

use file::OpenFile;
pub use file::Origin;
pub(crate) use file::{
    ColumnBuilder, accounts_properties, arrow_writer, cleared_record, decode_cleared,
    empty_groups_file, encode_cleared, groups_properties,
};
pub(crate) use rewrite::{concatenate, rewrite_without};

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, sync_channel};

use arrow::array::{ArrayRef, RecordBatch};
use arrow::datatypes::SchemaRef;
use parquet::file::properties::WriterProperties;
use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::layout::{Codec, PartitionMode};
use crate::mapping::Row;
use crate::schema::{self, COLUMNS};

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

/// Sees every row group of the run before it is encoded, on the pool thread that encodes it: each row the
/// staged files hold, exactly once (the `accounts` fold during ingest is one). `cleared` holds `(row in
/// batch, mask)` of the rows that cleared a trait, as the file records them ([`encode_cleared`]).
pub trait RowGroupObserver: Send + Sync {
    /// `file`: the staged file the row group goes to (for messages).
    fn row_group(
        &self,
        file: &std::path::Path,
        batch: &RecordBatch,
        cleared: &[(u64, u32)],
    ) -> Result<()>;
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

/// A partition's file: none yet (or closed), open and idle, or lent to a pool task writing a row group.
enum Slot {
    Closed,
    Idle(Box<OpenFile>),
    /// A row group of `bytes` buffered bytes is being encoded (the `ticket`-th started); the file comes back
    /// through the channel.
    Busy {
        bytes: usize,
        ticket: u64,
        done: Receiver<(Box<OpenFile>, Result<()>)>,
    },
}

/// What a partition's buffer costs before its first row: its column builders (counted in the budget, so that
/// thousands of partitions with a row each are flushed like one large buffer).
const PARTITION_OVERHEAD: usize = 16 << 10;

/// Under budget pressure, a buffer smaller than this is spilled rather than written as a row group.
const TINY: usize = 64 << 10;

struct Partition {
    path: String,
    bucket: i64,
    /// Its rows went to the spill once: all its later rows do too, to stay after them.
    spilled: bool,
    /// The column builders of the buffered rows; none while nothing is buffered.
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
    fn new(path: String, bucket: i64) -> Self {
        Partition {
            path,
            bucket,
            spilled: false,
            builders: Vec::new(),
            buffered_rows: 0,
            buffered_bytes: 0,
            buffered_cleared: Vec::new(),
            buffered_origins: Vec::new(),
            slot: Slot::Closed,
            next_seq: 0,
            last_write: 0,
        }
    }

    /// Waits for the row group in flight, if any. Returns the bytes it held and its ticket.
    fn wait(&mut self) -> Result<Option<(usize, u64)>> {
        if !matches!(self.slot, Slot::Busy { .. }) {
            return Ok(None);
        }
        let Slot::Busy {
            bytes,
            ticket,
            done,
        } = std::mem::replace(&mut self.slot, Slot::Closed)
        else {
            return Ok(None);
        };
        match done.recv() {
            Ok((file, result)) => {
                self.slot = Slot::Idle(file);
                result.map(|()| Some((bytes, ticket)))
            }
            Err(_) => Err(Error::Internal(format!(
                "a row-group task of {} ended without answering",
                self.path
            ))),
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

/// The spilled rows of one partition, written at the end of the run as row groups of its file.
struct SpillJob {
    partition: usize,
    path: String,
    /// Its open file, or where to create one and its sequence number.
    file: std::result::Result<Box<OpenFile>, (PathBuf, u32)>,
    /// The rows of each row group, and their bytes.
    row_groups: Vec<(Vec<Spilled>, usize)>,
}

impl SpillJob {
    /// Adds rows, starting a new row group past `row_group_bytes`.
    fn add(&mut self, rows: Spilled, bytes: usize, row_group_bytes: usize) {
        match self.row_groups.last_mut() {
            Some((parts, b)) if *b < row_group_bytes => {
                parts.push(rows);
                *b += bytes;
            }
            _ => self.row_groups.push((vec![rows], bytes)),
        }
    }

    /// Writes the row groups and closes the file. Runs on a pool thread.
    fn run(
        self,
        schema: &SchemaRef,
        props: &WriterProperties,
        origins: bool,
        observer: Option<&dyn RowGroupObserver>,
    ) -> Result<StagedFile> {
        let mut file = match self.file {
            Ok(f) => f,
            Err((dir, seq)) => OpenFile::create(&dir, seq, schema.clone(), props.clone(), origins)?,
        };
        for (parts, _) in self.row_groups {
            file.write_parts(parts, schema, observer)?;
        }
        file.close(&self.path)
    }
}

/// Writes the rows of one run into per-partition Parquet files in a staging folder.
///
/// The caller appends rows in input order on its own thread; full buffers become row groups that are encoded
/// on the thread pool while the caller goes on. Row groups of one partition are written in order (a partition
/// waits for its previous row group before lending its file again), so the files do not depend on timing.
///
/// Every step costs the same however many partitions there are (a run over 200 years of hours has 1.7
/// million): the partitions holding rows, the row groups in flight and the open files are each kept in their
/// own index.
pub struct GroupsWriter {
    dir: PathBuf,
    config: WriterConfig,
    props: WriterProperties,
    schema: SchemaRef,
    pool: Arc<rayon::ThreadPool>,
    partitions: Vec<Partition>,
    by_bucket: HashMap<i64, usize>,
    /// Buffered bytes of every partition, their builders' [`PARTITION_OVERHEAD`] included.
    buffered_bytes: usize,
    /// The partitions holding buffered rows.
    buffering: BTreeSet<usize>,
    /// Row groups being encoded, by the order they were started (ticket -> partition), and their bytes.
    busy: BTreeMap<u64, usize>,
    in_flight: usize,
    tickets: u64,
    /// Partitions with an open file, by when they were last written (clock -> partition).
    open: BTreeMap<u64, usize>,
    clock: u64,
    finished: Vec<StagedFile>,
    /// Rows of small partitions held on disk until the end ([`spill`]).
    spill: Spill,
    observer: Option<Arc<dyn RowGroupObserver>>,
}

impl GroupsWriter {
    /// `dir`: the staging folder of `groups/`; row groups are encoded on `pool`.
    pub fn new(dir: PathBuf, config: WriterConfig, pool: Arc<rayon::ThreadPool>) -> Self {
        GroupsWriter {
            props: groups_properties(config.codec),
            config,
            schema: schema::groups_schema(),
            pool,
            partitions: Vec::new(),
            by_bucket: HashMap::new(),
            buffered_bytes: 0,
            buffering: BTreeSet::new(),
            busy: BTreeMap::new(),
            in_flight: 0,
            tickets: 0,
            open: BTreeMap::new(),
            clock: 0,
            finished: Vec::new(),
            spill: Spill::new(dir.with_extension("spill"), schema::groups_schema()),
            dir,
            observer: None,
        }
    }

    /// Shows every row group to `observer` before it is encoded.
    pub fn with_observer(mut self, observer: Arc<dyn RowGroupObserver>) -> Self {
        self.observer = Some(observer);
        self
    }

    /// Appends one row to its partition's buffer (in input order).
    pub fn append(&mut self, row: &Row<'_>, origin: Origin) {
        let t = row.partition_time();
        let bucket = self.config.partition.bucket(t);
        let mode = self.config.partition;
        let partitions = &mut self.partitions;
        let index = *self.by_bucket.entry(bucket).or_insert_with(|| {
            partitions.push(Partition::new(mode.path(t), bucket));
            partitions.len() - 1
        });
        let p = &mut self.partitions[index];
        let mut bytes = 0;
        if p.builders.is_empty() {
            p.builders = COLUMNS
                .iter()
                .map(|c| ColumnBuilder::small(c.kind))
                .collect();
            bytes += PARTITION_OVERHEAD;
            self.buffering.insert(index);
        }
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
    /// parallel). Of those, the small ones (and the partitions that spilled before) go to the spill instead.
    /// Called between chunks, so where row groups end depends on the input only.
    pub fn flush_due(&mut self) -> Result<()> {
        let mut due: Vec<usize> = self
            .buffering
            .iter()
            .copied()
            .filter(|&i| self.partitions[i].buffered_bytes >= self.config.row_group_bytes)
            .collect();
        if self.buffered_bytes > self.config.buffer_budget {
            let mut by_size: Vec<usize> = self
                .buffering
                .iter()
                .copied()
                .filter(|&i| self.partitions[i].buffered_bytes < self.config.row_group_bytes)
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
        let (spilled, direct): (Vec<usize>, Vec<usize>) = due.into_iter().partition(|&i| {
            let p = &self.partitions[i];
            p.spilled || p.buffered_bytes < TINY
        });
        self.spill_partitions(spilled)?;
        for i in direct {
            self.start_row_group(i)?;
        }
        Ok(())
    }

    /// The buffered rows of partition `i`, as one batch with their cleared masks and origins; the buffer is
    /// left empty.
    fn take_buffer(&mut self, i: usize) -> Result<Spilled> {
        let p = &mut self.partitions[i];
        let columns: Vec<ArrayRef> = p.builders.iter_mut().map(ColumnBuilder::finish).collect();
        p.builders = Vec::new();
        let batch = RecordBatch::try_new(self.schema.clone(), columns)?;
        let cleared = std::mem::take(&mut p.buffered_cleared);
        let origins = std::mem::take(&mut p.buffered_origins);
        self.buffered_bytes -= p.buffered_bytes;
        p.buffered_rows = 0;
        p.buffered_bytes = 0;
        self.buffering.remove(&i);
        Ok(Spilled {
            bucket: p.bucket,
            batch,
            cleared,
            origins,
        })
    }

    /// Moves the buffers of `partitions` to the spill, in bucket order.
    fn spill_partitions(&mut self, mut partitions: Vec<usize>) -> Result<()> {
        partitions.retain(|&i| self.partitions[i].buffered_rows > 0);
        if partitions.is_empty() {
            return Ok(());
        }
        partitions.sort_by_key(|&i| self.partitions[i].bucket);
        let mut parts = Vec::with_capacity(partitions.len());
        for i in partitions {
            self.partitions[i].spilled = true;
            parts.push(self.take_buffer(i)?);
        }
        self.spill.write(parts)
    }

    /// Waits for partition `i`'s row group in flight, if any.
    fn wait(&mut self, i: usize) -> Result<()> {
        if let Some((bytes, ticket)) = self.partitions[i].wait()? {
            self.in_flight -= bytes;
            self.busy.remove(&ticket);
        }
        Ok(())
    }

    /// Closes partition `i`'s file, if open.
    fn close(&mut self, i: usize) -> Result<()> {
        self.wait(i)?;
        self.open.remove(&self.partitions[i].last_write);
        if let Some(f) = self.partitions[i].close()? {
            self.finished.push(f);
        }
        Ok(())
    }

    /// Turns partition `i`'s buffer into a row group and hands it to the pool.
    fn start_row_group(&mut self, i: usize) -> Result<()> {
        if self.partitions[i].buffered_rows == 0 {
            return Ok(());
        }
        // Back-pressure: buffers plus row groups in flight stay within twice the budget (the oldest waited).
        while self.buffered_bytes + self.in_flight > 2 * self.config.buffer_budget {
            let Some((_, &j)) = self.busy.first_key_value() else {
                break;
            };
            self.wait(j)?;
        }
        self.wait(i)?;
        let file = self.take_file(i)?;
        let bytes = self.partitions[i].buffered_bytes;
        let rows = self.take_buffer(i)?;
        let (tx, rx) = sync_channel(1);
        self.tickets += 1;
        let ticket = self.tickets;
        self.partitions[i].slot = Slot::Busy {
            bytes,
            ticket,
            done: rx,
        };
        self.busy.insert(ticket, i);
        self.in_flight += bytes;
        let schema = self.schema.clone();
        let observer = self.observer.clone();
        self.pool.spawn(move || {
            let mut file = file;
            let result = file.write_parts(vec![rows], &schema, observer.as_deref());
            // Released before the result is sent: once the writer has every result, it holds the only share
            // of the observer, and the caller can take it back.
            drop(observer);
            let _ = tx.send((file, result));
        });
        Ok(())
    }

    /// The open file of partition `i` (which is not busy), opening one if needed: closing the least recently
    /// written file when too many are open, and rolling over to a new file past the size limit.
    fn take_file(&mut self, i: usize) -> Result<Box<OpenFile>> {
        self.clock += 1;
        let was_open = self.open.remove(&self.partitions[i].last_write).is_some();
        self.partitions[i].last_write = self.clock;
        self.open.insert(self.clock, i);
        if was_open
            && let Slot::Idle(f) = std::mem::replace(&mut self.partitions[i].slot, Slot::Closed)
        {
            if f.writer.bytes_written() < self.config.file_max_bytes {
                return Ok(f);
            }
            let path = self.partitions[i].path.clone();
            self.finished.push(f.close(&path)?);
        }
        if self.open.len() > self.config.max_open_files.max(1)
            && let Some((_, &lru)) = self.open.first_key_value()
        {
            self.close(lru)?;
        }
        let p = &mut self.partitions[i];
        let seq = p.next_seq;
        p.next_seq += 1;
        OpenFile::create(
            &self.dir.join(&p.path),
            seq,
            self.schema.clone(),
            self.props.clone(),
            self.config.origins,
        )
    }

    /// Writes every partition that spilled: its spilled rows (merged from the spill files, in bucket order),
    /// then what it still buffers, in row groups of up to the row-group size; then its file is closed. The
    /// partitions are written on the pool, a wave of up to the buffer budget's bytes at a time.
    fn write_spilled(&mut self) -> Result<()> {
        let mut wave: Vec<SpillJob> = Vec::new();
        let mut wave_bytes = 0;
        let mut job: Option<SpillJob> = None;
        for s in self.spill.merged()? {
            let s = s?;
            let Some(&i) = self.by_bucket.get(&s.bucket) else {
                return Err(Error::Internal(format!(
                    "spilled rows of an unknown partition (bucket {})",
                    s.bucket
                )));
            };
            if let Some(done) = job.take_if(|j| j.partition != i) {
                wave.push(self.last_rows(done)?);
            }
            if wave_bytes >= self.config.buffer_budget {
                self.run_wave(std::mem::take(&mut wave))?;
                wave_bytes = 0;
            }
            let bytes = s.batch.get_array_memory_size();
            wave_bytes += bytes;
            match job.as_mut() {
                Some(j) => j.add(s, bytes, self.config.row_group_bytes),
                None => job = Some(self.spill_job(i, s, bytes)?),
            }
        }
        if let Some(done) = job {
            wave.push(self.last_rows(done)?);
        }
        self.run_wave(wave)
    }

    /// The job that writes partition `i`'s spilled rows, starting with `first`: into its open file (rows it
    /// wrote before it spilled), or a new one.
    fn spill_job(&mut self, i: usize, first: Spilled, bytes: usize) -> Result<SpillJob> {
        self.wait(i)?;
        self.open.remove(&self.partitions[i].last_write);
        let p = &mut self.partitions[i];
        let file = match std::mem::replace(&mut p.slot, Slot::Closed) {
            Slot::Idle(f) => Ok(f),
            _ => {
                let seq = p.next_seq;
                p.next_seq += 1;
                Err((self.dir.join(&p.path), seq))
            }
        };
        Ok(SpillJob {
            partition: i,
            path: p.path.clone(),
            file,
            row_groups: vec![(vec![first], bytes)],
        })
    }

    /// `job` with the rows its partition still buffers as its last row group.
    fn last_rows(&mut self, mut job: SpillJob) -> Result<SpillJob> {
        if self.partitions[job.partition].buffered_rows > 0 {
            let rest = self.take_buffer(job.partition)?;
            job.row_groups.push((vec![rest], 0));
        }
        Ok(job)
    }

    /// Runs a wave of spill jobs on the pool; their files are finished.
    fn run_wave(&mut self, wave: Vec<SpillJob>) -> Result<()> {
        let (schema, props, origins) = (&self.schema, &self.props, self.config.origins);
        let observer = self.observer.as_deref();
        let staged: Vec<StagedFile> = self.pool.install(|| {
            wave.into_par_iter()
                .with_max_len(1)
                .map(|job| job.run(schema, props, origins, observer))
                .collect::<Result<_>>()
        })?;
        self.finished.extend(staged);
        Ok(())
    }

    /// Writes every remaining buffer and closes every file. Returns the files, by partition and sequence.
    pub fn finish(mut self) -> Result<Vec<StagedFile>> {
        let buffering: Vec<usize> = self
            .buffering
            .iter()
            .copied()
            .filter(|&i| !self.partitions[i].spilled)
            .collect();
        for i in buffering {
            self.start_row_group(i)?;
        }
        // Wait here, off the pool: a pool thread blocked on a task queued behind it could wait forever.
        let busy: Vec<usize> = self.busy.values().copied().collect();
        for i in busy {
            self.wait(i)?;
        }
        if !self.spill.is_empty() {
            self.write_spilled()?;
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

    /// A writer of `partition` rows into `dir`, with a buffer budget small enough for 300 one-row partitions
    /// to exceed it.
    fn small_writer(dir: &std::path::Path, budget: usize) -> GroupsWriter {
        let pool = Arc::new(
            rayon::ThreadPoolBuilder::new()
                .num_threads(2)
                .build()
                .unwrap(),
        );
        let config = WriterConfig {
            partition: PartitionMode::Day,
            codec: Codec::Zstd,
            row_group_bytes: 1 << 20,
            buffer_budget: budget,
            file_max_bytes: 1 << 30,
            max_open_files: 4,
            origins: true,
        };
        GroupsWriter::new(dir.join("groups"), config, pool)
    }

    /// The ids of a staged file, in row order, and its cleared-traits metadata.
    fn file_ids(f: &StagedFile) -> (Vec<String>, Option<String>) {
        use arrow::array::{Array, StringArray};
        let file = std::fs::File::open(&f.staged).unwrap();
        let builder =
            parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file).unwrap();
        let cleared = builder
            .metadata()
            .file_metadata()
            .key_value_metadata()
            .and_then(|kv| kv.iter().find(|k| k.key == schema::META_CLEARED_TRAITS))
            .and_then(|k| k.value.clone());
        let mut ids = Vec::new();
        for batch in builder.build().unwrap() {
            let batch = batch.unwrap();
            let col = batch.column_by_name("id").unwrap();
            let col = col.as_any().downcast_ref::<StringArray>().unwrap();
            ids.extend((0..col.len()).map(|i| col.value(i).to_string()));
        }
        (ids, cleared)
    }

    #[test]
    fn many_small_partitions_spill_and_come_back_whole_and_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = small_writer(dir.path(), 256 << 10);
        let days = 300;
        for k in 0..1500u64 {
            let day = chrono::NaiveDate::from_ymd_opt(2000, 1, 1).unwrap()
                + chrono::Duration::days((k % days) as i64);
            // Every 7th event clears its name (sent as null): the cleared record must follow the row.
            let name = if k.is_multiple_of(7) {
                "null".to_string()
            } else {
                format!("\"n{k}\"")
            };
            let line = format!(
                r#"{{"type":"group","messageId":"m{k}","groupId":"g","userId":"u","timestamp":"{day}T00:00:00Z","traits":{{"name":{name}}}}}"#
            );
            let entries = crate::json::Entries::parse(&line).unwrap();
            let row = crate::mapping::map_group(&entries).unwrap();
            let origin = Origin {
                input: 0,
                line: k + 1,
                offset: k * 100,
                index: u32::MAX,
            };
            w.append(&row, origin);
            if k % 50 == 49 {
                w.flush_due().unwrap();
            }
        }
        assert!(
            !w.spill.is_empty(),
            "300 one-row partitions over the budget spill"
        );
        let files = w.finish().unwrap();
        assert_eq!(files.len(), days as usize, "one file a partition");
        for f in &files {
            let day = chrono::NaiveDate::parse_from_str(&f.partition, "dt=%Y-%m-%d").unwrap();
            let d = (day - chrono::NaiveDate::from_ymd_opt(2000, 1, 1).unwrap()).num_days() as u64;
            let expected: Vec<u64> = (0..1500).filter(|k| k % days == d).collect();
            let (ids, cleared) = file_ids(f);
            let want: Vec<String> = expected.iter().map(|k| format!("m{k}")).collect();
            assert_eq!(ids, want, "{}: rows in input order", f.partition);
            let origins = Origin::read_all(f.origins.as_ref().unwrap()).unwrap();
            let lines: Vec<u64> = origins.iter().map(|o| o.line).collect();
            assert_eq!(lines, expected.iter().map(|k| k + 1).collect::<Vec<_>>());
            let rows: Vec<usize> = (0..expected.len())
                .filter(|&r| expected[r].is_multiple_of(7))
                .collect();
            let want_cleared =
                (!rows.is_empty()).then(|| serde_json::json!({ "name": rows }).to_string());
            assert_eq!(cleared, want_cleared, "{}", f.partition);
        }
    }

    #[test]
    fn a_partition_that_spilled_keeps_its_earlier_rows_first() {
        // Day A gets a large buffer (written as a row group of its own), then rows trickle in with many tiny
        // partitions around them, so A spills; A's file must hold its rows in input order.
        let dir = tempfile::tempdir().unwrap();
        let mut w = small_writer(dir.path(), 512 << 10);
        let mut expected = Vec::new();
        let mut k = 0u64;
        let mut push = |w: &mut GroupsWriter, day: &str, pad: usize| {
            let line = format!(
                r#"{{"type":"group","messageId":"m{k}","groupId":"g","userId":"u","timestamp":"{day}T00:00:00Z","traits":{{"note":"{}"}}}}"#,
                "x".repeat(pad)
            );
            let entries = crate::json::Entries::parse(&line).unwrap();
            let row = crate::mapping::map_group(&entries).unwrap();
            w.append(&row, Origin::NONE);
            if day == "2001-01-01" {
                expected.push(format!("m{k}"));
            }
            k += 1;
        };
        for _ in 0..600 {
            push(&mut w, "2001-01-01", 1000);
        }
        w.flush_due().unwrap();
        for round in 0..40 {
            for d in 0..30 {
                push(&mut w, &format!("1990-02-{:02}", 1 + (d + round) % 28), 10);
            }
            push(&mut w, "2001-01-01", 10);
            w.flush_due().unwrap();
        }
        assert!(!w.spill.is_empty());
        // A is large again: its buffer would be a row group of its own, ahead of its spilled rows.
        for _ in 0..600 {
            push(&mut w, "2001-01-01", 1000);
        }
        w.flush_due().unwrap();
        let files = w.finish().unwrap();
        let a: Vec<&StagedFile> = files
            .iter()
            .filter(|f| f.partition == "dt=2001-01-01")
            .collect();
        let ids: Vec<String> = a.iter().flat_map(|f| file_ids(f).0).collect();
        assert_eq!(ids, expected);
    }
}
