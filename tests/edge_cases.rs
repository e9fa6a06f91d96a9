//! Integration tests of the reject reasons and mapping rules, one fixture line each: run the `group-loader`
//! binary on fixtures/edge-cases.jsonl and read the dataset and the rejects back value by value.
//! Expected values come from the fixture lines themselves (see fixtures/edge-cases.md), worked out by hand.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use common::*;

fn edge_cases() -> String {
    fixtures().join("edge-cases.jsonl").display().to_string()
}

/// The rejects of a run that wrote exactly one rejects file.
fn one_rejects_file(out: &Path) -> Vec<serde_json::Value> {
    assert_eq!(fs::read_dir(out.join("_rejects")).unwrap().count(), 1);
    rejects(out)
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
    let recs = one_rejects_file(out.path());
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
            // Duplicates are listed with their id, without the raw line.
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
        "the skew-corrected timestamp known answer"
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
    let rec = one_rejects_file(out.path())
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
        one_rejects_file(out.path()).len(),
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
