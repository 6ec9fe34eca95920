//! Row-level hostility of a real landing zone (issue 8): stray and unterminated quotes,
//! NUL bytes, the exact bytes of rejected rows, over-long rows and dedupe counts. Each
//! bad row must cost only itself: its neighbours load, and the ledger's counts add up to
//! the file's data lines.

use std::path::{Path, PathBuf};
use std::time::Duration;

use sluice_testkit::pg::{self, TestDb};
use sluice_testkit::procs::{WorkerProc, WorkerSpec, tail};
use sluice_testkit::scenario::wait_settled;
use tokio_postgres::Client;
use uuid::Uuid;

/// A worker on its own database and landing directory.
struct Rig {
    _root: tempfile::TempDir,
    landing: PathBuf,
    log: PathBuf,
    worker: WorkerProc,
    client: Client,
    _db: TestDb,
}

async fn rig(extra: &[&str]) -> Rig {
    let cluster = pg::shared().await;
    let db = cluster.create_database().await.expect("database");
    let root = tempfile::tempdir().expect("tempdir");
    let spec = WorkerSpec::in_root(root.path(), "w-0", db.url(), extra);
    let (landing, log) = (spec.landing.clone(), spec.log.clone());
    let worker = WorkerProc::spawn(spec).expect("worker");
    let client = db.connect().await.expect("connect");
    Rig {
        _root: root,
        landing,
        log,
        worker,
        client,
        _db: db,
    }
}

impl Rig {
    /// Waits until the ledger holds `files` files and no `*.csv` is left in landing.
    async fn settle(&mut self, files: usize) {
        let worker = &mut self.worker;
        wait_settled(
            &self.client,
            &self.landing,
            files,
            Duration::from_secs(45),
            || worker.check_alive(),
        )
        .await
        .unwrap_or_else(|e| panic!("{e}\nworker log:\n{}", tail(&self.log, 40)));
    }

    async fn count(&self, sql: &str) -> i64 {
        self.client
            .query_one(sql, &[])
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
            .get(0)
    }

    /// `(file_name, outcome, rows_loaded, rows_rejected)` in file name order.
    async fn ledger(&self) -> Vec<(String, String, i64, i64)> {
        let sql =
            "SELECT file_name, outcome, rows_loaded, rows_rejected FROM sluice_files ORDER BY 1";
        let rows = self.client.query(sql, &[]).await.expect("ledger");
        rows.iter()
            .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
            .collect()
    }

    async fn quarantine(&self, file: &str) -> Vec<Rejected> {
        let rows = self
            .client
            .query(
                "SELECT line_number, reason, message, raw_line, raw_bytes FROM quarantine \
                 WHERE source_file = $1 ORDER BY line_number",
                &[&file],
            )
            .await
            .expect("quarantine");
        rows.iter()
            .map(|r| Rejected {
                line: r.get(0),
                reason: r.get(1),
                message: r.get(2),
                raw_line: r.get(3),
                raw_bytes: r.get(4),
            })
            .collect()
    }

    /// The stored event ids, sorted.
    async fn event_ids(&self) -> Vec<Uuid> {
        let rows = self
            .client
            .query("SELECT event_id FROM events ORDER BY event_id", &[])
            .await
            .expect("events");
        rows.iter().map(|r| r.get(0)).collect()
    }
}

#[derive(Debug)]
struct Rejected {
    line: i64,
    reason: String,
    message: String,
    raw_line: String,
    raw_bytes: Option<Vec<u8>>,
}

/// One valid data row with the given id and category.
fn row_with(id: Uuid, category: &str) -> String {
    format!("{id},2026-11-25T10:00:00Z,1,s-1,view,7,{category},12.50,0")
}

/// One valid data row with a fresh event id; returns the id too.
fn row(category: &str) -> (Uuid, String) {
    let id = Uuid::new_v4();
    (id, row_with(id, category))
}

/// A landing file: the header, then each line followed by `\n`.
fn csv<L: AsRef<[u8]>>(lines: &[L]) -> Vec<u8> {
    let mut out = format!("{}\n", sluice_core::HEADER).into_bytes();
    for line in lines {
        out.extend_from_slice(line.as_ref());
        out.push(b'\n');
    }
    out
}

use sluice_testkit::scenario::land;

fn sorted(mut ids: Vec<Uuid>) -> Vec<Uuid> {
    ids.sort();
    ids
}

/// Files directly under `dir/*/` (the archive's day folders), by name.
fn files_in_day_folders(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|days| {
            days.flatten()
                .filter(|d| d.path().is_dir())
                .flat_map(|d| std::fs::read_dir(d.path()).into_iter().flatten().flatten())
                .map(|f| f.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stray_quote_in_an_unquoted_field_is_literal() {
    let mut r = rig(&[]).await;
    let rows = [row("12\" pipes"), row("books"), row("toys"), row("garden")];
    let lines: Vec<&String> = rows.iter().map(|(_, l)| l).collect();
    land(&r.landing, "quotes.csv", csv(&lines));
    r.settle(1).await;

    assert_eq!(
        r.ledger().await,
        vec![("quotes.csv".into(), "loaded".into(), 4, 0)],
        "a quote inside a field neither swallows the following rows nor rejects its own"
    );
    assert_eq!(
        r.event_ids().await,
        sorted(rows.iter().map(|(id, _)| *id).collect())
    );
    let category: String = r
        .client
        .query_one(
            "SELECT category FROM events WHERE event_id = $1",
            &[&rows[0].0],
        )
        .await
        .expect("row 1")
        .get(0);
    assert_eq!(
        category, "12\" pipes",
        "the quote is stored as a literal character"
    );
    assert_eq!(r.count("SELECT count(*) FROM quarantine").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unterminated_quote_takes_only_its_own_line() {
    let mut r = rig(&[]).await;
    let good: Vec<(Uuid, String)> = (0..5).map(|_| row("books")).collect();
    // Row 3 (line 4) opens a quoted category that no later byte of the file closes.
    let bad = format!(
        "{},2026-11-25T10:00:00Z,1,s-1,view,7,\"garden,12.50,0",
        Uuid::new_v4()
    );
    let lines = [
        &good[0].1, &good[1].1, &bad, &good[2].1, &good[3].1, &good[4].1,
    ];
    land(&r.landing, "unclosed.csv", csv(&lines));
    r.settle(1).await;

    assert_eq!(
        r.ledger().await,
        vec![("unclosed.csv".into(), "loaded".into(), 5, 1)],
        "rows_loaded + rows_rejected = the 6 data lines"
    );
    assert_eq!(
        r.event_ids().await,
        sorted(good.iter().map(|(id, _)| *id).collect()),
        "the neighbours after the unclosed quote load"
    );
    let q = r.quarantine("unclosed.csv").await;
    assert_eq!(q.len(), 1, "{q:?}");
    assert_eq!((q[0].line, q[0].reason.as_str()), (4, "wrong_column_count"));
    assert_eq!(
        q[0].raw_line, bad,
        "only the first physical line is rejected"
    );
    assert_eq!(q[0].raw_bytes.as_deref(), Some(bad.as_bytes()));
    assert!(
        q[0].message.to_lowercase().contains("quote"),
        "the message names the unclosed quote: {}",
        q[0].message
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nul_byte_in_one_row_quarantines_only_that_row() {
    let mut r = rig(&[]).await;
    let (id1, line1) = row("books");
    let (id3, line3) = row("garden");
    let nul_line: Vec<u8> = row_with(Uuid::new_v4(), "bo\0oks").into_bytes();
    land(
        &r.landing,
        "nul-row.csv",
        csv(&[line1.as_bytes(), &nul_line, line3.as_bytes()]),
    );
    // A NUL in the header is what makes a file binary.
    let mut binary = sluice_core::HEADER.as_bytes().to_vec();
    binary.insert(5, 0);
    binary.extend_from_slice(format!("\n{}\n", row("toys").1).as_bytes());
    land(&r.landing, "nul-header.csv", &binary);
    r.settle(2).await;

    assert_eq!(
        r.ledger().await,
        vec![
            ("nul-header.csv".into(), "failed".into(), 0, 0),
            ("nul-row.csv".into(), "loaded".into(), 2, 1),
        ]
    );
    let reason: String = r
        .client
        .query_one(
            "SELECT coalesce(failure_reason, '') FROM sluice_files WHERE file_name = 'nul-header.csv'",
            &[],
        )
        .await
        .expect("ledger")
        .get(0);
    assert_eq!(reason, "binary_file");
    assert_eq!(r.event_ids().await, sorted(vec![id1, id3]));

    let q = r.quarantine("nul-row.csv").await;
    assert_eq!(q.len(), 1, "{q:?}");
    assert_eq!((q[0].line, q[0].reason.as_str()), (3, "invalid_utf8"));
    assert_eq!(
        q[0].raw_bytes.as_deref(),
        Some(nul_line.as_slice()),
        "the exact bytes, NUL included"
    );
    assert_eq!(
        q[0].raw_line,
        String::from_utf8_lossy(&nul_line).replace('\0', "\u{FFFD}"),
        "the NUL shows as U+FFFD in the text column"
    );
    assert!(
        q[0].message.to_uppercase().contains("NUL"),
        "the message says NUL: {}",
        q[0].message
    );

    let failed = r.landing.join("failed");
    assert!(
        failed.join("nul-header.csv").exists(),
        "binary file set aside"
    );
    assert!(
        !failed.join("nul-row.csv").exists(),
        "a NUL in a data row does not set the file aside"
    );
    assert_eq!(
        files_in_day_folders(&r.landing.join("archive")),
        vec!["nul-row.csv".to_string()]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejected_rows_keep_their_exact_bytes() {
    let mut r = rig(&[]).await;
    let (id1, line1) = row("books");
    let (id3, line3) = row("toys");
    // Valid UTF-8 (multi-byte characters included) but rejected by validation.
    let unknown_type = format!(
        "{},2026-11-25T10:00:00Z,1,s-1,click,7,caf\u{e9} \u{2615},12.50,0",
        Uuid::new_v4()
    );
    let negative = format!(
        "{},2026-11-25T10:00:00Z,1,s-1,purchase,7,books,12.50,-3",
        Uuid::new_v4()
    );
    land(
        &r.landing,
        "rejects.csv",
        csv(&[&line1, &unknown_type, &line3, &negative]),
    );
    r.settle(1).await;

    assert_eq!(
        r.ledger().await,
        vec![("rejects.csv".into(), "loaded".into(), 2, 2)]
    );
    assert_eq!(r.event_ids().await, sorted(vec![id1, id3]));
    let q = r.quarantine("rejects.csv").await;
    let got: Vec<(i64, &str, &str, Option<&[u8]>)> = q
        .iter()
        .map(|q| {
            (
                q.line,
                q.reason.as_str(),
                q.raw_line.as_str(),
                q.raw_bytes.as_deref(),
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![
            (
                3,
                "unknown_event_type",
                unknown_type.as_str(),
                Some(unknown_type.as_bytes())
            ),
            (
                5,
                "negative_quantity",
                negative.as_str(),
                Some(negative.as_bytes())
            ),
        ],
        "raw_bytes holds every rejected row's exact bytes, not only non-UTF-8 ones"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dedupe_counts_skipped_rows_in_the_ledger() {
    let mut r = rig(&["--dedupe"]).await;
    let first: Vec<(Uuid, String)> = (0..5).map(|_| row("books")).collect();
    land(
        &r.landing,
        "a.csv",
        csv(&first.iter().map(|(_, l)| l).collect::<Vec<_>>()),
    );
    r.settle(1).await;
    // b.csv: 3 new events, and 2 whose ids a.csv already stored.
    let mut second: Vec<(Uuid, String)> = (0..3).map(|_| row("toys")).collect();
    second.push((first[1].0, row_with(first[1].0, "toys")));
    second.push((first[3].0, row_with(first[3].0, "toys")));
    land(
        &r.landing,
        "b.csv",
        csv(&second.iter().map(|(_, l)| l).collect::<Vec<_>>()),
    );
    r.settle(2).await;

    let mut ids: Vec<Uuid> = first.iter().map(|(id, _)| *id).collect();
    ids.extend(second[..3].iter().map(|(id, _)| *id));
    assert_eq!(r.event_ids().await, sorted(ids), "8 distinct events");
    let rows = r
        .client
        .query(
            "SELECT file_name, rows_loaded, rows_rejected, rows_deduplicated FROM sluice_files ORDER BY 1",
            &[],
        )
        .await
        .expect("ledger");
    let got: Vec<(String, i64, i64, i64)> = rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect();
    assert_eq!(
        got,
        vec![("a.csv".into(), 5, 0, 0), ("b.csv".into(), 3, 0, 2)],
        "rows skipped as duplicates are not reported as loaded"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_row_longer_than_the_limit_is_quarantined() {
    let mut r = rig(&["--max-row-bytes", "4096"]).await;
    let (id1, line1) = row("books");
    let (id3, line3) = row("toys");
    let long = row_with(Uuid::new_v4(), &"x".repeat(100_000));
    land(&r.landing, "long.csv", csv(&[&line1, &long, &line3]));
    r.settle(1).await;

    assert_eq!(
        r.ledger().await,
        vec![("long.csv".into(), "loaded".into(), 2, 1)]
    );
    assert_eq!(r.event_ids().await, sorted(vec![id1, id3]));
    let q = r.quarantine("long.csv").await;
    assert_eq!(q.len(), 1, "{q:?}");
    assert_eq!((q[0].line, q[0].reason.as_str()), (3, "row_too_long"));
    let raw = q[0].raw_bytes.as_deref().expect("raw_bytes set");
    assert_eq!(raw.len(), 4096, "only the first max-row-bytes are kept");
    assert_eq!(raw, &long.as_bytes()[..4096]);
}
