//! `sluice-local`: runs the whole pipeline on this machine — an ephemeral PostgreSQL
//! (or the one in DATABASE_URL), a producer and N workers on a temporary landing
//! directory — shows live progress, and prints a summary with a few analysis queries.
//! Two examples: `shop` (default; the generator's e-commerce events into `events`) and
//! `iot` (sensor readings as gzip'd NDJSON into the declared table of
//! deploy/examples/schema/sensors.yaml; `sluice_testkit::sensors`).

use std::io::Write;
use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, Result, bail};
use clap::Parser;
use sluice_testkit::bins::try_bin_path;
use sluice_testkit::local::{self, LocalExample, thousands};
use sluice_testkit::pg::{PgCluster, PgOptions};
use sluice_testkit::procs::{http_get, send_signal};
use sluice_testkit::sensors::Example;
use sluice_testkit::sensors::producer::{Produced, Producer, ProducerOptions};

/// Run Sluice locally: generator + workers + PostgreSQL, with live progress and a
/// summary at the end. Stop early with Ctrl-C.
#[derive(Debug, Parser)]
#[command(name = "sluice-local", version, about, long_about)]
struct Args {
    /// Which example: `shop` (e-commerce events, CSV, the built-in `events` table) or
    /// `iot` (sensor readings, gzip'd NDJSON, the declared table of
    /// deploy/examples/schema/sensors.yaml).
    #[arg(long, value_enum, default_value = "shop")]
    example: LocalExample,
    /// How long the generator runs, in seconds (0 = until Ctrl-C).
    #[arg(long, default_value_t = 30)]
    duration: u64,
    /// Number of worker processes.
    #[arg(long, default_value_t = 2)]
    workers: usize,
    /// Events generated per second (0 = as fast as possible).
    #[arg(long, default_value_t = 20_000)]
    events_per_second: u64,
    /// Rows per generated file.
    #[arg(long, default_value_t = 2_000)]
    rows_per_file: u64,
    /// Share of deliberately bad rows.
    #[arg(long, default_value_t = 0.01)]
    bad_row_share: f64,
    /// Share of messy-but-valid rows (padding, odd case), which the workers clean and load.
    #[arg(long, default_value_t = 0.03)]
    messy_row_share: f64,
    /// Generator seed.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Format of the generated files: csv or ndjson (the workers tell by the file name).
    /// Shop only: the iot example's files are NDJSON, as its resource says.
    #[arg(long, default_value = "csv")]
    format: String,
    /// Compression of the generated files: none, gzip or zstd. Shop only (iot: gzip).
    #[arg(long, default_value = "none")]
    compress: String,
    /// Use this PostgreSQL instead of starting an ephemeral one (tables are created in it).
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    database_url: Option<String>,
    /// Keep the temporary directory (landing zone, archive, checkpoints, logs) afterwards.
    #[arg(long)]
    keep: bool,
    /// Work in this directory instead of a temporary one (created if missing, kept). The
    /// iot example writes its producer's manifest there (`sensors-manifest.jsonl`).
    #[arg(long)]
    work_dir: Option<PathBuf>,
}

/// What writes the landing files.
enum Feed {
    /// The e-commerce generator, a process.
    Generator(Proc),
    /// The IoT example's producer, a thread.
    Sensors(Producer),
}

impl Feed {
    fn running(&mut self) -> bool {
        match self {
            Feed::Generator(p) => p.running(),
            Feed::Sensors(p) => p.running(),
        }
    }

    /// Stops it; what the IoT producer wrote.
    fn stop(self) -> Result<Option<Produced>> {
        match self {
            Feed::Generator(mut p) => {
                p.stop(Duration::from_secs(10));
                Ok(None)
            }
            Feed::Sensors(p) => Ok(Some(p.stop()?)),
        }
    }
}

struct Proc {
    name: String,
    child: Child,
}

impl Proc {
    fn spawn(name: &str, cmd: &mut Command, log: &Path) -> Result<Proc> {
        let file =
            std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
        // Own process group: Ctrl-C reaches only us, and we stop the children in order.
        cmd.process_group(0)
            .stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file);
        let child = cmd.spawn().with_context(|| format!("starting {name}"))?;
        Ok(Proc {
            name: name.to_string(),
            child,
        })
    }

    fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    fn peak_rss_kib(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).ok()?;
        status
            .lines()
            .find(|l| l.starts_with("VmHWM:"))?
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()
    }

    fn stop(&mut self, grace: Duration) {
        if !self.running() {
            return;
        }
        send_signal(self.child.id(), libc::SIGTERM);
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if !self.running() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        eprintln!("{} did not stop within {grace:?}; killing it", self.name);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.running() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("sluice-local: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("\nsluice-local: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn binary(name: &str) -> Result<PathBuf> {
    try_bin_path(name).map_err(|m| anyhow::anyhow!(m))
}

async fn run(args: Args) -> Result<()> {
    if args.workers == 0 {
        bail!("--workers must be at least 1");
    }
    let worker_bin = binary("sluice-worker")?;
    let example = match args.example {
        LocalExample::Shop => None,
        LocalExample::Iot => Some(Example::load()?),
    };
    let (tmp, root) = match &args.work_dir {
        Some(dir) => {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
            (None, dir.clone())
        }
        None => {
            let tmp = tempfile::Builder::new().prefix("sluice-local-").tempdir()?;
            let root = tmp.path().to_path_buf();
            (Some(tmp), root)
        }
    };
    let landing = root.join("landing");
    let logs = root.join("logs");
    std::fs::create_dir_all(&landing)?;
    std::fs::create_dir_all(&logs)?;

    println!("Sluice local run — working directory {}", root.display());
    let (_cluster, url) = match &args.database_url {
        Some(url) => {
            println!("PostgreSQL: using DATABASE_URL");
            (None, url.clone())
        }
        None => {
            print!("PostgreSQL: starting an ephemeral cluster… ");
            std::io::stdout().flush().ok();
            let cluster =
                tokio::task::spawn_blocking(|| PgCluster::start_with(PgOptions::default()))
                    .await?
                    .context("starting PostgreSQL")?;
            let admin = cluster.connect("postgres").await?;
            admin.batch_execute("CREATE DATABASE sluice").await?;
            let url = cluster.url_for("sluice");
            println!("{url}");
            (Some(cluster), url)
        }
    };

    let config = root.join("worker-config.json");
    if let Some(example) = &example {
        local::iot::write_worker_config(example, &config)?;
    }
    let mut workers = Vec::new();
    let mut metrics_addrs = Vec::new();
    for i in 0..args.workers {
        let id = format!("worker-{i}");
        // Each worker's /metrics, for the cleaning counts in the summary.
        let metrics: SocketAddr = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
        metrics_addrs.push(metrics);
        let mut cmd = Command::new(&worker_bin);
        cmd.args(["--worker-id", &id, "--log-format", "text"])
            .args(["--metrics-addr", &metrics.to_string()]);
        if example.is_some() {
            cmd.arg("--config").arg(&config);
        }
        cmd.arg("--landing-dir")
            .arg(&landing)
            .arg("--checkpoint-dir")
            .arg(root.join("checkpoints").join(&id))
            .env("DATABASE_URL", &url);
        workers.push(Proc::spawn(&id, &mut cmd, &logs.join(format!("{id}.log")))?);
    }
    let client = connect_when_ready(&url, &mut workers, &logs).await?;

    let mut feed = match &example {
        None => {
            let mut gen_cmd = Command::new(binary("sluice-generator")?);
            gen_cmd
                .arg("--landing-dir")
                .arg(&landing)
                .args(["--metrics-addr", "none"])
                .args(["--events-per-second", &args.events_per_second.to_string()])
                .args(["--rows-per-file", &args.rows_per_file.to_string()])
                .args(["--bad-row-share", &args.bad_row_share.to_string()])
                .args(["--messy-row-share", &args.messy_row_share.to_string()])
                .args(["--seed", &args.seed.to_string()])
                .args(["--format", &args.format, "--compress", &args.compress]);
            let log = logs.join("generator.log");
            Feed::Generator(Proc::spawn("generator", &mut gen_cmd, &log)?)
        }
        Some(_) => Feed::Sensors(Producer::start(ProducerOptions {
            manifest: Some(root.join("sensors-manifest.jsonl")),
            rows_per_second: args.events_per_second,
            rows_per_file: args.rows_per_file,
            bad_share: args.bad_row_share,
            messy_share: args.messy_row_share,
            seed: args.seed,
            ..ProducerOptions::new(&landing)
        })),
    };
    println!(
        "Running: {} at {} rows/s, {} worker(s); {}. Logs in {}\n",
        match &example {
            None => "e-commerce generator".to_string(),
            Some(e) => format!(
                "IoT sensor producer (gzip'd NDJSON into {})",
                e.quoted_table()
            ),
        },
        args.events_per_second,
        args.workers,
        if args.duration == 0 {
            "Ctrl-C to stop".to_string()
        } else {
            format!("{} s (Ctrl-C stops early)", args.duration)
        },
        logs.display()
    );

    let started = Instant::now();
    let deadline = (args.duration > 0).then(|| started + Duration::from_secs(args.duration));
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    let mut last = (Instant::now(), 0i64);
    let mut interrupted = false;
    loop {
        tokio::select! {
            _ = &mut ctrl_c => { interrupted = true; }
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
        }
        let p = progress(&client, &landing).await?;
        let now = Instant::now();
        let rate = (p.loaded - last.1) as f64 / now.duration_since(last.0).as_secs_f64().max(0.001);
        last = (now, p.loaded);
        let alive = workers
            .iter_mut()
            .map(|w| w.running())
            .filter(|r| *r)
            .count();
        print!(
            "\r{:>6.1}s  loaded {:>10}  {:>8.0} rows/s  rejected {:>7}  backlog {:>4} files  lag {:>5.2}s  workers {alive}/{}   ",
            started.elapsed().as_secs_f64(),
            thousands(p.loaded),
            rate,
            thousands(p.rejected),
            p.backlog_files,
            p.lag_seconds,
            workers.len()
        );
        std::io::stdout().flush().ok();
        if alive == 0 {
            println!();
            bail!("all workers exited; see {}", logs.display());
        }
        if interrupted || deadline.is_some_and(|d| Instant::now() >= d) || !feed.running() {
            break;
        }
    }
    println!("\n\nStopping the producer and letting the workers drain the landing zone…");
    let produced = feed.stop()?;
    let drain_deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let p = progress(&client, &landing).await?;
        if p.backlog_files == 0 || Instant::now() > drain_deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let elapsed = started.elapsed();
    let rss: Vec<(String, u64)> = workers
        .iter()
        .filter_map(|w| w.peak_rss_kib().map(|k| (w.name.clone(), k)))
        .collect();
    let metrics: Vec<String> = metrics_addrs
        .iter()
        .filter_map(|a| http_get(*a, "/metrics").ok().map(|(_, body)| body))
        .collect();
    let cleaned = local::cleaned_counts(metrics.iter().map(String::as_str));
    for w in &mut workers {
        w.stop(Duration::from_secs(30));
    }
    let table = match &example {
        None => "events".to_string(),
        Some(e) => e.quoted_table(),
    };
    summary(&client, &table, elapsed, &rss).await?;
    let expected_cleaned = produced.as_ref().map(local::iot::expected_cleaned);
    local::print_cleaned(&cleaned, expected_cleaned.as_ref());
    match (&example, &produced) {
        (Some(example), Some(produced)) => {
            local::iot::summary(&client, example, produced).await?;
        }
        _ => local::shop::analysis(&client).await?,
    }
    match tmp {
        Some(tmp) if args.keep => println!("\nKept {}", tmp.keep().display()),
        Some(_) => {}
        None => println!("\nWork directory {}", root.display()),
    }
    Ok(())
}

async fn connect_when_ready(
    url: &str,
    workers: &mut [Proc],
    logs: &Path,
) -> Result<tokio_postgres::Client> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(client) = sluice_testkit::pg::connect(url).await {
            // The workers apply the migrations; wait until the ledger exists.
            if client
                .query_one("SELECT to_regclass('sluice_files') IS NOT NULL", &[])
                .await?
                .get::<_, bool>(0)
            {
                return Ok(client);
            }
        }
        if workers.iter_mut().map(|w| w.running()).all(|r| !r) {
            bail!(
                "the workers exited during start-up; see the logs in {}",
                logs.display()
            );
        }
        if Instant::now() > deadline {
            bail!(
                "the workers did not set up the database within 60 s; see {}",
                logs.display()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

struct Progress {
    loaded: i64,
    rejected: i64,
    backlog_files: usize,
    lag_seconds: f64,
}

async fn progress(client: &tokio_postgres::Client, landing: &Path) -> Result<Progress> {
    let row = client
        .query_one(
            "SELECT coalesce(sum(rows_loaded), 0)::int8, coalesce(sum(rows_rejected), 0)::int8 FROM sluice_files",
            &[],
        )
        .await?;
    let mut backlog_files = 0;
    let mut oldest: Option<SystemTime> = None;
    if let Ok(entries) = std::fs::read_dir(landing) {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if !sluice_core::landing::is_landing_file_name(&name) {
                continue;
            }
            backlog_files += 1;
            if let Ok(m) = e.metadata().and_then(|m| m.modified()) {
                oldest = Some(oldest.map_or(m, |o| o.min(m)));
            }
        }
    }
    let lag_seconds = oldest
        .and_then(|o| SystemTime::now().duration_since(o).ok())
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0);
    Ok(Progress {
        loaded: row.get(0),
        rejected: row.get(1),
        backlog_files,
        lag_seconds,
    })
}

async fn summary(
    client: &tokio_postgres::Client,
    table: &str,
    elapsed: Duration,
    rss: &[(String, u64)],
) -> Result<()> {
    let totals = client
        .query_one(
            "SELECT count(*) FILTER (WHERE outcome = 'loaded'), count(*) FILTER (WHERE outcome = 'failed'),
                    coalesce(sum(rows_loaded), 0)::int8, coalesce(sum(rows_rejected), 0)::int8
             FROM sluice_files",
            &[],
        )
        .await?;
    let (files, failed, loaded, rejected): (i64, i64, i64, i64) =
        (totals.get(0), totals.get(1), totals.get(2), totals.get(3));
    let stored: i64 = client
        .query_one(&format!("SELECT count(*) FROM {table}"), &[])
        .await?
        .get(0);
    println!("\n══ Summary ══════════════════════════════════════════════");
    println!("  ran for            {:.1} s", elapsed.as_secs_f64());
    println!(
        "  files loaded       {}  (set aside as unreadable: {failed})",
        thousands(files)
    );
    println!(
        "  rows loaded        {}  ({table} table holds {})",
        thousands(loaded),
        thousands(stored)
    );
    println!("  rows rejected      {}", thousands(rejected));
    println!(
        "  average rate       {:.0} rows/s",
        (loaded + rejected) as f64 / elapsed.as_secs_f64().max(0.001)
    );
    for (name, kib) in rss {
        println!("  peak RSS {name:<9} {:.1} MiB", *kib as f64 / 1024.0);
    }
    let reasons = client
        .query(
            "SELECT reason, count(*) FROM quarantine GROUP BY reason ORDER BY 2 DESC",
            &[],
        )
        .await?;
    if !reasons.is_empty() {
        println!("\n  Rejected rows by reason:");
        for r in reasons {
            println!(
                "    {:<22} {:>8}",
                r.get::<_, String>(0),
                thousands(r.get::<_, i64>(1))
            );
        }
    }
    Ok(())
}
