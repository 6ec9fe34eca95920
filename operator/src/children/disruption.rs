//! The workers' PodDisruptionBudget (`spec.worker.disruptionBudget`).

use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::ResourceExt;

use super::{meta, selector_labels};
use crate::crd::IngestPipeline;

/// The PodDisruptionBudget `<pipeline>-worker` over the worker pods, or None when
/// `spec.worker.disruptionBudget.enabled` is false (the operator then deletes it).
pub fn disruption_budget(ipl: &IngestPipeline) -> Option<PodDisruptionBudget> {
    let db = &ipl.spec.worker.disruption_budget;
    if !db.enabled {
        return None;
    }
    let name = ipl.name_any();
    Some(PodDisruptionBudget {
        metadata: meta(ipl, ipl.worker_name(), "worker"),
        spec: Some(PodDisruptionBudgetSpec {
            max_unavailable: Some(db.max_unavailable.clone()),
            selector: Some(LabelSelector {
                match_labels: Some(selector_labels(&name, "worker")),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::sample;
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

    #[test]
    fn on_by_default_over_the_worker_pods() {
        let ipl = sample();
        let pdb = disruption_budget(&ipl).expect("on by default");
        assert_eq!(pdb.metadata.name.as_deref(), Some("shop-worker"));
        assert_eq!(
            pdb.metadata
                .owner_references
                .as_ref()
                .map(|o| o[0].kind.as_str()),
            Some("IngestPipeline")
        );
        let spec = pdb.spec.expect("spec");
        assert_eq!(spec.max_unavailable, Some(IntOrString::Int(1)));
        assert_eq!(spec.min_available, None);
        let sel = spec
            .selector
            .and_then(|s| s.match_labels)
            .expect("selector");
        assert_eq!(sel, selector_labels("shop", "worker"));
    }

    #[test]
    fn a_percentage_or_off() {
        let mut ipl = sample();
        ipl.spec.worker.disruption_budget.max_unavailable = IntOrString::String("25%".into());
        let spec = disruption_budget(&ipl).and_then(|p| p.spec).expect("spec");
        assert_eq!(
            spec.max_unavailable,
            Some(IntOrString::String("25%".into()))
        );
        ipl.spec.worker.disruption_budget.enabled = false;
        assert!(disruption_budget(&ipl).is_none());
    }
}
