//! The rejects file: one JSON object per rejected line, in input order.
//!
//! Why this module exists: "nothing is silently lost" is only true if every rejected line can be found again,
//! byte for byte, with where it came from and why. This module owns that record's format.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::PathBuf;

use base64::Engine;
use serde::Serialize;

use crate::error::{Error, Result};
use crate::lines::Line;
use crate::reject::Reject;

/// One line of the rejects file.
#[derive(Debug, Serialize)]
struct Record<'a> {
    file: &'a str,
    line: u64,
    offset: u64,
    /// For an event of a batch envelope: its index in the `batch` array.
    #[serde(skip_serializing_if = "Option::is_none")]
    index: Option<usize>,
    reason: &'a str,
    message: &'a str,
    /// The line as written (without its `\n` / `\r\n` and a leading BOM), when it is UTF-8; for an event of
    /// a batch, the element as written.
    #[serde(skip_serializing_if = "Option::is_none")]
    raw: Option<&'a str>,
    /// The line's bytes in standard base64, when they are not UTF-8.
    #[serde(skip_serializing_if = "Option::is_none")]
    raw_base64: Option<String>,
    /// For `line_too_long`: the line's full length in bytes (`raw` then holds its first 64 KiB).
    #[serde(skip_serializing_if = "Option::is_none")]
    length: Option<u64>,
    /// For `duplicate_message_id`: the messageId, in place of the raw line (a night that repeats a whole export
    /// must not write it out again).
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a str>,
}

/// Appends reject records to a file, created on the first reject.
pub struct RejectsWriter {
    path: PathBuf,
    out: Option<BufWriter<File>>,
    count: u64,
    /// Add to an existing file rather than start a new one.
    append: bool,
    raw: RawLines,
}

/// Which rejected lines the rejects file keeps the text of.
#[derive(Clone, Default)]
pub enum RawLines {
    #[default]
    All,
    /// None: the dataset is pseudonymised, and a raw line holds the clear values.
    None,
    /// All but those that name an id a deletion request suppressed.
    NotSuppressed(std::sync::Arc<crate::privacy::Suppressed>),
}

impl RejectsWriter {
    pub fn new(path: PathBuf) -> Self {
        RejectsWriter {
            path,
            out: None,
            count: 0,
            append: false,
            raw: RawLines::All,
        }
    }

    /// A writer adding records at the end of a rejects file already written (created if there is none): for
    /// duplicates found after the rows were staged.
    /// The same writer, keeping the text of only the lines `raw` says.
    pub fn with_raw(mut self, raw: RawLines) -> Self {
        self.raw = raw;
        self
    }

    pub fn appending(path: PathBuf) -> Self {
        RejectsWriter {
            append: true,
            ..RejectsWriter::new(path)
        }
    }

    /// Records one rejected event: a line (`bytes` is the line; for `line_too_long`, its kept prefix), or the
    /// element `index` of a batch envelope on that line (`bytes` is the element).
    pub fn write(
        &mut self,
        file: &str,
        line: &Line,
        index: Option<usize>,
        bytes: &[u8],
        reject: &Reject,
    ) -> Result<()> {
        let masked = mask_write_keys(bytes);
        let bytes = masked.as_ref();
        let keep_raw = match &self.raw {
            RawLines::All => true,
            RawLines::None => false,
            RawLines::NotSuppressed(s) => !s.holds_in_text(&String::from_utf8_lossy(bytes)),
        };
        let (raw, raw_base64) = match std::str::from_utf8(bytes) {
            _ if reject.id.is_some() || !keep_raw => (None, None),
            Ok(s) => (Some(s), None),
            // A too-long line's prefix may end inside a character: cut it there rather than go base64.
            Err(e) if line.too_long.is_some() && e.error_len().is_none() => {
                (std::str::from_utf8(&bytes[..e.valid_up_to()]).ok(), None)
            }
            Err(_) => (
                None,
                Some(base64::engine::general_purpose::STANDARD.encode(bytes)),
            ),
        };
        let record = Record {
            file,
            line: line.number,
            offset: line.offset,
            index,
            reason: reject.reason.as_str(),
            message: &reject.message,
            raw,
            raw_base64,
            length: line.too_long,
            id: reject.id.as_deref(),
        };
        if self.out.is_none() {
            let f = std::fs::OpenOptions::new()
                .create(true)
                .write(true)
                .append(self.append)
                .truncate(!self.append)
                .open(&self.path)
                .map_err(Error::io("creating rejects file", &self.path))?;
            self.out = Some(BufWriter::with_capacity(1 << 20, f));
        }
        if let Some(out) = self.out.as_mut() {
            serde_json::to_writer(&mut *out, &record)
                .map_err(|e| Error::io("writing rejects file", &self.path)(e.into()))?;
            out.write_all(b"\n")
                .map_err(Error::io("writing rejects file", &self.path))?;
        }
        self.count += 1;
        Ok(())
    }

    /// Flushes and syncs the file. Returns its path, or `None` when nothing was rejected.
    pub fn finish(self) -> Result<Option<PathBuf>> {
        let Some(out) = self.out else {
            return Ok(None);
        };
        let f = out
            .into_inner()
            .map_err(|e| Error::io("writing rejects file", &self.path)(e.into_error()))?;
        f.sync_all()
            .map_err(Error::io("syncing rejects file", &self.path))?;
        Ok(Some(self.path))
    }
}

/// Keys whose values are credentials (Segment's `writeKey`, sent in batch envelopes and accepted in single
/// calls), compared without ASCII case.
const CREDENTIAL_KEYS: [&[u8]; 2] = [b"\"writekey\"", b"\"write_key\""];

/// The line with the value of every `"writeKey": ...` masked (`"***"`): the rejects file keeps raw lines, and
/// must not keep a source's credential. Works on bytes, so it masks lines that are not valid JSON or UTF-8
/// too; a value that is a string keeps its quotes, any other value becomes the string `"***"`.
pub fn mask_write_keys(line: &[u8]) -> std::borrow::Cow<'_, [u8]> {
    let lower = line.to_ascii_lowercase();
    let mut spans = Vec::new();
    for key in CREDENTIAL_KEYS {
        let mut from = 0;
        while let Some(i) = memchr::memmem::find(&lower[from..], key) {
            let mut at = from + i + key.len();
            from = at;
            let skip_ws = |at: &mut usize| {
                while line.get(*at).is_some_and(|b| b.is_ascii_whitespace()) {
                    *at += 1;
                }
            };
            skip_ws(&mut at);
            if line.get(at) != Some(&b':') {
                continue;
            }
            at += 1;
            skip_ws(&mut at);
            let start = at;
            let end = if line.get(at) == Some(&b'"') {
                // A string: to its closing quote (escapes skipped), or the end of the line.
                let mut j = at + 1;
                while j < line.len() && line[j] != b'"' {
                    j += if line[j] == b'\\' { 2 } else { 1 };
                }
                (j + 1).min(line.len())
            } else {
                let rest = &line[at..];
                at + rest
                    .iter()
                    .position(|b| matches!(b, b',' | b'}' | b']') || b.is_ascii_whitespace())
                    .unwrap_or(rest.len())
            };
            if end > start {
                spans.push((start, end));
            }
            from = end.max(from);
        }
    }
    if spans.is_empty() {
        return std::borrow::Cow::Borrowed(line);
    }
    spans.sort_unstable();
    let mut out = Vec::with_capacity(line.len());
    let mut at = 0;
    for (start, end) in spans {
        if start < at {
            continue;
        }
        out.extend_from_slice(&line[at..start]);
        out.extend_from_slice(b"\"***\"");
        at = end;
    }
    out.extend_from_slice(&line[at..]);
    std::borrow::Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reject::Reason;

    fn line(too_long: Option<u64>) -> Line {
        Line {
            range: 0..0,
            number: 12,
            offset: 40960,
            too_long,
        }
    }

    fn records(writes: &[(&[u8], Option<u64>, Reason)]) -> Vec<serde_json::Value> {
        let dir = tempfile::tempdir().unwrap();
        let mut w = RejectsWriter::new(dir.path().join("r.ndjson"));
        for (bytes, too_long, reason) in writes {
            w.write(
                "in.json",
                &line(*too_long),
                None,
                bytes,
                &Reject::new(*reason, "msg"),
            )
            .unwrap();
        }
        let path = w.finish().unwrap().unwrap();
        std::fs::read_to_string(path)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    #[test]
    fn record_fields() {
        let r = records(&[(br#"{"type":"group"}"#, None, Reason::MissingGroupId)]);
        assert_eq!(
            r[0],
            serde_json::json!({"file":"in.json","line":12,"offset":40960,"reason":"missing_group_id","message":"msg","raw":"{\"type\":\"group\"}"})
        );
    }

    #[test]
    fn duplicates_name_their_id_and_hold_no_raw_line() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = RejectsWriter::new(dir.path().join("r.ndjson"));
        let reject = Reject::duplicate("m-1", "already loaded by this run".into());
        w.write(
            "in.json",
            &line(None),
            Some(2),
            b"{\"a very\":\"long line\"}",
            &reject,
        )
        .unwrap();
        let text = std::fs::read_to_string(w.finish().unwrap().unwrap()).unwrap();
        assert_eq!(
            text,
            "{\"file\":\"in.json\",\"line\":12,\"offset\":40960,\"index\":2,\"reason\":\"duplicate_message_id\",\"message\":\"already loaded by this run\",\"id\":\"m-1\"}\n"
        );
    }

    #[test]
    fn an_event_of_a_batch_names_its_index() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = RejectsWriter::new(dir.path().join("r.ndjson"));
        let reject = Reject::new(Reason::NotAnObject, "msg");
        w.write("in.json", &line(None), Some(3), b"7", &reject)
            .unwrap();
        let text = std::fs::read_to_string(w.finish().unwrap().unwrap()).unwrap();
        assert_eq!(
            text,
            "{\"file\":\"in.json\",\"line\":12,\"offset\":40960,\"index\":3,\"reason\":\"not_an_object\",\"message\":\"msg\",\"raw\":\"7\"}\n"
        );
    }

    #[test]
    fn non_utf8_goes_base64_and_too_long_has_length() {
        let r = records(&[
            (b"a\xffb", None, Reason::InvalidUtf8),
            ("é".as_bytes()[..1].as_ref(), Some(99), Reason::LineTooLong),
        ]);
        assert_eq!(r[0]["raw_base64"], "Yf9i");
        assert!(r[0].get("raw").is_none());
        assert_eq!(r[1]["raw"], "");
        assert_eq!(r[1]["length"], 99);
    }

    #[test]
    fn write_keys_are_masked_in_every_raw_line() {
        let m = |s: &str| String::from_utf8(mask_write_keys(s.as_bytes()).into_owned()).unwrap();
        assert_eq!(
            m(r#"{"batch":[],"writeKey":"SECRET","sentAt":"x"}"#),
            r#"{"batch":[],"writeKey":"***","sentAt":"x"}"#
        );
        // Broken JSON, other spellings, escapes, and values that are not strings.
        assert_eq!(
            m(r#"{"WriteKey" : "a\"b", oops"#),
            r#"{"WriteKey" : "***", oops"#
        );
        assert_eq!(m(r#"{"write_key":12345}"#), r#"{"write_key":"***"}"#);
        assert_eq!(m(r#"{"writeKey":"unterminated"#), r#"{"writeKey":"***""#);
        assert_eq!(
            m(r#"{"writeKey":"a","batch":[{"writeKey":"b"}]}"#),
            r#"{"writeKey":"***","batch":[{"writeKey":"***"}]}"#
        );
        // A key named like it but not it, and the word in a value, stay.
        assert_eq!(
            m(r#"{"writeKeys":"x","n":"writeKey"}"#),
            r#"{"writeKeys":"x","n":"writeKey"}"#
        );
        // Bytes that are not UTF-8 around it.
        assert_eq!(
            mask_write_keys(b"\xff{\"writeKey\":\"S\"}").as_ref(),
            b"\xff{\"writeKey\":\"***\"}"
        );
        // Through the writer: the record's raw line holds no key.
        let r = records(&[(
            br#"{"batch":"nope","writeKey":"SECRET"}"#,
            None,
            Reason::InvalidBatch,
        )]);
        assert_eq!(r[0]["raw"], r#"{"batch":"nope","writeKey":"***"}"#);
    }

    #[test]
    fn no_rejects_no_file() {
        let dir = tempfile::tempdir().unwrap();
        let w = RejectsWriter::new(dir.path().join("r.ndjson"));
        assert_eq!(w.finish().unwrap(), None);
        assert!(!dir.path().join("r.ndjson").exists());
    }
}
