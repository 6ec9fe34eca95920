//! Checks of an `IngestPipeline` that its OpenAPI schema cannot express (the API server
//! is 1.20: no CEL). A failure becomes the Degraded condition with reason `InvalidSpec`
//! and a message naming the field and what to change; nothing is applied until fixed.

use k8s_openapi::api::core::v1::ResourceRequirements;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::ResourceExt;
use sluice_core::config::ConfigError;

use crate::children::{effective_resources, reserved_key};
use crate::crd::{IngestPipeline, default_generator_resources, default_worker_resources};

/// Longest pipeline name: children append up to 10 characters (`-generator`) and the
/// StatefulSet's pods need room for the controller-revision-hash label (≤ 63).
pub const MAX_NAME_LEN: usize = 40;

/// Returns a message saying what to fix, or Ok.
pub fn validate(ipl: &IngestPipeline) -> Result<(), String> {
    let name = ipl.name_any();
    if !is_dns_label(&name) || name.len() > MAX_NAME_LEN {
        return Err(format!(
            "metadata.name {name:?} cannot be used for the pipeline's Services and pods: \
             use at most {MAX_NAME_LEN} lower-case letters, digits and '-', starting with a \
             letter and ending with a letter or digit"
        ));
    }
    let spec = &ipl.spec;
    spec.generator
        .config
        .validate()
        .map_err(|e| field_error("spec.generator", &e))?;
    if spec.generator.config.total_rows.is_some() || spec.generator.config.total_files.is_some() {
        return Err(
            "spec.generator.totalRows/totalFiles are for one-off local runs: remove \
                    them (the Deployment would restart a generator that stops), or set \
                    spec.generator.enabled: false to stop generating"
                .into(),
        );
    }
    spec.worker
        .config
        .validate()
        .map_err(|e| field_error("spec.worker", &e))?;
    spec.postgres
        .tables
        .validate()
        .map_err(|e| field_error("spec.postgres", &e))?;
    crate::credentials::check_one_source(&spec.postgres)?;
    if let Some(schema) = &spec.schema {
        schema.check().map_err(|e| format!("spec.schema: {e}"))?;
        if spec.worker.config.dedupe_by_event_id && schema.key.is_none() {
            return Err(
                "spec.schema.key: dedupe (spec.worker.dedupeByEventId) needs a key column".into(),
            );
        }
    }
    // Everything the pods check at start (source dialect, postgres.schema, the schema
    // against the tables and dedupe), so a bad resource is refused here, not in a pod.
    crate::children::pipeline_config(ipl, sluice_core::config::SslMode::Require)
        .validate_for_worker()
        .map_err(|e| field_error("spec", &e))?;
    if !(1..=64).contains(&spec.worker.replicas) {
        return Err(format!(
            "spec.worker.replicas is {}: use 1 to 64 (spec.suspend: true scales to zero)",
            spec.worker.replicas
        ));
    }
    check_size("spec.landingZone.size", &spec.landing_zone.size)?;
    check_size("spec.checkpoints.size", &spec.checkpoints.size)?;
    check_resources(
        "spec.worker.resources",
        &effective_resources(&spec.worker.resources, &default_worker_resources()),
    )?;
    check_resources(
        "spec.generator.resources",
        &effective_resources(&spec.generator.resources, &default_generator_resources()),
    )?;
    check_max_unavailable(&spec.worker.disruption_budget.max_unavailable)?;
    for (field, template) in [
        ("spec.podTemplate", &spec.pod_template),
        ("spec.generator.podTemplate", &spec.generator.pod_template),
        ("spec.worker.podTemplate", &spec.worker.pod_template),
    ] {
        if let Some((part, key)) = template.as_ref().and_then(reserved_key) {
            return Err(format!(
                "{field}.{part} sets {key:?}, which the operator sets itself (it selects and \
                 configures its pods by it): remove it, or use another key"
            ));
        }
    }
    for (field, image) in [
        ("spec.images.worker", &spec.images.worker),
        ("spec.images.generator", &spec.images.generator),
    ] {
        if image.trim().is_empty() || image.chars().any(char::is_whitespace) {
            return Err(format!(
                "{field} {image:?} is not an image reference (e.g. ghcr.io/sluice-dev/sluice-worker:0.1.0)"
            ));
        }
    }
    Ok(())
}

fn check_max_unavailable(v: &IntOrString) -> Result<(), String> {
    let ok = match v {
        IntOrString::Int(n) => *n >= 0,
        IntOrString::String(s) => s
            .strip_suffix('%')
            .and_then(|p| p.parse::<u32>().ok())
            .is_some_and(|p| p <= 100),
    };
    if ok {
        Ok(())
    } else {
        Err(format!(
            "spec.worker.disruptionBudget.maxUnavailable {v:?} is neither a number of \
             workers (0 or more) nor a percentage (\"25%\")"
        ))
    }
}

fn field_error(prefix: &str, e: &ConfigError) -> String {
    format!("{prefix}.{}: {}", e.field, e.problem)
}

/// RFC 1035 label: what Service names need.
pub fn is_dns_label(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b[0].is_ascii_lowercase()
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[b.len() - 1] != b'-'
}

fn check_size(field: &str, q: &Quantity) -> Result<(), String> {
    match parse_quantity(&q.0) {
        Some(v) if v > 0.0 => Ok(()),
        _ => Err(format!(
            "{field} {:?} is not a positive storage size: use e.g. 10Gi or 500Mi",
            q.0
        )),
    }
}

fn check_resources(field: &str, r: &ResourceRequirements) -> Result<(), String> {
    for (kind, map) in [("requests", &r.requests), ("limits", &r.limits)] {
        for (res, q) in map.iter().flatten() {
            if parse_quantity(&q.0).is_none_or(|v| v < 0.0) {
                return Err(format!(
                    "{field}.{kind}.{res} {:?} is not a quantity: use e.g. 250m or 1 (cpu), 64Mi (memory)",
                    q.0
                ));
            }
        }
    }
    if let (Some(req), Some(lim)) = (&r.requests, &r.limits) {
        for (res, rq) in req {
            let Some(lq) = lim.get(res) else { continue };
            let (Some(rv), Some(lv)) = (parse_quantity(&rq.0), parse_quantity(&lq.0)) else {
                continue;
            };
            if rv > lv {
                return Err(format!(
                    "{field}.requests.{res} ({}) exceeds {field}.limits.{res} ({}): raise the \
                     limit or lower the request",
                    rq.0, lq.0
                ));
            }
        }
    }
    Ok(())
}

/// Parses a Kubernetes quantity (`1.5Gi`, `250m`, `1e3`, `2`) into a number; None when
/// malformed.
pub fn parse_quantity(s: &str) -> Option<f64> {
    let s = s.trim();
    let end = s
        .char_indices()
        .find(|(i, c)| !(c.is_ascii_digit() || *c == '.' || (*i == 0 && (*c == '+' || *c == '-'))))
        .map_or(s.len(), |(i, _)| i);
    let (num, suffix) = s.split_at(end);
    if num.is_empty() || num == "+" || num == "-" || num.matches('.').count() > 1 {
        return None;
    }
    let n: f64 = num.parse().ok()?;
    let mult = match suffix {
        "" => 1.0,
        "n" => 1e-9,
        "u" => 1e-6,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        "Ki" => 1024.0,
        "Mi" => 1024f64.powi(2),
        "Gi" => 1024f64.powi(3),
        "Ti" => 1024f64.powi(4),
        "Pi" => 1024f64.powi(5),
        "Ei" => 1024f64.powi(6),
        e if e.starts_with(['e', 'E']) => 10f64.powi(e[1..].parse::<i32>().ok()?),
        _ => return None,
    };
    Some(n * mult)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{IngestPipelineSpec, PostgresSpec, SecretRef};

    fn sample(name: &str) -> IngestPipeline {
        IngestPipeline::new(
            name,
            IngestPipelineSpec {
                postgres: PostgresSpec {
                    secret_ref: Some(SecretRef { name: "pg".into() }),
                    ..Default::default()
                },
                ..Default::default()
            },
        )
    }

    #[test]
    fn defaults_are_valid() {
        assert_eq!(validate(&sample("shop")), Ok(()));
    }

    #[test]
    fn bad_names_say_what_to_use() {
        for bad in ["Shop", "shop.eu", "1shop", &"x".repeat(41)] {
            let msg = validate(&sample(bad)).expect_err(bad);
            assert!(msg.contains("metadata.name"), "{msg}");
            assert!(msg.contains("at most 40"), "{msg}");
        }
    }

    #[test]
    fn core_config_problems_name_the_spec_field() {
        let mut ipl = sample("shop");
        ipl.spec.generator.config.bad_row_share = 2.0;
        let msg = validate(&ipl).expect_err("share");
        assert!(msg.starts_with("spec.generator.badRowShare"), "{msg}");

        let mut ipl = sample("shop");
        ipl.spec.worker.config.batch.max_rows = 0;
        assert!(
            validate(&ipl)
                .expect_err("batch")
                .starts_with("spec.worker.batch")
        );

        let mut ipl = sample("shop");
        ipl.spec.postgres.tables.quarantine = "events".into();
        let msg = validate(&ipl).expect_err("tables");
        assert!(msg.contains("spec.postgres.tables"), "{msg}");
        assert!(msg.contains("must differ"), "{msg}");
    }

    #[test]
    fn schema_source_and_postgres_schema_problems_name_the_field() {
        let mut ipl = sample("shop");
        ipl.spec.schema = Some(sluice_core::schema::TableSchema::ecommerce("orders", 60));
        assert_eq!(validate(&ipl), Ok(()));
        if let Some(s) = ipl.spec.schema.as_mut() {
            s.columns[7].precision = None;
        }
        let msg = validate(&ipl).expect_err("numeric without precision");
        assert!(
            msg.starts_with("spec.schema") && msg.contains("\"price\""),
            "{msg}"
        );

        let mut ipl = sample("shop");
        ipl.spec.source.csv.delimiter = "\n".into();
        let msg = validate(&ipl).expect_err("delimiter");
        assert!(msg.starts_with("spec.source.csv.delimiter"), "{msg}");

        let mut ipl = sample("shop");
        ipl.spec.postgres.schema = Some("pg_catalog".into());
        let msg = validate(&ipl).expect_err("reserved schema");
        assert!(msg.starts_with("spec.postgres.schema"), "{msg}");
    }

    #[test]
    fn one_off_generator_limits_are_refused() {
        let mut ipl = sample("shop");
        ipl.spec.generator.config.total_rows = Some(10);
        assert!(validate(&ipl).expect_err("total").contains("totalRows"));
    }

    #[test]
    fn sizes_and_resources() {
        let mut ipl = sample("shop");
        ipl.spec.landing_zone.size = Quantity("ten gigs".into());
        let msg = validate(&ipl).expect_err("size");
        assert!(
            msg.contains("spec.landingZone.size") && msg.contains("10Gi"),
            "{msg}"
        );

        let mut ipl = sample("shop");
        ipl.spec.worker.resources.requests =
            Some([("memory".to_string(), Quantity("1Gi".into()))].into());
        let msg = validate(&ipl).expect_err("req > lim");
        assert!(
            msg.contains("spec.worker.resources.requests.memory (1Gi) exceeds"),
            "{msg}"
        );
    }

    #[test]
    fn pod_templates_may_not_set_the_operators_keys() {
        let mut ipl = sample("shop");
        let mut t = crate::crd::PodTemplate {
            metadata: Some(crate::crd::PodMetadata {
                labels: [("team".to_string(), "data".to_string())].into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        ipl.spec.pod_template = Some(t.clone());
        assert_eq!(validate(&ipl), Ok(()));
        if let Some(md) = t.metadata.as_mut() {
            md.labels
                .insert("app.kubernetes.io/instance".into(), "other".into());
        }
        ipl.spec.worker.pod_template = Some(t);
        let msg = validate(&ipl).expect_err("reserved label");
        assert!(
            msg.starts_with(
                "spec.worker.podTemplate.metadata.labels sets \"app.kubernetes.io/instance\""
            ),
            "{msg}"
        );
    }

    #[test]
    fn max_unavailable_is_a_count_or_a_percentage() {
        let mut ipl = sample("shop");
        for ok in [IntOrString::Int(0), IntOrString::String("25%".into())] {
            ipl.spec.worker.disruption_budget.max_unavailable = ok;
            assert_eq!(validate(&ipl), Ok(()));
        }
        for bad in [IntOrString::Int(-1), IntOrString::String("half".into())] {
            ipl.spec.worker.disruption_budget.max_unavailable = bad;
            let msg = validate(&ipl).expect_err("bad maxUnavailable");
            assert!(
                msg.starts_with("spec.worker.disruptionBudget.maxUnavailable"),
                "{msg}"
            );
        }
    }

    #[test]
    fn quantities_parse() {
        assert_eq!(parse_quantity("10Gi"), Some(10.0 * 1024f64.powi(3)));
        assert_eq!(parse_quantity("250m"), Some(0.25));
        assert_eq!(parse_quantity("2"), Some(2.0));
        assert_eq!(parse_quantity("1e3"), Some(1000.0));
        assert_eq!(parse_quantity("1.5k"), Some(1500.0));
        assert_eq!(parse_quantity("Gi"), None);
        assert_eq!(parse_quantity("5 Gi"), None);
        assert_eq!(parse_quantity("5GB"), None);
        assert_eq!(parse_quantity("1.2.3"), None);
    }
}
