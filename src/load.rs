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

use std::collections::{BTreeMap, HashSet};
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Instant;

use rayon::prelude::*;
use xxhash_rust::xxh3::{Xxh3, xxh3_128};

use crate::error::{Error, Result};
use crate::input::{self, Source};
use crate::lines::LineReader;
use crate::parse::{self, Outcome, Reason, Reject};
use crate::publish::{self, Journal, Staging};
use crate::rejects::RejectsWriter;
use crate::report::{Counts, FileReport, InputReport, Progress, ProgressWhen, Report};
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
    pub rejects: Option<PathBuf>,
    pub report: Option<PathBuf>,
    pub memory_limit: u64,
    pub dedupe: bool,
    pub progress: ProgressWhen,
    pub quiet: bool,
    pub max_line_bytes: usize,
}

/// Sub-folders of the output.
pub const GROUPS_DIR: &str = "groups";
pub const REJECTS_DIR: &str = "_rejects";
pub const RUNS_DIR: &str = "_runs";

/// Bytes of lines per chunk handed to the parallel parser.
const CHUNK_BYTES: usize = 8 << 20;

impl LoadOptions {
    fn writer_config(&self) -> WriterConfig {
        // A quarter of the memory limit for buffered rows; each partition's row group up to 128 MiB of it.
        let budget = usize::try_from(self.memory_limit / 4)
            .unwrap_or(usize::MAX)
            .max(1 << 20);
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

/// The state a run accumulates while it applies outcomes in input order.
struct Run {
    counts: Counts,
    seen_ids: Option<HashSet<u128>>,
    rejects: RejectsWriter,
    writer: GroupsWriter,
}

impl Run {
    /// Applies one chunk's outcomes, in input order.
    fn apply(
        &mut self,
        file: &str,
        chunk: &crate::lines::Chunk,
        outcomes: Vec<Outcome<'_>>,
    ) -> Result<()> {
        for (line, outcome) in chunk.lines.iter().zip(outcomes) {
            self.counts.lines += 1;
            let reject = match outcome {
                Outcome::Blank => {
                    self.counts.blank += 1;
                    continue;
                }
                Outcome::Skipped(t) => {
                    self.counts.skip(&t);
                    continue;
                }
                Outcome::Rejected(r) => r,
                Outcome::Row(row) => {
                    let duplicate = match (&mut self.seen_ids, row.dedupe_key()) {
                        (Some(seen), Some(id)) => !seen.insert(xxh3_128(id.as_bytes())),
                        _ => false,
                    };
                    if !duplicate {
                        self.counts.rows_written += 1;
                        self.counts.shadowed_traits += u64::from(row.shadowed_traits);
                        self.counts.invalid_times += u64::from(row.invalid_times);
                        self.writer.append(&row);
                        continue;
                    }
                    Reject::new(
                        Reason::DuplicateMessageId,
                        format!(
                            "messageId {} is already loaded by this run",
                            parse::json_quote(row.dedupe_key().unwrap_or(""))
                        ),
                    )
                }
            };
            self.counts.reject(reject.reason);
            self.rejects.write(file, line, chunk.bytes(line), &reject)?;
        }
        self.writer.flush_due()
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

/// Reads one input through the parser into the run. Returns its report entry and content hash.
fn read_input(
    run: &mut Run,
    source: &Source,
    opts: &LoadOptions,
    progress: &Progress,
    done: u64,
) -> Result<(InputReport, u128)> {
    let name = source.name();
    let opened = input::open(source)?;
    let raw_read = opened.raw_bytes_read.clone();
    let hashing = Hashing {
        inner: opened.reader,
        hasher: Xxh3::new(),
        bytes: 0,
    };
    let mut reader = LineReader::new(hashing, opts.max_line_bytes, CHUNK_BYTES);
    let lines_before = run.counts.lines;
    loop {
        let chunk = match reader.next_chunk() {
            Ok(Some(c)) => c,
            Ok(None) => break,
            Err(source_err) => {
                return Err(Error::Read {
                    path: name,
                    offset: raw_read.load(std::sync::atomic::Ordering::Relaxed),
                    line: reader.next_line_number(),
                    source: source_err,
                });
            }
        };
        let outcomes: Vec<Outcome<'_>> = chunk
            .lines
            .par_iter()
            .map(|line| {
                parse::classify(
                    chunk.bytes(line),
                    line.too_long.map(|n| (n, opts.max_line_bytes as u64)),
                )
            })
            .collect();
        run.apply(&name, &chunk, outcomes)?;
        progress.set(done + raw_read.load(std::sync::atomic::Ordering::Relaxed));
    }
    let hashing = reader.into_inner();
    let report = InputReport {
        path: name,
        bytes: raw_read.load(std::sync::atomic::Ordering::Relaxed),
        decompressed_bytes: hashing.bytes,
        compression: opened.compression.name(),
        lines: run.counts.lines - lines_before,
    };
    Ok((report, hashing.hasher.digest128()))
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
    let sources = input::discover(&opts.inputs)?;
    let out = opts.output.as_path();
    let _lock = publish::lock(out)?;
    let (finished, discarded) = publish::recover(out)?;
    if !opts.quiet && finished + discarded > 0 {
        eprintln!(
            "group-loader: recovered the output: finished {finished} interrupted publish(es), removed {discarded} unpublished run(s)"
        );
    }
    let staging = Staging::create(out)?;
    let result = ingest_and_publish(opts, &sources, &staging, started, started_at);
    match result {
        Ok((report, journal)) => {
            if report.published {
                publish::publish(out, staging, &journal)?;
            } else {
                staging.discard()?;
            }
            copy_out(opts, &report)?;
            if !opts.quiet {
                eprint!("{}", report.summary());
            }
            if report.published {
                Ok(report)
            } else {
                let c = &report.counts;
                Err(Error::RejectRatio {
                    rejected: c.rejected_for_ratio(),
                    considered: c.considered(),
                    ratio: report.reject_ratio,
                    max: opts.max_reject_ratio,
                    rejects: report.rejects_file.clone().unwrap_or_default(),
                })
            }
        }
        Err(e) => {
            // Nothing of this run is published; a failure to clean up is repaired by the next run.
            let _ = staging.discard();
            Err(e)
        }
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

/// Reads every input into staged files, then decides: publish (returns the journal) or not (ratio exceeded:
/// the report and rejects are written directly, and the report says `published: false`).
fn ingest_and_publish(
    opts: &LoadOptions,
    sources: &[Source],
    staging: &Staging,
    started: Instant,
    started_at: String,
) -> Result<(Report, Journal)> {
    let out = opts.output.as_path();
    let mut run = Run {
        counts: Counts::default(),
        seen_ids: opts.dedupe.then(HashSet::new),
        rejects: RejectsWriter::new(staging.dir().join("rejects.ndjson")),
        writer: GroupsWriter::new(staging.dir().join(GROUPS_DIR), opts.writer_config()),
    };
    let total: Option<u64> = sources.iter().map(Source::size).sum();
    let progress = Progress::new(opts.progress, opts.quiet, total);
    let mut run_hash = Xxh3::new();
    run_hash.update(opts.row_shaping().as_bytes());
    let mut inputs = Vec::with_capacity(sources.len());
    let mut done = 0;
    for source in sources {
        let (report, digest) = read_input(&mut run, source, opts, &progress, done)?;
        done += report.bytes;
        run_hash.update(&digest.to_le_bytes());
        run_hash.update(&report.decompressed_bytes.to_le_bytes());
        inputs.push(report);
    }
    progress.finish();
    let run_id = format!("{:016x}", run_hash.digest128() as u64);
    let Run {
        counts,
        rejects,
        writer,
        ..
    } = run;
    debug_assert!(counts.adds_up());
    let staged = writer.finish()?;
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
    let published = reject_ratio <= opts.max_reject_ratio;
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
            "dedupe": opts.dedupe,
            "memory_limit": opts.memory_limit,
            "max_line_bytes": opts.max_line_bytes,
            "threads": rayon::current_num_threads(),
        }),
        inputs,
        counts,
        reject_ratio,
        max_reject_ratio: opts.max_reject_ratio,
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
    };
    report.elapsed_s = started.elapsed().as_secs_f64();

    let staging_rel = staging
        .dir()
        .strip_prefix(out)
        .unwrap_or(staging.dir())
        .to_path_buf();
    if !published {
        // Over the reject ratio: nothing is published, but the rejects and the report are (SPEC §7).
        if let (Some(from), Some(to)) = (&staged_rejects, &rejects_rel) {
            let to = out.join(to);
            fs::create_dir_all(out.join(REJECTS_DIR))
                .map_err(Error::io("creating directory", out.join(REJECTS_DIR)))?;
            fs::rename(from, &to).map_err(Error::io("writing rejects file", &to))?;
        }
        publish::write_atomic(&out.join(&report_rel), &report_json(&report)?)?;
        return Ok((report, Journal::default()));
    }

    let staged_report = staging.dir().join("report.json");
    fs::write(&staged_report, report_json(&report)?)
        .map_err(Error::io("writing report", &staged_report))?;
    let mut journal = Journal {
        run: run_id.clone(),
        ..Journal::default()
    };
    for f in &staged {
        let from = staging_rel.join(f.staged.strip_prefix(staging.dir()).unwrap_or(&f.staged));
        journal.renames.push((from, final_file(f)));
    }
    match &rejects_rel {
        Some(to) => journal
            .renames
            .push((staging_rel.join("rejects.ndjson"), to.clone())),
        None => journal
            .deletes
            .push(Path::new(REJECTS_DIR).join(format!("{run_id}.ndjson"))),
    }
    journal
        .renames
        .push((staging_rel.join("report.json"), report_rel));
    journal
        .deletes
        .extend(replaced_files(out, opts.mode, &run_id, &journal)?);
    Ok((report, journal))
}

/// The existing files this run replaces: in append mode, files of an earlier run with the same id that this
/// run does not write again; in overwrite mode, every file in the partitions this run writes.
fn replaced_files(out: &Path, mode: Mode, run_id: &str, journal: &Journal) -> Result<Vec<PathBuf>> {
    let targets: HashSet<&PathBuf> = journal.renames.iter().map(|(_, to)| to).collect();
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
