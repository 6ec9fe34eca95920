//! What the scenarios stand on: the operator chart, the test namespace, the example
//! PostgreSQL (with TLS) and its Secret, and the example pipeline with the images under
//! test.

use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context as _, Result, bail, ensure};
use chrono::Utc;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{Namespace, Pod, Secret, Service};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, PostParams};
use kube::{Client, ResourceExt as _};
use serde::de::DeserializeOwned;
use serde_json::{Map, Value, json};
use sluice_operator::IngestPipeline;
use tokio::process::Command;

use crate::cluster::{
    CONVERGE_TIMEOUT, Cluster, POSTGRES_POD, POSTGRES_STS, PgCredentials, START_TIMEOUT, pod_ready,
    pod_summary,
};
use crate::settings::{Settings, example_path, repo_root, split_image};
use crate::steps::{StepLog, wait_until};

/// The example pipeline's name (`deploy/examples/ingestpipeline.yaml`).
pub const PIPELINE: &str = "shop";

pub async fn ensure_chart(cluster: &Cluster, log: &StepLog) -> Result<()> {
    match &cluster.settings.chart_installed {
        Some((ns, release)) => {
            log.note(format!(
                "chart installed already: release {release} in {ns}"
            ));
        }
        None => {
            let mut args: Vec<String> = [
                "upgrade",
                "--install",
                "sluice",
                "charts/sluice",
                "--namespace",
                "sluice-system",
                "--create-namespace",
                "--wait",
                "--timeout",
                "180s",
                "--set",
                "operator.image.pullPolicy=IfNotPresent",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect();
            if let Some(image) = &cluster.settings.operator_image {
                let (repo, tag) = split_image(image)?;
                args.push("--set".into());
                args.push(format!("operator.image.repository={repo}"));
                args.push("--set".into());
                args.push(format!("operator.image.tag={tag}"));
            } else {
                log.note("SLUICE_E2E_OPERATOR_IMAGE not set: the chart's default operator image");
            }
            log.note(format!("scripts/helm {}", args.join(" ")));
            let root = repo_root();
            let out = tokio::time::timeout(
                Duration::from_secs(300),
                Command::new(root.join("scripts/helm"))
                    .args(&args)
                    .current_dir(&root)
                    .env("KUBECONFIG", &cluster.settings.kubeconfig)
                    .stdin(Stdio::null())
                    .kill_on_drop(true)
                    .output(),
            )
            .await
            .context("helm did not finish within 300 s")?
            .context("running scripts/helm")?;
            ensure!(
                out.status.success(),
                "helm upgrade --install failed ({}): {}{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
    let crds: Api<CustomResourceDefinition> = Api::all(cluster.client.clone());
    wait_until(
        "the IngestPipeline CRD Established",
        CONVERGE_TIMEOUT,
        async || {
            let crd = crds.get("ingestpipelines.sluice.dev").await?;
            let established = crd
                .status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|cs| {
                    cs.iter()
                        .any(|c| c.type_ == "Established" && c.status == "True")
                });
            ensure!(established, "not Established yet");
            Ok(())
        },
    )
    .await
}

fn read_yaml<T: DeserializeOwned>(file: &str) -> Result<T> {
    let path = example_path(file);
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    serde_yaml::from_str(&text).with_context(|| format!("parsing {}", path.display()))
}

/// The documents of `deploy/examples/postgres.yaml`: a Service and a StatefulSet.
fn example_postgres() -> Result<(Service, StatefulSet)> {
    let path = example_path("postgres.yaml");
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let mut service = None;
    let mut sts = None;
    for doc in serde_yaml::Deserializer::from_str(&text) {
        let v: Value = serde::Deserialize::deserialize(doc).context("parsing postgres.yaml")?;
        match v.get("kind").and_then(Value::as_str) {
            Some("Service") => service = Some(serde_json::from_value(v)?),
            Some("StatefulSet") => sts = Some(serde_json::from_value(v)?),
            other => bail!("postgres.yaml: unexpected kind {other:?}"),
        }
    }
    Ok((
        service.context("postgres.yaml has no Service")?,
        sts.context("postgres.yaml has no StatefulSet")?,
    ))
}

/// TLS for the example PostgreSQL, as `scripts/example-certs` makes it: Secret
/// `sluice-postgres-tls` for the server, and ca.crt for the credentials Secret (the
/// pipeline then runs with sslmode verify-full, the default with a CA).
async fn example_certs(ns: &str) -> Result<(Secret, String)> {
    let dir = tempfile::tempdir().context("temporary directory")?;
    let script = repo_root().join("scripts/example-certs");
    let out = Command::new(&script)
        .arg("--out")
        .arg(dir.path())
        .args(["-n", ns])
        .output()
        .await
        .with_context(|| format!("running {}", script.display()))?;
    ensure!(
        out.status.success(),
        "scripts/example-certs: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let read = |f: &str| {
        std::fs::read_to_string(dir.path().join(f)).with_context(|| format!("reading {f}"))
    };
    let ca = read("ca.crt")?;
    let tls: Secret = serde_json::from_value(json!({
        "metadata": { "name": "sluice-postgres-tls" },
        "type": "kubernetes.io/tls",
        "stringData": { "ca.crt": ca, "tls.crt": read("tls.crt")?, "tls.key": read("tls.key")? },
    }))?;
    Ok((tls, ca))
}

pub async fn deploy_postgres(cluster: &mut Cluster, log: &StepLog) -> Result<()> {
    let mut secret: Secret = read_yaml("postgres-credentials.yaml")?;
    let (tls, ca) = example_certs(&cluster.ns).await?;
    secret
        .string_data
        .get_or_insert_default()
        .insert("ca.crt".into(), ca);
    cluster
        .api::<Secret>()
        .create(&PostParams::default(), &tls)
        .await
        .context("creating the PostgreSQL TLS Secret")?;
    let data = secret
        .string_data
        .clone()
        .context("postgres-credentials.yaml has no stringData")?;
    let get = |k: &str| {
        data.get(k)
            .cloned()
            .with_context(|| format!("postgres-credentials.yaml has no stringData.{k}"))
    };
    cluster.pg = Some(PgCredentials {
        user: get("user")?,
        password: get("password")?,
        dbname: get("dbname")?,
    });
    cluster
        .api::<Secret>()
        .create(&PostParams::default(), &secret)
        .await
        .context("creating the Secret")?;

    let (service, mut sts) = example_postgres()?;
    ensure!(
        sts.name_any() == POSTGRES_STS,
        "postgres.yaml: the StatefulSet is not named {POSTGRES_STS}"
    );
    let container = sts
        .spec
        .template
        .spec
        .as_mut()
        .and_then(|s| s.containers.first_mut())
        .context("postgres.yaml: no container")?;
    if let Some(image) = &cluster.settings.postgres_image {
        container.image = Some(image.clone());
    }
    log.note(format!("PostgreSQL image {:?}", container.image));
    cluster
        .api::<Service>()
        .create(&PostParams::default(), &service)
        .await
        .context("creating the PostgreSQL Service")?;
    cluster
        .api::<StatefulSet>()
        .create(&PostParams::default(), &sts)
        .await
        .context("creating the PostgreSQL StatefulSet")?;
    let pods: Api<Pod> = cluster.api();
    wait_until("PostgreSQL ready", START_TIMEOUT, async || {
        let pod = pods.get(POSTGRES_POD).await?;
        ensure!(pod_ready(&pod), "{}", pod_summary(&pod));
        Ok(())
    })
    .await?;
    wait_until("psql answers", Duration::from_secs(60), async || {
        cluster.query_ints("SELECT 1").await
    })
    .await?;
    Ok(())
}

/// The example pipeline with the images under test.
pub fn example_pipeline(settings: &Settings) -> Result<IngestPipeline> {
    let mut v: Value = read_yaml("ingestpipeline.yaml")?;
    ensure!(
        v.pointer("/metadata/name").and_then(Value::as_str) == Some(PIPELINE),
        "the example pipeline is named {PIPELINE}"
    );
    let spec = v
        .get_mut("spec")
        .and_then(Value::as_object_mut)
        .context("the example has no spec")?;
    images_under_test(spec, settings)?;
    serde_json::from_value(v).context("the example as an IngestPipeline")
}

/// `spec.images` of a pipeline: the images under test, never pulled when present.
pub fn images_under_test(spec: &mut Map<String, Value>, settings: &Settings) -> Result<()> {
    let images = spec
        .entry("images")
        .or_insert_with(|| json!({}))
        .as_object_mut()
        .context("spec.images is not an object")?;
    images.insert("pullPolicy".into(), json!("IfNotPresent"));
    if let Some(w) = &settings.worker_image {
        images.insert("worker".into(), json!(w));
    }
    if let Some(g) = &settings.generator_image {
        images.insert("generator".into(), json!(g));
    }
    Ok(())
}

pub async fn create_namespace(client: &Client) -> Result<String> {
    let ns = format!("sluice-e2e-{}", Utc::now().format("%Y%m%d-%H%M%S"));
    let obj: Namespace = serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Namespace",
        // Pod Security restricted, enforced: every pod of the run must meet it.
        "metadata": { "name": ns, "labels": {
            "sluice.dev/e2e": "true",
            "pod-security.kubernetes.io/enforce": "restricted",
            "pod-security.kubernetes.io/warn": "restricted",
        } },
    }))?;
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &obj)
        .await
        .with_context(|| format!("creating namespace {ns}"))?;
    Ok(ns)
}
