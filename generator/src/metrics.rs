//! The generator's Prometheus metrics (documented in docs/generator.md).

use prometheus::{Counter, IntCounter, IntCounterVec, IntGauge, Opts, Registry};
use sluice_core::EventType;

use crate::defects::DefectKind;

/// Handles to every metric, with all label values created up front.
#[derive(Clone, Debug)]
pub struct Metrics {
    registry: Registry,
    /// Per event type, in `EventType::ALL` order.
    pub events: [IntCounter; 3],
    /// Per defect kind, in `DefectKind::ALL` order.
    pub bad_rows: Vec<IntCounter>,
    pub files: IntCounter,
    pub bytes: IntCounter,
    pub backpressure_seconds: Counter,
    pub backpressure_paused: IntGauge,
}

impl Metrics {
    pub fn new() -> Result<Metrics, prometheus::Error> {
        let registry = Registry::new();
        let events_vec = IntCounterVec::new(
            Opts::new(
                "sluice_generator_events_total",
                "Events written (valid and bad rows), by event type.",
            ),
            &["event_type"],
        )?;
        let bad_vec = IntCounterVec::new(
            Opts::new(
                "sluice_generator_bad_rows_total",
                "Deliberately bad rows written, by defect kind.",
            ),
            &["kind"],
        )?;
        let files = IntCounter::new(
            "sluice_generator_files_total",
            "Files made visible in the landing directory.",
        )?;
        let bytes = IntCounter::new(
            "sluice_generator_bytes_total",
            "Bytes of the files made visible.",
        )?;
        let backpressure_seconds = Counter::new(
            "sluice_generator_backpressure_seconds_total",
            "Seconds spent paused because the landing directory held too many unprocessed files or bytes.",
        )?;
        let backpressure_paused = IntGauge::new(
            "sluice_generator_backpressure_paused",
            "1 while paused by backpressure.",
        )?;
        registry.register(Box::new(events_vec.clone()))?;
        registry.register(Box::new(bad_vec.clone()))?;
        registry.register(Box::new(files.clone()))?;
        registry.register(Box::new(bytes.clone()))?;
        registry.register(Box::new(backpressure_seconds.clone()))?;
        registry.register(Box::new(backpressure_paused.clone()))?;
        let events = EventType::ALL.map(|t| events_vec.with_label_values(&[t.as_str()]));
        let bad_rows = DefectKind::ALL
            .iter()
            .map(|k| bad_vec.with_label_values(&[k.as_str()]))
            .collect();
        Ok(Metrics {
            registry,
            events,
            bad_rows,
            files,
            bytes,
            backpressure_seconds,
            backpressure_paused,
        })
    }

    /// The registry to serve at `/metrics`.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    pub fn event_counter(&self, t: EventType) -> &IntCounter {
        match t {
            EventType::View => &self.events[0],
            EventType::AddToCart => &self.events[1],
            EventType::Purchase => &self.events[2],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_series_exist_from_the_start() {
        let m = Metrics::new().expect("metrics");
        let names: Vec<String> = m
            .registry()
            .gather()
            .iter()
            .map(|f| format!("{}:{}", f.name(), f.get_metric().len()))
            .collect();
        assert!(names.contains(&"sluice_generator_events_total:3".to_string()));
        assert!(names.contains(&"sluice_generator_bad_rows_total:8".to_string()));
        assert_eq!(names.len(), 6, "{names:?}");
    }
}
