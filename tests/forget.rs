//! Deletion requests (`group-loader forget`), in every format: a local hive dataset, local Delta tables, and
//! Delta tables on a local S3 server (`moto_server`). The dataset is loaded over several runs, with one person
//! (a userId, and an anonymousId of theirs) spread over partitions and groups, in shared groups and in a group
//! of their own, and in the rejects. After `forget`: the rows and reject lines are gone, the other rows are a
//! multiset equal to one fresh run over the remaining events, `accounts` equals that run's (read by deltalake
//! and polars for Delta), a second request changes no byte, and after `--purge` no byte of any file under the
//! output (Parquet decoded too, the Delta checkpoints included) holds either id.
#![cfg(feature = "external")]
// Needs the Python readers and servers scripts/test.sh installs (cargo test --features external).

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use common::*;

/// The person a request forgets: their userId, and an anonymousId they sent events under before signing in.
const USER: &str = "person-forget-7d1e";
const ANON: &str = "anon-forget-93ab";

/// One Group event as an NDJSON line.
fn event(
    id: &str,
    group: &str,
    user: Option<&str>,
    anon: Option<&str>,
    day: u32,
    plan: &str,
) -> String {
    let mut e = serde_json::json!({
        "type": "group",
        "messageId": id,
        "groupId": group,
        "traits": {"name": format!("Co {group}"), "plan": plan, "seats": day},
        "timestamp": format!("2026-11-{day:02}T10:{:02}:00.000Z", id.len() % 60),
        "receivedAt": format!("2026-11-{day:02}T10:30:00.000Z"),
        "context": {"ip": "203.0.113.9"},
    });
    if let Some(u) = user {
        e["userId"] = u.into();
    }
    if let Some(a) = anon {
        e["anonymousId"] = a.into();
    }
    e.to_string()
}

/// The three nights' inputs: (all lines, the lines a fresh run over the remaining events reads).
fn nights() -> Vec<(String, String)> {
    let mut out = Vec::new();
    for night in 0..3u32 {
        let (mut all, mut kept) = (String::new(), String::new());
        for i in 0..40u32 {
            let day = 1 + (night * 2 + i % 3);
            let id = format!("m-{night}-{i}");
            let group = format!("g-{}", i % 5);
            // Theirs, in shared groups (their plan must leave those accounts): by userId, and by anonymousId.
            let (user, anon): (Option<String>, Option<String>) = match i % 8 {
                0 => (Some(USER.into()), None),
                1 => (None, Some(ANON.into())),
                _ => (Some(format!("u-{}", i % 7)), Some(format!("a-{i}"))),
            };
            let ours = i % 8 < 2;
            let plan = format!("plan-{night}-{i}");
            let line = event(&id, &group, user.as_deref(), anon.as_deref(), day, &plan);
            all.push_str(&line);
            all.push('\n');
            if !ours {
                kept.push_str(&line);
                kept.push('\n');
            }
        }
        // A group of their own: its accounts row must go.
        let solo = event(
            &format!("m-{night}-solo"),
            "g-solo",
            Some(USER),
            None,
            2 + night,
            "solo",
        );
        all.push_str(&format!("{solo}\n"));
        // Rejects: theirs (a missing groupId; a cut line) and someone else's.
        all.push_str(&format!(
            "{{\"type\":\"group\",\"messageId\":\"r-{night}\",\"userId\":\"{USER}\"}}\n\
             {{\"type\":\"group\",\"userId\":\"{USER}\",\"groupId\":\"g-1\",\n\
             {{\"type\":\"group\",\"messageId\":\"r2-{night}\",\"userId\":\"u-other\"}}\n"
        ));
        kept.push_str(&format!(
            "{{\"type\":\"group\",\"messageId\":\"r2-{night}\",\"userId\":\"u-other\"}}\n"
        ));
        out.push((all, kept));
    }
    out
}

/// Where the dataset lies and how to reach it.
enum Place {
    Hive(PathBuf),
    DeltaLocal(PathBuf),
    DeltaS3 { moto: Moto, url: String },
}

impl Place {
    fn output(&self) -> String {
        match self {
            Place::Hive(p) | Place::DeltaLocal(p) => p.display().to_string(),
            Place::DeltaS3 { url, .. } => url.clone(),
        }
    }

    fn env(&self) -> Vec<(String, String)> {
        match self {
            Place::DeltaS3 { moto, .. } => moto.env(),
            _ => Vec::new(),
        }
    }

    fn format_args(&self) -> Vec<String> {
        match self {
            Place::Hive(_) => vec!["--format".into(), "hive".into()],
            _ => vec!["--format".into(), "delta".into()],
        }
    }

    fn load(&self, input: &Path) -> (i32, String) {
        let out = self.output();
        let mut args = vec![
            "load".to_string(),
            input.display().to_string(),
            "--output".into(),
            out,
        ];
        args.extend(self.format_args());
        // Uncompressed, so that a search of the raw bytes sees every value written.
        args.extend(
            [
                "--compression",
                "none",
                "--max-reject-ratio",
                "0.5",
                "--progress",
                "never",
            ]
            .map(String::from),
        );
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        run_env(&refs, &self.env())
    }

    fn forget(&self, extra: &[&str]) -> (i32, String) {
        let out = self.output();
        let mut args = vec![
            "forget",
            "--output",
            out.as_str(),
            "--user-id",
            USER,
            "--anonymous-id",
            ANON,
        ];
        args.extend(extra);
        run_env(&args, &self.env())
    }

    /// The rejects files a reader sees now, concatenated.
    fn visible_rejects(&self) -> String {
        let mut text = String::new();
        match self {
            Place::Hive(root) | Place::DeltaLocal(root) => {
                let mut names: Vec<PathBuf> = fs::read_dir(root.join("_rejects"))
                    .unwrap()
                    .map(|e| e.unwrap().path())
                    .collect();
                names.sort();
                for n in names {
                    text.push_str(&fs::read_to_string(n).unwrap());
                }
            }
            Place::DeltaS3 { .. } => {
                for (name, bytes) in self.files() {
                    if name.contains("/_rejects/") {
                        text.push_str(&String::from_utf8_lossy(&bytes));
                    }
                }
            }
        }
        text
    }

    /// Every file under the output (relative path -> bytes); the hive lock file aside (it holds the last
    /// holder's process id).
    fn files(&self) -> BTreeMap<String, Vec<u8>> {
        match self {
            Place::Hive(root) | Place::DeltaLocal(root) => {
                let mut found = BTreeMap::new();
                walk(root, root, &mut found);
                found.remove(".group-loader/lock");
                found
            }
            Place::DeltaS3 { moto, .. } => objects(moto, "lake", "ds")
                .into_iter()
                .map(|k| {
                    let bytes = moto.get("lake", &k);
                    (k, bytes)
                })
                .collect(),
        }
    }
}

fn walk(root: &Path, dir: &Path, found: &mut BTreeMap<String, Vec<u8>>) {
    for e in fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        let t = e.file_type().unwrap();
        if t.is_dir() {
            walk(root, &p, found);
        } else if t.is_file() {
            let rel = p.strip_prefix(root).unwrap().display().to_string();
            found.insert(rel, fs::read(&p).unwrap());
        }
    }
}

/// The text of every value of a Parquet file (nested columns too, as Arrow displays them) and its footer's
/// key/value metadata.
fn parquet_text(bytes: &[u8]) -> String {
    use arrow::util::display::{ArrayFormatter, FormatOptions};
    let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(
        bytes::Bytes::copy_from_slice(bytes),
    )
    .expect("a Parquet file");
    let mut text = format!(
        "{:?}",
        reader.metadata().file_metadata().key_value_metadata()
    );
    for batch in reader.build().unwrap() {
        let batch = batch.unwrap();
        for col in batch.columns() {
            let f = ArrayFormatter::try_new(col.as_ref(), &FormatOptions::default()).unwrap();
            for r in 0..batch.num_rows() {
                text.push_str(&f.value(r).to_string());
                text.push('\n');
            }
        }
    }
    text
}

/// The files (and decoded Parquet values) that still hold either id.
fn holding_the_ids(files: &BTreeMap<String, Vec<u8>>) -> Vec<String> {
    let holds = |t: &[u8]| {
        [USER, ANON]
            .iter()
            .any(|id| t.windows(id.len()).any(|w| w == id.as_bytes()))
    };
    files
        .iter()
        .filter(|(name, bytes)| {
            holds(bytes) || (name.ends_with(".parquet") && holds(parquet_text(bytes).as_bytes()))
        })
        .map(|(name, _)| name.clone())
        .collect()
}

/// Rows of a hive dataset's table as a sorted multiset of their debug text.
fn hive_rows(out: &Path, table: &str) -> Vec<String> {
    let mut rows: Vec<String> = if table == "groups" {
        read_dataset(out).iter().map(|r| format!("{r:?}")).collect()
    } else {
        parquet_files(&out.join(table))
            .iter()
            .flat_map(|f| read_file(f))
            .map(|r| format!("{r:?}"))
            .collect()
    };
    rows.sort();
    rows
}

/// Loads the three nights into `place`, forgets the person, and checks everything the module doc says.
fn forget_everywhere(place: Place) {
    let tmp = tempfile::tempdir().unwrap();
    let nights = nights();
    let mut kept_all = String::new();
    for (i, (all, kept)) in nights.iter().enumerate() {
        let input = tmp.path().join(format!("night-{i}.ndjson"));
        fs::write(&input, all).unwrap();
        let (code, err) = place.load(&input);
        assert_eq!(code, 0, "night {i}: {err}");
        kept_all.push_str(kept);
    }
    assert!(
        !holding_the_ids(&place.files()).is_empty(),
        "the person is in the dataset before"
    );

    // The fresh run over the remaining events, to compare with.
    let fresh = tmp.path().join("fresh");
    let kept_input = tmp.path().join("kept.ndjson");
    fs::write(&kept_input, &kept_all).unwrap();
    let (code, err) = load(
        &fresh,
        &[kept_input.to_str().unwrap(), "--max-reject-ratio", "0.5"],
    );
    assert_eq!(code, 0, "{err}");

    let (code, err) = place.forget(&[]);
    assert_eq!(code, 0, "{err}");
    // 5 of the 40 events of each night are theirs by userId, 5 by anonymousId, and one in their own group.
    assert!(err.contains("33 row(s) removed"), "{err}");
    assert!(err.contains("6 line(s) removed"), "{err}");
    // The group of their own had no other row: its accounts row went.
    assert!(err.contains("1 row(s) removed); 5 group(s) now"), "{err}");
    assert!(err.contains("still holds the old data"), "{err}");

    // The rows left equal one run over the remaining events; so does accounts (the solo group is gone).
    match &place {
        Place::Hive(out) => {
            assert_eq!(hive_rows(out, "groups"), hive_rows(&fresh, "groups"));
            assert_eq!(hive_rows(out, "accounts"), hive_rows(&fresh, "accounts"));
            assert!(
                !hive_rows(out, "accounts")
                    .iter()
                    .any(|r| r.contains("g-solo"))
            );
        }
        _ => {
            let shown = python_check(
                "delta_check.py",
                &["compare", fresh.to_str().unwrap(), &place.output()],
                &place.env(),
            );
            assert!(shown.contains("\"groups\": 90"), "{shown}");
        }
    }
    // Only the person's reject lines went: the others' stay.
    let rejects = place.visible_rejects();
    assert_eq!(rejects.matches("u-other").count(), 3, "{rejects}");
    let files = place.files();
    // The request's record holds counts, no id.
    let records: Vec<&String> = files
        .keys()
        .filter(|n| n.contains("_runs/") && n.contains("-forget-"))
        .collect();
    assert_eq!(records.len(), 1, "{records:?}");
    let record: serde_json::Value = serde_json::from_slice(&files[records[0]]).unwrap();
    assert_eq!(record["rows_removed"], 33, "{record}");
    assert_eq!(record["ids"]["user_id"], 1, "{record}");

    // A second identical request changes nothing, byte for byte.
    let before = place.files();
    let (code, err) = place.forget(&[]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("nothing changed"), "{err}");
    assert!(
        before == place.files(),
        "a second request changed the dataset"
    );

    // Until the purge, something still holds the old data (the previous version, the files kept for time
    // travel); after it, nothing under the output does.
    assert!(
        !holding_the_ids(&before).is_empty(),
        "old data kept until the purge"
    );
    let (code, err) = place.forget(&["--purge"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(holding_the_ids(&place.files()), Vec::<String>::new());
    // And the dataset still reads the same, and takes the next night.
    match &place {
        Place::Hive(out) => assert_eq!(hive_rows(out, "groups"), hive_rows(&fresh, "groups")),
        _ => {
            python_check(
                "delta_check.py",
                &["compare", fresh.to_str().unwrap(), &place.output()],
                &place.env(),
            );
        }
    }
}

#[test]
fn forget_on_a_hive_dataset() {
    let tmp = tempfile::tempdir().unwrap();
    forget_everywhere(Place::Hive(tmp.path().join("ds")));
}

#[test]
fn forget_on_local_delta_tables() {
    let tmp = tempfile::tempdir().unwrap();
    forget_everywhere(Place::DeltaLocal(tmp.path().join("ds")));
}

#[test]
fn forget_on_delta_tables_on_s3() {
    let moto = Moto::start();
    moto.create_bucket("lake");
    forget_everywhere(Place::DeltaS3 {
        moto,
        url: "s3://lake/ds".into(),
    });
}

/// Requests that cannot work change nothing and exit 2, naming what is wrong.
#[test]
fn bad_requests_exit_2_and_touch_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("ds");
    let input = tmp.path().join("in.ndjson");
    fs::write(
        &input,
        format!("{}\n", event("m1", "g1", Some(USER), None, 1, "p")),
    )
    .unwrap();
    assert_eq!(load(&out, &[input.to_str().unwrap()]).0, 0);
    let mut before = BTreeMap::new();
    walk(&out, &out, &mut before);

    let ids = tmp.path().join("ids.csv");
    fs::write(&ids, format!("user_id,{USER}\nemail,{USER}\n")).unwrap();
    let missing = tmp.path().join("nothing-here");
    let cases: Vec<(Vec<String>, &str)> = vec![
        (
            vec!["--output".into(), out.display().to_string()],
            "at least one id",
        ),
        (
            vec![
                "--output".into(),
                out.display().to_string(),
                "--ids-file".into(),
                ids.display().to_string(),
            ],
            "line 2: unknown kind",
        ),
        (
            vec![
                "--output".into(),
                missing.display().to_string(),
                "--user-id".into(),
                USER.into(),
            ],
            "holds no group-loader dataset",
        ),
    ];
    for (args, needle) in cases {
        let mut all = vec!["forget".to_string()];
        all.extend(args);
        let refs: Vec<&str> = all.iter().map(String::as_str).collect();
        let (code, err) = run_env(&refs, &[]);
        assert_eq!(code, 2, "{all:?}: {err}");
        assert!(err.contains(needle), "{all:?}: {err}");
    }
    assert!(!missing.exists(), "forget never creates a dataset");
    let mut after = BTreeMap::new();
    walk(&out, &out, &mut after);
    after.remove(".group-loader/lock");
    before.remove(".group-loader/lock");
    assert!(before == after, "a refused request changed the dataset");
}

/// A forget and a load committing to one Delta dataset at the same time: both land. The load's rows are all
/// there, the person's rows are not, and accounts equals one run over what remains.
#[test]
fn a_forget_while_a_load_commits_loses_neither() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("ds");
    let place = Place::DeltaLocal(out.clone());
    let nights = nights();
    let mut kept_all = String::new();
    for (i, (all, kept)) in nights.iter().enumerate().take(2) {
        let input = tmp.path().join(format!("night-{i}.ndjson"));
        fs::write(&input, all).unwrap();
        assert_eq!(place.load(&input).0, 0);
        kept_all.push_str(kept);
    }
    // The third night holds none of the person's events: all of it must land.
    let third = tmp.path().join("night-2.ndjson");
    fs::write(&third, &nights[2].1).unwrap();
    kept_all.push_str(&nights[2].1);
    let load = std::thread::spawn({
        let third = third.clone();
        let out = out.clone();
        move || Place::DeltaLocal(out).load(&third)
    });
    let forgot = place.forget(&[]);
    let loaded = load.join().unwrap();
    assert_eq!(forgot.0, 0, "{}", forgot.1);
    assert_eq!(loaded.0, 0, "{}", loaded.1);
    // Whichever committed first, a last request finds nothing more to remove.
    let (code, err) = place.forget(&[]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("nothing changed"), "{err}");
    let fresh = tmp.path().join("fresh");
    let kept_input = tmp.path().join("kept.ndjson");
    fs::write(&kept_input, &kept_all).unwrap();
    assert_eq!(
        common::load(
            &fresh,
            &[kept_input.to_str().unwrap(), "--max-reject-ratio", "0.5"]
        )
        .0,
        0
    );
    python_check(
        "delta_check.py",
        &["compare", fresh.to_str().unwrap(), &place.output()],
        &[],
    );
}

/// `forget --suppress`: the ids are recorded (hashed), and a re-delivered export (under another name, so a
/// new run) and the next night bring none of their events back; they are counted as suppressed, and no
/// rejected line of theirs is kept.
#[test]
fn suppressed_ids_are_not_loaded_again() {
    for kind in 0..3 {
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join("ds");
        let place = match kind {
            0 => Place::Hive(out.clone()),
            1 => Place::DeltaLocal(out.clone()),
            _ => {
                let moto = Moto::start();
                moto.create_bucket("lake");
                Place::DeltaS3 {
                    moto,
                    url: "s3://lake/ds".into(),
                }
            }
        };
        let nights = nights();
        let first = tmp.path().join("night-0.ndjson");
        fs::write(&first, &nights[0].0).unwrap();
        assert_eq!(place.load(&first).0, 0);
        let (code, err) = place.forget(&["--suppress"]);
        assert_eq!(code, 0, "{err}");
        assert!(err.contains("suppressed: 2 id(s) recorded"), "{err}");
        let privacy: Vec<Vec<u8>> = place
            .files()
            .into_iter()
            .filter(|(n, _)| n.contains("privacy/"))
            .map(|(_, b)| b)
            .collect();
        assert_eq!(privacy.len(), 1, "one suppression record");
        assert!(holding_the_ids(&[("r".to_string(), privacy[0].clone())].into()).is_empty());

        // The same export again under another name, and the next night.
        let again = tmp.path().join("night-0-redelivered.ndjson");
        fs::write(&again, &nights[0].0).unwrap();
        let second = tmp.path().join("night-1.ndjson");
        fs::write(&second, &nights[1].0).unwrap();
        for input in [&again, &second] {
            let report = tmp.path().join("report.json");
            let mut args = vec![
                "load".to_string(),
                input.display().to_string(),
                "--output".into(),
                place.output(),
            ];
            args.extend(place.format_args());
            args.extend(
                [
                    "--max-reject-ratio",
                    "0.5",
                    "--report",
                    report.to_str().unwrap(),
                ]
                .map(String::from),
            );
            let refs: Vec<&str> = args.iter().map(String::as_str).collect();
            let (code, err) = run_env(&refs, &place.env());
            assert_eq!(code, 0, "{err}");
            let r: serde_json::Value = serde_json::from_slice(&fs::read(&report).unwrap()).unwrap();
            // 5 by userId, 5 by anonymousId, one in their own group.
            assert_eq!(r["suppressed"], 11, "{r}");
            assert!(err.contains("suppressed: 11 events"), "{err}");
            assert_counts_add_up(&r);
        }
        let rejects = place.visible_rejects();
        assert!(!rejects.contains(USER), "{rejects}");
        match &place {
            Place::Hive(out) => {
                let rows = hive_rows(out, "groups");
                assert_eq!(rows.len(), 60);
                assert!(!rows.iter().any(|r| r.contains(USER) || r.contains(ANON)));
            }
            _ => {
                let rows = python_check("delta_check.py", &["rows", &place.output()], &place.env());
                assert!(!rows.contains(USER) && !rows.contains(ANON), "{rows}");
                assert_eq!(
                    common::state(&place.output(), &place.env())["ids"]
                        .as_array()
                        .unwrap()
                        .len(),
                    60
                );
            }
        }
        // Asking again changes nothing.
        let before = place.files();
        let (code, err) = place.forget(&["--suppress"]);
        assert_eq!(code, 0, "{err}");
        assert!(err.contains("nothing changed"), "{err}");
        assert!(before == place.files());
    }
}

/// `--truncate-ip` and `--hash-columns`: the columns hold no clear value (the keyed hash, the network), nor
/// does any rejected line; the settings bind later runs (another key, no key, other columns, are refused);
/// and `forget` hashes the ids it is given the same way.
#[test]
fn pseudonymised_columns_hold_no_clear_value() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("ds");
    let key = [(
        "GROUP_LOADER_HASH_KEY".to_string(),
        "a-secret-key".to_string(),
    )];
    let nights = nights();
    let input = tmp.path().join("night-0.ndjson");
    fs::write(&input, &nights[0].0).unwrap();
    let o = out.display().to_string();
    let i = input.display().to_string();
    let base = [
        "load",
        i.as_str(),
        "--output",
        o.as_str(),
        "--max-reject-ratio",
        "0.5",
        "--compression",
        "none",
    ];
    let with = |extra: &[&str], env: &[(String, String)]| {
        let mut args = base.to_vec();
        args.extend(extra);
        run_env(&args, env)
    };
    let (code, err) = with(
        &["--truncate-ip", "--hash-columns", "user_id,anonymous_id"],
        &key,
    );
    assert_eq!(code, 0, "{err}");
    let rows = read_dataset(&out);
    assert_eq!(rows.len(), 41);
    let expect = group_loader::privacy::keyed_hash(b"a-secret-key", USER);
    assert_eq!(expect.len(), 64);
    assert_eq!(
        rows.iter()
            .filter(|r| r["user_id"] == V::S(expect.clone()))
            .count(),
        6
    );
    assert!(rows.iter().all(|r| r["context_ip"] == s("203.0.113.0")));
    let mut files = BTreeMap::new();
    walk(&out, &out, &mut files);
    let clear: Vec<&String> = files
        .iter()
        .filter(|(_, b)| {
            ["person-forget", "anon-forget", "u-1", "203.0.113.9"]
                .iter()
                .any(|id| b.windows(id.len()).any(|w| w == id.as_bytes()))
        })
        .map(|(n, _)| n)
        .collect();
    assert!(clear.is_empty(), "clear values in {clear:?}");

    // Later runs: the recorded settings are the defaults; another key, no key, other columns, or clear
    // rows into it are refused, touching nothing.
    for (extra, env, needle) in [
        (
            vec![],
            vec![("GROUP_LOADER_HASH_KEY".to_string(), "another".to_string())],
            "is not the key",
        ),
        (vec![], vec![], "set GROUP_LOADER_HASH_KEY"),
        (
            vec!["--hash-columns", "email"],
            key.to_vec(),
            "was loaded with --hash-columns user_id,anonymous_id",
        ),
    ] {
        let (code, err) = with(&extra, &env);
        assert_eq!(code, 2, "{extra:?}: {err}");
        assert!(err.contains(needle), "{extra:?}: {err}");
    }
    let clear_out = tmp.path().join("clear");
    assert_eq!(
        load(&clear_out, &[i.as_str(), "--max-reject-ratio", "0.5"]).0,
        0
    );
    let (code, err) = run_env(
        &[
            "load",
            i.as_str(),
            "--output",
            clear_out.to_str().unwrap(),
            "--truncate-ip",
        ],
        &[],
    );
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("holds rows loaded without pseudonymisation"),
        "{err}"
    );

    // forget hashes the ids as the loads did (and needs the key for it).
    let (code, err) = run_env(&["forget", "--output", o.as_str(), "--user-id", USER], &[]);
    assert_eq!(code, 2, "{err}");
    let (code, err) = run_env(
        &[
            "forget",
            "--output",
            o.as_str(),
            "--user-id",
            USER,
            "--anonymous-id",
            ANON,
        ],
        &key,
    );
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("11 row(s) removed"), "{err}");
    assert_eq!(read_dataset(&out).len(), 30);
}

/// The same on Delta tables on S3: the settings live in the dataset's `_privacy/`, what deltalake and polars
/// read holds the hashes and networks only, no object holds a clear value, and another key is refused.
#[test]
fn pseudonymised_delta_tables_on_s3() {
    let moto = Moto::start();
    moto.create_bucket("lake");
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("night-0.ndjson");
    fs::write(&input, &nights()[0].0).unwrap();
    let i = input.display().to_string();
    let mut env = moto.env();
    env.push(("GROUP_LOADER_HASH_KEY".into(), "a-secret-key".into()));
    let load = [
        "load",
        i.as_str(),
        "--output",
        "s3://lake/ds",
        "--max-reject-ratio",
        "0.5",
        "--compression",
        "none",
    ];
    let mut first = load.to_vec();
    first.extend(["--truncate-ip", "--hash-columns", "user_id,anonymous_id"]);
    let (code, err) = run_env(&first, &env);
    assert_eq!(code, 0, "{err}");
    let rows = python_check("delta_check.py", &["rows", "s3://lake/ds"], &env);
    let expect = group_loader::privacy::keyed_hash(b"a-secret-key", USER);
    assert_eq!(
        rows.matches(&format!("\\\"user_id\\\":\\\"{expect}\\\""))
            .count(),
        6,
        "{rows}"
    );
    assert!(
        rows.contains("203.0.113.0") && !rows.contains("203.0.113.9"),
        "{rows}"
    );
    let clear: Vec<String> = objects(&moto, "lake", "ds")
        .into_iter()
        .filter(|k| {
            let b = moto.get("lake", k);
            [USER, ANON, "203.0.113.9"]
                .iter()
                .any(|id| b.windows(id.len()).any(|w| w == id.as_bytes()))
        })
        .collect();
    assert!(clear.is_empty(), "clear values in {clear:?}");
    let mut other = moto.env();
    other.push(("GROUP_LOADER_HASH_KEY".into(), "another".into()));
    let (code, err) = run_env(&load, &other);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("is not the key"), "{err}");
}

/// `--group-id` (from an ids file in Segment's CSV shape): every row of the group goes, whoever sent it, and
/// so does its `accounts` row; other groups keep theirs unchanged.
#[test]
fn forgetting_a_group_removes_its_rows_and_its_account() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("ds");
    let input = tmp.path().join("night-0.ndjson");
    fs::write(&input, &nights()[0].0).unwrap();
    assert_eq!(
        load(
            &out,
            &[input.to_str().unwrap(), "--max-reject-ratio", "0.5"]
        )
        .0,
        0
    );
    let accounts_before = hive_rows(&out, "accounts");
    let ids = tmp.path().join("requests.csv");
    fs::write(&ids, "kind,id\n\"groupId\",\"g-1\"\n").unwrap();
    let (code, err) = run_env(
        &[
            "forget",
            "--output",
            out.to_str().unwrap(),
            "--ids-file",
            ids.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(code, 0, "{err}");
    // i % 5 == 1 for 8 of the night's 40 events.
    assert!(err.contains("8 row(s) removed"), "{err}");
    let rows = read_dataset(&out);
    assert_eq!(rows.len(), 33);
    assert!(rows.iter().all(|r| r["group_id"] != s("g-1")));
    let after = hive_rows(&out, "accounts");
    let kept: Vec<&String> = accounts_before
        .iter()
        .filter(|r| !r.contains("\"g-1\""))
        .collect();
    assert_eq!(
        after.iter().collect::<Vec<_>>(),
        kept,
        "only g-1's account goes"
    );
    assert_eq!(after.len() + 1, accounts_before.len());
    assert!(err.contains("1 row(s) removed); 5 group(s) now"), "{err}");
}

/// A request on a hive dataset while a load holds its lock: exit 4, nothing changed; run again once the load is
/// done, it removes the rows.
#[test]
fn a_hive_request_while_a_load_runs_exits_4_and_changes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("ds");
    let place = Place::Hive(out.clone());
    let input = tmp.path().join("night-0.ndjson");
    fs::write(&input, &nights()[0].0).unwrap();
    assert_eq!(place.load(&input).0, 0);
    let before = place.files();
    // What a running load holds (the tool's lock is an flock of this file).
    let lock = fs::OpenOptions::new()
        .write(true)
        .open(out.join(".group-loader/lock"))
        .unwrap();
    lock.lock().unwrap();
    let (code, err) = place.forget(&[]);
    assert_eq!(code, 4, "{err}");
    assert!(err.contains("locked"), "{err}");
    assert!(
        before == place.files(),
        "a refused request changed the dataset"
    );
    drop(lock);
    let (code, err) = place.forget(&[]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("11 row(s) removed"), "{err}");
}
