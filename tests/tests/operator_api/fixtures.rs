//! What the tests share: the example pipeline and pipelines built in code, waits on
//! objects, and checks of conditions, labels and owners.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, Result, ensure};
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, ObjectMeta};
use kube::ResourceExt as _;
use kube::api::{Api, ListParams};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use sluice_operator::IngestPipeline;
use sluice_operator::children::CONFIG_FILE;

use crate::harness::{CONVERGE, NAME, Operator, SECRET, Seen, poll};

pub fn example_path(file: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy/examples")
        .join(file)
}

/// `deploy/examples/ingestpipeline.yaml` (pipeline `shop`).
pub fn example_pipeline() -> Result<IngestPipeline> {
    let text = std::fs::read_to_string(example_path("ingestpipeline.yaml"))
        .context("reading deploy/examples/ingestpipeline.yaml")?;
    let ipl: IngestPipeline =
        serde_yaml::from_str(&text).context("parsing deploy/examples/ingestpipeline.yaml")?;
    ensure!(ipl.name_any() == NAME, "the example is named {NAME}");
    Ok(ipl)
}

/// A pipeline built in code: `spec` merged over `postgres.secretRef: pg-credentials`.
pub fn pipeline(spec: Value) -> IngestPipeline {
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

pub fn short_json<T: Serialize>(obj: &T) -> String {
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
pub async fn wait_for<K>(
    api: &Api<K>,
    name: &str,
    what: &str,
    timeout: Duration,
    ok: impl Fn(&K) -> bool,
) -> Result<K>
where
    K: Clone + DeserializeOwned + Debug + Serialize,
{
    poll(what, timeout, async || {
        Ok(match api.get_opt(name).await {
            Ok(Some(obj)) if ok(&obj) => Seen::Done(obj),
            Ok(Some(obj)) => Seen::NotYet(short_json(&obj)),
            Ok(None) => Seen::NotYet(format!("{name} does not exist")),
            Err(e) => Seen::NotYet(e.to_string()),
        })
    })
    .await
}

pub async fn wait_exists<K>(api: &Api<K>, name: &str, timeout: Duration) -> Result<K>
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

/// Waits until `name` does not exist (any kind, typed or dynamic).
pub async fn wait_gone<K>(api: Api<K>, name: &str, timeout: Duration) -> Result<()>
where
    K: kube::Resource + Clone + DeserializeOwned + Debug + Serialize,
{
    let what = format!("{}/{name} to be gone", api.resource_url());
    poll(&what, timeout, async || {
        Ok(match api.get_opt(name).await {
            Ok(None) => Seen::Done(()),
            Ok(Some(obj)) => Seen::NotYet(short_json(&obj)),
            Err(e) => Seen::NotYet(e.to_string()),
        })
    })
    .await
}

pub fn condition<'a>(ipl: &'a IngestPipeline, type_: &str) -> Option<&'a Condition> {
    ipl.status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == type_))
}

/// The condition's (status, reason) — ("", "") when absent.
pub fn cond_is(ipl: &IngestPipeline, type_: &str, status: &str, reason: &str) -> bool {
    condition(ipl, type_).is_some_and(|c| c.status == status && c.reason == reason)
}

fn annotation(meta: Option<&ObjectMeta>, key: &str) -> Option<String> {
    meta.and_then(|m| m.annotations.as_ref())
        .and_then(|a| a.get(key).cloned())
}

pub fn sts_template_annotation(sts: &StatefulSet, key: &str) -> Option<String> {
    annotation(sts.spec.template.metadata.as_ref(), key)
}

pub fn deploy_template_annotation(d: &Deployment, key: &str) -> Option<String> {
    annotation(d.spec.template.metadata.as_ref(), key)
}

pub fn config_json(cm: &ConfigMap) -> Result<(String, Value)> {
    let text = cm
        .data
        .as_ref()
        .and_then(|d| d.get(CONFIG_FILE))
        .cloned()
        .with_context(|| format!("ConfigMap has no {CONFIG_FILE}"))?;
    let value = serde_json::from_str(&text).context("pipeline.json is JSON")?;
    Ok((text, value))
}

pub fn expected_labels(component: &str) -> BTreeMap<String, String> {
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
pub fn check_owned(kind: &str, meta: &ObjectMeta, component: &str, owner: &IngestPipeline) {
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

pub fn worker_replicas(sts: &StatefulSet) -> Option<i32> {
    sts.spec.replicas
}

pub fn deployment_replicas(d: &Deployment) -> Option<i32> {
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
pub async fn wait_pods(op: &Operator, component: &str, n: usize) -> Result<Vec<Pod>> {
    poll(&format!("{n} {component} pods"), CONVERGE, async || {
        let pods: Vec<Pod> = pods_of(op, component)
            .await?
            .into_iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .collect();
        Ok(if pods.len() == n {
            Seen::Done(pods)
        } else {
            let names: Vec<String> = pods.iter().map(|p| p.name_any()).collect();
            Seen::NotYet(format!("there are {names:?}"))
        })
    })
    .await
}
