//! A file PostgreSQL refuses although it passed validation (here: a constraint added by
//! the operator of the database) is set aside on its own; the rest of its batch loads.

use std::path::Path;
use std::time::Duration;

use sluice_testkit::pg;
use sluice_testkit::procs::{WorkerProc, WorkerSpec};

fn write_file(dir: &Path, name: &str, categories: &[&str]) {
    let mut text = format!("{}\n", sluice_core::event::HEADER);
    for (i, category) in categories.iter().enumerate() {
        text.push_str(&format!(
            "{},2026-11-25T10:00:00Z,{i},s-{i},view,{i},{category},1.00,0\n",
            uuid::Uuid::new_v4()
        ));
    }
    sluice_testkit::scenario::land(dir, name, text);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_postgres_refuses_is_set_aside_and_the_batch_goes_on() {
    let cluster = pg::shared().await;
    let db = cluster.create_database().await.expect("database");
    let mut client = db.connect().await.expect("connect");
    sluice_worker::migrate::migrate(&mut client)
        .await
        .expect("migrations");
    client
        .batch_execute("ALTER TABLE events ADD CONSTRAINT no_poison CHECK (category <> 'poison')")
        .await
        .expect("constraint");

    let root = tempfile::tempdir().expect("tempdir");
    let landing = root.path().join("landing");
    std::fs::create_dir_all(&landing).expect("landing");
    write_file(&landing, "a-good.csv", &["books", "toys", "books"]);
    write_file(&landing, "b-poison.csv", &["books", "poison", "toys"]);
    write_file(&landing, "c-good.csv", &["garden", "garden"]);

    let log = root.path().join("w-0.log");
    let mut w = WorkerProc::spawn(WorkerSpec {
        id: "w-0".into(),
        landing: landing.clone(),
        checkpoint: root.path().join("ck"),
        database_url: db.url().into(),
        extra: vec![],
        log: log.clone(),
    })
    .expect("worker");
    w.settle(&client, 3, Duration::from_secs(60)).await;

    let rows = client
        .query("SELECT file_name, outcome, rows_loaded, coalesce(failure_reason, '') FROM sluice_files ORDER BY 1", &[])
        .await
        .expect("ledger");
    let ledger: Vec<(String, String, i64, String)> = rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect();
    assert_eq!(
        ledger,
        vec![
            ("a-good.csv".into(), "loaded".into(), 3, String::new()),
            (
                "b-poison.csv".into(),
                "failed".into(),
                0,
                "database_rejected".into()
            ),
            ("c-good.csv".into(), "loaded".into(), 2, String::new()),
        ]
    );
    let events: i64 = client
        .query_one("SELECT count(*) FROM events", &[])
        .await
        .expect("count")
        .get(0);
    assert_eq!(
        events, 5,
        "only the accepted files' rows are stored, none of the refused file's"
    );
    let note = std::fs::read_to_string(landing.join("failed/b-poison.csv.reason.txt"))
        .expect("the refused file is set aside with a reason note");
    assert!(
        note.contains("database_rejected") && note.contains("no_poison"),
        "{note}"
    );
    assert!(landing.join("failed/b-poison.csv").exists());
    w.check_alive().expect("the worker keeps running");
}
