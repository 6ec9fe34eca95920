//! The checks of one data row, column by column, and the writing of a valid row as
//! PostgreSQL `COPY` text.
//!
//! A value that passes here must also be accepted by PostgreSQL: one row the database
//! refuses would fail the whole batch's `COPY`, again on every replay. Every check is
//! therefore at least as strict as the column type (year range of `timestamptz`, the
//! `numeric(10,2)` range, `integer` range, no NUL in `text`).

use chrono::{DateTime, Datelike, Timelike, Utc};
use sluice_core::event::{
    COLUMN_COUNT, EventType, HEADER_FIELDS, MAX_PRICE_CENTS, MAX_TEXT_FIELD_BYTES,
};
use sluice_core::reject::RejectReason;
use uuid::Uuid;

use super::Rules;
use crate::records::Fields;

/// Longest excerpt of an offending value quoted in a message.
const MESSAGE_EXCERPT_BYTES: usize = 60;

pub(super) type RowError = (RejectReason, String);

/// The first check of every row, also applied to lines rejected for their quotes: the
/// bytes are UTF-8 text without NUL (which PostgreSQL text cannot store).
pub(super) fn check_text(row: &[u8]) -> Result<(), RowError> {
    if let Err(e) = std::str::from_utf8(row) {
        return Err((
            RejectReason::InvalidUtf8,
            format!(
                "the row is not valid UTF-8 (invalid byte sequence at byte {} of the row)",
                e.valid_up_to()
            ),
        ));
    }
    if let Some(at) = memchr::memchr(0, row) {
        return Err((
            RejectReason::InvalidUtf8,
            format!(
                "the row holds a NUL byte (at byte {at} of the row), which PostgreSQL text cannot store"
            ),
        ));
    }
    Ok(())
}

/// Validates one row (its raw bytes and its fields) and, when valid, appends it to
/// `copy` (a partial row is truncated by the caller on error).
pub(super) fn check_row(
    fields: &Fields<'_>,
    raw: &[u8],
    rules: &Rules,
    future_limit: DateTime<Utc>,
    copy: &mut Vec<u8>,
) -> Result<Uuid, RowError> {
    check_text(raw)?;
    if fields.len() != COLUMN_COUNT {
        return Err((
            RejectReason::WrongColumnCount,
            format!("expected {COLUMN_COUNT} columns, found {}", fields.len()),
        ));
    }
    for (i, name) in HEADER_FIELDS.iter().enumerate() {
        let len = fields.get(i).len();
        if len > MAX_TEXT_FIELD_BYTES {
            return Err((
                RejectReason::FieldTooLong,
                format!("{name} is {len} bytes long; at most {MAX_TEXT_FIELD_BYTES} are allowed"),
            ));
        }
    }
    for (i, name) in HEADER_FIELDS.iter().enumerate() {
        if fields.get(i).is_empty() {
            return Err((RejectReason::MissingField, format!("{name} is empty")));
        }
    }

    let id_field = fields.get(0);
    let event_id = Uuid::try_parse_ascii(id_field).map_err(|_| {
        (
            RejectReason::BadEventId,
            format!("event_id {} is not a UUID", quoted(id_field)),
        )
    })?;
    let mut uuid_buf = Uuid::encode_buffer();
    copy.extend_from_slice(event_id.hyphenated().encode_lower(&mut uuid_buf).as_bytes());
    copy.push(b'\t');

    let time_field = fields.get(1);
    let event_time = parse_timestamp(time_field)?;
    if event_time > future_limit {
        return Err((
            RejectReason::FutureTimestamp,
            format!(
                "event_time {} is more than {} s ahead of the worker's clock ({})",
                quoted(time_field),
                rules.future_tolerance.num_seconds(),
                rules.now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            ),
        ));
    }
    write_timestamp(copy, &event_time);
    copy.push(b'\t');

    check_id("user_id", fields.get(2))?;
    copy.extend_from_slice(fields.get(2));
    copy.push(b'\t');

    copy_text(copy, fields.get(3));
    copy.push(b'\t');

    let type_field = fields.get(4);
    let event_type = std::str::from_utf8(type_field)
        .ok()
        .and_then(EventType::parse)
        .ok_or_else(|| {
            (
                RejectReason::UnknownEventType,
                format!(
                    "event_type {} is not one of view, add_to_cart, purchase",
                    quoted(type_field)
                ),
            )
        })?;
    copy.extend_from_slice(event_type.as_str().as_bytes());
    copy.push(b'\t');

    check_id("product_id", fields.get(5))?;
    copy.extend_from_slice(fields.get(5));
    copy.push(b'\t');

    copy_text(copy, fields.get(6));
    copy.push(b'\t');

    let price_cents = parse_price(fields.get(7))?;
    sluice_core::event::write_price(copy, price_cents);
    copy.push(b'\t');

    let quantity = parse_quantity(fields.get(8), event_type)?;
    copy.extend_from_slice(itoa_u32(quantity, &mut [0u8; 10]));
    copy.push(b'\n');
    Ok(event_id)
}

fn parse_timestamp(field: &[u8]) -> Result<DateTime<Utc>, RowError> {
    let bad = |why: &str| {
        (
            RejectReason::BadTimestamp,
            format!("event_time {} {why}", quoted(field)),
        )
    };
    let text = std::str::from_utf8(field).map_err(|_| bad("is not text"))?;
    let parsed = DateTime::parse_from_rfc3339(text)
        .map_err(|_| bad("is not an RFC 3339 timestamp such as 2026-11-25T05:40:51.123Z"))?
        .with_timezone(&Utc);
    // PostgreSQL has no year 0 and no leap seconds; refuse what it would refuse.
    if !(1..=9999).contains(&parsed.year()) {
        return Err(bad("has a year outside 0001..9999"));
    }
    if parsed.nanosecond() >= 1_000_000_000 {
        return Err(bad("is a leap second, which PostgreSQL cannot store"));
    }
    Ok(parsed)
}

/// Writes a UTC timestamp as `YYYY-MM-DDTHH:MM:SS[.fffffffff]Z`, which PostgreSQL reads
/// exactly (sub-microsecond digits are rounded by the server).
fn write_timestamp(out: &mut Vec<u8>, t: &DateTime<Utc>) {
    let n = t.naive_utc();
    let date = n.date();
    let time = n.time();
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

fn itoa_u32(mut value: u32, buf: &mut [u8; 10]) -> &[u8] {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (value % 10) as u8;
        value /= 10;
        if value == 0 {
            break;
        }
    }
    &buf[i..]
}

/// `user_id` and `product_id`: non-negative integers that fit `bigint`.
fn check_id(name: &str, field: &[u8]) -> Result<(), RowError> {
    let fits = field.len() <= 19
        && field.iter().all(u8::is_ascii_digit)
        && std::str::from_utf8(field)
            .ok()
            .and_then(|s| s.parse::<i64>().ok())
            .is_some();
    if fits {
        Ok(())
    } else {
        Err((
            RejectReason::BadId,
            format!(
                "{name} {} is not a non-negative whole number (at most {})",
                quoted(field),
                i64::MAX
            ),
        ))
    }
}

/// `price`: digits with an optional fraction of one or two digits; returns cents.
fn parse_price(field: &[u8]) -> Result<i64, RowError> {
    let bad = || {
        (
            RejectReason::BadPrice,
            format!(
                "price {} is not a decimal number with at most two decimal places (e.g. 12.50)",
                quoted(field)
            ),
        )
    };
    let (negative, digits) = match field.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, field),
    };
    let (whole, fraction) = match memchr::memchr(b'.', digits) {
        Some(dot) => (&digits[..dot], Some(&digits[dot + 1..])),
        None => (digits, None),
    };
    if whole.is_empty() || !whole.iter().all(u8::is_ascii_digit) {
        return Err(bad());
    }
    let mut cents: i64 = 0;
    for &d in whole {
        cents = cents
            .checked_mul(10)
            .and_then(|c| c.checked_add(i64::from(d - b'0')))
            .ok_or_else(bad)?;
    }
    cents = cents.checked_mul(100).ok_or_else(bad)?;
    match fraction {
        None => {}
        Some(f) if (1..=2).contains(&f.len()) && f.iter().all(u8::is_ascii_digit) => {
            let mut frac = i64::from(f[0] - b'0') * 10;
            if let Some(d) = f.get(1) {
                frac += i64::from(d - b'0');
            }
            cents += frac;
        }
        Some(_) => return Err(bad()),
    }
    if cents > MAX_PRICE_CENTS {
        return Err((
            RejectReason::BadPrice,
            format!(
                "price {} is larger than the largest storable price 99999999.99",
                quoted(field)
            ),
        ));
    }
    if negative && cents > 0 {
        return Err((
            RejectReason::NegativePrice,
            format!("price {} is negative", quoted(field)),
        ));
    }
    Ok(cents)
}

/// `quantity`: a whole number that fits `integer`, ≥ the event type's minimum.
fn parse_quantity(field: &[u8], event_type: EventType) -> Result<u32, RowError> {
    let bad = || {
        (
            RejectReason::BadQuantity,
            format!(
                "quantity {} is not a whole number between 0 and {}",
                quoted(field),
                i32::MAX
            ),
        )
    };
    let (negative, digits) = match field.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, field),
    };
    if digits.is_empty() || digits.len() > 10 || !digits.iter().all(u8::is_ascii_digit) {
        return Err(bad());
    }
    let value = digits
        .iter()
        .fold(0u64, |acc, d| acc * 10 + u64::from(d - b'0'));
    if value > i32::MAX as u64 {
        return Err(bad());
    }
    let value = value as u32;
    if negative && value > 0 {
        return Err((
            RejectReason::NegativeQuantity,
            format!("quantity {} is negative", quoted(field)),
        ));
    }
    if value < event_type.min_quantity().unsigned_abs() {
        return Err((
            RejectReason::ZeroQuantity,
            format!("quantity is 0, but a {event_type} event needs at least 1"),
        ));
    }
    Ok(value)
}

/// Appends a text value escaped for COPY's text format.
fn copy_text(out: &mut Vec<u8>, value: &[u8]) {
    let needs_escape = value
        .iter()
        .any(|b| matches!(b, b'\\' | b'\t' | b'\n' | b'\r'));
    if !needs_escape {
        out.extend_from_slice(value);
        return;
    }
    for &b in value {
        match b {
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\t' => out.extend_from_slice(b"\\t"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            _ => out.push(b),
        }
    }
}

/// A value for a message: quoted, lossily decoded, shortened when long.
fn quoted(field: &[u8]) -> String {
    format!("\"{}\"", excerpt(field, MESSAGE_EXCERPT_BYTES))
}

pub(super) fn excerpt(bytes: &[u8], max: usize) -> String {
    if bytes.len() <= max {
        String::from_utf8_lossy(bytes).into_owned()
    } else {
        format!(
            "{}… ({} bytes)",
            String::from_utf8_lossy(&bytes[..max]),
            bytes.len()
        )
    }
}
