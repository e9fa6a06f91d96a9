//! Duplicates of concurrent commits: runs and shards that commit to one table at the
//! same time still load each `id` once.
//!
//! Why this module exists: a run compares its events with the ids already in the table when it starts reading
//! ([`crate::dedupe`]). Another run can commit the same ids while this one reads. So before each commit
//! attempt, the files committed since (in partitions within the dedupe window of this run's) are read (their
//! `id` column only), and this run's staged rows with those ids are dropped: the staged file is rewritten
//! without them and uploaded again, and each dropped row goes to the rejects file as a duplicate of an
//! earlier run, with its input, line and offset (kept beside the staged file as its rows' origins). The row
//! that committed first is kept, whatever order the shards commit in.

use std::path::Path;

use arrow::array::{Array, StringArray};

use super::Pending;
use crate::datafile::DataFile;
use crate::dedupe::{EarlierIds, Reach};
use crate::error::Result;
use crate::layout::Codec;
use crate::lines::Line;
use crate::reject::Reject;
use crate::rejects::RejectsWriter;
use crate::schema::Col;
use crate::writer::{self, Origin};

/// What dropping needs to know about the run.
pub(super) struct Dropping<'a> {
    pub reach: Reach,
    /// Memory the ids read may take.
    pub budget: u64,
    pub codec: Codec,
    /// The run's rejects file (added to).
    pub rejects: &'a Path,
}

/// Drops the pending rows whose ids the `new` files (committed since the run started) hold within the window.
/// Returns the files that changed (to upload again), and adds the rows dropped to `dropped` (`inputs`: the
/// run's inputs, as the rows' origins number them).
pub(super) fn drop_duplicates(
    pending: &mut [Pending],
    new: Vec<(i64, Vec<DataFile>)>,
    how: &Dropping<'_>,
    inputs: &[String],
    dropped: &mut u64,
) -> Result<Vec<usize>> {
    let mut earlier = EarlierIds::new(how.reach, new, how.budget, "--memory-limit".into());
    earlier.ensure(pending.iter().map(|p| p.bucket))?;
    let mut changed = Vec::new();
    let mut rejects = RejectsWriter::appending(how.rejects.to_path_buf());
    for (i, p) in pending.iter_mut().enumerate() {
        let ids = read_ids(&p.staged.staged)?;
        let dups: Vec<(usize, &str)> = ids
            .iter()
            .enumerate()
            .filter_map(|(r, id)| {
                let id = id.as_deref().filter(|s| !s.is_empty())?;
                earlier.find(id, p.bucket).map(|_| (r, id))
            })
            .collect();
        if dups.is_empty() {
            continue;
        }
        // The rejects records, from the rows' origins.
        let origins = match &p.staged.origins {
            Some(path) => Origin::read_all(path)?,
            None => Vec::new(),
        };
        for (r, id) in &dups {
            let Some(o) = origins.get(*r) else {
                continue;
            };
            let file = inputs.get(o.input as usize).map_or("", String::as_str);
            let line = Line {
                range: 0..0,
                number: o.line,
                offset: o.offset,
                too_long: None,
            };
            let reject =
                Reject::duplicate(id, "already loaded by a concurrent run's commit".into());
            rejects.write(file, &line, o.batch_index(), b"", &reject)?;
        }
        let k = dups.len() as u64;
        let drop: Vec<usize> = dups.iter().map(|(r, _)| *r).collect();
        p.staged = writer::rewrite_without(&p.staged, &drop, &origins, how.codec)?;
        *dropped += k;
        changed.push(i);
    }
    rejects.finish()?;
    Ok(changed)
}

/// The `id` column of a staged file.
fn read_ids(path: &Path) -> Result<Vec<Option<String>>> {
    let file = DataFile::Local(path.to_path_buf());
    let (reader, _) = file.columns(&[Col::Id.column().name])?;
    let mut ids = Vec::new();
    for batch in reader {
        let batch = batch.map_err(|e| file.cause(e))?;
        let col = batch
            .column(0)
            .as_any()
            .downcast_ref::<StringArray>()
            .ok_or_else(|| file.error("the id column is not text".into()))?;
        ids.extend((0..col.len()).map(|i| col.is_valid(i).then(|| col.value(i).to_string())));
    }
    Ok(ids)
}
