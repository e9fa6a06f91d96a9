//! Counting, the run report, the stderr summary and the progress bar (SPEC §8).
//!
//! Why this module exists: a nightly job is monitored through its report, so the counts must add up
//! (`lines = blank + skipped + rejected + rows_written`, checked in the tests) and keep the same keys every
//! night. Counting lives here, next to the report it feeds.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::IsTerminal;

use serde::Serialize;

use crate::parse::Reason;

/// At most this many distinct skipped event types are counted by name; the rest count as `(other)`.
pub const MAX_SKIPPED_TYPES: usize = 1000;

/// What happened to the lines of a run.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Counts {
    pub lines: u64,
    pub blank: u64,
    /// Event type -> lines skipped.
    pub skipped: BTreeMap<String, u64>,
    /// Reject reason -> lines (every reason listed, duplicates included).
    pub rejected: BTreeMap<&'static str, u64>,
    pub rows_written: u64,
    pub shadowed_traits: u64,
    pub invalid_times: u64,
}

impl Default for Counts {
    fn default() -> Self {
        Counts {
            lines: 0,
            blank: 0,
            skipped: BTreeMap::new(),
            rejected: Reason::ALL.iter().map(|r| (r.as_str(), 0)).collect(),
            rows_written: 0,
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

    pub fn skipped_total(&self) -> u64 {
        self.skipped.values().sum()
    }

    pub fn rejected_total(&self) -> u64 {
        self.rejected.values().sum()
    }

    /// Rejected lines that count against `--max-reject-ratio` (duplicates do not).
    pub fn rejected_for_ratio(&self) -> u64 {
        self.rejected_total()
            - self
                .rejected
                .get(Reason::DuplicateMessageId.as_str())
                .copied()
                .unwrap_or(0)
    }

    /// The lines the ratio is taken over: not blank, not skipped.
    pub fn considered(&self) -> u64 {
        self.lines - self.blank - self.skipped_total()
    }

    pub fn reject_ratio(&self) -> f64 {
        match self.considered() {
            0 => 0.0,
            n => self.rejected_for_ratio() as f64 / n as f64,
        }
    }

    /// The counting rule of SPEC §7.
    pub fn adds_up(&self) -> bool {
        self.lines == self.blank + self.skipped_total() + self.rejected_total() + self.rows_written
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
}

#[derive(Debug, Clone, Serialize)]
pub struct FileReport {
    /// Path relative to the output folder.
    pub path: String,
    pub rows: u64,
    pub bytes: u64,
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
    /// Partition path -> rows written.
    pub partitions: BTreeMap<String, u64>,
    pub files: Vec<FileReport>,
    /// Path of the rejects file, relative to the output folder, or null when nothing was rejected.
    pub rejects_file: Option<String>,
    pub elapsed_s: f64,
    pub published: bool,
    /// The `accounts` snapshot this run published (absent with `--no-accounts` or when nothing was published).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub accounts: Option<AccountsReport>,
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
}

fn thousands(n: u64) -> String {
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

fn listing(map: &BTreeMap<String, u64>) -> String {
    map.iter()
        .map(|(k, v)| format!("{k} {}", thousands(*v)))
        .collect::<Vec<_>>()
        .join(", ")
}

impl Report {
    /// The short human summary printed to stderr.
    pub fn summary(&self) -> String {
        let c = &self.counts;
        let mut s = String::new();
        let verb = if self.published {
            "loaded"
        } else {
            "did not publish"
        };
        let _ = writeln!(
            s,
            "group-loader: {verb} {} rows into {} partitions ({} files) from {} inputs in {:.2}s (run {})",
            thousands(c.rows_written),
            self.partitions.len(),
            self.files.len(),
            self.inputs.len(),
            self.elapsed_s,
            self.run
        );
        let _ = writeln!(
            s,
            "  lines {} = blank {} + skipped {} + rejected {} + rows {}",
            thousands(c.lines),
            thousands(c.blank),
            thousands(c.skipped_total()),
            thousands(c.rejected_total()),
            thousands(c.rows_written)
        );
        if let Some(a) = &self.accounts {
            let _ = writeln!(
                s,
                "  accounts: {} groups ({} of {} files {})",
                thousands(a.groups),
                a.files_written,
                a.buckets,
                if a.rebuilt { "rebuilt" } else { "merged" }
            );
        }
        if c.skipped_total() > 0 {
            let _ = writeln!(s, "  skipped: {}", listing(&c.skipped));
        }
        if c.rejected_total() > 0 {
            let rejected: Vec<String> = Reason::ALL
                .iter()
                .filter_map(|r| {
                    c.rejected
                        .get(r.as_str())
                        .filter(|n| **n > 0)
                        .map(|n| format!("{r} {}", thousands(*n)))
                })
                .collect();
            let _ = writeln!(s, "  rejected: {}", rejected.join(", "));
            let _ = writeln!(
                s,
                "  reject ratio {:.4} (max {}){}",
                self.reject_ratio,
                self.max_reject_ratio,
                self.rejects_file
                    .as_deref()
                    .map(|p| format!("; rejects in {p}"))
                    .unwrap_or_default()
            );
        }
        if c.shadowed_traits > 0 || c.invalid_times > 0 {
            let _ = writeln!(
                s,
                "  shadowed traits {}, invalid times {}",
                thousands(c.shadowed_traits),
                thousands(c.invalid_times)
            );
        }
        s
    }
}

/// When to draw a progress bar (`--progress`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ProgressWhen {
    /// Only when stderr is a terminal (never in cron logs).
    Auto,
    Always,
    Never,
}

/// Progress of input bytes read, on stderr: a bar on a terminal; with `--progress always` and no terminal
/// (a log file), a plain line every 10 seconds instead.
pub struct Progress {
    bar: Option<indicatif::ProgressBar>,
    lines: Option<LineProgress>,
}

const LINE_EVERY: std::time::Duration = std::time::Duration::from_secs(10);

struct LineProgress {
    total: Option<u64>,
    last: std::cell::Cell<std::time::Instant>,
}

impl Progress {
    pub fn new(when: ProgressWhen, quiet: bool, total_bytes: Option<u64>) -> Self {
        let terminal = std::io::stderr().is_terminal();
        let none = Progress {
            bar: None,
            lines: None,
        };
        match when {
            ProgressWhen::Never => none,
            ProgressWhen::Auto if quiet || !terminal => none,
            ProgressWhen::Always if !terminal => Progress {
                bar: None,
                lines: Some(LineProgress {
                    total: total_bytes,
                    // Due at once: the first report comes with the first chunk.
                    last: std::cell::Cell::new(
                        std::time::Instant::now()
                            .checked_sub(LINE_EVERY)
                            .unwrap_or_else(std::time::Instant::now),
                    ),
                }),
            },
            ProgressWhen::Auto | ProgressWhen::Always => {
                let bar = indicatif::ProgressBar::with_draw_target(
                    total_bytes,
                    indicatif::ProgressDrawTarget::stderr(),
                );
                if let Ok(style) = indicatif::ProgressStyle::with_template(
                    "{spinner} {binary_bytes}/{binary_total_bytes} {wide_bar} {binary_bytes_per_sec} eta {eta}",
                ) {
                    bar.set_style(style);
                }
                Progress {
                    bar: Some(bar),
                    lines: None,
                }
            }
        }
    }

    /// Reports `bytes` of input read so far.
    pub fn set(&self, bytes: u64) {
        if let Some(b) = &self.bar {
            b.set_position(bytes);
        }
        if let Some(l) = &self.lines
            && l.last.get().elapsed() >= LINE_EVERY
        {
            l.last.set(std::time::Instant::now());
            match l.total {
                Some(t) if t > 0 => eprintln!(
                    "group-loader: read {} of {} bytes ({:.0}%)",
                    thousands(bytes),
                    thousands(t),
                    bytes as f64 * 100.0 / t as f64
                ),
                _ => eprintln!("group-loader: read {} bytes", thousands(bytes)),
            }
        }
    }

    pub fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counting_rule_and_ratio() {
        let mut c = Counts {
            lines: 10,
            blank: 1,
            ..Counts::default()
        };
        c.skip("track");
        c.skip("track");
        c.reject(Reason::InvalidJson);
        c.reject(Reason::DuplicateMessageId);
        c.rows_written = 5;
        assert!(c.adds_up());
        assert_eq!(c.considered(), 7);
        assert_eq!(c.rejected_for_ratio(), 1);
        assert!((c.reject_ratio() - 1.0 / 7.0).abs() < 1e-12);
        c.rows_written = 4;
        assert!(!c.adds_up());
        assert_eq!(Counts::default().reject_ratio(), 0.0);
        // Every reason is listed, so monitoring can rely on the keys.
        assert_eq!(Counts::default().rejected.len(), Reason::ALL.len());
    }

    #[test]
    fn skipped_types_are_capped() {
        let mut c = Counts::default();
        for i in 0..MAX_SKIPPED_TYPES + 5 {
            c.skip(&format!("t{i}"));
        }
        assert_eq!(c.skipped.len(), MAX_SKIPPED_TYPES + 1);
        assert_eq!(c.skipped["(other)"], 5);
        assert_eq!(c.skipped_total(), (MAX_SKIPPED_TYPES + 5) as u64);
    }

    #[test]
    fn thousands_separator() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1234567), "1,234,567");
    }
}
