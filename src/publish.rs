//! Publishing a run atomically, and repairing after a crash (SPEC §6.2).
//!
//! Why this module exists: the guarantees a warehouse relies on — a reader never sees a partial file, a failed
//! run publishes nothing, a re-run never duplicates rows, two runs never interleave — are all decided here.
//!
//! The protocol, all under `OUT/.group-loader/` (a hidden folder no reader globs):
//! 1. `lock` is held with an OS file lock (`flock`) for the whole run. A second run fails at once (exit 4).
//!    The kernel drops the lock when a process dies, so a killed run never blocks the next one.
//! 2. A run writes its files in `staging/<tmp>/`, fsyncs them, and never touches the dataset until the end.
//! 3. To publish, it writes `staging/<tmp>/PUBLISH`, a journal of every rename (staged file -> final path) and
//!    every delete (the files the run replaces), fsynced and renamed into place: that rename is the commit
//!    point. It then applies the journal and removes the staging folder.
//! 4. Every run, once it holds the lock, first *recovers*: a staging folder with a `PUBLISH` journal is
//!    applied again (renames of files already moved are skipped, deletes of files already gone too), one
//!    without is deleted. So a crash before the commit point publishes nothing, and a crash after it is
//!    finished by the next run.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The tool's hidden state folder inside the output.
pub const STATE_DIR: &str = ".group-loader";
const LOCK_FILE: &str = "lock";
const STAGING_DIR: &str = "staging";
const JOURNAL: &str = "PUBLISH";

/// The output's lock, held until dropped.
#[derive(Debug)]
pub struct Lock {
    _file: File,
}

/// Takes the output's lock, or fails at once with [`Error::Locked`]. Creates the output folder if needed.
pub fn lock(out: &Path) -> Result<Lock> {
    if out.exists() && !out.is_dir() {
        return Err(Error::Usage(format!(
            "--output {} exists and is not a directory",
            out.display()
        )));
    }
    let state = out.join(STATE_DIR);
    fs::create_dir_all(&state).map_err(Error::io("creating output directory", &state))?;
    let path = state.join(LOCK_FILE);
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(Error::io("opening lock file", &path))?;
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

/// A run's private folder for files not yet published.
#[derive(Debug)]
pub struct Staging {
    dir: PathBuf,
}

impl Staging {
    /// Creates a fresh staging folder (call with the lock held).
    pub fn create(out: &Path) -> Result<Staging> {
        let nanos = chrono::Utc::now().timestamp_nanos_opt().unwrap_or_default();
        let dir = out
            .join(STATE_DIR)
            .join(STAGING_DIR)
            .join(format!("run-{}-{nanos}", std::process::id()));
        fs::create_dir_all(&dir).map_err(Error::io("creating staging directory", &dir))?;
        Ok(Staging { dir })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Removes the staging folder and everything in it (a failed run).
    pub fn discard(self) -> Result<()> {
        fs::remove_dir_all(&self.dir).map_err(Error::io("removing staging directory", &self.dir))
    }
}

/// What publishing a run does, with paths relative to the output folder.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Journal {
    pub run: String,
    /// `[staged, final]` pairs; `final` is replaced if it exists.
    pub renames: Vec<(PathBuf, PathBuf)>,
    /// Files removed after the renames (files this run replaces).
    pub deletes: Vec<PathBuf>,
}

/// Writes `bytes` to `path` atomically: a temporary file beside it, fsynced, renamed over `path`.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(dir).map_err(Error::io("creating directory", dir))?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let mut f = File::create(&tmp).map_err(Error::io("creating", &tmp))?;
    f.write_all(bytes).map_err(Error::io("writing", &tmp))?;
    f.sync_all().map_err(Error::io("syncing", &tmp))?;
    fs::rename(&tmp, path).map_err(Error::io("renaming into place", path))?;
    sync_dir(dir);
    Ok(())
}

/// fsyncs a directory so renames in it survive a power loss. Best effort: not every filesystem allows it.
fn sync_dir(dir: &Path) {
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
}

/// Commits a run: writes the journal (the commit point), applies it, removes the staging folder.
pub fn publish(out: &Path, staging: Staging, journal: &Journal) -> Result<()> {
    let bytes = serde_json::to_vec_pretty(journal).map_err(|source| Error::Json {
        what: "serialising the publish journal".into(),
        source,
    })?;
    write_atomic(&staging.dir.join(JOURNAL), &bytes)?;
    apply(out, journal)?;
    staging.discard()
}

/// Applies a journal. Idempotent: a rename whose source is gone, or a delete whose file is gone, was done.
fn apply(out: &Path, journal: &Journal) -> Result<()> {
    let mut dirs: Vec<PathBuf> = Vec::new();
    for (from, to) in &journal.renames {
        let (from, to) = (out.join(from), out.join(to));
        if !from.exists() {
            continue;
        }
        let parent = to.parent().unwrap_or(out).to_path_buf();
        fs::create_dir_all(&parent).map_err(Error::io("creating directory", &parent))?;
        fs::rename(&from, &to).map_err(Error::io("publishing", &to))?;
        if !dirs.contains(&parent) {
            dirs.push(parent);
        }
    }
    for path in &journal.deletes {
        let path = out.join(path);
        match fs::remove_file(&path) {
            Ok(()) => {
                let parent = path.parent().unwrap_or(out).to_path_buf();
                if !dirs.contains(&parent) {
                    dirs.push(parent);
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io("removing replaced file", &path)(e)),
        }
    }
    for d in &dirs {
        sync_dir(d);
    }
    Ok(())
}

/// Finishes or cleans up what earlier runs left (call with the lock held). Returns how many staging folders
/// were finished (published) and how many were discarded.
pub fn recover(out: &Path) -> Result<(usize, usize)> {
    let staging = out.join(STATE_DIR).join(STAGING_DIR);
    let entries = match fs::read_dir(&staging) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((0, 0)),
        Err(e) => return Err(Error::io("reading staging directory", &staging)(e)),
    };
    let mut dirs: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    dirs.sort();
    let (mut finished, mut discarded) = (0, 0);
    for dir in dirs {
        let journal = fs::read(dir.join(JOURNAL))
            .ok()
            .and_then(|b| serde_json::from_slice::<Journal>(&b).ok());
        match journal {
            Some(j) => {
                apply(out, &j)?;
                finished += 1;
            }
            None => discarded += 1,
        }
        if dir.is_dir() {
            fs::remove_dir_all(&dir).map_err(Error::io("removing staging directory", &dir))?;
        } else {
            fs::remove_file(&dir).map_err(Error::io("removing", &dir))?;
        }
    }
    Ok((finished, discarded))
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
    fn output_that_is_a_file_is_a_usage_error() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("f");
        fs::write(&f, b"x").unwrap();
        assert!(matches!(lock(&f), Err(Error::Usage(_))));
    }

    #[test]
    fn recovery_finishes_committed_runs_and_discards_others() {
        let out = tempfile::tempdir().unwrap();
        let out = out.path();
        // A committed run whose publish crashed after the first rename.
        let committed = Staging::create(out).unwrap();
        fs::write(committed.dir().join("a.partial"), b"A").unwrap();
        fs::write(out.join("old.parquet"), b"old").unwrap();
        let rel = committed.dir().strip_prefix(out).unwrap().to_path_buf();
        let journal = Journal {
            run: "r1".into(),
            renames: vec![
                (rel.join("a.partial"), "groups/a.parquet".into()),
                (rel.join("gone"), "groups/b.parquet".into()),
            ],
            deletes: vec!["old.parquet".into()],
        };
        fs::write(
            committed.dir().join(JOURNAL),
            serde_json::to_vec(&journal).unwrap(),
        )
        .unwrap();
        // An uncommitted run (killed while writing).
        let uncommitted = Staging::create(out).unwrap();
        fs::write(uncommitted.dir().join("x.partial"), b"X").unwrap();

        assert_eq!(recover(out).unwrap(), (1, 1));
        assert_eq!(fs::read(out.join("groups/a.parquet")).unwrap(), b"A");
        assert!(!out.join("groups/b.parquet").exists());
        assert!(!out.join("old.parquet").exists());
        assert_eq!(
            fs::read_dir(out.join(STATE_DIR).join(STAGING_DIR))
                .unwrap()
                .count(),
            0
        );
        // Recovering again is a no-op.
        assert_eq!(recover(out).unwrap(), (0, 0));
    }

    #[test]
    fn write_atomic_replaces() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("sub/r.json");
        write_atomic(&p, b"1").unwrap();
        write_atomic(&p, b"22").unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"22");
        assert_eq!(fs::read_dir(dir.path().join("sub")).unwrap().count(), 1);
    }
}
