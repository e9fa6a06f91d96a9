//! A Parquet file of the dataset, wherever it lies: on the local disk, or in object storage.
//!
//! Why this module exists: the dedupe window reads the `id` column of earlier runs' files, and the `accounts`
//! merge reads `groups` and `accounts` files. With a local hive dataset those are files; with a Delta table on S3
//! they are objects, read by byte ranges so that a reader fetches only the column chunks it asks for. One type
//! lets both readers ignore where the bytes are.

use std::fs::File;
use std::path::PathBuf;

use bytes::Bytes;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::file::reader::{ChunkReader, Length};

use crate::error::{Error, Result};
use crate::store::{Location, RemoteFile};

/// A Parquet file to read.
#[derive(Debug, Clone)]
pub enum DataFile {
    Local(PathBuf),
    Remote { location: Location, size: u64 },
}

impl DataFile {
    /// Its path or URL, for messages.
    pub fn name(&self) -> String {
        match self {
            DataFile::Local(p) => p.display().to_string(),
            DataFile::Remote { location, .. } => location.url.clone(),
        }
    }

    /// A reader builder over the file (footer read; columns fetched when read).
    pub fn reader(&self) -> Result<ParquetRecordBatchReaderBuilder<Opened>> {
        let opened = match self {
            DataFile::Local(p) => Opened::Local(File::open(p).map_err(Error::io("opening", p))?),
            DataFile::Remote { location, size } => Opened::Remote(location.chunk_reader(*size)),
        };
        ParquetRecordBatchReaderBuilder::try_new(opened).map_err(|e| self.cause(e))
    }

    /// A reader of only the columns `names` (by name, in the file's order), with the file's metadata (its
    /// footer: row count, key/value metadata). A file without one of them is refused, naming the columns.
    pub fn columns(
        &self,
        names: &[&str],
    ) -> Result<(
        parquet::arrow::arrow_reader::ParquetRecordBatchReader,
        std::sync::Arc<parquet::file::metadata::ParquetMetaData>,
    )> {
        let builder = self.reader()?;
        let meta = builder.metadata().clone();
        let fields = builder.schema().fields();
        let indices: Vec<usize> = names
            .iter()
            .filter_map(|name| fields.iter().position(|f| f.name() == name))
            .collect();
        if indices.len() != names.len() {
            return Err(self.error(format!("expected the columns {names:?}")));
        }
        let mask = parquet::arrow::ProjectionMask::roots(builder.parquet_schema(), indices);
        let reader = builder
            .with_projection(mask)
            .with_batch_size(8192)
            .build()
            .map_err(|e| self.cause(e))?;
        Ok((reader, meta))
    }

    /// The number of rows, from the footer.
    pub fn rows(&self) -> Result<u64> {
        Ok(self.reader()?.metadata().file_metadata().num_rows().max(0) as u64)
    }

    /// The error of reading this file, caused by `source` (a Parquet or Arrow error).
    pub fn cause(&self, source: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Error {
        Error::DatasetRead {
            path: PathBuf::from(self.name()),
            source: source.into(),
        }
    }

    /// The error of reading this file, as `message` says.
    pub fn error(&self, message: String) -> Error {
        Error::Dataset {
            path: PathBuf::from(self.name()),
            message,
        }
    }
}

/// An opened [`DataFile`], readable by the Parquet reader.
pub enum Opened {
    Local(File),
    Remote(RemoteFile),
}

impl Length for Opened {
    fn len(&self) -> u64 {
        match self {
            Opened::Local(f) => f.len(),
            Opened::Remote(r) => r.len(),
        }
    }
}

impl ChunkReader for Opened {
    type T = Box<dyn std::io::Read + Send>;

    fn get_read(&self, start: u64) -> parquet::errors::Result<Self::T> {
        Ok(match self {
            Opened::Local(f) => Box::new(f.get_read(start)?),
            Opened::Remote(r) => Box::new(r.get_read(start)?),
        })
    }

    fn get_bytes(&self, start: u64, length: usize) -> parquet::errors::Result<Bytes> {
        match self {
            Opened::Local(f) => f.get_bytes(start, length),
            Opened::Remote(r) => r.get_bytes(start, length),
        }
    }
}
