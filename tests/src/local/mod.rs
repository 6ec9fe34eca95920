//! The local run's parts that are not about processes (`sluice-local`): which example
//! runs, each example's part of the summary ([`shop`], [`iot`]), and the cleaning counts
//! read from the workers' `/metrics` (the only place they are kept: the ledger has no
//! column for them).

pub mod iot;
pub mod shop;

use std::collections::BTreeMap;

/// Which example pipeline the local run shows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LocalExample {
    /// E-commerce events (the generator, CSV by default) into the built-in `events` table.
    Shop,
    /// IoT sensor readings as gzip'd NDJSON into the declared table of
    /// deploy/examples/schema/sensors.yaml.
    Iot,
}

/// Rows changed by cleaning, by (column, rule), summed over several `/metrics` texts
/// (`sluice_rows_cleaned_total{column="site",rule="trim"} 12`).
pub fn cleaned_counts<'a>(
    metrics: impl IntoIterator<Item = &'a str>,
) -> BTreeMap<(String, String), u64> {
    let mut counts = BTreeMap::new();
    for text in metrics {
        for line in text.lines() {
            let Some(rest) = line.strip_prefix(sluice_core::metric_names::ROWS_CLEANED_TOTAL)
            else {
                continue;
            };
            let Some((labels, value)) = rest
                .strip_prefix('{')
                .and_then(|r| r.split_once('}'))
                .map(|(l, v)| (l, v.trim()))
            else {
                continue;
            };
            let label = |name: &str| {
                labels.split(',').find_map(|kv| {
                    let (k, v) = kv.split_once('=')?;
                    (k.trim() == name).then(|| v.trim().trim_matches('"').to_string())
                })
            };
            if let (Some(column), Some(rule), Ok(n)) =
                (label("column"), label("rule"), value.parse::<f64>())
            {
                *counts.entry((column, rule)).or_default() += n as u64;
            }
        }
    }
    counts
}

/// Prints the rows changed by cleaning, by column and rule (from the workers' /metrics;
/// rules that changed nothing are left out), with what the producer's messy rows should
/// give when it is known.
pub fn print_cleaned(
    cleaned: &BTreeMap<(String, String), u64>,
    expected: Option<&BTreeMap<(String, String), u64>>,
) {
    let mut keys: Vec<&(String, String)> = cleaned
        .iter()
        .filter(|(_, n)| **n > 0)
        .map(|(k, _)| k)
        .collect();
    keys.extend(expected.into_iter().flat_map(|e| e.keys()));
    keys.sort();
    keys.dedup();
    if keys.is_empty() {
        return;
    }
    println!("\n  Rows cleaned, by column.rule:");
    for key in keys {
        let name = format!("{}.{}", key.0, key.1);
        let n = cleaned.get(key).copied().unwrap_or(0);
        match expected {
            Some(e) => println!(
                "    {name:<28} {:>8}  (messy rows written for it: {})",
                thousands(n as i64),
                thousands(e.get(key).copied().unwrap_or(0) as i64)
            ),
            None => println!("    {name:<28} {:>8}", thousands(n as i64)),
        }
    }
}

/// `1234567` → `1,234,567`.
pub fn thousands(n: i64) -> String {
    let s = n.unsigned_abs().to_string();
    let mut out = String::new();
    for (i, ch) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(ch);
    }
    if n < 0 { format!("-{out}") } else { out }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cleaned_counts_sum_over_workers_by_column_and_rule() {
        let a = "# HELP sluice_rows_cleaned_total x\n\
                 sluice_rows_cleaned_total{column=\"site\",rule=\"trim\"} 3\n\
                 sluice_rows_cleaned_total{rule=\"ignore_case\",column=\"site\"} 2\n\
                 sluice_rows_cleaned_totalx{column=\"site\",rule=\"trim\"} 100\n";
        let b = "sluice_rows_cleaned_total{column=\"site\",rule=\"trim\"} 4\n";
        let counts = cleaned_counts([a, b]);
        assert_eq!(counts.len(), 2, "{counts:?}");
        assert_eq!(counts[&("site".into(), "trim".into())], 7);
        assert_eq!(counts[&("site".into(), "ignore_case".into())], 2);
    }

    #[test]
    fn thousands_groups_digits() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(1_234_567), "1,234,567");
        assert_eq!(thousands(-1_000), "-1,000");
    }
}
