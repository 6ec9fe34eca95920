//! The Pod Security Standards' `restricted` profile, as a check of the pod specs the
//! operator builds. Namespaces of Sluice carry `pod-security.kubernetes.io/enforce:
//! restricted`; this keeps every pod the operator makes admissible there, with and
//! without the user's pod templates. (The PodSecurity admission plugin exists from
//! Kubernetes 1.22; the test API server is 1.20, so the rules are checked here.)

use k8s_openapi::api::core::v1::{Container, PodSpec};

/// Volume types the restricted profile allows.
const ALLOWED_VOLUMES: [&str; 8] = [
    "configMap",
    "csi",
    "downwardAPI",
    "emptyDir",
    "ephemeral",
    "persistentVolumeClaim",
    "projected",
    "secret",
];

/// What in `pod` breaks the restricted profile (Kubernetes 1.25+ rules), empty when it
/// complies. Each entry names the field.
pub fn restricted_violations(pod: &PodSpec) -> Vec<String> {
    let mut out = Vec::new();
    let psc = pod.security_context.clone().unwrap_or_default();
    // Baseline: host namespaces, host ports, hostPath and other volume types.
    for (field, on) in [
        ("hostNetwork", pod.host_network),
        ("hostPID", pod.host_pid),
        ("hostIPC", pod.host_ipc),
    ] {
        if on == Some(true) {
            out.push(format!("spec.{field} is true"));
        }
    }
    for v in pod.volumes.iter().flatten() {
        let value = serde_json::to_value(v).unwrap_or_default();
        let kinds: Vec<&String> = value
            .as_object()
            .into_iter()
            .flat_map(|m| m.keys())
            .filter(|k| k.as_str() != "name")
            .collect();
        for k in kinds {
            if !ALLOWED_VOLUMES.contains(&k.as_str()) {
                out.push(format!("volume {}: type {k} is not allowed", v.name));
            }
        }
    }
    let pod_seccomp = psc.seccomp_profile.as_ref().map(|s| s.type_.as_str());
    let seccomp_ok = |t: Option<&str>| matches!(t, Some("RuntimeDefault" | "Localhost"));
    if psc.run_as_user == Some(0) {
        out.push("spec.securityContext.runAsUser is 0".into());
    }
    let containers = pod
        .containers
        .iter()
        .chain(pod.init_containers.iter().flatten());
    for c in containers {
        container_violations(c, psc.run_as_non_root, pod_seccomp, seccomp_ok, &mut out);
    }
    out
}

fn container_violations(
    c: &Container,
    pod_non_root: Option<bool>,
    pod_seccomp: Option<&str>,
    seccomp_ok: impl Fn(Option<&str>) -> bool,
    out: &mut Vec<String>,
) {
    let name = &c.name;
    let sc = c.security_context.clone().unwrap_or_default();
    for p in c.ports.iter().flatten() {
        if p.host_port.is_some_and(|h| h != 0) {
            out.push(format!("container {name}: hostPort"));
        }
    }
    if sc.privileged == Some(true) {
        out.push(format!("container {name}: privileged"));
    }
    if sc.allow_privilege_escalation != Some(false) {
        out.push(format!(
            "container {name}: allowPrivilegeEscalation is not false"
        ));
    }
    if sc.run_as_non_root.or(pod_non_root) != Some(true) {
        out.push(format!("container {name}: runAsNonRoot is not true"));
    }
    if sc.run_as_user == Some(0) {
        out.push(format!("container {name}: runAsUser is 0"));
    }
    let seccomp = sc
        .seccomp_profile
        .as_ref()
        .map(|s| s.type_.as_str())
        .or(pod_seccomp);
    if !seccomp_ok(seccomp) {
        out.push(format!(
            "container {name}: seccompProfile is not RuntimeDefault or Localhost"
        ));
    }
    let caps = sc.capabilities.unwrap_or_default();
    if !caps.drop.iter().flatten().any(|d| d == "ALL") {
        out.push(format!("container {name}: capabilities do not drop ALL"));
    }
    if caps.add.iter().flatten().any(|a| a != "NET_BIND_SERVICE") {
        out.push(format!(
            "container {name}: adds capabilities other than NET_BIND_SERVICE"
        ));
    }
    if sc.proc_mount.as_deref().is_some_and(|p| p != "Default") {
        out.push(format!("container {name}: procMount"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::children::{BuildInputs, SecretLayout, build};
    use crate::crd::{LandingAccessMode, PodMetadata, PodTemplate};
    use crate::fixtures::*;
    use k8s_openapi::api::core::v1::{
        Capabilities, HostPathVolumeSource, LocalObjectReference, SecurityContext, Toleration,
        Volume,
    };
    use sluice_core::config::SslMode;

    fn template() -> PodTemplate {
        PodTemplate {
            metadata: Some(PodMetadata {
                labels: [("team".to_string(), "data".to_string())].into(),
                ..Default::default()
            }),
            image_pull_secrets: Some(vec![LocalObjectReference {
                name: "regcred".into(),
            }]),
            node_selector: Some([("pool".to_string(), "ingest".to_string())].into()),
            tolerations: Some(vec![Toleration {
                key: Some("dedicated".into()),
                operator: Some("Exists".into()),
                ..Default::default()
            }]),
            priority_class_name: Some("ingest".into()),
            service_account_name: Some("ingest-pods".into()),
            ..Default::default()
        }
    }

    #[test]
    fn every_pod_the_operator_builds_is_restricted() {
        let mut variants = Vec::new();
        let base = sample();
        variants.push(("defaults", base.clone(), BuildInputs::default()));
        let mut t = base.clone();
        t.spec.pod_template = Some(template());
        t.spec.worker.pod_template = Some(PodTemplate {
            priority_class_name: Some("high".into()),
            ..Default::default()
        });
        variants.push(("pod templates", t, BuildInputs::default()));
        let mut rwo = base.clone();
        rwo.spec.landing_zone.access_mode = LandingAccessMode::ReadWriteOnce;
        rwo.spec.generator.pod_template = Some(template());
        variants.push((
            "ReadWriteOnce + generator template",
            rwo,
            BuildInputs::default(),
        ));
        let mut tls = base.clone();
        tls.spec.postgres.sslmode = Some(SslMode::VerifyFull);
        tls.spec.landing_zone.existing_claim = Some("shared".into());
        variants.push((
            "verify-full, separate keys, existing claim",
            tls,
            BuildInputs {
                secret_layout: SecretLayout::Keys,
                secret_version: Some("7".into()),
                ..Default::default()
            },
        ));
        for (what, ipl, inputs) in variants {
            let c = build(&ipl, &inputs);
            for (pod, kind) in [
                (pod_spec_of_worker(&c), "worker"),
                (pod_spec_of_generator(&c), "generator"),
            ] {
                let v = restricted_violations(pod);
                assert!(
                    v.is_empty(),
                    "{what}: the {kind} pod breaks restricted: {v:?}"
                );
            }
        }
    }

    #[test]
    fn the_check_finds_what_restricted_forbids() {
        let c = build(&sample(), &BuildInputs::default());
        let mut pod = pod_spec_of_worker(&c).clone();
        pod.host_network = Some(true);
        pod.volumes.get_or_insert_with(Vec::new).push(Volume {
            name: "host".into(),
            host_path: Some(HostPathVolumeSource {
                path: "/".into(),
                ..Default::default()
            }),
            ..Default::default()
        });
        pod.security_context = None;
        pod.containers[0].security_context = Some(SecurityContext {
            privileged: Some(true),
            capabilities: Some(Capabilities {
                add: Some(vec!["SYS_ADMIN".into()]),
                ..Default::default()
            }),
            ..Default::default()
        });
        let v = restricted_violations(&pod).join("\n");
        for needle in [
            "hostNetwork",
            "type hostPath",
            "privileged",
            "allowPrivilegeEscalation",
            "runAsNonRoot",
            "seccompProfile",
            "drop ALL",
            "NET_BIND_SERVICE",
        ] {
            assert!(v.contains(needle), "{needle} not found in:\n{v}");
        }
    }
}
