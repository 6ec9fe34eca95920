//! The pipeline's PodMonitor (`spec.monitoring.podMonitor`). k8s-openapi has no type for
//! the Prometheus Operator's resources: it is built as JSON and applied as a
//! `DynamicObject`.

use kube::ResourceExt;
use serde_json::{Value, json};

use super::{APP_NAME, MANAGED_BY, labels, owner_ref};
use crate::crd::IngestPipeline;

/// The PodMonitor's name.
pub fn pod_monitor_name(p: &str) -> String {
    format!("{p}-sluice")
}

/// The PodMonitor scraping the pipeline's worker and generator pods (port `metrics`),
/// relabelled like the chart's PodMonitor (job `sluice-worker` / `sluice-generator`,
/// `pipeline` = the pipeline's name) so the alert rules and dashboards apply. None when
/// `spec.monitoring.podMonitor.enabled` is false.
pub fn pod_monitor(ipl: &IngestPipeline) -> Option<Value> {
    let spec = &ipl.spec.monitoring.pod_monitor;
    if !spec.enabled {
        return None;
    }
    let name = ipl.name_any();
    let mut all_labels = spec.labels.clone();
    // Ours win: the operator finds its objects by them.
    all_labels.extend(labels(&name, "monitoring"));
    let mut endpoint = json!({
        "port": "metrics",
        "path": "/metrics",
        "relabelings": [
            {
                "sourceLabels": ["__meta_kubernetes_pod_label_app_kubernetes_io_component"],
                "targetLabel": "job",
                "replacement": "sluice-$1",
            },
            {
                "sourceLabels": ["__meta_kubernetes_pod_label_app_kubernetes_io_instance"],
                "targetLabel": "pipeline",
            },
        ],
    });
    if let Some(interval) = &spec.interval {
        endpoint["interval"] = json!(interval);
    }
    Some(json!({
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PodMonitor",
        "metadata": {
            "name": ipl.pod_monitor_name(),
            "namespace": ipl.namespace(),
            "labels": all_labels,
            "ownerReferences": owner_ref(ipl),
        },
        "spec": {
            "selector": {
                "matchLabels": {
                    "app.kubernetes.io/name": APP_NAME,
                    "app.kubernetes.io/instance": name,
                    "app.kubernetes.io/managed-by": MANAGED_BY,
                },
                "matchExpressions": [{
                    "key": "app.kubernetes.io/component",
                    "operator": "In",
                    "values": ["worker", "generator"],
                }],
            },
            "podMetricsEndpoints": [endpoint],
        },
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::sample;

    #[test]
    fn off_by_default() {
        assert_eq!(pod_monitor(&sample()), None);
    }

    #[test]
    fn selects_the_pipelines_pods_with_the_dashboards_labels() {
        let mut ipl = sample();
        let pm = &mut ipl.spec.monitoring.pod_monitor;
        pm.enabled = true;
        pm.interval = Some("15s".into());
        pm.labels = [("release".to_string(), "prometheus".to_string())].into();
        // A user label cannot take over one the operator relies on.
        pm.labels
            .insert("app.kubernetes.io/name".into(), "other".into());
        let v = pod_monitor(&ipl).expect("enabled");
        assert_eq!(v["kind"], "PodMonitor");
        assert_eq!(v["metadata"]["name"], "shop-sluice");
        assert_eq!(v["metadata"]["namespace"], "data");
        assert_eq!(v["metadata"]["labels"]["release"], "prometheus");
        assert_eq!(v["metadata"]["labels"]["app.kubernetes.io/name"], "sluice");
        assert_eq!(v["metadata"]["ownerReferences"][0]["uid"], "1234-uid");
        assert_eq!(v["metadata"]["ownerReferences"][0]["controller"], true);
        let sel = &v["spec"]["selector"];
        assert_eq!(sel["matchLabels"]["app.kubernetes.io/instance"], "shop");
        assert_eq!(
            sel["matchExpressions"][0]["values"],
            json!(["worker", "generator"])
        );
        let ep = &v["spec"]["podMetricsEndpoints"][0];
        assert_eq!(
            (&ep["port"], &ep["interval"]),
            (&json!("metrics"), &json!("15s"))
        );
        assert_eq!(ep["relabelings"][0]["replacement"], "sluice-$1");
        assert_eq!(ep["relabelings"][1]["targetLabel"], "pipeline");
        ipl.spec.monitoring.pod_monitor.interval = None;
        let v = pod_monitor(&ipl).expect("enabled");
        assert!(
            v["spec"]["podMetricsEndpoints"][0]
                .get("interval")
                .is_none()
        );
    }
}
