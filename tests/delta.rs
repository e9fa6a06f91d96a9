//! Delta Lake output and object-storage inputs, against real servers started by the tests (`moto_server` for S3,
//! Azurite for Azure Blob Storage, on 127.0.0.1 and a free port) and read back by independent readers: `deltalake` and
//! polars (Python, `tests/consumer/delta_check.py`). Nothing is mocked: the binary talks to the server over HTTP.
#![cfg(feature = "external")]
// Needs the Python readers and servers scripts/test.sh installs (cargo test --features external).

mod common;

use std::collections::BTreeSet;
use std::fs;
use std::path::Path;
use std::process::{Command as Process, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// A Segment-layout export on S3 loaded into Delta tables on S3: what deltalake and polars read equals, row by
/// row and in both tables, a hive run over the same files on disk. Re-running commits nothing new.
#[test]
fn s3_export_into_delta_on_s3_equals_a_hive_run() {
    let moto = Moto::start();
    moto.create_bucket("exports");
    moto.create_bucket("warehouse");
    moto.upload_dir("exports", "segment-logs", &fixtures().join("segment-logs"));
    export_into_delta_equals_a_hive_run("s3", &moto.env(), &|c, p| objects(&moto, c, p));
}

/// The same on Azure Blob Storage, against Azurite.
#[test]
fn azure_export_into_delta_on_azure_equals_a_hive_run() {
    let azurite = Azurite::start();
    azurite.create_container("exports");
    azurite.create_container("warehouse");
    azurite.upload_dir("exports", "segment-logs", &fixtures().join("segment-logs"));
    export_into_delta_equals_a_hive_run("az", &azurite.env(), &|c, p| azurite.objects(c, p));
}

/// The fixtures' Segment-layout export, uploaded to `<scheme>://exports/segment-logs/`, loaded into Delta tables
/// at `<scheme>://warehouse/segment` (`objects` lists a bucket's or container's names under a prefix).
fn export_into_delta_equals_a_hive_run(
    scheme: &str,
    env: &[(String, String)],
    objects: &dyn Fn(&str, &str) -> Vec<String>,
) {
    let logs = fixtures().join("segment-logs");
    let input = format!("{scheme}://exports/segment-logs/Xk2Fq9Lm3T/");
    let output = format!("{scheme}://warehouse/segment");
    let args = ["load", &input, "--output", &output, "--progress", "never"];
    let (code, stderr) = run_env(&args, env);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stderr.contains(&format!("from 4 files under {input}")),
        "{stderr}"
    );
    let dir = tempfile::tempdir().unwrap();
    let hive = dir.path().join("hive");
    let (code, stderr) = load(&hive, &[logs.to_str().unwrap()]);
    assert_eq!(code, 0, "{stderr}");
    let compared: serde_json::Value = serde_json::from_str(&python_check(
        "delta_check.py",
        &["compare", hive.to_str().unwrap(), &output],
        env,
    ))
    .unwrap();
    assert_eq!(compared["groups"], 344);
    assert_eq!(compared["accounts"], 40);
    // The report and the rejects (the one duplicate) are objects beside the tables.
    let runs = objects("warehouse", "segment/_runs");
    assert_eq!(runs.len(), 1, "{runs:?}");
    assert_eq!(objects("warehouse", "segment/_rejects").len(), 1);
    let before = state(&output, env);
    // The same command again: already committed (the run id is in the table), nothing new.
    let (code, stderr) = run_env(&args, env);
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.contains("nothing to do"), "{stderr}");
    let after = state(&output, env);
    assert_eq!(before, after, "no new version of either table");
    assert_eq!(
        after["groups_versions"].as_array().unwrap().len(),
        2,
        "create + one commit"
    );
}

/// Azure errors name the URL and what is missing: a container that does not exist (as output or input: exit 1),
/// no storage account in the environment (exit 2, naming the variables to set).
#[test]
fn azure_errors_name_the_url_and_what_is_missing() {
    let azurite = Azurite::start();
    let env = azurite.env();
    let dir = tempfile::tempdir().unwrap();
    let docs = fixtures().join("segment-docs.json");
    let docs = docs.to_str().unwrap();
    let local = dir.path().join("o");
    for (input, output) in [
        (docs, "az://nocontainer/ds"),
        ("az://nocontainer/in/", local.to_str().unwrap()),
    ] {
        let (code, stderr) = run_env(
            &[
                "load",
                input,
                "-o",
                output,
                "--progress",
                "never",
                "--retry-timeout",
                "5s",
            ],
            &env,
        );
        assert_eq!(code, 1, "{stderr}");
        assert!(
            stderr.contains("az://nocontainer/")
                && stderr.contains("the container nocontainer does not exist"),
            "{stderr}"
        );
    }
    let o = bin()
        .args(["load", docs, "-o", "az://lake/ds", "--progress", "never"])
        .env_remove("AZURE_STORAGE_USE_EMULATOR")
        .env_remove("AZURE_STORAGE_ACCOUNT_NAME")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("az://lake/ds") && stderr.contains("AZURE_STORAGE_ACCOUNT_NAME"),
        "{stderr}"
    );
}

/// A store that ignores create-if-absent writes (moto 5.0.14, as S3-compatible servers without conditional
/// writes do) is refused for Delta output before anything is read (exit 2, saying why: two runs committing at
/// once would overwrite each other's commit), and leaves nothing behind; the same server still serves inputs,
/// which need no conditional write. The servers the other tests use pass the same check (their loads succeed).
#[test]
fn a_store_without_conditional_writes_is_refused_for_delta_output() {
    let moto = Moto::start_without_conditional_writes();
    moto.create_bucket("warehouse");
    moto.create_bucket("exports");
    moto.upload_dir("exports", "segment-logs", &fixtures().join("segment-logs"));
    let env = moto.env();
    let docs = fixtures().join("segment-docs.json");
    let (code, stderr) = run_env(
        &[
            "load",
            docs.to_str().unwrap(),
            "-o",
            "s3://warehouse/segment",
            "--progress",
            "never",
        ],
        &env,
    );
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("s3://warehouse/segment")
            && stderr.contains("does not honour create-if-absent writes")
            && stderr.contains("overwrite each other's commit"),
        "{stderr}"
    );
    assert_eq!(objects(&moto, "warehouse", ""), Vec::<String>::new());

    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("o");
    let (code, stderr) = run_env(
        &[
            "load",
            "s3://exports/segment-logs/",
            "-o",
            out.to_str().unwrap(),
            "--progress",
            "never",
        ],
        &env,
    );
    assert_eq!(code, 0, "{stderr}");
    assert!(!read_dataset(&out).is_empty());
}

/// Errors name the URL and exit 1 (no such bucket, a server that does not answer after retries); hive on
/// object storage is refused (exit 2).
#[test]
fn object_store_errors_name_the_url() {
    let moto = Moto::start();
    moto.create_bucket("warehouse");
    let env = moto.env();
    let dir = tempfile::tempdir().unwrap();
    let docs = fixtures().join("segment-docs.json");
    let (code, stderr) = run_env(
        &[
            "load",
            "s3://no-such-bucket/logs/",
            "-o",
            dir.path().join("o").to_str().unwrap(),
            "--progress",
            "never",
        ],
        &env,
    );
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("s3://no-such-bucket/logs")
            && stderr.contains("the bucket no-such-bucket does not exist")
            && stderr.contains("NoSuchBucket"),
        "{stderr}"
    );
    let (code, stderr) = run_env(
        &[
            "load",
            docs.to_str().unwrap(),
            "-o",
            "s3://no-such-bucket/out",
            "--progress",
            "never",
        ],
        &env,
    );
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("s3://no-such-bucket/out"), "{stderr}");
    // Nothing listens on this port: retried, then a failure naming the URL.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut dead = env.clone();
    dead[0].1 = format!("http://127.0.0.1:{closed}");
    let started = Instant::now();
    let (code, stderr) = run_env(
        &[
            "load",
            "s3://warehouse/x.ndjson",
            "-o",
            dir.path().join("o2").to_str().unwrap(),
            "--retry-timeout",
            "2s",
            "--progress",
            "never",
        ],
        &dead,
    );
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("s3://warehouse/x.ndjson"), "{stderr}");
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "bounded by --retry-timeout"
    );
    let (code, stderr) = run_env(
        &[
            "load",
            docs.to_str().unwrap(),
            "-o",
            "s3://warehouse/h",
            "--format",
            "hive",
        ],
        &env,
    );
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("--format hive needs a local --output"),
        "{stderr}"
    );
}

/// A local Delta dataset through a night, a second night, an overwrite: each step equals the hive run of the
/// same steps (rows and accounts), the overwrite's replaced rows are reported, and the partitioning is kept.
#[test]
fn local_delta_follows_the_same_rules_as_hive() {
    let dir = tempfile::tempdir().unwrap();
    let (delta, hive) = (dir.path().join("delta"), dir.path().join("hive"));
    let day = |d: u32| {
        fixtures()
            .join(format!("export/2024-03-0{d}.ndjson.gz"))
            .display()
            .to_string()
    };
    let straggler = dir.path().join("straggler.ndjson");
    fs::write(
        &straggler,
        r#"{"type":"group","groupId":"grp-0001","userId":"u","messageId":"late","receivedAt":"2024-03-01T10:00:00Z","traits":{"plan":"enterprise"}}"#,
    )
    .unwrap();
    let steps: [Vec<String>; 3] = [
        vec![day(1)],
        vec![day(1), day(2)],
        vec![
            straggler.display().to_string(),
            "--mode".into(),
            "overwrite".into(),
        ],
    ];
    for (i, step) in steps.iter().enumerate() {
        let args: Vec<&str> = step.iter().map(String::as_str).collect();
        let (code, stderr) = load(&hive, &args);
        assert_eq!(code, 0, "hive step {i}: {stderr}");
        let mut dargs = args.clone();
        dargs.extend(["--format", "delta"]);
        let (code, stderr) = load(&delta, &dargs);
        assert_eq!(code, 0, "delta step {i}: {stderr}");
        if i == 2 {
            assert!(
                stderr.contains(
                    "replaced (--mode overwrite): 1 partitions, 439 rows of earlier runs removed"
                ),
                "{stderr}"
            );
        }
        python_check(
            "delta_check.py",
            &["compare", hive.to_str().unwrap(), delta.to_str().unwrap()],
            &[],
        );
    }
    // The layout is recorded: another --partition, or --format hive, is refused.
    let (code, stderr) = load(
        &delta,
        &[&day(2), "--format", "delta", "--partition", "hour"],
    );
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("created with --partition day"), "{stderr}");
    // The recorded format is the default: a plain load into it is a Delta load; only an explicit other
    // value is refused.
    let (code, stderr) = load(&delta, &[&day(2)]);
    assert_eq!(code, 0, "{stderr}");
    let (code, stderr) = load(&delta, &[&day(2), "--format", "hive"]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("created with --format delta"), "{stderr}");
    let (code, stderr) = load(&hive, &[&day(2), "--format", "delta"]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("created with --format hive"), "{stderr}");
}

/// Two runs of different inputs into one table at the same moment (no lock): both succeed, and the ids both
/// hold are loaded once, whichever commits first.
#[test]
fn two_runs_at_once_load_overlapping_ids_once() {
    let moto = Moto::start();
    moto.create_bucket("warehouse");
    two_runs_at_once(&moto.env(), "s3://warehouse/both");
    // Azure: the commit is a conditional create there too (If-None-Match: *), which Azurite honours.
    let azurite = Azurite::start();
    azurite.create_container("warehouse");
    two_runs_at_once(&azurite.env(), "az://warehouse/both");
}

fn two_runs_at_once(env: &[(String, String)], url: &str) {
    let dir = tempfile::tempdir().unwrap();
    let day = |d: u32| {
        fixtures()
            .join(format!("export/2024-03-0{d}.ndjson.gz"))
            .display()
            .to_string()
    };
    // Run A: days 1 and 2. Run B: day 2 and a file repeating day 1. Together: the 847 ids of the export.
    let repeat = dir.path().join("day1-again.ndjson.gz");
    fs::copy(day(1), &repeat).unwrap();
    let spawn = |inputs: &[String]| {
        let mut cmd = Process::new(assert_cmd::cargo::cargo_bin("group-loader"));
        cmd.arg("load")
            .args(inputs)
            .args(["-o", url, "--progress", "never", "-q"])
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stderr(Stdio::piped());
        cmd.spawn().unwrap()
    };
    let a = spawn(&[day(1), day(2)]);
    let b = spawn(&[day(2), repeat.display().to_string()]);
    for child in [a, b] {
        let o = child.wait_with_output().unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    let s = state(url, env);
    let got = ids(&s);
    let distinct: BTreeSet<&String> = got.iter().collect();
    assert_eq!(distinct.len(), got.len(), "an id loaded twice");
    assert_eq!(got.len(), 847);
    assert_eq!(
        s["reflects"],
        s["groups_versions"].as_array().unwrap().len() - 1,
        "accounts up to date"
    );
}

/// Inputs for the kill trials: `files` files of Group calls over a few days.
fn kill_inputs(dir: &Path, files: usize, per_file: usize) -> std::path::PathBuf {
    let input = dir.join("in");
    fs::create_dir_all(&input).unwrap();
    for f in 0..files {
        let mut text = String::new();
        for i in 0..per_file {
            text.push_str(&format!(
                r#"{{"type":"group","messageId":"m-{f}-{i}","groupId":"g{}","userId":"u","timestamp":"2024-03-{:02}T{:02}:00:00Z","traits":{{"plan":"p{}"}}}}"#,
                (f * 7 + i) % 300,
                1 + i % 5,
                i % 24,
                i % 3
            ));
            text.push('\n');
        }
        fs::write(input.join(format!("part-{f}.ndjson")), text).unwrap();
    }
    input
}

/// SIGKILL at random moments of Delta runs, on local disk, on the S3 server and on Azurite, each trial into a fresh
/// output: after the kill every version of both tables reads whole, `groups` shows none or all of the run's
/// rows, `accounts` never reflects a version `groups` does not have and is either behind or exactly the clean
/// run's; the next run completes and equals a clean run.
#[test]
fn killed_delta_runs_leave_every_version_readable() {
    let moto = Moto::start();
    moto.create_bucket("warehouse");
    let azurite = Azurite::start();
    azurite.create_container("warehouse");
    let mut env = moto.env();
    env.extend(azurite.env());
    let dir = tempfile::tempdir().unwrap();
    let input = kill_inputs(dir.path(), 3, 1500);
    let bin = assert_cmd::cargo::cargo_bin("group-loader");
    let run = |out: &str| {
        let mut cmd = Process::new(&bin);
        cmd.args([
            "load",
            input.to_str().unwrap(),
            "--output",
            out,
            "--format",
            "delta",
        ])
        .args(["--progress", "never", "-q"])
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stderr(Stdio::null());
        cmd
    };
    let mut seed = clock_seed();
    eprintln!("seed {seed}");
    for (name, trials) in [("local", 8), ("s3", 6), ("azure", 4)] {
        let out_of = |k: &str| -> String {
            match name {
                "local" => dir.path().join(k).display().to_string(),
                "s3" => format!("s3://warehouse/{k}"),
                _ => format!("az://warehouse/{k}"),
            }
        };
        let clean = out_of("clean");
        let started = Instant::now();
        assert!(run(&clean).status().unwrap().success());
        let estimate = started.elapsed();
        let expected = state(&clean, &env);
        assert_eq!(ids(&expected).len(), 4500);
        let (mut killed, mut none, mut all, mut accounts_behind) = (0, 0, 0, 0);
        for trial in 0..trials {
            xorshift(&mut seed);
            // Half the trials in the first third of the run (before the groups commit, mostly), half anywhere.
            let frac = (seed % 1000) as f64 / 1000.0;
            let delay = estimate.mul_f64(if trial % 2 == 0 {
                frac * 0.33
            } else {
                frac * 1.1
            });
            let out = out_of(&format!("killed-{trial}"));
            let started = Instant::now();
            let mut child = run(&out).spawn().unwrap();
            let mut running = true;
            while started.elapsed() < delay {
                if child.try_wait().unwrap().is_some() {
                    running = false;
                    break;
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            if running {
                child.kill().unwrap(); // SIGKILL
                killed += 1;
            }
            let status = child.wait().unwrap();
            assert!(
                running || status.success(),
                "{name} trial {trial}: {status:?}"
            );
            let s = state(&out, &env);
            let got = ids(&s);
            if got.is_empty() {
                none += 1;
            } else {
                assert_eq!(
                    got,
                    ids(&expected),
                    "{name} trial {trial}: part of a run visible"
                );
                all += 1;
            }
            let groups_version = s["groups_versions"].as_array().unwrap().len() as i64 - 1;
            let reflects = s["reflects"].as_i64().unwrap_or(-1);
            assert!(
                reflects <= groups_version,
                "{name} trial {trial}: accounts ahead of groups"
            );
            if reflects == groups_version && groups_version >= 1 {
                assert_eq!(
                    s["accounts"], expected["accounts"],
                    "{name} trial {trial}: accounts"
                );
            } else if groups_version >= 1 {
                accounts_behind += 1;
            }
            // The next run (the scheduler's retry) finishes the job.
            let rerun = run(&out).stderr(Stdio::piped()).output().unwrap();
            assert!(
                rerun.status.success(),
                "{name} trial {trial} (killed after {delay:?}): re-run: {}",
                String::from_utf8_lossy(&rerun.stderr)
            );
            let s = state(&out, &env);
            assert_eq!(
                ids(&s),
                ids(&expected),
                "{name} trial {trial}: the re-run equals a clean run"
            );
            assert_eq!(
                s["accounts"], expected["accounts"],
                "{name} trial {trial}: accounts caught up"
            );
        }
        eprintln!(
            "{name}: {killed} of {trials} killed; after the kill {none} showed no rows, {all} all of them, \
             {accounts_behind} with accounts one step behind"
        );
        assert!(killed > 0, "{name}: no trial was killed mid-run");
    }
}
