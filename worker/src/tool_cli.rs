//! The one-shot commands of `sluice-worker` (`replay`, `report`, `quarantine`): their
//! flags, and the pipeline settings they read exactly as the worker does (the same
//! config file, connection flags and environment), so that run in a worker pod through
//! `kubectl exec` they need nothing but the pod's own environment.

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use chrono::{DateTime, Utc};
use clap::{Parser, Subcommand, ValueEnum};

use crate::cli::{Args, CliError, SslModeArg};

/// Why a one-shot command could not read the pipeline's settings.
#[derive(Debug, thiserror::Error)]
pub enum ToolError {
    #[error("{0}")]
    Settings(String),
    #[error(transparent)]
    Cli(#[from] CliError),
}
use crate::pipeline::Settings;
use crate::replay::ReplayOptions;

/// The names of the one-shot commands (the first argument selects them).
pub const TOOL_COMMANDS: [&str; 3] = ["replay", "report", "quarantine"];

/// True when `args` (with the program name first) run a one-shot command rather than
/// the worker.
pub fn is_tool_invocation(args: &[OsString]) -> bool {
    args.get(1)
        .and_then(|a| a.to_str())
        .is_some_and(|a| TOOL_COMMANDS.contains(&a))
}

/// How results are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum)]
pub enum Output {
    /// For people.
    #[default]
    Text,
    /// For scripts and `kubectl sluice` (one JSON document on stdout).
    Json,
}

/// One-shot commands of the Sluice worker, run against the pipeline's database with the
/// worker's own settings (in a worker pod: `kubectl exec … -- sluice-worker report`).
#[derive(Debug, Parser)]
#[command(name = "sluice-worker", version)]
pub struct ToolArgs {
    #[command(subcommand)]
    pub command: ToolCommand,
}

#[derive(Debug, Subcommand)]
pub enum ToolCommand {
    /// Re-validates quarantined rows with the pipeline's current rules; moves the rows
    /// that now pass into the target table and removes them from quarantine, exactly
    /// once, in one transaction per chunk. Safe to kill and run again, and to run twice
    /// at once (each chunk is locked; the other run skips it).
    Replay {
        #[command(flatten)]
        conn: ConnArgs,
        #[command(flatten)]
        filter: ReplayArgs,
        #[arg(short = 'o', long = "output", value_enum, default_value_t)]
        output: Output,
    },
    /// Exact totals from the ledger (files, rows loaded, rejected, deduplicated) and the
    /// quarantine's top reasons.
    Report {
        #[command(flatten)]
        conn: ConnArgs,
        /// How many quarantine reasons to list.
        #[arg(long, default_value_t = 10)]
        top: u32,
        #[arg(short = 'o', long = "output", value_enum, default_value_t)]
        output: Output,
    },
    /// Sample quarantined rows with their reason, message, file and line.
    Quarantine {
        #[command(flatten)]
        conn: ConnArgs,
        /// Only rows with this reason (repeatable).
        #[arg(long)]
        reason: Vec<String>,
        /// Only rows from this landing file (repeatable).
        #[arg(long)]
        file: Vec<String>,
        /// Most rows to show.
        #[arg(long, default_value_t = 20)]
        limit: u32,
        #[arg(short = 'o', long = "output", value_enum, default_value_t)]
        output: Output,
    },
}

/// Which quarantined rows a replay takes, and how.
#[derive(Debug, clap::Args)]
pub struct ReplayArgs {
    /// Only rows with this reason (repeatable).
    #[arg(long)]
    pub reason: Vec<String>,
    /// Only rows quarantined at or after this time (RFC 3339, e.g. 2026-11-25T10:00:00Z).
    #[arg(long, value_parser = parse_time)]
    pub since: Option<DateTime<Utc>>,
    /// Only rows from this landing file (repeatable).
    #[arg(long)]
    pub file: Vec<String>,
    /// Examine at most this many rows.
    #[arg(long)]
    pub limit: Option<u64>,
    /// Rows per transaction.
    #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub chunk_rows: u32,
    /// Pause this many milliseconds between chunks, to spare a busy database.
    #[arg(long, default_value_t = 0)]
    pub pause_ms: u64,
    /// Say what would move without changing anything.
    #[arg(long)]
    pub dry_run: bool,
}

fn parse_time(s: &str) -> Result<DateTime<Utc>, String> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| format!("expected an RFC 3339 time such as 2026-11-25T10:00:00Z: {e}"))
}

impl ReplayArgs {
    pub fn options(&self) -> ReplayOptions {
        ReplayOptions {
            reasons: self.reason.clone(),
            since: self.since,
            files: self.file.clone(),
            limit: self.limit,
            chunk_rows: self.chunk_rows,
            pause: Duration::from_millis(self.pause_ms),
            dry_run: self.dry_run,
        }
    }
}

/// The pipeline and connection, read like the worker reads them (see `sluice-worker
/// --help`): the config file, then these flags, then the environment.
#[derive(Debug, clap::Args)]
pub struct ConnArgs {
    /// Pipeline config file (JSON, as written by the operator).
    #[arg(long, env = "SLUICE_CONFIG")]
    pub config: Option<PathBuf>,
    /// The landing directory: a replay reads the header of an archived file there when
    /// a declared schema matches fields by header name.
    #[arg(long, env = "SLUICE_LANDING_DIR")]
    pub landing_dir: Option<PathBuf>,
    /// PostgreSQL URL; prefer DATABASE_URL, DATABASE_URL_FILE or the PG* variables.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
    /// TLS to PostgreSQL (as for the worker).
    #[arg(long, value_enum)]
    pub sslmode: Option<SslModeArg>,
    /// PEM file with the CA certificates for sslmode=verify-full.
    #[arg(long)]
    pub ssl_root_cert: Option<PathBuf>,
    /// The pipeline (ledger namespace). Default: the config file's, else "default".
    #[arg(long, env = "SLUICE_PIPELINE")]
    pub pipeline: Option<String>,
    /// PostgreSQL schema of the pipeline's tables. Default: the config file's.
    #[arg(long, env = "SLUICE_POSTGRES_SCHEMA", value_name = "SCHEMA")]
    pub postgres_schema: Option<String>,
    /// Log level of the messages written to stderr.
    #[arg(long, default_value = "warn")]
    pub log_level: String,
}

impl ConnArgs {
    /// The pipeline's settings, merged and validated exactly as the worker's are.
    pub fn settings(&self) -> Result<Settings, ToolError> {
        let landing = self
            .landing_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from("/nonexistent/landing"));
        // Parsed like the worker's own flags, so every default and check is the worker's.
        let mut argv: Vec<std::ffi::OsString> = vec![
            "sluice-worker".into(),
            "--landing-dir".into(),
            landing.clone().into(),
            "--checkpoint-dir".into(),
            landing.join(".unused-checkpoint").into(),
            "--worker-id".into(),
            "sluice-tool".into(),
            "--metrics-addr".into(),
            "none".into(),
        ];
        let mut flag = |name: &str, value: Option<std::ffi::OsString>| {
            if let Some(v) = value {
                argv.push(name.into());
                argv.push(v);
            }
        };
        flag("--config", self.config.clone().map(Into::into));
        flag("--database-url", self.database_url.clone().map(Into::into));
        flag(
            "--sslmode",
            self.sslmode
                .and_then(|m| m.to_possible_value())
                .map(|v| v.get_name().into()),
        );
        flag(
            "--ssl-root-cert",
            self.ssl_root_cert.clone().map(Into::into),
        );
        flag("--pipeline", self.pipeline.clone().map(Into::into));
        flag(
            "--postgres-schema",
            self.postgres_schema.clone().map(Into::into),
        );
        let args = Args::try_parse_from(argv).map_err(|e| ToolError::Settings(e.to_string()))?;
        Ok(args.into_settings()?)
    }

    /// Whether a landing directory was given (a replay looks for archived files there).
    pub fn has_landing_dir(&self) -> bool {
        self.landing_dir.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(args: &[&str]) -> Vec<OsString> {
        args.iter().map(OsString::from).collect()
    }

    #[test]
    fn only_the_first_argument_selects_a_command() {
        assert!(is_tool_invocation(&os(&["sluice-worker", "replay"])));
        assert!(is_tool_invocation(&os(&[
            "sluice-worker",
            "report",
            "-o",
            "json"
        ])));
        assert!(!is_tool_invocation(&os(&[
            "sluice-worker",
            "--landing-dir",
            "replay"
        ])));
        assert!(!is_tool_invocation(&os(&["sluice-worker"])));
    }

    #[test]
    fn replay_flags_parse_into_options() {
        let parsed = ToolArgs::try_parse_from([
            "sluice-worker",
            "replay",
            "--reason",
            "bad_price",
            "--reason",
            "unknown_event_type",
            "--since",
            "2026-11-25T10:00:00+02:00",
            "--chunk-rows",
            "7",
            "--dry-run",
            "-o",
            "json",
        ])
        .expect("parse");
        let ToolCommand::Replay { filter, output, .. } = parsed.command else {
            panic!("not replay");
        };
        let o = filter.options();
        assert_eq!(o.reasons, ["bad_price", "unknown_event_type"]);
        assert_eq!(
            o.since.map(|t| t.to_rfc3339()),
            Some("2026-11-25T08:00:00+00:00".into())
        );
        assert_eq!(o.chunk_rows, 7);
        assert!(o.dry_run);
        assert_eq!(output, Output::Json);
        assert!(
            ToolArgs::try_parse_from(["sluice-worker", "replay", "--since", "yesterday"]).is_err()
        );
        assert!(
            ToolArgs::try_parse_from(["sluice-worker", "replay", "--chunk-rows", "0"]).is_err()
        );
    }
}
