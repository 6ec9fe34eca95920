//! Backpressure: before starting a file the generator counts the unprocessed `*.csv`
//! files in the landing directory and pauses while there are too many (files or bytes),
//! so a stalled consumer never lets the volume fill up.

use std::fs;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::error::GeneratorError;
use crate::metrics::Metrics;

/// How often the directory is listed again while paused.
pub const POLL_INTERVAL: Duration = Duration::from_millis(100);

/// Visible landing files: `*.csv`, not dot files, not directories.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pending {
    pub files: u64,
    pub bytes: u64,
}

/// Counts the visible `*.csv` files of `dir` and their bytes.
pub fn pending(dir: &Path) -> Result<Pending, GeneratorError> {
    let entries = fs::read_dir(dir).map_err(|e| GeneratorError::io("listing", dir, e))?;
    let mut p = Pending::default();
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if !sluice_core::landing::is_landing_file_name(name) {
            continue;
        }
        // A file the worker moves away meanwhile is simply not counted.
        let Ok(meta) = entry.metadata() else { continue };
        if meta.is_file() {
            p.files += 1;
            p.bytes += meta.len();
        }
    }
    Ok(p)
}

/// The limits: writing pauses while either is reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_files: u64,
    pub max_bytes: u64,
}

impl Limits {
    pub fn exceeded(&self, p: Pending) -> bool {
        p.files >= self.max_files || p.bytes >= self.max_bytes
    }
}

/// How the wait ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Room {
    /// There is room for another file.
    Available,
    /// The stop flag was raised while paused.
    Stopped,
}

/// Decides when the landing directory must be listed again. Listing it before every
/// file costs O(files) each time, which with a backlog of 10,000 small files made the
/// generator spend minutes in the kernel. Between listings, at most [`POLL_INTERVAL`]
/// apart, the last count plus what this process has written since is an upper bound
/// (consumers only remove files), so no pause is missed.
#[derive(Debug, Default)]
pub struct RoomCheck {
    listed: Option<(Instant, Pending)>,
    written_since: Pending,
}

impl RoomCheck {
    /// Records a file this process made visible.
    pub fn wrote(&mut self, bytes: u64) {
        self.written_since.files += 1;
        self.written_since.bytes += bytes;
    }

    /// As [`wait_for_room`], listing the directory only when the estimate is stale or
    /// reaches the limits.
    pub fn wait(
        &mut self,
        dir: &Path,
        limits: Limits,
        stop: &AtomicBool,
        metrics: &Metrics,
    ) -> Result<(Room, bool), GeneratorError> {
        if let Some((at, p)) = self.listed {
            let estimate = Pending {
                files: p.files + self.written_since.files,
                bytes: p.bytes + self.written_since.bytes,
            };
            if at.elapsed() < POLL_INTERVAL && !limits.exceeded(estimate) {
                return Ok((Room::Available, false));
            }
        }
        let (room, paused, seen) = wait_for_room(dir, limits, stop, metrics)?;
        self.listed = Some((Instant::now(), seen));
        self.written_since = Pending::default();
        Ok((room, paused))
    }
}

/// Returns once the landing directory has room for another file (or `stop` is set),
/// logging when a pause starts and ends and counting the paused seconds. Returns
/// whether it paused, and the last count it saw.
pub fn wait_for_room(
    dir: &Path,
    limits: Limits,
    stop: &AtomicBool,
    metrics: &Metrics,
) -> Result<(Room, bool, Pending), GeneratorError> {
    let mut p = pending(dir)?;
    if !limits.exceeded(p) {
        return Ok((Room::Available, false, p));
    }
    tracing::info!(
        pending_files = p.files,
        pending_bytes = p.bytes,
        max_pending_files = limits.max_files,
        max_pending_bytes = limits.max_bytes,
        "landing directory is full: pausing until files are consumed"
    );
    metrics.backpressure_paused.set(1);
    let started = Instant::now();
    let mut last = started;
    let room = loop {
        if stop.load(Ordering::Relaxed) {
            break Room::Stopped;
        }
        std::thread::sleep(POLL_INTERVAL);
        let now = Instant::now();
        metrics
            .backpressure_seconds
            .inc_by(now.duration_since(last).as_secs_f64());
        last = now;
        p = pending(dir)?;
        if !limits.exceeded(p) {
            break Room::Available;
        }
    };
    metrics.backpressure_paused.set(0);
    let paused_seconds = started.elapsed().as_secs_f64();
    match room {
        Room::Available => tracing::info!(
            paused_seconds,
            pending_files = p.files,
            pending_bytes = p.bytes,
            "resuming after backpressure pause"
        ),
        Room::Stopped => tracing::info!(paused_seconds, "stopping while paused by backpressure"),
    }
    Ok((room, true, p))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_only_visible_csv_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        fs::write(dir.path().join("a.csv"), "12345").expect("w");
        fs::write(dir.path().join("b.csv"), "1").expect("w");
        fs::write(dir.path().join(".c.csv"), "1").expect("w");
        fs::write(dir.path().join(".events-x.csv.tmp"), "1").expect("w");
        fs::write(dir.path().join("d.txt"), "1").expect("w");
        fs::create_dir(dir.path().join("archive.csv")).expect("mkdir");
        assert_eq!(
            pending(dir.path()).expect("pending"),
            Pending { files: 2, bytes: 6 }
        );
    }

    #[test]
    fn limits_are_inclusive() {
        let l = Limits {
            max_files: 2,
            max_bytes: 100,
        };
        assert!(!l.exceeded(Pending {
            files: 1,
            bytes: 99
        }));
        assert!(l.exceeded(Pending { files: 2, bytes: 0 }));
        assert!(l.exceeded(Pending {
            files: 0,
            bytes: 100
        }));
    }

    #[test]
    fn stop_ends_a_pause() {
        let dir = tempfile::tempdir().expect("tempdir");
        fs::write(dir.path().join("a.csv"), "1").expect("w");
        let m = Metrics::new().expect("metrics");
        let stop = AtomicBool::new(true);
        let l = Limits {
            max_files: 1,
            max_bytes: 100,
        };
        let (room, paused, _) = wait_for_room(dir.path(), l, &stop, &m).expect("wait");
        assert_eq!(room, Room::Stopped);
        assert!(paused);
        assert_eq!(m.backpressure_paused.get(), 0);
    }
}
