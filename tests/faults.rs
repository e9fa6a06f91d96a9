//! Faults: a run killed at random moments, a full disk, unreadable inputs, a read-only output, two runs at
//! once. Each test tries to break one publishing promise and checks what a reader of the dataset would see.

mod common;

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command as Process, Stdio};
use std::time::{Duration, Instant};

use common::*;

fn binary() -> PathBuf {
    assert_cmd::cargo::cargo_bin("group-loader")
}

/// Writes `files` inputs of `per_file` Group calls each, spread over many hours (so publishing has many
/// partitions and files to move), with text that does not compress away. Returns the input folder.
fn make_inputs(dir: &Path, files: usize, per_file: usize) -> PathBuf {
    let input = dir.join("in");
    fs::create_dir_all(&input).unwrap();
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || xorshift(&mut state);
    for f in 0..files {
        let mut w = std::io::BufWriter::new(
            fs::File::create(input.join(format!("part-{f:02}.ndjson"))).unwrap(),
        );
        for i in 0..per_file {
            let hour = (f * per_file + i) % 240;
            writeln!(
                w,
                r#"{{"type":"group","messageId":"m-{f}-{i}","groupId":"g{}","userId":"u{}","timestamp":"2024-03-{:02}T{:02}:00:00Z","traits":{{"name":"n{:x}","plan":"p{}","note":"{:016x}{:016x}"}}}}"#,
                next() % 5000,
                next() % 100,
                1 + hour / 24,
                hour % 24,
                next(),
                next() % 4,
                next(),
                next()
            )
            .unwrap();
        }
    }
    input
}

/// Every visible message id, sorted (reading each visible file whole, so a file without a valid footer fails).
fn visible_ids(out: &Path) -> Vec<String> {
    sorted_ids(&read_dataset(out))
}

/// Every file under `dir`, links followed.
fn all_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(all_files(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}

/// The visible accounts table, as sorted rows (each file read whole).
fn visible_accounts(out: &Path) -> Vec<String> {
    let mut rows: Vec<String> = parquet_files(&out.join("accounts"))
        .iter()
        .flat_map(|f| read_file(f))
        .map(|r| format!("{r:?}"))
        .collect();
    rows.sort();
    rows
}

fn run_reports(out: &Path) -> usize {
    fs::read_dir(out.join("_runs")).map_or(0, |d| d.count())
}

fn load_args(input: &Path, out: &Path) -> Vec<String> {
    vec![
        "load".into(),
        input.display().to_string(),
        "--output".into(),
        out.display().to_string(),
        "--partition".into(),
        "hour".into(),
        "--progress".into(),
        "never".into(),
        "--quiet".into(),
    ]
}

/// SIGKILL at random moments, early and late (and so during publishing), many times into one output: after
/// every kill each visible file reads whole, and the dataset is either empty (nothing published yet) or
/// exactly a clean run's rows — never part of a run, never a duplicate. A final run then equals a clean run.
#[test]
fn killed_at_random_moments_never_half_publishes() {
    let dir = tempfile::tempdir().unwrap();
    let input = make_inputs(dir.path(), 4, 4000);

    let clean = dir.path().join("clean");
    let started = Instant::now();
    let status = Process::new(binary())
        .args(load_args(&input, &clean))
        .status()
        .unwrap();
    let clean_run = started.elapsed();
    assert!(status.success());
    let expected = visible_ids(&clean);
    assert_eq!(expected.len(), 16_000);
    let expected_accounts = visible_accounts(&clean);
    let groups: std::collections::BTreeSet<String> = read_dataset(&clean)
        .into_iter()
        .map(|r| format!("{:?}", r["group_id"]))
        .collect();
    assert_eq!(expected_accounts.len(), groups.len(), "one row per group");

    let out = dir.path().join("out");
    let seed = clock_seed();
    eprintln!("seed {seed}, clean run {clean_run:?}");
    let mut state = seed;
    // How long a run takes here and now (other tests share the machine): updated by every run that finishes.
    let mut estimate = clean_run;
    let (mut killed, mut finished, mut mid_publish, mut published_when_killed) = (0, 0, 0, 0);
    for trial in 0..24 {
        xorshift(&mut state);
        // Half the trials anywhere in the run, half in its last fifth (where staging ends and publishing is).
        let frac = (state % 1000) as f64 / 1000.0;
        let frac = if trial % 2 == 0 {
            frac * 1.1
        } else {
            0.85 + frac * 0.3
        };
        let delay = estimate.mul_f64(frac);
        let started = Instant::now();
        let mut child = Process::new(binary())
            .args(load_args(&input, &out))
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut was_running = true;
        while started.elapsed() < delay {
            if child.try_wait().unwrap().is_some() {
                was_running = false;
                break;
            }
            std::thread::sleep(Duration::from_micros(500));
        }
        if was_running {
            child.kill().unwrap(); // SIGKILL
        }
        let status = child.wait().unwrap();
        if !was_running {
            assert!(status.success(), "trial {trial}: {status:?}");
            estimate = started.elapsed();
            finished += 1;
        } else {
            killed += 1;
            if frac > 1.0 {
                // Killed after the estimated end: runs take longer than that now.
                estimate = estimate.mul_f64(1.1);
            }
            // A version folder newer than `current` means the kill landed while publishing.
            let current = fs::read_link(out.join(".group-loader/current"))
                .ok()
                .and_then(|t| t.file_name()?.to_str()?.parse::<u64>().ok())
                .unwrap_or(0);
            if fs::read_dir(out.join(".group-loader/versions")).is_ok_and(|d| {
                d.flatten().any(|e| {
                    e.file_name()
                        .to_str()
                        .and_then(|n| n.parse::<u64>().ok())
                        .is_some_and(|n| n > current)
                })
            }) {
                mid_publish += 1;
            }
        }
        let ids = visible_ids(&out);
        if ids.is_empty() {
            assert_eq!(
                run_reports(&out),
                0,
                "trial {trial}: a report without its rows"
            );
            assert!(
                visible_accounts(&out).is_empty(),
                "trial {trial}: accounts without groups"
            );
        } else {
            assert_eq!(
                ids, expected,
                "trial {trial} (delay {delay:?}): half a run visible"
            );
            assert_eq!(run_reports(&out), 1, "trial {trial}");
            assert!(
                visible_accounts(&out) == expected_accounts,
                "trial {trial}: accounts out of step with groups"
            );
            if was_running {
                published_when_killed += 1;
            }
        }
        // Nothing but finished Parquet files is visible (no `.partial` or temporary file leaks in).
        for f in all_files(&out.join("groups")) {
            assert!(
                f.extension().is_some_and(|e| e == "parquet"),
                "trial {trial}: {} visible",
                f.display()
            );
        }
    }
    eprintln!(
        "{killed} killed ({mid_publish} while publishing, {published_when_killed} with the dataset already \
         visible), {finished} finished"
    );
    assert!(killed > 0, "no trial was killed mid-run");

    // The next run finishes the job: exactly a clean run's rows, nothing left behind.
    let status = Process::new(binary())
        .args(load_args(&input, &out))
        .status()
        .unwrap();
    assert!(status.success());
    assert_eq!(visible_ids(&out), expected);
    assert!(visible_accounts(&out) == expected_accounts);
    assert_counts_add_up(&report(&out));
    assert_eq!(
        fs::read_dir(out.join(".group-loader/staging"))
            .unwrap()
            .count(),
        0
    );
    assert!(
        fs::read_dir(out.join(".group-loader/versions"))
            .unwrap()
            .count()
            <= 2,
        "only the current and previous versions are kept"
    );
}

/// Runs `bin ARGS` in a shell with `prelude` first (for `ulimit`), returning (exit code, stderr).
fn run_in_shell(prelude: &str, args: &[String]) -> (i32, String) {
    let mut cmd = format!("{prelude}; exec '{}'", binary().display());
    for a in args {
        cmd.push_str(&format!(" '{a}'"));
    }
    let o = Process::new("bash").args(["-c", &cmd]).output().unwrap();
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

fn is_root() -> bool {
    Process::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.trim_ascii() == b"0")
}

/// Mounts a tmpfs of `size` at `at` (root only); returns whether it worked.
fn mount_tmpfs(at: &Path, options: &str) -> bool {
    is_root()
        && Process::new("mount")
            .args(["-t", "tmpfs", "-o", options, "tmpfs"])
            .arg(at)
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
}

struct Unmount(PathBuf);
impl Drop for Unmount {
    fn drop(&mut self) {
        let _ = Process::new("umount").arg(&self.0).status();
    }
}

/// A full disk mid-run: exit 1 naming the path, the dataset exactly as before, and the next run (with room)
/// leaves no trace of the failed one. A real small filesystem when the test may mount one (root), otherwise
/// a file size limit (`ulimit -f`, with SIGXFSZ ignored so writes fail with an error instead of a signal).
#[test]
fn a_full_disk_fails_cleanly_and_publishes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let big = make_inputs(dir.path(), 2, 20_000);
    let small = fixtures().join("segment-docs.json");
    let out = dir.path().join("out");
    fs::create_dir_all(&out).unwrap();
    let mounted = mount_tmpfs(&out, "size=2m");
    let _unmount = mounted.then(|| Unmount(out.clone()));
    let prelude = if mounted {
        eprintln!("disk full: a 2 MiB tmpfs");
        "true"
    } else {
        eprintln!("disk full: ulimit -f 1024 (1 MiB per file)");
        "trap '' XFSZ; ulimit -f 1024"
    };
    let mut small_args = load_args(&small, &out);
    small_args.retain(|a| a != "--quiet");
    let (code, stderr) = run_in_shell(prelude, &small_args);
    assert_eq!(code, 0, "{stderr}");
    let before = visible_ids(&out);
    assert_eq!(before.len(), 1);

    let (code, stderr) = run_in_shell(prelude, &load_args(&big, &out));
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains(out.to_str().unwrap()),
        "the message names the path: {stderr}"
    );
    assert!(
        stderr.contains("No space left") || stderr.contains("too large"),
        "{stderr}"
    );
    assert_eq!(visible_ids(&out), before, "nothing published");
    assert_eq!(run_reports(&out), 1);
    // The failed run cleaned up after itself: the disk is not left full until the next run.
    assert_eq!(
        fs::read_dir(out.join(".group-loader/staging"))
            .unwrap()
            .count(),
        0,
        "the failed run's staging folder is gone"
    );

    // The next run (with room) cleans up whatever the failed one left.
    let (code, stderr) = run_in_shell(prelude, &small_args);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(visible_ids(&out), before);
    assert_counts_add_up(&report(&out));
    assert_eq!(
        fs::read_dir(out.join(".group-loader/staging"))
            .unwrap()
            .count(),
        0
    );
}

/// An input that cannot be read fails the run (exit 1) naming it, and publishes nothing. As root, permission
/// bits do not stop a read, so the test uses a file whose read fails at the kernel (`/proc/self/mem` at offset
/// 0 is unmapped: EIO); otherwise also a file with mode 000.
#[test]
fn an_unreadable_input_fails_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut unreadable = vec![PathBuf::from("/proc/self/mem")];
    if !is_root() {
        let f = dir.path().join("secret.ndjson");
        fs::write(&f, b"{}\n").unwrap();
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(&f, fs::Permissions::from_mode(0o000)).unwrap();
        unreadable.push(f);
    }
    for path in unreadable {
        let out = dir.path().join("out");
        let (code, stderr) = load(
            &out,
            &[
                fixtures().join("segment-docs.json").to_str().unwrap(),
                path.to_str().unwrap(),
            ],
        );
        assert_eq!(code, 1, "{stderr}");
        assert!(stderr.contains(path.to_str().unwrap()), "{stderr}");
        assert!(visible_ids(&out).is_empty(), "nothing published");
    }
}

/// An output the loader cannot write: exit 1 with the path in the message. Root ignores permission bits, so
/// as root the output is a read-only tmpfs; otherwise a folder with mode 555.
#[test]
fn a_read_only_output_fails_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("ro");
    fs::create_dir_all(&out).unwrap();
    let mounted = mount_tmpfs(&out, "ro,size=1m");
    let _unmount = mounted.then(|| Unmount(out.clone()));
    if !mounted {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(&out, fs::Permissions::from_mode(0o555)).unwrap();
    }
    let probe = fs::write(out.join("probe"), b"x");
    assert!(probe.is_err(), "the output must really be read-only");
    let (code, stderr) = load(
        &out,
        &[fixtures().join("segment-docs.json").to_str().unwrap()],
    );
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains(out.to_str().unwrap()), "{stderr}");
    assert!(
        stderr.contains("Read-only") || stderr.contains("ermission"),
        "{stderr}"
    );
}

/// Two real runs into one output: while the first runs, the second exits 4 at once and changes nothing; the
/// first then publishes normally.
#[test]
fn a_second_concurrent_run_exits_4_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let input = make_inputs(dir.path(), 2, 20_000);
    let out = dir.path().join("out");
    let mut first = Process::new(binary())
        .args(load_args(&input, &out))
        .spawn()
        .unwrap();
    // Wait until the first run holds the lock (its pid is in the lock file) and has made the table links.
    let lock = out.join(".group-loader/lock");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !(fs::read_to_string(&lock).is_ok_and(|s| s.starts_with("pid "))
        && out.join("_rejects").is_symlink())
    {
        assert!(Instant::now() < deadline, "first run never took the lock");
        std::thread::sleep(Duration::from_millis(5));
    }
    let holder = fs::read_to_string(&lock).unwrap();
    let listing = || -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(&out)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    };
    let before = listing();
    let (code, stderr) = load(
        &out,
        &[fixtures().join("segment-docs.json").to_str().unwrap()],
    );
    assert_eq!(code, 4, "{stderr}");
    assert!(stderr.contains("locked"), "{stderr}");
    assert!(stderr.contains(&format!("pid {}", first.id())), "{stderr}");
    assert_eq!(listing(), before, "touched nothing");
    assert_eq!(
        fs::read_to_string(&lock).unwrap(),
        holder,
        "the lock's holder is still the first run"
    );
    assert!(first.wait().unwrap().success());
    assert_eq!(visible_ids(&out).len(), 40_000);
    assert_counts_add_up(&report(&out));
}
