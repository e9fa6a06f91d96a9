//! The commands of the tool, each a function from its options to what it does: `load` (the main job),
//! `forget` (deletion requests) and `schema`. The command line ([`crate::cli`]) parses arguments into their
//! options and maps their outcome to an exit code; the commands use the table formats, the pipeline and the
//! vocabulary below them.

pub mod ddl;
pub mod forget;
pub mod load;
pub mod privacy;
pub mod schema;
