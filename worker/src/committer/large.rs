//! Loading a large file part by part: each part is parsed on a blocking thread while its
//! rows stream into COPY, and commits with the ledger's record of how far the file got.

use std::io::{Seek, SeekFrom};
use std::time::{Duration, SystemTime};

use tokio::sync::mpsc;
use uuid::Uuid;

use super::{Committer, DATABASE_REJECTED, Failure};
use crate::batch_commit::{CommitSummary, FileContent, FileToCommit, Settlement};
use crate::dbconn::Backoff;
use crate::input;
use crate::landing;
use crate::ledger::{self, Outcome, hex};
use crate::part_commit::{self, PartError, PartOutcome, PartStream, PartToCommit};
use crate::planner::LargeFile;
use crate::progress::Role;
use crate::settle::{Settle, settle};
use crate::source::LandingDirs;
use crate::validate::{self, Format, ParseError, PartLimits, Position, Rules};

/// Rejects of one part are held in memory until its quarantine COPY: a part ends early
/// once they reach this many bytes, which bounds memory for a file of bad rows.
const MAX_REJECT_BYTES_PER_PART: u64 = 4 << 20;
/// COPY text is handed from the parser to the connection in chunks of this size.
const COPY_CHUNK_BYTES: usize = 256 << 10;
/// Chunks in flight between the parser and the connection.
const CHUNKS_IN_FLIGHT: usize = 4;

/// What the part loop decided.
enum Next {
    Part(Position),
    Done,
    GiveUp,
}

impl Committer {
    /// Loads `file` from `file.start` to its end, one transaction per part.
    pub async fn load_large(&mut self, file: LargeFile) {
        let mut part = PartToCommit {
            name: file.name.clone(),
            size: file.size,
            digest: file.digest,
            start: file.start,
            duplicate_of: None,
        };
        tracing::info!(file = %file.name, bytes = file.size, offset = file.start.offset,
            "loading a large file in parts");
        let mut backoff = Backoff::default();
        loop {
            let batch_id = Uuid::new_v4();
            let rules = self.rules();
            let limits = PartLimits {
                max_input_bytes: self.shared.settings.config.part_bytes,
                max_reject_bytes: MAX_REJECT_BYTES_PER_PART,
                copy_chunk_bytes: COPY_CHUNK_BYTES,
            };
            let dirs = self.dirs.clone();
            let kind = self.shared.settings.input_kind(&part.name);
            let (name, start) = (part.name.clone(), part.start);
            self.shared.watchdog.enter(Role::Committer);
            let client = self.db.get().await;
            let attempt = part_commit::commit_part(client, &self.ctx, batch_id, &part, || {
                spawn_parser(dirs, name, kind, start, rules, limits)
            })
            .await;
            self.shared.watchdog.leave(Role::Committer);
            let next = match attempt {
                Ok(outcome) => {
                    self.database_ok();
                    backoff = Backoff::default();
                    self.after_part(&file, &mut part, outcome).await
                }
                Err(PartError::Parse(ParseError::File(e))) => {
                    self.fail_large(&file, e.code(), &e.to_string()).await;
                    Next::Done
                }
                Err(PartError::Parse(e @ (ParseError::Io(_) | ParseError::NoLayout))) => {
                    tracing::warn!(file = %file.name, error = %e, "reading the large file failed; it is retried later");
                    self.shared.metrics.read_retries.inc();
                    Next::GiveUp
                }
                Err(PartError::Parse(ParseError::SinkClosed)) => Next::Part(part.start),
                Err(PartError::Db(e)) => match self.failed(e, &mut backoff).await {
                    Failure::Data(e) => {
                        let message = format!(
                            "PostgreSQL refused the rows of the part starting at line {}: {}",
                            part.start.line,
                            crate::db::describe_pg_error(&e)
                        );
                        self.fail_large(&file, DATABASE_REJECTED, &message).await;
                        Next::Done
                    }
                    Failure::Retry {
                        connection_lost: true,
                    } if self.landed(batch_id).await => self.resume_point(&file).await,
                    Failure::Retry { .. } => Next::Part(part.start),
                },
            };
            match next {
                Next::Part(start) => part.start = start,
                Next::Done | Next::GiveUp => break,
            }
        }
        self.shared.remove_in_flight([file.name.clone()].iter());
        let pipeline = self.shared.settings.pipeline.clone();
        let worker_id = self.shared.settings.worker_id.clone();
        if let Some(client) = self.db.current() {
            let _ = ledger::release_claims(client, &pipeline, &worker_id, Some(&[file.name])).await;
        }
    }

    fn rules(&self) -> Rules {
        self.shared.settings.rules()
    }

    async fn after_part(
        &mut self,
        file: &LargeFile,
        part: &mut PartToCommit,
        outcome: PartOutcome,
    ) -> Next {
        match outcome {
            PartOutcome::Committed {
                summary,
                rows_loaded,
                rows_deduplicated,
                seconds,
            } => {
                let mut counted = CommitSummary {
                    rows_loaded,
                    rows_deduplicated,
                    rows_rejected: summary.rejects.len() as u64,
                    committed: true,
                    ..CommitSummary::default()
                };
                for r in &summary.rejects {
                    *counted.rejected_by_reason.entry(r.reason).or_default() += 1;
                }
                self.count_rows(&counted);
                self.count_cleaned(&summary.cleaned);
                self.shared.metrics.file_parts.inc();
                self.shared
                    .metrics
                    .db_duration
                    .with_label_values(&["copy"])
                    .observe(seconds);
                self.mark_commit_time();
                tracing::info!(file = %file.name, from_line = part.start.line, to_line = summary.end.line,
                    loaded = rows_loaded, rejected = summary.rejects.len(), last = summary.at_eof,
                    "part of a large file committed");
                if !summary.at_eof {
                    return Next::Part(summary.end);
                }
                self.shared
                    .metrics
                    .files
                    .with_label_values(&["loaded"])
                    .inc();
                if let Ok(age) = SystemTime::now().duration_since(file.landed) {
                    self.shared.metrics.file_latency.observe(age.as_secs_f64());
                }
                self.settle_large(file, Outcome::Loaded, None);
                Next::Done
            }
            PartOutcome::Moved => self.resume_point(file).await,
            PartOutcome::Redelivery { original } => {
                tracing::info!(file = %file.name, first_name = %original,
                    "identical content was loaded under another name; loading it again as configured");
                part.duplicate_of = Some(original);
                Next::Part(part.start)
            }
            PartOutcome::RecordedRedelivery { original } => {
                tracing::info!(file = %file.name, first_name = %original,
                    "identical content was already recorded under another name; recorded as a re-delivery, not loaded again");
                self.shared.metrics.redelivered_files.inc();
                self.shared
                    .metrics
                    .files
                    .with_label_values(&["redelivered"])
                    .inc();
                self.settle_large(file, Outcome::Redelivered, None);
                Next::Done
            }
        }
    }

    /// Where the ledger says the file continues (after another worker or a lost
    /// acknowledgement moved it on).
    async fn resume_point(&mut self, file: &LargeFile) -> Next {
        let pipeline = self.shared.settings.pipeline.clone();
        let client = self.db.get().await;
        match ledger::entry(client, &pipeline, &file.name, &file.digest).await {
            Ok(Some(e)) if e.outcome == Outcome::Partial => match e.next {
                Some(next) => Next::Part(next),
                None => Next::GiveUp,
            },
            Ok(Some(e)) => {
                self.settle_large(
                    file,
                    e.outcome,
                    e.failure_reason
                        .as_deref()
                        .map(|r| (r, e.failure_message.as_deref().unwrap_or(""))),
                );
                Next::Done
            }
            Ok(None) | Err(_) => {
                self.db.broken();
                tokio::time::sleep(Duration::from_millis(200)).await;
                Next::GiveUp
            }
        }
    }

    fn settle_large(&self, file: &LargeFile, outcome: Outcome, failure: Option<(&str, &str)>) {
        let digest_hex = hex(&file.digest);
        settle(
            &self.shared,
            &self.dirs,
            &Settle {
                name: &file.name,
                digest_hex: &digest_hex,
                outcome,
                failure,
            },
        );
    }

    /// Records a large file as failed: a new entry when no part committed yet, else the
    /// partial entry turns failed (its committed parts stay loaded; the message says so).
    async fn fail_large(&mut self, file: &LargeFile, reason: &str, message: &str) {
        tracing::error!(file = %file.name, %reason, %message, "setting the large file aside");
        let pipeline = self.shared.settings.pipeline.clone();
        let client = self.db.get().await;
        let updated = client
            .execute(
                "UPDATE sluice_files SET outcome = 'failed', failure_reason = $4,
                     failure_message = $5 || ' (the parts committed before stay loaded)'
                 WHERE pipeline = $1 AND file_name = $2 AND content_sha256 = $3 AND outcome = 'partial'",
                &[&pipeline, &file.name, &file.digest.as_slice(), &reason, &message],
            )
            .await;
        let recorded = match updated {
            Ok(1) => true,
            Ok(_) => {
                let failed = FileToCommit {
                    name: file.name.clone(),
                    size: file.size,
                    digest: file.digest,
                    content: FileContent::Failed {
                        reason: reason.into(),
                        message: message.into(),
                    },
                };
                let summary = self.commit_batch_of_one(&failed).await.unwrap_or_default();
                summary.settled.get(&file.name) == Some(&Settlement::Owned(Outcome::Failed))
            }
            Err(e) => {
                tracing::warn!(error = %e, "recording the large file as failed failed; retried later");
                false
            }
        };
        if recorded {
            self.shared
                .metrics
                .files
                .with_label_values(&["failed"])
                .inc();
            self.settle_large(file, Outcome::Failed, Some((reason, message)));
        }
    }

    async fn commit_batch_of_one(&mut self, f: &FileToCommit) -> Option<CommitSummary> {
        let mut backoff = Backoff::default();
        loop {
            let batch_id = Uuid::new_v4();
            let client = self.db.get().await;
            match crate::batch_commit::commit_batch(
                client,
                &self.ctx,
                batch_id,
                std::slice::from_ref(f),
            )
            .await
            {
                Ok(s) => return Some(s),
                Err(e) => match self.failed(e, &mut backoff).await {
                    Failure::Data(_) => return None,
                    Failure::Retry {
                        connection_lost: true,
                    } if self.landed(batch_id).await => return None,
                    Failure::Retry { .. } => continue,
                },
            }
        }
    }
}

/// Starts parsing one part on a blocking thread; its COPY text arrives in chunks.
/// A compressed file is decoded from its start each time (offsets count decompressed
/// bytes, see [`crate::input`]).
fn spawn_parser(
    dirs: LandingDirs,
    name: String,
    kind: input::Kind,
    start: Position,
    rules: Rules,
    limits: PartLimits,
) -> PartStream {
    let (tx, rx) = mpsc::channel::<Vec<u8>>(CHUNKS_IN_FLIGHT);
    let done = tokio::task::spawn_blocking(move || {
        let parse = || -> Result<validate::PartSummary, ParseError> {
            let (mut file, _) = landing::open_landing_file(&dirs, &name)?;
            let mut rules = rules;
            if kind.format == Format::Csv
                && start != Position::START
                && rules.schema.as_ref().is_some_and(|d| d.layout.is_none())
            {
                // A declared schema's fields are matched through the header at the file's start.
                let layout = if kind.is_compressed() {
                    let mut from_start = input::decoded(kind, file.try_clone()?)?;
                    validate::read_layout(&mut from_start, &rules)?
                } else {
                    validate::read_layout(&mut file, &rules)?
                };
                if let Some(d) = rules.schema.as_mut() {
                    d.layout = Some(layout);
                }
            }
            file.seek(SeekFrom::Start(0))?;
            let mut sink = |chunk| tx.blocking_send(chunk).map_err(|_| ());
            if kind.is_compressed() {
                let mut content = input::decoded(kind, file)?;
                input::skip_to(&mut content, start.offset)?;
                validate::parse_part_as(
                    kind.format,
                    &mut content,
                    start,
                    &rules,
                    &limits,
                    &mut sink,
                )
            } else {
                file.seek(SeekFrom::Start(start.offset))?;
                validate::parse_part_as(kind.format, &mut file, start, &rules, &limits, &mut sink)
            }
        };
        parse().map_err(|e| input::classify(kind, e))
    });
    PartStream { chunks: rx, done }
}
