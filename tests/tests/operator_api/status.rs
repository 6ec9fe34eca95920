//! Status: conditions following the pods' readiness, the scale subresource, suspend.

use std::time::Duration;

use anyhow::{Context as _, Result, ensure};
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolumeClaim, Pod};
use kube::ResourceExt as _;
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;
use sluice_operator::IngestPipeline;

use crate::fixtures::*;
use crate::harness::*;

/// observedGeneration, the four conditions with reasons, workers ready/desired; pods made
/// ready as the kubelet would → workersReady and Ready follow.
#[tokio::test]
async fn status_conditions_follow_pod_readiness() -> Result<()> {
    let Some(op) = Operator::start("op-status").await? else {
        return Ok(());
    };
    op.create_secret().await?;
    op.create_pipeline(&pipeline(json!({ "worker": { "replicas": 2 } })))
        .await?;

    let ipl = op
        .wait_status("initial status", CONVERGE, |ipl| {
            cond_is(ipl, "Ready", "False", "WorkersNotReady")
        })
        .await?;
    let st = ipl.status.as_ref().expect("status");
    assert_eq!(st.observed_generation, ipl.metadata.generation);
    assert_eq!((st.workers_ready, st.workers_desired), (0, 2));
    assert_eq!(st.workers.as_deref(), Some("0/2"));
    assert!(!st.generator_ready);
    let ready = condition(&ipl, "Ready").expect("Ready");
    assert_eq!(ready.message, "0 of 2 workers ready");
    assert_eq!(ready.observed_generation, ipl.metadata.generation);
    assert!(cond_is(&ipl, "Progressing", "True", "RollingOut"), "{st:?}");
    assert!(cond_is(&ipl, "Degraded", "False", "AsExpected"), "{st:?}");
    assert!(cond_is(&ipl, "Suspended", "False", "Running"), "{st:?}");
    assert_eq!(st.conditions.len(), 4, "exactly four conditions");

    // Play the kubelet: one worker ready first, then the rest and the generator.
    wait_pods(&op, "worker", 2).await?;
    op.make_pod_ready("shop-worker-0").await?;
    let ipl = op
        .wait_status("1 of 2 workers ready", CONVERGE, |ipl| {
            ipl.status.as_ref().is_some_and(|s| s.workers_ready == 1)
        })
        .await?;
    assert!(cond_is(&ipl, "Ready", "False", "WorkersNotReady"));
    assert_eq!(
        condition(&ipl, "Ready").map(|c| c.message.as_str()),
        Some("1 of 2 workers ready")
    );

    op.make_pod_ready("shop-worker-1").await?;
    let ipl = op
        .wait_status("workers ready, generator not", CONVERGE, |ipl| {
            cond_is(ipl, "Ready", "False", "GeneratorNotReady")
        })
        .await?;
    assert_eq!(ipl.status.as_ref().map(|s| s.workers_ready), Some(2));

    let generator = wait_pods(&op, "generator", 1).await?;
    op.make_pod_ready(&generator[0].name_any()).await?;
    let ipl = op
        .wait_status("Ready", CONVERGE, |ipl| {
            cond_is(ipl, "Ready", "True", "AllReady")
        })
        .await?;
    let st = ipl.status.as_ref().expect("status");
    assert_eq!((st.workers_ready, st.workers_desired), (2, 2));
    assert_eq!(st.workers.as_deref(), Some("2/2"));
    assert!(st.generator_ready);
    assert_eq!(
        condition(&ipl, "Ready").map(|c| c.message.as_str()),
        Some("2 of 2 workers ready, generator ready")
    );
    assert!(cond_is(&ipl, "Progressing", "False", "RolledOut"), "{st:?}");
    assert!(cond_is(&ipl, "Degraded", "False", "AsExpected"), "{st:?}");
    // No kubelet, no endpoints: no figures.
    assert_eq!(st.rows_loaded, None);

    // Readiness flips are recorded as Events.
    op.wait_events("Ready", Duration::from_secs(10)).await?;
    op.shutdown().await
}

/// The scale subresource (`kubectl scale ipl/shop --replicas 3`, HorizontalPodAutoscalers)
/// reads and writes spec.worker.replicas and reports the worker pods' selector.
#[tokio::test]
async fn the_scale_subresource_sets_worker_replicas() -> Result<()> {
    let Some(op) = Operator::start("op-scale").await? else {
        return Ok(());
    };
    op.create_secret().await?;
    op.create_pipeline(&pipeline(json!({}))).await?;
    op.wait_children().await?;
    let ipl = op
        .wait_status("a selector in status", CONVERGE, |ipl| {
            ipl.status.as_ref().is_some_and(|s| s.selector.is_some())
        })
        .await?;
    let selector = ipl.status.and_then(|s| s.selector).context("selector")?;
    let api = op.api::<IngestPipeline>();
    let scale = api
        .get_scale("shop")
        .await
        .context("GET the scale subresource")?;
    assert_eq!(
        scale.spec.and_then(|s| s.replicas),
        Some(2),
        "the example's 2 workers"
    );
    let status = scale.status.context("scale status")?;
    assert_eq!(status.selector.as_deref(), Some(selector.as_str()));
    // The selector finds exactly the worker pods.
    wait_pods(&op, "worker", 2).await?;
    let pods: Api<Pod> = op.api();
    let found = pods
        .list(&kube::api::ListParams::default().labels(&selector))
        .await?;
    assert!(
        found
            .items
            .iter()
            .all(|p| p.name_any().starts_with("shop-worker-"))
            && !found.items.is_empty(),
        "{selector} selects {:?}",
        found.items.iter().map(|p| p.name_any()).collect::<Vec<_>>()
    );

    api.patch_scale(
        "shop",
        &PatchParams::default(),
        &Patch::Merge(&json!({ "spec": { "replicas": 3 } })),
    )
    .await
    .context("PATCH the scale subresource")?;
    let stored = api.get("shop").await?;
    assert_eq!(
        stored.spec.worker.replicas, 3,
        "written into spec.worker.replicas"
    );
    wait_for(
        &op.api::<StatefulSet>(),
        "shop-worker",
        "StatefulSet replicas 3 after a scale",
        CONVERGE,
        |s| worker_replicas(s) == Some(3),
    )
    .await?;
    // The CRD's bounds hold through the subresource too.
    let refused = api
        .patch_scale(
            "shop",
            &PatchParams::default(),
            &Patch::Merge(&json!({ "spec": { "replicas": 0 } })),
        )
        .await;
    assert!(
        refused.is_err(),
        "replicas 0 is refused (spec.suspend scales to zero)"
    );
    op.shutdown().await
}

/// suspend: true → generator and workers at 0 (pods gone), Suspended True, Ready False;
/// volumes and config kept; suspend: false → back to 1 and 2.
#[tokio::test]
async fn suspend_scales_to_zero_and_resume_restores() -> Result<()> {
    let Some(op) = Operator::start("op-suspend").await? else {
        return Ok(());
    };
    op.create_secret().await?;
    op.create_pipeline(&pipeline(json!({}))).await?;
    op.wait_children().await?;
    wait_pods(&op, "worker", 2).await?;

    op.patch_spec(json!({ "suspend": true })).await?;
    let ipl = op
        .wait_status("Suspended", CONVERGE, |ipl| {
            cond_is(ipl, "Suspended", "True", "Suspended")
        })
        .await?;
    assert!(cond_is(&ipl, "Ready", "False", "Suspended"));
    assert_eq!(ipl.status.as_ref().map(|s| s.workers_desired), Some(0));
    let sts = op.api::<StatefulSet>().get("shop-worker").await?;
    assert_eq!(worker_replicas(&sts), Some(0));
    let d = op.api::<Deployment>().get("shop-generator").await?;
    assert_eq!(deployment_replicas(&d), Some(0));
    wait_pods(&op, "worker", 0).await?;
    wait_pods(&op, "generator", 0).await?;
    // Everything else stays.
    op.api::<ConfigMap>().get("shop-config").await?;
    op.api::<PersistentVolumeClaim>()
        .get("shop-landing")
        .await?;
    op.api::<PersistentVolumeClaim>()
        .get("checkpoint-shop-worker-0")
        .await?;

    op.patch_spec(json!({ "suspend": false })).await?;
    let ipl = op
        .wait_status("resumed", CONVERGE, |ipl| {
            cond_is(ipl, "Suspended", "False", "Running")
        })
        .await?;
    assert_eq!(ipl.status.as_ref().map(|s| s.workers_desired), Some(2));
    assert!(!cond_is(&ipl, "Ready", "False", "Suspended"));
    let sts = op.api::<StatefulSet>().get("shop-worker").await?;
    assert_eq!(worker_replicas(&sts), Some(2));
    let d = op.api::<Deployment>().get("shop-generator").await?;
    assert_eq!(deployment_replicas(&d), Some(1));
    wait_pods(&op, "worker", 2).await?;
    wait_pods(&op, "generator", 1).await?;
    for reason in ["Suspended", "Resumed"] {
        ensure!(
            !op.events(reason).await?.is_empty(),
            "an Event with reason {reason}"
        );
    }
    op.shutdown().await
}
