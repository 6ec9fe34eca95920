//! Fast CSV encoding of generated rows, valid or with a defect, into a reused buffer.
//!
//! Valid rows are byte-for-byte what `sluice_core::Event::write_csv_line` writes (a test
//! checks it), but without allocating per row: the timestamp's date part is cached per
//! second and integers are formatted by hand.

use chrono::{DateTime, Utc};
use sluice_core::event::{MAX_TEXT_FIELD_BYTES, write_timestamp};

use crate::defects::DefectKind;
use crate::messy::{MessyKind, MessyLine, rules_for};
use crate::traffic::Row;

/// What a `bad_timestamp` row carries in `event_time`.
pub const BAD_TIMESTAMP: &[u8] = b"2026-13-45 25:61";
/// What an `unknown_event_type` row carries in `event_type`.
pub const UNKNOWN_EVENT_TYPE: &[u8] = b"refund";

/// Encodes rows; keeps the formatted date of the last second seen.
#[derive(Debug, Default)]
pub struct RowEncoder {
    cached_second: Option<i64>,
    /// `YYYY-MM-DDTHH:MM:SS.` of `cached_second`.
    prefix: Vec<u8>,
}

impl RowEncoder {
    pub fn new() -> RowEncoder {
        RowEncoder::default()
    }

    /// Appends `row` as one CSV line ending in `\n`, with `defect` applied if given.
    pub fn encode(&mut self, out: &mut Vec<u8>, row: &Row, defect: Option<DefectKind>) {
        let mut uuid_buf = uuid::Uuid::encode_buffer();
        let id = uuid::Builder::from_random_bytes(row.event_id).into_uuid();
        out.extend_from_slice(id.hyphenated().encode_lower(&mut uuid_buf).as_bytes());
        out.push(b',');

        if defect == Some(DefectKind::BadTimestamp) {
            out.extend_from_slice(BAD_TIMESTAMP);
        } else {
            self.write_time(out, row.time_ms);
        }
        out.push(b',');

        write_u64(out, row.user_id.unsigned_abs());
        out.push(b',');

        if defect != Some(DefectKind::MissingField) {
            write_hex16(out, row.session_id);
        }
        out.push(b',');

        let mut quantity = row.quantity;
        if defect == Some(DefectKind::UnknownEventType) {
            out.extend_from_slice(UNKNOWN_EVENT_TYPE);
            // Whatever the worker assumes for an unknown type, 1 is a valid quantity.
            quantity = quantity.max(1);
        } else {
            out.extend_from_slice(row.event_type.as_str().as_bytes());
        }
        out.push(b',');

        write_u64(out, row.product.id.unsigned_abs());
        out.push(b',');

        let category = row.product.category_name().as_bytes();
        match defect {
            Some(DefectKind::NonUtf8) => {
                let mid = category.len() / 2;
                out.extend_from_slice(&category[..mid]);
                out.extend_from_slice(&[0xff, 0xfe]);
                out.extend_from_slice(&category[mid..]);
            }
            Some(DefectKind::OverlongField) => {
                out.extend_from_slice(category);
                let pad = (MAX_TEXT_FIELD_BYTES + 1).saturating_sub(category.len());
                out.resize(out.len() + pad, b'_');
            }
            _ => out.extend_from_slice(category),
        }
        out.push(b',');

        write_price(out, row.product.price_cents);
        if defect == Some(DefectKind::UnparseablePrice) {
            out.push(b'x');
        }
        out.push(b',');

        if defect == Some(DefectKind::NegativeQuantity) {
            out.push(b'-');
            write_u64(out, u64::from(quantity.unsigned_abs().max(1)));
        } else {
            write_u64(out, u64::from(quantity.unsigned_abs()));
        }
        if defect == Some(DefectKind::WrongColumnCount) {
            out.extend_from_slice(b",extra");
        }
        out.push(b'\n');
    }

    /// Appends `row` as one valid CSV line ending in `\n`, with the column of `kind`
    /// written messily (varied by `bits`); returns the manifest's record of it (its
    /// `line` is left 0 for the caller to fill in).
    pub fn encode_messy(
        &mut self,
        out: &mut Vec<u8>,
        row: &Row,
        kind: MessyKind,
        bits: u32,
    ) -> MessyLine {
        let mut clean = Vec::with_capacity(160);
        self.encode(&mut clean, row, None);
        clean.pop(); // the line end
        // A valid generated line is plain CSV: no quotes, no commas inside values.
        let text = String::from_utf8_lossy(&clean).into_owned();
        let mut fields: Vec<String> = text.split(',').map(str::to_owned).collect();
        let i = kind.column_index();
        let cleaned = std::mem::take(&mut fields[i]);
        let raw = kind.mess_up(&cleaned, bits);
        fields[i].clone_from(&raw);
        out.extend_from_slice(fields.join(",").as_bytes());
        out.push(b'\n');
        let event_id = if i == 0 {
            cleaned.clone()
        } else {
            fields[0].clone()
        };
        MessyLine {
            line: 0,
            kind: kind.as_str(),
            event_id,
            column: kind.column(),
            rules: rules_for(kind.column(), &raw, &cleaned),
            raw,
            cleaned,
        }
    }

    /// RFC 3339 with milliseconds and `Z`, as `sluice_core::event::write_timestamp`.
    fn write_time(&mut self, out: &mut Vec<u8>, time_ms: i64) {
        let second = time_ms.div_euclid(1000);
        let millis = time_ms.rem_euclid(1000) as u32;
        if self.cached_second != Some(second) {
            self.prefix.clear();
            let t = DateTime::<Utc>::from_timestamp(second, 0).unwrap_or_default();
            write_timestamp(&mut self.prefix, &t);
            // Drop the "000Z" of the zero milliseconds.
            self.prefix.truncate(self.prefix.len().saturating_sub(4));
            self.cached_second = Some(second);
        }
        out.extend_from_slice(&self.prefix);
        out.extend_from_slice(&[
            b'0' + (millis / 100) as u8,
            b'0' + (millis / 10 % 10) as u8,
            b'0' + (millis % 10) as u8,
            b'Z',
        ]);
    }
}

/// Decimal digits of `v`.
pub fn write_u64(out: &mut Vec<u8>, mut v: u64) {
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    out.extend_from_slice(&buf[i..]);
}

/// A non-negative price in cents with two decimals.
fn write_price(out: &mut Vec<u8>, cents: i64) {
    let abs = cents.unsigned_abs();
    if cents < 0 {
        out.push(b'-');
    }
    write_u64(out, abs / 100);
    let frac = (abs % 100) as u8;
    out.extend_from_slice(&[b'.', b'0' + frac / 10, b'0' + frac % 10]);
}

fn write_hex16(out: &mut Vec<u8>, v: u64) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut buf = [0u8; 16];
    for (i, b) in buf.iter_mut().enumerate() {
        *b = HEX[((v >> (60 - 4 * i)) & 0xf) as usize];
    }
    out.extend_from_slice(&buf);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalogue::Catalogue;
    use crate::traffic::Traffic;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;
    use sluice_core::event::{COLUMN_COUNT, Event, EventType};

    fn rows(n: usize) -> Vec<Row> {
        let mut rng = ChaCha8Rng::seed_from_u64(2);
        let mut t = Traffic::new(Catalogue::new(2), 50, 0.5, 0.5, &mut rng);
        // Times from before 1970 to far ahead, with varying milliseconds.
        (0..n)
            .map(|i| t.next_row(&mut rng, -5_000 + i as i64 * 7_919_777))
            .collect()
    }

    fn as_event(r: &Row) -> Event {
        Event {
            event_id: uuid::Builder::from_random_bytes(r.event_id).into_uuid(),
            event_time: DateTime::<Utc>::from_timestamp_millis(r.time_ms).expect("in range"),
            user_id: r.user_id,
            session_id: format!("{:016x}", r.session_id),
            event_type: r.event_type,
            product_id: r.product.id,
            category: r.product.category_name().to_string(),
            price_cents: r.product.price_cents,
            quantity: r.quantity,
        }
    }

    #[test]
    fn valid_rows_match_core_encoding() {
        let mut enc = RowEncoder::new();
        for r in rows(2_000) {
            let (mut ours, mut core) = (Vec::new(), Vec::new());
            enc.encode(&mut ours, &r, None);
            as_event(&r).write_csv_line(&mut core);
            assert_eq!(
                String::from_utf8_lossy(&ours),
                String::from_utf8_lossy(&core)
            );
        }
    }

    #[test]
    fn each_defect_has_its_effect_and_keeps_the_uuid() {
        let mut enc = RowEncoder::new();
        let r = rows(10)
            .into_iter()
            .find(|r| r.event_type == EventType::View)
            .expect("a view");
        for kind in DefectKind::ALL {
            let mut out = Vec::new();
            enc.encode(&mut out, &r, Some(kind));
            assert_eq!(out.last(), Some(&b'\n'));
            let body = &out[..out.len() - 1];
            let fields: Vec<&[u8]> = body.split(|b| *b == b',').collect();
            assert!(uuid::Uuid::try_parse_ascii(fields[0]).is_ok(), "{kind:?}");
            let text = std::str::from_utf8(body);
            match kind {
                DefectKind::NonUtf8 => assert!(text.is_err()),
                _ => assert!(text.is_ok(), "{kind:?}"),
            }
            let expected_columns = if kind == DefectKind::WrongColumnCount {
                COLUMN_COUNT + 1
            } else {
                COLUMN_COUNT
            };
            assert_eq!(fields.len(), expected_columns, "{kind:?}");
            match kind {
                DefectKind::MissingField => assert!(fields[3].is_empty()),
                DefectKind::UnparseablePrice => assert!(fields[7].ends_with(b"x")),
                DefectKind::NegativeQuantity => assert!(fields[8].starts_with(b"-")),
                DefectKind::UnknownEventType => {
                    assert_eq!(fields[4], UNKNOWN_EVENT_TYPE);
                    assert_eq!(fields[8], b"1");
                }
                DefectKind::BadTimestamp => assert_eq!(fields[1], BAD_TIMESTAMP),
                DefectKind::WrongColumnCount => {}
                DefectKind::NonUtf8 => {}
                DefectKind::OverlongField => {
                    assert!(fields[6].len() > MAX_TEXT_FIELD_BYTES)
                }
            }
        }
    }

    #[test]
    fn messy_rows_differ_only_in_their_column() {
        let mut enc = RowEncoder::new();
        for (n, r) in rows(40).iter().enumerate() {
            let kind = MessyKind::ALL[n % MessyKind::ALL.len()];
            let (mut clean, mut messy) = (Vec::new(), Vec::new());
            enc.encode(&mut clean, r, None);
            let m = enc.encode_messy(&mut messy, r, kind, n as u32 * 37);
            let clean = String::from_utf8(clean).expect("utf8");
            let messy = String::from_utf8(messy).expect("utf8");
            let (c, m_fields): (Vec<&str>, Vec<&str>) = (
                clean.trim_end().split(',').collect(),
                messy.trim_end_matches('\n').split(',').collect(),
            );
            assert_eq!(m_fields.len(), COLUMN_COUNT);
            for i in 0..COLUMN_COUNT {
                if i == kind.column_index() {
                    assert_eq!(m_fields[i], m.raw);
                    assert_eq!(c[i], m.cleaned);
                    assert_ne!(m.raw, m.cleaned);
                } else {
                    assert_eq!(m_fields[i], c[i], "{kind:?} column {i}");
                }
            }
            assert_eq!(m.event_id, c[0]);
            assert!(!m.rules.is_empty());
        }
    }

    #[test]
    fn integers_format() {
        for v in [0u64, 7, 10, 99, 100, 12345, u64::MAX] {
            let mut out = Vec::new();
            write_u64(&mut out, v);
            assert_eq!(out, v.to_string().as_bytes());
        }
    }
}
