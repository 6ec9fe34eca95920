//! Exact figures of a pipeline, from the ledger (not from per-process counters, which
//! restart at zero with their worker): files by outcome, rows loaded, rejected and
//! deduplicated, the quarantine's top reasons, and sample quarantined rows. Printed as
//! text for people and as JSON for `kubectl sluice`.

use std::fmt::Write as _;

use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio_postgres::Client;

/// The ledger's totals for one pipeline.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    pub pipeline: String,
    pub files: FileTotals,
    pub rows: RowTotals,
    pub quarantine: QuarantineTotals,
    /// When the last batch or part committed.
    pub last_commit: Option<DateTime<Utc>>,
}

/// Files in the ledger, by outcome.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FileTotals {
    pub total: i64,
    pub loaded: i64,
    pub failed: i64,
    pub redelivered: i64,
    /// Large files whose first parts committed.
    pub partial: i64,
}

/// Rows in the ledger.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RowTotals {
    pub loaded: i64,
    pub rejected: i64,
    pub deduplicated: i64,
    /// Rows changed by cleaning are counted by the workers' metrics only
    /// (`sluice_rows_cleaned_total`), not in the ledger: always null here.
    pub cleaned: Option<i64>,
}

/// What quarantine holds.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct QuarantineTotals {
    pub rows: i64,
    /// The most frequent reasons, most frequent first.
    pub top_reasons: Vec<ReasonCount>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReasonCount {
    pub reason: String,
    pub rows: i64,
}

/// Reads the report of `pipeline` (`top` reasons) in one snapshot.
pub async fn read(
    client: &mut Client,
    pipeline: &str,
    quarantine: &str,
    top: u32,
) -> Result<Report, tokio_postgres::Error> {
    let tx = client
        .build_transaction()
        .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await?;
    let f = tx
        .query_one(
            "SELECT count(*),
                    count(*) FILTER (WHERE outcome = 'loaded'),
                    count(*) FILTER (WHERE outcome = 'failed'),
                    count(*) FILTER (WHERE outcome = 'redelivered'),
                    count(*) FILTER (WHERE outcome = 'partial'),
                    coalesce(sum(rows_loaded), 0)::int8,
                    coalesce(sum(rows_rejected), 0)::int8,
                    coalesce(sum(rows_deduplicated), 0)::int8,
                    max(committed_at)
             FROM sluice_files WHERE pipeline = $1",
            &[&pipeline],
        )
        .await?;
    let last_part: Option<DateTime<Utc>> = tx
        .query_one(
            "SELECT max(committed_at) FROM sluice_batches WHERE pipeline = $1",
            &[&pipeline],
        )
        .await?
        .get(0);
    let reasons = tx
        .query(
            &format!(
                "SELECT reason, count(*) FROM {quarantine} WHERE pipeline = $1
                 GROUP BY reason ORDER BY count(*) DESC, reason"
            ),
            &[&pipeline],
        )
        .await?;
    tx.commit().await?;
    let all: Vec<ReasonCount> = reasons
        .iter()
        .map(|r| ReasonCount {
            reason: r.get(0),
            rows: r.get(1),
        })
        .collect();
    let last_file: Option<DateTime<Utc>> = f.get(8);
    Ok(Report {
        pipeline: pipeline.to_string(),
        files: FileTotals {
            total: f.get(0),
            loaded: f.get(1),
            failed: f.get(2),
            redelivered: f.get(3),
            partial: f.get(4),
        },
        rows: RowTotals {
            loaded: f.get(5),
            rejected: f.get(6),
            deduplicated: f.get(7),
            cleaned: None,
        },
        quarantine: QuarantineTotals {
            rows: all.iter().map(|r| r.rows).sum(),
            top_reasons: all.into_iter().take(top as usize).collect(),
        },
        last_commit: last_file.max(last_part),
    })
}

impl Report {
    /// The report for people.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        let f = &self.files;
        let r = &self.rows;
        let _ = writeln!(out, "Pipeline {} (exact, from the ledger)", self.pipeline);
        let _ = writeln!(
            out,
            "  files:  {} ({} loaded, {} failed, {} redelivered, {} partial)",
            f.total, f.loaded, f.failed, f.redelivered, f.partial
        );
        let _ = writeln!(
            out,
            "  rows:   {} loaded, {} rejected, {} deduplicated",
            r.loaded, r.rejected, r.deduplicated
        );
        let _ = writeln!(
            out,
            "  last commit: {}",
            self.last_commit
                .map_or_else(|| "never".to_string(), |t| t.to_rfc3339())
        );
        let _ = writeln!(out, "  quarantine: {} rows", self.quarantine.rows);
        for c in &self.quarantine.top_reasons {
            let _ = writeln!(out, "    {:<28} {:>10}", c.reason, c.rows);
        }
        out
    }
}

/// One quarantined row, for people.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct QuarantinedRow {
    pub id: i64,
    pub file: String,
    pub line: i64,
    pub reason: String,
    pub message: String,
    /// The row as text (invalid UTF-8 replaced).
    pub raw: String,
    pub quarantined_at: DateTime<Utc>,
}

/// Which quarantined rows to show.
#[derive(Debug, Clone, Default)]
pub struct SampleFilter {
    pub reasons: Vec<String>,
    pub files: Vec<String>,
    pub limit: u32,
}

/// The first `filter.limit` quarantined rows of `pipeline` that match, oldest first.
pub async fn sample(
    client: &Client,
    pipeline: &str,
    quarantine: &str,
    filter: &SampleFilter,
) -> Result<Vec<QuarantinedRow>, tokio_postgres::Error> {
    let nonempty = |v: &Vec<String>| (!v.is_empty()).then(|| v.clone());
    let rows = client
        .query(
            &format!(
                "SELECT id, source_file, line_number, reason, message, raw_line, quarantined_at
                 FROM {quarantine}
                 WHERE pipeline = $1
                   AND ($2::text[] IS NULL OR reason = ANY($2))
                   AND ($3::text[] IS NULL OR source_file = ANY($3))
                 ORDER BY id LIMIT $4"
            ),
            &[
                &pipeline,
                &nonempty(&filter.reasons),
                &nonempty(&filter.files),
                &i64::from(filter.limit),
            ],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| QuarantinedRow {
            id: r.get(0),
            file: r.get(1),
            line: r.get(2),
            reason: r.get(3),
            message: r.get(4),
            raw: r.get(5),
            quarantined_at: r.get(6),
        })
        .collect())
}

/// Quarantined rows for people: one block per row.
pub fn sample_text(rows: &[QuarantinedRow]) -> String {
    if rows.is_empty() {
        return "No quarantined rows match.\n".into();
    }
    let mut out = String::new();
    for r in rows {
        let _ = writeln!(
            out,
            "{}:{}  {}  ({})",
            r.file,
            r.line,
            r.reason,
            r.quarantined_at.to_rfc3339()
        );
        let _ = writeln!(out, "  {}", r.message);
        let _ = writeln!(out, "  | {}", excerpt(&r.raw, 200));
    }
    out
}

/// At most `max` characters of `s`, control characters shown as `\n`, `\t`, `\r`.
fn excerpt(s: &str, max: usize) -> String {
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i == max {
            out.push('…');
            break;
        }
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_shows_every_total_and_reason() {
        let r = Report {
            pipeline: "orders".into(),
            files: FileTotals {
                total: 3,
                loaded: 2,
                failed: 1,
                ..FileTotals::default()
            },
            rows: RowTotals {
                loaded: 100,
                rejected: 7,
                deduplicated: 2,
                cleaned: None,
            },
            quarantine: QuarantineTotals {
                rows: 7,
                top_reasons: vec![ReasonCount {
                    reason: "bad_price".into(),
                    rows: 7,
                }],
            },
            last_commit: None,
        };
        let text = r.to_text();
        for part in [
            "3 (2 loaded, 1 failed",
            "100 loaded, 7 rejected, 2 deduplicated",
            "bad_price",
            "never",
        ] {
            assert!(text.contains(part), "{part}: {text}");
        }
        let json = serde_json::to_value(&r).expect("json");
        assert_eq!(json["rows"]["cleaned"], serde_json::Value::Null);
        assert_eq!(json["quarantine"]["topReasons"][0]["rows"], 7);
    }

    #[test]
    fn samples_escape_line_breaks_and_cut_long_rows() {
        assert_eq!(excerpt("a\tb\nc", 10), "a\\tb\\nc");
        assert_eq!(excerpt("abcdef", 3), "abc…");
        assert_eq!(sample_text(&[]), "No quarantined rows match.\n");
    }
}
