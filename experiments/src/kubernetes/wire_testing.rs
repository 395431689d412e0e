//! Test support for wire-format tests: a `kube::Client` whose every request lands in a
//! tower-test mock, and a step function that takes the next request, decodes it (method, path,
//! query, content type, JSON body) and answers it. Tests then assert request by request what
//! went over the wire, as the API server would see it.
//!
//! Public so the tests of every crate share one copy; nothing outside tests uses it.

#![allow(clippy::missing_panics_doc)] // Test support: a malformed request is the test's failure.

use std::collections::BTreeMap;
use std::time::Duration;

use http::{Request, Response};
use http_body_util::BodyExt;
use kube::client::Body;
use serde_json::Value;

/// The test's end of the mock: requests come out, responses go in.
pub type Handle = tower_test::mock::Handle<Request<Body>, Response<Body>>;

/// A client talking to the mock (default namespace `default`), and the mock's handle.
pub fn mock() -> (kube::Client, Handle) {
    let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    (kube::Client::new(service, "default"), handle)
}

/// One request as received, decoded.
#[derive(Clone, Debug, PartialEq)]
pub struct Seen {
    /// `GET`, `POST`, `PUT`, `PATCH`, `DELETE`.
    pub method: String,
    /// The path, without the query.
    pub path: String,
    /// The query, percent-decoded.
    pub query: BTreeMap<String, String>,
    /// `Content-Type`, or empty.
    pub content_type: String,
    /// The body as JSON; `Null` when empty or not JSON.
    pub body: Value,
}

impl Seen {
    /// A query parameter, if present.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.query.get(name).map(String::as_str)
    }
}

/// Takes the next request (within 5 s, else the test fails), answers it with `status` and the
/// JSON `respond`, and returns it decoded.
pub async fn next(handle: &mut Handle, status: u16, respond: &Value) -> Seen {
    let (seen, send) = take(handle).await;
    send.send_response(
        Response::builder()
            .status(status)
            .header("content-type", "application/json")
            .body(Body::from(respond.to_string().into_bytes()))
            .expect("response"),
    );
    seen
}

/// Takes the next request and answers it with `status`, `content_type` and raw bytes (reports,
/// HTML, anything that is not an API object).
pub async fn next_raw(handle: &mut Handle, status: u16, content_type: &str, body: &[u8]) -> Seen {
    let (seen, send) = take(handle).await;
    send.send_response(
        Response::builder()
            .status(status)
            .header("content-type", content_type)
            .body(Body::from(body.to_vec()))
            .expect("response"),
    );
    seen
}

async fn take(handle: &mut Handle) -> (Seen, tower_test::mock::SendResponse<Response<Body>>) {
    let (request, send) = tokio::time::timeout(Duration::from_secs(5), handle.next_request())
        .await
        .expect("a request within 5 s")
        .expect("a request");
    let (parts, body) = request.into_parts();
    let bytes = body.collect().await.expect("body").to_bytes();
    let seen = Seen {
        method: parts.method.to_string(),
        path: parts.uri.path().to_owned(),
        query: parts
            .uri
            .query()
            .unwrap_or_default()
            .split('&')
            .filter(|p| !p.is_empty())
            .map(|pair| {
                let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                (k.to_owned(), decode(v))
            })
            .collect(),
        content_type: parts
            .headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned(),
        body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    };
    (seen, send)
}

/// Percent-decodes a query value (`+` is a space).
pub fn decode(text: &str) -> String {
    let text = text.replace('+', " ");
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let Ok(byte) = u8::from_str_radix(&text[i + 1..i + 3], 16) {
                out.push(byte);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    #[test]
    fn query_values_decode() {
        assert_eq!(super::decode("a%3Db+c%2Cd"), "a=b c,d");
        assert_eq!(super::decode("100%"), "100%");
    }
}
