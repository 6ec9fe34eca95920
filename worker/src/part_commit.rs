//! The transaction of one part of a large file. A file larger than the batch limit is
//! streamed in parts of about `partBytes`: each part is parsed while it is COPYed, and
//! commits with the ledger entry's progress (`next_offset`, `next_line`, `parts`), so a
//! restart resumes exactly after the last committed part and memory stays bounded
//! whatever the file size. See docs/delivery-guarantee.md, "Large files".

use std::time::Instant;

use bytes::{Bytes, BytesMut};
use futures::SinkExt;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_postgres::{Client, Transaction};
use uuid::Uuid;

use crate::batch_commit::{CommitContext, create_stage, insert_from_stage};
use crate::copy_text::{QUARANTINE_COLUMNS, quarantine_row};
use crate::ledger::{Digest, Outcome};
use crate::validate::{ParseError, PartSummary, Position};

/// One part to commit.
#[derive(Debug, Clone)]
pub struct PartToCommit {
    pub name: String,
    pub size: u64,
    pub digest: Digest,
    pub start: Position,
    /// Set when loading a re-delivery on purpose (`loadRedeliveries`).
    pub duplicate_of: Option<String>,
}

/// A running parse of one part: COPY text chunks, then the part's summary.
pub struct PartStream {
    pub chunks: mpsc::Receiver<Vec<u8>>,
    pub done: JoinHandle<Result<PartSummary, ParseError>>,
}

/// What the part's transaction did.
#[derive(Debug)]
pub enum PartOutcome {
    /// Committed; `summary.at_eof` tells whether the file is now finished.
    Committed {
        summary: PartSummary,
        rows_loaded: u64,
        rows_deduplicated: u64,
        seconds: f64,
    },
    /// The ledger has moved past this part's start (another worker or an earlier
    /// attempt committed it): re-plan from the ledger.
    Moved,
    /// The content is already recorded under another name; nothing loaded.
    Redelivery { original: String },
    /// Recorded as a re-delivery (no rows written) in this transaction.
    RecordedRedelivery { original: String },
}

#[derive(Debug, thiserror::Error)]
pub enum PartError {
    #[error(transparent)]
    Db(#[from] tokio_postgres::Error),
    #[error(transparent)]
    Parse(ParseError),
}

/// Commits one part. `stream` is started only once the part is owned, so a part
/// another worker already holds is not read at all.
pub async fn commit_part(
    client: &mut Client,
    ctx: &CommitContext,
    batch_id: Uuid,
    part: &PartToCommit,
    stream: impl FnOnce() -> PartStream,
) -> Result<PartOutcome, PartError> {
    let started = Instant::now();
    let tx = client.transaction().await?;
    match own_part(&tx, ctx, batch_id, part).await? {
        Owned::Yes => {}
        Owned::Moved => {
            tx.rollback().await?;
            return Ok(PartOutcome::Moved);
        }
        Owned::ContentKnownAs(original) => {
            if ctx.load_redeliveries {
                tx.rollback().await?;
                return Ok(PartOutcome::Redelivery { original });
            }
            record_redelivery(&tx, ctx, batch_id, part, &original).await?;
            tx.commit().await?;
            return Ok(PartOutcome::RecordedRedelivery { original });
        }
    }

    let target = if ctx.dedupe {
        create_stage(&tx, ctx).await?.to_string()
    } else {
        ctx.target.table.clone()
    };
    let PartStream { mut chunks, done } = stream();
    let sink = tx.copy_in(&ctx.target.copy_sql(&target)).await?;
    futures::pin_mut!(sink);
    sink.feed(ctx.target.copy_start()).await?;
    while let Some(chunk) = chunks.recv().await {
        sink.feed(Bytes::from(chunk)).await?;
    }
    let summary = match done.await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return Err(PartError::Parse(e)),
        Err(join) => {
            return Err(PartError::Parse(ParseError::Io(std::io::Error::other(
                format!("the parser stopped: {join}"),
            ))));
        }
    };
    sink.feed(ctx.target.copy_end()).await?;
    sink.finish().await?;
    let (rows_loaded, rows_deduplicated) = if ctx.dedupe && summary.valid_rows > 0 {
        let inserted = insert_from_stage(&tx, ctx).await?;
        (
            inserted,
            summary.valid_rows - inserted.min(summary.valid_rows),
        )
    } else {
        (summary.valid_rows, 0)
    };

    if !summary.rejects.is_empty() {
        let mut out = BytesMut::new();
        for r in &summary.rejects {
            quarantine_row(
                &mut out,
                &ctx.pipeline,
                &part.name,
                &part.digest,
                r,
                batch_id,
            );
        }
        let sink = tx
            .copy_in(&format!(
                "COPY {} ({QUARANTINE_COLUMNS}) FROM STDIN",
                ctx.tables.quarantine
            ))
            .await?;
        futures::pin_mut!(sink);
        sink.send(out.freeze()).await?;
        sink.finish().await?;
    }
    let outcome = if summary.at_eof {
        Outcome::Loaded
    } else {
        Outcome::Partial
    };
    tx.execute(
        "UPDATE sluice_files SET
             rows_loaded = rows_loaded + $4, rows_rejected = rows_rejected + $5,
             rows_deduplicated = rows_deduplicated + $6, parts = parts + 1,
             next_offset = $7, next_line = $8, outcome = $9, batch_id = $10, worker_id = $11,
             committed_at = now()
         WHERE pipeline = $1 AND file_name = $2 AND content_sha256 = $3",
        &[
            &ctx.pipeline,
            &part.name,
            &part.digest.as_slice(),
            &(rows_loaded as i64),
            &(summary.rejects.len() as i64),
            &(rows_deduplicated as i64),
            &(summary.end.offset as i64),
            &(summary.end.line as i64),
            &outcome.as_str(),
            &batch_id,
            &ctx.worker_id,
        ],
    )
    .await?;
    tx.execute(
        "INSERT INTO sluice_batches (batch_id, pipeline, worker_id, files, rows_loaded, rows_rejected, rows_deduplicated)
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
        &[
            &batch_id,
            &ctx.pipeline,
            &ctx.worker_id,
            &i32::from(summary.at_eof),
            &(rows_loaded as i64),
            &(summary.rejects.len() as i64),
            &(rows_deduplicated as i64),
        ],
    )
    .await?;
    if summary.at_eof {
        tx.execute(
            "DELETE FROM sluice_claims WHERE pipeline = $1 AND file_name = $2",
            &[&ctx.pipeline, &part.name],
        )
        .await?;
    }
    tx.commit().await?;
    Ok(PartOutcome::Committed {
        summary,
        rows_loaded,
        rows_deduplicated,
        seconds: started.elapsed().as_secs_f64(),
    })
}

enum Owned {
    Yes,
    Moved,
    ContentKnownAs(String),
}

/// Takes the file's ledger entry for this part: creates it for the first part, or
/// locks it if it still ends where this part starts.
async fn own_part(
    tx: &Transaction<'_>,
    ctx: &CommitContext,
    batch_id: Uuid,
    part: &PartToCommit,
) -> Result<Owned, tokio_postgres::Error> {
    if part.start.offset > 0 {
        let row = tx
            .query_opt(
                "UPDATE sluice_files SET worker_id = $4
                 WHERE pipeline = $1 AND file_name = $2 AND content_sha256 = $3
                   AND outcome = 'partial' AND next_offset = $5
                 RETURNING 1",
                &[
                    &ctx.pipeline,
                    &part.name,
                    &part.digest.as_slice(),
                    &ctx.worker_id,
                    &(part.start.offset as i64),
                ],
            )
            .await?;
        return Ok(if row.is_some() {
            Owned::Yes
        } else {
            Owned::Moved
        });
    }
    let row = tx
        .query_opt(
            "INSERT INTO sluice_files
                 (pipeline, file_name, content_sha256, file_size, batch_id, worker_id, outcome,
                  rows_loaded, rows_rejected, duplicate_of, parts, next_offset, next_line)
             VALUES ($1, $2, $3, $4, $5, $6, 'partial', 0, 0, $7, 0, 0, 1)
             ON CONFLICT DO NOTHING
             RETURNING 1",
            &[
                &ctx.pipeline,
                &part.name,
                &part.digest.as_slice(),
                &(part.size as i64),
                &batch_id,
                &ctx.worker_id,
                &part.duplicate_of,
            ],
        )
        .await?;
    if row.is_some() {
        return Ok(Owned::Yes);
    }
    let first = tx
        .query_opt(
            "SELECT file_name FROM sluice_files
             WHERE pipeline = $1 AND content_sha256 = $2 AND duplicate_of IS NULL AND file_name <> $3",
            &[&ctx.pipeline, &part.digest.as_slice(), &part.name],
        )
        .await?;
    Ok(match first {
        Some(r) => Owned::ContentKnownAs(r.get(0)),
        None => Owned::Moved,
    })
}

async fn record_redelivery(
    tx: &Transaction<'_>,
    ctx: &CommitContext,
    batch_id: Uuid,
    part: &PartToCommit,
    original: &str,
) -> Result<(), tokio_postgres::Error> {
    tx.execute(
        "INSERT INTO sluice_files
             (pipeline, file_name, content_sha256, file_size, batch_id, worker_id, outcome,
              rows_loaded, rows_rejected, duplicate_of, parts, next_offset)
         VALUES ($1, $2, $3, $4, $5, $6, 'redelivered', 0, 0, $7, 1, $4)
         ON CONFLICT DO NOTHING",
        &[
            &ctx.pipeline,
            &part.name,
            &part.digest.as_slice(),
            &(part.size as i64),
            &batch_id,
            &ctx.worker_id,
            &original,
        ],
    )
    .await?;
    tx.execute(
        "INSERT INTO sluice_batches (batch_id, pipeline, worker_id, files, rows_loaded, rows_rejected)
         VALUES ($1, $2, $3, 1, 0, 0)",
        &[&batch_id, &ctx.pipeline, &ctx.worker_id],
    )
    .await?;
    tx.execute(
        "DELETE FROM sluice_claims WHERE pipeline = $1 AND file_name = $2",
        &[&ctx.pipeline, &part.name],
    )
    .await?;
    Ok(())
}
