//! group-loader: loads Segment-style Group calls into Parquet: a Hive-partitioned folder or Delta Lake tables.
//!
//! The contract is `SPEC.md` (shared with the product owner); the modules follow its sections:
//!
//! | module | responsibility | SPEC |
//! |---|---|---|
//! | [`cli`] | command line, exit codes | §1, §8 |
//! | [`input`] | which files and objects, in which order, decompression | §1 |
//! | [`store`] | object storage: URLs to stores, blocking reads and writes | §10 |
//! | [`lines`] | cutting streams into lines and chunks | §2 |
//! | [`parse`] | one line -> blank / skipped / rejected / row | §2 |
//! | [`batch`] | batch envelopes cut into events, envelope defaults merged | §2 |
//! | [`values`] | the text and time rules | §3 |
//! | [`mapping`] | the mapping tables: field -> column | §4, §5 |
//! | [`schema`] | the output schemas (groups, accounts), in one place | §4, §9 |
//! | [`ingest`] | reader threads, chunks parsed on the pool, applied in input order | §10 |
//! | [`run`] | outcomes applied in input order: counts, dedupe, rejects, rows | §2, §7 |
//! | [`dedupe`] | which messageIds are already loaded | §6.3 |
//! | [`writer`] | partitions, row groups, Parquet files | §6.1, §10 |
//! | [`ddl`] | the CREATE statements of each warehouse for the dataset | §4 |
//! | [`datafile`] | a Parquet file of the dataset, local or in object storage | §6 |
//! | [`dataset`] | the published dataset: its shape, partitions, files, runs | §1, §6 |
//! | [`table`] | the output: a hive folder or Delta tables, one interface | §6 |
//! | [`publish`] | lock, staging, atomic publish (version switch), crash recovery | §6.2 |
//! | [`accounts`] | the accounts table: latest state per group, merged run after run | §9 |
//! | [`rejects`] | the rejects file | §7 |
//! | [`report`] | counts, report, summary, progress | §8 |
//! | [`shard`] | `--shard K/N`: each shard's share of the input files | §10 |
//! | [`load`] | the `load` run, start to end | all |
//! | [`error`] | the error type and its exit codes | §8 |

pub mod accounts;
pub mod atomic;
pub mod cli;
pub mod command;
pub mod datafile;
pub mod dedupe;
pub mod error;
pub mod ingest;
pub mod input;
pub mod json;
pub mod layout;
pub mod lines;
pub mod mapping;
pub mod options;
pub mod parse;
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
