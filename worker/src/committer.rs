//! The committer: writes each planned batch (or each part of a large file) to
//! PostgreSQL, retrying whatever is not the data's fault, then records the commit on the
//! checkpoint volume and runs the after-commit step.
//!
//! Which errors fail a file: only those `db::classify` calls [`ErrorClass::Data`], and
//! only after the batch was split so that the refusing file is known. Connection losses
//! are retried at once (after checking whether the commit landed); environment errors
//! (lock or statement timeouts, disk full, permissions, a missing table) are retried with
//! backoff while the worker reports itself degraded and not ready.

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use sluice_core::metric_names::DegradedCause;
use tokio_postgres::Client;
use uuid::Uuid;

use crate::batch_commit::{
    self, CommitContext, CommitSummary, FileContent, FileToCommit, Settlement,
};
use crate::checkpoint::Checkpoint;
use crate::db::{ErrorClass, classify, describe_pg_error};
use crate::dbconn::{Backoff, Db};
use crate::ledger::{self, Outcome, hex};
use crate::progress::Role;
use crate::settle::{Settle, settle};
use crate::shared::Shared;
use crate::source::LandingDirs;
use crate::validate::Cleaned;

mod large;

/// Ledger reason of a file PostgreSQL refused although it passed validation.
pub const DATABASE_REJECTED: &str = "database_rejected";

/// Causes that a successful database round trip clears (all but the checkpoint's and
/// the landing directory's).
fn is_database_cause(cause: DegradedCause) -> bool {
    !matches!(
        cause,
        DegradedCause::CheckpointUnwritable
            | DegradedCause::AfterCommitFailing
            | DegradedCause::RestoredBehindCheckpoint
    )
}

pub struct Committer {
    pub db: Db,
    pub checkpoint: Checkpoint,
    pub shared: Arc<Shared>,
    pub dirs: LandingDirs,
    ctx: CommitContext,
    /// When to vacuum the claims and make sure the planner has statistics (see
    /// [`ledger::UpkeepClock`]).
    upkeep: ledger::UpkeepClock,
}

/// What one attempt's failure means for the retry loop.
pub(crate) enum Failure {
    /// The file's content is refused: split the batch or fail the file.
    Data(tokio_postgres::Error),
    /// Retry after the wait already taken (and, for a lost connection, after checking
    /// whether the commit landed).
    Retry { connection_lost: bool },
}

impl Committer {
    pub fn new(shared: &Arc<Shared>, checkpoint: Checkpoint) -> Committer {
        Committer {
            db: Db::new(shared, "commit"),
            checkpoint,
            shared: shared.clone(),
            dirs: LandingDirs {
                landing: shared.settings.landing_dir.clone(),
            },
            ctx: shared.settings.commit_context(),
            upkeep: ledger::UpkeepClock::default(),
        }
    }

    pub async fn handle(&mut self, work: crate::planner::Work) {
        match work {
            crate::planner::Work::Batch(b) => self.commit(b).await,
            crate::planner::Work::Large(f) => self.load_large(f).await,
        }
    }

    /// Sorts an error, waits as it deserves and reports it; `Data` goes back to the caller.
    pub(crate) async fn failed(
        &mut self,
        e: tokio_postgres::Error,
        backoff: &mut Backoff,
    ) -> Failure {
        self.shared
            .metrics
            .db_errors
            .with_label_values(&["commit"])
            .inc();
        let class = if self.db.is_closed() {
            ErrorClass::Connection
        } else {
            classify(&e)
        };
        match class {
            ErrorClass::Data => Failure::Data(e),
            ErrorClass::Connection => {
                tracing::warn!(error = %describe_pg_error(&e), "commit interrupted; checking whether it landed, then retrying");
                self.db.broken();
                tokio::time::sleep(backoff.next_wait().min(std::time::Duration::from_secs(5)))
                    .await;
                Failure::Retry {
                    connection_lost: true,
                }
            }
            ErrorClass::Environment(cause) => {
                if matches!(
                    cause,
                    DegradedCause::LockTimeout | DegradedCause::StatementTimeout
                ) {
                    self.end_frozen_peers().await;
                }
                let wait = backoff.next_wait();
                self.shared
                    .set_degraded(cause, true, &describe_pg_error(&e));
                tracing::warn!(%cause, error = %describe_pg_error(&e), retry_in_ms = wait.as_millis() as u64,
                    "PostgreSQL refused the batch for a reason that is not its data; retrying (nothing is failed)");
                tokio::time::sleep(wait).await;
                Failure::Retry {
                    connection_lost: false,
                }
            }
        }
    }

    /// Ends the sessions of frozen peers. PostgreSQL does not apply statement_timeout
    /// while a COPY waits for its client, so a worker stopped in the middle of a COPY
    /// (SIGSTOP, a paused VM) would hold its locks forever. Every statement of a live
    /// worker is bounded by the session timeout; a worker session still waiting for its
    /// client in a statement older than twice that is frozen, and its claims have
    /// expired: ending it rolls its transaction back (its work is retried by whoever
    /// holds the claims, exactly once by the ledger).
    async fn end_frozen_peers(&mut self) {
        let timeout = self.shared.settings.db.session_timeout().as_secs_f64() * 2.0;
        let Some(client) = self.db.current() else {
            return;
        };
        let ended = client
            .query(
                "SELECT pid, pg_terminate_backend(pid) FROM pg_stat_activity
                 WHERE application_name = 'sluice-worker' AND pid <> pg_backend_pid()
                   AND datname = current_database() AND state = 'active'
                   AND wait_event = 'ClientRead'
                   AND state_change < now() - make_interval(secs => $1::float8)",
                &[&timeout],
            )
            .await;
        match ended {
            Ok(rows) if !rows.is_empty() => {
                let pids: Vec<i32> = rows.iter().map(|r| r.get(0)).collect();
                tracing::warn!(
                    ?pids,
                    "ended the sessions of frozen workers that held locks mid-COPY"
                );
            }
            Ok(_) => {}
            Err(e) => tracing::debug!(error = %e, "could not look for frozen workers"),
        }
    }

    pub(crate) fn database_ok(&self) {
        for cause in DegradedCause::ALL
            .into_iter()
            .filter(|c| is_database_cause(*c))
        {
            if self.shared.is_degraded(cause) {
                self.shared.set_degraded(cause, false, "");
            }
        }
    }

    /// Commits a batch, surviving connection loss, server restarts and environment
    /// errors; a batch PostgreSQL refuses because of its data is split so that one bad
    /// file cannot block the rest.
    pub async fn commit(&mut self, batch: crate::planner::Batch) {
        let summary = match self
            .commit_with_retry(batch.plan.batch_id, &batch.files)
            .await
        {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(batch = %batch.plan.batch_id, error = %describe_pg_error(&e),
                    "PostgreSQL refused the batch's data; committing its files one by one to isolate the cause");
                self.commit_isolated(&batch.files).await
            }
        };
        self.finish(batch, summary).await;
    }

    /// Retries until the batch commits or PostgreSQL refuses its data. After a lost
    /// connection the batch may have committed with the acknowledgement lost, so the
    /// batch id is looked up before writing again.
    async fn commit_with_retry(
        &mut self,
        batch_id: Uuid,
        files: &[FileToCommit],
    ) -> Result<CommitSummary, tokio_postgres::Error> {
        let mut backoff = Backoff::default();
        loop {
            self.shared.watchdog.enter(Role::Committer);
            let client = self.db.get().await;
            let attempt = batch_commit::commit_batch(client, &self.ctx, batch_id, files).await;
            self.shared.watchdog.leave(Role::Committer);
            let e = match attempt {
                Ok(summary) => {
                    self.database_ok();
                    return Ok(summary);
                }
                Err(e) => e,
            };
            match self.failed(e, &mut backoff).await {
                Failure::Data(e) => return Err(e),
                Failure::Retry {
                    connection_lost: false,
                } => continue,
                Failure::Retry {
                    connection_lost: true,
                } => {
                    if self.landed(batch_id).await {
                        tracing::info!(batch = %batch_id, "the interrupted commit had landed");
                        let mut summary = CommitSummary {
                            committed: true,
                            ..CommitSummary::default()
                        };
                        for f in files {
                            summary
                                .settled
                                .insert(f.name.clone(), Settlement::AlreadySettled);
                        }
                        return Ok(summary);
                    }
                }
            }
        }
    }

    /// Whether `batch_id` committed, asking until PostgreSQL answers.
    pub(crate) async fn landed(&mut self, batch_id: Uuid) -> bool {
        loop {
            self.shared.watchdog.enter(Role::Committer);
            let client: &Client = self.db.get().await;
            let answer = ledger::batch_committed(client, batch_id).await;
            self.shared.watchdog.leave(Role::Committer);
            match answer {
                Ok(committed) => return committed,
                Err(e) => {
                    tracing::warn!(error = %e, "looking up a batch after a failed commit failed; retrying");
                    self.db.broken();
                    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                }
            }
        }
    }

    async fn commit_isolated(&mut self, files: &[FileToCommit]) -> CommitSummary {
        let mut total = CommitSummary::default();
        for f in files {
            let one = std::slice::from_ref(f);
            let summary = match self.commit_with_retry(Uuid::new_v4(), one).await {
                Ok(s) => s,
                Err(e) => {
                    let message = format!(
                        "PostgreSQL refused the file's rows: {}",
                        describe_pg_error(&e)
                    );
                    tracing::error!(file = %f.name, %message, "setting the file aside");
                    let failed = FileToCommit {
                        name: f.name.clone(),
                        size: f.size,
                        digest: f.digest,
                        content: FileContent::Failed {
                            reason: DATABASE_REJECTED.into(),
                            message,
                        },
                    };
                    match self
                        .commit_with_retry(Uuid::new_v4(), std::slice::from_ref(&failed))
                        .await
                    {
                        Ok(s) => s,
                        Err(e) => {
                            tracing::error!(file = %f.name, error = %describe_pg_error(&e),
                                "cannot even record the file as failed; it stays for a later attempt");
                            CommitSummary::default()
                        }
                    }
                }
            };
            total.absorb(summary);
        }
        total
    }

    async fn finish(&mut self, batch: crate::planner::Batch, summary: CommitSummary) {
        let started = Instant::now();
        let recorded = if summary.committed {
            self.checkpoint.record_commit(&batch.plan)
        } else {
            self.checkpoint.remove_plan(batch.plan.batch_id)
        };
        if let Err(e) = recorded {
            // The database already holds the batch; on restart the plan is recognised as
            // committed by its batch id, so this costs nothing but a warning.
            tracing::error!(error = %e, "recording the commit on the checkpoint volume failed");
        }
        let m = self.shared.metrics.clone();
        m.checkpoint_write.observe(started.elapsed().as_secs_f64());

        for f in &batch.files {
            let Some(Settlement::Owned(outcome)) = summary.settled.get(&f.name) else {
                continue;
            };
            // The summary's record, not the planned content: a file PostgreSQL refused
            // was planned as valid.
            let failure = match (summary.failures.get(&f.name), outcome) {
                (Some((reason, message)), Outcome::Failed) => {
                    tracing::warn!(file = %f.name, %reason, %message, "file set aside");
                    Some((reason.as_str(), message.as_str()))
                }
                _ => None,
            };
            if *outcome == Outcome::Redelivered {
                m.redelivered_files.inc();
                tracing::info!(file = %f.name, first_name = summary.duplicate_of.get(&f.name).map(String::as_str).unwrap_or("?"),
                    "identical content was already recorded under another name; recorded as a re-delivery, not loaded again");
            }
            m.files.with_label_values(&[outcome.as_str()]).inc();
            if *outcome == Outcome::Loaded
                && let Some(cleaned) = batch.cleaned.get(&f.name)
            {
                self.count_cleaned(cleaned);
            }
            let digest_hex = hex(&f.digest);
            settle(
                &self.shared,
                &self.dirs,
                &Settle {
                    name: &f.name,
                    digest_hex: &digest_hex,
                    outcome: *outcome,
                    failure,
                },
            );
            if let Some(landed) = batch.landed.get(&f.name)
                && let Ok(age) = SystemTime::now().duration_since(*landed)
            {
                m.file_latency.observe(age.as_secs_f64());
            }
        }
        m.files
            .with_label_values(&["skipped"])
            .inc_by(summary.skipped() as u64);
        self.count_rows(&summary);
        let outcome = match (summary.committed, batch.replay) {
            (false, _) => "empty",
            (true, true) => "replayed",
            (true, false) => "committed",
        };
        m.batches.with_label_values(&[outcome]).inc();
        if summary.committed {
            let owned = summary.owned().count();
            m.batch_files.observe(owned as f64);
            m.batch_rows.observe(
                (summary.rows_loaded + summary.rows_rejected + summary.rows_deduplicated) as f64,
            );
            m.db_duration
                .with_label_values(&["copy"])
                .observe(summary.copy_seconds);
            m.db_duration
                .with_label_values(&["commit"])
                .observe(summary.commit_seconds);
            m.batch_duration
                .observe(batch.planned_at.elapsed().as_secs_f64());
            self.mark_commit_time();
            tracing::info!(
                batch = %batch.plan.batch_id,
                files = owned,
                loaded = summary.rows_loaded,
                rejected = summary.rows_rejected,
                deduplicated = summary.rows_deduplicated,
                skipped_files = summary.skipped(),
                ms = batch.planned_at.elapsed().as_millis() as u64,
                replay = batch.replay,
                "batch committed"
            );
        } else if summary.skipped() > 0 {
            tracing::info!(batch = %batch.plan.batch_id, files = summary.skipped(),
                "every file of the batch was settled already; nothing written");
        }
        let names: Vec<String> = batch.plan.files.iter().map(|f| f.name.clone()).collect();
        self.shared.remove_in_flight(names.iter());
        if summary.committed {
            self.upkeep.note(summary.owned().count() as u64);
            self.upkeep_if_due().await;
        }
    }

    /// Vacuums the claims table and gives the planner statistics when due, after a
    /// commit and on the committer's connection (at most a few milliseconds every
    /// thousand files). A failure costs nothing but a later pass: the tables only get
    /// slower to use, never wrong, and the next commit deals with a lost connection.
    async fn upkeep_if_due(&mut self) {
        let now = Instant::now();
        if !self.upkeep.due(now) {
            return;
        }
        let Some(client) = self.db.current() else {
            return;
        };
        self.shared.watchdog.enter(Role::Committer);
        let pass = ledger::upkeep(client).await;
        self.shared.watchdog.leave(Role::Committer);
        match pass {
            Ok(pass) if !pass.allowed => {
                tracing::info!(
                    "this role does not own sluice_claims and sluice_files: leaving their vacuum and statistics to autovacuum"
                );
                self.upkeep.disable();
            }
            Ok(pass) => {
                if pass.analyzed_ledger {
                    tracing::info!(
                        "sluice_files had no planner statistics; analyzed it so that ledger lookups use its key"
                    );
                }
                tracing::debug!(
                    ms = now.elapsed().as_millis() as u64,
                    stats_ok = pass.stats_ok,
                    "vacuumed the claims table"
                );
                self.upkeep.ran(now, pass.stats_ok);
            }
            Err(e) => {
                tracing::warn!(error = %describe_pg_error(&e), "vacuuming the claims table failed; trying again later");
                self.upkeep.ran(now, false);
            }
        }
    }

    pub(crate) fn count_rows(&self, summary: &CommitSummary) {
        let m = &self.shared.metrics;
        m.rows
            .with_label_values(&["loaded"])
            .inc_by(summary.rows_loaded);
        m.rows
            .with_label_values(&["rejected"])
            .inc_by(summary.rows_rejected);
        m.rows
            .with_label_values(&["deduplicated"])
            .inc_by(summary.rows_deduplicated);
        for (reason, n) in &summary.rejected_by_reason {
            m.rejected_rows
                .with_label_values(&[reason.code()])
                .inc_by(*n);
        }
    }

    /// Counts the rows cleaning changed in a file (or part) this worker just committed.
    pub(crate) fn count_cleaned(&self, cleaned: &Cleaned) {
        for (column, rule, n) in cleaned.iter() {
            self.shared
                .metrics
                .rows_cleaned
                .with_label_values(&[column, rule])
                .inc_by(n);
        }
    }

    pub(crate) fn mark_commit_time(&self) {
        self.shared.metrics.last_commit.set(
            SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map(|d| d.as_secs_f64())
                .unwrap_or(0.0),
        );
    }

    /// Runs the after-commit step of files the ledger says are settled.
    pub async fn settle_by_ledger(&mut self, names: &[String]) {
        let pipeline = self.shared.settings.pipeline.clone();
        loop {
            let client = self.db.get().await;
            match ledger::entries_by_name(client, &pipeline, names).await {
                Ok(entries) => {
                    for e in entries.values().flatten() {
                        // Only the content still in the landing directory matters; an
                        // entry of an older content under the same name is left alone.
                        let Some(current) =
                            crate::reader::digest_file(&self.dirs, &e.file_name).ok()
                        else {
                            continue;
                        };
                        if !e.matches(&current.0) {
                            continue;
                        }
                        let digest_hex = hex(&e.digest);
                        settle(
                            &self.shared,
                            &self.dirs,
                            &Settle {
                                name: &e.file_name,
                                digest_hex: &digest_hex,
                                outcome: e.outcome,
                                failure: e
                                    .failure_reason
                                    .as_deref()
                                    .map(|r| (r, e.failure_message.as_deref().unwrap_or(""))),
                            },
                        );
                    }
                    return;
                }
                Err(e) => {
                    self.shared
                        .metrics
                        .db_errors
                        .with_label_values(&["lookup"])
                        .inc();
                    tracing::warn!(error = %e, "reading the ledger failed; retrying");
                    self.db.broken();
                    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                }
            }
        }
    }
}
