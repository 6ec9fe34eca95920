//! The Sluice worker: watches a landing directory, plans micro-batches, validates rows
//! and commits each batch to PostgreSQL exactly once (docs/delivery-guarantee.md).
//!
//! Pure logic (`batch`, `validate`, `checkpoint` file format) is kept apart from I/O
//! (`source`, `landing`, `reader`, `ledger`, `db`, `planner`, `committer`, `recovery`, `pipeline`).

pub mod batch;
pub mod batch_commit;
pub mod checkpoint;
pub mod cli;
pub mod committer;
pub mod copy_binary;
pub mod copy_text;
pub mod db;
pub mod dbconn;
pub mod input;
pub mod landing;
pub mod ledger;
pub mod metrics;
pub mod migrate;
pub mod part_commit;
pub mod pipeline;
pub mod planner;
pub mod progress;
pub mod reader;
pub mod records;
pub mod recovery;
pub mod replay;
pub mod report;
pub mod retry;
pub mod settle;
pub mod shared;
pub mod source;
pub mod table_plan;
pub mod tables;
pub mod tls;
pub mod tool_cli;
pub mod validate;
