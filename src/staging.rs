//! A run's staging folder, and the names of what it holds there: the files a run writes before it publishes
//! them (the `groups` files, the rejects, the report, the spills, a copy of standard input).
//!
//! Why this module exists: the pipeline writes into the staging folder and the table formats publish out of it,
//! so the folder and its names are vocabulary both layers share; each name is written here once.

use std::path::PathBuf;

use crate::error::{Error, Result};
use crate::layout::GROUPS_DIR;

/// A folder for a run's files before they are published. It is removed when dropped, so a run that fails
/// (a full disk, a store that does not answer) leaves nothing behind; only a killed run leaves its folder,
/// for the next run's recovery.
#[derive(Debug)]
pub struct Staging {
    dir: PathBuf,
}

impl Staging {
    /// A new folder at `dir`, which must not exist yet (its parent is created if missing): a name someone
    /// else created first, or planted as a link, is never written into.
    pub fn create(dir: PathBuf) -> Result<Staging> {
        use std::os::unix::fs::DirBuilderExt;
        if let Some(parent) = dir.parent() {
            std::fs::create_dir_all(parent).map_err(Error::io("creating directory", parent))?;
        }
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&dir)
            .map_err(Error::io("creating staging directory", &dir))?;
        Ok(Staging { dir })
    }

    pub fn dir(&self) -> &std::path::Path {
        &self.dir
    }

    /// Removes the folder and everything in it.
    pub fn discard(self) -> Result<()> {
        std::fs::remove_dir_all(&self.dir)
            .map_err(Error::io("removing staging directory", &self.dir))
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A unique name for a staging folder (process and time).
pub fn staging_name() -> String {
    let nanos = chrono::Utc::now().timestamp_nanos_opt().unwrap_or_default();
    format!("run-{}-{nanos}", std::process::id())
}

impl Staging {
    /// The run's `groups` files, by partition (`groups/dt=.../part-NNNNN.parquet.partial`).
    pub fn groups(&self) -> PathBuf {
        self.dir.join(GROUPS_DIR)
    }

    /// The run's rejects file (added to when a Delta commit drops duplicates of concurrent commits).
    pub fn rejects(&self) -> PathBuf {
        self.dir.join("rejects.ndjson")
    }

    /// The run's report, as a hive version publishes it.
    pub fn report(&self) -> PathBuf {
        self.dir.join("report.json")
    }

    /// A `groups` file of no rows (a one-file conversion of an input without a row).
    pub fn empty_groups_file(&self) -> PathBuf {
        self.dir.join("groups-empty.parquet")
    }
}
