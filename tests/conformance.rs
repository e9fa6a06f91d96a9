//! One suite, every table format: the same scenarios (exactly once, the `accounts` table, overwrite, a run
//! killed at any moment) run against a local hive dataset and local Delta tables, and read back the same way.
//!
//! Why this file exists: the two formats publish differently (a version switch under a lock; optimistic
//! commits), but a user must get the same dataset from either. Each scenario is written once against
//! [`Format`], which knows only how to ask for the format and how to list the files a reader sees: for hive
//! the files under `groups/` and `accounts/`, for Delta the live files of each table, replayed from its
//! `_delta_log` commits (JSON, read here without delta-rs, so the check is independent of the writer).
//! Needs nothing but the Rust toolchain.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{Row, V, load, read_file};

#[derive(Debug, Clone, Copy)]
enum Format {
    Hive,
    Delta,
}

const FORMATS: [Format; 2] = [Format::Hive, Format::Delta];

impl Format {
    fn arg(self) -> &'static str {
        match self {
            Format::Hive => "hive",
            Format::Delta => "delta",
        }
    }

    /// Runs `load INPUTS --format F ARGS -o OUT --report OUT.report.json`; returns the exit code, stderr and
    /// the report.
    fn load(self, out: &Path, inputs: &[&Path], args: &[&str]) -> (i32, String, serde_json::Value) {
        let report = out.with_extension("report.json");
        let _ = fs::remove_file(&report);
        let mut all: Vec<String> = inputs.iter().map(|p| p.display().to_string()).collect();
        all.extend(["--format", self.arg()].map(String::from));
        all.extend(args.iter().map(|a| a.to_string()));
        all.extend(["--report".to_string(), report.display().to_string()]);
        let refs: Vec<&str> = all.iter().map(String::as_str).collect();
        let (code, stderr) = load(out, &refs);
        let report = fs::read(&report)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or(serde_json::Value::Null);
        (code, stderr, report)
    }

    /// The files a reader of table `table` sees now.
    fn files(self, out: &Path, table: &str) -> Vec<PathBuf> {
        match self {
            Format::Hive => common::parquet_files(&out.join(table)),
            Format::Delta => delta_live_files(&out.join(table)),
        }
    }

    /// The rows of table `table` a reader sees now.
    fn rows(self, out: &Path, table: &str) -> Vec<Row> {
        self.files(out, table)
            .iter()
            .flat_map(|f| read_file(f))
            .collect()
    }
}

/// The live files of a local Delta table: its JSON commits replayed in version order (`add` adds a path,
/// `remove` takes it away). No table yet: none.
fn delta_live_files(table: &Path) -> Vec<PathBuf> {
    let log = table.join("_delta_log");
    let Ok(entries) = fs::read_dir(&log) else {
        return Vec::new();
    };
    let mut commits: Vec<PathBuf> = entries
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.extension().is_some_and(|e| e == "json")
                && p.file_stem()
                    .is_some_and(|s| s.to_string_lossy().chars().all(|c| c.is_ascii_digit()))
        })
        .collect();
    commits.sort();
    let mut live = BTreeSet::new();
    for c in commits {
        for line in fs::read_to_string(&c).unwrap().lines() {
            let action: serde_json::Value = serde_json::from_str(line).unwrap();
            if let Some(path) = action["add"]["path"].as_str() {
                live.insert(path.to_string());
            }
            if let Some(path) = action["remove"]["path"].as_str() {
                live.remove(path);
            }
        }
    }
    live.into_iter()
        .map(|p| table.join(urlencoding_decode(&p)))
        .collect()
}

/// Delta paths are URL-encoded; the tool only writes letters, digits, `-_.=/`, so only `%3D`-style escapes
/// of `=` can appear (some writers encode it).
fn urlencoding_decode(p: &str) -> String {
    p.replace("%3D", "=").replace("%3d", "=")
}

/// A Group call, as one NDJSON line.
fn event(id: &str, group: &str, plan: &str, time: &str) -> String {
    serde_json::json!({
        "type": "group",
        "messageId": id,
        "groupId": group,
        "userId": "u1",
        "traits": {"name": format!("Group {group}"), "plan": plan},
        "timestamp": time,
        "receivedAt": time,
    })
    .to_string()
}

fn write_lines(path: &Path, lines: &[String]) -> PathBuf {
    fs::write(path, lines.join("\n") + "\n").unwrap();
    path.to_path_buf()
}

fn text(row: &Row, col: &str) -> String {
    match &row[col] {
        V::S(s) => s.clone(),
        other => panic!("{col}: {other:?}"),
    }
}

/// `id` -> how many rows hold it.
fn id_counts(rows: &[Row]) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for r in rows {
        *counts.entry(text(r, "id")).or_insert(0) += 1;
    }
    counts
}

/// `group_id` -> `plan` of the `accounts` table.
fn plans(format: Format, out: &Path) -> BTreeMap<String, String> {
    format
        .rows(out, "accounts")
        .iter()
        .map(|r| (text(r, "group_id"), text(r, "plan")))
        .collect()
}

#[test]
fn exactly_once_a_repeated_run_and_redelivered_events_load_each_id_once() {
    for format in FORMATS {
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join("out");
        let a: Vec<String> = (0..50)
            .map(|i| event(&format!("m{i}"), "g1", "a", "2026-11-01T10:00:00Z"))
            .collect();
        let first = write_lines(&tmp.path().join("a.ndjson"), &a);
        let (code, err, report) = format.load(&out, &[&first], &[]);
        assert_eq!(code, 0, "{format:?}: {err}");
        assert_eq!(report["published"], true, "{format:?}");
        assert_eq!(report["rows_written"], 50, "{format:?}");

        // The same inputs again: nothing new, and it says so.
        let (code, err, report) = format.load(&out, &[&first], &[]);
        assert_eq!(code, 0, "{format:?}: {err}");
        assert_eq!(report["published"], false, "{format:?}");
        assert_eq!(report["not_published"], "already_loaded", "{format:?}");

        // Another file re-delivering half of them with 25 new ones.
        let b: Vec<String> = (25..75)
            .map(|i| event(&format!("m{i}"), "g1", "a", "2026-11-01T11:00:00Z"))
            .collect();
        let second = write_lines(&tmp.path().join("b.ndjson"), &b);
        let (code, err, report) = format.load(&out, &[&second], &[]);
        assert_eq!(code, 0, "{format:?}: {err}");
        assert_eq!(report["rows_written"], 25, "{format:?}");
        assert_eq!(report["duplicates"]["earlier_runs"], 25, "{format:?}");

        let counts = id_counts(&format.rows(&out, "groups"));
        let want: BTreeMap<String, usize> = (0..75).map(|i| (format!("m{i}"), 1)).collect();
        assert_eq!(counts, want, "{format:?}: every id exactly once");
    }
}

#[test]
fn accounts_hold_each_groups_latest_state_whatever_order_the_runs_bring_it() {
    for format in FORMATS {
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join("out");
        let runs = [
            vec![
                event("m1", "g1", "starter", "2026-11-01T10:00:00Z"),
                event("m2", "g2", "starter", "2026-11-01T10:00:00Z"),
            ],
            vec![event("m3", "g1", "pro", "2026-11-03T10:00:00Z")],
            // Late data: older than what accounts holds for g1, newer for g2.
            vec![
                event("m4", "g1", "free", "2026-11-02T10:00:00Z"),
                event("m5", "g2", "enterprise", "2026-11-02T10:00:00Z"),
            ],
        ];
        for (i, lines) in runs.iter().enumerate() {
            let input = write_lines(&tmp.path().join(format!("{i}.ndjson")), lines);
            let (code, err, report) = format.load(&out, &[&input], &[]);
            assert_eq!(code, 0, "{format:?} run {i}: {err}");
            // Each run's rows were folded into accounts as they were written: no groups file is read back.
            let accounts = &report["accounts"];
            assert_eq!(accounts["rows_folded"], lines.len(), "{format:?} run {i}");
            assert_eq!(accounts["rows_read"], 0, "{format:?} run {i}");
        }
        let want: BTreeMap<String, String> = [("g1", "pro"), ("g2", "enterprise")]
            .map(|(g, p)| (g.to_string(), p.to_string()))
            .into_iter()
            .collect();
        assert_eq!(plans(format, &out), want, "{format:?}");
        assert_eq!(format.rows(&out, "groups").len(), 5, "{format:?}");
    }
}

#[test]
fn overwrite_replaces_the_partitions_it_writes_and_accounts_follow() {
    for format in FORMATS {
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join("out");
        let old = write_lines(
            &tmp.path().join("old.ndjson"),
            &[
                event("o1", "g1", "old", "2026-11-01T10:00:00Z"),
                event("o2", "g2", "old", "2026-11-01T11:00:00Z"),
                event("o3", "g3", "kept", "2026-11-02T10:00:00Z"),
            ],
        );
        let (code, err, _) = format.load(&out, &[&old], &[]);
        assert_eq!(code, 0, "{format:?}: {err}");
        let new = write_lines(
            &tmp.path().join("new.ndjson"),
            &[event("n1", "g1", "new", "2026-11-01T12:00:00Z")],
        );
        let (code, err, report) = format.load(&out, &[&new], &["--mode", "overwrite"]);
        assert_eq!(code, 0, "{format:?}: {err}");
        assert_eq!(
            report["replaced"],
            serde_json::json!({"dt=2026-11-01": 2}),
            "{format:?}"
        );
        let ids: BTreeSet<String> = id_counts(&format.rows(&out, "groups"))
            .into_keys()
            .collect();
        assert_eq!(
            ids,
            ["n1", "o3"].map(String::from).into_iter().collect(),
            "{format:?}: the day written holds only the new run's rows; the other day is kept"
        );
        // g2's only event left with its partition: it is gone from accounts too.
        let want: BTreeMap<String, String> = [("g1", "new"), ("g3", "kept")]
            .map(|(g, p)| (g.to_string(), p.to_string()))
            .into_iter()
            .collect();
        assert_eq!(plans(format, &out), want, "{format:?}");
    }
}

#[test]
fn a_run_killed_at_any_moment_leaves_none_or_all_and_a_re_run_completes_it() {
    let tmp = tempfile::tempdir().unwrap();
    // Enough events over a few days that a debug build takes a while to read, write and publish them.
    let lines: Vec<String> = (0..60_000)
        .map(|i| {
            event(
                &format!("m{i}"),
                &format!("g{}", i % 500),
                "p",
                &format!("2026-11-0{}T10:00:00Z", 1 + i % 5),
            )
        })
        .collect();
    let input = write_lines(&tmp.path().join("big.ndjson"), &lines);
    for format in FORMATS {
        for (trial, delay_ms) in [30u64, 300, 900, 1800].into_iter().enumerate() {
            let out = tmp.path().join(format!("{}-{trial}", format.arg()));
            let mut child =
                std::process::Command::new(assert_cmd::cargo::cargo_bin("group-loader"))
                    .arg("load")
                    .arg(&input)
                    .args(["--format", format.arg(), "--progress", "never", "--quiet"])
                    .arg("--output")
                    .arg(&out)
                    .envs(common::LOOPBACK_ONLY)
                    .spawn()
                    .unwrap();
            std::thread::sleep(Duration::from_millis(delay_ms));
            let _ = child.kill();
            let _ = child.wait();
            let seen = format.rows(&out, "groups").len();
            assert!(
                seen == 0 || seen == lines.len(),
                "{format:?} killed after {delay_ms} ms: a reader sees {seen} rows, neither none nor all"
            );
            let (code, err, _) = format.load(&out, &[&input], &["--quiet"]);
            assert_eq!(code, 0, "{format:?} re-run after {delay_ms} ms: {err}");
            let counts = id_counts(&format.rows(&out, "groups"));
            assert_eq!(counts.len(), lines.len(), "{format:?} after {delay_ms} ms");
            assert!(
                counts.values().all(|&n| n == 1),
                "{format:?} after {delay_ms} ms: an id loaded twice"
            );
            assert_eq!(
                plans(format, &out).len(),
                500,
                "{format:?} after {delay_ms} ms"
            );
        }
    }
}
