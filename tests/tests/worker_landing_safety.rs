//! File-level hazards of a real landing zone (issue 8): a file name reused with new
//! content, identical content under a new name, two pipelines sharing a database, symlinks
//! planted by a producer, and an archive that cannot be written. Nothing may be lost,
//! loaded twice, overwritten, or spun on.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use sluice_testkit::pg::{self, TestDb};
use sluice_testkit::procs::{self, WorkerProc, WorkerSpec, tail};
use tokio_postgres::Client;
use uuid::Uuid;

/// `n` valid data rows with fresh event ids.
fn rows(n: usize, category: &str) -> Vec<(Uuid, String)> {
    (0..n)
        .map(|i| {
            let id = Uuid::new_v4();
            let line = format!("{id},2026-11-25T10:00:00Z,{i},s-{i},view,7,{category},12.50,0");
            (id, line)
        })
        .collect()
}

/// A landing file holding `rows` after the header.
fn csv(rows: &[(Uuid, String)]) -> Vec<u8> {
    let mut out = format!("{}\n", sluice_core::HEADER);
    for (_, line) in rows {
        out.push_str(line);
        out.push('\n');
    }
    out.into_bytes()
}

fn ids(rows: &[(Uuid, String)]) -> Vec<Uuid> {
    rows.iter().map(|(id, _)| *id).collect()
}

use sluice_testkit::scenario::land;

/// Entries of `dir` whose name ends in `.csv` (symlinks included).
fn csv_entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.ends_with(".csv"))
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// `(day folder, file name, content)` of every file under `landing/archive/<day>/`.
fn archived(landing: &Path) -> Vec<(String, String, Vec<u8>)> {
    let mut out = Vec::new();
    for day in std::fs::read_dir(landing.join("archive"))
        .into_iter()
        .flatten()
        .flatten()
    {
        for f in std::fs::read_dir(day.path())
            .into_iter()
            .flatten()
            .flatten()
        {
            let bytes = std::fs::read(f.path()).expect("read archived file");
            out.push((
                day.file_name().to_string_lossy().into_owned(),
                f.file_name().to_string_lossy().into_owned(),
                bytes,
            ));
        }
    }
    out.sort();
    out
}

async fn count(client: &Client, sql: &str) -> Option<i64> {
    client.query_one(sql, &[]).await.ok().map(|r| r.get(0))
}

async fn event_ids(client: &Client) -> Vec<Uuid> {
    let rows = client
        .query("SELECT event_id FROM events ORDER BY event_id", &[])
        .await
        .expect("events");
    rows.iter().map(|r| r.get(0)).collect()
}

fn sorted(mut ids: Vec<Uuid>) -> Vec<Uuid> {
    ids.sort();
    ids
}

/// Polls `done` every 100 ms until it holds; panics after `timeout` with the workers'
/// log tails, or at once if a worker exited.
async fn wait_until(
    workers: &mut [&mut WorkerProc],
    timeout: Duration,
    what: &str,
    mut done: impl AsyncFnMut() -> bool,
) {
    let deadline = Instant::now() + timeout;
    loop {
        for w in workers.iter_mut() {
            if let Err(e) = w.check_alive() {
                panic!("waiting for {what}: {e}");
            }
        }
        if done().await {
            return;
        }
        if Instant::now() > deadline {
            let logs: Vec<String> = workers
                .iter()
                .map(|w| format!("{} log:\n{}", w.spec.id, tail(&w.spec.log, 40)))
                .collect();
            panic!("no {what} after {timeout:?}\n{}", logs.join("\n"));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until the ledger holds `files` rows and `landings` hold no `*.csv`.
async fn settle(client: &Client, workers: &mut [&mut WorkerProc], landings: &[&Path], files: i64) {
    let what = format!("{files} ledger rows with the landing zone emptied");
    wait_until(workers, Duration::from_secs(45), &what, async || {
        count(client, "SELECT count(*) FROM sluice_files").await == Some(files)
            && landings.iter().all(|l| csv_entries(l).is_empty())
    })
    .await;
}

/// One worker (id `w-0`) on a fresh database, under a fresh root directory.
async fn start(extra: &[&str]) -> (tempfile::TempDir, TestDb, Client, WorkerProc) {
    let cluster = pg::shared().await;
    let db = cluster.create_database().await.expect("database");
    let root = tempfile::tempdir().expect("tempdir");
    let spec = WorkerSpec::in_root(root.path(), "w-0", db.url(), extra);
    let worker = WorkerProc::spawn(spec).expect("worker");
    let client = db.connect().await.expect("connect");
    (root, db, client, worker)
}

async fn scrape(addr: SocketAddr) -> String {
    tokio::task::spawn_blocking(move || procs::http_get(addr, "/metrics"))
        .await
        .expect("task")
        .map(|(_, body)| body)
        .unwrap_or_default()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

async fn sha256(client: &Client, bytes: &[u8]) -> Vec<u8> {
    client
        .query_one("SELECT sha256($1::bytea)", &[&bytes])
        .await
        .expect("sha256")
        .get(0)
}

/// `(file_name, outcome, rows_loaded, content_sha256, duplicate_of)`.
type LedgerWithDigest = (String, String, i64, Vec<u8>, Option<String>);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reused_file_name_with_new_content_is_loaded() {
    let (root, _db, client, mut w) = start(&[]).await;
    let landing = root.path().join("landing");
    let (a, b) = (rows(3, "books"), rows(2, "toys"));
    let (a_bytes, b_bytes) = (csv(&a), csv(&b));
    land(&landing, "export.csv", &a_bytes);
    settle(&client, &mut [&mut w], &[&landing], 1).await;
    land(&landing, "export.csv", &b_bytes);
    settle(&client, &mut [&mut w], &[&landing], 2).await;

    assert_eq!(
        event_ids(&client).await,
        sorted([ids(&a), ids(&b)].concat()),
        "both contents loaded, each once"
    );
    let ledger = client
        .query(
            "SELECT file_name, outcome, rows_loaded, content_sha256, duplicate_of FROM sluice_files ORDER BY committed_at",
            &[],
        )
        .await
        .expect("ledger");
    let got: Vec<LedgerWithDigest> = ledger
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4)))
        .collect();
    let (a_sha, b_sha) = (
        sha256(&client, &a_bytes).await,
        sha256(&client, &b_bytes).await,
    );
    assert_eq!(
        got,
        vec![
            ("export.csv".into(), "loaded".into(), 3, a_sha.clone(), None),
            ("export.csv".into(), "loaded".into(), 2, b_sha.clone(), None),
        ]
    );

    // Nothing overwritten: the second file gets the digest-suffixed name.
    let files = archived(&landing);
    let mut contents: Vec<&Vec<u8>> = files.iter().map(|(_, _, c)| c).collect();
    contents.sort();
    let mut want = vec![&a_bytes, &b_bytes];
    want.sort();
    assert_eq!(contents, want, "both inputs archived intact: {files:?}");
    if files[0].0 == files[1].0 {
        let names: Vec<(&str, &Vec<u8>)> = files.iter().map(|(_, n, c)| (n.as_str(), c)).collect();
        let suffixed = format!("export.{}.csv", &hex(&b_sha)[..16]);
        let mut expected = vec![("export.csv", &a_bytes), (suffixed.as_str(), &b_bytes)];
        expected.sort();
        assert_eq!(names, expected);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identical_content_under_a_new_name_is_a_redelivery() {
    let addr = procs::free_local_addr();
    let addr_arg = addr.to_string();
    let (root, _db, client, mut w) = start(&["--metrics-addr", &addr_arg]).await;
    let landing = root.path().join("landing");
    let a = rows(3, "books");
    land(&landing, "a.csv", csv(&a));
    settle(&client, &mut [&mut w], &[&landing], 1).await;
    land(&landing, "b.csv", csv(&a));
    settle(&client, &mut [&mut w], &[&landing], 2).await;

    assert_eq!(
        event_ids(&client).await,
        sorted(ids(&a)),
        "not loaded again"
    );
    let ledger_sql =
        "SELECT file_name, outcome, rows_loaded, duplicate_of FROM sluice_files ORDER BY 1";
    let ledger = |rows: Vec<tokio_postgres::Row>| -> Vec<(String, String, i64, Option<String>)> {
        rows.iter()
            .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
            .collect()
    };
    assert_eq!(
        ledger(client.query(ledger_sql, &[]).await.expect("ledger")),
        vec![
            ("a.csv".into(), "loaded".into(), 3, None),
            (
                "b.csv".into(),
                "redelivered".into(),
                0,
                Some("a.csv".into())
            ),
        ]
    );
    let names: Vec<String> = archived(&landing).into_iter().map(|(_, n, _)| n).collect();
    assert_eq!(names, vec!["a.csv".to_string(), "b.csv".to_string()]);
    let mut text = String::new();
    wait_until(
        &mut [&mut w],
        Duration::from_secs(10),
        "the redelivery metric",
        async || {
            text = scrape(addr).await;
            procs::metric_value(&text, "sluice_worker_redelivered_files_total") == Some(1.0)
        },
    )
    .await;
    assert_eq!(
        procs::metric_value(&text, r#"sluice_worker_files_total{outcome="redelivered"}"#),
        Some(1.0)
    );

    // With --load-redeliveries the same two files both load, and the ledger says so.
    let (root, _db, client, mut w) = start(&["--load-redeliveries"]).await;
    let landing = root.path().join("landing");
    land(&landing, "a.csv", csv(&a));
    settle(&client, &mut [&mut w], &[&landing], 1).await;
    land(&landing, "b.csv", csv(&a));
    settle(&client, &mut [&mut w], &[&landing], 2).await;
    assert_eq!(
        event_ids(&client).await,
        sorted([ids(&a), ids(&a)].concat()),
        "rows loaded twice on request"
    );
    assert_eq!(
        ledger(client.query(ledger_sql, &[]).await.expect("ledger")),
        vec![
            ("a.csv".into(), "loaded".into(), 3, None),
            ("b.csv".into(), "loaded".into(), 3, Some("a.csv".into())),
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_pipelines_sharing_a_database_stay_apart() {
    let cluster = pg::shared().await;
    let db = cluster.create_database().await.expect("database");
    let root = tempfile::tempdir().expect("tempdir");
    let spec = |pipeline: &str| {
        let dir = root.path().join(pipeline);
        WorkerSpec::in_root(
            &dir,
            &format!("w-{pipeline}"),
            db.url(),
            &["--pipeline", pipeline],
        )
    };
    let (shop, ads) = (spec("shop"), spec("ads"));
    let landings: [PathBuf; 2] = [shop.landing.clone(), ads.landing.clone()];
    let mut w_shop = WorkerProc::spawn(shop).expect("shop worker");
    let mut w_ads = WorkerProc::spawn(ads).expect("ads worker");
    let client = db.connect().await.expect("connect");

    let data = rows(4, "books");
    for l in &landings {
        land(l, "orders.csv", csv(&data));
    }
    let landing_refs: Vec<&Path> = landings.iter().map(PathBuf::as_path).collect();
    settle(&client, &mut [&mut w_shop, &mut w_ads], &landing_refs, 2).await;

    assert_eq!(
        event_ids(&client).await,
        sorted([ids(&data), ids(&data)].concat()),
        "each pipeline loads its own copy"
    );
    let ledger = client
        .query(
            "SELECT pipeline, file_name, outcome, rows_loaded, duplicate_of FROM sluice_files ORDER BY 1",
            &[],
        )
        .await
        .expect("ledger");
    let got: Vec<(String, String, String, i64, Option<String>)> = ledger
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4)))
        .collect();
    assert_eq!(
        got,
        vec![
            ("ads".into(), "orders.csv".into(), "loaded".into(), 4, None),
            ("shop".into(), "orders.csv".into(), "loaded".into(), 4, None),
        ]
    );
    let batches: Vec<String> = client
        .query(
            "SELECT DISTINCT pipeline FROM sluice_batches ORDER BY 1",
            &[],
        )
        .await
        .expect("batches")
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(batches, vec!["ads".to_string(), "shop".to_string()]);
    for l in &landings {
        let names: Vec<String> = archived(l).into_iter().map(|(_, n, _)| n).collect();
        assert_eq!(names, vec!["orders.csv".to_string()], "{}", l.display());
    }
    wait_until(
        &mut [&mut w_shop, &mut w_ads],
        Duration::from_secs(10),
        "no claims left",
        async || count(&client, "SELECT count(*) FROM sluice_claims").await == Some(0),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_symlinked_reason_note_cannot_overwrite_the_checkpoint() {
    let (root, _db, client, mut w) = start(&[]).await;
    let landing = root.path().join("landing");
    let state = root.path().join("checkpoints/w-0/state.json");
    wait_until(
        &mut [&mut w],
        Duration::from_secs(30),
        "state.json",
        async || state.exists(),
    )
    .await;
    let failed = landing.join("failed");
    std::fs::create_dir_all(&failed).expect("failed dir");
    let planted = failed.join("bad.csv.reason.txt");
    std::os::unix::fs::symlink(&state, &planted).expect("symlink");
    let mut binary = sluice_core::HEADER.as_bytes().to_vec();
    binary.insert(3, 0);
    binary.extend_from_slice(b"\n");
    land(&landing, "bad.csv", &binary);
    settle(&client, &mut [&mut w], &[&landing], 1).await;

    // The worker records its batches in state.json (so its bytes may change), but it
    // must still be the worker's own state and never the reason note.
    let after = std::fs::read(&state).expect("state.json still there");
    let parsed: serde_json::Value = serde_json::from_slice(&after).unwrap_or_else(|e| {
        panic!(
            "state.json is no longer JSON ({e}):\n{}",
            String::from_utf8_lossy(&after)
        )
    });
    assert_eq!(parsed["worker_id"], "w-0", "{parsed}");
    assert!(
        std::fs::symlink_metadata(&state)
            .expect("lstat")
            .file_type()
            .is_file(),
        "state.json is still a regular file"
    );
    assert_eq!(
        std::fs::read(failed.join("bad.csv")).expect("bad.csv set aside"),
        binary
    );
    let notes: Vec<String> = std::fs::read_dir(&failed)
        .expect("failed/")
        .flatten()
        .filter(|e| e.file_type().map(|t| t.is_file()).unwrap_or(false))
        .filter(|e| e.file_name().to_string_lossy().ends_with(".reason.txt"))
        .filter_map(|e| std::fs::read_to_string(e.path()).ok())
        .collect();
    assert!(
        notes.iter().any(|n| n.contains("binary_file")),
        "a regular reason note in failed/: {notes:?}"
    );
    // A restart reads the checkpoint back.
    w.crash_and_restart().expect("restart");

    // A landing entry that is a symlink to a valid CSV elsewhere is never read.
    let outside = root.path().join("outside.csv");
    let outside_rows = rows(2, "toys");
    std::fs::write(&outside, csv(&outside_rows)).expect("outside file");
    std::os::unix::fs::symlink(&outside, landing.join("link.csv")).expect("symlink");
    let normal = rows(1, "books");
    land(&landing, "normal.csv", csv(&normal));
    wait_until(
        &mut [&mut w],
        Duration::from_secs(45),
        "normal.csv settled",
        async || {
            count(&client, "SELECT count(*) FROM sluice_files").await == Some(2)
                && !landing.join("normal.csv").exists()
        },
    )
    .await;
    // One more file after it: link.csv had every chance to be picked up.
    let last = rows(1, "garden");
    land(&landing, "last.csv", csv(&last));
    wait_until(
        &mut [&mut w],
        Duration::from_secs(45),
        "last.csv settled",
        async || {
            count(&client, "SELECT count(*) FROM sluice_files").await == Some(3)
                && !landing.join("last.csv").exists()
        },
    )
    .await;
    assert_eq!(
        event_ids(&client).await,
        sorted([ids(&normal), ids(&last)].concat())
    );
    assert_eq!(
        count(
            &client,
            "SELECT count(*) FROM sluice_files WHERE file_name = 'link.csv'"
        )
        .await,
        Some(0)
    );
    assert!(
        std::fs::symlink_metadata(landing.join("link.csv"))
            .expect("link.csv left alone")
            .file_type()
            .is_symlink()
    );
    assert_eq!(
        std::fs::read(&outside).expect("outside"),
        csv(&outside_rows)
    );
}

/// utime + stime of a process, in seconds.
#[allow(unsafe_code)]
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("/proc/<pid>/stat");
    // Fields after the command name (which may hold spaces): state is the first,
    // utime the 12th, stime the 13th.
    let after = &stat[stat.rfind(')').expect("comm") + 1..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 =
        fields[11].parse::<f64>().expect("utime") + fields[12].parse::<f64>().expect("stime");
    // SAFETY: sysconf has no memory-safety preconditions.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    ticks / per_second
}

fn log_lines(path: &Path) -> usize {
    std::fs::read_to_string(path)
        .map(|t| t.lines().count())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn archive_that_is_not_a_directory_does_not_spin() {
    let addr = procs::free_local_addr();
    let addr_arg = addr.to_string();
    let cluster = pg::shared().await;
    let db = cluster.create_database().await.expect("database");
    let root = tempfile::tempdir().expect("tempdir");
    let spec = WorkerSpec::in_root(root.path(), "w-0", db.url(), &["--metrics-addr", &addr_arg]);
    let (landing, log) = (spec.landing.clone(), spec.log.clone());
    std::fs::write(landing.join("archive"), b"not a directory").expect("archive file");
    let mut w = WorkerProc::spawn(spec).expect("worker");
    let client = db.connect().await.expect("connect");
    let files: Vec<Vec<(Uuid, String)>> = (0..3).map(|_| rows(2, "books")).collect();
    for (i, f) in files.iter().enumerate() {
        land(&landing, &format!("f{i}.csv"), csv(f));
    }
    wait_until(
        &mut [&mut w],
        Duration::from_secs(45),
        "3 ledger rows",
        async || {
            count(
                &client,
                "SELECT count(*) FROM sluice_files WHERE outcome = 'loaded'",
            )
            .await
                == Some(3)
        },
    )
    .await;
    let all_ids = sorted(files.iter().flat_map(|f| ids(f)).collect());
    assert_eq!(event_ids(&client).await, all_ids);
    assert_eq!(
        csv_entries(&landing),
        vec!["f0.csv", "f1.csv", "f2.csv"],
        "nowhere to archive them"
    );

    // No busy loop: over 5 s, little CPU and a few log lines at most.
    let pid = w.pid().expect("pid");
    let (cpu0, lines0) = (cpu_seconds(pid), log_lines(&log));
    tokio::time::sleep(Duration::from_secs(5)).await;
    let (cpu, lines) = (cpu_seconds(pid) - cpu0, log_lines(&log) - lines0);
    assert!(
        cpu < 0.5,
        "{cpu:.2} s of CPU in 5 s while the archive is unusable"
    );
    assert!(lines < 30, "{lines} log lines in 5 s:\n{}", tail(&log, 30));
    let text = scrape(addr).await;
    let sample = |name: &str| procs::metric_value(&text, name);
    assert!(
        sample("sluice_worker_after_commit_errors_total").is_some_and(|v| v > 0.0),
        "{text}"
    );
    assert_eq!(sample("sluice_worker_unsettled_files"), Some(3.0), "{text}");
    assert_eq!(
        sample(r#"sluice_worker_degraded{cause="after_commit_failing"}"#),
        Some(1.0),
        "{text}"
    );

    // Fixed: the next retries (backoff capped at 60 s) archive the files.
    std::fs::remove_file(landing.join("archive")).expect("remove archive file");
    wait_until(
        &mut [&mut w],
        Duration::from_secs(70),
        "the files archived",
        async || csv_entries(&landing).is_empty(),
    )
    .await;
    let names: Vec<String> = archived(&landing).into_iter().map(|(_, n, _)| n).collect();
    assert_eq!(names, vec!["f0.csv", "f1.csv", "f2.csv"]);
    let mut text = String::new();
    wait_until(
        &mut [&mut w],
        Duration::from_secs(10),
        "unsettled back to 0",
        async || {
            text = scrape(addr).await;
            procs::metric_value(&text, "sluice_worker_unsettled_files") == Some(0.0)
        },
    )
    .await;
    assert_eq!(
        procs::metric_value(
            &text,
            r#"sluice_worker_degraded{cause="after_commit_failing"}"#
        ),
        Some(0.0),
        "{text}"
    );
    assert_eq!(event_ids(&client).await, all_ids, "row counts unchanged");
    assert_eq!(
        count(&client, "SELECT count(*) FROM sluice_files").await,
        Some(3)
    );
}
