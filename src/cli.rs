//! The command line: clap-derive types whose doc comments are the `--help` text.
//!
//! Why this module exists: the CLI is a contract with cron jobs and scripts (its option names are a promise to
//! them), so it is declared in one place and translated into library options ([`LoadOptions`]) here; the rest
//! of the library never sees clap.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use crate::command::schema::{self, SchemaFormat};
use crate::command::status::StatusFormat;
use crate::error::{Error, Result, exit};
use crate::layout::{Codec, PartitionMode};
use crate::options::{LoadOptions, Mode, ProgressWhen};
use crate::schema::Table;

/// Load Segment-style Group calls (NDJSON, optionally gzip/zstd) into Parquet: a Hive-partitioned folder, Delta
/// Lake tables (local or on S3, GCS, Azure), or one file.
#[derive(Debug, Parser)]
#[command(name = "group-loader", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Load Group calls into OUTPUT/groups/ (the main job).
    #[command(after_long_help = EXIT_CODES, after_help = EXIT_CODES)]
    Load(LoadArgs),
    /// Remove every row of some users or groups from a dataset (a deletion request), rebuild their accounts
    /// from what remains, and remove the rejected lines that hold them.
    #[command(after_long_help = FORGET_EXIT_CODES, after_help = FORGET_EXIT_CODES)]
    Forget(ForgetArgs),
    /// Rewrite the small files of each groups partition into files near --target-file-size (rows and their
    /// order kept), so that readers stay fast; Delta commits it with dataChange false, as OPTIMIZE does.
    #[command(after_long_help = COMPACT_EXIT_CODES, after_help = COMPACT_EXIT_CODES)]
    Compact(CompactArgs),
    /// Show what a dataset holds: tables, partitions, files, rows, small files, the last runs, whether
    /// accounts is up to date. From metadata only: no lock taken, nothing written, no row read.
    Status(StatusArgs),
    /// Print the output schema of the groups (or accounts) table.
    Schema(SchemaArgs),
}

#[derive(Debug, Args)]
pub struct CompactArgs {
    /// The dataset: the --output of the loads (a local folder, or an object-store URL).
    #[arg(short, long, value_name = "DIR|URL")]
    pub output: PathBuf,

    /// Files are rewritten into files of about this size; files under half of it are small, and runs of two
    /// or more small files side by side are rewritten.
    #[arg(long, value_name = "SIZE", default_value = "256MiB", value_parser = parse_size)]
    pub target_file_size: u64,

    /// Only partitions of this day or later (YYYY-MM-DD).
    #[arg(long, value_name = "DATE")]
    pub from: Option<chrono::NaiveDate>,

    /// Only partitions of this day or earlier (YYYY-MM-DD).
    #[arg(long, value_name = "DATE")]
    pub to: Option<chrono::NaiveDate>,

    /// Say what would be rewritten, change nothing.
    #[arg(long)]
    pub dry_run: bool,

    /// Delta: files that no version newer than this needs are deleted afterwards (as loads do).
    #[arg(long, value_name = "DURATION", default_value = "7d", value_parser = crate::dedupe::parse_duration)]
    pub vacuum_retention: std::time::Duration,

    /// Parquet compression codec of the rewritten files.
    #[arg(long, value_enum, default_value_t = Codec::Zstd)]
    pub compression: Codec,

    /// Also write the compaction's record (JSON) to PATH (- for standard output).
    #[arg(long, value_name = "PATH")]
    pub report: Option<PathBuf>,

    /// Also write the run's figures to PATH as a Prometheus text file (node_exporter's textfile
    /// collector), atomically, also when the command fails.
    #[arg(long, value_name = "PATH")]
    pub metrics: Option<PathBuf>,

    /// Worker threads (default: all cores).
    #[arg(long, value_name = "N")]
    pub threads: Option<usize>,

    /// Memory budget (as for load).
    #[arg(long, value_name = "SIZE", default_value = "1GiB", value_parser = parse_memory_limit)]
    pub memory_limit: u64,

    /// How long a request to object storage is retried before the command fails.
    #[arg(long, value_name = "DURATION", default_value = "3m", value_parser = crate::dedupe::parse_duration)]
    pub retry_timeout: std::time::Duration,

    /// No summary on stderr (errors are still printed).
    #[arg(short, long)]
    pub quiet: bool,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// The dataset: the --output of the loads (a local folder, or an object-store URL).
    #[arg(short, long, value_name = "DIR|URL")]
    pub output: PathBuf,

    /// text for a person, json for a script.
    #[arg(long, value_enum, default_value_t = StatusFormat::Text)]
    pub format: StatusFormat,

    /// Files under half of this count as small (compact's --target-file-size).
    #[arg(long, value_name = "SIZE", default_value = "256MiB", value_parser = parse_size)]
    pub target_file_size: u64,

    /// The loads' --dedupe-window, for what the next run will hold.
    #[arg(long, value_name = "DURATION", default_value = "7d", value_parser = crate::dedupe::parse_duration)]
    pub dedupe_window: std::time::Duration,

    /// How many of the newest records of _runs/ to list.
    #[arg(long, value_name = "N", default_value_t = 10)]
    pub runs: usize,

    /// Also write the run's figures to PATH as a Prometheus text file (node_exporter's textfile
    /// collector), atomically, also when the command fails.
    #[arg(long, value_name = "PATH")]
    pub metrics: Option<PathBuf>,

    /// How long a request to object storage is retried before the command fails.
    #[arg(long, value_name = "DURATION", default_value = "3m", value_parser = crate::dedupe::parse_duration)]
    pub retry_timeout: std::time::Duration,
}

impl CompactArgs {
    fn options(&self) -> crate::command::compact::CompactOptions {
        crate::command::compact::CompactOptions {
            output: self.output.clone(),
            target_bytes: self.target_file_size,
            range: crate::compact::DateRange {
                from: self.from,
                to: self.to,
            },
            dry_run: self.dry_run,
            quiet: self.quiet,
            report: self.report.clone(),
            metrics: self.metrics.clone(),
            threads: self.threads,
            memory_limit: self.memory_limit,
            codec: self.compression,
            vacuum_retention: self.vacuum_retention,
            retry_timeout: self.retry_timeout,
        }
    }
}

impl StatusArgs {
    fn options(&self) -> crate::command::status::StatusOptions {
        crate::command::status::StatusOptions {
            output: self.output.clone(),
            format: self.format,
            target_bytes: self.target_file_size,
            dedupe_window: self.dedupe_window,
            runs: self.runs,
            metrics: self.metrics.clone(),
            retry_timeout: self.retry_timeout,
        }
    }
}

#[derive(Debug, Args)]
pub struct ForgetArgs {
    /// The dataset: the --output of the loads (a local folder, or an object-store URL).
    #[arg(short, long, value_name = "DIR|URL")]
    pub output: PathBuf,

    /// A userId whose rows go (repeatable).
    #[arg(long, value_name = "ID")]
    pub user_id: Vec<String>,

    /// An anonymousId whose rows go (repeatable).
    #[arg(long, value_name = "ID")]
    pub anonymous_id: Vec<String>,

    /// A groupId whose rows go, with its accounts row (repeatable).
    #[arg(long, value_name = "ID")]
    pub group_id: Vec<String>,

    /// A file of ids, one kind,id a line: user_id,u-123 / anonymous_id,... / group_id,... (a header line
    /// kind,id, CSV quoting, blank lines and # comments allowed).
    #[arg(long, value_name = "FILE")]
    pub ids_file: Vec<PathBuf>,

    /// Also record the ids (salted hashes, never in clear) in the dataset, so that later loads skip their
    /// events (counted as suppressed): a re-delivered export cannot bring them back.
    #[arg(long)]
    pub suppress: bool,

    /// Also remove, now, what still holds the removed data: the previous version of a hive dataset; the
    /// files Delta keeps for time travel and the log entries that describe them (time travel to earlier
    /// versions ends here).
    #[arg(long)]
    pub purge: bool,

    /// Also write the request's record (JSON, counts only) to PATH (- for standard output).
    #[arg(long, value_name = "PATH")]
    pub report: Option<PathBuf>,

    /// Also write the run's figures to PATH as a Prometheus text file (node_exporter's textfile
    /// collector), atomically, also when the command fails.
    #[arg(long, value_name = "PATH")]
    pub metrics: Option<PathBuf>,

    /// Parquet compression codec of the rewritten files.
    #[arg(long, value_enum, default_value_t = Codec::Zstd)]
    pub compression: Codec,

    /// Worker threads (default: all cores).
    #[arg(long, value_name = "N")]
    pub threads: Option<usize>,

    /// Memory budget (as for load).
    #[arg(long, value_name = "SIZE", default_value = "1GiB", value_parser = parse_memory_limit)]
    pub memory_limit: u64,

    /// How long a request to object storage is retried before the command fails.
    #[arg(long, value_name = "DURATION", default_value = "3m", value_parser = crate::dedupe::parse_duration)]
    pub retry_timeout: std::time::Duration,

    /// No summary on stderr (errors are still printed).
    #[arg(short, long)]
    pub quiet: bool,
}

impl ForgetArgs {
    fn options(&self) -> Result<crate::command::forget::ForgetOptions> {
        let mut ids = crate::privacy::Ids::default();
        for (kind, values, flag) in [
            (crate::privacy::IdKind::User, &self.user_id, "--user-id"),
            (
                crate::privacy::IdKind::Anonymous,
                &self.anonymous_id,
                "--anonymous-id",
            ),
            (crate::privacy::IdKind::Group, &self.group_id, "--group-id"),
        ] {
            for v in values {
                ids.add(kind, v, &|| flag.to_string())?;
            }
        }
        for f in &self.ids_file {
            ids.read_file(f)?;
        }
        Ok(crate::command::forget::ForgetOptions {
            output: self.output.clone(),
            ids,
            suppress: self.suppress,
            purge: self.purge,
            quiet: self.quiet,
            report: self.report.clone(),
            metrics: self.metrics.clone(),
            threads: self.threads,
            memory_limit: self.memory_limit,
            codec: self.compression,
            retry_timeout: self.retry_timeout,
        })
    }
}

#[derive(Debug, Args)]
pub struct LoadArgs {
    /// Input files or directories, object-store URLs of objects or prefixes (s3://, gs://, az://), or - for
    /// stdin. Directories and prefixes are walked for *.json, *.jsonl, *.ndjson (optionally .gz/.zst) and any
    /// *.gz or *.zst (Segment's S3 export names its files <epoch-ms>.<uuid>.gz).
    #[arg(required = true, value_name = "INPUT")]
    pub inputs: Vec<PathBuf>,

    /// The dataset: a local folder (created if missing), or an object-store URL (s3://, gs://, az://).
    #[arg(short, long, value_name = "DIR|URL")]
    pub output: PathBuf,

    /// Partition folders, by the UTC time of receivedAt (or timestamp). Default: the dataset's own (recorded by
    /// its first run), or day for a new dataset.
    #[arg(long, value_enum)]
    pub partition: Option<PartitionMode>,

    /// Table format: hive (a Hive-partitioned folder; local outputs only), delta (Delta Lake tables), or
    /// parquet (one Parquet file of the groups table, no dataset: an ad hoc conversion). Default: parquet for
    /// an output ending in .parquet, delta for an object-store URL (and a local folder of Delta tables), hive
    /// for a local folder.
    #[arg(long, value_enum)]
    pub format: Option<crate::layout::Format>,

    /// Delta: files that no table version newer than this needs are deleted by later runs.
    #[arg(long, value_name = "DURATION", default_value = "7d", value_parser = crate::dedupe::parse_duration)]
    pub vacuum_retention: std::time::Duration,

    /// How long a request to object storage is retried before the run fails.
    #[arg(long, value_name = "DURATION", default_value = "3m", value_parser = crate::dedupe::parse_duration)]
    pub retry_timeout: std::time::Duration,

    /// Load only shard K of N (0 <= K < N): every shard lists the same inputs and takes a deterministic,
    /// size-balanced share of the files (largest first, each to the shard with the fewest bytes so far). Shards
    /// run at the same time into one --format delta dataset, each a complete run; e.g. in a Kubernetes Indexed
    /// Job: --shard $(JOB_COMPLETION_INDEX)/4.
    #[arg(long, value_name = "K/N")]
    pub shard: Option<crate::options::Shard>,

    /// Parquet compression codec.
    #[arg(long, value_enum, default_value_t = Codec::Zstd)]
    pub compression: Codec,

    /// append: add this run's rows; other runs' stay (a re-run of the same inputs has nothing to do, and an
    /// event already loaded is a duplicate). overwrite: replace every file of the partitions this run writes,
    /// to re-process a day; a single late event of a day replaces that whole day.
    #[arg(long, value_enum, default_value_t = Mode::Append)]
    pub mode: Mode,

    /// Fail (exit 3, publish nothing) when rejected lines exceed this share of the non-blank, non-skipped
    /// lines. Duplicates do not count.
    #[arg(long, value_name = "F", default_value_t = 0.05)]
    pub max_reject_ratio: f64,

    /// Publish nothing and exit 5 when the run would load fewer rows than N (a nightly export that loads
    /// nothing is usually broken, not a quiet day).
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub min_rows: u64,

    /// Also copy the rejects file (one JSON object per rejected line) to PATH.
    #[arg(long, value_name = "PATH")]
    pub rejects: Option<PathBuf>,

    /// Also write the JSON run report to PATH.
    #[arg(long, value_name = "PATH")]
    pub report: Option<PathBuf>,

    /// Also write the run's figures to PATH as a Prometheus text file (node_exporter's textfile
    /// collector), atomically, also when the command fails.
    #[arg(long, value_name = "PATH")]
    pub metrics: Option<PathBuf>,

    /// Worker threads (default: all cores).
    #[arg(long, value_name = "N")]
    pub threads: Option<usize>,

    /// Memory budget, at least 256MiB, e.g. 512MiB, 2G (K/M/G and KiB/MiB/GiB are powers of 1024; KB/MB/GB
    /// of 1000). Larger budgets give larger row groups when many partitions are written at once.
    #[arg(long, value_name = "SIZE", default_value = "1GiB", value_parser = parse_memory_limit)]
    pub memory_limit: u64,

    /// Longest line accepted, in bytes (longer lines are rejected as line_too_long, never held whole).
    /// Default: 16MiB, or less when --memory-limit cannot hold lines that long (a line takes up to about 18
    /// times its length while it is parsed and written: a 256MiB limit holds lines of 12MiB).
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub max_line_bytes: Option<u64>,

    /// Keep every event, even when its messageId was already loaded (by this run or an earlier one).
    #[arg(long)]
    pub no_dedupe: bool,

    /// An event is a duplicate when its messageId is already loaded in a partition within this duration of
    /// its own (7d: the 7 days before and after), or earlier in this run. 0: within this run only.
    #[arg(long, value_name = "DURATION", default_value = "7d", value_parser = crate::dedupe::parse_duration)]
    pub dedupe_window: std::time::Duration,

    /// Do not maintain OUTPUT/accounts/ (the latest state of each group). The snapshot is removed, so it is
    /// never stale; the next run without this flag rebuilds it from every groups file.
    #[arg(long)]
    pub no_accounts: bool,

    /// Also read the files that links in input folders point to outside those folders (by default such
    /// links are skipped, with a warning: a folder of exports should not read /etc/shadow through a link).
    #[arg(long)]
    pub follow_links: bool,

    /// Pseudonymise context_ip: keep its network only (IPv4 a.b.c.0, IPv6 /48). Recorded in the dataset: every
    /// later run does the same.
    #[arg(long)]
    pub truncate_ip: bool,

    /// Pseudonymise these text columns (e.g. user_id,anonymous_id,email): each value is replaced by its keyed
    /// hash (HMAC-SHA-256, hex) under the key in GROUP_LOADER_HASH_KEY (never given on the command line).
    /// Recorded in the dataset: later runs hash the same columns with the same key, or are refused.
    #[arg(long, value_name = "COLUMNS", value_delimiter = ',')]
    pub hash_columns: Option<Vec<String>>,

    /// After the run, register the Delta tables (groups, accounts) in this AWS Glue database, creating it and
    /// them if missing, so that Athena sees the data with no DDL step. Delta tables on s3:// only; uses the
    /// S3 output's credentials and region (AWS_ENDPOINT_URL_GLUE for another endpoint).
    #[arg(long, value_name = "NAME")]
    pub glue_database: Option<String>,

    /// Progress bar on stderr: auto draws it only when stderr is a terminal.
    #[arg(long, value_enum, default_value_t = ProgressWhen::Auto)]
    pub progress: ProgressWhen,

    /// No summary on stderr (errors are still printed).
    #[arg(short, long)]
    pub quiet: bool,
}

#[derive(Debug, Args)]
pub struct SchemaArgs {
    /// Output format (default: text; sql when --dialect or --location is given).
    #[arg(long, value_enum)]
    pub format: Option<SchemaFormat>,

    /// Which table: `groups` (one row per Group call) or `accounts` (the latest state of each group).
    #[arg(long, value_enum, default_value_t = Table::Groups)]
    pub table: Table,

    /// With --format sql: the warehouse whose CREATE statements are printed (default: duckdb).
    #[arg(long, value_enum)]
    pub dialect: Option<crate::command::ddl::Dialect>,

    /// With --format sql (required there): where the dataset lies, the --output of the loads, e.g.
    /// s3://bucket/segment or /data/segment. Athena, BigQuery and Snowflake read object storage only.
    #[arg(long, value_name = "URL|DIR")]
    pub location: Option<String>,

    /// With --format sql: the dataset's table format (default: delta for an object-store URL, else hive).
    #[arg(long, value_enum)]
    pub table_format: Option<crate::layout::Format>,

    /// With --format sql: the dataset's --partition.
    #[arg(long, value_enum, default_value_t = PartitionMode::Day)]
    pub partition: PartitionMode,
}

/// The exit codes, as `load --help` lists them (and the deployment definitions act on them).
const EXIT_CODES: &str = "\
Exit codes:
  0  success: the rows are published, or there was nothing to do (these inputs
     were already loaded; no input file was found, which a warning says)
  1  failure, nothing published: I/O (disk full, unreadable input), object
     storage (after --retry-timeout), corrupt input, missing credentials
  2  bad usage or configuration: an option, argument, URL or environment
     variable that cannot work; nothing touched
  3  too many rejected lines (--max-reject-ratio): nothing published; the
     report and rejects are written
  4  the output (hive) is locked by another run: nothing touched
  5  fewer rows than --min-rows (events already loaded count toward it):
     nothing published; the report is written
  6  the rows were published (or a Delta commit may have landed), but a later
     step failed (accounts, the report, a --report/--rejects copy): re-run the
     same command to finish it

A scheduler should retry 1, 4, 5 and 6 (a network fault, a run still going, a
late export, an unfinished run: a re-run never loads a row twice), and never 2
or 3 (the same command fails the same way).";

/// The exit codes of `forget`.
const FORGET_EXIT_CODES: &str = "\
Exit codes:
  0  done: the rows and lines that held the ids are gone (or none did)
  1  failure (I/O, object storage): nothing changed in hive; in Delta, re-run
     the same command to finish
  2  bad usage: no id, a malformed ids file (its line is named), no dataset
     at --output; nothing touched
  4  the output (hive) is locked by a load: nothing touched; retry later
  6  the rows are gone, but a later step failed (accounts, rejects, the
     record): re-run the same command to finish it";

/// The exit codes of `compact`.
const COMPACT_EXIT_CODES: &str = "\
Exit codes:
  0  done (or nothing to do): rows and their order unchanged
  1  failure (I/O, object storage): the dataset is as before; run again
  2  bad usage: no dataset at --output, a file the tool did not write in a
     partition (named), --from after --to; nothing touched
  4  the output (hive) is locked by a load: nothing touched; retry later
  6  the compaction was committed, but a later step failed (the checkpoint,
     the vacuum, the record): run again to finish it";

/// The smallest `--memory-limit`: below it, the fixed cost of the pipeline (threads, read-ahead, open
/// writers) is a large part of the budget, and the limit could not be kept.
pub const MIN_MEMORY_LIMIT: u64 = 256 << 20;

fn parse_memory_limit(s: &str) -> std::result::Result<u64, String> {
    let n = parse_size(s)?;
    if n < MIN_MEMORY_LIMIT {
        return Err(format!("{s:?} is below the minimum of 256MiB"));
    }
    Ok(n)
}

/// Parses a size such as `1GiB`, `512M`, `1.5G`, `100000`.
pub fn parse_size(s: &str) -> std::result::Result<u64, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let value: f64 = num
        .parse()
        .map_err(|_| format!("invalid size {s:?}: expected e.g. 512MiB or 2G"))?;
    let mult: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kib" => 1024.0,
        "m" | "mib" => 1024.0 * 1024.0,
        "g" | "gib" => 1024.0 * 1024.0 * 1024.0,
        "t" | "tib" => 1024.0f64.powi(4),
        "kb" => 1e3,
        "mb" => 1e6,
        "gb" => 1e9,
        "tb" => 1e12,
        other => return Err(format!("invalid size unit {other:?} in {s:?}")),
    };
    let bytes = value * mult;
    if !bytes.is_finite() || bytes < 1.0 || bytes > u64::MAX as f64 {
        return Err(format!("size {s:?} is out of range"));
    }
    Ok(bytes as u64)
}

impl LoadArgs {
    /// The run's options: the defaults of [`LoadOptions::new`], changed where the command line says.
    fn options(&self) -> Result<LoadOptions> {
        let mut opts = LoadOptions::new(self.inputs.clone(), &self.output)
            .with_memory_limit(self.memory_limit);
        opts.format = self.format;
        if let Some(p) = self.partition {
            opts.partition = p;
            opts.partition_given = true;
        }
        if let Some(n) = self.max_line_bytes {
            opts.max_line_bytes = usize::try_from(n)
                .map_err(|_| Error::Usage("--max-line-bytes is too large".into()))?;
        }
        opts.vacuum_retention = self.vacuum_retention;
        opts.codec = self.compression;
        opts.mode = self.mode;
        opts.max_reject_ratio = self.max_reject_ratio;
        opts.min_rows = self.min_rows;
        opts.rejects = self.rejects.clone();
        opts.report = self.report.clone();
        opts.metrics = self.metrics.clone();
        opts.dedupe = !self.no_dedupe;
        opts.dedupe_window = self.dedupe_window;
        opts.accounts = !self.no_accounts;
        opts.progress = self.progress;
        opts.quiet = self.quiet;
        opts.threads = self.threads;
        opts.shard = self.shard;
        opts.follow_links = self.follow_links;
        opts.retry_timeout = self.retry_timeout;
        opts.truncate_ip = self.truncate_ip;
        opts.hash_columns = self.hash_columns.clone();
        opts.glue_database = self.glue_database.clone();
        Ok(opts)
    }
}

/// Runs a parsed command line.
pub fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Schema(args) => {
            let request = schema::Request {
                table: args.table,
                format: args.format,
                dialect: args.dialect,
                location: args.location,
                table_format: args.table_format,
                partition: args.partition,
            };
            print!("{}", request.render()?);
            Ok(())
        }
        Command::Load(args) => crate::command::load::load(&args.options()?).map(|_| ()),
        Command::Forget(args) => crate::command::forget::forget(&args.options()?).map(|_| ()),
        Command::Compact(args) => crate::command::compact::compact(&args.options()).map(|_| ()),
        Command::Status(args) => crate::command::status::status(&args.options()).map(|_| ()),
    }
}

/// The whole program: parses arguments, runs, maps the outcome to an exit code.
pub fn main_with_args<I, T>(args: I) -> ExitCode
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(e) => {
            // --help and --version print and succeed; anything else is bad usage.
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() {
                exit::USAGE
            } else {
                exit::SUCCESS
            });
        }
    };
    match run(cli) {
        Ok(()) => ExitCode::from(exit::SUCCESS),
        Err(e) => {
            eprintln!(
                "group-loader: error: {}",
                crate::error::redact(&e.to_string())
            );
            ExitCode::from(e.exit_code())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("1GiB"), Ok(1 << 30));
        assert_eq!(parse_size("1G"), Ok(1 << 30));
        assert_eq!(parse_size("512MiB"), Ok(512 << 20));
        assert_eq!(parse_size("1.5k"), Ok(1536));
        assert_eq!(parse_size("2GB"), Ok(2_000_000_000));
        assert_eq!(parse_size("100"), Ok(100));
        assert!(parse_size("0").is_err());
        assert!(parse_size("ten").is_err());
        assert!(parse_size("1X").is_err());
        assert!(parse_memory_limit("255MiB").is_err());
        assert_eq!(parse_memory_limit("256MiB"), Ok(256 << 20));
    }

    #[test]
    fn cli_is_well_formed() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
