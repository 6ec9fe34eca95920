//! The ledger in PostgreSQL: which files of which pipeline are settled (by name and
//! content), who works on what (claims), and which batches committed. The commit
//! transactions themselves are in `batch_commit` and `part_commit`; the protocol is
//! described in docs/delivery-guarantee.md.

use std::collections::HashMap;

use tokio_postgres::Client;
use uuid::Uuid;

use crate::validate::Position;

/// SHA-256 of a file's bytes: with the pipeline and the name, a file's identity.
pub type Digest = [u8; 32];

/// Lower-case hex of a digest (or of the empty legacy digest: "").
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Settled state of a file in the ledger (`sluice_files.outcome`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Its rows are in the events table (and its rejects in quarantine).
    Loaded,
    /// Set aside whole (unreadable, not Sluice CSV, or refused by PostgreSQL).
    Failed,
    /// Same content as a file already recorded under another name; not loaded again.
    Redelivered,
    /// A large file whose first parts committed; the rest is still to load.
    Partial,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Loaded => "loaded",
            Outcome::Failed => "failed",
            Outcome::Redelivered => "redelivered",
            Outcome::Partial => "partial",
        }
    }

    pub fn parse(s: &str) -> Option<Outcome> {
        match s {
            "loaded" => Some(Outcome::Loaded),
            "failed" => Some(Outcome::Failed),
            "redelivered" => Some(Outcome::Redelivered),
            "partial" => Some(Outcome::Partial),
            _ => None,
        }
    }

    /// True once nothing more will be written for the file.
    pub fn is_final(self) -> bool {
        self != Outcome::Partial
    }
}

/// One row of `sluice_files`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LedgerEntry {
    pub file_name: String,
    /// Empty for files recorded before content identity existed (matches any content).
    pub digest: Vec<u8>,
    pub outcome: Outcome,
    pub failure_reason: Option<String>,
    pub failure_message: Option<String>,
    pub duplicate_of: Option<String>,
    /// Where the next part starts (large files in progress).
    pub next: Option<Position>,
}

impl LedgerEntry {
    /// True when this entry is about the file with content `digest`.
    pub fn matches(&self, digest: &Digest) -> bool {
        self.digest.is_empty() || self.digest.as_slice() == digest.as_slice()
    }
}

const ENTRY_COLUMNS: &str = "file_name, content_sha256, outcome, failure_reason, failure_message, duplicate_of, next_offset, next_line";

fn entry_of(row: &tokio_postgres::Row) -> Option<LedgerEntry> {
    let next = match (row.get::<_, Option<i64>>(6), row.get::<_, Option<i64>>(7)) {
        (Some(offset), Some(line)) => Some(Position {
            offset: u64::try_from(offset).ok()?,
            line: u64::try_from(line).ok()?,
        }),
        _ => None,
    };
    Some(LedgerEntry {
        file_name: row.get(0),
        digest: row.get(1),
        outcome: Outcome::parse(row.get(2))?,
        failure_reason: row.get(3),
        failure_message: row.get(4),
        duplicate_of: row.get(5),
        next,
    })
}

/// Ledger entries of the given file names (every content recorded under each name).
pub async fn entries_by_name(
    client: &Client,
    pipeline: &str,
    names: &[String],
) -> Result<HashMap<String, Vec<LedgerEntry>>, tokio_postgres::Error> {
    let rows = client
        .query(
            &format!(
                "SELECT {ENTRY_COLUMNS} FROM sluice_files WHERE pipeline = $1 AND file_name = ANY($2)"
            ),
            &[&pipeline, &names],
        )
        .await?;
    let mut out: HashMap<String, Vec<LedgerEntry>> = HashMap::new();
    for e in rows.iter().filter_map(entry_of) {
        out.entry(e.file_name.clone()).or_default().push(e);
    }
    Ok(out)
}

/// The entry of one file (by name and content), if any.
pub async fn entry(
    client: &Client,
    pipeline: &str,
    name: &str,
    digest: &Digest,
) -> Result<Option<LedgerEntry>, tokio_postgres::Error> {
    let by_name = entries_by_name(client, pipeline, &[name.to_string()]).await?;
    Ok(by_name
        .get(name)
        .and_then(|entries| pick(entries, digest))
        .cloned())
}

/// The entry among a name's entries that is about the content `digest`: an exact
/// match first, then a legacy (digest-less) one.
pub fn pick<'a>(entries: &'a [LedgerEntry], digest: &Digest) -> Option<&'a LedgerEntry> {
    entries
        .iter()
        .find(|e| e.digest.as_slice() == digest.as_slice())
        .or_else(|| entries.iter().find(|e| e.digest.is_empty()))
}

/// Which of `digests` the ledger knows (under any name), plus names recorded without a
/// digest (legacy rows), for deciding what to re-ingest after a restore.
pub async fn known_contents(
    client: &Client,
    pipeline: &str,
    digests: &[Vec<u8>],
    names: &[String],
) -> Result<(Vec<Vec<u8>>, Vec<String>), tokio_postgres::Error> {
    let by_digest = client
        .query(
            "SELECT content_sha256 FROM sluice_files WHERE pipeline = $1 AND content_sha256 = ANY($2)",
            &[&pipeline, &digests],
        )
        .await?;
    let legacy = client
        .query(
            "SELECT file_name FROM sluice_files WHERE pipeline = $1 AND file_name = ANY($2) AND content_sha256 = '\\x'",
            &[&pipeline, &names],
        )
        .await?;
    Ok((
        by_digest.iter().map(|r| r.get(0)).collect(),
        legacy.iter().map(|r| r.get(0)).collect(),
    ))
}

/// What the ledger records as done by one worker of a pipeline (every run of it).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct WorkerTotals {
    pub rows_loaded: u64,
    pub rows_rejected: u64,
    pub rows_deduplicated: u64,
    /// Files by ledger outcome (loaded, failed, redelivered, partial).
    pub files: Vec<(String, u64)>,
}

/// This worker's totals in the ledger, from which its counters start so that they do
/// not drop when it restarts under the same id (a StatefulSet ordinal).
pub async fn worker_totals(
    client: &Client,
    pipeline: &str,
    worker_id: &str,
) -> Result<WorkerTotals, tokio_postgres::Error> {
    let rows = client
        .query_one(
            "SELECT coalesce(sum(rows_loaded), 0)::int8, coalesce(sum(rows_rejected), 0)::int8,
                    coalesce(sum(rows_deduplicated), 0)::int8
             FROM sluice_batches WHERE pipeline = $1 AND worker_id = $2",
            &[&pipeline, &worker_id],
        )
        .await?;
    let files = client
        .query(
            "SELECT outcome, count(*) FROM sluice_files
             WHERE pipeline = $1 AND worker_id = $2 GROUP BY outcome ORDER BY outcome",
            &[&pipeline, &worker_id],
        )
        .await?;
    let count = |i: usize| u64::try_from(rows.get::<_, i64>(i)).unwrap_or(0);
    Ok(WorkerTotals {
        rows_loaded: count(0),
        rows_rejected: count(1),
        rows_deduplicated: count(2),
        files: files
            .iter()
            .map(|r| {
                (
                    r.get::<_, String>(0),
                    u64::try_from(r.get::<_, i64>(1)).unwrap_or(0),
                )
            })
            .collect(),
    })
}

/// The answer to a claim.
#[derive(Debug, Default)]
pub struct ClaimResult {
    /// Files now claimed by this worker.
    pub claimed: Vec<String>,
    /// Of those, files whose claim was taken from another worker that stopped renewing it.
    pub taken_over: Vec<String>,
}

/// Claims `names` for `worker_id`. A claim is granted if nobody holds it, if this
/// worker already does (restart under the same id), or if its holder has not renewed it
/// for `timeout_secs` (taken over). Whether a claimed file is new is decided by the
/// caller from the ledger, by content.
///
/// The claim commits asynchronously (`synchronous_commit = off`): it skips the WAL flush
/// that would otherwise sit on every file's path to the table. Claims only keep workers
/// from parsing the same file twice; exactly-once rests on the ledger insert of the
/// batch's own (synchronous) commit. A claim a PostgreSQL crash loses lets another worker
/// take the file too, and the ledger lets only one of them load it.
pub async fn claim(
    client: &mut Client,
    pipeline: &str,
    worker_id: &str,
    names: &[String],
    timeout_secs: u64,
) -> Result<ClaimResult, tokio_postgres::Error> {
    let tx = client.transaction().await?;
    tx.batch_execute("SET LOCAL synchronous_commit = off")
        .await?;
    let rows = tx
        .query(
            "WITH cand AS (
                 SELECT c.file_name, c.ord FROM unnest($2::text[]) WITH ORDINALITY AS c(file_name, ord)
             ),
             prior AS (
                 SELECT s.file_name, s.worker_id FROM sluice_claims s JOIN cand USING (file_name)
                 WHERE s.pipeline = $1
             ),
             claimed AS (
                 INSERT INTO sluice_claims AS s (pipeline, file_name, worker_id, claimed_at)
                 SELECT $1, c.file_name, $3, now() FROM cand c
                 ORDER BY c.ord
                 ON CONFLICT (pipeline, file_name) DO UPDATE SET worker_id = EXCLUDED.worker_id, claimed_at = now()
                 WHERE s.worker_id = EXCLUDED.worker_id
                    OR s.claimed_at < now() - make_interval(secs => $4::float8)
                 RETURNING s.file_name
             )
             SELECT c.file_name, p.worker_id FROM claimed c LEFT JOIN prior p USING (file_name)",
            &[&pipeline, &names, &worker_id, &(timeout_secs as f64)],
        )
        .await?;
    tx.commit().await?;
    let mut result = ClaimResult::default();
    for row in rows {
        let name: String = row.get(0);
        let prior: Option<String> = row.get(1);
        if prior.is_some_and(|p| p != worker_id) {
            result.taken_over.push(name.clone());
        }
        result.claimed.push(name);
    }
    Ok(result)
}

/// Renews this worker's claims on `names` (the files of batches that are moving).
pub async fn renew_claims(
    client: &Client,
    pipeline: &str,
    worker_id: &str,
    names: &[String],
) -> Result<u64, tokio_postgres::Error> {
    client
        .execute(
            "UPDATE sluice_claims SET claimed_at = now()
             WHERE pipeline = $1 AND worker_id = $2 AND file_name = ANY($3)",
            &[&pipeline, &worker_id, &names],
        )
        .await
}

/// Gives up this worker's claims on `names`, or on everything when `names` is None
/// (graceful shutdown), so others pick the files up at once.
pub async fn release_claims(
    client: &Client,
    pipeline: &str,
    worker_id: &str,
    names: Option<&[String]>,
) -> Result<u64, tokio_postgres::Error> {
    match names {
        Some(names) => {
            client
                .execute(
                    "DELETE FROM sluice_claims WHERE pipeline = $1 AND worker_id = $2 AND file_name = ANY($3)",
                    &[&pipeline, &worker_id, &names],
                )
                .await
        }
        None => {
            client
                .execute(
                    "DELETE FROM sluice_claims WHERE pipeline = $1 AND worker_id = $2",
                    &[&pipeline, &worker_id],
                )
                .await
        }
    }
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

/// Files committed between two upkeep passes, at the least: a pass costs a few
/// milliseconds, so it runs at most every few batches.
pub const UPKEEP_EVERY_FILES: u64 = 1_000;
/// Least time between two vacuums of the claims table once the planner has statistics.
pub const UPKEEP_EVERY: std::time::Duration = std::time::Duration::from_secs(10);

/// When the worker looks after its own tables (see [`upkeep`]). Pure bookkeeping: the
/// committer notes the files it commits and asks whether a pass is due.
///
/// Why the worker does it at all: without planner statistics PostgreSQL guesses that
/// `file_name = ANY($names)` keeps most rows, and serves the ledger lookup, the claim
/// and the claims' delete by scanning every entry of the pipeline in the primary key,
/// so each batch cost O(files so far) and a backlog drained in O(n²) (100,000 files:
/// the lookup went from 8 to 43 ms a batch). Autovacuum would analyze the tables, but
/// it visits a database once a minute at best (`autovacuum_naptime`), and a fresh
/// database with a backlog is drained, or well into it, by then. The claims table also
/// takes every file's claim and its delete: 100,000 dead rows per 100,000 files until a
/// vacuum.
#[derive(Debug, Clone, Default)]
pub struct UpkeepClock {
    files_since: u64,
    last: Option<std::time::Instant>,
    /// Both tables had planner statistics at the last pass.
    stats_ok: bool,
    /// Set once the session turned out not to be allowed to vacuum the tables.
    disabled: bool,
}

impl UpkeepClock {
    /// `files` more committed.
    pub fn note(&mut self, files: u64) {
        self.files_since = self.files_since.saturating_add(files);
    }

    /// Whether a pass is due: after [`UPKEEP_EVERY_FILES`] files; while statistics are
    /// missing at once, else at most every [`UPKEEP_EVERY`].
    pub fn due(&self, now: std::time::Instant) -> bool {
        !self.disabled
            && self.files_since >= UPKEEP_EVERY_FILES
            && (!self.stats_ok
                || self
                    .last
                    .is_none_or(|t| now.saturating_duration_since(t) >= UPKEEP_EVERY))
    }

    /// A pass ran at `now`; `stats_ok` tells whether both tables have statistics now.
    pub fn ran(&mut self, now: std::time::Instant, stats_ok: bool) {
        self.files_since = 0;
        self.last = Some(now);
        self.stats_ok = stats_ok;
    }

    /// No more passes (the session may not vacuum the tables).
    pub fn disable(&mut self) {
        self.disabled = true;
    }
}

/// What one [`upkeep`] pass found and did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UpkeepPass {
    /// False when this session may not vacuum or analyze the tables (not their owner's
    /// role nor the database owner's): PostgreSQL would skip them with a warning, so
    /// nothing was run and autovacuum alone looks after them.
    pub allowed: bool,
    /// `sluice_files` had no statistics and was analyzed.
    pub analyzed_ledger: bool,
    /// Both tables have planner statistics on `file_name` after the pass.
    pub stats_ok: bool,
}

/// Whether `table`'s `file_name` column has planner statistics (`pg_stats`, which
/// unlike `pg_statistic` any role that may read the column can see).
async fn has_stats(client: &Client, table: &str) -> Result<bool, tokio_postgres::Error> {
    let row = client
        .query_one(
            "SELECT EXISTS (
                 SELECT 1 FROM pg_stats s
                 JOIN pg_namespace n ON n.nspname = s.schemaname
                 JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = s.tablename
                 WHERE c.oid = $1::text::regclass AND s.attname = 'file_name')",
            &[&table],
        )
        .await?;
    Ok(row.get(0))
}

/// One upkeep pass on the committer's connection, outside any transaction (VACUUM
/// cannot run in one): vacuums and analyzes `sluice_claims`, and analyzes `sluice_files`
/// while it has no statistics (afterwards autovacuum keeps them: a unique name stays
/// unique however the ledger grows). `SKIP_LOCKED` leaves a table another session is
/// vacuuming or altering to the next pass instead of waiting for it. Analyzing an empty
/// table records no statistics, and old ones are kept, so a pass that finds the claims
/// table empty is simply repeated later.
pub async fn upkeep(client: &Client) -> Result<UpkeepPass, tokio_postgres::Error> {
    let allowed: bool = client
        .query_one(
            "SELECT bool_and(pg_has_role(c.relowner, 'USAGE'))
                    OR (SELECT pg_has_role(d.datdba, 'USAGE') FROM pg_database d
                        WHERE d.datname = current_database())
             FROM pg_class c
             WHERE c.oid IN ('sluice_claims'::regclass, 'sluice_files'::regclass)",
            &[],
        )
        .await?
        .get::<_, Option<bool>>(0)
        .unwrap_or(false);
    if !allowed {
        return Ok(UpkeepPass::default());
    }
    // One statement per call: a multi-statement string is one transaction block.
    client
        .batch_execute("VACUUM (SKIP_LOCKED, ANALYZE) sluice_claims")
        .await?;
    let mut analyzed_ledger = false;
    if !has_stats(client, "sluice_files").await? {
        client
            .batch_execute("ANALYZE (SKIP_LOCKED) sluice_files")
            .await?;
        analyzed_ledger = true;
    }
    let stats_ok =
        has_stats(client, "sluice_files").await? && has_stats(client, "sluice_claims").await?;
    Ok(UpkeepPass {
        allowed: true,
        analyzed_ledger,
        stats_ok,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(digest: &[u8], outcome: Outcome) -> LedgerEntry {
        LedgerEntry {
            file_name: "export.csv".into(),
            digest: digest.to_vec(),
            outcome,
            failure_reason: None,
            failure_message: None,
            duplicate_of: None,
            next: None,
        }
    }

    #[test]
    fn outcomes_round_trip() {
        for o in [
            Outcome::Loaded,
            Outcome::Failed,
            Outcome::Redelivered,
            Outcome::Partial,
        ] {
            assert_eq!(Outcome::parse(o.as_str()), Some(o));
        }
        assert_eq!(Outcome::parse("done"), None);
        assert!(!Outcome::Partial.is_final());
    }

    #[test]
    fn a_reused_name_with_new_content_matches_no_entry() {
        let old = [1u8; 32];
        let new = [2u8; 32];
        let entries = vec![entry(&old, Outcome::Loaded)];
        assert!(pick(&entries, &new).is_none());
        assert_eq!(
            pick(&entries, &old).map(|e| e.outcome),
            Some(Outcome::Loaded)
        );
        // A row from before content identity matches whatever the content.
        let legacy = vec![entry(&[], Outcome::Loaded)];
        assert!(pick(&legacy, &new).is_some());
        assert_eq!(hex(&[0xab, 0x01]), "ab01");
    }

    #[test]
    fn upkeep_runs_every_thousand_files_and_then_at_most_every_ten_seconds() {
        let t0 = std::time::Instant::now();
        let mut clock = UpkeepClock::default();
        assert!(!clock.due(t0), "nothing committed yet");
        clock.note(999);
        assert!(!clock.due(t0));
        clock.note(1);
        assert!(clock.due(t0));
        // Statistics still missing: the next thousand files bring the next pass.
        clock.ran(t0, false);
        clock.note(1_000);
        assert!(clock.due(t0 + std::time::Duration::from_millis(100)));
        // With statistics, a vacuum of the claims every ten seconds is enough.
        clock.ran(t0, true);
        clock.note(5_000);
        assert!(!clock.due(t0 + std::time::Duration::from_secs(9)));
        assert!(clock.due(t0 + UPKEEP_EVERY));
        clock.disable();
        assert!(!clock.due(t0 + UPKEEP_EVERY * 10));
    }
}
