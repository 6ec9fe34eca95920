//! Volumes: the landing claim (shared by every pod) and the workers' checkpoint claim
//! template.

use k8s_openapi::api::core::v1::{
    PersistentVolumeClaim, PersistentVolumeClaimSpec, PersistentVolumeClaimVolumeSource, Volume,
    VolumeResourceRequirements,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::ResourceExt;

use super::*;
use crate::crd::IngestPipeline;

pub const LANDING_DIR: &str = "/data/landing";

pub const CHECKPOINT_DIR: &str = "/data/checkpoint";

pub const CHECKPOINT_TEMPLATE: &str = "checkpoint";

pub fn landing_claim(ipl: &IngestPipeline) -> Option<PersistentVolumeClaim> {
    let lz = &ipl.spec.landing_zone;
    if lz.existing_claim.is_some() {
        return None;
    }
    let mut metadata = meta(ipl, ipl.landing_claim_name(), "landing");
    if !lz.delete_claim {
        // Without an owner the garbage collector leaves the claim, and the files not yet
        // loaded on it, when the pipeline is deleted.
        metadata.owner_references = None;
    }
    Some(PersistentVolumeClaim {
        metadata,
        spec: Some(PersistentVolumeClaimSpec {
            access_modes: Some(vec![lz.access_mode.as_str().to_string()]),
            storage_class_name: lz.storage_class_name.clone(),
            resources: Some(VolumeResourceRequirements {
                requests: Some([("storage".to_string(), lz.size.clone())].into()),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    })
}

pub(crate) fn landing_volume(ipl: &IngestPipeline) -> Volume {
    let claim = ipl.landing_claim_in_use();
    Volume {
        name: "landing".into(),
        persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
            claim_name: claim,
            read_only: Some(false),
        }),
        ..Default::default()
    }
}

/// Checkpoint volumes of a pipeline's workers: one claim per worker, kept when the
/// pipeline is deleted (StatefulSet semantics).
pub fn checkpoint_claim_template(ipl: &IngestPipeline) -> PersistentVolumeClaim {
    let cp = &ipl.spec.checkpoints;
    PersistentVolumeClaim {
        metadata: ObjectMeta {
            name: Some(CHECKPOINT_TEMPLATE.into()),
            labels: Some(labels(&ipl.name_any(), "checkpoint")),
            ..Default::default()
        },
        spec: Some(PersistentVolumeClaimSpec {
            access_modes: Some(vec!["ReadWriteOnce".into()]),
            storage_class_name: cp.storage_class_name.clone(),
            resources: Some(VolumeResourceRequirements {
                requests: Some([("storage".to_string(), cp.size.clone())].into()),
                ..Default::default()
            }),
            volume_mode: Some("Filesystem".into()),
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::*;
    #[test]
    fn the_landing_claim_outlives_the_pipeline_unless_delete_claim() {
        let mut ipl = sample();
        let kept = build(&ipl, &BuildInputs::default())
            .landing_claim
            .expect("claim");
        assert_eq!(kept.metadata.name.as_deref(), Some("shop-landing"));
        assert_eq!(kept.metadata.owner_references, None, "kept by default");
        assert_eq!(
            kept.metadata
                .labels
                .as_ref()
                .map(|l| l["app.kubernetes.io/component"].clone()),
            Some("landing".into())
        );
        ipl.spec.landing_zone.delete_claim = true;
        let owned = build(&ipl, &BuildInputs::default())
            .landing_claim
            .expect("claim");
        let owners = owned.metadata.owner_references.expect("owned");
        assert_eq!(
            (owners[0].kind.as_str(), owners[0].controller),
            ("IngestPipeline", Some(true))
        );
    }

    #[test]
    fn existing_claim_replaces_the_landing_claim() {
        let mut ipl = sample();
        ipl.spec.landing_zone.existing_claim = Some("shared-nfs".into());
        let c = build(&ipl, &BuildInputs::default());
        assert!(c.landing_claim.is_none());
        let claim = pod_spec_of_generator(&c)
            .volumes
            .iter()
            .flatten()
            .find(|v| v.name == "landing")
            .and_then(|v| v.persistent_volume_claim.as_ref())
            .map(|p| p.claim_name.clone());
        assert_eq!(claim.as_deref(), Some("shared-nfs"));
    }
}
