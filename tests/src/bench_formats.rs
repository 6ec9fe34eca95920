//! The input-format benchmark (issue 9): the same generated rows, written as plain CSV,
//! gzip'd CSV and NDJSON, each ingested by Sluice into a fresh database; the rates and
//! their ratios to plain CSV. Used by `sluice-bench --formats`; the figures are
//! reported, not asserted.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Result, bail};

use crate::pg::PgCluster;
use crate::procs::{WorkerProc, WorkerSpec};
use crate::scenario::Dataset;

/// What to measure: the dataset and the workers.
#[derive(Debug, Clone)]
pub struct FormatBench {
    /// Work directory (datasets, landing directories, logs).
    pub root: PathBuf,
    pub files: u64,
    pub rows_per_file: u64,
    pub bad_row_share: f64,
    pub seed: u64,
    pub workers: usize,
    /// Extra worker flags.
    pub worker_args: Vec<String>,
}

/// One input format's measurement.
#[derive(Debug, Clone)]
pub struct FormatRate {
    /// `plain CSV`, `gzip CSV`, `NDJSON`.
    pub label: &'static str,
    /// Valid rows stored per second, from release to the last file in the ledger.
    pub rows_per_second: f64,
    /// `rows_per_second` divided by plain CSV's.
    pub ratio_to_csv: f64,
    /// Bytes of the files on disk.
    pub bytes: u64,
}

/// The variants measured, with their generator flags.
const VARIANTS: [(&str, &[&str]); 3] = [
    ("plain CSV", &[]),
    ("gzip CSV", &["--compress", "gzip"]),
    ("NDJSON", &["--format", "ndjson"]),
];

/// Measures each format in turn on `pg` (a fresh database each); plain CSV first.
pub async fn bench_formats(pg: &PgCluster, params: &FormatBench) -> Result<Vec<FormatRate>> {
    let mut rates: Vec<FormatRate> = Vec::new();
    for (i, (label, flags)) in VARIANTS.iter().enumerate() {
        let dir = params.root.join(format!("formats-{i}"));
        eprintln!("formats: generating {label}");
        let data = Dataset::generate_with(
            &dir,
            params.files,
            params.rows_per_file,
            params.bad_row_share,
            params.seed,
            flags,
        )?;
        let bytes = data
            .manifest
            .iter()
            .map(|m| std::fs::metadata(data.staging.join(&m.file)).map(|s| s.len()))
            .sum::<std::io::Result<u64>>()?;
        let seconds = ingest(pg, &data, &dir, params).await?;
        let rows_per_second = data.expected.valid_rows() as f64 / seconds;
        eprintln!("formats: {label}: {seconds:.2} s, {rows_per_second:.0} rows/s");
        let base = rates.first().map_or(rows_per_second, |r| r.rows_per_second);
        rates.push(FormatRate {
            label,
            rows_per_second,
            ratio_to_csv: rows_per_second / base,
            bytes,
        });
    }
    Ok(rates)
}

/// Releases the dataset into a fresh landing directory and times the workers until
/// every file is in the ledger; checks the rows stored.
async fn ingest(pg: &PgCluster, data: &Dataset, dir: &Path, params: &FormatBench) -> Result<f64> {
    let db = pg.create_database().await?;
    let mut client = db.connect().await?;
    sluice_worker::migrate::migrate(&mut client).await?;
    let landing = dir.join("landing");
    std::fs::create_dir_all(&landing)?;
    let procs: Vec<WorkerProc> = (0..params.workers)
        .map(|i| {
            let checkpoint = dir.join(format!("ck-{i}"));
            std::fs::create_dir_all(&checkpoint)?;
            WorkerProc::spawn(WorkerSpec {
                id: format!("bench-{i}"),
                landing: landing.clone(),
                checkpoint,
                database_url: db.url().to_string(),
                extra: params
                    .worker_args
                    .iter()
                    .cloned()
                    .chain(["--after-commit".into(), "keep".into()])
                    .collect(),
                log: dir.join(format!("worker-{i}.log")),
            })
        })
        .collect::<Result<_>>()?;
    let ready_by = Instant::now() + Duration::from_secs(30);
    while client
        .query_one("SELECT count(*) FROM sluice_files", &[])
        .await
        .is_err()
    {
        if Instant::now() > ready_by {
            bail!("workers did not start within 30 s");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    client.batch_execute("CHECKPOINT").await?;
    let started = Instant::now();
    data.release(&landing, 0..data.manifest.len())?;
    let files = data.manifest.len() as i64;
    crate::scenario::wait_ledger_files(&client, files, Duration::from_secs(600)).await?;
    let seconds = started.elapsed().as_secs_f64();
    drop(procs);
    let loaded: i64 = client
        .query_one("SELECT count(*) FROM events", &[])
        .await?
        .get(0);
    if loaded as usize != data.expected.valid_rows() {
        bail!(
            "loaded {loaded} rows, expected {}",
            data.expected.valid_rows()
        );
    }
    Ok(seconds)
}

/// The table `sluice-bench` prints.
pub fn format_table(rates: &[FormatRate]) -> String {
    let mut out = format!(
        "{:<14} | {:>10} | {:>18} | {:>10}\n",
        "input format", "rows/s", "ratio to plain CSV", "MB on disk"
    );
    for r in rates {
        out.push_str(&format!(
            "{:<14} | {:>10.0} | {:>18.2} | {:>10.1}\n",
            r.label,
            r.rows_per_second,
            r.ratio_to_csv,
            r.bytes as f64 / 1e6
        ));
    }
    out
}
