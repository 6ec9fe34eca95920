//! The after-commit step of a settled file: archive, delete or keep a loaded (or
//! re-delivered) file; set a failed one aside with its reason. It may run twice after a
//! crash, so every action is idempotent; a failure is retried with backoff per file and
//! never touches the ledger or the row counts.

use chrono::Utc;
use sluice_core::config::AfterCommit;

use crate::landing;
use crate::ledger::Outcome;
use crate::shared::Shared;
use crate::source::LandingDirs;

/// What to do with one settled file.
#[derive(Debug, Clone)]
pub struct Settle<'a> {
    pub name: &'a str,
    pub digest_hex: &'a str,
    pub outcome: Outcome,
    /// For failed files: (reason, message).
    pub failure: Option<(&'a str, &'a str)>,
}

/// Applies the after-commit action; returns true when it is done.
pub fn settle(shared: &Shared, dirs: &LandingDirs, s: &Settle<'_>) -> bool {
    let policy = shared.settings.config.after_commit;
    let result = match s.outcome {
        Outcome::Partial => return true,
        Outcome::Failed => {
            let (reason, message) = s.failure.unwrap_or(("failed", ""));
            landing::set_aside_failed(dirs, s.name, s.digest_hex, reason, message)
        }
        Outcome::Loaded | Outcome::Redelivered => {
            landing::finish_loaded(dirs, s.name, s.digest_hex, policy, Utc::now())
        }
    };
    let ok = match result {
        Ok(()) => true,
        Err(e) => {
            tracing::warn!(file = %s.name, error = %e,
                "after-commit action failed; retried with backoff (the rows are committed)");
            false
        }
    };
    if ok && policy == AfterCommit::Keep && s.outcome != Outcome::Failed {
        // Nothing moved: the planner remembers the file as done instead.
        shared.settle_result(s.name, true);
        return true;
    }
    shared.settle_result(s.name, ok);
    ok
}
