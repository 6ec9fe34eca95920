//! The example pipeline (`shop`, the built-in e-commerce table) through a worker kill,
//! scaling 2 → 3 → 1, a stop and drain, `kubectl sluice status` against the database,
//! suspend and resume, each time checked for exactly-once against the generator's own
//! count.

use anyhow::{Context as _, Result, ensure};
use chrono::Utc;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt as _;
use kube::api::{DeleteParams, PostParams};
use serde_json::json;
use sluice_operator::IngestPipeline;

use crate::cluster::{
    CONVERGE_TIMEOUT, Cluster, START_TIMEOUT, condition_status, conditions_summary, figures, first,
    pod_ready, pod_summary,
};
use crate::database::{check_exactly_once, wait_drained};
use crate::generator::{generator_identity, stop_generator};
use crate::plugin;
use crate::setup::{PIPELINE, example_pipeline};
use crate::steps::{StepLog, wait_until};

/// Runs the shop part of the scenario; the pipeline is left running (1 worker, generator
/// off) for the deletion checks.
pub async fn run(cluster: &Cluster, log: &mut StepLog) -> Result<()> {
    log.step("apply the example IngestPipeline");
    let ipl = example_pipeline(&cluster.settings)?;
    log.note(format!(
        "spec.images {}",
        serde_json::to_string(&ipl.spec.images)?
    ));
    cluster
        .api::<IngestPipeline>()
        .create(&PostParams::default(), &ipl)
        .await
        .context("creating the IngestPipeline")?;

    log.step("rows arrive; Ready with figures");
    let ipl = wait_until(
        "Ready=True with rowsLoaded > 0 in the status",
        START_TIMEOUT,
        async || {
            let ipl = cluster.ipl().await?;
            let st = ipl.status.as_ref().context("no status yet")?;
            ensure!(
                condition_status(&ipl, "Ready").as_deref() == Some("True")
                    && st.rows_loaded.is_some_and(|n| n > 0)
                    && st.workers_ready == 2,
                "{}; conditions: {}",
                figures(&ipl),
                conditions_summary(&ipl)
            );
            Ok(ipl)
        },
    )
    .await?;
    log.note(figures(&ipl));
    let db_rows = first(cluster.query_ints("SELECT count(*) FROM events").await?)?;
    ensure!(db_rows > 0, "status shows rows but events is empty");
    log.note(format!("{db_rows} rows in events"));
    let generator = generator_identity(cluster).await?;
    log.note(format!(
        "generator pod {} (uid {})",
        generator.0, generator.1
    ));

    log.step("delete a worker pod mid-run");
    let workers = cluster
        .wait_pods_ready("worker", 2, CONVERGE_TIMEOUT)
        .await?;
    let victim = workers.first().context("no worker pod")?;
    let (victim_name, victim_uid) = (victim.name_any(), victim.uid().unwrap_or_default());
    let before = cluster.ledger_files().await?;
    cluster
        .api::<Pod>()
        .delete(
            &victim_name,
            &DeleteParams {
                grace_period_seconds: Some(2),
                ..DeleteParams::default()
            },
        )
        .await
        .with_context(|| format!("deleting {victim_name}"))?;
    log.note(format!(
        "deleted {victim_name} with a 2 s grace period (SIGKILL if its batch takes longer); ledger had {before} files"
    ));
    wait_until(
        &format!("{victim_name} replaced and ready"),
        CONVERGE_TIMEOUT,
        async || {
            let pod = cluster.api::<Pod>().get(&victim_name).await?;
            ensure!(
                pod.uid().unwrap_or_default() != victim_uid && pod_ready(&pod),
                "{}",
                pod_summary(&pod)
            );
            Ok(())
        },
    )
    .await?;
    cluster.wait_ready(2, CONVERGE_TIMEOUT).await?;
    wait_until(
        "more files committed after the restart",
        CONVERGE_TIMEOUT,
        async || {
            let now = cluster.ledger_files().await?;
            ensure!(now > before, "ledger still at {now} files");
            Ok(())
        },
    )
    .await?;

    for (replicas, label) in [(3, "scale workers 2 → 3"), (1, "scale workers 3 → 1")] {
        log.step(label);
        let before = cluster.ledger_files().await?;
        cluster
            .patch_pipeline(log, json!({ "worker": { "replicas": replicas } }))
            .await?;
        cluster
            .wait_pods_ready("worker", replicas as usize, CONVERGE_TIMEOUT)
            .await?;
        let ipl = cluster.wait_ready(replicas, CONVERGE_TIMEOUT).await?;
        let sts = cluster
            .api::<StatefulSet>()
            .get(&format!("{PIPELINE}-worker"))
            .await?;
        ensure!(
            sts.spec.replicas == Some(replicas),
            "the StatefulSet has replicas {:?}",
            sts.spec.replicas
        );
        wait_until("ingest continues", CONVERGE_TIMEOUT, async || {
            let now = cluster.ledger_files().await?;
            ensure!(now > before, "ledger still at {now} files");
            Ok(())
        })
        .await?;
        log.note(figures(&ipl));
    }

    log.step("stop the generator; drain the backlog");
    let stopped_at = Utc::now();
    let generated = stop_generator(cluster, log, Some(&generator)).await?;
    let deploy = cluster
        .api::<Deployment>()
        .get(&format!("{PIPELINE}-generator"))
        .await?;
    ensure!(
        deploy.spec.replicas == Some(0),
        "generator Deployment replicas {:?} with generator.enabled=false",
        deploy.spec.replicas
    );
    wait_drained(cluster, log, generated.map(|g| g.files), stopped_at).await?;

    log.step("exactly-once after a worker kill and scaling");
    let first_round = check_exactly_once(cluster, log, generated).await?;

    log.step("kubectl sluice status agrees with the database");
    plugin::check_status(cluster, log, 1).await?;

    log.step("suspend");
    cluster
        .patch_pipeline(log, json!({ "suspend": true }))
        .await?;
    cluster.wait_pods_gone("worker", CONVERGE_TIMEOUT).await?;
    cluster
        .wait_pods_gone("generator", CONVERGE_TIMEOUT)
        .await?;
    wait_until(
        "Suspended=True, 0 workers desired",
        CONVERGE_TIMEOUT,
        async || {
            let ipl = cluster.ipl().await?;
            let st = ipl.status.as_ref().context("no status")?;
            ensure!(
                condition_status(&ipl, "Suspended").as_deref() == Some("True")
                    && condition_status(&ipl, "Ready").as_deref() == Some("False")
                    && st.workers_desired == 0
                    && st.observed_generation == ipl.metadata.generation,
                "{}; conditions: {}",
                figures(&ipl),
                conditions_summary(&ipl)
            );
            Ok(())
        },
    )
    .await?;
    let sts = cluster
        .api::<StatefulSet>()
        .get(&format!("{PIPELINE}-worker"))
        .await?;
    ensure!(
        sts.spec.replicas == Some(0),
        "suspended, but the worker StatefulSet has replicas {:?}",
        sts.spec.replicas
    );
    let after_suspend = cluster.ledger_files().await?;
    ensure!(
        after_suspend == first_round.files,
        "the ledger changed while suspended with nothing to do: {} → {after_suspend}",
        first_round.files
    );

    log.step("resume (generator on again)");
    cluster
        .patch_pipeline(
            log,
            json!({ "suspend": false, "generator": { "enabled": true } }),
        )
        .await?;
    cluster
        .wait_pods_ready("worker", 1, CONVERGE_TIMEOUT)
        .await?;
    let second_identity = generator_identity(cluster).await?;
    let ipl = cluster.wait_ready(1, CONVERGE_TIMEOUT).await?;
    ensure!(
        condition_status(&ipl, "Suspended").as_deref() == Some("False"),
        "resumed, but {}",
        conditions_summary(&ipl)
    );
    wait_until(
        "new files loaded after resuming",
        CONVERGE_TIMEOUT,
        async || {
            let now = cluster.ledger_files().await?;
            ensure!(now > first_round.files, "ledger still at {now} files");
            Ok(())
        },
    )
    .await?;

    log.step("stop the generator again; drain; exactly-once over both runs");
    let stopped_at = Utc::now();
    let second = stop_generator(cluster, log, Some(&second_identity)).await?;
    let total = match (generated, second) {
        (Some(mut a), Some(b)) => {
            a += b;
            Some(a)
        }
        _ => None,
    };
    wait_drained(cluster, log, total.map(|g| g.files), stopped_at).await?;
    check_exactly_once(cluster, log, total).await?;

    Ok(())
}
