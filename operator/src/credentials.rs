//! Where the workers' PostgreSQL credentials come from, checked before the children are
//! built: a hand-written Secret (`spec.postgres.secretRef`) or a CloudNativePG cluster
//! named in `spec.postgres.cloudNativePG` (its `-app` and `-ca` Secrets). A missing
//! Cluster, Secret or key becomes the Degraded condition, naming it.

use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ApiResource, DynamicObject};
use kube::{Client, ResourceExt};
use sluice_core::config::SslMode;

use crate::children::{CNPG_APP_KEYS, SecretLayout};
use crate::crd::{CloudNativePgRef, IngestPipeline, PostgresSpec};
use crate::reason::Reason;
use crate::reconcile::{Error, check_secret, secret_layout};
use crate::status::Problem;
use crate::tls::{CA_KEY, effective_sslmode};

/// What the credentials check found.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Credentials {
    /// A missing Cluster, Secret or key.
    pub problem: Option<Problem>,
    /// resourceVersion(s) of the Secret(s) the workers mount; None while missing.
    pub version: Option<String>,
    /// Layout of a secretRef Secret (unused with CloudNativePG).
    pub layout: SecretLayout,
    /// Whether a CA certificate is there (decides the sslmode when it is unset).
    pub has_ca: bool,
}

/// Exactly one of secretRef and cloudNativePG (the CRD's oneOf says the same; this also
/// covers objects stored before it).
pub fn check_one_source(pg: &PostgresSpec) -> Result<(), String> {
    match (&pg.secret_ref, &pg.cloud_native_pg) {
        (Some(_), None) | (None, Some(_)) => Ok(()),
        (Some(_), Some(_)) => {
            Err("spec.postgres: set either secretRef or cloudNativePG, not both".into())
        }
        (None, None) => Err(
            "spec.postgres: set secretRef (a Secret with the connection) or cloudNativePG \
             (the name of a CloudNativePG Cluster in this namespace)"
                .into(),
        ),
    }
}

/// CloudNativePG's Cluster resource (postgresql.cnpg.io/v1).
pub fn cluster_resource() -> ApiResource {
    ApiResource {
        group: "postgresql.cnpg.io".into(),
        version: "v1".into(),
        api_version: "postgresql.cnpg.io/v1".into(),
        kind: "Cluster".into(),
        plural: "clusters".into(),
    }
}

fn has_key(secret: &Secret, key: &str) -> bool {
    secret.data.as_ref().is_some_and(|d| d.contains_key(key))
        || secret
            .string_data
            .as_ref()
            .is_some_and(|d| d.contains_key(key))
}

async fn get_secret(client: &Client, ns: &str, name: &str) -> Result<Option<Secret>, Error> {
    Api::<Secret>::namespaced(client.clone(), ns)
        .get_opt(name)
        .await
        .map_err(|source| Error::Secret {
            name: name.to_string(),
            source,
        })
}

/// Reads and checks the credentials of `ipl` (in namespace `ns`).
pub async fn resolve(
    client: &Client,
    ipl: &IngestPipeline,
    ns: &str,
) -> Result<Credentials, Error> {
    if let Some(cluster) = &ipl.spec.postgres.cloud_native_pg {
        return resolve_cnpg(client, ipl, cluster, ns).await;
    }
    let name = ipl
        .spec
        .postgres
        .secret_ref
        .as_ref()
        .map_or("", |s| s.name.as_str());
    let secret = get_secret(client, ns, name).await?;
    let (problem, version) = check_secret(secret.as_ref(), ipl, ns);
    Ok(Credentials {
        problem,
        version,
        layout: secret_layout(secret.as_ref()),
        has_ca: secret.as_ref().is_some_and(|s| has_key(s, CA_KEY)),
    })
}

async fn resolve_cnpg(
    client: &Client,
    ipl: &IngestPipeline,
    cluster: &CloudNativePgRef,
    ns: &str,
) -> Result<Credentials, Error> {
    let clusters: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), ns, &cluster_resource());
    // A 404 also when CloudNativePG's CRD is not installed.
    let found = clusters
        .get_opt(&cluster.cluster)
        .await
        .map_err(|e| {
            Error::Other(format!(
                "reading CloudNativePG Cluster {}: {e}",
                cluster.cluster
            ))
        })?
        .is_some();
    let app = get_secret(client, ns, &cluster.app_secret()).await?;
    let sslmode = effective_sslmode(ipl.spec.postgres.sslmode, true);
    let ca = if sslmode == SslMode::VerifyFull {
        get_secret(client, ns, &cluster.ca_secret()).await?
    } else {
        None
    };
    Ok(check_cnpg(
        cluster,
        ns,
        found,
        app.as_ref(),
        sslmode,
        ca.as_ref(),
    ))
}

/// The pure part of the CloudNativePG check.
pub fn check_cnpg(
    cluster: &CloudNativePgRef,
    ns: &str,
    found: bool,
    app: Option<&Secret>,
    sslmode: SslMode,
    ca: Option<&Secret>,
) -> Credentials {
    let c = &cluster.cluster;
    let problem = if !found {
        Some(Problem::new(
            Reason::PostgresClusterNotFound,
            format!(
                "CloudNativePG Cluster {c} (postgresql.cnpg.io/v1) not found in namespace {ns}: \
                 create it, or fix spec.postgres.cloudNativePG.cluster"
            ),
        ))
    } else {
        let missing = |s: Option<&Secret>, keys: &[&str], what: &str| -> Option<Problem> {
            let name = match what {
                "ca" => cluster.ca_secret(),
                _ => cluster.app_secret(),
            };
            let Some(s) = s else {
                return Some(Problem::new(
                    Reason::SecretNotFound,
                    format!(
                        "Secret {name} of CloudNativePG Cluster {c} not found in namespace {ns}: \
                         CloudNativePG creates it while bootstrapping the cluster"
                    ),
                ));
            };
            let lacking: Vec<&str> = keys.iter().copied().filter(|k| !has_key(s, k)).collect();
            (!lacking.is_empty()).then(|| {
                Problem::new(
                    Reason::SecretIncomplete,
                    format!(
                        "Secret {name} of CloudNativePG Cluster {c} in namespace {ns} lacks \
                         key(s) {}",
                        lacking.join(", ")
                    ),
                )
            })
        };
        missing(app, &CNPG_APP_KEYS, "app").or_else(|| {
            (sslmode == SslMode::VerifyFull)
                .then(|| missing(ca, &[CA_KEY], "ca"))
                .flatten()
        })
    };
    let rv = |s: &Secret| s.resource_version().unwrap_or_default();
    let version = app.map(|a| match ca {
        Some(ca) => format!("{}/{}", rv(a), rv(ca)),
        None => rv(a),
    });
    Credentials {
        problem,
        version,
        layout: SecretLayout::Keys,
        // CloudNativePG always has a CA: an unset sslmode means verify-full.
        has_ca: true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::ByteString;

    fn secret(keys: &[&str], rv: &str) -> Secret {
        let mut s = Secret {
            data: Some(
                keys.iter()
                    .map(|k| (k.to_string(), ByteString(b"x".to_vec())))
                    .collect(),
            ),
            ..Default::default()
        };
        s.metadata.resource_version = Some(rv.into());
        s
    }

    fn pg() -> CloudNativePgRef {
        CloudNativePgRef {
            cluster: "pg".into(),
        }
    }

    #[test]
    fn exactly_one_source() {
        let mut spec = PostgresSpec::default();
        assert!(check_one_source(&spec).is_err());
        spec.cloud_native_pg = Some(pg());
        assert_eq!(check_one_source(&spec), Ok(()));
        spec.secret_ref = Some(crate::crd::SecretRef { name: "x".into() });
        let e = check_one_source(&spec).expect_err("both");
        assert!(e.contains("not both"), "{e}");
    }

    #[test]
    fn a_missing_cluster_or_secret_is_named() {
        let vf = SslMode::VerifyFull;
        let app = secret(&["username", "password", "dbname", "uri"], "5");
        let ca = secret(&["ca.crt", "ca.key"], "9");
        let c = check_cnpg(&pg(), "data", false, Some(&app), vf, Some(&ca));
        let p = c.problem.expect("no cluster");
        assert_eq!(p.reason, Reason::PostgresClusterNotFound);
        assert!(
            p.message.contains("Cluster pg ") && p.message.contains("data"),
            "{}",
            p.message
        );

        let c = check_cnpg(&pg(), "data", true, None, vf, Some(&ca));
        let p = c.problem.expect("no app secret");
        assert_eq!((p.reason, c.version), (Reason::SecretNotFound, None));
        assert!(
            p.message
                .starts_with("Secret pg-app of CloudNativePG Cluster pg"),
            "{}",
            p.message
        );

        let c = check_cnpg(&pg(), "data", true, Some(&app), vf, None);
        let p = c.problem.expect("no ca");
        assert!(p.message.starts_with("Secret pg-ca "), "{}", p.message);

        let c = check_cnpg(
            &pg(),
            "data",
            true,
            Some(&secret(&["username"], "5")),
            vf,
            Some(&ca),
        );
        let p = c.problem.expect("keys");
        assert_eq!(p.reason, Reason::SecretIncomplete);
        assert!(p.message.ends_with("password, dbname"), "{}", p.message);

        let c = check_cnpg(&pg(), "data", true, Some(&app), vf, Some(&ca));
        assert_eq!(c.problem, None);
        assert_eq!(c.version.as_deref(), Some("5/9"));
        assert!(c.has_ca);
        // Without verify-full the CA is neither needed nor read.
        let c = check_cnpg(&pg(), "data", true, Some(&app), SslMode::Require, None);
        assert_eq!((c.problem, c.version.as_deref()), (None, Some("5")));
    }
}
