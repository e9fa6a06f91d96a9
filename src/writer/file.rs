//! One `groups` (or `accounts`) Parquet file: the properties every file of the dataset shares, the Arrow
//! builders that fill a row group, an open file taking row groups, and the origins kept beside a staged file.
//!
//! Why this module exists: what makes a file of the dataset (codec, dictionaries, the JSON logical type,
//! the tool's metadata, the cleared-traits record) is one contract that the `groups` writer, the `accounts`
//! writer and the concurrent-duplicates rewrite all follow; it lives apart from the policy of when row groups
//! are cut ([`super::GroupsWriter`]).

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{ArrayRef, RecordBatch, StringBuilder, TimestampMicrosecondBuilder};
use arrow::datatypes::SchemaRef;
use parquet::arrow::ArrowWriter;
use parquet::file::metadata::KeyValue;
use parquet::file::properties::WriterProperties;
use parquet::schema::types::ColumnPath;

use super::spill::Spilled;
use super::{RowGroupObserver, StagedFile};
use crate::error::{Error, Result};
use crate::layout::Codec;
use crate::mapping::Cell;
use crate::schema::{self, COLUMNS, Col, Kind};

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
    /// No origin (the writer keeps none).
    pub const NONE: Origin = Origin {
        input: 0,
        line: 0,
        offset: 0,
        index: u32::MAX,
    };

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

    /// A builder that starts with room for a few values only: a partition's buffer may hold one row, and there
    /// may be thousands of partitions (the buffers grow by doubling as rows arrive).
    pub(super) fn small(kind: Kind) -> Self {
        match kind {
            Kind::Text | Kind::Json => ColumnBuilder::Text(StringBuilder::with_capacity(8, 64)),
            Kind::Time => ColumnBuilder::Time(
                TimestampMicrosecondBuilder::with_capacity(8).with_timezone("UTC"),
            ),
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

pub(super) struct OpenFile {
    pub(super) writer: ArrowWriter<File>,
    pub(super) path: PathBuf,
    pub(super) seq: u32,
    pub(super) rows: u64,
    /// `(row in file, Row::cleared)` for rows that sent a reserved trait without a value.
    pub(super) cleared: Vec<(u64, u32)>,
    /// The rows' origins, in row order (when kept).
    pub(super) origins: Option<(PathBuf, std::io::BufWriter<File>)>,
}

impl OpenFile {
    /// A new file `part-<seq>.parquet.partial` in `dir` (created if missing), with its origins file beside it
    /// when `origins` are kept.
    pub(super) fn create(
        dir: &Path,
        seq: u32,
        schema: SchemaRef,
        props: WriterProperties,
        origins: bool,
    ) -> Result<Box<OpenFile>> {
        fs::create_dir_all(dir).map_err(Error::io("creating directory", dir))?;
        let path = dir.join(format!("part-{seq:05}.parquet.partial"));
        let origins_path = path.with_extension("origins");
        let file = File::create(&path).map_err(Error::io("creating", &path))?;
        let writer = arrow_writer(file, schema, props).map_err(|source| Error::Parquet {
            path: path.clone(),
            source,
        })?;
        Ok(Box::new(OpenFile {
            writer,
            path,
            seq,
            rows: 0,
            cleared: Vec::new(),
            origins: if origins {
                let f =
                    File::create(&origins_path).map_err(Error::io("creating", &origins_path))?;
                Some((origins_path, std::io::BufWriter::new(f)))
            } else {
                None
            },
        }))
    }

    /// Writes `parts` (rows of the file's partition, in order, with their cleared traits and origins) as one
    /// row group. Runs on a pool thread.
    /// `observer`, when given, sees the row group before it is encoded.
    pub(super) fn write_parts(
        &mut self,
        parts: Vec<Spilled>,
        schema: &SchemaRef,
        observer: Option<&dyn RowGroupObserver>,
    ) -> Result<()> {
        let base = self.rows;
        let mut offset = 0u64;
        let mut origins = Vec::new();
        let mut batches = Vec::with_capacity(parts.len());
        let first_cleared = self.cleared.len();
        for p in parts {
            self.cleared.extend(
                p.cleared
                    .iter()
                    .map(|&(r, mask)| (base + offset + u64::from(r), mask)),
            );
            offset += p.batch.num_rows() as u64;
            origins.extend(p.origins);
            batches.push(p.batch);
        }
        if offset == 0 {
            return Ok(());
        }
        let batch = match batches.len() {
            1 => batches.swap_remove(0),
            _ => arrow::compute::concat_batches(schema, &batches)?,
        };
        drop(batches);
        if let Some(observer) = observer {
            let cleared: Vec<(u64, u32)> = self.cleared[first_cleared..]
                .iter()
                .map(|&(r, mask)| (r - base, mask))
                .collect();
            observer.row_group(&self.path, &batch, &cleared)?;
        }
        self.write_row_group(&batch, &origins)
    }

    /// Writes one batch as one row group, and its rows' origins. Runs on a pool thread.
    pub(super) fn write_row_group(
        &mut self,
        batch: &RecordBatch,
        origins: &[Origin],
    ) -> Result<()> {
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
    pub(super) fn close(mut self, partition: &str) -> Result<StagedFile> {
        if !self.cleared.is_empty() {
            self.writer.append_key_value_metadata(KeyValue::new(
                schema::META_CLEARED_TRAITS.to_string(),
                encode_cleared(&self.cleared),
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

/// A `groups` file with no rows (the schema and the tool's metadata only), at `path`: what a conversion of an
/// input without a single row gives, so that a reader finds an empty table rather than no file.
pub(crate) fn empty_groups_file(path: &Path, codec: Codec) -> Result<StagedFile> {
    let file = File::create(path).map_err(Error::io("creating", path))?;
    let parquet_err = |source| Error::Parquet {
        path: path.to_path_buf(),
        source,
    };
    let writer = arrow_writer(file, schema::groups_schema(), groups_properties(codec))
        .map_err(parquet_err)?;
    let inner = writer.into_inner().map_err(parquet_err)?;
    inner.sync_all().map_err(Error::io("syncing", path))?;
    let bytes = inner.metadata().map_err(Error::io("reading", path))?.len();
    Ok(StagedFile {
        partition: String::new(),
        seq: 0,
        staged: path.to_path_buf(),
        rows: 0,
        bytes,
        origins: None,
    })
}

/// Which rows cleared which reserved traits (sent as `null` or empty), as a groups file records it in its
/// [`schema::META_CLEARED_TRAITS`] metadata: `(row, mask)` pairs, where bit `c` of `mask` is column `c` of
/// [`COLUMNS`] (the one bit convention of the writer, the accounts merge and the concurrent-duplicates
/// rewrite). [`encode_cleared`] and [`decode_cleared`] are the only two ends of that record.
pub(crate) type Cleared = Vec<(u64, u32)>;

/// The record of `cleared`: `{"column": [row, ...], ...}`, columns in schema order, rows ascending.
pub(crate) fn encode_cleared(cleared: &[(u64, u32)]) -> String {
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

/// The pairs of a record [`encode_cleared`] wrote (a column the schema no longer has is skipped).
pub(crate) fn decode_cleared(json: &str) -> std::result::Result<Cleared, serde_json::Error> {
    let by_col: BTreeMap<String, Vec<u64>> = serde_json::from_str(json)?;
    let mut cleared = Vec::new();
    for (name, rows) in by_col {
        let Some(c) = COLUMNS.iter().position(|c| c.name == name) else {
            continue;
        };
        cleared.extend(rows.into_iter().map(|r| (r, 1u32 << c)));
    }
    Ok(cleared)
}

/// The cleared-traits record of a file, from its footer.
pub(crate) fn cleared_record(meta: &parquet::file::metadata::FileMetaData) -> Option<String> {
    meta.key_value_metadata()
        .and_then(|kv| kv.iter().find(|k| k.key == schema::META_CLEARED_TRAITS))
        .and_then(|k| k.value.clone())
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

#[cfg(test)]
mod tests {
    use super::*;

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
