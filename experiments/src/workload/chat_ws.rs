//! The chat WebSocket client (`--chat websocket`): one socket per chat session to
//! `GET /v1/tenants/{tenant}/chat` ([`super::contract::ChatRequest`] frames out,
//! [`super::contract::ChatReply`] frames back, one reply per request, in order).
//!
//! # Outcomes
//!
//! | what happened | write | read | connect |
//! |---|---|---|---|
//! | `ack` / `records` / 101 | `ok` | `ok` | `ok` |
//! | `error` frame | by its status, as over HTTP (503 `fail`, 4xx `fail`, 5xx `info`) | `fail` | |
//! | no socket: refused, no 101 in time, upgrade answered with a status | | | `fail` |
//! | socket lost or no reply in time after the frame was sent | `info` | `fail` | |
//!
//! A socket that was lost is dropped; the next step opens a new one (a `connect` operation), on
//! the next endpoint when the last one refused.

use std::sync::Arc;
use std::time::Duration;

use futures::{FutureExt, SinkExt, StreamExt};
use hyper::header::{HeaderName, HeaderValue};
use tokio::net::TcpStream;
use tokio_websockets::{ClientBuilder, Message, WebSocketStream};

use crate::history::Outcome;

use super::contract::{chat_path, ChatReply, ChatRequest, SERVED_BY_HEADER, TENANT_HEADER};
use super::http::{status_outcome, Endpoint};

/// An open chat socket.
pub struct ChatSocket {
    socket: WebSocketStream<TcpStream>,
    /// The node that accepted it (`X-Served-By` of the 101), else the endpoint's.
    pub node: String,
    /// The endpoint it is connected to.
    pub endpoint: Arc<Endpoint>,
}

/// Why no socket could be opened: the node tried and what went wrong.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConnectFailure {
    /// The node the refusal named, else the endpoint's.
    pub node: String,
    /// What went wrong, for the history.
    pub error: String,
    /// The status the upgrade was answered with instead of 101, if it was answered.
    pub status: Option<u16>,
}

/// Why a request on an open socket got no reply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SocketFailure {
    /// The frame could not be handed to the socket: the socket was already gone.
    NotSent(String),
    /// The socket closed or broke after the frame may have been sent.
    Lost(String),
    /// No reply in time after the frame was sent.
    Timeout,
}

impl SocketFailure {
    /// The history's error text.
    pub fn describe(&self, node: &str) -> String {
        match self {
            SocketFailure::NotSent(e) => format!("chat socket to {node} gone before sending: {e}"),
            SocketFailure::Lost(e) => format!("chat socket to {node} lost after sending: {e}"),
            SocketFailure::Timeout => format!("no reply on the chat socket to {node} in time"),
        }
    }

    /// The outcome of a write that failed so.
    pub fn write_outcome(&self) -> Outcome {
        match self {
            SocketFailure::NotSent(_) => Outcome::Fail,
            SocketFailure::Lost(_) | SocketFailure::Timeout => Outcome::Info,
        }
    }
}

/// The outcome of a write answered with an `error` frame of `status`, and whether to retry.
pub fn error_outcome(status: u16) -> (Outcome, bool) {
    hyper::StatusCode::from_u16(status).map_or((Outcome::Info, true), status_outcome)
}

impl ChatSocket {
    /// Opens a chat socket for `tenant` at `endpoint` within `timeout` (connect and upgrade).
    /// A refused connection marks the endpoint down for a second, as the HTTP client does.
    pub async fn open(
        endpoint: &Arc<Endpoint>,
        tenant: &str,
        timeout: Duration,
    ) -> Result<Self, ConnectFailure> {
        Self::open_as(endpoint, tenant, tenant, timeout).await
    }

    /// Like [`Self::open`], with `header_tenant` in `X-Tenant-Id` (the contract checker's
    /// mismatch; the contract says a service refuses it).
    pub async fn open_as(
        endpoint: &Arc<Endpoint>,
        tenant: &str,
        header_tenant: &str,
        timeout: Duration,
    ) -> Result<Self, ConnectFailure> {
        let fail = |error: String| ConnectFailure {
            node: endpoint.node.clone(),
            error,
            status: None,
        };
        let addr = endpoint.pool.addr();
        let stream = match endpoint.pool.connect(timeout).await {
            Ok(s) => s,
            Err(f) => {
                endpoint.mark_down(Duration::from_secs(1));
                return Err(fail(f.describe(addr)));
            }
        };
        let uri = format!("ws://{addr}{}", chat_path(tenant));
        let builder = ClientBuilder::new()
            .uri(&uri)
            .map_err(|e| fail(format!("bad chat socket address {uri}: {e}")))?;
        let builder = match HeaderValue::from_str(header_tenant) {
            Ok(v) => builder
                .add_header(HeaderName::from_static(TENANT_HEADER), v)
                .map_err(|e| fail(e.to_string()))?,
            Err(e) => return Err(fail(format!("tenant {tenant} is no header value: {e}"))),
        };
        let (socket, response) =
            match tokio::time::timeout(timeout, builder.connect_on(stream)).await {
                Ok(Ok(pair)) => pair,
                Ok(Err(e)) => {
                    let status = match e {
                        tokio_websockets::Error::Upgrade(
                            tokio_websockets::upgrade::Error::DidNotSwitchProtocols(status),
                        ) => Some(status),
                        _ => None,
                    };
                    return Err(ConnectFailure {
                        status,
                        ..fail(format!("chat socket upgrade at {addr} failed: {e}"))
                    });
                }
                Err(_) => return Err(fail(format!("no chat socket upgrade from {addr} in time"))),
            };
        let node = response
            .headers()
            .get(SERVED_BY_HEADER)
            .and_then(|v| v.to_str().ok())
            .map_or_else(|| endpoint.node.clone(), str::to_owned);
        Ok(Self {
            socket,
            node,
            endpoint: endpoint.clone(),
        })
    }

    /// Whether the socket is known to be gone: the server closed it or it broke while idle.
    /// Looks without waiting.
    pub fn is_gone(&mut self) -> bool {
        loop {
            match self.socket.next().now_or_never() {
                None => return false,
                Some(Some(Ok(frame))) if frame.is_ping() || frame.is_pong() => {}
                // A close, an error, the end, or a frame nobody asked for: not usable.
                Some(_) => return true,
            }
        }
    }

    /// Sends one request and waits up to `timeout` for its reply.
    pub async fn request(
        &mut self,
        request: &ChatRequest,
        timeout: Duration,
    ) -> Result<ChatReply, SocketFailure> {
        let text = serde_json::to_string(request)
            .map_err(|e| SocketFailure::NotSent(format!("cannot encode the chat frame: {e}")))?;
        self.request_text(text, timeout).await
    }

    /// Sends one text frame and waits up to `timeout` for the reply frame.
    pub async fn request_text(
        &mut self,
        text: String,
        timeout: Duration,
    ) -> Result<ChatReply, SocketFailure> {
        let exchange = async {
            // A frame the sink refuses to take was not sent; once taken, it may have been.
            self.socket
                .feed(Message::text(text))
                .await
                .map_err(|e| SocketFailure::NotSent(e.to_string()))?;
            self.socket
                .flush()
                .await
                .map_err(|e| SocketFailure::Lost(e.to_string()))?;
            loop {
                match self.socket.next().await {
                    Some(Ok(frame)) if frame.is_ping() || frame.is_pong() => {}
                    Some(Ok(frame)) => {
                        if let Some((code, reason)) = frame.as_close() {
                            return Err(SocketFailure::Lost(format!(
                                "closed by the server ({code:?} {reason})"
                            )));
                        }
                        let Some(text) = frame.as_text() else {
                            return Err(SocketFailure::Lost("a binary frame, not a reply".into()));
                        };
                        return serde_json::from_str(text).map_err(|e| {
                            SocketFailure::Lost(format!("unreadable reply frame: {e}"))
                        });
                    }
                    Some(Err(e)) => return Err(SocketFailure::Lost(e.to_string())),
                    None => return Err(SocketFailure::Lost("closed by the server".into())),
                }
            }
        };
        tokio::time::timeout(timeout, exchange)
            .await
            .unwrap_or(Err(SocketFailure::Timeout))
    }

    /// Closes the socket politely (a close frame), without waiting long for the answer.
    pub async fn close(mut self) {
        let _ = tokio::time::timeout(Duration::from_millis(200), self.socket.close()).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcome_table() {
        assert_eq!(error_outcome(503), (Outcome::Fail, true));
        assert_eq!(error_outcome(400), (Outcome::Fail, false));
        assert_eq!(error_outcome(504), (Outcome::Info, true));
        assert_eq!(error_outcome(1), (Outcome::Info, true));
        assert_eq!(
            SocketFailure::NotSent("x".into()).write_outcome(),
            Outcome::Fail
        );
        assert_eq!(SocketFailure::Timeout.write_outcome(), Outcome::Info);
        assert_eq!(
            SocketFailure::Lost("reset".into()).write_outcome(),
            Outcome::Info
        );
    }
}
