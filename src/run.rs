//! Applying parsed lines in input order: counts, dedupe, rejects, rows into the writer.
//!
//! Why this module exists: lines are parsed in parallel, but everything a run decides about them — which of
//! two events with one messageId is kept, the order of rows in a partition, the order of the rejects file, the
//! counts of the report — must follow input order, whatever the thread count. This is the one place that walks
//! the outcomes in that order, one line (or one event of a batch) at a time.

use std::collections::BTreeSet;

use rayon::prelude::*;

use crate::dedupe::{EarlierIds, SeenIds};
use crate::error::{Error, Result};
use crate::layout::PartitionMode;
use crate::lines::{Chunk, Line};
use crate::mapping::Row;
use crate::parse::{self, Outcome, Verdict};
use crate::reject::{Reason, Reject};
use crate::rejects::RejectsWriter;
use crate::report::{Counts, NotNdjson};
use crate::writer::{GroupsWriter, Origin};

self_cell::self_cell!(
    /// A chunk and the outcomes of its lines, which borrow from it.
    pub struct Parsed {
        owner: Chunk,
        #[covariant]
        dependent: Outcomes,
    }
);

type Outcomes<'a> = Vec<Outcome<'a>>;

/// Classifies every line of a chunk, in parallel on the pool, applying the privacy rules to its rows (suppressed
/// ids, pseudonymised columns). With `earlier`, rows whose messageId an earlier
/// run loaded within the dedupe window become `duplicate_message_id` rejects here, in parallel too (first
/// loading the ids of the partitions the chunk's rows reach, where that was not done yet).
pub fn parse_chunk(
    chunk: Chunk,
    max_line_bytes: usize,
    pool: &rayon::ThreadPool,
    earlier: Option<&mut EarlierIds>,
    mode: PartitionMode,
    privacy: Option<&crate::pseudonymise::AtLoad>,
) -> Result<Parsed> {
    let limit = max_line_bytes as u64;
    let privacy = privacy.filter(|p| !p.is_noop());
    Parsed::try_new(chunk, |chunk| {
        pool.install(|| {
            let mut outcomes: Vec<Outcome<'_>> = chunk
                .lines
                .par_iter()
                .map(|line| parse::classify(chunk.bytes(line), line.too_long.map(|n| (n, limit))))
                .collect();
            // A pass of its own, in place: a row moved once more per line costs the default run a copy of it.
            if let Some(p) = privacy {
                outcomes
                    .par_iter_mut()
                    .for_each(|o| for_each_verdict(o, |v| p.apply(v)));
            }
            if let Some(earlier) = earlier.filter(|e| !e.is_empty()) {
                let buckets: BTreeSet<i64> = outcomes
                    .iter()
                    .flat_map(rows)
                    .map(|r| mode.bucket(r.partition_time()))
                    .collect();
                earlier.ensure(buckets)?;
                let earlier = &*earlier;
                outcomes
                    .par_iter_mut()
                    .for_each(|o| for_each_verdict(o, |v| mark_earlier(v, earlier, mode)));
            }
            Ok::<_, Error>(outcomes)
        })
    })
}

/// Calls `f` with the verdict of each event of one line's outcome.
fn for_each_verdict<'a>(outcome: &mut Outcome<'a>, mut f: impl FnMut(&mut Verdict<'a>)) {
    match outcome {
        Outcome::Event(v) => f(v),
        Outcome::Batch(Ok(events)) => events.iter_mut().for_each(|e| f(&mut e.verdict)),
        Outcome::Blank | Outcome::Batch(Err(_)) => {}
    }
}

/// The rows of one line's outcome.
fn rows<'o, 'a>(outcome: &'o Outcome<'a>) -> Box<dyn Iterator<Item = &'o Row<'a>> + 'o> {
    let row = |v: &'o Verdict<'a>| match v {
        Verdict::Row(r) => Some(r),
        _ => None,
    };
    match outcome {
        Outcome::Event(v) => Box::new(row(v).into_iter()),
        Outcome::Batch(Ok(events)) => Box::new(events.iter().filter_map(move |e| row(&e.verdict))),
        Outcome::Blank | Outcome::Batch(Err(_)) => Box::new(std::iter::empty()),
    }
}

/// Turns a row whose messageId an earlier run loaded within the window into its duplicate reject.
fn mark_earlier(verdict: &mut Verdict<'_>, earlier: &EarlierIds, mode: PartitionMode) {
    let Verdict::Row(row) = verdict else {
        return;
    };
    let Some(id) = row.dedupe_key() else {
        return;
    };
    if let Some(b) = earlier.find(id, mode.bucket(row.partition_time())) {
        let at = match mode.path_of_bucket(b) {
            p if p.is_empty() => String::new(),
            p => format!(" in {p}"),
        };
        *verdict = Verdict::Rejected(Reject::duplicate(
            id,
            format!("already loaded{at} by an earlier run"),
        ));
    }
}

/// Where parsed chunks go, in input order: the run itself, or what the overwrite pre-pass collects.
pub trait Sink {
    /// Applies one parsed chunk of input number `input` (named `file`). Returns the chunk's buffer, for reuse.
    fn apply(
        &mut self,
        input: usize,
        file: &str,
        parsed: Option<Parsed>,
    ) -> Result<Option<Vec<u8>>>;
    /// Rows and rejected events so far, for the progress display.
    fn tally(&self) -> (u64, u64);
    /// Lines and events so far, for the per-input report.
    fn seen(&self) -> (u64, u64);
}

/// The partitions the run's rows fall in, before any dedupe: what `--mode overwrite` may replace, collected by
/// a first pass so that the dedupe window never counts rows that the run is about to remove.
pub struct PartitionsSeen {
    mode: PartitionMode,
    pub buckets: BTreeSet<i64>,
    lines: u64,
}

impl PartitionsSeen {
    pub fn new(mode: PartitionMode) -> Self {
        PartitionsSeen {
            mode,
            buckets: BTreeSet::new(),
            lines: 0,
        }
    }
}

impl Sink for PartitionsSeen {
    fn apply(
        &mut self,
        _input: usize,
        _file: &str,
        parsed: Option<Parsed>,
    ) -> Result<Option<Vec<u8>>> {
        let Some(p) = parsed else {
            return Ok(None);
        };
        let mode = self.mode;
        p.with_dependent(|chunk, outcomes| {
            self.lines += chunk.lines.len() as u64 + chunk.empty;
            for o in outcomes {
                self.buckets
                    .extend(rows(o).map(|r| mode.bucket(r.partition_time())));
            }
        });
        Ok(Some(p.into_owner().data))
    }

    fn tally(&self) -> (u64, u64) {
        (0, 0)
    }

    fn seen(&self) -> (u64, u64) {
        (self.lines, 0)
    }
}

/// The state a run accumulates while it applies outcomes in input order.
pub struct Run {
    pub counts: Counts,
    pub seen_ids: Option<SeenIds>,
    pub rejects: RejectsWriter,
    pub writer: GroupsWriter,
    /// Inputs that look like a JSON array or pretty-printed JSON rather than NDJSON.
    pub not_ndjson: Vec<NotNdjson>,
    /// The input being applied: whether its first non-blank line was seen, and what it looks like.
    file: Option<FileState>,
    /// Its number among the run's inputs.
    input: u32,
}

struct FileState {
    name: String,
    first_seen: bool,
    shape: Option<Shape>,
}

/// What a file that is not NDJSON looks like, from its first non-blank line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// Starts with `[`: a JSON array (on one line or pretty-printed).
    Array,
    /// Starts with a line holding only `{`: pretty-printed JSON object(s).
    Pretty,
    /// Starts with a line of comma-separated fields and no JSON punctuation: CSV (a header row, usually).
    Csv,
}

impl Shape {
    /// The hint added to the rejects of such a file (and, once, to the exit-3 message).
    pub fn hint(self, file: &str) -> String {
        let (what, filter) = match self {
            Shape::Array => ("a JSON array", "'.[]'"),
            Shape::Pretty => ("pretty-printed JSON", "."),
            Shape::Csv => {
                return format!(
                    "{file} looks like CSV, not NDJSON (one JSON object per line); convert it, e.g. with DuckDB: \
                     duckdb -c \"COPY (FROM read_csv('{file}')) TO 'converted.ndjson' (FORMAT json)\""
                );
            }
        };
        format!(
            "{file} looks like {what}, not NDJSON (one JSON object per line); convert it with: jq -c {filter} {} > converted.ndjson",
            shell_quote(file)
        )
    }

    pub fn name(self) -> &'static str {
        match self {
            Shape::Array => "json_array",
            Shape::Pretty => "pretty_printed_json",
            Shape::Csv => "csv",
        }
    }

    /// The shape of a file whose first non-blank line is `line` and was rejected with `reason`.
    fn of_first_line(line: &[u8], reason: Reason) -> Option<Shape> {
        if !matches!(reason, Reason::InvalidJson | Reason::NotAnObject) {
            return None;
        }
        let trimmed = line.trim_ascii();
        let json_punctuation = trimmed.iter().any(|b| b"{}[]".contains(b));
        if trimmed.starts_with(b"[") {
            Some(Shape::Array)
        } else if trimmed == b"{" {
            Some(Shape::Pretty)
        } else if reason == Reason::InvalidJson && !json_punctuation && trimmed.contains(&b',') {
            Some(Shape::Csv)
        } else {
            None
        }
    }
}

/// `s` as one shell word (quoted only when it needs to be).
fn shell_quote(s: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || "_./-+:@%".contains(c);
    if !s.is_empty() && s.chars().all(plain) {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// The reject in `r`, leaving an empty message behind (no allocation).
fn take_reject(r: &mut Reject) -> Reject {
    let empty = Reject::new(r.reason, String::new());
    std::mem::replace(r, empty)
}

/// Where an event sits: its input, line, and its index in a batch envelope.
struct At<'l> {
    file: &'l str,
    line: &'l Line,
    index: Option<usize>,
}

impl Run {
    pub fn new(seen_ids: Option<SeenIds>, rejects: RejectsWriter, writer: GroupsWriter) -> Self {
        Run {
            counts: Counts::default(),
            seen_ids,
            rejects,
            writer,
            not_ndjson: Vec::new(),
            file: None,
            input: 0,
        }
    }
}

impl Sink for Run {
    fn tally(&self) -> (u64, u64) {
        (self.counts.rows_written, self.counts.rejected_total())
    }

    fn seen(&self) -> (u64, u64) {
        (self.counts.lines, self.counts.events)
    }

    /// Applies one parsed chunk of input `file`, in input order. Returns the chunk's buffer, for reuse.
    fn apply(
        &mut self,
        input: usize,
        file: &str,
        parsed: Option<Parsed>,
    ) -> Result<Option<Vec<u8>>> {
        let Some(mut p) = parsed else {
            return Ok(None);
        };
        self.input = input as u32;
        if self.file.as_ref().is_none_or(|f| f.name != file) {
            self.file = Some(FileState {
                name: file.to_string(),
                first_seen: false,
                shape: None,
            });
        }
        p.with_dependent_mut(|chunk, outcomes| self.apply_outcomes(file, chunk, outcomes))?;
        Ok(Some(p.into_owner().data))
    }
}

impl Run {
    /// Applies a chunk's outcomes in place: an outcome holds a whole row (32 cells), and moving each out of
    /// the chunk's vector cost a copy of it per line.
    fn apply_outcomes(
        &mut self,
        file: &str,
        chunk: &Chunk,
        outcomes: &mut [Outcome<'_>],
    ) -> Result<()> {
        // Empty lines are only counted by the reader (they are blank lines: nothing to apply).
        self.counts.lines += chunk.empty;
        self.counts.blank += chunk.empty;
        for (line, outcome) in chunk.lines.iter().zip(outcomes) {
            self.counts.lines += 1;
            let bytes = chunk.bytes(line);
            match outcome {
                Outcome::Blank => self.counts.blank += 1,
                Outcome::Event(verdict) => {
                    let rejected = match verdict {
                        Verdict::Rejected(r) => Some(r.reason),
                        _ => None,
                    };
                    self.note_first_line(bytes, rejected);
                    let at = At {
                        file,
                        line,
                        index: None,
                    };
                    self.event(&at, bytes, verdict)?;
                }
                Outcome::Batch(Ok(events)) => {
                    self.note_first_line(bytes, None);
                    self.counts.batches.lines += 1;
                    self.counts.batches.events += events.len() as u64;
                    for (i, e) in events.iter_mut().enumerate() {
                        let at = At {
                            file,
                            line,
                            index: Some(i),
                        };
                        self.event(&at, e.raw.as_bytes(), &mut e.verdict)?;
                    }
                }
                Outcome::Batch(Err(reject)) => {
                    // An envelope that cannot be cut into events is one event, rejected with its line.
                    self.note_first_line(bytes, None);
                    self.counts.batches.lines += 1;
                    self.counts.batches.events += 1;
                    let at = At {
                        file,
                        line,
                        index: None,
                    };
                    let reject = take_reject(reject);
                    self.event(&at, bytes, &mut Verdict::Rejected(reject))?;
                }
            }
        }
        self.writer.flush_due()
    }

    /// Looks at the first non-blank line of a file (`rejected`: its reject reason, if it was rejected as one
    /// event): does the file look like NDJSON?
    fn note_first_line(&mut self, bytes: &[u8], rejected: Option<Reason>) {
        let Some(state) = self.file.as_mut() else {
            return;
        };
        if std::mem::replace(&mut state.first_seen, true) {
            return;
        }
        if let Some(reason) = rejected {
            state.shape = Shape::of_first_line(bytes, reason);
            if let Some(shape) = state.shape {
                self.not_ndjson.push(NotNdjson {
                    path: state.name.clone(),
                    looks_like: shape.name(),
                    hint: shape.hint(&state.name),
                });
            }
        }
    }

    /// Applies one event: a line, or an element of a batch (`raw` is its text). A reject's text is taken out
    /// of `verdict`; a row is only read.
    fn event(&mut self, at: &At<'_>, raw: &[u8], verdict: &mut Verdict<'_>) -> Result<()> {
        self.counts.events += 1;
        let mut reject = match verdict {
            Verdict::Skipped(t) => {
                self.counts.skip(t);
                return Ok(());
            }
            Verdict::Suppressed => {
                self.counts.suppressed += 1;
                return Ok(());
            }
            Verdict::Rejected(r) => {
                // Duplicates of earlier runs were found while parsing (see `parse_chunk`).
                if r.reason == Reason::DuplicateMessageId {
                    self.counts.duplicates.earlier_runs += 1;
                }
                take_reject(r)
            }
            Verdict::Row(row) => {
                let duplicate = match (&mut self.seen_ids, row.dedupe_key()) {
                    (Some(seen), Some(id)) => !seen.insert(id),
                    _ => false,
                };
                if !duplicate {
                    self.counts.rows_written += 1;
                    self.counts.shadowed_traits += u64::from(row.shadowed_traits);
                    self.counts.invalid_times += u64::from(row.invalid_times);
                    let origin = Origin {
                        input: self.input,
                        line: at.line.number,
                        offset: at.line.offset,
                        index: at.index.map_or(u32::MAX, |i| i as u32),
                    };
                    self.writer.append(row, origin);
                    return Ok(());
                }
                self.counts.duplicates.this_run += 1;
                Reject::duplicate(
                    row.dedupe_key().unwrap_or(""),
                    "already loaded by this run".into(),
                )
            }
        };
        if let Some(shape) = self.file.as_ref().and_then(|f| f.shape)
            && matches!(reject.reason, Reason::InvalidJson | Reason::NotAnObject)
        {
            reject.message = format!("{}; {}", reject.message, shape.hint(at.file));
        }
        self.counts.reject(reject.reason);
        self.rejects.write(at.file, at.line, at.index, raw, &reject)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_of_files_that_are_not_ndjson() {
        let shape = |line: &str, reason| Shape::of_first_line(line.as_bytes(), reason);
        assert_eq!(shape("[", Reason::InvalidJson), Some(Shape::Array));
        assert_eq!(
            shape(" [{\"a\":1},", Reason::InvalidJson),
            Some(Shape::Array)
        );
        assert_eq!(
            shape("[{\"a\":1}]", Reason::NotAnObject),
            Some(Shape::Array)
        );
        assert_eq!(shape("{", Reason::InvalidJson), Some(Shape::Pretty));
        assert_eq!(shape("{\"a\":", Reason::InvalidJson), None);
        assert_eq!(shape("[", Reason::MissingType), None);
        assert_eq!(
            shape("messageId,groupId,userId,timestamp", Reason::InvalidJson),
            Some(Shape::Csv)
        );
        assert_eq!(
            shape("m-1,g-1,u-1,2024-01-01T00:00:00Z", Reason::InvalidJson),
            Some(Shape::Csv)
        );
        // JSON gone wrong is not CSV.
        assert_eq!(shape(r#"{"a":1,"b":"#, Reason::InvalidJson), None);
        assert_eq!(shape("just words", Reason::InvalidJson), None);
        assert_eq!(
            Shape::Pretty.hint("my export.json"),
            "my export.json looks like pretty-printed JSON, not NDJSON (one JSON object per line); \
             convert it with: jq -c . 'my export.json' > converted.ndjson"
        );
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
    }
}
