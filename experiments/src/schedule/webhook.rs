//! Webhooks: a POST with the run summary as JSON when a suite's run fails or its verdict
//! changes. Sent from a thread of their own with retries and backoff, so a slow or dead receiver
//! never holds up the scheduler.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::mpsc;
use std::time::Duration;

use serde::Serialize;

use super::file::Suite;
use super::index::{RunRow, RunStatus};
use super::scheduler::RunObserver;

/// The JSON body of a webhook.
#[derive(Clone, Debug, Serialize)]
pub struct WebhookBody {
    /// Always `faultline-run-summary`.
    pub kind: &'static str,
    /// Why it was sent: `failure` or `verdict-change`.
    pub reason: &'static str,
    /// The suite.
    pub suite: String,
    /// The previous judged run's status, if any.
    pub previous_status: Option<RunStatus>,
    /// The run as the index has it.
    pub run: RunRow,
}

/// Whether a run's end is worth a webhook: a failure, or a verdict other than last time's.
pub fn reason_to_send(status: RunStatus, previous: Option<RunStatus>) -> Option<&'static str> {
    if !matches!(status, RunStatus::Passed | RunStatus::Skipped) {
        Some("failure")
    } else if status == RunStatus::Passed && previous.is_some_and(|p| p != status) {
        Some("verdict-change")
    } else {
        None
    }
}

/// Retries and their backoff.
#[derive(Clone, Copy, Debug)]
pub struct Backoff {
    /// Attempts in all.
    pub attempts: u32,
    /// Wait after the first failure; doubled after each.
    pub first: Duration,
    /// Per-attempt connect and read timeout.
    pub timeout: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            attempts: 6,
            first: Duration::from_secs(2),
            timeout: Duration::from_secs(10),
        }
    }
}

/// A delivery, successful or not, for the daemon's log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delivery {
    /// The URL.
    pub url: String,
    /// Attempts made.
    pub attempts: u32,
    /// The last error, when every attempt failed.
    pub error: Option<String>,
}

struct Job {
    url: String,
    body: String,
}

/// Sends webhooks from its own thread.
pub struct WebhookSender {
    jobs: mpsc::Sender<Job>,
}

impl WebhookSender {
    /// Starts the sending thread; `on_delivery` hears about every delivery.
    pub fn start(backoff: Backoff, on_delivery: impl Fn(&Delivery) + Send + 'static) -> Self {
        let (tx, rx) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("webhooks".to_owned())
            .spawn(move || {
                for job in rx {
                    on_delivery(&deliver(&job.url, &job.body, backoff));
                }
            })
            .expect("start the webhook thread");
        Self { jobs: tx }
    }
}

impl RunObserver for WebhookSender {
    fn finished(&self, suite: Option<&Suite>, row: &RunRow, previous: Option<RunStatus>) {
        let Some(suite) = suite else { return };
        let Some(hook) = &suite.webhook else { return };
        let Some(reason) = reason_to_send(row.status, previous) else {
            return;
        };
        let body = WebhookBody {
            kind: "faultline-run-summary",
            reason,
            suite: suite.name.clone(),
            previous_status: previous,
            run: row.clone(),
        };
        let _ = self.jobs.send(Job {
            url: hook.url.clone(),
            body: serde_json::to_string(&body).unwrap_or_default(),
        });
    }
}

/// POSTs `body` to `url`, retrying with backoff until a 2xx answer or the attempts run out.
pub fn deliver(url: &str, body: &str, backoff: Backoff) -> Delivery {
    let mut wait = backoff.first;
    let mut last_error = None;
    for attempt in 1..=backoff.attempts {
        match post(url, body, backoff.timeout) {
            Ok(()) => {
                return Delivery {
                    url: url.to_owned(),
                    attempts: attempt,
                    error: None,
                }
            }
            Err(e) => last_error = Some(e),
        }
        if attempt < backoff.attempts {
            std::thread::sleep(wait);
            wait = wait.saturating_mul(2);
        }
    }
    Delivery {
        url: url.to_owned(),
        attempts: backoff.attempts,
        error: last_error,
    }
}

/// One HTTP/1.1 POST; `Ok` on a 2xx status.
fn post(url: &str, body: &str, timeout: Duration) -> Result<(), String> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| format!("{url} is not an http:// URL"))?;
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let path = if path.is_empty() { "/" } else { path };
    let address = if authority.contains(':') {
        authority.to_owned()
    } else {
        format!("{authority}:80")
    };
    let socket = address
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {authority}: {e}"))?
        .next()
        .ok_or_else(|| format!("{authority} resolves to no address"))?;
    let mut stream = TcpStream::connect_timeout(&socket, timeout)
        .map_err(|e| format!("cannot connect to {authority}: {e}"))?;
    stream
        .set_read_timeout(Some(timeout))
        .and_then(|()| stream.set_write_timeout(Some(timeout)))
        .map_err(|e| e.to_string())?;
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: {authority}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\nUser-Agent: faultline\r\n\r\n{body}",
        body.len()
    );
    stream
        .write_all(request.as_bytes())
        .map_err(|e| format!("cannot send to {authority}: {e}"))?;
    let mut answer = Vec::new();
    let _ = stream.take(64 * 1024).read_to_end(&mut answer);
    let text = String::from_utf8_lossy(&answer);
    let status: u16 = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("{authority} sent no HTTP status line"))?;
    if (200..300).contains(&status) {
        Ok(())
    } else {
        Err(format!("{authority} answered {status}"))
    }
}

#[cfg(test)]
mod tests {
    use std::io::BufRead;
    use std::net::TcpListener;

    use super::*;

    #[test]
    fn which_ends_are_sent() {
        use RunStatus::{Aborted, Failed, Passed};
        assert_eq!(reason_to_send(Failed, Some(Failed)), Some("failure"));
        assert_eq!(reason_to_send(Aborted, None), Some("failure"));
        assert_eq!(reason_to_send(Passed, Some(Failed)), Some("verdict-change"));
        assert_eq!(reason_to_send(Passed, Some(Passed)), None);
        assert_eq!(reason_to_send(Passed, None), None);
    }

    /// A receiver that answers `statuses` in turn and hands back each request body.
    fn receiver(statuses: Vec<u16>) -> (String, mpsc::Receiver<String>) {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let url = format!("http://{}/hook", listener.local_addr().expect("addr"));
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for status in statuses {
                let (mut stream, _) = listener.accept().expect("accept");
                let mut reader = std::io::BufReader::new(stream.try_clone().expect("clone"));
                let mut length = 0;
                loop {
                    let mut line = String::new();
                    reader.read_line(&mut line).expect("line");
                    if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                        length = v.trim().parse().expect("length");
                    }
                    if line == "\r\n" {
                        break;
                    }
                }
                let mut body = vec![0; length];
                reader.read_exact(&mut body).expect("body");
                let _ = tx.send(String::from_utf8(body).expect("utf8"));
                let _ = write!(stream, "HTTP/1.1 {status} X\r\nContent-Length: 0\r\n\r\n");
            }
        });
        (url, rx)
    }

    #[test]
    fn a_refused_delivery_is_retried_until_it_is_accepted() {
        let (url, bodies) = receiver(vec![500, 503, 204]);
        let backoff = Backoff {
            attempts: 5,
            first: Duration::from_millis(10),
            timeout: Duration::from_secs(5),
        };
        let delivery = deliver(&url, "{\"x\":1}", backoff);
        assert_eq!(delivery.error, None, "{delivery:?}");
        assert_eq!(delivery.attempts, 3);
        let seen: Vec<String> = bodies.try_iter().collect();
        assert_eq!(seen, ["{\"x\":1}"; 3]);
    }

    #[test]
    fn an_unreachable_receiver_fails_after_the_attempts_with_a_reason() {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let url = format!("http://{}/hook", listener.local_addr().expect("addr"));
        drop(listener);
        let backoff = Backoff {
            attempts: 2,
            first: Duration::from_millis(1),
            timeout: Duration::from_secs(1),
        };
        let delivery = deliver(&url, "{}", backoff);
        assert_eq!(delivery.attempts, 2);
        assert!(delivery.error.is_some_and(|e| e.contains("cannot connect")));
    }
}
