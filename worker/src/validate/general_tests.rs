use std::sync::Arc;

use sluice_core::reject::RejectReason;
use sluice_core::schema::{CleanRule, ColumnSpec, MatchBy, TableSchema, TypeName};

use super::*;
use crate::validate::{DeclaredRules, FileError, Rules, parse_file};

fn orders(match_by: MatchBy) -> TableSchema {
    use CleanRule::*;
    TableSchema {
        table: "Orders".into(),
        match_by,
        key: Some("id".into()),
        columns: vec![
            ColumnSpec {
                clean: vec![Trim, NormalizeUuid],
                ..ColumnSpec::new("id", TypeName::Uuid)
            },
            ColumnSpec {
                precision: Some(8),
                scale: Some(2),
                min: Some("0".into()),
                clean: vec![Trim, NormalizeNumber],
                ..ColumnSpec::new("total", TypeName::Numeric)
            },
            ColumnSpec {
                allowed: vec!["open".into(), "paid".into()],
                default: Some("open".into()),
                clean: vec![Trim, IgnoreCase, EmptyToNull],
                ..ColumnSpec::new("status", TypeName::Text)
            },
            ColumnSpec {
                nullable: true,
                clean: vec![EmptyToNull],
                max_length: Some(5),
                ..ColumnSpec::new("note", TypeName::Text)
            },
            ColumnSpec {
                nullable: true,
                future_tolerance_seconds: Some(60),
                ..ColumnSpec::new("placed", TypeName::Timestamptz)
            },
        ],
    }
}

fn rules(schema: TableSchema) -> Rules {
    Rules {
        now: DateTime::parse_from_rfc3339("2026-12-01T00:00:00Z")
            .expect("literal")
            .with_timezone(&Utc),
        future_tolerance: chrono::Duration::seconds(0),
        collect_event_ids: false,
        schema: Some(DeclaredRules {
            compiled: Arc::new(CompiledSchema::new(schema).expect("valid schema")),
            layout: None,
        }),
        ..Rules::for_tests()
    }
}

const ID: &str = "0123456789abcdef0123456789abcdef";
const ID_COPY: &str = "01234567-89ab-cdef-0123-456789abcdef";

#[test]
fn rows_are_cleaned_checked_and_written_in_table_order() {
    // Header order differs from table order, with an extra field the table ignores.
    let file = format!(
        "status,extra,total,id,note,placed\n\
         \x20PAID ,x,+1_234.5,urn:uuid:{ID},,2026-11-30T10:00:00+01:00\n\
         ,y,0,{ID},hi\\t,\n"
    );
    let parsed = parse_file(file.as_bytes(), &rules(orders(MatchBy::Header))).expect("parses");
    assert_eq!(parsed.rejects, vec![]);
    assert_eq!(
        String::from_utf8(parsed.copy_rows).expect("utf8"),
        format!(
            "{ID_COPY}\t1234.50\tpaid\t\\N\t2026-11-30T09:00:00Z\n\
             {ID_COPY}\t0.00\topen\thi\\\\t\t\\N\n"
        )
    );
    let mut counts: Vec<(String, &str, u64)> = parsed
        .cleaned
        .iter()
        .map(|(c, r, n)| (c.to_owned(), r, n))
        .collect();
    counts.sort();
    let expected: Vec<(String, &str, u64)> = [
        ("id", "normalize_uuid"),
        ("note", "empty_to_null"),
        ("status", "empty_to_null"),
        ("status", "ignore_case"),
        ("status", "trim"),
        ("total", "normalize_number"),
    ]
    .into_iter()
    .map(|(c, r)| (c.to_owned(), r, 1))
    .collect();
    assert_eq!(counts, expected);
}

#[test]
fn each_rule_rejects_with_its_reason() {
    let header = "id,total,status,note,placed\n";
    let cases = [
        (format!("{ID},1.234,open,,"), RejectReason::BadValue),
        (format!("{ID},-1,open,,"), RejectReason::OutOfRange),
        (format!("{ID},1000000,open,,"), RejectReason::OutOfRange),
        (format!("{ID},1,shipped,,"), RejectReason::NotAllowed),
        (format!("{ID},1,open,toolong,"), RejectReason::FieldTooLong),
        (
            format!("{ID},1,open,,2026-12-01T00:02:00Z"),
            RejectReason::FutureTimestamp,
        ),
        (",1,open,,".to_string(), RejectReason::MissingField),
        (format!("{ID},,open,,"), RejectReason::MissingField),
        (format!("{ID},1,open,"), RejectReason::WrongColumnCount),
        ("nope,1,open,,".to_string(), RejectReason::BadValue),
    ];
    for (row, reason) in cases {
        let file = format!("{header}{row}\n");
        let parsed =
            parse_file(file.as_bytes(), &rules(orders(MatchBy::Position))).expect("parses");
        assert_eq!(parsed.valid_rows, 0, "{row}");
        assert_eq!(parsed.rejects.len(), 1, "{row}");
        assert_eq!(
            parsed.rejects[0].reason, reason,
            "{row}: {}",
            parsed.rejects[0].message
        );
        assert!(
            parsed.rejects[0].message.contains(' '),
            "a message for a person"
        );
    }
}

#[test]
fn a_header_without_a_required_field_sets_the_file_aside() {
    let err = parse_file(b"total,status\n1,open\n", &rules(orders(MatchBy::Header)))
        .expect_err("id is required");
    match err {
        FileError::HeaderMismatch { problem } => assert!(problem.contains("\"id\""), "{problem}"),
        other => panic!("unexpected {other:?}"),
    }
    let err = parse_file(b"a,b\n1,2\n", &rules(orders(MatchBy::Position))).expect_err("count");
    assert_eq!(err.code(), "bad_header");
}

#[test]
fn a_later_part_uses_the_layout_read_from_the_header() {
    let file = format!("note,id,total\nhey,{ID},1\n");
    let mut r = rules(orders(MatchBy::Header));
    let layout = crate::validate::read_layout(&mut file.as_bytes(), &r).expect("layout");
    assert_eq!(
        layout.field_of_column,
        vec![Some(1), Some(2), None, Some(0), None]
    );
    if let Some(d) = r.schema.as_mut() {
        d.layout = Some(layout);
    }
    let header_len = file.find('\n').expect("newline") as u64 + 1;
    let mut rest = &file.as_bytes()[header_len as usize..];
    let mut copy = Vec::new();
    let part = crate::validate::parse_part(
        &mut rest,
        crate::validate::Position {
            offset: header_len,
            line: 2,
        },
        &r,
        &crate::validate::PartLimits {
            max_input_bytes: u64::MAX,
            max_reject_bytes: u64::MAX,
            copy_chunk_bytes: 1 << 20,
        },
        &mut |chunk| {
            copy.extend_from_slice(&chunk);
            Ok(())
        },
    )
    .expect("part");
    assert_eq!(part.valid_rows, 1);
    assert_eq!(
        String::from_utf8(copy).expect("utf8"),
        format!("{ID_COPY}\t1.00\topen\they\t\\N\n")
    );
}

#[test]
fn a_stray_quote_costs_only_its_line_with_the_files_column_count() {
    let file = format!("id,total,status,note,placed\n{ID},1,open,\"oops,\n{ID},2,paid,ok,\n");
    let parsed = parse_file(file.as_bytes(), &rules(orders(MatchBy::Header))).expect("parses");
    assert_eq!(parsed.valid_rows, 1);
    assert_eq!(parsed.rejects.len(), 1);
    assert_eq!(parsed.rejects[0].line, 2);
}

#[test]
fn canonical_values_are_copied_and_others_rewritten_the_same_way() {
    use sluice_core::schema::{ColumnType, NumericScale};
    let n = |precision, scale| ColumnType::Numeric(NumericScale { precision, scale });
    for (ty, text) in [
        (ColumnType::Integer, "0"),
        (ColumnType::Integer, "-12"),
        (ColumnType::Bigint, "9223372036854775807"),
        (n(10, 2), "12.50"),
        (n(10, 2), "-0.01"),
        (n(5, 0), "42"),
        (ColumnType::Uuid, ID_COPY),
    ] {
        assert!(is_canonical(&ty, text.as_bytes()), "{text}");
        let mut written = Vec::new();
        let v = values::parse(&ty, text).expect("valid");
        values::write_copy(&ty, &v, &mut written);
        assert_eq!(
            written,
            text.as_bytes(),
            "copying equals writing for {text}"
        );
    }
    for (ty, text) in [
        (ColumnType::Integer, "+1"),
        (ColumnType::Integer, "007"),
        (ColumnType::Integer, "-0"),
        (n(10, 2), "12.5"),
        (n(10, 2), "-0.00"),
        (n(10, 2), "012.50"),
        (n(10, 2), "12.500"),
        (ColumnType::Uuid, "0123456789ABCDEF0123456789ABCDEF"),
        (ColumnType::Uuid, "01234567-89AB-cdef-0123-456789abcdef"),
    ] {
        assert!(!is_canonical(&ty, text.as_bytes()), "{text}");
    }
}
