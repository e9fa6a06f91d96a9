//! Hostile input: lines built to break a parser, and arbitrary bytes through the whole reader. Every run must
//! finish, keep the counting rule, and put every rejected line in the rejects file byte for byte.

mod common;

use std::fs;
use std::io::Write;
use std::path::Path;

use base64::Engine;
use common::*;
use group_loader::command::load::load as load_in_process;
use proptest::prelude::*;

const OK: &str = r#""type":"group","groupId":"g","userId":"u","timestamp":"2024-01-01T00:00:00Z""#;

fn rejects_by_line(out: &Path) -> Vec<serde_json::Value> {
    let Ok(entries) = fs::read_dir(out.join("_rejects")) else {
        return Vec::new();
    };
    let mut recs = Vec::new();
    for e in entries {
        let text = fs::read_to_string(e.unwrap().path()).unwrap();
        recs.extend(
            text.lines()
                .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()),
        );
    }
    recs
}

fn raw_of(rec: &serde_json::Value) -> Vec<u8> {
    match rec.get("raw") {
        Some(r) => r.as_str().unwrap().as_bytes().to_vec(),
        None => base64::engine::general_purpose::STANDARD
            .decode(rec["raw_base64"].as_str().unwrap())
            .unwrap(),
    }
}

#[test]
fn hostile_lines_are_rejected_or_loaded_and_the_run_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("hostile.jsonl");
    let mut lines: Vec<(Vec<u8>, &str)> = vec![
        (format!("{{{OK},\"messageId\":\"first\"}}").into_bytes(), "row"),
        // JSON nested 100,000 levels deep, as a whole line and inside an extras value.
        ("[".repeat(100_000).into_bytes(), "invalid_json"),
        (format!("{{{OK},\"messageId\":\"deep\",\"properties\":{}{}}}", "[".repeat(100_000), "]".repeat(100_000)).into_bytes(), "row"),
        (format!("{}1{}", "{\"a\":".repeat(50_000), "}".repeat(50_000)).into_bytes(), "missing_type"),
        // Invalid UTF-8 inside a string; a lone surrogate escape; NaN / Infinity; numbers out of every range.
        ([format!("{{{OK},\"traits\":{{\"name\":\"caf").into_bytes(), vec![0xe9], b"\"}}".to_vec()].concat(), "invalid_utf8"),
        (b"{\"type\":\"group\",\"groupId\":\"g\",\"userId\":\"u\",\"name\":\"a\xff\xfeb\"}".to_vec(), "invalid_utf8"),
        (format!("{{{OK},\"traits\":{{\"name\":\"\\udc00\"}}}}").into_bytes(), "invalid_json"),
        (format!("{{{OK},\"traits\":{{\"employees\":NaN}}}}").into_bytes(), "invalid_json"),
        (format!("{{{OK},\"traits\":{{\"employees\":-Infinity}}}}").into_bytes(), "invalid_json"),
        (format!("{{{OK},\"messageId\":\"big\",\"traits\":{{\"employees\":1e400,\"createdAt\":1e400}}}}").into_bytes(), "row"),
        (b"{\"type\":\"group\",\"groupId\":1e400,\"userId\":\"u\",\"timestamp\":-1e400}".to_vec(), "missing_time"),
        // Duplicate keys, NUL bytes and control characters, raw and escaped.
        (format!("{{{OK},\"groupId\":\"again\"}}").into_bytes(), "duplicate_key"),
        (format!("{{{OK},\"traits\":{{\"name\":\"a\0b\"}}}}").into_bytes(), "invalid_json"),
        (format!("{{{OK},\"messageId\":\"nul\",\"traits\":{{\"name\":\"a\\u0000b\\u001f\"}}}}").into_bytes(), "row"),
        (b"\0\0\0".to_vec(), "invalid_json"),
        (b"\x1b[31m".to_vec(), "invalid_json"),
        (b"{\"type\":\"group\"\x0c}".to_vec(), "invalid_json"),
    ];
    // A 100 MB line without a newline, last in the file: rejected without being held whole.
    let huge_len = 100 * 1024 * 1024;
    let mut huge = Vec::with_capacity(huge_len);
    huge.extend_from_slice(b"{\"type\":\"group\",\"x\":\"");
    huge.resize(huge_len, b'x');
    lines.push((huge, "line_too_long"));
    {
        let mut f = fs::File::create(&input).unwrap();
        let n = lines.len();
        for (i, (bytes, _)) in lines.iter().enumerate() {
            f.write_all(bytes).unwrap();
            if i + 1 < n {
                f.write_all(b"\n").unwrap();
            }
        }
    }
    let out = dir.path().join("out");
    let (code, stderr) = load(&out, &[input.to_str().unwrap(), "--max-reject-ratio", "1"]);
    assert_eq!(code, 0, "{stderr}");

    let r = report(&out);
    assert_counts_add_up(&r);
    assert_eq!(r["lines"].as_u64().unwrap() as usize, lines.len());
    let recs = rejects_by_line(&out);
    for (i, (bytes, expected)) in lines.iter().enumerate() {
        let number = i as u64 + 1;
        let rec = recs.iter().find(|r| r["line"] == number);
        match (*expected, rec) {
            ("row", None) => {}
            ("row", Some(rec)) => panic!("line {number} rejected: {rec}"),
            (reason, Some(rec)) => {
                assert_eq!(rec["reason"], reason, "line {number}");
                if reason == "line_too_long" {
                    assert_eq!(rec["length"].as_u64().unwrap() as usize, bytes.len());
                    assert_eq!(raw_of(rec), bytes[..64 * 1024].to_vec(), "the first 64 KiB");
                } else {
                    assert_eq!(raw_of(rec), *bytes, "line {number} byte for byte");
                }
            }
            (reason, None) => panic!("line {number} should be rejected as {reason}"),
        }
    }
    let rows = read_dataset(&out);
    let ids: Vec<&V> = rows.iter().map(|r| &r["id"]).collect();
    for id in ["first", "deep", "big", "nul"] {
        assert!(ids.contains(&&s(id)), "{id} loaded");
    }
    let big = rows.iter().find(|r| r["id"] == s("big")).unwrap();
    assert_eq!(big["employees"], s("1e400"), "numbers keep their text");
    assert_eq!(big["created_at"], V::Null, "1e400 is not a time");
    assert_eq!(big["extra_traits"], s(r#"{"createdAt":1e400}"#));
    let nul = rows.iter().find(|r| r["id"] == s("nul")).unwrap();
    assert_eq!(
        nul["name"],
        s("a\0b\u{1f}"),
        "escaped control characters are text like any other"
    );
}

#[test]
fn a_stale_lock_file_does_not_block_the_next_run() {
    // A run killed with SIGKILL leaves the lock file (and its text) behind; the OS lock went with the process.
    let out = tempfile::tempdir().unwrap();
    fs::create_dir_all(out.path().join(".group-loader")).unwrap();
    fs::write(
        out.path().join(".group-loader/lock"),
        "pid 999999 since 2026-01-01T00:00:00Z\n",
    )
    .unwrap();
    let (code, stderr) = load(
        out.path(),
        &[fixtures().join("segment-docs.json").to_str().unwrap()],
    );
    assert_eq!(code, 0, "{stderr}");
}

/// Lines made of JSON-ish fragments, so that some parse, some are Group calls, and many are broken.
fn fragment_lines() -> impl Strategy<Value = Vec<u8>> {
    let piece = prop_oneof![
        Just(format!("{{{OK}}}").into_bytes()),
        Just(format!("{{{OK},\"messageId\":\"m\"}}").into_bytes()),
        Just(b"{\"type\":\"track\"}".to_vec()),
        Just(b"\n".to_vec()),
        Just(b"\r\n".to_vec()),
        Just(b"\xef\xbb\xbf".to_vec()),
        Just(b"{\"a\":[1,{\"b\":\"\\u00e9\"}]}".to_vec()),
        Just(b"\"\\ud800\"".to_vec()),
        prop::collection::vec(any::<u8>(), 0..40),
    ];
    prop::collection::vec(piece, 0..30).prop_map(|v| v.concat())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// Arbitrary bytes, plain, gzipped or zstd-compressed, through the whole reader: the run ends normally or
    /// with a clean error (a corrupt stream), never a panic, and when it ends the counts add up.
    #[test]
    fn arbitrary_bytes_never_panic_and_counts_add_up(bytes in fragment_lines(), codec in 0u8..3) {
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("in.ndjson");
        let data = match codec {
            0 => bytes.clone(),
            1 => {
                let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
                e.write_all(&bytes).unwrap();
                e.finish().unwrap()
            }
            _ => zstd::encode_all(&bytes[..], 1).unwrap(),
        };
        fs::write(&input, &data).unwrap();
        let out = dir.path().join("out");
        let report = load_in_process(&options(&input, &out)).expect("a run over readable input succeeds");
        prop_assert!(report.counts.adds_up(), "{:?}", report.counts);
        let rejected: u64 = report.counts.rejected.values().sum();
        prop_assert_eq!(rejects_by_line(&out).len() as u64, rejected);
        prop_assert_eq!(read_dataset(&out).len() as u64, report.counts.rows_written);
    }

    /// Arbitrary bytes that claim to be gzip or zstd: a clean error or a run, never a panic.
    #[test]
    fn corrupt_compressed_streams_fail_cleanly(mut bytes in prop::collection::vec(any::<u8>(), 0..200), zstd_magic: bool) {
        let magic: &[u8] = if zstd_magic { &[0x28, 0xb5, 0x2f, 0xfd] } else { &[0x1f, 0x8b, 0x08, 0x00] };
        bytes.splice(0..0, magic.iter().copied());
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("in.ndjson.gz");
        fs::write(&input, &bytes).unwrap();
        let out = dir.path().join("out");
        match load_in_process(&options(&input, &out)) {
            Ok(report) => prop_assert!(report.counts.adds_up()),
            Err(e) => {
                prop_assert_eq!(e.exit_code(), 1);
                prop_assert!(e.to_string().contains("in.ndjson.gz"), "{}", e);
                prop_assert!(parquet_files(&out).is_empty(), "nothing published");
            }
        }
    }
}

/// Every input the fuzzers (fuzz/, `cargo fuzz`) ever flagged, replayed through a whole run: no panic, the
/// counting rule holds, every reject is in the rejects file.
#[test]
fn fuzz_findings_stay_fixed() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz-regressions");
    let mut seen = 0;
    for entry in fs::read_dir(&dir).unwrap() {
        let input = entry.unwrap().path();
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join("out");
        let report = load_in_process(&options(&input, &out)).expect("run");
        assert!(report.counts.adds_up(), "{}", input.display());
        let rejected: u64 = report.counts.rejected.values().sum();
        assert_eq!(rejects_by_line(&out).len() as u64, rejected);
        seen += 1;
    }
    assert!(seen > 0, "no regression inputs found in {}", dir.display());
}

/// The line fuzzer's first finding: a number whose exponent overflows f64 (`123456789e01234567890`) is valid
/// JSON, which serde_json::Value refuses; the loader keeps its text, here as the group id.
#[test]
fn numbers_beyond_f64_keep_their_text() {
    let tmp = tempfile::tempdir().unwrap();
    let input = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fuzz-regressions/line-huge-exponent-number");
    let out = tmp.path().join("out");
    let report = load_in_process(&options(&input, &out)).expect("run");
    assert_eq!(report.counts.rows_written, 1);
    let rows = read_dataset(&out);
    assert_eq!(rows[0]["group_id"], s("123456789e01234567890"));
    assert_eq!(
        rows[0]["user_id"],
        s("0.50"),
        "the text rule keeps trailing zeros"
    );
    assert_eq!(
        rows[0]["extra_traits"],
        V::Null,
        "`tramessageits` is not `traits`"
    );
    assert_eq!(
        rows[0]["extra"],
        s(
            r#"{"messageItraitsd":"m-num","tramessageits":{"eyolmpees":1e3,"plan":true,"phne":null}}"#
        )
    );
}
