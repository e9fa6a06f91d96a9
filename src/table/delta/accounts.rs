//! The `accounts` Delta table: brought up to date with `groups` after every run.
//!
//! Why this module exists: `accounts` must reflect exactly the `groups` versions it says it reflects, even when
//! shards commit at once or a run is killed between its two commits. Its `txn` version is the `groups` version
//! it reflects; whoever runs next merges the `groups` commits it has not seen (or rebuilds it after files left
//! `groups`), and commits on top of the latest `accounts` version, trying again when another run was first.
//! The merge itself is [`crate::accounts`]: commutative, associative and idempotent, so the order in which
//! shards bring it up to date does not matter.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use deltalake::kernel::transaction::{CommitBuilder, CommitProperties};
use deltalake::kernel::{Action, Add, Transaction};
use deltalake::logstore::get_actions;
use deltalake::protocol::{DeltaOperation, SaveMode};

use super::log::{
    LiveFile, create, delta_err, is_conflict, live_files, remove_action, upload_all, uuid_token,
};
use super::{Delta, MAX_COMMIT_ATTEMPTS, REFLECTS_APP, stats};
use crate::accounts;
use crate::datafile::DataFile;
use crate::error::{Error, Result};
use crate::layout::ACCOUNTS_DIR;
use crate::layout::GROUPS_DIR;
use crate::layout::PartitionMode;
use crate::report::AccountsReport;
use crate::schema;
use crate::staging::Staging;
use crate::store::block_on;
use crate::table::Context;

impl Delta {
    /// Brings `accounts` up to date with the latest `groups` version: the `groups` commits it does
    /// not reflect yet are merged into it (or, after files left `groups`, it is rebuilt from every file), and
    /// the new snapshot committed with the `groups` version it reflects. Retried when another run commits
    /// first. With `--no-accounts`, empties it instead.
    pub(super) fn update_accounts(
        &mut self,
        ctx: &Context<'_>,
        staging: &Staging,
        fold: Option<OurFold<'_>>,
    ) -> Result<(Option<AccountsReport>, Option<u64>)> {
        let url = self.root.join(ACCOUNTS_DIR).url;
        for _ in 0..MAX_COMMIT_ATTEMPTS {
            if self.groups.version().is_none() {
                return Ok((None, None));
            }
            block_on(self.groups.update_state()).map_err(delta_err(&self.groups_url()))?;
            if self.accounts.version().is_none() {
                if !ctx.opts.accounts {
                    return Ok((None, None));
                }
                self.accounts = create(
                    &self.root,
                    ACCOUNTS_DIR,
                    &schema::ACCOUNT_COLUMNS,
                    PartitionMode::None,
                )?;
            }
            block_on(self.accounts.update_state()).map_err(delta_err(&url))?;
            let plan = accounts_plan(self, ctx, staging, fold)?;
            let Some(plan) = plan else {
                let groups = self.accounts_rows()?;
                let version = self.accounts.version();
                return Ok((
                    ctx.opts.accounts.then_some(AccountsReport {
                        groups,
                        files_written: 0,
                        buckets: 0,
                        rebuilt: false,
                        groups_over_key_limit: 0,
                        rows_folded: 0,
                        rows_read: 0,
                    }),
                    version,
                ));
            };
            match self.commit_accounts(plan.actions, plan.reflects)? {
                Some(version) => return Ok((plan.report, Some(version))),
                None => continue,
            }
        }
        Err(super::kept_moving(url))
    }

    pub(super) fn accounts_rows(&self) -> Result<u64> {
        let files = live_files(&self.accounts, &self.root.join(ACCOUNTS_DIR).url)?;
        Ok(files.iter().map(|f| f.rows.unwrap_or(0) as u64).sum())
    }

    /// Commits to `accounts` on top of the version loaded; `None` when another commit came first.
    fn commit_accounts(&mut self, actions: Vec<Action>, reflects: i64) -> Result<Option<u64>> {
        let url = self.root.join(ACCOUNTS_DIR).url;
        let state = self.accounts.snapshot().map_err(delta_err(&url))?;
        let props = CommitProperties::default()
            .with_max_retries(0)
            .with_application_transaction(Transaction::new_with_last_update(
                REFLECTS_APP,
                reflects,
                Some(chrono::Utc::now().timestamp_millis()),
            ));
        let op = DeltaOperation::Write {
            mode: SaveMode::Overwrite,
            partition_by: None,
            predicate: None,
        };
        let committed = block_on(async {
            CommitBuilder::from(props)
                .with_actions(actions)
                .build(Some(state), self.accounts.log_store(), op)
                .await
        });
        match committed {
            Ok(c) => Ok(Some(c.version())),
            Err(e) if is_conflict(&e) => Ok(None),
            Err(e) => Err(delta_err(&url)(e)),
        }
    }
}

/// What a commit to `accounts` holds.
struct AccountsPlan {
    actions: Vec<Action>,
    reflects: i64,
    report: Option<AccountsReport>,
}

/// The run's rows folded while they were written, and the paths (relative to `groups`) of the files that hold
/// them.
pub(super) type OurFold<'a> = (&'a accounts::Folded, &'a BTreeSet<String>);

/// The commit that brings `accounts` up to date, or `None` when it is.
fn accounts_plan(
    d: &Delta,
    ctx: &Context<'_>,
    staging: &Staging,
    fold: Option<OurFold<'_>>,
) -> Result<Option<AccountsPlan>> {
    let groups_url = d.groups_url();
    let accounts_url = d.root.join(ACCOUNTS_DIR).url;
    let gstate = d.groups.snapshot().map_err(delta_err(&groups_url))?;
    let astate = d.accounts.snapshot().map_err(delta_err(&accounts_url))?;
    let latest = gstate.version();
    let reflected =
        block_on(astate.transaction_version(d.accounts.log_store().as_ref(), REFLECTS_APP))
            .map_err(delta_err(&accounts_url))?
            .unwrap_or(-1);
    let snapshot = accounts_files(d)?;
    let now = chrono::Utc::now().timestamp_millis();
    let remove = |f: &accounts::SnapshotFile| {
        let path = f.rel.strip_prefix(ACCOUNTS_DIR).unwrap_or(&f.rel);
        remove_action(path.to_string_lossy().into_owned(), None, None)
    };
    if !ctx.opts.accounts {
        // Never stale: emptied, and marked for a rebuild by the next run that keeps it.
        if snapshot.is_empty() && reflected == -1 {
            return Ok(None);
        }
        return Ok(Some(AccountsPlan {
            actions: snapshot.iter().map(remove).collect(),
            reflects: -1,
            report: None,
        }));
    }
    if reflected >= latest as i64 {
        return Ok(None);
    }
    let unseen = if reflected < 0 {
        None
    } else {
        unseen_adds(d, reflected as u64 + 1, latest)?
    };
    let rebuild = unseen.is_none();
    let added = unseen.unwrap_or_default();
    let live = groups_files(d)?;
    // The fold stands for our files when every one of them is among those to read: then they are not read.
    let fold = fold.filter(|(_, ours)| {
        let among: BTreeSet<&String> = if rebuild {
            live.keys().collect()
        } else {
            added.iter().filter(|p| live.contains_key(*p)).collect()
        };
        ours.iter().all(|p| among.contains(p))
    });
    let folded = |p: &String| fold.is_some_and(|(_, ours)| ours.contains(p));
    let (run_files, kept_files) = if rebuild {
        (
            Vec::new(),
            live.into_iter()
                .filter(|(p, _)| !folded(p))
                .map(|(_, f)| f)
                .collect(),
        )
    } else {
        let wanted: BTreeSet<&String> = added.iter().collect();
        (
            live.into_iter()
                .filter(|(p, _)| wanted.contains(p) && !folded(p))
                .map(|(_, f)| f)
                .collect(),
            Vec::new(),
        )
    };
    let token = uuid_token();
    let merged = accounts::merge(&accounts::Merge {
        staging: staging.dir(),
        snapshot: &snapshot,
        run_files,
        fold: fold.map(|(f, _)| f),
        rebuild,
        kept_files,
        name_suffix: Some(&token),
        codec: ctx.opts.codec,
        budget: ctx.opts.accounts_budget,
        pool: ctx.pool,
    })?;
    let mut actions = upload_snapshot(d, &merged.adds, now)?;
    let removed: BTreeSet<&Path> = merged.removes.iter().map(|p| p.as_path()).collect();
    actions.extend(
        snapshot
            .iter()
            .filter(|f| removed.contains(f.rel.as_path()))
            .map(remove),
    );
    Ok(Some(AccountsPlan {
        actions,
        reflects: latest as i64,
        report: Some(merged.report()),
    }))
}

/// Uploads the new snapshot's files (`(staged, relative path)`) and returns their Add actions.
fn upload_snapshot(d: &Delta, adds: &[(PathBuf, PathBuf)], now: i64) -> Result<Vec<Action>> {
    let mut actions = Vec::new();
    let mut uploads = Vec::new();
    for (from, to) in adds {
        let name = to
            .strip_prefix(ACCOUNTS_DIR)
            .unwrap_or(to)
            .to_string_lossy()
            .into_owned();
        let (_, stats) = stats::of_file(from)?;
        let size = std::fs::metadata(from)
            .map_err(Error::io("reading", from))?
            .len();
        actions.push(Action::Add(Add {
            path: name.clone(),
            partition_values: HashMap::new(),
            size: size as i64,
            modification_time: now,
            data_change: true,
            stats: Some(stats),
            tags: None,
            deletion_vector: None,
            base_row_id: None,
            default_row_commit_version: None,
            clustering_provider: None,
        }));
        uploads.push((d.root.join(&format!("{ACCOUNTS_DIR}/{name}")), from.clone()));
    }
    upload_all(uploads)?;
    Ok(actions)
}

/// The live files of `groups` at the loaded version, by path (relative to the table).
fn groups_files(d: &Delta) -> Result<BTreeMap<String, DataFile>> {
    Ok(live_files(&d.groups, &d.groups_url())?
        .into_iter()
        .map(|f| {
            let location = d.root.join(&format!("{GROUPS_DIR}/{}", f.path));
            let file = DataFile::Remote {
                location,
                size: f.size as u64,
            };
            (f.path, file)
        })
        .collect())
}

/// The live files of `accounts`, as snapshot files.
fn accounts_files(d: &Delta) -> Result<Vec<accounts::SnapshotFile>> {
    let mut found = Vec::new();
    for LiveFile { path, size, .. } in live_files(&d.accounts, &d.root.join(ACCOUNTS_DIR).url)? {
        let Some((bucket, of)) = accounts::parse_file_name(&path) else {
            continue;
        };
        found.push(accounts::SnapshotFile {
            bucket,
            of,
            file: DataFile::Remote {
                location: d.root.join(&format!("{ACCOUNTS_DIR}/{path}")),
                size: size as u64,
            },
            rel: Path::new(ACCOUNTS_DIR).join(&path),
        });
    }
    found.sort_by_key(|f| (f.bucket, f.of));
    Ok(found)
}

/// The files added by the `groups` commits `first..=latest` (those `accounts` has not seen), or `None` when
/// files left `groups` since or the log was cleaned up: then only a rebuild from every file of the latest
/// version is right.
impl Delta {
    pub(super) fn unseen_adds(&self, first: u64, latest: u64) -> Result<Option<Vec<String>>> {
        unseen_adds(self, first, latest)
    }
}

fn unseen_adds(d: &Delta, first: u64, latest: u64) -> Result<Option<Vec<String>>> {
    let groups_url = d.groups_url();
    let log_store = d.groups.log_store();
    let mut added: Vec<String> = Vec::new();
    for v in first..=latest {
        let Some(bytes) =
            block_on(log_store.read_commit_entry(v)).map_err(delta_err(&groups_url))?
        else {
            return Ok(None);
        };
        let actions = get_actions(v, &bytes).map_err(delta_err(&groups_url))?;
        if is_reorganisation(&actions) {
            // A compaction: the same rows in other files. Its files need reading only when it rewrote a file
            // `accounts` has not seen (folding seen rows again changes nothing: the merge is idempotent).
            let unseen = actions
                .iter()
                .any(|a| matches!(a, Action::Remove(r) if added.contains(&r.path)));
            if unseen {
                added.extend(actions.into_iter().filter_map(|a| match a {
                    Action::Add(a) => Some(a.path),
                    _ => None,
                }));
            }
            continue;
        }
        for action in actions {
            match action {
                Action::Add(a) => added.push(a.path),
                Action::Remove(_) => return Ok(None),
                _ => {}
            }
        }
    }
    Ok(Some(added))
}

/// True for a commit that only moved rows between files (every Add and Remove with `dataChange: false`, as
/// compaction writes them), and moved some.
pub(super) fn is_reorganisation(actions: &[Action]) -> bool {
    let mut files = actions.iter().filter_map(|a| match a {
        Action::Add(a) => Some(a.data_change),
        Action::Remove(r) => Some(r.data_change),
        _ => None,
    });
    files.next().is_some_and(|first| !first) && files.all(|changes| !changes)
}
