//! Applying (or removing) the workers' PodDisruptionBudget on whichever `policy` version
//! the API server serves: `policy/v1` since Kubernetes 1.21, `policy/v1beta1` before
//! (same spec fields). Not watched: re-applied on every reconcile.

use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, Patch, PatchParams};
use kube::{Client, ResourceExt};
use tokio::sync::OnceCell;

use crate::crd::{FIELD_MANAGER, IngestPipeline};
use crate::reconcile::Error;

/// The PodDisruptionBudget resource the server serves, found once.
#[derive(Default)]
pub struct PdbApi(OnceCell<Option<ApiResource>>);

impl PdbApi {
    /// policy/v1, else policy/v1beta1, else None (then no budget is made, with a warning).
    pub async fn resource(&self, client: &Client) -> Option<&ApiResource> {
        self.0
            .get_or_init(|| async {
                for version in ["v1", "v1beta1"] {
                    let api_version = format!("policy/{version}");
                    match client.list_api_group_resources(&api_version).await {
                        Ok(list)
                            if list
                                .resources
                                .iter()
                                .any(|r| r.name == "poddisruptionbudgets") =>
                        {
                            return Some(ApiResource {
                                group: "policy".into(),
                                version: version.into(),
                                api_version,
                                kind: "PodDisruptionBudget".into(),
                                plural: "poddisruptionbudgets".into(),
                            });
                        }
                        _ => {}
                    }
                }
                tracing::warn!("the API server serves no policy PodDisruptionBudgets: none made");
                None
            })
            .await
            .as_ref()
    }
}

/// Applies `desired` as `<pipeline>-worker`, or deletes our budget of that name when
/// None (only when it is owned by this pipeline).
pub async fn sync(
    client: &Client,
    pdb: &PdbApi,
    ipl: &IngestPipeline,
    ns: &str,
    name: &str,
    desired: Option<&PodDisruptionBudget>,
) -> Result<(), Error> {
    let Some(ar) = pdb.resource(client).await else {
        return Ok(());
    };
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, ar);
    let fail = |source| Error::Apply {
        kind: "PodDisruptionBudget".into(),
        name: name.to_string(),
        source,
    };
    match desired {
        Some(pdb) => {
            let mut obj =
                serde_json::to_value(pdb).map_err(|e| Error::Other(format!("PDB: {e}")))?;
            obj["apiVersion"] = ar.api_version.clone().into();
            obj["kind"] = ar.kind.clone().into();
            api.patch(
                name,
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(&obj),
            )
            .await
            .map_err(fail)?;
        }
        None => {
            let uid = ipl.uid();
            let ours = api.get_opt(name).await.map_err(fail)?.is_some_and(|o| {
                o.owner_references()
                    .iter()
                    .any(|r| Some(&r.uid) == uid.as_ref())
            });
            if ours {
                match api.delete(name, &DeleteParams::default()).await {
                    Ok(_) => {}
                    Err(kube::Error::Api(s)) if s.code == 404 => {}
                    Err(e) => return Err(fail(e)),
                }
            }
        }
    }
    Ok(())
}
