//! Pod delete (T6.1, and T6.5's kill-all, in mode `delete`): delete pods through the API with
//! grace period 0, each pinned by its uid, then measure time to ready from the replacement pods'
//! Ready conditions ([`replacement_readiness`], pure; [`wait_for_replacements`] watches).
//!
//! Mode `crash` (SIGKILL through the node agent, no API involved) is a `kill` Fault instead.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, SystemTime};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, Preconditions};
use kube::runtime::watcher;
use kube::runtime::WatchStreamExt;

use super::drain::{PodName, FAULTLINE_NAMESPACE};
use super::node_plan::SYSTEM_NAMESPACE;

/// How pod deletes behave.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodDeleteOptions {
    /// The bound on each request to the API server.
    pub api_timeout: Duration,
    /// Namespaces whose pods are refused as targets: `kube-system` and Faultline's own.
    pub protected_namespaces: Vec<String>,
    /// The experiment's explicit override of that refusal.
    pub allow_protected: bool,
}

impl Default for PodDeleteOptions {
    fn default() -> Self {
        Self {
            api_timeout: Duration::from_secs(10),
            protected_namespaces: vec![SYSTEM_NAMESPACE.to_owned(), FAULTLINE_NAMESPACE.to_owned()],
            allow_protected: false,
        }
    }
}

/// A failed pod delete or readiness watch.
#[derive(Debug, thiserror::Error)]
pub enum PodDeleteError {
    /// A target is in a protected namespace and the experiment does not override it.
    #[error("refusing to delete {}: namespace {namespace} is protected (kube-system and Faultline's own); select other pods, or override the blast-radius guard in the experiment", names(pods))]
    Protected {
        /// The protected namespace.
        namespace: String,
        /// The pods in it.
        pods: Vec<PodName>,
    },
    /// A pod has no uid, so the delete cannot be pinned to it.
    #[error("pod {pod} has no metadata.uid; pass pods as read from the API server")]
    NoUid {
        /// The pod.
        pod: PodName,
    },
    /// The API server refused the delete.
    #[error("deleting pod {pod}: {source}")]
    Api {
        /// The pod.
        pod: PodName,
        /// kube's error.
        source: kube::Error,
    },
    /// The API server did not answer in time.
    #[error(
        "deleting pod {pod}: no answer from the API server within {timeout:?}; is it reachable?"
    )]
    Timeout {
        /// The pod.
        pod: PodName,
        /// The bound that passed.
        timeout: Duration,
    },
}

fn names(pods: &[PodName]) -> String {
    pods.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Refuses targets in protected namespaces, unless overridden. Pure.
///
/// # Errors
/// The first protected namespace hit, with every target in it.
pub fn check_pod_targets(pods: &[Pod], options: &PodDeleteOptions) -> Result<(), PodDeleteError> {
    if options.allow_protected {
        return Ok(());
    }
    for namespace in &options.protected_namespaces {
        let hit: Vec<PodName> = pods
            .iter()
            .map(PodName::of)
            .filter(|pod| &pod.namespace == namespace)
            .collect();
        if !hit.is_empty() {
            return Err(PodDeleteError::Protected {
                namespace: namespace.clone(),
                pods: hit,
            });
        }
    }
    Ok(())
}

/// A pod the fault deleted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeletedPod {
    /// The pod.
    pub pod: PodName,
    /// Its uid (the delete was pinned to it).
    pub uid: String,
    /// The node it ran on.
    pub node: Option<String>,
    /// When the API server confirmed the delete (the runner's clock).
    pub deleted_at: SystemTime,
    /// It was already gone, or replaced under the same name, before our delete.
    pub already_gone: bool,
}

/// The delete options of the fault: grace period 0 (no SIGTERM grace: the containers are killed
/// at once), and the pod's uid as a precondition.
pub fn delete_params(uid: &str) -> DeleteParams {
    DeleteParams {
        grace_period_seconds: Some(0),
        preconditions: Some(Preconditions {
            uid: Some(uid.to_owned()),
            resource_version: None,
        }),
        ..DeleteParams::default()
    }
}

/// Deletes `pods` with grace period 0, each pinned by uid, after [`check_pod_targets`]. A pod
/// already gone (404) or replaced (409 on the uid) counts as deleted, marked `already_gone`.
/// Each deletion time is taken when the API server's answer arrives.
///
/// # Errors
/// A protected target (nothing is deleted), a pod without uid, or an API failure (pods deleted
/// before it stay deleted).
pub async fn delete_pods(
    client: &kube::Client,
    pods: &[Pod],
    options: &PodDeleteOptions,
) -> Result<Vec<DeletedPod>, PodDeleteError> {
    check_pod_targets(pods, options)?;
    let mut deleted = Vec::with_capacity(pods.len());
    for pod in pods {
        let name = PodName::of(pod);
        let uid = pod
            .metadata
            .uid
            .clone()
            .ok_or_else(|| PodDeleteError::NoUid { pod: name.clone() })?;
        let api: Api<Pod> = Api::namespaced(client.clone(), &name.namespace);
        let answer = tokio::time::timeout(
            options.api_timeout,
            api.delete(&name.name, &delete_params(&uid)),
        )
        .await;
        let already_gone = match answer {
            Err(_) => {
                return Err(PodDeleteError::Timeout {
                    pod: name,
                    timeout: options.api_timeout,
                })
            }
            Ok(Ok(_)) => false,
            Ok(Err(kube::Error::Api(status))) if matches!(status.code, 404 | 409) => true,
            Ok(Err(source)) => return Err(PodDeleteError::Api { pod: name, source }),
        };
        deleted.push(DeletedPod {
            pod: name,
            uid,
            node: pod.spec.as_ref().and_then(|s| s.node_name.clone()),
            deleted_at: SystemTime::now(),
            already_gone,
        });
    }
    Ok(deleted)
}

/// A pod that replaced a deleted one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReplacementPod {
    /// The pod.
    pub pod: PodName,
    /// The node it was scheduled on, if any yet.
    pub node: Option<String>,
    /// When its Ready condition last turned true, if it is Ready.
    pub ready_at: Option<SystemTime>,
}

/// What time to ready is measured against: the pods deleted, and the uids of every pod of the
/// workload that existed before the deletion (none of those is a replacement).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Baseline {
    /// The pods the fault deleted.
    pub deleted: Vec<DeletedPod>,
    /// The uids of the workload's pods before the deletion, the deleted ones included.
    pub existing: BTreeSet<String>,
    /// How many replacements must be Ready; by default one per deleted pod.
    pub expected: usize,
}

impl Baseline {
    /// The baseline of a deletion of `deleted` out of `existing` (the workload's pods as listed
    /// before the delete).
    pub fn new(existing: &[Pod], deleted: Vec<DeletedPod>) -> Self {
        Self {
            existing: existing
                .iter()
                .filter_map(|pod| pod.metadata.uid.clone())
                .chain(deleted.iter().map(|d| d.uid.clone()))
                .collect(),
            expected: deleted.len(),
            deleted,
        }
    }
}

/// How far the replacements of deleted pods are.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Readiness {
    /// How many replacements must be Ready.
    pub expected: usize,
    /// The replacements seen, by name.
    pub replacements: Vec<ReplacementPod>,
    /// How many of them are Ready.
    pub ready: usize,
    /// When the `expected`-th replacement became Ready.
    pub all_ready_at: Option<SystemTime>,
    /// From the first deletion to `all_ready_at`; zero when nothing had to come back.
    pub time_to_ready: Option<Duration>,
}

impl Readiness {
    /// Whether `expected` replacements are Ready.
    pub fn complete(&self) -> bool {
        self.time_to_ready.is_some()
    }
}

fn ready_since(pod: &Pod) -> Option<SystemTime> {
    pod.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "Ready" && c.status == "True")?
        .last_transition_time
        .as_ref()
        .map(|time| SystemTime::from(time.0))
}

/// Truncates to the second: creation and condition times have second precision on the wire.
fn whole_second(time: SystemTime) -> SystemTime {
    let seconds = time
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    SystemTime::UNIX_EPOCH + Duration::from_secs(seconds)
}

/// Time to ready, from pod objects alone. Pure. A replacement is a pod among `pods` (the target
/// workload's pods, as its selector finds them) that did not exist before the deletion (its uid
/// is not in the baseline), is not terminating, and was created at or after the first deletion
/// (to the second). Time to ready runs from the first deletion to the moment the
/// `expected`-th replacement's Ready condition turned true.
///
/// Condition times have second precision (as the API server stores them) and come from the
/// kubelet's clock, so the figure is good to about a second; a replacement Ready within the
/// second of the deletion reads as zero, never as negative.
pub fn replacement_readiness(baseline: &Baseline, pods: &[Pod]) -> Readiness {
    let expected = baseline.expected;
    let Some(first_deletion) = baseline.deleted.iter().map(|d| d.deleted_at).min() else {
        return Readiness {
            expected,
            time_to_ready: (expected == 0).then_some(Duration::ZERO),
            ..Readiness::default()
        };
    };
    let since = whole_second(first_deletion);
    let mut replacements: Vec<ReplacementPod> = pods
        .iter()
        .filter(|pod| {
            pod.metadata
                .uid
                .as_deref()
                .is_some_and(|uid| !baseline.existing.contains(uid))
                && pod.metadata.deletion_timestamp.is_none()
                && pod
                    .metadata
                    .creation_timestamp
                    .as_ref()
                    .is_some_and(|created| SystemTime::from(created.0) >= since)
        })
        .map(|pod| ReplacementPod {
            pod: PodName::of(pod),
            node: pod.spec.as_ref().and_then(|s| s.node_name.clone()),
            ready_at: ready_since(pod),
        })
        .collect();
    replacements.sort_by(|a, b| a.pod.cmp(&b.pod));
    let mut ready_times: Vec<SystemTime> = replacements.iter().filter_map(|r| r.ready_at).collect();
    ready_times.sort();
    let all_ready_at = match expected {
        0 => None,
        n => ready_times.get(n - 1).copied(),
    };
    let time_to_ready = if expected == 0 {
        Some(Duration::ZERO)
    } else {
        all_ready_at.map(|at| at.duration_since(first_deletion).unwrap_or(Duration::ZERO))
    };
    Readiness {
        expected,
        ready: ready_times.len(),
        replacements,
        all_ready_at,
        time_to_ready,
    }
}

/// What [`wait_for_replacements`] saw.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WatchedReadiness {
    /// The readiness at the end of the watch.
    pub readiness: Readiness,
    /// When the watcher saw the replacements complete (the runner's clock, millisecond
    /// precision, an upper bound of the Ready conditions' time); `None` at the timeout.
    pub observed_at: Option<SystemTime>,
    /// The last watch error, if the watch had trouble.
    pub last_error: Option<String>,
}

/// Watches the pods of `namespace` that `label_selector` selects until the baseline's expected
/// replacements are Ready, or `timeout` passes. Not recovering in time is a finding, not an
/// error: the result then has `observed_at: None` and the readiness reached so far. Watch
/// errors are retried with backoff and reported in `last_error`.
pub async fn wait_for_replacements(
    client: &kube::Client,
    namespace: &str,
    label_selector: &str,
    baseline: &Baseline,
    timeout: Duration,
) -> WatchedReadiness {
    let api: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let config = watcher::Config::default().labels(label_selector);
    let mut events = watcher(api, config).default_backoff().boxed();
    let mut pods: BTreeMap<String, Pod> = BTreeMap::new();
    let mut relisted: BTreeMap<String, Pod> = BTreeMap::new();
    let mut result = WatchedReadiness {
        readiness: replacement_readiness(baseline, &[]),
        ..WatchedReadiness::default()
    };
    let key = |pod: &Pod| pod.metadata.uid.clone().unwrap_or_default();
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let event = match tokio::time::timeout_at(deadline, events.next()).await {
            Err(_) | Ok(None) => return result,
            Ok(Some(Err(error))) => {
                result.last_error = Some(error.to_string());
                continue;
            }
            Ok(Some(Ok(event))) => event,
        };
        match event {
            watcher::Event::Init => relisted.clear(),
            watcher::Event::InitApply(pod) => {
                relisted.insert(key(&pod), pod);
            }
            watcher::Event::InitDone => pods = std::mem::take(&mut relisted),
            watcher::Event::Apply(pod) => {
                pods.insert(key(&pod), pod);
            }
            watcher::Event::Delete(pod) => {
                pods.remove(&key(&pod));
            }
        }
        let current: Vec<Pod> = pods.values().cloned().collect();
        result.readiness = replacement_readiness(baseline, &current);
        if result.readiness.complete() {
            result.observed_at = Some(SystemTime::now());
            return result;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const T0: u64 = 1_800_000_000;

    fn at(seconds: u64, millis: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(seconds) + Duration::from_millis(millis)
    }

    fn stamp(seconds: u64) -> String {
        humantime::format_rfc3339_seconds(at(seconds, 0)).to_string()
    }

    /// A pod created at `created`, Ready since `ready` (if any).
    fn pod(name: &str, uid: &str, created: u64, ready: Option<u64>, terminating: bool) -> Pod {
        let mut value = json!({"metadata": {"name": name, "namespace": "shop", "uid": uid,
            "creationTimestamp": stamp(created)},
            "spec": {"nodeName": "n2", "containers": []},
            "status": {"phase": "Running", "conditions": [
                {"type": "Ready", "status": if ready.is_some() { "True" } else { "False" },
                 "lastTransitionTime": stamp(ready.unwrap_or(created))}]}});
        if terminating {
            value["metadata"]["deletionTimestamp"] = json!(stamp(created + 1));
        }
        serde_json::from_value(value).expect("pod")
    }

    fn deleted(uid: &str, seconds: u64, millis: u64) -> DeletedPod {
        DeletedPod {
            pod: PodName {
                namespace: "shop".into(),
                name: format!("old-{uid}"),
            },
            uid: uid.into(),
            node: Some("n1".into()),
            deleted_at: at(seconds, millis),
            already_gone: false,
        }
    }

    /// (name, deleted, pods, expected, want time to ready in ms, want ready count)
    type Case<'a> = (
        &'a str,
        &'a [DeletedPod],
        Vec<Pod>,
        usize,
        Option<u64>,
        usize,
    );

    #[test]
    #[allow(clippy::too_many_lines)] // One row per case reads better than split tables.
    fn time_to_ready_table() {
        let one = [deleted("old-1", T0, 400)];
        let two = [deleted("old-1", T0, 400), deleted("old-2", T0 + 1, 0)];
        let survivor = pod("keep", "keep", T0 - 600, Some(T0 - 590), false);
        let cases: Vec<Case> = vec![
            (
                "no replacement yet",
                &one,
                vec![survivor.clone()],
                1,
                None,
                0,
            ),
            (
                "replacement not Ready",
                &one,
                vec![survivor.clone(), pod("new-a", "a", T0, None, false)],
                1,
                None,
                0,
            ),
            (
                "replacement Ready 3 s later",
                &one,
                vec![survivor.clone(), pod("new-a", "a", T0, Some(T0 + 3), false)],
                1,
                Some(2_600),
                1,
            ),
            (
                "Ready within the same second reads as zero",
                &one,
                vec![pod("new-a", "a", T0, Some(T0), false)],
                1,
                Some(0),
                1,
            ),
            (
                "the deleted pod itself never counts",
                &one,
                vec![pod("old-1", "old-1", T0 - 600, Some(T0 - 590), false)],
                1,
                None,
                0,
            ),
            (
                "a pod from before the deletion never counts, even from the same second",
                &one,
                vec![pod("keep", "keep", T0, Some(T0 + 1), false)],
                1,
                None,
                0,
            ),
            (
                "a pod created before the deletion never counts",
                &one,
                vec![pod("other", "other", T0 - 5, Some(T0 - 4), false)],
                1,
                None,
                0,
            ),
            (
                "a terminating pod never counts",
                &one,
                vec![pod("new-a", "a", T0, Some(T0 + 1), true)],
                1,
                None,
                0,
            ),
            (
                "two needed, one Ready",
                &two,
                vec![
                    pod("new-a", "a", T0, Some(T0 + 2), false),
                    pod("new-b", "b", T0 + 1, None, false),
                ],
                2,
                None,
                1,
            ),
            (
                "two needed: the later Ready counts",
                &two,
                vec![
                    pod("new-a", "a", T0, Some(T0 + 2), false),
                    pod("new-b", "b", T0 + 1, Some(T0 + 5), false),
                ],
                2,
                Some(4_600),
                2,
            ),
            (
                "nothing deleted, nothing expected",
                &[],
                vec![],
                0,
                Some(0),
                0,
            ),
        ];
        for (name, deleted, pods, expected, want_ms, want_ready) in cases {
            let mut baseline = Baseline::new(std::slice::from_ref(&survivor), deleted.to_vec());
            baseline.expected = expected;
            let readiness = replacement_readiness(&baseline, &pods);
            assert_eq!(
                readiness.time_to_ready,
                want_ms.map(Duration::from_millis),
                "{name}: {readiness:?}"
            );
            assert_eq!(readiness.ready, want_ready, "{name}");
            assert_eq!(readiness.complete(), want_ms.is_some(), "{name}");
        }
    }

    #[test]
    fn protected_namespaces_are_refused_unless_overridden() {
        let system: Pod = serde_json::from_value(
            json!({"metadata": {"name": "coredns-1", "namespace": "kube-system"}}),
        )
        .expect("pod");
        let shop: Pod =
            serde_json::from_value(json!({"metadata": {"name": "web-1", "namespace": "shop"}}))
                .expect("pod");
        let options = PodDeleteOptions::default();
        assert!(check_pod_targets(std::slice::from_ref(&shop), &options).is_ok());
        let error = check_pod_targets(&[shop.clone(), system.clone()], &options)
            .expect_err("kube-system is refused");
        let text = error.to_string();
        assert!(
            text.contains("kube-system/coredns-1") && text.contains("override"),
            "{text}"
        );
        let allowed = PodDeleteOptions {
            allow_protected: true,
            ..PodDeleteOptions::default()
        };
        assert!(check_pod_targets(&[shop, system], &allowed).is_ok());
    }

    #[test]
    fn the_delete_has_grace_zero_and_the_uid() {
        let body = serde_json::to_value(delete_params("uid-3")).expect("json");
        assert_eq!(
            body,
            json!({"gracePeriodSeconds": 0, "preconditions": {"uid": "uid-3"}})
        );
    }
}
