//! Finding a running `faultlined serve` and talking to it: `chaosctl` halts, resumes, reloads
//! and triggers through it. A deliberately small blocking HTTP/1.1 client over loopback.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// What a running daemon writes to `<state root>/serve.json`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServeInfo {
    /// The daemon's PID.
    pub pid: i32,
    /// Its start time in clock ticks, so a recycled PID is not taken for it.
    pub start_ticks: u64,
    /// Where it listens.
    pub listen: SocketAddr,
    /// The bearer-token file it reads.
    pub token_file: PathBuf,
}

/// `<state root>/serve.json`.
pub fn info_path(state_root: &Path) -> PathBuf {
    state_root.join("serve.json")
}

/// The running daemon of this state root, if there is one (its process is alive).
pub fn find(state_root: &Path) -> Option<ServeInfo> {
    let text = std::fs::read_to_string(info_path(state_root)).ok()?;
    let info: ServeInfo = serde_json::from_str(&text).ok()?;
    let alive = faultline_injectors::process::read_proc_stat(Path::new("/proc"), info.pid)
        .is_some_and(|s| s.start_ticks == info.start_ticks && s.state != 'Z');
    alive.then_some(info)
}

/// An HTTP answer.
#[derive(Clone, Debug)]
pub struct Answer {
    /// Status code.
    pub status: u16,
    /// Body.
    pub body: String,
}

/// Sends one request and reads the whole answer.
pub fn request(
    address: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&str>,
) -> std::io::Result<Answer> {
    let mut stream = TcpStream::connect_timeout(&address, Duration::from_secs(5))?;
    stream.set_read_timeout(Some(Duration::from_secs(60)))?;
    let auth = token.map_or_else(String::new, |t| format!("Authorization: Bearer {t}\r\n"));
    let body = body.unwrap_or("");
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {address}\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("{address} sent no HTTP status line")))?;
    let chunked = head.lines().any(|l| {
        l.to_ascii_lowercase()
            .starts_with("transfer-encoding: chunked")
    });
    Ok(Answer {
        status,
        body: if chunked {
            dechunk(body)
        } else {
            body.to_owned()
        },
    })
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let Ok(size) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if size == 0 || rest.len() < size {
            break;
        }
        out.push_str(&rest[..size]);
        body = rest[size..].trim_start_matches("\r\n");
    }
    out
}

/// Calls the daemon with the token from its token file; errors say what to do.
pub fn call(info: &ServeInfo, method: &str, path: &str) -> anyhow::Result<Answer> {
    let token = std::fs::read_to_string(&info.token_file).map_err(|e| {
        anyhow::anyhow!(
            "cannot read the daemon's token file {}: {e}; run as the user that started faultlined serve",
            info.token_file.display()
        )
    })?;
    request(info.listen, method, path, Some(token.trim()), None).map_err(|e| {
        anyhow::anyhow!(
            "cannot reach faultlined serve at {} (pid {}): {e}",
            info.listen,
            info.pid
        )
    })
}
