//! What the scale benchmark looks at besides throughput: seeding a large ledger, the
//! rows and files the worker has committed, the claims table's size and dead tuples,
//! the worker's ledger lookup on a large ledger, and listing big directories.

use std::path::Path;
use std::time::Instant;

use anyhow::{Context, Result};
use tokio_postgres::Client;

/// The pipeline the benchmark's worker runs under (the worker's default).
pub const PIPELINE: &str = sluice_core::config::DEFAULT_PIPELINE;

/// Files per seeded batch (a real batch holds at most 256 files).
const SEED_FILES_PER_BATCH: i64 = 250;

/// Fills the ledger with `files` synthetic files of the benchmark's pipeline, loaded
/// in batches of 250 a month ago by another worker: unique names (never those the
/// generator writes), unique content digests, the row counts of a 10,000-row file.
/// Then `VACUUM ANALYZE`, as autovacuum would have left a ledger that old. Returns
/// the seconds it took.
pub async fn seed_ledger(client: &Client, files: u64, rows_per_file: u64) -> Result<f64> {
    let started = Instant::now();
    let files = i64::try_from(files).context("seed file count")?;
    let rows = i64::try_from(rows_per_file).context("rows per file")?;
    let batches = (files + SEED_FILES_PER_BATCH - 1) / SEED_FILES_PER_BATCH;
    client
        .execute(
            "INSERT INTO sluice_batches
                 (batch_id, pipeline, worker_id, files, rows_loaded, rows_rejected, committed_at)
             SELECT md5('seed-batch-' || b)::uuid, $1, 'seed-worker', $2::int4,
                    $2::int4 * ($3::int8 - $3::int8 / 100), $2::int4 * ($3::int8 / 100),
                    now() - interval '30 days' + b * interval '1 second'
             FROM generate_series(0::int8, $4::int8 - 1) AS b",
            &[&PIPELINE, &(SEED_FILES_PER_BATCH as i32), &rows, &batches],
        )
        .await
        .context("seeding sluice_batches")?;
    client
        .execute(
            "INSERT INTO sluice_files
                 (pipeline, file_name, content_sha256, file_size, batch_id, worker_id, outcome,
                  rows_loaded, rows_rejected, parts, next_offset, committed_at)
             SELECT $1, 'events-20250101T000000Z-' || lpad(i::text, 8, '0') || '.csv',
                    sha256(convert_to('seed-' || i, 'UTF8')), $2::int8 * 120,
                    md5('seed-batch-' || (i / $3::int8))::uuid, 'seed-worker', 'loaded',
                    $2::int8 - $2::int8 / 100, $2::int8 / 100, 1, $2::int8 * 120,
                    now() - interval '30 days' + (i / $3::int8) * interval '1 second'
             FROM generate_series(0::int8, $4::int8 - 1) AS i",
            &[&PIPELINE, &rows, &SEED_FILES_PER_BATCH, &files],
        )
        .await
        .context("seeding sluice_files")?;
    // One statement each: VACUUM cannot run in the implicit transaction of a batch.
    for sql in [
        "VACUUM ANALYZE sluice_files",
        "VACUUM ANALYZE sluice_batches",
        "CHECKPOINT",
    ] {
        client
            .batch_execute(sql)
            .await
            .with_context(|| format!("{sql} after seeding"))?;
    }
    Ok(started.elapsed().as_secs_f64())
}

/// Files and valid rows `worker_id` has committed so far (from `sluice_batches`, which
/// stays small next to `sluice_files`, so polling it often costs little).
pub async fn committed(client: &Client, worker_id: &str) -> Result<(i64, i64)> {
    let row = client
        .query_one(
            "SELECT coalesce(sum(files), 0)::int8, coalesce(sum(rows_loaded), 0)::int8
             FROM sluice_batches WHERE worker_id = $1",
            &[&worker_id],
        )
        .await?;
    Ok((row.get(0), row.get(1)))
}

/// The claims table at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ClaimsStats {
    /// `pg_total_relation_size('sluice_claims')`: heap, indexes, TOAST.
    pub total_bytes: i64,
    pub live_tuples: i64,
    pub dead_tuples: i64,
    /// Autovacuum runs on the table so far.
    pub autovacuums: i64,
}

/// Reads [`ClaimsStats`] (statistics lag the table by up to a second).
pub async fn claims_stats(client: &Client) -> Result<ClaimsStats> {
    let row = client
        .query_one(
            "SELECT pg_total_relation_size('sluice_claims'), n_live_tup, n_dead_tup, autovacuum_count
             FROM pg_stat_user_tables WHERE relname = 'sluice_claims'",
            &[],
        )
        .await?;
    Ok(ClaimsStats {
        total_bytes: row.get(0),
        live_tuples: row.get(1),
        dead_tuples: row.get(2),
        autovacuums: row.get(3),
    })
}

/// (autovacuum, autoanalyze) runs on `table` so far.
pub async fn autovacuums(client: &Client, table: &str) -> Result<(i64, i64)> {
    let row = client
        .query_one(
            "SELECT autovacuum_count, autoanalyze_count FROM pg_stat_user_tables WHERE relname = $1",
            &[&table],
        )
        .await?;
    Ok((row.get(0), row.get(1)))
}

/// [`claims_stats`] once the worker's connections are closed: a backend sends its
/// statistics when it exits, so they are complete after a moment.
pub async fn claims_stats_settled(client: &Client) -> Result<ClaimsStats> {
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    claims_stats(client).await
}

/// The worker's ledger lookup for one batch, timed on the current ledger.
#[derive(Debug, Clone, Default)]
pub struct LookupProbe {
    /// Rows in `sluice_files` when measured.
    pub ledger_files: i64,
    /// Median wall time of `ledger::entries_by_name` for 256 names not in the ledger
    /// (the usual case: new files), in milliseconds, from the client.
    pub median_ms: f64,
    /// Server-side execution time from `EXPLAIN ANALYZE` of the same query, ms.
    pub explain_ms: f64,
    /// The plan's top node, to show whether the primary key serves the lookup.
    pub plan: String,
}

/// Times the worker's own lookup query (`ledger::entries_by_name`) for a batch of 256
/// unknown names, and explains it.
pub async fn ledger_lookup(client: &Client) -> Result<LookupProbe> {
    let ledger_files: i64 = client
        .query_one("SELECT count(*) FROM sluice_files", &[])
        .await?
        .get(0);
    let names: Vec<String> = (0..256)
        .map(|i| format!("events-20991231T000000Z-{i:08}.csv"))
        .collect();
    let mut times = Vec::new();
    for _ in 0..21 {
        let started = Instant::now();
        sluice_worker::ledger::entries_by_name(client, PIPELINE, &names).await?;
        times.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    times.sort_by(f64::total_cmp);
    let rows = client
        .query(
            "EXPLAIN (ANALYZE, COSTS OFF) SELECT file_name FROM sluice_files
             WHERE pipeline = $1 AND file_name = ANY($2)",
            &[&PIPELINE, &names],
        )
        .await?;
    let lines: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
    let explain_ms = lines
        .iter()
        .find_map(|l| l.strip_prefix("Execution Time: "))
        .and_then(|l| l.trim_end_matches(" ms").trim().parse().ok())
        .unwrap_or(f64::NAN);
    let plan = lines
        .first()
        .map(|l| l.split("  (").next().unwrap_or(l).trim().to_string())
        .unwrap_or_default();
    Ok(LookupProbe {
        ledger_files,
        median_ms: times[times.len() / 2],
        explain_ms,
        plan,
    })
}

/// A directory listed the way the worker lists the landing directory (names, then an
/// lstat per landing file, then a sort by age).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Listing {
    pub entries: usize,
    pub millis: f64,
}

/// Lists `dir` with the worker's own `source::list_landing` (median of 3).
pub fn list_like_worker(dir: &Path) -> Result<Listing> {
    let mut times = Vec::new();
    let mut entries = 0;
    for _ in 0..3 {
        let started = Instant::now();
        entries = sluice_worker::source::list_landing(dir)
            .with_context(|| format!("listing {}", dir.display()))?
            .len();
        times.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    times.sort_by(f64::total_cmp);
    Ok(Listing {
        entries,
        millis: times[1],
    })
}

/// The day folders under `archive/` and the files in each, with the time to list the
/// largest one.
pub fn archive_days(landing: &Path) -> Result<Vec<(String, Listing)>> {
    let archive = landing.join(sluice_core::landing::ARCHIVE_DIR);
    if !archive.is_dir() {
        return Ok(Vec::new());
    }
    let mut days = Vec::new();
    for entry in std::fs::read_dir(&archive)? {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            let started = Instant::now();
            let entries = std::fs::read_dir(entry.path())?.count();
            days.push((
                entry.file_name().to_string_lossy().into_owned(),
                Listing {
                    entries,
                    millis: started.elapsed().as_secs_f64() * 1000.0,
                },
            ));
        }
    }
    days.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(days)
}
