//! The ConfigMap the pods read their settings from (`--config`), and its hash.

use k8s_openapi::api::core::v1::ConfigMap;
use sha2::{Digest, Sha256};
use sluice_core::config::{PipelineConfig, SslMode};

use super::*;
use crate::crd::IngestPipeline;

pub const CONFIG_FILE: &str = "pipeline.json";

pub const CONFIG_DIR: &str = "/etc/sluice";

/// Pod template annotation carrying the sha256 of the pipeline config: a config change
/// changes the template, so the pods roll.
pub const CONFIG_HASH_ANNOTATION: &str = "sluice.dev/config-hash";

/// The config the pods read (`--config`), from the resource's spec and the sslmode in
/// effect ([`BuildInputs::sslmode`]).
pub fn pipeline_config(ipl: &IngestPipeline, sslmode: SslMode) -> PipelineConfig {
    PipelineConfig {
        // Pipelines sharing one database keep their ledgers apart by this id.
        pipeline: format!(
            "{}/{}",
            ipl.metadata.namespace.as_deref().unwrap_or("default"),
            ipl.metadata.name.as_deref().unwrap_or("pipeline")
        ),
        generator: ipl.spec.generator.config.clone(),
        worker: ipl.spec.worker.config.clone(),
        tables: ipl.spec.postgres.tables.clone(),
        sslmode,
        source: ipl.spec.source.clone(),
        postgres_schema: ipl.spec.postgres.schema.clone(),
        schema: ipl.spec.schema.clone(),
    }
}

/// The ConfigMap's JSON text: pretty, with a stable field order (struct order), so the
/// same spec always gives the same bytes and hash.
pub fn config_json(cfg: &PipelineConfig) -> String {
    serde_json::to_string_pretty(cfg).unwrap_or_else(|_| "{}".into())
}

/// Lower-case hex sha256.
pub fn sha256_hex(data: &[u8]) -> String {
    Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

pub fn config_map(ipl: &IngestPipeline, json: String) -> ConfigMap {
    ConfigMap {
        metadata: meta(ipl, ipl.config_map_name(), "config"),
        data: Some([(CONFIG_FILE.to_string(), json)].into()),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::*;
    #[test]
    fn config_map_holds_the_config_and_hash_follows_it() {
        let ipl = sample();
        let a = build(&ipl, &BuildInputs::default());
        let json = &a.config_map.data.as_ref().expect("data")[CONFIG_FILE];
        let parsed: PipelineConfig = serde_json::from_str(json).expect("pods can parse it");
        assert_eq!(parsed, pipeline_config(&ipl, SslMode::Require));
        assert_eq!(a.config_hash, sha256_hex(json.as_bytes()));
        assert_eq!(
            template_annotation(&a, CONFIG_HASH_ANNOTATION),
            a.config_hash
        );

        // Same spec → same hash; a spec change outside the config → same hash.
        let mut same = ipl.clone();
        same.spec.worker.replicas = 5;
        same.spec.images.worker = "example/worker:dev".into();
        assert_eq!(
            build(&same, &BuildInputs::default()).config_hash,
            a.config_hash
        );

        // A config change → a new hash on both pod templates.
        let mut changed = ipl.clone();
        changed.spec.worker.config.batch.max_files = 7;
        let b = build(&changed, &BuildInputs::default());
        assert_ne!(b.config_hash, a.config_hash);
        assert_eq!(
            template_annotation(&b, CONFIG_HASH_ANNOTATION),
            b.config_hash
        );
        let gen_hash = b
            .generator
            .spec
            .template
            .metadata
            .as_ref()
            .and_then(|m| m.annotations.as_ref())
            .and_then(|a| a.get(CONFIG_HASH_ANNOTATION).cloned());
        assert_eq!(gen_hash.as_deref(), Some(b.config_hash.as_str()));

        let mut ssl = ipl.clone();
        ssl.spec.postgres.sslmode = Some(SslMode::Disable);
        assert_ne!(
            build(&ssl, &BuildInputs::default()).config_hash,
            a.config_hash
        );
    }
}
