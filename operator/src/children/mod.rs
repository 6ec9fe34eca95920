//! Pure builders: an `IngestPipeline` → the objects the operator applies.
//!
//! | child | name | notes |
//! |---|---|---|
//! | ConfigMap | `<name>-config` | `pipeline.json`, the pods' `--config` |
//! | PersistentVolumeClaim | `<name>-landing` | unless `landingZone.existingClaim` |
//! | Deployment | `<name>-generator` | 0 replicas when disabled or suspended |
//! | StatefulSet | `<name>-worker` | pods `<name>-worker-<i>`; claims `checkpoint-<name>-worker-<i>` |
//! | Service (headless) | `<name>-worker` | port `metrics` (9100) |
//! | ServiceAccount | `<name>-sluice` | no API token mounted |
//! | PodDisruptionBudget | `<name>-worker` | unless `worker.disruptionBudget.enabled: false` |
//! | NetworkPolicy | `<name>-worker`, `<name>-generator` | when `networkPolicy` is on |
//! | PodMonitor | `<name>-sluice` | when `monitoring.podMonitor.enabled` and its CRD exists |
//!
//! One file per idea: [`names`] (names, labels, metadata), [`config`] (the ConfigMap),
//! [`storage`] (landing and checkpoint volumes), [`service`] (metrics Service and
//! ServiceAccount), [`pod`] (what every pod shares), [`template`] (the user's pod
//! settings), [`generator`], [`worker`] and [`disruption`] (the workers' budget).

mod cnpg;
mod config;
mod disruption;
mod generator;
mod monitoring;
mod names;
mod network;
mod pod;
pub mod pod_security;
mod service;
mod storage;
mod template;
mod worker;

pub use cnpg::*;
pub use config::*;
pub use disruption::*;
pub use generator::*;
pub use monitoring::*;
pub use names::*;
pub use network::*;
pub use pod::*;
pub use service::*;
pub use storage::*;
pub use template::*;
pub use worker::*;

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolumeClaim, Service, ServiceAccount};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;

use crate::crd::IngestPipeline;

/// The inputs besides the resource itself.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct BuildInputs {
    /// resourceVersion of the credentials Secret, None when it does not exist.
    pub secret_version: Option<String>,
    /// Which keys the Secret holds (decides the file the worker reads its password from).
    pub secret_layout: SecretLayout,
    /// The operator's NetworkPolicy default and namespace.
    pub network: NetworkInputs,
    /// Whether the Secret holds `ca.crt` (an unset sslmode then means verify-full).
    pub secret_has_ca: bool,
}

impl BuildInputs {
    /// The sslmode the workers use (see [`crate::tls::effective_sslmode`]).
    pub fn sslmode(&self, ipl: &IngestPipeline) -> sluice_core::config::SslMode {
        crate::tls::effective_sslmode(ipl.spec.postgres.sslmode, self.secret_has_ca)
    }
}

/// The two layouts of the credentials Secret.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SecretLayout {
    /// Key `uri`: the whole connection URL.
    #[default]
    Uri,
    /// Keys `host`, `port`, `dbname`, `user`, `password` (CloudNativePG's app secrets).
    Keys,
}

/// Everything the operator applies for one pipeline.
#[derive(Clone, Debug)]
pub struct Children {
    pub config_map: ConfigMap,
    pub landing_claim: Option<PersistentVolumeClaim>,
    pub service_account: ServiceAccount,
    pub service: Service,
    pub generator: Deployment,
    pub worker: StatefulSet,
    /// None when spec.worker.disruptionBudget.enabled is false.
    pub disruption_budget: Option<PodDisruptionBudget>,
    /// Empty when NetworkPolicies are off.
    pub network_policies: Vec<NetworkPolicy>,
    pub config_hash: String,
}

/// Builds every child. Pure: no API calls.
pub fn build(ipl: &IngestPipeline, inputs: &BuildInputs) -> Children {
    let cfg = pipeline_config(ipl, inputs.sslmode(ipl));
    let json = config_json(&cfg);
    let config_hash = sha256_hex(json.as_bytes());
    Children {
        config_map: config_map(ipl, json),
        landing_claim: landing_claim(ipl),
        service_account: service_account(ipl),
        service: service(ipl),
        generator: generator(ipl, &config_hash),
        worker: worker(ipl, &config_hash, inputs),
        disruption_budget: disruption_budget(ipl),
        network_policies: network_policies(ipl, &inputs.network),
        config_hash,
    }
}
