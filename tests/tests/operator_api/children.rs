//! The children: every one with its spec and a controller owner reference, restored
//! when deleted or edited, following spec changes.

use anyhow::{Context as _, Result};
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{ConfigMap, Container, PersistentVolumeClaim, PodSpec};
use kube::ResourceExt as _;
use kube::api::{DeleteParams, Patch, PatchParams};
use serde_json::json;
use sluice_operator::children::{self, CONFIG_HASH_ANNOTATION, CREDENTIALS_ANNOTATION};

use crate::fixtures::*;
use crate::harness::*;

/// CRD installed and Established; the example pipeline and its Secret → every child with
/// the right spec and a controller owner reference; the real controllers accept the pod
/// templates (pods and checkpoint claims are created).
#[tokio::test]
async fn example_pipeline_creates_all_children() -> Result<()> {
    let Some(op) = Operator::start("op-children").await? else {
        return Ok(());
    };
    let secret = op.create_secret().await?;
    let ipl = op.create_pipeline(&example_pipeline()?).await?;
    let c = op.wait_children().await?;

    check_owned("ServiceAccount", &c.service_account.metadata, "pods", &ipl);
    assert_eq!(
        c.service_account.automount_service_account_token,
        Some(false)
    );

    check_owned("ConfigMap", &c.config_map.metadata, "config", &ipl);
    let (text, cfg) = config_json(&c.config_map)?;
    assert_eq!(cfg["worker"]["batch"]["maxFiles"], json!(256), "{cfg}");
    assert_eq!(cfg["worker"]["archiveRetentionHours"], json!(24), "{cfg}");
    assert_eq!(cfg["generator"]["eventsPerSecond"], json!(2000), "{cfg}");
    assert_eq!(cfg["generator"]["seed"], json!(42), "{cfg}");
    // sslmode unset and no ca.crt in the example Secret: TLS without verification.
    assert_eq!(cfg["sslmode"], json!("require"), "{cfg}");
    let hash = children::sha256_hex(text.as_bytes());

    // The landing claim is labelled but not owned: it outlives the pipeline
    // (landingZone.deleteClaim is false by default).
    assert_eq!(
        c.landing.metadata.labels.as_ref(),
        Some(&expected_labels("landing"))
    );
    assert_eq!(c.landing.metadata.owner_references, None);
    let pvc = c.landing.spec.as_ref().expect("pvc spec");
    assert_eq!(pvc.access_modes, Some(vec!["ReadWriteOnce".to_string()]));
    assert_eq!(
        pvc.resources
            .as_ref()
            .and_then(|r| r.requests.as_ref())
            .and_then(|r| r.get("storage"))
            .map(|q| q.0.as_str()),
        Some("10Gi")
    );

    check_owned("Service", &c.service.metadata, "metrics", &ipl);
    let svc = c.service.spec.as_ref().expect("service spec");
    assert_eq!(svc.cluster_ip.as_deref(), Some("None"), "headless");
    assert_eq!(svc.publish_not_ready_addresses, Some(true));
    let port = &svc.ports.as_deref().unwrap_or_default()[0];
    assert_eq!((port.name.as_deref(), port.port), (Some("metrics"), 9100));
    assert_eq!(
        svc.selector
            .as_ref()
            .and_then(|s| s.get("app.kubernetes.io/component")),
        Some(&"worker".to_string())
    );

    check_owned("Deployment", &c.generator.metadata, "generator", &ipl);
    let d = &c.generator.spec;
    assert_eq!(d.replicas, Some(1));
    assert_eq!(
        d.strategy.as_ref().and_then(|s| s.type_.as_deref()),
        Some("Recreate")
    );
    assert_eq!(
        deploy_template_annotation(&c.generator, CONFIG_HASH_ANNOTATION),
        Some(hash.clone()),
        "generator config hash = sha256 of the ConfigMap's pipeline.json"
    );
    let gpod = d.template.spec.as_ref().expect("generator pod spec");
    check_pod(
        "generator",
        gpod,
        "generator",
        9102,
        &[
            ("landing", "/data/landing"),
            ("config", "/etc/sluice"),
            ("tmp", "/tmp"),
        ],
    );
    // ReadWriteOnce landing zone → every pod pinned next to the others.
    assert!(
        gpod.affinity
            .as_ref()
            .and_then(|a| a.pod_affinity.as_ref())
            .is_some(),
        "RWO landing: generator pod affinity"
    );

    check_owned("StatefulSet", &c.worker.metadata, "worker", &ipl);
    let s = &c.worker.spec;
    assert_eq!(s.replicas, Some(2));
    assert_eq!(s.service_name.as_deref(), Some("shop-worker"));
    assert_eq!(s.pod_management_policy.as_deref(), Some("Parallel"));
    assert_eq!(
        sts_template_annotation(&c.worker, CONFIG_HASH_ANNOTATION),
        Some(hash.clone()),
        "worker config hash"
    );
    assert_eq!(
        sts_template_annotation(&c.worker, CREDENTIALS_ANNOTATION),
        secret.metadata.resource_version.clone(),
        "worker credentials-version = the Secret's resourceVersion"
    );
    let wpod = s.template.spec.as_ref().expect("worker pod spec");
    check_pod(
        "worker",
        wpod,
        "worker",
        9100,
        &[
            ("landing", "/data/landing"),
            ("checkpoint", "/data/checkpoint"),
            ("config", "/etc/sluice"),
            ("tmp", "/tmp"),
        ],
    );
    let env = wpod.containers[0].env.as_deref().unwrap_or_default();
    let worker_id = env
        .iter()
        .find(|e| e.name == "SLUICE_WORKER_ID")
        .and_then(|e| e.value_from.as_ref())
        .and_then(|v| v.field_ref.as_ref())
        .map(|f| f.field_path.as_str());
    assert_eq!(worker_id, Some("metadata.name"));
    // Credentials are a mounted file, not an environment variable. The example Secret
    // has separate keys (CloudNativePG's layout): the password is a file.
    let password = env
        .iter()
        .find(|e| e.name == "PGPASSWORD_FILE")
        .and_then(|e| e.value.as_deref());
    assert_eq!(password, Some("/etc/sluice-postgres/password"));
    let host = env
        .iter()
        .find(|e| e.name == "PGHOST")
        .and_then(|e| e.value_from.as_ref())
        .and_then(|v| v.secret_key_ref.as_ref())
        .map(|s| (s.name.as_str(), s.key.as_str()));
    assert_eq!(host, Some((SECRET, "host")));
    assert!(
        !env.iter()
            .any(|e| e.name == "DATABASE_URL" || e.name == "PGPASSWORD")
    );
    let credentials = wpod
        .volumes
        .as_deref()
        .unwrap_or_default()
        .iter()
        .find(|v| v.name == "postgres")
        .and_then(|v| v.secret.as_ref())
        .and_then(|s| s.secret_name.as_deref());
    assert_eq!(credentials, Some(SECRET));
    let templates = s.volume_claim_templates.as_deref().unwrap_or_default();
    assert_eq!(templates.len(), 1);
    assert_eq!(templates[0].metadata.name.as_deref(), Some("checkpoint"));

    // The real StatefulSet and Deployment controllers accepted the templates.
    let workers = wait_pods(&op, "worker", 2).await?;
    let mut names: Vec<String> = workers.iter().map(|p| p.name_any()).collect();
    names.sort();
    assert_eq!(names, ["shop-worker-0", "shop-worker-1"]);
    wait_pods(&op, "generator", 1).await?;
    for i in 0..2 {
        wait_exists::<PersistentVolumeClaim>(
            &op.api(),
            &format!("checkpoint-shop-worker-{i}"),
            CONVERGE,
        )
        .await?;
    }

    let status = op
        .wait_status("status written", CONVERGE, |ipl| ipl.status.is_some())
        .await?;
    assert_eq!(status.status.as_ref().map(|s| s.workers_desired), Some(2));

    // The operator's own metrics.
    assert!(
        op.metrics.reconciliations.get() > 0,
        "reconciliations counted"
    );
    assert!(
        op.metrics.duration.get_sample_count() > 0,
        "durations observed"
    );
    assert_eq!(op.metrics.leader.get(), 1, "leader gauge (no election)");
    assert!(op.health.is_ready(), "ready once the API answers");
    op.shutdown().await
}

/// A deleted Deployment and ConfigMap come back (new objects); a hand edit of a field
/// the operator owns is reverted.
#[tokio::test]
async fn deleted_or_edited_children_are_restored() -> Result<()> {
    let Some(op) = Operator::start("op-heal").await? else {
        return Ok(());
    };
    op.create_secret().await?;
    let ipl = op.create_pipeline(&pipeline(json!({}))).await?;
    let c = op.wait_children().await?;
    let old_deploy = c.generator.uid().context("deployment uid")?;
    let old_cm = c.config_map.uid().context("configmap uid")?;

    let dp = DeleteParams::default();
    op.api::<Deployment>()
        .delete("shop-generator", &dp)
        .await
        .context("deleting the generator Deployment")?;
    op.api::<ConfigMap>()
        .delete("shop-config", &dp)
        .await
        .context("deleting the ConfigMap")?;

    let d = wait_for(
        &op.api::<Deployment>(),
        "shop-generator",
        "the generator Deployment recreated",
        CONVERGE,
        |d| d.uid().as_deref() != Some(old_deploy.as_str()),
    )
    .await?;
    check_owned("Deployment", &d.metadata, "generator", &ipl);
    assert_eq!(deployment_replicas(&d), Some(1));
    let cm = wait_for(
        &op.api::<ConfigMap>(),
        "shop-config",
        "the ConfigMap recreated",
        CONVERGE,
        |cm| cm.uid().as_deref() != Some(old_cm.as_str()),
    )
    .await?;
    check_owned("ConfigMap", &cm.metadata, "config", &ipl);
    let (text, _) = config_json(&cm)?;
    assert_eq!(
        deploy_template_annotation(&d, CONFIG_HASH_ANNOTATION),
        Some(children::sha256_hex(text.as_bytes()))
    );

    // A hand edit (another field manager) of the worker replicas is reverted.
    op.api::<StatefulSet>()
        .patch(
            "shop-worker",
            &PatchParams::default(),
            &Patch::Merge(json!({ "spec": { "replicas": 5 } })),
        )
        .await
        .context("hand-editing the StatefulSet")?;
    wait_for(
        &op.api::<StatefulSet>(),
        "shop-worker",
        "the hand-edited replicas reverted to 2",
        CONVERGE,
        |s| worker_replicas(s) == Some(2) && s.metadata.generation > Some(1),
    )
    .await?;
    op.shutdown().await
}

/// Replicas 2 → 3 (config hash unchanged), then batch.maxFiles 256 → 64 (ConfigMap and
/// hash on both pod templates change); status follows the new generation.
#[tokio::test]
async fn spec_changes_converge() -> Result<()> {
    let Some(op) = Operator::start("op-change").await? else {
        return Ok(());
    };
    op.create_secret().await?;
    op.create_pipeline(&pipeline(json!({}))).await?;
    let c = op.wait_children().await?;
    let (_, cfg) = config_json(&c.config_map)?;
    assert_eq!(cfg["worker"]["batch"]["maxFiles"], json!(256), "default");
    let hash0 = sts_template_annotation(&c.worker, CONFIG_HASH_ANNOTATION)
        .context("initial config hash")?;

    let patched = op
        .patch_spec(json!({ "worker": { "replicas": 3 } }))
        .await?;
    let sts = wait_for(
        &op.api::<StatefulSet>(),
        "shop-worker",
        "StatefulSet replicas 3",
        CONVERGE,
        |s| worker_replicas(s) == Some(3),
    )
    .await?;
    assert_eq!(
        sts_template_annotation(&sts, CONFIG_HASH_ANNOTATION).as_deref(),
        Some(hash0.as_str()),
        "replicas are not config: the hash stays"
    );
    let ipl = op
        .wait_status("workersDesired 3", CONVERGE, |ipl| {
            ipl.status.as_ref().is_some_and(|s| s.workers_desired == 3)
        })
        .await?;
    assert!(ipl.metadata.generation >= patched.metadata.generation);
    wait_pods(&op, "worker", 3).await?;

    op.patch_spec(json!({ "worker": { "batch": { "maxFiles": 64 } } }))
        .await?;
    let cm = wait_for(
        &op.api::<ConfigMap>(),
        "shop-config",
        "ConfigMap with maxFiles 64",
        CONVERGE,
        |cm| config_json(cm).is_ok_and(|(_, v)| v["worker"]["batch"]["maxFiles"] == json!(64)),
    )
    .await?;
    let (text, _) = config_json(&cm)?;
    let hash1 = children::sha256_hex(text.as_bytes());
    assert_ne!(hash1, hash0, "a config change changes the hash");
    let sts = wait_for(
        &op.api::<StatefulSet>(),
        "shop-worker",
        "worker template carries the new hash",
        CONVERGE,
        |s| sts_template_annotation(s, CONFIG_HASH_ANNOTATION).as_deref() == Some(&*hash1),
    )
    .await?;
    assert_eq!(worker_replicas(&sts), Some(3));
    wait_for(
        &op.api::<Deployment>(),
        "shop-generator",
        "generator template carries the new hash",
        CONVERGE,
        |d| deploy_template_annotation(d, CONFIG_HASH_ANNOTATION).as_deref() == Some(&*hash1),
    )
    .await?;
    let ipl = op
        .wait_status("status of the latest generation", CONVERGE, |_| true)
        .await?;
    assert_eq!(ipl.status.as_ref().map(|s| s.workers_desired), Some(3));
    op.shutdown().await
}

/// Hardening, probes and mounts of a container and its pod.
fn check_pod(kind: &str, pod: &PodSpec, container: &str, port: i32, mounts: &[(&str, &str)]) {
    assert_eq!(
        pod.service_account_name.as_deref(),
        Some("shop-sluice"),
        "{kind} service account"
    );
    assert_eq!(
        pod.automount_service_account_token,
        Some(false),
        "{kind} token"
    );
    let psc = pod.security_context.as_ref().expect("pod securityContext");
    assert_eq!(psc.run_as_non_root, Some(true), "{kind} runAsNonRoot");
    assert_eq!(psc.run_as_user, Some(65532), "{kind} runAsUser");
    assert_eq!(psc.fs_group, Some(65532), "{kind} fsGroup");
    assert_eq!(
        psc.seccomp_profile.as_ref().map(|s| s.type_.as_str()),
        Some("RuntimeDefault"),
        "{kind} pod seccomp"
    );
    assert_eq!(pod.containers.len(), 1, "{kind} containers");
    let c: &Container = &pod.containers[0];
    assert_eq!(c.name, container);
    let sc = c
        .security_context
        .as_ref()
        .expect("container securityContext");
    assert_eq!(
        sc.read_only_root_filesystem,
        Some(true),
        "{kind} readOnlyRootFilesystem"
    );
    assert_eq!(
        sc.allow_privilege_escalation,
        Some(false),
        "{kind} privilege escalation"
    );
    assert_eq!(
        sc.run_as_non_root,
        Some(true),
        "{kind} container runAsNonRoot"
    );
    assert_eq!(
        sc.capabilities.as_ref().and_then(|c| c.drop.clone()),
        Some(vec!["ALL".to_string()]),
        "{kind} capabilities drop"
    );
    assert_eq!(
        sc.seccomp_profile.as_ref().map(|s| s.type_.as_str()),
        Some("RuntimeDefault"),
        "{kind} container seccomp"
    );
    let ports = c.ports.as_deref().unwrap_or_default();
    assert!(
        ports
            .iter()
            .any(|p| p.name.as_deref() == Some("metrics") && p.container_port == port),
        "{kind} metrics port {port}: {ports:?}"
    );
    for (probe, path) in [
        (c.liveness_probe.as_ref(), "/healthz"),
        (c.readiness_probe.as_ref(), "/readyz"),
    ] {
        let get = probe
            .and_then(|p| p.http_get.as_ref())
            .unwrap_or_else(|| panic!("{kind}: an HTTP probe on {path}"));
        assert_eq!(get.path.as_deref(), Some(path), "{kind} probe path");
        assert_eq!(
            serde_json::to_value(&get.port).ok(),
            Some(json!("metrics")),
            "{kind} probe port"
        );
    }
    let res = c.resources.as_ref().expect("resources");
    for (what, m) in [("requests", &res.requests), ("limits", &res.limits)] {
        let m = m.as_ref().unwrap_or_else(|| panic!("{kind} {what}"));
        assert!(
            m.contains_key("cpu") && m.contains_key("memory"),
            "{kind} {what}: {m:?}"
        );
    }
    let have = c.volume_mounts.as_deref().unwrap_or_default();
    for (volume, path) in mounts {
        assert!(
            have.iter()
                .any(|m| m.name == *volume && m.mount_path == *path),
            "{kind}: volume {volume} mounted at {path}: {have:?}"
        );
    }
    let volumes = pod.volumes.as_deref().unwrap_or_default();
    let landing = volumes
        .iter()
        .find(|v| v.name == "landing")
        .and_then(|v| v.persistent_volume_claim.as_ref())
        .map(|c| c.claim_name.as_str());
    assert_eq!(landing, Some("shop-landing"), "{kind} landing volume");
    let config = volumes
        .iter()
        .find(|v| v.name == "config")
        .and_then(|v| v.config_map.as_ref())
        .map(|c| c.name.as_str());
    assert_eq!(config, Some("shop-config"), "{kind} config volume");
    assert!(
        volumes
            .iter()
            .any(|v| v.name == "tmp" && v.empty_dir.is_some()),
        "{kind} tmp emptyDir"
    );
}
