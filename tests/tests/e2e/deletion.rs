//! Deleting a pipeline: its children go with it (owner references, the garbage
//! collector), what is kept on purpose stays (the landing claim, the workers' checkpoint
//! claims, the data in PostgreSQL).

use anyhow::{Context as _, Result, ensure};
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolumeClaim, Pod, Service, ServiceAccount};
use kube::ResourceExt as _;
use kube::api::{DeleteParams, ListParams};
use sluice_operator::IngestPipeline;

use crate::cluster::{Cluster, GC_TIMEOUT, first};
use crate::steps::{StepLog, wait_until};

/// Deletes `cluster.pipeline` and checks what goes and what stays.
pub async fn run(cluster: &Cluster, log: &mut StepLog) -> Result<()> {
    let pipeline = cluster.pipeline.as_str();
    log.step("delete the pipeline; children garbage-collected");
    cluster
        .api::<IngestPipeline>()
        .delete(pipeline, &DeleteParams::default())
        .await
        .context("deleting the IngestPipeline")?;
    wait_until("children and pods gone", GC_TIMEOUT, async || {
        let mut left = Vec::new();
        let name = |s: &str| format!("{pipeline}-{s}");
        if cluster
            .api::<IngestPipeline>()
            .get_opt(pipeline)
            .await?
            .is_some()
        {
            left.push("IngestPipeline".to_string());
        }
        if cluster
            .api::<StatefulSet>()
            .get_opt(&name("worker"))
            .await?
            .is_some()
        {
            left.push("StatefulSet".into());
        }
        if cluster
            .api::<Deployment>()
            .get_opt(&name("generator"))
            .await?
            .is_some()
        {
            left.push("Deployment".into());
        }
        if cluster
            .api::<ConfigMap>()
            .get_opt(&name("config"))
            .await?
            .is_some()
        {
            left.push("ConfigMap".into());
        }
        if cluster
            .api::<Service>()
            .get_opt(&name("worker"))
            .await?
            .is_some()
        {
            left.push("Service".into());
        }
        if cluster
            .api::<ServiceAccount>()
            .get_opt(&name("sluice"))
            .await?
            .is_some()
        {
            left.push("ServiceAccount".into());
        }
        let pods = cluster
            .api::<Pod>()
            .list(&ListParams::default().labels(&format!("app.kubernetes.io/instance={pipeline}")))
            .await?
            .items;
        left.extend(pods.iter().map(|p| format!("pod {}", p.name_any())));
        ensure!(left.is_empty(), "left: {}", left.join(", "));
        Ok(())
    })
    .await?;
    // The landing claim outlives the pipeline too (`landingZone.deleteClaim` is false by
    // default, so files not yet loaded survive a deletion): it is still there and no
    // longer owned by the pipeline, ready to be adopted by name.
    let landing = cluster
        .api::<PersistentVolumeClaim>()
        .get_opt(&format!("{pipeline}-landing"))
        .await?
        .context(
            "the landing claim was deleted with the pipeline (deleteClaim defaults to false)",
        )?;
    ensure!(
        landing
            .metadata
            .owner_references
            .iter()
            .flatten()
            .all(|o| o.kind != "IngestPipeline"),
        "the kept landing claim is still owned by the pipeline: {:?}",
        landing.metadata.owner_references
    );
    log.note("landing claim kept (deleteClaim: false), not owned by the deleted pipeline");
    // The workers' checkpoint claims outlive the pipeline on purpose (docs/crd.md). The
    // StatefulSet controller copies its selector labels onto them; the selector docs/crd.md
    // gives for removing them must match every one of them.
    let prefix = format!("checkpoint-{pipeline}-worker-");
    let claims: Vec<PersistentVolumeClaim> = cluster
        .api::<PersistentVolumeClaim>()
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .filter(|c| c.name_any().starts_with(&prefix))
        .collect();
    ensure!(
        !claims.is_empty(),
        "no {prefix}* claims after deleting the pipeline: docs/crd.md says they stay"
    );
    let documented =
        format!("app.kubernetes.io/instance={pipeline},app.kubernetes.io/component=worker");
    let by_selector = cluster
        .api::<PersistentVolumeClaim>()
        .list(&ListParams::default().labels(&documented))
        .await?
        .items
        .len();
    log.note(format!(
        "children gone; {} checkpoint claims kept by design ({}), deleted with the namespace",
        claims.len(),
        claims
            .iter()
            .map(|c| c.name_any())
            .collect::<Vec<_>>()
            .join(", ")
    ));
    ensure!(
        by_selector == claims.len(),
        "the selector docs/crd.md gives for removing them ({documented}) matches {by_selector} of {} claims; their labels: {:?}",
        claims.len(),
        claims.first().map(|c| c.labels().clone())
    );
    let tables = first(
        cluster
            .query_ints("SELECT count(*) FROM sluice_files")
            .await?,
    )?;
    log.note(format!("the data stays: {tables} files in the ledger"));
    log.end_step();
    Ok(())
}
