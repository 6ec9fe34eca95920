//! What the pipeline's current rules say about one quarantined row: it now passes (with
//! its `COPY` text), it is still bad (with the reason it gets today), or it cannot be
//! replayed at all. Pure: the row's exact bytes go through the worker's own parser
//! ([`crate::validate::parse_part_as`]), so a replayed row is judged and cleaned exactly
//! like the same row in a new file.

use sluice_core::reject::RejectReason;
use sluice_core::schema::MatchBy;

use crate::validate::general::Layout;
use crate::validate::{Format, ParseError, PartLimits, Position, Rules};

/// Why a row cannot be replayed; it stays in quarantine untouched.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum NotReplayable {
    /// A `row_too_long` row keeps only its first bytes: the rest of the row is lost.
    Truncated,
    /// A declared schema matches fields by header name and the row's file (with its
    /// header) is no longer in the landing directory or its archive.
    HeaderUnavailable,
}

impl NotReplayable {
    /// Stable code, used in reports.
    pub fn code(self) -> &'static str {
        match self {
            NotReplayable::Truncated => "truncated_row",
            NotReplayable::HeaderUnavailable => "header_unavailable",
        }
    }
}

/// The judgement of one row under the current rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Valid now: the row as `COPY` text (one line, in the target's column order).
    Passes(Vec<u8>),
    /// Still rejected, with the reason and message it gets today.
    StillBad { reason: String, message: String },
    /// Not judged (see [`NotReplayable`]).
    NotReplayable(NotReplayable),
}

/// Where a replayed row is parsed from: after the start of a file, so no header is
/// expected (the row is data, as it was in its file).
const ROW_POSITION: Position = Position { offset: 1, line: 2 };

/// Judges `raw` (a quarantined row's exact bytes) under `rules`. `layout` is the row's
/// file layout for a declared schema (`None`: the built-in table, a file without header,
/// or NDJSON, where the rules alone say where each field is). `old_reason` is the code
/// it was quarantined with.
pub fn judge(
    format: Format,
    rules: &Rules,
    layout: Option<Layout>,
    old_reason: &str,
    raw: &[u8],
) -> Verdict {
    if old_reason == RejectReason::RowTooLong.code() {
        return Verdict::NotReplayable(NotReplayable::Truncated);
    }
    let mut rules = rules.clone();
    // One row is not a file: the file-level share does not apply.
    rules.max_reject_share = None;
    rules.collect_event_ids = false;
    if let Some(declared) = rules.schema.as_mut() {
        declared.layout = match (format, layout) {
            (_, Some(l)) => Some(l),
            (Format::Ndjson, None) => None,
            (Format::Csv, None)
                if !rules.csv.header || declared.compiled.schema.match_by == MatchBy::Position =>
            {
                Some(declared.compiled.position_layout())
            }
            (Format::Csv, None) => return Verdict::NotReplayable(NotReplayable::HeaderUnavailable),
        };
    }
    let mut input = Vec::with_capacity(raw.len() + 1);
    input.extend_from_slice(raw);
    input.push(b'\n');
    let limits = PartLimits {
        max_input_bytes: u64::MAX,
        max_reject_bytes: u64::MAX,
        copy_chunk_bytes: usize::MAX,
    };
    let mut copy = Vec::new();
    let mut sink = |chunk: Vec<u8>| {
        copy.extend_from_slice(&chunk);
        Ok(())
    };
    let mut reader = input.as_slice();
    let part = match crate::validate::parse_part_as(
        format,
        &mut reader,
        ROW_POSITION,
        &rules,
        &limits,
        &mut sink,
    ) {
        Ok(part) => part,
        Err(ParseError::File(e)) => {
            return Verdict::StillBad {
                reason: e.code().into(),
                message: e.to_string(),
            };
        }
        Err(e) => {
            return Verdict::StillBad {
                reason: "unreadable".into(),
                message: e.to_string(),
            };
        }
    };
    match (part.valid_rows, part.rejects.first(), part.data_rows) {
        (1, None, 1) => Verdict::Passes(copy),
        (0, Some(r), 1) => Verdict::StillBad {
            reason: r.reason.code().into(),
            message: r.message.clone(),
        },
        (_, _, rows) => Verdict::StillBad {
            reason: "not_one_row".into(),
            message: format!(
                "the quarantined bytes now read as {rows} rows, not one; they are left as they are"
            ),
        },
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use sluice_core::schema::{ColumnSpec, TableSchema, TypeName};

    use super::*;
    use crate::validate::DeclaredRules;
    use crate::validate::general::CompiledSchema;

    const GOOD: &[u8] =
        b"0a1b2c3d-4e5f-4a6b-8c7d-000000000001,2026-11-25T10:00:00Z,1,s-1, VIEW ,5,Books,1.00,0";

    fn rules() -> Rules {
        Rules::for_tests()
    }

    fn declared(allowed: &[&str], header: bool) -> Rules {
        let schema = TableSchema {
            table: "sites".into(),
            match_by: MatchBy::Header,
            key: None,
            columns: vec![
                ColumnSpec::new("id", TypeName::Bigint),
                ColumnSpec {
                    allowed: allowed.iter().map(|s| s.to_string()).collect(),
                    ..ColumnSpec::new("site", TypeName::Text)
                },
            ],
        };
        let mut r = rules();
        r.schema = Some(DeclaredRules {
            compiled: Arc::new(CompiledSchema::new(schema).expect("schema")),
            layout: None,
        });
        r.csv.header = header;
        r
    }

    #[test]
    fn a_valid_row_passes_cleaned_as_copy_text() {
        let v = judge(Format::Csv, &rules(), None, "unknown_event_type", GOOD);
        let Verdict::Passes(copy) = v else {
            panic!("{v:?}")
        };
        let text = String::from_utf8(copy).expect("utf8");
        assert!(
            text.ends_with('\n') && text.matches('\n').count() == 1,
            "{text}"
        );
        assert!(
            text.contains("\tview\t") && text.contains("\tbooks\t"),
            "{text}"
        );
    }

    #[test]
    fn a_bad_row_gets_todays_reason() {
        let bad =
            b"0a1b2c3d-4e5f-4a6b-8c7d-000000000001,2026-11-25T10:00:00Z,1,s-1,refund,5,b,1.00,1";
        match judge(Format::Csv, &rules(), None, "bad_price", bad) {
            Verdict::StillBad { reason, .. } => assert_eq!(reason, "unknown_event_type"),
            v => panic!("{v:?}"),
        }
        // Bytes that are no longer one row are never split into two.
        let two = [GOOD, b"\n", GOOD].concat();
        match judge(Format::Csv, &rules(), None, "bad_price", &two) {
            Verdict::StillBad { reason, .. } => assert_eq!(reason, "not_one_row"),
            v => panic!("{v:?}"),
        }
    }

    #[test]
    fn the_file_share_limit_does_not_apply_to_one_row() {
        let mut r = rules();
        r.max_reject_share = Some(0.0);
        match judge(Format::Csv, &r, None, "x", b"1,2") {
            Verdict::StillBad { reason, .. } => assert_eq!(reason, "wrong_column_count"),
            v => panic!("{v:?}"),
        }
    }

    #[test]
    fn truncated_rows_are_never_replayed() {
        assert_eq!(
            judge(Format::Csv, &rules(), None, "row_too_long", GOOD),
            Verdict::NotReplayable(NotReplayable::Truncated)
        );
    }

    #[test]
    fn ndjson_rows_are_judged_by_their_keys() {
        let row = br#"{"event_id":"0a1b2c3d-4e5f-4a6b-8c7d-000000000001","event_time":"2026-11-25T10:00:00Z","user_id":1,"session_id":"s","event_type":"view","product_id":5,"category":"b","price":"1.00","quantity":0}"#;
        assert!(matches!(
            judge(Format::Ndjson, &rules(), None, "bad_json", row),
            Verdict::Passes(_)
        ));
        assert!(matches!(
            judge(
                Format::Ndjson,
                &rules(),
                None,
                "bad_json",
                b"{\"event_id\":"
            ),
            Verdict::StillBad { .. }
        ));
    }

    #[test]
    fn a_declared_schema_needs_the_files_layout_when_matching_by_header() {
        let widened = declared(&["north", "east"], true);
        assert_eq!(
            judge(Format::Csv, &widened, None, "not_allowed", b"1,east"),
            Verdict::NotReplayable(NotReplayable::HeaderUnavailable)
        );
        // The file had its columns the other way round: the layout says so.
        let layout = Layout {
            field_of_column: vec![Some(1), Some(0)],
            fields: 2,
        };
        match judge(
            Format::Csv,
            &widened,
            Some(layout),
            "not_allowed",
            b"east,7",
        ) {
            Verdict::Passes(copy) => assert_eq!(copy, b"7\teast\n"),
            v => panic!("{v:?}"),
        }
        // Without a header, fields are in column order.
        let positional = declared(&["north", "east"], false);
        assert_eq!(
            judge(Format::Csv, &positional, None, "not_allowed", b"7,east"),
            Verdict::Passes(b"7\teast\n".to_vec())
        );
        let narrow = declared(&["north"], false);
        assert!(matches!(
            judge(Format::Csv, &narrow, None, "not_allowed", b"7,east"),
            Verdict::StillBad { .. }
        ));
    }
}
