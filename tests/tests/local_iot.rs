//! The local run's IoT example end to end: `sluice-local --example iot --duration 5`
//! against the harness PostgreSQL (its `DATABASE_URL`), two workers. The producer's
//! manifest says what each row is; the test checks every row's fate: each valid row
//! loaded exactly once with its cleaned values (padded and shouted sites, `urn:uuid:`
//! ids, `+12.5`, an empty `ok` taking the default), each bad row quarantined with its
//! reason (out of range celsius, unknown site, broken JSON), and that the summary says
//! so, cleaning counts included. Needs `cargo build --workspace --bins` first.

use std::collections::{BTreeMap, HashMap};
use std::process::Stdio;

use sluice_testkit::bins;
use sluice_testkit::pg;
use sluice_testkit::sensors::producer::{ManifestEntry, read_manifest};
use sluice_testkit::sensors::{Kind, Messy};

/// One stored row, as text where PostgreSQL's spelling is what is checked.
#[derive(Debug)]
struct Stored {
    site: String,
    celsius: String,
    ok: bool,
    samples: Option<i16>,
    meta: Option<serde_json::Value>,
    taken_at_ms: i64,
}

/// The count on the summary line `    <column>.<rule>   <n>  (…)`.
fn summary_count(summary: &str, key: &str) -> Option<u64> {
    summary.lines().find_map(|l| {
        let mut words = l.split_whitespace();
        (words.next()? == key).then_some(())?;
        words.next()?.replace(',', "").parse().ok()
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_iot_example_loads_valid_rows_once_cleaned_and_quarantines_bad_ones() {
    let cluster = pg::shared().await;
    let db = cluster.create_database().await.expect("database");
    let work = tempfile::tempdir().expect("tempdir");
    let out = bins::tokio_command("sluice-local")
        .args(["--example", "iot", "--duration", "5", "--workers", "2"])
        .args(["--events-per-second", "3000", "--rows-per-file", "700"])
        .args(["--bad-row-share", "0.05", "--messy-row-share", "0.2"])
        .arg("--work-dir")
        .arg(work.path())
        .env("DATABASE_URL", db.url())
        .stdin(Stdio::null())
        .output()
        .await
        .expect("running sluice-local");
    let stdout = String::from_utf8_lossy(&out.stdout).replace('\r', "\n");
    let logs = || {
        let mut text = String::new();
        for w in ["worker-0", "worker-1"] {
            let log = work.path().join("logs").join(format!("{w}.log"));
            text.push_str(&format!(
                "--- {w}\n{}",
                sluice_testkit::procs::tail(&log, 15)
            ));
        }
        text
    };
    assert!(
        out.status.success(),
        "sluice-local failed: {}\n{stdout}\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr),
        logs()
    );
    let summary = stdout
        .split_once("Summary")
        .map(|(_, s)| s.to_string())
        .unwrap_or_default();

    let manifest: Vec<ManifestEntry> =
        read_manifest(&work.path().join("sensors-manifest.jsonl")).expect("manifest");
    let (valid, bad): (Vec<&ManifestEntry>, Vec<&ManifestEntry>) =
        manifest.iter().partition(|e| e.reading.loads());
    let messy: BTreeMap<Messy, usize> = valid.iter().fold(BTreeMap::new(), |mut m, e| {
        if let Kind::Messy(k) = e.reading.kind {
            *m.entry(k).or_default() += 1;
        }
        m
    });
    assert!(
        valid.len() > 5_000,
        "{} valid rows in 5 s at 3,000/s",
        valid.len()
    );
    assert!(!bad.is_empty());
    assert_eq!(
        messy.len(),
        Messy::ALL.len(),
        "every messy kind written: {messy:?}"
    );

    let client = db.connect().await.expect("connect");
    let rows = client
        .query(
            r#"SELECT reading_id::text, site, celsius::text, ok, samples, meta::text,
                      (extract(epoch FROM taken_at) * 1000)::int8
               FROM "Sensor Readings""#,
            &[],
        )
        .await
        .expect("the example's table");
    let mut stored: HashMap<String, Stored> = HashMap::new();
    for r in &rows {
        let id: String = r.get(0);
        let meta: Option<String> = r.get(5);
        let previous = stored.insert(
            id.clone(),
            Stored {
                site: r.get(1),
                celsius: r.get(2),
                ok: r.get(3),
                samples: r.get(4),
                meta: meta.map(|m| serde_json::from_str(&m).expect("jsonb text")),
                taken_at_ms: r.get(6),
            },
        );
        assert!(previous.is_none(), "reading {id} stored twice");
    }
    assert_eq!(
        rows.len(),
        valid.len(),
        "the table holds exactly the valid rows"
    );
    for e in &valid {
        let r = &e.reading;
        let s = stored
            .get(&r.reading_id)
            .unwrap_or_else(|| panic!("{}:{} ({:?}) not loaded", e.file, e.line, r.kind));
        let what = format!("{}:{} {:?}: {s:?}", e.file, e.line, r.kind);
        assert_eq!(s.site, r.site, "{what}");
        assert_eq!(s.celsius, r.celsius_text(), "{what}");
        assert_eq!(s.ok, r.stored_ok(), "{what}");
        assert_eq!(s.samples, r.samples, "{what}");
        assert_eq!(
            s.meta,
            r.meta
                .as_deref()
                .map(|m| serde_json::from_str::<serde_json::Value>(m).expect("meta")),
            "{what}"
        );
        assert_eq!(s.taken_at_ms, r.taken_at_ms, "{what}");
    }

    let quarantined: HashMap<(String, i64), String> = client
        .query(
            "SELECT source_file, line_number, reason FROM quarantine",
            &[],
        )
        .await
        .expect("quarantine")
        .iter()
        .map(|r| ((r.get(0), r.get(1)), r.get(2)))
        .collect();
    assert_eq!(
        quarantined.len(),
        bad.len(),
        "only the bad rows are quarantined"
    );
    for e in &bad {
        let Kind::Bad(kind) = e.reading.kind else {
            unreachable!("partitioned on loads()")
        };
        assert_eq!(
            quarantined
                .get(&(e.file.clone(), e.line as i64))
                .map(String::as_str),
            Some(kind.reason().code()),
            "{}:{} {kind:?}",
            e.file,
            e.line
        );
    }

    // The summary agrees: every valid row once, and a cleaning count per messy kind.
    assert!(
        summary.contains("every valid row once: yes"),
        "summary:\n{summary}"
    );
    for (kind, n) in &messy {
        let (column, rule) = kind.counted_as();
        let key = format!("{column}.{rule}");
        let counted = summary_count(&summary, &key)
            .unwrap_or_else(|| panic!("no {key} in the summary:\n{summary}"));
        // Exact for every rule: a key left out or null is no value to clean, so only
        // the `"ok": ""` rows count as empty_to_null.
        assert_eq!(counted, *n as u64, "{key}\n{summary}");
    }
    assert!(summary.contains("peak RSS worker-0"), "summary:\n{summary}");
    assert!(summary.contains("rows/s"), "summary:\n{summary}");
}
