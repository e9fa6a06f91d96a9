//! `--shard K/N`: which input files shard `K` of `N` loads.
//!
//! Why this module exists: when one night's export outgrows one machine, N copies of the job run on the
//! scheduler users already have (a Kubernetes Indexed Job, an AWS Batch array job), each with its own index
//! and nothing else in common. So every shard lists the same inputs and computes the same split from that
//! listing alone; no shard talks to another, and the Delta commits are the only coordination.
//!
//! The rule (also in the README): the listing's files are taken largest first (ties in listing order) and each
//! is given to the shard holding the fewest bytes so far (ties to the lowest index): the greedy "longest
//! processing time" schedule, whose largest shard is at most 4/3 of the best possible split. A file is never
//! split. A shard then reads its files in listing order, like any run.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use xxhash_rust::xxh3::Xxh3;

use crate::error::{Error, Result};
use crate::input::Source;
use crate::options::Shard;
use crate::report::ShardReport;

/// The sources of the listing that shard `shard` loads, in listing order, and what the report says of them.
/// Standard input cannot be shared out (exit 2).
pub fn share(listing: Vec<Source>, shard: Shard) -> Result<(Vec<Source>, ShardReport)> {
    let mut sizes = Vec::with_capacity(listing.len());
    let mut hash = Xxh3::new();
    for source in &listing {
        if matches!(source, Source::Stdin | Source::SpooledStdin(_)) {
            return Err(Error::Usage(
                "--shard cannot share out standard input (-): give the shards files or URLs".into(),
            ));
        }
        let size = source.size().ok_or_else(|| {
            Error::Usage(format!(
                "{}: its size is unknown, so it cannot be shared out",
                source.name()
            ))
        })?;
        let name = source.name();
        hash.update(&(name.len() as u64).to_le_bytes());
        hash.update(name.as_bytes());
        hash.update(&size.to_le_bytes());
        sizes.push(size);
    }
    let owners = assign(&sizes, shard.count);
    let listed_bytes = sizes.iter().sum();
    let listed_files = listing.len();
    let mine: Vec<(Source, u64)> = listing
        .into_iter()
        .zip(sizes)
        .zip(owners)
        .filter(|(_, owner)| *owner == shard.index)
        .map(|(pair, _)| pair)
        .collect();
    let report = ShardReport {
        index: shard.index,
        count: shard.count,
        files: mine.len(),
        bytes: mine.iter().map(|(_, size)| size).sum(),
        listed_files,
        listed_bytes,
        listing: format!("{:016x}", hash.digest()),
    };
    Ok((mine.into_iter().map(|(s, _)| s).collect(), report))
}

/// The shard of each file (by position in the listing): largest first, each to the shard with the fewest bytes
/// so far, ties to the earlier file and the lower shard.
pub fn assign(sizes: &[u64], count: u32) -> Vec<u32> {
    let mut order: Vec<usize> = (0..sizes.len()).collect();
    order.sort_by_key(|&i| (Reverse(sizes[i]), i));
    // A min-heap of (bytes so far, shard index).
    let mut loads: BinaryHeap<Reverse<(u64, u32)>> = (0..count).map(|k| Reverse((0, k))).collect();
    let mut owners = vec![0; sizes.len()];
    for i in order {
        if let Some(Reverse((bytes, k))) = loads.pop() {
            owners[i] = k;
            loads.push(Reverse((bytes + sizes[i], k)));
        }
    }
    owners
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    #[test]
    fn k_of_n_is_parsed_and_checked() {
        assert_eq!("2/4".parse(), Ok(Shard { index: 2, count: 4 }));
        assert_eq!("0/1".parse(), Ok(Shard { index: 0, count: 1 }));
        for bad in [
            "4/4", "5/4", "0/0", "a/4", "1/b", "-1/4", "1", "", "1/2/3", "1.5/4",
        ] {
            assert!(bad.parse::<Shard>().is_err(), "{bad}");
        }
        assert!("4/4".parse::<Shard>().unwrap_err().contains("0 to 3"));
    }

    #[test]
    fn every_file_goes_to_exactly_one_shard_and_the_split_is_balanced() {
        // Sizes from a small pseudo-random generator: a night's export, files of uneven size.
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let sizes: Vec<u64> = (0..200)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                1_000 + x % 5_000_000
            })
            .collect();
        for n in [1u32, 2, 3, 4, 7, 16] {
            let owners = assign(&sizes, n);
            assert!(owners.iter().all(|&k| k < n));
            let mut loads = vec![0u64; n as usize];
            for (i, &k) in owners.iter().enumerate() {
                loads[k as usize] += sizes[i];
            }
            assert_eq!(loads.iter().sum::<u64>(), sizes.iter().sum::<u64>());
            // LPT's guarantee: no shard exceeds the ideal share by more than the largest file.
            let ideal = sizes.iter().sum::<u64>() / n as u64;
            let largest = *sizes.iter().max().unwrap();
            assert!(
                loads.iter().all(|&l| l <= ideal + largest),
                "{n}: {loads:?}"
            );
            // The same listing gives the same split.
            assert_eq!(assign(&sizes, n), owners);
        }
    }

    #[test]
    fn largest_first_to_the_lightest_shard() {
        // 10 -> 0, 8 -> 1, 7 -> 1 (8 < 10), 5 -> 0 (10 < 15); then the two 1s in listing order: the first to
        // shard 0 (15 = 15, the lower index), the second to shard 1 (15 < 16).
        assert_eq!(assign(&[5, 10, 1, 8, 7, 1], 2), vec![0, 0, 0, 1, 1, 1]);
        // More shards than files: the rest are empty.
        assert_eq!(assign(&[3, 3], 4), vec![0, 1]);
        assert_eq!(assign(&[], 3), Vec::<u32>::new());
    }

    #[test]
    fn shares_keep_listing_order_and_refuse_stdin() {
        let dir = tempfile::tempdir().unwrap();
        let files: Vec<PathBuf> = [("a", 30), ("b", 10), ("c", 25), ("d", 5)]
            .iter()
            .map(|(name, len)| {
                let p = dir.path().join(name);
                std::fs::write(&p, vec![b'\n'; *len]).unwrap();
                p
            })
            .collect();
        let listing = || files.iter().cloned().map(Source::File).collect::<Vec<_>>();
        let names = |s: &[Source]| s.iter().map(|s| s.name()).collect::<Vec<_>>();
        let (zero, r0) = share(listing(), Shard { index: 0, count: 2 }).unwrap();
        let (one, r1) = share(listing(), Shard { index: 1, count: 2 }).unwrap();
        // a (30) -> 0, c (25) -> 1, b (10) -> 1, d (5) -> 0.
        assert_eq!(
            names(&zero),
            names(&[listing().remove(0), listing().remove(3)])
        );
        assert_eq!(
            names(&one),
            names(&[listing().remove(1), listing().remove(2)])
        );
        assert_eq!(
            (r0.files, r0.bytes, r1.bytes, r0.listed_bytes),
            (2, 35, 35, 70)
        );
        assert_eq!(r0.listing, r1.listing);
        let err = share(vec![Source::Stdin], Shard { index: 0, count: 2 }).unwrap_err();
        assert_eq!(err.exit_code(), 2);
    }
}
