//! What a dataset holds, read from metadata only: each table's files with their partition, bytes and rows
//! (Parquet footers for hive, the Delta log's statistics), versions, and the latest records of `_runs/`.
//!
//! Why this module exists: `status` (and monitoring through it) must describe a dataset without taking its
//! lock, writing anything, or scanning a row; each format knows where that is written down, and hands it over
//! in this one shape.

use crate::layout::{Format, PartitionMode};

/// Records of `_runs/`: (file name, bytes), oldest first.
pub type Records = Vec<(String, Vec<u8>)>;

/// A data file of a table.
#[derive(Debug, Clone)]
pub struct FileInfo {
    /// `dt=...[/hr=..]` (empty for an unpartitioned table).
    pub partition: String,
    pub bytes: u64,
    pub rows: u64,
}

/// A dataset as its metadata describes it.
#[derive(Debug, Clone)]
pub struct Inventory {
    pub format: Format,
    pub partition: PartitionMode,
    /// hive: the version readers see; Delta: the `groups` table's version.
    pub version: Option<u64>,
    pub groups: Vec<FileInfo>,
    pub accounts: Vec<FileInfo>,
    /// Delta: the `accounts` version, and the `groups` version it reflects.
    pub accounts_version: Option<u64>,
    pub accounts_reflects: Option<u64>,
    /// An `accounts` snapshot is kept (it has files, or records the `groups` version it reflects): not with
    /// `--no-accounts`.
    pub accounts_kept: bool,
    /// `accounts` holds every row of the latest `groups` (commits since that only moved rows between files,
    /// compactions, do not make it stale).
    pub accounts_current: bool,
    /// Delta: the `groups` version of its latest checkpoint.
    pub checkpoint: Option<u64>,
    /// The newest records of `_runs/` (name, bytes), oldest first.
    pub runs: Records,
    /// Records in `_runs/` in all.
    pub run_records: usize,
    /// Where the privacy records are kept.
    pub privacy_dir: Option<crate::store::Location>,
}
