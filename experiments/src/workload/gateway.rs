//! The tenant gateway: the lab's reference implementation of the HTTP tenant-records contract
//! ([`super::contract`]) on top of NATS JetStream. Stateless; one replica per zone. Each tenant
//! is one stream (`FL_<tenant>`, subjects `tenant.<tenant>.>`), the same layout the NATS
//! adapter uses.
//!
//! Writes are JetStream publishes with `Nats-Msg-Id` = the `Idempotency-Key`, so a retried
//! request is stored once. The gateway answers 201 only after the publish was acknowledged,
//! 503 when the write certainly did not happen (not connected to NATS, no responders, a
//! rejection before storing), and 504/502 when it may have (no ack in time, other errors). With
//! `unsafe_ack` it answers 201 as soon as the publish was handed to the connection, before
//! anything is stored: a deliberately broken mode, the negative control for the checkers.
//!
//! Reads are direct gets from the NATS server the gateway is connected to, preferring a server
//! in its own zone, so each gateway shows its zone's replica's view.
//!
//! `GET /v1/tenants/{tenant}/chat` upgrades to the chat WebSocket: each frame is a write or a
//! read, handled exactly as the HTTP requests are, answered by one frame on the same socket.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::context::CreateStreamErrorKind;
use async_nats::jetstream::message::PublishMessage;
use async_nats::jetstream::stream::DirectGetErrorKind;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde::Serialize;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::contract::{
    valid_id, valid_kind, valid_tenant, ChatReply, ChatRequest, ErrorBody, RecordItem, RecordList,
    Stored, WriteAck, IDEMPOTENCY_HEADER, KIND_HEADER, MAX_READ_LIMIT, SERVED_BY_HEADER,
    TENANT_HEADER,
};
use super::nats::{stream_config, ConnectSpec, NatsConn, PublishFailure};
use super::schedule::{stream_name, subject, tenant_of_subject};
use super::target::prefer_near;
use super::WorkloadError;
use crate::history::Outcome;

/// Largest record the gateway accepts.
pub const MAX_RECORD_BYTES: usize = 512 * 1024;

/// How the gateway runs.
#[derive(Clone, Debug)]
pub struct GatewayConfig {
    /// Where to listen.
    pub listen: SocketAddr,
    /// NATS server URLs.
    pub nats: Vec<String>,
    /// The node it runs on, reported in `X-Served-By`.
    pub node: String,
    /// Prefer NATS servers in this address's /24 (the gateway's zone).
    pub prefer: Option<Ipv4Addr>,
    /// Replicas of the streams it creates when provisioning.
    pub replicas: usize,
    /// How long to wait for a publish ack (and for NATS requests).
    pub ack_timeout: Duration,
    /// Answer 201 before the write is stored (a broken mode for negative controls).
    pub unsafe_ack: bool,
}

struct Gateway {
    nats: NatsConn,
    node: String,
    replicas: usize,
    unsafe_ack: bool,
    /// Ends the chat sockets, which outlive their HTTP connection's graceful shutdown.
    shutdown: CancellationToken,
}

/// Why a write or a read was not served: the HTTP status, whether anything was stored, and what
/// went wrong. The same over HTTP and on the chat socket.
struct Refusal {
    status: StatusCode,
    stored: Stored,
    message: String,
}

impl Refusal {
    fn new(status: StatusCode, stored: Stored, message: impl Into<String>) -> Self {
        Self {
            status,
            stored,
            message: message.into(),
        }
    }
}

/// Runs the gateway until `shutdown`. The NATS connection is retried in the background, so the
/// gateway starts (and answers `/healthz` with 503) before NATS is up.
pub async fn serve(
    config: GatewayConfig,
    shutdown: CancellationToken,
) -> Result<(), WorkloadError> {
    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|e| WorkloadError::Gateway(format!("cannot listen on {}: {e}", config.listen)))?;
    serve_on(listener, config, shutdown).await
}

/// Like [`serve`], on a listener the caller bound.
pub async fn serve_on(
    listener: TcpListener,
    config: GatewayConfig,
    shutdown: CancellationToken,
) -> Result<(), WorkloadError> {
    if config.nats.is_empty() {
        return Err(WorkloadError::Config(
            "the gateway needs at least one --nats URL".to_owned(),
        ));
    }
    let urls = prefer_near(&config.nats, config.prefer);
    let spec = ConnectSpec {
        urls,
        name: format!("tenant-gateway {}", config.node),
        connect_timeout: Duration::from_secs(2),
        op_timeout: config.ack_timeout,
        // A dead server is noticed within seconds, so the gateway reconnects and its health
        // reflects it, as a production service should.
        ping_interval: super::nats::DEFAULT_PING_INTERVAL,
        pinned_node: None,
        retry_initial: true,
    };
    let nats = NatsConn::connect(&spec, Arc::new(HashMap::new()))
        .await
        .map_err(|e| WorkloadError::Gateway(format!("NATS: {e}")))?;
    let gateway = Arc::new(Gateway {
        nats,
        node: config.node.clone(),
        replicas: config.replicas,
        unsafe_ack: config.unsafe_ack,
        shutdown: shutdown.clone(),
    });
    stderr_line!(
        "tenant-gateway: listening on {} (node {}, NATS {}{})",
        config.listen,
        config.node,
        spec.urls.join(","),
        if config.unsafe_ack {
            ", UNSAFE ACKS"
        } else {
            ""
        }
    );
    let connections = tokio_util::task::TaskTracker::new();
    loop {
        let accepted = tokio::select! {
            () = shutdown.cancelled() => break,
            a = listener.accept() => a,
        };
        let Ok((stream, _)) = accepted else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let _ = stream.set_nodelay(true);
        let gateway = gateway.clone();
        let stop = shutdown.clone();
        connections.spawn(async move {
            let service = service_fn(move |request| {
                let gateway = gateway.clone();
                async move { Ok::<_, Infallible>(gateway.handle(request).await) }
            });
            let connection = http1::Builder::new()
                .keep_alive(true)
                .serve_connection(TokioIo::new(stream), service)
                .with_upgrades();
            tokio::pin!(connection);
            tokio::select! {
                _ = connection.as_mut() => {}
                () = stop.cancelled() => connection.as_mut().graceful_shutdown(),
            }
        });
    }
    connections.close();
    let _ = tokio::time::timeout(Duration::from_secs(2), connections.wait()).await;
    Ok(())
}

fn json<T: Serialize>(status: StatusCode, node: &str, body: &T) -> Response<Full<Bytes>> {
    let bytes = serde_json::to_vec(body).unwrap_or_default();
    let mut response = Response::new(Full::new(Bytes::from(bytes)));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    if let Ok(v) = hyper::header::HeaderValue::from_str(node) {
        headers.insert(SERVED_BY_HEADER, v);
    }
    response
}

fn error(
    status: StatusCode,
    node: &str,
    stored: Stored,
    message: impl Into<String>,
) -> Response<Full<Bytes>> {
    json(
        status,
        node,
        &ErrorBody {
            error: message.into(),
            stored,
        },
    )
}

fn query_u64(query: Option<&str>, key: &str) -> Option<u64> {
    query?
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == key)
        .and_then(|(_, v)| v.parse().ok())
}

/// The route of a request.
#[derive(Debug, PartialEq, Eq)]
enum Route<'a> {
    Health,
    Tenant(&'a str),
    Records(&'a str),
    Chat(&'a str),
    NotFound,
}

fn route(path: &str) -> Route<'_> {
    if path == "/healthz" {
        return Route::Health;
    }
    let Some(rest) = path.strip_prefix("/v1/tenants/") else {
        return Route::NotFound;
    };
    match rest.split_once('/') {
        None if !rest.is_empty() => Route::Tenant(rest),
        Some((tenant, "records")) if !tenant.is_empty() => Route::Records(tenant),
        Some((tenant, "chat")) if !tenant.is_empty() => Route::Chat(tenant),
        _ => Route::NotFound,
    }
}

impl Gateway {
    async fn handle(self: &Arc<Self>, request: Request<Incoming>) -> Response<Full<Bytes>> {
        let node = self.node.as_str();
        let path = request.uri().path().to_owned();
        let tenant = match route(&path) {
            Route::Health => return self.health(),
            Route::NotFound => {
                return error(
                    StatusCode::NOT_FOUND,
                    node,
                    Stored::No,
                    format!("no route {path}"),
                )
            }
            Route::Tenant(t) | Route::Records(t) | Route::Chat(t) => t.to_owned(),
        };
        if !valid_tenant(&tenant) {
            return error(
                StatusCode::BAD_REQUEST,
                node,
                Stored::No,
                format!("invalid tenant id `{tenant}`"),
            );
        }
        let header = request
            .headers()
            .get(TENANT_HEADER)
            .and_then(|v| v.to_str().ok());
        if header != Some(tenant.as_str()) {
            return error(
                StatusCode::BAD_REQUEST,
                node,
                Stored::No,
                format!("the {TENANT_HEADER} header ({header:?}) must equal the tenant in the path ({tenant})"),
            );
        }
        if matches!(route(&path), Route::Chat(_)) {
            return self.upgrade(tenant, request);
        }
        let records = matches!(route(&path), Route::Records(_));
        match (request.method().clone(), records) {
            (Method::PUT, false) => self.provision(&tenant).await,
            (Method::DELETE, false) => self.deprovision(&tenant).await,
            (Method::POST, true) => self.write(&tenant, request).await,
            (Method::GET, true) => {
                let query = request.uri().query();
                let from = query_u64(query, "from_seq").unwrap_or(1).max(1);
                let limit = query_u64(query, "limit")
                    .unwrap_or(100)
                    .clamp(1, u64::from(MAX_READ_LIMIT));
                self.read(&tenant, from, limit).await
            }
            (method, _) => error(
                StatusCode::METHOD_NOT_ALLOWED,
                node,
                Stored::No,
                format!("{method} not allowed on {path}"),
            ),
        }
    }

    fn connected(&self) -> bool {
        self.nats.client.connection_state() == async_nats::connection::State::Connected
    }

    fn health(&self) -> Response<Full<Bytes>> {
        if self.connected() {
            json(
                StatusCode::OK,
                &self.node,
                &serde_json::json!({"status": "ok", "node": self.node, "nats": self.nats.client.server_info().server_name}),
            )
        } else {
            error(
                StatusCode::SERVICE_UNAVAILABLE,
                &self.node,
                Stored::No,
                "not connected to NATS",
            )
        }
    }

    async fn provision(&self, tenant: &str) -> Response<Full<Bytes>> {
        // JetStream answers a create of an identical stream with success, so the contract's
        // "200 already there" needs a look first.
        if self.nats.js.get_stream(stream_name(tenant)).await.is_ok() {
            return json(
                StatusCode::OK,
                &self.node,
                &serde_json::json!({"tenant": tenant, "created": false}),
            );
        }
        match self
            .nats
            .js
            .create_stream(stream_config(tenant, self.replicas))
            .await
        {
            Ok(_) => json(
                StatusCode::CREATED,
                &self.node,
                &serde_json::json!({"tenant": tenant, "created": true}),
            ),
            Err(e) => match e.kind() {
                CreateStreamErrorKind::JetStream(js) if js.error_code().0 == 10058 => json(
                    StatusCode::OK,
                    &self.node,
                    &serde_json::json!({"tenant": tenant, "created": false}),
                ),
                _ => error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    &self.node,
                    Stored::Unknown,
                    format!("cannot provision {tenant}: {e}"),
                ),
            },
        }
    }

    async fn deprovision(&self, tenant: &str) -> Response<Full<Bytes>> {
        match self.nats.js.delete_stream(stream_name(tenant)).await {
            Ok(_) => no_content(&self.node),
            Err(e) => match e.kind() {
                async_nats::jetstream::context::DeleteStreamErrorKind::JetStream(js)
                    if js.error_code().0 == 10059 =>
                {
                    no_content(&self.node)
                }
                _ => error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    &self.node,
                    Stored::Unknown,
                    format!("cannot delete {tenant}: {e}"),
                ),
            },
        }
    }

    async fn write(&self, tenant: &str, request: Request<Incoming>) -> Response<Full<Bytes>> {
        let node = self.node.as_str();
        let header = |name: &str| {
            request
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let Some(id) = header(IDEMPOTENCY_HEADER).filter(|id| valid_id(id)) else {
            return error(
                StatusCode::BAD_REQUEST,
                node,
                Stored::No,
                format!("a valid {IDEMPOTENCY_HEADER} header is required"),
            );
        };
        let kind = header(KIND_HEADER).unwrap_or_else(|| "record".to_owned());
        if !valid_kind(&kind) {
            return error(
                StatusCode::BAD_REQUEST,
                node,
                Stored::No,
                format!("invalid {KIND_HEADER} `{kind}`"),
            );
        }
        let body = match Limited::new(request.into_body(), MAX_RECORD_BYTES)
            .collect()
            .await
        {
            Ok(b) => b.to_bytes(),
            Err(e) => {
                return error(
                    StatusCode::BAD_REQUEST,
                    node,
                    Stored::No,
                    format!("cannot read the record: {e}"),
                )
            }
        };
        match self.store(tenant, id, &kind, body).await {
            Ok(ack) => json(StatusCode::CREATED, node, &ack),
            Err(r) => error(r.status, node, r.stored, r.message),
        }
    }

    /// Stores one record: the acknowledgement, or why not.
    async fn store(
        &self,
        tenant: &str,
        id: String,
        kind: &str,
        body: Bytes,
    ) -> Result<WriteAck, Refusal> {
        if !self.connected() {
            return Err(Refusal::new(
                StatusCode::SERVICE_UNAVAILABLE,
                Stored::No,
                "not connected to NATS; not stored",
            ));
        }
        let message = PublishMessage::build().payload(body).message_id(&id);
        let ack = match self
            .nats
            .js
            .send_publish(subject(tenant, kind), message)
            .await
        {
            Ok(ack) => ack,
            Err(e) => {
                return Err(Refusal::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    Stored::No,
                    format!("not sent: {e}"),
                ))
            }
        };
        if self.unsafe_ack {
            // Deliberately broken: acknowledge before anything is stored.
            drop(ack);
            return Ok(WriteAck {
                tenant: tenant.to_owned(),
                id,
                seq: None,
                duplicate: false,
            });
        }
        Self::answer(tenant, id, ack.await)
    }

    /// The answer to a write, from its publish acknowledgement.
    fn answer(
        tenant: &str,
        id: String,
        ack: Result<
            async_nats::jetstream::publish::PublishAck,
            async_nats::jetstream::context::PublishError,
        >,
    ) -> Result<WriteAck, Refusal> {
        match ack {
            Ok(ack) => Ok(WriteAck {
                tenant: tenant.to_owned(),
                id,
                seq: Some(ack.sequence),
                duplicate: ack.duplicate,
            }),
            Err(e) => {
                let failure = PublishFailure::from_ack_error(&e);
                let status = match (failure.outcome(), &failure) {
                    (Outcome::Fail, _) => StatusCode::SERVICE_UNAVAILABLE,
                    (_, PublishFailure::AckTimeout) => StatusCode::GATEWAY_TIMEOUT,
                    _ => StatusCode::BAD_GATEWAY,
                };
                let stored = if status == StatusCode::SERVICE_UNAVAILABLE {
                    Stored::No
                } else {
                    Stored::Unknown
                };
                Err(Refusal::new(status, stored, failure.describe()))
            }
        }
    }

    async fn read(&self, tenant: &str, from: u64, limit: u64) -> Response<Full<Bytes>> {
        match self.fetch(tenant, from, limit).await {
            Ok(list) => json(StatusCode::OK, &self.node, &list),
            Err(r) => error(r.status, &self.node, r.stored, r.message),
        }
    }

    /// Reads up to `limit` of a tenant's records from position `from` on.
    async fn fetch(&self, tenant: &str, from: u64, limit: u64) -> Result<RecordList, Refusal> {
        let stream = match self.nats.js.get_stream_no_info(stream_name(tenant)).await {
            Ok(s) => s,
            Err(e) => {
                return Err(Refusal::new(
                    StatusCode::BAD_REQUEST,
                    Stored::No,
                    e.to_string(),
                ))
            }
        };
        let mut records = Vec::new();
        let mut seq = from;
        let mut more = false;
        loop {
            if records.len() as u64 >= limit {
                more = true;
                break;
            }
            match stream.direct_get(seq).await {
                Ok(message) => {
                    let owner = tenant_of_subject(message.subject.as_str()).unwrap_or_default();
                    let id = message
                        .headers
                        .get("Nats-Msg-Id")
                        .map(|v| v.as_str().to_owned())
                        .unwrap_or_default();
                    if owner != tenant {
                        // Never serve another tenant's record, whatever the stream says.
                        return Err(Refusal::new(
                            StatusCode::INTERNAL_SERVER_ERROR,
                            Stored::No,
                            format!(
                                "record {seq} of stream {} belongs to tenant `{owner}`",
                                stream_name(tenant)
                            ),
                        ));
                    }
                    records.push(RecordItem {
                        seq: message.sequence,
                        id,
                    });
                }
                Err(e) if e.kind() == DirectGetErrorKind::NotFound => break,
                Err(e) => {
                    return Err(Refusal::new(
                        StatusCode::SERVICE_UNAVAILABLE,
                        Stored::No,
                        format!("read {tenant} at {seq}: {e}"),
                    ));
                }
            }
            seq += 1;
        }
        Ok(RecordList {
            tenant: tenant.to_owned(),
            records,
            next_seq: seq,
            more,
        })
    }

    /// Answers a chat socket's upgrade request: 101 and the socket served in its own task, or
    /// why not (426 without an upgrade, 400 for a bad handshake, 503 while it cannot serve).
    fn upgrade(
        self: &Arc<Self>,
        tenant: String,
        mut request: Request<Incoming>,
    ) -> Response<Full<Bytes>> {
        let node = self.node.as_str();
        if request.method() != Method::GET {
            return error(
                StatusCode::METHOD_NOT_ALLOWED,
                node,
                Stored::No,
                format!(
                    "{} not allowed on the chat socket; GET with Upgrade: websocket",
                    request.method()
                ),
            );
        }
        let accept = match websocket_accept(request.headers()) {
            Ok(accept) => accept,
            Err((status, why)) => return error(status, node, Stored::No, why),
        };
        if !self.connected() {
            // Refused before the upgrade, so a client sees at once that this replica cannot
            // serve and tries another.
            return error(
                StatusCode::SERVICE_UNAVAILABLE,
                node,
                Stored::No,
                "not connected to NATS",
            );
        }
        let gateway = self.clone();
        let upgraded = hyper::upgrade::on(&mut request);
        tokio::spawn(async move {
            if let Ok(upgraded) = upgraded.await {
                gateway.chat(&tenant, TokioIo::new(upgraded)).await;
            }
        });
        let mut response = Response::new(Full::new(Bytes::new()));
        *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        let headers = response.headers_mut();
        headers.insert(
            hyper::header::UPGRADE,
            hyper::header::HeaderValue::from_static("websocket"),
        );
        headers.insert(
            hyper::header::CONNECTION,
            hyper::header::HeaderValue::from_static("Upgrade"),
        );
        if let Ok(v) = hyper::header::HeaderValue::from_str(&accept) {
            headers.insert(hyper::header::SEC_WEBSOCKET_ACCEPT, v);
        }
        if let Ok(v) = hyper::header::HeaderValue::from_str(node) {
            headers.insert(SERVED_BY_HEADER, v);
        }
        response
    }

    /// Serves one chat socket until the client closes it, it breaks, or the gateway stops.
    async fn chat<S>(&self, tenant: &str, io: S)
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    {
        use futures::{SinkExt, StreamExt};
        // A frame holds a record and its JSON quoting; leave room for escapes.
        let limits =
            tokio_websockets::Limits::default().max_payload_len(Some(4 * MAX_RECORD_BYTES));
        let mut socket = tokio_websockets::ServerBuilder::new()
            .limits(limits)
            .serve(io);
        loop {
            let frame = tokio::select! {
                () = self.shutdown.cancelled() => break,
                frame = socket.next() => frame,
            };
            let Some(Ok(frame)) = frame else { break };
            if frame.is_close() {
                break;
            }
            // Pings are answered by the library; pongs need nothing.
            if frame.is_ping() || frame.is_pong() {
                continue;
            }
            let reply = match frame.as_text().map(serde_json::from_str::<ChatRequest>) {
                Some(Ok(request)) => self.chat_reply(tenant, request).await,
                Some(Err(e)) => self.chat_error(
                    None,
                    StatusCode::BAD_REQUEST,
                    Stored::No,
                    format!("unreadable chat frame: {e}"),
                ),
                None => self.chat_error(
                    None,
                    StatusCode::BAD_REQUEST,
                    Stored::No,
                    "chat frames are JSON text frames",
                ),
            };
            let text = serde_json::to_string(&reply).unwrap_or_default();
            if socket
                .send(tokio_websockets::Message::text(text))
                .await
                .is_err()
            {
                break;
            }
        }
        let _ = socket.close().await;
    }

    async fn chat_reply(&self, tenant: &str, request: ChatRequest) -> ChatReply {
        match request {
            ChatRequest::Write { id, payload } => {
                if !valid_id(&id) {
                    return self.chat_error(
                        Some(id),
                        StatusCode::BAD_REQUEST,
                        Stored::No,
                        "a valid id is required",
                    );
                }
                if payload.len() > MAX_RECORD_BYTES {
                    return self.chat_error(
                        Some(id),
                        StatusCode::BAD_REQUEST,
                        Stored::No,
                        format!("the payload exceeds {MAX_RECORD_BYTES} bytes"),
                    );
                }
                match self
                    .store(tenant, id.clone(), "chat", Bytes::from(payload))
                    .await
                {
                    Ok(ack) => ChatReply::Ack {
                        id: ack.id,
                        seq: ack.seq,
                        duplicate: ack.duplicate,
                        node: self.node.clone(),
                    },
                    Err(r) => self.chat_error(Some(id), r.status, r.stored, r.message),
                }
            }
            ChatRequest::Read { from_seq, limit } => {
                let limit = u64::from(limit.clamp(1, MAX_READ_LIMIT));
                match self.fetch(tenant, from_seq.max(1), limit).await {
                    Ok(list) => ChatReply::Records {
                        tenant: list.tenant,
                        records: list.records,
                        next_seq: list.next_seq,
                        more: list.more,
                        node: self.node.clone(),
                    },
                    Err(r) => self.chat_error(None, r.status, r.stored, r.message),
                }
            }
        }
    }

    fn chat_error(
        &self,
        id: Option<String>,
        status: StatusCode,
        stored: Stored,
        error: impl Into<String>,
    ) -> ChatReply {
        ChatReply::Error {
            id,
            status: status.as_u16(),
            stored,
            error: error.into(),
            node: self.node.clone(),
        }
    }
}

/// RFC 6455's GUID, appended to the client's key to prove the server speaks WebSocket.
const WEBSOCKET_GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// The `Sec-WebSocket-Accept` for an upgrade request, or the status and reason to refuse it.
fn websocket_accept(headers: &hyper::HeaderMap) -> Result<String, (StatusCode, String)> {
    use base64::Engine as _;
    let has = |name: hyper::header::HeaderName, token: &str| {
        headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|v| v.trim().eq_ignore_ascii_case(token))
    };
    if !has(hyper::header::UPGRADE, "websocket") {
        return Err((
            StatusCode::UPGRADE_REQUIRED,
            "the chat socket needs `Upgrade: websocket`".to_owned(),
        ));
    }
    if !has(hyper::header::CONNECTION, "upgrade") {
        return Err((
            StatusCode::BAD_REQUEST,
            "the chat socket needs `Connection: Upgrade`".to_owned(),
        ));
    }
    if headers
        .get(hyper::header::SEC_WEBSOCKET_VERSION)
        .and_then(|v| v.to_str().ok())
        != Some("13")
    {
        return Err((
            StatusCode::BAD_REQUEST,
            "the chat socket needs `Sec-WebSocket-Version: 13`".to_owned(),
        ));
    }
    let Some(key) = headers.get(hyper::header::SEC_WEBSOCKET_KEY) else {
        return Err((
            StatusCode::BAD_REQUEST,
            "the chat socket needs `Sec-WebSocket-Key`".to_owned(),
        ));
    };
    let mut sha = sha1_smol::Sha1::new();
    sha.update(key.as_bytes());
    sha.update(WEBSOCKET_GUID.as_bytes());
    Ok(base64::engine::general_purpose::STANDARD.encode(sha.digest().bytes()))
}

fn no_content(node: &str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = StatusCode::NO_CONTENT;
    if let Ok(v) = hyper::header::HeaderValue::from_str(node) {
        response.headers_mut().insert(SERVED_BY_HEADER, v);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        assert_eq!(route("/healthz"), Route::Health);
        assert_eq!(route("/v1/tenants/t001"), Route::Tenant("t001"));
        assert_eq!(route("/v1/tenants/t001/records"), Route::Records("t001"));
        assert_eq!(route("/v1/tenants/"), Route::NotFound);
        assert_eq!(route("/v1/tenants/t001/chat"), Route::Chat("t001"));
        assert_eq!(route("/v1/tenants/t001/other"), Route::NotFound);
        assert_eq!(route("/"), Route::NotFound);
        assert_eq!(query_u64(Some("from_seq=5&limit=7"), "limit"), Some(7));
        assert_eq!(query_u64(Some("from_seq=x"), "from_seq"), None);
        assert_eq!(query_u64(None, "limit"), None);
    }

    #[test]
    fn websocket_accept_follows_rfc_6455() {
        let mut headers = hyper::HeaderMap::new();
        assert_eq!(
            websocket_accept(&headers).expect_err("no upgrade").0,
            StatusCode::UPGRADE_REQUIRED
        );
        headers.insert("upgrade", "WebSocket".parse().expect("value"));
        headers.insert("connection", "keep-alive, Upgrade".parse().expect("value"));
        headers.insert("sec-websocket-version", "13".parse().expect("value"));
        assert_eq!(
            websocket_accept(&headers).expect_err("no key").0,
            StatusCode::BAD_REQUEST
        );
        // The example handshake of RFC 6455, section 1.3.
        headers.insert(
            "sec-websocket-key",
            "dGhlIHNhbXBsZSBub25jZQ==".parse().expect("value"),
        );
        assert_eq!(
            websocket_accept(&headers).expect("accept"),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }
}
