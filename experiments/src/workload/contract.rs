//! The HTTP tenant-records contract, shared by the load's HTTP adapter and the lab's tenant
//! gateway. docs/workload.md specifies it for users who put their own services behind it.
//!
//! - `GET /healthz`: 200 when the service can serve, 503 when it cannot.
//! - `PUT /v1/tenants/{tenant}`: provision the tenant (idempotent): 201 created, 200 existed.
//! - `DELETE /v1/tenants/{tenant}`: remove the tenant and all its records: 204 (also when it did
//!   not exist).
//! - `POST /v1/tenants/{tenant}/records`: store one record. The body is the record's payload;
//!   `Idempotency-Key` carries the record's unique id; `X-Record-Kind` says which pattern wrote
//!   it. 201 with a [`WriteAck`] when stored; 503 when certainly not stored; 504 (or any other
//!   5xx) when the outcome is unknown; 4xx for a bad request (not stored).
//! - `GET /v1/tenants/{tenant}/records?from_seq=N&limit=M`: the tenant's records from position N
//!   on, in order, at most M: 200 with a [`RecordList`].
//!
//! - `GET /v1/tenants/{tenant}/chat` with `Upgrade: websocket` (optional): a chat session's
//!   WebSocket. Each text frame the client sends is a [`ChatRequest`]; the service answers each
//!   with exactly one [`ChatReply`] frame, in order, on the same socket. The statuses inside
//!   error replies mean what they mean over HTTP.
//!
//! Every request carries the tenant twice, in the path and in `X-Tenant-Id`; a service must
//! refuse a request where they differ (400). Responses name the lab node of the replica that
//! served them in `X-Served-By`. Tenant ids, unknown tenants and sequence numbers are as
//! docs/workload.md states; [`super::conformance`] checks a running endpoint against all of it.

use serde::{Deserialize, Serialize};

/// Header carrying the tenant id (it must equal the one in the path).
pub const TENANT_HEADER: &str = "x-tenant-id";
/// Header carrying a record's unique id, which makes retries idempotent.
pub const IDEMPOTENCY_HEADER: &str = "idempotency-key";
/// Header naming the pattern that wrote a record (`chat`, `batch`, `job`, `idle`).
pub const KIND_HEADER: &str = "x-record-kind";
/// Response header naming the replica (node) that served the request.
pub const SERVED_BY_HEADER: &str = "x-served-by";
/// Most records one read returns.
pub const MAX_READ_LIMIT: u32 = 1000;

/// `/v1/tenants/{tenant}`.
pub fn tenant_path(tenant: &str) -> String {
    format!("/v1/tenants/{tenant}")
}

/// `/v1/tenants/{tenant}/records`.
pub fn records_path(tenant: &str) -> String {
    format!("/v1/tenants/{tenant}/records")
}

/// `/v1/tenants/{tenant}/chat`, the chat WebSocket.
pub fn chat_path(tenant: &str) -> String {
    format!("/v1/tenants/{tenant}/chat")
}

/// Whether a tenant id is acceptable: 1 to 64 ASCII letters, digits, `_` or `-`.
pub fn valid_tenant(tenant: &str) -> bool {
    (1..=64).contains(&tenant.len())
        && tenant
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Whether a record kind is acceptable: 1 to 16 lowercase ASCII letters.
pub fn valid_kind(kind: &str) -> bool {
    (1..=16).contains(&kind.len()) && kind.bytes().all(|b| b.is_ascii_lowercase())
}

/// Whether a record id is acceptable: 1 to 256 visible ASCII characters.
pub fn valid_id(id: &str) -> bool {
    (1..=256).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_graphic())
}

/// Body of a 201 answer to a record write.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WriteAck {
    /// The tenant the record was stored for.
    pub tenant: String,
    /// The record id (the idempotency key).
    pub id: String,
    /// Position assigned to the record; absent when the service acknowledged before storing
    /// (the gateway's unsafe mode).
    #[serde(default)]
    pub seq: Option<u64>,
    /// Whether an earlier request with the same id had stored it already.
    #[serde(default)]
    pub duplicate: bool,
}

/// Whether a failed request stored anything.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stored {
    /// Certainly not.
    No,
    /// Unknown.
    Unknown,
}

/// Body of an error answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// What went wrong.
    pub error: String,
    /// For writes: whether anything was stored.
    pub stored: Stored,
}

/// One record as a read returns it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordItem {
    /// Position.
    pub seq: u64,
    /// Record id.
    pub id: String,
}

/// Body of a 200 answer to a read.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordList {
    /// The tenant whose records these are, according to the service.
    pub tenant: String,
    /// The records, in position order.
    pub records: Vec<RecordItem>,
    /// Where the next page starts.
    pub next_seq: u64,
    /// Whether the read stopped at its limit (more records may follow).
    pub more: bool,
}

/// One frame a chat client sends on its WebSocket (a JSON text frame).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum ChatRequest {
    /// Store one chat message as a record of kind `chat`, as `POST …/records` would.
    Write {
        /// The record's unique id (the idempotency key; a retry sends the same one).
        id: String,
        /// The record's payload, stored as its UTF-8 bytes.
        payload: String,
    },
    /// Read the tenant's records, as `GET …/records` would.
    Read {
        /// First position (default 1).
        #[serde(default = "first_seq")]
        from_seq: u64,
        /// Most records (default 100, at most [`MAX_READ_LIMIT`]).
        #[serde(default = "default_limit")]
        limit: u32,
    },
}

fn first_seq() -> u64 {
    1
}

fn default_limit() -> u32 {
    100
}

/// The one frame a service answers a [`ChatRequest`] with. Every reply names the node of the
/// replica that served it, as `X-Served-By` does over HTTP.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum ChatReply {
    /// The write was stored (a 201 over HTTP).
    Ack {
        /// The record id.
        id: String,
        /// Its position, as in [`WriteAck`].
        #[serde(default)]
        seq: Option<u64>,
        /// Whether an earlier request with the same id had stored it.
        #[serde(default)]
        duplicate: bool,
        /// The node of the replica that served.
        node: String,
    },
    /// The read's records (a 200 over HTTP), as in [`RecordList`].
    Records {
        /// Whose records these are, according to the service.
        tenant: String,
        /// In position order.
        records: Vec<RecordItem>,
        /// Where the next page starts.
        next_seq: u64,
        /// Whether the read stopped at its limit.
        more: bool,
        /// The node of the replica that served.
        node: String,
    },
    /// The request failed: `status` and `stored` mean what they mean over HTTP (503 certainly
    /// not stored, 502/504/500 unknown, 400 a bad frame).
    Error {
        /// The id of the write it answers; absent for a read or an unreadable frame.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<String>,
        /// The HTTP status the same failure has over HTTP.
        status: u16,
        /// Whether anything was stored.
        stored: Stored,
        /// What went wrong.
        error: String,
        /// The node of the replica that served.
        node: String,
    },
}

impl ChatReply {
    /// The node the reply names.
    pub fn node(&self) -> &str {
        match self {
            ChatReply::Ack { node, .. }
            | ChatReply::Records { node, .. }
            | ChatReply::Error { node, .. } => node,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation_table() {
        for (tenant, ok) in [
            ("t001", true),
            ("", false),
            ("a/b", false),
            ("x".repeat(65).as_str(), false),
            ("Acme_1-x", true),
        ] {
            assert_eq!(valid_tenant(tenant), ok, "{tenant}");
        }
        for (kind, ok) in [("chat", true), ("Chat", false), ("", false), ("job", true)] {
            assert_eq!(valid_kind(kind), ok, "{kind}");
        }
        for (id, ok) in [("t001/c1/1", true), ("a b", false), ("", false)] {
            assert_eq!(valid_id(id), ok, "{id}");
        }
        assert_eq!(records_path("t001"), "/v1/tenants/t001/records");
        let ack: WriteAck =
            serde_json::from_str(r#"{"tenant":"t","id":"i"}"#).expect("minimal ack");
        assert_eq!(ack.seq, None);
        assert!(!ack.duplicate);
    }

    #[test]
    fn chat_frames_are_the_documented_json() {
        let write: ChatRequest =
            serde_json::from_str(r#"{"op":"write","id":"t001/c1/1","payload":"hi"}"#)
                .expect("write frame");
        assert_eq!(
            write,
            ChatRequest::Write {
                id: "t001/c1/1".into(),
                payload: "hi".into()
            }
        );
        let read: ChatRequest = serde_json::from_str(r#"{"op":"read"}"#).expect("read frame");
        assert_eq!(
            read,
            ChatRequest::Read {
                from_seq: 1,
                limit: 100
            }
        );
        assert!(serde_json::from_str::<ChatRequest>(r#"{"op":"delete"}"#).is_err());
        assert!(
            serde_json::from_str::<ChatRequest>(r#"{"op":"read","from_seq":1,"x":2}"#).is_err()
        );
        let ack = ChatReply::Ack {
            id: "t001/c1/1".into(),
            seq: Some(3),
            duplicate: false,
            node: "a1".into(),
        };
        assert_eq!(
            serde_json::to_string(&ack).expect("json"),
            r#"{"op":"ack","id":"t001/c1/1","seq":3,"duplicate":false,"node":"a1"}"#
        );
        let error = ChatReply::Error {
            id: None,
            status: 503,
            stored: Stored::No,
            error: "down".into(),
            node: "b1".into(),
        };
        assert_eq!(
            serde_json::to_string(&error).expect("json"),
            r#"{"op":"error","status":503,"stored":"no","error":"down","node":"b1"}"#
        );
        assert_eq!(error.node(), "b1");
    }
}
