//! Running Sluice's binaries as real processes in tests: workers that can be SIGKILLed
//! and restarted on the same checkpoint, and finite generator runs.

use std::fs::File;
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
}

impl Drop for WorkerProc {
    fn drop(&mut self) {
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
