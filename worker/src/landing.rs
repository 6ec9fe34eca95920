//! What happens to landing files after their batch commits: archive, delete or keep;
//! unreadable files are set aside in `failed/` with a reason note; old archive days are
//! pruned; after a database restore, archived files can be put back. Every action is
//! idempotent, because after a crash it may run twice.
//!
//! Nothing here overwrites a file in `archive/` or `failed/` (a file is moved with a
//! hard link, which fails rather than replace, then the source is unlinked), and nothing
//! is written through a symbolic link (see [`safe_fs`]).

mod safe_fs;

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use chrono::{DateTime, NaiveDate, Utc};
use sluice_core::config::AfterCommit;
use sluice_core::landing::{REASON_SUFFIX, is_landing_file_name};

use crate::source::LandingDirs;
use safe_fs::{Moved, check_plain_name, existing_real_dir, move_no_clobber, real_dir};
pub use safe_fs::{is_transient_read_error, open_landing_file};

/// Format of the archive's day folders.
const DAY_FORMAT: &str = "%Y-%m-%d";

/// Applies the after-commit policy to a loaded file. `digest_hex` is the hex SHA-256 of
/// its content (empty for legacy entries): it names the archived copy when
/// `archive/<day>/<name>` is taken by another file. A file already gone was handled by
/// an earlier attempt or another worker.
pub fn finish_loaded(
    dirs: &LandingDirs,
    name: &str,
    digest_hex: &str,
    policy: AfterCommit,
    now: DateTime<Utc>,
) -> io::Result<()> {
    check_plain_name(name)?;
    let src = dirs.file(name);
    match policy {
        AfterCommit::Keep => Ok(()),
        AfterCommit::Delete => safe_fs::remove_if_present(&src),
        AfterCommit::Archive => {
            // Checked first so a file already moved never fails on a directory problem.
            if !exists(&src)? {
                return Ok(());
            }
            let archive = dirs.archive();
            let day = archive.join(now.format(DAY_FORMAT).to_string());
            real_dir(&archive)?;
            real_dir(&day)?;
            move_no_clobber(&src, &day, name, digest_hex, |_| Ok(())).map(drop)
        }
    }
}

/// Moves a file that could not be loaded to `failed/` (same naming as the archive) and
/// writes `failed/<final name>.reason.txt` beside it. The note is written once the file
/// is in `failed/` but before it leaves the landing directory, so a retry after a crash
/// writes it again.
pub fn set_aside_failed(
    dirs: &LandingDirs,
    name: &str,
    digest_hex: &str,
    reason: &str,
    message: &str,
) -> io::Result<()> {
    check_plain_name(name)?;
    let src = dirs.file(name);
    if !exists(&src)? {
        return Ok(());
    }
    let failed = dirs.failed();
    real_dir(&failed)?;
    let note = format!(
        "reason: {reason}\nmessage: {message}\nset aside at: {}\n",
        Utc::now().to_rfc3339()
    );
    let moved = move_no_clobber(&src, &failed, name, digest_hex, |dst| {
        let final_name = dst
            .file_name()
            .map(|n| n.to_string_lossy())
            .unwrap_or_default();
        safe_fs::write_note(&failed, &format!("{final_name}{REASON_SUFFIX}"), &note)
    })?;
    if let Moved::Duplicate(existing) = moved {
        tracing::debug!(file = name, existing = %existing.display(),
            "same content already set aside; not moved again");
    }
    Ok(())
}

/// Whether `path` exists, without following a symbolic link.
fn exists(path: &Path) -> io::Result<bool> {
    match fs::symlink_metadata(path) {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

/// A file in an archive day folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchivedFile {
    pub path: PathBuf,
    /// Its name in the day folder, which is also the name it gets back in landing.
    pub name: String,
}

/// The regular files with landing-file names in the archive's day folders
/// (`archive/YYYY-MM-DD/`), by day then name. Symbolic links and anything else are
/// ignored; an `archive` that is a symbolic link is refused (files would be moved out of
/// wherever it points).
pub fn archived_files(dirs: &LandingDirs) -> io::Result<Vec<ArchivedFile>> {
    let archive = dirs.archive();
    if !existing_real_dir(&archive)? {
        return Ok(Vec::new());
    }
    let mut days = Vec::new();
    for entry in fs::read_dir(&archive)?.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
        if is_dir && NaiveDate::parse_from_str(&name, DAY_FORMAT).is_ok() {
            days.push(entry.path());
        }
    }
    days.sort();
    let mut files = Vec::new();
    for day in days {
        let mut in_day = Vec::new();
        for entry in fs::read_dir(&day)?.flatten() {
            let Ok(name) = entry.file_name().into_string() else {
                continue;
            };
            if is_landing_file_name(&name) && entry.file_type().is_ok_and(|t| t.is_file()) {
                in_day.push(ArchivedFile {
                    path: entry.path(),
                    name,
                });
            }
        }
        in_day.sort_by(|a, b| a.name.cmp(&b.name));
        files.extend(in_day);
    }
    Ok(files)
}

/// Moves an archived file back into the landing directory under its archived name, never
/// replacing a file there. Returns the name it landed under, or `None` if a file of that
/// name is already in landing (or the archived file is gone).
pub fn reland(dirs: &LandingDirs, f: &ArchivedFile) -> io::Result<Option<String>> {
    check_plain_name(&f.name)?;
    match safe_fs::move_exact(&f.path, &dirs.file(&f.name)) {
        Ok(true) => Ok(Some(f.name.clone())),
        Ok(false) => Ok(None),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Deletes archive day folders older than `retention` (by the date in their name).
/// Returns how many folders were removed. A zero retention keeps everything. Only real
/// directories are pruned; an `archive` that is a symbolic link is refused (pruning would
/// delete wherever it points).
pub fn prune_archive(
    dirs: &LandingDirs,
    retention: Duration,
    now: SystemTime,
) -> io::Result<usize> {
    if retention.is_zero() {
        return Ok(0);
    }
    let archive = dirs.archive();
    if !existing_real_dir(&archive)? {
        return Ok(0);
    }
    let entries = match fs::read_dir(&archive) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e),
    };
    let cutoff: DateTime<Utc> = (now - retention).into();
    let mut removed = 0;
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Ok(day) = NaiveDate::parse_from_str(&name, DAY_FORMAT) else {
            continue;
        };
        if !entry.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
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
    use std::os::unix::fs::symlink;

    const DIGEST_A: &str = "aaaaaaaaaaaaaaaa1111111111111111aaaaaaaaaaaaaaaa1111111111111111";
    const DIGEST_B: &str = "bbbbbbbbbbbbbbbb2222222222222222bbbbbbbbbbbbbbbb2222222222222222";

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

    fn names_in(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .expect("ls")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn archive_moves_into_dated_folder_and_is_idempotent() {
        let (_t, d) = dirs();
        fs::write(d.file("a.csv"), b"x").expect("write");
        let now = at("2026-11-25T10:00:00Z");
        finish_loaded(&d, "a.csv", DIGEST_A, AfterCommit::Archive, now).expect("archive");
        assert_eq!(
            fs::read(d.archive().join("2026-11-25/a.csv")).expect("a"),
            b"x"
        );
        assert!(!d.file("a.csv").exists());
        finish_loaded(&d, "a.csv", DIGEST_A, AfterCommit::Archive, now)
            .expect("second run is a no-op");
        assert_eq!(names_in(&d.archive().join("2026-11-25")), ["a.csv"]);
    }

    #[test]
    fn same_name_new_content_on_the_same_day_keeps_both() {
        let (_t, d) = dirs();
        let now = at("2026-11-25T10:00:00Z");
        fs::write(d.file("a.csv"), b"first").expect("write");
        finish_loaded(&d, "a.csv", DIGEST_A, AfterCommit::Archive, now).expect("first");
        fs::write(d.file("a.csv"), b"second").expect("write");
        finish_loaded(&d, "a.csv", DIGEST_B, AfterCommit::Archive, now).expect("second");
        let day = d.archive().join("2026-11-25");
        assert_eq!(names_in(&day), ["a.bbbbbbbbbbbbbbbb.csv", "a.csv"]);
        assert_eq!(fs::read(day.join("a.csv")).expect("a"), b"first");
        assert_eq!(
            fs::read(day.join("a.bbbbbbbbbbbbbbbb.csv")).expect("b"),
            b"second"
        );
        assert!(!d.file("a.csv").exists());

        // The same content delivered a third time under that name: already archived
        // under its digest name, so the landing copy just goes away.
        fs::write(d.file("a.csv"), b"second").expect("write");
        finish_loaded(&d, "a.csv", DIGEST_B, AfterCommit::Archive, now).expect("third");
        assert_eq!(names_in(&day), ["a.bbbbbbbbbbbbbbbb.csv", "a.csv"]);
        assert!(!d.file("a.csv").exists());
    }

    #[test]
    fn legacy_entry_without_digest_gets_a_time_stamped_name() {
        let (_t, d) = dirs();
        let now = at("2026-11-25T10:00:00Z");
        fs::write(d.file("a.csv"), b"first").expect("write");
        finish_loaded(&d, "a.csv", "", AfterCommit::Archive, now).expect("first");
        fs::write(d.file("a.csv"), b"second").expect("write");
        finish_loaded(&d, "a.csv", "", AfterCommit::Archive, now).expect("second");
        let day = d.archive().join("2026-11-25");
        let names = names_in(&day);
        assert_eq!(names.len(), 2);
        assert_eq!(fs::read(day.join("a.csv")).expect("a"), b"first");
        let other = names.iter().find(|n| *n != "a.csv").expect("second name");
        let nanos = other
            .strip_prefix("a.")
            .and_then(|n| n.strip_suffix(".csv"))
            .expect("a.<nanos>.csv");
        assert!(nanos.bytes().all(|b| b.is_ascii_digit()), "{other}");
        assert_eq!(fs::read(day.join(other)).expect("b"), b"second");
    }

    #[test]
    fn rerun_after_link_before_unlink_leaves_one_archived_copy() {
        let (_t, d) = dirs();
        let now = at("2026-11-25T10:00:00Z");
        let day = d.archive().join("2026-11-25");
        fs::create_dir_all(&day).expect("mkdir");
        fs::write(d.file("a.csv"), b"x").expect("write");
        // The crashed attempt had linked the file into the archive, not yet unlinked it.
        fs::hard_link(d.file("a.csv"), day.join("a.csv")).expect("link");
        finish_loaded(&d, "a.csv", DIGEST_A, AfterCommit::Archive, now).expect("rerun");
        assert!(!d.file("a.csv").exists());
        assert_eq!(names_in(&day), ["a.csv"]);

        // Same under the digest name (the plain name was taken by other content).
        fs::write(d.file("a.csv"), b"y").expect("write");
        let by_digest = day.join("a.bbbbbbbbbbbbbbbb.csv");
        fs::hard_link(d.file("a.csv"), &by_digest).expect("link");
        finish_loaded(&d, "a.csv", DIGEST_B, AfterCommit::Archive, now).expect("rerun");
        assert!(!d.file("a.csv").exists());
        assert_eq!(names_in(&day), ["a.bbbbbbbbbbbbbbbb.csv", "a.csv"]);
        assert_eq!(fs::read(&by_digest).expect("b"), b"y");
    }

    #[test]
    fn archive_refuses_symlinked_or_non_directory_folders() {
        let (t, d) = dirs();
        let now = at("2026-11-25T10:00:00Z");
        let elsewhere = t.path().join("elsewhere");
        fs::create_dir(&elsewhere).expect("mkdir");
        fs::write(d.file("a.csv"), b"x").expect("write");

        symlink(&elsewhere, d.archive()).expect("symlink");
        let e = finish_loaded(&d, "a.csv", DIGEST_A, AfterCommit::Archive, now)
            .expect_err("archive symlink refused");
        assert!(e.to_string().contains("symbolic link"), "{e}");
        assert!(names_in(&elsewhere).is_empty());
        assert!(d.file("a.csv").exists());
        assert!(prune_archive(&d, Duration::from_secs(1), SystemTime::now()).is_err());
        assert!(archived_files(&d).is_err());

        // A real archive/ with a symlinked day folder.
        fs::remove_file(d.archive()).expect("rm");
        fs::create_dir(d.archive()).expect("mkdir");
        symlink(&elsewhere, d.archive().join("2026-11-25")).expect("symlink");
        finish_loaded(&d, "a.csv", DIGEST_A, AfterCommit::Archive, now)
            .expect_err("day symlink refused");
        assert!(names_in(&elsewhere).is_empty());

        // archive/ is a regular file.
        fs::remove_dir_all(d.archive()).expect("rm");
        fs::write(d.archive(), b"").expect("write");
        let e = finish_loaded(&d, "a.csv", DIGEST_A, AfterCommit::Archive, now)
            .expect_err("file refused");
        assert!(e.to_string().contains("not a directory"), "{e}");
        assert!(d.file("a.csv").exists());

        // A file already gone is settled whatever the folders look like.
        fs::remove_file(d.file("a.csv")).expect("rm");
        finish_loaded(&d, "a.csv", DIGEST_A, AfterCommit::Archive, now).expect("gone is ok");
    }

    #[test]
    fn delete_and_keep() {
        let (_t, d) = dirs();
        fs::write(d.file("a.csv"), b"x").expect("write");
        fs::write(d.file("b.csv"), b"x").expect("write");
        let now = Utc::now();
        finish_loaded(&d, "a.csv", "", AfterCommit::Delete, now).expect("delete");
        finish_loaded(&d, "b.csv", "", AfterCommit::Keep, now).expect("keep");
        assert!(!d.file("a.csv").exists());
        assert!(d.file("b.csv").exists());
        finish_loaded(&d, "a.csv", "", AfterCommit::Delete, now).expect("idempotent");
        finish_loaded(&d, "../b.csv", "", AfterCommit::Delete, now).expect_err("not a name");
    }

    #[test]
    fn failed_file_gets_reason_note() {
        let (_t, d) = dirs();
        fs::write(d.file("bad.csv"), b"\0\0").expect("write");
        set_aside_failed(
            &d,
            "bad.csv",
            DIGEST_A,
            "binary_file",
            "file holds NUL bytes",
        )
        .expect("set aside");
        assert!(d.failed().join("bad.csv").exists());
        assert!(!d.file("bad.csv").exists());
        let note = fs::read_to_string(d.failed().join("bad.csv.reason.txt")).expect("note");
        assert!(note.contains("binary_file") && note.contains("NUL"));
        set_aside_failed(&d, "bad.csv", DIGEST_A, "binary_file", "again").expect("idempotent");
    }

    #[test]
    fn failed_never_overwrites_and_notes_follow_the_final_name() {
        let (_t, d) = dirs();
        fs::write(d.file("bad.csv"), b"one").expect("write");
        set_aside_failed(&d, "bad.csv", DIGEST_A, "binary_file", "first").expect("first");
        fs::write(d.file("bad.csv"), b"two").expect("write");
        set_aside_failed(&d, "bad.csv", DIGEST_B, "database_rejected", "second").expect("2nd");
        let failed = d.failed();
        assert_eq!(
            names_in(&failed),
            [
                "bad.bbbbbbbbbbbbbbbb.csv",
                "bad.bbbbbbbbbbbbbbbb.csv.reason.txt",
                "bad.csv",
                "bad.csv.reason.txt"
            ]
        );
        assert_eq!(fs::read(failed.join("bad.csv")).expect("one"), b"one");
        let first = fs::read_to_string(failed.join("bad.csv.reason.txt")).expect("note");
        assert!(first.contains("first"), "{first}");
        let second =
            fs::read_to_string(failed.join("bad.bbbbbbbbbbbbbbbb.csv.reason.txt")).expect("n");
        assert!(second.contains("database_rejected"), "{second}");
    }

    #[test]
    fn failed_refuses_a_symlinked_folder() {
        let (t, d) = dirs();
        let elsewhere = t.path().join("elsewhere");
        fs::create_dir(&elsewhere).expect("mkdir");
        symlink(&elsewhere, d.failed()).expect("symlink");
        fs::write(d.file("bad.csv"), b"x").expect("write");
        let e = set_aside_failed(&d, "bad.csv", DIGEST_A, "binary_file", "m").expect_err("refused");
        assert!(e.to_string().contains("symbolic link"), "{e}");
        assert!(names_in(&elsewhere).is_empty());
        assert!(d.file("bad.csv").exists());
    }

    #[test]
    fn reason_note_symlink_does_not_redirect_the_write() {
        let (t, d) = dirs();
        let victim = t.path().join("victim.txt");
        fs::write(&victim, b"precious").expect("write");
        fs::create_dir(d.failed()).expect("mkdir");
        symlink(&victim, d.failed().join("x.csv.reason.txt")).expect("symlink");
        fs::write(d.file("x.csv"), b"x").expect("write");
        set_aside_failed(&d, "x.csv", DIGEST_A, "binary_file", "m").expect("set aside");
        assert_eq!(fs::read(&victim).expect("victim"), b"precious");
        let note = d.failed().join("x.csv.reason.txt");
        assert!(!fs::symlink_metadata(&note).expect("note").is_symlink());
        assert!(
            fs::read_to_string(&note)
                .expect("note")
                .contains("binary_file")
        );
    }

    #[test]
    fn archived_files_are_listed_and_relanded_without_overwriting() {
        let (t, d) = dirs();
        let day1 = d.archive().join("2026-11-24");
        let day2 = d.archive().join("2026-11-25");
        for dir in [&day1, &day2, &d.archive().join("not-a-day")] {
            fs::create_dir_all(dir).expect("mkdir");
        }
        fs::write(day1.join("b.csv"), b"b").expect("write");
        fs::write(day2.join("a.csv"), b"a").expect("write");
        fs::write(day2.join("c.csv"), b"archived c").expect("write");
        fs::write(day2.join(".tmp.csv"), b"x").expect("write");
        fs::write(d.archive().join("not-a-day/z.csv"), b"z").expect("write");
        fs::write(t.path().join("outside.csv"), b"o").expect("write");
        symlink(t.path().join("outside.csv"), day2.join("link.csv")).expect("symlink");

        let files = archived_files(&d).expect("list");
        let names: Vec<&str> = files.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(names, ["b.csv", "a.csv", "c.csv"]);
        assert_eq!(files[0].path, day1.join("b.csv"));

        fs::write(d.file("c.csv"), b"new c").expect("write");
        assert_eq!(reland(&d, &files[0]).expect("b"), Some("b.csv".to_string()));
        assert_eq!(reland(&d, &files[2]).expect("c"), None);
        assert_eq!(fs::read(d.file("b.csv")).expect("b"), b"b");
        assert!(!day1.join("b.csv").exists());
        assert_eq!(fs::read(d.file("c.csv")).expect("c"), b"new c");
        assert_eq!(fs::read(day2.join("c.csv")).expect("c"), b"archived c");
        // Already moved: nothing to do.
        assert_eq!(reland(&d, &files[0]).expect("again"), None);

        // A crash after the link, before the unlink: the retry completes the move.
        fs::hard_link(day2.join("a.csv"), d.file("a.csv")).expect("link");
        assert_eq!(reland(&d, &files[1]).expect("a"), Some("a.csv".to_string()));
        assert!(!day2.join("a.csv").exists());
        assert_eq!(fs::read(d.file("a.csv")).expect("a"), b"a");
    }

    #[test]
    fn prune_removes_only_expired_days() {
        let (t, d) = dirs();
        for day in ["2026-11-20", "2026-11-24", "2026-11-25", "not-a-date"] {
            fs::create_dir_all(d.archive().join(day)).expect("mkdir");
        }
        // A symlinked day folder is not followed into.
        let elsewhere = t.path().join("elsewhere");
        fs::create_dir(&elsewhere).expect("mkdir");
        fs::write(elsewhere.join("keep.csv"), b"x").expect("write");
        symlink(&elsewhere, d.archive().join("2026-11-01")).expect("symlink");
        let now: SystemTime = at("2026-11-25T12:00:00Z").into();
        let removed = prune_archive(&d, Duration::from_secs(24 * 3600), now).expect("prune");
        assert_eq!(removed, 1);
        assert!(!d.archive().join("2026-11-20").exists());
        assert!(d.archive().join("2026-11-24").exists());
        assert!(d.archive().join("not-a-date").exists());
        assert!(elsewhere.join("keep.csv").exists());
        assert_eq!(prune_archive(&d, Duration::ZERO, now).expect("prune"), 0);
    }
}
