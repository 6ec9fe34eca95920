//! CSV dialects (`source.csv`): another delimiter and quote character, and files without
//! a header line, for the built-in table and a declared schema, whole and in parts.

use super::*;
use crate::records::Dialect;
use sluice_core::event::HEADER;

const GOOD: &str =
    "0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d,2026-11-25T05:40:51.123Z,42,s-1,purchase,7,books,12.50,2";

fn rules(delimiter: u8, quote: u8, header: bool) -> Rules {
    Rules {
        csv: CsvRules {
            dialect: Dialect { delimiter, quote },
            header,
        },
        ..Rules::for_tests()
    }
}

#[test]
fn semicolons_and_single_quotes_split_like_commas_and_double_quotes() {
    let standard = format!(
        "{HEADER}\n{GOOD}\n{}\n",
        GOOD.replace("books", "\"a, 'b'\"")
    );
    let other = format!(
        "{}\n{}\n{}\n",
        HEADER.replace(',', ";"),
        GOOD.replace(',', ";"),
        GOOD.replace(',', ";").replace("books", "'a, ''b'''")
    );
    let a = parse_file(standard.as_bytes(), &rules(b',', b'"', true)).expect("standard");
    let b = parse_file(other.as_bytes(), &rules(b';', b'\'', true)).expect("dialect");
    assert_eq!(b.rejects, vec![]);
    assert_eq!((a.valid_rows, b.valid_rows), (2, 2));
    assert_eq!(a.copy_rows, b.copy_rows, "the same values");
    // A comma is an ordinary character with another delimiter; a double quote too.
    let commas = format!(
        "{}\n{}\n",
        HEADER.replace(',', ";"),
        GOOD.replace(',', ";").replace("books", "\"x,y")
    );
    let c = parse_file(commas.as_bytes(), &rules(b';', b'\'', true)).expect("dialect");
    assert_eq!(c.valid_rows, 1);
    assert!(String::from_utf8_lossy(&c.copy_rows).contains("\"x,y"));
}

#[test]
fn a_stray_quote_of_the_dialect_costs_only_its_line() {
    let text = format!(
        "{}\n{}\n{}\n",
        HEADER.replace(',', "|"),
        GOOD.replace(',', "|").replace("s-1", "'open"),
        GOOD.replace(',', "|")
    );
    let parsed = parse_file(text.as_bytes(), &rules(b'|', b'\'', true)).expect("parses");
    assert_eq!(parsed.valid_rows, 1);
    assert_eq!(parsed.rejects.len(), 1);
    assert_eq!(parsed.rejects[0].line, 2);
}

#[test]
fn without_a_header_line_one_is_data() {
    let text = format!("{GOOD}\n{GOOD}\n");
    let parsed = parse_file(text.as_bytes(), &rules(b',', b'"', false)).expect("parses");
    assert_eq!((parsed.valid_rows, parsed.rejects.len()), (2, 0));
    // With a header expected, the same file is set aside.
    assert!(parse_file(text.as_bytes(), &rules(b',', b'"', true)).is_err());
    // A header line in a file declared headerless is a bad row on line 1, nothing else.
    let with_header = format!("{HEADER}\n{GOOD}\n");
    let parsed = parse_file(with_header.as_bytes(), &rules(b',', b'"', false)).expect("parses");
    assert_eq!(parsed.valid_rows, 1);
    assert_eq!(
        parsed.rejects.iter().map(|r| r.line).collect::<Vec<_>>(),
        vec![1]
    );
}

#[test]
fn a_declared_schema_without_header_matches_by_position_in_every_part() {
    use sluice_core::schema::{ColumnSpec, MatchBy, TableSchema, TypeName};
    let schema = TableSchema {
        table: "t".into(),
        match_by: MatchBy::Position,
        key: None,
        columns: vec![
            ColumnSpec::new("a", TypeName::Integer),
            ColumnSpec::new("b", TypeName::Text),
        ],
    };
    let mut r = rules(b'\t', b'"', false);
    r.schema = Some(DeclaredRules {
        compiled: std::sync::Arc::new(general::CompiledSchema::new(schema).expect("schema")),
        layout: None,
    });
    let text = b"1\tx\n2\t\"y\tz\"\n";
    let whole = parse_file(text, &r).expect("parses");
    assert_eq!(
        String::from_utf8_lossy(&whole.copy_rows),
        "1\tx\n2\ty\\tz\n"
    );
    // A later part reads its layout without a header line.
    let layout = read_layout(&mut &text[..], &r).expect("layout");
    assert_eq!(layout.fields, 2);
}
