//! The worker's Prometheus metrics (catalogue: docs/metrics.md).

use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry,
};

use sluice_core::RejectReason;
use sluice_core::metric_names::{self as names, DegradedCause};

#[derive(Clone)]
pub struct Metrics {
    pub rows: IntCounterVec,
    pub rejected_rows: IntCounterVec,
    pub rows_cleaned: IntCounterVec,
    pub files: IntCounterVec,
    pub batches: IntCounterVec,
    pub batch_files: Histogram,
    pub batch_rows: Histogram,
    pub batch_duration: Histogram,
    pub parse_duration: Histogram,
    pub db_duration: HistogramVec,
    pub file_latency: Histogram,
    pub backlog_files: IntGauge,
    pub backlog_bytes: IntGauge,
    pub lag_seconds: prometheus::Gauge,
    pub last_commit: prometheus::Gauge,
    pub db_errors: IntCounterVec,
    pub db_up: IntGauge,
    pub checkpoint_write: Histogram,
    pub after_commit_errors: IntCounter,
    pub degraded: IntGaugeVec,
    pub redelivered_files: IntCounter,
    pub claims_taken_over: IntCounter,
    pub file_parts: IntCounter,
    pub read_retries: IntCounter,
    pub unsettled_files: IntGauge,
    pub reingested_files: IntCounter,
}

fn buckets(start: f64, factor: f64, count: usize) -> Vec<f64> {
    prometheus::exponential_buckets(start, factor, count).unwrap_or_default()
}

impl Metrics {
    /// Pre-creates the (column, rule) labels of sluice_rows_cleaned_total the schema in
    /// force can count, so dashboards see zeros, not gaps.
    pub fn precreate_cleaning(&self, declared: Option<&sluice_core::schema::TableSchema>) {
        match declared {
            None => {
                for (column, rule) in crate::validate::cleaning_rules() {
                    self.rows_cleaned.with_label_values(&[column, rule.code()]);
                }
            }
            Some(schema) => {
                for c in &schema.columns {
                    for rule in &c.clean {
                        self.rows_cleaned
                            .with_label_values(&[c.name.as_str(), rule.code()]);
                    }
                }
            }
        }
    }

    pub fn register(registry: &Registry) -> Result<Metrics, prometheus::Error> {
        let secs = buckets(0.0005, 2.0, 16); // 0.5 ms .. ~16 s
        let m = Metrics {
            rows: IntCounterVec::new(
                Opts::new(names::ROWS_TOTAL, "Rows processed, by outcome (loaded, rejected, deduplicated)."),
                &["outcome"],
            )?,
            rejected_rows: IntCounterVec::new(
                Opts::new("sluice_worker_rejected_rows_total", "Rows sent to quarantine, by reason code."),
                &["reason"],
            )?,
            rows_cleaned: IntCounterVec::new(
                Opts::new(
                    names::ROWS_CLEANED_TOTAL,
                    "Valid rows changed by cleaning before validation, by column and rule (trim, ignore_case, lowercase; a declared schema adds its own rules: docs/schema.md).",
                ),
                &["column", "rule"],
            )?,
            files: IntCounterVec::new(
                Opts::new(
                    "sluice_worker_files_total",
                    "Landing files settled by this worker, by outcome (loaded, failed, redelivered = same content as an earlier file, skipped = already committed by another worker).",
                ),
                &["outcome"],
            )?,
            batches: IntCounterVec::new(
                Opts::new(
                    "sluice_worker_batches_total",
                    "Micro-batches, by outcome (committed, replayed = re-run after a restart, recovered = found committed after a restart, empty = every file taken by another worker).",
                ),
                &["outcome"],
            )?,
            batch_files: Histogram::with_opts(
                HistogramOpts::new("sluice_worker_batch_files", "Files per committed batch.")
                    .buckets(buckets(1.0, 2.0, 12)),
            )?,
            batch_rows: Histogram::with_opts(
                HistogramOpts::new("sluice_worker_batch_rows", "Data rows (valid + rejected) per committed batch.")
                    .buckets(buckets(10.0, 4.0, 10)),
            )?,
            batch_duration: Histogram::with_opts(
                HistogramOpts::new(
                    "sluice_worker_batch_duration_seconds",
                    "From planning a batch to its commit being recorded on the checkpoint volume.",
                )
                .buckets(secs.clone()),
            )?,
            parse_duration: Histogram::with_opts(
                HistogramOpts::new("sluice_worker_parse_duration_seconds", "Reading and validating a batch's files.")
                    .buckets(secs.clone()),
            )?,
            db_duration: HistogramVec::new(
                HistogramOpts::new(
                    "sluice_worker_db_duration_seconds",
                    "Time in PostgreSQL per batch, by phase (copy = ledger + COPY of rows and rejects, commit = COMMIT).",
                )
                .buckets(secs.clone()),
                &["phase"],
            )?,
            file_latency: Histogram::with_opts(
                HistogramOpts::new(
                    "sluice_worker_file_latency_seconds",
                    "From a file's modification time (when it landed) to the commit of its rows.",
                )
                .buckets(secs.clone()),
            )?,
            backlog_files: IntGauge::new(names::BACKLOG_FILES, "Landing files not yet committed, as last listed.")?,
            backlog_bytes: IntGauge::new("sluice_worker_backlog_bytes", "Bytes of landing files not yet committed.")?,
            lag_seconds: prometheus::Gauge::new(
                names::LAG_SECONDS,
                "Age of the oldest landing file not yet committed (0 when the backlog is empty).",
            )?,
            last_commit: prometheus::Gauge::new(
                names::LAST_COMMIT_TIMESTAMP,
                "Unix time of this worker's last committed batch.",
            )?,
            db_errors: IntCounterVec::new(
                Opts::new("sluice_worker_db_errors_total", "PostgreSQL errors, by operation (connect, claim, commit, lookup)."),
                &["operation"],
            )?,
            db_up: IntGauge::new("sluice_worker_db_up", "1 while the worker holds a working PostgreSQL connection.")?,
            checkpoint_write: Histogram::with_opts(
                HistogramOpts::new(
                    "sluice_worker_checkpoint_write_duration_seconds",
                    "Writes to the checkpoint volume: batch plans (not fsync'd) and state.json (fsync'd).",
                )
                .buckets(secs),
            )?,
            after_commit_errors: IntCounter::new(
                "sluice_worker_after_commit_errors_total",
                "Failures to archive, delete or set aside a committed file (each retried with backoff).",
            )?,
            degraded: IntGaugeVec::new(
                Opts::new(
                    names::DEGRADED,
                    "1 while a problem that is not about a file's content keeps the worker from progressing or makes results suspect, by cause.",
                ),
                &["cause"],
            )?,
            redelivered_files: IntCounter::new(
                "sluice_worker_redelivered_files_total",
                "Files whose content was already recorded under another name: recorded as re-deliveries, not loaded again.",
            )?,
            claims_taken_over: IntCounter::new(
                "sluice_worker_claims_taken_over_total",
                "Claims taken from another worker that had stopped renewing them.",
            )?,
            file_parts: IntCounter::new(
                "sluice_worker_file_parts_total",
                "Parts of large files committed (one transaction each).",
            )?,
            read_retries: IntCounter::new(
                "sluice_worker_read_retries_total",
                "Transient errors reading a landing file (EIO, ESTALE, EACCES…), retried before giving up.",
            )?,
            unsettled_files: IntGauge::new(
                "sluice_worker_unsettled_files",
                "Committed files that could not be archived, deleted or set aside yet (retried with backoff).",
            )?,
            reingested_files: IntCounter::new(
                "sluice_worker_reingested_files_total",
                "Archived files put back into the landing directory because the database no longer knew them (restore behind the checkpoint).",
            )?,
        };
        registry.register(Box::new(m.degraded.clone()))?;
        registry.register(Box::new(m.redelivered_files.clone()))?;
        registry.register(Box::new(m.claims_taken_over.clone()))?;
        registry.register(Box::new(m.file_parts.clone()))?;
        registry.register(Box::new(m.read_retries.clone()))?;
        registry.register(Box::new(m.unsettled_files.clone()))?;
        registry.register(Box::new(m.reingested_files.clone()))?;
        for cause in DegradedCause::ALL {
            m.degraded.with_label_values(&[cause.code()]);
        }
        registry.register(Box::new(m.after_commit_errors.clone()))?;
        registry.register(Box::new(m.rows.clone()))?;
        registry.register(Box::new(m.rejected_rows.clone()))?;
        registry.register(Box::new(m.rows_cleaned.clone()))?;
        registry.register(Box::new(m.files.clone()))?;
        registry.register(Box::new(m.batches.clone()))?;
        registry.register(Box::new(m.batch_files.clone()))?;
        registry.register(Box::new(m.batch_rows.clone()))?;
        registry.register(Box::new(m.batch_duration.clone()))?;
        registry.register(Box::new(m.parse_duration.clone()))?;
        registry.register(Box::new(m.db_duration.clone()))?;
        registry.register(Box::new(m.file_latency.clone()))?;
        registry.register(Box::new(m.backlog_files.clone()))?;
        registry.register(Box::new(m.backlog_bytes.clone()))?;
        registry.register(Box::new(m.lag_seconds.clone()))?;
        registry.register(Box::new(m.last_commit.clone()))?;
        registry.register(Box::new(m.db_errors.clone()))?;
        registry.register(Box::new(m.db_up.clone()))?;
        registry.register(Box::new(m.checkpoint_write.clone()))?;
        // Pre-create label values so dashboards and alerts see zeros, not gaps.
        for outcome in ["loaded", "rejected", "deduplicated"] {
            m.rows.with_label_values(&[outcome]);
        }
        for reason in RejectReason::ALL {
            m.rejected_rows.with_label_values(&[reason.code()]);
        }
        for outcome in ["loaded", "failed", "skipped", "redelivered"] {
            m.files.with_label_values(&[outcome]);
        }
        for outcome in ["committed", "replayed", "recovered", "empty"] {
            m.batches.with_label_values(&[outcome]);
        }
        for op in [
            "connect",
            "migrate",
            "claim",
            "commit",
            "lookup",
            "heartbeat",
        ] {
            m.db_errors.with_label_values(&[op]);
        }
        for phase in ["copy", "commit"] {
            m.db_duration.with_label_values(&[phase]);
        }
        Ok(m)
    }
}
