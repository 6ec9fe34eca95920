//! What `/healthz`, `/readyz` and `sluice_worker_degraded` say, and why.
//!
//! Liveness is tied to progress: each of the worker's loops (planner, committer, claim
//! heartbeat) marks when it enters a step that must finish (a query, a COPY, reading a
//! file) and when it leaves it. Waiting for work or backing off between retries is not
//! a step. A loop stuck in one step for longer than the liveness timeout — a frozen
//! PostgreSQL that never answers, a hung network file system — makes the worker not
//! live, so Kubernetes restarts it. A loop that keeps retrying is alive but not ready.

use std::collections::BTreeSet;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use sluice_core::metric_names::DegradedCause;

/// The worker's loops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Planner,
    Committer,
    Heartbeat,
}

impl Role {
    const ALL: [Role; 3] = [Role::Planner, Role::Committer, Role::Heartbeat];

    fn index(self) -> usize {
        match self {
            Role::Planner => 0,
            Role::Committer => 1,
            Role::Heartbeat => 2,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Planner => "planner",
            Role::Committer => "committer",
            Role::Heartbeat => "heartbeat",
        }
    }
}

/// Per-loop step tracking. Times are milliseconds since `base`, plus one so that 0
/// means "not in a step".
#[derive(Debug)]
pub struct Watchdog {
    base: Instant,
    busy_since: [AtomicU64; 3],
    limit: Duration,
}

impl Watchdog {
    pub fn new(limit: Duration) -> Watchdog {
        Watchdog {
            base: Instant::now(),
            busy_since: [AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0)],
            limit,
        }
    }

    fn stamp(&self, at: Instant) -> u64 {
        at.saturating_duration_since(self.base).as_millis() as u64 + 1
    }

    /// `role` enters a step that must finish.
    pub fn enter_at(&self, role: Role, at: Instant) {
        self.busy_since[role.index()].store(self.stamp(at), Ordering::Relaxed);
    }

    pub fn enter(&self, role: Role) {
        self.enter_at(role, Instant::now());
    }

    /// `role` left its step (finished, failed, or is now waiting).
    pub fn leave(&self, role: Role) {
        self.busy_since[role.index()].store(0, Ordering::Relaxed);
    }

    /// How long `role` has been in its current step, if it is in one.
    pub fn busy_for(&self, role: Role, now: Instant) -> Option<Duration> {
        let since = self.busy_since[role.index()].load(Ordering::Relaxed);
        (since > 0).then(|| Duration::from_millis(self.stamp(now).saturating_sub(since)))
    }

    /// The first loop stuck for longer than `limit`, with how long.
    pub fn stuck_longer_than(&self, limit: Duration, now: Instant) -> Option<(Role, Duration)> {
        Role::ALL.into_iter().find_map(|role| {
            self.busy_for(role, now)
                .filter(|d| *d > limit)
                .map(|d| (role, d))
        })
    }

    /// The first loop stuck for longer than the liveness timeout.
    pub fn stuck(&self, now: Instant) -> Option<(Role, Duration)> {
        self.stuck_longer_than(self.limit, now)
    }
}

/// The causes currently degrading the worker (mirrored into the metric by the caller).
#[derive(Debug, Default)]
pub struct Degraded {
    causes: Mutex<BTreeSet<DegradedCause>>,
}

impl Degraded {
    /// Sets or clears `cause`; returns true when that changed something.
    pub fn set(&self, cause: DegradedCause, on: bool) -> bool {
        let Ok(mut causes) = self.causes.lock() else {
            return false;
        };
        if on {
            causes.insert(cause)
        } else {
            causes.remove(&cause)
        }
    }

    pub fn contains(&self, cause: DegradedCause) -> bool {
        self.causes.lock().is_ok_and(|c| c.contains(&cause))
    }

    /// True while a cause that stops ingestion applies (readiness is false then).
    pub fn blocks_ingest(&self) -> bool {
        self.causes
            .lock()
            .is_ok_and(|c| c.iter().any(|cause| blocks_ingest(*cause)))
    }
}

/// Causes that stop rows from reaching the database. An unwritable archive or a restore
/// behind the checkpoint are reported, but ingestion goes on.
pub fn blocks_ingest(cause: DegradedCause) -> bool {
    !matches!(
        cause,
        DegradedCause::AfterCommitFailing | DegradedCause::RestoredBehindCheckpoint
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_loop_stuck_in_one_step_is_reported_after_the_limit() {
        let w = Watchdog::new(Duration::from_secs(10));
        let t0 = Instant::now();
        assert_eq!(w.stuck(t0 + Duration::from_secs(60)), None, "idle is fine");
        w.enter_at(Role::Committer, t0);
        assert_eq!(w.stuck(t0 + Duration::from_secs(9)), None);
        let (role, for_) = w.stuck(t0 + Duration::from_secs(11)).expect("stuck");
        assert_eq!(role, Role::Committer);
        assert!(for_ >= Duration::from_secs(10));
        w.leave(Role::Committer);
        assert_eq!(w.stuck(t0 + Duration::from_secs(30)), None, "left the step");
    }

    #[test]
    fn a_retry_loop_that_keeps_entering_new_steps_is_alive() {
        let w = Watchdog::new(Duration::from_secs(10));
        let t0 = Instant::now();
        for i in 0..20 {
            let at = t0 + Duration::from_secs(i * 5);
            w.enter_at(Role::Planner, at);
            assert_eq!(w.stuck(at + Duration::from_secs(2)), None);
            w.leave(Role::Planner);
        }
    }

    #[test]
    fn degraded_causes_decide_readiness() {
        let d = Degraded::default();
        assert!(!d.blocks_ingest());
        assert!(d.set(DegradedCause::AfterCommitFailing, true));
        assert!(!d.blocks_ingest(), "files still load when archiving fails");
        assert!(d.set(DegradedCause::LockTimeout, true));
        assert!(!d.set(DegradedCause::LockTimeout, true), "no change");
        assert!(d.blocks_ingest());
        assert!(d.set(DegradedCause::LockTimeout, false));
        assert!(!d.blocks_ingest());
        assert!(d.contains(DegradedCause::AfterCommitFailing));
    }
}
