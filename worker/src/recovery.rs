//! What a worker does at start, before taking new work: notice a database that lost
//! commits the checkpoint remembers (and put the lost files back), then settle the plans
//! an earlier run left — finish the after-commit step of batches that committed, replay
//! those that did not under the same batch id.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use sluice_core::metric_names::DegradedCause;

use crate::batch::Candidate;
use crate::checkpoint::Plan;
use crate::committer::Committer;
use crate::dbconn::Db;
use crate::ledger;
use crate::planner::{Planner, Work};
use crate::reader;
use crate::shared::Shared;
use crate::source::{self, LandingDirs};

/// If `state.json`'s last committed batch is missing from `sluice_batches`, the
/// database was restored from a backup or failed over to a replica that lost commits.
/// Says so loudly and moves the archived files the ledger no longer knows back into the
/// landing directory, so they are loaded again.
pub async fn check_restore(shared: &Arc<Shared>, committer: &mut Committer) {
    let Some(last) = committer.checkpoint.state().last_committed_batch else {
        return;
    };
    if committer.landed(last).await {
        return;
    }
    tracing::error!(batch = %last,
        "database behind the checkpoint: the last batch this worker committed is not in sluice_batches (restored from a backup, or a failover lost commits); putting archived files the database no longer knows back for loading");
    shared.set_degraded(
        DegradedCause::RestoredBehindCheckpoint,
        true,
        &format!("batch {last} missing"),
    );
    let moved = reingest_archive(shared, &mut committer.db).await;
    shared.metrics.reingested_files.inc_by(moved as u64);
    tracing::warn!(
        files = moved,
        "archived files put back into the landing directory"
    );
    if let Err(e) = committer.checkpoint.forget_last_commit() {
        tracing::error!(error = %e, "cannot record on the checkpoint volume that the restore was handled");
    }
}

/// Moves archived files whose content the ledger does not know back into landing.
async fn reingest_archive(shared: &Arc<Shared>, db: &mut Db) -> usize {
    let dirs = LandingDirs {
        landing: shared.settings.landing_dir.clone(),
    };
    let scan_dirs = dirs.clone();
    let scanned = tokio::task::spawn_blocking(move || {
        let files = crate::landing::archived_files(&scan_dirs).unwrap_or_default();
        files
            .into_iter()
            .filter_map(|f| reader::digest_path(&f.path).ok().map(|d| (f, d)))
            .collect::<Vec<_>>()
    })
    .await
    .unwrap_or_default();
    if scanned.is_empty() {
        return 0;
    }
    let digests: Vec<Vec<u8>> = scanned.iter().map(|(_, d)| d.to_vec()).collect();
    let names: Vec<String> = scanned.iter().map(|(f, _)| f.name.clone()).collect();
    let known = loop {
        let client = db.get().await;
        match ledger::known_contents(client, &shared.settings.pipeline, &digests, &names).await {
            Ok(k) => break k,
            Err(e) => {
                tracing::warn!(error = %e, "reading the ledger failed; retrying");
                db.broken();
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    };
    let known_digests: HashSet<Vec<u8>> = known.0.into_iter().collect();
    let legacy_names: HashSet<String> = known.1.into_iter().collect();
    let mut moved = 0;
    for (f, digest) in scanned {
        if known_digests.contains(digest.as_slice()) || legacy_names.contains(&f.name) {
            continue;
        }
        match crate::landing::reland(&dirs, &f) {
            Ok(Some(name)) => {
                tracing::info!(file = %name, from = %f.path.display(), "archived file put back for loading");
                moved += 1;
            }
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(file = %f.name, error = %e, "cannot put an archived file back")
            }
        }
    }
    moved
}

/// Settles a plan found on disk at start-up: if its batch committed, finish the
/// after-commit steps; otherwise replay it with the same batch id.
pub async fn settle_pending(committer: &mut Committer, planner: &mut Planner, plan: Plan) {
    let names: Vec<String> = plan.files.iter().map(|f| f.name.clone()).collect();
    if committer.landed(plan.batch_id).await {
        tracing::info!(batch = %plan.batch_id, "batch had committed before the restart; finishing it");
        committer
            .shared
            .metrics
            .batches
            .with_label_values(&["recovered"])
            .inc();
        committer.settle_by_ledger(&names).await;
        if let Err(e) = committer.checkpoint.record_commit(&plan) {
            tracing::error!(error = %e, "recording a recovered commit failed");
        }
        return;
    }
    tracing::info!(batch = %plan.batch_id, files = plan.files.len(), "replaying a batch that had not committed");
    let listing = source::list_landing(&committer.shared.settings.landing_dir).unwrap_or_default();
    let wanted: HashSet<&str> = names.iter().map(String::as_str).collect();
    let selection: Vec<Candidate> = listing
        .into_iter()
        .filter(|c| wanted.contains(c.name.as_str()))
        .collect();
    let work = if selection.is_empty() {
        None
    } else {
        planner.plan_and_parse(selection, Some(plan.clone())).await
    };
    match work {
        Some(Work::Batch(batch)) => committer.commit(batch).await,
        Some(Work::Large(file)) => {
            // Large files need no plan: the ledger records how far they got.
            let _ = committer.checkpoint.remove_plan(plan.batch_id);
            committer.load_large(file).await;
        }
        None => {
            // Its files are gone or settled by others: the ledger already holds them.
            committer.settle_by_ledger(&names).await;
            let _ = committer.checkpoint.remove_plan(plan.batch_id);
        }
    }
}
