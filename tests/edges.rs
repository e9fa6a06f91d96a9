//! The edges a new user (and a scheduler) meets: an output inside another dataset, a one-file conversion, an
//! empty or replayed night, a dataset's recorded shape, the exit codes and the retry rules built on them, bad
//! object-store configuration, and words that must agree with the tool. Every case runs the binary.
// Some of these tests need what scripts/test.sh installs (the `external` feature); their helpers are unused without it.
#![cfg_attr(not(feature = "external"), allow(dead_code, unused_imports))]

mod common;

use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use common::*;

fn fixture(name: &str) -> String {
    fixtures().join(name).display().to_string()
}

/// An output inside a dataset (a table folder, the hidden state folder), or one holding a dataset in its
/// folders, is refused (exit 2) touching nothing; the dataset stays readable by DuckDB's glob.
#[cfg(feature = "external")]
#[test]
fn an_output_inside_or_around_a_dataset_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let ds = dir.path().join("ds");
    let (code, stderr) = load(&ds, &[&fixture("segment-docs.json")]);
    assert_eq!(code, 0, "{stderr}");
    let delta = dir.path().join("lake/delta");
    let (code, stderr) = load(
        &delta,
        &[&fixture("segment-docs.json"), "--format", "delta"],
    );
    assert_eq!(code, 0, "{stderr}");
    let before = parquet_files(&ds);
    for (out, said) in [
        (ds.join("groups"), "inside the dataset"),
        (ds.join("groups/dt=2015-02-23"), "inside the dataset"),
        (ds.join(".group-loader/x"), "state folder"),
        (ds.join("new"), "inside the dataset"),
        (delta.join("groups"), "inside the dataset"),
        (dir.path().join("lake"), "holds the dataset"),
        (dir.path().to_path_buf(), "holds the dataset"),
    ] {
        let (code, stderr) = load(&out, &[&fixture("batch.ndjson")]);
        assert_eq!(code, 2, "{}: {stderr}", out.display());
        assert!(stderr.contains(said), "{}: {stderr}", out.display());
    }
    assert_eq!(parquet_files(&ds), before, "the dataset untouched");
    assert!(!ds.join("groups/groups").exists() && !ds.join("new").exists());
    let glob = format!("{}/groups/**/*.parquet", ds.display());
    assert_eq!(duckdb_count(&glob), 1, "DuckDB still reads the dataset");
    // On object storage: a prefix inside a Delta dataset, or inside one of its tables.
    let moto = Moto::start();
    moto.create_bucket("lake");
    let env = moto.env();
    let docs = fixture("segment-docs.json");
    let (code, stderr) = run_env(
        &["load", &docs, "-o", "s3://lake/ds", "--progress", "never"],
        &env,
    );
    assert_eq!(code, 0, "{stderr}");
    let before = objects(&moto, "lake", "");
    for out in [
        "s3://lake/ds/groups",
        "s3://lake/ds/groups/dt=2015-02-23",
        "s3://lake/ds/new",
    ] {
        let (code, stderr) = run_env(&["load", &docs, "-o", out, "--progress", "never"], &env);
        assert_eq!(code, 2, "{out}: {stderr}");
        assert!(stderr.contains("is inside the Delta"), "{out}: {stderr}");
    }
    let after: Vec<String> = objects(&moto, "lake", "")
        .into_iter()
        .filter(|k| !k.contains("/.probe-"))
        .collect();
    assert_eq!(
        after, before,
        "nothing written but the probe (which is deleted)"
    );
}

/// Rows of a Parquet glob, read by DuckDB with hive partitioning (as the README's query does).
#[cfg(feature = "external")]
fn duckdb_count(glob: &str) -> u64 {
    let script = format!(
        "import duckdb; print(duckdb.sql(\"SELECT count(*) FROM read_parquet('{glob}', hive_partitioning=true)\").fetchall()[0][0])"
    );
    let o = std::process::Command::new(python())
        .args(["-c", &script])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).trim().parse().unwrap()
}

/// `-o out.parquet` writes exactly one Parquet file of the groups table (no dataset state, no accounts), its
/// rejects beside it; options that need a dataset are refused; an input without rows still gives a file.
#[cfg(feature = "external")]
#[test]
fn an_output_ending_in_parquet_is_one_file() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.parquet");
    let (code, stderr) = load(
        &out,
        &[&fixture("edge-cases.jsonl"), "--max-reject-ratio", "1"],
    );
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.contains("one Parquet file"), "{stderr}");
    let mut names: Vec<String> = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        ["out.parquet", "out.parquet.rejects.ndjson"],
        "no state, no accounts"
    );
    let rows = read_file(&out);
    assert_eq!(rows.len(), 12);
    assert_eq!(duckdb_count(out.to_str().unwrap()), 12);
    let rejects = fs::read_to_string(dir.path().join("out.parquet.rejects.ndjson")).unwrap();
    assert_eq!(rejects.lines().count(), 16);
    // The same again replaces the file with the same bytes (no state to say it was loaded).
    let first = fs::read(&out).unwrap();
    let (code, _) = load(
        &out,
        &[&fixture("edge-cases.jsonl"), "--max-reject-ratio", "1"],
    );
    assert_eq!(code, 0);
    assert_eq!(fs::read(&out).unwrap(), first);
    for args in [
        &["--mode", "overwrite"][..],
        &["--partition", "day"][..],
        &["--shard", "0/2", "--format", "parquet"][..],
    ] {
        let mut all = vec![fixture("batch.ndjson")];
        all.extend(args.iter().map(|a| a.to_string()));
        let all: Vec<&str> = all.iter().map(String::as_str).collect();
        let (code, stderr) = load(&dir.path().join("other.parquet"), &all);
        assert_eq!(code, 2, "{args:?}: {stderr}");
        assert!(!dir.path().join("other.parquet").exists());
    }
    // To an object-store URL: one object, uploaded whole, its rejects beside it.
    let moto = Moto::start();
    moto.create_bucket("lake");
    let args = [
        "load",
        &fixture("edge-cases.jsonl"),
        "-o",
        "s3://lake/exports/out.parquet",
        "--max-reject-ratio",
        "1",
        "--progress",
        "never",
    ];
    let (code, stderr) = run_env(&args, &moto.env());
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(
        objects(&moto, "lake", ""),
        ["exports/out.parquet", "exports/out.parquet.rejects.ndjson"]
    );
    let fetched = dir.path().join("fetched.parquet");
    fs::write(&fetched, moto.get("lake", "exports/out.parquet")).unwrap();
    assert_eq!(read_file(&fetched).len(), 12);
    // No rows at all: still one file, of the schema.
    let empty = dir.path().join("empty.ndjson");
    fs::write(&empty, "\n\n").unwrap();
    let out = dir.path().join("empty.parquet");
    let (code, stderr) = load(&out, &[empty.to_str().unwrap()]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(read_file(&out).len(), 0);
    assert_eq!(duckdb_count(out.to_str().unwrap()), 0);
}

/// A folder with no input file (a late export) is not a usage error: the run loads nothing, exits 0 with a
/// report and a warning, or 5 under --min-rows (the report written either way). A named file that is not there
/// is exit 2, "not found", locally and as an object URL.
#[cfg(feature = "external")]
#[test]
fn an_empty_listing_loads_nothing_and_a_missing_file_is_not_found() {
    let dir = tempfile::tempdir().unwrap();
    let late = dir.path().join("1709424000000");
    fs::create_dir_all(&late).unwrap();
    let out = dir.path().join("out");
    let (code, stderr) = load(&out, &[late.to_str().unwrap(), "--quiet"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.contains("no input files"), "{stderr}");
    assert_eq!(report(&out)["rows_written"], 0);
    let out5 = dir.path().join("out5");
    let (code, stderr) = load(&out5, &[late.to_str().unwrap(), "--min-rows", "1"]);
    assert_eq!(code, 5, "{stderr}");
    assert_eq!(report(&out5)["not_published"], "min_rows");
    let (code, stderr) = load(&out, &[dir.path().join("nope.gz").to_str().unwrap()]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("not found"), "{stderr}");

    let moto = Moto::start();
    moto.create_bucket("logs");
    moto.create_bucket("lake");
    let env = moto.env();
    let args = |input: &str, out: &str, more: &[&str]| {
        let mut a = vec!["load", input, "-o", out, "--progress", "never"];
        a.extend_from_slice(more);
        a.iter().map(|s| s.to_string()).collect::<Vec<_>>()
    };
    let run = |a: Vec<String>| run_env(&a.iter().map(String::as_str).collect::<Vec<_>>(), &env);
    let (code, stderr) = run(args(
        "s3://logs/segment-logs/src/1709424000000/",
        "s3://lake/a",
        &[],
    ));
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.contains("no input files"), "{stderr}");
    let (code, stderr) = run(args(
        "s3://logs/segment-logs/src/1709424000000/",
        "s3://lake/b",
        &["--min-rows", "1"],
    ));
    assert_eq!(code, 5, "{stderr}");
    assert_eq!(
        objects(&moto, "lake", "b/_runs").len(),
        1,
        "the report of the late night"
    );
    let (code, stderr) = run(args(
        "s3://logs/segment-logs/src/nope.gz",
        "s3://lake/c",
        &[],
    ));
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("not found"), "{stderr}");
}

/// A replayed night (every event already loaded) is not a broken export: its events count toward --min-rows,
/// and every message calls them duplicates, not rejects.
#[test]
fn a_replayed_night_passes_min_rows_and_says_duplicates() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let night = fixture("export/2024-03-01.ndjson.gz");
    let (code, stderr) = load(&out, &[&night]);
    assert_eq!(code, 0, "{stderr}");
    // The same events in a file of another name: a new run, every event a duplicate of the first.
    let copy = dir.path().join("resent.ndjson.gz");
    fs::copy(&night, &copy).unwrap();
    let (code, stderr) = load(&out, &[copy.to_str().unwrap(), "--min-rows", "1"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.contains("duplicates"), "{stderr}");
    // Fewer than asked, all of them duplicates: the one line --quiet keeps names them so.
    let again = dir.path().join("resent-again.ndjson.gz");
    fs::copy(&night, &again).unwrap();
    let (code, stderr) = load(
        &out,
        &[again.to_str().unwrap(), "--min-rows", "100000", "-q"],
    );
    assert_eq!(code, 5, "{stderr}");
    assert!(
        stderr.contains("already loaded by earlier runs"),
        "{stderr}"
    );
    assert!(
        stderr.contains(" 0 rejected"),
        "duplicates are not rejects: {stderr}"
    );
}

/// Options recorded in the dataset are the defaults of later runs: a dataset made with --partition none
/// takes a plain load; only an explicitly different value is refused (hive and Delta).
#[test]
fn the_recorded_partitioning_is_the_default_of_later_runs() {
    let dir = tempfile::tempdir().unwrap();
    for format in ["hive", "delta"] {
        let out = dir.path().join(format);
        let base = ["--format", format];
        let (code, stderr) = load(
            &out,
            &[
                &fixture("segment-docs.json"),
                base[0],
                base[1],
                "--partition",
                "none",
            ],
        );
        assert_eq!(code, 0, "{format}: {stderr}");
        let (code, stderr) = load(&out, &[&fixture("batch.ndjson"), "--max-reject-ratio", "1"]);
        assert_eq!(
            code, 0,
            "{format}: a plain load takes the dataset's layout: {stderr}"
        );
        let (code, stderr) = load(&out, &[&fixture("rudderstack.jsonl"), "--partition", "day"]);
        assert_eq!(code, 2, "{format}: {stderr}");
        assert!(stderr.contains("--partition none"), "{format}: {stderr}");
    }
    let flat: Vec<_> = parquet_files(&dir.path().join("hive/groups"))
        .into_iter()
        .filter(|f| f.parent().unwrap().ends_with("groups"))
        .collect();
    assert_eq!(flat.len(), 2, "both runs' files directly in groups/");
}

/// `load --help` lists every exit code, and the shipped Kubernetes and AWS Batch definitions retry exactly
/// what a retry can fix: never 2 (usage) or 3 (reject ratio); everything else, including 5 (a late export,
/// with --min-rows 1 in both) and 6 (published, unfinished).
#[cfg(feature = "external")]
#[test]
fn the_exit_codes_are_listed_and_the_deployments_retry_by_them() {
    let o = bin().args(["load", "--help"]).output().unwrap();
    let help = String::from_utf8_lossy(&o.stdout);
    for code in 0..=6 {
        assert!(
            help.contains(&format!("\n  {code}  ")),
            "exit {code} in --help:\n{help}"
        );
    }
    assert!(
        help.contains("never 2\nor 3") || help.contains("never 2 or 3"),
        "{help}"
    );
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let k8s: serde_json::Value = serde_json::from_str(&python_check(
        "deploy_check.py",
        &[
            "k8s",
            root.join("deploy/kubernetes/job.yaml").to_str().unwrap(),
            "1.33",
        ],
        &[],
    ))
    .unwrap();
    let batch: serde_json::Value = serde_json::from_str(&python_check(
        "deploy_check.py",
        &[
            "batch",
            root.join("deploy/aws-batch/job-definition.json")
                .to_str()
                .unwrap(),
            root.join("deploy/aws-batch/submit-job.json")
                .to_str()
                .unwrap(),
        ],
        &[],
    ))
    .unwrap();
    assert_eq!(k8s["never_retried"], serde_json::json!([2, 3]));
    assert_eq!(batch["never_retried"], serde_json::json!([2, 3]));
    let argv = k8s["shards"][0].as_array().unwrap();
    assert!(argv.iter().any(|a| a == "--min-rows"), "{argv:?}");
    assert!(
        batch["command"][2]
            .as_str()
            .unwrap()
            .contains("--min-rows 1")
    );
}

/// `load INPUT -o OUT` with `env`, retrying a store for 2 s at most: (exit code, stderr).
fn load_briefly(input: &str, out: &str, env: &[(String, String)]) -> (i32, String) {
    run_env(
        &[
            "load",
            input,
            "-o",
            out,
            "--progress",
            "never",
            "--retry-timeout",
            "2s",
        ],
        env,
    )
}

/// No object-store configuration makes the tool panic: each bad one exits 1 or 2 with a message naming what
/// is wrong (the variable, the missing credentials); none of them sends a request off this machine (the
/// metadata endpoint is a closed port on 127.0.0.1).
#[test]
fn bad_object_store_configuration_never_panics() {
    let dir = tempfile::tempdir().unwrap();
    let input = fixture("segment-docs.json");
    let closed = format!(
        "http://{}",
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
    );
    let keys = [("AWS_ACCESS_KEY_ID", "x"), ("AWS_SECRET_ACCESS_KEY", "y")];
    // (environment, output, exit code, what the message names)
    type Case<'a> = (Vec<(&'a str, &'a str)>, &'a str, i32, &'a str);
    let cases: Vec<Case<'_>> = vec![
        (
            vec![("AWS_ENDPOINT_URL", "127.0.0.1:9000"), keys[0], keys[1]],
            "s3://b/p",
            2,
            "AWS_ENDPOINT_URL",
        ),
        (
            vec![("AWS_ENDPOINT_URL", "http://"), keys[0], keys[1]],
            "s3://b/p",
            2,
            "AWS_ENDPOINT_URL",
        ),
        (
            vec![("AWS_METADATA_ENDPOINT", "not a url")],
            "s3://b/p",
            2,
            "AWS_METADATA_ENDPOINT",
        ),
        (
            vec![("AWS_EC2_METADATA_DISABLED", "true")],
            "s3://b/p",
            2,
            "no AWS credentials found",
        ),
        (
            vec![("AWS_METADATA_ENDPOINT", closed.as_str())],
            "s3://b/p",
            1,
            "no AWS credentials found",
        ),
        (vec![], "az://container/p", 2, "az://container/p"),
        (vec![], "gs:///p", 2, "no bucket"),
        (vec![], "gs://b/p", 2, "GOOGLE_APPLICATION_CREDENTIALS"),
    ];
    for (env, out, code, said) in cases {
        let mut env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        if !env.iter().any(|(k, _)| k == "AWS_METADATA_ENDPOINT") {
            env.push(("AWS_METADATA_ENDPOINT".into(), closed.clone()));
        }
        env.push((
            "GOOGLE_SERVICE_ACCOUNT".into(),
            dir.path().join("none.json").display().to_string(),
        ));
        let (got, stderr) = load_briefly(&input, out, &env);
        assert!(!stderr.contains("panicked"), "{env:?} {out}: {stderr}");
        assert_eq!(got, code, "{env:?} {out}: {stderr}");
        assert!(stderr.contains(said), "{env:?} {out}: {stderr}");
    }
}

/// GCS and Azure with nothing to sign with: each chain ends at its cloud's metadata (managed identity) service,
/// here a closed port on 127.0.0.1, and the run says no credentials were found (exit 1), where it looked and
/// what to set, not a bare connection error.
#[test]
fn gcs_and_azure_chains_that_find_nothing_say_no_credentials() {
    let input = fixture("segment-docs.json");
    let cases = [
        (
            vec![],
            "gs://b/p",
            "no Google Cloud credentials found",
            "GOOGLE_APPLICATION_CREDENTIALS",
        ),
        (
            vec![("AZURE_STORAGE_ACCOUNT_NAME".to_string(), "acct".to_string())],
            "az://c/p",
            "no Azure credentials found",
            "AZURE_STORAGE_ACCOUNT_KEY",
        ),
    ];
    for (env, out, said, names) in cases {
        let (code, stderr) = load_briefly(&input, out, &env);
        assert_eq!(code, 1, "{out}: {stderr}");
        assert!(
            stderr.contains(said) && stderr.contains(names) && stderr.contains(out),
            "{out}: {stderr}"
        );
    }
}

/// A missing output bucket is found before the input is read (the error names the bucket, not the input
/// whose read would fail), and --retry-timeout is the time a store that does not answer is retried.
#[cfg(feature = "external")]
#[test]
fn an_unusable_output_is_found_before_reading_and_retries_last_the_timeout() {
    let moto = Moto::start();
    let env = moto.env();
    let dir = tempfile::tempdir().unwrap();
    // An input that fails when read: were it read first, its error would be the one reported.
    let broken = dir.path().join("broken.ndjson.gz");
    fs::write(&broken, [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3, 1, 2, 3]).unwrap();
    let (code, stderr) = run_env(
        &[
            "load",
            broken.to_str().unwrap(),
            "-o",
            "s3://no-such-bucket/p",
            "--progress",
            "never",
        ],
        &env,
    );
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("s3://no-such-bucket/") && stderr.contains("NoSuchBucket"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("broken.ndjson.gz"),
        "the input was read first: {stderr}"
    );
    // A closed port: retried for --retry-timeout, then exit 1 saying so.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let mut env = env;
    for (k, v) in env.iter_mut() {
        if k == "AWS_ENDPOINT_URL" {
            *v = format!("http://{closed}");
        }
    }
    let started = Instant::now();
    let (code, stderr) = run_env(
        &[
            "load",
            &fixture("segment-docs.json"),
            "-o",
            "s3://lake/p",
            "--progress",
            "never",
            "--retry-timeout",
            "8s",
        ],
        &env,
    );
    let took = started.elapsed();
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("retry_timeout: 8s"), "{stderr}");
    assert!(
        took >= Duration::from_secs(8),
        "gave up after {took:?}: {stderr}"
    );
}

/// Words that must agree with the tool: --mode append does not "replace its own files", the summary of a
/// repeated run does not send anyone to --mode overwrite, no help or schema text names a contract file, and a
/// CSV input is said to be CSV.
#[test]
fn words_agree_with_the_tool() {
    let help = String::from_utf8(bin().args(["load", "--help"]).output().unwrap().stdout).unwrap();
    assert!(!help.contains("replaces its own files"), "{help}");
    assert!(help.contains("inputs has nothing to"), "{help}");
    let top = String::from_utf8(bin().arg("--help").output().unwrap().stdout).unwrap();
    assert!(top.contains("Delta") && top.contains("one file"), "{top}");
    let schema = String::from_utf8(bin().arg("schema").output().unwrap().stdout).unwrap();
    for text in [&help, &top, &schema] {
        assert!(!text.contains("SPEC") && !text.contains('§'), "{text}");
    }
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let (code, first) = load(&out, &[&fixture("segment-docs.json")]);
    assert_eq!(code, 0, "{first}");
    let (code, again) = load(&out, &[&fixture("segment-docs.json")]);
    assert_eq!(code, 0);
    assert!(
        again.contains("nothing to do") && !again.contains("overwrite"),
        "{again}"
    );
    let csv = dir.path().join("export.csv.json");
    fs::write(
        &csv,
        "messageId,groupId,userId,timestamp\nm1,g1,u1,2024-01-01T00:00:00Z\n",
    )
    .unwrap();
    let (code, stderr) = load(&dir.path().join("csv"), &[csv.to_str().unwrap()]);
    assert_eq!(code, 3, "{stderr}");
    assert!(stderr.contains("looks like CSV"), "{stderr}");
}
