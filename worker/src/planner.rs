//! The planner: lists the landing directory, selects the next batch, claims its files,
//! tells new content from files already settled, writes the batch plan and parses the
//! files — while the committer writes the previous batch.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use chrono::Utc;
use sluice_core::config::AfterCommit;
use sluice_core::metric_names::DegradedCause;
use tokio::sync::{mpsc, watch};
use uuid::Uuid;

use crate::batch::{self, Candidate, Decision};
use crate::batch_commit::FileToCommit;
use crate::checkpoint::{Checkpoint, Plan, PlannedFile};
use crate::dbconn::Db;
use crate::landing;
use crate::ledger::{self, Digest, LedgerEntry, Outcome, hex};
use crate::progress::Role;
use crate::reader::{self, ReadResult};
use crate::retry::Backoffs;
use crate::settle::{Settle, settle};
use crate::shared::Shared;
use crate::source::{self, DirWatch, KeptListing, LandingDirs};
use crate::validate::{Cleaned, Position};

/// Transient read errors are retried this many times before a file is set aside.
const READ_ATTEMPTS: u32 = 5;

/// Work for the committer.
pub enum Work {
    /// Small files, parsed, committed in one transaction.
    Batch(Batch),
    /// A file larger than the batch limit, streamed in parts.
    Large(LargeFile),
}

/// A batch that has been planned and parsed.
pub struct Batch {
    pub plan: Plan,
    pub files: Vec<FileToCommit>,
    pub landed: HashMap<String, SystemTime>,
    /// Per file: the valid rows cleaning changed (counted once the file is committed as
    /// loaded by this worker).
    pub cleaned: HashMap<String, Cleaned>,
    pub planned_at: Instant,
    pub replay: bool,
}

/// A large file to load from `start` on.
pub struct LargeFile {
    pub name: String,
    pub size: u64,
    pub digest: Digest,
    pub start: Position,
    pub landed: SystemTime,
}

/// What the claim step found out about a claimed file.
enum Known {
    /// Never recorded under this name with this content (or not checked: no entry).
    New(Option<Digest>),
    /// A large file with some parts committed.
    Partial(Digest, Position),
    /// Settled already; only its after-commit step is left.
    Settled,
    /// Could not be read now (gone or a transient error): left for later.
    Skip,
}

/// Claims owed back that the planner remembers while the database is away.
const MAX_UNRELEASED: usize = 4096;

pub struct Planner {
    pub shared: Arc<Shared>,
    pub dirs: LandingDirs,
    pub control: Db,
    /// Files another worker claimed, and when we learnt it (re-tried after the claim timeout).
    others: HashMap<String, Instant>,
    /// Files found settled but still in the landing directory (keep policy), with the
    /// size and time they had then: a file replaced under the same name is looked at again.
    known_done: HashMap<String, (u64, SystemTime)>,
    first_seen: HashMap<String, Instant>,
    read_retries: Backoffs<String>,
    last_prune: Option<Instant>,
    /// Claims meant to be given back while the database was unreachable: given back with
    /// the next release. Left alone they would stay for good, as nobody claims a file
    /// that is already loaded and archived.
    unreleased: Vec<String>,
}

impl Planner {
    pub fn new(shared: &Arc<Shared>, control: Db) -> Planner {
        Planner {
            shared: shared.clone(),
            dirs: LandingDirs {
                landing: shared.settings.landing_dir.clone(),
            },
            control,
            others: HashMap::new(),
            known_done: HashMap::new(),
            first_seen: HashMap::new(),
            read_retries: Backoffs::new(Duration::from_secs(1), Duration::from_secs(30)),
            last_prune: None,
            unreleased: Vec::new(),
        }
    }

    pub async fn run(&mut self, tx: mpsc::Sender<Work>, mut shutdown: watch::Receiver<bool>) {
        let settings = self.shared.settings.clone();
        let watch = DirWatch::start(&settings.landing_dir);
        let poll = Duration::from_millis(settings.config.poll_interval_ms);
        let mut kept: Option<KeptListing> = None;
        let mut after_go = false;
        loop {
            if *shutdown.borrow() {
                return;
            }
            self.release_owed().await;
            self.shared.watchdog.enter(Role::Planner);
            self.prune_archive_hourly();
            // After a batch, the next one comes from the rest of the kept listing; after
            // a wait, or once stale, the directory is listed again (see KeptListing).
            let reuse = after_go
                && kept
                    .as_ref()
                    .is_some_and(|k| !k.is_stale(Instant::now(), poll));
            if !reuse {
                kept = Some(self.relist().await);
            }
            let mut selection = self.select(kept.as_ref());
            if reuse {
                // Files listed a while ago: drop those gone (another worker took them),
                // take sizes anew; list again when nothing is left.
                selection = self.restat(selection).await;
                if selection.is_empty() {
                    kept = Some(self.relist().await);
                    selection = self.select(kept.as_ref());
                }
            }
            let now = Instant::now();
            let limits = &settings.config.batch;
            let oldest_seen = selection
                .iter()
                .filter_map(|c| self.first_seen.get(&c.name))
                .min()
                .copied();
            let refs: Vec<&Candidate> = selection.iter().collect();
            let decision = batch::decide(&refs, limits, oldest_seen, now);
            self.shared.watchdog.leave(Role::Planner);
            after_go = decision == Decision::Go;
            match decision {
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
                    self.shared.watchdog.enter(Role::Planner);
                    if let (Some(k), Some(last)) = (kept.as_mut(), selection.last()) {
                        k.taken_through(&last.name);
                    }
                    let work = self.plan_and_parse(selection, None).await;
                    self.shared.watchdog.leave(Role::Planner);
                    match work {
                        Some(work) => permit.send(work),
                        // Nothing to load (settled, taken, gone): look at the directory anew.
                        None => after_go = false,
                    }
                }
            }
        }
    }

    /// Lists the landing directory and brings the per-file bookkeeping up to date with
    /// what is there (files gone are forgotten); an unreadable directory lists as empty.
    async fn relist(&mut self) -> KeptListing {
        let settings = self.shared.settings.clone();
        let dir = settings.landing_dir.clone();
        let started = Instant::now();
        let listing = match tokio::task::spawn_blocking(move || source::list_landing(&dir)).await {
            Ok(Ok(l)) => l,
            Ok(Err(e)) => {
                tracing::error!(dir = %settings.landing_dir.display(), error = %e, "cannot list landing directory");
                Vec::new()
            }
            Err(e) => {
                tracing::error!(error = %e, "listing task failed");
                Vec::new()
            }
        };
        let now = Instant::now();
        let claim_timeout = settings.claim_timeout();
        self.others
            .retain(|_, at| now.duration_since(*at) < claim_timeout);
        let listed: HashSet<&str> = listing.iter().map(|c| c.name.as_str()).collect();
        self.known_done.retain(|n, _| listed.contains(n.as_str()));
        self.first_seen.retain(|n, _| listed.contains(n.as_str()));
        self.read_retries.retain(|n| listed.contains(n.as_str()));
        self.shared.forget_unsettled_except(&listed);
        for c in &listing {
            self.first_seen.entry(c.name.clone()).or_insert(now);
        }
        self.update_backlog(&listing);
        KeptListing::new(listing, now, now.duration_since(started))
    }

    /// `selection` as the files are now: those gone are dropped, sizes and times renewed.
    async fn restat(&self, selection: Vec<Candidate>) -> Vec<Candidate> {
        let dir = self.shared.settings.landing_dir.clone();
        tokio::task::spawn_blocking(move || source::restat(&dir, selection))
            .await
            .unwrap_or_default()
    }

    /// The next batch's files from the rest of the kept listing.
    fn select(&self, kept: Option<&KeptListing>) -> Vec<Candidate> {
        let Some(kept) = kept else {
            return Vec::new();
        };
        let settings = &self.shared.settings;
        let now = Instant::now();
        batch::select_alone(
            kept.remaining(),
            &settings.config.batch,
            |n| self.skip(n, kept.all(), now),
            |c| settings.input_kind(&c.name).is_compressed(),
        )
        .into_iter()
        .cloned()
        .collect()
    }

    fn skip(&self, name: &str, listing: &[Candidate], now: Instant) -> bool {
        let unchanged_done = self.known_done.get(name).is_some_and(|(size, modified)| {
            listing
                .iter()
                .any(|c| c.name == name && c.size == *size && c.modified == *modified)
        });
        unchanged_done
            || self.others.contains_key(name)
            || self.shared.is_in_flight(name)
            || self.shared.settle_waiting(name, now)
            || self.read_retries.is_waiting(&name.to_string(), now)
    }

    fn update_backlog(&self, listing: &[Candidate]) {
        let pending: Vec<&Candidate> = listing
            .iter()
            .filter(|c| !self.known_done.contains_key(&c.name))
            .collect();
        let m = &self.shared.metrics;
        m.backlog_files.set(pending.len() as i64);
        m.backlog_bytes
            .set(pending.iter().map(|c| c.size).sum::<u64>() as i64);
        let lag = pending
            .iter()
            .map(|c| c.modified)
            .min()
            .and_then(|oldest| SystemTime::now().duration_since(oldest).ok())
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
        m.lag_seconds.set(lag);
    }

    fn prune_archive_hourly(&mut self) {
        let config = &self.shared.settings.config;
        let due = self
            .last_prune
            .is_none_or(|t| t.elapsed() > Duration::from_secs(3600));
        if !due || config.after_commit != AfterCommit::Archive {
            return;
        }
        self.last_prune = Some(Instant::now());
        let retention = Duration::from_secs(config.archive_retention_hours * 3600);
        match landing::prune_archive(&self.dirs, retention, SystemTime::now()) {
            Ok(0) => {}
            Ok(n) => tracing::info!(days = n, "pruned expired archive folders"),
            Err(e) => tracing::warn!(error = %e, "pruning the archive failed"),
        }
    }

    /// Claims the selected files, settles those already settled, writes the plan, then
    /// reads and validates the claimed files. `replay` reuses a pending plan.
    pub async fn plan_and_parse(
        &mut self,
        selection: Vec<Candidate>,
        replay: Option<Plan>,
    ) -> Option<Work> {
        let settings = self.shared.settings.clone();
        let names: Vec<String> = selection.iter().map(|c| c.name.clone()).collect();
        let claimed = self.claim(&names).await?;
        let granted: HashSet<&String> = claimed.iter().collect();
        let now = Instant::now();
        for n in &names {
            if !granted.contains(n) {
                self.others.insert(n.clone(), now);
            }
        }
        let known = self.known(&claimed).await?;
        let mut chosen: Vec<(Candidate, Option<Digest>)> = Vec::new();
        let mut large: Option<LargeFile> = None;
        let mut released: Vec<String> = Vec::new();
        for c in selection.into_iter().filter(|c| granted.contains(&c.name)) {
            let entries = known.get(&c.name).map(Vec::as_slice).unwrap_or(&[]);
            match self.classify(&c, entries).await {
                Known::Settled | Known::Skip => released.push(c.name.clone()),
                Known::Partial(..) | Known::New(_) if large.is_some() => {
                    // One large file per pass (a compressed file may be selected with others).
                    released.push(c.name.clone())
                }
                Known::Partial(digest, start) => {
                    tracing::info!(file = %c.name, offset = start.offset, line = start.line,
                        "resuming a large file from its last committed part");
                    large = Some(LargeFile {
                        name: c.name.clone(),
                        size: c.size,
                        digest,
                        start,
                        landed: c.modified,
                    });
                }
                // A compressed file's decompressed size is unknown: always in parts.
                Known::New(digest)
                    if c.size > settings.config.batch.max_bytes
                        || settings.input_kind(&c.name).is_compressed() =>
                {
                    let digest = match digest {
                        Some(d) => Some(d),
                        None => self.digest(&c).await,
                    };
                    match digest {
                        Some(digest) => {
                            large = Some(LargeFile {
                                name: c.name.clone(),
                                size: c.size,
                                digest,
                                start: Position::START,
                                landed: c.modified,
                            })
                        }
                        None => released.push(c.name.clone()),
                    }
                }
                Known::New(digest) => chosen.push((c, digest)),
            }
        }
        if let Some(file) = large {
            // A large file always forms a batch of its own (batch::select).
            released.extend(chosen.iter().map(|(c, _)| c.name.clone()));
            self.release(&released).await;
            self.shared.add_in_flight([file.name.clone()]);
            return Some(Work::Large(file));
        }
        if chosen.is_empty() {
            self.release(&released).await;
            if let Some(plan) = replay {
                let _ = Checkpoint::remove_plan_at(&settings.checkpoint_dir, plan.batch_id);
            }
            return None;
        }
        let kept: HashSet<&str> = chosen.iter().map(|(c, _)| c.name.as_str()).collect();
        let is_replay = replay.is_some();
        let plan = match replay {
            Some(mut plan) => {
                plan.files.retain(|f| kept.contains(f.name.as_str()));
                plan
            }
            None => Plan {
                batch_id: Uuid::new_v4(),
                worker_id: settings.worker_id.clone(),
                created_at: Utc::now(),
                files: chosen
                    .iter()
                    .map(|(c, _)| PlannedFile {
                        name: c.name.clone(),
                        size: c.size,
                    })
                    .collect(),
            },
        };
        if !is_replay {
            let started = Instant::now();
            if let Err(e) = Checkpoint::write_plan_at(&settings.checkpoint_dir, &plan) {
                tracing::error!(error = %e, "cannot write the batch plan to the checkpoint volume; releasing the claims and retrying");
                self.shared
                    .set_degraded(DegradedCause::CheckpointUnwritable, true, &e.to_string());
                released.extend(chosen.iter().map(|(c, _)| c.name.clone()));
                self.release(&released).await;
                tokio::time::sleep(Duration::from_secs(1)).await;
                return None;
            }
            self.shared
                .set_degraded(DegradedCause::CheckpointUnwritable, false, "");
            self.shared
                .metrics
                .checkpoint_write
                .observe(started.elapsed().as_secs_f64());
        }
        self.shared
            .add_in_flight(chosen.iter().map(|(c, _)| c.name.clone()));
        let parse_started = Instant::now();
        let (files, cleaned, dropped) = self.read_all(&chosen).await;
        released.extend(dropped.iter().cloned());
        self.shared.remove_in_flight(dropped.iter());
        self.release(&released).await;
        self.shared
            .metrics
            .parse_duration
            .observe(parse_started.elapsed().as_secs_f64());
        let landed = chosen
            .iter()
            .map(|(c, _)| (c.name.clone(), c.modified))
            .collect();
        Some(Work::Batch(Batch {
            plan,
            files,
            landed,
            cleaned,
            planned_at: parse_started,
            replay: is_replay,
        }))
    }

    /// Claims `names`; None when the database refused (retried on the next pass).
    async fn claim(&mut self, names: &[String]) -> Option<Vec<String>> {
        // A claim owed back from earlier must not cancel the one taken now.
        self.unreleased.retain(|n| !names.contains(n));
        let s = &self.shared.settings;
        let (pipeline, worker_id, timeout) = (
            s.pipeline.clone(),
            s.worker_id.clone(),
            s.config.claim_timeout_seconds,
        );
        let client = self.control.get().await;
        match ledger::claim(client, &pipeline, &worker_id, names, timeout).await {
            Ok(c) => {
                if !c.taken_over.is_empty() {
                    self.shared
                        .metrics
                        .claims_taken_over
                        .inc_by(c.taken_over.len() as u64);
                    tracing::info!(files = c.taken_over.len(), first = %c.taken_over[0],
                        "took over claims from a worker that stopped renewing them");
                }
                Some(c.claimed)
            }
            Err(e) => {
                self.db_failed("claim", &e).await;
                None
            }
        }
    }

    async fn known(&mut self, names: &[String]) -> Option<HashMap<String, Vec<LedgerEntry>>> {
        if names.is_empty() {
            return Some(HashMap::new());
        }
        let pipeline = self.shared.settings.pipeline.clone();
        let client = self.control.get().await;
        match ledger::entries_by_name(client, &pipeline, names).await {
            Ok(k) => Some(k),
            Err(e) => {
                self.db_failed("lookup", &e).await;
                let _ = self.release(names).await;
                None
            }
        }
    }

    async fn db_failed(&mut self, operation: &str, e: &tokio_postgres::Error) {
        self.shared
            .metrics
            .db_errors
            .with_label_values(&[operation])
            .inc();
        tracing::warn!(%operation, error = %crate::db::describe_pg_error(e), "database request failed; retrying");
        if self.control.is_closed() || crate::db::is_transient(e) {
            self.control.broken();
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    /// Gives our claims on `names` back (files left for later or settled already), with
    /// any that could not be given back before.
    async fn release(&mut self, names: &[String]) {
        let mut all = std::mem::take(&mut self.unreleased);
        all.extend(
            names
                .iter()
                .filter(|n| !all.contains(n))
                .cloned()
                .collect::<Vec<_>>(),
        );
        if all.is_empty() {
            return;
        }
        let s = &self.shared.settings;
        let (pipeline, worker_id) = (s.pipeline.clone(), s.worker_id.clone());
        let released = match self.control.current() {
            Some(client) => ledger::release_claims(client, &pipeline, &worker_id, Some(&all))
                .await
                .map_err(|e| e.to_string()),
            None => Err("no connection".to_string()),
        };
        if let Err(e) = released {
            tracing::debug!(error = %e, claims = all.len(), "could not release claims; trying again with the next release");
            // Bounded: a database away for long keeps the most recent names only.
            let keep_from = all.len().saturating_sub(MAX_UNRELEASED);
            self.unreleased = all.split_off(keep_from);
        }
    }

    /// Gives back claims owed from earlier, if any (once per planner pass).
    async fn release_owed(&mut self) {
        if !self.unreleased.is_empty() {
            self.release(&[]).await;
        }
    }

    /// Decides what a claimed file is, comparing its content with the ledger's entries
    /// under its name.
    async fn classify(&mut self, c: &Candidate, entries: &[LedgerEntry]) -> Known {
        if entries.is_empty() {
            return Known::New(None);
        }
        let Some(digest) = self.digest(c).await else {
            return Known::Skip;
        };
        let Some(entry) = ledger::pick(entries, &digest) else {
            return Known::New(Some(digest));
        };
        if entry.outcome == Outcome::Partial {
            return match entry.next {
                Some(next) => Known::Partial(digest, next),
                None => Known::New(Some(digest)),
            };
        }
        let digest_hex = hex(&entry.digest);
        let done = settle(
            &self.shared,
            &self.dirs,
            &Settle {
                name: &c.name,
                digest_hex: &digest_hex,
                outcome: entry.outcome,
                failure: entry
                    .failure_reason
                    .as_deref()
                    .map(|r| (r, entry.failure_message.as_deref().unwrap_or(""))),
            },
        );
        if done
            && self.shared.settings.config.after_commit == AfterCommit::Keep
            && entry.outcome != Outcome::Failed
        {
            self.known_done.insert(c.name.clone(), (c.size, c.modified));
        }
        Known::Settled
    }

    /// The digest of a landing file, or None when it cannot be read now.
    async fn digest(&mut self, c: &Candidate) -> Option<Digest> {
        let dirs = self.dirs.clone();
        let name = c.name.clone();
        let result = tokio::task::spawn_blocking(move || reader::digest_file(&dirs, &name))
            .await
            .ok()?;
        match result {
            ReadResult::Ok((digest, _)) => Some(digest),
            ReadResult::Gone => None,
            ReadResult::Transient(e) | ReadResult::Permanent(e) => {
                self.read_failed(&c.name, &e);
                None
            }
        }
    }

    fn read_failed(&mut self, name: &str, e: &std::io::Error) -> u32 {
        self.shared.metrics.read_retries.inc();
        let attempts = self.read_retries.failed(&name.to_string(), Instant::now());
        tracing::warn!(file = %name, error = %e, attempts, "reading a landing file failed; retrying later");
        attempts
    }

    /// Reads and parses the chosen files on a blocking thread. Returns the files to
    /// commit, the rows cleaning changed per file, and the names left out (gone, or a
    /// transient error to retry later).
    async fn read_all(
        &mut self,
        chosen: &[(Candidate, Option<Digest>)],
    ) -> (Vec<FileToCommit>, HashMap<String, Cleaned>, Vec<String>) {
        let rules = self.shared.settings.rules();
        let settings = self.shared.settings.clone();
        let dirs = self.dirs.clone();
        let names: Vec<(String, u64, SystemTime)> = chosen
            .iter()
            .map(|(c, _)| (c.name.clone(), c.size, c.modified))
            .collect();
        let results = tokio::task::spawn_blocking(move || {
            names
                .into_iter()
                .map(|(name, size, modified)| {
                    let format = settings.input_kind(&name).format;
                    let r = reader::read_small(&dirs, &name, format, &rules);
                    (name, size, modified, r)
                })
                .collect::<Vec<_>>()
        })
        .await
        .unwrap_or_default();
        let mut files = Vec::new();
        let mut cleaned = HashMap::new();
        let mut dropped = Vec::new();
        for (name, size, modified, result) in results {
            match result {
                ReadResult::Ok((f, c)) => {
                    self.read_retries.succeeded(&name);
                    if !c.is_empty() {
                        cleaned.insert(name, c);
                    }
                    files.push(f);
                }
                ReadResult::Gone => dropped.push(name),
                ReadResult::Transient(e) => {
                    if self.read_failed(&name, &e) >= READ_ATTEMPTS {
                        tracing::error!(file = %name, error = %e, "giving up reading the file; setting it aside");
                        files.push(reader::unreadable(
                            &name,
                            size,
                            unreadable_digest(&name, size, modified),
                            &e,
                        ));
                    } else {
                        dropped.push(name);
                    }
                }
                ReadResult::Permanent(e) => {
                    files.push(reader::unreadable(
                        &name,
                        size,
                        unreadable_digest(&name, size, modified),
                        &e,
                    ));
                }
            }
        }
        (files, cleaned, dropped)
    }
}

/// A stand-in identity for a file whose content cannot be read: unique to its name,
/// size and time, so two unreadable files are never taken for re-deliveries.
fn unreadable_digest(name: &str, size: u64, modified: SystemTime) -> Digest {
    use sha2::{Digest as _, Sha256};
    let nanos = modified
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    Sha256::digest(format!("unreadable\0{name}\0{size}\0{nanos}")).into()
}
