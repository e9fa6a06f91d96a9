//! The mapping rules: which field of a Group call fills which column.
//!
//! Why this module exists: this is the part of the product people argue about ("where did `created_at` go?"),
//! so the rules are tables a newcomer can read top to bottom — `TOP_LEVEL`, `RESERVED_TRAITS`,
//! `ADDRESS_FIELDS`, `CONTEXT_FIELDS`, `LIBRARY_FIELDS` — and one walk over the event that applies them.
//! Whatever no table claims, and whatever does not fit its column, lands in an extras column as its exact JSON
//! text, so the typed columns plus the extras give back every input value (the lossless rule).

use std::borrow::Cow;

use crate::json::{Entries, push_json_str};
use crate::reject::{Reason, Reject};
use crate::schema::{Col, N_COLS};
use crate::values::{self, JsonKind, Micros, TextValue, TimeValue};

/// Where a top-level field goes.
#[derive(Debug, Clone, Copy)]
enum Top {
    /// `type`: checked by the parser, not stored (it is always `group`).
    Type,
    /// `groupId`: text, required (`missing_group_id`, `invalid_group_id`).
    GroupId,
    /// `userId` / `anonymousId`: text; a string or a number, or rejected with the given reason.
    Identity(Col, Reason),
    Text(Col),
    Time(Col),
    Context,
    Traits,
    /// Stays in `extra` (like any unmapped field) and also fills the column when nothing else gave it a value:
    /// RudderStack records the client's address as `request_ip`, not `context.ip`.
    Fallback(Col),
    /// Not stored anywhere: `writeKey`, a source's credential (Segment's HTTP API accepts it in the body of
    /// single calls). The one exception to the lossless rule.
    Credential,
}

/// Top-level fields, matched exactly. Any other top-level field goes whole to `extra`.
const TOP_LEVEL: &[(&str, Top)] = &[
    ("type", Top::Type),
    ("messageId", Top::Text(Col::Id)),
    ("groupId", Top::GroupId),
    ("userId", Top::Identity(Col::UserId, Reason::InvalidUserId)),
    (
        "anonymousId",
        Top::Identity(Col::AnonymousId, Reason::InvalidAnonymousId),
    ),
    ("receivedAt", Top::Time(Col::ReceivedAt)),
    ("sentAt", Top::Time(Col::SentAt)),
    ("originalTimestamp", Top::Time(Col::OriginalTimestamp)),
    ("timestamp", Top::Time(Col::Timestamp)),
    ("channel", Top::Text(Col::Channel)),
    ("context", Top::Context),
    ("traits", Top::Traits),
    ("request_ip", Top::Fallback(Col::ContextIp)),
    ("writeKey", Top::Credential),
];

/// Where a reserved trait goes.
#[derive(Debug, Clone, Copy)]
enum TraitTarget {
    Text(Col),
    Time(Col),
    Address,
}

/// Reserved group traits, by normalised name: a trait key matches when it equals the name after
/// lowercasing ASCII letters and dropping every character that is not an ASCII letter or digit. The first
/// match in document order fills the column; later matches go to `extra_traits` (`shadowed_traits`).
const RESERVED_TRAITS: &[(&str, TraitTarget)] = &[
    ("address", TraitTarget::Address),
    ("avatar", TraitTarget::Text(Col::Avatar)),
    ("createdat", TraitTarget::Time(Col::CreatedAt)),
    ("description", TraitTarget::Text(Col::Description)),
    ("email", TraitTarget::Text(Col::Email)),
    ("employees", TraitTarget::Text(Col::Employees)),
    ("id", TraitTarget::Text(Col::TraitId)),
    ("industry", TraitTarget::Text(Col::Industry)),
    ("name", TraitTarget::Text(Col::Name)),
    ("phone", TraitTarget::Text(Col::Phone)),
    ("website", TraitTarget::Text(Col::Website)),
    ("plan", TraitTarget::Text(Col::Plan)),
];

/// Subfields of `traits.address`, normalised like reserved traits. Everything else in the
/// address object goes to `extra_traits`, nested under the original address key.
const ADDRESS_FIELDS: &[(&str, Col)] = &[
    ("street", Col::AddressStreet),
    ("city", Col::AddressCity),
    ("state", Col::AddressState),
    ("postalcode", Col::AddressPostalCode),
    ("country", Col::AddressCountry),
];

/// Fields of `context`, matched exactly. `library` is an object whose [`LIBRARY_FIELDS`] fill
/// columns; everything else in `context` goes to `extra_context` (a leftover part of `library` stays nested
/// under `library`).
const CONTEXT_FIELDS: &[(&str, Col)] =
    &[("ip", Col::ContextIp), ("userAgent", Col::ContextUserAgent)];
const CONTEXT_LIBRARY: &str = "library";
const LIBRARY_FIELDS: &[(&str, Col)] = &[
    ("name", Col::ContextLibraryName),
    ("version", Col::ContextLibraryVersion),
];

/// One cell of a row.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Cell<'a> {
    #[default]
    Null,
    Text(Cow<'a, str>),
    Time(Micros),
}

/// One accepted Group call, as cells in the column order of [`crate::schema::COLUMNS`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row<'a> {
    pub cells: [Cell<'a>; N_COLS],
    /// Reserved-trait (and address subfield) keys shadowed by an earlier match.
    pub shadowed_traits: u32,
    /// Values of time fields that were present and not valid times.
    pub invalid_times: u32,
    /// Reserved-trait columns (bit `1 << col`) whose trait was sent but holds no value: `null`, or a value
    /// that did not fit and went to `extra_traits`. `groups` reads null either way; the `accounts` table
    /// needs the difference.
    pub cleared: u32,
}

impl<'a> Row<'a> {
    pub fn get(&self, col: Col) -> &Cell<'a> {
        &self.cells[col as usize]
    }

    pub fn text(&self, col: Col) -> Option<&str> {
        match self.get(col) {
            Cell::Text(t) => Some(t),
            _ => None,
        }
    }

    pub fn time(&self, col: Col) -> Option<Micros> {
        match self.get(col) {
            Cell::Time(t) => Some(*t),
            _ => None,
        }
    }

    /// The time that picks the partition: `received_at`, or `timestamp` where it is missing.
    pub fn partition_time(&self) -> Micros {
        self.time(Col::ReceivedAt)
            .or_else(|| self.time(Col::Timestamp))
            .unwrap_or_default()
    }

    /// The message id used for in-run dedupe: `None` when null or `""` (never deduplicated).
    pub fn dedupe_key(&self) -> Option<&str> {
        self.text(Col::Id).filter(|s| !s.is_empty())
    }

    /// The same row, owning its text.
    pub fn into_owned(self) -> Row<'static> {
        Row {
            cells: self.cells.map(|c| match c {
                Cell::Null => Cell::Null,
                Cell::Text(t) => Cell::Text(Cow::Owned(t.into_owned())),
                Cell::Time(t) => Cell::Time(t),
            }),
            shadowed_traits: self.shadowed_traits,
            invalid_times: self.invalid_times,
            cleared: self.cleared,
        }
    }

    fn set(&mut self, col: Col, cell: Cell<'a>) {
        self.cells[col as usize] = cell;
    }

    /// Marks `col` cleared if the trait sent for it left it null.
    fn sent(&mut self, col: Col) {
        if self.cells[col as usize] == Cell::Null {
            self.cleared |= 1 << col as u32;
        }
    }
}

/// Builds a JSON object as text, member by member, keeping each value's raw text.
#[derive(Default)]
struct ObjectWriter {
    buf: String,
}

impl ObjectWriter {
    fn member(&mut self, key: &str, raw_value: &str) {
        if self.buf.is_empty() {
            self.buf.reserve(key.len() + raw_value.len() + 64);
        }
        self.buf.push(if self.buf.is_empty() { '{' } else { ',' });
        push_json_str(&mut self.buf, key);
        self.buf.push(':');
        self.buf.push_str(raw_value);
    }

    fn finish(mut self) -> Option<String> {
        if self.buf.is_empty() {
            return None;
        }
        self.buf.push('}');
        Some(self.buf)
    }
}

/// Lowercases ASCII letters and drops every other non-alphanumeric character, into `buf`. `None` when the
/// result is longer than any reserved name (so it cannot match).
fn normalise<'b>(key: &str, buf: &'b mut [u8; 16]) -> Option<&'b [u8]> {
    let mut n = 0;
    for b in key.bytes().filter(u8::is_ascii_alphanumeric) {
        *buf.get_mut(n)? = b.to_ascii_lowercase();
        n += 1;
    }
    Some(&buf[..n])
}

/// The index in `table` of the entry whose normalised name matches `key`.
fn match_normalised<T>(table: &[(&str, T)], key: &str) -> Option<usize> {
    let mut buf = [0u8; 16];
    let norm = normalise(key, &mut buf)?;
    table.iter().position(|(name, _)| name.as_bytes() == norm)
}

/// Identity check state of `userId` / `anonymousId`.
#[derive(Default)]
struct Checks {
    group_id: Option<Result<(), Reject>>,
    bad_identity: Option<Reject>,
    has_identity: bool,
}

/// Maps a Group call (already known to have `type: "group"` and no duplicate top-level keys) to a row, or
/// to the first reject reason that applies from `missing_group_id` on.
pub fn map_group<'a>(entries: &Entries<'a>) -> Result<Row<'a>, Reject> {
    let mut row = Row {
        cells: Default::default(),
        shadowed_traits: 0,
        invalid_times: 0,
        cleared: 0,
    };
    let mut checks = Checks::default();
    let mut extra = ObjectWriter::default();
    let mut extra_traits = ObjectWriter::default();
    let mut extra_context = ObjectWriter::default();
    let mut fallbacks: Vec<(Col, &'a str)> = Vec::new();

    for (key, value) in &entries.0 {
        let value: &'a str = value;
        let target = TOP_LEVEL
            .iter()
            .find(|(name, _)| name == key)
            .map(|(_, t)| *t);
        match target {
            None => extra.member(key, value),
            Some(Top::Type) => {}
            Some(Top::GroupId) => checks.group_id = Some(group_id(&mut row, value)),
            Some(Top::Identity(col, reason)) => {
                put_identity(&mut row, &mut checks, (col, reason), key, value)
            }
            Some(Top::Text(col)) => put_text(&mut row, col, key, value, &mut extra),
            Some(Top::Time(col)) => put_time(&mut row, col, key, value, &mut extra),
            Some(Top::Context) => match values::kind(value) {
                JsonKind::Object => {
                    map_context(&mut row, key, value, &mut extra, &mut extra_context)
                }
                JsonKind::Null => {}
                _ => extra.member(key, value),
            },
            Some(Top::Traits) => match values::kind(value) {
                JsonKind::Object => map_traits(&mut row, key, value, &mut extra, &mut extra_traits),
                JsonKind::Null => {}
                _ => extra.member(key, value),
            },
            Some(Top::Fallback(col)) => {
                extra.member(key, value);
                fallbacks.push((col, value));
            }
            Some(Top::Credential) => {}
        }
    }
    // Fallbacks fill only what the walk left empty (whatever the key order was).
    for (col, value) in fallbacks {
        if let (Cell::Null, TextValue::Text(t)) = (row.get(col), values::text(value)) {
            row.set(col, Cell::Text(t));
        }
    }

    let timestamp = verdict(checks, &row)?;
    row.set(Col::Timestamp, Cell::Time(timestamp));

    for (col, obj) in [
        (Col::Extra, extra),
        (Col::ExtraTraits, extra_traits),
        (Col::ExtraContext, extra_context),
    ] {
        if let Some(json) = obj.finish() {
            row.set(col, Cell::Text(Cow::Owned(json)));
        }
    }
    Ok(row)
}

/// `userId` / `anonymousId`: a string or number is kept as text (and counts as an identity unless empty);
/// `null` is absent; anything else is remembered as the line's reject (the first reason in the table's order).
fn put_identity<'a>(
    row: &mut Row<'a>,
    checks: &mut Checks,
    (col, reason): (Col, Reason),
    key: &str,
    value: &'a str,
) {
    match values::kind(value) {
        JsonKind::Null => {}
        JsonKind::String | JsonKind::Number => {
            if let TextValue::Text(t) = values::text(value) {
                checks.has_identity |= !t.is_empty();
                row.set(col, Cell::Text(t));
            }
        }
        _ => {
            if checks
                .bad_identity
                .as_ref()
                .is_none_or(|r| r.reason > reason)
            {
                checks.bad_identity = Some(Reject::new(
                    reason,
                    format!("{key} must be a string or a number, got {}", short(value)),
                ));
            }
        }
    }
}

/// The line's reject reason, in the order of the reject table, or else the row's `timestamp`.
fn verdict(checks: Checks, row: &Row<'_>) -> Result<Micros, Reject> {
    checks
        .group_id
        .unwrap_or_else(|| Err(Reject::new(Reason::MissingGroupId, "no groupId")))?;
    if let Some(reject) = checks.bad_identity {
        return Err(reject);
    }
    if !checks.has_identity {
        return Err(Reject::new(
            Reason::MissingIdentity,
            "neither userId nor anonymousId holds a value",
        ));
    }
    derive_timestamp(row).ok_or_else(|| {
        Reject::new(
            Reason::MissingTime,
            "none of timestamp, originalTimestamp, receivedAt holds a valid time",
        )
    })
}

fn group_id<'a>(row: &mut Row<'a>, value: &'a str) -> Result<(), Reject> {
    match (values::kind(value), values::text(value)) {
        (JsonKind::Null, _) => Err(Reject::new(Reason::MissingGroupId, "groupId is null")),
        (JsonKind::String | JsonKind::Number, TextValue::Text(t)) => {
            if t.is_empty() {
                return Err(Reject::new(Reason::MissingGroupId, "groupId is \"\""));
            }
            row.set(Col::GroupId, Cell::Text(t));
            Ok(())
        }
        _ => Err(Reject::new(
            Reason::InvalidGroupId,
            format!("groupId must be a string or a number, got {}", short(value)),
        )),
    }
}

/// The first 80 characters of a raw value, for messages.
fn short(raw: &str) -> String {
    match raw.char_indices().nth(80) {
        Some((i, _)) => format!("{}...", &raw[..i]),
        None => raw.to_string(),
    }
}

/// The text rule into `col`; a value that is not text goes to `overflow` under `key`.
fn put_text<'a>(
    row: &mut Row<'a>,
    col: Col,
    key: &str,
    value: &'a str,
    overflow: &mut ObjectWriter,
) {
    match values::text(value) {
        TextValue::Text(t) => row.set(col, Cell::Text(t)),
        TextValue::Null => {}
        TextValue::NotText => overflow.member(key, value),
    }
}

/// The time rule into `col`; an invalid time goes to `overflow` under `key` and is counted.
fn put_time(row: &mut Row<'_>, col: Col, key: &str, value: &str, overflow: &mut ObjectWriter) {
    match values::time(value) {
        TimeValue::Valid(t) => row.set(col, Cell::Time(t)),
        TimeValue::Null => {}
        TimeValue::Invalid => {
            row.invalid_times += 1;
            overflow.member(key, value);
        }
    }
}

/// The timestamp rule: `timestamp`; else `receivedAt - (sentAt - originalTimestamp)` where all three are valid (and the
/// result is a valid time: within years 0001 to 9999 in UTC); else `originalTimestamp`; else `receivedAt`.
fn derive_timestamp(row: &Row<'_>) -> Option<Micros> {
    let original = row.time(Col::OriginalTimestamp);
    let received = row.time(Col::ReceivedAt);
    let skewed = || {
        let (sent, original, received) = (row.time(Col::SentAt)?, original?, received?);
        values::in_range(received.checked_sub(sent.checked_sub(original)?)?)
    };
    row.time(Col::Timestamp)
        .or_else(skewed)
        .or(original)
        .or(received)
}

/// Walks the members of a nested object. Its text was validated by the line's parse, so this does not fail
/// in practice; if it ever did, the caller keeps the whole value in extras (members already placed would then
/// appear twice, but nothing is lost).
fn members<'a>(value: &'a str, f: impl FnMut(Cow<'a, str>, &'a str)) -> bool {
    crate::json::for_each_member(value, f).is_ok()
}

fn map_traits<'a>(
    row: &mut Row<'a>,
    key: &str,
    value: &'a str,
    extra: &mut ObjectWriter,
    extra_traits: &mut ObjectWriter,
) {
    let mut seen = [false; RESERVED_TRAITS.len()];
    let ok = members(value, |tkey, tvalue| {
        let Some(i) = match_normalised(RESERVED_TRAITS, &tkey) else {
            return extra_traits.member(&tkey, tvalue);
        };
        if std::mem::replace(&mut seen[i], true) {
            row.shadowed_traits += 1;
            return extra_traits.member(&tkey, tvalue);
        }
        match RESERVED_TRAITS[i].1 {
            TraitTarget::Text(col) => {
                put_text(row, col, &tkey, tvalue, extra_traits);
                row.sent(col);
            }
            TraitTarget::Time(col) => {
                put_time(row, col, &tkey, tvalue, extra_traits);
                row.sent(col);
            }
            TraitTarget::Address => match values::kind(tvalue) {
                JsonKind::Object => map_address(row, &tkey, tvalue, extra_traits),
                kind => {
                    if kind != JsonKind::Null {
                        extra_traits.member(&tkey, tvalue);
                    }
                    // An address that is null (or not an object) clears every address column.
                    for (_, col) in ADDRESS_FIELDS {
                        row.sent(*col);
                    }
                }
            },
        }
    });
    if !ok {
        extra.member(key, value);
    }
}

fn map_address<'a>(row: &mut Row<'a>, key: &str, value: &'a str, extra_traits: &mut ObjectWriter) {
    let mut leftover = ObjectWriter::default();
    let mut seen = [false; ADDRESS_FIELDS.len()];
    let ok = members(value, |akey, avalue| {
        match match_normalised(ADDRESS_FIELDS, &akey) {
            Some(i) if !std::mem::replace(&mut seen[i], true) => {
                put_text(row, ADDRESS_FIELDS[i].1, &akey, avalue, &mut leftover);
                row.sent(ADDRESS_FIELDS[i].1);
            }
            Some(_) => {
                row.shadowed_traits += 1;
                leftover.member(&akey, avalue);
            }
            None => leftover.member(&akey, avalue),
        }
    });
    if !ok {
        return extra_traits.member(key, value);
    }
    if let Some(json) = leftover.finish() {
        extra_traits.member(key, &json);
    }
}

fn map_context<'a>(
    row: &mut Row<'a>,
    key: &str,
    value: &'a str,
    extra: &mut ObjectWriter,
    extra_context: &mut ObjectWriter,
) {
    let mut seen = [false; CONTEXT_FIELDS.len()];
    let mut library_seen = false;
    let ok = members(value, |ckey, cvalue| {
        if let Some(i) = CONTEXT_FIELDS.iter().position(|(name, _)| *name == ckey)
            && !std::mem::replace(&mut seen[i], true)
        {
            put_text(row, CONTEXT_FIELDS[i].1, &ckey, cvalue, extra_context);
        } else if ckey == CONTEXT_LIBRARY
            && !std::mem::replace(&mut library_seen, true)
            && values::kind(cvalue) == JsonKind::Object
        {
            map_library(row, &ckey, cvalue, extra_context);
        } else if !(ckey == CONTEXT_LIBRARY && values::kind(cvalue) == JsonKind::Null) {
            extra_context.member(&ckey, cvalue);
        }
    });
    if !ok {
        extra.member(key, value);
    }
}

fn map_library<'a>(row: &mut Row<'a>, key: &str, value: &'a str, extra_context: &mut ObjectWriter) {
    let mut leftover = ObjectWriter::default();
    let mut seen = [false; LIBRARY_FIELDS.len()];
    let ok = members(value, |lkey, lvalue| {
        match LIBRARY_FIELDS.iter().position(|(name, _)| *name == lkey) {
            Some(i) if !std::mem::replace(&mut seen[i], true) => {
                put_text(row, LIBRARY_FIELDS[i].1, &lkey, lvalue, &mut leftover)
            }
            _ => leftover.member(&lkey, lvalue),
        }
    });
    if !ok {
        return extra_context.member(key, value);
    }
    if let Some(json) = leftover.finish() {
        extra_context.member(key, &json);
    }
}

#[cfg(test)]
mod tests;
