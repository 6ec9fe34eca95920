//! `kubectl sluice status` on one screen, readable at a glance: conditions first, then
//! workers, exact totals, quarantine's top reasons and the last Events.

use std::fmt::Write as _;

use super::view::StatusView;

/// The text of `status`.
pub fn status_text(v: &StatusView) -> String {
    let mut out = String::new();
    let ready = v
        .conditions
        .iter()
        .find(|c| c.type_ == crate::status::READY)
        .map_or("Unknown", |c| c.status.as_str());
    let _ = writeln!(
        out,
        "Pipeline {}/{}   Ready: {ready}{}",
        v.namespace,
        v.name,
        if v.suspended { "   (suspended)" } else { "" }
    );
    let _ = writeln!(out, "\nConditions:");
    if v.conditions.is_empty() {
        let _ = writeln!(out, "  (none yet: the operator has not reconciled it)");
    }
    for c in &v.conditions {
        let _ = writeln!(
            out,
            "  {:<12} {:<6} {:<24} {}",
            c.type_, c.status, c.reason, c.message
        );
    }
    let _ = writeln!(
        out,
        "\nWorkers: {}/{} ready",
        v.workers.ready, v.workers.desired
    );
    if !v.workers.pods.is_empty() {
        let _ = writeln!(
            out,
            "  {:<28} {:<6} {:>8} {:>9} {:>8} {:>10}",
            "POD", "READY", "RESTARTS", "LAG", "BACKLOG", "ROWS/S"
        );
    }
    let mut notes = Vec::new();
    for w in &v.workers.pods {
        let _ = writeln!(
            out,
            "  {:<28} {:<6} {:>8} {:>9} {:>8} {:>10}",
            w.name,
            if w.ready { "yes" } else { "no" },
            w.restarts,
            w.lag_seconds.map_or("-".into(), |s| format!("{s:.1}s")),
            w.backlog_files.map_or("-".into(), |b| format!("{b:.0}")),
            w.rows_per_second.map_or("-".into(), |r| format!("{r:.1}")),
        );
        if let Some(why) = &w.metrics_unavailable {
            notes.push(format!("{}: {why}", w.name));
        }
    }
    for n in notes {
        let _ = writeln!(out, "  (no figures from {n})");
    }
    let _ = writeln!(out, "\nTotals (exact, from the ledger):");
    match &v.totals.ledger {
        Some(l) => {
            let _ = writeln!(
                out,
                "  files  {} ({} loaded, {} failed, {} redelivered, {} partial)",
                l.files.total, l.files.loaded, l.files.failed, l.files.redelivered, l.files.partial
            );
            let _ = writeln!(
                out,
                "  rows   {} loaded, {} rejected, {} deduplicated",
                l.rows.loaded, l.rows.rejected, l.rows.deduplicated
            );
            let _ = writeln!(
                out,
                "  last commit  {}",
                l.last_commit.as_deref().unwrap_or("never")
            );
            let _ = writeln!(out, "\nQuarantine: {} rows", l.quarantine.rows);
            for r in &l.quarantine.top_reasons {
                let _ = writeln!(out, "  {:<28} {:>10}", r.reason, r.rows);
            }
        }
        None => {
            let _ = writeln!(
                out,
                "  unavailable: {}",
                v.totals.reason.as_deref().unwrap_or("unknown")
            );
            let f = &v.status_figures;
            if let Some(l) = f.rows_loaded {
                let r = f.rows_rejected.unwrap_or(0);
                let _ = writeln!(
                    out,
                    "  running workers' counters (restart at zero): {l} loaded, {r} rejected"
                );
            }
        }
    }
    let _ = writeln!(out, "\nEvents:");
    if v.events.is_empty() {
        let _ = writeln!(out, "  (none)");
    }
    for e in &v.events {
        let _ = writeln!(
            out,
            "  {}  {:<7} {:<22} {}{}",
            e.time.as_deref().unwrap_or("-"),
            e.type_,
            e.reason,
            e.message,
            if e.count > 1 {
                format!(" (x{})", e.count)
            } else {
                String::new()
            }
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::ledger::{LedgerTotals, ReasonCount, Totals};
    use super::super::view::tests::sample_view;
    use super::*;

    #[test]
    fn one_screen_with_conditions_workers_and_the_reason_totals_are_missing() {
        let text = status_text(&sample_view());
        for part in [
            "Pipeline shop/shop   Ready: False",
            "WorkersNotReady",
            "Workers: 1/2 ready",
            "orders-worker-0              yes           0      2.5s        3      100.0",
            "(no figures from orders-worker-1: pod is not running)",
            "unavailable: no ready worker pod",
            "900 loaded, 0 rejected",
            "Newest happened",
        ] {
            assert!(text.contains(part), "missing {part:?} in\n{text}");
        }
        assert!(text.lines().count() < 30, "{text}");
    }

    #[test]
    fn ledger_totals_and_top_reasons_are_shown_when_available() {
        let mut v = sample_view();
        let mut l = LedgerTotals::default();
        l.rows.loaded = 12;
        l.quarantine.rows = 4;
        l.quarantine.top_reasons = vec![ReasonCount {
            reason: "not_allowed".into(),
            rows: 4,
        }];
        v.totals = Totals {
            available: true,
            pod: Some("orders-worker-0".into()),
            reason: None,
            ledger: Some(l),
        };
        let text = status_text(&v);
        assert!(text.contains("rows   12 loaded"), "{text}");
        assert!(
            text.contains("Quarantine: 4 rows") && text.contains("not_allowed"),
            "{text}"
        );
        assert!(!text.contains("unavailable"), "{text}");
    }
}
