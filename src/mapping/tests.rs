use super::*;

fn map(line: &str) -> Row<'static> {
    let entries = Entries::parse(line).expect("valid JSON");
    map_group(&entries).expect("a row").into_owned()
}

fn with(fields: &str) -> String {
    format!(
        r#"{{"type":"group","groupId":"g1","userId":"u1","timestamp":"2019-06-21T17:39:06.171Z"{}{fields}}}"#,
        if fields.is_empty() { "" } else { "," }
    )
}

fn text(row: &Row<'_>, col: Col) -> Option<String> {
    row.text(col).map(str::to_owned)
}

#[test]
fn segment_docs_complete_example() {
    let line = r#"{"anonymousId":"507f191e810c19729de860ea","channel":"browser","context":{"ip":"8.8.8.8","userAgent":"Mozilla/5.0"},"integrations":{"All":true,"Mixpanel":false,"Salesforce":false},"messageId":"022bb90c-bbac-11e4-8dfc-aa07a5b093db","receivedAt":"2015-02-23T22:28:55.387Z","sentAt":"2015-02-23T22:28:55.111Z","timestamp":"2015-02-23T22:28:55.111Z","traits":{"name":"Initech","industry":"Technology","employees":329,"plan":"enterprise","total billed":830},"type":"group","userId":"97980cfea0067","groupId":"0e8c78ea9d97a7b8185e8632","version":"1.1"}"#;
    let row = map(line);
    assert_eq!(
        text(&row, Col::Id).as_deref(),
        Some("022bb90c-bbac-11e4-8dfc-aa07a5b093db")
    );
    assert_eq!(
        text(&row, Col::GroupId).as_deref(),
        Some("0e8c78ea9d97a7b8185e8632")
    );
    assert_eq!(text(&row, Col::UserId).as_deref(), Some("97980cfea0067"));
    assert_eq!(
        text(&row, Col::AnonymousId).as_deref(),
        Some("507f191e810c19729de860ea")
    );
    assert_eq!(text(&row, Col::Channel).as_deref(), Some("browser"));
    assert_eq!(text(&row, Col::ContextIp).as_deref(), Some("8.8.8.8"));
    assert_eq!(
        text(&row, Col::ContextUserAgent).as_deref(),
        Some("Mozilla/5.0")
    );
    assert_eq!(text(&row, Col::Name).as_deref(), Some("Initech"));
    assert_eq!(text(&row, Col::Industry).as_deref(), Some("Technology"));
    assert_eq!(text(&row, Col::Employees).as_deref(), Some("329"));
    assert_eq!(text(&row, Col::Plan).as_deref(), Some("enterprise"));
    assert_eq!(
        text(&row, Col::ExtraTraits).as_deref(),
        Some(r#"{"total billed":830}"#)
    );
    assert_eq!(row.get(Col::ExtraContext), &Cell::Null);
    assert_eq!(
        text(&row, Col::Extra).as_deref(),
        Some(
            r#"{"integrations":{"All":true,"Mixpanel":false,"Salesforce":false},"version":"1.1"}"#
        )
    );
    // 2015-02-23T22:28:55.387Z = 1424730535.387 s (date -u -d @1424730535).
    assert_eq!(row.time(Col::ReceivedAt), Some(1_424_730_535_387_000));
    assert_eq!(row.time(Col::SentAt), Some(1_424_730_535_111_000));
    assert_eq!(row.time(Col::Timestamp), Some(1_424_730_535_111_000));
    assert_eq!(row.time(Col::OriginalTimestamp), None);
}

#[test]
fn traits_sent_without_a_value_are_marked_cleared() {
    let bit = |c: Col| 1u32 << c as u32;
    let row = map(&with(
        r#""traits":{"plan":null,"Name":"Acme","createdAt":"not a time","industry":{"a":1},"email":"","Plan":"x"}"#,
    ));
    assert_eq!(
        row.cleared,
        bit(Col::Plan) | bit(Col::CreatedAt) | bit(Col::Industry),
        "null and values that did not fit clear; a value (even \"\") or a shadowed key does not"
    );
    let row = map(&with(
        r#""traits":{"address":{"city":null,"street":"1 Main"}}"#,
    ));
    assert_eq!(row.cleared, bit(Col::AddressCity));
    for address in ["null", "\"Paris\""] {
        let row = map(&with(&format!(r#""traits":{{"address":{address}}}"#)));
        let all = [
            Col::AddressStreet,
            Col::AddressCity,
            Col::AddressState,
            Col::AddressPostalCode,
            Col::AddressCountry,
        ]
        .map(bit)
        .iter()
        .fold(0, |a, b| a | b);
        assert_eq!(row.cleared, all, "address {address}");
    }
    assert_eq!(map(&with(r#""traits":{"other":null}"#)).cleared, 0);
    assert_eq!(map(&with(r#""traits":null"#)).cleared, 0, "no traits sent");
}

#[test]
fn clock_skew_known_answer() {
    // The timestamp rule: receivedAt ...06.172Z, sentAt ...06.143Z, originalTimestamp ...06.142Z -> ...06.171Z.
    let line = r#"{"type":"group","groupId":"g","userId":"u","receivedAt":"2019-06-21T17:39:06.172Z","sentAt":"2019-06-21T17:39:06.143Z","originalTimestamp":"2019-06-21T17:39:06.142Z"}"#;
    let row = map(line);
    let expected = values::parse_time_str("2019-06-21T17:39:06.171Z").unwrap();
    assert_eq!(row.time(Col::Timestamp), Some(expected));
    assert_eq!(expected, 1_561_138_746_171_000);
    assert_eq!(
        row.time(Col::OriginalTimestamp),
        Some(1_561_138_746_142_000)
    );
}

#[test]
fn timestamp_fallbacks() {
    let base = r#""type":"group","groupId":"g","userId":"u""#;
    let t = |s: &str| values::parse_time_str(s).unwrap();
    // A valid timestamp wins over everything.
    let row = map(&format!(
        r#"{{{base},"timestamp":"2020-01-01","receivedAt":"2021-01-01","sentAt":"2021-01-01","originalTimestamp":"2021-01-01"}}"#
    ));
    assert_eq!(row.time(Col::Timestamp), Some(t("2020-01-01")));
    // Without sentAt: originalTimestamp.
    let row = map(&format!(
        r#"{{{base},"receivedAt":"2021-01-02","originalTimestamp":"2021-01-01"}}"#
    ));
    assert_eq!(row.time(Col::Timestamp), Some(t("2021-01-01")));
    // Only receivedAt.
    let row = map(&format!(
        r#"{{{base},"receivedAt":"2021-01-02","sentAt":"2021-01-01"}}"#
    ));
    assert_eq!(row.time(Col::Timestamp), Some(t("2021-01-02")));
    // An invalid timestamp falls through, and keeps its value in `extra`, counted.
    let row = map(&format!(
        r#"{{{base},"timestamp":"2021-02-30","receivedAt":"2021-01-02"}}"#
    ));
    assert_eq!(row.time(Col::Timestamp), Some(t("2021-01-02")));
    assert_eq!(
        text(&row, Col::Extra).as_deref(),
        Some(r#"{"timestamp":"2021-02-30"}"#)
    );
    assert_eq!(row.invalid_times, 1);
}

#[test]
fn times_outside_years_1_to_9999_in_utc_are_invalid_wherever_they_come_from() {
    let base = r#""type":"group","groupId":"g","userId":"u""#;
    let t = |s: &str| values::parse_time_str(s).unwrap();
    // Written within 9999, but an offset carries it into year 10000 (or back into year 0): invalid, kept in
    // `extra`, counted; the partition then comes from a valid time.
    for (late, fallback) in [
        ("9999-12-31T23:00:00-01:00", "2024-01-02"),
        ("0001-01-01T00:00:00+01:00", "2024-01-03"),
    ] {
        let row = map(&format!(
            r#"{{{base},"timestamp":"{late}","receivedAt":"{fallback}"}}"#
        ));
        assert_eq!(row.time(Col::Timestamp), Some(t(fallback)), "{late}");
        assert_eq!(row.partition_time(), t(fallback));
        assert_eq!(
            text(&row, Col::Extra),
            Some(format!(r#"{{"timestamp":"{late}"}}"#))
        );
        assert_eq!(row.invalid_times, 1);
    }
    // The clock-skew formula would land after 9999-12-31 (every input valid): not used; originalTimestamp is.
    let row = map(&format!(
        r#"{{{base},"receivedAt":"9999-12-31T23:00:00Z","sentAt":"0001-01-01T00:00:00Z","originalTimestamp":"9999-12-01T00:00:00Z"}}"#
    ));
    assert_eq!(row.time(Col::Timestamp), Some(t("9999-12-01T00:00:00Z")));
    assert_eq!(row.invalid_times, 0);
}

#[test]
fn an_events_own_write_key_is_never_stored() {
    let row = map(&with(r#""writeKey":"SECRET","projectId":"p1""#));
    assert_eq!(
        text(&row, Col::Extra).as_deref(),
        Some(r#"{"projectId":"p1"}"#)
    );
    for cell in &row.cells {
        if let Cell::Text(t) = cell {
            assert!(!t.contains("SECRET"), "{t}");
        }
    }
}

#[test]
fn partition_time_is_received_at_else_timestamp() {
    let row = map(&with(r#""receivedAt":"2020-05-05T23:00:00Z""#));
    assert_eq!(
        row.partition_time(),
        values::parse_time_str("2020-05-05T23:00:00Z").unwrap()
    );
    let row = map(&with(r#""receivedAt":"garbage""#));
    assert_eq!(
        row.partition_time(),
        values::parse_time_str("2019-06-21T17:39:06.171Z").unwrap()
    );
}

#[test]
fn reserved_traits_match_case_insensitively_first_wins() {
    let row = map(&with(
        r#""traits":{"Created-At":"2020-01-01","createdAt":"2021-01-01","CREATED AT":"x","NAME":"A","name":"B","e_mail":"e@x","Id":7}"#,
    ));
    assert_eq!(
        row.time(Col::CreatedAt),
        values::parse_time_str("2020-01-01")
    );
    assert_eq!(text(&row, Col::Name).as_deref(), Some("A"));
    assert_eq!(text(&row, Col::Email).as_deref(), Some("e@x"));
    assert_eq!(text(&row, Col::TraitId).as_deref(), Some("7"));
    assert_eq!(
        text(&row, Col::Id),
        None,
        "the trait id is not the message id"
    );
    assert_eq!(
        text(&row, Col::ExtraTraits).as_deref(),
        Some(r#"{"createdAt":"2021-01-01","CREATED AT":"x","name":"B"}"#)
    );
    assert_eq!(row.shadowed_traits, 3);
}

#[test]
fn trait_values_follow_the_text_and_time_rules() {
    let row = map(&with(
        r#""traits":{"employees":12345678901234567890,"plan":true,"phone":null,"website":{"url":"x"},"createdAt":"1988-04-31","avatar":"","description":1e3}"#,
    ));
    assert_eq!(
        text(&row, Col::Employees).as_deref(),
        Some("12345678901234567890")
    );
    assert_eq!(text(&row, Col::Plan).as_deref(), Some("true"));
    assert_eq!(row.get(Col::Phone), &Cell::Null);
    assert_eq!(row.get(Col::Website), &Cell::Null);
    assert_eq!(row.get(Col::CreatedAt), &Cell::Null);
    assert_eq!(text(&row, Col::Avatar).as_deref(), Some(""));
    assert_eq!(text(&row, Col::Description).as_deref(), Some("1e3"));
    assert_eq!(
        text(&row, Col::ExtraTraits).as_deref(),
        Some(r#"{"website":{"url":"x"},"createdAt":"1988-04-31"}"#)
    );
    assert_eq!(row.invalid_times, 1);
}

#[test]
fn address_subfields_and_leftovers() {
    let row = map(&with(
        r#""traits":{"Address":{"street":"1 Main","City":"Paris","postal_code":94107,"PostalCode":"x","line2":"Suite 5","country":["FR"]},"address":"dup"}"#,
    ));
    assert_eq!(text(&row, Col::AddressStreet).as_deref(), Some("1 Main"));
    assert_eq!(text(&row, Col::AddressCity).as_deref(), Some("Paris"));
    assert_eq!(text(&row, Col::AddressPostalCode).as_deref(), Some("94107"));
    assert_eq!(row.get(Col::AddressState), &Cell::Null);
    assert_eq!(row.get(Col::AddressCountry), &Cell::Null);
    assert_eq!(
        text(&row, Col::ExtraTraits).as_deref(),
        Some(
            r#"{"Address":{"PostalCode":"x","line2":"Suite 5","country":["FR"]},"address":"dup"}"#
        )
    );
    assert_eq!(row.shadowed_traits, 2);
}

#[test]
fn address_not_an_object_or_null() {
    let row = map(&with(r#""traits":{"address":"1 Main St"}"#));
    assert_eq!(
        text(&row, Col::ExtraTraits).as_deref(),
        Some(r#"{"address":"1 Main St"}"#)
    );
    let row = map(&with(r#""traits":{"address":["a"]}"#));
    assert_eq!(
        text(&row, Col::ExtraTraits).as_deref(),
        Some(r#"{"address":["a"]}"#)
    );
    let row = map(&with(r#""traits":{"address":null}"#));
    assert_eq!(row.get(Col::ExtraTraits), &Cell::Null);
    assert_eq!(row.get(Col::AddressCity), &Cell::Null);
    // An address object with nothing left over adds nothing.
    let row = map(&with(r#""traits":{"address":{"city":"Oslo"}}"#));
    assert_eq!(row.get(Col::ExtraTraits), &Cell::Null);
    assert_eq!(text(&row, Col::AddressCity).as_deref(), Some("Oslo"));
}

#[test]
fn traits_absent_null_or_not_an_object() {
    assert_eq!(map(&with(r#""traits":null"#)).get(Col::Extra), &Cell::Null);
    let row = map(&with(r#""traits":"x""#));
    assert_eq!(text(&row, Col::Extra).as_deref(), Some(r#"{"traits":"x"}"#));
    let row = map(&with(r#""traits":[1,2]"#));
    assert_eq!(
        text(&row, Col::Extra).as_deref(),
        Some(r#"{"traits":[1,2]}"#)
    );
}

#[test]
fn context_columns_and_extra_context() {
    let row = map(&with(
        r#""context":{"ip":"1.2.3.4","library":{"name":"analytics.js","version":"2.11.1","extra":1},"locale":"en-US","userAgent":{"ua":1}}"#,
    ));
    assert_eq!(text(&row, Col::ContextIp).as_deref(), Some("1.2.3.4"));
    assert_eq!(
        text(&row, Col::ContextLibraryName).as_deref(),
        Some("analytics.js")
    );
    assert_eq!(
        text(&row, Col::ContextLibraryVersion).as_deref(),
        Some("2.11.1")
    );
    assert_eq!(row.get(Col::ContextUserAgent), &Cell::Null);
    assert_eq!(
        text(&row, Col::ExtraContext).as_deref(),
        Some(r#"{"library":{"extra":1},"locale":"en-US","userAgent":{"ua":1}}"#)
    );
    // Keys are exact in context: "IP" is not "ip".
    let row = map(&with(r#""context":{"IP":"1.2.3.4","library":"x"}"#));
    assert_eq!(row.get(Col::ContextIp), &Cell::Null);
    assert_eq!(
        text(&row, Col::ExtraContext).as_deref(),
        Some(r#"{"IP":"1.2.3.4","library":"x"}"#)
    );
    // A library object with nothing left over adds nothing.
    let row = map(&with(r#""context":{"library":{"name":"n"}}"#));
    assert_eq!(row.get(Col::ExtraContext), &Cell::Null);
    // Context that is not an object goes whole to extra.
    let row = map(&with(r#""context":"ctx""#));
    assert_eq!(
        text(&row, Col::Extra).as_deref(),
        Some(r#"{"context":"ctx"}"#)
    );
}

#[test]
fn request_ip_fills_context_ip_when_context_has_none_and_stays_in_extra() {
    // RudderStack: no context.ip, the client's address in request_ip (before or after context).
    for fields in [
        r#""request_ip":"5.6.7.8","context":{"locale":"en"}"#,
        r#""context":{"ip":null},"request_ip":"5.6.7.8""#,
        r#""context":{"ip":{"v4":"1"}},"request_ip":"5.6.7.8""#,
        r#""request_ip":"5.6.7.8""#,
    ] {
        let row = map(&with(fields));
        assert_eq!(
            text(&row, Col::ContextIp).as_deref(),
            Some("5.6.7.8"),
            "{fields}"
        );
        assert!(
            text(&row, Col::Extra)
                .unwrap()
                .contains(r#""request_ip":"5.6.7.8""#),
            "{fields}"
        );
    }
    // context.ip wins when it holds text, "" included; a request_ip that is not text fills nothing.
    let row = map(&with(
        r#""request_ip":"5.6.7.8","context":{"ip":"1.2.3.4"}"#,
    ));
    assert_eq!(text(&row, Col::ContextIp).as_deref(), Some("1.2.3.4"));
    let row = map(&with(r#""context":{"ip":""},"request_ip":"5.6.7.8""#));
    assert_eq!(text(&row, Col::ContextIp).as_deref(), Some(""));
    let row = map(&with(r#""request_ip":["5.6.7.8"]"#));
    assert_eq!(row.get(Col::ContextIp), &Cell::Null);
    assert_eq!(
        text(&row, Col::Extra).as_deref(),
        Some(r#"{"request_ip":["5.6.7.8"]}"#)
    );
}

#[test]
fn top_level_values_that_do_not_fit_go_to_extra() {
    let row = map(&with(
        r#""messageId":{"a":1},"channel":42,"sentAt":true,"projectId":"p","_metadata":{"x":[1]}"#,
    ));
    assert_eq!(row.get(Col::Id), &Cell::Null);
    assert_eq!(text(&row, Col::Channel).as_deref(), Some("42"));
    assert_eq!(row.invalid_times, 1);
    assert_eq!(
        text(&row, Col::Extra).as_deref(),
        Some(r#"{"messageId":{"a":1},"sentAt":true,"projectId":"p","_metadata":{"x":[1]}}"#)
    );
}

#[test]
fn ids_follow_the_text_rule() {
    let row = map(
        r#"{"type":"group","groupId":12345678901234567890,"userId":1.50,"anonymousId":"","timestamp":0}"#,
    );
    assert_eq!(
        text(&row, Col::GroupId).as_deref(),
        Some("12345678901234567890")
    );
    assert_eq!(text(&row, Col::UserId).as_deref(), Some("1.50"));
    assert_eq!(text(&row, Col::AnonymousId).as_deref(), Some(""));
    assert_eq!(row.time(Col::Timestamp), Some(0));
}

#[test]
fn escaped_keys_are_reescaped_in_extras() {
    let row = map(&with(r#""traits":{"a\"b":1,"tab\t":2,"\u00e9":3}"#));
    assert_eq!(
        text(&row, Col::ExtraTraits).as_deref(),
        Some(r#"{"a\"b":1,"tab\t":2,"é":3}"#)
    );
}

#[test]
fn normalisation() {
    assert_eq!(match_normalised(RESERVED_TRAITS, "created_at"), Some(2));
    assert_eq!(match_normalised(RESERVED_TRAITS, "CREATED AT"), Some(2));
    assert_eq!(match_normalised(RESERVED_TRAITS, "Created-At"), Some(2));
    assert_eq!(match_normalised(RESERVED_TRAITS, "créatedAt"), None);
    assert_eq!(
        match_normalised(RESERVED_TRAITS, "a very long key that matches nothing"),
        None
    );
    assert_eq!(match_normalised(ADDRESS_FIELDS, "Postal-Code"), Some(3));
}
