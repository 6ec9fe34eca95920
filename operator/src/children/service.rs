//! The workers' headless metrics Service and the pods' ServiceAccount.

use k8s_openapi::api::core::v1::{Service, ServiceAccount, ServicePort, ServiceSpec};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::ResourceExt;

use super::*;
use crate::crd::IngestPipeline;

pub fn service_account(ipl: &IngestPipeline) -> ServiceAccount {
    ServiceAccount {
        metadata: meta(ipl, ipl.service_account_name(), "pods"),
        automount_service_account_token: Some(false),
        ..Default::default()
    }
}

pub fn service(ipl: &IngestPipeline) -> Service {
    let name = ipl.name_any();
    Service {
        metadata: meta(ipl, ipl.service_name(), "metrics"),
        spec: Some(ServiceSpec {
            cluster_ip: Some("None".into()),
            // Not-ready workers (e.g. PostgreSQL unreachable) still report their backlog.
            publish_not_ready_addresses: Some(true),
            selector: Some(selector_labels(&name, "worker")),
            ports: Some(vec![ServicePort {
                name: Some("metrics".into()),
                port: WORKER_METRICS_PORT,
                target_port: Some(IntOrString::String("metrics".into())),
                protocol: Some("TCP".into()),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        ..Default::default()
    }
}
