//! What every pod of a pipeline shares: security contexts, probes, ports, common volumes
//! and mounts, environment helpers, scheduling affinity, template metadata and resources.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Affinity, Capabilities, ConfigMapVolumeSource, ContainerPort, EmptyDirVolumeSource, EnvVar,
    EnvVarSource, HTTPGetAction, PodAffinity, PodAffinityTerm, PodSecurityContext, Probe,
    SeccompProfile, SecretKeySelector, SecurityContext, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::ResourceExt;

use super::*;
use crate::crd::{IngestPipeline, LandingAccessMode};
use crate::validate::parse_quantity;
use k8s_openapi::api::core::v1::ResourceRequirements;

pub const RUN_AS: i64 = 65532;

pub(crate) fn config_volume(ipl: &IngestPipeline) -> Volume {
    Volume {
        name: "config".into(),
        config_map: Some(ConfigMapVolumeSource {
            name: ipl.config_map_name(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

pub(crate) fn tmp_volume() -> Volume {
    Volume {
        name: "tmp".into(),
        empty_dir: Some(EmptyDirVolumeSource {
            size_limit: Some(Quantity("64Mi".into())),
            ..Default::default()
        }),
        ..Default::default()
    }
}

pub(crate) fn mount(name: &str, path: &str, read_only: bool) -> VolumeMount {
    VolumeMount {
        name: name.into(),
        mount_path: path.into(),
        read_only: Some(read_only),
        ..Default::default()
    }
}

pub(crate) fn pod_security_context() -> PodSecurityContext {
    PodSecurityContext {
        run_as_non_root: Some(true),
        run_as_user: Some(RUN_AS),
        run_as_group: Some(RUN_AS),
        // Volumes (landing, checkpoints) become group-writable for the pods.
        fs_group: Some(RUN_AS),
        seccomp_profile: Some(SeccompProfile {
            type_: "RuntimeDefault".into(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

pub(crate) fn container_security_context() -> SecurityContext {
    SecurityContext {
        allow_privilege_escalation: Some(false),
        privileged: Some(false),
        read_only_root_filesystem: Some(true),
        run_as_non_root: Some(true),
        run_as_user: Some(RUN_AS),
        run_as_group: Some(RUN_AS),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".into()]),
            ..Default::default()
        }),
        seccomp_profile: Some(SeccompProfile {
            type_: "RuntimeDefault".into(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

pub(crate) fn http_probe(path: &str, period: i32, failures: i32, initial_delay: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.into()),
            port: IntOrString::String("metrics".into()),
            scheme: Some("HTTP".into()),
            ..Default::default()
        }),
        initial_delay_seconds: Some(initial_delay),
        period_seconds: Some(period),
        timeout_seconds: Some(2),
        failure_threshold: Some(failures),
        ..Default::default()
    }
}

pub(crate) fn metrics_port(port: i32) -> ContainerPort {
    ContainerPort {
        name: Some("metrics".into()),
        container_port: port,
        protocol: Some("TCP".into()),
        ..Default::default()
    }
}

pub(crate) fn env_value(name: &str, value: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: Some(value.into()),
        ..Default::default()
    }
}

pub(crate) fn env_secret(name: &str, secret: &str, key: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                name: secret.into(),
                key: key.into(),
                // Either `uri` or the separate keys are present: each one is optional.
                optional: Some(true),
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// With a ReadWriteOnce landing volume every pod of the pipeline must run on the node
/// that mounts it: required pod affinity to the pipeline's other pods, per host name.
/// (The first pod is allowed anywhere: the scheduler accepts a pod whose affinity term
/// matches no pod when it matches itself.)
pub(crate) fn affinity(ipl: &IngestPipeline) -> Option<Affinity> {
    if ipl.spec.landing_zone.access_mode != LandingAccessMode::ReadWriteOnce {
        return None;
    }
    let name = ipl.name_any();
    let match_labels: BTreeMap<String, String> = [
        ("app.kubernetes.io/name".to_string(), APP_NAME.to_string()),
        ("app.kubernetes.io/instance".to_string(), name),
    ]
    .into();
    Some(Affinity {
        pod_affinity: Some(PodAffinity {
            required_during_scheduling_ignored_during_execution: Some(vec![PodAffinityTerm {
                label_selector: Some(LabelSelector {
                    match_labels: Some(match_labels),
                    ..Default::default()
                }),
                topology_key: "kubernetes.io/hostname".into(),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        ..Default::default()
    })
}

pub(crate) fn template_meta(
    ipl: &IngestPipeline,
    component: &str,
    annotations: BTreeMap<String, String>,
) -> Option<ObjectMeta> {
    Some(ObjectMeta {
        labels: Some(labels(&ipl.name_any(), component)),
        annotations: Some(annotations),
        ..Default::default()
    })
}

/// The resources a container gets: the keys the spec names, and the defaults for the
/// others (so that giving only `requests.cpu` keeps the memory limit). A default limit
/// below the spec's request is raised to the request.
pub fn effective_resources(
    spec: &ResourceRequirements,
    defaults: &ResourceRequirements,
) -> ResourceRequirements {
    let merge = |s: &Option<BTreeMap<String, Quantity>>, d: &Option<BTreeMap<String, Quantity>>| {
        let mut m = d.clone().unwrap_or_default();
        m.extend(s.clone().unwrap_or_default());
        m
    };
    let requests = merge(&spec.requests, &defaults.requests);
    let mut limits = merge(&spec.limits, &defaults.limits);
    let user_limits = spec.limits.clone().unwrap_or_default();
    for (res, req) in &requests {
        if user_limits.contains_key(res) {
            continue;
        }
        if let Some(lim) = limits.get_mut(res)
            && let (Some(r), Some(l)) = (parse_quantity(&req.0), parse_quantity(&lim.0))
            && r > l
        {
            *lim = req.clone();
        }
    }
    ResourceRequirements {
        requests: Some(requests),
        limits: Some(limits),
        ..spec.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::default_worker_resources;
    use crate::fixtures::*;
    #[test]
    fn pods_are_hardened_and_probed() {
        let c = build(&sample(), &BuildInputs::default());
        for pod in [pod_spec_of_worker(&c), pod_spec_of_generator(&c)] {
            let psc = pod.security_context.as_ref().expect("pod sc");
            assert_eq!(psc.run_as_non_root, Some(true));
            assert_eq!(psc.run_as_user, Some(65532));
            assert_eq!(
                psc.seccomp_profile.as_ref().map(|s| s.type_.as_str()),
                Some("RuntimeDefault")
            );
            assert_eq!(pod.automount_service_account_token, Some(false));
            assert_eq!(pod.service_account_name.as_deref(), Some("shop-sluice"));
            let ctr = &pod.containers[0];
            let sc = ctr.security_context.as_ref().expect("sc");
            assert_eq!(sc.read_only_root_filesystem, Some(true));
            assert_eq!(sc.allow_privilege_escalation, Some(false));
            assert_eq!(sc.run_as_non_root, Some(true));
            assert_eq!(
                sc.capabilities.as_ref().and_then(|c| c.drop.clone()),
                Some(vec!["ALL".to_string()])
            );
            let res = ctr.resources.as_ref().expect("resources");
            assert!(
                res.requests
                    .as_ref()
                    .is_some_and(|r| r.contains_key("memory"))
            );
            assert!(
                res.limits
                    .as_ref()
                    .is_some_and(|r| r.contains_key("memory"))
            );
            let live = ctr
                .liveness_probe
                .as_ref()
                .and_then(|p| p.http_get.as_ref());
            let ready = ctr
                .readiness_probe
                .as_ref()
                .and_then(|p| p.http_get.as_ref());
            assert_eq!(live.and_then(|h| h.path.as_deref()), Some("/healthz"));
            assert_eq!(ready.and_then(|h| h.path.as_deref()), Some("/readyz"));
            assert_eq!(
                live.map(|h| h.port.clone()),
                Some(IntOrString::String("metrics".into()))
            );
            let port = &ctr.ports.as_ref().expect("ports")[0];
            assert_eq!(port.name.as_deref(), Some("metrics"));
            assert!(pod.affinity.is_none());
        }
    }

    #[test]
    fn read_write_once_pins_pods_together() {
        let mut ipl = sample();
        ipl.spec.landing_zone.access_mode = LandingAccessMode::ReadWriteOnce;
        let c = build(&ipl, &BuildInputs::default());
        let claim = c
            .landing_claim
            .as_ref()
            .and_then(|p| p.spec.as_ref())
            .expect("claim");
        assert_eq!(claim.access_modes, Some(vec!["ReadWriteOnce".to_string()]));
        for pod in [pod_spec_of_worker(&c), pod_spec_of_generator(&c)] {
            let term = &pod
                .affinity
                .as_ref()
                .and_then(|a| a.pod_affinity.as_ref())
                .and_then(|p| {
                    p.required_during_scheduling_ignored_during_execution
                        .as_ref()
                })
                .expect("affinity")[0];
            assert_eq!(term.topology_key, "kubernetes.io/hostname");
            let ml = term
                .label_selector
                .as_ref()
                .and_then(|s| s.match_labels.as_ref())
                .expect("labels");
            assert_eq!(ml["app.kubernetes.io/instance"], "shop");
            assert!(!ml.contains_key("app.kubernetes.io/component"));
        }
    }

    #[test]
    fn partial_resources_keep_the_other_defaults() {
        let q = |s: &str| Quantity(s.into());
        let spec = ResourceRequirements {
            requests: Some(
                [
                    ("cpu".to_string(), q("1")),
                    ("memory".to_string(), q("1Gi")),
                ]
                .into(),
            ),
            ..Default::default()
        };
        let r = effective_resources(&spec, &default_worker_resources());
        let req = r.requests.expect("requests");
        let lim = r.limits.expect("limits");
        assert_eq!(req["cpu"], q("1"));
        assert_eq!(lim["cpu"], q("2"), "default cpu limit kept");
        assert_eq!(
            lim["memory"],
            q("1Gi"),
            "default memory limit raised to the request"
        );
        // An explicit limit is never changed.
        let spec = ResourceRequirements {
            limits: Some([("memory".to_string(), q("100Mi"))].into()),
            ..Default::default()
        };
        let r = effective_resources(&spec, &default_worker_resources());
        assert_eq!(r.limits.expect("limits")["memory"], q("100Mi"));
        assert_eq!(r.requests.expect("requests")["memory"], q("64Mi"));
    }
}
