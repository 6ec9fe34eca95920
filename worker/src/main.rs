use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use sluice_core::telemetry::{self, Health};
use sluice_worker::cli::Args;
use sluice_worker::metrics::Metrics;
use sluice_worker::pipeline;

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
    let args = Args::parse();
    if let Err(e) = telemetry::init_logging_from_flags(&args.log_format, &args.log_level) {
        eprintln!("sluice-worker: {e}");
        return ExitCode::from(2);
    }
    let metrics_addr = match args.metrics_addr() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("sluice-worker: {e}");
            return ExitCode::from(2);
        }
    };
    let settings = match args.into_settings() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("sluice-worker: {e}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(4)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("sluice-worker: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
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
