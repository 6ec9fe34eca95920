//! The operator against a real kube-apiserver 1.20 + etcd + kube-controller-manager
//! (`sluice_testkit::kube_env`, the envtest pattern): the CRD from `crd::crd()` is
//! installed, `sluice_operator::run` runs in-process (one per test, watching that test's
//! namespace only), and the tests drive it the way a user and the cluster would.
//!
//! All tests share one control plane (started once per test binary); each uses a
//! namespace of its own. There is no kubelet and no scheduler: pods stay `Pending`, so
//! where readiness matters the test patches the pods' status (status subresource) the way
//! the kubelet would, and the real StatefulSet / ReplicaSet / Deployment controllers
//! derive their own status from that.
//!
//! Skipped with a loud `SKIPPED:` line when the control-plane binaries are not available
//! and `SLUICE_KUBE_REQUIRED` is unset (see `KubeEnv::shared_or_skip`).
//!
//! One test binary (linking a kube test binary is expensive), one module per topic:
//!
//! * `harness`: the operator in-process, the CRDs, polling;
//! * `fixtures`: pipelines, waits and checks the tests share;
//! * `children`: the children and their specs, self-healing, spec changes;
//! * `status`: conditions, the scale subresource, suspend;
//! * `credentials`: the Secret, TLS, CloudNativePG;
//! * `spec`: what the schema and the operator's checks refuse;
//! * `pods`: pod templates, the disruption budget, NetworkPolicies;
//! * `lifecycle`: the finalizer, deletion and garbage collection;
//! * `namespaces`: `--watch-namespaces`;
//! * `rbac`: the namespaced mode with only the chart's Roles (`chart` renders it,
//!   `impersonate` runs the operator as its ServiceAccount);
//! * `monitoring`: the workers' figures as the Degraded reason, the PodMonitor.

mod chart;
mod children;
mod credentials;
mod fixtures;
mod harness;
mod impersonate;
mod lifecycle;
mod monitoring;
mod namespaces;
mod pods;
mod rbac;
mod spec;
mod status;
