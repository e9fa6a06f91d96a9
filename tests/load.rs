//! Integration tests: run the `group-loader` binary and read the dataset back value by value (runs, outputs,
//! options, codecs, the command line). The line-by-line rules are in `tests/edge_cases.rs`.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::Path;

use common::*;

fn edge_cases() -> String {
    fixtures().join("edge-cases.jsonl").display().to_string()
}

#[test]
fn whole_fixtures_folder_loads_with_default_options() {
    let out = tempfile::tempdir().unwrap();
    let (code, stderr) = load(out.path(), &[fixtures().to_str().unwrap()]);
    assert_eq!(code, 0, "{stderr}");
    let r = report(out.path());
    assert_counts_add_up(&r);
    let inputs: Vec<&str> = r["inputs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["path"].as_str().unwrap())
        .collect();
    let names: Vec<&str> = inputs
        .iter()
        .map(|p| p.rsplit('/').next().unwrap())
        .collect();
    // Byte-wise sorted paths: `batch.ndjson` < `edge-cases.jsonl` < `export/...` < `pretty-array.json` < ...
    // < `segment-logs/...` (Segment's <epoch-ms>.<uuid>.gz files, picked up by their .gz alone).
    assert_eq!(
        names,
        [
            "batch.ndjson",
            "edge-cases.jsonl",
            "2024-03-01.ndjson.gz",
            "2024-03-02.ndjson.gz",
            "pretty-array.json",
            "rudderstack.jsonl",
            "segment-docs.json",
            "1709434800000.a19abc09-ae74-47f7-a7fb-8ca4f14dbd32.gz",
            "1709478000000.0f6d013b-6016-41c7-a4d5-a16eed2d8304.gz",
            "1709521200000.153655eb-70c3-4f69-860e-a4c8fc6d3326.gz",
            "1709564400000.5f12cd0a-f7cc-44d3-8e7f-d3925c5516e0.gz",
        ]
    );
    assert_eq!(r["inputs"][2]["compression"], "gzip");
    let rows = read_dataset(out.path());
    assert_eq!(rows.len() as u64, r["rows_written"].as_u64().unwrap());
    let per_partition: BTreeMap<String, u64> =
        serde_json::from_value(r["partitions"].clone()).unwrap();
    for (p, n) in &per_partition {
        assert_eq!(
            rows.iter().filter(|row| row["_partition"] == s(p)).count() as u64,
            *n,
            "{p}"
        );
    }
    // The docs example appears in two files: the second copy is a duplicate.
    assert!(r["rejected"]["duplicate_message_id"].as_u64().unwrap() >= 2);
}

#[test]
fn an_output_inside_the_input_folder_is_not_read_back() {
    let dir = tempfile::tempdir().unwrap();
    fs::copy(
        fixtures().join("segment-docs.json"),
        dir.path().join("docs.json"),
    )
    .unwrap();
    let out = dir.path().join("out");
    for _ in 0..2 {
        let (code, stderr) = load(&out, &[dir.path().to_str().unwrap()]);
        assert_eq!(code, 0, "{stderr}");
        let r = report(&out);
        assert_eq!(
            r["inputs"].as_array().unwrap().len(),
            1,
            "only docs.json: {r:#}"
        );
    }
    assert_eq!(read_dataset(&out).len(), 1);
}

#[test]
fn rerun_of_the_same_inputs_changes_nothing() {
    let out = tempfile::tempdir().unwrap();
    let input = fixtures().join("export");
    let (code, stderr) = load(out.path(), &[input.to_str().unwrap()]);
    assert_eq!(code, 0, "{stderr}");
    let files1 = parquet_files(&out.path().join("groups"));
    let rows1 = read_dataset(out.path());
    let (code, stderr) = load(out.path(), &[input.to_str().unwrap()]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(
        parquet_files(&out.path().join("groups")),
        files1,
        "same file names: replaced, not added"
    );
    assert_eq!(read_dataset(out.path()), rows1, "no duplicated rows");
    assert_eq!(fs::read_dir(out.path().join("_runs")).unwrap().count(), 1);
}

#[test]
fn append_keeps_other_runs_and_overwrite_replaces_touched_partitions() {
    let dir = tempfile::tempdir().unwrap();
    let day1 = fixtures().join("export/2024-03-01.ndjson.gz");
    let day2 = fixtures().join("export/2024-03-02.ndjson.gz");
    let out = dir.path().join("out");
    assert_eq!(load(&out, &[day1.to_str().unwrap()]).0, 0);
    assert_eq!(load(&out, &[day2.to_str().unwrap()]).0, 0);
    let both = read_dataset(&out);
    let count = |rows: &[Row], p: &str| rows.iter().filter(|r| r["_partition"] == s(p)).count();
    let (d1, d2) = (count(&both, "dt=2024-03-01"), count(&both, "dt=2024-03-02"));
    assert!(d1 > 0 && d2 > 0);
    assert_eq!(
        parquet_files(&out.join("groups")).len(),
        2,
        "one file per partition per run"
    );

    // A small file with one event in 2024-03-01: overwrite replaces that partition only.
    let one = dir.path().join("one.ndjson");
    fs::write(
        &one,
        r#"{"type":"group","groupId":"g","userId":"u","messageId":"only","receivedAt":"2024-03-01T10:00:00Z"}"#,
    )
    .unwrap();
    let (code, stderr) = load(&out, &[one.to_str().unwrap(), "--mode", "overwrite"]);
    assert_eq!(code, 0, "{stderr}");
    let after = read_dataset(&out);
    assert_eq!(count(&after, "dt=2024-03-01"), 1);
    assert_eq!(
        count(&after, "dt=2024-03-02"),
        d2,
        "untouched partition kept"
    );
    assert_eq!(
        after
            .iter()
            .find(|r| r["_partition"] == s("dt=2024-03-01"))
            .unwrap()["id"],
        s("only")
    );
}

#[test]
fn locked_output_exits_4_and_touches_nothing() {
    let out = tempfile::tempdir().unwrap();
    fs::create_dir_all(out.path().join(".group-loader")).unwrap();
    let lock = fs::File::create(out.path().join(".group-loader/lock")).unwrap();
    lock.lock().unwrap();
    let (code, stderr) = load(out.path(), &[&edge_cases(), "--max-reject-ratio", "1"]);
    assert_eq!(code, 4, "{stderr}");
    assert!(stderr.contains("locked"), "{stderr}");
    let entries: Vec<_> = fs::read_dir(out.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(entries, [".group-loader"], "nothing else created");
    drop(lock);
    assert_eq!(
        load(out.path(), &[&edge_cases(), "--max-reject-ratio", "1"]).0,
        0
    );
}

#[test]
fn an_interrupted_run_is_cleaned_up_by_the_next() {
    let out = tempfile::tempdir().unwrap();
    let stale = out
        .path()
        .join(".group-loader/staging/run-1-1/groups/dt=2024-03-01");
    fs::create_dir_all(&stale).unwrap();
    fs::write(stale.join("part-00000.parquet.partial"), b"half a file").unwrap();
    let (code, stderr) = load(
        out.path(),
        &[fixtures().join("segment-docs.json").to_str().unwrap()],
    );
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.contains("removed 1 unpublished run"), "{stderr}");
    assert!(!out.path().join(".group-loader/staging/run-1-1").exists());
    assert_eq!(read_dataset(out.path()).len(), 1);
}

#[test]
fn stdin_and_partition_modes() {
    let input = fs::read(fixtures().join("export/2024-03-01.ndjson.gz")).unwrap();
    for (mode, depth) in [("hour", 2), ("day", 1), ("none", 0)] {
        let out = tempfile::tempdir().unwrap();
        let o = bin()
            .args([
                "load",
                "-",
                "--partition",
                mode,
                "--progress",
                "never",
                "--output",
            ])
            .arg(out.path())
            .write_stdin(input.clone())
            .output()
            .unwrap();
        assert_eq!(
            o.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&o.stderr)
        );
        let groups = out.path().join("groups");
        let files = parquet_files(&groups);
        assert!(!files.is_empty());
        for f in &files {
            let rel = f.strip_prefix(&groups).unwrap();
            assert_eq!(
                rel.components().count(),
                depth + 1,
                "{mode}: {}",
                rel.display()
            );
        }
        let rows = read_dataset(out.path());
        if mode == "hour" {
            for r in &rows {
                let V::T(t) = r["received_at"] else { panic!() };
                let dt = chrono::DateTime::from_timestamp_micros(t).unwrap();
                assert_eq!(
                    r["_partition"],
                    s(&dt.format("dt=%Y-%m-%d/hr=%H").to_string())
                );
            }
        }
        let r = report(out.path());
        assert_eq!(r["inputs"][0]["path"], "-");
        assert_eq!(rows.len() as u64, r["rows_written"].as_u64().unwrap());
    }
}

#[test]
fn every_codec_is_written_and_readable() {
    use parquet::file::reader::{FileReader, SerializedFileReader};
    for (codec, expected) in [
        ("zstd", "ZSTD"),
        ("snappy", "SNAPPY"),
        ("gzip", "GZIP"),
        ("lz4", "LZ4_RAW"),
        ("none", "UNCOMPRESSED"),
    ] {
        let out = tempfile::tempdir().unwrap();
        let (code, stderr) = load(
            out.path(),
            &[
                fixtures().join("segment-docs.json").to_str().unwrap(),
                "--compression",
                codec,
            ],
        );
        assert_eq!(code, 0, "{stderr}");
        let f = &parquet_files(&out.path().join("groups"))[0];
        let reader = SerializedFileReader::new(fs::File::open(f).unwrap()).unwrap();
        let c = reader
            .metadata()
            .row_group(0)
            .column(0)
            .compression()
            .to_string();
        assert!(c.starts_with(expected), "{codec}: {c}");
        assert_eq!(read_file(f)[0]["name"], s("Initech"));
    }
}

#[test]
fn parquet_files_carry_schema_types_and_metadata() {
    use parquet::file::reader::{FileReader, SerializedFileReader};
    let out = tempfile::tempdir().unwrap();
    assert_eq!(
        load(
            out.path(),
            &[fixtures().join("segment-docs.json").to_str().unwrap()]
        )
        .0,
        0
    );
    let f = &parquet_files(&out.path().join("groups"))[0];
    assert!(
        f.file_name()
            .unwrap()
            .to_str()
            .unwrap()
            .starts_with("part-")
    );
    let reader = SerializedFileReader::new(fs::File::open(f).unwrap()).unwrap();
    let meta = reader.metadata().file_metadata();
    let kv: BTreeMap<String, Option<String>> = meta
        .key_value_metadata()
        .unwrap()
        .iter()
        .map(|k| (k.key.clone(), k.value.clone()))
        .collect();
    assert_eq!(
        kv["group_loader.version"].as_deref(),
        Some(env!("CARGO_PKG_VERSION"))
    );
    assert_eq!(kv["group_loader.schema_version"].as_deref(), Some("2"));
    assert!(kv.contains_key("ARROW:schema"), "Arrow schema embedded");
    let schema = meta.schema_descr();
    assert_eq!(schema.num_columns(), 32);
    for i in 0..schema.num_columns() {
        let col = schema.column(i);
        let name = col.name();
        // The schema printer's words, e.g. `OPTIONAL INT64 received_at (TIMESTAMP(MICROS,true));`.
        let mut printed = Vec::new();
        parquet::schema::printer::print_schema(&mut printed, col.self_type());
        let printed = String::from_utf8(printed).unwrap();
        if [
            "received_at",
            "sent_at",
            "original_timestamp",
            "timestamp",
            "created_at",
        ]
        .contains(&name)
        {
            assert!(
                printed.contains(&format!("INT64 {name} (TIMESTAMP(MICROS,true))")),
                "{printed}"
            );
        } else if name.starts_with("extra") {
            // The extras columns carry Parquet's JSON logical type.
            assert!(
                printed.contains(&format!("BYTE_ARRAY {name} (JSON)")),
                "{printed}"
            );
        } else {
            assert!(
                printed.contains(&format!("BYTE_ARRAY {name} (STRING)")),
                "{printed}"
            );
        }
        let required = name == "group_id" || name == "timestamp";
        assert_eq!(
            col.self_type().get_basic_info().repetition() == parquet::basic::Repetition::REQUIRED,
            required,
            "{name}"
        );
    }
}

#[test]
fn threads_do_not_change_the_output() {
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    let input = fixtures().display().to_string();
    assert_eq!(load(a.path(), &[&input, "--threads", "1"]).0, 0);
    assert_eq!(load(b.path(), &[&input, "--threads", "2"]).0, 0);
    let fa = parquet_files(a.path());
    assert!(fa.iter().any(|f| f.starts_with(a.path().join("accounts"))));
    assert_same_parquet_files(a.path(), b.path(), "--threads 2");
}

#[test]
fn threads_do_not_change_where_row_groups_end_under_memory_pressure() {
    // ~36 MB of one day's events at the smallest --memory-limit: the row buffers fill and are cut many times,
    // so the budget that decides the cuts must not depend on the thread count (it once reserved reading
    // memory per thread). Every event is a new group, so the accounts layout is exercised too.
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.ndjson");
    let mut f = std::io::BufWriter::new(fs::File::create(&input).unwrap());
    let pad = "x".repeat(700);
    for i in 0..50_000 {
        writeln!(
            f,
            r#"{{"type":"group","messageId":"m{i}","groupId":"g{i}","userId":"u{}","timestamp":"2024-03-01T{:02}:{:02}:{:02}Z","traits":{{"name":"n{i}","plan":"p{}","note":"{pad}"}}}}"#,
            i % 97,
            i / 3600 % 24,
            i / 60 % 60,
            i % 60,
            i % 5
        )
        .unwrap();
    }
    drop(f);
    let input = input.display().to_string();
    let outs: Vec<_> = (1..=3)
        .map(|threads| {
            let out = dir.path().join(format!("out-{threads}"));
            let t = threads.to_string();
            let args = [&input, "--memory-limit", "256MiB", "--threads", &t];
            assert_eq!(load(&out, &args).0, 0);
            out
        })
        .collect();
    let groups: Vec<_> = parquet_files(&outs[0].join("groups"));
    assert!(!groups.is_empty());
    let row_groups: usize = groups
        .iter()
        .map(|f| {
            let reader =
                parquet::file::reader::SerializedFileReader::new(fs::File::open(f).unwrap());
            parquet::file::reader::FileReader::metadata(&reader.unwrap()).num_row_groups()
        })
        .sum();
    assert!(
        row_groups > 3,
        "{row_groups} row groups: the buffers were never under pressure"
    );
    for (threads, out) in (2..).zip(&outs[1..]) {
        assert_same_parquet_files(&outs[0], out, &format!("--threads {threads}"));
    }
}

#[test]
fn no_dedupe_keeps_repeated_message_ids() {
    let out = tempfile::tempdir().unwrap();
    let (code, _) = load(
        out.path(),
        &[&edge_cases(), "--max-reject-ratio", "1", "--no-dedupe"],
    );
    assert_eq!(code, 0);
    let rows = read_dataset(out.path());
    assert_eq!(rows.iter().filter(|r| r["id"] == s("m-dup")).count(), 2);
    assert_eq!(report(out.path())["rejected"]["duplicate_message_id"], 0);
}

#[test]
fn empty_or_null_message_ids_are_never_deduplicated() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.jsonl");
    let mut f = fs::File::create(&input).unwrap();
    for id in [
        r#""messageId":"","#,
        r#""messageId":"","#,
        r#""messageId":null,"#,
        "",
        "",
    ] {
        writeln!(
            f,
            r#"{{"type":"group",{id}"groupId":"g","userId":"u","timestamp":"2024-01-01"}}"#
        )
        .unwrap();
    }
    let out = dir.path().join("out");
    assert_eq!(load(&out, &[input.to_str().unwrap()]).0, 0);
    assert_eq!(read_dataset(&out).len(), 5);
}

/// `--report` and `--rejects` are written where the path leads, never replacing what is there: `-` is standard
/// output, a symbolic link is followed and stays a link, a FIFO and a device are written in place; a copy that
/// cannot be written after the rows were published exits 6 (the rows stay published), never 1.
#[test]
fn report_and_rejects_go_where_their_paths_lead() {
    let dir = tempfile::tempdir().unwrap();
    let input = edge_cases();
    let ratio = ["--max-reject-ratio", "1"];
    // Standard output.
    let o = bin()
        .args([
            "load",
            input.as_str(),
            "--progress",
            "never",
            "-q",
            "--report",
            "-",
        ])
        .args(ratio)
        .arg("-o")
        .arg(dir.path().join("a"))
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0));
    let printed: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(printed, report(&dir.path().join("a")));
    assert!(!Path::new("-").exists(), "no file named -");
    // A link to a file: the file gets the report, the link stays a link.
    let target = dir.path().join("reports/latest.json");
    fs::create_dir_all(target.parent().unwrap()).unwrap();
    let link = dir.path().join("report-link.json");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    let (code, stderr) = load(
        &dir.path().join("b"),
        &[
            &input,
            ratio[0],
            ratio[1],
            "--report",
            link.to_str().unwrap(),
        ],
    );
    assert_eq!(code, 0, "{stderr}");
    assert!(
        fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink()
    );
    let written: serde_json::Value = serde_json::from_slice(&fs::read(&target).unwrap()).unwrap();
    assert_eq!(written, report(&dir.path().join("b")));
    // A FIFO (read by another thread) and a device: written in place, still what they were.
    let fifo = dir.path().join("rejects.fifo");
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: mkfifo with a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    let reader = {
        let fifo = fifo.clone();
        std::thread::spawn(move || fs::read_to_string(fifo).unwrap())
    };
    let args = [
        &input,
        ratio[0],
        ratio[1],
        "--rejects",
        fifo.to_str().unwrap(),
        "--report",
        "/dev/null",
    ];
    let (code, stderr) = load(&dir.path().join("c"), &args);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(reader.join().unwrap().lines().count(), 16);
    use std::os::unix::fs::FileTypeExt;
    assert!(fs::symlink_metadata(&fifo).unwrap().file_type().is_fifo());
    assert!(
        fs::metadata("/dev/null")
            .unwrap()
            .file_type()
            .is_char_device()
    );
    // A copy that cannot be written after publishing: exit 6, the rows published.
    let out = dir.path().join("d");
    let nowhere = dir
        .path()
        .join("no-such-folder/in/a/file")
        .join("report.json");
    fs::write(dir.path().join("no-such-folder"), b"a file, not a folder").unwrap();
    let (code, stderr) = load(
        &out,
        &[
            &input,
            ratio[0],
            ratio[1],
            "--report",
            nowhere.to_str().unwrap(),
        ],
    );
    assert_eq!(code, 6, "{stderr}");
    assert!(stderr.contains("were published"), "{stderr}");
    assert_eq!(report(&out)["published"], true);
    assert_eq!(read_dataset(&out).len(), 12);
    // Both to standard output would mix them: refused before anything is done.
    let (code, stderr) = load(
        &dir.path().join("e"),
        &[&input, "--report", "-", "--rejects", "-"],
    );
    assert_eq!(code, 2, "{stderr}");
    assert!(!dir.path().join("e").exists());
}

#[test]
fn report_and_rejects_copies() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let rep = dir.path().join("report.json");
    let rej = dir.path().join("rejects.ndjson");
    let (code, _) = load(
        &out,
        &[
            &edge_cases(),
            "--max-reject-ratio",
            "1",
            "--report",
            rep.to_str().unwrap(),
            "--rejects",
            rej.to_str().unwrap(),
        ],
    );
    assert_eq!(code, 0);
    let copied: serde_json::Value = serde_json::from_slice(&fs::read(&rep).unwrap()).unwrap();
    assert_eq!(copied, report(&out));
    for key in [
        "inputs",
        "lines",
        "blank",
        "skipped",
        "rejected",
        "rows_written",
        "shadowed_traits",
        "invalid_times",
        "partitions",
        "files",
        "elapsed_s",
        "published",
    ] {
        assert!(copied.get(key).is_some(), "report key {key}");
    }
    let files = copied["files"].as_array().unwrap();
    let total: u64 = files.iter().map(|f| f["rows"].as_u64().unwrap()).sum();
    assert_eq!(total, 12);
    for f in files {
        let p = out.join(f["path"].as_str().unwrap());
        assert_eq!(
            fs::metadata(&p).unwrap().len(),
            f["bytes"].as_u64().unwrap()
        );
    }
    assert_eq!(fs::read_to_string(&rej).unwrap().lines().count(), 16);
}

#[test]
fn quiet_prints_nothing_and_summary_is_on_stderr_otherwise() {
    let out = tempfile::tempdir().unwrap();
    let docs = fixtures().join("segment-docs.json");
    let o = bin()
        .args(["load", "-q", "-o"])
        .arg(out.path())
        .arg(&docs)
        .output()
        .unwrap();
    assert!(o.status.success());
    assert!(o.stderr.is_empty() && o.stdout.is_empty());
    let out2 = tempfile::tempdir().unwrap();
    let o = bin()
        .args(["load", "-o"])
        .arg(out2.path())
        .arg(&docs)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(stderr.contains("loaded 1 rows"), "{stderr}");
    assert!(
        !stderr.contains('\r'),
        "no progress bar when stderr is not a terminal"
    );
    assert!(o.stdout.is_empty());
}

#[test]
fn usage_errors_exit_2() {
    let out = tempfile::tempdir().unwrap();
    let cases: [&[&str]; 5] = [
        &["load", "fixtures"],                                   // no --output
        &["load", "--output", "x"],                              // no input
        &["load", "--bogus", "-o", "x", "fixtures"],             // unknown option
        &["load", "--partition", "week", "-o", "x", "fixtures"], // bad value
        &["schema", "--format", "yaml"],
    ];
    for args in cases {
        let o = bin()
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .args(args)
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(2), "{args:?}");
    }
    let missing = out.path().join("missing.json");
    let (code, stderr) = load(&out.path().join("o"), &[missing.to_str().unwrap()]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("input not found"), "{stderr}");
    assert!(!out.path().join("o").exists(), "nothing created");
    // (A folder with no input file is not a usage error: tests/edges.rs.)
    let (code, _) = load(
        &out.path().join("o"),
        &[&edge_cases(), "--max-reject-ratio", "1.5"],
    );
    assert_eq!(code, 2);
    let file_out = out.path().join("file");
    fs::write(&file_out, b"").unwrap();
    assert_eq!(load(&file_out, &[&edge_cases()]).0, 2);
}

#[test]
fn corrupt_gzip_fails_the_run_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let good = fs::read(fixtures().join("export/2024-03-01.ndjson.gz")).unwrap();
    let bad = dir.path().join("bad.ndjson.gz");
    fs::write(&bad, &good[..good.len() / 2]).unwrap();
    let out = dir.path().join("out");
    let (code, stderr) = load(&out, &[bad.to_str().unwrap()]);
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("bad.ndjson.gz"), "{stderr}");
    assert!(parquet_files(&out.join("groups")).is_empty());
}

#[test]
fn schema_command_formats() {
    let text = bin().args(["schema"]).output().unwrap();
    assert!(text.status.success());
    let text = String::from_utf8(text.stdout).unwrap();
    assert!(text.contains("group_id") && text.contains("never null"));
    let json = bin().args(["schema", "--format", "json"]).output().unwrap();
    let v: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(v["columns"].as_array().unwrap().len(), 32);
    let sql = bin()
        .args(["schema", "--format", "sql", "--location", "/data/segment"])
        .output()
        .unwrap();
    let sql = String::from_utf8(sql.stdout).unwrap();
    assert!(sql.starts_with("-- group-loader groups table (hive), duckdb dialect"));
    assert!(sql.contains("CREATE OR REPLACE VIEW groups AS SELECT * FROM read_parquet("));
    // --dialect implies --format sql.
    let spark = bin()
        .args([
            "schema",
            "--dialect",
            "spark",
            "--location",
            "/data/segment",
        ])
        .output()
        .unwrap();
    let spark = String::from_utf8(spark.stdout).unwrap();
    assert!(
        spark.contains("`timestamp` TIMESTAMP,") && spark.contains("USING parquet"),
        "{spark}"
    );
    assert!(!text.contains("SPEC") && !text.contains('§'), "{text}");
}

/// The schema command never prints something other than what was asked: SQL options with another format,
/// SQL without a location, and a cloud warehouse over a local path are refused (exit 2) saying why.
#[test]
fn schema_options_that_cannot_work_are_refused() {
    for (args, said) in [
        (
            &["schema", "--dialect", "spark", "--format", "text"][..],
            "with --format sql",
        ),
        (
            &["schema", "--format", "json", "--location", "s3://b/p"][..],
            "with --format sql",
        ),
        (&["schema", "--format", "sql"][..], "needs --location"),
        (
            &[
                "schema",
                "--dialect",
                "bigquery",
                "--location",
                "/data/segment",
            ][..],
            "object storage only",
        ),
        (
            &["schema", "--dialect", "athena", "--location", "./out"][..],
            "object storage only",
        ),
    ] {
        let o = bin().args(args).output().unwrap();
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(said), "{args:?}: {stderr}");
        assert!(o.stdout.is_empty(), "{args:?} printed something");
    }
    let o = bin()
        .args([
            "schema",
            "--dialect",
            "athena",
            "--location",
            "s3://b/segment",
        ])
        .output()
        .unwrap();
    assert!(o.status.success());
    assert!(String::from_utf8_lossy(&o.stdout).contains("s3://b/segment"));
}
