//! The HTTP adapter: the tenant-records contract client. It spreads requests over the
//! endpoints (round robin), skips an endpoint for a second after it refused a connection, and
//! retries failed attempts on the next endpoint with exponential backoff, like a real client.
//! Every attempt is its own history operation with the same value and `attempt + 1`.
//!
//! # Status → outcome
//!
//! | answer | outcome | retried |
//! |---|---|---|
//! | 2xx (201) | `ok` | no |
//! | 503, 429, 408 | `fail` (the contract says: not stored) | yes |
//! | other 4xx | `fail` | no |
//! | 504, 502, 500, other 5xx | `info` (may be stored) | yes |
//! | connection refused / could not connect (request not sent) | `fail` | yes, next endpoint |
//! | timeout or connection lost after sending | `info` | yes, next endpoint |

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hyper::{Method, StatusCode};

use crate::history::Outcome;

use super::clients::ClientSite;
use super::contract::{
    records_path, tenant_path, RecordList, WriteAck, IDEMPOTENCY_HEADER, KIND_HEADER,
    MAX_READ_LIMIT, TENANT_HEADER,
};
use super::httpc::{Failure, Pool};
use super::target::HttpEndpoint;

/// One endpoint with its connection pool.
pub struct Endpoint {
    /// Node name.
    pub node: String,
    /// Connection pool.
    pub pool: Pool,
    down_until: Mutex<Option<Instant>>,
}

impl Endpoint {
    /// An endpoint with its pool, making its sockets at `site` when given.
    pub fn new(e: &HttpEndpoint, site: Option<&Arc<ClientSite>>) -> Self {
        Self {
            node: e.node.clone(),
            pool: Pool::new(e.addr, 256).at_site(site.cloned()),
            down_until: Mutex::new(None),
        }
    }

    fn is_down(&self, now: Instant) -> bool {
        self.down_until
            .lock()
            .expect("down")
            .is_some_and(|t| now < t)
    }

    /// Skips the endpoint for `for_` (it refused a connection) and drops its idle connections.
    pub fn mark_down(&self, for_: Duration) {
        *self.down_until.lock().expect("down") = Some(Instant::now() + for_);
        self.pool.clear();
    }
}

/// What one attempt did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attempt {
    /// Outcome.
    pub outcome: Outcome,
    /// Whether another attempt should follow.
    pub retry: bool,
    /// The node that served (or was tried).
    pub node: String,
    /// Error text.
    pub error: Option<String>,
    /// Response body on success.
    pub body: Option<Bytes>,
}

/// Maps a status to (outcome, retry) by the table in the module docs.
pub fn status_outcome(status: StatusCode) -> (Outcome, bool) {
    if status.is_success() {
        return (Outcome::Ok, false);
    }
    match status.as_u16() {
        503 | 429 | 408 => (Outcome::Fail, true),
        400..=499 => (Outcome::Fail, false),
        _ => (Outcome::Info, true),
    }
}

/// Maps a transport failure of a write to its outcome (always retried).
pub fn failure_outcome(failure: &Failure) -> Outcome {
    if failure.maybe_sent() {
        Outcome::Info
    } else {
        Outcome::Fail
    }
}

/// The client.
pub struct HttpClient {
    endpoints: RwLock<Vec<Arc<Endpoint>>>,
    next: AtomicUsize,
    /// Nodes whose endpoints are tried first, in order (a zone's nodes).
    near: Vec<String>,
    /// The client site its sockets are made at; its zone's endpoints are tried first.
    site: Option<Arc<ClientSite>>,
    /// Request timeout.
    pub timeout: Duration,
    /// Retries after the first attempt.
    pub retries: u32,
}

impl HttpClient {
    /// A client for these endpoints.
    pub fn new(endpoints: &[HttpEndpoint], timeout: Duration, retries: u32) -> Self {
        Self {
            endpoints: RwLock::new(
                endpoints
                    .iter()
                    .map(|e| Arc::new(Endpoint::new(e, None)))
                    .collect(),
            ),
            next: AtomicUsize::new(0),
            near: Vec::new(),
            site: None,
            timeout,
            retries,
        }
    }

    /// A client standing at `site`: its sockets are made in the site's namespace, and it tries
    /// the endpoints of `near` (the site's zone's nodes) first, in order, before the others.
    pub fn at_site(
        endpoints: &[HttpEndpoint],
        timeout: Duration,
        retries: u32,
        site: Arc<ClientSite>,
        near: Vec<String>,
    ) -> Self {
        let client = Self::new(&[], timeout, retries);
        let client = Self {
            site: Some(site),
            near,
            ..client
        };
        client.set_endpoints(endpoints);
        client
    }

    /// The zone its clients stand in, when at a site.
    pub fn zone(&self) -> Option<&str> {
        self.site.as_ref().map(|s| s.zone.as_str())
    }

    /// Replaces the endpoint list (replicas moved), keeping the pools of unchanged ones.
    pub fn set_endpoints(&self, endpoints: &[HttpEndpoint]) {
        let mut current = self.endpoints.write().expect("endpoints");
        let mut next: Vec<Arc<Endpoint>> = endpoints
            .iter()
            .map(|e| {
                current
                    .iter()
                    .find(|c| c.pool.addr() == e.addr && c.node == e.node)
                    .cloned()
                    .unwrap_or_else(|| Arc::new(Endpoint::new(e, self.site.as_ref())))
            })
            .collect();
        // Near endpoints first; the sort is stable, so the given order stays otherwise.
        next.sort_by_key(|e| !self.near.contains(&e.node));
        *current = next;
    }

    /// The endpoints now.
    pub fn endpoints(&self) -> Vec<Arc<Endpoint>> {
        self.endpoints.read().expect("endpoints").clone()
    }

    /// Picks the next endpoint, skipping those marked down unless all are.
    pub fn pick(&self) -> Option<Arc<Endpoint>> {
        let endpoints = self.endpoints();
        if endpoints.is_empty() {
            return None;
        }
        let now = Instant::now();
        // A zone's clients go to the first endpoint up, their own zone's when it is up.
        let start = if self.near.is_empty() {
            self.next.fetch_add(1, Ordering::Relaxed)
        } else {
            0
        };
        (0..endpoints.len())
            .map(|i| &endpoints[(start + i) % endpoints.len()])
            .find(|e| !e.is_down(now))
            .or_else(|| endpoints.get(start % endpoints.len()))
            .cloned()
    }

    /// The backoff before attempt `attempt` (2, 3, …): 50 ms doubling, at most 1 s.
    pub fn backoff(attempt: u32) -> Duration {
        Duration::from_millis(
            50u64
                .saturating_mul(1 << attempt.saturating_sub(2).min(10))
                .min(1000),
        )
    }

    /// One request to one endpoint, classified.
    pub async fn attempt(
        &self,
        endpoint: &Endpoint,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Bytes,
    ) -> Attempt {
        match endpoint
            .pool
            .send(method, path, headers, body, self.timeout)
            .await
        {
            Ok(response) => {
                let (outcome, retry) = status_outcome(response.status);
                let node = response
                    .served_by
                    .clone()
                    .unwrap_or_else(|| endpoint.node.clone());
                if outcome == Outcome::Ok {
                    Attempt {
                        outcome,
                        retry,
                        node,
                        error: None,
                        body: Some(response.body),
                    }
                } else {
                    let text = String::from_utf8_lossy(&response.body);
                    Attempt {
                        outcome,
                        retry,
                        node,
                        error: Some(format!(
                            "{}: {}",
                            response.status,
                            text.chars().take(300).collect::<String>()
                        )),
                        body: None,
                    }
                }
            }
            Err(failure) => {
                if failure.maybe_sent() {
                    endpoint.pool.clear();
                } else {
                    endpoint.mark_down(Duration::from_secs(1));
                }
                Attempt {
                    outcome: failure_outcome(&failure),
                    retry: true,
                    node: endpoint.node.clone(),
                    error: Some(failure.describe(endpoint.pool.addr())),
                    body: None,
                }
            }
        }
    }

    /// Headers of a record write.
    pub fn write_headers<'a>(
        tenant: &'a str,
        value: &'a str,
        kind: &'a str,
    ) -> [(&'a str, &'a str); 3] {
        [
            (TENANT_HEADER, tenant),
            (IDEMPOTENCY_HEADER, value),
            (KIND_HEADER, kind),
        ]
    }

    /// Path of a read from `from`.
    pub fn read_path(tenant: &str, from: u64, limit: u64) -> String {
        format!(
            "{}?from_seq={from}&limit={}",
            records_path(tenant),
            limit.min(u64::from(MAX_READ_LIMIT))
        )
    }

    /// Provisions a tenant freshly on one endpoint: DELETE (when `fresh`) then PUT, each retried
    /// a few times on the next endpoint.
    pub async fn provision(&self, tenant: &str, fresh: bool) -> Result<(), String> {
        let headers = [(TENANT_HEADER, tenant)];
        let path = tenant_path(tenant);
        let steps: &[Method] = if fresh {
            &[Method::DELETE, Method::PUT]
        } else {
            &[Method::PUT]
        };
        for method in steps {
            let mut last = String::new();
            let mut done = false;
            for attempt in 1..=5 {
                let Some(endpoint) = self.pick() else {
                    return Err("no gateway endpoints".to_owned());
                };
                let a = self
                    .attempt(&endpoint, method.clone(), &path, &headers, Bytes::new())
                    .await;
                if a.outcome == Outcome::Ok {
                    done = true;
                    break;
                }
                last = a.error.unwrap_or_default();
                tokio::time::sleep(Self::backoff(attempt + 1)).await;
            }
            if !done {
                return Err(format!("{method} {path}: {last}"));
            }
        }
        Ok(())
    }

    /// `GET /healthz` on every endpoint; the ones that answered 200.
    pub async fn healthy(&self) -> Vec<(SocketAddr, Result<(), String>)> {
        let endpoints = self.endpoints();
        let checks = endpoints.iter().map(|e| async move {
            let addr = e.pool.addr();
            let result = match e
                .pool
                .get("/healthz", self.timeout.min(Duration::from_secs(2)))
                .await
            {
                Ok(r) if r.status == StatusCode::OK => Ok(()),
                Ok(r) => Err(format!("{addr} answered {}", r.status)),
                Err(f) => Err(f.describe(addr)),
            };
            (addr, result)
        });
        futures::future::join_all(checks).await
    }
}

/// Parses a write's 2xx body: (seq, duplicate).
pub fn parse_ack(body: &[u8]) -> (Option<u64>, bool) {
    serde_json::from_slice::<WriteAck>(body).map_or((None, false), |a| (a.seq, a.duplicate))
}

/// Parses a read's 2xx body.
pub fn parse_records(body: &[u8]) -> Result<RecordList, String> {
    serde_json::from_slice(body).map_err(|e| format!("unreadable record list: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_table() {
        let cases = [
            (201, Outcome::Ok, false),
            (200, Outcome::Ok, false),
            (503, Outcome::Fail, true),
            (429, Outcome::Fail, true),
            (400, Outcome::Fail, false),
            (404, Outcome::Fail, false),
            (504, Outcome::Info, true),
            (502, Outcome::Info, true),
            (500, Outcome::Info, true),
        ];
        for (status, outcome, retry) in cases {
            assert_eq!(
                status_outcome(StatusCode::from_u16(status).expect("status")),
                (outcome, retry),
                "{status}"
            );
        }
        assert_eq!(
            failure_outcome(&Failure::NotSent("refused".into())),
            Outcome::Fail
        );
        assert_eq!(
            failure_outcome(&Failure::Timeout { sent: false }),
            Outcome::Fail
        );
        assert_eq!(
            failure_outcome(&Failure::Timeout { sent: true }),
            Outcome::Info
        );
        assert_eq!(
            failure_outcome(&Failure::AfterSend("reset".into())),
            Outcome::Info
        );
    }

    #[test]
    fn a_retry_records_the_replica_that_finally_answered() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("rt");
        rt.block_on(async {
            // n1: nothing listens. n2: answers 201 and names its replica `gw-b`.
            let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            let dead = closed.local_addr().expect("addr");
            drop(closed);
            let live = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind");
            let addr = live.local_addr().expect("addr");
            let server = tokio::spawn(async move {
                use tokio::io::{AsyncReadExt, AsyncWriteExt};
                while let Ok((mut s, _)) = live.accept().await {
                    let mut buf = [0u8; 4096];
                    let _ = s.read(&mut buf).await;
                    let body = br#"{"tenant":"t1","id":"t1/c1/1","seq":7,"duplicate":false}"#;
                    let head = format!(
                        "HTTP/1.1 201 Created\r\nx-served-by: gw-b\r\ncontent-length: {}\r\n\r\n",
                        body.len()
                    );
                    let _ = s.write_all(head.as_bytes()).await;
                    let _ = s.write_all(body).await;
                }
            });
            let endpoints = [("n1", dead), ("n2", addr)].map(|(node, addr)| HttpEndpoint {
                node: node.into(),
                addr,
            });
            let client = HttpClient::new(&endpoints, Duration::from_secs(2), 3);
            let headers = HttpClient::write_headers("t1", "t1/c1/1", "chat");
            let mut attempts = Vec::new();
            for _ in 0..=client.retries {
                let endpoint = client.pick().expect("endpoint");
                let a = client
                    .attempt(
                        &endpoint,
                        Method::POST,
                        "/v1/tenants/t1/records",
                        &headers,
                        Bytes::new(),
                    )
                    .await;
                let done = a.outcome == Outcome::Ok || !a.retry;
                attempts.push((a.node, a.outcome));
                if done {
                    break;
                }
            }
            assert_eq!(
                attempts,
                [
                    ("n1".to_owned(), Outcome::Fail),
                    ("gw-b".to_owned(), Outcome::Ok)
                ]
            );
            server.abort();
        });
    }

    #[test]
    fn backoff_doubles_up_to_a_second() {
        let b: Vec<u64> = (2..=8)
            .map(|a| HttpClient::backoff(a).as_millis() as u64)
            .collect();
        assert_eq!(b, vec![50, 100, 200, 400, 800, 1000, 1000]);
    }

    #[test]
    fn pick_round_robins_and_skips_down_endpoints() {
        let eps: Vec<HttpEndpoint> = (1..=3)
            .map(|i| HttpEndpoint {
                node: format!("n{i}"),
                addr: format!("127.0.0.1:{}", 9000 + i).parse().expect("addr"),
            })
            .collect();
        let client = HttpClient::new(&eps, Duration::from_secs(1), 3);
        let picks: Vec<String> = (0..3)
            .map(|_| client.pick().expect("pick").node.clone())
            .collect();
        assert_eq!(picks, ["n1", "n2", "n3"]);
        client.endpoints()[1].mark_down(Duration::from_secs(5));
        let picks: Vec<String> = (0..4)
            .map(|_| client.pick().expect("pick").node.clone())
            .collect();
        assert!(!picks.contains(&"n2".to_owned()), "{picks:?}");
        assert_eq!(
            parse_ack(br#"{"tenant":"t","id":"v","seq":4,"duplicate":true}"#),
            (Some(4), true)
        );
        assert_eq!(parse_ack(b"junk"), (None, false));
        assert!(HttpClient::read_path("t1", 5, 5000).ends_with("from_seq=5&limit=1000"));
    }
}
