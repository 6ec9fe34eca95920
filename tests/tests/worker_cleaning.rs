//! Cleaning before validation against a real PostgreSQL: messy but valid rows (padding,
//! odd case) are loaded cleaned and counted by column and rule; truly bad rows are still
//! quarantined with their reason. Generated files (with `--messy-row-share`) go through
//! the large-file path (parts), a hand-written file through a batch.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use sluice_testkit::pg;
use sluice_testkit::procs::{
    WorkerProc, WorkerSpec, free_local_addr, http_get, metric_value, tail,
};
use sluice_testkit::scenario::Dataset;
use sluice_testkit::verify;

/// A hand-written file: (row, expected stored (session, type, category) or the reject
/// reason, the cleaning rules counted as (column, rule)).
struct HandRow {
    line: &'static str,
    outcome: Result<(&'static str, &'static str, &'static str), &'static str>,
    rules: &'static [(&'static str, &'static str)],
}

fn hand_rows() -> Vec<HandRow> {
    vec![
        HandRow {
            line: "0a1b2c3d-4e5f-4a6b-8c7d-000000000001,2026-11-25T10:00:00Z,1,s-1, VIEW ,5,  Books ,1.00,0",
            outcome: Ok(("s-1", "view", "books")),
            rules: &[
                ("event_type", "trim"),
                ("event_type", "ignore_case"),
                ("category", "trim"),
                ("category", "lowercase"),
            ],
        },
        HandRow {
            line: "0a1b2c3d-4e5f-4a6b-8c7d-000000000002,2026-11-25T10:00:00Z,1, s-2\t,Add_To_Cart,5,TOYS,1.00,1",
            outcome: Ok(("s-2", "add_to_cart", "toys")),
            rules: &[
                ("session_id", "trim"),
                ("event_type", "ignore_case"),
                ("category", "lowercase"),
            ],
        },
        HandRow {
            line: "0A1B2C3D-4E5F-4A6B-8C7D-00000000000A,2026-11-25T10:00:00Z, 1 ,s-3,\"purchase \",5,books, 2.50 ,1",
            outcome: Ok(("s-3", "purchase", "books")),
            rules: &[
                ("event_id", "lowercase"),
                ("user_id", "trim"),
                ("event_type", "trim"),
                ("price", "trim"),
            ],
        },
        HandRow {
            line: "0a1b2c3d-4e5f-4a6b-8c7d-000000000004,2026-11-25T10:00:00Z,1,s-4,view,5,books,1.00,0",
            outcome: Ok(("s-4", "view", "books")),
            rules: &[],
        },
        HandRow {
            line: "0a1b2c3d-4e5f-4a6b-8c7d-000000000005,2026-11-25T10:00:00Z,1,s-5, Refund ,5,books,1.00,1",
            outcome: Err("unknown_event_type"),
            rules: &[],
        },
        HandRow {
            line: "0a1b2c3d-4e5f-4a6b-8c7d-000000000006,2026-11-25T10:00:00Z,1,s-6, vie w,5,Books,1.00,1",
            outcome: Err("unknown_event_type"),
            rules: &[],
        },
        HandRow {
            line: "0a1b2c3d-4e5f-4a6b-8c7d-000000000007,2026-11-25T10:00:00Z,1,   ,VIEW,5,books,1.00,1",
            outcome: Err("missing_field"),
            rules: &[],
        },
        HandRow {
            line: "0a1b2c3d-4e5f-4a6b-8c7d-000000000008,2026-11-25T10:00:00Z,1,s-8,PURCHASE,5,books,1.00, 0 ",
            outcome: Err("zero_quantity"),
            rules: &[],
        },
    ]
}

fn write_hand_file(dir: &Path, name: &str) {
    let mut text = format!("{}\n", sluice_core::event::HEADER);
    for r in hand_rows() {
        text.push_str(r.line);
        text.push('\n');
    }
    sluice_testkit::scenario::land(dir, name, text);
}

/// The cleaned-rows counts the worker exposes, for every (column, rule) pair.
fn cleaned_counts(body: &str) -> BTreeMap<(String, String), u64> {
    let mut out = BTreeMap::new();
    for column in sluice_core::event::HEADER_FIELDS {
        for rule in ["trim", "ignore_case", "lowercase"] {
            let sample =
                format!("sluice_rows_cleaned_total{{column=\"{column}\",rule=\"{rule}\"}}");
            if let Some(v) = metric_value(body, &sample)
                && v > 0.0
            {
                out.insert((column.to_string(), rule.to_string()), v as u64);
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messy_rows_load_cleaned_and_counted_bad_rows_stay_quarantined() {
    let cluster = pg::shared().await;
    let db = cluster.create_database().await.expect("database");
    let client = db.connect().await.expect("connect");
    let root = tempfile::tempdir().expect("tempdir");
    let data = Dataset::generate_with(
        root.path(),
        3,
        2_000,
        0.05,
        91,
        &["--messy-row-share", "0.1"],
    )
    .expect("generate");
    let messy: Vec<&verify::MessyLine> =
        data.manifest.iter().flat_map(|m| &m.messy_lines).collect();
    assert!(messy.len() > 200, "{} messy rows", messy.len());
    for kind in [
        "padded_session_id",
        "odd_case_event_type",
        "odd_case_category",
        "upper_case_event_id",
    ] {
        assert!(messy.iter().any(|m| m.kind == kind), "no {kind} row");
    }

    let addr = free_local_addr();
    let addr_arg = addr.to_string();
    // Generated files (~230 kB) exceed --max-bytes: they load in parts; the
    // hand-written file is small and loads in a batch.
    let spec = WorkerSpec::in_root(
        root.path(),
        "w-0",
        db.url(),
        &[
            "--metrics-addr",
            &addr_arg,
            "--max-bytes",
            "100000",
            "--part-bytes",
            "65536",
        ],
    );
    let landing = spec.landing.clone();
    let log = spec.log.clone();
    let mut w = WorkerProc::spawn(spec).expect("worker");
    data.release(&landing, 0..data.manifest.len())
        .expect("release");
    write_hand_file(&landing, "hand-written.csv");
    let files = data.manifest.len() + 1;
    w.settle(&client, files, Duration::from_secs(90)).await;

    // The generated files: every valid row once with the values of its line, messy ones
    // cleaned (verify applies the manifest's cleaned values); every bad row quarantined
    // with its reason, and nothing else.
    let mut expected = data.expected;
    let hand = hand_rows();
    let parts: i64 = client
        .query_one(
            "SELECT coalesce(sum(parts), 0)::int8 FROM sluice_files WHERE file_name <> 'hand-written.csv'",
            &[],
        )
        .await
        .expect("parts")
        .get(0);
    assert!(parts > 3, "the generated files loaded in parts ({parts})");

    // Each messy row explicitly: in events with the cleaned value, not in quarantine.
    for m in &messy {
        let id = uuid::Uuid::parse_str(&m.event_id).expect("uuid");
        assert_eq!(
            m.event_id,
            id.hyphenated().to_string(),
            "lower-case in the manifest"
        );
        let row = client
            .query_one(
                "SELECT event_id::text, session_id, event_type, category FROM events WHERE event_id = $1",
                &[&id],
            )
            .await
            .unwrap_or_else(|e| panic!("messy row {m:?} not loaded: {e}"));
        let stored = match m.column.as_str() {
            "event_id" => row.get::<_, String>(0),
            "session_id" => row.get(1),
            "event_type" => row.get(2),
            "category" => row.get(3),
            other => panic!("unexpected column {other}"),
        };
        assert_eq!(stored, m.cleaned, "{m:?}");
    }
    let quarantined_messy: i64 = client
        .query_one(
            "SELECT count(*) FROM quarantine q
             WHERE (q.source_file, q.line_number) IN (SELECT * FROM unnest($1::text[], $2::int8[]))",
            &[
                &data
                    .manifest
                    .iter()
                    .flat_map(|f| f.messy_lines.iter().map(move |_| f.file.clone()))
                    .collect::<Vec<String>>(),
                &data
                    .manifest
                    .iter()
                    .flat_map(|f| f.messy_lines.iter().map(|m| m.line as i64))
                    .collect::<Vec<i64>>(),
            ],
        )
        .await
        .expect("quarantine")
        .get(0);
    assert_eq!(quarantined_messy, 0, "no messy row is quarantined");

    // The hand-written file: its valid rows cleaned, its bad rows with their reasons.
    for (i, r) in hand.iter().enumerate() {
        let line = i as i64 + 2;
        match r.outcome {
            Ok((session, event_type, category)) => {
                let row = client
                    .query_one(
                        "SELECT session_id, event_type, category, event_id::text FROM events
                         WHERE session_id = $1",
                        &[&session],
                    )
                    .await
                    .unwrap_or_else(|e| panic!("hand-written line {line} not loaded: {e}"));
                let got: (String, String, String) = (row.get(0), row.get(1), row.get(2));
                assert_eq!(
                    got,
                    (session.into(), event_type.into(), category.into()),
                    "line {line}"
                );
                let id: String = row.get(3);
                assert_eq!(id, id.to_lowercase());
            }
            Err(reason) => {
                let got: String = client
                    .query_one(
                        "SELECT reason FROM quarantine WHERE source_file = 'hand-written.csv' AND line_number = $1",
                        &[&line],
                    )
                    .await
                    .unwrap_or_else(|e| panic!("hand-written line {line} not quarantined: {e}"))
                    .get(0);
                assert_eq!(got, reason, "line {line}");
            }
        }
    }
    let upper: i64 = client
        .query_one(
            "SELECT count(*) FROM events WHERE event_id = $1",
            &[&uuid::Uuid::parse_str("0a1b2c3d-4e5f-4a6b-8c7d-00000000000a").expect("uuid")],
        )
        .await
        .expect("count")
        .get(0);
    assert_eq!(
        upper, 1,
        "the upper-case event id is stored (lower-case) once"
    );

    // The whole delivery check for the generated files (the hand-written file's rows
    // are added to the expectation's ledger, ids and rejects first).
    expected.files.insert(
        "hand-written.csv".into(),
        verify::FileCounts {
            valid_rows: hand.iter().filter(|r| r.outcome.is_ok()).count() as u64,
            rejected_rows: hand.iter().filter(|r| r.outcome.is_err()).count() as u64,
        },
    );
    for (i, r) in hand.iter().enumerate() {
        match r.outcome {
            Ok(_) => {
                let id = uuid::Uuid::parse_str(&r.line[..36]).expect("uuid");
                expected.valid_ids.insert(id);
            }
            Err(reason) => {
                expected
                    .rejects
                    .insert(("hand-written.csv".into(), i as i64 + 2), reason.into());
            }
        }
    }
    let summary = verify::check_exactly_once(&client, &expected)
        .await
        .unwrap_or_else(|e| panic!("{e:#}\n{}", tail(&log, 40)));
    println!("{summary}");

    // The counter: per (column, rule), what the manifest and the hand-written file say.
    let mut want: BTreeMap<(String, String), u64> = BTreeMap::new();
    for m in &messy {
        for rule in &m.rules {
            *want.entry((m.column.clone(), rule.clone())).or_default() += 1;
        }
    }
    for r in &hand {
        if r.outcome.is_ok() {
            for (column, rule) in r.rules {
                *want
                    .entry((column.to_string(), rule.to_string()))
                    .or_default() += 1;
            }
        }
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, body) = http_get(addr, "/metrics").expect("metrics");
        assert_eq!(status, 200);
        let got = cleaned_counts(&body);
        if got == want {
            break;
        }
        if Instant::now() > deadline {
            panic!("sluice_rows_cleaned_total: got {got:?}, want {want:?}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    w.check_alive().expect("the worker keeps running");
}
