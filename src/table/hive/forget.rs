//! A deletion request carried out on a hive dataset: one version switch, under the lock the table holds.
//!
//! Why this is its own file: a load adds a run's files; a deletion rewrites other runs' files, the rejects and
//! `accounts` at once. The plan it builds is published like a run's ([`super::versions`]), so a reader sees the
//! dataset before the request or after it, never between.

use std::fs;
use std::path::{Path, PathBuf};

use rayon::prelude::*;

use super::versions::{self, Plan};
use super::{dataset, update_accounts};
use crate::datafile::DataFile;
use crate::error::{Error, Result};
use crate::forget::{self, FileMatches};
use crate::layout::{GROUPS_DIR, REJECTS_DIR, RUNS_DIR};
use crate::options::LoadOptions;
use crate::staging::Staging;
use crate::table::{Context, ForgetRecord, ForgetRequest, Forgotten, Purged};
use crate::writer::StagedFile;

/// The folder of the staging area the rewritten files are written to.
const FORGET_DIR: &str = "forget";

pub(super) fn forget(
    out: &Path,
    request: &ForgetRequest<'_>,
    staging: &Staging,
    ctx: &Context<'_>,
    record: ForgetRecord<'_>,
) -> Result<Forgotten> {
    let mut done = Forgotten::default();
    let mut plan = Plan::default();
    let rewritten = forget_rows(out, request, staging, ctx, &mut done, &mut plan)?;
    forget_rejects(out, request, staging, &mut done, &mut plan)?;
    if done.changed() {
        if done.rows_removed > 0 {
            // `accounts` is kept where the dataset keeps it: rebuilt from the rows that remain.
            let snapshot = crate::accounts::snapshot_files(out)?;
            if !snapshot.is_empty() {
                let before = snapshot
                    .iter()
                    .map(|f| f.file.rows())
                    .sum::<Result<u64>>()?;
                let opts = LoadOptions {
                    accounts: true,
                    ..ctx.opts.clone()
                };
                done.accounts = update_accounts(
                    &opts, out, ctx.pool, staging, &rewritten, None, true, &mut plan,
                )?;
                let after = done.accounts.as_ref().map_or(0, |a| a.groups);
                done.accounts_rows_removed = before.saturating_sub(after);
            }
        }
        done.version = Some(versions::current_version(out)?.map_or(1, |v| v + 1));
        if !request.purge {
            done.still_held.push(format!(
                "the previous version of the dataset ({}/.group-loader/versions/) still holds the removed \
                 rows and lines, for readers that opened it before this request; the next load or forget \
                 removes it, and --purge removes it now",
                out.display()
            ));
        }
        let staged_record = staging.report();
        crate::atomic::write_atomic(&staged_record, &record(&done)?)?;
        plan.adds.push((
            staged_record,
            Path::new(RUNS_DIR).join(format!("{}.json", request.stem)),
        ));
        versions::publish(out, &plan)?;
    }
    if request.purge {
        let removed = versions::remove_earlier_versions(out);
        let removed = match done.changed() {
            true => removed.map_err(Error::after_publish("the purge"))?,
            false => removed?,
        };
        done.purged = Some(Purged {
            versions: removed as u64,
            ..Purged::default()
        });
    }
    Ok(done)
}

/// Finds the rows the request names in every `groups` file (their id columns only, in parallel) and adds to
/// the plan the files rewritten without them (or removed, when every row goes). Returns the rewritten files.
fn forget_rows(
    out: &Path,
    request: &ForgetRequest<'_>,
    staging: &Staging,
    ctx: &Context<'_>,
    done: &mut Forgotten,
    plan: &mut Plan,
) -> Result<Vec<StagedFile>> {
    let files = dataset::parquet_files(&out.join(GROUPS_DIR))?;
    let found: Vec<(PathBuf, FileMatches)> = ctx.pool.install(|| {
        files
            .par_iter()
            .map(|p| {
                Ok((
                    p.clone(),
                    forget::find(&DataFile::Local(p.clone()), request.row_ids)?,
                ))
            })
            .collect::<Result<Vec<_>>>()
    })?;
    let mut groups = std::collections::BTreeSet::new();
    let mut rewritten = Vec::new();
    for (path, m) in found.into_iter().filter(|(_, m)| !m.rows.is_empty()) {
        let rel = path
            .strip_prefix(out)
            .map_err(|_| Error::Internal(format!("{} outside the dataset", path.display())))?
            .to_path_buf();
        let partition = rel
            .parent()
            .and_then(|p| p.strip_prefix(GROUPS_DIR).ok())
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default();
        *done.partitions.entry(partition.clone()).or_insert(0) += m.rows.len() as u64;
        done.rows_removed += m.rows.len() as u64;
        groups.extend(m.groups.iter().cloned());
        if m.all() {
            done.files_removed += 1;
            plan.removes.push(rel);
            continue;
        }
        let into = staging.dir().join(FORGET_DIR).join(&rel);
        let (rows, bytes) = forget::rewrite(&path, &into, &m.rows, ctx.opts.codec)?;
        done.files_rewritten += 1;
        rewritten.push(StagedFile {
            partition,
            seq: 0,
            staged: into.clone(),
            rows,
            bytes,
            origins: None,
        });
        plan.adds.push((into, rel));
    }
    done.groups_affected = groups.len() as u64;
    Ok(rewritten)
}

/// Adds to the plan the rejects files without the lines that hold the request's ids.
fn forget_rejects(
    out: &Path,
    request: &ForgetRequest<'_>,
    staging: &Staging,
    done: &mut Forgotten,
    plan: &mut Plan,
) -> Result<()> {
    let dir = out.join(REJECTS_DIR);
    let entries = match fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::io("reading directory", &dir)(e)),
    };
    let matcher = request.ids.text_matcher();
    let mut names: Vec<String> = entries
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    for name in names {
        let path = dir.join(&name);
        let bytes = fs::read(&path).map_err(Error::io("reading", &path))?;
        let filtered = forget::filter_rejects(&bytes, &matcher);
        if filtered.removed == 0 {
            continue;
        }
        done.reject_lines_removed += filtered.removed;
        done.rejects_files_changed += 1;
        let rel = Path::new(REJECTS_DIR).join(&name);
        if filtered.kept == 0 {
            plan.removes.push(rel);
            continue;
        }
        let into = staging.dir().join(FORGET_DIR).join(&rel);
        crate::atomic::write_atomic(&into, &filtered.text)?;
        plan.adds.push((into, rel));
    }
    Ok(())
}
