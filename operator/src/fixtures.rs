//! Test fixtures shared by the operator's unit tests: a sample pipeline and accessors
//! into the children built from it.

use k8s_openapi::api::core::v1::PodSpec;

use crate::children::Children;
use crate::crd::{IngestPipeline, IngestPipelineSpec, PostgresSpec, SecretRef};

pub(crate) fn sample() -> IngestPipeline {
    let mut ipl = IngestPipeline::new(
        "shop",
        IngestPipelineSpec {
            postgres: PostgresSpec {
                secret_ref: Some(SecretRef {
                    name: "pg-credentials".into(),
                }),
                ..Default::default()
            },
            ..Default::default()
        },
    );
    ipl.metadata.namespace = Some("data".into());
    ipl.metadata.uid = Some("1234-uid".into());
    ipl.metadata.generation = Some(1);
    ipl
}

pub(crate) fn pod_spec_of_worker(c: &Children) -> &PodSpec {
    c.worker.spec.template.spec.as_ref().expect("pod spec")
}

pub(crate) fn pod_spec_of_generator(c: &Children) -> &PodSpec {
    c.generator.spec.template.spec.as_ref().expect("pod spec")
}

pub(crate) fn template_annotation(c: &Children, key: &str) -> String {
    c.worker
        .spec
        .template
        .metadata
        .as_ref()
        .and_then(|m| m.annotations.as_ref())
        .and_then(|a| a.get(key).cloned())
        .expect("annotation")
}
