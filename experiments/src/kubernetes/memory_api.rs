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
//! unless forced); optimistic concurrency on `resourceVersion`. It can also become unreachable,
//! which ends open watches and refuses connections, as a partition from the control plane does.
//!
//! What it leaves out: admission, validation against schemas, pagination (lists are complete),
//! protobuf, and strategic merge patch beyond the JSON merge rules.

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
                                Ok::<_, Infallible>(api.handle(
                                    &parts.method,
                                    &parts.uri,
                                    &parts.headers,
                                    &body,
                                ))
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

    /// Handles one request: the whole server.
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
                (Method::PUT, true) => state.replace(&route, body),
                (Method::PATCH, true) => state.patch(&route, body, content_type.as_deref(), &query),
                (Method::DELETE, true) => state.delete(&route),
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
            Ok(api.handle(&parts.method, &parts.uri, &parts.headers, &body))
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

    fn delete(&mut self, route: &Route) -> Result<(StatusCode, Value), ApiError> {
        let stored = self.existing(route)?;
        let has_finalizers = stored.object["metadata"]["finalizers"]
            .as_array()
            .is_some_and(|f| !f.is_empty());
        if has_finalizers {
            if stored.object["metadata"]["deletionTimestamp"].is_null() {
                let mut object = stored.object.clone();
                object["metadata"]["deletionTimestamp"] = json!(now_rfc3339());
                object["metadata"]["deletionGracePeriodSeconds"] = json!(0);
                let key = route.key();
                let stored_object =
                    self.store(&route.resource, &key, object, "MODIFIED", stored.managers);
                return Ok((StatusCode::OK, stored_object));
            }
            return Ok((StatusCode::OK, stored.object));
        }
        let key = route.key();
        self.delete_now(&route.resource, &key);
        let mut object = stored.object;
        object["metadata"]["resourceVersion"] = json!(self.rv.to_string());
        Ok((StatusCode::OK, object))
    }
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
}

impl ApiError {
    fn into_response(self) -> Response<ApiBody> {
        json_response(
            self.code,
            &json!({
                "kind": "Status",
                "apiVersion": "v1",
                "metadata": {},
                "status": "Failure",
                "message": self.message,
                "reason": self.reason,
                "code": self.code.as_u16(),
            }),
        )
    }
}

fn status_error(code: StatusCode, reason: &'static str, message: &str) -> ApiError {
    ApiError {
        code,
        reason,
        message: message.to_owned(),
    }
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
    fn query_strings_decode() {
        let query = parse_query("labelSelector=app%3Dnats%2Ctier+in+%28a%29&watch=true");
        assert_eq!(query["labelSelector"], "app=nats,tier in (a)");
        assert!(flag(&query, "watch"));
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
