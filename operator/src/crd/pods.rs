//! Pod customisation (`spec.podTemplate`, `spec.generator.podTemplate`,
//! `spec.worker.podTemplate`), named after Strimzi's `template.pod`.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Affinity, LocalObjectReference, Toleration, TopologySpreadConstraint,
};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Extra labels and annotations of the pods.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PodMetadata {
    /// Labels added to the pods. The keys the operator selects its pods by
    /// (app.kubernetes.io/name, instance, component, managed-by) are refused (InvalidSpec).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Annotations added to the pods. Keys under sluice.dev/ are the operator's and are
    /// refused (InvalidSpec).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// Scheduling and metadata settings of pods. Given once in `spec.podTemplate` for both
/// the generator and the workers, and per component in `spec.generator.podTemplate` /
/// `spec.worker.podTemplate`: a field set on the component wins over the shared one,
/// field by field; labels and annotations are merged (the component's win on a clash).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PodTemplate {
    /// Extra labels and annotations of the pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<PodMetadata>,
    /// Secrets (in the pipeline's namespace) for pulling the images from a private registry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_pull_secrets: Option<Vec<LocalObjectReference>>,
    /// Node labels the pods must run on (pod.spec.nodeSelector).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_selector: Option<BTreeMap<String, String>>,
    /// Taints the pods tolerate (pod.spec.tolerations), e.g. for dedicated nodes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tolerations: Option<Vec<Toleration>>,
    /// Node and pod (anti-)affinity. With landingZone.accessMode ReadWriteOnce the
    /// operator adds its required pod-affinity term (all the pipeline's pods on the node
    /// that mounts the volume) to what is given here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity: Option<Affinity>,
    /// How the pods spread over zones or nodes (pod.spec.topologySpreadConstraints).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topology_spread_constraints: Option<Vec<TopologySpreadConstraint>>,
    /// PriorityClass of the pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"))]
    pub priority_class_name: Option<String>,
    /// ServiceAccount the pods run as, instead of the `<pipeline>-sluice` one the operator
    /// creates. Its API token is never mounted either way.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"))]
    pub service_account_name: Option<String>,
}

impl PodTemplate {
    /// `own` over `self` (the shared template), field by field; labels and annotations
    /// merged, `own`'s winning on the same key.
    pub fn merged_with(&self, own: &PodTemplate) -> PodTemplate {
        fn pick<T: Clone>(own: &Option<T>, shared: &Option<T>) -> Option<T> {
            own.clone().or_else(|| shared.clone())
        }
        let metadata = match (&self.metadata, &own.metadata) {
            (None, None) => None,
            (s, o) => {
                let mut m = s.clone().unwrap_or_default();
                if let Some(o) = o {
                    m.labels.extend(o.labels.clone());
                    m.annotations.extend(o.annotations.clone());
                }
                Some(m)
            }
        };
        PodTemplate {
            metadata,
            image_pull_secrets: pick(&own.image_pull_secrets, &self.image_pull_secrets),
            node_selector: pick(&own.node_selector, &self.node_selector),
            tolerations: pick(&own.tolerations, &self.tolerations),
            affinity: pick(&own.affinity, &self.affinity),
            topology_spread_constraints: pick(
                &own.topology_spread_constraints,
                &self.topology_spread_constraints,
            ),
            priority_class_name: pick(&own.priority_class_name, &self.priority_class_name),
            service_account_name: pick(&own.service_account_name, &self.service_account_name),
        }
    }
}

/// The workers' PodDisruptionBudget: how many workers a voluntary disruption (a node
/// drain, a cluster upgrade) may take down at once.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct DisruptionBudgetSpec {
    /// Create the PodDisruptionBudget `<pipeline>-worker`. When turned off, the operator
    /// deletes it.
    pub enabled: bool,
    /// Workers that may be unavailable at once during voluntary disruptions: a number
    /// (default 1) or a percentage of spec.worker.replicas ("25%").
    pub max_unavailable: IntOrString,
}

impl Default for DisruptionBudgetSpec {
    fn default() -> Self {
        DisruptionBudgetSpec {
            enabled: true,
            max_unavailable: IntOrString::Int(1),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(kv: &[(&str, &str)]) -> BTreeMap<String, String> {
        kv.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn the_component_wins_field_by_field_and_metadata_merges() {
        let shared = PodTemplate {
            metadata: Some(PodMetadata {
                labels: labels(&[("team", "data"), ("tier", "shared")]),
                annotations: labels(&[("a", "1")]),
            }),
            node_selector: Some(labels(&[("pool", "ingest")])),
            priority_class_name: Some("low".into()),
            image_pull_secrets: Some(vec![LocalObjectReference {
                name: "regcred".into(),
            }]),
            ..Default::default()
        };
        let own = PodTemplate {
            metadata: Some(PodMetadata {
                labels: labels(&[("tier", "worker")]),
                ..Default::default()
            }),
            priority_class_name: Some("high".into()),
            ..Default::default()
        };
        let m = shared.merged_with(&own);
        let md = m.metadata.as_ref().expect("metadata");
        assert_eq!(md.labels, labels(&[("team", "data"), ("tier", "worker")]));
        assert_eq!(md.annotations, labels(&[("a", "1")]));
        assert_eq!(m.priority_class_name.as_deref(), Some("high"));
        assert_eq!(m.node_selector, shared.node_selector);
        assert_eq!(m.image_pull_secrets, shared.image_pull_secrets);
        assert_eq!(
            PodTemplate::default().merged_with(&PodTemplate::default()),
            PodTemplate::default()
        );
    }
}
