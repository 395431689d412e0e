//! Webhooks: a POST with the run summary as JSON when a suite's run fails or its verdict
//! changes. Sent from a thread of their own with retries and backoff, so a slow or dead receiver
//! never holds up the scheduler. `https://` receivers are reached over TLS (rustls) and their
//! certificate is verified against the system's roots or the webhook's CA file.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::Path;
use std::sync::{mpsc, Arc};
use std::time::Duration;

use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, ServerName};
use serde::Serialize;

use super::file::{Suite, WebhookSpec};
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
    hook: WebhookSpec,
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
                    on_delivery(&deliver(&job.hook, &job.body, backoff));
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
            hook: hook.clone(),
            body: serde_json::to_string(&body).unwrap_or_default(),
        });
    }
}

/// POSTs `body` to the webhook, retrying with backoff until a 2xx answer or the attempts run
/// out.
pub fn deliver(hook: &WebhookSpec, body: &str, backoff: Backoff) -> Delivery {
    let url = hook.url.as_str();
    let mut wait = backoff.first;
    let mut last_error = None;
    for attempt in 1..=backoff.attempts {
        match post(hook, body, backoff.timeout) {
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

/// Reads the CA certificates of a PEM file, as the roots an `https://` receiver's certificate
/// must chain to.
///
/// # Errors
/// The file cannot be read, is not PEM, or holds no certificate; the message names the file.
pub fn load_roots(path: &Path) -> Result<rustls::RootCertStore, String> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
        .and_then(Iterator::collect)
        .map_err(|e| {
            format!(
                "cannot read the CA file {}: {e}; give a PEM file of the CA certificates that sign the receiver's certificate",
                path.display()
            )
        })?;
    let mut roots = rustls::RootCertStore::empty();
    let (added, _ignored) = roots.add_parsable_certificates(certs);
    if added == 0 {
        return Err(format!(
            "cannot read the CA file {}: it holds no usable certificate; give a PEM file with at least one CERTIFICATE block",
            path.display()
        ));
    }
    Ok(roots)
}

/// The system's CA certificates (what a receiver with a public certificate chains to).
fn system_roots() -> Result<rustls::RootCertStore, String> {
    let found = rustls_native_certs::load_native_certs();
    let mut roots = rustls::RootCertStore::empty();
    roots.add_parsable_certificates(found.certs);
    if roots.is_empty() {
        return Err(format!(
            "no system CA certificates found ({} errors); install the ca-certificates package or set the webhook's ca_file",
            found.errors.len()
        ));
    }
    Ok(roots)
}

fn tls_config(hook: &WebhookSpec) -> Result<Arc<rustls::ClientConfig>, String> {
    let roots = match &hook.ca_file {
        Some(path) => load_roots(path)?,
        None => system_roots()?,
    };
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| format!("TLS setup: {e}"))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(Arc::new(config))
}

/// The parts of a webhook URL.
struct Target<'a> {
    tls: bool,
    /// Host and optional port, as in the URL.
    authority: &'a str,
    host: &'a str,
    path: &'a str,
    port: u16,
}

fn parse_url(url: &str) -> Result<Target<'_>, String> {
    let (tls, rest) = if let Some(rest) = url.strip_prefix("https://") {
        (true, rest)
    } else if let Some(rest) = url.strip_prefix("http://") {
        (false, rest)
    } else {
        return Err(format!("{url} is not an http:// or https:// URL"));
    };
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let path = if path.is_empty() { "/" } else { path };
    let default_port = if tls { 443 } else { 80 };
    // `[::1]:8443`, `host:8443` or `host`.
    let (host, port) = match authority.rsplit_once(':') {
        Some((host, port)) if !port.contains(']') => (
            host,
            port.parse()
                .map_err(|_| format!("{url}: `{port}` is not a port number"))?,
        ),
        _ => (authority, default_port),
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    Ok(Target {
        tls,
        authority,
        host,
        path,
        port,
    })
}

/// One HTTP/1.1 POST, over TLS for `https://`; `Ok` on a 2xx status.
fn post(hook: &WebhookSpec, body: &str, timeout: Duration) -> Result<(), String> {
    let target = parse_url(&hook.url)?;
    let authority = target.authority;
    let socket = (target.host, target.port)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {authority}: {e}"))?
        .next()
        .ok_or_else(|| format!("{authority} resolves to no address"))?;
    let stream = TcpStream::connect_timeout(&socket, timeout)
        .map_err(|e| format!("cannot connect to {authority}: {e}"))?;
    stream
        .set_read_timeout(Some(timeout))
        .and_then(|()| stream.set_write_timeout(Some(timeout)))
        .map_err(|e| e.to_string())?;
    let request = format!(
        "POST {} HTTP/1.1\r\nHost: {authority}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\nUser-Agent: faultline\r\n\r\n{body}",
        target.path,
        body.len()
    );
    let answer = if target.tls {
        let name = ServerName::try_from(target.host.to_owned())
            .map_err(|e| format!("{authority}: not a valid TLS server name: {e}"))?;
        let connection = rustls::ClientConnection::new(tls_config(hook)?, name)
            .map_err(|e| format!("TLS setup for {authority}: {e}"))?;
        let mut tls = rustls::StreamOwned::new(connection, stream);
        exchange(&mut tls, request.as_bytes()).map_err(|e| tls_error(authority, hook, &e))?
    } else {
        let mut stream = stream;
        exchange(&mut stream, request.as_bytes())
            .map_err(|e| format!("cannot send to {authority}: {e}"))?
    };
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

/// Sends the request and reads the answer (at most 64 KiB) until the receiver closes.
fn exchange(stream: &mut (impl Read + Write), request: &[u8]) -> std::io::Result<Vec<u8>> {
    stream.write_all(request)?;
    stream.flush()?;
    let mut answer = Vec::new();
    match stream.take(64 * 1024).read_to_end(&mut answer) {
        // A receiver that closes without a TLS close_notify still sent its answer.
        Err(e) if !answer.is_empty() && e.kind() == std::io::ErrorKind::UnexpectedEof => {}
        Err(e) if answer.is_empty() => return Err(e),
        _ => {}
    }
    Ok(answer)
}

fn tls_error(authority: &str, hook: &WebhookSpec, e: &std::io::Error) -> String {
    let certificate = e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        .is_some_and(|inner| matches!(inner, rustls::Error::InvalidCertificate(_)));
    let hint = match (&hook.ca_file, certificate) {
        (_, false) => String::new(),
        (None, true) => "; if an internal CA signs it, set the webhook's ca_file".to_owned(),
        (Some(path), true) => format!(
            "; it does not chain to the CA in {} for this name",
            path.display()
        ),
    };
    format!("TLS with {authority}: {e}{hint}")
}

#[cfg(test)]
mod tests {
    use std::io::BufRead;
    use std::net::TcpListener;
    use std::path::PathBuf;

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

    fn plain(url: String) -> WebhookSpec {
        WebhookSpec { url, ca_file: None }
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
        let delivery = deliver(&plain(url), "{\"x\":1}", backoff);
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
        let delivery = deliver(&plain(url), "{}", backoff);
        assert_eq!(delivery.attempts, 2);
        assert!(delivery.error.is_some_and(|e| e.contains("cannot connect")));
    }
    /// A test CA and a certificate it signs for 127.0.0.1, as PEM and DER.
    struct TestPki {
        ca_pem: String,
        server_cert: CertificateDer<'static>,
        server_key: Vec<u8>,
    }

    fn pki(names: Vec<rcgen::SanType>) -> TestPki {
        let ca_key = rcgen::KeyPair::generate().expect("CA key");
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "faultline test CA");
        let ca = ca_params.self_signed(&ca_key).expect("CA");
        let key = rcgen::KeyPair::generate().expect("key");
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        params.subject_alt_names = names;
        let cert = params.signed_by(&key, &ca, &ca_key).expect("certificate");
        TestPki {
            ca_pem: ca.pem(),
            server_cert: cert.der().clone(),
            server_key: key.serialize_der(),
        }
    }

    fn localhost_ip() -> Vec<rcgen::SanType> {
        vec![rcgen::SanType::IpAddress(std::net::IpAddr::from([
            127, 0, 0, 1,
        ]))]
    }

    /// An HTTPS receiver with `pki`'s certificate: answers 204 to each request and hands back
    /// its body; a refused handshake hands back nothing.
    fn tls_receiver(pki: &TestPki, connections: usize) -> (String, mpsc::Receiver<String>) {
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(
            vec![pki.server_cert.clone()],
            rustls::pki_types::PrivateKeyDer::Pkcs8(pki.server_key.clone().into()),
        )
        .expect("server config");
        let config = Arc::new(config);
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let url = format!("https://{}/hook", listener.local_addr().expect("addr"));
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for _ in 0..connections {
                let Ok((stream, _)) = listener.accept() else {
                    return;
                };
                let connection = rustls::ServerConnection::new(Arc::clone(&config)).expect("tls");
                let mut tls = rustls::StreamOwned::new(connection, stream);
                let mut reader = std::io::BufReader::new(&mut tls);
                let mut length = 0;
                let mut ok = true;
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 {
                        ok = false;
                        break;
                    }
                    if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                        length = v.trim().parse().unwrap_or(0);
                    }
                    if line == "\r\n" {
                        break;
                    }
                }
                if !ok {
                    continue;
                }
                let mut body = vec![0; length];
                if reader.read_exact(&mut body).is_err() {
                    continue;
                }
                let _ = tx.send(String::from_utf8(body).expect("utf8"));
                let _ = write!(tls, "HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n");
                tls.conn.send_close_notify();
                let _ = tls.flush();
            }
        });
        (url, rx)
    }

    const ONCE: Backoff = Backoff {
        attempts: 1,
        first: Duration::from_millis(1),
        timeout: Duration::from_secs(5),
    };

    fn write_ca(dir: &Path, pem: &str) -> PathBuf {
        let path = dir.join("ca.pem");
        std::fs::write(&path, pem).expect("write CA");
        path
    }

    #[test]
    fn an_https_receiver_signed_by_the_given_ca_gets_the_summary() {
        let dir = tempfile::tempdir().expect("dir");
        let pki = pki(localhost_ip());
        let (url, bodies) = tls_receiver(&pki, 1);
        let hook = WebhookSpec {
            url,
            ca_file: Some(write_ca(dir.path(), &pki.ca_pem)),
        };
        let delivery = deliver(&hook, "{\"x\":2}", ONCE);
        assert_eq!(delivery.error, None, "{delivery:?}");
        assert_eq!(bodies.try_iter().collect::<Vec<_>>(), ["{\"x\":2}"]);
    }

    #[test]
    fn a_certificate_the_webhook_cannot_verify_is_refused_and_nothing_is_sent() {
        let dir = tempfile::tempdir().expect("dir");
        let pki_ok = pki(localhost_ip());
        // Signed by another CA than the one given.
        let other = pki(localhost_ip());
        let (url, bodies) = tls_receiver(&other, 1);
        let hook = WebhookSpec {
            url,
            ca_file: Some(write_ca(dir.path(), &pki_ok.ca_pem)),
        };
        let delivery = deliver(&hook, "{}", ONCE);
        let error = delivery.error.expect("refused");
        assert!(
            error.contains("invalid peer certificate")
                && error.contains("does not chain to the CA"),
            "{error}"
        );
        // Signed by the given CA, but for another name than the URL's host.
        let wrong_name = pki(vec![rcgen::SanType::DnsName(
            "hooks.internal".try_into().expect("name"),
        )]);
        let (url, wrong_bodies) = tls_receiver(&wrong_name, 1);
        let hook = WebhookSpec {
            url,
            ca_file: Some(write_ca(dir.path(), &wrong_name.ca_pem)),
        };
        let error = deliver(&hook, "{}", ONCE).error.expect("refused");
        assert!(error.contains("invalid peer certificate"), "{error}");
        // Without a CA file, the system's roots do not know the test CA.
        let (url, system_bodies) = tls_receiver(&pki_ok, 1);
        let error = deliver(&plain(url), "{}", ONCE).error.expect("refused");
        assert!(
            error.contains("invalid peer certificate") || error.contains("no system CA"),
            "{error}"
        );
        for received in [bodies, wrong_bodies, system_bodies] {
            assert_eq!(received.try_iter().count(), 0, "no summary left the daemon");
        }
    }

    #[test]
    fn a_ca_file_without_certificates_is_an_error_naming_it() {
        let dir = tempfile::tempdir().expect("dir");
        let path = write_ca(dir.path(), "not a certificate\n");
        let error = load_roots(&path).expect_err("empty");
        assert!(
            error.contains("ca.pem") && error.contains("no usable certificate"),
            "{error}"
        );
        let error = load_roots(&dir.path().join("missing.pem")).expect_err("missing");
        assert!(error.contains("cannot read the CA file"), "{error}");
    }

    #[test]
    fn urls_split_into_scheme_host_port_and_path() {
        let cases = [
            ("http://h/x", (false, "h", 80, "/x")),
            ("https://h", (true, "h", 443, "/")),
            ("https://h:8443/a/b", (true, "h", 8443, "/a/b")),
            ("https://[::1]:8443/", (true, "::1", 8443, "/")),
            ("https://[::1]/", (true, "::1", 443, "/")),
        ];
        for (url, (tls, host, port, path)) in cases {
            let t = parse_url(url).expect(url);
            assert_eq!(
                (t.tls, t.host, t.port, t.path),
                (tls, host, port, path),
                "{url}"
            );
        }
        assert!(parse_url("ftp://h").is_err());
        assert!(parse_url("https://h:x/").is_err());
    }
}
