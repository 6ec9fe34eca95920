//! What happens to landing files after their batch commits: archive, delete or keep;
//! unreadable files are set aside in `failed/` with a reason file; old archive days are
//! pruned. Every action is idempotent, because after a crash it may run twice.

use std::fs;
use std::io;
use std::path::Path;
use std::time::{Duration, SystemTime};

use chrono::{DateTime, NaiveDate, Utc};
use sluice_core::config::AfterCommit;

use crate::source::LandingDirs;

/// Applies the after-commit policy to a loaded file. A file already gone was handled by
/// an earlier attempt or another worker.
pub fn finish_loaded(
    dirs: &LandingDirs,
    name: &str,
    policy: AfterCommit,
    now: DateTime<Utc>,
) -> io::Result<()> {
    let src = dirs.file(name);
    let result = match policy {
        AfterCommit::Keep => return Ok(()),
        AfterCommit::Delete => fs::remove_file(&src),
        AfterCommit::Archive => {
            let day = dirs.archive().join(now.format("%Y-%m-%d").to_string());
            fs::create_dir_all(&day)?;
            fs::rename(&src, day.join(name))
        }
    };
    ignore_missing(result)
}

/// Moves an unreadable file to `failed/` and writes `failed/<name>.reason.txt`.
pub fn set_aside_failed(
    dirs: &LandingDirs,
    name: &str,
    reason: &str,
    message: &str,
) -> io::Result<()> {
    let failed = dirs.failed();
    fs::create_dir_all(&failed)?;
    let note = format!(
        "reason: {reason}\nmessage: {message}\nset aside at: {}\n",
        Utc::now().to_rfc3339()
    );
    fs::write(failed.join(format!("{name}.reason.txt")), note)?;
    ignore_missing(fs::rename(dirs.file(name), failed.join(name)))
}

fn ignore_missing(result: io::Result<()>) -> io::Result<()> {
    match result {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

/// Deletes archive day folders older than `retention` (by the date in their name).
/// Returns how many folders were removed. A zero retention keeps everything.
pub fn prune_archive(
    dirs: &LandingDirs,
    retention: Duration,
    now: SystemTime,
) -> io::Result<usize> {
    if retention.is_zero() {
        return Ok(0);
    }
    let archive = dirs.archive();
    let entries = match fs::read_dir(&archive) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e),
    };
    let cutoff: DateTime<Utc> = (now - retention).into();
    let mut removed = 0;
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Ok(day) = NaiveDate::parse_from_str(&name, "%Y-%m-%d") else {
            continue;
        };
        // A day folder is expired once its last moment is older than the cutoff.
        let Some(end_of_day) = day.succ_opt().and_then(|d| d.and_hms_opt(0, 0, 0)) else {
            continue;
        };
        if end_of_day.and_utc() <= cutoff {
            fs::remove_dir_all(entry.path())?;
            removed += 1;
        }
    }
    Ok(removed)
}

/// Total size of the regular files directly inside `dir` (used for metrics).
pub fn dir_bytes(dir: &Path) -> u64 {
    fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .filter_map(|e| e.metadata().ok())
                .filter(|m| m.is_file())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dirs() -> (tempfile::TempDir, LandingDirs) {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = LandingDirs {
            landing: dir.path().to_path_buf(),
        };
        (dir, d)
    }

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s)
            .expect("time")
            .with_timezone(&Utc)
    }

    #[test]
    fn archive_moves_into_dated_folder_and_is_idempotent() {
        let (_t, d) = dirs();
        fs::write(d.file("a.csv"), b"x").expect("write");
        let now = at("2026-11-25T10:00:00Z");
        finish_loaded(&d, "a.csv", AfterCommit::Archive, now).expect("archive");
        assert!(d.archive().join("2026-11-25/a.csv").exists());
        assert!(!d.file("a.csv").exists());
        finish_loaded(&d, "a.csv", AfterCommit::Archive, now).expect("second run is a no-op");
    }

    #[test]
    fn delete_and_keep() {
        let (_t, d) = dirs();
        fs::write(d.file("a.csv"), b"x").expect("write");
        fs::write(d.file("b.csv"), b"x").expect("write");
        let now = Utc::now();
        finish_loaded(&d, "a.csv", AfterCommit::Delete, now).expect("delete");
        finish_loaded(&d, "b.csv", AfterCommit::Keep, now).expect("keep");
        assert!(!d.file("a.csv").exists());
        assert!(d.file("b.csv").exists());
        finish_loaded(&d, "a.csv", AfterCommit::Delete, now).expect("idempotent");
    }

    #[test]
    fn failed_file_gets_reason_note() {
        let (_t, d) = dirs();
        fs::write(d.file("bad.csv"), b"\0\0").expect("write");
        set_aside_failed(&d, "bad.csv", "binary_file", "file holds NUL bytes").expect("set aside");
        assert!(d.failed().join("bad.csv").exists());
        let note = fs::read_to_string(d.failed().join("bad.csv.reason.txt")).expect("note");
        assert!(note.contains("binary_file") && note.contains("NUL"));
    }

    #[test]
    fn prune_removes_only_expired_days() {
        let (_t, d) = dirs();
        for day in ["2026-11-20", "2026-11-24", "2026-11-25", "not-a-date"] {
            fs::create_dir_all(d.archive().join(day)).expect("mkdir");
        }
        let now: SystemTime = at("2026-11-25T12:00:00Z").into();
        let removed = prune_archive(&d, Duration::from_secs(24 * 3600), now).expect("prune");
        assert_eq!(removed, 1);
        assert!(!d.archive().join("2026-11-20").exists());
        assert!(d.archive().join("2026-11-24").exists());
        assert!(d.archive().join("not-a-date").exists());
        assert_eq!(prune_archive(&d, Duration::ZERO, now).expect("prune"), 0);
    }
}
