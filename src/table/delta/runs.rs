//! A Delta run's own record in object storage: its report (`_runs/`) and rejects (`_rejects/`), written before
//! the commit that makes its rows visible and completed after it, and the commit itself found again in the log.
//!
//! Why this module exists: a run can stop at any moment (kill -9, a lost connection), and the moment that
//! matters is right after the `groups` commit: the rows are live, and everything still to do (the `accounts`
//! commit, the final report) must not be lost. So the rejects and a report saying `commit_pending` are uploaded
//! *before* the commit, under names of the run's own attempt; and a later run of the same inputs, finding the
//! run's transaction in the log, tells a finished run (its report says `published`) from one that stopped after
//! its commit (its report is still pending), and finishes the latter. The commit is recognised as the run's
//! own by the data files it added: their names hold a token no other attempt uses.

use std::collections::BTreeSet;

use deltalake::kernel::Action;
use deltalake::logstore::get_actions;

use super::log::delta_err;
use super::{Delta, Pending, RUN_APP};
use crate::error::Result;
use crate::layout::{GROUPS_DIR, REJECTS_DIR, RUNS_DIR};
use crate::report::Unfinished;
use crate::store::block_on;
use crate::table::{EarlierRun, Outcome, Record, Visibility};

/// How far back the log is searched for a run's commit (a run is re-run within days, not thousands of commits).
const SEARCHED_COMMITS: u64 = 10_000;

/// A run's commit to `groups`: its version and the data files it added.
pub(super) struct RunCommit {
    pub version: u64,
    pub adds: BTreeSet<String>,
}

impl Delta {
    /// The reports in `_runs/` of run `run_id`, oldest attempt first: (path relative to the output, report).
    pub(super) fn run_reports(&self, run_id: &str) -> Result<Vec<(String, serde_json::Value)>> {
        let dir = self.root.join(RUNS_DIR);
        let mut found = Vec::new();
        for meta in dir.list()? {
            let Some(name) = meta.location.filename() else {
                continue;
            };
            if !crate::layout::is_run_file(name, run_id) {
                continue;
            }
            let rel = format!("{RUNS_DIR}/{name}");
            let bytes = self.root.join(&rel).get_bytes()?;
            if let Some(report) = bytes.and_then(|b| serde_json::from_slice(&b).ok()) {
                found.push((rel, report));
            }
        }
        found.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(found)
    }

    /// The commit of run `run_id` in `groups` at the loaded version, if there is one: the newest commit holding
    /// the run's transaction.
    pub(super) fn run_commit(&self, run_id: &str) -> Result<Option<RunCommit>> {
        let url = self.groups_url();
        let Some(latest) = self.groups.version() else {
            return Ok(None);
        };
        let app = format!("{RUN_APP}{run_id}");
        let log_store = self.groups.log_store();
        let first = latest.saturating_sub(SEARCHED_COMMITS);
        for version in (first..=latest).rev() {
            let Some(bytes) =
                block_on(log_store.read_commit_entry(version)).map_err(delta_err(&url))?
            else {
                continue;
            };
            let actions = get_actions(version, &bytes).map_err(delta_err(&url))?;
            if actions
                .iter()
                .any(|a| matches!(a, Action::Txn(t) if t.app_id == app))
            {
                let adds = actions
                    .into_iter()
                    .filter_map(|a| match a {
                        Action::Add(add) => Some(add.path),
                        _ => None,
                    })
                    .collect();
                return Ok(Some(RunCommit { version, adds }));
            }
        }
        Ok(None)
    }

    /// The earlier run with id `run_id` whose transaction is in `groups`, if any: finished (its report says
    /// published), or stopped after its commit (its report, if it left one, still pending).
    pub(super) fn earlier_run(&self, run_id: &str) -> Result<Option<EarlierRun>> {
        let Some(commit) = self.run_commit(run_id)? else {
            return Ok(None);
        };
        let reports = self.run_reports(run_id)?;
        let started = |r: &serde_json::Value| r["started_at"].as_str().map(str::to_string);
        if let Some((_, done)) = reports.iter().find(|(_, r)| r["published"] == true) {
            return Ok(Some(EarlierRun {
                started_at: started(done).unwrap_or_else(|| "earlier".into()),
                unfinished: None,
            }));
        }
        // The attempt whose commit landed is the one whose report lists the committed files.
        let own = reports
            .into_iter()
            .find(|(_, r)| report_files(r) == commit.adds);
        Ok(Some(EarlierRun {
            started_at: own
                .as_ref()
                .and_then(|(_, r)| started(r))
                .unwrap_or_else(|| "earlier".into()),
            unfinished: Some(Unfinished {
                report: own.map(|(rel, _)| rel),
                groups_version: commit.version,
            }),
        }))
    }

    /// Uploads the run's rejects (when it has any) and its record as it stands before the commit
    /// (`commit_pending`, with the files the commit will add), under the names of this attempt.
    pub(super) fn put_pending(
        &self,
        stem: &str,
        pending: &[Pending],
        rejects: &std::path::Path,
        outcome: &mut Outcome,
        record: Record<'_>,
    ) -> Result<()> {
        outcome.files.clear();
        outcome.partitions.clear();
        for p in pending.iter().filter(|p| p.staged.rows > 0) {
            outcome.add_file(format!("{GROUPS_DIR}/{}", p.add.path), &p.staged);
        }
        self.put_rejects(stem, rejects, outcome)?;
        outcome.visibility = Visibility::CommitPending;
        self.put_report(stem, record(outcome)?)
    }

    /// Uploads the run's rejects file, when it has one, to `_rejects/<stem>.ndjson`.
    pub(super) fn put_rejects(
        &self,
        stem: &str,
        rejects: &std::path::Path,
        outcome: &mut Outcome,
    ) -> Result<()> {
        if rejects.exists() {
            let rel = format!("{REJECTS_DIR}/{stem}.ndjson");
            self.root.join(&rel).upload(rejects)?;
            outcome.rejects_file = Some(rel);
        }
        Ok(())
    }

    /// Writes the run's record to `_runs/<stem>.json` (the name of this attempt).
    pub(super) fn put_report(&self, stem: &str, bytes: Vec<u8>) -> Result<()> {
        self.root
            .join(&format!("{RUNS_DIR}/{stem}.json"))
            .put_bytes(bytes)
    }

    /// Removes what this attempt uploaded for its record (its commit did not land: a run with the same id was
    /// first).
    pub(super) fn remove_record(&self, stem: &str) -> Result<()> {
        self.root
            .join(&format!("{RUNS_DIR}/{stem}.json"))
            .delete()?;
        self.root
            .join(&format!("{REJECTS_DIR}/{stem}.ndjson"))
            .delete()
    }

    /// Completes the report of a run that stopped after its commit: published, with its commit's version, the
    /// `accounts` state this run (started at `started_at`) brought it to, and when it was finished.
    pub(super) fn finish_unfinished(
        &self,
        started_at: &str,
        outcome: &Outcome,
        unfinished: &Unfinished,
    ) -> Result<()> {
        let Some(rel) = &unfinished.report else {
            return Ok(());
        };
        let location = self.root.join(rel);
        let Some(bytes) = location.get_bytes()? else {
            return Ok(());
        };
        let Ok(mut earlier) = serde_json::from_slice::<serde_json::Value>(&bytes) else {
            return Ok(());
        };
        earlier["published"] = true.into();
        earlier["not_published"] = serde_json::Value::Null;
        if !earlier["commit"].is_object() {
            earlier["commit"] = serde_json::json!({});
        }
        earlier["commit"]["groups_version"] = unfinished.groups_version.into();
        if let Some(c) = &outcome.commit {
            earlier["commit"]["accounts_version"] = serde_json::json!(c.accounts_version);
        }
        if let Some(a) = &outcome.accounts {
            earlier["accounts"] = serde_json::json!(a);
        }
        earlier["finished_by"] = serde_json::json!({
            "run_started_at": started_at,
            "why": "the run stopped after its commit to groups; a later run of the same inputs finished it",
        });
        let mut bytes =
            serde_json::to_vec_pretty(&earlier).map_err(|source| crate::error::Error::Json {
                what: format!("completing the report {rel}"),
                source,
            })?;
        bytes.push(b'\n');
        location.put_bytes(bytes)
    }
}

/// The `groups` files a report lists, relative to the table (as the log names them).
fn report_files(report: &serde_json::Value) -> BTreeSet<String> {
    report["files"]
        .as_array()
        .map(|files| {
            files
                .iter()
                .filter_map(|f| f["path"].as_str())
                .filter_map(|p| {
                    p.strip_prefix(&format!("{GROUPS_DIR}/"))
                        .map(str::to_string)
                })
                .collect()
        })
        .unwrap_or_default()
}
