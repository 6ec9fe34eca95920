//! Credentials: the Secret (missing, then created), TLS following the Secret's CA, and a
//! CloudNativePG Cluster used by name.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context as _, Result};
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::ResourceExt as _;
use kube::api::{Api, DynamicObject, Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use sluice_operator::IngestPipeline;
use sluice_operator::children::{self, CREDENTIALS_ANNOTATION};

use crate::fixtures::*;
use crate::harness::*;

/// No Secret → Degraded SecretNotFound naming it (children still created, credentials
/// "absent"); the Secret appears → Degraded clears and the workers' credentials
/// annotation follows.
#[tokio::test]
async fn missing_secret_is_degraded_until_created() -> Result<()> {
    let Some(op) = Operator::start("op-secret").await? else {
        return Ok(());
    };
    op.create_pipeline(&pipeline(json!({}))).await?;
    let ipl = op
        .wait_status("Degraded SecretNotFound", CONVERGE, |ipl| {
            cond_is(ipl, "Degraded", "True", "SecretNotFound")
        })
        .await?;
    let degraded = condition(&ipl, "Degraded").expect("Degraded");
    assert!(
        degraded
            .message
            .starts_with("Secret pg-credentials not found in namespace op-secret"),
        "{}",
        degraded.message
    );
    assert!(
        degraded.message.contains("uri"),
        "says how to fix: {}",
        degraded.message
    );
    assert!(cond_is(&ipl, "Ready", "False", "SecretNotFound"));
    let c = op.wait_children().await?;
    assert_eq!(
        sts_template_annotation(&c.worker, CREDENTIALS_ANNOTATION).as_deref(),
        Some("absent")
    );
    let warnings = op.events("SecretNotFound").await?;
    assert!(
        warnings
            .iter()
            .any(|e| e.type_.as_deref() == Some("Warning")),
        "a Warning Event SecretNotFound: {warnings:?}"
    );

    let secret = op.create_secret().await?;
    // Secrets are not watched: re-checked every 10 s.
    let ipl = op
        .wait_status("Degraded cleared", CONVERGE, |ipl| {
            cond_is(ipl, "Degraded", "False", "AsExpected")
        })
        .await?;
    assert!(!cond_is(&ipl, "Ready", "False", "SecretNotFound"));
    wait_for(
        &op.api::<StatefulSet>(),
        "shop-worker",
        "credentials-version annotation = the Secret's resourceVersion",
        CONVERGE,
        |sts| {
            sts_template_annotation(sts, CREDENTIALS_ANNOTATION) == secret.metadata.resource_version
        },
    )
    .await?;
    op.wait_events("Recovered", Duration::from_secs(10)).await?;
    op.shutdown().await
}

/// The pipeline's config in its ConfigMap, parsed.
async fn current_config(op: &Operator) -> Result<Value> {
    let cm = op
        .api::<ConfigMap>()
        .get(&children::config_map_name(NAME))
        .await
        .context("reading the ConfigMap")?;
    Ok(config_json(&cm)?.1)
}

/// TLS by default: an unset sslmode is require without ca.crt in the Secret and
/// verify-full (with PGSSLROOTCERT) once the Secret holds it; an explicit disable is
/// kept and said in the Ready condition's message.
#[tokio::test]
async fn the_default_sslmode_follows_the_secrets_ca() -> Result<()> {
    let Some(op) = Operator::start("op-tls").await? else {
        return Ok(());
    };
    op.create_secret().await?;
    op.create_pipeline(&pipeline(json!({}))).await?;
    op.wait_children().await?;
    let cm_api = op.api::<ConfigMap>();
    let cm = children::config_map_name(NAME);
    let sslmode_is = |mode: &'static str| {
        move |c: &ConfigMap| config_json(c).is_ok_and(|(_, cfg)| cfg["sslmode"] == json!(mode))
    };
    wait_for(
        &cm_api,
        &cm,
        "sslmode require",
        CONVERGE,
        sslmode_is("require"),
    )
    .await?;
    let root_cert = |sts: &StatefulSet| {
        sts.spec.template.spec.as_ref().and_then(|p| {
            p.containers[0]
                .env
                .iter()
                .flatten()
                .find(|e| e.name == "PGSSLROOTCERT")
                .and_then(|e| e.value.clone())
        })
    };
    let sts = op
        .api::<StatefulSet>()
        .get(&children::worker_name(NAME))
        .await?;
    assert_eq!(root_cert(&sts), None);
    let ipl = op
        .wait_status("a status", CONVERGE, |ipl| {
            condition(ipl, "Ready").is_some()
        })
        .await?;
    let ready = condition(&ipl, "Ready").expect("Ready");
    assert!(!ready.message.contains("sslmode"), "{}", ready.message);

    // Secrets are not watched: the CA is seen at the next check (every 10 s).
    op.api::<Secret>()
        .patch(
            SECRET,
            &PatchParams::default(),
            &Patch::Merge(json!({ "stringData": { "ca.crt": "-----BEGIN CERTIFICATE-----\n" } })),
        )
        .await
        .context("adding ca.crt")?;
    wait_for(
        &cm_api,
        &cm,
        "sslmode verify-full",
        CONVERGE,
        sslmode_is("verify-full"),
    )
    .await?;
    wait_for(
        &op.api::<StatefulSet>(),
        &children::worker_name(NAME),
        "PGSSLROOTCERT on the workers",
        CONVERGE,
        |sts| root_cert(sts).as_deref() == Some("/etc/sluice-postgres/ca.crt"),
    )
    .await?;

    op.patch_spec(json!({ "postgres": { "sslmode": "disable" } }))
        .await?;
    wait_for(
        &cm_api,
        &cm,
        "sslmode disable",
        CONVERGE,
        sslmode_is("disable"),
    )
    .await?;
    let ipl = op
        .wait_status("Ready message about sslmode disable", CONVERGE, |ipl| {
            condition(ipl, "Ready").is_some_and(|c| c.message.contains("sslmode disable"))
        })
        .await?;
    assert!(
        cond_is(&ipl, "Degraded", "False", "AsExpected"),
        "a weak sslmode is not a problem: {:?}",
        ipl.status
    );
    assert_eq!(current_config(&op).await?["sslmode"], json!("disable"));
    op.shutdown().await
}

/// spec.postgres.cloudNativePG: a missing Cluster, then a missing app Secret, are the
/// Degraded reason naming them; with the Cluster and its Secrets (no CloudNativePG
/// operator: the objects are created here) the workers connect to `<cluster>-rw` with
/// the `-app` Secret's files and verify against the `-ca` Secret's ca.crt.
#[tokio::test]
async fn a_cloudnativepg_cluster_is_used_by_name() -> Result<()> {
    let Some(op) = Operator::start("op-cnpg").await? else {
        return Ok(());
    };
    install_foreign_crd(&op.client, "postgresql.cnpg.io", "Cluster", "clusters").await?;
    op.create_pipeline(&IngestPipeline::new(
        NAME,
        serde_json::from_value(json!({ "postgres": { "cloudNativePG": { "cluster": "pg" } } }))?,
    ))
    .await?;
    let ipl = op
        .wait_status("Degraded PostgresClusterNotFound", CONVERGE, |ipl| {
            cond_is(ipl, "Degraded", "True", "PostgresClusterNotFound")
        })
        .await?;
    let msg = condition(&ipl, "Degraded")
        .map(|c| c.message.clone())
        .unwrap_or_default();
    assert!(
        msg.contains("Cluster pg ") && msg.contains("op-cnpg"),
        "{msg}"
    );

    let clusters: Api<DynamicObject> = Api::namespaced_with(
        op.client.clone(),
        &op.ns,
        &sluice_operator::credentials::cluster_resource(),
    );
    let cluster = DynamicObject::new("pg", &sluice_operator::credentials::cluster_resource())
        .data(json!({ "spec": { "instances": 1, "storage": { "size": "1Gi" } } }));
    clusters
        .create(&PostParams::default(), &cluster)
        .await
        .context("creating the Cluster")?;
    let ipl = op
        .wait_status("Degraded SecretNotFound pg-app", CONVERGE, |ipl| {
            condition(ipl, "Degraded").is_some_and(|c| {
                c.reason == "SecretNotFound" && c.message.starts_with("Secret pg-app ")
            })
        })
        .await?;
    assert!(cond_is(&ipl, "Ready", "False", "SecretNotFound"));

    // What CloudNativePG would create (the app Secret's keys as it writes them).
    let secret = |name: &str, data: Value| -> Result<Secret> {
        Ok(serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": { "name": name }, "stringData": data,
        }))?)
    };
    let secrets = op.api::<Secret>();
    let app = secrets
        .create(
            &PostParams::default(),
            &secret(
                "pg-app",
                json!({
                    "username": "app", "user": "app", "password": "s3cret", "dbname": "app",
                    "host": "pg-rw", "port": "5432",
                    "uri": "postgresql://app:s3cret@pg-rw.op-cnpg:5432/app",
                }),
            )?,
        )
        .await?;
    let ca = secrets
        .create(
            &PostParams::default(),
            &secret(
                "pg-ca",
                json!({
            "ca.crt": "-----BEGIN CERTIFICATE-----", "ca.key": "private" }),
            )?,
        )
        .await?;
    op.wait_status("Degraded cleared", CONVERGE, |ipl| {
        cond_is(ipl, "Degraded", "False", "AsExpected")
    })
    .await?;
    let expected_version = format!(
        "{}/{}",
        app.resource_version().unwrap_or_default(),
        ca.resource_version().unwrap_or_default()
    );
    let sts = wait_for(
        &op.api::<StatefulSet>(),
        "shop-worker",
        "credentials-version = the app and CA Secrets' resourceVersions",
        CONVERGE,
        |sts| {
            sts_template_annotation(sts, CREDENTIALS_ANNOTATION).as_deref()
                == Some(&expected_version)
        },
    )
    .await?;
    let pod = sts.spec.template.spec.clone().context("pod spec")?;
    let env: BTreeMap<String, String> = pod.containers[0]
        .env
        .iter()
        .flatten()
        .filter_map(|e| Some((e.name.clone(), e.value.clone()?)))
        .collect();
    assert_eq!(
        env.get("PGHOST").map(String::as_str),
        Some("pg-rw.op-cnpg.svc"),
        "{env:?}"
    );
    assert_eq!(env.get("PGPORT").map(String::as_str), Some("5432"));
    for (var, file) in [
        ("PGUSER_FILE", "username"),
        ("PGDATABASE_FILE", "dbname"),
        ("PGPASSWORD_FILE", "password"),
        ("PGSSLROOTCERT", "ca.crt"),
    ] {
        assert_eq!(
            env.get(var),
            Some(&format!("/etc/sluice-postgres/{file}")),
            "{var}"
        );
    }
    let vol = pod
        .volumes
        .iter()
        .flatten()
        .find(|v| v.name == "postgres")
        .and_then(|v| v.projected.clone())
        .context("a projected credentials volume")?;
    let sources: Vec<(String, Vec<String>)> = vol
        .sources
        .iter()
        .flatten()
        .filter_map(|s| s.secret.as_ref())
        .map(|s| {
            (
                s.name.clone(),
                s.items.iter().flatten().map(|i| i.key.clone()).collect(),
            )
        })
        .collect();
    assert_eq!(
        sources,
        [
            (
                "pg-app".to_string(),
                vec!["username".into(), "password".into(), "dbname".into()]
            ),
            ("pg-ca".to_string(), vec!["ca.crt".to_string()]),
        ],
        "the CA's private key is never mounted"
    );
    // An unset sslmode with CloudNativePG is verify-full (its CA is always there).
    let (_, cfg) = config_json(
        &op.api::<ConfigMap>()
            .get(&children::config_map_name(NAME))
            .await?,
    )?;
    assert_eq!(cfg["sslmode"], json!("verify-full"), "{cfg}");
    op.shutdown().await
}
