//! A throwaway kube-apiserver + etcd + kube-controller-manager (the envtest pattern of
//! controller-runtime): a real control plane with no node, for the operator's tests.
//!
//! Pods are created but stay `Pending` (no kubelet, no scheduler); everything else that
//! lives in the API server and the controller-manager works: CRDs, custom resources with
//! a status subresource, server-side apply, watches, Deployments → ReplicaSets → Pods,
//! StatefulSets, garbage collection by owner references, RBAC, service-account tokens.
//! Kubernetes is v1.20.2 (Debian bookworm's package), so CEL validation rules,
//! server-side field validation, policy/v1 PodDisruptionBudgets and batch/v1 CronJobs are
//! missing. The controller-manager re-reads discovery every 30 s: garbage collection of
//! objects of a CRD younger than that can take up to ~30 s.
//!
//! Binaries: `$SLUICE_KUBE_BIN` (a directory with `etcd`, `kube-apiserver`,
//! `kube-controller-manager`; `scripts/test` sets it), else the directory
//! `scripts/kube-binaries.sh` prints (cached after one ~5-minute build). `openssl` makes
//! the certificates.
//!
//! # Usage
//!
//! ```no_run
//! use k8s_openapi::api::core::v1::ConfigMap;
//! use kube::api::{Api, Patch, PatchParams};
//! use sluice_testkit::kube_env::KubeEnv;
//!
//! // In a test: #[tokio::test] async fn reconciles_something() -> anyhow::Result<()>
//! async fn reconciles_something() -> anyhow::Result<()> {
//!     // Per test, torn down on drop (5-10 s to start). `KubeEnv::shared_or_skip()` gives
//!     // one instance for the whole test binary instead (cleaned up at exit).
//!     let Some(env) = KubeEnv::start_or_skip().await? else {
//!         return Ok(()); // "SKIPPED: ..." was printed; set SLUICE_KUBE_REQUIRED=1 to fail
//!     };
//!     let ns = "demo";
//!     env.create_namespace(ns).await?; // waits for its default ServiceAccount + token
//!     let client = env.client().await?;
//!     let cms: Api<ConfigMap> = Api::namespaced(client, ns);
//!     let cm: ConfigMap = serde_json::from_value(serde_json::json!({
//!         "apiVersion": "v1", "kind": "ConfigMap",
//!         "metadata": { "name": "c" }, "data": { "k": "v" }
//!     }))?;
//!     cms.patch("c", &PatchParams::apply("my-test").force(), &Patch::Apply(&cm)).await?;
//!
//!     // A separate process (the operator binary, kubectl) gets the same cluster through
//!     // the kubeconfig file (admin credentials, embedded certificates):
//!     //   Command::new(bin).env("KUBECONFIG", env.kubeconfig_path())
//!     // On failure, `env.log_tail("kube-controller-manager")` (or "kube-apiserver",
//!     // "etcd") shows what the servers said.
//!     Ok(())
//! }
//! ```
//!
//! Cleanup: dropping a [`KubeEnv`] stops its servers (SIGTERM, then SIGKILL after a few
//! seconds) and removes its temporary directory, also while a test unwinds from a panic.
//! Should the test process die without running destructors (`std::process::exit`, a
//! signal, or the end of the process with [`KubeEnv::shared`]'s instance in a static), a
//! small watchdog shell process, in its own process group, notices that its stdin pipe
//! from the test process closed and does the same.
//!
//! The servers run in their own process groups (Ctrl-C on `cargo test` does not hit them
//! directly; the watchdog stops them) and log to files in the temporary directory.

use std::collections::VecDeque;
use std::ffi::OsString;
use std::fs::{self, File};
use std::io::{BufRead as _, BufReader, Write as _};
use std::net::{Ipv4Addr, TcpListener};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

use crate::bins::find_in_path;
use anyhow::{Context as _, Result, anyhow, bail};
use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use kube::api::{Api, ListParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};

/// The control-plane binaries a [`KubeEnv`] needs in its binary directory.
pub const REQUIRED_BINARIES: [&str; 3] = ["etcd", "kube-apiserver", "kube-controller-manager"];

/// Environment variable naming the directory that holds [`REQUIRED_BINARIES`].
pub const BIN_ENV: &str = "SLUICE_KUBE_BIN";

/// Environment variable that turns "binaries not available" from a skip into an error.
pub const REQUIRED_ENV: &str = "SLUICE_KUBE_REQUIRED";

/// The service CIDR the API server is given (the `kubernetes` Service gets 10.0.0.1).
pub const SERVICE_CLUSTER_IP_RANGE: &str = "10.0.0.0/24";

/// The service-account token issuer.
pub const SERVICE_ACCOUNT_ISSUER: &str = "https://kubernetes.default.svc";

/// Log names accepted by [`KubeEnv::log_tail`] and [`KubeEnv::log_path`].
pub const SERVERS: [&str; 3] = ["etcd", "kube-apiserver", "kube-controller-manager"];

const START_ATTEMPTS: usize = 3;
const APISERVER_READY_TIMEOUT: Duration = Duration::from_secs(90);
const CONTROLLERS_READY_TIMEOUT: Duration = Duration::from_secs(60);
const TERM_GRACE: Duration = Duration::from_secs(5);
const LOG_TAIL_LINES: usize = 40;

/// Kills the servers whose pids arrive on stdin and removes the root directory once stdin
/// reaches end-of-file, which happens when the test process closes it ([`Drop`]) or dies.
/// `first <pid>` lines name the API server and controller-manager, stopped first;
/// `last <pid>` names etcd, stopped once they are gone (a kube-apiserver whose etcd is
/// gone lingers in its shutdown). SIGTERM, then SIGKILL after 3 s. A pid is only
/// signalled while its command line still mentions the root directory (every server's
/// does), so a reused pid is never hit. Argument: `$1` the root directory.
const WATCHDOG_SCRIPT: &str = r#"trap '' HUP INT TERM PIPE
root="$1"; first=""; last=""
while read -r kind pid; do
  case "$kind" in first) first="$first $pid" ;; last) last="$last $pid" ;; esac
done
ours() { [ -r "/proc/$1/cmdline" ] && tr '\0' '\n' < "/proc/$1/cmdline" 2>/dev/null | grep -qF -- "$root"; }
stop() {
  for p in "$@"; do ours "$p" && kill -TERM "$p" 2>/dev/null; done
  i=0
  while [ "$i" -lt 30 ]; do
    left=0
    for p in "$@"; do ours "$p" && left=1; done
    [ "$left" = 0 ] && return
    sleep 0.1; i=$((i + 1))
  done
  for p in "$@"; do ours "$p" && kill -KILL "$p" 2>/dev/null; done
}
stop $first
stop $last
rm -rf "$root"
"#;

/// Why a [`KubeEnv`] cannot be started on this machine at all (as opposed to failing to
/// start): the binaries or `openssl` are missing. [`KubeEnv::start_or_skip`] skips on it.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct Unavailable(pub String);

/// One server process.
#[derive(Debug)]
struct Server {
    name: &'static str,
    child: Child,
}

#[derive(Debug)]
struct Watchdog {
    child: Child,
    stdin: Option<ChildStdin>,
}

#[derive(Debug, Clone, Copy)]
struct Ports {
    etcd_client: u16,
    etcd_peer: u16,
    apiserver: u16,
    controller_manager: u16,
}

/// A running throwaway control plane. See the module documentation.
#[derive(Debug)]
pub struct KubeEnv {
    root: PathBuf,
    bin: PathBuf,
    kubeconfig: PathBuf,
    server_url: String,
    ports: Ports,
    servers: Vec<Server>,
    watchdog: Option<Watchdog>,
    startup: Duration,
}

impl KubeEnv {
    /// Starts etcd, kube-apiserver and kube-controller-manager in a fresh temporary
    /// directory on free ports, and waits until the API server is ready (`/readyz`),
    /// namespace `default` exists and a namespace can be created (server-side dry run).
    /// About 5 s on an idle machine. The controller-manager's controllers start a few
    /// seconds later; [`KubeEnv::create_namespace`] waits for them.
    ///
    /// Fails if the binaries are not available; see [`KubeEnv::start_or_skip`].
    pub async fn start() -> Result<KubeEnv> {
        let bin = kube_bin_dir().await?;
        let mut last_err = None;
        for attempt in 1..=START_ATTEMPTS {
            let began = Instant::now();
            let bin = bin.clone();
            let mut env = tokio::task::spawn_blocking(move || KubeEnv::launch(bin))
                .await
                .context("the kube start-up task failed")??;
            match env.wait_ready().await {
                Ok(()) => {
                    env.startup = began.elapsed();
                    return Ok(env);
                }
                Err(e) => {
                    // Another process may have taken one of our ports in the meantime.
                    let port_clash = SERVERS
                        .iter()
                        .any(|s| env.log_tail_n(s, 200).contains("address already in use"));
                    let e = e.context(format!(
                        "starting the kube control plane in {} (attempt {attempt})",
                        env.root.display()
                    ));
                    drop(env);
                    if !port_clash {
                        return Err(e);
                    }
                    last_err = Some(e);
                }
            }
        }
        Err(last_err.unwrap_or_else(|| anyhow!("no start attempt was made")))
    }

    /// Like [`KubeEnv::start`], but when the binaries (or `openssl`) are not available
    /// and `SLUICE_KUBE_REQUIRED` is not set, prints a loud `SKIPPED: ...` line to the
    /// real stderr (not captured by the test harness) and returns `Ok(None)`.
    pub async fn start_or_skip() -> Result<Option<KubeEnv>> {
        match kube_bin_dir().await {
            Ok(_) => KubeEnv::start().await.map(Some),
            Err(e) => skip_or_fail(e),
        }
    }

    /// One control plane shared by all tests of the test binary, started on first use
    /// and stopped by its watchdog when the process exits. Tests sharing it must use
    /// namespaces (or names) of their own. Fails (every time) if it could not start.
    pub async fn shared() -> Result<&'static KubeEnv> {
        static SHARED: tokio::sync::OnceCell<std::result::Result<KubeEnv, String>> =
            tokio::sync::OnceCell::const_new();
        let env = SHARED
            .get_or_init(|| async { KubeEnv::start().await.map_err(|e| format!("{e:#}")) })
            .await;
        env.as_ref()
            .map_err(|e| anyhow!("the shared kube control plane could not start: {e}"))
    }

    /// [`KubeEnv::shared`] with the skip rule of [`KubeEnv::start_or_skip`].
    pub async fn shared_or_skip() -> Result<Option<&'static KubeEnv>> {
        match kube_bin_dir().await {
            Ok(_) => KubeEnv::shared().await.map(Some),
            Err(e) => skip_or_fail(e),
        }
    }

    /// The kubeconfig file (cluster `sluice-test`, user `admin` in group
    /// `system:masters`, certificates embedded). Use it with `KUBECONFIG=<path>` or
    /// `kubectl --kubeconfig <path>`.
    pub fn kubeconfig_path(&self) -> &Path {
        &self.kubeconfig
    }

    /// `https://127.0.0.1:<port>`.
    pub fn server_url(&self) -> &str {
        &self.server_url
    }

    /// A client with admin rights, built from [`KubeEnv::kubeconfig_path`]. It belongs to
    /// the tokio runtime it is created on: make one per test.
    pub async fn client(&self) -> Result<kube::Client> {
        client_from_kubeconfig(&self.kubeconfig).await
    }

    /// The temporary directory (certificates, kubeconfig, etcd data, logs); removed on
    /// cleanup.
    pub fn root_dir(&self) -> &Path {
        &self.root
    }

    /// The directory the binaries were taken from.
    pub fn bin_dir(&self) -> &Path {
        &self.bin
    }

    /// The CA certificate (PEM) that signed the serving and client certificates.
    pub fn ca_cert_path(&self) -> PathBuf {
        self.root.join("pki/ca.crt")
    }

    /// How long [`KubeEnv::start`] took.
    pub fn startup_time(&self) -> Duration {
        self.startup
    }

    /// The process ids of the servers, by name (see [`SERVERS`]).
    pub fn pids(&self) -> Vec<(&'static str, u32)> {
        self.servers
            .iter()
            .map(|s| (s.name, s.child.id()))
            .collect()
    }

    /// The log file of a server: `etcd`, `kube-apiserver` or `kube-controller-manager`.
    pub fn log_path(&self, name: &str) -> PathBuf {
        self.root.join(format!("{name}.log"))
    }

    /// The last 40 lines of a server's log (see [`KubeEnv::log_path`]), for failure
    /// messages.
    pub fn log_tail(&self, name: &str) -> String {
        self.log_tail_n(name, LOG_TAIL_LINES)
    }

    fn log_tail_n(&self, name: &str, n: usize) -> String {
        tail_lines(&self.log_path(name), n)
    }

    /// Creates namespace `name` and waits (up to 60 s) until its `default`
    /// ServiceAccount and that account's token exist, so that Pods can be created in it
    /// right away (Kubernetes 1.20's ServiceAccount admission rejects Pods before that).
    pub async fn create_namespace(&self, name: &str) -> Result<Namespace> {
        let client = self.client().await?;
        let namespaces: Api<Namespace> = Api::all(client.clone());
        let ns: Namespace = serde_json::from_value(serde_json::json!({
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": { "name": name },
        }))
        .with_context(|| format!("building namespace {name}"))?;
        let created = namespaces
            .create(&PostParams::default(), &ns)
            .await
            .with_context(|| format!("creating namespace {name}"))?;
        self.wait_default_service_account(&client, name, CONTROLLERS_READY_TIMEOUT)
            .await?;
        Ok(created)
    }

    /// Spawns the watchdog, writes certificates and kubeconfig, starts the servers
    /// (without waiting for them).
    fn launch(bin: PathBuf) -> Result<KubeEnv> {
        let root = tempfile::Builder::new()
            .prefix("sluice-kube-")
            .tempdir()
            .context("creating a temporary directory for the kube control plane")?
            .keep();
        let ports = match pick_ports() {
            Ok(p) => p,
            Err(e) => {
                let _ = fs::remove_dir_all(&root);
                return Err(e);
            }
        };
        let mut env = KubeEnv {
            kubeconfig: root.join("kubeconfig"),
            server_url: format!("https://127.0.0.1:{}", ports.apiserver),
            root,
            bin,
            ports,
            servers: Vec::new(),
            watchdog: None,
            startup: Duration::ZERO,
        };
        // From here on, dropping `env` (on any error below) cleans everything up.
        env.spawn_watchdog()?;
        env.make_pki()?;
        env.write_kubeconfig()?;
        env.start_etcd()?;
        env.start_apiserver()?;
        env.start_controller_manager()?;
        Ok(env)
    }

    fn spawn_watchdog(&mut self) -> Result<()> {
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(WATCHDOG_SCRIPT)
            .arg("sluice-kube-watchdog")
            .arg(&self.root)
            .current_dir("/")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            // Out of the test's process group, so Ctrl-C on `cargo test` does not stop
            // the watchdog before it has cleaned up.
            .process_group(0)
            .spawn()
            .context("spawning the kube watchdog (sh)")?;
        let stdin = child.stdin.take();
        self.watchdog = Some(Watchdog { child, stdin });
        Ok(())
    }

    fn pki(&self, file: &str) -> PathBuf {
        self.root.join("pki").join(file)
    }

    /// CA, API server serving certificate, admin client certificate, service-account
    /// key pair; all ECDSA P-256 (fast to generate).
    fn make_pki(&self) -> Result<()> {
        let dir = self.root.join("pki");
        fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let cnf = self.pki("openssl.cnf");
        fs::write(&cnf, OPENSSL_CNF).with_context(|| format!("writing {}", cnf.display()))?;
        let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"];

        // CA (self-signed).
        let mut cmd = openssl(&dir);
        cmd.args(["req", "-x509", "-new", "-nodes", "-days", "3650", "-sha256"])
            .args(ec)
            .args(["-keyout", "ca.key", "-out", "ca.crt"])
            .args(["-subj", "/CN=sluice-test-ca", "-config"])
            .arg(&cnf)
            .args(["-extensions", "v3_ca"]);
        run(cmd)?;

        // Leaf certificates signed by the CA.
        for (name, subject, ext) in [
            ("apiserver", "/CN=kube-apiserver", "v3_server"),
            ("admin", "/O=system:masters/CN=admin", "v3_client"),
        ] {
            let mut req = openssl(&dir);
            req.args(["req", "-new", "-nodes", "-sha256"])
                .args(ec)
                .arg("-keyout")
                .arg(format!("{name}.key"))
                .arg("-out")
                .arg(format!("{name}.csr"))
                .args(["-subj", subject, "-config"])
                .arg(&cnf);
            run(req)?;
            let mut sign = openssl(&dir);
            sign.args(["x509", "-req", "-sha256", "-days", "3650", "-in"])
                .arg(format!("{name}.csr"))
                .args(["-CA", "ca.crt", "-CAkey", "ca.key", "-set_serial"])
                .arg(format!("0x{}", uuid::Uuid::new_v4().simple()))
                .arg("-out")
                .arg(format!("{name}.crt"))
                .arg("-extfile")
                .arg(&cnf)
                .args(["-extensions", ext]);
            run(sign)?;
        }

        // Service-account token signing key pair.
        let mut key = openssl(&dir);
        key.args([
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
        ])
        .args(["-out", "sa.key"]);
        run(key)?;
        let mut public = openssl(&dir);
        public.args(["pkey", "-in", "sa.key", "-pubout", "-out", "sa.pub"]);
        run(public)?;
        Ok(())
    }

    fn write_kubeconfig(&self) -> Result<()> {
        let read = |file: &str| -> Result<String> {
            let path = self.pki(file);
            let bytes = fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
            Ok(base64(&bytes))
        };
        let yaml = format!(
            "apiVersion: v1
kind: Config
clusters:
- name: sluice-test
  cluster:
    server: {server}
    certificate-authority-data: {ca}
users:
- name: admin
  user:
    client-certificate-data: {cert}
    client-key-data: {key}
contexts:
- name: sluice-test
  context:
    cluster: sluice-test
    user: admin
    namespace: default
current-context: sluice-test
",
            server = self.server_url,
            ca = read("ca.crt")?,
            cert = read("admin.crt")?,
            key = read("admin.key")?,
        );
        fs::write(&self.kubeconfig, yaml)
            .with_context(|| format!("writing {}", self.kubeconfig.display()))
    }

    fn spawn_server(&mut self, name: &'static str, args: Vec<OsString>) -> Result<()> {
        let log_path = self.log_path(name);
        let log =
            File::create(&log_path).with_context(|| format!("creating {}", log_path.display()))?;
        let program = self.bin.join(name);
        let child = Command::new(&program)
            .args(&args)
            .current_dir(&self.root)
            .env_remove("KUBECONFIG")
            .stdin(Stdio::null())
            .stdout(log.try_clone().context("duplicating a log file handle")?)
            .stderr(log)
            .process_group(0)
            .spawn()
            .with_context(|| format!("spawning {}", program.display()))?;
        let pid = child.id();
        self.servers.push(Server { name, child });
        let order = if name == "etcd" { "last" } else { "first" };
        if let Some(stdin) = self.watchdog.as_mut().and_then(|w| w.stdin.as_mut()) {
            writeln!(stdin, "{order} {pid}")
                .and_then(|()| stdin.flush())
                .context("telling the kube watchdog about a server")?;
        }
        Ok(())
    }

    fn start_etcd(&mut self) -> Result<()> {
        let Ports {
            etcd_client,
            etcd_peer,
            ..
        } = self.ports;
        let client_url = format!("http://127.0.0.1:{etcd_client}");
        let peer_url = format!("http://127.0.0.1:{etcd_peer}");
        let data = self.root.join("etcd");
        let args = vec![
            "--name=sluice-test".into(),
            opt("--data-dir=", &data),
            format!("--listen-client-urls={client_url}").into(),
            format!("--advertise-client-urls={client_url}").into(),
            format!("--listen-peer-urls={peer_url}").into(),
            format!("--initial-advertise-peer-urls={peer_url}").into(),
            format!("--initial-cluster=sluice-test={peer_url}").into(),
            "--initial-cluster-state=new".into(),
            "--logger=zap".into(),
            "--log-outputs=stderr".into(),
            "--log-level=warn".into(),
        ];
        self.spawn_server("etcd", args)
    }

    fn start_apiserver(&mut self) -> Result<()> {
        let p = self.ports;
        let args = vec![
            format!("--etcd-servers=http://127.0.0.1:{}", p.etcd_client).into(),
            "--bind-address=127.0.0.1".into(),
            "--advertise-address=127.0.0.1".into(),
            format!("--secure-port={}", p.apiserver).into(),
            "--insecure-port=0".into(),
            opt("--cert-dir=", &self.root.join("apiserver-certs")),
            opt("--tls-cert-file=", &self.pki("apiserver.crt")),
            opt("--tls-private-key-file=", &self.pki("apiserver.key")),
            opt("--client-ca-file=", &self.pki("ca.crt")),
            opt("--service-account-key-file=", &self.pki("sa.pub")),
            opt("--service-account-signing-key-file=", &self.pki("sa.key")),
            format!("--service-account-issuer={SERVICE_ACCOUNT_ISSUER}").into(),
            "--authorization-mode=Node,RBAC".into(),
            format!("--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}").into(),
            "--allow-privileged=true".into(),
            // The `kubernetes` Service cannot point at a loopback address (and no Pod
            // runs to use it): do not try.
            "--endpoint-reconciler-type=none".into(),
            "--profiling=false".into(),
            "--v=1".into(),
        ];
        self.spawn_server("kube-apiserver", args)
    }

    fn start_controller_manager(&mut self) -> Result<()> {
        let p = self.ports;
        let args = vec![
            opt("--kubeconfig=", &self.kubeconfig),
            "--bind-address=127.0.0.1".into(),
            format!("--secure-port={}", p.controller_manager).into(),
            "--port=0".into(),
            opt("--cert-dir=", &self.root.join("controller-manager-certs")),
            "--leader-elect=false".into(),
            "--controllers=*".into(),
            "--use-service-account-credentials=true".into(),
            opt("--root-ca-file=", &self.pki("ca.crt")),
            opt("--service-account-private-key-file=", &self.pki("sa.key")),
            opt("--cluster-signing-cert-file=", &self.pki("ca.crt")),
            opt("--cluster-signing-key-file=", &self.pki("ca.key")),
            format!("--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}").into(),
            "--profiling=false".into(),
            "--v=1".into(),
        ];
        self.spawn_server("kube-controller-manager", args)
    }

    /// Fails with the server's log tail if a server has exited.
    fn check_servers(&mut self) -> Result<()> {
        for i in 0..self.servers.len() {
            let name = self.servers[i].name;
            if let Some(status) = self.servers[i]
                .child
                .try_wait()
                .with_context(|| format!("checking on {name}"))?
            {
                bail!(
                    "{name} exited during start-up ({status}); the end of its log {}:\n{}",
                    self.log_path(name).display(),
                    self.log_tail(name)
                );
            }
        }
        Ok(())
    }

    async fn wait_ready(&mut self) -> Result<()> {
        let client = self.client().await?;

        // 1. /readyz (etcd reachable, RBAC bootstrap roles, system namespaces, ...).
        let deadline = Instant::now() + APISERVER_READY_TIMEOUT;
        loop {
            self.check_servers()?;
            let request = kube::core::Request::new("/readyz")
                .list(&ListParams::default())
                .context("building the /readyz request")?;
            let last = match client.request_text(request).await {
                Ok(body) if body.trim() == "ok" => break,
                Ok(body) => body,
                Err(e) => e.to_string(),
            };
            if Instant::now() > deadline {
                bail!(
                    "kube-apiserver was not ready within {APISERVER_READY_TIMEOUT:?} (last /readyz answer: {last}); the end of its log:\n{}",
                    self.log_tail("kube-apiserver")
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }

        // 2. The `default` namespace exists and a namespace can be created (dry run:
        //    nothing is left behind). The controller-manager is not waited for: it comes
        //    up a few seconds later; `create_namespace` waits for what Pods need.
        let namespaces: Api<Namespace> = Api::all(client.clone());
        loop {
            self.check_servers()?;
            match namespaces.get_opt("default").await {
                Ok(Some(_)) => break,
                Ok(None) | Err(_) if Instant::now() < deadline => {}
                Ok(None) => bail!("namespace `default` did not appear"),
                Err(e) => return Err(e).context("reading namespace `default`"),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let probe: Namespace = serde_json::from_value(serde_json::json!({
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": { "name": "sluice-kube-env-probe" },
        }))
        .context("building the probe namespace")?;
        let dry_run = PostParams {
            dry_run: true,
            ..PostParams::default()
        };
        namespaces.create(&dry_run, &probe).await.with_context(|| {
            format!(
                "kube-apiserver is ready but creating a namespace (dry run) failed; the end of its log:\n{}",
                self.log_tail("kube-apiserver")
            )
        })?;
        self.check_servers()
    }

    async fn wait_default_service_account(
        &self,
        client: &kube::Client,
        namespace: &str,
        timeout: Duration,
    ) -> Result<()> {
        let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), namespace);
        let deadline = Instant::now() + timeout;
        loop {
            let last = match accounts.get_opt("default").await {
                Ok(Some(sa)) if sa.secrets.as_ref().is_some_and(|s| !s.is_empty()) => {
                    return Ok(());
                }
                Ok(Some(_)) => "the ServiceAccount has no token secret yet".to_string(),
                Ok(None) => "no ServiceAccount yet".to_string(),
                Err(e) => e.to_string(),
            };
            if Instant::now() > deadline {
                bail!(
                    "the controller-manager did not set up ServiceAccount {namespace}/default within {timeout:?} ({last}); the end of its log:\n{}",
                    self.log_tail("kube-controller-manager")
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// SIGTERM, then SIGKILL after [`TERM_GRACE`]: the API server and controller-manager
    /// first, etcd once they are gone (a kube-apiserver without its etcd lingers in its
    /// shutdown).
    fn stop_servers(&mut self) {
        let (etcd, others): (Vec<Server>, Vec<Server>) =
            self.servers.drain(..).partition(|s| s.name == "etcd");
        for mut group in [others, etcd] {
            for server in &group {
                crate::procs::send_signal(server.child.id(), libc::SIGTERM);
            }
            let deadline = Instant::now() + TERM_GRACE;
            for server in &mut group {
                loop {
                    match server.child.try_wait() {
                        Ok(Some(_)) | Err(_) => break,
                        Ok(None) if Instant::now() > deadline => {
                            let _ = server.child.kill();
                            let _ = server.child.wait();
                            break;
                        }
                        Ok(None) => std::thread::sleep(Duration::from_millis(10)),
                    }
                }
            }
        }
    }
}

impl Drop for KubeEnv {
    fn drop(&mut self) {
        self.stop_servers();
        // Closing the pipe tells the watchdog to clean up (it finds no server left and
        // removes the directory).
        if let Some(mut watchdog) = self.watchdog.take() {
            drop(watchdog.stdin.take());
            let deadline = Instant::now() + Duration::from_secs(20);
            while Instant::now() < deadline {
                match watchdog.child.try_wait() {
                    Ok(Some(_)) | Err(_) => break,
                    Ok(None) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        }
        // Fallback, should the watchdog have died or hung.
        if self.root.exists() {
            let _ = fs::remove_dir_all(&self.root);
        }
    }
}

/// Builds a client from a kubeconfig file (its current context).
pub async fn client_from_kubeconfig(path: &Path) -> Result<kube::Client> {
    let kubeconfig = Kubeconfig::read_from(path)
        .with_context(|| format!("reading the kubeconfig {}", path.display()))?;
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .with_context(|| format!("loading the kubeconfig {}", path.display()))?;
    kube::Client::try_from(config).context("building a kube client")
}

/// Whether `SLUICE_KUBE_REQUIRED` asks for the kube tests to fail rather than skip.
pub fn kube_required() -> bool {
    std::env::var(REQUIRED_ENV).is_ok_and(|v| !v.is_empty() && v != "0")
}

fn skip_or_fail<T>(e: anyhow::Error) -> Result<Option<T>> {
    if e.downcast_ref::<Unavailable>().is_none() || kube_required() {
        return Err(e);
    }
    let test = std::thread::current()
        .name()
        .unwrap_or("<unnamed test>")
        .to_string();
    // Straight to the process's stderr: the test harness does not capture this.
    let _ = writeln!(
        std::io::stderr(),
        "\n*** SKIPPED: {test}: no kube control plane: {e:#}\n*** (set {BIN_ENV} to a directory with {}, or run scripts/kube-binaries.sh; {REQUIRED_ENV}=1 turns this skip into a failure)\n",
        REQUIRED_BINARIES.join(", ")
    );
    Ok(None)
}

/// The directory holding [`REQUIRED_BINARIES`]: `$SLUICE_KUBE_BIN`, else the last line
/// `scripts/kube-binaries.sh` prints (run at most once per process; it builds the
/// binaries when they are not cached yet, which takes minutes, and shows its progress on
/// stderr). Errors that mean "not available here" are [`Unavailable`]; a
/// `SLUICE_KUBE_BIN` that lacks a binary is a plain error.
pub async fn kube_bin_dir() -> Result<PathBuf> {
    static DIR: tokio::sync::OnceCell<std::result::Result<PathBuf, (bool, String)>> =
        tokio::sync::OnceCell::const_new();
    let found = DIR
        .get_or_init(|| async {
            match tokio::task::spawn_blocking(find_kube_bin_dir).await {
                Ok(Ok(dir)) => Ok(dir),
                Ok(Err(e)) => Err((e.downcast_ref::<Unavailable>().is_some(), format!("{e:#}"))),
                Err(e) => Err((false, format!("the binary lookup task failed: {e}"))),
            }
        })
        .await;
    match found {
        Ok(dir) => Ok(dir.clone()),
        Err((true, e)) => Err(Unavailable(e.clone()).into()),
        Err((false, e)) => Err(anyhow!("{e}")),
    }
}

fn missing_binaries(dir: &Path) -> Vec<&'static str> {
    REQUIRED_BINARIES
        .iter()
        .copied()
        .filter(|b| !dir.join(b).is_file())
        .collect()
}

fn find_kube_bin_dir() -> Result<PathBuf> {
    if find_in_path("openssl").is_none() {
        return Err(Unavailable(
            "openssl is not on PATH (it makes the test certificates): apt-get install -y openssl"
                .into(),
        )
        .into());
    }
    if let Some(dir) = std::env::var_os(BIN_ENV).filter(|d| !d.is_empty()) {
        let dir = PathBuf::from(dir);
        let missing = missing_binaries(&dir);
        if !missing.is_empty() {
            bail!(
                "{BIN_ENV}={} lacks {} (run scripts/kube-binaries.sh and point {BIN_ENV} at the directory it prints)",
                dir.display(),
                missing.join(", ")
            );
        }
        return Ok(dir);
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/kube-binaries.sh");
    if !script.is_file() {
        return Err(Unavailable(format!(
            "{BIN_ENV} is not set and {} does not exist",
            script.display()
        ))
        .into());
    }
    let out = Command::new(&script)
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| Unavailable(format!("running {}: {e}", script.display())))?;
    if !out.status.success() {
        return Err(Unavailable(format!(
            "{BIN_ENV} is not set and {} failed ({}; its messages are above)",
            script.display(),
            out.status
        ))
        .into());
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let Some(last) = stdout.lines().map(str::trim).rfind(|l| !l.is_empty()) else {
        return Err(Unavailable(format!("{} printed no directory", script.display())).into());
    };
    let dir = PathBuf::from(last);
    let missing = missing_binaries(&dir);
    if !missing.is_empty() {
        return Err(Unavailable(format!(
            "{} printed {}, which lacks {}",
            script.display(),
            dir.display(),
            missing.join(", ")
        ))
        .into());
    }
    Ok(dir)
}

/// Four distinct ports that were free a moment ago (all bound at once, then released).
fn pick_ports() -> Result<Ports> {
    let listeners = (0..4)
        .map(|_| TcpListener::bind((Ipv4Addr::LOCALHOST, 0)))
        .collect::<std::io::Result<Vec<_>>>()
        .context("binding 127.0.0.1:0 to find free ports")?;
    let ports = listeners
        .iter()
        .map(|l| l.local_addr().map(|a| a.port()))
        .collect::<std::io::Result<Vec<_>>>()
        .context("reading a bound address")?;
    Ok(Ports {
        etcd_client: ports[0],
        etcd_peer: ports[1],
        apiserver: ports[2],
        controller_manager: ports[3],
    })
}

fn opt(flag: &str, path: &Path) -> OsString {
    let mut s = OsString::from(flag);
    s.push(path);
    s
}

fn openssl(dir: &Path) -> Command {
    let mut cmd = Command::new("openssl");
    cmd.current_dir(dir).stdin(Stdio::null());
    cmd
}

fn run(mut cmd: Command) -> Result<()> {
    let described = std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|a| a.to_string_lossy())
        .collect::<Vec<_>>()
        .join(" ");
    let out = cmd
        .output()
        .with_context(|| format!("running `{described}`"))?;
    if !out.status.success() {
        bail!(
            "`{described}` failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

fn tail_lines(path: &Path, n: usize) -> String {
    let Ok(file) = File::open(path) else {
        return format!("(no log at {})", path.display());
    };
    let mut last = VecDeque::with_capacity(n);
    for line in BufReader::new(file)
        .lines()
        .map_while(std::result::Result::ok)
    {
        if last.len() == n {
            last.pop_front();
        }
        last.push_back(line);
    }
    Vec::from(last).join("\n")
}

/// Standard base64 with padding (kubeconfig `*-data` fields).
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for (i, shift) in [18u32, 12, 6, 0].into_iter().enumerate() {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[((n >> shift) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Extensions for the test PKI (the `req` defaults are unused: subjects are given).
const OPENSSL_CNF: &str = "[req]
distinguished_name = dn
prompt = no
[dn]
CN = unused
[v3_ca]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign, digitalSignature
subjectKeyIdentifier = hash
[v3_server]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth
subjectAltName = IP:127.0.0.1, DNS:localhost, DNS:kubernetes, DNS:kubernetes.default, DNS:kubernetes.default.svc, DNS:kubernetes.default.svc.cluster.local, IP:10.0.0.1
authorityKeyIdentifier = keyid
[v3_client]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = clientAuth
authorityKeyIdentifier = keyid
";

#[cfg(test)]
mod tests {
    use super::base64;

    #[test]
    fn base64_matches_rfc4648_vectors() {
        for (input, expected) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(input.as_bytes()), expected, "{input:?}");
        }
    }
}
