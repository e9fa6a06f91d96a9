//! Object storage: `s3://`, `gs://` and `az://` URLs turned into `object_store` stores, and the
//! blocking bridges the rest of the pipeline uses to read and write them.
//!
//! Why this module exists: exports live in S3, GCS and Azure, and warehouses read tables there. The `object_store`
//! crate speaks to all three (with each cloud's credential chain: environment, web/workload identity, container
//! and instance credentials, and `AWS_ENDPOINT_URL` for S3-compatible stores; AWS profiles through [`aws`]); it
//! is async, while the loader's pipeline is threads and rayon. This module owns the one tokio runtime of a run and hides it behind small
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

pub mod aws;

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

/// `--retry-timeout` (three minutes unless set).
pub fn retry_timeout() -> Duration {
    RETRY_TIMEOUT
        .get()
        .copied()
        .unwrap_or(Duration::from_secs(180))
}

/// Requests are retried until `--retry-timeout` has passed, however many attempts that takes (object_store also
/// stops after a number of retries: that number is set out of the way, so the timeout is what decides).
fn retry_config() -> RetryConfig {
    RetryConfig {
        retry_timeout: retry_timeout(),
        max_retries: usize::MAX,
        ..RetryConfig::default()
    }
}

/// A location in object storage: the store of its bucket and the path inside it.
#[derive(Clone)]
pub struct Location {
    /// The URL in its one canonical spelling (percent-encoded where a URL must be, no trailing `/`): the form
    /// given to delta-rs, and the one printed.
    pub url: String,
    /// `scheme://bucket` (or `file://` for a local folder).
    base: String,
    pub store: Arc<dyn ObjectStore>,
    /// The object path: the URL's path, percent-decoded (`my%20data` is the object `my data`), as delta-rs
    /// and every reader of the table decode it.
    pub path: ObjectPath,
}

/// Refuses a URL that could name one place to the tool and another to a reader, or that holds a secret:
/// credentials (`user:password@`), a port, a query or a fragment, a `.` or `..` segment (written, or
/// percent-encoded), an encoded slash, or an empty segment.
fn check_url(url: &str) -> Result<()> {
    let Some((scheme, rest)) = url.split_once("://") else {
        return Err(Error::Usage(format!(
            "{url}: not a URL (expected scheme://bucket/path)"
        )));
    };
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
    // The message names the URL, never the credentials it holds.
    let shown = match authority.rsplit_once('@') {
        Some((_, host)) => format!("{scheme}://***@{host}/{path}"),
        None => url.to_string(),
    };
    let refuse = |why: &str| Err(Error::Usage(format!("{shown}: {why}")));
    if authority.contains('@') {
        return refuse(
            "credentials in a URL are refused (they would be written to reports and logs): give them \
             through the environment (AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, a profile, or the \
             cloud's credential chain)",
        );
    }
    if authority.contains(':') {
        return refuse(
            "a port is not part of a bucket name; for an S3-compatible server, set AWS_ENDPOINT_URL \
             (e.g. http://127.0.0.1:9000) and use s3://BUCKET/PATH",
        );
    }
    if rest.contains('?') || rest.contains('#') {
        return refuse(
            "a query (?) or fragment (#) is not part of an object's name, and readers would each read it \
             differently; write the path without it",
        );
    }
    let segments: Vec<&str> = path.trim_end_matches('/').split('/').collect();
    for segment in segments.iter().filter(|_| !path.is_empty()) {
        let lower = segment.to_ascii_lowercase();
        if lower.contains("%2f") || lower.contains("%5c") {
            return refuse(
                "an encoded slash (%2F) names one object to one reader and a folder to another; write the \
                 path with plain / between its folders",
            );
        }
        match percent_decoded(segment).as_str() {
            "" => return refuse("an empty path segment (//) names no folder"),
            "." | ".." => {
                return refuse(
                    "a . or .. segment would write outside the folder the URL names (readers resolve it \
                     differently): give the folder itself",
                );
            }
            _ => {}
        }
    }
    Ok(())
}

/// Environment variables that name an endpoint: each must be an `http(s)://host[:port]` URL (object_store's
/// signing code panics on one it cannot parse, so they are checked before any request is made).
const ENDPOINT_VARIABLES: [&str; 7] = [
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_S3",
    "AWS_ENDPOINT_URL_STS",
    "AWS_ENDPOINT_URL_GLUE",
    "AWS_ENDPOINT",
    "AWS_METADATA_ENDPOINT",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
];

/// Refuses (exit 2, naming the variable) an endpoint variable that is set but is not an `http(s)` URL with a
/// host.
fn check_endpoints() -> Result<()> {
    for name in ENDPOINT_VARIABLES {
        let Ok(value) = std::env::var(name) else {
            continue;
        };
        let ok = Url::parse(&value).is_ok_and(|u| {
            matches!(u.scheme(), "http" | "https") && u.host_str().is_some_and(|h| !h.is_empty())
        });
        if !ok {
            return Err(Error::Usage(format!(
                "{name}={value:?} is not an endpoint URL: write it with its scheme and host, e.g. \
                 {name}=http://127.0.0.1:9000"
            )));
        }
    }
    Ok(())
}

/// The last link of a cloud's credential chain, a metadata (or managed identity) service: a request that failed
/// because the chain fell through to it and it did not answer is said as what it is, no credentials, with where
/// they were looked for.
struct ChainEnd {
    scheme: &'static str,
    /// What the message of the failed token request holds.
    marker: &'static str,
    cloud: &'static str,
    looked_at: &'static str,
    advice: &'static str,
}

const CHAIN_ENDS: [ChainEnd; 3] = [
    ChainEnd {
        scheme: "s3://",
        marker: "/latest/api/token",
        cloud: "AWS",
        looked_at: aws::CREDENTIAL_SOURCES,
        advice: "Outside EC2, set credentials (AWS_PROFILE, or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY), \
                 and AWS_EC2_METADATA_DISABLED=true to skip the metadata service",
    },
    ChainEnd {
        scheme: "gs://",
        marker: "computeMetadata/v1/instance/service-accounts",
        cloud: "Google Cloud",
        looked_at: "GOOGLE_APPLICATION_CREDENTIALS or GOOGLE_SERVICE_ACCOUNT (a service account key file), \
                    GOOGLE_SERVICE_ACCOUNT_KEY, application default credentials \
                    (~/.config/gcloud/application_default_credentials.json), then the GCE/GKE metadata server",
        advice: "Outside Google Cloud, set GOOGLE_APPLICATION_CREDENTIALS to a service account key file, or run \
                 gcloud auth application-default login",
    },
    ChainEnd {
        scheme: "az://",
        marker: "metadata/identity/oauth2/token",
        cloud: "Azure",
        looked_at: "AZURE_STORAGE_ACCOUNT_KEY, AZURE_STORAGE_SAS_KEY, a service principal (AZURE_CLIENT_ID, \
                    AZURE_CLIENT_SECRET, AZURE_TENANT_ID), a workload identity (AZURE_FEDERATED_TOKEN_FILE), \
                    then the managed identity endpoint",
        advice: "Outside Azure, set AZURE_STORAGE_ACCOUNT_KEY or AZURE_STORAGE_SAS_KEY, or a service principal",
    },
];

/// The error of a request that failed because the credential chain of `url`'s cloud fell through to its
/// metadata service and it did not answer ([`CHAIN_ENDS`]).
pub fn no_credentials(url: &str, message: &str) -> Option<Error> {
    CHAIN_ENDS
        .iter()
        .find(|c| url.starts_with(c.scheme) && message.contains(c.marker))
        .map(|c| Error::NoCredentials {
            url: url.to_string(),
            cloud: c.cloud,
            looked_at: c.looked_at,
            advice: c.advice,
            detail: crate::error::redact(message),
        })
}

/// What a store builder's refusal means, where object_store's words do not say what to set: (what its message
/// holds, what to tell the user).
const BUILDER_HINTS: [(&str, &str); 2] = [
    (
        "Unable to open service account file",
        "the Google service account key file named by GOOGLE_APPLICATION_CREDENTIALS (or \
         GOOGLE_SERVICE_ACCOUNT) cannot be read. Point it at a key file, or unset it to use application default \
         credentials",
    ),
    (
        "Account must be specified",
        "no Azure storage account: set AZURE_STORAGE_ACCOUNT_NAME, with AZURE_STORAGE_ACCOUNT_KEY, \
         AZURE_STORAGE_SAS_KEY, a service principal (AZURE_CLIENT_ID, AZURE_CLIENT_SECRET, AZURE_TENANT_ID) or a \
         managed or workload identity; for Azurite, AZURE_STORAGE_USE_EMULATOR=true",
    ),
];

/// A store builder's refusal of `url` (exit 2), explained by [`BUILDER_HINTS`] where it applies.
fn builder_error(url: &str, e: object_store::Error) -> Error {
    let text = e.to_string();
    match BUILDER_HINTS
        .iter()
        .find(|(marker, _)| text.contains(marker))
    {
        Some((_, hint)) => Error::Usage(format!("{url}: {hint} (the store said: {text})")),
        None => Error::Usage(format!("{url}: {text}")),
    }
}

/// `s` with `%XX` sequences decoded (bytes that do not decode as UTF-8 are replaced).
fn percent_decoded(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        if b[i] == b'%'
            && i + 2 < b.len()
            && let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2]))
        {
            out.push((h * 16 + l) as u8);
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl fmt::Debug for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.url)
    }
}

impl Location {
    /// Opens the store of a URL's bucket (or container), configured from the environment.
    pub fn parse(url: &str) -> Result<Location> {
        check_url(url)?;
        let trimmed = url.trim_end_matches('/');
        let parsed =
            Url::parse(trimmed).map_err(|e| Error::Usage(format!("invalid URL {url}: {e}")))?;
        let bucket = parsed.host_str().unwrap_or_default();
        if bucket.is_empty() {
            return Err(Error::Usage(format!("{url}: no bucket in the URL")));
        }
        let err = |e: object_store::Error| builder_error(url, e);
        check_endpoints()?;
        let store: Arc<dyn ObjectStore> = match parsed.scheme() {
            "s3" => {
                let b = aws::s3_builder(url, bucket)?.with_retry(retry_config());
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
        let path = ObjectPath::from_url_path(parsed.path())
            .map_err(|e| Error::Usage(format!("invalid path in {url}: {e}")))?;
        Ok(Location {
            url: parsed.as_str().trim_end_matches('/').to_string(),
            base: format!("{}://{bucket}", parsed.scheme()),
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
            base: "file://".to_string(),
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
            url: self.url_of(&path),
            base: self.base.clone(),
            store: self.store.clone(),
            path,
        }
    }

    /// The location of an object path of this store (as a listing names it).
    pub fn child(&self, path: ObjectPath) -> Location {
        Location {
            url: self.url_of(&path),
            base: self.base.clone(),
            store: self.store.clone(),
            path,
        }
    }

    /// The canonical URL of an object path of this store (percent-encoded where a URL must be).
    pub fn url_of(&self, path: &ObjectPath) -> String {
        let mut url = match Url::parse(&format!("{}/", self.base)) {
            Ok(u) => u,
            Err(_) => return format!("{}/{path}", self.base),
        };
        url.set_path(&format!("/{path}"));
        url.as_str().trim_end_matches('/').to_string()
    }

    /// The object's size and version tag, or `None` when there is no object here.
    pub fn head(&self) -> Result<Option<object_store::ObjectMeta>> {
        match block_on(self.store.head(&self.path)) {
            Ok(meta) => Ok(Some(meta)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(self.error("reading", e)),
        }
    }

    /// The location of `path` (an object path of the same store, `""` for the bucket's root).
    pub fn at(&self, path: &str) -> Location {
        self.child(ObjectPath::from(path))
    }

    /// True when at least one object lies under this location (as a prefix); reads one page of the listing.
    pub fn any(&self) -> Result<bool> {
        let prefix = (!self.path.as_ref().is_empty()).then_some(&self.path);
        block_on(async {
            match self.store.list(prefix).next().await {
                None => Ok(false),
                Some(Ok(_)) => Ok(true),
                Some(Err(e)) => Err(self.error("listing", e)),
            }
        })
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

    /// Writes `bytes` as the object only if there is none (create-if-absent): `true` when it was created,
    /// `false` when the store says the object exists.
    pub fn create_bytes(&self, bytes: Vec<u8>) -> Result<bool> {
        let opts = object_store::PutOptions::from(object_store::PutMode::Create);
        match block_on(self.store.put_opts(&self.path, bytes.into(), opts)) {
            Ok(_) => Ok(true),
            Err(object_store::Error::AlreadyExists { .. }) => Ok(false),
            Err(e) => Err(self.error("writing", e)),
        }
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
        let text = source.to_string();
        if let Some(e) = no_credentials(&self.url, &text) {
            return e;
        }
        let missing = [
            ("NoSuchBucket", "bucket"),
            ("ContainerNotFound", "container"),
        ]
        .into_iter()
        .find(|(code, _)| text.contains(code));
        if let Some((_, kind)) = missing {
            let name = self
                .base
                .split("://")
                .nth(1)
                .unwrap_or_default()
                .to_string();
            return Error::NoBucket {
                action,
                url: self.url.clone(),
                kind,
                name,
                source: Box::new(source),
            };
        }
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
        // An empty column chunk (an uncompressed all-null column) asks for no bytes: stores refuse an empty
        // range ("Range started at N and ended at N"), and there is nothing to fetch.
        if range.start >= range.end {
            return Ok(Bytes::new());
        }
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

    #[test]
    fn a_url_names_one_place_for_every_reader() {
        // Spaces and non-ASCII names: the object path is the decoded name (as delta-rs and readers decode
        // the URL), the URL its canonical encoding; both spellings of the URL are the same place.
        for url in ["s3://lake/my data", "s3://lake/my%20data/"] {
            let loc = Location::parse(url).unwrap();
            assert_eq!(loc.path.as_ref(), "my data", "{url}");
            assert_eq!(loc.url, "s3://lake/my%20data", "{url}");
            let f = loc.join("groups/_delta_log/00000000000000000000.json");
            assert_eq!(
                f.path.as_ref(),
                "my data/groups/_delta_log/00000000000000000000.json"
            );
            assert_eq!(
                f.url,
                "s3://lake/my%20data/groups/_delta_log/00000000000000000000.json"
            );
        }
        let loc = Location::parse("s3://lake/café/p").unwrap();
        assert_eq!(loc.path.as_ref(), "café/p");
        assert_eq!(loc.url, "s3://lake/caf%C3%A9/p");
        assert_eq!(loc.url_of(&loc.path), loc.url);
    }

    #[test]
    fn urls_that_would_name_another_place_or_hold_secrets_are_refused() {
        for (url, why) in [
            ("s3://lake?x=1/p", "query"),
            ("s3://lake/p#frag/p", "fragment"),
            ("s3://lake/p?versionId=3", "query"),
            ("s3://lake/a/../escape", ".."),
            ("s3://lake/a/%2e%2E/escape", ".."),
            ("s3://lake/./p", ".."),
            ("s3://lake/a%2fb", "encoded slash"),
            ("s3://lake/a//b", "empty path segment"),
            ("s3://user:pw@lake/p", "credentials"),
            ("s3://lake:9000/p", "port"),
        ] {
            match Location::parse(url) {
                Err(Error::Usage(m)) => {
                    assert!(m.contains(why), "{url}: {m}");
                    assert!(!m.contains("pw"), "the message repeats the password: {m}");
                }
                Err(other) => panic!("{url}: {other}"),
                Ok(loc) => panic!("{url} accepted as {}", loc.url),
            }
        }
        // A trailing slash is not an empty segment.
        assert!(Location::parse("s3://lake/p/").is_ok());
        assert!(Location::parse("s3://lake").is_ok());
    }
}
