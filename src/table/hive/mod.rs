//! The local Hive-partitioned dataset: `OUT/groups/dt=.../*.parquet`, published by switching
//! versions ([`crate::publish`]), with its recorded shape and runs read through [`crate::dataset`].
//!
//! Why this module exists: it is the [`Table`] of a local folder. It holds the output's lock for the whole run
//! (a second run exits 4), recovers what killed runs left, and turns a staged run into one version switch that
//! adds the run's files, removes what `--mode overwrite` replaces, and replaces the `accounts` snapshot.

mod compact;
mod dataset;
mod forget;
mod versions;

pub(crate) use dataset::{inventory, is_hive};
use std::collections::{BTreeSet, HashSet};
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
pub(crate) use versions::check_output;
use versions::{Lock, Plan};

use crate::accounts;
use crate::datafile::DataFile;
use crate::error::{Error, Result};
use crate::layout::PartitionMode;
use crate::layout::{Format, GROUPS_DIR, REJECTS_DIR, RUNS_DIR, Shape};
use crate::options::{LoadOptions, Mode};

use crate::report::{AccountsReport, Phase};
use crate::staging::Staging;
use crate::table::{Context, EarlierRun, Outcome, Record, Staged, Table, Visibility};
use crate::writer::StagedFile;

/// A local hive dataset, locked for the run.
pub struct Hive {
    out: PathBuf,
    _lock: Lock,
}

impl Hive {
    /// Opens (or creates) the dataset at `out` for a run with `opts`: refuses another layout before touching
    /// anything, takes the lock, recovers what earlier runs left, and records the layout.
    /// Returns it with the partitioning the run uses: `--partition` when given, else the one recorded.
    pub fn open(opts: &LoadOptions) -> Result<(Hive, PartitionMode)> {
        let out = opts
            .output
            .local()
            .ok_or_else(|| Error::Internal("a hive dataset opened at a URL".into()))?;
        versions::check_output(out)?;
        versions::check_state(out)?;
        // Recorded options are the defaults of later runs: only an explicit different value is refused.
        let partition = match dataset::recorded_shape(out)? {
            Some(recorded) if !opts.partition_given => recorded.partition,
            _ => opts.partition,
        };
        let shape = Shape {
            format: Format::Hive,
            partition,
        };
        if out.join(GROUPS_DIR).join("_delta_log").is_dir() {
            return Err(Error::Usage(format!(
                "{} was created with --format delta; this run asks for --format hive. A dataset keeps one \
                 layout: run with --format delta, or load into a new --output",
                out.display()
            )));
        }
        dataset::check_shape(out, shape)?;
        let lock = versions::lock(out)?;
        // Again under the lock: a run may have created the dataset meanwhile.
        dataset::check_shape(out, shape)?;
        let discarded = versions::recover(out)?;
        if !opts.quiet && discarded > 0 {
            eprintln!("group-loader: recovered the output: removed {discarded} unpublished run(s)");
        }
        versions::prepare(out)?;
        dataset::record_shape(out, shape)?;
        Ok((
            Hive {
                out: out.to_path_buf(),
                _lock: lock,
            },
            partition,
        ))
    }
}

impl Table for Hive {
    fn already_loaded(&self, run_id: &str) -> Result<Option<EarlierRun>> {
        Ok(
            dataset::published_run(&self.out, run_id).map(|r| EarlierRun {
                started_at: r["started_at"].as_str().unwrap_or("earlier").to_string(),
                unfinished: None,
            }),
        )
    }

    fn earlier(
        &self,
        mode: PartitionMode,
        exclude: &BTreeSet<i64>,
    ) -> Result<Vec<(i64, Vec<DataFile>)>> {
        Ok(dataset::partitions(&self.out, mode)?
            .into_iter()
            .filter(|p| !exclude.contains(&p.bucket))
            .map(|p| (p.bucket, p.files.into_iter().map(DataFile::Local).collect()))
            .collect())
    }

    fn staging(&self) -> Result<Staging> {
        versions::staging(&self.out)
    }

    fn privacy_dir(&self) -> Result<Option<crate::store::Location>> {
        let dir = self
            .out
            .join(crate::layout::STATE_DIR)
            .join(dataset::PRIVACY_DIR);
        crate::store::Location::local(&dir).map(Some)
    }

    fn has_rows(&self) -> Result<bool> {
        Ok(!dataset::parquet_files(&self.out.join(GROUPS_DIR))?.is_empty())
    }

    fn publish_rows(
        &mut self,
        run: Staged,
        staging: &Staging,
        ctx: &Context<'_>,
        record: Record<'_>,
    ) -> Result<Outcome> {
        let mut plan = Plan::default();
        let mut outcome = Outcome {
            visibility: Visibility::Published,
            ..Outcome::default()
        };
        plan_rows(ctx, &self.out, staging, &run, &mut outcome, &mut plan)?;
        self.publish_record(run, staging, ctx, record, outcome, plan)
    }

    fn keep_record(
        &mut self,
        run: Staged,
        staging: &Staging,
        ctx: &Context<'_>,
        record: Record<'_>,
    ) -> Result<Outcome> {
        self.publish_record(
            run,
            staging,
            ctx,
            record,
            Outcome::default(),
            Plan::default(),
        )
    }

    fn forget(
        &mut self,
        request: &crate::table::ForgetRequest<'_>,
        staging: &Staging,
        ctx: &Context<'_>,
        record: crate::table::ForgetRecord<'_>,
    ) -> Result<crate::table::Forgotten> {
        forget::forget(&self.out, request, staging, ctx, record)
    }

    fn compact(
        &mut self,
        request: &crate::table::CompactRequest,
        staging: &Staging,
        ctx: &Context<'_>,
        record: crate::table::CompactRecord<'_>,
    ) -> Result<crate::table::Compacted> {
        compact::compact(&self.out, request, staging, ctx, record)
    }

    fn keep_accounts(
        &mut self,
        _earlier: &EarlierRun,
        staging: &Staging,
        ctx: &Context<'_>,
    ) -> Result<Outcome> {
        let mut plan = Plan::default();
        let accounts = update_accounts(
            ctx.opts,
            &self.out,
            ctx.pool,
            staging,
            &[],
            None,
            false,
            &mut plan,
        )?;
        if !plan.is_empty() {
            versions::publish(&self.out, &plan)?;
        }
        Ok(Outcome {
            accounts,
            ..Outcome::default()
        })
    }
}

impl Hive {
    /// Adds the run's rejects and its record to `plan` (replacing those an earlier attempt of the run left,
    /// which published nothing), and publishes the plan in one version switch.
    fn publish_record(
        &self,
        run: Staged,
        staging: &Staging,
        ctx: &Context<'_>,
        record: Record<'_>,
        mut outcome: Outcome,
        mut plan: Plan,
    ) -> Result<Outcome> {
        let out = self.out.as_path();
        for dir in [RUNS_DIR, REJECTS_DIR] {
            plan.removes.extend(
                dataset::run_files(&out.join(dir), &run.run)
                    .into_iter()
                    .map(|name| Path::new(dir).join(name)),
            );
        }
        let stem = run.stem();
        if let Some(from) = run.rejects {
            let rejects_rel = Path::new(REJECTS_DIR).join(format!("{stem}.ndjson"));
            outcome.rejects_file = Some(rel(&rejects_rel));
            plan.adds.push((from, rejects_rel));
        }
        let staged_report = staging.report();
        let mut f = fs::File::create(&staged_report)
            .map_err(Error::io("writing report", &staged_report))?;
        f.write_all(&record(&outcome)?)
            .and_then(|()| f.sync_all())
            .map_err(Error::io("writing report", &staged_report))?;
        plan.adds.push((
            staged_report,
            Path::new(RUNS_DIR).join(format!("{stem}.json")),
        ));
        ctx.progress
            .phase(Phase::Publishing, run.rows, run.rejected);
        versions::publish(out, &plan)?;
        Ok(outcome)
    }
}

fn rel(path: &Path) -> String {
    path.to_string_lossy().into_owned()
}

/// Adds a published run's rows to the plan: its files, the files they replace (counted in `replaced`), and
/// the new `accounts` snapshot.
fn plan_rows(
    ctx: &Context<'_>,
    out: &Path,
    staging: &Staging,
    run: &Staged,
    outcome: &mut Outcome,
    plan: &mut Plan,
) -> Result<()> {
    let opts = ctx.opts;
    for f in &run.files {
        let to = Path::new(GROUPS_DIR)
            .join(&f.partition)
            .join(format!("part-{}-{:05}.parquet", run.run, f.seq));
        outcome.add_file(rel(&to), f);
        plan.adds.push((f.staged.clone(), to));
    }
    let replaced = replaced_files(out, opts.mode, &run.run, plan)?;
    for path in &replaced {
        let partition = path
            .parent()
            .and_then(|p| p.strip_prefix(GROUPS_DIR).ok())
            .map(rel)
            .unwrap_or_default();
        *outcome.replaced.entry(partition).or_insert(0) += dataset::file_rows(&out.join(path))?;
    }
    plan.removes.extend(replaced);
    ctx.progress.phase(Phase::Accounts, run.rows, run.rejected);
    // Rows leave `groups` only in overwrite mode (append replaces a run's files by identical ones).
    let removes_rows = opts.mode == Mode::Overwrite && !plan.removes.is_empty();
    outcome.accounts = update_accounts(
        opts,
        out,
        ctx.pool,
        staging,
        &run.files,
        run.fold.as_deref(),
        removes_rows,
        plan,
    )?;
    Ok(())
}

/// Adds the new `accounts` snapshot to the plan: this run's staged files merged into the current
/// snapshot, or a rebuild from every `groups` file the new version will hold when there is no snapshot to
/// build on or the plan removes rows (`removes_rows`). With `--no-accounts`, removes the snapshot instead.
#[allow(clippy::too_many_arguments)]
fn update_accounts(
    opts: &LoadOptions,
    out: &Path,
    pool: &rayon::ThreadPool,
    staging: &Staging,
    staged: &[StagedFile],
    fold: Option<&accounts::Folded>,
    removes_rows: bool,
    plan: &mut Plan,
) -> Result<Option<AccountsReport>> {
    let snapshot = accounts::snapshot_files(out)?;
    if !opts.accounts {
        plan.removes.extend(snapshot.into_iter().map(|f| f.rel));
        return Ok(None);
    }
    // The groups files the new version keeps: listed only when there may be a reason to rebuild from them.
    let mut kept = Vec::new();
    if removes_rows || snapshot.is_empty() {
        let replaced: HashSet<&PathBuf> = plan
            .removes
            .iter()
            .chain(plan.adds.iter().map(|(_, to)| to))
            .collect();
        kept = dataset::parquet_files(&out.join(GROUPS_DIR))?;
        kept.retain(|p| {
            p.strip_prefix(out)
                .is_ok_and(|rel| !replaced.contains(&rel.to_path_buf()))
        });
    }
    let rebuild = removes_rows || (snapshot.is_empty() && !kept.is_empty());
    let merged = accounts::merge(&accounts::Merge {
        staging: staging.dir(),
        snapshot: &snapshot,
        // The fold holds exactly the rows of the staged files.
        run_files: match fold {
            Some(_) => Vec::new(),
            None => staged
                .iter()
                .map(|f| DataFile::Local(f.staged.clone()))
                .collect(),
        },
        fold,
        rebuild,
        kept_files: if rebuild {
            kept.into_iter().map(DataFile::Local).collect()
        } else {
            Vec::new()
        },
        name_suffix: None,
        codec: opts.codec,
        budget: opts.accounts_budget,
        pool,
    })?;
    let report = merged.report();
    plan.adds.extend(merged.adds);
    plan.removes.extend(merged.removes);
    Ok(Some(report))
}

/// The existing files this run replaces: in append mode, files of an earlier run with the same id that this
/// run does not write again; in overwrite mode, every file in the partitions this run writes.
fn replaced_files(out: &Path, mode: Mode, run_id: &str, plan: &Plan) -> Result<Vec<PathBuf>> {
    let targets: HashSet<&PathBuf> = plan.adds.iter().map(|(_, to)| to).collect();
    let groups = out.join(GROUPS_DIR);
    let mut found = dataset::parquet_files(&groups)?;
    match mode {
        Mode::Append => {
            let prefix = format!("part-{run_id}-");
            found.retain(|p| {
                p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with(&prefix))
            });
        }
        Mode::Overwrite => {
            let dirs: HashSet<PathBuf> = targets
                .iter()
                .filter(|t| t.starts_with(GROUPS_DIR))
                .filter_map(|t| t.parent().map(|p| out.join(p)))
                .collect();
            found.retain(|p| p.parent().is_some_and(|d| dirs.contains(d)));
        }
    }
    Ok(found
        .into_iter()
        .filter_map(|p| p.strip_prefix(out).ok().map(Path::to_path_buf))
        .filter(|p| !targets.contains(p))
        .collect())
}
