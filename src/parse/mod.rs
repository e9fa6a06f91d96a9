//! Line parsing (SPEC §2): one input line becomes blank, skipped, rejected, or a row.
//!
//! Why this module exists: the reject table has a precedence ("where several apply, the first in this
//! order"), and getting it right needs the checks in one function, in that order. The JSON is parsed once
//! into an ordered list of top-level `(key, raw value)` pairs that borrow from the line: duplicate keys stay
//! visible, key order is kept for the extras columns, and every value keeps its exact text. The mapping of a
//! valid Group call to a row lives in [`crate::mapping`].
//!
//! A line may also be a batch envelope (`{"batch": [...], "context": {...}, "sentAt": ...}`, what Segment's
//! libraries send to `/v1/batch`): [`crate::batch`] cuts it into events, each classified here like a line.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;

use crate::mapping::{self, Row};
use crate::values::{self, JsonKind};

/// Why a line was rejected (SPEC §2), in order of precedence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Reason {
    LineTooLong,
    InvalidUtf8,
    InvalidJson,
    NotAnObject,
    InvalidBatch,
    MissingType,
    DuplicateKey,
    MissingGroupId,
    InvalidGroupId,
    InvalidUserId,
    InvalidAnonymousId,
    MissingIdentity,
    MissingTime,
    DuplicateMessageId,
}

impl Reason {
    pub const ALL: [Reason; 14] = [
        Reason::LineTooLong,
        Reason::InvalidUtf8,
        Reason::InvalidJson,
        Reason::NotAnObject,
        Reason::InvalidBatch,
        Reason::MissingType,
        Reason::DuplicateKey,
        Reason::MissingGroupId,
        Reason::InvalidGroupId,
        Reason::InvalidUserId,
        Reason::InvalidAnonymousId,
        Reason::MissingIdentity,
        Reason::MissingTime,
        Reason::DuplicateMessageId,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Reason::LineTooLong => "line_too_long",
            Reason::InvalidUtf8 => "invalid_utf8",
            Reason::InvalidJson => "invalid_json",
            Reason::NotAnObject => "not_an_object",
            Reason::InvalidBatch => "invalid_batch",
            Reason::MissingType => "missing_type",
            Reason::DuplicateKey => "duplicate_key",
            Reason::MissingGroupId => "missing_group_id",
            Reason::InvalidGroupId => "invalid_group_id",
            Reason::InvalidUserId => "invalid_user_id",
            Reason::InvalidAnonymousId => "invalid_anonymous_id",
            Reason::MissingIdentity => "missing_identity",
            Reason::MissingTime => "missing_time",
            Reason::DuplicateMessageId => "duplicate_message_id",
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A rejected event: its reason and a message for people.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reject {
    pub reason: Reason,
    pub message: String,
    /// For `duplicate_message_id`: the messageId (the rejects file then records it instead of the raw line).
    pub id: Option<String>,
}

impl Reject {
    pub fn new(reason: Reason, message: impl Into<String>) -> Self {
        Reject {
            reason,
            message: message.into(),
            id: None,
        }
    }

    /// An event whose messageId is already loaded (SPEC §6.3).
    pub fn duplicate(id: &str, message: String) -> Self {
        Reject {
            reason: Reason::DuplicateMessageId,
            message,
            id: Some(id.to_string()),
        }
    }
}

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

/// The top-level (or nested) members of a JSON object, in document order, duplicates included. Keys are
/// decoded (borrowed when they have no escapes); values keep their raw JSON text.
#[derive(Debug, Default)]
pub struct Entries<'a>(pub Vec<(Cow<'a, str>, &'a str)>);

impl<'a> Entries<'a> {
    /// Parses (and validates) the text of a JSON object. The text must be a whole object (trailing white
    /// space allowed).
    pub fn parse(text: &'a str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(text)
    }

    /// The members of an object whose text was already validated (an element of a batch): the light
    /// scanner, no second validation. `None` when the text is not an object.
    pub fn scan(text: &'a str) -> Option<Self> {
        let mut out = Vec::with_capacity(16);
        for_each_member(text, |k, v| out.push((k, v))).ok()?;
        Some(Entries(out))
    }

    /// The first value under `key`, matched exactly.
    pub fn get(&self, key: &str) -> Option<&'a str> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| *v)
    }

    /// The first key that appears more than once, if any.
    pub fn duplicate_key(&self) -> Option<&str> {
        let keys = &self.0;
        if keys.len() <= 32 {
            for (i, (k, _)) in keys.iter().enumerate() {
                if keys[..i].iter().any(|(p, _)| p == k) {
                    return Some(k);
                }
            }
            None
        } else {
            let mut seen = std::collections::HashSet::with_capacity(keys.len());
            keys.iter()
                .map(|(k, _)| k.as_ref())
                .find(|k| !seen.insert(*k))
        }
    }
}

struct Key<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string key")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(v)))
            }
        }
        d.deserialize_str(KeyVisitor)
    }
}

impl<'de> Deserialize<'de> for Entries<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct EntriesVisitor;
        impl<'de> Visitor<'de> for EntriesVisitor {
            type Value = Entries<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Entries<'de>, A::Error> {
                let mut out = Vec::with_capacity(map.size_hint().unwrap_or(16));
                while let Some(Key(k)) = map.next_key()? {
                    let v: &'de RawValue = map.next_value()?;
                    out.push((k, v.get()));
                }
                Ok(Entries(out))
            }
        }
        d.deserialize_map(EntriesVisitor)
    }
}

/// Calls `f` with each member of the JSON object `text` (its key, decoded, and its value's raw text), in
/// document order, duplicates included.
///
/// `text` must be JSON that the line's parse already validated: this is a light scanner that only finds
/// where keys and values end, so the mapper walks nested objects (traits, address, context) without
/// validating them a second time. On text that is not valid JSON it returns an error (it never panics), but
/// it does not promise to notice every fault.
pub fn for_each_member<'a>(
    text: &'a str,
    mut f: impl FnMut(Cow<'a, str>, &'a str),
) -> Result<(), NotAnObject> {
    let b = text.as_bytes();
    let mut i = skip_ws(b, 0);
    if b.get(i) != Some(&b'{') {
        return Err(NotAnObject);
    }
    i = skip_ws(b, i + 1);
    if b.get(i) == Some(&b'}') {
        return Ok(());
    }
    loop {
        if b.get(i) != Some(&b'"') {
            return Err(NotAnObject);
        }
        let key_end = string_end(b, i)?;
        let key_raw = text.get(i..key_end).ok_or(NotAnObject)?;
        let key = match key_raw.get(1..key_raw.len() - 1) {
            Some(inner) if !inner.contains('\\') => Cow::Borrowed(inner),
            _ => Cow::Owned(serde_json::from_str::<String>(key_raw).map_err(|_| NotAnObject)?),
        };
        i = skip_ws(b, key_end);
        if b.get(i) != Some(&b':') {
            return Err(NotAnObject);
        }
        let start = skip_ws(b, i + 1);
        let end = value_end(b, start)?;
        f(key, text.get(start..end).ok_or(NotAnObject)?);
        i = skip_ws(b, end);
        match b.get(i) {
            Some(b',') => i = skip_ws(b, i + 1),
            Some(b'}') => return Ok(()),
            _ => return Err(NotAnObject),
        }
    }
}

/// Calls `f` with the raw text of each element of the JSON array `text`, in order. Like [`for_each_member`],
/// a light scanner for text that was already validated.
pub fn for_each_element<'a>(text: &'a str, mut f: impl FnMut(&'a str)) -> Result<(), NotAnObject> {
    let b = text.as_bytes();
    let mut i = skip_ws(b, 0);
    if b.get(i) != Some(&b'[') {
        return Err(NotAnObject);
    }
    i = skip_ws(b, i + 1);
    if b.get(i) == Some(&b']') {
        return Ok(());
    }
    loop {
        let end = value_end(b, i)?;
        f(text.get(i..end).ok_or(NotAnObject)?);
        i = skip_ws(b, end);
        match b.get(i) {
            Some(b',') => i = skip_ws(b, i + 1),
            Some(b']') => return Ok(()),
            _ => return Err(NotAnObject),
        }
    }
}

/// The text handed to [`for_each_member`] was not a JSON object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NotAnObject;

fn skip_ws(b: &[u8], mut i: usize) -> usize {
    while matches!(b.get(i), Some(b' ' | b'\t' | b'\n' | b'\r')) {
        i += 1;
    }
    i
}

/// The index after the closing quote of the string that opens at `b[i]`.
fn string_end(b: &[u8], i: usize) -> Result<usize, NotAnObject> {
    let mut j = i + 1;
    loop {
        let k =
            j + memchr::memchr2(b'"', b'\\', b.get(j..).ok_or(NotAnObject)?).ok_or(NotAnObject)?;
        if b[k] == b'"' {
            return Ok(k + 1);
        }
        j = k + 2; // skip the escaped character (a \u escape's hex digits are plain characters)
    }
}

/// The index after the end of the value that starts at `b[i]`.
fn value_end(b: &[u8], i: usize) -> Result<usize, NotAnObject> {
    match b.get(i) {
        Some(b'"') => string_end(b, i),
        Some(b'{' | b'[') => {
            let mut depth = 0usize;
            let mut j = i;
            loop {
                match b.get(j) {
                    Some(b'"') => {
                        j = string_end(b, j)?;
                        continue;
                    }
                    Some(b'{' | b'[') => depth += 1,
                    Some(b'}' | b']') => {
                        depth -= 1;
                        if depth == 0 {
                            return Ok(j + 1);
                        }
                    }
                    Some(_) => {}
                    None => return Err(NotAnObject),
                }
                j += 1;
            }
        }
        Some(_) => {
            let n = b[i..]
                .iter()
                .position(|c| matches!(c, b',' | b'}' | b']' | b' ' | b'\t' | b'\n' | b'\r'))
                .unwrap_or(b.len() - i);
            if n == 0 { Err(NotAnObject) } else { Ok(i + n) }
        }
        None => Err(NotAnObject),
    }
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
    // hold. Such a line is not interoperable JSON (RFC 8259 §8.2, I-JSON): it is rejected as invalid_json.
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
    if crate::batch::is_envelope(&entries) {
        return crate::batch::split(&entries);
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

/// `s` as a JSON string literal (for messages and extras keys).
pub fn json_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    push_json_str(&mut out, s);
    out
}

/// Appends `s` as a JSON string literal.
pub fn push_json_str(out: &mut String, s: &str) {
    if s.bytes().any(|b| b < 0x20 || b == b'"' || b == b'\\') {
        // Serialising a str into a String cannot fail.
        out.push_str(&serde_json::to_string(s).unwrap_or_default());
    } else {
        out.push('"');
        out.push_str(s);
        out.push('"');
    }
}

#[cfg(test)]
mod tests;
