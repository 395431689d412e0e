//! The audit trail: every created, reverted and expired Fault becomes an `events.k8s.io/v1`
//! Event on its Experiment, and a line in the controller's log (who, what, when, deadline).
//!
//! Event names are derived from the Fault and what happened to it, so a new leader that looks
//! at the same Faults again gets 409 AlreadyExists instead of a second Event: the trail has one
//! entry per happening whichever replica saw it.

use std::collections::BTreeSet;

use faultline_experiments::kubernetes::crd::Fault;
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, PostParams};
use kube::ResourceExt;

/// What happened to a Fault.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Happening {
    /// It was created (by a runner, or by hand).
    Created,
    /// Every node that applied it has reverted it.
    Reverted,
    /// Its deadline passed while it still existed; the controller deleted it.
    Expired,
    /// Its Experiment is gone; the controller deleted it, which heals it.
    Orphaned,
}

impl Happening {
    fn reason(self) -> &'static str {
        match self {
            Happening::Created => "FaultCreated",
            Happening::Reverted => "FaultReverted",
            Happening::Expired => "FaultExpired",
            Happening::Orphaned => "FaultOrphaned",
        }
    }

    fn action(self) -> &'static str {
        match self {
            Happening::Created => "Create",
            Happening::Reverted => "Revert",
            Happening::Expired | Happening::Orphaned => "Delete",
        }
    }

    fn suffix(self) -> &'static str {
        match self {
            Happening::Created => "created",
            Happening::Reverted => "reverted",
            Happening::Expired => "expired",
            Happening::Orphaned => "orphaned",
        }
    }
}

/// The Experiment an Event is about.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Regarding {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// `metadata.uid`.
    pub uid: String,
}

/// What the Fault touches, for people: the partition's sides or the pod.
pub fn describe_fault(fault: &Fault) -> String {
    let spec = &fault.spec;
    let target = if let Some(partition) = &spec.partition {
        partition
            .sides
            .iter()
            .map(|side| format!("{}[{}]", side.name, side.nodes.join(",")))
            .collect::<Vec<_>>()
            .join(" | ")
    } else if let Some(pod) = &spec.pod {
        format!("pod {}/{} on {}", pod.namespace, pod.name, pod.node_name)
    } else {
        "-".into()
    };
    format!("{} {target}", spec.action.as_str())
}

/// The Event's note and the log line's body: who, what, when, deadline.
pub fn audit_line(fault: &Fault, happening: Happening, at: &str) -> String {
    format!(
        "fault {} {} at {at}: {} by {} (created {}), deadline {}, experiment {}",
        fault.name_any(),
        happening.suffix(),
        describe_fault(fault),
        fault.spec.created_by,
        fault
            .metadata
            .creation_timestamp
            .as_ref()
            .map_or_else(|| "-".to_owned(), |t| t.0.to_string()),
        fault.spec.deadline,
        fault.spec.experiment.as_deref().unwrap_or("-"),
    )
}

/// The Event's name: one per Fault and happening.
pub fn event_name(experiment: &str, fault: &str, happening: Happening) -> String {
    let mut name = format!("{experiment}.{fault}.{}", happening.suffix()).to_lowercase();
    name.truncate(253);
    name
}

/// Writes the audit entries, each once: `seen` remembers what this replica already wrote or
/// found written.
pub struct Auditor {
    client: kube::Client,
    identity: String,
    seen: BTreeSet<(String, Happening)>,
}

impl Auditor {
    /// An auditor writing as `identity`.
    pub fn new(client: kube::Client, identity: &str) -> Self {
        Self {
            client,
            identity: identity.to_owned(),
            seen: BTreeSet::new(),
        }
    }

    /// Records one happening: the log line, and the Event on `regarding` when the Fault has an
    /// Experiment that still exists. Returns whether this call wrote it (not seen before).
    ///
    /// # Errors
    /// The Event could not be created (other than because it exists); the next pass retries.
    pub async fn record(
        &mut self,
        fault: &Fault,
        happening: Happening,
        regarding: Option<&Regarding>,
    ) -> Result<bool, kube::Error> {
        let key = (fault.name_any(), happening);
        if self.seen.contains(&key) {
            return Ok(false);
        }
        let now = Timestamp::now();
        let line = audit_line(fault, happening, &now.to_string());
        let Some(regarding) = regarding else {
            super::log(&self.identity, &format!("audit: {line}"));
            self.seen.insert(key);
            return Ok(true);
        };
        let events: Api<Event> = Api::namespaced(self.client.clone(), &regarding.namespace);
        let event = Event {
            metadata: ObjectMeta {
                name: Some(event_name(&regarding.name, &fault.name_any(), happening)),
                namespace: Some(regarding.namespace.clone()),
                ..ObjectMeta::default()
            },
            event_time: Some(MicroTime(now)),
            action: Some(happening.action().into()),
            reason: Some(happening.reason().into()),
            note: Some(line.clone()),
            regarding: Some(ObjectReference {
                api_version: Some("faultline.dev/v1alpha1".into()),
                kind: Some("Experiment".into()),
                namespace: Some(regarding.namespace.clone()),
                name: Some(regarding.name.clone()),
                uid: Some(regarding.uid.clone()),
                ..ObjectReference::default()
            }),
            related: Some(ObjectReference {
                api_version: Some("faultline.dev/v1alpha1".into()),
                kind: Some("Fault".into()),
                name: Some(fault.name_any()),
                uid: fault.metadata.uid.clone(),
                ..ObjectReference::default()
            }),
            reporting_controller: Some("faultline.dev/controller".into()),
            reporting_instance: Some(self.identity.clone()),
            type_: Some(
                if happening == Happening::Created || happening == Happening::Reverted {
                    "Normal"
                } else {
                    "Warning"
                }
                .into(),
            ),
            ..Event::default()
        };
        match events.create(&PostParams::default(), &event).await {
            Ok(_) => {
                super::log(&self.identity, &format!("audit: {line}"));
                self.seen.insert(key);
                Ok(true)
            }
            // Another replica (an earlier leader) wrote it already.
            Err(kube::Error::Api(status)) if status.code == 409 => {
                self.seen.insert(key);
                Ok(false)
            }
            // The Experiment's namespace is gone: only the log line is left to write.
            Err(kube::Error::Api(status)) if status.code == 404 => {
                super::log(&self.identity, &format!("audit: {line}"));
                self.seen.insert(key);
                Ok(true)
            }
            Err(error) => Err(error),
        }
    }
}
