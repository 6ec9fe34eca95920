//! `kubectl-sluice status -o json` against a real kube-apiserver (the envtest control
//! plane of `sluice_testkit::kube_env`) with the operator running in-process: the
//! plugin reads the pipeline's conditions, workers and Events with a kubeconfig only.
//!
//! There is no kubelet here: worker pods stay `Pending`, so nothing can be exec'd into
//! and no pod proxy answers. The plugin must then say the exact totals are unavailable,
//! and why, instead of failing or inventing figures. (The exec path itself, `sluice-worker
//! report -o json` in a pod, is covered against real PostgreSQL by worker_replay.rs and on
//! a real cluster by the e2e suite.)
//!
//! Skipped with a loud `SKIPPED:` line when the control-plane binaries are not available
//! and `SLUICE_KUBE_REQUIRED` is unset.

use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail, ensure};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Api;
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use sluice_core::telemetry::Health;
use sluice_operator::metrics::Metrics;
use sluice_operator::{IngestPipeline, RunOptions, Scope};
use sluice_testkit::bins;
use sluice_testkit::kube_env::KubeEnv;

const NS: &str = "plugin-status";
const NAME: &str = "shop";

async fn install_crd(client: &kube::Client) -> Result<()> {
    let crd = sluice_operator::crd::crd().context("building the CRD")?;
    let name = crd.metadata.name.clone().context("CRD name")?;
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    crds.patch(
        &name,
        &PatchParams::apply("plugin-status-test").force(),
        &Patch::Apply(&crd),
    )
    .await
    .context("applying the CRD")?;
    let all: Api<IngestPipeline> = Api::all(client.clone());
    let deadline = Instant::now() + Duration::from_secs(30);
    while all.list(&ListParams::default().limit(1)).await.is_err() {
        ensure!(
            Instant::now() < deadline,
            "the CRD is not served after 30 s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(())
}

/// Runs `kubectl-sluice -n NS <args>` with the control plane's kubeconfig.
fn plugin(env: &KubeEnv, args: &[&str]) -> Result<(bool, String, String)> {
    let out = bins::command("kubectl-sluice")
        .args(["-n", NS])
        .args(args)
        .env("KUBECONFIG", env.kubeconfig_path())
        .output()
        .context("running kubectl-sluice")?;
    Ok((
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_json_reads_the_conditions_and_says_why_totals_are_unavailable() -> Result<()> {
    let Some(env) = KubeEnv::shared_or_skip().await? else {
        return Ok(());
    };
    env.create_namespace(NS).await?;
    let client = env.client().await?;
    install_crd(&client).await?;
    let (stop, stop_rx) = tokio::sync::watch::channel(false);
    let operator = tokio::spawn(sluice_operator::run(
        client.clone(),
        RunOptions {
            scope: Scope::Namespace(NS.into()),
            leader: None,
            instance: Some("plugin-status-test".into()),
        },
        Metrics::register(&Default::default()).context("metrics")?,
        Health::new(),
        stop_rx,
    ));
    // No credentials Secret: the operator reports the pipeline Degraded, with a reason.
    let ipl: IngestPipeline = serde_json::from_value(json!({
        "apiVersion": "sluice.dev/v1alpha1",
        "kind": "IngestPipeline",
        "metadata": {"name": NAME, "namespace": NS},
        "spec": {"postgres": {"secretRef": {"name": "pg-credentials"}}}
    }))
    .context("pipeline")?;
    let api: Api<IngestPipeline> = Api::namespaced(client.clone(), NS);
    api.create(&PostParams::default(), &ipl)
        .await
        .context("creating the pipeline")?;
    let deadline = Instant::now() + Duration::from_secs(45);
    let stored = loop {
        let p = api.get(NAME).await?;
        let conditions = p.status.as_ref().map_or(0, |s| s.conditions.len());
        if conditions > 0 && !plugin(env, &["status", NAME, "-o", "json"])?.1.is_empty() {
            break p;
        }
        if Instant::now() > deadline {
            bail!("the operator set no conditions within 45 s");
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    };

    let (ok, stdout, stderr) = plugin(env, &["status", NAME, "-o", "json"])?;
    ensure!(ok, "kubectl-sluice status failed: {stderr}");
    let v: Value = serde_json::from_str(&stdout).with_context(|| format!("JSON: {stdout}"))?;
    assert_eq!(v["name"], NAME);
    assert_eq!(v["namespace"], NS);
    // The conditions may have moved on since `stored` was read: compare with a fresh read.
    let fresh = api.get(NAME).await?;
    let expected = fresh.status.clone().unwrap_or_default().conditions;
    let shown = v["conditions"].as_array().context("conditions")?;
    assert_eq!(shown.len(), expected.len(), "{v}");
    for (s, c) in shown.iter().zip(&expected) {
        assert_eq!(s["type"], c.type_.as_str(), "{v}");
        assert_eq!(s["status"], c.status.as_str(), "{v}");
        assert_eq!(s["reason"], c.reason.as_str(), "{v}");
        assert_eq!(s["message"], c.message.as_str(), "{v}");
    }
    assert!(!stored.spec.suspend);
    assert_eq!(v["totals"]["available"], false, "{v}");
    let reason = v["totals"]["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("no worker pod") && reason.contains("sluice-worker"),
        "totals unavailable without a clear reason: {reason}"
    );
    for pod in v["workers"]["pods"].as_array().context("pods")? {
        assert_eq!(pod["ready"], false, "{pod}");
        assert!(pod["metricsUnavailable"].is_string(), "{pod}");
    }

    let (ok, yaml, stderr) = plugin(env, &["status", NAME, "-o", "yaml"])?;
    ensure!(ok && yaml.contains("conditions:"), "yaml: {yaml}{stderr}");
    let (ok, text, stderr) = plugin(env, &["status", NAME])?;
    ensure!(ok, "{stderr}");
    eprintln!("$ kubectl sluice status {NAME}\n{text}");
    ensure!(
        text.contains("Totals (exact, from the ledger):") && text.contains("unavailable: "),
        "{text}"
    );

    // quarantine and replay need a ready pod to exec into: a clear error, non-zero exit.
    let (ok, _, stderr) = plugin(env, &["replay", NAME, "--dry-run"])?;
    ensure!(
        !ok && stderr.contains("no worker pod"),
        "replay without a pod: {stderr}"
    );
    let (ok, _, stderr) = plugin(env, &["status", "nope"])?;
    ensure!(
        !ok && stderr.contains("not found"),
        "missing pipeline: {stderr}"
    );

    let _ = stop.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(30), operator).await;
    Ok(())
}
