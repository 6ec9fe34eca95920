//! The transaction of a batch of small files: ledger entries first (which settles races
//! with other workers and detects re-deliveries), then the owned files' rows, their
//! rejects, the batch record and the release of the claims — all or nothing.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use futures::SinkExt;
use sluice_core::RejectReason;
use sluice_core::config::{CopyFormat, TableNames};
use tokio_postgres::{Client, Transaction};
use uuid::Uuid;

use crate::copy_text::{QUARANTINE_COLUMNS, quarantine_row};
use crate::ledger::{Digest, Outcome};
use crate::validate::Rejected;

/// The columns of the events table the worker writes, in COPY order.
pub const EVENT_COLUMNS: &str =
    "event_id, event_time, user_id, session_id, event_type, product_id, category, price, quantity";

/// The table valid rows go to, as SQL.
#[derive(Debug, Clone)]
pub struct Target {
    /// The table (a declared schema's name quoted).
    pub table: String,
    /// The column list of COPY, in table order.
    pub columns: String,
    /// The dedupe key column.
    pub key: String,
    /// The wire format of the rows (the parser writes them in it too: `Rules::copy_format`).
    pub format: CopyFormat,
}

impl Target {
    pub fn new(
        tables: &TableNames,
        schema: Option<&crate::validate::general::CompiledSchema>,
        format: CopyFormat,
    ) -> Target {
        use sluice_core::schema::quote_ident;
        match schema {
            None => Target {
                table: tables.events.clone(),
                columns: EVENT_COLUMNS.into(),
                key: "event_id".into(),
                format,
            },
            Some(s) => Target {
                table: quote_ident(&s.schema.table),
                columns: s
                    .schema
                    .columns
                    .iter()
                    .map(|c| quote_ident(&c.name))
                    .collect::<Vec<_>>()
                    .join(", "),
                // check() refuses dedupe without a key; the first column stands in otherwise.
                key: quote_ident(s.schema.key.as_deref().unwrap_or(&s.schema.columns[0].name)),
                format,
            },
        }
    }

    /// `COPY into (columns) FROM STDIN` in the target's format; `into` is the target
    /// table or a staging table with the same columns.
    pub fn copy_sql(&self, into: &str) -> String {
        match self.format {
            CopyFormat::Text => format!("COPY {into} ({}) FROM STDIN", self.columns),
            CopyFormat::Binary => {
                format!("COPY {into} ({}) FROM STDIN (FORMAT binary)", self.columns)
            }
        }
    }

    /// What a COPY stream of rows starts with (binary: the signature), before any row.
    pub fn copy_start(&self) -> Bytes {
        match self.format {
            CopyFormat::Text => Bytes::new(),
            CopyFormat::Binary => Bytes::from_static(crate::copy_binary::HEADER),
        }
    }

    /// What a COPY stream of rows ends with, after the last row.
    pub fn copy_end(&self) -> Bytes {
        match self.format {
            CopyFormat::Text => Bytes::new(),
            CopyFormat::Binary => Bytes::from_static(crate::copy_binary::TRAILER),
        }
    }
}

/// Who commits, where, and how.
#[derive(Debug, Clone)]
pub struct CommitContext {
    pub pipeline: String,
    pub worker_id: String,
    pub tables: TableNames,
    pub target: Target,
    pub dedupe: bool,
    pub load_redeliveries: bool,
}

/// One file of a batch, ready to commit.
#[derive(Debug, Clone)]
pub struct FileToCommit {
    pub name: String,
    pub size: u64,
    pub digest: Digest,
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

/// What the transaction decided for one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Settlement {
    /// This transaction wrote the file's ledger entry with this outcome.
    Owned(Outcome),
    /// Already settled by another worker or an earlier attempt (nothing written).
    AlreadySettled,
}

/// What a commit did.
#[derive(Debug, Default, Clone)]
pub struct CommitSummary {
    /// Per file name: what happened.
    pub settled: BTreeMap<String, Settlement>,
    /// For re-deliveries: the name the content was first recorded under.
    pub duplicate_of: BTreeMap<String, String>,
    /// For files this batch recorded as failed: (reason, message). A file PostgreSQL
    /// refused is failed here although its planned content was valid.
    pub failures: BTreeMap<String, (String, String)>,
    pub rows_loaded: u64,
    pub rows_rejected: u64,
    pub rows_deduplicated: u64,
    pub rejected_by_reason: BTreeMap<RejectReason, u64>,
    /// False when nothing was written (every file already settled).
    pub committed: bool,
    pub copy_seconds: f64,
    pub commit_seconds: f64,
}

impl CommitSummary {
    pub fn owned(&self) -> impl Iterator<Item = (&String, Outcome)> {
        self.settled.iter().filter_map(|(n, s)| match s {
            Settlement::Owned(o) => Some((n, *o)),
            Settlement::AlreadySettled => None,
        })
    }

    pub fn skipped(&self) -> usize {
        self.settled
            .values()
            .filter(|s| **s == Settlement::AlreadySettled)
            .count()
    }

    pub fn absorb(&mut self, other: CommitSummary) {
        self.settled.extend(other.settled);
        self.duplicate_of.extend(other.duplicate_of);
        self.failures.extend(other.failures);
        self.rows_loaded += other.rows_loaded;
        self.rows_rejected += other.rows_rejected;
        self.rows_deduplicated += other.rows_deduplicated;
        for (r, n) in other.rejected_by_reason {
            *self.rejected_by_reason.entry(r).or_default() += n;
        }
        self.committed |= other.committed;
        self.copy_seconds += other.copy_seconds;
        self.commit_seconds += other.commit_seconds;
    }
}

/// Commits a batch in one transaction (see the module doc).
pub async fn commit_batch(
    client: &mut Client,
    ctx: &CommitContext,
    batch_id: Uuid,
    files: &[FileToCommit],
) -> Result<CommitSummary, tokio_postgres::Error> {
    let started = Instant::now();
    let mut sorted: Vec<&FileToCommit> = files.iter().collect();
    // One global order of ledger inserts keeps concurrent workers from deadlocking.
    sorted.sort_by(|a, b| a.name.cmp(&b.name));

    let tx = client.transaction().await?;
    let mut summary = CommitSummary::default();
    let owned = insert_entries(&tx, ctx, batch_id, &sorted, None).await?;
    let mut loading: Vec<&FileToCommit> = Vec::new();
    let mut missing: Vec<&FileToCommit> = Vec::new();
    for f in &sorted {
        if owned.contains(&f.name) {
            summary
                .settled
                .insert(f.name.clone(), Settlement::Owned(outcome_of(f)));
            if let FileContent::Failed { reason, message } = &f.content {
                summary
                    .failures
                    .insert(f.name.clone(), (reason.clone(), message.clone()));
            }
            loading.push(f);
        } else {
            missing.push(f);
        }
    }
    if !missing.is_empty() {
        settle_conflicts(&tx, ctx, batch_id, &missing, &mut summary, &mut loading).await?;
    }
    if summary.owned().next().is_none() {
        tx.rollback().await?;
        return Ok(summary);
    }

    let per_file = write_rows(&tx, ctx, &loading).await?;
    let quarantine = encode_rejects(ctx, &loading, batch_id, &mut summary);
    if !quarantine.is_empty() {
        let sink = tx
            .copy_in(&format!(
                "COPY {} ({QUARANTINE_COLUMNS}) FROM STDIN",
                ctx.tables.quarantine
            ))
            .await?;
        futures::pin_mut!(sink);
        sink.send(quarantine).await?;
        sink.finish().await?;
    }
    for (name, (loaded, deduplicated)) in &per_file {
        summary.rows_loaded += loaded;
        summary.rows_deduplicated += deduplicated;
        if ctx.dedupe {
            let f = loading.iter().find(|f| &f.name == name);
            if let Some(f) = f {
                tx.execute(
                    "UPDATE sluice_files SET rows_loaded = $4, rows_deduplicated = $5
                     WHERE pipeline = $1 AND file_name = $2 AND content_sha256 = $3",
                    &[
                        &ctx.pipeline,
                        &f.name,
                        &f.digest.as_slice(),
                        &(*loaded as i64),
                        &(*deduplicated as i64),
                    ],
                )
                .await?;
            }
        }
    }

    let owned_names: Vec<String> = summary.owned().map(|(n, _)| n.clone()).collect();
    tx.execute(
        "INSERT INTO sluice_batches (batch_id, pipeline, worker_id, files, rows_loaded, rows_rejected, rows_deduplicated)
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
        &[
            &batch_id,
            &ctx.pipeline,
            &ctx.worker_id,
            &(owned_names.len() as i32),
            &(summary.rows_loaded as i64),
            &(summary.rows_rejected as i64),
            &(summary.rows_deduplicated as i64),
        ],
    )
    .await?;
    let all_names: Vec<String> = sorted.iter().map(|f| f.name.clone()).collect();
    tx.execute(
        "DELETE FROM sluice_claims WHERE pipeline = $1 AND file_name = ANY($2)",
        &[&ctx.pipeline, &all_names],
    )
    .await?;
    summary.copy_seconds = started.elapsed().as_secs_f64();
    let commit_started = Instant::now();
    tx.commit().await?;
    summary.commit_seconds = commit_started.elapsed().as_secs_f64();
    summary.committed = true;
    Ok(summary)
}

fn outcome_of(f: &FileToCommit) -> Outcome {
    match f.content {
        FileContent::Rows { .. } => Outcome::Loaded,
        FileContent::Failed { .. } => Outcome::Failed,
    }
}

/// Inserts ledger entries; returns the names this transaction now owns. With
/// `duplicate_of`, the entries are re-deliveries (outside the one-entry-per-content
/// rule): recorded as such, or loaded when the switch says so.
async fn insert_entries(
    tx: &Transaction<'_>,
    ctx: &CommitContext,
    batch_id: Uuid,
    files: &[&FileToCommit],
    duplicate_of: Option<&HashMap<String, String>>,
) -> Result<HashSet<String>, tokio_postgres::Error> {
    let mut names = Vec::with_capacity(files.len());
    let mut digests: Vec<&[u8]> = Vec::with_capacity(files.len());
    let mut sizes = Vec::with_capacity(files.len());
    let mut outcomes = Vec::with_capacity(files.len());
    let mut loaded = Vec::with_capacity(files.len());
    let mut rejected = Vec::with_capacity(files.len());
    let mut reasons: Vec<Option<String>> = Vec::with_capacity(files.len());
    let mut messages: Vec<Option<String>> = Vec::with_capacity(files.len());
    let mut originals: Vec<Option<String>> = Vec::with_capacity(files.len());
    for f in files {
        let original = duplicate_of.and_then(|d| d.get(&f.name).cloned());
        names.push(f.name.clone());
        digests.push(f.digest.as_slice());
        sizes.push(i64::try_from(f.size).unwrap_or(i64::MAX));
        let redelivered = original.is_some() && !ctx.load_redeliveries;
        match (&f.content, redelivered) {
            (_, true) => {
                outcomes.push(Outcome::Redelivered.as_str());
                loaded.push(0);
                rejected.push(0);
                reasons.push(None);
                messages.push(None);
            }
            (
                FileContent::Rows {
                    valid_rows,
                    rejects,
                    ..
                },
                false,
            ) => {
                outcomes.push(Outcome::Loaded.as_str());
                loaded.push(i64::try_from(*valid_rows).unwrap_or(i64::MAX));
                rejected.push(rejects.len() as i64);
                reasons.push(None);
                messages.push(None);
            }
            (FileContent::Failed { reason, message }, false) => {
                outcomes.push(Outcome::Failed.as_str());
                loaded.push(0);
                rejected.push(0);
                reasons.push(Some(reason.clone()));
                messages.push(Some(message.clone()));
            }
        }
        originals.push(original);
    }
    let rows = tx
        .query(
            "INSERT INTO sluice_files
                 (pipeline, file_name, content_sha256, file_size, batch_id, worker_id, outcome,
                  rows_loaded, rows_rejected, failure_reason, failure_message, duplicate_of,
                  parts, next_offset)
             SELECT $1, f.name, f.digest, f.size, $2, $3, f.outcome, f.loaded, f.rejected,
                    f.reason, f.message, f.original, 1, f.size
             FROM unnest($4::text[], $5::bytea[], $6::int8[], $7::text[], $8::int8[], $9::int8[],
                         $10::text[], $11::text[], $12::text[])
                  WITH ORDINALITY AS f(name, digest, size, outcome, loaded, rejected, reason, message, original, ord)
             ORDER BY f.ord
             ON CONFLICT DO NOTHING
             RETURNING file_name",
            &[
                &ctx.pipeline,
                &batch_id,
                &ctx.worker_id,
                &names,
                &digests,
                &sizes,
                &outcomes,
                &loaded,
                &rejected,
                &reasons,
                &messages,
                &originals,
            ],
        )
        .await?;
    Ok(rows.iter().map(|r| r.get::<_, String>(0)).collect())
}

/// Files whose entry could not be inserted: either already settled (same name and
/// content), or a re-delivery of content recorded under another name.
async fn settle_conflicts<'a>(
    tx: &Transaction<'_>,
    ctx: &CommitContext,
    batch_id: Uuid,
    missing: &[&'a FileToCommit],
    summary: &mut CommitSummary,
    loading: &mut Vec<&'a FileToCommit>,
) -> Result<(), tokio_postgres::Error> {
    let names: Vec<String> = missing.iter().map(|f| f.name.clone()).collect();
    let digests: Vec<&[u8]> = missing.iter().map(|f| f.digest.as_slice()).collect();
    let rows = tx
        .query(
            "SELECT file_name, content_sha256 FROM sluice_files
             WHERE pipeline = $1 AND duplicate_of IS NULL
               AND (file_name = ANY($2) OR content_sha256 = ANY($3))",
            &[&ctx.pipeline, &names, &digests],
        )
        .await?;
    let existing: Vec<(String, Vec<u8>)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    let mut redelivered: Vec<&FileToCommit> = Vec::new();
    let mut originals: HashMap<String, String> = HashMap::new();
    for f in missing {
        let same_file = existing
            .iter()
            .any(|(n, d)| n == &f.name && (d.as_slice() == f.digest.as_slice() || d.is_empty()));
        let first = existing
            .iter()
            .find(|(n, d)| n != &f.name && d.as_slice() == f.digest.as_slice());
        match (same_file, first) {
            (false, Some((original, _))) => {
                originals.insert(f.name.clone(), original.clone());
                redelivered.push(f);
            }
            // Settled under this name, by another worker or an earlier attempt (or a
            // re-delivery row already recorded for it).
            _ => {
                summary
                    .settled
                    .insert(f.name.clone(), Settlement::AlreadySettled);
            }
        }
    }
    if redelivered.is_empty() {
        return Ok(());
    }
    let owned = insert_entries(tx, ctx, batch_id, &redelivered, Some(&originals)).await?;
    for f in redelivered {
        if !owned.contains(&f.name) {
            summary
                .settled
                .insert(f.name.clone(), Settlement::AlreadySettled);
            continue;
        }
        if let Some(original) = originals.get(&f.name) {
            summary
                .duplicate_of
                .insert(f.name.clone(), original.clone());
        }
        if ctx.load_redeliveries {
            summary
                .settled
                .insert(f.name.clone(), Settlement::Owned(outcome_of(f)));
            loading.push(f);
        } else {
            summary
                .settled
                .insert(f.name.clone(), Settlement::Owned(Outcome::Redelivered));
        }
    }
    Ok(())
}

/// COPYs the loading files' valid rows; returns (loaded, deduplicated) per file.
///
/// With dedupe the rows are first COPYed straight into the table inside a savepoint, as
/// without dedupe: the unique index on the key refuses a duplicate, and usually there is
/// none. Only when it refuses one is the savepoint rolled back and each file sent through
/// the staging table, which skips duplicates and counts them per file (`INSERT … ON
/// CONFLICT DO NOTHING` costs about twice a plain COPY; see docs/benchmarks.md).
async fn write_rows(
    tx: &Transaction<'_>,
    ctx: &CommitContext,
    files: &[&FileToCommit],
) -> Result<BTreeMap<String, (u64, u64)>, tokio_postgres::Error> {
    let mut per_file = BTreeMap::new();
    let with_rows: Vec<(&FileToCommit, &Bytes, u64)> = files
        .iter()
        .filter_map(|f| match &f.content {
            FileContent::Rows {
                copy, valid_rows, ..
            } if *valid_rows > 0 => Some((*f, copy, *valid_rows)),
            _ => None,
        })
        .collect();
    if with_rows.is_empty() {
        return Ok(per_file);
    }
    let direct = |per_file: &mut BTreeMap<String, (u64, u64)>| {
        for (f, _, valid) in &with_rows {
            per_file.insert(f.name.clone(), (*valid, 0));
        }
    };
    if !ctx.dedupe {
        copy_direct(tx, ctx, &with_rows).await?;
        direct(&mut per_file);
        return Ok(per_file);
    }
    tx.batch_execute("SAVEPOINT sluice_direct").await?;
    match copy_direct(tx, ctx, &with_rows).await {
        Ok(()) => {
            tx.batch_execute("RELEASE SAVEPOINT sluice_direct").await?;
            direct(&mut per_file);
            return Ok(per_file);
        }
        Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION) => {
            tracing::debug!("a duplicate key in the batch: loading it through the staging table");
            tx.batch_execute("ROLLBACK TO SAVEPOINT sluice_direct")
                .await?;
        }
        Err(e) => return Err(e),
    }
    let stage = create_stage(tx, ctx).await?;
    for (f, copy, valid) in &with_rows {
        let sink = tx.copy_in(&ctx.target.copy_sql(stage)).await?;
        futures::pin_mut!(sink);
        sink.feed(ctx.target.copy_start()).await?;
        sink.feed((*copy).clone()).await?;
        sink.feed(ctx.target.copy_end()).await?;
        sink.finish().await?;
        let inserted = insert_from_stage(tx, ctx).await?;
        per_file.insert(f.name.clone(), (inserted, valid - inserted.min(*valid)));
    }
    Ok(per_file)
}

/// One COPY of every file's rows into the target table.
async fn copy_direct(
    tx: &Transaction<'_>,
    ctx: &CommitContext,
    files: &[(&FileToCommit, &Bytes, u64)],
) -> Result<(), tokio_postgres::Error> {
    let sink = tx.copy_in(&ctx.target.copy_sql(&ctx.target.table)).await?;
    futures::pin_mut!(sink);
    sink.feed(ctx.target.copy_start()).await?;
    for (_, copy, _) in files {
        sink.feed((*copy).clone()).await?;
    }
    sink.feed(ctx.target.copy_end()).await?;
    sink.finish().await?;
    Ok(())
}

/// The staging table of dedupe mode: rows are COPYed there, then inserted into the
/// events table skipping event ids already stored. Returns its name.
pub async fn create_stage(
    tx: &Transaction<'_>,
    ctx: &CommitContext,
) -> Result<&'static str, tokio_postgres::Error> {
    tx.batch_execute(&format!(
        "CREATE TEMP TABLE IF NOT EXISTS sluice_stage (LIKE {} INCLUDING DEFAULTS) ON COMMIT DELETE ROWS",
        ctx.target.table
    ))
    .await?;
    Ok("sluice_stage")
}

/// Moves the staged rows into the events table; returns how many were new.
pub async fn insert_from_stage(
    tx: &Transaction<'_>,
    ctx: &CommitContext,
) -> Result<u64, tokio_postgres::Error> {
    let inserted = tx
        .execute(
            &format!(
                "INSERT INTO {0} ({1}) SELECT {1} FROM sluice_stage ON CONFLICT ({2}) DO NOTHING",
                ctx.target.table, ctx.target.columns, ctx.target.key
            ),
            &[],
        )
        .await?;
    tx.batch_execute("DELETE FROM sluice_stage").await?;
    Ok(inserted)
}

/// Encodes the loading files' rejects as COPY text rows for the quarantine table.
fn encode_rejects(
    ctx: &CommitContext,
    files: &[&FileToCommit],
    batch_id: Uuid,
    summary: &mut CommitSummary,
) -> Bytes {
    let mut out = BytesMut::new();
    for f in files {
        let FileContent::Rows { rejects, .. } = &f.content else {
            continue;
        };
        for r in rejects.iter() {
            summary.rows_rejected += 1;
            *summary.rejected_by_reason.entry(r.reason).or_default() += 1;
            quarantine_row(&mut out, &ctx.pipeline, &f.name, &f.digest, r, batch_id);
        }
    }
    out.freeze()
}
