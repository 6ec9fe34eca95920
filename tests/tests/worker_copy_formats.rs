//! The two COPY wire formats against a real PostgreSQL: the same landing files (bad
//! rows, messy rows, batches and large files in parts) loaded once with `--copy-format
//! text` and once in binary (the default) leave identical tables and quarantines, and
//! every row the manifest expects.

use std::path::Path;
use std::time::Duration;

use sluice_testkit::pg;
use sluice_testkit::procs::{WorkerProc, WorkerSpec, tail};
use sluice_testkit::scenario::{Dataset, land, wait_settled};
use sluice_testkit::verify;
use tokio_postgres::Client;

/// Loads the dataset's files with one worker in `format`; returns the database client.
async fn load(
    cluster: &pg::PgCluster,
    data: &Dataset,
    root: &Path,
    format: &str,
) -> (pg::TestDb, Client) {
    let db = cluster.create_database().await.expect("database");
    let client = db.connect().await.expect("connect");
    // Files above --max-bytes load in parts; the rest in multi-file batches.
    let spec = WorkerSpec::in_root(
        &root.join(format),
        "w-0",
        db.url(),
        &[
            "--copy-format",
            format,
            "--max-bytes",
            "150000",
            "--part-bytes",
            "65536",
        ],
    );
    let landing = spec.landing.clone();
    let log = spec.log.clone();
    let mut w = WorkerProc::spawn(spec).expect("worker");
    // Copies (release would move them): both runs see the same files.
    for f in &data.manifest {
        let bytes = std::fs::read(data.staging.join(&f.file)).expect("staged file");
        land(&landing, &f.file, bytes);
    }
    wait_settled(
        &client,
        &landing,
        data.manifest.len(),
        Duration::from_secs(90),
        || w.check_alive(),
    )
    .await
    .unwrap_or_else(|e| panic!("{format}: {e}\n{}", tail(&log, 40)));
    (db, client)
}

/// Every stored row as PostgreSQL renders it, in a fixed order.
async fn table_text(client: &Client, sql: &str) -> Vec<String> {
    client
        .query(sql, &[])
        .await
        .expect("read table")
        .iter()
        .map(|r| r.get::<_, String>(0))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_and_binary_copy_store_the_same_rows() {
    let cluster = pg::shared().await;
    let root = tempfile::tempdir().expect("tempdir");
    // Sizes vary so that some files go through parts and some through batches.
    let data = Dataset::generate_with(
        root.path(),
        6,
        1_500,
        0.05,
        47,
        &["--messy-row-share", "0.1"],
    )
    .expect("generate");

    let (_text_db, text) = load(cluster, &data, root.path(), "text").await;
    let (_binary_db, binary) = load(cluster, &data, root.path(), "binary").await;

    for client in [&text, &binary] {
        verify::check_exactly_once(client, &data.expected)
            .await
            .expect("every expected row once, every bad row quarantined");
    }
    let events = "SELECT t::text FROM events t ORDER BY event_id, event_time";
    let quarantine = "SELECT (source_file, line_number, reason, message, raw_bytes)::text
                      FROM quarantine ORDER BY source_file, line_number";
    for sql in [events, quarantine] {
        let a = table_text(&text, sql).await;
        let b = table_text(&binary, sql).await;
        assert!(!a.is_empty(), "{sql}: nothing stored");
        assert_eq!(a.len(), b.len(), "{sql}: row counts differ");
        if let Some((x, y)) = a.iter().zip(&b).find(|(x, y)| x != y) {
            panic!("{sql}: text stored {x}, binary stored {y}");
        }
    }
}
