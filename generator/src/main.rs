//! `sluice-generator`: parses flags, serves metrics, runs the generation loop on a
//! blocking thread until done or SIGTERM/SIGINT, then logs a one-line summary.

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Context;
use clap::Parser;
use sluice_core::telemetry::{Health, TelemetryServer, init_logging, shutdown_signal};
use sluice_generator::cli::{Args, MetricsAddr, Settings};
use sluice_generator::{Metrics, run};

fn main() -> ExitCode {
    let settings = match Args::parse().resolve() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("sluice-generator: {e}");
            return ExitCode::from(2);
        }
    };
    if let Err(e) = init_logging(settings.log_format, &settings.log_level) {
        eprintln!("sluice-generator: {e}");
        return ExitCode::from(2);
    }
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("sluice-generator: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(serve(settings)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(settings: Settings) -> anyhow::Result<()> {
    let metrics = Arc::new(Metrics::new().context("creating metrics")?);
    let health = Health::new();
    let stop = Arc::new(AtomicBool::new(false));

    let (server_stop, server_stopped) = tokio::sync::oneshot::channel::<()>();
    let server = match settings.metrics_addr {
        MetricsAddr::Listen(addr) => {
            let server =
                TelemetryServer::bind(addr, metrics.registry().clone(), health.clone()).await?;
            tracing::info!(addr = ?server.local_addr(), "serving /metrics, /healthz, /readyz");
            Some(tokio::spawn(server.serve(async {
                let _ = server_stopped.await;
            })))
        }
        MetricsAddr::Disabled => None,
    };
    {
        let stop = stop.clone();
        tokio::spawn(async move {
            shutdown_signal().await;
            stop.store(true, Ordering::Relaxed);
        });
    }

    let opts = settings.run;
    let cfg = &opts.config;
    tracing::info!(
        landing_dir = %opts.landing_dir.display(),
        events_per_second = cfg.events_per_second,
        rows_per_file = cfg.rows_per_file,
        bad_row_share = cfg.bad_row_share,
        messy_row_share = cfg.messy_row_share,
        seed = cfg.seed,
        start_time = ?opts.start_time,
        "generator starting"
    );
    health.set_ready(true);
    let summary = {
        let (metrics, stop) = (metrics.clone(), stop.clone());
        tokio::task::spawn_blocking(move || run(&opts, &metrics, &stop))
            .await
            .context("generator thread panicked")??
    };
    health.set_ready(false);
    tracing::info!(
        files = summary.files,
        rows = summary.rows,
        bad_rows = summary.bad_rows,
        messy_rows = summary.messy_rows,
        bytes = summary.bytes,
        stopped_by_signal = summary.stopped,
        elapsed_seconds = summary.elapsed_seconds,
        rows_per_second = (summary.rows as f64 / summary.elapsed_seconds.max(1e-9)).round(),
        "generator finished: {} files, {} rows, {} bad rows",
        summary.files,
        summary.rows,
        summary.bad_rows
    );
    let _ = server_stop.send(());
    if let Some(task) = server {
        let _ = task.await;
    }
    Ok(())
}
