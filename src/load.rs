//! The `load` subcommand: inputs -> lines -> rows -> Parquet, then publish (SPEC §1-§8).
//!
//! Why this module exists: it is the one place that knows the order of a run — lock, recover, stage, read,
//! classify in parallel, apply in input order (counts, dedupe, rejects, partition buffers), decide on the
//! reject ratio, publish or discard — so each other module can stay ignorant of the others.
//!
//! Determinism: lines are cut into chunks by bytes, parsed in parallel, and applied strictly in input order;
//! row groups are flushed only between chunks. So rows, row groups and file names do not depend on
//! `--threads`.
//!
//! The run id is a hash of the options that shape rows and of each input's identity (a file's path, size and
//! modification time; standard input's content hash), so it is known before reading: a run whose id was
//! already published (a retried cron job) has nothing to do, and says so.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use xxhash_rust::xxh3::Xxh3;

use crate::accounts::{self, ACCOUNTS_DIR};
use crate::dataset::{self, Format, Shape};
pub use crate::dataset::{GROUPS_DIR, REJECTS_DIR, RUNS_DIR};
use crate::dedupe::{EarlierIds, Reach, SeenIds};
use crate::error::{Error, Result};
use crate::ingest::{PREFETCH_CHUNKS, Reading, read_inputs};
use crate::input::{self, Source};
use crate::publish::{self, Plan, Staging};
use crate::rejects::RejectsWriter;
use crate::report::{
    AccountsReport, DedupeReport, FileReport, NotPublished, Phase, Progress, ProgressWhen, Report,
};
use crate::run::{PartitionsSeen, Run};
use crate::schema;
use crate::writer::{Codec, GroupsWriter, PartitionMode, StagedFile, WriterConfig};

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
    pub output: PathBuf,
    pub partition: PartitionMode,
    pub codec: Codec,
    pub mode: Mode,
    pub max_reject_ratio: f64,
    /// Publish nothing (exit 5) when the run would publish fewer rows than this.
    pub min_rows: u64,
    pub rejects: Option<PathBuf>,
    pub report: Option<PathBuf>,
    pub memory_limit: u64,
    /// Deduplicate on messageId at all (`--no-dedupe` turns it off).
    pub dedupe: bool,
    /// How far from an event's partition earlier runs' ids count (`--dedupe-window`; zero: this run only).
    pub dedupe_window: Duration,
    /// Maintain the `accounts` table (SPEC §9).
    pub accounts: bool,
    /// Bytes the `accounts` merge may hold (the command line gives it half of `memory_limit`: by then the
    /// groups writer has finished). Smaller means more, smaller buckets.
    pub accounts_budget: u64,
    pub progress: ProgressWhen,
    pub quiet: bool,
    pub max_line_bytes: usize,
    /// Worker threads for parsing and encoding (default: one per core).
    pub threads: Option<usize>,
}

/// Bytes of lines per chunk handed to the parallel parser: 8 MiB, less under a small `--memory-limit`.
const MAX_CHUNK_BYTES: usize = 8 << 20;

impl LoadOptions {
    /// Bytes of lines per chunk: a 64th of `--memory-limit`, between 256 KiB and 8 MiB.
    fn chunk_bytes(&self) -> usize {
        usize::try_from(self.memory_limit / 64)
            .unwrap_or(usize::MAX)
            .clamp(256 << 10, MAX_CHUNK_BYTES)
    }

    /// How `--memory-limit` is spent. First what reading holds: per reader thread, the chunks read ahead and
    /// one being filled; the chunk being parsed and the one being applied; each chunk with its parsed rows
    /// (about as large again). Then a baseline that no buffer counts. Of the rest, a fifth goes to the row
    /// buffers; batches being encoded (back-pressured to as much again) and allocator slack take the others.
    fn writer_config(&self) -> WriterConfig {
        let limit = usize::try_from(self.memory_limit).unwrap_or(usize::MAX);
        let readers = self
            .threads
            .unwrap_or_else(rayon::current_num_threads)
            .max(1);
        let reading = (readers * (PREFETCH_CHUNKS + 1) + 2) * 2 * self.chunk_bytes();
        // A baseline for what no buffer counts: open writers' state, thread stacks, the program itself.
        let baseline = 32 << 20;
        let dedupe = usize::try_from(self.dedupe_budget()).unwrap_or(usize::MAX);
        let budget = (limit.saturating_sub(reading + baseline + dedupe) / 5).max(1 << 20);
        WriterConfig {
            partition: self.partition,
            codec: self.codec,
            row_group_bytes: (budget / 2).clamp(1 << 20, 128 << 20),
            buffer_budget: budget,
            file_max_bytes: 1 << 30,
            max_open_files: 256,
        }
    }

    /// What the ids already loaded within the dedupe window may take: a quarter of `--memory-limit`.
    fn dedupe_budget(&self) -> u64 {
        if self.reach() == Reach::Nothing {
            0
        } else {
            self.memory_limit / 4
        }
    }

    /// How far earlier runs' ids count.
    fn reach(&self) -> Reach {
        if self.dedupe {
            Reach::new(self.dedupe_window, self.partition)
        } else {
            Reach::Nothing
        }
    }

    /// The options that shape which rows exist and where (hashed into the run id).
    fn row_shaping(&self) -> String {
        format!(
            "schema={} partition={:?} dedupe={} window={:?} max_line_bytes={}",
            schema::SCHEMA_VERSION,
            self.partition,
            self.dedupe,
            self.reach(),
            self.max_line_bytes
        )
    }

    /// The run id from what identifies each input (see the module doc).
    fn run_id<I: AsRef<[u8]>>(&self, identities: impl IntoIterator<Item = I>) -> String {
        let mut h = Xxh3::new();
        h.update(self.row_shaping().as_bytes());
        for i in identities {
            let i = i.as_ref();
            h.update(&(i.len() as u64).to_le_bytes());
            h.update(i);
        }
        format!("{:016x}", h.digest128() as u64)
    }
}

/// Runs `group-loader load`. Returns the run's report (also when its inputs were already loaded).
pub fn load(opts: &LoadOptions) -> Result<Report> {
    let started = Instant::now();
    let started_at = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    if !(0.0..=1.0).contains(&opts.max_reject_ratio) {
        return Err(Error::Usage(format!(
            "--max-reject-ratio must be between 0 and 1, got {}",
            opts.max_reject_ratio
        )));
    }
    let sources = input::discover(&opts.inputs, &opts.output)?;
    let out = opts.output.as_path();
    let shape = Shape {
        format: Format::Hive,
        partition: opts.partition,
    };
    // A run asking for another layout is refused before anything is touched (and again under the lock).
    publish::check_output(out)?;
    dataset::check_shape(out, shape)?;
    let _lock = publish::lock(out)?;
    dataset::check_shape(out, shape)?;
    let discarded = publish::recover(out)?;
    if !opts.quiet && discarded > 0 {
        eprintln!("group-loader: recovered the output: removed {discarded} unpublished run(s)");
    }
    publish::prepare(out)?;
    dataset::record_shape(out, shape)?;
    let pool = thread_pool(opts)?;
    // Known before reading when every input has an identity (files do; standard input does not).
    let upfront_id = sources
        .iter()
        .map(Source::identity)
        .collect::<Option<Vec<_>>>()
        .map(|ids| opts.run_id(ids));
    let staging = Staging::create(out)?;
    let total: Option<u64> = sources.iter().map(Source::size).sum();
    let progress = Progress::new(opts.progress, opts.quiet, total);
    let staged = match upfront_id
        .as_deref()
        .and_then(|id| already_loaded(opts, id, &started_at, &pool))
    {
        // A retried job: nothing to read.
        Some(report) => accounts_only(opts, &pool, &staging, report),
        None => stage(
            opts,
            &pool,
            sources,
            &staging,
            &progress,
            (started, started_at),
        ),
    };
    let (report, plan) = match staged {
        Ok(staged) => staged,
        Err(e) => {
            progress.finish();
            // Nothing of this run is published; a failure to clean up is repaired by the next run.
            let _ = staging.discard();
            return Err(e);
        }
    };
    if plan.is_empty() {
        progress.finish();
        let _ = staging.discard();
        return finish(opts, report);
    }
    progress.phase(
        Phase::Publishing,
        report.counts.rows_written,
        report.counts.rejected_total(),
    );
    // A run that does not publish its rows still publishes its report and rejects (the plan holds only them).
    let published = publish::publish(out, staging, &plan);
    progress.finish();
    published?;
    finish(opts, report)
}

fn thread_pool(opts: &LoadOptions) -> Result<Arc<rayon::ThreadPool>> {
    let mut pool = rayon::ThreadPoolBuilder::new();
    if let Some(n) = opts.threads {
        pool = pool.num_threads(n);
    }
    pool.build()
        .map(Arc::new)
        .map_err(|e| Error::Usage(format!("cannot start threads: {e}")))
}

/// After the run: the copies asked for, the summary, and the outcome the report calls for (SPEC §8).
fn finish(opts: &LoadOptions, report: Report) -> Result<Report> {
    copy_out(opts, &report)?;
    if !opts.quiet {
        eprint!("{}", report.summary());
    }
    let c = &report.counts;
    match report.not_published {
        None | Some(NotPublished::AlreadyLoaded) => Ok(report),
        Some(NotPublished::RejectRatio) => Err(Error::RejectRatio {
            rejected: c.rejected_for_ratio(),
            considered: c.considered(),
            ratio: report.reject_ratio,
            max: opts.max_reject_ratio,
            rejects: report
                .rejects_file
                .as_deref()
                .map(|r| opts.output.join(r).display().to_string())
                .unwrap_or_default(),
            hint: report.not_ndjson.first().map(|n| n.hint.clone()),
        }),
        Some(NotPublished::MinRows) => Err(Error::MinRows {
            rows: c.rows_written,
            min: opts.min_rows,
            events: c.events,
            skipped: c.skipped_total(),
            rejected: c.rejected_total(),
        }),
    }
}

/// The report of a run whose inputs a published run with the same id already loaded (a retried job): it
/// has nothing to do. `--mode overwrite` always processes its inputs again.
fn already_loaded(
    opts: &LoadOptions,
    run_id: &str,
    started_at: &str,
    pool: &rayon::ThreadPool,
) -> Option<Report> {
    if opts.mode != Mode::Append {
        return None;
    }
    let earlier = dataset::published_run(&opts.output, run_id)?;
    let mut report = new_report(opts, run_id, started_at.to_string(), pool);
    report.published = false;
    report.not_published = Some(NotPublished::AlreadyLoaded);
    report.already_loaded = earlier["started_at"].as_str().map(str::to_string);
    Some(report)
}

/// What a run with nothing to load still publishes: `accounts` kept as the options ask (removed with
/// `--no-accounts`, rebuilt from `groups` when missing). Usually nothing.
fn accounts_only(
    opts: &LoadOptions,
    pool: &rayon::ThreadPool,
    staging: &Staging,
    mut report: Report,
) -> Result<(Report, Plan)> {
    let mut plan = Plan::default();
    report.accounts = update_accounts(opts, pool, staging, &[], &mut plan)?;
    Ok((report, plan))
}

/// A report with the run's identity and options, and nothing counted yet.
fn new_report(
    opts: &LoadOptions,
    run_id: &str,
    started_at: String,
    pool: &rayon::ThreadPool,
) -> Report {
    Report {
        run: run_id.to_string(),
        tool_version: schema::TOOL_VERSION,
        schema_version: schema::SCHEMA_VERSION,
        started_at,
        output: opts.output.display().to_string(),
        options: serde_json::json!({
            "partition": opts.partition,
            "compression": opts.codec,
            "mode": opts.mode,
            "max_reject_ratio": opts.max_reject_ratio,
            "min_rows": opts.min_rows,
            "dedupe": opts.dedupe,
            "dedupe_window": humantime::format_duration(opts.dedupe_window).to_string(),
            "memory_limit": opts.memory_limit,
            "max_line_bytes": opts.max_line_bytes,
            "threads": pool.current_num_threads(),
        }),
        inputs: Vec::new(),
        counts: Default::default(),
        reject_ratio: 0.0,
        max_reject_ratio: opts.max_reject_ratio,
        min_rows: opts.min_rows,
        not_ndjson: Vec::new(),
        dedupe: DedupeReport {
            window: humantime::format_duration(opts.dedupe_window).to_string(),
            partitions_read: 0,
            ids_read: 0,
        },
        partitions: BTreeMap::new(),
        files: Vec::new(),
        replaced: BTreeMap::new(),
        rejects_file: None,
        elapsed_s: 0.0,
        published: false,
        not_published: None,
        already_loaded: None,
        accounts: None,
    }
}

/// Copies the report (and rejects) to `--report` / `--rejects` when asked.
fn copy_out(opts: &LoadOptions, report: &Report) -> Result<()> {
    if let Some(path) = &opts.report {
        publish::write_atomic(path, &report_json(report)?)?;
    }
    if let (Some(path), Some(rel)) = (&opts.rejects, &report.rejects_file) {
        let from = opts.output.join(rel);
        fs::copy(&from, path).map_err(Error::io("copying rejects file to", path))?;
    }
    Ok(())
}

fn report_json(report: &Report) -> Result<Vec<u8>> {
    let mut v = serde_json::to_vec_pretty(report).map_err(|source| Error::Json {
        what: "serialising the report".into(),
        source,
    })?;
    v.push(b'\n');
    Ok(v)
}

fn rel(path: &Path) -> String {
    path.to_string_lossy().into_owned()
}

/// Reads every input into staged files, then decides what to publish: the whole run, or (reject ratio
/// exceeded, fewer rows than `--min-rows`) only its report, saying `published: false`, and its rejects.
fn stage(
    opts: &LoadOptions,
    pool: &Arc<rayon::ThreadPool>,
    mut sources: Vec<Source>,
    staging: &Staging,
    progress: &Progress,
    (started, started_at): (Instant, String),
) -> Result<(Report, Plan)> {
    let reading = Reading {
        max_line_bytes: opts.max_line_bytes,
        chunk_bytes: opts.chunk_bytes(),
        pool,
        partition: opts.partition,
    };
    // Overwrite: the partitions this run's rows fall in are being replaced, so their rows are not "already
    // loaded". A first pass finds them (standard input is kept in the staging folder to be read twice).
    let mut being_replaced = BTreeSet::new();
    if opts.mode == Mode::Overwrite && opts.reach() != Reach::Nothing {
        input::spool_stdin(&mut sources, staging.dir())?;
        let mut seen = PartitionsSeen::new(opts.partition);
        progress.reading(Phase::FirstPass);
        read_inputs(&reading, &sources, &mut seen, None, progress)?;
        progress.reading(Phase::Reading);
        being_replaced = seen.buckets;
    }
    let mut earlier = earlier_ids(opts, &being_replaced)?;
    let mut run = Run::new(
        opts.dedupe.then(SeenIds::default),
        RejectsWriter::new(staging.dir().join("rejects.ndjson")),
        GroupsWriter::new(
            staging.dir().join(GROUPS_DIR),
            opts.writer_config(),
            pool.clone(),
        ),
    );
    let read = read_inputs(&reading, &sources, &mut run, Some(&mut earlier), progress)?;
    let run_id = opts.run_id(&read.identities);
    if let Some(report) = already_loaded(opts, &run_id, &started_at, pool) {
        // Standard input, identified only now, repeats a published run.
        return accounts_only(opts, pool, staging, report);
    }
    let mut report = new_report(opts, &run_id, started_at, pool);
    report.inputs = read.inputs;
    report.dedupe.partitions_read = earlier.partitions_loaded;
    report.dedupe.ids_read = earlier.ids_loaded;
    progress.phase(
        Phase::Writing,
        run.counts.rows_written,
        run.counts.rejected_total(),
    );
    let Run {
        counts,
        rejects,
        writer,
        not_ndjson,
        ..
    } = run;
    debug_assert!(counts.adds_up());
    let staged = writer.finish()?;
    // Never lose a row silently: what the files hold must be what was counted, or nothing is published.
    let staged_rows: u64 = staged.iter().map(|f| f.rows).sum();
    if staged_rows != counts.rows_written {
        return Err(Error::Io {
            action: "checking staged files in",
            path: staging.dir().to_path_buf(),
            source: std::io::Error::other(format!(
                "internal: {} rows counted but {staged_rows} rows written to files",
                counts.rows_written
            )),
        });
    }
    let staged_rejects = rejects.finish()?;
    report.reject_ratio = counts.reject_ratio();
    report.not_published = if report.reject_ratio > opts.max_reject_ratio {
        Some(NotPublished::RejectRatio)
    } else if counts.rows_written < opts.min_rows {
        Some(NotPublished::MinRows)
    } else {
        None
    };
    report.published = report.not_published.is_none();
    report.counts = counts;
    report.not_ndjson = not_ndjson;
    let mut plan = Plan::default();
    if report.published {
        plan_rows(
            opts,
            pool,
            staging,
            &staged,
            &mut report,
            &mut plan,
            progress,
        )?;
    }
    let rejects_rel = Path::new(REJECTS_DIR).join(format!("{run_id}.ndjson"));
    match staged_rejects {
        Some(from) => {
            report.rejects_file = Some(rel(&rejects_rel));
            plan.adds.push((from, rejects_rel));
        }
        None => plan.removes.push(rejects_rel),
    }
    report.elapsed_s = started.elapsed().as_secs_f64();
    let staged_report = staging.dir().join("report.json");
    let mut f =
        fs::File::create(&staged_report).map_err(Error::io("writing report", &staged_report))?;
    f.write_all(&report_json(&report)?)
        .and_then(|()| f.sync_all())
        .map_err(Error::io("writing report", &staged_report))?;
    plan.adds.push((
        staged_report,
        Path::new(RUNS_DIR).join(format!("{run_id}.json")),
    ));
    Ok((report, plan))
}

/// The ids that count as already loaded: every partition of the dataset (within the window, as the run meets
/// partitions) but those being replaced.
fn earlier_ids(opts: &LoadOptions, being_replaced: &BTreeSet<i64>) -> Result<EarlierIds> {
    let reach = opts.reach();
    let partitions = match reach {
        Reach::Nothing => Vec::new(),
        _ => dataset::partitions(&opts.output, opts.partition)?,
    };
    Ok(EarlierIds::new(
        reach,
        partitions
            .into_iter()
            .filter(|p| !being_replaced.contains(&p.bucket))
            .map(|p| (p.bucket, p.files)),
        opts.dedupe_budget(),
        format!("{} MiB", opts.memory_limit >> 20),
    ))
}

/// Adds a published run's rows to the plan: its files, the files they replace (counted in the report's
/// `replaced`), and the new `accounts` snapshot.
fn plan_rows(
    opts: &LoadOptions,
    pool: &Arc<rayon::ThreadPool>,
    staging: &Staging,
    staged: &[StagedFile],
    report: &mut Report,
    plan: &mut Plan,
    progress: &Progress,
) -> Result<()> {
    let out = opts.output.as_path();
    for f in staged {
        let to = Path::new(GROUPS_DIR)
            .join(&f.partition)
            .join(format!("part-{}-{:05}.parquet", report.run, f.seq));
        *report.partitions.entry(f.partition.clone()).or_insert(0) += f.rows;
        report.files.push(FileReport {
            path: rel(&to),
            rows: f.rows,
            bytes: f.bytes,
        });
        plan.adds.push((f.staged.clone(), to));
    }
    let replaced = replaced_files(out, opts.mode, &report.run, plan)?;
    for path in &replaced {
        let partition = path
            .parent()
            .and_then(|p| p.strip_prefix(GROUPS_DIR).ok())
            .map(rel)
            .unwrap_or_default();
        *report.replaced.entry(partition).or_insert(0) += dataset::file_rows(&out.join(path))?;
    }
    plan.removes.extend(replaced);
    progress.phase(
        Phase::Accounts,
        report.counts.rows_written,
        report.counts.rejected_total(),
    );
    report.accounts = update_accounts(opts, pool, staging, staged, plan)?;
    Ok(())
}

/// Adds the new `accounts` snapshot to the plan (SPEC §9): this run's staged files merged into the current
/// snapshot, or a rebuild from every `groups` file the new version will hold when there is no snapshot to
/// build on or the plan removes other runs' rows. With `--no-accounts`, removes the snapshot instead.
fn update_accounts(
    opts: &LoadOptions,
    pool: &rayon::ThreadPool,
    staging: &Staging,
    staged: &[StagedFile],
    plan: &mut Plan,
) -> Result<Option<AccountsReport>> {
    let out = opts.output.as_path();
    let snapshot = accounts::snapshot_files(out)?;
    if !opts.accounts {
        plan.removes.extend(
            snapshot
                .iter()
                .filter_map(|(_, _, p)| p.file_name().map(|n| Path::new(ACCOUNTS_DIR).join(n))),
        );
        return Ok(None);
    }
    // Rows leave `groups` only in overwrite mode (append replaces a run's files by identical ones).
    let removes_rows = opts.mode == Mode::Overwrite && !plan.removes.is_empty();
    // The groups files the new version keeps: listed only when there may be a reason to rebuild from them.
    let mut kept = Vec::new();
    if removes_rows || snapshot.is_empty() {
        let replaced: HashSet<&PathBuf> = plan
            .removes
            .iter()
            .chain(plan.adds.iter().map(|(_, to)| to))
            .collect();
        list_parquet(&out.join(GROUPS_DIR), true, &mut |_| true, &mut kept)?;
        kept.retain(|p| {
            p.strip_prefix(out)
                .is_ok_and(|rel| !replaced.contains(&rel.to_path_buf()))
        });
    }
    let rebuild = removes_rows || (snapshot.is_empty() && !kept.is_empty());
    let merged = accounts::merge(&accounts::Merge {
        out,
        staging: staging.dir(),
        snapshot: &snapshot,
        run_files: staged.iter().map(|f| f.staged.clone()).collect(),
        rebuild,
        kept_files: if rebuild { kept } else { Vec::new() },
        codec: opts.codec,
        budget: opts.accounts_budget,
        pool,
    })?;
    let report = AccountsReport {
        groups: merged.groups,
        files_written: merged.adds.len(),
        buckets: merged.buckets,
        rebuilt: merged.rebuilt,
    };
    plan.adds.extend(merged.adds);
    plan.removes.extend(merged.removes);
    Ok(Some(report))
}

/// The existing files this run replaces: in append mode, files of an earlier run with the same id that this
/// run does not write again; in overwrite mode, every file in the partitions this run writes.
fn replaced_files(out: &Path, mode: Mode, run_id: &str, plan: &Plan) -> Result<Vec<PathBuf>> {
    let targets: HashSet<&PathBuf> = plan.adds.iter().map(|(_, to)| to).collect();
    let groups = out.join(GROUPS_DIR);
    let mut found = Vec::new();
    match mode {
        Mode::Append => {
            let prefix = format!("part-{run_id}-");
            list_parquet(
                &groups,
                true,
                &mut |p| {
                    p.file_name()
                        .is_some_and(|n| n.to_string_lossy().starts_with(&prefix))
                },
                &mut found,
            )?;
        }
        Mode::Overwrite => {
            let dirs: HashSet<PathBuf> = targets
                .iter()
                .filter(|t| t.starts_with(GROUPS_DIR))
                .filter_map(|t| t.parent().map(|p| out.join(p)))
                .collect();
            for dir in dirs {
                list_parquet(&dir, false, &mut |_| true, &mut found)?;
            }
        }
    }
    Ok(found
        .into_iter()
        .filter_map(|p| p.strip_prefix(out).ok().map(Path::to_path_buf))
        .filter(|p| !targets.contains(p))
        .collect())
}

/// Lists `*.parquet` files under `dir` (recursively or not) that pass `keep`.
fn list_parquet(
    dir: &Path,
    recursive: bool,
    keep: &mut dyn FnMut(&Path) -> bool,
    found: &mut Vec<PathBuf>,
) -> Result<()> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::io("reading directory", dir)(e)),
    };
    for entry in entries {
        let entry = entry.map_err(Error::io("reading directory", dir))?;
        let path = entry.path();
        let ft = entry.file_type().map_err(Error::io("reading", &path))?;
        if ft.is_dir() {
            if recursive {
                list_parquet(&path, recursive, keep, found)?;
            }
        } else if path.extension().is_some_and(|e| e == "parquet") && keep(&path) {
            found.push(path);
        }
    }
    Ok(())
}
