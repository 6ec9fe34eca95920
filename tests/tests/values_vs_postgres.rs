//! Property test of `sluice_core::values` against a real PostgreSQL (issue 9): for every
//! column type, edge-case strings (well-formed values near the limits, near misses,
//! garbage, PostgreSQL-only spellings) are read by Sluice and by PostgreSQL.
//!
//! * Anything Sluice accepts, PostgreSQL accepts with the same value: the `COPY` text
//!   Sluice writes is loaded with `COPY … FROM STDIN` (the production path) into a column
//!   of the type, and its `::text` rendering must equal the one PostgreSQL makes of the
//!   raw string itself (read as a literal inserted into a column of the type, so with the
//!   same input function and type modifier as `COPY`). The value Sluice parsed is also
//!   sent in binary (`COPY … (FORMAT binary)`, the worker's default) and must read back
//!   exactly as its text did.
//! * What PostgreSQL accepts and Sluice refuses is allowed (Sluice is stricter), counted
//!   per type and sampled on stderr; docs/schema-values.md lists these differences. Only
//!   PostgreSQL's own rendering of a value (`123`, `12.30`, `t`, a lower-case UUID) must
//!   never be refused.
//!
//! The inputs come from a fixed seed. `SLUICE_VALUES_CASES` (generated strings per type,
//! default 2000) and `SLUICE_VALUES_SEED` (a number) give a longer or different run.

use std::collections::{BTreeMap, HashSet};
use std::fmt::Write as _;

use futures::SinkExt;
use proptest::prelude::*;
use proptest::sample::select;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};
use sluice_core::schema::{ColumnType, NumericScale};
use sluice_core::values;
use sluice_testkit::pg;
use sluice_worker::copy_binary;
use tokio_postgres::Client;

const DEFAULT_CASES: usize = 2000;
const DEFAULT_SEED: u64 = 0x5105_1ce0_0009;
/// How many PostgreSQL-only inputs to print per type.
const SAMPLE: usize = 25;

/// One column type under test.
struct TypeCase {
    label: String,
    ty: ColumnType,
    max_length: Option<u32>,
    /// Strings always tried (hand-written edge cases).
    literals: Vec<String>,
    /// Strings drawn from the seed.
    strategy: BoxedStrategy<String>,
    /// Whether PostgreSQL's own rendering of a value must be accepted (not for
    /// timestamptz, whose output `2026-01-01 00:00:00+00` is not RFC 3339).
    accepts_own_output: bool,
}

fn lits(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

/// Near misses every type sees.
fn garbage() -> Vec<String> {
    let mut v = lits(&[
        "",
        " ",
        "\t",
        "+",
        "-",
        ".",
        "-.",
        "+.",
        "e",
        "E5",
        "NaN",
        "nan",
        "-NaN",
        "Infinity",
        "-Infinity",
        "+Infinity",
        "infinity",
        "inf",
        "-inf",
        "1e400",
        "-1e400",
        "1e-400",
        "0x10",
        "0X1F",
        "0o17",
        "0b101",
        "1_000",
        "1,000",
        "1'000",
        "{}",
        "{",
        "}",
        "[]",
        "null",
        "NULL",
        "\\N",
        "\\",
        "\"",
        "'",
        "''",
        "true",
        "t",
        "tr",
        "on",
        "o",
        "epoch",
        "allballs",
        "now",
        "today",
        "tomorrow",
        "0",
        "1",
        "-1",
        " 1",
        "1 ",
        "\t1",
        "1\n",
        "１２",
        "٣",
        "é",
        "日本",
        "\u{1F600}",
        "a\u{0}b",
        "\u{0}",
        "--1",
        "1e",
        "1e+",
        "1..2",
        "1.2.3",
        "1-2",
        "١",
        "∞",
        "\u{a0}1",
        "1\u{a0}",
        "\u{feff}1",
        "\\.",
        "\\N ",
    ]);
    v.push("9".repeat(400));
    v
}

fn all_literals(specific: &[&str]) -> Vec<String> {
    let mut v = lits(specific);
    v.extend(garbage());
    v
}

fn any_garbage() -> BoxedStrategy<String> {
    prop_oneof![
        select(garbage()),
        "[ -~]{0,6}",
        "\\PC{0,4}",
        "[0-9+\\-.eE ]{1,8}",
    ]
    .boxed()
}

fn uuid_case() -> TypeCase {
    let literals = all_literals(&[
        "01234567-89ab-cdef-0123-456789abcdef",
        "01234567-89AB-CDEF-0123-456789ABCDEF",
        "0123456789abcdef0123456789abcdef",
        "{01234567-89ab-cdef-0123-456789abcdef}",
        "{0123456789abcdef0123456789abcdef}",
        "{01234567-89ab-cdef-0123-456789abcdef",
        "01234567-89ab-cdef-0123-456789abcdef}",
        "{{01234567-89ab-cdef-0123-456789abcdef}}",
        "urn:uuid:01234567-89ab-cdef-0123-456789abcdef",
        "URN:UUID:01234567-89ab-cdef-0123-456789abcdef",
        "0123456789ab-cdef-0123-456789abcdef0",
        "0123-4567-89ab-cdef-0123-4567-89ab-cdef",
        "01234567-89abcdef-01234567-89abcdef",
        "{0123-4567-89ab-cdef-0123-4567-89ab-cdef}",
        "01234567-89ab-cdef-0123-456789abcde",
        "01234567-89ab-cdef-0123-456789abcdef0",
        "0123456789abcdef0123456789abcde",
        "0123456789abcdef0123456789abcdef0",
        "01234567-89ab-cdef-0123-456789abcdeg",
        "01234567_89ab_cdef_0123_456789abcdef",
        "00000000-0000-0000-0000-000000000000",
        "ffffffff-ffff-ffff-ffff-ffffffffffff",
        " 01234567-89ab-cdef-0123-456789abcdef",
        "01234567-89ab-cdef-0123-456789abcdef ",
        "01234567-89ab-cdef-0123-456789abcdef\n",
        "01234567-89ab-cdef-0123-456789abc\u{e9}",
        "0123456789abcdef0123456789abcd\u{e9}",
    ]);
    let strategy = prop_oneof![
        4 => "\\{?[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}\\}?",
        2 => "[0-9a-f]{4}(-?[0-9a-f]{4}){7}",
        2 => "[0-9a-fA-Fg{}\\- ]{30,40}",
        1 => "(urn:uuid:)?[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}[ }]?",
        1 => any_garbage(),
    ]
    .boxed();
    TypeCase {
        label: "uuid".into(),
        ty: ColumnType::Uuid,
        max_length: None,
        literals,
        strategy,
        accepts_own_output: true,
    }
}

fn text_strategy() -> BoxedStrategy<String> {
    prop_oneof![
        3 => "\\PC{0,12}",
        3 => "[a-z \\t\\n\\r\\\\.N\"',]{0,8}",
        2 => "[a\u{e9}\u{65e5}\u{1F600}\u{301} ]{3,8}",
        1 => "\\\\[.Nntr\\\\]",
        1 => "[\\x00-\\x1f\\x7f a]{0,5}",
        1 => any_garbage(),
    ]
    .boxed()
}

fn text_case(max_length: Option<u32>) -> TypeCase {
    let literals = all_literals(&[
        "abcd",
        "abcde",
        "abcdef",
        "abcde ",
        "abcde  ",
        "abcd  ",
        " abcde",
        "abc\u{e9}e",
        "\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}",
        "\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}",
        "\u{1F600}\u{1F600}\u{1F600}\u{1F600}\u{1F600}",
        "e\u{301}e\u{301}e",
        "e\u{301}e\u{301}e\u{301}",
        "a\tb\\c\nd",
        "\r\n",
        "\\.",
        "a\u{0}",
        "\u{7f}\u{1}\u{1b}",
        "\u{fffd}",
        "\u{10ffff}",
        "abcde\t",
        "abcde\u{a0}",
    ]);
    TypeCase {
        label: match max_length {
            Some(n) => format!("varchar({n})"),
            None => "text".into(),
        },
        ty: ColumnType::Text,
        max_length,
        literals,
        strategy: text_strategy(),
        accepts_own_output: true,
    }
}

/// A whole number near one of `bounds`, with optional sign and leading zeros.
fn near(bounds: Vec<i128>) -> BoxedStrategy<String> {
    (select(bounds), -3i128..=3, 0usize..3, any::<bool>())
        .prop_map(|(b, off, zeros, plus)| {
            let v = b + off;
            let digits = format!("{}{}", "0".repeat(zeros), v.unsigned_abs());
            if v < 0 {
                format!("-{digits}")
            } else if plus {
                format!("+{digits}")
            } else {
                digits
            }
        })
        .boxed()
}

fn int_case(label: &str, ty: ColumnType, min: i128, max: i128) -> TypeCase {
    let (lo, hi) = (min.to_string(), max.to_string());
    let mut literals = all_literals(&[
        "123",
        "-0",
        "+0",
        "00",
        "0000000000000000000000000000000000042",
        "+-1",
        "-+1",
        "1.",
        "1.0",
        "1.5",
        "1e3",
        "1E0",
        " 123",
        "123 ",
        "12 3",
        "0x1F",
        "1_2",
        "1.0e2",
        "١٢٣",
    ]);
    for s in [&lo, &hi] {
        literals.push(format!("{s}0"));
        literals.push(format!(" {s} "));
        literals.push(format!("{s}.0"));
    }
    literals.push(lo);
    literals.push(hi);
    let strategy = prop_oneof![
        4 => near(vec![min, max, 0, min / 10, max / 10, max * 10, min * 10]),
        3 => "[+-]?0{0,3}[0-9]{1,21}",
        2 => "[ \\t]?[+-]?[0-9]{1,6}[ \\t.e0-9]{0,3}",
        1 => any_garbage(),
    ]
    .boxed();
    TypeCase {
        label: label.into(),
        ty,
        max_length: None,
        literals,
        strategy,
        accepts_own_output: true,
    }
}

fn numeric_case(precision: u32, scale: u32) -> TypeCase {
    let (p, s) = (precision as usize, scale as usize);
    let int_max = "9".repeat(p - s);
    let frac_max = "9".repeat(s);
    let mut literals = all_literals(&[
        "0",
        "-0",
        "0.0",
        "-0.00",
        ".5",
        "-.5",
        "5.",
        "+5.",
        "00.10",
        "1e2",
        "1E-2",
        "1.5e1",
        "NaN",
        "nan",
        "Infinity",
        "-Infinity",
        "0.000",
        "0.",
        ".",
        "-.0",
        " 1",
        "1 ",
    ]);
    for (i, f) in [
        (int_max.as_str(), frac_max.as_str()),
        (int_max.as_str(), ""),
        ("", frac_max.as_str()),
    ] {
        literals.push(format!("{i}.{f}"));
        literals.push(format!("-{i}.{f}"));
        literals.push(format!("{i}.{f}0000"));
        literals.push(format!("{i}.{f}5"));
        literals.push(format!("{i}.{f}4"));
        literals.push(format!("{i}.{f}49999999999"));
        literals.push(format!("00{i}.{f}"));
        literals.push(format!("1{i}.{f}"));
        literals.push(format!("-1{i}"));
    }
    literals.push(format!("1{}", "0".repeat(p - s)));
    literals.push(format!("0.{}1", "0".repeat(s)));
    literals.push(format!("0.{}5", "0".repeat(s)));
    literals.push(format!("-0.{}5", "0".repeat(s)));
    literals.push(format!("0.{}", "0".repeat(s + 30)));
    literals.push(format!("{}1", "0".repeat(60)));
    let int_re = format!("[+-]?0?[0-9]{{0,{}}}(\\.[0-9]{{0,{}}})?", p - s + 1, s + 2);
    let strategy = prop_oneof![
        4 => proptest::string::string_regex(&int_re).expect("regex"),
        2 => "[+-]?[0-9]{0,3}\\.?[0-9]{0,3}([eE][+-]?[0-9]{1,3})?",
        2 => (select(vec![int_max.clone(), String::new(), "0".into(), "1".into()]),
              select(vec![frac_max.clone(), String::new(), "0".repeat(s + 1), format!("{frac_max}0")]),
              "[0-9]{0,2}", select(vec!["", "-", "+"]))
            .prop_map(|(i, f, extra, sign)| format!("{sign}{i}.{f}{extra}")),
        1 => any_garbage(),
    ]
    .boxed();
    TypeCase {
        label: format!("numeric({precision},{scale})"),
        ty: ColumnType::Numeric(NumericScale { precision, scale }),
        max_length: None,
        literals,
        strategy,
        accepts_own_output: true,
    }
}

fn double_case() -> TypeCase {
    let literals = all_literals(&[
        "1.5",
        "-2E-3",
        "0",
        "-0",
        "-0.0",
        "0e-999",
        "0e999",
        "0e99999999999999999999",
        "1e99999999999999999999",
        "1e-99999999999999999999",
        "1.7976931348623157e308",
        "1.7976931348623158e308",
        "1.7976931348623159e308",
        "-1.7976931348623157e308",
        "1.8e308",
        "1e308",
        "1e309",
        "2.2250738585072014e-308",
        "2.2250738585072011e-308",
        "4.9e-324",
        "5e-324",
        "2.4703282292062328e-324",
        "2.4703282292062327e-324",
        "2.47e-324",
        "1e-323",
        "1e-324",
        "-1e-324",
        "0.000000000000000000000000000000000000000000000000000001",
        "123456789012345678901234567890",
        "0.1",
        "0.30000000000000004",
        "9007199254740993",
        ".5",
        "5.",
        "1.e5",
        ".e5",
        "1e5.5",
        "0x1p3",
        "0x10",
        "1d",
        "1f",
        "1.5E+00",
        "+.5e-1",
        "1e0001",
        "Inf",
        "+inf",
        "INFINITY",
        "nAn",
    ]);
    let strategy = prop_oneof![
        4 => "[+-]?[0-9]{0,20}(\\.[0-9]{0,20})?([eE][+-]?[0-9]{1,4})?",
        2 => "[+-]?[1-9]\\.[0-9]{15,18}[eE][+-]?3[0-2][0-9]",
        1 => "[+-]?(0|[1-9][0-9]{0,3})\\.?[0-9]{0,3}[eE][+-]?0{0,3}[0-9]{1,3}",
        1 => any_garbage(),
    ]
    .boxed();
    TypeCase {
        label: "double precision".into(),
        ty: ColumnType::Double,
        max_length: None,
        literals,
        strategy,
        accepts_own_output: true,
    }
}

fn boolean_case() -> TypeCase {
    let words = [
        "t",
        "tr",
        "tru",
        "true",
        "f",
        "fa",
        "fal",
        "fals",
        "false",
        "y",
        "ye",
        "yes",
        "n",
        "no",
        "on",
        "of",
        "off",
        "o",
        "1",
        "0",
        "truee",
        "yess",
        "2",
        "-1",
        "01",
        "10",
        "on ",
        "tRuE",
        "YES",
        "Off",
        "ON",
        "ｔｒｕｅ",
        "tru e",
        "nope",
        "ok",
        "T",
        "F",
        "Y",
        "N",
    ];
    let literals = all_literals(&words);
    let strategy = prop_oneof![
        3 => "(?i)(t|tr|tru|true|f|fa|fal|fals|false|y|ye|yes|n|no|on|of|off|1|0)",
        2 => "[ \\t]{0,2}(?i)(true|false|yes|no|on|off|1|0|t|f)[ \\t\\n]{0,2}",
        1 => "[tfyno01ruelsa ]{0,5}",
        1 => any_garbage(),
    ]
    .boxed();
    TypeCase {
        label: "boolean".into(),
        ty: ColumnType::Boolean,
        max_length: None,
        literals,
        strategy,
        accepts_own_output: true,
    }
}

fn year() -> BoxedStrategy<i32> {
    prop_oneof![
        3 => 1i32..=9999,
        2 => select(vec![0, 1, 2, 1582, 1900, 1970, 2000, 2024, 2026, 9998, 9999, 10000, 99999]),
    ]
    .boxed()
}

fn day_of_month() -> BoxedStrategy<u32> {
    prop_oneof![3 => 1u32..=28, 2 => 28u32..=32, 1 => Just(0u32)].boxed()
}

fn date_case() -> TypeCase {
    let literals = all_literals(&[
        "2026-11-25",
        "2024-02-29",
        "2023-02-29",
        "2000-02-29",
        "1900-02-29",
        "1600-02-29",
        "0004-02-29",
        "0001-01-01",
        "0000-12-31",
        "9999-12-31",
        "10000-01-01",
        "2026-04-31",
        "2026-13-01",
        "2026-00-10",
        "2026-01-00",
        "2026-1-1",
        "26-01-01",
        "+2026-01-01",
        "-2026-01-01",
        "2026-01-01 BC",
        "0044-03-15 BC",
        "0001-01-01 BC",
        "2026-01-01 AD",
        "20260101",
        "2026/01/01",
        "2026.01.01",
        "01/02/2026",
        "02-01-2026",
        "Jan 2 2026",
        "January 2, 2026",
        "2026-Jan-02",
        "2026-01-01T00:00:00",
        "2026-01-01 00:00:00",
        "2026-01-01Z",
        "2026-01-01+01",
        "J2451187",
        "2026-001",
        "2026-W01-1",
        " 2026-01-01",
        "2026-01-01 ",
        "２０２６-０１-０１",
        "2026-01-01\n",
        "-infinity",
        "yesterday",
    ]);
    let strategy = prop_oneof![
        4 => (year(), 0u32..=13, day_of_month())
            .prop_map(|(y, m, d)| format!("{y:04}-{m:02}-{d:02}")),
        2 => "[0-9]{1,5}-[0-9]{1,2}-[0-9]{1,2}",
        1 => "[0-9]{4}[-/. ][0-9]{2}[-/. ][0-9]{2}( BC| AD|T00:00| 00:00:00)?",
        1 => any_garbage(),
    ]
    .boxed();
    TypeCase {
        label: "date".into(),
        ty: ColumnType::Date,
        max_length: None,
        literals,
        strategy,
        accepts_own_output: true,
    }
}

fn timestamptz_case() -> TypeCase {
    let literals = all_literals(&[
        "2026-11-25T05:40:51.123Z",
        "2026-11-25T05:40:51Z",
        "2026-11-25t05:40:51z",
        "2026-11-25 05:40:51Z",
        "2026-11-25T05:40:51+00:00",
        "2026-11-25T05:40:51-00:00",
        "2026-11-25T05:40:51+01:00",
        "2026-11-25T05:40:51+14:00",
        "2026-11-25T05:40:51-12:00",
        "2026-11-25T05:40:51+15:59",
        "2026-11-25T05:40:51+16:00",
        "2026-11-25T05:40:51-16:00",
        "2026-11-25T05:40:51-15:59",
        "0001-01-01T00:00:00+15:59",
        "0001-01-01T15:59:00+15:59",
        "9999-12-31T23:59:59-15:59",
        "2026-11-25T05:40:51+23:59",
        "2026-11-25T05:40:51+24:00",
        "2026-11-25T05:40:51+0100",
        "2026-11-25T05:40:51+01",
        "2026-11-25T05:40:51+01:00:30",
        "2026-11-25T05:40:51+1:00",
        "2026-11-25T05:40:51",
        "2026-11-25T05:40",
        "2026-11-25T05:40Z",
        "2026-11-25",
        "2026-11-25T23:59:60Z",
        "2026-12-31T23:59:60Z",
        "2026-11-25T24:00:00Z",
        "2026-11-25T23:60:00Z",
        "2024-02-29T12:00:00Z",
        "2023-02-29T12:00:00Z",
        "0001-01-01T00:00:00Z",
        "0001-01-01T00:00:00+00:01",
        "0001-01-01T00:00:00-00:01",
        "0000-12-31T23:00:00-01:00",
        "9999-12-31T23:59:59Z",
        "9999-12-31T23:59:59.999999Z",
        "9999-12-31T23:59:59.9999995Z",
        "9999-12-31T23:59:59.999999999Z",
        "9999-12-31T23:00:00-01:00",
        "9999-12-31T23:00:00-00:59",
        "10000-01-01T00:00:00Z",
        "2026-11-25T05:40:51.Z",
        "2026-11-25T05:40:51.0000005Z",
        "2026-11-25T05:40:51.0000015Z",
        "2026-11-25T05:40:51.0000025Z",
        "2026-11-25T05:40:51.00000050000001Z",
        "2026-11-25T05:40:51.00000049999999Z",
        "2026-11-25T05:40:51.000000500000000001Z",
        "2026-11-25T05:40:51.9999995Z",
        "2026-11-25T05:40:51.99999950000000000Z",
        "2026-11-25T23:59:59.99999999999Z",
        "2026-11-25T05:40:51.123456789012345678901234567890Z",
        "2026-11-25T05:40:51,5Z",
        "2026-11-25T05:40:51 Z",
        "2026-11-25T05:40:51 +01:00",
        "2026-11-25T05:40:51UTC",
        "2026-11-25T05:40:51 UTC",
        "2026-11-25T05:40:51 Europe/Paris",
        "2026-11-25T05:40:51 CET",
        "2026-11-25 05:40:51+00",
        "2026-11-25 05:40:51.123+00",
        "20261125T054051Z",
        "2026-11-25T05:40:51Z BC",
        "0044-03-15T12:00:00Z BC",
        "Wed, 25 Nov 2026 05:40:51 +0000",
        "1764049251",
        "2026-11-25T05:40:51\u{2212}01:00",
        " 2026-11-25T05:40:51Z",
        "2026-11-25T05:40:51Z ",
        "2026-11-25T05:40:51Z\n",
        "-infinity",
    ]);
    let offset = prop_oneof![
        3 => select(vec!["Z".to_owned(), "z".into(), "+00:00".into(), "-00:00".into(), String::new()]),
        3 => "[+-](0[0-9]|1[0-9]|2[0-4]):[0-5][0-9]",
        1 => "[+-][0-9]{2}([0-9]{2})?",
        1 => "[+-][0-9]{1,2}:[0-9]{1,3}",
    ];
    let strategy = prop_oneof![
        6 => (
            year(),
            prop_oneof![4 => 1u32..=12, 1 => 0u32..=13],
            day_of_month(),
            select(vec!["T", "T", "T", "t", " ", "_"]),
            prop_oneof![4 => 0u32..=23, 1 => Just(24u32)],
            prop_oneof![4 => 0u32..=59, 1 => Just(60u32)],
            prop_oneof![4 => 0u32..=59, 1 => 59u32..=61],
            "(\\.[0-9]{0,12})?",
            offset,
        )
            .prop_map(|(y, mo, d, sep, h, mi, s, frac, off)| {
                format!("{y:04}-{mo:02}-{d:02}{sep}{h:02}:{mi:02}:{s:02}{frac}{off}")
            }),
        1 => "[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\\.[0-9]{1,20})?[Zz+-]?[0-9:]{0,6}",
        1 => any_garbage(),
    ]
    .boxed();
    TypeCase {
        label: "timestamptz".into(),
        ty: ColumnType::Timestamptz,
        max_length: None,
        literals,
        strategy,
        accepts_own_output: false,
    }
}

fn json_number() -> BoxedStrategy<String> {
    prop_oneof![
        4 => "-?(0|[1-9][0-9]{0,20})(\\.[0-9]{1,20})?([eE][+-]?[0-9]{1,3})?",
        1 => "-?[1-9]([eE][+-]?[0-9]{4,5})",
        1 => "-?(0|[1-9][0-9]{0,3})\\.[0-9]{1,3}[eE]-1[0-9]{4}",
    ]
    .boxed()
}

fn json_string() -> BoxedStrategy<String> {
    "\"([a-z\u{e9}\u{65e5}\u{1F600} /<>']|\\\\[\"\\\\/bfnrt]|\\\\u[0-9a-fA-F]{4}|\\\\u00[0-9a-fA-F]{2}|\\\\u[dD][89a-fA-F][0-9a-fA-F]{2})*\""
        .boxed()
}

fn json_value() -> BoxedStrategy<String> {
    let leaf = prop_oneof![
        select(vec!["null".to_owned(), "true".into(), "false".into()]),
        json_number(),
        json_string(),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(|v| format!("[{}]", v.join(","))),
            prop::collection::vec((json_string(), inner), 0..4).prop_map(|v| {
                let members: Vec<String> = v.iter().map(|(k, v)| format!("{k}:{v}")).collect();
                format!("{{{}}}", members.join(", "))
            }),
        ]
    })
    .boxed()
}

fn jsonb_case() -> TypeCase {
    let mut literals = all_literals(&[
        "{}",
        "[]",
        " { } ",
        "\t[1]\n",
        "\r\n{}\r\n",
        "\u{a0}{}",
        "\u{feff}{}",
        "{\"a\":1}",
        "{\"a\":1,\"a\":2}",
        "{\"a\":[1,\"x\\ty\"]}",
        "{\"a\":1,}",
        "[1,]",
        "[1 2]",
        "{'a':1}",
        "{a:1}",
        "{\"a\"}",
        "{\"a\":}",
        "\"x\"",
        "\"\\u0000\"",
        "\"\\\\u0000\"",
        "\"\\u0001\"",
        "\"\\ud800\"",
        "\"\\udc00\"",
        "\"\\ud83d\\ude00\"",
        "\"\\uD83D\\uDE00\"",
        "\"\\ud83d\\u0041\"",
        "\"\\u00e9\"",
        "\"\\x41\"",
        "\"\\a\"",
        "\"\t\"",
        "\"\u{1}\"",
        "\"\u{7f}\"",
        "\"\u{1F600}\"",
        "\"a",
        "01",
        "-01",
        "1.",
        ".5",
        "+1",
        "-",
        "1e",
        "-0",
        "-0.0",
        "1.0e+2",
        "1E400",
        "1e-400",
        "1e308",
        "1e309",
        "-1e309",
        "1e-16383",
        "1e-16384",
        "1e-20000",
        "0e-20000",
        "0.0e-16383",
        "1.0e-16382",
        "1.00e-16382",
        "0e1073741822",
        "0e1073741823",
        "0e-1073741822",
        "0e99999999999999999999",
        "0e-99999999999999999999",
        "1e-99999999999999999999",
        "[1e-16383, \"1e-99999\"]",
        "{\"a\\\"1e-99999\":0}",
        "1e131071",
        "1e131072",
        "123456789012345678901234567890",
        "0.1000000000000000000000000000001",
        "tru",
        "True",
        "nul",
        "NaN",
        "Infinity",
        "-Infinity",
        "[NaN]",
        "{\"a\":1}{}",
        "{\"a\":1} x",
        "[] []",
        "/* c */ {}",
    ]);
    literals.push(format!("{}1{}", "[".repeat(100), "]".repeat(100)));
    literals.push(format!("{}1{}", "[".repeat(127), "]".repeat(127)));
    literals.push(format!("{}1{}", "[".repeat(128), "]".repeat(128)));
    literals.push(format!("{}1{}", "[".repeat(129), "]".repeat(129)));
    literals.push(format!("{}1{}", "[".repeat(500), "]".repeat(500)));
    literals.push(format!("0.{}1", "0".repeat(16_382)));
    literals.push(format!("0.{}1", "0".repeat(16_383)));
    literals.push(format!("1{}", "0".repeat(400)));
    literals.push(format!("[{}]", "1".repeat(131_073)));
    let strategy = prop_oneof![
        5 => json_value(),
        1 => "[\\[\\]{}\":,0-9a-z .eE+\\-\\\\]{0,12}",
        1 => "[ \\t\\n\\r]{0,2}(null|true|false|\\{\\}|\\[\\]|\"\"|0)[ \\t\\n\\r]{0,2}",
        1 => any_garbage(),
    ]
    .boxed();
    TypeCase {
        label: "jsonb".into(),
        ty: ColumnType::Jsonb,
        max_length: None,
        literals,
        strategy,
        accepts_own_output: true,
    }
}

fn cases() -> Vec<TypeCase> {
    vec![
        uuid_case(),
        text_case(None),
        text_case(Some(5)),
        int_case(
            "smallint",
            ColumnType::Smallint,
            i128::from(i16::MIN),
            i128::from(i16::MAX),
        ),
        int_case(
            "integer",
            ColumnType::Integer,
            i128::from(i32::MIN),
            i128::from(i32::MAX),
        ),
        int_case(
            "bigint",
            ColumnType::Bigint,
            i128::from(i64::MIN),
            i128::from(i64::MAX),
        ),
        numeric_case(10, 2),
        numeric_case(38, 0),
        numeric_case(5, 5),
        numeric_case(18, 6),
        numeric_case(1, 0),
        double_case(),
        boolean_case(),
        date_case(),
        timestamptz_case(),
        jsonb_case(),
    ]
}

fn env_number(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(v) => v
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v:?} is not a number")),
        Err(_) => default,
    }
}

/// The hand-written strings, then `n` drawn ones, without repeats.
fn inputs(case: &TypeCase, seed: u64, n: usize) -> Vec<String> {
    let mut bytes = [0u8; 32];
    bytes[..8].copy_from_slice(&seed.to_le_bytes());
    bytes[8..16].copy_from_slice(&(case.label.len() as u64).to_le_bytes());
    for (i, b) in case.label.bytes().enumerate() {
        bytes[16 + i % 16] ^= b;
    }
    let rng = TestRng::from_seed(RngAlgorithm::ChaCha, &bytes);
    let mut runner = TestRunner::new_with_rng(Config::default(), rng);
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for s in case.literals.iter().cloned() {
        if seen.insert(s.clone()) {
            out.push(s);
        }
    }
    for _ in 0..n {
        let s = case
            .strategy
            .new_tree(&mut runner)
            .expect("strategy draws a value")
            .current();
        if seen.insert(s.clone()) {
            out.push(s);
        }
    }
    out
}

/// What Sluice makes of `s`: the COPY text it writes, or why it refuses.
fn sluice_reads(case: &TypeCase, s: &str) -> Result<String, String> {
    let v = values::parse(&case.ty, s).map_err(|e| e.to_string())?;
    if let Some(max) = case.max_length
        && !values::fits_max_length(s, max)
    {
        return Err(format!("is longer than {max} characters"));
    }
    let mut out = Vec::new();
    values::write_copy(&case.ty, &v, &mut out);
    String::from_utf8(out).map_err(|e| format!("wrote invalid UTF-8: {e}"))
}

const SETUP: &str = r#"
SET timezone = 'UTC';
SET datestyle = 'ISO, MDY';
SET extra_float_digits = 1;
CREATE FUNCTION pg_reads(raw text, tbl regclass) RETURNS text LANGUAGE plpgsql AS $$
DECLARE r text;
BEGIN
  -- A literal inserted into a column: the type's input function with the column's
  -- type modifier, as COPY calls it.
  EXECUTE format('INSERT INTO %s VALUES (%L) RETURNING v::text', tbl, raw) INTO r;
  RETURN 'ok:' || r;
EXCEPTION WHEN others THEN
  RETURN 'err:' || SQLERRM;
END $$;
"#;

/// PostgreSQL's reading of each string: its `::text` rendering, or its error.
async fn pg_reads(
    client: &Client,
    table: &str,
    sql_type: &str,
    raw: &[String],
) -> Vec<Result<String, String>> {
    client
        .batch_execute(&format!("CREATE TABLE {table} (v {sql_type})"))
        .await
        .expect("probe table");
    // A text parameter cannot hold NUL; no PostgreSQL type can either.
    let sendable: Vec<&str> = raw
        .iter()
        .map(|s| if s.contains('\0') { "" } else { s.as_str() })
        .collect();
    let rows = client
        .query(
            "SELECT pg_reads(r, $2::text::regclass) FROM unnest($1::text[]) WITH ORDINALITY AS u(r, i) ORDER BY i",
            &[&sendable, &table],
        )
        .await
        .expect("pg_reads");
    rows.iter()
        .zip(raw)
        .map(|(row, s)| {
            if s.contains('\0') {
                return Err("NUL cannot be stored".to_owned());
            }
            let r: String = row.get(0);
            match r.strip_prefix("ok:") {
                Some(v) => Ok(v.to_owned()),
                None => Err(r.strip_prefix("err:").unwrap_or(&r).to_owned()),
            }
        })
        .collect()
}

async fn copy_rows(client: &Client, table: &str, data: Vec<u8>) -> Result<u64, String> {
    copy_in(client, &format!("COPY {table} (id, v) FROM STDIN"), data).await
}

async fn copy_in(client: &Client, sql: &str, data: Vec<u8>) -> Result<u64, String> {
    let sink = client.copy_in(sql).await.map_err(|e| e.to_string())?;
    futures::pin_mut!(sink);
    sink.send(bytes::Bytes::from(data))
        .await
        .map_err(|e| e.to_string())?;
    sink.finish().await.map_err(|e| {
        e.as_db_error()
            .map_or_else(|| e.to_string(), |d| d.message().to_owned())
    })
}

/// Loads Sluice's COPY text for each accepted string (by index) and reads each value
/// back as `::text`, or the error that refused its row.
async fn pg_copies(
    client: &Client,
    table: &str,
    sql_type: &str,
    accepted: &[(usize, String)],
) -> BTreeMap<usize, Result<String, String>> {
    client
        .batch_execute(&format!("CREATE TABLE {table} (id integer, v {sql_type})"))
        .await
        .expect("copy table");
    let line = |id: usize, text: &str| format!("{id}\t{text}\n").into_bytes();
    let mut out = BTreeMap::new();
    let all: Vec<u8> = accepted.iter().flat_map(|(i, t)| line(*i, t)).collect();
    if copy_rows(client, table, all).await.is_err() {
        // Find the rows PostgreSQL refuses, one COPY each.
        for (i, t) in accepted {
            if let Err(e) = copy_rows(client, table, line(*i, t)).await {
                out.insert(*i, Err(e));
            }
        }
    }
    let rows = client
        .query(&format!("SELECT id, v::text FROM {table}"), &[])
        .await
        .expect("read back");
    for row in rows {
        let id: i32 = row.get(0);
        let v: Option<String> = row.get(1);
        let id = usize::try_from(id).expect("id");
        out.insert(id, v.ok_or_else(|| "read back as NULL".to_owned()));
    }
    out
}

/// The same accepted strings through the worker's binary COPY (its default): each value
/// parsed again and sent in the type's binary form. Returns what reads back, by index.
async fn pg_copies_binary(
    client: &Client,
    table: &str,
    case: &TypeCase,
    accepted: &[(usize, String)],
    raw: &[String],
) -> BTreeMap<usize, Result<String, String>> {
    let sql_type = case.ty.sql(case.max_length);
    client
        .batch_execute(&format!("CREATE TABLE {table} (id integer, v {sql_type})"))
        .await
        .expect("binary copy table");
    let row = |id: usize| {
        let mut out = Vec::new();
        let value = values::parse(&case.ty, &raw[id]).expect("accepted before");
        copy_binary::row_start(&mut out, 2);
        copy_binary::int4(&mut out, i32::try_from(id).expect("id"));
        copy_binary::value(&mut out, &case.ty, &value);
        out
    };
    let framed = |rows: Vec<u8>| {
        let mut data = copy_binary::HEADER.to_vec();
        data.extend_from_slice(&rows);
        data.extend_from_slice(copy_binary::TRAILER);
        data
    };
    let sql = format!("COPY {table} (id, v) FROM STDIN (FORMAT binary)");
    let mut out = BTreeMap::new();
    let all: Vec<u8> = accepted.iter().flat_map(|(i, _)| row(*i)).collect();
    if copy_in(client, &sql, framed(all)).await.is_err() {
        for (i, _) in accepted {
            if let Err(e) = copy_in(client, &sql, framed(row(*i))).await {
                out.insert(*i, Err(e));
            }
        }
    }
    let rows = client
        .query(&format!("SELECT id, v::text FROM {table}"), &[])
        .await
        .expect("read back");
    for r in rows {
        let id: i32 = r.get(0);
        let v: Option<String> = r.get(1);
        out.insert(
            usize::try_from(id).expect("id"),
            v.ok_or_else(|| "read back as NULL".to_owned()),
        );
    }
    out
}

/// `s` for a message: long strings (deep JSON, 16383 digits) shortened.
fn show(s: &str) -> String {
    let n = s.chars().count();
    if n <= 120 {
        return format!("{s:?}");
    }
    let head: String = s.chars().take(60).collect();
    let tail: String = s.chars().skip(n - 20).collect();
    format!("{head:?} … ({n} characters) … {tail:?}")
}

/// Whether a value PostgreSQL renders as `s` may still be refused (deliberately).
fn own_output_exempt(case: &TypeCase, s: &str) -> bool {
    match case.ty {
        ColumnType::Double => matches!(s, "NaN" | "Infinity" | "-Infinity"),
        ColumnType::Numeric(_) => s == "NaN",
        ColumnType::Date => {
            matches!(s, "infinity" | "-infinity")
                || s.ends_with(" BC")
                || s.split('-').next().is_some_and(|y| y.len() > 4)
        }
        // Numbers beyond f64 (serde_json) and nesting of 128 levels or more.
        ColumnType::Jsonb => true,
        _ => false,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sluice_accepts_only_what_postgres_reads_the_same() {
    let seed = env_number("SLUICE_VALUES_SEED", DEFAULT_SEED);
    let n = usize::try_from(env_number("SLUICE_VALUES_CASES", DEFAULT_CASES as u64))
        .expect("case count");
    let started = std::time::Instant::now();
    let cluster = pg::shared().await;
    let db = cluster.create_database().await.expect("database");
    let client = db.connect().await.expect("connect");
    client.batch_execute(SETUP).await.expect("setup");

    let mut violations = Vec::new();
    let mut report = String::new();
    let mut summary = String::new();
    for (t, case) in cases().iter().enumerate() {
        let sql_type = case.ty.sql(case.max_length);
        let raw = inputs(case, seed, n);
        let sluice: Vec<Result<String, String>> =
            raw.iter().map(|s| sluice_reads(case, s)).collect();
        let pg = pg_reads(&client, &format!("probe_{t}"), &sql_type, &raw).await;
        let accepted: Vec<(usize, String)> = sluice
            .iter()
            .enumerate()
            .filter_map(|(i, r)| r.as_ref().ok().map(|c| (i, c.clone())))
            .collect();
        let copied = pg_copies(&client, &format!("copy_{t}"), &sql_type, &accepted).await;
        let binary = pg_copies_binary(&client, &format!("bcopy_{t}"), case, &accepted, &raw).await;

        let (mut both, mut neither, mut pg_only) = (0usize, 0usize, Vec::new());
        for (i, s) in raw.iter().enumerate() {
            match (&sluice[i], &pg[i]) {
                (Ok(copy_text), pg_value) => {
                    both += 1;
                    let loaded = copied
                        .get(&i)
                        .cloned()
                        .unwrap_or_else(|| Err("row missing after COPY".into()));
                    let loaded_binary = binary
                        .get(&i)
                        .cloned()
                        .unwrap_or_else(|| Err("row missing after binary COPY".into()));
                    if loaded_binary != loaded {
                        violations.push(format!(
                            "{}: {} reads back as {} through COPY text but {} through binary COPY",
                            case.label,
                            show(s),
                            show(&format!("{loaded:?}")),
                            show(&format!("{loaded_binary:?}")),
                        ));
                    }
                    if pg_value.is_err() || loaded.is_err() || *pg_value != loaded {
                        violations.push(format!(
                            "{}: Sluice accepts {} (COPY text {}); PostgreSQL reads the input as {} and the COPY text as {}",
                            case.label,
                            show(s),
                            show(copy_text),
                            show(&format!("{pg_value:?}")),
                            show(&format!("{loaded:?}")),
                        ));
                    }
                }
                (Err(_), Err(_)) => neither += 1,
                (Err(why), Ok(v)) => {
                    if case.accepts_own_output && v == s && !own_output_exempt(case, s) {
                        violations.push(format!(
                            "{}: Sluice refuses {} ({why}), PostgreSQL's own rendering of a value",
                            case.label,
                            show(s)
                        ));
                    }
                    pg_only.push((s.clone(), v.clone()));
                }
            }
        }
        // Differences only in surrounding whitespace (PostgreSQL skips it; the `trim`
        // cleaning rule removes spaces and tabs) are counted apart from the rest.
        let (padded, other): (Vec<_>, Vec<_>) = pg_only.into_iter().partition(|(s, _)| {
            let t = s.trim_matches([' ', '\t', '\n', '\r', '\u{b}', '\u{c}']);
            t.len() != s.len() && sluice_reads(case, t).is_ok()
        });
        let _ = writeln!(
            summary,
            "  {:<16} {:>5} inputs: {:>5} both accept, {:>5} both refuse, {:>4} PostgreSQL only ({} of them for surrounding whitespace)",
            case.label,
            raw.len(),
            both,
            neither,
            padded.len() + other.len(),
            padded.len(),
        );
        let _ = writeln!(
            report,
            "{} — accepted by PostgreSQL, refused by Sluice: {} with surrounding whitespace, {} other",
            case.label,
            padded.len(),
            other.len()
        );
        let mut other = other;
        other.sort_by_key(|(s, _)| (s.chars().count(), s.clone()));
        // An even spread over the sorted list, short to long.
        let step = other.len().div_ceil(SAMPLE).max(1);
        for (s, v) in other.iter().step_by(step) {
            let shown: String = v.chars().take(50).collect();
            let _ = writeln!(report, "    {} -> {shown:?}", show(s));
        }
    }
    eprintln!("values vs PostgreSQL (seed {seed}, {n} drawn per type)\n{summary}\n{report}");
    eprintln!("took {:.1?}", started.elapsed());
    assert!(
        violations.is_empty(),
        "{} violation(s):\n{}",
        violations.len(),
        violations.join("\n")
    );
}
