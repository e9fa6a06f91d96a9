use super::*;

fn reason(line: &str) -> Reason {
    match classify(line.as_bytes(), None) {
        Outcome::Event(Verdict::Rejected(r)) => r.reason,
        other => panic!("{line}: expected a reject, got {other:?}"),
    }
}

const OK: &str =
    r#""type":"group","groupId":"g1","userId":"u1","timestamp":"2024-01-01T00:00:00Z""#;

fn obj(fields: &str) -> String {
    format!("{{{fields}}}")
}

#[test]
fn a_valid_group_call_is_a_row() {
    assert!(matches!(
        classify(obj(OK).as_bytes(), None),
        Outcome::Event(Verdict::Row(_))
    ));
}

#[test]
fn blank_lines() {
    for l in ["", " ", "\t  ", "\r"] {
        assert!(
            matches!(classify(l.as_bytes(), None), Outcome::Blank),
            "{l:?}"
        );
    }
}

#[test]
fn other_event_types_are_skipped_with_their_type() {
    match classify(br#"{"type":"track","event":"x"}"#, None) {
        Outcome::Event(Verdict::Skipped(t)) => assert_eq!(t, "track"),
        other => panic!("{other:?}"),
    }
    // Types are matched case-insensitively ("GROUP" is RudderStack's spelling); a skipped type is
    // counted as written.
    for t in ["Group", "GROUP", "gRoUp"] {
        let line = format!(r#"{{"type":"{t}","groupId":"g","userId":"u","timestamp":0}}"#);
        assert!(matches!(
            classify(line.as_bytes(), None),
            Outcome::Event(Verdict::Row(_))
        ));
    }
    assert!(
        matches!(classify(br#"{"type":"Track"}"#, None), Outcome::Event(Verdict::Skipped(t)) if t == "Track")
    );
    assert!(
        matches!(classify(br#"{"type":"groups"}"#, None), Outcome::Event(Verdict::Skipped(t)) if t == "groups")
    );
    // A skipped type wins over problems the reject table lists later (duplicate keys, no groupId).
    assert!(matches!(
        classify(br#"{"type":"track","a":1,"a":2}"#, None),
        Outcome::Event(Verdict::Skipped(_))
    ));
}

#[test]
fn each_reject_reason() {
    assert_eq!(
        match classify(b"{}", Some((20_000_000, 16 << 20))) {
            Outcome::Event(Verdict::Rejected(r)) => r.reason,
            _ => unreachable!(),
        },
        Reason::LineTooLong
    );
    assert_eq!(
        match classify(b"{\"type\":\"group\xff\"}", None) {
            Outcome::Event(Verdict::Rejected(r)) => r.reason,
            _ => unreachable!(),
        },
        Reason::InvalidUtf8
    );
    assert_eq!(reason(r#"{"type":"group","#), Reason::InvalidJson);
    assert_eq!(reason(r#"{"type":"group"} x"#), Reason::InvalidJson);
    assert_eq!(reason("NaN"), Reason::InvalidJson);
    assert_eq!(reason(r#"{"a": NaN}"#), Reason::InvalidJson);
    assert_eq!(reason(r#"["type","group"]"#), Reason::NotAnObject);
    assert_eq!(reason(r#""group""#), Reason::NotAnObject);
    assert_eq!(reason("1e400"), Reason::NotAnObject);
    assert_eq!(reason("null"), Reason::NotAnObject);
    assert_eq!(reason(r#"{"groupId":"g"}"#), Reason::MissingType);
    assert_eq!(reason(r#"{"type":7}"#), Reason::MissingType);
    assert_eq!(reason(r#"{"type":null}"#), Reason::MissingType);
    assert_eq!(
        reason(&obj(&format!(r#"{OK},"userId":"u2""#))),
        Reason::DuplicateKey
    );
    assert_eq!(
        reason(r#"{"type":"group","userId":"u"}"#),
        Reason::MissingGroupId
    );
    assert_eq!(
        reason(r#"{"type":"group","groupId":null,"userId":"u"}"#),
        Reason::MissingGroupId
    );
    assert_eq!(
        reason(r#"{"type":"group","groupId":"","userId":"u"}"#),
        Reason::MissingGroupId
    );
    assert_eq!(
        reason(r#"{"type":"group","groupId":true,"userId":"u"}"#),
        Reason::InvalidGroupId
    );
    assert_eq!(
        reason(r#"{"type":"group","groupId":{"a":1},"userId":"u"}"#),
        Reason::InvalidGroupId
    );
    assert_eq!(
        reason(r#"{"type":"group","groupId":"g","userId":[1]}"#),
        Reason::InvalidUserId
    );
    assert_eq!(
        reason(r#"{"type":"group","groupId":"g","anonymousId":false}"#),
        Reason::InvalidAnonymousId
    );
    assert_eq!(
        reason(r#"{"type":"group","groupId":"g"}"#),
        Reason::MissingIdentity
    );
    assert_eq!(
        reason(r#"{"type":"group","groupId":"g","userId":"","anonymousId":null}"#),
        Reason::MissingIdentity
    );
    assert_eq!(
        reason(r#"{"type":"group","groupId":"g","userId":"u"}"#),
        Reason::MissingTime
    );
    assert_eq!(
        reason(
            r#"{"type":"group","groupId":"g","userId":"u","timestamp":"soon","sentAt":"2024-01-01"}"#
        ),
        Reason::MissingTime
    );
}

#[test]
fn precedence_follows_the_table() {
    // Duplicate key beats every mapping reason.
    assert_eq!(
        reason(r#"{"type":"group","x":1,"x":2}"#),
        Reason::DuplicateKey
    );
    // Missing groupId beats invalid ids and identity and time.
    assert_eq!(
        reason(r#"{"type":"group","userId":true}"#),
        Reason::MissingGroupId
    );
    // Invalid groupId beats invalid userId.
    assert_eq!(
        reason(r#"{"type":"group","groupId":[],"userId":true}"#),
        Reason::InvalidGroupId
    );
    // Invalid userId beats invalid anonymousId.
    assert_eq!(
        reason(r#"{"type":"group","groupId":"g","userId":{},"anonymousId":{}}"#),
        Reason::InvalidUserId
    );
    // Invalid anonymousId beats missing identity and missing time (userId is absent here).
    assert_eq!(
        reason(r#"{"type":"group","groupId":"g","anonymousId":{}}"#),
        Reason::InvalidAnonymousId
    );
    // Missing identity beats missing time.
    assert_eq!(
        reason(r#"{"type":"group","groupId":"g"}"#),
        Reason::MissingIdentity
    );
    // Missing type beats duplicate keys.
    assert_eq!(reason(r#"{"a":1,"a":2}"#), Reason::MissingType);
    // Invalid UTF-8 beats invalid JSON.
    assert!(
        matches!(classify(b"{\xff", None), Outcome::Event(Verdict::Rejected(r)) if r.reason == Reason::InvalidUtf8)
    );
}

#[test]
fn lone_surrogates_are_invalid_json_but_pairs_are_fine() {
    assert_eq!(
        reason(&obj(&format!(r#"{OK},"traits":{{"name":"a\ud800b"}}"#))),
        Reason::InvalidJson
    );
    assert_eq!(
        reason(&obj(&format!(r#"{OK},"traits":{{"\uDFFF":1}}"#))),
        Reason::InvalidJson
    );
    assert!(matches!(
        classify(
            obj(&format!(r#"{OK},"traits":{{"name":"\ud83d\ude00"}}"#)).as_bytes(),
            None
        ),
        Outcome::Event(Verdict::Row(_))
    ));
}

#[test]
fn deep_nesting_does_not_overflow() {
    let deep = format!(
        "{{{OK},\"properties\":{}{}}}",
        "[".repeat(100_000),
        "]".repeat(100_000)
    );
    // Loaded by the rules, the deep value kept whole in `extra`; never a stack overflow.
    match classify(deep.as_bytes(), None) {
        Outcome::Event(Verdict::Row(row)) => {
            let extra = row.text(crate::schema::Col::Extra).expect("extra");
            assert!(extra.starts_with("{\"properties\":[[[") && extra.ends_with("]]]}"));
            assert_eq!(extra.len(), "{\"properties\":}".len() + 200_000);
        }
        other => panic!("expected a row, got {other:?}"),
    }
    let deep_obj = "{\"a\":".repeat(100_000);
    assert_eq!(reason(&deep_obj), Reason::InvalidJson);
}

#[test]
fn duplicate_key_detection_with_many_keys() {
    let mut fields: Vec<String> = (0..100).map(|i| format!("\"k{i}\":{i}")).collect();
    let e = Entries::parse(&format!("{{{}}}", fields.join(",")))
        .unwrap()
        .duplicate_key()
        .map(str::to_owned);
    assert_eq!(e, None);
    fields.push("\"k50\":0".into());
    let text = format!("{{{}}}", fields.join(","));
    assert_eq!(Entries::parse(&text).unwrap().duplicate_key(), Some("k50"));
    // Keys are compared decoded: "\u0061" is "a".
    assert_eq!(
        Entries::parse(r#"{"a":1,"\u0061":2}"#)
            .unwrap()
            .duplicate_key(),
        Some("a")
    );
}
