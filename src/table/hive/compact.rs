//! Compaction of a hive dataset: the small files of each partition rewritten together, published as one
//! version switch under the lock the table holds.
//!
//! Why this is its own file: a load adds files and a deletion rewrites them without rows; compaction rewrites
//! files with every row kept, so `accounts` and the rejects are never touched and the plan is only files
//! swapped for files ([`crate::compact`] decides which). A kill before the switch leaves the dataset as it
//! was (the next command removes the staging folder); after it, as compacted.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use rayon::prelude::*;

use super::dataset;
use super::versions::{self, Plan};
use crate::compact::{self, Candidate, PartitionPlan};
use crate::error::{Error, Result};
use crate::layout::{GROUPS_DIR, RUNS_DIR};
use crate::staging::Staging;
use crate::table::{CompactRecord, CompactRequest, Compacted, Context};

/// The folder of the staging area the compacted files are written to.
const COMPACT_DIR: &str = "compact";

pub(super) fn compact(
    out: &Path,
    request: &CompactRequest,
    staging: &Staging,
    ctx: &Context<'_>,
    record: CompactRecord<'_>,
) -> Result<Compacted> {
    let plans = plan(out, request)?;
    let mut done = Compacted {
        dry_run: request.dry_run,
        ..Compacted::default()
    };
    for p in &plans {
        done.add(p);
    }
    if request.dry_run || done.files_written == 0 {
        return Ok(done);
    }
    let groups = out.join(GROUPS_DIR);
    let jobs: Vec<(&PartitionPlan, usize)> = plans
        .iter()
        .flat_map(|p| (0..p.outputs.len()).map(move |n| (p, n)))
        .collect();
    let written: Vec<(PathBuf, PathBuf, u64)> = ctx.pool.install(|| {
        jobs.par_iter()
            .map(|&(p, n)| {
                let o = &p.outputs[n];
                let name = compact::output_name(&request.tag, p, o, n);
                let rel = Path::new(GROUPS_DIR).join(&p.partition).join(&name);
                let into = staging.dir().join(COMPACT_DIR).join(&rel);
                if let Some(dir) = into.parent() {
                    std::fs::create_dir_all(dir).map_err(Error::io("creating directory", dir))?;
                }
                let sources: Vec<PathBuf> = o
                    .sources
                    .iter()
                    .map(|&i| groups.join(&p.files[i].path))
                    .collect();
                let (_, bytes) = crate::writer::concatenate(
                    &sources,
                    &into,
                    ctx.opts.codec,
                    request.row_group_bytes,
                )?;
                // Its place in the partition's order is its first source's.
                set_written(&into, p.written_of(o))?;
                Ok((into, rel, bytes))
            })
            .collect::<Result<Vec<_>>>()
    })?;
    let mut plan = Plan::default();
    for (into, rel, bytes) in written {
        done.bytes_written += bytes;
        plan.adds.push((into, rel));
    }
    for p in &plans {
        for f in p.rewritten() {
            plan.removes.push(Path::new(GROUPS_DIR).join(&f.path));
        }
    }
    done.version = Some(versions::current_version(out)?.map_or(1, |v| v + 1));
    let staged_record = staging.report();
    crate::atomic::write_atomic(&staged_record, &record(&done)?)?;
    plan.adds.push((
        staged_record,
        Path::new(RUNS_DIR).join(format!("{}.json", request.stem)),
    ));
    versions::publish(out, &plan)?;
    Ok(done)
}

/// The plan of every partition the request's range keeps, from the files' sizes and times (and, for the files
/// rewritten, their footers' row counts).
fn plan(out: &Path, request: &CompactRequest) -> Result<Vec<PartitionPlan>> {
    let groups = out.join(GROUPS_DIR);
    let mut by_partition: BTreeMap<String, Vec<Candidate>> = BTreeMap::new();
    for path in dataset::parquet_files(&groups)? {
        let rel = path
            .strip_prefix(&groups)
            .map_err(|_| Error::Internal(format!("{} outside groups", path.display())))?;
        let partition = rel
            .parent()
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default();
        if !request.range.keeps(&partition) {
            continue;
        }
        let meta = std::fs::metadata(&path).map_err(Error::io("reading", &path))?;
        let written = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_nanos() as i128);
        by_partition.entry(partition).or_default().push(Candidate {
            path: rel.to_string_lossy().into_owned(),
            bytes: meta.len(),
            rows: 0,
            written,
        });
    }
    let mut plans = Vec::new();
    for (partition, files) in by_partition {
        let mut p = compact::plan(partition, files, request.target_bytes);
        let sources: Vec<usize> = p.outputs.iter().flat_map(|o| o.sources.clone()).collect();
        for i in sources {
            p.files[i].rows = dataset::file_rows(&groups.join(&p.files[i].path))?;
        }
        plans.push(p);
    }
    Ok(plans)
}

/// Sets a staged file's modification time (nanoseconds since the epoch): the order readers of the partition see.
fn set_written(path: &Path, nanos: i128) -> Result<()> {
    let at = SystemTime::UNIX_EPOCH + std::time::Duration::from_nanos(nanos.max(0) as u64);
    std::fs::File::options()
        .write(true)
        .open(path)
        .and_then(|f| f.set_modified(at))
        .map_err(Error::io("setting the time of", path))
}
