//! Arbitrary bytes as an input file (plain, or claiming gzip/zstd by their magic) through a whole in-process
//! run: reading, decompression, line splitting, mapping, Parquet writing, rejects, publishing. The run
//! succeeds or fails with a clean error (exit code 1: a corrupt stream), never panics, and the counting rule
//! holds.
#![no_main]

use std::path::PathBuf;

use group_loader::load::{LoadOptions, Mode, load};
use group_loader::report::ProgressWhen;
use group_loader::writer::{Codec, PartitionMode};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let dir = tempfile::Builder::new()
        .prefix("gl-fuzz")
        .tempdir_in(if std::path::Path::new("/dev/shm").is_dir() { "/dev/shm" } else { "/tmp" })
        .expect("tempdir");
    let input = dir.path().join("in.ndjson");
    std::fs::write(&input, data).expect("write input");
    let opts = LoadOptions {
        inputs: vec![input],
        output: dir.path().join("out"),
        format: None,
        partition: PartitionMode::Hour,
        partition_given: true,
        codec: Codec::Zstd,
        mode: Mode::Append,
        max_reject_ratio: 1.0,
        min_rows: 0,
        rejects: None::<PathBuf>,
        report: None,
        memory_limit: 256 << 20,
        vacuum_retention: std::time::Duration::from_secs(7 * 86_400),
        dedupe: true,
        dedupe_window: std::time::Duration::from_secs(7 * 86_400),
        accounts: true,
        accounts_budget: 128 << 20,
        progress: ProgressWhen::Never,
        quiet: true,
        max_line_bytes: 300,
        threads: Some(2),
        shard: None,
        follow_links: false,
    };
    match load(&opts) {
        Ok(report) => assert!(report.counts.adds_up(), "{:?}", report.counts),
        Err(e) => assert_eq!(e.exit_code(), 1, "{e}"),
    }
});
