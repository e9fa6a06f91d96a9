//! Hostile values and paths, each once a way to break a dataset for good or to reach outside it: a time that
//! an offset carries out of years 1 to 9999, a table that already holds such a partition, links planted in the
//! state folder or in an input folder, and object-store URLs that name one place to the tool and another to
//! its readers. Every case is run through the binary and checked by reading back what it wrote.
// Some of these tests need what scripts/test.sh installs (the `external` feature); their helpers are unused without it.
#![cfg_attr(not(feature = "external"), allow(dead_code, unused_imports))]

mod common;

use std::fs;

use common::*;

/// Group calls whose times an offset carries past 9999-12-31 or before 0001-01-01 in UTC, a clock-skew
/// formula landing out of range, and ordinary ones.
const LATE_AND_EARLY: &str = concat!(
    r#"{"type":"group","messageId":"late","groupId":"g","userId":"u","timestamp":"9999-12-31T23:00:00-01:00","receivedAt":"2024-01-02T00:00:00Z"}"#,
    "\n",
    r#"{"type":"group","messageId":"early","groupId":"g","userId":"u","timestamp":"0001-01-01T00:00:00+01:00","receivedAt":"2024-01-03T00:00:00Z"}"#,
    "\n",
    r#"{"type":"group","messageId":"no-valid-time","groupId":"g","userId":"u","timestamp":"9999-12-31T23:30:00-01:00"}"#,
    "\n",
    r#"{"type":"group","messageId":"skew","groupId":"g","userId":"u","receivedAt":"9999-12-31T23:00:00Z","sentAt":"0001-01-01T00:00:00Z","originalTimestamp":"9999-12-01T00:00:00Z"}"#,
    "\n",
    r#"{"type":"group","messageId":"ok","groupId":"g","userId":"u","timestamp":"2024-01-01T00:00:00Z"}"#,
    "\n",
);

/// Times out of range in UTC are invalid like any other: the fallbacks apply (receivedAt), an event with no
/// valid time is rejected, no partition outside 0001-01-01 .. 9999-12-31 is written, and every reader reads the
/// Delta table (deltalake and polars) and the hive folder.
#[cfg(feature = "external")]
#[test]
fn times_carried_out_of_years_1_to_9999_never_make_a_partition() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("times.ndjson");
    fs::write(&input, LATE_AND_EARLY).unwrap();
    let hive = dir.path().join("hive");
    let (code, stderr) = load(&hive, &[input.to_str().unwrap(), "--max-reject-ratio", "1"]);
    assert_eq!(code, 0, "{stderr}");
    let mut partitions: Vec<String> = fs::read_dir(hive.join("groups"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    partitions.sort();
    assert_eq!(
        partitions,
        [
            "dt=2024-01-01",
            "dt=2024-01-02",
            "dt=2024-01-03",
            "dt=9999-12-31"
        ]
    );
    let rows = by_id(&read_dataset(&hive));
    assert_eq!(rows.len(), 4);
    assert_eq!(
        rows["late"]["timestamp"],
        V::T(micros("2024-01-02T00:00:00Z"))
    );
    assert_eq!(
        rows["late"]["extra"],
        s(r#"{"timestamp":"9999-12-31T23:00:00-01:00"}"#)
    );
    assert_eq!(
        rows["early"]["timestamp"],
        V::T(micros("2024-01-03T00:00:00Z"))
    );
    // The skew formula would land past year 9999: originalTimestamp is used instead.
    assert_eq!(
        rows["skew"]["timestamp"],
        V::T(micros("9999-12-01T00:00:00Z"))
    );
    let r = report(&hive);
    assert_eq!(r["rejected"]["missing_time"], 1);
    assert_eq!(
        r["invalid_times"], 2,
        "late and early (the rejected event is not counted)"
    );

    let delta = dir.path().join("delta");
    let delta_args = [
        input.to_str().unwrap(),
        "--format",
        "delta",
        "--max-reject-ratio",
        "1",
    ];
    let (code, stderr) = load(&delta, &delta_args);
    assert_eq!(code, 0, "{stderr}");
    let s = state(delta.to_str().unwrap(), &[]);
    assert_eq!(ids(&s), ["early", "late", "ok", "skew"]);
    // A second run into it works (the table stays readable to the tool itself too).
    let (code, stderr) = load(&delta, &delta_args);
    assert_eq!(code, 0, "{stderr}");
}

/// A table into which an earlier version committed a partition `dt=10000-01-01`: the run fails (exit 1)
/// saying which commit holds which partition and how to take it back; doing what it says makes the table
/// readable again and the next run loads.
#[cfg(feature = "external")]
#[test]
fn a_table_already_holding_an_unreadable_partition_is_reported_with_the_way_back() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("ok.ndjson");
    fs::write(
        &input,
        r#"{"type":"group","messageId":"ok","groupId":"g","userId":"u","timestamp":"2024-01-01T00:00:00Z"}"#,
    )
    .unwrap();
    let out = dir.path().join("delta");
    let (code, stderr) = load(&out, &[input.to_str().unwrap(), "--format", "delta"]);
    assert_eq!(code, 0, "{stderr}");
    // What an earlier version committed: an Add in partition dt=10000-01-01 (its file need not exist).
    let log = out.join("groups/_delta_log");
    let bad = log.join("00000000000000000002.json");
    fs::write(
        &bad,
        concat!(
            r#"{"commitInfo":{"timestamp":1,"operation":"WRITE","operationParameters":{"mode":"Append"}}}"#,
            "\n",
            r#"{"add":{"path":"dt=10000-01-01/part-x.parquet","partitionValues":{"dt":"10000-01-01"},"size":1,"modificationTime":1,"dataChange":true}}"#,
            "\n"
        ),
    )
    .unwrap();
    let (code, stderr) = load(&out, &[input.to_str().unwrap(), "--format", "delta"]);
    assert_eq!(code, 1, "{stderr}");
    for said in [
        "version 2 added a file in partition dt=10000-01-01",
        "0001-01-01 to 9999-12-31",
        "latest commit",
        "00000000000000000002.json",
    ] {
        assert!(stderr.contains(said), "{said:?} not in: {stderr}");
    }
    fs::remove_file(&bad).unwrap();
    let (code, stderr) = load(
        &out,
        &[
            input.to_str().unwrap(),
            "--format",
            "delta",
            "--mode",
            "overwrite",
        ],
    );
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(ids(&state(out.to_str().unwrap(), &[])), ["ok"]);
}

/// Links planted in the state folder of a hive dataset (the lock, the staging or versions folder, the state
/// folder itself): the run refuses (exit 2), and the file or folder the link points to is untouched.
#[test]
fn links_planted_in_the_state_folder_are_refused_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let fixture = fixtures().join("segment-docs.json");
    let outside = dir.path().join("outside");
    fs::create_dir_all(&outside).unwrap();
    let victim = outside.join("victim.txt");
    for (trial, plant) in ["lock", "staging", "versions", "state"].iter().enumerate() {
        fs::write(&victim, b"keep me").unwrap();
        let out = dir.path().join(format!("out-{trial}"));
        let (code, stderr) = load(&out, &[fixture.to_str().unwrap()]);
        assert_eq!(code, 0, "{stderr}");
        let state = out.join(".group-loader");
        match *plant {
            "lock" => {
                fs::remove_file(state.join("lock")).unwrap();
                std::os::unix::fs::symlink(&victim, state.join("lock")).unwrap();
            }
            "staging" | "versions" => {
                let moved = dir.path().join(format!("moved-{trial}"));
                fs::rename(state.join(plant), &moved).unwrap();
                // The link leads to a folder holding the victim: recovery must not empty it.
                std::os::unix::fs::symlink(&outside, state.join(plant)).unwrap();
            }
            _ => {
                let moved = dir.path().join(format!("moved-{trial}"));
                fs::rename(&state, &moved).unwrap();
                std::os::unix::fs::symlink(&moved, &state).unwrap();
            }
        }
        let (code, stderr) = load(&out, &[fixtures().join("batch.ndjson").to_str().unwrap()]);
        assert_eq!(code, 2, "{plant}: {stderr}");
        assert!(stderr.contains("symbolic link"), "{plant}: {stderr}");
        assert_eq!(fs::read(&victim).unwrap(), b"keep me", "{plant}");
        assert_eq!(fs::read_dir(&outside).unwrap().count(), 1, "{plant}");
    }
}

/// A link in an input folder that leads out of it (here to a file of Group calls standing in for
/// /etc/shadow) is not read, and the run says so on stderr; --follow-links reads it.
#[test]
fn links_out_of_an_input_folder_are_skipped_and_said() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("export");
    fs::create_dir_all(&input).unwrap();
    fs::copy(fixtures().join("segment-docs.json"), input.join("a.json")).unwrap();
    let secret = dir.path().join("secret.json");
    fs::write(
        &secret,
        "{\"type\":\"group\",\"messageId\":\"secret\",\"groupId\":\"g\",\"userId\":\"u\",\"timestamp\":\"2024-01-01\"}\nnot json: root:x:0:0\n",
    )
    .unwrap();
    std::os::unix::fs::symlink(&secret, input.join("b.json")).unwrap();
    let out = dir.path().join("out");
    let (code, stderr) = load(&out, &[input.to_str().unwrap(), "--quiet"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.contains("not following 1 link"), "{stderr}");
    assert!(stderr.contains("b.json"), "{stderr}");
    assert!(!by_id(&read_dataset(&out)).contains_key("secret"));
    assert!(
        common::rejects(&out)
            .iter()
            .all(|r| !r.to_string().contains("root:x"))
    );
    let out = dir.path().join("followed");
    let (code, stderr) = load(
        &out,
        &[
            input.to_str().unwrap(),
            "--follow-links",
            "--max-reject-ratio",
            "1",
        ],
    );
    assert_eq!(code, 0, "{stderr}");
    assert!(!stderr.contains("not following"), "{stderr}");
    assert!(by_id(&read_dataset(&out)).contains_key("secret"));
}

/// Object-store URLs: a URL names one place for every object of the dataset (data, log, rejects, reports)
/// and for deltalake reading it. A Delta path that readers spell two ways (a space, a non-ASCII letter:
/// deltalake finds the log under `my data/` and polars the files under `my%20data/`) is refused up front, as
/// are URLs with `..`, a query, a fragment or credentials (exit 2, saying why, writing nothing). Such names are
/// fine in inputs: an export under a prefix with a space is read where it is.
#[cfg(feature = "external")]
#[test]
fn output_urls_name_one_place_or_are_refused() {
    let moto = Moto::start();
    moto.create_bucket("lake");
    let env = moto.env();
    let dir = tempfile::tempdir().unwrap();
    let export = dir.path().join("export");
    fs::create_dir_all(&export).unwrap();
    fs::copy(fixtures().join("segment-docs.json"), export.join("a.json")).unwrap();
    moto.upload_dir("lake", "in put/2024", &export);
    let url = "s3://lake/plain-path_1.x";
    let args = [
        "load",
        "s3://lake/in put/2024/",
        "-o",
        url,
        "--progress",
        "never",
    ];
    let (code, stderr) = run_env(&args, &env);
    assert_eq!(code, 0, "{stderr}");
    let keys = objects(&moto, "lake", "");
    let elsewhere: Vec<&String> = keys
        .iter()
        .filter(|k| !k.starts_with("plain-path_1.x/") && !k.starts_with("in put/"))
        .collect();
    assert!(elsewhere.is_empty(), "objects elsewhere: {elsewhere:?}");
    for part in [
        "groups/_delta_log/",
        "groups/dt=",
        "accounts/_delta_log/",
        "_runs/",
    ] {
        assert!(
            keys.iter()
                .any(|k| k.starts_with(&format!("plain-path_1.x/{part}"))),
            "no {part}: {keys:?}"
        );
    }
    assert_eq!(
        ids(&state(url, &env)).len(),
        1,
        "deltalake reads it where the tool wrote it"
    );
    let before = objects(&moto, "lake", "");
    let fixture = fixtures().join("batch.ndjson");
    let local = dir.path().join("my data");
    for (url, why) in [
        ("s3://lake/my data", "percent-encode"),
        ("s3://lake/café", "percent-encode"),
        (local.to_str().unwrap(), "percent-encode"),
        ("s3://lake/a/../escape", ".."),
        ("s3://lake?x=1/p", "query"),
        ("s3://lake/p#frag/q", "fragment"),
        ("s3://user:secretpw@lake/p", "credentials"),
        ("s3://lake/a%2fb", "encoded slash"),
    ] {
        let args = [
            "load",
            fixture.to_str().unwrap(),
            "-o",
            url,
            "--format",
            "delta",
            "--progress",
            "never",
        ];
        let (code, stderr) = run_env(&args, &env);
        assert_eq!(code, 2, "{url}: {stderr}");
        assert!(stderr.contains(why), "{url}: {stderr}");
        assert!(!stderr.contains("secretpw"), "{url}: {stderr}");
    }
    assert_eq!(
        objects(&moto, "lake", ""),
        before,
        "nothing written by a refused URL"
    );
    assert!(
        !local.exists(),
        "a refused local folder is not even created"
    );
}
