//! The `load` subcommand: inputs -> lines -> rows -> Parquet, then publish.
//!
//! Why this module exists: it is the one place that knows the order of a run — open the output (the
//! [`Table`]), stage, read, classify in parallel, apply in input order (counts, dedupe, rejects, partition
//! buffers), decide on the reject ratio and `--min-rows`, publish or discard — so each other module can stay
//! ignorant of the others.
//!
//! Determinism: lines are cut into chunks by bytes, parsed in parallel, and applied strictly in input order;
//! row groups are flushed only between chunks. So rows, row groups and file names do not depend on
//! `--threads`.
//!
//! The run id is a hash of the options that shape rows and of each input's identity (a file's path, size and
//! modification time; standard input's content hash), so it is known before reading: a run whose id was
//! already published (a retried cron job) has nothing to do, and says so.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Instant;

use xxhash_rust::xxh3::Xxh3;

use crate::accounts;
use crate::dedupe::{EarlierIds, Reach, SeenIds};
use crate::error::{Error, Result};
use crate::ingest::{PARSED_AHEAD, PREFETCH_CHUNKS, Reading, read_inputs};
use crate::input::{self, Source};
pub use crate::layout::{Format, GROUPS_DIR, REJECTS_DIR, RUNS_DIR};
use crate::options::{FIXED_BYTES, LINE_COPIES, LoadOptions, Mode, Output, max_line_bytes_within};
use crate::pseudonymise::AtLoad;
use crate::rejects::RejectsWriter;
use crate::report::ShardReport;
use crate::report::{Counts, DedupeReport, NotPublished, Phase, Progress, Report};
use crate::run::{PartitionsSeen, Run};
use crate::schema;
use crate::shard;
use crate::staging::Staging;
use crate::table::delta::glue;
use crate::table::{Context, EarlierRun, Outcome, Staged, Table, Visibility};
use crate::writer::{GroupsWriter, StagedFile, WriterConfig};

/// Bytes of lines per chunk handed to the parallel parser: 8 MiB, less under a small `--memory-limit`.
const MAX_CHUNK_BYTES: usize = 8 << 20;

impl LoadOptions {
    /// Bytes of lines per chunk: a 64th of `--memory-limit`, between 256 KiB and 8 MiB.
    fn chunk_bytes(&self) -> usize {
        usize::try_from(self.memory_limit / 64)
            .unwrap_or(usize::MAX)
            .clamp(256 << 10, MAX_CHUNK_BYTES)
    }

    /// Inputs read at once: one per 512 MiB of `--memory-limit`, between 2 and 8. It comes from the limit, not
    /// `--threads`, because what reading may hold sets the row buffers' budget, and with it where row groups end:
    /// the files must not depend on the thread count.
    pub(crate) fn readers(&self) -> usize {
        (self.memory_limit / (512 << 20)).clamp(2, 8) as usize
    }

    /// How `--memory-limit` is spent. First what reading holds: per reader thread, the chunks read ahead and
    /// one being filled; the chunk being parsed, those parsed ahead and the one being applied; each chunk with its parsed rows
    /// (about as large again). Then a baseline that no buffer counts. Of the rest, a fifth goes to the row
    /// buffers; batches being encoded (back-pressured to as much again) and allocator slack take the others.
    fn writer_config(&self) -> WriterConfig {
        let limit = usize::try_from(self.memory_limit).unwrap_or(usize::MAX);
        let reading =
            (self.readers() * (PREFETCH_CHUNKS + 1) + 2 + PARSED_AHEAD) * 2 * self.chunk_bytes();
        // A baseline for what no buffer counts: open writers' state, thread stacks, the program itself.
        let baseline = 32 << 20;
        let dedupe = usize::try_from(self.dedupe_budget()).unwrap_or(usize::MAX);
        let budget = (limit.saturating_sub(reading + baseline + dedupe) / 5).max(1 << 20);
        WriterConfig {
            partition: self.partition,
            codec: self.codec,
            row_group_bytes: (budget / 2).clamp(1 << 20, 128 << 20),
            buffer_budget: budget,
            // One file when one file was asked for; else a new file past 1 GiB.
            file_max_bytes: if self.format() == Format::Parquet {
                usize::MAX
            } else {
                1 << 30
            },
            max_open_files: 256,
            // A Delta commit may drop rows after staging (duplicates of concurrent commits).
            origins: self.format() == Format::Delta,
        }
    }

    /// The fold of the run's rows into accounts while they are written: it may hold a quarter of what the merge
    /// may, and no more than the row buffers (the batches being encoded are back-pressured to that much again,
    /// so the rest of the limit's slack stays); past that it gives up and the merge reads the files. It counts
    /// the groups up to the cap the merge counts them to.
    fn accounts_fold(&self) -> accounts::Fold {
        let budget = self
            .writer_config()
            .buffer_budget
            .min(usize::try_from(self.accounts_budget / 4).unwrap_or(usize::MAX));
        let hash_cap = usize::try_from(self.accounts_budget / 256).unwrap_or(usize::MAX);
        accounts::Fold::new(budget, hash_cap)
    }

    /// What the ids already loaded within the dedupe window may take: a quarter of `--memory-limit`.
    pub(crate) fn dedupe_budget(&self) -> u64 {
        if self.reach() == Reach::Nothing {
            0
        } else {
            self.memory_limit / 4
        }
    }

    /// How far earlier runs' ids count.
    pub(crate) fn reach(&self) -> Reach {
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
        // Each shard is a run of its own (shards whose shares are both empty still differ).
        if let Some(shard) = self.shard {
            h.update(format!(" shard={shard}").as_bytes());
        }
        for i in identities {
            let i = i.as_ref();
            h.update(&(i.len() as u64).to_le_bytes());
            h.update(i);
        }
        format!("{:016x}", h.digest128() as u64)
    }
}

/// Runs `group-loader load`. Returns the run's report (also when its inputs were already loaded). With
/// `--metrics`, writes the run's figures, also when it fails (with the report's figures when there is one).
pub fn load(opts: &LoadOptions) -> Result<Report> {
    let started = Instant::now();
    let mut seen = None;
    let result = run(opts, started, &mut seen);
    if let Some(path) = &opts.metrics {
        let mut m = crate::metrics::Metrics::new("load", &opts.output.to_string());
        if let Some(report) = result.as_ref().ok().or(seen.as_ref()) {
            metrics_of(&mut m, report);
        }
        m.gauge(
            "duration_seconds",
            "How long the command ran.",
            started.elapsed().as_secs_f64(),
        );
        m.write(path, result.as_ref().err().map_or(0, Error::exit_code))?;
    }
    result
}

fn run(opts: &LoadOptions, started: Instant, seen: &mut Option<Report>) -> Result<Report> {
    let started_at = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    if !(0.0..=1.0).contains(&opts.max_reject_ratio) {
        return Err(Error::Usage(format!(
            "--max-reject-ratio must be between 0 and 1, got {}",
            opts.max_reject_ratio
        )));
    }
    if opts.report.as_deref() == Some(std::path::Path::new("-"))
        && opts.rejects.as_deref() == Some(std::path::Path::new("-"))
    {
        return Err(Error::Usage(
            "--report - and --rejects - would both write to standard output, mixed: give one of them a path"
                .into(),
        ));
    }
    crate::store::set_retry_timeout(opts.retry_timeout);
    let within = max_line_bytes_within(opts.memory_limit);
    if opts.max_line_bytes > within {
        return Err(Error::Usage(format!(
            "--max-line-bytes {} MiB cannot be held within --memory-limit {} MiB: a line takes up to \
             {LINE_COPIES} times its length while it is parsed and written, so this limit holds lines of at \
             most {} MiB. Lower --max-line-bytes, or raise --memory-limit to at least {} MiB",
            opts.max_line_bytes >> 20,
            opts.memory_limit >> 20,
            within >> 20,
            (opts.max_line_bytes as u64 * LINE_COPIES + FIXED_BYTES).div_ceil(1 << 20)
        )));
    }
    if let Some(db) = &opts.glue_database {
        glue::check(db, opts.output.url(), opts.format() == Format::Delta)?;
    }
    let pool = thread_pool(opts)?;
    let (sources, shard) = inputs(opts)?;
    let (mut table, partition) = crate::table::open(opts)?;
    let resolved;
    let opts = if partition == opts.partition {
        opts
    } else {
        // `--partition` was not given: the dataset's recorded partitioning.
        resolved = LoadOptions {
            partition,
            ..opts.clone()
        };
        &resolved
    };
    let staging = table.staging()?;
    // Checked before anything is read, even for inputs already loaded: a run that could not load them right
    // fails the same way every time.
    let rules = super::privacy::at_load(&*table, opts)?;
    let total: Option<u64> = sources.iter().map(Source::size).sum();
    let progress = Progress::new(opts.progress, opts.quiet, total);
    let ctx = Context {
        opts,
        started_at: &started_at,
        pool: &pool,
        progress: &progress,
        started,
        shard,
    };
    // Known before reading when every input has an identity (files and objects do; standard input does not).
    let upfront_id = sources
        .iter()
        .map(Source::identity)
        .collect::<Option<Vec<_>>>()
        .map(|ids| opts.run_id(ids));
    let retried = match &upfront_id {
        Some(id) => already_loaded(&*table, &ctx, id)?,
        None => None,
    };
    let read = match retried {
        // A retried job: nothing to read.
        Some(read) => Ok(read),
        None => ingest(&*table, &ctx, sources, &staging, &rules),
    };
    release_freed_memory();
    let published = read.and_then(|read| publish(&mut *table, read, &staging, &ctx));
    drop(staging);
    progress.finish();
    let mut report = published?;
    register(opts, partition, &mut report)?;
    *seen = Some(report.clone());
    finish(opts, report)
}

/// `--glue-database`: once the tables hold this run's rows (or an earlier run's of the same inputs), they are
/// created or updated in Glue. A failure here comes after the rows were published (exit 6): a re-run of the
/// same inputs commits nothing and registers them.
fn register(
    opts: &LoadOptions,
    partition: crate::layout::PartitionMode,
    report: &mut Report,
) -> Result<()> {
    let (Some(db), Some(url)) = (&opts.glue_database, opts.output.url()) else {
        return Ok(());
    };
    let loaded = report.published || report.not_published == Some(NotPublished::AlreadyLoaded);
    if !loaded {
        return Ok(());
    }
    let tables: &[schema::Table] = match opts.accounts {
        true => &[schema::Table::Groups, schema::Table::Accounts],
        false => &[schema::Table::Groups],
    };
    report.glue = glue::register(db, url, partition, tables)
        .map_err(Error::after_publish("registering the tables in AWS Glue"))?;
    Ok(())
}

/// A run's figures as metrics.
fn metrics_of(m: &mut crate::metrics::Metrics, r: &Report) {
    let c = &r.counts;
    let read: u64 = r.inputs.iter().map(|i| i.bytes).sum();
    for (name, help, v) in [
        (
            "rows_written",
            "Rows the run added to groups.",
            c.rows_written,
        ),
        (
            "events_read",
            "Events read (a batch line counts its events).",
            c.events,
        ),
        ("lines_read", "Lines read.", c.lines),
        ("blank_lines", "Blank lines.", c.blank),
        (
            "bytes_read",
            "Bytes read from the inputs (compressed).",
            read,
        ),
        ("inputs", "Input files read.", r.inputs.len() as u64),
        (
            "suppressed",
            "Events of suppressed ids, not loaded.",
            c.suppressed,
        ),
        (
            "files_written",
            "groups files the run published.",
            r.files.len() as u64,
        ),
        (
            "partitions_written",
            "Partitions the run wrote.",
            r.partitions.len() as u64,
        ),
        (
            "published",
            "1 when the run published its rows.",
            u64::from(r.published),
        ),
    ] {
        m.gauge(name, help, v as f64);
    }
    m.family("skipped", "Lines of other event types, skipped, by type.");
    for (kind, n) in &c.skipped {
        m.labelled("skipped", "", &[("type", kind)], *n as f64);
    }
    m.family(
        "rejected",
        "Rejected lines by reason (duplicates included).",
    );
    for (reason, n) in &c.rejected {
        m.labelled("rejected", "", &[("reason", reason)], *n as f64);
    }
    let help = "Events dropped as duplicates of a messageId, by who loaded it first.";
    m.labelled(
        "duplicates",
        help,
        &[("first", "this_run")],
        c.duplicates.this_run as f64,
    );
    m.labelled(
        "duplicates",
        help,
        &[("first", "earlier_runs")],
        c.duplicates.earlier_runs as f64,
    );
    m.gauge(
        "reject_ratio",
        "Rejected share of the lines considered.",
        r.reject_ratio,
    );
}

/// What reading left to publish: the report so far, with the staged run or the earlier run that already
/// loaded these inputs.
enum Read {
    Staged(Report, Staged),
    AlreadyLoaded(Report, EarlierRun),
}

/// Has the table publish what the report decided (the rows; only the record, saying why not; or, for inputs
/// already loaded, `accounts` as the options ask), and fills the report in from what it did. The table stores
/// the report through [`record_bytes`], at the moment its format needs it.
fn publish(
    table: &mut dyn Table,
    read: Read,
    staging: &Staging,
    ctx: &Context<'_>,
) -> Result<Report> {
    // The elapsed time of the last record the table stored: the report returned is that record.
    let stored = std::cell::Cell::new(None::<f64>);
    let (mut report, outcome) = match read {
        Read::AlreadyLoaded(report, earlier) => {
            let outcome = table.keep_accounts(&earlier, staging, ctx)?;
            (report, outcome)
        }
        Read::Staged(report, run) => {
            let record = |o: &Outcome| {
                let elapsed = ctx.started.elapsed().as_secs_f64();
                stored.set(Some(elapsed));
                record_bytes(&report, o, elapsed)
            };
            let outcome = if report.not_published.is_none() {
                table.publish_rows(run, staging, ctx, &record)?
            } else {
                table.keep_record(run, staging, ctx, &record)?
            };
            (report, outcome)
        }
    };
    let elapsed = match outcome.visibility {
        // The record was removed: this report was never stored.
        Visibility::SameRunFirst => None,
        _ => stored.get(),
    };
    fill(
        &mut report,
        &outcome,
        elapsed.unwrap_or_else(|| ctx.started.elapsed().as_secs_f64()),
    );
    Ok(report)
}

/// The report's bytes for what publishing did so far.
fn record_bytes(report: &Report, outcome: &Outcome, elapsed_s: f64) -> Result<Vec<u8>> {
    let mut report = report.clone();
    fill(&mut report, outcome, elapsed_s);
    report.to_json()
}

/// Fills the report in from what publishing did.
fn fill(report: &mut Report, o: &Outcome, elapsed_s: f64) {
    report.files.clone_from(&o.files);
    report.partitions.clone_from(&o.partitions);
    report.replaced.clone_from(&o.replaced);
    report.rejects_file.clone_from(&o.rejects_file);
    report.accounts.clone_from(&o.accounts);
    report.commit.clone_from(&o.commit);
    match o.visibility {
        // As the load decided.
        Visibility::Held => {}
        Visibility::CommitPending => {
            report.published = false;
            report.not_published = Some(NotPublished::CommitPending);
        }
        Visibility::Published => {
            report.published = true;
            report.not_published = None;
        }
        Visibility::SameRunFirst => {
            report.published = false;
            report.not_published = Some(NotPublished::AlreadyLoaded);
            report.already_loaded = Some("a concurrent run of the same inputs".into());
        }
    }
    // Rows dropped before the commit as duplicates of concurrent commits: counted as duplicates, not written.
    let k = o.commit.as_ref().map_or(0, |c| c.concurrent_duplicates);
    if k > 0 {
        let c = &mut report.counts;
        c.rows_written -= k;
        c.duplicates.earlier_runs += k;
        *c.rejected
            .entry(crate::reject::Reason::DuplicateMessageId.as_str())
            .or_insert(0) += k;
    }
    report.elapsed_s = elapsed_s;
}

/// The inputs this run reads: the listing of `INPUT...`, or with `--shard` this shard's share of it.
fn inputs(opts: &LoadOptions) -> Result<(Vec<Source>, Option<ShardReport>)> {
    let Some(k_of_n) = opts.shard else {
        return Ok((listing(opts)?, None));
    };
    // Checked before listing: a prefix on object storage can take a while to walk.
    if opts.format() != Format::Delta {
        return Err(Error::Usage(format!(
            "--shard needs --format delta: shards commit into one dataset at the same time, which Delta tables \
             allow and a hive folder (one run at a time, exit 4) does not; add --format delta or load into an \
             object-store URL (not {})",
            opts.output
        )));
    }
    let (mine, report) = shard::share(listing(opts)?, k_of_n)?;
    Ok((mine, Some(report)))
}

/// The listing of `INPUT...`, saying on stderr which links of the input folders were not followed.
fn listing(opts: &LoadOptions) -> Result<Vec<Source>> {
    let listing = input::discover(&opts.inputs, &opts.output, opts.follow_links)?;
    for place in &listing.empty {
        // Said even with --quiet: a night that loads nothing from a folder is worth a line in the log.
        eprintln!(
            "group-loader: warning: no input files (*.json, *.jsonl, *.ndjson, *.gz, *.zst) under {place}: \
             nothing to load from it (a late export?)"
        );
    }
    if let Some(first) = listing.skipped_links.first() {
        // Said even with --quiet: lines left unread are never silent.
        eprintln!(
            "group-loader: warning: not following {} link(s) that lead out of their input folder (the first: \
             {}); --follow-links reads them",
            listing.skipped_links.len(),
            first.display()
        );
    }
    Ok(listing.sources)
}

/// The run's one thread pool: parsing, encoding and the accounts merge all run on it.
pub(crate) fn thread_pool(opts: &LoadOptions) -> Result<Arc<rayon::ThreadPool>> {
    let mut pool = rayon::ThreadPoolBuilder::new();
    if let Some(n) = opts.threads {
        if n == 0 {
            return Err(Error::Usage("--threads must be at least 1".into()));
        }
        pool = pool.num_threads(n);
    }
    pool.build()
        .map(Arc::new)
        .map_err(|e| Error::Usage(format!("cannot start threads: {e}")))
}

/// After the run: the copies asked for, the summary, and the outcome the report calls for.
fn finish(opts: &LoadOptions, report: Report) -> Result<Report> {
    if !opts.quiet {
        eprint!("{}", report.summary());
    }
    // A copy that cannot be written after the rows were published must not say "nothing published".
    let copied = copy_out(opts, &report);
    if report.published || report.finished.is_some() {
        copied.map_err(Error::after_publish("the --report/--rejects copy"))?;
    } else {
        copied?;
    }
    let c = &report.counts;
    match report.not_published {
        None | Some(NotPublished::AlreadyLoaded) => Ok(report),
        Some(NotPublished::CommitPending) => Err(Error::Internal(format!(
            "run {} ended with its commit still pending",
            report.run
        ))),
        Some(NotPublished::RejectRatio) => Err(Error::RejectRatio {
            rejected: c.rejected_for_ratio(),
            considered: c.considered(),
            ratio: report.reject_ratio,
            max: opts.max_reject_ratio,
            rejects: report
                .rejects_file
                .as_deref()
                .map(|r| format!("{}/{r}", report.output))
                .unwrap_or_default(),
            hint: report.not_ndjson.first().map(|n| n.hint.clone()),
        }),
        Some(NotPublished::MinRows) => Err(Error::MinRows {
            rows: c.rows_written,
            already_loaded: c.duplicates.earlier_runs,
            min: opts.min_rows,
            events: c.events,
            skipped: c.skipped_total(),
            rejected: c.rejected_total() - c.duplicates(),
            duplicates: c.duplicates(),
        }),
    }
}

/// The report of a run whose inputs a published run with the same id already loaded (a retried job): it
/// has nothing to do. `--mode overwrite` always processes its inputs again.
fn already_loaded(table: &dyn Table, ctx: &Context<'_>, run_id: &str) -> Result<Option<Read>> {
    if ctx.opts.mode != Mode::Append {
        return Ok(None);
    }
    let Some(earlier) = table.already_loaded(run_id)? else {
        return Ok(None);
    };
    let mut report = new_report(ctx, run_id);
    report.published = false;
    report.not_published = Some(NotPublished::AlreadyLoaded);
    report.already_loaded = Some(earlier.started_at.clone());
    report.finished.clone_from(&earlier.unfinished);
    Ok(Some(Read::AlreadyLoaded(report, earlier)))
}

/// A report with the run's identity and options, and nothing counted yet.
fn new_report(ctx: &Context<'_>, run_id: &str) -> Report {
    let opts = ctx.opts;
    Report {
        run: run_id.to_string(),
        tool_version: schema::TOOL_VERSION,
        schema_version: schema::SCHEMA_VERSION,
        started_at: ctx.started_at.to_string(),
        output: opts.output.to_string(),
        options: serde_json::json!({
            "format": opts.format,
            "partition": opts.partition,
            "compression": opts.codec,
            "mode": opts.mode,
            "max_reject_ratio": opts.max_reject_ratio,
            "min_rows": opts.min_rows,
            "dedupe": opts.dedupe,
            "dedupe_window": humantime::format_duration(opts.dedupe_window).to_string(),
            "memory_limit": opts.memory_limit,
            "max_line_bytes": opts.max_line_bytes,
            "threads": ctx.pool.current_num_threads(),
            "shard": opts.shard.map(|s| s.to_string()),
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
        finished: None,
        accounts: None,
        commit: None,
        shard: ctx.shard.clone(),
        glue: Vec::new(),
        one_file: opts.format() == Format::Parquet,
    }
}

/// Copies the report (and rejects) to `--report` / `--rejects` when asked (see [`crate::atomic::write_copy`]).
fn copy_out(opts: &LoadOptions, report: &Report) -> Result<()> {
    if let Some(path) = &opts.report {
        crate::atomic::write_copy(path, &mut &report.to_json()?[..])?;
    }
    if opts.format() == Format::Parquet {
        // One file: its rejects were written to --rejects already (there is no dataset to copy them from).
        return Ok(());
    }
    if let (Some(path), Some(rel)) = (&opts.rejects, &report.rejects_file) {
        match &opts.output {
            Output::Url(url) => {
                let bytes = crate::store::Location::parse(url)?.join(rel).get_bytes()?;
                crate::atomic::write_copy(path, &mut &bytes.unwrap_or_default()[..])?;
            }
            Output::Local(out) => {
                let from = out.join(rel);
                let mut file =
                    std::fs::File::open(&from).map_err(Error::io("reading rejects file", &from))?;
                crate::atomic::write_copy(path, &mut file)?;
            }
        }
    }
    Ok(())
}

/// Reads every input into staged files and decides whether the rows may be published: the whole run, or
/// (reject ratio exceeded, fewer rows than `--min-rows`) only its report, saying `published: false`, and its
/// rejects.
fn ingest(
    table: &dyn Table,
    ctx: &Context<'_>,
    mut sources: Vec<Source>,
    staging: &Staging,
    rules: &AtLoad,
) -> Result<Read> {
    let (opts, pool, progress) = (ctx.opts, ctx.pool, ctx.progress);
    let reading = Reading {
        max_line_bytes: opts.max_line_bytes,
        chunk_bytes: opts.chunk_bytes(),
        readers: opts.readers(),
        pool,
        partition: opts.partition,
        privacy: Some(rules),
    };
    let being_replaced = partitions_being_replaced(ctx, &reading, &mut sources, staging)?;
    let reach = opts.reach();
    let partitions = match reach {
        Reach::Nothing => Vec::new(),
        _ => table.earlier(opts.partition, &being_replaced)?,
    };
    let mut earlier = EarlierIds::new(
        reach,
        partitions,
        opts.dedupe_budget(),
        format!("{} MiB", opts.memory_limit >> 20),
    );
    let mut writer = GroupsWriter::new(staging.groups(), opts.writer_config(), pool.clone());
    let fold = opts.accounts.then(|| Arc::new(opts.accounts_fold()));
    if let Some(fold) = &fold {
        writer = writer.with_observer(fold.clone());
    }
    let mut run = Run::new(
        opts.dedupe.then(SeenIds::default),
        RejectsWriter::new(staging.rejects()).with_raw(super::privacy::raw_lines(rules)),
        writer,
    );
    let read = read_inputs(&reading, &sources, &mut run, Some(&mut earlier), progress)?;
    let run_id = opts.run_id(&read.identities);
    if let Some(read) = already_loaded(table, ctx, &run_id)? {
        // Standard input, identified only now, repeats a published run.
        return Ok(read);
    }
    let mut report = new_report(ctx, &run_id);
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
    let files = writer.finish()?;
    check_staged(&files, &counts, staging)?;
    // The writer, which shared the fold, is gone, and its encoding tasks released their shares before
    // reporting. (Were one still held, the merge would read the run's files back instead: slower, equal.)
    let fold = fold
        .and_then(Arc::into_inner)
        .map(accounts::Fold::finish)
        .transpose()?
        .flatten()
        .map(Box::new);
    report.reject_ratio = counts.reject_ratio();
    report.not_published = not_published(ctx, &counts);
    report.published = report.not_published.is_none();
    let staged = Staged {
        run: run_id,
        started_at: ctx.started_at.to_string(),
        inputs: report.inputs.iter().map(|i| i.path.clone()).collect(),
        files,
        rejects: rejects.finish()?,
        rows: counts.rows_written,
        rejected: counts.rejected_total(),
        fold,
    };
    report.counts = counts;
    report.not_ndjson = not_ndjson;
    Ok(Read::Staged(report, staged))
}

/// Overwrite: the partitions this run's rows fall in are being replaced, so their rows are not "already
/// loaded". A first pass finds them (standard input is kept in the staging folder to be read twice).
fn partitions_being_replaced(
    ctx: &Context<'_>,
    reading: &Reading<'_>,
    sources: &mut [Source],
    staging: &Staging,
) -> Result<BTreeSet<i64>> {
    let opts = ctx.opts;
    if opts.mode != Mode::Overwrite || opts.reach() == Reach::Nothing {
        return Ok(BTreeSet::new());
    }
    input::spool_stdin(sources, staging.dir())?;
    let mut seen = PartitionsSeen::new(opts.partition);
    ctx.progress.reading(Phase::FirstPass);
    read_inputs(reading, sources, &mut seen, None, ctx.progress)?;
    ctx.progress.reading(Phase::Reading);
    Ok(seen.buckets)
}

/// Never lose a row silently: what the staged files hold must be what was counted, or nothing is published.
fn check_staged(files: &[StagedFile], counts: &Counts, staging: &Staging) -> Result<()> {
    let staged_rows: u64 = files.iter().map(|f| f.rows).sum();
    if staged_rows == counts.rows_written {
        return Ok(());
    }
    Err(Error::Internal(format!(
        "{} rows counted but {staged_rows} rows written to the files of {}",
        counts.rows_written,
        staging.dir().display()
    )))
}

/// Why a run's rows may not be published: too many rejects, or fewer rows than `--min-rows`.
fn not_published(ctx: &Context<'_>, counts: &Counts) -> Option<NotPublished> {
    let opts = ctx.opts;
    if counts.reject_ratio() > opts.max_reject_ratio {
        Some(NotPublished::RejectRatio)
    } else if counts.rows_written + counts.duplicates.earlier_runs < opts.min_rows
        && ctx
            .shard
            .as_ref()
            .is_none_or(|s| s.files != 0 || s.listed_files == 0)
    {
        // Events that earlier runs already loaded count toward --min-rows: a replayed export is not a broken
        // one. (A shard given no files, because there are fewer files than shards, is a successful empty run;
        // an empty listing, a late export, is not.)
        Some(NotPublished::MinRows)
    } else {
        None
    }
}

/// Hands the memory that ingest freed back to the system before publishing. glibc keeps freed memory in its
/// arenas (fragmented by thousands of builder buffers), and the accounts merge would then reach its peak on
/// top of what ingest left behind. Measured (1M events, default job, 3 runs each): peak RSS 431-476 MB before,
/// 382-392 MB after with 100,000 groups; 596-645 MB before, 457-493 MB after with 1M groups; same wall time.
/// Trimming during ingest too (every 8 or 32 chunks) lowered the 5M and 1M peaks alike but not their ratio,
/// and cost system time: not done. A no-op elsewhere than glibc.
fn release_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim takes no pointer and only returns free pages of glibc's own arenas to the system.
    unsafe {
        libc::malloc_trim(0);
    }
}
