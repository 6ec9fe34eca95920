//! The row checker of a declared schema (`spec.schema`): each column's field is
//! cleaned, checked against the column's type and rules, and written for `COPY` in
//! table order. The built-in e-commerce table keeps its own fast path ([`super::row`]).

use chrono::{DateTime, Utc};
use sluice_core::reject::RejectReason;
use sluice_core::schema::{CleanRule, ColumnSpec, ColumnType, MatchBy, TableSchema};
use sluice_core::values::{self, Value, ValueError};

use super::out::RowOut;
use super::row::{RowError, check_text, quoted};
use crate::records::Fields;

/// A declared schema prepared for checking rows.
#[derive(Debug)]
pub struct CompiledSchema {
    pub schema: TableSchema,
    columns: Vec<CompiledColumn>,
}

#[derive(Debug)]
struct CompiledColumn {
    ty: ColumnType,
    rules: Vec<CleanRule>,
    /// The default, already in COPY text.
    default: Option<(Value, Vec<u8>)>,
    min: Option<Value>,
    max: Option<Value>,
    /// Lower-cased allowed values, for `ignoreCase`.
    allowed_folded: Vec<String>,
}

/// Where each column's field is in a file's rows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    /// Per table column: the index of its field in a row, or None when the file has no
    /// such field (the column is then absent in every row).
    pub field_of_column: Vec<Option<usize>>,
    /// Fields every row of the file must have.
    pub fields: usize,
}

/// What cleaning changed in one row: (column index, rule) pairs.
pub type RowCleaning = Vec<(usize, CleanRule)>;

impl CompiledSchema {
    /// Prepares a schema that passed [`TableSchema::check`]; returns the schema's
    /// problem otherwise.
    pub fn new(schema: TableSchema) -> Result<CompiledSchema, sluice_core::schema::SchemaError> {
        schema.check()?;
        let columns = schema
            .columns
            .iter()
            .map(|c| {
                let ty = c.column_type();
                // check() parsed these already; a failure here cannot happen.
                let parse =
                    |t: &Option<String>| t.as_ref().and_then(|t| values::parse(&ty, t).ok());
                let default = parse(&c.default).map(|v| {
                    let mut text = Vec::new();
                    values::write_copy(&ty, &v, &mut text);
                    (v, text)
                });
                let mut rules = c.clean.clone();
                rules.sort();
                CompiledColumn {
                    ty,
                    rules,
                    default,
                    min: parse(&c.min),
                    max: parse(&c.max),
                    allowed_folded: c.allowed.iter().map(|a| a.to_lowercase()).collect(),
                }
            })
            .collect();
        Ok(CompiledSchema { schema, columns })
    }

    /// The number of fields of a row of the table.
    pub fn width(&self) -> usize {
        self.columns.len()
    }

    /// The layout of a file without a header line: fields in column order.
    pub fn position_layout(&self) -> Layout {
        Layout {
            field_of_column: (0..self.columns.len()).map(Some).collect(),
            fields: self.columns.len(),
        }
    }

    /// The layout of a file from its header fields.
    pub(crate) fn layout(&self, header: &Fields<'_>) -> Result<Layout, String> {
        let names: Vec<String> = (0..header.len())
            .map(|i| String::from_utf8_lossy(header.get(i).trim_ascii()).into_owned())
            .collect();
        match self.schema.match_by {
            MatchBy::Position => {
                if names.len() != self.columns.len() {
                    return Err(format!(
                        "the header has {} fields; the schema matches fields by position and has {} columns",
                        names.len(),
                        self.columns.len()
                    ));
                }
                Ok(Layout {
                    field_of_column: (0..names.len()).map(Some).collect(),
                    fields: names.len(),
                })
            }
            MatchBy::Header => {
                let mut field_of_column = Vec::with_capacity(self.columns.len());
                for c in &self.schema.columns {
                    let want = c.source_name();
                    let found = names
                        .iter()
                        .position(|n| n == want)
                        .or_else(|| names.iter().position(|n| n.eq_ignore_ascii_case(want)));
                    if found.is_none() && !c.nullable && c.default.is_none() {
                        return Err(format!(
                            "the header has no field {want:?}, which the required column {:?} needs",
                            c.name
                        ));
                    }
                    field_of_column.push(found);
                }
                Ok(Layout {
                    field_of_column,
                    fields: names.len(),
                })
            }
        }
    }

    /// Checks one row and writes it to `out`, a row of [`Self::width`] fields (the caller
    /// truncates the buffer on error).
    pub(crate) fn check_row(
        &self,
        layout: &Layout,
        fields: &Fields<'_>,
        raw: &[u8],
        now: DateTime<Utc>,
        mut out: RowOut<'_>,
        cleaning: &mut RowCleaning,
    ) -> Result<(), RowError> {
        check_text(raw)?;
        if fields.len() != layout.fields {
            return Err((
                RejectReason::WrongColumnCount,
                format!("expected {} columns, found {}", layout.fields, fields.len()),
            ));
        }
        cleaning.clear();
        for (i, (spec, col)) in self.schema.columns.iter().zip(&self.columns).enumerate() {
            let field = layout.field_of_column[i]
                .map(|f| fields.get(f))
                .unwrap_or(b"");
            // The row is valid UTF-8 (checked above) and fields split on ASCII bytes.
            let text = std::str::from_utf8(field).unwrap_or_default();
            check_value(spec, col, text, i, now, &mut out, cleaning)?;
        }
        out.finish();
        Ok(())
    }
}

fn check_value(
    spec: &ColumnSpec,
    col: &CompiledColumn,
    text: &str,
    index: usize,
    now: DateTime<Utc>,
    out: &mut RowOut<'_>,
    cleaning: &mut RowCleaning,
) -> Result<(), RowError> {
    let mut value: std::borrow::Cow<'_, str> = text.into();
    let mut absent = false;
    for rule in &col.rules {
        let changed = match rule {
            // Each rule first checks cheaply whether it changes anything: a clean value
            // costs a byte test or two and no allocation.
            CleanRule::Trim => {
                let b = value.as_bytes();
                let padded = matches!(b.first(), Some(b' ' | b'\t'))
                    || matches!(b.last(), Some(b' ' | b'\t'));
                padded && replace_if(&mut value, |v| Some(v.trim_matches([' ', '\t']).to_owned()))
            }
            CleanRule::Lowercase => replace_if(&mut value, |v| {
                let upper = if v.is_ascii() {
                    v.bytes().any(|b| b.is_ascii_uppercase())
                } else {
                    v.chars().any(char::is_uppercase)
                };
                upper.then(|| v.to_lowercase())
            }),
            CleanRule::Uppercase => replace_if(&mut value, |v| {
                let lower = if v.is_ascii() {
                    v.bytes().any(|b| b.is_ascii_lowercase())
                } else {
                    v.chars().any(char::is_lowercase)
                };
                lower.then(|| v.to_uppercase())
            }),
            CleanRule::NormalizeNumber => replace_if(&mut value, normalize_number),
            CleanRule::NormalizeUuid => replace_if(&mut value, |v| {
                let lower = v.get(..9).filter(|p| p.eq_ignore_ascii_case("urn:uuid:"));
                lower.map(|_| v[9..].to_owned())
            }),
            CleanRule::EmptyToNull => {
                absent = value.is_empty();
                absent
            }
            // Applied with the allowed values below.
            CleanRule::IgnoreCase => false,
        };
        if changed {
            cleaning.push((index, *rule));
        }
    }
    if value.is_empty() && (absent || col.ty != ColumnType::Text) {
        if let Some((value, text)) = &col.default {
            out.value(&col.ty, value, Some(text));
        } else if spec.nullable {
            out.null();
        } else {
            return Err((
                RejectReason::MissingField,
                format!("{} is empty", spec.name),
            ));
        }
        return Ok(());
    }
    if col.ty == ColumnType::Text {
        return check_text_value(spec, col, &value, index, out, cleaning);
    }
    let parsed = values::parse(&col.ty, &value).map_err(|e| {
        let reason = match e {
            ValueError::Malformed(_) => RejectReason::BadValue,
            ValueError::OutOfRange(_) => RejectReason::OutOfRange,
        };
        (
            reason,
            format!("{} {} {e}", spec.name, quoted(value.as_bytes())),
        )
    })?;
    if col.min.as_ref().is_some_and(|lo| &parsed < lo) {
        return Err(out_of_range(spec, &value, "below", spec.min.as_deref()));
    }
    if col.max.as_ref().is_some_and(|hi| &parsed > hi) {
        return Err(out_of_range(spec, &value, "above", spec.max.as_deref()));
    }
    if let Some(secs) = spec.future_tolerance_seconds {
        let limit = now + chrono::Duration::seconds(i64::try_from(secs).unwrap_or(i64::MAX / 1000));
        let ahead = match &parsed {
            Value::Timestamp(t) => *t > limit,
            Value::Date(d) => *d > limit.date_naive(),
            _ => false,
        };
        if ahead {
            return Err((
                RejectReason::FutureTimestamp,
                format!(
                    "{} {} is more than {secs} s ahead of the worker's clock",
                    spec.name,
                    quoted(value.as_bytes())
                ),
            ));
        }
    }
    let canonical = is_canonical(&col.ty, value.as_bytes()).then_some(value.as_bytes());
    out.value(&col.ty, &parsed, canonical);
    Ok(())
}

/// Whether a value that parsed is already written the way [`values::write_copy`] would
/// write it, so that its bytes can be copied as they are (the common case, and the
/// cheapest).
fn is_canonical(ty: &ColumnType, v: &[u8]) -> bool {
    let digits =
        |d: &[u8]| !d.is_empty() && (d == b"0" || d[0] != b'0') && d.iter().all(u8::is_ascii_digit);
    let unsigned = v.strip_prefix(b"-").unwrap_or(v);
    match ty {
        ColumnType::Smallint | ColumnType::Integer | ColumnType::Bigint => {
            digits(unsigned) && v != b"-0"
        }
        ColumnType::Numeric(n) if n.scale == 0 => digits(unsigned) && v != b"-0",
        ColumnType::Numeric(n) => match unsigned.iter().position(|b| *b == b'.') {
            Some(dot) => {
                let frac = &unsigned[dot + 1..];
                digits(&unsigned[..dot])
                    && frac.len() == n.scale as usize
                    && frac.iter().all(u8::is_ascii_digit)
                    && !(v[0] == b'-' && unsigned.iter().all(|b| matches!(b, b'0' | b'.')))
            }
            None => false,
        },
        ColumnType::Uuid => {
            v.len() == 36
                && v.iter().enumerate().all(|(i, b)| match i {
                    8 | 13 | 18 | 23 => *b == b'-',
                    _ => b.is_ascii_digit() || (b'a'..=b'f').contains(b),
                })
        }
        _ => false,
    }
}

fn check_text_value(
    spec: &ColumnSpec,
    col: &CompiledColumn,
    value: &str,
    index: usize,
    out: &mut RowOut<'_>,
    cleaning: &mut RowCleaning,
) -> Result<(), RowError> {
    if let Some(max) = spec.max_length
        && !values::fits_max_length(value, max)
    {
        return Err((
            RejectReason::FieldTooLong,
            format!(
                "{} is {} characters long; at most {max} are allowed",
                spec.name,
                value.chars().count()
            ),
        ));
    }
    if spec.allowed.is_empty() {
        out.text(value.as_bytes());
        return Ok(());
    }
    if let Some(exact) = spec.allowed.iter().find(|a| *a == value) {
        out.text(exact.as_bytes());
        return Ok(());
    }
    if col.rules.contains(&CleanRule::IgnoreCase) {
        let folded = value.to_lowercase();
        if let Some(at) = col.allowed_folded.iter().position(|a| *a == folded) {
            cleaning.push((index, CleanRule::IgnoreCase));
            out.text(spec.allowed[at].as_bytes());
            return Ok(());
        }
    }
    Err((
        RejectReason::NotAllowed,
        format!(
            "{} {} is not one of {}",
            spec.name,
            quoted(value.as_bytes()),
            spec.allowed.join(", ")
        ),
    ))
}

fn out_of_range(spec: &ColumnSpec, value: &str, side: &str, bound: Option<&str>) -> RowError {
    (
        RejectReason::OutOfRange,
        format!(
            "{} {} is {side} the allowed {}",
            spec.name,
            quoted(value.as_bytes()),
            match side {
                "below" => format!("minimum {}", bound.unwrap_or("?")),
                _ => format!("maximum {}", bound.unwrap_or("?")),
            }
        ),
    )
}

fn replace_if(
    value: &mut std::borrow::Cow<'_, str>,
    f: impl FnOnce(&str) -> Option<String>,
) -> bool {
    match f(value) {
        Some(new) => {
            *value = new.into();
            true
        }
        None => false,
    }
}

/// Drops a leading `+` and `_`/`'` between digits; anything else is left for the type
/// check to judge.
fn normalize_number(v: &str) -> Option<String> {
    let unsigned = v.strip_prefix('+').unwrap_or(v);
    let b = unsigned.as_bytes();
    let separator_at = |i: usize| {
        matches!(b[i], b'_' | b'\'')
            && i > 0
            && i + 1 < b.len()
            && b[i - 1].is_ascii_digit()
            && b[i + 1].is_ascii_digit()
    };
    let has_separator = (0..b.len()).any(separator_at);
    if unsigned.len() == v.len() && !has_separator {
        return None;
    }
    let kept: String = unsigned
        .char_indices()
        .filter(|(i, _)| !(*i < b.len() && separator_at(*i)))
        .map(|(_, c)| c)
        .collect();
    Some(kept)
}

#[cfg(test)]
#[path = "general_tests.rs"]
mod tests;
