//! The generator Deployment.

use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec, DeploymentStrategy};
use k8s_openapi::api::core::v1::{Container, PodSpec, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::ResourceExt;

use super::*;
use crate::crd::{IngestPipeline, default_generator_resources};

pub const GENERATOR_METRICS_PORT: i32 = 9102;

pub fn generator(ipl: &IngestPipeline, config_hash: &str) -> Deployment {
    let name = ipl.name_any();
    let spec = &ipl.spec;
    let replicas = if spec.suspend || !spec.generator.enabled {
        0
    } else {
        1
    };
    let container = Container {
        name: "generator".into(),
        image: Some(spec.images.generator.clone()),
        image_pull_policy: Some(spec.images.pull_policy.as_str().into()),
        args: Some(generator_args()),
        ports: Some(vec![metrics_port(GENERATOR_METRICS_PORT)]),
        liveness_probe: Some(http_probe("/healthz", 10, 6, 5)),
        readiness_probe: Some(http_probe("/readyz", 5, 3, 2)),
        resources: Some(effective_resources(
            &spec.generator.resources,
            &default_generator_resources(),
        )),
        security_context: Some(container_security_context()),
        volume_mounts: Some(vec![
            mount("landing", LANDING_DIR, false),
            mount("config", CONFIG_DIR, true),
            mount("tmp", "/tmp", false),
        ]),
        ..Default::default()
    };
    let mut obj = Deployment {
        metadata: meta(ipl, ipl.generator_name(), "generator"),
        spec: DeploymentSpec {
            replicas: Some(replicas),
            // Never two generators at once: they would write the same seeded files.
            strategy: Some(DeploymentStrategy {
                type_: Some("Recreate".into()),
                ..Default::default()
            }),
            selector: LabelSelector {
                match_labels: Some(selector_labels(&name, "generator")),
                ..Default::default()
            },
            template: PodTemplateSpec {
                metadata: template_meta(
                    ipl,
                    "generator",
                    [(CONFIG_HASH_ANNOTATION.to_string(), config_hash.to_string())].into(),
                ),
                spec: Some(PodSpec {
                    service_account_name: Some(ipl.service_account_name()),
                    automount_service_account_token: Some(false),
                    security_context: Some(pod_security_context()),
                    affinity: affinity(ipl),
                    termination_grace_period_seconds: Some(30),
                    containers: vec![container],
                    volumes: Some(vec![landing_volume(ipl), config_volume(ipl), tmp_volume()]),
                    ..Default::default()
                }),
            },
            ..Default::default()
        },
        ..Default::default()
    };
    customise(&mut obj.spec.template, &generator_pod_template(ipl));
    obj
}

/// The generator's command-line arguments.
pub fn generator_args() -> Vec<String> {
    vec![
        format!("--landing-dir={LANDING_DIR}"),
        format!("--config={CONFIG_DIR}/{CONFIG_FILE}"),
        format!("--metrics-addr=0.0.0.0:{GENERATOR_METRICS_PORT}"),
        "--log-format=json".into(),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::*;
    #[test]
    fn generator_wiring() {
        let c = build(&sample(), &BuildInputs::default());
        let pod = pod_spec_of_generator(&c);
        let args = pod.containers[0].args.clone().expect("args");
        for a in [
            "--landing-dir=/data/landing",
            "--config=/etc/sluice/pipeline.json",
            "--metrics-addr=0.0.0.0:9102",
        ] {
            assert!(args.contains(&a.to_string()), "{a}");
        }
        assert!(
            pod.containers[0].env.is_none(),
            "the generator gets no credentials"
        );
        let strategy = c
            .generator
            .spec
            .strategy
            .as_ref()
            .and_then(|s| s.type_.clone());
        assert_eq!(strategy.as_deref(), Some("Recreate"));
    }

    #[test]
    fn suspend_and_disabled_generator_scale_to_zero() {
        let mut ipl = sample();
        let c = build(&ipl, &BuildInputs::default());
        assert_eq!(c.generator.spec.replicas, Some(1));

        ipl.spec.generator.enabled = false;
        let c = build(&ipl, &BuildInputs::default());
        assert_eq!(c.generator.spec.replicas, Some(0));
        assert_eq!(c.worker.spec.replicas, Some(2));

        ipl.spec.generator.enabled = true;
        ipl.spec.suspend = true;
        let c = build(&ipl, &BuildInputs::default());
        assert_eq!(c.generator.spec.replicas, Some(0));
        assert_eq!(c.worker.spec.replicas, Some(0));
    }
}
