//! The foundation's contract end to end without the worker: a file from the generator,
//! the migrated schema, and PostgreSQL's own CSV parser agree with the manifest.

use futures::SinkExt;
use sluice_testkit::pg;
use sluice_testkit::scenario::Dataset;
use uuid::Uuid;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_generated_file_copies_into_events_and_matches_its_manifest() {
    let cluster = pg::shared().await;
    let db = cluster.create_database().await.expect("database");
    let mut client = db.connect().await.expect("connect");
    sluice_worker::migrate::migrate(&mut client)
        .await
        .expect("migrations apply");

    let root = tempfile::tempdir().expect("tempdir");
    let data = Dataset::generate(root.path(), 1, 20_000, 0.02, 3).expect("dataset");
    let m = &data.manifest[0];
    assert_eq!(m.rows, 20_000);
    assert_eq!(
        m.valid_rows + m.bad_lines.len() as u64,
        m.rows,
        "every row is counted once"
    );
    assert!(!m.bad_lines.is_empty(), "2% bad rows were asked for");

    // Keep the header and the lines the manifest calls valid; PostgreSQL parses them.
    let bytes = std::fs::read(data.staging.join(&m.file)).expect("read file");
    let bad: std::collections::HashSet<u64> = m.bad_lines.iter().map(|(l, _)| *l).collect();
    let mut valid = Vec::with_capacity(bytes.len());
    for (i, line) in bytes.split(|b| *b == b'\n').enumerate() {
        if !line.is_empty() && !bad.contains(&(i as u64 + 1)) {
            valid.extend_from_slice(line);
            valid.push(b'\n');
        }
    }
    let sink = client
        .copy_in("COPY events FROM STDIN WITH (FORMAT csv, HEADER true)")
        .await
        .expect("COPY starts");
    futures::pin_mut!(sink);
    sink.send(bytes::Bytes::from(valid))
        .await
        .expect("send rows");
    let copied = sink
        .finish()
        .await
        .expect("PostgreSQL accepts every valid row");
    assert_eq!(copied, m.valid_rows);

    let stored: Vec<Uuid> = client
        .query("SELECT event_id FROM events", &[])
        .await
        .expect("select")
        .iter()
        .map(|r| r.get(0))
        .collect();
    let stored: std::collections::HashSet<Uuid> = stored.into_iter().collect();
    assert_eq!(
        stored, data.expected.valid_ids,
        "the stored event ids are the manifest's valid rows"
    );
    let funnel: (i64, i64, i64) = {
        let r = client
            .query_one(
                "SELECT count(*) FILTER (WHERE event_type = 'view'), count(*) FILTER (WHERE event_type = 'add_to_cart'),
                        count(*) FILTER (WHERE event_type = 'purchase') FROM events",
                &[],
            )
            .await
            .expect("funnel");
        (r.get(0), r.get(1), r.get(2))
    };
    assert!(
        funnel.0 > funnel.1 && funnel.1 > funnel.2 && funnel.2 > 0,
        "funnel {funnel:?}"
    );
}
