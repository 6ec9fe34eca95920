//! Schema migrations (refinery) applied under an advisory lock.
//!
//! The SQL files in the workspace's `migrations/` directory are embedded at compile
//! time. [`migrate`] applies the ones a database lacks while holding a PostgreSQL
//! session advisory lock, so any number of workers may start against the same database
//! at once: one applies, the others wait and then find nothing left to do.

use thiserror::Error;
use tokio_postgres::Client;

mod embedded {
    // Relative to this crate's Cargo.toml directory (worker/).
    refinery::embed_migrations!("../migrations");
}

/// Key of the session advisory lock serialising migrations across workers
/// (ASCII "sluicemg"). Any other user of advisory locks in the same database must
/// stay clear of it.
pub const MIGRATION_LOCK_KEY: i64 = 0x736c_7569_6365_6d67;

/// What [`migrate`] did.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MigrationReport {
    /// Migrations applied by this call, in order, e.g. `V1__events_and_quarantine`.
    /// Empty when the database was already up to date.
    pub applied: Vec<String>,
}

/// Why migrating failed.
#[derive(Debug, Error)]
pub enum MigrateError {
    #[error("could not take the migration advisory lock (pg_advisory_lock({key})): {source}")]
    Lock {
        key: i64,
        #[source]
        source: tokio_postgres::Error,
    },
    #[error("could not release the migration advisory lock (pg_advisory_unlock({key})): {source}")]
    Unlock {
        key: i64,
        #[source]
        source: tokio_postgres::Error,
    },
    #[error("the migration advisory lock (pg_advisory_unlock({key})) was not held by this session")]
    LockNotHeld { key: i64 },
    #[error(
        "applying schema migrations failed (applied before the failure: {applied:?}): {source}"
    )]
    Apply {
        /// Migrations this call applied before failing (they stay applied).
        applied: Vec<String>,
        #[source]
        source: refinery::Error,
    },
}

/// The names of all migrations compiled into this binary, in version order.
pub fn embedded_migrations() -> Vec<String> {
    let runner = embedded::migrations::runner();
    let mut migrations: Vec<_> = runner.get_migrations().iter().collect();
    migrations.sort_by_key(|m| m.version());
    migrations.iter().map(|m| m.to_string()).collect()
}

/// Brings the database's schema up to date with the embedded migrations.
///
/// Safe to call concurrently from several processes: the work happens under the session
/// advisory lock [`MIGRATION_LOCK_KEY`], taken with `pg_advisory_lock` (which waits) and
/// released afterwards, whether or not migrating succeeded. If the connection itself is
/// lost, PostgreSQL releases the lock with the session.
///
/// Each migration runs in its own transaction and is recorded in
/// `refinery_schema_history`; a migration that was applied but whose file has since
/// changed (or disappeared) is an error, not silently skipped.
pub async fn migrate(client: &mut Client) -> Result<MigrationReport, MigrateError> {
    client
        .execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK_KEY])
        .await
        .map_err(|source| MigrateError::Lock {
            key: MIGRATION_LOCK_KEY,
            source,
        })?;

    let outcome = embedded::migrations::runner().run_async(client).await;

    let unlocked = client
        .query_one("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK_KEY])
        .await
        .and_then(|row| row.try_get::<_, bool>(0));

    // A failure to migrate matters more than a failure to unlock that follows it.
    let report = outcome.map_err(|source| MigrateError::Apply {
        applied: source
            .report()
            .map(|r| names(r.applied_migrations()))
            .unwrap_or_default(),
        source,
    })?;
    match unlocked {
        Ok(true) => {}
        Ok(false) => {
            return Err(MigrateError::LockNotHeld {
                key: MIGRATION_LOCK_KEY,
            });
        }
        Err(source) => {
            return Err(MigrateError::Unlock {
                key: MIGRATION_LOCK_KEY,
                source,
            });
        }
    }

    Ok(MigrationReport {
        applied: names(report.applied_migrations()),
    })
}

fn names(migrations: &[refinery::Migration]) -> Vec<String> {
    migrations.iter().map(|m| m.to_string()).collect()
}
