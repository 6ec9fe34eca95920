use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use sluice_core::telemetry::{self, Health};
use sluice_operator::children::NetworkInputs;
use sluice_operator::cli::{Args, Command, OnOff};
use sluice_operator::images::ImagePolicy;
use sluice_operator::{LeaderOptions, RunOptions, Scope, Settings};

fn main() -> ExitCode {
    let args = Args::parse();
    if args.command == Some(Command::Crd) {
        return match sluice_operator::crd::crd_yaml() {
            Ok(yaml) => {
                print!("{yaml}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("sluice-operator: cannot render the CRD: {e}");
                ExitCode::FAILURE
            }
        };
    }
    if let Err(e) = telemetry::init_logging_from_flags(&args.log_format, &args.log_level) {
        eprintln!("sluice-operator: {e}");
        return ExitCode::from(2);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("sluice-operator: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("sluice-operator: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    let metrics_addr = args.metrics_addr().map_err(anyhow::Error::msg)?;
    let registry = prometheus::Registry::new();
    let metrics =
        sluice_operator::metrics::Metrics::register(&registry).context("registering metrics")?;
    let health = Health::new();
    let stop_rx = telemetry::stop_on_signal();
    let server = telemetry::spawn_server(
        metrics_addr,
        registry.clone(),
        health.clone(),
        stop_rx.clone(),
    )
    .await?;

    let client = kube::Client::try_default()
        .await
        .context("connecting to Kubernetes (in-cluster config or KUBECONFIG)")?;
    let own_namespace = std::env::var("POD_NAMESPACE")
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| client.default_namespace().to_string());
    let scope = if args.all_namespaces {
        Scope::All
    } else if let Some(scope) = Scope::from_list(&args.watch_namespaces) {
        scope
    } else {
        Scope::Namespace(
            args.namespace
                .clone()
                .unwrap_or_else(|| own_namespace.clone()),
        )
    };
    let instance = std::env::var("POD_NAME")
        .or_else(|_| std::env::var("HOSTNAME"))
        .ok()
        .filter(|s| !s.is_empty());
    let own_namespace_for_policies = own_namespace.clone();
    let leader = match args.leader_election {
        OnOff::Off => None,
        OnOff::On => Some(LeaderOptions {
            namespace: args.lease_namespace.clone().unwrap_or(own_namespace),
            lease_name: args.lease_name.clone(),
            identity: instance
                .clone()
                .unwrap_or_else(|| format!("sluice-operator-{}", std::process::id())),
        }),
    };
    let images = ImagePolicy::new(&args.allowed_image_prefixes);
    for warning in images.warnings() {
        tracing::warn!("{warning}");
    }
    if !images.allows_any() {
        tracing::info!(prefixes = ?images.prefixes(), "pipelines may only run images with these prefixes");
    }
    let settings = Settings {
        network: NetworkInputs {
            default_enabled: args.network_policy_default == OnOff::On,
            operator_namespace: Some(own_namespace_for_policies),
        },
        images,
    };
    let result = sluice_operator::run_with(
        client,
        RunOptions {
            scope,
            leader,
            instance,
        },
        settings,
        metrics,
        health,
        stop_rx,
    )
    .await;
    if let Some(server) = server {
        server.abort();
    }
    result?;
    tracing::info!("operator stopped");
    Ok(())
}
