//! Least privilege, proven: the operator runs with nothing but what the chart renders
//! for `operator.watchNamespaces: [A, B]` — its ServiceAccount, a Role and RoleBinding in
//! A and in B, the leader-election Role in its own namespace — by impersonating that
//! ServiceAccount. Its flags are the rendered Deployment's arguments, parsed by the
//! operator's own command line. Every request the API server refuses is recorded.

use std::time::Duration;

use anyhow::{Context as _, Result, ensure};
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::api::{Api, DeleteParams, DynamicObject, ListParams};
use kube::{Client, ResourceExt as _};
use serde_json::json;
use sluice_operator::children;
use sluice_operator::{IngestPipeline, RunOptions};
use sluice_testkit::kube_env::KubeEnv;

use crate::chart::{Flags, Rendered, apply_rendered, example_role_rules};
use crate::fixtures::*;
use crate::harness::*;
use crate::impersonate::{Forbidden, client_as, service_account_user};

/// The release namespace: the operator's ServiceAccount, its Lease.
const RELEASE_NS: &str = "op-rbac-system";
/// `operator.watchNamespaces`.
const WATCHED: [&str; 2] = ["op-rbac-a", "op-rbac-b"];
/// A namespace with a pipeline the operator must not see.
const UNWATCHED: &str = "op-rbac-c";
/// The CloudNativePG pipeline (in the second watched namespace).
const CNPG_PIPELINE: &str = "lake";

/// `--watch-namespaces A,B` with only the chart's Roles: the pipelines of A and B
/// converge (children, status, finalizer, NetworkPolicies, disruption budget, Events,
/// the Lease; deletes of what is turned off, the finalizer released on deletion), the
/// one in C is untouched, the API server refused the operator nothing, and the same
/// ServiceAccount is refused pipelines and Secrets outside A and B.
#[tokio::test]
async fn the_charts_roles_alone_run_the_watched_namespaces() -> Result<()> {
    let Some(env) = KubeEnv::shared_or_skip().await? else {
        return Ok(());
    };
    let set_watched = format!("operator.watchNamespaces={{{}}}", WATCHED.join(","));
    let Some(chart) = Rendered::helm_template(
        RELEASE_NS,
        &[
            "--set",
            &set_watched,
            "--set",
            "operator.leaderElection.enabled=true",
            "--set",
            "pipelines.networkPolicy.default=true",
        ],
    )?
    else {
        return Ok(());
    };
    for ns in [RELEASE_NS, WATCHED[0], WATCHED[1], UNWATCHED] {
        env.create_namespace(ns).await?;
    }
    let admin = env.client().await?;
    install_crd(&admin).await?;
    install_foreign_crd(&admin, "postgresql.cnpg.io", "Cluster", "clusters").await?;

    // What the chart claims, then its RBAC objects applied as they are.
    let (sa, flags) = chart.operator(&WATCHED)?;
    let rules = chart.operator_roles(&sa, &WATCHED)?;
    let example = example_role_rules()?;
    ensure!(
        example == rules,
        "deploy/rbac/namespaced/role.yaml's rules differ from the chart's Role:\n{}\n{}",
        short_json(&example),
        short_json(&rules)
    );
    for obj in chart.rbac_objects() {
        apply_rendered(&admin, obj).await?;
    }
    let user = service_account_user(RELEASE_NS, &sa);
    let probe = client_as(env, &user, None).await?;
    wait_roles_in_effect(&probe, &flags).await?;
    refused_outside_the_watched_namespaces(&probe).await?;

    // The pipelines: one per namespace, and one naming a CloudNativePG Cluster in B.
    let forbidden = Forbidden::default();
    let operator_client = client_as(env, &user, Some(&forbidden)).await?;
    // The recorder sees a refusal (one request of the operator's client out of bounds).
    let refused = Api::<IngestPipeline>::namespaced(operator_client.clone(), UNWATCHED)
        .list(&ListParams::default())
        .await;
    ensure!(is_forbidden(&refused), "{refused:?}");
    let noted = forbidden.take();
    ensure!(
        noted.len() == 1 && noted[0].contains(UNWATCHED),
        "the recorder noted {noted:?}"
    );
    let op = Operator::launch(
        env,
        admin.clone(),
        WATCHED[0],
        operator_client,
        RunOptions {
            scope: flags.scope.clone(),
            leader: flags.leader.clone(),
            instance: Some("op-rbac-test".into()),
        },
        flags.settings.clone(),
    )?;
    for ns in [WATCHED[0], WATCHED[1], UNWATCHED] {
        op.create_secret_in(ns).await?;
        op.create_pipeline_in(ns, &pipeline(json!({}))).await?;
    }
    let lake = IngestPipeline::new(
        CNPG_PIPELINE,
        serde_json::from_value(json!({ "postgres": { "cloudNativePG": { "cluster": "pg" } } }))?,
    );
    op.create_pipeline_in(WATCHED[1], &lake).await?;

    for ns in WATCHED {
        converged(&op, ns)
            .await
            .with_context(|| format!("the pipeline in watched namespace {ns}"))?;
    }
    cnpg_checked(&op, WATCHED[1]).await?;
    let leader = flags.leader.as_ref().context("leader election is on")?;
    let leases = Api::<Lease>::namespaced(admin.clone(), &leader.namespace);
    let holder = async || -> Result<Option<String>> {
        let lease = leases
            .get(&leader.lease_name)
            .await
            .context("the operator's Lease")?;
        Ok(lease.spec.and_then(|s| s.holder_identity))
    };
    assert_eq!(
        holder().await?.as_deref(),
        Some(leader.identity.as_str()),
        "the operator holds its Lease"
    );
    assert_eq!(op.metrics.leader.get(), 1, "leader gauge");

    // Deletes: what is turned off, and the finalizer released.
    op.patch_spec(json!({
        "networkPolicy": { "enabled": false },
        "worker": { "disruptionBudget": { "enabled": false } },
    }))
    .await?;
    for name in [children::worker_name(NAME), children::generator_name(NAME)] {
        wait_gone(op.api::<NetworkPolicy>(), &name, CONVERGE).await?;
    }
    wait_gone(
        pdbs(&op, WATCHED[0]).await?,
        &children::worker_name(NAME),
        CONVERGE,
    )
    .await?;
    op.api::<IngestPipeline>()
        .delete(NAME, &DeleteParams::default())
        .await
        .context("deleting the pipeline in A")?;
    wait_gone(op.api::<IngestPipeline>(), NAME, CONVERGE)
        .await
        .context("the operator releases its finalizer")?;

    untouched(&admin, UNWATCHED).await?;
    op.shutdown().await?;
    assert_eq!(holder().await?, None, "the Lease released on stop");
    let refused = forbidden.take();
    assert!(
        refused.is_empty(),
        "the API server refused the operator {} request(s) with only the chart's Roles:\n{}",
        refused.len(),
        refused.join("\n")
    );
    Ok(())
}

/// The API server authorizes from caches of Roles and bindings, which follow within a
/// moment: waits until the ServiceAccount may list pipelines in every watched
/// namespace and read its Lease.
async fn wait_roles_in_effect(probe: &Client, flags: &Flags) -> Result<()> {
    poll(
        "the chart's Roles in effect",
        Duration::from_secs(30),
        async || {
            for ns in WATCHED {
                let api = Api::<IngestPipeline>::namespaced(probe.clone(), ns);
                if let Err(e) = api.list(&ListParams::default()).await {
                    return Ok(Seen::NotYet(format!("listing pipelines in {ns}: {e}")));
                }
            }
            if let Some(l) = &flags.leader {
                let leases = Api::<Lease>::namespaced(probe.clone(), &l.namespace);
                if let Err(e) = leases.get_opt(&l.lease_name).await {
                    return Ok(Seen::NotYet(format!("reading the Lease: {e}")));
                }
            }
            Ok(Seen::Done(()))
        },
    )
    .await
}

fn is_forbidden<T>(result: &Result<T, kube::Error>) -> bool {
    matches!(result, Err(kube::Error::Api(s)) if s.code == 403)
}

/// The ServiceAccount gets nothing outside the watched namespaces, nor Secrets beyond
/// `get`.
async fn refused_outside_the_watched_namespaces(probe: &Client) -> Result<()> {
    let lp = ListParams::default();
    let c = Api::<IngestPipeline>::namespaced(probe.clone(), UNWATCHED)
        .list(&lp)
        .await;
    ensure!(
        is_forbidden(&c),
        "list ingestpipelines in {UNWATCHED}: {c:?}"
    );
    let all = Api::<IngestPipeline>::all(probe.clone()).list(&lp).await;
    ensure!(
        is_forbidden(&all),
        "list ingestpipelines cluster-wide: {all:?}"
    );
    let secret = Api::<Secret>::namespaced(probe.clone(), UNWATCHED)
        .get_opt(SECRET)
        .await;
    ensure!(
        is_forbidden(&secret),
        "get secrets in {UNWATCHED}: {secret:?}"
    );
    let secrets = Api::<Secret>::namespaced(probe.clone(), WATCHED[0])
        .list(&lp)
        .await;
    ensure!(
        is_forbidden(&secrets),
        "list secrets in {}: {secrets:?}",
        WATCHED[0]
    );
    Ok(())
}

/// PodDisruptionBudgets in `ns`, on the version the server serves.
async fn pdbs(op: &Operator, ns: &str) -> Result<Api<DynamicObject>> {
    let resource = sluice_operator::pdb::PdbApi::default()
        .resource(&op.client)
        .await
        .cloned()
        .context("the server serves PodDisruptionBudgets")?;
    Ok(Api::namespaced_with(op.client.clone(), ns, &resource))
}

/// The pipeline `shop` of `ns` converged: children, NetworkPolicies, the disruption
/// budget, the finalizer, a status of the current generation with nothing Degraded.
async fn converged(op: &Operator, ns: &str) -> Result<()> {
    let ipls = Api::<IngestPipeline>::namespaced(op.client.clone(), ns);
    let c = op.wait_children_in(ns).await?;
    let ipl = wait_for(
        &ipls,
        NAME,
        "the finalizer and a status of the current generation",
        CONVERGE,
        |ipl| {
            let current =
                ipl.status.as_ref().and_then(|s| s.observed_generation) == ipl.metadata.generation;
            current
                && condition(ipl, "Ready").is_some()
                && ipl
                    .finalizers()
                    .iter()
                    .any(|f| f == sluice_operator::deletion::FINALIZER)
        },
    )
    .await?;
    check_owned("StatefulSet", &c.worker.metadata, "worker", &ipl);
    assert!(
        cond_is(&ipl, "Degraded", "False", "AsExpected"),
        "{ns}: {:?}",
        ipl.status
    );
    let policies = Api::<NetworkPolicy>::namespaced(op.client.clone(), ns);
    for name in [children::worker_name(NAME), children::generator_name(NAME)] {
        wait_exists(&policies, &name, CONVERGE).await?;
    }
    wait_for(
        &pdbs(op, ns).await?,
        &children::worker_name(NAME),
        "the PodDisruptionBudget",
        CONVERGE,
        |_| true,
    )
    .await?;
    Ok(())
}

/// The CloudNativePG pipeline: the Cluster looked up (missing here) is the Degraded
/// reason, and the Warning Event about it was written.
async fn cnpg_checked(op: &Operator, ns: &str) -> Result<()> {
    let ipls = Api::<IngestPipeline>::namespaced(op.client.clone(), ns);
    wait_for(
        &ipls,
        CNPG_PIPELINE,
        "Degraded PostgresClusterNotFound",
        CONVERGE,
        |ipl| cond_is(ipl, "Degraded", "True", "PostgresClusterNotFound"),
    )
    .await?;
    let events = Api::<Event>::namespaced(op.client.clone(), ns);
    poll(
        "the Warning Event PostgresClusterNotFound",
        CONVERGE,
        async || {
            let found = events
                .list(&ListParams::default())
                .await?
                .items
                .into_iter()
                .any(|e| {
                    e.reason.as_deref() == Some("PostgresClusterNotFound")
                        && e.regarding
                            .as_ref()
                            .is_some_and(|r| r.name.as_deref() == Some(CNPG_PIPELINE))
                });
            Ok(if found {
                Seen::Done(())
            } else {
                Seen::NotYet("no such Event".into())
            })
        },
    )
    .await
}

/// The pipeline of an unwatched namespace: no status, no finalizer, no children.
async fn untouched(admin: &Client, ns: &str) -> Result<()> {
    let ignored = Api::<IngestPipeline>::namespaced(admin.clone(), ns)
        .get(NAME)
        .await?;
    assert!(ignored.status.is_none(), "{:?}", ignored.status);
    assert!(
        ignored.finalizers().is_empty(),
        "{:?}",
        ignored.finalizers()
    );
    let none = Api::<StatefulSet>::namespaced(admin.clone(), ns)
        .get_opt(&children::worker_name(NAME))
        .await?
        .is_none()
        && Api::<Deployment>::namespaced(admin.clone(), ns)
            .get_opt(&children::generator_name(NAME))
            .await?
            .is_none()
        && Api::<ConfigMap>::namespaced(admin.clone(), ns)
            .get_opt(&children::config_map_name(NAME))
            .await?
            .is_none();
    assert!(none, "nothing applied in unwatched namespace {ns}");
    Ok(())
}
