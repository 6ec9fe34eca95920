//! The suite's settings from the environment (the contract of `scripts/e2e-kind` and
//! `scripts/e2e-local`), and where the repository's files are.

use std::path::PathBuf;

use anyhow::{Result, bail, ensure};

pub const SKIP_MESSAGE: &str = "*** SKIPPED: SLUICE_E2E_KUBECONFIG not set (needs a cluster that runs pods: scripts/e2e-kind, or a local cluster)";

#[derive(Debug, Clone)]
pub struct Settings {
    pub kubeconfig: PathBuf,
    pub operator_image: Option<String>,
    pub worker_image: Option<String>,
    pub generator_image: Option<String>,
    pub postgres_image: Option<String>,
    /// (namespace, release) of an installed chart.
    pub chart_installed: Option<(String, String)>,
    pub keep_namespace: bool,
}

pub fn env_nonempty(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

impl Settings {
    /// `None` (after printing the SKIPPED line) when no cluster is configured.
    pub fn from_env() -> Result<Option<Settings>> {
        let Some(kubeconfig) = env_nonempty("SLUICE_E2E_KUBECONFIG") else {
            eprintln!("{SKIP_MESSAGE}");
            return Ok(None);
        };
        let kubeconfig = PathBuf::from(kubeconfig);
        ensure!(
            kubeconfig.is_file(),
            "SLUICE_E2E_KUBECONFIG={} is not a file",
            kubeconfig.display()
        );
        let chart_installed = env_nonempty("SLUICE_E2E_CHART_INSTALLED")
            .map(|v| parse_chart_installed(&v))
            .transpose()?;
        Ok(Some(Settings {
            kubeconfig,
            operator_image: env_nonempty("SLUICE_E2E_OPERATOR_IMAGE"),
            worker_image: env_nonempty("SLUICE_E2E_WORKER_IMAGE"),
            generator_image: env_nonempty("SLUICE_E2E_GENERATOR_IMAGE"),
            postgres_image: env_nonempty("SLUICE_E2E_POSTGRES_IMAGE"),
            chart_installed,
            keep_namespace: env_nonempty("SLUICE_E2E_KEEP_NAMESPACE").is_some(),
        }))
    }
}

/// `<namespace>/<release>`.
pub fn parse_chart_installed(v: &str) -> Result<(String, String)> {
    match v.trim().split_once('/') {
        Some((ns, rel)) if !ns.is_empty() && !rel.is_empty() && !rel.contains('/') => {
            Ok((ns.to_string(), rel.to_string()))
        }
        _ => bail!("SLUICE_E2E_CHART_INSTALLED={v:?}: expected <namespace>/<release>"),
    }
}

/// `registry:5000/org/name:tag` → (`registry:5000/org/name`, `tag`). The chart takes a
/// repository and a tag, so a reference without a tag (or with a digest) is refused.
pub fn split_image(image: &str) -> Result<(String, String)> {
    ensure!(
        !image.contains('@'),
        "image {image:?}: digests are not supported here, give repository:tag"
    );
    let last_slash = image.rfind('/').map_or(0, |i| i + 1);
    match image[last_slash..].rfind(':') {
        Some(i) => {
            let at = last_slash + i;
            let (repo, tag) = (&image[..at], &image[at + 1..]);
            ensure!(
                !repo.is_empty() && !tag.is_empty(),
                "image {image:?}: empty repository or tag"
            );
            Ok((repo.to_string(), tag.to_string()))
        }
        None => bail!("image {image:?} has no tag: give repository:tag"),
    }
}

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

pub fn example_path(file: &str) -> PathBuf {
    repo_root().join("deploy/examples").join(file)
}

#[test]
fn image_and_release_parsers() -> Result<()> {
    ensure!(split_image("sluice/operator:e2e")? == ("sluice/operator".into(), "e2e".into()));
    ensure!(
        split_image("localhost:5000/sluice/op:1.2")?
            == ("localhost:5000/sluice/op".into(), "1.2".into())
    );
    ensure!(split_image("localhost:5000/sluice/op").is_err());
    ensure!(split_image("op@sha256:abc").is_err());
    ensure!(
        parse_chart_installed("sluice-system/sluice")? == ("sluice-system".into(), "sluice".into())
    );
    ensure!(parse_chart_installed("sluice").is_err());
    Ok(())
}

/// The skip path CI takes: with no cluster configured the scenario passes by skipping.
#[test]
fn skips_without_a_cluster() -> Result<()> {
    if env_nonempty("SLUICE_E2E_KUBECONFIG").is_none() {
        ensure!(Settings::from_env()?.is_none());
    }
    Ok(())
}
