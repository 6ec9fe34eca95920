//! Monitoring: a table mismatch found by a real worker process becomes the Degraded
//! reason (the operator scrapes the workers), and the pipeline's PodMonitor.

use std::time::Duration;

use anyhow::{Context as _, Result, bail, ensure};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::ResourceExt as _;
use kube::api::{Api, ApiResource, DynamicObject, Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use sluice_operator::IngestPipeline;

use crate::fixtures::*;
use crate::harness::*;

/// The node the mismatch test binds its worker pod to (an object only: no kubelet).
const TEST_NODE: &str = "sluice-test-node";

/// This machine's address on its outbound interface (no packet is sent), or None.
/// Endpoints refuse loopback addresses, so a worker played by a local process must be
/// reached on a real interface.
fn outbound_ipv4() -> Option<std::net::Ipv4Addr> {
    let socket = std::net::UdpSocket::bind("0.0.0.0:0").ok()?;
    socket.connect("192.0.2.1:9").ok()?;
    match socket.local_addr().ok()?.ip() {
        std::net::IpAddr::V4(ip) if !ip.is_loopback() && !ip.is_unspecified() => Some(ip),
        _ => None,
    }
}

/// A table that does not fit `spec.schema`, end to end: a real worker process (this
/// test plays the kubelet: the pod's IP is this machine's, where the worker listens on
/// the metrics port) refuses the table, reports `schema_mismatch`, and the operator,
/// scraping it through the Service's Endpoints, sets Degraded with reason SchemaMismatch.
/// Fixing the table clears it.
#[tokio::test]
async fn a_table_mismatch_found_by_a_worker_is_the_degraded_reason() -> Result<()> {
    let Some(ip) = outbound_ipv4() else {
        eprintln!("skipped: no non-loopback IPv4 address to give the worker pod");
        return Ok(());
    };
    let Ok(listener) = std::net::TcpListener::bind((ip, 9100)) else {
        eprintln!("skipped: port 9100 (the pods' metrics port) is taken on {ip}");
        return Ok(());
    };
    drop(listener);
    let Some(op) = Operator::start("op-mismatch").await? else {
        return Ok(());
    };
    op.create_secret().await?;
    let schema = json!({
        "table": "Sensor Readings",
        "columns": [
            {"name": "reading_id", "type": "uuid"},
            {"name": "celsius", "type": "numeric", "precision": 5, "scale": 1}
        ]
    });
    op.create_pipeline(&pipeline(json!({
        "generator": { "enabled": false },
        "worker": { "replicas": 1 },
        "schema": schema
    })))
    .await?;
    op.wait_children().await?;

    let cluster = sluice_testkit::pg::shared().await;
    let db = cluster.create_database().await?;
    let client = db.connect().await?;
    client
        .batch_execute(
            "CREATE TABLE \"Sensor Readings\" (reading_id uuid NOT NULL, celsius integer NOT NULL)",
        )
        .await?;
    let root = tempfile::tempdir()?;
    let config = root.path().join("pipeline.json");
    std::fs::write(&config, json!({ "schema": schema }).to_string())?;
    let spec = sluice_testkit::procs::WorkerSpec::in_root(
        root.path(),
        "shop-worker-0",
        db.url(),
        &[
            "--config",
            &config.display().to_string(),
            "--metrics-addr",
            &format!("{ip}:9100"),
        ],
    );
    let log = spec.log.clone();
    let mut worker = sluice_testkit::procs::WorkerProc::spawn(spec)?;

    wait_pods(&op, "worker", 1).await?;
    // Play the scheduler too: an address in Endpoints names its pod's node (an unbound
    // pod's empty node name fails Endpoints validation), and the pod garbage collector
    // deletes pods bound to nodes that do not exist.
    let nodes: Api<k8s_openapi::api::core::v1::Node> = Api::all(op.client.clone());
    if nodes.get_opt(TEST_NODE).await?.is_none() {
        let node = serde_json::from_value(json!({ "metadata": { "name": TEST_NODE } }))?;
        nodes.create(&PostParams::default(), &node).await?;
    }
    let binding = json!({
        "apiVersion": "v1",
        "kind": "Binding",
        "metadata": { "name": "shop-worker-0" },
        "target": { "apiVersion": "v1", "kind": "Node", "name": TEST_NODE }
    });
    op.api::<Pod>()
        .create_subresource::<Value, Value>(
            "binding",
            "shop-worker-0",
            &PostParams::default(),
            &binding,
        )
        .await
        .context("binding the worker pod to the test node")?;
    op.make_pod_ready("shop-worker-0").await?;
    let status =
        json!({ "status": { "podIP": ip.to_string(), "podIPs": [{ "ip": ip.to_string() }] } });
    op.api::<Pod>()
        .patch_status(
            "shop-worker-0",
            &PatchParams::default(),
            &Patch::Merge(&status),
        )
        .await
        .context("giving the worker pod this machine's IP")?;
    // The endpoints controller lists the pod under the worker Service.
    let endpoints = op.api::<k8s_openapi::api::core::v1::Endpoints>();
    let listed = poll(
        "the worker pod in Endpoints shop-worker",
        CONVERGE,
        async || {
            let ep = endpoints.get_opt("shop-worker").await?;
            let listed = ep.as_ref().is_some_and(|ep| {
                ep.subsets.iter().flatten().any(|s| {
                    s.addresses
                        .iter()
                        .chain(s.not_ready_addresses.iter())
                        .flatten()
                        .any(|a| a.ip == ip.to_string())
                })
            });
            Ok(if listed {
                Seen::Done(())
            } else {
                Seen::NotYet(serde_json::to_string(&ep.map(|e| e.subsets))?)
            })
        },
    )
    .await;
    if let Err(e) = listed {
        let pod = op.api::<Pod>().get("shop-worker-0").await?;
        bail!("{e:#}\npod status: {}", serde_json::to_string(&pod.status)?);
    }

    let ipl = op
        .wait_status("Degraded SchemaMismatch", Duration::from_secs(90), |ipl| {
            cond_is(ipl, "Degraded", "True", "SchemaMismatch")
        })
        .await
        .with_context(|| sluice_testkit::procs::tail(&log, 30))?;
    let message = condition(&ipl, "Degraded")
        .map(|c| c.message.clone())
        .unwrap_or_default();
    assert!(
        message.contains("schema_mismatch") && message.contains("spec.schema"),
        "{message}"
    );
    let worker_log = std::fs::read_to_string(&log)?;
    assert!(
        worker_log.contains("celsius"),
        "the worker's log names the column:\n{worker_log}"
    );

    // The fix: the column gets the declared type; the worker retries and the condition clears.
    client
        .batch_execute("ALTER TABLE \"Sensor Readings\" ALTER COLUMN celsius TYPE numeric(5,1)")
        .await?;
    op.wait_status("Degraded cleared", Duration::from_secs(120), |ipl| {
        cond_is(ipl, "Degraded", "False", "AsExpected")
    })
    .await
    .with_context(|| sluice_testkit::procs::tail(&log, 30))?;
    worker.check_alive()?;
    op.shutdown().await
}

/// spec.monitoring.podMonitor: without the PodMonitor CRD the Monitoring condition says
/// so (not Degraded); once the CRD is installed the PodMonitor appears, owned by the
/// pipeline; disabled, it is deleted. One test: the CRD is cluster-wide.
#[tokio::test]
async fn the_pod_monitor_follows_the_spec_and_its_crd() -> Result<()> {
    let Some(op) = Operator::start("op-podmonitor").await? else {
        return Ok(());
    };
    let crds: Api<CustomResourceDefinition> = Api::all(op.client.clone());
    ensure!(
        crds.get_opt("podmonitors.monitoring.coreos.com")
            .await?
            .is_none(),
        "the PodMonitor CRD is installed only by this test"
    );
    op.create_secret().await?;
    op.create_pipeline(&pipeline(json!({
        "monitoring": { "podMonitor": { "enabled": true, "interval": "15s",
                                         "labels": { "release": "prometheus" } } }
    })))
    .await?;
    let ipl = op
        .wait_status("Monitoring False PodMonitorCRDMissing", CONVERGE, |ipl| {
            cond_is(ipl, "Monitoring", "False", "PodMonitorCRDMissing")
        })
        .await?;
    let msg = condition(&ipl, "Monitoring")
        .map(|c| c.message.clone())
        .unwrap_or_default();
    assert!(msg.contains("monitoring.coreos.com/v1 PodMonitor"), "{msg}");
    assert!(
        cond_is(&ipl, "Degraded", "False", "AsExpected"),
        "not Degraded for it"
    );

    install_foreign_crd(
        &op.client,
        "monitoring.coreos.com",
        "PodMonitor",
        "podmonitors",
    )
    .await?;
    let pm_resource = ApiResource {
        group: "monitoring.coreos.com".into(),
        version: "v1".into(),
        api_version: "monitoring.coreos.com/v1".into(),
        kind: "PodMonitor".into(),
        plural: "podmonitors".into(),
    };
    let pms: Api<DynamicObject> = Api::namespaced_with(op.client.clone(), &op.ns, &pm_resource);
    // Nothing watches the CRD: a touch of the pipeline (or the next resync) reconciles.
    op.api::<IngestPipeline>()
        .patch(
            NAME,
            &PatchParams::default(),
            &Patch::Merge(json!({
            "metadata": { "annotations": { "test/touch": "1" } } })),
        )
        .await?;
    let pm = wait_for(
        &pms,
        "shop-sluice",
        "PodMonitor shop-sluice to exist",
        CONVERGE,
        |_| true,
    )
    .await?;
    let ipl = op.api::<IngestPipeline>().get(NAME).await?;
    let owner = pm.owner_references().first().cloned().context("an owner")?;
    assert_eq!(
        (owner.uid, owner.controller),
        (ipl.uid().unwrap_or_default(), Some(true))
    );
    assert_eq!(
        pm.labels()
            .get("app.kubernetes.io/component")
            .map(String::as_str),
        Some("monitoring")
    );
    assert_eq!(
        pm.labels().get("release").map(String::as_str),
        Some("prometheus")
    );
    let ep = &pm.data["spec"]["podMetricsEndpoints"][0];
    assert_eq!(
        (&ep["port"], &ep["interval"]),
        (&json!("metrics"), &json!("15s")),
        "{ep}"
    );
    assert_eq!(
        pm.data["spec"]["selector"]["matchLabels"]["app.kubernetes.io/instance"],
        json!(NAME)
    );
    op.wait_status("Monitoring True", CONVERGE, |ipl| {
        cond_is(ipl, "Monitoring", "True", "PodMonitorApplied")
    })
    .await?;

    op.patch_spec(json!({ "monitoring": { "podMonitor": { "enabled": false } } }))
        .await?;
    wait_gone(pms, "shop-sluice", CONVERGE)
        .await
        .context("the PodMonitor is deleted when disabled")?;
    let ipl = op
        .wait_status("no Monitoring condition", CONVERGE, |ipl| {
            condition(ipl, "Monitoring").is_none()
        })
        .await?;
    assert!(cond_is(&ipl, "Degraded", "False", "AsExpected"));
    op.shutdown().await
}
