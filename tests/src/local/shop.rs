//! The e-commerce example of the local run (`sluice-local`, `--example shop`): its
//! analysis queries over the built-in `events` table.

use std::collections::BTreeMap;

use super::thousands;

/// Prints the e-commerce example's analysis: revenue by category and the purchase funnel.
pub async fn analysis(client: &tokio_postgres::Client) -> Result<(), tokio_postgres::Error> {
    let revenue = client
        .query(
            "SELECT category, sum(price * quantity)::float8 AS revenue, count(*) AS purchases
             FROM events WHERE event_type = 'purchase'
             GROUP BY category ORDER BY revenue DESC LIMIT 8",
            &[],
        )
        .await?;
    if !revenue.is_empty() {
        println!("\n  Revenue by category (top 8):");
        for r in revenue {
            println!(
                "    {:<22} {:>14.2}  ({} purchases)",
                r.get::<_, String>(0),
                r.get::<_, f64>(1),
                thousands(r.get::<_, i64>(2))
            );
        }
    }
    let funnel = client
        .query(
            "SELECT event_type, count(*), count(DISTINCT session_id) FROM events GROUP BY event_type",
            &[],
        )
        .await?;
    let by_type: BTreeMap<String, (i64, i64)> = funnel
        .iter()
        .map(|r| {
            (
                r.get::<_, String>(0),
                (r.get::<_, i64>(1), r.get::<_, i64>(2)),
            )
        })
        .collect();
    let sessions = |t: &str| by_type.get(t).map(|v| v.1).unwrap_or(0);
    let (v, c, p) = (
        sessions("view"),
        sessions("add_to_cart"),
        sessions("purchase"),
    );
    if v > 0 {
        println!("\n  Funnel (sessions):");
        println!("    viewed            {:>10}", thousands(v));
        println!(
            "    added to cart     {:>10}  ({:.1}% of viewing sessions)",
            thousands(c),
            100.0 * c as f64 / v as f64
        );
        println!(
            "    purchased         {:>10}  ({:.1}% of carting sessions)",
            thousands(p),
            if c > 0 {
                100.0 * p as f64 / c as f64
            } else {
                0.0
            }
        );
    }
    Ok(())
}
