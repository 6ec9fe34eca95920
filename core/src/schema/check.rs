//! What a declared schema must satisfy beyond its JSON shape; every error names the
//! column and says what to change.

use std::collections::HashSet;

use super::{CleanRule, ColumnSpec, ColumnType, MatchBy, TableSchema, TypeName};
use crate::values::{self, MAX_NUMERIC_PRECISION, Value};

/// A schema that cannot work, with what to fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid schema{}: {problem}", column.as_ref().map(|c| format!(" (column {c:?})")).unwrap_or_default())]
pub struct SchemaError {
    pub column: Option<String>,
    pub problem: String,
}

fn err(column: &ColumnSpec, problem: impl Into<String>) -> SchemaError {
    SchemaError {
        column: Some(column.name.clone()),
        problem: problem.into(),
    }
}

/// Identifiers PostgreSQL accepts once quoted: 1–63 bytes, no NUL.
fn check_identifier(what: &str, name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 63 || name.contains('\0') {
        return Err(format!(
            "{what} {name:?} must be 1-63 bytes long without NUL"
        ));
    }
    Ok(())
}

/// Names the worker keeps for itself in the target table's schema.
const RESERVED_TABLE_PREFIX: &str = "sluice_";

impl TableSchema {
    /// Checks the schema; returns the first problem found.
    pub fn check(&self) -> Result<(), SchemaError> {
        let table_err = |problem: String| SchemaError {
            column: None,
            problem,
        };
        check_identifier("table", &self.table).map_err(table_err)?;
        if self.table.starts_with(RESERVED_TABLE_PREFIX) {
            return Err(table_err(format!(
                "table {:?}: names starting with {RESERVED_TABLE_PREFIX} belong to Sluice's ledger",
                self.table
            )));
        }
        if self.columns.is_empty() {
            return Err(table_err("declare at least one column".into()));
        }
        let mut names = HashSet::new();
        let mut sources = HashSet::new();
        for c in &self.columns {
            check_identifier("column", &c.name).map_err(|p| err(c, p))?;
            if !names.insert(c.name.as_str()) {
                return Err(err(c, "the column is declared twice"));
            }
            if self.match_by == MatchBy::Header && !sources.insert(c.source_name()) {
                return Err(err(
                    c,
                    format!("source field {:?} is used by two columns", c.source_name()),
                ));
            }
            check_column(c)?;
        }
        if let Some(key) = &self.key {
            let Some(c) = self.column(key) else {
                return Err(table_err(format!("key {key:?} is not one of the columns")));
            };
            if c.nullable || c.type_name == TypeName::Jsonb {
                return Err(err(
                    c,
                    "the key column must be required (not nullable) and not jsonb",
                ));
            }
        }
        Ok(())
    }
}

fn check_column(c: &ColumnSpec) -> Result<(), SchemaError> {
    let ty = c.column_type();
    match c.type_name {
        TypeName::Numeric => {
            let p = c.precision.ok_or_else(|| {
                err(
                    c,
                    "numeric needs a precision (1-38), e.g. precision: 10, scale: 2",
                )
            })?;
            if !(1..=MAX_NUMERIC_PRECISION).contains(&p) {
                return Err(err(c, format!("precision {p} is outside 1-38")));
            }
            if c.scale.unwrap_or(0) > p {
                return Err(err(c, "scale must not exceed precision"));
            }
        }
        _ if c.precision.is_some() || c.scale.is_some() => {
            return Err(err(c, "precision and scale apply to numeric columns only"));
        }
        _ => {}
    }
    if !c.allowed.is_empty() && c.type_name != TypeName::Text {
        return Err(err(c, "allowed applies to text columns only"));
    }
    if c.max_length.is_some() && c.type_name != TypeName::Text {
        return Err(err(c, "maxLength applies to text columns only"));
    }
    if c.max_length == Some(0) || c.max_length.is_some_and(|n| n > 10_485_760) {
        return Err(err(c, "maxLength must be 1 to 10485760"));
    }
    if c.future_tolerance_seconds.is_some()
        && !matches!(c.type_name, TypeName::Date | TypeName::Timestamptz)
    {
        return Err(err(
            c,
            "futureToleranceSeconds applies to date and timestamptz columns only",
        ));
    }
    let ordered = matches!(
        ty,
        ColumnType::Smallint
            | ColumnType::Integer
            | ColumnType::Bigint
            | ColumnType::Numeric(_)
            | ColumnType::Double
            | ColumnType::Date
            | ColumnType::Timestamptz
    );
    let bound = |field: &str, text: &Option<String>| -> Result<Option<Value>, SchemaError> {
        let Some(text) = text else { return Ok(None) };
        if !ordered {
            return Err(err(
                c,
                format!("{field} applies to numbers, dates and timestamps only"),
            ));
        }
        values::parse(&ty, text)
            .map(Some)
            .map_err(|e| err(c, format!("{field} {text:?} {e}")))
    };
    let min = bound("min", &c.min)?;
    let max = bound("max", &c.max)?;
    if let (Some(lo), Some(hi)) = (&min, &max)
        && lo > hi
    {
        return Err(err(c, "min is greater than max"));
    }
    if let Some(d) = &c.default {
        let v = values::parse(&ty, d).map_err(|e| err(c, format!("default {d:?} {e}")))?;
        if !c.allowed.is_empty() && !c.allowed.iter().any(|a| a == d) {
            return Err(err(c, format!("default {d:?} is not one of allowed")));
        }
        if min.as_ref().is_some_and(|lo| &v < lo) || max.as_ref().is_some_and(|hi| &v > hi) {
            return Err(err(c, format!("default {d:?} lies outside min/max")));
        }
    }
    let mut seen = HashSet::new();
    for rule in &c.clean {
        if !seen.insert(*rule) {
            return Err(err(
                c,
                format!("clean rule {} is listed twice", rule.code()),
            ));
        }
        let fits = match rule {
            CleanRule::Trim | CleanRule::EmptyToNull => true,
            CleanRule::Lowercase | CleanRule::Uppercase => {
                matches!(c.type_name, TypeName::Text | TypeName::Uuid)
            }
            CleanRule::NormalizeNumber => matches!(
                c.type_name,
                TypeName::Smallint
                    | TypeName::Integer
                    | TypeName::Bigint
                    | TypeName::Numeric
                    | TypeName::Double
            ),
            CleanRule::NormalizeUuid => c.type_name == TypeName::Uuid,
            CleanRule::IgnoreCase => !c.allowed.is_empty(),
        };
        if !fits {
            return Err(err(
                c,
                format!(
                    "clean rule {} does not apply to a {:?} column{}",
                    rule.code(),
                    c.type_name,
                    if *rule == CleanRule::IgnoreCase {
                        " without allowed values"
                    } else {
                        ""
                    }
                ),
            ));
        }
    }
    if c.clean.contains(&CleanRule::Lowercase) && c.clean.contains(&CleanRule::Uppercase) {
        return Err(err(c, "lowercase and uppercase exclude each other"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(c: ColumnSpec) -> TableSchema {
        TableSchema {
            table: "t".into(),
            match_by: MatchBy::Header,
            key: None,
            columns: vec![c],
        }
    }

    #[test]
    fn the_builtin_schema_is_valid() {
        TableSchema::ecommerce("events", 86_400)
            .check()
            .expect("valid");
    }

    #[test]
    fn errors_name_the_column_and_the_fix() {
        let e = one(ColumnSpec::new("price", TypeName::Numeric))
            .check()
            .expect_err("no precision");
        assert_eq!(e.column.as_deref(), Some("price"));
        assert!(e.to_string().contains("precision"), "{e}");

        let c = ColumnSpec {
            min: Some("ten".into()),
            ..ColumnSpec::new("qty", TypeName::Integer)
        };
        let e = one(c).check().expect_err("bad min");
        assert!(
            e.to_string().contains("min \"ten\" is not an integer"),
            "{e}"
        );

        let c = ColumnSpec {
            clean: vec![CleanRule::IgnoreCase],
            ..ColumnSpec::new("kind", TypeName::Text)
        };
        assert!(one(c).check().is_err());

        let c = ColumnSpec {
            default: Some("x".into()),
            allowed: vec!["a".into()],
            ..ColumnSpec::new("kind", TypeName::Text)
        };
        assert!(one(c).check().is_err());
    }

    #[test]
    fn duplicate_columns_and_bad_keys_are_refused() {
        let mut s = one(ColumnSpec::new("a", TypeName::Integer));
        s.columns.push(ColumnSpec::new("a", TypeName::Text));
        assert!(s.check().is_err());
        let mut s = one(ColumnSpec {
            nullable: true,
            ..ColumnSpec::new("a", TypeName::Integer)
        });
        s.key = Some("a".into());
        assert!(s.check().is_err());
        s.key = Some("b".into());
        assert!(s.check().is_err());
        let mut s = one(ColumnSpec::new("a", TypeName::Integer));
        s.table = "sluice_files".into();
        assert!(s.check().is_err());
    }

    #[test]
    fn yaml_reads_as_a_user_writes_it() {
        let s: TableSchema = serde_json::from_value(serde_json::json!({
            "table": "Orders",
            "columns": [
                {"name": "id", "type": "uuid", "clean": ["trim", "normalizeUuid"]},
                {"name": "total", "type": "numeric", "precision": 12, "scale": 2, "min": "0"},
                {"name": "status", "type": "text", "allowed": ["open", "paid"], "clean": ["trim", "ignoreCase"]},
                {"name": "note", "type": "text", "nullable": true, "clean": ["emptyToNull"]}
            ]
        }))
        .expect("parse");
        s.check().expect("valid");
        assert_eq!(s.match_by, MatchBy::Header);
        assert_eq!(s.columns[1].column_type().sql(None), "numeric(12,2)");
    }
}
