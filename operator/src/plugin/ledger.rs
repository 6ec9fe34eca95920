//! The exact totals of a pipeline as `sluice-worker report -o json` prints them in a
//! worker pod (the worker's `report` module defines the document; this is the reading
//! side, tolerant of fields it does not know).

use serde::{Deserialize, Serialize};

/// The ledger's totals.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct LedgerTotals {
    pub files: Files,
    pub rows: Rows,
    pub quarantine: Quarantine,
    pub last_commit: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Files {
    pub total: i64,
    pub loaded: i64,
    pub failed: i64,
    pub redelivered: i64,
    pub partial: i64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Rows {
    pub loaded: i64,
    pub rejected: i64,
    pub deduplicated: i64,
    /// Not kept in the ledger (the workers' metrics count cleaned rows): null.
    pub cleaned: Option<i64>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Quarantine {
    pub rows: i64,
    pub top_reasons: Vec<ReasonCount>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ReasonCount {
    pub reason: String,
    pub rows: i64,
}

/// The totals, or why they are not shown.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Totals {
    pub available: bool,
    /// Where they come from: the ledger, through `sluice-worker report` in this pod.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pod: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ledger: Option<LedgerTotals>,
}

impl Totals {
    pub fn unavailable(reason: impl Into<String>) -> Totals {
        Totals {
            available: false,
            pod: None,
            reason: Some(reason.into()),
            ledger: None,
        }
    }

    /// Reads the report printed by the worker in `pod`.
    pub fn from_report(pod: &str, stdout: &str) -> Totals {
        match serde_json::from_str::<LedgerTotals>(stdout) {
            Ok(ledger) => Totals {
                available: true,
                pod: Some(pod.into()),
                reason: None,
                ledger: Some(ledger),
            },
            Err(e) => Totals::unavailable(format!(
                "sluice-worker report in pod {pod} printed no report ({e})"
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_workers_report_is_read_field_by_field() {
        let json = r#"{"pipeline":"shop/orders","files":{"total":3,"loaded":2,"failed":1,"redelivered":0,"partial":0},
            "rows":{"loaded":10,"rejected":2,"deduplicated":1,"cleaned":null},
            "quarantine":{"rows":2,"topReasons":[{"reason":"bad_price","rows":2}]},
            "lastCommit":"2026-11-25T10:00:00Z","future":1}"#;
        let t = Totals::from_report("orders-worker-0", json);
        assert!(t.available);
        let l = t.ledger.expect("ledger");
        assert_eq!(
            (l.files.total, l.rows.loaded, l.rows.deduplicated),
            (3, 10, 1)
        );
        assert_eq!(l.quarantine.top_reasons[0].reason, "bad_price");
        let bad = Totals::from_report("p", "sluice-worker: connecting failed");
        assert!(!bad.available && bad.reason.is_some_and(|r| r.contains("pod p")));
    }
}
