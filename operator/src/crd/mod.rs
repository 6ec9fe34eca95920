//! The `IngestPipeline` custom resource (group `sluice.dev`, version `v1alpha1`).
//!
//! Doc comments on every field become `kubectl explain` text; defaults and ranges
//! become OpenAPI v3 schema (no CEL: the oldest supported API server is 1.20).

use k8s_openapi::api::core::v1::ResourceRequirements;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::CustomResource;
use kube::core::crd::CustomResourceExt;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use sluice_core::config::{GeneratorConfig, SslMode, TableNames, WorkerConfig};

mod cnpg;
mod monitoring;
mod network;
mod pods;
pub use cnpg::CloudNativePgRef;
pub use monitoring::{MonitoringSpec, PodMonitorSpec};
pub use network::NetworkPolicySpec;
pub use pods::{DisruptionBudgetSpec, PodMetadata, PodTemplate};

/// Field manager used for server-side apply of children and status.
pub const FIELD_MANAGER: &str = "sluice-operator";

/// An ingestion pipeline: a synthetic event generator (optional), a shared landing
/// volume, and N workers loading landed CSV files into PostgreSQL exactly once.
// The printcolumn(...) lists repeat `type_ = ...` by design.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "sluice.dev",
    version = "v1alpha1",
    kind = "IngestPipeline",
    namespaced,
    shortname = "ipl",
    category = "sluice",
    status = "IngestPipelineStatus",
    scale(
        spec_replicas_path = ".spec.worker.replicas",
        status_replicas_path = ".status.workersDesired",
        label_selector_path = ".status.selector"
    ),
    derive = "PartialEq",
    doc = "An ingestion pipeline: generator (optional), shared landing volume and workers loading CSV event files into PostgreSQL exactly once.",
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status",
        description = "Whether all workers (and the generator, when enabled) are ready"
    ),
    printcolumn(
        name = "Workers",
        type_ = "string",
        json_path = ".status.workers",
        description = "Ready/desired workers"
    ),
    printcolumn(
        name = "Rows",
        type_ = "integer",
        json_path = ".status.rowsLoaded",
        description = "Rows loaded by the running workers"
    ),
    printcolumn(
        name = "Rejected",
        type_ = "integer",
        json_path = ".status.rowsRejected",
        description = "Rows sent to quarantine by the running workers"
    ),
    printcolumn(
        name = "Lag",
        type_ = "number",
        json_path = ".status.lagSeconds",
        description = "Age in seconds of the oldest landed file not yet committed"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct IngestPipelineSpec {
    /// The synthetic event generator writing CSV files into the landing zone. Disable it
    /// when another producer writes the files.
    #[serde(default)]
    pub generator: GeneratorSpec,
    /// The workers loading landed files into PostgreSQL (a StatefulSet).
    #[serde(default)]
    pub worker: WorkerSpec,
    /// The shared volume files land in (mounted by the generator and every worker).
    #[serde(default)]
    pub landing_zone: LandingZoneSpec,
    /// Each worker's own persistent volume for batch plans and commit records.
    #[serde(default)]
    pub checkpoints: CheckpointSpec,
    /// Where the rows go.
    pub postgres: PostgresSpec,
    /// How the workers read landing files: `format` (auto, csv or ndjson) and
    /// `compression` (auto, none, gzip or zstd). Both default to auto: from the file name
    /// (`*.csv`, `*.ndjson`, `*.jsonl`, each optionally followed by `.gz` or `.zst`).
    #[serde(default)]
    pub source: sluice_core::config::SourceConfig,
    /// The target table: its columns, their types, the cleaning applied before
    /// validation, and the rules each value must meet (docs/schema.md). Unset: the
    /// built-in e-commerce `events` table.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema: Option<sluice_core::schema::TableSchema>,
    /// Container images of the pods.
    #[serde(default)]
    pub images: ImagesSpec,
    /// Pod settings shared by the generator and the workers (image pull secrets, node
    /// selector, tolerations, affinity, topology spread, priority class, service account,
    /// extra labels and annotations). `generator.podTemplate` and `worker.podTemplate`
    /// override it field by field.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_template: Option<PodTemplate>,
    /// NetworkPolicies for the pods (metrics scrapes in; PostgreSQL and DNS out for the
    /// workers, nothing out for the generator).
    #[serde(default)]
    pub network_policy: NetworkPolicySpec,
    /// Monitoring objects for the pipeline's pods (a Prometheus Operator PodMonitor).
    #[serde(default)]
    pub monitoring: MonitoringSpec,
    /// Scale the generator and the workers to zero, keeping volumes and configuration.
    /// Files landed meanwhile are loaded after resuming.
    #[serde(default)]
    pub suspend: bool,
}

/// The synthetic event generator (a Deployment with one replica).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct GeneratorSpec {
    /// Run the generator. When false its Deployment is kept at 0 replicas.
    pub enabled: bool,
    /// Generator settings (rates, file sizes, bad-row share, seed, backpressure).
    #[serde(flatten)]
    pub config: GeneratorConfig,
    /// CPU and memory requests and limits of the generator container. Keys left out keep
    /// their defaults (a default limit below a given request is raised to it).
    #[schemars(default = "default_generator_resources")]
    pub resources: ResourceRequirements,
    /// Pod settings of the generator; each field given here wins over spec.podTemplate's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pod_template: Option<PodTemplate>,
}

impl Default for GeneratorSpec {
    fn default() -> Self {
        GeneratorSpec {
            enabled: true,
            config: GeneratorConfig::default(),
            resources: default_generator_resources(),
            pod_template: None,
        }
    }
}

/// The ingestion workers (a StatefulSet: worker ids are the pod names, stable across
/// restarts).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct WorkerSpec {
    /// Number of workers. They share the landing zone and never load a file twice.
    #[schemars(range(min = 1, max = 64))]
    pub replicas: i32,
    /// Worker settings (batch limits, after-commit policy, retention, dedupe, timeouts).
    #[serde(flatten)]
    pub config: WorkerConfig,
    /// CPU and memory requests and limits of each worker container. Keys left out keep
    /// their defaults (a default limit below a given request is raised to it).
    #[schemars(default = "default_worker_resources")]
    pub resources: ResourceRequirements,
    /// Pod settings of the workers; each field given here wins over spec.podTemplate's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pod_template: Option<PodTemplate>,
    /// The workers' PodDisruptionBudget (on by default, maxUnavailable 1), so that a node
    /// drain never takes all the workers down at once.
    pub disruption_budget: DisruptionBudgetSpec,
}

impl Default for WorkerSpec {
    fn default() -> Self {
        WorkerSpec {
            replicas: 2,
            config: WorkerConfig::default(),
            resources: default_worker_resources(),
            pod_template: None,
            disruption_budget: DisruptionBudgetSpec::default(),
        }
    }
}

/// Access mode of the landing volume.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum LandingAccessMode {
    /// Pods may run on any node (needs a storage class that supports it, e.g. NFS, CephFS).
    #[default]
    ReadWriteMany,
    /// Only one node may mount the volume: the operator keeps all the pipeline's pods on
    /// one node with pod affinity.
    ReadWriteOnce,
}

impl LandingAccessMode {
    pub fn as_str(self) -> &'static str {
        match self {
            LandingAccessMode::ReadWriteMany => "ReadWriteMany",
            LandingAccessMode::ReadWriteOnce => "ReadWriteOnce",
        }
    }
}

/// The shared landing volume.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct LandingZoneSpec {
    /// Size of the PersistentVolumeClaim the operator creates (ignored with existingClaim).
    pub size: Quantity,
    /// Storage class of that claim; unset uses the cluster's default class.
    #[schemars(regex(pattern = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"))]
    pub storage_class_name: Option<String>,
    /// ReadWriteMany (default) lets pods run on any node; ReadWriteOnce pins every pod of
    /// the pipeline to one node.
    pub access_mode: LandingAccessMode,
    /// Use this existing PersistentVolumeClaim (in the pipeline's namespace) instead of
    /// creating one; it is then never deleted by the operator.
    #[schemars(regex(pattern = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"))]
    pub existing_claim: Option<String>,
    /// Delete the landing claim the operator created when the pipeline is deleted. Off by
    /// default: the claim (and any file not loaded yet) outlives the pipeline; a pipeline
    /// created again with the same name, or any pipeline with existingClaim naming it,
    /// takes it over.
    pub delete_claim: bool,
}

impl Default for LandingZoneSpec {
    fn default() -> Self {
        LandingZoneSpec {
            size: Quantity("10Gi".into()),
            storage_class_name: None,
            access_mode: LandingAccessMode::ReadWriteMany,
            existing_claim: None,
            delete_claim: false,
        }
    }
}

/// Per-worker checkpoint volumes (StatefulSet volumeClaimTemplates). Fixed once the
/// workers exist: Kubernetes does not allow changing a StatefulSet's claim templates.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct CheckpointSpec {
    /// Size of each worker's checkpoint volume.
    pub size: Quantity,
    /// Storage class of the checkpoint volumes; unset uses the cluster's default class.
    #[schemars(regex(pattern = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"))]
    pub storage_class_name: Option<String>,
}

impl Default for CheckpointSpec {
    fn default() -> Self {
        CheckpointSpec {
            size: Quantity("1Gi".into()),
            storage_class_name: None,
        }
    }
}

/// A Secret in the pipeline's namespace.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretRef {
    /// Name of the Secret.
    #[schemars(
        length(min = 1, max = 253),
        regex(pattern = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
    )]
    pub name: String,
}

/// The PostgreSQL database receiving the rows: exactly one of `secretRef` and
/// `cloudNativePG`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("oneOf" = [{"required": ["secretRef"]}, {"required": ["cloudNativePG"]}]))]
pub struct PostgresSpec {
    /// Secret with the connection: either key `uri` (postgres://user:password@host:port/db)
    /// or keys `host`, `port`, `dbname`, `user`, `password` (the layout CloudNativePG's
    /// app secrets use). Key `ca.crt` (the server's CA certificate, PEM) turns on
    /// certificate verification by default; sslmode verify-full requires it. Exactly one
    /// of secretRef and cloudNativePG.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<SecretRef>,
    /// A CloudNativePG Cluster in the pipeline's namespace, used by name: its `-rw`
    /// Service, its `-app` Secret and its `-ca` Secret (unset sslmode: verify-full). The
    /// recommended production setup. Exactly one of secretRef and cloudNativePG.
    #[serde(
        default,
        rename = "cloudNativePG",
        skip_serializing_if = "Option::is_none"
    )]
    pub cloud_native_pg: Option<CloudNativePgRef>,
    /// TLS to PostgreSQL: disable, prefer (TLS when offered), require (encrypt) or
    /// verify-full (encrypt and verify the certificate and host name against the
    /// Secret's `ca.crt`). Unset: verify-full when the Secret holds `ca.crt`, otherwise
    /// require. Overrides any sslmode in the Secret's `uri`. With disable or prefer the
    /// Ready condition's message says the connection may be unencrypted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sslmode: Option<SslMode>,
    /// Names of the destination tables.
    #[serde(default)]
    pub tables: TableNames,
    /// PostgreSQL schema (namespace) of every table the pipeline uses: target table,
    /// quarantine and ledger. Each session sets its search_path to exactly this schema,
    /// and the workers create it when missing. Unset: the connection's default schema.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema: Option<String>,
}

/// Image pull policy of the pods.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum PullPolicy {
    /// Pull on every pod start.
    Always,
    /// Pull only when the node lacks the image.
    #[default]
    IfNotPresent,
    /// Never pull: the image must be on the node.
    Never,
}

impl PullPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            PullPolicy::Always => "Always",
            PullPolicy::IfNotPresent => "IfNotPresent",
            PullPolicy::Never => "Never",
        }
    }
}

/// Container images.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct ImagesSpec {
    /// Image of the workers (runs `sluice-worker`).
    #[schemars(length(min = 1))]
    pub worker: String,
    /// Image of the generator (runs `sluice-generator`).
    #[schemars(length(min = 1))]
    pub generator: String,
    /// Pull policy for both images.
    pub pull_policy: PullPolicy,
}

/// Default worker image: same version as the operator.
pub fn default_worker_image() -> String {
    format!(
        "ghcr.io/sluice-dev/sluice-worker:{}",
        env!("CARGO_PKG_VERSION")
    )
}

/// Default generator image: same version as the operator.
pub fn default_generator_image() -> String {
    format!(
        "ghcr.io/sluice-dev/sluice-generator:{}",
        env!("CARGO_PKG_VERSION")
    )
}

impl Default for ImagesSpec {
    fn default() -> Self {
        ImagesSpec {
            worker: default_worker_image(),
            generator: default_generator_image(),
            pull_policy: PullPolicy::IfNotPresent,
        }
    }
}

fn resources(req_cpu: &str, req_mem: &str, lim_cpu: &str, lim_mem: &str) -> ResourceRequirements {
    let q = |s: &str| Quantity(s.to_string());
    ResourceRequirements {
        requests: Some(
            [
                ("cpu".to_string(), q(req_cpu)),
                ("memory".to_string(), q(req_mem)),
            ]
            .into(),
        ),
        limits: Some(
            [
                ("cpu".to_string(), q(lim_cpu)),
                ("memory".to_string(), q(lim_mem)),
            ]
            .into(),
        ),
        ..Default::default()
    }
}

/// Worker defaults: the worker runs in a few MiB; limits leave room for large batches.
pub fn default_worker_resources() -> ResourceRequirements {
    resources("250m", "64Mi", "2", "256Mi")
}

/// Generator defaults.
pub fn default_generator_resources() -> ResourceRequirements {
    resources("100m", "32Mi", "1", "128Mi")
}

/// Observed state, written by the operator.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct IngestPipelineStatus {
    /// The metadata.generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Ready, Progressing, Degraded and Suspended, in the standard metav1.Condition shape.
    #[serde(default)]
    pub conditions: Vec<Condition>,
    /// Workers ready ("2/3"), for display.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workers: Option<String>,
    /// Worker pods ready.
    #[serde(default)]
    pub workers_ready: i32,
    /// Worker pods wanted (0 when suspended); the scale subresource's status.replicas.
    #[serde(default)]
    pub workers_desired: i32,
    /// Label selector of the worker pods (for `kubectl scale` and HorizontalPodAutoscalers,
    /// through the scale subresource).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<String>,
    /// Whether the generator pod is ready (false when disabled or suspended).
    #[serde(default)]
    pub generator_ready: bool,
    /// Rows loaded, summed over the running workers' metrics (counts restart from 0 when a
    /// worker restarts; the database ledger holds the exact totals).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rows_loaded: Option<u64>,
    /// Rows sent to quarantine, summed over the running workers' metrics.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rows_rejected: Option<u64>,
    /// Landed files not yet committed (largest figure any worker reported).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backlog_files: Option<u64>,
    /// Age in seconds of the oldest landed file not yet committed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lag_seconds: Option<f64>,
    /// When a worker last committed a batch (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_batch_time: Option<String>,
    /// When the figures above were last read from the workers (RFC 3339); they go stale,
    /// rather than disappear, while the workers cannot be reached.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub figures_time: Option<String>,
}

/// The CRD as installed: the derived one, with `null` members dropped from schema
/// defaults (an unset optional field needs no default, and older API servers store the
/// nulls), and without the Kubernetes API's own descriptions inside the pod templates
/// (see [`strip_pod_template_docs`]).
pub fn crd() -> Result<CustomResourceDefinition, serde_json::Error> {
    let mut value = serde_json::to_value(IngestPipeline::crd())?;
    strip_null_defaults(&mut value);
    strip_pod_template_docs(&mut value);
    serde_json::from_value(value)
}

/// The pod templates embed Kubernetes types (Affinity, Toleration,
/// TopologySpreadConstraint, …) three times; with their upstream descriptions the CRD
/// would pass 250 kB, near the 256 kB a client-side `kubectl apply` can store. Their
/// schema (types, required fields) is kept; only the descriptions below each template
/// field go (`kubectl explain pod.spec.affinity` has them).
fn strip_pod_template_docs(crd: &mut serde_json::Value) {
    let Some(versions) = crd
        .pointer_mut("/spec/versions")
        .and_then(|v| v.as_array_mut())
    else {
        return;
    };
    for v in versions {
        let Some(spec) = v.pointer_mut("/schema/openAPIV3Schema/properties/spec/properties") else {
            continue;
        };
        for path in [
            "/podTemplate",
            "/generator/properties/podTemplate",
            "/worker/properties/podTemplate",
        ] {
            if let Some(fields) = spec
                .pointer_mut(&format!("{path}/properties"))
                .and_then(|f| f.as_object_mut())
            {
                for field in fields.values_mut() {
                    for (k, sub) in field.as_object_mut().into_iter().flatten() {
                        if k != "description" {
                            strip_descriptions(sub);
                        }
                    }
                }
            }
        }
    }
}

fn strip_descriptions(v: &mut serde_json::Value) {
    match v {
        serde_json::Value::Object(map) => {
            // A property called "description" is a field name, not documentation.
            if map.get("description").is_some_and(|d| d.is_string()) {
                map.remove("description");
            }
            map.values_mut().for_each(strip_descriptions);
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(strip_descriptions),
        _ => {}
    }
}

fn strip_nulls(v: &mut serde_json::Value) {
    if let serde_json::Value::Object(map) = v {
        map.retain(|_, x| !x.is_null());
        map.values_mut().for_each(strip_nulls);
    }
}

fn strip_null_defaults(v: &mut serde_json::Value) {
    match v {
        serde_json::Value::Object(map) => {
            for (k, x) in map.iter_mut() {
                if k == "default" {
                    strip_nulls(x);
                } else {
                    strip_null_defaults(x);
                }
            }
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(strip_null_defaults),
        _ => {}
    }
}

/// The CRD as YAML, as `sluice-operator crd` prints it.
pub fn crd_yaml() -> Result<String, String> {
    let crd = crd().map_err(|e| e.to_string())?;
    serde_yaml::to_string(&crd).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crd_has_names_columns_and_status() {
        let crd = crd().expect("crd");
        assert_eq!(crd.spec.group, "sluice.dev");
        assert_eq!(crd.spec.names.kind, "IngestPipeline");
        assert_eq!(crd.spec.names.short_names, Some(vec!["ipl".to_string()]));
        assert_eq!(crd.spec.scope, "Namespaced");
        let v = &crd.spec.versions[0];
        assert_eq!(v.name, "v1alpha1");
        assert!(
            v.subresources
                .as_ref()
                .and_then(|s| s.status.as_ref())
                .is_some()
        );
        let cols: Vec<&str> = v
            .additional_printer_columns
            .iter()
            .flatten()
            .map(|c| c.name.as_str())
            .collect();
        assert_eq!(cols, ["Ready", "Workers", "Rows", "Rejected", "Lag", "Age"]);
    }

    #[test]
    fn crd_yaml_has_enums_ranges_and_required() {
        let yaml = crd_yaml().expect("yaml");
        assert!(yaml.contains("shortNames"));
        assert!(yaml.contains("- ipl"));
        for needle in [
            "ReadWriteMany",
            "ReadWriteOnce",
            "IfNotPresent",
            "verify-full",
            "archive",
            "keep",
            "maximum: 1.0",
            "x-kubernetes-int-or-string",
        ] {
            assert!(yaml.contains(needle), "CRD lacks {needle}");
        }
        assert!(!yaml.contains("x-kubernetes-validations"), "no CEL on 1.20");
        assert!(!yaml.contains(": null"), "no null defaults");
        let crd: serde_json::Value = serde_yaml::from_str(&yaml).expect("parse back");
        let spec = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"];
        let required: Vec<&str> = spec["required"]
            .as_array()
            .expect("required")
            .iter()
            .filter_map(|v| v.as_str())
            .collect();
        assert_eq!(required, ["postgres"]);
        let pg = &spec["properties"]["postgres"];
        assert_eq!(pg["oneOf"][0]["required"][0], "secretRef");
        assert_eq!(pg["oneOf"][1]["required"][0], "cloudNativePG");
        assert_eq!(pg["properties"]["secretRef"]["required"][0], "name");
        assert_eq!(pg["properties"]["cloudNativePG"]["required"][0], "cluster");
    }

    #[test]
    fn minimal_resource_parses_with_defaults() {
        let spec: IngestPipelineSpec =
            serde_json::from_str(r#"{"postgres":{"secretRef":{"name":"pg"}}}"#).expect("parse");
        assert!(spec.generator.enabled);
        assert_eq!(spec.worker.replicas, 2);
        assert_eq!(
            spec.landing_zone.access_mode,
            LandingAccessMode::ReadWriteMany
        );
        assert_eq!(spec.worker.config, WorkerConfig::default());
        assert_eq!(
            spec.postgres.secret_ref.map(|s| s.name).as_deref(),
            Some("pg")
        );
        assert!(!spec.monitoring.pod_monitor.enabled);
        let cnpg: IngestPipelineSpec =
            serde_json::from_str(r#"{"postgres":{"cloudNativePG":{"cluster":"db"}}}"#)
                .expect("parse");
        assert_eq!(
            cnpg.postgres
                .cloud_native_pg
                .map(|c| c.app_secret())
                .as_deref(),
            Some("db-app")
        );
    }

    #[test]
    fn flattened_core_fields_are_camel_case() {
        let spec: IngestPipelineSpec = serde_json::from_str(
            r#"{"postgres":{"secretRef":{"name":"pg"}},
                "generator":{"eventsPerSecond":7,"badRowShare":0.5},
                "worker":{"replicas":3,"afterCommit":"delete","batch":{"maxFiles":4},"dedupeByEventId":true}}"#,
        )
        .expect("parse");
        assert_eq!(spec.generator.config.events_per_second, 7);
        assert_eq!(spec.worker.replicas, 3);
        assert_eq!(spec.worker.config.batch.max_files, 4);
        assert!(spec.worker.config.dedupe_by_event_id);
    }
}
