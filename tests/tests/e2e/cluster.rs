//! The cluster as the suite sees it: a kube client, kubectl, and psql in the example
//! PostgreSQL's pod, for one pipeline of the test namespace at a time.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context as _, Result, ensure};
use chrono::{DateTime, Utc};
use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::{Client, Resource, ResourceExt as _};
use serde_json::{Value, json};
use sluice_operator::IngestPipeline;
use tokio::process::Command;

use crate::settings::{Settings, env_nonempty};
use crate::steps::{StepLog, wait_until};

/// The example PostgreSQL StatefulSet (`deploy/examples/postgres.yaml`); its pod.
pub const POSTGRES_STS: &str = "sluice-postgres";
pub const POSTGRES_POD: &str = "sluice-postgres-0";
/// Images pulled on first use (PostgreSQL) and volumes provisioned: be generous.
pub const START_TIMEOUT: Duration = Duration::from_secs(300);
/// Pods of the pipeline reacting to a spec change.
pub const CONVERGE_TIMEOUT: Duration = Duration::from_secs(180);
/// The backlog draining after the generator stopped.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(300);
/// Garbage collection of the children after the pipeline is deleted.
pub const GC_TIMEOUT: Duration = Duration::from_secs(120);

/// Credentials of `deploy/examples/postgres-credentials.yaml`.
#[derive(Debug, Clone)]
pub struct PgCredentials {
    pub user: String,
    pub password: String,
    pub dbname: String,
}

#[derive(Clone)]
pub struct Cluster {
    pub settings: Settings,
    pub client: Client,
    pub ns: String,
    pub pg: Option<PgCredentials>,
    /// The IngestPipeline the pipeline-level helpers below are about.
    pub pipeline: String,
    /// The PostgreSQL schema of that pipeline's tables (`spec.postgres.schema`), which
    /// psql's sessions then search first; None: the database's default search_path.
    pub search_path: Option<String>,
}

impl Cluster {
    /// The same cluster and namespace, about another pipeline whose tables live in
    /// `search_path`.
    pub fn for_pipeline(&self, pipeline: &str, search_path: Option<&str>) -> Cluster {
        Cluster {
            pipeline: pipeline.to_string(),
            search_path: search_path.map(str::to_string),
            ..self.clone()
        }
    }

    /// The id the pipeline's ledger rows carry (`<namespace>/<name>`, see the operator's
    /// `pipeline_config`).
    pub fn ledger_id(&self) -> String {
        format!("{}/{}", self.ns, self.pipeline)
    }

    pub fn api<K>(&self) -> Api<K>
    where
        K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>,
    {
        Api::namespaced(self.client.clone(), &self.ns)
    }

    pub fn kubectl_cmd(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(kubectl_binary());
        cmd.arg("--kubeconfig")
            .arg(&self.settings.kubeconfig)
            .args(args)
            .stdin(Stdio::null())
            .kill_on_drop(true);
        cmd
    }

    /// Runs kubectl and returns its stdout; fails with its stderr.
    pub async fn kubectl(&self, args: &[&str]) -> Result<String> {
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
    pub async fn psql(&self, sql: &str) -> Result<String> {
        let pg = self
            .pg
            .as_ref()
            .context("the PostgreSQL credentials are not loaded yet")?;
        // A conninfo string rather than PGPASSWORD: the image may have no `env` binary.
        let mut conninfo = format!(
            "dbname={} user={} password={}",
            conninfo_value(&pg.dbname),
            conninfo_value(&pg.user),
            conninfo_value(&pg.password)
        );
        if let Some(schema) = &self.search_path {
            // A session setting, not a `SET` in the statement: psql 15 would print the
            // `SET` too.
            conninfo.push_str(&format!(
                " options={}",
                conninfo_value(&format!("-c search_path={schema}"))
            ));
        }
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
    pub async fn query_ints(&self, sql: &str) -> Result<Vec<i64>> {
        let out = self.psql(sql).await?;
        parse_int_row(&out).with_context(|| format!("output of {sql}: {out:?}"))
    }

    /// A query that returns (text, integer) rows, e.g. a count by reason.
    pub async fn query_counts(&self, sql: &str) -> Result<Vec<(String, i64)>> {
        let out = self.psql(sql).await?;
        parse_counts(&out).with_context(|| format!("output of {sql}: {out:?}"))
    }

    pub async fn ipl(&self) -> Result<IngestPipeline> {
        self.api::<IngestPipeline>()
            .get(&self.pipeline)
            .await
            .with_context(|| format!("reading the IngestPipeline {}", self.pipeline))
    }

    pub async fn patch_pipeline(&self, log: &StepLog, spec: Value) -> Result<()> {
        log.note(format!("patch {} spec {spec}", self.pipeline));
        self.api::<IngestPipeline>()
            .patch(
                &self.pipeline,
                &PatchParams::default(),
                &Patch::Merge(json!({ "spec": spec })),
            )
            .await
            .context("patching the IngestPipeline")?;
        Ok(())
    }

    /// Pods of the pipeline with this component label (terminating ones included).
    pub async fn pods(&self, component: &str) -> Result<Vec<Pod>> {
        let lp = ListParams::default().labels(&format!(
            "app.kubernetes.io/instance={},app.kubernetes.io/component={component}",
            self.pipeline
        ));
        Ok(self
            .api::<Pod>()
            .list(&lp)
            .await
            .with_context(|| format!("listing {component} pods"))?
            .items)
    }

    /// Waits until exactly `n` pods of `component` exist and all are ready.
    pub async fn wait_pods_ready(
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
    pub async fn wait_pods_gone(&self, component: &str, timeout: Duration) -> Result<()> {
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
    pub async fn wait_ready(&self, workers: i32, timeout: Duration) -> Result<IngestPipeline> {
        wait_until(
            &format!(
                "IngestPipeline {} Ready with {workers} workers",
                self.pipeline
            ),
            timeout,
            async || {
                let ipl = self.ipl().await?;
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
    pub async fn ledger_files(&self) -> Result<i64> {
        first(self.query_ints("SELECT count(*) FROM sluice_files").await?)
    }
}

pub fn kubectl_binary() -> String {
    env_nonempty("SLUICE_E2E_KUBECTL").unwrap_or_else(|| {
        if Path::new("/usr/bin/kubectl").exists() {
            "/usr/bin/kubectl".into()
        } else {
            "kubectl".into()
        }
    })
}

/// A libpq conninfo value, single-quoted with `'` and `\\` escaped.
pub fn conninfo_value(v: &str) -> String {
    format!("'{}'", v.replace('\\', "\\\\").replace('\'', "\\'"))
}

/// An SQL string literal (standard_conforming_strings: only `'` is doubled).
pub fn sql_literal(v: &str) -> String {
    format!("'{}'", v.replace('\'', "''"))
}

pub fn first(v: Vec<i64>) -> Result<i64> {
    v.first().copied().context("an empty row")
}

/// `12|34|0` → [12, 34, 0] (the first non-empty line).
pub fn parse_int_row(out: &str) -> Result<Vec<i64>> {
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

/// `not_allowed|12\nbad_value|3` → [("not_allowed", 12), ("bad_value", 3)].
pub fn parse_counts(out: &str) -> Result<Vec<(String, i64)>> {
    out.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let (name, n) = l
                .rsplit_once('|')
                .with_context(|| format!("not name|count: {l:?}"))?;
            let n = n
                .trim()
                .parse::<i64>()
                .with_context(|| format!("not an integer: {n:?}"))?;
            Ok((name.to_string(), n))
        })
        .collect()
}

pub fn pod_ready(p: &Pod) -> bool {
    p.metadata.deletion_timestamp.is_none()
        && p.status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

pub fn restart_count(p: &Pod) -> i32 {
    p.status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .map_or(0, |cs| cs.iter().map(|c| c.restart_count).sum())
}

pub fn pod_summary(p: &Pod) -> String {
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

pub fn condition_status(ipl: &IngestPipeline, type_: &str) -> Option<String> {
    ipl.status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| c.status.clone())
}

pub fn conditions_summary(ipl: &IngestPipeline) -> String {
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

pub fn figures(ipl: &IngestPipeline) -> String {
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

pub fn figures_time(ipl: &IngestPipeline) -> Option<DateTime<Utc>> {
    let t = ipl.status.as_ref()?.figures_time.as_deref()?;
    DateTime::parse_from_rfc3339(t)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

#[test]
fn psql_output_parsers() -> Result<()> {
    ensure!(parse_int_row("3|4|-5\n")? == vec![3, 4, -5]);
    ensure!(parse_int_row("x").is_err());
    ensure!(conninfo_value(r"a'b\c") == r"'a\'b\\c'");
    ensure!(sql_literal("ns/it's") == "'ns/it''s'");
    ensure!(
        parse_counts("not_allowed|12\nbad|value|3\n\n")?
            == vec![("not_allowed".into(), 12), ("bad|value".into(), 3)]
    );
    ensure!(parse_counts("")?.is_empty());
    ensure!(parse_counts("x|y").is_err());
    Ok(())
}
