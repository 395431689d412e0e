//! The contract conformance checker behind `chaosctl contract check URL`: it exercises one
//! running endpoint of the HTTP tenant-records contract ([`super::contract`], specified in
//! docs/workload.md) and reports every deviation, each with the rule it breaks and what came
//! back. It provisions two tenants of its own (named `cc<unique>-a` and `-b`), writes a few
//! records, reads them, sends requests the contract says must be refused, and deletes its
//! tenants at the end.
//!
//! When the endpoint offers the optional chat WebSocket (`GET …/chat` upgrades), the checker
//! also opens one and checks its frames; an endpoint that answers 404 there does not offer it,
//! and those checks are skipped.
//!
//! The checker goes on after a deviation, so one run names all of them; a step whose
//! precondition failed (e.g. reads, when no write was acknowledged) is reported as skipped.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use hyper::{Method, StatusCode};
use serde::Serialize;

use super::chat_ws::ChatSocket;
use super::contract::{
    chat_path, records_path, tenant_path, ChatReply, ChatRequest, RecordList, Stored, WriteAck,
    IDEMPOTENCY_HEADER, KIND_HEADER, TENANT_HEADER,
};
use super::http::Endpoint;
use super::httpc::{Pool, Response};
use super::target::HttpEndpoint;

/// How the checker runs.
#[derive(Clone, Debug)]
pub struct ConformanceOptions {
    /// The endpoint.
    pub addr: SocketAddr,
    /// The node names `X-Served-By` may take (a lab's nodes); empty: any non-empty name.
    pub nodes: Vec<String>,
    /// Per request.
    pub timeout: Duration,
    /// How long an acknowledged write may take to show in a read (a read may be answered by a
    /// replica that is behind).
    pub read_wait: Duration,
    /// Makes the checker's tenant names unique (e.g. the PID and the time).
    pub unique: String,
}

/// One rule of the contract, checked.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// Short name of the check, e.g. `write-duplicate`.
    pub check: &'static str,
    /// What the contract requires.
    pub rule: String,
    /// Whether the endpoint did it.
    pub verdict: FindingVerdict,
    /// What came back, when it deviated or was skipped.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub detail: String,
}

/// A finding's verdict.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FindingVerdict {
    /// As the contract says.
    Conforms,
    /// Not as the contract says.
    Deviates,
    /// Not checked: an earlier step it needs failed.
    Skipped,
}

/// Everything one check run found.
#[derive(Clone, Debug, Serialize)]
pub struct ConformanceReport {
    /// The endpoint.
    pub endpoint: String,
    /// Every check, in the order run.
    pub findings: Vec<Finding>,
}

impl ConformanceReport {
    /// The findings that deviate.
    pub fn deviations(&self) -> impl Iterator<Item = &Finding> {
        self.findings
            .iter()
            .filter(|f| f.verdict == FindingVerdict::Deviates)
    }

    /// Whether nothing deviated (skipped checks follow from a deviation, so they never occur
    /// alone).
    pub fn conforms(&self) -> bool {
        self.deviations().next().is_none()
    }

    /// The report for a terminal: one line per check, then the count.
    pub fn render(&self) -> String {
        let mut out = format!("contract check of http://{}\n", self.endpoint);
        for f in &self.findings {
            let mark = match f.verdict {
                FindingVerdict::Conforms => "ok  ",
                FindingVerdict::Deviates => "FAIL",
                FindingVerdict::Skipped => "skip",
            };
            let _ = writeln!(out, "  {mark} {:<24} {}", f.check, f.rule);
            if !f.detail.is_empty() {
                let _ = writeln!(out, "       {:<24} got: {}", "", f.detail);
            }
        }
        let deviations = self.deviations().count();
        if deviations == 0 {
            out += "conforms: every check passed\n";
        } else {
            let _ = writeln!(
                out,
                "{deviations} deviation(s): {}; the contract is in docs/workload.md, \"The HTTP tenant-records contract\"",
                self.deviations().map(|f| f.check).collect::<Vec<_>>().join(", ")
            );
        }
        out
    }
}

struct Checker {
    pool: Pool,
    options: ConformanceOptions,
    findings: Vec<Finding>,
    /// `X-Served-By` values that are missing or not a known node, with the request.
    served_by_problems: Vec<String>,
}

fn describe(response: &Result<Response, String>) -> String {
    match response {
        Ok(r) => {
            let body = String::from_utf8_lossy(&r.body);
            let body: String = body.chars().take(160).collect();
            format!("{} {body}", r.status.as_u16())
        }
        Err(e) => e.clone(),
    }
}

fn status_is(response: &Result<Response, String>, wanted: &[u16]) -> bool {
    matches!(response, Ok(r) if wanted.contains(&r.status.as_u16()))
}

impl Checker {
    fn record(&mut self, check: &'static str, rule: &str, ok: bool, detail: impl Into<String>) {
        self.findings.push(Finding {
            check,
            rule: rule.to_owned(),
            verdict: if ok {
                FindingVerdict::Conforms
            } else {
                FindingVerdict::Deviates
            },
            detail: if ok { String::new() } else { detail.into() },
        });
    }

    fn skip(&mut self, check: &'static str, rule: &str, why: &str) {
        self.findings.push(Finding {
            check,
            rule: rule.to_owned(),
            verdict: FindingVerdict::Skipped,
            detail: why.to_owned(),
        });
    }

    async fn send(
        &mut self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: &'static [u8],
    ) -> Result<Response, String> {
        let what = format!("{method} {path}");
        let result = self
            .pool
            .send(
                method,
                path,
                headers,
                Bytes::from_static(body),
                self.options.timeout,
            )
            .await
            .map_err(|e| format!("{what}: {}", e.describe(self.options.addr)));
        if let Ok(r) = &result {
            self.note_served_by(&what, r.served_by.as_deref());
        }
        result
    }

    /// Notes a missing `X-Served-By`, or one that is not a lab node.
    fn note_served_by(&mut self, what: &str, served_by: Option<&str>) {
        match served_by {
            None | Some("") => self.served_by_problems.push(format!("{what}: none")),
            Some(node)
                if !self.options.nodes.is_empty()
                    && !self.options.nodes.iter().any(|n| n == node) =>
            {
                self.served_by_problems
                    .push(format!("{what}: `{node}` is not a lab node"));
            }
            Some(_) => {}
        }
    }

    async fn write(&mut self, tenant: &str, id: &str) -> Result<Response, String> {
        self.send(
            Method::POST,
            &records_path(tenant),
            &[
                (TENANT_HEADER, tenant),
                (IDEMPOTENCY_HEADER, id),
                (KIND_HEADER, "chat"),
            ],
            b"conformance check record",
        )
        .await
    }

    async fn read(&mut self, tenant: &str, from: u64, limit: u32) -> Result<Response, String> {
        self.send(
            Method::GET,
            &format!("{}?from_seq={from}&limit={limit}", records_path(tenant)),
            &[(TENANT_HEADER, tenant)],
            b"",
        )
        .await
    }

    /// A 201 write's acknowledgement, checked against the tenant and id it was for.
    fn ack_of(
        response: &Result<Response, String>,
        tenant: &str,
        id: &str,
    ) -> Result<WriteAck, String> {
        let r = response.as_ref().map_err(Clone::clone)?;
        if r.status != StatusCode::CREATED {
            return Err(describe(response));
        }
        let ack: WriteAck = serde_json::from_slice(&r.body)
            .map_err(|e| format!("201 with a body that is not a write acknowledgement: {e}"))?;
        if ack.tenant != tenant || ack.id != id {
            return Err(format!(
                "acknowledged tenant `{}` id `{}` for tenant `{tenant}` id `{id}`",
                ack.tenant, ack.id
            ));
        }
        Ok(ack)
    }

    /// Reads `tenant` from position 1 until every id of `expected` shows (or `read_wait`
    /// passes): the last list read, or why there is none.
    async fn read_until(&mut self, tenant: &str, expected: &[&str]) -> Result<RecordList, String> {
        let deadline = Instant::now() + self.options.read_wait;
        loop {
            let response = self.read(tenant, 1, 1000).await;
            let list = match &response {
                Ok(r) if r.status == StatusCode::OK => {
                    serde_json::from_slice::<RecordList>(&r.body)
                        .map_err(|e| format!("200 with a body that is not a record list: {e}"))
                }
                _ => Err(describe(&response)),
            };
            let complete = list.as_ref().is_ok_and(|l| {
                expected
                    .iter()
                    .all(|id| l.records.iter().any(|r| r.id == *id))
            });
            if complete || Instant::now() >= deadline {
                return list;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// Whether a chat reply is an ack of `id` (duplicate or not as `duplicate`), naming a node; its
/// seq.
fn chat_ack(reply: &Result<ChatReply, String>, id: &str, duplicate: bool) -> Result<u64, String> {
    match reply {
        Ok(ChatReply::Ack {
            id: acked,
            seq: Some(seq),
            duplicate: d,
            node,
        }) if acked == id && *d == duplicate && *seq > 0 && !node.is_empty() => Ok(*seq),
        Ok(other) => Err(format!("{other:?}")),
        Err(e) => Err(e.clone()),
    }
}

/// The chat socket's checks, when the endpoint offers it. `after` is the seq of the tenant's
/// last HTTP write.
#[allow(clippy::too_many_lines)] // one check after another, in the contract doc's order
async fn check_chat(checker: &mut Checker, tenant: &str, other: &str, after: Option<u64>) {
    let timeout = checker.options.timeout;
    let endpoint = Arc::new(Endpoint::new(
        &HttpEndpoint {
            // Empty, so a 101 without X-Served-By shows as no node.
            node: String::new(),
            addr: checker.options.addr,
        },
        None,
    ));
    let rule = "GET .../chat with Upgrade: websocket and X-Tenant-Id answers 101 naming the node in X-Served-By (or 404: not offered)";
    let mut socket = match ChatSocket::open(&endpoint, tenant, timeout).await {
        Ok(socket) => {
            checker.note_served_by(&format!("GET {}", chat_path(tenant)), Some(&socket.node));
            checker.record("chat-upgrade", rule, true, "");
            socket
        }
        Err(f) if f.status == Some(404) => {
            for check in CHAT_CHECKS {
                checker.skip(
                    check,
                    "the chat socket (optional)",
                    "not offered: the upgrade answered 404",
                );
            }
            return;
        }
        Err(f) => {
            checker.record("chat-upgrade", rule, false, f.error);
            for check in &CHAT_CHECKS[1..] {
                checker.skip(check, "the chat socket", "no socket could be opened");
            }
            return;
        }
    };
    let ask = async |socket: &mut ChatSocket, request: &ChatRequest| {
        socket
            .request(request, timeout)
            .await
            .map_err(|f| f.describe("the endpoint"))
    };

    // A session: five messages in a row, each acknowledged in order on the same socket.
    let ids: Vec<String> = (1..=5).map(|k| format!("{tenant}/chat-{k}")).collect();
    let mut seqs = Vec::new();
    let mut problem = None;
    for id in &ids {
        let request = ChatRequest::Write {
            id: id.clone(),
            payload: "conformance check chat message".to_owned(),
        };
        match chat_ack(&ask(&mut socket, &request).await, id, false) {
            Ok(seq) => seqs.push(seq),
            Err(e) => {
                problem = Some(format!("{id}: {e}"));
                break;
            }
        }
    }
    let ordered = seqs.windows(2).all(|w| w[0] < w[1])
        && after.is_none_or(|a| seqs.first().is_some_and(|s| *s > a));
    checker.record(
        "chat-write",
        "each write frame is answered on the socket with {op: ack, id, seq, duplicate: false, node}, seqs increasing",
        problem.is_none() && ordered,
        problem.unwrap_or_else(|| format!("seqs {seqs:?} after {after:?}")),
    );
    let rule =
        "a write frame repeating an id is answered {op: ack, duplicate: true} at the first seq";
    match seqs.first() {
        Some(first) => {
            let request = ChatRequest::Write {
                id: ids[0].clone(),
                payload: "conformance check chat message".to_owned(),
            };
            let reply = ask(&mut socket, &request).await;
            let again = chat_ack(&reply, &ids[0], true);
            checker.record(
                "chat-duplicate",
                rule,
                again.as_ref().is_ok_and(|s| s == first),
                format!("{again:?} (first seq {first})"),
            );
        }
        None => checker.skip("chat-duplicate", rule, "no chat write was acknowledged"),
    }

    // The reply read: the session's messages from its first seq on, in order.
    let rule = "a read frame is answered {op: records, tenant, records, next_seq, more, node} with the acknowledged messages in seq order";
    if let Some(first) = seqs.first().copied() {
        let deadline = Instant::now() + checker.options.read_wait;
        let request = ChatRequest::Read {
            from_seq: first,
            limit: 1000,
        };
        loop {
            let reply = ask(&mut socket, &request).await;
            let got: Option<Vec<(u64, String)>> = match &reply {
                Ok(ChatReply::Records {
                    tenant: named,
                    records,
                    node,
                    ..
                }) if named == tenant && !node.is_empty() => {
                    Some(records.iter().map(|r| (r.seq, r.id.clone())).collect())
                }
                _ => None,
            };
            let wanted: Vec<(u64, String)> =
                seqs.iter().copied().zip(ids.iter().cloned()).collect();
            let ok = got.as_ref() == Some(&wanted);
            if ok || Instant::now() >= deadline {
                checker.record(
                    "chat-read",
                    rule,
                    ok,
                    format!("{reply:?}; wanted {wanted:?}"),
                );
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    } else {
        checker.skip("chat-read", rule, "no chat write was acknowledged");
    }

    // A frame that is not a request is refused on the socket, which stays usable.
    let bad = socket
        .request_text("not a chat frame".to_owned(), timeout)
        .await;
    let refused = matches!(
        &bad,
        Ok(ChatReply::Error {
            status: 400,
            stored: Stored::No,
            ..
        })
    );
    let still = ask(
        &mut socket,
        &ChatRequest::Read {
            from_seq: 1,
            limit: 1,
        },
    )
    .await;
    checker.record(
        "chat-bad-frame",
        "a frame that is not a JSON request is answered {op: error, status: 400, stored: no} and the socket stays open",
        refused && matches!(still, Ok(ChatReply::Records { .. })),
        format!("{bad:?}; then {still:?}"),
    );
    socket.close().await;

    // The tenant rules hold for the socket too.
    let mismatch = ChatSocket::open_as(&endpoint, tenant, other, timeout).await;
    checker.record(
        "chat-tenant-mismatch",
        "an upgrade whose X-Tenant-Id differs from the path's tenant is refused with 400",
        matches!(&mismatch, Err(f) if f.status == Some(400)),
        match &mismatch {
            Ok(_) => "101: the socket was opened".to_owned(),
            Err(f) => f.error.clone(),
        },
    );
    let plain = checker
        .send(
            Method::GET,
            &chat_path(tenant),
            &[(TENANT_HEADER, tenant)],
            b"",
        )
        .await;
    checker.record(
        "chat-no-upgrade",
        "GET .../chat without Upgrade: websocket answers 426",
        status_is(&plain, &[426]),
        describe(&plain),
    );
}

/// The chat socket's checks, in order (all skipped when it is not offered).
const CHAT_CHECKS: [&str; 7] = [
    "chat-upgrade",
    "chat-write",
    "chat-duplicate",
    "chat-read",
    "chat-bad-frame",
    "chat-tenant-mismatch",
    "chat-no-upgrade",
];

/// Runs every check against `options.addr`. Never fails: what cannot be reached is a deviation.
#[allow(clippy::too_many_lines)] // one check after another, in the contract doc's order
pub async fn check_endpoint(options: ConformanceOptions) -> ConformanceReport {
    let mut checker = Checker {
        pool: Pool::new(options.addr, 2),
        findings: Vec::new(),
        served_by_problems: Vec::new(),
        options,
    };
    let tenant_a = format!("cc{}-a", checker.options.unique);
    let tenant_b = format!("cc{}-b", checker.options.unique);
    let never = format!("cc{}-never", checker.options.unique);

    let health = checker.send(Method::GET, "/healthz", &[], b"").await;
    checker.record(
        "health",
        "GET /healthz answers 200 when the replica can serve",
        status_is(&health, &[200]),
        describe(&health),
    );

    // Provisioning.
    let first = checker
        .send(
            Method::PUT,
            &tenant_path(&tenant_a),
            &[(TENANT_HEADER, &tenant_a)],
            b"",
        )
        .await;
    let provisioned = status_is(&first, &[201]);
    checker.record(
        "provision",
        "PUT /v1/tenants/{tenant} of a new tenant answers 201",
        provisioned,
        describe(&first),
    );
    let again = checker
        .send(
            Method::PUT,
            &tenant_path(&tenant_a),
            &[(TENANT_HEADER, &tenant_a)],
            b"",
        )
        .await;
    checker.record(
        "provision-again",
        "PUT of a tenant that exists answers 200 (idempotent)",
        status_is(&again, &[200]),
        describe(&again),
    );

    // Writes: acknowledged with the tenant, the id and a position; a retry is a duplicate
    // at the same position; a later write gets a greater position.
    let id1 = format!("{tenant_a}/1");
    let id2 = format!("{tenant_a}/2");
    let w1 = checker.write(&tenant_a, &id1).await;
    let ack1 = Checker::ack_of(&w1, &tenant_a, &id1);
    let rule = "POST .../records answers 201 {tenant, id, seq, duplicate: false} for a new id";
    match &ack1 {
        Ok(ack) if ack.duplicate || ack.seq.is_none_or(|s| s == 0) => checker.record(
            "write",
            rule,
            false,
            format!("seq {:?}, duplicate {}", ack.seq, ack.duplicate),
        ),
        Ok(_) => checker.record("write", rule, true, ""),
        Err(e) => checker.record("write", rule, false, e.clone()),
    }
    let seq1 = ack1.as_ref().ok().and_then(|tenant_a| tenant_a.seq);
    let retry = checker.write(&tenant_a, &id1).await;
    let rule = "a retry with the same Idempotency-Key answers 201 duplicate: true at the first write's seq";
    match (seq1, Checker::ack_of(&retry, &tenant_a, &id1)) {
        (None, _) => checker.skip(
            "write-duplicate",
            rule,
            "no first write was acknowledged with a seq",
        ),
        (Some(s), Ok(ack)) => checker.record(
            "write-duplicate",
            rule,
            ack.duplicate && ack.seq == Some(s),
            format!(
                "seq {:?}, duplicate {} (first seq {s})",
                ack.seq, ack.duplicate
            ),
        ),
        (Some(_), Err(e)) => checker.record("write-duplicate", rule, false, e),
    }
    let w2 = checker.write(&tenant_a, &id2).await;
    let seq2 = Checker::ack_of(&w2, &tenant_a, &id2)
        .ok()
        .and_then(|tenant_a| tenant_a.seq);
    let rule = "a later write of the tenant gets a greater seq (gaps allowed)";
    match (seq1, seq2) {
        (Some(s1), Some(s2)) => {
            checker.record("write-order", rule, s2 > s1, format!("seq {s2} after {s1}"));
        }
        (_, None) => checker.record("write-order", rule, false, describe(&w2)),
        (None, _) => checker.skip("write-order", rule, "the first write has no seq"),
    }

    // Reads: both records in position order, once each, at their acknowledged positions.
    let rule = "GET .../records?from_seq=1 answers 200 {tenant, records in seq order, next_seq, more}, each acknowledged write once at its seq";
    if let (Some(s1), Some(s2)) = (seq1, seq2) {
        let expected = [id1.as_str(), id2.as_str()];
        match checker.read_until(&tenant_a, &expected).await {
            Ok(list) => {
                let got: Vec<(u64, &str)> = list
                    .records
                    .iter()
                    .map(|r| (r.seq, r.id.as_str()))
                    .collect();
                let ok = list.tenant == tenant_a
                    && got == [(s1, id1.as_str()), (s2, id2.as_str())]
                    && !list.more
                    && list.next_seq > s2;
                checker.record(
                    "read",
                    rule,
                    ok,
                    format!(
                        "tenant `{}`, records {got:?}, next_seq {}, more {} (expected {s1} {id1}, {s2} {id2})",
                        list.tenant, list.next_seq, list.more
                    ),
                );
                let page = checker.read(&tenant_a, 1, 1).await;
                let rule =
                    "limit=1 returns one record, more: true, and next_seq where the rest starts";
                match &page {
                    Ok(r) if r.status == StatusCode::OK => {
                        match serde_json::from_slice::<RecordList>(&r.body) {
                            Ok(p) => {
                                let ok = p.records.len() == 1
                                    && p.records[0].id == id1
                                    && p.more
                                    && p.next_seq > s1
                                    && p.next_seq <= s2;
                                checker.record(
                                    "read-page",
                                    rule,
                                    ok,
                                    format!(
                                        "{} record(s), more {}, next_seq {}",
                                        p.records.len(),
                                        p.more,
                                        p.next_seq
                                    ),
                                );
                            }
                            Err(e) => checker.record("read-page", rule, false, e.to_string()),
                        }
                    }
                    _ => checker.record("read-page", rule, false, describe(&page)),
                }
            }
            Err(e) => {
                checker.record("read", rule, false, e);
                checker.skip("read-page", "limit=1 pages", "the full read failed");
            }
        }
    } else {
        checker.skip("read", rule, "no write was acknowledged with a seq");
        checker.skip(
            "read-page",
            "limit=1 pages",
            "no write was acknowledged with a seq",
        );
    }

    // Refusals: each must be 400 and store nothing.
    let mismatch = checker
        .send(
            Method::POST,
            &records_path(&tenant_a),
            &[
                (TENANT_HEADER, &tenant_b),
                (IDEMPOTENCY_HEADER, &format!("{tenant_a}/x")),
            ],
            b"wrong tenant",
        )
        .await;
    checker.record(
        "tenant-mismatch-write",
        "a write whose X-Tenant-Id differs from the path's tenant is refused with 400",
        status_is(&mismatch, &[400]),
        describe(&mismatch),
    );
    let mismatch_read = checker
        .send(
            Method::GET,
            &format!("{}?from_seq=1", records_path(&tenant_a)),
            &[(TENANT_HEADER, &tenant_b)],
            b"",
        )
        .await;
    checker.record(
        "tenant-mismatch-read",
        "a read whose X-Tenant-Id differs from the path's tenant is refused with 400",
        status_is(&mismatch_read, &[400]),
        describe(&mismatch_read),
    );
    let no_header = checker
        .send(
            Method::POST,
            &records_path(&tenant_a),
            &[(IDEMPOTENCY_HEADER, &format!("{tenant_a}/y"))],
            b"no tenant header",
        )
        .await;
    checker.record(
        "tenant-header-missing",
        "a request without X-Tenant-Id is refused with 400",
        status_is(&no_header, &[400]),
        describe(&no_header),
    );
    let no_key = checker
        .send(
            Method::POST,
            &records_path(&tenant_a),
            &[(TENANT_HEADER, &tenant_a)],
            b"no idempotency key",
        )
        .await;
    checker.record(
        "idempotency-key-missing",
        "a write without Idempotency-Key is refused with 400",
        status_is(&no_key, &[400]),
        describe(&no_key),
    );
    for (check, bad) in [
        ("tenant-id-format", "bad.tenant".to_owned()),
        ("tenant-id-length", "t".repeat(65)),
    ] {
        let response = checker
            .send(
                Method::PUT,
                &tenant_path(&bad),
                &[(TENANT_HEADER, &bad)],
                b"",
            )
            .await;
        checker.record(
            check,
            "a tenant id other than 1-64 ASCII letters, digits, `_` or `-` is refused with 400",
            status_is(&response, &[400]),
            format!("{bad}: {}", describe(&response)),
        );
    }
    if seq1.is_some() && seq2.is_some() {
        let rule = "refused writes store nothing: the tenant still holds exactly its two records";
        match checker.read_until(&tenant_a, &[]).await {
            Ok(list) => checker.record(
                "refused-not-stored",
                rule,
                list.records.len() == 2,
                format!(
                    "records {:?}",
                    list.records.iter().map(|r| &r.id).collect::<Vec<_>>()
                ),
            ),
            Err(e) => checker.record("refused-not-stored", rule, false, e),
        }
    }

    // Isolation: another tenant's records never show in this one's reads.
    let pb = checker
        .send(
            Method::PUT,
            &tenant_path(&tenant_b),
            &[(TENANT_HEADER, &tenant_b)],
            b"",
        )
        .await;
    let idb = format!("{tenant_b}/1");
    let wb = checker.write(&tenant_b, &idb).await;
    let rule = "a read returns only the path's tenant's records, named as that tenant";
    if status_is(&pb, &[200, 201]) && Checker::ack_of(&wb, &tenant_b, &idb).is_ok() {
        let of_b = checker.read_until(&tenant_b, &[idb.as_str()]).await;
        let of_a = checker.read_until(&tenant_a, &[]).await;
        match (of_a, of_b) {
            (Ok(la), Ok(lb)) => {
                let leaked: Vec<&str> = la
                    .records
                    .iter()
                    .filter(|r| !r.id.starts_with(&format!("{tenant_a}/")))
                    .map(|r| r.id.as_str())
                    .collect();
                let ok = leaked.is_empty()
                    && lb.tenant == tenant_b
                    && lb.records.iter().all(|r| r.id == idb);
                checker.record(
                    "isolation",
                    rule,
                    ok,
                    format!(
                        "{tenant_a} read holds {leaked:?} of others; {tenant_b} read named `{}` with {:?}",
                        lb.tenant,
                        lb.records.iter().map(|r| &r.id).collect::<Vec<_>>()
                    ),
                );
            }
            (Err(e), _) | (_, Err(e)) => checker.record("isolation", rule, false, e),
        }
    } else {
        checker.record(
            "isolation",
            rule,
            false,
            format!(
                "a second tenant could not be set up: PUT {}; POST {}",
                describe(&pb),
                describe(&wb)
            ),
        );
    }

    check_chat(&mut checker, &tenant_a, &tenant_b, seq2).await;

    // Unknown tenants: never stored, never answered with records.
    let unknown_write = checker.write(&never, &format!("{never}/1")).await;
    let stored_no = unknown_write.as_ref().is_ok_and(|r| {
        serde_json::from_slice::<serde_json::Value>(&r.body).is_ok_and(|v| v["stored"] == "no")
    });
    checker.record(
        "unknown-tenant-write",
        "a write for a tenant never provisioned answers 404 (or 503) with stored: no",
        status_is(&unknown_write, &[404, 503]) && stored_no,
        describe(&unknown_write),
    );
    let unknown_read = checker.read(&never, 1, 100).await;
    let empty_ok = unknown_read.as_ref().is_ok_and(|r| {
        r.status == StatusCode::OK
            && serde_json::from_slice::<RecordList>(&r.body).is_ok_and(|l| l.records.is_empty())
    });
    checker.record(
        "unknown-tenant-read",
        "a read of a tenant never provisioned answers 404 (or 503), or 200 with no records",
        status_is(&unknown_read, &[404, 503]) || empty_ok,
        describe(&unknown_read),
    );
    let route = checker
        .send(Method::GET, "/v1/no-such-route", &[], b"")
        .await;
    checker.record(
        "unknown-route",
        "a request to no route of the contract answers 404",
        status_is(&route, &[404]),
        describe(&route),
    );

    // Clean up, and check deletion while at it.
    let mut deletes = Vec::new();
    for tenant in [&tenant_a, &tenant_b, &tenant_a] {
        let r = checker
            .send(
                Method::DELETE,
                &tenant_path(tenant),
                &[(TENANT_HEADER, tenant)],
                b"",
            )
            .await;
        deletes.push(describe(&r));
        if !status_is(&r, &[204]) {
            break;
        }
    }
    checker.record(
        "deprovision",
        "DELETE /v1/tenants/{tenant} answers 204, also when the tenant is already gone",
        deletes.len() == 3 && deletes.iter().all(|d| d.starts_with("204")),
        deletes.join("; "),
    );

    let problems = std::mem::take(&mut checker.served_by_problems);
    let rule = if checker.options.nodes.is_empty() {
        "every response names the replica that served it in X-Served-By".to_owned()
    } else {
        format!(
            "every response names the lab node that served it in X-Served-By ({})",
            checker.options.nodes.join(", ")
        )
    };
    let shown: Vec<&String> = problems.iter().take(3).collect();
    checker.record(
        "served-by",
        &rule,
        problems.is_empty(),
        format!("{} response(s) without: {shown:?}", problems.len()),
    );
    ConformanceReport {
        endpoint: checker.options.addr.to_string(),
        findings: checker.findings,
    }
}
