//! Measures JSON parsers on the loader's access pattern: every line of an NDJSON export parsed (and validated)
//! into its top-level members, each as (decoded key, exact raw text of the value). Then checks that each
//! parser rejects the malformed lines the loader must reject, since a fast parser that accepts bad JSON would
//! put it in the dataset.
//!
//!     cargo run --release --manifest-path bench/parsers/Cargo.toml -- FILE [MAX_LINES]
//!
//! One thread; the figure is the input's bytes over the wall time of the parse alone (the file is read into
//! memory first). The loader parses on every core of its pool, so per-core throughput is what compares.
//!
//! `Key` and `Members` mirror `Entries` in the loader's `src/json.rs` (the serde_json row is that code), made
//! generic over the raw-value type so sonic-rs runs the same visitor. They are copied, not imported: linking
//! the loader would build deltalake and object_store for a one-file measurement. Keep them in step with
//! `src/json.rs`.

use std::borrow::Cow;
use std::fmt;
use std::time::Instant;

use serde::de::{self, Deserialize, Deserializer, MapAccess, Visitor};

/// A decoded object key, borrowed when it holds no escape.
struct Key<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string key")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(v.to_owned())))
            }
        }
        d.deserialize_str(KeyVisitor)
    }
}

/// The members of an object, with each value as the raw value type `V` of a parser.
struct Members<'a, V>(Vec<(Cow<'a, str>, V)>);

impl<'de, V: Deserialize<'de>> Deserialize<'de> for Members<'de, V> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct MembersVisitor<V>(std::marker::PhantomData<V>);
        impl<'de, V: Deserialize<'de>> Visitor<'de> for MembersVisitor<V> {
            type Value = Members<'de, V>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut out = Vec::with_capacity(16);
                while let Some(Key(k)) = map.next_key()? {
                    out.push((k, map.next_value()?));
                }
                Ok(Members(out))
            }
        }
        d.deserialize_map(MembersVisitor(std::marker::PhantomData))
    }
}

type Parser = fn(&str) -> Option<usize>;

/// serde_json into (key, `&RawValue`): what the loader does.
fn serde_json_raw(line: &str) -> Option<usize> {
    let m: Members<'_, &serde_json::value::RawValue> = serde_json::from_str(line).ok()?;
    Some(m.0.iter().map(|(_, v)| v.get().len()).sum())
}

/// sonic-rs through serde into (key, `LazyValue`).
fn sonic_serde(line: &str) -> Option<usize> {
    let m: Members<'_, sonic_rs::LazyValue<'_>> = sonic_rs::from_str(line).ok()?;
    Some(m.0.iter().map(|(_, v)| v.as_raw_str().len()).sum())
}

/// sonic-rs's own lazy object iterator.
fn sonic_iter(line: &str) -> Option<usize> {
    let mut n = 0;
    for member in sonic_rs::to_object_iter(line) {
        let (_, v) = member.ok()?;
        n += v.as_raw_str().len();
    }
    Some(n)
}

/// simd-json to a borrowed DOM (it gives no raw text of a value: numbers would have to be re-written).
fn simd_json_dom(line: &str) -> Option<usize> {
    use simd_json::prelude::*;
    let mut bytes = line.as_bytes().to_vec();
    let v = simd_json::to_borrowed_value(&mut bytes).ok()?;
    Some(v.as_object()?.len())
}

const PARSERS: &[(&str, Parser)] = &[
    ("serde_json, RawValue members (the loader)", serde_json_raw),
    ("sonic-rs, LazyValue members through serde", sonic_serde),
    ("sonic-rs, to_object_iter", sonic_iter),
    ("simd-json, borrowed DOM", simd_json_dom),
];

/// Lines the loader rejects as invalid JSON (a lone surrogate escape is rejected by the loader's own check).
const MALFORMED: &[&str] = &[
    r#"{"a":[1,2,}"#,
    r#"{"a":tru}"#,
    "{\"a\":\"x\u{1}\"}",
    r#"{"a":01}"#,
    r#"{"a":1.}"#,
    r#"{"a":"\q"}"#,
    r#"{"a":{"b":1,}}"#,
    r#"{"a":{"b" 1}}"#,
    r#"{"a":[1 2]}"#,
    r#"{"a":-}"#,
    r#"{"a":1e}"#,
    r#"{"a":1} x"#,
    r#"{"a":{"b":"\u12"}}"#,
];

fn main() {
    let mut args = std::env::args().skip(1);
    let Some(path) = args.next() else {
        eprintln!("usage: parsers-bench FILE [MAX_LINES]");
        std::process::exit(2);
    };
    let max: usize = args
        .next()
        .and_then(|s| s.parse().ok())
        .unwrap_or(usize::MAX);
    let data = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        eprintln!("reading {path}: {e}");
        std::process::exit(1);
    });
    let lines: Vec<&str> = data.lines().take(max).collect();
    let bytes: usize = lines.iter().map(|l| l.len() + 1).sum();
    println!(
        "{} lines, {:.0} MB, one thread\n",
        lines.len(),
        bytes as f64 / 1e6
    );
    println!("| parser | MB/s | lines parsed | malformed lines accepted |");
    println!("|---|---|---|---|");
    for (name, parse) in PARSERS {
        let start = Instant::now();
        let parsed = lines.iter().filter(|l| parse(l).is_some()).count();
        let secs = start.elapsed().as_secs_f64();
        let accepted: Vec<&str> = MALFORMED
            .iter()
            .copied()
            .filter(|l| parse(l).is_some())
            .collect();
        println!(
            "| {name} | {:.0} | {parsed} | {} |",
            bytes as f64 / secs / 1e6,
            if accepted.is_empty() {
                "none".to_string()
            } else {
                format!("`{}`", accepted.join("`, `"))
            }
        );
    }
}
