//! The controller: watches IngestPipelines and their children, applies the children with
//! server-side apply, and writes the status through the status subresource.

use std::collections::HashMap;
use std::fmt::Debug;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{Endpoints, PersistentVolumeClaim, Secret};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::{Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use sluice_core::config::SslMode;
use thiserror::Error;

use crate::children::{self, BuildInputs, MANAGED_BY};
use crate::crd::{FIELD_MANAGER, IngestPipeline};
use crate::metrics::Metrics;
use crate::metrics_scrape::{self, Figures};
use crate::reason::Reason;
use crate::status::{self, Observed, Problem, Rollout};
use crate::validate::validate;

/// Requeue period of a healthy pipeline (status figures are refreshed at this pace).
pub const RESYNC: Duration = Duration::from_secs(30);
/// Requeue period while something is missing or rolling out (e.g. the Secret: Secrets
/// are not watched, to keep the operator's RBAC to `get` on Secrets).
pub const RECHECK: Duration = Duration::from_secs(10);
/// Figures are read from the workers at most this often per pipeline, so status writes
/// (which trigger a reconcile themselves) cannot loop.
pub const SCRAPE_EVERY: Duration = Duration::from_secs(15);

#[derive(Debug, Error)]
pub enum Error {
    #[error("applying {kind} {name}: {source}")]
    Apply {
        kind: String,
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("writing the status: {0}")]
    Status(#[source] kube::Error),
    #[error("reading Secret {name}: {source}")]
    Secret {
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("{0}")]
    Other(String),
}

impl Error {
    pub fn metric_reason(&self) -> &'static str {
        match self {
            Error::Apply { .. } => "apply",
            Error::Status(_) => "status",
            Error::Secret { .. } => "secret",
            Error::Other(_) => "other",
        }
    }
}

pub use crate::controller::{Scope, run_controller};

/// Figures last read for a pipeline: when (monotonic and wall clock) and what.
type FiguresCache = HashMap<String, (Instant, Timestamp, Option<Figures>)>;

/// Shared state of the reconciler.
pub struct Context {
    pub client: Client,
    pub recorder: Recorder,
    pub metrics: Metrics,
    /// Per pipeline (namespace/name): when figures were last read, and what was read.
    figures: Mutex<FiguresCache>,
    /// Per pipeline: consecutive failures, for the error backoff.
    failures: Mutex<HashMap<String, u32>>,
    /// Which policy version serves PodDisruptionBudgets.
    pdb: crate::pdb::PdbApi,
    /// Whether the server serves PodMonitors.
    pod_monitors: crate::monitoring::PodMonitorApi,
    /// Operator-wide settings (flags).
    pub settings: crate::Settings,
}

impl Context {
    pub fn new(client: Client, metrics: Metrics, instance: Option<String>) -> Context {
        let recorder = Recorder::new(
            client.clone(),
            Reporter {
                controller: MANAGED_BY.into(),
                instance,
            },
        );
        Context {
            client,
            recorder,
            metrics,
            figures: Mutex::default(),
            failures: Mutex::default(),
            pdb: Default::default(),
            pod_monitors: Default::default(),
            settings: Default::default(),
        }
    }

    fn note_failure(&self, key: &str) -> u32 {
        let mut f = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        let n = f.entry(key.to_string()).or_insert(0);
        *n = n.saturating_add(1);
        *n
    }

    fn note_success(&self, key: &str) {
        self.failures
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(key);
    }
}

/// Error backoff: 2 s, 4 s, 8 s … capped at 5 minutes.
pub fn backoff(failures: u32) -> Duration {
    let secs = 2u64.saturating_pow(failures.clamp(1, 9));
    Duration::from_secs(secs.min(300))
}

fn key(ipl: &IngestPipeline) -> String {
    format!("{}/{}", ipl.namespace().unwrap_or_default(), ipl.name_any())
}

/// Whether the Secret holds key `key` (in data or stringData).
fn secret_has(secret: &Secret, key: &str) -> bool {
    secret.data.as_ref().is_some_and(|d| d.contains_key(key))
        || secret
            .string_data
            .as_ref()
            .is_some_and(|d| d.contains_key(key))
}

/// The Secret's layout: the separate keys when it has `host` and no `uri`, else `uri`
/// (also for a missing Secret: the pods cannot start until it exists anyway).
pub fn secret_layout(secret: Option<&Secret>) -> children::SecretLayout {
    match secret {
        Some(s) if secret_has(s, "host") && !secret_has(s, "uri") => children::SecretLayout::Keys,
        _ => children::SecretLayout::Uri,
    }
}

/// The Secret check: a problem (missing Secret or keys) and its resourceVersion.
pub fn check_secret(
    secret: Option<&Secret>,
    ipl: &IngestPipeline,
    namespace: &str,
) -> (Option<Problem>, Option<String>) {
    let name = ipl
        .spec
        .postgres
        .secret_ref
        .as_ref()
        .map_or("", |s| s.name.as_str());
    let Some(secret) = secret else {
        return (
            Some(Problem::new(
                Reason::SecretNotFound,
                format!(
                    "Secret {name} not found in namespace {namespace}: create it with key uri \
                     (postgres://user:password@host:5432/db) or keys host, port, dbname, user, password"
                ),
            )),
            None,
        );
    };
    let has = |k: &str| secret_has(secret, k);
    let version = secret.metadata.resource_version.clone();
    if !has("uri") && !has("host") {
        return (
            Some(Problem::new(
                Reason::SecretIncomplete,
                format!(
                    "Secret {name} in namespace {namespace} has neither key uri nor key host: add \
                     uri (postgres://user:password@host:5432/db) or host, port, dbname, user and password"
                ),
            )),
            version,
        );
    }
    if ipl.spec.postgres.sslmode == Some(SslMode::VerifyFull) && !has(crate::tls::CA_KEY) {
        return (
            Some(Problem::new(
                Reason::SecretIncomplete,
                format!(
                    "sslmode verify-full needs the server's CA certificate: add key ca.crt to \
                     Secret {name} in namespace {namespace}, or use sslmode require"
                ),
            )),
            version,
        );
    }
    (None, version)
}

async fn apply<K>(client: &Client, namespace: &str, obj: &K) -> Result<K, Error>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + Clone
        + DeserializeOwned
        + Serialize
        + Debug,
{
    let api: Api<K> = Api::namespaced(client.clone(), namespace);
    let name = obj.meta().name.clone().unwrap_or_default();
    api.patch(
        &name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(obj),
    )
    .await
    .map_err(|source| Error::Apply {
        kind: K::kind(&()).to_string(),
        name,
        source,
    })
}

/// Applies the pipeline's NetworkPolicies, or deletes ours when they are off. Not
/// watched: re-applied on every reconcile.
async fn sync_network_policies(
    ctx: &Context,
    ipl: &IngestPipeline,
    ns: &str,
    desired: &[NetworkPolicy],
) -> Result<(), Error> {
    if !desired.is_empty() {
        for p in desired {
            apply(&ctx.client, ns, p).await?;
        }
        return Ok(());
    }
    let api: Api<NetworkPolicy> = Api::namespaced(ctx.client.clone(), ns);
    for n in [ipl.worker_name(), ipl.generator_name()] {
        let fail = |source| Error::Apply {
            kind: "NetworkPolicy".into(),
            name: n.clone(),
            source,
        };
        let ours = api.get_opt(&n).await.map_err(fail)?.is_some_and(|p| {
            p.owner_references()
                .iter()
                .any(|r| Some(&r.uid) == ipl.metadata.uid.as_ref())
        });
        if ours {
            match api.delete(&n, &Default::default()).await {
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(e) => return Err(fail(e)),
            }
        }
    }
    Ok(())
}

/// Keeps the claim templates of an existing StatefulSet: Kubernetes refuses changes to
/// them. Returns true when the spec asked for a change that is not applied.
fn keep_claim_templates(desired: &mut StatefulSet, existing: Option<&StatefulSet>) -> bool {
    let Some(old) = existing.and_then(|s| s.spec.volume_claim_templates.clone()) else {
        return false;
    };
    let spec = &mut desired.spec;
    let new = spec.volume_claim_templates.clone().unwrap_or_default();
    let summary = |v: &[PersistentVolumeClaim]| -> Vec<(Option<String>, Option<String>)> {
        v.iter()
            .map(|c| {
                let s = c.spec.as_ref();
                (
                    s.and_then(|s| s.storage_class_name.clone()),
                    s.and_then(|s| s.resources.as_ref())
                        .and_then(|r| r.requests.as_ref())
                        .and_then(|r| r.get("storage"))
                        .map(|q| q.0.clone()),
                )
            })
            .collect()
    };
    let old_summary = summary(&old);
    let mut differs = summary(&new) != old_summary;
    // An unset storage class in the spec matches whatever default class was filled in.
    if differs
        && new.len() == old.len()
        && summary(&new)
            .iter()
            .zip(&old_summary)
            .all(|(n, o)| n.1 == o.1 && (n.0.is_none() || n.0 == o.0))
    {
        differs = false;
    }
    // Re-apply the templates as they are (only the fields we set), so nothing changes.
    spec.volume_claim_templates = Some(
        old.into_iter()
            .zip(new.iter().map(Some).chain(std::iter::repeat(None)))
            .map(|(mut o, n)| {
                o.status = None;
                o.metadata = n.map(|n| n.metadata.clone()).unwrap_or(o.metadata);
                o.metadata.creation_timestamp = None;
                if let (Some(os), Some(ns)) = (o.spec.as_mut(), n.and_then(|n| n.spec.as_ref()))
                    && ns.storage_class_name.is_none()
                {
                    // Leave the defaulted class to its owner (the API server).
                    os.storage_class_name = None;
                }
                o
            })
            .collect(),
    );
    differs
}

/// A problem the workers report through `sluice_worker_degraded` (the first cause, in
/// the order of `DegradedCause`), for the Degraded condition.
fn worker_problem(f: &Figures) -> Option<Problem> {
    let first = f.degraded.iter().next()?;
    let all: Vec<&str> = f.degraded.iter().map(|c| c.code()).collect();
    Some(Problem::new(
        Reason::Worker(*first),
        format!("Workers report {}: {}", all.join(", "), first.advice()),
    ))
}

/// Reads the workers' figures at most every SCRAPE_EVERY; never fails.
async fn figures(ctx: &Context, ipl: &IngestPipeline, ns: &str) -> (Option<Figures>, Timestamp) {
    let k = key(ipl);
    if let Some((at, ts, f)) = ctx
        .figures
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(&k)
        .cloned()
        && at.elapsed() < SCRAPE_EVERY
    {
        return (f, ts);
    }
    let api: Api<Endpoints> = Api::namespaced(ctx.client.clone(), ns);
    let svc = ipl.service_name();
    let addrs = match api.get_opt(&svc).await {
        Ok(Some(ep)) => metrics_scrape::addresses(&ep, "metrics"),
        Ok(None) => Vec::new(),
        Err(e) => {
            tracing::debug!(error = %e, "cannot read Endpoints {ns}/{svc}");
            Vec::new()
        }
    };
    let f = metrics_scrape::scrape(&addrs).await;
    let ts = now_seconds();
    ctx.figures
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(k, (Instant::now(), ts, f.clone()));
    (f, ts)
}

/// Now, truncated to whole seconds (metav1.Time's precision), so stored times compare equal.
fn now_seconds() -> Timestamp {
    let now = Timestamp::now();
    Timestamp::from_second(now.as_second()).unwrap_or(now)
}

async fn publish(ctx: &Context, ipl: &IngestPipeline, t: &status::Transition) {
    let ev = Event {
        type_: if t.warning {
            EventType::Warning
        } else {
            EventType::Normal
        },
        reason: t.reason.into(),
        note: Some(t.note.chars().take(1000).collect()),
        action: "Reconcile".into(),
        secondary: None,
    };
    if let Err(e) = ctx.recorder.publish(&ev, &ipl.object_ref(&())).await {
        tracing::warn!(error = %e, reason = %t.reason, "cannot publish event");
    }
}

async fn write_status(
    ctx: &Context,
    ipl: &IngestPipeline,
    ns: &str,
    obs: &Observed,
    figures_time: Timestamp,
) -> Result<(), Error> {
    let now = now_seconds();
    let mut new = status::compute(ipl.status.as_ref(), obs, now);
    if obs.figures.is_some() {
        new.figures_time = Some(figures_time.to_string());
    }
    if ipl.status.as_ref() == Some(&new) {
        return Ok(());
    }
    let api: Api<IngestPipeline> = Api::namespaced(ctx.client.clone(), ns);
    let patch = serde_json::json!({ "status": new });
    api.patch_status(
        &ipl.name_any(),
        &PatchParams::default(),
        &Patch::Merge(&patch),
    )
    .await
    .map_err(Error::Status)?;
    let old = ipl
        .status
        .as_ref()
        .map(|s| s.conditions.as_slice())
        .unwrap_or(&[]);
    for t in status::transitions(old, &new.conditions) {
        publish(ctx, ipl, &t).await;
    }
    Ok(())
}

/// One reconciliation of one pipeline.
pub async fn reconcile(ipl: Arc<IngestPipeline>, ctx: Arc<Context>) -> Result<Action, Error> {
    let started = Instant::now();
    ctx.metrics.reconciliations.inc();
    let result = reconcile_inner(&ipl, &ctx).await;
    ctx.metrics
        .duration
        .observe(started.elapsed().as_secs_f64());
    match &result {
        Ok(_) => ctx.note_success(&key(&ipl)),
        Err(e) => {
            ctx.metrics
                .errors
                .with_label_values(&[e.metric_reason()])
                .inc();
        }
    }
    result
}

async fn reconcile_inner(ipl: &IngestPipeline, ctx: &Context) -> Result<Action, Error> {
    let ns = ipl
        .namespace()
        .ok_or_else(|| Error::Other("IngestPipeline without a namespace".into()))?;
    if ipl.metadata.deletion_timestamp.is_some() {
        return crate::deletion::finish(ctx, ipl, &ns).await;
    }
    crate::deletion::ensure_finalizer(ctx, ipl, &ns).await?;
    let name = ipl.name_any();
    let client = &ctx.client;
    let sts_api: Api<StatefulSet> = Api::namespaced(client.clone(), &ns);
    let existing_sts = sts_api
        .get_opt(&ipl.worker_name())
        .await
        .map_err(|source| Error::Apply {
            kind: "StatefulSet".into(),
            name: ipl.worker_name(),
            source,
        })?;

    let mut obs = Observed {
        generation: ipl.metadata.generation,
        suspended: ipl.spec.suspend,
        selector: Some(children::selector_string(&name, "worker")),
        ..Default::default()
    };

    if let Err(message) = validate(ipl).and_then(|()| ctx.settings.images.check(ipl)) {
        tracing::info!(pipeline = %key(ipl), %message, "invalid spec");
        obs.problem = Some(Problem::new(Reason::InvalidSpec, message));
        obs.workers = existing_sts
            .as_ref()
            .map(Rollout::of_stateful_set)
            .unwrap_or_default();
        let dep_api: Api<Deployment> = Api::namespaced(client.clone(), &ns);
        if let Ok(Some(d)) = dep_api.get_opt(&ipl.generator_name()).await {
            obs.generator = Rollout::of_deployment(&d);
        }
        write_status(ctx, ipl, &ns, &obs, now_seconds()).await?;
        return Ok(Action::requeue(Duration::from_secs(300)));
    }

    let credentials = crate::credentials::resolve(client, ipl, &ns).await?;
    let inputs = BuildInputs {
        secret_version: credentials.version,
        secret_layout: credentials.layout,
        network: ctx.settings.network.clone(),
        secret_has_ca: credentials.has_ca,
    };
    obs.note = crate::tls::weak_tls_note(inputs.sslmode(ipl));
    let mut built = children::build(ipl, &inputs);
    if keep_claim_templates(&mut built.worker, existing_sts.as_ref()) {
        publish(
            ctx,
            ipl,
            &status::Transition {
                warning: true,
                reason: Reason::CheckpointSettingsFixed,
                note: "spec.checkpoints cannot change once the workers exist (StatefulSet \
                       claim templates are immutable); the existing checkpoint volumes are kept"
                    .into(),
            },
        )
        .await;
    }

    let applied: Result<(Deployment, StatefulSet), Error> = async {
        apply(client, &ns, &built.service_account).await?;
        apply(client, &ns, &built.config_map).await?;
        if let Some(pvc) = &built.landing_claim {
            apply(client, &ns, pvc).await?;
        }
        apply(client, &ns, &built.service).await?;
        let d = apply(client, &ns, &built.generator).await?;
        let s = apply(client, &ns, &built.worker).await?;
        crate::pdb::sync(
            client,
            &ctx.pdb,
            ipl,
            &ns,
            &ipl.worker_name(),
            built.disruption_budget.as_ref(),
        )
        .await?;
        sync_network_policies(ctx, ipl, &ns, &built.network_policies).await?;
        Ok((d, s))
    }
    .await;
    let (deployment, sts) = match applied {
        Ok(x) => x,
        Err(e) => {
            tracing::warn!(pipeline = %key(ipl), error = %e, "apply failed");
            obs.problem = Some(Problem::new(Reason::ApplyFailed, e.to_string()));
            obs.workers = existing_sts
                .as_ref()
                .map(Rollout::of_stateful_set)
                .unwrap_or_default();
            if let Err(se) = write_status(ctx, ipl, &ns, &obs, now_seconds()).await {
                tracing::warn!(error = %se, "cannot write status after apply failure");
            }
            return Err(e);
        }
    };

    obs.monitoring = crate::monitoring::sync(client, &ctx.pod_monitors, ipl, &ns).await?;
    obs.problem = credentials.problem;
    obs.workers = Rollout::of_stateful_set(&sts);
    obs.generator = Rollout::of_deployment(&deployment);
    let (figs, figures_time) = figures(ctx, ipl, &ns).await;
    obs.figures = figs;
    if obs.problem.is_none() {
        obs.problem = obs.figures.as_ref().and_then(worker_problem);
    }
    write_status(ctx, ipl, &ns, &obs, figures_time).await?;

    let settled = obs.workers.up_to_date
        && obs.workers.ready >= obs.workers.desired
        && obs.generator.up_to_date
        && obs.generator.ready >= obs.generator.desired;
    Ok(if obs.problem.is_some() || !settled {
        Action::requeue(RECHECK)
    } else {
        Action::requeue(RESYNC)
    })
}

/// Requeues a failed reconciliation with exponential backoff.
pub fn error_policy(ipl: Arc<IngestPipeline>, error: &Error, ctx: Arc<Context>) -> Action {
    let n = ctx.note_failure(&key(&ipl));
    let wait = backoff(n);
    tracing::warn!(pipeline = %key(&ipl), %error, failures = n, retry_in_s = wait.as_secs(), "reconcile failed");
    Action::requeue(wait)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::sample;
    use k8s_openapi::ByteString;

    fn secret(keys: &[&str]) -> Secret {
        let mut s = Secret {
            data: Some(
                keys.iter()
                    .map(|k| (k.to_string(), ByteString(b"x".to_vec())))
                    .collect(),
            ),
            ..Default::default()
        };
        s.metadata.resource_version = Some("77".into());
        s
    }

    #[test]
    fn secret_missing_says_so() {
        let (p, v) = check_secret(None, &sample(), "data");
        let p = p.expect("problem");
        assert_eq!(p.reason, Reason::SecretNotFound);
        assert!(
            p.message
                .starts_with("Secret pg-credentials not found in namespace data"),
            "{}",
            p.message
        );
        assert_eq!(v, None);
    }

    #[test]
    fn secret_keys_checked() {
        let (p, v) = check_secret(Some(&secret(&["uri"])), &sample(), "data");
        assert_eq!(p, None);
        assert_eq!(v.as_deref(), Some("77"));
        let (p, _) = check_secret(Some(&secret(&["host", "password"])), &sample(), "data");
        assert_eq!(p, None);
        let (p, _) = check_secret(Some(&secret(&["password"])), &sample(), "data");
        assert_eq!(p.expect("incomplete").reason, Reason::SecretIncomplete);
        let mut ipl = sample();
        ipl.spec.postgres.sslmode = Some(SslMode::VerifyFull);
        let (p, _) = check_secret(Some(&secret(&["uri"])), &ipl, "data");
        assert!(p.expect("ca").message.contains("ca.crt"));
        let (p, _) = check_secret(Some(&secret(&["uri", "ca.crt"])), &ipl, "data");
        assert_eq!(p, None);
    }

    #[test]
    fn backoff_grows_and_caps() {
        assert_eq!(backoff(1), Duration::from_secs(2));
        assert_eq!(backoff(2), Duration::from_secs(4));
        assert_eq!(backoff(100), Duration::from_secs(300));
    }

    #[test]
    fn claim_templates_are_kept() {
        let ipl = sample();
        let built = children::build(&ipl, &BuildInputs::default());
        let mut existing = built.worker.clone();
        // As the API server returns it: class defaulted.
        if let Some(vct) = existing.spec.volume_claim_templates.as_mut() {
            vct[0].spec.as_mut().expect("spec").storage_class_name = Some("standard".into());
        }
        let mut same = built.worker.clone();
        assert!(!keep_claim_templates(&mut same, Some(&existing)));
        assert!(!keep_claim_templates(&mut same, None));

        let mut bigger = ipl.clone();
        bigger.spec.checkpoints.size =
            k8s_openapi::apimachinery::pkg::api::resource::Quantity("5Gi".into());
        let mut desired = children::build(&bigger, &BuildInputs::default()).worker;
        assert!(keep_claim_templates(&mut desired, Some(&existing)));
        let kept = desired
            .spec
            .volume_claim_templates
            .as_ref()
            .and_then(|v| v[0].spec.as_ref())
            .and_then(|s| s.resources.as_ref())
            .and_then(|r| r.requests.as_ref())
            .and_then(|r| r.get("storage"))
            .map(|q| q.0.clone());
        assert_eq!(kept.as_deref(), Some("1Gi"));
    }
}

#[cfg(test)]
mod worker_problem_tests {
    use super::*;
    use sluice_core::metric_names::DegradedCause;

    #[test]
    fn a_worker_degraded_cause_becomes_the_degraded_reason() {
        let mut f = Figures::default();
        assert_eq!(worker_problem(&f), None);
        f.degraded = [DegradedCause::PermissionDenied, DegradedCause::LockTimeout].into();
        let p = worker_problem(&f).expect("problem");
        assert_eq!(p.reason, Reason::Worker(DegradedCause::LockTimeout));
        assert!(
            p.message.contains("lock_timeout, permission_denied"),
            "{}",
            p.message
        );
    }
}
