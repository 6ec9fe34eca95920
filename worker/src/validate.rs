//! Parsing and validation of one landing file: the bytes of a CSV file in, the valid rows
//! as PostgreSQL `COPY` text plus the rejected rows with their reasons out.
//!
//! Pure and synchronous so that it can be tested exhaustively and run on a blocking
//! thread while the previous batch is being written.
//!
//! A value that passes here must also be accepted by PostgreSQL: one row the database
//! refuses would fail the whole batch's `COPY`, again on every replay. Every check is
//! therefore at least as strict as the column type (year range of `timestamptz`, the
//! `numeric(10,2)` range, `integer` range, no NUL in `text`).
//!
//! Rows are checked in a fixed order and get the first reason that applies:
//! UTF-8 → column count → field length → empty field → each column, left to right.

use chrono::{DateTime, Datelike, Timelike, Utc};
use sluice_core::event::{
    COLUMN_COUNT, EventType, HEADER_FIELDS, MAX_PRICE_CENTS, MAX_TEXT_FIELD_BYTES,
};
use sluice_core::reject::RejectReason;
use uuid::Uuid;

/// What counts as valid at the time a batch is parsed.
#[derive(Debug, Clone)]
pub struct Rules {
    /// The current time, against which future timestamps are judged.
    pub now: DateTime<Utc>,
    /// How far in the future an `event_time` may lie (clock skew between producers).
    pub future_tolerance: chrono::Duration,
    /// Also return the event ids of valid rows (tests and tools; the worker does not need them).
    pub collect_event_ids: bool,
}

/// A file that parsed as Sluice CSV (some rows may still have been rejected).
#[derive(Debug, Default)]
pub struct ParsedFile {
    /// The valid rows in `COPY ... FROM STDIN` text format, columns in header order.
    pub copy_rows: Vec<u8>,
    pub valid_rows: u64,
    /// Event ids of the valid rows, in file order, when `Rules::collect_event_ids` is set.
    pub event_ids: Vec<Uuid>,
    pub rejects: Vec<Rejected>,
    /// Data rows seen (valid + rejected), not counting the header or blank lines.
    pub data_rows: u64,
}

/// One row sent to quarantine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejected {
    /// 1-based line on which the row starts; the header is line 1.
    pub line: u64,
    pub reason: RejectReason,
    /// What is wrong, for a person.
    pub message: String,
    /// The row exactly as received, without its line terminator.
    pub raw: Vec<u8>,
}

/// A file that cannot be read as Sluice CSV at all; it is set aside, not loaded.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FileError {
    #[error("the file is empty (expected at least the header line)")]
    Empty,
    #[error("the first line is not the Sluice header: expected `{expected}`, found `{found}`")]
    BadHeader { expected: String, found: String },
    #[error("the file looks binary (it holds a NUL byte at offset {offset}), not CSV text")]
    Binary { offset: usize },
}

impl FileError {
    /// Stable code recorded in the ledger and used as a metric label.
    pub fn code(&self) -> &'static str {
        match self {
            FileError::Empty => "empty_file",
            FileError::BadHeader { .. } => "bad_header",
            FileError::Binary { .. } => "binary_file",
        }
    }
}

/// How much of the start of a file is searched for NUL bytes to tell binary files apart.
const BINARY_SNIFF_BYTES: usize = 8 * 1024;
/// Longest excerpt of an offending value quoted in a message.
const MESSAGE_EXCERPT_BYTES: usize = 60;
const UTF8_BOM: &[u8] = b"\xEF\xBB\xBF";

/// Parses and validates a whole file.
pub fn parse_file(bytes: &[u8], rules: &Rules) -> Result<ParsedFile, FileError> {
    let body = bytes.strip_prefix(UTF8_BOM).unwrap_or(bytes);
    if body.iter().all(|b| b.is_ascii_whitespace()) {
        return Err(FileError::Empty);
    }
    if let Some(offset) = memchr::memchr(0, &body[..body.len().min(BINARY_SNIFF_BYTES)]) {
        return Err(FileError::Binary {
            offset: offset + (bytes.len() - body.len()),
        });
    }

    let future_limit = rules.now + rules.future_tolerance;
    let mut records = Records::new(body);
    let mut buf = FieldBuf::default();
    let mut out = ParsedFile {
        copy_rows: Vec::with_capacity(body.len() + body.len() / 8),
        ..ParsedFile::default()
    };

    let header = loop {
        match records.next_record() {
            Some(r) if r.bytes.is_empty() => continue,
            Some(r) => break r,
            None => return Err(FileError::Empty),
        }
    };
    if !buf.split(&header).matches_header() {
        return Err(FileError::BadHeader {
            expected: HEADER_FIELDS.join(","),
            found: excerpt(header.bytes, 200),
        });
    }

    while let Some(record) = records.next_record() {
        if record.bytes.is_empty() {
            continue;
        }
        out.data_rows += 1;
        let fields = buf.split(&record);
        let row_start = out.copy_rows.len();
        match check_row(&fields, &record, rules, future_limit, &mut out.copy_rows) {
            Ok(event_id) => {
                out.valid_rows += 1;
                if rules.collect_event_ids {
                    out.event_ids.push(event_id);
                }
            }
            Err((reason, message)) => {
                out.copy_rows.truncate(row_start);
                out.rejects.push(Rejected {
                    line: record.line,
                    reason,
                    message,
                    raw: record.bytes.to_vec(),
                });
            }
        }
    }
    Ok(out)
}

type RowError = (RejectReason, String);

/// Validates one row and, when valid, appends it to `copy` (a partial row is truncated
/// by the caller on error).
fn check_row(
    fields: &Fields<'_>,
    record: &Record<'_>,
    rules: &Rules,
    future_limit: DateTime<Utc>,
    copy: &mut Vec<u8>,
) -> Result<Uuid, RowError> {
    if let Err(e) = std::str::from_utf8(record.bytes) {
        return Err((
            RejectReason::InvalidUtf8,
            format!(
                "the row is not valid UTF-8 (invalid byte sequence at byte {} of the row)",
                e.valid_up_to()
            ),
        ));
    }
    if record.unterminated_quote {
        return Err((
            RejectReason::WrongColumnCount,
            "a quoted field is never closed: the row runs to the end of the file".into(),
        ));
    }
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
    for (i, name) in HEADER_FIELDS.iter().enumerate() {
        if memchr::memchr(0, fields.get(i)).is_some() {
            return Err((
                RejectReason::InvalidUtf8,
                format!("{name} holds a NUL byte, which text columns cannot store"),
            ));
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

fn excerpt(bytes: &[u8], max: usize) -> String {
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

/// One CSV record: its raw bytes (without the line terminator) and where it starts.
struct Record<'a> {
    bytes: &'a [u8],
    line: u64,
    /// The record holds a `"` and must be split with quote handling.
    quoted: bool,
    /// A quoted field was still open at the end of the file.
    unterminated_quote: bool,
}

/// Splits a buffer into CSV records (RFC 4180: `"` quotes fields, `""` inside quotes is
/// a quote, quoted fields may hold commas and line breaks; LF or CRLF end a record).
struct Records<'a> {
    buf: &'a [u8],
    pos: usize,
    line: u64,
}

impl<'a> Records<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Records {
            buf,
            pos: 0,
            line: 1,
        }
    }

    fn next_record(&mut self) -> Option<Record<'a>> {
        if self.pos >= self.buf.len() {
            return None;
        }
        let start = self.pos;
        let line = self.line;
        let rest = &self.buf[start..];
        let (end, next, quoted, unterminated) = match memchr::memchr2(b'\n', b'"', rest) {
            Some(i) if rest[i] == b'\n' => (start + i, start + i + 1, false, false),
            None => (self.buf.len(), self.buf.len(), false, false),
            Some(_) => self.scan_quoted(start),
        };
        self.line += 1 + memchr::memchr_iter(b'\n', &self.buf[start..end]).count() as u64;
        self.pos = next;
        let mut bytes = &self.buf[start..end];
        if let Some(stripped) = bytes.strip_suffix(b"\r") {
            bytes = stripped;
        }
        Some(Record {
            bytes,
            line,
            quoted,
            unterminated_quote: unterminated,
        })
    }

    /// Finds the end of a record that holds quotes: the first LF outside quotes.
    fn scan_quoted(&self, start: usize) -> (usize, usize, bool, bool) {
        let mut in_quotes = false;
        let mut i = start;
        while i < self.buf.len() {
            match self.buf[i] {
                b'"' => in_quotes = !in_quotes,
                b'\n' if !in_quotes => return (i, i + 1, true, false),
                _ => {}
            }
            i += 1;
        }
        (self.buf.len(), self.buf.len(), true, in_quotes)
    }
}

/// Buffers reused from row to row so that splitting allocates nothing per row. A record
/// without quotes is split where it lies; one with quotes is unescaped into `unquoted`.
#[derive(Default)]
struct FieldBuf {
    spans: Vec<(usize, usize)>,
    unquoted: Vec<u8>,
}

/// The fields of one record: boundaries into either the record itself or the unescaped
/// copy of a quoted record.
struct Fields<'a> {
    spans: &'a [(usize, usize)],
    source: &'a [u8],
}

impl FieldBuf {
    fn split<'a>(&'a mut self, record: &Record<'a>) -> Fields<'a> {
        self.spans.clear();
        if record.quoted {
            self.split_quoted(record.bytes);
            return Fields {
                spans: &self.spans,
                source: &self.unquoted,
            };
        }
        let mut start = 0;
        for comma in memchr::memchr_iter(b',', record.bytes) {
            self.spans.push((start, comma));
            start = comma + 1;
        }
        self.spans.push((start, record.bytes.len()));
        Fields {
            spans: &self.spans,
            source: record.bytes,
        }
    }

    fn split_quoted(&mut self, bytes: &[u8]) {
        self.unquoted.clear();
        let mut field_start = 0;
        let mut in_quotes = false;
        let mut i = 0;
        while i < bytes.len() {
            let b = bytes[i];
            if in_quotes {
                if b == b'"' {
                    if bytes.get(i + 1) == Some(&b'"') {
                        self.unquoted.push(b'"');
                        i += 1;
                    } else {
                        in_quotes = false;
                    }
                } else {
                    self.unquoted.push(b);
                }
            } else {
                match b {
                    b',' => {
                        self.spans.push((field_start, self.unquoted.len()));
                        field_start = self.unquoted.len();
                    }
                    // A quote opens quoting only at the start of a field; elsewhere it
                    // is kept literally (lenient, like most CSV readers).
                    b'"' if self.unquoted.len() == field_start => in_quotes = true,
                    _ => self.unquoted.push(b),
                }
            }
            i += 1;
        }
        self.spans.push((field_start, self.unquoted.len()));
    }
}

impl Fields<'_> {
    fn len(&self) -> usize {
        self.spans.len()
    }

    fn get(&self, i: usize) -> &[u8] {
        let (start, end) = self.spans[i];
        &self.source[start..end]
    }

    fn matches_header(&self) -> bool {
        self.len() == COLUMN_COUNT
            && HEADER_FIELDS
                .iter()
                .enumerate()
                .all(|(i, name)| self.get(i).trim_ascii() == name.as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_core::event::HEADER;

    const ID: &str = "0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d";
    const GOOD: &str = "0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d,2026-11-25T05:40:51.123Z,42,s-1,purchase,7,books,12.50,2";

    fn rules() -> Rules {
        Rules {
            now: DateTime::parse_from_rfc3339("2026-11-25T12:00:00Z")
                .expect("literal")
                .with_timezone(&Utc),
            future_tolerance: chrono::Duration::hours(1),
            collect_event_ids: true,
        }
    }

    fn parse(text: &[u8]) -> ParsedFile {
        parse_file(text, &rules()).expect("file parses")
    }

    fn file(rows: &[&str]) -> Vec<u8> {
        let mut out = format!("{HEADER}\n").into_bytes();
        for r in rows {
            out.extend_from_slice(r.as_bytes());
            out.push(b'\n');
        }
        out
    }

    /// A valid row with field `i` replaced.
    fn row_with(i: usize, value: &str) -> String {
        let mut fields: Vec<String> = GOOD.split(',').map(str::to_owned).collect();
        fields[i] = value.to_owned();
        fields.join(",")
    }

    fn reason_of(row: &str) -> Option<RejectReason> {
        let parsed = parse(&file(&[row]));
        assert_eq!(parsed.data_rows, 1);
        parsed.rejects.first().map(|r| r.reason)
    }

    fn copy_text_of(row: &str) -> String {
        let parsed = parse(&file(&[row]));
        assert!(
            parsed.rejects.is_empty(),
            "unexpected rejects: {:?}",
            parsed.rejects
        );
        String::from_utf8(parsed.copy_rows).expect("copy rows are UTF-8")
    }

    #[test]
    fn a_valid_row_becomes_one_copy_line_in_header_order() {
        let parsed = parse(&file(&[GOOD]));
        assert_eq!(parsed.valid_rows, 1);
        assert_eq!(parsed.data_rows, 1);
        assert_eq!(parsed.event_ids, vec![Uuid::parse_str(ID).expect("uuid")]);
        assert_eq!(
            String::from_utf8(parsed.copy_rows).expect("utf8"),
            format!(
                "{ID}\t2026-11-25T05:40:51.123000000Z\t42\ts-1\tpurchase\t7\tbooks\t12.50\t2\n"
            )
        );
    }

    #[test]
    fn every_rule_has_its_reason() {
        use RejectReason::*;
        let long = "x".repeat(MAX_TEXT_FIELD_BYTES + 1);
        let cases: Vec<(String, RejectReason)> = vec![
            (format!("{GOOD},extra"), WrongColumnCount),
            (
                GOOD.rsplit_once(',').expect("comma").0.to_owned(),
                WrongColumnCount,
            ),
            (row_with(6, &long), FieldTooLong),
            (row_with(3, &long), FieldTooLong),
            (row_with(2, ""), MissingField),
            (row_with(8, ""), MissingField),
            (row_with(0, "not-a-uuid"), BadEventId),
            (row_with(1, "2026-13-45 25:61"), BadTimestamp),
            (row_with(1, "yesterday"), BadTimestamp),
            (row_with(1, "2026-11-25T05:40:51"), BadTimestamp), // no offset
            (row_with(1, "0000-01-01T00:00:00Z"), BadTimestamp),
            (row_with(1, "2026-11-25T14:00:00Z"), FutureTimestamp),
            (row_with(2, "-1"), BadId),
            (row_with(2, "4x"), BadId),
            (row_with(5, "99999999999999999999"), BadId),
            (row_with(4, "refund"), UnknownEventType),
            (row_with(4, "View"), UnknownEventType),
            (row_with(7, "12.3x"), BadPrice),
            (row_with(7, "12.345"), BadPrice),
            (row_with(7, ".5"), BadPrice),
            (row_with(7, "5."), BadPrice),
            (row_with(7, "100000000.00"), BadPrice),
            (row_with(7, "-1.00"), NegativePrice),
            (row_with(8, "1.5"), BadQuantity),
            (row_with(8, "3000000000"), BadQuantity),
            (row_with(8, "-2"), NegativeQuantity),
            (row_with(8, "0"), ZeroQuantity),
        ];
        for (row, want) in cases {
            assert_eq!(reason_of(&row), Some(want), "row {row:?}");
        }
    }

    #[test]
    fn boundary_values_are_accepted() {
        for row in [
            row_with(8, "0").replace("purchase", "view"),
            row_with(7, "0"),
            row_with(7, "-0.00"),
            row_with(7, "99999999.99"),
            row_with(7, "3.5"),
            row_with(8, "2147483647"),
            row_with(2, "9223372036854775807"),
            row_with(1, "2026-11-25T12:59:59Z"),
            row_with(1, "2026-11-25T07:40:51+02:00"),
            row_with(1, "0001-01-01T00:00:00Z"),
            row_with(0, "0A1B2C3D-4E5F-4A6B-8C7D-9E0F1A2B3C4D"),
            row_with(6, &"y".repeat(MAX_TEXT_FIELD_BYTES)),
        ] {
            assert_eq!(reason_of(&row), None, "row {row:?}");
        }
    }

    #[test]
    fn values_are_normalised_for_postgres() {
        let text = copy_text_of(&row_with(7, "3.5"));
        assert!(text.contains("\t3.50\t"), "{text}");
        let text = copy_text_of(&row_with(1, "2026-11-25T07:40:51+02:00"));
        assert!(text.contains("\t2026-11-25T05:40:51Z\t"), "{text}");
        let text = copy_text_of(&row_with(0, "0A1B2C3D-4E5F-4A6B-8C7D-9E0F1A2B3C4D"));
        assert!(text.starts_with(ID), "{text}");
        let text = copy_text_of(&row_with(7, "-0.00"));
        assert!(text.contains("\t0.00\t"), "{text}");
    }

    #[test]
    fn checks_apply_in_documented_order() {
        // Wrong column count wins over a bad price; empty wins over a bad type.
        assert_eq!(
            reason_of(&format!("{},x", row_with(7, "abc"))),
            Some(RejectReason::WrongColumnCount)
        );
        assert_eq!(
            reason_of(&row_with(2, "").replace("purchase", "refund")),
            Some(RejectReason::MissingField)
        );
        let mut bytes = file(&[]);
        bytes.extend_from_slice(b"\xff,x\n");
        assert_eq!(parse(&bytes).rejects[0].reason, RejectReason::InvalidUtf8);
    }

    #[test]
    fn rejects_carry_line_raw_bytes_and_a_readable_message() {
        let bad = row_with(7, "12.3x");
        let parsed = parse(&file(&[GOOD, &bad, GOOD]));
        assert_eq!(parsed.valid_rows, 2);
        assert_eq!(parsed.data_rows, 3);
        let r = &parsed.rejects[0];
        assert_eq!(r.line, 3);
        assert_eq!(r.raw, bad.as_bytes());
        assert!(r.message.contains("price \"12.3x\""), "{}", r.message);
    }

    #[test]
    fn non_utf8_bytes_are_quarantined_with_the_exact_bytes() {
        let mut bytes = file(&[GOOD]);
        let mut bad = row_with(6, "caf").into_bytes();
        let at = bad.len() - "12.50,2".len() - 1;
        bad.insert(at, 0xff);
        bytes.extend_from_slice(&bad);
        bytes.push(b'\n');
        let parsed = parse(&bytes);
        assert_eq!(parsed.valid_rows, 1);
        assert_eq!(parsed.rejects.len(), 1);
        assert_eq!(parsed.rejects[0].reason, RejectReason::InvalidUtf8);
        assert_eq!(parsed.rejects[0].raw, bad);
    }

    #[test]
    fn nul_inside_a_field_is_rejected_not_sent_to_postgres() {
        let mut bytes = file(&[]);
        bytes.extend_from_slice(row_with(6, "a\u{0}b").as_bytes());
        bytes.push(b'\n');
        // Far enough from the start that the file is not taken for binary.
        let mut padded = file(&vec![GOOD; 100]);
        padded.extend_from_slice(&bytes[HEADER.len() + 1..]);
        let parsed = parse(&padded);
        assert_eq!(parsed.valid_rows, 100);
        assert_eq!(parsed.rejects[0].reason, RejectReason::InvalidUtf8);
    }

    #[test]
    fn quoted_fields_may_hold_commas_quotes_and_newlines() {
        let row = format!(
            "{ID},2026-11-25T05:40:51Z,42,\"s,1\",view,7,\"line1\nline2 \"\"q\"\"\",1.00,0"
        );
        let parsed = parse(&file(&[&row, GOOD]));
        assert!(parsed.rejects.is_empty(), "{:?}", parsed.rejects);
        assert_eq!(parsed.valid_rows, 2);
        let text = String::from_utf8(parsed.copy_rows).expect("utf8");
        let first = text.lines().next().expect("a line");
        assert_eq!(
            first,
            format!("{ID}\t2026-11-25T05:40:51Z\t42\ts,1\tview\t7\tline1\\nline2 \"q\"\t1.00\t0")
        );
        // Line numbers count physical lines: the quoted newline makes GOOD line 4.
        let bad = row_with(8, "-1");
        let parsed = parse(&file(&[&row, &bad]));
        assert_eq!(parsed.rejects[0].line, 4);
    }

    #[test]
    fn tabs_and_backslashes_are_escaped_for_copy() {
        let text = copy_text_of(&row_with(6, "a\tb\\c"));
        assert!(text.contains("\ta\\tb\\\\c\t"), "{text}");
    }

    #[test]
    fn crlf_line_endings_are_accepted() {
        let text = format!("{HEADER}\r\n{GOOD}\r\n{GOOD}\r\n");
        let parsed = parse(text.as_bytes());
        assert_eq!(parsed.valid_rows, 2);
        assert!(parsed.rejects.is_empty());
        assert!(
            !String::from_utf8(parsed.copy_rows)
                .expect("utf8")
                .contains('\r')
        );
    }

    #[test]
    fn a_byte_order_mark_before_the_header_is_ignored() {
        let mut bytes = UTF8_BOM.to_vec();
        bytes.extend_from_slice(&file(&[GOOD]));
        assert_eq!(parse(&bytes).valid_rows, 1);
    }

    #[test]
    fn empty_files_and_wrong_headers_are_file_errors() {
        assert_eq!(parse_file(b"", &rules()).err(), Some(FileError::Empty));
        assert_eq!(
            parse_file(b"\n\r\n ", &rules()).err(),
            Some(FileError::Empty)
        );
        assert_eq!(parse_file(UTF8_BOM, &rules()).err(), Some(FileError::Empty));
        let err = parse_file(b"a,b,c\n1,2,3\n", &rules()).expect_err("bad header");
        assert_eq!(err.code(), "bad_header");
        assert!(err.to_string().contains("event_id,event_time"), "{err}");
        let err = parse_file(b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR", &rules()).expect_err("binary");
        assert_eq!(err.code(), "binary_file");
        assert_eq!(FileError::Empty.code(), "empty_file");
    }

    #[test]
    fn header_only_and_missing_trailing_newline() {
        let parsed = parse(HEADER.as_bytes());
        assert_eq!((parsed.data_rows, parsed.valid_rows), (0, 0));
        let text = format!("{HEADER}\n{GOOD}");
        let parsed = parse(text.as_bytes());
        assert_eq!(parsed.valid_rows, 1);
        assert!(parsed.copy_rows.ends_with(b"\n"));
    }

    #[test]
    fn blank_lines_are_skipped_and_do_not_shift_line_numbers() {
        let bad = row_with(4, "refund");
        let text = format!("{HEADER}\n\n{GOOD}\n\n{bad}\n");
        let parsed = parse(text.as_bytes());
        assert_eq!(parsed.valid_rows, 1);
        assert_eq!(parsed.rejects[0].line, 5);
        assert_eq!(parsed.data_rows, 2);
    }

    #[test]
    fn an_unterminated_quote_is_one_rejected_row() {
        let text = format!("{HEADER}\n{GOOD}\n{ID},\"oops,1\n{GOOD}\n");
        let parsed = parse(text.as_bytes());
        assert_eq!(parsed.valid_rows, 1);
        assert_eq!(parsed.rejects.len(), 1);
        assert_eq!(parsed.rejects[0].reason, RejectReason::WrongColumnCount);
        assert!(parsed.rejects[0].message.contains("never closed"));
    }

    #[test]
    fn a_ten_megabyte_line_is_rejected_whole_and_the_next_row_still_loads() {
        let huge = "z".repeat(10 * 1024 * 1024);
        let parsed = parse(&file(&[&row_with(6, &huge), GOOD]));
        assert_eq!(parsed.valid_rows, 1);
        assert_eq!(parsed.rejects.len(), 1);
        let r = &parsed.rejects[0];
        assert_eq!(r.reason, RejectReason::FieldTooLong);
        assert_eq!(r.line, 2);
        assert!(r.raw.len() > 10 * 1024 * 1024);
        assert!(
            r.message.len() < 200,
            "message stays short: {}",
            r.message.len()
        );
        // A huge line without commas is a column-count problem.
        let parsed = parse(&file(&[&huge]));
        assert_eq!(parsed.rejects[0].reason, RejectReason::WrongColumnCount);
    }

    #[test]
    fn nothing_is_lost_every_row_is_valid_or_rejected() {
        let rows: Vec<String> = (0..50)
            .map(|i| {
                if i % 7 == 0 {
                    row_with(8, "-1")
                } else {
                    GOOD.to_owned()
                }
            })
            .collect();
        let refs: Vec<&str> = rows.iter().map(String::as_str).collect();
        let parsed = parse(&file(&refs));
        assert_eq!(parsed.valid_rows + parsed.rejects.len() as u64, 50);
        assert_eq!(parsed.data_rows, 50);
        assert_eq!(parsed.rejects.len(), 8);
        let copy_lines = parsed.copy_rows.iter().filter(|b| **b == b'\n').count();
        assert_eq!(copy_lines as u64, parsed.valid_rows);
    }
}
