//! Values in PostgreSQL's binary `COPY` format.
//!
//! The worker has parsed and checked every value already; sending it in binary spares
//! the server its text input functions (`numeric_in`, `timestamptz_in`, `uuid_in`…),
//! which made the server's COPY backend the bottleneck. Each field is a 4-byte
//! big-endian length (-1 for NULL) followed by the type's `*_send` representation; a
//! row starts with its 2-byte field count. A stream starts with [`HEADER`] and ends
//! with [`TRAILER`].
//!
//! The encodings must give the very values the text format gives: the integration tests
//! load the same files both ways and compare, and `values_vs_postgres` checks each type.

use chrono::{DateTime, NaiveDate, Utc};
use sluice_core::schema::ColumnType;
use sluice_core::values::Value;
use uuid::Uuid;

/// Signature, flags (no OIDs) and an empty header extension.
pub const HEADER: &[u8] = b"PGCOPY\n\xff\r\n\0\0\0\0\0\0\0\0\0";
/// The field count -1 that ends the data.
pub const TRAILER: &[u8] = &[0xff, 0xff];

/// Microseconds between the Unix epoch and PostgreSQL's (2000-01-01 UTC).
const PG_EPOCH_MICROS: i64 = 946_684_800_000_000;

/// Starts a row of `fields` values.
pub fn row_start(out: &mut Vec<u8>, fields: u16) {
    out.extend_from_slice(&fields.to_be_bytes());
}

pub fn null(out: &mut Vec<u8>) {
    out.extend_from_slice(&(-1i32).to_be_bytes());
}

/// A `text` (or `varchar`) value: its UTF-8 bytes as they are, no escaping.
pub fn text(out: &mut Vec<u8>, bytes: &[u8]) {
    length(out, bytes.len());
    out.extend_from_slice(bytes);
}

/// A `jsonb` value: version 1, then the JSON text.
pub fn jsonb(out: &mut Vec<u8>, json: &[u8]) {
    length(out, json.len() + 1);
    out.push(1);
    out.extend_from_slice(json);
}

pub fn uuid(out: &mut Vec<u8>, id: &Uuid) {
    length(out, 16);
    out.extend_from_slice(id.as_bytes());
}

pub fn int2(out: &mut Vec<u8>, v: i16) {
    length(out, 2);
    out.extend_from_slice(&v.to_be_bytes());
}

pub fn int4(out: &mut Vec<u8>, v: i32) {
    length(out, 4);
    out.extend_from_slice(&v.to_be_bytes());
}

pub fn int8(out: &mut Vec<u8>, v: i64) {
    length(out, 8);
    out.extend_from_slice(&v.to_be_bytes());
}

pub fn float8(out: &mut Vec<u8>, v: f64) {
    length(out, 8);
    out.extend_from_slice(&v.to_bits().to_be_bytes());
}

pub fn boolean(out: &mut Vec<u8>, v: bool) {
    length(out, 1);
    out.push(u8::from(v));
}

/// A `date`: days since 2000-01-01.
pub fn date(out: &mut Vec<u8>, d: &NaiveDate) {
    let days = d.signed_duration_since(NaiveDate::from_ymd_opt(2000, 1, 1).unwrap_or_default());
    // Dates that parsed fit PostgreSQL's range (4713 BC to 5874897 AD), far inside i32.
    int4(out, i32::try_from(days.num_days()).unwrap_or(i32::MAX));
}

/// A `timestamptz`: microseconds since 2000-01-01 UTC.
pub fn timestamptz(out: &mut Vec<u8>, t: &DateTime<Utc>) {
    int8(out, timestamp_micros(t));
}

/// The microseconds PostgreSQL stores for `t` written as text with nine fraction digits
/// (what the text format sends). The server reads a fraction with `strtod` and rounds
/// `fraction * 1e6` to the nearest integer, ties to even (`rint`); `nanos / 1e9` in f64
/// is that same correctly rounded double, so this gives the server's value bit for bit.
pub fn timestamp_micros(t: &DateTime<Utc>) -> i64 {
    let nanos = t.timestamp_subsec_nanos();
    let fraction = if nanos % 1000 == 0 {
        i64::from(nanos / 1000)
    } else {
        // In [0, 1e6]: a cast of a rounded float in range cannot lose anything.
        ((f64::from(nanos) / 1e9) * 1e6).round_ties_even() as i64
    };
    t.timestamp() * 1_000_000 + fraction - PG_EPOCH_MICROS
}

/// A `numeric` value held as an integer scaled by 10^`scale` (`1250`, 2 → 12.50).
///
/// PostgreSQL's binary numeric: digit count, weight (of the first digit, in base-10000
/// places before the point), sign, display scale, then base-10000 digits. The decimal
/// point sits between two base-10000 digits, so the integer part is grouped from the
/// point leftwards and the fraction from the point rightwards.
pub fn numeric(out: &mut Vec<u8>, scaled: i128, scale: u16) {
    let negative = scaled < 0;
    let mut buf = [0u8; 40];
    let decimal = decimal_digits(scaled.unsigned_abs(), &mut buf);
    let scale_usize = usize::from(scale);
    let (int_part, frac_part): (&[u8], &[u8]) = if decimal.len() > scale_usize {
        decimal.split_at(decimal.len() - scale_usize)
    } else {
        (&[], decimal)
    };
    // Fraction digits with the zeros between the point and `frac_part` restored.
    let frac_leading_zeros = scale_usize - frac_part.len();

    let mut groups: [u16; 24] = [0; 24];
    let mut n = 0;
    let int_groups = int_part.len().div_ceil(4);
    let first_width = int_part.len() - (int_groups.saturating_sub(1)) * 4;
    let mut at = 0;
    for g in 0..int_groups {
        let width = if g == 0 { first_width } else { 4 };
        groups[n] = digits_value(&int_part[at..at + width]);
        at += width;
        n += 1;
    }
    let frac_len = frac_leading_zeros + frac_part.len();
    let frac_groups = frac_len.div_ceil(4);
    for g in 0..frac_groups {
        let mut value = 0u16;
        for i in g * 4..g * 4 + 4 {
            let digit = if i < frac_leading_zeros || i >= frac_len {
                0
            } else {
                u16::from(frac_part[i - frac_leading_zeros] - b'0')
            };
            value = value * 10 + digit;
        }
        groups[n] = value;
        n += 1;
    }
    // `as i16`: at most 10 integer groups for 38 digits.
    let mut weight = int_groups as i16 - 1;
    let mut first = 0;
    while first < n && groups[first] == 0 {
        first += 1;
        weight -= 1;
    }
    let mut last = n;
    while last > first && groups[last - 1] == 0 {
        last -= 1;
    }
    let digits = &groups[first..last];
    if digits.is_empty() {
        weight = 0;
    }
    length(out, 8 + 2 * digits.len());
    out.extend_from_slice(&(digits.len() as i16).to_be_bytes());
    out.extend_from_slice(&weight.to_be_bytes());
    let sign: u16 = if negative && !digits.is_empty() {
        0x4000
    } else {
        0
    };
    out.extend_from_slice(&sign.to_be_bytes());
    out.extend_from_slice(&scale.to_be_bytes());
    for d in digits {
        out.extend_from_slice(&d.to_be_bytes());
    }
}

/// A parsed value of a declared column.
pub fn value(out: &mut Vec<u8>, ty: &ColumnType, v: &Value) {
    match (v, ty) {
        (Value::Uuid(u), _) => uuid(out, u),
        (Value::Text(s), _) => text(out, s.as_bytes()),
        (Value::Json(s), _) => jsonb(out, s.as_bytes()),
        // The parse checked the range of the column's type.
        (Value::Integer(i), ColumnType::Smallint) => int2(out, *i as i16),
        (Value::Integer(i), ColumnType::Integer) => int4(out, *i as i32),
        (Value::Integer(i), _) => int8(out, *i),
        (Value::Numeric(n), ColumnType::Numeric(ns)) => numeric(out, *n, ns.scale as u16),
        (Value::Numeric(n), _) => numeric(out, *n, 0),
        (Value::Double(d), _) => float8(out, *d),
        (Value::Boolean(b), _) => boolean(out, *b),
        (Value::Date(d), _) => date(out, d),
        (Value::Timestamp(t), _) => timestamptz(out, t),
    }
}

fn length(out: &mut Vec<u8>, len: usize) {
    // A field is at most 1 GB (PostgreSQL's limit); the row limit keeps it far smaller.
    out.extend_from_slice(&(len as i32).to_be_bytes());
}

fn decimal_digits(mut v: u128, buf: &mut [u8; 40]) -> &[u8] {
    if v == 0 {
        return &[];
    }
    let mut i = buf.len();
    while v > 0 {
        i -= 1;
        buf[i] = b'0' + (v % 10) as u8;
        v /= 10;
    }
    &buf[i..]
}

fn digits_value(digits: &[u8]) -> u16 {
    digits
        .iter()
        .fold(0u16, |acc, d| acc * 10 + u16::from(d - b'0'))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The payload of one numeric field (after its length), as i16/u16 words.
    fn numeric_words(scaled: i128, scale: u16) -> Vec<i32> {
        let mut out = Vec::new();
        numeric(&mut out, scaled, scale);
        let len = i32::from_be_bytes([out[0], out[1], out[2], out[3]]) as usize;
        assert_eq!(len, out.len() - 4);
        out[4..]
            .chunks(2)
            .map(|w| i32::from(u16::from_be_bytes([w[0], w[1]])))
            .collect()
    }

    #[test]
    fn numerics_group_around_the_point() {
        // ndigits, weight, sign, dscale, digits…
        assert_eq!(numeric_words(1250, 2), vec![2, 0, 0, 2, 12, 5000]);
        assert_eq!(numeric_words(0, 2), vec![0, 0, 0, 2]);
        assert_eq!(numeric_words(-5, 2), vec![1, 0xffff, 0x4000, 2, 500]);
        assert_eq!(
            numeric_words(123_456_789, 0),
            vec![3, 2, 0, 0, 1, 2345, 6789]
        );
        assert_eq!(numeric_words(100_000_000, 0), vec![1, 2, 0, 0, 1]);
        // 0.00001 at scale 5: the first digit is in the second group after the point.
        assert_eq!(numeric_words(1, 5), vec![1, 0xfffe, 0, 5, 1000]);
        let max = 10i128.pow(38) - 1;
        let words = numeric_words(max, 10);
        assert_eq!(words[..4], [10, 6, 0, 10]);
    }

    #[test]
    fn timestamps_round_like_the_server() {
        let t = |s: &str| {
            DateTime::parse_from_rfc3339(s)
                .map(|t| t.with_timezone(&Utc))
                .expect("time")
        };
        assert_eq!(timestamp_micros(&t("2000-01-01T00:00:00Z")), 0);
        assert_eq!(timestamp_micros(&t("2000-01-01T00:00:01.5Z")), 1_500_000);
        assert_eq!(timestamp_micros(&t("1999-12-31T23:59:59Z")), -1_000_000);
        // Half a microsecond rounds to even, as rint does.
        assert_eq!(timestamp_micros(&t("2000-01-01T00:00:00.0000005Z")), 0);
        assert_eq!(timestamp_micros(&t("2000-01-01T00:00:00.0000025Z")), 2);
        assert_eq!(
            timestamp_micros(&t("2000-01-01T00:00:00.999999999Z")),
            1_000_000
        );
    }

    #[test]
    fn a_stream_has_the_signature_and_a_trailer() {
        assert_eq!(HEADER.len(), 19);
        assert!(HEADER.starts_with(b"PGCOPY\n\xff\r\n\0"));
        let mut row = Vec::new();
        row_start(&mut row, 2);
        null(&mut row);
        text(&mut row, b"a\tb");
        assert_eq!(row, b"\0\x02\xff\xff\xff\xff\0\0\0\x03a\tb");
    }
}
