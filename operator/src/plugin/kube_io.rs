//! The plugin's Kubernetes I/O, all with the user's kubeconfig: the pipeline, its worker
//! pods and Events; each worker's `/metrics` through the API server's pod proxy
//! (`pods/proxy`); and `sluice-worker` run in a worker pod through the exec API
//! (`pods/exec`), where the database credentials and network path already are.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use futures::future::join_all;
use k8s_openapi::api::core::v1::{Event, Pod};
use kube::api::{AttachParams, ListParams};
use kube::{Api, Client};
use tokio::io::AsyncReadExt;

use super::PluginError;
use super::args::worker_command;
use super::ledger::Totals;
use super::view::{Sample, pod_ready};
use crate::IngestPipeline;
use crate::children::{WORKER_METRICS_PORT, selector_string};
use crate::metrics_scrape;

/// Budget of one metrics read through the pod proxy.
const PROXY_TIMEOUT: Duration = Duration::from_secs(3);
/// Time between the two metrics samples a rate is computed from.
pub const RATE_WINDOW: Duration = Duration::from_secs(1);

/// The pipeline, or [`PluginError::NotFound`].
pub async fn pipeline(
    client: &Client,
    namespace: &str,
    name: &str,
) -> Result<IngestPipeline, PluginError> {
    Api::<IngestPipeline>::namespaced(client.clone(), namespace)
        .get_opt(name)
        .await?
        .ok_or_else(|| PluginError::NotFound {
            namespace: namespace.into(),
            name: name.into(),
        })
}

/// The pipeline's worker pods.
pub async fn worker_pods(
    client: &Client,
    namespace: &str,
    name: &str,
) -> Result<Vec<Pod>, PluginError> {
    let lp = ListParams::default().labels(&selector_string(name, "worker"));
    Ok(Api::<Pod>::namespaced(client.clone(), namespace)
        .list(&lp)
        .await?
        .items)
}

/// The Events about the pipeline.
pub async fn events(
    client: &Client,
    namespace: &str,
    name: &str,
) -> Result<Vec<Event>, PluginError> {
    let lp = ListParams::default().fields(&format!(
        "involvedObject.kind=IngestPipeline,involvedObject.name={name}"
    ));
    Ok(Api::<Event>::namespaced(client.clone(), namespace)
        .list(&lp)
        .await?
        .items)
}

/// Samples every running pod's metrics twice, [`RATE_WINDOW`] apart.
pub async fn sample_workers(
    client: &Client,
    namespace: &str,
    pods: &[Pod],
) -> BTreeMap<String, Sample> {
    let mut out = BTreeMap::new();
    let mut running = Vec::new();
    for pod in pods {
        let name = pod.metadata.name.clone().unwrap_or_default();
        let phase = pod
            .status
            .as_ref()
            .and_then(|s| s.phase.clone())
            .unwrap_or_else(|| "Unknown".into());
        if phase == "Running" {
            running.push(name);
        } else {
            out.insert(name, Sample::Unavailable(format!("pod is {phase}")));
        }
    }
    let read_all = || join_all(running.iter().map(|n| metrics(client, namespace, n)));
    let started = Instant::now();
    let first = read_all().await;
    tokio::time::sleep(RATE_WINDOW).await;
    let second = read_all().await;
    let seconds = started.elapsed().as_secs_f64();
    for ((name, a), b) in running.iter().zip(first).zip(second) {
        let sample = match (a, b) {
            (Ok(a), Ok(b)) => Sample::Read {
                first: metrics_scrape::parse(&a),
                second: metrics_scrape::parse(&b),
                seconds,
            },
            (Err(e), _) | (_, Err(e)) => Sample::Unavailable(e),
        };
        out.insert(name.clone(), sample);
    }
    out
}

/// One pod's `/metrics` through the API server's pod proxy.
async fn metrics(client: &Client, namespace: &str, pod: &str) -> Result<String, String> {
    let request = kube::core::Request::new(format!("/api/v1/namespaces/{namespace}/pods"))
        .get_subresource("proxy/metrics", &format!("{pod}:{WORKER_METRICS_PORT}"))
        .map_err(|e| e.to_string())?;
    match tokio::time::timeout(PROXY_TIMEOUT, client.request_text(request)).await {
        Ok(Ok(text)) => Ok(text),
        Ok(Err(e)) => Err(format!("metrics through the pod proxy: {e}")),
        Err(_) => Err(format!(
            "metrics through the pod proxy: no answer within {PROXY_TIMEOUT:?}"
        )),
    }
}

/// The first ready worker pod (by name), or why there is none.
pub fn exec_target(pods: &[Pod]) -> Result<String, String> {
    let mut ready: Vec<&str> = pods
        .iter()
        .filter(|p| pod_ready(p))
        .filter_map(|p| p.metadata.name.as_deref())
        .collect();
    ready.sort_unstable();
    ready.first().map(|n| n.to_string()).ok_or_else(|| {
        let states: Vec<String> = pods
            .iter()
            .map(|p| {
                format!(
                    "{} {}",
                    p.metadata.name.as_deref().unwrap_or("?"),
                    p.status
                        .as_ref()
                        .and_then(|s| s.phase.as_deref())
                        .unwrap_or("Unknown")
                )
            })
            .collect();
        if states.is_empty() {
            "no worker pod exists to run sluice-worker in (suspended, or not created yet)".into()
        } else {
            format!(
                "no worker pod is ready to run sluice-worker in ({})",
                states.join(", ")
            )
        }
    })
}

/// What a command run in a pod printed.
#[derive(Debug)]
pub struct ExecOutput {
    pub stdout: String,
    pub stderr: String,
    /// False when the command exited non-zero (the API's Status says Failure).
    pub success: bool,
    /// The Status message on failure.
    pub message: Option<String>,
}

/// Runs `command` in the worker container of `pod` through the exec API.
pub async fn exec(
    client: &Client,
    namespace: &str,
    pod: &str,
    command: Vec<String>,
) -> Result<ExecOutput, PluginError> {
    let api = Api::<Pod>::namespaced(client.clone(), namespace);
    let params = AttachParams::default()
        .container("worker")
        .stdout(true)
        .stderr(true);
    let mut attached = api.exec(pod, command, &params).await?;
    let status = attached.take_status();
    let stdout = attached.stdout();
    let stderr = attached.stderr();
    let read = |r: Option<tokio::io::ReadHalf<tokio::io::SimplexStream>>| async move {
        let mut text = String::new();
        if let Some(mut r) = r {
            let mut bytes = Vec::new();
            r.read_to_end(&mut bytes).await.ok();
            text = String::from_utf8_lossy(&bytes).into_owned();
        }
        text
    };
    let (stdout, stderr) = tokio::join!(read(stdout), read(stderr));
    let status = match status {
        Some(s) => s.await,
        None => None,
    };
    attached
        .join()
        .await
        .map_err(|e| PluginError::Exec(format!("exec in pod {pod}: {e}")))?;
    let success = status
        .as_ref()
        .is_none_or(|s| s.status.as_deref() == Some("Success"));
    Ok(ExecOutput {
        stdout,
        stderr,
        success,
        message: status.and_then(|s| s.message),
    })
}

/// The exact totals, read by `sluice-worker report -o json` in a ready worker pod; why
/// they are unavailable otherwise (no ready pod, e.g. without a kubelet; exec refused).
pub async fn totals(client: &Client, namespace: &str, pods: &[Pod]) -> Totals {
    let pod = match exec_target(pods) {
        Ok(p) => p,
        Err(why) => return Totals::unavailable(why),
    };
    let cmd = worker_command("report", vec!["--output=json".into()]);
    match exec(client, namespace, &pod, cmd).await {
        Ok(out) if out.success => Totals::from_report(&pod, &out.stdout),
        Ok(out) => Totals::unavailable(format!(
            "sluice-worker report failed in pod {pod}: {}",
            first_line(&out.stderr).unwrap_or(out.message.as_deref().unwrap_or("no message"))
        )),
        Err(e) => Totals::unavailable(format!("cannot exec into pod {pod}: {e}")),
    }
}

fn first_line(s: &str) -> Option<&str> {
    s.lines().find(|l| !l.trim().is_empty())
}

#[cfg(test)]
mod tests {
    use super::super::view::tests::pod;
    use super::*;

    #[test]
    fn exec_goes_to_the_first_ready_pod_or_says_why_not() {
        let pods = [
            pod("w-2", true, 0),
            pod("w-0", false, 0),
            pod("w-1", true, 0),
        ];
        assert_eq!(exec_target(&pods), Ok("w-1".into()));
        let why = exec_target(&pods[1..2]).expect_err("none ready");
        assert!(why.contains("w-0 Running"), "{why}");
        assert!(
            exec_target(&[])
                .expect_err("no pods")
                .contains("no worker pod exists")
        );
    }
}
