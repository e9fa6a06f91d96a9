//! Publishing a run atomically, and repairing after a crash.
//!
//! Why this module exists: the guarantees a warehouse relies on — a reader never sees a partial file, a failed
//! run publishes nothing, no run is ever half-visible, a re-run never duplicates rows, two runs never
//! interleave — are all decided here.
//!
//! The dataset a reader sees is one immutable *version*, switched by a single atomic rename:
//! ```text
//! OUT/groups   -> .group-loader/current/groups        (symlinks, created once)
//! OUT/accounts -> .group-loader/current/accounts
//! OUT/_runs    -> .group-loader/current/_runs
//! OUT/_rejects -> .group-loader/current/_rejects
//! OUT/.group-loader/current -> versions/0000000042    (the commit point: one rename replaces this link)
//! OUT/.group-loader/versions/0000000042/{groups,accounts,_runs,_rejects}/...
//! ```
//! 1. `lock` is held with an OS file lock (`flock`) for the whole run. A second run fails at once (exit 4).
//!    The kernel drops the lock when a process dies, so a killed run never blocks the next one.
//! 2. A run writes its files in `staging/<tmp>/`, fsyncs them, and never touches the dataset until the end.
//! 3. To publish, it builds the next version folder: a hard link to every file of the current version that it
//!    keeps, plus its staged files renamed in; fsyncs it; then points `current` at it by renaming a new symlink
//!    over the old one. Before that rename nothing is visible; after it, all of the run is, at once.
//! 4. The previous version is kept (a reader that listed it a moment ago can still open its files); older ones
//!    are removed. Every run, once it holds the lock, first *recovers*: it removes staging folders and any
//!    version folder that is neither current nor the previous one (a publish killed before its rename).
//!
//! Hard links cost no space, so a version is cheap; building one costs one `link` per file in the dataset.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use crate::atomic::sync_dir;
use crate::error::{Error, Result};
use crate::layout::STATE_DIR;
use crate::staging::Staging;

/// The folders of a version, each reachable as `OUT/<name>`.
pub const TABLES: [&str; 4] = ["groups", "accounts", "_runs", "_rejects"];
const LOCK_FILE: &str = "lock";
const STAGING_DIR: &str = "staging";
const VERSIONS_DIR: &str = "versions";
const CURRENT: &str = "current";

/// The output's lock, held until dropped.
#[derive(Debug)]
pub struct Lock {
    _file: File,
}

/// Refuses an `--output` that exists and is not a directory.
pub fn check_output(out: &Path) -> Result<()> {
    if out.exists() && !out.is_dir() {
        return Err(Error::Usage(format!(
            "--output {} exists and is not a directory",
            out.display()
        )));
    }
    Ok(())
}

/// Refuses (exit 2, touching nothing) a state folder that holds a symbolic link where the tool keeps none:
/// the tool never follows a link inside the state it owns, so a planted link cannot make it write, or delete,
/// anything outside the output. Its own links are `current` (and a `current.tmp-*` a killed publish left),
/// each pointing at `versions/NNNNNNNNNN`; everything else must be a plain folder or file.
pub fn check_state(out: &Path) -> Result<()> {
    let state = out.join(STATE_DIR);
    match fs::symlink_metadata(&state) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::io("reading", &state)(e)),
        Ok(m) if m.file_type().is_symlink() => return Err(planted_link(&state)),
        Ok(m) if !m.is_dir() => {
            return Err(Error::Usage(format!(
                "{} is not a folder: it is group-loader's state folder; move it away or choose another \
                 --output",
                state.display()
            )));
        }
        Ok(_) => {}
    }
    check_tree(&state, true)
}

fn check_tree(dir: &Path, top: bool) -> Result<()> {
    for entry in fs::read_dir(dir).map_err(Error::io("reading directory", dir))? {
        let entry = entry.map_err(Error::io("reading directory", dir))?;
        let path = entry.path();
        let ft = entry.file_type().map_err(Error::io("reading", &path))?;
        if ft.is_symlink() {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            let own = top && (name == CURRENT || name.starts_with(&format!("{CURRENT}.tmp-")));
            if !own || !is_version_link(&path) {
                return Err(planted_link(&path));
            }
        } else if ft.is_dir() {
            check_tree(&path, false)?;
        }
    }
    Ok(())
}

/// True for a link whose target is `versions/` and a version number (what `current` holds).
fn is_version_link(link: &Path) -> bool {
    fs::read_link(link).is_ok_and(|t| {
        let mut parts = t.components();
        parts.next().is_some_and(|c| c.as_os_str() == VERSIONS_DIR)
            && parts.next().is_some_and(|c| {
                let n = c.as_os_str().to_string_lossy();
                n.len() == 10 && n.bytes().all(|b| b.is_ascii_digit())
            })
            && parts.next().is_none()
    })
}

fn planted_link(path: &Path) -> Error {
    Error::Usage(format!(
        "{} is a symbolic link inside group-loader's state folder, where the tool keeps none of its own: it \
         never follows such a link (it could lead outside the output). Nothing was changed; remove the link \
         (restore the folder or file it replaced) and run again",
        path.display()
    ))
}

/// Takes the output's lock, or fails at once with [`Error::Locked`]. Creates the output folder if needed.
pub fn lock(out: &Path) -> Result<Lock> {
    check_output(out)?;
    let state = out.join(STATE_DIR);
    fs::create_dir_all(&state).map_err(Error::io("creating output directory", &state))?;
    let path = state.join(LOCK_FILE);
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&path)
        .map_err(|e| match e.raw_os_error() {
            Some(libc::ELOOP) => planted_link(&path),
            _ => Error::io("opening lock file", &path)(e),
        })?;
    match file.try_lock() {
        Ok(()) => {}
        Err(fs::TryLockError::WouldBlock) => {
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            let holder = holder.trim();
            let holder = if holder.is_empty() {
                "holder unknown".to_string()
            } else {
                holder.to_string()
            };
            return Err(Error::Locked {
                path: out.to_path_buf(),
                holder,
            });
        }
        Err(fs::TryLockError::Error(e)) => return Err(Error::io("locking", &path)(e)),
    }
    // Who holds it, for the message the next run prints. The lock is the flock, not this text.
    let _ = file.set_len(0);
    let _ = file.rewind();
    let _ = writeln!(
        file,
        "pid {} since {}",
        std::process::id(),
        chrono::Utc::now().to_rfc3339()
    );
    Ok(Lock { _file: file })
}

/// Checks the output's layout and creates the table links on first use (call with the lock held). An
/// `OUT/groups` (or other table name) that is not the tool's link is a usage error: the tool never writes
/// into, or replaces, a folder it did not create.
pub fn prepare(out: &Path) -> Result<()> {
    for name in TABLES {
        let path = out.join(name);
        let target = Path::new(STATE_DIR).join(CURRENT).join(name);
        match fs::symlink_metadata(&path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                std::os::unix::fs::symlink(&target, &path)
                    .map_err(Error::io("creating table link", &path))?;
            }
            Err(e) => return Err(Error::io("reading", &path)(e)),
            Ok(m)
                if m.file_type().is_symlink()
                    && fs::read_link(&path).is_ok_and(|t| t == target) => {}
            Ok(_) => {
                return Err(Error::Usage(format!(
                    "{} exists and is not group-loader's link to {}; move it away or choose another --output",
                    path.display(),
                    target.display()
                )));
            }
        }
    }
    Ok(())
}

/// The number of the version `current` points at, if any.
pub fn current_version(out: &Path) -> Result<Option<u64>> {
    let link = out.join(STATE_DIR).join(CURRENT);
    match fs::read_link(&link) {
        Ok(target) => target
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.parse().ok())
            .map(Some)
            .ok_or_else(|| {
                Error::io("reading", &link)(std::io::Error::other(format!(
                    "unexpected target {}",
                    target.display()
                )))
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io("reading", &link)(e)),
    }
}

fn version_dir(out: &Path, n: u64) -> PathBuf {
    out.join(STATE_DIR)
        .join(VERSIONS_DIR)
        .join(format!("{n:010}"))
}

/// A fresh staging folder for a run (call with the lock held).
pub fn staging(out: &Path) -> Result<Staging> {
    Staging::create(
        out.join(STATE_DIR)
            .join(STAGING_DIR)
            .join(crate::staging::staging_name()),
    )
}

/// What publishing a run changes. Final paths are relative to the output (`groups/dt=.../part-...parquet`).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Plan {
    /// `(staged file, final path)` pairs; a file of the current version at `final` is replaced.
    pub adds: Vec<(PathBuf, PathBuf)>,
    /// Files of the current version that the new version leaves out.
    pub removes: Vec<PathBuf>,
}

impl Plan {
    /// True when publishing would change nothing.
    pub fn is_empty(&self) -> bool {
        self.adds.is_empty() && self.removes.is_empty()
    }
}

/// Publishes a run: builds the next version (the current one's files, minus `plan.removes` and the files
/// `plan.adds` replaces, plus `plan.adds`), switches `current` to it in one rename, and removes versions older
/// than the previous one (the staged files are moved into it; the staging folder is the caller's to remove). Returns the new version's number.
pub fn publish(out: &Path, plan: &Plan) -> Result<u64> {
    let current = current_version(out)?;
    let next = current.map_or(1, |c| c + 1);
    let dir = version_dir(out, next);
    if dir.exists() {
        // Left by a publish that died before its rename (recovery removes these too).
        fs::remove_dir_all(&dir).map_err(Error::io("removing unpublished version", &dir))?;
    }
    let built = build_version(out, current, &dir, plan);
    if let Err(e) = built {
        let _ = fs::remove_dir_all(&dir);
        return Err(e);
    }
    // The commit point: a new link renamed over `current`.
    let state = out.join(STATE_DIR);
    let tmp = state.join(format!("{CURRENT}.tmp-{}", std::process::id()));
    let _ = fs::remove_file(&tmp);
    let target = Path::new(VERSIONS_DIR).join(format!("{next:010}"));
    std::os::unix::fs::symlink(&target, &tmp).map_err(Error::io("creating link", &tmp))?;
    fs::rename(&tmp, state.join(CURRENT)).map_err(Error::io(
        "switching to the new version",
        state.join(CURRENT),
    ))?;
    sync_dir(&state);
    // Nothing below changes what a reader sees; a failure here is repaired by the next run.
    let _ = remove_old_versions(out, next);
    Ok(next)
}

fn build_version(out: &Path, current: Option<u64>, dir: &Path, plan: &Plan) -> Result<()> {
    for name in TABLES {
        let d = dir.join(name);
        fs::create_dir_all(&d).map_err(Error::io("creating directory", &d))?;
    }
    let mut skip: std::collections::HashSet<&Path> =
        plan.removes.iter().map(PathBuf::as_path).collect();
    skip.extend(plan.adds.iter().map(|(_, to)| to.as_path()));
    if let Some(c) = current {
        link_tree(&version_dir(out, c), dir, Path::new(""), &skip)?;
    }
    for (from, to) in &plan.adds {
        let to = dir.join(to);
        let parent = to.parent().unwrap_or(dir);
        fs::create_dir_all(parent).map_err(Error::io("creating directory", parent))?;
        fs::rename(from, &to).map_err(Error::io("publishing", &to))?;
    }
    sync_tree(dir);
    Ok(())
}

/// Hard-links every file under `from/rel` to `to/rel`, except those in `skip`; folders are created only for
/// the files they hold (a partition whose files are all removed disappears).
fn link_tree(
    from: &Path,
    to: &Path,
    rel: &Path,
    skip: &std::collections::HashSet<&Path>,
) -> Result<()> {
    let src = from.join(rel);
    let entries = fs::read_dir(&src).map_err(Error::io("reading directory", &src))?;
    for entry in entries {
        let entry = entry.map_err(Error::io("reading directory", &src))?;
        let rel = rel.join(entry.file_name());
        let ft = entry
            .file_type()
            .map_err(Error::io("reading", entry.path()))?;
        if ft.is_dir() {
            link_tree(from, to, &rel, skip)?;
        } else if !skip.contains(rel.as_path()) {
            let dst = to.join(&rel);
            if let Some(parent) = dst.parent() {
                fs::create_dir_all(parent).map_err(Error::io("creating directory", parent))?;
            }
            fs::hard_link(entry.path(), &dst)
                .map_err(Error::io("linking into the new version", &dst))?;
        }
    }
    Ok(())
}

/// fsyncs every folder of a tree (the files in it were synced when written).
fn sync_tree(dir: &Path) {
    if let Ok(entries) = fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                sync_tree(&e.path());
            }
        }
    }
    sync_dir(dir);
}

/// Removes every version but `keep` and the newest one below it. Returns how many were removed.
fn remove_old_versions(out: &Path, keep: u64) -> Result<usize> {
    let versions = out.join(STATE_DIR).join(VERSIONS_DIR);
    let entries = match fs::read_dir(&versions) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(Error::io("reading directory", &versions)(e)),
    };
    let mut found: Vec<(Option<u64>, PathBuf)> = entries
        .filter_map(|e| e.ok())
        .map(|e| {
            (
                e.file_name().to_str().and_then(|n| n.parse().ok()),
                e.path(),
            )
        })
        .collect();
    let previous = found
        .iter()
        .filter_map(|(n, _)| *n)
        .filter(|n| *n < keep)
        .max();
    found.retain(|(n, _)| *n != Some(keep) && *n != previous);
    for (_, path) in &found {
        remove_path(path)?;
    }
    Ok(found.len())
}

/// Removes every version but the current one (a deletion request's `--purge`: the previous version is what
/// still holds the rows it removed). Returns how many were removed.
pub fn remove_earlier_versions(out: &Path) -> Result<usize> {
    let Some(current) = current_version(out)? else {
        return Ok(0);
    };
    let versions = out.join(STATE_DIR).join(VERSIONS_DIR);
    let entries = fs::read_dir(&versions).map_err(Error::io("reading directory", &versions))?;
    let mut removed = 0;
    for e in entries.filter_map(|e| e.ok()) {
        let n: Option<u64> = e.file_name().to_str().and_then(|n| n.parse().ok());
        if n != Some(current) {
            remove_path(&e.path())?;
            removed += 1;
        }
    }
    sync_dir(&versions);
    Ok(removed)
}

fn remove_path(path: &Path) -> Result<()> {
    let r = if fs::symlink_metadata(path).is_ok_and(|m| m.is_dir()) {
        fs::remove_dir_all(path)
    } else {
        fs::remove_file(path)
    };
    match r {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(Error::io("removing", path)(e)),
        _ => Ok(()),
    }
}

/// Cleans up what earlier runs left (call with the lock held): staging folders of runs that never published,
/// and version folders of publishes killed before their rename. Returns how many staging folders it removed.
pub fn recover(out: &Path) -> Result<usize> {
    let state = out.join(STATE_DIR);
    if let Ok(entries) = fs::read_dir(&state) {
        for e in entries.flatten() {
            if e.file_name()
                .to_string_lossy()
                .starts_with(&format!("{CURRENT}.tmp-"))
            {
                remove_path(&e.path())?;
            }
        }
    }
    match current_version(out)? {
        Some(c) => {
            remove_old_versions(out, c)?;
        }
        None => remove_path(&state.join(VERSIONS_DIR))?,
    }
    let staging = state.join(STAGING_DIR);
    let entries = match fs::read_dir(&staging) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(Error::io("reading staging directory", &staging)(e)),
    };
    let mut removed = 0;
    for e in entries {
        let e = e.map_err(Error::io("reading staging directory", &staging))?;
        remove_path(&e.path())?;
        removed += 1;
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_lock_fails_at_once_and_is_released_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let first = lock(dir.path()).unwrap();
        match lock(dir.path()) {
            Err(Error::Locked { holder, .. }) => assert!(holder.starts_with("pid "), "{holder}"),
            other => panic!("expected Locked, got {other:?}"),
        }
        drop(first);
        assert!(lock(dir.path()).is_ok());
    }

    #[test]
    fn links_planted_in_the_state_folder_are_refused_untouched() {
        let outside = tempfile::tempdir().unwrap();
        let victim = outside.path().join("victim");
        fs::write(&victim, b"keep me").unwrap();
        let plant = |what: &str| {
            let dir = tempfile::tempdir().unwrap();
            let out = dir.path().to_path_buf();
            {
                let _lock = lock(&out).unwrap();
                prepare(&out).unwrap();
                publish_files(&out, &[("a/1", "A1")], &[]);
            }
            let state = out.join(STATE_DIR);
            match what {
                "lock" => {
                    fs::remove_file(state.join(LOCK_FILE)).unwrap();
                    std::os::unix::fs::symlink(&victim, state.join(LOCK_FILE)).unwrap();
                }
                "staging" | "versions" => {
                    let _ = fs::remove_dir_all(state.join(what));
                    std::os::unix::fs::symlink(outside.path(), state.join(what)).unwrap();
                }
                "a file in a version" => {
                    let v = version_dir(&out, 1).join("groups/a/2");
                    std::os::unix::fs::symlink(&victim, v).unwrap();
                }
                "current elsewhere" => {
                    fs::remove_file(state.join(CURRENT)).unwrap();
                    std::os::unix::fs::symlink(outside.path(), state.join(CURRENT)).unwrap();
                }
                _ => {
                    let moved = dir.path().join("moved");
                    fs::rename(&state, &moved).unwrap();
                    std::os::unix::fs::symlink(&moved, &state).unwrap();
                }
            }
            (dir, out)
        };
        for what in [
            "lock",
            "staging",
            "versions",
            "a file in a version",
            "current elsewhere",
            "state",
        ] {
            let (_dir, out) = plant(what);
            match check_state(&out) {
                Err(Error::Usage(m)) => assert!(m.contains("symbolic link"), "{what}: {m}"),
                other => panic!("{what}: {other:?}"),
            }
            assert_eq!(fs::read(&victim).unwrap(), b"keep me", "{what}");
            assert_eq!(fs::read_dir(outside.path()).unwrap().count(), 1, "{what}");
        }
        // The lock itself never follows a link, even if asked to open it directly.
        let (_dir, out) = plant("lock");
        assert!(matches!(lock(&out), Err(Error::Usage(_))));
        assert_eq!(fs::read(&victim).unwrap(), b"keep me");
        // The tool's own links pass.
        let dir = tempfile::tempdir().unwrap();
        {
            let _lock = lock(dir.path()).unwrap();
            prepare(dir.path()).unwrap();
            publish_files(dir.path(), &[("a/1", "A1")], &[]);
        }
        check_state(dir.path()).unwrap();
    }

    #[test]
    fn output_that_is_a_file_is_a_usage_error() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("f");
        fs::write(&f, b"x").unwrap();
        assert!(matches!(lock(&f), Err(Error::Usage(_))));
    }

    #[test]
    fn a_folder_the_tool_did_not_create_is_never_replaced() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(dir.path().join("groups/dt=2024-01-01")).unwrap();
        assert!(matches!(prepare(dir.path()), Err(Error::Usage(_))));
        assert!(dir.path().join("groups/dt=2024-01-01").is_dir());
    }

    /// Stages `files` (name -> bytes) and publishes them under `groups/`.
    fn publish_files(out: &Path, files: &[(&str, &str)], removes: &[&str]) -> u64 {
        let staging = staging(out).unwrap();
        let mut plan = Plan::default();
        for (name, bytes) in files {
            let staged = staging.dir().join(name.replace('/', "_"));
            fs::write(&staged, bytes).unwrap();
            plan.adds.push((staged, Path::new("groups").join(name)));
        }
        plan.removes = removes
            .iter()
            .map(|r| Path::new("groups").join(r))
            .collect();
        publish(out, &plan).unwrap()
    }

    fn visible(out: &Path) -> Vec<(String, String)> {
        fn walk(d: &Path, root: &Path, acc: &mut Vec<(String, String)>) {
            for e in fs::read_dir(d).unwrap().flatten() {
                let p = e.path();
                if p.is_dir() {
                    walk(&p, root, acc);
                } else {
                    let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
                    acc.push((rel, fs::read_to_string(&p).unwrap()));
                }
            }
        }
        let mut acc = Vec::new();
        walk(&out.join("groups"), &out.join("groups"), &mut acc);
        acc.sort();
        acc
    }

    #[test]
    fn each_publish_is_one_switch_and_keeps_the_previous_version() {
        let out = tempfile::tempdir().unwrap();
        let out = out.path();
        let _lock = lock(out).unwrap();
        prepare(out).unwrap();
        assert_eq!(current_version(out).unwrap(), None);
        assert_eq!(publish_files(out, &[("a/1", "A1"), ("b/1", "B1")], &[]), 1);
        assert_eq!(
            visible(out),
            [("a/1".into(), "A1".into()), ("b/1".into(), "B1".into())]
        );
        // Replace a/1, drop b/1 (its folder goes too), add c/1.
        assert_eq!(
            publish_files(out, &[("a/1", "A2"), ("c/1", "C2")], &["b/1"]),
            2
        );
        assert_eq!(
            visible(out),
            [("a/1".into(), "A2".into()), ("c/1".into(), "C2".into())]
        );
        assert!(!out.join("groups/b").exists());
        // Version 1 is kept for readers that listed it; a third publish removes it.
        assert_eq!(
            fs::read_to_string(version_dir(out, 1).join("groups/a/1")).unwrap(),
            "A1"
        );
        assert_eq!(publish_files(out, &[], &[]), 3);
        assert!(!version_dir(out, 1).exists());
        assert!(version_dir(out, 2).exists());
        assert_eq!(visible(out).len(), 2);
        assert_eq!(
            fs::read_dir(out.join(STATE_DIR).join(STAGING_DIR))
                .unwrap()
                .count(),
            0
        );
    }

    #[test]
    fn recovery_removes_what_killed_runs_left() {
        let out = tempfile::tempdir().unwrap();
        let out = out.path();
        let _lock = lock(out).unwrap();
        prepare(out).unwrap();
        publish_files(out, &[("a/1", "A1")], &[]);
        // A run killed while staging, and a publish killed before its switch.
        let killed = staging(out).unwrap();
        fs::write(killed.dir().join("x.parquet.partial"), b"X").unwrap();
        fs::create_dir_all(version_dir(out, 2).join("groups/a")).unwrap();
        fs::write(version_dir(out, 2).join("groups/a/2"), b"half").unwrap();
        fs::write(out.join(STATE_DIR).join("current.tmp-1"), b"").unwrap();

        assert_eq!(recover(out).unwrap(), 1);
        assert!(!version_dir(out, 2).exists());
        assert!(!out.join(STATE_DIR).join("current.tmp-1").exists());
        assert_eq!(visible(out), [("a/1".into(), "A1".into())]);
        assert_eq!(recover(out).unwrap(), 0, "recovering again is a no-op");
        // The next publish takes number 2 cleanly.
        assert_eq!(publish_files(out, &[("a/2", "A2")], &[]), 2);
        assert_eq!(visible(out).len(), 2);
    }
}
