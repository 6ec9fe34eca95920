//! Measures unthrottled generation speed in-process and prints rows/s.
//!
//! ```sh
//! cargo run --release -p sluice-generator --example throughput -- [ROWS] [ROWS_PER_FILE] [DIR]
//! ```
//!
//! Defaults: 2,000,000 rows in files of 100,000 rows, in a fresh temporary directory
//! (removed afterwards). Files are fsync'd and renamed as in production. Peak RSS of
//! the whole process is printed from /proc/self/status when available.

use std::sync::atomic::AtomicBool;
use std::time::Instant;

use anyhow::Context;
use chrono::{DateTime, Utc};
use sluice_core::config::GeneratorConfig;
use sluice_generator::{Metrics, RunOptions, run};

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let rows: u64 = args
        .next()
        .map_or(Ok(2_000_000), |s| s.parse())
        .context("ROWS")?;
    let rows_per_file: u64 = args
        .next()
        .map_or(Ok(100_000), |s| s.parse())
        .context("ROWS_PER_FILE")?;
    let tmp = tempfile::tempdir()?;
    let dir = args
        .next()
        .map_or_else(|| tmp.path().to_path_buf(), Into::into);

    let opts = RunOptions {
        landing_dir: dir.clone(),
        config: GeneratorConfig {
            events_per_second: 0,
            rows_per_file,
            total_rows: Some(rows),
            max_pending_files: u64::MAX,
            max_pending_bytes: u64::MAX,
            ..Default::default()
        },
        start_time: Some(DateTime::<Utc>::from_timestamp(1_764_028_800, 0).unwrap_or_default()),
        manifest: None,
        fsync: true,
    };
    let metrics = Metrics::new()?;
    let started = Instant::now();
    let summary = run(&opts, &metrics, &AtomicBool::new(false))?;
    let secs = started.elapsed().as_secs_f64();
    println!(
        "{} rows in {} files ({:.1} MB) in {secs:.3} s: {:.0} rows/s, {:.0} MB/s",
        summary.rows,
        summary.files,
        summary.bytes as f64 / 1e6,
        summary.rows as f64 / secs,
        summary.bytes as f64 / 1e6 / secs
    );
    if let Ok(status) = std::fs::read_to_string("/proc/self/status")
        && let Some(line) = status.lines().find(|l| l.starts_with("VmHWM"))
    {
        println!("peak RSS: {}", line.trim_start_matches("VmHWM:").trim());
    }
    if dir == tmp.path() {
        drop(tmp);
    } else {
        println!("files left in {}", dir.display());
    }
    Ok(())
}
