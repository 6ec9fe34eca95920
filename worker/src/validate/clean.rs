//! Cleaning before validation, for the built-in e-commerce schema: messy but valid
//! values are normalised instead of rejected, and every row changed is counted by
//! column and rule (`sluice_rows_cleaned_total`).
//!
//! The rules (docs/validation.md, "Cleaning"):
//! - `trim`: every field loses its surrounding spaces and tabs;
//! - `ignore_case`: `event_type` matches view / add_to_cart / purchase case-insensitively
//!   and is stored in its canonical spelling (the same code as a declared schema's
//!   `ignoreCase`);
//! - `lowercase`: `category` is stored lower-case, and an `event_id` written with
//!   upper-case hex digits is stored lower-case (as every UUID is).
//!
//! Each rule costs a clean row next to nothing: the first and last byte of a field for
//! `trim`, a failed exact match for `ignore_case`, one short byte scan for `lowercase`.

use sluice_core::event::{COLUMN_COUNT, HEADER_FIELDS};
use sluice_core::schema::CleanRule;

use super::general::{CompiledSchema, RowCleaning as DeclaredRowCleaning};

/// A cleaning rule; the value is its index in [`Rule::ALL`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    /// Surrounding spaces and tabs removed.
    Trim = 0,
    /// An enumeration value matched case-insensitively, stored in its canonical spelling.
    IgnoreCase = 1,
    /// Stored lower-case.
    Lowercase = 2,
}

impl Rule {
    pub const ALL: [Rule; 3] = [Rule::Trim, Rule::IgnoreCase, Rule::Lowercase];

    /// The `rule` label value.
    pub fn code(self) -> &'static str {
        match self {
            Rule::Trim => "trim",
            Rule::IgnoreCase => "ignore_case",
            Rule::Lowercase => "lowercase",
        }
    }
}

/// The (column, rule) pairs the e-commerce schema can apply, for pre-creating metric
/// label values: `trim` on every column, `ignore_case` on `event_type`, `lowercase` on
/// `event_id` and `category`.
pub fn applicable() -> impl Iterator<Item = (&'static str, Rule)> {
    HEADER_FIELDS.iter().map(|c| (*c, Rule::Trim)).chain([
        ("event_type", Rule::IgnoreCase),
        ("event_id", Rule::Lowercase),
        ("category", Rule::Lowercase),
    ])
}

/// What cleaning changed in one row: one bit per (column, rule).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RowCleaning(u32);

impl RowCleaning {
    pub fn set(&mut self, column: usize, rule: Rule) {
        self.0 |= 1 << (column * Rule::ALL.len() + rule as usize);
    }

    pub fn is_clean(self) -> bool {
        self.0 == 0
    }
}

/// Rows changed by cleaning, by column and rule. A row counts once per (column, rule)
/// that changed it; only rows that passed validation are counted. Allocates only once
/// a row was cleaned (summaries of clean files stay small).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Cleaned {
    counts: Option<Box<Counts>>,
    /// The counts of a declared schema's rows (empty for the built-in schema).
    declared: Option<Box<DeclaredCounts>>,
}

/// Per (column name, rule): rows of a declared schema changed.
type DeclaredCounts = std::collections::BTreeMap<(String, CleanRule), u64>;

type Counts = [[u64; 3]; COLUMN_COUNT];

impl Cleaned {
    /// Counts one valid row.
    #[inline]
    pub fn add_row(&mut self, row: RowCleaning) {
        if !row.is_clean() {
            self.add_cleaned_row(row);
        }
    }

    fn add_cleaned_row(&mut self, row: RowCleaning) {
        let all = self.counts.get_or_insert_with(Box::default);
        for (column, counts) in all.iter_mut().enumerate() {
            for rule in Rule::ALL {
                let bit = 1 << (column * Rule::ALL.len() + rule as usize);
                if row.0 & bit != 0 {
                    counts[rule as usize] += 1;
                }
            }
        }
    }

    /// Counts one valid row of a declared schema.
    #[inline]
    pub fn add_declared_row(&mut self, schema: &CompiledSchema, row: &DeclaredRowCleaning) {
        if row.is_empty() {
            return;
        }
        let all = self.declared.get_or_insert_with(Box::default);
        for (column, rule) in row {
            let name = &schema.schema.columns[*column].name;
            match all.get_mut(&(name.clone(), *rule)) {
                Some(n) => *n += 1,
                None => {
                    all.insert((name.clone(), *rule), 1);
                }
            }
        }
    }

    pub fn absorb(&mut self, other: &Cleaned) {
        if let Some(theirs) = &other.declared {
            let all = self.declared.get_or_insert_with(Box::default);
            for (k, n) in theirs.iter() {
                *all.entry(k.clone()).or_default() += n;
            }
        }
        let Some(other) = &other.counts else {
            return;
        };
        let all = self.counts.get_or_insert_with(Box::default);
        for (mine, theirs) in all.iter_mut().zip(other.iter()) {
            for (a, b) in mine.iter_mut().zip(theirs) {
                *a += b;
            }
        }
    }

    /// Rows of `column` changed by `rule` (0 for an unknown column).
    pub fn get(&self, column: &str, rule: Rule) -> u64 {
        HEADER_FIELDS
            .iter()
            .position(|c| *c == column)
            .zip(self.counts.as_deref())
            .map_or(0, |(i, counts)| counts[i][rule as usize])
    }

    /// The non-zero counts: (column, rule code, rows).
    pub fn iter(&self) -> impl Iterator<Item = (&str, &'static str, u64)> + '_ {
        HEADER_FIELDS
            .iter()
            .zip(self.counts.as_deref().into_iter().flatten())
            .flat_map(|(column, counts)| {
                Rule::ALL
                    .into_iter()
                    .map(move |rule| (*column, rule.code(), counts[rule as usize]))
            })
            .chain(
                self.declared
                    .as_deref()
                    .into_iter()
                    .flatten()
                    .map(|((column, rule), n)| (column.as_str(), rule.code(), *n)),
            )
            .filter(|(_, _, n)| *n > 0)
    }

    pub fn is_empty(&self) -> bool {
        self.iter().next().is_none()
    }
}

fn is_blank(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

/// The field without surrounding spaces and tabs (the same slice when there are none).
#[inline]
pub(super) fn trim(field: &[u8]) -> &[u8] {
    match (field.first(), field.last()) {
        (Some(&first), Some(&last)) if is_blank(first) || is_blank(last) => {
            let start = field.iter().position(|b| !is_blank(*b));
            match start {
                None => &[],
                Some(start) => {
                    let end = field
                        .iter()
                        .rposition(|b| !is_blank(*b))
                        .map_or(start, |e| e + 1);
                    &field[start..end]
                }
            }
        }
        _ => field,
    }
}

/// The lower-case form of a text value, or None when it is lower-case already. Only
/// values holding an upper-case ASCII letter or a non-ASCII byte are looked at closely.
pub(super) fn lowercase(field: &[u8]) -> Option<Vec<u8>> {
    if !field.iter().any(|b| b.is_ascii_uppercase() || *b >= 0x80) {
        return None;
    }
    let lower = match std::str::from_utf8(field) {
        Ok(text) => text.to_lowercase().into_bytes(),
        // Not reached (rows are checked to be UTF-8 first); ASCII-only then.
        Err(_) => field.to_ascii_lowercase(),
    };
    (lower != field).then_some(lower)
}
