//! `--allowed-image-prefixes`: which container images a pipeline may run.
//!
//! Whoever may create an `IngestPipeline` chooses the images its pods run, in its
//! namespace, with the pods' ServiceAccount and the referenced Secret mounted. A cluster
//! admin can restrict that to trusted registries or repositories: a pipeline naming an
//! image outside the allowed prefixes is refused (Degraded, reason `InvalidSpec`) and
//! nothing is rolled out for it. No prefixes: any image.
//!
//! The check is a plain string prefix, so a prefix should end with `/`: `ghcr.io/acme`
//! also allows `ghcr.io/acme-evil/…`, `ghcr.io/acme/` does not.

use crate::crd::IngestPipeline;

/// The allowed image prefixes; empty allows any image.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ImagePolicy {
    prefixes: Vec<String>,
}

impl ImagePolicy {
    /// From the flag's values: trimmed, empty entries dropped.
    pub fn new<I, S>(prefixes: I) -> ImagePolicy
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        ImagePolicy {
            prefixes: prefixes
                .into_iter()
                .map(|p| p.as_ref().trim().to_string())
                .filter(|p| !p.is_empty())
                .collect(),
        }
    }

    pub fn prefixes(&self) -> &[String] {
        &self.prefixes
    }

    /// True when any image is allowed (no prefixes given).
    pub fn allows_any(&self) -> bool {
        self.prefixes.is_empty()
    }

    /// Whether `image` starts with an allowed prefix.
    pub fn allows(&self, image: &str) -> bool {
        self.allows_any() || self.prefixes.iter().any(|p| image.starts_with(p.as_str()))
    }

    /// Warnings for prefixes that do not end with `/` (and so also allow repositories
    /// whose name merely begins the same way), to log at startup.
    pub fn warnings(&self) -> Vec<String> {
        self.prefixes
            .iter()
            .filter(|p| !p.ends_with('/'))
            .map(|p| {
                format!(
                    "--allowed-image-prefixes entry {p:?} does not end with \"/\": it also \
                     allows images such as \"{p}-other/…\"; use \"{p}/\" to allow one \
                     registry or repository path only"
                )
            })
            .collect()
    }

    /// Every image field of the pipeline. The pod templates carry no image field, so
    /// these are all the images the operator rolls out for it.
    pub fn check(&self, ipl: &IngestPipeline) -> Result<(), String> {
        if self.allows_any() {
            return Ok(());
        }
        let images = &ipl.spec.images;
        for (field, image) in [
            ("spec.images.worker", &images.worker),
            ("spec.images.generator", &images.generator),
        ] {
            if !self.allows(image) {
                return Err(format!(
                    "{field} {image:?} is not allowed by this operator: images must start \
                     with one of {:?} (--allowed-image-prefixes). Use an image from an \
                     allowed registry (e.g. mirror it there), or ask the cluster \
                     administrator to allow its prefix",
                    self.prefixes
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::sample;

    #[test]
    fn empty_allows_any_image() {
        let p = ImagePolicy::new(["", "  "]);
        assert!(p.allows_any());
        assert!(p.allows("anything:at-all"));
        assert_eq!(p.check(&sample()), Ok(()));
        assert!(p.warnings().is_empty());
    }

    #[test]
    fn prefix_edge_cases() {
        let p = ImagePolicy::new(["ghcr.io/acme/"]);
        assert!(p.allows("ghcr.io/acme/sluice-worker:1.0"));
        assert!(p.allows("ghcr.io/acme/team/sluice-worker@sha256:abc"));
        assert!(!p.allows("ghcr.io/acme-evil/sluice-worker:1.0"));
        assert!(!p.allows("ghcr.io/acme"));
        assert!(!p.allows("evil.io/ghcr.io/acme/x"));
        assert!(
            !p.allows("GHCR.IO/acme/x"),
            "case-sensitive, like references"
        );
        assert!(p.warnings().is_empty());

        let loose = ImagePolicy::new(["ghcr.io/acme"]);
        assert!(loose.allows("ghcr.io/acme-evil/sluice-worker:1.0"));
        let w = loose.warnings();
        assert_eq!(w.len(), 1);
        assert!(w[0].contains("\"ghcr.io/acme/\""), "{}", w[0]);
    }

    #[test]
    fn several_prefixes_any_matches() {
        let p = ImagePolicy::new([" registry.local:5000/ ", "ghcr.io/sluice-dev/"]);
        assert_eq!(
            p.prefixes(),
            ["registry.local:5000/", "ghcr.io/sluice-dev/"]
        );
        assert!(p.allows("registry.local:5000/sluice-worker:dev"));
        assert!(p.allows("ghcr.io/sluice-dev/sluice-generator:0.1.0"));
        assert!(!p.allows("docker.io/library/busybox"));
    }

    #[test]
    fn check_names_the_field_image_and_prefixes() {
        let p = ImagePolicy::new(["ghcr.io/sluice-dev/"]);
        let mut ipl = sample();
        ipl.spec.images.worker = "ghcr.io/sluice-dev/sluice-worker:1".into();
        ipl.spec.images.generator = "ghcr.io/sluice-dev/sluice-generator:1".into();
        assert_eq!(p.check(&ipl), Ok(()));

        ipl.spec.images.generator = "docker.io/evil/gen:1".into();
        let msg = p.check(&ipl).expect_err("refused");
        assert!(msg.starts_with("spec.images.generator"), "{msg}");
        assert!(msg.contains("docker.io/evil/gen:1"), "{msg}");
        assert!(msg.contains("ghcr.io/sluice-dev/"), "{msg}");
        assert!(msg.contains("--allowed-image-prefixes"), "{msg}");

        ipl.spec.images.worker = "ghcr.io/sluice-dev-x/w:1".into();
        let msg = p.check(&ipl).expect_err("refused");
        assert!(msg.starts_with("spec.images.worker"), "{msg}");
    }
}
