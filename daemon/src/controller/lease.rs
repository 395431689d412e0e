//! Leader election through a `coordination.k8s.io/v1` Lease.
//!
//! One controller holds the Lease and renews it; the others read it and wait. Every write is a
//! replace carrying the `resourceVersion` just read, so two candidates that both see an expired
//! Lease cannot both take it: the API server refuses the second write with 409, and its writer
//! stays a follower. A holder that cannot renew (a conflict, another holder, or no answer until
//! its own lease would have expired) stops leading at once, before anyone else may take over.

use std::time::{Duration, SystemTime};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, PostParams};

/// What one election round found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Election {
    /// We hold the Lease until at least `until` (our clock).
    Leader {
        /// The moment our claim lapses unless renewed.
        until: SystemTime,
        /// Whether this round took the Lease over (rather than renewing our own).
        acquired: bool,
    },
    /// Someone else holds it.
    Follower {
        /// The holder's identity, if the Lease names one.
        holder: Option<String>,
    },
}

impl Election {
    /// Whether this round left us leading.
    pub fn is_leader(&self) -> bool {
        matches!(self, Election::Leader { .. })
    }
}

/// Errors of an election round other than losing: the API did not answer or refused.
#[derive(Debug, thiserror::Error)]
#[error("lease {namespace}/{name}: {what}: {source}")]
pub struct LeaseError {
    namespace: String,
    name: String,
    what: &'static str,
    #[source]
    source: kube::Error,
}

/// One candidate for the Lease.
#[derive(Clone)]
pub struct LeaseElector {
    api: Api<Lease>,
    namespace: String,
    name: String,
    identity: String,
    duration: Duration,
}

fn micro_time(at: SystemTime) -> MicroTime {
    MicroTime(Timestamp::try_from(at).unwrap_or(Timestamp::UNIX_EPOCH))
}

fn system_time(at: &MicroTime) -> SystemTime {
    SystemTime::from(at.0)
}

impl LeaseElector {
    /// A candidate named `identity` (its pod name) for the Lease `namespace/name`, which lapses
    /// `duration` after its last renewal.
    pub fn new(
        client: kube::Client,
        namespace: &str,
        name: &str,
        identity: &str,
        duration: Duration,
    ) -> Self {
        Self {
            api: Api::namespaced(client, namespace),
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            identity: identity.to_owned(),
            duration: duration.max(Duration::from_secs(1)),
        }
    }

    /// This candidate's identity.
    pub fn identity(&self) -> &str {
        &self.identity
    }

    fn error(&self, what: &'static str, source: kube::Error) -> LeaseError {
        LeaseError {
            namespace: self.namespace.clone(),
            name: self.name.clone(),
            what,
            source,
        }
    }

    fn spec(&self, now: SystemTime, acquired_at: SystemTime, transitions: i32) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(self.identity.clone()),
            lease_duration_seconds: Some(self.duration.as_secs().try_into().unwrap_or(i32::MAX)),
            acquire_time: Some(micro_time(acquired_at)),
            renew_time: Some(micro_time(now)),
            lease_transitions: Some(transitions),
            ..LeaseSpec::default()
        }
    }

    /// One round at `now`: create the Lease if there is none, renew it if we hold it, take it
    /// over if its holder let it lapse, else follow.
    ///
    /// # Errors
    /// The API fails other than by a conflict (which is a lost race, so a follower).
    pub async fn round(&self, now: SystemTime) -> Result<Election, LeaseError> {
        let leader = Election::Leader {
            until: now + self.duration,
            acquired: true,
        };
        let current = self
            .api
            .get_opt(&self.name)
            .await
            .map_err(|e| self.error("reading", e))?;
        let Some(mut lease) = current else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.name.clone()),
                    namespace: Some(self.namespace.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(self.spec(now, now, 0)),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(leader),
                Err(kube::Error::Api(status)) if status.code == 409 => {
                    Ok(Election::Follower { holder: None })
                }
                Err(e) => Err(self.error("creating", e)),
            };
        };
        let spec = lease.spec.clone().unwrap_or_default();
        let holder = spec.holder_identity.clone().filter(|h| !h.is_empty());
        let ours = holder.as_deref() == Some(self.identity.as_str());
        let lapsed = match (&spec.renew_time, spec.lease_duration_seconds) {
            (Some(renewed), Some(seconds)) => {
                system_time(renewed) + Duration::from_secs(u64::try_from(seconds).unwrap_or(0))
                    <= now
            }
            _ => true,
        };
        if !ours && holder.is_some() && !lapsed {
            return Ok(Election::Follower { holder });
        }
        let transitions = spec.lease_transitions.unwrap_or(0);
        lease.spec = Some(if ours {
            let acquired = spec.acquire_time.as_ref().map_or(now, system_time);
            self.spec(now, acquired, transitions)
        } else {
            self.spec(now, now, transitions + 1)
        });
        // The resourceVersion read above rides along: a concurrent writer makes this a 409.
        match self
            .api
            .replace(&self.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => Ok(Election::Leader {
                until: now + self.duration,
                acquired: !ours,
            }),
            Err(kube::Error::Api(status)) if status.code == 409 => {
                Ok(Election::Follower { holder })
            }
            Err(e) => Err(self.error("writing", e)),
        }
    }

    /// Gives the Lease up if we hold it (a clean shutdown), so a follower takes over without
    /// waiting for it to lapse. Best effort: a failure leaves the Lease to lapse.
    pub async fn release(&self) {
        let Ok(Some(mut lease)) = self.api.get_opt(&self.name).await else {
            return;
        };
        let Some(spec) = lease.spec.as_mut() else {
            return;
        };
        if spec.holder_identity.as_deref() != Some(self.identity.as_str()) {
            return;
        }
        spec.holder_identity = None;
        spec.renew_time = None;
        let _ = self
            .api
            .replace(&self.name, &PostParams::default(), &lease)
            .await;
    }
}
