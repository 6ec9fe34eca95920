//! Which namespaces the operator watches ([`Scope`]) and the controller loop over them.
//!
//! `--watch-namespaces a,b` runs one kube-runtime `Controller` per namespace, each with
//! namespaced watches only, so the operator needs Roles in those namespaces and no
//! ClusterRole; the controllers share one [`Context`] and stop together.

use std::sync::Arc;
use std::time::Duration;

use futures::{FutureExt, StreamExt};
use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolumeClaim, Service, ServiceAccount};
use kube::runtime::controller::{self, Controller};
use kube::runtime::watcher;
use kube::{Api, Client, Resource};

use crate::children::MANAGED_BY;
use crate::crd::IngestPipeline;
use crate::reconcile::{Context, error_policy, reconcile};

/// Which namespaces the operator watches.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Scope {
    /// One namespace (`--namespace`, the default: the operator's own).
    Namespace(String),
    /// These namespaces only (`--watch-namespaces a,b`): one watch per namespace.
    Namespaces(Vec<String>),
    /// Every namespace (`--all-namespaces`, needs a ClusterRole).
    All,
}

impl Scope {
    /// `--watch-namespaces`' values: trimmed, empty entries and repeats dropped; None when
    /// nothing is left.
    pub fn from_list<I, S>(namespaces: I) -> Option<Scope>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut list: Vec<String> = Vec::new();
        for ns in namespaces {
            let ns = ns.as_ref().trim();
            if !ns.is_empty() && !list.iter().any(|n| n == ns) {
                list.push(ns.to_string());
            }
        }
        match list.len() {
            0 => None,
            1 => list.pop().map(Scope::Namespace),
            _ => Some(Scope::Namespaces(list)),
        }
    }

    /// The scope split into what one watch covers: one namespace, or all of them.
    pub fn watches(&self) -> Vec<Watch> {
        match self {
            Scope::Namespace(ns) => vec![Watch::Namespace(ns.clone())],
            Scope::Namespaces(list) => list.iter().cloned().map(Watch::Namespace).collect(),
            Scope::All => vec![Watch::All],
        }
    }
}

/// What one controller watches.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Watch {
    Namespace(String),
    All,
}

impl Watch {
    fn api<K>(&self, client: &Client) -> Api<K>
    where
        K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>,
    {
        match self {
            Watch::Namespace(ns) => Api::namespaced(client.clone(), ns),
            Watch::All => Api::all(client.clone()),
        }
    }
}

/// Runs the controllers of `scope` until `shutdown` completes (in-flight reconciles then
/// finish).
pub async fn run_controller(
    ctx: Arc<Context>,
    scope: Scope,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let shutdown = shutdown.shared();
    let controllers = scope
        .watches()
        .into_iter()
        .map(|watch| run_one(ctx.clone(), watch, shutdown.clone()));
    futures::future::join_all(controllers).await;
}

async fn run_one(
    ctx: Arc<Context>,
    watch: Watch,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let client = ctx.client.clone();
    let owned =
        watcher::Config::default().labels(&format!("app.kubernetes.io/managed-by={MANAGED_BY}"));
    Controller::new(
        watch.api::<IngestPipeline>(&client),
        watcher::Config::default(),
    )
    .owns(watch.api::<ConfigMap>(&client), owned.clone())
    .owns(watch.api::<ServiceAccount>(&client), owned.clone())
    .owns(watch.api::<PersistentVolumeClaim>(&client), owned.clone())
    .owns(watch.api::<Service>(&client), owned.clone())
    .owns(watch.api::<Deployment>(&client), owned.clone())
    .owns(watch.api::<StatefulSet>(&client), owned)
    .with_config(controller::Config::default().debounce(Duration::from_millis(500)))
    .graceful_shutdown_on(shutdown)
    .run(reconcile, error_policy, ctx)
    .for_each(|res| {
        let watch = watch.clone();
        async move {
            match res {
                Ok((obj, _)) => tracing::debug!(pipeline = %obj, "reconciled"),
                Err(e) => tracing::debug!(?watch, error = %e, "controller event"),
            }
        }
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_list_becomes_a_scope() {
        assert_eq!(Scope::from_list(Vec::<String>::new()), None);
        assert_eq!(Scope::from_list([" ", ""]), None);
        assert_eq!(
            Scope::from_list(["a", " a "]),
            Some(Scope::Namespace("a".into()))
        );
        assert_eq!(
            Scope::from_list(["a", "b", "a"]),
            Some(Scope::Namespaces(vec!["a".into(), "b".into()]))
        );
    }

    #[test]
    fn one_watch_per_namespace() {
        assert_eq!(Scope::All.watches(), [Watch::All]);
        assert_eq!(
            Scope::Namespace("a".into()).watches(),
            [Watch::Namespace("a".into())]
        );
        assert_eq!(
            Scope::Namespaces(vec!["a".into(), "b".into()]).watches(),
            [Watch::Namespace("a".into()), Watch::Namespace("b".into())]
        );
    }
}
