//! The event record and its CSV form: the contract between the generator and the worker.

use std::fmt;
use std::io::Write as _;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The CSV header every landing file starts with, without line terminator.
pub const HEADER: &str =
    "event_id,event_time,user_id,session_id,event_type,product_id,category,price,quantity";

/// The header's column names, in order.
pub const HEADER_FIELDS: [&str; 9] = [
    "event_id",
    "event_time",
    "user_id",
    "session_id",
    "event_type",
    "product_id",
    "category",
    "price",
    "quantity",
];

/// Number of columns in a row.
pub const COLUMN_COUNT: usize = HEADER_FIELDS.len();

/// Longest accepted text field (`session_id`, `category`), in bytes. Longer values are
/// rejected as `field_too_long` rather than truncated, so nothing is silently altered.
pub const MAX_TEXT_FIELD_BYTES: usize = 128;

/// Largest price accepted, in cents: `numeric(10,2)` holds at most 99,999,999.99.
pub const MAX_PRICE_CENTS: i64 = 9_999_999_999;

/// What a user did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum EventType {
    View,
    AddToCart,
    Purchase,
}

impl EventType {
    pub const ALL: [EventType; 3] = [EventType::View, EventType::AddToCart, EventType::Purchase];

    /// The value as it appears in CSV and in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::View => "view",
            EventType::AddToCart => "add_to_cart",
            EventType::Purchase => "purchase",
        }
    }

    /// Parses the exact CSV spelling (case-sensitive, no surrounding spaces).
    pub fn parse(s: &str) -> Option<EventType> {
        match s {
            "view" => Some(EventType::View),
            "add_to_cart" => Some(EventType::AddToCart),
            "purchase" => Some(EventType::Purchase),
            _ => None,
        }
    }

    /// The smallest quantity a valid event of this type may carry.
    pub fn min_quantity(self) -> i32 {
        match self {
            EventType::View => 0,
            EventType::AddToCart | EventType::Purchase => 1,
        }
    }
}

impl fmt::Display for EventType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One e-commerce event, as stored in the `events` table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    pub event_id: Uuid,
    pub event_time: DateTime<Utc>,
    pub user_id: i64,
    pub session_id: String,
    pub event_type: EventType,
    pub product_id: i64,
    pub category: String,
    /// Price in cents; written with exactly two decimals.
    pub price_cents: i64,
    pub quantity: i32,
}

impl Event {
    /// Appends the event as one CSV line (with `\n`) to `out`.
    ///
    /// Text fields are quoted only when they need it, so the output is what any CSV
    /// reader expects.
    pub fn write_csv_line(&self, out: &mut Vec<u8>) {
        let mut uuid_buf = Uuid::encode_buffer();
        out.extend_from_slice(
            self.event_id
                .hyphenated()
                .encode_lower(&mut uuid_buf)
                .as_bytes(),
        );
        out.push(b',');
        write_timestamp(out, &self.event_time);
        out.push(b',');
        write_int(out, self.user_id);
        out.push(b',');
        write_text(out, &self.session_id);
        out.push(b',');
        out.extend_from_slice(self.event_type.as_str().as_bytes());
        out.push(b',');
        write_int(out, self.product_id);
        out.push(b',');
        write_text(out, &self.category);
        out.push(b',');
        write_price(out, self.price_cents);
        out.push(b',');
        write_int(out, i64::from(self.quantity));
        out.push(b'\n');
    }
}

/// Writes an RFC 3339 UTC timestamp with millisecond precision, e.g. `2026-11-25T05:40:51.123Z`.
pub fn write_timestamp(out: &mut Vec<u8>, t: &DateTime<Utc>) {
    out.extend_from_slice(t.to_rfc3339_opts(SecondsFormat::Millis, true).as_bytes());
}

/// Writes a price in cents as a decimal with exactly two places (`1234` → `12.34`).
pub fn write_price(out: &mut Vec<u8>, cents: i64) {
    if cents < 0 {
        out.push(b'-');
    }
    let abs = cents.unsigned_abs();
    // Writing into a Vec cannot fail.
    let _ = write!(out, "{}.{:02}", abs / 100, abs % 100);
}

fn write_int(out: &mut Vec<u8>, v: i64) {
    let _ = write!(out, "{v}");
}

/// Writes a text field, quoting it when it holds a delimiter, quote or line break.
pub fn write_text(out: &mut Vec<u8>, s: &str) {
    if s.bytes().any(|b| matches!(b, b',' | b'"' | b'\n' | b'\r')) {
        out.push(b'"');
        for b in s.bytes() {
            if b == b'"' {
                out.push(b'"');
            }
            out.push(b);
        }
        out.push(b'"');
    } else {
        out.extend_from_slice(s.as_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Event {
        Event {
            event_id: Uuid::from_u128(0x0123_4567_89ab_cdef_0123_4567_89ab_cdef),
            event_time: DateTime::parse_from_rfc3339("2026-11-25T05:40:51.123Z")
                .expect("valid literal")
                .with_timezone(&Utc),
            user_id: 42,
            session_id: "s-42-1".into(),
            event_type: EventType::AddToCart,
            product_id: 7,
            category: "books, used".into(),
            price_cents: 1205,
            quantity: 2,
        }
    }

    #[test]
    fn csv_line_matches_header_order_and_quotes_commas() {
        let mut out = Vec::new();
        sample().write_csv_line(&mut out);
        assert_eq!(
            String::from_utf8(out).expect("utf8"),
            "01234567-89ab-cdef-0123-456789abcdef,2026-11-25T05:40:51.123Z,42,s-42-1,add_to_cart,7,\"books, used\",12.05,2\n"
        );
    }

    #[test]
    fn csv_line_parses_back_with_csv_crate_free_reader() {
        // Quotes inside text are doubled.
        let mut out = Vec::new();
        write_text(&mut out, "say \"hi\"");
        assert_eq!(out, b"\"say \"\"hi\"\"\"");
    }

    #[test]
    fn price_formats_two_decimals() {
        for (cents, text) in [(0, "0.00"), (5, "0.05"), (100, "1.00"), (-250, "-2.50")] {
            let mut out = Vec::new();
            write_price(&mut out, cents);
            assert_eq!(String::from_utf8(out).expect("utf8"), text);
        }
    }

    #[test]
    fn event_type_round_trips_and_rejects_other_spellings() {
        for t in EventType::ALL {
            assert_eq!(EventType::parse(t.as_str()), Some(t));
        }
        assert_eq!(EventType::parse("View"), None);
        assert_eq!(EventType::parse(" view"), None);
        assert_eq!(EventType::parse("refund"), None);
    }

    #[test]
    fn header_fields_join_to_header() {
        assert_eq!(HEADER_FIELDS.join(","), HEADER);
    }
}
