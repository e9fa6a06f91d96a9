//! `group-loader forget`: a deletion request (GDPR, CCPA, Segment's `DELETE_ONLY` regulations) carried out on
//! a dataset: the rows of the ids go from `groups`, `accounts` is rebuilt from what remains, the rejects lose
//! the lines that hold them, and the request leaves a record that holds no id in clear.
//!
//! Why this module exists: it is the owner of a request's report, as `load` is of a run's. It checks the
//! request, opens the dataset through the table interface (which carries it out in its format's one atomic
//! step), and says what it did and what still holds the old data.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

use serde::Serialize;

use crate::error::{Error, Result};
use crate::layout::Codec;
use crate::options::LoadOptions;
use crate::privacy::{self, IdKind, Ids};
use crate::report::{Progress, thousands};
use crate::table::{Context, ForgetRequest, Forgotten};

/// What a deletion request needs, however the command line spells it.
#[derive(Debug, Clone)]
pub struct ForgetOptions {
    pub output: PathBuf,
    pub ids: Ids,
    /// Also record the ids (hashed) so that later loads skip their events.
    pub suppress: bool,
    pub purge: bool,
    pub quiet: bool,
    /// Also write the request's record to this path.
    pub report: Option<PathBuf>,
    /// Also write its figures as a Prometheus text file.
    pub metrics: Option<PathBuf>,
    pub threads: Option<usize>,
    pub memory_limit: u64,
    /// The codec of rewritten files.
    pub codec: Codec,
    pub retry_timeout: std::time::Duration,
}

/// The record of a request, as `_runs/<stem>.json` keeps it: counts, never ids in clear.
#[derive(Debug, Serialize)]
pub struct ForgetReport {
    pub command: &'static str,
    pub request: String,
    pub started_at: String,
    pub output: String,
    /// How many ids of each kind the request named.
    pub ids: BTreeMap<&'static str, usize>,
    /// With `GROUP_LOADER_HASH_KEY` set: the keyed hash of each id (`kind:id`), so that whoever holds the key
    /// can tell which request removed a person; absent without a key.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ids_hashed: Option<Vec<String>>,
    #[serde(flatten)]
    pub done: Forgotten,
    pub elapsed_s: f64,
}

/// Carries out the request (with `--metrics`, writes its figures, also when it fails); returns its report.
pub fn forget(opts: &ForgetOptions) -> Result<ForgetReport> {
    let started = Instant::now();
    let result = run(opts, started);
    if let Some(path) = &opts.metrics {
        let mut m = crate::metrics::Metrics::new("forget", &opts.output.to_string_lossy());
        if let Ok(r) = &result {
            let d = &r.done;
            for (name, help, v) in [
                (
                    "forget_rows_removed",
                    "groups rows removed.",
                    d.rows_removed,
                ),
                (
                    "forget_reject_lines_removed",
                    "Lines removed from the rejects files.",
                    d.reject_lines_removed,
                ),
                (
                    "forget_accounts_rows_removed",
                    "accounts rows removed (groups with no row left).",
                    d.accounts_rows_removed,
                ),
                (
                    "forget_suppressed_ids",
                    "Ids newly recorded as suppressed.",
                    d.suppressed_ids,
                ),
            ] {
                m.gauge(name, help, v as f64);
            }
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

fn run(opts: &ForgetOptions, started: Instant) -> Result<ForgetReport> {
    let started_at = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    if opts.ids.is_empty() {
        return Err(Error::Usage(
            "forget needs at least one id: --user-id, --anonymous-id, --group-id or --ids-file"
                .into(),
        ));
    }
    crate::store::set_retry_timeout(opts.retry_timeout);
    let key = privacy::hash_key()?;
    let load = LoadOptions {
        codec: opts.codec,
        quiet: opts.quiet,
        threads: opts.threads,
        retry_timeout: opts.retry_timeout,
        ..LoadOptions::new(Vec::new(), &opts.output).with_memory_limit(opts.memory_limit)
    };
    super::check_dataset(&load, "forgetting")?;
    let pool = super::load::thread_pool(&load)?;
    let (mut table, _) = crate::table::open(&load)?;
    // The ids as the columns hold them: hashed where the loads hash the column.
    let (settings, column_key) = super::privacy::settings(&*table, &load)?;
    let mut row_ids = opts.ids.clone();
    if let Some(key) = &column_key {
        for kind in IdKind::ALL {
            if settings.hash_columns.iter().any(|c| c == kind.column()) {
                let hashed = opts
                    .ids
                    .of(kind)
                    .iter()
                    .map(|id| privacy::keyed_hash(key, id));
                *row_ids.of_mut(kind) = hashed.collect();
            }
        }
    }
    let staging = table.staging()?;
    // A name of its own (never an id): the request's time and process, hashed.
    let token = xxhash_rust::xxh3::xxh3_64(crate::staging::staging_name().as_bytes());
    let tag = format!("forget-{token:016x}");
    let request = ForgetRequest {
        ids: &opts.ids,
        row_ids: &row_ids,
        purge: opts.purge,
        stem: crate::layout::run_stem(&started_at, &tag),
        tag,
    };
    let progress = Progress::new(crate::options::ProgressWhen::Never, true, None);
    let ctx = Context {
        opts: &load,
        started_at: &started_at,
        pool: &pool,
        progress: &progress,
        started,
        shard: None,
    };
    let report_of = |done: &Forgotten| ForgetReport {
        command: "forget",
        request: request.stem.clone(),
        started_at: started_at.clone(),
        output: load.output.to_string(),
        ids: IdKind::ALL
            .iter()
            .map(|k| (k.column(), opts.ids.of(*k).len()))
            .collect(),
        ids_hashed: key.as_ref().map(|k| hashed_ids(k, &opts.ids)),
        done: done.clone(),
        elapsed_s: started.elapsed().as_secs_f64(),
    };
    let record = |done: &Forgotten| -> Result<Vec<u8>> {
        serde_json::to_vec_pretty(&report_of(done)).map_err(|e| Error::Internal(e.to_string()))
    };
    // Recorded first, so that a load starting now already skips them.
    let newly_suppressed = match table.privacy_dir()? {
        Some(dir) if opts.suppress => suppress(&dir, &request.stem, &opts.ids)?,
        _ => 0,
    };
    let mut done = table.forget(&request, &staging, &ctx, &record)?;
    done.suppressed_ids = newly_suppressed;
    drop(staging);
    let report = report_of(&done);
    if !opts.quiet {
        eprint!("{}", summary(&report));
    }
    if let Some(path) = &opts.report {
        super::copy_report(path, &record(&done)?)
            .map_err(Error::after_publish("the --report copy"))?;
    }
    Ok(report)
}

/// Records the ids as suppressed under `dir`, unless every one of them already is. Returns how many it
/// recorded.
fn suppress(dir: &crate::store::Location, stem: &str, ids: &Ids) -> Result<u64> {
    let known = privacy::Suppressed::read(dir)?;
    let all_known = IdKind::ALL
        .iter()
        .all(|k| ids.of(*k).iter().all(|id| known.holds(*k, id)));
    if all_known {
        return Ok(0);
    }
    Ok(privacy::suppress(dir, stem, ids)? as u64)
}

/// `kind:id` of every id, hashed under the key, sorted.
fn hashed_ids(key: &[u8], ids: &Ids) -> Vec<String> {
    let mut v: Vec<String> = IdKind::ALL
        .iter()
        .flat_map(|k| {
            ids.of(*k)
                .iter()
                .map(move |id| privacy::keyed_hash(key, &format!("{}:{id}", k.column())))
        })
        .collect();
    v.sort();
    v
}

/// The human summary on stderr.
pub fn summary(r: &ForgetReport) -> String {
    use std::fmt::Write as _;
    let d = &r.done;
    let mut s = String::new();
    let named: Vec<String> = r
        .ids
        .iter()
        .filter(|(_, n)| **n > 0)
        .map(|(k, n)| format!("{n} {k}"))
        .collect();
    let _ = writeln!(
        s,
        "group-loader: forget on {}: {} id(s) ({})",
        r.output,
        r.ids.values().sum::<usize>(),
        named.join(", ")
    );
    if !d.changed() {
        let _ = writeln!(s, "  nothing holds these ids: nothing changed");
    } else {
        let _ = writeln!(
            s,
            "  groups: {} row(s) removed in {} partition(s) ({} file(s) rewritten, {} removed)",
            thousands(d.rows_removed),
            d.partitions.len(),
            d.files_rewritten,
            d.files_removed
        );
        if let Some(a) = &d.accounts {
            let _ = writeln!(
                s,
                "  accounts: rebuilt from the rows that remain ({} group(s) lost rows, {} row(s) removed); {} \
                 group(s) now",
                d.groups_affected,
                d.accounts_rows_removed,
                thousands(a.groups)
            );
        }
        let _ = writeln!(
            s,
            "  rejects: {} line(s) removed from {} file(s)",
            d.reject_lines_removed, d.rejects_files_changed
        );
        let _ = writeln!(s, "  record: _runs/{}.json (counts only)", r.request);
    }
    if d.suppressed_ids > 0 {
        let _ = writeln!(
            s,
            "  suppressed: {} id(s) recorded (hashed): later loads skip their events",
            d.suppressed_ids
        );
    }
    if let Some(p) = &d.purged {
        let _ = writeln!(
            s,
            "  purged: {} earlier version(s), {} unreferenced file(s), {} log entr(ies)",
            p.versions, p.files, p.log_entries
        );
    }
    for held in &d.still_held {
        let _ = writeln!(s, "  still holds the old data: {held}");
    }
    s
}
