//! The `accounts` fold during ingest: the run's rows folded into accounts while the writer holds them, so
//! that the merge after the run does not decode the staged `groups` files again.
//!
//! Why this module exists: reading the run's files back (and routing them to buckets when there are many) was
//! about a quarter of the CPU of a default run. The writer shows every row group to a [`Fold`] before encoding
//! it ([`crate::writer::RowGroupObserver`]), so the fold sees exactly the rows the staged files hold, with the
//! same cleared-traits masks the merge would read from them. The register rule is commutative, associative
//! and idempotent (the parent module), so row groups may be folded in any order, on any thread, and the
//! accounts come out the same as from the files.
//!
//! Memory. The accounts are kept in [`SHARDS`] shards by the low bits of the group's hash (a bucket of the
//! snapshot, `hash mod n`, is then a set of whole shards, or a part of one), each behind its own lock. When
//! their estimated size passes the budget, the fold gives up: it drops what it holds, ignores the rest of the
//! run, and the merge reads the run's files back as it does without a fold. Spilling the folded accounts
//! instead (in the snapshot's format, read back by the merge) was measured and cost more than it saved: on a
//! million events of a million groups it took the default job from 7.0 to 11.5 s of wall and 13 to 18.5 s of
//! CPU, writing and re-parsing each account's full state where the merge's routing copies a few columns.
//! A run's fold is therefore bounded by the budget, and what it saves is the runs whose groups fit it: the
//! nightly case of many events on fewer groups.

use std::collections::HashSet;
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use arrow::array::RecordBatch;

use crate::datafile::DataFile;
use crate::error::{Error, Result};
use crate::writer::RowGroupObserver;

use super::files::{EventColumns, bucket, group_hash};
use super::{Account, Bucket};

/// Shards of the fold (a power of two).
pub const SHARDS: u32 = 64;

/// The run's rows folded into accounts as they are written (see the module doc). Shown every row group by the
/// writer; [`Fold::finish`] gives what the merge reads.
pub struct Fold {
    shards: Vec<Mutex<Shard>>,
    /// The estimated memory of every shard's accounts.
    bytes: AtomicUsize,
    budget: usize,
    /// Set when the accounts outgrew the budget: the fold holds nothing from then on.
    gave_up: AtomicBool,
    /// Past this many distinct groups the merge stops counting them (it counts rows instead), as when it reads
    /// the groups of files.
    hash_cap: usize,
    rows: AtomicU64,
}

#[derive(Default)]
struct Shard {
    bucket: Bucket,
    bytes: usize,
}

impl Fold {
    /// A fold that holds at most about `budget` bytes of accounts.
    pub fn new(budget: usize, hash_cap: usize) -> Fold {
        Fold {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            bytes: AtomicUsize::new(0),
            budget,
            gave_up: AtomicBool::new(false),
            hash_cap,
            rows: AtomicU64::new(0),
        }
    }

    /// The folded accounts, for the merge; `None` when the fold gave up (the merge reads the files).
    pub fn finish(self) -> Result<Option<Folded>> {
        if self.gave_up.into_inner() {
            return Ok(None);
        }
        let shards: Vec<Bucket> = self
            .shards
            .into_iter()
            .map(|s| s.into_inner().map(|s| s.bucket).map_err(|_| poisoned()))
            .collect::<Result<_>>()?;
        let mut hashes = Some(HashSet::new());
        for shard in &shards {
            if let Some(set) = &mut hashes {
                set.extend(shard.accounts.keys().map(|g| group_hash(g)));
                if set.len() > self.hash_cap {
                    hashes = None;
                }
            }
        }
        Ok(Some(Folded {
            shards,
            hashes,
            rows: self.rows.into_inner(),
        }))
    }

    /// Drops every shard's accounts: the fold is over budget.
    fn give_up(&self) -> Result<()> {
        self.gave_up.store(true, Ordering::Release);
        for shard in &self.shards {
            let mut shard = shard.lock().map_err(|_| poisoned())?;
            self.bytes.fetch_sub(shard.bytes, Ordering::AcqRel);
            *shard = Shard::default();
        }
        Ok(())
    }
}

impl RowGroupObserver for Fold {
    fn row_group(&self, file: &Path, batch: &RecordBatch, cleared: &[(u64, u32)]) -> Result<()> {
        if self.gave_up.load(Ordering::Acquire) {
            return Ok(());
        }
        let path = DataFile::Local(file.to_path_buf());
        let columns = EventColumns::new(batch, &path)?;
        let n = batch.num_rows();
        let mut masks = Vec::new();
        if !cleared.is_empty() {
            masks = vec![0u32; n];
            for &(r, mask) in cleared {
                if let Some(m) = masks.get_mut(r as usize) {
                    *m |= mask;
                }
            }
        }
        // Rows by shard, so that each shard is locked once per row group.
        let mut order: Vec<(u32, u32)> = (0..n)
            .map(|r| {
                let g = columns.group(r)?;
                Ok(((group_hash(g) & u64::from(SHARDS - 1)) as u32, r as u32))
            })
            .collect::<Result<_>>()?;
        order.sort_unstable();
        for rows in order.chunk_by(|a, b| a.0 == b.0) {
            let mut shard = self.shards[rows[0].0 as usize]
                .lock()
                .map_err(|_| poisoned())?;
            // (Checked under the lock: once `give_up` has emptied this shard, nothing is added to it again.)
            if self.gave_up.load(Ordering::Acquire) {
                return Ok(());
            }
            let mut grown = 0;
            for &(_, r) in rows {
                let r = r as usize;
                let event = columns.event(r, masks.get(r).copied().unwrap_or(0));
                grown += shard.bucket.apply_measured(columns.group(r)?, &event);
            }
            shard.bytes += grown;
            // (Counted under the shard's lock, so that emptying it subtracts exactly what was added.)
            self.bytes.fetch_add(grown, Ordering::AcqRel);
        }
        self.rows.fetch_add(n as u64, Ordering::Relaxed);
        if self.bytes.load(Ordering::Acquire) > self.budget {
            self.give_up()?;
        }
        Ok(())
    }
}

fn poisoned() -> Error {
    Error::Internal("a thread folding accounts panicked".into())
}

/// The run's rows as folded accounts, by shard.
pub struct Folded {
    shards: Vec<Bucket>,
    hashes: Option<HashSet<u64>>,
    rows: u64,
}

impl Folded {
    /// The rows folded.
    pub(super) fn rows(&self) -> u64 {
        self.rows
    }

    /// The hashes of the groups folded, `None` when there were more than the cap.
    pub(super) fn hashes(&self) -> Option<&HashSet<u64>> {
        self.hashes.as_ref()
    }

    /// Merges the folded accounts of bucket `b` of `n` into `into`.
    pub(super) fn absorb_into(&self, b: u32, n: u32, into: &mut Bucket) -> Result<()> {
        // The shards of bucket `b`: those equal to it modulo `n` (n <= SHARDS), or the one it lies in.
        let m = n.min(SHARDS) - 1;
        for s in (0..SHARDS).filter(|s| s & m == b & m) {
            let shard = &self.shards[s as usize];
            for (group, acc) in &shard.accounts {
                if n > SHARDS && bucket(group, n) != b {
                    continue;
                }
                match into.accounts.get_mut(group) {
                    Some(existing) => existing.absorb_from(acc, &shard.keys, &mut into.keys),
                    None => {
                        let mut fresh = Account::new(acc.first_seen);
                        fresh.absorb_from(acc, &shard.keys, &mut into.keys);
                        into.accounts.insert(group.clone(), fresh);
                    }
                }
            }
        }
        Ok(())
    }
}
