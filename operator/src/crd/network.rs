//! `spec.networkPolicy`: the pipeline's pods locked down to what they need.

use k8s_openapi::api::networking::v1::NetworkPolicyPeer;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// NetworkPolicies for the pipeline's pods: the workers accept metrics scrapes only from
/// the operator and `metricsFrom`, and send only to PostgreSQL and DNS; the generator
/// sends nothing and accepts only metrics scrapes. Needs a network plugin that enforces
/// NetworkPolicy (Calico, Cilium, …).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NetworkPolicySpec {
    /// Create the NetworkPolicies `<pipeline>-worker` and `<pipeline>-generator`. Unset:
    /// the operator's default (`--network-policy-default`, on in the Helm chart). Turned
    /// off, the operator deletes them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// Who else may scrape the pods' metrics port, e.g. Prometheus:
    /// `[{namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: monitoring}}}]`.
    /// The operator's own pods (app.kubernetes.io/name=sluice,
    /// app.kubernetes.io/component=operator in its namespace) are always allowed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub metrics_from: Vec<NetworkPolicyPeer>,
    /// Where PostgreSQL is: an ipBlock (`{ipBlock: {cidr: 10.0.3.7/32}}`) or pod and
    /// namespace selectors (e.g. a CloudNativePG cluster's pods). Empty: any address, on
    /// `postgresPort` only.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub postgres: Vec<NetworkPolicyPeer>,
    /// PostgreSQL's TCP port, the only one the workers may connect to besides DNS.
    #[serde(default = "default_postgres_port")]
    #[schemars(range(min = 1, max = 65535))]
    pub postgres_port: i32,
}

fn default_postgres_port() -> i32 {
    5432
}

impl Default for NetworkPolicySpec {
    fn default() -> Self {
        NetworkPolicySpec {
            enabled: None,
            metrics_from: Vec::new(),
            postgres: Vec::new(),
            postgres_port: default_postgres_port(),
        }
    }
}
