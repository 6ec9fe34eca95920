//! The deliberately bad rows: eight kinds of defect, each built so that the worker's
//! validator (checks in order: UTF-8, column count, field length, empty fields, then
//! each column left to right) rejects the row for exactly one, known reason.

use rand::{Rng, RngCore};
use sluice_core::RejectReason;

/// A kind of deliberately bad row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DefectKind {
    /// `session_id` is empty.
    MissingField,
    /// `price` is not a number, e.g. `12.34x`.
    UnparseablePrice,
    /// `quantity` is below zero.
    NegativeQuantity,
    /// `event_type` is `refund`.
    UnknownEventType,
    /// `event_time` is `2026-13-45 25:61`.
    BadTimestamp,
    /// An extra, tenth column at the end of the row.
    WrongColumnCount,
    /// `category` holds the bytes `0xff 0xfe`, which are not UTF-8.
    NonUtf8,
    /// `category` is longer than `MAX_TEXT_FIELD_BYTES`.
    OverlongField,
}

impl DefectKind {
    pub const ALL: [DefectKind; 8] = [
        DefectKind::MissingField,
        DefectKind::UnparseablePrice,
        DefectKind::NegativeQuantity,
        DefectKind::UnknownEventType,
        DefectKind::BadTimestamp,
        DefectKind::WrongColumnCount,
        DefectKind::NonUtf8,
        DefectKind::OverlongField,
    ];

    /// The name used in the manifest's `bad_rows` and the `kind` metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            DefectKind::MissingField => "missing_field",
            DefectKind::UnparseablePrice => "unparseable_price",
            DefectKind::NegativeQuantity => "negative_quantity",
            DefectKind::UnknownEventType => "unknown_event_type",
            DefectKind::BadTimestamp => "bad_timestamp",
            DefectKind::WrongColumnCount => "wrong_column_count",
            DefectKind::NonUtf8 => "non_utf8",
            DefectKind::OverlongField => "overlong_field",
        }
    }

    /// The reason the worker assigns to a row with this defect.
    pub fn reject_reason(self) -> RejectReason {
        match self {
            DefectKind::MissingField => RejectReason::MissingField,
            DefectKind::UnparseablePrice => RejectReason::BadPrice,
            DefectKind::NegativeQuantity => RejectReason::NegativeQuantity,
            DefectKind::UnknownEventType => RejectReason::UnknownEventType,
            DefectKind::BadTimestamp => RejectReason::BadTimestamp,
            DefectKind::WrongColumnCount => RejectReason::WrongColumnCount,
            DefectKind::NonUtf8 => RejectReason::InvalidUtf8,
            DefectKind::OverlongField => RejectReason::FieldTooLong,
        }
    }

    /// Position in [`DefectKind::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }

    pub fn parse(s: &str) -> Option<DefectKind> {
        DefectKind::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

/// Decides which rows are bad: each row independently with probability `share`, the
/// kind uniformly among the eight.
#[derive(Debug, Clone, Copy)]
pub struct DefectDraw {
    /// `share` scaled to the u64 range; `u64::MAX` with `always`.
    threshold: u64,
    always: bool,
    never: bool,
}

impl DefectDraw {
    pub fn new(share: f64) -> DefectDraw {
        let share = share.clamp(0.0, 1.0);
        DefectDraw {
            threshold: (share * 18_446_744_073_709_551_616.0) as u64,
            always: share >= 1.0,
            never: share <= 0.0,
        }
    }

    /// Draws the defect of the next row, if any. Uses no randomness when the share is 0.
    pub fn draw(&self, rng: &mut impl RngCore) -> Option<DefectKind> {
        if self.never {
            return None;
        }
        if self.always || rng.next_u64() < self.threshold {
            Some(DefectKind::ALL[rng.random_range(0..DefectKind::ALL.len())])
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    #[test]
    fn kinds_map_to_distinct_reasons_and_round_trip() {
        let mut reasons = std::collections::HashSet::new();
        for (i, k) in DefectKind::ALL.into_iter().enumerate() {
            assert_eq!(k.index(), i);
            assert_eq!(DefectKind::parse(k.as_str()), Some(k));
            assert!(reasons.insert(k.reject_reason()));
        }
    }

    #[test]
    fn share_is_respected() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let d = DefectDraw::new(0.1);
        let n = 100_000;
        let bad = (0..n).filter(|_| d.draw(&mut rng).is_some()).count();
        assert!((9_000..11_000).contains(&bad), "{bad}");
        assert!(DefectDraw::new(0.0).draw(&mut rng).is_none());
        assert!((0..100).all(|_| DefectDraw::new(1.0).draw(&mut rng).is_some()));
    }
}
