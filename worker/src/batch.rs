//! Micro-batch planning: which landing files go into the next batch, and whether to
//! start it now or wait a little for more files. Pure logic, no I/O.

use std::time::{Duration, Instant, SystemTime};

use sluice_core::config::BatchLimits;

/// Rough bytes per CSV row, used to estimate a file's rows before it is parsed.
pub const ESTIMATED_BYTES_PER_ROW: u64 = 120;

/// A file in the landing directory that may be processed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub name: String,
    pub size: u64,
    pub modified: SystemTime,
}

impl Candidate {
    pub fn estimated_rows(&self) -> u64 {
        self.size.div_ceil(ESTIMATED_BYTES_PER_ROW)
    }
}

/// Picks files for one batch from `candidates` (in processing order: oldest first),
/// skipping those `skip` rejects, until a limit would be exceeded. A single file larger
/// than the limits still forms a batch of its own, so it is never stuck.
pub fn select<'a>(
    candidates: &'a [Candidate],
    limits: &BatchLimits,
    skip: impl FnMut(&str) -> bool,
) -> Vec<&'a Candidate> {
    select_alone(candidates, limits, skip, |_| false)
}

/// [`select`], where a file for which `alone` holds (a compressed file, always loaded in
/// parts) also forms a batch of its own: it is selected only as the first file, and
/// ends the selection.
pub fn select_alone<'a>(
    candidates: &'a [Candidate],
    limits: &BatchLimits,
    mut skip: impl FnMut(&str) -> bool,
    mut alone: impl FnMut(&Candidate) -> bool,
) -> Vec<&'a Candidate> {
    let mut chosen = Vec::new();
    let (mut bytes, mut rows) = (0u64, 0u64);
    for c in candidates {
        if skip(&c.name) {
            continue;
        }
        if alone(c) {
            if chosen.is_empty() {
                chosen.push(c);
            }
            break;
        }
        let next_bytes = bytes.saturating_add(c.size);
        let next_rows = rows.saturating_add(c.estimated_rows());
        if !chosen.is_empty() && (next_bytes > limits.max_bytes || next_rows > limits.max_rows) {
            break;
        }
        chosen.push(c);
        bytes = next_bytes;
        rows = next_rows;
        if chosen.len() as u64 >= limits.max_files {
            break;
        }
    }
    chosen
}

/// True when a selection already reaches one of the limits, so waiting cannot make it bigger.
pub fn is_full(selection: &[&Candidate], limits: &BatchLimits) -> bool {
    let bytes: u64 = selection.iter().map(|c| c.size).sum();
    let rows: u64 = selection.iter().map(|c| c.estimated_rows()).sum();
    selection.len() as u64 >= limits.max_files
        || bytes >= limits.max_bytes
        || rows >= limits.max_rows
}

/// What the planner should do with the files it can see.
#[derive(Debug, PartialEq, Eq)]
pub enum Decision {
    /// Nothing to do.
    Idle,
    /// Start the batch now.
    Go,
    /// Wait at most this long for more files, then start.
    Wait(Duration),
}

/// Starts a batch once it is full or once its first file has waited `max_wait`.
/// `first_seen` is when the planner first noticed the oldest selected file.
pub fn decide(
    selection: &[&Candidate],
    limits: &BatchLimits,
    first_seen: Option<Instant>,
    now: Instant,
) -> Decision {
    if selection.is_empty() {
        return Decision::Idle;
    }
    if is_full(selection, limits) {
        return Decision::Go;
    }
    let max_wait = Duration::from_millis(limits.max_wait_ms);
    match first_seen {
        Some(seen) => {
            let waited = now.saturating_duration_since(seen);
            if waited >= max_wait {
                Decision::Go
            } else {
                Decision::Wait(max_wait - waited)
            }
        }
        None => Decision::Go,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(name: &str, size: u64) -> Candidate {
        Candidate {
            name: name.into(),
            size,
            modified: SystemTime::UNIX_EPOCH,
        }
    }

    fn limits(max_files: u64, max_rows: u64, max_bytes: u64, max_wait_ms: u64) -> BatchLimits {
        BatchLimits {
            max_files,
            max_rows,
            max_bytes,
            max_wait_ms,
        }
    }

    fn names(sel: &[&Candidate]) -> Vec<String> {
        sel.iter().map(|c| c.name.clone()).collect()
    }

    #[test]
    fn a_file_that_must_be_alone_forms_its_own_batch() {
        let files = vec![file("a.csv", 10), file("b.csv.gz", 10), file("c.csv", 10)];
        let l = limits(10, 1000, 1000, 5);
        let gz = |c: &Candidate| c.name.ends_with(".gz");
        let names = |v: Vec<&Candidate>| v.iter().map(|c| c.name.clone()).collect::<Vec<_>>();
        assert_eq!(names(select_alone(&files, &l, |_| false, gz)), ["a.csv"]);
        assert_eq!(
            names(select_alone(&files, &l, |n| n == "a.csv", gz)),
            ["b.csv.gz"]
        );
        assert_eq!(
            names(select_alone(&files, &l, |n| n != "c.csv", gz)),
            ["c.csv"]
        );
    }

    #[test]
    fn stops_at_max_files() {
        let c: Vec<_> = (0..10).map(|i| file(&format!("{i}.csv"), 10)).collect();
        let sel = select(&c, &limits(3, 1_000_000, 1 << 30, 5), |_| false);
        assert_eq!(names(&sel), ["0.csv", "1.csv", "2.csv"]);
        assert!(is_full(&sel, &limits(3, 1_000_000, 1 << 30, 5)));
    }

    #[test]
    fn stops_before_exceeding_bytes() {
        let c = vec![file("a", 600), file("b", 300), file("c", 200)];
        let sel = select(&c, &limits(10, 1_000_000, 1_000, 5), |_| false);
        assert_eq!(names(&sel), ["a", "b"]);
    }

    #[test]
    fn stops_before_exceeding_estimated_rows() {
        let c = vec![file("a", 120 * 50), file("b", 120 * 60)];
        let sel = select(&c, &limits(10, 100, 1 << 30, 5), |_| false);
        assert_eq!(names(&sel), ["a"]);
    }

    #[test]
    fn oversized_file_forms_its_own_batch() {
        let c = vec![file("huge", 10_000), file("small", 1)];
        let sel = select(&c, &limits(10, 1_000_000, 100, 5), |_| false);
        assert_eq!(names(&sel), ["huge"]);
    }

    #[test]
    fn skipped_files_are_not_selected() {
        let c = vec![file("a", 1), file("b", 1), file("c", 1)];
        let sel = select(&c, &limits(10, 100, 100, 5), |n| n == "b");
        assert_eq!(names(&sel), ["a", "c"]);
    }

    #[test]
    fn lone_file_waits_at_most_max_wait() {
        let c = vec![file("a", 10)];
        let l = limits(10, 1_000, 1 << 20, 5);
        let sel = select(&c, &l, |_| false);
        let t0 = Instant::now();
        assert_eq!(
            decide(&sel, &l, Some(t0), t0),
            Decision::Wait(Duration::from_millis(5))
        );
        assert_eq!(
            decide(&sel, &l, Some(t0), t0 + Duration::from_millis(2)),
            Decision::Wait(Duration::from_millis(3))
        );
        assert_eq!(
            decide(&sel, &l, Some(t0), t0 + Duration::from_millis(5)),
            Decision::Go
        );
    }

    #[test]
    fn full_batch_goes_at_once_and_empty_is_idle() {
        let c: Vec<_> = (0..4).map(|i| file(&i.to_string(), 1)).collect();
        let l = limits(4, 1_000, 1 << 20, 1_000);
        let sel = select(&c, &l, |_| false);
        let now = Instant::now();
        assert_eq!(decide(&sel, &l, Some(now), now), Decision::Go);
        assert_eq!(decide(&[], &l, None, now), Decision::Idle);
    }
}
