//! One line through classification and mapping: never a panic; a line that becomes a row is valid JSON, its
//! JSON columns hold valid JSON objects, text cells are the kind their column says, `group_id` and `timestamp`
//! are never null.
#![no_main]

use group_loader::mapping::Cell;
use group_loader::parse::{Outcome, classify};
use group_loader::schema::{COLUMNS, Kind};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Outcome::Row(row) = classify(data, None) {
        // Grammar only: numbers beyond f64 (`1e400`) are valid JSON and load as text (SPEC §3), though
        // serde_json::Value refuses them — the first finding of this fuzzer was that oracle, not the loader.
        assert!(
            serde_json::from_slice::<serde::de::IgnoredAny>(data).is_ok(),
            "a row from a line that is not JSON"
        );
        for (cell, col) in row.cells.iter().zip(COLUMNS.iter()) {
            match (cell, col.kind) {
                (Cell::Null, _) => assert!(col.nullable, "{} is null", col.name),
                (Cell::Text(t), Kind::Json) => assert!(
                    t.starts_with('{')
                        && serde_json::from_str::<serde::de::IgnoredAny>(t).is_ok(),
                    "{} is not a JSON object: {t}",
                    col.name
                ),
                (Cell::Text(_), Kind::Text) | (Cell::Time(_), Kind::Time) => {}
                (cell, kind) => panic!("{}: {cell:?} in a {kind:?} column", col.name),
            }
        }
        let _ = row.partition_time();
    }
});
