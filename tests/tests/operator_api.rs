//! The operator against a real kube-apiserver 1.20 + etcd + kube-controller-manager
//! (`sluice_testkit::kube_env`, the envtest pattern): the CRD from `crd::crd()` is
//! installed, `sluice_operator::run` runs in-process (one per test, watching that test's
//! namespace only), and the tests drive it the way a user and the cluster would.
//!
//! All tests share one control plane (started once per test binary); each uses a
//! namespace of its own. There is no kubelet and no scheduler: pods stay `Pending`, so
//! where readiness matters the test patches the pods' status (status subresource) the way
//! the kubelet would, and the real StatefulSet / ReplicaSet / Deployment controllers
//! derive their own status from that.
//!
//! Skipped with a loud `SKIPPED:` line when the control-plane binaries are not available
//! and `SLUICE_KUBE_REQUIRED` is unset (see `KubeEnv::shared_or_skip`).

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail, ensure};
use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{
    ConfigMap, Container, PersistentVolumeClaim, Pod, PodSpec, Secret, Service, ServiceAccount,
};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, ObjectMeta};
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams,
};
use kube::{Client, Resource, ResourceExt as _};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use sluice_core::telemetry::Health;
use sluice_operator::children::{
    self, CONFIG_FILE, CONFIG_HASH_ANNOTATION, CREDENTIALS_ANNOTATION,
};
use sluice_operator::metrics::Metrics;
use sluice_operator::{IngestPipeline, RunOptions, Scope, Settings};
use sluice_testkit::kube_env::KubeEnv;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Field manager of the test's own writes (never the operator's).
const TEST_MANAGER: &str = "operator-api-test";
/// The pipeline name every test uses (in its own namespace).
const NAME: &str = "shop";
/// The Secret name of `deploy/examples/postgres-credentials.yaml`.
const SECRET: &str = "pg-credentials";
/// Default wait for the operator to converge (it reacts to watches within ~1 s; the
/// Secret is re-checked every 10 s).
const CONVERGE: Duration = Duration::from_secs(45);
/// Garbage collection of a fresh CRD's dependents: the controller-manager re-reads
/// discovery every 30 s, so it can take 30-60 s.
const GC_TIMEOUT: Duration = Duration::from_secs(90);

// ---------------------------------------------------------------------------------------
// Harness: a namespace, the CRD, and the operator running in-process.
// ---------------------------------------------------------------------------------------

struct Operator {
    env: &'static KubeEnv,
    client: Client,
    ns: String,
    metrics: Metrics,
    health: Arc<Health>,
    stop: watch::Sender<bool>,
    task: Option<JoinHandle<anyhow::Result<()>>>,
}

impl Operator {
    /// Shared control plane (or `None`: skipped), a fresh namespace, the CRD installed
    /// and Established, and the operator watching that namespace.
    async fn start(ns: &str) -> Result<Option<Operator>> {
        Operator::start_with(ns, Scope::Namespace(ns.to_string()), Settings::default()).await
    }

    /// [`Operator::start`] with another scope and operator-wide settings (the flags).
    /// Only `ns` is created; the test creates the scope's other namespaces.
    async fn start_with(ns: &str, scope: Scope, settings: Settings) -> Result<Option<Operator>> {
        let Some(env) = KubeEnv::shared_or_skip().await? else {
            return Ok(None);
        };
        env.create_namespace(ns).await?;
        let client = env.client().await?;
        install_crd(&client).await?;

        let metrics = Metrics::register(&Default::default()).context("registering metrics")?;
        let health = Health::new();
        let (stop, stop_rx) = watch::channel(false);
        let opts = RunOptions {
            scope,
            leader: None,
            instance: Some(format!("operator-api-test-{ns}")),
        };
        let task = tokio::spawn(sluice_operator::run_with(
            client.clone(),
            opts,
            settings,
            metrics.clone(),
            health.clone(),
            stop_rx,
        ));
        Ok(Some(Operator {
            env,
            client,
            ns: ns.to_string(),
            metrics,
            health,
            stop,
            task: Some(task),
        }))
    }

    fn api<K>(&self) -> Api<K>
    where
        K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>,
    {
        Api::namespaced(self.client.clone(), &self.ns)
    }

    /// Stops the operator and checks that it returned cleanly.
    async fn shutdown(mut self) -> Result<()> {
        let _ = self.stop.send(true);
        let Some(task) = self.task.take() else {
            return Ok(());
        };
        let res = tokio::time::timeout(Duration::from_secs(30), task)
            .await
            .context("the operator did not stop within 30 s of the stop signal")?
            .context("the operator task panicked")?;
        res.context("the operator returned an error")
    }

    /// The credentials Secret of `deploy/examples/postgres-credentials.yaml`.
    async fn create_secret(&self) -> Result<Secret> {
        self.create_secret_in(&self.ns).await
    }

    /// [`Operator::create_secret`] in namespace `ns`.
    async fn create_secret_in(&self, ns: &str) -> Result<Secret> {
        let text = std::fs::read_to_string(example_path("postgres-credentials.yaml"))
            .context("reading deploy/examples/postgres-credentials.yaml")?;
        let secret: Secret =
            serde_yaml::from_str(&text).context("parsing postgres-credentials.yaml")?;
        ensure!(secret.metadata.name.as_deref() == Some(SECRET));
        Api::<Secret>::namespaced(self.client.clone(), ns)
            .create(&PostParams::default(), &secret)
            .await
            .context("creating the credentials Secret")
    }

    /// Creates a pipeline; retries while the fresh CRD is not yet served (404).
    async fn create_pipeline(&self, ipl: &IngestPipeline) -> Result<IngestPipeline> {
        let api = self.api::<IngestPipeline>();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match api.create(&PostParams::default(), ipl).await {
                Ok(created) => return Ok(created),
                Err(kube::Error::Api(s)) if s.code == 404 && Instant::now() < deadline => {}
                Err(e) => return Err(e).context("creating the IngestPipeline"),
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    async fn patch_spec(&self, spec: Value) -> Result<IngestPipeline> {
        self.api::<IngestPipeline>()
            .patch(
                NAME,
                &PatchParams::default(),
                &Patch::Merge(json!({ "spec": spec })),
            )
            .await
            .context("patching the IngestPipeline's spec")
    }

    /// Waits until the pipeline's status satisfies `ok` and describes the current
    /// generation.
    async fn wait_status(
        &self,
        what: &str,
        timeout: Duration,
        ok: impl Fn(&IngestPipeline) -> bool,
    ) -> Result<IngestPipeline> {
        wait_for(&self.api::<IngestPipeline>(), NAME, what, timeout, |ipl| {
            let current =
                ipl.status.as_ref().and_then(|s| s.observed_generation) == ipl.metadata.generation;
            current && ok(ipl)
        })
        .await
    }

    /// All six children exist.
    async fn wait_children(&self) -> Result<Children> {
        let t = CONVERGE;
        Ok(Children {
            service_account: wait_exists(&self.api(), &children::service_account_name(NAME), t)
                .await?,
            config_map: wait_exists(&self.api(), &children::config_map_name(NAME), t).await?,
            landing: wait_exists(&self.api(), &children::landing_claim_name(NAME), t).await?,
            service: wait_exists(&self.api(), &children::service_name(NAME), t).await?,
            generator: wait_exists(&self.api(), &children::generator_name(NAME), t).await?,
            worker: wait_exists(&self.api(), &children::worker_name(NAME), t).await?,
        })
    }

    /// Marks a pod Running and Ready, as the kubelet would once its probes pass.
    async fn make_pod_ready(&self, pod: &str) -> Result<()> {
        let now = k8s_openapi::jiff::Timestamp::now()
            .round(k8s_openapi::jiff::Unit::Second)
            .context("rounding now")?
            .to_string();
        let condition = |t: &str| json!({ "type": t, "status": "True", "lastTransitionTime": now });
        let status = json!({ "status": {
            "phase": "Running",
            "startTime": now,
            "conditions": [
                condition("PodScheduled"),
                condition("Initialized"),
                condition("ContainersReady"),
                condition("Ready"),
            ],
        }});
        self.api::<Pod>()
            .patch_status(pod, &PatchParams::default(), &Patch::Merge(&status))
            .await
            .with_context(|| format!("patching the status of pod {pod}"))?;
        Ok(())
    }

    /// Events about the pipeline with this reason (events.k8s.io/v1, as the operator's
    /// recorder writes them).
    async fn events(&self, reason: &str) -> Result<Vec<Event>> {
        let list = self
            .api::<Event>()
            .list(&ListParams::default())
            .await
            .context("listing Events")?;
        Ok(list
            .items
            .into_iter()
            .filter(|e| e.reason.as_deref() == Some(reason))
            .filter(|e| {
                e.regarding
                    .as_ref()
                    .is_some_and(|r| r.kind.as_deref() == Some("IngestPipeline"))
            })
            .collect())
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        // On a failed assertion: stop the operator; the namespace stays (the control
        // plane goes away with the test binary).
        let _ = self.stop.send(true);
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

struct Children {
    service_account: ServiceAccount,
    config_map: ConfigMap,
    landing: PersistentVolumeClaim,
    service: Service,
    generator: Deployment,
    worker: StatefulSet,
}

/// Applies the CRD from `crd::crd()` (server-side apply: idempotent, so every test may
/// call it) and waits until it is Established and served.
async fn install_crd(client: &Client) -> Result<()> {
    let crd = sluice_operator::crd::crd().context("building the CRD")?;
    let name = crd.metadata.name.clone().context("the CRD has a name")?;
    ensure!(name == "ingestpipelines.sluice.dev", "CRD name {name}");
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    crds.patch(
        &name,
        &PatchParams::apply(TEST_MANAGER).force(),
        &Patch::Apply(&crd),
    )
    .await
    .context("applying the IngestPipeline CRD")?;
    wait_for(
        &crds,
        &name,
        "the CRD to be Established",
        Duration::from_secs(30),
        |crd| {
            crd.status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|cs| {
                    cs.iter()
                        .any(|c| c.type_ == "Established" && c.status == "True")
                })
        },
    )
    .await?;
    // Established can run a moment ahead of the resource being served.
    let deadline = Instant::now() + Duration::from_secs(30);
    let all: Api<IngestPipeline> = Api::all(client.clone());
    loop {
        match all.list(&ListParams::default().limit(1)).await {
            Ok(_) => return Ok(()),
            Err(e) if Instant::now() > deadline => {
                return Err(e).context("listing IngestPipelines after the CRD is Established");
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

// ---------------------------------------------------------------------------------------
// Small helpers.
// ---------------------------------------------------------------------------------------

fn example_path(file: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy/examples")
        .join(file)
}

/// `deploy/examples/ingestpipeline.yaml` (pipeline `shop`).
fn example_pipeline() -> Result<IngestPipeline> {
    let text = std::fs::read_to_string(example_path("ingestpipeline.yaml"))
        .context("reading deploy/examples/ingestpipeline.yaml")?;
    let ipl: IngestPipeline =
        serde_yaml::from_str(&text).context("parsing deploy/examples/ingestpipeline.yaml")?;
    ensure!(ipl.name_any() == NAME, "the example is named {NAME}");
    Ok(ipl)
}

/// A pipeline built in code: `spec` merged over `postgres.secretRef: pg-credentials`.
fn pipeline(spec: Value) -> IngestPipeline {
    let mut full = json!({ "postgres": { "secretRef": { "name": SECRET } } });
    merge(&mut full, spec);
    serde_json::from_value(json!({
        "apiVersion": "sluice.dev/v1alpha1",
        "kind": "IngestPipeline",
        "metadata": { "name": NAME },
        "spec": full,
    }))
    .expect("a valid IngestPipeline literal")
}

fn merge(base: &mut Value, patch: Value) {
    match (base, patch) {
        (Value::Object(b), Value::Object(p)) => {
            for (k, v) in p {
                merge(b.entry(k).or_insert(Value::Null), v);
            }
        }
        (b, p) => *b = p,
    }
}

fn short_json<T: Serialize>(obj: &T) -> String {
    let mut s = serde_json::to_string(obj).unwrap_or_else(|e| format!("<unserializable: {e}>"));
    if s.len() > 4000 {
        let mut cut = 4000;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
        s.push('…');
    }
    s
}

/// Polls `name` every 250 ms until `ok` holds; fails after `timeout` showing the last
/// state seen.
async fn wait_for<K>(
    api: &Api<K>,
    name: &str,
    what: &str,
    timeout: Duration,
    ok: impl Fn(&K) -> bool,
) -> Result<K>
where
    K: Clone + DeserializeOwned + Debug + Serialize,
{
    let deadline = Instant::now() + timeout;
    loop {
        let last = match api.get_opt(name).await {
            Ok(Some(obj)) if ok(&obj) => return Ok(obj),
            Ok(Some(obj)) => short_json(&obj),
            Ok(None) => format!("{name} does not exist"),
            Err(e) => e.to_string(),
        };
        if Instant::now() > deadline {
            bail!("{what}: not within {timeout:?}; last seen: {last}");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

async fn wait_exists<K>(api: &Api<K>, name: &str, timeout: Duration) -> Result<K>
where
    K: k8s_openapi::Resource + Clone + DeserializeOwned + Debug + Serialize,
{
    wait_for(
        api,
        name,
        &format!("{} {name} to exist", K::KIND),
        timeout,
        |_| true,
    )
    .await
}

async fn wait_gone<K>(api: Api<K>, name: &str, timeout: Duration) -> Result<()>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Serialize,
{
    let kind = K::kind(&());
    let deadline = Instant::now() + timeout;
    loop {
        match api.get_opt(name).await {
            Ok(None) => return Ok(()),
            Ok(Some(obj)) if Instant::now() > deadline => bail!(
                "{kind} {name} still exists after {timeout:?}: {}",
                short_json(&obj)
            ),
            Err(e) if Instant::now() > deadline => {
                return Err(e).with_context(|| format!("reading {kind} {name}"));
            }
            _ => tokio::time::sleep(Duration::from_millis(500)).await,
        }
    }
}

fn condition<'a>(ipl: &'a IngestPipeline, type_: &str) -> Option<&'a Condition> {
    ipl.status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == type_))
}

/// The condition's (status, reason) — ("", "") when absent.
fn cond_is(ipl: &IngestPipeline, type_: &str, status: &str, reason: &str) -> bool {
    condition(ipl, type_).is_some_and(|c| c.status == status && c.reason == reason)
}

fn annotation(meta: Option<&ObjectMeta>, key: &str) -> Option<String> {
    meta.and_then(|m| m.annotations.as_ref())
        .and_then(|a| a.get(key).cloned())
}

fn sts_template_annotation(sts: &StatefulSet, key: &str) -> Option<String> {
    annotation(sts.spec.template.metadata.as_ref(), key)
}

fn deploy_template_annotation(d: &Deployment, key: &str) -> Option<String> {
    annotation(d.spec.template.metadata.as_ref(), key)
}

fn config_json(cm: &ConfigMap) -> Result<(String, Value)> {
    let text = cm
        .data
        .as_ref()
        .and_then(|d| d.get(CONFIG_FILE))
        .cloned()
        .with_context(|| format!("ConfigMap has no {CONFIG_FILE}"))?;
    let value = serde_json::from_str(&text).context("pipeline.json is JSON")?;
    Ok((text, value))
}

fn expected_labels(component: &str) -> BTreeMap<String, String> {
    [
        ("app.kubernetes.io/name", "sluice"),
        ("app.kubernetes.io/instance", NAME),
        ("app.kubernetes.io/component", component),
        ("app.kubernetes.io/managed-by", "sluice-operator"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

/// Labels as expected and exactly one owner reference: the pipeline, as controller.
fn check_owned(kind: &str, meta: &ObjectMeta, component: &str, owner: &IngestPipeline) {
    assert_eq!(
        meta.labels.as_ref(),
        Some(&expected_labels(component)),
        "{kind} labels"
    );
    let refs = meta.owner_references.as_deref().unwrap_or_default();
    assert_eq!(refs.len(), 1, "{kind} owner references: {refs:?}");
    let r = &refs[0];
    assert_eq!(
        r.api_version, "sluice.dev/v1alpha1",
        "{kind} owner apiVersion"
    );
    assert_eq!(r.kind, "IngestPipeline", "{kind} owner kind");
    assert_eq!(r.name, NAME, "{kind} owner name");
    assert_eq!(
        Some(&r.uid),
        owner.metadata.uid.as_ref(),
        "{kind} owner uid"
    );
    assert_eq!(r.controller, Some(true), "{kind} owner is the controller");
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

fn worker_replicas(sts: &StatefulSet) -> Option<i32> {
    sts.spec.replicas
}

fn deployment_replicas(d: &Deployment) -> Option<i32> {
    d.spec.replicas
}

async fn pods_of(op: &Operator, component: &str) -> Result<Vec<Pod>> {
    let lp = ListParams::default().labels(&format!(
        "app.kubernetes.io/instance={NAME},app.kubernetes.io/component={component}"
    ));
    Ok(op
        .api::<Pod>()
        .list(&lp)
        .await
        .context("listing pods")?
        .items)
}

/// Waits until `n` pods of the component exist (created by the real controllers).
async fn wait_pods(op: &Operator, component: &str, n: usize) -> Result<Vec<Pod>> {
    let deadline = Instant::now() + CONVERGE;
    loop {
        let pods: Vec<Pod> = pods_of(op, component)
            .await?
            .into_iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .collect();
        if pods.len() == n {
            return Ok(pods);
        }
        if Instant::now() > deadline {
            let names: Vec<String> = pods.iter().map(|p| p.name_any()).collect();
            bail!("{n} {component} pods: not within {CONVERGE:?}; there are {names:?}");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

// ---------------------------------------------------------------------------------------
// The tests.
// ---------------------------------------------------------------------------------------

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

/// observedGeneration, the four conditions with reasons, workers ready/desired; pods made
/// ready as the kubelet would → workersReady and Ready follow.
#[tokio::test]
async fn status_conditions_follow_pod_readiness() -> Result<()> {
    let Some(op) = Operator::start("op-status").await? else {
        return Ok(());
    };
    op.create_secret().await?;
    op.create_pipeline(&pipeline(json!({ "worker": { "replicas": 2 } })))
        .await?;

    let ipl = op
        .wait_status("initial status", CONVERGE, |ipl| {
            cond_is(ipl, "Ready", "False", "WorkersNotReady")
        })
        .await?;
    let st = ipl.status.as_ref().expect("status");
    assert_eq!(st.observed_generation, ipl.metadata.generation);
    assert_eq!((st.workers_ready, st.workers_desired), (0, 2));
    assert_eq!(st.workers.as_deref(), Some("0/2"));
    assert!(!st.generator_ready);
    let ready = condition(&ipl, "Ready").expect("Ready");
    assert_eq!(ready.message, "0 of 2 workers ready");
    assert_eq!(ready.observed_generation, ipl.metadata.generation);
    assert!(cond_is(&ipl, "Progressing", "True", "RollingOut"), "{st:?}");
    assert!(cond_is(&ipl, "Degraded", "False", "AsExpected"), "{st:?}");
    assert!(cond_is(&ipl, "Suspended", "False", "Running"), "{st:?}");
    assert_eq!(st.conditions.len(), 4, "exactly four conditions");

    // Play the kubelet: one worker ready first, then the rest and the generator.
    wait_pods(&op, "worker", 2).await?;
    op.make_pod_ready("shop-worker-0").await?;
    let ipl = op
        .wait_status("1 of 2 workers ready", CONVERGE, |ipl| {
            ipl.status.as_ref().is_some_and(|s| s.workers_ready == 1)
        })
        .await?;
    assert!(cond_is(&ipl, "Ready", "False", "WorkersNotReady"));
    assert_eq!(
        condition(&ipl, "Ready").map(|c| c.message.as_str()),
        Some("1 of 2 workers ready")
    );

    op.make_pod_ready("shop-worker-1").await?;
    let ipl = op
        .wait_status("workers ready, generator not", CONVERGE, |ipl| {
            cond_is(ipl, "Ready", "False", "GeneratorNotReady")
        })
        .await?;
    assert_eq!(ipl.status.as_ref().map(|s| s.workers_ready), Some(2));

    let generator = wait_pods(&op, "generator", 1).await?;
    op.make_pod_ready(&generator[0].name_any()).await?;
    let ipl = op
        .wait_status("Ready", CONVERGE, |ipl| {
            cond_is(ipl, "Ready", "True", "AllReady")
        })
        .await?;
    let st = ipl.status.as_ref().expect("status");
    assert_eq!((st.workers_ready, st.workers_desired), (2, 2));
    assert_eq!(st.workers.as_deref(), Some("2/2"));
    assert!(st.generator_ready);
    assert_eq!(
        condition(&ipl, "Ready").map(|c| c.message.as_str()),
        Some("2 of 2 workers ready, generator ready")
    );
    assert!(cond_is(&ipl, "Progressing", "False", "RolledOut"), "{st:?}");
    assert!(cond_is(&ipl, "Degraded", "False", "AsExpected"), "{st:?}");
    // No kubelet, no endpoints: no figures.
    assert_eq!(st.rows_loaded, None);

    // Readiness flips are recorded as Events.
    let deadline = Instant::now() + Duration::from_secs(10);
    while op.events("Ready").await?.is_empty() {
        ensure!(
            Instant::now() < deadline,
            "no Ready Event about the pipeline"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    op.shutdown().await
}

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
    let deadline = Instant::now() + Duration::from_secs(10);
    while op.events("Recovered").await?.is_empty() {
        ensure!(Instant::now() < deadline, "no Recovered Event");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
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

/// The operator's finalizer: added to every pipeline; on deletion a reported backlog
/// (here faked in the status, as the workers' figures would leave it) gives a Warning
/// Event DeletedWithBacklog, and the pipeline goes away at once.
#[tokio::test]
async fn deleting_with_a_backlog_warns_and_does_not_block() -> Result<()> {
    let Some(op) = Operator::start("op-backlog").await? else {
        return Ok(());
    };
    op.create_secret().await?;
    op.create_pipeline(&pipeline(json!({}))).await?;
    let api = op.api::<IngestPipeline>();
    wait_for(&api, NAME, "the operator's finalizer", CONVERGE, |ipl| {
        ipl.finalizers()
            .iter()
            .any(|f| f == sluice_operator::deletion::FINALIZER)
    })
    .await?;
    op.wait_status("a status", CONVERGE, |ipl| {
        condition(ipl, "Ready").is_some()
    })
    .await?;
    api.patch_status(
        NAME,
        &PatchParams::default(),
        &Patch::Merge(json!({ "status": { "backlogFiles": 5, "lagSeconds": 42.0 } })),
    )
    .await
    .context("faking a reported backlog")?;
    api.delete(NAME, &DeleteParams::default()).await?;
    wait_gone(api, NAME, CONVERGE).await?;
    let events = op
        .events(sluice_operator::deletion::DELETED_WITH_BACKLOG)
        .await?;
    let note = events
        .iter()
        .find(|e| e.type_.as_deref() == Some("Warning"))
        .and_then(|e| e.note.clone())
        .with_context(|| format!("a Warning Event DeletedWithBacklog: {events:?}"))?;
    assert!(
        note.contains("5 landed file(s) not loaded") && note.contains("shop-landing"),
        "{note}"
    );
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

/// The scale subresource (`kubectl scale ipl/shop --replicas 3`, HorizontalPodAutoscalers)
/// reads and writes spec.worker.replicas and reports the worker pods' selector.
#[tokio::test]
async fn the_scale_subresource_sets_worker_replicas() -> Result<()> {
    let Some(op) = Operator::start("op-scale").await? else {
        return Ok(());
    };
    op.create_secret().await?;
    op.create_pipeline(&pipeline(json!({}))).await?;
    op.wait_children().await?;
    let ipl = op
        .wait_status("a selector in status", CONVERGE, |ipl| {
            ipl.status.as_ref().is_some_and(|s| s.selector.is_some())
        })
        .await?;
    let selector = ipl.status.and_then(|s| s.selector).context("selector")?;
    let api = op.api::<IngestPipeline>();
    let scale = api
        .get_scale("shop")
        .await
        .context("GET the scale subresource")?;
    assert_eq!(
        scale.spec.and_then(|s| s.replicas),
        Some(2),
        "the example's 2 workers"
    );
    let status = scale.status.context("scale status")?;
    assert_eq!(status.selector.as_deref(), Some(selector.as_str()));
    // The selector finds exactly the worker pods.
    wait_pods(&op, "worker", 2).await?;
    let pods: Api<Pod> = op.api();
    let found = pods
        .list(&kube::api::ListParams::default().labels(&selector))
        .await?;
    assert!(
        found
            .items
            .iter()
            .all(|p| p.name_any().starts_with("shop-worker-"))
            && !found.items.is_empty(),
        "{selector} selects {:?}",
        found.items.iter().map(|p| p.name_any()).collect::<Vec<_>>()
    );

    api.patch_scale(
        "shop",
        &PatchParams::default(),
        &Patch::Merge(&json!({ "spec": { "replicas": 3 } })),
    )
    .await
    .context("PATCH the scale subresource")?;
    let stored = api.get("shop").await?;
    assert_eq!(
        stored.spec.worker.replicas, 3,
        "written into spec.worker.replicas"
    );
    wait_for(
        &op.api::<StatefulSet>(),
        "shop-worker",
        "StatefulSet replicas 3 after a scale",
        CONVERGE,
        |s| worker_replicas(s) == Some(3),
    )
    .await?;
    // The CRD's bounds hold through the subresource too.
    let refused = api
        .patch_scale(
            "shop",
            &PatchParams::default(),
            &Patch::Merge(&json!({ "spec": { "replicas": 0 } })),
        )
        .await;
    assert!(
        refused.is_err(),
        "replicas 0 is refused (spec.suspend scales to zero)"
    );
    op.shutdown().await
}

/// suspend: true → generator and workers at 0 (pods gone), Suspended True, Ready False;
/// volumes and config kept; suspend: false → back to 1 and 2.
#[tokio::test]
async fn suspend_scales_to_zero_and_resume_restores() -> Result<()> {
    let Some(op) = Operator::start("op-suspend").await? else {
        return Ok(());
    };
    op.create_secret().await?;
    op.create_pipeline(&pipeline(json!({}))).await?;
    op.wait_children().await?;
    wait_pods(&op, "worker", 2).await?;

    op.patch_spec(json!({ "suspend": true })).await?;
    let ipl = op
        .wait_status("Suspended", CONVERGE, |ipl| {
            cond_is(ipl, "Suspended", "True", "Suspended")
        })
        .await?;
    assert!(cond_is(&ipl, "Ready", "False", "Suspended"));
    assert_eq!(ipl.status.as_ref().map(|s| s.workers_desired), Some(0));
    let sts = op.api::<StatefulSet>().get("shop-worker").await?;
    assert_eq!(worker_replicas(&sts), Some(0));
    let d = op.api::<Deployment>().get("shop-generator").await?;
    assert_eq!(deployment_replicas(&d), Some(0));
    wait_pods(&op, "worker", 0).await?;
    wait_pods(&op, "generator", 0).await?;
    // Everything else stays.
    op.api::<ConfigMap>().get("shop-config").await?;
    op.api::<PersistentVolumeClaim>()
        .get("shop-landing")
        .await?;
    op.api::<PersistentVolumeClaim>()
        .get("checkpoint-shop-worker-0")
        .await?;

    op.patch_spec(json!({ "suspend": false })).await?;
    let ipl = op
        .wait_status("resumed", CONVERGE, |ipl| {
            cond_is(ipl, "Suspended", "False", "Running")
        })
        .await?;
    assert_eq!(ipl.status.as_ref().map(|s| s.workers_desired), Some(2));
    assert!(!cond_is(&ipl, "Ready", "False", "Suspended"));
    let sts = op.api::<StatefulSet>().get("shop-worker").await?;
    assert_eq!(worker_replicas(&sts), Some(2));
    let d = op.api::<Deployment>().get("shop-generator").await?;
    assert_eq!(deployment_replicas(&d), Some(1));
    wait_pods(&op, "worker", 2).await?;
    wait_pods(&op, "generator", 1).await?;
    for reason in ["Suspended", "Resumed"] {
        ensure!(
            !op.events(reason).await?.is_empty(),
            "an Event with reason {reason}"
        );
    }
    op.shutdown().await
}

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

/// Deleting the pipeline garbage-collects every child (and their pods); the workers'
/// checkpoint claims stay (StatefulSet semantics, documented).
#[tokio::test]
async fn deleting_the_pipeline_garbage_collects_children() -> Result<()> {
    let Some(op) = Operator::start("op-gc").await? else {
        return Ok(());
    };
    op.create_secret().await?;
    op.create_pipeline(&pipeline(json!({}))).await?;
    op.wait_children().await?;
    wait_pods(&op, "worker", 2).await?;
    wait_pods(&op, "generator", 1).await?;

    op.api::<IngestPipeline>()
        .delete(NAME, &DeleteParams::default())
        .await
        .context("deleting the IngestPipeline")?;
    wait_gone(op.api::<IngestPipeline>(), NAME, Duration::from_secs(30)).await?;

    let started = Instant::now();
    // All concurrently: the garbage collector works through them together.
    let (a, b, c, d, e, f) = tokio::join!(
        wait_gone(op.api::<StatefulSet>(), "shop-worker", GC_TIMEOUT),
        wait_gone(op.api::<Deployment>(), "shop-generator", GC_TIMEOUT),
        wait_gone(op.api::<ConfigMap>(), "shop-config", GC_TIMEOUT),
        wait_gone(op.api::<Service>(), "shop-worker", GC_TIMEOUT),
        wait_gone(op.api::<ServiceAccount>(), "shop-sluice", GC_TIMEOUT),
        wait_pods(&op, "worker", 0),
    );
    let gc = [a, b, c, d, e, f.map(|_| ())]
        .into_iter()
        .collect::<Result<Vec<()>>>();
    if let Err(e) = gc {
        bail!(
            "{e:#}\nthe end of the kube-controller-manager log:\n{}",
            op.env.log_tail("kube-controller-manager")
        );
    }
    wait_pods(&op, "worker", 0).await?;
    wait_pods(&op, "generator", 0).await?;
    eprintln!(
        "operator_api: children garbage-collected {:.1} s after the pipeline was deleted",
        started.elapsed().as_secs_f64()
    );
    // Checkpoint claims are never deleted by a StatefulSet: they outlive the pipeline.
    op.api::<PersistentVolumeClaim>()
        .get("checkpoint-shop-worker-0")
        .await
        .context("checkpoint claims are kept")?;
    // So does the landing claim (deleteClaim: false), with its unloaded files...
    let kept = op
        .api::<PersistentVolumeClaim>()
        .get("shop-landing")
        .await
        .context("the landing claim is kept")?;
    assert!(
        kept.metadata.deletion_timestamp.is_none(),
        "not being deleted"
    );
    // ...and a pipeline created again under the same name takes it over as it is.
    op.create_pipeline(&pipeline(json!({}))).await?;
    let again = op.wait_children().await?;
    assert_eq!(
        again.landing.metadata.uid, kept.metadata.uid,
        "the same claim, re-adopted by name"
    );
    op.shutdown().await
}

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
    let deadline = Instant::now() + CONVERGE;
    while pdbs.get_opt(&name).await?.is_some() {
        ensure!(
            Instant::now() < deadline,
            "the PodDisruptionBudget is still there"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
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
    let deadline = Instant::now() + CONVERGE;
    loop {
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
        if listed {
            break;
        }
        if Instant::now() >= deadline {
            let pod = op.api::<Pod>().get("shop-worker-0").await?;
            bail!(
                "the worker pod never appeared in Endpoints shop-worker: {}\npod status: {}",
                serde_json::to_string(&ep.map(|e| e.subsets))?,
                serde_json::to_string(&pod.status)?
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
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

// ---------------------------------------------------------------------------------------
// CloudNativePG by name, and the PodMonitor (CRDs of other projects, installed here).
// ---------------------------------------------------------------------------------------

/// Installs a minimal CRD (any fields kept) for `group`/v1 `kind`, and waits until its
/// resources are served. Cluster-wide: only the one test that needs it installs it.
async fn install_foreign_crd(client: &Client, group: &str, kind: &str, plural: &str) -> Result<()> {
    let name = format!("{plural}.{group}");
    let crd: CustomResourceDefinition = serde_json::from_value(json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": { "name": name },
        "spec": {
            "group": group,
            "scope": "Namespaced",
            "names": { "kind": kind, "plural": plural, "singular": kind.to_lowercase(),
                       "listKind": format!("{kind}List") },
            "versions": [{
                "name": "v1", "served": true, "storage": true,
                "schema": { "openAPIV3Schema": {
                    "type": "object", "x-kubernetes-preserve-unknown-fields": true } },
            }],
        },
    }))?;
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    crds.patch(
        &name,
        &PatchParams::apply(TEST_MANAGER).force(),
        &Patch::Apply(&crd),
    )
    .await
    .with_context(|| format!("applying CRD {name}"))?;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let served = client
            .list_api_group_resources(&format!("{group}/v1"))
            .await
            .is_ok_and(|l| l.resources.iter().any(|r| r.name == plural));
        if served {
            return Ok(());
        }
        ensure!(
            Instant::now() < deadline,
            "CRD {name} not served after 30 s"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
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
    let deadline = Instant::now() + CONVERGE;
    while pms.get_opt("shop-sluice").await?.is_some() {
        ensure!(
            Instant::now() < deadline,
            "the PodMonitor is deleted when disabled"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let ipl = op
        .wait_status("no Monitoring condition", CONVERGE, |ipl| {
            condition(ipl, "Monitoring").is_none()
        })
        .await?;
    assert!(cond_is(&ipl, "Degraded", "False", "AsExpected"));
    op.shutdown().await
}
