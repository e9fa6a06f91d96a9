//! Object storage (SPEC §10): `s3://`, `gs://` and `az://` URLs turned into `object_store` stores, and the
//! blocking bridges the rest of the pipeline uses to read and write them.
//!
//! Why this module exists: exports live in S3, GCS and Azure, and warehouses read tables there. The `object_store`
//! crate speaks to all three (with each cloud's credential chain: environment, web/workload identity, container
//! and instance credentials, and `AWS_ENDPOINT_URL` for S3-compatible stores); it is async, while the loader's
//! pipeline is threads and rayon. This module owns the one tokio runtime of a run and hides it behind small
//! blocking calls: list a prefix, read an object as a stream (bounded read-ahead, never downloaded whole), read
//! byte ranges of an object (so Parquet readers fetch only the columns they need), upload a file, put bytes.

use std::fmt;
use std::io::{self, Read};
use std::ops::Range;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use futures::stream::BoxStream;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, RetryConfig};
use url::Url;

use crate::error::{Error, Result};

/// URL schemes read and written through object storage.
pub const SCHEMES: [&str; 3] = ["s3", "gs", "az"];

/// True when `s` names an object-store location (`s3://...`, `gs://...`, `az://...`).
pub fn is_url(s: &str) -> bool {
    SCHEMES
        .iter()
        .any(|scheme| s.strip_prefix(scheme).is_some_and(|r| r.starts_with("://")))
}

/// The runtime every object-store call of the process runs on (created on first use).
pub fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("group-loader-io")
            .enable_all()
            .build()
            .unwrap_or_else(|e| panic!("cannot start the I/O runtime: {e}"))
    })
}

/// Runs a future to completion from a thread of the pipeline (never from inside the runtime).
pub fn block_on<F: std::future::Future>(f: F) -> F::Output {
    runtime().block_on(f)
}

/// How long a request to object storage is retried before it fails (`--retry-timeout`).
static RETRY_TIMEOUT: OnceLock<Duration> = OnceLock::new();

/// Sets the retry timeout for the stores opened from now on (the first call wins).
pub fn set_retry_timeout(d: Duration) {
    let _ = RETRY_TIMEOUT.set(d);
}

fn retry_config() -> RetryConfig {
    let mut retry = RetryConfig::default();
    if let Some(t) = RETRY_TIMEOUT.get() {
        retry.retry_timeout = *t;
    }
    retry
}

/// A location in object storage: the store of its bucket and the path inside it.
#[derive(Clone)]
pub struct Location {
    /// The URL as given, without a trailing `/`.
    pub url: String,
    pub store: Arc<dyn ObjectStore>,
    pub path: ObjectPath,
}

impl fmt::Debug for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.url)
    }
}

impl Location {
    /// Opens the store of a URL's bucket (or container), configured from the environment.
    pub fn parse(url: &str) -> Result<Location> {
        let trimmed = url.trim_end_matches('/');
        let parsed =
            Url::parse(trimmed).map_err(|e| Error::Usage(format!("invalid URL {url}: {e}")))?;
        let bucket = parsed.host_str().unwrap_or_default();
        if bucket.is_empty() {
            return Err(Error::Usage(format!("{url}: no bucket in the URL")));
        }
        let err = |e: object_store::Error| Error::Usage(format!("{url}: {e}"));
        let store: Arc<dyn ObjectStore> = match parsed.scheme() {
            "s3" => {
                let mut b = object_store::aws::AmazonS3Builder::from_env()
                    .with_bucket_name(bucket)
                    .with_retry(retry_config());
                // An S3-compatible endpoint given over plain HTTP (a local server) is the user's choice.
                let endpoint = std::env::var("AWS_ENDPOINT_URL")
                    .or_else(|_| std::env::var("AWS_ENDPOINT"))
                    .unwrap_or_default();
                if endpoint.starts_with("http://") {
                    b = b.with_allow_http(true);
                }
                if std::env::var("AWS_REGION").is_err()
                    && std::env::var("AWS_DEFAULT_REGION").is_err()
                {
                    b = b.with_region("us-east-1");
                }
                Arc::new(b.build().map_err(err)?)
            }
            "gs" => Arc::new(
                object_store::gcp::GoogleCloudStorageBuilder::from_env()
                    .with_bucket_name(bucket)
                    .with_retry(retry_config())
                    .build()
                    .map_err(err)?,
            ),
            "az" => Arc::new(
                object_store::azure::MicrosoftAzureBuilder::from_env()
                    .with_container_name(bucket)
                    .with_retry(retry_config())
                    .build()
                    .map_err(err)?,
            ),
            other => {
                return Err(Error::Usage(format!(
                    "{url}: unsupported scheme {other}:// (s3://, gs:// and az:// are)"
                )));
            }
        };
        let path = ObjectPath::parse(parsed.path().trim_start_matches('/'))
            .map_err(|e| Error::Usage(format!("invalid path in {url}: {e}")))?;
        Ok(Location {
            url: trimmed.to_string(),
            store,
            path,
        })
    }

    /// A local folder as a location (created if missing), read and written through `object_store`'s local
    /// filesystem store: a local Delta dataset is handled like a remote one.
    pub fn local(dir: &std::path::Path) -> Result<Location> {
        std::fs::create_dir_all(dir).map_err(Error::io("creating output directory", dir))?;
        let abs = std::fs::canonicalize(dir).map_err(Error::io("reading", dir))?;
        let url = Url::from_directory_path(&abs)
            .map_err(|()| Error::Usage(format!("{}: not an absolute path", abs.display())))?;
        let path = ObjectPath::from_absolute_path(&abs)
            .map_err(|e| Error::Usage(format!("{}: {e}", abs.display())))?;
        Ok(Location {
            url: url.as_str().trim_end_matches('/').to_string(),
            store: Arc::new(object_store::local::LocalFileSystem::new()),
            path,
        })
    }

    /// The location of `rel` (`groups/dt=.../part.parquet`) under this one.
    pub fn join(&self, rel: &str) -> Location {
        let mut path = self.path.clone();
        for part in rel.split('/').filter(|p| !p.is_empty()) {
            path = path.join(part);
        }
        Location {
            url: format!("{}/{}", self.url, rel.trim_matches('/')),
            store: self.store.clone(),
            path,
        }
    }

    /// The URL of an object path of this store.
    pub fn url_of(&self, path: &ObjectPath) -> String {
        let base = self
            .url
            .strip_suffix(self.path.as_ref())
            .unwrap_or(&self.url);
        if base.ends_with('/') {
            format!("{base}{path}")
        } else {
            format!("{base}/{path}")
        }
    }

    /// The object's size and version tag, or `None` when there is no object here.
    pub fn head(&self) -> Result<Option<object_store::ObjectMeta>> {
        match block_on(self.store.head(&self.path)) {
            Ok(meta) => Ok(Some(meta)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(self.error("reading", e)),
        }
    }

    /// Every object under this location (as a prefix), in the store's order.
    pub fn list(&self) -> Result<Vec<object_store::ObjectMeta>> {
        let prefix = (!self.path.as_ref().is_empty()).then_some(&self.path);
        block_on(async {
            let mut stream = self.store.list(prefix);
            let mut found = Vec::new();
            while let Some(meta) = stream.next().await {
                found.push(meta.map_err(|e| self.error("listing", e))?);
            }
            Ok(found)
        })
    }

    /// Reads the whole object.
    pub fn get_bytes(&self) -> Result<Option<Bytes>> {
        match block_on(async { self.store.get(&self.path).await?.bytes().await }) {
            Ok(b) => Ok(Some(b)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(self.error("reading", e)),
        }
    }

    /// Writes `bytes` as the object (replacing it).
    pub fn put_bytes(&self, bytes: Vec<u8>) -> Result<()> {
        block_on(self.store.put(&self.path, bytes.into()))
            .map(|_| ())
            .map_err(|e| self.error("writing", e))
    }

    /// Uploads a local file as the object, in parts, without holding it whole in memory.
    pub fn upload(&self, file: &std::path::Path) -> Result<()> {
        block_on(async {
            let mut source = tokio::fs::File::open(file)
                .await
                .map_err(Error::io("opening", file))?;
            let mut writer =
                object_store::buffered::BufWriter::new(self.store.clone(), self.path.clone());
            tokio::io::copy(&mut source, &mut writer)
                .await
                .map_err(|e| self.io_error("uploading to", e))?;
            tokio::io::AsyncWriteExt::shutdown(&mut writer)
                .await
                .map_err(|e| self.io_error("uploading to", e))
        })
    }

    /// Deletes the object (nothing when it is not there).
    pub fn delete(&self) -> Result<()> {
        match block_on(self.store.delete(&self.path)) {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.error("deleting", e)),
        }
    }

    /// A stream of the object's bytes, readable with `std::io::Read`.
    pub fn open_stream(&self) -> Result<ObjectReader> {
        let stream = block_on(self.store.get(&self.path))
            .map_err(|e| self.error("reading", e))?
            .into_stream();
        Ok(ObjectReader {
            url: self.url.clone(),
            stream,
            current: Bytes::new(),
        })
    }

    /// A Parquet-readable handle on the object: byte ranges fetched on demand.
    pub fn chunk_reader(&self, size: u64) -> RemoteFile {
        RemoteFile {
            location: self.clone(),
            size,
        }
    }

    pub fn error(&self, action: &'static str, source: object_store::Error) -> Error {
        Error::ObjectStore {
            action,
            url: self.url.clone(),
            source: Box::new(source),
        }
    }

    fn io_error(&self, action: &'static str, source: io::Error) -> Error {
        Error::Io {
            action,
            path: self.url.clone().into(),
            source,
        }
    }
}

/// An object read as a stream: the body arrives in the chunks the store sends, one at a time (the read-ahead is
/// what the HTTP client buffers, plus the reader's chunks of lines).
pub struct ObjectReader {
    url: String,
    stream: BoxStream<'static, object_store::Result<Bytes>>,
    current: Bytes,
}

impl Read for ObjectReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.current.is_empty() {
            match block_on(self.stream.next()) {
                Some(Ok(b)) => self.current = b,
                Some(Err(e)) => {
                    return Err(io::Error::other(format!("{}: {e}", self.url)));
                }
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current[..n]);
        self.current = self.current.slice(n..);
        Ok(n)
    }
}

/// An object read by byte ranges: what the Parquet reader needs to fetch only some columns.
#[derive(Clone)]
pub struct RemoteFile {
    location: Location,
    size: u64,
}

impl RemoteFile {
    fn range(&self, range: Range<u64>) -> parquet::errors::Result<Bytes> {
        block_on(self.location.store.get_range(&self.location.path, range))
            .map_err(|e| parquet::errors::ParquetError::External(Box::new(e)))
    }
}

impl parquet::file::reader::Length for RemoteFile {
    fn len(&self) -> u64 {
        self.size
    }
}

impl parquet::file::reader::ChunkReader for RemoteFile {
    type T = bytes::buf::Reader<Bytes>;

    fn get_read(&self, start: u64) -> parquet::errors::Result<Self::T> {
        use bytes::Buf;
        Ok(self.range(start..self.size)?.reader())
    }

    fn get_bytes(&self, start: u64, length: usize) -> parquet::errors::Result<Bytes> {
        self.range(start..start + length as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_recognised_by_scheme() {
        for yes in ["s3://b/p", "gs://b", "az://c/x/y.gz"] {
            assert!(is_url(yes), "{yes}");
        }
        for no in [
            "/data/s3://x",
            "s3:/b",
            "file:///x",
            "http://x",
            "s3",
            "./gs://x",
        ] {
            assert!(!is_url(no), "{no}");
        }
    }

    #[test]
    fn locations_join_and_name_their_objects() {
        let loc = Location::parse("s3://bucket/warehouse/segment/").unwrap();
        assert_eq!(loc.url, "s3://bucket/warehouse/segment");
        assert_eq!(loc.path.as_ref(), "warehouse/segment");
        let f = loc.join("groups/dt=2024-03-01/part-1.parquet");
        assert_eq!(
            f.url,
            "s3://bucket/warehouse/segment/groups/dt=2024-03-01/part-1.parquet"
        );
        assert_eq!(
            f.path.as_ref(),
            "warehouse/segment/groups/dt=2024-03-01/part-1.parquet"
        );
        assert_eq!(loc.url_of(&f.path), f.url);
        let dir = tempfile::tempdir().unwrap();
        let local = Location::local(dir.path()).unwrap();
        let abs = std::fs::canonicalize(dir.path()).unwrap();
        assert_eq!(local.url, format!("file://{}", abs.display()));
        let f = local.join("groups/x.parquet");
        assert_eq!(local.url_of(&f.path), f.url);
        assert!(Location::parse("s3:///nobucket").is_err());
        assert!(Location::parse("ftp://x/y").is_err());
    }
}
