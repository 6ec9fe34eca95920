//! Cleaning before validation: each rule, what stays rejected, the counts.

use super::*;
use sluice_core::event::{HEADER, MAX_TEXT_FIELD_BYTES};

const ID: &str = "0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d";
const GOOD: &str =
    "0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d,2026-11-25T05:40:51.123Z,42,s-1,purchase,7,books,12.50,2";
const GOOD_COPY: &str = "0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d\t2026-11-25T05:40:51.123000000Z\t42\ts-1\tpurchase\t7\tbooks\t12.50\t2\n";

fn rules() -> Rules {
    Rules::for_tests()
}

fn parse(rows: &[&str]) -> ParsedFile {
    let mut text = format!("{HEADER}\n");
    for r in rows {
        text.push_str(r);
        text.push('\n');
    }
    parse_file(text.as_bytes(), &rules()).expect("file parses")
}

/// A valid row with field `i` replaced.
fn row_with(i: usize, value: &str) -> String {
    let mut fields: Vec<String> = GOOD.split(',').map(str::to_owned).collect();
    fields[i] = value.to_owned();
    fields.join(",")
}

/// The COPY line of a row that must load, and what cleaning counted.
fn loaded(row: &str) -> (String, Cleaned) {
    let parsed = parse(&[row]);
    assert!(parsed.rejects.is_empty(), "{row:?}: {:?}", parsed.rejects);
    (
        String::from_utf8(parsed.copy_rows).expect("utf8"),
        parsed.cleaned,
    )
}

fn counts(c: &Cleaned) -> Vec<(&str, &'static str, u64)> {
    c.iter().collect()
}

fn reason_of(row: &str) -> Option<RejectReason> {
    let parsed = parse(&[row]);
    assert_eq!(parsed.data_rows, 1);
    parsed.rejects.first().map(|r| r.reason)
}

#[test]
fn a_clean_row_is_not_counted() {
    let (copy, cleaned) = loaded(GOOD);
    assert_eq!(copy, GOOD_COPY);
    assert!(cleaned.is_empty());
}

#[test]
fn every_field_is_trimmed_of_spaces_and_tabs() {
    let padded: Vec<String> = GOOD
        .split(',')
        .enumerate()
        .map(|(i, f)| match i % 3 {
            0 => format!(" {f}"),
            1 => format!("{f}\t "),
            _ => format!("\t{f}  "),
        })
        .collect();
    let (copy, cleaned) = loaded(&padded.join(","));
    assert_eq!(copy, GOOD_COPY);
    let want: Vec<_> = sluice_core::event::HEADER_FIELDS
        .iter()
        .map(|c| (*c, "trim", 1))
        .collect();
    assert_eq!(counts(&cleaned), want);
}

#[test]
fn a_quoted_field_is_trimmed_after_unquoting() {
    let (copy, cleaned) = loaded(&row_with(3, "\"  s-1 \""));
    assert_eq!(copy, GOOD_COPY);
    assert_eq!(counts(&cleaned), [("session_id", "trim", 1)]);
    // Spaces inside a value stay.
    let (copy, _) = loaded(&row_with(3, " s 1 "));
    assert!(copy.contains("\ts 1\t"), "{copy}");
}

#[test]
fn event_type_matches_case_insensitively_to_its_canonical_spelling() {
    for (value, canonical, rules) in [
        ("VIEW", "view", vec![("event_type", "ignore_case", 1)]),
        (
            " VIEW ",
            "view",
            vec![("event_type", "trim", 1), ("event_type", "ignore_case", 1)],
        ),
        (
            "Add_To_Cart",
            "add_to_cart",
            vec![("event_type", "ignore_case", 1)],
        ),
        (
            "pUrChAsE",
            "purchase",
            vec![("event_type", "ignore_case", 1)],
        ),
        (" view", "view", vec![("event_type", "trim", 1)]),
    ] {
        // GOOD's quantity (2) suits every type.
        let (copy, cleaned) = loaded(&row_with(4, value));
        assert_eq!(copy.split('\t').nth(4), Some(canonical), "{value:?}");
        assert_eq!(counts(&cleaned), rules, "{value:?}");
    }
}

#[test]
fn category_is_stored_lower_case() {
    let (copy, cleaned) = loaded(&row_with(6, "  Books "));
    assert_eq!(copy, GOOD_COPY);
    assert_eq!(
        counts(&cleaned),
        [("category", "trim", 1), ("category", "lowercase", 1)]
    );
    let (copy, cleaned) = loaded(&row_with(6, "HOME_GARDEN"));
    assert!(copy.contains("\thome_garden\t"), "{copy}");
    assert_eq!(counts(&cleaned), [("category", "lowercase", 1)]);
    // Beyond ASCII too; a lower-case non-ASCII value is not counted.
    let (copy, cleaned) = loaded(&row_with(6, "Électronique"));
    assert!(copy.contains("\télectronique\t"), "{copy}");
    assert_eq!(counts(&cleaned), [("category", "lowercase", 1)]);
    let (_, cleaned) = loaded(&row_with(6, "électronique"));
    assert!(cleaned.is_empty());
}

#[test]
fn a_category_that_grows_past_the_limit_when_lower_cased_is_too_long() {
    // U+023A (2 bytes) lower-cases to U+2C65 (3 bytes).
    let value = "\u{23a}".repeat(MAX_TEXT_FIELD_BYTES / 2);
    assert_eq!(
        reason_of(&row_with(6, &value)),
        Some(RejectReason::FieldTooLong)
    );
}

#[test]
fn an_upper_case_event_id_is_stored_lower_case_and_counted() {
    let (copy, cleaned) = loaded(&row_with(0, &ID.to_uppercase()));
    assert_eq!(copy, GOOD_COPY);
    assert_eq!(counts(&cleaned), [("event_id", "lowercase", 1)]);
    let parsed = parse(&[&row_with(0, &format!(" {} ", ID.to_uppercase()))]);
    assert_eq!(parsed.event_ids, [Uuid::parse_str(ID).expect("uuid")]);
    assert_eq!(
        counts(&parsed.cleaned),
        [("event_id", "trim", 1), ("event_id", "lowercase", 1)]
    );
    // Other accepted forms without upper case are not counted.
    let (copy, cleaned) = loaded(&row_with(0, &ID.replace('-', "")));
    assert_eq!(copy, GOOD_COPY);
    assert!(cleaned.is_empty());
}

#[test]
fn what_cleaning_cannot_fix_stays_rejected() {
    use RejectReason::*;
    for (row, want) in [
        (row_with(4, "refund"), UnknownEventType),
        (row_with(4, " vie w"), UnknownEventType),
        (row_with(4, "add to cart"), UnknownEventType),
        (row_with(4, "VİEW"), UnknownEventType), // a dotted capital I is not an I
        (row_with(4, "\u{a0}view"), UnknownEventType), // a no-break space is not trimmed
        (row_with(3, "   "), MissingField),
        (row_with(6, "\t"), MissingField),
        (row_with(0, "not-a-uuid"), BadEventId),
        (row_with(0, &format!("{}x", ID.to_uppercase())), BadEventId),
        (row_with(2, "4 2"), BadId),
        (row_with(2, "+42"), BadId),
        (row_with(7, "12. 50"), BadPrice),
        (row_with(7, " -1.00 "), NegativePrice),
        (row_with(8, " 0 "), ZeroQuantity),
        (row_with(1, "2026-11-25 T05:40:51Z"), BadTimestamp),
        (
            row_with(6, &format!(" {} ", "y".repeat(MAX_TEXT_FIELD_BYTES + 1))),
            FieldTooLong,
        ),
    ] {
        assert_eq!(reason_of(&row), Some(want), "row {row:?}");
    }
}

#[test]
fn padding_does_not_count_towards_the_length_limit() {
    let value = format!("  {}  ", "y".repeat(MAX_TEXT_FIELD_BYTES));
    assert_eq!(reason_of(&row_with(6, &value)), None);
}

#[test]
fn check_order_is_unchanged() {
    // An empty field still wins over a bad event type; a bad event id over a bad type.
    assert_eq!(
        reason_of(&row_with(2, " ").replace("purchase", "refund")),
        Some(RejectReason::MissingField)
    );
    assert_eq!(
        reason_of(&row_with(0, "nope").replace("purchase", "PURCHASE")),
        Some(RejectReason::BadEventId)
    );
    let parsed = parse(&[&row_with(3, "  ")]);
    assert!(
        parsed.rejects[0].message.contains("only spaces or tabs"),
        "{}",
        parsed.rejects[0].message
    );
}

#[test]
fn rejected_rows_keep_their_raw_bytes_and_are_not_counted_as_cleaned() {
    let bad = row_with(4, " Refund ");
    let parsed = parse(&[&bad, &row_with(4, " PURCHASE ")]);
    assert_eq!(parsed.valid_rows, 1);
    assert_eq!(parsed.rejects[0].raw, bad.as_bytes());
    assert_eq!(
        counts(&parsed.cleaned),
        [("event_type", "trim", 1), ("event_type", "ignore_case", 1)]
    );
}

#[test]
fn counts_add_up_per_column_and_rule_across_rows_and_parts() {
    let rows = [
        GOOD.to_owned(),
        row_with(3, " s-2 "),
        row_with(3, "s-3 "),
        row_with(4, "View").replace(",2,", ",0,"),
        row_with(6, "Toys"),
        row_with(0, &ID.to_uppercase()),
        row_with(6, " TOYS"),
    ];
    let refs: Vec<&str> = rows.iter().map(String::as_str).collect();
    let parsed = parse(&refs);
    assert_eq!(parsed.valid_rows, 7);
    assert_eq!(
        counts(&parsed.cleaned),
        [
            ("event_id", "lowercase", 1),
            ("session_id", "trim", 2),
            ("event_type", "ignore_case", 1),
            ("category", "trim", 1),
            ("category", "lowercase", 2),
        ]
    );
    assert_eq!(parsed.cleaned.get("session_id", CleaningRule::Trim), 2);
    assert_eq!(parsed.cleaned.get("nope", CleaningRule::Trim), 0);

    // Parsing in parts gives the same counts in total.
    let mut text = format!("{HEADER}\n").into_bytes();
    for r in &rows {
        text.extend_from_slice(r.as_bytes());
        text.push(b'\n');
    }
    let limits = PartLimits {
        max_input_bytes: 150,
        max_reject_bytes: u64::MAX,
        copy_chunk_bytes: 64,
    };
    let mut total = Cleaned::default();
    let mut start = Position::START;
    loop {
        let mut input = &text[usize::try_from(start.offset).expect("offset")..];
        let part = parse_part(&mut input, start, &rules(), &limits, &mut |_| Ok(())).expect("part");
        total.absorb(&part.cleaned);
        if part.at_eof {
            break;
        }
        start = part.end;
    }
    assert_eq!(total, parsed.cleaned);
}

#[test]
fn applicable_pairs_cover_each_rule_once_per_column() {
    let pairs: Vec<(&str, &str)> = cleaning_rules().map(|(c, r)| (c, r.code())).collect();
    assert_eq!(pairs.len(), 9 + 3);
    assert!(pairs.contains(&("event_type", "ignore_case")));
    assert!(pairs.contains(&("category", "lowercase")));
    assert!(pairs.contains(&("event_id", "lowercase")));
}
