//! The IoT example of the local run (`sluice-local --example iot`): the workers' config
//! (the example resource's schema and source), the cleaning counts its messy rows must
//! give, and its part of the summary: what the producer wrote against what the table
//! and quarantine hold.

use std::collections::BTreeMap;
use std::path::Path;

use thiserror::Error;

use super::thousands;
use crate::sensors::Example;
use crate::sensors::producer::Produced;

/// The IoT example's summary could not be gathered.
#[derive(Debug, Error)]
pub enum LocalIotError {
    #[error("querying the IoT example's table: {0}")]
    Query(#[from] tokio_postgres::Error),
    #[error("writing the workers' config {0}: {1}")]
    Config(String, std::io::Error),
}

/// Writes the workers' `--config` file for the IoT example (its schema and source).
pub fn write_worker_config(example: &Example, path: &Path) -> Result<(), LocalIotError> {
    let json = serde_json::to_vec_pretty(&example.worker_config())
        .map_err(|e| LocalIotError::Config(path.display().to_string(), e.into()))?;
    std::fs::write(path, json).map_err(|e| LocalIotError::Config(path.display().to_string(), e))
}

/// The cleaning counts the IoT producer's messy rows must give.
pub fn expected_cleaned(produced: &Produced) -> BTreeMap<(String, String), u64> {
    produced
        .messy
        .iter()
        .map(|(m, n)| {
            let (column, rule) = m.counted_as();
            ((column.to_string(), rule.to_string()), *n)
        })
        .collect()
}

/// What the IoT section of the summary found.
#[derive(Clone, Debug, PartialEq)]
pub struct IotTotals {
    /// Rows in the table.
    pub rows: i64,
    /// Distinct `reading_id`s in the table.
    pub distinct_ids: i64,
}

/// Prints the IoT example's part of the summary: what the producer wrote against what
/// the table and quarantine hold, and readings by site.
pub async fn summary(
    client: &tokio_postgres::Client,
    example: &Example,
    produced: &Produced,
) -> Result<IotTotals, LocalIotError> {
    let table = example.quoted_table();
    let row = client
        .query_one(
            &format!("SELECT count(*), count(DISTINCT reading_id) FROM {table}"),
            &[],
        )
        .await?;
    let totals = IotTotals {
        rows: row.get(0),
        distinct_ids: row.get(1),
    };
    let messy: u64 = produced.messy.values().sum();
    println!(
        "\n  Producer wrote      {} rows in {} files: {} valid ({} messy), {} bad",
        thousands(produced.rows as i64),
        thousands(produced.files as i64),
        thousands(produced.valid as i64),
        thousands(messy as i64),
        thousands(produced.bad_total() as i64)
    );
    let every_valid_once =
        totals.rows == produced.valid as i64 && totals.distinct_ids == totals.rows;
    println!(
        "  {table} holds {} rows, {} distinct ids: every valid row once: {}",
        thousands(totals.rows),
        thousands(totals.distinct_ids),
        if every_valid_once { "yes" } else { "NO" }
    );
    let mut expected: BTreeMap<&str, u64> = BTreeMap::new();
    for (bad, n) in &produced.bad {
        *expected.entry(bad.reason().code()).or_default() += n;
    }
    if !expected.is_empty() {
        println!("  Bad rows the producer wrote, by the reason they must get:");
        for (reason, n) in expected {
            println!("    {reason:<22} {:>8}", thousands(n as i64));
        }
    }
    let sites = client
        .query(
            &format!(
                "SELECT site, count(*), avg(celsius)::float8, min(celsius)::float8,
                        max(celsius)::float8, avg(ok::int)::float8
                 FROM {table} GROUP BY site ORDER BY site"
            ),
            &[],
        )
        .await?;
    if !sites.is_empty() {
        println!("\n  Readings by site:");
        for r in sites {
            println!(
                "    {:<8} {:>10} readings  avg {:>5.1} °C  min {:>5.1}  max {:>5.1}  ok {:>5.1}%",
                r.get::<_, String>(0),
                thousands(r.get::<_, i64>(1)),
                r.get::<_, f64>(2),
                r.get::<_, f64>(3),
                r.get::<_, f64>(4),
                100.0 * r.get::<_, f64>(5)
            );
        }
    }
    Ok(totals)
}
