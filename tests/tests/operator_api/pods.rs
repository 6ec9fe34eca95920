//! What the pods get: pod templates, the workers' disruption budget, NetworkPolicies.

use anyhow::{Context as _, Result};
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::ServiceAccount;
use kube::ResourceExt as _;
use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams, PostParams};
use serde_json::json;
use sluice_operator::IngestPipeline;
use sluice_operator::children;

use crate::fixtures::*;
use crate::harness::*;

/// spec.podTemplate with a per-worker override → every field on the pods the real
/// controllers create (the StatefulSet's and the Deployment's), the override winning on
/// the workers only; a reserved label is refused with InvalidSpec.
#[tokio::test]
async fn pod_templates_reach_the_pods() -> Result<()> {
    use k8s_openapi::api::scheduling::v1::PriorityClass;
    let Some(op) = Operator::start("op-podtemplate").await? else {
        return Ok(());
    };
    // What the pods refer to must exist, or the admission plugins refuse the pods.
    let classes: Api<PriorityClass> = Api::all(op.client.clone());
    for (name, value) in [("op-podtemplate-low", 10), ("op-podtemplate-high", 1000)] {
        let pc: PriorityClass = serde_json::from_value(json!({
            "apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass",
            "metadata": { "name": name }, "value": value,
        }))?;
        classes
            .patch(name, &PatchParams::apply(TEST_MANAGER), &Patch::Apply(&pc))
            .await
            .with_context(|| format!("creating PriorityClass {name}"))?;
    }
    let sa: ServiceAccount = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "ServiceAccount", "metadata": { "name": "ingest-pods" },
    }))?;
    op.api::<ServiceAccount>()
        .create(&PostParams::default(), &sa)
        .await
        .context("creating the pods' ServiceAccount")?;
    op.create_secret().await?;
    let shared = json!({
        "metadata": { "labels": { "team": "data" }, "annotations": { "cost-centre": "42" } },
        "imagePullSecrets": [{ "name": "regcred" }],
        "nodeSelector": { "pool": "ingest" },
        "tolerations": [{ "key": "dedicated", "operator": "Equal", "value": "ingest", "effect": "NoSchedule" }],
        "affinity": { "nodeAffinity": { "requiredDuringSchedulingIgnoredDuringExecution": {
            "nodeSelectorTerms": [{ "matchExpressions": [{ "key": "zone", "operator": "In", "values": ["a"] }] }] } } },
        "topologySpreadConstraints": [{ "maxSkew": 1, "topologyKey": "kubernetes.io/hostname", "whenUnsatisfiable": "ScheduleAnyway" }],
        "priorityClassName": "op-podtemplate-low",
        "serviceAccountName": "ingest-pods",
    });
    op.create_pipeline(&pipeline(json!({
        "podTemplate": shared,
        "worker": { "replicas": 1, "podTemplate": {
            "metadata": { "labels": { "role": "loader" } },
            "priorityClassName": "op-podtemplate-high",
        } },
    })))
    .await?;
    for (component, prio) in [
        ("worker", "op-podtemplate-high"),
        ("generator", "op-podtemplate-low"),
    ] {
        let pods = wait_pods(&op, component, 1).await?;
        let pod = &pods[0];
        let spec = pod.spec.as_ref().context("pod spec")?;
        let v = serde_json::to_value(spec)?;
        assert_eq!(
            v["imagePullSecrets"],
            json!([{ "name": "regcred" }]),
            "{component}"
        );
        assert_eq!(
            v["nodeSelector"],
            json!({ "pool": "ingest" }),
            "{component}"
        );
        assert!(
            v["tolerations"]
                .as_array()
                .is_some_and(|t| t.iter().any(|t| t["key"] == "dedicated")),
            "{component}: {}",
            v["tolerations"]
        );
        assert_eq!(
            v["affinity"]["nodeAffinity"], shared["affinity"]["nodeAffinity"],
            "{component}"
        );
        assert_eq!(
            v["topologySpreadConstraints"][0]["topologyKey"], "kubernetes.io/hostname",
            "{component}"
        );
        assert_eq!(
            spec.priority_class_name.as_deref(),
            Some(prio),
            "{component}"
        );
        assert_eq!(spec.service_account_name.as_deref(), Some("ingest-pods"));
        assert_eq!(spec.automount_service_account_token, Some(false));
        let labels = pod.labels();
        assert_eq!(labels.get("team").map(String::as_str), Some("data"));
        assert_eq!(
            labels
                .get("app.kubernetes.io/component")
                .map(String::as_str),
            Some(component)
        );
        assert_eq!(
            labels.get("role").is_some(),
            component == "worker",
            "the worker override stays on the workers"
        );
        assert_eq!(
            pod.annotations().get("cost-centre").map(String::as_str),
            Some("42")
        );
    }

    // A label the operator selects by is refused, and nothing changes.
    op.patch_spec(json!({ "podTemplate": { "metadata": { "labels": {
        "app.kubernetes.io/instance": "other" } } } }))
        .await?;
    let ipl = op
        .wait_status("InvalidSpec for a reserved label", CONVERGE, |ipl| {
            cond_is(ipl, "Degraded", "True", "InvalidSpec")
        })
        .await?;
    let msg = condition(&ipl, "Degraded")
        .map(|c| c.message.clone())
        .unwrap_or_default();
    assert!(
        msg.contains("spec.podTemplate.metadata.labels")
            && msg.contains("app.kubernetes.io/instance"),
        "{msg}"
    );
    let sts = op
        .api::<StatefulSet>()
        .get(&children::worker_name(NAME))
        .await?;
    let tl = sts
        .spec
        .template
        .metadata
        .and_then(|m| m.labels)
        .unwrap_or_default();
    assert_eq!(
        tl.get("app.kubernetes.io/instance").map(String::as_str),
        Some(NAME)
    );
    for (name, _) in [("op-podtemplate-low", 0), ("op-podtemplate-high", 0)] {
        let _ = classes.delete(name, &DeleteParams::default()).await;
    }
    op.shutdown().await
}

/// spec.worker.disruptionBudget: on by default (maxUnavailable 1 over the worker pods,
/// owned by the pipeline), changed in place, removed when disabled. On the policy version
/// the server serves (v1beta1 on the 1.20 test server).
#[tokio::test]
async fn the_workers_get_a_disruption_budget() -> Result<()> {
    let Some(op) = Operator::start("op-pdb").await? else {
        return Ok(());
    };
    let ar = sluice_operator::pdb::PdbApi::default()
        .resource(&op.client)
        .await
        .cloned()
        .context("the server serves PodDisruptionBudgets")?;
    let pdbs: Api<DynamicObject> = Api::namespaced_with(op.client.clone(), &op.ns, &ar);
    op.create_secret().await?;
    let ipl = op.create_pipeline(&pipeline(json!({}))).await?;
    let name = children::worker_name(NAME);
    let pdb = wait_for(&pdbs, &name, "the PodDisruptionBudget", CONVERGE, |_| true).await?;
    assert_eq!(pdb.data["spec"]["maxUnavailable"], json!(1));
    assert_eq!(
        pdb.data["spec"]["selector"]["matchLabels"],
        serde_json::to_value(children::selector_labels(NAME, "worker"))?
    );
    assert!(
        pdb.owner_references()
            .iter()
            .any(|o| Some(&o.uid) == ipl.uid().as_ref() && o.controller == Some(true)),
        "owned by the pipeline"
    );

    op.patch_spec(json!({ "worker": { "disruptionBudget": { "maxUnavailable": "50%" } } }))
        .await?;
    wait_for(&pdbs, &name, "maxUnavailable 50%", CONVERGE, |p| {
        p.data["spec"]["maxUnavailable"] == json!("50%")
    })
    .await?;

    op.patch_spec(json!({ "worker": { "disruptionBudget": { "enabled": false } } }))
        .await?;
    wait_gone(pdbs.clone(), &name, CONVERGE).await?;
    op.patch_spec(json!({ "worker": { "disruptionBudget": { "enabled": true } } }))
        .await?;
    wait_for(
        &pdbs,
        &name,
        "the PodDisruptionBudget again",
        CONVERGE,
        |_| true,
    )
    .await?;
    op.shutdown().await
}

/// spec.networkPolicy.enabled → NetworkPolicies `shop-worker` (metrics in from the
/// operator and metricsFrom; DNS and PostgreSQL out) and `shop-generator` (no egress),
/// owned by the pipeline; turned off → deleted. (The test server has no network plugin:
/// the objects are checked, not their enforcement.)
#[tokio::test]
async fn network_policies_follow_the_spec() -> Result<()> {
    use k8s_openapi::api::networking::v1::NetworkPolicy;
    let Some(op) = Operator::start("op-netpol").await? else {
        return Ok(());
    };
    op.create_secret().await?;
    op.create_pipeline(&pipeline(json!({ "networkPolicy": {
        "enabled": true,
        "postgres": [{ "ipBlock": { "cidr": "10.0.3.7/32" } }],
        "metricsFrom": [{ "namespaceSelector": { "matchLabels": {
            "kubernetes.io/metadata.name": "monitoring" } } }],
    } })))
    .await?;
    let api = op.api::<NetworkPolicy>();
    let worker = wait_exists(&api, &children::worker_name(NAME), CONVERGE).await?;
    let generator = wait_exists(&api, &children::generator_name(NAME), CONVERGE).await?;
    let w = serde_json::to_value(&worker.spec)?;
    assert_eq!(w["policyTypes"], json!(["Ingress", "Egress"]));
    assert_eq!(w["ingress"][0]["ports"][0]["port"], 9100);
    assert_eq!(
        w["ingress"][0]["from"][0]["podSelector"]["matchLabels"]["app.kubernetes.io/component"],
        "operator"
    );
    assert_eq!(
        w["ingress"][0]["from"][1]["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"],
        "monitoring"
    );
    assert_eq!(w["egress"][0]["ports"][0]["port"], 53);
    assert_eq!(w["egress"][1]["to"][0]["ipBlock"]["cidr"], "10.0.3.7/32");
    assert_eq!(w["egress"][1]["ports"][0]["port"], 5432);
    let g = serde_json::to_value(&generator.spec)?;
    assert_eq!(g["policyTypes"], json!(["Ingress", "Egress"]));
    assert!(
        g.get("egress")
            .is_none_or(|e| e.as_array().is_some_and(|a| a.is_empty())),
        "the generator may send nothing: {g}"
    );
    check_owned(
        "NetworkPolicy",
        &worker.metadata,
        "worker",
        &op.api::<IngestPipeline>().get(NAME).await?,
    );

    op.patch_spec(json!({ "networkPolicy": { "enabled": false } }))
        .await?;
    wait_gone(api.clone(), &children::worker_name(NAME), CONVERGE).await?;
    wait_gone(api, &children::generator_name(NAME), CONVERGE).await?;
    op.shutdown().await
}
