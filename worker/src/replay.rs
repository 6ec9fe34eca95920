//! Quarantine replay: quarantined rows are judged again with the pipeline's current rules
//! (after a schema or cleaning change, or a fixed producer), and the rows that now pass
//! move into the target table, exactly once.
//!
//! Rows are taken in chunks, in `id` order. Each chunk is one transaction: its rows are
//! locked (`FOR UPDATE SKIP LOCKED`, so two replays never take the same row), the rows
//! that pass are inserted into the target table (through dedupe's staging table when the
//! pipeline deduplicates: a row whose key is stored already is counted as deduplicated,
//! not inserted), deleted from quarantine, and the ledger's counts of their files and
//! batches move from rejected to loaded (or deduplicated), so the ledger's totals stay
//! exact. A replay killed midway loses only its open transaction; run again, it finds
//! only the rows still in quarantine, so nothing moves twice. Rows still bad stay as they
//! are (their evidence is not rewritten); rows that cannot be judged (a truncated
//! `row_too_long`, a file layout no longer known) stay too. Judging is in [`verdict`].

mod layouts;
pub mod summary;
pub mod verdict;

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::SinkExt;
use sluice_core::schema::MatchBy;
use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, Transaction};
use uuid::Uuid;

use crate::batch_commit::{CommitContext, Target, create_stage, insert_from_stage};
use crate::pipeline::Settings;
use crate::validate::{Format, Rules};
pub use layouts::Layouts;
pub use summary::{FileKey, LedgerDelta, ReplaySummary};
pub use verdict::{NotReplayable, Verdict, judge};

/// Which rows to replay and how.
#[derive(Debug, Clone)]
pub struct ReplayOptions {
    /// Only rows with one of these reasons (empty: any).
    pub reasons: Vec<String>,
    /// Only rows quarantined at or after this time.
    pub since: Option<DateTime<Utc>>,
    /// Only rows of these landing files (empty: any).
    pub files: Vec<String>,
    /// Examine at most this many rows.
    pub limit: Option<u64>,
    /// Rows per transaction.
    pub chunk_rows: u32,
    /// Pause between chunks.
    pub pause: Duration,
    /// Do everything, then roll each chunk back.
    pub dry_run: bool,
}

/// Why a replay stopped.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("{}", crate::db::describe_pg_error(.0))]
    Db(#[from] tokio_postgres::Error),
    #[error(
        "quarantine row {0} vanished from a locked chunk (another process deleted it); nothing of this chunk was changed"
    )]
    Vanished(String),
}

/// Attempts of one chunk that a deadlock with a worker or another replay aborted.
const DEADLOCK_ATTEMPTS: u32 = 5;

/// One quarantined row, as selected.
#[derive(Debug, Clone)]
struct Row {
    id: i64,
    file: String,
    digest: Vec<u8>,
    reason: String,
    raw: Vec<u8>,
    batch: Option<Uuid>,
}

/// Replays the quarantined rows of `settings.pipeline` that `options` select. `layouts`
/// finds the header of a row's file when a declared schema needs it.
pub async fn replay(
    client: &mut Client,
    settings: &Settings,
    options: &ReplayOptions,
    layouts: &mut Layouts,
) -> Result<ReplaySummary, ReplayError> {
    let mut summary = ReplaySummary {
        pipeline: settings.pipeline.clone(),
        dry_run: options.dry_run,
        ..ReplaySummary::default()
    };
    let ctx = settings.commit_context();
    let rules = settings.rules();
    let mut after_id = 0i64;
    loop {
        let room = options.limit.map_or(u64::from(options.chunk_rows), |l| {
            l.saturating_sub(summary.examined)
                .min(u64::from(options.chunk_rows))
        });
        if room == 0 {
            break;
        }
        let run = Run {
            settings,
            ctx: &ctx,
            rules: &rules,
            options,
        };
        let mut attempt = 1;
        let chunk = loop {
            match run.chunk(client, after_id, room, layouts).await {
                Err(ReplayError::Db(e))
                    if attempt < DEADLOCK_ATTEMPTS
                        && matches!(
                            e.code(),
                            Some(&SqlState::T_R_DEADLOCK_DETECTED)
                                | Some(&SqlState::T_R_SERIALIZATION_FAILURE)
                        ) =>
                {
                    tracing::warn!(
                        attempt,
                        "a replay chunk was aborted by a deadlock; retrying"
                    );
                    attempt += 1;
                }
                other => break other?,
            }
        };
        let Some(chunk) = chunk else {
            break;
        };
        after_id = chunk.last_id;
        absorb(&mut summary, chunk);
        if !options.pause.is_zero() {
            tokio::time::sleep(options.pause).await;
        }
    }
    Ok(summary)
}

/// What one chunk did.
#[derive(Debug, Default)]
struct ChunkResult {
    last_id: i64,
    examined: u64,
    moved: u64,
    deduplicated: u64,
    moved_by_reason: BTreeMap<String, u64>,
    still_bad: BTreeMap<String, u64>,
    not_replayable: BTreeMap<String, u64>,
}

fn absorb(s: &mut ReplaySummary, c: ChunkResult) {
    s.chunks += 1;
    s.examined += c.examined;
    s.moved += c.moved;
    s.deduplicated += c.deduplicated;
    for (map, from) in [
        (&mut s.moved_by_reason, c.moved_by_reason),
        (&mut s.still_bad_by_reason, c.still_bad),
        (&mut s.not_replayable_by_why, c.not_replayable),
    ] {
        for (k, n) in from {
            *map.entry(k).or_default() += n;
        }
    }
    s.still_bad = s.still_bad_by_reason.values().sum();
    s.not_replayable = s.not_replayable_by_why.values().sum();
}

/// The rows after `after_id` that the options select, at most `room`, locked unless a
/// dry run.
fn select_sql(quarantine: &str, dry_run: bool) -> String {
    format!(
        "SELECT id, source_file, source_sha256, reason, raw_bytes, raw_line, batch_id
         FROM {quarantine}
         WHERE pipeline = $1 AND id > $2
           AND ($3::text[] IS NULL OR reason = ANY($3))
           AND ($4::timestamptz IS NULL OR quarantined_at >= $4)
           AND ($5::text[] IS NULL OR source_file = ANY($5))
         ORDER BY id LIMIT $6{}",
        if dry_run {
            ""
        } else {
            " FOR UPDATE SKIP LOCKED"
        }
    )
}

/// What every chunk of one replay shares.
struct Run<'a> {
    settings: &'a Settings,
    ctx: &'a CommitContext,
    rules: &'a Rules,
    options: &'a ReplayOptions,
}

impl Run<'_> {
    /// Judges and moves one chunk in one transaction; None when no rows are left.
    async fn chunk(
        &self,
        client: &mut Client,
        after_id: i64,
        room: u64,
        layouts: &mut Layouts,
    ) -> Result<Option<ChunkResult>, ReplayError> {
        let Run {
            settings,
            ctx,
            rules,
            options,
        } = *self;
        let tx = client.transaction().await?;
        let nonempty = |v: &Vec<String>| (!v.is_empty()).then(|| v.clone());
        let selected = tx
            .query(
                &select_sql(&settings.tables.quarantine, options.dry_run),
                &[
                    &settings.pipeline,
                    &after_id,
                    &nonempty(&options.reasons),
                    &options.since,
                    &nonempty(&options.files),
                    &i64::try_from(room).unwrap_or(i64::MAX),
                ],
            )
            .await?;
        let Some(last) = selected.last() else {
            tx.rollback().await?;
            return Ok(None);
        };
        let mut result = ChunkResult {
            last_id: last.get(0),
            examined: selected.len() as u64,
            ..ChunkResult::default()
        };
        // Passing rows grouped by file (dedupe is counted per file), in file order.
        let mut passing: BTreeMap<FileKey, Vec<(Row, Vec<u8>)>> = BTreeMap::new();
        for r in &selected {
            let row = Row {
                id: r.get(0),
                file: r.get(1),
                digest: r.get(2),
                reason: r.get(3),
                // Before migration V3 raw_bytes was kept only for invalid UTF-8; raw_line is exact otherwise.
                raw: r
                    .get::<_, Option<Vec<u8>>>(4)
                    .unwrap_or_else(|| r.get::<_, String>(5).into_bytes()),
                batch: r.get(6),
            };
            match judge_row(settings, rules, layouts, &row) {
                Verdict::Passes(copy) => passing
                    .entry((row.file.clone(), row.digest.clone()))
                    .or_default()
                    .push((row, copy)),
                Verdict::StillBad { reason, .. } => {
                    *result.still_bad.entry(reason).or_default() += 1
                }
                Verdict::NotReplayable(why) => {
                    *result.not_replayable.entry(why.code().into()).or_default() += 1
                }
            }
        }
        if passing.is_empty() {
            tx.rollback().await?;
            return Ok(Some(result));
        }
        let mut delta = LedgerDelta::default();
        let mut ids = Vec::new();
        if ctx.dedupe {
            create_stage(&tx, ctx).await?;
        }
        for (file, rows) in &passing {
            let copy: Vec<u8> = rows.iter().flat_map(|(_, c)| c.iter().copied()).collect();
            let table = if ctx.dedupe {
                "sluice_stage"
            } else {
                &ctx.target.table
            };
            copy_rows(&tx, &ctx.target, table, copy).await?;
            let inserted = if ctx.dedupe {
                insert_from_stage(&tx, ctx).await?
            } else {
                rows.len() as u64
            };
            // Which rows of a file were the duplicates does not matter to the counts: each
            // moved row's batch gets a loaded row, the rest deduplicated ones.
            for (i, (row, _)) in rows.iter().enumerate() {
                let loaded = (i as u64) < inserted;
                delta.add(file, row.batch, i64::from(loaded), i64::from(!loaded));
                ids.push(row.id);
                *result
                    .moved_by_reason
                    .entry(row.reason.clone())
                    .or_default() += 1;
            }
            result.moved += inserted;
            result.deduplicated += rows.len() as u64 - inserted.min(rows.len() as u64);
        }
        let deleted = tx
            .execute(
                &format!(
                    "DELETE FROM {} WHERE id = ANY($1)",
                    settings.tables.quarantine
                ),
                &[&ids],
            )
            .await?;
        if deleted != ids.len() as u64 {
            tx.rollback().await?;
            return Err(ReplayError::Vanished(format!(
                "{} of {}",
                ids.len() as u64 - deleted,
                ids.len()
            )));
        }
        update_ledger(&tx, &settings.pipeline, &delta).await?;
        if options.dry_run {
            tx.rollback().await?;
        } else {
            tx.commit().await?;
        }
        Ok(Some(result))
    }
}

/// The verdict on one row, finding its file's layout when the rules need it.
fn judge_row(settings: &Settings, rules: &Rules, layouts: &mut Layouts, row: &Row) -> Verdict {
    let kind = settings.input_kind(&row.file);
    let needs_header = kind.format == Format::Csv
        && rules.csv.header
        && settings
            .schema
            .as_ref()
            .is_some_and(|s| s.schema.match_by == MatchBy::Header);
    let layout = if needs_header {
        match layouts.get(kind, rules, &row.file, &row.digest) {
            Some(l) => Some(l),
            None => return Verdict::NotReplayable(NotReplayable::HeaderUnavailable),
        }
    } else {
        None
    };
    judge(kind.format, rules, layout, &row.reason, &row.raw)
}

/// COPYs rows (in the target's wire format, as the parser wrote them) into `into`.
async fn copy_rows(
    tx: &Transaction<'_>,
    target: &Target,
    into: &str,
    copy: Vec<u8>,
) -> Result<(), tokio_postgres::Error> {
    let sink = tx.copy_in(&target.copy_sql(into)).await?;
    futures::pin_mut!(sink);
    sink.feed(target.copy_start()).await?;
    sink.feed(Bytes::from(copy)).await?;
    sink.feed(target.copy_end()).await?;
    sink.finish().await?;
    Ok(())
}

/// Moves the chunk's rows from rejected to loaded (or deduplicated) in the ledger: per
/// file in `sluice_files`, per batch in `sluice_batches`.
async fn update_ledger(
    tx: &Transaction<'_>,
    pipeline: &str,
    delta: &LedgerDelta,
) -> Result<(), tokio_postgres::Error> {
    let (names, digests, loaded, dedup) = delta.file_columns();
    tx.execute(
        "UPDATE sluice_files f SET
             rows_loaded = f.rows_loaded + d.loaded,
             rows_deduplicated = f.rows_deduplicated + d.dedup,
             rows_rejected = f.rows_rejected - d.loaded - d.dedup
         FROM unnest($2::text[], $3::bytea[], $4::int8[], $5::int8[]) AS d(name, digest, loaded, dedup)
         WHERE f.pipeline = $1 AND f.file_name = d.name AND f.content_sha256 = d.digest",
        &[&pipeline, &names, &digests, &loaded, &dedup],
    )
    .await?;
    let (ids, loaded, dedup) = delta.batch_columns();
    tx.execute(
        "UPDATE sluice_batches b SET
             rows_loaded = b.rows_loaded + d.loaded,
             rows_deduplicated = b.rows_deduplicated + d.dedup,
             rows_rejected = b.rows_rejected - d.loaded - d.dedup
         FROM unnest($1::uuid[], $2::int8[], $3::int8[]) AS d(id, loaded, dedup)
         WHERE b.batch_id = d.id",
        &[&ids, &loaded, &dedup],
    )
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_real_replay_locks_its_chunk() {
        let locked = select_sql("quarantine", false);
        assert!(locked.ends_with("FOR UPDATE SKIP LOCKED"), "{locked}");
        assert!(locked.contains("ORDER BY id LIMIT $6"), "{locked}");
        assert!(!select_sql("quarantine", true).contains("FOR UPDATE"));
    }

    #[test]
    fn summaries_add_up_over_chunks() {
        let mut s = ReplaySummary::default();
        for _ in 0..2 {
            absorb(
                &mut s,
                ChunkResult {
                    last_id: 9,
                    examined: 4,
                    moved: 1,
                    deduplicated: 1,
                    moved_by_reason: [("not_allowed".to_string(), 2)].into(),
                    still_bad: [("bad_price".to_string(), 1)].into(),
                    not_replayable: [("truncated_row".to_string(), 1)].into(),
                },
            );
        }
        assert_eq!(
            (s.chunks, s.examined, s.moved, s.deduplicated),
            (2, 8, 2, 2)
        );
        assert_eq!((s.still_bad, s.not_replayable), (2, 2));
        assert_eq!(s.moved_by_reason["not_allowed"], 4);
    }
}
