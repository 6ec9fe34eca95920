//! Names and labels of a pipeline's children, and their common metadata.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::{Resource, ResourceExt};

use crate::crd::IngestPipeline;

pub const APP_NAME: &str = "sluice";

pub const MANAGED_BY: &str = "sluice-operator";

/// Names of a pipeline's children, from the pipeline's name (the methods on
/// [`IngestPipeline`] below are the same names, for a pipeline at hand).
pub fn config_map_name(p: &str) -> String {
    format!("{p}-config")
}

pub fn landing_claim_name(p: &str) -> String {
    format!("{p}-landing")
}

pub fn generator_name(p: &str) -> String {
    format!("{p}-generator")
}

pub fn worker_name(p: &str) -> String {
    format!("{p}-worker")
}

/// The headless metrics Service shares the StatefulSet's name (its `serviceName`).
pub fn service_name(p: &str) -> String {
    worker_name(p)
}

pub fn service_account_name(p: &str) -> String {
    format!("{p}-sluice")
}

/// The names of a pipeline's children.
impl IngestPipeline {
    /// The ConfigMap holding the workers' and the generator's configuration.
    pub fn config_map_name(&self) -> String {
        config_map_name(&self.name_any())
    }

    /// The landing claim the operator makes (when `spec.landingZone.existingClaim` is
    /// unset).
    pub fn landing_claim_name(&self) -> String {
        landing_claim_name(&self.name_any())
    }

    /// The landing claim the pods mount: `spec.landingZone.existingClaim`, else ours.
    pub fn landing_claim_in_use(&self) -> String {
        self.spec
            .landing_zone
            .existing_claim
            .clone()
            .unwrap_or_else(|| self.landing_claim_name())
    }

    /// The generator's Deployment (and its NetworkPolicy).
    pub fn generator_name(&self) -> String {
        generator_name(&self.name_any())
    }

    /// The workers' StatefulSet (and their PodDisruptionBudget and NetworkPolicy).
    pub fn worker_name(&self) -> String {
        worker_name(&self.name_any())
    }

    /// The headless metrics Service (the StatefulSet's `serviceName`).
    pub fn service_name(&self) -> String {
        service_name(&self.name_any())
    }

    /// The ServiceAccount the pods run as (unless the pod template names one).
    pub fn service_account_name(&self) -> String {
        service_account_name(&self.name_any())
    }

    /// The PodMonitor (`spec.monitoring.podMonitor`).
    pub fn pod_monitor_name(&self) -> String {
        super::pod_monitor_name(&self.name_any())
    }
}

/// The four recommended labels; `component` is worker, generator, config, landing,
/// metrics or pods.
pub fn labels(pipeline: &str, component: &str) -> BTreeMap<String, String> {
    [
        ("app.kubernetes.io/name", APP_NAME),
        ("app.kubernetes.io/instance", pipeline),
        ("app.kubernetes.io/component", component),
        ("app.kubernetes.io/managed-by", MANAGED_BY),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

/// Labels selecting a component's pods (stable: never change after creation).
pub fn selector_labels(pipeline: &str, component: &str) -> BTreeMap<String, String> {
    let mut l = labels(pipeline, component);
    l.remove("app.kubernetes.io/managed-by");
    l
}

/// [`selector_labels`] as a label selector string (`k=v,k=v`), for the scale subresource.
pub fn selector_string(pipeline: &str, component: &str) -> String {
    selector_labels(pipeline, component)
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

pub(crate) fn owner_ref(ipl: &IngestPipeline) -> Vec<OwnerReference> {
    ipl.controller_owner_ref(&()).into_iter().collect()
}

pub(crate) fn meta(ipl: &IngestPipeline, name: String, component: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name),
        namespace: ipl.namespace(),
        labels: Some(labels(&ipl.name_any(), component)),
        owner_references: Some(owner_ref(ipl)),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use crate::children::*;
    use crate::fixtures::*;
    #[test]
    fn names_labels_and_owner_refs() {
        let ipl = sample();
        let c = build(&ipl, &BuildInputs::default());
        let metas = [
            (&c.config_map.metadata, "shop-config", "config"),
            (&c.service_account.metadata, "shop-sluice", "pods"),
            (&c.service.metadata, "shop-worker", "metrics"),
            (&c.generator.metadata, "shop-generator", "generator"),
            (&c.worker.metadata, "shop-worker", "worker"),
        ];
        for (m, name, component) in metas {
            assert_eq!(m.name.as_deref(), Some(name));
            assert_eq!(m.namespace.as_deref(), Some("data"));
            let l = m.labels.as_ref().expect("labels");
            assert_eq!(l["app.kubernetes.io/name"], "sluice");
            assert_eq!(l["app.kubernetes.io/instance"], "shop");
            assert_eq!(l["app.kubernetes.io/component"], component);
            assert_eq!(l["app.kubernetes.io/managed-by"], "sluice-operator");
            let owners = m.owner_references.as_ref().expect("owners");
            assert_eq!(owners.len(), 1);
            assert_eq!(owners[0].kind, "IngestPipeline");
            assert_eq!(owners[0].api_version, "sluice.dev/v1alpha1");
            assert_eq!(owners[0].name, "shop");
            assert_eq!(owners[0].uid, "1234-uid");
            assert_eq!(owners[0].controller, Some(true));
        }
    }

    #[test]
    fn the_methods_give_the_same_names() {
        let mut ipl = sample();
        assert_eq!(ipl.config_map_name(), config_map_name("shop"));
        assert_eq!(ipl.landing_claim_name(), "shop-landing");
        assert_eq!(ipl.landing_claim_in_use(), "shop-landing");
        assert_eq!(ipl.generator_name(), "shop-generator");
        assert_eq!(ipl.worker_name(), worker_name("shop"));
        assert_eq!(ipl.service_name(), "shop-worker");
        assert_eq!(ipl.service_account_name(), "shop-sluice");
        assert_eq!(ipl.pod_monitor_name(), pod_monitor_name("shop"));
        ipl.spec.landing_zone.existing_claim = Some("kept".into());
        assert_eq!(ipl.landing_claim_in_use(), "kept");
        assert_eq!(ipl.landing_claim_name(), "shop-landing");
    }

    #[test]
    fn selectors_match_template_labels() {
        let c = build(&sample(), &BuildInputs::default());
        let sts = &c.worker.spec;
        let tl = sts
            .template
            .metadata
            .as_ref()
            .and_then(|m| m.labels.as_ref())
            .expect("labels");
        for (k, v) in sts.selector.match_labels.as_ref().expect("selector") {
            assert_eq!(tl.get(k), Some(v));
        }
        let svc_sel = c
            .service
            .spec
            .as_ref()
            .and_then(|s| s.selector.as_ref())
            .expect("svc selector");
        assert_eq!(svc_sel, sts.selector.match_labels.as_ref().expect("sel"));
        assert_eq!(sts.service_name.as_deref(), Some("shop-worker"));
        let svc = c.service.spec.as_ref().expect("svc spec");
        assert_eq!(svc.cluster_ip.as_deref(), Some("None"));
        let port = &svc.ports.as_ref().expect("ports")[0];
        assert_eq!(port.name.as_deref(), Some("metrics"));
        assert_eq!(port.port, 9100);
    }
}
