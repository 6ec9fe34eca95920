//! Leader election on a `coordination.k8s.io/v1` Lease, so that two operator replicas are
//! safe: only the holder reconciles.
//!
//! The algorithm is client-go's: the holder renews `renewTime` every [`RENEW_EVERY`];
//! a candidate takes the Lease over only after seeing the same record (resourceVersion)
//! unchanged for a whole `leaseDurationSeconds` by its own clock (so clock skew between
//! nodes does not matter). Every write carries the resourceVersion it read, so of two
//! candidates racing, the API server lets one win (409 Conflict for the other). A holder
//! that cannot renew for [`RENEW_DEADLINE`] stops leading (the process exits and is
//! restarted), before any candidate may take over. On graceful shutdown the Lease is
//! released, so a standby takes over at once.

use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::Client;
use kube::api::{Api, PostParams};

/// How long a Lease stays valid without renewal.
pub const LEASE_DURATION: Duration = Duration::from_secs(15);
/// A holder gives up leading when it could not renew for this long (< LEASE_DURATION).
pub const RENEW_DEADLINE: Duration = Duration::from_secs(10);
/// Renewal and retry period.
pub const RENEW_EVERY: Duration = Duration::from_secs(2);

/// What to do with the Lease as last read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// We hold it: renew.
    Renew,
    /// Free or expired: take it.
    Acquire,
    /// Someone else holds it.
    Wait { holder: String },
}

/// Pure decision. `unchanged_for` is how long this candidate has seen the Lease's current
/// record (resourceVersion) without change.
pub fn decide(
    holder: Option<&str>,
    me: &str,
    unchanged_for: Duration,
    lease_duration: Duration,
) -> Decision {
    match holder {
        None | Some("") => Decision::Acquire,
        Some(h) if h == me => Decision::Renew,
        Some(_) if unchanged_for >= lease_duration => Decision::Acquire,
        Some(h) => Decision::Wait { holder: h.into() },
    }
}

pub struct Elector {
    api: Api<Lease>,
    name: String,
    identity: String,
    /// resourceVersion last seen, and when it was first seen.
    observed: Option<(String, Instant)>,
}

impl Elector {
    pub fn new(client: Client, namespace: &str, name: &str, identity: &str) -> Elector {
        Elector {
            api: Api::namespaced(client, namespace),
            name: name.into(),
            identity: identity.into(),
            observed: None,
        }
    }

    pub fn identity(&self) -> &str {
        &self.identity
    }

    fn spec(&self, transitions: i32, acquire: Option<MicroTime>) -> LeaseSpec {
        let now = MicroTime(Timestamp::now());
        LeaseSpec {
            holder_identity: Some(self.identity.clone()),
            lease_duration_seconds: Some(LEASE_DURATION.as_secs() as i32),
            acquire_time: Some(acquire.unwrap_or_else(|| now.clone())),
            renew_time: Some(now),
            lease_transitions: Some(transitions),
            ..Default::default()
        }
    }

    /// One attempt to acquire or renew. Ok(true) when we hold the Lease afterwards.
    pub async fn try_acquire_or_renew(&mut self) -> Result<bool, kube::Error> {
        let pp = PostParams::default();
        let Some(lease) = self.api.get_opt(&self.name).await? else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.name.clone()),
                    ..Default::default()
                },
                spec: Some(self.spec(0, None)),
            };
            return match self.api.create(&pp, &lease).await {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
                Err(e) => Err(e),
            };
        };
        let rv = lease.metadata.resource_version.clone().unwrap_or_default();
        let now = Instant::now();
        let first_seen = match &self.observed {
            Some((seen, at)) if *seen == rv => *at,
            _ => {
                self.observed = Some((rv.clone(), now));
                now
            }
        };
        let spec = lease.spec.clone().unwrap_or_default();
        let duration = spec
            .lease_duration_seconds
            .filter(|d| *d > 0)
            .map_or(LEASE_DURATION, |d| Duration::from_secs(d as u64));
        let new_spec = match decide(
            spec.holder_identity.as_deref(),
            &self.identity,
            now.duration_since(first_seen),
            duration,
        ) {
            Decision::Wait { holder } => {
                tracing::debug!(%holder, "leader election: Lease held by another replica");
                return Ok(false);
            }
            Decision::Renew => self.spec(
                spec.lease_transitions.unwrap_or(0),
                spec.acquire_time.clone(),
            ),
            Decision::Acquire => self.spec(spec.lease_transitions.unwrap_or(0) + 1, None),
        };
        let mut updated = lease;
        updated.spec = Some(new_spec);
        match self.api.replace(&self.name, &pp, &updated).await {
            Ok(l) => {
                self.observed = l.metadata.resource_version.map(|rv| (rv, Instant::now()));
                Ok(true)
            }
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Gives the Lease up (when we hold it) so that a standby takes over at once.
    pub async fn release(&mut self) -> Result<(), kube::Error> {
        let Some(mut lease) = self.api.get_opt(&self.name).await? else {
            return Ok(());
        };
        let Some(spec) = lease.spec.as_mut() else {
            return Ok(());
        };
        if spec.holder_identity.as_deref() != Some(self.identity.as_str()) {
            return Ok(());
        }
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        spec.renew_time = Some(MicroTime(Timestamp::now()));
        match self
            .api
            .replace(&self.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) | Err(kube::Error::Api(_)) => Ok(()),
            Err(e) => Err(e),
        }
    }
}

/// Waits until this replica holds the Lease, or `stop` says to stop (then false).
pub async fn acquire(elector: &mut Elector, stop: &mut tokio::sync::watch::Receiver<bool>) -> bool {
    let mut logged_wait = false;
    loop {
        match elector.try_acquire_or_renew().await {
            Ok(true) => return true,
            Ok(false) => {
                if !logged_wait {
                    tracing::info!(
                        identity = elector.identity(),
                        "waiting to become the leader (another replica holds the Lease)"
                    );
                    logged_wait = true;
                }
            }
            Err(e) => tracing::warn!(error = %e, "leader election: cannot read or write the Lease"),
        }
        tokio::select! {
            _ = tokio::time::sleep(RENEW_EVERY) => {}
            _ = stop.wait_for(|s| *s) => return false,
        }
    }
}

/// Renews until renewal fails for longer than RENEW_DEADLINE (returns: leadership lost)
/// or `stop` says to stop (returns after releasing the Lease).
pub async fn keep(
    elector: &mut Elector,
    stop: &mut tokio::sync::watch::Receiver<bool>,
) -> Result<(), String> {
    let mut last_renewed = Instant::now();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(RENEW_EVERY) => {}
            _ = async { let _ = stop.wait_for(|s| *s).await; } => {
                if let Err(e) = elector.release().await {
                    tracing::warn!(error = %e, "could not release the Lease");
                }
                return Ok(());
            }
        }
        match elector.try_acquire_or_renew().await {
            Ok(true) => last_renewed = Instant::now(),
            Ok(false) => return Err("another replica took the Lease over".into()),
            Err(e) => tracing::warn!(error = %e, "leader election: renewal failed"),
        }
        if last_renewed.elapsed() > RENEW_DEADLINE {
            return Err(format!(
                "could not renew the Lease for {} s",
                RENEW_DEADLINE.as_secs()
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: Duration = Duration::from_secs(15);

    #[test]
    fn free_lease_is_taken() {
        assert_eq!(decide(None, "a", Duration::ZERO, D), Decision::Acquire);
        assert_eq!(decide(Some(""), "a", Duration::ZERO, D), Decision::Acquire);
    }

    #[test]
    fn own_lease_is_renewed() {
        assert_eq!(
            decide(Some("a"), "a", Duration::from_secs(99), D),
            Decision::Renew
        );
    }

    #[test]
    fn others_lease_is_taken_only_after_a_full_duration_unchanged() {
        assert_eq!(
            decide(Some("b"), "a", Duration::from_secs(14), D),
            Decision::Wait { holder: "b".into() }
        );
        assert_eq!(decide(Some("b"), "a", D, D), Decision::Acquire);
    }

    #[test]
    fn deadline_is_inside_the_lease() {
        const { assert!(RENEW_DEADLINE.as_secs() < LEASE_DURATION.as_secs()) };
        const { assert!(RENEW_EVERY.as_secs() * 3 <= RENEW_DEADLINE.as_secs()) };
    }
}
