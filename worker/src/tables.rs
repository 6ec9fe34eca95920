//! The target tables: configured non-default names are created like the migrated ones
//! (and brought up to the current quarantine columns), and dedupe's unique index.

use sluice_core::config::TableNames;
use sluice_core::schema::{TableSchema, quote_ident};
use tokio_postgres::GenericClient;

use crate::table_plan::{self, ExistingColumn};

/// Why a declared schema's table could not be prepared.
#[derive(Debug, thiserror::Error)]
pub enum TableError {
    #[error(transparent)]
    Db(#[from] tokio_postgres::Error),
    /// The existing table does not fit the schema; the message names the column.
    #[error("{0}")]
    Mismatch(String),
}

/// How often [`prepare_declared`] starts over after losing a race to another worker.
const CONCURRENT_DDL_ATTEMPTS: u32 = 5;

/// Creates a declared schema's table when it is missing; otherwise checks that its
/// columns fit and adds the schema's missing nullable columns.
///
/// Workers starting together race to create the table (or add a column, or the key's
/// index): `IF NOT EXISTS` does not stop two sessions creating the same name at once,
/// and the loser gets a unique violation on the catalogue. The loser starts over, and
/// then finds what the winner made.
pub async fn prepare_declared(
    client: &impl GenericClient,
    schema: &TableSchema,
    dedupe: bool,
) -> Result<(), TableError> {
    let mut attempt = 1;
    loop {
        match prepare_declared_once(client, schema, dedupe).await {
            Err(TableError::Db(e)) if attempt < CONCURRENT_DDL_ATTEMPTS && lost_ddl_race(&e) => {
                tracing::info!(table = %schema.table, error = %e, "another worker changed the table at the same time; checking it again");
                attempt += 1;
            }
            other => return other,
        }
    }
}

/// True for the errors of a DDL statement that ran at the same time as the same statement
/// in another session.
fn lost_ddl_race(e: &tokio_postgres::Error) -> bool {
    use tokio_postgres::error::SqlState;
    e.code().is_some_and(|c| {
        [
            SqlState::UNIQUE_VIOLATION,
            SqlState::DUPLICATE_TABLE,
            SqlState::DUPLICATE_COLUMN,
            SqlState::DUPLICATE_OBJECT,
        ]
        .contains(c)
    })
}

async fn prepare_declared_once(
    client: &impl GenericClient,
    schema: &TableSchema,
    dedupe: bool,
) -> Result<(), TableError> {
    let rows = client
        .query(
            "SELECT a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull, a.atthasdef
             FROM pg_attribute a
             JOIN pg_class c ON c.oid = a.attrelid
             JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE n.nspname = current_schema() AND c.relname = $1
               AND a.attnum > 0 AND NOT a.attisdropped
             ORDER BY a.attnum",
            &[&schema.table],
        )
        .await?;
    if rows.is_empty() {
        client
            .batch_execute(&table_plan::create_table(schema))
            .await?;
        tracing::info!(table = %schema.table, "created the schema's table");
    } else {
        let existing: Vec<ExistingColumn> = rows
            .iter()
            .map(|r| ExistingColumn {
                name: r.get(0),
                sql_type: r.get(1),
                not_null: r.get(2),
                has_default: r.get(3),
            })
            .collect();
        for alter in table_plan::reconcile(schema, &existing).map_err(TableError::Mismatch)? {
            tracing::info!(table = %schema.table, statement = %alter, "adding a nullable column the schema declares");
            client.batch_execute(&alter).await?;
        }
    }
    if dedupe && let Some(key) = &schema.key {
        let index: String = format!("{}_{key}_key", schema.table)
            .chars()
            .take(63)
            .collect();
        client
            .batch_execute(&format!(
                "CREATE UNIQUE INDEX IF NOT EXISTS {} ON {} ({})",
                quote_ident(&index),
                quote_ident(&schema.table),
                quote_ident(key)
            ))
            .await?;
    }
    Ok(())
}

/// Makes sure the configured tables exist and have the columns the worker writes.
pub async fn prepare_tables(
    client: &impl GenericClient,
    tables: &TableNames,
    dedupe: bool,
) -> Result<(), tokio_postgres::Error> {
    if tables.events != "events" {
        client
            .batch_execute(&format!(
                "CREATE TABLE IF NOT EXISTS {} (LIKE events INCLUDING ALL)",
                tables.events
            ))
            .await?;
    }
    if tables.quarantine != "quarantine" {
        let q = &tables.quarantine;
        // A table made before migration V3 lacks the identity columns of a row's file.
        client
            .batch_execute(&format!(
                "CREATE TABLE IF NOT EXISTS {q} (LIKE quarantine INCLUDING ALL);
                 ALTER TABLE {q} ADD COLUMN IF NOT EXISTS pipeline text NOT NULL DEFAULT 'default';
                 ALTER TABLE {q} ADD COLUMN IF NOT EXISTS source_sha256 bytea NOT NULL DEFAULT '\\x';
                 ALTER TABLE {q} DROP CONSTRAINT IF EXISTS {q}_source_file_line_number_key;
                 CREATE UNIQUE INDEX IF NOT EXISTS {q}_source_line_key
                     ON {q} (pipeline, source_file, source_sha256, line_number);"
            ))
            .await?;
    }
    if dedupe {
        client
            .batch_execute(&format!(
                "CREATE UNIQUE INDEX IF NOT EXISTS {0}_event_id_key ON {0} (event_id)",
                tables.events
            ))
            .await?;
    }
    Ok(())
}
