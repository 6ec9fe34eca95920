//! `spec.monitoring.podMonitor`: applies the pipeline's PodMonitor when the API server
//! serves monitoring.coreos.com/v1 PodMonitors, deletes ours when turned off. Not
//! watched: re-applied on every reconcile.
//!
//! Whether the CRD exists is asked again on every reconcile of a pipeline that wants a
//! PodMonitor while it is missing (installing the Prometheus Operator later needs no
//! operator restart); once found, it is remembered until an apply says it is gone.
//! Pipelines without one ask at most once a minute (to delete a PodMonitor left over).
//!
//! The outcome is the `Monitoring` condition (present only when the PodMonitor is
//! enabled): True `PodMonitorApplied`, or False `PodMonitorCRDMissing` with what to do.
//! A missing CRD does not make the pipeline Degraded nor unready: ingestion works
//! without it.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, Patch, PatchParams};
use kube::{Client, ResourceExt};

use crate::children::pod_monitor;
use crate::crd::{FIELD_MANAGER, IngestPipeline};
use crate::reason::Reason;
use crate::reconcile::Error;

/// The condition type.
pub const MONITORING: &str = "Monitoring";

/// How long "no PodMonitor CRD" is believed by pipelines that do not want one.
const ABSENT_TTL: Duration = Duration::from_secs(60);

/// The `Monitoring` condition's content.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MonitoringState {
    pub ok: bool,
    pub reason: Reason,
    pub message: String,
}

/// PodMonitor discovery, shared by all pipelines.
#[derive(Default)]
pub struct PodMonitorApi(Mutex<Option<(Instant, bool)>>);

impl PodMonitorApi {
    fn resource() -> ApiResource {
        ApiResource {
            group: "monitoring.coreos.com".into(),
            version: "v1".into(),
            api_version: "monitoring.coreos.com/v1".into(),
            kind: "PodMonitor".into(),
            plural: "podmonitors".into(),
        }
    }

    /// Whether the server serves PodMonitors. `fresh`: do not trust a cached "no".
    async fn served(&self, client: &Client, fresh: bool) -> bool {
        if let Some((at, known)) = *self.0.lock().unwrap_or_else(|e| e.into_inner())
            && (known || (!fresh && at.elapsed() < ABSENT_TTL))
        {
            return known;
        }
        let served = match client
            .list_api_group_resources("monitoring.coreos.com/v1")
            .await
        {
            Ok(list) => list.resources.iter().any(|r| r.name == "podmonitors"),
            Err(kube::Error::Api(s)) if s.code == 404 => false,
            Err(e) => {
                tracing::debug!(error = %e, "PodMonitor discovery failed");
                false
            }
        };
        self.forget_or_set(Some(served));
        served
    }

    fn forget_or_set(&self, served: Option<bool>) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = served.map(|s| (Instant::now(), s));
    }
}

fn missing() -> MonitoringState {
    MonitoringState {
        ok: false,
        reason: Reason::PodMonitorCRDMissing,
        message: "spec.monitoring.podMonitor.enabled is true, but the API server serves no \
                  monitoring.coreos.com/v1 PodMonitor: install the Prometheus Operator (or \
                  its CRDs); the PodMonitor is made as soon as it is served"
            .into(),
    }
}

/// Applies or deletes the PodMonitor of `ipl`; the condition to show, None when off.
pub async fn sync(
    client: &Client,
    api: &PodMonitorApi,
    ipl: &IngestPipeline,
    ns: &str,
) -> Result<Option<MonitoringState>, Error> {
    let desired = pod_monitor(ipl);
    if !api.served(client, desired.is_some()).await {
        return Ok(desired.map(|_| missing()));
    }
    let pm: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), ns, &PodMonitorApi::resource());
    let name = ipl.pod_monitor_name();
    let fail = |source| Error::Apply {
        kind: "PodMonitor".into(),
        name: name.clone(),
        source,
    };
    match desired {
        Some(obj) => {
            let applied = pm
                .patch(
                    &name,
                    &PatchParams::apply(FIELD_MANAGER).force(),
                    &Patch::Apply(&obj),
                )
                .await;
            match applied {
                Ok(_) => Ok(Some(MonitoringState {
                    ok: true,
                    reason: Reason::PodMonitorApplied,
                    message: format!(
                        "PodMonitor {name} selects the workers and the generator (port metrics)"
                    ),
                })),
                // The CRD went away since it was discovered.
                Err(kube::Error::Api(s)) if s.code == 404 => {
                    api.forget_or_set(None);
                    Ok(Some(missing()))
                }
                Err(e) => Err(fail(e)),
            }
        }
        None => {
            let ours = match pm.get_opt(&name).await {
                Ok(o) => o.is_some_and(|o| {
                    o.owner_references()
                        .iter()
                        .any(|r| Some(&r.uid) == ipl.metadata.uid.as_ref())
                }),
                Err(kube::Error::Api(s)) if s.code == 404 => false,
                Err(e) => return Err(fail(e)),
            };
            if ours {
                match pm.delete(&name, &DeleteParams::default()).await {
                    Ok(_) => {}
                    Err(kube::Error::Api(s)) if s.code == 404 => {}
                    Err(e) => return Err(fail(e)),
                }
            }
            Ok(None)
        }
    }
}
