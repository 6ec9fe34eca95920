//! The worker metrics other processes read (the operator scrapes them for the status and
//! the Degraded condition; dashboards and alerts query them): names and label values,
//! written once. The catalogue with meanings is docs/metrics.md.

/// Rows processed, by `outcome` (loaded, rejected, deduplicated).
pub const ROWS_TOTAL: &str = "sluice_worker_rows_total";
/// Landing files not yet committed, as last listed.
pub const BACKLOG_FILES: &str = "sluice_worker_backlog_files";
/// Age of the oldest landing file not yet committed.
pub const LAG_SECONDS: &str = "sluice_worker_lag_seconds";
/// Unix time of the worker's last committed batch.
pub const LAST_COMMIT_TIMESTAMP: &str = "sluice_worker_last_commit_timestamp_seconds";
/// Valid rows changed by cleaning before validation, by `column` and `rule` (trim,
/// ignore_case, lowercase); counted when the row's file or part commits.
pub const ROWS_CLEANED_TOTAL: &str = "sluice_rows_cleaned_total";
/// 1 while a problem keeps the worker from making progress (or makes its results
/// suspect), by `cause` (see [`DegradedCause`]).
pub const DEGRADED: &str = "sluice_worker_degraded";

/// Why a worker reports itself degraded. Each is retried or waited out by the worker;
/// none fails a file or touches the ledger.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DegradedCause {
    /// A lock the worker needs is held by someone else longer than its lock_timeout.
    LockTimeout,
    /// A statement ran longer than the session's statement_timeout.
    StatementTimeout,
    /// PostgreSQL has no disk space left.
    DiskFull,
    /// PostgreSQL ran out of memory.
    OutOfMemory,
    /// The worker's role lacks a privilege (e.g. INSERT on the events table).
    PermissionDenied,
    /// A table the worker writes to does not exist (dropped or renamed).
    TableMissing,
    /// A table's columns no longer match what the worker writes.
    TableChanged,
    /// Another database error that is not about a file's content.
    DatabaseError,
    /// Batch plans cannot be written to the checkpoint volume (full or read-only).
    CheckpointUnwritable,
    /// Committed files cannot be archived, deleted or set aside.
    AfterCommitFailing,
    /// The database no longer holds a batch this worker's checkpoint says committed
    /// (restore from backup, or a failover that lost commits).
    RestoredBehindCheckpoint,
    /// The target table does not fit the pipeline's declared schema (`spec.schema`).
    SchemaMismatch,
}

impl DegradedCause {
    pub const ALL: [DegradedCause; 12] = [
        DegradedCause::LockTimeout,
        DegradedCause::StatementTimeout,
        DegradedCause::DiskFull,
        DegradedCause::OutOfMemory,
        DegradedCause::PermissionDenied,
        DegradedCause::TableMissing,
        DegradedCause::TableChanged,
        DegradedCause::DatabaseError,
        DegradedCause::CheckpointUnwritable,
        DegradedCause::AfterCommitFailing,
        DegradedCause::RestoredBehindCheckpoint,
        DegradedCause::SchemaMismatch,
    ];

    /// The `cause` label value.
    pub fn code(self) -> &'static str {
        match self {
            DegradedCause::LockTimeout => "lock_timeout",
            DegradedCause::StatementTimeout => "statement_timeout",
            DegradedCause::DiskFull => "disk_full",
            DegradedCause::OutOfMemory => "out_of_memory",
            DegradedCause::PermissionDenied => "permission_denied",
            DegradedCause::TableMissing => "table_missing",
            DegradedCause::TableChanged => "table_changed",
            DegradedCause::DatabaseError => "database_error",
            DegradedCause::CheckpointUnwritable => "checkpoint_unwritable",
            DegradedCause::AfterCommitFailing => "after_commit_failing",
            DegradedCause::RestoredBehindCheckpoint => "restored_behind_checkpoint",
            DegradedCause::SchemaMismatch => "schema_mismatch",
        }
    }

    pub fn from_code(code: &str) -> Option<DegradedCause> {
        DegradedCause::ALL.into_iter().find(|c| c.code() == code)
    }

    /// The reason of the pipeline's Degraded condition (CamelCase, as Kubernetes uses).
    pub const fn condition_reason(self) -> &'static str {
        match self {
            DegradedCause::LockTimeout => "WorkerLockTimeout",
            DegradedCause::StatementTimeout => "WorkerStatementTimeout",
            DegradedCause::DiskFull => "DatabaseDiskFull",
            DegradedCause::OutOfMemory => "DatabaseOutOfMemory",
            DegradedCause::PermissionDenied => "DatabasePermissionDenied",
            DegradedCause::TableMissing => "TableMissing",
            DegradedCause::TableChanged => "TableChanged",
            DegradedCause::DatabaseError => "DatabaseError",
            DegradedCause::CheckpointUnwritable => "CheckpointUnwritable",
            DegradedCause::AfterCommitFailing => "AfterCommitFailing",
            DegradedCause::RestoredBehindCheckpoint => "RestoredBehindCheckpoint",
            DegradedCause::SchemaMismatch => "SchemaMismatch",
        }
    }

    /// What a person should check, for the condition message.
    pub fn advice(self) -> &'static str {
        match self {
            DegradedCause::LockTimeout => {
                "a session holds a lock on the target tables; workers retry until it is released"
            }
            DegradedCause::StatementTimeout => {
                "statements exceed the claim timeout; check PostgreSQL load or raise claimTimeoutSeconds"
            }
            DegradedCause::DiskFull => "PostgreSQL is out of disk space; workers retry",
            DegradedCause::OutOfMemory => "PostgreSQL is out of memory; workers retry",
            DegradedCause::PermissionDenied => {
                "the worker's database role lacks a privilege on the target tables; grant it"
            }
            DegradedCause::TableMissing => {
                "a target table is missing (dropped or renamed); restore it or restart the workers to recreate it"
            }
            DegradedCause::TableChanged => {
                "a target table's columns changed; restore the expected columns"
            }
            DegradedCause::DatabaseError => "PostgreSQL refuses work; see the worker logs",
            DegradedCause::CheckpointUnwritable => {
                "the worker's checkpoint volume is full or read-only"
            }
            DegradedCause::AfterCommitFailing => {
                "committed files cannot be moved to archive/ or failed/ (not a directory, full, or permissions)"
            }
            DegradedCause::RestoredBehindCheckpoint => {
                "the database lost batches the workers had committed (restore or failover); archived files were put back for loading"
            }
            DegradedCause::SchemaMismatch => {
                "the target table does not fit spec.schema; the worker log names the column and the fix"
            }
        }
    }
}

impl std::fmt::Display for DegradedCause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.code())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_and_are_unique() {
        let mut seen = std::collections::HashSet::new();
        for c in DegradedCause::ALL {
            assert!(seen.insert(c.code()));
            assert_eq!(DegradedCause::from_code(c.code()), Some(c));
            assert!(!c.advice().is_empty());
        }
        assert_eq!(DegradedCause::from_code("nope"), None);
    }
}
