//! The step log (every step with the wall clock, the time since the start and its
//! duration) and the one polling loop every wait of the suite uses.

use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use chrono::Utc;

pub const POLL: Duration = Duration::from_secs(2);

pub struct StepLog {
    start: Instant,
    current: Option<(String, Instant)>,
    done: Vec<(String, Duration)>,
}

impl StepLog {
    pub fn new() -> StepLog {
        StepLog {
            start: Instant::now(),
            current: None,
            done: Vec::new(),
        }
    }

    fn stamp(&self) -> String {
        format!(
            "{} +{:7.1}s",
            Utc::now().format("%H:%M:%S"),
            self.start.elapsed().as_secs_f64()
        )
    }

    /// Ends the step in progress (if any) and starts the next.
    pub fn step(&mut self, name: &str) {
        self.end_step();
        eprintln!("[e2e {}] ==> {name}", self.stamp());
        self.current = Some((name.to_string(), Instant::now()));
    }

    pub fn end_step(&mut self) {
        if let Some((name, started)) = self.current.take() {
            let took = started.elapsed();
            eprintln!(
                "[e2e {}]     done in {:.1}s: {name}",
                self.stamp(),
                took.as_secs_f64()
            );
            self.done.push((name, took));
        }
    }

    pub fn note(&self, msg: impl AsRef<str>) {
        eprintln!("[e2e {}]     {}", self.stamp(), msg.as_ref());
    }

    /// A command's output as it was printed, indented, so it can be read (and quoted in
    /// the docs) from the test log.
    pub fn capture(&self, command: &str, output: &str) {
        eprintln!("[e2e {}]     $ {command}", self.stamp());
        for line in output.lines() {
            eprintln!("[e2e]     | {line}");
        }
    }

    pub fn summary(&mut self) {
        self.end_step();
        eprintln!("[e2e] step durations:");
        for (name, took) in &self.done {
            eprintln!("[e2e]   {:8.1}s  {name}", took.as_secs_f64());
        }
        eprintln!("[e2e]   {:8.1}s  total", self.start.elapsed().as_secs_f64());
    }
}

/// Polls `probe` every [`POLL`] until it returns `Ok`; an `Err` means "not yet" and its
/// message is reported if `timeout` passes first.
pub async fn wait_until<T>(
    what: &str,
    timeout: Duration,
    mut probe: impl AsyncFnMut() -> Result<T>,
) -> Result<T> {
    let deadline = Instant::now() + timeout;
    loop {
        match probe().await {
            Ok(v) => return Ok(v),
            Err(e) if Instant::now() >= deadline => {
                bail!(
                    "{what}: not within {}s; last state: {e:#}",
                    timeout.as_secs()
                )
            }
            Err(_) => tokio::time::sleep(POLL).await,
        }
    }
}
