//! `chaosctl contract check URL`: the lab's reference gateway conforms (with `--lab`, its
//! `X-Served-By` names lab nodes); a deliberately broken endpoint, a test double served here
//! on loopback, fails with each of its deviations named.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};

use common::{can_run_lab, TestLab};

/// One request as the double sees it.
struct Request {
    method: String,
    path: String,
    headers: BTreeMap<String, String>,
}

fn read_request(reader: &mut BufReader<TcpStream>) -> Option<Request> {
    let mut line = String::new();
    if reader.read_line(&mut line).ok()? == 0 {
        return None;
    }
    let mut parts = line.split_whitespace();
    let method = parts.next()?.to_owned();
    let path = parts.next()?.to_owned();
    let mut headers = BTreeMap::new();
    loop {
        let mut header = String::new();
        reader.read_line(&mut header).ok()?;
        let header = header.trim_end();
        if header.is_empty() {
            break;
        }
        let (name, value) = header.split_once(':')?;
        headers.insert(name.trim().to_ascii_lowercase(), value.trim().to_owned());
    }
    let length: usize = headers
        .get("content-length")
        .and_then(|l| l.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; length];
    reader.read_exact(&mut body).ok()?;
    Some(Request {
        method,
        path,
        headers,
    })
}

/// A naive store that breaks the contract in known ways: it accepts any tenant id, ignores
/// `X-Tenant-Id`, stores a retried id again (no idempotency), creates unknown tenants on first
/// write (and serves their records), ignores `limit`, and names no replica in `X-Served-By` on its writes.
#[derive(Default)]
struct BrokenStore {
    tenants: BTreeMap<String, Vec<(u64, String)>>,
}

impl BrokenStore {
    fn answer(&mut self, r: &Request) -> (u16, String, bool) {
        let path = r.path.split('?').next().unwrap_or_default();
        if path == "/healthz" {
            return (200, r#"{"status":"ok"}"#.into(), true);
        }
        let Some(rest) = path.strip_prefix("/v1/tenants/") else {
            return (404, r#"{"error":"no route","stored":"no"}"#.into(), true);
        };
        let (tenant, records) = match rest.split_once('/') {
            Some((t, "records")) => (t.to_owned(), true),
            None => (rest.to_owned(), false),
            _ => return (404, r#"{"error":"no route","stored":"no"}"#.into(), true),
        };
        match (r.method.as_str(), records) {
            ("PUT", false) => {
                let created = !self.tenants.contains_key(&tenant);
                self.tenants.entry(tenant.clone()).or_default();
                (if created { 201 } else { 200 }, "{}".into(), true)
            }
            ("DELETE", false) => {
                self.tenants.remove(&tenant);
                (204, String::new(), true)
            }
            ("POST", true) => {
                let Some(id) = r.headers.get("idempotency-key") else {
                    return (400, r#"{"error":"no key","stored":"no"}"#.into(), true);
                };
                let list = self.tenants.entry(tenant.clone()).or_default();
                let seq = list.len() as u64 + 1;
                list.push((seq, id.clone()));
                let body =
                    serde_json::json!({"tenant": tenant, "id": id, "seq": seq, "duplicate": false});
                (201, body.to_string(), false)
            }
            ("GET", true) => {
                let list = self.tenants.get(&tenant).cloned().unwrap_or_default();
                let records: Vec<_> = list
                    .iter()
                    .map(|(seq, id)| serde_json::json!({"seq": seq, "id": id}))
                    .collect();
                let next = list.last().map_or(1, |(s, _)| s + 1);
                let body = serde_json::json!({"tenant": tenant, "records": records, "next_seq": next, "more": false});
                (200, body.to_string(), true)
            }
            _ => (405, r#"{"error":"method","stored":"no"}"#.into(), true),
        }
    }
}

/// Serves the broken store on loopback, one thread per connection (keep-alive); returns its
/// URL. The threads end with the test process.
fn serve_broken_store() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let store = std::sync::Arc::new(std::sync::Mutex::new(BrokenStore::default()));
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let store = store.clone();
            std::thread::spawn(move || {
                let mut writer = stream.try_clone().expect("clone");
                let mut reader = BufReader::new(stream);
                while let Some(request) = read_request(&mut reader) {
                    let (status, body, served_by) = store.lock().expect("store").answer(&request);
                    let served = if served_by { "X-Served-By: n1\r\n" } else { "" };
                    let response = format!(
                        "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\n{served}Content-Length: {}\r\n\r\n{body}",
                        body.len()
                    );
                    if writer.write_all(response.as_bytes()).is_err() {
                        break;
                    }
                }
            });
        }
    });
    url
}

fn findings(stdout: &[u8]) -> BTreeMap<String, String> {
    let report: serde_json::Value = serde_json::from_slice(stdout)
        .unwrap_or_else(|e| panic!("report json: {e}: {}", String::from_utf8_lossy(stdout)));
    report["findings"]
        .as_array()
        .expect("findings")
        .iter()
        .map(|f| {
            (
                f["check"].as_str().expect("check").to_owned(),
                f["verdict"].as_str().expect("verdict").to_owned(),
            )
        })
        .collect()
}

#[test]
fn a_broken_endpoint_fails_with_each_deviation_named() {
    let url = serve_broken_store();
    let run = |output: &str| {
        std::process::Command::new(env!("CARGO_BIN_EXE_chaosctl"))
            .env_remove("FAULTLINE_LAB")
            .args([
                "contract",
                "check",
                &url,
                "--read-wait",
                "1s",
                "--output",
                output,
            ])
            .output()
            .expect("chaosctl runs")
    };
    let out = run("json");
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let found = findings(&out.stdout);
    let deviating: BTreeSet<&str> = found
        .iter()
        .filter(|(_, v)| *v == "deviates")
        .map(|(c, _)| c.as_str())
        .collect();
    let expected: BTreeSet<&str> = [
        "write-duplicate",
        "read",
        "read-page",
        "tenant-mismatch-write",
        "tenant-mismatch-read",
        "tenant-header-missing",
        "tenant-id-format",
        "tenant-id-length",
        "refused-not-stored",
        "unknown-tenant-write",
        "unknown-tenant-read",
        "served-by",
    ]
    .into();
    assert_eq!(deviating, expected, "{found:?}");
    // What it does right is not blamed.
    for check in [
        "health",
        "provision",
        "provision-again",
        "write",
        "write-order",
        "isolation",
        "deprovision",
    ] {
        assert_eq!(
            found.get(check).map(String::as_str),
            Some("conforms"),
            "{check}: {found:?}"
        );
    }

    // It answers 404 on the chat socket's path: not offered, so those checks are skipped.
    for check in [
        "chat-upgrade",
        "chat-write",
        "chat-duplicate",
        "chat-read",
        "chat-bad-frame",
        "chat-tenant-mismatch",
        "chat-no-upgrade",
    ] {
        assert_eq!(
            found.get(check).map(String::as_str),
            Some("skipped"),
            "{check}: {found:?}"
        );
    }

    let out = run("text");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("FAIL write-duplicate"), "{text}");
    assert!(text.contains("skip chat-upgrade"), "{text}");
    assert!(text.contains("12 deviation(s): "), "{text}");
    assert!(text.contains("docs/workload.md"), "{text}");
}

#[test]
fn an_endpoint_that_is_not_a_url_is_an_error_that_shows_the_form() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_chaosctl"))
        .env_remove("FAULTLINE_LAB")
        .args(["contract", "check", "gateway:8080"])
        .output()
        .expect("chaosctl runs");
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("http://IP:PORT"), "{stderr}");
}

#[test]
fn the_reference_gateway_conforms_and_names_lab_nodes() {
    if !can_run_lab() {
        return;
    }
    let lab = TestLab::up();
    let status = lab.status();
    let gateway = status["services"]
        .as_array()
        .expect("services")
        .iter()
        .find(|s| {
            s["replica"]
                .as_str()
                .is_some_and(|r| r.starts_with("gateway"))
        })
        .unwrap_or_else(|| panic!("no gateway in {status}"));
    let endpoint = gateway["endpoints"]["http"]
        .as_str()
        .unwrap_or_else(|| panic!("no http endpoint in {gateway}"));
    let url = if endpoint.starts_with("http://") {
        endpoint.to_owned()
    } else {
        format!("http://{endpoint}")
    };
    let out = lab.chaosctl(&[
        "contract", "check", &url, "--lab", &lab.name, "--output", "json",
    ]);
    let found = findings(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{found:?}\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(found.values().all(|v| v == "conforms"), "{found:?}");
    assert!(found.len() >= 27, "every check ran: {found:?}");
    // The chat socket is offered and exercised.
    for check in [
        "chat-upgrade",
        "chat-write",
        "chat-duplicate",
        "chat-read",
        "chat-bad-frame",
    ] {
        assert_eq!(
            found.get(check).map(String::as_str),
            Some("conforms"),
            "{check}: {found:?}"
        );
    }
}

/// The negative control for the chat socket's checks: a gateway that acknowledges before
/// storing (`--unsafe-ack`, no `seq`) deviates on the socket as over HTTP.
#[test]
fn an_unsafe_gateway_deviates_on_the_chat_socket_too() {
    if !can_run_lab() {
        return;
    }
    let lab = TestLab::new();
    let topology = lab.state_root().join("unsafe.yaml");
    let yaml = faultline_experiments::lab::topology::DEFAULT_TOPOLOGY_YAML.replace(
        "      - --replicas=3\n",
        "      - --replicas=3\n      - --unsafe-ack\n",
    );
    assert!(
        yaml.contains("--unsafe-ack"),
        "the default topology's gateway command changed"
    );
    std::fs::write(&topology, yaml).expect("write topology");
    lab.ok(&["lab", "up", "--topology", topology.to_str().expect("utf-8")]);
    let status = lab.status();
    let endpoint = status["services"]
        .as_array()
        .expect("services")
        .iter()
        .find(|s| {
            s["replica"]
                .as_str()
                .is_some_and(|r| r.starts_with("gateway"))
        })
        .and_then(|s| s["endpoints"]["http"].as_str())
        .unwrap_or_else(|| panic!("no gateway in {status}"))
        .to_owned();
    let out = lab.chaosctl(&[
        "contract",
        "check",
        &format!("http://{endpoint}"),
        "--lab",
        &lab.name,
        "--read-wait",
        "1s",
        "--output",
        "json",
    ]);
    assert_eq!(out.status.code(), Some(1), "deviations found");
    let found = findings(&out.stdout);
    // The socket is offered and works; its acknowledgements lack the position.
    assert_eq!(
        found.get("chat-upgrade").map(String::as_str),
        Some("conforms"),
        "{found:?}"
    );
    for check in ["write", "chat-write"] {
        assert_eq!(
            found.get(check).map(String::as_str),
            Some("deviates"),
            "{check}: {found:?}"
        );
    }
}
