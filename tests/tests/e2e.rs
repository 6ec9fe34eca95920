//! The end-to-end suite: the whole system in a Kubernetes cluster that runs pods (kind via
//! `scripts/e2e-kind`, or a local single-node cluster). See docs/e2e.md.
//!
//! One ordered scenario (`pipeline_end_to_end`) in a fresh namespace: the example
//! PostgreSQL and its Secret, the example IngestPipeline with the images under test; rows
//! arrive and the status is Ready with figures; a worker pod is killed mid-run; workers
//! scale 2 → 3 → 1 while ingesting; the generator is stopped, the backlog drains and
//! exactly-once is checked in the database against the generator's own count; suspend and
//! resume (pods go to zero and come back, files landed meanwhile are loaded); a second
//! exactly-once check; the pipeline is deleted and its children are garbage-collected.
//!
//! Environment (the contract of `scripts/e2e-kind`):
//! * `SLUICE_E2E_KUBECONFIG` — required; without it every test prints a loud SKIPPED line
//!   and passes (that is what CI without a cluster does);
//! * `SLUICE_E2E_OPERATOR_IMAGE`, `SLUICE_E2E_WORKER_IMAGE`, `SLUICE_E2E_GENERATOR_IMAGE`;
//! * `SLUICE_E2E_CHART_INSTALLED=<namespace>/<release>` when the chart is installed already
//!   (otherwise the suite runs `scripts/helm upgrade --install` from `charts/sluice`);
//! * `SLUICE_E2E_POSTGRES_IMAGE` — image of the example PostgreSQL (default: the example's);
//! * `SLUICE_E2E_KEEP_NAMESPACE=1` — keep the test namespace even when the scenario passes.
//!
//! Run with `--test-threads 1 --nocapture`: every step is logged with its time, and the
//! step durations are printed at the end.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail, ensure};
use chrono::{DateTime, Utc};
use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{
    ConfigMap, Namespace, PersistentVolumeClaim, Pod, Secret, Service, ServiceAccount,
};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, Resource, ResourceExt as _};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use sluice_operator::IngestPipeline;
use sluice_testkit::kube_env::client_from_kubeconfig;
use tokio::io::AsyncReadExt as _;
use tokio::process::{Child, Command};

const SKIP_MESSAGE: &str = "*** SKIPPED: SLUICE_E2E_KUBECONFIG not set (needs a cluster that runs pods: scripts/e2e-kind, or a local cluster)";

/// The example pipeline's name (`deploy/examples/ingestpipeline.yaml`).
const PIPELINE: &str = "shop";
/// The example PostgreSQL StatefulSet (`deploy/examples/postgres.yaml`); its pod.
const POSTGRES_STS: &str = "sluice-postgres";
const POSTGRES_POD: &str = "sluice-postgres-0";
/// The generator's metrics port (docs/crd.md: "generator 9102").
const GENERATOR_METRICS_PORT: u16 = 9102;
/// Images pulled on first use (PostgreSQL) and volumes provisioned: be generous.
const START_TIMEOUT: Duration = Duration::from_secs(300);
/// Pods of the pipeline reacting to a spec change.
const CONVERGE_TIMEOUT: Duration = Duration::from_secs(180);
/// The backlog draining after the generator stopped.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(300);
/// Garbage collection of the children after the pipeline is deleted.
const GC_TIMEOUT: Duration = Duration::from_secs(120);
const POLL: Duration = Duration::from_secs(2);

// ---------------------------------------------------------------------------------------
// Settings from the environment.
// ---------------------------------------------------------------------------------------

#[derive(Debug, Clone)]
struct Settings {
    kubeconfig: PathBuf,
    operator_image: Option<String>,
    worker_image: Option<String>,
    generator_image: Option<String>,
    postgres_image: Option<String>,
    /// (namespace, release) of an installed chart.
    chart_installed: Option<(String, String)>,
    keep_namespace: bool,
}

fn env_nonempty(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

impl Settings {
    /// `None` (after printing the SKIPPED line) when no cluster is configured.
    fn from_env() -> Result<Option<Settings>> {
        let Some(kubeconfig) = env_nonempty("SLUICE_E2E_KUBECONFIG") else {
            eprintln!("{SKIP_MESSAGE}");
            return Ok(None);
        };
        let kubeconfig = PathBuf::from(kubeconfig);
        ensure!(
            kubeconfig.is_file(),
            "SLUICE_E2E_KUBECONFIG={} is not a file",
            kubeconfig.display()
        );
        let chart_installed = env_nonempty("SLUICE_E2E_CHART_INSTALLED")
            .map(|v| parse_chart_installed(&v))
            .transpose()?;
        Ok(Some(Settings {
            kubeconfig,
            operator_image: env_nonempty("SLUICE_E2E_OPERATOR_IMAGE"),
            worker_image: env_nonempty("SLUICE_E2E_WORKER_IMAGE"),
            generator_image: env_nonempty("SLUICE_E2E_GENERATOR_IMAGE"),
            postgres_image: env_nonempty("SLUICE_E2E_POSTGRES_IMAGE"),
            chart_installed,
            keep_namespace: env_nonempty("SLUICE_E2E_KEEP_NAMESPACE").is_some(),
        }))
    }
}

/// `<namespace>/<release>`.
fn parse_chart_installed(v: &str) -> Result<(String, String)> {
    match v.trim().split_once('/') {
        Some((ns, rel)) if !ns.is_empty() && !rel.is_empty() && !rel.contains('/') => {
            Ok((ns.to_string(), rel.to_string()))
        }
        _ => bail!("SLUICE_E2E_CHART_INSTALLED={v:?}: expected <namespace>/<release>"),
    }
}

/// `registry:5000/org/name:tag` → (`registry:5000/org/name`, `tag`). The chart takes a
/// repository and a tag, so a reference without a tag (or with a digest) is refused.
fn split_image(image: &str) -> Result<(String, String)> {
    ensure!(
        !image.contains('@'),
        "image {image:?}: digests are not supported here, give repository:tag"
    );
    let last_slash = image.rfind('/').map_or(0, |i| i + 1);
    match image[last_slash..].rfind(':') {
        Some(i) => {
            let at = last_slash + i;
            let (repo, tag) = (&image[..at], &image[at + 1..]);
            ensure!(
                !repo.is_empty() && !tag.is_empty(),
                "image {image:?}: empty repository or tag"
            );
            Ok((repo.to_string(), tag.to_string()))
        }
        None => bail!("image {image:?} has no tag: give repository:tag"),
    }
}

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn example_path(file: &str) -> PathBuf {
    repo_root().join("deploy/examples").join(file)
}

// ---------------------------------------------------------------------------------------
// Step log with timestamps and durations.
// ---------------------------------------------------------------------------------------

struct StepLog {
    start: Instant,
    current: Option<(String, Instant)>,
    done: Vec<(String, Duration)>,
}

impl StepLog {
    fn new() -> StepLog {
        StepLog {
            start: Instant::now(),
            current: None,
            done: Vec::new(),
        }
    }

    fn stamp(&self) -> String {
        format!(
            "{} +{:7.1}s",
            Utc::now().format("%H:%M:%S"),
            self.start.elapsed().as_secs_f64()
        )
    }

    /// Ends the step in progress (if any) and starts the next.
    fn step(&mut self, name: &str) {
        self.end_step();
        eprintln!("[e2e {}] ==> {name}", self.stamp());
        self.current = Some((name.to_string(), Instant::now()));
    }

    fn end_step(&mut self) {
        if let Some((name, started)) = self.current.take() {
            let took = started.elapsed();
            eprintln!(
                "[e2e {}]     done in {:.1}s: {name}",
                self.stamp(),
                took.as_secs_f64()
            );
            self.done.push((name, took));
        }
    }

    fn note(&self, msg: impl AsRef<str>) {
        eprintln!("[e2e {}]     {}", self.stamp(), msg.as_ref());
    }

    fn summary(&mut self) {
        self.end_step();
        eprintln!("[e2e] step durations:");
        for (name, took) in &self.done {
            eprintln!("[e2e]   {:8.1}s  {name}", took.as_secs_f64());
        }
        eprintln!("[e2e]   {:8.1}s  total", self.start.elapsed().as_secs_f64());
    }
}

/// Polls `probe` every [`POLL`] until it returns `Ok`; an `Err` means "not yet" and its
/// message is reported if `timeout` passes first.
async fn wait_until<T>(
    what: &str,
    timeout: Duration,
    mut probe: impl AsyncFnMut() -> Result<T>,
) -> Result<T> {
    let deadline = Instant::now() + timeout;
    loop {
        match probe().await {
            Ok(v) => return Ok(v),
            Err(e) if Instant::now() >= deadline => {
                bail!(
                    "{what}: not within {}s; last state: {e:#}",
                    timeout.as_secs()
                )
            }
            Err(_) => tokio::time::sleep(POLL).await,
        }
    }
}

// ---------------------------------------------------------------------------------------
// The cluster: a kube client, kubectl, and psql in the example PostgreSQL's pod.
// ---------------------------------------------------------------------------------------

/// Credentials of `deploy/examples/postgres-credentials.yaml`.
#[derive(Debug, Clone)]
struct PgCredentials {
    user: String,
    password: String,
    dbname: String,
}

struct Cluster {
    settings: Settings,
    client: Client,
    ns: String,
    pg: Option<PgCredentials>,
}

impl Cluster {
    fn api<K>(&self) -> Api<K>
    where
        K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>,
    {
        Api::namespaced(self.client.clone(), &self.ns)
    }

    fn kubectl_cmd(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(kubectl_binary());
        cmd.arg("--kubeconfig")
            .arg(&self.settings.kubeconfig)
            .args(args)
            .stdin(Stdio::null())
            .kill_on_drop(true);
        cmd
    }

    /// Runs kubectl and returns its stdout; fails with its stderr.
    async fn kubectl(&self, args: &[&str]) -> Result<String> {
        let out = tokio::time::timeout(Duration::from_secs(120), self.kubectl_cmd(args).output())
            .await
            .with_context(|| format!("kubectl {} did not finish within 120 s", args.join(" ")))?
            .with_context(|| format!("running {}", kubectl_binary()))?;
        ensure!(
            out.status.success(),
            "kubectl {} failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// One SQL statement through psql in the PostgreSQL pod; unaligned, `|`-separated.
    async fn psql(&self, sql: &str) -> Result<String> {
        let pg = self
            .pg
            .as_ref()
            .context("the PostgreSQL credentials are not loaded yet")?;
        // A conninfo string rather than PGPASSWORD: the image may have no `env` binary.
        let conninfo = format!(
            "dbname={} user={} password={}",
            conninfo_value(&pg.dbname),
            conninfo_value(&pg.user),
            conninfo_value(&pg.password)
        );
        self.kubectl(&[
            "-n",
            &self.ns,
            "exec",
            POSTGRES_POD,
            "-c",
            "postgres",
            "--",
            "psql",
            "-X",
            "-v",
            "ON_ERROR_STOP=1",
            "-At",
            "-F",
            "|",
            "-d",
            &conninfo,
            "-c",
            sql,
        ])
        .await
        .with_context(|| format!("psql: {sql}"))
    }

    /// A query that returns one row of integers.
    async fn query_ints(&self, sql: &str) -> Result<Vec<i64>> {
        let out = self.psql(sql).await?;
        parse_int_row(&out).with_context(|| format!("output of {sql}: {out:?}"))
    }

    async fn pipeline(&self) -> Result<IngestPipeline> {
        self.api::<IngestPipeline>()
            .get(PIPELINE)
            .await
            .context("reading the IngestPipeline")
    }

    async fn patch_pipeline(&self, log: &StepLog, spec: Value) -> Result<()> {
        log.note(format!("patch spec {spec}"));
        self.api::<IngestPipeline>()
            .patch(
                PIPELINE,
                &PatchParams::default(),
                &Patch::Merge(json!({ "spec": spec })),
            )
            .await
            .context("patching the IngestPipeline")?;
        Ok(())
    }

    /// Pods of the pipeline with this component label (terminating ones included).
    async fn pods(&self, component: &str) -> Result<Vec<Pod>> {
        let lp = ListParams::default().labels(&format!(
            "app.kubernetes.io/instance={PIPELINE},app.kubernetes.io/component={component}"
        ));
        Ok(self
            .api::<Pod>()
            .list(&lp)
            .await
            .with_context(|| format!("listing {component} pods"))?
            .items)
    }

    /// Waits until exactly `n` pods of `component` exist and all are ready.
    async fn wait_pods_ready(
        &self,
        component: &str,
        n: usize,
        timeout: Duration,
    ) -> Result<Vec<Pod>> {
        wait_until(
            &format!("{n} ready {component} pods"),
            timeout,
            async || {
                let all = self.pods(component).await?;
                let ready = all.iter().filter(|p| pod_ready(p)).count();
                ensure!(
                    all.len() == n && ready == n,
                    "{} pods ({ready} ready, {} terminating): {}",
                    all.len(),
                    all.iter()
                        .filter(|p| p.metadata.deletion_timestamp.is_some())
                        .count(),
                    all.iter().map(pod_summary).collect::<Vec<_>>().join("; ")
                );
                Ok(all)
            },
        )
        .await
    }

    /// Waits until no pod of `component` exists any more (terminating ones included).
    async fn wait_pods_gone(&self, component: &str, timeout: Duration) -> Result<()> {
        wait_until(&format!("no {component} pods"), timeout, async || {
            let all = self.pods(component).await?;
            ensure!(
                all.is_empty(),
                "{}",
                all.iter().map(pod_summary).collect::<Vec<_>>().join("; ")
            );
            Ok(())
        })
        .await
    }

    /// Waits for Ready=True for the current generation and the worker counts.
    async fn wait_ready(&self, workers: i32, timeout: Duration) -> Result<IngestPipeline> {
        wait_until(
            &format!("IngestPipeline Ready with {workers} workers"),
            timeout,
            async || {
                let ipl = self.pipeline().await?;
                let st = ipl.status.as_ref().context("no status yet")?;
                let ready = condition_status(&ipl, "Ready");
                ensure!(
                    ready.as_deref() == Some("True")
                        && st.observed_generation == ipl.metadata.generation
                        && st.workers_ready == workers
                        && st.workers_desired == workers,
                    "Ready={ready:?} observedGeneration={:?}/{:?} workers={:?} conditions: {}",
                    st.observed_generation,
                    ipl.metadata.generation,
                    st.workers,
                    conditions_summary(&ipl)
                );
                Ok(ipl)
            },
        )
        .await
    }

    /// Files in the ledger (`sluice_files`).
    async fn ledger_files(&self) -> Result<i64> {
        first(self.query_ints("SELECT count(*) FROM sluice_files").await?)
    }
}

fn kubectl_binary() -> String {
    env_nonempty("SLUICE_E2E_KUBECTL").unwrap_or_else(|| {
        if Path::new("/usr/bin/kubectl").exists() {
            "/usr/bin/kubectl".into()
        } else {
            "kubectl".into()
        }
    })
}

/// A libpq conninfo value, single-quoted with `'` and `\\` escaped.
fn conninfo_value(v: &str) -> String {
    format!("'{}'", v.replace('\\', "\\\\").replace('\'', "\\'"))
}

fn first(v: Vec<i64>) -> Result<i64> {
    v.first().copied().context("an empty row")
}

/// `12|34|0` → [12, 34, 0] (the first non-empty line).
fn parse_int_row(out: &str) -> Result<Vec<i64>> {
    let line = out
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .context("no output")?;
    line.split('|')
        .map(|f| {
            f.trim()
                .parse::<i64>()
                .with_context(|| format!("not an integer: {f:?}"))
        })
        .collect()
}

fn pod_ready(p: &Pod) -> bool {
    p.metadata.deletion_timestamp.is_none()
        && p.status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

fn restart_count(p: &Pod) -> i32 {
    p.status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .map_or(0, |cs| cs.iter().map(|c| c.restart_count).sum())
}

fn pod_summary(p: &Pod) -> String {
    let phase = p
        .status
        .as_ref()
        .and_then(|s| s.phase.clone())
        .unwrap_or_else(|| "?".into());
    let waiting: Vec<String> = p
        .status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .map(|cs| {
            cs.iter()
                .filter_map(|c| c.state.as_ref()?.waiting.as_ref()?.reason.clone())
                .collect()
        })
        .unwrap_or_default();
    format!(
        "{} {phase}{}{} restarts={}",
        p.name_any(),
        if pod_ready(p) { " ready" } else { "" },
        if waiting.is_empty() {
            String::new()
        } else {
            format!(" waiting={}", waiting.join(","))
        },
        restart_count(p)
    )
}

fn condition_status(ipl: &IngestPipeline, type_: &str) -> Option<String> {
    ipl.status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| c.status.clone())
}

fn conditions_summary(ipl: &IngestPipeline) -> String {
    ipl.status
        .as_ref()
        .map(|s| {
            s.conditions
                .iter()
                .map(|c| format!("{}={} ({}: {})", c.type_, c.status, c.reason, c.message))
                .collect::<Vec<_>>()
                .join(", ")
        })
        .unwrap_or_default()
}

fn figures(ipl: &IngestPipeline) -> String {
    match ipl.status.as_ref() {
        Some(s) => format!(
            "workers {:?}, rowsLoaded {:?}, rowsRejected {:?}, backlogFiles {:?}, lagSeconds {:?}, figuresTime {:?}",
            s.workers,
            s.rows_loaded,
            s.rows_rejected,
            s.backlog_files,
            s.lag_seconds,
            s.figures_time
        ),
        None => "no status".into(),
    }
}

fn figures_time(ipl: &IngestPipeline) -> Option<DateTime<Utc>> {
    let t = ipl.status.as_ref()?.figures_time.as_deref()?;
    DateTime::parse_from_rfc3339(t)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

// ---------------------------------------------------------------------------------------
// The generator's own count of what it wrote.
// ---------------------------------------------------------------------------------------

/// What one generator process wrote, from its last log line ("generator finished: N files,
/// R rows, B bad rows", logged after SIGTERM once the partial file has landed).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct GeneratorTotals {
    files: u64,
    rows: u64,
    bad_rows: u64,
}

impl std::ops::AddAssign for GeneratorTotals {
    fn add_assign(&mut self, o: GeneratorTotals) {
        self.files += o.files;
        self.rows += o.rows;
        self.bad_rows += o.bad_rows;
    }
}

/// The last "generator finished" line of a log (text or JSON format).
fn parse_generator_summary(log: &str) -> Option<GeneratorTotals> {
    const MARK: &str = "generator finished: ";
    let line = log.lines().rev().find(|l| l.contains(MARK))?;
    let rest = &line[line.find(MARK)? + MARK.len()..];
    let words: Vec<&str> = rest.split_whitespace().collect();
    let num = |i: usize| -> Option<u64> { words.get(i)?.parse().ok() };
    let (w1, w3, w5) = (words.get(1)?, words.get(3)?, words.get(5)?);
    if !w1.starts_with("files") || !w3.starts_with("rows") || !w5.starts_with("bad") {
        return None;
    }
    Some(GeneratorTotals {
        files: num(0)?,
        rows: num(2)?,
        bad_rows: num(4)?,
    })
}

/// Sum of all samples of `metric` in a Prometheus text exposition.
fn metric_sum(text: &str, metric: &str) -> Option<f64> {
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

/// Stops the generator (spec.generator.enabled=false) and returns what it wrote when the
/// count is exact: the same generator pod ran the whole time without a restart.
async fn stop_generator(
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

// ---------------------------------------------------------------------------------------
// Exactly-once in the database.
// ---------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct DbFigures {
    events: i64,
    distinct_event_ids: i64,
    quarantine: i64,
    distinct_quarantine_lines: i64,
    files: i64,
    files_not_loaded: i64,
    ledger_rows_loaded: i64,
    ledger_rows_rejected: i64,
    files_with_wrong_reject_count: i64,
    batch_rows_loaded: i64,
    batch_rows_rejected: i64,
}

const FIGURES_SQL: &str = "SELECT \
    (SELECT count(*) FROM events), \
    (SELECT count(DISTINCT event_id) FROM events), \
    (SELECT count(*) FROM quarantine), \
    (SELECT count(*) FROM (SELECT DISTINCT source_file, line_number FROM quarantine) q), \
    (SELECT count(*) FROM sluice_files), \
    (SELECT count(*) FROM sluice_files WHERE outcome <> 'loaded'), \
    (SELECT coalesce(sum(rows_loaded), 0) FROM sluice_files), \
    (SELECT coalesce(sum(rows_rejected), 0) FROM sluice_files), \
    (SELECT count(*) FROM sluice_files f WHERE f.rows_rejected <> \
        (SELECT count(*) FROM quarantine q WHERE q.source_file = f.file_name)), \
    (SELECT coalesce(sum(rows_loaded), 0) FROM sluice_batches), \
    (SELECT coalesce(sum(rows_rejected), 0) FROM sluice_batches)";

async fn db_figures(cluster: &Cluster) -> Result<DbFigures> {
    let v = cluster.query_ints(FIGURES_SQL).await?;
    ensure!(v.len() == 11, "expected 11 columns, got {v:?}");
    Ok(DbFigures {
        events: v[0],
        distinct_event_ids: v[1],
        quarantine: v[2],
        distinct_quarantine_lines: v[3],
        files: v[4],
        files_not_loaded: v[5],
        ledger_rows_loaded: v[6],
        ledger_rows_rejected: v[7],
        files_with_wrong_reject_count: v[8],
        batch_rows_loaded: v[9],
        batch_rows_rejected: v[10],
    })
}

/// Every problem with the figures; empty means exactly-once holds.
fn exactly_once_problems(f: &DbFigures, generated: Option<GeneratorTotals>) -> Vec<String> {
    let mut p = Vec::new();
    if f.events != f.distinct_event_ids {
        p.push(format!(
            "{} rows in events but {} distinct event ids: {} duplicates",
            f.events,
            f.distinct_event_ids,
            f.events - f.distinct_event_ids
        ));
    }
    if f.quarantine != f.distinct_quarantine_lines {
        p.push(format!(
            "{} quarantine rows but {} distinct (source_file, line_number)",
            f.quarantine, f.distinct_quarantine_lines
        ));
    }
    if f.ledger_rows_loaded != f.events {
        p.push(format!(
            "the ledger says {} rows loaded, events holds {}",
            f.ledger_rows_loaded, f.events
        ));
    }
    if f.ledger_rows_rejected != f.quarantine {
        p.push(format!(
            "the ledger says {} rows rejected, quarantine holds {}",
            f.ledger_rows_rejected, f.quarantine
        ));
    }
    if f.files_with_wrong_reject_count != 0 {
        p.push(format!(
            "{} files whose quarantine rows differ from their ledger rows_rejected",
            f.files_with_wrong_reject_count
        ));
    }
    if f.files_not_loaded != 0 {
        p.push(format!(
            "{} files set aside (outcome failed): the generator writes only valid CSV files",
            f.files_not_loaded
        ));
    }
    if let Some(g) = generated {
        let (files, rows, bad) = (g.files as i64, g.rows as i64, g.bad_rows as i64);
        if f.files != files {
            p.push(format!(
                "the generator wrote {files} files, the ledger holds {}",
                f.files
            ));
        }
        if f.events + f.quarantine != rows {
            p.push(format!(
                "the generator wrote {rows} rows, events + quarantine hold {} + {} = {}",
                f.events,
                f.quarantine,
                f.events + f.quarantine
            ));
        }
        if f.quarantine != bad {
            p.push(format!(
                "the generator wrote {bad} bad rows, quarantine holds {}",
                f.quarantine
            ));
        }
    }
    p
}

/// Waits until the ledger holds every file the generator wrote (when its count is known),
/// or else until the workers report an empty backlog measured after `stopped_at` and the
/// ledger stays unchanged for 20 s.
async fn wait_drained(
    cluster: &Cluster,
    log: &StepLog,
    expected_files: Option<u64>,
    stopped_at: DateTime<Utc>,
) -> Result<i64> {
    if let Some(n) = expected_files {
        let n = n as i64;
        let files = wait_until(
            &format!("{n} files in the ledger"),
            DRAIN_TIMEOUT,
            async || {
                let have = cluster.ledger_files().await?;
                ensure!(have >= n, "{have} of {n} files in the ledger");
                Ok(have)
            },
        )
        .await?;
        log.note(format!("ledger holds {files} files (generator wrote {n})"));
        return Ok(files);
    }
    wait_until(
        "an empty backlog measured after the generator stopped",
        DRAIN_TIMEOUT,
        async || {
            let ipl = cluster.pipeline().await?;
            let fresh = figures_time(&ipl).is_some_and(|t| t > stopped_at);
            let backlog = ipl.status.as_ref().and_then(|s| s.backlog_files);
            ensure!(fresh && backlog == Some(0), "{}", figures(&ipl));
            Ok(())
        },
    )
    .await?;
    let mut last = cluster.ledger_files().await?;
    wait_until("the ledger unchanged for 20 s", DRAIN_TIMEOUT, async || {
        tokio::time::sleep(Duration::from_secs(20)).await;
        let now = cluster.ledger_files().await?;
        let stable = now == last;
        last = now;
        ensure!(stable, "still growing: {now} files");
        Ok(now)
    })
    .await
}

async fn check_exactly_once(
    cluster: &Cluster,
    log: &StepLog,
    generated: Option<GeneratorTotals>,
) -> Result<DbFigures> {
    let f = db_figures(cluster).await?;
    log.note(format!("database: {f:?}"));
    if (f.batch_rows_loaded, f.batch_rows_rejected)
        != (f.ledger_rows_loaded, f.ledger_rows_rejected)
    {
        log.note(format!(
            "note: sluice_batches sums ({}, {}) differ from sluice_files sums ({}, {})",
            f.batch_rows_loaded,
            f.batch_rows_rejected,
            f.ledger_rows_loaded,
            f.ledger_rows_rejected
        ));
    }
    let problems = exactly_once_problems(&f, generated);
    ensure!(
        problems.is_empty(),
        "exactly-once violated:\n  {}",
        problems.join("\n  ")
    );
    ensure!(f.events > 0 && f.files > 0, "nothing was loaded: {f:?}");
    log.note(match generated {
        Some(g) => format!(
            "exactly-once holds: {} files, {} events + {} quarantined = {} rows = what the generator wrote ({g:?}); no duplicate event id",
            f.files,
            f.events,
            f.quarantine,
            f.events + f.quarantine
        ),
        None => format!(
            "exactly-once holds against the ledger: {} files, {} events, {} quarantined; no duplicate event id (generator count unavailable)",
            f.files, f.events, f.quarantine
        ),
    });
    Ok(f)
}

// ---------------------------------------------------------------------------------------
// Setup: chart, namespace, PostgreSQL, pipeline.
// ---------------------------------------------------------------------------------------

async fn ensure_chart(cluster: &Cluster, log: &StepLog) -> Result<()> {
    match &cluster.settings.chart_installed {
        Some((ns, release)) => {
            log.note(format!(
                "chart installed already: release {release} in {ns}"
            ));
        }
        None => {
            let mut args: Vec<String> = [
                "upgrade",
                "--install",
                "sluice",
                "charts/sluice",
                "--namespace",
                "sluice-system",
                "--create-namespace",
                "--wait",
                "--timeout",
                "180s",
                "--set",
                "operator.image.pullPolicy=IfNotPresent",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect();
            if let Some(image) = &cluster.settings.operator_image {
                let (repo, tag) = split_image(image)?;
                args.push("--set".into());
                args.push(format!("operator.image.repository={repo}"));
                args.push("--set".into());
                args.push(format!("operator.image.tag={tag}"));
            } else {
                log.note("SLUICE_E2E_OPERATOR_IMAGE not set: the chart's default operator image");
            }
            log.note(format!("scripts/helm {}", args.join(" ")));
            let root = repo_root();
            let out = tokio::time::timeout(
                Duration::from_secs(300),
                Command::new(root.join("scripts/helm"))
                    .args(&args)
                    .current_dir(&root)
                    .env("KUBECONFIG", &cluster.settings.kubeconfig)
                    .stdin(Stdio::null())
                    .kill_on_drop(true)
                    .output(),
            )
            .await
            .context("helm did not finish within 300 s")?
            .context("running scripts/helm")?;
            ensure!(
                out.status.success(),
                "helm upgrade --install failed ({}): {}{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
    let crds: Api<CustomResourceDefinition> = Api::all(cluster.client.clone());
    wait_until(
        "the IngestPipeline CRD Established",
        CONVERGE_TIMEOUT,
        async || {
            let crd = crds.get("ingestpipelines.sluice.dev").await?;
            let established = crd
                .status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|cs| {
                    cs.iter()
                        .any(|c| c.type_ == "Established" && c.status == "True")
                });
            ensure!(established, "not Established yet");
            Ok(())
        },
    )
    .await
}

fn read_yaml<T: DeserializeOwned>(file: &str) -> Result<T> {
    let path = example_path(file);
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    serde_yaml::from_str(&text).with_context(|| format!("parsing {}", path.display()))
}

/// The documents of `deploy/examples/postgres.yaml`: a Service and a StatefulSet.
fn example_postgres() -> Result<(Service, StatefulSet)> {
    let path = example_path("postgres.yaml");
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let mut service = None;
    let mut sts = None;
    for doc in serde_yaml::Deserializer::from_str(&text) {
        let v: Value = serde::Deserialize::deserialize(doc).context("parsing postgres.yaml")?;
        match v.get("kind").and_then(Value::as_str) {
            Some("Service") => service = Some(serde_json::from_value(v)?),
            Some("StatefulSet") => sts = Some(serde_json::from_value(v)?),
            other => bail!("postgres.yaml: unexpected kind {other:?}"),
        }
    }
    Ok((
        service.context("postgres.yaml has no Service")?,
        sts.context("postgres.yaml has no StatefulSet")?,
    ))
}

/// TLS for the example PostgreSQL, as `scripts/example-certs` makes it: Secret
/// `sluice-postgres-tls` for the server, and ca.crt for the credentials Secret (the
/// pipeline then runs with sslmode verify-full, the default with a CA).
async fn example_certs(ns: &str) -> Result<(Secret, String)> {
    let dir = tempfile::tempdir().context("temporary directory")?;
    let script = repo_root().join("scripts/example-certs");
    let out = Command::new(&script)
        .arg("--out")
        .arg(dir.path())
        .args(["-n", ns])
        .output()
        .await
        .with_context(|| format!("running {}", script.display()))?;
    ensure!(
        out.status.success(),
        "scripts/example-certs: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let read = |f: &str| {
        std::fs::read_to_string(dir.path().join(f)).with_context(|| format!("reading {f}"))
    };
    let ca = read("ca.crt")?;
    let tls: Secret = serde_json::from_value(json!({
        "metadata": { "name": "sluice-postgres-tls" },
        "type": "kubernetes.io/tls",
        "stringData": { "ca.crt": ca, "tls.crt": read("tls.crt")?, "tls.key": read("tls.key")? },
    }))?;
    Ok((tls, ca))
}

async fn deploy_postgres(cluster: &mut Cluster, log: &StepLog) -> Result<()> {
    let mut secret: Secret = read_yaml("postgres-credentials.yaml")?;
    let (tls, ca) = example_certs(&cluster.ns).await?;
    secret
        .string_data
        .get_or_insert_default()
        .insert("ca.crt".into(), ca);
    cluster
        .api::<Secret>()
        .create(&PostParams::default(), &tls)
        .await
        .context("creating the PostgreSQL TLS Secret")?;
    let data = secret
        .string_data
        .clone()
        .context("postgres-credentials.yaml has no stringData")?;
    let get = |k: &str| {
        data.get(k)
            .cloned()
            .with_context(|| format!("postgres-credentials.yaml has no stringData.{k}"))
    };
    cluster.pg = Some(PgCredentials {
        user: get("user")?,
        password: get("password")?,
        dbname: get("dbname")?,
    });
    cluster
        .api::<Secret>()
        .create(&PostParams::default(), &secret)
        .await
        .context("creating the Secret")?;

    let (service, mut sts) = example_postgres()?;
    ensure!(
        sts.name_any() == POSTGRES_STS,
        "postgres.yaml: the StatefulSet is not named {POSTGRES_STS}"
    );
    let container = sts
        .spec
        .template
        .spec
        .as_mut()
        .and_then(|s| s.containers.first_mut())
        .context("postgres.yaml: no container")?;
    if let Some(image) = &cluster.settings.postgres_image {
        container.image = Some(image.clone());
    }
    log.note(format!("PostgreSQL image {:?}", container.image));
    cluster
        .api::<Service>()
        .create(&PostParams::default(), &service)
        .await
        .context("creating the PostgreSQL Service")?;
    cluster
        .api::<StatefulSet>()
        .create(&PostParams::default(), &sts)
        .await
        .context("creating the PostgreSQL StatefulSet")?;
    let pods: Api<Pod> = cluster.api();
    wait_until("PostgreSQL ready", START_TIMEOUT, async || {
        let pod = pods.get(POSTGRES_POD).await?;
        ensure!(pod_ready(&pod), "{}", pod_summary(&pod));
        Ok(())
    })
    .await?;
    wait_until("psql answers", Duration::from_secs(60), async || {
        cluster.query_ints("SELECT 1").await
    })
    .await?;
    Ok(())
}

/// The example pipeline with the images under test.
fn example_pipeline(settings: &Settings) -> Result<IngestPipeline> {
    let mut v: Value = read_yaml("ingestpipeline.yaml")?;
    ensure!(
        v.pointer("/metadata/name").and_then(Value::as_str) == Some(PIPELINE),
        "the example pipeline is named {PIPELINE}"
    );
    let spec = v
        .get_mut("spec")
        .and_then(Value::as_object_mut)
        .context("the example has no spec")?;
    let images = spec
        .entry("images")
        .or_insert_with(|| json!({}))
        .as_object_mut()
        .context("spec.images is not an object")?;
    images.insert("pullPolicy".into(), json!("IfNotPresent"));
    if let Some(w) = &settings.worker_image {
        images.insert("worker".into(), json!(w));
    }
    if let Some(g) = &settings.generator_image {
        images.insert("generator".into(), json!(g));
    }
    serde_json::from_value(v).context("the example as an IngestPipeline")
}

async fn create_namespace(client: &Client) -> Result<String> {
    let ns = format!("sluice-e2e-{}", Utc::now().format("%Y%m%d-%H%M%S"));
    let obj: Namespace = serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Namespace",
        // Pod Security restricted, enforced: every pod of the run must meet it.
        "metadata": { "name": ns, "labels": {
            "sluice.dev/e2e": "true",
            "pod-security.kubernetes.io/enforce": "restricted",
            "pod-security.kubernetes.io/warn": "restricted",
        } },
    }))?;
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &obj)
        .await
        .with_context(|| format!("creating namespace {ns}"))?;
    Ok(ns)
}

// ---------------------------------------------------------------------------------------
// The scenario.
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn pipeline_end_to_end() -> Result<()> {
    let Some(settings) = Settings::from_env()? else {
        return Ok(());
    };
    let mut log = StepLog::new();
    log.step("connect to the cluster");
    let client = client_from_kubeconfig(&settings.kubeconfig).await?;
    let version = client
        .apiserver_version()
        .await
        .context("asking the API server for its version")?;
    log.note(format!(
        "API server {}.{} ({}); images: operator {:?}, worker {:?}, generator {:?}",
        version.major,
        version.minor,
        version.git_version,
        settings.operator_image,
        settings.worker_image,
        settings.generator_image
    ));

    let mut cluster = Cluster {
        settings,
        client,
        ns: String::new(),
        pg: None,
    };
    let result = scenario(&mut cluster, &mut log).await;
    log.summary();
    match result {
        Ok(()) => {
            if cluster.settings.keep_namespace {
                eprintln!(
                    "[e2e] PASSED; namespace {} kept (SLUICE_E2E_KEEP_NAMESPACE)",
                    cluster.ns
                );
            } else if !cluster.ns.is_empty() {
                let _ = Api::<Namespace>::all(cluster.client.clone())
                    .delete(&cluster.ns, &DeleteParams::default())
                    .await;
                eprintln!("[e2e] PASSED; namespace {} deleted", cluster.ns);
            }
            Ok(())
        }
        Err(e) => {
            if !cluster.ns.is_empty() {
                diagnostics(&cluster).await;
                eprintln!(
                    "[e2e] FAILED; namespace {} kept for inspection (kubectl delete namespace {})",
                    cluster.ns, cluster.ns
                );
            }
            Err(e)
        }
    }
}

/// What a person needs to see when the scenario failed.
async fn diagnostics(cluster: &Cluster) {
    let ns = cluster.ns.as_str();
    let operator_ns = cluster
        .settings
        .chart_installed
        .as_ref()
        .map_or("sluice-system", |(ons, _)| ons.as_str());
    let commands: Vec<Vec<&str>> = vec![
        vec!["-n", ns, "get", "ipl,pods,sts,deploy,pvc", "-o", "wide"],
        vec!["-n", ns, "describe", "ipl", PIPELINE],
        vec!["-n", ns, "get", "events", "--sort-by=.lastTimestamp"],
        vec![
            "-n",
            ns,
            "logs",
            "-l",
            "app.kubernetes.io/component=worker",
            "--tail=30",
            "--prefix",
        ],
        vec![
            "-n",
            operator_ns,
            "logs",
            "-l",
            "app.kubernetes.io/name=sluice",
            "--tail=50",
            "--prefix",
        ],
    ];
    for args in commands {
        eprintln!("[e2e] --- kubectl {}", args.join(" "));
        match cluster.kubectl(&args).await {
            Ok(out) => eprintln!("{out}"),
            Err(e) => eprintln!("({e:#})"),
        }
    }
}

async fn scenario(cluster: &mut Cluster, log: &mut StepLog) -> Result<()> {
    log.step("operator chart");
    ensure_chart(cluster, log).await?;

    log.step("namespace");
    cluster.ns = create_namespace(&cluster.client).await?;
    log.note(format!("namespace {}", cluster.ns));

    log.step("example PostgreSQL and its Secret");
    deploy_postgres(cluster, log).await?;
    let cluster = &*cluster;

    log.step("apply the example IngestPipeline");
    let ipl = example_pipeline(&cluster.settings)?;
    log.note(format!(
        "spec.images {}",
        serde_json::to_string(&ipl.spec.images)?
    ));
    cluster
        .api::<IngestPipeline>()
        .create(&PostParams::default(), &ipl)
        .await
        .context("creating the IngestPipeline")?;

    log.step("rows arrive; Ready with figures");
    let ipl = wait_until(
        "Ready=True with rowsLoaded > 0 in the status",
        START_TIMEOUT,
        async || {
            let ipl = cluster.pipeline().await?;
            let st = ipl.status.as_ref().context("no status yet")?;
            ensure!(
                condition_status(&ipl, "Ready").as_deref() == Some("True")
                    && st.rows_loaded.is_some_and(|n| n > 0)
                    && st.workers_ready == 2,
                "{}; conditions: {}",
                figures(&ipl),
                conditions_summary(&ipl)
            );
            Ok(ipl)
        },
    )
    .await?;
    log.note(figures(&ipl));
    let db_rows = first(cluster.query_ints("SELECT count(*) FROM events").await?)?;
    ensure!(db_rows > 0, "status shows rows but events is empty");
    log.note(format!("{db_rows} rows in events"));
    let generator = cluster
        .wait_pods_ready("generator", 1, CONVERGE_TIMEOUT)
        .await?;
    let generator = generator.first().context("no generator pod")?;
    let generator_identity = (generator.name_any(), generator.uid().unwrap_or_default());
    log.note(format!("generator pod {}", pod_summary(generator)));

    log.step("delete a worker pod mid-run");
    let workers = cluster
        .wait_pods_ready("worker", 2, CONVERGE_TIMEOUT)
        .await?;
    let victim = workers.first().context("no worker pod")?;
    let (victim_name, victim_uid) = (victim.name_any(), victim.uid().unwrap_or_default());
    let before = cluster.ledger_files().await?;
    cluster
        .api::<Pod>()
        .delete(
            &victim_name,
            &DeleteParams {
                grace_period_seconds: Some(2),
                ..DeleteParams::default()
            },
        )
        .await
        .with_context(|| format!("deleting {victim_name}"))?;
    log.note(format!(
        "deleted {victim_name} with a 2 s grace period (SIGKILL if its batch takes longer); ledger had {before} files"
    ));
    wait_until(
        &format!("{victim_name} replaced and ready"),
        CONVERGE_TIMEOUT,
        async || {
            let pod = cluster.api::<Pod>().get(&victim_name).await?;
            ensure!(
                pod.uid().unwrap_or_default() != victim_uid && pod_ready(&pod),
                "{}",
                pod_summary(&pod)
            );
            Ok(())
        },
    )
    .await?;
    cluster.wait_ready(2, CONVERGE_TIMEOUT).await?;
    wait_until(
        "more files committed after the restart",
        CONVERGE_TIMEOUT,
        async || {
            let now = cluster.ledger_files().await?;
            ensure!(now > before, "ledger still at {now} files");
            Ok(())
        },
    )
    .await?;

    for (replicas, label) in [(3, "scale workers 2 → 3"), (1, "scale workers 3 → 1")] {
        log.step(label);
        let before = cluster.ledger_files().await?;
        cluster
            .patch_pipeline(log, json!({ "worker": { "replicas": replicas } }))
            .await?;
        cluster
            .wait_pods_ready("worker", replicas as usize, CONVERGE_TIMEOUT)
            .await?;
        let ipl = cluster.wait_ready(replicas, CONVERGE_TIMEOUT).await?;
        let sts = cluster
            .api::<StatefulSet>()
            .get(&format!("{PIPELINE}-worker"))
            .await?;
        ensure!(
            sts.spec.replicas == Some(replicas),
            "the StatefulSet has replicas {:?}",
            sts.spec.replicas
        );
        wait_until("ingest continues", CONVERGE_TIMEOUT, async || {
            let now = cluster.ledger_files().await?;
            ensure!(now > before, "ledger still at {now} files");
            Ok(())
        })
        .await?;
        log.note(figures(&ipl));
    }

    log.step("stop the generator; drain the backlog");
    let stopped_at = Utc::now();
    let generated = stop_generator(cluster, log, Some(&generator_identity)).await?;
    let deploy = cluster
        .api::<Deployment>()
        .get(&format!("{PIPELINE}-generator"))
        .await?;
    ensure!(
        deploy.spec.replicas == Some(0),
        "generator Deployment replicas {:?} with generator.enabled=false",
        deploy.spec.replicas
    );
    wait_drained(cluster, log, generated.map(|g| g.files), stopped_at).await?;

    log.step("exactly-once after a worker kill and scaling");
    let first_round = check_exactly_once(cluster, log, generated).await?;

    log.step("suspend");
    cluster
        .patch_pipeline(log, json!({ "suspend": true }))
        .await?;
    cluster.wait_pods_gone("worker", CONVERGE_TIMEOUT).await?;
    cluster
        .wait_pods_gone("generator", CONVERGE_TIMEOUT)
        .await?;
    wait_until(
        "Suspended=True, 0 workers desired",
        CONVERGE_TIMEOUT,
        async || {
            let ipl = cluster.pipeline().await?;
            let st = ipl.status.as_ref().context("no status")?;
            ensure!(
                condition_status(&ipl, "Suspended").as_deref() == Some("True")
                    && condition_status(&ipl, "Ready").as_deref() == Some("False")
                    && st.workers_desired == 0
                    && st.observed_generation == ipl.metadata.generation,
                "{}; conditions: {}",
                figures(&ipl),
                conditions_summary(&ipl)
            );
            Ok(())
        },
    )
    .await?;
    let sts = cluster
        .api::<StatefulSet>()
        .get(&format!("{PIPELINE}-worker"))
        .await?;
    ensure!(
        sts.spec.replicas == Some(0),
        "suspended, but the worker StatefulSet has replicas {:?}",
        sts.spec.replicas
    );
    let after_suspend = cluster.ledger_files().await?;
    ensure!(
        after_suspend == first_round.files,
        "the ledger changed while suspended with nothing to do: {} → {after_suspend}",
        first_round.files
    );

    log.step("resume (generator on again)");
    cluster
        .patch_pipeline(
            log,
            json!({ "suspend": false, "generator": { "enabled": true } }),
        )
        .await?;
    cluster
        .wait_pods_ready("worker", 1, CONVERGE_TIMEOUT)
        .await?;
    let generator = cluster
        .wait_pods_ready("generator", 1, CONVERGE_TIMEOUT)
        .await?;
    let generator = generator.first().context("no generator pod")?;
    let second_identity = (generator.name_any(), generator.uid().unwrap_or_default());
    let ipl = cluster.wait_ready(1, CONVERGE_TIMEOUT).await?;
    ensure!(
        condition_status(&ipl, "Suspended").as_deref() == Some("False"),
        "resumed, but {}",
        conditions_summary(&ipl)
    );
    wait_until(
        "new files loaded after resuming",
        CONVERGE_TIMEOUT,
        async || {
            let now = cluster.ledger_files().await?;
            ensure!(now > first_round.files, "ledger still at {now} files");
            Ok(())
        },
    )
    .await?;

    log.step("stop the generator again; drain; exactly-once over both runs");
    let stopped_at = Utc::now();
    let second = stop_generator(cluster, log, Some(&second_identity)).await?;
    let total = match (generated, second) {
        (Some(mut a), Some(b)) => {
            a += b;
            Some(a)
        }
        _ => None,
    };
    wait_drained(cluster, log, total.map(|g| g.files), stopped_at).await?;
    check_exactly_once(cluster, log, total).await?;

    log.step("delete the pipeline; children garbage-collected");
    cluster
        .api::<IngestPipeline>()
        .delete(PIPELINE, &DeleteParams::default())
        .await
        .context("deleting the IngestPipeline")?;
    wait_until("children and pods gone", GC_TIMEOUT, async || {
        let mut left = Vec::new();
        let name = |s: &str| format!("{PIPELINE}-{s}");
        if cluster
            .api::<IngestPipeline>()
            .get_opt(PIPELINE)
            .await?
            .is_some()
        {
            left.push("IngestPipeline".to_string());
        }
        if cluster
            .api::<StatefulSet>()
            .get_opt(&name("worker"))
            .await?
            .is_some()
        {
            left.push("StatefulSet".into());
        }
        if cluster
            .api::<Deployment>()
            .get_opt(&name("generator"))
            .await?
            .is_some()
        {
            left.push("Deployment".into());
        }
        if cluster
            .api::<ConfigMap>()
            .get_opt(&name("config"))
            .await?
            .is_some()
        {
            left.push("ConfigMap".into());
        }
        if cluster
            .api::<Service>()
            .get_opt(&name("worker"))
            .await?
            .is_some()
        {
            left.push("Service".into());
        }
        if cluster
            .api::<ServiceAccount>()
            .get_opt(&name("sluice"))
            .await?
            .is_some()
        {
            left.push("ServiceAccount".into());
        }
        let pods = cluster
            .api::<Pod>()
            .list(&ListParams::default().labels(&format!("app.kubernetes.io/instance={PIPELINE}")))
            .await?
            .items;
        left.extend(pods.iter().map(|p| format!("pod {}", p.name_any())));
        ensure!(left.is_empty(), "left: {}", left.join(", "));
        Ok(())
    })
    .await?;
    // The landing claim outlives the pipeline too (`landingZone.deleteClaim` is false by
    // default, so files not yet loaded survive a deletion): it is still there and no
    // longer owned by the pipeline, ready to be adopted by name.
    let landing = cluster
        .api::<PersistentVolumeClaim>()
        .get_opt(&format!("{PIPELINE}-landing"))
        .await?
        .context(
            "the landing claim was deleted with the pipeline (deleteClaim defaults to false)",
        )?;
    ensure!(
        landing
            .metadata
            .owner_references
            .iter()
            .flatten()
            .all(|o| o.kind != "IngestPipeline"),
        "the kept landing claim is still owned by the pipeline: {:?}",
        landing.metadata.owner_references
    );
    log.note("landing claim kept (deleteClaim: false), not owned by the deleted pipeline");
    // The workers' checkpoint claims outlive the pipeline on purpose (docs/crd.md). The
    // StatefulSet controller copies its selector labels onto them; the selector docs/crd.md
    // gives for removing them must match every one of them.
    let prefix = format!("checkpoint-{PIPELINE}-worker-");
    let claims: Vec<PersistentVolumeClaim> = cluster
        .api::<PersistentVolumeClaim>()
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .filter(|c| c.name_any().starts_with(&prefix))
        .collect();
    ensure!(
        !claims.is_empty(),
        "no {prefix}* claims after deleting the pipeline: docs/crd.md says they stay"
    );
    let documented =
        format!("app.kubernetes.io/instance={PIPELINE},app.kubernetes.io/component=worker");
    let by_selector = cluster
        .api::<PersistentVolumeClaim>()
        .list(&ListParams::default().labels(&documented))
        .await?
        .items
        .len();
    log.note(format!(
        "children gone; {} checkpoint claims kept by design ({}), deleted with the namespace",
        claims.len(),
        claims
            .iter()
            .map(|c| c.name_any())
            .collect::<Vec<_>>()
            .join(", ")
    ));
    ensure!(
        by_selector == claims.len(),
        "the selector docs/crd.md gives for removing them ({documented}) matches {by_selector} of {} claims; their labels: {:?}",
        claims.len(),
        claims.first().map(|c| c.labels().clone())
    );
    let tables = first(
        cluster
            .query_ints("SELECT count(*) FROM sluice_files")
            .await?,
    )?;
    log.note(format!("the data stays: {tables} files in the ledger"));
    log.end_step();
    Ok(())
}

// ---------------------------------------------------------------------------------------
// The suite's own parsers (run everywhere, cluster or not).
// ---------------------------------------------------------------------------------------

#[test]
fn parsers() -> Result<()> {
    let json_line = r#"{"timestamp":"2026-01-01T00:00:00Z","level":"INFO","fields":{"message":"generator finished: 12 files, 60000 rows, 601 bad rows","files":12,"rows":60000},"target":"sluice_generator"}"#;
    let log = format!("{{\"fields\":{{\"message\":\"generator starting\"}}}}\n{json_line}\n");
    ensure!(
        parse_generator_summary(&log)
            == Some(GeneratorTotals {
                files: 12,
                rows: 60000,
                bad_rows: 601
            })
    );
    ensure!(
        parse_generator_summary(
            "2026 INFO generator finished: 1 files, 5 rows, 0 bad rows files=1"
        ) == Some(GeneratorTotals {
            files: 1,
            rows: 5,
            bad_rows: 0
        })
    );
    ensure!(parse_generator_summary("generator starting").is_none());

    let metrics = "# HELP sluice_generator_events_total x\n\
        sluice_generator_events_total{event_type=\"view\"} 10\n\
        sluice_generator_events_total{event_type=\"purchase\"} 2.5\n\
        sluice_generator_events_total_other 100\n\
        sluice_generator_files_total 3\n";
    ensure!(metric_sum(metrics, "sluice_generator_events_total") == Some(12.5));
    ensure!(metric_sum(metrics, "sluice_generator_files_total") == Some(3.0));
    ensure!(metric_sum(metrics, "sluice_generator_bytes_total").is_none());

    ensure!(split_image("sluice/operator:e2e")? == ("sluice/operator".into(), "e2e".into()));
    ensure!(
        split_image("localhost:5000/sluice/op:1.2")?
            == ("localhost:5000/sluice/op".into(), "1.2".into())
    );
    ensure!(split_image("localhost:5000/sluice/op").is_err());
    ensure!(split_image("op@sha256:abc").is_err());
    ensure!(
        parse_chart_installed("sluice-system/sluice")? == ("sluice-system".into(), "sluice".into())
    );
    ensure!(parse_chart_installed("sluice").is_err());
    ensure!(parse_int_row("3|4|-5\n")? == vec![3, 4, -5]);
    ensure!(parse_int_row("x").is_err());
    ensure!(conninfo_value(r"a'b\c") == r"'a\'b\\c'");

    let clean = DbFigures {
        events: 99,
        distinct_event_ids: 99,
        quarantine: 1,
        distinct_quarantine_lines: 1,
        files: 2,
        ledger_rows_loaded: 99,
        ledger_rows_rejected: 1,
        ..DbFigures::default()
    };
    let gen_ok = GeneratorTotals {
        files: 2,
        rows: 100,
        bad_rows: 1,
    };
    ensure!(exactly_once_problems(&clean, Some(gen_ok)).is_empty());
    let dup = DbFigures {
        events: 100,
        ledger_rows_loaded: 100,
        ..clean
    };
    ensure!(exactly_once_problems(&dup, None).len() == 1);
    ensure!(exactly_once_problems(&dup, Some(gen_ok)).len() == 2);
    Ok(())
}

/// The skip path CI takes: with no cluster configured the scenario passes by skipping.
#[test]
fn skips_without_a_cluster() -> Result<()> {
    if env_nonempty("SLUICE_E2E_KUBECONFIG").is_none() {
        ensure!(Settings::from_env()?.is_none());
    }
    Ok(())
}
