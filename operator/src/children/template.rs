//! The user's pod settings (`spec.podTemplate` and the per-component overrides) applied
//! to the pod templates the operator builds.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Affinity, PodTemplateSpec};

use crate::crd::{IngestPipeline, PodTemplate};

/// Label keys the operator sets on its pods and selects them by: a pod template may not
/// set them (validation refuses it with InvalidSpec).
pub const RESERVED_LABELS: [&str; 4] = [
    "app.kubernetes.io/name",
    "app.kubernetes.io/instance",
    "app.kubernetes.io/component",
    "app.kubernetes.io/managed-by",
];
/// Annotation keys under this prefix are the operator's (config hash, credentials version).
pub const RESERVED_ANNOTATION_PREFIX: &str = "sluice.dev/";

/// The generator's pod settings: `spec.generator.podTemplate` over `spec.podTemplate`.
pub fn generator_pod_template(ipl: &IngestPipeline) -> PodTemplate {
    merged(&ipl.spec.pod_template, &ipl.spec.generator.pod_template)
}

/// The workers' pod settings: `spec.worker.podTemplate` over `spec.podTemplate`.
pub fn worker_pod_template(ipl: &IngestPipeline) -> PodTemplate {
    merged(&ipl.spec.pod_template, &ipl.spec.worker.pod_template)
}

fn merged(shared: &Option<PodTemplate>, own: &Option<PodTemplate>) -> PodTemplate {
    shared
        .clone()
        .unwrap_or_default()
        .merged_with(&own.clone().unwrap_or_default())
}

/// The first reserved key a template's metadata sets, as `(field, key)`, if any.
pub fn reserved_key(t: &PodTemplate) -> Option<(&'static str, String)> {
    let md = t.metadata.as_ref()?;
    if let Some(k) = md
        .labels
        .keys()
        .find(|k| RESERVED_LABELS.contains(&k.as_str()))
    {
        return Some(("metadata.labels", k.clone()));
    }
    md.annotations
        .keys()
        .find(|k| k.starts_with(RESERVED_ANNOTATION_PREFIX))
        .map(|k| ("metadata.annotations", k.clone()))
}

/// Applies `t` to a pod template built by the operator. The operator's labels and
/// annotations win over the template's; the operator's affinity (the ReadWriteOnce
/// co-location term) is kept and added to the template's.
pub fn customise(pod: &mut PodTemplateSpec, t: &PodTemplate) {
    if let Some(md) = &t.metadata {
        let meta = pod.metadata.get_or_insert_with(Default::default);
        meta.labels = Some(overlay(&md.labels, meta.labels.take()));
        meta.annotations = Some(overlay(&md.annotations, meta.annotations.take()));
    }
    let Some(spec) = pod.spec.as_mut() else {
        return;
    };
    if t.image_pull_secrets.is_some() {
        spec.image_pull_secrets = t.image_pull_secrets.clone();
    }
    if t.node_selector.is_some() {
        spec.node_selector = t.node_selector.clone();
    }
    if t.tolerations.is_some() {
        spec.tolerations = t.tolerations.clone();
    }
    if t.topology_spread_constraints.is_some() {
        spec.topology_spread_constraints = t.topology_spread_constraints.clone();
    }
    if t.priority_class_name.is_some() {
        spec.priority_class_name = t.priority_class_name.clone();
    }
    if t.service_account_name.is_some() {
        spec.service_account_name = t.service_account_name.clone();
    }
    spec.affinity = with_pinning(t.affinity.clone(), spec.affinity.take());
}

/// `ours` on top of `theirs`.
fn overlay(
    theirs: &BTreeMap<String, String>,
    ours: Option<BTreeMap<String, String>>,
) -> BTreeMap<String, String> {
    let mut m = theirs.clone();
    m.extend(ours.unwrap_or_default());
    m
}

/// The user's affinity with the operator's required pod-affinity terms added.
fn with_pinning(user: Option<Affinity>, ours: Option<Affinity>) -> Option<Affinity> {
    let (mut user, ours) = match (user, ours) {
        (u, None) => return u,
        (None, o) => return o,
        (Some(u), Some(o)) => (u, o),
    };
    let terms = ours
        .pod_affinity
        .and_then(|p| p.required_during_scheduling_ignored_during_execution)
        .unwrap_or_default();
    if !terms.is_empty() {
        user.pod_affinity
            .get_or_insert_with(Default::default)
            .required_during_scheduling_ignored_during_execution
            .get_or_insert_with(Vec::new)
            .extend(terms);
    }
    Some(user)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::children::{BuildInputs, build};
    use crate::crd::{LandingAccessMode, PodMetadata};
    use crate::fixtures::*;
    use k8s_openapi::api::core::v1::{
        LocalObjectReference, NodeAffinity, NodeSelector, NodeSelectorRequirement,
        NodeSelectorTerm, Toleration, TopologySpreadConstraint,
    };

    fn kv(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    pub(crate) fn full_template() -> PodTemplate {
        PodTemplate {
            metadata: Some(PodMetadata {
                labels: kv(&[("team", "data")]),
                annotations: kv(&[("cost-centre", "42")]),
            }),
            image_pull_secrets: Some(vec![LocalObjectReference {
                name: "regcred".into(),
            }]),
            node_selector: Some(kv(&[("pool", "ingest")])),
            tolerations: Some(vec![Toleration {
                key: Some("dedicated".into()),
                operator: Some("Equal".into()),
                value: Some("ingest".into()),
                effect: Some("NoSchedule".into()),
                ..Default::default()
            }]),
            affinity: Some(Affinity {
                node_affinity: Some(NodeAffinity {
                    required_during_scheduling_ignored_during_execution: Some(NodeSelector {
                        node_selector_terms: vec![NodeSelectorTerm {
                            match_expressions: Some(vec![NodeSelectorRequirement {
                                key: "zone".into(),
                                operator: "In".into(),
                                values: Some(vec!["a".into()]),
                            }]),
                            ..Default::default()
                        }],
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            topology_spread_constraints: Some(vec![TopologySpreadConstraint {
                max_skew: 1,
                topology_key: "kubernetes.io/hostname".into(),
                when_unsatisfiable: "ScheduleAnyway".into(),
                ..Default::default()
            }]),
            priority_class_name: Some("ingest".into()),
            service_account_name: Some("ingest-pods".into()),
        }
    }

    #[test]
    fn no_template_changes_nothing() {
        let plain = build(&sample(), &BuildInputs::default());
        let mut ipl = sample();
        ipl.spec.pod_template = Some(PodTemplate::default());
        let with_empty = build(&ipl, &BuildInputs::default());
        assert_eq!(plain.worker, with_empty.worker);
        assert_eq!(plain.generator, with_empty.generator);
    }

    #[test]
    fn every_field_reaches_both_pods_and_overrides_win() {
        let mut ipl = sample();
        ipl.spec.pod_template = Some(full_template());
        ipl.spec.worker.pod_template = Some(PodTemplate {
            metadata: Some(PodMetadata {
                labels: kv(&[("role", "loader")]),
                ..Default::default()
            }),
            priority_class_name: Some("critical".into()),
            ..Default::default()
        });
        let c = build(&ipl, &BuildInputs::default());
        for (pod, meta, prio) in [
            (
                pod_spec_of_worker(&c),
                c.worker.spec.template.metadata.as_ref(),
                "critical",
            ),
            (
                pod_spec_of_generator(&c),
                c.generator.spec.template.metadata.as_ref(),
                "ingest",
            ),
        ] {
            let t = full_template();
            assert_eq!(pod.image_pull_secrets, t.image_pull_secrets);
            assert_eq!(pod.node_selector, t.node_selector);
            assert_eq!(pod.tolerations, t.tolerations);
            assert_eq!(pod.affinity, t.affinity);
            assert_eq!(
                pod.topology_spread_constraints,
                t.topology_spread_constraints
            );
            assert_eq!(pod.priority_class_name.as_deref(), Some(prio));
            assert_eq!(pod.service_account_name.as_deref(), Some("ingest-pods"));
            assert_eq!(pod.automount_service_account_token, Some(false));
            let meta = meta.expect("template metadata");
            let labels = meta.labels.as_ref().expect("labels");
            assert_eq!(labels["team"], "data");
            assert_eq!(labels["app.kubernetes.io/instance"], "shop");
            let ann = meta.annotations.as_ref().expect("annotations");
            assert_eq!(ann["cost-centre"], "42");
            assert!(ann.contains_key("sluice.dev/config-hash"));
        }
        let wl = c
            .worker
            .spec
            .template
            .metadata
            .as_ref()
            .and_then(|m| m.labels.as_ref());
        assert_eq!(wl.map(|l| l["role"].as_str()), Some("loader"));
        let gl = c
            .generator
            .spec
            .template
            .metadata
            .as_ref()
            .and_then(|m| m.labels.as_ref());
        assert!(gl.is_some_and(|l| !l.contains_key("role")));
    }

    #[test]
    fn read_write_once_pinning_is_added_to_the_users_affinity() {
        let mut ipl = sample();
        ipl.spec.landing_zone.access_mode = LandingAccessMode::ReadWriteOnce;
        ipl.spec.pod_template = Some(full_template());
        let c = build(&ipl, &BuildInputs::default());
        let aff = pod_spec_of_worker(&c).affinity.as_ref().expect("affinity");
        assert!(
            aff.node_affinity.is_some(),
            "the user's node affinity is kept"
        );
        let terms = aff
            .pod_affinity
            .as_ref()
            .and_then(|p| {
                p.required_during_scheduling_ignored_during_execution
                    .as_ref()
            })
            .expect("pinning kept");
        assert_eq!(terms.len(), 1);
        assert_eq!(terms[0].topology_key, "kubernetes.io/hostname");
    }

    #[test]
    fn reserved_keys_are_found() {
        let mut t = full_template();
        assert_eq!(reserved_key(&t), None);
        if let Some(md) = t.metadata.as_mut() {
            md.annotations
                .insert("sluice.dev/config-hash".into(), "x".into());
        }
        assert_eq!(
            reserved_key(&t),
            Some(("metadata.annotations", "sluice.dev/config-hash".into()))
        );
        if let Some(md) = t.metadata.as_mut() {
            md.labels
                .insert("app.kubernetes.io/component".into(), "x".into());
        }
        assert_eq!(
            reserved_key(&t),
            Some(("metadata.labels", "app.kubernetes.io/component".into()))
        );
    }
}
