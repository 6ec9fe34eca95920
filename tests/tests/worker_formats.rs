//! Input formats (issue 9): generated NDJSON, gzip'd CSV and zstd'd NDJSON files load
//! exactly once (a multi-part gzip file survives a SIGKILL mid-way), a truncated `.gz`
//! is set aside with its reason (after some parts committed: those rows stay), and a highly compressible file far larger than a part
//! is loaded with the worker's memory bounded.

use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use sluice_testkit::pg;
use sluice_testkit::procs::{WorkerProc, WorkerSpec, tail};
use sluice_testkit::scenario::{Dataset, wait_settled};
use sluice_testkit::verify;

/// 4 MiB parts (decompressed bytes).
const PART_BYTES: &str = "4194304";
/// The goal of issue 8, which compressed input must keep.
const MAX_PEAK_RSS_KIB: u64 = 64 * 1024;

fn worker_flags() -> Vec<&'static str> {
    vec![
        "--part-bytes",
        PART_BYTES,
        "--poll-interval-ms",
        "100",
        "--log-format",
        "text",
    ]
}

/// Generates `files` files with the given generator flags, lets one worker load them and
/// checks that every valid row is stored once and every bad row quarantined once.
async fn load_exactly_once(
    files: u64,
    rows_per_file: u64,
    seed: u64,
    flags: &[&str],
    suffix: &str,
) {
    let cluster = pg::shared().await;
    let db = cluster.create_database().await.expect("database");
    let client = db.connect().await.expect("connect");
    let tmp = tempfile::tempdir().expect("tempdir");
    let root = tmp.path();
    let mut extra = vec!["--messy-row-share", "0.03"];
    extra.extend_from_slice(flags);
    let data =
        Dataset::generate_with(root, files, rows_per_file, 0.02, seed, &extra).expect("dataset");
    assert!(
        data.manifest.iter().all(|m| m.file.ends_with(suffix)),
        "generated names end in {suffix}: {:?}",
        data.manifest[0].file
    );
    let spec = WorkerSpec::in_root(root, "w-0", db.url(), &worker_flags());
    let landing = spec.landing.clone();
    let log_path = spec.log.clone();
    data.release(&landing, 0..files as usize).expect("release");
    let mut w = WorkerProc::spawn(spec).expect("worker");
    wait_settled(
        &client,
        &landing,
        files as usize,
        Duration::from_secs(120),
        || w.check_alive(),
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", tail(&log_path, 30)));
    let status = w.terminate(Duration::from_secs(30)).expect("SIGTERM");
    assert!(status.success(), "clean exit: {status}");
    let report = verify::check_exactly_once(&client, &data.expected)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", tail(&log_path, 30)));
    println!("{suffix}: {report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ndjson_files_load_exactly_once() {
    load_exactly_once(4, 5_000, 91, &["--format", "ndjson"], ".ndjson").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zstd_ndjson_files_load_exactly_once() {
    load_exactly_once(
        3,
        20_000,
        92,
        &["--format", "ndjson", "--compress", "zstd"],
        ".ndjson.zst",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gzip_csv_loads_in_parts_and_resumes_after_a_kill_exactly_once() {
    let cluster = pg::shared().await;
    let db = cluster.create_database().await.expect("database");
    let client = db.connect().await.expect("connect");
    let tmp = tempfile::tempdir().expect("tempdir");
    let root = tmp.path();
    // One big file: about 36 MB decompressed, 9 parts of 4 MiB.
    let data = Dataset::generate_with(root, 1, 300_000, 0.01, 93, &["--compress", "gzip"])
        .expect("dataset");
    let name = data.manifest[0].file.clone();
    assert!(name.ends_with(".csv.gz"), "{name}");
    let spec = WorkerSpec::in_root(root, "w-0", db.url(), &worker_flags());
    let landing = spec.landing.clone();
    let log_path = spec.log.clone();
    let log = || tail(&log_path, 30);
    data.release(&landing, 0..1).expect("release");
    let mut w = WorkerProc::spawn(spec).expect("worker");

    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        w.check_alive().unwrap_or_else(|e| panic!("{e}"));
        let row = client
            .query_opt(
                "SELECT outcome, coalesce(parts, 0)::int8 FROM sluice_files WHERE file_name = $1",
                &[&name],
            )
            .await
            .ok()
            .flatten();
        if let Some(row) = row {
            let (outcome, parts): (String, i64) = (row.get(0), row.get(1));
            if outcome == "partial" && parts >= 2 {
                break;
            }
            assert_ne!(outcome, "loaded", "loaded before a kill\n{}", log());
        }
        assert!(
            Instant::now() < deadline,
            "no partial state after 90 s\n{}",
            log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    w.crash_and_restart().expect("restart");
    wait_settled(&client, &landing, 1, Duration::from_secs(120), || {
        w.check_alive()
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", log()));
    let status = w.terminate(Duration::from_secs(30)).expect("SIGTERM");
    assert!(status.success(), "clean exit: {status}");
    let report = verify::check_exactly_once(&client, &data.expected)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", log()));
    println!("{report}");
    let row = client
        .query_one(
            "SELECT outcome, parts::int8, next_offset, file_size FROM sluice_files WHERE file_name = $1",
            &[&name],
        )
        .await
        .expect("ledger row");
    let (outcome, parts, next_offset, file_size): (String, i64, i64, i64) =
        (row.get(0), row.get(1), row.get(2), row.get(3));
    assert_eq!(outcome, "loaded");
    assert!(parts >= 5, "loaded in {parts} parts");
    let (decoded, _) =
        verify::read_decoded(&verify::locate(&landing, &name).expect("the file is archived"))
            .expect("decode");
    assert_eq!(
        next_offset,
        decoded.len() as i64,
        "offsets count decompressed bytes"
    );
    assert!(file_size < next_offset, "the ledger keeps the size on disk");
    assert!(
        std::fs::read_to_string(&log_path)
            .unwrap_or_default()
            .contains("resuming a large file"),
        "the restart resumed the file\n{}",
        log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_truncated_gzip_file_is_set_aside_with_its_reason() {
    let cluster = pg::shared().await;
    let db = cluster.create_database().await.expect("database");
    let client = db.connect().await.expect("connect");
    let tmp = tempfile::tempdir().expect("tempdir");
    let root = tmp.path();
    let data =
        Dataset::generate_with(root, 2, 20_000, 0.0, 94, &["--compress", "gzip"]).expect("dataset");
    let broken = data.manifest[0].file.clone();
    let path = data.staging.join(&broken);
    let bytes = std::fs::read(&path).expect("read");
    std::fs::write(&path, &bytes[..bytes.len() / 2]).expect("truncate");
    let spec = WorkerSpec::in_root(root, "w-0", db.url(), &worker_flags());
    let landing = spec.landing.clone();
    let log_path = spec.log.clone();
    data.release(&landing, 0..2).expect("release");
    let mut w = WorkerProc::spawn(spec).expect("worker");
    wait_settled(&client, &landing, 2, Duration::from_secs(90), || {
        w.check_alive()
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", tail(&log_path, 30)));
    let row = client
        .query_one(
            "SELECT outcome, failure_reason, failure_message FROM sluice_files WHERE file_name = $1",
            &[&broken],
        )
        .await
        .expect("ledger row");
    let (outcome, reason, message): (String, Option<String>, Option<String>) =
        (row.get(0), row.get(1), row.get(2));
    assert_eq!(outcome, "failed");
    assert_eq!(reason.as_deref(), Some("bad_compression"));
    assert!(message.unwrap_or_default().contains("gzip"));
    let note = landing
        .join("failed")
        .join(format!("{broken}{}", sluice_core::landing::REASON_SUFFIX));
    let note = std::fs::read_to_string(&note).expect("reason note next to the failed file");
    assert!(note.contains("bad_compression"), "{note}");
    assert!(landing.join("failed").join(&broken).exists());
    let good = &data.manifest[1];
    let (outcome, loaded): (String, i64) = {
        let row = client
            .query_one(
                "SELECT outcome, (SELECT count(*) FROM events) FROM sluice_files WHERE file_name = $1",
                &[&good.file],
            )
            .await
            .expect("ledger row");
        (row.get(0), row.get(1))
    };
    assert_eq!(outcome, "loaded");
    // The broken file committed nothing (its first part could not be decoded whole), so
    // only the good file's rows are stored.
    assert_eq!(loaded, good.valid_rows as i64);
    let status = w.terminate(Duration::from_secs(30)).expect("SIGTERM");
    assert!(status.success(), "clean exit: {status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damage_after_committed_parts_fails_the_file_and_keeps_those_rows() {
    let cluster = pg::shared().await;
    let db = cluster.create_database().await.expect("database");
    let client = db.connect().await.expect("connect");
    let tmp = tempfile::tempdir().expect("tempdir");
    let root = tmp.path();
    // About 18 MB decompressed (5 parts of 4 MiB); cut off the last quarter.
    let data = Dataset::generate_with(root, 1, 150_000, 0.0, 95, &["--compress", "gzip"])
        .expect("dataset");
    let name = data.manifest[0].file.clone();
    let path = data.staging.join(&name);
    let bytes = std::fs::read(&path).expect("read");
    std::fs::write(&path, &bytes[..bytes.len() * 3 / 4]).expect("truncate");
    let spec = WorkerSpec::in_root(root, "w-0", db.url(), &worker_flags());
    let landing = spec.landing.clone();
    let log_path = spec.log.clone();
    data.release(&landing, 0..1).expect("release");
    let mut w = WorkerProc::spawn(spec).expect("worker");
    wait_settled(&client, &landing, 1, Duration::from_secs(90), || {
        w.check_alive()
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", tail(&log_path, 30)));
    let status = w.terminate(Duration::from_secs(30)).expect("SIGTERM");
    assert!(status.success(), "clean exit: {status}");
    let row = client
        .query_one(
            "SELECT outcome, failure_reason, failure_message, coalesce(parts, 0)::int8,
                    coalesce(rows_loaded, 0)::int8, (SELECT count(*) FROM events)
             FROM sluice_files WHERE file_name = $1",
            &[&name],
        )
        .await
        .expect("ledger row");
    let (outcome, reason, message, parts, rows_loaded, stored): (
        String,
        Option<String>,
        Option<String>,
        i64,
        i64,
        i64,
    ) = (
        row.get(0),
        row.get(1),
        row.get(2),
        row.get(3),
        row.get(4),
        row.get(5),
    );
    assert_eq!(outcome, "failed", "{}", tail(&log_path, 30));
    assert_eq!(reason.as_deref(), Some("bad_compression"));
    assert!(
        message.unwrap_or_default().contains("stay loaded"),
        "the message says the committed parts stay"
    );
    assert!(parts >= 2, "{parts} parts committed before the damage");
    assert!(stored > 0 && stored < 150_000, "{stored} rows stored");
    assert_eq!(stored, rows_loaded, "the ledger counts what was stored");
    // The stored rows are exactly the file's first rows, each once.
    let distinct: i64 = client
        .query_one("SELECT count(DISTINCT event_id) FROM events", &[])
        .await
        .expect("count")
        .get(0);
    assert_eq!(distinct, stored);
    assert!(landing.join("failed").join(&name).exists());
}

/// Writes `rows` copies of one valid row, each padded with `pad` spaces (trimmed by the
/// worker's cleaning), as a gzip'd CSV file; returns the decompressed size.
fn write_compressible(path: &Path, rows: u64, pad: usize) -> u64 {
    let file = std::fs::File::create(path).expect("create");
    let mut gz = flate2::write::GzEncoder::new(
        std::io::BufWriter::new(file),
        flate2::Compression::default(),
    );
    let mut size = 0u64;
    let header = format!("{}\n", sluice_core::HEADER);
    gz.write_all(header.as_bytes()).expect("write");
    size += header.len() as u64;
    let padding = " ".repeat(pad);
    let row = format!(
        "0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d,2026-11-25T10:00:00Z,7,{padding}s-1{padding},view,42,books,19.99,1\n"
    );
    for _ in 0..rows {
        gz.write_all(row.as_bytes()).expect("write");
        size += row.len() as u64;
    }
    gz.finish().expect("finish").flush().expect("flush");
    size
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_highly_compressible_file_loads_with_bounded_memory() {
    let cluster = pg::shared().await;
    let db = cluster.create_database().await.expect("database");
    let client = db.connect().await.expect("connect");
    let tmp = tempfile::tempdir().expect("tempdir");
    let root = tmp.path();
    let spec = WorkerSpec::in_root(root, "w-0", db.url(), &worker_flags());
    let landing = spec.landing.clone();
    let log_path = spec.log.clone();
    let staged = root.join("bomb.csv.gz");
    // 2,000 rows of 100 KB: 200 MB decompressed, a few hundred KB compressed.
    let rows = 2_000u64;
    let decompressed = write_compressible(&staged, rows, 50_000);
    let compressed = std::fs::metadata(&staged).expect("stat").len();
    assert!(decompressed > 200_000_000, "{decompressed}");
    assert!(compressed < 8_000_000, "{compressed}");
    std::fs::rename(&staged, landing.join("bomb.csv.gz")).expect("release");
    let mut w = WorkerProc::spawn(spec).expect("worker");
    wait_settled(&client, &landing, 1, Duration::from_secs(240), || {
        w.check_alive()
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", tail(&log_path, 30)));
    let peak_kib = w.peak_rss_kib().expect("peak RSS");
    let status = w.terminate(Duration::from_secs(30)).expect("SIGTERM");
    assert!(status.success(), "clean exit: {status}");
    let row = client
        .query_one(
            "SELECT outcome, parts::int8, next_offset, (SELECT count(*) FROM events) FROM sluice_files",
            &[],
        )
        .await
        .expect("ledger row");
    let (outcome, parts, next_offset, stored): (String, i64, i64, i64) =
        (row.get(0), row.get(1), row.get(2), row.get(3));
    assert_eq!(outcome, "loaded", "{}", tail(&log_path, 30));
    assert_eq!(stored, rows as i64);
    assert_eq!(next_offset, decompressed as i64);
    assert!(parts >= 40, "loaded in {parts} parts");
    println!(
        "{compressed} bytes → {decompressed} decompressed, {parts} parts, peak RSS {} MiB",
        peak_kib / 1024
    );
    assert!(
        peak_kib < MAX_PEAK_RSS_KIB,
        "peak RSS {peak_kib} KiB, limit {MAX_PEAK_RSS_KIB} KiB"
    );
}
