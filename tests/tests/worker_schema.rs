//! A declared schema (`spec.schema`) end to end against a real PostgreSQL: the worker
//! creates the table, matches fields by header name, cleans and checks each value and
//! stores it in the declared types; a table that does not fit keeps the worker not ready
//! (Degraded `schema_mismatch`) until it is fixed, then loading starts by itself.

use std::path::Path;
use std::time::{Duration, Instant};

use sluice_testkit::pg;
use sluice_testkit::procs::{
    WorkerProc, WorkerSpec, free_local_addr, http_get, metric_value, tail,
};
use sluice_testkit::scenario::wait_settled;

use sluice_testkit::scenario::land;

fn config(dir: &Path) -> std::path::PathBuf {
    let path = dir.join("pipeline.json");
    let json = serde_json::json!({
        "schema": {
            "table": "Sensor Readings",
            "key": "reading_id",
            "columns": [
                {"name": "reading_id", "type": "uuid", "clean": ["trim", "normalizeUuid"]},
                {"name": "taken_at", "type": "timestamptz", "source": "time", "futureToleranceSeconds": 3600},
                {"name": "site", "type": "text", "maxLength": 8, "allowed": ["north", "south"],
                 "clean": ["trim", "ignoreCase"]},
                {"name": "celsius", "type": "numeric", "precision": 5, "scale": 1,
                 "min": "-90", "max": "60", "clean": ["trim", "normalizeNumber"]},
                {"name": "ok", "type": "boolean", "default": "true", "clean": ["emptyToNull"]},
                {"name": "samples", "type": "smallint", "nullable": true},
                {"name": "day", "type": "date", "nullable": true},
                {"name": "meta", "type": "jsonb", "nullable": true, "clean": ["emptyToNull"]},
                {"name": "ratio", "type": "double", "nullable": true}
            ]
        }
    });
    std::fs::write(&path, json.to_string()).expect("config");
    path
}

const A: &str = "0b6f3a5e-1c2d-4e5f-8a9b-0c1d2e3f4a5b";
const B: &str = "1b6f3a5e-1c2d-4e5f-8a9b-0c1d2e3f4a5b";
const C: &str = "2b6f3a5e-1c2d-4e5f-8a9b-0c1d2e3f4a5b";

fn spawn(
    root: &Path,
    db_url: &str,
    metrics: std::net::SocketAddr,
) -> (WorkerProc, std::path::PathBuf) {
    let log = root.join("w-0.log");
    let w = WorkerProc::spawn(WorkerSpec {
        id: "w-0".into(),
        landing: root.join("landing"),
        checkpoint: root.join("ck"),
        database_url: db_url.into(),
        extra: vec![
            "--config".into(),
            config(root).display().to_string(),
            "--metrics-addr".into(),
            metrics.to_string(),
        ],
        log: log.clone(),
    })
    .expect("worker");
    (w, log)
}

/// Waits until the one landed file is settled, or fails with the worker's log.
async fn settle(
    client: &tokio_postgres::Client,
    landing: &Path,
    seconds: u64,
    w: &mut WorkerProc,
    log: &Path,
) {
    wait_settled(client, landing, 1, Duration::from_secs(seconds), || {
        w.check_alive()
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", tail(log, 40)));
}

fn metrics_text(addr: std::net::SocketAddr) -> String {
    http_get(addr, "/metrics")
        .map(|(_, body)| body)
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_declared_schema_creates_cleans_and_types_the_table() {
    let cluster = pg::shared().await;
    let db = cluster.create_database().await.expect("database");
    let client = db.connect().await.expect("connect");
    let root = tempfile::tempdir().expect("tempdir");
    let landing = root.path().join("landing");
    std::fs::create_dir_all(&landing).expect("landing");
    // Header order differs from the table's and holds a field the table does not have.
    land(
        &landing,
        "r-1.csv",
        format!(
            "site,time,reading_id,celsius,extra,ok,samples,day,meta,ratio\n\
             \x20North ,2026-11-25T10:00:00+02:00,urn:uuid:{A},+1_2.5,x,,7,2026-11-25,\"{{\"\"k\"\": [1, 2]}}\",6.02e23\n\
             south,2026-11-25T10:00:00Z,{},-3,y,no,,,,\n\
             east,2026-11-25T10:00:00Z,{C},1,z,,,,,\n\
             south,2026-11-25T10:00:00Z,{C},61,z,,,,,\n\
             south,2026-11-25T10:00:00Z,{C},1,z,,40000,,,\n\
             south,2999-01-01T00:00:00Z,{C},1,z,,,,,\n",
            B.to_uppercase()
        ),
    );
    let metrics = free_local_addr();
    let (mut w, log) = spawn(root.path(), db.url(), metrics);
    settle(&client, &landing, 60, &mut w, &log).await;

    let rows = client
        .query(
            "SELECT reading_id::text, taken_at = '2026-11-25T08:00:00Z', site, celsius::text, ok,
                    samples, day::text, meta::text, ratio
             FROM \"Sensor Readings\" ORDER BY reading_id",
            &[],
        )
        .await
        .unwrap_or_else(|e| panic!("query: {e}\n{}", tail(&log, 40)));
    assert_eq!(rows.len(), 2, "two valid rows");
    let first = &rows[0];
    assert_eq!(first.get::<_, String>(0), A);
    assert!(first.get::<_, bool>(1), "the offset was applied");
    assert_eq!(
        first.get::<_, String>(2),
        "north",
        "trimmed, canonical spelling"
    );
    assert_eq!(
        first.get::<_, String>(3),
        "12.5",
        "separator and sign removed"
    );
    assert!(first.get::<_, bool>(4), "the default of an empty boolean");
    assert_eq!(first.get::<_, Option<i16>>(5), Some(7));
    assert_eq!(
        first.get::<_, Option<String>>(6).as_deref(),
        Some("2026-11-25")
    );
    assert_eq!(
        first.get::<_, Option<String>>(7).as_deref(),
        Some(r#"{"k": [1, 2]}"#)
    );
    assert_eq!(first.get::<_, Option<f64>>(8), Some(6.02e23));
    let second = &rows[1];
    assert_eq!(
        second.get::<_, String>(0),
        B,
        "upper-case UUID stored lower-case"
    );
    assert_eq!(second.get::<_, String>(3), "-3.0");
    assert!(!second.get::<_, bool>(4));
    assert_eq!(second.get::<_, Option<i16>>(5), None);
    assert_eq!(second.get::<_, Option<String>>(7), None, "empty to NULL");

    let rejected = client
        .query(
            "SELECT line_number, reason FROM quarantine ORDER BY line_number",
            &[],
        )
        .await
        .expect("quarantine");
    let rejected: Vec<(i64, String)> = rejected.iter().map(|r| (r.get(0), r.get(1))).collect();
    assert_eq!(
        rejected,
        vec![
            (4, "not_allowed".into()),
            (5, "out_of_range".into()),
            (6, "out_of_range".into()),
            (7, "future_timestamp".into()),
        ]
    );
    let ledger = client
        .query_one("SELECT rows_loaded, rows_rejected FROM sluice_files", &[])
        .await
        .expect("ledger");
    assert_eq!((ledger.get::<_, i64>(0), ledger.get::<_, i64>(1)), (2, 4));

    let text = metrics_text(metrics);
    for (column, rule, n) in [
        ("site", "trim", 1.0),
        ("site", "ignore_case", 1.0),
        ("celsius", "normalize_number", 1.0),
        ("reading_id", "normalize_uuid", 1.0),
        ("meta", "empty_to_null", 1.0),
    ] {
        let name = format!("sluice_rows_cleaned_total{{column=\"{column}\",rule=\"{rule}\"}}");
        assert_eq!(metric_value(&text, &name), Some(n), "{name}\n{text}");
    }
    w.check_alive().expect("still running");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_that_does_not_fit_blocks_loading_until_it_is_fixed() {
    let cluster = pg::shared().await;
    let db = cluster.create_database().await.expect("database");
    let client = db.connect().await.expect("connect");
    // celsius has the wrong type; samples is missing (nullable: added by the worker).
    client
        .batch_execute(
            "CREATE TABLE \"Sensor Readings\" (reading_id uuid NOT NULL, taken_at timestamptz NOT NULL,
                 site text NOT NULL, celsius integer NOT NULL, ok boolean NOT NULL,
                 day date, meta jsonb, ratio double precision)",
        )
        .await
        .expect("table");
    let root = tempfile::tempdir().expect("tempdir");
    let landing = root.path().join("landing");
    std::fs::create_dir_all(&landing).expect("landing");
    land(
        &landing,
        "r-1.csv",
        format!("reading_id,time,site,celsius\n{A},2026-11-25T10:00:00Z,north,1.5\n"),
    );
    let metrics = free_local_addr();
    let (mut w, log) = spawn(root.path(), db.url(), metrics);

    let degraded = "sluice_worker_degraded{cause=\"schema_mismatch\"}";
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        w.check_alive().expect("the worker waits, it does not exit");
        if metric_value(&metrics_text(metrics), degraded) == Some(1.0) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no schema_mismatch\n{}",
            tail(&log, 30)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (status, _) = http_get(metrics, "/readyz").expect("readyz");
    assert_ne!(status, 200, "not ready while the table does not fit");
    let log_text = std::fs::read_to_string(&log).expect("log");
    assert!(
        log_text.contains("celsius"),
        "the log names the column\n{log_text}"
    );
    assert!(
        landing.join("r-1.csv").exists(),
        "nothing is loaded meanwhile"
    );

    client
        .batch_execute("ALTER TABLE \"Sensor Readings\" ALTER COLUMN celsius TYPE numeric(5,1)")
        .await
        .expect("fix");
    settle(&client, &landing, 90, &mut w, &log).await;
    let row = client
        .query_one(
            "SELECT celsius::text, samples FROM \"Sensor Readings\"",
            &[],
        )
        .await
        .expect("row, with the added samples column");
    assert_eq!(row.get::<_, String>(0), "1.5");
    assert_eq!(row.get::<_, Option<i16>>(1), None);
    assert_eq!(metric_value(&metrics_text(metrics), degraded), Some(0.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headerless_semicolon_files_load_by_position() {
    let cluster = pg::shared().await;
    let db = cluster.create_database().await.expect("database");
    let client = db.connect().await.expect("connect");
    let root = tempfile::tempdir().expect("tempdir");
    let landing = root.path().join("landing");
    std::fs::create_dir_all(&landing).expect("landing");
    let config = root.path().join("pipeline.json");
    let json = serde_json::json!({
        "source": {"csv": {"delimiter": ";", "quote": "'", "header": false}},
        "schema": {
            "table": "notes",
            "matchBy": "position",
            "columns": [
                {"name": "id", "type": "integer"},
                {"name": "body", "type": "text"}
            ]
        }
    });
    std::fs::write(&config, json.to_string()).expect("config");
    land(
        &landing,
        "n-1.csv",
        "1;plain, with comma\n2;'semi; colon and ''quote'''\nx;bad id\n",
    );
    let log = root.path().join("w-0.log");
    let mut w = WorkerProc::spawn(WorkerSpec {
        id: "w-0".into(),
        landing: landing.clone(),
        checkpoint: root.path().join("ck"),
        database_url: db.url().into(),
        extra: vec!["--config".into(), config.display().to_string()],
        log: log.clone(),
    })
    .expect("worker");
    w.settle(&client, 1, Duration::from_secs(60)).await;
    let rows = client
        .query("SELECT id, body FROM notes ORDER BY id", &[])
        .await
        .expect("rows");
    let rows: Vec<(i32, String)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    assert_eq!(
        rows,
        vec![
            (1, "plain, with comma".to_string()),
            (2, "semi; colon and 'quote'".to_string())
        ]
    );
    let rejected = client
        .query_one("SELECT line_number, reason FROM quarantine", &[])
        .await
        .expect("one rejected row");
    assert_eq!(rejected.get::<_, i64>(0), 3, "line 1 is data: no header");
    assert_eq!(rejected.get::<_, String>(1), "bad_value");
}

/// `postgres.schema`: each pipeline's tables, ledger included, live in its own schema,
/// whatever search_path the database or role would give a session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_postgres_schema_holds_its_own_tables_and_ledger() {
    let cluster = pg::shared().await;
    let db = cluster.create_database().await.expect("database");
    let client = db.connect().await.expect("connect");
    client
        .batch_execute(&format!(
            "ALTER DATABASE \"{}\" SET search_path = nowhere",
            db.name()
        ))
        .await
        .expect("a hostile default search_path");
    let root = tempfile::tempdir().expect("tempdir");
    let mut workers = Vec::new();
    for (shop, rows) in [("Shop A", 2usize), ("shop_b", 3)] {
        let landing = root.path().join(format!("landing-{shop}"));
        std::fs::create_dir_all(&landing).expect("landing");
        let mut text = format!("{}\n", sluice_core::event::HEADER);
        for i in 0..rows {
            text.push_str(&format!(
                "{},2026-11-25T10:00:00Z,{i},s-{i},view,{i},books,1.00,0\n",
                uuid::Uuid::new_v4()
            ));
        }
        // The same file name in both pipelines: their ledgers must not see each other.
        land(&landing, "export.csv", &text);
        let log = root.path().join(format!("{shop}.log"));
        let w = WorkerProc::spawn(WorkerSpec {
            id: "w-0".into(),
            landing: landing.clone(),
            checkpoint: root.path().join(format!("ck-{shop}")),
            database_url: db.url().into(),
            extra: vec!["--postgres-schema".into(), shop.into()],
            log: log.clone(),
        })
        .expect("worker");
        workers.push((shop, rows, landing, w, log));
    }
    for (shop, rows, landing, w, log) in &mut workers {
        let schema = format!("\"{}\"", shop.replace('"', "\"\""));
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            w.check_alive().expect("worker running");
            let done = client
                .query_one(&format!("SELECT count(*) FROM {schema}.sluice_files"), &[])
                .await
                .map(|r| r.get::<_, i64>(0))
                .unwrap_or(0);
            if done == 1 && !landing.join("export.csv").exists() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{shop} not loaded\n{}",
                tail(log, 30)
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let loaded: i64 = client
            .query_one(&format!("SELECT count(*) FROM {schema}.events"), &[])
            .await
            .expect("events in the pipeline's schema")
            .get(0);
        assert_eq!(loaded, *rows as i64, "{shop}");
    }
    let in_public: i64 = client
        .query_one(
            "SELECT count(*) FROM pg_tables WHERE tablename IN ('events', 'sluice_files') \
             AND schemaname NOT IN ('Shop A', 'shop_b')",
            &[],
        )
        .await
        .expect("catalogue")
        .get(0);
    assert_eq!(in_public, 0, "no table outside the configured schemas");
}

/// A declared schema with every column type loads the same rows from CSV, NDJSON,
/// gzip'd CSV and Zstandard NDJSON (`.csv`, `.jsonl`, `.csv.gz`, `.jsonl.zst`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_type_loads_from_every_format() {
    use std::io::Write as _;
    let cluster = pg::shared().await;
    let db = cluster.create_database().await.expect("database");
    let client = db.connect().await.expect("connect");
    let root = tempfile::tempdir().expect("tempdir");
    let landing = root.path().join("landing");
    std::fs::create_dir_all(&landing).expect("landing");
    let config = root.path().join("pipeline.json");
    let json = serde_json::json!({
        "schema": {
            "table": "every_type",
            "columns": [
                {"name": "id", "type": "uuid"},
                {"name": "label", "type": "text", "maxLength": 20, "clean": ["trim"]},
                {"name": "small", "type": "smallint"},
                {"name": "medium", "type": "integer"},
                {"name": "large", "type": "bigint"},
                {"name": "amount", "type": "numeric", "precision": 12, "scale": 3},
                {"name": "ratio", "type": "double"},
                {"name": "flag", "type": "boolean"},
                {"name": "day", "type": "date"},
                {"name": "at", "type": "timestamptz"},
                {"name": "doc", "type": "jsonb", "nullable": true}
            ]
        }
    });
    std::fs::write(&config, json.to_string()).expect("config");
    let header = "id,label,small,medium,large,amount,ratio,flag,day,at,doc";
    let row = |i: u32| {
        (
            format!("00000000-0000-4000-8000-00000000000{i}"),
            format!(
                "00000000-0000-4000-8000-00000000000{i},\" row {i}\",-32768,2147483647,-9223372036854775808,\
                 123456789.125,2.5e-3,yes,2024-02-29,2026-11-25T10:00:00.25+01:00,\"{{\"\"n\"\": {i}}}\""
            ),
            serde_json::json!({
                "id": format!("00000000-0000-4000-8000-00000000000{i}"),
                "label": format!(" row {i}"), "small": -32768, "medium": 2147483647,
                "large": -9223372036854775808i64, "amount": 123456789.125, "ratio": 2.5e-3,
                "flag": "yes", "day": "2024-02-29", "at": "2026-11-25T10:00:00.25+01:00",
                "doc": {"n": i}
            })
            .to_string(),
        )
    };
    let (_, csv1, _) = row(1);
    land(&landing, "a.csv", format!("{header}\n{csv1}\n"));
    let (_, _, json2) = row(2);
    land(&landing, "b.jsonl", format!("{json2}\n"));
    let (_, csv3, _) = row(3);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(format!("{header}\n{csv3}\n").as_bytes())
        .expect("gzip");
    land(&landing, "c.csv.gz", gz.finish().expect("gzip"));
    let (_, _, json4) = row(4);
    let zst = zstd::encode_all(format!("{json4}\n").as_bytes(), 3).expect("zstd");
    land(&landing, "d.jsonl.zst", zst);

    let log = root.path().join("w-0.log");
    let mut w = WorkerProc::spawn(WorkerSpec {
        id: "w-0".into(),
        landing: landing.clone(),
        checkpoint: root.path().join("ck"),
        database_url: db.url().into(),
        extra: vec!["--config".into(), config.display().to_string()],
        log: log.clone(),
    })
    .expect("worker");
    w.settle(&client, 4, Duration::from_secs(60)).await;
    let rows = client
        .query(
            "SELECT id::text, label, small, medium, large, amount::text, ratio, flag, day::text,
                    at = '2026-11-25T09:00:00.25Z', doc->>'n'
             FROM every_type ORDER BY id",
            &[],
        )
        .await
        .expect("rows");
    assert_eq!(
        rows.len(),
        4,
        "one row from each format\n{}",
        tail(&log, 20)
    );
    for (i, r) in rows.iter().enumerate() {
        let n = i + 1;
        assert_eq!(r.get::<_, String>(0), row(n as u32).0);
        assert_eq!(r.get::<_, String>(1), format!("row {n}"), "trimmed");
        assert_eq!(r.get::<_, i16>(2), i16::MIN);
        assert_eq!(r.get::<_, i32>(3), i32::MAX);
        assert_eq!(r.get::<_, i64>(4), i64::MIN);
        assert_eq!(r.get::<_, String>(5), "123456789.125");
        assert_eq!(r.get::<_, f64>(6), 2.5e-3);
        assert!(r.get::<_, bool>(7));
        assert_eq!(r.get::<_, String>(8), "2024-02-29");
        assert!(r.get::<_, bool>(9), "the offset applied");
        assert_eq!(r.get::<_, Option<String>>(10), Some(n.to_string()));
    }
    let rejected: i64 = client
        .query_one("SELECT count(*) FROM quarantine", &[])
        .await
        .expect("count")
        .get(0);
    assert_eq!(rejected, 0);
}

/// Workers starting together race to create the declared table and the key's index:
/// `IF NOT EXISTS` does not stop two sessions creating one name at once. Every one of
/// them must come out with the table prepared (the loser of a race checks it again).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_starting_together_all_prepare_the_declared_table() {
    let cluster = pg::shared().await;
    let root = tempfile::tempdir().expect("tempdir");
    let schema: sluice_core::schema::TableSchema = serde_json::from_value(
        serde_json::from_str::<serde_json::Value>(
            &std::fs::read_to_string(config(root.path())).expect("config"),
        )
        .expect("json")["schema"]
            .clone(),
    )
    .expect("schema");
    // A few rounds, each on a fresh database, with one session per "worker".
    for round in 0..4 {
        let db = cluster.create_database().await.expect("database");
        let mut clients = Vec::new();
        for _ in 0..6 {
            clients.push(db.connect().await.expect("connect"));
        }
        let results = futures::future::join_all(
            clients
                .iter()
                .map(|c| sluice_worker::tables::prepare_declared(c, &schema, true)),
        )
        .await;
        for (i, r) in results.into_iter().enumerate() {
            if let Err(e) = r {
                panic!("round {round}, session {i}: {e:?}");
            }
        }
        let client = db.connect().await.expect("connect");
        let indexes: i64 = client
            .query_one(
                "SELECT count(*) FROM pg_indexes WHERE tablename = 'Sensor Readings'",
                &[],
            )
            .await
            .expect("indexes")
            .get(0);
        assert_eq!(indexes, 1, "the key's unique index, once");
    }
}
