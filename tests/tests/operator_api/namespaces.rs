//! `--watch-namespaces`: the watched namespaces only.

use std::time::Duration;

use anyhow::{Context as _, Result};
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use kube::ResourceExt as _;
use kube::api::{Api, PostParams};
use serde_json::json;
use sluice_operator::children;
use sluice_operator::{IngestPipeline, Scope, Settings};

use crate::fixtures::*;
use crate::harness::*;

/// `--watch-namespaces A,B`: one operator reconciles the pipelines of A and B, and never
/// touches the one in C (no status, no finalizer, no children).
#[tokio::test]
async fn watched_namespaces_only() -> Result<()> {
    let (a, b, c) = ("op-watch-a", "op-watch-b", "op-watch-c");
    let scope = Scope::Namespaces(vec![a.into(), b.into()]);
    let Some(op) = Operator::start_with(a, scope, Settings::default()).await? else {
        return Ok(());
    };
    op.env.create_namespace(b).await?;
    op.env.create_namespace(c).await?;
    op.create_secret().await?;
    op.create_pipeline(&pipeline(json!({}))).await?;
    for ns in [b, c] {
        op.create_secret_in(ns).await?;
        Api::<IngestPipeline>::namespaced(op.client.clone(), ns)
            .create(&PostParams::default(), &pipeline(json!({})))
            .await
            .with_context(|| format!("creating the pipeline in {ns}"))?;
    }
    for ns in [a, b] {
        let api = Api::<StatefulSet>::namespaced(op.client.clone(), ns);
        wait_exists(&api, &children::worker_name(NAME), CONVERGE)
            .await
            .with_context(|| format!("the pipeline in watched namespace {ns}"))?;
        let ipls = Api::<IngestPipeline>::namespaced(op.client.clone(), ns);
        wait_for(&ipls, NAME, "a status", CONVERGE, |ipl| {
            ipl.status.is_some()
        })
        .await?;
    }
    // Both watched pipelines converged; give a stray watch a moment more.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let ignored = Api::<IngestPipeline>::namespaced(op.client.clone(), c)
        .get(NAME)
        .await?;
    assert!(ignored.status.is_none(), "{:?}", ignored.status);
    assert!(
        ignored.finalizers().is_empty(),
        "{:?}",
        ignored.finalizers()
    );
    for name in [children::worker_name(NAME), children::generator_name(NAME)] {
        assert!(
            Api::<StatefulSet>::namespaced(op.client.clone(), c)
                .get_opt(&name)
                .await?
                .is_none()
                && Api::<Deployment>::namespaced(op.client.clone(), c)
                    .get_opt(&name)
                    .await?
                    .is_none(),
            "nothing applied in unwatched namespace {c} ({name})"
        );
    }
    op.shutdown().await
}
