//! Command line of `sluice-operator`.

use std::net::SocketAddr;

use clap::{Parser, Subcommand, ValueEnum};

/// Sluice operator: reconciles IngestPipeline resources (sluice.dev/v1alpha1) into a
/// generator Deployment, a worker StatefulSet and their ConfigMap, volumes, Service and
/// ServiceAccount. Serves /metrics, /healthz and /readyz.
#[derive(Debug, Parser)]
#[command(name = "sluice-operator", version, about, long_about)]
pub struct Args {
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Watch IngestPipelines in this namespace only. Default: the operator's own namespace
    /// (POD_NAMESPACE, else the in-cluster or kubeconfig namespace).
    #[arg(
        long,
        env = "SLUICE_NAMESPACE",
        global = true,
        conflicts_with = "all_namespaces"
    )]
    pub namespace: Option<String>,
    /// Watch IngestPipelines in all namespaces (needs the ClusterRole in deploy/rbac).
    #[arg(short = 'A', long, env = "SLUICE_ALL_NAMESPACES", global = true)]
    pub all_namespaces: bool,
    /// Watch IngestPipelines in these namespaces only, comma-separated (one watch per
    /// namespace: Roles in each of them suffice, no ClusterRole).
    #[arg(
        long,
        env = "SLUICE_WATCH_NAMESPACES",
        value_delimiter = ',',
        value_name = "NAMESPACE",
        global = true,
        conflicts_with_all = ["namespace", "all_namespaces"]
    )]
    pub watch_namespaces: Vec<String>,
    /// Address for /metrics, /healthz and /readyz, or "none".
    #[arg(
        long,
        env = "SLUICE_METRICS_ADDR",
        default_value = "0.0.0.0:9103",
        global = true
    )]
    pub metrics_addr: String,
    /// Log format: text or json.
    #[arg(long, env = "SLUICE_LOG_FORMAT", default_value = "text", global = true)]
    pub log_format: String,
    /// Log level or filter (e.g. info, sluice_operator=debug). RUST_LOG wins.
    #[arg(long, env = "SLUICE_LOG_LEVEL", default_value = "info", global = true)]
    pub log_level: String,
    /// Leader election on a coordination.k8s.io Lease, so that several replicas are safe.
    #[arg(
        long,
        env = "SLUICE_LEADER_ELECTION",
        value_enum,
        default_value = "on",
        global = true
    )]
    pub leader_election: OnOff,
    /// Name of the Lease.
    #[arg(
        long,
        env = "SLUICE_LEASE_NAME",
        default_value = "sluice-operator",
        global = true
    )]
    pub lease_name: String,
    /// Namespace of the Lease. Default: the operator's own namespace.
    #[arg(long, env = "SLUICE_LEASE_NAMESPACE", global = true)]
    pub lease_namespace: Option<String>,
    /// NetworkPolicies for pipelines that leave spec.networkPolicy.enabled unset: on or
    /// off (the Helm chart sets on).
    #[arg(
        long,
        env = "SLUICE_NETWORK_POLICY_DEFAULT",
        value_enum,
        default_value = "off",
        global = true
    )]
    pub network_policy_default: OnOff,
    /// Only run pipelines whose images (spec.images.worker and .generator) start with one
    /// of these prefixes, comma-separated; others are refused (Degraded, InvalidSpec).
    /// End each prefix with "/" (ghcr.io/acme/ does not allow ghcr.io/acme-evil/…).
    /// Default: any image.
    #[arg(
        long,
        env = "SLUICE_ALLOWED_IMAGE_PREFIXES",
        value_delimiter = ',',
        value_name = "PREFIX",
        global = true
    )]
    pub allowed_image_prefixes: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OnOff {
    On,
    Off,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Subcommand)]
pub enum Command {
    /// Run the operator (the default).
    Run,
    /// Print the IngestPipeline CustomResourceDefinition as YAML.
    Crd,
}

impl Args {
    /// The metrics address, or None when disabled.
    pub fn metrics_addr(&self) -> Result<Option<SocketAddr>, String> {
        match self.metrics_addr.trim() {
            "" | "none" | "off" => Ok(None),
            a => a.parse().map(Some).map_err(|_| {
                format!("invalid --metrics-addr {a:?}: expected host:port (e.g. 0.0.0.0:9103) or \"none\"")
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent() {
        Args::command().debug_assert();
    }

    #[test]
    fn defaults_and_subcommands() {
        let a = Args::try_parse_from(["sluice-operator"]).expect("parse");
        assert_eq!(a.command, None);
        assert_eq!(a.leader_election, OnOff::On);
        assert_eq!(a.network_policy_default, OnOff::Off);
        assert_eq!(
            a.metrics_addr().expect("addr"),
            Some("0.0.0.0:9103".parse().expect("addr"))
        );
        let a = Args::try_parse_from(["sluice-operator", "crd"]).expect("parse");
        assert_eq!(a.command, Some(Command::Crd));
        let a = Args::try_parse_from([
            "sluice-operator",
            "run",
            "--all-namespaces",
            "--leader-election",
            "off",
            "--metrics-addr",
            "none",
        ])
        .expect("parse");
        assert!(a.all_namespaces);
        assert_eq!(a.leader_election, OnOff::Off);
        assert_eq!(a.metrics_addr().expect("addr"), None);
        assert!(Args::try_parse_from(["sluice-operator", "-A", "--namespace", "x"]).is_err());
    }

    #[test]
    fn watch_namespaces_are_a_list_exclusive_of_the_other_scopes() {
        let a =
            Args::try_parse_from(["sluice-operator", "--watch-namespaces", "a,b"]).expect("parse");
        assert_eq!(a.watch_namespaces, ["a", "b"]);
        for other in [&["-A"][..], &["--namespace", "x"][..]] {
            let mut argv = vec!["sluice-operator", "--watch-namespaces", "a"];
            argv.extend_from_slice(other);
            assert!(Args::try_parse_from(argv).is_err(), "{other:?}");
        }
    }

    #[test]
    fn allowed_image_prefixes_are_a_list() {
        let a = Args::try_parse_from(["sluice-operator"]).expect("parse");
        assert!(a.allowed_image_prefixes.is_empty());
        let a = Args::try_parse_from([
            "sluice-operator",
            "--allowed-image-prefixes",
            "ghcr.io/acme/,registry.local:5000/",
        ])
        .expect("parse");
        assert_eq!(
            a.allowed_image_prefixes,
            ["ghcr.io/acme/", "registry.local:5000/"]
        );
    }
}
