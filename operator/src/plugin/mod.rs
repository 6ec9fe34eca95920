//! `kubectl sluice`: day-two answers about a pipeline from the user's kubeconfig, never
//! with database credentials on the user's machine (docs/kubectl-plugin.md).
//!
//! - [`args`]: the command line.
//! - [`view`]: what `status` shows, built from Kubernetes objects (pure).
//! - [`ledger`]: the exact totals `sluice-worker report -o json` prints in a worker pod.
//! - [`render`]: the one-screen text of `status` (pure).
//! - [`kube_io`]: reading the objects, each worker's metrics through the API server's
//!   pod proxy, and running `sluice-worker` in a worker pod through the exec API.

pub mod args;
pub mod kube_io;
pub mod ledger;
pub mod render;
pub mod view;

/// Why the plugin could not answer.
#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    #[error("IngestPipeline {namespace}/{name} not found")]
    NotFound { namespace: String, name: String },
    #[error("{0}")]
    Kube(#[from] kube::Error),
    #[error("{0}")]
    Exec(String),
    #[error("cannot print the result: {0}")]
    Output(String),
}
