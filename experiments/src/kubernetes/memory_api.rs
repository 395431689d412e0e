//! An in-memory Kubernetes API server with real semantics, for tests: no API server can run on
//! our test hosts. It speaks the real REST paths and bodies, so the code under test uses an
//! ordinary `kube::Client` ([`MemoryApi::client`]) or a real HTTP connection
//! ([`MemoryApi::serve`]).
//!
//! What it does as the API server does: resource versions, uids, creation and deletion
//! timestamps; `status` subresources (the main resource ignores status, the subresource ignores
//! everything else); finalizers (a delete only marks the object until they are gone); list and
//! watch with label and field selectors, replaying events after a resource version; merge,
//! JSON and server-side-apply patches, the last with field managers that own the fields they
//! applied (a field a manager stops applying is removed; another manager's field conflicts
//! unless forced); optimistic concurrency on `resourceVersion`; delete preconditions (`uid`,
//! `resourceVersion`). It can also become unreachable, which ends open watches and refuses
//! connections, as a partition from the control plane does.
//!
//! Workloads, as a cluster's controllers would run them:
//! - the `pods/eviction` subresource (`policy/v1` Eviction): refused with 429 and a Status naming
//!   the PodDisruptionBudget when evicting the pod would leave fewer Ready pods than the budget
//!   allows (`minAvailable` or `maxUnavailable`, counts or percentages, over the pods its
//!   selector matches), otherwise the pod is deleted;
//! - opt-in workload controllers ([`MemoryApi::enable_workload_controllers`]): a deleted pod of a
//!   ReplicaSet or Deployment gets a Pending replacement at once; [`MemoryApi::tick`] (or the
//!   task from [`MemoryApi::spawn_controllers`]) schedules Pending pods onto schedulable nodes
//!   (never one with `spec.unschedulable`) and flips their Ready condition after a delay.
//!
//! The service proxy (`/api/v1/namespaces/NS/services/NAME:PORT/proxy/...`) forwards to a real
//! HTTP server registered with [`MemoryApi::proxy_service`], and answers 503 without one.
//!
//! What it leaves out: admission, validation against schemas, pagination (lists are complete),
//! protobuf, graceful termination (a pod without finalizers goes at once), and strategic merge
//! patch beyond the JSON merge rules.

use std::collections::{BTreeMap, BTreeSet};
use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;
use serde_json::{json, Map, Value};

/// The response body: whole for most requests, a stream for watches.
pub type ApiBody = BoxBody<Bytes, io::Error>;

/// One resource type the server knows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResourceType {
    /// API group; empty for the core group.
    pub group: String,
    /// Version, e.g. `v1`.
    pub version: String,
    /// Plural name as in the path, e.g. `pods`.
    pub plural: String,
    /// Kind, e.g. `Pod`.
    pub kind: String,
    /// Whether objects live in namespaces.
    pub namespaced: bool,
    /// Whether the type has a `status` subresource.
    pub status_subresource: bool,
}

impl ResourceType {
    /// A resource type.
    pub fn new(
        group: &str,
        version: &str,
        plural: &str,
        kind: &str,
        namespaced: bool,
        status_subresource: bool,
    ) -> Self {
        Self {
            group: group.into(),
            version: version.into(),
            plural: plural.into(),
            kind: kind.into(),
            namespaced,
            status_subresource,
        }
    }

    /// `apiVersion` as written in objects.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    fn key(&self) -> String {
        format!("{}/{}", self.group, self.plural)
    }

    fn is_pods(&self) -> bool {
        self.group.is_empty() && self.plural == "pods"
    }
}

/// The resource types registered by [`MemoryApi::new`].
fn builtin_types() -> Vec<ResourceType> {
    vec![
        ResourceType::new("", "v1", "pods", "Pod", true, true),
        ResourceType::new("", "v1", "nodes", "Node", false, true),
        ResourceType::new("", "v1", "namespaces", "Namespace", false, true),
        ResourceType::new("", "v1", "services", "Service", true, true),
        ResourceType::new("", "v1", "events", "Event", true, false),
        ResourceType::new("", "v1", "configmaps", "ConfigMap", true, false),
        ResourceType::new("events.k8s.io", "v1", "events", "Event", true, false),
        ResourceType::new(
            "discovery.k8s.io",
            "v1",
            "endpointslices",
            "EndpointSlice",
            true,
            false,
        ),
        ResourceType::new("coordination.k8s.io", "v1", "leases", "Lease", true, false),
        ResourceType::new(
            "policy",
            "v1",
            "poddisruptionbudgets",
            "PodDisruptionBudget",
            true,
            true,
        ),
        ResourceType::new("apps", "v1", "deployments", "Deployment", true, true),
        ResourceType::new("apps", "v1", "replicasets", "ReplicaSet", true, true),
        ResourceType::new("apps", "v1", "daemonsets", "DaemonSet", true, true),
        ResourceType::new("batch", "v1", "jobs", "Job", true, true),
        ResourceType::new("faultline.dev", "v1alpha1", "faults", "Fault", false, true),
        ResourceType::new("faultline.dev", "v1alpha1", "halts", "Halt", false, false),
        ResourceType::new(
            "faultline.dev",
            "v1alpha1",
            "experiments",
            "Experiment",
            true,
            true,
        ),
    ]
}

/// One request as the server saw it, for wire-level assertions in tests.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoggedRequest {
    /// HTTP method.
    pub method: String,
    /// Path and query, as sent.
    pub uri: String,
    /// `Content-Type`, if any.
    pub content_type: Option<String>,
    /// The body, as text.
    pub body: String,
}

#[derive(Clone, Debug)]
struct WatchEvent {
    rv: u64,
    type_key: String,
    namespace: Option<String>,
    kind: &'static str,
    object: Value,
}

#[derive(Clone, Debug)]
struct Stored {
    object: Value,
    /// Field manager -> the leaf paths it applied last (server-side apply).
    managers: Managers,
}

type ObjectKey = (String, Option<String>, String);
/// Field manager -> the leaf paths it applied last.
type Managers = BTreeMap<String, BTreeSet<Vec<String>>>;

#[derive(Debug)]
struct State {
    rv: u64,
    next_uid: u64,
    types: Vec<ResourceType>,
    objects: BTreeMap<ObjectKey, Stored>,
    events: Vec<WatchEvent>,
    reachable: bool,
    log: Vec<LoggedRequest>,
    /// The workload controllers, when enabled.
    workloads: Option<WorkloadControllers>,
    /// Scheduled pods whose Ready condition flips at the given instant.
    ready_due: BTreeMap<ObjectKey, tokio::time::Instant>,
    /// Service proxy backends: (namespace, service, port name) -> a real HTTP server.
    proxies: BTreeMap<(String, String, String), SocketAddr>,
}

/// How the in-memory workload controllers behave (see [`MemoryApi::enable_workload_controllers`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WorkloadControllers {
    /// How long after being scheduled a pod's Ready condition turns true (zero: at the same
    /// tick).
    pub ready_delay: Duration,
}

/// What one [`MemoryApi::tick`] of the workload controllers did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ControllerTick {
    /// Pods bound to a node, as `namespace/name -> node`.
    pub scheduled: Vec<(String, String)>,
    /// Pods whose Ready condition turned true, as `namespace/name`.
    pub became_ready: Vec<String>,
}

struct Shared {
    state: Mutex<State>,
    changes: tokio::sync::watch::Sender<u64>,
}

/// The in-memory API server. Cloning gives another handle to the same server.
#[derive(Clone)]
pub struct MemoryApi {
    shared: Arc<Shared>,
}

impl Default for MemoryApi {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryApi {
    /// An empty server that knows the core types our code uses and Faultline's own.
    pub fn new() -> Self {
        let (changes, _) = tokio::sync::watch::channel(0);
        Self {
            shared: Arc::new(Shared {
                state: Mutex::new(State {
                    rv: 1,
                    next_uid: 1,
                    types: builtin_types(),
                    objects: BTreeMap::new(),
                    events: Vec::new(),
                    reachable: true,
                    log: Vec::new(),
                    workloads: None,
                    ready_due: BTreeMap::new(),
                    proxies: BTreeMap::new(),
                }),
                changes,
            }),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.shared
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Registers another resource type.
    pub fn register(&self, resource: ResourceType) {
        self.state().types.push(resource);
    }

    /// A `kube::Client` talking to this server in-process. Needs a Tokio runtime.
    pub fn client(&self) -> kube::Client {
        kube::Client::new(self.clone(), "default")
    }

    /// Makes the server reachable or not. Unreachable: new requests fail as a refused connection
    /// and open watches end with an error.
    pub fn set_reachable(&self, reachable: bool) {
        self.state().reachable = reachable;
        self.shared.changes.send_modify(|n| *n += 1);
    }

    /// Turns the workload controllers on: from now on a deleted (or evicted) pod controlled by a
    /// ReplicaSet or Deployment gets a Pending replacement at once, and [`MemoryApi::tick`]
    /// schedules and readies pods. Off by default, so tests that do not ask for them see pods
    /// only as they put them.
    pub fn enable_workload_controllers(&self, config: WorkloadControllers) {
        self.state().workloads = Some(config);
    }

    /// One round of the workload controllers, as a cluster's scheduler and kubelets would do it:
    /// binds every Pending pod without a node to a schedulable node (not `spec.unschedulable`;
    /// the one with the fewest pods of the same owner, then the fewest pods, then by name), and
    /// turns the Ready condition true on scheduled pods whose delay has passed. A pod stays
    /// Pending while no node is schedulable. Does nothing unless the controllers are enabled.
    pub fn tick(&self) -> ControllerTick {
        let mut state = self.state();
        let result = state.tick(tokio::time::Instant::now());
        drop(state);
        if result != ControllerTick::default() {
            self.notify();
        }
        result
    }

    /// Runs [`MemoryApi::tick`] every `period` on the current Tokio runtime until the returned
    /// task is aborted.
    pub fn spawn_controllers(&self, period: Duration) -> tokio::task::JoinHandle<()> {
        let api = self.clone();
        tokio::spawn(async move {
            let mut interval = tokio::time::interval(period);
            loop {
                interval.tick().await;
                api.tick();
            }
        })
    }

    /// Puts a real HTTP server behind the service proxy of `namespace/service:port`: requests
    /// to `/api/v1/namespaces/NS/services/SERVICE:PORT/proxy/PATH` are forwarded to `backend`
    /// as `GET /PATH`, and its answer (status, content type, body) returned, as the API server
    /// does for a Service with a ready endpoint. Without one the proxy answers 503.
    pub fn proxy_service(&self, namespace: &str, service: &str, port: &str, backend: SocketAddr) {
        self.state().proxies.insert(
            (namespace.to_owned(), service.to_owned(), port.to_owned()),
            backend,
        );
    }

    /// Every request received so far.
    pub fn requests(&self) -> Vec<LoggedRequest> {
        self.state().log.clone()
    }

    /// The stored object, as the server would return it.
    pub fn get(
        &self,
        api_version: &str,
        plural: &str,
        namespace: Option<&str>,
        name: &str,
    ) -> Option<Value> {
        let state = self.state();
        let resource = state.type_for_api_version(api_version, plural)?;
        state
            .objects
            .get(&(
                resource.key(),
                namespace.map(str::to_owned),
                name.to_owned(),
            ))
            .map(|stored| stored.object.clone())
    }

    /// Every object of a type (all namespaces), sorted by namespace and name.
    pub fn list(&self, api_version: &str, plural: &str) -> Vec<Value> {
        let state = self.state();
        let Some(resource) = state.type_for_api_version(api_version, plural) else {
            return Vec::new();
        };
        let key = resource.key();
        state
            .objects
            .iter()
            .filter(|((k, _, _), _)| *k == key)
            .map(|(_, stored)| stored.object.clone())
            .collect()
    }

    /// Creates or replaces an object directly (status included), as a controller outside the
    /// code under test would. `object` must carry `apiVersion`, `kind` and `metadata.name`.
    ///
    /// # Panics
    /// The object's type is not registered (a bug in the test).
    pub fn put(&self, mut object: Value) -> Value {
        let mut state = self.state();
        let api_version = object["apiVersion"].as_str().unwrap_or_default().to_owned();
        let kind = object["kind"].as_str().unwrap_or_default().to_owned();
        let resource = state
            .types
            .iter()
            .find(|t| t.api_version() == api_version && t.kind == kind)
            .cloned()
            .unwrap_or_else(|| panic!("{api_version} {kind} is not registered"));
        let namespace = resource.namespaced.then(|| {
            object["metadata"]["namespace"]
                .as_str()
                .unwrap_or("default")
                .to_owned()
        });
        let name = object["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let key = (resource.key(), namespace.clone(), name);
        let existing = state.objects.get(&key).map(|s| s.object.clone());
        let event = if let Some(old) = existing {
            let meta = object["metadata"].as_object_mut().expect("metadata");
            for field in ["uid", "creationTimestamp"] {
                meta.insert(field.into(), old["metadata"][field].clone());
            }
            "MODIFIED"
        } else {
            state.fill_new_metadata(&mut object, namespace.as_deref());
            "ADDED"
        };
        let result = state.store(&resource, &key, object, event, BTreeMap::new());
        drop(state);
        self.notify();
        result
    }

    /// Removes an object directly, finalizers or not, as a vanished node or a garbage collector
    /// would.
    pub fn remove(
        &self,
        api_version: &str,
        plural: &str,
        namespace: Option<&str>,
        name: &str,
    ) -> bool {
        let mut state = self.state();
        let Some(resource) = state.type_for_api_version(api_version, plural) else {
            return false;
        };
        let key = (
            resource.key(),
            namespace.map(str::to_owned),
            name.to_owned(),
        );
        let removed = state.delete_now(&resource, &key);
        drop(state);
        self.notify();
        removed
    }

    fn notify(&self) {
        self.shared.changes.send_modify(|n| *n += 1);
    }

    /// Serves the API over plain HTTP on `addr` (use port 0 for any free port) until the
    /// returned task is aborted. Returns the bound address.
    ///
    /// # Errors
    /// The address cannot be bound.
    pub async fn serve(
        &self,
        addr: SocketAddr,
    ) -> io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let local = listener.local_addr()?;
        let api = self.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                if !api.state().reachable {
                    drop(stream);
                    continue;
                }
                let api = api.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(
                        move |request: Request<hyper::body::Incoming>| {
                            let api = api.clone();
                            async move {
                                let (parts, body) = request.into_parts();
                                let body = body
                                    .collect()
                                    .await
                                    .map(http_body_util::Collected::to_bytes)
                                    .unwrap_or_default();
                                Ok::<_, Infallible>(
                                    api.handle_any(
                                        &parts.method,
                                        &parts.uri,
                                        &parts.headers,
                                        &body,
                                    )
                                    .await,
                                )
                            }
                        },
                    );
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Ok((local, task))
    }

    /// Handles one request: the service proxy, or the resources.
    async fn handle_any(
        &self,
        method: &Method,
        uri: &http::Uri,
        headers: &http::HeaderMap,
        body: &[u8],
    ) -> Response<ApiBody> {
        let Some((namespace, service, port, tail)) = proxy_route(uri.path()) else {
            return self.handle(method, uri, headers, body);
        };
        self.state().log.push(LoggedRequest {
            method: method.to_string(),
            uri: uri.to_string(),
            content_type: None,
            body: String::from_utf8_lossy(body).into_owned(),
        });
        let backend = self
            .state()
            .proxies
            .get(&(namespace.clone(), service.clone(), port))
            .copied();
        let unavailable = || {
            status_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "ServiceUnavailable",
                &format!("no endpoints available for service \"{namespace}/{service}\""),
            )
            .into_response()
        };
        let Some(backend) = backend else {
            return unavailable();
        };
        let mut path = format!("/{tail}");
        if let Some(query) = uri.query() {
            path = format!("{path}?{query}");
        }
        match forward(backend, method, &path).await {
            Ok(response) => response,
            Err(_) => unavailable(),
        }
    }

    /// Handles one request to the resources: the whole server but the proxy.
    fn handle(
        &self,
        method: &Method,
        uri: &http::Uri,
        headers: &http::HeaderMap,
        body: &[u8],
    ) -> Response<ApiBody> {
        let content_type = headers
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let body_text = String::from_utf8_lossy(body).into_owned();
        self.state().log.push(LoggedRequest {
            method: method.to_string(),
            uri: uri.to_string(),
            content_type: content_type.clone(),
            body: body_text,
        });
        let query = parse_query(uri.query().unwrap_or_default());
        let route = match self.state().route(uri.path()) {
            Ok(route) => route,
            Err(error) => return error.into_response(),
        };
        if *method == Method::GET && route.name.is_none() && flag(&query, "watch") {
            return self.watch(&route, &query);
        }
        let response = {
            let mut state = self.state();
            match (method.clone(), route.name.is_some()) {
                (Method::GET, false) => Ok(state.list(&route, &query)),
                (Method::GET, true) => state.read(&route),
                (Method::POST, false) => state.create(&route, body),
                (Method::POST, true) if route.is_pod_eviction() => state.evict(&route, body),
                (Method::PUT, true) => state.replace(&route, body),
                (Method::PATCH, true) => state.patch(&route, body, content_type.as_deref(), &query),
                (Method::DELETE, true) => state.delete(&route, body),
                _ => Err(status_error(
                    StatusCode::METHOD_NOT_ALLOWED,
                    "MethodNotAllowed",
                    &format!("{method} is not supported on {}", uri.path()),
                )),
            }
        };
        self.notify();
        match response {
            Ok((code, value)) => json_response(code, &value),
            Err(error) => error.into_response(),
        }
    }

    fn watch(&self, route: &Route, query: &BTreeMap<String, String>) -> Response<ApiBody> {
        let selector = Selector::from_query(query);
        let timeout = query
            .get("timeoutSeconds")
            .and_then(|s| s.parse().ok())
            .map_or(Duration::from_secs(300), Duration::from_secs);
        let (start_rv, initial) = {
            let state = self.state();
            let requested = query
                .get("resourceVersion")
                .and_then(|rv| rv.parse::<u64>().ok())
                .filter(|rv| *rv > 0);
            match requested {
                Some(rv) => (rv, Vec::new()),
                // No resource version: start with the current objects, as the server does.
                None => (
                    state.rv,
                    state
                        .objects
                        .iter()
                        .filter(|((key, ns, _), stored)| {
                            *key == route.resource.key()
                                && (route.namespace.is_none() || *ns == route.namespace)
                                && selector.matches(&stored.object)
                        })
                        .map(|(_, stored)| event_line("ADDED", &stored.object))
                        .collect(),
                ),
            }
        };
        let shared = Arc::clone(&self.shared);
        let changes = self.shared.changes.subscribe();
        let deadline = tokio::time::Instant::now() + timeout;
        let type_key = route.resource.key();
        let namespace = route.namespace.clone();
        let stream = futures::stream::unfold(
            (shared, changes, start_rv, initial, false),
            move |(shared, mut changes, mut last_rv, mut pending, ended)| {
                let type_key = type_key.clone();
                let namespace = namespace.clone();
                let selector = selector.clone();
                async move {
                    if ended {
                        return None;
                    }
                    loop {
                        if !pending.is_empty() {
                            let chunk = Bytes::from(pending.concat());
                            pending.clear();
                            return Some((
                                Ok(Frame::data(chunk)),
                                (shared, changes, last_rv, pending, false),
                            ));
                        }
                        {
                            let state = shared
                                .state
                                .lock()
                                .unwrap_or_else(std::sync::PoisonError::into_inner);
                            if !state.reachable {
                                let error = io::Error::new(
                                    io::ErrorKind::ConnectionReset,
                                    "API server unreachable",
                                );
                                return Some((
                                    Err(error),
                                    (Arc::clone(&shared), changes, last_rv, pending, true),
                                ));
                            }
                            for event in state.events.iter().filter(|e| e.rv > last_rv) {
                                if event.type_key == type_key
                                    && (namespace.is_none() || event.namespace == namespace)
                                    && selector.matches(&event.object)
                                {
                                    pending.push(event_line(event.kind, &event.object));
                                }
                            }
                            last_rv = state.rv;
                        }
                        if !pending.is_empty() {
                            continue;
                        }
                        tokio::select! {
                            result = changes.changed() => if result.is_err() { return None; },
                            () = tokio::time::sleep_until(deadline) => return None,
                        }
                    }
                }
            },
        );
        Response::builder()
            .status(StatusCode::OK)
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(StreamBody::new(stream).boxed())
            .expect("valid response")
    }
}

fn event_line(kind: &str, object: &Value) -> String {
    let mut line = json!({"type": kind, "object": object}).to_string();
    line.push('\n');
    line
}

impl tower::Service<Request<kube::client::Body>> for MemoryApi {
    type Response = Response<ApiBody>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<kube::client::Body>) -> Self::Future {
        let api = self.clone();
        Box::pin(async move {
            if !api.state().reachable {
                return Err(io::Error::new(
                    io::ErrorKind::ConnectionRefused,
                    "API server unreachable",
                ));
            }
            let (parts, body) = request.into_parts();
            let body = body
                .collect()
                .await
                .map_err(|e| io::Error::other(e.to_string()))?
                .to_bytes();
            Ok(api
                .handle_any(&parts.method, &parts.uri, &parts.headers, &body)
                .await)
        })
    }
}

/// A parsed path.
struct Route {
    resource: ResourceType,
    namespace: Option<String>,
    name: Option<String>,
    subresource: Option<String>,
}

impl Route {
    fn key(&self) -> ObjectKey {
        (
            self.resource.key(),
            self.namespace.clone(),
            self.name.clone().unwrap_or_default(),
        )
    }

    fn is_status(&self) -> bool {
        self.subresource.as_deref() == Some("status")
    }

    fn is_pod_eviction(&self) -> bool {
        self.resource.is_pods() && self.subresource.as_deref() == Some("eviction")
    }
}

impl State {
    fn type_for_api_version(&self, api_version: &str, plural: &str) -> Option<ResourceType> {
        self.types
            .iter()
            .find(|t| t.api_version() == api_version && t.plural == plural)
            .cloned()
    }

    fn route(&self, path: &str) -> Result<Route, ApiError> {
        let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
        let not_found = || {
            status_error(
                StatusCode::NOT_FOUND,
                "NotFound",
                &format!("the server could not find the requested resource ({path})"),
            )
        };
        let (group, version, rest) = match segments.as_slice() {
            ["api", version, rest @ ..] => ("", *version, rest),
            ["apis", group, version, rest @ ..] => (*group, *version, rest),
            _ => return Err(not_found()),
        };
        let (namespace, rest) = match rest {
            ["namespaces", namespace, plural, tail @ ..] => (Some((*namespace).to_owned()), {
                let mut all = vec![*plural];
                all.extend_from_slice(tail);
                all
            }),
            other => (None, other.to_vec()),
        };
        let Some(plural) = rest.first() else {
            return Err(not_found());
        };
        let resource = self
            .types
            .iter()
            .find(|t| t.group == group && t.version == version && t.plural == *plural)
            .cloned()
            .ok_or_else(not_found)?;
        if resource.namespaced != namespace.is_some() && rest.len() > 1 {
            return Err(not_found());
        }
        Ok(Route {
            resource,
            namespace,
            name: rest.get(1).map(|s| (*s).to_owned()),
            subresource: rest.get(2).map(|s| (*s).to_owned()),
        })
    }

    fn fill_new_metadata(&mut self, object: &mut Value, namespace: Option<&str>) {
        let uid = format!(
            "{:08x}-0000-4000-8000-{:012x}",
            self.next_uid, self.next_uid
        );
        self.next_uid += 1;
        let meta = object["metadata"]
            .as_object_mut()
            .expect("metadata is an object");
        meta.insert("uid".into(), json!(uid));
        meta.insert("creationTimestamp".into(), json!(now_rfc3339()));
        meta.insert("generation".into(), json!(1));
        if let Some(namespace) = namespace {
            meta.insert("namespace".into(), json!(namespace));
        }
    }

    /// Stores `object` with a new resource version and records the event.
    fn store(
        &mut self,
        resource: &ResourceType,
        key: &ObjectKey,
        mut object: Value,
        kind: &'static str,
        managers: Managers,
    ) -> Value {
        self.rv += 1;
        object["apiVersion"] = json!(resource.api_version());
        object["kind"] = json!(resource.kind);
        object["metadata"]["resourceVersion"] = json!(self.rv.to_string());
        let finalizers_empty = object["metadata"]["finalizers"]
            .as_array()
            .is_none_or(Vec::is_empty);
        if !object["metadata"]["deletionTimestamp"].is_null() && finalizers_empty {
            self.objects.remove(key);
            self.push_event(resource, key, "DELETED", object.clone());
            return object;
        }
        self.objects.insert(
            key.clone(),
            Stored {
                object: object.clone(),
                managers,
            },
        );
        self.push_event(resource, key, kind, object.clone());
        object
    }

    fn push_event(
        &mut self,
        resource: &ResourceType,
        key: &ObjectKey,
        kind: &'static str,
        object: Value,
    ) {
        self.events.push(WatchEvent {
            rv: self.rv,
            type_key: resource.key(),
            namespace: key.1.clone(),
            kind,
            object,
        });
    }

    fn delete_now(&mut self, resource: &ResourceType, key: &ObjectKey) -> bool {
        let Some(stored) = self.objects.remove(key) else {
            return false;
        };
        self.rv += 1;
        let mut object = stored.object;
        object["metadata"]["resourceVersion"] = json!(self.rv.to_string());
        self.push_event(resource, key, "DELETED", object);
        true
    }

    fn existing(&self, route: &Route) -> Result<Stored, ApiError> {
        self.objects.get(&route.key()).cloned().ok_or_else(|| {
            status_error(
                StatusCode::NOT_FOUND,
                "NotFound",
                &format!(
                    "{}.{} {:?} not found",
                    route.resource.plural,
                    route.resource.group,
                    route.name.as_deref().unwrap_or_default()
                ),
            )
        })
    }

    fn list(&self, route: &Route, query: &BTreeMap<String, String>) -> (StatusCode, Value) {
        let selector = Selector::from_query(query);
        let items: Vec<Value> = self
            .objects
            .iter()
            .filter(|((key, ns, _), stored)| {
                *key == route.resource.key()
                    && (route.namespace.is_none() || *ns == route.namespace)
                    && selector.matches(&stored.object)
            })
            .map(|(_, stored)| stored.object.clone())
            .collect();
        (
            StatusCode::OK,
            json!({
                "apiVersion": route.resource.api_version(),
                "kind": format!("{}List", route.resource.kind),
                "metadata": {"resourceVersion": self.rv.to_string()},
                "items": items,
            }),
        )
    }

    fn read(&self, route: &Route) -> Result<(StatusCode, Value), ApiError> {
        Ok((StatusCode::OK, self.existing(route)?.object))
    }

    fn create(&mut self, route: &Route, body: &[u8]) -> Result<(StatusCode, Value), ApiError> {
        let mut object = parse_body(body)?;
        if !object["metadata"].is_object() {
            object["metadata"] = json!({});
        }
        if object["metadata"]["name"]
            .as_str()
            .is_none_or(str::is_empty)
        {
            if let Some(prefix) = object["metadata"]["generateName"].as_str() {
                let name = format!("{prefix}{:05x}", self.next_uid);
                object["metadata"]["name"] = json!(name);
            } else {
                return Err(status_error(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "Invalid",
                    "metadata.name: Required value",
                ));
            }
        }
        let name = object["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let key = (route.resource.key(), route.namespace.clone(), name.clone());
        if self.objects.contains_key(&key) {
            return Err(status_error(
                StatusCode::CONFLICT,
                "AlreadyExists",
                &format!(
                    "{}.{} {name:?} already exists",
                    route.resource.plural, route.resource.group
                ),
            ));
        }
        if route.resource.status_subresource {
            if let Some(map) = object.as_object_mut() {
                map.remove("status");
            }
        }
        if let Some(meta) = object["metadata"].as_object_mut() {
            meta.remove("resourceVersion");
            meta.remove("deletionTimestamp");
        }
        self.fill_new_metadata(&mut object, route.namespace.as_deref());
        Ok((
            StatusCode::CREATED,
            self.store(&route.resource, &key, object, "ADDED", BTreeMap::new()),
        ))
    }

    fn replace(&mut self, route: &Route, body: &[u8]) -> Result<(StatusCode, Value), ApiError> {
        let stored = self.existing(route)?;
        let object = parse_body(body)?;
        if let Some(rv) = object["metadata"]["resourceVersion"].as_str() {
            if rv
                != stored.object["metadata"]["resourceVersion"]
                    .as_str()
                    .unwrap_or_default()
            {
                return Err(conflict(route));
            }
        }
        Ok((StatusCode::OK, self.commit(route, &stored, object)))
    }

    fn patch(
        &mut self,
        route: &Route,
        body: &[u8],
        content_type: Option<&str>,
        query: &BTreeMap<String, String>,
    ) -> Result<(StatusCode, Value), ApiError> {
        let content_type = content_type.unwrap_or_default();
        let current = self.objects.get(&route.key()).cloned();
        if content_type.starts_with("application/apply-patch") {
            let manager = query.get("fieldManager").cloned().ok_or_else(|| {
                status_error(
                    StatusCode::BAD_REQUEST,
                    "BadRequest",
                    "fieldManager is required for apply patch",
                )
            })?;
            let force = flag(query, "force");
            let applied = parse_body(body)?;
            let stored = match current {
                Some(stored) => stored,
                None if !route.is_status() => {
                    // Apply creates.
                    let name = route.name.clone().unwrap_or_default();
                    let mut fresh = json!({"metadata": {"name": name}});
                    self.fill_new_metadata(&mut fresh, route.namespace.as_deref());
                    Stored {
                        object: fresh,
                        managers: BTreeMap::new(),
                    }
                }
                None => return Err(self.existing(route).expect_err("absent")),
            };
            let (object, managers) = server_side_apply(route, &stored, &applied, &manager, force)?;
            let created = stored.object["metadata"]["resourceVersion"].is_null();
            let committed = self.commit_with(route, &stored, object, managers, created);
            return Ok((
                if created {
                    StatusCode::CREATED
                } else {
                    StatusCode::OK
                },
                committed,
            ));
        }
        let stored = current.ok_or_else(|| self.existing(route).expect_err("absent"))?;
        let mut object = stored.object.clone();
        if content_type.starts_with("application/json-patch") {
            let patch: json_patch::Patch = serde_json::from_slice(body).map_err(|e| {
                status_error(
                    StatusCode::BAD_REQUEST,
                    "BadRequest",
                    &format!("invalid JSON patch: {e}"),
                )
            })?;
            json_patch::patch(&mut object, &patch).map_err(|e| {
                status_error(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "Invalid",
                    &format!("the JSON patch failed: {e}"),
                )
            })?;
        } else if content_type.starts_with("application/merge-patch")
            || content_type.starts_with("application/strategic-merge-patch")
        {
            json_patch::merge(&mut object, &parse_body(body)?);
        } else {
            return Err(status_error(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "UnsupportedMediaType",
                &format!("patch content type {content_type:?} is not supported"),
            ));
        }
        if let Some(rv) = object["metadata"]["resourceVersion"].as_str() {
            if rv
                != stored.object["metadata"]["resourceVersion"]
                    .as_str()
                    .unwrap_or_default()
            {
                return Err(conflict(route));
            }
        }
        Ok((StatusCode::OK, self.commit(route, &stored, object)))
    }

    /// Commits an update of `stored` to `object`, honouring the status subresource.
    fn commit(&mut self, route: &Route, stored: &Stored, object: Value) -> Value {
        self.commit_with(route, stored, object, stored.managers.clone(), false)
    }

    fn commit_with(
        &mut self,
        route: &Route,
        stored: &Stored,
        mut object: Value,
        managers: Managers,
        created: bool,
    ) -> Value {
        let old = &stored.object;
        if route.resource.status_subresource {
            if route.is_status() {
                // Only status changes through the subresource.
                let status = object.get("status").cloned();
                object = old.clone();
                match status {
                    Some(status) => object["status"] = status,
                    None => {
                        if let Some(map) = object.as_object_mut() {
                            map.remove("status");
                        }
                    }
                }
            } else {
                match old.get("status") {
                    Some(status) if !created => object["status"] = status.clone(),
                    _ => {
                        if let Some(map) = object.as_object_mut() {
                            map.remove("status");
                        }
                    }
                }
            }
        }
        // Fields the server owns.
        for field in [
            "uid",
            "creationTimestamp",
            "namespace",
            "name",
            "deletionTimestamp",
            "generation",
        ] {
            let value = old["metadata"].get(field).cloned();
            if let Some(meta) = object["metadata"].as_object_mut() {
                match value {
                    Some(value) => meta.insert(field.into(), value),
                    None => meta.remove(field),
                };
            }
        }
        if !created && old.get("spec") != object.get("spec") {
            let generation = old["metadata"]["generation"].as_u64().unwrap_or(1) + 1;
            object["metadata"]["generation"] = json!(generation);
        }
        let key = route.key();
        self.store(
            &route.resource,
            &key,
            object,
            if created { "ADDED" } else { "MODIFIED" },
            managers,
        )
    }

    fn delete(&mut self, route: &Route, body: &[u8]) -> Result<(StatusCode, Value), ApiError> {
        let stored = self.existing(route)?;
        let options = if body.iter().all(u8::is_ascii_whitespace) {
            Value::Null
        } else {
            parse_body(body)?
        };
        check_preconditions(route, &stored.object, &options["preconditions"])?;
        Ok(self.delete_stored(route, stored))
    }

    /// Deletes a stored object, or only marks it while finalizers remain. A pod that goes away
    /// (or starts terminating) is replaced by its controller, when the controllers run.
    fn delete_stored(&mut self, route: &Route, stored: Stored) -> (StatusCode, Value) {
        let has_finalizers = stored.object["metadata"]["finalizers"]
            .as_array()
            .is_some_and(|f| !f.is_empty());
        let key = route.key();
        if has_finalizers {
            if stored.object["metadata"]["deletionTimestamp"].is_null() {
                let mut object = stored.object.clone();
                object["metadata"]["deletionTimestamp"] = json!(now_rfc3339());
                object["metadata"]["deletionGracePeriodSeconds"] = json!(0);
                let stored_object =
                    self.store(&route.resource, &key, object, "MODIFIED", stored.managers);
                if route.resource.is_pods() {
                    self.replace_pod(&stored.object);
                }
                return (StatusCode::OK, stored_object);
            }
            return (StatusCode::OK, stored.object);
        }
        self.delete_now(&route.resource, &key);
        self.ready_due.remove(&key);
        if route.resource.is_pods() {
            self.replace_pod(&stored.object);
        }
        let mut object = stored.object;
        object["metadata"]["resourceVersion"] = json!(self.rv.to_string());
        (StatusCode::OK, object)
    }

    /// `POST .../pods/NAME/eviction`: checks the Eviction body against the path, the delete
    /// preconditions, then the pod's PodDisruptionBudget, and deletes the pod if it may go.
    fn evict(&mut self, route: &Route, body: &[u8]) -> Result<(StatusCode, Value), ApiError> {
        let eviction = parse_body(body)?;
        let bad_request =
            |message: String| status_error(StatusCode::BAD_REQUEST, "BadRequest", &message);
        if let Some(api_version) = eviction["apiVersion"].as_str() {
            if !matches!(api_version, "policy/v1" | "policy/v1beta1") {
                return Err(bad_request(format!(
                    "an Eviction must be policy/v1, not {api_version:?}"
                )));
            }
        }
        if let Some(kind) = eviction["kind"].as_str() {
            if kind != "Eviction" {
                return Err(bad_request(format!(
                    "the body of an eviction must be of kind Eviction, not {kind:?}"
                )));
            }
        }
        if eviction["metadata"]["name"].as_str() != route.name.as_deref() {
            return Err(bad_request(
                "name in URL does not match name in Eviction object".to_owned(),
            ));
        }
        if let Some(namespace) = eviction["metadata"]["namespace"].as_str() {
            if Some(namespace) != route.namespace.as_deref() {
                return Err(bad_request(
                    "namespace in URL does not match namespace in Eviction object".to_owned(),
                ));
            }
        }
        let stored = self.existing(route)?;
        check_preconditions(
            route,
            &stored.object,
            &eviction["deleteOptions"]["preconditions"],
        )?;
        let pod = &stored.object;
        // As the API server does: a terminating pod, or one that is not running, may always go.
        let terminating = !pod["metadata"]["deletionTimestamp"].is_null();
        let running = !matches!(
            pod["status"]["phase"].as_str(),
            Some("Pending" | "Succeeded" | "Failed")
        );
        if !terminating && running {
            self.check_disruption_budget(pod, route.namespace.as_deref())?;
        }
        self.delete_stored(route, stored);
        Ok((
            StatusCode::CREATED,
            json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}),
        ))
    }

    /// Refuses the eviction of `pod` with 429 when its budget would be violated: with `healthy`
    /// Ready pods among those the budget selects and `desired` required, a Ready pod may go while
    /// `healthy > desired`; a pod that is not Ready while `healthy >= desired` (the default
    /// `IfHealthyBudget` policy) or always (`AlwaysAllow`).
    fn check_disruption_budget(
        &self,
        pod: &Value,
        namespace: Option<&str>,
    ) -> Result<(), ApiError> {
        let labels = &pod["metadata"]["labels"];
        let budgets: Vec<&Value> = self
            .objects
            .iter()
            .filter(|((key, ns, _), stored)| {
                key == PDB_KEY
                    && ns.as_deref() == namespace
                    && label_selector_matches(&stored.object["spec"]["selector"], labels)
            })
            .map(|(_, stored)| &stored.object)
            .collect();
        let budget = match budgets.as_slice() {
            [] => return Ok(()),
            [budget] => *budget,
            _ => {
                return Err(status_error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "InternalError",
                    "This pod has more than one PodDisruptionBudget, which the eviction subresource does not support.",
                ))
            }
        };
        let selector = &budget["spec"]["selector"];
        let covered: Vec<&Value> = self
            .objects
            .iter()
            .filter(|((key, ns, _), stored)| {
                key == POD_KEY
                    && ns.as_deref() == namespace
                    && stored.object["metadata"]["deletionTimestamp"].is_null()
                    && label_selector_matches(selector, &stored.object["metadata"]["labels"])
            })
            .map(|(_, stored)| &stored.object)
            .collect();
        let healthy = covered.iter().filter(|p| pod_is_ready(p)).count();
        let desired = desired_healthy(&budget["spec"], covered.len());
        let allowed = if pod_is_ready(pod) {
            healthy > desired
        } else {
            budget["spec"]["unhealthyPodEvictionPolicy"] == "AlwaysAllow" || healthy >= desired
        };
        if allowed {
            return Ok(());
        }
        let name = budget["metadata"]["name"].as_str().unwrap_or_default();
        Err(ApiError {
            code: StatusCode::TOO_MANY_REQUESTS,
            reason: "TooManyRequests",
            message: "Cannot evict pod as it would violate the pod's disruption budget.".into(),
            details: json!({"causes": [{
                "reason": "DisruptionBudget",
                "message": format!(
                    "The disruption budget {name} needs {desired} healthy pods and has {healthy} currently"
                ),
            }]}),
        })
    }

    /// The ReplicaSet controller's answer to a pod going away: a Pending replacement from the
    /// same template (the pod's labels, annotations, owners and spec, without its node).
    fn replace_pod(&mut self, pod: &Value) {
        if self.workloads.is_none() {
            return;
        }
        let Some(owner) = controller_of(pod)
            .filter(|owner| matches!(owner["kind"].as_str(), Some("ReplicaSet" | "Deployment")))
        else {
            return;
        };
        let Some(pods) = self.types.iter().find(|t| t.is_pods()).cloned() else {
            return;
        };
        let namespace = pod["metadata"]["namespace"].as_str().map(str::to_owned);
        let prefix = pod["metadata"]["generateName"].as_str().map_or_else(
            || format!("{}-", owner["name"].as_str().unwrap_or("pod")),
            str::to_owned,
        );
        let name = format!("{prefix}{:05x}", self.next_uid);
        let mut metadata = json!({
            "name": name,
            "generateName": prefix,
            "ownerReferences": pod["metadata"]["ownerReferences"].clone(),
        });
        for field in ["labels", "annotations"] {
            if !pod["metadata"][field].is_null() {
                metadata[field] = pod["metadata"][field].clone();
            }
        }
        let mut spec = pod["spec"].clone();
        if let Some(map) = spec.as_object_mut() {
            map.remove("nodeName");
        }
        let mut object =
            json!({"metadata": metadata, "spec": spec, "status": {"phase": "Pending"}});
        self.fill_new_metadata(&mut object, namespace.as_deref());
        let key = (pods.key(), namespace, name);
        self.store(&pods, &key, object, "ADDED", BTreeMap::new());
    }

    fn tick(&mut self, now: tokio::time::Instant) -> ControllerTick {
        let mut result = ControllerTick::default();
        let Some(config) = self.workloads else {
            return result;
        };
        let Some(pods) = self.types.iter().find(|t| t.is_pods()).cloned() else {
            return result;
        };
        let pending: Vec<ObjectKey> = self
            .objects
            .iter()
            .filter(|((key, _, _), stored)| {
                key == POD_KEY
                    && stored.object["spec"]["nodeName"]
                        .as_str()
                        .is_none_or(str::is_empty)
                    && stored.object["metadata"]["deletionTimestamp"].is_null()
            })
            .map(|(key, _)| key.clone())
            .collect();
        for key in pending {
            let Some(stored) = self.objects.get(&key).cloned() else {
                continue;
            };
            let Some(node) = self.pick_node(&stored.object) else {
                continue;
            };
            let mut object = stored.object;
            let at = now_rfc3339();
            object["spec"]["nodeName"] = json!(node);
            object["status"]["phase"] = json!("Running");
            set_condition(&mut object, "PodScheduled", "True", &at);
            set_condition(&mut object, "ContainersReady", "False", &at);
            set_condition(&mut object, "Ready", "False", &at);
            self.store(&pods, &key, object, "MODIFIED", stored.managers);
            self.ready_due.insert(key.clone(), now + config.ready_delay);
            result.scheduled.push((qualified_name(&key), node));
        }
        let due: Vec<ObjectKey> = self
            .ready_due
            .iter()
            .filter(|(_, at)| **at <= now)
            .map(|(key, _)| key.clone())
            .collect();
        for key in due {
            self.ready_due.remove(&key);
            let Some(stored) = self.objects.get(&key).cloned() else {
                continue;
            };
            if !stored.object["metadata"]["deletionTimestamp"].is_null() {
                continue;
            }
            let mut object = stored.object;
            let at = now_rfc3339();
            set_condition(&mut object, "ContainersReady", "True", &at);
            set_condition(&mut object, "Ready", "True", &at);
            self.store(&pods, &key, object, "MODIFIED", stored.managers);
            result.became_ready.push(qualified_name(&key));
        }
        result
    }

    /// The scheduler's choice for `pod`: a node without `spec.unschedulable`, spreading the
    /// pod's owner first, then all pods, then by name.
    fn pick_node(&self, pod: &Value) -> Option<String> {
        let owner_uid = controller_of(pod).and_then(|owner| owner["uid"].as_str());
        let running: Vec<&Value> = self
            .objects
            .iter()
            .filter(|((key, _, _), stored)| {
                key == POD_KEY && stored.object["metadata"]["deletionTimestamp"].is_null()
            })
            .map(|(_, stored)| &stored.object)
            .collect();
        self.objects
            .iter()
            .filter(|((key, _, _), stored)| {
                key == NODE_KEY && stored.object["spec"]["unschedulable"].as_bool() != Some(true)
            })
            .map(|((_, _, name), _)| {
                let on_node: Vec<&&Value> = running
                    .iter()
                    .filter(|p| p["spec"]["nodeName"].as_str() == Some(name.as_str()))
                    .collect();
                let same_owner = on_node
                    .iter()
                    .filter(|p| {
                        owner_uid.is_some()
                            && controller_of(p).and_then(|o| o["uid"].as_str()) == owner_uid
                    })
                    .count();
                (same_owner, on_node.len(), name.clone())
            })
            .min()
            .map(|(_, _, name)| name)
    }
}

/// Storage keys of the types the workload controllers read.
const POD_KEY: &str = "/pods";
const NODE_KEY: &str = "/nodes";
const PDB_KEY: &str = "policy/poddisruptionbudgets";

fn qualified_name(key: &ObjectKey) -> String {
    format!("{}/{}", key.1.as_deref().unwrap_or_default(), key.2)
}

/// The owner reference with `controller: true`, as `metav1.GetControllerOf`.
fn controller_of(object: &Value) -> Option<&Value> {
    object["metadata"]["ownerReferences"]
        .as_array()?
        .iter()
        .find(|owner| owner["controller"].as_bool() == Some(true))
}

fn pod_is_ready(pod: &Value) -> bool {
    pod["status"]["conditions"]
        .as_array()
        .is_some_and(|conditions| {
            conditions
                .iter()
                .any(|c| c["type"] == "Ready" && c["status"] == "True")
        })
}

/// Sets a pod condition, moving `lastTransitionTime` only when the status changes.
fn set_condition(pod: &mut Value, kind: &str, status: &str, at: &str) {
    if !pod["status"]["conditions"].is_array() {
        pod["status"]["conditions"] = json!([]);
    }
    let Some(conditions) = pod["status"]["conditions"].as_array_mut() else {
        return;
    };
    match conditions.iter_mut().find(|c| c["type"] == kind) {
        Some(condition) if condition["status"] == status => {}
        Some(condition) => {
            condition["status"] = json!(status);
            condition["lastTransitionTime"] = json!(at);
        }
        None => conditions.push(json!({"type": kind, "status": status, "lastTransitionTime": at})),
    }
}

/// How many Ready pods a budget's spec requires out of `expected`: `expected - maxUnavailable`,
/// or `minAvailable`; percentages are of `expected`, rounded up, as the disruption controller
/// does.
fn desired_healthy(spec: &Value, expected: usize) -> usize {
    let scaled = |value: &Value| -> usize {
        match value {
            Value::Number(n) => n.as_u64().unwrap_or(0) as usize,
            Value::String(text) => match text.strip_suffix('%') {
                Some(percent) => {
                    let percent: usize = percent.trim().parse().unwrap_or(0);
                    (expected * percent).div_ceil(100)
                }
                None => text.trim().parse().unwrap_or(0),
            },
            _ => 0,
        }
    };
    if !spec["maxUnavailable"].is_null() {
        expected.saturating_sub(scaled(&spec["maxUnavailable"]))
    } else if !spec["minAvailable"].is_null() {
        scaled(&spec["minAvailable"])
    } else {
        0
    }
}

/// Whether a `metav1.LabelSelector` selects `labels`. A missing selector selects nothing and an
/// empty one everything, as for a policy/v1 PodDisruptionBudget.
fn label_selector_matches(selector: &Value, labels: &Value) -> bool {
    if !selector.is_object() {
        return false;
    }
    let label = |key: &str| labels.get(key).and_then(Value::as_str);
    let labels_match = selector["matchLabels"].as_object().is_none_or(|wanted| {
        wanted
            .iter()
            .all(|(key, value)| label(key) == value.as_str())
    });
    let expressions_match = selector["matchExpressions"]
        .as_array()
        .is_none_or(|expressions| {
            expressions.iter().all(|expression| {
                let key = expression["key"].as_str().unwrap_or_default();
                let values: Vec<&str> = expression["values"]
                    .as_array()
                    .map(|v| v.iter().filter_map(Value::as_str).collect())
                    .unwrap_or_default();
                match expression["operator"].as_str() {
                    Some("In") => label(key).is_some_and(|l| values.contains(&l)),
                    Some("NotIn") => label(key).is_none_or(|l| !values.contains(&l)),
                    Some("Exists") => label(key).is_some(),
                    Some("DoesNotExist") => label(key).is_none(),
                    _ => false,
                }
            })
        });
    labels_match && expressions_match
}

/// Checks delete preconditions (`uid`, `resourceVersion`) against the stored object: 409 when
/// they differ, as the API server answers.
fn check_preconditions(
    route: &Route,
    object: &Value,
    preconditions: &Value,
) -> Result<(), ApiError> {
    for (field, label) in [("uid", "UID"), ("resourceVersion", "ResourceVersion")] {
        let Some(wanted) = preconditions[field].as_str() else {
            continue;
        };
        let actual = object["metadata"][field].as_str().unwrap_or_default();
        if wanted != actual {
            return Err(status_error(
                StatusCode::CONFLICT,
                "Conflict",
                &format!(
                    "Operation cannot be fulfilled on {} {:?}: Precondition failed: {label} in precondition: {wanted}, {label} in object meta: {actual}",
                    route.resource.plural,
                    route.name.as_deref().unwrap_or_default()
                ),
            ));
        }
    }
    Ok(())
}

/// Server-side apply of `applied` by `manager` onto `stored`: returns the new object and the new
/// field ownership. Fields the manager applied before and no longer applies are removed unless
/// another manager also owns them; a field owned by another manager with a different value is a
/// conflict unless `force`.
fn server_side_apply(
    route: &Route,
    stored: &Stored,
    applied: &Value,
    manager: &str,
    force: bool,
) -> Result<(Value, Managers), ApiError> {
    let mut scoped = applied.clone();
    if let Some(map) = scoped.as_object_mut() {
        for field in ["apiVersion", "kind"] {
            map.remove(field);
        }
        if let Some(meta) = map.get_mut("metadata").and_then(Value::as_object_mut) {
            meta.retain(|k, _| matches!(k.as_str(), "labels" | "annotations" | "finalizers"));
        }
        if route.resource.status_subresource {
            if route.is_status() {
                map.retain(|k, _| k == "status");
            } else {
                map.remove("status");
            }
        }
    }
    let mut new_paths = BTreeSet::new();
    leaf_paths(&scoped, &mut Vec::new(), &mut new_paths);
    let mut managers = stored.managers.clone();
    let mut object = stored.object.clone();

    let mut conflicts = Vec::new();
    for (other, owned) in &mut managers {
        if other == manager {
            continue;
        }
        let contested: Vec<Vec<String>> = owned
            .iter()
            .filter(|path| {
                new_paths.contains(*path) && value_at(&object, path) != value_at(&scoped, path)
            })
            .cloned()
            .collect();
        if !contested.is_empty() && !force {
            conflicts.extend(
                contested
                    .iter()
                    .map(|p| format!("{} (owned by {other})", p.join("."))),
            );
        } else {
            for path in contested {
                owned.remove(&path);
            }
        }
    }
    if !conflicts.is_empty() {
        return Err(status_error(
            StatusCode::CONFLICT,
            "Conflict",
            &format!(
                "Apply failed with {} conflicts: {}",
                conflicts.len(),
                conflicts.join(", ")
            ),
        ));
    }
    let previously = managers.remove(manager).unwrap_or_default();
    for path in previously.difference(&new_paths) {
        if !managers.values().any(|owned| owned.contains(path)) {
            remove_path(&mut object, path);
        }
    }
    merge_applied(&mut object, &scoped);
    managers.insert(manager.to_owned(), new_paths);
    Ok((object, managers))
}

fn leaf_paths(value: &Value, prefix: &mut Vec<String>, out: &mut BTreeSet<Vec<String>>) {
    match value {
        Value::Object(map) if !map.is_empty() => {
            for (key, child) in map {
                prefix.push(key.clone());
                leaf_paths(child, prefix, out);
                prefix.pop();
            }
        }
        // Lists are atomic (no list-map keys here); empty maps and scalars are leaves.
        _ => {
            if !prefix.is_empty() {
                out.insert(prefix.clone());
            }
        }
    }
}

fn value_at<'a>(value: &'a Value, path: &[String]) -> Option<&'a Value> {
    path.iter().try_fold(value, |v, key| v.get(key))
}

fn remove_path(value: &mut Value, path: &[String]) {
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    let mut chain: Vec<&str> = Vec::new();
    {
        let mut cursor = &mut *value;
        for key in parents {
            match cursor.get_mut(key) {
                Some(next) => cursor = next,
                None => return,
            }
            chain.push(key);
        }
        if let Some(map) = cursor.as_object_mut() {
            map.remove(last);
        }
    }
    // Drop parents the removal left empty.
    for depth in (0..parents.len()).rev() {
        let Some(parent) = value_at_mut(value, &parents[..depth]) else {
            return;
        };
        let key = &parents[depth];
        let empty = parent
            .get(key)
            .and_then(Value::as_object)
            .is_some_and(Map::is_empty);
        if empty {
            if let Some(map) = parent.as_object_mut() {
                map.remove(key);
            }
        } else {
            return;
        }
    }
}

fn value_at_mut<'a>(value: &'a mut Value, path: &[String]) -> Option<&'a mut Value> {
    path.iter().try_fold(value, |v, key| v.get_mut(key))
}

fn merge_applied(target: &mut Value, applied: &Value) {
    match (target, applied) {
        (Value::Object(target), Value::Object(applied)) => {
            for (key, value) in applied {
                match target.get_mut(key) {
                    Some(existing) if existing.is_object() && value.is_object() => {
                        merge_applied(existing, value);
                    }
                    _ => {
                        target.insert(key.clone(), value.clone());
                    }
                }
            }
        }
        (target, applied) => *target = applied.clone(),
    }
}

/// A label and field selector, as in `?labelSelector=...&fieldSelector=...`.
#[derive(Clone, Debug, Default)]
struct Selector {
    labels: Vec<Requirement>,
    fields: Vec<(String, bool, String)>,
}

#[derive(Clone, Debug)]
enum Requirement {
    Equals(String, String),
    NotEquals(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    DoesNotExist(String),
}

impl Selector {
    fn from_query(query: &BTreeMap<String, String>) -> Self {
        let labels = query
            .get("labelSelector")
            .map(|s| parse_label_selector(s))
            .unwrap_or_default();
        let fields = query
            .get("fieldSelector")
            .map(|s| {
                s.split(',')
                    .filter(|part| !part.is_empty())
                    .filter_map(|part| {
                        if let Some((k, v)) = part.split_once("!=") {
                            Some((k.to_owned(), false, v.to_owned()))
                        } else {
                            let (k, v) = part.split_once("==").or_else(|| part.split_once('='))?;
                            Some((k.to_owned(), true, v.to_owned()))
                        }
                    })
                    .collect()
            })
            .unwrap_or_default();
        Self { labels, fields }
    }

    fn matches(&self, object: &Value) -> bool {
        let labels = &object["metadata"]["labels"];
        let label = |key: &str| labels.get(key).and_then(Value::as_str);
        let labels_ok = self.labels.iter().all(|req| match req {
            Requirement::Equals(k, v) => label(k) == Some(v.as_str()),
            Requirement::NotEquals(k, v) => label(k) != Some(v.as_str()),
            Requirement::In(k, vs) => label(k).is_some_and(|l| vs.iter().any(|v| v == l)),
            Requirement::NotIn(k, vs) => label(k).is_none_or(|l| vs.iter().all(|v| v != l)),
            Requirement::Exists(k) => label(k).is_some(),
            Requirement::DoesNotExist(k) => label(k).is_none(),
        });
        labels_ok
            && self.fields.iter().all(|(path, equal, want)| {
                let mut cursor = object;
                for key in path.split('.') {
                    cursor = &cursor[key];
                }
                let got = match cursor {
                    Value::String(s) => s.clone(),
                    Value::Null => String::new(),
                    other => other.to_string(),
                };
                (got == *want) == *equal
            })
    }
}

fn parse_label_selector(text: &str) -> Vec<Requirement> {
    // Split on commas outside parentheses.
    let mut parts = Vec::new();
    let mut depth = 0;
    let mut current = String::new();
    for c in text.chars() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(std::mem::take(&mut current));
                continue;
            }
            _ => {}
        }
        current.push(c);
    }
    parts.push(current);
    parts
        .into_iter()
        .map(|p| p.trim().to_owned())
        .filter(|p| !p.is_empty())
        .map(|part| {
            let set = |rest: &str| -> Vec<String> {
                rest.trim()
                    .trim_start_matches('(')
                    .trim_end_matches(')')
                    .split(',')
                    .map(|v| v.trim().to_owned())
                    .collect()
            };
            if let Some((k, rest)) = part.split_once(" notin ") {
                Requirement::NotIn(k.trim().into(), set(rest))
            } else if let Some((k, rest)) = part.split_once(" in ") {
                Requirement::In(k.trim().into(), set(rest))
            } else if let Some((k, v)) = part.split_once("!=") {
                Requirement::NotEquals(k.trim().into(), v.trim().into())
            } else if let Some((k, v)) = part.split_once("==").or_else(|| part.split_once('=')) {
                Requirement::Equals(k.trim().into(), v.trim().into())
            } else if let Some(k) = part.strip_prefix('!') {
                Requirement::DoesNotExist(k.trim().into())
            } else {
                Requirement::Exists(part)
            }
        })
        .collect()
}

fn parse_query(query: &str) -> BTreeMap<String, String> {
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => match u8::from_str_radix(&text[i + 1..i + 3], 16) {
                Ok(byte) => {
                    out.push(byte);
                    i += 2;
                }
                Err(_) => out.push(b'%'),
            },
            other => out.push(other),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn flag(query: &BTreeMap<String, String>, name: &str) -> bool {
    query.get(name).is_some_and(|v| v == "true" || v == "1")
}

fn parse_body(body: &[u8]) -> Result<Value, ApiError> {
    // Apply patches are YAML on the wire; every YAML a client sends us is JSON-compatible.
    serde_json::from_slice(body)
        .or_else(|_| serde_yaml::from_slice::<Value>(body))
        .map_err(|e| {
            status_error(
                StatusCode::BAD_REQUEST,
                "BadRequest",
                &format!("cannot decode body: {e}"),
            )
        })
}

fn conflict(route: &Route) -> ApiError {
    status_error(
        StatusCode::CONFLICT,
        "Conflict",
        &format!(
            "Operation cannot be fulfilled on {}.{} {:?}: the object has been modified; please apply your changes to the latest version and try again",
            route.resource.plural,
            route.resource.group,
            route.name.as_deref().unwrap_or_default()
        ),
    )
}

/// A failed request, answered as a `Status` object.
#[derive(Debug)]
struct ApiError {
    code: StatusCode,
    reason: &'static str,
    message: String,
    /// `details` of the Status (e.g. the causes of a refused eviction); null for none.
    details: Value,
}

impl ApiError {
    fn into_response(self) -> Response<ApiBody> {
        let mut status = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code.as_u16(),
        });
        if !self.details.is_null() {
            status["details"] = self.details;
        }
        json_response(self.code, &status)
    }
}

fn status_error(code: StatusCode, reason: &'static str, message: &str) -> ApiError {
    ApiError {
        code,
        reason,
        message: message.to_owned(),
        details: Value::Null,
    }
}

/// `/api/v1/namespaces/NS/services/NAME[:PORT]/proxy/REST` as (namespace, service, port name,
/// rest); the port defaults to `http`.
fn proxy_route(path: &str) -> Option<(String, String, String, String)> {
    let rest = path.strip_prefix("/api/v1/namespaces/")?;
    let (namespace, rest) = rest.split_once('/')?;
    let rest = rest.strip_prefix("services/")?;
    let (service, rest) = rest.split_once('/')?;
    let tail = rest
        .strip_prefix("proxy")
        .filter(|t| t.is_empty() || t.starts_with('/'))?;
    let (name, port) = service.split_once(':').unwrap_or((service, "http"));
    Some((
        namespace.to_owned(),
        name.to_owned(),
        port.to_owned(),
        tail.trim_start_matches('/').to_owned(),
    ))
}

/// Forwards one request to a real HTTP/1 server and returns its answer.
async fn forward(
    backend: SocketAddr,
    method: &Method,
    path: &str,
) -> io::Result<Response<ApiBody>> {
    let stream = tokio::net::TcpStream::connect(backend).await?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .map_err(io::Error::other)?;
    tokio::spawn(connection);
    let request = Request::builder()
        .method(method.clone())
        .uri(path)
        .header(http::header::HOST, backend.to_string())
        .body(Full::new(Bytes::new()))
        .map_err(io::Error::other)?;
    let response = sender
        .send_request(request)
        .await
        .map_err(io::Error::other)?;
    let (parts, body) = response.into_parts();
    let bytes = body.collect().await.map_err(io::Error::other)?.to_bytes();
    let mut builder = Response::builder().status(parts.status);
    if let Some(content_type) = parts.headers.get(http::header::CONTENT_TYPE) {
        builder = builder.header(http::header::CONTENT_TYPE, content_type);
    }
    builder
        .body(
            Full::new(bytes)
                .map_err(|never: Infallible| match never {})
                .boxed(),
        )
        .map_err(io::Error::other)
}

fn json_response(code: StatusCode, value: &Value) -> Response<ApiBody> {
    Response::builder()
        .status(code)
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(
            Full::new(Bytes::from(value.to_string()))
                .map_err(|never: Infallible| match never {})
                .boxed(),
        )
        .expect("valid response")
}

fn now_rfc3339() -> String {
    humantime::format_rfc3339_seconds(SystemTime::now()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_selectors_parse_and_match() {
        let object = json!({"metadata": {"labels": {"app": "nats", "tier": "data"}}});
        let cases = [
            ("app=nats", true),
            ("app==nats,tier=data", true),
            ("app!=nats", false),
            ("app in (nats, gateway)", true),
            ("app notin (nats)", false),
            ("tier", true),
            ("!tier", false),
            ("!zone", true),
        ];
        for (text, want) in cases {
            let selector = Selector {
                labels: parse_label_selector(text),
                fields: vec![],
            };
            assert_eq!(selector.matches(&object), want, "{text}");
        }
    }

    #[test]
    fn service_proxy_paths_parse_with_and_without_a_port() {
        assert_eq!(
            proxy_route("/api/v1/namespaces/fs/services/ctl:http/proxy/runs/r1/report.html"),
            Some((
                "fs".into(),
                "ctl".into(),
                "http".into(),
                "runs/r1/report.html".into()
            ))
        );
        assert_eq!(
            proxy_route("/api/v1/namespaces/fs/services/ctl/proxy/"),
            Some(("fs".into(), "ctl".into(), "http".into(), String::new()))
        );
        assert_eq!(proxy_route("/api/v1/namespaces/fs/services/ctl"), None);
        assert_eq!(
            proxy_route("/api/v1/namespaces/fs/services/ctl/proxyx"),
            None
        );
    }

    #[test]
    fn query_strings_decode() {
        let query = parse_query("labelSelector=app%3Dnats%2Ctier+in+%28a%29&watch=true");
        assert_eq!(query["labelSelector"], "app=nats,tier in (a)");
        assert!(flag(&query, "watch"));
    }

    /// Sends one request straight to the server's handler and decodes the answer.
    fn call(api: &MemoryApi, method: &str, path: &str, body: &Value) -> (u16, Value) {
        let method = Method::from_bytes(method.as_bytes()).expect("method");
        let uri: http::Uri = path.parse().expect("uri");
        let body = if body.is_null() {
            Vec::new()
        } else {
            body.to_string().into_bytes()
        };
        let response = api.handle(&method, &uri, &http::HeaderMap::new(), &body);
        let code = response.status().as_u16();
        let bytes = futures::executor::block_on(response.into_body().collect())
            .expect("body")
            .to_bytes();
        (code, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
    }

    fn node(api: &MemoryApi, name: &str, unschedulable: bool) {
        api.put(json!({"apiVersion": "v1", "kind": "Node",
            "metadata": {"name": name}, "spec": {"unschedulable": unschedulable}}));
    }

    /// A pod of ReplicaSet `web-rs` (or of `owner_kind`), Ready or not, on `node`.
    fn pod(api: &MemoryApi, name: &str, node: &str, ready: bool, owner_kind: &str) -> Value {
        api.put(json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": "shop", "generateName": "web-",
                "labels": {"app": "web"},
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": owner_kind,
                    "name": "web-rs", "uid": "rs-uid", "controller": true}]},
            "spec": {"nodeName": node, "containers": [{"name": "c", "image": "web"}]},
            "status": {"phase": "Running", "conditions": [
                {"type": "Ready", "status": if ready { "True" } else { "False" }}]}}))
    }

    fn budget(api: &MemoryApi, name: &str, spec: Value) {
        let mut spec = spec;
        spec["selector"] = json!({"matchLabels": {"app": "web"}});
        api.put(
            json!({"apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
            "metadata": {"name": name, "namespace": "shop"}, "spec": spec}),
        );
    }

    fn eviction(name: &str) -> Value {
        json!({"apiVersion": "policy/v1", "kind": "Eviction",
            "metadata": {"name": name, "namespace": "shop"}})
    }

    const EVICT_W1: &str = "/api/v1/namespaces/shop/pods/w1/eviction";

    #[test]
    fn an_eviction_is_refused_with_429_while_the_budget_would_be_violated() {
        // (budget spec or null, readiness of w1 w2 w3, expected code). w1 is the one evicted.
        let cases = [
            (Value::Null, [true, true, true], 201),
            (json!({"minAvailable": 2}), [true, true, true], 201),
            (json!({"minAvailable": 2}), [true, true, false], 429),
            (json!({"minAvailable": 2}), [false, true, true], 201),
            (json!({"minAvailable": 3}), [false, true, true], 429),
            (json!({"minAvailable": "50%"}), [true, true, false], 429),
            (json!({"minAvailable": "50%"}), [true, true, true], 201),
            (json!({"maxUnavailable": 1}), [true, true, true], 201),
            (json!({"maxUnavailable": 0}), [true, true, true], 429),
            (json!({"maxUnavailable": "34%"}), [true, true, true], 201),
            (json!({"maxUnavailable": "33%"}), [true, true, false], 429),
            (
                json!({"minAvailable": 3, "unhealthyPodEvictionPolicy": "AlwaysAllow"}),
                [false, true, true],
                201,
            ),
        ];
        for (spec, ready, want) in cases {
            let api = MemoryApi::new();
            for (i, ready) in ready.iter().enumerate() {
                pod(&api, &format!("w{}", i + 1), "n1", *ready, "ReplicaSet");
            }
            if !spec.is_null() {
                budget(&api, "web-pdb", spec.clone());
            }
            let (code, status) = call(&api, "POST", EVICT_W1, &eviction("w1"));
            assert_eq!(code, want, "{spec} {ready:?}: {status}");
            let gone = api.get("v1", "pods", Some("shop"), "w1").is_none();
            assert_eq!(gone, want == 201, "{spec} {ready:?}");
            if want == 429 {
                assert_eq!(status["reason"], "TooManyRequests");
                assert_eq!(status["details"]["causes"][0]["reason"], "DisruptionBudget");
                let message = status["details"]["causes"][0]["message"]
                    .as_str()
                    .expect("cause message");
                assert!(
                    message.starts_with("The disruption budget web-pdb needs"),
                    "{message}"
                );
            }
        }
    }

    #[test]
    fn finished_and_terminating_pods_bypass_the_budget_and_two_budgets_are_an_error() {
        let api = MemoryApi::new();
        pod(&api, "w1", "n1", false, "ReplicaSet");
        let mut done = api.get("v1", "pods", Some("shop"), "w1").expect("w1");
        done["status"]["phase"] = json!("Succeeded");
        api.put(done);
        budget(&api, "web-pdb", json!({"maxUnavailable": 0}));
        assert_eq!(call(&api, "POST", EVICT_W1, &eviction("w1")).0, 201);

        pod(&api, "w1", "n1", true, "ReplicaSet");
        budget(&api, "web-pdb-2", json!({"maxUnavailable": 0}));
        let (code, status) = call(&api, "POST", EVICT_W1, &eviction("w1"));
        assert_eq!(code, 500, "{status}");
        assert!(status["message"]
            .as_str()
            .is_some_and(|m| m.contains("more than one PodDisruptionBudget")));
    }

    #[test]
    fn the_eviction_body_must_name_the_pod_and_its_delete_preconditions_are_honoured() {
        let api = MemoryApi::new();
        let w1 = pod(&api, "w1", "n1", true, "ReplicaSet");
        let (code, status) = call(&api, "POST", EVICT_W1, &eviction("w2"));
        assert_eq!(code, 400, "{status}");
        let (code, _) = call(
            &api,
            "POST",
            "/api/v1/namespaces/shop/pods/nope/eviction",
            &eviction("nope"),
        );
        assert_eq!(code, 404);

        let mut stale = eviction("w1");
        stale["deleteOptions"] = json!({"preconditions": {"uid": "not-w1"}});
        let (code, status) = call(&api, "POST", EVICT_W1, &stale);
        assert_eq!(code, 409, "{status}");
        assert!(api.get("v1", "pods", Some("shop"), "w1").is_some());

        // kube 5's `Api::evict` spells the key `delete_options`: the server does not know the
        // field, so the precondition is silently dropped and the pod goes anyway.
        let snake = json!({"metadata": {"name": "w1"},
            "delete_options": {"preconditions": {"uid": "not-w1"}}});
        let (code, status) = call(&api, "POST", EVICT_W1, &snake);
        assert_eq!(code, 201, "{status}");
        assert!(api.get("v1", "pods", Some("shop"), "w1").is_none());

        let w1_uid = w1["metadata"]["uid"].as_str().expect("uid");
        pod(&api, "w1", "n1", true, "ReplicaSet");
        let (code, _) = call(
            &api,
            "DELETE",
            "/api/v1/namespaces/shop/pods/w1",
            &json!({"gracePeriodSeconds": 0, "preconditions": {"uid": w1_uid}}),
        );
        assert_eq!(
            code, 409,
            "a recreated pod of the same name has another uid"
        );
    }

    #[test]
    fn a_deleted_replica_is_replaced_and_scheduled_on_a_schedulable_node() {
        let api = MemoryApi::new();
        node(&api, "n1", true);
        node(&api, "n2", false);
        node(&api, "n3", false);
        pod(&api, "w1", "n1", true, "ReplicaSet");
        pod(&api, "w2", "n2", true, "ReplicaSet");
        pod(&api, "d1", "n1", true, "DaemonSet");

        // Off by default: a deletion is only a deletion.
        assert_eq!(
            call(
                &api,
                "DELETE",
                "/api/v1/namespaces/shop/pods/d1",
                &Value::Null
            )
            .0,
            200
        );
        assert_eq!(api.list("v1", "pods").len(), 2);
        assert_eq!(api.tick(), ControllerTick::default());

        api.enable_workload_controllers(WorkloadControllers {
            ready_delay: Duration::ZERO,
        });
        assert_eq!(call(&api, "POST", EVICT_W1, &eviction("w1")).0, 201);
        let replacement = api
            .list("v1", "pods")
            .into_iter()
            .find(|p| {
                p["metadata"]["name"]
                    .as_str()
                    .is_some_and(|n| n.starts_with("web-"))
            })
            .expect("a replacement");
        let name = replacement["metadata"]["name"]
            .as_str()
            .expect("name")
            .to_owned();
        assert_eq!(replacement["status"]["phase"], "Pending");
        assert!(replacement["spec"]["nodeName"].is_null());
        assert!(!pod_is_ready(&replacement));
        assert_eq!(replacement["metadata"]["labels"]["app"], "web");

        let tick = api.tick();
        // n1 is cordoned and n2 already runs a replica of web-rs.
        assert_eq!(
            tick.scheduled,
            vec![(format!("shop/{name}"), "n3".to_owned())]
        );
        assert_eq!(tick.became_ready, vec![format!("shop/{name}")]);
        let scheduled = api
            .get("v1", "pods", Some("shop"), &name)
            .expect("replacement");
        assert!(pod_is_ready(&scheduled));

        // Nowhere to go: the replacement waits, Pending, until a node is schedulable again.
        node(&api, "n2", true);
        node(&api, "n3", true);
        call(
            &api,
            "DELETE",
            "/api/v1/namespaces/shop/pods/w2",
            &Value::Null,
        );
        assert!(api.tick().scheduled.is_empty());
        node(&api, "n1", false);
        let tick = api.tick();
        assert_eq!(tick.scheduled.len(), 1);
        assert_eq!(tick.scheduled[0].1, "n1");
    }

    #[test]
    fn ready_flips_only_after_the_delay() {
        let api = MemoryApi::new();
        api.enable_workload_controllers(WorkloadControllers {
            ready_delay: Duration::from_secs(3600),
        });
        node(&api, "n1", false);
        pod(&api, "w1", "n1", true, "Deployment");
        call(
            &api,
            "DELETE",
            "/api/v1/namespaces/shop/pods/w1",
            &Value::Null,
        );
        let tick = api.tick();
        assert_eq!(tick.scheduled.len(), 1);
        assert!(tick.became_ready.is_empty());
        let later = tokio::time::Instant::now() + Duration::from_secs(3600);
        assert_eq!(api.state().tick(later).became_ready.len(), 1);
    }

    #[test]
    fn removing_a_path_prunes_empty_parents() {
        let mut value = json!({"status": {"nodes": {"n1": {"lastError": "x"}}, "keep": 1}});
        remove_path(
            &mut value,
            &[
                "status".into(),
                "nodes".into(),
                "n1".into(),
                "lastError".into(),
            ],
        );
        assert_eq!(value, json!({"status": {"keep": 1}}));
    }
}
