//! Errors of the generator library.

use std::path::{Path, PathBuf};

use thiserror::Error;

#[derive(Debug, Error)]
pub enum GeneratorError {
    #[error("{action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write manifest {path}: {message}")]
    Manifest { path: PathBuf, message: String },
    #[error(
        "{path} already exists and no free sequence number was found; empty the landing directory"
    )]
    NameTaken { path: PathBuf },
    #[error("invalid configuration: {0}")]
    Config(#[from] sluice_core::config::ConfigError),
    #[error("cannot register metrics: {0}")]
    Metrics(#[from] prometheus::Error),
}

impl GeneratorError {
    pub fn io(action: &'static str, path: &Path, source: std::io::Error) -> GeneratorError {
        GeneratorError::Io {
            action,
            path: path.to_path_buf(),
            source,
        }
    }
}
