//! Exactly once: which messageIds are already loaded, by this run or, within the dedupe window,
//! by earlier runs.
//!
//! Why this module exists: at-least-once pipelines deliver events twice (overlapping exports, retried jobs,
//! late files), and the `id` column must hold each messageId once. The ids a run must compare against are the
//! structures of a run that grow with the data, so how they are stored, and what they cost against
//! `--memory-limit`, is decided here.
//!
//! - [`SeenIds`]: the ids this run accepted (the first in input order wins).
//! - [`EarlierIds`]: the ids of partitions already in the dataset that lie within `--dedupe-window` of a
//!   partition the run writes. Only the `id` column is read (column projection), partition by partition, the
//!   first time the run meets a partition whose window reaches them. Each id is kept as 16 bytes: the top 96
//!   bits of its xxh3-128 hash with its partition's number in the low 32 bits, in sorted segments with a
//!   radix index. Lookups happen while chunks are parsed, in parallel. A 96-bit collision between two of
//!   n = 10^7 ids has a probability of about n^2 / 2^97 = 6 * 10^-16.

use std::collections::{BTreeMap, HashSet};
use std::hash::BuildHasherDefault;
use std::time::Duration;

use arrow::array::{Array, StringArray};
use parquet::arrow::ProjectionMask;
use rayon::prelude::*;
use xxhash_rust::xxh3::xxh3_128;

use crate::datafile::DataFile;
use crate::error::{Error, Result};
use crate::layout::PartitionMode;

/// A hasher for keys that are already hashes (xxh3 of the messageId): it passes them on, nothing more.
#[derive(Default)]
struct Prehashed(u64);

impl std::hash::Hasher for Prehashed {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.0 ^= u64::from_le_bytes(word);
        }
    }
    fn write_u64(&mut self, v: u64) {
        self.0 = v;
    }
}

/// The top 96 bits of an id's xxh3-128 hash, most significant word first (so that keys sort as numbers):
/// 12 bytes an id. A collision between two of n = 10^8 ids has a probability of about n^2 / 2^97 = 10^-13.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
struct Key96([u32; 3]);

impl Key96 {
    fn of(id: &str) -> Key96 {
        let h = xxh3_128(id.as_bytes());
        Key96([(h >> 96) as u32, (h >> 64) as u32, (h >> 32) as u32])
    }
}

impl std::hash::Hash for Key96 {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        // The low 64 bits: the sorted part indexes by the top bits, the hash table by these.
        state.write_u64((u64::from(self.0[1]) << 32) | u64::from(self.0[2]));
    }
}

/// The radix index of sorted keys, given each key's top `bits` bits in order: entry `p` is where the keys
/// whose top bits are `p` start, entry `p + 1` where they end. Counts are 32-bit (a quarter of a 16-byte key's
/// size): an index covers up to 2^32 keys, 48 GB of 12-byte keys, past any memory a run is given.
fn radix_index(tops: impl Iterator<Item = usize>, bits: u32) -> Box<[u32]> {
    let mut radix = vec![0u32; (1usize << bits) + 1];
    for top in tops {
        radix[top + 1] += 1;
    }
    for i in 1..radix.len() {
        radix[i] += radix[i - 1];
    }
    radix.into_boxed_slice()
}

/// Top bits of a key that index the sorted part of [`SeenIds`].
const SEEN_RADIX_BITS: u32 = 16;
/// Ids the hash table in front of the sorted part holds at least before they are merged into it.
const MIN_RECENT_IDS: usize = 1 << 16;

/// The messageIds a run has accepted (the first in input order wins), as [`Key96`] hashes.
///
/// Most of them sit in one sorted array (12 bytes an id, found by a radix index on the top bits and a binary
/// search), the newest in a hash table in front of it holding up to an eighth as many. When the table is
/// full, its ids are sorted and merged into the array from the back, in place. So the set takes about 13 to
/// 15 bytes an id (a hash set of the same keys: 20 to 30, and twice that while it grows), and memory grows
/// smoothly with the ids: the largest step is the table's eighth.
pub struct SeenIds {
    sorted: Vec<Key96>,
    /// `radix[p]..radix[p + 1]`: the range of `sorted` whose keys' top bits are `p` (empty until the first
    /// merge).
    radix: Box<[u32]>,
    recent: HashSet<Key96, BuildHasherDefault<Prehashed>>,
    /// How many ids `recent` takes before they are merged (its capacity, so it never grows).
    recent_limit: usize,
}

impl Default for SeenIds {
    fn default() -> Self {
        let recent = HashSet::with_capacity_and_hasher(MIN_RECENT_IDS, Default::default());
        SeenIds {
            sorted: Vec::new(),
            radix: Box::default(),
            recent_limit: recent.capacity(),
            recent,
        }
    }
}

impl SeenIds {
    /// Adds an id; false if it was already there.
    pub fn insert(&mut self, id: &str) -> bool {
        let k = Key96::of(id);
        if self.in_sorted(k) || !self.recent.insert(k) {
            return false;
        }
        if self.recent.len() >= self.recent_limit {
            self.merge_recent();
        }
        true
    }

    /// How many ids the set holds.
    pub fn len(&self) -> usize {
        self.sorted.len() + self.recent.len()
    }

    /// True when no id was added.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn in_sorted(&self, k: Key96) -> bool {
        let slot = (k.0[0] >> (32 - SEEN_RADIX_BITS)) as usize;
        match (self.radix.get(slot), self.radix.get(slot + 1)) {
            (Some(&from), Some(&to)) => self.sorted[from as usize..to as usize]
                .binary_search(&k)
                .is_ok(),
            _ => false,
        }
    }

    /// Moves the ids of the hash table into the sorted array, and starts a table an eighth of its size.
    fn merge_recent(&mut self) {
        let mut new: Vec<Key96> = std::mem::take(&mut self.recent).into_iter().collect();
        new.sort_unstable();
        let old = self.sorted.len();
        self.sorted.reserve_exact(new.len());
        self.sorted.resize(old + new.len(), Key96::default());
        // Merge from the back: each slot written is free (past the old keys still to be placed).
        let (mut i, mut j) = (old, new.len());
        for w in (0..old + new.len()).rev() {
            if j == 0 {
                break;
            }
            if i > 0 && self.sorted[i - 1] > new[j - 1] {
                self.sorted[w] = self.sorted[i - 1];
                i -= 1;
            } else {
                self.sorted[w] = new[j - 1];
                j -= 1;
            }
        }
        drop(new);
        self.radix = radix_index(
            self.sorted
                .iter()
                .map(|k| (k.0[0] >> (32 - SEEN_RADIX_BITS)) as usize),
            SEEN_RADIX_BITS,
        );
        self.recent = HashSet::with_capacity_and_hasher(
            (self.sorted.len() / 8).max(MIN_RECENT_IDS),
            Default::default(),
        );
        self.recent_limit = self.recent.capacity();
    }
}

/// How far `--dedupe-window` reaches, in partitions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reach {
    /// `--dedupe-window 0` (or `--no-dedupe`): no earlier run is looked at.
    Nothing,
    /// Partitions at most this many buckets away (0: the event's own partition only).
    Within(i64),
    /// `--partition none`: the whole dataset.
    Everywhere,
}

impl Reach {
    /// A partition lies within the window of another when its whole time range does: with day partitions
    /// and `7d`, the 7 days before and after; with `36h`, one day either side; with `12h`, the same day.
    pub fn new(window: Duration, mode: PartitionMode) -> Reach {
        if window.is_zero() {
            return Reach::Nothing;
        }
        match mode.bucket_micros() {
            None => Reach::Everywhere,
            Some(d) => {
                let w = i64::try_from(window.as_micros()).unwrap_or(i64::MAX);
                Reach::Within(w / d)
            }
        }
    }

    /// True when partition `earlier` is within the window of an event in partition `event`.
    pub fn covers(self, earlier: i64, event: i64) -> bool {
        match self {
            Reach::Nothing => false,
            Reach::Within(k) => earlier.abs_diff(event) <= k.unsigned_abs(),
            Reach::Everywhere => true,
        }
    }
}

/// Parses a `--dedupe-window` / `--vacuum-retention` duration: `7d`, `12h`, `90m`, `1w`, `0`.
pub fn parse_duration(s: &str) -> std::result::Result<Duration, String> {
    humantime::parse_duration(s.trim())
        .map_err(|e| format!("invalid duration {s:?} ({e}): expected e.g. 7d, 12h, 0"))
}

/// Bytes one earlier id takes (its tagged hash).
pub const BYTES_PER_EARLIER_ID: u64 = 16;
const LOW32: u128 = 0xFFFF_FFFF;

/// The key of an id: the top 96 bits of its hash, the partition number in the low 32.
fn key(id: &str, bucket: i64) -> u128 {
    (xxh3_128(id.as_bytes()) & !LOW32) | u128::from(bucket as i32 as u32)
}

/// One batch of loaded ids: sorted keys and a radix index on their top bits.
struct Segment {
    keys: Box<[u128]>,
    /// `radix[p]..radix[p + 1]`: the keys whose top `bits` bits are `p`.
    radix: Box<[u32]>,
    bits: u32,
}

impl Segment {
    fn new(mut keys: Vec<u128>) -> Segment {
        keys.par_sort_unstable();
        // About four keys a slot: one cache line to scan, a quarter of the keys' size for the index.
        let bits = (usize::BITS - keys.len().max(1).leading_zeros())
            .saturating_sub(2)
            .clamp(1, 26);
        let radix = radix_index(keys.iter().map(|k| (k >> (128 - bits)) as usize), bits);
        Segment {
            keys: keys.into_boxed_slice(),
            radix,
            bits,
        }
    }

    /// The partitions (buckets) of the keys whose hash part is `hash96`.
    fn buckets(&self, hash96: u128) -> impl Iterator<Item = i64> + '_ {
        let slot = (hash96 >> (128 - self.bits)) as usize;
        let (from, to) = (self.radix[slot] as usize, self.radix[slot + 1] as usize);
        let slice = &self.keys[from..to];
        let start = slice.partition_point(|k| k & !LOW32 < hash96);
        slice[start..]
            .iter()
            .take_while(move |k| *k & !LOW32 == hash96)
            .map(|k| i64::from(*k as u32 as i32))
    }

    fn bytes(&self) -> u64 {
        (self.keys.len() as u64) * BYTES_PER_EARLIER_ID + (self.radix.len() as u64) * 4
    }
}

/// The ids already loaded by earlier runs in partitions within the window of the partitions this run meets.
pub struct EarlierIds {
    reach: Reach,
    /// Partitions of the dataset that may hold earlier copies and are not loaded yet: bucket -> files.
    pending: BTreeMap<i64, Vec<DataFile>>,
    segments: Vec<Segment>,
    /// Bytes the loaded ids may take (their share of `--memory-limit`).
    budget: u64,
    /// What the budget is, for the message when it is not enough.
    limit_text: String,
    /// Partitions and ids loaded so far (for the report).
    pub partitions_loaded: usize,
    pub ids_loaded: u64,
}

impl EarlierIds {
    /// `partitions`: the dataset's partitions that count as already loaded (bucket, files).
    pub fn new(
        reach: Reach,
        partitions: impl IntoIterator<Item = (i64, Vec<DataFile>)>,
        budget: u64,
        limit_text: String,
    ) -> EarlierIds {
        let pending = match reach {
            Reach::Nothing => BTreeMap::new(),
            _ => partitions.into_iter().collect(),
        };
        EarlierIds {
            reach,
            pending,
            segments: Vec::new(),
            budget,
            limit_text,
            partitions_loaded: 0,
            ids_loaded: 0,
        }
    }

    /// No earlier run to compare with (no window, or nothing in the dataset).
    pub fn is_empty(&self) -> bool {
        self.pending.is_empty() && self.segments.is_empty()
    }

    /// Loads the partitions within the window of `buckets` that are not loaded yet (their `id` column only),
    /// reading their files in parallel on the current pool.
    pub fn ensure(&mut self, buckets: impl IntoIterator<Item = i64>) -> Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let mut wanted: Vec<i64> = Vec::new();
        for b in buckets {
            let in_reach: Vec<i64> = match self.reach {
                Reach::Nothing => Vec::new(),
                Reach::Everywhere => self.pending.keys().copied().collect(),
                Reach::Within(k) => self
                    .pending
                    .range(b.saturating_sub(k)..=b.saturating_add(k))
                    .map(|(p, _)| *p)
                    .collect(),
            };
            for p in in_reach {
                if !wanted.contains(&p) {
                    wanted.push(p);
                }
            }
        }
        if wanted.is_empty() {
            return Ok(());
        }
        let files: Vec<(i64, DataFile)> = wanted
            .iter()
            .filter_map(|p| self.pending.remove(p).map(|fs| (*p, fs)))
            .flat_map(|(p, fs)| fs.into_iter().map(move |f| (p, f)))
            .collect();
        let rows: u64 = files
            .par_iter()
            .map(|(_, f)| f.rows())
            .sum::<Result<u64>>()?;
        let held: u64 = self.segments.iter().map(Segment::bytes).sum();
        let needed = held + rows * BYTES_PER_EARLIER_ID * 5 / 4;
        if needed > self.budget {
            return Err(Error::DedupeWindow {
                ids: self.ids_loaded + rows,
                needed,
                budget: self.budget,
                limit: self.limit_text.clone(),
            });
        }
        let parts: Vec<Vec<u128>> = files
            .par_iter()
            .map(|(bucket, f)| read_keys(f, *bucket))
            .collect::<Result<_>>()?;
        let mut keys = Vec::with_capacity(parts.iter().map(Vec::len).sum());
        for p in parts {
            keys.extend(p);
        }
        self.partitions_loaded += wanted.len();
        self.ids_loaded += keys.len() as u64;
        self.segments.push(Segment::new(keys));
        Ok(())
    }

    /// The partition of an earlier copy of `id` within the window of `bucket`, if there is one. Only
    /// partitions met through [`EarlierIds::ensure`] are looked at.
    pub fn find(&self, id: &str, bucket: i64) -> Option<i64> {
        let hash96 = key(id, 0) & !LOW32;
        self.segments
            .iter()
            .flat_map(|s| s.buckets(hash96))
            .find(|b| self.reach.covers(*b, bucket))
    }
}

/// The keys of the non-empty ids of one `groups` file (its `id` column only).
fn read_keys(file: &DataFile, bucket: i64) -> Result<Vec<u128>> {
    let err = |message: String| file.error(message);
    let builder = file.reader()?;
    let id = builder
        .schema()
        .fields()
        .iter()
        .position(|f| f.name() == crate::schema::Col::Id.column().name)
        .ok_or_else(|| err("no id column".into()))?;
    let mask = ProjectionMask::roots(builder.parquet_schema(), [id]);
    let rows = builder.metadata().file_metadata().num_rows().max(0) as usize;
    let reader = builder
        .with_projection(mask)
        .with_batch_size(16_384)
        .build()
        .map_err(|e| file.cause(e))?;
    let mut keys = Vec::with_capacity(rows);
    for batch in reader {
        let batch = batch.map_err(|e| file.cause(e))?;
        let ids = batch
            .column(0)
            .as_any()
            .downcast_ref::<StringArray>()
            .ok_or_else(|| err("the id column is not text".into()))?;
        for i in 0..ids.len() {
            if ids.is_valid(i) && !ids.value(i).is_empty() {
                keys.push(key(ids.value(i), bucket));
            }
        }
    }
    Ok(keys)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reach_of_a_window() {
        let day = PartitionMode::Day;
        let d = |s: &str| parse_duration(s).unwrap();
        assert_eq!(Reach::new(d("7d"), day), Reach::Within(7));
        assert_eq!(Reach::new(d("36h"), day), Reach::Within(1));
        assert_eq!(Reach::new(d("12h"), day), Reach::Within(0));
        assert_eq!(Reach::new(d("0"), day), Reach::Nothing);
        assert_eq!(Reach::new(d("12h"), PartitionMode::Hour), Reach::Within(12));
        assert_eq!(Reach::new(d("1w"), PartitionMode::None), Reach::Everywhere);
        assert_eq!(Reach::new(d("0"), PartitionMode::None), Reach::Nothing);
        assert!(Reach::Within(7).covers(10, 17) && Reach::Within(7).covers(17, 10));
        assert!(!Reach::Within(7).covers(10, 18));
        assert!(Reach::Within(0).covers(5, 5) && !Reach::Within(0).covers(5, 6));
        assert!(!Reach::Nothing.covers(5, 5));
        assert!(parse_duration("soon").is_err());
        assert!(
            parse_duration("7").is_err(),
            "a number needs a unit (0 aside)"
        );
    }

    #[test]
    fn segments_find_every_key_and_its_partitions() {
        let ids: Vec<String> = (0..5000).map(|i| format!("m-{i}")).collect();
        let mut keys: Vec<u128> = ids.iter().map(|id| key(id, 100)).collect();
        keys.push(key("m-7", 90)); // the same id in another partition too
        keys.push(key("neg", -3));
        let seg = Segment::new(keys);
        for id in &ids {
            let h = key(id, 0) & !LOW32;
            assert!(seg.buckets(h).any(|b| b == 100), "{id}");
        }
        let mut m7: Vec<i64> = seg.buckets(key("m-7", 0) & !LOW32).collect();
        m7.sort();
        assert_eq!(m7, [90, 100]);
        assert_eq!(
            seg.buckets(key("neg", 0) & !LOW32).collect::<Vec<_>>(),
            [-3]
        );
        assert_eq!(seg.buckets(key("absent", 0) & !LOW32).count(), 0);
        let earlier = EarlierIds {
            reach: Reach::Within(7),
            pending: BTreeMap::new(),
            segments: vec![seg],
            budget: u64::MAX,
            limit_text: String::new(),
            partitions_loaded: 1,
            ids_loaded: 5002,
        };
        assert_eq!(earlier.find("m-1", 107), Some(100));
        assert_eq!(earlier.find("m-1", 108), None, "outside the window");
        assert_eq!(earlier.find("m-7", 83), Some(90));
        assert_eq!(earlier.find("absent", 100), None);
    }

    #[test]
    fn seen_ids_keep_every_id_across_merges() {
        let mut seen = SeenIds::default();
        let n = 3 * MIN_RECENT_IDS + 12_345;
        for i in 0..n {
            assert!(seen.insert(&format!("id-{i}")), "id-{i} is new");
            // An id seen long ago (in the sorted part by now) and one just added (in the table).
            if i > 0 {
                assert!(!seen.insert(&format!("id-{}", i / 2)));
                assert!(!seen.insert(&format!("id-{}", i - 1)));
            }
        }
        assert!(
            !seen.sorted.is_empty(),
            "the table was merged at least once"
        );
        assert!(
            seen.sorted.windows(2).all(|w| w[0] < w[1]),
            "sorted, no repeats"
        );
        assert_eq!(seen.len(), n);
        for i in (0..n).step_by(97) {
            assert!(!seen.insert(&format!("id-{i}")), "id-{i} is still known");
        }
        assert!(seen.insert("id-never"));
        assert_eq!(seen.len(), n + 1);
    }
}
