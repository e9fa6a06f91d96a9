//! Counting, the run report, the stderr summary and the progress bar.
//!
//! Why this module exists: a nightly job is monitored through its report, so the counts must add up
//! (`events = skipped + rejected + suppressed + rows_written`, and `lines = blank + events` less what batch envelopes
//! hold beyond one event a line; checked in the tests) and keep the same keys every night. Counting lives here,
//! next to the report it feeds.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use serde::Serialize;

use crate::reject::Reason;

mod progress;
pub use progress::{Phase, Progress};

/// At most this many distinct skipped event types are counted by name; the rest count as `(other)`.
pub const MAX_SKIPPED_TYPES: usize = 1000;

/// What happened to the lines (and events) of a run.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Counts {
    pub lines: u64,
    /// Each non-blank line is one event, but a batch envelope is as many as its `batch` array holds.
    pub events: u64,
    pub blank: u64,
    /// Batch envelopes: the lines that were envelopes, and the events they held.
    pub batches: Batches,
    /// Event type -> lines skipped.
    pub skipped: BTreeMap<String, u64>,
    /// Reject reason -> lines (every reason listed, duplicates included).
    pub rejected: BTreeMap<&'static str, u64>,
    pub rows_written: u64,
    /// Events of ids a deletion request suppressed (`forget --suppress`): not loaded, not rejected, no line
    /// kept.
    pub suppressed: u64,
    /// Events dropped because their messageId was already loaded (also in `rejected`).
    pub duplicates: Duplicates,
    pub shadowed_traits: u64,
    pub invalid_times: u64,
}

/// Duplicates, by who loaded the messageId first.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq, Eq)]
pub struct Duplicates {
    pub this_run: u64,
    pub earlier_runs: u64,
}

/// Lines that were batch envelopes, and the events they held (an envelope rejected whole is one).
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq, Eq)]
pub struct Batches {
    pub lines: u64,
    pub events: u64,
}

impl Default for Counts {
    fn default() -> Self {
        Counts {
            lines: 0,
            events: 0,
            blank: 0,
            batches: Batches::default(),
            skipped: BTreeMap::new(),
            rejected: Reason::ALL.iter().map(|r| (r.as_str(), 0)).collect(),
            rows_written: 0,
            suppressed: 0,
            duplicates: Duplicates::default(),
            shadowed_traits: 0,
            invalid_times: 0,
        }
    }
}

impl Counts {
    pub fn skip(&mut self, event_type: &str) {
        if let Some(n) = self.skipped.get_mut(event_type) {
            *n += 1;
        } else if self.skipped.len() < MAX_SKIPPED_TYPES {
            self.skipped.insert(event_type.to_string(), 1);
        } else {
            *self.skipped.entry("(other)".to_string()).or_default() += 1;
        }
    }

    pub fn reject(&mut self, reason: Reason) {
        *self.rejected.entry(reason.as_str()).or_default() += 1;
    }

    /// Events dropped because their messageId was already loaded.
    pub fn duplicates(&self) -> u64 {
        self.rejected
            .get(Reason::DuplicateMessageId.as_str())
            .copied()
            .unwrap_or(0)
    }

    pub fn skipped_total(&self) -> u64 {
        self.skipped.values().sum()
    }

    pub fn rejected_total(&self) -> u64 {
        self.rejected.values().sum()
    }

    /// Rejected events that count against `--max-reject-ratio` (duplicates do not).
    pub fn rejected_for_ratio(&self) -> u64 {
        self.rejected_total() - self.duplicates()
    }

    /// The events the ratio is taken over: not skipped (blank lines are not events).
    pub fn considered(&self) -> u64 {
        self.events - self.skipped_total()
    }

    pub fn reject_ratio(&self) -> f64 {
        match self.considered() {
            0 => 0.0,
            n => self.rejected_for_ratio() as f64 / n as f64,
        }
    }

    /// The counting rules: `events = skipped + rejected + suppressed + rows_written`, and every non-blank line
    /// is one event except batch envelopes, which hold `batches.events` events in `batches.lines` lines.
    pub fn adds_up(&self) -> bool {
        self.events
            == self.skipped_total() + self.rejected_total() + self.suppressed + self.rows_written
            && self.lines + self.batches.events == self.blank + self.events + self.batches.lines
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct InputReport {
    pub path: String,
    /// Bytes read from the file (compressed size for gzip/zstd).
    pub bytes: u64,
    /// Bytes after decompression.
    pub decompressed_bytes: u64,
    pub compression: &'static str,
    pub lines: u64,
    pub events: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct FileReport {
    /// Path relative to the output folder.
    pub path: String,
    pub rows: u64,
    pub bytes: u64,
}

/// An input that looks like a JSON array or pretty-printed JSON rather than NDJSON.
#[derive(Debug, Clone, Serialize)]
pub struct NotNdjson {
    pub path: String,
    /// `json_array` or `pretty_printed_json`.
    pub looks_like: &'static str,
    /// What to do about it (also added to the message of the file's rejects).
    pub hint: String,
}

/// Why a run published no rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum NotPublished {
    /// More rejected events than `--max-reject-ratio` allows (exit 3).
    RejectRatio,
    /// Fewer rows than `--min-rows` (exit 5).
    MinRows,
    /// A published run with the same id already loaded these inputs: nothing to do (exit 0).
    AlreadyLoaded,
    /// Delta: the report as written just before the run's commit to `groups`. The run replaces it once the
    /// commit landed; a report left in this state belongs to a run that stopped during its commit, and the
    /// `groups` log says whether the commit landed (a transaction named after the run). The next run of the
    /// same inputs finishes it either way.
    CommitPending,
}

/// What a Delta run committed.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CommitReport {
    /// The `groups` version of the run's commit, and the `accounts` version brought up to date after it.
    pub groups_version: Option<u64>,
    pub accounts_version: Option<u64>,
    /// Times the run committed again because the table had moved on under it.
    pub retries: u64,
    /// Duplicates of rows that concurrent commits added, dropped before committing (also in `duplicates`).
    pub concurrent_duplicates: u64,
    /// Files deleted by the vacuum (`--vacuum-retention`).
    pub files_vacuumed: u64,
}

/// What the dedupe window read.
#[derive(Debug, Clone, Serialize)]
pub struct DedupeReport {
    /// `--dedupe-window`, as a duration (`7days`, `12h`, `0s`).
    pub window: String,
    /// Partitions of earlier runs whose `id` column was read, and the ids they held.
    pub partitions_read: usize,
    pub ids_read: u64,
}

/// The run report written to `OUT/_runs/<run>.json` (and `--report`).
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub run: String,
    pub tool_version: &'static str,
    pub schema_version: &'static str,
    pub started_at: String,
    pub output: String,
    pub options: serde_json::Value,
    pub inputs: Vec<InputReport>,
    #[serde(flatten)]
    pub counts: Counts,
    pub reject_ratio: f64,
    pub max_reject_ratio: f64,
    pub min_rows: u64,
    /// Inputs that look like a JSON array or pretty-printed JSON (their rejects say how to convert them).
    pub not_ndjson: Vec<NotNdjson>,
    pub dedupe: DedupeReport,
    /// Partition path -> rows written.
    pub partitions: BTreeMap<String, u64>,
    pub files: Vec<FileReport>,
    /// `--mode overwrite`: partition path -> rows of earlier runs removed.
    pub replaced: BTreeMap<String, u64>,
    /// Path of the rejects file, relative to the output folder, or null when nothing was rejected.
    pub rejects_file: Option<String>,
    pub elapsed_s: f64,
    pub published: bool,
    /// Why nothing was published (null when the run published).
    pub not_published: Option<NotPublished>,
    /// When these inputs were already loaded (the `started_at` of the run that loaded them), if they were.
    pub already_loaded: Option<String>,
    /// Set when the run that loaded these inputs had stopped right after its commit, and this run finished it
    /// (brought `accounts` up to date, completed its report).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub finished: Option<Unfinished>,
    /// The `accounts` snapshot this run published (absent with `--no-accounts` or when nothing was published).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub accounts: Option<AccountsReport>,
    /// Delta tables: the versions committed (absent for a hive dataset).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub commit: Option<CommitReport>,
    /// `--shard K/N`: this shard's share of the listing (absent without `--shard`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shard: Option<crate::report::ShardReport>,
    /// `--glue-database`: the tables registered in AWS Glue after the run (absent without the option).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub glue: Vec<CatalogTable>,
    /// The output is one Parquet file, not a dataset (paths in the report are then as given, not relative to
    /// a folder).
    #[serde(skip)]
    pub one_file: bool,
}

/// What registering did to a table in a catalog.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Registered {
    Created,
    Updated,
    Unchanged,
}

/// A table registered in a catalog (AWS Glue), as the report lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CatalogTable {
    /// `database.table`.
    pub name: String,
    pub location: String,
    pub action: Registered,
}

/// What the report says about a shard's share.
#[derive(Debug, Clone, Serialize)]
pub struct ShardReport {
    /// `K` and `N`.
    pub index: u32,
    pub count: u32,
    /// The files and bytes of this shard's share.
    pub files: usize,
    pub bytes: u64,
    /// The whole listing every shard split: its files and bytes, and a hash of its names and sizes. Shards that
    /// report different hashes saw different listings (files arrived while they started).
    pub listed_files: usize,
    pub listed_bytes: u64,
    pub listing: String,
}

/// A Delta run that committed its rows to `groups` and stopped before finishing (killed, or cut off from the
/// store right after its commit): the next run of the same inputs finishes it.
#[derive(Debug, Clone, Serialize)]
pub struct Unfinished {
    /// Its report (relative to the output), still as written before the commit; `None` when it left none.
    pub report: Option<String>,
    /// The `groups` version its commit made.
    pub groups_version: u64,
}

/// What the run did to the `accounts` table.
#[derive(Debug, Clone, serde::Serialize)]
pub struct AccountsReport {
    /// Groups in the new snapshot.
    pub groups: u64,
    /// Snapshot files (re)written by this run, and the bucket count.
    pub files_written: usize,
    pub buckets: u32,
    /// Rebuilt from every `groups` file (no snapshot to merge into, or `--mode overwrite` removed rows).
    pub rebuilt: bool,
    /// Groups sent more distinct `extra_traits` keys than a group keeps in `accounts` (the first 1,000 in name
    /// order are kept there; `groups` keeps every key).
    pub groups_over_key_limit: u64,
    /// This run's `groups` rows folded into accounts while they were written.
    pub rows_folded: u64,
    /// `groups` rows the merge read back from files: other runs' (a rebuild, commits it had not seen), and
    /// this run's when its fold could not stand for them (rows dropped as concurrent duplicates).
    pub rows_read: u64,
}

pub fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Bytes for people: `812 B`, `1.2 MB`, `4.4 GB` (powers of 1000).
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "kB", "MB", "GB", "TB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1000.0 && unit < UNITS.len() - 1 {
        v /= 1000.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

fn listing<'a>(items: impl IntoIterator<Item = (&'a str, u64)>) -> String {
    items
        .into_iter()
        .map(|(k, v)| format!("{k} {}", thousands(v)))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The inputs of a run, for the summary: their paths when there are few, else how many and the folder they
/// share.
pub fn describe_inputs(inputs: &[InputReport]) -> String {
    let name = |p: &str| {
        if p == "-" {
            "standard input".to_string()
        } else {
            p.to_string()
        }
    };
    let files = match inputs.len() {
        0 => return "no inputs".to_string(),
        1..=3 => inputs
            .iter()
            .map(|i| name(&i.path))
            .collect::<Vec<_>>()
            .join(", "),
        n => match common_folder(inputs.iter().map(|i| i.path.as_str())) {
            Some(dir) => format!("{n} files under {dir}"),
            None => format!("{n} files"),
        },
    };
    let bytes: u64 = inputs.iter().map(|i| i.bytes).sum();
    let lines: u64 = inputs.iter().map(|i| i.lines).sum();
    format!(
        "{files} ({}, {} lines)",
        human_bytes(bytes),
        thousands(lines)
    )
}

/// The longest folder prefix (whole `/`-separated parts) that every path shares.
fn common_folder<'a>(paths: impl Iterator<Item = &'a str>) -> Option<String> {
    let mut common: Option<Vec<&str>> = None;
    for p in paths {
        let parts: Vec<&str> = p.split('/').collect();
        let folder = &parts[..parts.len().saturating_sub(1)];
        common = Some(match common {
            None => folder.to_vec(),
            Some(c) => c
                .iter()
                .zip(folder)
                .take_while(|(a, b)| a == b)
                .map(|(a, _)| *a)
                .collect(),
        });
    }
    let c = common?.join("/");
    match c.as_str() {
        "" => None,
        _ => Some(format!("{c}/")),
    }
}

impl Report {
    /// The report as the JSON that `_runs/` and `--report` hold.
    pub fn to_json(&self) -> crate::error::Result<Vec<u8>> {
        let mut v =
            serde_json::to_vec_pretty(self).map_err(|source| crate::error::Error::Json {
                what: "serialising the report".into(),
                source,
            })?;
        v.push(b'\n');
        Ok(v)
    }

    /// The short human summary printed to stderr: what was loaded where, from what, and what was not.
    pub fn summary(&self) -> String {
        let mut s = String::new();
        if self.not_published == Some(NotPublished::AlreadyLoaded) {
            let when = self.already_loaded.as_deref().unwrap_or("earlier");
            match &self.finished {
                None => {
                    let _ = writeln!(
                        s,
                        "group-loader: nothing to do: these inputs were already loaded into {} by run {} \
                         (started {when}); a re-run never loads a row twice",
                        self.output, self.run
                    );
                }
                Some(f) => {
                    let _ = writeln!(
                        s,
                        "group-loader: finished run {} (started {when}), which had committed these inputs to {} \
                         (groups version {}) and stopped before it was done: accounts brought up to date{}",
                        self.run,
                        self.output,
                        f.groups_version,
                        f.report
                            .as_deref()
                            .map(|r| format!(", its report {r} completed"))
                            .unwrap_or_default()
                    );
                }
            }
            let _ = writeln!(s, "  from {}", describe_inputs(&self.inputs));
            self.glue_line(&mut s);
            return s;
        }
        let headline = self.headline();
        let _ = writeln!(s, "group-loader: {headline}");
        let _ = writeln!(s, "  from {}", describe_inputs(&self.inputs));
        if let Some(shard) = &self.shard {
            let _ = writeln!(
                s,
                "  shard {}/{}: {} of {} files, {} of {} bytes (listing {})",
                shard.index,
                shard.count,
                thousands(shard.files as u64),
                thousands(shard.listed_files as u64),
                thousands(shard.bytes),
                thousands(shard.listed_bytes),
                shard.listing
            );
        }
        self.counts_lines(&mut s);
        // Over the reject ratio, the error message that follows gives the hint (once).
        if self.not_published != Some(NotPublished::RejectRatio) {
            for n in &self.not_ndjson {
                let _ = writeln!(s, "  note: {}", n.hint);
            }
        }
        if let Some(rejects) = &self.rejects_file {
            let path = match self.one_file {
                true => Path::new(rejects).to_path_buf(),
                false => Path::new(&self.output).join(rejects),
            };
            let _ = writeln!(s, "  rejects: {}", path.display());
        }
        self.detail_lines(&mut s);
        let _ = writeln!(s, "  run {} in {:.2}s", self.run, self.elapsed_s);
        s
    }

    /// `glue: db.groups created, db.accounts unchanged` when the run registered tables in Glue.
    fn glue_line(&self, s: &mut String) {
        if self.glue.is_empty() {
            return;
        }
        let tables: Vec<String> = self
            .glue
            .iter()
            .map(|t| {
                let action = match t.action {
                    Registered::Created => "created",
                    Registered::Updated => "updated",
                    Registered::Unchanged => "unchanged",
                };
                format!("{} {action}", t.name)
            })
            .collect();
        let _ = writeln!(*s, "  glue: {}", tables.join(", "));
    }

    /// The summary's lines about accounts, the Glue catalog, and traits or times that did not fit.
    fn detail_lines(&self, s: &mut String) {
        if let Some(a) = &self.accounts {
            let _ = writeln!(
                *s,
                "  accounts: {} groups ({} of {} files {})",
                thousands(a.groups),
                a.files_written,
                a.buckets,
                if a.rebuilt { "rebuilt" } else { "merged" }
            );
            if a.groups_over_key_limit > 0 {
                let _ = writeln!(
                    s,
                    "  accounts: {} groups were sent more than {} distinct extra_traits keys; accounts keeps the \
                     first {} in name order (groups keeps them all)",
                    thousands(a.groups_over_key_limit),
                    thousands(crate::layout::MAX_EXTRA_KEYS as u64),
                    thousands(crate::layout::MAX_EXTRA_KEYS as u64)
                );
            }
        }
        self.glue_line(s);
        if self.counts.shadowed_traits > 0 || self.counts.invalid_times > 0 {
            let _ = writeln!(
                *s,
                "  shadowed traits {}, invalid times {}",
                thousands(self.counts.shadowed_traits),
                thousands(self.counts.invalid_times)
            );
        }
    }

    /// The summary's first line: what the run did to the output.
    fn headline(&self) -> String {
        let c = &self.counts;
        match self.not_published {
            None | Some(NotPublished::AlreadyLoaded | NotPublished::CommitPending)
                if self.one_file =>
            {
                format!(
                    "loaded {} rows into {} (one Parquet file)",
                    thousands(c.rows_written),
                    self.output
                )
            }
            None | Some(NotPublished::AlreadyLoaded | NotPublished::CommitPending) => format!(
                "loaded {} rows into {} ({} partitions, {} files)",
                thousands(c.rows_written),
                self.output,
                self.partitions.len(),
                self.files.len()
            ),
            Some(NotPublished::RejectRatio) => format!(
                "published nothing into {}: {} of {} events rejected ({:.4}, over --max-reject-ratio {})",
                self.output,
                thousands(c.rejected_for_ratio()),
                thousands(c.considered()),
                self.reject_ratio,
                self.max_reject_ratio
            ),
            Some(NotPublished::MinRows) => format!(
                "published nothing into {}: {} rows, fewer than --min-rows {}",
                self.output,
                thousands(c.rows_written),
                thousands(self.min_rows)
            ),
        }
    }

    /// The summary's lines about the events: rows, skipped, rejected, deduplicated, replaced.
    fn counts_lines(&self, s: &mut String) {
        let c = &self.counts;
        let batches = if c.batches.lines > 0 {
            format!(
                " ({} in {} batch envelopes)",
                thousands(c.batches.events),
                thousands(c.batches.lines)
            )
        } else {
            String::new()
        };
        let duplicates = match c.duplicates() {
            0 => String::new(),
            n => format!(" ({} of them duplicates)", thousands(n)),
        };
        let _ = writeln!(
            s,
            "  events {}{batches}: {} rows, {} skipped, {} rejected{duplicates}; {} blank lines",
            thousands(c.events),
            thousands(c.rows_written),
            thousands(c.skipped_total()),
            thousands(c.rejected_total()),
            thousands(c.blank),
        );
        if c.suppressed > 0 {
            let _ = writeln!(
                s,
                "  suppressed: {} events of ids a deletion request suppressed (not loaded, no line kept)",
                thousands(c.suppressed)
            );
        }
        if c.skipped_total() > 0 {
            let skipped = c.skipped.iter().map(|(k, v)| (k.as_str(), *v));
            let _ = writeln!(s, "  skipped (other event types): {}", listing(skipped));
        }
        if c.rejected_for_ratio() > 0 {
            let rejected = Reason::ALL
                .iter()
                .filter(|r| **r != Reason::DuplicateMessageId)
                .filter_map(|r| {
                    let n = c.rejected.get(r.as_str()).copied().unwrap_or(0);
                    (n > 0).then_some((r.as_str(), n))
                });
            let _ = writeln!(
                s,
                "  rejected: {}; reject ratio {:.4} (max {})",
                listing(rejected),
                self.reject_ratio,
                self.max_reject_ratio
            );
        }
        if c.duplicates() > 0 {
            let d = c.duplicates;
            let _ = writeln!(
                s,
                "  deduplicated: {} events not loaded again, their messageId already loaded ({} by this run, {} by \
                 earlier runs within --dedupe-window {})",
                thousands(c.duplicates()),
                thousands(d.this_run),
                thousands(d.earlier_runs),
                self.dedupe.window
            );
        }
        if !self.replaced.is_empty() {
            let removed: u64 = self.replaced.values().sum();
            let each = self.replaced.iter().map(|(k, v)| (k.as_str(), *v));
            let _ = writeln!(
                s,
                "  replaced (--mode overwrite): {} partitions, {} rows of earlier runs removed: {}",
                self.replaced.len(),
                thousands(removed),
                listing(each)
            );
        }
    }
}

#[cfg(test)]
mod tests;
