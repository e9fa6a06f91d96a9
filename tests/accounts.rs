//! The `accounts` table: a known answer worked out by hand, and property tests that apply random
//! events in random orders, split across random runs (with repeats), and compare the table with one run over
//! all events and with an independent model of the rule.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use common::*;
use group_loader::command::load::load as load_in_process;
use group_loader::options::{LoadOptions, Mode};
use proptest::prelude::*;

/// The common in-process options, with every event expected to load (a reject fails the run) and lines of
/// any length the tests write.
fn options(input: &Path, out: &Path) -> LoadOptions {
    LoadOptions {
        max_reject_ratio: 0.0,
        max_line_bytes: 1 << 20,
        ..common::options(input, out)
    }
}

/// Loads `lines` (one run) into `out`.
fn run(out: &Path, name: &str, lines: &[String], mode: Mode) {
    let dir = out.parent().unwrap().join("inputs");
    fs::create_dir_all(&dir).unwrap();
    let input = dir.join(name);
    fs::write(&input, lines.join("\n")).unwrap();
    let mut opts = options(&input, out);
    opts.mode = mode;
    load_in_process(&opts).expect("run");
}

/// The accounts table, by group_id (every column, `trait_versions` included).
fn accounts(out: &Path) -> BTreeMap<String, Row> {
    parquet_files(&out.join("accounts"))
        .iter()
        .flat_map(|f| read_file(f))
        .map(|r| match &r["group_id"] {
            V::S(g) => (g.clone(), r),
            other => panic!("group_id {other:?}"),
        })
        .collect()
}

fn t(s: &str) -> V {
    V::T(micros(s))
}

#[test]
fn known_answer_across_runs_and_late_data() {
    // Worked out by hand from the rule: per trait, the event with the greatest (timestamp, received_at, id)
    // among those that sent it; null clears; not sent keeps.
    let e1 = r#"{"type":"group","messageId":"m1","groupId":"initech","userId":"u","timestamp":"2024-03-01T10:00:00Z","traits":{"name":"Initech","plan":"free","address":{"city":"Austin","zip":"78701"},"seats":5}}"#;
    let e2 = r#"{"type":"group","messageId":"m2","groupId":"initech","userId":"u","timestamp":"2024-03-03T10:00:00Z","traits":{"plan":null,"seats":null,"createdAt":"2020-01-01T00:00:00Z"}}"#;
    let e3 = r#"{"type":"group","messageId":"m3","groupId":"initech","userId":"u","timestamp":"2024-03-02T10:00:00Z","traits":{"plan":"pro","industry":"Tech","seats":7,"tier":"gold"}}"#;
    let e4 = r#"{"type":"group","messageId":"m4","groupId":"initech","userId":"u","timestamp":"2024-03-04T10:00:00Z","traits":{"address":{"city":null}}}"#;
    let other = r#"{"type":"group","messageId":"o1","groupId":"globex","userId":"u","timestamp":"2024-03-01T00:00:00Z","traits":{"plan":"enterprise"}}"#;
    let lines: Vec<String> = [e1, e2, e3, e4, other].map(String::from).to_vec();

    let dir = tempfile::tempdir().unwrap();
    let split = dir.path().join("split");
    // e3 arrives last, after the newer e2 and e4; e1 is loaded twice.
    run(
        &split,
        "a.ndjson",
        &[lines[0].clone(), lines[1].clone()],
        Mode::Append,
    );
    run(
        &split,
        "b.ndjson",
        &[lines[3].clone(), lines[4].clone()],
        Mode::Append,
    );
    run(
        &split,
        "c.ndjson",
        &[lines[2].clone(), lines[0].clone()],
        Mode::Append,
    );
    let got = accounts(&split);
    assert_eq!(got.len(), 2);
    let a = &got["initech"];
    assert_eq!(a["name"], s("Initech"), "sent once, never cleared");
    assert_eq!(a["plan"], V::Null, "cleared by e2, newer than e3's 'pro'");
    assert_eq!(a["industry"], s("Tech"), "only e3 sent it, late or not");
    assert_eq!(a["created_at"], t("2020-01-01T00:00:00Z"));
    assert_eq!(a["address_city"], V::Null, "cleared by e4");
    assert_eq!(
        a["extra_traits"],
        s(r#"{"address":{"zip":"78701"},"tier":"gold"}"#),
        "seats: cleared by e2 (newer than e3's 7); tier: e3; address leftovers: e1"
    );
    assert_eq!(a["first_seen_at"], t("2024-03-01T10:00:00Z"));
    assert_eq!(a["last_seen_at"], t("2024-03-04T10:00:00Z"));
    let versions: serde_json::Value = match &a["trait_versions"] {
        V::S(j) => serde_json::from_str(j).unwrap(),
        other => panic!("{other:?}"),
    };
    let day = |d: u32| micros(&format!("2024-03-0{d}T10:00:00Z"));
    assert_eq!(
        versions,
        serde_json::json!({
            "versions": [[day(1), null, "m1"], [day(2), null, "m3"], [day(3), null, "m2"], [day(4), null, "m4"]],
            "columns": {"name": 0, "plan": 2, "industry": 1, "created_at": 2, "address_city": 3},
            "extra_traits": {"address": 0, "seats": 2, "tier": 1}
        })
    );
    assert_eq!(got["globex"]["plan"], s("enterprise"));

    let once = dir.path().join("once");
    run(&once, "all.ndjson", &lines, Mode::Append);
    assert_eq!(
        accounts(&once),
        got,
        "one run over all events gives the same table"
    );
}

#[test]
fn overwrite_and_no_accounts_rebuild_from_groups() {
    let day = |d: u32, plan: &str| {
        format!(
            r#"{{"type":"group","messageId":"m{d}{}","groupId":"g","userId":"u","timestamp":"2024-03-0{d}T00:00:00Z","traits":{{"plan":{plan}}}}}"#,
            plan.replace('"', "")
        )
    };
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    run(&out, "d1.ndjson", &[day(1, "\"a\"")], Mode::Append);
    run(&out, "d2.ndjson", &[day(2, "\"b\"")], Mode::Append);
    assert_eq!(accounts(&out)["g"]["plan"], s("b"));
    // Overwrite day 2 with a clear: day 2's "b" is gone from groups, so accounts must forget it too.
    run(&out, "d2.ndjson", &[day(2, "null")], Mode::Overwrite);
    let expected = dir.path().join("expected");
    run(
        &expected,
        "x.ndjson",
        &[day(1, "\"a\""), day(2, "null")],
        Mode::Append,
    );
    assert_eq!(accounts(&out), accounts(&expected));
    assert_eq!(accounts(&out)["g"]["plan"], V::Null);

    // --no-accounts removes the snapshot; the next run rebuilds it from every groups file.
    let mut opts = options(&dir.path().join("inputs/d1.ndjson"), &out);
    opts.accounts = false;
    load_in_process(&opts).unwrap();
    assert!(accounts(&out).is_empty(), "no stale snapshot is left");
    run(&out, "d3.ndjson", &[day(3, "\"c\"")], Mode::Append);
    run(
        &expected,
        "y.ndjson",
        &[day(1, "\"a\""), day(2, "null"), day(3, "\"c\"")],
        Mode::Append,
    );
    assert_eq!(accounts(&out), accounts(&expected));
}

/// One generated event: which group, its version, and per trait: not sent / null / a value.
#[derive(Debug, Clone)]
struct Ev {
    group: u8,
    ts: u8,
    rcv: Option<u8>,
    id: Option<u16>,
    /// plan, name, address.city, extras "seats", extras "tier"
    traits: [Option<Option<u8>>; 5],
}

impl Ev {
    fn line(&self) -> String {
        let mut traits = Vec::new();
        let val = |v: &Option<u8>, i: usize| match v {
            None => "null".to_string(),
            Some(x) if i == 3 => x.to_string(),
            Some(x) => format!("\"v{x}\""),
        };
        for (i, name) in ["plan", "Name", "", "seats", "tier"].iter().enumerate() {
            if let Some(v) = &self.traits[i]
                && i != 2
            {
                traits.push(format!("\"{name}\":{}", val(v, i)));
            }
        }
        if let Some(v) = &self.traits[2] {
            traits.push(format!("\"address\":{{\"city\":{}}}", val(v, 2)));
        }
        let mut fields = vec![
            r#""type":"group""#.to_string(),
            format!("\"groupId\":\"g{}\"", self.group),
            r#""userId":"u""#.to_string(),
            format!("\"timestamp\":\"2024-03-01T00:00:0{}Z\"", self.ts),
            format!("\"traits\":{{{}}}", traits.join(",")),
        ];
        if let Some(r) = self.rcv {
            fields.push(format!("\"receivedAt\":\"2024-03-01T00:00:0{r}Z\""));
        }
        if let Some(id) = self.id {
            fields.push(format!("\"messageId\":\"m{id}\""));
        }
        format!("{{{}}}", fields.join(","))
    }

    /// The value as the table shows it: text for columns, raw JSON for extras.
    fn shown(&self, i: usize) -> Option<Option<String>> {
        self.traits[i].map(|v| {
            v.map(|x| match i {
                3 => x.to_string(),
                4 => format!("\"v{x}\""),
                _ => format!("v{x}"),
            })
        })
    }

    fn version(&self) -> (i64, Option<i64>, Option<String>) {
        (
            i64::from(self.ts),
            self.rcv.map(i64::from),
            self.id.map(|i| format!("m{i}")),
        )
    }
}

fn event() -> impl Strategy<Value = Ev> {
    let trait_value = prop_oneof![
        2 => Just(None),
        1 => Just(Some(None)),
        3 => (0u8..3).prop_map(|v| Some(Some(v))),
    ];
    (
        0u8..3,
        0u8..4,
        prop::option::of(0u8..3),
        prop::option::weighted(0.8, 0u16..40),
        prop::array::uniform5(trait_value),
    )
        .prop_map(|(group, ts, rcv, id, traits)| Ev {
            group,
            ts,
            rcv,
            id,
            traits,
        })
}

/// The rule, written independently of the loader: per group and trait, the greatest (version, value) among
/// the events that sent it.
fn model(events: &[Ev]) -> BTreeMap<String, [Option<String>; 5]> {
    type Best = Option<((i64, Option<i64>, Option<String>), Option<String>)>;
    let mut best: BTreeMap<String, [Best; 5]> = BTreeMap::new();
    for e in events {
        let slots = best.entry(format!("g{}", e.group)).or_default();
        for (i, slot) in slots.iter_mut().enumerate() {
            if let Some(value) = e.shown(i) {
                let cand = (e.version(), value);
                if slot.as_ref().is_none_or(|b| cand > *b) {
                    *slot = Some(cand);
                }
            }
        }
    }
    best.into_iter()
        .map(|(g, slots)| (g, slots.map(|s| s.and_then(|(_, v)| v))))
        .collect()
}

/// What the table says for the five traits of the model.
fn observed(table: &BTreeMap<String, Row>) -> BTreeMap<String, [Option<String>; 5]> {
    table
        .iter()
        .map(|(g, row)| {
            let extras: serde_json::Map<String, serde_json::Value> = match &row["extra_traits"] {
                V::S(j) => serde_json::from_str(j).unwrap(),
                _ => serde_json::Map::new(),
            };
            let col = |name: &str| match &row[name] {
                V::S(x) => Some(x.clone()),
                _ => None,
            };
            (
                g.clone(),
                [
                    col("plan"),
                    col("name"),
                    col("address_city"),
                    extras.get("seats").map(|v| v.to_string()),
                    extras.get("tier").map(|v| v.to_string()),
                ],
            )
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 40, ..ProptestConfig::default() })]

    /// Random events, loaded as one run, and again permuted (with some repeated) and split into up to four
    /// runs: the same accounts table, and the one the model predicts.
    #[test]
    fn any_order_any_split_any_repeats_same_table(
        mut events in prop::collection::vec(event(), 1..25),
        order in any::<prop::sample::Index>(),
        cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..4),
        repeats in prop::collection::vec(any::<prop::sample::Index>(), 0..5),
    ) {
        // A messageId names one event: distinct events get distinct ids (or none).
        for (i, e) in events.iter_mut().enumerate() {
            if e.id.is_some() {
                e.id = Some(i as u16);
            }
        }
        let dir = tempfile::tempdir().unwrap();
        let lines: Vec<String> = events.iter().map(Ev::line).collect();
        let once = dir.path().join("once");
        run(&once, "all.ndjson", &lines, Mode::Append);
        let expected = accounts(&once);
        prop_assert_eq!(observed(&expected), model(&events));
        for (g, row) in &expected {
            let ts: Vec<i64> = events.iter().filter(|e| format!("g{}", e.group) == *g)
                .map(|e| micros(&format!("2024-03-01T00:00:0{}Z", e.ts))).collect();
            prop_assert_eq!(&row["first_seen_at"], &V::T(*ts.iter().min().unwrap()));
            prop_assert_eq!(&row["last_seen_at"], &V::T(*ts.iter().max().unwrap()));
        }

        // A permutation (rotate + reverse by the sampled index), some lines repeated, cut into runs.
        let mut shuffled = lines.clone();
        let k = order.index(shuffled.len());
        shuffled.rotate_left(k);
        if k % 2 == 1 {
            shuffled.reverse();
        }
        for r in &repeats {
            let line = lines[r.index(lines.len())].clone();
            shuffled.push(line);
        }
        let mut cut_at: Vec<usize> = cuts.iter().map(|c| c.index(shuffled.len() + 1)).collect();
        cut_at.push(0);
        cut_at.push(shuffled.len());
        cut_at.sort_unstable();
        cut_at.dedup();
        let split = dir.path().join("split");
        for (n, w) in cut_at.windows(2).enumerate() {
            run(&split, &format!("run{n}.ndjson"), &shuffled[w[0]..w[1]], Mode::Append);
        }
        prop_assert_eq!(accounts(&split), expected);
    }
}

#[test]
fn schema_command_describes_accounts() {
    let o = bin()
        .args(["schema", "--table", "accounts", "--format", "json"])
        .output()
        .unwrap();
    assert!(o.status.success());
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["table"], "accounts");
    let names: Vec<&str> = v["columns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names.first(), Some(&"group_id"));
    assert!(names.contains(&"plan") && names.contains(&"address_city"));
    assert_eq!(
        &names[names.len() - 4..],
        [
            "extra_traits",
            "first_seen_at",
            "last_seen_at",
            "trait_versions"
        ]
    );
    // Same names and types as in groups for the trait columns.
    let g = bin().args(["schema", "--format", "json"]).output().unwrap();
    let g: serde_json::Value = serde_json::from_slice(&g.stdout).unwrap();
    for c in v["columns"].as_array().unwrap() {
        if let Some(gc) = g["columns"]
            .as_array()
            .unwrap()
            .iter()
            .find(|gc| gc["name"] == c["name"] && c["name"] != "extra_traits")
        {
            assert_eq!(gc["arrow_type"], c["arrow_type"], "{}", c["name"]);
        }
    }
}

/// A small merge budget forces many buckets: a first run lays the snapshot out in buckets, a bigger second
/// run doubles their number (each old file read into two new ones), a third run touching few groups keeps
/// the files it does not touch. The table equals one run over all the events.
#[test]
fn buckets_split_grow_and_are_kept_when_untouched() {
    let line = |i: usize, g: usize, plan: &str| {
        format!(
            r#"{{"type":"group","messageId":"m{i}","groupId":"g{g}","userId":"u","timestamp":"2024-03-01T00:00:{:02}Z","traits":{{"plan":{plan},"n{}":{i}}}}}"#,
            i % 60,
            i % 3
        )
    };
    let first: Vec<String> = (0..600).map(|i| line(i, i % 400, "\"a\"")).collect();
    let second: Vec<String> = (600..2400).map(|i| line(i, i % 1500, "null")).collect();
    let third: Vec<String> = (2400..2410).map(|i| line(i, i % 5, "\"c\"")).collect();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let inputs = dir.path().join("inputs");
    fs::create_dir_all(&inputs).unwrap();
    let mut reports = Vec::new();
    for (name, lines) in [("1", &first), ("2", &second), ("3", &third)] {
        let input = inputs.join(format!("{name}.ndjson"));
        fs::write(&input, lines.join("\n")).unwrap();
        let mut opts = options(&input, &out);
        opts.accounts_budget = 64 * 2048 * 2; // the smallest buckets: 64 groups each
        let report = load_in_process(&opts).unwrap();
        reports.push(report.accounts.clone().unwrap());
    }
    assert_eq!(reports[0].buckets, 8, "400 groups: 8 buckets of up to 64");
    // 1,800 events name more groups than the set of distinct groups may hold under this budget (1,024), so
    // every event counts as a group: 400 + 1,800 -> 64 buckets.
    assert_eq!(reports[1].buckets, 64, "grown for the second run");
    assert_eq!(
        reports[1].files_written, 64,
        "a new layout rewrites every bucket"
    );
    assert_eq!(reports[2].buckets, 64);
    assert!(
        reports[2].files_written <= 5,
        "10 events touch at most 5 groups' buckets: {}",
        reports[2].files_written
    );
    assert_eq!(parquet_files(&out.join("accounts")).len(), 64);

    let all: Vec<String> = first.iter().chain(&second).chain(&third).cloned().collect();
    let once = dir.path().join("once");
    run(&once, "all.ndjson", &all, Mode::Append);
    let expected = accounts(&once);
    assert_eq!(expected.len(), 1500);
    assert_eq!(accounts(&out), expected);
}

#[test]
fn the_accounts_layout_and_bytes_do_not_depend_on_threads() {
    // Enough groups for many buckets under a small budget, so that every thread count goes through the spill
    // and more than one bucket is merged at once; traits set and cleared, so the registers matter.
    let lines: Vec<String> = (0..3000)
        .map(|i| {
            let plan = if i % 7 == 0 { "null".to_string() } else { format!("\"p{}\"", i % 5) };
            format!(
                r#"{{"type":"group","messageId":"m{i}","groupId":"g{}","userId":"u","timestamp":"2024-03-01T00:{:02}:{:02}Z","traits":{{"plan":{plan},"x{}":{i}}}}}"#,
                i % 1500,
                i / 60 % 60,
                i % 60,
                i % 4
            )
        })
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.ndjson");
    fs::write(&input, lines.join("\n")).unwrap();
    let mut layouts = Vec::new();
    for threads in [1, 2, 3] {
        let out = dir.path().join(format!("out-{threads}"));
        let mut opts = options(&input, &out);
        opts.accounts_budget = 64 * 2048 * 2;
        opts.threads = Some(threads);
        let report = load_in_process(&opts).unwrap();
        let buckets = report.accounts.unwrap().buckets;
        assert!(
            buckets > 3,
            "{buckets} buckets: the spill is used at every thread count"
        );
        layouts.push((threads, buckets, out));
    }
    let (_, buckets, first) = &layouts[0];
    for (threads, b, out) in &layouts[1..] {
        assert_eq!(b, buckets, "bucket count with --threads {threads}");
        assert_same_parquet_files(
            &first.join("accounts"),
            &out.join("accounts"),
            &format!("--threads {threads}"),
        );
    }
}

#[test]
fn accounts_folded_during_ingest_equal_those_read_back_from_the_files() {
    // 5,000 events on 2,500 groups over six days, traits set and cleared, extras keys set and cleared: the run
    // folds its rows into accounts while it writes them, unless they outgrow the fold's budget.
    let lines: Vec<String> = (0..5000)
        .map(|i| {
            let plan = if i % 7 == 0 { "null".to_string() } else { format!("\"p{}\"", i % 5) };
            let extra = if i % 11 == 0 { "null".to_string() } else { i.to_string() };
            format!(
                r#"{{"type":"group","messageId":"m{i}","groupId":"g{}","userId":"u","timestamp":"2024-03-0{}T00:{:02}:{:02}Z","traits":{{"plan":{plan},"x{}":{extra},"address":{{"city":"c{}"}}}}}}"#,
                i % 2500,
                1 + i % 6,
                i / 60 % 60,
                i % 60,
                i % 4,
                i % 3
            )
        })
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.ndjson");
    fs::write(&input, lines.join("\n")).unwrap();
    // The default budget holds the 2,500 groups (one bucket); 128 KiB lets the fold hold 32 KiB, far less than
    // they take, so it gives up and the merge reads the files (and the snapshot has 128 buckets).
    let default = options(&input, &dir.path().join("unused")).accounts_budget;
    for (budget, want) in [(default, (5000, 0)), (128 << 10, (0, 5000))] {
        let folded = dir.path().join(format!("folded-{budget}"));
        let mut opts = options(&input, &folded);
        opts.accounts_budget = budget;
        let report = load_in_process(&opts).unwrap().accounts.unwrap();
        assert_eq!(
            (report.rows_folded, report.rows_read),
            want,
            "budget {budget}"
        );

        // The same rows, then accounts built from the `groups` files alone: loaded without accounts, then the
        // same input again (already loaded: nothing is read, accounts are rebuilt from every file).
        let read_back = dir.path().join(format!("read-back-{budget}"));
        let mut opts = options(&input, &read_back);
        opts.accounts_budget = budget;
        opts.accounts = false;
        load_in_process(&opts).unwrap();
        opts.accounts = true;
        let report = load_in_process(&opts).unwrap().accounts.unwrap();
        assert_eq!((report.rows_folded, report.rows_read), (0, 5000));

        assert_same_parquet_files(
            &folded.join("accounts"),
            &read_back.join("accounts"),
            &format!("accounts folded during ingest, budget {budget}"),
        );
        assert_eq!(accounts(&folded).len(), 2500);
    }

    // A second run (default budget) folds its own rows into the 128 buckets of the small budget's snapshot,
    // more buckets than the fold has shards, reading no file back; the result is the snapshot of all the rows.
    let more = dir.path().join("more.ndjson");
    let more_lines: Vec<String> = lines[..200]
        .iter()
        .map(|l| l.replace("\"m", "\"n").replace("2024-03-0", "2024-03-1"))
        .collect();
    fs::write(&more, more_lines.join("\n")).unwrap();
    let small = dir.path().join(format!("folded-{}", 128 << 10));
    let report = load_in_process(&options(&more, &small))
        .unwrap()
        .accounts
        .unwrap();
    assert_eq!((report.rows_folded, report.rows_read), (200, 0));
    assert_eq!(report.buckets, 128);
    let whole = dir.path().join("whole.ndjson");
    fs::write(&whole, [lines.clone(), more_lines].concat().join("\n")).unwrap();
    let reference = dir.path().join("reference");
    load_in_process(&options(&whole, &reference)).unwrap();
    assert_eq!(accounts(&small), accounts(&reference));
}
