//! Discovery of landing files: a periodic listing (works on any file system, including
//! network ones without inotify) woken early by file-system notifications when the
//! platform provides them.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

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

/// `candidates` as they are now in `dir`: files gone (or no longer regular files) are
/// dropped, sizes and modification times renewed.
pub fn restat(dir: &Path, candidates: Vec<Candidate>) -> Vec<Candidate> {
    candidates
        .into_iter()
        .filter_map(|c| {
            let meta = fs::symlink_metadata(dir.join(&c.name)).ok()?;
            meta.is_file().then(|| Candidate {
                size: meta.len(),
                modified: meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
                name: c.name,
            })
        })
        .collect()
}

/// How many times its own duration a kept listing is used before it is listed again, at
/// the least: listing then takes at most about 1/20 of the planner's time.
const RELIST_AFTER_TIMES_COST: u32 = 20;

/// A landing listing kept between planner passes. Listing costs an lstat per file, so
/// listing before every batch made a backlog of n files cost O(n²) to drain (100,000
/// files: 391 batches, each listing up to 100,000 files). The planner takes its batches
/// from the kept listing, front to back, and lists again when the rest yields no batch,
/// after it waited (new files may have landed), or once the listing is stale.
#[derive(Debug)]
pub struct KeptListing {
    files: Vec<Candidate>,
    /// Files before this index were taken into a batch or passed over.
    next: usize,
    listed_at: Instant,
    cost: Duration,
}

impl KeptListing {
    /// A fresh listing, made at `listed_at`, which took `cost`.
    pub fn new(files: Vec<Candidate>, listed_at: Instant, cost: Duration) -> KeptListing {
        KeptListing {
            files,
            next: 0,
            listed_at,
            cost,
        }
    }

    /// The whole listing, as listed.
    pub fn all(&self) -> &[Candidate] {
        &self.files
    }

    /// The files not yet taken, oldest first.
    pub fn remaining(&self) -> &[Candidate] {
        &self.files[self.next..]
    }

    /// Drops the remaining files up to and including `last` (the last file taken into a
    /// batch; files skipped before it are looked at again after the next listing).
    pub fn taken_through(&mut self, last: &str) {
        if let Some(i) = self.remaining().iter().position(|c| c.name == last) {
            self.next += i + 1;
        }
    }

    /// True once the listing is older than `min_age` and than 20 times its own cost.
    pub fn is_stale(&self, now: Instant, min_age: Duration) -> bool {
        let max_age = min_age.max(self.cost * RELIST_AFTER_TIMES_COST);
        now.saturating_duration_since(self.listed_at) >= max_age
    }
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
    fn a_kept_listing_hands_out_files_front_to_back_and_goes_stale() {
        let file = |name: &str| Candidate {
            name: name.into(),
            size: 1,
            modified: SystemTime::UNIX_EPOCH,
        };
        let at = Instant::now();
        let mut kept = KeptListing::new(
            vec![file("a.csv"), file("b.csv"), file("c.csv")],
            at,
            Duration::from_millis(100),
        );
        kept.taken_through("b.csv");
        assert_eq!(kept.remaining(), &[file("c.csv")]);
        kept.taken_through("gone.csv");
        assert_eq!(kept.remaining().len(), 1);
        assert_eq!(kept.all().len(), 3);
        kept.taken_through("c.csv");
        assert!(kept.remaining().is_empty());
        // Stale after the poll interval, or after 20 times the listing's cost if longer.
        let second = Duration::from_secs(1);
        assert!(!kept.is_stale(at + Duration::from_millis(1500), second));
        assert!(kept.is_stale(at + Duration::from_secs(2), second));
        assert!(kept.is_stale(at + Duration::from_secs(3), Duration::from_secs(3)));
    }

    #[test]
    fn restat_drops_files_gone_and_renews_sizes() {
        let dir = tempfile::tempdir().expect("tempdir");
        fs::write(dir.path().join("a.csv"), b"12345").expect("write");
        let stale = |name: &str| Candidate {
            name: name.into(),
            size: 1,
            modified: SystemTime::UNIX_EPOCH,
        };
        let now = restat(dir.path(), vec![stale("a.csv"), stale("gone.csv")]);
        assert_eq!(now.len(), 1);
        assert_eq!((now[0].name.as_str(), now[0].size), ("a.csv", 5));
    }

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
