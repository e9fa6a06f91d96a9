//! Keeping a dataset healthy for years: `compact`, `status` and `--metrics`, on datasets built the way cron
//! builds them (30 nightly exports with late data, 4 shards a night), read back by independent readers
//! (DuckDB, polars, Spark for hive; deltalake, polars and DuckDB's delta_scan for Delta) and by Prometheus's
//! own text parser (`prometheus_client`), through `tests/consumer/maintenance_check.py`.
#![cfg(feature = "external")]
// Needs the Python readers scripts/test.sh installs (cargo test --features external).

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime};

use common::*;

const SHARDS: usize = 4;
const NIGHTS: usize = 30;

/// The day `d` days after 2026-10-01.
fn day(d: usize) -> String {
    (chrono::NaiveDate::from_ymd_opt(2026, 10, 1).unwrap() + chrono::Days::new(d as u64))
        .format("%Y-%m-%d")
        .to_string()
}

/// Night `d`'s export: `SHARDS` files of Group calls (and a track call to skip), most received that day, a
/// third of them late (received one or two days earlier: a partition keeps getting files), groups updated
/// again and again, a trait cleared now and then.
fn write_night(root: &Path, d: usize) -> PathBuf {
    let dir = root.join(format!("night-{d:02}"));
    fs::create_dir_all(&dir).unwrap();
    for k in 0..SHARDS {
        let mut text = String::new();
        for i in 0..6 {
            let late = if i % 3 == 0 { 1 + (i / 3) % 2 } else { 0 };
            let received = format!(
                "{}T{:02}:{:02}:{:02}Z",
                day(d.saturating_sub(late)),
                (i * 5 + k) % 24,
                d,
                i
            );
            let plan = match (d + k + i) % 5 {
                0 => "null".to_string(),
                p => format!("\"plan-{p}\""),
            };
            text.push_str(&format!(
                r#"{{"type":"group","messageId":"m-{d}-{k}-{i}","groupId":"g{}","userId":"u{}","timestamp":"{received}","receivedAt":"{received}","traits":{{"name":"Group {d}-{k}","plan":{plan},"employees":{},"seats":{i}}}}}"#,
                (d * 7 + k * 3 + i) % 13,
                (d + i) % 17,
                10 + d * k + i
            ));
            text.push('\n');
        }
        text.push_str(&format!(
            r#"{{"type":"track","event":"Signed Up","messageId":"t-{d}-{k}","userId":"u1","receivedAt":"{}T01:00:00Z"}}"#,
            day(d)
        ));
        text.push('\n');
        fs::write(dir.join(format!("part-{k}.ndjson")), text).unwrap();
    }
    dir
}

/// Starts the binary in the background (the environment of [`bin`]).
fn spawn(args: &[&str]) -> std::process::Child {
    let mut cmd = std::process::Command::new(assert_cmd::cargo::cargo_bin("group-loader"));
    for (k, v) in LOOPBACK_ONLY {
        cmd.env(k, v);
    }
    cmd.args(args).spawn().expect("start")
}

fn run(args: &[&str]) -> (i32, String) {
    let o = bin().args(args).output().expect("run");
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

fn ok(args: &[&str]) -> String {
    let (code, err) = run(args);
    assert_eq!(code, 0, "{args:?}: {err}");
    err
}

/// Loads nights `from..to`, four runs a night: Delta as shards (`--shard K/4`, one file each); hive, which
/// takes one run at a time, as four runs of one file each (the same files a partition).
fn load_nights(inputs: &Path, out: &Path, nights: std::ops::Range<usize>, format: &str) {
    for d in nights {
        let night = write_night(inputs, d);
        for k in 0..SHARDS {
            let shard = format!("{k}/{SHARDS}");
            let file = night.join(format!("part-{k}.ndjson"));
            let (input, extra) = match format {
                "delta" => (night.to_str().unwrap(), vec!["--shard", shard.as_str()]),
                _ => (file.to_str().unwrap(), vec![]),
            };
            let mut args = vec![
                "load",
                input,
                "-o",
                out.to_str().unwrap(),
                "--format",
                format,
            ];
            args.extend(extra);
            args.extend(["--progress", "never", "-q"]);
            ok(&args);
        }
    }
}

/// One run over the given nights' exports (a fresh dataset at `out`): what a dataset built night by night must
/// equal.
fn one_run(inputs: &Path, nights: impl Iterator<Item = usize>, out: &Path) {
    let mut args = vec!["load".to_string()];
    args.extend(nights.map(|d| inputs.join(format!("night-{d:02}")).display().to_string()));
    args.extend(["-o", out.to_str().unwrap(), "--progress", "never", "-q"].map(String::from));
    ok(&args.iter().map(String::as_str).collect::<Vec<_>>());
}

/// `status --format json`.
fn status(out: &Path) -> serde_json::Value {
    let o = bin()
        .args(["status", "-o", out.to_str().unwrap(), "--format", "json"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_slice(&o.stdout).unwrap()
}

/// A hive dataset's `groups` rows by partition, in the order the rows were loaded: files by modification time
/// (then name), rows in file order.
fn hive_in_order(out: &Path) -> BTreeMap<String, Vec<Row>> {
    let groups = out.join("groups");
    let mut files: Vec<(String, SystemTime, PathBuf)> = parquet_files(&groups)
        .into_iter()
        .map(|p| {
            let part = p
                .parent()
                .unwrap()
                .strip_prefix(&groups)
                .unwrap()
                .display()
                .to_string();
            (part, fs::metadata(&p).unwrap().modified().unwrap(), p)
        })
        .collect();
    files.sort_by(|a, b| (&a.0, a.1, &a.2).cmp(&(&b.0, b.1, &b.2)));
    let mut by: BTreeMap<String, Vec<Row>> = BTreeMap::new();
    for (part, _, p) in files {
        by.entry(part).or_default().extend(read_file(&p));
    }
    by
}

/// Files of each partition of a hive dataset, counted directly.
fn hive_files(out: &Path) -> BTreeMap<String, usize> {
    let groups = out.join("groups");
    let mut n = BTreeMap::new();
    for p in parquet_files(&groups) {
        let part = p
            .parent()
            .unwrap()
            .strip_prefix(&groups)
            .unwrap()
            .display()
            .to_string();
        *n.entry(part).or_insert(0) += 1;
    }
    n
}

/// Every file under `dir` (links not followed) with its bytes, the lock file aside (each command writes its
/// process id in it): what "nothing changed" compares.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut all = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let t = e.file_type().unwrap();
            if t.is_dir() {
                stack.push(e.path());
            } else if e.file_name() == "lock" {
                continue;
            } else if t.is_file() {
                all.insert(e.path(), fs::read(e.path()).unwrap());
            } else {
                all.insert(
                    e.path(),
                    fs::read_link(e.path())
                        .unwrap()
                        .into_os_string()
                        .into_encoded_bytes(),
                );
            }
        }
    }
    all
}

fn last_json_line(text: &str) -> serde_json::Value {
    serde_json::from_str(
        text.lines()
            .rev()
            .find(|l| l.starts_with('{') || l.starts_with('['))
            .unwrap(),
    )
    .unwrap()
}

/// The ids each independent reader sees.
fn readers(format: &str, out: &Path) -> BTreeMap<String, Vec<String>> {
    let text = python_check(
        "maintenance_check.py",
        &["readers", format, out.to_str().unwrap()],
        &[],
    );
    serde_json::from_value(last_json_line(&text)).unwrap()
}

/// Metric name -> its samples (labels, value).
type Samples = BTreeMap<String, Vec<(BTreeMap<String, String>, f64)>>;

/// The samples of a metrics file as `prometheus_client` parses it: name -> [(labels, value)].
fn prom(path: &Path) -> Samples {
    let text = python_check(
        "maintenance_check.py",
        &["prom", path.to_str().unwrap()],
        &[],
    );
    let mut by: Samples = BTreeMap::new();
    for s in last_json_line(&text).as_array().unwrap() {
        by.entry(s["name"].as_str().unwrap().to_string())
            .or_default()
            .push((
                serde_json::from_value(s["labels"].clone()).unwrap(),
                s["value"].as_f64().unwrap(),
            ));
    }
    by
}

/// The one value of a metric with the given extra label (or none).
fn value(m: &Samples, name: &str, label: Option<(&str, &str)>) -> f64 {
    let samples = m.get(name).unwrap_or_else(|| panic!("no {name} in {m:?}"));
    let found: Vec<f64> = samples
        .iter()
        .filter(|(l, _)| label.is_none_or(|(k, v)| l.get(k).map(String::as_str) == Some(v)))
        .map(|(_, v)| *v)
        .collect();
    assert_eq!(found.len(), 1, "{name} {label:?}: {samples:?}");
    found[0]
}

/// Checks `status` against a direct count of the dataset: rows and files of each table and partition.
fn assert_status_counts(
    st: &serde_json::Value,
    files: &BTreeMap<String, usize>,
    rows: &BTreeMap<String, usize>,
    accounts: usize,
) {
    let total_rows: usize = rows.values().sum();
    let total_files: usize = files.values().sum();
    assert_eq!(st["tables"]["groups"]["rows"], total_rows as u64, "{st:#}");
    assert_eq!(
        st["tables"]["groups"]["files"], total_files as u64,
        "{st:#}"
    );
    assert_eq!(st["tables"]["accounts"]["rows"], accounts as u64, "{st:#}");
    let listed: BTreeMap<String, (u64, u64)> = st["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["partition"].as_str().unwrap().to_string(),
                (p["rows"].as_u64().unwrap(), p["files"].as_u64().unwrap()),
            )
        })
        .collect();
    let direct: BTreeMap<String, (u64, u64)> = files
        .iter()
        .map(|(p, f)| (p.clone(), (rows[p] as u64, *f as u64)))
        .collect();
    assert_eq!(listed, direct);
}

fn rows_by_partition(by: &BTreeMap<String, Vec<Row>>) -> BTreeMap<String, usize> {
    by.iter().map(|(p, r)| (p.clone(), r.len())).collect()
}

/// The distinct group ids of a set of rows: the accounts table's row count.
fn groups_of(by: &BTreeMap<String, Vec<Row>>) -> usize {
    by.values()
        .flatten()
        .map(|r| format!("{:?}", r["group_id"]))
        .collect::<std::collections::BTreeSet<_>>()
        .len()
}

fn all_ids(by: &BTreeMap<String, Vec<Row>>) -> Vec<String> {
    sorted_ids(by.values().flatten())
}

/// 30 nights of 4 shards with late data in a hive dataset: many files a partition; `compact` leaves one a
/// partition with every row in its place, readers see the same ids, `status` and the metrics match direct
/// counts, a second compaction does nothing, and the next loads (and their metrics) carry on as before.
#[test]
fn thirty_sharded_nights_of_hive_compact_to_one_file_a_partition() {
    let dir = tempfile::tempdir().unwrap();
    let inputs = dir.path().join("in");
    let out = dir.path().join("out");
    load_nights(&inputs, &out, 0..NIGHTS, "hive");
    let before = hive_in_order(&out);
    let files = hive_files(&out);
    assert_eq!(files.len(), NIGHTS, "a partition a day");
    // 4 shards a night, and late data from the next two nights.
    assert!(
        files.values().filter(|n| **n >= 8).count() >= NIGHTS - 2,
        "{files:?}"
    );
    assert_eq!(all_ids(&before).len(), NIGHTS * SHARDS * 6);
    let st = status(&out);
    assert_status_counts(&st, &files, &rows_by_partition(&before), groups_of(&before));
    assert_eq!(st["format"], "hive");
    assert_eq!(st["oldest_partition"], format!("dt={}", day(0)));
    assert_eq!(st["newest_partition"], format!("dt={}", day(NIGHTS - 1)));
    assert_eq!(
        st["max_files_per_partition"],
        *files.values().max().unwrap() as u64
    );
    assert_eq!(st["accounts"]["up_to_date"], true);
    // The dedupe window of the next run: the partitions of the last 8 days (7 days before the newest).
    let last8: usize = before.values().rev().take(8).map(Vec::len).sum();
    assert_eq!(st["dedupe"]["ids"], last8 as u64, "{:#}", st["dedupe"]);
    assert_eq!(st["last_runs"].as_array().unwrap().len(), 10);
    assert_eq!(st["run_records"], (NIGHTS * SHARDS) as u64);

    // A dry run says what it would do and changes nothing.
    let untouched = snapshot(&out);
    let said = ok(&["compact", "-o", out.to_str().unwrap(), "--dry-run"]);
    assert!(
        said.contains("would compact") && said.contains("dry run: nothing changed"),
        "{said}"
    );
    assert!(said.contains(&format!("dt={}", day(3))), "{said}");
    assert!(snapshot(&out) == untouched, "a dry run changed the dataset");

    let metrics = dir.path().join("compact.prom");
    let record = dir.path().join("compact.json");
    ok(&[
        "compact",
        "-o",
        out.to_str().unwrap(),
        "--metrics",
        metrics.to_str().unwrap(),
        "--report",
        record.to_str().unwrap(),
    ]);
    let after = hive_in_order(&out);
    assert!(
        hive_files(&out).values().all(|n| *n == 1),
        "{:?}",
        hive_files(&out)
    );
    // Every row, every column, in its place within its partition.
    assert_eq!(after, before, "rows or their order changed");
    let ids = all_ids(&after);
    for (engine, seen) in readers("hive", &out) {
        assert_eq!(seen, ids, "{engine} reads other ids");
    }
    let rec: serde_json::Value = serde_json::from_slice(&fs::read(&record).unwrap()).unwrap();
    assert_eq!(rec["files_before"], files.values().sum::<usize>() as u64);
    assert_eq!(rec["files_after"], NIGHTS as u64);
    assert_eq!(rec["rows_rewritten"], ids.len() as u64);
    let m = prom(&metrics);
    assert_eq!(value(&m, "group_loader_exit_code", None), 0.0);
    assert_eq!(
        value(&m, "group_loader_compact_files_before", None),
        rec["files_before"].as_f64().unwrap()
    );
    assert_eq!(
        value(&m, "group_loader_compact_files_after", None),
        NIGHTS as f64
    );
    assert_eq!(
        value(&m, "group_loader_compact_rows_rewritten", None),
        ids.len() as f64
    );
    let st = status(&out);
    assert_status_counts(
        &st,
        &hive_files(&out),
        &rows_by_partition(&after),
        groups_of(&after),
    );
    assert_eq!(st["tables"]["groups"]["small_files"], NIGHTS as u64);
    assert_eq!(
        st["last_runs"].as_array().unwrap().last().unwrap()["command"],
        "compact"
    );

    // Again: nothing to do, nothing changed.
    let untouched = snapshot(&out);
    let said = ok(&["compact", "-o", out.to_str().unwrap()]);
    assert!(said.contains("nothing to do"), "{said}");
    assert!(
        snapshot(&out) == untouched,
        "a second compaction changed the dataset"
    );

    // accounts rebuilt from the compacted files alone (a run with --no-accounts drops the snapshot, the next
    // one rebuilds it from every groups file; both find their input already loaded) equals one run's over
    // every night: the cleared traits recorded in the compacted files still point at their rows.
    let again = inputs.join(format!("night-{:02}/part-0.ndjson", NIGHTS - 1));
    for flag in [Some("--no-accounts"), None] {
        let mut args = vec![
            "load",
            again.to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
            "-q",
        ];
        args.extend(flag);
        ok(&args);
    }
    let fresh = dir.path().join("fresh-30");
    one_run(&inputs, 0..NIGHTS, &fresh);
    assert_eq!(
        accounts_rows(&out),
        accounts_rows(&fresh),
        "accounts rebuilt from compacted files"
    );

    // The next night loads as before; its metrics match its report.
    let night = write_night(&inputs, NIGHTS);
    let load_metrics = dir.path().join("load.prom");
    let report = dir.path().join("load.json");
    ok(&[
        "load",
        night.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "--progress",
        "never",
        "-q",
        "--metrics",
        load_metrics.to_str().unwrap(),
        "--report",
        report.to_str().unwrap(),
    ]);
    let r: serde_json::Value = serde_json::from_slice(&fs::read(&report).unwrap()).unwrap();
    let m = prom(&load_metrics);
    assert_eq!(
        value(&m, "group_loader_rows_written", None),
        r["rows_written"].as_f64().unwrap()
    );
    assert_eq!(r["rows_written"], (SHARDS * 6) as u64);
    assert_eq!(
        value(&m, "group_loader_events_read", None),
        r["events"].as_f64().unwrap()
    );
    assert_eq!(
        value(&m, "group_loader_skipped", Some(("type", "track"))),
        SHARDS as f64
    );
    assert_eq!(value(&m, "group_loader_inputs", None), SHARDS as f64);
    assert_eq!(value(&m, "group_loader_exit_code", None), 0.0);
    assert_eq!(value(&m, "group_loader_published", None), 1.0);
    let bytes: u64 = r["inputs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["bytes"].as_u64().unwrap())
        .sum();
    assert_eq!(value(&m, "group_loader_bytes_read", None), bytes as f64);
    let labels = &m["group_loader_rows_written"][0].0;
    assert_eq!(labels["dataset"], out.to_str().unwrap());
    assert_eq!(labels["command"], "load");
    let success = value(&m, "group_loader_last_success_timestamp_seconds", None);
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!((now - success).abs() < 120.0, "{success} vs {now}");

    // A night that fails (too few rows for --min-rows: exit 5) says so, and keeps the last success.
    let night = write_night(&inputs, NIGHTS + 1);
    let (code, _) = run(&[
        "load",
        night.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "--progress",
        "never",
        "-q",
        "--min-rows",
        "1000",
        "--metrics",
        load_metrics.to_str().unwrap(),
    ]);
    assert_eq!(code, 5);
    let m = prom(&load_metrics);
    assert_eq!(value(&m, "group_loader_exit_code", None), 5.0);
    assert_eq!(value(&m, "group_loader_published", None), 0.0);
    assert_eq!(
        value(&m, "group_loader_last_success_timestamp_seconds", None),
        success
    );
    assert!(value(&m, "group_loader_last_run_timestamp_seconds", None) >= success);

    // accounts after compaction and a night more equals one run's over every night loaded.
    let fresh = dir.path().join("fresh");
    one_run(&inputs, 0..=NIGHTS, &fresh);
    assert_eq!(accounts_rows(&out), accounts_rows(&fresh));
}

/// A hive dataset's accounts rows, as comparable text, sorted.
fn accounts_rows(out: &Path) -> Vec<String> {
    let mut rows: Vec<String> = parquet_files(&out.join("accounts"))
        .iter()
        .flat_map(|p| read_file(p))
        .map(|r| format!("{r:?}"))
        .collect();
    rows.sort();
    rows
}

/// The same nights into local Delta tables: one OPTIMIZE commit whose actions all carry `dataChange: false`,
/// a checkpoint at it, rows in their order (deltalake's Add times), readers agree, `accounts` is not rebuilt
/// by the next load, and loads committing while the compaction runs lose nothing.
#[test]
fn thirty_sharded_nights_of_delta_compact_with_data_change_false() {
    let dir = tempfile::tempdir().unwrap();
    let inputs = dir.path().join("in");
    let out = dir.path().join("out");
    load_nights(&inputs, &out, 0..NIGHTS, "delta");
    let busy = dir.path().join("busy");
    let copied = std::process::Command::new("cp")
        .arg("-a")
        .arg(&out)
        .arg(&busy)
        .status()
        .unwrap();
    assert!(copied.success());
    let order_before = delta_order(&out);
    let rows_before = python_check("delta_check.py", &["rows", out.to_str().unwrap()], &[]);
    let st = status(&out);
    let direct = delta_files(&out);
    assert_eq!(st["format"], "delta");
    assert_eq!(
        st["tables"]["groups"]["files"],
        direct.values().sum::<usize>() as u64
    );
    assert_eq!(st["tables"]["groups"]["rows"], (NIGHTS * SHARDS * 6) as u64);
    for p in st["partitions"].as_array().unwrap() {
        let part = p["partition"].as_str().unwrap();
        assert_eq!(p["files"], direct[part] as u64, "{part}");
        assert_eq!(p["rows"], order_before[part].len() as u64, "{part}");
    }
    assert!(
        direct.values().filter(|n| **n >= 8).count() >= NIGHTS - 2,
        "{direct:?}"
    );
    assert_eq!(st["accounts"]["up_to_date"], true, "{:#}", st["accounts"]);
    let version = st["version"].as_u64().unwrap();

    ok(&["compact", "-o", out.to_str().unwrap()]);
    assert!(
        delta_files(&out).values().all(|n| *n == 1),
        "{:?}",
        delta_files(&out)
    );
    assert_eq!(
        delta_order(&out),
        order_before,
        "rows or their order changed"
    );
    // Both tables' rows, as a multiset of full rows, as deltalake and polars read them.
    let rows_after = python_check("delta_check.py", &["rows", out.to_str().unwrap()], &[]);
    let strip = |t: &str| {
        let mut v = last_json_line(t);
        v.as_object_mut().unwrap().remove("groups_version");
        v
    };
    assert_eq!(strip(&rows_after), strip(&rows_before));
    let ids = {
        let mut ids: Vec<String> = order_before.values().flatten().cloned().collect();
        ids.sort();
        ids
    };
    for (engine, seen) in readers("delta", &out) {
        assert_eq!(seen, ids, "{engine} reads other ids");
    }
    let duckdb_py = match std::env::var_os("GROUP_LOADER_DUCKDB_DELTA_PYTHON") {
        Some(p) => PathBuf::from(p),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv-duckdb-delta/bin/python"),
    };
    let duck = python_check_with(
        &duckdb_py,
        "maintenance_check.py",
        &["duckdb-delta", out.to_str().unwrap()],
        &[],
    );
    assert_eq!(last_json_line(&duck)["duckdb"], serde_json::json!(ids));
    // The commit: OPTIMIZE, every Add and Remove with dataChange false, and a checkpoint at its version.
    let commit = version + 1;
    let log = fs::read_to_string(out.join(format!("groups/_delta_log/{commit:020}.json"))).unwrap();
    let actions: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let info = actions.iter().find_map(|a| a.get("commitInfo")).unwrap();
    assert_eq!(info["operation"], "OPTIMIZE");
    let adds: Vec<&serde_json::Value> = actions.iter().filter_map(|a| a.get("add")).collect();
    let removes: Vec<&serde_json::Value> = actions.iter().filter_map(|a| a.get("remove")).collect();
    assert_eq!(adds.len(), NIGHTS);
    assert_eq!(removes.len(), direct.values().sum::<usize>());
    assert!(
        adds.iter()
            .chain(&removes)
            .all(|a| a["dataChange"] == false),
        "{log}"
    );
    assert!(
        adds.iter()
            .all(|a| a["stats"].as_str().unwrap().contains("numRecords"))
    );
    assert!(
        out.join(format!("groups/_delta_log/{commit:020}.checkpoint.parquet"))
            .exists()
    );
    let st = status(&out);
    assert_eq!(st["checkpoint"], commit);
    assert_eq!(st["commits_since_checkpoint"], 0);
    // accounts reflects the version before the compaction, and is still up to date: no row moved out of it.
    assert_eq!(st["accounts"]["up_to_date"], true, "{:#}", st["accounts"]);
    assert_eq!(st["accounts"]["reflects_groups_version"], version);

    // The next load merges its own rows into accounts: no rebuild because of the compaction.
    let night = write_night(&inputs, NIGHTS);
    let report = dir.path().join("load.json");
    ok(&[
        "load",
        night.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "--format",
        "delta",
        "--progress",
        "never",
        "-q",
        "--report",
        report.to_str().unwrap(),
    ]);
    let r: serde_json::Value = serde_json::from_slice(&fs::read(&report).unwrap()).unwrap();
    assert_eq!(r["accounts"]["rebuilt"], false, "{:#}", r["accounts"]);

    // Loads committing while a compaction of the 30 nights runs (on a copy made before the compaction above):
    // the compaction's commit finds the table moved on and is made again; both land, nothing lost.
    let mut compact = spawn(&[
        "compact",
        "-o",
        busy.to_str().unwrap(),
        "-q",
        "--report",
        dir.path().join("busy.json").to_str().unwrap(),
    ]);
    let mut last = NIGHTS;
    while compact.try_wait().unwrap().is_none() && last < NIGHTS + 12 {
        last += 1;
        let night = write_night(&inputs, last);
        ok(&[
            "load",
            night.to_str().unwrap(),
            "-o",
            busy.to_str().unwrap(),
            "--format",
            "delta",
            "--progress",
            "never",
            "-q",
        ]);
    }
    assert!(compact.wait().unwrap().success());
    let rec: serde_json::Value =
        serde_json::from_slice(&fs::read(dir.path().join("busy.json")).unwrap()).unwrap();
    assert!(
        rec["retries"].as_u64().unwrap() >= 1,
        "no load committed while the compaction ran: {rec:#}"
    );
    let fresh = dir.path().join("fresh");
    // The copy holds nights 0..30 and those loaded during its compaction (not night 30, loaded above).
    let nights = (0..NIGHTS).chain(NIGHTS + 1..=last);
    one_run(&inputs, nights, &fresh);
    // Every row of every night once, and accounts equal to one run's over them all.
    python_check(
        "delta_check.py",
        &["compare", fresh.to_str().unwrap(), busy.to_str().unwrap()],
        &[],
    );
}

/// Files of each partition of a local Delta `groups` table, as deltalake lists them.
fn delta_files(out: &Path) -> BTreeMap<String, usize> {
    let text = python_check(
        "maintenance_check.py",
        &["delta-files", out.to_str().unwrap()],
        &[],
    );
    serde_json::from_value(last_json_line(&text)).unwrap()
}

/// Each partition's ids in row order, as deltalake's Add actions order the files.
fn delta_order(out: &Path) -> BTreeMap<String, Vec<String>> {
    let text = python_check(
        "maintenance_check.py",
        &["delta-order", out.to_str().unwrap()],
        &[],
    );
    serde_json::from_value(last_json_line(&text)).unwrap()
}

/// A compaction killed (SIGKILL) at some moment leaves the dataset as before or as after, never both and never
/// part; running it again finishes it, equal to a compaction never interrupted. Hive and local Delta, kill
/// times spread over the length of an uninterrupted compaction.
#[test]
fn a_killed_compaction_leaves_before_or_after_and_a_rerun_finishes_it() {
    let dir = tempfile::tempdir().unwrap();
    let inputs = dir.path().join("in");
    for format in ["hive", "delta"] {
        let base = dir.path().join(format!("{format}-base"));
        load_nights(&inputs, &base, 0..10, format);
        let copy = |name: &str| {
            let to = dir.path().join(name);
            let st = std::process::Command::new("cp")
                .arg("-a")
                .arg(&base)
                .arg(&to)
                .status()
                .unwrap();
            assert!(st.success());
            to
        };
        let order = |o: &Path| -> BTreeMap<String, Vec<String>> {
            match format {
                "hive" => hive_in_order(o)
                    .into_iter()
                    .map(|(p, rows)| {
                        (
                            p,
                            rows.iter()
                                .map(|r| match &r["id"] {
                                    V::S(s) => s.clone(),
                                    v => panic!("{v:?}"),
                                })
                                .collect(),
                        )
                    })
                    .collect(),
                _ => delta_order(o),
            }
        };
        let before = order(&base);
        let reference = copy(&format!("{format}-reference"));
        let t = Instant::now();
        ok(&["compact", "-o", reference.to_str().unwrap(), "-q"]);
        let length = t.elapsed();
        assert_eq!(order(&reference), before);
        let mut seed = clock_seed();
        eprintln!("{format}: compaction takes {length:?}; seed {seed}");
        // Kills that landed while the compaction was still running: with none, the trials test nothing.
        let mut mid_run = 0;
        for trial in 0..4 {
            let out = copy(&format!("{format}-killed-{trial}"));
            let at =
                length.mul_f64((trial as f64 + (xorshift(&mut seed) % 100) as f64 / 100.0) / 4.0);
            let mut child = spawn(&["compact", "-o", out.to_str().unwrap(), "-q"]);
            std::thread::sleep(at);
            if child.try_wait().unwrap().is_none() {
                mid_run += 1;
            }
            let _ = child.kill();
            let _ = child.wait();
            // Before or after: the same rows in the same order either way (both at once would double them).
            assert_eq!(order(&out), before, "{format}, killed after {at:?}");
            let files = match format {
                "hive" => hive_files(&out),
                _ => delta_files(&out),
            };
            let compacted = files.values().all(|n| *n == 1);
            let untouched = files
                == match format {
                    "hive" => hive_files(&base),
                    _ => delta_files(&base),
                };
            assert!(
                compacted || untouched,
                "{format}, killed after {at:?}: partly compacted {files:?}"
            );
            ok(&["compact", "-o", out.to_str().unwrap(), "-q"]);
            assert_eq!(order(&out), before);
            let files = match format {
                "hive" => hive_files(&out),
                _ => delta_files(&out),
            };
            assert!(
                files.values().all(|n| *n == 1),
                "{format}: the re-run did not finish: {files:?}"
            );
            if format == "delta" {
                // Every version still reads whole (a version naming a missing file fails here).
                python_check("delta_check.py", &["state", out.to_str().unwrap()], &[]);
            }
        }
        assert!(
            mid_run >= 1,
            "{format}: every kill came after the compaction had ended"
        );
    }
}

/// A file the tool did not write in a partition to compact is refused (exit 2, named), nothing changed; a
/// folder that holds no dataset, and --from after --to, are refused too.
#[test]
fn what_the_tool_did_not_write_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    load_nights(&dir.path().join("in"), &out, 0..3, "hive");
    // A Parquet file of other columns, dropped into a partition by hand.
    let part = out.join("groups").join(format!("dt={}", day(1)));
    let foreign = part.join("from-elsewhere.parquet");
    {
        use arrow::array::{ArrayRef, Int64Array, RecordBatch};
        let batch = RecordBatch::try_from_iter([(
            "x",
            std::sync::Arc::new(Int64Array::from(vec![1, 2])) as ArrayRef,
        )])
        .unwrap();
        let mut w = parquet::arrow::ArrowWriter::try_new(
            fs::File::create(&foreign).unwrap(),
            batch.schema(),
            None,
        )
        .unwrap();
        w.write(&batch).unwrap();
        w.close().unwrap();
    }
    let untouched = snapshot(&out);
    let (code, err) = run(&["compact", "-o", out.to_str().unwrap()]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("from-elsewhere.parquet") && err.contains("not written by group-loader"),
        "{err}"
    );
    assert!(
        snapshot(&out) == untouched,
        "a refused compaction changed the dataset"
    );
    // Out of the range, the partition is not touched and the others are compacted.
    let (code, err) = run(&["compact", "-o", out.to_str().unwrap(), "--from", &day(2)]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(hive_files(&out)[&format!("dt={}", day(2))], 1);
    assert!(foreign.exists());
    let (code, err) = run(&[
        "compact",
        "-o",
        out.to_str().unwrap(),
        "--from",
        &day(2),
        "--to",
        &day(1),
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--from"), "{err}");
    // A Delta table another writer moved to deletion vectors (reader protocol 3): refused, nothing changed.
    let delta = dir.path().join("delta");
    load_nights(&dir.path().join("in"), &delta, 0..2, "delta");
    python_check(
        "maintenance_check.py",
        &["add-deletion-vectors", delta.to_str().unwrap()],
        &[],
    );
    let untouched = snapshot(&delta);
    let (code, err) = run(&["compact", "-o", delta.to_str().unwrap()]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("protocol version 3") && err.contains("deletionVectors"),
        "{err}"
    );
    assert!(
        snapshot(&delta) == untouched,
        "a refused compaction changed the table"
    );
    let empty = dir.path().join("empty");
    fs::create_dir_all(&empty).unwrap();
    for cmd in ["compact", "status"] {
        let (code, err) = run(&[cmd, "-o", empty.to_str().unwrap()]);
        assert_eq!(code, 2, "{cmd}: {err}");
        assert!(
            err.contains("holds no group-loader dataset"),
            "{cmd}: {err}"
        );
        assert_eq!(
            fs::read_dir(&empty).unwrap().count(),
            0,
            "{cmd} wrote into {}",
            empty.display()
        );
    }
    // A metrics file of a command that failed before it could do anything still says how it ended.
    let metrics = dir.path().join("status.prom");
    let (code, _) = run(&[
        "status",
        "-o",
        empty.to_str().unwrap(),
        "--metrics",
        metrics.to_str().unwrap(),
    ]);
    assert_eq!(code, 2);
    let m = prom(&metrics);
    assert_eq!(value(&m, "group_loader_exit_code", None), 2.0);
    assert!(!m.contains_key("group_loader_last_success_timestamp_seconds"));
}

/// `status --metrics`: the figures a monitoring system watches, equal to a direct count.
#[test]
fn status_metrics_match_a_direct_count() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    load_nights(&dir.path().join("in"), &out, 0..4, "hive");
    let metrics = dir.path().join("status.prom");
    let text = bin()
        .args([
            "status",
            "-o",
            out.to_str().unwrap(),
            "--metrics",
            metrics.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(text.status.success());
    let text = String::from_utf8(text.stdout).unwrap();
    assert!(text.contains("hive dataset, partitioned by day"), "{text}");
    let by = hive_in_order(&out);
    let files = hive_files(&out);
    let m = prom(&metrics);
    let g = Some(("table", "groups"));
    assert_eq!(
        value(&m, "group_loader_dataset_files", g),
        files.values().sum::<usize>() as f64
    );
    assert_eq!(
        value(&m, "group_loader_dataset_rows", g),
        by.values().map(Vec::len).sum::<usize>() as f64
    );
    assert_eq!(
        value(&m, "group_loader_dataset_rows", Some(("table", "accounts"))),
        groups_of(&by) as f64
    );
    assert_eq!(value(&m, "group_loader_dataset_partitions", None), 4.0);
    assert_eq!(
        value(&m, "group_loader_dataset_max_files_per_partition", None),
        *files.values().max().unwrap() as f64
    );
    let newest = chrono::NaiveDate::parse_from_str(&day(3), "%Y-%m-%d")
        .unwrap()
        .and_hms_opt(0, 0, 0)
        .unwrap()
        .and_utc()
        .timestamp();
    assert_eq!(
        value(
            &m,
            "group_loader_dataset_newest_partition_timestamp_seconds",
            None
        ),
        newest as f64
    );
    assert_eq!(
        value(&m, "group_loader_dataset_accounts_up_to_date", None),
        1.0
    );

    // forget --metrics: what the request removed, as its record says.
    let forget_metrics = dir.path().join("forget.prom");
    let record = dir.path().join("forget.json");
    ok(&[
        "forget",
        "-o",
        out.to_str().unwrap(),
        "--user-id",
        "u1",
        "-q",
        "--metrics",
        forget_metrics.to_str().unwrap(),
        "--report",
        record.to_str().unwrap(),
    ]);
    let rec: serde_json::Value = serde_json::from_slice(&fs::read(&record).unwrap()).unwrap();
    let removed = by
        .values()
        .flatten()
        .filter(|r| r["user_id"] == s("u1"))
        .count();
    assert!(removed > 0);
    assert_eq!(rec["rows_removed"], removed as u64);
    let m = prom(&forget_metrics);
    assert_eq!(
        value(&m, "group_loader_forget_rows_removed", None),
        removed as f64
    );

    // A load with --no-accounts drops the snapshot: status says none is kept, and has no up-to-date figure.
    let night = write_night(&dir.path().join("in"), 4);
    ok(&[
        "load",
        night.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "-q",
        "--no-accounts",
    ]);
    let st = status(&out);
    assert_eq!(st["accounts"]["kept"], false, "{:#}", st["accounts"]);
    assert!(
        st["accounts"]["up_to_date"].is_null(),
        "{:#}",
        st["accounts"]
    );
    ok(&[
        "status",
        "-o",
        out.to_str().unwrap(),
        "--metrics",
        metrics.to_str().unwrap(),
    ]);
    assert!(!prom(&metrics).contains_key("group_loader_dataset_accounts_up_to_date"));
    assert_eq!(value(&m, "group_loader_exit_code", None), 0.0);
}

/// Delta tables on S3 (moto_server): compaction through object storage (sources downloaded, the rewrite
/// uploaded, the commit conditional), `status` from the log and `_last_checkpoint`, rows unchanged as deltalake
/// and polars read them.
#[test]
fn compaction_and_status_on_s3() {
    let dir = tempfile::tempdir().unwrap();
    let moto = Moto::start();
    moto.create_bucket("lake");
    let env = moto.env();
    let url = "s3://lake/ds";
    let ok_env = |args: &[&str]| {
        let (code, err) = run_env(args, &env);
        assert_eq!(code, 0, "{args:?}: {err}");
        err
    };
    for d in 0..3 {
        let night = write_night(&dir.path().join("in"), d);
        for k in 0..SHARDS {
            let shard = format!("{k}/{SHARDS}");
            ok_env(&[
                "load",
                night.to_str().unwrap(),
                "-o",
                url,
                "--shard",
                &shard,
                "--progress",
                "never",
                "-q",
            ]);
        }
    }
    let status_env = || -> serde_json::Value {
        let o = bin()
            .args(["status", "-o", url, "--format", "json"])
            .envs(env.iter().map(|(k, v)| (k, v)))
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        serde_json::from_slice(&o.stdout).unwrap()
    };
    let rows = |v: serde_json::Value| {
        let mut v = v;
        v.as_object_mut().unwrap().remove("groups_version");
        v
    };
    let before = rows(last_json_line(&python_check(
        "delta_check.py",
        &["rows", url],
        &env,
    )));
    let st = status_env();
    assert_eq!(st["tables"]["groups"]["rows"], (3 * SHARDS * 6) as u64);
    assert!(
        st["max_files_per_partition"].as_u64().unwrap() >= 8,
        "{st:#}"
    );
    let files: u64 = st["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["files"].as_u64().unwrap())
        .sum();
    assert_eq!(files, st["tables"]["groups"]["files"].as_u64().unwrap());
    let said = ok_env(&["compact", "-o", url]);
    assert!(said.contains("compacted"), "{said}");
    let st = status_env();
    assert_eq!(st["max_files_per_partition"], 1, "{st:#}");
    assert_eq!(st["tables"]["groups"]["rows"], (3 * SHARDS * 6) as u64);
    assert_eq!(st["checkpoint"], st["version"]);
    assert_eq!(st["accounts"]["up_to_date"], true);
    assert_eq!(
        st["last_runs"].as_array().unwrap().last().unwrap()["command"],
        "compact"
    );
    let after = rows(last_json_line(&python_check(
        "delta_check.py",
        &["rows", url],
        &env,
    )));
    assert_eq!(after, before, "rows changed");
    let said = ok_env(&["compact", "-o", url]);
    assert!(said.contains("nothing to do"), "{said}");
}
