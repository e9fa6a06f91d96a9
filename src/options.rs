//! The options of a run, whatever spells them: the command line builds them with [`LoadOptions::new`] (which
//! holds its defaults) and changes what was given; tests, the fuzz targets and library users do the same.
//!
//! Why this module exists: every layer reads the options, so they sit at the bottom, with the few values that
//! follow from them alone (the table format an output gets, the longest line a memory limit holds). What a
//! layer derives from them for itself (the writer's budget, the dedupe reach) stays with that layer.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use crate::layout::{Codec, Format, GROUPS_DIR, PartitionMode};

/// Where a run writes, decided once from `--output`: a local path, or an object-store URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// A local folder (or, for a one-file conversion, a file).
    Local(PathBuf),
    /// An object-store URL (`s3://`, `gs://`, `az://`), as given.
    Url(String),
}

impl Output {
    /// `--output` as given: a URL when it starts with an object store's scheme, else a local path.
    pub fn parse(raw: &Path) -> Output {
        match raw.to_str().filter(|s| crate::store::is_url(s)) {
            Some(url) => Output::Url(url.to_string()),
            None => Output::Local(raw.to_path_buf()),
        }
    }

    /// The local path, if the output is one.
    pub fn local(&self) -> Option<&Path> {
        match self {
            Output::Local(p) => Some(p),
            Output::Url(_) => None,
        }
    }

    /// The URL, if the output is one.
    pub fn url(&self) -> Option<&str> {
        match self {
            Output::Url(u) => Some(u),
            Output::Local(_) => None,
        }
    }

    /// True when the output names a Parquet file (`....parquet`): a one-file conversion.
    fn names_a_parquet_file(&self) -> bool {
        let name = match self {
            Output::Local(p) => p.to_string_lossy().into_owned(),
            Output::Url(u) => u.clone(),
        };
        name.to_ascii_lowercase().ends_with(".parquet")
    }
}

impl fmt::Display for Output {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Output::Local(p) => write!(f, "{}", p.display()),
            Output::Url(u) => f.write_str(u),
        }
    }
}

/// `--mode`: what a run does to data already in the output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Add this run's files; other runs' files stay.
    Append,
    /// Replace every file in the partitions this run writes.
    Overwrite,
}

/// Everything a load needs, independent of how the command line spells it.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    pub inputs: Vec<PathBuf>,
    /// Where the run writes: a local folder (or one file), or an object-store URL; parsed once.
    pub output: Output,
    /// `--format`: hive or delta (`None`: hive for a local output, delta for a URL).
    pub format: Option<Format>,
    pub partition: PartitionMode,
    /// `--partition` was given on the command line (else the dataset's recorded partitioning is used, and
    /// `partition` is only the default of a new dataset).
    pub partition_given: bool,
    pub codec: Codec,
    pub mode: Mode,
    pub max_reject_ratio: f64,
    /// Publish nothing (exit 5) when the run would publish fewer rows than this.
    pub min_rows: u64,
    pub rejects: Option<PathBuf>,
    pub report: Option<PathBuf>,
    /// `--metrics`: a Prometheus text file of the run's figures.
    pub metrics: Option<PathBuf>,
    pub memory_limit: u64,
    /// `--vacuum-retention`: files no version newer than this needs are deleted (Delta).
    pub vacuum_retention: Duration,
    /// Deduplicate on messageId at all (`--no-dedupe` turns it off).
    pub dedupe: bool,
    /// How far from an event's partition earlier runs' ids count (`--dedupe-window`; zero: this run only).
    pub dedupe_window: Duration,
    /// Maintain the `accounts` table.
    pub accounts: bool,
    /// Bytes the `accounts` merge may hold: half of `memory_limit` (by then the groups writer has finished).
    /// Smaller means more, smaller buckets.
    pub accounts_budget: u64,
    pub progress: ProgressWhen,
    pub quiet: bool,
    pub max_line_bytes: usize,
    /// Worker threads for parsing and encoding (default: one per core).
    pub threads: Option<usize>,
    /// `--shard K/N`: load only this shard's share of the input files (Delta only).
    pub shard: Option<Shard>,
    /// `--follow-links`: read links of input folders that lead out of them.
    pub follow_links: bool,
    /// `--retry-timeout`: how long requests to object storage are retried in all.
    pub retry_timeout: Duration,
    /// `--truncate-ip`: `context_ip` keeps its network only (recorded in the dataset).
    pub truncate_ip: bool,
    /// `--hash-columns`: columns replaced by a keyed hash (recorded in the dataset); `None` when not given.
    pub hash_columns: Option<Vec<String>>,
    /// `--glue-database`: the Glue database the Delta tables are registered in after the run.
    pub glue_database: Option<String>,
}

/// The most memory one line may take while it is parsed and written, in multiples of its length (measured: a
/// 16 MiB line peaks at about 17.4 times its length over the program's own 20 MB, the chunk read ahead, the
/// one parsed, the row, its builder and the row group being encoded).
pub const LINE_COPIES: u64 = 18;
/// What the program takes whatever the input (code, threads, the I/O runtime): the part of `--memory-limit`
/// no line can have.
pub const FIXED_BYTES: u64 = 32 << 20;

/// The longest line a `--memory-limit` can hold ([`LINE_COPIES`]).
pub fn max_line_bytes_within(memory_limit: u64) -> usize {
    usize::try_from(memory_limit.saturating_sub(FIXED_BYTES) / LINE_COPIES).unwrap_or(usize::MAX)
}

/// `--max-line-bytes` when not given: 16 MiB, or less when the limit cannot hold such lines.
pub fn default_max_line_bytes(memory_limit: u64) -> usize {
    (16usize << 20).min(max_line_bytes_within(memory_limit))
}

/// When to draw a progress bar (`--progress`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ProgressWhen {
    /// Only when stderr is a terminal (never in cron logs).
    Auto,
    Always,
    Never,
}

/// `--shard K/N`: this run is shard `index` of `count` (0 <= index < count).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    pub index: u32,
    pub count: u32,
}

impl FromStr for Shard {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Shard, String> {
        let (k, n) = s
            .split_once('/')
            .ok_or_else(|| format!("expected K/N (shard K of N, 0 <= K < N), got {s:?}"))?;
        let number = |x: &str, what: &str| {
            x.trim()
                .parse::<u32>()
                .map_err(|_| format!("{what} in {s:?} is not a whole number"))
        };
        let (index, count) = (number(k, "K")?, number(n, "N")?);
        if count == 0 {
            return Err(format!("N in {s:?} must be at least 1"));
        }
        if index >= count {
            return Err(format!(
                "K in {s:?} must be below N: shards are numbered 0 to {}",
                count - 1
            ));
        }
        Ok(Shard { index, count })
    }
}

impl fmt::Display for Shard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

/// The defaults of the command line.
pub mod defaults {
    use std::time::Duration;

    pub const MAX_REJECT_RATIO: f64 = 0.05;
    pub const MEMORY_LIMIT: u64 = 1 << 30;
    /// `--dedupe-window` and `--vacuum-retention`: a week.
    pub const WEEK: Duration = Duration::from_secs(7 * 86_400);
    pub const RETRY_TIMEOUT: Duration = Duration::from_secs(180);
}

impl LoadOptions {
    /// The options of `group-loader load INPUTS --output OUTPUT` with every other option at its default.
    pub fn new(inputs: Vec<PathBuf>, output: &Path) -> LoadOptions {
        LoadOptions {
            inputs,
            output: Output::parse(output),
            format: None,
            partition: PartitionMode::Day,
            partition_given: false,
            codec: Codec::Zstd,
            mode: Mode::Append,
            max_reject_ratio: defaults::MAX_REJECT_RATIO,
            min_rows: 0,
            rejects: None,
            report: None,
            metrics: None,
            memory_limit: defaults::MEMORY_LIMIT,
            vacuum_retention: defaults::WEEK,
            dedupe: true,
            dedupe_window: defaults::WEEK,
            accounts: true,
            accounts_budget: defaults::MEMORY_LIMIT / 2,
            progress: ProgressWhen::Auto,
            quiet: false,
            max_line_bytes: default_max_line_bytes(defaults::MEMORY_LIMIT),
            threads: None,
            shard: None,
            follow_links: false,
            retry_timeout: defaults::RETRY_TIMEOUT,
            truncate_ip: false,
            hash_columns: None,
            glue_database: None,
        }
    }

    /// These options with `--memory-limit` set, and with it the `accounts` budget and the default
    /// `--max-line-bytes`.
    pub fn with_memory_limit(self, memory_limit: u64) -> LoadOptions {
        LoadOptions {
            memory_limit,
            accounts_budget: memory_limit / 2,
            max_line_bytes: default_max_line_bytes(memory_limit),
            ..self
        }
    }

    /// The table format: `--format`, or parquet for an output ending in `.parquet`, delta for an object-store
    /// URL and for a local folder holding Delta tables, hive for any other local folder. Decided here only.
    pub fn format(&self) -> Format {
        if let Some(f) = self.format {
            return f;
        }
        if self.output.names_a_parquet_file() {
            return Format::Parquet;
        }
        match &self.output {
            Output::Url(_) => Format::Delta,
            Output::Local(p) if p.join(GROUPS_DIR).join("_delta_log").is_dir() => Format::Delta,
            Output::Local(_) => Format::Hive,
        }
    }
}
