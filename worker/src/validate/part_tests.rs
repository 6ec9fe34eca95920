//! Parsing in parts: wherever a file is split and however small the reads, the parts
//! together give exactly what parsing the whole file gives.

use super::*;
use crate::records::READ_SIZE;
use sluice_core::event::HEADER;

const MAX_ROW: usize = 600;

fn rules() -> Rules {
    Rules {
        max_row_bytes: MAX_ROW,
        ..Rules::for_tests()
    }
}

/// A file being built, with what parsing it must find.
struct Expected {
    bytes: Vec<u8>,
    /// Line number of the next line written.
    line: u64,
    next_id: u64,
    valid: u64,
    rejects: Vec<(u64, RejectReason)>,
}

impl Expected {
    fn new(bom: bool) -> Self {
        let mut bytes = if bom {
            b"\xEF\xBB\xBF".to_vec()
        } else {
            Vec::new()
        };
        bytes.extend_from_slice(format!("{HEADER}\n").as_bytes());
        Expected {
            bytes,
            line: 2,
            next_id: 0,
            valid: 0,
            rejects: Vec::new(),
        }
    }

    /// A valid row (fresh id) with `session` and `category` as written.
    fn good(&mut self, session: &str, category: &str) -> Vec<u8> {
        self.next_id += 1;
        let n = self.next_id;
        let id = Uuid::from_u64_pair(0xfeed, n);
        format!("{id},2026-11-25T05:40:51.{n:03}Z,{n},{session},view,7,{category},12.50,0")
            .into_bytes()
    }

    fn row(&mut self, row: &[u8], eol: &str, reject: Option<RejectReason>) {
        match reject {
            None => self.valid += 1,
            Some(reason) => self.rejects.push((self.line, reason)),
        }
        self.line += 1 + memchr::memchr_iter(b'\n', row).count() as u64;
        self.bytes.extend_from_slice(row);
        self.bytes.extend_from_slice(eol.as_bytes());
    }

    fn plain(&mut self, eol: &str) {
        let row = self.good("s-1", "books");
        self.row(&row, eol, None);
    }

    fn blank(&mut self, eol: &str) {
        self.line += 1;
        self.bytes.extend_from_slice(eol.as_bytes());
    }

    /// One round of every kind of record the parser knows.
    fn round(&mut self) {
        use RejectReason::*;
        self.plain("\n");
        self.plain("\r\n");
        self.blank("\n");
        self.blank("\r\n");
        let mut bad = self.good("s-1", "books");
        bad.extend_from_slice(b"x");
        self.row(&bad, "\n", Some(BadQuantity));
        let pipes = self.good("s-1", "12\" pipes");
        self.row(&pipes, "\r\n", None);
        let multi = self.good("\"s,1\"", "\"multi\r\nline, \"\"q\"\"\"");
        self.row(&multi, "\n", None);
        // An escaped quote right before a quoted line break: the record goes on.
        let multi = self.good("\"x \"\"y\"\"\nz\"", "books");
        self.row(&multi, "\n", None);
        let multi = self.good("\"a\nb\nc\"", "\"\"");
        self.row(&multi, "\r\n", Some(MissingField));
        // A quote that never closes within the limit: only its line is lost.
        let mut unclosed = b"\"".to_vec();
        unclosed.extend(self.good("s-1", "books"));
        self.row(&unclosed, "\n", Some(WrongColumnCount));
        for _ in 0..7 {
            self.plain("\n");
        }
        // A quote that "closes" two lines later on a stray quote, with 6 columns.
        let opens = self.good("\"s-1", "books");
        self.row(&opens, "\n", Some(WrongColumnCount));
        self.plain("\r\n");
        let pipes = self.good("s-1", "12\" pipes");
        self.row(&pipes, "\n", None);
        let nul = self.good("s-1", "bo\0oks");
        self.row(&nul, "\n", Some(InvalidUtf8));
        let mut latin1 = self.good("s-1", "caf");
        latin1.insert(latin1.len() - 9, 0xe9);
        self.row(&latin1, "\n", Some(InvalidUtf8));
        let long = self.good("s-1", &"x".repeat(2000));
        self.row(&long, "\r\n", Some(RowTooLong));
        let mut long_quote = self.good("s-1", "\"");
        long_quote.extend_from_slice("q".repeat(1500).as_bytes());
        self.row(&long_quote, "\n", Some(RowTooLong));
        // A row of exactly the limit is read; its long field is what is wrong.
        let probe = self.good("s-1", "Y");
        let padding = "y".repeat(MAX_ROW - probe.len() + 1);
        let limit = String::from_utf8(probe)
            .expect("utf8")
            .replace('Y', &padding);
        let limit = limit.into_bytes();
        assert_eq!(limit.len(), MAX_ROW);
        self.row(&limit, "\r\n", Some(FieldTooLong));
        self.row(b"just,three,fields", "\n", Some(WrongColumnCount));
        self.plain("\n");
    }
}

/// Variants of one varied file: with or without a BOM, and different endings.
fn varied_files() -> Vec<(Vec<u8>, Expected)> {
    let mut files = Vec::new();
    for (i, tail) in ["", "\n", "\r\n\n", "\r"].into_iter().enumerate() {
        let mut f = Expected::new(i % 2 == 1);
        for _ in 0..3 {
            f.round();
        }
        let last = f.good("s-1", "last");
        f.row(&last, "", None);
        f.bytes.extend_from_slice(tail.as_bytes());
        files.push((f.bytes.clone(), f));
    }
    files
}

/// A reader that hands out at most `.1` bytes per read, so that every record, quote
/// and line end meets a buffer boundary somewhere.
struct Trickle<'a>(&'a [u8], usize);

impl Read for Trickle<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = buf.len().min(self.1).min(self.0.len());
        buf[..n].copy_from_slice(&self.0[..n]);
        self.0 = &self.0[n..];
        Ok(n)
    }
}

/// All that parsing found, whichever way it was done.
#[derive(Debug, Default, PartialEq)]
struct Outcome {
    copy: Vec<u8>,
    valid: u64,
    data: u64,
    rejects: Vec<Rejected>,
    ids: Vec<Uuid>,
    end: Position,
}

/// Parses `bytes` part after part, each from a fresh reader positioned at the previous
/// part's end. Returns the outcome and the number of parts.
fn in_parts(bytes: &[u8], limits: &PartLimits, read_size: usize, trickle: usize) -> (Outcome, u64) {
    let mut out = Outcome::default();
    let mut start = Position::START;
    let mut parts = 0;
    loop {
        parts += 1;
        let offset = usize::try_from(start.offset).expect("offset");
        let mut input = Trickle(&bytes[offset..], trickle);
        let chunk_max = limits.copy_chunk_bytes.saturating_add(1024);
        let mut sink = |chunk: Vec<u8>| {
            assert!(
                !chunk.is_empty() && chunk.len() < chunk_max,
                "{}",
                chunk.len()
            );
            out.copy.extend_from_slice(&chunk);
            Ok(())
        };
        let part = parse_part_with(&mut input, start, &rules(), limits, &mut sink, read_size)
            .expect("part parses");
        out.valid += part.valid_rows;
        out.data += part.data_rows;
        out.rejects.extend(part.rejects);
        out.ids.extend(part.event_ids);
        assert!(part.end.offset > start.offset, "every part makes progress");
        start = part.end;
        if part.at_eof {
            assert_eq!(part.end.offset, bytes.len() as u64);
            out.end = part.end;
            return (out, parts);
        }
        assert!(part.end.offset < bytes.len() as u64, "more to come");
    }
}

const UNLIMITED: PartLimits = PartLimits {
    max_input_bytes: u64::MAX,
    max_reject_bytes: u64::MAX,
    copy_chunk_bytes: usize::MAX,
};

#[test]
fn the_varied_file_parses_as_expected() {
    for (bytes, expected) in varied_files() {
        let parsed = parse_file(&bytes, &rules()).expect("parses");
        let got: Vec<(u64, RejectReason)> =
            parsed.rejects.iter().map(|r| (r.line, r.reason)).collect();
        assert_eq!(got, expected.rejects);
        assert_eq!(parsed.valid_rows, expected.valid);
        assert_eq!(parsed.data_rows, expected.valid + got.len() as u64);
        assert_eq!(parsed.event_ids.len() as u64, expected.valid);
        let (whole, parts) = in_parts(&bytes, &UNLIMITED, READ_SIZE, usize::MAX);
        assert_eq!(parts, 1);
        assert_eq!(whole.copy, parsed.copy_rows);
        // Every physical line counts, an unterminated last one (even a lone CR) too.
        let lines = memchr::memchr_iter(b'\n', &bytes).count() as u64;
        let unterminated = u64::from(!bytes.ends_with(b"\n"));
        assert_eq!(whole.end.line, 1 + lines + unterminated);
    }
}

#[test]
fn any_read_size_gives_the_same_result() {
    for (bytes, _) in varied_files() {
        let reference = parse_file(&bytes, &rules()).expect("parses");
        for read_size in [1, 2, 3, 7, 64, 1000] {
            let parsed = parse_file_with(&bytes, &rules(), read_size).expect("parses");
            let (trickled, _) = in_parts(&bytes, &UNLIMITED, read_size, 1);
            assert_eq!(
                trickled.copy, reference.copy_rows,
                "read size {read_size}, 1 byte a read"
            );
            assert_eq!(trickled.rejects, reference.rejects);
            assert_eq!(
                parsed.copy_rows, reference.copy_rows,
                "read size {read_size}"
            );
            assert_eq!(parsed.rejects, reference.rejects, "read size {read_size}");
            assert_eq!(parsed.event_ids, reference.event_ids);
            assert_eq!(
                (parsed.valid_rows, parsed.data_rows),
                (reference.valid_rows, reference.data_rows)
            );
        }
    }
}

#[test]
fn any_split_into_parts_gives_the_same_result() {
    for (bytes, _) in varied_files() {
        let (reference, _) = in_parts(&bytes, &UNLIMITED, READ_SIZE, usize::MAX);
        let mut combination = 0usize;
        for max_input_bytes in [0, 1, 7, 100, 4096, u64::MAX] {
            for read_size in [1, 5, 64, READ_SIZE] {
                combination += 1;
                let limits = PartLimits {
                    max_input_bytes,
                    max_reject_bytes: [u64::MAX, 1, 3000][combination % 3],
                    copy_chunk_bytes: [1, 300, usize::MAX][combination / 3 % 3],
                };
                let trickle = [1, 3, usize::MAX][combination % 3];
                let (got, parts) = in_parts(&bytes, &limits, read_size, trickle);
                assert_eq!(got, reference, "{limits:?}, read size {read_size}");
                if max_input_bytes <= 1 {
                    assert_eq!(parts, reference.data, "one data row per part");
                }
                if limits.max_reject_bytes == 1 {
                    assert!(parts > reference.rejects.len() as u64, "a part per reject");
                }
            }
        }
    }
}

#[test]
fn a_part_ends_after_the_record_that_reaches_a_limit() {
    let mut f = Expected::new(false);
    f.plain("\n");
    let mut bad = f.good("s-1", "books");
    bad.push(b'x');
    f.row(&bad, "\n", Some(RejectReason::BadQuantity));
    f.plain("\n");
    f.plain("\n");
    let header_end = HEADER.len() + 1;
    let first_row_end =
        header_end + memchr::memchr(b'\n', &f.bytes[header_end..]).expect("row") + 1;

    // The first row reaches 1 input byte (the header is not counted as progress).
    let limits = PartLimits {
        max_input_bytes: 1,
        ..UNLIMITED
    };
    let mut sink = |_: Vec<u8>| Ok(());
    let part = parse_part(
        &mut f.bytes.as_slice(),
        Position::START,
        &rules(),
        &limits,
        &mut sink,
    )
    .expect("part");
    assert_eq!((part.valid_rows, part.data_rows), (1, 1));
    assert!(!part.at_eof);
    assert_eq!(
        part.end,
        Position {
            offset: first_row_end as u64,
            line: 3
        }
    );

    // From there, the reject's bytes reach the reject limit after the second row.
    let limits = PartLimits {
        max_reject_bytes: 10,
        ..UNLIMITED
    };
    let start = part.end;
    let mut input = &f.bytes[usize::try_from(start.offset).expect("offset")..];
    let part = parse_part(&mut input, start, &rules(), &limits, &mut sink).expect("part");
    assert_eq!(
        (part.valid_rows, part.data_rows, part.rejects.len()),
        (0, 1, 1)
    );
    assert_eq!(part.rejects[0].line, 3);
    assert_eq!(part.end.line, 4);
}

#[test]
fn blank_lines_after_the_last_row_end_the_file_with_the_part() {
    let bytes = format!(
        "{HEADER}\n{}\n\r\n\n",
        String::from_utf8(Expected::new(false).good("s", "c")).expect("utf8")
    );
    let limits = PartLimits {
        max_input_bytes: 1,
        ..UNLIMITED
    };
    let mut sink = |_: Vec<u8>| Ok(());
    let part = parse_part(
        &mut bytes.as_bytes(),
        Position::START,
        &rules(),
        &limits,
        &mut sink,
    )
    .expect("part");
    assert!(part.at_eof, "nothing but blank lines follows");
    assert_eq!(part.end.offset, bytes.len() as u64);
    assert_eq!(part.end.line, 5);
}

#[test]
fn a_later_part_does_not_look_for_the_header() {
    let row = String::from_utf8(Expected::new(false).good("s", "c")).expect("utf8");
    let bytes = format!("{row}\n{row}\n");
    let mut sink = |_: Vec<u8>| Ok(());
    let start = Position {
        offset: 1000,
        line: 40,
    };
    let part = parse_part(
        &mut bytes.as_bytes(),
        start,
        &rules(),
        &UNLIMITED,
        &mut sink,
    )
    .expect("part");
    assert_eq!(part.valid_rows, 2);
    assert_eq!(
        part.end,
        Position {
            offset: 1000 + bytes.len() as u64,
            line: 42
        }
    );
    // At the start of a file the same bytes are not a header.
    let err = parse_part(
        &mut bytes.as_bytes(),
        Position::START,
        &rules(),
        &UNLIMITED,
        &mut sink,
    )
    .expect_err("no header");
    assert!(
        matches!(err, ParseError::File(FileError::BadHeader { .. })),
        "{err}"
    );
}

#[test]
fn a_refusing_sink_and_a_failing_read_stop_the_part() {
    let mut f = Expected::new(false);
    f.plain("\n");
    let mut refuse = |_: Vec<u8>| Err(());
    let err = parse_part(
        &mut f.bytes.as_slice(),
        Position::START,
        &rules(),
        &UNLIMITED,
        &mut refuse,
    )
    .expect_err("sink closed");
    assert!(matches!(err, ParseError::SinkClosed), "{err}");

    struct Failing<'a>(&'a [u8]);
    impl Read for Failing<'_> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            if self.0.is_empty() {
                return Err(std::io::Error::other("disk on fire"));
            }
            let n = self.0.read(buf)?;
            Ok(n)
        }
    }
    let mut sink = |_: Vec<u8>| Ok(());
    let err = parse_part(
        &mut Failing(&f.bytes),
        Position::START,
        &rules(),
        &UNLIMITED,
        &mut sink,
    )
    .expect_err("read fails");
    assert!(matches!(err, ParseError::Io(_)), "{err}");
}

#[test]
fn valid_rows_reach_the_sink_in_chunks_of_about_the_chunk_size() {
    let mut f = Expected::new(false);
    for _ in 0..100 {
        f.plain("\n");
    }
    let limits = PartLimits {
        copy_chunk_bytes: 1000,
        ..UNLIMITED
    };
    let mut chunks = Vec::new();
    let mut sink = |chunk: Vec<u8>| {
        chunks.push(chunk.len());
        Ok(())
    };
    let part = parse_part(
        &mut f.bytes.as_slice(),
        Position::START,
        &rules(),
        &limits,
        &mut sink,
    )
    .expect("part");
    assert_eq!(part.valid_rows, 100);
    let (last, full) = chunks.split_last().expect("chunks");
    assert!(
        full.iter().all(|&n| (1000..1200).contains(&n)),
        "{chunks:?}"
    );
    assert!(*last > 0 && *last < 1200);
}

#[test]
fn a_long_line_is_skipped_without_being_buffered() {
    let max_row = 10_000;
    let read_size = 4096;
    let mut f = Expected::new(false);
    f.plain("\r\n");
    let huge = f.good("s-1", &"h".repeat(5 * 1024 * 1024));
    f.row(&huge, "\r\n", Some(RejectReason::RowTooLong));
    let mut unclosed = f.good("s-1", "\"");
    unclosed.extend_from_slice(&vec![b'u'; 3 * 1024 * 1024]);
    f.row(&unclosed, "\n", Some(RejectReason::RowTooLong));
    f.plain("\n");

    let mut input = f.bytes.as_slice();
    let mut reader = RecordReader::new(&mut input, Position::START, max_row, read_size);
    let mut lines = Vec::new();
    while let Some(record) = reader.next_record().expect("reads") {
        match record {
            Record::Row { line, .. } => lines.push((line, None)),
            Record::TooLong { head, len, line } => {
                assert_eq!(head.len(), max_row);
                lines.push((line, Some(len)));
            }
            Record::BadQuote { line, .. } => panic!("line {line}: no bad quote here"),
        }
        assert!(
            reader.buffer_len() <= max_row + 2 + read_size,
            "buffer grew to {}",
            reader.buffer_len()
        );
    }
    let huge_len = Some(huge.len() as u64);
    let unclosed_len = Some(unclosed.len() as u64);
    assert_eq!(
        lines,
        vec![
            (1, None),
            (2, None),
            (3, huge_len),
            (4, unclosed_len),
            (5, None)
        ]
    );
    assert_eq!(reader.position().offset, f.bytes.len() as u64);

    // The same at the very end of a file, without a line terminator (a final CR is one).
    let ending = format!("{HEADER}\n{}\r", "e".repeat(50_000));
    let mut input = Trickle(ending.as_bytes(), 1000);
    let mut reader = RecordReader::new(&mut input, Position::START, max_row, read_size);
    assert!(matches!(
        reader.next_record(),
        Ok(Some(Record::Row { line: 1, .. }))
    ));
    let record = reader.next_record().expect("reads");
    assert_eq!(
        record,
        Some(Record::TooLong {
            head: vec![b'e'; max_row],
            len: 50_000,
            line: 2
        })
    );
    assert_eq!(
        reader.position(),
        Position {
            offset: ending.len() as u64,
            line: 3
        }
    );
    assert!(matches!(reader.next_record(), Ok(None)));
}
