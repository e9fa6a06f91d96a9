//! Integration tests: run the `group-loader` binary and read the dataset back value by value.
//! Expected values come from the fixture lines themselves (see fixtures/edge-cases.md), worked out by hand.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::Path;

use common::*;

fn edge_cases() -> String {
    fixtures().join("edge-cases.jsonl").display().to_string()
}

fn by_id(rows: &[Row]) -> BTreeMap<String, Row> {
    rows.iter()
        .map(|r| match &r["id"] {
            V::S(id) => (id.clone(), r.clone()),
            V::Null => panic!("row without id: {r:?}"),
            V::T(_) => unreachable!(),
        })
        .collect()
}

fn rejects(out: &Path) -> Vec<serde_json::Value> {
    let dir = out.join("_rejects");
    let files: Vec<_> = fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(files.len(), 1);
    fs::read_to_string(&files[0])
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn edge_cases_line_by_line() {
    let out = tempfile::tempdir().unwrap();
    // 15 of 28 considered lines are rejected: allow it for this file.
    let (code, stderr) = load(out.path(), &[&edge_cases(), "--max-reject-ratio", "1"]);
    assert_eq!(code, 0, "{stderr}");

    let r = report(out.path());
    assert_eq!(r["lines"], 32);
    assert_eq!(r["blank"], 2);
    assert_eq!(r["skipped"], serde_json::json!({"track": 1, "identify": 1}));
    assert_eq!(r["rows_written"], 12);
    let rejected: BTreeMap<String, u64> = serde_json::from_value(r["rejected"].clone()).unwrap();
    let nonzero: BTreeMap<&str, u64> = rejected
        .iter()
        .filter(|(_, v)| **v > 0)
        .map(|(k, v)| (k.as_str(), *v))
        .collect();
    assert_eq!(
        nonzero,
        BTreeMap::from([
            ("missing_group_id", 2),
            ("invalid_group_id", 1),
            ("invalid_user_id", 1),
            ("invalid_anonymous_id", 1),
            ("missing_identity", 1),
            ("missing_time", 2),
            ("duplicate_key", 1),
            ("missing_type", 1),
            ("not_an_object", 1),
            ("invalid_json", 3),
            ("invalid_utf8", 1),
            ("duplicate_message_id", 1),
        ])
    );
    assert_eq!(
        rejected["line_too_long"], 0,
        "every reason is listed, zeros included"
    );
    assert_eq!(
        r["shadowed_traits"], 3,
        "Created-At/createdAt, NAME/name, postal_code/PostalCode"
    );
    assert_eq!(r["invalid_times"], 0);
    assert_eq!(r["published"], true);
    assert_counts_add_up(&r);

    // Rejects: one record per rejected line, in input order, with line numbers and byte offsets.
    let bytes = fs::read(fixtures().join("edge-cases.jsonl")).unwrap();
    let starts: Vec<usize> = std::iter::once(0)
        .chain(
            bytes
                .iter()
                .enumerate()
                .filter(|(_, b)| **b == b'\n')
                .map(|(i, _)| i + 1),
        )
        .collect();
    let recs = rejects(out.path());
    let got: Vec<(u64, &str)> = recs
        .iter()
        .map(|x| (x["line"].as_u64().unwrap(), x["reason"].as_str().unwrap()))
        .collect();
    assert_eq!(
        got,
        [
            (7, "missing_group_id"),
            (8, "missing_group_id"),
            (9, "invalid_group_id"),
            (10, "invalid_user_id"),
            (11, "invalid_anonymous_id"),
            (12, "missing_identity"),
            (13, "missing_time"),
            (14, "missing_time"),
            (15, "duplicate_key"),
            (16, "missing_type"),
            (17, "not_an_object"),
            (18, "invalid_json"),
            (19, "invalid_utf8"),
            (20, "invalid_json"),
            (22, "duplicate_message_id"),
            (31, "invalid_json"),
        ]
    );
    for rec in &recs {
        let line = rec["line"].as_u64().unwrap() as usize;
        assert_eq!(
            rec["offset"].as_u64().unwrap() as usize,
            starts[line - 1],
            "{rec}"
        );
        assert_eq!(rec["file"].as_str().unwrap(), edge_cases());
        if rec["reason"] == "duplicate_message_id" {
            // Duplicates are listed with their id, without the raw line (SPEC §6.3).
            assert_eq!(rec["id"], "m-dup");
            assert!(rec.get("raw").is_none() && rec.get("raw_base64").is_none());
            continue;
        }
        let end = starts[line] - 1; // no rejected line is the last one
        let raw_line = &bytes[starts[line - 1]..end];
        match rec.get("raw") {
            Some(raw) => assert_eq!(raw.as_str().unwrap().as_bytes(), raw_line),
            None => {
                use base64::Engine;
                let decoded = base64::engine::general_purpose::STANDARD
                    .decode(rec["raw_base64"].as_str().unwrap())
                    .unwrap();
                assert_eq!(decoded, raw_line);
            }
        }
    }
    assert!(
        recs[12].get("raw_base64").is_some(),
        "invalid UTF-8 goes as base64"
    );
    assert!(
        recs[11]["message"].as_str().unwrap().contains("column"),
        "parser message: {}",
        recs[11]["message"]
    );

    // Rows, value by value.
    let rows = read_dataset(out.path());
    assert_eq!(rows.len(), 12);
    let rows = by_id(&rows);

    let docs = &rows["022bb90c-bbac-11e4-8dfc-aa07a5b093db"];
    assert_eq!(docs["group_id"], s("0e8c78ea9d97a7b8185e8632"));
    assert_eq!(docs["user_id"], s("97980cfea0067"));
    assert_eq!(docs["anonymous_id"], s("507f191e810c19729de860ea"));
    assert_eq!(docs["channel"], s("browser"));
    assert_eq!(docs["context_ip"], s("8.8.8.8"));
    assert_eq!(docs["name"], s("Initech"));
    assert_eq!(docs["industry"], s("Technology"));
    assert_eq!(docs["employees"], s("329"));
    assert_eq!(docs["plan"], s("enterprise"));
    assert_eq!(
        docs["received_at"],
        V::T(micros("2015-02-23T22:28:55.387Z"))
    );
    assert_eq!(docs["sent_at"], V::T(micros("2015-02-23T22:28:55.111Z")));
    assert_eq!(docs["timestamp"], V::T(micros("2015-02-23T22:28:55.111Z")));
    assert_eq!(docs["original_timestamp"], V::Null);
    assert_eq!(docs["extra_traits"], s(r#"{"total billed":830}"#));
    assert_eq!(docs["extra_context"], V::Null);
    assert_eq!(
        docs["extra"],
        s(r#"{"integrations":{"All":true,"Mixpanel":false,"Salesforce":false},"version":"1.1"}"#)
    );
    assert_eq!(docs["_partition"], s("dt=2015-02-23"));

    let crlf = &rows["m-crlf"];
    assert_eq!(
        crlf["timestamp"],
        V::T(micros("2024-03-01T06:00:00Z")),
        "+02:00 is two hours ahead of UTC"
    );
    assert_eq!(crlf["_partition"], s("dt=2024-03-01"));

    assert_eq!(
        rows["m-dup"]["name"],
        s("First"),
        "the first of two events with one messageId is kept"
    );

    let case = &rows["m-case"];
    assert_eq!(case["created_at"], V::T(micros("2020-01-02T00:00:00Z")));
    assert_eq!(case["name"], s("Acme"));
    assert_eq!(case["email"], s("ops@acme.test"));
    assert_eq!(case["trait_id"], s("42"));
    assert_eq!(
        case["extra_traits"],
        s(r#"{"createdAt":"2021-01-01","name":"acme","total billed":830}"#)
    );

    let addr = &rows["m-addr"];
    assert_eq!(addr["address_street"], s("1 Main St"));
    assert_eq!(addr["address_city"], s("Paris"));
    assert_eq!(addr["address_postal_code"], s("75001"));
    assert_eq!(addr["address_state"], V::Null);
    assert_eq!(addr["address_country"], V::Null);
    assert_eq!(
        addr["extra_traits"],
        s(r#"{"address":{"PostalCode":"x","line2":"Suite 5","country":{"code":"FR"}}}"#)
    );

    let num = &rows["m-num"];
    assert_eq!(num["group_id"], s("12345678901234567890"));
    assert_eq!(num["user_id"], s("1.50"));
    assert_eq!(num["employees"], s("1e3"));
    assert_eq!(num["plan"], s("true"));
    assert_eq!(num["phone"], V::Null);
    assert_eq!(num["extra_traits"], V::Null);

    let epoch = &rows["m-epoch"];
    assert_eq!(
        epoch["timestamp"],
        V::T(1_709_294_400_500_000),
        "epoch seconds with a fraction"
    );
    assert_eq!(
        epoch["received_at"],
        V::T(1_709_294_401_123_000),
        "epoch milliseconds"
    );
    assert_eq!(epoch["_partition"], s("dt=2024-03-01"));

    let skew = &rows["m-skew"];
    assert_eq!(
        skew["timestamp"],
        V::T(micros("2019-06-21T17:39:06.171Z")),
        "SPEC 5.3 known answer"
    );
    assert_eq!(skew["_partition"], s("dt=2019-06-21"));

    let ctx = &rows["m-ctx"];
    assert_eq!(ctx["context_ip"], s("10.0.0.1"));
    assert_eq!(ctx["context_library_name"], s("analytics-ruby"));
    assert_eq!(ctx["context_library_version"], s("2.2.5"));
    assert_eq!(
        ctx["extra_context"],
        s(r#"{"library":{"build":7},"locale":"fr-FR"}"#)
    );

    assert_eq!(
        rows["m-traits-str"]["extra"],
        s(r#"{"traits":"not an object","projectId":"p1"}"#)
    );
    assert_eq!(rows["m-long"]["description"], s(&"x".repeat(1500)));
    assert_eq!(
        rows["m-last"]["timestamp"],
        V::T(micros("2024-03-01T23:59:59.999999Z")),
        "truncated, not rounded"
    );
}

#[test]
fn max_line_bytes_rejects_long_lines_with_their_length() {
    let out = tempfile::tempdir().unwrap();
    let (code, stderr) = load(
        out.path(),
        &[
            &edge_cases(),
            "--max-reject-ratio",
            "1",
            "--max-line-bytes",
            "1000",
        ],
    );
    assert_eq!(code, 0, "{stderr}");
    let rec = rejects(out.path())
        .into_iter()
        .find(|r| r["line"] == 30)
        .expect("line 30 rejected");
    assert_eq!(rec["reason"], "line_too_long");
    let bytes = fs::read(fixtures().join("edge-cases.jsonl")).unwrap();
    let line30 = bytes.split(|b| *b == b'\n').nth(29).unwrap().len();
    assert!(line30 > 1000);
    assert_eq!(rec["length"].as_u64().unwrap() as usize, line30);
    assert_eq!(
        rec["raw"].as_str().unwrap().len(),
        line30,
        "under 64 KiB: kept whole"
    );
    assert_counts_add_up(&report(out.path()));
}

#[test]
fn reject_ratio_exceeded_publishes_nothing_and_exits_3() {
    let out = tempfile::tempdir().unwrap();
    let (code, stderr) = load(out.path(), &[&edge_cases()]);
    assert_eq!(code, 3, "{stderr}");
    assert!(stderr.contains("max-reject-ratio"), "{stderr}");
    assert!(
        parquet_files(&out.path().join("groups")).is_empty(),
        "nothing published"
    );
    let r = report(out.path());
    assert_eq!(r["published"], false);
    assert_eq!(r["files"], serde_json::json!([]));
    assert_counts_add_up(&r);
    assert_eq!(
        rejects(out.path()).len(),
        16,
        "the rejects file is still written"
    );
    // 15 rejects (the duplicate aside) of 28 considered lines.
    assert!((r["reject_ratio"].as_f64().unwrap() - 15.0 / 28.0).abs() < 1e-9);
    assert!(
        !out.path()
            .join(".group-loader/staging")
            .read_dir()
            .unwrap()
            .any(|_| true),
        "staging cleaned"
    );
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
            // The extras columns carry Parquet's JSON logical type (SPEC §4).
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
    let fb = parquet_files(b.path());
    assert!(fa.iter().any(|f| f.starts_with(a.path().join("accounts"))));
    assert_eq!(fa.len(), fb.len());
    for (x, y) in fa.iter().zip(&fb) {
        assert_eq!(
            x.strip_prefix(a.path()).unwrap(),
            y.strip_prefix(b.path()).unwrap()
        );
        assert_eq!(
            fs::read(x).unwrap(),
            fs::read(y).unwrap(),
            "byte-identical {}",
            x.display()
        );
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
    let empty = out.path().join("empty");
    fs::create_dir(&empty).unwrap();
    assert_eq!(load(&out.path().join("o"), &[empty.to_str().unwrap()]).0, 2);
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
    let sql = bin().args(["schema", "--format", "sql"]).output().unwrap();
    let sql = String::from_utf8(sql.stdout).unwrap();
    assert!(sql.starts_with("-- group-loader groups table (hive), duckdb dialect"));
    assert!(sql.contains("CREATE OR REPLACE VIEW groups AS SELECT * FROM read_parquet("));
    let spark = bin()
        .args(["schema", "--format", "sql", "--dialect", "spark"])
        .output()
        .unwrap();
    let spark = String::from_utf8(spark.stdout).unwrap();
    assert!(
        spark.contains("`timestamp` TIMESTAMP,") && spark.contains("USING parquet"),
        "{spark}"
    );
}
