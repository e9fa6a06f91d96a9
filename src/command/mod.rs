//! The commands of the tool, each a function from its options to what it does: `load` (the main job),
//! `forget` (deletion requests), `compact` and `status` (upkeep), and `schema`. The command line ([`crate::cli`]) parses arguments into their
//! options and maps their outcome to an exit code; the commands use the table formats, the pipeline and the
//! vocabulary below them.

pub mod compact;
pub mod ddl;
pub mod forget;
pub mod load;
pub mod privacy;
pub mod schema;
pub mod status;

use crate::error::{Error, Result};
use crate::layout::Format;
use crate::options::{LoadOptions, Output};

/// Writes the record to `--report PATH` (`-`: standard output).
pub(crate) fn copy_report(path: &std::path::Path, bytes: &[u8]) -> Result<()> {
    if path.as_os_str() == "-" {
        use std::io::Write;
        return std::io::stdout()
            .write_all(bytes)
            .map_err(Error::io("writing the report to", "standard output"));
    }
    crate::atomic::write_atomic(path, bytes)
}

/// Refuses (exit 2, nothing touched) an output that holds no dataset (`doing` never creates one), or one Parquet
/// file.
pub(crate) fn check_dataset(load: &LoadOptions, doing: &str) -> Result<()> {
    let output = &load.output;
    if load.format() == Format::Parquet {
        return Err(Error::Usage(format!(
            "{output} is one Parquet file, not a dataset: {doing} works on a dataset's --output (a folder or a \
             URL), which keeps a record of what it holds"
        )));
    }
    let found = match output {
        Output::Local(path) => crate::table::is_dataset(path),
        Output::Url(url) => crate::store::Location::parse(url)?
            .join(&format!("{}/_delta_log", crate::layout::GROUPS_DIR))
            .any()?,
    };
    if !found {
        return Err(Error::Usage(format!(
            "{output} holds no group-loader dataset (no hive state folder, no Delta groups table): check \
             --output, which must be the --output of the loads"
        )));
    }
    Ok(())
}
