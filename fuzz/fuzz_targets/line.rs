//! One line through classification and mapping: never a panic; a line that becomes a row is valid JSON, its
//! JSON columns hold valid JSON objects, text cells are the kind their column says, `group_id` and `timestamp`
//! are never null.
#![no_main]

use group_loader::mapping::{Cell, Row};
use group_loader::parse::{Outcome, Verdict, classify};
use group_loader::schema::{COLUMNS, Kind};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let rows: Vec<Row<'_>> = match classify(data, None) {
        Outcome::Event(Verdict::Row(row)) => vec![row],
        // A batch envelope's events: rows built from its elements and the envelope's defaults.
        Outcome::Batch(Ok(events)) => events
            .into_iter()
            .filter_map(|e| match e.verdict {
                Verdict::Row(row) => Some(row),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    };
    for row in rows {
        // Grammar only: numbers beyond f64 (`1e400`) are valid JSON and load as text, though
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
