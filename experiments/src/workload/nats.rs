//! The NATS JetStream adapter: connections, tenant streams, writes, reads, job consumers, and
//! how each client error maps to an outcome.
//!
//! # Error → outcome (Jepsen's rule: `fail` only when the error proves no effect)
//!
//! | what happened | outcome | why |
//! |---|---|---|
//! | publish acknowledged | `ok` | stored at the acknowledged sequence |
//! | acknowledged with `duplicate: true` (same `Nats-Msg-Id` within the window) | `ok` | an earlier attempt stored it; the ack carries that sequence |
//! | the publish was never handed to the connection (bad subject, payload too big, client closed) | `fail` | nothing left the client |
//! | 503 / no responders (async-nats: "no stream found for given subject") | `fail` | the server found no subscriber for the subject, so no stream received it |
//! | no acknowledgement within the timeout | `info` | the stream may have stored it and the ack got lost |
//! | connection lost while waiting (broken pipe) | `info` | it may have been sent and stored |
//! | JetStream error 10008 "temporarily unavailable" | `info` | said after the message reached JetStream; a proposal may already be in flight |
//! | JetStream error 10059 "stream not found" from a server (quorum loss, assignment in flux) | `info` | one server's view; another replica may have stored it |
//! | JetStream errors that reject before storing: 10053 limits, 10054 too large, 10060/10063 expectation mismatch, 10070/10071 wrong last id/sequence | `fail` | the leader checks these before proposing |
//! | any other JetStream error, or an unreadable ack | `info` | unknown |
//!
//! Reads have no effect, so a failed read is always `fail`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::context::{DeleteStreamErrorKind, PublishError, PublishErrorKind};
use async_nats::jetstream::message::PublishMessage;
use async_nats::jetstream::stream::{Config as StreamConfig, DirectGetErrorKind, StorageType};
use async_nats::jetstream::{self, consumer};
use async_nats::{Client, ConnectOptions};
use bytes::Bytes;
use futures::StreamExt;

use crate::history::{ClientSettings, Outcome};

use super::clients::ClientSite;
use super::schedule::{stream_name, subject, tenant_of_subject};

/// JetStream error codes that the stream leader checks before proposing a message, so the
/// message was certainly not stored.
pub const REJECTED_BEFORE_STORE: [u64; 6] = [10053, 10054, 10060, 10063, 10070, 10071];

/// The durable consumer name of each tenant's work queue.
pub const JOBS_CONSUMER: &str = "jobs";

/// Why a publish has no acknowledgement.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PublishFailure {
    /// The message never left the client.
    NotSent(String),
    /// 503: no responders.
    NoResponders,
    /// No acknowledgement in time.
    AckTimeout,
    /// The connection went away while waiting.
    ConnectionLost,
    /// JetStream answered with an error.
    Api {
        /// HTTP-like status.
        code: u64,
        /// JetStream error code, e.g. 10008.
        err_code: u64,
        /// The server's text.
        description: String,
    },
    /// The acknowledgement could not be read.
    BadAck(String),
}

impl PublishFailure {
    /// The outcome, by the table in the module docs.
    pub fn outcome(&self) -> Outcome {
        match self {
            PublishFailure::NotSent(_) | PublishFailure::NoResponders => Outcome::Fail,
            PublishFailure::Api { err_code, .. } if REJECTED_BEFORE_STORE.contains(err_code) => {
                Outcome::Fail
            }
            PublishFailure::AckTimeout
            | PublishFailure::ConnectionLost
            | PublishFailure::Api { .. }
            | PublishFailure::BadAck(_) => Outcome::Info,
        }
    }

    /// Text for the history's `error` field.
    pub fn describe(&self) -> String {
        match self {
            PublishFailure::NotSent(e) => format!("not sent: {e}"),
            PublishFailure::NoResponders => "503 no responders: no stream received it".to_owned(),
            PublishFailure::AckTimeout => "timed out waiting for the publish ack".to_owned(),
            PublishFailure::ConnectionLost => {
                "connection lost while waiting for the publish ack".to_owned()
            }
            PublishFailure::Api {
                code,
                err_code,
                description,
            } => format!("JetStream error {err_code} ({code}): {description}"),
            PublishFailure::BadAck(e) => format!("unreadable publish ack: {e}"),
        }
    }

    /// Classifies an error of the acknowledgement stage (after the message was handed to the
    /// connection).
    pub fn from_ack_error(error: &PublishError) -> Self {
        match error.kind() {
            PublishErrorKind::StreamNotFound => PublishFailure::NoResponders,
            PublishErrorKind::TimedOut => PublishFailure::AckTimeout,
            PublishErrorKind::BrokenPipe => PublishFailure::ConnectionLost,
            PublishErrorKind::WrongLastMessageId => api(400, 10070, error),
            PublishErrorKind::WrongLastSequence => api(400, 10071, error),
            _ => match std::error::Error::source(error)
                .and_then(|s| s.downcast_ref::<jetstream::Error>())
            {
                Some(js) => PublishFailure::Api {
                    code: js.code() as u64,
                    err_code: js.error_code().0,
                    description: js.to_string(),
                },
                None => PublishFailure::BadAck(error.to_string()),
            },
        }
    }
}

fn api(code: u64, err_code: u64, error: &PublishError) -> PublishFailure {
    PublishFailure::Api {
        code,
        err_code,
        description: error.to_string(),
    }
}

/// The result of one write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WriteResult {
    /// Outcome.
    pub outcome: Outcome,
    /// Acknowledged sequence.
    pub seq: Option<u64>,
    /// Whether the ack said duplicate.
    pub duplicate: bool,
    /// Error text.
    pub error: Option<String>,
}

/// One record read back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReadRecord {
    /// Stream sequence.
    pub seq: u64,
    /// Its `Nats-Msg-Id` (the value), or empty when it has none.
    pub value: String,
    /// Tenant of its subject, when it has one.
    pub tenant: Option<String>,
}

/// How often a load client pings its server when nothing else arrives. async-nats drops the
/// connection at the third unanswered ping, so a dead server is noticed within three intervals
/// (6 s), where the library default (60 s) took up to three minutes: the load then follows a
/// failover as a well-configured application would.
pub const DEFAULT_PING_INTERVAL: Duration = Duration::from_secs(2);

/// Unanswered pings async-nats tolerates before it reconnects (its `MAX_PENDING_PINGS`, not
/// configurable), recorded in the history header.
pub const MAX_PINGS_OUT: u32 = 2;

/// Longest pause between two reconnect attempts.
pub const RECONNECT_DELAY_MAX: Duration = Duration::from_secs(1);

/// One NATS connection with its JetStream context.
#[derive(Clone)]
pub struct NatsConn {
    /// The client.
    pub client: Client,
    /// JetStream, with the operation timeout applied.
    pub js: jetstream::Context,
    node_of_host: Arc<HashMap<String, String>>,
    pinned: Option<String>,
    /// The server of the current connection, looked up again whenever the client's connect
    /// count has moved.
    server_cache: Arc<std::sync::RwLock<Option<Server>>>,
    /// The client site whose runtime hosts the connection, when it stands in a zone; held so
    /// that the site outlives every clone of the connection.
    site: Option<Arc<ClientSite>>,
}

/// The server a connection was on at one moment: which (re)connect of the client, and its node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Server {
    /// The client's connect count at that moment (the initial connect is 1).
    pub connects: u64,
    /// The server's node name.
    pub node: String,
}

/// Which server served an operation, taken when its answer arrived.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Served {
    /// The server the connection was on when the answer (or error) arrived.
    pub node: String,
    /// Whether the client reconnected since the operation was sent.
    pub reconnected: bool,
    /// When `reconnected`: the server it was sent through.
    pub sent_node: Option<String>,
}

impl Served {
    /// The attribution of an operation sent while the connection was on `sent` and answered
    /// while it was on `now`. Any reconnect in between makes it uncertain, even back to the
    /// same server: the request may have gone out on the old connection and the answer come
    /// back on the new one, through a server on another side of a partition.
    pub fn between(sent: Server, now: Server) -> Self {
        if sent.connects == now.connects {
            Self {
                node: now.node,
                reconnected: false,
                sent_node: None,
            }
        } else {
            Self {
                node: now.node,
                reconnected: true,
                sent_node: Some(sent.node),
            }
        }
    }
}

/// How to connect.
#[derive(Clone, Debug)]
pub struct ConnectSpec {
    /// Server URLs, in preference order.
    pub urls: Vec<String>,
    /// Connection name (shows in the server's monitoring).
    pub name: String,
    /// Connect timeout.
    pub connect_timeout: Duration,
    /// JetStream request and ack timeout.
    pub op_timeout: Duration,
    /// How often to ping the server when nothing else arrives (see [`DEFAULT_PING_INTERVAL`]).
    pub ping_interval: Duration,
    /// Use only these servers, never discovered ones, and report `pinned_node` as the node.
    pub pinned_node: Option<String>,
    /// Keep trying when no server answers at first (for long-lived services).
    pub retry_initial: bool,
}

impl ConnectSpec {
    /// The settings that decide how failures look, for the history header.
    pub fn client_settings(&self) -> ClientSettings {
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        ClientSettings {
            ping_interval_ms: Some(ms(self.ping_interval)),
            max_pings_out: Some(MAX_PINGS_OUT),
            connect_timeout_ms: ms(self.connect_timeout),
            request_timeout_ms: ms(self.op_timeout),
            reconnect_delay_max_ms: Some(ms(RECONNECT_DELAY_MAX)),
            retries: None,
        }
    }
}

impl NatsConn {
    /// Connects; `node_of_host` maps a server's address to its node name for the history.
    pub async fn connect(
        spec: &ConnectSpec,
        node_of_host: Arc<HashMap<String, String>>,
    ) -> Result<Self, String> {
        let mut options = ConnectOptions::new()
            .name(&spec.name)
            .connection_timeout(spec.connect_timeout)
            .request_timeout(Some(spec.op_timeout))
            .ping_interval(spec.ping_interval)
            .retain_servers_order()
            .reconnect_delay_callback(|attempts| {
                Duration::from_millis(
                    (attempts as u64 * 100).min(RECONNECT_DELAY_MAX.as_millis() as u64),
                )
            });
        if spec.pinned_node.is_some() {
            options = options.ignore_discovered_servers();
        }
        if spec.retry_initial {
            options = options.retry_on_initial_connect();
        }
        let addrs: Vec<async_nats::ServerAddr> = spec
            .urls
            .iter()
            .map(|u| u.parse().map_err(|e| format!("bad NATS URL {u}: {e}")))
            .collect::<Result<_, _>>()?;
        let client = options.connect(addrs).await.map_err(|e| e.to_string())?;
        let js = jetstream::ContextBuilder::new()
            .timeout(spec.op_timeout)
            .max_ack_inflight(20_000)
            .backpressure_on_inflight(true)
            .build(client.clone());
        Ok(Self {
            client,
            js,
            node_of_host,
            pinned: spec.pinned_node.clone(),
            server_cache: Arc::default(),
            site: None,
        })
    }

    /// Connects from `site`'s namespace: the connection is made, and its reconnects run, on
    /// the site's runtime, so the client reaches exactly what its zone reaches.
    pub async fn connect_at(
        spec: &ConnectSpec,
        node_of_host: Arc<HashMap<String, String>>,
        site: Arc<ClientSite>,
    ) -> Result<Self, String> {
        let spec = spec.clone();
        let connected = site
            .spawn(async move { Self::connect(&spec, node_of_host).await })
            .await
            .map_err(|e| format!("zone {}'s client runtime stopped: {e}", site.zone))?;
        let mut conn = connected?;
        conn.site = Some(site);
        Ok(conn)
    }

    /// The zone whose client namespace the connection stands in, if any.
    pub fn zone(&self) -> Option<&str> {
        self.site.as_ref().map(|s| s.zone.as_str())
    }

    /// The server this connection is on now (the last one it connected to, if it is
    /// reconnecting).
    ///
    /// async-nats counts a connect and publishes the new server's INFO before it reads anything
    /// from the new connection, so an answer that arrived through a new server is always seen
    /// here with that server's connect count: the count moves first, the node follows it.
    pub fn server(&self) -> Server {
        let stats = self.client.statistics();
        let connects = || stats.connects.load(std::sync::atomic::Ordering::Acquire);
        if let Some(node) = &self.pinned {
            return Server {
                connects: connects(),
                node: node.clone(),
            };
        }
        loop {
            let before = connects();
            if let Some(cached) = self.server_cache.read().expect("server cache").as_ref() {
                if cached.connects == before {
                    return cached.clone();
                }
            }
            // Looking the server up clones its whole INFO, so it is done once per connect.
            let info = self.client.server_info();
            if connects() != before {
                // Reconnected during the lookup: the INFO may belong to either connection.
                continue;
            }
            // By address, else by server name (a pod's NATS listens on 0.0.0.0 and is named
            // after its pod).
            let known = self
                .node_of_host
                .get(&info.host)
                .or_else(|| self.node_of_host.get(&info.server_name));
            let node = if let Some(node) = known {
                node.clone()
            } else if info.server_name.is_empty() {
                info.host
            } else {
                info.server_name
            };
            let server = Server {
                connects: before,
                node,
            };
            *self.server_cache.write().expect("server cache") = Some(server.clone());
            return server;
        }
    }

    /// The node this connection is on now.
    pub fn node(&self) -> String {
        self.server().node
    }

    /// Publishes one value to `subject` with `Nats-Msg-Id` = `value` and waits for the ack.
    pub async fn write(&self, subject: &str, value: &str, payload: Bytes) -> WriteResult {
        let message = PublishMessage::build().payload(payload).message_id(value);
        let ack = match self.js.send_publish(subject.to_owned(), message).await {
            Ok(ack) => ack,
            Err(e) => return failed(&PublishFailure::NotSent(e.to_string())),
        };
        match ack.await {
            Ok(ack) => WriteResult {
                outcome: Outcome::Ok,
                seq: Some(ack.sequence),
                duplicate: ack.duplicate,
                error: None,
            },
            Err(e) => failed(&PublishFailure::from_ack_error(&e)),
        }
    }

    /// Reads a tenant's stream from `from` on with direct gets, one sequence at a time, until
    /// the server has no message there or `limit` records were read. Sequences the server
    /// reports missing at or below `known_last` are skipped as deleted rather than ending the
    /// read.
    pub async fn read(
        &self,
        stream: &str,
        from: u64,
        limit: u64,
        known_last: u64,
    ) -> Result<Vec<ReadRecord>, String> {
        let handle = self
            .js
            .get_stream_no_info(stream)
            .await
            .map_err(|e| e.to_string())?;
        let mut out = Vec::new();
        let mut seq = from.max(1);
        while (out.len() as u64) < limit {
            match handle.direct_get(seq).await {
                Ok(message) => out.push(record_of(&message)),
                Err(e) if e.kind() == DirectGetErrorKind::NotFound => {
                    if seq > known_last {
                        break;
                    }
                }
                Err(e) => return Err(format!("direct get {stream} seq {seq}: {e}")),
            }
            seq += 1;
        }
        Ok(out)
    }

    /// Reads sequences `from..=to` of a stream with up to `window` direct gets in flight, each
    /// retried up to 3 times. Missing sequences are skipped.
    pub async fn read_span(
        &self,
        stream: &str,
        from: u64,
        to: u64,
        window: usize,
    ) -> Result<Vec<ReadRecord>, String> {
        let handle = self
            .js
            .get_stream_no_info(stream)
            .await
            .map_err(|e| e.to_string())?;
        let handle = &handle;
        let results: Vec<Result<Option<ReadRecord>, String>> =
            futures::stream::iter(from.max(1)..=to)
                .map(|seq| async move {
                    let mut last = String::new();
                    for _ in 0..3 {
                        match handle.direct_get(seq).await {
                            Ok(message) => return Ok(Some(record_of(&message))),
                            Err(e) if e.kind() == DirectGetErrorKind::NotFound => return Ok(None),
                            Err(e) => last = format!("direct get {stream} seq {seq}: {e}"),
                        }
                    }
                    Err(last)
                })
                .buffered(window.max(1))
                .collect()
                .await;
        let mut out = Vec::with_capacity(results.len());
        for r in results {
            if let Some(record) = r? {
                out.push(record);
            }
        }
        Ok(out)
    }
}

fn record_of(message: &jetstream::message::StreamMessage) -> ReadRecord {
    ReadRecord {
        seq: message.sequence,
        value: message
            .headers
            .get("Nats-Msg-Id")
            .map(|v| v.as_str().to_owned())
            .unwrap_or_default(),
        tenant: tenant_of_subject(message.subject.as_str()).map(str::to_owned),
    }
}

fn failed(failure: &PublishFailure) -> WriteResult {
    WriteResult {
        outcome: failure.outcome(),
        seq: None,
        duplicate: false,
        error: Some(failure.describe()),
    }
}

/// The stream config of a tenant.
pub fn stream_config(tenant: &str, replicas: usize) -> StreamConfig {
    StreamConfig {
        name: stream_name(tenant),
        subjects: vec![format!("tenant.{tenant}.>")],
        num_replicas: replicas,
        storage: StorageType::File,
        allow_direct: true,
        duplicate_window: Duration::from_secs(120),
        ..Default::default()
    }
}

/// The work-queue consumer config of a tenant: durable, explicit acks, redelivery after 5 s.
pub fn jobs_consumer_config(tenant: &str) -> consumer::pull::Config {
    consumer::pull::Config {
        durable_name: Some(JOBS_CONSUMER.to_owned()),
        filter_subject: subject(tenant, "job"),
        ack_policy: consumer::AckPolicy::Explicit,
        ack_wait: Duration::from_secs(5),
        deliver_policy: consumer::DeliverPolicy::All,
        ..Default::default()
    }
}

/// Deletes (when `fresh`) and creates a tenant's stream, and its jobs consumer when `jobs`.
pub async fn provision(
    js: &jetstream::Context,
    tenant: &str,
    replicas: usize,
    fresh: bool,
    jobs: bool,
) -> Result<Option<consumer::PullConsumer>, String> {
    let name = stream_name(tenant);
    if fresh {
        match js.delete_stream(&name).await {
            Ok(_) => {}
            Err(e) if matches!(e.kind(), DeleteStreamErrorKind::JetStream(ref js) if js.error_code().0 == 10059) =>
                {}
            Err(e) => return Err(format!("delete {name}: {e}")),
        }
    }
    let stream = js
        .get_or_create_stream(stream_config(tenant, replicas))
        .await
        .map_err(|e| format!("create {name} (R{replicas}): {e}"))?;
    if !jobs {
        return Ok(None);
    }
    let consumer = stream
        .get_or_create_consumer(JOBS_CONSUMER, jobs_consumer_config(tenant))
        .await
        .map_err(|e| format!("create consumer {name}/{JOBS_CONSUMER}: {e}"))?;
    Ok(Some(consumer))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcome_table() {
        let api = |err_code| PublishFailure::Api {
            code: 503,
            err_code,
            description: String::new(),
        };
        let cases = [
            (PublishFailure::NotSent("closed".into()), Outcome::Fail),
            (PublishFailure::NoResponders, Outcome::Fail),
            (PublishFailure::AckTimeout, Outcome::Info),
            (PublishFailure::ConnectionLost, Outcome::Info),
            (api(10008), Outcome::Info),
            (api(10059), Outcome::Info),
            (api(10071), Outcome::Fail),
            (api(10054), Outcome::Fail),
            (api(10999), Outcome::Info),
            (PublishFailure::BadAck("x".into()), Outcome::Info),
        ];
        for (failure, outcome) in cases {
            assert_eq!(failure.outcome(), outcome, "{failure:?}");
            assert!(!failure.describe().is_empty());
        }
    }

    #[test]
    fn ack_stage_errors_classify() {
        let cases = [
            (
                PublishError::new(PublishErrorKind::StreamNotFound),
                PublishFailure::NoResponders,
            ),
            (
                PublishError::new(PublishErrorKind::TimedOut),
                PublishFailure::AckTimeout,
            ),
            (
                PublishError::new(PublishErrorKind::BrokenPipe),
                PublishFailure::ConnectionLost,
            ),
        ];
        for (error, expected) in cases {
            assert_eq!(PublishFailure::from_ack_error(&error), expected);
        }
        let js_error: jetstream::Error =
            serde_json::from_str(r#"{"code":503,"err_code":10008,"description":"JetStream system temporarily unavailable"}"#)
                .expect("error json");
        let error = PublishError::with_source(PublishErrorKind::Other, js_error);
        match PublishFailure::from_ack_error(&error) {
            PublishFailure::Api { code, err_code, .. } => {
                assert_eq!((code, err_code), (503, 10008));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_reconnect_between_send_and_answer_makes_the_node_uncertain() {
        let at = |connects, node: &str| Server {
            connects,
            node: node.to_owned(),
        };
        assert_eq!(
            Served::between(at(1, "c1"), at(1, "c1")),
            Served {
                node: "c1".into(),
                reconnected: false,
                sent_node: None
            }
        );
        assert_eq!(
            Served::between(at(1, "c1"), at(2, "a1")),
            Served {
                node: "a1".into(),
                reconnected: true,
                sent_node: Some("c1".into())
            }
        );
        // Back on the same server: the answer may still have crossed another.
        assert!(Served::between(at(1, "c1"), at(3, "c1")).reconnected);
        let spec = ConnectSpec {
            urls: Vec::new(),
            name: String::new(),
            connect_timeout: Duration::from_secs(3),
            op_timeout: Duration::from_secs(2),
            ping_interval: DEFAULT_PING_INTERVAL,
            pinned_node: None,
            retry_initial: false,
        };
        let settings = spec.client_settings();
        assert_eq!(settings.ping_interval_ms, Some(2000));
        assert_eq!(settings.max_pings_out, Some(2));
        assert_eq!(settings.request_timeout_ms, 2000);
    }

    #[test]
    fn stream_and_consumer_configs() {
        let c = stream_config("t007", 3);
        assert_eq!(c.name, "FL_t007");
        assert_eq!(c.subjects, vec!["tenant.t007.>"]);
        assert!(c.allow_direct);
        let j = jobs_consumer_config("t007");
        assert_eq!(j.filter_subject, "tenant.t007.job");
        assert_eq!(j.durable_name.as_deref(), Some("jobs"));
    }
}
