//! The embedded schema migrations: what they create, idempotence, concurrent workers.

use sluice_testkit::pg;
use sluice_worker::migrate::{MigrateError, embedded_migrations, migrate};
use tokio_postgres::Client;
use tokio_postgres::error::SqlState;

async fn fresh_client() -> anyhow::Result<(pg::TestDb, Client)> {
    let db = pg::shared().await.create_database().await?;
    let client = db.connect().await?;
    Ok((db, client))
}

async fn history_count(client: &Client) -> anyhow::Result<i64> {
    Ok(client
        .query_one("SELECT count(*) FROM refinery_schema_history", &[])
        .await?
        .get(0))
}

async fn advisory_locks_held(client: &Client) -> anyhow::Result<i64> {
    Ok(client
        .query_one(
            "SELECT count(*) FROM pg_locks
              WHERE locktype = 'advisory' AND granted
                AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
            &[],
        )
        .await?
        .get(0))
}

/// (column, data_type, nullable, numeric precision, numeric scale) of a table.
type Column = (String, String, bool, Option<i32>, Option<i32>);

async fn columns(client: &Client, table: &str) -> anyhow::Result<Vec<Column>> {
    let rows = client
        .query(
            "SELECT column_name::text, data_type::text, is_nullable = 'YES',
                    numeric_precision::int, numeric_scale::int
               FROM information_schema.columns
              WHERE table_schema = 'public' AND table_name = $1
              ORDER BY ordinal_position",
            &[&table],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4)))
        .collect())
}

fn col(name: &str, ty: &str, nullable: bool, num: Option<(i32, i32)>) -> Column {
    (
        name.into(),
        ty.into(),
        nullable,
        num.map(|n| n.0),
        num.map(|n| n.1),
    )
}

#[tokio::test]
async fn fresh_database_gets_all_tables_with_the_documented_columns() -> anyhow::Result<()> {
    let (_db, mut client) = fresh_client().await?;

    let report = migrate(&mut client).await?;
    assert_eq!(report.applied, embedded_migrations());
    assert_eq!(
        report.applied.first().map(String::as_str),
        Some("V1__events_and_quarantine")
    );

    let int64 = Some((64, 0));
    let int32 = Some((32, 0));
    assert_eq!(
        columns(&client, "events").await?,
        vec![
            col("event_id", "uuid", false, None),
            col("event_time", "timestamp with time zone", false, None),
            col("user_id", "bigint", false, int64),
            col("session_id", "text", false, None),
            col("event_type", "text", false, None),
            col("product_id", "bigint", false, int64),
            col("category", "text", false, None),
            col("price", "numeric", false, Some((10, 2))),
            col("quantity", "integer", false, int32),
        ]
    );
    assert_eq!(
        columns(&client, "quarantine").await?,
        vec![
            col("id", "bigint", false, int64),
            col("source_file", "text", false, None),
            col("line_number", "bigint", false, int64),
            col("reason", "text", false, None),
            col("message", "text", false, None),
            col("raw_line", "text", false, None),
            col("raw_bytes", "bytea", true, None),
            col("batch_id", "uuid", true, None),
            col("quarantined_at", "timestamp with time zone", false, None),
            col("pipeline", "text", false, None),
            col("source_sha256", "bytea", false, None),
        ]
    );

    // No index on events by default (COPY throughput); quarantine has its key and the
    // (pipeline, source_file, source_sha256, line_number) uniqueness.
    let index_count = |table: &'static str| {
        let client = &client;
        async move {
            client
                .query_one(
                    "SELECT count(*) FROM pg_indexes WHERE schemaname = 'public' AND tablename = $1",
                    &[&table],
                )
                .await
                .map(|r| r.get::<_, i64>(0))
        }
    };
    assert_eq!(index_count("events").await?, 0);
    assert_eq!(index_count("quarantine").await?, 2);

    // Users find the documentation in the catalog.
    let undocumented: i64 = client
        .query_one(
            "SELECT count(*) FROM information_schema.columns c
              WHERE c.table_schema = 'public' AND c.table_name IN ('events', 'quarantine')
                AND col_description(format('%I.%I', c.table_schema, c.table_name)::regclass,
                                    c.ordinal_position) IS NULL",
            &[],
        )
        .await?
        .get(0);
    assert_eq!(undocumented, 0, "every column has a COMMENT");

    assert_eq!(advisory_locks_held(&client).await?, 0, "lock released");
    Ok(())
}

#[tokio::test]
async fn migrating_twice_is_a_no_op() -> anyhow::Result<()> {
    let (_db, mut client) = fresh_client().await?;

    let first = migrate(&mut client).await?;
    assert!(!first.applied.is_empty());
    let count = history_count(&client).await?;

    let second = migrate(&mut client).await?;
    assert!(second.applied.is_empty(), "{second:?}");
    assert_eq!(history_count(&client).await?, count);
    assert_eq!(count, i64::try_from(embedded_migrations().len())?);
    assert_eq!(advisory_locks_held(&client).await?, 0);
    Ok(())
}

#[tokio::test]
async fn concurrent_migrations_apply_each_migration_once() -> anyhow::Result<()> {
    let db = pg::shared().await.create_database().await?;
    let mut clients = Vec::new();
    for _ in 0..8 {
        clients.push(db.connect().await?);
    }

    let results = futures::future::join_all(clients.iter_mut().map(migrate)).await;
    let mut applied = Vec::new();
    for result in results {
        applied.extend(result?.applied);
    }
    applied.sort();
    let mut expected = embedded_migrations();
    expected.sort();
    assert_eq!(
        applied, expected,
        "each migration applied by exactly one caller"
    );

    let client = db.connect().await?;
    assert_eq!(
        history_count(&client).await?,
        i64::try_from(expected.len())?
    );
    assert_eq!(advisory_locks_held(&client).await?, 0);
    Ok(())
}

#[tokio::test]
async fn a_failing_migration_reports_and_releases_the_lock() -> anyhow::Result<()> {
    let (_db, mut client) = fresh_client().await?;
    // Something in the way of V1.
    client.batch_execute("CREATE TABLE events (x int)").await?;

    let err = migrate(&mut client)
        .await
        .expect_err("V1 cannot create events");
    assert!(
        matches!(&err, MigrateError::Apply { applied, .. } if applied.is_empty()),
        "{err:?}"
    );
    let message = format!("{err}");
    assert!(
        message.contains("applying schema migrations failed"),
        "{message}"
    );
    assert_eq!(advisory_locks_held(&client).await?, 0, "lock released");

    // Once the obstacle is gone, migrating works on the same connection.
    client.batch_execute("DROP TABLE events").await?;
    let report = migrate(&mut client).await?;
    assert_eq!(report.applied, embedded_migrations());
    Ok(())
}

const INSERT_EVENT: &str = "INSERT INTO events VALUES
    (gen_random_uuid(), now(), 1, 's-1', $1, 7, 'books', $2::text::numeric, $3)";

async fn insert_event(
    client: &Client,
    event_type: &str,
    price: &str,
    quantity: i32,
) -> Result<u64, tokio_postgres::Error> {
    client
        .execute(INSERT_EVENT, &[&event_type, &price, &quantity])
        .await
}

fn assert_check_violation(result: Result<u64, tokio_postgres::Error>, what: &str) {
    match result {
        Err(e) => assert_eq!(e.code(), Some(&SqlState::CHECK_VIOLATION), "{what}: {e}"),
        Ok(_) => panic!("{what} was accepted"),
    }
}

#[tokio::test]
async fn events_constraints_reject_invalid_rows() -> anyhow::Result<()> {
    let (_db, mut client) = fresh_client().await?;
    migrate(&mut client).await?;

    assert_eq!(insert_event(&client, "purchase", "12.05", 2).await?, 1);
    assert_eq!(insert_event(&client, "view", "0.00", 0).await?, 1);
    assert_eq!(
        insert_event(&client, "add_to_cart", "99999999.99", 1).await?,
        1
    );

    assert_check_violation(
        insert_event(&client, "purchase", "-0.01", 1).await,
        "negative price",
    );
    assert_check_violation(
        insert_event(&client, "refund", "1.00", 1).await,
        "unknown event_type",
    );
    assert_check_violation(
        insert_event(&client, "View", "1.00", 1).await,
        "event_type in the wrong case",
    );
    assert_check_violation(
        insert_event(&client, "purchase", "1.00", -1).await,
        "negative quantity",
    );
    let too_big = insert_event(&client, "purchase", "100000000.00", 1).await;
    assert_eq!(
        too_big.err().and_then(|e| e.code().cloned()),
        Some(SqlState::NUMERIC_VALUE_OUT_OF_RANGE),
        "price beyond numeric(10,2)"
    );

    // Quarantine: one row per (file, line); raw_bytes optional; timestamp defaulted.
    client
        .execute(
            "INSERT INTO quarantine (source_file, line_number, reason, message, raw_line)
             VALUES ('a.csv', 3, 'bad_price', 'price is not a number', 'x,y')",
            &[],
        )
        .await?;
    let duplicate = client
        .execute(
            "INSERT INTO quarantine (source_file, line_number, reason, message, raw_line)
             VALUES ('a.csv', 3, 'bad_price', 'again', 'x,y')",
            &[],
        )
        .await;
    assert_eq!(
        duplicate.err().and_then(|e| e.code().cloned()),
        Some(SqlState::UNIQUE_VIOLATION)
    );
    let row = client
        .query_one(
            "SELECT raw_bytes IS NULL, quarantined_at IS NOT NULL, id FROM quarantine",
            &[],
        )
        .await?;
    assert!(row.get::<_, bool>(0) && row.get::<_, bool>(1));
    Ok(())
}
