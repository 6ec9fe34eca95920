//! The PostgreSQL side of the delivery guarantee: claiming files, committing a batch
//! (ledger + rows + rejects in one transaction) and looking up what already committed.
//! The protocol is described in docs/delivery-guarantee.md.

use std::collections::BTreeMap;
use std::time::Instant;

use bytes::{BufMut, Bytes, BytesMut};
use futures::SinkExt;
use sluice_core::RejectReason;
use sluice_core::config::TableNames;
use tokio_postgres::{Client, GenericClient};
use uuid::Uuid;

use crate::validate::Rejected;

/// Settled state of a file as recorded in the ledger.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LedgerEntry {
    pub file_name: String,
    pub outcome: String,
    pub failure_reason: Option<String>,
    pub failure_message: Option<String>,
}

/// The answer to a claim: files now ours, and files some worker already committed.
#[derive(Debug, Default)]
pub struct ClaimResult {
    pub claimed: Vec<String>,
    pub done: Vec<LedgerEntry>,
}

/// Claims `names` for `worker_id`. A file is granted if nobody claims it, if this worker
/// already does (restart with a stable id), or if its claim is older than
/// `timeout_secs` (its worker stopped renewing: taken over). Files already in the
/// ledger are returned as `done` instead.
pub async fn claim(
    client: &Client,
    worker_id: &str,
    names: &[String],
    timeout_secs: u64,
) -> Result<ClaimResult, tokio_postgres::Error> {
    let rows = client
        .query(
            "WITH cand AS (
                 SELECT c.file_name, c.ord FROM unnest($1::text[]) WITH ORDINALITY AS c(file_name, ord)
             ),
             done AS (
                 SELECT f.file_name, f.outcome, f.failure_reason, f.failure_message
                 FROM sluice_files f JOIN cand USING (file_name)
             ),
             claimed AS (
                 INSERT INTO sluice_claims AS s (file_name, worker_id, claimed_at)
                 SELECT c.file_name, $2, now() FROM cand c
                 WHERE NOT EXISTS (SELECT 1 FROM sluice_files f WHERE f.file_name = c.file_name)
                 ORDER BY c.ord
                 ON CONFLICT (file_name) DO UPDATE SET worker_id = EXCLUDED.worker_id, claimed_at = now()
                 WHERE s.worker_id = EXCLUDED.worker_id
                    OR s.claimed_at < now() - make_interval(secs => $3::float8)
                 RETURNING s.file_name
             )
             SELECT file_name, outcome, failure_reason, failure_message FROM done
             UNION ALL
             SELECT file_name, NULL, NULL, NULL FROM claimed",
            &[&names, &worker_id, &(timeout_secs as f64)],
        )
        .await?;
    let mut result = ClaimResult::default();
    for row in rows {
        let name: String = row.get(0);
        match row.get::<_, Option<String>>(1) {
            Some(outcome) => result.done.push(LedgerEntry {
                file_name: name,
                outcome,
                failure_reason: row.get(2),
                failure_message: row.get(3),
            }),
            None => result.claimed.push(name),
        }
    }
    Ok(result)
}

/// Renews this worker's claims so others do not take them over.
pub async fn renew_claims(client: &Client, worker_id: &str) -> Result<u64, tokio_postgres::Error> {
    client
        .execute(
            "UPDATE sluice_claims SET claimed_at = now() WHERE worker_id = $1",
            &[&worker_id],
        )
        .await
}

/// Gives up this worker's claims (graceful shutdown), so others pick the files up at once.
pub async fn release_claims(
    client: &Client,
    worker_id: &str,
) -> Result<u64, tokio_postgres::Error> {
    client
        .execute(
            "DELETE FROM sluice_claims WHERE worker_id = $1",
            &[&worker_id],
        )
        .await
}

/// True if `batch_id` committed (its row exists in `sluice_batches`).
pub async fn batch_committed(
    client: &Client,
    batch_id: Uuid,
) -> Result<bool, tokio_postgres::Error> {
    let row = client
        .query_opt(
            "SELECT 1 FROM sluice_batches WHERE batch_id = $1",
            &[&batch_id],
        )
        .await?;
    Ok(row.is_some())
}

/// Ledger entries of the given files (those that have one).
pub async fn ledger_entries(
    client: &Client,
    names: &[String],
) -> Result<Vec<LedgerEntry>, tokio_postgres::Error> {
    let rows = client
        .query(
            "SELECT file_name, outcome, failure_reason, failure_message FROM sluice_files WHERE file_name = ANY($1)",
            &[&names],
        )
        .await?;
    Ok(rows
        .into_iter()
        .map(|row| LedgerEntry {
            file_name: row.get(0),
            outcome: row.get(1),
            failure_reason: row.get(2),
            failure_message: row.get(3),
        })
        .collect())
}

/// One file of a batch, ready to commit.
#[derive(Debug, Clone)]
pub struct FileToCommit {
    pub name: String,
    pub size: u64,
    pub content: FileContent,
}

#[derive(Debug, Clone)]
pub enum FileContent {
    /// Parsed: valid rows in COPY text format, and the rejected rows.
    Rows {
        copy: Bytes,
        valid_rows: u64,
        rejects: std::sync::Arc<Vec<Rejected>>,
    },
    /// Could not be read as Sluice CSV; recorded as failed and set aside.
    Failed { reason: String, message: String },
}

/// What a commit did.
#[derive(Debug, Default, Clone)]
pub struct CommitSummary {
    /// Files whose ledger entry this transaction wrote.
    pub owned: Vec<String>,
    /// Files another worker had already committed (left out of this batch).
    pub skipped: Vec<String>,
    pub rows_loaded: u64,
    pub rows_rejected: u64,
    pub rows_deduplicated: u64,
    pub rejected_by_reason: BTreeMap<RejectReason, u64>,
    pub failed_files: u64,
    /// Files PostgreSQL refused although they passed validation, recorded as failed
    /// instead: name → message. They are set aside, not archived.
    pub database_rejected: BTreeMap<String, String>,
    /// False when every file was skipped and nothing was written.
    pub committed: bool,
    pub copy_seconds: f64,
    pub commit_seconds: f64,
}

/// Commits a batch in one transaction: ledger entries first (which also settles races
/// with other workers: a file whose entry exists is skipped), then the owned files'
/// rows into the events table, their rejects into quarantine, the batch record, and the
/// release of the claims.
pub async fn commit_batch(
    client: &mut Client,
    batch_id: Uuid,
    worker_id: &str,
    files: &[FileToCommit],
    tables: &TableNames,
    dedupe: bool,
) -> Result<CommitSummary, tokio_postgres::Error> {
    let started = Instant::now();
    let mut sorted: Vec<&FileToCommit> = files.iter().collect();
    // One global order of ledger inserts keeps concurrent workers from deadlocking.
    sorted.sort_by(|a, b| a.name.cmp(&b.name));

    let mut names = Vec::with_capacity(sorted.len());
    let mut sizes = Vec::with_capacity(sorted.len());
    let mut outcomes = Vec::with_capacity(sorted.len());
    let mut loaded = Vec::with_capacity(sorted.len());
    let mut rejected = Vec::with_capacity(sorted.len());
    let mut reasons: Vec<Option<String>> = Vec::with_capacity(sorted.len());
    let mut messages: Vec<Option<String>> = Vec::with_capacity(sorted.len());
    for f in &sorted {
        names.push(f.name.clone());
        sizes.push(i64::try_from(f.size).unwrap_or(i64::MAX));
        match &f.content {
            FileContent::Rows {
                valid_rows,
                rejects,
                ..
            } => {
                outcomes.push("loaded");
                loaded.push(i64::try_from(*valid_rows).unwrap_or(i64::MAX));
                rejected.push(rejects.len() as i64);
                reasons.push(None);
                messages.push(None);
            }
            FileContent::Failed { reason, message } => {
                outcomes.push("failed");
                loaded.push(0);
                rejected.push(0);
                reasons.push(Some(reason.clone()));
                messages.push(Some(message.clone()));
            }
        }
    }

    let tx = client.transaction().await?;
    let owned_rows = tx
        .query(
            "INSERT INTO sluice_files
                 (file_name, file_size, batch_id, worker_id, outcome, rows_loaded, rows_rejected, failure_reason, failure_message)
             SELECT f.name, f.size, $1, $2, f.outcome, f.loaded, f.rejected, f.reason, f.message
             FROM unnest($3::text[], $4::int8[], $5::text[], $6::int8[], $7::int8[], $8::text[], $9::text[])
                  WITH ORDINALITY AS f(name, size, outcome, loaded, rejected, reason, message, ord)
             ORDER BY f.ord
             ON CONFLICT (file_name) DO NOTHING
             RETURNING file_name",
            &[
                &batch_id, &worker_id, &names, &sizes, &outcomes, &loaded, &rejected, &reasons, &messages,
            ],
        )
        .await?;
    let owned: std::collections::HashSet<String> =
        owned_rows.iter().map(|r| r.get::<_, String>(0)).collect();
    let mut summary = CommitSummary::default();
    for f in &sorted {
        if !owned.contains(&f.name) {
            summary.skipped.push(f.name.clone());
        }
    }
    if owned.is_empty() {
        tx.rollback().await?;
        return Ok(summary);
    }

    let owned_files: Vec<&FileToCommit> = sorted
        .iter()
        .copied()
        .filter(|f| owned.contains(&f.name))
        .collect();
    let columns = "event_id, event_time, user_id, session_id, event_type, product_id, category, price, quantity";
    let target = if dedupe {
        tx.batch_execute(&format!(
            "CREATE TEMP TABLE IF NOT EXISTS sluice_stage (LIKE {} INCLUDING DEFAULTS) ON COMMIT DELETE ROWS",
            tables.events
        ))
        .await?;
        "sluice_stage".to_string()
    } else {
        tables.events.clone()
    };
    let mut valid_total = 0u64;
    let has_rows = owned_files
        .iter()
        .any(|f| matches!(&f.content, FileContent::Rows { valid_rows, .. } if *valid_rows > 0));
    if has_rows {
        let sink = tx
            .copy_in(&format!("COPY {target} ({columns}) FROM STDIN"))
            .await?;
        futures::pin_mut!(sink);
        for f in &owned_files {
            if let FileContent::Rows {
                copy, valid_rows, ..
            } = &f.content
            {
                valid_total += valid_rows;
                if !copy.is_empty() {
                    sink.feed(copy.clone()).await?;
                }
            }
        }
        sink.finish().await?;
    }
    summary.rows_loaded = valid_total;
    if dedupe && valid_total > 0 {
        let inserted = tx
            .execute(
                &format!(
                    "INSERT INTO {} ({columns}) SELECT {columns} FROM sluice_stage ON CONFLICT (event_id) DO NOTHING",
                    tables.events
                ),
                &[],
            )
            .await?;
        summary.rows_loaded = inserted;
        summary.rows_deduplicated = valid_total - inserted.min(valid_total);
    }

    let quarantine = encode_rejects(&owned_files, batch_id, &mut summary);
    if !quarantine.is_empty() {
        let sink = tx
            .copy_in(&format!(
                "COPY {} (source_file, line_number, reason, message, raw_line, raw_bytes, batch_id) FROM STDIN",
                tables.quarantine
            ))
            .await?;
        futures::pin_mut!(sink);
        sink.send(quarantine).await?;
        sink.finish().await?;
    }
    summary.failed_files = owned_files
        .iter()
        .filter(|f| matches!(f.content, FileContent::Failed { .. }))
        .count() as u64;

    let owned_names: Vec<String> = owned_files.iter().map(|f| f.name.clone()).collect();
    tx.execute(
        "INSERT INTO sluice_batches (batch_id, worker_id, files, rows_loaded, rows_rejected, rows_deduplicated)
         VALUES ($1, $2, $3, $4, $5, $6)",
        &[
            &batch_id,
            &worker_id,
            &(owned_names.len() as i32),
            &(summary.rows_loaded as i64),
            &(summary.rows_rejected as i64),
            &(summary.rows_deduplicated as i64),
        ],
    )
    .await?;
    tx.execute(
        "DELETE FROM sluice_claims WHERE file_name = ANY($1)",
        &[&owned_names],
    )
    .await?;
    summary.copy_seconds = started.elapsed().as_secs_f64();
    let commit_started = Instant::now();
    tx.commit().await?;
    summary.commit_seconds = commit_started.elapsed().as_secs_f64();
    summary.owned = owned_names;
    summary.committed = true;
    Ok(summary)
}

/// Encodes the owned files' rejects as COPY text rows for the quarantine table.
fn encode_rejects(files: &[&FileToCommit], batch_id: Uuid, summary: &mut CommitSummary) -> Bytes {
    let mut out = BytesMut::new();
    let batch = batch_id.to_string();
    for f in files {
        let FileContent::Rows { rejects, .. } = &f.content else {
            continue;
        };
        for r in rejects.iter() {
            summary.rows_rejected += 1;
            *summary.rejected_by_reason.entry(r.reason).or_default() += 1;
            copy_text(&mut out, f.name.as_bytes());
            out.put_u8(b'\t');
            out.put_slice(r.line.to_string().as_bytes());
            out.put_u8(b'\t');
            out.put_slice(r.reason.code().as_bytes());
            out.put_u8(b'\t');
            copy_text(&mut out, r.message.as_bytes());
            out.put_u8(b'\t');
            match std::str::from_utf8(&r.raw) {
                Ok(text) => {
                    copy_text(&mut out, text.as_bytes());
                    out.put_slice(b"\t\\N");
                }
                Err(_) => {
                    copy_text(&mut out, String::from_utf8_lossy(&r.raw).as_bytes());
                    out.put_slice(b"\t\\\\x");
                    for b in r.raw.iter() {
                        out.put_slice(format!("{b:02x}").as_bytes());
                    }
                }
            }
            out.put_u8(b'\t');
            out.put_slice(batch.as_bytes());
            out.put_u8(b'\n');
        }
    }
    out.freeze()
}

/// Escapes a value for COPY's text format.
fn copy_text(out: &mut BytesMut, value: &[u8]) {
    for &b in value {
        match b {
            b'\\' => out.put_slice(b"\\\\"),
            b'\t' => out.put_slice(b"\\t"),
            b'\n' => out.put_slice(b"\\n"),
            b'\r' => out.put_slice(b"\\r"),
            0 => {} // PostgreSQL text cannot hold NUL; raw_bytes keeps the original.
            _ => out.put_u8(b),
        }
    }
}

/// Makes sure the configured tables exist (non-default names are created like the
/// migrated ones) and, with dedupe on, that events has a unique index on event_id.
pub async fn prepare_tables(
    client: &impl GenericClient,
    tables: &TableNames,
    dedupe: bool,
) -> Result<(), tokio_postgres::Error> {
    if tables.events != "events" {
        client
            .batch_execute(&format!(
                "CREATE TABLE IF NOT EXISTS {} (LIKE events INCLUDING ALL)",
                tables.events
            ))
            .await?;
    }
    if tables.quarantine != "quarantine" {
        client
            .batch_execute(&format!(
                "CREATE TABLE IF NOT EXISTS {} (LIKE quarantine INCLUDING ALL)",
                tables.quarantine
            ))
            .await?;
    }
    if dedupe {
        client
            .batch_execute(&format!(
                "CREATE UNIQUE INDEX IF NOT EXISTS {0}_event_id_key ON {0} (event_id)",
                tables.events
            ))
            .await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_text_escapes_specials() {
        let mut out = BytesMut::new();
        copy_text(&mut out, b"a\\b\tc\nd\re\0f");
        assert_eq!(&out[..], &b"a\\\\b\\tc\\nd\\ref"[..]);
    }
}
