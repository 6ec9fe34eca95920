//! What `kubectl sluice status` shows, built from the pipeline, its worker pods, each
//! worker's metrics, the ledger's totals and the Events. Pure: the same view is printed
//! as text, JSON or YAML.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Event, Pod};
use serde::Serialize;

use super::ledger::Totals;
use crate::IngestPipeline;
use crate::metrics_scrape::WorkerFigures;

/// The whole status.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StatusView {
    pub name: String,
    pub namespace: String,
    pub suspended: bool,
    pub conditions: Vec<ConditionView>,
    pub workers: WorkersView,
    /// Exact totals from the ledger (or why they are unavailable).
    pub totals: Totals,
    /// The operator's figures in the resource's status: summed per-process counters
    /// (they restart at zero with a worker), lag and backlog.
    pub status_figures: StatusFigures,
    /// The last Events of the pipeline, newest last.
    pub events: Vec<EventView>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ConditionView {
    #[serde(rename = "type")]
    pub type_: String,
    pub status: String,
    pub reason: String,
    pub message: String,
    pub since: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkersView {
    pub ready: i32,
    pub desired: i32,
    pub pods: Vec<WorkerView>,
}

/// One worker pod.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkerView {
    pub name: String,
    pub phase: String,
    pub ready: bool,
    pub restarts: i32,
    /// Age in seconds of the oldest landed file not yet committed.
    pub lag_seconds: Option<f64>,
    pub backlog_files: Option<f64>,
    /// Rows (loaded + rejected) per second over the sampling window.
    pub rows_per_second: Option<f64>,
    /// Why the figures above are missing.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metrics_unavailable: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StatusFigures {
    pub rows_loaded: Option<u64>,
    pub rows_rejected: Option<u64>,
    pub backlog_files: Option<u64>,
    pub lag_seconds: Option<f64>,
    pub last_batch_time: Option<String>,
    pub figures_time: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EventView {
    pub time: Option<String>,
    #[serde(rename = "type")]
    pub type_: String,
    pub reason: String,
    pub message: String,
    pub count: i32,
}

/// A worker's metrics sampled twice, `seconds` apart (the rate needs two samples), or
/// why they could not be read.
#[derive(Debug, Clone, PartialEq)]
pub enum Sample {
    Read {
        first: WorkerFigures,
        second: WorkerFigures,
        seconds: f64,
    },
    Unavailable(String),
}

/// Everything the view is built from.
pub struct Inputs<'a> {
    pub pipeline: &'a IngestPipeline,
    pub pods: &'a [Pod],
    pub samples: &'a BTreeMap<String, Sample>,
    pub totals: Totals,
    pub events: &'a [Event],
    pub max_events: usize,
}

/// Builds the view.
pub fn build(inputs: Inputs<'_>) -> StatusView {
    let p = inputs.pipeline;
    let status = p.status.clone().unwrap_or_default();
    let conditions = status
        .conditions
        .iter()
        .map(|c| ConditionView {
            type_: c.type_.clone(),
            status: c.status.clone(),
            reason: c.reason.clone(),
            message: c.message.clone(),
            since: Some(c.last_transition_time.0.to_string()),
        })
        .collect();
    let mut pods: Vec<WorkerView> = inputs
        .pods
        .iter()
        .map(|pod| worker_view(pod, inputs.samples))
        .collect();
    pods.sort_by(|a, b| a.name.cmp(&b.name));
    StatusView {
        name: p.metadata.name.clone().unwrap_or_default(),
        namespace: p.metadata.namespace.clone().unwrap_or_default(),
        suspended: p.spec.suspend,
        conditions,
        workers: WorkersView {
            ready: status.workers_ready,
            desired: status.workers_desired,
            pods,
        },
        totals: inputs.totals,
        status_figures: StatusFigures {
            rows_loaded: status.rows_loaded,
            rows_rejected: status.rows_rejected,
            backlog_files: status.backlog_files,
            lag_seconds: status.lag_seconds,
            last_batch_time: status.last_batch_time.clone(),
            figures_time: status.figures_time.clone(),
        },
        events: last_events(inputs.events, inputs.max_events),
    }
}

/// True when the pod's Ready condition is True.
pub fn pod_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

fn worker_view(pod: &Pod, samples: &BTreeMap<String, Sample>) -> WorkerView {
    let name = pod.metadata.name.clone().unwrap_or_default();
    let st = pod.status.as_ref();
    let restarts = st
        .and_then(|s| s.container_statuses.as_ref())
        .map_or(0, |cs| cs.iter().map(|c| c.restart_count).sum());
    let mut view = WorkerView {
        phase: st
            .and_then(|s| s.phase.clone())
            .unwrap_or_else(|| "Unknown".into()),
        ready: pod_ready(pod),
        restarts,
        lag_seconds: None,
        backlog_files: None,
        rows_per_second: None,
        metrics_unavailable: None,
        name,
    };
    match samples.get(&view.name) {
        Some(Sample::Read {
            first,
            second,
            seconds,
        }) => {
            view.lag_seconds = Some(second.lag_seconds);
            view.backlog_files = Some(second.backlog_files);
            view.rows_per_second = rate(first, second, *seconds);
        }
        Some(Sample::Unavailable(why)) => view.metrics_unavailable = Some(why.clone()),
        None => view.metrics_unavailable = Some("not sampled".into()),
    }
    view
}

/// Rows per second between two samples; None when the counters went back (a restart in
/// between) or the window is empty.
pub fn rate(first: &WorkerFigures, second: &WorkerFigures, seconds: f64) -> Option<f64> {
    let before = first.rows_loaded + first.rows_rejected;
    let after = second.rows_loaded + second.rows_rejected;
    (seconds > 0.0 && after >= before).then(|| (after - before) / seconds)
}

/// The newest `max` Events, oldest first.
fn last_events(events: &[Event], max: usize) -> Vec<EventView> {
    let time_of = |e: &Event| {
        e.last_timestamp
            .as_ref()
            .map(|t| t.0)
            .or_else(|| e.event_time.as_ref().map(|t| t.0))
            .or_else(|| e.metadata.creation_timestamp.as_ref().map(|t| t.0))
    };
    let mut sorted: Vec<&Event> = events.iter().collect();
    sorted.sort_by_key(|e| time_of(e));
    let skip = sorted.len().saturating_sub(max);
    sorted
        .into_iter()
        .skip(skip)
        .map(|e| EventView {
            time: time_of(e).map(|t| t.to_string()),
            type_: e.type_.clone().unwrap_or_default(),
            reason: e.reason.clone().unwrap_or_default(),
            message: e.message.clone().unwrap_or_default(),
            count: e.count.unwrap_or(1),
        })
        .collect()
}

#[cfg(test)]
pub(crate) mod tests {
    use k8s_openapi::api::core::v1::{ContainerStatus, PodCondition, PodStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, ObjectMeta, Time};
    use k8s_openapi::jiff::Timestamp;

    use super::*;
    use crate::IngestPipelineStatus;

    pub(crate) fn time(s: &str) -> Time {
        Time(s.parse::<Timestamp>().expect("time"))
    }

    pub(crate) fn pipeline() -> IngestPipeline {
        let mut p = crate::fixtures::sample();
        p.metadata.namespace = Some("shop".into());
        p.status = Some(IngestPipelineStatus {
            conditions: vec![Condition {
                type_: "Ready".into(),
                status: "False".into(),
                reason: crate::reason::Reason::WorkersNotReady.into(),
                message: "1 of 2 workers ready".into(),
                last_transition_time: time("2026-11-25T10:00:00Z"),
                observed_generation: None,
            }],
            workers_ready: 1,
            workers_desired: 2,
            rows_loaded: Some(900),
            ..IngestPipelineStatus::default()
        });
        p
    }

    pub(crate) fn pod(name: &str, ready: bool, restarts: i32) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                ..ObjectMeta::default()
            },
            spec: None,
            status: Some(PodStatus {
                phase: Some("Running".into()),
                conditions: Some(vec![PodCondition {
                    type_: "Ready".into(),
                    status: if ready { "True" } else { "False" }.into(),
                    ..PodCondition::default()
                }]),
                container_statuses: Some(vec![ContainerStatus {
                    restart_count: restarts,
                    ..ContainerStatus::default()
                }]),
                ..PodStatus::default()
            }),
        }
    }

    pub(crate) fn event(reason: &str, at: &str) -> Event {
        Event {
            reason: Some(reason.into()),
            message: Some(format!("{reason} happened")),
            type_: Some("Normal".into()),
            last_timestamp: Some(time(at)),
            ..Event::default()
        }
    }

    fn figures(rows: f64, lag: f64) -> WorkerFigures {
        WorkerFigures {
            rows_loaded: rows,
            lag_seconds: lag,
            backlog_files: 3.0,
            ..WorkerFigures::default()
        }
    }

    pub(crate) fn sample_view() -> StatusView {
        let pods = [
            pod("orders-worker-1", false, 2),
            pod("orders-worker-0", true, 0),
        ];
        let samples: BTreeMap<String, Sample> = [
            (
                "orders-worker-0".to_string(),
                Sample::Read {
                    first: figures(100.0, 1.0),
                    second: figures(300.0, 2.5),
                    seconds: 2.0,
                },
            ),
            (
                "orders-worker-1".to_string(),
                Sample::Unavailable("pod is not running".into()),
            ),
        ]
        .into();
        let events = [
            event("Old", "2026-11-25T09:00:00Z"),
            event("Newest", "2026-11-25T11:00:00Z"),
            event("Newer", "2026-11-25T10:00:00Z"),
        ];
        build(Inputs {
            pipeline: &pipeline(),
            pods: &pods,
            samples: &samples,
            totals: Totals::unavailable("no ready worker pod"),
            events: &events,
            max_events: 2,
        })
    }

    #[test]
    fn workers_are_sorted_with_readiness_restarts_and_rate() {
        let v = sample_view();
        let names: Vec<&str> = v.workers.pods.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["orders-worker-0", "orders-worker-1"]);
        let w0 = &v.workers.pods[0];
        assert!(w0.ready && w0.restarts == 0);
        assert_eq!(
            (w0.lag_seconds, w0.rows_per_second),
            (Some(2.5), Some(100.0))
        );
        let w1 = &v.workers.pods[1];
        assert!(!w1.ready && w1.restarts == 2);
        assert_eq!(
            w1.metrics_unavailable.as_deref(),
            Some("pod is not running")
        );
        assert_eq!((v.workers.ready, v.workers.desired), (1, 2));
    }

    #[test]
    fn conditions_keep_their_reasons_and_only_the_last_events_are_kept() {
        let v = sample_view();
        assert_eq!(
            v.conditions[0].reason,
            crate::reason::Reason::WorkersNotReady.as_str()
        );
        let reasons: Vec<&str> = v.events.iter().map(|e| e.reason.as_str()).collect();
        assert_eq!(reasons, ["Newer", "Newest"]);
        let json = serde_json::to_value(&v).expect("json");
        assert_eq!(json["conditions"][0]["type"], "Ready");
        assert_eq!(json["totals"]["available"], false);
        assert_eq!(json["statusFigures"]["rowsLoaded"], 900);
    }

    #[test]
    fn a_restart_between_samples_gives_no_rate() {
        assert_eq!(rate(&figures(50.0, 0.0), &figures(10.0, 0.0), 1.0), None);
        assert_eq!(rate(&figures(1.0, 0.0), &figures(1.0, 0.0), 0.0), None);
    }
}
