//! Deleting a pipeline that still has files to load: the operator's finalizer.
//!
//! The operator adds [`FINALIZER`] to every pipeline it reconciles. When the pipeline is
//! deleted, it reads the backlog the workers last reported (the status figures), records
//! a Warning Event `DeletedWithBacklog` (and says it in the Ready condition) when files
//! were waiting, and removes the finalizer at once: deletion is never held up for long.
//! A pipeline deleted while no operator runs waits for one; to delete it without the
//! operator, remove the finalizer by hand:
//! `kubectl patch ipl NAME --type json -p '[{"op":"remove","path":"/metadata/finalizers"}]'`.

use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType};
use kube::{Resource, ResourceExt};
use serde_json::json;

use crate::crd::IngestPipeline;
use crate::reason::Reason;
use crate::reconcile::{Context, Error};

/// The operator's finalizer on every IngestPipeline.
pub const FINALIZER: &str = "sluice.dev/backlog-check";

/// Reason of the Warning Event recorded when a pipeline is deleted with a backlog.
pub const DELETED_WITH_BACKLOG: &str = Reason::DeletedWithBacklog.as_str();

/// The warning for a pipeline deleted with `backlog_files` landed files not loaded, or
/// None when none were reported.
pub fn backlog_warning(ipl: &IngestPipeline) -> Option<String> {
    let status = ipl.status.as_ref()?;
    let files = status.backlog_files.filter(|n| *n > 0)?;
    let claim = ipl.landing_claim_in_use();
    let lag = status
        .lag_seconds
        .map(|s| format!(", the oldest {s:.0} s old"))
        .unwrap_or_default();
    let when = status
        .figures_time
        .as_deref()
        .map(|t| format!(" (workers' figures of {t})"))
        .unwrap_or_default();
    let kept = if ipl.spec.landing_zone.delete_claim
        && ipl.spec.landing_zone.existing_claim.is_none()
    {
        format!(
            "the landing claim {claim} is deleted with the pipeline (landingZone.deleteClaim), and the files with it"
        )
    } else {
        format!(
            "the files stay on the landing claim {claim}: a new pipeline naming it in \
             spec.landingZone.existingClaim loads them"
        )
    };
    Some(format!(
        "Deleted with {files} landed file(s) not loaded{lag}{when}; {kept}"
    ))
}

/// Whether the pipeline carries the operator's finalizer.
pub fn has_finalizer(ipl: &IngestPipeline) -> bool {
    ipl.finalizers().iter().any(|f| f == FINALIZER)
}

/// The finalizer list with ours added (`add`) or removed, other finalizers kept.
pub fn finalizers_with(ipl: &IngestPipeline, add: bool) -> Vec<String> {
    let mut list: Vec<String> = ipl
        .finalizers()
        .iter()
        .filter(|f| *f != FINALIZER)
        .cloned()
        .collect();
    if add {
        list.push(FINALIZER.into());
    }
    list
}

/// Writes the finalizer list; the resourceVersion makes a concurrent change fail (and
/// the reconcile retry) instead of losing another controller's finalizer.
async fn patch_finalizers(
    ctx: &Context,
    ipl: &IngestPipeline,
    ns: &str,
    add: bool,
) -> Result<(), Error> {
    let api: Api<IngestPipeline> = Api::namespaced(ctx.client.clone(), ns);
    let patch = json!({ "metadata": {
        "finalizers": finalizers_with(ipl, add),
        "resourceVersion": ipl.resource_version(),
    }});
    match api
        .patch(
            &ipl.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
    {
        Ok(_) => Ok(()),
        // Already gone: nothing left to finish.
        Err(kube::Error::Api(s)) if s.code == 404 && !add => Ok(()),
        Err(source) => Err(Error::Apply {
            kind: "IngestPipeline".into(),
            name: ipl.name_any(),
            source,
        }),
    }
}

/// Adds the finalizer when it is missing (a live pipeline).
pub async fn ensure_finalizer(ctx: &Context, ipl: &IngestPipeline, ns: &str) -> Result<(), Error> {
    if has_finalizer(ipl) {
        return Ok(());
    }
    patch_finalizers(ctx, ipl, ns, true).await
}

/// A deleted pipeline: warns when it had a backlog, then lets it go.
pub async fn finish(ctx: &Context, ipl: &IngestPipeline, ns: &str) -> Result<Action, Error> {
    if !has_finalizer(ipl) {
        // Owner references let the garbage collector delete the children.
        return Ok(Action::await_change());
    }
    if let Some(note) = backlog_warning(ipl) {
        tracing::warn!(pipeline = %format!("{ns}/{}", ipl.name_any()), %note, "deleted with a backlog");
        let ev = Event {
            type_: EventType::Warning,
            reason: Reason::DeletedWithBacklog.into(),
            note: Some(note.chars().take(1000).collect()),
            action: "Delete".into(),
            secondary: None,
        };
        if let Err(e) = ctx.recorder.publish(&ev, &ipl.object_ref(&())).await {
            tracing::warn!(error = %e, "cannot publish event");
        }
        status_note(ctx, ipl, ns, &note).await;
    }
    patch_finalizers(ctx, ipl, ns, false).await?;
    Ok(Action::await_change())
}

/// Says it in the Ready condition too (best effort: the object is going away).
async fn status_note(ctx: &Context, ipl: &IngestPipeline, ns: &str, note: &str) {
    let Some(status) = ipl.status.as_ref() else {
        return;
    };
    let now = Timestamp::now();
    let mut conditions = status.conditions.clone();
    for c in conditions
        .iter_mut()
        .filter(|c| c.type_ == crate::status::READY)
    {
        if c.status != "False" {
            c.last_transition_time = k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(now);
        }
        c.status = "False".into();
        c.reason = Reason::DeletedWithBacklog.into();
        c.message = note.to_string();
    }
    let api: Api<IngestPipeline> = Api::namespaced(ctx.client.clone(), ns);
    let patch = json!({ "status": { "conditions": conditions } });
    if let Err(e) = api
        .patch_status(
            &ipl.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
    {
        tracing::debug!(error = %e, "cannot note the backlog in the status");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::IngestPipelineStatus;
    use crate::fixtures::sample;

    #[test]
    fn no_backlog_no_warning() {
        let mut ipl = sample();
        assert_eq!(backlog_warning(&ipl), None);
        ipl.status = Some(IngestPipelineStatus {
            backlog_files: Some(0),
            ..Default::default()
        });
        assert_eq!(backlog_warning(&ipl), None);
    }

    #[test]
    fn a_backlog_names_the_files_and_the_claim() {
        let mut ipl = sample();
        ipl.status = Some(IngestPipelineStatus {
            backlog_files: Some(5),
            lag_seconds: Some(12.4),
            figures_time: Some("2025-01-01T00:00:00Z".into()),
            ..Default::default()
        });
        let w = backlog_warning(&ipl).expect("warning");
        assert!(
            w.starts_with("Deleted with 5 landed file(s) not loaded, the oldest 12 s old"),
            "{w}"
        );
        assert!(w.contains("stay on the landing claim shop-landing"), "{w}");
        assert!(w.contains("existingClaim"), "{w}");
        ipl.spec.landing_zone.delete_claim = true;
        let w = backlog_warning(&ipl).expect("warning");
        assert!(
            w.contains("shop-landing is deleted with the pipeline"),
            "{w}"
        );
    }

    #[test]
    fn finalizers_keep_the_others() {
        let mut ipl = sample();
        assert!(!has_finalizer(&ipl));
        ipl.metadata.finalizers = Some(vec!["other/x".into()]);
        assert_eq!(finalizers_with(&ipl, true), ["other/x", FINALIZER]);
        ipl.metadata.finalizers = Some(vec!["other/x".into(), FINALIZER.into()]);
        assert!(has_finalizer(&ipl));
        assert_eq!(finalizers_with(&ipl, true), ["other/x", FINALIZER]);
        assert_eq!(finalizers_with(&ipl, false), ["other/x"]);
    }
}
