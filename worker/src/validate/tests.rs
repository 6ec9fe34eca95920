//! Row-level rules: every reason, check order, quoting, NUL bytes, the row size limit.

use super::*;
use sluice_core::event::{HEADER, MAX_TEXT_FIELD_BYTES};

const UTF8_BOM: &[u8] = b"\xEF\xBB\xBF";

const ID: &str = "0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d";
const GOOD: &str =
    "0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d,2026-11-25T05:40:51.123Z,42,s-1,purchase,7,books,12.50,2";

fn rules() -> Rules {
    Rules::for_tests()
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
        format!("{ID}\t2026-11-25T05:40:51.123000000Z\t42\ts-1\tpurchase\t7\tbooks\t12.50\t2\n")
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
        (row_with(4, "vi ew"), UnknownEventType), // case and padding are cleaned, see clean_tests
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
fn a_nul_in_a_data_row_quarantines_only_that_row() {
    let nul_row = row_with(6, "a\u{0}b");
    let parsed = parse(&file(&[GOOD, &nul_row, GOOD]));
    assert_eq!((parsed.valid_rows, parsed.data_rows), (2, 3));
    assert_eq!(parsed.rejects.len(), 1);
    let r = &parsed.rejects[0];
    assert_eq!((r.line, r.reason), (3, RejectReason::InvalidUtf8));
    assert_eq!(r.raw, nul_row.as_bytes(), "the exact bytes, NUL included");
    assert!(r.message.contains("NUL"), "{}", r.message);
    assert!(!parsed.copy_rows.contains(&0));
}

#[test]
fn quoted_fields_may_hold_commas_quotes_and_newlines() {
    let row =
        format!("{ID},2026-11-25T05:40:51Z,42,\"s,1\",view,7,\"line1\nline2 \"\"q\"\"\",1.00,0");
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
    // Only a NUL in the header line makes a file binary; a PNG's first line has none.
    let err = parse_file(b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR", &rules()).expect_err("png");
    assert_eq!(err.code(), "bad_header");
    let err = parse_file(b"\n\x89PNG\x1a\0\0\0\rIHDR", &rules()).expect_err("binary");
    assert_eq!(err, FileError::Binary { offset: 6 });
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
fn an_unterminated_quote_is_one_rejected_line() {
    let text = format!("{HEADER}\n{GOOD}\n{ID},\"oops,1\n{GOOD}\n");
    let parsed = parse(text.as_bytes());
    assert_eq!((parsed.valid_rows, parsed.data_rows), (2, 3));
    assert_eq!(parsed.rejects.len(), 1);
    let r = &parsed.rejects[0];
    assert_eq!((r.line, r.reason), (3, RejectReason::WrongColumnCount));
    assert!(r.message.contains("never closed"), "{}", r.message);
    assert_eq!(r.raw, format!("{ID},\"oops,1").as_bytes());
}

#[test]
fn a_ten_megabyte_line_within_the_row_limit_is_rejected_whole_and_the_next_row_still_loads() {
    let huge = "z".repeat(10 * 1024 * 1024);
    let rules = Rules {
        max_row_bytes: 16 * 1024 * 1024,
        schema: None,
        csv: Default::default(),
        ..rules()
    };
    let parse = |bytes: &[u8]| parse_file(bytes, &rules).expect("file parses");
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

#[test]
fn a_stray_quote_inside_a_field_is_a_literal_character() {
    // Before: the quote in row 1 opened a "quoted field" that swallowed the whole file.
    let pipes = row_with(6, "12\" pipes");
    let parsed = parse(&file(&[&pipes, GOOD, GOOD, GOOD]));
    assert!(parsed.rejects.is_empty(), "{:?}", parsed.rejects);
    assert_eq!((parsed.valid_rows, parsed.data_rows), (4, 4));
    let text = String::from_utf8(parsed.copy_rows).expect("utf8");
    assert_eq!(text.lines().count(), 4);
    assert!(
        text.lines()
            .next()
            .expect("row 1")
            .contains("\t12\" pipes\t"),
        "{text}"
    );
    // Also when the field before it is quoted and after a quoted part closes.
    let text = copy_text_of(&row_with(6, "\"a\"b\"c").replace("s-1", "\"s,1\""));
    assert!(
        text.contains("\ts,1\t") && text.contains("\tab\"c\t"),
        "{text}"
    );
}

#[test]
fn an_unterminated_quote_at_the_start_of_a_line_costs_only_that_line() {
    let bad = format!("\"{GOOD}");
    // Line 3 of a file with 6 data rows.
    let parsed = parse(&file(&[GOOD, &bad, GOOD, GOOD, GOOD, GOOD]));
    assert_eq!((parsed.valid_rows, parsed.data_rows), (5, 6));
    assert_eq!(parsed.rejects.len(), 1);
    let r = &parsed.rejects[0];
    assert_eq!((r.line, r.reason), (3, RejectReason::WrongColumnCount));
    assert_eq!(r.raw, bad.as_bytes(), "only its own line");
    assert!(r.message.contains("quote"), "{}", r.message);
}

#[test]
fn a_quote_that_closes_lines_later_with_the_wrong_column_count_costs_only_its_first_line() {
    // The quote opened in line 3 "closes" at the stray quote of line 5: that record
    // would have 6 columns, so only line 3 is rejected and lines 4 and 5 are rows.
    let opens = row_with(3, "\"s-1");
    let pipes = row_with(6, "12\" pipes");
    let bad = row_with(8, "-1");
    let parsed = parse(&file(&[GOOD, &opens, GOOD, &pipes, &bad]));
    assert_eq!((parsed.valid_rows, parsed.data_rows), (3, 5));
    let got: Vec<(u64, RejectReason)> = parsed.rejects.iter().map(|r| (r.line, r.reason)).collect();
    assert_eq!(
        got,
        vec![
            (3, RejectReason::WrongColumnCount),
            (6, RejectReason::NegativeQuantity)
        ]
    );
    let r = &parsed.rejects[0];
    assert_eq!(r.raw, opens.as_bytes());
    assert!(
        r.message.contains("does not close properly"),
        "{}",
        r.message
    );
    assert!(
        r.message.contains("3 lines with 6 columns"),
        "{}",
        r.message
    );
}

#[test]
fn a_multi_line_record_must_close_within_the_row_limit() {
    let rules = Rules {
        max_row_bytes: 300,
        schema: None,
        csv: Default::default(),
        ..rules()
    };
    // A valid row whose quoted category spans 3 lines, over 300 bytes in all: refused.
    let long_cat = format!(
        "\"{}\n{}\n{}\"",
        "a".repeat(80),
        "b".repeat(80),
        "c".repeat(80)
    );
    let row = row_with(6, &long_cat);
    assert!(row.len() > 300);
    let short = row_with(6, "\"a\nb\"");
    let parsed = parse_file(&file(&[&short, &row, GOOD]), &rules).expect("parses");
    assert_eq!(parsed.valid_rows, 2, "{:?}", parsed.rejects);
    let r = &parsed.rejects[0];
    assert_eq!((r.line, r.reason), (4, RejectReason::WrongColumnCount));
    assert!(r.message.contains("not closed within"), "{}", r.message);
    // The quoted field's other lines are read as rows of their own.
    let lines: Vec<u64> = parsed.rejects.iter().map(|r| r.line).collect();
    assert_eq!(lines, vec![4, 5, 6]);
    assert_eq!(parsed.data_rows, 5);
}

#[test]
fn a_row_longer_than_the_limit_keeps_only_its_head_as_evidence() {
    let rules = Rules {
        max_row_bytes: 1024,
        schema: None,
        csv: Default::default(),
        ..rules()
    };
    let long = row_with(6, &"x".repeat(5000));
    let bad = row_with(8, "-1");
    let mut bytes = file(&[GOOD]);
    bytes.extend_from_slice(format!("{long}\r\n{bad}\r\n").as_bytes());
    let parsed = parse_file(&bytes, &rules).expect("parses");
    assert_eq!((parsed.valid_rows, parsed.data_rows), (1, 3));
    let r = &parsed.rejects[0];
    assert_eq!((r.line, r.reason), (3, RejectReason::RowTooLong));
    assert_eq!(r.raw, &long.as_bytes()[..1024]);
    let len = long.len();
    for part in [
        format!("{len} bytes"),
        "1024".into(),
        "first 1024 bytes".into(),
    ] {
        assert!(r.message.contains(&part), "{part:?} in {}", r.message);
    }
    assert_eq!(parsed.rejects[1].line, 4, "the next line is a row again");
    // The limit counts the row without its terminator; a field too long stays that.
    let exact = row_with(6, &"y".repeat(1024 - GOOD.len() + "books".len()));
    assert_eq!(exact.len(), 1024);
    let over = row_with(6, &"y".repeat(200));
    let parsed = parse_file(&file(&[&exact, &over]), &rules).expect("parses");
    let got: Vec<RejectReason> = parsed.rejects.iter().map(|r| r.reason).collect();
    assert_eq!(got, vec![RejectReason::FieldTooLong; 2]);
}

#[test]
fn a_long_line_with_an_unclosed_quote_is_too_long_not_the_rest_of_the_file() {
    let rules = Rules {
        max_row_bytes: 1024,
        schema: None,
        csv: Default::default(),
        ..rules()
    };
    let long = format!("{ID},\"{}", "q".repeat(3000));
    let parsed = parse_file(&file(&[&long, GOOD, GOOD]), &rules).expect("parses");
    assert_eq!(parsed.valid_rows, 2);
    assert_eq!(parsed.rejects[0].reason, RejectReason::RowTooLong);
    assert_eq!(parsed.rejects[0].raw.len(), 1024);
}

#[test]
fn only_a_nul_in_the_header_makes_the_file_binary() {
    let mut header = HEADER.as_bytes().to_vec();
    header.insert(5, 0);
    let mut bytes = UTF8_BOM.to_vec();
    bytes.extend_from_slice(&header);
    bytes.extend_from_slice(format!("\n{GOOD}\n").as_bytes());
    assert_eq!(
        parse_file(&bytes, &rules()).err(),
        Some(FileError::Binary { offset: 8 })
    );
}

#[test]
fn whitespace_only_lines_before_the_header() {
    assert_eq!(
        parse_file(b" \n\t\r\n\n", &rules()).err(),
        Some(FileError::Empty)
    );
    let err = parse_file(format!("  \n{HEADER}\n").as_bytes(), &rules()).expect_err("bad");
    assert_eq!(err.code(), "bad_header");
    let parsed = parse(format!("\n\r\n{HEADER}\n{GOOD}\n").as_bytes());
    assert_eq!(parsed.valid_rows, 1);
}

#[test]
fn a_quoted_header_and_a_header_with_an_unclosed_quote() {
    let quoted = HEADER.replace("user_id", "\"user_id\"");
    assert_eq!(
        parse(format!("{quoted}\n{GOOD}\n").as_bytes()).valid_rows,
        1
    );
    let unclosed = HEADER.replace("quantity", "\"quantity");
    let err = parse_file(format!("{unclosed}\n{GOOD}\n").as_bytes(), &rules()).expect_err("bad");
    assert_eq!(err.code(), "bad_header");
}

#[test]
fn a_byte_order_mark_after_the_start_is_data() {
    let with_bom = format!("\u{feff}{GOOD}");
    assert_eq!(reason_of(&with_bom), Some(RejectReason::BadEventId));
}

#[test]
fn a_file_over_the_reject_share_is_refused_whole_and_one_under_it_loads() {
    let bad = row_with(4, "refund");
    let rules = Rules {
        max_reject_share: Some(0.5),
        ..Rules::for_tests()
    };
    let over = file(&[GOOD, &bad, &bad, &bad]);
    match parse_file(&over, &rules) {
        Err(
            e @ FileError::RejectShareExceeded {
                rejected: 3,
                rows: 4,
                ..
            },
        ) => {
            assert_eq!(e.code(), "reject_share_exceeded");
            let message = e.to_string();
            assert!(
                message.contains("3 of 4") && message.contains("unknown_event_type"),
                "{message}"
            );
        }
        other => panic!("expected reject_share_exceeded, got {other:?}"),
    }
    let at_limit = file(&[GOOD, GOOD, &bad, &bad]);
    let parsed = parse_file(&at_limit, &rules).expect("exactly half is not over");
    assert_eq!((parsed.valid_rows, parsed.rejects.len()), (2, 2));
    // Off by default: the same file loads what it can.
    assert_eq!(parse(&over).valid_rows, 1);
}
