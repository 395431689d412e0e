//! Readiness probes, run from the lab's client namespace so they cross the lab network like any
//! client would.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use faultline_injectors::netns::connect_tcp_in_netns;

use super::topology::Readiness;

const PROBE_TIMEOUT: Duration = Duration::from_millis(800);

/// Whether a TCP connection to `address:port` from `netns` succeeds.
pub fn tcp_open(netns_dir: &Path, netns: &str, address: Ipv4Addr, port: u16) -> bool {
    matches!(
        connect_tcp_in_netns(
            netns_dir,
            netns,
            SocketAddr::from((address, port)),
            PROBE_TIMEOUT
        ),
        Ok(Ok(_))
    )
}

/// `GET path` over HTTP/1.0 from `netns`; the status code and body, or `None` on any failure.
pub fn http_get(
    netns_dir: &Path,
    netns: &str,
    address: Ipv4Addr,
    port: u16,
    path: &str,
) -> Option<(u16, String)> {
    let Ok(Ok(mut stream)) = connect_tcp_in_netns(
        netns_dir,
        netns,
        SocketAddr::from((address, port)),
        PROBE_TIMEOUT,
    ) else {
        return None;
    };
    stream.set_read_timeout(Some(PROBE_TIMEOUT)).ok()?;
    stream.set_write_timeout(Some(PROBE_TIMEOUT)).ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.0\r\nHost: {address}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut response = Vec::new();
    stream.take(4 << 20).read_to_end(&mut response).ok()?;
    let text = String::from_utf8_lossy(&response);
    let (head, body) = text.split_once("\r\n\r\n")?;
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, body.to_owned()))
}

/// The JetStream meta leader reported by the NATS monitoring endpoint, if any.
pub fn nats_meta_leader(
    netns_dir: &Path,
    netns: &str,
    address: Ipv4Addr,
    monitor_port: u16,
) -> Option<String> {
    let (status, body) = http_get(netns_dir, netns, address, monitor_port, "/jsz")?;
    if status != 200 {
        return None;
    }
    let json: serde_json::Value = serde_json::from_str(&body).ok()?;
    let leader = json.get("meta_cluster")?.get("leader")?.as_str()?;
    (!leader.is_empty()).then(|| leader.to_owned())
}

/// Runs a readiness check against a replica at `address`.
pub fn is_ready(
    netns_dir: &Path,
    client_netns: &str,
    address: Ipv4Addr,
    readiness: &Readiness,
) -> bool {
    match readiness {
        Readiness::Running => true,
        Readiness::Tcp(port) => tcp_open(netns_dir, client_netns, address, *port),
        Readiness::Http { port, path } => http_get(netns_dir, client_netns, address, *port, path)
            .is_some_and(|(status, _)| (200..300).contains(&status)),
        Readiness::NatsJetstream { monitor_port } => {
            nats_meta_leader(netns_dir, client_netns, address, *monitor_port).is_some()
        }
    }
}
