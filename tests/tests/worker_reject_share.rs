//! `worker.maxRejectShare` (Kafka Connect's errors.tolerance): a file whose share of
//! rejected rows exceeds it is set aside whole with reason `reject_share_exceeded`,
//! nothing of it loaded or quarantined; a file within it loads as usual. A large file is
//! judged part by part: a first part over the share sets the whole file aside.

use std::path::Path;
use std::time::Duration;

use sluice_testkit::pg;
use sluice_testkit::procs::{WorkerProc, WorkerSpec};

fn land(dir: &Path, name: &str, good: usize, bad: usize) {
    let mut text = format!("{}\n", sluice_core::event::HEADER);
    for i in 0..good + bad {
        let event_type = if i < good { "view" } else { "refund" };
        text.push_str(&format!(
            "{},2026-11-25T10:00:00Z,{i},s-{i},{event_type},{i},books,1.00,0\n",
            uuid::Uuid::new_v4()
        ));
    }
    sluice_testkit::scenario::land(dir, name, text);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_over_the_reject_share_are_set_aside_whole() {
    let cluster = pg::shared().await;
    let db = cluster.create_database().await.expect("database");
    let client = db.connect().await.expect("connect");
    let root = tempfile::tempdir().expect("tempdir");
    let landing = root.path().join("landing");
    std::fs::create_dir_all(&landing).expect("landing");
    land(&landing, "a-changed-format.csv", 1, 9);
    land(&landing, "b-some-bad.csv", 8, 2);
    // Over 64 KiB with --part-bytes 65536: loaded in parts; its first part is all bad.
    land(&landing, "c-large-bad.csv", 0, 2_000);

    let log = root.path().join("w-0.log");
    let mut w = WorkerProc::spawn(WorkerSpec {
        id: "w-0".into(),
        landing: landing.clone(),
        checkpoint: root.path().join("ck"),
        database_url: db.url().into(),
        extra: ["--max-reject-share", "0.5", "--part-bytes", "65536"]
            .map(String::from)
            .to_vec(),
        log: log.clone(),
    })
    .expect("worker");
    w.settle(&client, 3, Duration::from_secs(60)).await;

    let rows = client
        .query(
            "SELECT file_name, outcome::text, rows_loaded, rows_rejected, coalesce(failure_reason, '')
             FROM sluice_files ORDER BY 1",
            &[],
        )
        .await
        .expect("ledger");
    let ledger: Vec<(String, String, i64, i64, String)> = rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4)))
        .collect();
    assert_eq!(
        ledger,
        vec![
            (
                "a-changed-format.csv".into(),
                "failed".into(),
                0,
                0,
                "reject_share_exceeded".into()
            ),
            (
                "b-some-bad.csv".into(),
                "loaded".into(),
                8,
                2,
                String::new()
            ),
            (
                "c-large-bad.csv".into(),
                "failed".into(),
                0,
                0,
                "reject_share_exceeded".into()
            ),
        ]
    );
    let events: i64 = client
        .query_one("SELECT count(*) FROM events", &[])
        .await
        .expect("count")
        .get(0);
    assert_eq!(events, 8, "only the tolerated file's valid rows");
    let quarantined: Vec<String> = client
        .query("SELECT DISTINCT source_file FROM quarantine", &[])
        .await
        .expect("quarantine")
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(
        quarantined,
        vec!["b-some-bad.csv".to_string()],
        "nothing of the refused files"
    );
    let note = std::fs::read_to_string(landing.join("failed/a-changed-format.csv.reason.txt"))
        .expect("reason note");
    assert!(
        note.contains("reject_share_exceeded") && note.contains("9 of 10"),
        "{note}"
    );
    assert!(landing.join("failed/c-large-bad.csv").exists());
    w.check_alive().expect("the worker keeps running");
}
