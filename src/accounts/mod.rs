//! The `accounts` table: the latest state of every group, merged run after run.
//!
//! Why this module exists: `groups` answers "what did each Group call say"; warehouse users ask "what plan is
//! Initech on now". This module folds `groups` rows into one row per `group_id` and keeps that snapshot
//! correct however runs are retried, split or late.
//!
//! The rule. Every trait column (`name` ... `trait_id`, the same columns as `groups`) and every top-level key
//! of `extra_traits` is a last-writer-wins register. An event writes a register when it sends the trait: a
//! value sets it, `null` (or a value that did not fit the column) clears it, a trait not sent leaves it alone.
//! The write wins when the event's version `(timestamp, received_at, id)` is greater than the stored one
//! (null sorts first); on an exact tie the greater value wins (a value beats a clear). That order is total, so
//! merging is commutative, associative and idempotent: the same events twice, in any order, split across any
//! runs, late or early, give the same table. `first_seen_at`/`last_seen_at` are the min/max `timestamp`.
//!
//! Where the versions live. Each row's `trait_versions` column holds, as JSON,
//! `{"versions": [[timestamp_us, received_at_us|null, id|null], ...], "columns": {"plan": 0, ...},
//! "extra_traits": {"key": 1, ...}}`: for each register, the index of the version that last wrote it. A key in
//! `trait_versions.extra_traits` but not in `extra_traits` is a cleared key (a tombstone, so that an older event
//! cannot bring it back).
//!
//! Where "sent as null" comes from. `groups` reads null both for a trait sent as null and one not sent, so the
//! writer records the rows that cleared a trait in each `groups` file's key/value metadata
//! ([`schema::META_CLEARED_TRAITS`]). `accounts` is therefore a pure function of the `groups` files: a run merges
//! its own rows into the previous snapshot, and when there is no snapshot to build on (first run
//! with accounts, after `--no-accounts`, or `--mode overwrite`, which removes rows) it rebuilds from every
//! `groups` file of the new version. The run's own rows are folded while they are written (`fold`), the very
//! rows and cleared-traits records its files hold, so they are not read back from the files.
//!
//! Memory. The snapshot is split into buckets by a hash of `group_id` (`part-BBBBB-of-NNNNN.parquet`). Buckets
//! are merged one per thread and at most `merge::MERGE_WAYS` at once, each holding its groups in memory; the
//! bucket count (a power of two) is chosen so that the snapshot's groups plus the distinct groups of the run
//! fit a `MERGE_WAYS`th of the budget per bucket at `BYTES_PER_GROUP` each, and only grows. It never depends on
//! the thread count, so neither do the files. A bucket that no event of the run touches is kept as it is. Of
//! the `groups` files the merge must read (a rebuild's, commits it has not seen): with no more buckets to fill
//! than threads, each bucket reads them (filtered by hash); with more, their rows are routed to their buckets in
//! one pass through spill files (`spill`), so many buckets cost neither memory nor decodes.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};

use compact_str::CompactString;
use serde::Deserialize;

use crate::layout::MAX_EXTRA_KEYS;
use crate::schema::{COLUMNS, Col};

mod files;
mod fold;
mod merge;
mod spill;

pub use files::{SnapshotFile, parse_file_name, snapshot_files};
pub use fold::{Fold, Folded};
pub use merge::{Merge, Merged, merge};

/// Number of trait columns.
const NT: usize = Col::TraitId as usize - Col::Name as usize + 1;
/// Estimated memory of one group in a bucket being merged (its registers, versions and strings), for sizing.
const BYTES_PER_GROUP: u64 = 2048;
/// Rows per row group of an accounts file.
const BATCH_ROWS: usize = 65_536;

/// `(timestamp, received_at, id)` of the event that wrote a register; ordered field by field, null first.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Version {
    pub timestamp: i64,
    pub received_at: Option<i64>,
    pub id: Option<CompactString>,
}

/// A register's value: the text of a trait column (for `created_at`, its microseconds in decimal), or the raw
/// JSON of an extras key. `None`: cleared.
pub type Value = Option<CompactString>;

/// Register keys: `0..NT` are the trait columns, in schema order; from `NT` on, extras keys interned in a
/// [`Keys`] table shared by every account of a bucket (the same few keys repeat across groups).
type Key = u32;

/// The extras keys of a bucket.
#[derive(Debug, Default)]
pub struct Keys {
    names: Vec<Box<str>>,
    ids: HashMap<Box<str>, Key>,
}

impl Keys {
    fn get(&self, name: &str) -> Option<Key> {
        self.ids.get(name).copied()
    }

    fn id(&mut self, name: &str) -> Key {
        if let Some(&k) = self.ids.get(name) {
            return k;
        }
        let k = (NT + self.names.len()) as Key;
        self.names.push(name.into());
        self.ids.insert(name.into(), k);
        k
    }

    fn name(&self, key: Key) -> &str {
        self.names.get(key as usize - NT).map_or("", |n| n.as_ref())
    }
}

/// One register: its key, which version wrote it, and the value.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Register {
    key: Key,
    version: u32,
    value: Value,
}

/// The state of one group: 64 bytes, plus its registers (24 bytes each) and values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    first_seen: i64,
    last_seen: i64,
    /// Versions referenced by the registers (each added once).
    versions: Vec<Version>,
    /// Registers sorted by key.
    regs: Vec<Register>,
    /// More `extra_traits` keys reached it than [`MAX_EXTRA_KEYS`]: those after the first in name order were
    /// not kept.
    over_key_limit: bool,
    /// Once it holds [`MAX_EXTRA_KEYS`] keys: their names in order, to find the last kept one quickly.
    kept_names: Option<std::collections::BTreeSet<(CompactString, Key)>>,
    /// The heap bytes of the registers' values and the versions' ids ([`heap_bytes`]), kept as they change so
    /// that [`Account::footprint`], asked twice per event by the fold, does not walk the registers.
    text_bytes: usize,
}

/// The heap bytes a text takes in a `CompactString` (none up to 24 bytes, held inline).
fn heap_bytes(s: &str) -> usize {
    if s.len() > 24 { s.len() } else { 0 }
}

/// What one event (a `groups` row) says about its group, borrowed from the batch it was read from (values
/// are copied only when they win a register).
#[derive(Debug, Clone)]
pub struct Event<'a> {
    pub timestamp: i64,
    pub received_at: Option<i64>,
    pub id: Option<&'a str>,
    /// Per trait column: `None` not sent, `Some(None)` cleared, `Some(Some(v))` set.
    pub columns: [Option<Option<Cow<'a, str>>>; NT],
    /// `extra_traits` as written (a JSON object, already checked): its top-level keys are registers, a value
    /// `null` clears one. Walked as it is applied, never copied into a list: one event may hold a million keys.
    pub extra_traits: Option<&'a str>,
}

/// A version as compared: `(timestamp, received_at, id)`.
type VersionKey<'a> = (i64, Option<i64>, Option<&'a str>);

impl Version {
    fn key(&self) -> VersionKey<'_> {
        (self.timestamp, self.received_at, self.id.as_deref())
    }
}

impl Event<'_> {
    fn key(&self) -> VersionKey<'_> {
        (self.timestamp, self.received_at, self.id)
    }
}

impl Account {
    fn new(timestamp: i64) -> Self {
        Account {
            first_seen: timestamp,
            last_seen: timestamp,
            versions: Vec::new(),
            regs: Vec::new(),
            over_key_limit: false,
            kept_names: None,
            text_bytes: 0,
        }
    }

    /// [`Account::text_bytes`] counted from the registers and versions.
    fn counted_text_bytes(&self) -> usize {
        let values = self.regs.iter().filter_map(|r| r.value.as_deref());
        let ids = self.versions.iter().filter_map(|v| v.id.as_deref());
        values.chain(ids).map(heap_bytes).sum()
    }

    /// The index of version `v` in `versions`, adding it if needed.
    fn version_index(&mut self, v: VersionKey<'_>) -> u32 {
        if let Some(i) = self.versions.iter().rposition(|x| x.key() == v) {
            return i as u32;
        }
        self.text_bytes += v.2.map_or(0, heap_bytes);
        self.versions.push(Version {
            timestamp: v.0,
            received_at: v.1,
            id: v.2.map(Into::into),
        });
        (self.versions.len() - 1) as u32
    }

    fn get(&self, key: Key) -> Option<&Register> {
        self.regs
            .binary_search_by_key(&key, |r| r.key)
            .ok()
            .map(|i| &self.regs[i])
    }

    /// Writes `(version, value)` into register `key` if it beats what the register holds.
    fn offer(&mut self, key: Key, version: VersionKey<'_>, value: Option<&str>) {
        match self.regs.binary_search_by_key(&key, |r| r.key) {
            Ok(i) => {
                let r = &self.regs[i];
                let held = self.versions[r.version as usize].key();
                if (version, value) > (held, r.value.as_deref()) {
                    let v = self.version_index(version);
                    let old = self.regs[i].value.as_deref().map_or(0, heap_bytes);
                    self.text_bytes = self.text_bytes - old + value.map_or(0, heap_bytes);
                    self.regs[i].version = v;
                    self.regs[i].value = value.map(Into::into);
                }
            }
            Err(i) => {
                let v = self.version_index(version);
                self.text_bytes += value.map_or(0, heap_bytes);
                self.regs.insert(
                    i,
                    Register {
                        key,
                        version: v,
                        value: value.map(Into::into),
                    },
                );
            }
        }
    }

    /// Applies one event (the register rule of the module doc).
    pub fn apply(&mut self, keys: &mut Keys, event: &Event<'_>) {
        let ts = event.timestamp;
        self.first_seen = self.first_seen.min(ts);
        self.last_seen = self.last_seen.max(ts);
        for (i, sent) in event.columns.iter().enumerate() {
            if let Some(value) = sent {
                self.offer(i as Key, event.key(), value.as_deref());
            }
        }
        if let Some(text) = event.extra_traits {
            // (Checked to be an object when the event was read.)
            let _ = crate::json::for_each_member(text, |key, value| {
                let value = (value.trim() != "null").then_some(value);
                self.offer_extra(keys, &key, event.key(), value);
            });
        }
        // Versions no register uses any more are dropped now and then (and always before writing).
        if self.versions.len() > 2 * self.regs.len().max(4) {
            self.drop_unused_versions();
        }
    }

    /// Writes an `extra_traits` key's register. A group keeps at most [`MAX_EXTRA_KEYS`] keys, the first in
    /// name order: a new key beyond them takes the place of the last kept one when its name comes first, and
    /// is not kept otherwise. The keys kept are then the first of every key ever sent, whatever the order
    /// events came in, so merging stays commutative and idempotent; `groups` keeps every key in any case.
    fn offer_extra(
        &mut self,
        keys: &mut Keys,
        name: &str,
        version: VersionKey<'_>,
        value: Option<&str>,
    ) {
        if let Some(k) = keys.get(name)
            && self.get(k).is_some()
        {
            return self.offer(k, version, value);
        }
        if self.kept_names.is_none()
            && self.regs.iter().filter(|r| r.key as usize >= NT).count() >= MAX_EXTRA_KEYS
        {
            let names = self
                .regs
                .iter()
                .filter(|r| r.key as usize >= NT)
                .map(|r| (CompactString::from(keys.name(r.key)), r.key))
                .collect();
            self.kept_names = Some(names);
        }
        if let Some(names) = self.kept_names.as_mut() {
            self.over_key_limit = true;
            match names.last() {
                Some((last, _)) if name < last.as_str() => {}
                _ => return,
            }
            if let Some((_, evicted)) = names.pop_last()
                && let Ok(i) = self.regs.binary_search_by_key(&evicted, |r| r.key)
            {
                let removed = self.regs.remove(i);
                self.text_bytes -= removed.value.as_deref().map_or(0, heap_bytes);
            }
            let k = keys.id(name);
            names.insert((name.into(), k));
            return self.offer(k, version, value);
        }
        let k = keys.id(name);
        self.offer(k, version, value);
    }

    /// Merges another state of the same group (one bucket read from a coarser snapshot file holds no two
    /// states of a group, but merging keeps this correct whatever the files hold).
    fn absorb(&mut self, other: Account, keys: &mut Keys) {
        // (The extras keys are named by the same table the offers add to: each name is copied out first.)
        self.absorb_with(&other, keys, |keys, k| Cow::Owned(keys.name(k).to_string()));
    }

    /// Merges the state of the same group from another bucket, whose extras keys `other_keys` names (the
    /// fold of a run's rows into the bucket of the snapshot).
    fn absorb_from(&mut self, other: &Account, other_keys: &Keys, keys: &mut Keys) {
        self.absorb_with(other, keys, |_, k| Cow::Borrowed(other_keys.name(k)));
    }

    /// Offers every register of `other` to this account; `name` gives the name of one of its extras keys.
    fn absorb_with<'n>(
        &mut self,
        other: &Account,
        keys: &mut Keys,
        name: impl Fn(&Keys, Key) -> Cow<'n, str>,
    ) {
        self.first_seen = self.first_seen.min(other.first_seen);
        self.last_seen = self.last_seen.max(other.last_seen);
        self.over_key_limit |= other.over_key_limit;
        for r in &other.regs {
            let v = other.versions[r.version as usize].key();
            if (r.key as usize) < NT {
                self.offer(r.key, v, r.value.as_deref());
            } else {
                let name = name(keys, r.key);
                self.offer_extra(keys, &name, v, r.value.as_deref());
            }
        }
    }

    /// An estimate of the memory the account takes in a bucket's map, its key's entry included.
    fn footprint(&self) -> usize {
        debug_assert_eq!(self.text_bytes, self.counted_text_bytes());
        std::mem::size_of::<(CompactString, Account)>()
            + 16
            + self.regs.capacity() * std::mem::size_of::<Register>()
            + self.versions.capacity() * std::mem::size_of::<Version>()
            + self.text_bytes
            + self.kept_names.as_ref().map_or(0, |n| n.len() * 64)
    }

    /// Keeps `versions` to those still referenced, in version order (so the state, and its text, do not
    /// depend on the order events were applied in).
    fn drop_unused_versions(&mut self) {
        let mut used: Vec<u32> = self.regs.iter().map(|r| r.version).collect();
        used.sort_unstable();
        used.dedup();
        if used.len() == self.versions.len() && self.versions.windows(2).all(|w| w[0] < w[1]) {
            return;
        }
        used.sort_by(|a, b| self.versions[*a as usize].cmp(&self.versions[*b as usize]));
        let versions: Vec<Version> = used
            .iter()
            .map(|&i| self.versions[i as usize].clone())
            .collect();
        for r in &mut self.regs {
            r.version = used
                .iter()
                .position(|u| *u == r.version)
                .unwrap_or_default() as u32;
        }
        self.versions = versions;
        self.text_bytes = self.counted_text_bytes();
    }

    /// `extra_traits` as written: the keys holding a value, in key order; null when there are none.
    fn extra_traits_json(&self, keys: &Keys) -> Option<String> {
        let mut members: Vec<(&str, &str)> = self
            .regs
            .iter()
            .filter(|r| r.key as usize >= NT)
            .filter_map(|r| r.value.as_deref().map(|v| (keys.name(r.key), v)))
            .collect();
        if members.is_empty() {
            return None;
        }
        members.sort_unstable();
        let mut out = String::new();
        for (key, raw) in members {
            out.push(if out.is_empty() { '{' } else { ',' });
            crate::json::push_json_str(&mut out, key);
            out.push(':');
            out.push_str(raw);
        }
        out.push('}');
        Some(out)
    }

    /// `trait_versions` as written (the [`VersionsDoc`] layout; built by hand, it is written for every row):
    /// versions in version order, columns in schema order, extras keys in key order.
    fn versions_json(&self, keys: &Keys, out: &mut String) {
        use std::fmt::Write;
        out.clear();
        out.push_str(r#"{"versions":["#);
        for (i, v) in self.versions.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            let _ = write!(out, "[{},", v.timestamp);
            match v.received_at {
                Some(r) => {
                    let _ = write!(out, "{r},");
                }
                None => out.push_str("null,"),
            }
            match &v.id {
                Some(id) => crate::json::push_json_str(out, id),
                None => out.push_str("null"),
            }
            out.push(']');
        }
        out.push_str(r#"],"columns":{"#);
        let mut first = true;
        for r in self.regs.iter().filter(|r| (r.key as usize) < NT) {
            if !std::mem::take(&mut first) {
                out.push(',');
            }
            crate::json::push_json_str(out, trait_name(r.key));
            let _ = write!(out, ":{}", r.version);
        }
        out.push_str(r#"},"extra_traits":{"#);
        let mut extras: Vec<(&str, u32)> = self
            .regs
            .iter()
            .filter(|r| r.key as usize >= NT)
            .map(|r| (keys.name(r.key), r.version))
            .collect();
        extras.sort_unstable();
        for (i, (key, version)) in extras.into_iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            crate::json::push_json_str(out, key);
            let _ = write!(out, ":{version}");
        }
        out.push_str("}}");
    }
}

/// The name of trait column `i` (`0..NT`).
fn trait_name(i: Key) -> &'static str {
    COLUMNS[Col::Name as usize + i as usize].name
}

/// The JSON of the `trait_versions` column (read with serde; written by [`Account::versions_json`]).
#[derive(Debug, Deserialize)]
struct VersionsDoc {
    versions: Vec<(i64, Option<i64>, Option<String>)>,
    columns: BTreeMap<String, u32>,
    extra_traits: BTreeMap<String, u32>,
}

/// The accounts of one bucket being merged.
#[derive(Default)]
struct Bucket {
    keys: Keys,
    accounts: HashMap<CompactString, Account>,
}

impl Bucket {
    /// Applies `event` to `group`, and returns by how many bytes the bucket's memory estimate grew.
    fn apply_measured(&mut self, group: &str, event: &Event<'_>) -> usize {
        let keys = &mut self.keys;
        let names = keys.names.len();
        let grown = match self.accounts.get_mut(group) {
            Some(acc) => {
                let before = acc.footprint();
                acc.apply(keys, event);
                acc.footprint().saturating_sub(before)
            }
            None => {
                let mut acc = Account::new(event.timestamp);
                acc.apply(keys, event);
                let heap = heap_bytes(group);
                let grown = acc.footprint() + heap;
                self.accounts.insert(group.into(), acc);
                grown
            }
        };
        let new_names: usize = keys.names[names..].iter().map(|n| 2 * n.len() + 64).sum();
        grown + new_names
    }

    fn apply(&mut self, group: &str, event: &Event<'_>) {
        let keys = &mut self.keys;
        match self.accounts.get_mut(group) {
            Some(acc) => acc.apply(keys, event),
            None => {
                let mut acc = Account::new(event.timestamp);
                acc.apply(keys, event);
                self.accounts.insert(group.into(), acc);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::files::{file_name, parse_file_name};
    use super::*;

    fn v(ts: i64, rcv: Option<i64>, id: &str) -> Version {
        Version {
            timestamp: ts,
            received_at: rcv,
            id: Some(id.into()),
        }
    }

    const PLAN: Key = (Col::Plan as usize - Col::Name as usize) as Key;

    fn plan_event<'a>(version: &'a Version, plan: Option<Option<&'static str>>) -> Event<'a> {
        let mut columns: [Option<Option<Cow<'_, str>>>; NT] = Default::default();
        columns[PLAN as usize] = plan.map(|p| p.map(Cow::Borrowed));
        Event {
            timestamp: version.timestamp,
            received_at: version.received_at,
            id: version.id.as_deref(),
            columns,
            extra_traits: None,
        }
    }

    fn plan(acc: &Account) -> Option<Option<String>> {
        acc.get(PLAN)
            .map(|r| r.value.as_deref().map(str::to_string))
    }

    #[test]
    fn versions_order_by_timestamp_then_received_at_then_id_null_first() {
        assert!(v(2, None, "a") > v(1, Some(9), "z"));
        assert!(v(1, Some(1), "a") > v(1, None, "z"));
        assert!(v(1, Some(1), "b") > v(1, Some(1), "a"));
        let no_id = Version {
            timestamp: 1,
            received_at: Some(1),
            id: None,
        };
        assert!(v(1, Some(1), "") > no_id);
        assert!(
            v(1, Some(1), "").key() > no_id.key(),
            "the compared key orders the same way"
        );
    }

    #[test]
    fn newer_wins_null_clears_absent_keeps_late_loses() {
        let keys = &mut Keys::default();
        let mut acc = Account::new(10);
        let (a, b, c, d, e) = (
            v(10, None, "a"),
            v(20, None, "b"),
            v(30, None, "c"),
            v(40, None, "d"),
            v(50, None, "e"),
        );
        acc.apply(keys, &plan_event(&a, Some(Some("free"))));
        acc.apply(keys, &plan_event(&c, Some(None)));
        assert_eq!(plan(&acc), Some(None), "null clears");
        acc.apply(keys, &plan_event(&b, Some(Some("pro"))));
        assert_eq!(
            plan(&acc),
            Some(None),
            "a late, older event does not bring it back"
        );
        acc.apply(keys, &plan_event(&d, None));
        assert_eq!(plan(&acc), Some(None), "not sent: kept");
        acc.apply(keys, &plan_event(&e, Some(Some("team"))));
        assert_eq!(plan(&acc), Some(Some("team".into())));
        assert_eq!((acc.first_seen, acc.last_seen), (10, 50));
    }

    #[test]
    fn exact_ties_break_on_the_value_so_order_does_not_matter() {
        let keys = &mut Keys::default();
        let x = v(1, None, "x");
        let a = plan_event(&x, Some(Some("a")));
        let b = plan_event(&x, Some(Some("b")));
        let c = plan_event(&x, Some(None));
        let mut one = Account::new(1);
        let mut two = Account::new(1);
        for e in [&a, &b, &c] {
            one.apply(keys, e);
        }
        for e in [&c, &b, &a, &a] {
            two.apply(keys, e);
        }
        assert_eq!(plan(&one), plan(&two));
        assert_eq!(plan(&one), Some(Some("b".into())));
    }

    #[test]
    fn extras_keys_are_registers_with_tombstones() {
        let keys = &mut Keys::default();
        let mut acc = Account::new(1);
        let e = |ts, extras: Vec<(&'static str, Option<&'static str>)>| Event {
            timestamp: ts,
            received_at: None,
            id: Some("m"),
            columns: Default::default(),
            extra_traits: Some(Box::leak(
                format!(
                    "{{{}}}",
                    extras
                        .iter()
                        .map(|(k, x)| format!("\"{k}\":{}", x.unwrap_or("null")))
                        .collect::<Vec<_>>()
                        .join(",")
                )
                .into_boxed_str(),
            )),
        };
        acc.apply(
            keys,
            &e(1, vec![("seats", Some("5")), ("tier", Some("\"gold\""))]),
        );
        acc.apply(keys, &e(3, vec![("tier", None)]));
        acc.apply(
            keys,
            &e(2, vec![("tier", Some("\"silver\"")), ("seats", Some("7"))]),
        );
        acc.drop_unused_versions();
        assert_eq!(
            acc.extra_traits_json(keys).as_deref(),
            Some(r#"{"seats":7}"#)
        );
        let mut text = String::new();
        acc.versions_json(keys, &mut text);
        let doc: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(
            doc,
            serde_json::json!({
                "versions": [[2, null, "m"], [3, null, "m"]],
                "columns": {},
                "extra_traits": {"seats": 0, "tier": 1}
            }),
            "the tombstone of `tier` is kept, unused versions are dropped, versions in order"
        );
    }

    #[test]
    fn bucket_file_names_round_trip() {
        assert_eq!(parse_file_name(&file_name(3, 8, None)), Some((3, 8)));
        assert_eq!(
            parse_file_name(&file_name(3, 8, Some("9f2c-1"))),
            Some((3, 8))
        );
        assert_eq!(
            parse_file_name("part-00003-of-00008-x.parquet"),
            Some((3, 8))
        );
        assert_eq!(parse_file_name("part-00003-of-00006.parquet"), None);
        assert_eq!(parse_file_name("part-00008-of-00008.parquet"), None);
        assert_eq!(parse_file_name("other.parquet"), None);
    }
}
