//! The `load` subcommand: inputs -> lines -> rows -> Parquet, then publish (SPEC §1-§8).
//!
//! Why this module exists: it is the one place that knows the order of a run — lock, recover, stage, read,
//! classify in parallel, apply in input order (counts, dedupe, rejects, partition buffers), decide on the
//! reject ratio, publish or discard — so each other module can stay ignorant of the others.
//!
//! Determinism: lines are cut into chunks by bytes, parsed in parallel, and applied strictly in input order;
//! row groups are flushed only between chunks. So rows, row groups and file names do not depend on
//! `--threads`. The run id is a hash of the inputs' decompressed content and of the options that shape rows,
//! so re-running the same command on the same inputs writes the same file names, replacing (not adding).

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc::{Receiver, Sender, channel, sync_channel};
use std::time::Instant;

use xxhash_rust::xxh3::Xxh3;

use crate::accounts::{self, ACCOUNTS_DIR};
use crate::dedupe::SeenIds;
use crate::error::{Error, Result};
use crate::input::{self, Compression, Source};
use crate::lines::{Chunk, LineReader};
use crate::publish::{self, Plan, Staging};
use crate::rejects::RejectsWriter;
use crate::report::{
    AccountsReport, FileReport, InputReport, NotPublished, Phase, Progress, ProgressWhen, Report,
};
use crate::run::{Parsed, Run, parse_chunk};
use crate::schema;
use crate::writer::{Codec, GroupsWriter, PartitionMode, StagedFile, WriterConfig};

/// `--mode`: what a run does to data already in the output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Add this run's files; other runs' files stay. Re-running the same inputs replaces its own files.
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
    pub dedupe: bool,
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

/// Sub-folders of the output.
pub const GROUPS_DIR: &str = "groups";
pub const REJECTS_DIR: &str = "_rejects";
pub const RUNS_DIR: &str = "_runs";

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
        let budget = (limit.saturating_sub(reading + baseline) / 5).max(1 << 20);
        WriterConfig {
            partition: self.partition,
            codec: self.codec,
            row_group_bytes: (budget / 2).clamp(1 << 20, 128 << 20),
            buffer_budget: budget,
            file_max_bytes: 1 << 30,
            max_open_files: 256,
        }
    }

    /// The options that shape which rows exist and where (hashed into the run id).
    fn row_shaping(&self) -> String {
        format!(
            "schema={} partition={:?} dedupe={} max_line_bytes={}",
            schema::SCHEMA_VERSION,
            self.partition,
            self.dedupe,
            self.max_line_bytes
        )
    }
}

/// Hashes what passes through it (the decompressed input), for the run id.
struct Hashing<R> {
    inner: R,
    hasher: Xxh3,
    bytes: u64,
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
}

/// What a reader thread sends for one input, in order: chunks, then `Done` (or `Failed`).
enum Feed {
    Chunk {
        chunk: Chunk,
        raw_read: u64,
    },
    Done {
        raw_bytes: u64,
        decompressed_bytes: u64,
        hash: u128,
        compression: Compression,
    },
    Failed(Error),
}

/// Chunks a reader may read ahead of the parser, per input.
const PREFETCH_CHUNKS: usize = 2;

/// Reads (and decompresses) one input on its own thread, cutting it into chunks of lines. Chunk buffers sent
/// back on the returned sender are reused.
fn spawn_reader(
    source: Source,
    max_line_bytes: usize,
    chunk_bytes: usize,
) -> (Receiver<Feed>, Sender<Vec<u8>>) {
    let (tx, rx) = sync_channel(PREFETCH_CHUNKS);
    let (recycle, recycled) = channel();
    std::thread::spawn(move || {
        let read = || -> Result<Feed> {
            let opened = input::open(&source)?;
            let raw = opened.raw_bytes_read.clone();
            let raw_read = || raw.load(std::sync::atomic::Ordering::Relaxed);
            let hashing = Hashing {
                inner: opened.reader,
                hasher: Xxh3::new(),
                bytes: 0,
            };
            let mut reader =
                LineReader::new(hashing, max_line_bytes, chunk_bytes).with_recycling(recycled);
            loop {
                match reader.next_chunk() {
                    Ok(Some(chunk)) => {
                        if tx
                            .send(Feed::Chunk {
                                chunk,
                                raw_read: raw_read(),
                            })
                            .is_err()
                        {
                            // The run stopped (an error elsewhere): nothing left to do.
                            return Err(Error::Usage("cancelled".into()));
                        }
                    }
                    Ok(None) => break,
                    Err(source_err) => {
                        return Err(Error::Read {
                            path: source.name(),
                            offset: raw_read(),
                            line: reader.next_line_number(),
                            source: source_err,
                        });
                    }
                }
            }
            let hashing = reader.into_inner();
            Ok(Feed::Done {
                raw_bytes: raw_read(),
                decompressed_bytes: hashing.bytes,
                hash: hashing.hasher.digest128(),
                compression: opened.compression,
            })
        };
        let last = read().unwrap_or_else(Feed::Failed);
        let _ = tx.send(last);
    });
    (rx, recycle)
}

/// Runs `group-loader load`. On success returns the report of the published run.
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
    let _lock = publish::lock(out)?;
    let discarded = publish::recover(out)?;
    if !opts.quiet && discarded > 0 {
        eprintln!("group-loader: recovered the output: removed {discarded} unpublished run(s)");
    }
    publish::prepare(out)?;
    let staging = Staging::create(out)?;
    let mut pool = rayon::ThreadPoolBuilder::new();
    if let Some(n) = opts.threads {
        pool = pool.num_threads(n);
    }
    let pool = Arc::new(
        pool.build()
            .map_err(|e| Error::Usage(format!("cannot start threads: {e}")))?,
    );
    let total: Option<u64> = sources.iter().map(Source::size).sum();
    let progress = Progress::new(opts.progress, opts.quiet, total);
    let staged = stage(
        opts,
        &pool,
        &sources,
        &staging,
        &progress,
        (started, started_at),
    );
    let (report, plan) = match staged {
        Ok(staged) => staged,
        Err(e) => {
            progress.finish();
            // Nothing of this run is published; a failure to clean up is repaired by the next run.
            let _ = staging.discard();
            return Err(e);
        }
    };
    progress.phase(
        Phase::Publishing,
        report.counts.rows_written,
        report.counts.rejected_total(),
    );
    // A run that does not publish its rows still publishes its report and rejects (the plan holds only them).
    let published = publish::publish(out, staging, &plan);
    progress.finish();
    published?;
    copy_out(opts, &report)?;
    if !opts.quiet {
        eprint!("{}", report.summary());
    }
    let c = &report.counts;
    match report.not_published {
        None => Ok(report),
        Some(NotPublished::RejectRatio) => Err(Error::RejectRatio {
            rejected: c.rejected_for_ratio(),
            considered: c.considered(),
            ratio: report.reject_ratio,
            max: opts.max_reject_ratio,
            rejects: report
                .rejects_file
                .as_deref()
                .map(|r| out.join(r).display().to_string())
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

/// What reading the inputs gives: one report per input, and the run id (a hash of their content).
struct InputsRead {
    inputs: Vec<InputReport>,
    run_id: String,
}

/// Reads every input, in order, through the run: readers decompress and cut chunks ahead on their own
/// threads, each chunk is parsed on the pool while the previous one is applied in input order.
fn read_inputs(
    opts: &LoadOptions,
    pool: &Arc<rayon::ThreadPool>,
    sources: &[Source],
    run: &mut Run,
    progress: &Progress,
) -> Result<InputsRead> {
    let mut run_hash = Xxh3::new();
    run_hash.update(opts.row_shaping().as_bytes());
    let mut inputs = Vec::with_capacity(sources.len());
    let mut done = 0;
    // Inputs are read (and decompressed) up to `pool threads` at a time, consumed strictly in order.
    let ahead = pool.current_num_threads().max(1);
    // With one thread, parse and apply take turns; with more, they overlap.
    let overlap = pool.current_num_threads() > 1;
    let mut readers: VecDeque<(Receiver<Feed>, Sender<Vec<u8>>)> = VecDeque::new();
    let mut spawned = 0;
    for source in sources {
        while spawned < sources.len() && readers.len() < ahead {
            readers.push_back(spawn_reader(
                sources[spawned].clone(),
                opts.max_line_bytes,
                opts.chunk_bytes(),
            ));
            spawned += 1;
        }
        let Some((feed, recycle)) = readers.pop_front() else {
            break;
        };
        let (lines_before, events_before) = (run.counts.lines, run.counts.events);
        let name = source.name();
        let mut pending: Option<Parsed> = None;
        loop {
            match feed.recv() {
                Ok(Feed::Chunk { chunk, raw_read }) => {
                    let previous = pending.take();
                    let (parsed, applied) = if overlap {
                        // Parse this chunk on the pool while the previous one is applied here.
                        let (parsed, applied) = std::thread::scope(|s| {
                            let parser = s.spawn(|| parse_chunk(chunk, opts.max_line_bytes, pool));
                            let applied = run.apply(&name, previous);
                            (parser.join(), applied)
                        });
                        let parsed = parsed.map_err(|_| Error::Io {
                            action: "parsing",
                            path: name.clone().into(),
                            source: std::io::Error::other("internal: the parser thread panicked"),
                        });
                        (parsed, applied)
                    } else {
                        let applied = run.apply(&name, previous);
                        (Ok(parse_chunk(chunk, opts.max_line_bytes, pool)), applied)
                    };
                    if let Some(buf) = applied? {
                        let _ = recycle.send(buf);
                    }
                    pending = Some(parsed?);
                    let c = &run.counts;
                    progress.read(done + raw_read, c.rows_written, c.rejected_total());
                }
                Ok(Feed::Done {
                    raw_bytes,
                    decompressed_bytes,
                    hash,
                    compression,
                }) => {
                    run.apply(&name, pending.take())?;
                    done += raw_bytes;
                    run_hash.update(&hash.to_le_bytes());
                    run_hash.update(&decompressed_bytes.to_le_bytes());
                    inputs.push(InputReport {
                        path: name,
                        bytes: raw_bytes,
                        decompressed_bytes,
                        compression: compression.name(),
                        lines: run.counts.lines - lines_before,
                        events: run.counts.events - events_before,
                    });
                    break;
                }
                Ok(Feed::Failed(e)) => return Err(e),
                Err(_) => {
                    return Err(Error::Io {
                        action: "reading",
                        path: name.into(),
                        source: std::io::Error::other(
                            "internal: the reader thread ended without answering",
                        ),
                    });
                }
            }
        }
    }
    Ok(InputsRead {
        inputs,
        run_id: format!("{:016x}", run_hash.digest128() as u64),
    })
}

/// Reads every input into staged files, then decides what to publish: the whole run, or (reject ratio
/// exceeded, fewer rows than `--min-rows`) only its report, saying `published: false`, and its rejects.
fn stage(
    opts: &LoadOptions,
    pool: &Arc<rayon::ThreadPool>,
    sources: &[Source],
    staging: &Staging,
    progress: &Progress,
    (started, started_at): (Instant, String),
) -> Result<(Report, Plan)> {
    let out = opts.output.as_path();
    let mut run = Run::new(
        opts.dedupe.then(SeenIds::default),
        RejectsWriter::new(staging.dir().join("rejects.ndjson")),
        GroupsWriter::new(
            staging.dir().join(GROUPS_DIR),
            opts.writer_config(),
            pool.clone(),
        ),
    );
    let InputsRead { inputs, run_id } = read_inputs(opts, pool, sources, &mut run, progress)?;
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

    let final_file = |f: &StagedFile| {
        Path::new(GROUPS_DIR)
            .join(&f.partition)
            .join(format!("part-{run_id}-{:05}.parquet", f.seq))
    };
    let rejects_rel = staged_rejects
        .as_ref()
        .map(|_| Path::new(REJECTS_DIR).join(format!("{run_id}.ndjson")));
    let report_rel = Path::new(RUNS_DIR).join(format!("{run_id}.json"));
    let mut partitions = BTreeMap::new();
    for f in &staged {
        *partitions.entry(f.partition.clone()).or_insert(0) += f.rows;
    }
    let reject_ratio = counts.reject_ratio();
    let not_published = if reject_ratio > opts.max_reject_ratio {
        Some(NotPublished::RejectRatio)
    } else if counts.rows_written < opts.min_rows {
        Some(NotPublished::MinRows)
    } else {
        None
    };
    let published = not_published.is_none();
    let mut report = Report {
        run: run_id.clone(),
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
            "memory_limit": opts.memory_limit,
            "max_line_bytes": opts.max_line_bytes,
            "threads": pool.current_num_threads(),
        }),
        inputs,
        counts,
        reject_ratio,
        max_reject_ratio: opts.max_reject_ratio,
        min_rows: opts.min_rows,
        not_ndjson,
        partitions: if published {
            partitions
        } else {
            BTreeMap::new()
        },
        files: if published {
            staged
                .iter()
                .map(|f| FileReport {
                    path: rel(&final_file(f)),
                    rows: f.rows,
                    bytes: f.bytes,
                })
                .collect()
        } else {
            Vec::new()
        },
        rejects_file: rejects_rel.as_deref().map(rel),
        elapsed_s: 0.0,
        published,
        not_published,
        accounts: None,
    };

    let mut plan = Plan::default();
    if published {
        for f in &staged {
            plan.adds.push((f.staged.clone(), final_file(f)));
        }
        plan.removes
            .extend(replaced_files(out, opts.mode, &run_id, &plan)?);
        progress.phase(
            Phase::Accounts,
            report.counts.rows_written,
            report.counts.rejected_total(),
        );
        report.accounts = update_accounts(opts, pool, staging, &staged, &mut plan)?;
    }
    match (&staged_rejects, &rejects_rel) {
        (Some(from), Some(to)) => plan.adds.push((from.clone(), to.clone())),
        _ => plan
            .removes
            .push(Path::new(REJECTS_DIR).join(format!("{run_id}.ndjson"))),
    }
    report.elapsed_s = started.elapsed().as_secs_f64();
    let staged_report = staging.dir().join("report.json");
    let mut f =
        fs::File::create(&staged_report).map_err(Error::io("writing report", &staged_report))?;
    f.write_all(&report_json(&report)?)
        .and_then(|()| f.sync_all())
        .map_err(Error::io("writing report", &staged_report))?;
    plan.adds.push((staged_report, report_rel));
    Ok((report, plan))
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
