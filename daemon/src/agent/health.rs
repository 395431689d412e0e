//! `/healthz` and `/readyz` for the kubelet's probes: a few lines of HTTP/1.1 on a plain socket.
//!
//! - `/healthz` is 200 while the safety loop has run within the last few ticks (the part that
//!   heals without the API server), 503 otherwise.
//! - `/readyz` is 200 once both watches have listed everything at least once.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use faultline_injectors::ledger::now_unix_ms;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::NodeAgent;

/// How many ticks the safety loop may miss before `/healthz` fails.
const MISSED_TICKS_ALLOWED: u32 = 5;

/// Serves the probes on `addr` until the task is dropped.
///
/// # Errors
/// The address cannot be bound.
pub async fn serve(
    agent: Arc<NodeAgent>,
    addr: SocketAddr,
) -> std::io::Result<tokio::task::JoinHandle<()>> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    Ok(tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                continue;
            };
            let agent = Arc::clone(&agent);
            tokio::spawn(async move {
                let mut buffer = [0u8; 1024];
                let Ok(Ok(read)) =
                    tokio::time::timeout(Duration::from_secs(2), stream.read(&mut buffer)).await
                else {
                    return;
                };
                let request = String::from_utf8_lossy(&buffer[..read]);
                let path = request.split_whitespace().nth(1).unwrap_or("/");
                let (code, body) = answer(&agent, path);
                let response = format!(
                    "HTTP/1.1 {code}\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = stream.write_all(response.as_bytes()).await;
            });
        }
    }))
}

fn answer(agent: &NodeAgent, path: &str) -> (&'static str, String) {
    match path {
        "/healthz" => {
            let core = agent.core();
            let last = core.heartbeat_ms.load(Ordering::Relaxed);
            let allowed = core.config().tick * MISSED_TICKS_ALLOWED + Duration::from_secs(1);
            let age = Duration::from_millis(now_unix_ms().saturating_sub(last));
            if last > 0 && age <= allowed {
                ("200 OK", "ok\n".into())
            } else {
                (
                    "503 Service Unavailable",
                    format!("safety loop last ran {age:?} ago\n"),
                )
            }
        }
        "/readyz" => {
            if agent.is_synced() {
                ("200 OK", "ok\n".into())
            } else {
                (
                    "503 Service Unavailable",
                    "waiting for the first list of Faults and Halts\n".into(),
                )
            }
        }
        _ => (
            "404 Not Found",
            "not found; try /healthz or /readyz\n".into(),
        ),
    }
}
