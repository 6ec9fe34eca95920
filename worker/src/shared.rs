//! State shared by the worker's loops: settings, metrics, health, the files in flight
//! (whose claims the heartbeat may renew) and the committed files whose after-commit
//! step is backing off.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sluice_core::config::{TableNames, WorkerConfig};
use sluice_core::metric_names::DegradedCause;
use sluice_core::telemetry::Health;

use crate::batch_commit::CommitContext;
use crate::db::DbSettings;
use crate::metrics::Metrics;
use crate::progress::{Degraded, Watchdog};
use crate::retry::Backoffs;

/// Everything a worker needs to run.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The ledger namespace (pipelines sharing one database stay apart).
    pub pipeline: String,
    pub worker_id: String,
    pub landing_dir: PathBuf,
    pub checkpoint_dir: PathBuf,
    pub config: WorkerConfig,
    pub tables: TableNames,
    pub db: DbSettings,
    /// The declared schema (`spec.schema`), compiled; None: the built-in e-commerce table.
    pub schema: Option<std::sync::Arc<crate::validate::general::CompiledSchema>>,
    /// The format and compression of landing files (`spec.source`).
    pub source: sluice_core::config::SourceConfig,
}

impl Settings {
    pub fn claim_timeout(&self) -> Duration {
        Duration::from_secs(self.config.claim_timeout_seconds)
    }

    /// The validation rules of a batch parsed now.
    /// How the landing file `name` is read.
    pub fn input_kind(&self, name: &str) -> crate::input::Kind {
        crate::input::Kind::of(&self.source, name)
    }

    pub fn rules(&self) -> crate::validate::Rules {
        crate::validate::Rules {
            now: chrono::Utc::now(),
            future_tolerance: chrono::Duration::seconds(
                i64::try_from(self.config.future_tolerance_seconds).unwrap_or(i64::MAX / 1000),
            ),
            collect_event_ids: false,
            max_row_bytes: usize::try_from(self.config.max_row_bytes).unwrap_or(usize::MAX),
            schema: self
                .schema
                .as_ref()
                .map(|compiled| crate::validate::DeclaredRules {
                    compiled: compiled.clone(),
                    layout: None,
                }),
            csv: {
                let (delimiter, quote) = self.source.csv.bytes();
                crate::validate::CsvRules {
                    dialect: crate::records::Dialect { delimiter, quote },
                    header: self.source.csv.header,
                }
            },
            max_reject_share: self.config.max_reject_share,
            copy_format: self.config.copy_format,
        }
    }

    pub fn commit_context(&self) -> CommitContext {
        CommitContext {
            pipeline: self.pipeline.clone(),
            worker_id: self.worker_id.clone(),
            tables: self.tables.clone(),
            target: crate::batch_commit::Target::new(
                &self.tables,
                self.schema.as_deref(),
                self.config.copy_format,
            ),
            dedupe: self.config.dedupe_by_event_id,
            load_redeliveries: self.config.load_redeliveries,
        }
    }
}

/// After-commit retries: 1 s doubling to 60 s per file.
const SETTLE_FIRST_RETRY: Duration = Duration::from_secs(1);
const SETTLE_MAX_RETRY: Duration = Duration::from_secs(60);

pub struct Shared {
    pub settings: Settings,
    pub metrics: Metrics,
    pub health: Arc<Health>,
    pub watchdog: Watchdog,
    degraded: Degraded,
    db_up: AtomicBool,
    in_flight: Mutex<HashSet<String>>,
    unsettled: Mutex<Backoffs<String>>,
}

impl Shared {
    pub fn new(settings: Settings, metrics: Metrics, health: Arc<Health>) -> Arc<Shared> {
        let limit = Duration::from_secs(settings.config.liveness_timeout_seconds);
        Arc::new(Shared {
            settings,
            metrics,
            health,
            watchdog: Watchdog::new(limit),
            degraded: Degraded::default(),
            db_up: AtomicBool::new(false),
            in_flight: Mutex::new(HashSet::new()),
            unsettled: Mutex::new(Backoffs::new(SETTLE_FIRST_RETRY, SETTLE_MAX_RETRY)),
        })
    }

    /// Sets or clears a degraded cause: metric, log on change, readiness.
    pub fn set_degraded(&self, cause: DegradedCause, on: bool, detail: &str) {
        if self.degraded.set(cause, on) {
            self.metrics
                .degraded
                .with_label_values(&[cause.code()])
                .set(i64::from(on));
            if on {
                tracing::warn!(%cause, detail, advice = cause.advice(), "degraded");
            } else {
                tracing::info!(%cause, "no longer degraded");
            }
        }
        self.refresh_ready();
    }

    pub fn is_degraded(&self, cause: DegradedCause) -> bool {
        self.degraded.contains(cause)
    }

    /// A database connection came up or broke.
    pub fn set_db_up(&self, up: bool) {
        self.db_up.store(up, Ordering::Relaxed);
        self.metrics.db_up.set(i64::from(up));
        self.refresh_ready();
    }

    fn refresh_ready(&self) {
        self.health
            .set_ready(self.db_up.load(Ordering::Relaxed) && !self.degraded.blocks_ingest());
    }

    pub fn add_in_flight(&self, names: impl IntoIterator<Item = String>) {
        if let Ok(mut set) = self.in_flight.lock() {
            set.extend(names);
        }
    }

    pub fn remove_in_flight<'a>(&self, names: impl IntoIterator<Item = &'a String>) {
        if let Ok(mut set) = self.in_flight.lock() {
            for n in names {
                set.remove(n);
            }
        }
    }

    pub fn is_in_flight(&self, name: &str) -> bool {
        self.in_flight
            .lock()
            .map(|s| s.contains(name))
            .unwrap_or(false)
    }

    pub fn in_flight(&self) -> Vec<String> {
        self.in_flight
            .lock()
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// True while the after-commit step of `name` is backing off.
    pub fn settle_waiting(&self, name: &str, now: Instant) -> bool {
        self.unsettled
            .lock()
            .is_ok_and(|b| b.is_waiting(&name.to_string(), now))
    }

    /// Records the result of an after-commit step; keeps the metrics and the degraded
    /// cause in line with the files still waiting.
    pub fn settle_result(&self, name: &str, ok: bool) {
        let waiting = match self.unsettled.lock() {
            Ok(mut b) => {
                if ok {
                    b.succeeded(&name.to_string());
                } else {
                    b.failed(&name.to_string(), Instant::now());
                }
                b.len()
            }
            Err(_) => return,
        };
        if !ok {
            self.metrics.after_commit_errors.inc();
        }
        self.metrics.unsettled_files.set(waiting as i64);
        let failing = waiting > 0;
        if failing != self.is_degraded(DegradedCause::AfterCommitFailing) {
            self.set_degraded(
                DegradedCause::AfterCommitFailing,
                failing,
                "committed files cannot be moved",
            );
        }
    }

    /// Forgets after-commit retries of files no longer in the landing directory.
    pub fn forget_unsettled_except(&self, listed: &HashSet<&str>) {
        let waiting = match self.unsettled.lock() {
            Ok(mut b) => {
                b.retain(|n| listed.contains(n.as_str()));
                b.len()
            }
            Err(_) => return,
        };
        self.metrics.unsettled_files.set(waiting as i64);
        if waiting == 0 && self.is_degraded(DegradedCause::AfterCommitFailing) {
            self.set_degraded(DegradedCause::AfterCommitFailing, false, "");
        }
    }
}
