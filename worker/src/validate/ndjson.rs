//! NDJSON input: one JSON object per line, its keys matched to the table's columns by
//! name. Each object becomes the same list of fields a CSV row gives (in the order of
//! the built-in header, or of a declared schema's columns) and is checked by the same row
//! checkers, so an NDJSON value is cleaned and judged exactly like the same text in CSV.
//!
//! Values: a string gives its text, a number its literal text, `true`/`false` that word,
//! `null` or a missing key an empty field, an object or array its JSON text (for `jsonb`
//! columns). Keys are matched exactly, else ignoring ASCII case; other keys are ignored;
//! a key given twice for one column rejects the row. A line that is not one JSON object
//! is rejected as `bad_json`. Order of checks: row size → UTF-8 and NUL → JSON → the
//! row checks of CSV.
//!
//! Lines are read through a bounded buffer ([`LineReader`]): a line longer than the row
//! limit is skipped, keeping its first bytes as evidence (`row_too_long`). Lines end
//! with LF or CRLF; blank and whitespace-only lines hold no row but count for line
//! numbers; the first line is line 1 (there is no header).

use std::borrow::Cow;
use std::io::{self, Read};

use serde::de::{self, DeserializeSeed, MapAccess, Visitor};
use serde_json::value::RawValue;
use sluice_core::event::HEADER_FIELDS;
use sluice_core::reject::RejectReason;
use sluice_core::schema::CleanRule;

use super::out::RowOut;
use super::row;
use super::{
    FileError, ParseError, PartLimits, PartSummary, Position, Rejected, Rules, general, too_long,
};
use crate::records::FieldBuf;

const UTF8_BOM: &[u8] = b"\xEF\xBB\xBF";
/// Longest excerpt of a JSON parser's message kept in a reject message.
const MESSAGE_BYTES: usize = 200;

/// One physical line as read.
#[derive(Debug, PartialEq, Eq)]
enum Line<'a> {
    /// A line within the row limit, without its terminator.
    Row { bytes: &'a [u8], line: u64 },
    /// A line longer than the row limit: its first `limit` bytes and its length.
    TooLong { head: Vec<u8>, len: u64, line: u64 },
}

/// Splits a byte stream into lines; holds at most one line within the row limit plus
/// one read.
struct LineReader<'r> {
    input: &'r mut dyn Read,
    buf: Vec<u8>,
    pos: usize,
    filled: usize,
    eof: bool,
    offset: u64,
    line: u64,
    max_row: usize,
    read_size: usize,
}

impl<'r> LineReader<'r> {
    fn new(input: &'r mut dyn Read, start: Position, max_row: usize, read_size: usize) -> Self {
        let read_size = read_size.max(1);
        LineReader {
            input,
            buf: vec![0; read_size],
            pos: 0,
            filled: 0,
            eof: false,
            offset: start.offset,
            line: start.line,
            max_row,
            read_size,
        }
    }

    fn position(&self) -> Position {
        Position {
            offset: self.offset,
            line: self.line,
        }
    }

    /// Reads more input after the buffered bytes; false at the end of the input.
    fn fill(&mut self) -> io::Result<bool> {
        if self.eof {
            return Ok(false);
        }
        if self.pos > 0 {
            self.buf.copy_within(self.pos..self.filled, 0);
            self.filled -= self.pos;
            self.pos = 0;
        }
        if self.buf.len() - self.filled < self.read_size {
            self.buf.resize(self.filled + self.read_size, 0);
        }
        loop {
            match self.input.read(&mut self.buf[self.filled..]) {
                Ok(0) => {
                    self.eof = true;
                    return Ok(false);
                }
                Ok(n) => {
                    self.filled += n;
                    return Ok(true);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
    }

    fn consume(&mut self, bytes: usize, lines: u64) {
        self.pos += bytes;
        self.offset += bytes as u64;
        self.line += lines;
    }

    fn skip_bom(&mut self) -> io::Result<()> {
        while self.filled - self.pos < UTF8_BOM.len() && self.fill()? {}
        if self.buf[self.pos..self.filled].starts_with(UTF8_BOM) {
            self.consume(UTF8_BOM.len(), 0);
        }
        Ok(())
    }

    /// Consumes the empty lines that follow; true when the input ends there.
    fn skip_blank_lines(&mut self) -> io::Result<bool> {
        loop {
            while self.filled - self.pos < 2 && self.fill()? {}
            match &self.buf[self.pos..self.filled] {
                [] => return Ok(true),
                [b'\n', ..] => self.consume(1, 1),
                [b'\r', b'\n', ..] => self.consume(2, 1),
                [b'\r'] => self.consume(1, 1),
                _ => return Ok(false),
            }
        }
    }

    fn next_line(&mut self) -> io::Result<Option<Line<'_>>> {
        if self.pos == self.filled && !self.fill()? {
            return Ok(None);
        }
        let mut scanned = 0;
        loop {
            let avail = &self.buf[self.pos..self.filled];
            if let Some(i) = memchr::memchr(b'\n', &avail[scanned..]) {
                let end = scanned + i;
                return Ok(Some(self.take(end, end + 1)));
            }
            scanned = avail.len();
            if self.eof {
                return Ok(Some(self.take(scanned, scanned)));
            }
            if scanned > self.max_row.saturating_add(1) {
                return self.skip_long().map(Some);
            }
            self.fill()?;
        }
    }

    /// The line at `pos` of `len` bytes (with its CR), followed by `consumed - len` bytes
    /// of terminator.
    fn take(&mut self, len: usize, consumed: usize) -> Line<'_> {
        let start = self.pos;
        let line = self.line;
        let mut bytes = &self.buf[start..start + len];
        if let [rest @ .., b'\r'] = bytes {
            bytes = rest;
        }
        let lines = u64::from(consumed > len);
        if bytes.len() > self.max_row {
            let head = bytes[..self.max_row].to_vec();
            let total = bytes.len() as u64;
            self.consume(consumed, lines);
            return Line::TooLong {
                head,
                len: total,
                line,
            };
        }
        let blen = bytes.len();
        self.consume(consumed, lines);
        Line::Row {
            bytes: &self.buf[start..start + blen],
            line,
        }
    }

    /// A line longer than the limit: keeps its head, reads past its end.
    fn skip_long(&mut self) -> io::Result<Line<'static>> {
        let line = self.line;
        let head = self.buf[self.pos..self.pos + self.max_row].to_vec();
        let mut len = 0u64;
        loop {
            let avail = &self.buf[self.pos..self.filled];
            if let Some(i) = memchr::memchr(b'\n', avail) {
                let mut total = len + i as u64;
                let cr = if i > 0 {
                    avail[i - 1] == b'\r'
                } else {
                    // The CR (if any) was in the previous piece; the length is an estimate.
                    false
                };
                if cr {
                    total -= 1;
                }
                self.consume(i + 1, 1);
                return Ok(Line::TooLong {
                    head,
                    len: total,
                    line,
                });
            }
            let n = avail.len();
            len += n as u64;
            self.consume(n, 0);
            if !self.fill()? {
                return Ok(Line::TooLong { head, len, line });
            }
        }
    }
}

/// The column names keys are matched to, in field order.
fn column_names(rules: &Rules) -> Vec<String> {
    match &rules.schema {
        Some(d) => d
            .compiled
            .schema
            .columns
            .iter()
            .map(|c| c.source_name().to_string())
            .collect(),
        None => HEADER_FIELDS.iter().map(|s| (*s).to_string()).collect(),
    }
}

/// A key of a JSON object, borrowed from the line when it holds no escapes.
struct Key<'de>(Cow<'de, str>);

impl<'de> de::Deserialize<'de> for Key<'de> {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string key")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(v.to_owned())))
            }
        }
        d.deserialize_str(KeyVisitor)
    }
}

/// Fills one slot per column from an object's members.
struct Slots<'a, 'de> {
    names: &'a [String],
    exact: &'a mut [Option<&'de RawValue>],
    folded: &'a mut [Option<&'de RawValue>],
}

impl<'de> DeserializeSeed<'de> for Slots<'_, 'de> {
    type Value = ();
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for Slots<'_, 'de> {
    type Value = ();
    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(Key(key)) = map.next_key::<Key<'de>>()? {
            let value: &'de RawValue = map.next_value()?;
            if let Some(i) = self.names.iter().position(|n| *n == key) {
                if self.exact[i].replace(value).is_some() {
                    return Err(de::Error::custom(format!("the key {key:?} appears twice")));
                }
            } else if let Some(i) = self.names.iter().position(|n| n.eq_ignore_ascii_case(&key))
                && self.folded[i].replace(value).is_some()
            {
                return Err(de::Error::custom(format!(
                    "the column {:?} is given twice (keys differing only in case)",
                    self.names[i]
                )));
            }
        }
        Ok(())
    }
}

/// Turns one JSON line into a CSV record of the columns' fields in `out`; returns
/// whether it is quoted. When no value can hold a comma the fields are written as they
/// are (split without unquoting, the fast path); otherwise every field is quoted, so
/// [`FieldBuf::split`] with unquoting gives the exact values. `absent[i]` tells whether
/// field i was `null` or missing (an empty field either way, but not an empty string).
fn to_record(
    line: &[u8],
    names: &[String],
    out: &mut Vec<u8>,
    absent: &mut Vec<bool>,
) -> Result<bool, String> {
    let mut exact: Vec<Option<&RawValue>> = vec![None; names.len()];
    let mut folded: Vec<Option<&RawValue>> = vec![None; names.len()];
    let mut de = serde_json::Deserializer::from_slice(line);
    Slots {
        names,
        exact: &mut exact,
        folded: &mut folded,
    }
    .deserialize(&mut de)
    .and_then(|()| de.end())
    .map_err(|e| row::excerpt(e.to_string().as_bytes(), MESSAGE_BYTES))?;
    let values = || exact.iter().zip(&folded).map(|(e, f)| e.or(*f));
    // A comma can only come from a comma in the JSON text or from an escape.
    let quoted = values()
        .flatten()
        .any(|v| v.get().bytes().any(|b| b == b',' || b == b'\\'));
    out.clear();
    absent.clear();
    absent.extend(values().map(|v| v.is_none_or(|raw| raw.get().starts_with('n'))));
    for (i, raw) in values().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        let Some(raw) = raw else { continue };
        let text = raw.get();
        let value: Cow<'_, str> = match text.as_bytes()[0] {
            b'n' => continue, // null
            b'"' if !text.contains('\\') => Cow::Borrowed(&text[1..text.len() - 1]),
            b'"' => Cow::Owned(serde_json::from_str::<String>(text).map_err(|e| e.to_string())?),
            _ => Cow::Borrowed(text),
        };
        if !quoted {
            out.extend_from_slice(value.as_bytes());
            continue;
        }
        out.push(b'"');
        for b in value.bytes() {
            if b == b'"' {
                out.push(b'"');
            }
            out.push(b);
        }
        out.push(b'"');
    }
    Ok(quoted)
}

/// Reads NDJSON lines from `input` (positioned at `start.offset`), validates them and
/// passes the valid rows as COPY text to `sink`, like [`super::parse_part`].
pub(super) fn parse_part(
    input: &mut dyn Read,
    start: Position,
    rules: &Rules,
    limits: &PartLimits,
    sink: &mut dyn FnMut(Vec<u8>) -> Result<(), ()>,
    read_size: usize,
) -> Result<PartSummary, ParseError> {
    let mut reader = LineReader::new(input, start, rules.max_row_bytes, read_size);
    let at_start = start == Position::START;
    if at_start {
        reader.skip_bom()?;
    }
    let names = column_names(rules);
    let layout = general::Layout {
        field_of_column: (0..names.len()).map(Some).collect(),
        fields: names.len(),
    };
    let declared = rules.schema.as_ref().map(|d| &*d.compiled);
    let mut row_cleaning = general::RowCleaning::new();
    let future_limit = rules.now + rules.future_tolerance;
    let reserve = limits
        .copy_chunk_bytes
        .min(super::MAX_COPY_RESERVE)
        .saturating_add(super::COPY_ROW_SLACK);
    let mut fields = FieldBuf::default();
    let mut record = Vec::new();
    let mut absent = Vec::new();
    let mut copy = Vec::with_capacity(reserve);
    let mut part = PartSummary::default();
    let mut reject_bytes = 0u64;
    let mut seen_row = !at_start;
    let at_eof = loop {
        let offset = reader.position().offset;
        let Some(next) = reader.next_line()? else {
            break true;
        };
        let rejected = match next {
            Line::Row { bytes, .. } if bytes.iter().all(u8::is_ascii_whitespace) => continue,
            Line::Row { bytes, line } => {
                if !seen_row && let Some(at) = memchr::memchr(0, bytes) {
                    let offset = usize::try_from(offset).unwrap_or(usize::MAX);
                    return Err(FileError::Binary {
                        offset: offset.saturating_add(at),
                    }
                    .into());
                }
                seen_row = true;
                let row_start = copy.len();
                let checked = row::check_text(bytes).and_then(|()| {
                    let quoted =
                        to_record(bytes, &names, &mut record, &mut absent).map_err(|problem| {
                            (
                                RejectReason::BadJson,
                                format!("the line is not one JSON object: {problem}"),
                            )
                        })?;
                    let fields = fields.split(&record, quoted);
                    match declared {
                        None => row::check_row(&fields, &record, rules, future_limit, &mut copy)
                            .map(|(_, cleaning)| part.cleaned.add_row(cleaning)),
                        Some(schema) => schema
                            .check_row(
                                &layout,
                                &fields,
                                &record,
                                rules.now,
                                RowOut::start(&mut copy, rules.copy_format, schema.width()),
                                &mut row_cleaning,
                            )
                            .map(|()| {
                                // A null or missing key is no value to clean: only an
                                // empty string mapped to NULL counts as cleaned.
                                row_cleaning.retain(|(column, rule)| {
                                    *rule != CleanRule::EmptyToNull
                                        || layout.field_of_column[*column]
                                            .is_some_and(|f| absent.get(f) != Some(&true))
                                });
                                part.cleaned.add_declared_row(schema, &row_cleaning)
                            }),
                    }
                });
                match checked {
                    Ok(()) => {
                        part.valid_rows += 1;
                        None
                    }
                    Err((reason, message)) => {
                        copy.truncate(row_start);
                        Some(Rejected {
                            line,
                            reason,
                            message,
                            raw: bytes.to_vec(),
                        })
                    }
                }
            }
            Line::TooLong { head, len, line } => {
                seen_row = true;
                Some(too_long(head, len, line))
            }
        };
        part.data_rows += 1;
        if let Some(r) = rejected {
            reject_bytes += r.raw.len() as u64;
            part.rejects.push(r);
        }
        if copy.len() >= limits.copy_chunk_bytes {
            let chunk = std::mem::replace(&mut copy, Vec::with_capacity(reserve));
            sink(chunk).map_err(|()| ParseError::SinkClosed)?;
        }
        let consumed = reader.position().offset - start.offset;
        if consumed >= limits.max_input_bytes || reject_bytes >= limits.max_reject_bytes {
            break reader.skip_blank_lines()?;
        }
    };
    if at_eof && !seen_row {
        return Err(FileError::Empty.into());
    }
    if !copy.is_empty() {
        sink(copy).map_err(|()| ParseError::SinkClosed)?;
    }
    part.end = reader.position();
    part.at_eof = at_eof;
    super::check_reject_share(&part, start, rules)?;
    Ok(part)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::validate::{Format, parse_file_as};

    fn rules() -> Rules {
        Rules {
            future_tolerance: chrono::Duration::hours(24),
            collect_event_ids: false,
            max_row_bytes: 1024,
            ..Rules::for_tests()
        }
    }

    const GOOD: &str = r#"{"event_id":"0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d","event_time":"2026-11-25T10:00:00Z","user_id":7,"session_id":"s-1","event_type":"purchase","product_id":42,"category":"books","price":19.99,"quantity":2}"#;

    fn parse(text: &[u8]) -> Result<crate::validate::ParsedFile, FileError> {
        parse_file_as(Format::Ndjson, text, &rules())
    }

    #[test]
    fn an_object_loads_like_the_same_csv_row() {
        let parsed = parse(format!("{GOOD}\n").as_bytes()).expect("parse");
        assert_eq!(parsed.valid_rows, 1, "{:?}", parsed.rejects);
        let csv = format!(
            "{}\n0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d,2026-11-25T10:00:00Z,7,s-1,purchase,42,books,19.99,2\n",
            HEADER_FIELDS.join(",")
        );
        let from_csv = super::super::parse_file(csv.as_bytes(), &rules()).expect("csv");
        assert_eq!(parsed.copy_rows, from_csv.copy_rows);
    }

    #[test]
    fn keys_in_any_order_other_keys_ignored_and_messy_values_cleaned() {
        let line = r#"{"extra":{"a":[1,2]},"quantity":2,"price":"19.99","category":" Books ","product_id":42,"event_type":"PURCHASE","session_id":"s-1","user_id":"7","event_time":"2026-11-25T10:00:00Z","EVENT_ID":"0A1B2C3D-4E5F-4A6B-8C7D-9E0F1A2B3C4D"}"#;
        let parsed = parse(line.as_bytes()).expect("parse");
        assert_eq!(parsed.valid_rows, 1, "{:?}", parsed.rejects);
        let good = parse(GOOD.as_bytes()).expect("parse");
        assert_eq!(parsed.copy_rows, good.copy_rows);
        assert!(!parsed.cleaned.is_empty());
    }

    #[test]
    fn broken_lines_are_bad_json_and_others_still_load() {
        let text = format!("{GOOD}\n[1,2]\n{{\"event_id\": \n42\n\n{GOOD} trailing\n{GOOD}\r\n");
        let parsed = parse(text.as_bytes()).expect("parse");
        assert_eq!(parsed.valid_rows, 2);
        let lines: Vec<(u64, RejectReason)> =
            parsed.rejects.iter().map(|r| (r.line, r.reason)).collect();
        assert_eq!(
            lines,
            vec![
                (2, RejectReason::BadJson),
                (3, RejectReason::BadJson),
                (4, RejectReason::BadJson),
                (6, RejectReason::BadJson),
            ]
        );
        assert_eq!(parsed.rejects[0].raw, b"[1,2]");
        assert!(parsed.rejects[0].message.contains("JSON object"));
    }

    #[test]
    fn missing_and_null_keys_are_empty_fields() {
        let line = GOOD.replace(r#""session_id":"s-1","#, r#""session_id":null,"#);
        let parsed = parse(line.as_bytes()).expect("parse");
        assert_eq!(parsed.rejects[0].reason, RejectReason::MissingField);
        let line = GOOD.replace(r#""category":"books","#, "");
        let parsed = parse(line.as_bytes()).expect("parse");
        assert_eq!(parsed.rejects[0].reason, RejectReason::MissingField);
    }

    #[test]
    fn invalid_utf8_nul_escapes_and_duplicates_are_rejected() {
        let mut text = GOOD.as_bytes().to_vec();
        text[20] = 0xff;
        let parsed = parse(&text).expect("parse");
        assert_eq!(parsed.rejects[0].reason, RejectReason::InvalidUtf8);
        let line = GOOD.replace("s-1", r"s-\u0000");
        let parsed = parse(line.as_bytes()).expect("parse");
        assert_eq!(parsed.rejects[0].reason, RejectReason::InvalidUtf8);
        let line = GOOD.replace(r#""user_id":7,"#, r#""user_id":7,"user_id":8,"#);
        let parsed = parse(line.as_bytes()).expect("parse");
        assert_eq!(parsed.rejects[0].reason, RejectReason::BadJson);
    }

    #[test]
    fn escaped_strings_are_unescaped() {
        let line = GOOD.replace("s-1", r#"s-\"q\",\u00e9"#);
        let parsed = parse(line.as_bytes()).expect("parse");
        assert_eq!(parsed.valid_rows, 1, "{:?}", parsed.rejects);
        let copy = String::from_utf8(parsed.copy_rows).expect("utf8");
        assert!(copy.contains("s-\"q\",é"), "{copy}");
    }

    #[test]
    fn a_huge_line_is_row_too_long_in_bounded_memory() {
        let mut text = GOOD.as_bytes().to_vec();
        text.push(b'\n');
        text.push(b'{');
        text.extend(std::iter::repeat_n(b'x', 100_000));
        text.push(b'\n');
        text.extend_from_slice(GOOD.as_bytes());
        let mut input = text.as_slice();
        let mut reader = LineReader::new(&mut input, Position::START, 1024, 4096);
        let mut got = Vec::new();
        while let Some(l) = reader.next_line().expect("read") {
            got.push(match l {
                Line::Row { line, .. } => (line, 0),
                Line::TooLong { head, len, line } => {
                    assert_eq!(head.len(), 1024);
                    (line, len)
                }
            });
            assert!(reader.buf.len() <= 1024 + 2 + 4096 + 4096);
        }
        assert_eq!(got, vec![(1, 0), (2, 100_001), (3, 0)]);
        let parsed = parse(&text).expect("parse");
        assert_eq!(parsed.valid_rows, 2);
        assert_eq!(parsed.rejects[0].reason, RejectReason::RowTooLong);
    }

    #[test]
    fn empty_and_binary_files_are_set_aside() {
        assert_eq!(parse(b"").expect_err("empty"), FileError::Empty);
        assert_eq!(parse(b"\n  \n").expect_err("blank"), FileError::Empty);
        assert!(matches!(
            parse(b"\n{\"a\":\0}\n").expect_err("binary"),
            FileError::Binary { offset: 6 }
        ));
    }

    #[test]
    fn parts_give_what_the_whole_file_gives() {
        let mut text = String::new();
        for i in 0..50 {
            if i % 7 == 3 {
                text.push_str("not json\n\n");
            } else {
                text.push_str(GOOD);
                text.push('\n');
            }
        }
        let whole = parse(text.as_bytes()).expect("whole");
        let limits = PartLimits {
            max_input_bytes: 500,
            max_reject_bytes: u64::MAX,
            copy_chunk_bytes: 64,
        };
        let (mut start, mut copy, mut rejects, mut parts) = (Position::START, Vec::new(), 0, 0);
        loop {
            let mut input = &text.as_bytes()[start.offset as usize..];
            let part = parse_part(
                &mut input,
                start,
                &rules(),
                &limits,
                &mut |c| {
                    copy.extend_from_slice(&c);
                    Ok(())
                },
                37,
            )
            .expect("part");
            rejects += part.rejects.len();
            parts += 1;
            start = part.end;
            if part.at_eof {
                break;
            }
        }
        assert!(parts > 5);
        assert_eq!(copy, whole.copy_rows);
        assert_eq!(rejects, whole.rejects.len());
        assert_eq!(start.offset, text.len() as u64);
    }

    #[test]
    fn only_an_empty_string_counts_as_cleaned_to_null() {
        use sluice_core::schema::{CleanRule, ColumnSpec, MatchBy, TableSchema, TypeName};
        let schema = TableSchema {
            table: "t".into(),
            match_by: MatchBy::Header,
            key: None,
            columns: vec![
                ColumnSpec::new("id", TypeName::Bigint),
                ColumnSpec {
                    nullable: true,
                    clean: vec![CleanRule::EmptyToNull],
                    ..ColumnSpec::new("note", TypeName::Text)
                },
            ],
        };
        let compiled = general::CompiledSchema::new(schema).expect("schema");
        let rules = Rules {
            schema: Some(crate::validate::DeclaredRules {
                compiled: std::sync::Arc::new(compiled),
                layout: None,
            }),
            ..rules()
        };
        let text = concat!(
            r#"{"id":1,"note":""}"#,
            "\n",
            r#"{"id":2,"note":null}"#,
            "\n",
            r#"{"id":3}"#,
            "\n",
            r#"{"id":4,"note":"x"}"#,
            "\n",
        );
        let parsed = parse_file_as(Format::Ndjson, text.as_bytes(), &rules).expect("parse");
        assert_eq!(parsed.valid_rows, 4, "{:?}", parsed.rejects);
        let counted: Vec<_> = parsed.cleaned.iter().collect();
        assert_eq!(counted, vec![("note", "empty_to_null", 1)]);
    }

    #[test]
    fn a_declared_schema_takes_keys_by_source_name_and_objects_as_jsonb() {
        use sluice_core::schema::{ColumnSpec, MatchBy, TableSchema, TypeName};
        let schema = TableSchema {
            table: "things".into(),
            match_by: MatchBy::Header,
            key: None,
            columns: vec![
                ColumnSpec::new("id", TypeName::Bigint),
                ColumnSpec {
                    source: Some("Name".into()),
                    ..ColumnSpec::new("name", TypeName::Text)
                },
                ColumnSpec {
                    nullable: true,
                    ..ColumnSpec::new("meta", TypeName::Jsonb)
                },
                ColumnSpec {
                    nullable: true,
                    ..ColumnSpec::new("active", TypeName::Boolean)
                },
            ],
        };
        let compiled = general::CompiledSchema::new(schema).expect("schema");
        let rules = Rules {
            schema: Some(crate::validate::DeclaredRules {
                compiled: std::sync::Arc::new(compiled),
                layout: None,
            }),
            ..rules()
        };
        let text = concat!(
            r#"{"id":5,"Name":"a,\"b\"","meta":{"x":[1,2]},"active":true,"other":1}"#,
            "\n",
            r#"{"name":"lower-case key","id":6}"#,
            "\n",
            r#"{"id":"x","Name":"n"}"#,
            "\n",
        );
        let parsed = parse_file_as(Format::Ndjson, text.as_bytes(), &rules).expect("parse");
        assert_eq!(parsed.valid_rows, 2, "{:?}", parsed.rejects);
        let copy = String::from_utf8(parsed.copy_rows).expect("utf8");
        let first = copy.lines().next().expect("a row");
        assert!(first.starts_with("5\ta,\"b\"\t"), "{first}");
        assert!(
            first.contains(r#""x""#) && first.ends_with("\tt"),
            "{first}"
        );
        assert!(
            copy.lines()
                .nth(1)
                .expect("row 2")
                .starts_with("6\tlower-case key\t")
        );
        assert_eq!(parsed.rejects.len(), 1);
        assert_eq!(parsed.rejects[0].line, 3);
        assert_eq!(parsed.rejects[0].reason, RejectReason::BadValue);
    }

    /// Parse-only cost of NDJSON against CSV (and of gunzip on top of CSV), same rows:
    /// `cargo test --release -p sluice-worker --lib ndjson_throughput -- --ignored --nocapture`.
    #[test]
    #[ignore = "timing, run by hand"]
    fn ndjson_throughput() {
        use std::io::Write;
        let rows = 300_000;
        let mut csv = format!("{}\n", HEADER_FIELDS.join(",")).into_bytes();
        let mut ndjson = Vec::new();
        for i in 0..rows {
            let id = uuid::Uuid::from_u64_pair(i, i.rotate_left(17) ^ 0x9E37_79B9);
            let (t, q) = (i % 3, 1 + i % 9);
            let ty = ["view", "add_to_cart", "purchase"][t as usize];
            writeln!(
                csv,
                "{id},2026-11-20T10:{:02}:{:02}.000Z,{},s-{i},{ty},{},books,{}.{:02},{q}",
                i % 60,
                (i / 60) % 60,
                i % 100_000,
                i % 50_000,
                i % 1000,
                i % 100
            )
            .expect("write");
            writeln!(
                ndjson,
                r#"{{"event_id":"{id}","event_time":"2026-11-20T10:{:02}:{:02}.000Z","user_id":{},"session_id":"s-{i}","event_type":"{ty}","product_id":{},"category":"books","price":{}.{:02},"quantity":{q}}}"#,
                i % 60,
                (i / 60) % 60,
                i % 100_000,
                i % 50_000,
                i % 1000,
                i % 100
            )
            .expect("write");
        }
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&csv).expect("gzip");
        let gz = gz.finish().expect("gzip");
        let time = |label: &str, f: &mut dyn FnMut() -> u64| {
            let started = std::time::Instant::now();
            let valid = f();
            let s = started.elapsed().as_secs_f64();
            println!("{label}: {:.0} rows/s ({valid} valid)", valid as f64 / s);
            assert_eq!(valid, rows);
        };
        time("csv", &mut || {
            super::super::parse_file(&csv, &rules())
                .expect("csv")
                .valid_rows
        });
        time("ndjson", &mut || parse(&ndjson).expect("ndjson").valid_rows);
        time("gzip csv", &mut || {
            let mut input = flate2::read::MultiGzDecoder::new(&gz[..]);
            let limits = PartLimits {
                max_input_bytes: u64::MAX,
                max_reject_bytes: u64::MAX,
                copy_chunk_bytes: 256 << 10,
            };
            super::super::parse_part(&mut input, Position::START, &rules(), &limits, &mut |_| {
                Ok(())
            })
            .expect("gz")
            .valid_rows
        });
    }
}
