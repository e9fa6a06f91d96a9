//! The progress bar on stderr: what a run is doing, bytes read, rows and rejects so far.
//!
//! Why this module exists: an ad hoc run over a month of exports takes minutes, and a user at a terminal wants to
//! see it move; a cron job must not get escape codes in its log. The bar is drawn only where `--progress` says
//! (by default when stderr is a terminal), and everything the pipeline reports to it is cheap to call.

use std::io::IsTerminal;

use super::{human_bytes, thousands};
use crate::options::ProgressWhen;

/// What a run is doing, for the progress display.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// `--mode overwrite`'s first pass: which partitions the run's rows fall in.
    FirstPass,
    Reading,
    /// Encoding the last row groups and closing files.
    Writing,
    /// Merging the run into the `accounts` table.
    Accounts,
    Publishing,
}

impl Phase {
    pub fn label(self) -> &'static str {
        match self {
            Phase::FirstPass => "first pass (partitions to replace)",
            Phase::Reading => "reading",
            Phase::Writing => "writing files",
            Phase::Accounts => "accounts",
            Phase::Publishing => "publishing",
        }
    }
}

/// Progress on stderr. On a terminal, a bar of input bytes read of the bytes known (a spinner with the bytes
/// read where the total is unknown, as on stdin), the rows and rejects so far, then a spinner naming the phase
/// after reading, so the screen is never silent. With `--progress always` and no terminal (a log file), a plain
/// line every 10 seconds and at each phase instead.
pub struct Progress {
    bar: Option<indicatif::ProgressBar>,
    lines: Option<LineProgress>,
    total: Option<u64>,
    /// Once reading is over: what was read and how long it took, said by every later phase as it was then.
    read: std::sync::Mutex<Option<String>>,
}

const LINE_EVERY: std::time::Duration = std::time::Duration::from_secs(10);
const TICK: std::time::Duration = std::time::Duration::from_millis(120);

struct LineProgress {
    last: std::cell::Cell<std::time::Instant>,
}

/// The rows and rejects so far, as the bar shows them.
fn tally(rows: u64, rejected: u64) -> String {
    format!("{} rows, {} rejected", thousands(rows), thousands(rejected))
}

impl Progress {
    pub fn new(when: ProgressWhen, quiet: bool, total_bytes: Option<u64>) -> Self {
        let terminal = std::io::stderr().is_terminal();
        match when {
            ProgressWhen::Never => Self::none(),
            ProgressWhen::Auto if quiet || !terminal => Self::none(),
            ProgressWhen::Always if !terminal => Progress {
                bar: None,
                lines: Some(LineProgress {
                    // Due at once: the first report comes with the first chunk.
                    last: std::cell::Cell::new(
                        std::time::Instant::now()
                            .checked_sub(LINE_EVERY)
                            .unwrap_or_else(std::time::Instant::now),
                    ),
                }),
                total: total_bytes,
                read: Default::default(),
            },
            ProgressWhen::Auto | ProgressWhen::Always => {
                Self::on(indicatif::ProgressDrawTarget::stderr(), total_bytes)
            }
        }
    }

    /// No display at all.
    pub fn none() -> Self {
        Progress {
            bar: None,
            lines: None,
            total: None,
            read: Default::default(),
        }
    }

    /// A bar drawn on `target` (stderr, or an in-memory terminal in tests).
    pub fn on(target: indicatif::ProgressDrawTarget, total_bytes: Option<u64>) -> Self {
        let bar = indicatif::ProgressBar::with_draw_target(total_bytes, target);
        // Decimal units (MB), as the summary says them.
        let template = match total_bytes {
            Some(_) => {
                "{spinner} {prefix}: {decimal_bytes}/{decimal_total_bytes} [{wide_bar}] {decimal_bytes_per_sec}, eta {eta}, {msg}"
            }
            None => "{spinner} {prefix}: {decimal_bytes} ({decimal_bytes_per_sec}), {msg}",
        };
        if let Ok(style) = indicatif::ProgressStyle::with_template(template) {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.set_prefix(Phase::Reading.label());
        bar.set_message(tally(0, 0));
        bar.enable_steady_tick(TICK);
        Progress {
            bar: Some(bar),
            lines: None,
            total: total_bytes,
            read: Default::default(),
        }
    }

    /// Reports `bytes` of input read so far, and the rows and rejected events so far.
    pub fn read(&self, bytes: u64, rows: u64, rejected: u64) {
        if let Some(b) = &self.bar {
            b.set_position(bytes);
            b.set_message(tally(rows, rejected));
        }
        if let Some(l) = &self.lines
            && l.last.get().elapsed() >= LINE_EVERY
        {
            l.last.set(std::time::Instant::now());
            let read = match self.total {
                Some(t) if t > 0 => format!(
                    "{} of {} bytes ({:.0}%)",
                    thousands(bytes),
                    thousands(t),
                    bytes as f64 * 100.0 / t as f64
                ),
                _ => format!("{} bytes", thousands(bytes)),
            };
            eprintln!("group-loader: reading: {read}, {}", tally(rows, rejected));
        }
    }

    /// A reading phase: the bar of bytes read, named `phase`, from zero.
    pub fn reading(&self, phase: Phase) {
        if let Some(b) = &self.bar {
            b.set_prefix(phase.label());
            b.reset();
        }
        if self.lines.is_some() {
            eprintln!("group-loader: {}", phase.label());
        }
    }

    /// Reading is over: from now on the display names `phase` (with a spinner, as its length is unknown).
    pub fn phase(&self, phase: Phase, rows: u64, rejected: u64) {
        if let Some(b) = &self.bar {
            let mut read = self.read.lock().unwrap_or_else(|e| e.into_inner());
            let read = read.get_or_insert_with(|| {
                // The time reading took, fixed now: the phases after it do not add to it.
                format!(
                    "input {} read in {:.1}s",
                    human_bytes(b.position()),
                    b.elapsed().as_secs_f64()
                )
            });
            if let Ok(style) = indicatif::ProgressStyle::with_template("{spinner} {prefix}: {msg}")
            {
                b.set_style(style);
            }
            b.set_prefix(phase.label());
            b.set_message(format!("{} ({read})", tally(rows, rejected)));
        }
        if self.lines.is_some() {
            eprintln!("group-loader: {}: {}", phase.label(), tally(rows, rejected));
        }
    }

    /// Forces a draw now (the bar otherwise redraws on its own tick).
    pub fn draw(&self) {
        if let Some(b) = &self.bar {
            b.force_draw();
        }
    }

    pub fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}
