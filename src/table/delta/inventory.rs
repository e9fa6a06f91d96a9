//! The inventory of a Delta dataset ([`crate::table::inventory`]): from the tables' logs (file sizes and
//! row counts are the statistics of each Add), the `_last_checkpoint` file, and the newest run records.
//!
//! Why this is its own file: unlike opening the dataset for a run, reading an inventory writes nothing (no
//! probe object, no table created) and needs no permission but to read.

use deltalake::DeltaTable;

use super::log::{delta_err, live_files, open_table, partition_path, register_log_stores};
use super::{Delta, REFLECTS_APP};
use crate::error::{Error, Result};
use crate::layout::{ACCOUNTS_DIR, Format, GROUPS_DIR, PartitionMode, RUNS_DIR};
use crate::options::{LoadOptions, Output};
use crate::store::{Location, block_on};
use crate::table::inventory::{FileInfo, Inventory, Records};

pub fn inventory(opts: &LoadOptions, last_runs: usize) -> Result<Inventory> {
    register_log_stores();
    let root = match &opts.output {
        Output::Url(url) => Location::parse(url)?,
        Output::Local(path) => Location::local(path)?,
    };
    let groups = open_table(&root, GROUPS_DIR)?;
    let accounts = if root.join(&format!("{ACCOUNTS_DIR}/_delta_log")).any()? {
        Some(open_table(&root, ACCOUNTS_DIR)?)
    } else {
        None
    };
    let files = |t: &DeltaTable, name: &str| -> Result<Vec<FileInfo>> {
        Ok(live_files(t, &root.join(name).url)?
            .into_iter()
            .map(|f| FileInfo {
                partition: partition_path(&f.values),
                bytes: f.size.max(0) as u64,
                rows: f.rows.unwrap_or(0) as u64,
            })
            .collect())
    };
    let partition = match groups.snapshot() {
        Ok(s) => match s.metadata().partition_columns().len() {
            0 => PartitionMode::None,
            1 => PartitionMode::Day,
            _ => PartitionMode::Hour,
        },
        Err(_) => PartitionMode::Day,
    };
    let version = groups.version();
    let mut inv = Inventory {
        format: Format::Delta,
        partition,
        version,
        groups: files(&groups, GROUPS_DIR)?,
        accounts: Vec::new(),
        accounts_version: None,
        accounts_reflects: None,
        accounts_kept: false,
        accounts_current: true,
        checkpoint: last_checkpoint(&root)?,
        runs: Vec::new(),
        run_records: 0,
        privacy_dir: Some(root.join(crate::layout::PRIVACY_DIR)),
    };
    if let Some(accounts) = accounts {
        inv.accounts = files(&accounts, ACCOUNTS_DIR)?;
        inv.accounts_version = accounts.version();
        let d = Delta {
            root: root.clone(),
            partition,
            groups,
            accounts,
            base: Default::default(),
        };
        let reflected = d.reflected()?;
        inv.accounts_reflects = reflected;
        inv.accounts_kept = reflected.is_some() || !inv.accounts.is_empty();
        inv.accounts_current = match (reflected, version) {
            (_, None) => true,
            (None, Some(_)) => inv.accounts.is_empty() && inv.groups.is_empty(),
            (Some(r), Some(v)) if r >= v => true,
            // Only reorganisations since: no row `accounts` lacks.
            (Some(r), Some(v)) => d
                .unseen_adds(r + 1, v)?
                .is_some_and(|added| added.is_empty()),
        };
    }
    let (runs, count) = newest_records(&root, last_runs)?;
    inv.runs = runs;
    inv.run_records = count;
    Ok(inv)
}

impl Delta {
    /// The `groups` version `accounts` reflects (its `txn`), if it records one.
    pub(super) fn reflected(&self) -> Result<Option<u64>> {
        let url = self.root.join(ACCOUNTS_DIR).url;
        let Ok(state) = self.accounts.snapshot() else {
            return Ok(None);
        };
        let v =
            block_on(state.transaction_version(self.accounts.log_store().as_ref(), REFLECTS_APP))
                .map_err(delta_err(&url))?;
        Ok(v.filter(|v| *v >= 0).map(|v| v as u64))
    }
}

/// The version of `groups`' latest checkpoint (`_delta_log/_last_checkpoint`).
fn last_checkpoint(root: &Location) -> Result<Option<u64>> {
    let Some(bytes) = root
        .join(&format!("{GROUPS_DIR}/_delta_log/_last_checkpoint"))
        .get_bytes()?
    else {
        return Ok(None);
    };
    let v: serde_json::Value = serde_json::from_slice(&bytes).map_err(|e| Error::DeltaState {
        url: root.join(GROUPS_DIR).url,
        message: format!("unreadable _delta_log/_last_checkpoint: {e}"),
    })?;
    Ok(v["version"].as_u64())
}

/// The newest `n` records of `_runs/` (oldest first), and how many there are.
fn newest_records(root: &Location, n: usize) -> Result<(Records, usize)> {
    let mut names: Vec<String> = root
        .join(RUNS_DIR)
        .list()?
        .into_iter()
        .filter_map(|m| m.location.filename().map(str::to_string))
        .filter(|name| name.ends_with(".json"))
        .collect();
    names.sort();
    let count = names.len();
    let mut runs = Vec::new();
    for name in &names[count.saturating_sub(n)..] {
        if let Some(bytes) = root.join(&format!("{RUNS_DIR}/{name}")).get_bytes()? {
            runs.push((name.clone(), bytes.to_vec()));
        }
    }
    Ok((runs, count))
}
