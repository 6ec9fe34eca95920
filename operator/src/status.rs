//! Pure status computation: what the operator observed → `IngestPipelineStatus`.
//!
//! Conditions follow the metav1.Condition conventions: one entry per type, always present
//! (Ready, Progressing, Degraded, Suspended), `lastTransitionTime` changes only when the
//! condition's `status` changes.

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;

use crate::crd::IngestPipelineStatus;
use crate::metrics_scrape::Figures;
use crate::reason::Reason;

pub const READY: &str = "Ready";
pub const PROGRESSING: &str = "Progressing";
pub const DEGRADED: &str = "Degraded";
pub const SUSPENDED: &str = "Suspended";

/// A problem that makes the pipeline Degraded, most important first.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// InvalidSpec, SecretNotFound, SecretIncomplete, PostgresClusterNotFound,
    /// ApplyFailed or a worker-reported cause.
    pub reason: Reason,
    pub message: String,
}

impl Problem {
    pub fn new(reason: Reason, message: impl Into<String>) -> Problem {
        Problem {
            reason,
            message: message.into(),
        }
    }
}

/// Rollout state of one workload (StatefulSet or Deployment).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Rollout {
    pub desired: i32,
    pub ready: i32,
    /// The controller has seen the latest spec and every pod runs the latest template.
    pub up_to_date: bool,
}

impl Rollout {
    pub fn of_stateful_set(sts: &StatefulSet) -> Rollout {
        let desired = sts.spec.replicas.unwrap_or(1);
        let Some(st) = &sts.status else {
            return Rollout {
                desired,
                ready: 0,
                up_to_date: desired == 0,
            };
        };
        let seen = st.observed_generation.unwrap_or(0) >= sts.metadata.generation.unwrap_or(0);
        let revision_done = match (&st.current_revision, &st.update_revision) {
            (Some(c), Some(u)) => c == u,
            _ => true,
        };
        Rollout {
            desired,
            ready: st.ready_replicas.unwrap_or(0),
            up_to_date: seen
                && st.replicas == desired
                && st.updated_replicas.unwrap_or(0) >= desired
                && (revision_done || desired == 0),
        }
    }

    pub fn of_deployment(d: &Deployment) -> Rollout {
        let desired = d.spec.replicas.unwrap_or(1);
        let Some(st) = &d.status else {
            return Rollout {
                desired,
                ready: 0,
                up_to_date: desired == 0,
            };
        };
        let seen = st.observed_generation.unwrap_or(0) >= d.metadata.generation.unwrap_or(0);
        Rollout {
            desired,
            ready: st.ready_replicas.unwrap_or(0),
            up_to_date: seen
                && st.replicas.unwrap_or(0) == desired
                && st.updated_replicas.unwrap_or(0) >= desired,
        }
    }

    fn settled(&self) -> bool {
        self.up_to_date && self.ready >= self.desired
    }
}

/// Everything observed in one reconcile.
#[derive(Clone, Debug, Default)]
pub struct Observed {
    pub generation: Option<i64>,
    pub suspended: bool,
    /// Most important problem (InvalidSpec > secret > apply), if any.
    pub problem: Option<Problem>,
    pub workers: Rollout,
    pub generator: Rollout,
    /// Fresh figures from the workers, None when they could not be read (the previous
    /// ones are kept).
    pub figures: Option<Figures>,
    /// Label selector of the worker pods (status.selector, for the scale subresource).
    pub selector: Option<String>,
    /// The PodMonitor's state (the `Monitoring` condition), None when it is off.
    pub monitoring: Option<crate::monitoring::MonitoringState>,
    /// A caution that does not make the pipeline unready (e.g. unencrypted TLS), added
    /// to the Ready condition's message.
    pub note: Option<String>,
}

/// Computes the new status from the previous one and what was observed.
pub fn compute(
    prev: Option<&IngestPipelineStatus>,
    obs: &Observed,
    now: Timestamp,
) -> IngestPipelineStatus {
    let prev_conditions: &[Condition] = prev.map(|p| p.conditions.as_slice()).unwrap_or(&[]);
    let cond = |type_: &str, status: bool, reason: Reason, message: String| {
        condition(
            prev_conditions,
            type_,
            status,
            reason,
            message,
            obs.generation,
            now,
        )
    };
    let w = obs.workers;
    let g = obs.generator;
    let invalid = obs
        .problem
        .as_ref()
        .is_some_and(|p| p.reason == Reason::InvalidSpec);

    let ready = if obs.suspended {
        cond(
            READY,
            false,
            Reason::Suspended,
            "The pipeline is suspended".into(),
        )
    } else if let Some(p) = &obs.problem {
        cond(READY, false, p.reason, p.message.clone())
    } else if w.ready < w.desired {
        cond(
            READY,
            false,
            Reason::WorkersNotReady,
            format!("{} of {} workers ready", w.ready, w.desired),
        )
    } else if g.desired > 0 && g.ready < g.desired {
        cond(
            READY,
            false,
            Reason::GeneratorNotReady,
            "The generator is not ready yet".into(),
        )
    } else {
        let gen_note = if g.desired > 0 {
            ", generator ready"
        } else {
            ", generator disabled"
        };
        cond(
            READY,
            true,
            Reason::AllReady,
            format!("{} of {} workers ready{gen_note}", w.ready, w.desired),
        )
    };

    let ready = match &obs.note {
        Some(note) => Condition {
            message: format!("{}; {note}", ready.message),
            ..ready
        },
        None => ready,
    };

    let progressing = if invalid {
        cond(
            PROGRESSING,
            false,
            Reason::InvalidSpec,
            "Nothing is rolled out until the spec is fixed (see Degraded)".into(),
        )
    } else if !w.settled() || !g.settled() {
        cond(
            PROGRESSING,
            true,
            Reason::RollingOut,
            format!(
                "Workers {}/{} ready{}, generator {}/{} ready{}",
                w.ready,
                w.desired,
                if w.up_to_date { "" } else { " (updating)" },
                g.ready,
                g.desired,
                if g.up_to_date { "" } else { " (updating)" },
            ),
        )
    } else {
        cond(
            PROGRESSING,
            false,
            Reason::RolledOut,
            "All pods run the current spec".into(),
        )
    };

    let degraded = match &obs.problem {
        Some(p) => cond(DEGRADED, true, p.reason, p.message.clone()),
        None => cond(
            DEGRADED,
            false,
            Reason::AsExpected,
            "No problems found".into(),
        ),
    };

    let suspended = if obs.suspended {
        cond(
            SUSPENDED,
            true,
            Reason::Suspended,
            "spec.suspend is true: the generator and workers are scaled to zero".into(),
        )
    } else {
        cond(
            SUSPENDED,
            false,
            Reason::Running,
            "spec.suspend is false".into(),
        )
    };

    let mut status = IngestPipelineStatus {
        observed_generation: obs.generation,
        conditions: [ready, progressing, degraded, suspended]
            .into_iter()
            .chain(obs.monitoring.as_ref().map(|m| {
                let (status, reason, message) = (m.ok, m.reason, m.message.clone());
                cond(crate::monitoring::MONITORING, status, reason, message)
            }))
            .collect(),
        workers: Some(format!("{}/{}", w.ready, w.desired)),
        workers_ready: w.ready,
        workers_desired: w.desired,
        generator_ready: g.desired > 0 && g.ready >= g.desired,
        selector: obs.selector.clone(),
        ..Default::default()
    };
    match (&obs.figures, prev) {
        (Some(f), _) => {
            status.rows_loaded = Some(f.rows_loaded);
            status.rows_rejected = Some(f.rows_rejected);
            status.backlog_files = Some(f.backlog_files);
            status.lag_seconds = Some(round3(f.lag_seconds));
            status.last_batch_time = f
                .last_commit_unix
                .filter(|t| *t > 0.0)
                .and_then(|t| Timestamp::from_millisecond((t * 1000.0) as i64).ok())
                .map(|t| t.to_string())
                .or_else(|| prev.and_then(|p| p.last_batch_time.clone()));
            status.figures_time = Some(now.to_string());
        }
        (None, Some(p)) => {
            status.rows_loaded = p.rows_loaded;
            status.rows_rejected = p.rows_rejected;
            status.backlog_files = p.backlog_files;
            status.lag_seconds = p.lag_seconds;
            status.last_batch_time = p.last_batch_time.clone();
            status.figures_time = p.figures_time.clone();
        }
        (None, None) => {}
    }
    status
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// One condition; keeps the previous `lastTransitionTime` when the status is unchanged.
pub fn condition(
    prev: &[Condition],
    type_: &str,
    status: bool,
    reason: Reason,
    message: String,
    generation: Option<i64>,
    now: Timestamp,
) -> Condition {
    let status = if status { "True" } else { "False" }.to_string();
    let last_transition_time = prev
        .iter()
        .find(|c| c.type_ == type_ && c.status == status)
        .map(|c| c.last_transition_time.clone())
        .unwrap_or(Time(now));
    Condition {
        type_: type_.into(),
        status,
        reason: reason.into(),
        message,
        observed_generation: generation,
        last_transition_time,
    }
}

/// Looks a condition up by type.
pub fn find<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

/// A change worth a Kubernetes Event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transition {
    pub warning: bool,
    pub reason: Reason,
    pub note: String,
}

/// Notable transitions between two condition sets: becoming Ready or not, a new
/// Degraded reason, entering or leaving suspension.
pub fn transitions(old: &[Condition], new: &[Condition]) -> Vec<Transition> {
    let mut out = Vec::new();
    let changed = |t: &str| -> Option<&Condition> {
        let n = find(new, t)?;
        match find(old, t) {
            Some(o) if o.status == n.status && o.reason == n.reason => None,
            _ => Some(n),
        }
    };
    if let Some(d) = changed(DEGRADED) {
        if d.status == "True" {
            // `new` comes from `compute`: its reasons are the operator's.
            if let Some(reason) = Reason::parse(&d.reason) {
                out.push(Transition {
                    warning: true,
                    reason,
                    note: d.message.clone(),
                });
            }
        } else if find(old, DEGRADED).is_some_and(|o| o.status == "True") {
            out.push(Transition {
                warning: false,
                reason: Reason::Recovered,
                note: "The problem is gone".into(),
            });
        }
    }
    if let Some(s) = changed(SUSPENDED) {
        let was = find(old, SUSPENDED).map(|o| o.status.as_str());
        if s.status == "True" {
            out.push(Transition {
                warning: false,
                reason: Reason::Suspended,
                note: s.message.clone(),
            });
        } else if was == Some("True") {
            out.push(Transition {
                warning: false,
                reason: Reason::Resumed,
                note: "spec.suspend is false: scaling back up".into(),
            });
        }
    }
    if let Some(r) = find(new, READY) {
        let was_ready = find(old, READY).is_some_and(|o| o.status == "True");
        if r.status == "True" && !was_ready {
            out.push(Transition {
                warning: false,
                reason: Reason::Ready,
                note: r.message.clone(),
            });
        } else if r.status != "True" && was_ready {
            out.push(Transition {
                warning: true,
                reason: Reason::NotReady,
                note: r.message.clone(),
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(secs: i64) -> Timestamp {
        Timestamp::from_second(1_700_000_000 + secs).expect("time")
    }

    fn running(ready: i32) -> Observed {
        Observed {
            generation: Some(3),
            workers: Rollout {
                desired: 2,
                ready,
                up_to_date: true,
            },
            generator: Rollout {
                desired: 1,
                ready: 1,
                up_to_date: true,
            },
            ..Default::default()
        }
    }

    fn status_of<'a>(s: &'a IngestPipelineStatus, type_: &str) -> &'a Condition {
        find(&s.conditions, type_).expect("condition")
    }

    #[test]
    fn all_ready() {
        let s = compute(None, &running(2), t(0));
        let ready = status_of(&s, READY);
        assert_eq!(ready.status, "True");
        assert_eq!(ready.reason, Reason::AllReady.as_str());
        assert_eq!(ready.observed_generation, Some(3));
        assert_eq!(status_of(&s, PROGRESSING).status, "False");
        assert_eq!(status_of(&s, DEGRADED).status, "False");
        assert_eq!(status_of(&s, SUSPENDED).status, "False");
        assert_eq!(s.workers.as_deref(), Some("2/2"));
        assert!(s.generator_ready);
        assert_eq!(s.observed_generation, Some(3));
        assert_eq!(s.conditions.len(), 4);
    }

    #[test]
    fn a_note_is_told_in_the_ready_message_without_changing_readiness() {
        let mut obs = running(2);
        obs.note = Some("sslmode disable: not encrypted".into());
        let s = compute(None, &obs, t(0));
        let ready = status_of(&s, READY);
        assert_eq!(ready.status, "True");
        assert_eq!(ready.reason, Reason::AllReady.as_str());
        assert_eq!(
            ready.message,
            "2 of 2 workers ready, generator ready; sslmode disable: not encrypted"
        );
        assert_eq!(status_of(&s, DEGRADED).status, "False");
    }

    #[test]
    fn workers_not_ready_is_progressing() {
        let mut obs = running(1);
        obs.workers.up_to_date = false;
        let s = compute(None, &obs, t(0));
        let ready = status_of(&s, READY);
        assert_eq!(ready.status, "False");
        assert_eq!(ready.message, "1 of 2 workers ready");
        let p = status_of(&s, PROGRESSING);
        assert_eq!(p.status, "True");
        assert!(
            p.message.contains("Workers 1/2 ready (updating)"),
            "{}",
            p.message
        );
    }

    #[test]
    fn missing_secret_is_degraded_with_the_message() {
        let mut obs = running(0);
        obs.problem = Some(Problem::new(
            Reason::SecretNotFound,
            "Secret pg-credentials not found in namespace data",
        ));
        let s = compute(None, &obs, t(0));
        let d = status_of(&s, DEGRADED);
        assert_eq!(d.status, "True");
        assert_eq!(d.reason, Reason::SecretNotFound.as_str());
        assert_eq!(
            d.message,
            "Secret pg-credentials not found in namespace data"
        );
        assert_eq!(status_of(&s, READY).reason, Reason::SecretNotFound.as_str());
    }

    #[test]
    fn suspended() {
        let mut obs = running(0);
        obs.suspended = true;
        obs.workers.desired = 0;
        obs.generator.desired = 0;
        obs.generator.ready = 0;
        let s = compute(None, &obs, t(0));
        assert_eq!(status_of(&s, SUSPENDED).status, "True");
        assert_eq!(status_of(&s, READY).reason, Reason::Suspended.as_str());
        assert_eq!(status_of(&s, PROGRESSING).status, "False");
        assert_eq!(s.workers.as_deref(), Some("0/0"));
        assert!(!s.generator_ready);
    }

    #[test]
    fn last_transition_time_kept_while_status_unchanged() {
        let first = compute(None, &running(1), t(0));
        // Same status later (message changes do not count as transitions).
        let mut obs = running(1);
        obs.workers.desired = 3;
        let second = compute(Some(&first), &obs, t(100));
        assert_eq!(
            status_of(&second, READY).last_transition_time,
            Time(t(0)),
            "Ready stayed False"
        );
        assert_eq!(status_of(&second, READY).message, "1 of 3 workers ready");
        // Status flips → new time.
        let third = compute(Some(&second), &running(2), t(200));
        assert_eq!(status_of(&third, READY).last_transition_time, Time(t(200)));
        assert_eq!(status_of(&third, DEGRADED).last_transition_time, Time(t(0)));
        // Identical input → identical status (no needless patches).
        let fourth = compute(Some(&third), &running(2), t(300));
        assert_eq!(fourth, third);
    }

    #[test]
    fn figures_are_kept_when_unreadable() {
        let mut obs = running(2);
        obs.figures = Some(Figures {
            rows_loaded: 100,
            rows_rejected: 3,
            backlog_files: 2,
            lag_seconds: 0.12345,
            last_commit_unix: Some(1_700_000_000.5),
            ..Figures::default()
        });
        let s = compute(None, &obs, t(0));
        assert_eq!(s.rows_loaded, Some(100));
        assert_eq!(s.rows_rejected, Some(3));
        assert_eq!(s.backlog_files, Some(2));
        assert_eq!(s.lag_seconds, Some(0.123));
        assert_eq!(s.last_batch_time.as_deref(), Some("2023-11-14T22:13:20.5Z"));
        let later = compute(Some(&s), &running(2), t(50));
        assert_eq!(later.rows_loaded, Some(100));
        assert_eq!(later.figures_time, s.figures_time);
    }

    #[test]
    fn transitions_give_events() {
        let healthy = compute(None, &running(2), t(0));
        let mut obs = running(2);
        obs.problem = Some(Problem::new(Reason::SecretNotFound, "Secret pg not found"));
        let broken = compute(Some(&healthy), &obs, t(1));
        let ev = transitions(&healthy.conditions, &broken.conditions);
        assert!(
            ev.iter()
                .any(|e| e.warning && e.reason == Reason::SecretNotFound)
        );
        assert!(ev.iter().any(|e| e.reason == Reason::NotReady));
        let fixed = compute(Some(&broken), &running(2), t(2));
        let ev = transitions(&broken.conditions, &fixed.conditions);
        assert!(
            ev.iter()
                .any(|e| !e.warning && e.reason == Reason::Recovered)
        );
        assert!(ev.iter().any(|e| e.reason == Reason::Ready));
        assert!(transitions(&fixed.conditions, &fixed.conditions).is_empty());
        // First reconcile of a healthy pipeline: only "Ready".
        let ev = transitions(&[], &healthy.conditions);
        assert_eq!(ev.len(), 1);
        assert_eq!(ev[0].reason, Reason::Ready);
    }

    #[test]
    fn rollout_from_stateful_set_status() {
        use k8s_openapi::api::apps::v1::{StatefulSetSpec, StatefulSetStatus};
        let mut sts = StatefulSet {
            spec: StatefulSetSpec {
                replicas: Some(2),
                ..Default::default()
            },
            ..Default::default()
        };
        sts.metadata.generation = Some(2);
        assert_eq!(
            Rollout::of_stateful_set(&sts),
            Rollout {
                desired: 2,
                ready: 0,
                up_to_date: false
            }
        );
        sts.status = Some(StatefulSetStatus {
            observed_generation: Some(2),
            replicas: 2,
            ready_replicas: Some(2),
            updated_replicas: Some(2),
            current_revision: Some("a".into()),
            update_revision: Some("a".into()),
            ..Default::default()
        });
        assert!(Rollout::of_stateful_set(&sts).up_to_date);
        sts.metadata.generation = Some(3);
        assert!(!Rollout::of_stateful_set(&sts).up_to_date);
    }
}
