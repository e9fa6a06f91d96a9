//! A staged `groups` file rewritten without some of its rows, its cleared-traits record and its rows'
//! origins renumbered.
//!
//! Why this module exists: a Delta run drops, just before its commit, the rows a concurrent commit already
//! loaded ([`crate::table::delta`]); the file it then uploads must be one the writer could have written
//! (same properties, same metadata), so the rewrite lives beside the writer that owns the file's format.

use std::path::{Path, PathBuf};

use arrow::array::BooleanArray;
use arrow::compute::filter_record_batch;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::file::metadata::KeyValue;

use super::{Origin, StagedFile};
use crate::error::{Error, Result};
use crate::layout::Codec;
use crate::schema;

/// A copy of a staged file without rows `drop` (sorted), its cleared-traits metadata and origins renumbered.
pub(crate) fn rewrite_without(
    staged: &StagedFile,
    drop: &[usize],
    origins: &[Origin],
    codec: Codec,
) -> Result<StagedFile> {
    let from = &staged.staged;
    let to = from.with_extension("rewritten");
    let err = |e: Box<dyn std::error::Error + Send + Sync>| Error::DatasetRead {
        path: from.clone(),
        source: e,
    };
    let input = std::fs::File::open(from).map_err(Error::io("opening", from))?;
    let builder = ParquetRecordBatchReaderBuilder::try_new(input).map_err(|e| err(e.into()))?;
    let cleared = super::cleared_record(builder.metadata().file_metadata());
    let reader = builder.build().map_err(|e| err(e.into()))?;
    let file = std::fs::File::create(&to).map_err(Error::io("creating", &to))?;
    let mut out = super::arrow_writer(
        file,
        schema::groups_schema(),
        super::groups_properties(codec),
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
        let batch = batch.map_err(|e| err(e.into()))?;
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
        let rows = renumber_cleared(&json, &renumber).map_err(|e| err(e.into()))?;
        if !rows.is_empty() {
            out.append_key_value_metadata(KeyValue::new(
                schema::META_CLEARED_TRAITS.to_string(),
                super::encode_cleared(&rows),
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

/// The cleared-traits record of a file renumbered after rows were dropped.
fn renumber_cleared(
    json: &str,
    renumber: &[Option<u64>],
) -> std::result::Result<super::file::Cleared, serde_json::Error> {
    Ok(super::decode_cleared(json)?
        .into_iter()
        .filter_map(|(r, mask)| Some((renumber.get(r as usize).copied().flatten()?, mask)))
        .collect())
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

/// Writes the rows of `sources` (groups files, in this order) into one new file `into`, with the writer's
/// properties, row groups cut after about `row_group_bytes` of Arrow data and the sources' cleared-traits records joined (their
/// rows renumbered after the rows before them). Refuses (exit 2) a source whose columns are not the `groups`
/// schema: a file the tool did not write. Returns the rows and bytes written.
pub(crate) fn concatenate(
    sources: &[PathBuf],
    into: &Path,
    codec: Codec,
    row_group_bytes: usize,
) -> Result<(u64, u64)> {
    let wanted = schema::groups_schema();
    let file = std::fs::File::create(into).map_err(Error::io("creating", into))?;
    let mut out = super::arrow_writer(file, wanted.clone(), super::groups_properties(codec))
        .map_err(|source| Error::Parquet {
            path: into.to_path_buf(),
            source,
        })?;
    let parquet_err = |source| Error::Parquet {
        path: into.to_path_buf(),
        source,
    };
    let mut cleared = Vec::new();
    let mut rows = 0u64;
    // The rows buffered for the row group, as Arrow holds them (what a load's row groups are cut by): readers
    // split work by row group, so a large file keeps row groups of a load's size.
    let mut buffered = 0usize;
    for from in sources {
        let err = |e: Box<dyn std::error::Error + Send + Sync>| Error::DatasetRead {
            path: from.clone(),
            source: e,
        };
        let input = std::fs::File::open(from).map_err(Error::io("opening", from))?;
        let builder = ParquetRecordBatchReaderBuilder::try_new(input).map_err(|e| err(e.into()))?;
        if !same_columns(builder.schema(), &wanted) {
            return Err(foreign_file(from));
        }
        if let Some(json) = super::cleared_record(builder.metadata().file_metadata()) {
            let offset = rows;
            let record = super::decode_cleared(&json).map_err(|e| err(e.into()))?;
            cleared.extend(record.into_iter().map(|(r, mask)| (r + offset, mask)));
        }
        for batch in builder.build().map_err(|e| err(e.into()))? {
            let batch = batch.map_err(|e| err(e.into()))?;
            rows += batch.num_rows() as u64;
            let batch =
                arrow::array::RecordBatch::try_new(wanted.clone(), batch.columns().to_vec())?;
            buffered += batch.get_array_memory_size();
            out.write(&batch).map_err(parquet_err)?;
            if buffered >= row_group_bytes {
                out.flush().map_err(parquet_err)?;
                buffered = 0;
            }
        }
    }
    if !cleared.is_empty() {
        cleared.sort_unstable();
        out.append_key_value_metadata(KeyValue::new(
            schema::META_CLEARED_TRAITS.to_string(),
            super::encode_cleared(&cleared),
        ));
    }
    let file = out.into_inner().map_err(parquet_err)?;
    file.sync_all().map_err(Error::io("syncing", into))?;
    let bytes = file.metadata().map_err(Error::io("reading", into))?.len();
    Ok((rows, bytes))
}

/// True when `found` has the columns of `wanted`, by name and type, in order (field metadata aside).
fn same_columns(found: &arrow::datatypes::SchemaRef, wanted: &arrow::datatypes::SchemaRef) -> bool {
    found.fields().len() == wanted.fields().len()
        && found
            .fields()
            .iter()
            .zip(wanted.fields())
            .all(|(a, b)| a.name() == b.name() && a.data_type() == b.data_type())
}

/// The refusal of a data file the tool did not write.
fn foreign_file(path: &Path) -> Error {
    Error::Usage(format!(
        "{} does not have the columns of the groups table: it was not written by group-loader (or by a \
         version with another schema). Nothing was changed; move the file out of the dataset, or leave its \
         partition out of the compaction (--from/--to)",
        path.display()
    ))
}
