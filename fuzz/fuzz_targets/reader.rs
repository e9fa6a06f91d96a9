//! Arbitrary bytes as an input file (plain, or claiming gzip/zstd by their magic) through a whole in-process
//! run: reading, decompression, line splitting, mapping, Parquet writing, rejects, publishing. The run
//! succeeds or fails with a clean error (exit code 1: a corrupt stream), never panics, and the counting rule
//! holds.
#![no_main]

use group_loader::layout::PartitionMode;
use group_loader::command::load::load;
use group_loader::options::{LoadOptions, ProgressWhen};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let dir = tempfile::Builder::new()
        .prefix("gl-fuzz")
        .tempdir_in(if std::path::Path::new("/dev/shm").is_dir() { "/dev/shm" } else { "/tmp" })
        .expect("tempdir");
    let input = dir.path().join("in.ndjson");
    std::fs::write(&input, data).expect("write input");
    let opts = LoadOptions {
        partition: PartitionMode::Hour,
        partition_given: true,
        max_reject_ratio: 1.0,
        progress: ProgressWhen::Never,
        quiet: true,
        max_line_bytes: 300,
        threads: Some(2),
        ..LoadOptions::new(vec![input], &dir.path().join("out")).with_memory_limit(256 << 20)
    };
    match load(&opts) {
        Ok(report) => assert!(report.counts.adds_up(), "{:?}", report.counts),
        Err(e) => assert_eq!(e.exit_code(), 1, "{e}"),
    }
});
