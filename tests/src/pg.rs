//! A throwaway PostgreSQL cluster for tests.
//!
//! [`PgCluster::start`] runs `initdb` into a fresh temporary directory and starts a server
//! listening on `127.0.0.1` (a free port) and on a unix socket in that directory. The
//! cluster is always cleaned up — server stopped, directory removed:
//!
//! * when the [`PgCluster`] is dropped (also while a test unwinds from a panic), and
//! * when the test process dies without running destructors (`std::process::exit`, a
//!   signal, or simply the end of the process while the cluster sits in a `static`, as
//!   [`shared`]'s does): every cluster has a small reaper process, in its own process
//!   group, that waits for the end of a pipe held by the test process and then stops the
//!   server and removes the directory.
//!
//! Use [`shared`] for tests that only need a database of their own
//! ([`PgCluster::create_database`]); start a private cluster for tests that stop,
//! restart or crash the server.
//!
//! The server binaries are found via `PG_BIN`, else `pg_config --bindir`, else the highest
//! `/usr/lib/postgresql/*/bin`. `initdb` refuses to run as root, so when the tests run as
//! root the server runs as the `postgres` user (via `runuser`).

use std::collections::VecDeque;
use std::ffi::OsStr;
use std::fmt::Write as _;
use std::fs;
use std::io::{self, BufRead as _, BufReader, Write as _};
use std::net::{Ipv4Addr, TcpListener};
use std::os::unix::fs::{MetadataExt as _, chown};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::bins::find_in_path;
use crate::procs::send_signal;
use thiserror::Error;
use tokio_postgres::{Client, NoTls};

/// The superuser every test cluster is created with (trust authentication, no password).
pub const SUPERUSER: &str = "postgres";

/// The address the server listens on.
pub const HOST: &str = "127.0.0.1";

/// How long `pg_ctl` may wait for the server to start or stop.
const PG_CTL_TIMEOUT_SECS: &str = "120";

/// How many free ports to try before giving up when another process grabs ours.
const PORT_ATTEMPTS: usize = 8;

/// Stops the server and removes the directory once its stdin reaches end-of-file, which
/// happens when the test process closes it ([`Drop`]) or dies.
/// Arguments: `$1` root directory, `$2` data directory, `$3...` the `pg_ctl` command.
const REAPER_SCRIPT: &str = r#"trap '' HUP INT TERM PIPE
root="$1"; data="$2"; shift 2
while read -r _line; do :; done
"$@" stop -D "$data" -m immediate -w -t 60 >/dev/null 2>&1
rm -rf "$root"
"#;

/// Result type of this module.
pub type Result<T, E = PgError> = std::result::Result<T, E>;

/// Why the throwaway cluster could not be set up or used.
#[derive(Debug, Error)]
pub enum PgError {
    #[error(
        "PostgreSQL server binaries not found: install them with `apt-get install -y postgresql` or set PG_BIN (looked in: {searched})"
    )]
    BinariesNotFound { searched: String },
    #[error("PG_BIN={dir} does not hold the PostgreSQL server binaries (initdb, pg_ctl, postgres)")]
    BadPgBin { dir: PathBuf },
    #[error(
        "the tests run as root and initdb refuses root, but there is no `postgres` user to run the server as: {detail} (create it, e.g. `apt-get install -y postgresql` does, or run the tests as a non-root user)"
    )]
    NoPostgresUser { detail: String },
    #[error(
        "the tests run as root, so the server must run as `postgres`, but neither `runuser` nor `setpriv` is on PATH"
    )]
    NoRunAs,
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: io::Error,
    },
    #[error("`{command}` failed ({status})\n{output}{log_tail}")]
    Command {
        command: String,
        status: String,
        output: String,
        /// The end of the server log, with a heading, or empty.
        log_tail: String,
    },
    #[error("no free TCP port to listen on after {PORT_ATTEMPTS} attempts; last failure: {last}")]
    NoFreePort { last: Box<PgError> },
    #[error("connecting to {target}: {source}")]
    Connect {
        target: String,
        #[source]
        source: tokio_postgres::Error,
    },
    #[error("{what}: {source}")]
    Sql {
        what: String,
        #[source]
        source: tokio_postgres::Error,
    },
}

fn io_err(what: impl Into<String>) -> impl FnOnce(io::Error) -> PgError {
    let what = what.into();
    move |source| PgError::Io { what, source }
}

/// Server settings for a test cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgOptions {
    /// `fsync`. On by default: crash tests rely on committed data being on disk. Turn it
    /// off only for tests that measure nothing about durability.
    pub fsync: bool,
    /// Extra `postgresql.conf` settings, applied last (they override everything else,
    /// including `fsync`). Values are quoted for you: `("work_mem", "64MB")`.
    pub settings: Vec<(String, String)>,
}

impl Default for PgOptions {
    fn default() -> Self {
        PgOptions {
            fsync: true,
            settings: Vec::new(),
        }
    }
}

impl PgOptions {
    /// Speed over durability: `fsync`, `synchronous_commit` and `full_page_writes` off.
    /// Data survives a server crash only by luck; never use it for durability tests.
    pub fn fast() -> Self {
        PgOptions {
            fsync: false,
            settings: Vec::new(),
        }
        .setting("synchronous_commit", "off")
        .setting("full_page_writes", "off")
    }

    /// Adds one `postgresql.conf` setting.
    pub fn setting(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.settings.push((name.into(), value.into()));
        self
    }
}

/// Whom the server processes run as.
#[derive(Debug, Clone)]
enum RunAs {
    /// The current (non-root) user.
    Current,
    /// The `postgres` user, the tests running as root.
    User {
        name: String,
        uid: u32,
        gid: u32,
        /// `runuser -u postgres --` or `setpriv ... --`.
        prefix: Vec<String>,
    },
}

impl RunAs {
    fn command(&self, program: &Path) -> Command {
        match self {
            RunAs::User { prefix, .. } if !prefix.is_empty() => {
                let mut cmd = Command::new(&prefix[0]);
                cmd.args(&prefix[1..]).arg(program);
                cmd
            }
            _ => Command::new(program),
        }
    }

    fn prefix(&self) -> Vec<String> {
        match self {
            RunAs::Current => Vec::new(),
            RunAs::User { prefix, .. } => prefix.clone(),
        }
    }

    fn chown(&self, path: &Path) -> Result<()> {
        if let RunAs::User { uid, gid, name, .. } = self {
            chown(path, Some(*uid), Some(*gid))
                .map_err(io_err(format!("chown {} to {name}", path.display())))?;
        }
        Ok(())
    }

    /// Decides from the owner of a directory the test process just created.
    fn detect(fresh_dir: &Path) -> Result<RunAs> {
        let meta =
            fs::metadata(fresh_dir).map_err(io_err(format!("stat {}", fresh_dir.display())))?;
        if meta.uid() != 0 {
            return Ok(RunAs::Current);
        }
        let (uid, gid) = lookup_user(SUPERUSER)?;
        let prefix = if let Some(runuser) = find_in_path("runuser") {
            vec![
                runuser.display().to_string(),
                "-u".into(),
                SUPERUSER.into(),
                "--".into(),
            ]
        } else if let Some(setpriv) = find_in_path("setpriv") {
            vec![
                setpriv.display().to_string(),
                format!("--reuid={uid}"),
                format!("--regid={gid}"),
                "--clear-groups".into(),
                "--".into(),
            ]
        } else {
            return Err(PgError::NoRunAs);
        };
        Ok(RunAs::User {
            name: SUPERUSER.into(),
            uid,
            gid,
            prefix,
        })
    }
}

/// Looks a user's uid and gid up with `getent passwd`.
fn lookup_user(name: &str) -> Result<(u32, u32)> {
    let out = Command::new("getent")
        .args(["passwd", name])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| PgError::NoPostgresUser {
            detail: format!("could not run `getent passwd {name}`: {e}"),
        })?;
    if !out.status.success() {
        return Err(PgError::NoPostgresUser {
            detail: format!("`getent passwd {name}` found nothing ({})", out.status),
        });
    }
    let line = String::from_utf8_lossy(&out.stdout);
    let fields: Vec<&str> = line.trim().split(':').collect();
    match (
        fields.get(2).and_then(|f| f.parse().ok()),
        fields.get(3).and_then(|f| f.parse().ok()),
    ) {
        (Some(uid), Some(gid)) => Ok((uid, gid)),
        _ => Err(PgError::NoPostgresUser {
            detail: format!("unexpected `getent passwd {name}` output: {line:?}"),
        }),
    }
}

fn has_server_binaries(dir: &Path) -> bool {
    ["initdb", "pg_ctl", "postgres"]
        .iter()
        .all(|b| dir.join(b).is_file())
}

/// Finds the directory holding `initdb`, `pg_ctl` and `postgres`.
pub fn find_pg_bin() -> Result<PathBuf> {
    let mut searched = Vec::new();

    if let Some(dir) = std::env::var_os("PG_BIN") {
        let dir = PathBuf::from(dir);
        return if has_server_binaries(&dir) {
            Ok(dir)
        } else {
            Err(PgError::BadPgBin { dir })
        };
    }
    searched.push("$PG_BIN (unset)".to_string());

    match Command::new("pg_config")
        .arg("--bindir")
        .stdin(Stdio::null())
        .output()
    {
        Ok(out) if out.status.success() => {
            let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
            if has_server_binaries(&dir) {
                return Ok(dir);
            }
            searched.push(format!("`pg_config --bindir` = {}", dir.display()));
        }
        Ok(out) => searched.push(format!("`pg_config --bindir` failed ({})", out.status)),
        Err(_) => searched.push("`pg_config` (not on PATH)".to_string()),
    }

    let mut versioned: Vec<(u32, PathBuf)> = fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = entry.path().join("bin");
            has_server_binaries(&bin).then_some((version, bin))
        })
        .collect();
    versioned.sort();
    if let Some((_, dir)) = versioned.pop() {
        return Ok(dir);
    }
    searched.push("/usr/lib/postgresql/*/bin".to_string());

    if let Some(initdb) = find_in_path("initdb")
        && let Some(dir) = fs::canonicalize(&initdb)
            .ok()
            .and_then(|p| p.parent().map(Path::to_path_buf))
        && has_server_binaries(&dir)
    {
        return Ok(dir);
    }
    searched.push("initdb on PATH".to_string());

    Err(PgError::BinariesNotFound {
        searched: searched.join(", "),
    })
}

/// The reaper process and the pipe whose closing tells it to clean up.
#[derive(Debug)]
struct Reaper {
    child: Child,
    stdin: Option<ChildStdin>,
}

/// A running throwaway PostgreSQL cluster. See the module documentation.
#[derive(Debug)]
pub struct PgCluster {
    root: PathBuf,
    data: PathBuf,
    log: PathBuf,
    bin: PathBuf,
    port: u16,
    run_as: RunAs,
    options: PgOptions,
    reaper: Option<Reaper>,
    /// Set while [`PgCluster::freeze`] holds the server stopped, so that dropping the
    /// cluster thaws it first (a stopped postmaster would not act on `pg_ctl stop`).
    frozen: AtomicBool,
}

impl PgCluster {
    /// Starts a cluster with the default options (`fsync` on).
    pub fn start() -> Result<PgCluster> {
        PgCluster::start_with(PgOptions::default())
    }

    /// Starts a cluster with the given options. Blocks for about a second (initdb and
    /// server start-up).
    pub fn start_with(options: PgOptions) -> Result<PgCluster> {
        let bin = find_pg_bin()?;
        let root = tempfile::Builder::new()
            .prefix("sluice-pg-")
            .tempdir()
            .map_err(io_err("creating a temporary directory for PostgreSQL"))?
            .keep();
        let run_as = match RunAs::detect(&root) {
            Ok(run_as) => run_as,
            Err(e) => {
                let _ = fs::remove_dir_all(&root);
                return Err(e);
            }
        };
        let mut cluster = PgCluster {
            data: root.join("data"),
            log: root.join("postgres.log"),
            root,
            bin,
            port: 0,
            run_as,
            options,
            reaper: None,
            frozen: AtomicBool::new(false),
        };
        // From here on, dropping `cluster` (on any error below) cleans everything up.
        cluster.spawn_reaper()?;
        cluster.run_as.chown(&cluster.root)?;
        cluster.initdb()?;
        cluster.start_on_free_port()?;
        Ok(cluster)
    }

    fn spawn_reaper(&mut self) -> Result<()> {
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg(REAPER_SCRIPT)
            .arg("sluice-pg-reaper")
            .arg(&self.root)
            .arg(&self.data)
            .args(self.run_as.prefix())
            .arg(self.bin.join("pg_ctl"))
            .current_dir("/")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            // Out of the test's process group, so Ctrl-C on `cargo test` does not stop
            // the reaper before it has cleaned up.
            .process_group(0);
        let mut child = cmd
            .spawn()
            .map_err(io_err("spawning the PostgreSQL reaper (sh)"))?;
        let stdin = child.stdin.take();
        self.reaper = Some(Reaper { child, stdin });
        Ok(())
    }

    fn initdb(&self) -> Result<()> {
        let mut cmd = self.run_as.command(&self.bin.join("initdb"));
        cmd.arg("-D")
            .arg(&self.data)
            .args([
                "-U",
                SUPERUSER,
                "--auth=trust",
                "--encoding=UTF8",
                "--no-locale",
                // Only initdb's own final sync; the server keeps fsync on by default.
                "--no-sync",
            ])
            .current_dir(&self.root);
        self.run(cmd, false)
    }

    /// Writes the test settings, included at the end of `postgresql.conf`.
    fn write_config(&self) -> Result<()> {
        let mut conf = String::from("# Written by sluice_testkit::pg.\n");
        let mut settings: Vec<(String, String)> = vec![
            ("listen_addresses".into(), HOST.into()),
            ("port".into(), self.port.to_string()),
            (
                "unix_socket_directories".into(),
                self.root.display().to_string(),
            ),
            ("max_connections".into(), "200".into()),
            ("shared_buffers".into(), "128MB".into()),
            (
                "fsync".into(),
                if self.options.fsync { "on" } else { "off" }.into(),
            ),
            ("timezone".into(), "UTC".into()),
            ("logging_collector".into(), "off".into()),
            ("log_line_prefix".into(), "%m [%p] %q%u@%d ".into()),
            ("log_min_duration_statement".into(), "-1".into()),
        ];
        settings.extend(self.options.settings.iter().cloned());
        for (name, value) in &settings {
            let _ = writeln!(conf, "{name} = '{}'", value.replace('\'', "''"));
        }
        let conf_path = self.data.join("sluice_test.conf");
        fs::write(&conf_path, conf).map_err(io_err(format!("writing {}", conf_path.display())))?;
        self.run_as.chown(&conf_path)?;

        let main_conf = self.data.join("postgresql.conf");
        let text = fs::read_to_string(&main_conf)
            .map_err(io_err(format!("reading {}", main_conf.display())))?;
        let include = "include 'sluice_test.conf'";
        if !text.contains(include) {
            fs::OpenOptions::new()
                .append(true)
                .open(&main_conf)
                .and_then(|mut f| writeln!(f, "\n{include}"))
                .map_err(io_err(format!("appending to {}", main_conf.display())))?;
        }
        Ok(())
    }

    fn start_on_free_port(&mut self) -> Result<()> {
        let mut last = None;
        for _ in 0..PORT_ATTEMPTS {
            self.port = free_port()?;
            self.write_config()?;
            match self.pg_ctl_start() {
                Ok(()) => return Ok(()),
                Err(e) if self.port_was_taken() => last = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(PgError::NoFreePort {
            last: Box::new(last.unwrap_or_else(|| PgError::Io {
                what: "picking a port".into(),
                source: io::Error::other("no attempt made"),
            })),
        })
    }

    fn port_was_taken(&self) -> bool {
        let tail = self.log_tail(20);
        tail.contains("Address already in use") || tail.contains("could not bind")
    }

    fn pg_ctl(&self) -> Command {
        let mut cmd = self.run_as.command(&self.bin.join("pg_ctl"));
        cmd.arg("-D").arg(&self.data).current_dir(&self.root);
        cmd
    }

    fn pg_ctl_start(&self) -> Result<()> {
        let mut cmd = self.pg_ctl();
        cmd.args(["start", "-w", "-s", "-t", PG_CTL_TIMEOUT_SECS, "-l"])
            .arg(&self.log);
        self.run(cmd, true)
    }

    /// Runs a command to completion; on failure the error shows its output and, when
    /// `with_log`, the end of the server log.
    fn run(&self, mut cmd: Command, with_log: bool) -> Result<()> {
        let command = describe(&cmd);
        let out = cmd
            .stdin(Stdio::null())
            .output()
            .map_err(io_err(format!("running `{command}`")))?;
        if out.status.success() {
            return Ok(());
        }
        let mut output = String::new();
        for stream in [&out.stdout, &out.stderr] {
            let text = String::from_utf8_lossy(stream);
            if !text.trim().is_empty() {
                output.push_str(text.trim_end());
                output.push('\n');
            }
        }
        let log_tail = if with_log {
            format!(
                "--- last lines of {} ---\n{}",
                self.log.display(),
                self.log_tail(30)
            )
        } else {
            String::new()
        };
        Err(PgError::Command {
            command,
            status: out.status.to_string(),
            output,
            log_tail,
        })
    }

    /// The last `lines` lines of the server log (empty if there is none yet).
    pub fn log_tail(&self, lines: usize) -> String {
        let Ok(file) = fs::File::open(&self.log) else {
            return String::new();
        };
        let mut tail = VecDeque::with_capacity(lines + 1);
        for line in BufReader::new(file).lines().map_while(|l| l.ok()) {
            tail.push_back(line);
            if tail.len() > lines {
                tail.pop_front();
            }
        }
        tail.into_iter().fold(String::new(), |mut acc, l| {
            acc.push_str(&l);
            acc.push('\n');
            acc
        })
    }

    /// TCP port the server listens on (on [`HOST`]); stays the same across restarts.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Address the server listens on: `127.0.0.1`.
    pub fn host(&self) -> &'static str {
        HOST
    }

    /// The superuser to connect as (`postgres`, no password).
    pub fn user(&self) -> &'static str {
        SUPERUSER
    }

    /// Directory holding the server's unix socket (`.s.PGSQL.<port>`).
    pub fn socket_dir(&self) -> &Path {
        &self.root
    }

    /// The temporary directory holding everything (data, socket, log); removed on cleanup.
    pub fn root_dir(&self) -> &Path {
        &self.root
    }

    /// The cluster's data directory (`PGDATA`).
    pub fn data_dir(&self) -> &Path {
        &self.data
    }

    /// The server log file.
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// Directory of the PostgreSQL server binaries in use.
    pub fn pg_bin(&self) -> &Path {
        &self.bin
    }

    /// The options the cluster was started with.
    pub fn options(&self) -> &PgOptions {
        &self.options
    }

    /// URL for database `db`: `postgres://postgres@127.0.0.1:<port>/<db>`.
    pub fn url_for(&self, db: &str) -> String {
        format!("postgres://{SUPERUSER}@{HOST}:{}/{db}", self.port)
    }

    /// Key-value connection string for database `db`:
    /// `host=127.0.0.1 port=<port> user=postgres dbname=<db>`.
    pub fn conn_string_for(&self, db: &str) -> String {
        format!(
            "host={HOST} port={} user={SUPERUSER} dbname='{}'",
            self.port,
            db.replace('\\', "\\\\").replace('\'', "\\'")
        )
    }

    /// Connects to database `db`; the connection task is spawned on the current tokio
    /// runtime (so the client works only within it).
    pub async fn connect(&self, db: &str) -> Result<Client> {
        connect(&self.conn_string_for(db)).await
    }

    /// Creates a fresh, uniquely named database (named after the current thread, which
    /// libtest names after the test, plus a random suffix).
    pub async fn create_database(&self) -> Result<TestDb> {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let hint: String = std::thread::current()
            .name()
            .unwrap_or("test")
            .rsplit("::")
            .next()
            .unwrap_or("test")
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    c.to_ascii_lowercase()
                } else {
                    '_'
                }
            })
            .take(32)
            .collect();
        let suffix = uuid::Uuid::new_v4().simple().to_string();
        let name = format!(
            "t_{hint}_{}_{}",
            COUNTER.fetch_add(1, Ordering::Relaxed),
            &suffix[..8]
        );

        let admin = self.connect("postgres").await?;
        admin
            .batch_execute(&format!("CREATE DATABASE \"{name}\""))
            .await
            .map_err(|source| PgError::Sql {
                what: format!("CREATE DATABASE {name}"),
                source,
            })?;
        Ok(TestDb {
            url: self.url_for(&name),
            conn_string: self.conn_string_for(&name),
            name,
            port: self.port,
        })
    }

    /// Whether the server is running (`pg_ctl status`).
    pub fn is_running(&self) -> bool {
        self.pg_ctl()
            .arg("status")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    /// Simulates a crash and recovery: `pg_ctl restart -m immediate` (no checkpoint, all
    /// sessions killed, crash recovery on start). Blocks until the server accepts
    /// connections again. Existing clients are disconnected. Never do this to the
    /// [`shared`] cluster: other tests use it concurrently.
    pub fn restart_immediate(&self) -> Result<()> {
        let mut cmd = self.pg_ctl();
        cmd.args([
            "restart",
            "-m",
            "immediate",
            "-w",
            "-s",
            "-t",
            PG_CTL_TIMEOUT_SECS,
            "-l",
        ])
        .arg(&self.log);
        self.run(cmd, true)
    }

    /// Stops the server cleanly (`pg_ctl stop -m fast`), keeping the data directory;
    /// [`PgCluster::start_again`] brings it back on the same port.
    pub fn stop(&self) -> Result<()> {
        self.stop_mode("fast")
    }

    /// Kills the server like a crash (`pg_ctl stop -m immediate`), keeping the data
    /// directory; [`PgCluster::start_again`] runs crash recovery.
    pub fn stop_immediate(&self) -> Result<()> {
        self.stop_mode("immediate")
    }

    fn stop_mode(&self, mode: &str) -> Result<()> {
        let mut cmd = self.pg_ctl();
        cmd.args(["stop", "-m", mode, "-w", "-s", "-t", PG_CTL_TIMEOUT_SECS]);
        self.run(cmd, true)
    }

    /// Starts a stopped server again, on the same port.
    pub fn start_again(&self) -> Result<()> {
        self.pg_ctl_start()
    }

    /// The postmaster's process id (first line of `postmaster.pid`).
    pub fn postmaster_pid(&self) -> Result<u32> {
        let path = self.data.join("postmaster.pid");
        let text =
            fs::read_to_string(&path).map_err(io_err(format!("reading {}", path.display())))?;
        text.lines()
            .next()
            .and_then(|l| l.trim().parse().ok())
            .ok_or_else(|| PgError::Io {
                what: format!("reading {}", path.display()),
                source: io::Error::other(format!("no process id on its first line: {text:?}")),
            })
    }

    /// The postmaster and all its child processes (backends, checkpointer, WAL writer...;
    /// found through the parent pid in `/proc/<pid>/stat`).
    pub fn server_pids(&self) -> Result<Vec<u32>> {
        let postmaster = self.postmaster_pid()?;
        let mut pids = vec![postmaster];
        pids.extend(children_of(postmaster));
        Ok(pids)
    }

    /// Freezes the server like a paused VM: SIGSTOP to the postmaster, then to every
    /// child. Sockets stay open and the kernel keeps acknowledging TCP, but no query is
    /// answered and no lock is released until [`PgCluster::thaw`]. The postmaster is
    /// stopped first so that it forks no new child after the children were listed.
    /// Dropping the cluster thaws it.
    pub fn freeze(&self) -> Result<()> {
        let postmaster = self.postmaster_pid()?;
        self.frozen.store(true, Ordering::SeqCst);
        send_signal(postmaster, libc::SIGSTOP);
        // Twice: a child forked just before the postmaster stopped shows up on the second
        // listing at the latest.
        for _ in 0..2 {
            for pid in children_of(postmaster) {
                send_signal(pid, libc::SIGSTOP);
            }
        }
        // The signal is delivered asynchronously: return once every process shows as
        // stopped, so that the caller's next step really meets a frozen server.
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut pids = children_of(postmaster);
        pids.push(postmaster);
        while pids
            .iter()
            .any(|p| process_state(*p).is_some_and(|s| s != 'T' && s != 't'))
        {
            if Instant::now() > deadline {
                return Err(PgError::Io {
                    what: "freezing the PostgreSQL server".into(),
                    source: io::Error::other("processes not stopped 5 s after SIGSTOP"),
                });
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        Ok(())
    }

    /// SIGCONT to the children and the postmaster after [`PgCluster::freeze`].
    pub fn thaw(&self) -> Result<()> {
        let postmaster = self.postmaster_pid()?;
        for pid in children_of(postmaster) {
            send_signal(pid, libc::SIGCONT);
        }
        send_signal(postmaster, libc::SIGCONT);
        self.frozen.store(false, Ordering::SeqCst);
        Ok(())
    }

    /// Whether the server is frozen by [`PgCluster::freeze`].
    pub fn is_frozen(&self) -> bool {
        self.frozen.load(Ordering::SeqCst)
    }
}

/// Processes whose parent is `parent` (from `/proc/<pid>/stat`; the command name in
/// parentheses may hold spaces, so fields are counted after its closing parenthesis).
fn children_of(parent: u32) -> Vec<u32> {
    let Ok(dir) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|entry| {
            let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
            let stat = fs::read_to_string(entry.path().join("stat")).ok()?;
            let after_name = &stat[stat.rfind(')')? + 1..];
            // Fields after the name: state, ppid, ...
            let ppid: u32 = after_name.split_whitespace().nth(1)?.parse().ok()?;
            (ppid == parent).then_some(pid)
        })
        .collect()
}

/// A process's state letter (`R`, `S`, `T` = stopped, ...) from `/proc/<pid>/stat`;
/// `None` once it is gone.
fn process_state(pid: u32) -> Option<char> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat[stat.rfind(')')? + 1..]
        .split_whitespace()
        .next()?
        .chars()
        .next()
}

/// The uid and gid of a local user (`getent passwd`), e.g. to run a process as
/// `postgres` when the tests run as root.
pub fn user_ids(name: &str) -> Result<(u32, u32)> {
    lookup_user(name)
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        // A stopped postmaster would not act on the reaper's `pg_ctl stop`.
        if self.is_frozen() {
            let _ = self.thaw();
        }
        // Closing the pipe tells the reaper to stop the server and remove the directory.
        if let Some(mut reaper) = self.reaper.take() {
            drop(reaper.stdin.take());
            let deadline = Instant::now() + Duration::from_secs(90);
            while Instant::now() < deadline {
                match reaper.child.try_wait() {
                    Ok(Some(_)) | Err(_) => break,
                    Ok(None) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        }
        // Fallback, should the reaper have died or hung.
        if self.root.exists() {
            if self.data.join("postmaster.pid").exists() {
                let _ = self
                    .pg_ctl()
                    .args(["stop", "-m", "immediate", "-w", "-t", "60"])
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status();
            }
            let _ = fs::remove_dir_all(&self.root);
        }
    }
}

/// A database of its own for one test, in a [`PgCluster`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestDb {
    name: String,
    url: String,
    conn_string: String,
    port: u16,
}

impl TestDb {
    /// The database's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `postgres://postgres@127.0.0.1:<port>/<name>`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// `host=127.0.0.1 port=<port> user=postgres dbname=<name>`.
    pub fn conn_string(&self) -> &str {
        &self.conn_string
    }

    /// The cluster's TCP port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Opens a connection; its task is spawned on the current tokio runtime.
    pub async fn connect(&self) -> Result<Client> {
        connect(&self.conn_string).await
    }

    /// URL of this database for another role:
    /// `postgres://<user>:<password>@127.0.0.1:<port>/<name>` (the test cluster trusts
    /// every local connection, so the password is only there for realism).
    pub fn url_as(&self, user: &str, password: &str) -> String {
        format!(
            "postgres://{user}:{password}@{HOST}:{}/{}",
            self.port, self.name
        )
    }
}

/// A session LISTENing on `channel`: each notification's payload with the instant it
/// arrived (PostgreSQL delivers a notification when its transaction commits). The client
/// must be kept for as long as notifications are wanted.
pub async fn listen(
    conn_string: &str,
    channel: &str,
) -> Result<(
    Client,
    tokio::sync::mpsc::UnboundedReceiver<(String, std::time::Instant)>,
)> {
    let (client, mut connection) = open(conn_string).await?;
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut messages = futures::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(Ok(message)) = futures::StreamExt::next(&mut messages).await {
            if let tokio_postgres::AsyncMessage::Notification(n) = message
                && tx
                    .send((n.payload().to_string(), std::time::Instant::now()))
                    .is_err()
            {
                return;
            }
        }
    });
    client
        .batch_execute(&format!("LISTEN {channel}"))
        .await
        .map_err(|source| connect_error(conn_string, source))?;
    Ok((client, rx))
}

async fn open(
    conn_string: &str,
) -> Result<(
    Client,
    tokio_postgres::Connection<tokio_postgres::Socket, tokio_postgres::tls::NoTlsStream>,
)> {
    tokio_postgres::connect(conn_string, NoTls)
        .await
        .map_err(|source| connect_error(conn_string, source))
}

fn connect_error(conn_string: &str, source: tokio_postgres::Error) -> PgError {
    PgError::Connect {
        target: conn_string.to_string(),
        source,
    }
}

/// Connects with a libpq-style connection string or URL and spawns the connection task
/// on the current tokio runtime.
pub async fn connect(conn_string: &str) -> Result<Client> {
    let (client, connection) = open(conn_string).await?;
    tokio::spawn(async move {
        // Errors surface on the client's next call; the connection ending is normal
        // (client dropped, server restarted by the test).
        let _ = connection.await;
    });
    Ok(client)
}

/// The cluster shared by all tests of one test binary, started on first use and cleaned
/// up by its reaper when the process exits.
///
/// Panics with the start-up error if the cluster cannot be started (every test asking
/// for it then fails with the same message).
pub async fn shared() -> &'static PgCluster {
    static SHARED: tokio::sync::OnceCell<std::result::Result<PgCluster, String>> =
        tokio::sync::OnceCell::const_new();
    let cluster = SHARED
        .get_or_init(|| async {
            match tokio::task::spawn_blocking(PgCluster::start).await {
                Ok(Ok(cluster)) => Ok(cluster),
                Ok(Err(e)) => Err(e.to_string()),
                Err(e) => Err(format!("the start-up task failed: {e}")),
            }
        })
        .await;
    match cluster {
        Ok(cluster) => cluster,
        Err(e) => panic!("could not start the shared test PostgreSQL cluster: {e}"),
    }
}

/// A port that was free a moment ago (bind port 0, read it, release it).
fn free_port() -> Result<u16> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .map_err(io_err("binding 127.0.0.1:0 to find a free port"))?;
    let addr = listener
        .local_addr()
        .map_err(io_err("reading the bound address"))?;
    Ok(addr.port())
}

fn describe(cmd: &Command) -> String {
    std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(OsStr::to_string_lossy)
        .collect::<Vec<_>>()
        .join(" ")
}
