//! `--metrics PATH`: what a command did, as a Prometheus text-exposition file for node_exporter's textfile
//! collector (the convention for cron jobs), written atomically.
//!
//! Why this module exists: with `--quiet` a good night leaves the cron log empty, so monitoring needs figures it
//! can scrape and alert on (no success for a day, a reject spike, a file count growing). Each command fills a
//! [`Metrics`] from the report it owns; this module alone knows the format: names, `# HELP`/`# TYPE` lines,
//! label escaping, and the carried-over time of the last success (a failed night must not erase it, or an
//! alert on "no success for 36 hours" could never fire).

use std::fmt::Write as _;
use std::path::Path;

use crate::error::{Error, Result};

/// Every metric's name starts with this.
const PREFIX: &str = "group_loader_";
const LAST_SUCCESS: &str = "last_success_timestamp_seconds";

/// One metric: its help text and its samples (labels beyond `dataset` and `command`, value).
struct Family {
    name: String,
    help: String,
    samples: Vec<(Vec<(String, String)>, f64)>,
}

/// The figures of one command on one dataset.
pub struct Metrics {
    command: &'static str,
    dataset: String,
    families: Vec<Family>,
}

impl Metrics {
    pub fn new(command: &'static str, dataset: &str) -> Self {
        Metrics {
            command,
            dataset: dataset.to_string(),
            families: Vec::new(),
        }
    }

    /// A gauge without labels of its own (`name` without the prefix).
    pub fn gauge(&mut self, name: &str, help: &str, value: f64) {
        self.labelled(name, help, &[], value);
    }

    /// A sample of the gauge `name` with labels (the family is created on its first sample).
    pub fn labelled(&mut self, name: &str, help: &str, labels: &[(&str, &str)], value: f64) {
        let full = format!("{PREFIX}{name}");
        let labels = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        match self.families.iter_mut().find(|f| f.name == full) {
            Some(f) => f.samples.push((labels, value)),
            None => self.families.push(Family {
                name: full,
                help: help.to_string(),
                samples: vec![(labels, value)],
            }),
        }
    }

    /// Declares a family that may have no sample (so a dashboard sees it at zero rather than missing).
    pub fn family(&mut self, name: &str, help: &str) {
        let full = format!("{PREFIX}{name}");
        if !self.families.iter().any(|f| f.name == full) {
            self.families.push(Family {
                name: full,
                help: help.to_string(),
                samples: Vec::new(),
            });
        }
    }

    /// The exposition text, with the command's exit code, when it ended (`now`, seconds since the epoch), and
    /// when it last succeeded (`last_success`).
    pub fn render(&self, exit_code: u8, now: f64, last_success: Option<f64>) -> String {
        let mut fixed = Metrics::new(self.command, &self.dataset);
        fixed.gauge(
            "exit_code",
            "Exit code of the command's last run (0 success).",
            f64::from(exit_code),
        );
        fixed.gauge(
            "last_run_timestamp_seconds",
            "When the command's last run ended (Unix time).",
            now,
        );
        if let Some(t) = last_success {
            fixed.gauge(
                LAST_SUCCESS,
                "When the command last ended with exit code 0 (Unix time).",
                t,
            );
        }
        let mut s = String::new();
        for f in fixed.families.iter().chain(&self.families) {
            let _ = writeln!(s, "# HELP {} {}", f.name, escape_help(&f.help));
            let _ = writeln!(s, "# TYPE {} gauge", f.name);
            for (labels, value) in &f.samples {
                let mut all = vec![
                    ("dataset".to_string(), self.dataset.clone()),
                    ("command".to_string(), self.command.to_string()),
                ];
                all.extend(labels.iter().cloned());
                let labels: Vec<String> = all
                    .iter()
                    .map(|(k, v)| format!("{k}=\"{}\"", escape_label(v)))
                    .collect();
                let _ = writeln!(s, "{}{{{}}} {}", f.name, labels.join(","), number(*value));
            }
        }
        s
    }

    /// Writes the file at `path` atomically (a hidden temporary file renamed over it, so the collector never
    /// reads half of it), carrying over the last success from the file it replaces when this run failed.
    pub fn write(&self, path: &Path, exit_code: u8) -> Result<()> {
        let now = chrono::Utc::now().timestamp_millis() as f64 / 1000.0;
        let last_success = match exit_code {
            0 => Some(now),
            _ => std::fs::read_to_string(path)
                .ok()
                .and_then(|text| previous_success(&text)),
        };
        let text = self.render(exit_code, now, last_success);
        crate::atomic::write_atomic(path, text.as_bytes()).map_err(|e| match e {
            Error::Io { .. } => Error::Usage(format!(
                "--metrics {}: cannot write the metrics file ({e}); choose a writable path (for \
                 node_exporter, a .prom file in its --collector.textfile.directory)",
                path.display()
            )),
            e => e,
        })
    }
}

/// The last-success time a metrics file holds.
fn previous_success(text: &str) -> Option<f64> {
    let name = format!("{PREFIX}{LAST_SUCCESS}");
    text.lines()
        .filter(|l| l.starts_with(&name))
        .find_map(|l| l.rsplit(' ').next()?.parse().ok())
}

fn escape_label(v: &str) -> String {
    v.replace('\\', r"\\")
        .replace('"', "\\\"")
        .replace('\n', r"\n")
}

fn escape_help(v: &str) -> String {
    v.replace('\\', r"\\").replace('\n', r"\n")
}

/// A value as the format writes numbers: integers without a fraction.
fn number(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_families_with_escaped_labels() {
        let mut m = Metrics::new("load", "/data/a \"b\"\\c");
        m.gauge("rows_written", "Rows written.", 42.0);
        m.labelled(
            "rejected",
            "Rejected lines.",
            &[("reason", "invalid_json")],
            3.0,
        );
        m.labelled(
            "rejected",
            "Rejected lines.",
            &[("reason", "missing_group_id")],
            1.0,
        );
        m.family("skipped", "Skipped lines.");
        let text = m.render(0, 1_700_000_000.5, Some(1_700_000_000.5));
        let ds = r#"dataset="/data/a \"b\"\\c",command="load""#;
        assert!(
            text.contains(&format!("group_loader_rows_written{{{ds}}} 42\n")),
            "{text}"
        );
        assert!(text.contains(&format!(
            "group_loader_rejected{{{ds},reason=\"missing_group_id\"}} 1\n"
        )));
        assert_eq!(
            text.matches("# TYPE group_loader_rejected gauge").count(),
            1
        );
        assert!(text.contains("# TYPE group_loader_skipped gauge\n"));
        assert!(text.contains(&format!("group_loader_exit_code{{{ds}}} 0\n")));
        assert!(text.contains(&format!(
            "group_loader_last_success_timestamp_seconds{{{ds}}} 1700000000.5\n"
        )));
    }

    #[test]
    fn a_failed_run_keeps_the_last_success() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.prom");
        let m = Metrics::new("load", "out");
        m.write(&path, 0).unwrap();
        let first = previous_success(&std::fs::read_to_string(&path).unwrap()).unwrap();
        m.write(&path, 3).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(previous_success(&text), Some(first));
        assert!(text.contains("group_loader_exit_code{dataset=\"out\",command=\"load\"} 3\n"));
        // No success ever: no last-success sample at all.
        let other = dir.path().join("n.prom");
        m.write(&other, 1).unwrap();
        assert_eq!(
            previous_success(&std::fs::read_to_string(&other).unwrap()),
            None
        );
    }
}
