//! The spec: what the API server's schema refuses, and what the operator's own checks
//! refuse (Degraded InvalidSpec, nothing rolled out).

use anyhow::{Context as _, Result};
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use kube::api::{Api, ApiResource, DynamicObject, PostParams};
use serde_json::{Value, json};
use sluice_operator::children;
use sluice_operator::{IngestPipeline, Scope, Settings};

use crate::fixtures::*;
use crate::harness::*;

/// The API server's schema rejects bad values with a message naming the field; the
/// smallest valid resource is accepted and defaulted. A schema-valid spec the operator's
/// own checks refuse gives Degraded InvalidSpec and no children.
#[tokio::test]
async fn invalid_resources_are_rejected_by_the_schema() -> Result<()> {
    let Some(op) = Operator::start("op-schema").await? else {
        return Ok(());
    };
    let resource = ApiResource::erase::<IngestPipeline>(&());
    let api: Api<DynamicObject> = Api::namespaced_with(op.client.clone(), &op.ns, &resource);
    let object =
        |name: &str, spec: Value| DynamicObject::new(name, &resource).data(json!({ "spec": spec }));
    let secret_ref = json!({ "secretRef": { "name": SECRET } });
    let cases: Vec<(&str, Value, &[&str])> = vec![
        (
            "bad-row-share",
            json!({ "postgres": secret_ref, "generator": { "badRowShare": 1.5 } }),
            &["spec.generator.badRowShare", "less than or equal to 1"],
        ),
        (
            "sslmode",
            json!({ "postgres": { "secretRef": { "name": SECRET }, "sslmode": "bogus" } }),
            &["spec.postgres.sslmode", "Unsupported value: \"bogus\""],
        ),
        (
            "replicas-zero",
            json!({ "postgres": secret_ref, "worker": { "replicas": 0 } }),
            &["spec.worker.replicas", "greater than or equal to 1"],
        ),
        (
            "replicas-high",
            json!({ "postgres": secret_ref, "worker": { "replicas": 65 } }),
            &["spec.worker.replicas", "less than or equal to 64"],
        ),
        (
            "no-secret-ref",
            json!({ "postgres": { "sslmode": "require" } }),
            &["spec.postgres", "oneOf"],
        ),
        (
            "secret-ref-and-cnpg",
            json!({ "postgres": { "secretRef": { "name": SECRET },
                                  "cloudNativePG": { "cluster": "pg" } } }),
            &["spec.postgres", "oneOf"],
        ),
        (
            "no-postgres",
            json!({ "worker": { "replicas": 1 } }),
            &["spec.postgres", "Required value"],
        ),
        (
            "secret-name",
            json!({ "postgres": { "secretRef": { "name": "Not_A_Name" } } }),
            &["spec.postgres.secretRef.name"],
        ),
        (
            "after-commit",
            json!({ "postgres": secret_ref, "worker": { "afterCommit": "shred" } }),
            &["spec.worker.afterCommit", "Unsupported value"],
        ),
        (
            "max-files",
            json!({ "postgres": secret_ref, "worker": { "batch": { "maxFiles": 0 } } }),
            &["spec.worker.batch.maxFiles", "greater than or equal to 1"],
        ),
        (
            "replicas-type",
            json!({ "postgres": secret_ref, "worker": { "replicas": "two" } }),
            &["spec.worker.replicas", "integer"],
        ),
    ];
    let mut failures = Vec::new();
    for (name, spec, needles) in cases {
        match api
            .create(&PostParams::default(), &object(name, spec))
            .await
        {
            Ok(_) => failures.push(format!("{name}: accepted")),
            Err(kube::Error::Api(s)) => {
                if s.code != 422 || !needles.iter().all(|n| s.message.contains(n)) {
                    failures.push(format!(
                        "{name}: code {} message {:?}, expected it to contain {needles:?}",
                        s.code, s.message
                    ));
                }
            }
            Err(e) => failures.push(format!("{name}: {e}")),
        }
    }
    assert!(
        failures.is_empty(),
        "schema checks:\n{}",
        failures.join("\n")
    );

    // The smallest valid resource is accepted, and the API server fills in the defaults.
    let dry = PostParams {
        dry_run: true,
        ..PostParams::default()
    };
    let minimal = api
        .create(&dry, &object("minimal", json!({ "postgres": secret_ref })))
        .await
        .context("the minimal resource is accepted")?;
    let spec = &minimal.data["spec"];
    assert_eq!(spec["worker"]["replicas"], json!(2), "{spec}");
    assert_eq!(spec["worker"]["batch"]["maxFiles"], json!(256), "{spec}");
    assert_eq!(spec["worker"]["afterCommit"], json!("archive"), "{spec}");
    assert_eq!(spec["generator"]["enabled"], json!(true), "{spec}");
    // No default: unset means verify-full or require, after the Secret's ca.crt.
    assert_eq!(spec["postgres"].get("sslmode"), None, "{spec}");
    assert_eq!(
        spec["landingZone"]["accessMode"],
        json!("ReadWriteMany"),
        "{spec}"
    );
    assert_eq!(spec["suspend"], json!(false), "{spec}");

    // Schema-valid, refused by the operator's checks: Degraded InvalidSpec, nothing applied.
    op.create_pipeline(&pipeline(json!({
        "postgres": { "tables": { "events": "rows", "quarantine": "rows" } }
    })))
    .await?;
    let ipl = op
        .wait_status("Degraded InvalidSpec", CONVERGE, |ipl| {
            cond_is(ipl, "Degraded", "True", "InvalidSpec")
        })
        .await?;
    let message = condition(&ipl, "Degraded").map(|c| c.message.clone());
    assert!(
        message
            .as_deref()
            .is_some_and(|m| m.contains("spec.postgres.tables")),
        "{message:?}"
    );
    assert!(cond_is(&ipl, "Progressing", "False", "InvalidSpec"));
    assert!(
        op.api::<StatefulSet>()
            .get_opt("shop-worker")
            .await?
            .is_none(),
        "no children for an invalid spec"
    );
    op.shutdown().await
}

/// `--allowed-image-prefixes`: a pipeline with an image outside the allowed prefixes is
/// Degraded InvalidSpec naming the image and the prefixes, and nothing is rolled out;
/// moving it to an allowed image rolls it out.
#[tokio::test]
async fn images_outside_the_allowed_prefixes_are_refused() -> Result<()> {
    let settings = Settings {
        images: sluice_operator::images::ImagePolicy::new(["registry.test/sluice/"]),
        ..Default::default()
    };
    let ns = "op-images";
    let Some(op) = Operator::start_with(ns, Scope::Namespace(ns.into()), settings).await? else {
        return Ok(());
    };
    op.create_secret().await?;
    op.create_pipeline(&pipeline(json!({ "images": {
        "worker": "registry.test/sluice/sluice-worker:1",
        "generator": "registry.test/sluice-evil/sluice-generator:1",
    } })))
    .await?;
    let ipl = op
        .wait_status("Degraded InvalidSpec", CONVERGE, |ipl| {
            cond_is(ipl, "Degraded", "True", "InvalidSpec")
        })
        .await?;
    let message = condition(&ipl, "Degraded")
        .map(|c| c.message.clone())
        .unwrap_or_default();
    for part in [
        "spec.images.generator",
        "registry.test/sluice-evil/sluice-generator:1",
        "registry.test/sluice/",
    ] {
        assert!(message.contains(part), "{part:?} not in {message:?}");
    }
    for name in [children::worker_name(NAME), children::generator_name(NAME)] {
        assert!(
            op.api::<StatefulSet>().get_opt(&name).await?.is_none()
                && op.api::<Deployment>().get_opt(&name).await?.is_none(),
            "nothing rolled out for a refused image ({name})"
        );
    }

    op.patch_spec(json!({ "images": {
        "generator": "registry.test/sluice/sluice-generator:1",
    } }))
    .await?;
    let sts = wait_exists(
        &op.api::<StatefulSet>(),
        &children::worker_name(NAME),
        CONVERGE,
    )
    .await?;
    let image = sts
        .spec
        .template
        .spec
        .and_then(|p| p.containers.into_iter().next())
        .and_then(|c| c.image);
    assert_eq!(
        image.as_deref(),
        Some("registry.test/sluice/sluice-worker:1")
    );
    op.wait_status("not InvalidSpec", CONVERGE, |ipl| {
        !cond_is(ipl, "Degraded", "True", "InvalidSpec")
    })
    .await?;
    op.shutdown().await
}

/// spec.schema: a declared table reaches the workers' config as written; a schema the
/// operator's checks refuse is Degraded InvalidSpec naming the column and the fix; the
/// API server's schema refuses an unknown column type.
#[tokio::test]
async fn declared_schemas_reach_the_workers_or_are_refused_by_name() -> Result<()> {
    let Some(op) = Operator::start("op-declared").await? else {
        return Ok(());
    };
    op.create_secret().await?;
    let columns = json!([
        {"name": "id", "type": "uuid"},
        {"name": "celsius", "type": "numeric", "precision": 5, "scale": 1, "clean": ["trim"]}
    ]);
    op.create_pipeline(&pipeline(json!({
        "schema": { "table": "Sensor Readings", "columns": columns }
    })))
    .await?;
    let c = op.wait_children().await?;
    let (_, cfg) = config_json(&c.config_map)?;
    assert_eq!(cfg["schema"]["table"], json!("Sensor Readings"), "{cfg}");
    assert_eq!(cfg["schema"]["columns"][1]["precision"], json!(5), "{cfg}");
    assert_eq!(
        cfg["schema"]["columns"][1]["clean"],
        json!(["trim"]),
        "{cfg}"
    );

    // numeric without a precision: only the operator's check can tell.
    op.patch_spec(json!({ "schema": { "columns": [
        {"name": "id", "type": "uuid"},
        {"name": "celsius", "type": "numeric"}
    ] } }))
    .await?;
    let ipl = op
        .wait_status("Degraded InvalidSpec for the schema", CONVERGE, |ipl| {
            cond_is(ipl, "Degraded", "True", "InvalidSpec")
        })
        .await?;
    let message = condition(&ipl, "Degraded")
        .map(|c| c.message.clone())
        .unwrap_or_default();
    assert!(
        message.contains("spec.schema")
            && message.contains("\"celsius\"")
            && message.contains("precision"),
        "{message}"
    );

    // An unknown type never gets past the API server.
    let refused = op
        .patch_spec(json!({ "schema": { "columns": [{"name": "id", "type": "money"}] } }))
        .await;
    let err = format!("{:#}", refused.expect_err("type money is refused"));
    assert!(err.contains("money") || err.contains("type"), "{err}");
    op.shutdown().await
}
