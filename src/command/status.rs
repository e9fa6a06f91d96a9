//! `group-loader status`: what a dataset holds and how healthy it is, from metadata only, as text for a person
//! or JSON for a script (and `--metrics` for monitoring).
//!
//! Why this module exists: a dataset kept for years needs a look that is cheap and safe to take at any time
//! (while a load runs, from a read-only role): files and rows per table and partition, small files waiting
//! for `compact`, the last runs and how they ended, whether `accounts` has caught up, and what the next
//! run's dedupe window will hold. The formats hand over their metadata ([`crate::table::inventory`]); this
//! module owns the figures made from it.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Serialize;

use crate::error::{Error, Result};
use crate::layout::{Format, PartitionMode};
use crate::metrics::Metrics;
use crate::options::LoadOptions;
use crate::report::{human_bytes, thousands};
use crate::table::inventory::{FileInfo, Inventory};

/// How `status` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum StatusFormat {
    Text,
    Json,
}

#[derive(Debug, Clone)]
pub struct StatusOptions {
    pub output: PathBuf,
    pub format: StatusFormat,
    /// Files under half of this are small (what `compact --target-file-size` rewrites).
    pub target_bytes: u64,
    /// The `--dedupe-window` of the loads, for what the next run will hold.
    pub dedupe_window: std::time::Duration,
    /// How many of the newest records of `_runs/` to list.
    pub runs: usize,
    pub metrics: Option<PathBuf>,
    pub retry_timeout: std::time::Duration,
}

/// One table's totals.
#[derive(Debug, Clone, Default, Serialize)]
pub struct TableStatus {
    pub rows: u64,
    pub files: u64,
    pub bytes: u64,
    pub small_files: u64,
}

/// One partition of `groups`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PartitionStatus {
    pub partition: String,
    pub rows: u64,
    pub files: u64,
    pub bytes: u64,
    pub small_files: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Tables {
    pub groups: TableStatus,
    pub accounts: TableStatus,
}

/// What the accounts table reflects.
#[derive(Debug, Clone, Serialize)]
pub struct AccountsState {
    /// A snapshot is kept (not with `--no-accounts`).
    pub kept: bool,
    /// It holds every row of the latest `groups` (else the next load or forget brings it up to date); null
    /// when no snapshot is kept.
    pub up_to_date: Option<bool>,
    /// Delta: its version, and the `groups` version it reflects.
    pub version: Option<u64>,
    pub reflects_groups_version: Option<u64>,
}

/// What the next load's dedupe window will read, for a run of data as new as the newest partition.
#[derive(Debug, Clone, Serialize)]
pub struct DedupeState {
    pub window: String,
    pub partitions: u64,
    pub ids: u64,
    /// What holding those ids costs the run (counted against `--memory-limit`).
    pub memory_bytes: u64,
}

/// One of the last runs (a load, a deletion, a compaction), from its record.
#[derive(Debug, Clone, Serialize)]
pub struct RunStatus {
    pub record: String,
    pub command: String,
    pub started_at: Option<String>,
    /// `published`, `already_loaded`, `min_rows`, `reject_ratio`, `commit_pending`, or `done`.
    pub outcome: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rows_written: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duplicates: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rejected: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rows_removed: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub files_rewritten: Option<u64>,
}

/// The status of a dataset, as `--format json` prints it.
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    pub output: String,
    pub format: &'static str,
    pub partitioning: &'static str,
    /// hive: the version readers see; Delta: the `groups` version.
    pub version: Option<u64>,
    pub tables: Tables,
    pub partitions: Vec<PartitionStatus>,
    pub oldest_partition: Option<String>,
    pub newest_partition: Option<String>,
    /// The most files any partition has.
    pub max_files_per_partition: u64,
    pub small_file_bytes: u64,
    pub accounts: AccountsState,
    pub dedupe: DedupeState,
    /// Ids a deletion request suppressed (`forget --suppress`).
    pub suppressed_ids: u64,
    /// Delta: the version of the latest checkpoint of `groups`, and the commits after it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub checkpoint: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub commits_since_checkpoint: Option<u64>,
    pub run_records: usize,
    pub last_runs: Vec<RunStatus>,
    #[serde(skip)]
    pub mode: PartitionMode,
}

/// Prints the status of the dataset (with `--metrics`, writes them too, also when it fails).
pub fn status(opts: &StatusOptions) -> Result<Status> {
    let started = std::time::Instant::now();
    let result = gather(opts);
    if let Some(path) = &opts.metrics {
        let mut m = Metrics::new("status", &opts.output.to_string_lossy());
        if let Ok(s) = &result {
            fill(&mut m, s);
        }
        m.gauge(
            "duration_seconds",
            "How long the command ran.",
            started.elapsed().as_secs_f64(),
        );
        m.write(path, result.as_ref().err().map_or(0, Error::exit_code))?;
    }
    let status = result?;
    match opts.format {
        StatusFormat::Json => println!(
            "{}",
            serde_json::to_string_pretty(&status).map_err(|e| Error::Internal(e.to_string()))?
        ),
        StatusFormat::Text => print!("{}", text(&status)),
    }
    Ok(status)
}

fn gather(opts: &StatusOptions) -> Result<Status> {
    crate::store::set_retry_timeout(opts.retry_timeout);
    let load = LoadOptions::new(Vec::new(), &opts.output);
    super::check_dataset(&load, "status")?;
    let inv = crate::table::inventory(&load, opts.runs)?;
    let suppressed = match &inv.privacy_dir {
        Some(dir) => crate::privacy::Suppressed::read(dir)?.ids as u64,
        None => 0,
    };
    Ok(figures(&load.output.to_string(), &inv, opts, suppressed))
}

/// The figures of an inventory.
fn figures(output: &str, inv: &Inventory, opts: &StatusOptions, suppressed: u64) -> Status {
    let small = opts.target_bytes / 2;
    let totals = |files: &[FileInfo]| TableStatus {
        rows: files.iter().map(|f| f.rows).sum(),
        files: files.len() as u64,
        bytes: files.iter().map(|f| f.bytes).sum(),
        small_files: files
            .iter()
            .filter(|f| crate::compact::is_small(f.bytes, opts.target_bytes))
            .count() as u64,
    };
    let mut by_partition: BTreeMap<&str, PartitionStatus> = BTreeMap::new();
    for f in &inv.groups {
        let p = by_partition
            .entry(&f.partition)
            .or_insert_with(|| PartitionStatus {
                partition: f.partition.clone(),
                ..PartitionStatus::default()
            });
        p.rows += f.rows;
        p.files += 1;
        p.bytes += f.bytes;
        p.small_files += u64::from(crate::compact::is_small(f.bytes, opts.target_bytes));
    }
    let partitions: Vec<PartitionStatus> = by_partition.into_values().collect();
    let commits_since_checkpoint = match (inv.format, inv.version) {
        (Format::Delta, Some(v)) => Some(inv.checkpoint.map_or(v + 1, |c| v.saturating_sub(c))),
        _ => None,
    };
    Status {
        output: output.to_string(),
        format: match inv.format {
            Format::Hive => "hive",
            _ => "delta",
        },
        partitioning: match inv.partition {
            PartitionMode::Day => "day",
            PartitionMode::Hour => "hour",
            PartitionMode::None => "none",
        },
        version: inv.version,
        tables: Tables {
            groups: totals(&inv.groups),
            accounts: totals(&inv.accounts),
        },
        oldest_partition: partitions.first().map(|p| p.partition.clone()),
        newest_partition: partitions.last().map(|p| p.partition.clone()),
        max_files_per_partition: partitions.iter().map(|p| p.files).max().unwrap_or(0),
        small_file_bytes: small,
        accounts: AccountsState {
            kept: inv.accounts_kept,
            up_to_date: inv.accounts_kept.then_some(inv.accounts_current),
            version: inv.accounts_version,
            reflects_groups_version: inv.accounts_reflects,
        },
        dedupe: dedupe(&partitions, inv.partition, opts.dedupe_window),
        partitions,
        suppressed_ids: suppressed,
        checkpoint: inv.checkpoint,
        commits_since_checkpoint,
        run_records: inv.run_records,
        last_runs: inv
            .runs
            .iter()
            .filter_map(|(name, bytes)| run_status(name, bytes))
            .collect(),
        mode: inv.partition,
    }
}

/// The ids a run as new as the newest partition reads for its dedupe window: those of the partitions that
/// start within the window before the newest one (with `--partition none`, all of them).
fn dedupe(
    partitions: &[PartitionStatus],
    mode: PartitionMode,
    window: std::time::Duration,
) -> DedupeState {
    let window_micros = i64::try_from(window.as_micros()).unwrap_or(i64::MAX);
    let start = |p: &PartitionStatus| {
        let bucket = mode.bucket_of_path(&p.partition)?;
        Some(bucket.saturating_mul(mode.bucket_micros().unwrap_or(0)))
    };
    let newest = partitions.iter().filter_map(start).max();
    let within: Vec<&PartitionStatus> = partitions
        .iter()
        .filter(|p| match (start(p), newest) {
            _ if mode == PartitionMode::None => true,
            (Some(s), Some(n)) => s >= n.saturating_sub(window_micros),
            _ => false,
        })
        .collect();
    let ids: u64 = within.iter().map(|p| p.rows).sum();
    DedupeState {
        window: humantime::format_duration(window).to_string(),
        partitions: within.len() as u64,
        ids,
        memory_bytes: ids * crate::dedupe::BYTES_PER_EARLIER_ID,
    }
}

/// A line of the last runs, from a record of `_runs/` (a record that is not JSON is left out).
fn run_status(name: &str, bytes: &[u8]) -> Option<RunStatus> {
    let r: serde_json::Value = serde_json::from_slice(bytes).ok()?;
    let u = |v: &serde_json::Value| v.as_u64();
    let command = r["command"].as_str().unwrap_or("load").to_string();
    let mut s = RunStatus {
        record: name.to_string(),
        started_at: r["started_at"].as_str().map(str::to_string),
        outcome: "done".into(),
        rows_written: None,
        duplicates: None,
        rejected: None,
        rows_removed: None,
        files_rewritten: None,
        command,
    };
    match s.command.as_str() {
        "load" => {
            s.outcome = match (r["published"].as_bool(), r["not_published"].as_str()) {
                (Some(true), _) => "published".into(),
                (_, Some(why)) => why.to_string(),
                _ => "not_published".into(),
            };
            s.rows_written = u(&r["rows_written"]);
            let dups = u(&r["duplicates"]["this_run"]).unwrap_or(0)
                + u(&r["duplicates"]["earlier_runs"]).unwrap_or(0);
            s.duplicates = Some(dups);
            let rejected: u64 = r["rejected"]
                .as_object()
                .map(|m| m.values().filter_map(u).sum())
                .unwrap_or(0);
            s.rejected = Some(rejected.saturating_sub(dups));
        }
        "forget" => s.rows_removed = u(&r["rows_removed"]),
        "compact" => s.files_rewritten = u(&r["files_rewritten"]),
        _ => {}
    }
    Some(s)
}

/// The status for a person.
fn text(s: &Status) -> String {
    use std::fmt::Write as _;
    let mut t = String::new();
    let _ = writeln!(
        t,
        "{} ({} dataset, partitioned by {}, version {})",
        s.output,
        s.format,
        s.partitioning,
        s.version.map_or("none".into(), |v| v.to_string())
    );
    for (name, table) in [
        ("groups", &s.tables.groups),
        ("accounts", &s.tables.accounts),
    ] {
        let _ = writeln!(
            t,
            "  {name:<9} {:>14} rows  {:>7} files  {:>10}  {} small",
            thousands(table.rows),
            table.files,
            human_bytes(table.bytes),
            table.small_files
        );
    }
    let _ = writeln!(
        t,
        "  partitions: {} ({} to {}), at most {} files in one; small files are under {}",
        s.partitions.len(),
        s.oldest_partition.as_deref().unwrap_or("-"),
        s.newest_partition.as_deref().unwrap_or("-"),
        s.max_files_per_partition,
        human_bytes(s.small_file_bytes)
    );
    let crowded: Vec<&PartitionStatus> =
        s.partitions.iter().filter(|p| p.small_files >= 2).collect();
    if !crowded.is_empty() {
        let _ = writeln!(
            t,
            "  {} partition(s) with two or more small files: `group-loader compact --output {}` merges them",
            crowded.len(),
            s.output
        );
    }
    let accounts = match s.accounts.up_to_date {
        None => "not kept (loads run with --no-accounts, or none has built it yet)".to_string(),
        Some(true) => "up to date with groups".to_string(),
        Some(false) => format!(
            "behind groups (reflects version {}); the next load brings it up to date",
            s.accounts
                .reflects_groups_version
                .map_or("none".into(), |v| v.to_string())
        ),
    };
    let _ = writeln!(t, "  accounts: {accounts}");
    let _ = writeln!(
        t,
        "  dedupe window {}: the next run reads {} ids of {} partition(s), about {}",
        s.dedupe.window,
        thousands(s.dedupe.ids),
        s.dedupe.partitions,
        human_bytes(s.dedupe.memory_bytes)
    );
    if s.suppressed_ids > 0 {
        let _ = writeln!(t, "  suppressed ids: {}", s.suppressed_ids);
    }
    if let Some(n) = s.commits_since_checkpoint {
        let _ = writeln!(
            t,
            "  log: checkpoint at {}, {n} commit(s) after it",
            s.checkpoint.map_or("none".into(), |c| c.to_string())
        );
    }
    t.push_str(&runs_text(s));
    t
}

/// The last runs, a line each.
fn runs_text(s: &Status) -> String {
    use std::fmt::Write as _;
    let mut t = String::new();
    let _ = writeln!(t, "  last runs ({} records in _runs/):", s.run_records);
    for r in &s.last_runs {
        let mut figures = Vec::new();
        let mut add = |label: &str, v: Option<u64>| {
            if let Some(v) = v {
                figures.push(format!("{} {label}", thousands(v)));
            }
        };
        add("rows", r.rows_written);
        add("duplicates", r.duplicates);
        add("rejected", r.rejected);
        add("rows removed", r.rows_removed);
        add("files rewritten", r.files_rewritten);
        let _ = writeln!(
            t,
            "    {}  {:<7}  {:<14}  {}",
            r.started_at.as_deref().unwrap_or("?"),
            r.command,
            r.outcome,
            figures.join(", ")
        );
    }
    t
}

/// The status as metrics: what a dashboard plots and an alert watches (files per partition growing, the
/// newest partition getting old, `accounts` behind).
fn fill(m: &mut Metrics, s: &Status) {
    for (name, table) in [
        ("groups", &s.tables.groups),
        ("accounts", &s.tables.accounts),
    ] {
        for (metric, help, v) in [
            ("dataset_rows", "Rows of the table.", table.rows),
            ("dataset_files", "Data files of the table.", table.files),
            (
                "dataset_bytes",
                "Bytes of the table's data files.",
                table.bytes,
            ),
            (
                "dataset_small_files",
                "Data files under half the target file size.",
                table.small_files,
            ),
        ] {
            m.labelled(metric, help, &[("table", name)], v as f64);
        }
    }
    m.gauge(
        "dataset_partitions",
        "Partitions of groups.",
        s.partitions.len() as f64,
    );
    m.gauge(
        "dataset_max_files_per_partition",
        "The most files one partition of groups has.",
        s.max_files_per_partition as f64,
    );
    if let Some(newest) = &s.newest_partition
        && let Some(bucket) = s.mode.bucket_of_path(newest)
    {
        let micros = bucket.saturating_mul(s.mode.bucket_micros().unwrap_or(0));
        m.gauge(
            "dataset_newest_partition_timestamp_seconds",
            "Start of the newest partition of groups (Unix time).",
            micros as f64 / 1e6,
        );
    }
    if let Some(current) = s.accounts.up_to_date {
        m.gauge(
            "dataset_accounts_up_to_date",
            "1 when accounts holds every row of the latest groups (absent when none is kept).",
            f64::from(u8::from(current)),
        );
    }
    m.gauge(
        "dataset_dedupe_window_ids",
        "Ids the next run's dedupe window reads.",
        s.dedupe.ids as f64,
    );
    m.gauge(
        "dataset_suppressed_ids",
        "Ids deletion requests suppressed.",
        s.suppressed_ids as f64,
    );
    if let Some(v) = s.version {
        m.gauge(
            "dataset_version",
            "The dataset's (groups') version.",
            v as f64,
        );
    }
}
