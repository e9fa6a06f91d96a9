//! `--shard K/N`: N shard processes at once into one Delta dataset on a real S3-compatible server
//! (`moto_server`, started by the test), read back by `deltalake` and polars (`tests/consumer/delta_check.py`).
//! The export is a Segment-layout folder whose files repeat each other's events (an event delivered twice, in
//! two files, most often given to two shards). Whatever the order and interleaving of the shards' commits, the
//! dataset must equal one run's over all the files: every id once, the same rows, the same `accounts`.
// Some of these tests need what scripts/test.sh installs (the `external` feature); their helpers are unused without it.
#![cfg_attr(not(feature = "external"), allow(dead_code, unused_imports))]

mod common;

use std::collections::BTreeSet;
use std::fs;
use std::io::Write;
use std::path::Path;
use std::process::{Child, Command as Process, Stdio};
use std::time::{Duration, Instant};

use common::*;

const SHARDS: u32 = 4;
const BUCKET: &str = "warehouse";
const EXPORT: &str = "s3://segment-logs/segment-logs/Xk2Fq9Lm3T/";

/// What the generator wrote: the Group calls' lines (copies included) and their distinct ids.
struct Export {
    group_lines: usize,
    ids: BTreeSet<String>,
}

/// A night's Segment export in its S3 layout: 10 gzipped files of uneven size over two received days, every
/// event type mixed in, groups updated many times (traits set, changed and cleared), and a tenth of each file
/// repeated byte for byte in a later file (re-delivery).
fn write_export(dir: &Path) -> Export {
    let mut ids = BTreeSet::new();
    let mut group_lines = 0;
    let mut earlier: Vec<Vec<String>> = Vec::new();
    for f in 0..10usize {
        let day_ms = 1_709_424_000_000u64 + (f as u64 % 2) * 86_400_000;
        let folder = dir.join(format!("{day_ms}"));
        fs::create_dir_all(&folder).unwrap();
        let events = 150 + 70 * ((f * 7) % 10);
        let mut lines = Vec::new();
        for i in 0..events {
            let hour = (i * 5 + f) % 24;
            let day = 1 + (f % 2) + usize::from(i % 11 == 0);
            let received = format!("2024-03-0{day}T{hour:02}:{:02}:{:02}Z", i % 60, f * 3);
            let line = match i % 9 {
                7 => format!(
                    r#"{{"type":"identify","messageId":"i-{f}-{i}","userId":"u{i}","receivedAt":"{received}"}}"#
                ),
                8 => format!(
                    r#"{{"type":"track","event":"Signed Up","messageId":"t-{f}-{i}","userId":"u{i}","receivedAt":"{received}"}}"#
                ),
                _ => {
                    let plan = match (f + i) % 4 {
                        0 => "null".to_string(),
                        k => format!("\"plan-{k}\""),
                    };
                    format!(
                        r#"{{"type":"group","messageId":"m-{f}-{i}","groupId":"g{}","userId":"u{}","timestamp":"{received}","receivedAt":"{received}","traits":{{"name":"Group {}","plan":{plan},"employees":{},"seats":{}}},"context":{{"ip":"10.0.{f}.{}"}}}}"#,
                        (f * 13 + i * 7) % 120,
                        i % 50,
                        (f * 13 + i * 7) % 120,
                        10 + i,
                        f * 100 + i,
                        i % 250
                    )
                }
            };
            lines.push(line);
        }
        // Re-delivery: every tenth line of an earlier file, byte for byte.
        if f >= 1 {
            let from = &earlier[if f % 2 == 1 { f - 1 } else { f / 2 }];
            lines.extend(from.iter().step_by(10).cloned());
        }
        for line in &lines {
            if line.contains(r#""type":"group""#) {
                group_lines += 1;
                let id = line.split(r#""messageId":""#).nth(1).unwrap();
                ids.insert(id[..id.find('"').unwrap()].to_string());
            }
        }
        let name = folder.join(format!(
            "{}.{f:08x}-0000-4000-8000-000000000000.gz",
            day_ms + 3_600_000 * f as u64
        ));
        let mut gz = flate2::write::GzEncoder::new(
            fs::File::create(&name).unwrap(),
            flate2::Compression::fast(),
        );
        for line in &lines {
            writeln!(gz, "{line}").unwrap();
        }
        gz.finish().unwrap();
        earlier.push(lines);
    }
    Export { group_lines, ids }
}

struct Setup {
    /// The server, stopped when the test ends.
    _moto: Moto,
    env: Vec<(String, String)>,
    export: Export,
    /// What one (unsharded) run over the whole export wrote: rows of both tables.
    single: serde_json::Value,
    dir: tempfile::TempDir,
}

impl Setup {
    /// `group-loader load EXPORT -o OUT [--shard K/N]` with the server's environment, started; its report goes
    /// to a file of its own, read by [`finish`].
    fn start(&self, out: &str, shard: Option<u32>) -> Running {
        static STARTED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = STARTED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let report = self.dir.path().join(format!("report-{n}.json"));
        let mut cmd = Process::new(assert_cmd::cargo::cargo_bin("group-loader"));
        cmd.args(["load", EXPORT, "-o", out, "--progress", "never", "-q"])
            .arg("--report")
            .arg(&report)
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stderr(Stdio::piped());
        if let Some(k) = shard {
            cmd.arg("--shard").arg(format!("{k}/{SHARDS}"));
        }
        Running {
            child: cmd.spawn().unwrap(),
            report,
        }
    }
}

/// A load process and where its report will be.
struct Running {
    child: Child,
    report: std::path::PathBuf,
}

#[cfg(feature = "external")]
fn setup() -> Setup {
    let moto = Moto::start();
    moto.create_bucket(BUCKET);
    moto.create_bucket("segment-logs");
    let dir = tempfile::tempdir().unwrap();
    let export = write_export(dir.path());
    moto.upload_dir("segment-logs", "segment-logs/Xk2Fq9Lm3T", dir.path());
    let env = moto.env();
    let mut s = Setup {
        _moto: moto,
        env,
        export,
        single: serde_json::Value::Null,
        dir,
    };
    finish(s.start("s3://warehouse/single", None), "the single run");
    s.single = rows("s3://warehouse/single", &s.env);
    assert_eq!(
        ids_of(&s.single),
        s.export.ids,
        "the single run loads every id once"
    );
    s
}

#[cfg(feature = "external")]
fn rows(url: &str, env: &[(String, String)]) -> serde_json::Value {
    serde_json::from_str(&python_check("delta_check.py", &["rows", url], env)).unwrap()
}

fn ids_of(rows: &serde_json::Value) -> BTreeSet<String> {
    let lines = rows["groups"].as_array().unwrap();
    let ids: BTreeSet<String> = lines
        .iter()
        .map(|l| {
            let row: serde_json::Value = serde_json::from_str(l.as_str().unwrap()).unwrap();
            row["id"].as_str().unwrap().to_string()
        })
        .collect();
    assert_eq!(ids.len(), lines.len(), "an id loaded twice");
    ids
}

/// The dataset at `out` equals the single run's: the same rows (as a multiset of full rows) and the same
/// `accounts`, and `accounts` reflects the last `groups` version.
#[cfg(feature = "external")]
fn assert_equals_single(s: &Setup, out: &str, what: &str) {
    let got = rows(out, &s.env);
    assert_eq!(ids_of(&got), s.export.ids, "{what}: every id once");
    assert!(
        got["groups"] == s.single["groups"],
        "{what}: groups rows differ from the single run's"
    );
    assert!(
        got["accounts"] == s.single["accounts"],
        "{what}: accounts differ from the single run's"
    );
    assert_eq!(
        got["reflects"], got["groups_version"],
        "{what}: accounts up to date"
    );
}

/// Waits for a shard, returning its report (it must succeed).
fn finish(run: Running, what: &str) -> serde_json::Value {
    let o = run.child.wait_with_output().unwrap();
    assert!(
        o.status.success(),
        "{what}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let report = fs::read(&run.report).unwrap_or_else(|e| panic!("{what}: report: {e}"));
    serde_json::from_slice(&report).unwrap_or_else(|e| panic!("{what}: report: {e}"))
}

/// N = 4 shards started at the same moment, then in shuffled orders with staggered starts: each time the
/// dataset equals the single run's; the shards split the listing between them (same listing hash, every file
/// once), their rows and duplicates add up, and re-running every shard commits nothing new.
#[cfg(feature = "external")]
#[test]
fn shards_at_once_and_in_any_order_equal_one_run() {
    let s = setup();
    let mut seed = clock_seed();
    eprintln!("seed {seed}");
    for round in 0..3 {
        let out = format!("s3://{BUCKET}/round-{round}");
        // Round 0: all at once. Then a shuffled order, each start 0-400 ms after the previous.
        let mut order: Vec<u32> = (0..SHARDS).collect();
        if round > 0 {
            for i in (1..order.len()).rev() {
                order.swap(i, (xorshift(&mut seed) % (i as u64 + 1)) as usize);
            }
        }
        let mut children = Vec::new();
        for &k in &order {
            if round > 0 {
                std::thread::sleep(Duration::from_millis(xorshift(&mut seed) % 400));
            }
            children.push((k, s.start(&out, Some(k))));
        }
        let reports: Vec<serde_json::Value> = children
            .into_iter()
            .map(|(k, c)| finish(c, &format!("round {round} ({order:?}), shard {k}")))
            .collect();
        assert_equals_single(&s, &out, &format!("round {round}, order {order:?}"));

        // The shards split one listing: the same hash, each file in exactly one shard.
        let listing: BTreeSet<&str> = reports
            .iter()
            .map(|r| r["shard"]["listing"].as_str().unwrap())
            .collect();
        assert_eq!(listing.len(), 1, "shards saw different listings");
        let mut files: Vec<String> = reports
            .iter()
            .flat_map(|r| r["inputs"].as_array().unwrap().iter())
            .map(|i| i["path"].as_str().unwrap().to_string())
            .collect();
        files.sort();
        let distinct: BTreeSet<&String> = files.iter().collect();
        assert_eq!((files.len(), distinct.len()), (10, 10), "{files:?}");
        // Every Group line is a row in exactly one shard, or a duplicate (of this shard's, or of another's).
        let sum = |f: &dyn Fn(&serde_json::Value) -> u64| reports.iter().map(f).sum::<u64>();
        let rows = sum(&|r| r["rows_written"].as_u64().unwrap());
        let dups = sum(&|r| {
            r["duplicates"]["this_run"].as_u64().unwrap()
                + r["duplicates"]["earlier_runs"].as_u64().unwrap()
        });
        assert_eq!(rows as usize, s.export.ids.len());
        assert_eq!((rows + dups) as usize, s.export.group_lines);
        let retries = sum(&|r| r["commit"]["retries"].as_u64().unwrap());
        let concurrent = sum(&|r| r["commit"]["concurrent_duplicates"].as_u64().unwrap());
        eprintln!(
            "round {round}, order {order:?}: {rows} rows, {dups} duplicates ({concurrent} found at commit), \
             {retries} commit retries"
        );

        // A shard re-run after success commits nothing new.
        if round == 0 {
            let before = rows_version(&s, &out);
            for k in 0..SHARDS {
                let r = finish(s.start(&out, Some(k)), "re-run");
                assert_eq!(r["not_published"], "already_loaded", "shard {k}");
            }
            assert_eq!(rows_version(&s, &out), before, "a re-run committed");
        }
    }
}

#[cfg(feature = "external")]
fn rows_version(s: &Setup, out: &str) -> u64 {
    rows(out, &s.env)["groups_version"].as_u64().unwrap()
}

/// One shard killed (SIGKILL) at a random moment while the others run, then re-run as a scheduler would:
/// the dataset equals the single run's. Each trial into a fresh dataset.
#[cfg(feature = "external")]
#[test]
fn a_killed_shard_re_run_leaves_the_dataset_as_one_run() {
    let s = setup();
    // How long a shard takes here, for the kill times.
    let started = Instant::now();
    finish(
        s.start(&format!("s3://{BUCKET}/estimate"), Some(0)),
        "estimate",
    );
    let estimate = started.elapsed();
    let mut seed = clock_seed();
    eprintln!("seed {seed}, a shard alone takes {estimate:?}");
    let (mut killed, mut committed_before_kill) = (0, 0);
    for trial in 0..4 {
        let out = format!("s3://{BUCKET}/kill-{trial}");
        let victim = (xorshift(&mut seed) % SHARDS as u64) as u32;
        // Late in the run (where the commits are) as often as early: 30% to 150% of a shard's time alone.
        let delay = estimate.mul_f64(0.3 + (xorshift(&mut seed) % 1200) as f64 / 1000.0);
        let mut children: Vec<(u32, Running)> =
            (0..SHARDS).map(|k| (k, s.start(&out, Some(k)))).collect();
        let t0 = Instant::now();
        let pos = children.iter().position(|(k, _)| *k == victim).unwrap();
        let (_, mut victim_run) = children.remove(pos);
        let mut finished = false;
        while t0.elapsed() < delay {
            if victim_run.child.try_wait().unwrap().is_some() {
                finished = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        if !finished {
            victim_run.child.kill().unwrap(); // SIGKILL
            killed += 1;
        }
        let _ = victim_run.child.wait();
        for (k, c) in children {
            finish(c, &format!("trial {trial}, shard {k}"));
        }
        // The scheduler retries the shard.
        let r = finish(
            s.start(&out, Some(victim)),
            &format!("trial {trial}, re-run of shard {victim}"),
        );
        if !finished && r["not_published"] == "already_loaded" {
            committed_before_kill += 1;
        }
        assert_equals_single(
            &s,
            &out,
            &format!("trial {trial}: shard {victim} killed after {delay:?}"),
        );
    }
    eprintln!(
        "{killed} of 4 trials killed the shard mid-run; {committed_before_kill} of them after its groups commit"
    );
    assert!(killed > 0, "no trial killed a shard mid-run");
}

/// The shipped deployment definitions: the Kubernetes Indexed Job validates against Kubernetes'
/// schema and the AWS Batch job definition and submission against the Batch API model
/// (`tests/consumer/deploy_check.py`); then the command each pod or array child would run, expanded as the
/// kubelet and the shell would, is run here (N at once) against the S3 server, and both datasets equal one
/// unsharded run's over the same export.
#[cfg(feature = "external")]
#[test]
fn the_shipped_kubernetes_and_batch_definitions_run_as_shards() {
    let moto = Moto::start();
    for bucket in ["acme-segment-logs", "acme-warehouse"] {
        moto.create_bucket(bucket);
    }
    let night = fixtures().join("segment-logs/Xk2Fq9Lm3T/1709424000000");
    moto.upload_dir(
        "acme-segment-logs",
        "segment-logs/Xk2Fq9Lm3T/1709424000000",
        &night,
    );
    let env = moto.env();
    let bin = assert_cmd::cargo::cargo_bin("group-loader");
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let check = |args: &[&str]| -> serde_json::Value {
        serde_json::from_str(&python_check("deploy_check.py", args, &env)).unwrap()
    };
    let wait_all = |children: Vec<Child>, what: &str| {
        for (k, c) in children.into_iter().enumerate() {
            let o = c.wait_with_output().unwrap();
            assert!(
                o.status.success(),
                "{what} {k}: {}",
                String::from_utf8_lossy(&o.stderr)
            );
        }
    };

    // Kubernetes: each pod's argv, with the binary built here in place of the image's.
    let job = root.join("deploy/kubernetes/job.yaml");
    let k8s = check(&["k8s", job.to_str().unwrap(), "1.33"]);
    let pods: Vec<Child> = k8s["shards"]
        .as_array()
        .unwrap()
        .iter()
        .map(|argv| {
            let argv: Vec<&str> = argv
                .as_array()
                .unwrap()
                .iter()
                .map(|a| a.as_str().unwrap())
                .collect();
            assert_eq!(argv[0], "group-loader");
            Process::new(&bin)
                .args(&argv[1..])
                .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    assert_eq!(pods.len(), 4);
    wait_all(pods, "pod");

    // AWS Batch: `sh -c COMMAND` per array child, the image's PATH holding the binary built here; the output
    // overridden (as a submission may) so that both schedulers' datasets can be compared.
    let definition = root.join("deploy/aws-batch/job-definition.json");
    let submit = root.join("deploy/aws-batch/submit-job.json");
    let batch = check(&[
        "batch",
        definition.to_str().unwrap(),
        submit.to_str().unwrap(),
    ]);
    let command: Vec<&str> = batch["command"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    let path = format!(
        "{}:{}",
        bin.parent().unwrap().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let children: Vec<Child> = (0..batch["size"].as_u64().unwrap())
        .map(|k| {
            let mut cmd = Process::new(command[0]);
            cmd.args(&command[1..])
                .envs(
                    batch["env"]
                        .as_object()
                        .unwrap()
                        .iter()
                        .map(|(k, v)| (k, v.as_str().unwrap())),
                )
                .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
                .env("OUTPUT", "s3://acme-warehouse/segment-batch")
                .env("AWS_BATCH_JOB_ARRAY_INDEX", k.to_string())
                .env("PATH", &path)
                .stdout(Stdio::null())
                .stderr(Stdio::piped());
            cmd.spawn().unwrap()
        })
        .collect();
    wait_all(children, "array child");

    // One unsharded run over the same night.
    let o = Process::new(&bin)
        .args([
            "load",
            "s3://acme-segment-logs/segment-logs/Xk2Fq9Lm3T/1709424000000/",
            "-o",
            "s3://acme-warehouse/single",
            "-q",
        ])
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let single = rows("s3://acme-warehouse/single", &env);
    assert_eq!(
        ids_of(&single).len(),
        169,
        "the night's Group calls (fixtures/segment-logs)"
    );
    for out in [
        "s3://acme-warehouse/segment",
        "s3://acme-warehouse/segment-batch",
    ] {
        let got = rows(out, &env);
        assert!(got["groups"] == single["groups"], "{out}: groups");
        assert!(got["accounts"] == single["accounts"], "{out}: accounts");
    }
}

/// The command-line rules of `--shard` (no server needed): invalid values, a hive output and standard input
/// exit 2 touching nothing; a shard given no files (fewer files than shards) is a successful empty run, even
/// under `--min-rows`; the shards of one listing take every file once and report the same listing hash.
#[test]
fn shard_values_outputs_and_empty_shards() {
    let dir = tempfile::tempdir().unwrap();
    let export = fixtures().join("export");
    let export = export.to_str().unwrap();
    for bad in ["4/4", "0/0", "a/2", "1", "-1/2"] {
        let out = dir.path().join("bad");
        let arg = format!("--shard={bad}");
        let (code, stderr) = load(&out, &[export, "--format", "delta", &arg]);
        assert_eq!(code, 2, "--shard {bad}: {stderr}");
        assert!(stderr.contains("--shard"), "{stderr}");
        assert!(!out.exists(), "--shard {bad} created the output");
    }
    let hive = dir.path().join("hive");
    let (code, stderr) = load(&hive, &[export, "--shard", "0/2"]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("--shard needs --format delta"), "{stderr}");
    assert!(!hive.exists());
    let (code, stderr) = load(
        &dir.path().join("stdin"),
        &["-", "--format", "delta", "--shard", "0/2"],
    );
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("standard input"), "{stderr}");

    // fixtures/export holds 2 files: with 3 shards, shards 0 and 1 take one each and shard 2 none.
    let out = dir.path().join("delta");
    let mut hashes = BTreeSet::new();
    let mut files = 0;
    for k in 0..3 {
        let rep = dir.path().join(format!("report-{k}.json"));
        let (code, stderr) = load(
            &out,
            &[
                export,
                "--format",
                "delta",
                "--min-rows",
                "1",
                "--shard",
                &format!("{k}/3"),
                "--report",
                rep.to_str().unwrap(),
            ],
        );
        assert_eq!(code, 0, "shard {k}/3: {stderr}");
        let r: serde_json::Value = serde_json::from_slice(&fs::read(&rep).unwrap()).unwrap();
        let shard = &r["shard"];
        assert_eq!(
            (shard["index"].as_u64(), shard["count"].as_u64()),
            (Some(k), Some(3))
        );
        assert_eq!(shard["listed_files"], 2);
        let expected_files = if k < 2 { 1 } else { 0 };
        assert_eq!(shard["files"], expected_files, "{shard}");
        if k == 2 {
            assert_eq!(r["rows_written"], 0);
            assert_eq!(r["published"], true);
        } else {
            assert!(r["rows_written"].as_u64().unwrap() > 0);
        }
        files += shard["files"].as_u64().unwrap();
        hashes.insert(shard["listing"].as_str().unwrap().to_string());
    }
    assert_eq!(files, 2, "every file taken once");
    assert_eq!(hashes.len(), 1, "one listing: {hashes:?}");
}
