//! The value rules: how one JSON value becomes a text cell or a time cell.
//!
//! Why this module exists: the text rule (numbers keep the text they were written with) and the time rule
//! (which strings and epoch numbers are times, and how they truncate) are the two places where a loader
//! usually loses data quietly. They are pure functions over raw JSON text, tested here rule by rule.

use std::borrow::Cow;

use chrono::{Datelike, NaiveDate, Timelike};

/// Microseconds since the Unix epoch, UTC.
pub type Micros = i64;

const MICROS_PER_SEC: i64 = 1_000_000;
const MICROS_PER_DAY: i64 = 86_400 * MICROS_PER_SEC;
/// `0001-01-01T00:00:00Z` and `9999-12-31T23:59:59.999999Z`: the range of every valid time, in UTC. Outside it a
/// partition's date would need five digits or year zero, which no reader of the dataset accepts.
pub const MIN_MICROS: Micros = -62_135_596_800 * MICROS_PER_SEC;
pub const MAX_MICROS: Micros = 253_402_300_800 * MICROS_PER_SEC - 1;

/// The time itself when it lies within [`MIN_MICROS`] ..= [`MAX_MICROS`] (in UTC).
pub fn in_range(t: Micros) -> Option<Micros> {
    (MIN_MICROS..=MAX_MICROS).contains(&t).then_some(t)
}
/// Epoch numbers whose absolute value is below this are seconds, others milliseconds.
pub const EPOCH_SECONDS_BELOW: i64 = 100_000_000_000;

/// What a JSON value is, from its first byte (the raw text is already valid JSON).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JsonKind {
    Null,
    Bool,
    Number,
    String,
    Array,
    Object,
}

/// What the JSON value whose text is `raw` is. Values are passed around as their raw text: the line was
/// validated once, and every value keeps exactly the text it was written with.
pub fn kind(raw: &str) -> JsonKind {
    match raw.as_bytes().first() {
        Some(b'n') => JsonKind::Null,
        Some(b't' | b'f') => JsonKind::Bool,
        Some(b'"') => JsonKind::String,
        Some(b'[') => JsonKind::Array,
        Some(b'{') => JsonKind::Object,
        _ => JsonKind::Number,
    }
}

/// Decodes a JSON string literal, borrowing when it has no escapes. `None` when `raw` is not a string that
/// decodes to Unicode (lines with lone surrogate escapes are rejected before mapping, so this is defensive).
/// Inlined: called for every string value of every event, and its fast path is a few byte tests (left to the
/// compiler, it stopped inlining it once unrelated code grew: 3% more instructions in the mapping).
#[inline]
pub fn decode_str(raw: &str) -> Option<Cow<'_, str>> {
    // Byte tests and memchr: the quotes are ASCII, so slicing inside them stays on character boundaries. (The
    // char-pattern `strip_prefix` went through a one-byte `memcmp`: 4% of the profile's samples, about 1% of
    // user CPU when measured.)
    let b = raw.as_bytes();
    if b.len() < 2 || b[0] != b'"' || b[b.len() - 1] != b'"' {
        return None;
    }
    let inner = &raw[1..raw.len() - 1];
    if memchr::memchr(b'\\', inner.as_bytes()).is_none() {
        return Some(Cow::Borrowed(inner));
    }
    serde_json::from_str::<String>(raw).ok().map(Cow::Owned)
}

/// The text rule: a string as it is, a number as its JSON text, booleans as `"true"`/`"false"`.
#[derive(Debug, PartialEq, Eq)]
pub enum TextValue<'a> {
    Null,
    Text(Cow<'a, str>),
    /// An object or array (or an undecodable string): the column is null, the value goes to extras.
    NotText,
}

pub fn text(raw: &str) -> TextValue<'_> {
    match kind(raw) {
        JsonKind::Null => TextValue::Null,
        JsonKind::Bool | JsonKind::Number => TextValue::Text(Cow::Borrowed(raw)),
        JsonKind::String => match decode_str(raw) {
            Some(s) => TextValue::Text(s),
            None => TextValue::NotText,
        },
        JsonKind::Array | JsonKind::Object => TextValue::NotText,
    }
}

/// The time rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeValue {
    Null,
    Valid(Micros),
    /// Present but not a time: the column is null, the value goes to extras, counted as `invalid_times`.
    Invalid,
}

pub fn time(raw: &str) -> TimeValue {
    let parsed = match kind(raw) {
        JsonKind::Null => return TimeValue::Null,
        JsonKind::String => decode_str(raw).and_then(|s| parse_time_str(&s)),
        JsonKind::Number => parse_epoch_number(raw),
        _ => None,
    };
    parsed.map_or(TimeValue::Invalid, TimeValue::Valid)
}

fn digits(b: &[u8]) -> Option<u32> {
    let mut v: u32 = 0;
    for &c in b {
        if !c.is_ascii_digit() {
            return None;
        }
        v = v * 10 + u32::from(c - b'0');
    }
    Some(v)
}

/// Days since 1970-01-01 of a valid calendar date of years 1 to 9999.
fn days_from_civil(year: u32, month: u32, day: u32) -> Option<i64> {
    if !(1..=9999).contains(&year) {
        return None;
    }
    let date = NaiveDate::from_ymd_opt(i32::try_from(year).ok()?, month, day)?;
    // 719_163 days from 0001-01-01 (day 1 of the common era) to 1970-01-01.
    Some(i64::from(date.num_days_from_ce()) - 719_163)
}

/// Parses `YYYY-MM-DD` and `YYYY-MM-DD[T|t| ]HH:MM[:SS[.fraction]][zone]`. The year is checked twice: as
/// written (0001 to 9999) and once the zone is applied, in UTC (an offset may carry `9999-12-31T23:00-01:00`
/// into year 10000, or `0001-01-01T00:00+01:00` into year 0).
pub fn parse_time_str(s: &str) -> Option<Micros> {
    let b = s.as_bytes();
    if b.len() < 10 || b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    let days = days_from_civil(digits(&b[0..4])?, digits(&b[5..7])?, digits(&b[8..10])?)?;
    let mut micros = days * MICROS_PER_DAY;
    if b.len() == 10 {
        return Some(micros);
    }
    if !matches!(b[10], b'T' | b't' | b' ') || b.len() < 16 || b[13] != b':' {
        return None;
    }
    let hour = digits(&b[11..13])?;
    let minute = digits(&b[14..16])?;
    if hour > 23 || minute > 59 {
        return None;
    }
    micros += i64::from(hour * 3600 + minute * 60) * MICROS_PER_SEC;
    let mut i = 16;
    if b.get(i) == Some(&b':') {
        let sec = digits(b.get(i + 1..i + 3)?)?;
        if sec > 59 {
            return None;
        }
        micros += i64::from(sec) * MICROS_PER_SEC;
        i += 3;
        if b.get(i) == Some(&b'.') {
            let start = i + 1;
            let mut end = start;
            while end < b.len() && b[end].is_ascii_digit() {
                end += 1;
            }
            let n = end - start;
            if !(1..=9).contains(&n) {
                return None;
            }
            // Truncate (never round) to microseconds: keep at most 6 digits, pad to 6.
            let kept = &b[start..start + n.min(6)];
            let mut frac = i64::from(digits(kept)?);
            for _ in kept.len()..6 {
                frac *= 10;
            }
            micros += frac;
            i = end;
        }
    }
    let offset_secs: i64 = match &b[i..] {
        [] | [b'Z'] | [b'z'] => 0,
        [sign @ (b'+' | b'-'), rest @ ..] => {
            let (hh, mm) = match rest {
                [h1, h2] => ([*h1, *h2], [b'0', b'0']),
                [h1, h2, m1, m2] | [h1, h2, b':', m1, m2] => ([*h1, *h2], [*m1, *m2]),
                _ => return None,
            };
            let (hh, mm) = (digits(&hh)?, digits(&mm)?);
            if hh > 23 || mm > 59 {
                return None;
            }
            let secs = i64::from(hh * 3600 + mm * 60);
            if *sign == b'+' { secs } else { -secs }
        }
        _ => return None,
    };
    in_range(micros - offset_secs * MICROS_PER_SEC)
}

/// Parses a JSON number as Unix epoch time: seconds where `|v| < 1e11`, milliseconds otherwise. The decimal
/// text is converted exactly (no floating point), and digits below the microsecond are dropped.
pub fn parse_epoch_number(text: &str) -> Option<Micros> {
    let b = text.as_bytes();
    let (negative, b) = match b.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, b),
    };
    let int_end = b
        .iter()
        .position(|c| !c.is_ascii_digit())
        .unwrap_or(b.len());
    let (int_part, rest) = b.split_at(int_end);
    let (frac_part, rest) = match rest.split_first() {
        Some((b'.', r)) => {
            let e = r
                .iter()
                .position(|c| !c.is_ascii_digit())
                .unwrap_or(r.len());
            r.split_at(e)
        }
        _ => (&rest[..0], rest),
    };
    let exp: i64 = match rest.split_first() {
        None => 0,
        Some((b'e' | b'E', r)) => {
            let (neg, r) = match r.split_first() {
                Some((b'-', r)) => (true, r),
                Some((b'+', r)) => (false, r),
                _ => (false, r),
            };
            if r.is_empty() || !r.iter().all(u8::is_ascii_digit) {
                return None;
            }
            // Saturate: any exponent this large is far outside every time, or rounds to zero.
            let e = r.iter().fold(0i64, |acc, &c| {
                (acc * 10 + i64::from(c - b'0')).min(10_000_000)
            });
            if neg { -e } else { e }
        }
        Some(_) => return None,
    };
    if int_part.is_empty() {
        return None;
    }
    // value = D * 10^e, D the significant digits without leading zeros.
    let all: Vec<u8> = int_part.iter().chain(frac_part).copied().collect();
    let first_nonzero = all.iter().position(|&c| c != b'0').unwrap_or(all.len());
    let d = &all[first_nonzero..];
    if d.is_empty() {
        return Some(0);
    }
    let e = exp - frac_part.len() as i64;
    let magnitude = d.len() as i64 + e; // value < 10^magnitude, value >= 10^(magnitude-1)
    if magnitude > 16 {
        return None; // beyond year 9999 in seconds and in milliseconds
    }
    // |v| < 1e11 (seconds) exactly when magnitude <= 11.
    let scale = if magnitude <= 11 { e + 6 } else { e + 3 };
    let micros: i128 = if scale >= 0 {
        let v = digits_i128(d)?;
        v.checked_mul(10i128.checked_pow(u32::try_from(scale).ok()?)?)?
    } else {
        let drop = usize::try_from(-scale).ok()?;
        if drop >= d.len() {
            0
        } else {
            digits_i128(&d[..d.len() - drop])?
        }
    };
    let micros = if negative { -micros } else { micros };
    in_range(i64::try_from(micros).ok()?)
}

fn digits_i128(d: &[u8]) -> Option<i128> {
    if d.len() > 36 {
        return None;
    }
    d.iter().try_fold(0i128, |acc, &c| {
        Some(acc * 10 + i128::from(c.checked_sub(b'0')?))
    })
}

/// Year, month, day and hour (UTC) of a time, for partition paths.
pub fn civil(micros: Micros) -> Option<(i32, u32, u32, u32)> {
    let dt = chrono::DateTime::from_timestamp_micros(micros)?;
    Some((dt.year(), dt.month(), dt.day(), dt.hour()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> Option<Micros> {
        parse_time_str(s)
    }

    /// 2019-06-21T17:39:06Z in microseconds, checked with `date -u -d @1561138746`.
    const BASE: Micros = 1_561_138_746_000_000;

    #[test]
    fn text_rule() {
        assert_eq!(text(r#""Initech""#), TextValue::Text("Initech".into()));
        assert_eq!(text(r#""""#), TextValue::Text("".into()));
        assert_eq!(text("329"), TextValue::Text("329".into()));
        assert_eq!(text("1e3"), TextValue::Text("1e3".into()));
        assert_eq!(
            text("12345678901234567890"),
            TextValue::Text("12345678901234567890".into())
        );
        assert_eq!(text("-0.50"), TextValue::Text("-0.50".into()));
        assert_eq!(text("true"), TextValue::Text("true".into()));
        assert_eq!(text("false"), TextValue::Text("false".into()));
        assert_eq!(text("null"), TextValue::Null);
        assert_eq!(text(r#"{"a":1}"#), TextValue::NotText);
        assert_eq!(text("[1]"), TextValue::NotText);
        assert_eq!(text(r#""a\"b\u00e9""#), TextValue::Text("a\"bé".into()));
    }

    #[test]
    fn date_only_is_midnight_utc() {
        assert_eq!(
            t("2019-06-21"),
            Some(BASE - (17 * 3600 + 39 * 60 + 6) * MICROS_PER_SEC)
        );
        assert_eq!(t("1970-01-01"), Some(0));
    }

    #[test]
    fn separators_and_optional_parts() {
        assert_eq!(t("2019-06-21T17:39:06Z"), Some(BASE));
        assert_eq!(t("2019-06-21t17:39:06z"), Some(BASE));
        assert_eq!(t("2019-06-21 17:39:06"), Some(BASE));
        assert_eq!(t("2019-06-21T17:39"), Some(BASE - 6 * MICROS_PER_SEC));
        assert_eq!(t("2019-06-21T17:39Z"), Some(BASE - 6 * MICROS_PER_SEC));
    }

    #[test]
    fn fractions_truncate_to_micros() {
        assert_eq!(t("2019-06-21T17:39:06.1Z"), Some(BASE + 100_000));
        assert_eq!(t("2019-06-21T17:39:06.172Z"), Some(BASE + 172_000));
        assert_eq!(t("2019-06-21T17:39:06.123456Z"), Some(BASE + 123_456));
        assert_eq!(t("2019-06-21T17:39:06.1234569Z"), Some(BASE + 123_456));
        assert_eq!(t("2019-06-21T17:39:06.999999999Z"), Some(BASE + 999_999));
        assert_eq!(t("2019-06-21T17:39:06.Z"), None);
        assert_eq!(t("2019-06-21T17:39:06.1234567890Z"), None);
    }

    #[test]
    fn zones() {
        assert_eq!(t("2019-06-21T19:39:06+02:00"), Some(BASE));
        assert_eq!(t("2019-06-21T19:39:06+0200"), Some(BASE));
        assert_eq!(t("2019-06-21T19:39:06+02"), Some(BASE));
        assert_eq!(t("2019-06-21T12:09:06-05:30"), Some(BASE));
        assert_eq!(t("2019-06-21T17:39:06-00:00"), Some(BASE));
        assert_eq!(t("2019-06-21T17:39:06+2"), None);
        assert_eq!(t("2019-06-21T17:39:06+02:0"), None);
        assert_eq!(t("2019-06-21T17:39:06 UTC"), None);
        assert_eq!(t("2019-06-21T17:39:06+24:00"), None);
    }

    #[test]
    fn impossible_dates_are_invalid() {
        assert_eq!(t("1988-04-31"), None);
        assert_eq!(t("2019-02-29"), None);
        assert!(t("2020-02-29").is_some());
        assert_eq!(t("2019-13-01"), None);
        assert_eq!(t("2019-06-21T24:00:00Z"), None);
        assert_eq!(t("2019-06-21T23:60:00Z"), None);
        assert_eq!(t("2019-06-21T23:59:60Z"), None);
        assert_eq!(t("0000-01-01"), None);
        assert!(t("0001-01-01").is_some());
        assert!(t("9999-12-31T23:59:59.999999Z").is_some());
    }

    #[test]
    fn the_year_range_holds_in_utc_not_as_written() {
        // An offset that carries the time past 9999-12-31T23:59:59.999999Z or before 0001-01-01T00:00:00Z.
        assert_eq!(t("9999-12-31T23:00:00-01:00"), None);
        assert_eq!(t("9999-12-31T23:59:59.999999-00:01"), None);
        assert_eq!(t("0001-01-01T00:00:00+01:00"), None);
        assert_eq!(t("0001-01-01T00:59:59+01:00"), None);
        // The same offsets, with the UTC time just inside the range.
        assert_eq!(t("9999-12-31T22:59:59.999999-01:00"), Some(MAX_MICROS));
        assert_eq!(t("0001-01-01T01:00:00+01:00"), Some(MIN_MICROS));
        assert_eq!(t("9999-12-31T23:59:59.999999Z"), Some(MAX_MICROS));
        assert_eq!(t("0001-01-01"), Some(MIN_MICROS));
        // The boundaries as epoch numbers (milliseconds, being past 1e11): 253402300799 s is
        // 9999-12-31T23:59:59Z (date -u -d @253402300799), -62135596800 s is 0001-01-01T00:00:00Z.
        assert_eq!(parse_epoch_number("253402300799999.999"), Some(MAX_MICROS));
        assert_eq!(parse_epoch_number("253402300800000"), None);
        assert_eq!(parse_epoch_number("-62135596800000"), Some(MIN_MICROS));
        assert_eq!(parse_epoch_number("-62135596800000.001"), None);
    }

    #[test]
    fn malformed_strings_are_invalid() {
        for s in [
            "",
            "2019",
            "2019-6-21",
            "2019/06/21",
            "21-06-2019",
            "2019-06-21T",
            "2019-06-21T17",
            "2019-06-21T1:39",
            "2019-06-21T17:39:6Z",
            "2019-06-21X17:39:06Z",
            " 2019-06-21",
            "2019-06-21 ",
            "yesterday",
            "1561138746",
            "2019-06-21T17:39:06ZZ",
            "+2019-06-21",
        ] {
            assert_eq!(t(s), None, "{s:?}");
        }
    }

    #[test]
    fn epoch_seconds_and_millis() {
        let e = |s: &str| parse_epoch_number(s);
        assert_eq!(e("1561138746"), Some(BASE));
        assert_eq!(e("1561138746.172"), Some(BASE + 172_000));
        assert_eq!(e("1561138746.1234567"), Some(BASE + 123_456));
        assert_eq!(e("1561138746172"), Some(BASE + 172_000));
        assert_eq!(e("1561138746172.5"), Some(BASE + 172_500));
        assert_eq!(e("1.561138746172e12"), Some(BASE + 172_000));
        assert_eq!(e("1.561138746e9"), Some(BASE));
        assert_eq!(e("0"), Some(0));
        assert_eq!(e("-1.5"), Some(-1_500_000));
        // Boundary: 99,999,999,999 is seconds (year 5138); 100,000,000,000 is milliseconds (1973).
        assert_eq!(e("99999999999"), Some(99_999_999_999 * MICROS_PER_SEC));
        assert_eq!(e("100000000000"), Some(100_000_000_000 * 1000));
        assert_eq!(e("-100000000000"), Some(-100_000_000_000 * 1000));
        // The same boundary, from the documented constant.
        let below = EPOCH_SECONDS_BELOW;
        assert_eq!(
            e(&(below - 1).to_string()),
            Some((below - 1) * MICROS_PER_SEC)
        );
        assert_eq!(e(&below.to_string()), Some(below * 1000));
        assert_eq!(
            e(&format!("{}.9", below - 1)),
            Some((below - 1) * MICROS_PER_SEC + 900_000)
        );
        // Beyond year 9999 either way, or absurd: invalid.
        assert_eq!(e("1e400"), None);
        assert_eq!(e("1e16"), None);
        assert_eq!(e("99999999999999999999"), None);
        assert_eq!(e("1e-400"), Some(0));
        assert_eq!(e("0.0000001"), Some(0));
    }

    #[test]
    fn time_rule_on_json_values() {
        assert_eq!(time("null"), TimeValue::Null);
        assert_eq!(time(r#""2019-06-21T17:39:06Z""#), TimeValue::Valid(BASE));
        assert_eq!(time("1561138746"), TimeValue::Valid(BASE));
        assert_eq!(time(r#""1561138746""#), TimeValue::Invalid);
        assert_eq!(time("true"), TimeValue::Invalid);
        assert_eq!(time("{}"), TimeValue::Invalid);
        assert_eq!(time(r#""1988-04-31""#), TimeValue::Invalid);
        // An escaped string is decoded before parsing.
        assert_eq!(
            time(r#""2019-06-21T17:39:06\u005a""#),
            TimeValue::Valid(BASE)
        );
    }

    #[test]
    fn civil_parts() {
        assert_eq!(civil(BASE), Some((2019, 6, 21, 17)));
        assert_eq!(civil(-1), Some((1969, 12, 31, 23)));
    }
}
