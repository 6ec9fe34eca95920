//! Locating and running the workspace binaries (sluice-generator, sluice-worker, ...).
//!
//! Integration tests in this package cannot use `CARGO_BIN_EXE_*` (the binaries belong
//! to other packages), so they look next to the test executable:
//! `target/<profile>/deps/<test>-<hash>` → `target/<profile>/<name>`. Cargo does not
//! build them for `cargo test -p sluice-tests`; build them first with
//! `cargo build --workspace --bins` (scripts/test does). `SLUICE_BIN_DIR` overrides the
//! directory.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Generator binary name.
pub const GENERATOR: &str = "sluice-generator";
/// Worker binary name.
pub const WORKER: &str = "sluice-worker";
/// Operator binary name.
pub const OPERATOR: &str = "sluice-operator";

/// Environment variable naming the directory holding the binaries.
pub const BIN_DIR_ENV: &str = "SLUICE_BIN_DIR";

/// The directory expected to hold the workspace binaries: `$SLUICE_BIN_DIR`, else the
/// `target/<profile>` directory of the running test executable.
pub fn bin_dir() -> Result<PathBuf, String> {
    if let Some(dir) = std::env::var_os(BIN_DIR_ENV) {
        return Ok(PathBuf::from(dir));
    }
    let exe =
        std::env::current_exe().map_err(|e| format!("cannot locate the test executable: {e}"))?;
    let mut dir = exe
        .parent()
        .ok_or_else(|| format!("test executable {} has no parent", exe.display()))?;
    // Test and example executables live one level below the profile directory.
    if matches!(
        dir.file_name().and_then(|n| n.to_str()),
        Some("deps" | "examples")
    ) {
        dir = dir.parent().unwrap_or(dir);
    }
    Ok(dir.to_path_buf())
}

/// Path of workspace binary `name`, or why it is not there.
pub fn try_bin_path(name: &str) -> Result<PathBuf, String> {
    let dir = bin_dir()?;
    let path = dir.join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    if is_executable(&path) {
        Ok(path)
    } else {
        Err(format!(
            "binary {name} not built: run `cargo build --workspace --bins` first (scripts/test does); looked for {}{}",
            path.display(),
            if std::env::var_os(BIN_DIR_ENV).is_some() {
                format!(" (from ${BIN_DIR_ENV})")
            } else {
                String::new()
            }
        ))
    }
}

/// Path of workspace binary `name` (e.g. [`WORKER`]).
///
/// # Panics
/// If the binary has not been built, with a message saying how to build it.
pub fn bin_path(name: &str) -> PathBuf {
    match try_bin_path(name) {
        Ok(path) => path,
        Err(message) => panic!("{message}"),
    }
}

/// A [`Command`] for workspace binary `name` (panics like [`bin_path`]).
pub fn command(name: &str) -> Command {
    Command::new(bin_path(name))
}

/// A [`tokio::process::Command`] for workspace binary `name` (panics like
/// [`bin_path`]); killed when dropped, so a failing test leaves no process behind.
pub fn tokio_command(name: &str) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(bin_path(name));
    cmd.kill_on_drop(true);
    cmd
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt as _;
    path.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// The first file named `program` in a `PATH` directory.
pub fn find_in_path(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
}
