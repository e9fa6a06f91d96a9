//! What a load does to rows for privacy, before they are counted: events of suppressed ids are dropped, and
//! the pseudonymised columns get their truncated or hashed values.
//!
//! Why this module exists: a deletion request with `--suppress` must keep a re-delivered export from bringing
//! a person back, and a dataset loaded with `--truncate-ip` / `--hash-columns` must never hold a clear value
//! in those columns. Both are decisions on one row at a time that need no order, so they run on the pool,
//! with the parse, before the in-order phase ([`crate::run`]) counts what is left.

use std::borrow::Cow;
use std::sync::Arc;

use crate::mapping::Cell;
use crate::parse::Verdict;
use crate::privacy::{self, IdKind, Suppressed};
use crate::schema::Col;

/// The id columns a suppression checks, and the kind of id each holds.
const ID_COLUMNS: [(IdKind, Col); 3] = [
    (IdKind::User, Col::UserId),
    (IdKind::Anonymous, Col::AnonymousId),
    (IdKind::Group, Col::GroupId),
];

/// The privacy rules of one load.
#[derive(Debug, Default)]
pub struct AtLoad {
    pub suppressed: Arc<Suppressed>,
    pub truncate_ip: bool,
    /// Columns (positions in the schema) replaced by the keyed hash of their value, and the key.
    pub hashed: Vec<usize>,
    pub key: Vec<u8>,
}

impl AtLoad {
    /// True when the rules change nothing.
    pub fn is_noop(&self) -> bool {
        self.suppressed.is_empty() && !self.truncate_ip && self.hashed.is_empty()
    }

    /// Applies the rules to one event's verdict: a suppressed row becomes [`Verdict::Suppressed`]; a row kept
    /// has its pseudonymised columns rewritten. Suppression looks at the ids as sent, before any hashing.
    pub fn apply(&self, verdict: &mut Verdict<'_>) {
        let Verdict::Row(row) = verdict else {
            return;
        };
        if !self.suppressed.is_empty()
            && ID_COLUMNS.iter().any(|(kind, col)| {
                row.text(*col)
                    .is_some_and(|id| self.suppressed.holds(*kind, id))
            })
        {
            *verdict = Verdict::Suppressed;
            return;
        }
        if self.truncate_ip {
            let cell = &mut row.cells[Col::ContextIp as usize];
            if let Cell::Text(ip) = cell {
                // Text that is no address keeps nothing: it could be anything.
                *cell = match privacy::truncate_ip(ip) {
                    Some(net) => Cell::Text(Cow::Owned(net)),
                    None => Cell::Null,
                };
            }
        }
        for col in &self.hashed {
            let cell = &mut row.cells[*col];
            if let Cell::Text(v) = cell
                && !v.is_empty()
            {
                *cell = Cell::Text(Cow::Owned(privacy::keyed_hash(&self.key, v)));
            }
        }
    }
}
