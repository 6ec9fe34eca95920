//! The business dashboard (deploy/grafana/sluice-business.json) against a real PostgreSQL.
//!
//! The generator writes four bursts of files at different simulated times (one burst
//! crosses a minute boundary), a worker loads them into a throwaway PostgreSQL, and every
//! panel's SQL runs there, with Grafana's PostgreSQL macros expanded by [`macros::expand`].
//! That expander is a re-implementation of the macros the dashboard uses, written from
//! Grafana's `pkg/tsdb/grafana-postgresql-datasource/macros.go` and tested below; it is
//! not Grafana, so what is proved is that the SQL Grafana would send answers correctly.
//!
//! Each panel's result is compared with what the generated files say, computed here
//! independently (the valid lines' values read from the files, the rejects from the
//! generator's manifest): rows per minute, revenue per minute and by category to the cent,
//! the funnel's events and sessions per step, quarantine by reason, and the slowest files
//! with their sizes and counts. The test iterates the dashboard's panels: a panel without a
//! check here fails, and so does a check whose panel is gone. Every panel runs twice: over
//! a range holding everything, and over a narrow event-time range that excludes the load's
//! wall-clock time (so quarantine and files must be empty there).
//!
//! With `SLUICE_BUSINESS_DASHBOARD_DUMP=FILE` the panels' results over everything are
//! written to FILE as JSON, which scripts/plot-business-dashboard.py draws.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use serde_json::Value;
use sluice_testkit::pg;
use sluice_testkit::procs::{WorkerProc, WorkerSpec, generate, tail};
use sluice_testkit::scenario::wait_settled;
use sluice_testkit::verify::{self, EventValues, ManifestFile};
use tokio_postgres::SimpleQueryMessage;

/// Grafana's PostgreSQL macros, as far as the dashboard uses them.
mod macros {
    use chrono::{DateTime, SecondsFormat, Utc};

    /// The dashboard's time range.
    #[derive(Debug, Clone, Copy)]
    pub struct TimeRange {
        pub from: DateTime<Utc>,
        pub to: DateTime<Utc>,
    }

    fn ts(t: DateTime<Utc>) -> String {
        // Grafana writes RFC 3339 in UTC with the fraction's trailing zeros trimmed;
        // chrono keeps 0, 3, 6 or 9 digits: the same instant for PostgreSQL.
        t.to_rfc3339_opts(SecondsFormat::AutoSi, true)
    }

    /// Seconds of a Grafana interval such as `1m`, `'5m'`, `30s`, `1h`, `1d`.
    pub fn interval_seconds(text: &str) -> Result<f64, String> {
        let t = text.trim().trim_matches('\'');
        let split = t
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(|| format!("interval {text:?} has no unit"))?;
        let (n, unit) = t.split_at(split);
        let n: f64 = n
            .parse()
            .map_err(|_| format!("interval {text:?}: bad number"))?;
        let mult = match unit {
            "ms" => 0.001,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            "d" => 86400.0,
            "w" => 604800.0,
            _ => return Err(format!("interval {text:?}: unknown unit {unit:?}")),
        };
        Ok(n * mult)
    }

    fn arg(args: &[&str], i: usize, name: &str) -> Result<String, String> {
        args.get(i)
            .filter(|a| !a.is_empty())
            .map(|a| a.to_string())
            .ok_or_else(|| format!("macro {name} needs argument {}", i + 1))
    }

    fn evaluate(name: &str, args: &[&str], range: TimeRange) -> Result<String, String> {
        Ok(match name {
            "__time" => format!("{} AS \"time\"", arg(args, 0, name)?),
            "__timeFilter" => format!(
                "{} BETWEEN '{}' AND '{}'",
                arg(args, 0, name)?,
                ts(range.from),
                ts(range.to)
            ),
            "__timeFrom" => format!("'{}'", ts(range.from)),
            "__timeTo" => format!("'{}'", ts(range.to)),
            "__timeGroup" => {
                let s = interval_seconds(&arg(args, 1, name)?)?;
                if args.len() > 2 {
                    return Err("fill modes are not expanded here".into());
                }
                format!("floor(extract(epoch from {})/{s})*{s}", arg(args, 0, name)?)
            }
            "__timeGroupAlias" => format!("{} AS \"time\"", evaluate("__timeGroup", args, range)?),
            other => return Err(format!("macro ${other} is not expanded here")),
        })
    }

    /// Expands `$__name(args)` like Grafana's macro engine (arguments split at commas and
    /// trimmed, no `)` inside). Any other `$` left afterwards (a template variable) is an
    /// error: the dashboard's SQL must not depend on one.
    pub fn expand(sql: &str, range: TimeRange) -> Result<String, String> {
        let mut out = String::with_capacity(sql.len());
        let mut rest = sql;
        while let Some(at) = rest.find('$') {
            out.push_str(&rest[..at]);
            let tail = &rest[at + 1..];
            let name_len = tail
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(tail.len());
            let name = &tail[..name_len];
            let after = &tail[name_len..];
            if name.is_empty() || !after.starts_with('(') {
                return Err(format!(
                    "unresolved template variable or stray $ at ${name}"
                ));
            }
            let close = after
                .find(')')
                .ok_or_else(|| format!("macro ${name}: no closing parenthesis"))?;
            let args: Vec<&str> = after[1..close].split(',').map(str::trim).collect();
            let args: Vec<&str> = if args == [""] { Vec::new() } else { args };
            out.push_str(&evaluate(name, &args, range)?);
            rest = &after[close + 1..];
        }
        out.push_str(rest);
        Ok(out)
    }
}

#[cfg(test)]
mod macro_tests {
    use super::macros::{TimeRange, expand, interval_seconds};
    use chrono::{TimeZone, Utc};

    fn range() -> TimeRange {
        TimeRange {
            from: Utc.with_ymd_and_hms(2026, 11, 25, 0, 0, 0).unwrap(),
            to: Utc.with_ymd_and_hms(2026, 11, 25, 1, 30, 0).unwrap()
                + chrono::Duration::milliseconds(250),
        }
    }

    #[test]
    fn expands_the_macros_like_grafana() {
        let sql = "SELECT $__timeGroupAlias(event_time, 1m), count(*) FROM events \
                   WHERE $__timeFilter(event_time) AND t > $__timeFrom() AND t < $__timeTo() \
                   GROUP BY $__timeGroup(event_time,'5m')";
        assert_eq!(
            expand(sql, range()).unwrap(),
            "SELECT floor(extract(epoch from event_time)/60)*60 AS \"time\", count(*) FROM events \
             WHERE event_time BETWEEN '2026-11-25T00:00:00Z' AND '2026-11-25T01:30:00.250Z' \
             AND t > '2026-11-25T00:00:00Z' AND t < '2026-11-25T01:30:00.250Z' \
             GROUP BY floor(extract(epoch from event_time)/300)*300"
        );
        assert_eq!(expand("$__time(t)", range()).unwrap(), "t AS \"time\"");
    }

    #[test]
    fn refuses_what_it_does_not_expand() {
        for bad in [
            "WHERE pipeline = $pipeline",
            "WHERE x = ${var}",
            "SELECT $__unixEpochFilter(t)",
            "SELECT $__timeGroup(t, 1m, 0)",
            "SELECT $__timeGroup(t)",
            "SELECT $__timeFilter()",
            "SELECT $__timeFilter(t",
            "SELECT $__timeGroup(t, 1x)",
        ] {
            assert!(expand(bad, range()).is_err(), "{bad} must be refused");
        }
        assert_eq!(expand("SELECT 1", range()).unwrap(), "SELECT 1");
    }

    #[test]
    fn intervals() {
        assert_eq!(interval_seconds("1m").unwrap(), 60.0);
        assert_eq!(interval_seconds("'5m'").unwrap(), 300.0);
        assert_eq!(interval_seconds("30s").unwrap(), 30.0);
        assert_eq!(interval_seconds("1h").unwrap(), 3600.0);
        assert!(interval_seconds("m").is_err());
        assert!(interval_seconds("10").is_err());
    }
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

/// A query's result as text (the simple query protocol): column names and rows.
#[derive(Debug)]
struct Table {
    columns: Vec<String>,
    rows: Vec<Vec<Option<String>>>,
}

impl Table {
    fn col(&self, name: &str) -> usize {
        self.columns
            .iter()
            .position(|c| c == name)
            .unwrap_or_else(|| panic!("no column {name:?} in {:?}", self.columns))
    }

    fn text(&self, row: usize, name: &str) -> Option<&str> {
        self.rows[row][self.col(name)].as_deref()
    }

    fn req(&self, row: usize, name: &str) -> &str {
        self.text(row, name)
            .unwrap_or_else(|| panic!("row {row}: {name} is NULL"))
    }

    fn int(&self, row: usize, name: &str) -> i64 {
        let t = self.req(row, name);
        t.parse()
            .unwrap_or_else(|_| panic!("row {row}: {name} = {t:?} is not an integer"))
    }

    /// The `time` column of a time series: epoch seconds, a whole minute here.
    fn minute(&self, row: usize) -> i64 {
        let t = self.req(row, "time");
        let secs: f64 = t
            .parse()
            .unwrap_or_else(|_| panic!("time {t:?} is not epoch seconds"));
        assert_eq!(secs.fract(), 0.0, "time {t} is not a whole second");
        let secs = secs as i64;
        assert_eq!(secs % 60, 0, "time {t} is not on a minute");
        secs
    }
}

async fn run_sql(client: &tokio_postgres::Client, sql: &str) -> Result<Table, String> {
    let messages = client
        .simple_query(sql)
        .await
        .map_err(|e| format!("{e}: {:?}", e.as_db_error().map(|d| d.message())))?;
    let mut table = Table {
        columns: Vec::new(),
        rows: Vec::new(),
    };
    for m in messages {
        match m {
            SimpleQueryMessage::RowDescription(cols) => {
                table.columns = cols.iter().map(|c| c.name().to_string()).collect();
            }
            SimpleQueryMessage::Row(r) => {
                if table.columns.is_empty() {
                    table.columns = r.columns().iter().map(|c| c.name().to_string()).collect();
                }
                table
                    .rows
                    .push((0..r.len()).map(|i| r.get(i).map(str::to_string)).collect());
            }
            _ => {}
        }
    }
    Ok(table)
}

/// A decimal's text (`12.30`, `7`, `0.5`) in cents; more than two decimals must be zeros.
fn cents(text: &str) -> i128 {
    let (int, frac) = text.split_once('.').unwrap_or((text, ""));
    let frac = frac.trim_end_matches('0');
    assert!(frac.len() <= 2, "{text} has sub-cent digits");
    let int: i128 = int
        .parse()
        .unwrap_or_else(|_| panic!("{text} is not a decimal"));
    let frac_cents: i128 = format!("{frac:0<2}").parse().expect("two digits");
    assert!(int >= 0, "{text}: negative");
    int * 100 + frac_cents
}

/// One generator run of `files` files at a simulated start time, into its own directory.
fn burst(
    root: &Path,
    name: &str,
    start: &str,
    files: u64,
    seed: u64,
) -> (PathBuf, Vec<ManifestFile>) {
    let dir = root.join(name);
    std::fs::create_dir_all(&dir).expect("burst dir");
    let manifest = root.join(format!("{name}.jsonl"));
    let args: Vec<String> = [
        "--landing-dir",
        &dir.display().to_string(),
        "--manifest",
        &manifest.display().to_string(),
        "--events-per-second",
        "0",
        "--rows-per-file",
        "1500",
        "--total-files",
        &files.to_string(),
        "--bad-row-share",
        "0.05",
        "--seed",
        &seed.to_string(),
        "--start-time",
        start,
        "--no-fsync",
        "--max-pending-files",
        "100",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    generate(&args).expect("generator");
    let m = verify::read_manifest(&manifest).expect("manifest");
    assert_eq!(m.len() as u64, files);
    (dir, m)
}

/// What the panels must show, computed from the generated files, not from the database.
struct Truth {
    events: Vec<EventValues>,
    /// reason → rows
    rejects: BTreeMap<String, i64>,
    /// file → (bytes, valid rows, rejected rows)
    files: BTreeMap<String, (i64, i64, i64)>,
    /// Wall-clock window of the load (commit times fall inside it).
    load: (DateTime<Utc>, DateTime<Utc>),
}

impl Truth {
    fn events_in(&self, r: macros::TimeRange) -> impl Iterator<Item = &EventValues> {
        self.events
            .iter()
            .filter(move |e| e.event_time >= r.from && e.event_time <= r.to)
    }

    /// Whether committed things (quarantine, files) are all in the range (true) or none
    /// (false); the test only uses ranges of these two kinds.
    fn commits_in(&self, r: macros::TimeRange) -> bool {
        if r.from <= self.load.0 && self.load.1 <= r.to {
            true
        } else if r.to < self.load.0 || r.from > self.load.1 {
            false
        } else {
            panic!("range {r:?} cuts the load window {:?}", self.load)
        }
    }
}

fn read_values(dir: &Path, manifest: &[ManifestFile], truth: &mut Truth) {
    for m in manifest {
        let path = dir.join(&m.file);
        let bytes = std::fs::metadata(&path).expect("file size").len() as i64;
        let bad: HashSet<u64> = m.bad_lines.iter().map(|(l, _)| *l).collect();
        let messy: HashMap<u64, &verify::MessyLine> =
            m.messy_lines.iter().map(|l| (l.line, l)).collect();
        let (content, ndjson) = verify::read_decoded(&path).expect("read file");
        assert!(!ndjson, "CSV files are generated");
        let mut valid = 0;
        for (i, raw) in content.split(|b| *b == b'\n').enumerate() {
            let line = i as u64 + 1;
            if line == 1 || raw.is_empty() || bad.contains(&line) {
                continue;
            }
            let text = std::str::from_utf8(raw).expect("a valid line is UTF-8");
            let (_, mut values) = EventValues::parse_line(text)
                .unwrap_or_else(|e| panic!("{}:{line}: {e:#}", m.file));
            if let Some(messy) = messy.get(&line) {
                messy.apply(&mut values).expect("messy line");
            }
            truth.events.push(values);
            valid += 1;
        }
        assert_eq!(valid, m.valid_rows, "{}: valid rows", m.file);
        for (_, reason) in &m.bad_lines {
            *truth.rejects.entry(reason.clone()).or_default() += 1;
        }
        truth.files.insert(
            m.file.clone(),
            (bytes, m.valid_rows as i64, m.bad_lines.len() as i64),
        );
    }
}

fn minute_of(t: DateTime<Utc>) -> i64 {
    t.timestamp().div_euclid(60) * 60
}

type Check = fn(&Truth, macros::TimeRange, &Table);

fn check_rows_per_minute(truth: &Truth, r: macros::TimeRange, t: &Table) {
    let mut want: BTreeMap<i64, i64> = BTreeMap::new();
    for e in truth.events_in(r) {
        *want.entry(minute_of(e.event_time)).or_default() += 1;
    }
    let got: BTreeMap<i64, i64> = (0..t.rows.len())
        .map(|i| (t.minute(i), t.int(i, "rows")))
        .collect();
    assert_eq!(got.len(), t.rows.len(), "one row per minute");
    assert_eq!(got, want, "rows per minute");
    let total: i64 = got.values().sum();
    assert_eq!(total as usize, truth.events_in(r).count());
}

fn check_revenue_per_minute(truth: &Truth, r: macros::TimeRange, t: &Table) {
    let mut want: BTreeMap<i64, i128> = BTreeMap::new();
    for e in truth.events_in(r).filter(|e| e.event_type == "purchase") {
        *want.entry(minute_of(e.event_time)).or_default() += cents(&e.price) * e.quantity as i128;
    }
    let got: BTreeMap<i64, i128> = (0..t.rows.len())
        .map(|i| (t.minute(i), cents(t.req(i, "revenue"))))
        .collect();
    assert_eq!(got, want, "revenue (cents) per minute");
}

fn check_revenue_by_category(truth: &Truth, r: macros::TimeRange, t: &Table) {
    let mut want: BTreeMap<String, (i128, i64, i64)> = BTreeMap::new();
    for e in truth.events_in(r).filter(|e| e.event_type == "purchase") {
        let w = want.entry(e.category.clone()).or_default();
        w.0 += cents(&e.price) * e.quantity as i128;
        w.1 += 1;
        w.2 += e.quantity as i64;
    }
    let mut got = BTreeMap::new();
    let mut previous = i128::MAX;
    for i in 0..t.rows.len() {
        let revenue = cents(t.req(i, "revenue"));
        assert!(revenue <= previous, "largest revenue first");
        previous = revenue;
        got.insert(
            t.req(i, "category").to_string(),
            (revenue, t.int(i, "purchases"), t.int(i, "units")),
        );
    }
    assert_eq!(got, want, "revenue (cents), purchases, units by category");
}

fn check_funnel(truth: &Truth, r: macros::TimeRange, t: &Table) {
    let stages: Vec<&str> = (0..t.rows.len()).map(|i| t.req(i, "stage")).collect();
    assert_eq!(stages, ["view", "add_to_cart", "purchase"], "funnel order");
    for (i, stage) in stages.iter().enumerate() {
        let events: Vec<&EventValues> = truth
            .events_in(r)
            .filter(|e| e.event_type == *stage)
            .collect();
        let sessions: HashSet<&str> = events.iter().map(|e| e.session_id.as_str()).collect();
        assert_eq!(t.int(i, "events"), events.len() as i64, "{stage} events");
        assert_eq!(
            t.int(i, "sessions"),
            sessions.len() as i64,
            "{stage} sessions"
        );
    }
}

fn check_quarantine(truth: &Truth, r: macros::TimeRange, t: &Table) {
    let mut got: BTreeMap<String, i64> = BTreeMap::new();
    for i in 0..t.rows.len() {
        let minute = t.minute(i);
        assert!(
            minute >= minute_of(truth.load.0) && minute <= minute_of(truth.load.1),
            "quarantine bucket {minute} outside the load"
        );
        *got.entry(t.req(i, "metric").to_string()).or_default() += t.int(i, "rows");
    }
    let want = if truth.commits_in(r) {
        truth.rejects.clone()
    } else {
        BTreeMap::new()
    };
    assert_eq!(got, want, "quarantined rows by reason");
}

fn check_slowest_files(truth: &Truth, r: macros::TimeRange, t: &Table) {
    if !truth.commits_in(r) {
        assert!(
            t.rows.is_empty(),
            "no file committed in {r:?}: {:?}",
            t.rows
        );
        return;
    }
    assert_eq!(
        t.rows.len(),
        20.min(truth.files.len()),
        "LIMIT 20 of the files"
    );
    let mut seen = BTreeSet::new();
    let mut previous = f64::INFINITY;
    let mut nulls = false;
    for i in 0..t.rows.len() {
        let file = t.req(i, "file");
        assert!(seen.insert(file.to_string()), "{file} listed twice");
        let (bytes, loaded, rejected) = truth.files[file];
        assert_eq!(t.int(i, "bytes"), bytes, "{file} size");
        assert_eq!(t.int(i, "rows_loaded"), loaded, "{file} rows loaded");
        assert_eq!(t.int(i, "rows_rejected"), rejected, "{file} rows rejected");
        assert_eq!(t.req(i, "outcome"), "loaded");
        assert_eq!(t.req(i, "worker"), "w-0");
        assert!(t.int(i, "batch_files") >= 1);
        match t.text(i, "batch_seconds") {
            Some(s) => {
                let s: f64 = s.parse().expect("batch_seconds");
                assert!(!nulls, "NULLs last");
                assert!(
                    s >= 0.0 && s <= previous,
                    "slowest first: {s} after {previous}"
                );
                previous = s;
            }
            None => nulls = true,
        }
    }
    // Only the worker's first batch has no previous commit to measure from.
    assert!(previous.is_finite(), "some batch has a duration");
}

fn checks() -> BTreeMap<&'static str, Check> {
    BTreeMap::from([
        ("Rows per minute", check_rows_per_minute as Check),
        ("Revenue per minute", check_revenue_per_minute),
        ("Revenue by category", check_revenue_by_category),
        ("Funnel: view → cart → purchase", check_funnel),
        ("Quarantine by reason", check_quarantine),
        ("Slowest files", check_slowest_files),
    ])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_business_panel_answers_what_the_generated_data_says() {
    let cluster = pg::shared().await;
    let db = cluster.create_database().await.expect("database");
    let root = tempfile::tempdir().expect("tempdir");
    let bursts = [
        ("b0", "2026-11-25T00:00:10Z", 6),
        ("b1", "2026-11-25T00:02:30Z", 5),
        ("b2", "2026-11-25T00:05:20Z", 5),
        // 7,500 events at 1 µs each from 2 ms before a minute: the burst crosses 00:08.
        ("b3", "2026-11-25T00:07:59.998Z", 5),
    ];
    let mut truth = Truth {
        events: Vec::new(),
        rejects: BTreeMap::new(),
        files: BTreeMap::new(),
        load: (Utc::now(), Utc::now()),
    };
    let spec = WorkerSpec::in_root(root.path(), "w-0", db.url(), &["--max-files", "2"]);
    let landing = spec.landing.clone();
    let mut staged = Vec::new();
    for (i, (name, start, files)) in bursts.iter().enumerate() {
        let (dir, manifest) = burst(root.path(), name, start, *files, 40 + i as u64);
        read_values(&dir, &manifest, &mut truth);
        staged.push((dir, manifest));
    }
    let minutes: BTreeSet<i64> = truth
        .events
        .iter()
        .map(|e| minute_of(e.event_time))
        .collect();
    assert!(
        minutes.len() >= 5,
        "the data spans several minutes: {minutes:?}"
    );
    assert!(
        truth.rejects.len() >= 3,
        "several reject reasons: {:?}",
        truth.rejects
    );

    truth.load.0 = Utc::now() - chrono::Duration::seconds(1);
    for (dir, manifest) in &staged {
        for m in manifest {
            std::fs::rename(dir.join(&m.file), landing.join(&m.file)).expect("release");
        }
    }
    let mut w = WorkerProc::spawn(spec).expect("worker");
    let client = db.connect().await.expect("connect");
    let log = root.path().join("w-0.log");
    wait_settled(
        &client,
        &landing,
        truth.files.len(),
        Duration::from_secs(180),
        || w.check_alive(),
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\nworker log:\n{}", tail(&log, 40)));
    truth.load.1 = Utc::now() + chrono::Duration::seconds(1);
    w.kill();
    client.batch_execute("ANALYZE").await.expect("analyze");

    let path = repo_root().join("deploy/grafana/sluice-business.json");
    let dashboard: Value =
        serde_json::from_str(&std::fs::read_to_string(&path).expect("dashboard")).expect("JSON");
    let all = macros::TimeRange {
        from: Utc.with_ymd_and_hms(2000, 1, 1, 0, 0, 0).unwrap(),
        to: Utc::now() + chrono::Duration::days(1),
    };
    // Two minutes of event time, boundaries inside bursts b1..b3's gaps and b3's crossing.
    let narrow = macros::TimeRange {
        from: Utc.with_ymd_and_hms(2026, 11, 25, 0, 2, 0).unwrap(),
        to: Utc.with_ymd_and_hms(2026, 11, 25, 0, 8, 0).unwrap(),
    };
    assert!(truth.events_in(narrow).count() < truth.events.len());
    assert!(truth.events_in(narrow).count() > 0);
    let checks = checks();
    let mut dump = serde_json::Map::new();
    let mut covered = BTreeSet::new();
    for p in dashboard["panels"].as_array().expect("panels") {
        if p["type"] == "row" {
            continue;
        }
        let title = p["title"].as_str().expect("title");
        let check = checks
            .get(title)
            .unwrap_or_else(|| panic!("panel {title:?} has no check in this test"));
        covered.insert(title);
        let targets = p["targets"].as_array().expect("targets");
        assert_eq!(targets.len(), 1, "{title}: one query per panel");
        let target = &targets[0];
        assert_eq!(
            target["datasource"]["uid"], "${DS_SLUICE_POSTGRES}",
            "{title}"
        );
        let format = target["format"].as_str().expect("format");
        let sql = target["rawSql"].as_str().expect("rawSql");
        for range in [all, narrow] {
            let expanded = macros::expand(sql, range).unwrap_or_else(|e| panic!("{title}: {e}"));
            let table = run_sql(&client, &expanded)
                .await
                .unwrap_or_else(|e| panic!("{title}: {e}\n{expanded}"));
            match format {
                // Grafana's time_series format needs a `time` column.
                "time_series" => assert!(table.columns.iter().any(|c| c == "time"), "{title}"),
                "table" => {}
                other => panic!("{title}: format {other:?}"),
            }
            if range.from == all.from {
                assert!(!table.rows.is_empty(), "{title}: no rows over everything");
            }
            check(&truth, range, &table);
            if range.from == all.from {
                dump.insert(
                    title.to_string(),
                    serde_json::json!({"format": format, "columns": table.columns, "rows": table.rows}),
                );
            }
            println!(
                "{title} [{} → {}]: {} rows ok",
                range.from,
                range.to,
                table.rows.len()
            );
        }
    }
    // For scripts/plot-business-dashboard.py (docs/business-dashboard.png).
    if let Some(out) = std::env::var_os("SLUICE_BUSINESS_DASHBOARD_DUMP") {
        let text = serde_json::to_string_pretty(&Value::Object(dump)).expect("JSON");
        std::fs::write(&out, text).expect("writing the panel results");
    }
    let missing: Vec<_> = checks.keys().filter(|k| !covered.contains(*k)).collect();
    assert!(missing.is_empty(), "checks without a panel: {missing:?}");
}
