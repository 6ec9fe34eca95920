//! A replay after a cleaning-rule change, then exactly-once. A second pipeline, `clicks`,
//! loads the generator's CSV into a declared schema (the built-in table in declared form,
//! docs/schema.md) whose `event_type` lacks `trim` and `ignoreCase`, in its own
//! PostgreSQL schema (`spec.postgres.schema: clicks`). The generator writes messy rows, so
//! every odd-case event type (` VIEW `, `Add_To_Cart`) is quarantined as `not_allowed`.
//! The generator is stopped and the backlog drained; the rules are added to
//! `spec.schema`; once the worker runs the new config, `kubectl sluice replay` (exec'd in
//! the worker pod) must move exactly those rows, and the database must then hold every
//! valid row the generator wrote once and only its bad rows in quarantine. A second
//! replay moves nothing.

use std::collections::BTreeMap;

use anyhow::{Context as _, Result, ensure};
use chrono::Utc;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::ResourceExt as _;
use kube::api::PostParams;
use serde_json::{Value, json};
use sluice_core::config::PipelineConfig;
use sluice_core::schema::{CleanRule, MatchBy, TableSchema};
use sluice_operator::IngestPipeline;
use sluice_operator::children::{CONFIG_FILE, CONFIG_HASH_ANNOTATION, sha256_hex};

use crate::cluster::{
    CONVERGE_TIMEOUT, Cluster, START_TIMEOUT, first, pod_ready, pod_summary, sql_literal,
};
use crate::database::{
    DbFigures, check_exactly_once, db_figures, exactly_once_problems, quarantine_by_reason,
    wait_drained,
};
use crate::generator::{GeneratorTotals, generator_identity, stop_generator};
use crate::plugin;
use crate::setup::images_under_test;
use crate::steps::{StepLog, wait_until};

/// The pipeline, and the PostgreSQL schema its tables live in.
const NAME: &str = "clicks";
/// Odd-case event types to wait for in quarantine before stopping the generator: enough
/// that a replay moving none, or a few too many, cannot pass unnoticed.
const MIN_FIXABLE: i64 = 200;

/// `event_type`'s rules before the change: exact spelling only.
const RULES_BEFORE: &[CleanRule] = &[CleanRule::EmptyToNull];
/// After: those of the built-in table (`TableSchema::ecommerce`).
const RULES_AFTER: &[CleanRule] = &[
    CleanRule::Trim,
    CleanRule::EmptyToNull,
    CleanRule::IgnoreCase,
];

/// The built-in table in declared form, fields matched by header name (so a replay needs
/// each row's archived file for its header), with `event_type` cleaned by `rules`.
fn declared_schema(rules: &[CleanRule]) -> Result<Value> {
    let mut schema = TableSchema::ecommerce("events", 86_400);
    schema.match_by = MatchBy::Header;
    let event_type = schema
        .columns
        .iter_mut()
        .find(|c| c.name == "event_type")
        .context("the built-in schema has no event_type")?;
    event_type.clean = rules.to_vec();
    Ok(serde_json::to_value(&schema)?)
}

fn clicks_pipeline(cluster: &Cluster) -> Result<IngestPipeline> {
    let schema = declared_schema(RULES_BEFORE)?;
    let mut spec = json!({
        // 10% messy rows: a quarter of them odd-case event types.
        "generator": {
            "enabled": true,
            "eventsPerSecond": 2000,
            "rowsPerFile": 2000,
            "secondsPerFile": 1,
            "badRowShare": 0.01,
            "messyRowShare": 0.1,
            "seed": 7,
        },
        // archive (the default): the replay reads each row's header from its file.
        "worker": { "replicas": 1, "afterCommit": "archive" },
        "landingZone": { "size": "1Gi", "accessMode": "ReadWriteOnce" },
        "postgres": { "secretRef": { "name": "pg-credentials" }, "schema": NAME },
        "schema": schema,
    });
    images_under_test(
        spec.as_object_mut().context("spec is an object")?,
        &cluster.settings,
    )?;
    serde_json::from_value(json!({
        "apiVersion": "sluice.dev/v1alpha1",
        "kind": "IngestPipeline",
        "metadata": { "name": NAME },
        "spec": spec,
    }))
    .context("the clicks pipeline as an IngestPipeline")
}

/// Quarantined `not_allowed` rows whose event type is an allowed one once trimmed and
/// lower-cased: the rows the new rules must load. (The generator never quotes a field, so
/// the fifth comma-separated field is `event_type`.)
async fn fixable_rows(rc: &Cluster) -> Result<i64> {
    first(
        rc.query_ints(&format!(
            "SELECT count(*) FROM quarantine WHERE pipeline = {} AND reason = 'not_allowed' \
             AND lower(btrim(split_part(raw_line, ',', 5), E' \\t')) \
                 IN ('view', 'add_to_cart', 'purchase')",
            sql_literal(&rc.ledger_id())
        ))
        .await?,
    )
}

pub async fn run(cluster: &Cluster, log: &mut StepLog) -> Result<()> {
    let rc = cluster.for_pipeline(NAME, Some(NAME));

    log.step("pipeline clicks: declared schema, event_type without trim and ignoreCase");
    rc.api::<IngestPipeline>()
        .create(&PostParams::default(), &clicks_pipeline(cluster)?)
        .await
        .context("creating the clicks IngestPipeline")?;
    rc.wait_ready(1, START_TIMEOUT).await?;
    let generator = generator_identity(&rc).await?;

    log.step("odd-case event types land in quarantine");
    wait_until(
        &format!("{MIN_FIXABLE} odd-case event types in quarantine"),
        START_TIMEOUT,
        async || {
            let n = fixable_rows(&rc).await?;
            ensure!(n >= MIN_FIXABLE, "{n} so far");
            Ok(())
        },
    )
    .await?;

    log.step("clicks: stop the generator; drain");
    let stopped_at = Utc::now();
    let generated = stop_generator(&rc, log, Some(&generator)).await?;
    wait_drained(&rc, log, generated.map(|g| g.files), stopped_at).await?;

    log.step("clicks before the rule change: quarantine = bad rows + odd-case event types");
    let before = db_figures(&rc).await?;
    let fixable = fixable_rows(&rc).await?;
    log.note(format!(
        "database: {before:?}; {fixable} quarantined odd-case event types"
    ));
    check_before(&before, fixable, generated)?;
    let sample = plugin::run(
        &rc,
        &[
            "quarantine",
            NAME,
            "--reason",
            "not_allowed",
            "--limit",
            "3",
        ],
    )
    .await?;
    log.capture(
        &format!("kubectl sluice quarantine {NAME} --reason not_allowed --limit 3"),
        &sample,
    );
    ensure!(
        sample.matches("not_allowed").count() >= 3,
        "kubectl sluice quarantine printed fewer than 3 not_allowed rows:\n{sample}"
    );
    plugin::check_status(&rc, log, 1).await?;

    log.step("add trim and ignoreCase to event_type; the worker restarts with it");
    let old_hash = worker_config_hash(&rc).await?;
    // A merge patch replaces the whole columns array.
    let mut after_schema = declared_schema(RULES_AFTER)?;
    let columns = after_schema["columns"].take();
    rc.patch_pipeline(log, json!({ "schema": { "columns": columns } }))
        .await?;
    let hash = wait_new_config(&rc, &old_hash).await?;
    check_config_map(&rc, &hash).await?;
    rc.wait_ready(1, CONVERGE_TIMEOUT).await?;
    log.note(format!("worker runs config {hash} (was {old_hash})"));

    log.step("kubectl sluice replay clicks: a dry run, then the replay");
    let still_bad = before.quarantine - fixable;
    let dry = plugin::run_json(&rc, &["replay", NAME, "--dry-run", "-o", "json"]).await?;
    log.note(format!("dry run: {dry}"));
    let moved_by_reason = [("not_allowed".to_string(), fixable)];
    let problems = summary_problems(&dry, true, before.quarantine, fixable, &moved_by_reason);
    ensure!(
        problems.is_empty(),
        "replay --dry-run: {}",
        problems.join("; ")
    );
    let unchanged = db_figures(&rc).await?;
    ensure!(
        unchanged == before,
        "a dry run changed the database: {before:?} → {unchanged:?}"
    );

    let text = plugin::run(&rc, &["replay", NAME]).await?;
    log.capture(&format!("kubectl sluice replay {NAME}"), &text);
    for line in [
        format!("  moved to the target table: {fixable}"),
        format!("  still bad (left in quarantine): {still_bad}"),
    ] {
        ensure!(
            text.lines().any(|l| l == line),
            "kubectl sluice replay lacks the line {line:?}:\n{text}"
        );
    }

    log.step(
        "clicks after the replay: exactly-once against the generator; a second replay moves 0",
    );
    let after = check_exactly_once(&rc, log, generated).await?;
    let expected = DbFigures {
        events: before.events + fixable,
        distinct_event_ids: before.events + fixable,
        quarantine: still_bad,
        distinct_quarantine_lines: still_bad,
        ledger_rows_loaded: before.ledger_rows_loaded + fixable,
        ledger_rows_rejected: still_bad,
        batch_rows_loaded: before.batch_rows_loaded + fixable,
        batch_rows_rejected: before.batch_rows_rejected - fixable,
        ..before
    };
    ensure!(
        after == expected,
        "after moving {fixable} rows the database should read {expected:?}, not {after:?}"
    );
    let left = fixable_rows(&rc).await?;
    let odd_stored = first(
        rc.query_ints(
            "SELECT count(*) FROM events \
             WHERE event_type NOT IN ('view', 'add_to_cart', 'purchase')",
        )
        .await?,
    )?;
    ensure!(
        left == 0 && odd_stored == 0,
        "{left} odd-case event types still quarantined, {odd_stored} stored not canonical"
    );
    log.note(format!(
        "moved {fixable}: events {} → {}, quarantine {} → {} (= the bad rows), every event type stored canonical",
        before.events, after.events, before.quarantine, after.quarantine
    ));

    let again = plugin::run_json(&rc, &["replay", NAME, "-o", "json"]).await?;
    let mut problems = summary_problems(&again, false, after.quarantine, 0, &[]);
    let by_reason: BTreeMap<String, i64> = quarantine_by_reason(&rc).await?.into_iter().collect();
    let reported: Option<BTreeMap<String, i64>> =
        serde_json::from_value(again["stillBadByReason"].clone()).ok();
    if reported.as_ref() != Some(&by_reason) {
        problems.push(format!(
            "stillBadByReason {reported:?}, quarantine holds {by_reason:?}"
        ));
    }
    ensure!(
        problems.is_empty(),
        "second replay: {}",
        problems.join("; ")
    );
    ensure!(
        db_figures(&rc).await? == after,
        "the second replay changed the database"
    );
    log.note(format!("second replay moved 0: {again}"));

    log.step("kubectl sluice status clicks agrees with the database after the replay");
    plugin::check_status(&rc, log, 1).await?;
    Ok(())
}

/// Before the change: the ledger is consistent, and against the generator every row is
/// in the target or quarantine, and quarantine holds exactly its bad rows plus the
/// odd-case event types, which are at most its messy rows.
fn check_before(f: &DbFigures, fixable: i64, generated: Option<GeneratorTotals>) -> Result<()> {
    // Against the generator, quarantine must hold its bad rows and the odd-case ones.
    let expected = generated.map(|g| GeneratorTotals {
        bad_rows: g.bad_rows + fixable as u64,
        ..g
    });
    let mut problems = exactly_once_problems(f, expected);
    if fixable < MIN_FIXABLE {
        problems.push(format!("only {fixable} odd-case event types quarantined"));
    }
    if let Some(g) = generated {
        match g.messy_rows {
            Some(messy) if fixable as u64 <= messy => {}
            messy => problems.push(format!(
                "{fixable} odd-case event types quarantined, the generator wrote {messy:?} messy rows"
            )),
        }
    }
    ensure!(
        problems.is_empty(),
        "before the replay:\n  {}",
        problems.join("\n  ")
    );
    Ok(())
}

/// Problems with a replay's JSON summary: it examined `examined` rows, moved `moved`
/// (all by `moved_by_reason`), left the rest as still bad, and could judge every row.
fn summary_problems(
    v: &Value,
    dry_run: bool,
    examined: i64,
    moved: i64,
    moved_by_reason: &[(String, i64)],
) -> Vec<String> {
    let mut p = Vec::new();
    let mut field = |name: &str, want: Value| {
        if v[name] != want {
            p.push(format!("{name} is {}, expected {want}", v[name]));
        }
    };
    field("dryRun", dry_run.into());
    field("examined", examined.into());
    field("moved", moved.into());
    field("deduplicated", 0.into());
    field("stillBad", (examined - moved).into());
    field("notReplayable", 0.into());
    let by_reason: serde_json::Map<String, Value> = moved_by_reason
        .iter()
        .map(|(r, n)| (r.clone(), (*n).into()))
        .collect();
    field("movedByReason", Value::Object(by_reason));
    p
}

/// The config hash on the worker StatefulSet's pod template.
async fn worker_config_hash(rc: &Cluster) -> Result<String> {
    let sts = rc
        .api::<StatefulSet>()
        .get(&format!("{NAME}-worker"))
        .await?;
    sts.spec
        .template
        .metadata
        .as_ref()
        .and_then(|m| m.annotations.as_ref())
        .and_then(|a| a.get(CONFIG_HASH_ANNOTATION).cloned())
        .with_context(|| format!("the worker template has no {CONFIG_HASH_ANNOTATION}"))
}

/// Waits until the template carries a new config hash and the one worker pod, ready,
/// was made from it (the operator writes the ConfigMap before the StatefulSet, so that
/// pod mounted the new config).
async fn wait_new_config(rc: &Cluster, old_hash: &str) -> Result<String> {
    wait_until(
        "the worker pod runs the new config",
        CONVERGE_TIMEOUT,
        async || {
            let hash = worker_config_hash(rc).await?;
            ensure!(hash != old_hash, "the template still has hash {old_hash}");
            let pods = rc.pods("worker").await?;
            let fresh = pods
                .iter()
                .filter(|p| {
                    pod_ready(p) && p.annotations().get(CONFIG_HASH_ANNOTATION) == Some(&hash)
                })
                .count();
            ensure!(
                pods.len() == 1 && fresh == 1,
                "template hash {hash}; pods: {}",
                pods.iter()
                    .map(|p| format!(
                        "{} hash {:?}",
                        pod_summary(p),
                        p.annotations().get(CONFIG_HASH_ANNOTATION)
                    ))
                    .collect::<Vec<_>>()
                    .join("; ")
            );
            Ok(hash)
        },
    )
    .await
}

/// The ConfigMap is the config of that hash, and it has the new rules.
async fn check_config_map(rc: &Cluster, hash: &str) -> Result<()> {
    let cm = rc.api::<ConfigMap>().get(&format!("{NAME}-config")).await?;
    let text = cm
        .data
        .as_ref()
        .and_then(|d| d.get(CONFIG_FILE))
        .with_context(|| format!("the ConfigMap has no {CONFIG_FILE}"))?;
    ensure!(
        sha256_hex(text.as_bytes()) == hash,
        "the ConfigMap is not the config of hash {hash}"
    );
    let config: PipelineConfig = serde_json::from_str(text).context("parsing the ConfigMap")?;
    let rules = config
        .schema
        .as_ref()
        .and_then(|s| s.column("event_type"))
        .map(|c| c.clean.clone());
    ensure!(
        rules.as_deref() == Some(RULES_AFTER),
        "the ConfigMap's event_type rules are {rules:?}"
    );
    Ok(())
}

#[test]
fn replay_summaries_are_checked_field_by_field() -> Result<()> {
    let v = json!({"pipeline": "ns/clicks", "dryRun": false, "examined": 300, "moved": 250,
        "deduplicated": 0, "stillBad": 50, "notReplayable": 0,
        "movedByReason": {"not_allowed": 250}, "stillBadByReason": {"bad_value": 50},
        "notReplayableByWhy": {}, "chunks": 1});
    let by = [("not_allowed".to_string(), 250)];
    ensure!(summary_problems(&v, false, 300, 250, &by).is_empty());
    ensure!(summary_problems(&v, true, 300, 250, &by).len() == 1);
    ensure!(summary_problems(&v, false, 300, 249, &by).len() == 2);
    let none = json!({"dryRun": false, "examined": 50, "moved": 0, "deduplicated": 0,
        "stillBad": 50, "notReplayable": 0, "movedByReason": {}});
    ensure!(summary_problems(&none, false, 50, 0, &[]).is_empty());
    let schema = declared_schema(RULES_BEFORE)?;
    ensure!(schema["matchBy"] == "header");
    let event_type = schema["columns"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["name"] == "event_type"))
        .context("event_type")?;
    ensure!(
        event_type["clean"] == json!(["emptyToNull"]),
        "{event_type}"
    );
    Ok(())
}
