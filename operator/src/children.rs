//! Pure builders: an `IngestPipeline` → the objects the operator applies.
//!
//! | child | name | notes |
//! |---|---|---|
//! | ConfigMap | `<name>-config` | `pipeline.json`, the pods' `--config` |
//! | PersistentVolumeClaim | `<name>-landing` | unless `landingZone.existingClaim` |
//! | Deployment | `<name>-generator` | 0 replicas when disabled or suspended |
//! | StatefulSet | `<name>-worker` | pods `<name>-worker-<i>`; claims `checkpoint-<name>-worker-<i>` |
//! | Service (headless) | `<name>-worker` | port `metrics` (9100) |
//! | ServiceAccount | `<name>-sluice` | no API token mounted |

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{
    Deployment, DeploymentSpec, DeploymentStrategy, StatefulSet, StatefulSetSpec,
};
use k8s_openapi::api::core::v1::{
    Affinity, Capabilities, ConfigMap, ConfigMapVolumeSource, Container, ContainerPort,
    EmptyDirVolumeSource, EnvVar, EnvVarSource, HTTPGetAction, ObjectFieldSelector,
    PersistentVolumeClaim, PersistentVolumeClaimSpec, PersistentVolumeClaimVolumeSource,
    PodAffinity, PodAffinityTerm, PodSecurityContext, PodSpec, PodTemplateSpec, Probe,
    SeccompProfile, SecretKeySelector, SecretVolumeSource, SecurityContext, Service,
    ServiceAccount, ServicePort, ServiceSpec, Volume, VolumeMount, VolumeResourceRequirements,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::{Resource, ResourceExt};
use sha2::{Digest, Sha256};
use sluice_core::config::{PipelineConfig, SslMode};

use crate::crd::{
    IngestPipeline, LandingAccessMode, default_generator_resources, default_worker_resources,
};
use crate::validate::parse_quantity;
use k8s_openapi::api::core::v1::ResourceRequirements;

pub const APP_NAME: &str = "sluice";
pub const MANAGED_BY: &str = "sluice-operator";
pub const CONFIG_FILE: &str = "pipeline.json";
pub const CONFIG_DIR: &str = "/etc/sluice";
pub const LANDING_DIR: &str = "/data/landing";
pub const CHECKPOINT_DIR: &str = "/data/checkpoint";
/// Where the credentials Secret is mounted as files (not under the read-only config
/// mount at /etc/sluice: a mount point cannot be created inside it).
pub const PG_CA_DIR: &str = "/etc/sluice-postgres";
pub const WORKER_METRICS_PORT: i32 = 9100;
pub const GENERATOR_METRICS_PORT: i32 = 9102;
pub const RUN_AS: i64 = 65532;
/// Pod template annotation carrying the sha256 of the pipeline config: a config change
/// changes the template, so the pods roll.
pub const CONFIG_HASH_ANNOTATION: &str = "sluice.dev/config-hash";
/// Worker pod template annotation carrying the credentials Secret's resourceVersion
/// ("absent" while it does not exist): environment variables from a Secret are read only
/// at container start, so creating or changing the Secret rolls the workers.
pub const CREDENTIALS_ANNOTATION: &str = "sluice.dev/credentials-version";

/// Names of a pipeline's children.
pub fn config_map_name(p: &str) -> String {
    format!("{p}-config")
}
pub fn landing_claim_name(p: &str) -> String {
    format!("{p}-landing")
}
pub fn generator_name(p: &str) -> String {
    format!("{p}-generator")
}
pub fn worker_name(p: &str) -> String {
    format!("{p}-worker")
}
/// The headless metrics Service shares the StatefulSet's name (its `serviceName`).
pub fn service_name(p: &str) -> String {
    worker_name(p)
}
pub fn service_account_name(p: &str) -> String {
    format!("{p}-sluice")
}
pub const CHECKPOINT_TEMPLATE: &str = "checkpoint";

/// The four recommended labels; `component` is worker, generator, config, landing,
/// metrics or pods.
pub fn labels(pipeline: &str, component: &str) -> BTreeMap<String, String> {
    [
        ("app.kubernetes.io/name", APP_NAME),
        ("app.kubernetes.io/instance", pipeline),
        ("app.kubernetes.io/component", component),
        ("app.kubernetes.io/managed-by", MANAGED_BY),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

/// Labels selecting a component's pods (stable: never change after creation).
pub fn selector_labels(pipeline: &str, component: &str) -> BTreeMap<String, String> {
    let mut l = labels(pipeline, component);
    l.remove("app.kubernetes.io/managed-by");
    l
}

/// [`selector_labels`] as a label selector string (`k=v,k=v`), for the scale subresource.
pub fn selector_string(pipeline: &str, component: &str) -> String {
    selector_labels(pipeline, component)
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// The inputs besides the resource itself.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct BuildInputs {
    /// resourceVersion of the credentials Secret, None when it does not exist.
    pub secret_version: Option<String>,
    /// Which keys the Secret holds (decides the file the worker reads its password from).
    pub secret_layout: SecretLayout,
}

/// The two layouts of the credentials Secret.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SecretLayout {
    /// Key `uri`: the whole connection URL.
    #[default]
    Uri,
    /// Keys `host`, `port`, `dbname`, `user`, `password` (CloudNativePG's app secrets).
    Keys,
}

/// Everything the operator applies for one pipeline.
#[derive(Clone, Debug)]
pub struct Children {
    pub config_map: ConfigMap,
    pub landing_claim: Option<PersistentVolumeClaim>,
    pub service_account: ServiceAccount,
    pub service: Service,
    pub generator: Deployment,
    pub worker: StatefulSet,
    pub config_hash: String,
}

/// The config the pods read (`--config`), from the resource's spec.
pub fn pipeline_config(ipl: &IngestPipeline) -> PipelineConfig {
    PipelineConfig {
        // Pipelines sharing one database keep their ledgers apart by this id.
        pipeline: format!(
            "{}/{}",
            ipl.metadata.namespace.as_deref().unwrap_or("default"),
            ipl.metadata.name.as_deref().unwrap_or("pipeline")
        ),
        generator: ipl.spec.generator.config.clone(),
        worker: ipl.spec.worker.config.clone(),
        tables: ipl.spec.postgres.tables.clone(),
        sslmode: ipl.spec.postgres.sslmode,
        source: ipl.spec.source.clone(),
        postgres_schema: ipl.spec.postgres.schema.clone(),
        schema: ipl.spec.schema.clone(),
    }
}

/// The ConfigMap's JSON text: pretty, with a stable field order (struct order), so the
/// same spec always gives the same bytes and hash.
pub fn config_json(cfg: &PipelineConfig) -> String {
    serde_json::to_string_pretty(cfg).unwrap_or_else(|_| "{}".into())
}

/// Lower-case hex sha256.
pub fn sha256_hex(data: &[u8]) -> String {
    Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn owner_ref(ipl: &IngestPipeline) -> Vec<OwnerReference> {
    ipl.controller_owner_ref(&()).into_iter().collect()
}

fn meta(ipl: &IngestPipeline, name: String, component: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name),
        namespace: ipl.namespace(),
        labels: Some(labels(&ipl.name_any(), component)),
        owner_references: Some(owner_ref(ipl)),
        ..Default::default()
    }
}

/// Builds every child. Pure: no API calls.
pub fn build(ipl: &IngestPipeline, inputs: &BuildInputs) -> Children {
    let cfg = pipeline_config(ipl);
    let json = config_json(&cfg);
    let config_hash = sha256_hex(json.as_bytes());
    Children {
        config_map: config_map(ipl, json),
        landing_claim: landing_claim(ipl),
        service_account: service_account(ipl),
        service: service(ipl),
        generator: generator(ipl, &config_hash),
        worker: worker(ipl, &config_hash, inputs),
        config_hash,
    }
}

pub fn config_map(ipl: &IngestPipeline, json: String) -> ConfigMap {
    let name = ipl.name_any();
    ConfigMap {
        metadata: meta(ipl, config_map_name(&name), "config"),
        data: Some([(CONFIG_FILE.to_string(), json)].into()),
        ..Default::default()
    }
}

pub fn landing_claim(ipl: &IngestPipeline) -> Option<PersistentVolumeClaim> {
    let lz = &ipl.spec.landing_zone;
    if lz.existing_claim.is_some() {
        return None;
    }
    let name = ipl.name_any();
    let mut metadata = meta(ipl, landing_claim_name(&name), "landing");
    if !lz.delete_claim {
        // Without an owner the garbage collector leaves the claim, and the files not yet
        // loaded on it, when the pipeline is deleted.
        metadata.owner_references = None;
    }
    Some(PersistentVolumeClaim {
        metadata,
        spec: Some(PersistentVolumeClaimSpec {
            access_modes: Some(vec![lz.access_mode.as_str().to_string()]),
            storage_class_name: lz.storage_class_name.clone(),
            resources: Some(VolumeResourceRequirements {
                requests: Some([("storage".to_string(), lz.size.clone())].into()),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    })
}

pub fn service_account(ipl: &IngestPipeline) -> ServiceAccount {
    let name = ipl.name_any();
    ServiceAccount {
        metadata: meta(ipl, service_account_name(&name), "pods"),
        automount_service_account_token: Some(false),
        ..Default::default()
    }
}

pub fn service(ipl: &IngestPipeline) -> Service {
    let name = ipl.name_any();
    Service {
        metadata: meta(ipl, service_name(&name), "metrics"),
        spec: Some(ServiceSpec {
            cluster_ip: Some("None".into()),
            // Not-ready workers (e.g. PostgreSQL unreachable) still report their backlog.
            publish_not_ready_addresses: Some(true),
            selector: Some(selector_labels(&name, "worker")),
            ports: Some(vec![ServicePort {
                name: Some("metrics".into()),
                port: WORKER_METRICS_PORT,
                target_port: Some(IntOrString::String("metrics".into())),
                protocol: Some("TCP".into()),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn landing_volume(ipl: &IngestPipeline) -> Volume {
    let claim = ipl
        .spec
        .landing_zone
        .existing_claim
        .clone()
        .unwrap_or_else(|| landing_claim_name(&ipl.name_any()));
    Volume {
        name: "landing".into(),
        persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
            claim_name: claim,
            read_only: Some(false),
        }),
        ..Default::default()
    }
}

fn config_volume(ipl: &IngestPipeline) -> Volume {
    Volume {
        name: "config".into(),
        config_map: Some(ConfigMapVolumeSource {
            name: config_map_name(&ipl.name_any()),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn tmp_volume() -> Volume {
    Volume {
        name: "tmp".into(),
        empty_dir: Some(EmptyDirVolumeSource {
            size_limit: Some(Quantity("64Mi".into())),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn mount(name: &str, path: &str, read_only: bool) -> VolumeMount {
    VolumeMount {
        name: name.into(),
        mount_path: path.into(),
        read_only: Some(read_only),
        ..Default::default()
    }
}

fn pod_security_context() -> PodSecurityContext {
    PodSecurityContext {
        run_as_non_root: Some(true),
        run_as_user: Some(RUN_AS),
        run_as_group: Some(RUN_AS),
        // Volumes (landing, checkpoints) become group-writable for the pods.
        fs_group: Some(RUN_AS),
        seccomp_profile: Some(SeccompProfile {
            type_: "RuntimeDefault".into(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn container_security_context() -> SecurityContext {
    SecurityContext {
        allow_privilege_escalation: Some(false),
        privileged: Some(false),
        read_only_root_filesystem: Some(true),
        run_as_non_root: Some(true),
        run_as_user: Some(RUN_AS),
        run_as_group: Some(RUN_AS),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".into()]),
            ..Default::default()
        }),
        seccomp_profile: Some(SeccompProfile {
            type_: "RuntimeDefault".into(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn http_probe(path: &str, period: i32, failures: i32, initial_delay: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.into()),
            port: IntOrString::String("metrics".into()),
            scheme: Some("HTTP".into()),
            ..Default::default()
        }),
        initial_delay_seconds: Some(initial_delay),
        period_seconds: Some(period),
        timeout_seconds: Some(2),
        failure_threshold: Some(failures),
        ..Default::default()
    }
}

fn metrics_port(port: i32) -> ContainerPort {
    ContainerPort {
        name: Some("metrics".into()),
        container_port: port,
        protocol: Some("TCP".into()),
        ..Default::default()
    }
}

fn env_value(name: &str, value: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: Some(value.into()),
        ..Default::default()
    }
}

fn env_secret(name: &str, secret: &str, key: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                name: secret.into(),
                key: key.into(),
                // Either `uri` or the separate keys are present: each one is optional.
                optional: Some(true),
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// With a ReadWriteOnce landing volume every pod of the pipeline must run on the node
/// that mounts it: required pod affinity to the pipeline's other pods, per host name.
/// (The first pod is allowed anywhere: the scheduler accepts a pod whose affinity term
/// matches no pod when it matches itself.)
fn affinity(ipl: &IngestPipeline) -> Option<Affinity> {
    if ipl.spec.landing_zone.access_mode != LandingAccessMode::ReadWriteOnce {
        return None;
    }
    let name = ipl.name_any();
    let match_labels: BTreeMap<String, String> = [
        ("app.kubernetes.io/name".to_string(), APP_NAME.to_string()),
        ("app.kubernetes.io/instance".to_string(), name),
    ]
    .into();
    Some(Affinity {
        pod_affinity: Some(PodAffinity {
            required_during_scheduling_ignored_during_execution: Some(vec![PodAffinityTerm {
                label_selector: Some(LabelSelector {
                    match_labels: Some(match_labels),
                    ..Default::default()
                }),
                topology_key: "kubernetes.io/hostname".into(),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        ..Default::default()
    })
}

fn template_meta(
    ipl: &IngestPipeline,
    component: &str,
    annotations: BTreeMap<String, String>,
) -> Option<ObjectMeta> {
    Some(ObjectMeta {
        labels: Some(labels(&ipl.name_any(), component)),
        annotations: Some(annotations),
        ..Default::default()
    })
}

pub fn generator(ipl: &IngestPipeline, config_hash: &str) -> Deployment {
    let name = ipl.name_any();
    let spec = &ipl.spec;
    let replicas = if spec.suspend || !spec.generator.enabled {
        0
    } else {
        1
    };
    let container = Container {
        name: "generator".into(),
        image: Some(spec.images.generator.clone()),
        image_pull_policy: Some(spec.images.pull_policy.as_str().into()),
        args: Some(generator_args()),
        ports: Some(vec![metrics_port(GENERATOR_METRICS_PORT)]),
        liveness_probe: Some(http_probe("/healthz", 10, 6, 5)),
        readiness_probe: Some(http_probe("/readyz", 5, 3, 2)),
        resources: Some(effective_resources(
            &spec.generator.resources,
            &default_generator_resources(),
        )),
        security_context: Some(container_security_context()),
        volume_mounts: Some(vec![
            mount("landing", LANDING_DIR, false),
            mount("config", CONFIG_DIR, true),
            mount("tmp", "/tmp", false),
        ]),
        ..Default::default()
    };
    Deployment {
        metadata: meta(ipl, generator_name(&name), "generator"),
        spec: DeploymentSpec {
            replicas: Some(replicas),
            // Never two generators at once: they would write the same seeded files.
            strategy: Some(DeploymentStrategy {
                type_: Some("Recreate".into()),
                ..Default::default()
            }),
            selector: LabelSelector {
                match_labels: Some(selector_labels(&name, "generator")),
                ..Default::default()
            },
            template: PodTemplateSpec {
                metadata: template_meta(
                    ipl,
                    "generator",
                    [(CONFIG_HASH_ANNOTATION.to_string(), config_hash.to_string())].into(),
                ),
                spec: Some(PodSpec {
                    service_account_name: Some(service_account_name(&name)),
                    automount_service_account_token: Some(false),
                    security_context: Some(pod_security_context()),
                    affinity: affinity(ipl),
                    termination_grace_period_seconds: Some(30),
                    containers: vec![container],
                    volumes: Some(vec![landing_volume(ipl), config_volume(ipl), tmp_volume()]),
                    ..Default::default()
                }),
            },
            ..Default::default()
        },
        ..Default::default()
    }
}

/// The resources a container gets: the keys the spec names, and the defaults for the
/// others (so that giving only `requests.cpu` keeps the memory limit). A default limit
/// below the spec's request is raised to the request.
pub fn effective_resources(
    spec: &ResourceRequirements,
    defaults: &ResourceRequirements,
) -> ResourceRequirements {
    let merge = |s: &Option<BTreeMap<String, Quantity>>, d: &Option<BTreeMap<String, Quantity>>| {
        let mut m = d.clone().unwrap_or_default();
        m.extend(s.clone().unwrap_or_default());
        m
    };
    let requests = merge(&spec.requests, &defaults.requests);
    let mut limits = merge(&spec.limits, &defaults.limits);
    let user_limits = spec.limits.clone().unwrap_or_default();
    for (res, req) in &requests {
        if user_limits.contains_key(res) {
            continue;
        }
        if let Some(lim) = limits.get_mut(res)
            && let (Some(r), Some(l)) = (parse_quantity(&req.0), parse_quantity(&lim.0))
            && r > l
        {
            *lim = req.clone();
        }
    }
    ResourceRequirements {
        requests: Some(requests),
        limits: Some(limits),
        ..spec.clone()
    }
}

/// The generator's command-line arguments.
pub fn generator_args() -> Vec<String> {
    vec![
        format!("--landing-dir={LANDING_DIR}"),
        format!("--config={CONFIG_DIR}/{CONFIG_FILE}"),
        format!("--metrics-addr=0.0.0.0:{GENERATOR_METRICS_PORT}"),
        "--log-format=json".into(),
    ]
}

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
pub fn worker_env(ipl: &IngestPipeline, layout: SecretLayout) -> Vec<EnvVar> {
    let secret = ipl.spec.postgres.secret_ref.name.as_str();
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
    match layout {
        SecretLayout::Uri => env.push(env_value("DATABASE_URL_FILE", &format!("{PG_CA_DIR}/uri"))),
        SecretLayout::Keys => env.extend([
            env_secret("PGHOST", secret, "host"),
            env_secret("PGPORT", secret, "port"),
            env_secret("PGDATABASE", secret, "dbname"),
            env_secret("PGUSER", secret, "user"),
            env_value("PGPASSWORD_FILE", &format!("{PG_CA_DIR}/password")),
        ]),
    }
    if ipl.spec.postgres.sslmode == SslMode::VerifyFull {
        env.push(env_value("PGSSLROOTCERT", &format!("{PG_CA_DIR}/ca.crt")));
    }
    env
}

/// Checkpoint volumes of a pipeline's workers: one claim per worker, kept when the
/// pipeline is deleted (StatefulSet semantics).
pub fn checkpoint_claim_template(ipl: &IngestPipeline) -> PersistentVolumeClaim {
    let cp = &ipl.spec.checkpoints;
    PersistentVolumeClaim {
        metadata: ObjectMeta {
            name: Some(CHECKPOINT_TEMPLATE.into()),
            labels: Some(labels(&ipl.name_any(), "checkpoint")),
            ..Default::default()
        },
        spec: Some(PersistentVolumeClaimSpec {
            access_modes: Some(vec!["ReadWriteOnce".into()]),
            storage_class_name: cp.storage_class_name.clone(),
            resources: Some(VolumeResourceRequirements {
                requests: Some([("storage".to_string(), cp.size.clone())].into()),
                ..Default::default()
            }),
            volume_mode: Some("Filesystem".into()),
            ..Default::default()
        }),
        ..Default::default()
    }
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
    volumes.push(Volume {
        name: "postgres".into(),
        secret: Some(SecretVolumeSource {
            secret_name: Some(spec.postgres.secret_ref.name.clone()),
            default_mode: Some(0o440),
            ..Default::default()
        }),
        ..Default::default()
    });
    let container = Container {
        name: "worker".into(),
        image: Some(spec.images.worker.clone()),
        image_pull_policy: Some(spec.images.pull_policy.as_str().into()),
        args: Some(worker_args()),
        env: Some(worker_env(ipl, inputs.secret_layout)),
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
    StatefulSet {
        metadata: meta(ipl, worker_name(&name), "worker"),
        spec: StatefulSetSpec {
            replicas: Some(replicas),
            service_name: Some(service_name(&name)),
            // Workers are independent: start and stop them all at once.
            pod_management_policy: Some("Parallel".into()),
            selector: LabelSelector {
                match_labels: Some(selector_labels(&name, "worker")),
                ..Default::default()
            },
            template: PodTemplateSpec {
                metadata: template_meta(ipl, "worker", annotations),
                spec: Some(PodSpec {
                    service_account_name: Some(service_account_name(&name)),
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
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::crd::{IngestPipelineSpec, PostgresSpec, SecretRef};

    pub(crate) fn sample() -> IngestPipeline {
        let mut ipl = IngestPipeline::new(
            "shop",
            IngestPipelineSpec {
                postgres: PostgresSpec {
                    secret_ref: SecretRef {
                        name: "pg-credentials".into(),
                    },
                    ..Default::default()
                },
                ..Default::default()
            },
        );
        ipl.metadata.namespace = Some("data".into());
        ipl.metadata.uid = Some("1234-uid".into());
        ipl.metadata.generation = Some(1);
        ipl
    }

    fn pod_spec_of_worker(c: &Children) -> &PodSpec {
        c.worker.spec.template.spec.as_ref().expect("pod spec")
    }

    fn pod_spec_of_generator(c: &Children) -> &PodSpec {
        c.generator.spec.template.spec.as_ref().expect("pod spec")
    }

    fn template_annotation(c: &Children, key: &str) -> String {
        c.worker
            .spec
            .template
            .metadata
            .as_ref()
            .and_then(|m| m.annotations.as_ref())
            .and_then(|a| a.get(key).cloned())
            .expect("annotation")
    }

    #[test]
    fn names_labels_and_owner_refs() {
        let ipl = sample();
        let c = build(&ipl, &BuildInputs::default());
        let metas = [
            (&c.config_map.metadata, "shop-config", "config"),
            (&c.service_account.metadata, "shop-sluice", "pods"),
            (&c.service.metadata, "shop-worker", "metrics"),
            (&c.generator.metadata, "shop-generator", "generator"),
            (&c.worker.metadata, "shop-worker", "worker"),
        ];
        for (m, name, component) in metas {
            assert_eq!(m.name.as_deref(), Some(name));
            assert_eq!(m.namespace.as_deref(), Some("data"));
            let l = m.labels.as_ref().expect("labels");
            assert_eq!(l["app.kubernetes.io/name"], "sluice");
            assert_eq!(l["app.kubernetes.io/instance"], "shop");
            assert_eq!(l["app.kubernetes.io/component"], component);
            assert_eq!(l["app.kubernetes.io/managed-by"], "sluice-operator");
            let owners = m.owner_references.as_ref().expect("owners");
            assert_eq!(owners.len(), 1);
            assert_eq!(owners[0].kind, "IngestPipeline");
            assert_eq!(owners[0].api_version, "sluice.dev/v1alpha1");
            assert_eq!(owners[0].name, "shop");
            assert_eq!(owners[0].uid, "1234-uid");
            assert_eq!(owners[0].controller, Some(true));
        }
    }

    #[test]
    fn the_landing_claim_outlives_the_pipeline_unless_delete_claim() {
        let mut ipl = sample();
        let kept = build(&ipl, &BuildInputs::default())
            .landing_claim
            .expect("claim");
        assert_eq!(kept.metadata.name.as_deref(), Some("shop-landing"));
        assert_eq!(kept.metadata.owner_references, None, "kept by default");
        assert_eq!(
            kept.metadata
                .labels
                .as_ref()
                .map(|l| l["app.kubernetes.io/component"].clone()),
            Some("landing".into())
        );
        ipl.spec.landing_zone.delete_claim = true;
        let owned = build(&ipl, &BuildInputs::default())
            .landing_claim
            .expect("claim");
        let owners = owned.metadata.owner_references.expect("owned");
        assert_eq!(
            (owners[0].kind.as_str(), owners[0].controller),
            ("IngestPipeline", Some(true))
        );
    }

    #[test]
    fn selectors_match_template_labels() {
        let c = build(&sample(), &BuildInputs::default());
        let sts = &c.worker.spec;
        let tl = sts
            .template
            .metadata
            .as_ref()
            .and_then(|m| m.labels.as_ref())
            .expect("labels");
        for (k, v) in sts.selector.match_labels.as_ref().expect("selector") {
            assert_eq!(tl.get(k), Some(v));
        }
        let svc_sel = c
            .service
            .spec
            .as_ref()
            .and_then(|s| s.selector.as_ref())
            .expect("svc selector");
        assert_eq!(svc_sel, sts.selector.match_labels.as_ref().expect("sel"));
        assert_eq!(sts.service_name.as_deref(), Some("shop-worker"));
        let svc = c.service.spec.as_ref().expect("svc spec");
        assert_eq!(svc.cluster_ip.as_deref(), Some("None"));
        let port = &svc.ports.as_ref().expect("ports")[0];
        assert_eq!(port.name.as_deref(), Some("metrics"));
        assert_eq!(port.port, 9100);
    }

    #[test]
    fn pods_are_hardened_and_probed() {
        let c = build(&sample(), &BuildInputs::default());
        for pod in [pod_spec_of_worker(&c), pod_spec_of_generator(&c)] {
            let psc = pod.security_context.as_ref().expect("pod sc");
            assert_eq!(psc.run_as_non_root, Some(true));
            assert_eq!(psc.run_as_user, Some(65532));
            assert_eq!(
                psc.seccomp_profile.as_ref().map(|s| s.type_.as_str()),
                Some("RuntimeDefault")
            );
            assert_eq!(pod.automount_service_account_token, Some(false));
            assert_eq!(pod.service_account_name.as_deref(), Some("shop-sluice"));
            let ctr = &pod.containers[0];
            let sc = ctr.security_context.as_ref().expect("sc");
            assert_eq!(sc.read_only_root_filesystem, Some(true));
            assert_eq!(sc.allow_privilege_escalation, Some(false));
            assert_eq!(sc.run_as_non_root, Some(true));
            assert_eq!(
                sc.capabilities.as_ref().and_then(|c| c.drop.clone()),
                Some(vec!["ALL".to_string()])
            );
            let res = ctr.resources.as_ref().expect("resources");
            assert!(
                res.requests
                    .as_ref()
                    .is_some_and(|r| r.contains_key("memory"))
            );
            assert!(
                res.limits
                    .as_ref()
                    .is_some_and(|r| r.contains_key("memory"))
            );
            let live = ctr
                .liveness_probe
                .as_ref()
                .and_then(|p| p.http_get.as_ref());
            let ready = ctr
                .readiness_probe
                .as_ref()
                .and_then(|p| p.http_get.as_ref());
            assert_eq!(live.and_then(|h| h.path.as_deref()), Some("/healthz"));
            assert_eq!(ready.and_then(|h| h.path.as_deref()), Some("/readyz"));
            assert_eq!(
                live.map(|h| h.port.clone()),
                Some(IntOrString::String("metrics".into()))
            );
            let port = &ctr.ports.as_ref().expect("ports")[0];
            assert_eq!(port.name.as_deref(), Some("metrics"));
            assert!(pod.affinity.is_none());
        }
    }

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
    fn generator_wiring() {
        let c = build(&sample(), &BuildInputs::default());
        let pod = pod_spec_of_generator(&c);
        let args = pod.containers[0].args.clone().expect("args");
        for a in [
            "--landing-dir=/data/landing",
            "--config=/etc/sluice/pipeline.json",
            "--metrics-addr=0.0.0.0:9102",
        ] {
            assert!(args.contains(&a.to_string()), "{a}");
        }
        assert!(
            pod.containers[0].env.is_none(),
            "the generator gets no credentials"
        );
        let strategy = c
            .generator
            .spec
            .strategy
            .as_ref()
            .and_then(|s| s.type_.clone());
        assert_eq!(strategy.as_deref(), Some("Recreate"));
    }

    #[test]
    fn verify_full_mounts_the_ca() {
        let mut ipl = sample();
        ipl.spec.postgres.sslmode = SslMode::VerifyFull;
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
    fn config_map_holds_the_config_and_hash_follows_it() {
        let ipl = sample();
        let a = build(&ipl, &BuildInputs::default());
        let json = &a.config_map.data.as_ref().expect("data")[CONFIG_FILE];
        let parsed: PipelineConfig = serde_json::from_str(json).expect("pods can parse it");
        assert_eq!(parsed, pipeline_config(&ipl));
        assert_eq!(a.config_hash, sha256_hex(json.as_bytes()));
        assert_eq!(
            template_annotation(&a, CONFIG_HASH_ANNOTATION),
            a.config_hash
        );

        // Same spec → same hash; a spec change outside the config → same hash.
        let mut same = ipl.clone();
        same.spec.worker.replicas = 5;
        same.spec.images.worker = "example/worker:dev".into();
        assert_eq!(
            build(&same, &BuildInputs::default()).config_hash,
            a.config_hash
        );

        // A config change → a new hash on both pod templates.
        let mut changed = ipl.clone();
        changed.spec.worker.config.batch.max_files = 7;
        let b = build(&changed, &BuildInputs::default());
        assert_ne!(b.config_hash, a.config_hash);
        assert_eq!(
            template_annotation(&b, CONFIG_HASH_ANNOTATION),
            b.config_hash
        );
        let gen_hash = b
            .generator
            .spec
            .template
            .metadata
            .as_ref()
            .and_then(|m| m.annotations.as_ref())
            .and_then(|a| a.get(CONFIG_HASH_ANNOTATION).cloned());
        assert_eq!(gen_hash.as_deref(), Some(b.config_hash.as_str()));

        let mut ssl = ipl.clone();
        ssl.spec.postgres.sslmode = SslMode::Require;
        assert_ne!(
            build(&ssl, &BuildInputs::default()).config_hash,
            a.config_hash
        );
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

    #[test]
    fn suspend_and_disabled_generator_scale_to_zero() {
        let mut ipl = sample();
        let c = build(&ipl, &BuildInputs::default());
        assert_eq!(c.generator.spec.replicas, Some(1));

        ipl.spec.generator.enabled = false;
        let c = build(&ipl, &BuildInputs::default());
        assert_eq!(c.generator.spec.replicas, Some(0));
        assert_eq!(c.worker.spec.replicas, Some(2));

        ipl.spec.generator.enabled = true;
        ipl.spec.suspend = true;
        let c = build(&ipl, &BuildInputs::default());
        assert_eq!(c.generator.spec.replicas, Some(0));
        assert_eq!(c.worker.spec.replicas, Some(0));
    }

    #[test]
    fn read_write_once_pins_pods_together() {
        let mut ipl = sample();
        ipl.spec.landing_zone.access_mode = LandingAccessMode::ReadWriteOnce;
        let c = build(&ipl, &BuildInputs::default());
        let claim = c
            .landing_claim
            .as_ref()
            .and_then(|p| p.spec.as_ref())
            .expect("claim");
        assert_eq!(claim.access_modes, Some(vec!["ReadWriteOnce".to_string()]));
        for pod in [pod_spec_of_worker(&c), pod_spec_of_generator(&c)] {
            let term = &pod
                .affinity
                .as_ref()
                .and_then(|a| a.pod_affinity.as_ref())
                .and_then(|p| {
                    p.required_during_scheduling_ignored_during_execution
                        .as_ref()
                })
                .expect("affinity")[0];
            assert_eq!(term.topology_key, "kubernetes.io/hostname");
            let ml = term
                .label_selector
                .as_ref()
                .and_then(|s| s.match_labels.as_ref())
                .expect("labels");
            assert_eq!(ml["app.kubernetes.io/instance"], "shop");
            assert!(!ml.contains_key("app.kubernetes.io/component"));
        }
    }

    #[test]
    fn partial_resources_keep_the_other_defaults() {
        let q = |s: &str| Quantity(s.into());
        let spec = ResourceRequirements {
            requests: Some(
                [
                    ("cpu".to_string(), q("1")),
                    ("memory".to_string(), q("1Gi")),
                ]
                .into(),
            ),
            ..Default::default()
        };
        let r = effective_resources(&spec, &default_worker_resources());
        let req = r.requests.expect("requests");
        let lim = r.limits.expect("limits");
        assert_eq!(req["cpu"], q("1"));
        assert_eq!(lim["cpu"], q("2"), "default cpu limit kept");
        assert_eq!(
            lim["memory"],
            q("1Gi"),
            "default memory limit raised to the request"
        );
        // An explicit limit is never changed.
        let spec = ResourceRequirements {
            limits: Some([("memory".to_string(), q("100Mi"))].into()),
            ..Default::default()
        };
        let r = effective_resources(&spec, &default_worker_resources());
        assert_eq!(r.limits.expect("limits")["memory"], q("100Mi"));
        assert_eq!(r.requests.expect("requests")["memory"], q("64Mi"));
    }

    #[test]
    fn existing_claim_replaces_the_landing_claim() {
        let mut ipl = sample();
        ipl.spec.landing_zone.existing_claim = Some("shared-nfs".into());
        let c = build(&ipl, &BuildInputs::default());
        assert!(c.landing_claim.is_none());
        let claim = pod_spec_of_generator(&c)
            .volumes
            .iter()
            .flatten()
            .find(|v| v.name == "landing")
            .and_then(|v| v.persistent_volume_claim.as_ref())
            .map(|p| p.claim_name.clone());
        assert_eq!(claim.as_deref(), Some("shared-nfs"));
    }
}
