//! The harness: the shared control plane, a namespace, the CRDs, the operator running
//! in-process, and polling.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail, ensure};
use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{
    ConfigMap, PersistentVolumeClaim, Pod, Secret, Service, ServiceAccount,
};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, Resource};
use serde_json::{Value, json};
use sluice_core::telemetry::Health;
use sluice_operator::children;
use sluice_operator::metrics::Metrics;
use sluice_operator::{IngestPipeline, RunOptions, Scope, Settings};
use sluice_testkit::kube_env::KubeEnv;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::fixtures::{example_path, wait_exists, wait_for};

/// Field manager of the test's own writes (never the operator's).
pub const TEST_MANAGER: &str = "operator-api-test";
/// The pipeline name every test uses (in its own namespace).
pub const NAME: &str = "shop";
/// The Secret name of `deploy/examples/postgres-credentials.yaml`.
pub const SECRET: &str = "pg-credentials";
/// Default wait for the operator to converge (it reacts to watches within ~1 s; the
/// Secret is re-checked every 10 s).
pub const CONVERGE: Duration = Duration::from_secs(45);
/// Garbage collection of a fresh CRD's dependents: the controller-manager re-reads
/// discovery every 30 s, so it can take 30-60 s.
pub const GC_TIMEOUT: Duration = Duration::from_secs(90);
/// Pause between two looks while polling.
const POLL_EVERY: Duration = Duration::from_millis(250);

// ---------------------------------------------------------------------------------------
// Polling: every wait of these tests is one look at the cluster, repeated.
// ---------------------------------------------------------------------------------------

/// What one look while polling found.
pub enum Seen<T> {
    /// What was waited for.
    Done(T),
    /// Not yet: what was seen instead, for the failure message.
    NotYet(String),
}

/// Looks every 250 ms until `look` finds what it waits for; fails after `timeout` with
/// `what` and the last state seen. An error from `look` ends the wait at once.
pub async fn poll<T>(
    what: &str,
    timeout: Duration,
    mut look: impl AsyncFnMut() -> Result<Seen<T>>,
) -> Result<T> {
    let deadline = Instant::now() + timeout;
    loop {
        let last = match look().await? {
            Seen::Done(found) => return Ok(found),
            Seen::NotYet(last) => last,
        };
        if Instant::now() > deadline {
            bail!("{what}: not within {timeout:?}; last seen: {last}");
        }
        tokio::time::sleep(POLL_EVERY).await;
    }
}

// ---------------------------------------------------------------------------------------
// A namespace, the CRD, and the operator running in-process.
// ---------------------------------------------------------------------------------------

pub struct Operator {
    pub env: &'static KubeEnv,
    /// The test's own client (admin).
    pub client: Client,
    pub ns: String,
    pub metrics: Metrics,
    pub health: Arc<Health>,
    stop: watch::Sender<bool>,
    task: Option<JoinHandle<anyhow::Result<()>>>,
}

impl Operator {
    /// Shared control plane (or `None`: skipped), a fresh namespace, the CRD installed
    /// and Established, and the operator watching that namespace.
    pub async fn start(ns: &str) -> Result<Option<Operator>> {
        Operator::start_with(ns, Scope::Namespace(ns.to_string()), Settings::default()).await
    }

    /// [`Operator::start`] with another scope and operator-wide settings (the flags).
    /// Only `ns` is created; the test creates the scope's other namespaces.
    pub async fn start_with(
        ns: &str,
        scope: Scope,
        settings: Settings,
    ) -> Result<Option<Operator>> {
        let Some(env) = KubeEnv::shared_or_skip().await? else {
            return Ok(None);
        };
        env.create_namespace(ns).await?;
        let client = env.client().await?;
        install_crd(&client).await?;
        let opts = RunOptions {
            scope,
            leader: None,
            instance: Some(format!("operator-api-test-{ns}")),
        };
        Operator::launch(env, client.clone(), ns, client, opts, settings).map(Some)
    }

    /// Runs the operator in-process on `operator` (its own client: its credentials are
    /// what the API server authorizes), while the test works with `admin`. `ns` (the
    /// test's namespace, of [`Operator::api`]) and the CRD must exist.
    pub fn launch(
        env: &'static KubeEnv,
        admin: Client,
        ns: &str,
        operator: Client,
        opts: RunOptions,
        settings: Settings,
    ) -> Result<Operator> {
        let metrics = Metrics::register(&Default::default()).context("registering metrics")?;
        let health = Health::new();
        let (stop, stop_rx) = watch::channel(false);
        let task = tokio::spawn(sluice_operator::run_with(
            operator,
            opts,
            settings,
            metrics.clone(),
            health.clone(),
            stop_rx,
        ));
        Ok(Operator {
            env,
            client: admin,
            ns: ns.to_string(),
            metrics,
            health,
            stop,
            task: Some(task),
        })
    }

    pub fn api<K>(&self) -> Api<K>
    where
        K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>,
    {
        Api::namespaced(self.client.clone(), &self.ns)
    }

    /// Stops the operator and checks that it returned cleanly.
    pub async fn shutdown(mut self) -> Result<()> {
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
    pub async fn create_secret(&self) -> Result<Secret> {
        self.create_secret_in(&self.ns).await
    }

    /// [`Operator::create_secret`] in namespace `ns`.
    pub async fn create_secret_in(&self, ns: &str) -> Result<Secret> {
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
    pub async fn create_pipeline(&self, ipl: &IngestPipeline) -> Result<IngestPipeline> {
        self.create_pipeline_in(&self.ns, ipl).await
    }

    /// [`Operator::create_pipeline`] in namespace `ns`.
    pub async fn create_pipeline_in(
        &self,
        ns: &str,
        ipl: &IngestPipeline,
    ) -> Result<IngestPipeline> {
        let api = Api::<IngestPipeline>::namespaced(self.client.clone(), ns);
        poll(
            "creating the IngestPipeline (the CRD served)",
            Duration::from_secs(30),
            async || match api.create(&PostParams::default(), ipl).await {
                Ok(created) => Ok(Seen::Done(created)),
                Err(kube::Error::Api(s)) if s.code == 404 => Ok(Seen::NotYet(s.message)),
                Err(e) => Err(e).context("creating the IngestPipeline"),
            },
        )
        .await
    }

    pub async fn patch_spec(&self, spec: Value) -> Result<IngestPipeline> {
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
    pub async fn wait_status(
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
    pub async fn wait_children(&self) -> Result<Children> {
        self.wait_children_in(&self.ns).await
    }

    /// All six children of the pipeline `shop` of namespace `ns` exist.
    pub async fn wait_children_in(&self, ns: &str) -> Result<Children> {
        let t = CONVERGE;
        let c = &self.client;
        Ok(Children {
            service_account: wait_exists(
                &Api::namespaced(c.clone(), ns),
                &children::service_account_name(NAME),
                t,
            )
            .await?,
            config_map: wait_exists(
                &Api::namespaced(c.clone(), ns),
                &children::config_map_name(NAME),
                t,
            )
            .await?,
            landing: wait_exists(
                &Api::namespaced(c.clone(), ns),
                &children::landing_claim_name(NAME),
                t,
            )
            .await?,
            service: wait_exists(
                &Api::namespaced(c.clone(), ns),
                &children::service_name(NAME),
                t,
            )
            .await?,
            generator: wait_exists(
                &Api::namespaced(c.clone(), ns),
                &children::generator_name(NAME),
                t,
            )
            .await?,
            worker: wait_exists(
                &Api::namespaced(c.clone(), ns),
                &children::worker_name(NAME),
                t,
            )
            .await?,
        })
    }

    /// Marks a pod Running and Ready, as the kubelet would once its probes pass.
    pub async fn make_pod_ready(&self, pod: &str) -> Result<()> {
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
    pub async fn events(&self, reason: &str) -> Result<Vec<Event>> {
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

    /// Waits for at least one Event about the pipeline with this reason.
    pub async fn wait_events(&self, reason: &str, timeout: Duration) -> Result<Vec<Event>> {
        poll(
            &format!("an Event {reason} about the pipeline"),
            timeout,
            async || {
                let events = self.events(reason).await?;
                Ok(if events.is_empty() {
                    Seen::NotYet("none".into())
                } else {
                    Seen::Done(events)
                })
            },
        )
        .await
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

pub struct Children {
    pub service_account: ServiceAccount,
    pub config_map: ConfigMap,
    pub landing: PersistentVolumeClaim,
    pub service: Service,
    pub generator: Deployment,
    pub worker: StatefulSet,
}

/// Applies the CRD from `crd::crd()` (server-side apply: idempotent, so every test may
/// call it) and waits until it is Established and served.
pub async fn install_crd(client: &Client) -> Result<()> {
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
    let all: Api<IngestPipeline> = Api::all(client.clone());
    poll(
        "listing IngestPipelines after the CRD is Established",
        Duration::from_secs(30),
        async || {
            Ok(match all.list(&ListParams::default().limit(1)).await {
                Ok(_) => Seen::Done(()),
                Err(e) => Seen::NotYet(e.to_string()),
            })
        },
    )
    .await
}

/// Installs a minimal CRD (any fields kept) for `group`/v1 `kind`, and waits until its
/// resources are served. Cluster-wide: only the tests that need it install it.
pub async fn install_foreign_crd(
    client: &Client,
    group: &str,
    kind: &str,
    plural: &str,
) -> Result<()> {
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
    poll(
        &format!("CRD {name} served"),
        Duration::from_secs(30),
        async || {
            let served = client
                .list_api_group_resources(&format!("{group}/v1"))
                .await
                .is_ok_and(|l| l.resources.iter().any(|r| r.name == plural));
            Ok(if served {
                Seen::Done(())
            } else {
                Seen::NotYet(format!("{plural} not in {group}/v1"))
            })
        },
    )
    .await
}
