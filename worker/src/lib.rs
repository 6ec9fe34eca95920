//! The Sluice worker: watches a landing directory, plans micro-batches, validates rows
//! and commits each batch to PostgreSQL exactly once.

pub mod migrate;
pub mod validate;
