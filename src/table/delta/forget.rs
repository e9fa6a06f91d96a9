//! A deletion request carried out on Delta tables: one commit to `groups` (the files that hold the ids
//! removed, their rewrites without those rows added), then `accounts` brought up to date, then the rejects.
//!
//! Why this is its own file: unlike a load, the commit removes other runs' files, so it must be made against
//! the latest version: it is built from the files live at the version it commits on top of, and made again,
//! after looking at the files committed meanwhile, whenever another run was first. A load that commits
//! first loses nothing (its files are looked at in the next attempt), and this request loses nothing either.

use std::collections::HashMap;

use deltalake::kernel::{Action, Add};
use deltalake::protocol::DeltaOperation;
use rayon::prelude::*;

use super::log::{LiveFile, delta_err, live_files, partition_path, remove_action, upload_all};
use super::{Delta, MAX_COMMIT_ATTEMPTS, Patience, kept_moving, retry_commit};
use crate::datafile::DataFile;
use crate::error::{Error, Result};
use crate::forget::{self, FileMatches};
use crate::layout::{ACCOUNTS_DIR, GROUPS_DIR, REJECTS_DIR};
use crate::options::LoadOptions;
use crate::staging::Staging;
use crate::store::{self, block_on};
use crate::table::{Context, ForgetRecord, ForgetRequest, Forgotten, Purged};
use crate::writer::StagedFile;

/// The `txn` application id of a deletion request's commit (its record's stem appended).
const FORGET_APP: &str = "group-loader/forget/";
/// Where the files a request rewrites are staged.
const FORGET_DIR: &str = "forget";

impl Delta {
    pub(super) fn forget_all(
        &mut self,
        request: &ForgetRequest<'_>,
        staging: &Staging,
        ctx: &Context<'_>,
        record: ForgetRecord<'_>,
    ) -> Result<Forgotten> {
        let mut done = Forgotten::default();
        if self.groups.version().is_some() {
            self.forget_rows(request, staging, ctx, &mut done)?;
        }
        // Always, so that a request killed after its commit to `groups` is finished by its re-run: `accounts`
        // is rebuilt whenever it does not reflect the latest `groups` (a commit that removed files).
        let keeps = self.accounts.version().is_some()
            && !live_files(&self.accounts, &self.root.join(ACCOUNTS_DIR).url)?.is_empty();
        if keeps {
            let opts = LoadOptions {
                accounts: true,
                ..ctx.opts.clone()
            };
            let ctx = Context {
                opts: &opts,
                started_at: ctx.started_at,
                pool: ctx.pool,
                progress: ctx.progress,
                started: ctx.started,
                shard: None,
            };
            let before = self.accounts_rows()?;
            let (accounts, version) = self
                .update_accounts(&ctx, staging, None)
                .map_err(Error::after_publish("the accounts update"))?;
            if done.rows_removed > 0 {
                let after = accounts.as_ref().map_or(0, |a| a.groups);
                done.accounts_rows_removed = before.saturating_sub(after);
                done.accounts = accounts;
                done.accounts_version = version;
            }
        }
        // Once rows are gone, a failure says so (exit 6): running the request again finishes it.
        let committed = done.version.is_some();
        let after = |e: Error| match committed {
            true => Error::after_publish("removing the ids from the rejects")(e),
            false => e,
        };
        self.forget_rejects(request, &mut done).map_err(after)?;
        if request.purge {
            done.purged = Some(self.purge().map_err(Error::after_publish("the purge"))?);
        } else if done.changed() {
            done.still_held.push(format!(
                "the files this request replaced stay in {} for time travel until a later load vacuums them \
                 (--vacuum-retention, 7d by default), and the table's log keeps their statistics; --purge \
                 removes both now",
                self.root.url
            ));
        }
        if done.changed() {
            self.put_report(&request.stem, record(&done)?)
                .map_err(Error::after_publish("writing the request's record"))?;
        }
        Ok(done)
    }

    /// Removes the rows the request names from `groups` in one commit, made again on top of concurrent
    /// commits until it lands (or nothing live holds the ids any more).
    fn forget_rows(
        &mut self,
        request: &ForgetRequest<'_>,
        staging: &Staging,
        ctx: &Context<'_>,
        done: &mut Forgotten,
    ) -> Result<()> {
        let url = self.groups_url();
        // What each live file holds of the request (a file never changes under its name), and the upload that
        // replaces it (`None`: every row goes).
        let mut known: HashMap<String, FileMatches> = HashMap::new();
        let mut replaced: HashMap<String, Option<Add>> = HashMap::new();
        let mut patience = Patience::new(store::retry_timeout());
        for attempt in 0..MAX_COMMIT_ATTEMPTS {
            if let Err(e) = self.latest_groups() {
                patience.again(e, &url)?;
                continue;
            }
            let live = live_files(&self.groups, &url)?;
            let unknown: Vec<&LiveFile> = live
                .iter()
                .filter(|f| !known.contains_key(&f.path))
                .collect();
            let found: Vec<(String, FileMatches)> = ctx.pool.install(|| {
                unknown
                    .par_iter()
                    .map(|f| {
                        Ok((
                            f.path.clone(),
                            forget::find(&self.data_file(f), request.row_ids)?,
                        ))
                    })
                    .collect::<Result<Vec<_>>>()
            })?;
            known.extend(found);
            self.drop_stale_uploads(&live, &mut replaced)?;
            let hits: Vec<&LiveFile> = live
                .iter()
                .filter(|f| known.get(&f.path).is_some_and(|m| !m.rows.is_empty()))
                .collect();
            if hits.is_empty() {
                return Ok(());
            }
            let mut actions = Vec::new();
            for f in &hits {
                if !replaced.contains_key(&f.path) {
                    let m = &known[&f.path];
                    let add = if m.all() {
                        None
                    } else {
                        Some(self.rewrite_remote(f, m, staging, request, ctx)?)
                    };
                    replaced.insert(f.path.clone(), add);
                }
                actions.push(remove_action(
                    f.path.clone(),
                    Some(f.size),
                    Some(f.values.clone()),
                ));
                if let Some(add) = &replaced[&f.path] {
                    actions.push(Action::Add(add.clone()));
                }
            }
            match self.try_forget_commit(actions, &request.stem) {
                Ok(version) => {
                    count_removed(done, &hits, &known, &replaced);
                    done.version = Some(version);
                    done.retries = attempt as u64;
                    return Ok(());
                }
                Err(e) => retry_commit(e, &mut patience, &url)?,
            }
        }
        Err(kept_moving(url))
    }

    /// Deletes the uploads made for files another commit removed meanwhile (they will never be committed).
    fn drop_stale_uploads(
        &self,
        live: &[LiveFile],
        replaced: &mut HashMap<String, Option<Add>>,
    ) -> Result<()> {
        let live: std::collections::HashSet<&str> = live.iter().map(|f| f.path.as_str()).collect();
        let stale: Vec<String> = replaced
            .keys()
            .filter(|p| !live.contains(p.as_str()))
            .cloned()
            .collect();
        for path in stale {
            if let Some(Some(add)) = replaced.remove(&path) {
                self.root
                    .join(&format!("{GROUPS_DIR}/{}", add.path))
                    .delete()?;
            }
        }
        Ok(())
    }

    fn data_file(&self, f: &LiveFile) -> DataFile {
        DataFile::Remote {
            location: self.root.join(&format!("{GROUPS_DIR}/{}", f.path)),
            size: f.size as u64,
        }
    }

    /// Downloads a live file, rewrites it without the rows `m` names, and uploads the rewrite under a new name.
    fn rewrite_remote(
        &self,
        f: &LiveFile,
        m: &FileMatches,
        staging: &Staging,
        request: &ForgetRequest<'_>,
        ctx: &Context<'_>,
    ) -> Result<Add> {
        let dir = staging.dir().join(FORGET_DIR);
        std::fs::create_dir_all(&dir).map_err(Error::io("creating directory", &dir))?;
        // Named after the live file (one rewrite each).
        let n = xxhash_rust::xxh3::xxh3_64(f.path.as_bytes());
        let original = dir.join(format!("{n:016x}.original.parquet"));
        let source = self.root.join(&format!("{GROUPS_DIR}/{}", f.path));
        crate::atomic::write_copy(&original, &mut source.open_stream()?)?;
        let into = dir.join(format!("{n:016x}.parquet"));
        let (rows, bytes) = forget::rewrite(&original, &into, &m.rows, ctx.opts.codec)?;
        let _ = std::fs::remove_file(&original);
        let staged = StagedFile {
            partition: partition_path(&f.values),
            seq: 0,
            staged: into,
            rows,
            bytes,
            origins: None,
        };
        let add = self.add_for(&request.tag, &staged)?;
        upload_all(vec![(
            self.root.join(&format!("{GROUPS_DIR}/{}", add.path)),
            staged.staged.clone(),
        )])?;
        Ok(add)
    }

    fn try_forget_commit(
        &self,
        actions: Vec<Action>,
        stem: &str,
    ) -> std::result::Result<u64, deltalake::DeltaTableError> {
        let op = DeltaOperation::Delete {
            predicate: Some("rows named by a deletion request".into()),
        };
        self.commit_groups_once(
            self.groups.snapshot()?,
            actions,
            op,
            Some(format!("{FORGET_APP}{stem}")),
            ("group_loader_forget", stem),
        )
    }

    /// Rewrites (or deletes) the rejects files whose lines hold the request's ids.
    fn forget_rejects(&self, request: &ForgetRequest<'_>, done: &mut Forgotten) -> Result<()> {
        let matcher = request.ids.text_matcher();
        let dir = self.root.join(REJECTS_DIR);
        for meta in dir.list()? {
            let object = self.root.child(meta.location);
            let Some(bytes) = object.get_bytes()? else {
                continue;
            };
            let filtered = forget::filter_rejects(&bytes, &matcher);
            if filtered.removed == 0 {
                continue;
            }
            done.reject_lines_removed += filtered.removed;
            done.rejects_files_changed += 1;
            if filtered.kept == 0 {
                object.delete()?;
            } else {
                object.put_bytes(filtered.text)?;
            }
        }
        Ok(())
    }

    /// Removes what still holds data the latest versions do not: data files no longer live (at once, whatever
    /// `--vacuum-retention`), and the log entries before a checkpoint written at the latest version of each
    /// table (they describe the removed files, statistics included).
    fn purge(&mut self) -> Result<Purged> {
        let mut purged = Purged {
            files: self.vacuum(std::time::Duration::ZERO)?,
            ..Purged::default()
        };
        for name in [GROUPS_DIR, ACCOUNTS_DIR] {
            let url = self.root.join(name).url;
            let table = if name == GROUPS_DIR {
                &mut self.groups
            } else {
                &mut self.accounts
            };
            if table.version().is_none() {
                continue;
            }
            block_on(table.update_state()).map_err(delta_err(&url))?;
            let Some(version) = table.version() else {
                continue;
            };
            block_on(deltalake::checkpoints::create_checkpoint(table, None))
                .map_err(delta_err(&url))?;
            // Every entry before the checkpoint, however recent (a minute ahead covers the store's clock).
            let cutoff = chrono::Utc::now().timestamp_millis() + 60_000;
            let removed = block_on(deltalake::checkpoints::cleanup_expired_logs_for(
                version,
                table.log_store().as_ref(),
                cutoff,
                None,
            ))
            .map_err(delta_err(&url))?;
            purged.log_entries += removed as u64;
        }
        Ok(purged)
    }
}

/// Counts what the commit removed, by partition, from the files it touched.
fn count_removed(
    done: &mut Forgotten,
    hits: &[&LiveFile],
    known: &HashMap<String, FileMatches>,
    replaced: &HashMap<String, Option<Add>>,
) {
    let mut groups = std::collections::BTreeSet::new();
    for f in hits {
        let m = &known[&f.path];
        let n = m.rows.len() as u64;
        done.rows_removed += n;
        *done
            .partitions
            .entry(partition_path(&f.values))
            .or_insert(0) += n;
        groups.extend(m.groups.iter().cloned());
        match replaced.get(&f.path) {
            Some(Some(_)) => done.files_rewritten += 1,
            _ => done.files_removed += 1,
        }
    }
    done.groups_affected = groups.len() as u64;
}
