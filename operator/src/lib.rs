//! The Sluice operator as a library: the `IngestPipeline` API ([`crd`]), pure builders
//! of its children ([`children`]), validation, status computation, the controller
//! ([`reconcile`]), leader election and metrics. The binary is a thin CLI over [`run`].

pub mod children;
pub mod cli;
pub mod controller;
pub mod crd;
pub mod credentials;
pub mod deletion;
#[cfg(test)]
mod fixtures;
pub mod images;
pub mod leader;
pub mod metrics;
pub mod metrics_scrape;
pub mod monitoring;
pub mod pdb;
pub mod plugin;
pub mod reason;
pub mod reconcile;
pub mod status;
pub mod tls;
pub mod validate;

use std::sync::Arc;

use kube::Client;
use sluice_core::telemetry::Health;
use tokio::sync::watch;

pub use crd::{IngestPipeline, IngestPipelineSpec, IngestPipelineStatus};
pub use reconcile::Scope;

/// Leader election settings.
#[derive(Clone, Debug)]
pub struct LeaderOptions {
    pub namespace: String,
    pub lease_name: String,
    /// This replica's identity (its pod name).
    pub identity: String,
}

/// How to run the operator.
#[derive(Clone, Debug)]
pub struct RunOptions {
    pub scope: Scope,
    /// None: no leader election (a single replica).
    pub leader: Option<LeaderOptions>,
    /// Reporting instance of the Events (the pod name).
    pub instance: Option<String>,
}

/// Operator-wide settings applied to every pipeline (command-line flags).
#[derive(Clone, Debug, Default)]
pub struct Settings {
    /// `--network-policy-default` and the operator's namespace.
    pub network: children::NetworkInputs,
    /// `--allowed-image-prefixes`: images a pipeline may run (empty: any).
    pub images: images::ImagePolicy,
}

async fn stopped(mut stop: watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// Runs the operator until `stop` turns true: waits for leadership (when enabled), then
/// reconciles; on stop, lets in-flight reconciles finish and releases the Lease.
/// Returns an error when leadership is lost (the caller should exit and be restarted).
pub async fn run(
    client: Client,
    opts: RunOptions,
    metrics: metrics::Metrics,
    health: Arc<Health>,
    stop: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    run_with(client, opts, Settings::default(), metrics, health, stop).await
}

/// [`run`] with operator-wide [`Settings`].
pub async fn run_with(
    client: Client,
    opts: RunOptions,
    settings: Settings,
    metrics: metrics::Metrics,
    health: Arc<Health>,
    stop: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let version = client.apiserver_version().await?;
    tracing::info!(
        server = %format!("{}.{}", version.major, version.minor),
        scope = ?opts.scope,
        "connected to the Kubernetes API"
    );
    // Standby replicas are healthy too: ready once the API answers.
    health.set_ready(true);
    let mut ctx = reconcile::Context::new(client.clone(), metrics.clone(), opts.instance.clone());
    ctx.settings = settings;
    let ctx = Arc::new(ctx);
    let Some(lo) = opts.leader else {
        metrics.leader.set(1);
        reconcile::run_controller(ctx, opts.scope, stopped(stop)).await;
        return Ok(());
    };
    let mut elector = leader::Elector::new(client, &lo.namespace, &lo.lease_name, &lo.identity);
    let mut stop_rx = stop.clone();
    if !leader::acquire(&mut elector, &mut stop_rx).await {
        return Ok(());
    }
    metrics.leader.set(1);
    tracing::info!(identity = %lo.identity, lease = %lo.lease_name, "became the leader");
    // The controller stops on `stop`, or when leadership is lost.
    let (lost_tx, lost_rx) = watch::channel(false);
    let controller_stop = {
        let stop = stop.clone();
        async move {
            tokio::select! {
                _ = stopped(stop) => {}
                _ = stopped(lost_rx) => {}
            }
        }
    };
    let controller = tokio::spawn(reconcile::run_controller(ctx, opts.scope, controller_stop));
    let kept = leader::keep(&mut elector, &mut stop_rx).await;
    let _ = lost_tx.send(true);
    let _ = controller.await;
    metrics.leader.set(0);
    match kept {
        Ok(()) => {
            if let Err(e) = elector.release().await {
                tracing::warn!(error = %e, "could not release the Lease");
            }
            Ok(())
        }
        Err(why) => anyhow::bail!("lost leadership: {why}"),
    }
}
