//! A Delta run's commit under attack: killed the moment its commit file appears, and a fault proxy of the
//! tests' own between the loader and the local S3 server that loses the commit's answer, resets it, answers
//! 503 to a storm of requests, or refuses every connection for five seconds. Whatever happens, a commit that
//! landed is never reported as "nothing published" or as another run's, its rejects and report are never lost,
//! and the next run of the same inputs finishes what was left (accounts, report) without loading a row twice.
// Some of these tests need what scripts/test.sh installs (the `external` feature); their helpers are unused without it.
#![cfg_attr(not(feature = "external"), allow(dead_code, unused_imports))]

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command as Process, Stdio};
use std::time::Duration;

use common::proxy::{Fault, FaultProxy, Rule};
use common::*;

/// `files` inputs of Group calls over five days, with a few lines that are rejected, and many groups (so
/// that the `accounts` update after the commit takes a while).
fn inputs(dir: &Path, files: usize, per_file: usize) -> PathBuf {
    let input = dir.join("in");
    fs::create_dir_all(&input).unwrap();
    for f in 0..files {
        let mut text = String::new();
        for i in 0..per_file {
            if i % 500 == 7 {
                text.push_str("{\"type\":\"group\",\"messageId\":\"bad\"}\n"); // missing_group_id
                continue;
            }
            text.push_str(&format!(
                r#"{{"type":"group","messageId":"m-{f}-{i}","groupId":"g{}","userId":"u{i}","timestamp":"2024-03-{:02}T{:02}:00:00Z","traits":{{"plan":"p{}","seats":{i}}}}}"#,
                (f * per_file + i) % 5000,
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

fn load_cmd(input: &Path, out: &str, env: &[(String, String)]) -> Process {
    let mut cmd = Process::new(assert_cmd::cargo::cargo_bin("group-loader"));
    cmd.args(["load", input.to_str().unwrap(), "--output", out])
        .args([
            "--format",
            "delta",
            "--progress",
            "never",
            "--retry-timeout",
            "1m",
        ])
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    cmd
}

/// Every report in a local dataset's `_runs/`.
fn local_reports(out: &Path) -> Vec<serde_json::Value> {
    let mut names: Vec<PathBuf> = fs::read_dir(out.join("_runs"))
        .map(|d| d.map(|e| e.unwrap().path()).collect())
        .unwrap_or_default();
    names.sort();
    names
        .iter()
        .map(|p| serde_json::from_slice(&fs::read(p).unwrap()).unwrap())
        .collect()
}

/// Kills a run the moment `groups` version 1 (its commit) exists, before it can do anything after it, and
/// returns whether that moment came before the run ended.
fn kill_at_commit(mut cmd: Process, commit: &Path, accounts_commit: &Path) -> bool {
    let mut child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    loop {
        if commit.exists() {
            child.kill().unwrap(); // SIGKILL, the moment the commit file is there
            child.wait().unwrap();
            // Too late when the run already committed accounts: the trial shows nothing.
            return !accounts_commit.exists();
        }
        if child.try_wait().unwrap().is_some() {
            return false;
        }
        std::thread::sleep(Duration::from_micros(200));
    }
}

/// SIGKILL the moment the run's commit to `groups` lands: its rows are live, and its rejects and report are
/// already there (the report saying the commit is pending). The same command again finishes the run — accounts
/// brought up to date, the report completed — commits nothing new to `groups`, and exits 0; once more, it has
/// nothing to do.
#[cfg(feature = "external")]
#[test]
fn a_run_killed_the_moment_its_commit_lands_is_finished_by_the_next() {
    let dir = tempfile::tempdir().unwrap();
    let input = inputs(dir.path(), 3, 6000);
    let env = Vec::new();
    let mut trial = 0;
    let out = loop {
        trial += 1;
        assert!(
            trial <= 5,
            "never killed between the commit and the end of the run"
        );
        let out = dir.path().join(format!("out-{trial}"));
        let log = out.join("groups/_delta_log");
        let cmd = load_cmd(&input, out.to_str().unwrap(), &env);
        let accounts = out.join("accounts/_delta_log/00000000000000000001.json");
        if kill_at_commit(cmd, &log.join("00000000000000000001.json"), &accounts) {
            break out;
        }
    };
    let url = out.to_str().unwrap();
    let killed = state(url, &env);
    assert_eq!(
        ids(&killed).len(),
        3 * 6000 - 3 * 12,
        "the commit landed: every row is live"
    );
    assert_eq!(
        killed["reflects"],
        serde_json::Value::Null,
        "accounts not yet updated"
    );
    let reports = local_reports(&out);
    assert_eq!(reports.len(), 1, "the report was written before the commit");
    assert_eq!(reports[0]["not_published"], "commit_pending");
    assert_eq!(reports[0]["rows_written"], 3 * 6000 - 3 * 12);
    let rejects = common::rejects(&out);
    assert_eq!(
        rejects.len(),
        36,
        "the rejects were written before the commit"
    );
    assert!(rejects.iter().all(|r| r["reason"] == "missing_group_id"));

    let o = load_cmd(&input, url, &env).output().unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("finished run"), "{stderr}");
    assert!(!stderr.contains("concurrent"), "{stderr}");
    let finished = state(url, &env);
    assert_eq!(ids(&finished), ids(&killed), "no row loaded twice");
    assert_eq!(
        finished["groups_versions"].as_array().unwrap().len(),
        2,
        "create + the one commit"
    );
    assert_eq!(finished["reflects"], 1, "accounts reflect the commit");
    let groups: std::collections::BTreeSet<usize> = (0..3)
        .flat_map(|f| {
            (0..6000)
                .filter(|i| i % 500 != 7)
                .map(move |i| (f * 6000 + i) % 5000)
        })
        .collect();
    assert_eq!(finished["accounts"].as_array().unwrap().len(), groups.len());
    let reports = local_reports(&out);
    assert_eq!(
        reports.len(),
        1,
        "the killed run's report completed, no second one"
    );
    assert_eq!(reports[0]["published"], true);
    assert_eq!(reports[0]["not_published"], serde_json::Value::Null);
    assert_eq!(reports[0]["commit"]["groups_version"], 1);
    assert!(
        reports[0]["commit"]["accounts_version"].is_u64(),
        "{:#}",
        reports[0]
    );
    assert_eq!(reports[0]["accounts"]["groups"], groups.len());
    assert_eq!(common::rejects(&out).len(), 36);

    let o = load_cmd(&input, url, &env).output().unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("nothing to do"), "{stderr}");
    assert_eq!(state(url, &env), finished);
}

/// The dataset on the S3 server through the fault proxy: the run's outcome, and what a reader then sees.
struct Trial {
    code: Option<i32>,
    stderr: String,
    state: serde_json::Value,
    reports: Vec<serde_json::Value>,
    proxy_log: Vec<String>,
}

/// Loads `input` into `s3://lake/<name>` through a proxy with `rules`.
#[cfg(feature = "external")]
fn through_proxy(moto: &Moto, input: &Path, name: &str, rules: Vec<Rule>) -> Trial {
    let proxy = FaultProxy::start(&moto.endpoint);
    for r in rules {
        proxy.add(r);
    }
    let mut env = moto.env();
    for (k, v) in env.iter_mut() {
        if k == "AWS_ENDPOINT_URL" {
            *v = proxy.endpoint.clone();
        }
    }
    let url = format!("s3://lake/{name}");
    let o = load_cmd(input, &url, &env).output().unwrap();
    let direct = moto.env();
    let reports = objects(moto, "lake", &format!("{name}/_runs"))
        .iter()
        .map(|key| {
            let bytes = moto.get("lake", key);
            serde_json::from_slice(&bytes).unwrap()
        })
        .collect();
    Trial {
        code: o.status.code(),
        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        state: state(&url, &direct),
        reports,
        proxy_log: proxy.log(),
    }
}

fn commit_put(version: u32) -> String {
    format!("/groups/_delta_log/{version:020}.json")
}

/// The checks every faulted run must pass: exit 0, published as its own run, one report saying so with its
/// commit and accounts versions, every row once, accounts up to date.
fn assert_published(t: &Trial, rows: usize, what: &str) {
    assert_eq!(t.code, Some(0), "{what}: {}", t.stderr);
    assert!(!t.stderr.contains("concurrent"), "{what}: {}", t.stderr);
    assert_eq!(t.reports.len(), 1, "{what}: {:?}", t.reports);
    let r = &t.reports[0];
    assert_eq!(r["published"], true, "{what}: {r:#}");
    assert_eq!(r["commit"]["groups_version"], 1, "{what}: {r:#}");
    assert!(r["commit"]["accounts_version"].is_u64(), "{what}: {r:#}");
    let got = ids(&t.state);
    assert_eq!(got.len(), rows, "{what}");
    let distinct: std::collections::BTreeSet<&String> = got.iter().collect();
    assert_eq!(distinct.len(), rows, "{what}: an id twice");
    assert_eq!(t.state["reflects"], 1, "{what}: accounts up to date");
}

/// The commit reaches the server but its answer never comes back (the connection is closed, or reset): the run
/// finds its own commit in the log (its files, its transaction) and finishes as a published run.
#[cfg(feature = "external")]
#[test]
fn a_commit_whose_answer_is_lost_is_recognised_as_the_runs_own() {
    let moto = Moto::start();
    moto.create_bucket("lake");
    let dir = tempfile::tempdir().unwrap();
    let input = inputs(dir.path(), 2, 1000);
    let rows = 2 * 1000 - 2 * 2;
    for (name, fault) in [("closed", Fault::LoseAnswer), ("reset", Fault::ResetAfter)] {
        let rule = Rule {
            method: "PUT",
            path: commit_put(1),
            times: 1,
            fault,
        };
        let t = through_proxy(&moto, &input, name, vec![rule]);
        assert!(
            t.proxy_log
                .iter()
                .any(|l| l.contains(&commit_put(1)) && l.contains("Some")),
            "{name}: the fault was applied: {:?}",
            t.proxy_log
        );
        assert_published(&t, rows, name);
    }
}

/// A storm of 503 answers on every request, and a five-second outage (every connection reset) that starts
/// with the commit itself: the run rides them out within --retry-timeout and publishes once.
#[cfg(feature = "external")]
#[test]
fn a_503_storm_and_a_five_second_outage_are_ridden_out() {
    let moto = Moto::start();
    moto.create_bucket("lake");
    let dir = tempfile::tempdir().unwrap();
    let input = inputs(dir.path(), 2, 1000);
    let rows = 2 * 1000 - 2 * 2;
    let storm = Rule {
        method: "",
        path: "/".into(),
        times: 6,
        fault: Fault::Answer(503, "<Error><Code>SlowDown</Code></Error>".into()),
    };
    let t = through_proxy(&moto, &input, "storm", vec![storm]);
    assert_eq!(
        t.proxy_log
            .iter()
            .filter(|l| l.contains("Answer(503"))
            .count(),
        6,
        "{:?}",
        t.proxy_log
    );
    assert_published(&t, rows, "503 storm");
    let outage = Rule {
        method: "PUT",
        path: commit_put(1),
        times: 1,
        fault: Fault::Outage(Duration::from_secs(5)),
    };
    let t = through_proxy(&moto, &input, "outage", vec![outage]);
    assert!(
        t.proxy_log.iter().any(|l| l.contains("(outage)")),
        "connections were refused: {:?}",
        t.proxy_log
    );
    assert_published(&t, rows, "5-second outage");
}

/// A server that quotes the request's credentials back in its error body (as S3 does on a signature
/// mismatch): the error names the URL and the server's code, never the session token or the signature.
#[cfg(feature = "external")]
#[test]
fn credentials_quoted_by_a_server_are_masked_in_errors() {
    let moto = Moto::start();
    moto.create_bucket("lake");
    let dir = tempfile::tempdir().unwrap();
    let input = inputs(dir.path(), 1, 10);
    let proxy = FaultProxy::start(&moto.endpoint);
    proxy.add(Rule {
        method: "",
        path: "/".into(),
        times: 1000,
        fault: Fault::Answer(
            403,
            "<Error><Code>SignatureDoesNotMatch</Code><Message>denied</Message>\
             <X-Amz-Security-Token>{token}</X-Amz-Security-Token>\
             <SignatureProvided>5ecre7519nature</SignatureProvided>\
             <StringToSign>AWS4-HMAC-SHA256 x-amz-security-token:{token}</StringToSign></Error>"
                .into(),
        ),
    });
    let mut env = moto.env();
    for (k, v) in env.iter_mut() {
        if k == "AWS_ENDPOINT_URL" {
            *v = proxy.endpoint.clone();
        }
    }
    env.push((
        "AWS_SESSION_TOKEN".into(),
        "SESSION-TOKEN-0123456789".into(),
    ));
    let o = load_cmd(&input, "s3://lake/denied", &env).output().unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("s3://lake/denied"), "{stderr}");
    assert!(stderr.contains("SignatureDoesNotMatch"), "{stderr}");
    assert!(
        proxy.log().iter().any(|l| l.contains("Answer(403")),
        "{:?}",
        proxy.log()
    );
    for secret in [
        "SESSION-TOKEN-0123456789",
        "5ecre7519nature",
        "AWS4-HMAC-SHA256",
    ] {
        assert!(!stderr.contains(secret), "{secret} in: {stderr}");
    }
}
