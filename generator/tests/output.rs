//! What the binary writes: determinism, the rows themselves, defect shares, the funnel.

mod common;

use std::collections::{BTreeMap, HashSet};

use common::*;
use sluice_core::event::EventType;

fn generate(root: &std::path::Path, seed: &str, extra: &[&str]) -> Vec<(String, Vec<u8>)> {
    let landing = root.join("landing");
    let manifest = manifest_path(root);
    let mut args = vec![
        "--landing-dir",
        landing.to_str().expect("utf8"),
        "--manifest",
        manifest.to_str().expect("utf8"),
        "--seed",
        seed,
        "--start-time",
        START,
    ];
    if !extra.contains(&"--events-per-second") {
        args.extend_from_slice(&["--events-per-second", "0"]);
    }
    args.extend_from_slice(extra);
    run_ok(&args);
    csv_files(&landing)
        .into_iter()
        .map(|n| {
            let bytes = std::fs::read(landing.join(&n)).expect("read");
            (n, bytes)
        })
        .collect()
}

#[test]
fn same_seed_and_start_time_give_identical_files() {
    let args = [
        "--rows-per-file",
        "2500",
        "--total-rows",
        "10000",
        "--bad-row-share",
        "0.05",
    ];
    let (a, b, c) = (
        tempfile::tempdir().expect("tmp"),
        tempfile::tempdir().expect("tmp"),
        tempfile::tempdir().expect("tmp"),
    );
    let first = generate(a.path(), "7", &args);
    let second = generate(b.path(), "7", &args);
    assert_eq!(first.len(), 4);
    assert_eq!(
        first, second,
        "same seed must give identical names and bytes"
    );
    assert_eq!(
        std::fs::read(manifest_path(a.path())).expect("m"),
        std::fs::read(manifest_path(b.path())).expect("m")
    );
    let names: Vec<&str> = first.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names[0], "events-20261125T000000Z-00000001.csv");
    assert_eq!(names[3], "events-20261125T000000Z-00000004.csv");

    let other = generate(c.path(), "8", &args);
    assert_eq!(other.len(), 4);
    assert_ne!(first[0].1, other[0].1, "another seed must give other rows");
}

#[test]
fn rows_match_the_schema_and_defects_match_the_manifest() {
    let root = tempfile::tempdir().expect("tmp");
    let files = generate(
        root.path(),
        "3",
        &[
            "--rows-per-file",
            "10000",
            "--total-rows",
            "100000",
            "--bad-row-share",
            "0.1",
        ],
    );
    let manifest = read_manifest(&manifest_path(root.path()));
    assert_eq!(files.len(), 10);
    assert_eq!(manifest.len(), 10);

    let mut kinds: BTreeMap<&'static str, u64> = BTreeMap::new();
    let mut types: BTreeMap<EventType, u64> = BTreeMap::new();
    let mut ids = HashSet::new();
    let mut total = 0u64;
    for ((name, bytes), m) in files.iter().zip(&manifest) {
        assert_eq!(name, &m.file);
        let lines = data_lines(bytes);
        assert_eq!(lines.len() as u64, m.rows);
        assert_eq!(m.valid_rows + m.bad_lines.len() as u64, m.rows);
        let bad: BTreeMap<u64, &str> = m.bad_lines.iter().map(|(l, r)| (*l, r.as_str())).collect();
        let mut file_kinds: BTreeMap<String, u64> = BTreeMap::new();
        for (i, line) in lines.iter().enumerate() {
            let line_no = i as u64 + 2;
            let id = &line[..36];
            assert!(ids.insert(id.to_vec()), "duplicate event id");
            match bad.get(&line_no) {
                Some(reason) => {
                    let kind = check_bad(line, reason);
                    *kinds.entry(kind).or_default() += 1;
                    *file_kinds.entry(kind.to_string()).or_default() += 1;
                }
                None => *types.entry(check_valid(line)).or_default() += 1,
            }
            total += 1;
        }
        assert_eq!(file_kinds, m.bad_rows, "{name}: bad_rows by kind");
    }
    assert_eq!(total, 100_000);

    // 10% bad, spread evenly over eight kinds: 1250 each, ±10%.
    assert_eq!(kinds.len(), 8, "{kinds:?}");
    for (kind, n) in &kinds {
        assert!((1125..=1375).contains(n), "{kind}: {n} rows");
    }
    // The funnel narrows.
    let (v, a, p) = (
        types[&EventType::View],
        types[&EventType::AddToCart],
        types[&EventType::Purchase],
    );
    assert!(p <= a && a <= v, "views {v}, carts {a}, purchases {p}");
    assert!(p > 0, "some purchases");
}

#[test]
fn total_files_and_short_last_file() {
    let root = tempfile::tempdir().expect("tmp");
    let files = generate(
        root.path(),
        "1",
        &["--rows-per-file", "400", "--total-rows", "1000"],
    );
    let rows: Vec<usize> = files.iter().map(|(_, b)| data_lines(b).len()).collect();
    assert_eq!(rows, [400, 400, 200]);

    let root = tempfile::tempdir().expect("tmp");
    let files = generate(
        root.path(),
        "1",
        &["--rows-per-file", "100", "--total-files", "3"],
    );
    assert_eq!(files.len(), 3);
    assert!(files.iter().all(|(_, b)| data_lines(b).len() == 100));
    // Nothing else left behind.
    let all = std::fs::read_dir(root.path().join("landing"))
        .expect("ls")
        .count();
    assert_eq!(all, 3);
}

#[test]
fn event_times_advance_with_the_simulated_rate() {
    let root = tempfile::tempdir().expect("tmp");
    // 1000 events/s for 3 s of event time with 1-second files: it runs in real time,
    // so keep it short.
    let files = generate(
        root.path(),
        "1",
        &[
            "--events-per-second",
            "1000",
            "--seconds-per-file",
            "1",
            "--total-rows",
            "2500",
            "--bad-row-share",
            "0",
        ],
    );
    let names: Vec<&str> = files.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "events-20261125T000000Z-00000001.csv",
            "events-20261125T000001Z-00000002.csv",
            "events-20261125T000002Z-00000003.csv",
        ]
    );
    let first = data_lines(&files[1].1)[0];
    assert!(
        std::str::from_utf8(first)
            .expect("utf8")
            .contains(",2026-11-25T00:00:01.000Z,")
    );
}
