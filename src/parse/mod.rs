//! Line parsing: one input line becomes blank, skipped, rejected, or a row.
//!
//! Why this module exists: the reject table has a precedence ("where several apply, the first in this
//! order"), and getting it right needs the checks in one function, in that order. The JSON is parsed once
//! into an ordered list of top-level `(key, raw value)` pairs that borrow from the line: duplicate keys stay
//! visible, key order is kept for the extras columns, and every value keeps its exact text. The mapping of a
//! valid Group call to a row lives in [`crate::mapping`].
//!
//! A line may also be a batch envelope (`{"batch": [...], "context": {...}, "sentAt": ...}`, what Segment's
//! libraries send to `/v1/batch`): [`batch`] cuts it into events, each classified here like a line.

use std::borrow::Cow;

pub mod batch;

use serde_json::value::RawValue;

use crate::json::{Entries, json_quote};
use crate::mapping::{self, Row};
use crate::reject::{Reason, Reject};
use crate::values::{self, JsonKind};

/// What one line became.
// Rows are not boxed: outcomes live in one Vec per chunk, and a box per row would cost an allocation per row.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum Outcome<'a> {
    /// Empty or only white space: not an event.
    Blank,
    /// A line that is one event.
    Event(Verdict<'a>),
    /// A batch envelope: one verdict per element of its `batch` array, in order; or, for an envelope that
    /// cannot be cut into events (`invalid_batch`), the reject of the line as one event.
    Batch(Result<Vec<BatchEvent<'a>>, Reject>),
}

/// What one event became.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum Verdict<'a> {
    /// A JSON object of another event type (`track`, `identify`, ...): skipped, counted per type as written.
    Skipped(Cow<'a, str>),
    Rejected(Reject),
    Row(Row<'a>),
    /// A row of an id a deletion request suppressed: counted, never loaded or kept.
    Suppressed,
}

impl Outcome<'_> {
    fn rejected(reason: Reason, message: impl Into<String>) -> Self {
        Outcome::Event(Verdict::Rejected(Reject::new(reason, message)))
    }
}

/// One element of a batch envelope.
#[derive(Debug)]
pub struct BatchEvent<'a> {
    /// The element's text as written in the line (what the rejects file records for it).
    pub raw: &'a str,
    pub verdict: Verdict<'a>,
}

/// True when the line may hold a `\uD800`-`\uDFFF` escape (a surrogate), which needs a full decode to tell
/// a valid pair from a lone surrogate.
fn may_hold_surrogate_escape(line: &str) -> bool {
    let b = line.as_bytes();
    memchr::memmem::find_iter(b, b"\\u").any(|i| {
        matches!(b.get(i + 2), Some(b'd' | b'D'))
            && matches!(b.get(i + 3), Some(b'8'..=b'9' | b'a'..=b'f' | b'A'..=b'F'))
    })
}

fn invalid_json(e: &serde_json::Error) -> Reject {
    Reject::new(Reason::InvalidJson, e.to_string())
}

/// Classifies one line (without its `\n`, `\r` or BOM). `too_long` carries the full length of a line that
/// went over the line limit (then `line` is only its first bytes).
pub fn classify(line: &[u8], too_long: Option<(u64, u64)>) -> Outcome<'_> {
    if let Some((len, limit)) = too_long {
        return Outcome::rejected(
            Reason::LineTooLong,
            format!("line is {len} bytes, over the line limit of {limit} bytes"),
        );
    }
    if line.iter().all(u8::is_ascii_whitespace) {
        return Outcome::Blank;
    }
    // SIMD validation on the hot path; the standard library's only to locate an error.
    let text = match simdutf8::basic::from_utf8(line).map_err(|_| std::str::from_utf8(line)) {
        Ok(t) => t,
        Err(Ok(t)) => t,
        Err(Err(e)) => {
            return Outcome::rejected(
                Reason::InvalidUtf8,
                format!("invalid UTF-8 at byte {} of the line", e.valid_up_to()),
            );
        }
    };
    // JSON text that is valid UTF-8 can still escape a lone surrogate ("\ud800"), which no string type can
    // hold. Such a line is not interoperable JSON (RFC 8259 section 8.2, I-JSON): it is rejected as invalid_json.
    if may_hold_surrogate_escape(text)
        && let Err(e) = serde_json::from_str::<serde_json::Value>(text)
    {
        return Outcome::Event(Verdict::Rejected(invalid_json(&e)));
    }
    let first = text
        .trim_start_matches([' ', '\t', '\n', '\r'])
        .as_bytes()
        .first();
    if first != Some(&b'{') {
        return Outcome::Event(Verdict::Rejected(
            match serde_json::from_str::<&RawValue>(text) {
                Ok(_) => Reject::new(
                    Reason::NotAnObject,
                    "the line is valid JSON but not an object",
                ),
                Err(e) => invalid_json(&e),
            },
        ));
    }
    let entries = match Entries::parse(text) {
        Ok(e) => e,
        Err(e) => return Outcome::Event(Verdict::Rejected(invalid_json(&e))),
    };
    if batch::is_envelope(&entries) {
        return batch::split(&entries);
    }
    Outcome::Event(classify_event(&entries))
}

/// The checks from `missing_type` on, for one event: a line, or an element of a batch envelope.
pub fn classify_event<'a>(entries: &Entries<'a>) -> Verdict<'a> {
    let event_type = match entries.get("type").map(|v| (v, values::kind(v))) {
        Some((v, JsonKind::String)) => values::decode_str(v),
        _ => None,
    };
    let Some(event_type) = event_type else {
        return Verdict::Rejected(Reject::new(
            Reason::MissingType,
            "no \"type\", or \"type\" is not a string",
        ));
    };
    // Case-insensitively: RudderStack writes "GROUP", Segment "group".
    if !event_type.eq_ignore_ascii_case("group") {
        return Verdict::Skipped(event_type);
    }
    if let Some(k) = entries.duplicate_key() {
        return Verdict::Rejected(Reject::new(
            Reason::DuplicateKey,
            format!("top-level key {} appears more than once", json_quote(k)),
        ));
    }
    match mapping::map_group(entries) {
        Ok(row) => Verdict::Row(row),
        Err(reject) => Verdict::Rejected(reject),
    }
}

#[cfg(test)]
mod tests;
