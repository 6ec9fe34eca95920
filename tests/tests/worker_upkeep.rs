//! The worker looks after its own tables (issue 10): without planner statistics the
//! ledger lookup, the claim and the claims' delete scanned every entry of the pipeline,
//! so a backlog drained in quadratic time until autovacuum came by. Every thousand
//! committed files the worker vacuums `sluice_claims` and analyzes `sluice_files` while
//! it has no statistics; a role that does not own the tables leaves that to autovacuum
//! and loads all the same.

use std::path::Path;
use std::time::{Duration, Instant};

use sluice_testkit::pg;
use sluice_testkit::procs::{WorkerProc, WorkerSpec};
use tokio_postgres::Client;

/// More than the 1,000 files after which the first upkeep pass runs.
const FILES: usize = 1_100;

fn land_files(dir: &Path) {
    for i in 0..FILES {
        let text = format!(
            "{}\n{},2026-11-25T10:00:00Z,{i},s-{i},view,{i},books,1.00,0\n",
            sluice_core::event::HEADER,
            uuid::Uuid::new_v4()
        );
        sluice_testkit::scenario::land(dir, &format!("f-{i:05}.csv"), text);
    }
}

fn spawn(root: &Path, url: &str) -> WorkerProc {
    let landing = root.join("landing");
    WorkerProc::spawn(WorkerSpec {
        id: "w-0".into(),
        landing,
        checkpoint: root.join("ck"),
        database_url: url.into(),
        extra: vec!["--poll-interval-ms".into(), "100".into()],
        log: root.join("w-0.log"),
    })
    .expect("worker")
}

async fn scalar(client: &Client, sql: &str) -> i64 {
    client.query_one(sql, &[]).await.expect(sql).get(0)
}

/// Every file loaded once, each row once, no claim left behind.
async fn assert_loaded_once(client: &Client) {
    assert_eq!(
        scalar(
            client,
            "SELECT count(*) FROM sluice_files WHERE outcome = 'loaded'"
        )
        .await,
        FILES as i64
    );
    assert_eq!(
        scalar(client, "SELECT count(*) FROM events").await,
        FILES as i64
    );
    assert_eq!(
        scalar(
            client,
            "SELECT count(*) FROM (SELECT event_id FROM events GROUP BY 1 HAVING count(*) > 1) d"
        )
        .await,
        0
    );
    assert_eq!(
        scalar(client, "SELECT count(*) FROM sluice_claims").await,
        0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_owner_vacuums_the_claims_and_gives_the_ledger_statistics() {
    let cluster = pg::shared().await;
    let db = cluster.create_database().await.expect("database");
    let mut client = db.connect().await.expect("connect");
    sluice_worker::migrate::migrate(&mut client)
        .await
        .expect("migrations");
    // Autovacuum must not be the one that did it.
    client
        .batch_execute(
            "ALTER TABLE sluice_files SET (autovacuum_enabled = false);
             ALTER TABLE sluice_claims SET (autovacuum_enabled = false);",
        )
        .await
        .expect("autovacuum off");
    let root = tempfile::tempdir().expect("tempdir");
    let landing = root.path().join("landing");
    std::fs::create_dir_all(&landing).expect("landing");
    land_files(&landing);
    let mut w = spawn(root.path(), db.url());
    w.settle(&client, FILES, Duration::from_secs(120)).await;
    assert_loaded_once(&client).await;

    let stats = scalar(
        &client,
        "SELECT count(*) FROM pg_stats WHERE tablename = 'sluice_files' AND attname = 'file_name'",
    )
    .await;
    assert_eq!(stats, 1, "sluice_files has no planner statistics");
    // Statistics counters reach pg_stat_user_tables within a second or so.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let vacuums = scalar(
            &client,
            "SELECT vacuum_count FROM pg_stat_user_tables WHERE relname = 'sluice_claims'",
        )
        .await;
        if vacuums >= 1 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the worker never vacuumed sluice_claims"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_role_that_does_not_own_the_tables_leaves_them_to_autovacuum() {
    let cluster = pg::shared().await;
    let db = cluster.create_database().await.expect("database");
    let mut client = db.connect().await.expect("connect");
    sluice_worker::migrate::migrate(&mut client)
        .await
        .expect("migrations");
    // The rights the worker needs (its migrations check the schema history table), but
    // no ownership of the tables it would vacuum.
    let role = format!(
        "sluice_upkeep_{}",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    );
    client
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
    let root = tempfile::tempdir().expect("tempdir");
    let landing = root.path().join("landing");
    std::fs::create_dir_all(&landing).expect("landing");
    land_files(&landing);
    let mut w = spawn(root.path(), &db.url_as(&role, "pw"));
    w.settle(&client, FILES, Duration::from_secs(120)).await;
    assert_loaded_once(&client).await;
    let log = std::fs::read_to_string(root.path().join("w-0.log")).expect("log");
    assert!(
        log.contains("leaving their vacuum and statistics to autovacuum"),
        "no word of the skipped upkeep in the log:\n{log}"
    );
    assert!(
        !log.contains("vacuuming the claims table failed"),
        "the upkeep was tried anyway:\n{log}"
    );
}

/// Claims a previous run of the same worker left behind (it was killed between claiming
/// files and giving back those it found loaded already, or the database was away when it
/// gave them back) are released when the worker starts again; another worker's claims
/// are not touched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_worker_releases_the_claims_of_its_previous_run() {
    let cluster = pg::shared().await;
    let db = cluster.create_database().await.expect("database");
    let mut client = db.connect().await.expect("connect");
    sluice_worker::migrate::migrate(&mut client)
        .await
        .expect("migrations");
    client
        .batch_execute(
            "INSERT INTO sluice_claims (pipeline, file_name, worker_id, claimed_at) VALUES
                 ('default', 'loaded-long-ago.csv', 'w-0', now()),
                 ('default', 'another-one.csv', 'w-0', now()),
                 ('default', 'someone-elses.csv', 'w-1', now())",
        )
        .await
        .expect("stale claims");
    let root = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir_all(root.path().join("landing")).expect("landing");
    let mut w = spawn(root.path(), db.url());
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        w.check_alive().expect("worker alive");
        let mine = scalar(
            &client,
            "SELECT count(*) FROM sluice_claims WHERE worker_id = 'w-0'",
        )
        .await;
        if mine == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "w-0's {mine} stale claims are still there after 30 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        scalar(
            &client,
            "SELECT count(*) FROM sluice_claims WHERE worker_id = 'w-1'"
        )
        .await,
        1,
        "another worker's claim must stay"
    );
}
