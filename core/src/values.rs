//! Reading one field as a value of a column type, and writing it as PostgreSQL `COPY`
//! text. Used by the worker for every row and by the configuration check for a
//! schema's defaults and bounds, so both read values the same way.
//!
//! Every parser accepts a subset of what PostgreSQL's input function for the type
//! accepts, and the text it writes reads back in PostgreSQL as the same value: one value
//! the database refuses would fail a whole batch. Deliberate differences (where Sluice
//! refuses what PostgreSQL would take) are listed in docs/schema-values.md, and
//! tests/tests/values_vs_postgres.rs checks all of this against a real PostgreSQL.

use std::io::Write as _;

use chrono::{DateTime, Datelike, NaiveDate, Timelike, Utc};
use uuid::Uuid;

use crate::schema::{ColumnType, NumericScale};

/// Why a field is not a value of its column's type.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValueError {
    /// Not written as the type (e.g. `12x` for an integer).
    #[error("is not {0}")]
    Malformed(&'static str),
    /// Written as the type but outside what the type can hold.
    #[error("is outside the range of {0}")]
    OutOfRange(&'static str),
}

/// A parsed value. Numbers of `numeric(p,s)` are held as integers scaled by 10^s.
#[derive(Debug, Clone, PartialEq, PartialOrd)]
pub enum Value {
    Uuid(Uuid),
    Text(String),
    Integer(i64),
    Numeric(i128),
    Double(f64),
    Boolean(bool),
    Date(NaiveDate),
    Timestamp(DateTime<Utc>),
    Json(String),
}

/// Largest precision of a `numeric` column Sluice handles (values fit an i128).
pub const MAX_NUMERIC_PRECISION: u32 = 38;

/// Parses `s` (already cleaned) as a value of `ty`.
pub fn parse(ty: &ColumnType, s: &str) -> Result<Value, ValueError> {
    match ty {
        ColumnType::Uuid => parse_uuid(s).map(Value::Uuid),
        ColumnType::Text => parse_text(s).map(|()| Value::Text(s.to_owned())),
        ColumnType::Smallint => {
            parse_int(s, i64::from(i16::MIN), i64::from(i16::MAX), "smallint").map(Value::Integer)
        }
        ColumnType::Integer => {
            parse_int(s, i64::from(i32::MIN), i64::from(i32::MAX), "integer").map(Value::Integer)
        }
        ColumnType::Bigint => parse_int(s, i64::MIN, i64::MAX, "bigint").map(Value::Integer),
        ColumnType::Numeric(n) => parse_numeric(s, *n).map(Value::Numeric),
        ColumnType::Double => parse_double(s).map(Value::Double),
        ColumnType::Boolean => parse_bool(s).map(Value::Boolean),
        ColumnType::Date => parse_date(s).map(Value::Date),
        ColumnType::Timestamptz => parse_timestamp(s).map(Value::Timestamp),
        ColumnType::Jsonb => parse_json(s).map(|()| Value::Json(s.to_owned())),
    }
}

/// Whether text `s` fits a `varchar(max_length)` column: at most `max_length` characters
/// (Unicode scalar values, as PostgreSQL counts them in UTF-8). PostgreSQL would also take
/// a longer value whose excess is only spaces and silently cut them; Sluice refuses it, as
/// it never alters a value.
pub fn fits_max_length(s: &str, max_length: u32) -> bool {
    // Each character takes at least one byte: short values need no count.
    s.len() <= max_length as usize || s.chars().count() <= max_length as usize
}

/// Writes `v` (a value of `ty`) as `COPY` text.
pub fn write_copy(ty: &ColumnType, v: &Value, out: &mut Vec<u8>) {
    match v {
        Value::Uuid(u) => {
            let mut buf = Uuid::encode_buffer();
            out.extend_from_slice(u.hyphenated().encode_lower(&mut buf).as_bytes());
        }
        Value::Text(s) | Value::Json(s) => copy_escape(out, s.as_bytes()),
        Value::Integer(i) => {
            // Writing into a Vec cannot fail.
            let _ = write!(out, "{i}");
        }
        Value::Numeric(n) => {
            let scale = match ty {
                ColumnType::Numeric(ns) => ns.scale,
                _ => 0,
            };
            write_scaled(out, *n, scale);
        }
        // Shortest text that reads back as the same double.
        Value::Double(d) => {
            let _ = write!(out, "{d:e}");
        }
        Value::Boolean(b) => out.push(if *b { b't' } else { b'f' }),
        Value::Date(d) => {
            let _ = write!(out, "{}", d.format("%Y-%m-%d"));
        }
        Value::Timestamp(t) => write_timestamp(out, t),
    }
}

/// Appends `bytes` with COPY text escapes (backslash, tab, line breaks).
pub fn copy_escape(out: &mut Vec<u8>, bytes: &[u8]) {
    if !bytes
        .iter()
        .any(|b| matches!(b, b'\\' | b'\t' | b'\n' | b'\r'))
    {
        out.extend_from_slice(bytes);
        return;
    }
    for &b in bytes {
        match b {
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\t' => out.extend_from_slice(b"\\t"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            _ => out.push(b),
        }
    }
}

/// Any text without NUL, which PostgreSQL text cannot hold (`COPY` fails the batch on it).
fn parse_text(s: &str) -> Result<(), ValueError> {
    if s.contains('\0') {
        return Err(ValueError::Malformed(
            "text PostgreSQL can store (it holds a NUL character)",
        ));
    }
    Ok(())
}

/// Hyphenated (any case), 32 hex digits, or either in braces, as PostgreSQL reads them.
fn parse_uuid(s: &str) -> Result<Uuid, ValueError> {
    let bad = ValueError::Malformed("a UUID (8-4-4-4-12 hex digits)");
    let inner = match s.strip_prefix('{') {
        Some(rest) => rest.strip_suffix('}').ok_or(bad.clone())?,
        None => s,
    };
    if !(inner.len() == 36 || inner.len() == 32) {
        return Err(bad);
    }
    Uuid::try_parse(inner).map_err(|_| bad)
}

/// Optional sign, then ASCII digits.
fn parse_int(s: &str, min: i64, max: i64, name: &'static str) -> Result<i64, ValueError> {
    let digits = s.strip_prefix(['+', '-']).unwrap_or(s);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ValueError::Malformed(match name {
            "smallint" => "a smallint (whole number)",
            "integer" => "an integer (whole number)",
            _ => "a bigint (whole number)",
        }));
    }
    let v: i64 = s.parse().map_err(|_| ValueError::OutOfRange(name))?;
    if v < min || v > max {
        return Err(ValueError::OutOfRange(name));
    }
    Ok(v)
}

/// `[+-]digits[.digits]` or `[+-].digits`; more fraction digits than the scale are
/// refused unless they are zeros (PostgreSQL would round them away silently).
fn parse_numeric(s: &str, n: NumericScale) -> Result<i128, ValueError> {
    let bad = ValueError::Malformed("a decimal number such as 12.34");
    let (negative, unsigned) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    let (int_part, frac_part) = match unsigned.split_once('.') {
        Some((i, f)) => (i, f),
        None => (unsigned, ""),
    };
    if (int_part.is_empty() && frac_part.is_empty())
        || !int_part.bytes().all(|b| b.is_ascii_digit())
        || !frac_part.bytes().all(|b| b.is_ascii_digit())
    {
        return Err(bad);
    }
    let scale = n.scale as usize;
    let (kept, dropped) = frac_part.split_at(frac_part.len().min(scale));
    if dropped.bytes().any(|b| b != b'0') {
        return Err(ValueError::Malformed(
            "a decimal number with no more decimal places than the column's scale",
        ));
    }
    let int_digits = int_part.trim_start_matches('0');
    if int_digits.len() > (n.precision - n.scale) as usize {
        return Err(ValueError::OutOfRange("the column's numeric precision"));
    }
    let mut value: i128 = 0;
    for b in int_digits.bytes().chain(kept.bytes()) {
        value = value * 10 + i128::from(b - b'0');
    }
    for _ in kept.len()..scale {
        value *= 10;
    }
    Ok(if negative { -value } else { value })
}

fn write_scaled(out: &mut Vec<u8>, v: i128, scale: u32) {
    if v < 0 {
        out.push(b'-');
    }
    let abs = v.unsigned_abs();
    let pow = 10u128.pow(scale);
    // Writing into a Vec cannot fail.
    let _ = write!(out, "{}", abs / pow);
    if scale > 0 {
        let _ = write!(out, ".{:0width$}", abs % pow, width = scale as usize);
    }
}

/// A finite decimal number (`1`, `-2.5`, `6.02e23`); no NaN or infinities, and nothing
/// that rounds to zero or to infinity (PostgreSQL refuses those as out of range).
fn parse_double(s: &str) -> Result<f64, ValueError> {
    let body = s.strip_prefix(['+', '-']).unwrap_or(s);
    let (mantissa, exponent) = match body.find(['e', 'E']) {
        Some(at) => (&body[..at], Some(&body[at + 1..])),
        None => (body, None),
    };
    let mantissa_ok = !mantissa.is_empty()
        && mantissa != "."
        && mantissa.bytes().filter(|b| *b == b'.').count() <= 1
        && mantissa.bytes().all(|b| b.is_ascii_digit() || b == b'.');
    let exponent_ok = exponent.is_none_or(|e| {
        let digits = e.strip_prefix(['+', '-']).unwrap_or(e);
        !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())
    });
    if !mantissa_ok || !exponent_ok {
        return Err(ValueError::Malformed("a number such as 1.5 or 6.02e23"));
    }
    let v: f64 = s
        .parse()
        .map_err(|_| ValueError::Malformed("a number such as 1.5 or 6.02e23"))?;
    let nonzero = mantissa.bytes().any(|b| matches!(b, b'1'..=b'9'));
    if !v.is_finite() || (v == 0.0 && nonzero) {
        return Err(ValueError::OutOfRange("double precision"));
    }
    Ok(v)
}

/// `true`/`false`, `t`/`f`, `yes`/`no`, `y`/`n`, `on`/`off`, `1`/`0`, in any case.
fn parse_bool(s: &str) -> Result<bool, ValueError> {
    const TRUE: [&str; 6] = ["true", "t", "yes", "y", "on", "1"];
    const FALSE: [&str; 6] = ["false", "f", "no", "n", "off", "0"];
    if TRUE.iter().any(|t| t.eq_ignore_ascii_case(s)) {
        Ok(true)
    } else if FALSE.iter().any(|f| f.eq_ignore_ascii_case(s)) {
        Ok(false)
    } else {
        Err(ValueError::Malformed("a boolean (true/false, yes/no, 1/0)"))
    }
}

/// `YYYY-MM-DD`, years 0001 to 9999.
fn parse_date(s: &str) -> Result<NaiveDate, ValueError> {
    let bad = ValueError::Malformed("a date such as 2026-11-25");
    let b = s.as_bytes();
    let shape = b.len() == 10
        && b[4] == b'-'
        && b[7] == b'-'
        && b.iter()
            .enumerate()
            .all(|(i, c)| i == 4 || i == 7 || c.is_ascii_digit());
    if !shape {
        return Err(bad);
    }
    let d = NaiveDate::parse_from_str(s, "%Y-%m-%d").map_err(|_| bad)?;
    if d.year() < 1 {
        return Err(ValueError::OutOfRange("date (years 0001 to 9999)"));
    }
    Ok(d)
}

/// RFC 3339 (`2026-11-25T05:40:51.123Z`), exactly `YYYY-MM-DD[Tt ]HH:MM:SS[.f]` and `Z`,
/// `z` or `±HH:MM`, with:
/// * at most 9 fraction digits: chrono would cut further digits, and PostgreSQL rounds
///   to microseconds from all of them (`.00000050000001` is `.000001` to it, `.0000005`
///   once cut), so the value would change;
/// * an offset of at most ±15:59, the largest PostgreSQL takes;
/// * years 0001 to 9999 both as written and in UTC, and no leap second (PostgreSQL has
///   neither year 0 nor leap seconds).
///
/// The shape is checked before chrono reads it, as chrono is more lenient (it takes a
/// Unicode minus sign in the offset, which PostgreSQL refuses).
pub fn parse_timestamp(s: &str) -> Result<DateTime<Utc>, ValueError> {
    let bad = ValueError::Malformed("an RFC 3339 timestamp such as 2026-11-25T05:40:51.123Z");
    let offset_hours = rfc3339_offset_hours(s.as_bytes()).ok_or(bad.clone())?;
    if offset_hours > 15 {
        return Err(ValueError::OutOfRange(
            "time zone offsets PostgreSQL takes (at most ±15:59)",
        ));
    }
    let with_offset = DateTime::parse_from_rfc3339(s).map_err(|_| bad)?;
    let parsed = with_offset.with_timezone(&Utc);
    if !(1..=9999).contains(&parsed.year()) || with_offset.year() < 1 {
        return Err(ValueError::OutOfRange(
            "timestamptz (years 0001 to 9999 in UTC)",
        ));
    }
    if parsed.nanosecond() >= 1_000_000_000 {
        return Err(ValueError::Malformed("a timestamp without a leap second"));
    }
    Ok(parsed)
}

/// Checks the shape `YYYY-MM-DD[Tt ]HH:MM:SS[.f{1,9}](Z|z|±HH:MM)` (ASCII only) and
/// returns the offset's hours (0 for `Z`). The values are checked by chrono afterwards.
fn rfc3339_offset_hours(b: &[u8]) -> Option<u8> {
    let digits =
        |r: std::ops::Range<usize>| b.get(r).is_some_and(|d| d.iter().all(u8::is_ascii_digit));
    let shape = b.len() >= 20
        && digits(0..4)
        && b[4] == b'-'
        && digits(5..7)
        && b[7] == b'-'
        && digits(8..10)
        && matches!(b[10], b'T' | b't' | b' ')
        && digits(11..13)
        && b[13] == b':'
        && digits(14..16)
        && b[16] == b':'
        && digits(17..19);
    if !shape {
        return None;
    }
    let mut rest = &b[19..];
    if let Some(frac) = rest.strip_prefix(b".") {
        let n = frac.iter().take_while(|d| d.is_ascii_digit()).count();
        if !(1..=9).contains(&n) {
            return None;
        }
        rest = &frac[n..];
    }
    match rest {
        b"Z" | b"z" => Some(0),
        [b'+' | b'-', h1, h2, b':', m1, m2]
            if [h1, h2, m1, m2].iter().all(|d| d.is_ascii_digit()) =>
        {
            Some((h1 - b'0') * 10 + (h2 - b'0'))
        }
        _ => None,
    }
}

/// Writes a UTC timestamp as `YYYY-MM-DDTHH:MM:SS[.fffffffff]Z`, which PostgreSQL reads
/// exactly (sub-microsecond digits are rounded by the server).
pub fn write_timestamp(out: &mut Vec<u8>, t: &DateTime<Utc>) {
    let n = t.naive_utc();
    let (date, time) = (n.date(), n.time());
    push_digits(out, date.year().unsigned_abs(), 4);
    out.push(b'-');
    push_digits(out, date.month(), 2);
    out.push(b'-');
    push_digits(out, date.day(), 2);
    out.push(b'T');
    push_digits(out, time.hour(), 2);
    out.push(b':');
    push_digits(out, time.minute(), 2);
    out.push(b':');
    push_digits(out, time.second(), 2);
    let nanos = time.nanosecond();
    if nanos != 0 {
        out.push(b'.');
        push_digits(out, nanos, 9);
    }
    out.push(b'Z');
}

fn push_digits(out: &mut Vec<u8>, mut value: u32, width: usize) {
    let start = out.len();
    out.resize(start + width, b'0');
    for slot in out[start..].iter_mut().rev() {
        *slot = b'0' + (value % 10) as u8;
        value /= 10;
    }
}

/// A JSON document; `\u0000` is refused because jsonb cannot store it, and so are numbers
/// jsonb's numeric cannot hold (see [`json_numbers_fit`]).
fn parse_json(s: &str) -> Result<(), ValueError> {
    serde_json::from_str::<serde_json::Value>(s)
        .map_err(|_| ValueError::Malformed("a JSON document"))?;
    if s.contains("\\u0000") {
        return Err(ValueError::Malformed(
            "a JSON document jsonb can store (it holds \\u0000)",
        ));
    }
    if !json_numbers_fit(s) {
        return Err(ValueError::OutOfRange(
            "jsonb numbers (at most 16383 digits after the decimal point)",
        ));
    }
    Ok(())
}

/// Most digits after the decimal point a PostgreSQL numeric holds (`NUMERIC_DSCALE_MAX`).
const NUMERIC_DSCALE_MAX: i64 = 16_383;

/// Whether every number of the (valid) JSON document `s` fits jsonb, which stores numbers
/// as numeric. serde_json reads `1e-16384` or `0.0e-16383` as 0, but numeric keeps the
/// scale as written (fraction digits minus the exponent, trailing zeros included) and
/// refuses more than 16383; it also refuses exponents beyond ±(2^31-1)/2, even for 0.
/// Numbers too large for numeric are already refused by serde_json (beyond f64).
fn json_numbers_fit(s: &str) -> bool {
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'"' => {
                i += 1;
                while i < b.len() && b[i] != b'"' {
                    i += if b[i] == b'\\' { 2 } else { 1 };
                }
                i += 1;
            }
            b'-' | b'0'..=b'9' => {
                let start = i;
                while i < b.len() && matches!(b[i], b'-' | b'+' | b'.' | b'e' | b'E' | b'0'..=b'9')
                {
                    i += 1;
                }
                if !numeric_scale_fits(&s[start..i]) {
                    return false;
                }
            }
            _ => i += 1,
        }
    }
    true
}

/// Whether the JSON number `n` (already valid JSON) fits numeric's scale and exponent.
fn numeric_scale_fits(n: &str) -> bool {
    const EXPONENT_LIMIT: i64 = i32::MAX as i64 / 2;
    let (mantissa, exponent) = match n.find(['e', 'E']) {
        Some(at) => (&n[..at], &n[at + 1..]),
        None => (n, "0"),
    };
    let Ok(exponent) = exponent.parse::<i64>() else {
        return false;
    };
    if exponent.abs() >= EXPONENT_LIMIT {
        return false;
    }
    let fraction_digits = mantissa.split_once('.').map_or(0, |(_, f)| f.len()) as i64;
    fraction_digits - exponent <= NUMERIC_DSCALE_MAX
}

#[cfg(test)]
mod tests {
    use super::*;

    fn copy_text(ty: &ColumnType, s: &str) -> Result<String, ValueError> {
        let v = parse(ty, s)?;
        let mut out = Vec::new();
        write_copy(ty, &v, &mut out);
        Ok(String::from_utf8(out).expect("utf8"))
    }

    fn numeric(precision: u32, scale: u32) -> ColumnType {
        ColumnType::Numeric(NumericScale { precision, scale })
    }

    #[test]
    fn integers_keep_their_type_ranges() {
        assert_eq!(
            copy_text(&ColumnType::Smallint, "+0032767").as_deref(),
            Ok("32767")
        );
        assert!(matches!(
            parse(&ColumnType::Smallint, "32768"),
            Err(ValueError::OutOfRange(_))
        ));
        assert_eq!(
            copy_text(&ColumnType::Bigint, "-9223372036854775808").as_deref(),
            Ok("-9223372036854775808")
        );
        assert!(matches!(
            parse(&ColumnType::Bigint, "9223372036854775808"),
            Err(ValueError::OutOfRange(_))
        ));
        for bad in ["", "+", "1.0", " 1", "1e3", "0x10", "1_000"] {
            assert!(
                matches!(
                    parse(&ColumnType::Integer, bad),
                    Err(ValueError::Malformed(_))
                ),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn numerics_are_exact_and_never_rounded() {
        let n = numeric(10, 2);
        assert_eq!(copy_text(&n, "12.3").as_deref(), Ok("12.30"));
        assert_eq!(copy_text(&n, "-.5").as_deref(), Ok("-0.50"));
        assert_eq!(copy_text(&n, "7.").as_deref(), Ok("7.00"));
        assert_eq!(copy_text(&n, "1.2300").as_deref(), Ok("1.23"));
        assert_eq!(
            copy_text(&n, "00099999999.99").as_deref(),
            Ok("99999999.99")
        );
        assert!(matches!(parse(&n, "1.234"), Err(ValueError::Malformed(_))));
        assert!(matches!(
            parse(&n, "100000000"),
            Err(ValueError::OutOfRange(_))
        ));
        for bad in [".", "", "1e2", "NaN", "1,5", "--1"] {
            assert!(parse(&n, bad).is_err(), "{bad:?}");
        }
        assert_eq!(copy_text(&numeric(5, 0), "-42").as_deref(), Ok("-42"));
    }

    #[test]
    fn doubles_are_finite_and_round_trip() {
        assert_eq!(
            copy_text(&ColumnType::Double, "1.5").as_deref(),
            Ok("1.5e0")
        );
        assert_eq!(
            copy_text(&ColumnType::Double, "-2E-3").as_deref(),
            Ok("-2e-3")
        );
        for bad in [
            "NaN", "inf", "Infinity", "1e400", "1e-400", "", ".", "1..2", "0x1p3",
        ] {
            assert!(parse(&ColumnType::Double, bad).is_err(), "{bad:?}");
        }
        assert_eq!(parse(&ColumnType::Double, "0e-999"), Ok(Value::Double(0.0)));
    }

    #[test]
    fn uuids_booleans_dates() {
        assert_eq!(
            copy_text(&ColumnType::Uuid, "{0123456789ABCDEF0123456789ABCDEF}").as_deref(),
            Ok("01234567-89ab-cdef-0123-456789abcdef")
        );
        assert!(
            parse(
                &ColumnType::Uuid,
                "urn:uuid:01234567-89ab-cdef-0123-456789abcdef"
            )
            .is_err()
        );
        assert_eq!(copy_text(&ColumnType::Boolean, "Yes").as_deref(), Ok("t"));
        assert!(parse(&ColumnType::Boolean, "maybe").is_err());
        assert_eq!(
            copy_text(&ColumnType::Date, "2026-02-28").as_deref(),
            Ok("2026-02-28")
        );
        for bad in [
            "2026-02-30",
            "26-02-28",
            "2026-2-28",
            "0000-01-01",
            "+2026-02-28",
        ] {
            assert!(parse(&ColumnType::Date, bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn timestamps_are_written_in_utc() {
        assert_eq!(
            copy_text(&ColumnType::Timestamptz, "2026-11-25T10:00:00.5+01:00").as_deref(),
            Ok("2026-11-25T09:00:00.500000000Z")
        );
        assert!(parse(&ColumnType::Timestamptz, "0001-01-01T00:00:00+01:00").is_err());
        assert!(parse(&ColumnType::Timestamptz, "2026-11-25").is_err());
    }

    #[test]
    fn text_and_json_are_escaped_for_copy() {
        assert_eq!(
            copy_text(&ColumnType::Text, "a\tb\\c\n").as_deref(),
            Ok("a\\tb\\\\c\\n")
        );
        assert_eq!(
            copy_text(&ColumnType::Jsonb, r#"{"a":[1,"x\ty"]}"#).as_deref(),
            Ok(r#"{"a":[1,"x\\ty"]}"#)
        );
        assert!(parse(&ColumnType::Jsonb, r#"{"a":"\u0000"}"#).is_err());
        assert!(parse(&ColumnType::Jsonb, "{").is_err());
    }

    #[test]
    fn text_holds_no_nul() {
        // PostgreSQL text cannot store NUL: COPY would fail the whole batch on it.
        for bad in ["\0", "a\0b", "abc\0"] {
            assert!(
                matches!(parse(&ColumnType::Text, bad), Err(ValueError::Malformed(_))),
                "{bad:?}"
            );
        }
        assert_eq!(
            copy_text(&ColumnType::Text, "\u{1}\u{7f}").as_deref(),
            Ok("\u{1}\u{7f}")
        );
    }

    #[test]
    fn max_length_counts_characters_like_varchar() {
        assert!(fits_max_length("abcde", 5));
        assert!(!fits_max_length("abcdef", 5));
        // Characters, not bytes: five é are ten bytes.
        assert!(fits_max_length("ééééé", 5));
        assert!(!fits_max_length("éééééé", 5));
        // A combining accent is a character of its own, as PostgreSQL counts it.
        assert!(!fits_max_length("e\u{301}e\u{301}e\u{301}", 5));
        // PostgreSQL would cut trailing spaces beyond the limit; Sluice never alters.
        assert!(!fits_max_length("abcde ", 5));
    }

    #[test]
    fn timestamp_offsets_stay_within_what_postgres_takes() {
        let ts = |s: &str| parse(&ColumnType::Timestamptz, s);
        assert_eq!(
            copy_text(&ColumnType::Timestamptz, "2026-11-25T05:40:51+15:59").as_deref(),
            Ok("2026-11-24T13:41:51Z")
        );
        assert!(ts("2026-11-25T05:40:51-15:59").is_ok());
        // PostgreSQL: "time zone displacement out of range".
        for bad in ["2026-11-25T05:40:51+16:00", "2026-11-25T05:40:51-23:59"] {
            assert!(matches!(ts(bad), Err(ValueError::OutOfRange(_))), "{bad:?}");
        }
        // chrono takes a Unicode minus sign (U+2212); PostgreSQL does not.
        assert!(ts("2026-11-25T05:40:51\u{2212}01:00").is_err());
        for bad in [
            "2026-11-25T05:40:51+0100",
            "2026-11-25T05:40:51+01",
            "2026-11-25T05:40:51",
        ] {
            assert!(ts(bad).is_err(), "{bad:?}");
        }
        assert!(ts("2026-11-25t05:40:51z").is_ok());
        assert!(ts("2026-11-25 05:40:51Z").is_ok());
    }

    #[test]
    fn timestamps_keep_at_most_nine_fraction_digits() {
        // Nine digits are written back as read, and PostgreSQL rounds them as it would
        // round the input.
        assert_eq!(
            copy_text(&ColumnType::Timestamptz, "2026-11-25T05:40:51.000000500Z").as_deref(),
            Ok("2026-11-25T05:40:51.000000500Z")
        );
        // Cut to nine digits this would round down, while PostgreSQL rounds the input up.
        let ts = |s: &str| parse(&ColumnType::Timestamptz, s);
        assert!(ts("2026-11-25T05:40:51.00000050000001Z").is_err());
        assert!(ts("2026-11-25T05:40:51.0000000000Z").is_err());
        assert!(ts("2026-11-25T05:40:51.Z").is_err());
    }

    #[test]
    fn timestamps_have_no_year_zero_as_written_either() {
        // 0001-01-01 in UTC, but PostgreSQL reads the local date first and has no year 0.
        assert!(parse(&ColumnType::Timestamptz, "0000-12-31T23:00:00-01:00").is_err());
        assert!(parse(&ColumnType::Timestamptz, "0001-01-01T00:00:00Z").is_ok());
    }

    #[test]
    fn json_numbers_fit_numeric() {
        let json = |s: &str| parse(&ColumnType::Jsonb, s);
        // serde_json reads these as 0, PostgreSQL's numeric refuses a scale above 16383.
        for bad in [
            "1e-16384",
            "[0.0e-16383]",
            "{\"a\":0e-20000}",
            "1.00e-16382",
            "0e1073741823",
        ] {
            assert!(
                matches!(json(bad), Err(ValueError::OutOfRange(_))),
                "{bad:?}"
            );
        }
        for good in [
            "1e-16383",
            "1.0e-16382",
            "0e1073741822",
            "[1e-400, 1.5E+2, -0]",
        ] {
            assert!(json(good).is_ok(), "{good:?}");
        }
        // Digits inside strings are not numbers.
        assert!(json(r#"{"1e-99999":"\"0e-99999"}"#).is_ok());
        assert!(json(&format!("0.{}1", "0".repeat(16_382))).is_ok());
        assert!(json(&format!("0.{}1", "0".repeat(16_383))).is_err());
    }
}
