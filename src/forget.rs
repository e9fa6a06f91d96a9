//! Finding and removing what a deletion request names: the `groups` rows of its ids, and the lines of the
//! rejects files that hold them.
//!
//! Why this module exists: both table formats forget the same way and differ only in how the change is
//! published (a hive version switch, a Delta commit). What a file holds of the request, how a file is
//! rewritten without some rows (the writer's own rewrite, so the file keeps its properties and its
//! cleared-traits record), and which reject lines go, are decided once, here.

use std::collections::BTreeSet;
use std::path::Path;

use arrow::array::{Array, StringArray};
use base64::Engine;

use crate::datafile::DataFile;
use crate::error::{Error, Result};
use crate::layout::Codec;
use crate::privacy::{IdKind, Ids, TextMatcher};
use crate::writer::{StagedFile, rewrite_without};

/// What one `groups` file holds of a request.
#[derive(Debug, Clone, Default)]
pub struct FileMatches {
    /// The rows (in file order) the request names.
    pub rows: Vec<usize>,
    /// The file's rows in all.
    pub total: u64,
    /// The `group_id`s of those rows: the groups whose `accounts` row changes.
    pub groups: BTreeSet<String>,
}

impl FileMatches {
    /// Every row of the file goes: the file is removed, not rewritten.
    pub fn all(&self) -> bool {
        self.rows.len() as u64 == self.total
    }
}

/// The rows of `file` that the request names, from its three id columns only.
pub fn find(file: &DataFile, ids: &Ids) -> Result<FileMatches> {
    let names = IdKind::ALL.map(IdKind::column);
    let (reader, meta) = file.columns(&names)?;
    let total = meta.file_metadata().num_rows().max(0) as u64;
    let mut found = FileMatches {
        total,
        ..FileMatches::default()
    };
    let mut row = 0usize;
    for batch in reader {
        let batch = batch.map_err(|e| file.cause(e))?;
        let col = |name: &str| -> Result<&StringArray> {
            batch
                .column_by_name(name)
                .and_then(|c| c.as_any().downcast_ref::<StringArray>())
                .ok_or_else(|| file.error(format!("column {name} is not text")))
        };
        let [users, anonymous, groups] = [col(names[0])?, col(names[1])?, col(names[2])?];
        fn get(a: &StringArray, r: usize) -> Option<&str> {
            (!a.is_null(r)).then(|| a.value(r))
        }
        for r in 0..batch.num_rows() {
            let (u, a, g) = (get(users, r), get(anonymous, r), get(groups, r));
            if ids.row_matches(u, a, g) {
                found.rows.push(row + r);
                if let Some(g) = g {
                    found.groups.insert(g.to_string());
                }
            }
        }
        row += batch.num_rows();
    }
    Ok(found)
}

/// Writes at `into` a copy of the local file `from` without rows `drop` (sorted), through the writer's own
/// rewrite. Returns the new file's rows and bytes.
pub fn rewrite(from: &Path, into: &Path, drop: &[usize], codec: Codec) -> Result<(u64, u64)> {
    if let Some(dir) = into.parent() {
        std::fs::create_dir_all(dir).map_err(Error::io("creating directory", dir))?;
    }
    // The rewrite replaces the file it is given: give it a copy (a link on the same disk), never the original.
    let _ = std::fs::remove_file(into);
    if std::fs::hard_link(from, into).is_err() {
        std::fs::copy(from, into).map_err(Error::io("copying", into))?;
    }
    let staged = StagedFile {
        partition: String::new(),
        seq: 0,
        staged: into.to_path_buf(),
        rows: 0,
        bytes: 0,
        origins: None,
    };
    let done = rewrite_without(&staged, drop, &[], codec)?;
    Ok((done.rows, done.bytes))
}

/// A rejects file with the lines that hold the request's ids left out.
#[derive(Debug, Default)]
pub struct FilteredRejects {
    pub text: Vec<u8>,
    pub removed: u64,
    pub kept: u64,
}

/// Leaves out of a rejects file (one JSON record a line) every record whose raw line (`raw`, or `raw_base64`
/// decoded) or message holds an id of the request ([`TextMatcher::holds`]). A line that is not a record is
/// judged on its whole text. Kept lines are kept byte for byte.
pub fn filter_rejects(bytes: &[u8], matcher: &TextMatcher<'_>) -> FilteredRejects {
    let mut out = FilteredRejects::default();
    for line in bytes.split_inclusive(|b| *b == b'\n') {
        let body = line.strip_suffix(b"\n").unwrap_or(line);
        if body.is_empty() {
            continue;
        }
        if record_holds(body, matcher) {
            out.removed += 1;
        } else {
            out.kept += 1;
            out.text.extend_from_slice(body);
            out.text.push(b'\n');
        }
    }
    out
}

fn record_holds(body: &[u8], matcher: &TextMatcher<'_>) -> bool {
    let whole = String::from_utf8_lossy(body);
    let Ok(serde_json::Value::Object(record)) = serde_json::from_slice::<serde_json::Value>(body)
    else {
        return matcher.holds(&whole);
    };
    let text = |k: &str| record.get(k).and_then(|v| v.as_str());
    if text("raw").is_some_and(|raw| matcher.holds(raw))
        || text("message").is_some_and(|m| matcher.holds(m))
    {
        return true;
    }
    if let Some(b64) = text("raw_base64") {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .unwrap_or_default();
        if matcher.holds(&String::from_utf8_lossy(&decoded)) {
            return true;
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reject_records_holding_an_id_go_and_the_rest_stay_byte_for_byte() {
        let ids = Ids {
            users: ["u-gone".to_string()].into_iter().collect(),
            ..Ids::default()
        };
        let b64 = base64::engine::general_purpose::STANDARD.encode(b"\xff{\"userId\":\"u-gone\"}");
        let text = format!(
            "{}\n{}\n{}\n{}\n",
            r#"{"file":"a","line":1,"reason":"missing_group_id","raw":"{\"type\":\"group\",\"userId\":\"u-gone\"}"}"#,
            r#"{"file":"a","line":2,"reason":"missing_group_id","raw":"{\"type\":\"group\",\"userId\":\"u-kept\"}"}"#,
            format_args!(r#"{{"file":"a","line":3,"reason":"invalid_utf8","raw_base64":"{b64}"}}"#),
            r#"{"file":"a","line":4,"reason":"duplicate_message_id","id":"m1"}"#,
        );
        let ids_m = ids.text_matcher();
        let got = filter_rejects(text.as_bytes(), &ids_m);
        assert_eq!((got.removed, got.kept), (2, 2));
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            String::from_utf8(got.text).unwrap(),
            format!("{}\n{}\n", lines[1], lines[3])
        );
    }
}
