//! `--memory-limit` is a limit: the peak resident memory of the binary (its `ru_maxrss`, from `wait4`) stays
//! within it whatever the shape of the input — blank lines, tiny lines, a gzip bomb of newlines, partitions
//! without end, wide lines — and an option combination that cannot fit is refused up front. Each test prints
//! the peak as a ratio of the limit; none of them times anything.

mod common;

use std::fs;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use common::*;

const LIMIT: u64 = 256 << 20;

/// Runs `group-loader load ARGS -o OUT --memory-limit 256MiB` and returns (exit code, peak RSS in bytes).
// The child is waited for with wait4 (for its rusage), not with std's wait.
#[allow(clippy::zombie_processes)]
fn peak(out: &Path, args: &[&str]) -> (i32, u64) {
    let child = Command::new(assert_cmd::cargo::cargo_bin("group-loader"))
        .arg("load")
        .args(args)
        .arg("--output")
        .arg(out)
        .args(["--memory-limit", "256MiB", "--progress", "never", "--quiet"])
        .args(["--max-reject-ratio", "1"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("run");
    let mut status = 0;
    // SAFETY: an all-zero rusage is a valid value for wait4 to fill in.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: waits for our own child, with valid pointers to locals; std's Child is not waited on again.
    let pid = unsafe { libc::wait4(child.id() as libc::pid_t, &mut status, 0, &mut usage) };
    assert_eq!(pid, child.id() as libc::pid_t, "wait4");
    let code = if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        -1
    };
    (code, usage.ru_maxrss as u64 * 1024)
}

/// Asserts a run stayed within the limit, saying by how much.
fn assert_within(what: &str, (code, rss): (i32, u64)) {
    let ratio = rss as f64 / LIMIT as f64;
    eprintln!(
        "{what}: exit {code}, peak RSS {} MiB = {ratio:.2} of the limit",
        rss >> 20
    );
    assert_eq!(code, 0, "{what}");
    assert!(
        rss <= LIMIT,
        "{what}: peak RSS {} MiB over the 256 MiB limit",
        rss >> 20
    );
}

fn group_call(id: &str, day: &str, traits: &str) -> String {
    format!(
        r#"{{"type":"group","messageId":"{id}","groupId":"g-{id}","userId":"u","timestamp":"{day}T00:00:00Z","traits":{{{traits}}}}}"#
    )
}

#[test]
fn blank_and_tiny_lines_stay_within_the_limit() {
    let dir = tempfile::tempdir().unwrap();
    // 10 MB of newlines (one event at the end, so the run has a row), and 2 million lines of `{}` (each one
    // rejected: every line costs its outcome).
    let blank = dir.path().join("blank.ndjson");
    let mut text = "\n".repeat(10_000_000);
    text.push_str(&group_call("last", "2024-01-01", ""));
    fs::write(&blank, text).unwrap();
    assert_within(
        "10 MB of blank lines",
        peak(&dir.path().join("a"), &[blank.to_str().unwrap()]),
    );
    let tiny = dir.path().join("tiny.ndjson");
    fs::write(&tiny, "{}\n".repeat(2_000_000)).unwrap();
    assert_within(
        "2 million tiny lines",
        peak(&dir.path().join("b"), &[tiny.to_str().unwrap()]),
    );
    let out = dir.path().join("b");
    assert_eq!(report(&out)["rejected"]["missing_type"], 2_000_000);
}

#[test]
fn a_gzip_bomb_of_newlines_stays_within_the_limit() {
    let dir = tempfile::tempdir().unwrap();
    let bomb = dir.path().join("bomb.ndjson.gz");
    let mut gz = flate2::write::GzEncoder::new(
        fs::File::create(&bomb).unwrap(),
        flate2::Compression::best(),
    );
    let mib = vec![b'\n'; 1 << 20];
    for _ in 0..64 {
        gz.write_all(&mib).unwrap();
    }
    gz.write_all(group_call("last", "2024-01-01", "").as_bytes())
        .unwrap();
    gz.finish().unwrap();
    assert!(
        fs::metadata(&bomb).unwrap().len() < 1 << 20,
        "256 MiB in well under 1 MiB"
    );
    let out = dir.path().join("out");
    assert_within(
        "256 MiB of newlines in a gzip",
        peak(&out, &[bomb.to_str().unwrap()]),
    );
    let r = report(&out);
    assert_eq!(r["blank"], 64 << 20);
    assert_eq!(r["rows_written"], 1);
}

/// Four thousand partitions written at once (one event a day over eleven years, in an order that visits them
/// all again and again), with `accounts`: every partition is one file, its rows in input order.
#[test]
fn partitions_without_end_stay_within_the_limit_a_file_each() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("days.ndjson");
    let days = 4_000u64;
    let mut text = String::new();
    for k in 0..3 * days {
        // Day k*7 mod 4000: each pass visits every day, in a scattered order.
        let d = (k * 7) % days;
        let day =
            chrono::NaiveDate::from_ymd_opt(2000, 1, 1).unwrap() + chrono::Duration::days(d as i64);
        text.push_str(&group_call(
            &format!("m{k}"),
            &day.to_string(),
            r#""plan":"p""#,
        ));
        text.push('\n');
    }
    fs::write(&input, text).unwrap();
    let out = dir.path().join("out");
    assert_within("4,000 partitions", peak(&out, &[input.to_str().unwrap()]));
    let files = parquet_files(&out.join("groups"));
    assert_eq!(files.len(), days as usize, "one file a partition");
    for f in files.iter().step_by(97) {
        let ids: Vec<u64> = read_file(f)
            .iter()
            .map(|r| match &r["id"] {
                V::S(id) => id[1..].parse().unwrap(),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(ids.len(), 3, "{}", f.display());
        assert!(
            ids.windows(2).all(|w| w[0] < w[1]),
            "input order in {}",
            f.display()
        );
    }
    assert_eq!(report(&out)["accounts"]["groups"], 3 * days);
}

/// Lines as long as the default line limit allows under 256 MiB, each with hundreds of thousands of trait
/// keys, into the groups and accounts tables.
#[test]
fn wide_lines_stay_within_the_limit() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("wide");
    fs::create_dir_all(&input).unwrap();
    let room = group_loader::options::default_max_line_bytes(LIMIT) - 200;
    for f in 0..2 {
        let mut text = String::new();
        for l in 0..4 {
            let mut traits = String::new();
            let mut i = 0;
            while traits.len() + 24 < room {
                traits.push_str(&format!("\"k{i}\":{i},"));
                i += 1;
            }
            traits.pop();
            text.push_str(&group_call(&format!("w{f}-{l}"), "2024-01-01", &traits));
            text.push('\n');
        }
        fs::write(input.join(format!("{f}.ndjson")), text).unwrap();
    }
    let out = dir.path().join("out");
    assert_within("8 wide lines", peak(&out, &[input.to_str().unwrap()]));
    let r = report(&out);
    assert_eq!(r["rows_written"], 8);
    assert_eq!(r["accounts"]["groups_over_key_limit"], 8);
}

/// A line limit the memory limit cannot hold is refused before anything is read or written.
#[test]
fn a_line_limit_the_memory_limit_cannot_hold_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let fixture = fixtures().join("segment-docs.json");
    let o = bin()
        .args([
            "load",
            fixture.to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
        ])
        .args(["--memory-limit", "256MiB", "--max-line-bytes", "1GiB"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("--max-line-bytes"), "{stderr}");
    assert!(stderr.contains("at most 12 MiB"), "{stderr}");
    assert!(!out.exists(), "nothing written");
}
