//! What a replay did, counted by reason, and how it is printed (text for people, JSON for
//! scripts and `kubectl sluice replay`). Also the per-file and per-batch ledger deltas
//! of one chunk, so the ledger's totals stay exact after rows move.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;
use uuid::Uuid;

/// Totals of a replay run (or of what a dry run would do).
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ReplaySummary {
    pub pipeline: String,
    pub dry_run: bool,
    /// Quarantined rows looked at.
    pub examined: u64,
    /// Rows inserted into the target table and removed from quarantine.
    pub moved: u64,
    /// Rows that passed but whose key was already stored (dedupe mode): removed from
    /// quarantine and counted as deduplicated, not inserted.
    pub deduplicated: u64,
    /// Rows still rejected under the current rules.
    pub still_bad: u64,
    /// Rows that cannot be replayed (see `notReplayableByWhy`).
    pub not_replayable: u64,
    /// Moved (and deduplicated) rows by the reason they had been quarantined with.
    pub moved_by_reason: BTreeMap<String, u64>,
    /// Rows still bad, by the reason they get today.
    pub still_bad_by_reason: BTreeMap<String, u64>,
    pub not_replayable_by_why: BTreeMap<String, u64>,
    /// Transactions committed (rolled back in a dry run).
    pub chunks: u64,
}

impl ReplaySummary {
    /// The summary for people.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        let verb = if self.dry_run { "would move" } else { "moved" };
        let _ = writeln!(
            out,
            "Replay of pipeline {}{}: {} rows examined in {} chunks",
            self.pipeline,
            if self.dry_run {
                " (dry run, nothing changed)"
            } else {
                ""
            },
            self.examined,
            self.chunks
        );
        let _ = writeln!(
            out,
            "  {verb} to the target table: {}{}",
            self.moved,
            if self.deduplicated > 0 {
                format!(" (+{} already stored, deduplicated)", self.deduplicated)
            } else {
                String::new()
            }
        );
        for (reason, n) in &self.moved_by_reason {
            let _ = writeln!(out, "    {reason:<28} {n:>10}");
        }
        let _ = writeln!(out, "  still bad (left in quarantine): {}", self.still_bad);
        for (reason, n) in &self.still_bad_by_reason {
            let _ = writeln!(out, "    {reason:<28} {n:>10}");
        }
        if self.not_replayable > 0 {
            let _ = writeln!(
                out,
                "  not replayable (left in quarantine): {}",
                self.not_replayable
            );
            for (why, n) in &self.not_replayable_by_why {
                let _ = writeln!(out, "    {why:<28} {n:>10}");
            }
        }
        out
    }
}

/// Key of a ledger row: the file's name and content digest.
pub type FileKey = (String, Vec<u8>);

/// How one chunk changes the ledger.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct LedgerDelta {
    /// Per file: (rows moved into the target, rows deduplicated).
    pub files: BTreeMap<FileKey, (i64, i64)>,
    /// Per batch that quarantined the rows: the same.
    pub batches: BTreeMap<Uuid, (i64, i64)>,
}

impl LedgerDelta {
    /// Counts `loaded` moved and `deduplicated` skipped rows of one file and batch.
    pub fn add(&mut self, file: &FileKey, batch: Option<Uuid>, loaded: i64, deduplicated: i64) {
        let f = self.files.entry(file.clone()).or_default();
        f.0 += loaded;
        f.1 += deduplicated;
        if let Some(b) = batch {
            let b = self.batches.entry(b).or_default();
            b.0 += loaded;
            b.1 += deduplicated;
        }
    }

    /// The columns of `UPDATE … FROM unnest(…)` for the files, in name order (one lock
    /// order for every replay): names, digests, loaded, deduplicated.
    pub fn file_columns(&self) -> (Vec<String>, Vec<Vec<u8>>, Vec<i64>, Vec<i64>) {
        let mut cols = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for ((name, digest), (loaded, dedup)) in &self.files {
            cols.0.push(name.clone());
            cols.1.push(digest.clone());
            cols.2.push(*loaded);
            cols.3.push(*dedup);
        }
        cols
    }

    /// The same for the batches, in id order.
    pub fn batch_columns(&self) -> (Vec<Uuid>, Vec<i64>, Vec<i64>) {
        let mut cols = (Vec::new(), Vec::new(), Vec::new());
        for (id, (loaded, dedup)) in &self.batches {
            cols.0.push(*id);
            cols.1.push(*loaded);
            cols.2.push(*dedup);
        }
        cols
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_names_every_reason_and_json_is_camel_case() {
        let s = ReplaySummary {
            pipeline: "orders".into(),
            dry_run: true,
            examined: 5,
            moved: 3,
            deduplicated: 1,
            still_bad: 1,
            not_replayable: 0,
            moved_by_reason: [("not_allowed".to_string(), 4)].into(),
            still_bad_by_reason: [("bad_price".to_string(), 1)].into(),
            not_replayable_by_why: BTreeMap::new(),
            chunks: 2,
        };
        let text = s.to_text();
        assert!(
            text.contains("dry run") && text.contains("would move"),
            "{text}"
        );
        assert!(
            text.contains("not_allowed") && text.contains("bad_price"),
            "{text}"
        );
        assert!(text.contains("+1 already stored"), "{text}");
        assert!(!text.contains("not replayable"), "{text}");
        let json = serde_json::to_value(&s).expect("json");
        assert_eq!(json["stillBadByReason"]["bad_price"], 1);
        assert_eq!(json["dryRun"], true);
    }

    #[test]
    fn deltas_add_up_per_file_and_batch_in_a_fixed_order() {
        let mut d = LedgerDelta::default();
        let b = Uuid::from_u128(7);
        d.add(&("b.csv".into(), vec![2]), Some(b), 1, 0);
        d.add(&("a.csv".into(), vec![1]), Some(b), 0, 1);
        d.add(&("b.csv".into(), vec![2]), None, 2, 0);
        let (names, digests, loaded, dedup) = d.file_columns();
        assert_eq!(names, ["a.csv", "b.csv"]);
        assert_eq!(digests, [vec![1], vec![2]]);
        assert_eq!((loaded, dedup), (vec![0, 3], vec![1, 0]));
        assert_eq!(d.batch_columns(), (vec![b], vec![1], vec![1]));
    }
}
