//! The end of a pipeline: the operator's finalizer (a backlog warns, never blocks) and
//! garbage collection of the children.

use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolumeClaim, Service, ServiceAccount};
use kube::ResourceExt as _;
use kube::api::{DeleteParams, Patch, PatchParams};
use serde_json::json;
use sluice_operator::IngestPipeline;

use crate::fixtures::*;
use crate::harness::*;

/// The operator's finalizer: added to every pipeline; on deletion a reported backlog
/// (here faked in the status, as the workers' figures would leave it) gives a Warning
/// Event DeletedWithBacklog, and the pipeline goes away at once.
#[tokio::test]
async fn deleting_with_a_backlog_warns_and_does_not_block() -> Result<()> {
    let Some(op) = Operator::start("op-backlog").await? else {
        return Ok(());
    };
    op.create_secret().await?;
    op.create_pipeline(&pipeline(json!({}))).await?;
    let api = op.api::<IngestPipeline>();
    wait_for(&api, NAME, "the operator's finalizer", CONVERGE, |ipl| {
        ipl.finalizers()
            .iter()
            .any(|f| f == sluice_operator::deletion::FINALIZER)
    })
    .await?;
    op.wait_status("a status", CONVERGE, |ipl| {
        condition(ipl, "Ready").is_some()
    })
    .await?;
    api.patch_status(
        NAME,
        &PatchParams::default(),
        &Patch::Merge(json!({ "status": { "backlogFiles": 5, "lagSeconds": 42.0 } })),
    )
    .await
    .context("faking a reported backlog")?;
    api.delete(NAME, &DeleteParams::default()).await?;
    wait_gone(api, NAME, CONVERGE).await?;
    let events = op
        .events(sluice_operator::deletion::DELETED_WITH_BACKLOG)
        .await?;
    let note = events
        .iter()
        .find(|e| e.type_.as_deref() == Some("Warning"))
        .and_then(|e| e.note.clone())
        .with_context(|| format!("a Warning Event DeletedWithBacklog: {events:?}"))?;
    assert!(
        note.contains("5 landed file(s) not loaded") && note.contains("shop-landing"),
        "{note}"
    );
    op.shutdown().await
}

/// Deleting the pipeline garbage-collects every child (and their pods); the workers'
/// checkpoint claims stay (StatefulSet semantics, documented).
#[tokio::test]
async fn deleting_the_pipeline_garbage_collects_children() -> Result<()> {
    let Some(op) = Operator::start("op-gc").await? else {
        return Ok(());
    };
    op.create_secret().await?;
    op.create_pipeline(&pipeline(json!({}))).await?;
    op.wait_children().await?;
    wait_pods(&op, "worker", 2).await?;
    wait_pods(&op, "generator", 1).await?;

    op.api::<IngestPipeline>()
        .delete(NAME, &DeleteParams::default())
        .await
        .context("deleting the IngestPipeline")?;
    wait_gone(op.api::<IngestPipeline>(), NAME, Duration::from_secs(30)).await?;

    let started = Instant::now();
    // All concurrently: the garbage collector works through them together.
    let (a, b, c, d, e, f) = tokio::join!(
        wait_gone(op.api::<StatefulSet>(), "shop-worker", GC_TIMEOUT),
        wait_gone(op.api::<Deployment>(), "shop-generator", GC_TIMEOUT),
        wait_gone(op.api::<ConfigMap>(), "shop-config", GC_TIMEOUT),
        wait_gone(op.api::<Service>(), "shop-worker", GC_TIMEOUT),
        wait_gone(op.api::<ServiceAccount>(), "shop-sluice", GC_TIMEOUT),
        wait_pods(&op, "worker", 0),
    );
    let gc = [a, b, c, d, e, f.map(|_| ())]
        .into_iter()
        .collect::<Result<Vec<()>>>();
    if let Err(e) = gc {
        bail!(
            "{e:#}\nthe end of the kube-controller-manager log:\n{}",
            op.env.log_tail("kube-controller-manager")
        );
    }
    wait_pods(&op, "worker", 0).await?;
    wait_pods(&op, "generator", 0).await?;
    eprintln!(
        "operator_api: children garbage-collected {:.1} s after the pipeline was deleted",
        started.elapsed().as_secs_f64()
    );
    // Checkpoint claims are never deleted by a StatefulSet: they outlive the pipeline.
    op.api::<PersistentVolumeClaim>()
        .get("checkpoint-shop-worker-0")
        .await
        .context("checkpoint claims are kept")?;
    // So does the landing claim (deleteClaim: false), with its unloaded files...
    let kept = op
        .api::<PersistentVolumeClaim>()
        .get("shop-landing")
        .await
        .context("the landing claim is kept")?;
    assert!(
        kept.metadata.deletion_timestamp.is_none(),
        "not being deleted"
    );
    // ...and a pipeline created again under the same name takes it over as it is.
    op.create_pipeline(&pipeline(json!({}))).await?;
    let again = op.wait_children().await?;
    assert_eq!(
        again.landing.metadata.uid, kept.metadata.uid,
        "the same claim, re-adopted by name"
    );
    op.shutdown().await
}
