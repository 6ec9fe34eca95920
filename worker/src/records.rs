//! Splitting a CSV byte stream into records and records into fields, reading the input
//! through a fixed-size buffer so that a file of any size is parsed in bounded memory.
//!
//! RFC 4180 with two deliberate limits, so that one bad quote costs only its own line:
//! - A `"` opens a quoted field only at the start of a field (record start or right after
//!   a comma). Anywhere else it is an ordinary character (`12" pipes`).
//! - Inside a quoted field `""` is one quote and commas and line breaks are data. A record
//!   that runs over several physical lines this way is accepted only if it closes within
//!   the row limit and has exactly as many fields as a row (by default [`COLUMN_COUNT`]); otherwise only its first
//!   physical line is taken as a record ([`Record::BadQuote`]) and the next record starts
//!   on the next line. Without this rule a single stray quote would swallow the rest of
//!   the file into one rejected "row".
//!
//! A closing quote followed by something other than a comma or the line end is lenient:
//! the quoted part ends and the rest of the field is taken literally.
//!
//! Lines end with LF or CRLF; the CR is not part of the record. Every physical line
//! counts for line numbers, blank ones included.

use std::io::{self, Read};

#[cfg(test)]
mod csv_core_bench;

use sluice_core::event::COLUMN_COUNT;

/// The CSV dialect: the field delimiter and the quote character, one ASCII byte each
/// (checked by the configuration: different, and neither a line break).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dialect {
    pub delimiter: u8,
    pub quote: u8,
}

impl Default for Dialect {
    fn default() -> Self {
        Dialect {
            delimiter: b',',
            quote: b'"',
        }
    }
}

/// Where a part of a file starts or ends: always a record boundary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    /// Byte offset in the file.
    pub offset: u64,
    /// 1-based physical line number at `offset` (the header is line 1).
    pub line: u64,
}

impl Position {
    pub const START: Position = Position { offset: 0, line: 1 };
}

impl Default for Position {
    fn default() -> Self {
        Position::START
    }
}

/// How much is read from the input at a time (and the buffer's size until a long record
/// needs more).
pub(crate) const READ_SIZE: usize = 256 * 1024;
const UTF8_BOM: &[u8] = b"\xEF\xBB\xBF";

/// Why a line that opens a quoted field is a record on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum QuoteProblem {
    /// The file ends inside the quoted field.
    NeverClosed,
    /// The quoted field does not close within the row limit.
    NotClosedWithin { limit: usize },
    /// Closing it makes a record of `lines` lines with `columns` fields.
    WrongColumns { columns: usize, lines: u64 },
}

/// One record as found in the input. Each variant has consumed its input: the reader is
/// positioned at the next record.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Record<'a> {
    /// A record within the row limit, without its line terminator. Empty for a blank line.
    Row {
        bytes: &'a [u8],
        line: u64,
        /// Holds a quoted field: split with [`FieldBuf::split`]'s unquoting.
        quoted: bool,
    },
    /// The first physical line of a record whose quoted field does not close properly.
    BadQuote {
        bytes: &'a [u8],
        line: u64,
        problem: QuoteProblem,
    },
    /// A physical line longer than the row limit: its first `limit` bytes and its length.
    TooLong { head: Vec<u8>, len: u64, line: u64 },
}

/// Reads records from a byte stream. Memory: the buffer holds at most one record being
/// assembled (≤ the row limit + 2 bytes) plus one read; a longer line is skipped, not
/// buffered.
pub(crate) struct RecordReader<'r> {
    input: &'r mut dyn Read,
    buf: Vec<u8>,
    /// `buf[pos..filled]` is read but not consumed; `buf[pos]` is at `offset` in the file.
    pos: usize,
    filled: usize,
    eof: bool,
    offset: u64,
    line: u64,
    max_row: usize,
    max_buf: usize,
    /// Scratch space to count the fields of a multi-line record.
    counter: FieldBuf,
    /// Fields a record spanning several lines must have to be accepted as one record.
    columns: usize,
    dialect: Dialect,
}

impl<'r> RecordReader<'r> {
    /// A reader of `input`, which is positioned at `start.offset`, with records of at most
    /// `max_row` bytes, reading `read_size` bytes at a time.
    pub(crate) fn new(
        input: &'r mut dyn Read,
        start: Position,
        max_row: usize,
        read_size: usize,
    ) -> Self {
        let read_size = read_size.max(1);
        RecordReader {
            input,
            buf: vec![0; read_size],
            pos: 0,
            filled: 0,
            eof: false,
            offset: start.offset,
            line: start.line,
            max_row,
            max_buf: max_row.saturating_add(2).saturating_add(read_size),
            counter: FieldBuf::default(),
            columns: COLUMN_COUNT,
            dialect: Dialect::default(),
        }
    }

    /// Sets the delimiter and quote character (default: comma and double quote).
    pub(crate) fn set_dialect(&mut self, dialect: Dialect) {
        self.dialect = dialect;
        self.counter.dialect = dialect;
    }

    /// Sets the number of fields of a row (a declared schema's file layout).
    pub(crate) fn set_columns(&mut self, columns: usize) {
        self.columns = columns;
    }

    /// Where the next record starts.
    pub(crate) fn position(&self) -> Position {
        Position {
            offset: self.offset,
            line: self.line,
        }
    }

    /// Current size of the read buffer (tests check that it stays bounded).
    #[cfg(test)]
    pub(crate) fn buffer_len(&self) -> usize {
        self.buf.len()
    }

    /// Skips a UTF-8 byte order mark; only meaningful at the start of a file.
    pub(crate) fn skip_bom(&mut self) -> io::Result<()> {
        while self.filled - self.pos < UTF8_BOM.len() && self.fill()? {}
        if self.buf[self.pos..self.filled].starts_with(UTF8_BOM) {
            self.consume(UTF8_BOM.len(), 0);
        }
        Ok(())
    }

    /// Consumes the blank lines that follow (they hold no record) and tells whether the
    /// input ends there. Used at the end of a part, so that a part never leaves only
    /// blank lines to the next one.
    pub(crate) fn skip_blank_lines(&mut self) -> io::Result<bool> {
        loop {
            while self.filled - self.pos < 2 && self.fill()? {}
            match &self.buf[self.pos..self.filled] {
                [] => return Ok(true),
                [b'\n', ..] => self.consume(1, 1),
                [b'\r', b'\n', ..] => self.consume(2, 1),
                // A lone CR at the very end is a blank last line (see `next_record`).
                [b'\r'] => self.consume(1, 1),
                _ => return Ok(false),
            }
        }
    }

    /// The next record, or `None` at the end of the input.
    pub(crate) fn next_record(&mut self) -> io::Result<Option<Record<'_>>> {
        if self.pos == self.filled && !self.fill()? {
            return Ok(None);
        }
        let mut scan = Scan {
            dialect: self.dialect,
            ..Scan::default()
        };
        loop {
            match scan.run(&self.buf[self.pos..self.filled], self.eof) {
                Step::End(end) => return Ok(Some(self.take_record(end, scan.quoted))),
                Step::Unclosed => return Ok(Some(self.take_unclosed())),
                Step::More if self.filled - self.pos > self.max_row.saturating_add(1) => {
                    // Longer than the limit even if a CR ends it: stop reading it here.
                    return self.take_over_limit(scan.quoted).map(Some);
                }
                Step::More => {
                    self.fill()?;
                }
            }
        }
    }

    /// A record that ends at `end` (its LF, or the end of the input), all buffered.
    fn take_record(&mut self, end: usize, quoted: bool) -> Record<'_> {
        let region = &self.buf[self.pos..self.pos + end];
        let raw_len = strip_cr(region).len();
        let first_break = if quoted {
            memchr::memchr(b'\n', region)
        } else {
            None
        };
        let mut lines = 1;
        if let Some(nl) = first_break {
            lines += memchr::memchr_iter(b'\n', region).count() as u64;
            let problem = if raw_len > self.max_row {
                Some(QuoteProblem::NotClosedWithin {
                    limit: self.max_row,
                })
            } else {
                let columns = self.counter.count(strip_cr(region));
                (columns != self.columns).then_some(QuoteProblem::WrongColumns { columns, lines })
            };
            if let Some(problem) = problem {
                return self.take_first_line(nl, problem);
            }
        }
        let line = self.line;
        let start = self.pos;
        let terminator = usize::from(start + end < self.filled);
        self.consume(end + terminator, lines);
        if raw_len > self.max_row {
            return self.too_long(start, raw_len as u64, line);
        }
        Record::Row {
            bytes: &self.buf[start..start + raw_len],
            line,
            quoted,
        }
    }

    /// The input ends inside a quoted field.
    fn take_unclosed(&mut self) -> Record<'_> {
        let region = &self.buf[self.pos..self.filled];
        match memchr::memchr(b'\n', region) {
            Some(nl) => self.take_first_line(nl, QuoteProblem::NeverClosed),
            None => {
                let (line, start) = (self.line, self.pos);
                let raw_len = strip_cr(region).len();
                self.consume(region.len(), 1);
                if raw_len > self.max_row {
                    return self.too_long(start, raw_len as u64, line);
                }
                Record::BadQuote {
                    bytes: &self.buf[start..start + raw_len],
                    line,
                    problem: QuoteProblem::NeverClosed,
                }
            }
        }
    }

    /// More than the row limit is buffered and the record has not ended.
    fn take_over_limit(&mut self, quoted: bool) -> io::Result<Record<'_>> {
        let region = &self.buf[self.pos..self.filled];
        // Any line break seen so far is inside a quoted field (an unquoted one would have
        // ended the record): the first line is complete and the quote does not close in time.
        if let Some(nl) = quoted.then(|| memchr::memchr(b'\n', region)).flatten() {
            let limit = self.max_row;
            return Ok(self.take_first_line(nl, QuoteProblem::NotClosedWithin { limit }));
        }
        self.skip_long_line()
    }

    /// Takes the first physical line (ending at `nl`) of the buffered record as the record.
    fn take_first_line(&mut self, nl: usize, problem: QuoteProblem) -> Record<'_> {
        let (line, start) = (self.line, self.pos);
        let raw_len = strip_cr(&self.buf[start..start + nl]).len();
        self.consume(nl + 1, 1);
        if raw_len > self.max_row {
            return self.too_long(start, raw_len as u64, line);
        }
        Record::BadQuote {
            bytes: &self.buf[start..start + raw_len],
            line,
            problem,
        }
    }

    /// A too-long record lying in the buffer at `start` (already consumed).
    fn too_long(&self, start: usize, len: u64, line: u64) -> Record<'_> {
        Record::TooLong {
            head: self.buf[start..start + self.max_row].to_vec(),
            len,
            line,
        }
    }

    /// Reads past the physical line that starts at `pos` (longer than the limit) without
    /// keeping more than its first `max_row` bytes.
    fn skip_long_line(&mut self) -> io::Result<Record<'static>> {
        let line = self.line;
        let head = self.buf[self.pos..self.pos + self.max_row].to_vec();
        let mut len = 0u64;
        let mut last = 0u8;
        loop {
            let region = &self.buf[self.pos..self.filled];
            if let Some(nl) = memchr::memchr(b'\n', region) {
                if nl > 0 {
                    last = region[nl - 1];
                }
                len += nl as u64;
                self.consume(nl + 1, 1);
                break;
            }
            if let Some(&b) = region.last() {
                last = b;
            }
            len += region.len() as u64;
            let n = region.len();
            self.consume(n, 0);
            if !self.fill()? {
                self.line += 1;
                break;
            }
        }
        if last == b'\r' {
            len -= 1;
        }
        Ok(Record::TooLong { head, len, line })
    }

    fn consume(&mut self, bytes: usize, lines: u64) {
        self.pos += bytes;
        self.offset += bytes as u64;
        self.line += lines;
    }

    /// Reads more input after `filled`, first moving the unconsumed bytes to the front
    /// and growing the buffer when it is full of one record. False at the end of input.
    fn fill(&mut self) -> io::Result<bool> {
        if self.eof {
            return Ok(false);
        }
        if self.pos == self.filled {
            (self.pos, self.filled) = (0, 0);
        } else if self.filled == self.buf.len() && self.pos > 0 {
            self.buf.copy_within(self.pos..self.filled, 0);
            (self.pos, self.filled) = (0, self.filled - self.pos);
        }
        if self.filled == self.buf.len() {
            // `next_record` stops a record at max_row + 2 bytes, which fits max_buf.
            let grown = (self.buf.len() * 2).min(self.max_buf).max(self.filled + 1);
            self.buf.resize(grown, 0);
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
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }
}

fn strip_cr(bytes: &[u8]) -> &[u8] {
    bytes.strip_suffix(b"\r").unwrap_or(bytes)
}

/// Where the search for the end of a record stands; kept across buffer refills so that
/// each byte is looked at once.
#[derive(Default)]
struct Scan {
    /// Next byte to look at, relative to the record's start.
    pos: usize,
    in_quotes: bool,
    /// A quoted field was opened somewhere in the record.
    quoted: bool,
    dialect: Dialect,
}

enum Step {
    /// The record ends at this offset (its LF, or the end of the input).
    End(usize),
    /// The input ends inside a quoted field.
    Unclosed,
    /// The buffered bytes end before the record does.
    More,
}

impl Scan {
    /// Looks for the end of the record at the start of `bytes` (the same rules as
    /// [`FieldBuf::split`]); `eof` says that no more bytes follow.
    fn run(&mut self, bytes: &[u8], eof: bool) -> Step {
        let Dialect { delimiter, quote } = self.dialect;
        loop {
            let rest = &bytes[self.pos..];
            if self.in_quotes {
                let Some(i) = memchr::memchr(quote, rest) else {
                    self.pos = bytes.len();
                    return if eof { Step::Unclosed } else { Step::More };
                };
                let at = self.pos + i;
                match bytes.get(at + 1) {
                    Some(&next) if next == quote => self.pos = at + 2,
                    None if !eof => {
                        // Escaped quote or the end of the field: the next byte decides.
                        self.pos = at;
                        return Step::More;
                    }
                    _ => {
                        self.in_quotes = false;
                        self.pos = at + 1;
                    }
                }
            } else {
                let Some(i) = memchr::memchr2(b'\n', quote, rest) else {
                    self.pos = bytes.len();
                    return if eof {
                        Step::End(bytes.len())
                    } else {
                        Step::More
                    };
                };
                let at = self.pos + i;
                if bytes[at] == b'\n' {
                    return Step::End(at);
                }
                // Right after a closing quote the next byte is never a quote (that would
                // have been `""`), so a delimiter before `at` is a real field separator.
                if at == 0 || bytes[at - 1] == delimiter {
                    self.in_quotes = true;
                    self.quoted = true;
                }
                self.pos = at + 1;
            }
        }
    }
}

/// Buffers reused from row to row so that splitting allocates nothing per row. A record
/// without quoted fields is split where it lies; one with quotes is unescaped into
/// `unquoted`.
#[derive(Default)]
pub(crate) struct FieldBuf {
    spans: Vec<(usize, usize)>,
    unquoted: Vec<u8>,
    dialect: Dialect,
}

/// The fields of one record: boundaries into either the record itself or the unescaped
/// copy of a quoted record.
pub(crate) struct Fields<'a> {
    spans: &'a [(usize, usize)],
    source: &'a [u8],
}

impl FieldBuf {
    pub(crate) fn with_dialect(dialect: Dialect) -> FieldBuf {
        FieldBuf {
            dialect,
            ..FieldBuf::default()
        }
    }

    /// Splits a record (`quoted` as reported by the reader).
    pub(crate) fn split<'a>(&'a mut self, record: &'a [u8], quoted: bool) -> Fields<'a> {
        self.spans.clear();
        if quoted {
            self.split_quoted(record);
            return Fields {
                spans: &self.spans,
                source: &self.unquoted,
            };
        }
        let mut start = 0;
        for comma in memchr::memchr_iter(self.dialect.delimiter, record) {
            self.spans.push((start, comma));
            start = comma + 1;
        }
        self.spans.push((start, record.len()));
        Fields {
            spans: &self.spans,
            source: record,
        }
    }

    /// The number of fields of a record holding quoted fields.
    fn count(&mut self, record: &[u8]) -> usize {
        self.spans.clear();
        self.split_quoted(record);
        self.spans.len()
    }

    fn split_quoted(&mut self, bytes: &[u8]) {
        self.unquoted.clear();
        let mut field_start = 0;
        let mut at_field_start = true;
        let mut in_quotes = false;
        let Dialect { delimiter, quote } = self.dialect;
        let mut i = 0;
        while i < bytes.len() {
            let b = bytes[i];
            if in_quotes {
                if b == quote {
                    if bytes.get(i + 1) == Some(&quote) {
                        self.unquoted.push(quote);
                        i += 1;
                    } else {
                        in_quotes = false;
                    }
                } else {
                    self.unquoted.push(b);
                }
            } else {
                match b {
                    _ if b == delimiter => {
                        self.spans.push((field_start, self.unquoted.len()));
                        field_start = self.unquoted.len();
                        at_field_start = true;
                        i += 1;
                        continue;
                    }
                    _ if b == quote && at_field_start => in_quotes = true,
                    _ => self.unquoted.push(b),
                }
            }
            at_field_start = false;
            i += 1;
        }
        self.spans.push((field_start, self.unquoted.len()));
    }
}

impl Fields<'_> {
    pub(crate) fn len(&self) -> usize {
        self.spans.len()
    }

    pub(crate) fn get(&self, i: usize) -> &[u8] {
        let (start, end) = self.spans[i];
        &self.source[start..end]
    }
}
