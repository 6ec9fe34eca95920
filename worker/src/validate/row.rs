//! The checks of one data row, column by column, and the writing of a valid row as
//! PostgreSQL `COPY` text.
//!
//! A value that passes here must also be accepted by PostgreSQL: one row the database
//! refuses would fail the whole batch's `COPY`, again on every replay. Every check is
//! therefore at least as strict as the column type (year range of `timestamptz`, the
//! `numeric(10,2)` range, `integer` range, no NUL in `text`).
//!
//! Fields are cleaned before they are checked ([`super::clean`]): trimmed, `event_type`
//! matched case-insensitively, `category` and `event_id` lower-cased. Cleaning only
//! narrows what is checked (a trimmed or re-cased value is then held to the same rules),
//! so the checks stay at least as strict as PostgreSQL.

use chrono::{DateTime, Utc};
use sluice_core::event::{
    COLUMN_COUNT, EventType, HEADER_FIELDS, MAX_PRICE_CENTS, MAX_TEXT_FIELD_BYTES,
};
use sluice_core::reject::RejectReason;
use sluice_core::values;
use uuid::Uuid;

use super::Rules;
use super::clean::{self, RowCleaning, Rule};
use super::out::RowOut;
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
/// `copy` (a partial row is truncated by the caller on error). Fields are cleaned first
/// ([`clean`]): what was changed comes back with the event id.
pub(super) fn check_row(
    fields: &Fields<'_>,
    raw: &[u8],
    rules: &Rules,
    future_limit: DateTime<Utc>,
    copy: &mut Vec<u8>,
) -> Result<(Uuid, RowCleaning), RowError> {
    check_text(raw)?;
    if fields.len() != COLUMN_COUNT {
        return Err((
            RejectReason::WrongColumnCount,
            format!("expected {COLUMN_COUNT} columns, found {}", fields.len()),
        ));
    }
    let mut cleaning = RowCleaning::default();
    let mut f: [&[u8]; COLUMN_COUNT] = [&[]; COLUMN_COUNT];
    for (i, slot) in f.iter_mut().enumerate() {
        let field = fields.get(i);
        let trimmed = clean::trim(field);
        if trimmed.len() != field.len() {
            cleaning.set(i, Rule::Trim);
        }
        *slot = trimmed;
    }
    for (name, field) in HEADER_FIELDS.iter().zip(&f) {
        let len = field.len();
        if len > MAX_TEXT_FIELD_BYTES {
            return Err((
                RejectReason::FieldTooLong,
                format!("{name} is {len} bytes long; at most {MAX_TEXT_FIELD_BYTES} are allowed"),
            ));
        }
    }
    for (i, (name, field)) in HEADER_FIELDS.iter().zip(&f).enumerate() {
        if field.is_empty() {
            let message = if fields.get(i).is_empty() {
                format!("{name} is empty")
            } else {
                format!("{name} is empty (it holds only spaces or tabs)")
            };
            return Err((RejectReason::MissingField, message));
        }
    }

    let id_field = f[0];
    let event_id = Uuid::try_parse_ascii(id_field).map_err(|_| {
        (
            RejectReason::BadEventId,
            format!("event_id {} is not a UUID", quoted(id_field)),
        )
    })?;
    let mut uuid_buf = Uuid::encode_buffer();
    let stored = event_id.hyphenated().encode_lower(&mut uuid_buf).as_bytes();
    // Usually the field is already the stored form: one comparison, no scan.
    if id_field != stored && id_field.iter().any(u8::is_ascii_uppercase) {
        cleaning.set(0, Rule::Lowercase);
    }
    let mut out = RowOut::start(copy, rules.copy_format, COLUMN_COUNT);
    out.uuid(&event_id, stored);

    let time_field = f[1];
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
    out.timestamptz(&event_time);

    out.int8(check_id("user_id", f[2])?, f[2]);

    out.text(f[3]);

    let event_type = parse_event_type(f[4], &mut cleaning)?;
    out.text(event_type.as_str().as_bytes());

    out.int8(check_id("product_id", f[5])?, f[5]);

    match clean::lowercase(f[6]) {
        None => out.text(f[6]),
        Some(lower) => {
            // Lower-casing a few non-ASCII letters takes more bytes (İ → i̇).
            if lower.len() > MAX_TEXT_FIELD_BYTES {
                return Err((
                    RejectReason::FieldTooLong,
                    format!(
                        "category is {} bytes long once lower-cased; at most {MAX_TEXT_FIELD_BYTES} are allowed",
                        lower.len()
                    ),
                ));
            }
            cleaning.set(6, Rule::Lowercase);
            out.text(&lower);
        }
    }

    out.cents(parse_price(f[7])?);

    let quantity = parse_quantity(f[8], event_type)?;
    // parse_quantity keeps it within integer's range.
    out.int4(quantity as i32, itoa_u32(quantity, &mut [0u8; 10]));
    out.finish();
    Ok((event_id, cleaning))
}

/// `event_type`: the exact spelling, or (cleaning rule `ignore_case`) the same letters in
/// another case.
fn parse_event_type(field: &[u8], cleaning: &mut RowCleaning) -> Result<EventType, RowError> {
    if let Some(t) = std::str::from_utf8(field).ok().and_then(EventType::parse) {
        return Ok(t);
    }
    let folded = EventType::ALL
        .into_iter()
        .find(|t| t.as_str().as_bytes().eq_ignore_ascii_case(field));
    match folded {
        Some(t) => {
            cleaning.set(4, Rule::IgnoreCase);
            Ok(t)
        }
        None => Err((
            RejectReason::UnknownEventType,
            format!(
                "event_type {} is not one of view, add_to_cart, purchase",
                quoted(field)
            ),
        )),
    }
}

/// The timestamp rules of every schema (sluice_core::values), with this table's reason.
fn parse_timestamp(field: &[u8]) -> Result<DateTime<Utc>, RowError> {
    let text = std::str::from_utf8(field).map_err(|_| {
        (
            RejectReason::BadTimestamp,
            format!("event_time {} is not text", quoted(field)),
        )
    })?;
    values::parse_timestamp(text).map_err(|e| {
        (
            RejectReason::BadTimestamp,
            format!("event_time {} {e}", quoted(field)),
        )
    })
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
fn check_id(name: &str, field: &[u8]) -> Result<i64, RowError> {
    let parsed = (field.len() <= 19 && field.iter().all(u8::is_ascii_digit))
        .then(|| std::str::from_utf8(field).ok()?.parse::<i64>().ok())
        .flatten();
    parsed.ok_or_else(|| {
        (
            RejectReason::BadId,
            format!(
                "{name} {} is not a non-negative whole number (at most {})",
                quoted(field),
                i64::MAX
            ),
        )
    })
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

/// A value for a message: quoted, lossily decoded, shortened when long.
pub(super) fn quoted(field: &[u8]) -> String {
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
