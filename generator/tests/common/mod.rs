//! Helpers of the process-level tests: running the binary, reading its output files
//! and manifest, checking rows.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use chrono::DateTime;
use serde::Deserialize;
use sluice_core::event::{COLUMN_COUNT, EventType, HEADER, MAX_TEXT_FIELD_BYTES};

pub const START: &str = "2026-11-25T00:00:00Z";

pub fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_sluice-generator"));
    c.args(["--metrics-addr", "none", "--log-level", "warn"]);
    // Keep the tests independent of the caller's environment.
    for (k, _) in std::env::vars() {
        if k.starts_with("SLUICE_GENERATOR_") || k == "RUST_LOG" {
            c.env_remove(k);
        }
    }
    c
}

pub fn run_ok(args: &[&str]) -> Output {
    let out = bin().args(args).output().expect("run generator");
    assert!(
        out.status.success(),
        "generator {args:?} failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

pub fn spawn(args: &[&str]) -> Child {
    bin()
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn generator")
}

#[allow(unsafe_code)]
pub fn signal(child: &Child, sig: i32) {
    let pid = libc::pid_t::try_from(child.id()).expect("pid fits");
    // SAFETY: kill(2) has no memory-safety preconditions; the pid is our own child.
    let rc = unsafe { libc::kill(pid, sig) };
    assert_eq!(rc, 0, "kill({pid}, {sig}) failed");
}

pub fn wait_timeout(child: &mut Child, timeout: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("generator did not exit within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Polls `cond` until true or the timeout passes.
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    cond()
}

/// Names of the visible `*.csv` files, sorted.
pub fn csv_files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .expect("ls")
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| n.ends_with(".csv") && !n.starts_with('.'))
        .collect();
    names.sort();
    names
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct ManifestLine {
    pub file: String,
    pub rows: u64,
    pub valid_rows: u64,
    pub bad_rows: BTreeMap<String, u64>,
    pub bad_lines: Vec<(u64, String)>,
}

pub fn read_manifest(path: &Path) -> Vec<ManifestLine> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).expect("manifest line parses"))
        .collect()
}

pub fn manifest_path(root: &Path) -> PathBuf {
    root.join("manifest.jsonl")
}

/// Lines of a file after the header; asserts the header and the final `\n`.
pub fn data_lines(bytes: &[u8]) -> Vec<&[u8]> {
    assert!(bytes.ends_with(b"\n"), "file must end with a newline");
    let mut lines: Vec<&[u8]> = bytes[..bytes.len() - 1].split(|b| *b == b'\n').collect();
    assert_eq!(lines.remove(0), HEADER.as_bytes());
    lines
}

/// Checks a valid line against the schema; returns its event type.
pub fn check_valid(line: &[u8]) -> EventType {
    let text = std::str::from_utf8(line).expect("valid line is UTF-8");
    let f: Vec<&str> = text.split(',').collect();
    assert_eq!(f.len(), COLUMN_COUNT, "{text}");
    uuid::Uuid::parse_str(f[0]).expect("event_id is a UUID");
    DateTime::parse_from_rfc3339(f[1]).expect("event_time is RFC 3339");
    assert!(f[2].parse::<i64>().expect("user_id") >= 0);
    assert!(!f[3].is_empty() && f[3].len() <= MAX_TEXT_FIELD_BYTES);
    let t = EventType::parse(f[4]).expect("known event_type");
    assert!(f[5].parse::<i64>().expect("product_id") >= 0);
    assert!(!f[6].is_empty() && f[6].len() <= MAX_TEXT_FIELD_BYTES);
    let (whole, cents) = f[7].split_once('.').expect("price has decimals");
    assert!(whole.parse::<u64>().is_ok() && cents.len() == 2 && cents.parse::<u8>().is_ok());
    assert!(
        f[8].parse::<i32>().expect("quantity") >= t.min_quantity(),
        "{text}"
    );
    t
}

/// Checks that a bad line has the defect behind `reason`; returns the defect kind.
pub fn check_bad(line: &[u8], reason: &str) -> &'static str {
    let f: Vec<&[u8]> = line.split(|b| *b == b',').collect();
    uuid::Uuid::try_parse_ascii(f[0]).expect("bad rows keep a valid event_id");
    let utf8 = std::str::from_utf8(line).is_ok();
    if reason == "invalid_utf8" {
        assert!(!utf8, "invalid_utf8 line is UTF-8");
        return "non_utf8";
    }
    assert!(utf8, "{reason} line must be UTF-8");
    if reason == "wrong_column_count" {
        assert_ne!(f.len(), COLUMN_COUNT);
        return "wrong_column_count";
    }
    assert_eq!(f.len(), COLUMN_COUNT, "{reason}");
    let s = |i: usize| std::str::from_utf8(f[i]).expect("utf8");
    match reason {
        "field_too_long" => {
            assert!(f.iter().any(|x| x.len() > MAX_TEXT_FIELD_BYTES));
            "overlong_field"
        }
        "missing_field" => {
            assert!(f.iter().any(|x| x.is_empty()));
            "missing_field"
        }
        "bad_price" => {
            assert!(s(7).parse::<f64>().is_err(), "price {}", s(7));
            "unparseable_price"
        }
        "negative_quantity" => {
            assert!(s(8).parse::<i32>().expect("int") < 0);
            "negative_quantity"
        }
        "unknown_event_type" => {
            assert!(EventType::parse(s(4)).is_none());
            "unknown_event_type"
        }
        "bad_timestamp" => {
            assert!(DateTime::parse_from_rfc3339(s(1)).is_err());
            "bad_timestamp"
        }
        other => panic!("unexpected reason {other}"),
    }
}
