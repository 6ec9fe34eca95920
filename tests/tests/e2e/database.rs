//! Exactly-once in the database: the target table, quarantine and the ledger queried
//! through psql in the PostgreSQL pod, compared with each other and with the generator's
//! own count.

use std::time::Duration;

use anyhow::{Context as _, Result, ensure};
use chrono::{DateTime, Utc};

use crate::cluster::{Cluster, DRAIN_TIMEOUT, figures, figures_time};
use crate::generator::GeneratorTotals;
use crate::steps::{StepLog, wait_until};

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DbFigures {
    pub events: i64,
    pub distinct_event_ids: i64,
    pub quarantine: i64,
    pub distinct_quarantine_lines: i64,
    pub files: i64,
    pub files_not_loaded: i64,
    pub ledger_rows_loaded: i64,
    pub ledger_rows_rejected: i64,
    pub files_with_wrong_reject_count: i64,
    pub batch_rows_loaded: i64,
    pub batch_rows_rejected: i64,
}

/// The target table is `events` in the pipeline's search_path (the built-in table, or a
/// declared schema named `events` with an `event_id` column).
const FIGURES_SQL: &str = "SELECT \
    (SELECT count(*) FROM events), \
    (SELECT count(DISTINCT event_id) FROM events), \
    (SELECT count(*) FROM quarantine), \
    (SELECT count(*) FROM (SELECT DISTINCT source_file, line_number FROM quarantine) q), \
    (SELECT count(*) FROM sluice_files), \
    (SELECT count(*) FROM sluice_files WHERE outcome <> 'loaded'), \
    (SELECT coalesce(sum(rows_loaded), 0) FROM sluice_files), \
    (SELECT coalesce(sum(rows_rejected), 0) FROM sluice_files), \
    (SELECT count(*) FROM sluice_files f WHERE f.rows_rejected <> \
        (SELECT count(*) FROM quarantine q WHERE q.source_file = f.file_name)), \
    (SELECT coalesce(sum(rows_loaded), 0) FROM sluice_batches), \
    (SELECT coalesce(sum(rows_rejected), 0) FROM sluice_batches)";

pub async fn db_figures(cluster: &Cluster) -> Result<DbFigures> {
    let v = cluster.query_ints(FIGURES_SQL).await?;
    ensure!(v.len() == 11, "expected 11 columns, got {v:?}");
    Ok(DbFigures {
        events: v[0],
        distinct_event_ids: v[1],
        quarantine: v[2],
        distinct_quarantine_lines: v[3],
        files: v[4],
        files_not_loaded: v[5],
        ledger_rows_loaded: v[6],
        ledger_rows_rejected: v[7],
        files_with_wrong_reject_count: v[8],
        batch_rows_loaded: v[9],
        batch_rows_rejected: v[10],
    })
}

/// Every problem with the figures; empty means exactly-once holds.
pub fn exactly_once_problems(f: &DbFigures, generated: Option<GeneratorTotals>) -> Vec<String> {
    let mut p = Vec::new();
    if f.events != f.distinct_event_ids {
        p.push(format!(
            "{} rows in events but {} distinct event ids: {} duplicates",
            f.events,
            f.distinct_event_ids,
            f.events - f.distinct_event_ids
        ));
    }
    if f.quarantine != f.distinct_quarantine_lines {
        p.push(format!(
            "{} quarantine rows but {} distinct (source_file, line_number)",
            f.quarantine, f.distinct_quarantine_lines
        ));
    }
    if f.ledger_rows_loaded != f.events {
        p.push(format!(
            "the ledger says {} rows loaded, events holds {}",
            f.ledger_rows_loaded, f.events
        ));
    }
    if f.ledger_rows_rejected != f.quarantine {
        p.push(format!(
            "the ledger says {} rows rejected, quarantine holds {}",
            f.ledger_rows_rejected, f.quarantine
        ));
    }
    if f.files_with_wrong_reject_count != 0 {
        p.push(format!(
            "{} files whose quarantine rows differ from their ledger rows_rejected",
            f.files_with_wrong_reject_count
        ));
    }
    if f.files_not_loaded != 0 {
        p.push(format!(
            "{} files set aside (outcome failed): the generator writes only valid CSV files",
            f.files_not_loaded
        ));
    }
    if let Some(g) = generated {
        let (files, rows, bad) = (g.files as i64, g.rows as i64, g.bad_rows as i64);
        if f.files != files {
            p.push(format!(
                "the generator wrote {files} files, the ledger holds {}",
                f.files
            ));
        }
        if f.events + f.quarantine != rows {
            p.push(format!(
                "the generator wrote {rows} rows, events + quarantine hold {} + {} = {}",
                f.events,
                f.quarantine,
                f.events + f.quarantine
            ));
        }
        if f.quarantine != bad {
            p.push(format!(
                "the generator wrote {bad} bad rows, quarantine holds {}",
                f.quarantine
            ));
        }
    }
    p
}

/// Waits until the ledger holds every file the generator wrote (when its count is known),
/// or else until the workers report an empty backlog measured after `stopped_at` and the
/// ledger stays unchanged for 20 s.
pub async fn wait_drained(
    cluster: &Cluster,
    log: &StepLog,
    expected_files: Option<u64>,
    stopped_at: DateTime<Utc>,
) -> Result<i64> {
    if let Some(n) = expected_files {
        let n = n as i64;
        let files = wait_until(
            &format!("{n} files in the ledger"),
            DRAIN_TIMEOUT,
            async || {
                let have = cluster.ledger_files().await?;
                ensure!(have >= n, "{have} of {n} files in the ledger");
                Ok(have)
            },
        )
        .await?;
        log.note(format!("ledger holds {files} files (generator wrote {n})"));
        return Ok(files);
    }
    wait_until(
        "an empty backlog measured after the generator stopped",
        DRAIN_TIMEOUT,
        async || {
            let ipl = cluster.ipl().await?;
            let fresh = figures_time(&ipl).is_some_and(|t| t > stopped_at);
            let backlog = ipl.status.as_ref().and_then(|s| s.backlog_files);
            ensure!(fresh && backlog == Some(0), "{}", figures(&ipl));
            Ok(())
        },
    )
    .await?;
    let mut last = cluster.ledger_files().await?;
    wait_until("the ledger unchanged for 20 s", DRAIN_TIMEOUT, async || {
        tokio::time::sleep(Duration::from_secs(20)).await;
        let now = cluster.ledger_files().await?;
        let stable = now == last;
        last = now;
        ensure!(stable, "still growing: {now} files");
        Ok(now)
    })
    .await
}

pub async fn check_exactly_once(
    cluster: &Cluster,
    log: &StepLog,
    generated: Option<GeneratorTotals>,
) -> Result<DbFigures> {
    let f = db_figures(cluster).await?;
    log.note(format!("database: {f:?}"));
    if (f.batch_rows_loaded, f.batch_rows_rejected)
        != (f.ledger_rows_loaded, f.ledger_rows_rejected)
    {
        log.note(format!(
            "note: sluice_batches sums ({}, {}) differ from sluice_files sums ({}, {})",
            f.batch_rows_loaded,
            f.batch_rows_rejected,
            f.ledger_rows_loaded,
            f.ledger_rows_rejected
        ));
    }
    let problems = exactly_once_problems(&f, generated);
    ensure!(
        problems.is_empty(),
        "exactly-once violated:\n  {}",
        problems.join("\n  ")
    );
    ensure!(f.events > 0 && f.files > 0, "nothing was loaded: {f:?}");
    log.note(match generated {
        Some(g) => format!(
            "exactly-once holds: {} files, {} events + {} quarantined = {} rows = what the generator wrote ({g:?}); no duplicate event id",
            f.files,
            f.events,
            f.quarantine,
            f.events + f.quarantine
        ),
        None => format!(
            "exactly-once holds against the ledger: {} files, {} events, {} quarantined; no duplicate event id (generator count unavailable)",
            f.files, f.events, f.quarantine
        ),
    });
    Ok(f)
}

/// Quarantine by reason, most frequent first (the order `sluice-worker report` lists them).
pub async fn quarantine_by_reason(cluster: &Cluster) -> Result<Vec<(String, i64)>> {
    cluster
        .query_counts(&format!(
            "SELECT reason, count(*) FROM quarantine WHERE pipeline = {} \
             GROUP BY reason ORDER BY count(*) DESC, reason",
            crate::cluster::sql_literal(&cluster.ledger_id())
        ))
        .await
        .context("quarantine by reason")
}

#[test]
fn exactly_once_problems_name_each_violation() -> Result<()> {
    let clean = DbFigures {
        events: 99,
        distinct_event_ids: 99,
        quarantine: 1,
        distinct_quarantine_lines: 1,
        files: 2,
        ledger_rows_loaded: 99,
        ledger_rows_rejected: 1,
        ..DbFigures::default()
    };
    let gen_ok = GeneratorTotals {
        files: 2,
        rows: 100,
        bad_rows: 1,
        messy_rows: None,
    };
    ensure!(exactly_once_problems(&clean, Some(gen_ok)).is_empty());
    let dup = DbFigures {
        events: 100,
        ledger_rows_loaded: 100,
        ..clean
    };
    ensure!(exactly_once_problems(&dup, None).len() == 1);
    ensure!(exactly_once_problems(&dup, Some(gen_ok)).len() == 2);
    Ok(())
}
