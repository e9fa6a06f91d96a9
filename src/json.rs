//! Raw JSON as the loader reads it: the members of an object in document order (duplicates visible, each value
//! as its exact text), the elements of an array, and JSON string literals for output.
//!
//! Why this module exists: every value keeps the text it was written with (numbers are never re-formatted), so
//! the loader walks JSON text itself rather than through a DOM: the parser validates a line once with serde
//! and then these light scanners split objects and arrays it already validated. The parser, the mapping, batch
//! envelopes and the `accounts` merge all walk JSON this way.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;

/// The top-level (or nested) members of a JSON object, in document order, duplicates included. Keys are
/// decoded (borrowed when they have no escapes); values keep their raw JSON text.
#[derive(Debug, Default)]
pub struct Entries<'a>(pub Vec<(Cow<'a, str>, &'a str)>);

impl<'a> Entries<'a> {
    /// Parses (and validates) the text of a JSON object. The text must be a whole object (trailing white
    /// space allowed).
    pub fn parse(text: &'a str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(text)
    }

    /// The members of an object whose text was already validated (an element of a batch): the light
    /// scanner, no second validation. `None` when the text is not an object.
    pub fn scan(text: &'a str) -> Option<Self> {
        let mut out = Vec::with_capacity(16);
        for_each_member(text, |k, v| out.push((k, v))).ok()?;
        Some(Entries(out))
    }

    /// The first value under `key`, matched exactly.
    pub fn get(&self, key: &str) -> Option<&'a str> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| *v)
    }

    /// The first key that appears more than once, if any.
    pub fn duplicate_key(&self) -> Option<&str> {
        let keys = &self.0;
        if keys.len() <= 32 {
            for (i, (k, _)) in keys.iter().enumerate() {
                if keys[..i].iter().any(|(p, _)| p == k) {
                    return Some(k);
                }
            }
            None
        } else {
            let mut seen = std::collections::HashSet::with_capacity(keys.len());
            keys.iter()
                .map(|(k, _)| k.as_ref())
                .find(|k| !seen.insert(*k))
        }
    }
}

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
            fn visit_string<E: de::Error>(self, v: String) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(v)))
            }
        }
        d.deserialize_str(KeyVisitor)
    }
}

impl<'de> Deserialize<'de> for Entries<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct EntriesVisitor;
        impl<'de> Visitor<'de> for EntriesVisitor {
            type Value = Entries<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Entries<'de>, A::Error> {
                let mut out = Vec::with_capacity(map.size_hint().unwrap_or(16));
                while let Some(Key(k)) = map.next_key()? {
                    let v: &'de RawValue = map.next_value()?;
                    out.push((k, v.get()));
                }
                Ok(Entries(out))
            }
        }
        d.deserialize_map(EntriesVisitor)
    }
}

/// Calls `f` with each member of the JSON object `text` (its key, decoded, and its value's raw text), in
/// document order, duplicates included.
///
/// `text` must be JSON that the line's parse already validated: this is a light scanner that only finds
/// where keys and values end, so the mapper walks nested objects (traits, address, context) without
/// validating them a second time. On text that is not valid JSON it returns an error (it never panics), but
/// it does not promise to notice every fault.
pub fn for_each_member<'a>(
    text: &'a str,
    mut f: impl FnMut(Cow<'a, str>, &'a str),
) -> Result<(), NotAnObject> {
    let b = text.as_bytes();
    let mut i = skip_ws(b, 0);
    if b.get(i) != Some(&b'{') {
        return Err(NotAnObject);
    }
    i = skip_ws(b, i + 1);
    if b.get(i) == Some(&b'}') {
        return Ok(());
    }
    loop {
        if b.get(i) != Some(&b'"') {
            return Err(NotAnObject);
        }
        let key_end = string_end(b, i)?;
        let key_raw = text.get(i..key_end).ok_or(NotAnObject)?;
        let key = crate::values::decode_str(key_raw).ok_or(NotAnObject)?;
        i = skip_ws(b, key_end);
        if b.get(i) != Some(&b':') {
            return Err(NotAnObject);
        }
        let start = skip_ws(b, i + 1);
        let end = value_end(b, start)?;
        f(key, text.get(start..end).ok_or(NotAnObject)?);
        i = skip_ws(b, end);
        match b.get(i) {
            Some(b',') => i = skip_ws(b, i + 1),
            Some(b'}') => return Ok(()),
            _ => return Err(NotAnObject),
        }
    }
}

/// Calls `f` with the raw text of each element of the JSON array `text`, in order. Like [`for_each_member`],
/// a light scanner for text that was already validated.
pub fn for_each_element<'a>(text: &'a str, mut f: impl FnMut(&'a str)) -> Result<(), NotAnObject> {
    let b = text.as_bytes();
    let mut i = skip_ws(b, 0);
    if b.get(i) != Some(&b'[') {
        return Err(NotAnObject);
    }
    i = skip_ws(b, i + 1);
    if b.get(i) == Some(&b']') {
        return Ok(());
    }
    loop {
        let end = value_end(b, i)?;
        f(text.get(i..end).ok_or(NotAnObject)?);
        i = skip_ws(b, end);
        match b.get(i) {
            Some(b',') => i = skip_ws(b, i + 1),
            Some(b']') => return Ok(()),
            _ => return Err(NotAnObject),
        }
    }
}

/// The text handed to [`for_each_member`] was not a JSON object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NotAnObject;

fn skip_ws(b: &[u8], mut i: usize) -> usize {
    while matches!(b.get(i), Some(b' ' | b'\t' | b'\n' | b'\r')) {
        i += 1;
    }
    i
}

/// The index after the closing quote of the string that opens at `b[i]`.
fn string_end(b: &[u8], i: usize) -> Result<usize, NotAnObject> {
    let mut j = i + 1;
    loop {
        let k =
            j + memchr::memchr2(b'"', b'\\', b.get(j..).ok_or(NotAnObject)?).ok_or(NotAnObject)?;
        if b[k] == b'"' {
            return Ok(k + 1);
        }
        j = k + 2; // skip the escaped character (a \u escape's hex digits are plain characters)
    }
}

/// The index after the end of the value that starts at `b[i]`.
fn value_end(b: &[u8], i: usize) -> Result<usize, NotAnObject> {
    match b.get(i) {
        Some(b'"') => string_end(b, i),
        Some(b'{' | b'[') => {
            let mut depth = 0usize;
            let mut j = i;
            loop {
                match b.get(j) {
                    Some(b'"') => {
                        j = string_end(b, j)?;
                        continue;
                    }
                    Some(b'{' | b'[') => depth += 1,
                    Some(b'}' | b']') => {
                        depth -= 1;
                        if depth == 0 {
                            return Ok(j + 1);
                        }
                    }
                    Some(_) => {}
                    None => return Err(NotAnObject),
                }
                j += 1;
            }
        }
        Some(_) => {
            let n = b[i..]
                .iter()
                .position(|c| matches!(c, b',' | b'}' | b']' | b' ' | b'\t' | b'\n' | b'\r'))
                .unwrap_or(b.len() - i);
            if n == 0 { Err(NotAnObject) } else { Ok(i + n) }
        }
        None => Err(NotAnObject),
    }
}

/// `s` as a JSON string literal (for messages and extras keys).
pub fn json_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    push_json_str(&mut out, s);
    out
}

/// Appends `s` as a JSON string literal.
pub fn push_json_str(out: &mut String, s: &str) {
    if s.bytes().any(|b| b < 0x20 || b == b'"' || b == b'\\') {
        // Serialising a str into a String cannot fail.
        out.push_str(&serde_json::to_string(s).unwrap_or_default());
    } else {
        out.push('"');
        out.push_str(s);
        out.push('"');
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json_value() -> impl proptest::strategy::Strategy<Value = serde_json::Value> {
        use proptest::prelude::*;
        let leaf = prop_oneof![
            Just(serde_json::Value::Null),
            any::<bool>().prop_map(serde_json::Value::from),
            any::<i64>().prop_map(serde_json::Value::from),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(serde_json::Value::from),
            "\\PC{0,8}".prop_map(serde_json::Value::from),
            Just(serde_json::Value::from(
                "quote \" backslash \\ brace } bracket ] comma ,"
            )),
        ];
        leaf.prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::Array),
                proptest::collection::btree_map("\\PC{0,6}", inner, 0..4)
                    .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest::proptest! {
        /// The light scanner finds the same members as serde_json's parse, on any valid object text.
        #[test]
        fn scanner_agrees_with_serde(
            members in proptest::collection::vec(("\\PC{0,6}", json_value()), 0..6),
            pretty: bool,
        ) {
            let obj = serde_json::Value::Object(members.into_iter().collect());
            let text = if pretty { serde_json::to_string_pretty(&obj).unwrap() } else { obj.to_string() };
            let expected: Vec<(String, String)> = Entries::parse(&text)
                .unwrap()
                .0
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            let mut got = Vec::new();
            for_each_member(&text, |k, v| got.push((k.into_owned(), v.to_string()))).unwrap();
            proptest::prop_assert_eq!(got, expected);
        }

        /// On arbitrary text it returns an error or members, and never panics.
        #[test]
        fn scanner_never_panics(text in "\\PC{0,40}") {
            let _ = for_each_member(&text, |_, _| {});
        }
    }

    #[test]
    fn scanner_rejects_non_objects() {
        assert_eq!(for_each_member("[1]", |_, _| {}), Err(NotAnObject));
        assert_eq!(for_each_member("{\"a\":", |_, _| {}), Err(NotAnObject));
        assert_eq!(for_each_member("{\"a\" 1}", |_, _| {}), Err(NotAnObject));
        let mut got = Vec::new();
        for_each_member(
            r#" { "a\u0062" : [1, {"x": "]"}] , "c":-1.5e3 } "#,
            |k, v| got.push((k, v)),
        )
        .unwrap();
        assert_eq!(
            got,
            [
                (Cow::Owned("ab".into()), r#"[1, {"x": "]"}]"#),
                (Cow::Borrowed("c"), "-1.5e3")
            ]
        );
    }

    #[test]
    fn json_quote_escapes() {
        assert_eq!(json_quote("plain"), "\"plain\"");
        assert_eq!(json_quote("a\"b\\c\n"), r#""a\"b\\c\n""#);
    }
}
