//! The one error type of the library, and the exit code of each error.
//!
//! Why this module exists: a cron job is judged by its exit code, so every way a run can end badly is a
//! variant here with its code in one `match` ([`Error::exit_code`]). Bad input *lines* are not errors: they are
//! data, and go to the rejects file (see [`crate::reject::Reason`]).

use std::io;
use std::path::PathBuf;

/// Exit codes.
pub mod exit {
    pub const SUCCESS: u8 = 0;
    pub const FAILURE: u8 = 1;
    pub const USAGE: u8 = 2;
    pub const REJECT_RATIO: u8 = 3;
    pub const LOCKED: u8 = 4;
    pub const MIN_ROWS: u8 = 5;
    /// The run's rows were published (or may have been: a commit whose answer was lost), but a step after it
    /// failed: the `accounts` update, the report, a `--report`/`--rejects` copy. Re-running the same command
    /// finishes it and never loads a row twice.
    pub const AFTER_PUBLISH: u8 = 6;
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Bad command-line usage or arguments.
    #[error("{0}")]
    Usage(String),

    /// An input path (or the URL of an object) that does not exist.
    #[error("input not found: {}", .0.display())]
    InputNotFound(PathBuf),

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

    /// The bucket (S3) or container (Azure) of a URL does not exist, as the store answered.
    #[error(
        "{action} {url}: the {kind} {name} does not exist (or these credentials cannot see it): create it, or \
         check the URL and the account. The store answered: {source}"
    )]
    NoBucket {
        action: &'static str,
        url: String,
        kind: &'static str,
        name: String,
        #[source]
        source: Box<object_store::Error>,
    },

    /// No credentials for an object store: none in the environment or the profile, and the cloud's metadata
    /// service (the last link of the chain) did not answer.
    #[error(
        "{url}: no {cloud} credentials found. Looked at {looked_at}; the last did not answer ({detail}). {advice}"
    )]
    NoCredentials {
        url: String,
        cloud: &'static str,
        looked_at: &'static str,
        advice: &'static str,
        detail: String,
    },

    /// A catalog (AWS Glue) refused or failed to register a table.
    #[error("registering {name} in {catalog}: {detail}")]
    Catalog {
        catalog: &'static str,
        name: String,
        detail: String,
    },

    /// Reading or committing to a Delta table failed in delta-rs.
    #[error("Delta table {url}: {source}")]
    Delta {
        url: String,
        #[source]
        source: Box<deltalake::DeltaTableError>,
    },

    /// A Delta table in a state the run cannot go on from (a table that never stops moving, a partition value
    /// no reader parses), with what to do.
    #[error("Delta table {url}: {message}")]
    DeltaState { url: String, message: String },

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

    /// [`Error::Dataset`] caused by the Parquet or Arrow reader, which the error keeps.
    #[error("reading dataset file {}: {source}", .path.display())]
    DatasetRead {
        path: PathBuf,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },

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
        "{rows} rows to load and {already_loaded} events already loaded by earlier runs, fewer than --min-rows \
         {min} together; nothing was published (events {events}: {skipped} skipped, {rejected} rejected, \
         {duplicates} duplicates)"
    )]
    MinRows {
        rows: u64,
        /// Events whose messageId earlier runs loaded: they count toward `--min-rows`.
        already_loaded: u64,
        min: u64,
        events: u64,
        skipped: u64,
        /// Rejected events, duplicates aside.
        rejected: u64,
        duplicates: u64,
    },

    /// A report that could not be written as JSON.
    #[error("{what}: {source}")]
    Json {
        what: String,
        #[source]
        source: serde_json::Error,
    },

    /// A broken invariant of the tool itself: a bug, never a property of the input.
    #[error("internal error: {0} (a bug in group-loader; nothing was published by this step)")]
    Internal(String),

    /// The run was stopped because another part of it failed (that failure is the one reported).
    #[error("cancelled")]
    Cancelled,

    /// The rows were published, then a later step failed.
    #[error(
        "the run's rows were published, but {step} failed: {source}. Re-run the same command to finish it: \
         it loads no row twice"
    )]
    AfterPublish {
        step: &'static str,
        #[source]
        source: Box<Error>,
    },

    /// A commit was sent but its answer never came, and the table could not be read back to learn whether it
    /// landed.
    #[error(
        "the commit to {url} may or may not have landed ({source}); re-run the same command: it finishes the \
         run if the commit landed and loads it if not, never twice"
    )]
    CommitUncertain {
        url: String,
        #[source]
        source: Box<Error>,
    },
}

impl Error {
    /// The process exit code for this error.
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Usage(_) | Error::InputNotFound(_) | Error::DedupeWindow { .. } => exit::USAGE,
            Error::RejectRatio { .. } => exit::REJECT_RATIO,
            Error::MinRows { .. } => exit::MIN_ROWS,
            Error::Locked { .. } => exit::LOCKED,
            Error::Io { .. }
            | Error::ObjectStore { .. }
            | Error::NoBucket { .. }
            | Error::NoCredentials { .. }
            | Error::Catalog { .. }
            | Error::Delta { .. }
            | Error::DeltaState { .. }
            | Error::Read { .. }
            | Error::Parquet { .. }
            | Error::Dataset { .. }
            | Error::DatasetRead { .. }
            | Error::Arrow(_)
            | Error::Json { .. }
            | Error::Internal(_)
            | Error::Cancelled => exit::FAILURE,
            Error::AfterPublish { .. } | Error::CommitUncertain { .. } => exit::AFTER_PUBLISH,
        }
    }

    /// This error, as the failure of `step` after the rows were published (exit 6), unless it already says so.
    pub fn after_publish(step: &'static str) -> impl FnOnce(Error) -> Error {
        move |e| match e {
            e @ (Error::AfterPublish { .. } | Error::CommitUncertain { .. }) => e,
            e => Error::AfterPublish {
                step,
                source: Box::new(e),
            },
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

/// XML elements of a store's error body that quote the request's credentials back (S3 does so on a signature
/// mismatch), compared without case.
const SECRET_ELEMENTS: [&str; 8] = [
    "signatureprovided",
    "stringtosign",
    "stringtosignbytes",
    "canonicalrequest",
    "canonicalrequestbytes",
    "x-amz-security-token",
    "securitytoken",
    "sessiontoken",
];
/// URL query parameters and header names that carry credentials (S3 presigned URLs, Azure SAS tokens).
const SECRET_PARAMS: [&str; 8] = [
    "x-amz-signature",
    "x-amz-credential",
    "x-amz-security-token",
    "signature",
    "sig",
    "authorization",
    "x-goog-signature",
    "x-goog-credential",
];

/// A message with every credential it quotes masked: the contents of [`SECRET_ELEMENTS`], and the values of
/// [`SECRET_PARAMS`] as query parameters (`name=value`) or headers (`name: value`). A store's error message
/// may quote the request back; nothing the tool prints may carry a secret of the environment.
pub fn redact(message: &str) -> String {
    let mut out = message.to_string();
    for name in SECRET_ELEMENTS {
        out = mask_elements(&out, name);
    }
    for name in SECRET_PARAMS {
        out = mask_after(&out, name, &['=', ':']);
    }
    // object_store counts its retries against a limit the tool sets out of the way; the count is noise.
    if let Some(at) = out.find(", max_retries: ") {
        let rest = &out[at + ", max_retries: ".len()..];
        let digits = rest.len() - rest.trim_start_matches(|c: char| c.is_ascii_digit()).len();
        out.replace_range(at..at + ", max_retries: ".len() + digits, "");
    }
    out
}

/// Masks the text of every `<name>...</name>` element (name compared without case).
fn mask_elements(text: &str, name: &str) -> String {
    let lower = text.to_ascii_lowercase();
    let (open, close) = (format!("<{name}>"), format!("</{name}>"));
    let mut out = String::with_capacity(text.len());
    let mut at = 0;
    while let Some(i) = lower[at..].find(&open) {
        let start = at + i + open.len();
        let end = lower[start..]
            .find(&close)
            .map_or(text.len(), |j| start + j);
        out.push_str(&text[at..start]);
        out.push_str("***");
        at = end;
    }
    out.push_str(&text[at..]);
    out
}

/// Masks the value after every `name=` or `name:` (the name compared without case, and standing alone: not
/// the end of a longer word), up to the next `&`, white space, quote or `<`.
fn mask_after(text: &str, name: &str, separators: &[char]) -> String {
    let lower = text.to_ascii_lowercase();
    let mut out = String::with_capacity(text.len());
    let mut at = 0;
    let mut from = 0;
    while let Some(i) = lower[from..].find(name) {
        let begin = from + i;
        let after = begin + name.len();
        from = after;
        let standalone = lower[..begin]
            .chars()
            .next_back()
            .is_none_or(|c| !(c.is_ascii_alphanumeric() || c == '-' || c == '_'));
        let Some(sep) = text[after..]
            .chars()
            .next()
            .filter(|c| separators.contains(c))
        else {
            continue;
        };
        if !standalone {
            continue;
        }
        let value = after + sep.len_utf8();
        let value = value + (text[value..].len() - text[value..].trim_start_matches(' ').len());
        let end = text[value..]
            .find(|c: char| {
                c == '&' || c.is_whitespace() || c == '"' || c == '\'' || c == '<' || c == ','
            })
            .map_or(text.len(), |j| value + j);
        if end == value {
            continue;
        }
        out.push_str(&text[at..value]);
        out.push_str("***");
        at = end;
        from = end;
    }
    out.push_str(&text[at..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_in_messages_are_masked() {
        let body = "Generic S3 error: Error performing PUT http://127.0.0.1:9/b/k?X-Amz-Signature=abc123&x=1 \
                    in 1.2s, after 3 retries, max_retries: 18446744073709551615, retry_timeout: 8s - Server \
                    returned non-2XX status code: 403 Forbidden: <Error><Code>SignatureDoesNotMatch</Code>\
                    <SignatureProvided>deadbeef</SignatureProvided><StringToSign>AWS4-HMAC-SHA256\n2026\
                    </StringToSign><X-Amz-Security-Token>SESSIONSECRET</X-Amz-Security-Token></Error> \
                    x-amz-security-token: OTHERSECRET sv=2024&sig=AZURESECRET&se=1";
        let r = redact(body);
        for secret in [
            "abc123",
            "deadbeef",
            "AWS4-HMAC-SHA256",
            "SESSIONSECRET",
            "OTHERSECRET",
            "AZURESECRET",
            "max_retries",
        ] {
            assert!(!r.contains(secret), "{secret} in {r}");
        }
        // What says what went wrong stays.
        for kept in [
            "SignatureDoesNotMatch",
            "403 Forbidden",
            "retry_timeout: 8s",
            "&x=1",
            "se=1",
        ] {
            assert!(r.contains(kept), "{kept} lost from {r}");
        }
        // Words that merely end like a parameter name are left alone.
        assert_eq!(redact("design=on usig=x"), "design=on usig=x");
    }

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
            already_loaded: 0,
            min: 1,
            events: 3,
            skipped: 3,
            rejected: 0,
            duplicates: 0,
        };
        assert_eq!(min.exit_code(), 5);
        let io = Error::io("reading", "p")(io::Error::other("boom"));
        assert_eq!(io.exit_code(), 1);
        assert_eq!(io.to_string(), "reading p: boom");
    }
}
