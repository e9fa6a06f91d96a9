//! Property test of the lossless rule: for generated Group calls, every input value is either in
//! its typed column (by the text or time rule) or, as the same JSON value, in the right extras column.
//!
//! The oracle below is written independently of `src/mapping/`: it walks the input as `serde_json::Value`s
//! and works out, per field, where the value must be; the test then reads the mapper's row.

use std::collections::BTreeSet;

use group_loader::mapping::{Cell, Row};
use group_loader::parse::{Outcome, Verdict, classify};
use group_loader::schema::COLUMNS;
use proptest::prelude::*;
use serde_json::{Map, Value};

/// A generated JSON value: its text as written, and what it parses to.
#[derive(Debug, Clone)]
struct J {
    raw: String,
    value: Value,
    /// For an object: its members in document order.
    members: Option<Vec<(String, J)>>,
}

fn j(raw: &str) -> J {
    let value: Value = serde_json::from_str(raw).expect("generated JSON");
    // Objects from the pools have at most one key, so their order is known; larger objects come from `object`.
    let members = match &value {
        Value::Object(m) if m.len() <= 1 => Some(
            m.iter()
                .map(|(k, v)| (k.clone(), j(&v.to_string())))
                .collect(),
        ),
        _ => None,
    };
    J {
        raw: raw.to_string(),
        value,
        members,
    }
}

/// Times in the pool and their microseconds (any other value is not a time) (worked out by hand; `date -u -d @1709294400` = 2024-03-01 12:00).
const TIMES: &[(&str, Option<i64>)] = &[
    (r#""2024-03-01T12:00:00Z""#, Some(1_709_294_400_000_000)),
    (r#""2024-03-01""#, Some(1_709_251_200_000_000)),
    ("1709294400", Some(1_709_294_400_000_000)),
    ("1709294400123", Some(1_709_294_400_123_000)),
    // The leaf pool's numbers are epoch seconds too (|v| < 1e11); the 20-digit one is past year 9999.
    ("0", Some(0)),
    ("329", Some(329_000_000)),
    ("-12", Some(-12_000_000)),
    ("1e3", Some(1_000_000_000)),
    ("1.50", Some(1_500_000)),
    ("12345678901234567890", None),
    (r#""1988-04-31""#, None),
    (r#""tomorrow""#, None),
    ("true", None),
    (r#"{"t":1}"#, None),
];

fn leaf() -> BoxedStrategy<J> {
    prop_oneof![
        Just(r#""""#),
        Just(r#""Initech""#),
        Just(r#""ünïcödé ✓""#),
        Just(r#""quote \" backslash \\ tab \t""#),
        Just(r#""\u00e9\ud83d\ude00""#),
        Just("0"),
        Just("329"),
        Just("-12"),
        Just("1e3"),
        Just("1.50"),
        Just("12345678901234567890"),
        Just("true"),
        Just("false"),
        Just("null"),
        Just(r#""2024-03-01T12:00:00Z""#),
        Just("1709294400"),
    ]
    .prop_map(j)
    .boxed()
}

fn value() -> BoxedStrategy<J> {
    leaf()
        .prop_recursive(2, 8, 3, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..3).prop_map(|v| {
                    j(&format!(
                        "[{}]",
                        v.iter()
                            .map(|x| x.raw.as_str())
                            .collect::<Vec<_>>()
                            .join(",")
                    ))
                }),
                prop::collection::vec(("[a-c]{1,2}", inner), 0..3)
                    .prop_map(|kv| object(&dedup(kv))),
            ]
        })
        .boxed()
}

fn dedup(kv: Vec<(String, J)>) -> Vec<(String, J)> {
    let mut seen = BTreeSet::new();
    kv.into_iter()
        .filter(|(k, _)| seen.insert(k.clone()))
        .collect()
}

fn object(members: &[(String, J)]) -> J {
    let body: Vec<String> = members
        .iter()
        .map(|(k, v)| format!("{}:{}", serde_json::to_string(k).unwrap(), v.raw))
        .collect();
    J {
        members: Some(members.to_vec()),
        ..j(&format!("{{{}}}", body.join(",")))
    }
}

fn members(
    keys: &'static [&'static str],
    values: BoxedStrategy<J>,
) -> BoxedStrategy<Vec<(String, J)>> {
    prop::collection::vec((prop::sample::select(keys), values), 0..8)
        .prop_map(|kv| dedup(kv.into_iter().map(|(k, v)| (k.to_string(), v)).collect()))
        .boxed()
}

const TRAIT_KEYS: &[&str] = &[
    "name",
    "Name",
    "NAME",
    "n a m e",
    "createdAt",
    "created_at",
    "Created-At",
    "address",
    "Address",
    "email",
    "e-mail",
    "id",
    "ID",
    "plan",
    "employees",
    "industry",
    "avatar",
    "description",
    "phone",
    "website",
    "total billed",
    "custom",
    "x_y",
    "namé",
];
const ADDRESS_KEYS: &[&str] = &[
    "street",
    "city",
    "City",
    "state",
    "postalCode",
    "postal_code",
    "Postal Code",
    "country",
    "line2",
    "zip",
];
const CONTEXT_KEYS: &[&str] = &["ip", "IP", "userAgent", "library", "locale", "page"];
const LIBRARY_KEYS: &[&str] = &["name", "version", "build", "Name"];
const TOP_KEYS: &[&str] = &[
    "messageId",
    "anonymousId",
    "channel",
    "sentAt",
    "receivedAt",
    "originalTimestamp",
    "integrations",
    "version",
    "projectId",
    "_metadata",
    "properties",
];

fn time_value() -> BoxedStrategy<J> {
    prop::sample::select(TIMES)
        .prop_map(|(raw, _)| j(raw))
        .boxed()
}

fn address() -> BoxedStrategy<J> {
    prop_oneof![3 => members(ADDRESS_KEYS, value()).prop_map(|m| object(&m)), 1 => value()].boxed()
}

fn traits() -> impl Strategy<Value = J> {
    let v = prop_oneof![3 => value(), 1 => time_value(), 1 => address()].boxed();
    prop_oneof![6 => members(TRAIT_KEYS, v).prop_map(|m| object(&m)), 1 => value()]
}

fn context() -> impl Strategy<Value = J> {
    let library =
        prop_oneof![3 => members(LIBRARY_KEYS, value()).prop_map(|m| object(&m)), 1 => value()];
    let v = prop_oneof![2 => value(), 1 => library].boxed();
    prop_oneof![4 => members(CONTEXT_KEYS, v).prop_map(|m| object(&m)), 1 => value()]
}

fn top_level() -> impl Strategy<Value = Vec<(String, J)>> {
    let v = prop_oneof![2 => value(), 1 => time_value()].boxed();
    (
        members(TOP_KEYS, v),
        traits(),
        context(),
        time_value(),
        any::<bool>(),
    )
        .prop_map(|(mut m, t, c, ts, b)| {
            m.retain(|(k, v)| k != "anonymousId" || is_text_or_null(&v.value));
            m.push(("traits".into(), t));
            m.push(("context".into(), c));
            if b {
                m.push(("timestamp".into(), ts));
            }
            m
        })
}

fn is_text_or_null(v: &Value) -> bool {
    matches!(v, Value::String(_) | Value::Number(_) | Value::Null)
}

/// The text rule, from the oracle's side.
fn text_of(raw: &str, v: &Value) -> Option<Option<String>> {
    match v {
        Value::String(s) => Some(Some(s.clone())),
        Value::Number(_) => Some(Some(raw.to_string())),
        Value::Bool(b) => Some(Some(b.to_string())),
        Value::Null => Some(None),
        _ => None, // not text
    }
}

fn time_of(raw: &str) -> Option<Option<i64>> {
    if raw == "null" {
        return Some(None);
    }
    TIMES
        .iter()
        .find(|(r, _)| *r == raw)
        .and_then(|(_, t)| t.map(Some))
}

fn normalise(k: &str) -> String {
    k.chars()
        .filter(char::is_ascii_alphanumeric)
        .map(|c| c.to_ascii_lowercase())
        .collect()
}

struct Check<'r> {
    row: &'r Row<'r>,
}

impl Check<'_> {
    fn cell(&self, column: &str) -> &Cell<'_> {
        let i = COLUMNS
            .iter()
            .position(|c| c.name == column)
            .expect("column");
        &self.row.cells[i]
    }

    fn text(&self, column: &str) -> Option<String> {
        match self.cell(column) {
            Cell::Text(t) => Some(t.to_string()),
            Cell::Null => None,
            Cell::Time(_) => panic!("{column} is a time"),
        }
    }

    fn time(&self, column: &str) -> Option<i64> {
        match self.cell(column) {
            Cell::Time(t) => Some(*t),
            Cell::Null => None,
            Cell::Text(_) => panic!("{column} is text"),
        }
    }

    fn extras(&self, column: &str) -> Map<String, Value> {
        match self.text(column) {
            Some(json) => match serde_json::from_str(&json) {
                Ok(Value::Object(m)) => {
                    assert!(!m.is_empty(), "{column} is an empty object; null expected");
                    m
                }
                other => panic!("{column} is not a JSON object: {other:?}"),
            },
            None => Map::new(),
        }
    }
}

/// Places a value by the text rule: in `column`, or whole under `key` in `expected` extras.
fn expect_text(
    check: &Check<'_>,
    column: &str,
    key: &str,
    v: &J,
    expected: &mut Map<String, Value>,
) {
    match text_of(&v.raw, &v.value) {
        Some(text) => assert_eq!(check.text(column), text, "{column} from {key}: {}", v.raw),
        None => {
            assert_eq!(check.text(column), None, "{column}");
            expected.insert(key.to_string(), v.value.clone());
        }
    }
}

fn expect_time(
    check: &Check<'_>,
    column: &str,
    key: &str,
    v: &J,
    expected: &mut Map<String, Value>,
) -> bool {
    match time_of(&v.raw) {
        Some(t) => {
            assert_eq!(check.time(column), t, "{column} from {}", v.raw);
            true
        }
        None => {
            expected.insert(key.to_string(), v.value.clone());
            false
        }
    }
}

fn members_of(v: &J) -> Vec<(String, J)> {
    v.members.clone().expect("an object")
}

fn check_traits(check: &Check<'_>, traits: &J) {
    let mut expected = Map::new();
    let mut seen = BTreeSet::new();
    let mut address_columns_set = false;
    for (k, v) in members_of(traits) {
        let norm = normalise(&k);
        let reserved = [
            "name",
            "industry",
            "employees",
            "plan",
            "email",
            "phone",
            "website",
            "avatar",
            "description",
            "createdat",
            "address",
            "id",
        ]
        .contains(&norm.as_str());
        if !reserved || !seen.insert(norm.clone()) {
            expected.insert(k, v.value);
            continue;
        }
        match norm.as_str() {
            "createdat" => {
                expect_time(check, "created_at", &k, &v, &mut expected);
            }
            "id" => expect_text(check, "trait_id", &k, &v, &mut expected),
            "address" => match &v.value {
                Value::Object(_) => {
                    address_columns_set = true;
                    let mut leftover = Map::new();
                    let mut seen_sub = BTreeSet::new();
                    for (sk, sv) in members_of(&v) {
                        let sn = normalise(&sk);
                        let col = match sn.as_str() {
                            "street" | "city" | "state" | "country" => format!("address_{sn}"),
                            "postalcode" => "address_postal_code".to_string(),
                            _ => String::new(),
                        };
                        if col.is_empty() || !seen_sub.insert(sn) {
                            leftover.insert(sk, sv.value);
                        } else {
                            expect_text(check, &col, &sk, &sv, &mut leftover);
                        }
                    }
                    if !leftover.is_empty() {
                        expected.insert(k, Value::Object(leftover));
                    }
                }
                Value::Null => {}
                other => {
                    expected.insert(k, other.clone());
                }
            },
            col => expect_text(check, col, &k, &v, &mut expected),
        }
    }
    if !address_columns_set {
        for c in [
            "address_street",
            "address_city",
            "address_state",
            "address_postal_code",
            "address_country",
        ] {
            assert_eq!(check.text(c), None, "{c} without an address object");
        }
    }
    assert_eq!(
        check.extras("extra_traits"),
        expected,
        "extra_traits of {}",
        traits.raw
    );
}

fn check_context(check: &Check<'_>, context: &J) {
    let mut expected = Map::new();
    let mut seen = BTreeSet::new();
    for (k, v) in members_of(context) {
        let first = seen.insert(k.clone());
        match (k.as_str(), first) {
            ("ip", true) => expect_text(check, "context_ip", &k, &v, &mut expected),
            ("userAgent", true) => expect_text(check, "context_user_agent", &k, &v, &mut expected),
            ("library", true) if matches!(v.value, Value::Object(_)) => {
                let mut leftover = Map::new();
                for (lk, lv) in members_of(&v) {
                    match lk.as_str() {
                        "name" => {
                            expect_text(check, "context_library_name", &lk, &lv, &mut leftover)
                        }
                        "version" => {
                            expect_text(check, "context_library_version", &lk, &lv, &mut leftover)
                        }
                        _ => {
                            leftover.insert(lk, lv.value);
                        }
                    }
                }
                if !leftover.is_empty() {
                    expected.insert(k, Value::Object(leftover));
                }
            }
            ("library", true) if v.value.is_null() => {}
            _ => {
                expected.insert(k, v.value);
            }
        }
    }
    assert_eq!(
        check.extras("extra_context"),
        expected,
        "extra_context of {}",
        context.raw
    );
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn typed_columns_plus_extras_give_back_every_value(fields in top_level()) {
        let mut all = vec![
            ("type".to_string(), j(r#""group""#)),
            ("groupId".to_string(), j(r#""g1""#)),
            ("userId".to_string(), j("42")),
        ];
        all.extend(fields);
        let line = object(&all).raw;
        let has_time = all.iter().any(|(k, v)| {
            ["timestamp", "originalTimestamp", "receivedAt"].contains(&k.as_str()) && time_of(&v.raw).flatten().is_some()
        });
        let outcome = classify(line.as_bytes(), None);
        let row = match outcome {
            Outcome::Event(Verdict::Row(row)) => row,
            Outcome::Event(Verdict::Rejected(r)) => {
                prop_assert!(!has_time, "rejected {:?} although a time is valid: {}", r, line);
                prop_assert_eq!(r.reason.as_str(), "missing_time");
                return Ok(());
            }
            other => panic!("unexpected {other:?} for {line}"),
        };
        prop_assert!(has_time);
        let check = Check { row: &row };
        assert_eq!(check.text("group_id").as_deref(), Some("g1"));
        assert_eq!(check.text("user_id").as_deref(), Some("42"));
        let mut expected = Map::new();
        for (k, v) in &all {
            match k.as_str() {
                "type" | "groupId" | "userId" => {}
                "anonymousId" => expect_text(&check, "anonymous_id", k, v, &mut expected),
                "messageId" => expect_text(&check, "id", k, v, &mut expected),
                "channel" => expect_text(&check, "channel", k, v, &mut expected),
                "sentAt" => { expect_time(&check, "sent_at", k, v, &mut expected); }
                "receivedAt" => { expect_time(&check, "received_at", k, v, &mut expected); }
                "originalTimestamp" => { expect_time(&check, "original_timestamp", k, v, &mut expected); }
                "timestamp" => {
                    if time_of(&v.raw).is_none() {
                        expected.insert(k.clone(), v.value.clone());
                    } else if let Some(Some(t)) = time_of(&v.raw) {
                        assert_eq!(check.time("timestamp"), Some(t));
                    }
                }
                "traits" => match &v.value {
                    Value::Object(_) => check_traits(&check, v),
                    Value::Null => {}
                    other => { expected.insert(k.clone(), other.clone()); }
                },
                "context" => match &v.value {
                    Value::Object(_) => check_context(&check, v),
                    Value::Null => {}
                    other => { expected.insert(k.clone(), other.clone()); }
                },
                _ => { expected.insert(k.clone(), v.value.clone()); }
            }
        }
        prop_assert_eq!(check.extras("extra"), expected, "extra of {}", line);
        prop_assert!(check.time("timestamp").is_some(), "timestamp is never null");
    }
}
