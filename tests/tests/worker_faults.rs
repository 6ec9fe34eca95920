//! Faults around the worker that are not crashes (issue 8): a frozen peer holding its
//! locks, database errors that are not about the data, a frozen PostgreSQL, a checkpoint
//! volume that cannot be written, and a database restored behind the checkpoint. Each
//! runs real worker processes against a real PostgreSQL; the test that freezes
//! PostgreSQL starts its own cluster. Reading faults: worker_large_files.rs.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use sluice_testkit::pg::{self, PgCluster};
use sluice_testkit::procs::{self, WorkerProc, WorkerSpec, tail};
use sluice_testkit::scenario::{Dataset, wait_settled};
use sluice_testkit::verify;
use tokio_postgres::Client;
use uuid::Uuid;

/// A worker with a quick listing and a text log (the tests grep it).
fn worker(root: &Path, id: &str, url: &str, extra: &[&str]) -> WorkerProc {
    let mut flags = vec!["--poll-interval-ms", "100", "--log-format", "text"];
    flags.extend_from_slice(extra);
    WorkerProc::spawn(WorkerSpec::in_root(root, id, url, &flags)).expect("spawn worker")
}

fn logs(root: &Path, ids: &[&str]) -> String {
    ids.iter()
        .map(|id| {
            format!(
                "--- {id} ---\n{}",
                tail(&root.join(format!("{id}.log")), 30)
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// `GET path` without blocking the runtime's threads (the client is synchronous).
async fn get(addr: SocketAddr, path: &'static str) -> Option<(u16, String)> {
    tokio::task::spawn_blocking(move || procs::http_get(addr, path))
        .await
        .ok()?
        .ok()
}

async fn status(addr: SocketAddr, path: &'static str) -> Option<u16> {
    get(addr, path).await.map(|(code, _)| code)
}

/// One sample of the worker's /metrics, e.g. `sluice_worker_degraded{cause="disk_full"}`.
async fn metric(addr: SocketAddr, sample: &str) -> Option<f64> {
    let (code, body) = get(addr, "/metrics").await?;
    if code != 200 {
        return None;
    }
    procs::metric_value(&body, sample)
}

fn degraded(cause: &str) -> String {
    format!("sluice_worker_degraded{{cause=\"{cause}\"}}")
}

async fn wait_status(addr: SocketAddr, path: &'static str, want: u16, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if status(addr, path).await == Some(want) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

async fn count(client: &Client, sql: &str) -> i64 {
    match client.query_one(sql, &[]).await {
        Ok(row) => row.get(0),
        Err(_) => -1, // tables not created yet
    }
}

async fn failed_files(client: &Client) -> i64 {
    count(
        client,
        "SELECT count(*) FROM sluice_files WHERE outcome = 'failed'",
    )
    .await
}

fn short_id() -> String {
    Uuid::new_v4().simple().to_string()[..8].to_string()
}

/// The query a role's session is running in an open transaction that has written
/// something, if it is a COPY (the worker loading a batch).
async fn copy_in_flight(client: &Client, role: &str) -> Option<String> {
    let rows = client
        .query(
            "SELECT query FROM pg_stat_activity WHERE usename::text = $1 \
             AND backend_xid IS NOT NULL AND query ILIKE '%copy%'",
            &[&role],
        )
        .await
        .ok()?;
    rows.first().map(|r| r.get(0))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frozen_peer_does_not_block_the_survivor() {
    let cluster = pg::shared().await;
    let db = cluster.create_database().await.expect("database");
    let admin = db.connect().await.expect("connect");
    // Worker A logs in as a role of its own so that its sessions can be picked out of
    // pg_stat_activity: it must be frozen while its COPY transaction is open.
    let role_a = format!("frozen_{}", short_id());
    admin
        .batch_execute(&format!("CREATE ROLE {role_a} LOGIN SUPERUSER"))
        .await
        .expect("create role");
    let tmp = tempfile::tempdir().expect("tempdir");
    let root = tmp.path();
    let files = 60usize;
    let data = Dataset::generate(root, files as u64, 2_000, 0.01, 31).expect("dataset");
    let landing = root.join("landing");
    let flags = ["--claim-timeout-seconds", "3", "--max-files", "4"];
    let mut a = worker(root, "w-a", &db.url_as(&role_a, "pw"), &flags);
    let mut b = worker(root, "w-b", db.url(), &flags);
    let ids = ["w-a", "w-b"];

    data.release(&landing, 0..4).expect("release");
    let deadline = Instant::now() + Duration::from_secs(30);
    while count(&admin, "SELECT count(*) FROM sluice_files").await < 1 {
        assert!(
            Instant::now() < deadline,
            "no first commit after 30 s\n{}",
            logs(root, &ids)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Release bursts until A is caught with its COPY transaction open, then SIGSTOP it
    // and check that the transaction is still open (A cannot have committed since).
    let (mut released, mut caught) = (4usize, None);
    while released < files && caught.is_none() {
        let n = 8.min(files - released);
        data.release(&landing, released..released + n)
            .expect("release");
        released += n;
        let until = Instant::now() + Duration::from_secs(3);
        while Instant::now() < until {
            if copy_in_flight(&admin, &role_a).await.is_some() {
                a.freeze();
                caught = copy_in_flight(&admin, &role_a).await;
                if caught.is_none() {
                    a.thaw();
                }
                break;
            }
        }
    }
    let query = caught.unwrap_or_else(|| {
        panic!(
            "worker A was never caught in the middle of a COPY\n{}",
            logs(root, &ids)
        )
    });
    let frozen_at = Instant::now();
    println!("froze A during: {query}");
    data.release(&landing, released..files).expect("release");

    // B takes A's files over after the claim timeout; A's transaction must end within
    // the claim timeout (its session timeouts), so B never waits for it for long.
    wait_settled(&admin, &landing, files, Duration::from_secs(30), || {
        b.check_alive()
    })
    .await
    .unwrap_or_else(|e| panic!("{e} while A is frozen\n{}", logs(root, &ids)));
    println!(
        "B finished all files {:.1}s after A froze",
        frozen_at.elapsed().as_secs_f64()
    );
    let b_log = std::fs::read_to_string(root.join("w-b.log")).unwrap_or_default();
    assert!(
        b_log.contains("took over claims"),
        "B must have taken A's claims over\n{}",
        logs(root, &ids)
    );

    a.thaw();
    let deadline = Instant::now() + Duration::from_secs(20);
    while count(&admin, "SELECT count(*) FROM sluice_claims").await != 0 {
        assert!(
            Instant::now() < deadline,
            "claims left over 20 s after A thawed\n{}",
            logs(root, &ids)
        );
        a.check_alive().unwrap_or_else(|e| panic!("{e}"));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    a.check_alive().unwrap_or_else(|e| panic!("{e}"));
    b.check_alive().unwrap_or_else(|e| panic!("{e}"));
    let report = verify::check_exactly_once(&admin, &data.expected)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", logs(root, &ids)));
    println!("{report}");
}

/// One database fault: SQL that starts it and SQL that lifts it (run on one session),
/// and the degraded causes the worker may report for it.
struct Fault {
    name: &'static str,
    begin: String,
    end: String,
    causes: &'static [&'static str],
    /// How long the fault lasts at least, so that retries really happen.
    hold: Duration,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn database_errors_that_are_not_about_the_data_are_retried() {
    let cluster = pg::shared().await;
    let db = cluster.create_database().await.expect("database");
    let admin = db.connect().await.expect("connect");
    let tmp = tempfile::tempdir().expect("tempdir");
    let root = tmp.path();
    let data = Dataset::generate(root, 12, 500, 0.02, 41).expect("dataset");
    let landing = root.join("landing");
    let addr = procs::free_local_addr();
    let addr_s = addr.to_string();
    let flags = [
        "--claim-timeout-seconds",
        "2",
        "--metrics-addr",
        addr_s.as_str(),
    ];

    // First run as the superuser: it creates the schema. Then the worker runs as a
    // plain role with rights on the tables, so that a REVOKE can bite.
    let mut w = worker(root, "w-0", db.url(), &flags);
    assert!(
        wait_status(addr, "/readyz", 200, Duration::from_secs(30)).await,
        "worker not ready\n{}",
        logs(root, &["w-0"])
    );
    w.terminate(Duration::from_secs(30)).expect("SIGTERM");
    let role = format!("sluice_w_{}", short_id());
    admin
        .batch_execute(&format!(
            "CREATE ROLE {role} LOGIN PASSWORD 'pw';
             GRANT CONNECT, CREATE, TEMPORARY ON DATABASE \"{}\" TO {role};
             GRANT USAGE, CREATE ON SCHEMA public TO {role};
             GRANT ALL ON ALL TABLES IN SCHEMA public TO {role};
             GRANT ALL ON ALL SEQUENCES IN SCHEMA public TO {role};",
            db.name()
        ))
        .await
        .expect("worker role");
    let mut w = worker(root, "w-0", &db.url_as(&role, "pw"), &flags);
    assert!(
        wait_status(addr, "/readyz", 200, Duration::from_secs(30)).await,
        "worker not ready as {role}\n{}",
        logs(root, &["w-0"])
    );
    data.release(&landing, 0..3).expect("release");
    wait_settled(&admin, &landing, 3, Duration::from_secs(30), || {
        w.check_alive()
    })
    .await
    .unwrap_or_else(|e| panic!("{e} (no fault yet)\n{}", logs(root, &["w-0"])));

    let faults = [
        Fault {
            name: "a lock on events",
            begin: "BEGIN; LOCK TABLE events IN ACCESS EXCLUSIVE MODE".into(),
            end: "COMMIT".into(),
            causes: &["lock_timeout", "statement_timeout"],
            hold: Duration::from_secs(6),
        },
        Fault {
            name: "INSERT on events revoked",
            begin: format!("REVOKE INSERT ON events FROM {role}"),
            end: format!("GRANT INSERT ON events TO {role}"),
            causes: &["permission_denied"],
            hold: Duration::from_secs(4),
        },
        Fault {
            name: "events renamed away",
            begin: "ALTER TABLE events RENAME TO events_away".into(),
            end: "ALTER TABLE events_away RENAME TO events".into(),
            causes: &["table_missing"],
            hold: Duration::from_secs(4),
        },
    ];
    let fault_session = db.connect().await.expect("connect");
    for (i, fault) in faults.iter().enumerate() {
        let name = fault.name;
        let released = 3 * (i + 2);
        fault_session
            .batch_execute(&fault.begin)
            .await
            .expect("start the fault");
        let started = Instant::now();
        data.release(&landing, released - 3..released)
            .expect("release");
        let (mut not_ready, mut cause) = (false, None);
        while started.elapsed() < fault.hold
            || (!(not_ready && cause.is_some()) && started.elapsed() < Duration::from_secs(20))
        {
            w.check_alive().unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(
                failed_files(&admin).await,
                0,
                "{name}: a file was failed\n{}",
                logs(root, &["w-0"])
            );
            not_ready |= status(addr, "/readyz").await == Some(503);
            for c in fault.causes {
                if metric(addr, &degraded(c)).await == Some(1.0) {
                    cause = Some(*c);
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        fault_session
            .batch_execute(&fault.end)
            .await
            .expect("lift the fault");
        assert!(
            not_ready,
            "{name}: /readyz never 503 during the fault\n{}",
            logs(root, &["w-0"])
        );
        let cause = cause.unwrap_or_else(|| {
            panic!(
                "{name}: no sluice_worker_degraded{{cause in {:?}}} = 1 during the fault\n{}",
                fault.causes,
                logs(root, &["w-0"])
            )
        });

        wait_settled(&admin, &landing, released, Duration::from_secs(30), || {
            w.check_alive()
        })
        .await
        .unwrap_or_else(|e| panic!("{name}, after the fault: {e}\n{}", logs(root, &["w-0"])));
        assert_eq!(failed_files(&admin).await, 0, "{name}: a file was failed");
        assert!(
            wait_status(addr, "/readyz", 200, Duration::from_secs(15)).await,
            "{name}: not ready again after the fault\n{}",
            logs(root, &["w-0"])
        );
        let deadline = Instant::now() + Duration::from_secs(15);
        while metric(addr, &degraded(cause)).await == Some(1.0) {
            assert!(
                Instant::now() < deadline,
                "{name}: still degraded ({cause}) 15 s after the fault"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let report = verify::check_exactly_once(&admin, &data.expected)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", logs(root, &["w-0"])));
    println!("{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn liveness_fails_when_postgres_is_frozen_with_work_pending() {
    // Its own cluster: this test freezes the server.
    let cluster = tokio::task::spawn_blocking(PgCluster::start)
        .await
        .expect("task")
        .expect("cluster");
    let db = cluster.create_database().await.expect("database");
    let tmp = tempfile::tempdir().expect("tempdir");
    let root = tmp.path();
    let data = Dataset::generate(root, 1, 200, 0.0, 71).expect("dataset");
    let landing = root.join("landing");
    let addr = procs::free_local_addr();
    let addr_s = addr.to_string();
    let mut w = worker(
        root,
        "w-0",
        db.url(),
        &[
            "--metrics-addr",
            &addr_s,
            "--liveness-timeout-seconds",
            "3",
            "--claim-timeout-seconds",
            "5",
        ],
    );
    let log = || logs(root, &["w-0"]);
    assert!(
        wait_status(addr, "/readyz", 200, Duration::from_secs(30)).await,
        "not ready\n{}",
        log()
    );
    // Idle for longer than the liveness timeout is not stuck: nothing to do.
    let idle = Instant::now();
    while idle.elapsed() < Duration::from_secs(5) {
        assert_eq!(
            status(addr, "/healthz").await,
            Some(200),
            "/healthz while idle\n{}",
            log()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    tokio::task::block_in_place(|| cluster.freeze()).expect("freeze postgres");
    let frozen = Instant::now();
    data.release(&landing, 0..1).expect("release");
    let mut unhealthy = false;
    while frozen.elapsed() < Duration::from_secs(15) {
        w.check_alive().unwrap_or_else(|e| panic!("{e}"));
        if status(addr, "/healthz").await == Some(503) {
            unhealthy = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    println!(
        "/healthz failed {:.1}s after PostgreSQL froze",
        frozen.elapsed().as_secs_f64()
    );
    tokio::task::block_in_place(|| cluster.thaw()).expect("thaw postgres");
    assert!(
        unhealthy,
        "/healthz still 200 15 s after PostgreSQL froze with a file pending\n{}",
        log()
    );

    assert!(
        wait_status(addr, "/healthz", 200, Duration::from_secs(30)).await,
        "/healthz not 200 again 30 s after the thaw\n{}",
        log()
    );
    let client = db.connect().await.expect("connect");
    wait_settled(&client, &landing, 1, Duration::from_secs(30), || {
        w.check_alive()
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", log()));
    verify::check_exactly_once(&client, &data.expected)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", log()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stuck_claims_are_not_renewed_without_progress() {
    let cluster = pg::shared().await;
    let db = cluster.create_database().await.expect("database");
    let client = db.connect().await.expect("connect");
    let tmp = tempfile::tempdir().expect("tempdir");
    let root = tmp.path();
    let data = Dataset::generate(root, 10, 1_000, 0.01, 91).expect("dataset");
    let landing = root.join("landing");
    let ids = ["w-a", "w-b"];
    let addr = procs::free_local_addr();
    let addr_s = addr.to_string();
    let mut a = worker(
        root,
        "w-a",
        db.url(),
        &["--claim-timeout-seconds", "2", "--metrics-addr", &addr_s],
    );
    assert!(
        wait_status(addr, "/readyz", 200, Duration::from_secs(30)).await,
        "A not ready\n{}",
        logs(root, &ids)
    );
    // A's checkpoint volume breaks once A is running (its checkpoint opened): no plan
    // can be written any more.
    let plans = root.join("checkpoints").join("w-a").join("plans");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !plans.is_dir() {
        assert!(
            Instant::now() < deadline,
            "A never created {}",
            plans.display()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    std::fs::remove_dir_all(&plans).expect("rm -r plans");
    std::fs::write(&plans, b"").expect("touch plans");
    data.release(&landing, 0..10).expect("release");
    // A must hold on to no claim for longer than the claim timeout (2 s) without
    // progress, so after 3 s B can take every file; meanwhile A reports the broken volume.
    let released = Instant::now();
    let mut reported = false;
    while released.elapsed() < Duration::from_secs(3) {
        a.check_alive().unwrap_or_else(|e| panic!("{e}"));
        reported |= metric(addr, &degraded("checkpoint_unwritable")).await == Some(1.0);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut b = worker(root, "w-b", db.url(), &["--claim-timeout-seconds", "2"]);
    wait_settled(&client, &landing, 10, Duration::from_secs(20), || {
        a.check_alive()?;
        b.check_alive()
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", logs(root, &ids)));
    let by_a = count(
        &client,
        "SELECT count(*) FROM sluice_files WHERE worker_id = 'w-a'",
    )
    .await;
    assert_eq!(by_a, 0, "A committed without writing a plan");
    assert!(
        reported,
        "A never reported sluice_worker_degraded{{cause=\"checkpoint_unwritable\"}} = 1\n{}",
        logs(root, &ids)
    );

    a.check_alive().unwrap_or_else(|e| panic!("{e}"));
    let report = verify::check_exactly_once(&client, &data.expected)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", logs(root, &ids)));
    println!("{report}");
}

/// Event ids of a generated file's lines (invalid ones never reach `events` anyway;
/// some bad lines are not UTF-8, so the file is read as bytes).
fn event_ids(path: &Path) -> Vec<Uuid> {
    let bytes = std::fs::read(path).expect("read a generated file");
    bytes
        .split(|b| *b == b'\n')
        .skip(1)
        .filter_map(|l| Uuid::try_parse_ascii(l.split(|b| *b == b',').next()?).ok())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_behind_the_checkpoint_is_detected_and_reingested() {
    let cluster = pg::shared().await;
    let db = cluster.create_database().await.expect("database");
    let client = db.connect().await.expect("connect");
    let tmp = tempfile::tempdir().expect("tempdir");
    let root = tmp.path();
    let data = Dataset::generate(root, 5, 1_000, 0.02, 51).expect("dataset");
    let landing = root.join("landing");
    let addr = procs::free_local_addr();
    let addr_s = addr.to_string();
    let mut w = worker(root, "w-0", db.url(), &["--metrics-addr", &addr_s]);
    let log = || logs(root, &["w-0"]);

    data.release(&landing, 0..3).expect("release");
    wait_settled(&client, &landing, 3, Duration::from_secs(30), || {
        w.check_alive()
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", log()));
    // The last two files commit in later batches than the first three.
    let lost: Vec<String> = data.manifest[3..5].iter().map(|m| m.file.clone()).collect();
    let lost_ids: Vec<Uuid> = lost
        .iter()
        .flat_map(|f| event_ids(&data.staging.join(f)))
        .collect();
    data.release(&landing, 3..5).expect("release");
    wait_settled(&client, &landing, 5, Duration::from_secs(30), || {
        w.check_alive()
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", log()));
    let status = w.terminate(Duration::from_secs(30)).expect("SIGTERM");
    assert!(status.success(), "clean exit: {status}");

    // The restore loses the batches of the last two files.
    let batches: Vec<Uuid> = client
        .query(
            "SELECT DISTINCT batch_id FROM sluice_files WHERE file_name = ANY($1)",
            &[&lost],
        )
        .await
        .expect("batches")
        .iter()
        .map(|r| r.get(0))
        .collect();
    let shared_batches: i64 = client
        .query_one(
            "SELECT count(*) FROM sluice_files WHERE batch_id = ANY($1) AND NOT file_name = ANY($2)",
            &[&batches, &lost],
        )
        .await
        .expect("count")
        .get(0);
    assert_eq!(
        shared_batches, 0,
        "the first files committed in other batches"
    );
    let state: serde_json::Value = serde_json::from_slice(
        &std::fs::read(root.join("checkpoints/w-0/state.json")).expect("state.json"),
    )
    .expect("state.json is JSON");
    let last = state["last_committed_batch"].as_str().unwrap_or_default();
    assert!(
        batches.iter().any(|b| b.to_string() == last),
        "state.json's last batch {last} is one of the lost ones {batches:?}"
    );
    let mut tx_client = db.connect().await.expect("connect");
    let tx = tx_client.transaction().await.expect("begin");
    tx.execute(
        "DELETE FROM quarantine WHERE batch_id = ANY($1)",
        &[&batches],
    )
    .await
    .expect("delete quarantine");
    tx.execute("DELETE FROM events WHERE event_id = ANY($1)", &[&lost_ids])
        .await
        .expect("delete events");
    tx.execute(
        "DELETE FROM sluice_files WHERE batch_id = ANY($1)",
        &[&batches],
    )
    .await
    .expect("delete ledger");
    tx.execute(
        "DELETE FROM sluice_batches WHERE batch_id = ANY($1)",
        &[&batches],
    )
    .await
    .expect("delete batches");
    tx.commit().await.expect("commit");

    w.crash_and_restart().expect("start again");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !std::fs::read_to_string(root.join("w-0.log"))
        .unwrap_or_default()
        .contains("database behind the checkpoint")
    {
        assert!(
            Instant::now() < deadline,
            "no \"database behind the checkpoint\" in the log\n{}",
            log()
        );
        w.check_alive().unwrap_or_else(|e| panic!("{e}"));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    wait_settled(&client, &landing, 5, Duration::from_secs(30), || {
        w.check_alive()
    })
    .await
    .unwrap_or_else(|e| panic!("{e} (the lost files were not re-ingested)\n{}", log()));
    assert_eq!(
        metric(addr, &degraded("restored_behind_checkpoint")).await,
        Some(1.0),
        "degraded cause restored_behind_checkpoint"
    );
    assert_eq!(
        metric(addr, "sluice_worker_reingested_files_total").await,
        Some(2.0),
        "two archived files put back"
    );
    let report = verify::check_exactly_once(&client, &data.expected)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", log()));
    println!("{report}");
}
