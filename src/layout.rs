//! The dataset's layout, the vocabulary every layer shares: how it is partitioned (`--partition`), its codec
//! (`--compression`), its table format (`--format`) and the shape a first run records, and the names of its
//! folders and of a run's files in them.
//!
//! Why this module exists: these names and kinds are decided by the command line, written by the pipeline,
//! published by the table formats and read back by the next run. Kept here, at the bottom, every layer can use
//! them without reaching into the layer that happens to act on them.

use parquet::basic::{Compression, GzipLevel, ZstdLevel};
use serde::{Deserialize, Serialize};

use crate::values::{self, Micros};

/// The table folders of a dataset (in a hive one, links into the current version).
pub const GROUPS_DIR: &str = "groups";
pub const REJECTS_DIR: &str = "_rejects";
pub const RUNS_DIR: &str = "_runs";
/// Delta: the folder of a dataset's privacy records (pseudonymisation settings, suppressed ids).
pub const PRIVACY_DIR: &str = "_privacy";
/// The `accounts` table's folder.
pub const ACCOUNTS_DIR: &str = "accounts";
/// The tool's hidden state folder inside a hive output.
pub const STATE_DIR: &str = ".group-loader";
/// The most `extra_traits` keys one group keeps in `accounts`: the first this many in name order.
pub const MAX_EXTRA_KEYS: usize = 1000;

/// The options that decide a dataset's layout, recorded by its first run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shape {
    pub format: Format,
    pub partition: PartitionMode,
}

/// `--format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// A Hive-partitioned folder of Parquet files (local output only).
    Hive,
    /// Delta Lake tables.
    Delta,
    /// One Parquet file of the groups table, no dataset (an ad hoc conversion; also chosen by an --output
    /// ending in .parquet).
    Parquet,
}

impl Format {
    pub fn name(self) -> &'static str {
        match self {
            Format::Hive => "hive",
            Format::Delta => "delta",
            Format::Parquet => "parquet",
        }
    }
}

/// How the dataset is partitioned (`--partition`).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum PartitionMode {
    /// `groups/dt=YYYY-MM-DD/`
    Day,
    /// `groups/dt=YYYY-MM-DD/hr=HH/`
    Hour,
    /// All files directly in `groups/`.
    None,
}

impl PartitionMode {
    const MICROS_PER_HOUR: i64 = 3_600_000_000;

    /// The bucket a time falls in (days or hours since the epoch; always 0 with `none`).
    pub fn bucket(self, t: Micros) -> i64 {
        match self.bucket_micros() {
            Some(d) => t.div_euclid(d),
            None => 0,
        }
    }

    /// How long one partition lasts, in microseconds (`None`: one partition holds all time).
    pub fn bucket_micros(self) -> Option<i64> {
        match self {
            PartitionMode::Day => Some(24 * Self::MICROS_PER_HOUR),
            PartitionMode::Hour => Some(Self::MICROS_PER_HOUR),
            PartitionMode::None => None,
        }
    }

    /// The bucket of a partition path (`dt=2026-11-25`, `dt=2026-11-25/hr=07`, or empty), if it is one of
    /// this mode's paths.
    pub fn bucket_of_path(self, path: &str) -> Option<i64> {
        let parse_day = |dt: &str| {
            let date =
                chrono::NaiveDate::parse_from_str(dt.strip_prefix("dt=")?, "%Y-%m-%d").ok()?;
            Some(date.and_hms_opt(0, 0, 0)?.and_utc().timestamp_micros())
        };
        let t = match self {
            PartitionMode::None => return path.is_empty().then_some(0),
            PartitionMode::Day if !path.contains('/') => parse_day(path)?,
            PartitionMode::Hour => {
                let (dt, hr) = path.split_once('/')?;
                let hr: i64 = hr
                    .strip_prefix("hr=")
                    .filter(|h| h.len() == 2)?
                    .parse()
                    .ok()?;
                if !(0..24).contains(&hr) {
                    return None;
                }
                parse_day(dt)? + hr * Self::MICROS_PER_HOUR
            }
            PartitionMode::Day => return None,
        };
        // Only dates of years 0001 to 9999: what every reader's date type holds.
        values::in_range(t)?;
        let bucket = self.bucket(t);
        (self.path(t) == path).then_some(bucket)
    }

    /// The partition path of a bucket.
    pub fn path_of_bucket(self, bucket: i64) -> String {
        self.path(bucket.saturating_mul(self.bucket_micros().unwrap_or(0)))
    }

    /// The partition path of a time: `dt=2026-11-25`, `dt=2026-11-25/hr=07`, or empty.
    pub fn path(self, t: Micros) -> String {
        let Some((y, m, d, h)) = values::civil(t) else {
            return String::new();
        };
        match self {
            PartitionMode::Day => format!("dt={y:04}-{m:02}-{d:02}"),
            PartitionMode::Hour => format!("dt={y:04}-{m:02}-{d:02}/hr={h:02}"),
            PartitionMode::None => String::new(),
        }
    }
}

/// Parquet compression codec (`--compression`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Codec {
    Zstd,
    Snappy,
    Gzip,
    /// LZ4_RAW, the LZ4 codec current Parquet readers agree on.
    Lz4,
    None,
}

impl Codec {
    pub(crate) fn parquet(self) -> Compression {
        match self {
            Codec::Zstd => Compression::ZSTD(ZstdLevel::default()),
            Codec::Snappy => Compression::SNAPPY,
            Codec::Gzip => Compression::GZIP(GzipLevel::default()),
            Codec::Lz4 => Compression::LZ4_RAW,
            Codec::None => Compression::UNCOMPRESSED,
        }
    }
}

/// The name (without extension) of a run's report in `_runs/` and rejects in `_rejects/`: the time it started,
/// then its id (`2026-12-02T051233.123Z-3f9a...`), so that `ls` lists runs in the order they started and every
/// attempt of a run has files of its own.
pub fn run_stem(started_at: &str, run_id: &str) -> String {
    format!("{}-{run_id}", started_at.replace(':', ""))
}

/// Whether `name` (a file of `_runs/` or `_rejects/`) belongs to run `run_id`.
pub fn is_run_file(name: &str, run_id: &str) -> bool {
    name.rsplit_once('.')
        .is_some_and(|(stem, _)| stem.ends_with(&format!("-{run_id}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_paths() {
        let t = values::parse_time_str("2026-11-25T07:30:00Z").unwrap();
        assert_eq!(PartitionMode::Day.path(t), "dt=2026-11-25");
        assert_eq!(PartitionMode::Hour.path(t), "dt=2026-11-25/hr=07");
        assert_eq!(PartitionMode::None.path(t), "");
        // The last microsecond of a day is still that day; before the epoch too.
        let end = values::parse_time_str("2026-11-25T23:59:59.999999Z").unwrap();
        assert_eq!(PartitionMode::Day.bucket(end), PartitionMode::Day.bucket(t));
        assert_eq!(PartitionMode::Day.path(-1), "dt=1969-12-31");
        assert_eq!(PartitionMode::Hour.path(-1), "dt=1969-12-31/hr=23");
    }

    #[test]
    fn partition_paths_round_trip_through_buckets() {
        for mode in [PartitionMode::Day, PartitionMode::Hour] {
            for t in [
                "2026-11-25T07:30:00Z",
                "1969-12-31T23:00:00Z",
                "0001-01-01T00:00:00Z",
            ] {
                let t = values::parse_time_str(t).unwrap();
                let b = mode.bucket(t);
                assert_eq!(mode.bucket_of_path(&mode.path(t)), Some(b), "{mode:?} {t}");
                assert_eq!(mode.path_of_bucket(b), mode.path(t));
            }
        }
        // 2026-11-25 is day 20,782 since the epoch (date -u -d 2026-11-25 +%s = 1795564800 = 20,782 x 86,400).
        assert_eq!(
            PartitionMode::Day.bucket_of_path("dt=2026-11-25"),
            Some(20_782)
        );
        assert_eq!(
            PartitionMode::Hour.bucket_of_path("dt=2026-11-25/hr=07"),
            Some(20_782 * 24 + 7)
        );
        for (mode, bad) in [
            (PartitionMode::Day, "dt=2026-11-25/hr=07"),
            (PartitionMode::Day, "dt=2026-02-30"),
            (PartitionMode::Day, "dt=2026-1-5"),
            (PartitionMode::Hour, "dt=2026-11-25"),
            (PartitionMode::Hour, "dt=2026-11-25/hr=24"),
            (PartitionMode::Hour, "dt=2026-11-25/hr=7"),
            (PartitionMode::None, "dt=2026-11-25"),
            (PartitionMode::Day, "dt=10000-01-01"),
            (PartitionMode::Day, "dt=0000-12-31"),
            (PartitionMode::Hour, "dt=10000-01-01/hr=00"),
        ] {
            assert_eq!(mode.bucket_of_path(bad), None, "{mode:?} {bad}");
        }
        assert_eq!(PartitionMode::None.bucket_of_path(""), Some(0));
    }
}
