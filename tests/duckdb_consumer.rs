//! Consumer test: the dataset read by an independent reader, DuckDB (through its Python package, installed by
//! `scripts/test.sh` into `.venv`). The checks themselves are in `tests/consumer/duckdb_check.py`.
//!
//! This test fails (it is never skipped) when no Python with duckdb is found: run `scripts/test.sh`, or point
//! `GROUP_LOADER_PYTHON` at a Python that has duckdb.
#![cfg(feature = "external")]
// Needs the Python readers and servers scripts/test.sh installs (cargo test --features external).

mod common;

#[test]
fn duckdb_reads_the_dataset_with_hive_partitioning() {
    let out = tempfile::tempdir().unwrap();
    let (code, stderr) = common::load(out.path(), &[common::fixtures().to_str().unwrap()]);
    assert_eq!(code, 0, "{stderr}");
    common::python_check("duckdb_check.py", &[out.path().to_str().unwrap()], &[]);
}
