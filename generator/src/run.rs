//! The generation loop: simulated clock, pacing, file rotation, backpressure, stop flag.
//!
//! It is synchronous (run it on a blocking thread) and checks `stop` before every row.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use sluice_core::config::GeneratorConfig;

use crate::backpressure::{Limits, Room, RoomCheck};
use crate::catalogue::Catalogue;
use crate::csv_row::RowEncoder;
use crate::defects::DefectDraw;
use crate::error::GeneratorError;
use crate::messy::MessyDraw;
use crate::metrics::Metrics;
use crate::traffic::Traffic;
use crate::writer::{Encoding, FileStats, LandingFile, Manifest, remove_stale_temp_files};

/// Simulated event rate when writing unthrottled (`events_per_second` = 0): event times
/// advance by 1 µs per event.
pub const UNTHROTTLED_SIMULATED_RATE: u64 = 1_000_000;

/// Without `--start-time` and unthrottled, event times follow the wall clock, read
/// once per this many rows.
const WALL_CLOCK_EVERY: u64 = 1_024;

/// Longest single sleep while pacing, so a stop request is noticed promptly.
const MAX_SLEEP: Duration = Duration::from_millis(100);

/// Everything one run needs.
#[derive(Debug, Clone)]
pub struct RunOptions {
    pub landing_dir: PathBuf,
    pub config: GeneratorConfig,
    /// Time of the first event. Given, the output depends only on it and the config;
    /// absent, the current time is used (and mixed into the random seed).
    pub start_time: Option<DateTime<Utc>>,
    /// Append one JSON line per finished file here.
    pub manifest: Option<PathBuf>,
    /// fsync each file and the directory before and after the rename. Only throwaway
    /// test data may turn it off: files still appear atomically, but a machine crash
    /// could lose them.
    pub fsync: bool,
}

/// What a run did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Summary {
    pub files: u64,
    pub rows: u64,
    pub bad_rows: u64,
    /// Messy-but-valid rows (counted among the valid rows, not the bad ones).
    pub messy_rows: u64,
    pub bytes: u64,
    /// True when the run ended because `stop` was set.
    pub stopped: bool,
    /// Seconds from the first row to the end (excluding the start-up wait).
    pub elapsed_seconds: f64,
}

/// Event times: `base + k / rate` seconds for the k-th event since the base, computed
/// exactly in integer nanoseconds.
#[derive(Debug, Clone)]
struct SimClock {
    base_ns: i64,
    offset_ns: i64,
    remainder: u64,
    step_ns: i64,
    step_remainder: u64,
    rate: u64,
}

impl SimClock {
    fn new(base_ns: i64, rate: u64) -> SimClock {
        let rate = rate.max(1);
        SimClock {
            base_ns,
            offset_ns: 0,
            remainder: 0,
            step_ns: (1_000_000_000 / rate) as i64,
            step_remainder: 1_000_000_000 % rate,
            rate,
        }
    }

    /// Time of the current event, in nanoseconds since the epoch.
    fn now_ns(&self) -> i64 {
        self.base_ns.saturating_add(self.offset_ns)
    }

    fn advance(&mut self) {
        self.offset_ns += self.step_ns;
        self.remainder += self.step_remainder;
        if self.remainder >= self.rate {
            self.remainder -= self.rate;
            self.offset_ns += 1;
        }
    }

    /// A clock that does not advance by itself: its time is set with
    /// [`SimClock::rebase`] (used to follow the wall clock).
    fn wall(base_ns: i64) -> SimClock {
        SimClock {
            step_ns: 0,
            step_remainder: 0,
            ..SimClock::new(base_ns, 1)
        }
    }

    fn rebase(&mut self, base_ns: i64) {
        self.base_ns = base_ns;
        self.offset_ns = 0;
        self.remainder = 0;
    }
}

/// Paces writing to `events_per_second` against the wall clock: events are written in
/// bursts of whatever is due, with one sleep until the next is due (no per-row sleeps).
#[derive(Debug)]
struct Pacer {
    rate: u64,
    anchor: Instant,
    anchor_index: u64,
    /// Events with a lower index are already known to be due.
    due_until: u64,
}

impl Pacer {
    fn new(rate: u64, index: u64) -> Pacer {
        Pacer {
            rate,
            anchor: Instant::now(),
            anchor_index: index,
            due_until: index,
        }
    }

    /// Starts the schedule afresh at `index` (after a pause: no catch-up burst).
    fn reanchor(&mut self, index: u64) {
        *self = Pacer::new(self.rate, index);
    }

    /// Returns `None` if event `index` may be written now, else how long to sleep first.
    fn wait_for(&mut self, index: u64) -> Option<Duration> {
        if self.rate == 0 || index < self.due_until {
            return None;
        }
        let elapsed = self.anchor.elapsed();
        let due = self.anchor_index
            + (elapsed.as_nanos() * u128::from(self.rate) / 1_000_000_000) as u64
            + 1;
        if index < due {
            self.due_until = due;
            return None;
        }
        let at = Duration::from_nanos(
            ((index - self.anchor_index) as u128 * 1_000_000_000 / u128::from(self.rate)) as u64,
        );
        Some(
            at.saturating_sub(elapsed)
                .clamp(Duration::from_micros(50), MAX_SLEEP),
        )
    }
}

/// Sleeps until the wall clock enters a new second, so that file names of this run
/// (first event's second + sequence number from 1) cannot repeat those of a previous
/// run that ended in the current second.
fn wait_for_next_second(stop: &AtomicBool) {
    let into_second = Utc::now().timestamp_subsec_nanos().min(999_999_999);
    let mut left = Duration::from_nanos(u64::from(1_000_000_000 - into_second));
    while !left.is_zero() && !stop.load(Ordering::Relaxed) {
        let step = left.min(MAX_SLEEP);
        std::thread::sleep(step);
        left -= step;
    }
}

/// The 32-byte ChaCha seed: the configured seed and the start time (so restarts without
/// `--start-time` never repeat event ids).
fn rng_seed(seed: u64, start_ns: i64) -> [u8; 32] {
    let mut s = [0u8; 32];
    s[..8].copy_from_slice(&seed.to_le_bytes());
    s[8..16].copy_from_slice(&start_ns.to_le_bytes());
    s[16..].copy_from_slice(b"sluice-generator");
    s
}

fn timestamp_ns(t: &DateTime<Utc>) -> i64 {
    t.timestamp_nanos_opt()
        .unwrap_or_else(|| t.timestamp_millis().saturating_mul(1_000_000))
}

/// `YYYYMMDDTHHMMSSZ` of a time in nanoseconds.
fn name_stamp(ns: i64) -> String {
    DateTime::<Utc>::from_timestamp(ns.div_euclid(1_000_000_000), 0)
        .unwrap_or_default()
        .format("%Y%m%dT%H%M%SZ")
        .to_string()
}

/// Concurrent sessions: about ten seconds between two events of one session at low
/// rates. Capped so the session table (56 bytes each) stays in the CPU's L2 cache: each
/// event touches a random session, and a larger table made cache misses the main cost.
fn concurrent_sessions(rate: u64) -> usize {
    rate.saturating_mul(10).clamp(10, 4_096) as usize
}

/// Writes files until a limit of the config is reached or `stop` is set.
pub fn run(
    opts: &RunOptions,
    metrics: &Metrics,
    stop: &AtomicBool,
) -> Result<Summary, GeneratorError> {
    let cfg = &opts.config;
    cfg.validate()?;
    let dir = &opts.landing_dir;
    std::fs::create_dir_all(dir).map_err(|e| GeneratorError::io("creating", dir, e))?;
    let stale = remove_stale_temp_files(dir)?;
    if stale > 0 {
        tracing::info!(count = stale, "removed temporary files of an earlier run");
    }
    let mut manifest = opts.manifest.as_deref().map(Manifest::open).transpose()?;

    let deterministic = opts.start_time.is_some();
    if !deterministic {
        wait_for_next_second(stop);
    }
    let started = Instant::now();
    let start_ns = timestamp_ns(&opts.start_time.unwrap_or_else(Utc::now));
    // Without --start-time and unthrottled, event times are the wall clock (never ahead
    // of it, as 1 µs per event would be when writing faster than 1M rows/s).
    let follow_wall_clock = !deterministic && cfg.events_per_second == 0;
    let sim_rate = if cfg.events_per_second == 0 {
        UNTHROTTLED_SIMULATED_RATE
    } else {
        cfg.events_per_second
    };
    let mut rng = ChaCha8Rng::from_seed(rng_seed(cfg.seed, start_ns));
    let mut traffic = Traffic::new(
        Catalogue::new(cfg.seed),
        concurrent_sessions(sim_rate),
        cfg.view_to_cart_rate,
        cfg.cart_to_purchase_rate,
        &mut rng,
    );
    let defects = DefectDraw::new(cfg.bad_row_share);
    let messy = MessyDraw::new(cfg.messy_row_share);
    let mut encoder = RowEncoder::new();
    let mut clock = if follow_wall_clock {
        SimClock::wall(start_ns)
    } else {
        SimClock::new(start_ns, sim_rate)
    };
    let mut pacer = Pacer::new(cfg.events_per_second, 0);
    let limits = Limits {
        max_files: cfg.max_pending_files,
        max_bytes: cfg.max_pending_bytes,
    };
    let file_span_ns = (cfg.seconds_per_file * 1e9) as i64;

    let mut summary = Summary::default();
    let mut stats = FileStats::default();
    let mut current: Option<(LandingFile, i64)> = None;
    let mut seq = 1u64;
    let mut index = 0u64;
    let mut room_check = RoomCheck::default();

    loop {
        if stop.load(Ordering::Relaxed) {
            summary.stopped = true;
            break;
        }
        if let Some(pause) = pacer.wait_for(index) {
            std::thread::sleep(pause);
            continue;
        }
        if current.is_none() {
            if cfg.total_files.is_some_and(|n| summary.files >= n) {
                break;
            }
            let (room, paused) = room_check.wait(dir, limits, stop, metrics)?;
            if room == Room::Stopped {
                summary.stopped = true;
                break;
            }
            if paused {
                pacer.reanchor(index);
                if !deterministic {
                    // Keep event times close to the wall clock after a pause.
                    let now = timestamp_ns(&Utc::now());
                    clock.rebase(now.max(clock.now_ns()));
                }
            }
            let first_ns = clock.now_ns();
            let encoding = Encoding {
                format: cfg.format,
                compression: cfg.compression,
            };
            let file =
                LandingFile::create_with(dir, &name_stamp(first_ns), seq, opts.fsync, encoding)?;
            stats.clear();
            stats.ndjson = cfg.format == sluice_core::config::OutputFormat::Ndjson;
            current = Some((file, first_ns));
        }
        let Some((file, first_ns)) = current.as_mut() else {
            continue;
        };
        if follow_wall_clock && index % WALL_CLOCK_EVERY == 0 {
            let now = timestamp_ns(&Utc::now());
            clock.rebase(now.max(clock.now_ns()));
        }

        let row = traffic.next_row(&mut rng, clock.now_ns().div_euclid(1_000_000));
        let defect = defects.draw(&mut rng);
        let mess = match defect {
            None => messy.draw(&mut rng),
            Some(_) => None,
        };
        let messy_line = match mess {
            None => {
                encoder.encode(file.buffer(), &row, defect);
                None
            }
            Some((kind, bits)) => {
                Some((kind, encoder.encode_messy(file.buffer(), &row, kind, bits)))
            }
        };
        file.row_done()?;
        stats.record(defect);
        if let Some((kind, line)) = messy_line {
            stats.record_messy(kind, line);
        }
        metrics.event_counter(row.event_type).inc();
        if let Some(kind) = defect {
            metrics.bad_rows[kind.index()].inc();
        }
        index += 1;
        summary.rows += 1;
        clock.advance();

        let rows_done = cfg.total_rows.is_some_and(|n| summary.rows >= n);
        let full = stats.rows >= cfg.rows_per_file
            || rows_done
            || (file_span_ns > 0 && clock.now_ns().saturating_sub(*first_ns) >= file_span_ns);
        if full {
            if let Some((file, _)) = current.take() {
                let bytes = finish_file(
                    file,
                    &stats,
                    manifest.as_mut(),
                    metrics,
                    &mut summary,
                    &mut seq,
                )?;
                room_check.wrote(bytes);
            }
            if rows_done || cfg.total_files.is_some_and(|n| summary.files >= n) {
                break;
            }
        }
    }

    if let Some((file, _)) = current.take() {
        if stats.rows > 0 {
            // Stopped mid-file: what is written is complete rows, so land it.
            finish_file(
                file,
                &stats,
                manifest.as_mut(),
                metrics,
                &mut summary,
                &mut seq,
            )?;
        } else {
            file.discard()?;
        }
    }
    summary.elapsed_seconds = started.elapsed().as_secs_f64();
    Ok(summary)
}

fn finish_file(
    file: LandingFile,
    stats: &FileStats,
    manifest: Option<&mut Manifest>,
    metrics: &Metrics,
    summary: &mut Summary,
    seq: &mut u64,
) -> Result<u64, GeneratorError> {
    let done = file.finish()?;
    *seq = done.seq + 1;
    if let Some(m) = manifest {
        m.append(&stats.entry(done.name.clone()))?;
    }
    metrics.files.inc();
    metrics.bytes.inc_by(done.bytes);
    summary.files += 1;
    summary.bad_rows += stats.bad_rows();
    summary.messy_rows += stats.messy_rows();
    summary.bytes += done.bytes;
    tracing::debug!(
        file = %done.name,
        rows = stats.rows,
        bad_rows = stats.bad_rows(),
        bytes = done.bytes,
        "file landed"
    );
    Ok(done.bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sim_clock_is_exact() {
        let mut c = SimClock::new(0, 3);
        for _ in 0..3 {
            c.advance();
        }
        assert_eq!(c.now_ns(), 1_000_000_000);
        let mut c = SimClock::new(5, 1_000_000);
        c.advance();
        assert_eq!(c.now_ns(), 1_005);
    }

    #[test]
    fn pacer_unthrottled_never_waits() {
        let mut p = Pacer::new(0, 0);
        assert!((0..1000).all(|i| p.wait_for(i).is_none()));
    }

    #[test]
    fn pacer_allows_the_first_event_then_waits() {
        let mut p = Pacer::new(1, 0);
        assert!(p.wait_for(0).is_none());
        let wait = p.wait_for(1).expect("must wait");
        assert!(wait <= MAX_SLEEP);
    }

    #[test]
    fn name_stamp_format() {
        assert_eq!(name_stamp(1_764_028_800_500_000_000), "20251125T000000Z");
    }

    fn opts(dir: &std::path::Path, seed: u64) -> RunOptions {
        RunOptions {
            landing_dir: dir.to_path_buf(),
            config: GeneratorConfig {
                events_per_second: 0,
                rows_per_file: 300,
                seed,
                total_rows: Some(1_000),
                bad_row_share: 0.2,
                ..Default::default()
            },
            start_time: DateTime::parse_from_rfc3339("2026-11-25T00:00:00Z")
                .ok()
                .map(|t| t.with_timezone(&Utc)),
            manifest: Some(dir.join(".manifest.jsonl")),
            fsync: true,
        }
    }

    #[test]
    fn messy_rows_are_valid_rows_listed_in_the_manifest() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut o = opts(dir.path(), 1);
        o.config.messy_row_share = 0.3;
        let s = run(
            &o,
            &Metrics::new().expect("metrics"),
            &AtomicBool::new(false),
        )
        .expect("run");
        assert!(s.messy_rows > 200 && s.messy_rows < 400, "{s:?}");
        let manifest = std::fs::read_to_string(dir.path().join(".manifest.jsonl")).expect("m");
        let (mut messy, mut valid, mut rows, mut kinds) =
            (0, 0, 0, std::collections::BTreeSet::new());
        for entry in manifest.lines() {
            let v: serde_json::Value = serde_json::from_str(entry).expect("json");
            let bytes =
                std::fs::read(dir.path().join(v["file"].as_str().expect("file"))).expect("read");
            let text = String::from_utf8_lossy(&bytes);
            let lines: Vec<&str> = text.lines().collect();
            let bad: Vec<u64> = v["bad_lines"]
                .as_array()
                .expect("bad lines")
                .iter()
                .map(|b| b[0].as_u64().expect("line"))
                .collect();
            for m in v["messy_lines"].as_array().into_iter().flatten() {
                let line = m["line"].as_u64().expect("line");
                assert!(!bad.contains(&line), "a messy line is not a bad line");
                let fields: Vec<&str> = lines[line as usize - 1].split(',').collect();
                let column = sluice_core::event::HEADER_FIELDS
                    .iter()
                    .position(|c| *c == m["column"].as_str().expect("column"))
                    .expect("a column");
                assert_eq!(fields[column], m["raw"].as_str().expect("raw"));
                assert_eq!(
                    fields[column].trim().to_ascii_lowercase(),
                    m["cleaned"].as_str().expect("cleaned")
                );
                kinds.insert(m["kind"].as_str().expect("kind").to_owned());
                messy += 1;
            }
            valid += v["valid_rows"].as_u64().expect("valid");
            rows += v["rows"].as_u64().expect("rows");
        }
        assert_eq!(messy, s.messy_rows);
        assert_eq!(rows - valid, s.bad_rows, "messy rows are counted as valid");
        assert_eq!(kinds.len(), crate::messy::MessyKind::ALL.len());
    }

    #[test]
    fn without_messy_rows_the_manifest_has_no_messy_fields() {
        // (The messy draw takes no randomness at share 0, so the files are those of
        // earlier versions: see messy::tests.)
        let dir = tempfile::tempdir().expect("tempdir");
        let o = opts(dir.path(), 1);
        run(
            &o,
            &Metrics::new().expect("metrics"),
            &AtomicBool::new(false),
        )
        .expect("run");
        let manifest = std::fs::read_to_string(dir.path().join(".manifest.jsonl")).expect("m");
        assert!(!manifest.contains("messy"), "{manifest}");
    }

    #[test]
    fn in_process_run_writes_the_expected_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let m = Metrics::new().expect("metrics");
        let s = run(&opts(dir.path(), 1), &m, &AtomicBool::new(false)).expect("run");
        assert_eq!((s.files, s.rows, s.stopped), (4, 1_000, false));
        let mut names: Vec<String> = std::fs::read_dir(dir.path())
            .expect("ls")
            .flatten()
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|n| n.ends_with(".csv"))
            .collect();
        names.sort();
        assert_eq!(
            names,
            [
                "events-20261125T000000Z-00000001.csv",
                "events-20261125T000000Z-00000002.csv",
                "events-20261125T000000Z-00000003.csv",
                "events-20261125T000000Z-00000004.csv",
            ]
        );
        let manifest = std::fs::read_to_string(dir.path().join(".manifest.jsonl")).expect("m");
        assert_eq!(manifest.lines().count(), 4);
        assert_eq!(m.files.get(), 4);
        let events: u64 = m.events.iter().map(|c| c.get()).sum();
        assert_eq!(events, 1_000);
        let bad: u64 = m.bad_rows.iter().map(|c| c.get()).sum();
        assert_eq!(bad, s.bad_rows);
    }

    #[test]
    fn without_start_time_unthrottled_times_follow_the_wall_clock() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut o = opts(dir.path(), 1);
        o.start_time = None;
        o.config.total_rows = Some(50_000);
        o.config.rows_per_file = 50_000;
        o.config.bad_row_share = 0.0;
        let before = Utc::now();
        run(
            &o,
            &Metrics::new().expect("metrics"),
            &AtomicBool::new(false),
        )
        .expect("run");
        let after = Utc::now();
        let name = std::fs::read_dir(dir.path())
            .expect("ls")
            .flatten()
            .filter_map(|e| e.file_name().into_string().ok())
            .find(|n| n.ends_with(".csv"))
            .expect("a file");
        let text = std::fs::read_to_string(dir.path().join(name)).expect("read");
        let mut last = before;
        for line in text.lines().skip(1) {
            let t = line.split(',').nth(1).expect("time");
            let t = DateTime::parse_from_rfc3339(t)
                .expect("rfc3339")
                .with_timezone(&Utc);
            assert!(t >= last - chrono::Duration::milliseconds(1), "monotone");
            assert!(t <= after, "{t} is after the run ended ({after})");
            last = t;
        }
    }

    #[test]
    fn invalid_config_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut o = opts(dir.path(), 1);
        o.config.view_to_cart_rate = f64::NAN;
        let e = run(
            &o,
            &Metrics::new().expect("metrics"),
            &AtomicBool::new(false),
        );
        assert!(matches!(e, Err(GeneratorError::Config(_))), "{e:?}");
    }

    #[test]
    fn stop_flag_set_before_start_writes_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let m = Metrics::new().expect("metrics");
        let s = run(&opts(dir.path(), 1), &m, &AtomicBool::new(true)).expect("run");
        assert!(s.stopped);
        assert_eq!(s.files, 0);
    }
}
