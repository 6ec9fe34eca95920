//! Discovery of landing files: a periodic listing (works on any file system, including
//! network ones without inotify) woken early by file-system notifications when the
//! platform provides them.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use notify::{EventKind, RecommendedWatcher, RecursiveMode, Watcher};
use sluice_core::landing::{ARCHIVE_DIR, FAILED_DIR};
use tokio::sync::Notify;

use crate::batch::Candidate;

/// The rule for landing file names lives in `sluice_core::landing` (shared with the
/// generator); re-exported here for the worker's callers.
pub use sluice_core::landing::is_landing_file_name;

/// Lists the landing files, oldest first (by modification time, then name). Only regular
/// files count: the entry's metadata is an lstat (it does not follow symbolic links), so
/// a symlink named `*.csv` is left alone like a directory.
pub fn list_landing(dir: &Path) -> io::Result<Vec<Candidate>> {
    let mut files = Vec::new();
    for entry in fs::read_dir(dir)? {
        let entry = match entry {
            Ok(e) => e,
            Err(e) => {
                tracing::debug!(error = %e, "skipping unreadable directory entry");
                continue;
            }
        };
        let name = match entry.file_name().into_string() {
            Ok(n) if is_landing_file_name(&n) => n,
            _ => continue,
        };
        // A file can vanish between listing and stat (archived by another worker).
        // `DirEntry::metadata` does not follow symbolic links.
        let meta = match entry.metadata() {
            Ok(m) if m.is_file() => m,
            _ => continue,
        };
        files.push(Candidate {
            name,
            size: meta.len(),
            modified: meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
        });
    }
    files.sort_by(|a, b| {
        a.modified
            .cmp(&b.modified)
            .then_with(|| a.name.cmp(&b.name))
    });
    Ok(files)
}

/// Keeps a file-system watch on the landing directory; each relevant event wakes the
/// returned [`Notify`]. Without inotify the watcher is absent and the periodic listing
/// alone finds files.
pub struct DirWatch {
    _watcher: Option<RecommendedWatcher>,
    pub wake: Arc<Notify>,
}

impl DirWatch {
    pub fn start(dir: &Path) -> DirWatch {
        let wake = Arc::new(Notify::new());
        let notify_handle = wake.clone();
        let watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
            if let Ok(event) = res {
                let relevant = matches!(
                    event.kind,
                    EventKind::Create(_) | EventKind::Modify(notify::event::ModifyKind::Name(_))
                ) && event.paths.iter().any(|p| {
                    p.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(is_landing_file_name)
                });
                if relevant {
                    notify_handle.notify_one();
                }
            }
        })
        .and_then(|mut w| w.watch(dir, RecursiveMode::NonRecursive).map(|()| w));
        let watcher = match watcher {
            Ok(w) => Some(w),
            Err(e) => {
                tracing::warn!(dir = %dir.display(), error = %e,
                    "file-system notifications unavailable; relying on periodic listing");
                None
            }
        };
        DirWatch {
            _watcher: watcher,
            wake,
        }
    }
}

/// Where things go inside the landing directory.
#[derive(Debug, Clone)]
pub struct LandingDirs {
    pub landing: PathBuf,
}

impl LandingDirs {
    pub fn file(&self, name: &str) -> PathBuf {
        self.landing.join(name)
    }
    pub fn archive(&self) -> PathBuf {
        self.landing.join(ARCHIVE_DIR)
    }
    pub fn failed(&self) -> PathBuf {
        self.landing.join(FAILED_DIR)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_visible_csv_names_are_landing_files() {
        assert!(is_landing_file_name("events-1.csv"));
        assert!(!is_landing_file_name(".events-1.csv.tmp"));
        assert!(!is_landing_file_name(".events-1.csv"));
        assert!(!is_landing_file_name("events-1.csv.tmp"));
        assert!(!is_landing_file_name("notes.txt"));
        assert!(!is_landing_file_name(".csv"));
    }

    #[test]
    fn listing_skips_temp_files_subdirectories_and_symlinks() {
        let dir = tempfile::tempdir().expect("tempdir");
        fs::write(dir.path().join("b.csv"), b"12345").expect("write");
        fs::write(dir.path().join(".a.csv.tmp"), b"x").expect("write");
        fs::create_dir(dir.path().join("archive.csv")).expect("mkdir");
        fs::write(dir.path().join("readme.txt"), b"x").expect("write");
        std::os::unix::fs::symlink(dir.path().join("b.csv"), dir.path().join("c.csv"))
            .expect("symlink");
        let files = list_landing(dir.path()).expect("list");
        assert_eq!(files.len(), 1);
        assert_eq!(files[0].name, "b.csv");
        assert_eq!(files[0].size, 5);
    }

    #[tokio::test]
    async fn watch_wakes_on_rename_into_place() {
        let dir = tempfile::tempdir().expect("tempdir");
        let watch = DirWatch::start(dir.path());
        let tmp = dir.path().join(".x.tmp");
        fs::write(&tmp, b"data").expect("write");
        fs::rename(&tmp, dir.path().join("x.csv")).expect("rename");
        tokio::time::timeout(std::time::Duration::from_secs(5), watch.wake.notified())
            .await
            .expect("notification within 5 s");
    }
}
