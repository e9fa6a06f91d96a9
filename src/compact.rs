//! Compaction's plan: which files of a partition are rewritten together, in which order, into how many files.
//!
//! Why this module exists: every night adds a file per partition (N with N shards, more with late data), and
//! readers slow down with the count. Both table formats rewrite small files the same way; only how the
//! result is published differs ([`crate::table`]). So the rules live here once, as plain functions over the
//! files' sizes and times:
//! - the order of a partition's rows is the order they were loaded in: files by the time they were written
//!   (hive: the file's modification time; Delta: the `modificationTime` of its Add), then by name, and each
//!   file's rows in their order. A compacted file takes the time of its first source, so its place in that
//!   order is the place its rows had.
//! - a file is small when it is under half the target size. Runs of consecutive small files (two or more)
//!   are rewritten; a large file between them stays where it is, so the order holds.
//! - a run is cut into files of about the target size, sources kept whole (a file is never split).

/// A data file of a partition, as the plan sees it.
#[derive(Debug, Clone)]
pub struct Candidate {
    /// Relative to the table (`dt=.../part-...parquet`).
    pub path: String,
    pub bytes: u64,
    pub rows: u64,
    /// When it was written (milliseconds since the epoch for Delta, nanoseconds for hive: compared only
    /// within one format).
    pub written: i128,
}

/// One file the compaction writes: its sources, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Output {
    /// Indexes into the partition's candidates, in row order.
    pub sources: Vec<usize>,
}

/// What compaction does to one partition.
#[derive(Debug, Clone)]
pub struct PartitionPlan {
    /// `dt=...[/hr=..]` (empty without partitioning).
    pub partition: String,
    /// Its files, in row order.
    pub files: Vec<Candidate>,
    /// The files written (empty: the partition is left as it is).
    pub outputs: Vec<Output>,
}

impl PartitionPlan {
    /// Files the partition has now, and will have after.
    pub fn files_before(&self) -> usize {
        self.files.len()
    }

    pub fn files_after(&self) -> usize {
        self.files.len() - self.rewritten().count() + self.outputs.len()
    }

    /// The candidates rewritten.
    pub fn rewritten(&self) -> impl Iterator<Item = &Candidate> {
        self.outputs
            .iter()
            .flat_map(|o| o.sources.iter().map(|&i| &self.files[i]))
    }

    pub fn bytes_rewritten(&self) -> u64 {
        self.rewritten().map(|c| c.bytes).sum()
    }

    pub fn rows_rewritten(&self) -> u64 {
        self.rewritten().map(|c| c.rows).sum()
    }

    /// The time an output takes: that of its first source.
    pub fn written_of(&self, o: &Output) -> i128 {
        o.sources.first().map_or(0, |&i| self.files[i].written)
    }
}

/// Sorts a partition's files into row order: by the time written, then by name.
pub fn in_row_order(files: &mut [Candidate]) {
    files.sort_by(|a, b| a.written.cmp(&b.written).then_with(|| a.path.cmp(&b.path)));
}

/// True for a file worth rewriting with its neighbours.
pub fn is_small(bytes: u64, target: u64) -> bool {
    bytes < target / 2
}

/// The plan for one partition's files (sorted into row order here): runs of two or more consecutive small
/// files, each cut into outputs of about `target` bytes.
pub fn plan(partition: String, mut files: Vec<Candidate>, target: u64) -> PartitionPlan {
    in_row_order(&mut files);
    let mut outputs = Vec::new();
    let mut run: Vec<usize> = Vec::new();
    let flush = |run: &mut Vec<usize>, outputs: &mut Vec<Output>| {
        if run.len() >= 2 {
            let mut current = Output {
                sources: Vec::new(),
            };
            let mut bytes = 0u64;
            for &i in run.iter() {
                if !current.sources.is_empty() && bytes + files[i].bytes > target {
                    outputs.push(std::mem::replace(
                        &mut current,
                        Output {
                            sources: Vec::new(),
                        },
                    ));
                    bytes = 0;
                }
                bytes += files[i].bytes;
                current.sources.push(i);
            }
            outputs.push(current);
        }
        run.clear();
    };
    for (i, f) in files.iter().enumerate() {
        if is_small(f.bytes, target) {
            run.push(i);
        } else {
            flush(&mut run, &mut outputs);
        }
    }
    flush(&mut run, &mut outputs);
    // An output of one source would rewrite a file into itself.
    outputs.retain(|o| o.sources.len() >= 2);
    PartitionPlan {
        partition,
        files,
        outputs,
    }
}

/// Where a compaction's output is staged, and named once published: `part-compact-<tag>-<first source's
/// name hash>-<n>.parquet`, unique for each output of each compaction.
pub fn output_name(tag: &str, plan: &PartitionPlan, o: &Output, n: usize) -> String {
    let first = o
        .sources
        .first()
        .map_or("", |&i| plan.files[i].path.as_str());
    let h = xxhash_rust::xxh3::xxh3_64(first.as_bytes());
    format!("part-compact-{tag}-{h:016x}-{n:05}.parquet")
}

/// The partitions a `--from`/`--to` range keeps (dates inclusive; a partition with no date is always kept).
#[derive(Debug, Clone, Default)]
pub struct DateRange {
    pub from: Option<chrono::NaiveDate>,
    pub to: Option<chrono::NaiveDate>,
}

impl DateRange {
    pub fn keeps(&self, partition: &str) -> bool {
        let Some(date) = partition
            .split('/')
            .find_map(|p| p.strip_prefix("dt="))
            .and_then(|d| chrono::NaiveDate::parse_from_str(d, "%Y-%m-%d").ok())
        else {
            return true;
        };
        self.from.is_none_or(|f| date >= f) && self.to.is_none_or(|t| date <= t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    fn file(name: &str, mib: u64, written: i128) -> Candidate {
        Candidate {
            path: format!("dt=2026-11-01/{name}"),
            bytes: mib * MIB,
            rows: mib * 1000,
            written,
        }
    }

    fn names(p: &PartitionPlan) -> Vec<Vec<&str>> {
        p.outputs
            .iter()
            .map(|o| {
                o.sources
                    .iter()
                    .map(|&i| p.files[i].path.rsplit('/').next().unwrap())
                    .collect()
            })
            .collect()
    }

    #[test]
    fn small_files_are_merged_in_the_order_they_were_written() {
        // Written c, a, b (times 1, 2, 3): the order is by time, not by name.
        let p = plan(
            "dt=2026-11-01".into(),
            vec![file("a", 1, 2), file("b", 1, 3), file("c", 1, 1)],
            256 * MIB,
        );
        assert_eq!(names(&p), vec![vec!["c", "a", "b"]]);
        assert_eq!((p.files_before(), p.files_after()), (3, 1));
        assert_eq!(p.rows_rewritten(), 3000);
        assert_eq!(p.written_of(&p.outputs[0]), 1);
    }

    #[test]
    fn a_large_file_between_small_ones_stays_in_its_place() {
        let p = plan(
            "".into(),
            vec![
                file("a", 10, 1),
                file("b", 10, 2),
                file("big", 200, 3),
                file("c", 10, 4),
                file("d", 10, 5),
                file("e", 10, 6),
            ],
            256 * MIB,
        );
        assert_eq!(names(&p), vec![vec!["a", "b"], vec!["c", "d", "e"]]);
        assert_eq!((p.files_before(), p.files_after()), (6, 3));
    }

    #[test]
    fn runs_are_cut_near_the_target_and_a_lone_small_file_is_left_alone() {
        let p = plan(
            "".into(),
            (0..10).map(|i| file(&format!("f{i}"), 100, i)).collect(),
            256 * MIB,
        );
        // 100 MiB each: two a file (a third would pass 256 MiB).
        assert_eq!(p.outputs.len(), 5);
        assert!(p.outputs.iter().all(|o| o.sources.len() == 2));
        // Compacting the result again does nothing: every file is now at least half the target.
        let again = plan(
            "".into(),
            (0..5).map(|i| file(&format!("g{i}"), 200, i)).collect(),
            256 * MIB,
        );
        assert!(again.outputs.is_empty());
        let lone = plan(
            "".into(),
            vec![file("a", 1, 1), file("big", 300, 2)],
            256 * MIB,
        );
        assert!(lone.outputs.is_empty());
        assert_eq!(lone.files_after(), 2);
    }

    #[test]
    fn a_date_range_keeps_its_days_inclusive() {
        let r = DateRange {
            from: chrono::NaiveDate::from_ymd_opt(2026, 11, 2),
            to: chrono::NaiveDate::from_ymd_opt(2026, 11, 3),
        };
        assert!(!r.keeps("dt=2026-11-01"));
        assert!(r.keeps("dt=2026-11-02/hr=05"));
        assert!(r.keeps("dt=2026-11-03"));
        assert!(!r.keeps("dt=2026-11-04"));
        assert!(r.keeps(""));
    }
}
