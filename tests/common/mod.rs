//! Helpers for the integration tests: run the binary, read the dataset back with the parquet crate.
#![allow(dead_code)] // each test binary uses a different subset

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use arrow::array::{Array, StringArray, TimestampMicrosecondArray};
use arrow::datatypes::{DataType, TimeUnit};
use assert_cmd::Command;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures")
}

/// The binary under test. Its environment never lets a credential chain reach past this machine: the AWS and
/// GCE metadata endpoints point at a closed port on 127.0.0.1 unless a test sets them (scripts/test.sh also
/// exports them for every process the tests start).
pub fn bin() -> Command {
    let mut cmd = Command::cargo_bin("group-loader").expect("binary built");
    for (k, v) in LOOPBACK_ONLY {
        if std::env::var_os(k).is_none() {
            cmd.env(k, v);
        }
    }
    cmd
}

/// Metadata endpoints of the clouds' credential chains, on a loopback port where nothing listens (port 9,
/// discard, is closed on these machines).
pub const LOOPBACK_ONLY: [(&str, &str); 4] = [
    ("AWS_METADATA_ENDPOINT", "http://127.0.0.1:9"),
    ("GCE_METADATA_HOST", "127.0.0.1:9"),
    ("GCE_METADATA_IP", "127.0.0.1:9"),
    (
        "AZURE_MSI_ENDPOINT",
        "http://127.0.0.1:9/metadata/identity/oauth2/token",
    ),
];

/// Runs `group-loader load ARGS -o OUT --progress never`, returning (exit code, stderr).
pub fn load(out: &Path, args: &[&str]) -> (i32, String) {
    let o = bin()
        .arg("load")
        .args(args)
        .arg("--output")
        .arg(out)
        .args(["--progress", "never"])
        .output()
        .expect("run");
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// A cell read back: text, microseconds, or null.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum V {
    Null,
    S(String),
    T(i64),
}

pub fn s(x: &str) -> V {
    V::S(x.to_string())
}

pub type Row = BTreeMap<String, V>;

/// Every `.parquet` file a reader globbing `dir/**/*.parquet` sees (links followed, hidden entries skipped, as
/// Hive-style readers do), sorted.
pub fn parquet_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    fn walk(d: &Path, out: &mut Vec<PathBuf>) {
        let Ok(entries) = fs::read_dir(d) else { return };
        for e in entries.flatten() {
            let p = e.path();
            if e.file_name().to_string_lossy().starts_with('.') {
                continue;
            }
            if p.is_dir() {
                walk(&p, out);
            } else if p.extension().is_some_and(|x| x == "parquet") {
                out.push(p);
            }
        }
    }
    walk(dir, &mut out);
    out.sort();
    out
}

/// Asserts that `a` and `b` hold the same `.parquet` files ([`parquet_files`]): the same relative paths, byte
/// for byte. `what` names the run of `b` in the messages.
pub fn assert_same_parquet_files(a: &Path, b: &Path, what: &str) {
    let fa = parquet_files(a);
    let fb = parquet_files(b);
    assert_eq!(fa.len(), fb.len(), "files with {what}");
    for (x, y) in fa.iter().zip(&fb) {
        let rel = x.strip_prefix(a).unwrap();
        assert_eq!(rel, y.strip_prefix(b).unwrap(), "{what}");
        assert!(
            fs::read(x).unwrap() == fs::read(y).unwrap(),
            "{} differs with {what}",
            rel.display()
        );
    }
}

/// Reads one Parquet file into rows (column name -> value), checking the time columns' Arrow type.
pub fn read_file(path: &Path) -> Vec<Row> {
    let file = fs::File::open(path).expect("open parquet");
    let reader = ParquetRecordBatchReaderBuilder::try_new(file)
        .expect("valid parquet")
        .build()
        .expect("reader");
    let mut rows = Vec::new();
    for batch in reader {
        let batch = batch.expect("batch");
        let schema = batch.schema();
        for i in 0..batch.num_rows() {
            let mut row = Row::new();
            for (c, field) in schema.fields().iter().enumerate() {
                let col = batch.column(c);
                let v = if col.is_null(i) {
                    V::Null
                } else {
                    match field.data_type() {
                        DataType::Utf8 => V::S(
                            col.as_any()
                                .downcast_ref::<StringArray>()
                                .unwrap()
                                .value(i)
                                .to_string(),
                        ),
                        DataType::Timestamp(TimeUnit::Microsecond, Some(tz))
                            if tz.as_ref() == "UTC" =>
                        {
                            V::T(
                                col.as_any()
                                    .downcast_ref::<TimestampMicrosecondArray>()
                                    .unwrap()
                                    .value(i),
                            )
                        }
                        other => panic!("unexpected type {other} for {}", field.name()),
                    }
                };
                row.insert(field.name().clone(), v);
            }
            rows.push(row);
        }
    }
    rows
}

/// Reads every file of `OUT/groups`, in file order, with the partition path as `_partition`.
pub fn read_dataset(out: &Path) -> Vec<Row> {
    let groups = out.join("groups");
    let mut rows = Vec::new();
    for f in parquet_files(&groups) {
        let partition = f
            .parent()
            .unwrap()
            .strip_prefix(&groups)
            .unwrap()
            .display()
            .to_string();
        for mut r in read_file(&f) {
            r.insert("_partition".into(), V::S(partition.clone()));
            rows.push(r);
        }
    }
    rows
}

/// The single run report in `OUT/_runs`.
pub fn report(out: &Path) -> serde_json::Value {
    let runs: Vec<PathBuf> = fs::read_dir(out.join("_runs"))
        .expect("_runs")
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(runs.len(), 1, "{runs:?}");
    serde_json::from_slice(&fs::read(&runs[0]).unwrap()).unwrap()
}

/// The one file of `dir` (`_runs/` or `_rejects/`) of run `run`: files are named `<started>-<run>.<ext>`.
pub fn run_file(dir: &Path, run: &str) -> PathBuf {
    let found: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_stem()
                .is_some_and(|s| s.to_string_lossy().ends_with(&format!("-{run}")))
        })
        .collect();
    assert_eq!(
        found.len(),
        1,
        "files of run {run} in {}: {found:?}",
        dir.display()
    );
    found.into_iter().next().unwrap()
}

/// A seed for randomised trials, from the clock (the caller prints it, so a failure can be replayed); odd,
/// never zero, as [`xorshift`] needs.
pub fn clock_seed() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos() as u64
        | 1
}

/// The next number of an xorshift64 sequence (`state` must not be zero).
pub fn xorshift(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

/// Every record of the dataset's rejects files (none when nothing was rejected).
pub fn rejects(out: &Path) -> Vec<serde_json::Value> {
    let Ok(entries) = fs::read_dir(out.join("_rejects")) else {
        return Vec::new();
    };
    let mut recs = Vec::new();
    for e in entries {
        for line in fs::read_to_string(e.unwrap().path()).unwrap().lines() {
            recs.push(serde_json::from_str(line).unwrap());
        }
    }
    recs
}

/// Rows by their `id` (every row must have one).
/// The `id` of every row, sorted.
pub fn sorted_ids<'a>(rows: impl IntoIterator<Item = &'a Row>) -> Vec<String> {
    let mut ids: Vec<String> = rows
        .into_iter()
        .map(|r| match &r["id"] {
            V::S(s) => s.clone(),
            other => panic!("id {other:?}"),
        })
        .collect();
    ids.sort();
    ids
}

pub fn by_id(rows: &[Row]) -> BTreeMap<String, Row> {
    rows.iter()
        .map(|r| match &r["id"] {
            V::S(id) => (id.clone(), r.clone()),
            other => panic!("row without id: {other:?}"),
        })
        .collect()
}

/// Checks the counting rules in a report: `events = skipped + rejected + suppressed + rows_written`, and each
/// non-blank line is one event except batch envelopes (`lines = blank + events` when there are none).
pub fn assert_counts_add_up(r: &serde_json::Value) {
    let sum = |v: &serde_json::Value| {
        v.as_object()
            .unwrap()
            .values()
            .map(|x| x.as_u64().unwrap())
            .sum::<u64>()
    };
    let n = |k: &str| {
        r[k].as_u64()
            .unwrap_or_else(|| panic!("report key {k}: {r:#}"))
    };
    let events = n("events");
    assert_eq!(
        events,
        sum(&r["skipped"]) + sum(&r["rejected"]) + n("suppressed") + n("rows_written"),
        "events = skipped + rejected + suppressed + rows: {r:#}"
    );
    let (batch_lines, batch_events) = (
        r["batches"]["lines"].as_u64().unwrap(),
        r["batches"]["events"].as_u64().unwrap(),
    );
    assert_eq!(
        n("lines"),
        n("blank") + events - batch_events + batch_lines,
        "lines = blank + one event a line, batch envelopes aside: {r:#}"
    );
    if batch_lines == 0 {
        assert_eq!(n("lines"), n("blank") + events);
    }
}

/// Microseconds of an RFC 3339 time, via chrono (an independent parser from the loader's).
pub fn micros(rfc3339: &str) -> i64 {
    chrono::DateTime::parse_from_rfc3339(rfc3339)
        .expect("test time")
        .timestamp_micros()
}

/// Options for an in-process run (`group_loader::load::load`): small limits so hostile inputs hit them, every
/// line considered for the ratio (1.0: the run goes on), two threads. Tests change the fields they care about.
pub fn options(input: &Path, out: &Path) -> group_loader::options::LoadOptions {
    use group_loader::options::{LoadOptions, ProgressWhen};
    LoadOptions {
        partition_given: true,
        max_reject_ratio: 1.0,
        progress: ProgressWhen::Never,
        quiet: true,
        max_line_bytes: 200,
        threads: Some(2),
        ..LoadOptions::new(vec![input.to_path_buf()], out).with_memory_limit(256 << 20)
    }
}

/// The Python of the test environment (`scripts/test.sh` installs it into `.venv`).
pub fn python() -> PathBuf {
    match std::env::var_os("GROUP_LOADER_PYTHON") {
        Some(p) => PathBuf::from(p),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python"),
    }
}

/// Runs `python tests/consumer/<script> ARGS` with extra environment, returning its stdout; panics with its
/// output when it fails (never skips: run scripts/test.sh, which installs the readers).
pub fn python_check(script: &str, args: &[&str], env: &[(String, String)]) -> String {
    python_check_with(&python(), script, args, env)
}

/// [`python_check`] with another interpreter (a second virtual environment).
pub fn python_check_with(
    py: &Path,
    script: &str,
    args: &[&str],
    env: &[(String, String)],
) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/consumer")
        .join(script);
    let o = std::process::Command::new(py)
        .arg(&path)
        .args(args)
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run {} ({e}): run scripts/test.sh, which installs the readers in .venv",
                py.display()
            )
        });
    assert!(
        o.status.success(),
        "{script} {args:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// A local S3-compatible server (`moto_server` from PyPI's `moto[server]`) on 127.0.0.1 and a free port,
/// started for a test and stopped when dropped.
pub struct Moto {
    child: std::process::Child,
    pub endpoint: String,
}

impl Moto {
    pub fn start() -> Moto {
        Moto::start_server(&python().with_file_name("moto_server"))
    }

    /// moto 5.0.14 (`GROUP_LOADER_MOTO_5014`, installed by scripts/test.sh into `.venv-moto-5014`), from before
    /// moto honoured `If-None-Match: *` on PUT: it behaves as S3-compatible servers without conditional writes
    /// do (a second create-if-absent of an object replaces it).
    pub fn start_without_conditional_writes() -> Moto {
        let server = std::env::var_os("GROUP_LOADER_MOTO_5014")
            .map(PathBuf::from)
            .expect("GROUP_LOADER_MOTO_5014: run scripts/test.sh, which installs moto 5.0.14");
        Moto::start_server(&server)
    }

    fn start_server(server: &Path) -> Moto {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let child = std::process::Command::new(server)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start {} ({e}): run scripts/test.sh, which installs moto[server]",
                    server.display()
                )
            });
        let moto = Moto {
            child,
            endpoint: format!("http://127.0.0.1:{port}"),
        };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while moto.request("GET", "/").is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "moto_server did not answer"
            );
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
        moto
    }

    /// The environment a process needs to use this server.
    pub fn env(&self) -> Vec<(String, String)> {
        [
            ("AWS_ENDPOINT_URL", self.endpoint.as_str()),
            ("AWS_ACCESS_KEY_ID", "test"),
            ("AWS_SECRET_ACCESS_KEY", "test"),
            ("AWS_REGION", "us-east-1"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }

    /// A bare HTTP/1.1 request (moto does not check signatures): its status code.
    fn request(&self, method: &str, path: &str) -> std::io::Result<u16> {
        use std::io::{Read, Write};
        let addr = self.endpoint.trim_start_matches("http://");
        let mut s = std::net::TcpStream::connect(addr)?;
        write!(
            s,
            "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        )?;
        let mut reply = String::new();
        s.read_to_string(&mut reply)?;
        reply
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .ok_or_else(|| std::io::Error::other(reply))
    }

    pub fn create_bucket(&self, name: &str) {
        assert_eq!(self.request("PUT", &format!("/{name}")).unwrap(), 200);
    }

    /// An object_store client of a bucket of this server.
    pub fn store(&self, bucket: &str) -> object_store::aws::AmazonS3 {
        object_store::aws::AmazonS3Builder::new()
            .with_endpoint(&self.endpoint)
            .with_allow_http(true)
            .with_bucket_name(bucket)
            .with_access_key_id("test")
            .with_secret_access_key("test")
            .with_region("us-east-1")
            .build()
            .expect("store")
    }

    /// The bytes of object `key` of `bucket`.
    pub fn get(&self, bucket: &str, key: &str) -> Vec<u8> {
        use object_store::ObjectStoreExt;
        let store = self.store(bucket);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let key = object_store::path::Path::from(key);
        rt.block_on(async { store.get(&key).await.unwrap().bytes().await.unwrap() })
            .to_vec()
    }

    /// Uploads every file under `dir` to `bucket` under `prefix` (keeping relative paths).
    pub fn upload_dir(&self, bucket: &str, prefix: &str, dir: &Path) {
        use object_store::ObjectStoreExt;
        let store = self.store(bucket);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        fn walk(d: &Path, out: &mut Vec<PathBuf>) {
            for e in fs::read_dir(d).unwrap().flatten() {
                let p = e.path();
                if p.is_dir() {
                    walk(&p, out);
                } else {
                    out.push(p);
                }
            }
        }
        let mut files = Vec::new();
        walk(dir, &mut files);
        for f in files {
            let rel = f
                .strip_prefix(dir)
                .unwrap()
                .to_string_lossy()
                .replace('\\', "/");
            let key = object_store::path::Path::from(format!("{prefix}/{rel}"));
            rt.block_on(store.put(&key, fs::read(&f).unwrap().into()))
                .unwrap();
        }
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs the binary with `args` and extra environment: (exit code, stderr).
pub fn run_env(args: &[&str], env: &[(String, String)]) -> (i32, String) {
    let o = bin()
        .args(args)
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .output()
        .expect("run");
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}
pub mod proxy;

/// What a reader of the Delta dataset at `url` sees (tests/consumer/delta_check.py `state`).
pub fn state(url: &str, env: &[(String, String)]) -> serde_json::Value {
    serde_json::from_str(&python_check("delta_check.py", &["state", url], env)).unwrap()
}

/// The `groups` ids of a [`state`].
pub fn ids(state: &serde_json::Value) -> Vec<String> {
    state["ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect()
}

/// The objects under `prefix` of a bucket.
pub fn objects(moto: &Moto, bucket: &str, prefix: &str) -> Vec<String> {
    use futures::TryStreamExt;
    use object_store::ObjectStore;
    let store = moto.store(bucket);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let prefix = object_store::path::Path::from(prefix);
    let metas: Vec<object_store::ObjectMeta> = rt
        .block_on(store.list(Some(&prefix)).try_collect())
        .unwrap();
    let mut names: Vec<String> = metas.into_iter().map(|m| m.location.to_string()).collect();
    names.sort();
    names
}

/// A local Azure Blob server (Azurite, from npm: `scripts/test.sh` installs it into `.azurite`) on 127.0.0.1 and
/// a free port, with its data in a temporary folder; started for a test and stopped when dropped. Containers,
/// uploads and listings go through Microsoft's Python client (`tests/consumer/azure_blob.py`).
pub struct Azurite {
    child: std::process::Child,
    pub url: String,
    _data: tempfile::TempDir,
}

impl Azurite {
    pub fn start() -> Azurite {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let bin = match std::env::var_os("GROUP_LOADER_AZURITE") {
            Some(p) => PathBuf::from(p),
            None => Path::new(env!("CARGO_MANIFEST_DIR"))
                .join(".azurite/node_modules/.bin/azurite-blob"),
        };
        let data = tempfile::tempdir().unwrap();
        let child = std::process::Command::new(&bin)
            .args([
                "--blobHost",
                "127.0.0.1",
                "--blobPort",
                &port.to_string(),
                "--silent",
                "--skipApiVersionCheck",
            ])
            .arg("--location")
            .arg(data.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start {} ({e}): run scripts/test.sh, which installs Azurite",
                    bin.display()
                )
            });
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "Azurite did not answer"
            );
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
        Azurite {
            child,
            url: format!("http://127.0.0.1:{port}"),
            _data: data,
        }
    }

    /// The environment a process needs to use this server (object_store's and delta-rs's emulator settings:
    /// Azurite's development account).
    pub fn env(&self) -> Vec<(String, String)> {
        [
            ("AZURE_STORAGE_USE_EMULATOR", "true"),
            ("AZURITE_BLOB_STORAGE_URL", self.url.as_str()),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }

    fn blob(&self, args: &[&str]) -> serde_json::Value {
        serde_json::from_str(&python_check("azure_blob.py", args, &self.env())).unwrap()
    }

    pub fn create_container(&self, name: &str) {
        self.blob(&["create", name]);
    }

    /// Uploads every file under `dir` to `container` under `prefix` (keeping relative paths).
    pub fn upload_dir(&self, container: &str, prefix: &str, dir: &Path) {
        self.blob(&["upload", container, prefix, dir.to_str().unwrap()]);
    }

    /// The blob names under `prefix`, sorted.
    pub fn objects(&self, container: &str, prefix: &str) -> Vec<String> {
        serde_json::from_value(self.blob(&["list", container, prefix])).unwrap()
    }
}

impl Drop for Azurite {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
