//! Where a run's rows go and how they become visible (SPEC §6): one interface, two implementations.
//!
//! Why this module exists: the pipeline (inputs -> lines -> events -> writer) produces the same thing whatever
//! the output is: staged Parquet files, a rejects file and a report. What differs is how they are published:
//! - [`hive`]: a local Hive-partitioned folder, published by switching versions of hard-linked trees (one
//!   rename is the commit point), with an OS lock against a second run;
//! - [`delta`]: Delta Lake tables, local or in object storage, published by optimistic commits (no lock:
//!   concurrent runs and shards retry on conflict).
//!
//! Each also answers what the run needs to know before reading: whether these inputs were already loaded,
//! and which files hold the ids that count as already loaded.

pub mod delta;
pub mod file;
pub mod hive;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use crate::datafile::DataFile;
use crate::error::Result;
use crate::layout::Format;
use crate::layout::PartitionMode;
use crate::options::LoadOptions;
use crate::report::{Progress, Report};
use crate::staging::Staging;
use crate::writer::StagedFile;

/// A run read and staged, waiting to be published.
pub struct Ingested {
    /// The report so far: counts, inputs, and whether the rows may be published (`not_published`).
    pub report: Report,
    /// The staged `groups` files.
    pub files: Vec<StagedFile>,
    /// The staged rejects file, if anything was rejected.
    pub rejects: Option<PathBuf>,
}

/// What publishing needs besides the run itself.
pub struct Context<'a> {
    pub opts: &'a LoadOptions,
    pub pool: &'a Arc<rayon::ThreadPool>,
    pub progress: &'a Progress,
    pub started: Instant,
    /// With `--shard`: this shard's share of the listing.
    pub shard: Option<crate::report::ShardReport>,
}

/// Opens the output a run loads into: `--format`, or (without it) delta for an object-store URL and hive for
/// a local folder. A URL with `--format hive` is refused: the hive publish relies on renames and links, which
/// object stores do not have.
/// Returns it with the partitioning the run uses (`--partition`, or the dataset's when not given).
pub fn open(opts: &LoadOptions) -> Result<(Box<dyn Table>, PartitionMode)> {
    let url = opts.output.url().is_some();
    let format = match (opts.format, url) {
        (Some(Format::Hive), true) => {
            return Err(crate::error::Error::Usage(format!(
                "--format hive needs a local --output: its atomic publish switches versions with renames and \
                 links, which object stores do not have. {} is object storage: use --format delta (the \
                 default there)",
                opts.output
            )));
        }
        _ => opts.format(),
    };
    if let Some(path) = opts.output.local() {
        check_not_nested(path)?;
    }
    Ok(match format {
        Format::Hive => {
            let (t, p) = hive::Hive::open(opts)?;
            (Box::new(t), p)
        }
        Format::Delta => {
            let (t, p) = delta::Delta::open(opts)?;
            (Box::new(t), p)
        }
        Format::Parquet => {
            let (t, p) = file::SingleFile::open(opts)?;
            (Box::new(t), p)
        }
    })
}

/// A published run with the same id as this one: these inputs are already loaded.
#[derive(Debug, Clone)]
pub struct EarlierRun {
    /// When it started (from its report), or `earlier` when its report cannot say.
    pub started_at: String,
    /// The run committed its rows but stopped before it finished (a Delta run killed or cut off right after
    /// its commit): this run finishes it, bringing `accounts` up to date and completing its report.
    pub unfinished: Option<crate::report::Unfinished>,
}

/// Whether the local folder `dir` is the root of a dataset: a hive one (its state folder) or a Delta one (its
/// `groups` table's log).
fn is_dataset(dir: &std::path::Path) -> bool {
    std::fs::symlink_metadata(dir.join(crate::layout::STATE_DIR)).is_ok_and(|m| m.is_dir())
        || dir
            .join(crate::layout::GROUPS_DIR)
            .join("_delta_log")
            .is_dir()
}

/// Refuses (exit 2, touching nothing) an output inside a dataset (a folder of one, its state folder, or a
/// Delta table's own folder), or one that holds a dataset in its folders: loading there would write a second
/// dataset into the first, and break every reader of it (DuckDB's glob over `groups/**` sees two layouts).
fn check_not_nested(out: &std::path::Path) -> Result<()> {
    let refuse = |why: String| {
        Err(crate::error::Error::Usage(format!(
            "--output {} {why}: a dataset inside another breaks the readers of both; choose a folder of its \
             own",
            out.display()
        )))
    };
    let lexical = std::path::absolute(out).unwrap_or_else(|_| out.to_path_buf());
    let canonical = std::fs::canonicalize(out).ok();
    for path in std::iter::once(&lexical).chain(canonical.as_ref()) {
        if path
            .components()
            .any(|c| c.as_os_str() == crate::layout::STATE_DIR)
        {
            return refuse("is inside a dataset's hidden state folder".into());
        }
        for a in path.ancestors().skip(1) {
            if is_dataset(a) || a.join("_delta_log").is_dir() {
                return refuse(format!("is inside the dataset at {}", a.display()));
            }
        }
    }
    if out.join("_delta_log").is_dir() {
        return refuse("is a Delta table, not a dataset's folder".into());
    }
    // Datasets in its folders (two levels down: `out/a/` and `out/a/b/`).
    let mut dirs = vec![(out.to_path_buf(), 0)];
    while let Some((dir, depth)) = dirs.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            let name = e.file_name();
            let hidden = name.to_string_lossy().starts_with('.');
            if hidden || !e.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            let path = e.path();
            if is_dataset(&path) {
                return refuse(format!("holds the dataset at {}", path.display()));
            }
            if depth < 1 {
                dirs.push((path, depth + 1));
            }
        }
    }
    Ok(())
}

/// [`check_not_nested`] for an object-store output: no prefix above it is a dataset (its `groups/_delta_log/`)
/// or a Delta table (its `_delta_log/`).
pub(crate) fn check_not_nested_url(out: &crate::store::Location) -> Result<()> {
    let parts: Vec<&str> = out
        .path
        .as_ref()
        .split('/')
        .filter(|p| !p.is_empty())
        .collect();
    for n in (0..parts.len()).rev() {
        let above = out.at(&parts[..n].join("/"));
        for marker in ["groups/_delta_log", "_delta_log"] {
            if above.join(marker).any()? {
                return Err(crate::error::Error::Usage(format!(
                    "--output {} is inside the Delta {} at {}: a dataset inside another breaks the readers \
                     of both; choose a prefix of its own",
                    out.url,
                    if marker == "_delta_log" {
                        "table"
                    } else {
                        "dataset"
                    },
                    above.url
                )));
            }
        }
    }
    Ok(())
}

/// A dataset a run loads into.
pub trait Table {
    /// The published run with this id, if one already loaded these inputs.
    fn already_loaded(&self, run_id: &str) -> Result<Option<EarlierRun>>;

    /// The dataset's partitions (as buckets of `mode`) whose ids count as already loaded (all but `exclude`),
    /// with their files: what the dedupe window may read.
    fn earlier(
        &self,
        mode: PartitionMode,
        exclude: &BTreeSet<i64>,
    ) -> Result<Vec<(i64, Vec<DataFile>)>>;

    /// A new staging folder for the run.
    fn staging(&self) -> Result<Staging>;

    /// Publishes the run: its rows (unless `report.not_published` says otherwise), `accounts`, the report and
    /// the rejects. A run whose inputs were already loaded publishes nothing of its own but keeps `accounts` as
    /// its options ask. Returns the final report.
    fn publish(&mut self, run: Ingested, staging: Staging, ctx: &Context<'_>) -> Result<Report>;
}
