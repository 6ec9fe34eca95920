//! Reading landing files (issue 8): a file much larger than a part is loaded in several
//! transactions with the worker's memory bounded, and resumed from its last committed
//! part after a SIGKILL; a transient read error is retried, not taken as final.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use sluice_testkit::pg;
use sluice_testkit::procs::{self, WorkerProc, WorkerSpec, tail};
use sluice_testkit::scenario::{Dataset, wait_settled};
use sluice_testkit::verify;

/// 4 MiB parts: the 60 MB file takes about 15 transactions.
const PART_BYTES: &str = "4194304";
/// The goal of issue 8 (the pods' memory limit is 256 Mi; the worker must stay far below).
const MAX_PEAK_RSS_KIB: u64 = 64 * 1024;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_file_loads_in_parts_with_bounded_memory_and_resumes_after_a_kill() {
    let cluster = pg::shared().await;
    let db = cluster.create_database().await.expect("database");
    let client = db.connect().await.expect("connect");
    let tmp = tempfile::tempdir().expect("tempdir");
    let root = tmp.path();
    let data = Dataset::generate(root, 1, 600_000, 0.01, 81).expect("dataset");
    let name = data.manifest[0].file.clone();
    let size = std::fs::metadata(data.staging.join(&name))
        .expect("stat")
        .len();
    assert!(size > 40_000_000, "the file is large: {size} bytes");
    let spec = WorkerSpec::in_root(
        root,
        "w-0",
        db.url(),
        &[
            "--part-bytes",
            PART_BYTES,
            "--poll-interval-ms",
            "100",
            "--log-format",
            "text",
        ],
    );
    let landing = spec.landing.clone();
    let log_path = spec.log.clone();
    let log = || tail(&log_path, 30);
    data.release(&landing, 0..1).expect("release");
    let mut w = WorkerProc::spawn(spec).expect("worker");

    // SIGKILL once some parts have committed and the file is not finished.
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut last = String::from("no ledger row yet");
    loop {
        w.check_alive().unwrap_or_else(|e| panic!("{e}"));
        match client
            .query(
                "SELECT outcome, coalesce(parts, 0)::int8 FROM sluice_files WHERE file_name = $1",
                &[&name],
            )
            .await
        {
            Ok(rows) => {
                if let Some(row) = rows.first() {
                    let (outcome, parts): (String, i64) = (row.get(0), row.get(1));
                    if outcome == "partial" && parts >= 2 {
                        break;
                    }
                    assert_ne!(
                        outcome,
                        "loaded",
                        "loaded without a partial state seen (parts {parts})\n{}",
                        log()
                    );
                    last = format!("outcome {outcome}, parts {parts}");
                }
            }
            Err(e) => {
                let why = e.as_db_error().map(|d| d.message().to_string());
                last = format!("ledger query failed: {}", why.unwrap_or(e.to_string()));
            }
        }
        assert!(
            Instant::now() < deadline,
            "no 'partial' ledger row with parts >= 2 after 60 s ({last})\n{}",
            log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    w.crash_and_restart().expect("restart");

    wait_settled(&client, &landing, 1, Duration::from_secs(90), || {
        w.check_alive()
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", log()));
    let peak_kib = w.peak_rss_kib().expect("peak RSS of the second run");
    let status = w.terminate(Duration::from_secs(30)).expect("SIGTERM");
    assert!(status.success(), "clean exit: {status}");

    let report = verify::check_exactly_once(&client, &data.expected)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", log()));
    println!(
        "{report}; peak RSS after the restart {} MiB",
        peak_kib / 1024
    );
    let row = client
        .query_one(
            "SELECT outcome, parts::int8, next_offset FROM sluice_files WHERE file_name = $1",
            &[&name],
        )
        .await
        .expect("ledger row");
    let (outcome, parts, next_offset): (String, i64, i64) = (row.get(0), row.get(1), row.get(2));
    assert_eq!(outcome, "loaded");
    assert!(parts >= 10, "loaded in {parts} parts");
    assert_eq!(next_offset, size as i64, "a finished file ends at its size");
    assert!(
        std::fs::read_to_string(&log_path)
            .unwrap_or_default()
            .contains("resuming a large file"),
        "the restart resumed the file\n{}",
        log()
    );
    assert!(
        peak_kib < MAX_PEAK_RSS_KIB,
        "peak RSS {peak_kib} KiB, limit {MAX_PEAK_RSS_KIB} KiB"
    );
}

async fn get(addr: SocketAddr, path: &'static str) -> Option<(u16, String)> {
    tokio::task::spawn_blocking(move || procs::http_get(addr, path))
        .await
        .ok()?
        .ok()
}

async fn wait_ready(addr: SocketAddr, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if get(addr, "/readyz")
            .await
            .is_some_and(|(code, _)| code == 200)
        {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

/// A worker process started as another user (root ignores permission bits, so the
/// read-error test runs the worker as `postgres`). Killed when dropped.
struct UserWorker(std::process::Child);

impl UserWorker {
    fn check_alive(&mut self) -> anyhow::Result<()> {
        match self.0.try_wait()? {
            Some(status) => anyhow::bail!("the worker exited by itself with {status}"),
            None => Ok(()),
        }
    }
}

impl Drop for UserWorker {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn chown_r(path: &Path, uid: u32, gid: u32) {
    std::os::unix::fs::chown(path, Some(uid), Some(gid)).expect("chown");
    if path.is_dir() {
        for entry in std::fs::read_dir(path).expect("read dir").flatten() {
            chown_r(&entry.path(), uid, gid);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transient_read_error_is_retried() {
    use std::os::unix::fs::PermissionsExt as _;
    use std::os::unix::process::CommandExt as _;
    let tmp = tempfile::tempdir().expect("tempdir");
    let root = tmp.path();
    // The owner of a fresh directory is who we are.
    let as_root = std::os::unix::fs::MetadataExt::uid(&root.metadata().expect("stat")) == 0;
    let user = if as_root {
        match pg::user_ids(pg::SUPERUSER) {
            Ok(ids) => Some(ids),
            Err(e) => {
                println!("skipped: running as root and no user to drop to ({e})");
                return;
            }
        }
    } else {
        None
    };
    let cluster = pg::shared().await;
    let db = cluster.create_database().await.expect("database");
    let client = db.connect().await.expect("connect");
    let data = Dataset::generate(root, 1, 500, 0.0, 61).expect("dataset");
    let landing = root.join("landing");
    let checkpoint = root.join("checkpoints").join("w-0");
    std::fs::create_dir_all(&landing).expect("landing");
    std::fs::create_dir_all(&checkpoint).expect("checkpoint");
    if let Some((uid, gid)) = user {
        chown_r(root, uid, gid);
    }
    let addr = procs::free_local_addr();
    let log_path = root.join("w-0.log");
    let log = std::fs::File::create(&log_path).expect("log");
    let mut cmd = std::process::Command::new(sluice_testkit::bins::bin_path("sluice-worker"));
    cmd.args(["--worker-id", "w-0", "--landing-dir"])
        .arg(&landing)
        .arg("--checkpoint-dir")
        .arg(&checkpoint)
        .args([
            "--metrics-addr",
            &addr.to_string(),
            "--poll-interval-ms",
            "100",
        ])
        .args(["--log-format", "text"])
        .env("DATABASE_URL", db.url())
        .env("RUST_LOG", "info")
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone().expect("log"))
        .stderr(log);
    if let Some((uid, gid)) = user {
        cmd.uid(uid).gid(gid);
    }
    let mut w = UserWorker(cmd.spawn().expect("spawn worker"));
    let log = || tail(&log_path, 30);
    assert!(
        wait_ready(addr, Duration::from_secs(30)).await,
        "not ready\n{}",
        log()
    );

    // The file lands unreadable (mode 000), then becomes readable.
    let name = data.manifest[0].file.clone();
    let staged = data.staging.join(&name);
    std::fs::set_permissions(&staged, std::fs::Permissions::from_mode(0o000)).expect("chmod");
    data.release(&landing, 0..1).expect("release");
    let landed = Instant::now();
    while landed.elapsed() < Duration::from_secs(2) {
        let settled = client
            .query_one("SELECT count(*) FROM sluice_files", &[])
            .await
            .map_or(0, |r| r.get::<_, i64>(0));
        assert_eq!(
            settled,
            0,
            "the file was settled while unreadable\n{}",
            log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    std::fs::set_permissions(landing.join(&name), std::fs::Permissions::from_mode(0o644))
        .expect("chmod");

    wait_settled(&client, &landing, 1, Duration::from_secs(30), || {
        w.check_alive()
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", log()));
    let row = client
        .query_one(
            "SELECT outcome, coalesce(failure_reason, '') FROM sluice_files",
            &[],
        )
        .await
        .expect("ledger");
    let (outcome, reason): (String, String) = (row.get(0), row.get(1));
    assert_eq!(
        (outcome.as_str(), reason.as_str()),
        ("loaded", ""),
        "{}",
        log()
    );
    let retries = get(addr, "/metrics")
        .await
        .and_then(|(_, body)| procs::metric_value(&body, "sluice_worker_read_retries_total"));
    assert!(
        retries.is_some_and(|r| r >= 1.0),
        "sluice_worker_read_retries_total = {retries:?}"
    );
    verify::check_exactly_once(&client, &data.expected)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", log()));
}
