//! The target tables: configured non-default names are created like the migrated ones
//! (and brought up to the current quarantine columns), and dedupe's unique index.

use sluice_core::config::TableNames;
use tokio_postgres::GenericClient;

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
