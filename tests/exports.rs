//! The inputs real exports are: Segment's S3 layout, batch envelopes, RudderStack's shapes, files that are not
//! NDJSON, and a nightly job that must not succeed silently.
//!
//! Expected values are worked out by hand from the fixtures (`fixtures/make_fixtures.py` writes them; the
//! batch and RudderStack files are short enough to read), or counted from the fixture bytes with serde_json,
//! independently of the loader.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::io::Read;
use std::path::Path;

use common::*;

fn nonzero(map: &serde_json::Value) -> BTreeMap<String, u64> {
    map.as_object()
        .unwrap()
        .iter()
        .filter(|(_, v)| v.as_u64() != Some(0))
        .map(|(k, v)| (k.clone(), v.as_u64().unwrap()))
        .collect()
}

/// Byte offsets of the starts of a file's lines.
fn line_starts(bytes: &[u8]) -> Vec<usize> {
    std::iter::once(0)
        .chain(
            bytes
                .iter()
                .enumerate()
                .filter(|(_, b)| **b == b'\n')
                .map(|(i, _)| i + 1),
        )
        .collect()
}

#[test]
fn segment_s3_export_folder_loads_as_it_is() {
    let logs = fixtures().join("segment-logs");
    let out = tempfile::tempdir().unwrap();
    let (code, stderr) = load(out.path(), &[logs.to_str().unwrap()]);
    assert_eq!(code, 0, "{stderr}");

    // The oracle: every file of the folder, decompressed and parsed with serde_json.
    let mut files: Vec<_> = walkdir(&logs);
    files.sort();
    let (mut groups, mut ids, mut skipped) = (0u64, std::collections::HashSet::new(), 0u64);
    for f in &files {
        let mut text = String::new();
        flate2::read::MultiGzDecoder::new(fs::File::open(f).unwrap())
            .read_to_string(&mut text)
            .unwrap();
        for line in text.lines() {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            if v["type"] == "group" {
                groups += 1;
                ids.insert(v["messageId"].as_str().unwrap().to_string());
            } else {
                skipped += 1;
            }
        }
    }
    assert_eq!(
        files.len(),
        4,
        "two days, two <epoch-ms>.<uuid>.gz files each"
    );
    assert_eq!(groups, 345);
    assert_eq!(ids.len(), 344, "one event is delivered twice");

    let r = report(out.path());
    assert_counts_add_up(&r);
    let inputs: Vec<String> = r["inputs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["path"].as_str().unwrap().to_string())
        .collect();
    let expected: Vec<String> = files.iter().map(|f| f.display().to_string()).collect();
    assert_eq!(inputs, expected, "every file, in byte-wise path order");
    assert!(
        r["inputs"]
            .as_array()
            .unwrap()
            .iter()
            .all(|i| i["compression"] == "gzip")
    );
    assert_eq!(r["rows_written"], ids.len() as u64);
    assert_eq!(
        nonzero(&r["rejected"]),
        BTreeMap::from([("duplicate_message_id".into(), 1)])
    );
    assert_eq!(
        r["skipped"]
            .as_object()
            .unwrap()
            .values()
            .map(|v| v.as_u64().unwrap())
            .sum::<u64>(),
        skipped
    );
    let rows = read_dataset(out.path());
    let loaded: std::collections::HashSet<String> = by_id(&rows).into_keys().collect();
    assert_eq!(loaded, ids);
    assert_eq!(
        r["partitions"],
        serde_json::json!({"dt=2024-03-03": 169, "dt=2024-03-04": 175}),
        "partitions by the received day (the repeated event was received on the 3rd)"
    );

    // The summary names the output and the inputs' folder, and says what was skipped and deduplicated.
    assert!(
        stderr.contains(&format!("into {}", out.path().display())),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!(
            "from 4 files under {}/Xk2Fq9Lm3T/",
            logs.display()
        )),
        "{stderr}"
    );
    assert!(
        stderr.contains("skipped (other event types): identify 53, page 43, track 40"),
        "{stderr}"
    );
    assert!(stderr.contains("deduplicated: 1 events"), "{stderr}");
}

fn walkdir(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walkdir(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[test]
fn batch_envelopes_are_cut_into_events_with_the_envelope_defaults() {
    let input = fixtures().join("batch.ndjson");
    let out = tempfile::tempdir().unwrap();
    let (code, stderr) = load(
        out.path(),
        &[input.to_str().unwrap(), "--max-reject-ratio", "1"],
    );
    assert_eq!(code, 0, "{stderr}");
    let r = report(out.path());
    // Line 1: 4 events, line 2: 3, line 3 (empty batch): 1, line 4 (a plain event): 1, line 5: 1.
    assert_eq!(r["lines"], 5);
    assert_eq!(r["events"], 10);
    assert_eq!(r["batches"], serde_json::json!({"lines": 4, "events": 9}));
    assert_eq!(r["blank"], 0);
    assert_eq!(r["skipped"], serde_json::json!({"identify": 1, "track": 1}));
    assert_eq!(
        nonzero(&r["rejected"]),
        BTreeMap::from([
            ("not_an_object".into(), 1),
            ("missing_group_id".into(), 1),
            ("invalid_batch".into(), 1),
            ("duplicate_message_id".into(), 1),
        ])
    );
    assert_eq!(r["rows_written"], 4);
    assert_counts_add_up(&r);
    assert_eq!(r["inputs"][0]["lines"], 5);
    assert_eq!(r["inputs"][0]["events"], 10);
    // The reject ratio is over events: 3 of the 8 events not skipped (the duplicate does not count).
    assert!(
        (r["reject_ratio"].as_f64().unwrap() - 3.0 / 8.0).abs() < 1e-9,
        "{r:#}"
    );

    let rows = by_id(&read_dataset(out.path()));
    assert_eq!(
        rows.keys().collect::<Vec<_>>(),
        ["b-1", "b-3", "b-7", "b-9"]
    );
    // b-1 has no context, integrations or sentAt of its own: the envelope's apply.
    let b1 = &rows["b-1"];
    assert_eq!(b1["context_ip"], s("203.0.113.9"));
    assert_eq!(b1["context_library_name"], s("analytics-python"));
    assert_eq!(b1["context_library_version"], s("2.3.3"));
    assert_eq!(b1["extra_context"], V::Null);
    assert_eq!(b1["extra"], s(r#"{"integrations":{"Salesforce":false}}"#));
    assert_eq!(b1["sent_at"], V::T(micros("2024-03-05T10:00:05Z")));
    assert_eq!(b1["name"], s("Hooli"));
    // b-3's own context keys win (ip, locale); the envelope adds the library it does not have.
    let b3 = &rows["b-3"];
    assert_eq!(b3["context_ip"], s("198.51.100.3"));
    assert_eq!(b3["context_library_name"], s("analytics-python"));
    assert_eq!(b3["extra_context"], s(r#"{"locale":"de-DE"}"#));
    assert_eq!(b3["anonymous_id"], s("b-anon-3"));
    // b-7: "type": "Group" is a Group call; its own sentAt wins over the envelope's.
    let b7 = &rows["b-7"];
    assert_eq!(b7["sent_at"], V::T(micros("2024-03-05T11:00:09Z")));
    assert_eq!(b7["context_library_name"], s("analytics-go"));
    assert_eq!(b7["context_ip"], V::Null);
    assert_eq!(b7["plan"], s("free"));
    // b-9 is a plain line: nothing merged into it.
    let b9 = &rows["b-9"];
    assert_eq!(
        (&b9["context_library_name"], &b9["sent_at"], &b9["extra"]),
        (&V::Null, &V::Null, &V::Null)
    );
    // The envelope's writeKey is a credential: in no cell of any row.
    for row in rows.values() {
        for v in row.values() {
            if let V::S(text) = v {
                assert!(!text.contains("wk_do_not_store"), "{row:?}");
            }
        }
    }

    // Rejects of batch events name their line and index, and hold the element as written.
    let bytes = fs::read(&input).unwrap();
    let starts = line_starts(&bytes);
    let line_text = |n: usize| std::str::from_utf8(&bytes[starts[n - 1]..starts[n] - 1]).unwrap();
    let recs = rejects(out.path());
    let got: Vec<(u64, Option<u64>, &str)> = recs
        .iter()
        .map(|x| {
            (
                x["line"].as_u64().unwrap(),
                x["index"].as_u64(),
                x["reason"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            (2, Some(0), "not_an_object"),
            (2, Some(1), "missing_group_id"),
            (3, None, "invalid_batch"),
            (5, Some(0), "duplicate_message_id"),
        ]
    );
    for rec in &recs {
        let line = rec["line"].as_u64().unwrap() as usize;
        assert_eq!(
            rec["offset"].as_u64().unwrap() as usize,
            starts[line - 1],
            "{rec}"
        );
    }
    assert_eq!(recs[0]["raw"], r#""not an event""#);
    assert_eq!(
        recs[1]["raw"],
        r#"{"type":"group","messageId":"b-6","userId":"b-user-2","timestamp":"2024-03-05T11:00:00Z"}"#
    );
    // An envelope rejected whole keeps its line, but not the source's credential.
    assert!(line_text(3).contains(r#""writeKey":"wk_do_not_store""#));
    assert_eq!(
        recs[2]["raw"],
        line_text(3).replace("wk_do_not_store", "***"),
        "an envelope rejected whole keeps its line, its writeKey masked"
    );
    for rec in &recs {
        assert!(!rec.to_string().contains("wk_do_not_store"), "{rec}");
    }
}

#[test]
fn rudderstack_shapes_load() {
    let input = fixtures().join("rudderstack.jsonl");
    let out = tempfile::tempdir().unwrap();
    let (code, stderr) = load(out.path(), &[input.to_str().unwrap()]);
    assert_eq!(code, 0, "{stderr}");
    let r = report(out.path());
    assert_counts_add_up(&r);
    assert_eq!(
        r["skipped"],
        serde_json::json!({"IDENTIFY": 1}),
        "counted as written"
    );
    assert_eq!(r["rows_written"], 3);
    let rows = by_id(&read_dataset(out.path()));
    // "type": "GROUP", no context.ip: context_ip from request_ip, which also stays in extra.
    let rs1 = &rows["rs-1"];
    assert_eq!(rs1["context_ip"], s("203.0.113.7"));
    assert_eq!(
        rs1["extra"],
        s(r#"{"rudderId":"8f3c0e38-7b1c-4c35-9e1a-6a7a7f0c9d11","request_ip":"203.0.113.7"}"#)
    );
    assert_eq!(rs1["context_library_name"], s("RudderLabs JavaScript SDK"));
    assert_eq!(rs1["employees"], s("120"));
    // context.ip holds text: it wins over request_ip.
    assert_eq!(rows["rs-3"]["context_ip"], s("198.51.100.20"));
    assert_eq!(rows["rs-3"]["extra"], s(r#"{"request_ip":"203.0.113.8"}"#));
    assert_eq!(rows["rs-4"]["context_ip"], s("203.0.113.9"));
}

#[test]
fn a_json_array_file_is_rejected_with_a_hint_to_convert_it() {
    let input = fixtures().join("pretty-array.json");
    let out = tempfile::tempdir().unwrap();
    let (code, stderr) = load(out.path(), &[input.to_str().unwrap()]);
    assert_eq!(code, 3, "{stderr}");
    let hint = format!("jq -c '.[]' {} > converted.ndjson", input.display());
    assert_eq!(
        stderr.matches("jq -c").count(),
        1,
        "the hint once: {stderr}"
    );
    assert!(
        stderr.contains(&format!(
            "hint: {} looks like a JSON array",
            input.display()
        )),
        "{stderr}"
    );
    assert!(stderr.contains(&hint), "{stderr}");
    let recs = rejects(out.path());
    let lines = fs::read_to_string(&input).unwrap().lines().count();
    assert_eq!(recs.len(), lines, "every line rejected");
    for rec in &recs {
        assert_eq!(rec["reason"], "invalid_json");
        assert!(rec["message"].as_str().unwrap().contains(&hint), "{rec}");
    }
    let r = report(out.path());
    assert_eq!(r["published"], false);
    assert_eq!(r["not_published"], "reject_ratio");
    assert_eq!(r["not_ndjson"][0]["looks_like"], "json_array");
    assert!(parquet_files(&out.path().join("groups")).is_empty());

    // Allowed through, the run says so in its summary.
    let out = tempfile::tempdir().unwrap();
    let (code, stderr) = load(
        out.path(),
        &[input.to_str().unwrap(), "--max-reject-ratio", "1"],
    );
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stderr.contains(&format!(
            "note: {} looks like a JSON array",
            input.display()
        )),
        "{stderr}"
    );

    // A pretty-printed object (first line "{") gets the `jq -c .` hint; a file that merely starts with a bad
    // line does not get any.
    let dir = tempfile::tempdir().unwrap();
    let pretty = dir.path().join("pretty.json");
    fs::write(
        &pretty,
        "{\n  \"type\": \"group\",\n  \"groupId\": \"g\"\n}\n",
    )
    .unwrap();
    let bad = dir.path().join("bad.json");
    fs::write(
        &bad,
        "{\"type\":\n{\"type\":\"group\",\"groupId\":\"g\",\"userId\":\"u\",\"timestamp\":0}\n",
    )
    .unwrap();
    let out = dir.path().join("out");
    let (code, stderr) = load(
        &out,
        &[
            pretty.to_str().unwrap(),
            bad.to_str().unwrap(),
            "--max-reject-ratio",
            "1",
        ],
    );
    assert_eq!(code, 0, "{stderr}");
    let recs = rejects(&out);
    let of = |f: &Path| -> Vec<&serde_json::Value> {
        recs.iter()
            .filter(|r| r["file"] == f.to_str().unwrap())
            .collect()
    };
    assert_eq!(of(&pretty).len(), 4);
    for rec in of(&pretty) {
        let message = rec["message"].as_str().unwrap();
        assert!(message.contains("looks like pretty-printed JSON"), "{rec}");
        assert!(message.contains("jq -c . "), "{rec}");
    }
    assert_eq!(of(&bad).len(), 1);
    assert!(
        !of(&bad)[0]["message"].as_str().unwrap().contains("jq"),
        "{:?}",
        of(&bad)
    );
}

#[test]
fn min_rows_publishes_nothing_and_exits_5() {
    let dir = tempfile::tempdir().unwrap();
    let docs = fixtures().join("segment-docs.json");
    let empty = dir.path().join("empty.ndjson");
    fs::write(&empty, "").unwrap();
    let tracks = dir.path().join("tracks.ndjson");
    fs::write(
        &tracks,
        "{\"type\":\"track\",\"event\":\"x\"}\n{\"type\":\"identify\"}\n",
    )
    .unwrap();
    for (input, min, expected_rows) in [(&docs, "2", 1), (&empty, "1", 0), (&tracks, "1", 0)] {
        let out = dir.path().join(format!(
            "out-{}",
            input.file_name().unwrap().to_string_lossy()
        ));
        let (code, stderr) = load(&out, &[input.to_str().unwrap(), "--min-rows", min]);
        assert_eq!(code, 5, "{stderr}");
        assert!(
            stderr.contains(&format!("fewer than --min-rows {min}")),
            "{stderr}"
        );
        assert!(
            parquet_files(&out.join("groups")).is_empty(),
            "no rows published"
        );
        assert!(
            parquet_files(&out.join("accounts")).is_empty(),
            "no accounts published"
        );
        let r = report(&out);
        assert_eq!(r["published"], false);
        assert_eq!(r["not_published"], "min_rows");
        assert_eq!(r["rows_written"], expected_rows);
        assert_eq!(r["min_rows"], min.parse::<u64>().unwrap());
        assert_counts_add_up(&r);
    }
    // Enough rows: published, exit 0.
    let out = dir.path().join("ok");
    let (code, stderr) = load(&out, &[docs.to_str().unwrap(), "--min-rows", "1"]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(read_dataset(&out).len(), 1);
    // An empty export with the default --min-rows 0 is a success with nothing loaded.
    let out = dir.path().join("zero");
    assert_eq!(load(&out, &[empty.to_str().unwrap()]).0, 0);
    // Over the reject ratio as well: the ratio is reported (exit 3), as it is checked first.
    let out = dir.path().join("both");
    let pretty = fixtures().join("pretty-array.json");
    assert_eq!(
        load(&out, &[pretty.to_str().unwrap(), "--min-rows", "5"]).0,
        3
    );
}
