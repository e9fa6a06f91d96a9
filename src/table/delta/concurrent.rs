//! Duplicates of concurrent commits (SPEC §6.3, last bullet): runs and shards that commit to one table at the
//! same time still load each `id` once.
//!
//! Why this module exists: a run compares its events with the ids already in the table when it starts reading
//! ([`crate::dedupe`]). Another run can commit the same ids while this one reads. So before each commit
//! attempt, the files committed since (in partitions within the dedupe window of this run's) are read (their
//! `id` column only), and this run's staged rows with those ids are dropped: the staged file is rewritten
//! without them and uploaded again, and each dropped row goes to the rejects file as a duplicate of an
//! earlier run, with its input, line and offset (kept beside the staged file as its rows' origins). The row
//! that committed first is kept, whatever order the shards commit in.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use arrow::array::{Array, BooleanArray, StringArray};
use arrow::compute::filter_record_batch;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::file::metadata::KeyValue;

use super::Pending;
use crate::datafile::DataFile;
use crate::dedupe::{EarlierIds, Reach};
use crate::error::{Error, Result};
use crate::layout::Codec;
use crate::lines::Line;
use crate::reject::Reject;
use crate::rejects::RejectsWriter;
use crate::report::Report;
use crate::schema::{self, COLUMNS, Col};
use crate::writer::{self, Origin, StagedFile};

/// What dropping needs to know about the run.
pub(super) struct Dropping<'a> {
    pub reach: Reach,
    /// Memory the ids read may take.
    pub budget: u64,
    pub codec: Codec,
    /// The run's rejects file (added to).
    pub rejects: &'a Path,
}

/// Drops the pending rows whose ids the `new` files (committed since the run started) hold within the window.
/// Returns the files that changed (to upload again); updates the counts of `report`.
pub(super) fn drop_duplicates(
    pending: &mut [Pending],
    new: Vec<(i64, Vec<DataFile>)>,
    how: &Dropping<'_>,
    report: &mut Report,
) -> Result<Vec<usize>> {
    let mut earlier = EarlierIds::new(how.reach, new, how.budget, "--memory-limit".into());
    earlier.ensure(pending.iter().map(|p| p.bucket))?;
    let mut changed = Vec::new();
    let mut rejects = RejectsWriter::appending(how.rejects.to_path_buf());
    for (i, p) in pending.iter_mut().enumerate() {
        let ids = read_ids(&p.staged.staged)?;
        let dups: Vec<(usize, &str)> = ids
            .iter()
            .enumerate()
            .filter_map(|(r, id)| {
                let id = id.as_deref().filter(|s| !s.is_empty())?;
                earlier.find(id, p.bucket).map(|_| (r, id))
            })
            .collect();
        if dups.is_empty() {
            continue;
        }
        // The rejects records, from the rows' origins.
        let origins = match &p.staged.origins {
            Some(path) => Origin::read_all(path)?,
            None => Vec::new(),
        };
        for (r, id) in &dups {
            let Some(o) = origins.get(*r) else {
                continue;
            };
            let file = report
                .inputs
                .get(o.input as usize)
                .map_or("", |i| i.path.as_str());
            let line = Line {
                range: 0..0,
                number: o.line,
                offset: o.offset,
                too_long: None,
            };
            let reject =
                Reject::duplicate(id, "already loaded by a concurrent run's commit".into());
            rejects.write(file, &line, o.batch_index(), b"", &reject)?;
        }
        let k = dups.len() as u64;
        let drop: Vec<usize> = dups.iter().map(|(r, _)| *r).collect();
        p.staged = rewrite_without(&p.staged, &drop, &origins, how.codec)?;
        let c = &mut report.counts;
        c.rows_written -= k;
        c.duplicates.earlier_runs += k;
        *c.rejected
            .entry(crate::reject::Reason::DuplicateMessageId.as_str())
            .or_insert(0) += k;
        if let Some(commit) = report.commit.as_mut() {
            commit.concurrent_duplicates += k;
        }
        changed.push(i);
    }
    rejects.finish()?;
    Ok(changed)
}

/// The `id` column of a staged file.
fn read_ids(path: &Path) -> Result<Vec<Option<String>>> {
    let file = DataFile::Local(path.to_path_buf());
    let builder = file.reader()?;
    let mask = parquet::arrow::ProjectionMask::roots(builder.parquet_schema(), [Col::Id as usize]);
    let reader = builder
        .with_projection(mask)
        .build()
        .map_err(|e| file.error(e.to_string()))?;
    let mut ids = Vec::new();
    for batch in reader {
        let batch = batch.map_err(|e| file.error(e.to_string()))?;
        let col = batch
            .column(0)
            .as_any()
            .downcast_ref::<StringArray>()
            .ok_or_else(|| file.error("the id column is not text".into()))?;
        ids.extend((0..col.len()).map(|i| col.is_valid(i).then(|| col.value(i).to_string())));
    }
    Ok(ids)
}

/// A copy of a staged file without rows `drop` (sorted), its cleared-traits metadata and origins renumbered.
fn rewrite_without(
    staged: &StagedFile,
    drop: &[usize],
    origins: &[Origin],
    codec: Codec,
) -> Result<StagedFile> {
    let from = &staged.staged;
    let to = from.with_extension("rewritten");
    let err = |e: String| Error::Dataset {
        path: from.clone(),
        message: e,
    };
    let input = std::fs::File::open(from).map_err(Error::io("opening", from))?;
    let builder =
        ParquetRecordBatchReaderBuilder::try_new(input).map_err(|e| err(e.to_string()))?;
    let cleared = builder
        .metadata()
        .file_metadata()
        .key_value_metadata()
        .and_then(|kv| kv.iter().find(|k| k.key == schema::META_CLEARED_TRAITS))
        .and_then(|k| k.value.clone());
    let reader = builder.build().map_err(|e| err(e.to_string()))?;
    let file = std::fs::File::create(&to).map_err(Error::io("creating", &to))?;
    let mut out = writer::arrow_writer(
        file,
        schema::groups_schema(),
        writer::groups_properties(codec),
    )
    .map_err(|source| Error::Parquet {
        path: to.clone(),
        source,
    })?;
    // Old row number -> new one (None: dropped).
    let mut dropped = drop.iter().peekable();
    let mut kept = 0u64;
    let mut renumber: Vec<Option<u64>> = Vec::new();
    let mut row = 0usize;
    for batch in reader {
        let batch = batch.map_err(|e| err(e.to_string()))?;
        let mask: BooleanArray = (0..batch.num_rows())
            .map(|_| {
                let keep = dropped.peek() != Some(&&row);
                if keep {
                    renumber.push(Some(kept));
                    kept += 1;
                } else {
                    dropped.next();
                    renumber.push(None);
                }
                row += 1;
                Some(keep)
            })
            .collect();
        let filtered = filter_record_batch(&batch, &mask)?;
        let filtered = arrow::array::RecordBatch::try_new(
            schema::groups_schema(),
            filtered.columns().to_vec(),
        )?;
        out.write(&filtered).map_err(|source| Error::Parquet {
            path: to.clone(),
            source,
        })?;
    }
    if let Some(json) = cleared {
        let rows = renumber_cleared(&json, &renumber).map_err(err)?;
        if !rows.is_empty() {
            out.append_key_value_metadata(KeyValue::new(
                schema::META_CLEARED_TRAITS.to_string(),
                writer::cleared_json(&rows),
            ));
        }
    }
    let file = out.into_inner().map_err(|source| Error::Parquet {
        path: to.clone(),
        source,
    })?;
    file.sync_all().map_err(Error::io("syncing", &to))?;
    let bytes = file.metadata().map_err(Error::io("reading", &to))?.len();
    let origins_to = match &staged.origins {
        Some(_) => Some(write_kept_origins(&to, origins, &renumber)?),
        None => None,
    };
    std::fs::rename(&to, from).map_err(Error::io("renaming", from))?;
    let origins = match origins_to {
        Some(p) => {
            let at: PathBuf = from.with_extension("origins");
            std::fs::rename(&p, &at).map_err(Error::io("renaming", &at))?;
            Some(at)
        }
        None => None,
    };
    Ok(StagedFile {
        rows: kept,
        bytes,
        origins,
        ..staged.clone()
    })
}

/// The cleared-traits metadata of a file (column -> old row numbers) renumbered after rows were dropped, as
/// `(new row, column bit)` pairs.
fn renumber_cleared(
    json: &str,
    renumber: &[Option<u64>],
) -> std::result::Result<Vec<(u64, u32)>, String> {
    let by_col: BTreeMap<String, Vec<u64>> =
        serde_json::from_str(json).map_err(|e| format!("bad cleared traits: {e}"))?;
    let mut rows: Vec<(u64, u32)> = Vec::new();
    for (name, old) in by_col {
        let Some(c) = COLUMNS.iter().position(|c| c.name == name) else {
            continue;
        };
        rows.extend(
            old.iter()
                .filter_map(|r| renumber.get(*r as usize).copied().flatten())
                .map(|r| (r, 1u32 << c)),
        );
    }
    Ok(rows)
}

/// Writes the origins of the rows kept beside the rewritten file `to`; returns where.
fn write_kept_origins(to: &Path, origins: &[Origin], renumber: &[Option<u64>]) -> Result<PathBuf> {
    let p = to.with_extension("rewritten-origins");
    let mut buf = Vec::with_capacity(origins.len() * Origin::BYTES);
    for (o, n) in origins.iter().zip(renumber) {
        if n.is_some() {
            o.write(&mut buf).map_err(Error::io("writing", &p))?;
        }
    }
    std::fs::write(&p, buf).map_err(Error::io("writing", &p))?;
    Ok(p)
}
