//! The ids of a deletion request, and the keyed hash that stands for an id where one must not be kept in clear.
//!
//! Why this module exists: a deletion request names people (`userId`, `anonymousId`) or groups (`groupId`), and
//! several layers must agree on what "holds that id" means: the rows of `groups` (its `user_id`,
//! `anonymous_id` and `group_id` columns), the raw lines of the rejects files, and the records the dataset
//! keeps of the request itself, which must never hold the ids in clear. The request is parsed once, here, from
//! the command line or an ids file, and every reader asks it.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::Path;

use aho_corasick::AhoCorasick;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::store::Location;

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

    pub fn of_mut(&mut self, kind: IdKind) -> &mut BTreeSet<String> {
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
            // The kind may be quoted too, as CSV writers do.
            let kind = unquote(kind.trim()).unwrap_or_else(|| kind.to_string());
            match IdKind::parse(&kind) {
                Some(kind) => self.add(kind, &id, &where_)?,
                None if n == 1 && id.eq_ignore_ascii_case("id") => {}
                None => {
                    return Err(Error::Usage(format!(
                        "{}: unknown kind {:?}: use user_id, anonymous_id or group_id",
                        where_(),
                        clip(&kind, 40)
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

/// The folder (under a dataset's privacy location) and name stem of suppression records, and the name of the
/// settings record.
const SUPPRESSED_PREFIX: &str = "suppressed-";
const SETTINGS: &str = "settings.json";

/// The pseudonymisation a dataset was loaded with: the defaults of every later run, which may not load with
/// other values (a column must never hold clear values beside hashed ones).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Settings {
    /// `--truncate-ip`: `context_ip` keeps the network only (IPv4 /24, IPv6 /48).
    pub truncate_ip: bool,
    /// `--hash-columns`: columns holding the keyed hash of the value, never the value.
    pub hash_columns: Vec<String>,
    /// Identifies the key the columns were hashed with (a keyed hash of a constant), so that a run with
    /// another key is refused; the key itself is never stored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_id: Option<String>,
}

impl Settings {
    pub fn is_empty(&self) -> bool {
        !self.truncate_ip && self.hash_columns.is_empty()
    }

    /// The settings recorded under `dir`, if any.
    pub fn read(dir: &Location) -> Result<Option<Settings>> {
        let at = dir.join(SETTINGS);
        let Some(bytes) = at.get_bytes()? else {
            return Ok(None);
        };
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| Error::Dataset {
                path: at.url.clone().into(),
                message: format!("not a pseudonymisation record ({e}); restore it from a backup"),
            })
    }

    pub fn write(&self, dir: &Location) -> Result<()> {
        let bytes = serde_json::to_vec_pretty(self).map_err(|e| Error::Internal(e.to_string()))?;
        dir.join(SETTINGS).put_bytes(bytes)
    }
}

/// The id of a hash key, as [`Settings::key_id`] records it.
pub fn key_id(key: &[u8]) -> String {
    keyed_hash(key, "group-loader/key-id")[..16].to_string()
}

/// The text a suppression hashes for an id of `kind`.
fn subject(kind: IdKind, id: &str) -> String {
    format!("{}:{id}", kind.column())
}

/// A fast 32-bit tag of an id, so that a load computes the keyed hash only for the few events whose tag is
/// among the suppressed ones (a tag names no one: many ids share it). Seeded by the kind, without building a
/// string: it is computed for each id of every event a load reads.
fn tag(kind: IdKind, id: &str) -> u32 {
    xxhash_rust::xxh3::xxh3_64_with_seed(id.as_bytes(), kind as u64 + 1) as u32
}

/// One suppression request as the dataset keeps it: a random salt and the salted hash of each id.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct SuppressionRecord {
    salt: String,
    tags: Vec<u32>,
    hashes: Vec<String>,
}

/// Records the ids of a request as suppressed, under `dir` (one record per request, named by `stem`, so
/// that concurrent requests never overwrite each other). Returns how many ids it holds.
pub fn suppress(dir: &Location, stem: &str, ids: &Ids) -> Result<usize> {
    let salt = {
        let mut bytes = [0u8; 16];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes)
            .map_err(|_| Error::Internal("no random bytes for the salt".into()))?;
        bytes.iter().map(|b| format!("{b:02x}")).collect::<String>()
    };
    let mut record = SuppressionRecord {
        salt,
        tags: Vec::new(),
        hashes: Vec::new(),
    };
    for kind in IdKind::ALL {
        for id in ids.of(kind) {
            record.tags.push(tag(kind, id));
            record
                .hashes
                .push(keyed_hash(record.salt.as_bytes(), &subject(kind, id)));
        }
    }
    record.tags.sort_unstable();
    record.tags.dedup();
    record.hashes.sort();
    let bytes = serde_json::to_vec(&record).map_err(|e| Error::Internal(e.to_string()))?;
    dir.join(&format!("{SUPPRESSED_PREFIX}{stem}.json"))
        .put_bytes(bytes)?;
    Ok(ids.len())
}

/// The ids suppressed in a dataset, as a load checks them.
#[derive(Debug, Default)]
pub struct Suppressed {
    tags: HashSet<u32>,
    /// Salt -> the hashes made with it.
    records: HashMap<String, HashSet<String>>,
    pub ids: usize,
}

impl Suppressed {
    /// Reads every suppression record under `dir`.
    pub fn read(dir: &Location) -> Result<Suppressed> {
        let mut s = Suppressed::default();
        for meta in dir.list()? {
            let name = meta.location.filename().unwrap_or_default().to_string();
            if !(name.starts_with(SUPPRESSED_PREFIX) && name.ends_with(".json")) {
                continue;
            }
            let at = dir.child(meta.location);
            let Some(bytes) = at.get_bytes()? else {
                continue;
            };
            let r: SuppressionRecord = serde_json::from_slice(&bytes).map_err(|e| Error::Dataset {
                path: at.url.clone().into(),
                message: format!(
                    "not a suppression record ({e}): restore it, or the ids it suppressed could be loaded again"
                ),
            })?;
            s.ids += r.hashes.len();
            s.tags.extend(r.tags);
            s.records.entry(r.salt).or_default().extend(r.hashes);
        }
        Ok(s)
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// True when raw text (a rejected line, maybe cut or not JSON) names a suppressed id as its `userId`,
    /// `anonymousId` or `groupId` (a string value written without escapes), anywhere in it.
    pub fn holds_in_text(&self, text: &str) -> bool {
        if self.is_empty() {
            return false;
        }
        IdKind::ALL.iter().any(|kind| {
            let key = format!("\"{}\"", kind.field());
            text.match_indices(&key).any(|(at, _)| {
                let rest = text[at + key.len()..].trim_start();
                let Some(rest) = rest.strip_prefix(':') else {
                    return false;
                };
                let Some(rest) = rest.trim_start().strip_prefix('"') else {
                    return false;
                };
                rest.split_once('"')
                    .is_some_and(|(id, _)| self.holds(*kind, id))
            })
        })
    }

    /// True when the id of `kind` was suppressed.
    pub fn holds(&self, kind: IdKind, id: &str) -> bool {
        if id.is_empty() || !self.tags.contains(&tag(kind, id)) {
            return false;
        }
        let subject = subject(kind, id);
        self.records
            .iter()
            .any(|(salt, hashes)| hashes.contains(&keyed_hash(salt.as_bytes(), &subject)))
    }
}

/// `ip` with its host part zeroed: IPv4 to its /24 (`a.b.c.0`), IPv6 to its /48; `None` for text that is not
/// an IP address (the caller then keeps nothing of it).
pub fn truncate_ip(ip: &str) -> Option<String> {
    match ip.trim().parse::<std::net::IpAddr>().ok()? {
        std::net::IpAddr::V4(v4) => {
            let [a, b, c, _] = v4.octets();
            Some(std::net::Ipv4Addr::new(a, b, c, 0).to_string())
        }
        std::net::IpAddr::V6(v6) => {
            let s = v6.segments();
            Some(std::net::Ipv6Addr::new(s[0], s[1], s[2], 0, 0, 0, 0, 0).to_string())
        }
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
            "kind,id\nuser_id,u1\r\n\n# a comment\n\"userId\",\"u,2\"\nANONYMOUS-ID,a1\ngroup,\"g \"\"x\"\"\"\n",
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
    fn ips_are_truncated_to_their_network() {
        assert_eq!(truncate_ip("203.0.113.77").as_deref(), Some("203.0.113.0"));
        assert_eq!(
            truncate_ip("2001:db8:85a3:8d3:1319:8a2e:370:7348").as_deref(),
            Some("2001:db8:85a3::")
        );
        assert_eq!(truncate_ip("not an ip"), None);
    }

    #[test]
    fn suppressed_ids_are_found_by_kind_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let loc = Location::local(dir.path()).unwrap();
        suppress(&loc, "r1", &ids(&["u1"], &["g1"])).unwrap();
        suppress(&loc, "r2", &ids(&["u2"], &[])).unwrap();
        let text = std::fs::read_to_string(dir.path().join("suppressed-r1.json")).unwrap();
        assert!(!text.contains("u1") && !text.contains("g1"), "{text}");
        let s = Suppressed::read(&loc).unwrap();
        assert_eq!(s.ids, 3);
        assert!(s.holds(IdKind::User, "u1") && s.holds(IdKind::User, "u2"));
        assert!(s.holds(IdKind::Group, "g1"));
        assert!(!s.holds(IdKind::Group, "u1"), "a user id is not a group id");
        assert!(!s.holds(IdKind::User, "u3"));
        assert!(s.holds_in_text(r#"{"type":"group", "userId" : "u2", "#));
        assert!(!s.holds_in_text(r#"{"type":"group","anonymousId":"u2"}"#));
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
