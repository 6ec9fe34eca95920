//! TLS to PostgreSQL by default: the sslmode a pipeline runs with, and what the status
//! says when it runs without verified TLS.
//!
//! `spec.postgres.sslmode` unset means: `verify-full` when the credentials Secret holds
//! `ca.crt` (the server's CA certificate), otherwise `require`. An explicit value wins.

use sluice_core::config::SslMode;

/// Key of the credentials Secret holding the PostgreSQL server's CA certificate (PEM).
pub const CA_KEY: &str = "ca.crt";

/// The sslmode the workers use: the spec's, or the TLS default when it is unset.
pub fn effective_sslmode(requested: Option<SslMode>, secret_has_ca: bool) -> SslMode {
    match requested {
        Some(mode) => mode,
        None if secret_has_ca => SslMode::VerifyFull,
        None => SslMode::Require,
    }
}

/// A note for the status when the connection may be unencrypted (`disable`, `prefer`);
/// None for `require` and `verify-full`.
pub fn weak_tls_note(mode: SslMode) -> Option<String> {
    let what = match mode {
        SslMode::Disable => "the connection to PostgreSQL is not encrypted",
        SslMode::Prefer => {
            "the connection to PostgreSQL falls back to plain TCP when the \
                            server offers no TLS"
        }
        SslMode::Require | SslMode::VerifyFull => return None,
    };
    Some(format!(
        "sslmode {}: {what}; remove spec.postgres.sslmode (verify-full with key {CA_KEY} in \
         the Secret, else require) or set require or verify-full",
        mode.as_str()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unset_sslmode_is_verified_with_a_ca_and_encrypted_without() {
        assert_eq!(effective_sslmode(None, true), SslMode::VerifyFull);
        assert_eq!(effective_sslmode(None, false), SslMode::Require);
    }

    #[test]
    fn an_explicit_sslmode_wins() {
        for mode in [
            SslMode::Disable,
            SslMode::Prefer,
            SslMode::Require,
            SslMode::VerifyFull,
        ] {
            assert_eq!(effective_sslmode(Some(mode), true), mode);
            assert_eq!(effective_sslmode(Some(mode), false), mode);
        }
    }

    #[test]
    fn the_workers_get_the_effective_sslmode() {
        use crate::children::{BuildInputs, CONFIG_FILE, build};
        use crate::fixtures::{pod_spec_of_worker, sample};
        let run = |requested: Option<SslMode>, secret_has_ca: bool| {
            let mut ipl = sample();
            ipl.spec.postgres.sslmode = requested;
            let c = build(
                &ipl,
                &BuildInputs {
                    secret_has_ca,
                    ..Default::default()
                },
            );
            let json = &c.config_map.data.as_ref().expect("data")[CONFIG_FILE];
            let cfg: serde_json::Value = serde_json::from_str(json).expect("json");
            let root_cert = pod_spec_of_worker(&c).containers[0]
                .env
                .iter()
                .flatten()
                .find(|e| e.name == "PGSSLROOTCERT")
                .and_then(|e| e.value.clone());
            (cfg["sslmode"].as_str().map(str::to_string), root_cert)
        };
        let ca = Some("/etc/sluice-postgres/ca.crt".to_string());
        assert_eq!(run(None, true), (Some("verify-full".into()), ca.clone()));
        assert_eq!(run(None, false), (Some("require".into()), None));
        assert_eq!(
            run(Some(SslMode::Disable), true),
            (Some("disable".into()), None)
        );
        assert_eq!(
            run(Some(SslMode::VerifyFull), false),
            (Some("verify-full".into()), ca)
        );
    }

    #[test]
    fn only_disable_and_prefer_get_a_note() {
        let d = weak_tls_note(SslMode::Disable).expect("note");
        assert!(d.starts_with("sslmode disable: "), "{d}");
        assert!(d.contains("not encrypted"), "{d}");
        let p = weak_tls_note(SslMode::Prefer).expect("note");
        assert!(p.starts_with("sslmode prefer: "), "{p}");
        assert_eq!(weak_tls_note(SslMode::Require), None);
        assert_eq!(weak_tls_note(SslMode::VerifyFull), None);
    }
}
