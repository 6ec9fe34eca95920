//! The worker's run: prepare the schema, recover what an earlier run left, then run the
//! planner (discover, claim, plan, parse), the committer (write, record, settle), the
//! claim heartbeat and the liveness watchdog concurrently until shutdown.
//!
//! Where each rule lives: planning and file identity in `planner`, commits and which
//! errors fail a file in `committer` (large files in `committer::large`), the
//! transactions in `batch_commit` and `part_commit`, claims and lookups in `ledger`,
//! restarts and restores in `recovery`, liveness and readiness in `progress`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use sluice_core::telemetry::Health;
use thiserror::Error;
use tokio::sync::{mpsc, watch};

use crate::checkpoint::{Checkpoint, CheckpointError};
use crate::committer::Committer;
use crate::db::DbError;
use sluice_core::metric_names::DegradedCause;

use crate::dbconn::Db;
use crate::ledger;
use crate::metrics::Metrics;
use crate::migrate;
use crate::planner::{Planner, Work};
use crate::progress::Role;
use crate::recovery;
pub use crate::shared::Settings;
use crate::shared::Shared;
use crate::tables;

#[derive(Debug, Error)]
pub enum WorkerError {
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    #[error(transparent)]
    Db(#[from] DbError),
    #[error("applying migrations failed: {0}")]
    Migrate(String),
    #[error("preparing tables failed: {0}")]
    Prepare(tokio_postgres::Error),
    #[error("the target table does not fit the pipeline's schema: {0}")]
    SchemaMismatch(String),
    #[error("landing directory {path}: {source}")]
    Landing {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
}

/// Applies the migrations and creates any configured non-default tables.
async fn prepare_schema(
    client: &mut tokio_postgres::Client,
    settings: &Settings,
) -> Result<(), WorkerError> {
    if let Some(schema) = settings.db.search_path() {
        // Every session's search_path names only this schema; it must exist before the
        // migrations create the ledger in it.
        client
            .batch_execute(&format!(
                "CREATE SCHEMA IF NOT EXISTS {}",
                sluice_core::schema::quote_ident(schema)
            ))
            .await
            .map_err(WorkerError::Prepare)?;
    }
    let report = migrate::migrate(client)
        .await
        .map_err(|e| WorkerError::Migrate(e.to_string()))?;
    tracing::info!(?report, "schema up to date");
    tables::prepare_tables(
        &*client,
        &settings.tables,
        settings.config.dedupe_by_event_id && settings.schema.is_none(),
    )
    .await
    .map_err(WorkerError::Prepare)?;
    if let Some(declared) = &settings.schema {
        tables::prepare_declared(
            &*client,
            &declared.schema,
            settings.config.dedupe_by_event_id,
        )
        .await
        .map_err(|e| match e {
            tables::TableError::Db(e) => WorkerError::Prepare(e),
            tables::TableError::Mismatch(m) => WorkerError::SchemaMismatch(m),
        })?;
    }
    Ok(())
}

/// Runs the worker until `shutdown` turns true, then finishes or abandons the batch in
/// flight within the configured grace period.
pub async fn run(
    settings: Settings,
    metrics: Metrics,
    health: Arc<Health>,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), WorkerError> {
    std::fs::create_dir_all(&settings.landing_dir).map_err(|source| WorkerError::Landing {
        path: settings.landing_dir.clone(),
        source,
    })?;
    let settings = Settings {
        db: settings
            .db
            .clone()
            .with_session_timeout(settings.claim_timeout()),
        ..settings
    };
    let checkpoint = Checkpoint::open(&settings.checkpoint_dir, &settings.worker_id)?;
    tracing::info!(pipeline = %settings.pipeline, worker_id = %settings.worker_id, landing = %settings.landing_dir.display(),
        checkpoint = %settings.checkpoint_dir.display(), database = %settings.db.describe(), "worker starting");
    metrics.precreate_cleaning(settings.schema.as_deref().map(|s| &s.schema));
    let shared = Shared::new(settings.clone(), metrics, health);
    let liveness = tokio::spawn(watch_liveness(shared.clone(), shutdown.clone()));

    let mut control = Db::new(&shared, "control");
    // PostgreSQL may restart while we migrate: a lost connection is retried, not fatal,
    // so that a database restart never turns into a worker crash loop.
    let mut retry_in = Duration::from_millis(200);
    loop {
        let client = tokio::select! {
            c = control.get() => c,
            _ = shutdown.changed() => return Ok(()),
        };
        let error = match prepare_schema(client, &settings).await {
            Ok(()) => {
                shared.set_degraded(DegradedCause::SchemaMismatch, false, "");
                break;
            }
            Err(WorkerError::SchemaMismatch(problem)) => {
                // Not ready and Degraded until someone fixes the table or the schema;
                // checked again with backoff, so a fix is picked up without a restart.
                shared.set_degraded(DegradedCause::SchemaMismatch, true, &problem);
                tokio::select! {
                    _ = tokio::time::sleep(retry_in) => {}
                    _ = shutdown.changed() => return Ok(()),
                }
                retry_in = (retry_in * 2).min(Duration::from_secs(30));
                continue;
            }
            Err(e) => e,
        };
        let connection_lost = client.is_closed() || client.simple_query("SELECT 1").await.is_err();
        if !connection_lost {
            return Err(error);
        }
        control.broken();
        shared
            .metrics
            .db_errors
            .with_label_values(&["migrate"])
            .inc();
        tracing::warn!(%error, retry_in_ms = retry_in.as_millis() as u64,
            "lost the PostgreSQL connection while preparing the schema; retrying");
        tokio::select! {
            _ = tokio::time::sleep(retry_in) => {}
            _ = shutdown.changed() => return Ok(()),
        }
        retry_in = (retry_in * 2).min(Duration::from_secs(10));
    }

    seed_counters(&shared, control.get().await).await;
    let mut committer = Committer::new(&shared, checkpoint);
    let mut planner = Planner::new(&shared, control);
    recovery::check_restore(&shared, &mut committer).await;
    let pending = committer.checkpoint.pending_plans()?;
    if !pending.is_empty() {
        tracing::info!(
            plans = pending.len(),
            "settling batches left by the previous run"
        );
    }
    for plan in pending {
        recovery::settle_pending(&mut committer, &mut planner, plan).await;
    }
    // Claims still under this id belong to the previous run, which nothing continues now
    // that its plans are settled: a worker killed between claiming files and giving back
    // those it found loaded already would otherwise leave them for good.
    if let Some(client) = planner.control.current() {
        match ledger::release_claims(client, &settings.pipeline, &settings.worker_id, None).await {
            Ok(n) if n > 0 => {
                tracing::info!(claims = n, "released claims left by the previous run")
            }
            Ok(_) => {}
            Err(e) => tracing::debug!(error = %e, "could not release the previous run's claims"),
        }
    }

    let heartbeat = tokio::spawn(heartbeat(shared.clone(), shutdown.clone()));
    let (tx, rx) = mpsc::channel::<Work>(1);
    let grace = Duration::from_secs(settings.config.shutdown_grace_seconds);
    let committer_task = tokio::spawn(async move {
        let mut rx = rx;
        while let Some(work) = rx.recv().await {
            committer.handle(work).await;
        }
        committer
    });
    planner.run(tx, shutdown.clone()).await;

    tracing::info!(
        grace_s = grace.as_secs(),
        "stopping: finishing the batch in flight"
    );
    match tokio::time::timeout(grace, committer_task).await {
        Ok(Ok(mut committer)) => {
            tracing::info!("batch in flight finished");
            match committer.checkpoint.sync() {
                Ok(true) => tracing::info!("checkpoint state synced to disk"),
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "syncing the checkpoint state failed; the ledger still decides on restart")
                }
            }
        }
        Ok(Err(e)) => tracing::error!(error = %e, "the committer task failed"),
        Err(_) => tracing::warn!(
            "grace period over: abandoning the batch in flight; it is replayed on restart"
        ),
    }
    heartbeat.abort();
    liveness.abort();
    if let Some(client) = planner.control.current() {
        match ledger::release_claims(client, &settings.pipeline, &settings.worker_id, None).await {
            Ok(n) if n > 0 => tracing::info!(claims = n, "released claims for other workers"),
            Ok(_) => {}
            Err(e) => tracing::debug!(error = %e, "could not release claims; they expire"),
        }
    }
    Ok(())
}

/// Renews the claims of the files in flight — only while their batch is moving: a
/// planner or committer stuck in one step for longer than the claim timeout (a plan
/// that cannot be written, a statement that never returns) lets its claims expire, so
/// other workers take the files over.
async fn heartbeat(shared: Arc<Shared>, mut shutdown: watch::Receiver<bool>) {
    let mut db = Db::new(&shared, "heartbeat");
    let claim_timeout = shared.settings.claim_timeout();
    let period = (claim_timeout / 3).max(Duration::from_millis(100));
    let mut holding_back = false;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(period) => {}
            _ = shutdown.changed() => return,
        }
        // Runs even without claims to renew: the round trip keeps /readyz truthful while
        // the worker is idle.
        let names = shared.in_flight();
        if let Some((role, for_)) = shared
            .watchdog
            .stuck_longer_than(claim_timeout, Instant::now())
            .filter(|(role, _)| *role != Role::Heartbeat)
        {
            if !holding_back {
                tracing::warn!(
                    loop_ = role.as_str(),
                    stuck_s = for_.as_secs(),
                    "not renewing claims: their batch is not moving; other workers take the files over"
                );
            }
            holding_back = true;
            continue;
        }
        holding_back = false;
        shared.watchdog.enter(Role::Heartbeat);
        let client = db.get().await;
        let renewed = ledger::renew_claims(
            client,
            &shared.settings.pipeline,
            &shared.settings.worker_id,
            &names,
        )
        .await;
        shared.watchdog.leave(Role::Heartbeat);
        if let Err(e) = renewed {
            shared
                .metrics
                .db_errors
                .with_label_values(&["heartbeat"])
                .inc();
            tracing::warn!(error = %e, "renewing claims failed");
            db.broken();
        }
    }
}

/// Turns the watchdog's view into `/healthz`.
async fn watch_liveness(shared: Arc<Shared>, mut shutdown: watch::Receiver<bool>) {
    let mut live = true;
    shared.health.set_live(true);
    loop {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
            _ = shutdown.changed() => return,
        }
        let stuck = shared.watchdog.stuck(Instant::now());
        match (&stuck, live) {
            (Some((role, for_)), true) => tracing::error!(
                loop_ = role.as_str(),
                stuck_s = for_.as_secs(),
                "no progress: a loop is stuck in one step; reporting not live so that the pod is restarted"
            ),
            (None, false) => tracing::info!("progress resumed; live again"),
            _ => {}
        }
        live = stuck.is_none();
        shared.health.set_live(live);
    }
}

/// Starts the row and file counters at this worker's totals in the ledger, so that the
/// figures built on them (the pipeline's status, dashboards) do not drop when the worker
/// restarts. A failed read leaves them at zero, as before (logged).
async fn seed_counters(shared: &Shared, client: &tokio_postgres::Client) {
    let s = &shared.settings;
    match crate::ledger::worker_totals(client, &s.pipeline, &s.worker_id).await {
        Ok(t) => {
            let m = &shared.metrics;
            m.rows.with_label_values(&["loaded"]).inc_by(t.rows_loaded);
            m.rows
                .with_label_values(&["rejected"])
                .inc_by(t.rows_rejected);
            m.rows
                .with_label_values(&["deduplicated"])
                .inc_by(t.rows_deduplicated);
            for (outcome, n) in &t.files {
                if matches!(outcome.as_str(), "loaded" | "failed" | "redelivered") {
                    m.files.with_label_values(&[outcome]).inc_by(*n);
                }
            }
            if t.rows_loaded + t.rows_rejected > 0 {
                tracing::info!(
                    rows_loaded = t.rows_loaded,
                    rows_rejected = t.rows_rejected,
                    "counters continue from this worker's totals in the ledger"
                );
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot read this worker's totals from the ledger; its counters start at zero")
        }
    }
}
