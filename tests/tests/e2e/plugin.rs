//! The real `kubectl-sluice` binary against the cluster, with the suite's kubeconfig: the
//! only place its exec path (`sluice-worker report|replay` run in a worker pod) and its
//! pod-proxy metrics run for real, since CI has no kubelet. `status -o json` is compared
//! field by field with the ledger and quarantine read through psql.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context as _, Result, ensure};
use chrono::DateTime;
use serde_json::Value;
use sluice_operator::plugin::args::worker_command;
use sluice_testkit::bins;
use tokio::process::Command;

use crate::cluster::{Cluster, sql_literal};
use crate::database::quarantine_by_reason;
use crate::settings::env_nonempty;
use crate::steps::{StepLog, wait_until};

const PLUGIN: &str = "kubectl-sluice";
/// The plugin samples each worker's metrics twice a second apart and execs once: seconds,
/// unless something hangs.
const RUN_TIMEOUT: Duration = Duration::from_secs(180);

/// `$SLUICE_E2E_PLUGIN`, else the binary cargo built next to this test.
pub fn binary() -> Result<PathBuf> {
    match env_nonempty("SLUICE_E2E_PLUGIN") {
        Some(p) => {
            let p = PathBuf::from(p);
            ensure!(
                p.is_file(),
                "SLUICE_E2E_PLUGIN={} is not a file",
                p.display()
            );
            Ok(p)
        }
        None => bins::try_bin_path(PLUGIN).map_err(|e| {
            anyhow::anyhow!(
                "{e} (the e2e suite runs {PLUGIN}: cargo build -p sluice-operator --bin {PLUGIN})"
            )
        }),
    }
}

/// `kubectl-sluice -n <ns> <args>` with the suite's kubeconfig; its stdout, or an error
/// with its exit status and stderr.
pub async fn run(cluster: &Cluster, args: &[&str]) -> Result<String> {
    let mut cmd = Command::new(binary()?);
    cmd.arg("-n")
        .arg(&cluster.ns)
        .args(args)
        .env("KUBECONFIG", &cluster.settings.kubeconfig)
        .stdin(Stdio::null())
        .kill_on_drop(true);
    let shown = format!("kubectl sluice -n {} {}", cluster.ns, args.join(" "));
    let out = tokio::time::timeout(RUN_TIMEOUT, cmd.output())
        .await
        .with_context(|| format!("{shown}: no result within {}s", RUN_TIMEOUT.as_secs()))?
        .with_context(|| format!("running {shown}"))?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    ensure!(
        out.status.success(),
        "{shown} failed ({}): {}{}",
        out.status,
        stderr.trim(),
        String::from_utf8_lossy(&out.stdout)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `run` of a command that prints one JSON document.
pub async fn run_json(cluster: &Cluster, args: &[&str]) -> Result<Value> {
    let out = run(cluster, args).await?;
    serde_json::from_str(&out).with_context(|| format!("kubectl sluice {args:?} printed {out:?}"))
}

/// The pipeline's ledger totals read with SQL, as `sluice-worker report` must report them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LedgerFromDb {
    pub files_total: i64,
    pub files_loaded: i64,
    pub files_failed: i64,
    pub files_redelivered: i64,
    pub files_partial: i64,
    pub rows_loaded: i64,
    pub rows_rejected: i64,
    pub rows_deduplicated: i64,
    pub quarantine_rows: i64,
    /// Most frequent first, ties by name.
    pub reasons: Vec<(String, i64)>,
    /// The last commit of a file or a part, in microseconds since the epoch.
    pub last_commit_micros: Option<i64>,
}

pub async fn ledger_from_db(cluster: &Cluster) -> Result<LedgerFromDb> {
    let id = sql_literal(&cluster.ledger_id());
    let v = cluster
        .query_ints(&format!(
            "SELECT count(*), \
               count(*) FILTER (WHERE outcome = 'loaded'), \
               count(*) FILTER (WHERE outcome = 'failed'), \
               count(*) FILTER (WHERE outcome = 'redelivered'), \
               count(*) FILTER (WHERE outcome = 'partial'), \
               coalesce(sum(rows_loaded), 0), coalesce(sum(rows_rejected), 0), \
               coalesce(sum(rows_deduplicated), 0), \
               (SELECT count(*) FROM quarantine WHERE pipeline = {id}), \
               coalesce((extract(epoch FROM greatest(max(committed_at), \
                   (SELECT max(committed_at) FROM sluice_batches WHERE pipeline = {id}))) \
                   * 1000000)::int8, -1) \
             FROM sluice_files WHERE pipeline = {id}"
        ))
        .await?;
    ensure!(v.len() == 10, "expected 10 columns, got {v:?}");
    Ok(LedgerFromDb {
        files_total: v[0],
        files_loaded: v[1],
        files_failed: v[2],
        files_redelivered: v[3],
        files_partial: v[4],
        rows_loaded: v[5],
        rows_rejected: v[6],
        rows_deduplicated: v[7],
        quarantine_rows: v[8],
        reasons: quarantine_by_reason(cluster).await?,
        last_commit_micros: (v[9] >= 0).then_some(v[9]),
    })
}

/// Every difference between `status -o json`'s exact totals (`totals.ledger`) and the
/// database; empty when they agree.
pub fn totals_problems(status: &Value, db: &LedgerFromDb) -> Vec<String> {
    let mut p = Vec::new();
    if status.pointer("/totals/available") != Some(&Value::Bool(true)) {
        p.push(format!(
            "totals not available: {}",
            status.pointer("/totals/reason").unwrap_or(&Value::Null)
        ));
        return p;
    }
    let mut int = |ptr: &str, want: i64| match status.pointer(ptr).and_then(Value::as_i64) {
        Some(got) if got == want => {}
        got => p.push(format!("{ptr}: plugin {got:?}, database {want}")),
    };
    int("/totals/ledger/files/total", db.files_total);
    int("/totals/ledger/files/loaded", db.files_loaded);
    int("/totals/ledger/files/failed", db.files_failed);
    int("/totals/ledger/files/redelivered", db.files_redelivered);
    int("/totals/ledger/files/partial", db.files_partial);
    int("/totals/ledger/rows/loaded", db.rows_loaded);
    int("/totals/ledger/rows/rejected", db.rows_rejected);
    int("/totals/ledger/rows/deduplicated", db.rows_deduplicated);
    int("/totals/ledger/quarantine/rows", db.quarantine_rows);
    // The ledger does not keep cleaned rows (only the workers' metrics count them): the
    // report's contract is null, never a made-up figure.
    if status.pointer("/totals/ledger/rows/cleaned") != Some(&Value::Null) {
        p.push(format!(
            "rows.cleaned is {:?}; the ledger keeps no such count (null expected)",
            status.pointer("/totals/ledger/rows/cleaned")
        ));
    }
    let top: Option<Vec<(String, i64)>> = status
        .pointer("/totals/ledger/quarantine/topReasons")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|r| Some((r["reason"].as_str()?.to_string(), r["rows"].as_i64()?)))
                .collect()
        });
    match top {
        Some(top) if top.is_empty() != db.reasons.is_empty() || !db.reasons.starts_with(&top) => p
            .push(format!(
                "quarantine.topReasons {top:?} is not the head of the database's {:?}",
                db.reasons
            )),
        Some(_) => {}
        None => p.push("no quarantine.topReasons array".into()),
    }
    let last = status
        .pointer("/totals/ledger/lastCommit")
        .and_then(Value::as_str)
        .map(|t| DateTime::parse_from_rfc3339(t).map(|t| t.timestamp_micros()));
    match (last, db.last_commit_micros) {
        (Some(Ok(got)), Some(want)) if got == want => {}
        (None, None) => {}
        (got, want) => p.push(format!(
            "lastCommit: plugin {got:?} µs, database {want:?} µs"
        )),
    }
    p
}

/// Every problem with the rest of the view: the pipeline named, Ready, `replicas`
/// workers listed, ready, with figures read through the pod proxy and an empty backlog
/// (the scenario asks only once everything is drained), and the totals read in one of
/// them.
pub fn view_problems(status: &Value, ns: &str, name: &str, replicas: i64) -> Vec<String> {
    let mut p = Vec::new();
    if status["name"] != name || status["namespace"] != ns || status["suspended"] != false {
        p.push(format!(
            "name/namespace/suspended: {} {} {}",
            status["name"], status["namespace"], status["suspended"]
        ));
    }
    let conditions = status["conditions"].as_array().cloned().unwrap_or_default();
    let condition = |t: &str| {
        conditions
            .iter()
            .find(|c| c["type"] == t)
            .map(|c| c["status"].clone())
    };
    if condition("Ready") != Some(Value::from("True")) {
        p.push(format!("Ready is {:?}: {conditions:?}", condition("Ready")));
    }
    if condition("Degraded").is_some_and(|s| s != "False") {
        p.push(format!("Degraded is {:?}", condition("Degraded")));
    }
    let workers = &status["workers"];
    if workers["ready"] != replicas || workers["desired"] != replicas {
        p.push(format!(
            "workers {}/{} ready, {replicas} expected",
            workers["ready"], workers["desired"]
        ));
    }
    let pods = workers["pods"].as_array().cloned().unwrap_or_default();
    if pods.len() as i64 != replicas {
        p.push(format!(
            "{} worker pods listed, {replicas} expected",
            pods.len()
        ));
    }
    for pod in &pods {
        let ok = pod["ready"] == true
            && pod["phase"] == "Running"
            && pod.get("metricsUnavailable").is_none()
            && pod["lagSeconds"].is_number()
            && pod["backlogFiles"].as_f64() == Some(0.0);
        if !ok {
            p.push(format!("worker {pod}"));
        }
    }
    let exec_pod = status.pointer("/totals/pod").cloned().unwrap_or_default();
    if !pods.iter().any(|w| w["name"] == exec_pod) {
        p.push(format!("totals read in {exec_pod}, not a listed worker"));
    }
    p
}

/// `kubectl sluice status -o json` must agree with the database (the pipeline is idle:
/// generator stopped, backlog drained), and the text for people must say the same.
pub async fn check_status(cluster: &Cluster, log: &StepLog, replicas: i64) -> Result<Value> {
    let name = cluster.pipeline.as_str();
    let db = ledger_from_db(cluster).await?;
    log.note(format!("ledger in the database: {db:?}"));
    // Retried only for the worker gauges (backlog, lag), which a worker refreshes on
    // its own schedule; the totals come from a database nothing writes to any more.
    let status = wait_until(
        &format!("kubectl sluice status {name} -o json agrees with the database"),
        Duration::from_secs(60),
        async || {
            let v = run_json(cluster, &["status", name, "-o", "json"]).await?;
            let mut problems = totals_problems(&v, &db);
            problems.extend(view_problems(&v, &cluster.ns, name, replicas));
            ensure!(problems.is_empty(), "{}", problems.join("; "));
            Ok(v)
        },
    )
    .await?;
    log.note(format!(
        "status -o json agrees with the database: totals {}; workers {}",
        status["totals"]["ledger"], status["workers"]
    ));
    let text = run(cluster, &["status", name]).await?;
    log.capture(&format!("kubectl sluice status {name}"), &text);
    for line in [
        format!("Pipeline {}/{name}   Ready: True", cluster.ns),
        format!("Workers: {replicas}/{replicas} ready"),
        format!(
            "  files  {} ({} loaded, {} failed, {} redelivered, {} partial)",
            db.files_total,
            db.files_loaded,
            db.files_failed,
            db.files_redelivered,
            db.files_partial
        ),
        format!(
            "  rows   {} loaded, {} rejected, {} deduplicated",
            db.rows_loaded, db.rows_rejected, db.rows_deduplicated
        ),
        format!("Quarantine: {} rows", db.quarantine_rows),
    ] {
        ensure!(
            text.lines().any(|l| l == line),
            "kubectl sluice status {name} lacks the line {line:?}:\n{text}"
        );
    }
    // What the plugin runs in the pod, by hand: the report for people says the same.
    let pod = status["totals"]["pod"]
        .as_str()
        .context("no totals.pod")?
        .to_string();
    let command = worker_command("report", Vec::new());
    let mut args = vec![
        "-n",
        cluster.ns.as_str(),
        "exec",
        pod.as_str(),
        "-c",
        "worker",
        "--",
    ];
    args.extend(command.iter().map(String::as_str));
    let report = cluster.kubectl(&args).await?;
    log.capture(
        &format!("kubectl exec {pod} -- {}", command.join(" ")),
        &report,
    );
    let rows = format!(
        "  rows:   {} loaded, {} rejected, {} deduplicated",
        db.rows_loaded, db.rows_rejected, db.rows_deduplicated
    );
    ensure!(
        report.lines().any(|l| l == rows),
        "sluice-worker report in {pod} lacks the line {rows:?}:\n{report}"
    );
    Ok(status)
}

#[test]
fn status_json_is_compared_field_by_field() -> Result<()> {
    let db = LedgerFromDb {
        files_total: 3,
        files_loaded: 3,
        rows_loaded: 10,
        rows_rejected: 2,
        quarantine_rows: 2,
        reasons: vec![("not_allowed".into(), 2)],
        last_commit_micros: Some(1_765_000_000_123_456),
        ..LedgerFromDb::default()
    };
    let status: Value = serde_json::from_str(
        r#"{"name":"clicks","namespace":"ns","suspended":false,
            "conditions":[{"type":"Ready","status":"True"},{"type":"Degraded","status":"False"}],
            "workers":{"ready":1,"desired":1,"pods":[{"name":"clicks-worker-0","phase":"Running",
              "ready":true,"restarts":0,"lagSeconds":0.0,"backlogFiles":0.0,"rowsPerSecond":0.0}]},
            "totals":{"available":true,"pod":"clicks-worker-0","ledger":{
              "files":{"total":3,"loaded":3,"failed":0,"redelivered":0,"partial":0},
              "rows":{"loaded":10,"rejected":2,"deduplicated":0,"cleaned":null},
              "quarantine":{"rows":2,"topReasons":[{"reason":"not_allowed","rows":2}]},
              "lastCommit":"2025-12-06T05:46:40.123456Z"}}}"#,
    )?;
    ensure!(
        totals_problems(&status, &db).is_empty(),
        "{:?}",
        totals_problems(&status, &db)
    );
    ensure!(view_problems(&status, "ns", "clicks", 1).is_empty());
    ensure!(view_problems(&status, "ns", "clicks", 2).len() == 2);
    let off_by_one = LedgerFromDb {
        rows_loaded: 11,
        ..db.clone()
    };
    ensure!(totals_problems(&status, &off_by_one).len() == 1);
    let other_reason = LedgerFromDb {
        reasons: vec![("bad_value".into(), 2)],
        ..db.clone()
    };
    ensure!(totals_problems(&status, &other_reason).len() == 1);
    let later = LedgerFromDb {
        last_commit_micros: Some(1_765_000_000_123_457),
        ..db
    };
    ensure!(totals_problems(&status, &later).len() == 1);
    Ok(())
}
