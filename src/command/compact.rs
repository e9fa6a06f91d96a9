//! `group-loader compact`: the small files of each `groups` partition rewritten into files near a target
//! size, rows and their order kept, so that readers stay fast after years of nightly runs, shards and late data.
//!
//! Why this module exists: it is the owner of a compaction's report, as `load` is of a run's. It checks the
//! request, opens the dataset through the table interface (which plans with [`crate::compact`] and publishes
//! in its format's one atomic step), and says what it did, or in a dry run what it would do.

use std::path::PathBuf;
use std::time::Instant;

use serde::Serialize;

use crate::compact::DateRange;
use crate::error::{Error, Result};
use crate::layout::Codec;
use crate::metrics::Metrics;
use crate::options::LoadOptions;
use crate::report::{Progress, human_bytes, thousands};
use crate::table::{CompactRequest, Compacted, Context};

/// The default `--target-file-size`: large enough that a day of most datasets is one file and a reader opens
/// few footers, small enough that one file is read by one task without splitting (docs/maintenance.md).
pub const DEFAULT_TARGET: u64 = 256 << 20;

/// What a compaction needs, however the command line spells it.
#[derive(Debug, Clone)]
pub struct CompactOptions {
    pub output: PathBuf,
    pub target_bytes: u64,
    pub range: DateRange,
    pub dry_run: bool,
    pub quiet: bool,
    pub report: Option<PathBuf>,
    pub metrics: Option<PathBuf>,
    pub threads: Option<usize>,
    pub memory_limit: u64,
    pub codec: Codec,
    pub vacuum_retention: std::time::Duration,
    pub retry_timeout: std::time::Duration,
}

/// The record of a compaction, as `_runs/<stem>.json` keeps it.
#[derive(Debug, Clone, Serialize)]
pub struct CompactReport {
    pub command: &'static str,
    pub compaction: String,
    pub started_at: String,
    pub output: String,
    pub target_file_size: u64,
    pub from: Option<String>,
    pub to: Option<String>,
    #[serde(flatten)]
    pub done: Compacted,
    pub elapsed_s: f64,
}

/// Carries out the compaction (with `--metrics`, also when it fails); returns its report.
pub fn compact(opts: &CompactOptions) -> Result<CompactReport> {
    let started = Instant::now();
    let result = run(opts, started);
    if let Some(path) = &opts.metrics {
        let mut m = Metrics::new("compact", &opts.output.to_string_lossy());
        if let Ok(r) = &result {
            fill(&mut m, r);
        }
        m.gauge(
            "duration_seconds",
            "How long the command ran.",
            started.elapsed().as_secs_f64(),
        );
        let code = result.as_ref().err().map_or(0, Error::exit_code);
        m.write(path, code)?;
    }
    result
}

fn run(opts: &CompactOptions, started: Instant) -> Result<CompactReport> {
    let started_at = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    if let (Some(f), Some(t)) = (opts.range.from, opts.range.to)
        && f > t
    {
        return Err(Error::Usage(format!(
            "--from {f} is after --to {t}: no partition is in that range"
        )));
    }
    crate::store::set_retry_timeout(opts.retry_timeout);
    let load = LoadOptions {
        codec: opts.codec,
        quiet: opts.quiet,
        threads: opts.threads,
        retry_timeout: opts.retry_timeout,
        vacuum_retention: opts.vacuum_retention,
        ..LoadOptions::new(Vec::new(), &opts.output).with_memory_limit(opts.memory_limit)
    };
    super::check_dataset(&load, "compact")?;
    let pool = super::load::thread_pool(&load)?;
    let (mut table, _) = crate::table::open(&load)?;
    let staging = table.staging()?;
    let token = xxhash_rust::xxh3::xxh3_64(crate::staging::staging_name().as_bytes());
    let tag = format!("{token:016x}");
    // Each thread holds a row group being written (its encoded pages, less than its Arrow size) and the batch
    // being read; 64 MiB of Arrow data a row group at most, as a load cuts them at the default limit.
    let row_group_bytes = (opts.memory_limit / (8 * pool.current_num_threads() as u64))
        .clamp(1 << 20, 64 << 20) as usize;
    let request = CompactRequest {
        target_bytes: opts.target_bytes,
        range: opts.range.clone(),
        dry_run: opts.dry_run,
        row_group_bytes,
        stem: crate::layout::run_stem(&started_at, &format!("compact-{tag}")),
        tag,
    };
    let progress = Progress::new(crate::options::ProgressWhen::Never, true, None);
    let ctx = Context {
        opts: &load,
        started_at: &started_at,
        pool: &pool,
        progress: &progress,
        started,
        shard: None,
    };
    let report_of = |done: &Compacted| CompactReport {
        command: "compact",
        compaction: request.stem.clone(),
        started_at: started_at.clone(),
        output: load.output.to_string(),
        target_file_size: opts.target_bytes,
        from: opts.range.from.map(|d| d.to_string()),
        to: opts.range.to.map(|d| d.to_string()),
        done: done.clone(),
        elapsed_s: started.elapsed().as_secs_f64(),
    };
    let record = |done: &Compacted| -> Result<Vec<u8>> {
        serde_json::to_vec_pretty(&report_of(done)).map_err(|e| Error::Internal(e.to_string()))
    };
    let done = table.compact(&request, &staging, &ctx, &record)?;
    drop(staging);
    let report = report_of(&done);
    if !opts.quiet {
        eprint!("{}", summary(&report));
    }
    if let Some(path) = &opts.report {
        let published = done.version.is_some();
        let copied = super::copy_report(path, &record(&done)?);
        match published {
            true => copied.map_err(Error::after_publish("the --report copy"))?,
            false => copied?,
        }
    }
    Ok(report)
}

/// The compaction's figures as metrics.
fn fill(m: &mut Metrics, r: &CompactReport) {
    let d = &r.done;
    for (name, help, v) in [
        (
            "compact_partitions_rewritten",
            "Partitions whose small files were rewritten.",
            d.partitions.len() as u64,
        ),
        (
            "compact_files_before",
            "groups files of the partitions looked at, before.",
            d.files_before,
        ),
        (
            "compact_files_after",
            "groups files of the partitions looked at, after.",
            d.files_after,
        ),
        (
            "compact_files_rewritten",
            "Small files rewritten.",
            d.files_rewritten,
        ),
        (
            "compact_bytes_rewritten",
            "Bytes of the files rewritten.",
            d.bytes_rewritten,
        ),
        (
            "compact_rows_rewritten",
            "Rows of the files rewritten.",
            d.rows_rewritten,
        ),
        ("files_vacuumed", "Files deleted by the vacuum.", d.vacuumed),
    ] {
        m.gauge(name, help, v as f64);
    }
}

/// The human summary on stderr.
pub fn summary(r: &CompactReport) -> String {
    use std::fmt::Write as _;
    let d = &r.done;
    let mut s = String::new();
    let verb = if d.dry_run {
        "would compact"
    } else {
        "compacted"
    };
    if d.files_written == 0 {
        let _ = writeln!(
            s,
            "group-loader: compact {}: nothing to do ({} partition(s), {} file(s); no partition has two small \
             files side by side)",
            r.output, d.partitions_seen, d.files_before
        );
        return s;
    }
    let _ = writeln!(
        s,
        "group-loader: {verb} {}: {} of {} partition(s), {} file(s) -> {} ({} small file(s), {} rows, {} \
         rewritten into {})",
        r.output,
        d.partitions.len(),
        d.partitions_seen,
        d.files_before,
        d.files_after,
        d.files_rewritten,
        thousands(d.rows_rewritten),
        human_bytes(d.bytes_rewritten),
        d.files_written
    );
    if d.dry_run {
        for p in &d.partitions {
            let _ = writeln!(
                s,
                "  {}: {} file(s) -> {} ({} rows, {} rewritten)",
                p.partition,
                p.files_before,
                p.files_after,
                thousands(p.rows),
                human_bytes(p.bytes)
            );
        }
        let _ = writeln!(s, "  dry run: nothing changed");
        return s;
    }
    if let Some(v) = d.version {
        let _ = writeln!(
            s,
            "  version {v}{}; record: _runs/{}.json",
            d.checkpoint
                .map(|c| format!(", checkpoint at {c}"))
                .unwrap_or_default(),
            r.compaction
        );
    }
    s
}
