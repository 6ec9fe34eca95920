//! Quarantine replay and the ledger report against a real PostgreSQL, through the
//! `sluice-worker replay|report|quarantine` binary as an operator would run it.
//!
//! A declared schema refuses some rows (`not_allowed`); its allowed set is then widened
//! and `replay` moves exactly the rows that now pass (one of them a duplicate key,
//! deduplicated), leaves the others with today's reason, keeps the ledger's per-file
//! totals exact and moves nothing on a second run. A replay SIGKILLed midway, then two
//! replays at once, still move every row exactly once.

use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use sluice_testkit::bins;
use sluice_testkit::pg;
use sluice_testkit::procs::{WorkerProc, WorkerSpec};
use sluice_testkit::scenario::land;

/// The pipeline's config: `readings` (id, site, celsius), sites limited to `allowed`.
fn write_config(root: &Path, allowed: &[&str], dedupe: bool) -> PathBuf {
    let path = root.join("pipeline.json");
    let json = serde_json::json!({
        "worker": {"dedupeByEventId": dedupe},
        "schema": {
            "table": "readings",
            "key": "id",
            "columns": [
                {"name": "id", "type": "bigint"},
                {"name": "site", "type": "text", "allowed": allowed, "clean": ["trim", "ignoreCase"]},
                {"name": "celsius", "type": "numeric", "precision": 5, "scale": 1}
            ]
        }
    });
    std::fs::write(&path, json.to_string()).expect("config");
    path
}

/// Runs `sluice-worker <args>` with the pipeline's config and landing directory.
fn tool(db_url: &str, config: &Path, landing: &Path, args: &[&str]) -> Output {
    bins::command("sluice-worker")
        .args(args)
        .arg("--config")
        .arg(config)
        .arg("--landing-dir")
        .arg(landing)
        .env("DATABASE_URL", db_url)
        .stdin(Stdio::null())
        .output()
        .expect("running sluice-worker")
}

/// Runs a command that prints JSON; fails the test with its stderr otherwise.
fn tool_json(db_url: &str, config: &Path, landing: &Path, args: &[&str]) -> Value {
    let out = tool(db_url, config, landing, args);
    assert!(
        out.status.success(),
        "sluice-worker {args:?}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{args:?} printed no JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

/// Loads the landed files with a worker under `config`, then stops it.
async fn load(root: &Path, db: &pg::TestDb, config: &Path, files: usize) {
    let client = db.connect().await.expect("connect");
    let spec = WorkerSpec::in_root(
        root,
        "w-0",
        db.url(),
        &["--config", &config.display().to_string()],
    );
    let mut w = WorkerProc::spawn(spec).expect("worker");
    w.settle(&client, files, Duration::from_secs(60)).await;
    w.terminate(Duration::from_secs(20)).expect("worker stops");
}

/// (rows in the target, rows in quarantine, ledger's loaded, rejected, deduplicated by
/// file, the same by batch).
async fn counts(client: &tokio_postgres::Client) -> [i64; 8] {
    let row = client
        .query_one(
            "SELECT (SELECT count(*) FROM readings), (SELECT count(*) FROM quarantine),
                    (SELECT sum(rows_loaded)::int8 FROM sluice_files),
                    (SELECT sum(rows_rejected)::int8 FROM sluice_files),
                    (SELECT sum(rows_deduplicated)::int8 FROM sluice_files),
                    (SELECT sum(rows_loaded)::int8 FROM sluice_batches),
                    (SELECT sum(rows_rejected)::int8 FROM sluice_batches),
                    (SELECT sum(rows_deduplicated)::int8 FROM sluice_batches)",
            &[],
        )
        .await
        .expect("counts");
    std::array::from_fn(|i| row.get(i))
}

/// The ledger agrees with the tables: loaded = target rows, rejected = quarantine rows,
/// per file and per batch.
fn assert_ledger_exact(c: [i64; 8]) {
    assert_eq!((c[2], c[3]), (c[0], c[1]), "files ledger vs tables: {c:?}");
    assert_eq!(
        (c[5], c[6], c[7]),
        (c[2], c[3], c[4]),
        "batches vs files: {c:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_moves_rows_that_now_pass_exactly_once_and_report_reads_the_ledger() {
    let cluster = pg::shared().await;
    let db = cluster.create_database().await.expect("database");
    let client = db.connect().await.expect("connect");
    let root = tempfile::tempdir().expect("tempdir");
    let landing = root.path().join("landing");
    std::fs::create_dir_all(&landing).expect("landing");
    // Fields in another order than the table's: replay must read each file's header
    // (from the archive) to know which field is which.
    land(
        &landing,
        "r-1.csv",
        "site,celsius,id\nnorth,1.5,1\neast,2.0,2\n EAST ,3.0,3\nwest,4.0,4\nnorth,abc,5\neast,6.0,1\n",
    );
    land(
        &landing,
        "r-2.csv",
        "id,site,celsius\n10,south,1\n11,east,1\n12,west,1\n",
    );
    let narrow = write_config(root.path(), &["north", "south"], true);
    load(root.path(), &db, &narrow, 2).await;
    let before = counts(&client).await;
    assert_eq!(&before[..5], &[2, 7, 2, 7, 0], "{before:?}");
    assert_ledger_exact(before);
    let numeric_reason: String = client
        .query_one("SELECT reason FROM quarantine WHERE line_number = 6", &[])
        .await
        .expect("row 5")
        .get(0);

    // The producer's new site is now allowed.
    let config = write_config(root.path(), &["north", "south", "east"], true);
    let url = db.url();
    let dry = tool_json(
        url,
        &config,
        &landing,
        &["replay", "--dry-run", "-o", "json"],
    );
    assert_eq!(
        (dry["moved"].as_u64(), dry["deduplicated"].as_u64()),
        (Some(3), Some(1)),
        "{dry}"
    );
    assert_eq!(counts(&client).await, before, "a dry run changes nothing");

    let one_file = tool_json(
        url,
        &config,
        &landing,
        &["replay", "--file", "r-2.csv", "-o", "json"],
    );
    assert_eq!(one_file["examined"], 2, "{one_file}");
    assert_eq!(one_file["moved"], 1, "{one_file}");
    assert_eq!(one_file["stillBadByReason"]["not_allowed"], 1, "{one_file}");

    let rest = tool_json(
        url,
        &config,
        &landing,
        &["replay", "--chunk-rows", "2", "-o", "json"],
    );
    assert_eq!(rest["moved"], 2, "{rest}");
    assert_eq!(rest["deduplicated"], 1, "{rest}");
    assert_eq!(rest["movedByReason"]["not_allowed"], 3, "{rest}");
    assert_eq!(rest["stillBad"], 3, "{rest}");
    assert_eq!(rest["stillBadByReason"]["not_allowed"], 2, "{rest}");
    assert_eq!(rest["stillBadByReason"][&numeric_reason], 1, "{rest}");
    let after = counts(&client).await;
    assert_eq!(&after[..5], &[5, 3, 5, 3, 1], "{after:?}");
    assert_ledger_exact(after);
    let stored: Vec<(i64, String)> = client
        .query("SELECT id, site FROM readings ORDER BY id", &[])
        .await
        .expect("rows")
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let expected: Vec<(i64, String)> = [
        (1, "north"),
        (2, "east"),
        (3, "east"),
        (10, "south"),
        (11, "east"),
    ]
    .iter()
    .map(|(i, s)| (*i, s.to_string()))
    .collect();
    assert_eq!(stored, expected, "cleaned as new rows are");

    let again = tool_json(url, &config, &landing, &["replay", "-o", "json"]);
    assert_eq!(
        (again["moved"].as_u64(), again["examined"].as_u64()),
        (Some(0), Some(3)),
        "{again}"
    );
    assert_eq!(counts(&client).await, after);
    let text = tool(url, &config, &landing, &["replay"]);
    let text = String::from_utf8_lossy(&text.stdout);
    eprintln!("$ sluice-worker replay\n{text}");
    assert!(
        text.contains("moved to the target table: 0") && text.contains("not_allowed"),
        "{text}"
    );

    // The report: exact totals from the ledger, compared field by field.
    let report = tool_json(url, &config, &landing, &["report", "-o", "json"]);
    assert_eq!(report["pipeline"], "default");
    assert_eq!(report["files"]["total"], 2, "{report}");
    assert_eq!(report["files"]["loaded"], 2, "{report}");
    assert_eq!(report["rows"]["loaded"], after[2], "{report}");
    assert_eq!(report["rows"]["rejected"], after[3], "{report}");
    assert_eq!(report["rows"]["deduplicated"], after[4], "{report}");
    assert_eq!(report["rows"]["cleaned"], Value::Null, "{report}");
    assert_eq!(report["quarantine"]["rows"], 3, "{report}");
    assert_eq!(
        report["quarantine"]["topReasons"][0]["reason"], "not_allowed",
        "{report}"
    );
    assert_eq!(report["quarantine"]["topReasons"][0]["rows"], 2, "{report}");
    assert!(report["lastCommit"].is_string(), "{report}");
    let text =
        String::from_utf8_lossy(&tool(url, &config, &landing, &["report"]).stdout).into_owned();
    eprintln!("$ sluice-worker report\n{text}");
    let sample = tool(url, &config, &landing, &["quarantine", "--limit", "2"]);
    eprintln!(
        "$ sluice-worker quarantine --limit 2\n{}",
        String::from_utf8_lossy(&sample.stdout)
    );
    assert!(
        text.contains("5 loaded, 3 rejected, 1 deduplicated"),
        "{text}"
    );

    let sample = tool_json(
        url,
        &config,
        &landing,
        &[
            "quarantine",
            "--reason",
            "not_allowed",
            "--limit",
            "5",
            "-o",
            "json",
        ],
    );
    let sample = sample.as_array().expect("array");
    let places: Vec<(String, i64)> = sample
        .iter()
        .map(|r| {
            (
                r["file"].as_str().unwrap_or("?").to_string(),
                r["line"].as_i64().unwrap_or(0),
            )
        })
        .collect();
    assert_eq!(
        places,
        [("r-1.csv".to_string(), 5), ("r-2.csv".to_string(), 4)]
    );
    assert!(
        sample[0]["raw"]
            .as_str()
            .is_some_and(|r| r.contains("west")),
        "{sample:?}"
    );
    assert!(sample[0]["message"].as_str().is_some_and(|m| !m.is_empty()));
    let limited = tool_json(
        url,
        &config,
        &landing,
        &[
            "quarantine",
            "--file",
            "r-1.csv",
            "--limit",
            "1",
            "-o",
            "json",
        ],
    );
    assert_eq!(limited.as_array().map(Vec::len), Some(1), "{limited}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_killed_midway_and_two_replays_at_once_move_every_row_once() {
    const FILES: usize = 3;
    const ROWS: usize = 150;
    let cluster = pg::shared().await;
    let db = cluster.create_database().await.expect("database");
    let client = db.connect().await.expect("connect");
    let root = tempfile::tempdir().expect("tempdir");
    let landing = root.path().join("landing");
    std::fs::create_dir_all(&landing).expect("landing");
    for f in 0..FILES {
        let mut text = String::from("id,site,celsius\n");
        for r in 0..ROWS {
            let site = if r == 0 { "north" } else { "east" };
            text.push_str(&format!("{},{site},{r}.5\n", f * ROWS + r));
        }
        land(&landing, &format!("k-{f}.csv"), text);
    }
    // No dedupe: a row moved twice would show as a second row with its id.
    let narrow = write_config(root.path(), &["north"], false);
    load(root.path(), &db, &narrow, FILES).await;
    let total = (FILES * ROWS) as i64;
    let quarantined = total - FILES as i64;
    assert_eq!(&counts(&client).await[..2], &[FILES as i64, quarantined]);

    let config = write_config(root.path(), &["north", "east"], false);
    let mut child = bins::command("sluice-worker")
        .args(["replay", "--chunk-rows", "1", "--pause-ms", "5", "--config"])
        .arg(&config)
        .arg("--landing-dir")
        .arg(&landing)
        .env("DATABASE_URL", db.url())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("replay");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let moved = counts(&client).await[0] - FILES as i64;
        if moved >= 40 {
            break;
        }
        assert!(
            child.try_wait().expect("wait").is_none(),
            "replay ended before it was killed"
        );
        assert!(
            Instant::now() < deadline,
            "replay moved only {moved} rows in 60 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    child.kill().expect("SIGKILL");
    let _ = child.wait();
    let killed = counts(&client).await;
    assert!(
        killed[1] > 0,
        "the replay finished before it was killed: {killed:?}"
    );
    assert_eq!(killed[0] + killed[1], total, "{killed:?}");
    assert_ledger_exact(killed);

    // Two replays at once finish the job: each chunk is taken by one of them.
    let spawn = || {
        bins::tokio_command("sluice-worker")
            .args(["replay", "--chunk-rows", "7", "-o", "json", "--config"])
            .arg(&config)
            .arg("--landing-dir")
            .arg(&landing)
            .env("DATABASE_URL", db.url())
            .stdin(Stdio::null())
            .output()
    };
    let (a, b) = tokio::join!(spawn(), spawn());
    let mut moved_after_kill = 0;
    for out in [a, b] {
        let out = out.expect("replay");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let summary: Value = serde_json::from_slice(&out.stdout).expect("json");
        moved_after_kill += summary["moved"].as_i64().unwrap_or(-1);
        assert_eq!(summary["stillBad"], 0, "{summary}");
    }
    assert_eq!(
        moved_after_kill, killed[1],
        "the two runs together moved what was left"
    );
    let done = counts(&client).await;
    assert_eq!(&done[..2], &[total, 0], "{done:?}");
    assert_ledger_exact(done);
    let distinct: i64 = client
        .query_one("SELECT count(DISTINCT id) FROM readings", &[])
        .await
        .expect("distinct")
        .get(0);
    assert_eq!(distinct, total, "every row exactly once");
}
