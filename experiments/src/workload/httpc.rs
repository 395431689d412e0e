//! A small HTTP/1.1 client with a keep-alive connection pool per endpoint, on hyper's
//! connection API. It tells apart failures where the request was certainly not sent (the
//! connection could not be made, or hyper handed the request back unsent) from failures after
//! it may have been sent: the difference between `fail` and `info`.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::{self, SendRequest};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// A response, fully read.
#[derive(Clone, Debug)]
pub struct Response {
    /// Status.
    pub status: StatusCode,
    /// Body.
    pub body: Bytes,
    /// The `X-Served-By` header, if any.
    pub served_by: Option<String>,
}

/// Why a request got no response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Failure {
    /// The request was certainly not sent: no connection could be made, or the connection
    /// refused it before writing a byte.
    NotSent(String),
    /// No response in time. `sent` tells whether the request may have reached the server.
    Timeout {
        /// Whether the request may have been written.
        sent: bool,
    },
    /// The connection failed after the request may have been written.
    AfterSend(String),
}

impl Failure {
    /// Whether the request may have had an effect.
    pub fn maybe_sent(&self) -> bool {
        !matches!(self, Failure::NotSent(_) | Failure::Timeout { sent: false })
    }

    /// The error text for the history.
    pub fn describe(&self, addr: SocketAddr) -> String {
        match self {
            Failure::NotSent(e) => format!("not sent to {addr}: {e}"),
            Failure::Timeout { sent: true } => format!("no response from {addr} in time"),
            Failure::Timeout { sent: false } => format!("could not connect to {addr} in time"),
            Failure::AfterSend(e) => format!("connection to {addr} failed after sending: {e}"),
        }
    }
}

/// Keep-alive connections to one endpoint.
pub struct Pool {
    addr: SocketAddr,
    /// Where its sockets are made, when not in the calling thread's namespace.
    site: Option<std::sync::Arc<super::clients::ClientSite>>,
    host: String,
    idle: Mutex<Vec<SendRequest<Full<Bytes>>>>,
    max_idle: usize,
}

impl Pool {
    /// A pool for `addr` that keeps at most `max_idle` idle connections.
    pub fn new(addr: SocketAddr, max_idle: usize) -> Self {
        Self {
            addr,
            site: None,
            host: addr.to_string(),
            idle: Mutex::new(Vec::new()),
            max_idle,
        }
    }

    /// The same pool, making its sockets at `site` (in that zone's client namespace).
    #[must_use]
    pub fn at_site(mut self, site: Option<std::sync::Arc<super::clients::ClientSite>>) -> Self {
        self.site = site;
        self
    }

    /// The endpoint.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Drops every idle connection (e.g. after the endpoint was found dead).
    pub fn clear(&self) {
        self.idle.lock().expect("pool").clear();
    }

    /// A new TCP connection to the endpoint, made at the pool's site (no delay on), within
    /// `timeout`.
    pub async fn connect(&self, timeout: Duration) -> Result<TcpStream, Failure> {
        let connect = async {
            match &self.site {
                None => TcpStream::connect(self.addr).await,
                Some(site) => site.socket()?.connect(self.addr).await,
            }
        };
        let stream = tokio::time::timeout(timeout, connect)
            .await
            .map_err(|_| Failure::NotSent("connect timed out".to_owned()))?
            .map_err(|e| Failure::NotSent(e.to_string()))?;
        let _ = stream.set_nodelay(true);
        Ok(stream)
    }

    async fn checkout(
        &self,
        connect_timeout: Duration,
    ) -> Result<SendRequest<Full<Bytes>>, Failure> {
        loop {
            let candidate = self.idle.lock().expect("pool").pop();
            match candidate {
                Some(sender) if sender.is_ready() => return Ok(sender),
                Some(_) => {}
                None => break,
            }
        }
        let stream = self.connect(connect_timeout).await?;
        let (sender, connection) = http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| Failure::NotSent(e.to_string()))?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(sender)
    }

    fn checkin(&self, sender: SendRequest<Full<Bytes>>) {
        if sender.is_closed() {
            return;
        }
        let mut idle = self.idle.lock().expect("pool");
        if idle.len() < self.max_idle {
            idle.push(sender);
        }
    }

    /// Sends one request and reads the whole response within `timeout`.
    pub async fn send(
        &self,
        method: Method,
        path_and_query: &str,
        headers: &[(&str, &str)],
        body: Bytes,
        timeout: Duration,
    ) -> Result<Response, Failure> {
        let sent = AtomicBool::new(false);
        let attempt = async {
            let mut sender = self.checkout(timeout).await?;
            let mut builder = Request::builder()
                .method(method)
                .uri(path_and_query)
                .header(hyper::header::HOST, &self.host);
            for (name, value) in headers {
                builder = builder.header(*name, *value);
            }
            let request = builder
                .body(Full::new(body))
                .map_err(|e| Failure::NotSent(format!("bad request: {e}")))?;
            sent.store(true, Ordering::Relaxed);
            let response = match sender.try_send_request(request).await {
                Ok(response) => response,
                Err(mut e) => {
                    return Err(if e.take_message().is_some() {
                        Failure::NotSent(e.into_error().to_string())
                    } else {
                        Failure::AfterSend(e.into_error().to_string())
                    });
                }
            };
            let status = response.status();
            let served_by = response
                .headers()
                .get("x-served-by")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            let body = response
                .into_body()
                .collect()
                .await
                .map_err(|e| Failure::AfterSend(e.to_string()))?
                .to_bytes();
            self.checkin(sender);
            Ok(Response {
                status,
                body,
                served_by,
            })
        };
        match tokio::time::timeout(timeout, attempt).await {
            Ok(result) => result,
            Err(_) => Err(Failure::Timeout {
                sent: sent.load(Ordering::Relaxed),
            }),
        }
    }

    /// `GET` convenience.
    pub async fn get(&self, path_and_query: &str, timeout: Duration) -> Result<Response, Failure> {
        self.send(Method::GET, path_and_query, &[], Bytes::new(), timeout)
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refused_connection_is_not_sent_and_a_silent_server_times_out_after_sending() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("rt");
        rt.block_on(async {
            // Nothing listens on a port we just bound and released.
            let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            let addr = listener.local_addr().expect("addr");
            drop(listener);
            let pool = Pool::new(addr, 4);
            let failure = pool
                .get("/healthz", Duration::from_millis(500))
                .await
                .expect_err("refused");
            assert!(matches!(failure, Failure::NotSent(_)), "{failure:?}");
            assert!(!failure.maybe_sent());

            // A server that accepts and never answers.
            let silent = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind");
            let addr = silent.local_addr().expect("addr");
            let keep = tokio::spawn(async move {
                let mut held = Vec::new();
                loop {
                    if let Ok((s, _)) = silent.accept().await {
                        held.push(s);
                    }
                }
            });
            let pool = Pool::new(addr, 4);
            let failure = pool
                .get("/", Duration::from_millis(300))
                .await
                .expect_err("silent");
            assert_eq!(failure, Failure::Timeout { sent: true });
            assert!(failure.maybe_sent());
            keep.abort();
        });
    }
}
