//! Column statistics of a data file, for its Add action: row counts, null counts, and min/max
//! where they are exact, so that readers skip files.

use std::path::Path;

use parquet::file::reader::{FileReader, SerializedFileReader};
use parquet::file::statistics::Statistics;
use serde_json::{Map, Value};

use crate::error::{Error, Result};

/// Strings longer than this are not given min/max (Delta readers compare prefixes; an exact value or
/// nothing is always safe).
const MAX_STRING_STAT: usize = 32;

/// `(rows, stats JSON)` of a Parquet file: `numRecords`, `nullCount` of every column, and `minValues` /
/// `maxValues` of the time columns (to the millisecond, min rounded down and max up) and of text columns
/// whose values are short.
pub fn of_file(path: &Path) -> Result<(u64, String)> {
    let file = std::fs::File::open(path).map_err(Error::io("opening", path))?;
    let reader = SerializedFileReader::new(file).map_err(|e| Error::DatasetRead {
        path: path.to_path_buf(),
        source: e.into(),
    })?;
    let meta = reader.metadata();
    let rows = meta.file_metadata().num_rows().max(0) as u64;
    let schema = meta.file_metadata().schema_descr();
    let (mut nulls, mut mins, mut maxs) = (Map::new(), Map::new(), Map::new());
    for c in 0..schema.num_columns() {
        let name = schema.column(c).name().to_string();
        let mut null_count = 0u64;
        let mut min: Option<Stat> = None;
        let mut max: Option<Stat> = None;
        let mut usable = true;
        for rg in meta.row_groups() {
            let Some(stats) = rg.column(c).statistics() else {
                usable = false;
                continue;
            };
            null_count += stats.null_count_opt().unwrap_or(0);
            match Stat::range(stats) {
                Some((lo, hi)) => {
                    min = Some(match min {
                        Some(m) if m <= lo => m,
                        _ => lo,
                    });
                    max = Some(match max {
                        Some(m) if m >= hi => m,
                        _ => hi,
                    });
                }
                None => {
                    // All null in this row group is fine; anything else unknown spoils min/max.
                    if stats.null_count_opt() != Some(rg.num_rows() as u64) {
                        usable = false;
                    }
                }
            }
        }
        nulls.insert(name.clone(), Value::from(null_count));
        if let (true, Some(lo), Some(hi)) = (usable, min, max) {
            mins.insert(name.clone(), lo.json(false));
            maxs.insert(name, hi.json(true));
        }
    }
    let doc = serde_json::json!({
        "numRecords": rows,
        "minValues": mins,
        "maxValues": maxs,
        "nullCount": nulls,
    });
    Ok((rows, doc.to_string()))
}

#[derive(Debug, Clone, PartialEq, PartialOrd)]
enum Stat {
    Micros(i64),
    Text(String),
}

impl Stat {
    /// The exact min and max of a column chunk, when they are usable.
    fn range(s: &Statistics) -> Option<(Stat, Stat)> {
        match s {
            Statistics::Int64(v) => {
                Some((Stat::Micros(*v.min_opt()?), Stat::Micros(*v.max_opt()?)))
            }
            Statistics::ByteArray(v) if v.min_is_exact() && v.max_is_exact() => {
                let text = |b: &parquet::data_type::ByteArray| {
                    std::str::from_utf8(b.data())
                        .ok()
                        .filter(|t| t.chars().count() <= MAX_STRING_STAT)
                        .map(|t| Stat::Text(t.to_string()))
                };
                Some((text(v.min_opt()?)?, text(v.max_opt()?)?))
            }
            _ => None,
        }
    }

    fn json(&self, round_up: bool) -> Value {
        match self {
            Stat::Text(t) => Value::from(t.as_str()),
            Stat::Micros(us) => {
                let ms = if round_up {
                    us.div_euclid(1000) + i64::from(us.rem_euclid(1000) != 0)
                } else {
                    us.div_euclid(1000)
                };
                let t = chrono::DateTime::from_timestamp_millis(ms).unwrap_or_default();
                Value::from(t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string())
            }
        }
    }
}
