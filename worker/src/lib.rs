//! The Sluice worker: watches a landing directory, plans micro-batches, validates rows
//! and commits each batch to PostgreSQL exactly once (docs/delivery-guarantee.md).
//!
//! Pure logic (`batch`, `validate`, `checkpoint` file format) is kept apart from I/O
//! (`source`, `landing`, `ledger`, `db`, `pipeline`).

pub mod batch;
pub mod checkpoint;
pub mod cli;
pub mod db;
pub mod landing;
pub mod ledger;
pub mod metrics;
pub mod migrate;
pub mod pipeline;
pub mod source;
pub mod tls;
pub mod validate;
