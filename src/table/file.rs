//! One Parquet file of the `groups` table (`--output out.parquet`, or `--format parquet`): an ad hoc conversion,
//! no dataset.
//!
//! Why this exists: an analyst converting an export expects one file, not a folder of partitions with an
//! `accounts` table and hidden versions. The run is the same pipeline (every rule of the `groups` table, the
//! rejects, the report), with one partition and no size limit on the file; publishing is the staged file
//! renamed over the output in one step (atomic on a local disk; one upload on object storage). There is no
//! state: nothing is "already loaded", duplicates are those within the run, and there is no `accounts`.
//! Rejected lines go to `--rejects`, or beside the file as `<output>.rejects.ndjson`.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use crate::datafile::DataFile;
use crate::error::{Error, Result};
use crate::layout::PartitionMode;
use crate::options::{LoadOptions, Mode, Output};
use crate::report::Phase;
use crate::staging::Staging;
use crate::store::Location;
use crate::table::{Context, EarlierRun, Outcome, Record, Staged, Table, Visibility};

/// Where the file goes.
enum Target {
    Local(PathBuf),
    Remote(Location),
}

/// The output of a one-file conversion.
pub struct SingleFile {
    target: Target,
    /// The output as given, for the report.
    name: String,
}

impl SingleFile {
    /// Refuses the options that only mean something for a dataset (exit 2), before anything is read.
    pub fn open(opts: &LoadOptions) -> Result<(SingleFile, PartitionMode)> {
        let name = opts.output.to_string();
        let refuse = |what: &str| {
            Err(Error::Usage(format!(
                "{name} is one Parquet file, not a dataset: {what}; load into a folder (or a URL) for that"
            )))
        };
        if opts.mode == Mode::Overwrite {
            return refuse(
                "--mode overwrite replaces partitions of a dataset (the file is replaced anyway)",
            );
        }
        if opts.shard.is_some() {
            return refuse("--shard splits a load into one shared dataset");
        }
        if opts.partition_given && opts.partition != PartitionMode::None {
            return refuse("one file has no partition folders (--partition none, or leave it out)");
        }
        let target = match &opts.output {
            Output::Url(url) => Target::Remote(Location::parse(url)?),
            Output::Local(path) => {
                if path.is_dir() {
                    return refuse("a folder of that name exists");
                }
                Target::Local(path.clone())
            }
        };
        Ok((SingleFile { target, name }, PartitionMode::None))
    }

    /// Where rejects go without `--rejects`: beside the file.
    fn rejects_beside(&self) -> String {
        format!("{}.rejects.ndjson", self.name)
    }

    /// Writes the run's rejects to `--rejects`, or beside the file. Returns where.
    fn put_rejects(&self, staged: &Path, opts: &LoadOptions) -> Result<String> {
        let mut file = std::fs::File::open(staged).map_err(Error::io("reading", staged))?;
        if let Some(path) = &opts.rejects {
            crate::atomic::write_copy(path, &mut file)?;
            return Ok(path.display().to_string());
        }
        let beside = self.rejects_beside();
        match &self.target {
            Target::Local(_) => crate::atomic::write_copy(Path::new(&beside), &mut file)?,
            Target::Remote(_) => Location::parse(&beside)?.upload(staged)?,
        }
        Ok(beside)
    }
}

impl SingleFile {
    /// What publishing the run's rejects alone did.
    fn rejects_only(&self, run: &Staged, opts: &LoadOptions) -> Result<Outcome> {
        let mut outcome = Outcome::default();
        if let Some(staged) = &run.rejects {
            outcome.rejects_file = Some(self.put_rejects(staged, opts)?);
        }
        Ok(outcome)
    }
}

impl Table for SingleFile {
    fn already_loaded(&self, _run_id: &str) -> Result<Option<EarlierRun>> {
        Ok(None)
    }

    fn earlier(
        &self,
        _mode: PartitionMode,
        _exclude: &BTreeSet<i64>,
    ) -> Result<Vec<(i64, Vec<DataFile>)>> {
        Ok(Vec::new())
    }

    fn staging(&self) -> Result<Staging> {
        let name = crate::staging::staging_name();
        match &self.target {
            // Beside the output, so that publishing is a rename on one filesystem.
            Target::Local(path) => {
                let dir = match path.parent() {
                    Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
                    _ => PathBuf::from("."),
                };
                let file = path.file_name().map(|n| n.to_string_lossy().into_owned());
                Staging::create(
                    dir.join(format!(".{}.group-loader-{name}", file.unwrap_or_default())),
                )
            }
            Target::Remote(_) => {
                Staging::create(std::env::temp_dir().join(format!("group-loader-{name}")))
            }
        }
    }

    fn privacy_dir(&self) -> Result<Option<crate::store::Location>> {
        Ok(None)
    }

    fn has_rows(&self) -> Result<bool> {
        Ok(false)
    }

    fn publish_rows(
        &mut self,
        run: Staged,
        staging: &Staging,
        ctx: &Context<'_>,
        _record: Record<'_>,
    ) -> Result<Outcome> {
        let mut outcome = self.rejects_only(&run, ctx.opts)?;
        ctx.progress
            .phase(Phase::Publishing, run.rows, run.rejected);
        if run.files.len() > 1 {
            return Err(Error::Internal(format!(
                "{} files staged for one file",
                run.files.len()
            )));
        }
        let file = match run.files.into_iter().next() {
            Some(f) => f,
            // No row: still one file, of the schema (a reader gets an empty table, not an error).
            None => crate::writer::empty_groups_file(&staging.empty_groups_file(), ctx.opts.codec)?,
        };
        match &self.target {
            Target::Local(path) => crate::atomic::move_into_place(&file.staged, path)?,
            Target::Remote(location) => location.upload(&file.staged)?,
        }
        outcome.visibility = Visibility::Published;
        outcome.add_file(self.name.clone(), &file);
        Ok(outcome)
    }

    /// The rejects only: there is no dataset to keep a record in (the report goes to `--report` alone).
    fn keep_record(
        &mut self,
        run: Staged,
        _staging: &Staging,
        ctx: &Context<'_>,
        _record: Record<'_>,
    ) -> Result<Outcome> {
        self.rejects_only(&run, ctx.opts)
    }

    fn keep_accounts(
        &mut self,
        _earlier: &EarlierRun,
        _staging: &Staging,
        _ctx: &Context<'_>,
    ) -> Result<Outcome> {
        Err(Error::Internal(
            "a one-file conversion has no earlier runs".into(),
        ))
    }

    fn forget(
        &mut self,
        _request: &crate::table::ForgetRequest<'_>,
        _staging: &Staging,
        _ctx: &Context<'_>,
        _record: crate::table::ForgetRecord<'_>,
    ) -> Result<crate::table::Forgotten> {
        // `forget` refuses a one-file output before opening it.
        Err(Error::Internal(
            "a one-file conversion has no dataset to forget in".into(),
        ))
    }

    fn compact(
        &mut self,
        _request: &crate::table::CompactRequest,
        _staging: &Staging,
        _ctx: &Context<'_>,
        _record: crate::table::CompactRecord<'_>,
    ) -> Result<crate::table::Compacted> {
        // `compact` refuses a one-file output before opening it.
        Err(Error::Internal(
            "a one-file conversion has no dataset to compact".into(),
        ))
    }
}
