//! The one error type of the library, and the exit code of each error (SPEC §8).
//!
//! Why this module exists: a cron job is judged by its exit code, so every way a run can end badly is a
//! variant here with its code in one `match` ([`Error::exit_code`]). Bad input *lines* are not errors: they are
//! data, and go to the rejects file (see [`crate::parse::Reason`]).

use std::io;
use std::path::PathBuf;

/// Exit codes of SPEC §8.
pub mod exit {
    pub const SUCCESS: u8 = 0;
    pub const FAILURE: u8 = 1;
    pub const USAGE: u8 = 2;
    pub const REJECT_RATIO: u8 = 3;
    pub const LOCKED: u8 = 4;
    pub const MIN_ROWS: u8 = 5;
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Bad command-line usage or arguments.
    #[error("{0}")]
    Usage(String),

    /// An input path that does not exist.
    #[error("input not found: {}", .0.display())]
    InputNotFound(PathBuf),

    /// Directories were given but hold no input files.
    #[error("no input files (*.json, *.jsonl, *.ndjson, *.gz, *.zst) under {}", .0.display())]
    NoInputs(PathBuf),

    /// An I/O error on a path, with what was being done.
    #[error("{action} {}: {source}", .path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    /// Reading or decompressing an input failed part way (a corrupt or truncated gzip/zstd file, a read
    /// error). The whole run fails: a nightly job must not load half a file silently.
    #[error(
        "reading {path} failed at input byte {offset} (compressed offset, near line {line}): {source}"
    )]
    Read {
        path: String,
        offset: u64,
        line: u64,
        #[source]
        source: io::Error,
    },

    /// A request to object storage failed (after the store's retries): no such bucket, access denied, a
    /// network failure.
    #[error("{action} {url}: {source}")]
    ObjectStore {
        action: &'static str,
        url: String,
        #[source]
        source: Box<object_store::Error>,
    },

    /// Committing to a Delta table failed.
    #[error("committing to the Delta table {url}: {message}")]
    Delta { url: String, message: String },

    /// Encoding Parquet failed.
    #[error("writing Parquet file {}: {source}", .path.display())]
    Parquet {
        path: PathBuf,
        #[source]
        source: parquet::errors::ParquetError,
    },

    /// A file of the published dataset could not be read back (the `accounts` merge reads `groups` files and
    /// the previous `accounts` snapshot).
    #[error("reading dataset file {}: {message}", .path.display())]
    Dataset { path: PathBuf, message: String },

    /// Building Arrow arrays failed (an internal error).
    #[error("building Arrow batch: {0}")]
    Arrow(#[from] arrow::error::ArrowError),

    /// Another run holds the output's lock.
    #[error("output {} is locked by another run ({holder}); nothing was changed", .path.display())]
    Locked { path: PathBuf, holder: String },

    /// Too many rejected events: nothing was published. `hint` says what to do when an input looks like a JSON
    /// array or pretty-printed JSON (the usual cause of a file rejected whole).
    #[error(
        "{rejected} of {considered} events rejected ({ratio:.4}), over --max-reject-ratio {max}; nothing was published (rejects: {rejects}){}",
        .hint.as_deref().map(|h| format!("\nhint: {h}")).unwrap_or_default()
    )]
    RejectRatio {
        rejected: u64,
        considered: u64,
        ratio: f64,
        max: f64,
        rejects: String,
        hint: Option<String>,
    },

    /// The ids already loaded within `--dedupe-window` need more memory than `--memory-limit` gives them.
    #[error(
        "the partitions within --dedupe-window hold {ids} ids already loaded, needing {} MiB to compare against, \
         more than the {} MiB (a quarter of --memory-limit {limit}) they may take; raise --memory-limit or \
         shorten --dedupe-window. Nothing was published",
        .needed >> 20, .budget >> 20
    )]
    DedupeWindow {
        ids: u64,
        needed: u64,
        budget: u64,
        limit: String,
    },

    /// Fewer rows than `--min-rows`: nothing was published (a nightly load of nothing is usually a broken
    /// export, not a quiet day).
    #[error(
        "{rows} rows to load, fewer than --min-rows {min}; nothing was published (events {events}, skipped {skipped}, rejected {rejected})"
    )]
    MinRows {
        rows: u64,
        min: u64,
        events: u64,
        skipped: u64,
        rejected: u64,
    },

    /// A report that could not be written as JSON.
    #[error("{what}: {source}")]
    Json {
        what: String,
        #[source]
        source: serde_json::Error,
    },
}

impl Error {
    /// The process exit code for this error (SPEC §8).
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Usage(_)
            | Error::InputNotFound(_)
            | Error::NoInputs(_)
            | Error::DedupeWindow { .. } => exit::USAGE,
            Error::RejectRatio { .. } => exit::REJECT_RATIO,
            Error::MinRows { .. } => exit::MIN_ROWS,
            Error::Locked { .. } => exit::LOCKED,
            Error::Io { .. }
            | Error::ObjectStore { .. }
            | Error::Delta { .. }
            | Error::Read { .. }
            | Error::Parquet { .. }
            | Error::Dataset { .. }
            | Error::Arrow(_)
            | Error::Json { .. } => exit::FAILURE,
        }
    }

    pub fn io(action: &'static str, path: impl Into<PathBuf>) -> impl FnOnce(io::Error) -> Error {
        let path = path.into();
        move |source| Error::Io {
            action,
            path,
            source,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes() {
        assert_eq!(Error::Usage("x".into()).exit_code(), 2);
        assert_eq!(Error::InputNotFound("x".into()).exit_code(), 2);
        assert_eq!(
            Error::Locked {
                path: "o".into(),
                holder: "pid 1".into()
            }
            .exit_code(),
            4
        );
        let ratio = Error::RejectRatio {
            rejected: 1,
            considered: 2,
            ratio: 0.5,
            max: 0.05,
            rejects: "r".into(),
            hint: Some("a.json looks like a JSON array".into()),
        };
        assert_eq!(ratio.exit_code(), 3);
        assert!(
            ratio
                .to_string()
                .ends_with("\nhint: a.json looks like a JSON array"),
            "{ratio}"
        );
        let min = Error::MinRows {
            rows: 0,
            min: 1,
            events: 3,
            skipped: 3,
            rejected: 0,
        };
        assert_eq!(min.exit_code(), 5);
        let io = Error::io("reading", "p")(io::Error::other("boom"));
        assert_eq!(io.exit_code(), 1);
        assert_eq!(io.to_string(), "reading p: boom");
    }
}
