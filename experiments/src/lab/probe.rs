//! Readiness probes, run from the lab's client namespace so they cross the lab network like any
//! client would.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use faultline_injectors::netns::connect_tcp_in_netns;

use super::topology::Readiness;

const PROBE_TIMEOUT: Duration = Duration::from_millis(800);

/// How many replicas a role or JetStream probe asks at once: enough for every replica of a
/// usual service, few enough that a large one does not start a thread per replica.
pub const ASK_AT_ONCE: usize = 8;

/// `ask(item)` for every item, at most `at_once` at a time (at least one), each on a thread of
/// its own; the answers in the items' order, whatever order they arrived in. With `at_once`
/// 1 the items are asked one after another on the calling thread.
pub fn ask_all<T: Sync, R: Send>(
    items: &[T],
    at_once: usize,
    ask: impl Fn(&T) -> R + Sync,
) -> Vec<R> {
    let at_once = at_once.clamp(1, items.len().max(1));
    if at_once == 1 {
        return items.iter().map(ask).collect();
    }
    let next = AtomicUsize::new(0);
    let answers: Vec<Mutex<Option<R>>> = items.iter().map(|_| Mutex::new(None)).collect();
    std::thread::scope(|scope| {
        for _ in 0..at_once {
            scope.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(item) = items.get(i) else { break };
                let answer = ask(item);
                *answers[i].lock().unwrap_or_else(PoisonError::into_inner) = Some(answer);
            });
        }
    });
    // The scope joined every worker, and a worker that panicked re-raised its panic there, so
    // every slot is filled.
    answers
        .into_iter()
        .map(|slot| {
            slot.into_inner()
                .unwrap_or_else(PoisonError::into_inner)
                .expect("every item was asked")
        })
        .collect()
}

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

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[test]
    fn ask_all_answers_in_order_and_never_asks_more_than_allowed_at_once() {
        for (items, at_once) in [(0, 8), (1, 8), (3, 1), (3, 8), (20, 4), (5, 0)] {
            let input: Vec<usize> = (0..items).collect();
            let in_flight = AtomicUsize::new(0);
            let most = AtomicUsize::new(0);
            let expected_most = at_once.clamp(1, items.max(1)).min(items);
            let answers = ask_all(&input, at_once, |i| {
                let now = in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                most.fetch_max(now, Ordering::SeqCst);
                // Stay until as many asks as allowed run together (or give up after 5 s), so
                // a run one at a time shows as `most == 1`, not as a hang.
                let deadline = Instant::now() + Duration::from_secs(5);
                while most.load(Ordering::SeqCst) < expected_most && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(1));
                }
                in_flight.fetch_sub(1, Ordering::SeqCst);
                i * 10
            });
            assert_eq!(
                answers,
                input.iter().map(|i| i * 10).collect::<Vec<_>>(),
                "{items} items, {at_once} at once"
            );
            assert_eq!(
                most.load(Ordering::SeqCst),
                expected_most,
                "{items} items, {at_once} at once"
            );
        }
    }
}
