//! `spec.postgres.cloudNativePG`: a CloudNativePG cluster named instead of a Secret.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A CloudNativePG `Cluster` (postgresql.cnpg.io/v1) in the pipeline's namespace. The
/// workers connect to its primary through the `<cluster>-rw` Service (port 5432) as the
/// application user, with the `username`, `password` and `dbname` of the `<cluster>-app`
/// Secret CloudNativePG generates; with sslmode verify-full they check the server's
/// certificate against `ca.crt` of the `<cluster>-ca` Secret. No hand-written Secret.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CloudNativePgRef {
    /// Name of the CloudNativePG Cluster (metadata.name), in the pipeline's namespace.
    #[schemars(
        length(min = 1, max = 50),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    )]
    pub cluster: String,
}

impl CloudNativePgRef {
    /// The read-write Service CloudNativePG makes for the primary.
    pub fn rw_service(&self) -> String {
        format!("{}-rw", self.cluster)
    }

    /// The application user's Secret CloudNativePG generates.
    pub fn app_secret(&self) -> String {
        format!("{}-app", self.cluster)
    }

    /// The Secret with the CA that signs the server certificates (CloudNativePG's own CA,
    /// unless the Cluster sets spec.certificates.serverCASecret).
    pub fn ca_secret(&self) -> String {
        format!("{}-ca", self.cluster)
    }
}
