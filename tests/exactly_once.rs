//! Exactly once across runs: the dedupe window, runs that repeat inputs, a dataset
//! that remembers its shape, and an overwrite that says what it removed.
//!
//! Expected counts are worked out by hand from the fixtures: `fixtures/export/2024-03-01.ndjson.gz` holds 439
//! Group calls with 439 distinct ids, all received on 2024-03-01; `2024-03-02.ndjson.gz` holds 409 Group calls
//! with 408 distinct ids (one is sent twice), all received on 2024-03-02 (counted with Python's json module
//! from the decompressed fixtures).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use common::*;
use group_loader::command::load::load as load_in_process;
use proptest::prelude::*;

fn day(d: u32) -> String {
    fixtures()
        .join(format!("export/2024-03-0{d}.ndjson.gz"))
        .display()
        .to_string()
}

fn ids(rows: &[Row]) -> Vec<String> {
    rows.iter()
        .map(|r| match &r["id"] {
            V::S(id) => id.clone(),
            other => panic!("id {other:?}"),
        })
        .collect()
}

/// A gzipped fixture's bytes, decompressed.
fn gunzip(path: &str) -> Vec<u8> {
    let mut out = Vec::new();
    std::io::Read::read_to_end(
        &mut flate2::read::MultiGzDecoder::new(fs::File::open(path).unwrap()),
        &mut out,
    )
    .unwrap();
    out
}

fn distinct(v: &[String]) -> usize {
    v.iter().collect::<BTreeSet<_>>().len()
}

/// The report of run `run` (by id).
fn report_of(out: &Path, run: &str) -> serde_json::Value {
    serde_json::from_slice(&fs::read(run_file(&out.join("_runs"), run)).unwrap()).unwrap()
}

/// The run id named in a summary (`run 0123456789abcdef in 0.12s`).
fn run_id(stderr: &str) -> String {
    let at = stderr.rfind("  run ").expect("a run id in the summary");
    stderr[at + 6..at + 22].to_string()
}

fn rejects_of(out: &Path, run: &str) -> Vec<serde_json::Value> {
    fs::read_to_string(run_file(&out.join("_rejects"), run))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn overlapping_runs_load_each_id_once() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    // Night 1: day 1 alone.
    let (code, stderr) = load(&out, &[&day(1)]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(read_dataset(&out).len(), 439);
    // A catch-up over the whole export (days 1 and 2): day 1 is already loaded.
    let export = fixtures().join("export");
    let (code, stderr) = load(&out, &[export.to_str().unwrap()]);
    assert_eq!(code, 0, "{stderr}");
    let all = ids(&read_dataset(&out));
    assert_eq!((all.len(), distinct(&all)), (847, 847));
    let r = report_of(&out, &run_id(&stderr));
    assert_eq!(r["rows_written"], 408);
    assert_eq!(
        r["duplicates"],
        serde_json::json!({"this_run": 1, "earlier_runs": 439})
    );
    assert_eq!(r["rejected"]["duplicate_message_id"], 440);
    // Duplicates aside, the one rejected event is day 2's truncated line, of 439 + 409 Group calls + itself.
    assert_eq!(r["reject_ratio"].as_f64().unwrap(), 1.0 / 849.0);
    assert_eq!(
        r["dedupe"]["partitions_read"], 1,
        "dt=2024-03-01, in the window of 03-01 and 03-02"
    );
    assert_eq!(r["dedupe"]["ids_read"], 439);
    assert_counts_add_up(&r);
    assert!(
        stderr.contains("deduplicated: 440 events not loaded again, their messageId already loaded (1 by this run, 439 by earlier runs within --dedupe-window 7days)"),
        "{stderr}"
    );

    // Day 1 again with one late event appended (a new file, so a new run): only the late event loads.
    let late = dir.path().join("2024-03-01-late.ndjson");
    fs::write(&late, gunzip(&day(1))).unwrap();
    let mut f = fs::OpenOptions::new().append(true).open(&late).unwrap();
    writeln!(
        f,
        r#"{{"type":"group","messageId":"late-1","groupId":"grp-0001","userId":"u","receivedAt":"2024-03-01T23:59:00Z"}}"#
    )
    .unwrap();
    let (code, stderr) = load(&out, &[late.to_str().unwrap()]);
    assert_eq!(code, 0, "{stderr}");
    let all = ids(&read_dataset(&out));
    assert_eq!((all.len(), distinct(&all)), (848, 848));
    let r = report_of(&out, &run_id(&stderr));
    assert_eq!(r["rows_written"], 1);
    assert_eq!(r["duplicates"]["earlier_runs"], 439);

    // Duplicates are listed with their id and position, without their raw line.
    let recs = rejects_of(&out, &run_id(&stderr));
    assert_eq!(recs.len(), 439);
    for rec in &recs {
        assert_eq!(rec["reason"], "duplicate_message_id");
        assert!(rec["id"].as_str().unwrap().starts_with("msg-"), "{rec}");
        assert!(
            rec.get("raw").is_none() && rec.get("raw_base64").is_none(),
            "{rec}"
        );
        assert_eq!(rec["file"], late.to_str().unwrap());
        assert!(rec["line"].as_u64().unwrap() >= 1 && rec.get("offset").is_some());
        assert!(
            rec["message"]
                .as_str()
                .unwrap()
                .contains("in dt=2024-03-01 by an earlier run"),
            "{rec}"
        );
    }
}

#[test]
fn a_repeated_export_writes_no_raw_lines_to_the_rejects() {
    let dir = tempfile::tempdir().unwrap();
    let day1 = gunzip(&day(1));
    let twice = dir.path().join("twice.ndjson");
    fs::write(&twice, [day1.as_slice(), day1.as_slice()].concat()).unwrap();
    let out = dir.path().join("out");
    let (code, stderr) = load(&out, &[twice.to_str().unwrap()]);
    assert_eq!(code, 0, "{stderr}");
    let rejects = fs::read_dir(out.join("_rejects"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let size = fs::metadata(&rejects).unwrap().len();
    // 439 records of a few dozen bytes each, against 439 lines of ~1 KB.
    assert!(
        size < (day1.len() as u64) / 4,
        "{size} bytes of rejects for {} of input",
        day1.len()
    );
    let r = report(&out);
    assert_eq!(
        r["duplicates"],
        serde_json::json!({"this_run": 439, "earlier_runs": 0})
    );
    assert_eq!(
        r["reject_ratio"], 0.0,
        "duplicates never count against the ratio"
    );
}

/// One Group call received at `received` (RFC 3339), with message id `id`.
fn event(id: &str, received: &str) -> String {
    format!(
        r#"{{"type":"group","messageId":"{id}","groupId":"g-{id}","userId":"u","receivedAt":"{received}"}}"#
    )
}

fn write_input(dir: &Path, name: &str, lines: &[String]) -> PathBuf {
    let p = dir.join(name);
    fs::write(&p, lines.join("\n") + "\n").unwrap();
    p
}

/// Partition -> ids, read back.
fn by_partition(out: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let mut m: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for r in read_dataset(out) {
        let (V::S(p), V::S(id)) = (&r["_partition"], &r["id"]) else {
            panic!("{r:?}")
        };
        m.entry(p.clone()).or_default().insert(id.clone());
    }
    m
}

#[test]
fn the_window_reaches_exactly_its_partitions_on_both_sides() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    // Earlier: id "a" on 2024-03-10, id "b" on 2024-03-10 at 12:00 (hour partitions below).
    let first = write_input(
        dir.path(),
        "first.ndjson",
        &[event("a", "2024-03-10T00:00:00Z")],
    );
    assert_eq!(load(&out, &[first.to_str().unwrap()]).0, 0);
    // Later copies of "a": 7 days either side are within --dedupe-window 7d; 8 days are not.
    let later = write_input(
        dir.path(),
        "later.ndjson",
        &[
            event("a", "2024-03-03T00:00:00Z"), // 7 days before: a duplicate
            event("a", "2024-03-17T23:59:59Z"), // 7 days after (its day starts 7 days later): a duplicate
            event("a", "2024-03-02T23:59:59Z"), // 8 days before: loaded
        ],
    );
    let (code, stderr) = load(&out, &[later.to_str().unwrap()]);
    assert_eq!(code, 0, "{stderr}");
    let r = report_of(&out, &run_id(&stderr));
    assert_eq!(
        r["duplicates"],
        serde_json::json!({"this_run": 0, "earlier_runs": 2})
    );
    let got = by_partition(&out);
    assert_eq!(
        got.keys().collect::<Vec<_>>(),
        ["dt=2024-03-02", "dt=2024-03-10"]
    );
    // And the other side, now that "a" is also on 03-02: 03-18 is 8 days from 03-10, 16 from 03-02.
    let after = write_input(
        dir.path(),
        "after.ndjson",
        &[event("a", "2024-03-18T00:00:00Z")],
    );
    let (code, stderr) = load(&out, &[after.to_str().unwrap()]);
    assert_eq!(code, 0, "{stderr}");
    assert!(by_partition(&out).contains_key("dt=2024-03-18"));

    // Hour partitions with a 12h window: 12 hours either side count, 13 do not.
    let out = dir.path().join("hours");
    let first = write_input(
        dir.path(),
        "h1.ndjson",
        &[event("b", "2024-03-10T12:30:00Z")],
    );
    assert_eq!(
        load(
            &out,
            &[
                first.to_str().unwrap(),
                "--partition",
                "hour",
                "--dedupe-window",
                "12h"
            ]
        )
        .0,
        0
    );
    let later = write_input(
        dir.path(),
        "h2.ndjson",
        &[
            event("b", "2024-03-10T00:00:00Z"), // hour 00, 12 hours before hour 12: a duplicate
            event("b", "2024-03-11T00:59:00Z"), // hour 00 of the 11th, 12 hours after: a duplicate
            event("b", "2024-03-09T23:59:00Z"), // 13 hours before: loaded
        ],
    );
    let (code, stderr) = load(
        &out,
        &[
            later.to_str().unwrap(),
            "--partition",
            "hour",
            "--dedupe-window",
            "12h",
        ],
    );
    assert_eq!(code, 0, "{stderr}");
    let got = by_partition(&out);
    assert_eq!(
        got.keys().collect::<Vec<_>>(),
        ["dt=2024-03-09/hr=23", "dt=2024-03-10/hr=12"]
    );
}

#[test]
fn window_zero_and_no_dedupe() {
    let dir = tempfile::tempdir().unwrap();
    let first = write_input(
        dir.path(),
        "1.ndjson",
        &[event("a", "2024-03-10T00:00:00Z")],
    );
    let second = write_input(
        dir.path(),
        "2.ndjson",
        &[
            event("a", "2024-03-10T01:00:00Z"),
            event("a", "2024-03-10T02:00:00Z"),
        ],
    );
    // --dedupe-window 0: within the run only (the second file's two copies become one).
    let out = dir.path().join("zero");
    assert_eq!(
        load(&out, &[first.to_str().unwrap(), "--dedupe-window", "0"]).0,
        0
    );
    let (code, stderr) = load(&out, &[second.to_str().unwrap(), "--dedupe-window", "0"]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(ids(&read_dataset(&out)), ["a", "a"]);
    let r = report_of(&out, &run_id(&stderr));
    assert_eq!(
        r["duplicates"],
        serde_json::json!({"this_run": 1, "earlier_runs": 0})
    );
    assert_eq!(
        r["dedupe"]["ids_read"], 0,
        "nothing of earlier runs is read"
    );
    // --no-dedupe: every copy.
    let out = dir.path().join("none");
    assert_eq!(load(&out, &[first.to_str().unwrap(), "--no-dedupe"]).0, 0);
    assert_eq!(load(&out, &[second.to_str().unwrap(), "--no-dedupe"]).0, 0);
    assert_eq!(ids(&read_dataset(&out)), ["a", "a", "a"]);
    // A bad duration is bad usage.
    assert_eq!(
        load(&out, &[first.to_str().unwrap(), "--dedupe-window", "soon"]).0,
        2
    );
}

#[test]
fn overwrite_says_what_it_replaced_and_its_partitions_are_not_already_loaded() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    assert_eq!(load(&out, &[&day(1)]).0, 0);
    assert_eq!(load(&out, &[&day(2)]).0, 0);
    // One straggler for day 1: an event whose first copy sits in dt=2024-03-01, which the overwrite replaces.
    let day1 = String::from_utf8(gunzip(&day(1))).unwrap();
    let first_day1 = day1
        .lines()
        .find(|l| l.contains("\"group\""))
        .unwrap()
        .to_string();
    let first_id: serde_json::Value = serde_json::from_str(&first_day1).unwrap();
    let first_id = first_id["messageId"].as_str().unwrap().to_string();
    let straggler = write_input(
        dir.path(),
        "straggler.ndjson",
        std::slice::from_ref(&first_day1),
    );
    let (code, stderr) = load(&out, &[straggler.to_str().unwrap(), "--mode", "overwrite"]);
    assert_eq!(code, 0, "{stderr}");
    let r = report_of(&out, &run_id(&stderr));
    // The event's first copy is in dt=2024-03-01, which this run replaces: it is not a duplicate.
    assert_eq!(r["rows_written"], 1);
    assert_eq!(r["duplicates"]["earlier_runs"], 0);
    assert_eq!(r["replaced"], serde_json::json!({"dt=2024-03-01": 439}));
    assert!(
        stderr.contains("replaced (--mode overwrite): 1 partitions, 439 rows of earlier runs removed: dt=2024-03-01 439"),
        "{stderr}"
    );
    let got = by_partition(&out);
    assert_eq!(got["dt=2024-03-01"], BTreeSet::from([first_id.clone()]));
    assert_eq!(
        got["dt=2024-03-02"].len(),
        408,
        "the partition overwrite does not write is untouched"
    );

    // A copy of that event received on 2024-03-02 (in the window of 03-01, which overwrite does not touch
    // this time) is a duplicate of the row loaded just now.
    let copy = first_day1.replace("\"receivedAt\":\"2024-03-01", "\"receivedAt\":\"2024-03-03");
    let other = write_input(
        dir.path(),
        "copy.ndjson",
        &[copy, event("new-1", "2024-03-03T00:00:00Z")],
    );
    let (code, stderr) = load(&out, &[other.to_str().unwrap(), "--mode", "overwrite"]);
    assert_eq!(code, 0, "{stderr}");
    let r = report_of(&out, &run_id(&stderr));
    assert_eq!(r["duplicates"]["earlier_runs"], 1);
    assert_eq!(
        r["replaced"],
        serde_json::json!({}),
        "dt=2024-03-03 held nothing"
    );
    assert_eq!(
        by_partition(&out)["dt=2024-03-03"],
        BTreeSet::from(["new-1".to_string()])
    );
}

#[test]
fn a_repeated_run_has_nothing_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let (code, first) = load(&out, &[&day(1), &day(2)]);
    assert_eq!(code, 0, "{first}");
    let id = run_id(&first);
    let before = fs::read(run_file(&out.join("_runs"), &id)).unwrap();
    let files = parquet_files(&out.join("groups"));
    let rows = read_dataset(&out);
    // The same command again (a retried cron job), with --min-rows: nothing to do, exit 0.
    let (code, stderr) = load(&out, &[&day(1), &day(2), "--min-rows", "1"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stderr.contains(&format!(
            "nothing to do: these inputs were already loaded into {} by run {id}",
            out.display()
        )),
        "{stderr}"
    );
    assert_eq!(parquet_files(&out.join("groups")), files);
    assert_eq!(read_dataset(&out), rows);
    assert_eq!(
        fs::read(run_file(&out.join("_runs"), &id)).unwrap(),
        before,
        "the first report stays"
    );
    // Standard input is identified by its content once read: the same bytes again are the same run.
    let bytes = fs::read(day(1)).unwrap();
    let out = dir.path().join("stdin");
    for _ in 0..2 {
        let o = bin()
            .args(["load", "-", "--progress", "never", "--output"])
            .arg(&out)
            .write_stdin(bytes.clone())
            .output()
            .unwrap();
        assert_eq!(
            o.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
    assert_eq!(read_dataset(&out).len(), 439);
    assert_eq!(fs::read_dir(out.join("_runs")).unwrap().count(), 1);
}

#[test]
fn the_dataset_remembers_its_partitioning() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    assert_eq!(load(&out, &[&day(1), "--partition", "hour"]).0, 0);
    let listing = |out: &Path| {
        let mut all = Vec::new();
        fn walk(d: &Path, acc: &mut Vec<(PathBuf, u64)>) {
            for e in fs::read_dir(d).unwrap().flatten() {
                let p = e.path();
                let m = fs::symlink_metadata(&p).unwrap();
                if m.is_dir() {
                    walk(&p, acc);
                } else {
                    acc.push((p, m.len()));
                }
            }
        }
        walk(out, &mut all);
        all.sort();
        all
    };
    let before = listing(&out);
    for (option, value) in [("--partition", "day"), ("--partition", "none")] {
        let (code, stderr) = load(&out, &[&day(2), option, value]);
        assert_eq!(code, 2, "{stderr}");
        assert!(
            stderr.contains("was created with --partition hour"),
            "{stderr}"
        );
        assert_eq!(listing(&out), before, "nothing touched");
    }
    // The recorded value itself is fine.
    assert_eq!(load(&out, &[&day(2), "--partition", "hour"]).0, 0);
}

/// A pool of distinct events (an id always has the same content, as re-delivered events do), over 10 days.
fn pool() -> impl Strategy<Value = Vec<(u32, u32, u32)>> {
    // (id, day 0..10, plan 0..3)
    prop::collection::btree_map(0u32..200, (0u32..10, 0u32..3), 1..40)
        .prop_map(|m| m.into_iter().map(|(id, (d, p))| (id, d, p)).collect())
}

fn line_of(e: &(u32, u32, u32)) -> String {
    let (id, d, p) = e;
    format!(
        r#"{{"type":"group","messageId":"m{id}","groupId":"g{}","userId":"u","receivedAt":"2024-03-{:02}T{:02}:00:00Z","traits":{{"plan":"p{p}"}}}}"#,
        id % 7,
        d + 1,
        id % 24
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 16, ..ProptestConfig::default() })]

    /// Random events cut into random overlapping runs, in random order, with repeats: each id is loaded
    /// once, and `accounts` is the same as one run over all the events.
    #[test]
    fn overlapping_runs_in_any_order_load_each_id_once(
        events in pool(),
        runs in prop::collection::vec(prop::collection::vec(any::<prop::sample::Index>(), 1..30), 1..5),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        let mut used = BTreeSet::new();
        for (i, picks) in runs.iter().enumerate() {
            let lines: Vec<String> = picks.iter().map(|ix| {
                let e = ix.get(&events);
                used.insert(*e);
                line_of(e)
            }).collect();
            let input = write_input(dir.path(), &format!("run-{i}.ndjson"), &lines);
            let opts = group_loader::options::LoadOptions {
                max_line_bytes: 1 << 20,
                ..common::options(&input, &out)
            };
            let loaded = load_in_process(&opts);
            prop_assert!(loaded.is_ok(), "run {}: {:?}", i, loaded.err());
        }
        let loaded = ids(&read_dataset(&out));
        let expected: BTreeSet<String> = used.iter().map(|(id, _, _)| format!("m{id}")).collect();
        prop_assert_eq!(loaded.len(), expected.len(), "each id once: {:?}", loaded);
        prop_assert_eq!(loaded.into_iter().collect::<BTreeSet<_>>(), expected);
        // One run over every distinct event used gives the same accounts table.
        let all: Vec<String> = used.iter().map(line_of).collect();
        let one = dir.path().join("one");
        let input = write_input(dir.path(), "all.ndjson", &all);
        let opts = group_loader::options::LoadOptions { max_line_bytes: 1 << 20, ..common::options(&input, &one) };
        let loaded = load_in_process(&opts);
        prop_assert!(loaded.is_ok(), "one run over all: {:?}", loaded.err());
        let accounts = |out: &Path| -> Vec<Row> {
            let mut rows: Vec<Row> = parquet_files(&out.join("accounts")).iter().flat_map(|f| read_file(f)).collect();
            rows.sort_by(|a, b| format!("{:?}", a["group_id"]).cmp(&format!("{:?}", b["group_id"])));
            rows
        };
        prop_assert_eq!(accounts(&out), accounts(&one));
    }
}
