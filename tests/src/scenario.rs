//! Building blocks of the worker integration tests: a generated dataset with its
//! expectation, a feeder that releases files into the landing zone over time, and
//! waiting for the ledger to settle.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::procs::generate;
use crate::verify::{self, Expected, ManifestFile};

/// A generated dataset in a staging directory (not yet visible to workers).
pub struct Dataset {
    pub staging: PathBuf,
    pub manifest: Vec<ManifestFile>,
    pub expected: Expected,
}

impl Dataset {
    /// Generates `files` files of `rows_per_file` rows with the given bad-row share.
    pub fn generate(
        root: &Path,
        files: u64,
        rows_per_file: u64,
        bad_share: f64,
        seed: u64,
    ) -> Result<Dataset> {
        Dataset::generate_with(root, files, rows_per_file, bad_share, seed, &[])
    }

    /// [`Dataset::generate`] with extra generator flags (e.g. `--messy-row-share`).
    pub fn generate_with(
        root: &Path,
        files: u64,
        rows_per_file: u64,
        bad_share: f64,
        seed: u64,
        extra: &[&str],
    ) -> Result<Dataset> {
        let staging = root.join("staging");
        std::fs::create_dir_all(&staging)?;
        let manifest_path = root.join("manifest.jsonl");
        let mut args: Vec<String> = vec![
            "--landing-dir".into(),
            staging.display().to_string(),
            "--manifest".into(),
            manifest_path.display().to_string(),
            "--events-per-second".into(),
            "0".into(),
            "--rows-per-file".into(),
            rows_per_file.to_string(),
            "--total-files".into(),
            files.to_string(),
            "--bad-row-share".into(),
            bad_share.to_string(),
            "--seed".into(),
            seed.to_string(),
            "--start-time".into(),
            "2026-11-25T00:00:00Z".into(),
            // Test data in a staging directory: a machine crash is not among the
            // failures simulated, and 10,000 fsyncs would dominate the test time.
            "--no-fsync".into(),
            "--max-pending-files".into(),
            (files + 10).to_string(),
        ];
        args.extend(extra.iter().map(|a| a.to_string()));
        generate(&args)?;
        let manifest = verify::read_manifest(&manifest_path)?;
        if manifest.len() as u64 != files {
            bail!("generator wrote {} files, expected {files}", manifest.len());
        }
        let expected = verify::expected(&manifest, &staging)?;
        Ok(Dataset {
            staging,
            manifest,
            expected,
        })
    }

    /// Moves files `range` of the dataset into `landing` (rename: atomic, same file system).
    pub fn release(&self, landing: &Path, range: std::ops::Range<usize>) -> Result<()> {
        for m in &self.manifest[range] {
            std::fs::rename(self.staging.join(&m.file), landing.join(&m.file))
                .with_context(|| format!("moving {} into the landing zone", m.file))?;
        }
        Ok(())
    }
}

/// Waits until the ledger holds `files` files and the landing zone has no landing file left.
pub async fn wait_settled(
    client: &tokio_postgres::Client,
    landing: &Path,
    files: usize,
    timeout: Duration,
    mut check: impl FnMut() -> Result<()>,
) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        check()?;
        let in_ledger: i64 = match client
            .query_one("SELECT count(*) FROM sluice_files", &[])
            .await
        {
            Ok(row) => row.get(0),
            Err(_) => -1, // tables not created yet, or the server is restarting
        };
        let left = std::fs::read_dir(landing)?
            .flatten()
            .filter(|e| {
                sluice_core::landing::is_landing_file_name(&e.file_name().to_string_lossy())
            })
            .count();
        if in_ledger == files as i64 && left == 0 {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "not settled after {timeout:?}: {in_ledger} of {files} files in the ledger, {left} left in the landing zone"
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until nothing is left over ([`verify::check_no_leftovers`] and
/// [`verify::check_landing_drained`] both pass): right after [`wait_settled`] a worker may
/// still be recording a commit (its plan not yet deleted). Fails with the last finding.
pub async fn wait_no_leftovers(
    client: &tokio_postgres::Client,
    landing: &Path,
    checkpoint_dirs: &[PathBuf],
    timeout: Duration,
) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        let found = match verify::check_no_leftovers(client, checkpoint_dirs).await {
            Ok(()) => verify::check_landing_drained(landing),
            Err(e) => Err(e),
        };
        match found {
            Ok(()) => return Ok(()),
            Err(e) if Instant::now() > deadline => {
                return Err(e.context(format!("still left over after {timeout:?}")));
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

/// Waits until the ledger holds `files` files (benchmarks: polled every 2 ms so that the
/// time measured is the time to the last commit).
pub async fn wait_ledger_files(
    client: &tokio_postgres::Client,
    files: i64,
    timeout: Duration,
) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        let done: i64 = client
            .query_one("SELECT count(*) FROM sluice_files", &[])
            .await?
            .get(0);
        if done == files {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("not finished within {timeout:?} ({done}/{files} files)");
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// Writes a landing file as producers must: a dot-temp name in the same directory, then
/// a rename, so a worker never sees it half-written. Panics on I/O errors (tests only).
pub fn land(dir: &Path, name: &str, bytes: impl AsRef<[u8]>) {
    let temp = dir.join(format!(".{name}.tmp"));
    std::fs::write(&temp, bytes).expect("write landing file");
    std::fs::rename(&temp, dir.join(name)).expect("rename landing file");
}
