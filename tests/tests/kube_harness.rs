//! Smoke tests of the kube-apiserver harness (`sluice_testkit::kube_env`): what the
//! operator's tests rely on works against the throwaway control plane.
//!
//! Most tests share one control plane (each in a namespace of its own); one starts a
//! private one to check that dropping it stops everything, and one checks that the
//! watchdog cleans up after a test process that is SIGKILLed.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail, ensure};
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, Patch,
    PatchParams, PostParams,
};
use kube::{Resource as _, ResourceExt as _};
use serde_json::json;
use sluice_testkit::kube_env::KubeEnv;

/// Polls `check` every 200 ms until it yields `Some`, or fails after `timeout` with the
/// last observation.
async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<Option<T>, String>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        let last = match check().await {
            Ok(Some(v)) => return Ok(v),
            Ok(None) => "not yet".to_string(),
            Err(e) => e,
        };
        if Instant::now() > deadline {
            bail!("{what}: not within {timeout:?} (last: {last})");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn from_json<T: serde::de::DeserializeOwned>(value: serde_json::Value) -> T {
    serde_json::from_value(value).expect("a valid object literal")
}

#[tokio::test]
async fn namespace_and_deployment_get_replicaset_and_pending_pods() -> Result<()> {
    let Some(env) = KubeEnv::shared_or_skip().await? else {
        return Ok(());
    };
    let ns = "smoke-deploy";
    env.create_namespace(ns).await?;
    let client = env.client().await?;

    let deployments: Api<Deployment> = Api::namespaced(client.clone(), ns);
    let deployment: Deployment = from_json(json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": { "name": "web" },
        "spec": {
            "replicas": 2,
            "selector": { "matchLabels": { "app": "web" } },
            "template": {
                "metadata": { "labels": { "app": "web" } },
                "spec": { "containers": [{ "name": "web", "image": "sluice/none:0" }] }
            }
        }
    }));
    let created = deployments
        .create(&PostParams::default(), &deployment)
        .await?;
    let deployment_uid = created.uid().context("created Deployment has a uid")?;

    let replicasets: Api<ReplicaSet> = Api::namespaced(client.clone(), ns);
    let rs_name = eventually(
        "a ReplicaSet owned by the Deployment",
        Duration::from_secs(60),
        || {
            let replicasets = replicasets.clone();
            let deployment_uid = deployment_uid.clone();
            async move {
                let list = replicasets
                    .list(&ListParams::default())
                    .await
                    .map_err(|e| e.to_string())?;
                Ok(list.items.into_iter().find_map(|rs| {
                    rs.owner_references()
                        .iter()
                        .any(|o| o.uid == deployment_uid && o.kind == "Deployment")
                        .then(|| rs.name_any())
                }))
            }
        },
    )
    .await
    .with_context(|| env.log_tail("kube-controller-manager"))?;

    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let phases = eventually(
        "two Pods owned by the ReplicaSet",
        Duration::from_secs(60),
        || {
            let pods = pods.clone();
            let rs_name = rs_name.clone();
            async move {
                let list = pods
                    .list(&ListParams::default().labels("app=web"))
                    .await
                    .map_err(|e| e.to_string())?;
                let owned: Vec<String> = list
                    .items
                    .iter()
                    .filter(|p| p.owner_references().iter().any(|o| o.name == rs_name))
                    .map(|p| {
                        p.status
                            .as_ref()
                            .and_then(|s| s.phase.clone())
                            .unwrap_or_default()
                    })
                    .collect();
                Ok((owned.len() == 2).then_some(owned))
            }
        },
    )
    .await
    .with_context(|| env.log_tail("kube-controller-manager"))?;
    // No scheduler, no kubelet: the Pods exist but never run.
    ensure!(
        phases.iter().all(|p| p == "Pending"),
        "pods should be Pending, got {phases:?}"
    );
    Ok(())
}

#[tokio::test]
async fn server_side_apply_with_field_manager() -> Result<()> {
    let Some(env) = KubeEnv::shared_or_skip().await? else {
        return Ok(());
    };
    let ns = "smoke-ssa";
    env.create_namespace(ns).await?;
    let client = env.client().await?;
    let cms: Api<ConfigMap> = Api::namespaced(client, ns);

    let first: ConfigMap = from_json(json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": { "name": "settings" },
        "data": { "rate": "100", "mode": "fast" }
    }));
    let applied = cms
        .patch(
            "settings",
            &PatchParams::apply("sluice-smoke"),
            &Patch::Apply(&first),
        )
        .await?;
    let managers: Vec<String> = applied
        .managed_fields()
        .iter()
        .filter_map(|m| m.manager.clone())
        .collect();
    ensure!(
        managers.iter().any(|m| m == "sluice-smoke"),
        "field manager missing from managedFields: {managers:?}"
    );

    // Another manager changing an owned field conflicts unless it forces.
    let other: ConfigMap = from_json(json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": { "name": "settings" },
        "data": { "rate": "200" }
    }));
    match cms
        .patch(
            "settings",
            &PatchParams::apply("someone-else"),
            &Patch::Apply(&other),
        )
        .await
    {
        Err(kube::Error::Api(status)) if status.code == 409 => {}
        other => bail!("expected a 409 conflict, got {other:?}"),
    }
    let forced = cms
        .patch(
            "settings",
            &PatchParams::apply("someone-else").force(),
            &Patch::Apply(&other),
        )
        .await?;
    let data = forced.data.clone().unwrap_or_default();
    ensure!(
        data.get("rate").map(String::as_str) == Some("200")
            && data.get("mode").map(String::as_str) == Some("fast"),
        "unexpected data after the forced apply: {data:?}"
    );

    // Re-applying without a field the first manager owned alone removes it.
    let shrunk: ConfigMap = from_json(json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": { "name": "settings" },
        "data": {}
    }));
    let after = cms
        .patch(
            "settings",
            &PatchParams::apply("sluice-smoke"),
            &Patch::Apply(&shrunk),
        )
        .await?;
    let data = after.data.unwrap_or_default();
    ensure!(
        !data.contains_key("mode") && data.get("rate").map(String::as_str) == Some("200"),
        "unexpected data after the shrinking apply: {data:?}"
    );
    Ok(())
}

#[tokio::test]
async fn crd_and_custom_object_with_status_subresource() -> Result<()> {
    let Some(env) = KubeEnv::shared_or_skip().await? else {
        return Ok(());
    };
    let ns = "smoke-crd";
    env.create_namespace(ns).await?;
    let client = env.client().await?;

    let crd: CustomResourceDefinition = from_json(json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": { "name": "widgets.smoke.sluice.dev" },
        "spec": {
            "group": "smoke.sluice.dev",
            "scope": "Namespaced",
            "names": { "plural": "widgets", "singular": "widget", "kind": "Widget" },
            "versions": [{
                "name": "v1",
                "served": true,
                "storage": true,
                "subresources": { "status": {} },
                "schema": { "openAPIV3Schema": {
                    "type": "object",
                    "properties": {
                        "spec": { "type": "object", "properties": {
                            "size": { "type": "integer", "minimum": 1 }
                        }},
                        "status": { "type": "object", "properties": {
                            "ready": { "type": "boolean" }
                        }}
                    }
                }}
            }]
        }
    }));
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    crds.create(&PostParams::default(), &crd).await?;
    eventually("the CRD to be Established", Duration::from_secs(30), || {
        let crds = crds.clone();
        async move {
            let crd = crds
                .get("widgets.smoke.sluice.dev")
                .await
                .map_err(|e| e.to_string())?;
            let established = crd
                .status
                .and_then(|s| s.conditions)
                .unwrap_or_default()
                .iter()
                .any(|c| c.type_ == "Established" && c.status == "True");
            Ok(established.then_some(()))
        }
    })
    .await?;

    let gvk = GroupVersionKind::gvk("smoke.sluice.dev", "v1", "Widget");
    let resource = ApiResource::from_gvk_with_plural(&gvk, "widgets");
    let widgets: Api<DynamicObject> = Api::namespaced_with(client, ns, &resource);
    let widget = DynamicObject::new("w1", &resource).data(json!({
        "spec": { "size": 3 },
        "status": { "ready": true }
    }));
    // The discovery of a fresh CRD can lag a moment behind Established.
    let created = eventually("creating a Widget", Duration::from_secs(30), || {
        let widgets = widgets.clone();
        let widget = widget.clone();
        async move {
            match widgets.create(&PostParams::default(), &widget).await {
                Ok(w) => Ok(Some(w)),
                Err(kube::Error::Api(s)) if s.code == 404 => Err(s.message),
                Err(e) => Err(e.to_string()),
            }
        }
    })
    .await?;
    // With a status subresource, status in a create is dropped.
    ensure!(
        created
            .data
            .get("status")
            .is_none_or(|s| s.get("ready").is_none()),
        "status should be ignored on create: {:?}",
        created.data
    );

    // Schema validation is on.
    let bad = DynamicObject::new("w-bad", &resource).data(json!({ "spec": { "size": 0 } }));
    match widgets.create(&PostParams::default(), &bad).await {
        Err(kube::Error::Api(s)) if s.code == 422 => {}
        other => bail!("expected 422 Invalid for size 0, got {other:?}"),
    }

    let patched = widgets
        .patch_status(
            "w1",
            &PatchParams::default(),
            &Patch::Merge(json!({ "status": { "ready": true } })),
        )
        .await?;
    ensure!(
        patched.data["status"]["ready"] == json!(true),
        "status not set: {:?}",
        patched.data
    );
    // A spec change through the status subresource is ignored.
    let ignored = widgets
        .patch_status(
            "w1",
            &PatchParams::default(),
            &Patch::Merge(json!({ "spec": { "size": 9 } })),
        )
        .await?;
    ensure!(
        ignored.data["spec"]["size"] == json!(3),
        "spec changed through /status: {:?}",
        ignored.data
    );
    Ok(())
}

#[tokio::test]
async fn owner_reference_garbage_collection() -> Result<()> {
    let Some(env) = KubeEnv::shared_or_skip().await? else {
        return Ok(());
    };
    let ns = "smoke-gc";
    env.create_namespace(ns).await?;
    let client = env.client().await?;
    let cms: Api<ConfigMap> = Api::namespaced(client, ns);

    let owner: ConfigMap = from_json(json!({
        "apiVersion": "v1", "kind": "ConfigMap", "metadata": { "name": "owner" }
    }));
    let owner = cms.create(&PostParams::default(), &owner).await?;
    let owner_uid = owner.meta().uid.clone().context("owner has a uid")?;
    let dependent: ConfigMap = from_json(json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {
            "name": "dependent",
            "ownerReferences": [{
                "apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": owner_uid
            }]
        }
    }));
    cms.create(&PostParams::default(), &dependent).await?;

    cms.delete("owner", &DeleteParams::background()).await?;
    eventually(
        "the dependent ConfigMap to be collected",
        Duration::from_secs(60),
        || {
            let cms = cms.clone();
            async move {
                let got = cms.get_opt("dependent").await.map_err(|e| e.to_string())?;
                Ok(got.is_none().then_some(()))
            }
        },
    )
    .await
    .with_context(|| env.log_tail("kube-controller-manager"))?;
    Ok(())
}

fn find_kubectl() -> Option<PathBuf> {
    let fixed = Path::new("/usr/bin/kubectl");
    if fixed.is_file() {
        return Some(fixed.to_path_buf());
    }
    sluice_testkit::bins::find_in_path("kubectl")
}

#[tokio::test]
async fn kubectl_apply_server_dry_run() -> Result<()> {
    let Some(env) = KubeEnv::shared_or_skip().await? else {
        return Ok(());
    };
    let Some(kubectl) = find_kubectl() else {
        use std::io::Write as _;
        let _ = writeln!(
            std::io::stderr(),
            "*** SKIPPED: kubectl_apply_server_dry_run: kubectl not found (/usr/bin/kubectl or PATH)"
        );
        return Ok(());
    };
    let ns = "smoke-kubectl";
    env.create_namespace(ns).await?;
    let dir = tempfile::tempdir()?;
    let manifest = dir.path().join("cm.yaml");
    std::fs::write(
        &manifest,
        format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: dry\n  namespace: {ns}\ndata:\n  k: v\n"
        ),
    )?;
    let out = tokio::process::Command::new(&kubectl)
        .arg("--kubeconfig")
        .arg(env.kubeconfig_path())
        .arg("--cache-dir")
        .arg(dir.path().join("cache"))
        .args(["apply", "--dry-run=server", "-f"])
        .arg(&manifest)
        .env_remove("KUBECONFIG")
        .env("HOME", dir.path())
        .output()
        .await
        .with_context(|| format!("running {}", kubectl.display()))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    ensure!(
        out.status.success() && stdout.contains("server dry run"),
        "kubectl apply --dry-run=server failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    // Dry run: nothing was stored.
    let cms: Api<ConfigMap> = Api::namespaced(env.client().await?, ns);
    ensure!(
        cms.get_opt("dry").await?.is_none(),
        "dry run created the ConfigMap"
    );
    Ok(())
}

fn pid_alive(pid: u32) -> bool {
    // A zombie (exited, not yet reaped) counts as gone.
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            s.rsplit_once(')')
                .is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z'))
        })
        .unwrap_or(false)
}

#[tokio::test]
async fn private_env_is_torn_down_on_drop() -> Result<()> {
    let Some(env) = KubeEnv::start_or_skip().await? else {
        return Ok(());
    };
    eprintln!("private control plane started in {:?}", env.startup_time());
    let pids = env.pids();
    let root = env.root_dir().to_path_buf();
    ensure!(pids.len() == 3, "expected three servers: {pids:?}");
    let client = env.client().await?;
    let version = client.apiserver_version().await?;
    ensure!(
        version.git_version.starts_with("v1.20."),
        "unexpected version {version:?}"
    );
    drop(client);
    let began = Instant::now();
    drop(env);
    eprintln!("private control plane stopped in {:?}", began.elapsed());
    for (name, pid) in pids {
        ensure!(!pid_alive(pid), "{name} (pid {pid}) still runs after drop");
    }
    ensure!(!root.exists(), "{} still exists after drop", root.display());
    Ok(())
}

/// Run as a child process by `watchdog_cleans_up_after_sigkill`: starts the shared
/// control plane, prints its pids and directory, and SIGKILLs itself.
#[tokio::test]
async fn watchdog_child() -> Result<()> {
    if std::env::var_os("SLUICE_KUBE_WATCHDOG_CHILD").is_none() {
        return Ok(()); // only meaningful as the child of the test below
    }
    let env = KubeEnv::shared().await?;
    let pids: Vec<String> = env.pids().iter().map(|(_, p)| p.to_string()).collect();
    println!(
        "WATCHDOG-CHILD root={} pids={}",
        env.root_dir().display(),
        pids.join(",")
    );
    use std::io::Write as _;
    std::io::stdout().flush()?;
    sluice_testkit::procs::send_signal(std::process::id(), libc::SIGKILL);
    std::thread::sleep(Duration::from_secs(10));
    bail!("still alive after SIGKILL")
}

#[tokio::test]
async fn watchdog_cleans_up_after_sigkill() -> Result<()> {
    // Resolve the binaries here first (skip rule), so the child does not have to.
    let Some(_) = skip_unless_binaries().await? else {
        return Ok(());
    };
    let exe = std::env::current_exe()?;
    let out = tokio::process::Command::new(exe)
        .args([
            "--exact",
            "watchdog_child",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("SLUICE_KUBE_WATCHDOG_CHILD", "1")
        .env(
            "SLUICE_KUBE_BIN",
            sluice_testkit::kube_env::kube_bin_dir().await?,
        )
        .output()
        .await?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout
        .lines()
        .find_map(|l| l.split_once("WATCHDOG-CHILD ").map(|(_, rest)| rest))
        .with_context(|| {
            format!(
                "the child printed no WATCHDOG-CHILD line ({}):\n{stdout}\n{}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            )
        })?;
    let mut root = None;
    let mut pids = Vec::new();
    for field in line.split_whitespace() {
        if let Some(r) = field.strip_prefix("root=") {
            root = Some(PathBuf::from(r));
        } else if let Some(p) = field.strip_prefix("pids=") {
            pids = p
                .split(',')
                .map(str::parse::<u32>)
                .collect::<Result<_, _>>()
                .context("parsing the child's pids")?;
        }
    }
    let root = root.context("the child printed no root")?;
    ensure!(
        pids.len() == 3,
        "expected three pids from the child: {line}"
    );
    eventually(
        "the watchdog to stop the servers and remove the directory",
        Duration::from_secs(30),
        || {
            let pids = pids.clone();
            let root = root.clone();
            async move {
                let alive: Vec<u32> = pids.into_iter().filter(|p| pid_alive(*p)).collect();
                if alive.is_empty() && !root.exists() {
                    Ok(Some(()))
                } else {
                    Err(format!(
                        "alive: {alive:?}, directory exists: {}",
                        root.exists()
                    ))
                }
            }
        },
    )
    .await?;
    Ok(())
}

/// `Some(())` if the control-plane binaries are available; prints the skip otherwise.
async fn skip_unless_binaries() -> Result<Option<()>> {
    match sluice_testkit::kube_env::kube_bin_dir().await {
        Ok(_) => Ok(Some(())),
        Err(e)
            if e.downcast_ref::<sluice_testkit::kube_env::Unavailable>()
                .is_some()
                && !sluice_testkit::kube_env::kube_required() =>
        {
            use std::io::Write as _;
            let _ = writeln!(std::io::stderr(), "*** SKIPPED: watchdog test: {e:#}");
            Ok(None)
        }
        Err(e) => Err(e),
    }
}
