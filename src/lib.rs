//! group-loader: loads Segment-style Group calls into Parquet: a Hive-partitioned folder or Delta Lake tables.
//!
//! The modules form five layers, each using only the layers below it (`docs/ARCHITECTURE.md` walks one run
//! through them):
//!
//! - the command line: [`cli`];
//! - the commands: [`command`] (`load`, `schema`, and the warehouses' statements);
//! - the table formats behind one trait: [`table`] (hive, Delta, one Parquet file);
//! - the pipeline: [`input`] -> [`lines`] -> [`parse`] -> [`mapping`] -> [`run`] (with [`dedupe`] and
//!   [`rejects`]) -> [`writer`]; [`ingest`] drives it on the pool; [`accounts`] folds the latest state per
//!   group; [`shard`] splits a listing between shards;
//! - the vocabulary: [`error`], [`values`], [`layout`], [`options`], [`reject`], [`json`], [`schema`],
//!   [`report`], [`atomic`], [`store`], [`staging`], [`datafile`].

pub mod accounts;
pub mod atomic;
pub mod cli;
pub mod command;
pub mod compact;
pub mod datafile;
pub mod dedupe;
pub mod error;
pub mod forget;
pub mod ingest;
pub mod input;
pub mod json;
pub mod layout;
pub mod lines;
pub mod mapping;
pub mod metrics;
pub mod options;
pub mod parse;
pub mod privacy;
pub mod pseudonymise;
pub mod reject;
pub mod rejects;
pub mod report;
pub mod run;
pub mod schema;
pub mod shard;
pub mod staging;
pub mod store;
pub mod table;
pub mod values;
pub mod writer;

pub use error::{Error, Result};
