//! NetworkPolicies `<pipeline>-worker` and `<pipeline>-generator` (`spec.networkPolicy`).

use std::collections::BTreeMap;

use k8s_openapi::api::networking::v1::{
    NetworkPolicy, NetworkPolicyEgressRule, NetworkPolicyIngressRule, NetworkPolicyPeer,
    NetworkPolicyPort, NetworkPolicySpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::ResourceExt;

use super::{APP_NAME, GENERATOR_METRICS_PORT, WORKER_METRICS_PORT, meta, selector_labels};
use crate::crd::IngestPipeline;

/// What the policies depend on besides the resource.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NetworkInputs {
    /// Whether a pipeline that leaves spec.networkPolicy.enabled unset gets policies.
    pub default_enabled: bool,
    /// The operator's namespace (its pods scrape the workers' metrics); None: any
    /// namespace's pods with the operator's labels.
    pub operator_namespace: Option<String>,
}

/// Whether the pipeline gets NetworkPolicies.
pub fn network_policy_enabled(ipl: &IngestPipeline, inputs: &NetworkInputs) -> bool {
    ipl.spec
        .network_policy
        .enabled
        .unwrap_or(inputs.default_enabled)
}

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// The operator's pods, as a peer.
fn operator_peer(inputs: &NetworkInputs) -> NetworkPolicyPeer {
    NetworkPolicyPeer {
        pod_selector: Some(LabelSelector {
            match_labels: Some(labels(&[
                ("app.kubernetes.io/name", APP_NAME),
                ("app.kubernetes.io/component", "operator"),
            ])),
            ..Default::default()
        }),
        namespace_selector: Some(LabelSelector {
            match_labels: inputs
                .operator_namespace
                .as_deref()
                .map(|ns| labels(&[("kubernetes.io/metadata.name", ns)])),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn port(n: i32, protocol: &str) -> NetworkPolicyPort {
    NetworkPolicyPort {
        port: Some(IntOrString::Int(n)),
        protocol: Some(protocol.into()),
        ..Default::default()
    }
}

fn metrics_ingress(
    ipl: &IngestPipeline,
    inputs: &NetworkInputs,
    n: i32,
) -> NetworkPolicyIngressRule {
    let mut from = vec![operator_peer(inputs)];
    from.extend(ipl.spec.network_policy.metrics_from.iter().cloned());
    NetworkPolicyIngressRule {
        from: Some(from),
        ports: Some(vec![port(n, "TCP")]),
    }
}

fn policy(
    ipl: &IngestPipeline,
    name: String,
    component: &str,
    ingress: NetworkPolicyIngressRule,
    egress: Vec<NetworkPolicyEgressRule>,
) -> NetworkPolicy {
    NetworkPolicy {
        metadata: meta(ipl, name, component),
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(LabelSelector {
                match_labels: Some(selector_labels(&ipl.name_any(), component)),
                ..Default::default()
            }),
            policy_types: Some(vec!["Ingress".into(), "Egress".into()]),
            ingress: Some(vec![ingress]),
            egress: Some(egress),
        }),
    }
}

/// The two policies, or none when disabled (the operator then deletes them).
pub fn network_policies(ipl: &IngestPipeline, inputs: &NetworkInputs) -> Vec<NetworkPolicy> {
    if !network_policy_enabled(ipl, inputs) {
        return Vec::new();
    }
    let np = &ipl.spec.network_policy;
    let dns = NetworkPolicyEgressRule {
        to: None,
        ports: Some(vec![port(53, "UDP"), port(53, "TCP")]),
    };
    let postgres = NetworkPolicyEgressRule {
        to: (!np.postgres.is_empty()).then(|| np.postgres.clone()),
        ports: Some(vec![port(np.postgres_port, "TCP")]),
    };
    vec![
        policy(
            ipl,
            ipl.worker_name(),
            "worker",
            metrics_ingress(ipl, inputs, WORKER_METRICS_PORT),
            vec![dns, postgres],
        ),
        // The generator only writes to its volume: no egress rule, nothing goes out.
        policy(
            ipl,
            ipl.generator_name(),
            "generator",
            metrics_ingress(ipl, inputs, GENERATOR_METRICS_PORT),
            Vec::new(),
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::sample;
    use k8s_openapi::api::networking::v1::IPBlock;

    fn inputs(default_enabled: bool) -> NetworkInputs {
        NetworkInputs {
            default_enabled,
            operator_namespace: Some("sluice-system".into()),
        }
    }

    #[test]
    fn the_operator_default_decides_unless_the_pipeline_does() {
        let mut ipl = sample();
        assert!(network_policies(&ipl, &inputs(false)).is_empty());
        assert_eq!(network_policies(&ipl, &inputs(true)).len(), 2);
        ipl.spec.network_policy.enabled = Some(false);
        assert!(network_policies(&ipl, &inputs(true)).is_empty());
        ipl.spec.network_policy.enabled = Some(true);
        assert_eq!(network_policies(&ipl, &inputs(false)).len(), 2);
    }

    #[test]
    fn workers_scrapes_in_postgres_and_dns_out_generator_nothing_out() {
        let mut ipl = sample();
        ipl.spec.network_policy.enabled = Some(true);
        ipl.spec.network_policy.postgres = vec![NetworkPolicyPeer {
            ip_block: Some(IPBlock {
                cidr: "10.0.3.7/32".into(),
                except: None,
            }),
            ..Default::default()
        }];
        ipl.spec.network_policy.postgres_port = 6432;
        ipl.spec.network_policy.metrics_from = vec![NetworkPolicyPeer {
            namespace_selector: Some(LabelSelector {
                match_labels: Some(labels(&[("kubernetes.io/metadata.name", "monitoring")])),
                ..Default::default()
            }),
            ..Default::default()
        }];
        let p = network_policies(&ipl, &inputs(false));
        let (w, g) = (
            p[0].spec.as_ref().expect("worker"),
            p[1].spec.as_ref().expect("generator"),
        );
        assert_eq!(p[0].metadata.name.as_deref(), Some("shop-worker"));
        assert_eq!(p[1].metadata.name.as_deref(), Some("shop-generator"));
        assert_eq!(
            w.pod_selector.as_ref().and_then(|s| s.match_labels.clone()),
            Some(selector_labels("shop", "worker"))
        );
        let v = serde_json::to_value(w).expect("json");
        assert_eq!(v["policyTypes"], serde_json::json!(["Ingress", "Egress"]));
        let from = &v["ingress"][0]["from"];
        assert_eq!(
            from[0]["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"],
            "sluice-system"
        );
        assert_eq!(
            from[0]["podSelector"]["matchLabels"]["app.kubernetes.io/component"],
            "operator"
        );
        assert_eq!(
            from[1]["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"],
            "monitoring"
        );
        assert_eq!(v["ingress"][0]["ports"][0]["port"], 9100);
        assert_eq!(v["egress"][0]["ports"][0]["port"], 53);
        assert!(v["egress"][0].get("to").is_none(), "DNS anywhere");
        assert_eq!(v["egress"][1]["to"][0]["ipBlock"]["cidr"], "10.0.3.7/32");
        assert_eq!(v["egress"][1]["ports"][0]["port"], 6432);
        assert_eq!(g.egress, Some(Vec::new()), "the generator sends nothing");
        assert_eq!(
            serde_json::to_value(g).expect("json")["ingress"][0]["ports"][0]["port"],
            9102
        );
    }
}
