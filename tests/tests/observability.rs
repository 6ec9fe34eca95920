//! The dashboard and the alert rules against a real Prometheus.
//!
//! A real Prometheus (Debian's `prometheus` package: /usr/bin/prometheus, or
//! `$SLUICE_PROMETHEUS`) with its own data directory and port scrapes, every second, a
//! locally running generator and two workers loading into a throwaway PostgreSQL. Once data
//! flows, every query of `deploy/grafana/sluice.json` and every expression of
//! `deploy/prometheus/sluice-alerts.yaml` is evaluated through the HTTP API:
//!
//! * every query must evaluate without error;
//! * no query may name a metric that does not exist: each `sluice_*` name must be among the
//!   scraped names (`/api/v1/label/__name__/values`);
//! * every dashboard query must return data.
//!
//! The operator runs too, against a throwaway kube-apiserver (`sluice_testkit::kube_env`)
//! with the CRD applied. Where the control-plane binaries are missing (and
//! `SLUICE_KUBE_REQUIRED` is unset) it does not, and the operator's metric names are only
//! checked against what operator/src/metrics.rs registers.
//!
//! Also:
//! * Prometheus must have loaded every alert rule with health "ok", and none may be
//!   pending or firing for this healthy pipeline.
//!
//! Skipped (with a message) when no Prometheus binary is installed, unless
//! `SLUICE_REQUIRE_PROMETHEUS=1` (then it fails). `apt-get install -y prometheus` provides it.

use std::collections::BTreeSet;
use std::io::{Read as _, Write as _};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, Patch, PatchParams};
use serde_json::Value;
use sluice_testkit::bins::bin_path;
use sluice_testkit::kube_env::KubeEnv;
use sluice_testkit::pg;
use sluice_testkit::procs::{WorkerProc, WorkerSpec, tail};

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

fn prometheus_bin() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("SLUICE_PROMETHEUS") {
        return Some(PathBuf::from(p));
    }
    let candidates = [PathBuf::from("/usr/bin/prometheus")];
    if let Some(p) = candidates.into_iter().find(|p| p.is_file()) {
        return Some(p);
    }
    sluice_testkit::bins::find_in_path("prometheus")
}

fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// A child process killed (and reaped) on drop.
struct Guard(Child);

impl Guard {
    /// Spawns `cmd` with stdout and stderr appended to `log`, no stdin.
    fn spawn(cmd: &mut Command, log: &Path) -> Guard {
        let file = std::fs::File::create(log)
            .unwrap_or_else(|e| panic!("creating {}: {e}", log.display()));
        let child = cmd
            .stdout(file.try_clone().expect("log handle"))
            .stderr(file)
            .stdin(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("spawning {cmd:?}: {e}"));
        Guard(child)
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `GET http://127.0.0.1:port{path}` (HTTP/1.0, so no chunked encoding), body as JSON.
fn get_json(port: u16, path: &str) -> Result<Value, String> {
    let mut stream = TcpStream::connect((Ipv4Addr::LOCALHOST, port)).map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .map_err(|e| e.to_string())?;
    write!(
        stream,
        "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\nAccept: application/json\r\n\r\n"
    )
    .map_err(|e| e.to_string())?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text.split_once("\r\n\r\n").ok_or("no HTTP header end")?;
    serde_json::from_str(body)
        .map_err(|e| format!("{e}: {} {}", head.lines().next().unwrap_or(""), body))
}

/// An instant query; Ok(result array) or Err(the API's error).
fn query(port: u16, expr: &str) -> Result<Vec<Value>, String> {
    let v = get_json(
        port,
        &format!("/api/v1/query?query={}", percent_encode(expr)),
    )?;
    if v["status"] != "success" {
        return Err(format!("{}: {}", v["errorType"], v["error"]));
    }
    Ok(v["data"]["result"].as_array().cloned().unwrap_or_default())
}

/// Metric names a PromQL expression refers to: identifiers outside string literals that
/// start with `sluice_`, and `up`.
fn metric_names(expr: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut chars = expr.chars().peekable();
    let mut ident = String::new();
    let flush = |ident: &mut String, names: &mut BTreeSet<String>| {
        if ident.starts_with("sluice_") || ident == "up" {
            names.insert(std::mem::take(ident));
        }
        ident.clear();
    };
    while let Some(c) = chars.next() {
        if c == '"' || c == '\'' || c == '`' {
            flush(&mut ident, &mut names);
            // skip the string literal
            while let Some(d) = chars.next() {
                if d == '\\' {
                    chars.next();
                } else if d == c {
                    break;
                }
            }
        } else if c.is_ascii_alphanumeric() || c == '_' || c == ':' {
            ident.push(c);
        } else {
            flush(&mut ident, &mut names);
        }
    }
    flush(&mut ident, &mut names);
    names
}

/// The dashboard's queries as (panel title, expr) with the template variables resolved
/// to their "All" value.
fn dashboard_queries() -> Vec<(String, String)> {
    let path = repo_root().join("deploy/grafana/sluice.json");
    let d: Value = serde_json::from_str(&std::fs::read_to_string(&path).expect("dashboard"))
        .expect("dashboard JSON");
    let mut out = Vec::new();
    for p in d["panels"].as_array().expect("panels") {
        for t in p["targets"].as_array().into_iter().flatten() {
            let expr = t["expr"].as_str().expect("expr");
            let expr = expr.replace("$namespace", ".*").replace("$pipeline", ".*");
            assert!(
                !expr.contains('$'),
                "unresolved template variable in {expr}"
            );
            out.push((p["title"].as_str().unwrap_or("").to_string(), expr));
        }
    }
    assert!(out.len() > 20, "the dashboard has its queries");
    out
}

/// The alert rules as (alert name, expr).
fn alert_queries() -> Vec<(String, String)> {
    let path = repo_root().join("deploy/prometheus/sluice-alerts.yaml");
    let doc: serde_yaml::Value =
        serde_yaml::from_str(&std::fs::read_to_string(&path).expect("rules")).expect("rules YAML");
    let mut out = Vec::new();
    for g in doc["groups"].as_sequence().expect("groups") {
        for r in g["rules"].as_sequence().expect("rules") {
            let name = r["alert"]
                .as_str()
                .or(r["record"].as_str())
                .expect("rule name");
            out.push((
                name.to_string(),
                r["expr"].as_str().expect("expr").to_string(),
            ));
        }
    }
    out
}

/// The operator's metric names (no operator runs in this test): the string literals
/// `"sluice_operator_…"` its metrics module registers, plus the names of the "Operator"
/// table of docs/metrics.md when there is one; each with the `_bucket`/`_sum`/`_count`
/// series a histogram adds.
fn operator_metric_names() -> BTreeSet<String> {
    let mut base = BTreeSet::new();
    let source = std::fs::read_to_string(repo_root().join("operator/src/metrics.rs"))
        .expect("operator/src/metrics.rs");
    for piece in source.split('"').skip(1).step_by(2) {
        if piece.starts_with("sluice_operator_")
            && piece.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        {
            base.insert(piece.to_string());
        }
    }
    let doc = std::fs::read_to_string(repo_root().join("docs/metrics.md")).unwrap_or_default();
    if let Some(section) = doc.split("\n## ").find(|s| s.starts_with("Operator")) {
        for line in section.lines() {
            let cells: Vec<&str> = line.split('|').map(str::trim).collect();
            if cells.len() > 2 && cells[1].starts_with("`sluice_operator_") {
                base.insert(cells[1].trim_matches('`').to_string());
            }
        }
    }
    let mut names = base.clone();
    for name in &base {
        for suffix in ["_bucket", "_sum", "_count"] {
            names.insert(format!("{name}{suffix}"));
        }
    }
    names
}

struct Pipeline {
    _generator: Guard,
    workers: Vec<WorkerProc>,
    generator_log: PathBuf,
}

fn start_pipeline(root: &Path, url: &str, ports: &[u16; 3]) -> Pipeline {
    let landing = root.join("landing");
    std::fs::create_dir_all(&landing).expect("landing");
    let generator_log = root.join("generator.log");
    let generator = Guard::spawn(
        Command::new(bin_path("sluice-generator"))
            .args(["--landing-dir", &landing.display().to_string()])
            .args(["--events-per-second", "3000", "--seconds-per-file", "0.5"])
            .args(["--bad-row-share", "0.02", "--seed", "11"])
            .args(["--metrics-addr", &format!("127.0.0.1:{}", ports[2])]),
        &generator_log,
    );
    let workers = (0..2)
        .map(|i| {
            WorkerProc::spawn(WorkerSpec {
                id: format!("worker-{i}"),
                landing: landing.clone(),
                checkpoint: root.join(format!("checkpoint-{i}")),
                database_url: url.to_string(),
                extra: vec!["--metrics-addr".into(), format!("127.0.0.1:{}", ports[i])],
                log: root.join(format!("worker-{i}.log")),
            })
            .expect("worker")
        })
        .collect();
    Pipeline {
        _generator: generator,
        workers,
        generator_log,
    }
}

/// Applies the CRD and starts `sluice-operator` against `env`, metrics on `port`.
async fn start_operator(env: &KubeEnv, root: &Path, port: u16) -> Guard {
    let crd_yaml =
        std::fs::read_to_string(repo_root().join("deploy/crd/ingestpipeline.yaml")).expect("CRD");
    let crd: CustomResourceDefinition = serde_yaml::from_str(&crd_yaml).expect("CRD YAML");
    let client = env.client().await.expect("kube client");
    Api::<CustomResourceDefinition>::all(client)
        .patch(
            "ingestpipelines.sluice.dev",
            &PatchParams::apply("observability-test").force(),
            &Patch::Apply(&crd),
        )
        .await
        .expect("applying the CRD");
    Guard::spawn(
        Command::new(bin_path("sluice-operator"))
            .args(["run", "--all-namespaces", "--leader-election", "on"])
            .args(["--lease-namespace", "default"])
            .args(["--metrics-addr", &format!("127.0.0.1:{port}")])
            .env("KUBECONFIG", env.kubeconfig_path())
            .env("POD_NAMESPACE", "default"),
        &root.join("operator.log"),
    )
}

fn start_prometheus(
    bin: &Path,
    root: &Path,
    port: u16,
    targets: &[u16; 3],
    operator: Option<u16>,
) -> Guard {
    let rules = repo_root().join("deploy/prometheus/sluice-alerts.yaml");
    let target = |port: u16, pod: &str| {
        format!(
            "      - targets: ['127.0.0.1:{port}']\n        labels: {{namespace: sluice-test, pipeline: local, pod: {pod}}}\n"
        )
    };
    let config = format!(
        "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
         rule_files:\n  - {rules}\n\
         scrape_configs:\n\
         \x20 - job_name: sluice-worker\n    static_configs:\n{w0}{w1}\
         \x20 - job_name: sluice-generator\n    static_configs:\n{g}{op}",
        op = operator
            .map(|p| format!("  - job_name: sluice-operator\n    static_configs:\n      - targets: ['127.0.0.1:{p}']\n"))
            .unwrap_or_default(),
        rules = rules.display(),
        w0 = target(targets[0], "worker-0"),
        w1 = target(targets[1], "worker-1"),
        g = target(targets[2], "generator"),
    );
    let config_path = root.join("prometheus.yml");
    std::fs::write(&config_path, config).expect("prometheus.yml");
    Guard::spawn(
        Command::new(bin)
            .arg(format!("--config.file={}", config_path.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                root.join("tsdb").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--log.level=warn"),
        &root.join("prometheus.log"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_and_alert_queries_return_data_from_a_real_prometheus() {
    let Some(prometheus) = prometheus_bin() else {
        if std::env::var_os("SLUICE_REQUIRE_PROMETHEUS").is_some() {
            panic!(
                "no Prometheus binary (apt-get install -y prometheus, or set SLUICE_PROMETHEUS)"
            );
        }
        eprintln!(
            "SKIPPED: no Prometheus binary (apt-get install -y prometheus, or set SLUICE_PROMETHEUS)"
        );
        return;
    };
    let cluster = pg::shared().await;
    let db = cluster.create_database().await.expect("database");
    let root = tempfile::tempdir().expect("tempdir");
    let ports = [free_port(), free_port(), free_port()];
    let prom_port = free_port();
    let kube = KubeEnv::start_or_skip().await.expect("kube control plane");
    let operator_port = kube.as_ref().map(|_| free_port());
    let _operator = match (&kube, operator_port) {
        (Some(env), Some(port)) => Some(start_operator(env, root.path(), port).await),
        _ => None,
    };
    let mut pipeline = start_pipeline(root.path(), db.url(), &ports);
    let _prometheus = start_prometheus(&prometheus, root.path(), prom_port, &ports, operator_port);
    let prom_log = root.path().join("prometheus.log");
    let generator_log = pipeline.generator_log.clone();
    let logs = || {
        format!(
            "prometheus log:\n{}\noperator log:\n{}\ngenerator log:\n{}\nworker-0 log:\n{}",
            tail(&prom_log, 20),
            tail(&root.path().join("operator.log"), 20),
            tail(&generator_log, 20),
            tail(&root.path().join("worker-0.log"), 20)
        )
    };

    // Wait until all three targets are up and both workers have committed rows, rejects included.
    let started = Instant::now();
    let targets = if kube.is_some() { 4 } else { 3 };
    let ready = [
        format!("count(up == 1) == {targets}"),
        r#"count(sluice_worker_last_commit_timestamp_seconds > 0) == 2"#.to_string(),
        r#"sum(sluice_worker_rows_total{outcome="rejected"}) > 0"#.to_string(),
        "sum(sluice_generator_files_total) > 5".to_string(),
    ];
    loop {
        for w in &mut pipeline.workers {
            w.check_alive()
                .unwrap_or_else(|e| panic!("{e}\n{}", logs()));
        }
        let done = ready
            .iter()
            .all(|q| query(prom_port, q).map(|r| !r.is_empty()).unwrap_or(false));
        if done {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "no data in Prometheus after 120 s\n{}",
            logs()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // Enough samples for every rate() window and histogram_quantile().
    tokio::time::sleep(Duration::from_secs(8)).await;
    println!(
        "data flowing after {:.1} s",
        started.elapsed().as_secs_f64()
    );

    let names = get_json(prom_port, "/api/v1/label/__name__/values").expect("metric names");
    let scraped: BTreeSet<String> = names["data"]
        .as_array()
        .expect("names")
        .iter()
        .filter_map(|v| v.as_str().map(String::from))
        .collect();
    // Without a running operator, its names come from its source.
    let operator = if kube.is_some() {
        BTreeSet::new()
    } else {
        operator_metric_names()
    };
    if kube.is_none() {
        assert!(
            operator.contains("sluice_operator_reconcile_errors_total"),
            "operator metric names: {operator:?}"
        );
        println!("no kube control plane: operator queries checked by name only");
    }

    let mut failures = Vec::new();
    let mut evaluated = 0;
    let dashboard = dashboard_queries();
    let alerts = alert_queries();
    for (source, title, expr) in dashboard
        .iter()
        .map(|(t, e)| ("dashboard", t, e))
        .chain(alerts.iter().map(|(t, e)| ("alert", t, e)))
    {
        evaluated += 1;
        for name in metric_names(expr) {
            let known = scraped.contains(&name)
                || (name.starts_with("sluice_operator_") && operator.contains(&name));
            if !known {
                failures.push(format!(
                    "{source} {title:?}: unknown metric {name} in {expr}"
                ));
            }
        }
        match query(prom_port, expr) {
            Err(e) => failures.push(format!("{source} {title:?}: query failed: {e}\n    {expr}")),
            Ok(result) => {
                let operator_only = metric_names(expr)
                    .iter()
                    .all(|n| n.starts_with("sluice_operator_"));
                if source == "dashboard" && !operator_only && result.is_empty() {
                    failures.push(format!("{source} {title:?}: no data for {expr}"));
                }
                println!("{source:9} {:>3} series  {title}", result.len());
            }
        }
    }

    // Prometheus loaded every rule, evaluates it without error, and nothing fires.
    let rules = get_json(prom_port, "/api/v1/rules").expect("rules");
    let loaded: Vec<Value> = rules["data"]["groups"]
        .as_array()
        .expect("groups")
        .iter()
        .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
        .collect();
    if loaded.len() != alerts.len() {
        failures.push(format!(
            "Prometheus loaded {} rules, the file has {}",
            loaded.len(),
            alerts.len()
        ));
    }
    for r in &loaded {
        if r["health"] != "ok" && r["health"] != "unknown" {
            failures.push(format!(
                "rule {} health {}: {}",
                r["name"], r["health"], r["lastError"]
            ));
        }
    }
    let active = get_json(prom_port, "/api/v1/alerts").expect("alerts");
    for a in active["data"]["alerts"].as_array().into_iter().flatten() {
        failures.push(format!("alert active on a healthy pipeline: {a}"));
    }

    assert!(
        failures.is_empty(),
        "{} of {evaluated} queries failed:\n{}\n{}",
        failures.len(),
        failures.join("\n"),
        logs()
    );
    println!(
        "{evaluated} queries evaluated, {} rules loaded",
        loaded.len()
    );
}

#[test]
fn metric_names_are_extracted_from_promql() {
    let names = metric_names(
        r#"sum by (reason) (rate(sluice_worker_rejected_rows_total{job="sluice_worker_x", pod=~"up|down"}[5m])) / on(instance) up"#,
    );
    assert_eq!(
        names.into_iter().collect::<Vec<_>>(),
        vec![
            "sluice_worker_rejected_rows_total".to_string(),
            "up".to_string()
        ]
    );
}
