//! What warehouses read: the statements `group-loader schema --format sql --dialect D --location URL`
//! prints are run by the warehouse itself over datasets loaded here, and what it then reads is checked against
//! the runs' reports: DuckDB (hive and, through its delta extension, Delta), and Apache Spark in local mode
//! (`pyspark`, Java 17; hive: Spark's Delta support needs jars from Maven Central, which this machine cannot
//! reach). Athena, BigQuery and Snowflake cannot run here: their statements are checked as text against their
//! documented syntax in `src/ddl.rs`.
#![cfg(feature = "external")]
// Needs the Python readers and servers scripts/test.sh installs (cargo test --features external).

mod common;

use std::fs;
use std::path::{Path, PathBuf};

use common::*;

/// The statements for one table of a dataset, written to a file, and what the table must hold.
fn statements(
    dir: &Path,
    name: &str,
    out: &Path,
    args: &[&str],
    expected: serde_json::Value,
) -> (PathBuf, PathBuf) {
    let o = bin()
        .args([
            "schema",
            "--format",
            "sql",
            "--location",
            out.to_str().unwrap(),
        ])
        .args(args)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let sql = dir.join(format!("{name}.sql"));
    fs::write(&sql, &o.stdout).unwrap();
    let exp = dir.join(format!("{name}.json"));
    fs::write(&exp, expected.to_string()).unwrap();
    (sql, exp)
}

/// A hive dataset loaded with `args`: (folder, report).
fn hive(dir: &Path, name: &str, args: &[&str]) -> (PathBuf, serde_json::Value) {
    let out = dir.join(name);
    let (code, stderr) = load(&out, args);
    assert_eq!(code, 0, "{stderr}");
    let r = report(&out);
    (out, r)
}

fn expected(table: &str, r: &serde_json::Value, hour: bool) -> serde_json::Value {
    match table {
        "groups" => serde_json::json!({
            "table": "groups", "rows": r["rows_written"], "partitions": r["partitions"], "hour": hour}),
        _ => serde_json::json!({"table": "accounts", "rows": r["accounts"]["groups"]}),
    }
}

/// The hive cases every engine runs: the fixtures with day partitions (both tables) and the export with hour
/// partitions, each table's statements in `dialect` (the default, DuckDB's, when `None`).
fn hive_cases(dir: &Path, dialect: Option<&str>) -> Vec<(PathBuf, PathBuf)> {
    let fixtures = fixtures();
    let (day, r) = hive(dir, "day", &[fixtures.to_str().unwrap()]);
    let export = fixtures.join("export");
    let (hour, rh) = hive(
        dir,
        "hour",
        &[export.to_str().unwrap(), "--partition", "hour"],
    );
    let with = |more: &[&'static str]| -> Vec<&str> {
        let mut args: Vec<&str> = dialect.map(|d| vec!["--dialect", d]).unwrap_or_default();
        args.extend_from_slice(more);
        args
    };
    vec![
        statements(
            dir,
            "day-groups",
            &day,
            &with(&[]),
            expected("groups", &r, false),
        ),
        statements(
            dir,
            "day-accounts",
            &day,
            &with(&["--table", "accounts"]),
            expected("accounts", &r, false),
        ),
        statements(
            dir,
            "hour-groups",
            &hour,
            &with(&["--partition", "hour"]),
            expected("groups", &rh, true),
        ),
    ]
}

/// Runs `warehouse_check.py ENGINE` with `python` over the statement files.
fn check(engine: &str, list: &[(PathBuf, PathBuf)], python: &Path) {
    let files: Vec<String> = list
        .iter()
        .flat_map(|(s, e)| [s.display().to_string(), e.display().to_string()])
        .collect();
    let mut args = vec![engine];
    args.extend(files.iter().map(String::as_str));
    python_check_with(python, "warehouse_check.py", &args, &[]);
}

/// DuckDB runs its statements over hive datasets (day and hour partitions, both tables) and over local Delta
/// tables (`delta_scan`, with the delta extension for the DuckDB it is built for).
#[test]
fn duckdb_runs_its_statements() {
    let dir = tempfile::tempdir().unwrap();
    let fixtures = fixtures();
    check("duckdb", &hive_cases(dir.path(), None), &python());

    let delta = dir.path().join("delta");
    let (code, stderr) = load(&delta, &[fixtures.to_str().unwrap(), "--format", "delta"]);
    assert_eq!(code, 0, "{stderr}");
    let rd = report(&delta);
    let list = vec![
        statements(
            dir.path(),
            "delta-groups",
            &delta,
            &["--table-format", "delta"],
            expected("groups", &rd, false),
        ),
        statements(
            dir.path(),
            "delta-accounts",
            &delta,
            &["--table-format", "delta", "--table", "accounts"],
            expected("accounts", &rd, false),
        ),
    ];
    let duckdb_delta = match std::env::var_os("GROUP_LOADER_DUCKDB_DELTA_PYTHON") {
        Some(p) => PathBuf::from(p),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv-duckdb-delta/bin/python"),
    };
    check("duckdb", &list, &duckdb_delta);
}

/// Apache Spark (local mode) runs its statements over hive datasets: the tables it then reads have the
/// partition columns (dt DATE, hr INT), timestamps, text, and every row.
#[test]
fn spark_runs_its_statements() {
    let dir = tempfile::tempdir().unwrap();
    check("spark", &hive_cases(dir.path(), Some("spark")), &python());
}
