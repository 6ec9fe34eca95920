//! The end-to-end suite: the whole system in a Kubernetes cluster that runs pods (kind via
//! `scripts/e2e-kind`, or a local single-node cluster via `scripts/e2e-local`). See
//! docs/e2e.md.
//!
//! One ordered scenario (`pipeline_end_to_end`) in a fresh namespace: the example
//! PostgreSQL and its Secret, the example IngestPipeline with the images under test; rows
//! arrive and the status is Ready with figures; a worker pod is killed mid-run; workers
//! scale 2 → 3 → 1 while ingesting; the generator is stopped, the backlog drains and
//! exactly-once is checked in the database against the generator's own count;
//! `kubectl sluice status -o json` (the real plugin binary, exec'ing into a worker pod)
//! must give the same exact totals as the database; suspend and resume (pods go to zero
//! and come back, files landed meanwhile are loaded); a second exactly-once check; the
//! pipeline is deleted and its children are garbage-collected. Then a second pipeline with
//! a declared schema that lacks the cleaning rules its messy rows need: they land in
//! quarantine, the rules are added, `kubectl sluice replay` moves them, and exactly-once
//! holds again, with the plugin's status agreeing with the database.
//!
//! Modules, one idea each: [`settings`] (the environment), [`steps`] (step log, polling),
//! [`cluster`] (kube client, kubectl, psql), [`setup`] (chart, namespace, PostgreSQL, the
//! example), [`generator`] (the oracle: what the generator wrote), [`database`]
//! (exactly-once in SQL), [`plugin`] (runs `kubectl-sluice`), [`shop`], [`deletion`] and
//! [`replay`] (the parts of the scenario).
//!
//! Environment (the contract of `scripts/e2e-kind`):
//! * `SLUICE_E2E_KUBECONFIG` — required; without it every test prints a loud SKIPPED line
//!   and passes (that is what CI without a cluster does);
//! * `SLUICE_E2E_OPERATOR_IMAGE`, `SLUICE_E2E_WORKER_IMAGE`, `SLUICE_E2E_GENERATOR_IMAGE`;
//! * `SLUICE_E2E_CHART_INSTALLED=<namespace>/<release>` when the chart is installed already
//!   (otherwise the suite runs `scripts/helm upgrade --install` from `charts/sluice`);
//! * `SLUICE_E2E_POSTGRES_IMAGE` — image of the example PostgreSQL (default: the example's);
//! * `SLUICE_E2E_KEEP_NAMESPACE=1` — keep the test namespace even when the scenario passes;
//! * `SLUICE_E2E_PLUGIN` — the `kubectl-sluice` binary (default: the one cargo built next
//!   to this test, `cargo build -p sluice-operator --bin kubectl-sluice`).
//!
//! Run with `--test-threads 1 --nocapture`: every step is logged with its time, and the
//! step durations are printed at the end.

mod cluster;
mod database;
mod deletion;
mod generator;
mod plugin;
mod replay;
mod settings;
mod setup;
mod shop;
mod steps;

use anyhow::{Context as _, Result};
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, DeleteParams};
use sluice_testkit::kube_env::client_from_kubeconfig;

use cluster::Cluster;
use settings::Settings;
use steps::StepLog;

#[tokio::test]
async fn pipeline_end_to_end() -> Result<()> {
    let Some(settings) = Settings::from_env()? else {
        return Ok(());
    };
    let mut log = StepLog::new();
    log.step("connect to the cluster");
    // Before anything is created: a missing plugin binary should not cost a cluster run.
    let plugin = plugin::binary()?;
    log.note(format!("kubectl-sluice: {}", plugin.display()));
    let client = client_from_kubeconfig(&settings.kubeconfig).await?;
    let version = client
        .apiserver_version()
        .await
        .context("asking the API server for its version")?;
    log.note(format!(
        "API server {}.{} ({}); images: operator {:?}, worker {:?}, generator {:?}",
        version.major,
        version.minor,
        version.git_version,
        settings.operator_image,
        settings.worker_image,
        settings.generator_image
    ));

    let mut cluster = Cluster {
        settings,
        client,
        ns: String::new(),
        pg: None,
        pipeline: setup::PIPELINE.to_string(),
        search_path: None,
    };
    let result = scenario(&mut cluster, &mut log).await;
    log.summary();
    match result {
        Ok(()) => {
            if cluster.settings.keep_namespace {
                eprintln!(
                    "[e2e] PASSED; namespace {} kept (SLUICE_E2E_KEEP_NAMESPACE)",
                    cluster.ns
                );
            } else if !cluster.ns.is_empty() {
                let _ = Api::<Namespace>::all(cluster.client.clone())
                    .delete(&cluster.ns, &DeleteParams::default())
                    .await;
                eprintln!("[e2e] PASSED; namespace {} deleted", cluster.ns);
            }
            Ok(())
        }
        Err(e) => {
            if !cluster.ns.is_empty() {
                diagnostics(&cluster).await;
                eprintln!(
                    "[e2e] FAILED; namespace {} kept for inspection (kubectl delete namespace {})",
                    cluster.ns, cluster.ns
                );
            }
            Err(e)
        }
    }
}

async fn scenario(cluster: &mut Cluster, log: &mut StepLog) -> Result<()> {
    log.step("operator chart");
    setup::ensure_chart(cluster, log).await?;

    log.step("namespace");
    cluster.ns = setup::create_namespace(&cluster.client).await?;
    log.note(format!("namespace {}", cluster.ns));

    log.step("example PostgreSQL and its Secret");
    setup::deploy_postgres(cluster, log).await?;

    shop::run(cluster, log).await?;
    deletion::run(cluster, log).await?;
    // After the shop pipeline is gone, so that the two never compete for the node.
    replay::run(cluster, log).await?;
    log.end_step();
    Ok(())
}

/// What a person needs to see when the scenario failed.
async fn diagnostics(cluster: &Cluster) {
    let ns = cluster.ns.as_str();
    let operator_ns = cluster
        .settings
        .chart_installed
        .as_ref()
        .map_or("sluice-system", |(ons, _)| ons.as_str());
    let commands: Vec<Vec<&str>> = vec![
        vec!["-n", ns, "get", "ipl,pods,sts,deploy,pvc", "-o", "wide"],
        vec!["-n", ns, "describe", "ipl"],
        vec!["-n", ns, "get", "events", "--sort-by=.lastTimestamp"],
        vec![
            "-n",
            ns,
            "logs",
            "-l",
            "app.kubernetes.io/component=worker",
            "--tail=30",
            "--prefix",
        ],
        vec![
            "-n",
            operator_ns,
            "logs",
            "-l",
            "app.kubernetes.io/name=sluice",
            "--tail=50",
            "--prefix",
        ],
    ];
    for args in commands {
        eprintln!("[e2e] --- kubectl {}", args.join(" "));
        match cluster.kubectl(&args).await {
            Ok(out) => eprintln!("{out}"),
            Err(e) => eprintln!("({e:#})"),
        }
    }
}
