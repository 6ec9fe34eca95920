//! The worker's main loop: a planner that discovers, claims, checkpoints and parses
//! batches, and a committer that writes them to PostgreSQL and settles them, running
//! concurrently so that parsing the next batch overlaps writing the current one.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use chrono::Utc;
use sluice_core::config::{AfterCommit, TableNames, WorkerConfig};
use sluice_core::telemetry::Health;
use thiserror::Error;
use tokio::sync::{mpsc, watch};
use tokio_postgres::Client;
use uuid::Uuid;

use crate::batch::{self, Candidate, Decision};
use crate::checkpoint::{Checkpoint, CheckpointError, Plan, PlannedFile};
use crate::db::{DbError, DbSettings, is_transient};
use crate::landing;
use crate::ledger::{self, CommitSummary, FileContent, FileToCommit, LedgerEntry};
use crate::metrics::Metrics;
use crate::migrate;
use crate::source::{self, DirWatch, LandingDirs};
use crate::validate::{self, Rules};

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
    #[error("landing directory {path}: {source}")]
    Landing {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Everything a worker needs to run.
#[derive(Debug, Clone)]
pub struct Settings {
    pub worker_id: String,
    pub landing_dir: PathBuf,
    pub checkpoint_dir: PathBuf,
    pub config: WorkerConfig,
    pub tables: TableNames,
    pub db: DbSettings,
}

/// A PostgreSQL connection that reconnects (backoff + jitter) when it breaks, keeping
/// `/readyz` and `sluice_worker_db_up` truthful meanwhile.
struct Db {
    settings: DbSettings,
    client: Option<Client>,
    metrics: Metrics,
    health: Arc<Health>,
    role: &'static str,
}

impl Db {
    fn new(
        settings: &DbSettings,
        metrics: &Metrics,
        health: &Arc<Health>,
        role: &'static str,
    ) -> Db {
        Db {
            settings: settings.clone(),
            client: None,
            metrics: metrics.clone(),
            health: health.clone(),
            role,
        }
    }

    async fn get(&mut self) -> &mut Client {
        if self.client.as_ref().is_some_and(|c| c.is_closed()) {
            self.broken();
        }
        let client = match self.client.take() {
            Some(c) => c,
            None => self.connect_until_up().await,
        };
        self.client.insert(client)
    }

    async fn connect_until_up(&mut self) -> Client {
        let metrics = self.metrics.clone();
        let role = self.role;
        let target = self.settings.describe();
        let health = self.health.clone();
        let client = loop {
            let attempt = self
                .settings
                .connect_with_retry(None, |e, wait| {
                    metrics.db_errors.with_label_values(&["connect"]).inc();
                    health.set_ready(false);
                    tracing::warn!(%role, %target, error = %e, retry_in_ms = wait.as_millis() as u64,
                        "PostgreSQL unreachable; retrying");
                })
                .await;
            match attempt {
                Ok(c) => break c,
                Err(e) => {
                    // Only configuration errors end the retry loop; report them and keep
                    // trying slowly, since a crash loop would not fix them either.
                    tracing::error!(%role, error = %e, "cannot connect to PostgreSQL");
                    tokio::time::sleep(Duration::from_secs(10)).await;
                }
            }
        };
        tracing::info!(%role, target = %self.settings.describe(), "connected to PostgreSQL");
        self.metrics.db_up.set(1);
        self.health.set_ready(true);
        client
    }

    fn broken(&mut self) {
        if self.client.take().is_some() {
            self.metrics.db_up.set(0);
            self.health.set_ready(false);
        }
    }
}

/// A batch that has been planned and parsed, on its way to the committer.
struct Batch {
    plan: Plan,
    files: Vec<FileToCommit>,
    landed: HashMap<String, SystemTime>,
    planned_at: Instant,
    replay: bool,
}

struct Shared {
    in_flight: Mutex<HashSet<String>>,
}

impl Shared {
    fn add(&self, names: impl IntoIterator<Item = String>) {
        if let Ok(mut set) = self.in_flight.lock() {
            set.extend(names);
        }
    }
    fn remove<'a>(&self, names: impl IntoIterator<Item = &'a String>) {
        if let Ok(mut set) = self.in_flight.lock() {
            for n in names {
                set.remove(n);
            }
        }
    }
    fn contains(&self, name: &str) -> bool {
        self.in_flight
            .lock()
            .map(|s| s.contains(name))
            .unwrap_or(false)
    }
}

/// Ledger reason of a file PostgreSQL refused although it passed validation.
const DATABASE_REJECTED: &str = "database_rejected";

/// Applies the migrations and creates any configured non-default tables.
async fn prepare_schema(client: &mut Client, settings: &Settings) -> Result<(), WorkerError> {
    let report = migrate::migrate(client)
        .await
        .map_err(|e| WorkerError::Migrate(e.to_string()))?;
    tracing::info!(?report, "schema up to date");
    ledger::prepare_tables(
        &*client,
        &settings.tables,
        settings.config.dedupe_by_event_id,
    )
    .await
    .map_err(WorkerError::Prepare)
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
    let checkpoint = Checkpoint::open(&settings.checkpoint_dir, &settings.worker_id)?;
    tracing::info!(worker_id = %settings.worker_id, landing = %settings.landing_dir.display(),
        checkpoint = %settings.checkpoint_dir.display(), database = %settings.db.describe(), "worker starting");

    let mut control = Db::new(&settings.db, &metrics, &health, "control");
    // PostgreSQL may restart while we migrate: a lost connection is retried, not fatal,
    // so that a database restart never turns into a worker crash loop.
    let mut retry_in = Duration::from_millis(200);
    loop {
        let client = tokio::select! {
            c = control.get() => c,
            _ = shutdown.changed() => return Ok(()),
        };
        let error = match prepare_schema(client, &settings).await {
            Ok(()) => break,
            Err(e) => e,
        };
        let connection_lost = client.is_closed() || client.simple_query("SELECT 1").await.is_err();
        if !connection_lost {
            return Err(error);
        }
        control.broken();
        metrics.db_errors.with_label_values(&["migrate"]).inc();
        tracing::warn!(%error, retry_in_ms = retry_in.as_millis() as u64,
            "lost the PostgreSQL connection while preparing the schema; retrying");
        tokio::select! {
            _ = tokio::time::sleep(retry_in) => {}
            _ = shutdown.changed() => return Ok(()),
        }
        retry_in = (retry_in * 2).min(Duration::from_secs(10));
    }

    let dirs = LandingDirs {
        landing: settings.landing_dir.clone(),
    };
    let shared = Arc::new(Shared {
        in_flight: Mutex::new(HashSet::new()),
    });
    let mut committer = Committer {
        db: Db::new(&settings.db, &metrics, &health, "commit"),
        checkpoint,
        settings: settings.clone(),
        metrics: metrics.clone(),
        dirs: dirs.clone(),
        shared: shared.clone(),
    };

    // Settle what an earlier run left unfinished before taking new work.
    let pending = committer.checkpoint.pending_plans()?;
    if !pending.is_empty() {
        tracing::info!(
            plans = pending.len(),
            "settling batches left by the previous run"
        );
    }
    for plan in pending {
        committer.settle_pending(plan, &mut control).await;
    }

    let heartbeat = tokio::spawn(heartbeat(
        settings.clone(),
        metrics.clone(),
        health.clone(),
        shutdown.clone(),
    ));
    let (tx, rx) = mpsc::channel::<Batch>(1);
    let grace = Duration::from_secs(settings.config.shutdown_grace_seconds);
    let committer_task = tokio::spawn(async move {
        let mut rx = rx;
        while let Some(batch) = rx.recv().await {
            committer.commit(batch).await;
        }
    });

    let mut planner = Planner {
        settings: settings.clone(),
        metrics: metrics.clone(),
        dirs,
        shared,
        control,
        others: HashMap::new(),
        known_done: HashSet::new(),
        first_seen: HashMap::new(),
        last_prune: None,
    };
    planner.run(tx, shutdown.clone()).await;

    tracing::info!(
        grace_s = grace.as_secs(),
        "stopping: finishing the batch in flight"
    );
    match tokio::time::timeout(grace, committer_task).await {
        Ok(_) => tracing::info!("batch in flight finished"),
        Err(_) => tracing::warn!(
            "grace period over: abandoning the batch in flight; it is replayed on restart"
        ),
    }
    heartbeat.abort();
    if let Some(client) = planner.control.client.as_ref() {
        match ledger::release_claims(client, &settings.worker_id).await {
            Ok(n) if n > 0 => tracing::info!(claims = n, "released claims for other workers"),
            Ok(_) => {}
            Err(e) => tracing::debug!(error = %e, "could not release claims; they expire"),
        }
    }
    Ok(())
}

async fn heartbeat(
    settings: Settings,
    metrics: Metrics,
    health: Arc<Health>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut db = Db::new(&settings.db, &metrics, &health, "heartbeat");
    let period = Duration::from_millis((settings.config.claim_timeout_seconds * 1000 / 3).max(100));
    loop {
        tokio::select! {
            _ = tokio::time::sleep(period) => {}
            _ = shutdown.changed() => return,
        }
        let client = db.get().await;
        if let Err(e) = ledger::renew_claims(client, &settings.worker_id).await {
            metrics.db_errors.with_label_values(&["claim"]).inc();
            tracing::warn!(error = %e, "renewing claims failed");
            db.broken();
        }
    }
}

struct Planner {
    settings: Settings,
    metrics: Metrics,
    dirs: LandingDirs,
    shared: Arc<Shared>,
    control: Db,
    /// Files another worker claimed, and when we learnt it (re-tried after the claim timeout).
    others: HashMap<String, Instant>,
    /// Files found already in the ledger but still in the landing directory (keep policy).
    known_done: HashSet<String>,
    first_seen: HashMap<String, Instant>,
    last_prune: Option<Instant>,
}

impl Planner {
    async fn run(&mut self, tx: mpsc::Sender<Batch>, mut shutdown: watch::Receiver<bool>) {
        let watch = DirWatch::start(&self.settings.landing_dir);
        let poll = Duration::from_millis(self.settings.config.poll_interval_ms);
        let claim_timeout = Duration::from_secs(self.settings.config.claim_timeout_seconds);
        loop {
            if *shutdown.borrow() {
                return;
            }
            self.prune_archive_hourly();
            let dir = self.settings.landing_dir.clone();
            let listing = match tokio::task::spawn_blocking(move || source::list_landing(&dir))
                .await
            {
                Ok(Ok(l)) => l,
                Ok(Err(e)) => {
                    tracing::error!(dir = %self.settings.landing_dir.display(), error = %e, "cannot list landing directory");
                    Vec::new()
                }
                Err(e) => {
                    tracing::error!(error = %e, "listing task failed");
                    Vec::new()
                }
            };
            let now = Instant::now();
            self.others
                .retain(|_, at| now.duration_since(*at) < claim_timeout);
            let listed: HashSet<&str> = listing.iter().map(|c| c.name.as_str()).collect();
            self.known_done.retain(|n| listed.contains(n.as_str()));
            self.first_seen.retain(|n, _| listed.contains(n.as_str()));
            for c in &listing {
                self.first_seen.entry(c.name.clone()).or_insert(now);
            }
            self.update_backlog(&listing);

            let selection: Vec<Candidate> =
                batch::select(&listing, &self.settings.config.batch, |n| {
                    self.known_done.contains(n)
                        || self.others.contains_key(n)
                        || self.shared.contains(n)
                })
                .into_iter()
                .cloned()
                .collect();
            let oldest_seen = selection
                .iter()
                .filter_map(|c| self.first_seen.get(&c.name))
                .min()
                .copied();
            let refs: Vec<&Candidate> = selection.iter().collect();
            match batch::decide(&refs, &self.settings.config.batch, oldest_seen, now) {
                Decision::Idle => {
                    tokio::select! {
                        _ = watch.wake.notified() => {}
                        _ = tokio::time::sleep(poll) => {}
                        _ = shutdown.changed() => return,
                    }
                }
                Decision::Wait(d) => {
                    tokio::select! {
                        _ = tokio::time::sleep(d) => {}
                        _ = shutdown.changed() => return,
                    }
                }
                Decision::Go => {
                    // Wait for the committer to take the previous batch before parsing
                    // this one: one batch being written and one parsed is all the
                    // overlap two cores can use, and a third would only cost memory.
                    let permit = tokio::select! {
                        p = tx.reserve() => match p { Ok(p) => p, Err(_) => return },
                        _ = shutdown.changed() => return,
                    };
                    let Some(batch) = self.plan_and_parse(selection, None).await else {
                        continue;
                    };
                    permit.send(batch);
                }
            }
        }
    }

    fn update_backlog(&self, listing: &[Candidate]) {
        let pending: Vec<&Candidate> = listing
            .iter()
            .filter(|c| !self.known_done.contains(&c.name))
            .collect();
        self.metrics.backlog_files.set(pending.len() as i64);
        self.metrics
            .backlog_bytes
            .set(pending.iter().map(|c| c.size).sum::<u64>() as i64);
        let lag = pending
            .iter()
            .map(|c| c.modified)
            .min()
            .and_then(|oldest| SystemTime::now().duration_since(oldest).ok())
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
        self.metrics.lag_seconds.set(lag);
    }

    fn prune_archive_hourly(&mut self) {
        let due = self
            .last_prune
            .is_none_or(|t| t.elapsed() > Duration::from_secs(3600));
        if !due || self.settings.config.after_commit != AfterCommit::Archive {
            return;
        }
        self.last_prune = Some(Instant::now());
        let retention = Duration::from_secs(self.settings.config.archive_retention_hours * 3600);
        match landing::prune_archive(&self.dirs, retention, SystemTime::now()) {
            Ok(0) => {}
            Ok(n) => tracing::info!(days = n, "pruned expired archive folders"),
            Err(e) => tracing::warn!(error = %e, "pruning the archive failed"),
        }
    }

    /// Claims the selected files, settles those already committed elsewhere, writes the
    /// plan, then reads and validates the claimed files. `replay` reuses a pending plan.
    async fn plan_and_parse(
        &mut self,
        selection: Vec<Candidate>,
        replay: Option<Plan>,
    ) -> Option<Batch> {
        let names: Vec<String> = selection.iter().map(|c| c.name.clone()).collect();
        let worker_id = self.settings.worker_id.clone();
        let timeout = self.settings.config.claim_timeout_seconds;
        let claim = {
            let client = self.control.get().await;
            ledger::claim(client, &worker_id, &names, timeout).await
        };
        let claim = match claim {
            Ok(c) => c,
            Err(e) => {
                self.metrics.db_errors.with_label_values(&["claim"]).inc();
                tracing::warn!(error = %e, "claiming files failed; retrying");
                if is_transient(&e) {
                    self.control.broken();
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
                return None;
            }
        };
        for entry in &claim.done {
            settle_done(
                &self.dirs,
                entry,
                self.settings.config.after_commit,
                &self.metrics,
            );
            if self.settings.config.after_commit == AfterCommit::Keep && entry.outcome == "loaded" {
                self.known_done.insert(entry.file_name.clone());
            }
        }
        let granted: HashSet<&String> = claim.claimed.iter().collect();
        let now = Instant::now();
        for n in &names {
            if !granted.contains(n) && !claim.done.iter().any(|d| &d.file_name == n) {
                self.others.insert(n.clone(), now);
            }
        }
        let chosen: Vec<Candidate> = selection
            .into_iter()
            .filter(|c| granted.contains(&c.name))
            .collect();
        if chosen.is_empty() {
            if let Some(plan) = replay {
                let _ = self.remove_plan_quietly(&plan);
            }
            return None;
        }
        let is_replay = replay.is_some();
        let plan = match replay {
            Some(mut plan) => {
                plan.files.retain(|f| granted.contains(&f.name));
                plan
            }
            None => Plan {
                batch_id: Uuid::new_v4(),
                worker_id: worker_id.clone(),
                created_at: Utc::now(),
                files: chosen
                    .iter()
                    .map(|c| PlannedFile {
                        name: c.name.clone(),
                        size: c.size,
                    })
                    .collect(),
            },
        };
        if !is_replay {
            let started = Instant::now();
            if let Err(e) = Checkpoint::write_plan_at(&self.settings.checkpoint_dir, &plan) {
                tracing::error!(error = %e, "cannot write the batch plan to the checkpoint volume; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                return None;
            }
            self.metrics
                .checkpoint_write
                .observe(started.elapsed().as_secs_f64());
        }
        self.shared.add(chosen.iter().map(|c| c.name.clone()));

        let parse_started = Instant::now();
        let rules = Rules {
            now: Utc::now(),
            future_tolerance: chrono::Duration::seconds(
                i64::try_from(self.settings.config.future_tolerance_seconds)
                    .unwrap_or(i64::MAX / 1000),
            ),
            collect_event_ids: false,
        };
        let dir = self.settings.landing_dir.clone();
        let to_parse = chosen.clone();
        let parsed = tokio::task::spawn_blocking(move || {
            to_parse
                .iter()
                .filter_map(|c| read_and_parse(&dir, c, &rules))
                .collect::<Vec<FileToCommit>>()
        })
        .await
        .unwrap_or_default();
        self.metrics
            .parse_duration
            .observe(parse_started.elapsed().as_secs_f64());
        let landed = chosen
            .iter()
            .map(|c| (c.name.clone(), c.modified))
            .collect();
        Some(Batch {
            plan,
            files: parsed,
            landed,
            planned_at: parse_started,
            replay: is_replay,
        })
    }

    fn remove_plan_quietly(&self, plan: &Plan) -> Result<(), CheckpointError> {
        Checkpoint::remove_plan_at(&self.settings.checkpoint_dir, plan.batch_id)
    }
}

/// Reads and validates one file. A file that vanished is left out (another worker
/// committed and archived it); one that cannot be read or is not Sluice CSV is recorded
/// as failed.
fn read_and_parse(dir: &std::path::Path, c: &Candidate, rules: &Rules) -> Option<FileToCommit> {
    let path = dir.join(&c.name);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            tracing::debug!(file = %c.name, "file vanished before reading; another worker took it");
            return None;
        }
        Err(e) => {
            return Some(FileToCommit {
                name: c.name.clone(),
                size: c.size,
                content: FileContent::Failed {
                    reason: "unreadable".into(),
                    message: format!("cannot read the file: {e}"),
                },
            });
        }
    };
    let size = bytes.len() as u64;
    let content = match validate::parse_file(&bytes, rules) {
        Ok(parsed) => FileContent::Rows {
            copy: Bytes::from(parsed.copy_rows),
            valid_rows: parsed.valid_rows,
            rejects: Arc::new(parsed.rejects),
        },
        Err(e) => FileContent::Failed {
            reason: e.code().to_string(),
            message: e.to_string(),
        },
    };
    Some(FileToCommit {
        name: c.name.clone(),
        size,
        content,
    })
}

/// Applies the after-commit action to a file found already in the ledger.
fn settle_done(dirs: &LandingDirs, entry: &LedgerEntry, policy: AfterCommit, metrics: &Metrics) {
    let result = if entry.outcome == "failed" {
        landing::set_aside_failed(
            dirs,
            &entry.file_name,
            entry.failure_reason.as_deref().unwrap_or("failed"),
            entry.failure_message.as_deref().unwrap_or(""),
        )
    } else {
        landing::finish_loaded(dirs, &entry.file_name, policy, Utc::now())
    };
    if let Err(e) = result {
        metrics.after_commit_errors.inc();
        tracing::warn!(file = %entry.file_name, error = %e, "after-commit action failed; retried on next listing");
    }
}

struct Committer {
    db: Db,
    checkpoint: Checkpoint,
    settings: Settings,
    metrics: Metrics,
    dirs: LandingDirs,
    shared: Arc<Shared>,
}

impl Committer {
    /// Settles a plan found on disk at start-up: if its batch committed, finish the
    /// after-commit steps; otherwise replay it with the same batch id.
    async fn settle_pending(&mut self, plan: Plan, control: &mut Db) {
        loop {
            let client = self.db.get().await;
            match ledger::batch_committed(client, plan.batch_id).await {
                Ok(true) => {
                    tracing::info!(batch = %plan.batch_id, "batch had committed before the restart; finishing it");
                    self.metrics.batches.with_label_values(&["recovered"]).inc();
                    self.finish_recovered(&plan).await;
                    return;
                }
                Ok(false) => break,
                Err(e) => {
                    self.metrics.db_errors.with_label_values(&["lookup"]).inc();
                    tracing::warn!(error = %e, "looking up a pending batch failed; retrying");
                    self.db.broken();
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
        tracing::info!(batch = %plan.batch_id, files = plan.files.len(), "replaying a batch that had not committed");
        let listing = source::list_landing(&self.settings.landing_dir).unwrap_or_default();
        let wanted: HashSet<&str> = plan.files.iter().map(|f| f.name.as_str()).collect();
        let selection: Vec<Candidate> = listing
            .into_iter()
            .filter(|c| wanted.contains(c.name.as_str()))
            .collect();
        let mut planner = Planner {
            settings: self.settings.clone(),
            metrics: self.metrics.clone(),
            dirs: self.dirs.clone(),
            shared: self.shared.clone(),
            control: Db::new(&self.settings.db, &self.metrics, &self.db.health, "replay"),
            others: HashMap::new(),
            known_done: HashSet::new(),
            first_seen: HashMap::new(),
            last_prune: Some(Instant::now()),
        };
        std::mem::swap(&mut planner.control, control);
        let batch = if selection.is_empty() {
            None
        } else {
            planner.plan_and_parse(selection, Some(plan.clone())).await
        };
        std::mem::swap(&mut planner.control, control);
        match batch {
            Some(batch) => self.commit(batch).await,
            None => {
                // Its files are gone or committed by others: the ledger already holds them.
                let names: Vec<String> = plan.files.iter().map(|f| f.name.clone()).collect();
                self.settle_by_ledger(&names).await;
                let _ = self.checkpoint.remove_plan(plan.batch_id);
            }
        }
    }

    async fn finish_recovered(&mut self, plan: &Plan) {
        let names: Vec<String> = plan.files.iter().map(|f| f.name.clone()).collect();
        self.settle_by_ledger(&names).await;
        if let Err(e) = self.checkpoint.record_commit(plan) {
            tracing::error!(error = %e, "recording a recovered commit failed");
        }
    }

    async fn settle_by_ledger(&mut self, names: &[String]) {
        loop {
            let client = self.db.get().await;
            match ledger::ledger_entries(client, names).await {
                Ok(entries) => {
                    for e in &entries {
                        settle_done(
                            &self.dirs,
                            e,
                            self.settings.config.after_commit,
                            &self.metrics,
                        );
                    }
                    return;
                }
                Err(e) => {
                    self.metrics.db_errors.with_label_values(&["lookup"]).inc();
                    tracing::warn!(error = %e, "reading the ledger failed; retrying");
                    self.db.broken();
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
    }

    /// Commits a batch, surviving connection loss and server restarts; a batch that
    /// PostgreSQL refuses for another reason is split so one bad file cannot block the rest.
    async fn commit(&mut self, batch: Batch) {
        let summary = match self
            .commit_with_retry(batch.plan.batch_id, &batch.files)
            .await
        {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(batch = %batch.plan.batch_id, error = %crate::db::describe_pg_error(&e),
                    "PostgreSQL refused the batch; committing its files one by one to isolate the cause");
                self.commit_isolated(&batch.files).await
            }
        };
        self.finish(batch, summary).await;
    }

    /// Retries transient failures. After a failure, the batch may have committed with
    /// the acknowledgement lost, so the batch id is looked up before writing again.
    async fn commit_with_retry(
        &mut self,
        batch_id: Uuid,
        files: &[FileToCommit],
    ) -> Result<CommitSummary, tokio_postgres::Error> {
        let mut delay = Duration::from_millis(100);
        loop {
            let client = self.db.get().await;
            let attempt = ledger::commit_batch(
                client,
                batch_id,
                &self.settings.worker_id,
                files,
                &self.settings.tables,
                self.settings.config.dedupe_by_event_id,
            )
            .await;
            let err = match attempt {
                Ok(summary) => return Ok(summary),
                Err(e) => e,
            };
            self.metrics.db_errors.with_label_values(&["commit"]).inc();
            let closed = self.db.client.as_ref().is_none_or(|c| c.is_closed());
            if !is_transient(&err) && !closed {
                return Err(err);
            }
            tracing::warn!(batch = %batch_id, error = %err, "commit interrupted; checking whether it landed, then retrying");
            self.db.broken();
            tokio::time::sleep(delay + Duration::from_millis(rand::random_range(0..100))).await;
            delay = (delay * 2).min(Duration::from_secs(5));
            let client = self.db.get().await;
            match ledger::batch_committed(client, batch_id).await {
                Ok(true) => {
                    tracing::info!(batch = %batch_id, "the interrupted commit had landed");
                    let names: Vec<String> = files.iter().map(|f| f.name.clone()).collect();
                    let entries = ledger::ledger_entries(client, &names)
                        .await
                        .unwrap_or_default();
                    return Ok(CommitSummary {
                        owned: entries.into_iter().map(|e| e.file_name).collect(),
                        committed: true,
                        ..CommitSummary::default()
                    });
                }
                Ok(false) => continue,
                Err(e) => {
                    tracing::warn!(error = %e, "lookup after a failed commit failed");
                    self.db.broken();
                }
            }
        }
    }

    async fn commit_isolated(&mut self, files: &[FileToCommit]) -> CommitSummary {
        let mut total = CommitSummary::default();
        for f in files {
            let id = Uuid::new_v4();
            let one = std::slice::from_ref(f);
            let summary = match self.commit_with_retry(id, one).await {
                Ok(s) => s,
                Err(e) => {
                    tracing::error!(file = %f.name, error = %crate::db::describe_pg_error(&e), "PostgreSQL refused this file; setting it aside");
                    let message = format!(
                        "PostgreSQL refused the file's rows: {}",
                        crate::db::describe_pg_error(&e)
                    );
                    let failed = FileToCommit {
                        name: f.name.clone(),
                        size: f.size,
                        content: FileContent::Failed {
                            reason: DATABASE_REJECTED.into(),
                            message: message.clone(),
                        },
                    };
                    match self
                        .commit_with_retry(Uuid::new_v4(), std::slice::from_ref(&failed))
                        .await
                    {
                        Ok(mut s) => {
                            if s.owned.contains(&f.name) {
                                s.database_rejected.insert(f.name.clone(), message);
                            }
                            s
                        }
                        Err(e) => {
                            tracing::error!(file = %f.name, error = %e, "cannot even record the file as failed; it stays for a later attempt");
                            CommitSummary::default()
                        }
                    }
                }
            };
            total.owned.extend(summary.owned);
            total.skipped.extend(summary.skipped);
            total.rows_loaded += summary.rows_loaded;
            total.rows_rejected += summary.rows_rejected;
            total.rows_deduplicated += summary.rows_deduplicated;
            total.failed_files += summary.failed_files;
            total.database_rejected.extend(summary.database_rejected);
            for (r, n) in summary.rejected_by_reason {
                *total.rejected_by_reason.entry(r).or_default() += n;
            }
            total.committed |= summary.committed;
        }
        total
    }

    async fn finish(&mut self, batch: Batch, summary: CommitSummary) {
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
        self.metrics
            .checkpoint_write
            .observe(started.elapsed().as_secs_f64());

        let owned: HashSet<&String> = summary.owned.iter().collect();
        let now = Utc::now();
        for f in &batch.files {
            if !owned.contains(&f.name) {
                continue;
            }
            let result = match (&f.content, summary.database_rejected.get(&f.name)) {
                (_, Some(message)) => {
                    self.metrics.files.with_label_values(&["failed"]).inc();
                    tracing::warn!(file = %f.name, reason = DATABASE_REJECTED, %message, "file set aside");
                    landing::set_aside_failed(&self.dirs, &f.name, DATABASE_REJECTED, message)
                }
                (FileContent::Rows { .. }, None) => {
                    self.metrics.files.with_label_values(&["loaded"]).inc();
                    landing::finish_loaded(
                        &self.dirs,
                        &f.name,
                        self.settings.config.after_commit,
                        now,
                    )
                }
                (FileContent::Failed { reason, message }, None) => {
                    self.metrics.files.with_label_values(&["failed"]).inc();
                    tracing::warn!(file = %f.name, %reason, %message, "file set aside");
                    landing::set_aside_failed(&self.dirs, &f.name, reason, message)
                }
            };
            if let Err(e) = result {
                tracing::warn!(file = %f.name, error = %e, "after-commit action failed; retried on next listing");
            }
            if let Some(landed) = batch.landed.get(&f.name)
                && let Ok(age) = SystemTime::now().duration_since(*landed)
            {
                self.metrics.file_latency.observe(age.as_secs_f64());
            }
        }
        self.metrics
            .files
            .with_label_values(&["skipped"])
            .inc_by(summary.skipped.len() as u64);
        self.metrics
            .rows
            .with_label_values(&["loaded"])
            .inc_by(summary.rows_loaded);
        self.metrics
            .rows
            .with_label_values(&["rejected"])
            .inc_by(summary.rows_rejected);
        self.metrics
            .rows
            .with_label_values(&["deduplicated"])
            .inc_by(summary.rows_deduplicated);
        for (reason, n) in &summary.rejected_by_reason {
            self.metrics
                .rejected_rows
                .with_label_values(&[reason.code()])
                .inc_by(*n);
        }
        let outcome = match (summary.committed, batch.replay) {
            (false, _) => "empty",
            (true, true) => "replayed",
            (true, false) => "committed",
        };
        self.metrics.batches.with_label_values(&[outcome]).inc();
        if summary.committed {
            self.metrics.batch_files.observe(summary.owned.len() as f64);
            self.metrics.batch_rows.observe(
                (summary.rows_loaded + summary.rows_rejected + summary.rows_deduplicated) as f64,
            );
            self.metrics
                .db_duration
                .with_label_values(&["copy"])
                .observe(summary.copy_seconds);
            self.metrics
                .db_duration
                .with_label_values(&["commit"])
                .observe(summary.commit_seconds);
            self.metrics
                .batch_duration
                .observe(batch.planned_at.elapsed().as_secs_f64());
            self.metrics.last_commit.set(
                SystemTime::now()
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .map(|d| d.as_secs_f64())
                    .unwrap_or(0.0),
            );
            tracing::info!(
                batch = %batch.plan.batch_id,
                files = summary.owned.len(),
                loaded = summary.rows_loaded,
                rejected = summary.rows_rejected,
                deduplicated = summary.rows_deduplicated,
                failed_files = summary.failed_files,
                skipped_files = summary.skipped.len(),
                ms = batch.planned_at.elapsed().as_millis() as u64,
                replay = batch.replay,
                "batch committed"
            );
        } else if !summary.skipped.is_empty() {
            tracing::info!(batch = %batch.plan.batch_id, files = summary.skipped.len(),
                "every file of the batch was committed by another worker; nothing written");
        }
        let names: Vec<String> = batch.plan.files.iter().map(|f| f.name.clone()).collect();
        self.shared.remove(names.iter());
    }
}
