//! Consumer test: the dataset read by an independent reader, DuckDB (through its Python package, installed by
//! `scripts/test.sh` into `.venv`). The checks themselves are in `tests/consumer/duckdb_check.py`.
//!
//! This test fails (it is never skipped) when no Python with duckdb is found: run `scripts/test.sh`, or point
//! `GROUP_LOADER_PYTHON` at a Python that has duckdb.

mod common;

use std::path::PathBuf;
use std::process::Command;

fn python() -> PathBuf {
    match std::env::var_os("GROUP_LOADER_PYTHON") {
        Some(p) => PathBuf::from(p),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python"),
    }
}

#[test]
fn duckdb_reads_the_dataset_with_hive_partitioning() {
    let out = tempfile::tempdir().unwrap();
    let (code, stderr) = common::load(out.path(), &[common::fixtures().to_str().unwrap()]);
    assert_eq!(code, 0, "{stderr}");
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/consumer/duckdb_check.py");
    let py = python();
    let o = Command::new(&py)
        .arg(&script)
        .arg(out.path())
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run {} ({e}): run scripts/test.sh, which installs duckdb in .venv",
                py.display()
            )
        });
    assert!(
        o.status.success(),
        "DuckDB check failed:\n{}\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}
