//! Reading landing files safely: opened without following symlinks, checked to be
//! regular files, digested while read, transient errors told apart from permanent ones.

use std::io::Read;

use bytes::Bytes;
use sha2::{Digest as _, Sha256};

use crate::batch_commit::{FileContent, FileToCommit};
use crate::landing;
use crate::ledger::Digest;
use crate::source::LandingDirs;
use crate::validate::{self, Cleaned, Rules};

/// Ledger reason of a file that could not be read.
pub const UNREADABLE: &str = "unreadable";

/// What reading a landing file gave.
#[derive(Debug)]
pub enum ReadResult<T> {
    Ok(T),
    /// Vanished, or no longer a regular file (another worker took it, or it was swapped
    /// for a symlink): leave it alone.
    Gone,
    /// An error that may go away (EIO, ESTALE, EACCES…): try again later.
    Transient(std::io::Error),
    /// An error that will not go away by itself.
    Permanent(std::io::Error),
}

impl<T> ReadResult<T> {
    pub fn ok(self) -> Option<T> {
        match self {
            ReadResult::Ok(v) => Some(v),
            _ => None,
        }
    }
}

fn sort_error<T>(e: std::io::Error) -> ReadResult<T> {
    if e.kind() == std::io::ErrorKind::NotFound || e.kind() == std::io::ErrorKind::InvalidInput {
        ReadResult::Gone
    } else if landing::is_transient_read_error(&e) {
        ReadResult::Transient(e)
    } else {
        ReadResult::Permanent(e)
    }
}

/// Reads a whole (small) file, digests it and parses it. Also returns the rows cleaning
/// changed (counted once the file commits).
pub fn read_small(
    dirs: &LandingDirs,
    name: &str,
    format: validate::Format,
    rules: &Rules,
) -> ReadResult<(FileToCommit, Cleaned)> {
    let mut bytes = Vec::new();
    let opened = landing::open_landing_file(dirs, name).and_then(|(mut file, meta)| {
        bytes.reserve(meta.len() as usize);
        file.read_to_end(&mut bytes)
    });
    if let Err(e) = opened {
        return sort_error(e);
    }
    let digest: Digest = Sha256::digest(&bytes).into();
    let (content, cleaned) = match validate::parse_file_as(format, &bytes, rules) {
        Ok(parsed) => (
            FileContent::Rows {
                copy: Bytes::from(parsed.copy_rows),
                valid_rows: parsed.valid_rows,
                rejects: std::sync::Arc::new(parsed.rejects),
            },
            parsed.cleaned,
        ),
        Err(e) => (
            FileContent::Failed {
                reason: e.code().to_string(),
                message: e.to_string(),
            },
            Cleaned::default(),
        ),
    };
    let file = FileToCommit {
        name: name.to_string(),
        size: bytes.len() as u64,
        digest,
        content,
    };
    ReadResult::Ok((file, cleaned))
}

/// A file recorded as unreadable (after its transient retries ran out, or at once for
/// a permanent error).
pub fn unreadable(name: &str, size: u64, digest: Digest, e: &std::io::Error) -> FileToCommit {
    FileToCommit {
        name: name.to_string(),
        size,
        digest,
        content: FileContent::Failed {
            reason: UNREADABLE.into(),
            message: format!("cannot read the file: {e}"),
        },
    }
}

/// SHA-256 and size of a file, read in 1 MiB pieces.
pub fn digest_file(dirs: &LandingDirs, name: &str) -> ReadResult<(Digest, u64)> {
    let result = landing::open_landing_file(dirs, name).and_then(|(mut file, _)| {
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; 1 << 20];
        let mut size = 0u64;
        loop {
            let n = match file.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            hasher.update(&buf[..n]);
            size += n as u64;
        }
        Ok((hasher.finalize().into(), size))
    });
    match result {
        Ok(v) => ReadResult::Ok(v),
        Err(e) => sort_error(e),
    }
}

/// SHA-256 of an arbitrary path (archived files), not following symlinks.
pub fn digest_path(path: &std::path::Path) -> std::io::Result<Digest> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => hasher.update(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(hasher.finalize().into())
}
