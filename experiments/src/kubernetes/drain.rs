//! Drain (T6.2) through the API server: cordon the node with our annotation ([`super::cordon`]),
//! then evict every pod on it through the `policy/v1` Eviction subresource, so that
//! PodDisruptionBudgets hold; revert uncordons only a cordon of ours.
//!
//! [`KubeNodeScheduler`] is the lifecycle's [`NodeScheduler`] seam on a `kube::Client`, so the
//! same ledger-first start, revert and reconcile drive a drain on a cluster as on the lab.
//!
//! The Eviction body is k8s-openapi's typed `Eviction`, posted by hand. kube 5's `Api::evict`
//! is not used: it sends `{"delete_options": …, "metadata": {"name": …}}` (kube-core's
//! `Request::evict`), a key the API server does not know, so its delete options (preconditions,
//! grace period) are silently dropped, and it sends neither `apiVersion` nor `kind`.

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::sync::Mutex;
use std::time::Duration;

use faultline_injectors::node_drain::NodeScheduler;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::policy::v1::Eviction;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{DeleteOptions, ObjectMeta, Preconditions};
use kube::api::{Api, ListParams};
use kube::Resource;

use super::cordon::{
    bounded, cordon_node, owned_cordons, uncordon_node, CordonError, CordonOutcome, CordonOwner,
    DrainBudget, UncordonOutcome,
};

/// The annotation the kubelet puts on the API's copy of a static pod (a mirror pod). Evicting
/// one does nothing: the kubelet owns the pod.
pub const MIRROR_POD_ANNOTATION: &str = "kubernetes.io/config.mirror";
/// Faultline's own namespace: the controller and the runner live there.
pub const FAULTLINE_NAMESPACE: &str = "faultline-system";

/// How a drain behaves.
#[derive(Clone, Debug, PartialEq)]
pub struct DrainOptions {
    /// How long evictions refused by a PodDisruptionBudget (429) are retried before the drain
    /// fails and names the pods and budgets.
    pub eviction_timeout: Duration,
    /// The first wait between rounds of retries; it doubles up to `max_backoff`.
    pub first_backoff: Duration,
    /// The longest wait between rounds of retries.
    pub max_backoff: Duration,
    /// The bound on each request to the API server.
    pub api_timeout: Duration,
    /// The grace period for evicted pods; `None`: each pod's own, as `kubectl drain` does.
    pub grace_period_seconds: Option<i64>,
    /// Also evict pods no controller would recreate (kubectl's `--force`). Off: they are
    /// skipped and reported.
    pub evict_unmanaged: bool,
    /// Namespaces whose pods are never evicted: Faultline's own (its runner would kill itself).
    pub protected_namespaces: Vec<String>,
    /// The blast-radius limits checked before cordoning.
    pub budget: DrainBudget,
}

impl Default for DrainOptions {
    fn default() -> Self {
        Self {
            eviction_timeout: Duration::from_secs(120),
            first_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(5),
            api_timeout: Duration::from_secs(10),
            grace_period_seconds: None,
            evict_unmanaged: false,
            protected_namespaces: vec![FAULTLINE_NAMESPACE.to_owned()],
            budget: DrainBudget::default(),
        }
    }
}

/// A pod by namespace and name.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct PodName {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
}

impl PodName {
    /// The name of a pod object.
    pub fn of(pod: &Pod) -> Self {
        Self {
            namespace: pod.metadata.namespace.clone().unwrap_or_default(),
            name: pod.metadata.name.clone().unwrap_or_default(),
        }
    }
}

impl fmt::Display for PodName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// Why a pod on a drained node was left alone.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SkipReason {
    /// A DaemonSet's pod: it tolerates the cordon and its controller would put it back at once.
    DaemonSet {
        /// The DaemonSet.
        name: String,
    },
    /// A mirror pod: the kubelet runs the static pod whatever the API says.
    Mirror,
    /// In a protected namespace (Faultline's own).
    Protected {
        /// The namespace.
        namespace: String,
    },
    /// No controller would recreate it (evicted only with `evict_unmanaged`).
    Unmanaged,
}

impl fmt::Display for SkipReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SkipReason::DaemonSet { name } => write!(f, "DaemonSet pod (of {name})"),
            SkipReason::Mirror => f.write_str("mirror pod (a static pod the kubelet runs)"),
            SkipReason::Protected { namespace } => {
                write!(f, "in protected namespace {namespace}")
            }
            SkipReason::Unmanaged => {
                f.write_str("no controller would recreate it (allow with evict_unmanaged)")
            }
        }
    }
}

/// Whether a drain evicts `pod` (`None`) or skips it, and why. Pure. As `kubectl drain` does:
/// DaemonSet and mirror pods are skipped; pods without a controller are skipped unless
/// `evict_unmanaged` (or finished); and pods in a protected namespace are skipped.
pub fn pod_disposition(pod: &Pod, options: &DrainOptions) -> Option<SkipReason> {
    if pod
        .metadata
        .annotations
        .as_ref()
        .is_some_and(|a| a.contains_key(MIRROR_POD_ANNOTATION))
    {
        return Some(SkipReason::Mirror);
    }
    let controller = pod
        .metadata
        .owner_references
        .as_ref()
        .and_then(|owners| owners.iter().find(|o| o.controller == Some(true)));
    if let Some(owner) = controller.filter(|o| o.kind == "DaemonSet") {
        return Some(SkipReason::DaemonSet {
            name: owner.name.clone(),
        });
    }
    let namespace = pod.metadata.namespace.as_deref().unwrap_or_default();
    if options.protected_namespaces.iter().any(|p| p == namespace) {
        return Some(SkipReason::Protected {
            namespace: namespace.to_owned(),
        });
    }
    let finished = pod
        .status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .is_some_and(|phase| matches!(phase, "Succeeded" | "Failed"));
    if controller.is_none() && !options.evict_unmanaged && !finished {
        return Some(SkipReason::Unmanaged);
    }
    None
}

/// A pod the drain evicted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EvictedPod {
    /// The pod.
    pub pod: PodName,
    /// Eviction requests sent for it.
    pub attempts: u32,
    /// The budget that refused it before it could go, if any.
    pub blocked_by: Option<String>,
    /// It was gone (or replaced) before our eviction took it.
    pub already_gone: bool,
}

/// A pod the drain left alone.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SkippedPod {
    /// The pod.
    pub pod: PodName,
    /// Why.
    pub reason: SkipReason,
}

/// A pod still not evicted when the eviction timeout passed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlockedPod {
    /// The pod.
    pub pod: PodName,
    /// The PodDisruptionBudget that refused it, when the API server named one.
    pub budget: Option<String>,
    /// The last refusal or error.
    pub message: String,
}

/// What a drain's evictions did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DrainReport {
    /// The node.
    pub node: String,
    /// Pods evicted, in order.
    pub evicted: Vec<EvictedPod>,
    /// Pods left alone, and why.
    pub skipped: Vec<SkippedPod>,
}

/// A failed drain.
#[derive(Debug, thiserror::Error)]
pub enum DrainError {
    /// Cordoning, uncordoning or listing nodes failed, or the blast-radius guard refused.
    #[error(transparent)]
    Cordon(#[from] CordonError),
    /// An eviction was refused for a reason that retrying does not change.
    #[error("evicting pod {pod} from node {node}: {source}")]
    Evict {
        /// The node being drained.
        node: String,
        /// The pod.
        pod: PodName,
        /// kube's error.
        source: kube::Error,
    },
    /// Pods were still refused (by their budgets, or by an unavailable API) at the timeout.
    #[error("{}", blocked_message(node, *waited, blocked, evicted))]
    Blocked {
        /// The node being drained.
        node: String,
        /// How long evictions were retried.
        waited: Duration,
        /// The pods that could not be evicted.
        blocked: Vec<BlockedPod>,
        /// The pods evicted before the timeout.
        evicted: Vec<PodName>,
    },
}

fn blocked_message(
    node: &str,
    waited: Duration,
    blocked: &[BlockedPod],
    evicted: &[PodName],
) -> String {
    let pods: Vec<String> = blocked
        .iter()
        .map(|b| match &b.budget {
            Some(budget) => format!(
                "{} (refused by PodDisruptionBudget {budget}: {})",
                b.pod, b.message
            ),
            None => format!("{} ({})", b.pod, b.message),
        })
        .collect();
    let evicted = if evicted.is_empty() {
        String::new()
    } else {
        let names: Vec<String> = evicted.iter().map(ToString::to_string).collect();
        format!(" Evicted before the timeout: {}.", names.join(", "))
    };
    format!(
        "node {node}: {} pod(s) could not be evicted within {}: {}. Wait until the budget's other pods are Ready, give the fault a longer eviction timeout, or relax the budget.{evicted}",
        blocked.len(),
        humantime::format_duration(waited),
        pods.join("; "),
    )
}

/// The typed Eviction for `pod`: `policy/v1`, the pod's name and namespace, and delete options
/// pinned to the pod's uid (a replacement with the same name, as a StatefulSet makes, is never
/// evicted by mistake).
pub fn eviction_for(pod: &Pod, grace_period_seconds: Option<i64>) -> Eviction {
    Eviction {
        metadata: ObjectMeta {
            name: pod.metadata.name.clone(),
            namespace: pod.metadata.namespace.clone(),
            ..ObjectMeta::default()
        },
        delete_options: Some(DeleteOptions {
            grace_period_seconds,
            preconditions: pod.metadata.uid.clone().map(|uid| Preconditions {
                uid: Some(uid),
                resource_version: None,
            }),
            ..DeleteOptions::default()
        }),
    }
}

/// How one eviction request ended.
enum EvictAnswer {
    Evicted,
    /// 404, or 409 on the uid precondition: the pod is gone or was replaced.
    Gone,
    /// Refused for now: a budget (429) or an unavailable API server.
    Retry {
        budget: Option<String>,
        message: String,
    },
}

/// The budget a 429's `DisruptionBudget` cause names ("The disruption budget NAME …").
fn budget_in(status: &kube::core::Status) -> Option<String> {
    status
        .details
        .as_ref()?
        .causes
        .iter()
        .filter(|cause| cause.reason == "DisruptionBudget")
        .find_map(|cause| {
            cause
                .message
                .strip_prefix("The disruption budget ")?
                .split_whitespace()
                .next()
                .map(str::to_owned)
        })
}

fn cause_message(status: &kube::core::Status) -> String {
    status
        .details
        .as_ref()
        .and_then(|details| details.causes.first())
        .map_or_else(|| status.message.clone(), |cause| cause.message.clone())
}

async fn evict_pod(
    client: &kube::Client,
    pod: &Pod,
    options: &DrainOptions,
    timeout: Duration,
) -> Result<EvictAnswer, kube::Error> {
    let name = PodName::of(pod);
    let path = format!(
        "{}/{}/eviction",
        Pod::url_path(&(), Some(&name.namespace)),
        name.name
    );
    let body = serde_json::to_vec(&eviction_for(pod, options.grace_period_seconds))
        .map_err(kube::Error::SerdeError)?;
    let request = http::Request::post(path)
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(body)
        .map_err(kube::Error::HttpError)?;
    match tokio::time::timeout(timeout, client.request_text(request)).await {
        Err(_) => Ok(EvictAnswer::Retry {
            budget: None,
            message: format!("no answer from the API server within {timeout:?}"),
        }),
        Ok(Ok(_)) => Ok(EvictAnswer::Evicted),
        Ok(Err(kube::Error::Api(status))) => match status.code {
            404 | 409 => Ok(EvictAnswer::Gone),
            429 => Ok(EvictAnswer::Retry {
                budget: budget_in(&status),
                message: cause_message(&status),
            }),
            502..=504 => Ok(EvictAnswer::Retry {
                budget: None,
                message: status.message.clone(),
            }),
            _ => Err(kube::Error::Api(status)),
        },
        // The connection failed: the API server may be back by the next round.
        Ok(Err(error @ (kube::Error::Service(_) | kube::Error::HyperError(_)))) => {
            Ok(EvictAnswer::Retry {
                budget: None,
                message: error.to_string(),
            })
        }
        Ok(Err(error)) => Err(error),
    }
}

/// A pod still to evict.
struct Pending {
    pod: Pod,
    name: PodName,
    attempts: u32,
    blocked_by: Option<String>,
    /// The last refusal: the budget, if named, and the message.
    last: Option<(Option<String>, String)>,
}

impl Pending {
    fn blocked(self) -> BlockedPod {
        let (budget, message) = self.last.unwrap_or_else(|| {
            (
                None,
                "the eviction timeout passed before it was tried".into(),
            )
        });
        BlockedPod {
            pod: self.name,
            budget,
            message,
        }
    }
}

/// The pods on `node`, split into those skipped (in the report) and those to evict.
async fn pods_to_evict(
    client: &kube::Client,
    node: &str,
    options: &DrainOptions,
) -> Result<(DrainReport, Vec<Pending>), DrainError> {
    let pods: Api<Pod> = Api::all(client.clone());
    let on_node = ListParams::default().fields(&format!("spec.nodeName={node}"));
    let listed = bounded(
        "listing the pods on",
        node,
        options.api_timeout,
        pods.list(&on_node),
    )
    .await?;
    let mut report = DrainReport {
        node: node.to_owned(),
        ..DrainReport::default()
    };
    let mut pending = Vec::new();
    for pod in listed.items {
        let name = PodName::of(&pod);
        match pod_disposition(&pod, options) {
            Some(reason) => report.skipped.push(SkippedPod { pod: name, reason }),
            None => pending.push(Pending {
                pod,
                name,
                attempts: 0,
                blocked_by: None,
                last: None,
            }),
        }
    }
    Ok((report, pending))
}

/// Evicts every pod on `node` but those [`pod_disposition`] skips, through the Eviction
/// subresource. Pods a budget refuses (429), or that an unavailable API server could not take,
/// are retried in rounds with exponential backoff until `eviction_timeout`; one blocked pod does
/// not hold up the others. Does not cordon (see [`drain_node`]) and does not wait for the
/// evicted pods to finish terminating.
///
/// # Errors
/// Listing fails, an eviction is refused for good ([`DrainError::Evict`]), or pods are still
/// refused at the timeout ([`DrainError::Blocked`], naming each pod and budget).
pub async fn evict_node(
    client: &kube::Client,
    node: &str,
    options: &DrainOptions,
) -> Result<DrainReport, DrainError> {
    let (mut report, mut pending) = pods_to_evict(client, node, options).await?;
    let started = tokio::time::Instant::now();
    let deadline = started + options.eviction_timeout;
    // The last round starts at the deadline at the latest; no request outlives this.
    let hard_stop = deadline + options.api_timeout;
    let mut backoff = options.first_backoff;
    loop {
        let mut still = Vec::new();
        for mut entry in pending {
            let left = hard_stop.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                still.push(entry);
                continue;
            }
            entry.attempts += 1;
            let timeout = options.api_timeout.min(left);
            match evict_pod(client, &entry.pod, options, timeout).await {
                Ok(answer @ (EvictAnswer::Evicted | EvictAnswer::Gone)) => {
                    report.evicted.push(EvictedPod {
                        pod: entry.name,
                        attempts: entry.attempts,
                        blocked_by: entry.blocked_by,
                        already_gone: matches!(answer, EvictAnswer::Gone),
                    });
                }
                Ok(EvictAnswer::Retry { budget, message }) => {
                    if budget.is_some() {
                        entry.blocked_by.clone_from(&budget);
                    }
                    entry.last = Some((budget, message));
                    still.push(entry);
                }
                Err(source) => {
                    return Err(DrainError::Evict {
                        node: node.to_owned(),
                        pod: entry.name,
                        source,
                    })
                }
            }
        }
        pending = still;
        if pending.is_empty() {
            return Ok(report);
        }
        let now = tokio::time::Instant::now();
        if now >= deadline {
            return Err(DrainError::Blocked {
                node: node.to_owned(),
                waited: now - started,
                blocked: pending.into_iter().map(Pending::blocked).collect(),
                evicted: report.evicted.into_iter().map(|e| e.pod).collect(),
            });
        }
        tokio::time::sleep(backoff.min(deadline - now)).await;
        backoff = (backoff * 2).min(options.max_backoff);
    }
}

/// A whole drain without the ledger: cordon (after the blast-radius guard), then evict.
///
/// # Errors
/// As [`cordon_node`] and [`evict_node`]. The cordon stays in place on an eviction error, as
/// the record for revert and reconcile.
pub async fn drain_node(
    client: &kube::Client,
    node: &str,
    owner: &CordonOwner,
    options: &DrainOptions,
) -> Result<(CordonOutcome, DrainReport), DrainError> {
    let cordon = cordon_node(client, node, owner, &options.budget, options.api_timeout).await?;
    let report = evict_node(client, node, options).await?;
    Ok((cordon, report))
}

/// What the scheduler last did on one node.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeDrainState {
    /// The last cordon's outcome.
    pub cordon: Option<CordonOutcome>,
    /// The last successful eviction pass.
    pub report: Option<DrainReport>,
    /// The last uncordon's outcome.
    pub uncordon: Option<UncordonOutcome>,
}

/// The lifecycle's [`NodeScheduler`] on a cluster: cordon with `owner`'s annotation (after the
/// blast-radius guard), evict through the Eviction subresource, uncordon only our cordons, and
/// list the nodes that carry our annotation, so the lifecycle's reconcile finds orphans.
///
/// The seam is synchronous and kube is not: each call runs on `runtime` and waits for the
/// result, within a bound derived from the options. Call it from a blocking thread
/// (`spawn_blocking`, as the lifecycle's ledger lock needs anyway) or a plain thread, never from
/// inside an async task: there it would stall a worker, and on a current-thread runtime fail at
/// the bound.
pub struct KubeNodeScheduler {
    client: kube::Client,
    runtime: tokio::runtime::Handle,
    owner: CordonOwner,
    options: DrainOptions,
    state: Mutex<BTreeMap<String, NodeDrainState>>,
}

impl KubeNodeScheduler {
    /// A scheduler whose cordons name `owner`.
    pub fn new(
        client: kube::Client,
        runtime: tokio::runtime::Handle,
        owner: CordonOwner,
        options: DrainOptions,
    ) -> Self {
        Self {
            client,
            runtime,
            owner,
            options,
            state: Mutex::new(BTreeMap::new()),
        }
    }

    /// What the scheduler last did on `node`.
    pub fn node_state(&self, node: &str) -> NodeDrainState {
        self.lock().get(node).cloned().unwrap_or_default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, NodeDrainState>> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn run<T: Send + 'static>(
        &self,
        node: &str,
        bound: Duration,
        work: impl Future<Output = Result<T, String>> + Send + 'static,
    ) -> faultline_injectors::Result<T> {
        let (sender, receiver) = std::sync::mpsc::channel();
        let task = self.runtime.spawn(async move {
            let _ = sender.send(work.await);
        });
        let fail = |reason: String| faultline_injectors::Error::Scheduler {
            node: node.to_owned(),
            reason,
        };
        match receiver.recv_timeout(bound) {
            Ok(result) => result.map_err(fail),
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                task.abort();
                Err(fail(format!(
                    "no result within {}; is the scheduler called from inside an async task? Call it from spawn_blocking",
                    humantime::format_duration(bound)
                )))
            }
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => Err(fail(
                "the Tokio runtime shut down before the request finished".into(),
            )),
        }
    }

    /// The bound on a cordon, uncordon or listing: every retry's requests, and a second.
    fn node_bound(&self) -> Duration {
        self.options.api_timeout * 16 + Duration::from_secs(1)
    }
}

impl NodeScheduler for KubeNodeScheduler {
    fn cordon(&self, node: &str) -> faultline_injectors::Result<()> {
        let client = self.client.clone();
        let (name, owner, budget) = (
            node.to_owned(),
            self.owner.clone(),
            self.options.budget.clone(),
        );
        let timeout = self.options.api_timeout;
        let outcome = self.run(node, self.node_bound(), async move {
            cordon_node(&client, &name, &owner, &budget, timeout)
                .await
                .map_err(|e| e.to_string())
        })?;
        self.lock().entry(node.to_owned()).or_default().cordon = Some(outcome);
        Ok(())
    }

    fn evict(&self, node: &str) -> faultline_injectors::Result<()> {
        let client = self.client.clone();
        let (name, options) = (node.to_owned(), self.options.clone());
        let bound =
            self.options.eviction_timeout + self.options.api_timeout * 3 + Duration::from_secs(1);
        let report = self.run(node, bound, async move {
            evict_node(&client, &name, &options)
                .await
                .map_err(|e| e.to_string())
        })?;
        self.lock().entry(node.to_owned()).or_default().report = Some(report);
        Ok(())
    }

    fn uncordon(&self, node: &str) -> faultline_injectors::Result<()> {
        let client = self.client.clone();
        let name = node.to_owned();
        let timeout = self.options.api_timeout;
        let outcome = self.run(node, self.node_bound(), async move {
            uncordon_node(&client, &name, timeout)
                .await
                .map_err(|e| e.to_string())
        })?;
        self.lock().entry(node.to_owned()).or_default().uncordon = Some(outcome);
        Ok(())
    }

    fn cordoned(&self) -> faultline_injectors::Result<Vec<String>> {
        let client = self.client.clone();
        let timeout = self.options.api_timeout;
        self.run("*", self.node_bound(), async move {
            owned_cordons(&client, timeout)
                .await
                .map(|owned| owned.into_iter().map(|c| c.node).collect())
                .map_err(|e| e.to_string())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(extra: &serde_json::Value) -> Pod {
        let mut value = json!({"metadata": {"name": "p", "namespace": "shop"},
            "status": {"phase": "Running"}});
        json_patch::merge(&mut value, extra);
        serde_json::from_value(value).expect("pod")
    }

    fn owned_by(kind: &str) -> serde_json::Value {
        json!({"metadata": {"ownerReferences": [{"apiVersion": "apps/v1", "kind": kind,
            "name": "owner", "uid": "u", "controller": true}]}})
    }

    #[test]
    fn which_pods_a_drain_skips() {
        let options = DrainOptions::default();
        let force = DrainOptions {
            evict_unmanaged: true,
            ..DrainOptions::default()
        };
        let mirror = json!({"metadata": {"annotations": {MIRROR_POD_ANNOTATION: "abc"}}});
        let not_controller = json!({"metadata": {"ownerReferences": [{"apiVersion": "apps/v1",
            "kind": "DaemonSet", "name": "ds", "uid": "u"}]}});
        let mut own = owned_by("ReplicaSet");
        own["metadata"]["namespace"] = json!(FAULTLINE_NAMESPACE);
        let cases = [
            ("ReplicaSet pod", owned_by("ReplicaSet"), &options, None),
            ("StatefulSet pod", owned_by("StatefulSet"), &options, None),
            (
                "DaemonSet pod",
                owned_by("DaemonSet"),
                &options,
                Some(SkipReason::DaemonSet {
                    name: "owner".into(),
                }),
            ),
            (
                "mirror pod",
                mirror.clone(),
                &options,
                Some(SkipReason::Mirror),
            ),
            (
                "mirror pod, forced",
                mirror,
                &force,
                Some(SkipReason::Mirror),
            ),
            ("bare pod", json!({}), &options, Some(SkipReason::Unmanaged)),
            ("bare pod, forced", json!({}), &force, None),
            (
                "finished bare pod",
                json!({"status": {"phase": "Succeeded"}}),
                &options,
                None,
            ),
            (
                "owner that is not the controller",
                not_controller,
                &options,
                Some(SkipReason::Unmanaged),
            ),
            (
                "Faultline's own pod",
                own,
                &options,
                Some(SkipReason::Protected {
                    namespace: FAULTLINE_NAMESPACE.into(),
                }),
            ),
        ];
        for (name, extra, options, want) in cases {
            assert_eq!(pod_disposition(&pod(&extra), options), want, "{name}");
        }
    }

    #[test]
    fn the_eviction_names_the_pod_and_pins_its_uid() {
        let mut p = pod(&owned_by("ReplicaSet"));
        p.metadata.uid = Some("uid-7".into());
        let body = serde_json::to_value(eviction_for(&p, None)).expect("json");
        assert_eq!(
            body,
            json!({"apiVersion": "policy/v1", "kind": "Eviction",
                "metadata": {"name": "p", "namespace": "shop"},
                "deleteOptions": {"preconditions": {"uid": "uid-7"}}})
        );
    }

    #[test]
    fn the_budget_is_read_from_the_disruption_budget_cause() {
        let status: kube::core::Status = serde_json::from_value(json!({
            "status": "Failure", "code": 429, "reason": "TooManyRequests",
            "message": "Cannot evict pod as it would violate the pod's disruption budget.",
            "details": {"causes": [{"reason": "DisruptionBudget",
                "message": "The disruption budget web-pdb needs 2 healthy pods and has 1 currently"}]}
        }))
        .expect("status");
        assert_eq!(budget_in(&status).as_deref(), Some("web-pdb"));
        assert!(cause_message(&status).contains("needs 2 healthy pods"));
        let bare: kube::core::Status =
            serde_json::from_value(json!({"code": 429, "message": "slow down"})).expect("status");
        assert_eq!(budget_in(&bare), None);
        assert_eq!(cause_message(&bare), "slow down");
    }

    #[test]
    fn a_blocked_drain_says_which_pod_which_budget_and_what_to_do() {
        let error = DrainError::Blocked {
            node: "n1".into(),
            waited: Duration::from_secs(2),
            blocked: vec![BlockedPod {
                pod: PodName {
                    namespace: "shop".into(),
                    name: "w2".into(),
                },
                budget: Some("web-pdb".into()),
                message: "The disruption budget web-pdb needs 2 healthy pods and has 1 currently"
                    .into(),
            }],
            evicted: vec![PodName {
                namespace: "shop".into(),
                name: "w1".into(),
            }],
        };
        let text = error.to_string();
        for part in [
            "node n1",
            "shop/w2",
            "PodDisruptionBudget web-pdb",
            "within 2s",
            "longer eviction timeout",
            "Evicted before the timeout: shop/w1",
        ] {
            assert!(text.contains(part), "{part:?} missing from {text}");
        }
    }
}
