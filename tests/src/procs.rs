//! Running Sluice's binaries as real processes in tests: workers that can be SIGKILLed
//! and restarted on the same checkpoint, and finite generator runs.

use std::fs::File;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::bins::bin_path;

/// How to start one worker.
#[derive(Debug, Clone)]
pub struct WorkerSpec {
    pub id: String,
    pub landing: PathBuf,
    pub checkpoint: PathBuf,
    pub database_url: String,
    /// Extra flags, e.g. `["--max-files", "8"]`.
    pub extra: Vec<String>,
    /// Where stdout/stderr go (appended across restarts).
    pub log: PathBuf,
}

/// A running worker process. Dropping it kills the process.
pub struct WorkerProc {
    pub spec: WorkerSpec,
    child: Option<Child>,
    pub starts: u32,
}

impl WorkerSpec {
    /// The usual layout under a test's root directory: `landing/` (created),
    /// `checkpoints/<id>/`, and the log `<id>.log`.
    pub fn in_root(root: &Path, id: &str, database_url: &str, extra: &[&str]) -> WorkerSpec {
        let landing = root.join("landing");
        if let Err(e) = std::fs::create_dir_all(&landing) {
            panic!("creating {}: {e}", landing.display());
        }
        WorkerSpec {
            id: id.into(),
            landing,
            checkpoint: root.join("checkpoints").join(id),
            database_url: database_url.into(),
            extra: extra.iter().map(|s| s.to_string()).collect(),
            log: root.join(format!("{id}.log")),
        }
    }
}

impl WorkerProc {
    pub fn spawn(spec: WorkerSpec) -> Result<WorkerProc> {
        let mut w = WorkerProc {
            spec,
            child: None,
            starts: 0,
        };
        w.start()?;
        Ok(w)
    }

    fn start(&mut self) -> Result<()> {
        let log = File::options()
            .create(true)
            .append(true)
            .open(&self.spec.log)
            .with_context(|| format!("opening {}", self.spec.log.display()))?;
        let mut cmd = Command::new(bin_path("sluice-worker"));
        if !self.spec.extra.iter().any(|a| a == "--metrics-addr") {
            cmd.args(["--metrics-addr", "none"]);
        }
        let child = cmd
            .arg("--worker-id")
            .arg(&self.spec.id)
            .arg("--landing-dir")
            .arg(&self.spec.landing)
            .arg("--checkpoint-dir")
            .arg(&self.spec.checkpoint)
            .args(&self.spec.extra)
            .env("DATABASE_URL", &self.spec.database_url)
            .env("RUST_LOG", "info")
            .stdout(log.try_clone()?)
            .stderr(log)
            .stdin(Stdio::null())
            .spawn()
            .context("spawning sluice-worker")?;
        self.child = Some(child);
        self.starts += 1;
        Ok(())
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// SIGKILL, then wait for the process to be gone.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGKILL and start again with the same id and checkpoint.
    pub fn crash_and_restart(&mut self) -> Result<()> {
        self.kill();
        self.start()
    }

    /// SIGTERM and wait up to `timeout` for a clean exit.
    pub fn terminate(&mut self, timeout: Duration) -> Result<ExitStatus> {
        let Some(mut c) = self.child.take() else {
            bail!("worker {} is not running", self.spec.id)
        };
        send_signal(c.id(), libc::SIGTERM);
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = c.try_wait()? {
                return Ok(status);
            }
            if Instant::now() > deadline {
                let _ = c.kill();
                let _ = c.wait();
                bail!(
                    "worker {} did not exit within {timeout:?} of SIGTERM",
                    self.spec.id
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGSTOP: the process stays alive (sockets open, locks held) but does nothing, like
    /// a paused VM. A no-op when the worker is not running.
    pub fn freeze(&self) {
        if let Some(pid) = self.pid() {
            send_signal(pid, libc::SIGSTOP);
        }
    }

    /// SIGCONT after [`WorkerProc::freeze`].
    pub fn thaw(&self) {
        if let Some(pid) = self.pid() {
            send_signal(pid, libc::SIGCONT);
        }
    }

    /// The process's peak resident set size so far (`VmHWM` in `/proc/<pid>/status`), in
    /// KiB. `None` when the worker is not running or the value cannot be read.
    pub fn peak_rss_kib(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()?)).ok()?;
        parse_vm_hwm(&status)
    }

    /// Whether the process is stopped by a signal right now (state `T` in
    /// `/proc/<pid>/stat`), e.g. after [`WorkerProc::freeze`].
    pub fn is_stopped(&self) -> bool {
        let Some(pid) = self.pid() else {
            return false;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            return false;
        };
        // The command name in parentheses may hold spaces: the state follows its `)`.
        stat.rfind(')')
            .and_then(|i| stat[i + 1..].split_whitespace().next())
            .is_some_and(|state| state == "T" || state == "t")
    }

    /// Local ports of the process's TCP connections to `server_port` (e.g. PostgreSQL's),
    /// to find its sessions in `pg_stat_activity.client_port`. Empty if not running.
    pub fn tcp_client_ports(&self, server_port: u16) -> Vec<u16> {
        self.pid()
            .map(|pid| tcp_client_ports_of(pid, server_port))
            .unwrap_or_default()
    }

    /// Fails if the process exited on its own (it should run until stopped).
    pub fn check_alive(&mut self) -> Result<()> {
        if let Some(c) = self.child.as_mut()
            && let Some(status) = c.try_wait()?
        {
            bail!(
                "worker {} exited by itself with {status}; log tail:\n{}",
                self.spec.id,
                tail(&self.spec.log, 30)
            );
        }
        Ok(())
    }

    /// Waits until the ledger holds `files` files and none is left in this worker's
    /// landing directory, the worker staying alive; panics with its log's tail otherwise.
    /// The usual end of a worker test's ingest phase.
    pub async fn settle(
        &mut self,
        client: &tokio_postgres::Client,
        files: usize,
        timeout: Duration,
    ) {
        let landing = self.spec.landing.clone();
        let log = self.spec.log.clone();
        if let Err(e) =
            crate::scenario::wait_settled(client, &landing, files, timeout, || self.check_alive())
                .await
        {
            panic!("{e}\n{}", tail(&log, 40));
        }
    }
}

impl Drop for WorkerProc {
    fn drop(&mut self) {
        // A frozen process ignores nothing but SIGKILL, which is what kill() sends; thaw
        // anyway so that a stopped child never outlives the test in the stopped state.
        self.thaw();
        self.kill();
    }
}

#[allow(unsafe_code)]
pub fn send_signal(pid: u32, signal: libc::c_int) {
    // SAFETY: kill(2) has no memory-safety preconditions; a stale pid only yields ESRCH.
    unsafe {
        libc::kill(pid as libc::pid_t, signal);
    }
}

/// The last `n` lines of a log file (for failure messages).
pub fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Runs the generator to completion with `args`; fails with its stderr otherwise.
pub fn generate(args: &[String]) -> Result<()> {
    let out = Command::new(bin_path("sluice-generator"))
        .args(args)
        .args(["--metrics-addr", "none"])
        .output()
        .context("running sluice-generator")?;
    if !out.status.success() {
        bail!(
            "sluice-generator {:?} failed with {}: {}",
            args,
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// Local ports of process `pid`'s TCP connections to `server_port`.
pub fn tcp_client_ports_of(pid: u32, server_port: u16) -> Vec<u16> {
    let inodes: Vec<u64> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|dir| {
            dir.flatten()
                .filter_map(|fd| {
                    let target = std::fs::read_link(fd.path()).ok()?;
                    let target = target.to_str()?;
                    target
                        .strip_prefix("socket:[")?
                        .strip_suffix(']')?
                        .parse()
                        .ok()
                })
                .collect()
        })
        .unwrap_or_default();
    ["tcp", "tcp6"]
        .iter()
        .filter_map(|t| std::fs::read_to_string(format!("/proc/{pid}/net/{t}")).ok())
        .flat_map(|table| parse_tcp_table(&table))
        .filter(|c| c.remote_port == server_port && inodes.contains(&c.inode))
        .map(|c| c.local_port)
        .collect()
}

/// One connection of `/proc/<pid>/net/tcp{,6}`.
#[derive(Debug, PartialEq, Eq)]
struct TcpEntry {
    local_port: u16,
    remote_port: u16,
    inode: u64,
}

/// Parses `/proc/net/tcp` lines: `sl local_address rem_address st tx:rx tr:when retrnsmt
/// uid timeout inode ...`, addresses as `HEXADDR:HEXPORT`.
fn parse_tcp_table(table: &str) -> Vec<TcpEntry> {
    let port = |addr: &str| u16::from_str_radix(addr.rsplit(':').next()?, 16).ok();
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            Some(TcpEntry {
                local_port: port(f.get(1)?)?,
                remote_port: port(f.get(2)?)?,
                inode: f.get(9)?.parse().ok()?,
            })
        })
        .collect()
}

/// `VmHWM:   12345 kB` → 12345.
fn parse_vm_hwm(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// A minimal blocking HTTP/1.0 GET (for `/healthz`, `/readyz`, `/metrics`): returns the
/// status code and the body. Connect, write and read each time out after 2 s.
pub fn http_get(addr: SocketAddr, path: &str) -> Result<(u16, String)> {
    let timeout = Duration::from_secs(2);
    let mut stream = TcpStream::connect_timeout(&addr, timeout)
        .with_context(|| format!("connecting to {addr}"))?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    write!(
        stream,
        "GET {path} HTTP/1.0\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .with_context(|| format!("sending GET {path} to {addr}"))?;
    let mut raw = Vec::new();
    stream
        .read_to_end(&mut raw)
        .with_context(|| format!("reading the answer to GET {path} from {addr}"))?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .or_else(|| text.split_once("\n\n"))
        .unwrap_or((&text, ""));
    let status_line = head.lines().next().unwrap_or_default();
    let code = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse::<u16>().ok())
        .with_context(|| format!("GET {path} from {addr}: no status in {status_line:?}"))?;
    Ok((code, body.to_string()))
}

/// The value of one sample in Prometheus text format, matched on its full name with
/// labels exactly as exposed, e.g. `sluice_worker_degraded{cause="lock_timeout"}` or
/// `sluice_worker_claims_taken_over_total`. `None` if there is no such sample.
pub fn metric_value(metrics_text: &str, name_with_labels: &str) -> Option<f64> {
    metrics_text.lines().find_map(|line| {
        if line.starts_with('#') {
            return None;
        }
        let rest = line.strip_prefix(name_with_labels)?;
        // The sample name must end here: `foo_total 3` matches `foo_total`, but
        // `foo_total_bar 3` and `foo_total{x="y"} 3` do not.
        if !rest.starts_with([' ', '\t']) {
            return None;
        }
        rest.split_whitespace().next()?.parse().ok()
    })
}

/// A local address with a port that was free a moment ago (bind to port 0, read the port,
/// release it). Racy by nature, but good enough for one test's `--metrics-addr`.
pub fn free_local_addr() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("binding 127.0.0.1:0");
    listener
        .local_addr()
        .expect("reading a bound listener's address")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metric_value_matches_the_exact_sample() {
        let text = "# HELP x y\n\
                    sluice_worker_degraded{cause=\"lock_timeout\"} 1\n\
                    sluice_worker_degraded{cause=\"disk_full\"} 0\n\
                    sluice_worker_files_total_x 9\n\
                    sluice_worker_files_total 4.5\n";
        assert_eq!(
            metric_value(text, r#"sluice_worker_degraded{cause="lock_timeout"}"#),
            Some(1.0)
        );
        assert_eq!(
            metric_value(text, r#"sluice_worker_degraded{cause="disk_full"}"#),
            Some(0.0)
        );
        assert_eq!(metric_value(text, "sluice_worker_files_total"), Some(4.5));
        assert_eq!(metric_value(text, "sluice_worker_degraded"), None);
        assert_eq!(metric_value(text, "missing"), None);
    }

    #[test]
    fn tcp_table_gives_ports_and_inodes() {
        let table = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n   \
            0: 0100007F:D431 0100007F:1538 01 00000000:00000000 00:00000000 00000000  1000        0 424242 1 0000000000000000 20 4 30 10 -1\n";
        assert_eq!(
            parse_tcp_table(table),
            vec![TcpEntry {
                local_port: 0xD431,
                remote_port: 0x1538,
                inode: 424242
            }]
        );
    }

    #[test]
    fn finds_the_local_port_of_an_own_connection() {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let server_port = listener.local_addr().expect("addr").port();
        let stream = TcpStream::connect(("127.0.0.1", server_port)).expect("connect");
        let local = stream.local_addr().expect("local addr").port();
        let ports = tcp_client_ports_of(std::process::id(), server_port);
        assert_eq!(ports, vec![local]);
    }

    #[test]
    fn vm_hwm_is_read_in_kib() {
        let status = "Name:\tsluice-worker\nVmPeak:\t  999 kB\nVmHWM:\t   12345 kB\n";
        assert_eq!(parse_vm_hwm(status), Some(12345));
        assert_eq!(parse_vm_hwm("Name: x\n"), None);
    }
}
