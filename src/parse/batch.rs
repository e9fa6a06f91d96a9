//! Batch envelopes: `{"batch": [...], "context": {...}, "integrations": {...}, "sentAt": ...}`.
//!
//! Why this module exists: Segment's HTTP `/v1/batch` endpoint and its libraries (analytics-go,
//! analytics-python, analytics-node) send events in envelopes, and payloads captured from them arrive one
//! envelope per line. The envelope's `context`, `integrations` and `sentAt` belong to every event in it. This
//! module cuts an envelope into its events and merges those defaults in, so that each event is then classified
//! and mapped exactly like a line of its own ([`crate::parse::classify_event`]). Nothing else of the envelope
//! is an event field (`writeKey` is a credential): it is never stored.
//!
//! The merge, per event, for `context` and `integrations`: the event's own object keeps its keys, in its
//! order, and gains the envelope's keys it does not have, after them (the event's keys win); an event whose own
//! is absent or `null` takes the envelope's whole; an event whose own is not an object keeps it. `sentAt`: the
//! envelope's applies to events whose own is absent or `null`.

use std::borrow::Cow;

use crate::json::{Entries, for_each_element, for_each_member, json_quote, push_json_str};
use crate::parse::{BatchEvent, Outcome, Verdict, classify_event};
use crate::reject::{Reason, Reject};
use crate::values::{self, JsonKind};

/// The envelope key holding the events.
const BATCH: &str = "batch";
/// Envelope keys merged into each event's object of the same name.
const MERGED_OBJECTS: [&str; 2] = ["context", "integrations"];
/// Envelope key applied to events that have none.
const DEFAULTED: &str = "sentAt";

/// True for a line's object that is a batch envelope: no `type` key, and a `batch` key.
pub fn is_envelope(entries: &Entries<'_>) -> bool {
    entries.get("type").is_none() && entries.get(BATCH).is_some()
}

/// The defaults an envelope gives its events.
struct Defaults<'a> {
    objects: [Option<&'a str>; 2],
    sent_at: Option<&'a str>,
}

/// Cuts an envelope into its events (each classified like a line), or rejects the envelope as one event.
pub fn split<'a>(envelope: &Entries<'a>) -> Outcome<'a> {
    let reject = |reason, message: String| Outcome::Batch(Err(Reject::new(reason, message)));
    let Some(batch) = envelope.get(BATCH) else {
        return reject(Reason::InvalidBatch, "no \"batch\" key".into());
    };
    if values::kind(batch) != JsonKind::Array {
        return reject(
            Reason::InvalidBatch,
            format!(
                "a batch envelope's \"batch\" must be an array of events, got {}",
                short(batch)
            ),
        );
    }
    let mut elements = Vec::new();
    if for_each_element(batch, |e| elements.push(e)).is_err() {
        return reject(Reason::InvalidBatch, "\"batch\" is not an array".into());
    }
    if elements.is_empty() {
        return reject(
            Reason::InvalidBatch,
            "a batch envelope's \"batch\" array is empty".into(),
        );
    }
    if let Some(k) = envelope.duplicate_key() {
        return reject(
            Reason::DuplicateKey,
            format!(
                "top-level key {} appears more than once in the batch envelope",
                json_quote(k)
            ),
        );
    }
    let object = |key| {
        envelope
            .get(key)
            .filter(|v| values::kind(v) == JsonKind::Object)
    };
    let defaults = Defaults {
        objects: MERGED_OBJECTS.map(object),
        sent_at: envelope
            .get(DEFAULTED)
            .filter(|v| values::kind(v) != JsonKind::Null),
    };
    let events = elements
        .into_iter()
        .enumerate()
        .map(|(i, raw)| BatchEvent {
            raw,
            verdict: event(i, raw, &defaults),
        })
        .collect();
    Outcome::Batch(Ok(events))
}

/// The verdict on element `i` of a batch.
fn event<'a>(i: usize, raw: &'a str, defaults: &Defaults<'a>) -> Verdict<'a> {
    let own = match (values::kind(raw), Entries::scan(raw)) {
        (JsonKind::Object, Some(own)) => own,
        _ => {
            return Verdict::Rejected(Reject::new(
                Reason::NotAnObject,
                format!("element {i} of \"batch\" is not an object"),
            ));
        }
    };
    if is_envelope(&own) {
        return Verdict::Rejected(Reject::new(
            Reason::MissingType,
            format!(
                "element {i} of \"batch\" has no \"type\": a batch inside a batch is not expanded"
            ),
        ));
    }
    // Objects that need a merged text of their own (both the event and the envelope have one).
    let built: [Option<String>; 2] = std::array::from_fn(|k| {
        let own_value = own.get(MERGED_OBJECTS[k])?;
        merge_objects(own_value, defaults.objects[k]?)
    });
    if built.iter().all(Option::is_none) {
        // Every value borrows from the line: the row can too.
        let mut entries = own;
        apply_defaults(&mut entries, defaults, [None, None]);
        return classify_event(&entries);
    }
    let mut entries = own;
    apply_defaults(
        &mut entries,
        defaults,
        [built[0].as_deref(), built[1].as_deref()],
    );
    detach(classify_event(&entries))
}

/// Sets the envelope's defaults in an event's members: a merged object where one was built, the envelope's
/// object where the event's own is absent or `null`, and `sentAt` where the event has none.
fn apply_defaults<'b>(
    entries: &mut Entries<'b>,
    defaults: &Defaults<'b>,
    built: [Option<&'b str>; 2],
) {
    for (k, key) in MERGED_OBJECTS.iter().enumerate() {
        match built[k] {
            Some(merged) => set(entries, key, merged),
            None => {
                if let Some(env) = defaults.objects[k] {
                    set_if_missing(entries, key, env);
                }
            }
        }
    }
    if let Some(sent_at) = defaults.sent_at {
        set_if_missing(entries, DEFAULTED, sent_at);
    }
}

/// Replaces the first value under `key`.
fn set<'b>(entries: &mut Entries<'b>, key: &str, value: &'b str) {
    if let Some(slot) = entries.0.iter_mut().find(|(k, _)| k == key) {
        slot.1 = value;
    }
}

/// Sets `key` where the event has none (absent: appended; `null`: replaced).
fn set_if_missing<'b>(entries: &mut Entries<'b>, key: &'static str, value: &'b str) {
    match entries.0.iter_mut().find(|(k, _)| k == key) {
        Some(slot) if values::kind(slot.1) == JsonKind::Null => slot.1 = value,
        Some(_) => {}
        None => entries.0.push((Cow::Borrowed(key), value)),
    }
}

/// The event's own object merged with the envelope's: the event's members, then the envelope's members
/// whose keys the event does not have. `None` when nothing needs building (the event's own is not an object,
/// or is `null`, or the envelope adds no key).
fn merge_objects(own: &str, envelope: &str) -> Option<String> {
    if values::kind(own) != JsonKind::Object {
        return None;
    }
    let mut own_members = Vec::new();
    for_each_member(own, |k, v| own_members.push((k, v))).ok()?;
    let mut added = Vec::new();
    for_each_member(envelope, |k, v| {
        if !own_members.iter().any(|(o, _)| *o == k) {
            added.push((k, v));
        }
    })
    .ok()?;
    if added.is_empty() {
        return None;
    }
    let mut out = String::with_capacity(own.len() + envelope.len());
    for (k, v) in own_members.iter().chain(&added) {
        out.push(if out.is_empty() { '{' } else { ',' });
        push_json_str(&mut out, k);
        out.push(':');
        out.push_str(v);
    }
    out.push('}');
    Some(out)
}

/// A verdict that borrowed from merged text, made to own its text.
fn detach<'a>(verdict: Verdict<'_>) -> Verdict<'a> {
    match verdict {
        Verdict::Skipped(t) => Verdict::Skipped(Cow::Owned(t.into_owned())),
        Verdict::Rejected(r) => Verdict::Rejected(r),
        Verdict::Row(row) => Verdict::Row(row.into_owned()),
        Verdict::Suppressed => Verdict::Suppressed,
    }
}

/// The first 80 characters of a raw value, for messages.
fn short(raw: &str) -> String {
    match raw.char_indices().nth(80) {
        Some((i, _)) => format!("{}...", &raw[..i]),
        None => raw.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse::classify;
    use crate::schema::Col;

    fn events(line: &str) -> Vec<BatchEvent<'_>> {
        match classify(line.as_bytes(), None) {
            Outcome::Batch(Ok(events)) => events,
            other => panic!("expected a batch, got {other:?}"),
        }
    }

    fn reason(verdict: &Verdict<'_>) -> Reason {
        match verdict {
            Verdict::Rejected(r) => r.reason,
            other => panic!("expected a reject, got {other:?}"),
        }
    }

    fn line_reason(line: &str) -> Reason {
        match classify(line.as_bytes(), None) {
            Outcome::Event(v) => reason(&v),
            Outcome::Batch(Err(r)) => r.reason,
            other => panic!("expected one event, got {other:?}"),
        }
    }

    const EVENT: &str =
        r#""type":"group","groupId":"g","userId":"u","timestamp":"2024-01-01T00:00:00Z""#;

    #[test]
    fn envelope_defaults_merge_into_each_event() {
        let line = format!(
            r#"{{"batch":[{{{EVENT},"context":{{"ip":"1.1.1.1","locale":"fr"}}}},{{{EVENT},"context":null,"sentAt":"2024-01-02T00:00:00Z"}},{{{EVENT},"context":"web","integrations":{{"All":false}}}}],"context":{{"ip":"9.9.9.9","library":{{"name":"analytics-go"}},"locale":"en"}},"integrations":{{"Mixpanel":true}},"sentAt":"2024-01-03T00:00:00Z","writeKey":"secret"}}"#
        );
        let evs = events(&line);
        assert_eq!(evs.len(), 3);
        let row = |i: usize| match &evs[i].verdict {
            Verdict::Row(r) => r,
            other => panic!("{other:?}"),
        };
        // Event 0: its own context keys win (ip, locale), the envelope adds library; integrations and
        // sentAt come from the envelope.
        let r0 = row(0);
        assert_eq!(r0.text(Col::ContextIp), Some("1.1.1.1"));
        assert_eq!(r0.text(Col::ContextLibraryName), Some("analytics-go"));
        assert_eq!(r0.text(Col::ExtraContext), Some(r#"{"locale":"fr"}"#));
        assert_eq!(
            r0.text(Col::Extra),
            Some(r#"{"integrations":{"Mixpanel":true}}"#)
        );
        assert_eq!(
            r0.time(Col::SentAt),
            values::parse_time_str("2024-01-03T00:00:00Z")
        );
        // Event 1: context null takes the envelope's whole; its own sentAt wins.
        let r1 = row(1);
        assert_eq!(r1.text(Col::ContextIp), Some("9.9.9.9"));
        assert_eq!(r1.text(Col::ExtraContext), Some(r#"{"locale":"en"}"#));
        assert_eq!(
            r1.time(Col::SentAt),
            values::parse_time_str("2024-01-02T00:00:00Z")
        );
        // Event 2: a context that is not an object is kept as it is; integrations merged key by key.
        let r2 = row(2);
        assert_eq!(r2.text(Col::ContextIp), None);
        assert_eq!(
            r2.text(Col::Extra),
            Some(r#"{"context":"web","integrations":{"All":false,"Mixpanel":true}}"#)
        );
        // writeKey is never stored.
        for i in 0..3 {
            for col in [Col::Extra, Col::ExtraContext, Col::ExtraTraits] {
                assert!(!row(i).text(col).unwrap_or("").contains("secret"));
            }
        }
        // Each event's raw text is the element as written.
        assert!(evs[1].raw.starts_with('{') && evs[1].raw.contains(r#""context":null"#));
    }

    #[test]
    fn elements_are_classified_like_lines() {
        let line = format!(
            r#"{{"batch":[{{"type":"track","event":"x"}},7,{{{EVENT},"messageId":"m"}},{{"groupId":"g"}},{{"batch":[]}},{{"type":"Group","groupId":"","userId":"u"}},{{{EVENT},"userId":"v"}}]}}"#
        );
        let evs = events(&line);
        assert!(matches!(&evs[0].verdict, Verdict::Skipped(t) if t == "track"));
        assert_eq!(reason(&evs[1].verdict), Reason::NotAnObject);
        assert!(matches!(&evs[2].verdict, Verdict::Row(_)));
        assert_eq!(reason(&evs[3].verdict), Reason::MissingType);
        assert_eq!(reason(&evs[4].verdict), Reason::MissingType);
        assert_eq!(reason(&evs[5].verdict), Reason::MissingGroupId);
        assert_eq!(reason(&evs[6].verdict), Reason::DuplicateKey);
        assert_eq!(evs[1].raw, "7");
    }

    #[test]
    fn envelopes_that_cannot_be_cut_are_one_rejected_event() {
        for (line, expected) in [
            (r#"{"batch":{"type":"group"}}"#, Reason::InvalidBatch),
            (r#"{"batch":[]}"#, Reason::InvalidBatch),
            (r#"{"batch":null,"sentAt":"x"}"#, Reason::InvalidBatch),
            (
                r#"{"batch":[{}],"sentAt":1,"sentAt":2}"#,
                Reason::DuplicateKey,
            ),
        ] {
            assert_eq!(line_reason(line), expected, "{line}");
        }
        // A `type` key makes it an event, not an envelope, whatever `batch` holds.
        assert!(matches!(
            classify(br#"{"type":"track","batch":[]}"#, None),
            Outcome::Event(Verdict::Skipped(_))
        ));
        assert_eq!(
            line_reason(r#"{"type":null,"batch":[]}"#),
            Reason::MissingType
        );
    }

    #[test]
    fn merging_adds_only_missing_keys_in_envelope_order() {
        assert_eq!(
            merge_objects(r#"{"b":1,"a":2}"#, r#"{"c":3,"a":9,"d":{"x":[1]}}"#).as_deref(),
            Some(r#"{"b":1,"a":2,"c":3,"d":{"x":[1]}}"#)
        );
        assert_eq!(merge_objects(r#"{"a":1}"#, r#"{"a":2}"#), None);
        assert_eq!(merge_objects(r#""text""#, r#"{"a":2}"#), None);
    }
}
