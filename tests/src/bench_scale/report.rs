//! The scale benchmark's printed report: the steady run's slices, what was watched,
//! and the backlog table with the drain's linearity.

use super::ScaleReport;
use super::baseline::CopyBaseline;
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
        out.push_str(&slice_table(&s.slices, s.copy.as_ref()));
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

/// The lowest, the last and the median of `slices`, each as a ratio to the first.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SliceRatios {
    pub lowest: f64,
    pub last: f64,
    pub median: f64,
}

/// [`SliceRatios`] of a run's slices (NaN for an empty run).
pub fn slice_ratios(slices: &[f64]) -> SliceRatios {
    let first = slices.first().copied().unwrap_or(f64::NAN);
    let mut sorted = slices.to_vec();
    sorted.sort_by(f64::total_cmp);
    SliceRatios {
        lowest: sorted.first().copied().unwrap_or(f64::NAN) / first,
        last: slices.last().copied().unwrap_or(f64::NAN) / first,
        median: sorted.get(sorted.len() / 2).copied().unwrap_or(f64::NAN) / first,
    }
}

/// The steady run's slices, next to plain COPY's of the same rows when measured.
fn slice_table(slices: &[f64], copy: Option<&CopyBaseline>) -> String {
    let mut out = String::new();
    let first = slices.first().copied().unwrap_or(f64::NAN);
    let copy_slices = copy.map(|c| c.slices.as_slice()).unwrap_or(&[]);
    let copy_first = copy_slices.first().copied().unwrap_or(f64::NAN);
    if copy_slices.is_empty() {
        out.push_str("  slice |  Sluice rows/s | / slice 1\n");
    } else {
        out.push_str(
            "  slice |  Sluice rows/s | / slice 1 |    COPY rows/s | / slice 1 | Sluice / COPY\n",
        );
    }
    for (i, rate) in slices.iter().enumerate() {
        out.push_str(&format!(
            "  {:>5} | {:>14.0} | {:>9.2}",
            i + 1,
            rate,
            rate / first
        ));
        if let Some(c) = copy_slices.get(i) {
            out.push_str(&format!(
                " | {:>14.0} | {:>9.2} | {:>13.2}",
                c,
                c / copy_first,
                rate / c
            ));
        }
        out.push('\n');
    }
    let r = slice_ratios(slices);
    // The median is steadier than slice 1, which also holds the pipeline's start.
    out.push_str(&format!(
        "  Sluice: lowest slice / first {:.2} (goal >= 0.90); last / first {:.2}; median / first {:.2}; lowest / median {:.2}\n",
        r.lowest,
        r.last,
        r.median,
        r.lowest / r.median
    ));
    if let Some(c) = copy.filter(|c| !c.slices.is_empty()) {
        let cr = slice_ratios(&c.slices);
        out.push_str(&format!(
            "  COPY:   lowest slice / first {:.2}; last / first {:.2}; median / first {:.2}; lowest / median {:.2} ({} rows in {:.1} s, {:.0} rows/s, binary COPY into a fresh database right after)\n",
            cr.lowest,
            cr.last,
            cr.median,
            cr.lowest / cr.median,
            c.rows,
            c.seconds,
            c.rows as f64 / c.seconds
        ));
        out.push_str(&format!(
            "  Sluice's ratios over COPY's (1.00 = the decline is the server's and the disk's): lowest {:.2}, last {:.2}, median {:.2}\n",
            r.lowest / cr.lowest,
            r.last / cr.last,
            r.median / cr.median
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ratios_are_to_the_first_slice() {
        let r = slice_ratios(&[100.0, 50.0, 80.0, 90.0]);
        assert_eq!(r.lowest, 0.5);
        assert_eq!(r.last, 0.9);
        assert_eq!(r.median, 0.9);
        assert!(slice_ratios(&[]).lowest.is_nan());
    }

    #[test]
    fn the_table_shows_copy_next_to_sluice_when_measured() {
        let copy = CopyBaseline {
            rows: 100,
            seconds: 1.0,
            slices: vec![200.0, 100.0],
            export_seconds: 0.0,
        };
        let with = slice_table(&[100.0, 50.0], Some(&copy));
        assert!(with.contains("Sluice / COPY"), "{with}");
        assert!(with.contains("Sluice's ratios over COPY's"), "{with}");
        let without = slice_table(&[100.0, 50.0], None);
        assert!(!without.contains("COPY"), "{without}");
    }
}
