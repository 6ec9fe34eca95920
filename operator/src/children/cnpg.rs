//! The workers' connection to a CloudNativePG cluster named in
//! `spec.postgres.cloudNativePG`: host and port as values, the application user's
//! credentials and the CA as files from the Secrets CloudNativePG generates.

use k8s_openapi::api::core::v1::{
    EnvVar, KeyToPath, ProjectedVolumeSource, SecretProjection, Volume, VolumeProjection,
};
use kube::ResourceExt;

use super::env_value;
use crate::crd::{CloudNativePgRef, IngestPipeline};

/// CloudNativePG's PostgreSQL port (fixed by CloudNativePG).
pub const CNPG_PORT: u16 = 5432;

/// Keys of the `<cluster>-app` Secret the workers read (as files).
pub const CNPG_APP_KEYS: [&str; 3] = ["username", "password", "dbname"];

/// Host name of the cluster's read-write Service. It is among the names CloudNativePG
/// puts in the server certificate, so verify-full checks it.
pub fn cnpg_host(ipl: &IngestPipeline, cluster: &CloudNativePgRef) -> String {
    match ipl.namespace() {
        Some(ns) => format!("{}.{ns}.svc", cluster.rw_service()),
        None => cluster.rw_service(),
    }
}

/// The connection environment: PGHOST/PGPORT as values, the user, database and password
/// read from the files of [`cnpg_volume`] mounted at `dir`.
pub fn cnpg_env(ipl: &IngestPipeline, cluster: &CloudNativePgRef, dir: &str) -> Vec<EnvVar> {
    vec![
        env_value("PGHOST", &cnpg_host(ipl, cluster)),
        env_value("PGPORT", &CNPG_PORT.to_string()),
        env_value("PGUSER_FILE", &format!("{dir}/username")),
        env_value("PGDATABASE_FILE", &format!("{dir}/dbname")),
        env_value("PGPASSWORD_FILE", &format!("{dir}/password")),
    ]
}

fn items(keys: &[&str]) -> Option<Vec<KeyToPath>> {
    Some(
        keys.iter()
            .map(|k| KeyToPath {
                key: (*k).into(),
                path: (*k).into(),
                ..Default::default()
            })
            .collect(),
    )
}

/// One projected volume `name` with the app Secret's username, password and dbname and,
/// with `with_ca`, the CA Secret's `ca.crt` only (never its `ca.key`), readable by the
/// pod's group only.
pub fn cnpg_volume(name: &str, cluster: &CloudNativePgRef, with_ca: bool) -> Volume {
    let secret = |name: String, keys: &[&str]| VolumeProjection {
        secret: Some(SecretProjection {
            name,
            items: items(keys),
            optional: Some(false),
        }),
        ..Default::default()
    };
    let mut sources = vec![secret(cluster.app_secret(), &CNPG_APP_KEYS)];
    if with_ca {
        sources.push(secret(cluster.ca_secret(), &[crate::tls::CA_KEY]));
    }
    Volume {
        name: name.into(),
        projected: Some(ProjectedVolumeSource {
            sources: Some(sources),
            default_mode: Some(0o440),
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::children::*;
    use crate::fixtures::*;

    fn cnpg_sample() -> IngestPipeline {
        let mut ipl = sample();
        ipl.spec.postgres.secret_ref = None;
        ipl.spec.postgres.cloud_native_pg = Some(CloudNativePgRef {
            cluster: "pg".into(),
        });
        ipl
    }

    fn env_of(c: &Children) -> Vec<EnvVar> {
        pod_spec_of_worker(c).containers[0]
            .env
            .clone()
            .expect("env")
    }

    #[test]
    fn the_cluster_gives_host_port_and_credential_files() {
        let c = build(
            &cnpg_sample(),
            &BuildInputs {
                secret_has_ca: true,
                ..Default::default()
            },
        );
        let env = env_of(&c);
        let value = |n: &str| {
            env.iter()
                .find(|e| e.name == n)
                .and_then(|e| e.value.clone())
                .unwrap_or_else(|| panic!("no {n}"))
        };
        assert_eq!(value("PGHOST"), "pg-rw.data.svc");
        assert_eq!(value("PGPORT"), "5432");
        assert_eq!(value("PGUSER_FILE"), "/etc/sluice-postgres/username");
        assert_eq!(value("PGDATABASE_FILE"), "/etc/sluice-postgres/dbname");
        assert_eq!(value("PGPASSWORD_FILE"), "/etc/sluice-postgres/password");
        assert_eq!(value("PGSSLROOTCERT"), "/etc/sluice-postgres/ca.crt");
        for absent in ["DATABASE_URL_FILE", "PGPASSWORD", "PGUSER", "PGDATABASE"] {
            assert!(!env.iter().any(|e| e.name == absent), "{absent}");
        }
        let pod = pod_spec_of_worker(&c);
        let vol = pod
            .volumes
            .iter()
            .flatten()
            .find(|v| v.name == "postgres")
            .expect("postgres volume");
        assert!(vol.secret.is_none());
        let p = vol.projected.as_ref().expect("projected");
        assert_eq!(p.default_mode, Some(0o440));
        let sources: Vec<(String, Vec<String>)> = p
            .sources
            .iter()
            .flatten()
            .filter_map(|s| s.secret.as_ref())
            .map(|s| {
                (
                    s.name.clone(),
                    s.items.iter().flatten().map(|i| i.key.clone()).collect(),
                )
            })
            .collect();
        assert_eq!(
            sources,
            [
                (
                    "pg-app".to_string(),
                    vec!["username".into(), "password".into(), "dbname".into()]
                ),
                ("pg-ca".to_string(), vec!["ca.crt".to_string()]),
            ]
        );
    }

    #[test]
    fn without_verify_full_the_ca_is_not_mounted() {
        let mut ipl = cnpg_sample();
        ipl.spec.postgres.sslmode = Some(sluice_core::config::SslMode::Require);
        let c = build(
            &ipl,
            &BuildInputs {
                secret_has_ca: true,
                ..Default::default()
            },
        );
        assert!(!env_of(&c).iter().any(|e| e.name == "PGSSLROOTCERT"));
        let pod = pod_spec_of_worker(&c);
        let p = pod
            .volumes
            .iter()
            .flatten()
            .find(|v| v.name == "postgres")
            .and_then(|v| v.projected.as_ref())
            .expect("projected");
        assert_eq!(p.sources.as_ref().map(Vec::len), Some(1));
    }
}
