//! `sluice-bench`: measures Sluice against raw `psql \copy` on one machine in one run.
//!
//! 1. Throughput: the same generated dataset is (a) loaded with `psql \copy` (valid rows
//!    only, into an identical table) and (b) ingested by Sluice workers from the landing
//!    directory with validation, quarantine and ledger. Once without, once with a primary
//!    key on `event_id`. Prints rows/s of each and the ratio.
//! 2. Latency: files are renamed into the landing directory at a steady offered rate and
//!    a poller records when each file's rows become visible; prints p50/p99.
//! 3. The workers' peak RSS (VmHWM).
//! 4. The declared-schema path (`spec.schema`): the same dataset, no key, loaded with the
//!    built-in e-commerce table written as a declared schema; printed as a ratio to the
//!    built-in fast path measured in the same run.
//!
//! Timing lives here and not in tests: the figures are reported, not asserted.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Parser;
use sluice_testkit::bench_latency::{
    LatencyBench, bench_latency, peak_rss_of, spawn_workers, wait_ready,
};
use sluice_testkit::bins::try_bin_path;
use sluice_testkit::pg::{PgCluster, PgOptions};
use sluice_testkit::scenario::Dataset;

/// Sluice benchmark: ingest rate versus raw psql \copy, file-to-row latency, worker RSS.
#[derive(Debug, Parser)]
#[command(name = "sluice-bench", about, long_about)]
struct Args {
    /// Rows in the throughput dataset.
    #[arg(long, default_value_t = 1_000_000)]
    rows: u64,
    /// Rows per file in the throughput dataset (the generator's default).
    #[arg(long, default_value_t = 10_000)]
    rows_per_file: u64,
    /// Share of bad rows in the datasets.
    #[arg(long, default_value_t = 0.01)]
    bad_row_share: f64,
    /// Worker processes for the throughput runs.
    #[arg(long, default_value_t = 1)]
    workers: usize,
    /// Offered rate for the latency run, rows per second.
    #[arg(long, default_value_t = 10_000)]
    latency_rows_per_second: u64,
    /// Rows per file in the latency run.
    #[arg(long, default_value_t = 100)]
    latency_rows_per_file: u64,
    /// Duration of the latency run, in seconds.
    #[arg(long, default_value_t = 20)]
    latency_seconds: u64,
    /// Extra worker flag (repeatable), e.g. --worker-arg=--max-bytes=4194304.
    #[arg(long = "worker-arg", allow_hyphen_values = true)]
    worker_args: Vec<String>,
    /// Skip the latency run.
    #[arg(long)]
    no_latency: bool,
    /// Skip the declared-schema run.
    #[arg(long)]
    no_declared: bool,
    /// Skip the runs with `--copy-format text` (the wire format before binary COPY).
    #[arg(long)]
    no_text_copy: bool,
    /// Skip the deduplication run (`--dedupe`, compared with `\copy` into a table with a
    /// primary key).
    #[arg(long)]
    no_dedupe: bool,
    /// Measure input formats (plain CSV, gzip CSV, NDJSON; on by default).
    #[arg(long, overrides_with = "no_formats")]
    formats: bool,
    /// Skip the input-format runs.
    #[arg(long)]
    no_formats: bool,
    /// Keep the work directory afterwards.
    #[arg(long)]
    keep: bool,
    /// The scale benchmark's flags (`--scale` runs it alone; see bench_scale).
    #[command(flatten)]
    scale: sluice_testkit::bench_scale::ScaleArgs,
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    for name in ["sluice-generator", "sluice-worker"] {
        try_bin_path(name).map_err(anyhow::Error::msg)?;
    }
    let work = tempfile::Builder::new().prefix("sluice-bench-").tempdir()?;
    let root = work.path().to_path_buf();
    eprintln!("work directory: {}", root.display());
    // Durable settings, the same for both contenders: fsync on, as in production.
    let pg = PgCluster::start_with(
        PgOptions::default()
            .setting("max_wal_size", "4GB")
            .setting("checkpoint_timeout", "30min"),
    )?;
    if args.scale.scale {
        let bench = sluice_testkit::bench_scale::ScaleBench {
            root: root.join("scale"),
            args: args.scale.clone(),
            bad_row_share: args.bad_row_share,
            worker_args: args.worker_args.clone(),
        };
        let report = sluice_testkit::bench_scale::bench_scale(&pg, &bench).await?;
        println!();
        print!("{}", sluice_testkit::bench_scale::format_report(&report));
        if args.keep {
            let kept = work.keep();
            eprintln!("kept {}", kept.display());
        }
        return Ok(());
    }
    let psql = pg.pg_bin().join("psql");
    if !psql.exists() {
        bail!(
            "psql not found next to the server binaries ({})",
            psql.display()
        );
    }

    let files = args.rows.div_ceil(args.rows_per_file);
    eprintln!("generating {files} files x {} rows", args.rows_per_file);
    let data = Dataset::generate(
        &root.join("data"),
        files,
        args.rows_per_file,
        args.bad_row_share,
        7,
    )?;
    let valid_csv = root.join("valid.csv");
    write_valid_rows(&data, &valid_csv)?;
    let valid_rows = data.expected.valid_rows() as u64;
    let total_rows: u64 = data.manifest.iter().map(|m| m.rows).sum();

    let mut results = Vec::new();
    for with_pk in [false, true] {
        let copy_s = bench_copy(&pg, &psql, &valid_csv, with_pk).await?;
        let sluice = bench_sluice(
            &pg,
            &data,
            &root,
            args.workers,
            with_pk,
            "",
            &args.worker_args,
        )
        .await?;
        results.push((with_pk, copy_s, sluice));
    }
    let with_flags = |flags: &[&str]| {
        let mut extra = args.worker_args.clone();
        extra.extend(flags.iter().map(|f| (*f).to_string()));
        extra
    };
    let mut text_copy = Vec::new();
    if !args.no_text_copy {
        let extra = with_flags(&["--copy-format", "text"]);
        for with_pk in [false, true] {
            let run =
                bench_sluice(&pg, &data, &root, args.workers, with_pk, "text", &extra).await?;
            text_copy.push((with_pk, run));
        }
    }
    let dedupe = if args.no_dedupe {
        None
    } else {
        let extra = with_flags(&["--dedupe"]);
        Some(bench_sluice(&pg, &data, &root, args.workers, false, "dedupe", &extra).await?)
    };
    let declared = if args.no_declared {
        None
    } else {
        let config = root.join("declared.json");
        let schema = sluice_core::schema::TableSchema::ecommerce(
            "events",
            sluice_core::config::WorkerConfig::default().future_tolerance_seconds,
        );
        std::fs::write(&config, serde_json::json!({ "schema": schema }).to_string())?;
        let mut extra = args.worker_args.clone();
        extra.extend(["--config".to_string(), config.display().to_string()]);
        Some(bench_sluice(&pg, &data, &root, args.workers, false, "declared", &extra).await?)
    };

    let formats = if args.no_formats {
        None
    } else {
        let params = sluice_testkit::bench_formats::FormatBench {
            root: root.join("formats"),
            files,
            rows_per_file: args.rows_per_file,
            bad_row_share: args.bad_row_share,
            seed: 7,
            workers: args.workers,
            worker_args: args.worker_args.clone(),
        };
        Some(sluice_testkit::bench_formats::bench_formats(&pg, &params).await?)
    };

    let latency = if args.no_latency {
        None
    } else {
        let params = LatencyBench {
            rows_per_second: args.latency_rows_per_second,
            rows_per_file: args.latency_rows_per_file,
            seconds: args.latency_seconds,
            bad_row_share: args.bad_row_share,
            workers: args.workers,
            worker_args: args.worker_args.clone(),
        };
        Some(bench_latency(&pg, &root, &params).await?)
    };

    println!();
    println!(
        "Sluice benchmark — {total_rows} rows ({valid_rows} valid) in {files} files, {} worker(s)",
        args.workers
    );
    println!(
        "{:<26} {:>14} {:>14} {:>8} {:>16}",
        "table", "psql \\copy r/s", "sluice r/s", "ratio", "worker peak RSS"
    );
    for (with_pk, copy_s, sluice) in &results {
        let copy_rate = valid_rows as f64 / copy_s;
        let sluice_rate = valid_rows as f64 / sluice.seconds;
        println!(
            "{:<26} {:>14.0} {:>14.0} {:>8.2} {:>12.1} MiB",
            if *with_pk {
                "PRIMARY KEY (event_id)"
            } else {
                "no key"
            },
            copy_rate,
            sluice_rate,
            sluice_rate / copy_rate,
            sluice.peak_rss_kib as f64 / 1024.0
        );
    }
    for (with_pk, text) in &text_copy {
        let Some((_, copy_s, binary)) = results.iter().find(|(pk, _, _)| pk == with_pk) else {
            continue;
        };
        let text_rate = valid_rows as f64 / text.seconds;
        println!(
            "{:<26} {:>14.0} {:>14.0} {:>8.2} {:>12.1} MiB   (binary / text COPY: {:.2})",
            if *with_pk {
                "PRIMARY KEY, COPY text"
            } else {
                "no key, COPY text"
            },
            valid_rows as f64 / copy_s,
            text_rate,
            text_rate * copy_s / valid_rows as f64,
            text.peak_rss_kib as f64 / 1024.0,
            text.seconds / binary.seconds,
        );
    }
    for (with_pk, _, run) in &results {
        let per_row = |cpu: f64| cpu * 1e6 / valid_rows as f64;
        println!(
            "CPU per valid row, {}: worker {:.2} µs, PostgreSQL {:.2} µs (of {:.2} µs wall per row; {:.2} cores busy); WAL {:.0} bytes per row",
            if *with_pk { "with key" } else { "no key" },
            per_row(run.worker_cpu_s),
            per_row(run.server_cpu_s),
            run.seconds * 1e6 / valid_rows as f64,
            (run.worker_cpu_s + run.server_cpu_s) / run.seconds,
            run.wal_bytes / valid_rows as f64
        );
    }
    if let (Some(d), Some((_, copy_pk_s, _))) = (&dedupe, results.iter().find(|r| r.0)) {
        let rate = valid_rows as f64 / d.seconds;
        println!(
            "dedupe (--dedupe) vs \\copy with PRIMARY KEY: {rate:.0} r/s, ratio {:.2}; worker peak RSS {:.1} MiB",
            rate * copy_pk_s / valid_rows as f64,
            d.peak_rss_kib as f64 / 1024.0
        );
    }
    if let (Some(d), Some((_, _, builtin))) = (&declared, results.first()) {
        let builtin_rate = valid_rows as f64 / builtin.seconds;
        let declared_rate = valid_rows as f64 / d.seconds;
        println!(
            "declared schema (general path), no key: {declared_rate:.0} r/s, {:.2}x the built-in fast path; worker peak RSS {:.1} MiB",
            declared_rate / builtin_rate,
            d.peak_rss_kib as f64 / 1024.0
        );
    }
    if let Some(rates) = &formats {
        print!("{}", sluice_testkit::bench_formats::format_table(rates));
    }
    if let Some(l) = latency {
        println!(
            "latency (file renamed -> rows visible) at {} rows/s offered, {} files: p50 {:.1} ms, p90 {:.1} ms, p99 {:.1} ms, max {:.1} ms; worker peak RSS {:.1} MiB",
            args.latency_rows_per_second,
            l.samples,
            l.p50_ms,
            l.p90_ms,
            l.p99_ms,
            l.max_ms,
            l.peak_rss_kib as f64 / 1024.0
        );
    }
    if args.keep {
        let kept = work.keep();
        eprintln!("kept {}", kept.display());
    }
    Ok(())
}

/// Writes the dataset's valid rows (header + rows) to one CSV, for `\copy`.
fn write_valid_rows(data: &Dataset, out: &Path) -> Result<()> {
    use std::io::Write;
    let mut w = std::io::BufWriter::new(std::fs::File::create(out)?);
    writeln!(w, "{}", sluice_core::event::HEADER)?;
    for m in &data.manifest {
        let bad: std::collections::HashSet<u64> = m.bad_lines.iter().map(|(l, _)| *l).collect();
        let bytes = std::fs::read(data.staging.join(&m.file))?;
        for (i, line) in bytes.split(|b| *b == b'\n').enumerate() {
            let n = i as u64 + 1;
            if n == 1 || line.is_empty() || bad.contains(&n) {
                continue;
            }
            w.write_all(line)?;
            w.write_all(b"\n")?;
        }
    }
    w.flush()?;
    Ok(())
}

async fn fresh_db(pg: &PgCluster) -> Result<sluice_testkit::pg::TestDb> {
    pg.create_database().await.map_err(Into::into)
}

/// (a) `psql \copy` into a table shaped like `events`; returns seconds.
async fn bench_copy(pg: &PgCluster, psql: &Path, csv: &Path, with_pk: bool) -> Result<f64> {
    let db = fresh_db(pg).await?;
    let mut client = db.connect().await?;
    sluice_worker::migrate::migrate(&mut client)
        .await
        .context("applying migrations")?;
    if with_pk {
        client
            .batch_execute("ALTER TABLE events ADD PRIMARY KEY (event_id)")
            .await?;
    }
    client.batch_execute("CHECKPOINT").await?;
    let started = Instant::now();
    let out = Command::new(psql)
        .arg(db.conn_string())
        .args(["-v", "ON_ERROR_STOP=1", "-q", "-c"])
        .arg(format!(
            "\\copy events FROM '{}' WITH (FORMAT csv, HEADER true)",
            csv.display()
        ))
        .output()
        .context("running psql")?;
    let seconds = started.elapsed().as_secs_f64();
    if !out.status.success() {
        bail!(
            "psql \\copy failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    eprintln!("psql \\copy (pk={with_pk}): {seconds:.2} s");
    Ok(seconds)
}

struct SluiceRun {
    seconds: f64,
    peak_rss_kib: u64,
    /// CPU seconds the workers and the server used during the run.
    worker_cpu_s: f64,
    server_cpu_s: f64,
    /// WAL bytes the server wrote during the run.
    wal_bytes: f64,
}

/// (b) Sluice ingesting the same files; returns seconds from release to the last commit.
async fn bench_sluice(
    pg: &PgCluster,
    data: &Dataset,
    root: &Path,
    workers: usize,
    with_pk: bool,
    variant: &str,
    worker_args: &[String],
) -> Result<SluiceRun> {
    let db = fresh_db(pg).await?;
    let mut client = db.connect().await?;
    sluice_worker::migrate::migrate(&mut client).await?;
    if with_pk {
        client
            .batch_execute("ALTER TABLE events ADD PRIMARY KEY (event_id)")
            .await?;
    }
    let tag = match (with_pk, variant) {
        (true, "") => "pk".to_string(),
        (true, v) => format!("pk-{v}"),
        (false, "") => "nopk".to_string(),
        (false, v) => format!("nopk-{v}"),
    };
    let tag = tag.as_str();
    let landing = root.join(format!("landing-{tag}"));
    std::fs::create_dir_all(&landing)?;
    // Hard links keep the staging copy for the next run and cost no copying.
    let staging = root.join(format!("staging-{tag}"));
    std::fs::create_dir_all(&staging)?;
    for m in &data.manifest {
        std::fs::hard_link(data.staging.join(&m.file), staging.join(&m.file))?;
    }
    let procs = spawn_workers(root, &landing, db.url(), workers, tag, worker_args, "keep")?;
    wait_ready(&client).await?;
    client.batch_execute("CHECKPOINT").await?;
    let server_pids = pg.server_pids()?;
    let worker_cpu = || -> f64 {
        procs
            .iter()
            .filter_map(|p| p.pid())
            .filter_map(|pid| sluice_testkit::cpu::cpu_seconds(pid, false))
            .sum()
    };
    let cpu_before = (
        worker_cpu(),
        sluice_testkit::cpu::server_cpu_seconds(&server_pids),
    );
    let wal_before: String = client
        .query_one("SELECT pg_current_wal_lsn()::text", &[])
        .await?
        .get(0);
    let started = Instant::now();
    for m in &data.manifest {
        std::fs::rename(staging.join(&m.file), landing.join(&m.file))?;
    }
    let files = data.manifest.len() as i64;
    sluice_testkit::scenario::wait_ledger_files(&client, files, Duration::from_secs(600)).await?;
    let seconds = started.elapsed().as_secs_f64();
    // Backends that ended during the run are in the postmaster's reaped-children time.
    let server_cpu_s = sluice_testkit::cpu::server_cpu_seconds(&pg.server_pids()?) - cpu_before.1;
    let worker_cpu_s = worker_cpu() - cpu_before.0;
    let wal_bytes: f64 = client
        .query_one(
            "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), $1::text::pg_lsn)::float8",
            &[&wal_before],
        )
        .await?
        .get(0);
    let loaded: i64 = client
        .query_one("SELECT count(*) FROM events", &[])
        .await?
        .get(0);
    if loaded as usize != data.expected.valid_rows() {
        bail!(
            "sluice loaded {loaded} rows, expected {}",
            data.expected.valid_rows()
        );
    }
    let peak_rss_kib = peak_rss_of(&procs);
    drop(procs);
    eprintln!("sluice ({tag}): {seconds:.2} s");
    Ok(SluiceRun {
        seconds,
        peak_rss_kib,
        worker_cpu_s,
        server_cpu_s,
        wal_bytes,
    })
}
