//! The delivery guarantee under fire: workers SIGKILLed at random moments, PostgreSQL
//! crash-restarted, workers added and removed mid-run. Each test has its own PostgreSQL
//! cluster because it restarts or stops it.
//!
//! Size is adjustable for the long variant (scripts/crash-test-long):
//! SLUICE_CRASH_FILES, SLUICE_CRASH_ROWS_PER_FILE, SLUICE_CRASH_KILLS, SLUICE_CRASH_PG_RESTARTS.

use std::path::Path;
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use sluice_testkit::pg::PgCluster;
use sluice_testkit::procs::{WorkerProc, WorkerSpec, tail};
use sluice_testkit::scenario::{Dataset, wait_settled};
use sluice_testkit::verify;

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Small batches and a short claim timeout, so kills land mid-batch and orphaned claims
/// are taken over quickly.
const WORKER_FLAGS: [&str; 10] = [
    "--max-files",
    "4",
    "--claim-timeout-seconds",
    "2",
    "--poll-interval-ms",
    "100",
    "--shutdown-grace-seconds",
    "10",
    "--log-format",
    "text",
];

fn worker(root: &Path, id: &str, url: &str) -> WorkerProc {
    let landing = root.join("landing");
    std::fs::create_dir_all(&landing).expect("landing");
    WorkerProc::spawn(WorkerSpec {
        id: id.into(),
        landing,
        checkpoint: root.join("checkpoints").join(id),
        database_url: url.into(),
        extra: WORKER_FLAGS.iter().map(|s| s.to_string()).collect(),
        log: root.join(format!("{id}.log")),
    })
    .expect("spawn worker")
}

fn logs(root: &Path, ids: &[&str]) -> String {
    ids.iter()
        .map(|id| {
            format!(
                "--- {id} ---\n{}",
                tail(&root.join(format!("{id}.log")), 25)
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_workers_survive_kills_and_postgres_restarts() {
    let files = env_or("SLUICE_CRASH_FILES", 300) as usize;
    let rows_per_file = env_or("SLUICE_CRASH_ROWS_PER_FILE", 1_000);
    let min_kills = env_or("SLUICE_CRASH_KILLS", 30) as u32;
    let min_pg_restarts = env_or("SLUICE_CRASH_PG_RESTARTS", 3) as u32;

    let cluster = std::sync::Arc::new(
        tokio::task::spawn_blocking(PgCluster::start)
            .await
            .expect("task")
            .expect("cluster"),
    );
    let db = cluster.create_database().await.expect("database");
    let tmp = tempfile::tempdir().expect("tempdir");
    let root = tmp.path();
    let data = Dataset::generate(root, files as u64, rows_per_file, 0.01, 11).expect("dataset");
    let landing = root.join("landing");
    let ids = ["w-0", "w-1", "w-2"];
    let mut workers: Vec<WorkerProc> = ids.iter().map(|id| worker(root, id, db.url())).collect();

    let mut rng = rand::rngs::StdRng::seed_from_u64(env_or("SLUICE_CRASH_SEED", 42));
    let (mut kills, mut pg_restarts, mut released) = (0u32, 0u32, 0usize);
    // Files are released over the whole chaos phase so that crashes hit a busy pipeline.
    let per_step = files.div_ceil(min_kills as usize).max(1);
    let started = Instant::now();
    while kills < min_kills || pg_restarts < min_pg_restarts || released < files {
        if released < files {
            let n = per_step.min(files - released);
            data.release(&landing, released..released + n)
                .expect("release");
            released += n;
        }
        tokio::time::sleep(Duration::from_millis(rng.random_range(50..400))).await;
        if kills < min_kills {
            let victim = rng.random_range(0..workers.len());
            workers[victim].crash_and_restart().expect("restart worker");
            kills += 1;
        }
        // Spread the PostgreSQL crashes over the run.
        if pg_restarts < min_pg_restarts
            && kills >= (pg_restarts + 1) * min_kills / (min_pg_restarts + 1)
        {
            let c = cluster.clone();
            tokio::task::spawn_blocking(move || c.restart_immediate())
                .await
                .expect("task")
                .expect("pg_ctl restart -m immediate");
            pg_restarts += 1;
        }
        for w in &mut workers {
            w.check_alive().unwrap_or_else(|e| panic!("{e}"));
        }
    }
    let chaos = started.elapsed();
    let client = db.connect().await.expect("connect");
    wait_settled(&client, &landing, files, Duration::from_secs(180), || {
        for w in &mut workers {
            w.check_alive()?;
        }
        Ok(())
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", logs(root, &ids)));
    let report = verify::check_exactly_once(&client, &data.expected)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", logs(root, &ids)));
    println!(
        "{report}; {kills} SIGKILLs, {pg_restarts} PostgreSQL crash restarts, chaos phase {:.1}s, total {:.1}s",
        chaos.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
    assert!(kills >= min_kills && pg_restarts >= min_pg_restarts);
    // The recovery paths really ran: some batches were replayed or recovered after kills.
    let replays = ids
        .iter()
        .map(|id| std::fs::read_to_string(root.join(format!("{id}.log"))).unwrap_or_default())
        .map(|log| {
            log.matches("replaying a batch").count()
                + log.matches("had committed before the restart").count()
        })
        .sum::<usize>();
    println!("batches settled after a restart: {replays}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rescale_two_three_one_with_a_worker_that_never_returns() {
    let cluster = tokio::task::spawn_blocking(PgCluster::start)
        .await
        .expect("task")
        .expect("cluster");
    let db = cluster.create_database().await.expect("database");
    let tmp = tempfile::tempdir().expect("tempdir");
    let root = tmp.path();
    let files = 120usize;
    let data = Dataset::generate(root, files as u64, 1_000, 0.01, 21).expect("dataset");
    let landing = root.join("landing");
    let ids = ["w-0", "w-1", "w-2"];

    // Two workers.
    let mut w0 = worker(root, "w-0", db.url());
    let mut w1 = worker(root, "w-1", db.url());
    for i in 0..40 {
        data.release(&landing, i..i + 1).expect("release");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    // Scale to three.
    let mut w2 = worker(root, "w-2", db.url());
    for i in 40..80 {
        data.release(&landing, i..i + 1).expect("release");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    // Scale to one: w-1 is stopped gracefully, w-2 dies and never comes back.
    w2.kill();
    let status = w1.terminate(Duration::from_secs(30)).expect("SIGTERM");
    assert!(status.success(), "w-1 exits cleanly on SIGTERM: {status}");
    data.release(&landing, 80..files).expect("release");

    let client = db.connect().await.expect("connect");
    wait_settled(&client, &landing, files, Duration::from_secs(120), || {
        w0.check_alive()
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", logs(root, &ids)));
    let report = verify::check_exactly_once(&client, &data.expected)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", logs(root, &ids)));
    println!("{report}");
    let per_worker = client
        .query(
            "SELECT worker_id, count(*) FROM sluice_files GROUP BY worker_id ORDER BY 1",
            &[],
        )
        .await
        .expect("per worker");
    let spread: Vec<(String, i64)> = per_worker.iter().map(|r| (r.get(0), r.get(1))).collect();
    println!("files per worker: {spread:?}");
    assert!(
        spread.len() >= 2,
        "work was spread across workers: {spread:?}"
    );
}
