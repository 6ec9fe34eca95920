//! Parsing and validation of a landing file: CSV bytes in, the valid rows as PostgreSQL
//! `COPY` text plus the rejected rows with their reasons out.
//!
//! Pure and synchronous so that it can be tested exhaustively and run on a blocking
//! thread. A large file is parsed in parts ([`parse_part`]): each part starts and ends on
//! a record boundary ([`Position`]) so that parts can be committed one by one and a later
//! part resumed from a fresh reader; parsing in parts gives exactly what parsing the
//! whole file gives. Memory is bounded by the read buffer, one `COPY` chunk and the
//! part's rejects, whatever the file's size.
//!
//! Records are split by [`crate::records`] (quotes, line ends, the row size limit); each
//! data row is then checked by [`row`] in a fixed order and gets the first reason that
//! applies: row size → UTF-8 and NUL → column count → field length → empty field → each
//! column, left to right. Before the checks, fields are cleaned ([`clean`]: surrounding
//! spaces, the case of `event_type`, `category` and `event_id`), and the rows cleaning
//! changed are counted in the summaries ([`Cleaned`]).

mod clean;
#[cfg(test)]
mod clean_tests;
#[cfg(test)]
mod dialect_tests;
pub mod general;
mod ndjson;
mod out;
#[cfg(test)]
mod part_tests;
mod row;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod throughput;

use std::io::Read;

use chrono::{DateTime, Utc};
use sluice_core::config::CopyFormat;
use sluice_core::event::{COLUMN_COUNT, HEADER_FIELDS};
use sluice_core::reject::RejectReason;
use uuid::Uuid;

pub use self::clean::{Cleaned, Rule as CleaningRule, applicable as cleaning_rules};
use self::out::RowOut;
pub use crate::records::Position;
use crate::records::{FieldBuf, Fields, QuoteProblem, READ_SIZE, Record, RecordReader};

/// What counts as valid at the time a batch is parsed.
#[derive(Debug, Clone)]
pub struct Rules {
    /// The current time, against which future timestamps are judged.
    pub now: DateTime<Utc>,
    /// How far in the future an `event_time` may lie (clock skew between producers).
    pub future_tolerance: chrono::Duration,
    /// Also return the event ids of valid rows (tests and tools; the worker does not need them).
    pub collect_event_ids: bool,
    /// Longest row accepted, in bytes without the line terminator (callers use 1 MiB by
    /// default). A longer row is rejected as `row_too_long` without being read into memory.
    pub max_row_bytes: usize,
    /// A declared schema (`spec.schema`); None checks the built-in e-commerce table.
    pub schema: Option<DeclaredRules>,
    /// The CSV dialect and whether files start with a header line.
    pub csv: CsvRules,
    /// `worker.maxRejectShare`: a file (or part) whose share of rejected rows exceeds it
    /// is refused whole ([`FileError::RejectShareExceeded`]).
    pub max_reject_share: Option<f64>,
    /// The wire format valid rows are written in.
    pub copy_format: CopyFormat,
}

#[cfg(test)]
impl Rules {
    /// The rules the unit tests start from: the clock at 2026-11-25T12:00:00Z, one hour
    /// of future tolerance, event ids collected, 1 MiB rows, the built-in table, CSV.
    pub(crate) fn for_tests() -> Rules {
        Rules {
            now: DateTime::parse_from_rfc3339("2026-11-25T12:00:00Z")
                .map(|t| t.with_timezone(&Utc))
                .unwrap_or_default(),
            future_tolerance: chrono::Duration::hours(1),
            collect_event_ids: true,
            max_row_bytes: 1024 * 1024,
            schema: None,
            csv: CsvRules::default(),
            max_reject_share: None,
            copy_format: CopyFormat::Text,
        }
    }
}

/// How CSV files are written (`source.csv`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CsvRules {
    pub dialect: crate::records::Dialect,
    /// Files start with a header line (default). Without one, fields are matched by
    /// position and line 1 is data.
    pub header: bool,
}

impl Default for CsvRules {
    fn default() -> Self {
        CsvRules {
            dialect: crate::records::Dialect::default(),
            header: true,
        }
    }
}

/// The rules of a declared schema.
#[derive(Debug, Clone)]
pub struct DeclaredRules {
    pub compiled: std::sync::Arc<general::CompiledSchema>,
    /// The file's layout, read from its header: needed to parse a part that does not
    /// start at the beginning of the file ([`read_layout`]).
    pub layout: Option<general::Layout>,
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
    /// Valid rows that cleaning changed, by column and rule.
    pub cleaned: Cleaned,
}

/// One row sent to quarantine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejected {
    /// 1-based line on which the row starts; the header is line 1.
    pub line: u64,
    pub reason: RejectReason,
    /// What is wrong, for a person.
    pub message: String,
    /// The row exactly as received, without its line terminator (for `row_too_long`:
    /// its first `max_row_bytes` bytes).
    pub raw: Vec<u8>,
}

/// A file that cannot be read as Sluice CSV at all; it is set aside, not loaded.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FileError {
    #[error("the file is empty (expected at least the header line)")]
    Empty,
    #[error("the first line is not the Sluice header: expected `{expected}`, found `{found}`")]
    BadHeader { expected: String, found: String },
    #[error(
        "the file looks binary (its header line holds a NUL byte at offset {offset}), not CSV text"
    )]
    Binary { offset: usize },
    #[error("the header does not fit the pipeline's schema: {problem}")]
    HeaderMismatch { problem: String },
    #[error(
        "{rejected} of {rows} rows (starting at line {first_line}) were rejected, more than \
         worker.maxRejectShare ({limit}); the file is set aside whole instead of filling \
         quarantine (first reject: line {example_line}, {example})"
    )]
    RejectShareExceeded {
        rejected: u64,
        rows: u64,
        first_line: u64,
        /// The configured share, as written.
        limit: String,
        example_line: u64,
        example: String,
    },
    #[error("the file cannot be decompressed ({compression}): {problem}")]
    BadCompression {
        compression: &'static str,
        problem: String,
    },
}

impl FileError {
    /// Stable code recorded in the ledger and used as a metric label.
    pub fn code(&self) -> &'static str {
        match self {
            FileError::Empty => "empty_file",
            FileError::BadHeader { .. } | FileError::HeaderMismatch { .. } => "bad_header",
            FileError::RejectShareExceeded { .. } => "reject_share_exceeded",
            FileError::Binary { .. } => "binary_file",
            FileError::BadCompression { .. } => "bad_compression",
        }
    }
}

/// When a part ends and how its valid rows are handed on.
#[derive(Debug, Clone)]
pub struct PartLimits {
    /// Stop after the record that brings the input consumed by this part to >= this many bytes.
    pub max_input_bytes: u64,
    /// Stop after the record that brings the summed raw bytes of this part's rejects to >= this.
    pub max_reject_bytes: u64,
    /// Hand valid rows to the sink in chunks of about this many bytes of COPY text.
    pub copy_chunk_bytes: usize,
}

/// What one part of a file held.
#[derive(Debug, Default)]
pub struct PartSummary {
    /// Where the next part starts (byte offset just after the last record consumed, and its line number).
    pub end: Position,
    /// True when the file ends at `end` (no more parts).
    pub at_eof: bool,
    pub valid_rows: u64,
    pub data_rows: u64,
    pub rejects: Vec<Rejected>,
    /// Only when rules.collect_event_ids.
    pub event_ids: Vec<uuid::Uuid>,
    /// Valid rows that cleaning changed, by column and rule.
    pub cleaned: Cleaned,
}

#[derive(Debug, thiserror::Error)]
pub enum ParseError {
    #[error(transparent)]
    File(#[from] FileError),
    #[error("reading the file failed: {0}")]
    Io(#[from] std::io::Error),
    #[error("the COPY stream was closed")]
    SinkClosed,
    #[error("a part after the first needs the file's layout (read_layout)")]
    NoLayout,
}

/// Longest header excerpt quoted in a `bad_header` error.
const HEADER_EXCERPT_BYTES: usize = 200;
/// Room for one row beyond a COPY chunk, so that the chunk buffer does not reallocate.
const COPY_ROW_SLACK: usize = 4096;
/// Cap on the COPY buffer reserved up front (it still grows to a chunk if needed).
const MAX_COPY_RESERVE: usize = 8 * 1024 * 1024;

/// Reads records from `input`, which is positioned at `start.offset`, validates them and
/// passes the valid rows as COPY text in chunks to `sink` (an Err from sink stops with
/// SinkClosed). At Position::START the BOM, emptiness and header are checked first.
pub fn parse_part(
    input: &mut dyn Read,
    start: Position,
    rules: &Rules,
    limits: &PartLimits,
    sink: &mut dyn FnMut(Vec<u8>) -> Result<(), ()>,
) -> Result<PartSummary, ParseError> {
    parse_part_with(input, start, rules, limits, sink, READ_SIZE)
}

/// The format of a landing file's (decompressed) bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Format {
    /// CSV with a header line.
    #[default]
    Csv,
    /// One JSON object per line ([`ndjson`]).
    Ndjson,
}

/// [`parse_part`] for a file of the given format.
pub fn parse_part_as(
    format: Format,
    input: &mut dyn Read,
    start: Position,
    rules: &Rules,
    limits: &PartLimits,
    sink: &mut dyn FnMut(Vec<u8>) -> Result<(), ()>,
) -> Result<PartSummary, ParseError> {
    match format {
        Format::Csv => parse_part(input, start, rules, limits, sink),
        Format::Ndjson => ndjson::parse_part(input, start, rules, limits, sink, READ_SIZE),
    }
}

/// [`parse_file`] for a file of the given format.
pub fn parse_file_as(format: Format, bytes: &[u8], rules: &Rules) -> Result<ParsedFile, FileError> {
    match format {
        Format::Csv => parse_file(bytes, rules),
        Format::Ndjson => collect_whole(bytes.len(), |sink, limits| {
            let mut input = bytes;
            ndjson::parse_part(&mut input, Position::START, rules, limits, sink, READ_SIZE)
        }),
    }
}

/// Runs a parse of a whole file in one part, gathering its COPY text.
fn collect_whole(
    input_len: usize,
    parse: impl FnOnce(
        &mut dyn FnMut(Vec<u8>) -> Result<(), ()>,
        &PartLimits,
    ) -> Result<PartSummary, ParseError>,
) -> Result<ParsedFile, FileError> {
    let limits = PartLimits {
        max_input_bytes: u64::MAX,
        max_reject_bytes: u64::MAX,
        copy_chunk_bytes: usize::MAX,
    };
    let mut copy_rows = Vec::with_capacity(input_len);
    let mut sink = |chunk: Vec<u8>| {
        if copy_rows.is_empty() {
            copy_rows = chunk;
        } else {
            copy_rows.extend_from_slice(&chunk);
        }
        Ok(())
    };
    match parse(&mut sink, &limits) {
        Ok(part) => Ok(ParsedFile {
            copy_rows,
            valid_rows: part.valid_rows,
            event_ids: part.event_ids,
            rejects: part.rejects,
            data_rows: part.data_rows,
            cleaned: part.cleaned,
        }),
        Err(ParseError::File(e)) => Err(e),
        // Reading a slice never fails and the sink above never refuses a chunk.
        Err(e @ (ParseError::Io(_) | ParseError::SinkClosed | ParseError::NoLayout)) => {
            unreachable!("parsing bytes in memory failed: {e}")
        }
    }
}

/// [`parse_part`] with a chosen read size (tests shrink it to cross every boundary).
fn parse_part_with(
    input: &mut dyn Read,
    start: Position,
    rules: &Rules,
    limits: &PartLimits,
    sink: &mut dyn FnMut(Vec<u8>) -> Result<(), ()>,
    read_size: usize,
) -> Result<PartSummary, ParseError> {
    let reader = RecordReader::new(input, start, rules.max_row_bytes, read_size);
    let reserve = limits
        .copy_chunk_bytes
        .min(MAX_COPY_RESERVE)
        .saturating_add(COPY_ROW_SLACK);
    parse_records(reader, start, rules, limits, sink, reserve)
}

/// Parses and validates a whole file held in memory (same rules as [`parse_part`], in
/// one part).
pub fn parse_file(bytes: &[u8], rules: &Rules) -> Result<ParsedFile, FileError> {
    parse_file_with(bytes, rules, READ_SIZE)
}

fn parse_file_with(bytes: &[u8], rules: &Rules, read_size: usize) -> Result<ParsedFile, FileError> {
    // parse_records reserves the COPY buffer itself; the first chunk becomes the result.
    let reserve = bytes.len() + bytes.len() / 8;
    collect_whole(0, |sink, limits| {
        let mut input = bytes;
        let reader = RecordReader::new(&mut input, Position::START, rules.max_row_bytes, read_size);
        parse_records(reader, Position::START, rules, limits, sink, reserve)
    })
}

/// The part loop shared by [`parse_part`] and [`parse_file`]; `reserve` is the COPY
/// buffer's initial capacity.
fn parse_records(
    mut reader: RecordReader<'_>,
    start: Position,
    rules: &Rules,
    limits: &PartLimits,
    sink: &mut dyn FnMut(Vec<u8>) -> Result<(), ()>,
    reserve: usize,
) -> Result<PartSummary, ParseError> {
    reader.set_dialect(rules.csv.dialect);
    let mut layout = rules.schema.as_ref().and_then(|d| d.layout.clone());
    if start == Position::START {
        layout = check_header(&mut reader, rules)?;
    }

    let declared = match (&rules.schema, &layout) {
        (None, _) => None,
        (Some(d), Some(l)) => {
            reader.set_columns(l.fields);
            Some((&*d.compiled, l))
        }
        (Some(_), None) => return Err(ParseError::NoLayout),
    };
    let mut row_cleaning = general::RowCleaning::new();
    let future_limit = rules.now + rules.future_tolerance;
    let mut fields = FieldBuf::with_dialect(rules.csv.dialect);
    let mut copy = Vec::with_capacity(reserve);
    let mut part = PartSummary::default();
    let mut reject_bytes = 0u64;
    let at_eof = loop {
        let Some(record) = reader.next_record()? else {
            break true;
        };
        let rejected = match record {
            Record::Row { bytes: [], .. } => continue,
            Record::Row {
                bytes,
                line,
                quoted,
            } => {
                let row_start = copy.len();
                let fields = fields.split(bytes, quoted);
                let checked = match declared {
                    None => row::check_row(&fields, bytes, rules, future_limit, &mut copy).map(
                        |(event_id, cleaning)| {
                            part.cleaned.add_row(cleaning);
                            Some(event_id)
                        },
                    ),
                    Some((schema, layout)) => schema
                        .check_row(
                            layout,
                            &fields,
                            bytes,
                            rules.now,
                            RowOut::start(&mut copy, rules.copy_format, schema.width()),
                            &mut row_cleaning,
                        )
                        .map(|()| {
                            part.cleaned.add_declared_row(schema, &row_cleaning);
                            None
                        }),
                };
                match checked {
                    Ok(event_id) => {
                        part.valid_rows += 1;
                        if rules.collect_event_ids
                            && let Some(id) = event_id
                        {
                            part.event_ids.push(id);
                        }
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
            Record::BadQuote {
                bytes,
                line,
                problem,
            } => Some(bad_quote(
                bytes,
                line,
                problem,
                declared.map_or(COLUMN_COUNT, |(_, l)| l.fields),
            )),
            Record::TooLong { head, len, line } => Some(too_long(head, len, line)),
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
    if !copy.is_empty() {
        sink(copy).map_err(|()| ParseError::SinkClosed)?;
    }
    part.end = reader.position();
    part.at_eof = at_eof;
    check_reject_share(&part, start, rules)?;
    Ok(part)
}

/// Refuses a part (a small file is one part) whose share of rejected rows exceeds
/// `rules.max_reject_share`.
pub(crate) fn check_reject_share(
    part: &PartSummary,
    start: Position,
    rules: &Rules,
) -> Result<(), FileError> {
    let (Some(limit), Some(first)) = (rules.max_reject_share, part.rejects.first()) else {
        return Ok(());
    };
    let rejected = part.rejects.len() as u64;
    if part.data_rows == 0 || rejected as f64 / part.data_rows as f64 <= limit {
        return Ok(());
    }
    Err(FileError::RejectShareExceeded {
        rejected,
        rows: part.data_rows,
        first_line: start.line,
        limit: limit.to_string(),
        example_line: first.line,
        example: format!("{}: {}", first.reason, first.message),
    })
}

/// Checks the start of a file: a BOM is skipped, blank lines before the header too; the
/// first other line must be the header.
fn check_header(
    reader: &mut RecordReader<'_>,
    rules: &Rules,
) -> Result<Option<general::Layout>, ParseError> {
    reader.skip_bom()?;
    if !rules.csv.header {
        return Ok(rules.schema.as_ref().map(|d| d.compiled.position_layout()));
    }
    let mut fields = FieldBuf::with_dialect(rules.csv.dialect);
    // A first line of only spaces or tabs: the file is empty if nothing else follows.
    let mut whitespace_line: Option<Vec<u8>> = None;
    loop {
        let offset = reader.position().offset;
        let Some(record) = reader.next_record()? else {
            return Err(FileError::Empty.into());
        };
        let (bytes, complete_row) = match &record {
            Record::Row { bytes: [], .. } => continue,
            Record::Row { bytes, .. } if bytes.iter().all(u8::is_ascii_whitespace) => {
                whitespace_line.get_or_insert_with(|| bytes.to_vec());
                continue;
            }
            Record::Row { bytes, .. } => (*bytes, true),
            Record::BadQuote { bytes, .. } => (*bytes, false),
            Record::TooLong { head, .. } => (head.as_slice(), false),
        };
        let bad_header = |found: &[u8]| FileError::BadHeader {
            expected: match &rules.schema {
                Some(d) => d
                    .compiled
                    .schema
                    .columns
                    .iter()
                    .map(|c| c.source_name())
                    .collect::<Vec<_>>()
                    .join(","),
                None => HEADER_FIELDS.join(","),
            },
            found: row::excerpt(found, HEADER_EXCERPT_BYTES),
        };
        if let Some(first) = whitespace_line {
            return Err(bad_header(&first).into());
        }
        if let Some(at) = memchr::memchr(0, bytes) {
            let offset = usize::try_from(offset).unwrap_or(usize::MAX);
            return Err(FileError::Binary {
                offset: offset.saturating_add(at),
            }
            .into());
        }
        let quoted = matches!(record, Record::Row { quoted: true, .. });
        if let Some(declared) = &rules.schema {
            if !complete_row {
                return Err(bad_header(bytes).into());
            }
            return declared
                .compiled
                .layout(&fields.split(bytes, quoted))
                .map(Some)
                .map_err(|problem| FileError::HeaderMismatch { problem }.into());
        }
        if !complete_row || !matches_header(&fields.split(bytes, quoted)) {
            return Err(bad_header(bytes).into());
        }
        return Ok(None);
    }
}

/// The layout of a file with a declared schema, read from its header (for parts that
/// start later in the file).
pub fn read_layout(input: &mut dyn Read, rules: &Rules) -> Result<general::Layout, ParseError> {
    let mut reader = RecordReader::new(input, Position::START, rules.max_row_bytes, READ_SIZE);
    reader.set_dialect(rules.csv.dialect);
    check_header(&mut reader, rules)?.ok_or(ParseError::NoLayout)
}

fn matches_header(fields: &Fields<'_>) -> bool {
    fields.len() == COLUMN_COUNT
        && HEADER_FIELDS
            .iter()
            .enumerate()
            .all(|(i, name)| fields.get(i).trim_ascii() == name.as_bytes())
}

/// The rejection of a line whose quoted field does not close properly (unless the line
/// has a more basic problem).
fn bad_quote(bytes: &[u8], line: u64, problem: QuoteProblem, columns: usize) -> Rejected {
    let (reason, message) = row::check_text(bytes).err().unwrap_or_else(|| {
        let why = match problem {
            QuoteProblem::NeverClosed => {
                "a quoted field opened on this line is never closed (the file ends inside it)"
                    .to_owned()
            }
            QuoteProblem::NotClosedWithin { limit } => format!(
                "a quoted field opened on this line is not closed within the row limit of {limit} bytes"
            ),
            QuoteProblem::WrongColumns { columns: found, lines } => format!(
                "a quoted field opened on this line does not close properly: \
                 closing it makes a row of {lines} lines with {found} columns instead of {columns}"
            ),
        };
        (
            RejectReason::WrongColumnCount,
            format!("{why}; only this line is rejected, the next line is read as a new row"),
        )
    });
    Rejected {
        line,
        reason,
        message,
        raw: bytes.to_vec(),
    }
}

fn too_long(head: Vec<u8>, len: u64, line: u64) -> Rejected {
    let limit = head.len();
    Rejected {
        line,
        reason: RejectReason::RowTooLong,
        message: format!(
            "the row is {len} bytes long; at most {limit} are allowed (raw holds its first {limit} bytes)"
        ),
        raw: head,
    }
}
