//! The worker's Prometheus metrics (catalogue: docs/metrics.md).

use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
};

use sluice_core::RejectReason;

#[derive(Clone)]
pub struct Metrics {
    pub rows: IntCounterVec,
    pub rejected_rows: IntCounterVec,
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
}

fn buckets(start: f64, factor: f64, count: usize) -> Vec<f64> {
    prometheus::exponential_buckets(start, factor, count).unwrap_or_default()
}

impl Metrics {
    pub fn register(registry: &Registry) -> Result<Metrics, prometheus::Error> {
        let secs = buckets(0.0005, 2.0, 16); // 0.5 ms .. ~16 s
        let m = Metrics {
            rows: IntCounterVec::new(
                Opts::new("sluice_worker_rows_total", "Rows processed, by outcome (loaded, rejected, deduplicated)."),
                &["outcome"],
            )?,
            rejected_rows: IntCounterVec::new(
                Opts::new("sluice_worker_rejected_rows_total", "Rows sent to quarantine, by reason code."),
                &["reason"],
            )?,
            files: IntCounterVec::new(
                Opts::new(
                    "sluice_worker_files_total",
                    "Landing files settled by this worker, by outcome (loaded, failed, skipped = already committed by another worker).",
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
            backlog_files: IntGauge::new("sluice_worker_backlog_files", "Landing files not yet committed, as last listed.")?,
            backlog_bytes: IntGauge::new("sluice_worker_backlog_bytes", "Bytes of landing files not yet committed.")?,
            lag_seconds: prometheus::Gauge::new(
                "sluice_worker_lag_seconds",
                "Age of the oldest landing file not yet committed (0 when the backlog is empty).",
            )?,
            last_commit: prometheus::Gauge::new(
                "sluice_worker_last_commit_timestamp_seconds",
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
                    "Durable (fsync'd) writes to the checkpoint volume.",
                )
                .buckets(secs),
            )?,
            after_commit_errors: IntCounter::new(
                "sluice_worker_after_commit_errors_total",
                "Failures to archive, delete or set aside a committed file (retried on the next listing).",
            )?,
        };
        registry.register(Box::new(m.after_commit_errors.clone()))?;
        registry.register(Box::new(m.rows.clone()))?;
        registry.register(Box::new(m.rejected_rows.clone()))?;
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
        for outcome in ["loaded", "failed", "skipped"] {
            m.files.with_label_values(&[outcome]);
        }
        for outcome in ["committed", "replayed", "recovered", "empty"] {
            m.batches.with_label_values(&[outcome]);
        }
        for op in ["connect", "migrate", "claim", "commit", "lookup"] {
            m.db_errors.with_label_values(&[op]);
        }
        for phase in ["copy", "commit"] {
            m.db_duration.with_label_values(&[phase]);
        }
        Ok(m)
    }
}
