use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use sluice_core::telemetry::{self, Health};
use sluice_worker::cli::Args;
use sluice_worker::metrics::Metrics;
use sluice_worker::pipeline;
use sluice_worker::tool_cli::{self, Output, ToolArgs, ToolCommand};

/// glibc raises its mmap threshold each time a large buffer is freed, after which batch
/// buffers (several MiB each) come from the heap and stay resident: peak RSS measured
/// 43–48 MiB with the dynamic threshold and 32 MiB with it pinned. The threshold can only
/// be pinned before the allocator starts, through the environment, so the worker re-executes
/// itself once with it set (same PID; a value the user set is kept). No effect elsewhere.
const MMAP_THRESHOLD_ENV: &str = "MALLOC_MMAP_THRESHOLD_";

fn pin_malloc_mmap_threshold() {
    use std::os::unix::process::CommandExt;
    if std::env::var_os(MMAP_THRESHOLD_ENV).is_some() || !cfg!(target_env = "gnu") {
        return;
    }
    let Ok(exe) = std::env::current_exe() else {
        return;
    };
    let err = std::process::Command::new(exe)
        .args(std::env::args_os().skip(1))
        .env(MMAP_THRESHOLD_ENV, "131072")
        .exec();
    // Only reached when exec failed: carry on with the default allocator settings.
    eprintln!("sluice-worker: could not re-execute to pin the malloc mmap threshold: {err}");
}

fn main() -> ExitCode {
    pin_malloc_mmap_threshold();
    let argv: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if tool_cli::is_tool_invocation(&argv) {
        return run_tool(ToolArgs::parse_from(argv));
    }
    let args = Args::parse();
    let prepared = setting(telemetry::init_logging_from_flags(
        &args.log_format,
        &args.log_level,
    ))
    .and_then(|()| setting(args.metrics_addr()))
    .and_then(|addr| Ok((addr, setting(args.into_settings())?)));
    let (metrics_addr, settings) = match prepared {
        Ok(p) => p,
        Err(code) => return code,
    };
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.worker_threads(2).max_blocking_threads(4);
    let runtime = match runtime(builder) {
        Ok(r) => r,
        Err(code) => return code,
    };
    match runtime.block_on(run(settings, metrics_addr)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("sluice-worker: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(
    settings: pipeline::Settings,
    metrics_addr: Option<std::net::SocketAddr>,
) -> anyhow::Result<()> {
    let registry = prometheus::Registry::new();
    let metrics = Metrics::register(&registry).context("registering metrics")?;
    let health = Health::new();
    let stop_rx = telemetry::stop_on_signal();
    let server = telemetry::spawn_server(
        metrics_addr,
        registry.clone(),
        health.clone(),
        stop_rx.clone(),
    )
    .await?;

    let result = pipeline::run(settings, metrics, health, stop_rx).await;
    if let Some(server) = server {
        server.abort();
    }
    result?;
    tracing::info!("worker stopped");
    Ok(())
}

/// Runs a one-shot command (`replay`, `report`, `quarantine`): results on stdout, logs
/// and errors on stderr. Exit status 2 for bad settings, 1 for a failure.
fn run_tool(args: ToolArgs) -> ExitCode {
    let conn = match &args.command {
        ToolCommand::Replay { conn, .. }
        | ToolCommand::Report { conn, .. }
        | ToolCommand::Quarantine { conn, .. } => conn,
    };
    let prepared = setting(telemetry::init_logging_from_flags("text", &conn.log_level))
        .and_then(|()| setting(conn.settings()));
    let settings = match prepared {
        Ok(s) => s,
        Err(code) => return code,
    };
    let runtime = match runtime(tokio::runtime::Builder::new_current_thread()) {
        Ok(r) => r,
        Err(code) => return code,
    };
    match runtime.block_on(tool(&args.command, &settings)) {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("sluice-worker: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// A setting that could be read, or exit status 2 after saying what is wrong with it.
fn setting<T>(read: Result<T, impl std::fmt::Display>) -> Result<T, ExitCode> {
    read.map_err(|e| {
        eprintln!("sluice-worker: {e}");
        ExitCode::from(2)
    })
}

/// The async runtime, or a failure exit status after saying why it cannot start.
fn runtime(mut builder: tokio::runtime::Builder) -> Result<tokio::runtime::Runtime, ExitCode> {
    builder.enable_all().build().map_err(|e| {
        eprintln!("sluice-worker: cannot start the async runtime: {e}");
        ExitCode::FAILURE
    })
}

/// The output of a one-shot command.
async fn tool(command: &ToolCommand, settings: &pipeline::Settings) -> anyhow::Result<String> {
    use sluice_worker::{replay, report};
    let mut client = settings
        .db
        .connect()
        .await
        .with_context(|| format!("connecting to {}", settings.db.describe()))?;
    match command {
        ToolCommand::Replay {
            conn,
            filter,
            output,
        } => {
            let landing = conn.has_landing_dir().then(|| settings.landing_dir.clone());
            let mut layouts = replay::Layouts::new(landing);
            let summary = replay::replay(&mut client, settings, &filter.options(), &mut layouts)
                .await
                .context("replay stopped (the chunks reported before committed)")?;
            Ok(match output {
                Output::Text => summary.to_text(),
                Output::Json => to_json(&summary)?,
            })
        }
        ToolCommand::Report { top, output, .. } => {
            let r = report::read(
                &mut client,
                &settings.pipeline,
                &settings.tables.quarantine,
                *top,
            )
            .await
            .context("reading the ledger")?;
            Ok(match output {
                Output::Text => r.to_text(),
                Output::Json => to_json(&r)?,
            })
        }
        ToolCommand::Quarantine {
            reason,
            file,
            limit,
            output,
            ..
        } => {
            let filter = report::SampleFilter {
                reasons: reason.clone(),
                files: file.clone(),
                limit: *limit,
            };
            let rows = report::sample(
                &client,
                &settings.pipeline,
                &settings.tables.quarantine,
                &filter,
            )
            .await
            .context("reading quarantine")?;
            Ok(match output {
                Output::Text => report::sample_text(&rows),
                Output::Json => to_json(&rows)?,
            })
        }
    }
}

/// One JSON document and a newline.
fn to_json<T: serde::Serialize>(value: &T) -> anyhow::Result<String> {
    Ok(serde_json::to_string_pretty(value)? + "\n")
}
