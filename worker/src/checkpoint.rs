//! The worker's checkpoint on its persistent volume.
//!
//! Before a batch is processed its plan (batch id + files) is written to
//! `plans/<batch_id>.json`; after PostgreSQL commits it, `state.json` records the commit
//! and the plan is removed. Every write is temp file → rename, so after a process crash a
//! file is either wholly there or absent. `state.json` is also fsync'd (file and
//! directory) when the worker opens the checkpoint, after a commit at most once a
//! second (`STATE_SYNC_INTERVAL`), and on a graceful stop; plans are not: a plan only names the batch to look
//! up on restart, and the ledger in PostgreSQL decides what is loaded, so a plan lost or
//! emptied by a power cut costs nothing but a fresh look at the files (two fsyncs of
//! about 4 ms each were on the path of every file). On restart the remaining plans are
//! the batches whose fate must be settled (see docs/delivery-guarantee.md).

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use thiserror::Error;
use uuid::Uuid;

#[derive(Debug, Error)]
pub enum CheckpointError {
    #[error("checkpoint directory {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("checkpoint file {path} is not valid JSON: {source}")]
    Corrupt {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error(
        "checkpoint directory {path} belongs to worker {found:?}, not {expected:?}: give each worker its own checkpoint directory"
    )]
    WrongOwner {
        path: PathBuf,
        found: String,
        expected: String,
    },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> CheckpointError + '_ {
    move |source| CheckpointError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// One file of a planned batch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlannedFile {
    pub name: String,
    pub size: u64,
}

/// A batch decided on but not yet known to be committed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    pub batch_id: Uuid,
    pub worker_id: String,
    pub created_at: DateTime<Utc>,
    pub files: Vec<PlannedFile>,
}

/// What the worker has committed so far, for operators reading the volume.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    pub worker_id: String,
    pub last_committed_batch: Option<Uuid>,
    pub last_committed_at: Option<DateTime<Utc>>,
    pub batches_committed: u64,
}

/// The checkpoint directory of one worker.
#[derive(Debug)]
pub struct Checkpoint {
    dir: PathBuf,
    plans: PathBuf,
    worker_id: String,
    state: State,
    /// When `state.json` was last fsync'd.
    state_synced: Option<std::time::Instant>,
    /// `state.json` was rewritten since its last fsync.
    state_unsynced: bool,
}

/// `state.json` after a commit is fsync'd at most this often: it only serves to notice
/// a database restored behind the worker, and an fsync per batch sat on every file's path.
const STATE_SYNC_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

impl Checkpoint {
    /// Opens (creating if needed) the checkpoint directory for `worker_id`, removing
    /// temporary files a crash may have left. Refuses a directory of another worker, as
    /// two workers sharing one checkpoint would settle each other's batches.
    pub fn open(dir: &Path, worker_id: &str) -> Result<Checkpoint, CheckpointError> {
        let plans = dir.join("plans");
        fs::create_dir_all(&plans).map_err(io_err(&plans))?;
        for d in [dir, plans.as_path()] {
            for entry in fs::read_dir(d).map_err(io_err(d))? {
                let entry = entry.map_err(io_err(d))?;
                if entry.file_name().to_string_lossy().ends_with(".tmp") {
                    let _ = fs::remove_file(entry.path());
                }
            }
        }
        let state_path = dir.join("state.json");
        let state = match fs::read(&state_path) {
            Ok(bytes) => serde_json::from_slice::<State>(&bytes).map_err(|source| {
                CheckpointError::Corrupt {
                    path: state_path.clone(),
                    source,
                }
            })?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => State {
                worker_id: worker_id.to_string(),
                ..State::default()
            },
            Err(e) => return Err(io_err(&state_path)(e)),
        };
        if state.worker_id != worker_id {
            return Err(CheckpointError::WrongOwner {
                path: dir.to_path_buf(),
                found: state.worker_id,
                expected: worker_id.to_string(),
            });
        }
        let mut checkpoint = Checkpoint {
            dir: dir.to_path_buf(),
            plans,
            worker_id: worker_id.to_string(),
            state,
            state_synced: None,
            state_unsynced: false,
        };
        // Claim the directory at once, so a second worker pointed at it is refused.
        checkpoint.write_state()?;
        Ok(checkpoint)
    }

    pub fn state(&self) -> &State {
        &self.state
    }

    /// Records a plan (not fsync'd: see the module documentation).
    pub fn write_plan(&self, plan: &Plan) -> Result<(), CheckpointError> {
        Checkpoint::write_plan_at(&self.dir, plan)
    }

    /// [`Checkpoint::write_plan`] for a task that does not own the checkpoint (the
    /// planner writes plans; the committer settles them).
    pub fn write_plan_at(dir: &Path, plan: &Plan) -> Result<(), CheckpointError> {
        let path = plan_path(dir, plan.batch_id);
        let bytes = serde_json::to_vec_pretty(plan).map_err(|source| CheckpointError::Corrupt {
            path: path.clone(),
            source,
        })?;
        write_replacing(&path, &bytes)
    }

    /// Plans left by an earlier run, oldest first. A plan file that cannot be parsed
    /// (damaged outside Sluice's control) is renamed `*.corrupt` and skipped: the ledger
    /// in PostgreSQL, not the plan, decides what is loaded, so nothing is lost.
    pub fn pending_plans(&self) -> Result<Vec<Plan>, CheckpointError> {
        let mut plans = Vec::new();
        for entry in fs::read_dir(&self.plans).map_err(io_err(&self.plans))? {
            let path = entry.map_err(io_err(&self.plans))?.path();
            if path.extension().and_then(|e| e.to_str()) != Some("json") {
                continue;
            }
            let bytes = fs::read(&path).map_err(io_err(&path))?;
            match serde_json::from_slice::<Plan>(&bytes) {
                Ok(plan) => plans.push(plan),
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "unreadable plan set aside");
                    let _ = fs::rename(&path, path.with_extension("corrupt"));
                }
            }
        }
        plans.sort_by_key(|p| p.created_at);
        Ok(plans)
    }

    /// Records that `plan` committed in PostgreSQL, then forgets the plan.
    pub fn record_commit(&mut self, plan: &Plan) -> Result<(), CheckpointError> {
        self.state.last_committed_batch = Some(plan.batch_id);
        self.state.last_committed_at = Some(Utc::now());
        self.state.batches_committed += 1;
        let due = self
            .state_synced
            .is_none_or(|at| at.elapsed() >= STATE_SYNC_INTERVAL);
        if due {
            self.write_state()?;
        } else {
            self.write_state_unsynced()?;
        }
        self.remove_plan(plan.batch_id)
    }

    /// fsyncs `state.json` if a commit was recorded since its last fsync; returns whether
    /// it wrote. Called on a graceful stop, so that a planned restart (or a node drained
    /// for maintenance) never leaves the last second of commits only in the page cache.
    pub fn sync(&mut self) -> Result<bool, CheckpointError> {
        if !self.state_unsynced {
            return Ok(false);
        }
        self.write_state()?;
        Ok(true)
    }

    /// Forgets the last committed batch after the database was found without it
    /// (restore behind the checkpoint), so that the next start does not report it again.
    pub fn forget_last_commit(&mut self) -> Result<(), CheckpointError> {
        self.state.last_committed_batch = None;
        self.write_state()
    }

    /// Forgets a plan without a commit (its files were all taken by other workers).
    pub fn remove_plan(&self, batch_id: Uuid) -> Result<(), CheckpointError> {
        Checkpoint::remove_plan_at(&self.dir, batch_id)
    }

    /// Removes a plan (not fsync'd: a plan that comes back after a power cut is looked up
    /// and found settled).
    pub fn remove_plan_at(dir: &Path, batch_id: Uuid) -> Result<(), CheckpointError> {
        let path = plan_path(dir, batch_id);
        match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_err(&path)(e)),
        }
    }

    /// Writes `state.json` durably (fsync'd).
    fn write_state(&mut self) -> Result<(), CheckpointError> {
        let (path, bytes) = self.state_bytes()?;
        write_atomically(&path, &bytes)?;
        self.state_synced = Some(std::time::Instant::now());
        self.state_unsynced = false;
        Ok(())
    }

    /// Writes `state.json` without an fsync (survives a process crash, not a power cut).
    fn write_state_unsynced(&mut self) -> Result<(), CheckpointError> {
        let (path, bytes) = self.state_bytes()?;
        write_replacing(&path, &bytes)?;
        self.state_unsynced = true;
        Ok(())
    }

    fn state_bytes(&self) -> Result<(PathBuf, Vec<u8>), CheckpointError> {
        let path = self.dir.join("state.json");
        let mut state = self.state.clone();
        state.worker_id = self.worker_id.clone();
        let bytes =
            serde_json::to_vec_pretty(&state).map_err(|source| CheckpointError::Corrupt {
                path: path.clone(),
                source,
            })?;
        Ok((path, bytes))
    }
}

fn plan_path(dir: &Path, batch_id: Uuid) -> PathBuf {
    dir.join("plans").join(format!("{batch_id}.json"))
}

/// Writes `bytes` to `path` so that after a process crash the file holds either its old
/// or its new content (temp file, rename); a power cut may leave it empty or missing.
fn write_replacing(path: &Path, bytes: &[u8]) -> Result<(), CheckpointError> {
    let tmp = temp_path(path);
    fs::write(&tmp, bytes).map_err(io_err(&tmp))?;
    fs::rename(&tmp, path).map_err(io_err(path))
}

fn temp_path(path: &Path) -> PathBuf {
    let dir = path.parent().unwrap_or(Path::new("."));
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    dir.join(format!(".{file_name}.tmp"))
}

/// Writes `bytes` to `path` so that after any crash the file holds either its old or its
/// new content: temp file, fsync, rename, fsync of the directory.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), CheckpointError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = temp_path(path);
    let mut file = File::create(&tmp).map_err(io_err(&tmp))?;
    file.write_all(bytes).map_err(io_err(&tmp))?;
    file.sync_all().map_err(io_err(&tmp))?;
    drop(file);
    fs::rename(&tmp, path).map_err(io_err(path))?;
    sync_dir(dir)
}

/// fsyncs a directory so that a rename or removal inside it survives a power loss.
pub fn sync_dir(dir: &Path) -> Result<(), CheckpointError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(worker: &str, n: usize) -> Plan {
        Plan {
            batch_id: Uuid::new_v4(),
            worker_id: worker.into(),
            created_at: Utc::now(),
            files: (0..n)
                .map(|i| PlannedFile {
                    name: format!("f{i}.csv"),
                    size: i as u64,
                })
                .collect(),
        }
    }

    #[test]
    fn plan_survives_reopen_until_committed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = plan("w-0", 3);
        {
            let cp = Checkpoint::open(dir.path(), "w-0").expect("open");
            cp.write_plan(&p).expect("write");
        }
        let mut cp = Checkpoint::open(dir.path(), "w-0").expect("reopen");
        assert_eq!(cp.pending_plans().expect("list"), vec![p.clone()]);
        cp.record_commit(&p).expect("commit");
        assert!(cp.pending_plans().expect("list").is_empty());
        let cp = Checkpoint::open(dir.path(), "w-0").expect("reopen");
        assert_eq!(cp.state().last_committed_batch, Some(p.batch_id));
        assert_eq!(cp.state().batches_committed, 1);
    }

    #[test]
    fn a_graceful_stop_syncs_only_what_is_unsynced() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut cp = Checkpoint::open(dir.path(), "w-0").expect("open");
        assert!(!cp.sync().expect("sync"), "open already synced the state");
        let (first, second) = (plan("w-0", 1), plan("w-0", 1));
        // Pretend the last fsync was just now, however slow this machine is: the commits
        // below fall within the interval, written but not synced.
        cp.state_synced = Some(std::time::Instant::now() + STATE_SYNC_INTERVAL * 60);
        cp.record_commit(&first).expect("commit");
        cp.record_commit(&second).expect("commit");
        assert!(
            cp.sync().expect("sync"),
            "a recorded commit must be synced on stop"
        );
        assert!(!cp.sync().expect("sync"), "nothing new to sync");
        let cp = Checkpoint::open(dir.path(), "w-0").expect("reopen");
        assert_eq!(cp.state().last_committed_batch, Some(second.batch_id));
    }

    #[test]
    fn another_workers_directory_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        Checkpoint::open(dir.path(), "w-0").expect("open");
        let err = Checkpoint::open(dir.path(), "w-1").expect_err("must refuse");
        assert!(
            err.to_string().contains("belongs to worker \"w-0\""),
            "{err}"
        );
    }

    #[test]
    fn leftover_temp_files_and_corrupt_plans_are_cleared() {
        let dir = tempfile::tempdir().expect("tempdir");
        Checkpoint::open(dir.path(), "w").expect("open");
        fs::write(dir.path().join("plans/.x.json.tmp"), b"partial").expect("write");
        fs::write(dir.path().join("plans/broken.json"), b"{not json").expect("write");
        let cp = Checkpoint::open(dir.path(), "w").expect("reopen");
        assert!(cp.pending_plans().expect("list").is_empty());
        assert!(!dir.path().join("plans/.x.json.tmp").exists());
        assert!(dir.path().join("plans/broken.corrupt").exists());
    }

    #[test]
    fn plans_come_back_oldest_first() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cp = Checkpoint::open(dir.path(), "w").expect("open");
        let mut a = plan("w", 1);
        let mut b = plan("w", 1);
        a.created_at = Utc::now();
        b.created_at = a.created_at - chrono::Duration::seconds(5);
        cp.write_plan(&a).expect("write");
        cp.write_plan(&b).expect("write");
        let ids: Vec<_> = cp
            .pending_plans()
            .expect("list")
            .iter()
            .map(|p| p.batch_id)
            .collect();
        assert_eq!(ids, vec![b.batch_id, a.batch_id]);
    }
}
