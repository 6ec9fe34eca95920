//! The declared shape of a pipeline's target table: its columns, their types, the
//! cleaning applied to each field before validation and the rules a value must meet.
//! It is part of the `IngestPipeline` resource (`spec.schema`), so the doc comments are
//! `kubectl explain` text. Without `spec.schema` the built-in e-commerce table is used
//! ([`TableSchema::ecommerce`]), which the worker checks with its own fast path.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

mod check;

pub use check::SchemaError;

/// The target table and how each source field becomes one of its columns.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TableSchema {
    /// Name of the target table. Always quoted in SQL, so case and characters are kept
    /// as written (1–63 bytes). The worker creates it when it is missing.
    pub table: String,
    /// How fields are matched to columns: `header` (default) by the names in the file's
    /// first line, so the producer may reorder or add fields; `position` by order, the
    /// first field to the first column.
    #[serde(default)]
    pub match_by: MatchBy,
    /// Column used by dedupe mode (`worker.dedupeByEventId`): rows whose key is already
    /// stored are skipped and counted. Must be a required column.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// The table's columns, in table order.
    #[schemars(length(min = 1, max = 1600))]
    pub columns: Vec<ColumnSpec>,
}

/// How source fields are matched to columns.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum MatchBy {
    /// By the header line's field names (each column's `source`, or its `name`).
    #[default]
    Header,
    /// By position: the header line is skipped and must have as many fields as there are columns.
    Position,
}

/// One column of the target table.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ColumnSpec {
    /// Column name in the table (quoted in SQL).
    pub name: String,
    /// Name of the source field when it differs from `name` (with matchBy: header).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// Column type: uuid, text, smallint, integer, bigint, numeric, double, boolean,
    /// date, timestamptz or jsonb.
    #[serde(rename = "type")]
    pub type_name: TypeName,
    /// numeric only: total number of digits, 1 to 38.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub precision: Option<u32>,
    /// numeric only: digits after the decimal point, 0 to precision (default 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale: Option<u32>,
    /// Whether the value may be absent (an empty field). An absent value of a column
    /// that is not nullable takes `default`, or the row is rejected as `missing_field`.
    /// For text, an empty field is an empty string unless `clean` has `emptyToNull`.
    #[serde(default)]
    pub nullable: bool,
    /// Value used when the field is absent, written as in a file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<String>,
    /// text only: the only values allowed, in their canonical spelling. Other values are
    /// rejected as `not_allowed` (with `ignoreCase` in `clean`, case is not significant
    /// and the canonical spelling is stored).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed: Vec<String>,
    /// Smallest value allowed (numbers, dates and timestamps), written as in a file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<String>,
    /// Largest value allowed (numbers, dates and timestamps), written as in a file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<String>,
    /// text only: most characters allowed; the table column becomes varchar(maxLength).
    /// Longer values are rejected as `field_too_long`, never truncated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_length: Option<u32>,
    /// date and timestamptz only: values more than this many seconds ahead of the
    /// worker's clock are rejected as `future_timestamp`. Unset: no limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub future_tolerance_seconds: Option<u64>,
    /// Cleaning applied to the field before it is validated, in this order: trim,
    /// lowercase/uppercase, normalizeNumber, normalizeUuid, emptyToNull, ignoreCase.
    /// Every row a rule changes is counted in sluice_rows_cleaned_total{column,rule}.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub clean: Vec<CleanRule>,
}

/// Column types as written in the resource.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum TypeName {
    Uuid,
    Text,
    Smallint,
    Integer,
    Bigint,
    Numeric,
    /// double precision
    Double,
    Boolean,
    Date,
    Timestamptz,
    Jsonb,
}

/// Precision and scale of a numeric column.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct NumericScale {
    pub precision: u32,
    pub scale: u32,
}

/// A column's resolved type.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ColumnType {
    Uuid,
    Text,
    Smallint,
    Integer,
    Bigint,
    Numeric(NumericScale),
    Double,
    Boolean,
    Date,
    Timestamptz,
    Jsonb,
}

impl ColumnType {
    /// The SQL type, as `CREATE TABLE` writes it and `format_type` reports it.
    pub fn sql(&self, max_length: Option<u32>) -> String {
        match self {
            ColumnType::Uuid => "uuid".into(),
            ColumnType::Text => match max_length {
                Some(n) => format!("character varying({n})"),
                None => "text".into(),
            },
            ColumnType::Smallint => "smallint".into(),
            ColumnType::Integer => "integer".into(),
            ColumnType::Bigint => "bigint".into(),
            ColumnType::Numeric(n) => format!("numeric({},{})", n.precision, n.scale),
            ColumnType::Double => "double precision".into(),
            ColumnType::Boolean => "boolean".into(),
            ColumnType::Date => "date".into(),
            ColumnType::Timestamptz => "timestamp with time zone".into(),
            ColumnType::Jsonb => "jsonb".into(),
        }
    }
}

/// A cleaning rule. Cleaning only ever makes a value valid that a person would call
/// valid; it never guesses (a value that is still wrong after cleaning is rejected).
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "camelCase")]
pub enum CleanRule {
    /// Remove surrounding spaces and tabs.
    Trim,
    /// Lower-case the value.
    Lowercase,
    /// Upper-case the value.
    Uppercase,
    /// Numbers: drop a leading `+` and `_` or `'` digit group separators (`1_000`). A
    /// comma is never touched, as it is ambiguous.
    NormalizeNumber,
    /// UUIDs: also accept the `urn:uuid:` prefix; stored lower-case and hyphenated.
    NormalizeUuid,
    /// An empty value (after the rules above) is absent: NULL, or the default.
    EmptyToNull,
    /// Match `allowed` case-insensitively and store the canonical spelling.
    IgnoreCase,
}

impl CleanRule {
    /// The `rule` label of sluice_rows_cleaned_total.
    pub fn code(self) -> &'static str {
        match self {
            CleanRule::Trim => "trim",
            CleanRule::Lowercase => "lowercase",
            CleanRule::Uppercase => "uppercase",
            CleanRule::NormalizeNumber => "normalize_number",
            CleanRule::NormalizeUuid => "normalize_uuid",
            CleanRule::EmptyToNull => "empty_to_null",
            CleanRule::IgnoreCase => "ignore_case",
        }
    }
}

impl ColumnSpec {
    /// The column's resolved type (numeric without precision is refused by [`TableSchema::check`]).
    pub fn column_type(&self) -> ColumnType {
        match self.type_name {
            TypeName::Uuid => ColumnType::Uuid,
            TypeName::Text => ColumnType::Text,
            TypeName::Smallint => ColumnType::Smallint,
            TypeName::Integer => ColumnType::Integer,
            TypeName::Bigint => ColumnType::Bigint,
            TypeName::Numeric => ColumnType::Numeric(NumericScale {
                precision: self
                    .precision
                    .unwrap_or(crate::values::MAX_NUMERIC_PRECISION),
                scale: self.scale.unwrap_or(0),
            }),
            TypeName::Double => ColumnType::Double,
            TypeName::Boolean => ColumnType::Boolean,
            TypeName::Date => ColumnType::Date,
            TypeName::Timestamptz => ColumnType::Timestamptz,
            TypeName::Jsonb => ColumnType::Jsonb,
        }
    }

    /// The source field's name with matchBy: header.
    pub fn source_name(&self) -> &str {
        self.source.as_deref().unwrap_or(&self.name)
    }

    /// A column with only a name and a type (the rest at defaults).
    pub fn new(name: &str, type_name: TypeName) -> ColumnSpec {
        ColumnSpec {
            name: name.into(),
            source: None,
            type_name,
            precision: None,
            scale: None,
            nullable: false,
            default: None,
            allowed: Vec::new(),
            min: None,
            max: None,
            max_length: None,
            future_tolerance_seconds: None,
            clean: Vec::new(),
        }
    }
}

impl TableSchema {
    /// The built-in e-commerce table (`events`), as the worker's fast path checks it,
    /// including its cleaning (an empty text field is missing there, hence emptyToNull). One rule is not expressible per column and only the fast
    /// path applies it: `quantity` must be at least 1 for add_to_cart and purchase.
    pub fn ecommerce(table: &str, future_tolerance_seconds: u64) -> TableSchema {
        use CleanRule::*;
        let col = |name: &str, t: TypeName, clean: &[CleanRule]| ColumnSpec {
            clean: clean.to_vec(),
            ..ColumnSpec::new(name, t)
        };
        let text = |name: &str, clean: &[CleanRule]| ColumnSpec {
            max_length: Some(crate::event::MAX_TEXT_FIELD_BYTES as u32),
            ..col(name, TypeName::Text, clean)
        };
        let id = |name: &str| ColumnSpec {
            min: Some("0".into()),
            ..col(name, TypeName::Bigint, &[Trim])
        };
        TableSchema {
            table: table.into(),
            match_by: MatchBy::Position,
            key: Some("event_id".into()),
            columns: vec![
                col("event_id", TypeName::Uuid, &[Trim, Lowercase]),
                ColumnSpec {
                    future_tolerance_seconds: Some(future_tolerance_seconds),
                    ..col("event_time", TypeName::Timestamptz, &[Trim])
                },
                id("user_id"),
                text("session_id", &[Trim, EmptyToNull]),
                ColumnSpec {
                    allowed: crate::event::EventType::ALL
                        .iter()
                        .map(|t| t.as_str().to_owned())
                        .collect(),
                    ..text("event_type", &[Trim, EmptyToNull, IgnoreCase])
                },
                id("product_id"),
                text("category", &[Trim, Lowercase, EmptyToNull]),
                ColumnSpec {
                    precision: Some(10),
                    scale: Some(2),
                    min: Some("0".into()),
                    ..col("price", TypeName::Numeric, &[Trim])
                },
                ColumnSpec {
                    min: Some("0".into()),
                    ..col("quantity", TypeName::Integer, &[Trim])
                },
            ],
        }
    }

    pub fn column(&self, name: &str) -> Option<&ColumnSpec> {
        self.columns.iter().find(|c| c.name == name)
    }
}

/// Quotes an identifier for SQL: `"name"`, with inner quotes doubled.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}
