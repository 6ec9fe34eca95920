//! What to do with a declared schema's table: the `CREATE TABLE` of a missing one, and
//! for an existing one, whether its columns fit the schema and which nullable columns to
//! add. Pure, so every case is unit-tested; [`crate::tables`] does the I/O.

use sluice_core::schema::{ColumnType, TableSchema, quote_ident};

/// One column of an existing table, as PostgreSQL's catalogue reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExistingColumn {
    pub name: String,
    /// `format_type(atttypid, atttypmod)`, e.g. `character varying(20)`.
    pub sql_type: String,
    pub not_null: bool,
    pub has_default: bool,
}

/// `CREATE TABLE IF NOT EXISTS` for the schema (identifiers quoted).
pub fn create_table(schema: &TableSchema) -> String {
    let columns: Vec<String> = schema
        .columns
        .iter()
        .map(|c| {
            format!(
                "{} {}{}",
                quote_ident(&c.name),
                c.column_type().sql(c.max_length),
                if c.nullable { "" } else { " NOT NULL" }
            )
        })
        .collect();
    format!(
        "CREATE TABLE IF NOT EXISTS {} ({})",
        quote_ident(&schema.table),
        columns.join(", ")
    )
}

/// The `ALTER TABLE … ADD COLUMN` statements that bring `existing` up to the schema, or
/// why the table cannot take the schema's rows (naming the column and the fix).
pub fn reconcile(schema: &TableSchema, existing: &[ExistingColumn]) -> Result<Vec<String>, String> {
    let table = quote_ident(&schema.table);
    let mut alters = Vec::new();
    for c in &schema.columns {
        let declared = c.column_type().sql(c.max_length);
        let Some(found) = existing.iter().find(|e| e.name == c.name) else {
            if !c.nullable {
                return Err(format!(
                    "table {table} has no column {:?}, and a required column is not added automatically \
                     (rows already stored have no value for it): declare it nullable: true, or add it yourself",
                    c.name
                ));
            }
            alters.push(format!(
                "ALTER TABLE {table} ADD COLUMN IF NOT EXISTS {} {declared}",
                quote_ident(&c.name)
            ));
            continue;
        };
        if !type_fits(&c.column_type(), c.max_length, &found.sql_type) {
            return Err(format!(
                "column {:?} of table {table} is {} but the schema declares {declared}; \
                 change the schema's type or alter the column",
                c.name, found.sql_type
            ));
        }
        if c.nullable && found.not_null && c.default.is_none() {
            return Err(format!(
                "column {:?} of table {table} is NOT NULL but the schema declares it nullable; \
                 give it a default in the schema, declare it required, or drop the NOT NULL",
                c.name
            ));
        }
    }
    for e in existing {
        if e.not_null && !e.has_default && schema.column(&e.name).is_none() {
            return Err(format!(
                "column {:?} of table {table} is NOT NULL without a default and the schema does not \
                 fill it; add it to the schema or give it a default",
                e.name
            ));
        }
    }
    Ok(alters)
}

/// Whether a column of `found` type stores every value the schema lets through.
fn type_fits(ty: &ColumnType, max_length: Option<u32>, found: &str) -> bool {
    if *ty == ColumnType::Text {
        if found == "text" {
            return true;
        }
        let room = found
            .strip_prefix("character varying(")
            .and_then(|r| r.strip_suffix(')'))
            .and_then(|n| n.parse::<u32>().ok());
        return match (room, max_length) {
            (Some(room), Some(max)) => max <= room,
            (None, _) => found == "character varying",
            (Some(_), None) => false,
        };
    }
    ty.sql(max_length) == found
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_core::schema::{ColumnSpec, MatchBy, TypeName};

    fn schema() -> TableSchema {
        TableSchema {
            table: "My Orders".into(),
            match_by: MatchBy::Header,
            key: None,
            columns: vec![
                ColumnSpec::new("id", TypeName::Uuid),
                ColumnSpec {
                    max_length: Some(10),
                    ..ColumnSpec::new("name", TypeName::Text)
                },
                ColumnSpec {
                    nullable: true,
                    precision: Some(10),
                    scale: Some(2),
                    ..ColumnSpec::new("total", TypeName::Numeric)
                },
            ],
        }
    }

    fn col(name: &str, sql_type: &str, not_null: bool) -> ExistingColumn {
        ExistingColumn {
            name: name.into(),
            sql_type: sql_type.into(),
            not_null,
            has_default: false,
        }
    }

    #[test]
    fn create_quotes_every_identifier() {
        assert_eq!(
            create_table(&schema()),
            "CREATE TABLE IF NOT EXISTS \"My Orders\" (\"id\" uuid NOT NULL, \
             \"name\" character varying(10) NOT NULL, \"total\" numeric(10,2))"
        );
    }

    #[test]
    fn a_fitting_table_needs_nothing_and_a_missing_nullable_column_is_added() {
        let full = [
            col("id", "uuid", true),
            col("name", "text", false),
            col("total", "numeric(10,2)", false),
            col("extra", "integer", false),
        ];
        assert_eq!(reconcile(&schema(), &full), Ok(vec![]));
        assert_eq!(
            reconcile(&schema(), &full[..2]),
            Ok(vec![
                "ALTER TABLE \"My Orders\" ADD COLUMN IF NOT EXISTS \"total\" numeric(10,2)".into()
            ])
        );
    }

    #[test]
    fn mismatches_name_the_column() {
        let cases = [
            vec![
                col("name", "text", false),
                col("total", "numeric(10,2)", false),
            ],
            vec![col("id", "text", true), col("name", "text", false)],
            vec![
                col("id", "uuid", true),
                col("name", "character varying(5)", false),
            ],
            vec![
                col("id", "uuid", true),
                col("name", "text", false),
                col("total", "numeric(10,2)", true),
            ],
            vec![
                col("id", "uuid", true),
                col("name", "text", false),
                col("must", "integer", true),
            ],
        ];
        for (existing, column) in cases.iter().zip(["id", "id", "name", "total", "must"]) {
            let e = reconcile(&schema(), existing).expect_err("mismatch");
            assert!(e.contains(&format!("{column:?}")), "{e}");
        }
    }
}
