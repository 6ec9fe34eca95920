//! Command-line flags and environment variables of `sluice-worker`, merged over the
//! optional pipeline config file the operator mounts.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, ValueEnum};
use sluice_core::config::{AfterCommit, ConfigError, CopyFormat, PipelineConfig, SslMode};
use thiserror::Error;

use crate::db::{DbError, DbSettings};
use crate::pipeline::Settings;

#[derive(Debug, Error)]
pub enum CliError {
    #[error("cannot read config file {path}: {message}")]
    ConfigFile { path: PathBuf, message: String },
    #[error("{0}")]
    Invalid(#[from] ConfigError),
    #[error("{0}")]
    Db(#[from] DbError),
    #[error("invalid --metrics-addr {0:?}: expected host:port (e.g. 0.0.0.0:9100) or \"none\"")]
    MetricsAddr(String),
    #[error("invalid --worker-id {0:?}: use 1-63 characters from [A-Za-z0-9._-]")]
    WorkerId(String),
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum AfterCommitArg {
    Archive,
    Delete,
    Keep,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum SslModeArg {
    Disable,
    Prefer,
    Require,
    VerifyFull,
}

/// Sluice worker: loads CSV event files from a landing directory into PostgreSQL,
/// exactly once, in micro-batches. Valid rows go to the events table, rejected rows to
/// quarantine with a reason; unreadable files are set aside in <landing>/failed/.
///
/// Connection: --database-url / DATABASE_URL (or DATABASE_URL_FILE), else the libpq
/// variables PGHOST, PGPORT, PGDATABASE, PGUSER, PGPASSWORD (the last three also from
/// files: PGDATABASE_FILE, PGUSER_FILE, PGPASSWORD_FILE).
#[derive(Debug, Parser)]
#[command(name = "sluice-worker", version, about, long_about)]
pub struct Args {
    /// Directory where event files land (shared by all workers of a pipeline).
    #[arg(long, env = "SLUICE_LANDING_DIR")]
    pub landing_dir: PathBuf,
    /// This worker's own directory on persistent storage, for batch plans and commits.
    #[arg(long, env = "SLUICE_CHECKPOINT_DIR")]
    pub checkpoint_dir: PathBuf,
    /// Stable identity of this worker (a StatefulSet pod name); must not change across
    /// restarts and must differ between workers. Defaults to the host name.
    #[arg(long, env = "SLUICE_WORKER_ID")]
    pub worker_id: Option<String>,
    /// PostgreSQL URL, e.g. postgres://user:pass@host:5432/db. Prefer DATABASE_URL or
    /// DATABASE_URL_FILE so the password does not show in the process list.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
    /// TLS to PostgreSQL: disable, prefer, require (encrypt), verify-full (encrypt and
    /// check the certificate and host name). Default: from the URL or PGSSLMODE, else prefer.
    #[arg(long, value_enum)]
    pub sslmode: Option<SslModeArg>,
    /// PEM file with the CA certificates for sslmode=verify-full (or PGSSLROOTCERT).
    #[arg(long)]
    pub ssl_root_cert: Option<PathBuf>,
    /// Pipeline config file (JSON, as written by the operator); flags override it.
    #[arg(long, env = "SLUICE_CONFIG")]
    pub config: Option<PathBuf>,
    /// The pipeline this worker belongs to: its files, claims and batches are kept apart
    /// in the ledger from other pipelines sharing the database. Default: the config
    /// file's, else "default".
    #[arg(long, env = "SLUICE_PIPELINE")]
    pub pipeline: Option<String>,
    /// PostgreSQL schema of every table the worker uses (target, quarantine, ledger);
    /// created when missing. Default: the config file's, else the connection's default.
    #[arg(long, env = "SLUICE_POSTGRES_SCHEMA", value_name = "SCHEMA")]
    pub postgres_schema: Option<String>,
    /// Most files per batch.
    #[arg(long)]
    pub max_files: Option<u64>,
    /// Most rows per batch (estimated from file sizes).
    #[arg(long)]
    pub max_rows: Option<u64>,
    /// Most input bytes per batch.
    #[arg(long)]
    pub max_bytes: Option<u64>,
    /// Wait at most this many milliseconds for more files before starting a batch.
    #[arg(long)]
    pub max_wait_ms: Option<u64>,
    /// What to do with a file after its rows are committed.
    #[arg(long, value_enum)]
    pub after_commit: Option<AfterCommitArg>,
    /// Delete archive day folders older than this many hours (0 = keep forever).
    #[arg(long)]
    pub archive_retention_hours: Option<u64>,
    /// Skip rows whose event_id is already stored (adds a unique index on event_id).
    #[arg(long)]
    pub dedupe: bool,
    /// Load a file whose content is identical to one already loaded under another name
    /// (by default it is recorded as a re-delivery and not loaded again).
    #[arg(long)]
    pub load_redeliveries: bool,
    /// Files larger than --max-bytes are streamed in parts of about this many bytes,
    /// one transaction each (memory stays bounded; a restart resumes at the last part).
    #[arg(long)]
    pub part_bytes: Option<u64>,
    /// Rows longer than this many bytes are quarantined as row_too_long.
    #[arg(long)]
    pub max_row_bytes: Option<u64>,
    /// /healthz fails when a loop of the worker is stuck in one step for this long.
    #[arg(long)]
    pub liveness_timeout_seconds: Option<u64>,
    /// Reject tolerance, 0.0 to 1.0: a file whose share of rejected rows exceeds it is set
    /// aside whole (reason reject_share_exceeded) instead of filling quarantine. Default:
    /// off.
    #[arg(long, value_name = "SHARE")]
    pub max_reject_share: Option<f64>,
    /// How rows travel to PostgreSQL: binary (default, the fastest) or text.
    #[arg(long, value_name = "FORMAT", value_parser = parse_copy_format)]
    pub copy_format: Option<CopyFormat>,
    /// Reject rows whose event_time is more than this many seconds in the future.
    #[arg(long)]
    pub future_tolerance_seconds: Option<u64>,
    /// Interval of the directory listing that backs up inotify, in milliseconds.
    #[arg(long)]
    pub poll_interval_ms: Option<u64>,
    /// Take over claims that their worker has not renewed for this many seconds. Also
    /// the database session's statement, lock and idle-in-transaction timeouts, so a
    /// frozen worker's transaction ends within this time.
    #[arg(long)]
    pub claim_timeout_seconds: Option<u64>,
    /// On SIGTERM, give the batch in flight this many seconds to finish.
    #[arg(long)]
    pub shutdown_grace_seconds: Option<u64>,
    /// Address for /metrics, /healthz and /readyz, or "none".
    #[arg(long, env = "SLUICE_METRICS_ADDR", default_value = "0.0.0.0:9100")]
    pub metrics_addr: String,
    /// Log format: text or json.
    #[arg(long, env = "SLUICE_LOG_FORMAT", default_value = "text")]
    pub log_format: String,
    /// Log level or filter (e.g. info, debug, sluice_worker=debug). RUST_LOG wins.
    #[arg(long, env = "SLUICE_LOG_LEVEL", default_value = "info")]
    pub log_level: String,
}

impl Args {
    /// The metrics address, or `None` when disabled.
    pub fn metrics_addr(&self) -> Result<Option<SocketAddr>, CliError> {
        match self.metrics_addr.trim() {
            "" | "none" | "off" => Ok(None),
            a => a
                .parse()
                .map(Some)
                .map_err(|_| CliError::MetricsAddr(a.to_string())),
        }
    }

    /// Merges the config file and flags into validated settings.
    pub fn into_settings(self) -> Result<Settings, CliError> {
        let mut pipeline = match &self.config {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|e| CliError::ConfigFile {
                    path: path.clone(),
                    message: e.to_string(),
                })?;
                serde_json::from_str::<PipelineConfig>(&text).map_err(|e| CliError::ConfigFile {
                    path: path.clone(),
                    message: e.to_string(),
                })?
            }
            None => PipelineConfig::default(),
        };
        let w = &mut pipeline.worker;
        if let Some(v) = self.max_files {
            w.batch.max_files = v;
        }
        if let Some(v) = self.max_rows {
            w.batch.max_rows = v;
        }
        if let Some(v) = self.max_bytes {
            w.batch.max_bytes = v;
        }
        if let Some(v) = self.max_wait_ms {
            w.batch.max_wait_ms = v;
        }
        if let Some(v) = self.after_commit {
            w.after_commit = match v {
                AfterCommitArg::Archive => AfterCommit::Archive,
                AfterCommitArg::Delete => AfterCommit::Delete,
                AfterCommitArg::Keep => AfterCommit::Keep,
            };
        }
        if let Some(v) = self.archive_retention_hours {
            w.archive_retention_hours = v;
        }
        if self.dedupe {
            w.dedupe_by_event_id = true;
        }
        if self.load_redeliveries {
            w.load_redeliveries = true;
        }
        if let Some(v) = self.part_bytes {
            w.part_bytes = v;
        }
        if let Some(v) = self.max_row_bytes {
            w.max_row_bytes = v;
        }
        if self.max_reject_share.is_some() {
            w.max_reject_share = self.max_reject_share;
        }
        if let Some(v) = self.copy_format {
            w.copy_format = v;
        }
        if let Some(v) = self.liveness_timeout_seconds {
            w.liveness_timeout_seconds = v;
        }
        if let Some(v) = self.future_tolerance_seconds {
            w.future_tolerance_seconds = v;
        }
        if let Some(v) = self.poll_interval_ms {
            w.poll_interval_ms = v;
        }
        if let Some(v) = self.claim_timeout_seconds {
            w.claim_timeout_seconds = v;
        }
        if let Some(v) = self.shutdown_grace_seconds {
            w.shutdown_grace_seconds = v;
        }
        if let Some(id) = self.pipeline {
            pipeline.pipeline = id;
        }
        if self.postgres_schema.is_some() {
            pipeline.postgres_schema = self.postgres_schema;
        }
        pipeline.validate_for_worker()?;
        let sslmode = self.sslmode.map(|m| match m {
            SslModeArg::Disable => SslMode::Disable,
            SslModeArg::Prefer => SslMode::Prefer,
            SslModeArg::Require => SslMode::Require,
            SslModeArg::VerifyFull => SslMode::VerifyFull,
        });
        // The config file's sslmode applies when neither flag nor URL nor env names one.
        let file_sslmode = self.config.as_ref().map(|_| pipeline.sslmode);
        let db = DbSettings::resolve(
            self.database_url,
            sslmode.or(file_sslmode),
            self.ssl_root_cert,
        )?
        .with_search_path(pipeline.postgres_schema.clone());
        let worker_id = match self.worker_id {
            Some(id) => id,
            None => std::env::var("HOSTNAME").unwrap_or_else(|_| "worker-0".into()),
        };
        if worker_id.is_empty()
            || worker_id.len() > 63
            || !worker_id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        {
            return Err(CliError::WorkerId(worker_id));
        }
        let schema = match pipeline.schema {
            // validate_for_worker checked it; compiling cannot fail after that.
            Some(declared) => Some(std::sync::Arc::new(
                crate::validate::general::CompiledSchema::new(declared).map_err(|e| {
                    sluice_core::config::ConfigError {
                        field: "schema",
                        problem: e.to_string(),
                    }
                })?,
            )),
            None => None,
        };
        Ok(Settings {
            schema,
            source: pipeline.source,
            pipeline: pipeline.pipeline,
            worker_id,
            landing_dir: self.landing_dir,
            checkpoint_dir: self.checkpoint_dir,
            config: pipeline.worker,
            tables: pipeline.tables,
            db,
        })
    }
}

fn parse_copy_format(s: &str) -> Result<CopyFormat, String> {
    match s {
        "binary" => Ok(CopyFormat::Binary),
        "text" => Ok(CopyFormat::Text),
        _ => Err(format!("expected binary or text, found {s:?}")),
    }
}
