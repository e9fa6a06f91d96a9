//! The local (hive) dataset as it stands: the shape it was created with, its partitions and their files, and
//! the runs it holds.
//!
//! Why this module exists: several decisions of a run depend on what earlier runs left — whether `--partition`
//! matches the layout already there, which partitions hold ids a new event may duplicate, whether these very
//! inputs were already loaded, how many rows an overwrite removes. They all read the published version through
//! the links `OUT/groups` and `OUT/_runs`, in one place.

use std::fs::{self, File};
use std::path::{Path, PathBuf};

use parquet::file::reader::{FileReader, SerializedFileReader};

use crate::error::{Error, Result};
use crate::layout::{Format, GROUPS_DIR, PartitionMode, RUNS_DIR, STATE_DIR, Shape, is_run_file};
use crate::table::inventory::{FileInfo, Inventory};

/// The folder of the state folder that holds the privacy records.
pub const PRIVACY_DIR: &str = "privacy";

/// Where the shape is recorded (in the tool's state folder).
const SHAPE_FILE: &str = "dataset.json";

fn partition_name(p: PartitionMode) -> &'static str {
    match p {
        PartitionMode::Day => "day",
        PartitionMode::Hour => "hour",
        PartitionMode::None => "none",
    }
}

/// The shape written in `out`'s record, if there is one.
fn record(out: &Path) -> Result<Option<Shape>> {
    let path = out.join(STATE_DIR).join(SHAPE_FILE);
    match fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| Error::Dataset {
                path,
                message: format!("unreadable dataset record: {e}"),
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io("reading", path)(e)),
    }
}

/// The shape recorded in `out`, or inferred from the partition folders of a dataset written before shapes
/// were recorded. `None` for a new (or empty) dataset.
pub fn recorded_shape(out: &Path) -> Result<Option<Shape>> {
    match record(out)? {
        Some(shape) => Ok(Some(shape)),
        None => Ok(infer_partition(out)?.map(|partition| Shape {
            format: Format::Hive,
            partition,
        })),
    }
}

/// True when `out` holds a hive dataset: its record says so, or `groups` is the hive layout's link. (Parquet
/// files in a plain `groups` folder with no Delta log are not enough: a Delta run killed before its first commit
/// leaves its uploads there.)
pub fn is_hive(out: &Path) -> Result<bool> {
    Ok(match record(out)? {
        Some(shape) => shape.format == Format::Hive,
        None => {
            fs::symlink_metadata(out.join(GROUPS_DIR)).is_ok_and(|m| m.file_type().is_symlink())
        }
    })
}

/// The partitioning of an existing hive `groups` folder, from its first data file's place (a Delta table's
/// folder is not one).
fn infer_partition(out: &Path) -> Result<Option<PartitionMode>> {
    let groups = out.join(GROUPS_DIR);
    if groups.join("_delta_log").exists() {
        return Ok(None);
    }
    let Some(first) = parquet_files(&groups)?.into_iter().next() else {
        return Ok(None);
    };
    let rel = first
        .parent()
        .and_then(|p| p.strip_prefix(&groups).ok())
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_default();
    Ok(
        [PartitionMode::Day, PartitionMode::Hour, PartitionMode::None]
            .into_iter()
            .find(|m| m.bucket_of_path(&rel).is_some()),
    )
}

/// Refuses (exit 2, naming the recorded value) a run whose shape differs from the one the dataset was
/// created with, before anything is touched. A recorded shape with no data behind it (the first run failed)
/// does not bind.
pub fn check_shape(out: &Path, wanted: Shape) -> Result<()> {
    let Some(recorded) = recorded_shape(out)? else {
        return Ok(());
    };
    if recorded == wanted || parquet_files(&out.join(GROUPS_DIR))?.is_empty() {
        return Ok(());
    }
    let (option, was, now) = if recorded.format != wanted.format {
        ("--format", recorded.format.name(), wanted.format.name())
    } else {
        (
            "--partition",
            partition_name(recorded.partition),
            partition_name(wanted.partition),
        )
    };
    Err(Error::Usage(format!(
        "{} was created with {option} {was}; this run asks for {option} {now}. A dataset keeps one layout \
         (mixing them breaks every reader): run with {option} {was}, or load into a new --output",
        out.display()
    )))
}

/// Records the shape (call with the lock held, after [`check_shape`]).
pub fn record_shape(out: &Path, shape: Shape) -> Result<()> {
    let path = out.join(STATE_DIR).join(SHAPE_FILE);
    if recorded_shape(out)? == Some(shape) && path.exists() {
        return Ok(());
    }
    let mut bytes = serde_json::to_vec_pretty(&shape).map_err(|source| Error::Json {
        what: "serialising the dataset record".into(),
        source,
    })?;
    bytes.push(b'\n');
    crate::atomic::write_atomic(&path, &bytes)
}

/// One partition of the published `groups` table.
#[derive(Debug, Clone)]
pub struct Partition {
    pub bucket: i64,
    pub files: Vec<PathBuf>,
}

/// The partitions of the published `groups` table that follow `mode`'s layout, in bucket order.
pub fn partitions(out: &Path, mode: PartitionMode) -> Result<Vec<Partition>> {
    let groups = out.join(GROUPS_DIR);
    let mut by_path: std::collections::BTreeMap<String, Vec<PathBuf>> = Default::default();
    for f in parquet_files(&groups)? {
        let rel = f
            .parent()
            .and_then(|p| p.strip_prefix(&groups).ok())
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default();
        by_path.entry(rel).or_default().push(f);
    }
    let mut parts: Vec<Partition> = by_path
        .into_iter()
        .filter_map(|(path, files)| {
            mode.bucket_of_path(&path)
                .map(|bucket| Partition { bucket, files })
        })
        .collect();
    parts.sort_by_key(|p| p.bucket);
    Ok(parts)
}

/// Every `*.parquet` file under `dir` (links followed, hidden entries skipped), sorted.
pub fn parquet_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut found = Vec::new();
    walk(dir, &mut found)?;
    found.sort();
    Ok(found)
}

fn walk(dir: &Path, found: &mut Vec<PathBuf>) -> Result<()> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::io("reading directory", dir)(e)),
    };
    for entry in entries {
        let entry = entry.map_err(Error::io("reading directory", dir))?;
        if entry.file_name().to_string_lossy().starts_with('.') {
            continue;
        }
        let path = entry.path();
        let meta = fs::metadata(&path).map_err(Error::io("reading", &path))?;
        if meta.is_dir() {
            walk(&path, found)?;
        } else if path.extension().is_some_and(|e| e == "parquet") {
            found.push(path);
        }
    }
    Ok(())
}

/// The number of rows of a Parquet file, from its footer.
pub fn file_rows(path: &Path) -> Result<u64> {
    let file = File::open(path).map_err(Error::io("opening", path))?;
    let reader = SerializedFileReader::new(file).map_err(|e| Error::DatasetRead {
        path: path.to_path_buf(),
        source: e.into(),
    })?;
    Ok(reader.metadata().file_metadata().num_rows().max(0) as u64)
}

/// The published report of run `run_id`, if that run published its rows (the same inputs were loaded).
pub fn published_run(out: &Path, run_id: &str) -> Option<serde_json::Value> {
    run_files(&out.join(RUNS_DIR), run_id)
        .into_iter()
        .filter_map(|name| fs::read(out.join(RUNS_DIR).join(name)).ok())
        .filter_map(|bytes| serde_json::from_slice::<serde_json::Value>(&bytes).ok())
        .find(|report| report["published"] == true)
}

/// The names of the files of `dir` that belong to run `run_id`, sorted.
pub fn run_files(dir: &Path, run_id: &str) -> Vec<String> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut names: Vec<String> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| is_run_file(n, run_id))
        .collect();
    names.sort();
    names
}

/// The inventory of the hive dataset at `out` ([`crate::table::inventory`]): read through the links of the
/// version readers see, without the lock (a load publishing meanwhile switches the version at once; what is
/// read is one version or the next, file by file).
pub fn inventory(out: &Path, last_runs: usize) -> Result<Inventory> {
    let files = |table: &str| -> Result<Vec<FileInfo>> {
        let dir = out.join(table);
        parquet_files(&dir)?
            .into_iter()
            .map(|p| {
                let partition = p
                    .parent()
                    .and_then(|d| d.strip_prefix(&dir).ok())
                    .map(|d| d.to_string_lossy().into_owned())
                    .unwrap_or_default();
                let bytes = fs::metadata(&p).map_err(Error::io("reading", &p))?.len();
                Ok(FileInfo {
                    partition,
                    bytes,
                    rows: file_rows(&p)?,
                })
            })
            .collect()
    };
    let runs_dir = out.join(RUNS_DIR);
    let mut names: Vec<String> = match fs::read_dir(&runs_dir) {
        Ok(entries) => entries
            .filter_map(|e| e.ok())
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|n| n.ends_with(".json"))
            .collect(),
        Err(_) => Vec::new(),
    };
    names.sort();
    let run_records = names.len();
    let runs = names[names.len().saturating_sub(last_runs)..]
        .iter()
        .filter_map(|n| Some((n.clone(), fs::read(runs_dir.join(n)).ok()?)))
        .collect();
    let shape = recorded_shape(out)?;
    let accounts = files(crate::layout::ACCOUNTS_DIR)?;
    Ok(Inventory {
        format: Format::Hive,
        partition: shape.map_or(PartitionMode::Day, |s| s.partition),
        version: super::versions::current_version(out)?,
        groups: files(GROUPS_DIR)?,
        accounts_kept: !accounts.is_empty(),
        accounts,
        accounts_version: None,
        accounts_reflects: None,
        // Published in the same version switch as the rows it reflects.
        accounts_current: true,
        checkpoint: None,
        runs,
        run_records,
        privacy_dir: Some(crate::store::Location::local(
            &out.join(STATE_DIR).join(PRIVACY_DIR),
        )?),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hive(partition: PartitionMode) -> Shape {
        Shape {
            format: Format::Hive,
            partition,
        }
    }

    #[test]
    fn the_first_shape_binds_once_there_is_data() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path();
        // A new dataset: anything goes, and recording it twice is fine.
        check_shape(out, hive(PartitionMode::Hour)).unwrap();
        fs::create_dir_all(out.join(STATE_DIR)).unwrap();
        record_shape(out, hive(PartitionMode::Hour)).unwrap();
        record_shape(out, hive(PartitionMode::Hour)).unwrap();
        // Recorded but no data yet (the first run failed): another shape may still be chosen.
        check_shape(out, hive(PartitionMode::Day)).unwrap();
        // With data, the other shape is refused, naming the recorded value.
        let part = out.join("groups/dt=2024-03-01/hr=07");
        fs::create_dir_all(&part).unwrap();
        fs::write(part.join("part-x-00000.parquet"), b"").unwrap();
        let err = check_shape(out, hive(PartitionMode::Day)).unwrap_err();
        assert_eq!(err.exit_code(), 2);
        assert!(err.to_string().contains("--partition hour"), "{err}");
        check_shape(out, hive(PartitionMode::Hour)).unwrap();
    }

    #[test]
    fn a_dataset_from_before_shapes_were_recorded_is_inferred_from_its_folders() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path();
        let part = out.join("groups/dt=2024-03-01");
        fs::create_dir_all(&part).unwrap();
        fs::write(part.join("part-x-00000.parquet"), b"").unwrap();
        assert_eq!(recorded_shape(out).unwrap(), Some(hive(PartitionMode::Day)));
        assert!(check_shape(out, hive(PartitionMode::None)).is_err());
        let parts = partitions(out, PartitionMode::Day).unwrap();
        assert_eq!(parts.len(), 1);
        // 2024-03-01 is day 19,783 since the epoch (date -u -d 2024-03-01 +%s = 1709251200 = 19,783 x 86,400).
        assert_eq!(parts[0].bucket, 19_783);
        assert_eq!(parts[0].files.len(), 1);
    }

    #[test]
    fn uploads_of_a_killed_delta_run_do_not_make_a_hive_dataset() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        // A Delta run killed before its first commit: files in a plain groups folder, no log.
        let part = out.join("groups/dt=2024-03-01");
        fs::create_dir_all(&part).unwrap();
        fs::write(part.join("part-x-y-00000.parquet"), b"").unwrap();
        assert!(!is_hive(&out).unwrap());
        // The hive layout: groups is a link into the hidden versions.
        let hive_out = dir.path().join("hive");
        fs::create_dir_all(hive_out.join(".group-loader/current/groups")).unwrap();
        std::os::unix::fs::symlink(".group-loader/current/groups", hive_out.join("groups"))
            .unwrap();
        assert!(is_hive(&hive_out).unwrap());
        // Or its record says so.
        fs::create_dir_all(out.join(STATE_DIR)).unwrap();
        record_shape(&out, hive(PartitionMode::Day)).unwrap();
        assert!(is_hive(&out).unwrap());
    }
}
