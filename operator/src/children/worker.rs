//! The worker StatefulSet: arguments, environment, credentials mount.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{StatefulSet, StatefulSetSpec};
use k8s_openapi::api::core::v1::{
    Container, EnvVar, EnvVarSource, ObjectFieldSelector, PodSpec, PodTemplateSpec,
    SecretVolumeSource, Volume,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::ResourceExt;
use sluice_core::config::SslMode;

use super::*;
use crate::crd::{IngestPipeline, default_worker_resources};

pub const WORKER_METRICS_PORT: i32 = 9100;

/// Where the credentials Secret is mounted as files (not under the read-only config
/// mount at /etc/sluice: a mount point cannot be created inside it).
pub const PG_CA_DIR: &str = "/etc/sluice-postgres";

/// Worker pod template annotation carrying the credentials Secret's resourceVersion
/// ("absent" while it does not exist): environment variables from a Secret are read only
/// at container start, so creating or changing the Secret rolls the workers.
pub const CREDENTIALS_ANNOTATION: &str = "sluice.dev/credentials-version";

/// The worker's command-line arguments (see `sluice-worker --help`).
pub fn worker_args() -> Vec<String> {
    vec![
        format!("--landing-dir={LANDING_DIR}"),
        format!("--checkpoint-dir={CHECKPOINT_DIR}"),
        format!("--config={CONFIG_DIR}/{CONFIG_FILE}"),
        format!("--metrics-addr=0.0.0.0:{WORKER_METRICS_PORT}"),
        "--log-format=json".into(),
    ]
}

/// The worker's environment: its id from the pod name, and the PostgreSQL connection.
/// What holds a password is read from the Secret mounted as files ([`PG_CA_DIR`]), never
/// passed in an environment variable: `uri` → DATABASE_URL_FILE, or, for the separate
/// keys, host/port/dbname/user as PG* variables and `password` → PGPASSWORD_FILE.
pub fn worker_env(ipl: &IngestPipeline, layout: SecretLayout, sslmode: SslMode) -> Vec<EnvVar> {
    let secret = ipl
        .spec
        .postgres
        .secret_ref
        .as_ref()
        .map_or("", |s| s.name.as_str());
    let mut env = vec![EnvVar {
        name: "SLUICE_WORKER_ID".into(),
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                field_path: "metadata.name".into(),
                api_version: Some("v1".into()),
            }),
            ..Default::default()
        }),
        ..Default::default()
    }];
    match (&ipl.spec.postgres.cloud_native_pg, layout) {
        (Some(cluster), _) => env.extend(cnpg_env(ipl, cluster, PG_CA_DIR)),
        (None, SecretLayout::Uri) => {
            env.push(env_value("DATABASE_URL_FILE", &format!("{PG_CA_DIR}/uri")))
        }
        (None, SecretLayout::Keys) => env.extend([
            env_secret("PGHOST", secret, "host"),
            env_secret("PGPORT", secret, "port"),
            env_secret("PGDATABASE", secret, "dbname"),
            env_secret("PGUSER", secret, "user"),
            env_value("PGPASSWORD_FILE", &format!("{PG_CA_DIR}/password")),
        ]),
    }
    if sslmode == SslMode::VerifyFull {
        env.push(env_value("PGSSLROOTCERT", &format!("{PG_CA_DIR}/ca.crt")));
    }
    env
}

pub fn worker(ipl: &IngestPipeline, config_hash: &str, inputs: &BuildInputs) -> StatefulSet {
    let name = ipl.name_any();
    let spec = &ipl.spec;
    let replicas = if spec.suspend {
        0
    } else {
        spec.worker.replicas
    };
    let mut mounts = vec![
        mount("landing", LANDING_DIR, false),
        mount(CHECKPOINT_TEMPLATE, CHECKPOINT_DIR, false),
        mount("config", CONFIG_DIR, true),
        mount("tmp", "/tmp", false),
    ];
    let mut volumes = vec![landing_volume(ipl), config_volume(ipl), tmp_volume()];
    // The credentials (and ca.crt) as files, readable by the pod's group only.
    mounts.push(mount("postgres", PG_CA_DIR, true));
    volumes.push(match &spec.postgres.cloud_native_pg {
        Some(cluster) => cnpg_volume(
            "postgres",
            cluster,
            inputs.sslmode(ipl) == SslMode::VerifyFull,
        ),
        None => Volume {
            name: "postgres".into(),
            secret: Some(SecretVolumeSource {
                secret_name: spec.postgres.secret_ref.as_ref().map(|s| s.name.clone()),
                default_mode: Some(0o440),
                ..Default::default()
            }),
            ..Default::default()
        },
    });
    let container = Container {
        name: "worker".into(),
        image: Some(spec.images.worker.clone()),
        image_pull_policy: Some(spec.images.pull_policy.as_str().into()),
        args: Some(worker_args()),
        env: Some(worker_env(ipl, inputs.secret_layout, inputs.sslmode(ipl))),
        ports: Some(vec![metrics_port(WORKER_METRICS_PORT)]),
        liveness_probe: Some(http_probe("/healthz", 10, 6, 5)),
        readiness_probe: Some(http_probe("/readyz", 5, 3, 2)),
        resources: Some(effective_resources(
            &spec.worker.resources,
            &default_worker_resources(),
        )),
        security_context: Some(container_security_context()),
        volume_mounts: Some(mounts),
        ..Default::default()
    };
    let annotations: BTreeMap<String, String> = [
        (CONFIG_HASH_ANNOTATION.to_string(), config_hash.to_string()),
        (
            CREDENTIALS_ANNOTATION.to_string(),
            inputs
                .secret_version
                .clone()
                .unwrap_or_else(|| "absent".into()),
        ),
    ]
    .into();
    // The batch in flight may finish (shutdownGraceSeconds) before SIGKILL.
    let grace = i64::try_from(spec.worker.config.shutdown_grace_seconds)
        .unwrap_or(i64::MAX / 2)
        .saturating_add(10);
    let mut obj = StatefulSet {
        metadata: meta(ipl, ipl.worker_name(), "worker"),
        spec: StatefulSetSpec {
            replicas: Some(replicas),
            service_name: Some(ipl.service_name()),
            // Workers are independent: start and stop them all at once.
            pod_management_policy: Some("Parallel".into()),
            selector: LabelSelector {
                match_labels: Some(selector_labels(&name, "worker")),
                ..Default::default()
            },
            template: PodTemplateSpec {
                metadata: template_meta(ipl, "worker", annotations),
                spec: Some(PodSpec {
                    service_account_name: Some(ipl.service_account_name()),
                    automount_service_account_token: Some(false),
                    security_context: Some(pod_security_context()),
                    affinity: affinity(ipl),
                    termination_grace_period_seconds: Some(grace),
                    containers: vec![container],
                    volumes: Some(volumes),
                    ..Default::default()
                }),
            },
            volume_claim_templates: Some(vec![checkpoint_claim_template(ipl)]),
            ..Default::default()
        },
        ..Default::default()
    };
    customise(&mut obj.spec.template, &worker_pod_template(ipl));
    obj
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::*;
    #[test]
    fn worker_volume_and_env_wiring() {
        let c = build(&sample(), &BuildInputs::default());
        let pod = pod_spec_of_worker(&c);
        let ctr = &pod.containers[0];
        let mounts: Vec<(&str, &str)> = ctr
            .volume_mounts
            .iter()
            .flatten()
            .map(|m| (m.name.as_str(), m.mount_path.as_str()))
            .collect();
        assert!(mounts.contains(&("landing", "/data/landing")));
        assert!(mounts.contains(&("checkpoint", "/data/checkpoint")));
        assert!(mounts.contains(&("config", "/etc/sluice")));
        assert!(mounts.contains(&("tmp", "/tmp")));
        // Every mount has a volume or a claim template.
        let vols: Vec<&str> = pod
            .volumes
            .iter()
            .flatten()
            .map(|v| v.name.as_str())
            .collect();
        for (m, _) in &mounts {
            assert!(vols.contains(m) || *m == "checkpoint", "no volume for {m}");
        }
        let landing = pod
            .volumes
            .iter()
            .flatten()
            .find(|v| v.name == "landing")
            .and_then(|v| v.persistent_volume_claim.as_ref())
            .expect("landing claim");
        assert_eq!(landing.claim_name, "shop-landing");
        let sts = &c.worker.spec;
        let vct = &sts.volume_claim_templates.as_ref().expect("vct")[0];
        assert_eq!(vct.metadata.name.as_deref(), Some("checkpoint"));
        assert_eq!(sts.replicas, Some(2));

        let args = ctr.args.clone().expect("args");
        assert!(args.contains(&"--landing-dir=/data/landing".to_string()));
        assert!(args.contains(&"--checkpoint-dir=/data/checkpoint".to_string()));
        assert!(args.contains(&"--config=/etc/sluice/pipeline.json".to_string()));
        assert!(args.contains(&"--metrics-addr=0.0.0.0:9100".to_string()));
        let env = ctr.env.as_ref().expect("env");
        let id = env
            .iter()
            .find(|e| e.name == "SLUICE_WORKER_ID")
            .expect("id");
        assert_eq!(
            id.value_from
                .as_ref()
                .and_then(|v| v.field_ref.as_ref())
                .map(|f| f.field_path.as_str()),
            Some("metadata.name")
        );
        let url = env
            .iter()
            .find(|e| e.name == "DATABASE_URL_FILE")
            .expect("url file");
        assert_eq!(url.value.as_deref(), Some("/etc/sluice-postgres/uri"));
        assert!(
            !env.iter()
                .any(|e| e.name == "DATABASE_URL" || e.name == "PGPASSWORD"),
            "no secret in an environment variable"
        );
        assert!(!env.iter().any(|e| e.name == "PGSSLROOTCERT"));
        let vol = pod
            .volumes
            .iter()
            .flatten()
            .find(|v| v.name == "postgres")
            .and_then(|v| v.secret.as_ref())
            .expect("credentials volume");
        assert_eq!(vol.secret_name.as_deref(), Some("pg-credentials"));
        assert_eq!(vol.default_mode, Some(0o440));
    }

    #[test]
    fn separate_keys_give_the_password_as_a_file() {
        let c = build(
            &sample(),
            &BuildInputs {
                secret_layout: SecretLayout::Keys,
                ..Default::default()
            },
        );
        let pod = pod_spec_of_worker(&c);
        let env = pod.containers[0].env.as_ref().expect("env");
        let find = |n: &str| env.iter().find(|e| e.name == n);
        assert_eq!(
            find("PGPASSWORD_FILE").and_then(|e| e.value.as_deref()),
            Some("/etc/sluice-postgres/password")
        );
        let host = find("PGHOST")
            .and_then(|e| e.value_from.as_ref())
            .and_then(|v| v.secret_key_ref.as_ref())
            .expect("host from the Secret");
        assert_eq!(
            (host.name.as_str(), host.key.as_str()),
            ("pg-credentials", "host")
        );
        assert!(find("PGPASSWORD").is_none() && find("DATABASE_URL_FILE").is_none());
    }

    #[test]
    fn verify_full_mounts_the_ca() {
        let mut ipl = sample();
        ipl.spec.postgres.sslmode = Some(SslMode::VerifyFull);
        let c = build(&ipl, &BuildInputs::default());
        let pod = pod_spec_of_worker(&c);
        let env = pod.containers[0].env.as_ref().expect("env");
        let ca = env
            .iter()
            .find(|e| e.name == "PGSSLROOTCERT")
            .expect("ca env");
        assert_eq!(ca.value.as_deref(), Some("/etc/sluice-postgres/ca.crt"));
        let vol = pod
            .volumes
            .iter()
            .flatten()
            .find(|v| v.name == "postgres")
            .and_then(|v| v.secret.as_ref())
            .expect("ca volume");
        assert_eq!(vol.secret_name.as_deref(), Some("pg-credentials"));
    }

    #[test]
    fn credentials_version_rolls_workers() {
        let ipl = sample();
        let absent = build(&ipl, &BuildInputs::default());
        assert_eq!(
            template_annotation(&absent, CREDENTIALS_ANNOTATION),
            "absent"
        );
        let present = build(
            &ipl,
            &BuildInputs {
                secret_version: Some("42".into()),
                ..Default::default()
            },
        );
        assert_eq!(template_annotation(&present, CREDENTIALS_ANNOTATION), "42");
    }
}
