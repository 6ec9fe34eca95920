//! The benchmark's worker processes and its latency run: small files offered at a steady
//! rate, each timed from its rename into the landing directory to the commit that makes
//! its rows visible.

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::pg::PgCluster;
use crate::procs::{WorkerProc, WorkerSpec};
use crate::scenario::Dataset;

/// The latency run's parameters.
pub struct LatencyBench {
    /// Offered rate, rows per second.
    pub rows_per_second: u64,
    pub rows_per_file: u64,
    pub seconds: u64,
    pub bad_row_share: f64,
    pub workers: usize,
    /// Extra worker flags.
    pub worker_args: Vec<String>,
}

pub fn spawn_workers(
    root: &Path,
    landing: &Path,
    url: &str,
    n: usize,
    tag: &str,
    extra: &[String],
    after_commit: &str,
) -> Result<Vec<WorkerProc>> {
    (0..n)
        .map(|i| {
            let checkpoint = root.join(format!("ck-{tag}-{i}"));
            std::fs::create_dir_all(&checkpoint)?;
            WorkerProc::spawn(WorkerSpec {
                id: format!("bench-{i}"),
                landing: landing.to_path_buf(),
                checkpoint,
                database_url: url.to_string(),
                extra: extra
                    .iter()
                    .map(|s| s.to_string())
                    .chain(["--after-commit".into(), after_commit.into()])
                    .collect(),
                log: root.join(format!("worker-{tag}-{i}.log")),
            })
        })
        .collect()
}

/// Waits until the workers have migrated (the ledger table exists).
pub async fn wait_ready(client: &tokio_postgres::Client) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while client
        .query_one("SELECT count(*) FROM sluice_files", &[])
        .await
        .is_err()
    {
        if Instant::now() > deadline {
            bail!("workers did not create the schema within 30 s");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

/// The largest peak RSS among running workers.
pub fn peak_rss_of(procs: &[WorkerProc]) -> u64 {
    procs
        .iter()
        .filter_map(WorkerProc::peak_rss_kib)
        .max()
        .unwrap_or(0)
}

pub struct Latency {
    pub samples: usize,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    pub peak_rss_kib: u64,
}

/// Offers small files at a steady rate and measures rename → visible in `sluice_files`.
pub async fn bench_latency(pg: &PgCluster, root: &Path, args: &LatencyBench) -> Result<Latency> {
    let files_per_second = (args.rows_per_second as f64 / args.rows_per_file as f64).max(1.0);
    let files = (files_per_second * args.seconds as f64).ceil() as u64;
    eprintln!(
        "latency run: {files} files of {} rows at {files_per_second:.0} files/s",
        args.rows_per_file
    );
    let data = Dataset::generate(
        &root.join("latency-data"),
        files,
        args.rows_per_file,
        args.bad_row_share,
        11,
    )?;
    let db = pg.create_database().await?;
    let mut client = db.connect().await?;
    sluice_worker::migrate::migrate(&mut client).await?;
    let landing = root.join("landing-latency");
    std::fs::create_dir_all(&landing)?;
    let procs = spawn_workers(
        root,
        &landing,
        db.url(),
        args.workers,
        "latency",
        &args.worker_args,
        // As deployed (the default): loaded files leave the landing directory. With
        // `keep` every listing would also walk every file loaded so far.
        "archive",
    )?;
    wait_ready(&client).await?;

    // Visibility is observed without polling (a poll loop costs the server CPU that the
    // two cores share with the worker): a trigger on the ledger notifies each file's name,
    // and PostgreSQL delivers the notification when the batch's transaction commits,
    // the moment its rows become visible.
    client
        .batch_execute(
            "CREATE FUNCTION sluice_bench_landed() RETURNS trigger LANGUAGE plpgsql AS $$
             BEGIN PERFORM pg_notify('sluice_bench_landed', NEW.file_name); RETURN NULL; END $$;
             CREATE TRIGGER sluice_bench_landed AFTER INSERT ON sluice_files
                 FOR EACH ROW EXECUTE FUNCTION sluice_bench_landed();",
        )
        .await?;
    let (listener, mut landed) = crate::pg::listen(db.conn_string(), "sluice_bench_landed").await?;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(String, Instant)>();
    let total = files as usize;
    let poller = tokio::spawn(async move {
        let _listener = listener;
        let mut seen: HashMap<String, Instant> = HashMap::new();
        while seen.len() < total {
            let Some((name, at)) = landed.recv().await else {
                break;
            };
            seen.entry(name).or_insert(at);
        }
        seen
    });

    let interval = Duration::from_secs_f64(1.0 / files_per_second);
    let started = Instant::now();
    for (i, m) in data.manifest.iter().enumerate() {
        let due = started + interval * i as u32;
        tokio::time::sleep_until(due.into()).await;
        std::fs::rename(data.staging.join(&m.file), landing.join(&m.file))?;
        let _ = tx.send((m.file.clone(), Instant::now()));
    }
    drop(tx);
    let mut renamed = HashMap::new();
    while let Some((name, at)) = rx.recv().await {
        renamed.insert(name, at);
    }
    let seen = tokio::time::timeout(Duration::from_secs(120), poller)
        .await
        .context("rows did not become visible within 2 minutes")??;
    let peak_rss_kib = peak_rss_of(&procs);
    drop(procs);
    // Every file's latency by the time it landed, for a look at where the tail comes from.
    let mut timeline: Vec<(f64, f64)> = renamed
        .iter()
        .filter_map(|(name, at)| {
            seen.get(name).map(|v| {
                (
                    at.saturating_duration_since(started).as_secs_f64(),
                    v.saturating_duration_since(*at).as_secs_f64() * 1000.0,
                )
            })
        })
        .collect();
    timeline.sort_by(|a, b| a.0.total_cmp(&b.0));
    let csv: String = std::iter::once("landed_s,latency_ms\n".to_string())
        .chain(timeline.iter().map(|(t, l)| format!("{t:.4},{l:.2}\n")))
        .collect();
    std::fs::write(root.join("latency.csv"), csv)?;
    let mut ms: Vec<f64> = renamed
        .iter()
        .filter_map(|(name, at)| {
            seen.get(name)
                .map(|v| v.saturating_duration_since(*at).as_secs_f64() * 1000.0)
        })
        .collect();
    if ms.len() != renamed.len() {
        bail!(
            "only {} of {} files became visible",
            ms.len(),
            renamed.len()
        );
    }
    ms.sort_by(f64::total_cmp);
    let pct = |p: f64| ms[((ms.len() as f64 - 1.0) * p).round() as usize];
    Ok(Latency {
        samples: ms.len(),
        p50_ms: pct(0.5),
        p90_ms: pct(0.9),
        p99_ms: pct(0.99),
        max_ms: pct(1.0),
        peak_rss_kib,
    })
}
