//! One worker against a real PostgreSQL: exact results against the generator's manifest,
//! unreadable files set aside, readiness following the database, dedupe, SIGTERM.

use std::time::{Duration, Instant};

use sluice_testkit::pg::{self, PgCluster};
use sluice_testkit::procs::{WorkerProc, WorkerSpec, tail};
use sluice_testkit::scenario::{Dataset, wait_settled};
use sluice_testkit::verify;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_worker_loads_exactly_the_manifest() {
    let cluster = pg::shared().await;
    let db = cluster.create_database().await.expect("database");
    let root = tempfile::tempdir().expect("tempdir");
    let data = Dataset::generate(root.path(), 25, 2_000, 0.05, 7).expect("dataset");
    let s = WorkerSpec::in_root(root.path(), "w-0", db.url(), &["--max-files", "4"]);
    let landing = s.landing.clone();
    data.release(&landing, 0..data.manifest.len())
        .expect("release");
    let mut w = WorkerProc::spawn(s).expect("worker");
    let client = db.connect().await.expect("connect");
    let log = root.path().join("w-0.log");
    wait_settled(&client, &landing, 25, Duration::from_secs(120), || {
        w.check_alive()
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\nworker log:\n{}", tail(&log, 40)));
    let report = verify::check_exactly_once(&client, &data.expected)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    println!("{report}");
    assert!(
        data.expected.rejects.len() > 2_000,
        "the dataset must contain bad rows"
    );
    // Archived into a dated folder, nothing left in the landing zone.
    let archived: usize = std::fs::read_dir(landing.join("archive"))
        .expect("archive dir")
        .flatten()
        .map(|day| {
            std::fs::read_dir(day.path())
                .map(|d| d.count())
                .unwrap_or(0)
        })
        .sum();
    assert_eq!(archived, 25);
    // The quarantine keeps the raw line and a message a person can read.
    let row = client
        .query_one(
            "SELECT raw_line, message FROM quarantine WHERE reason = 'negative_quantity' LIMIT 1",
            &[],
        )
        .await
        .expect("a negative_quantity reject");
    let (raw, message): (String, String) = (row.get(0), row.get(1));
    assert!(raw.contains(",-"), "raw line kept: {raw}");
    assert!(message.contains("quantity"), "message explains: {message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreadable_files_are_set_aside_with_a_reason() {
    let cluster = pg::shared().await;
    let db = cluster.create_database().await.expect("database");
    let root = tempfile::tempdir().expect("tempdir");
    let s = WorkerSpec::in_root(root.path(), "w-0", db.url(), &[]);
    let landing = s.landing.clone();
    std::fs::write(landing.join("binary.csv"), b"\x00\x01\x02\x00PK\x03\x04").expect("write");
    std::fs::write(landing.join("wrong-header.csv"), b"id,name\n1,x\n").expect("write");
    std::fs::write(landing.join("empty.csv"), b"").expect("write");
    std::fs::write(
        landing.join("good.csv"),
        format!(
            "{}\n6f1b5a2e-0c1d-4e5f-8a9b-0c1d2e3f4a5b,2026-11-25T10:00:00.000Z,1,s-1-1,view,7,books,12.50,0\n",
            sluice_core::HEADER
        ),
    )
    .expect("write");
    let mut w = WorkerProc::spawn(s).expect("worker");
    let client = db.connect().await.expect("connect");
    wait_settled(&client, &landing, 4, Duration::from_secs(60), || {
        w.check_alive()
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", tail(&root.path().join("w-0.log"), 40)));
    let rows = client
        .query(
            "SELECT file_name, outcome, coalesce(failure_reason, '') FROM sluice_files ORDER BY file_name",
            &[],
        )
        .await
        .expect("ledger");
    let got: Vec<(String, String, String)> = rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    assert_eq!(
        got,
        vec![
            ("binary.csv".into(), "failed".into(), "binary_file".into()),
            ("empty.csv".into(), "failed".into(), "empty_file".into()),
            ("good.csv".into(), "loaded".into(), "".into()),
            (
                "wrong-header.csv".into(),
                "failed".into(),
                "bad_header".into()
            ),
        ]
    );
    for name in ["binary.csv", "empty.csv", "wrong-header.csv"] {
        assert!(
            landing.join("failed").join(name).exists(),
            "{name} set aside"
        );
        let note =
            std::fs::read_to_string(landing.join("failed").join(format!("{name}.reason.txt")))
                .expect("reason file");
        assert!(note.contains("reason: "), "{note}");
    }
    let events: i64 = client
        .query_one("SELECT count(*) FROM events", &[])
        .await
        .expect("count")
        .get(0);
    assert_eq!(events, 1, "the good file still loads");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dedupe_skips_event_ids_already_stored() {
    let cluster = pg::shared().await;
    let db = cluster.create_database().await.expect("database");
    let root = tempfile::tempdir().expect("tempdir");
    let data = Dataset::generate(root.path(), 2, 500, 0.0, 3).expect("dataset");
    let s = WorkerSpec::in_root(
        root.path(),
        "w-0",
        db.url(),
        &[
            "--dedupe",
            "--after-commit",
            "delete",
            "--load-redeliveries",
        ],
    );
    let landing = s.landing.clone();
    // The same content under a second name (a re-delivery, loaded on purpose here):
    // every row is a duplicate.
    let first = &data.manifest[0].file;
    std::fs::copy(data.staging.join(first), landing.join("copy-of-first.csv")).expect("copy");
    data.release(&landing, 0..2).expect("release");
    let mut w = WorkerProc::spawn(s).expect("worker");
    let client = db.connect().await.expect("connect");
    wait_settled(&client, &landing, 3, Duration::from_secs(60), || {
        w.check_alive()
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", tail(&root.path().join("w-0.log"), 40)));
    let row = client
        .query_one("SELECT count(*), count(DISTINCT event_id) FROM events", &[])
        .await
        .expect("count");
    assert_eq!((row.get::<_, i64>(0), row.get::<_, i64>(1)), (1_000, 1_000));
    let dedup: i64 = client
        .query_one(
            "SELECT sum(rows_deduplicated)::int8 FROM sluice_batches",
            &[],
        )
        .await
        .expect("sum")
        .get(0);
    assert_eq!(dedup, 500);
    assert!(
        std::fs::read_dir(&landing)
            .expect("dir")
            .flatten()
            .all(|e| e.path().is_dir()),
        "files deleted"
    );
}

async fn http_status(addr: &str, path: &str) -> Option<u16> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.ok()?;
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .ok()?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).await.ok()?;
    buf.split_whitespace().nth(1)?.parse().ok()
}

async fn wait_status(addr: &str, path: &str, want: u16, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if http_status(addr, path).await == Some(want) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

/// PostgreSQL goes away: the worker stays alive, reports not-ready, and loads the file
/// that landed meanwhile once the database is back. Also: SIGTERM exits cleanly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_follows_the_database_and_sigterm_is_clean() {
    // Its own cluster: this test stops the server.
    let cluster = tokio::task::spawn_blocking(PgCluster::start)
        .await
        .expect("task")
        .expect("cluster");
    let db = cluster.create_database().await.expect("database");
    let root = tempfile::tempdir().expect("tempdir");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port")
        .port();
    let addr = format!("127.0.0.1:{port}");
    let s = WorkerSpec::in_root(root.path(), "w-0", db.url(), &["--metrics-addr", &addr]);
    let landing = s.landing.clone();
    let data = Dataset::generate(root.path(), 2, 100, 0.0, 5).expect("dataset");
    let mut w = WorkerProc::spawn(s).expect("worker");
    assert!(
        wait_status(&addr, "/readyz", 200, Duration::from_secs(30)).await,
        "ready with the database up"
    );
    data.release(&landing, 0..1).expect("release");
    let client = db.connect().await.expect("connect");
    wait_settled(&client, &landing, 1, Duration::from_secs(30), || {
        w.check_alive()
    })
    .await
    .expect("first file");
    drop(client);

    cluster.stop_immediate().expect("stop postgres");
    assert!(
        wait_status(&addr, "/readyz", 503, Duration::from_secs(30)).await,
        "not ready without the database"
    );
    data.release(&landing, 1..2).expect("release");
    tokio::time::sleep(Duration::from_secs(2)).await;
    w.check_alive().expect("worker survives the outage");
    assert_eq!(
        http_status(&addr, "/healthz").await,
        Some(200),
        "still live"
    );

    cluster.start_again().expect("start postgres");
    let client = db.connect().await.expect("connect");
    wait_settled(&client, &landing, 2, Duration::from_secs(60), || {
        w.check_alive()
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", tail(&root.path().join("w-0.log"), 40)));
    assert!(
        wait_status(&addr, "/readyz", 200, Duration::from_secs(30)).await,
        "ready again"
    );
    verify::check_exactly_once(&client, &data.expected)
        .await
        .expect("exactly once");

    let status = w
        .terminate(Duration::from_secs(30))
        .expect("exits on SIGTERM");
    assert!(status.success(), "clean exit, got {status}");
}

/// The worker's row and file counters (which the operator sums into the pipeline's
/// status) start from its totals in the ledger: a restart under the same id does not
/// make them drop.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counters_continue_from_the_ledger_after_a_restart() {
    use sluice_testkit::procs::{free_local_addr, http_get, metric_value};
    let cluster = pg::shared().await;
    let db = cluster.create_database().await.expect("database");
    let client = db.connect().await.expect("connect");
    let root = tempfile::tempdir().expect("tempdir");
    let data = Dataset::generate(root.path(), 4, 300, 0.05, 17).expect("dataset");
    let metrics = free_local_addr();
    let addr = metrics.to_string();
    let spec = WorkerSpec::in_root(root.path(), "w-0", db.url(), &["--metrics-addr", &addr]);
    let landing = spec.landing.clone();
    let log = spec.log.clone();
    let mut w = WorkerProc::spawn(spec).expect("worker");
    data.release(&landing, 0..4).expect("release");
    w.settle(&client, 4, Duration::from_secs(60)).await;
    let ledger = client
        .query_one(
            "SELECT sum(rows_loaded)::int8, sum(rows_rejected)::int8 FROM sluice_batches WHERE worker_id = 'w-0'",
            &[],
        )
        .await
        .expect("ledger");
    let (loaded, rejected): (i64, i64) = (ledger.get(0), ledger.get(1));
    assert!(loaded > 1_000 && rejected > 10, "{loaded} {rejected}");

    let counters = |text: &str| {
        (
            metric_value(text, "sluice_worker_rows_total{outcome=\"loaded\"}"),
            metric_value(text, "sluice_worker_rows_total{outcome=\"rejected\"}"),
            metric_value(text, "sluice_worker_files_total{outcome=\"loaded\"}"),
        )
    };
    let expected = (Some(loaded as f64), Some(rejected as f64), Some(4.0));
    let (_, before) = http_get(metrics, "/metrics").expect("metrics");
    assert_eq!(counters(&before), expected, "before the restart");

    w.crash_and_restart().expect("restart");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok((200, text)) = http_get(metrics, "/metrics")
            && counters(&text) == expected
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the counters did not continue from the ledger after the restart\n{}",
            tail(&log, 20)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
