//! The Sluice event generator as a library (the binary is a thin CLI over it).
//!
//! [`run`] writes synthetic e-commerce events as CSV or NDJSON files (optionally gzip or
//! zstd compressed) into a landing directory:
//! sessions of users walk a view → add_to_cart → purchase funnel over a seeded catalogue
//! with Zipf-like product popularity ([`traffic`], [`catalogue`]); a configurable share
//! of rows carries one of eight defects ([`defects`]), another share is messy but valid
//! (padding, odd case: [`messy`]); files appear atomically
//! ([`writer`]) and writing pauses while the landing directory is full
//! ([`backpressure`]). The same seed, options and start time give byte-identical files.

pub mod backpressure;
pub mod catalogue;
pub mod cli;
pub mod csv_row;
pub mod defects;
pub mod error;
pub mod messy;
pub mod metrics;
pub mod run;
pub mod traffic;
pub mod writer;

pub use defects::DefectKind;
pub use error::GeneratorError;
pub use messy::MessyKind;
pub use metrics::Metrics;
pub use run::{RunOptions, Summary, run};
