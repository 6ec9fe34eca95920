//! The scale benchmark (issue 10, "cost as the work grows"): whether a worker's cost
//! per row and per file stays flat as the ledger, the claims table, the landing
//! directory and the archive grow. Used by `sluice-bench --scale`; the figures are
//! reported (and plotted), not asserted.
//!
//! 1. Steady run: the ledger is seeded with 1M loaded files, then ≥ 10M rows go through
//!    one worker. Files are fed so that a bounded number wait in the landing directory
//!    (the work grows, not the queue); committed rows are sampled every 100 ms and the
//!    run is cut into 10 equal slices of rows, each slice's rate a ratio to the first.
//! 2. Backlogs: 25k, 50k and 100k small files are in the landing directory before the
//!    worker starts; the time to drain each, and the time per file as a ratio to the
//!    smallest backlog's (1.0 = linear).
//!
//! Besides, it watches the listing of the landing directory, the claims table (size,
//! dead tuples, autovacuum), the ledger lookup on the large ledger and the archive's
//! day folder.

pub mod baseline;
mod plot;
pub mod probe;
mod report;

pub use report::format_report;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::pg::PgCluster;
use crate::procs::{WorkerProc, WorkerSpec, generate};
use crate::verify::{ManifestFile, read_manifest};
use baseline::CopyBaseline;
use probe::{ClaimsStats, Listing, LookupProbe};

/// The worker id of the measured worker (its batches are told apart by it).
const WORKER: &str = "scale-0";
/// How often committed rows are sampled.
const SAMPLE_EVERY: Duration = Duration::from_millis(100);
/// How often the claims table and the landing listing are looked at.
const WATCH_EVERY: Duration = Duration::from_secs(2);
/// Longest a single run may take before the benchmark gives up.
const RUN_TIMEOUT: Duration = Duration::from_secs(900);

/// The flags of the scale benchmark (flattened into `sluice-bench`'s).
#[derive(Debug, Clone, clap::Args)]
pub struct ScaleArgs {
    /// Run the scale benchmark only (cost as the work grows) and write its plot.
    #[arg(long)]
    pub scale: bool,
    /// Scale: rows through the worker in the steady run.
    #[arg(long, default_value_t = 10_000_000)]
    pub scale_rows: u64,
    /// Scale: rows per file in the steady run.
    #[arg(long, default_value_t = 10_000)]
    pub scale_rows_per_file: u64,
    /// Scale: loaded files the ledger holds before the steady run.
    #[arg(long, default_value_t = 1_000_000)]
    pub scale_seed_files: u64,
    /// Scale: files waiting in the landing directory during the steady run.
    #[arg(long, default_value_t = 100)]
    pub scale_lookahead_files: u64,
    /// Scale: backlog sizes (files present before the worker starts), comma-separated.
    #[arg(long, value_delimiter = ',', default_values_t = [25_000u64, 50_000, 100_000])]
    pub scale_backlogs: Vec<u64>,
    /// Scale: skip the backlog runs.
    #[arg(long)]
    pub scale_no_backlogs: bool,
    /// Scale: rows per file of the backlogs.
    #[arg(long, default_value_t = 10)]
    pub scale_backlog_rows_per_file: u64,
    /// Scale: skip the steady run.
    #[arg(long)]
    pub scale_no_steady: bool,
    /// Scale: skip the steady run's baseline (plain COPY of the same rows in 10 slices).
    #[arg(long)]
    pub scale_no_copy_baseline: bool,
    /// Scale: where the plot goes (SVG).
    #[arg(long, default_value = "docs/bench-scale.svg")]
    pub scale_svg: PathBuf,
}

/// Everything the scale benchmark needs besides the server.
#[derive(Debug, Clone)]
pub struct ScaleBench {
    /// Work directory (datasets, landing directories, logs).
    pub root: PathBuf,
    pub args: ScaleArgs,
    pub bad_row_share: f64,
    /// Extra worker flags.
    pub worker_args: Vec<String>,
}

/// The steady run's figures.
#[derive(Debug, Clone, Default)]
pub struct SteadyRun {
    pub files: u64,
    pub valid_rows: u64,
    pub seed_files: u64,
    pub seed_seconds: f64,
    pub generate_seconds: f64,
    /// From the first fed file (after a warm-up file) to the last commit.
    pub seconds: f64,
    /// Valid rows per second in each tenth of the rows.
    pub slices: Vec<f64>,
    /// The largest claims table seen during the run, and the last.
    pub claims_max: ClaimsStats,
    pub claims_end: ClaimsStats,
    pub lookup: LookupProbe,
    /// Autovacuum and autoanalyze runs on `events` during the run (PostgreSQL vacuums an
    /// insert-only table too, to set its visibility map, competing for the two cores).
    pub events_autovacuums: (i64, i64),
    /// The slowest listing of the landing directory seen during the run.
    pub listing_max: Listing,
    pub archive: Vec<(String, Listing)>,
    pub peak_rss_kib: u64,
    /// Plain COPY of the same rows in 10 slices, on the same server right after.
    pub copy: Option<CopyBaseline>,
}

/// One backlog's figures.
#[derive(Debug, Clone, Default)]
pub struct BacklogRun {
    pub files: u64,
    /// From the worker's start to the last file in the ledger.
    pub seconds: f64,
    /// The landing directory listed before the worker started.
    pub listing: Listing,
    /// Files per second in the first and in the last tenth of the files.
    pub first_tenth_fps: f64,
    pub last_tenth_fps: f64,
    pub claims_end: ClaimsStats,
    pub archive: Vec<(String, Listing)>,
    pub lookup: LookupProbe,
    pub peak_rss_kib: u64,
}

impl BacklogRun {
    pub fn files_per_second(&self) -> f64 {
        self.files as f64 / self.seconds
    }
    pub fn ms_per_file(&self) -> f64 {
        self.seconds * 1000.0 / self.files as f64
    }
}

/// Both runs.
#[derive(Debug, Clone, Default)]
pub struct ScaleReport {
    pub steady: Option<SteadyRun>,
    pub backlogs: Vec<BacklogRun>,
}

/// Runs the steady run and the backlogs on `pg`, each in a fresh database, and writes
/// the plot.
pub async fn bench_scale(pg: &PgCluster, bench: &ScaleBench) -> Result<ScaleReport> {
    let mut report = ScaleReport::default();
    if !bench.args.scale_no_steady {
        report.steady = Some(steady(pg, bench).await?);
    }
    let mut sizes = if bench.args.scale_no_backlogs {
        Vec::new()
    } else {
        bench.args.scale_backlogs.clone()
    };
    sizes.sort_unstable();
    if let Some(&largest) = sizes.last() {
        let dir = bench.root.join("backlog-data");
        eprintln!(
            "scale: generating {largest} files x {} rows",
            bench.args.scale_backlog_rows_per_file
        );
        let (staging, manifest) = generate_files(
            &dir,
            largest,
            bench.args.scale_backlog_rows_per_file,
            bench.bad_row_share,
            23,
        )?;
        for n in sizes {
            let files = &manifest[..n as usize];
            report
                .backlogs
                .push(backlog(pg, bench, &staging, files).await?);
        }
    }
    if let Some(parent) = bench.args.scale_svg.parent() {
        std::fs::create_dir_all(parent)?;
    }
    plot::write_svg(&bench.args.scale_svg, &report)?;
    eprintln!("scale: plot written to {}", bench.args.scale_svg.display());
    Ok(report)
}

/// Runs the generator into `dir/staging`; returns the staging directory and the manifest.
fn generate_files(
    dir: &Path,
    files: u64,
    rows_per_file: u64,
    bad_share: f64,
    seed: u64,
) -> Result<(PathBuf, Vec<ManifestFile>)> {
    let staging = dir.join("staging");
    std::fs::create_dir_all(&staging)?;
    let manifest_path = dir.join("manifest.jsonl");
    let args: Vec<String> = [
        "--landing-dir",
        &staging.display().to_string(),
        "--manifest",
        &manifest_path.display().to_string(),
        "--events-per-second",
        "0",
        "--rows-per-file",
        &rows_per_file.to_string(),
        "--total-files",
        &files.to_string(),
        "--bad-row-share",
        &bad_share.to_string(),
        "--seed",
        &seed.to_string(),
        "--start-time",
        "2026-11-25T00:00:00Z",
        "--no-fsync",
        "--max-pending-files",
        &(files + 10).to_string(),
        // The generator pauses at 1 GiB of pending files by default; 10M rows are more.
        "--max-pending-bytes",
        &(files.saturating_mul(rows_per_file).saturating_mul(400) + (1 << 30)).to_string(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    generate(&args)?;
    let manifest = read_manifest(&manifest_path)?;
    if manifest.len() as u64 != files {
        bail!("generator wrote {} files, expected {files}", manifest.len());
    }
    Ok((staging, manifest))
}

fn spawn_worker(dir: &Path, landing: &Path, url: &str, extra: &[String]) -> Result<WorkerProc> {
    let checkpoint = dir.join("checkpoint");
    std::fs::create_dir_all(&checkpoint)?;
    WorkerProc::spawn(WorkerSpec {
        id: WORKER.into(),
        landing: landing.to_path_buf(),
        checkpoint,
        database_url: url.to_string(),
        extra: extra.to_vec(),
        log: dir.join("worker.log"),
    })
}

/// The steady run: a seeded ledger, then the rows fed through one worker.
async fn steady(pg: &PgCluster, bench: &ScaleBench) -> Result<SteadyRun> {
    let a = &bench.args;
    let dir = bench.root.join("steady");
    let files = a.scale_rows.div_ceil(a.scale_rows_per_file);
    // One more file than measured: the first warms the worker up.
    eprintln!(
        "scale: generating {} files x {} rows",
        files + 1,
        a.scale_rows_per_file
    );
    let started = Instant::now();
    let (staging, manifest) = generate_files(
        &dir.join("data"),
        files + 1,
        a.scale_rows_per_file,
        bench.bad_row_share,
        17,
    )?;
    let generate_seconds = started.elapsed().as_secs_f64();
    let db = pg.create_database().await?;
    let mut client = db.connect().await?;
    sluice_worker::migrate::migrate(&mut client).await?;
    eprintln!(
        "scale: seeding the ledger with {} files",
        a.scale_seed_files
    );
    let seed_seconds =
        probe::seed_ledger(&client, a.scale_seed_files, a.scale_rows_per_file).await?;
    eprintln!("scale: seeded in {seed_seconds:.1} s");

    let landing = dir.join("landing");
    std::fs::create_dir_all(&landing)?;
    let mut worker = spawn_worker(&dir, &landing, db.url(), &bench.worker_args)?;
    let release = |m: &ManifestFile| {
        std::fs::rename(staging.join(&m.file), landing.join(&m.file))
            .with_context(|| format!("moving {} into the landing directory", m.file))
    };
    // Warm-up: the first file, so that the worker's start is not measured.
    let (warmup, measured) = manifest.split_at(1);
    release(&warmup[0])?;
    let deadline = Instant::now() + Duration::from_secs(60);
    let (mut done_files, rows0) = loop {
        let (f, r) = probe::committed(&client, WORKER).await?;
        if f >= 1 {
            break (f, r);
        }
        worker.check_alive()?;
        if Instant::now() > deadline {
            bail!("the worker did not load its first file within 60 s");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };

    eprintln!("scale: steady run, {} rows", a.scale_rows);
    let total = manifest.len() as i64;
    let mut released = 1i64;
    let started = Instant::now();
    let mut samples: Vec<(f64, i64)> = vec![(0.0, 0)];
    let mut claims_max = ClaimsStats::default();
    let mut listing_max = Listing::default();
    let mut next_watch = started;
    while done_files < total {
        while released < total && released - done_files < a.scale_lookahead_files as i64 {
            release(&measured[released as usize - 1])?;
            released += 1;
        }
        if Instant::now() >= next_watch {
            next_watch += WATCH_EVERY;
            let c = probe::claims_stats(&client).await?;
            if c.total_bytes > claims_max.total_bytes || c.dead_tuples > claims_max.dead_tuples {
                claims_max = c;
            }
            let l = probe::list_like_worker(&landing)?;
            if l.millis > listing_max.millis {
                listing_max = l;
            }
            worker.check_alive()?;
        }
        if started.elapsed() > RUN_TIMEOUT {
            bail!("steady run not finished within {RUN_TIMEOUT:?} ({done_files}/{total} files)");
        }
        tokio::time::sleep(SAMPLE_EVERY).await;
        let (f, r) = probe::committed(&client, WORKER).await?;
        done_files = f;
        samples.push((started.elapsed().as_secs_f64(), r - rows0));
    }
    let seconds = samples.last().map_or(0.0, |s| s.0);
    let peak_rss_kib = worker.peak_rss_kib().unwrap_or(0);
    let valid_rows: u64 = measured.iter().map(|m| m.valid_rows).sum();
    let measured_rows = samples.last().map_or(0, |s| s.1);
    if measured_rows as u64 != valid_rows {
        bail!("the worker loaded {measured_rows} rows, expected {valid_rows}");
    }
    drop(worker);
    let claims_end = probe::claims_stats_settled(&client).await?;
    let events_autovacuums = probe::autovacuums(&client, "events").await?;
    let lookup = probe::ledger_lookup(&client).await?;
    let archive = probe::archive_days(&landing)?;
    let copy = if a.scale_no_copy_baseline {
        None
    } else {
        // The run's events table is not vacuumed behind the baseline's back: that would
        // compete for the disk and the cores with the COPYs (and it cancels one running).
        client
            .batch_execute("ALTER TABLE events SET (autovacuum_enabled = false)")
            .await?;
        Some(baseline::copy_baseline(pg, &client, valid_rows, &dir.join("copy")).await?)
    };
    Ok(SteadyRun {
        files,
        valid_rows,
        seed_files: a.scale_seed_files,
        seed_seconds,
        generate_seconds,
        seconds,
        slices: slice_rates(&samples, 10),
        claims_max,
        claims_end,
        lookup,
        events_autovacuums,
        listing_max,
        archive,
        peak_rss_kib,
        copy,
    })
}

/// One backlog: `files` hard-linked into a fresh landing directory, then the worker.
async fn backlog(
    pg: &PgCluster,
    bench: &ScaleBench,
    staging: &Path,
    files: &[ManifestFile],
) -> Result<BacklogRun> {
    let n = files.len();
    let dir = bench.root.join(format!("backlog-{n}"));
    let landing = dir.join("landing");
    std::fs::create_dir_all(&landing)?;
    for m in files {
        std::fs::hard_link(staging.join(&m.file), landing.join(&m.file))?;
    }
    let listing = probe::list_like_worker(&landing)?;
    let db = pg.create_database().await?;
    let mut client = db.connect().await?;
    sluice_worker::migrate::migrate(&mut client).await?;
    client.batch_execute("CHECKPOINT").await?;
    eprintln!("scale: backlog of {n} files");
    let started = Instant::now();
    let mut worker = spawn_worker(&dir, &landing, db.url(), &bench.worker_args)?;
    let mut samples: Vec<(f64, i64)> = vec![(0.0, 0)];
    let mut done = 0i64;
    while done < n as i64 {
        if started.elapsed() > RUN_TIMEOUT {
            bail!("backlog of {n} not drained within {RUN_TIMEOUT:?} ({done} done)");
        }
        tokio::time::sleep(SAMPLE_EVERY).await;
        // Before the worker has migrated nothing is committed; errors are not expected.
        done = probe::committed(&client, WORKER).await?.0;
        samples.push((started.elapsed().as_secs_f64(), done));
        worker.check_alive()?;
    }
    let seconds = started.elapsed().as_secs_f64();
    let peak_rss_kib = worker.peak_rss_kib().unwrap_or(0);
    drop(worker);
    let claims_end = probe::claims_stats_settled(&client).await?;
    let loaded: i64 = client
        .query_one(
            "SELECT count(*) FROM sluice_files WHERE outcome = 'loaded'",
            &[],
        )
        .await?
        .get(0);
    if loaded != n as i64 {
        bail!("{loaded} of {n} backlog files loaded");
    }
    let tenths = slice_rates(&samples, 10);
    let run = BacklogRun {
        files: n as u64,
        seconds,
        listing,
        first_tenth_fps: tenths.first().copied().unwrap_or(0.0),
        last_tenth_fps: tenths.last().copied().unwrap_or(0.0),
        claims_end,
        archive: probe::archive_days(&landing)?,
        lookup: probe::ledger_lookup(&client).await?,
        peak_rss_kib,
    };
    eprintln!(
        "scale: backlog of {n}: {seconds:.1} s, {:.0} files/s",
        run.files_per_second()
    );
    Ok(run)
}

/// Cuts a run sampled as (seconds, count so far) into `n` equal slices of the count and
/// returns each slice's rate (count per second), the times at the slice boundaries
/// interpolated linearly between samples. Samples must be in time order with
/// non-decreasing counts; empty when nothing was counted.
pub fn slice_rates(samples: &[(f64, i64)], n: usize) -> Vec<f64> {
    let Some(&(_, total)) = samples.last() else {
        return Vec::new();
    };
    if total <= 0 || n == 0 {
        return Vec::new();
    }
    let time_at = |target: f64| -> f64 {
        let i = samples.partition_point(|s| (s.1 as f64) < target);
        match (
            i.checked_sub(1).and_then(|j| samples.get(j)),
            samples.get(i),
        ) {
            (Some(&(t0, c0)), Some(&(t1, c1))) if c1 > c0 => {
                t0 + (t1 - t0) * (target - c0 as f64) / (c1 - c0) as f64
            }
            (_, Some(&(t, _))) => t,
            (Some(&(t, _)), None) => t,
            (None, None) => 0.0,
        }
    };
    let step = total as f64 / n as f64;
    (0..n)
        .map(|k| {
            let seconds = time_at(step * (k + 1) as f64) - time_at(step * k as f64);
            if seconds > 0.0 {
                step / seconds
            } else {
                f64::INFINITY
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slices_of_a_steady_run_are_equal() {
        let samples: Vec<(f64, i64)> = (0..=100).map(|i| (i as f64, i * 1000)).collect();
        let rates = slice_rates(&samples, 10);
        assert_eq!(rates.len(), 10);
        assert!(rates.iter().all(|r| (r - 1000.0).abs() < 1e-6), "{rates:?}");
    }

    #[test]
    fn slices_interpolate_between_samples_and_see_a_slowdown() {
        // 1000/s for 10 s, then 500/s for 20 s: the second half is half as fast.
        let mut samples = vec![(0.0, 0)];
        samples.extend((1..=10).map(|i| (i as f64, i * 1000)));
        samples.extend((1..=20).map(|i| (10.0 + i as f64, 10_000 + i * 500)));
        let rates = slice_rates(&samples, 4);
        assert_eq!(rates.len(), 4);
        assert!((rates[0] - 1000.0).abs() < 1e-6 && (rates[3] - 500.0).abs() < 1e-6);
        assert!(slice_rates(&[(0.0, 0), (1.0, 0)], 10).is_empty());
    }
}
