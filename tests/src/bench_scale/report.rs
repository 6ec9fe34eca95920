//! The scale benchmark's printed report: the steady run's slices, what was watched,
//! and the backlog table with the drain's linearity.

use super::ScaleReport;
use super::probe::{ClaimsStats, Listing};

/// The report `sluice-bench --scale` prints.
pub fn format_report(r: &ScaleReport) -> String {
    let mut out = String::new();
    let mib = |b: i64| b as f64 / (1 << 20) as f64;
    let claims = |c: &ClaimsStats| {
        format!(
            "{:.2} MiB, {} live / {} dead tuples, {} autovacuums",
            mib(c.total_bytes),
            c.live_tuples,
            c.dead_tuples,
            c.autovacuums
        )
    };
    let archive = |days: &[(String, Listing)]| {
        days.iter()
            .map(|(d, l)| format!("{d}: {} files (listed in {:.1} ms)", l.entries, l.millis))
            .collect::<Vec<_>>()
            .join(", ")
    };
    if let Some(s) = &r.steady {
        out.push_str(&format!(
            "steady run: {} valid rows in {} files through 1 worker, ledger seeded with {} files ({:.1} s to seed, {:.1} s to generate the data, not measured)\n",
            s.valid_rows, s.files, s.seed_files, s.seed_seconds, s.generate_seconds
        ));
        out.push_str(&format!(
            "  {:.1} s, {:.0} rows/s overall; worker peak RSS {:.1} MiB\n",
            s.seconds,
            s.valid_rows as f64 / s.seconds,
            s.peak_rss_kib as f64 / 1024.0
        ));
        out.push_str("  slice |     rows/s | ratio to slice 1\n");
        let first = s.slices.first().copied().unwrap_or(f64::NAN);
        for (i, rate) in s.slices.iter().enumerate() {
            out.push_str(&format!(
                "  {:>5} | {:>10.0} | {:>6.2}\n",
                i + 1,
                rate,
                rate / first
            ));
        }
        let lowest = s.slices.iter().copied().fold(f64::INFINITY, f64::min);
        let last = s.slices.last().copied().unwrap_or(f64::NAN);
        let mut sorted = s.slices.clone();
        sorted.sort_by(f64::total_cmp);
        // The median is steadier than slice 1, which also holds the pipeline's start.
        let median = sorted.get(sorted.len() / 2).copied().unwrap_or(f64::NAN);
        out.push_str(&format!(
            "  lowest slice / first: {:.2} (goal >= 0.90); last / first: {:.2}; lowest / median: {:.2}; last / median: {:.2}\n",
            lowest / first,
            last / first,
            lowest / median,
            last / median
        ));
        out.push_str(&format!(
            "  claims table: largest {}; at the end {}\n",
            claims(&s.claims_max),
            claims(&s.claims_end)
        ));
        out.push_str(&format!(
            "  events table: {} autovacuums, {} autoanalyzes during the run\n",
            s.events_autovacuums.0, s.events_autovacuums.1
        ));
        out.push_str(&format!(
            "  landing listing: slowest {:.2} ms ({} files)\n",
            s.listing_max.millis, s.listing_max.entries
        ));
        out.push_str(&format!(
            "  ledger lookup of 256 new names on {} ledger rows: {:.2} ms median (server {:.2} ms, {})\n",
            s.lookup.ledger_files, s.lookup.median_ms, s.lookup.explain_ms, s.lookup.plan
        ));
        out.push_str(&format!("  archive: {}\n", archive(&s.archive)));
    }
    if let Some(base) = r.backlogs.first() {
        out.push_str("backlog (files present before the worker starts)\n");
        out.push_str("    files |      s |  files/s | ms/file | vs smallest | first 10% f/s | last 10% f/s | listing before start\n");
        for b in &r.backlogs {
            out.push_str(&format!(
                "  {:>7} | {:>6.1} | {:>8.0} | {:>7.3} | {:>11.2} | {:>13.0} | {:>12.0} | {:.1} ms\n",
                b.files,
                b.seconds,
                b.files_per_second(),
                b.ms_per_file(),
                b.ms_per_file() / base.ms_per_file(),
                b.first_tenth_fps,
                b.last_tenth_fps,
                b.listing.millis
            ));
        }
        if let Some(last) = r.backlogs.last() {
            out.push_str(&format!(
                "  time per file, {} vs {} files: {:.2} (1.00 = linear drain)\n",
                last.files,
                base.files,
                last.ms_per_file() / base.ms_per_file()
            ));
            out.push_str(&format!(
                "  largest backlog: claims table at the end {}; archive {}; ledger lookup {:.2} ms on {} rows; worker peak RSS {:.1} MiB\n",
                claims(&last.claims_end),
                archive(&last.archive),
                last.lookup.median_ms,
                last.lookup.ledger_files,
                last.peak_rss_kib as f64 / 1024.0
            ));
        }
    }
    out
}
