//! Why a row was rejected. The codes are stored in the quarantine table's `reason`
//! column and used as the `reason` label of metrics, so they never change spelling.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A documented reason for sending a row to quarantine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RejectReason {
    /// The row does not have exactly nine columns.
    WrongColumnCount,
    /// The row holds bytes that are not valid UTF-8.
    InvalidUtf8,
    /// A field is longer than the schema allows.
    FieldTooLong,
    /// A required field is empty.
    MissingField,
    /// `event_id` is not a UUID.
    BadEventId,
    /// `event_time` is not an RFC 3339 timestamp.
    BadTimestamp,
    /// `event_time` lies further in the future than the configured tolerance.
    FutureTimestamp,
    /// `user_id` or `product_id` is not a non-negative integer.
    BadId,
    /// `event_type` is not one of `view`, `add_to_cart`, `purchase`.
    UnknownEventType,
    /// `price` is not a decimal number with at most two decimal places, or out of range.
    BadPrice,
    /// `price` is below zero.
    NegativePrice,
    /// `quantity` is not an integer.
    BadQuantity,
    /// `quantity` is below zero.
    NegativeQuantity,
    /// `quantity` is zero for an `add_to_cart` or `purchase` event.
    ZeroQuantity,
    /// The row is longer than the worker's row size limit (`--max-row-bytes`); only its
    /// first bytes are kept as evidence.
    RowTooLong,
    /// Declared schemas: a field is not written as its column's type.
    BadValue,
    /// Declared schemas: a value lies outside its type's range or the column's min/max.
    OutOfRange,
    /// Declared schemas: a value is not one of the column's allowed values.
    NotAllowed,
    /// NDJSON input: the line is not one JSON object (broken JSON, another JSON value,
    /// text after the object, or a column's key given twice).
    BadJson,
}

impl RejectReason {
    pub const ALL: [RejectReason; 19] = [
        RejectReason::WrongColumnCount,
        RejectReason::InvalidUtf8,
        RejectReason::FieldTooLong,
        RejectReason::MissingField,
        RejectReason::BadEventId,
        RejectReason::BadTimestamp,
        RejectReason::FutureTimestamp,
        RejectReason::BadId,
        RejectReason::UnknownEventType,
        RejectReason::BadPrice,
        RejectReason::NegativePrice,
        RejectReason::BadQuantity,
        RejectReason::NegativeQuantity,
        RejectReason::ZeroQuantity,
        RejectReason::RowTooLong,
        RejectReason::BadValue,
        RejectReason::OutOfRange,
        RejectReason::NotAllowed,
        RejectReason::BadJson,
    ];

    /// The stable machine-readable code.
    pub fn code(self) -> &'static str {
        match self {
            RejectReason::WrongColumnCount => "wrong_column_count",
            RejectReason::InvalidUtf8 => "invalid_utf8",
            RejectReason::FieldTooLong => "field_too_long",
            RejectReason::MissingField => "missing_field",
            RejectReason::BadEventId => "bad_event_id",
            RejectReason::BadTimestamp => "bad_timestamp",
            RejectReason::FutureTimestamp => "future_timestamp",
            RejectReason::BadId => "bad_id",
            RejectReason::UnknownEventType => "unknown_event_type",
            RejectReason::BadPrice => "bad_price",
            RejectReason::NegativePrice => "negative_price",
            RejectReason::BadQuantity => "bad_quantity",
            RejectReason::NegativeQuantity => "negative_quantity",
            RejectReason::ZeroQuantity => "zero_quantity",
            RejectReason::RowTooLong => "row_too_long",
            RejectReason::BadValue => "bad_value",
            RejectReason::OutOfRange => "out_of_range",
            RejectReason::NotAllowed => "not_allowed",
            RejectReason::BadJson => "bad_json",
        }
    }

    pub fn from_code(code: &str) -> Option<RejectReason> {
        RejectReason::ALL.into_iter().find(|r| r.code() == code)
    }
}

impl fmt::Display for RejectReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_unique_and_round_trip() {
        let mut seen = std::collections::HashSet::new();
        for r in RejectReason::ALL {
            assert!(seen.insert(r.code()), "duplicate code {}", r.code());
            assert_eq!(RejectReason::from_code(r.code()), Some(r));
        }
        assert_eq!(RejectReason::from_code("nope"), None);
    }

    #[test]
    fn serde_uses_the_code() {
        let json = serde_json::to_string(&RejectReason::ZeroQuantity).expect("serialize");
        assert_eq!(json, "\"zero_quantity\"");
        let json = serde_json::to_string(&RejectReason::RowTooLong).expect("serialize");
        assert_eq!(json, "\"row_too_long\"");
    }
}
