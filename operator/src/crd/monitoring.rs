//! `spec.monitoring`: monitoring objects the operator makes for the pipeline.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Monitoring of the pipeline's pods.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MonitoringSpec {
    /// A Prometheus Operator PodMonitor (monitoring.coreos.com/v1) `<pipeline>-sluice`
    /// scraping the workers' and the generator's `metrics` port.
    #[serde(default)]
    pub pod_monitor: PodMonitorSpec,
}

/// The pipeline's PodMonitor. Made only when the API server serves the
/// monitoring.coreos.com/v1 PodMonitor CRD; otherwise the `Monitoring` condition says so
/// (the pipeline is not Degraded for it).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PodMonitorSpec {
    /// Create the PodMonitor. Turned off, the operator deletes the one it made.
    #[serde(default)]
    pub enabled: bool,
    /// Extra labels on the PodMonitor, e.g. the `release: prometheus` label a
    /// Prometheus's podMonitorSelector looks for.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Scrape interval (a Prometheus duration such as `30s` or `1m`). Unset: Prometheus's
    /// global scrape interval.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(
        pattern = r"^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$"
    ))]
    pub interval: Option<String>,
}
