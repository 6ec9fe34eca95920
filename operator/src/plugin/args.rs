//! The command line of `kubectl sluice`, and the `sluice-worker` command each
//! subcommand runs in a worker pod.

use clap::{Parser, Subcommand, ValueEnum};

use crate::children::{CONFIG_DIR, CONFIG_FILE, LANDING_DIR};

/// Day-two answers about a Sluice IngestPipeline: status, quarantine, replay. Uses your
/// kubeconfig and its permissions; the database is reached from inside a worker pod
/// (pods/exec), never from this machine.
#[derive(Debug, Parser)]
#[command(name = "kubectl-sluice", bin_name = "kubectl sluice", version)]
pub struct PluginArgs {
    /// Namespace of the pipeline (default: the kubeconfig context's).
    #[arg(short = 'n', long, global = true)]
    pub namespace: Option<String>,
    #[command(subcommand)]
    pub command: PluginCommand,
}

/// How `status` is printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum)]
pub enum StatusOutput {
    #[default]
    Text,
    Json,
    Yaml,
}

/// How results that come from the worker are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum)]
pub enum WorkerOutput {
    #[default]
    Text,
    Json,
}

impl WorkerOutput {
    fn flag(self) -> &'static str {
        match self {
            WorkerOutput::Text => "text",
            WorkerOutput::Json => "json",
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum PluginCommand {
    /// Conditions, workers (readiness, restarts, lag, backlog, rate), exact totals from
    /// the ledger, quarantine's top reasons and the last Events.
    Status {
        pipeline: String,
        #[arg(short = 'o', long = "output", value_enum, default_value_t)]
        output: StatusOutput,
        /// Events to show.
        #[arg(long, default_value_t = 5)]
        events: usize,
    },
    /// Sample quarantined rows with reason, message, file and line.
    Quarantine {
        pipeline: String,
        #[arg(long)]
        reason: Vec<String>,
        #[arg(long)]
        file: Vec<String>,
        #[arg(long, default_value_t = 20)]
        limit: u32,
        #[arg(short = 'o', long = "output", value_enum, default_value_t)]
        output: WorkerOutput,
    },
    /// Re-validate quarantined rows with the pipeline's current rules and move those that
    /// now pass into the target table, exactly once (one transaction per chunk).
    Replay {
        pipeline: String,
        #[arg(long)]
        reason: Vec<String>,
        /// RFC 3339 time: only rows quarantined since.
        #[arg(long)]
        since: Option<String>,
        #[arg(long)]
        file: Vec<String>,
        #[arg(long)]
        limit: Option<u64>,
        #[arg(long)]
        chunk_rows: Option<u32>,
        #[arg(long)]
        dry_run: bool,
        #[arg(short = 'o', long = "output", value_enum, default_value_t)]
        output: WorkerOutput,
    },
}

/// `sluice-worker <sub> <args>` with the pod's own config file and landing directory
/// (the credentials come from the pod's environment).
pub fn worker_command(sub: &str, args: Vec<String>) -> Vec<String> {
    let mut cmd = vec!["sluice-worker".to_string(), sub.to_string()];
    cmd.extend(args);
    cmd.push(format!("--config={CONFIG_DIR}/{CONFIG_FILE}"));
    cmd.push(format!("--landing-dir={LANDING_DIR}"));
    cmd
}

/// The worker command of `quarantine` or `replay` (None for `status`).
pub fn remote_command(command: &PluginCommand) -> Option<Vec<String>> {
    let repeat = |flag: &str, values: &[String]| -> Vec<String> {
        values.iter().map(|v| format!("--{flag}={v}")).collect()
    };
    match command {
        PluginCommand::Status { .. } => None,
        PluginCommand::Quarantine {
            reason,
            file,
            limit,
            output,
            ..
        } => {
            let mut a = repeat("reason", reason);
            a.extend(repeat("file", file));
            a.push(format!("--limit={limit}"));
            a.push(format!("--output={}", output.flag()));
            Some(worker_command("quarantine", a))
        }
        PluginCommand::Replay {
            reason,
            since,
            file,
            limit,
            chunk_rows,
            dry_run,
            output,
            ..
        } => {
            let mut a = repeat("reason", reason);
            a.extend(repeat("file", file));
            a.extend(since.iter().map(|s| format!("--since={s}")));
            a.extend(limit.iter().map(|l| format!("--limit={l}")));
            a.extend(chunk_rows.iter().map(|c| format!("--chunk-rows={c}")));
            if *dry_run {
                a.push("--dry-run".into());
            }
            a.push(format!("--output={}", output.flag()));
            Some(worker_command("replay", a))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replay_flags_reach_the_worker_one_argument_each() {
        let args = PluginArgs::try_parse_from([
            "kubectl-sluice",
            "-n",
            "shop",
            "replay",
            "orders",
            "--reason",
            "not_allowed",
            "--reason",
            "bad price; rm -rf /",
            "--since",
            "2026-11-25T10:00:00Z",
            "--dry-run",
        ])
        .expect("parse");
        assert_eq!(args.namespace.as_deref(), Some("shop"));
        let cmd = remote_command(&args.command).expect("a worker command");
        assert_eq!(
            cmd,
            [
                "sluice-worker",
                "replay",
                "--reason=not_allowed",
                "--reason=bad price; rm -rf /",
                "--since=2026-11-25T10:00:00Z",
                "--dry-run",
                "--output=text",
                "--config=/etc/sluice/pipeline.json",
                "--landing-dir=/data/landing",
            ]
        );
    }

    #[test]
    fn status_runs_nothing_and_quarantine_passes_its_filters() {
        let status = PluginArgs::try_parse_from(["kubectl-sluice", "status", "p", "-o", "yaml"])
            .expect("parse");
        assert!(remote_command(&status.command).is_none());
        let q = PluginArgs::try_parse_from([
            "kubectl-sluice",
            "quarantine",
            "p",
            "--file",
            "a.csv",
            "--limit",
            "3",
            "-o",
            "json",
        ])
        .expect("parse");
        let cmd = remote_command(&q.command).expect("cmd");
        assert!(cmd.contains(&"--file=a.csv".to_string()));
        assert!(cmd.contains(&"--limit=3".to_string()));
        assert!(cmd.contains(&"--output=json".to_string()));
        assert!(
            PluginArgs::try_parse_from(["kubectl-sluice", "status", "p", "-o", "xml"]).is_err()
        );
    }
}
