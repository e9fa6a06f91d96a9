//! The ids of a deletion request, and the keyed hash that stands for an id where one must not be kept in clear.
//!
//! Why this module exists: a deletion request names people (`userId`, `anonymousId`) or groups (`groupId`), and
//! several layers must agree on what "holds that id" means: the rows of `groups` (its `user_id`,
//! `anonymous_id` and `group_id` columns), the raw lines of the rejects files, and the records the dataset
//! keeps of the request itself, which must never hold the ids in clear. The request is parsed once, here, from
//! the command line or an ids file, and every reader asks it.

use std::collections::BTreeSet;
use std::path::Path;

use aho_corasick::AhoCorasick;

use crate::error::{Error, Result};

/// The environment variable holding the key of the keyed hash (never taken from the command line, where it
/// would show in `ps` and shell histories).
pub const HASH_KEY_VAR: &str = "GROUP_LOADER_HASH_KEY";

/// What an id names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum IdKind {
    User,
    Anonymous,
    Group,
}

impl IdKind {
    /// The `groups` column that holds ids of this kind.
    pub fn column(self) -> &'static str {
        match self {
            IdKind::User => "user_id",
            IdKind::Anonymous => "anonymous_id",
            IdKind::Group => "group_id",
        }
    }

    /// The event field that holds ids of this kind (Segment's spelling).
    pub fn field(self) -> &'static str {
        match self {
            IdKind::User => "userId",
            IdKind::Anonymous => "anonymousId",
            IdKind::Group => "groupId",
        }
    }

    /// The kind an ids file names: `user_id`, `userId`, `user` (any case, `-` or `_`), and so on.
    fn parse(s: &str) -> Option<IdKind> {
        let k: String = s
            .trim()
            .chars()
            .filter(|c| *c != '_' && *c != '-')
            .flat_map(char::to_lowercase)
            .collect();
        match k.as_str() {
            "userid" | "user" => Some(IdKind::User),
            "anonymousid" | "anonymous" => Some(IdKind::Anonymous),
            "groupid" | "group" => Some(IdKind::Group),
            _ => None,
        }
    }

    pub const ALL: [IdKind; 3] = [IdKind::User, IdKind::Anonymous, IdKind::Group];
}

/// The ids of one request, by kind. Empty ids are never taken (an empty `user_id` is not a person).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ids {
    pub users: BTreeSet<String>,
    pub anonymous: BTreeSet<String>,
    pub groups: BTreeSet<String>,
}

impl Ids {
    pub fn of(&self, kind: IdKind) -> &BTreeSet<String> {
        match kind {
            IdKind::User => &self.users,
            IdKind::Anonymous => &self.anonymous,
            IdKind::Group => &self.groups,
        }
    }

    fn of_mut(&mut self, kind: IdKind) -> &mut BTreeSet<String> {
        match kind {
            IdKind::User => &mut self.users,
            IdKind::Anonymous => &mut self.anonymous,
            IdKind::Group => &mut self.groups,
        }
    }

    /// Adds an id; an empty one (after trimming the line's end) is refused with `what` in the message.
    pub fn add(&mut self, kind: IdKind, id: &str, what: &dyn Fn() -> String) -> Result<()> {
        if id.is_empty() {
            return Err(Error::Usage(format!(
                "{}: an empty {} names no one; give the id, or leave the line out",
                what(),
                kind.field()
            )));
        }
        self.of_mut(kind).insert(id.to_string());
        Ok(())
    }

    pub fn len(&self) -> usize {
        self.users.len() + self.anonymous.len() + self.groups.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// True when a row with these ids is one the request names.
    pub fn row_matches(
        &self,
        user: Option<&str>,
        anonymous: Option<&str>,
        group: Option<&str>,
    ) -> bool {
        user.is_some_and(|u| self.users.contains(u))
            || anonymous.is_some_and(|a| self.anonymous.contains(a))
            || group.is_some_and(|g| self.groups.contains(g))
    }

    /// Adds the ids of an ids file: one `kind,id` a line (`user_id,u-123`; CSV quoting allowed for the id, as
    /// Segment's regulation exports write it), blank lines and lines starting with `#` skipped, and a first
    /// line `kind,id` (any spelling of a header whose second field is `id`) taken as a header.
    pub fn read_file(&mut self, path: &Path) -> Result<()> {
        let text = std::fs::read(path).map_err(Error::io("reading the ids file", path))?;
        let text = String::from_utf8(text).map_err(|_| {
            Error::Usage(format!(
                "ids file {}: not UTF-8 text; write one kind,id a line (e.g. user_id,u-123)",
                path.display()
            ))
        })?;
        for (i, line) in text.lines().enumerate() {
            let n = i + 1;
            let where_ = || format!("ids file {} line {n}", path.display());
            let line = line.trim_end_matches('\r');
            if line.trim().is_empty() || line.trim_start().starts_with('#') {
                continue;
            }
            let Some((kind, id)) = line.split_once(',') else {
                return Err(Error::Usage(format!(
                    "{}: expected kind,id (e.g. user_id,u-123), got {:?}",
                    where_(),
                    clip(line, 80)
                )));
            };
            let id = unquote(id.trim()).ok_or_else(|| {
                Error::Usage(format!(
                    "{}: the id's quotes are not closed (CSV quoting: \"a \"\"quoted\"\" id\")",
                    where_()
                ))
            })?;
            match IdKind::parse(kind) {
                Some(kind) => self.add(kind, &id, &where_)?,
                None if n == 1 && id.eq_ignore_ascii_case("id") => {}
                None => {
                    return Err(Error::Usage(format!(
                        "{}: unknown kind {:?}: use user_id, anonymous_id or group_id",
                        where_(),
                        clip(kind, 40)
                    )));
                }
            }
        }
        Ok(())
    }

    /// The matcher of raw text (rejected lines) for these ids.
    pub fn text_matcher(&self) -> TextMatcher<'_> {
        let quoted: Vec<String> = IdKind::ALL
            .iter()
            .flat_map(|k| self.of(*k).iter())
            .map(|id| serde_json::Value::from(id.as_str()).to_string())
            .collect();
        TextMatcher {
            ids: self,
            quoted: AhoCorasick::new(&quoted)
                .ok()
                .filter(|_| !quoted.is_empty()),
        }
    }
}

/// At most `n` characters of `s`, for messages.
fn clip(s: &str, n: usize) -> String {
    s.chars().take(n).collect()
}

/// The id of a CSV field: as it is, or unquoted when it starts with a quote (`""` inside is one quote).
fn unquote(field: &str) -> Option<String> {
    let Some(inner) = field.strip_prefix('"') else {
        return Some(field.to_string());
    };
    let inner = inner.strip_suffix('"')?;
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '"' {
            // Inside quotes a quote is only ever doubled.
            if chars.next() != Some('"') {
                return None;
            }
        }
        out.push(c);
    }
    Some(out)
}

/// Tells whether raw text (a rejected line) holds an id of the request: a JSON string equal to one of the ids
/// anywhere in it, or, when it parses as JSON, a `userId` / `anonymousId` / `groupId` of the event (or of an
/// event of its `batch`) equal to one, however it is escaped or written as a number. Rejects are diagnostics:
/// a line that only mentions the id as another field's value goes too, which errs on the side of the person.
pub struct TextMatcher<'a> {
    ids: &'a Ids,
    quoted: Option<AhoCorasick>,
}

impl TextMatcher<'_> {
    pub fn holds(&self, text: &str) -> bool {
        if self.quoted.as_ref().is_some_and(|m| m.is_match(text)) {
            return true;
        }
        match serde_json::from_str::<serde_json::Value>(text) {
            Ok(v) => self.event_holds(&v),
            Err(_) => false,
        }
    }

    fn event_holds(&self, v: &serde_json::Value) -> bool {
        let Some(obj) = v.as_object() else {
            return false;
        };
        let text = |f: &str| match obj.get(f) {
            Some(serde_json::Value::String(s)) => Some(s.clone()),
            Some(serde_json::Value::Number(n)) => Some(n.to_string()),
            _ => None,
        };
        let (u, a, g) = (text("userId"), text("anonymousId"), text("groupId"));
        if self
            .ids
            .row_matches(u.as_deref(), a.as_deref(), g.as_deref())
        {
            return true;
        }
        obj.get("batch")
            .and_then(|b| b.as_array())
            .is_some_and(|events| events.iter().any(|e| self.event_holds(e)))
    }
}

/// The keyed hash of `text`: HMAC-SHA-256 under `key`, as lowercase hex.
pub fn keyed_hash(key: &[u8], text: &str) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, key);
    let tag = ring::hmac::sign(&key, text.as_bytes());
    let mut out = String::with_capacity(64);
    for b in tag.as_ref() {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

/// The hash key from [`HASH_KEY_VAR`], if set (an empty value counts as unset).
pub fn hash_key() -> Result<Option<Vec<u8>>> {
    match std::env::var_os(HASH_KEY_VAR) {
        None => Ok(None),
        Some(v) if v.is_empty() => Ok(None),
        Some(v) => match v.into_string() {
            Ok(s) => Ok(Some(s.into_bytes())),
            Err(_) => Err(Error::Usage(format!(
                "{HASH_KEY_VAR} is not valid UTF-8: set it to a text key (e.g. from `openssl rand -hex 32`)"
            ))),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(users: &[&str], groups: &[&str]) -> Ids {
        Ids {
            users: users.iter().map(|s| s.to_string()).collect(),
            anonymous: BTreeSet::new(),
            groups: groups.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn ids_files_take_kinds_in_any_spelling_a_header_and_csv_quotes() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("ids.csv");
        std::fs::write(
            &p,
            "kind,id\nuser_id,u1\r\n\n# a comment\nuserId,\"u,2\"\nANONYMOUS-ID,a1\ngroup,\"g \"\"x\"\"\"\n",
        )
        .unwrap();
        let mut got = Ids::default();
        got.read_file(&p).unwrap();
        assert_eq!(
            got.users,
            ["u1", "u,2"].map(String::from).into_iter().collect()
        );
        assert_eq!(got.anonymous, ["a1".to_string()].into_iter().collect());
        assert_eq!(got.groups, ["g \"x\"".to_string()].into_iter().collect());
    }

    #[test]
    fn a_malformed_ids_file_names_its_line() {
        let dir = tempfile::tempdir().unwrap();
        for (text, needle) in [
            ("user_id,u1\nu2\n", "line 2: expected kind,id"),
            ("user_id,u1\nemail,x@y\n", "line 2: unknown kind"),
            ("user_id,\"u1\n", "line 1: the id's quotes"),
            ("group_id,\n", "line 1: an empty groupId"),
        ] {
            let p = dir.path().join("ids");
            std::fs::write(&p, text).unwrap();
            let e = Ids::default().read_file(&p).unwrap_err();
            assert!(matches!(e, Error::Usage(_)), "{e}");
            assert!(e.to_string().contains(needle), "{text:?}: {e}");
        }
    }

    #[test]
    fn rows_match_on_any_of_their_three_ids() {
        let r = ids(&["u1"], &["g1"]);
        assert!(r.row_matches(Some("u1"), None, Some("other")));
        assert!(r.row_matches(None, Some("x"), Some("g1")));
        assert!(!r.row_matches(Some("u2"), Some("u1"), Some("g2")));
        assert!(!r.row_matches(None, None, None));
    }

    #[test]
    fn raw_lines_hold_an_id_quoted_escaped_numeric_or_in_a_batch() {
        let r = ids(&["u1", "42"], &[]);
        let m = r.text_matcher();
        assert!(m.holds(r#"{"type":"group","userId":"u1"}"#));
        assert!(m.holds(r#"not json but "u1" is here"#));
        assert!(m.holds(r#"{"type":"group","userId":"\u0075\u0031"}"#));
        assert!(m.holds(r#"{"type":"group","userId":42}"#));
        assert!(m.holds(r#"{"batch":[{"type":"group","userId":"\u0075\u0031"}]}"#));
        assert!(!m.holds(r#"{"type":"group","userId":"u11","groupId":"u"}"#));
        assert!(!m.holds("u1 unquoted in text that is not JSON"));
    }

    #[test]
    fn the_keyed_hash_is_hmac_sha256() {
        // RFC 4231, test case 2.
        assert_eq!(
            keyed_hash(b"Jefe", "what do ya want for nothing?"),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
