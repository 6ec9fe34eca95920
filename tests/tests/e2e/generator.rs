//! The generator's own count of what it wrote: the oracle every exactly-once check is
//! made against (never the workers' counts).

use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context as _, Result, bail, ensure};
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt as _;
use serde_json::{Value, json};
use tokio::io::AsyncReadExt as _;
use tokio::process::Child;

use crate::cluster::{CONVERGE_TIMEOUT, Cluster, restart_count};
use crate::steps::StepLog;

/// The generator's metrics port (docs/crd.md: "generator 9102").
const GENERATOR_METRICS_PORT: u16 = 9102;

/// What one generator process wrote, from its last log line ("generator finished: N files,
/// R rows, B bad rows", logged after SIGTERM once the partial file has landed).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GeneratorTotals {
    pub files: u64,
    pub rows: u64,
    pub bad_rows: u64,
    /// Messy but valid rows (the `messy_rows` field of the same line), when logged.
    pub messy_rows: Option<u64>,
}

impl std::ops::AddAssign for GeneratorTotals {
    fn add_assign(&mut self, o: GeneratorTotals) {
        self.files += o.files;
        self.rows += o.rows;
        self.bad_rows += o.bad_rows;
        self.messy_rows = self.messy_rows.zip(o.messy_rows).map(|(a, b)| a + b);
    }
}

/// The last "generator finished" line of a log (text or JSON format).
pub fn parse_generator_summary(log: &str) -> Option<GeneratorTotals> {
    const MARK: &str = "generator finished: ";
    let line = log.lines().rev().find(|l| l.contains(MARK))?;
    let rest = &line[line.find(MARK)? + MARK.len()..];
    let words: Vec<&str> = rest.split_whitespace().collect();
    let num = |i: usize| -> Option<u64> { words.get(i)?.parse().ok() };
    let (w1, w3, w5) = (words.get(1)?, words.get(3)?, words.get(5)?);
    if !w1.starts_with("files") || !w3.starts_with("rows") || !w5.starts_with("bad") {
        return None;
    }
    // The pods log JSON with the fields at the top (`flatten_event`, core's telemetry);
    // the text format has `messy_rows=N`.
    let messy_rows = serde_json::from_str::<Value>(line.trim())
        .ok()
        .and_then(|v| v.get("messy_rows")?.as_u64())
        .or_else(|| {
            rest.split_whitespace()
                .find_map(|w| w.strip_prefix("messy_rows=")?.parse().ok())
        });
    Some(GeneratorTotals {
        files: num(0)?,
        rows: num(2)?,
        bad_rows: num(4)?,
        messy_rows,
    })
}

/// Sum of all samples of `metric` in a Prometheus text exposition.
pub fn metric_sum(text: &str, metric: &str) -> Option<f64> {
    let mut found = false;
    let mut sum = 0.0;
    for line in text.lines() {
        let Some(rest) = line.strip_prefix(metric) else {
            continue;
        };
        if !(rest.starts_with('{') || rest.starts_with(' ')) {
            continue;
        }
        let value: f64 = line.split_whitespace().last()?.parse().ok()?;
        sum += value;
        found = true;
    }
    found.then_some(sum)
}

/// The generator's `/metrics` through the API server's pod proxy.
async fn scrape_generator(cluster: &Cluster, pod: &str) -> Result<String> {
    let req = kube::core::Request::new(format!("/api/v1/namespaces/{}/pods", cluster.ns))
        .get_subresource("proxy/metrics", &format!("{pod}:{GENERATOR_METRICS_PORT}"))
        .context("building the pod proxy request")?;
    cluster
        .client
        .request_text(req)
        .await
        .with_context(|| format!("GET pods/{pod}:{GENERATOR_METRICS_PORT}/proxy/metrics"))
}

/// `kubectl logs -f` of the generator pod, started before the generator is stopped, so
/// that its final summary line is captured even though the pod is deleted right after.
struct LogFollower {
    pod: String,
    uid: String,
    restarts: i32,
    child: Child,
}

impl LogFollower {
    fn start(cluster: &Cluster, pod: &Pod) -> Result<LogFollower> {
        let name = pod.name_any();
        let child = cluster
            .kubectl_cmd(&["-n", &cluster.ns, "logs", "-f", "-c", "generator", &name])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .context("starting kubectl logs -f")?;
        Ok(LogFollower {
            pod: name,
            uid: pod.uid().unwrap_or_default(),
            restarts: restart_count(pod),
            child,
        })
    }

    /// The log once the container has exited (kubectl then ends by itself).
    async fn finish(mut self, timeout: Duration) -> Result<String> {
        let mut stdout = self.child.stdout.take().context("no stdout pipe")?;
        let mut buf = Vec::new();
        let read = tokio::time::timeout(timeout, stdout.read_to_end(&mut buf)).await;
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
        match read {
            Ok(r) => {
                r.context("reading kubectl logs")?;
            }
            Err(_) => bail!(
                "kubectl logs -f {} did not end within {}s",
                self.pod,
                timeout.as_secs()
            ),
        }
        Ok(String::from_utf8_lossy(&buf).into_owned())
    }
}

/// The (name, uid) of the pipeline's one ready generator pod.
pub async fn generator_identity(cluster: &Cluster) -> Result<(String, String)> {
    let pods = cluster
        .wait_pods_ready("generator", 1, CONVERGE_TIMEOUT)
        .await?;
    let pod = pods.first().context("no generator pod")?;
    Ok((pod.name_any(), pod.uid().unwrap_or_default()))
}

/// Stops the generator (spec.generator.enabled=false) and returns what it wrote when the
/// count is exact: the same generator pod ran the whole time without a restart.
pub async fn stop_generator(
    cluster: &Cluster,
    log: &StepLog,
    first_seen: Option<&(String, String)>,
) -> Result<Option<GeneratorTotals>> {
    let pods = cluster
        .wait_pods_ready("generator", 1, CONVERGE_TIMEOUT)
        .await?;
    let pod = pods.first().context("no generator pod")?;
    let follower = LogFollower::start(cluster, pod)?;

    // Cross-check through the pod proxy: a lower bound of what the final summary says.
    let scraped = match scrape_generator(cluster, &follower.pod).await {
        Ok(text) => {
            let events = metric_sum(&text, "sluice_generator_events_total");
            let files = metric_sum(&text, "sluice_generator_files_total");
            log.note(format!(
                "generator /metrics (pod proxy): sluice_generator_events_total={events:?} sluice_generator_files_total={files:?}"
            ));
            ensure!(
                events.is_some() && files.is_some(),
                "the generator's /metrics lacks sluice_generator_events_total or _files_total"
            );
            events
        }
        Err(e) => {
            log.note(format!(
                "WARNING: could not scrape the generator through the API server's pod proxy ({e:#}); the exact count below still comes from its log"
            ));
            None
        }
    };

    cluster
        .patch_pipeline(log, json!({ "generator": { "enabled": false } }))
        .await?;
    cluster
        .wait_pods_gone("generator", CONVERGE_TIMEOUT)
        .await?;
    let (pod_name, uid, restarts_at_start) = (
        follower.pod.clone(),
        follower.uid.clone(),
        follower.restarts,
    );
    let text = follower.finish(Duration::from_secs(60)).await?;
    let totals = parse_generator_summary(&text);
    log.note(format!("generator {pod_name} final summary: {totals:?}"));

    let same_pod =
        first_seen.is_none_or(|(name, first_uid)| *name == pod_name && *first_uid == uid);
    if !same_pod || restarts_at_start > 0 {
        log.note(format!(
            "NOT comparing with the generator's count: the generator pod was replaced or restarted during the run (first {first_seen:?}, last {pod_name} {uid}, restarts {restarts_at_start}); its earlier processes' counters are lost. The ledger checks still apply."
        ));
        return Ok(None);
    }
    let totals = totals.with_context(|| {
        format!(
            "no 'generator finished' line in the log of {pod_name} (last lines: {:?})",
            text.lines().rev().take(3).collect::<Vec<_>>()
        )
    })?;
    if let Some(events) = scraped {
        ensure!(
            totals.rows as f64 >= events,
            "the generator's final count {} rows is below its earlier /metrics value {events}",
            totals.rows
        );
    }
    Ok(Some(totals))
}

#[test]
fn summary_and_metrics_parsers() -> Result<()> {
    let json_line = r#"{"timestamp":"2026-01-01T00:00:00Z","level":"INFO","message":"generator finished: 12 files, 60000 rows, 601 bad rows","files":12,"rows":60000,"bad_rows":601,"messy_rows":2990,"target":"sluice_generator"}"#;
    let log = format!("{{\"message\":\"generator starting\"}}\n{json_line}\n");
    ensure!(
        parse_generator_summary(&log)
            == Some(GeneratorTotals {
                files: 12,
                rows: 60000,
                bad_rows: 601,
                messy_rows: Some(2990),
            })
    );
    ensure!(
        parse_generator_summary(
            "2026 INFO generator finished: 1 files, 5 rows, 0 bad rows files=1 messy_rows=2"
        ) == Some(GeneratorTotals {
            files: 1,
            rows: 5,
            bad_rows: 0,
            messy_rows: Some(2),
        })
    );
    ensure!(
        parse_generator_summary("generator finished: 1 files, 5 rows, 0 bad rows")
            .is_some_and(|t| t.messy_rows.is_none())
    );
    ensure!(parse_generator_summary("generator starting").is_none());
    let mut sum = GeneratorTotals {
        files: 1,
        rows: 2,
        bad_rows: 0,
        messy_rows: Some(1),
    };
    sum += GeneratorTotals {
        messy_rows: None,
        ..sum
    };
    ensure!(sum.rows == 4 && sum.messy_rows.is_none());

    let metrics = "# HELP sluice_generator_events_total x\n\
        sluice_generator_events_total{event_type=\"view\"} 10\n\
        sluice_generator_events_total{event_type=\"purchase\"} 2.5\n\
        sluice_generator_events_total_other 100\n\
        sluice_generator_files_total 3\n";
    ensure!(metric_sum(metrics, "sluice_generator_events_total") == Some(12.5));
    ensure!(metric_sum(metrics, "sluice_generator_files_total") == Some(3.0));
    ensure!(metric_sum(metrics, "sluice_generator_bytes_total").is_none());
    Ok(())
}
