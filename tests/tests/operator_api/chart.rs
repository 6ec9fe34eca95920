//! The chart as `helm template` renders it (through scripts/helm), what it claims about
//! the operator's RBAC, and its RBAC objects applied as rendered.

use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context as _, Result, bail, ensure};
use clap::Parser as _;
use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::api::rbac::v1::{ClusterRole, Role, RoleBinding};
use kube::api::{Api, ApiResource, DynamicObject, Patch, PatchParams};
use kube::{Client, ResourceExt as _};
use serde::Deserialize as _;
use serde_json::{Value, json};
use sluice_operator::children::NetworkInputs;
use sluice_operator::cli::{Args, OnOff};
use sluice_operator::images::ImagePolicy;
use sluice_operator::{LeaderOptions, Scope, Settings};
use sluice_testkit::kube_env::kube_required;

use crate::fixtures::short_json;
use crate::harness::TEST_MANAGER;

/// The chart rendered by `helm template`, one JSON value per object.
pub struct Rendered {
    objects: Vec<Value>,
    /// The release namespace (`--namespace`).
    release_ns: String,
}

/// The operator's flags, as the rendered Deployment passes them.
pub struct Flags {
    pub scope: Scope,
    pub leader: Option<LeaderOptions>,
    pub settings: Settings,
}

impl Rendered {
    /// `helm template sluice charts/sluice --namespace <release_ns> <args>` through
    /// scripts/helm; None (skipped, said loudly) when helm cannot be had and
    /// `SLUICE_KUBE_REQUIRED` is unset.
    pub fn helm_template(release_ns: &str, args: &[&str]) -> Result<Option<Rendered>> {
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
        let helm = root.join("scripts/helm");
        let version = Command::new(&helm).args(["version", "--short"]).output();
        if !version.as_ref().is_ok_and(|o| o.status.success()) {
            let why = match version {
                Ok(o) => String::from_utf8_lossy(&o.stderr).into_owned(),
                Err(e) => e.to_string(),
            };
            if kube_required() {
                bail!("scripts/helm cannot provide helm: {why}");
            }
            eprintln!("SKIPPED: scripts/helm cannot provide helm: {why}");
            return Ok(None);
        }
        let out = Command::new(&helm)
            .current_dir(&root)
            .args([
                "template",
                "sluice",
                "charts/sluice",
                "--namespace",
                release_ns,
            ])
            .args(args)
            .output()
            .context("running helm template")?;
        ensure!(
            out.status.success(),
            "helm template {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8(out.stdout).context("helm template's output")?;
        Ok(Some(Rendered {
            objects: parse_yaml_docs(&text)?,
            release_ns: release_ns.to_string(),
        }))
    }

    fn of_kind<'a>(&'a self, kind: &'a str) -> impl Iterator<Item = &'a Value> + 'a {
        self.objects.iter().filter(move |o| o["kind"] == kind)
    }

    /// The ServiceAccount, ClusterRoles, Roles and RoleBindings, in that order.
    pub fn rbac_objects(&self) -> impl Iterator<Item = &Value> {
        ["ServiceAccount", "ClusterRole", "Role", "RoleBinding"]
            .into_iter()
            .flat_map(|kind| self.of_kind(kind))
    }

    /// The ServiceAccount the Deployment runs as, and its flags (which must watch
    /// `watched`).
    pub fn operator(&self, watched: &[&str]) -> Result<(String, Flags)> {
        let release_ns = self.release_ns.as_str();
        let deployments: Vec<&Value> = self.of_kind("Deployment").collect();
        ensure!(deployments.len() == 1, "one Deployment: {deployments:?}");
        let pod = &deployments[0]["spec"]["template"]["spec"];
        let sa = pod["serviceAccountName"]
            .as_str()
            .context("the Deployment's serviceAccountName")?
            .to_string();
        ensure!(
            self.of_kind("ServiceAccount")
                .any(|s| s["metadata"]["name"] == sa.as_str()
                    && s["metadata"]["namespace"] == release_ns),
            "the chart renders ServiceAccount {sa} in {release_ns}"
        );
        let args: Vec<String> = pod["containers"][0]["args"]
            .as_array()
            .context("the operator container's args")?
            .iter()
            .filter_map(|a| a.as_str().map(String::from))
            .collect();
        let args = Args::try_parse_from(std::iter::once("sluice-operator".to_string()).chain(args))
            .context("the chart's arguments, parsed by sluice-operator's command line")?;
        ensure!(
            args.watch_namespaces == watched && !args.all_namespaces && args.namespace.is_none(),
            "{args:?}"
        );
        let scope = Scope::from_list(&args.watch_namespaces).context("a scope")?;
        let lease_namespace = match args.lease_namespace.as_deref() {
            None | Some("$(POD_NAMESPACE)") => release_ns.to_string(),
            Some(ns) => ns.to_string(),
        };
        let leader = (args.leader_election == OnOff::On).then(|| LeaderOptions {
            namespace: lease_namespace,
            lease_name: args.lease_name.clone(),
            identity: "op-rbac-test-0".into(),
        });
        let settings = Settings {
            network: NetworkInputs {
                default_enabled: args.network_policy_default == OnOff::On,
                operator_namespace: Some(release_ns.into()),
            },
            images: ImagePolicy::new(&args.allowed_image_prefixes),
        };
        Ok((
            sa,
            Flags {
                scope,
                leader,
                settings,
            },
        ))
    }

    /// Checks that the operator (ServiceAccount `sa`) gets a Role in each namespace of
    /// `watched` (one or more), the leader-election Role in its own, and nothing
    /// cluster-wide; returns the rules of the watched namespaces' Roles.
    pub fn operator_roles(&self, sa: &str, watched: &[&str]) -> Result<Value> {
        let release_ns = self.release_ns.as_str();
        let bindings: Vec<&Value> = self.of_kind("ClusterRoleBinding").collect();
        ensure!(bindings.is_empty(), "ClusterRoleBindings: {bindings:?}");
        for role in self.of_kind("ClusterRole") {
            // Only the aggregated view/edit roles for users, which nothing here binds.
            let labels = role["metadata"]["labels"].as_object();
            ensure!(
                labels.is_some_and(|l| l
                    .keys()
                    .any(|k| k.starts_with("rbac.authorization.k8s.io/aggregate-to-"))),
                "a ClusterRole that is not an aggregated user role: {}",
                short_json(role)
            );
        }
        let subject = json!([{ "kind": "ServiceAccount", "name": sa, "namespace": release_ns }]);
        let mut rules = Vec::new();
        for binding in self.of_kind("RoleBinding") {
            let ns = binding["metadata"]["namespace"]
                .as_str()
                .unwrap_or_default();
            ensure!(binding["subjects"] == subject, "{}", short_json(binding));
            ensure!(
                binding["roleRef"]["kind"] == "Role",
                "{}",
                short_json(binding)
            );
            let role = self
                .of_kind("Role")
                .find(|r| {
                    r["metadata"]["namespace"] == ns
                        && r["metadata"]["name"] == binding["roleRef"]["name"]
                })
                .with_context(|| format!("the Role of {}", short_json(binding)))?;
            if ns == release_ns {
                let only_leases = json!([{ "apiGroups": ["coordination.k8s.io"],
                    "resources": ["leases"], "verbs": ["get", "create", "update"] }]);
                ensure!(role["rules"] == only_leases, "{}", short_json(role));
            } else {
                ensure!(watched.contains(&ns), "a RoleBinding in {ns}");
                rules.push((ns.to_string(), role["rules"].clone()));
            }
        }
        rules.sort_by(|a, b| a.0.cmp(&b.0));
        let namespaces: Vec<&str> = rules.iter().map(|(ns, _)| ns.as_str()).collect();
        ensure!(namespaces == watched, "operator Roles in {namespaces:?}");
        let (_, first) = &rules[0];
        ensure!(
            rules.iter().all(|(_, r)| r == first),
            "the watched namespaces' Roles differ"
        );
        Ok(first.clone())
    }
}

fn parse_yaml_docs(text: &str) -> Result<Vec<Value>> {
    let mut docs = Vec::new();
    for doc in serde_yaml::Deserializer::from_str(text) {
        let value = Value::deserialize(doc).context("a YAML document")?;
        if !value.is_null() {
            docs.push(value);
        }
    }
    Ok(docs)
}

/// The rules of the Role in deploy/rbac/namespaced/role.yaml (the plain-manifest form).
pub fn example_role_rules() -> Result<Value> {
    let path =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/rbac/namespaced/role.yaml");
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let docs = parse_yaml_docs(&text)?;
    let role = docs
        .iter()
        .find(|d| d["kind"] == "Role")
        .context("a Role in deploy/rbac/namespaced/role.yaml")?;
    Ok(role["rules"].clone())
}

/// Server-side apply of a rendered RBAC object, as it is.
pub async fn apply_rendered(admin: &Client, obj: &Value) -> Result<()> {
    let resource = match obj["kind"].as_str() {
        Some("ServiceAccount") => ApiResource::erase::<ServiceAccount>(&()),
        Some("ClusterRole") => ApiResource::erase::<ClusterRole>(&()),
        Some("Role") => ApiResource::erase::<Role>(&()),
        Some("RoleBinding") => ApiResource::erase::<RoleBinding>(&()),
        _ => bail!("not an RBAC object: {}", short_json(obj)),
    };
    let obj: DynamicObject = serde_json::from_value(obj.clone()).context("a rendered object")?;
    let name = obj.name_any();
    let api: Api<DynamicObject> = match obj.namespace() {
        Some(ns) => Api::namespaced_with(admin.clone(), &ns, &resource),
        None => Api::all_with(admin.clone(), &resource),
    };
    api.patch(
        &name,
        &PatchParams::apply(TEST_MANAGER).force(),
        &Patch::Apply(&obj),
    )
    .await
    .with_context(|| format!("applying {} {name}", resource.kind))?;
    Ok(())
}
