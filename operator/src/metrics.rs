//! The operator's own Prometheus metrics (served by core's TelemetryServer).

use prometheus::{Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts, Registry};

/// Error reasons used as the `reason` label (small fixed set, pre-created).
pub const ERROR_REASONS: [&str; 4] = ["apply", "status", "secret", "other"];

#[derive(Clone)]
pub struct Metrics {
    pub reconciliations: IntCounter,
    pub errors: IntCounterVec,
    pub duration: Histogram,
    pub leader: IntGauge,
}

impl Metrics {
    pub fn register(registry: &Registry) -> prometheus::Result<Metrics> {
        let reconciliations = IntCounter::new(
            "sluice_operator_reconciliations_total",
            "Reconciliations of IngestPipeline resources started.",
        )?;
        let errors = IntCounterVec::new(
            Opts::new(
                "sluice_operator_reconcile_errors_total",
                "Reconciliations that failed, by reason (apply, status, secret, other); retried with backoff.",
            ),
            &["reason"],
        )?;
        let duration = Histogram::with_opts(
            HistogramOpts::new(
                "sluice_operator_reconcile_duration_seconds",
                "Duration of one reconciliation.",
            )
            .buckets(vec![
                0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            ]),
        )?;
        let leader = IntGauge::new(
            "sluice_operator_leader",
            "1 while this replica holds the leader Lease (or leader election is off).",
        )?;
        registry.register(Box::new(reconciliations.clone()))?;
        registry.register(Box::new(errors.clone()))?;
        registry.register(Box::new(duration.clone()))?;
        registry.register(Box::new(leader.clone()))?;
        for r in ERROR_REASONS {
            errors.with_label_values(&[r]);
        }
        Ok(Metrics {
            reconciliations,
            errors,
            duration,
            leader,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registers_and_precreates_labels() {
        let registry = Registry::new();
        let m = Metrics::register(&registry).expect("register");
        m.reconciliations.inc();
        m.duration.observe(0.01);
        m.leader.set(1);
        let names: Vec<String> = registry
            .gather()
            .iter()
            .map(|f| f.name().to_string())
            .collect();
        for n in [
            "sluice_operator_reconciliations_total",
            "sluice_operator_reconcile_errors_total",
            "sluice_operator_reconcile_duration_seconds",
            "sluice_operator_leader",
        ] {
            assert!(names.iter().any(|x| x == n), "{n} missing");
        }
        let errors = registry
            .gather()
            .into_iter()
            .find(|f| f.name() == "sluice_operator_reconcile_errors_total")
            .expect("errors");
        assert_eq!(errors.get_metric().len(), ERROR_REASONS.len());
    }
}
