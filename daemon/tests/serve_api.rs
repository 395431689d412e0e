//! The daemon's HTTP API in process, on a real socket, with a fake target and runner: bearer
//! auth (a missing or wrong token gets 401 and changes nothing), open reads, trigger, halt,
//! resume, reload, /metrics and the page agreeing with the index. The real lab is exercised by
//! `serve_lab.rs`.

// The page test shares its browser helpers with the report page test.
#[allow(dead_code)]
#[path = "../../experiments/tests/browser/mod.rs"]
mod browser;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use faultline_daemon::serve::api::{self, AppState, ServeTarget};
use faultline_daemon::serve::client::request;
use faultline_experiments::schedule::{
    FaultTtr, ManualClock, RunFilter, RunIndex, RunRequest, RunResult, RunStatus, ScheduleFile,
    Scheduler, StopSignal, SuiteRunner,
};

const TOKEN: &str = "s3cret-token-0123456789";

const SCHEDULE: &str = "
suites:
  - name: nightly
    cron: \"0 2 * * *\"
    scenarios: [{scenario: pod-failure}, {scenario: az-failure}]
";

#[derive(Default)]
struct FakeTarget {
    halts: AtomicUsize,
    resumes: AtomicUsize,
}

impl ServeTarget for FakeTarget {
    fn ready(&self) -> Result<(), String> {
        Ok(())
    }
    fn active_faults(&self) -> Vec<String> {
        vec!["f-1 on a1 until later".into()]
    }
    fn halt(&self) -> Result<String, String> {
        self.halts.fetch_add(1, Ordering::SeqCst);
        Ok("halted".into())
    }
    fn resume(&self) -> Result<String, String> {
        self.resumes.fetch_add(1, Ordering::SeqCst);
        Ok("resumed".into())
    }
    fn background_ops(&self) -> Option<BTreeMap<String, u64>> {
        Some([("ok".to_owned(), 41), ("fail".to_owned(), 1)].into())
    }
}

/// Ends every run at once: failed, with a TTR and a lost write.
struct InstantRunner;

impl SuiteRunner for InstantRunner {
    fn run(&self, request: &RunRequest, _: &StopSignal) -> RunResult {
        RunResult {
            run_id: Some(format!("{}-{}", request.entry.scenario, request.index_id)),
            status: Some(RunStatus::Failed),
            exit_code: Some(1),
            score: Some(40),
            verdicts: [("consistency".to_owned(), "invalid".to_owned())].into(),
            ttr: vec![FaultTtr {
                fault_id: "f-1".into(),
                kind: "partition".into(),
                ttr_ms: Some(4500),
                recovered: true,
            }],
            anomalies: [("lost".to_owned(), 2)].into(),
            ..RunResult::default()
        }
    }
}

struct Server {
    address: SocketAddr,
    scheduler: Arc<Mutex<Scheduler>>,
    target: Arc<FakeTarget>,
    reloads: Arc<AtomicUsize>,
    _runtime: tokio::runtime::Runtime,
    _dir: tempfile::TempDir,
}

fn start(open_reads: bool) -> Server {
    start_with(open_reads, axum::Router::new())
}

/// Like [`start`], with `extra` routes next to the API (the browser test's harness page).
fn start_with(open_reads: bool, extra: axum::Router) -> Server {
    let dir = tempfile::tempdir().expect("tempdir");
    let schedule = ScheduleFile::parse(SCHEDULE, "s.yaml")
        .expect("parse")
        .resolve("s.yaml", Path::new("."))
        .expect("resolve");
    let now: DateTime<Utc> = "2026-06-03T12:00:00Z".parse().expect("time");
    let (scheduler, _) = Scheduler::start(
        schedule,
        RunIndex::open(&dir.path().join("runs.sqlite")).expect("index"),
        Arc::new(InstantRunner),
        Arc::new(ManualClock::at(now)),
    )
    .expect("start");
    let scheduler = Arc::new(Mutex::new(scheduler));
    let target = Arc::new(FakeTarget::default());
    let reloads = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&reloads);
    let state = Arc::new(AppState {
        scheduler: Arc::clone(&scheduler),
        target: target.clone(),
        token: TOKEN.to_owned(),
        open_reads,
        reload: Arc::new(move |_: &mut Scheduler| {
            counted.fetch_add(1, Ordering::SeqCst);
            Err("test.yaml: line 3 column 5: unknown field `crn`".to_owned())
        }),
    });
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .expect("bind");
    let address = listener.local_addr().expect("addr");
    let router = api::router(state).merge(extra);
    runtime.spawn(async move { axum::serve(listener, router).await });
    Server {
        address,
        scheduler,
        target,
        reloads,
        _runtime: runtime,
        _dir: dir,
    }
}

impl Server {
    fn call(&self, method: &str, path: &str, token: Option<&str>) -> (u16, String) {
        let answer = request(self.address, method, path, token, None).expect("request");
        (answer.status, answer.body)
    }

    fn rows(&self) -> usize {
        self.scheduler
            .lock()
            .expect("scheduler")
            .index()
            .list(&RunFilter::default())
            .expect("list")
            .len()
    }

    fn halted(&self) -> bool {
        self.scheduler
            .lock()
            .expect("scheduler")
            .status()
            .expect("status")
            .halted
            .is_some()
    }

    /// Ticks until nothing runs or is queued.
    fn drain(&self) {
        for _ in 0..20 {
            let mut scheduler = self.scheduler.lock().expect("scheduler");
            scheduler.tick().expect("tick");
            assert!(scheduler.wait_running(Duration::from_secs(10)));
            scheduler.tick().expect("tick");
            let status = scheduler.status().expect("status");
            if status.running.is_none() && status.queued == 0 {
                return;
            }
        }
        panic!("runs did not drain");
    }
}

const MUTATING: [&str; 4] = [
    "/api/v1/suites/nightly/trigger",
    "/api/v1/halt",
    "/api/v1/resume",
    "/api/v1/schedule/reload",
];

#[test]
fn a_missing_or_wrong_token_gets_401_and_changes_nothing() {
    let server = start(true);
    for path in MUTATING {
        for token in [None, Some("wrong-token-0123456789"), Some("")] {
            let (status, body) = server.call("POST", path, token);
            assert_eq!(status, 401, "POST {path} with {token:?}: {body}");
            assert!(body.contains("bearer token"), "{body}");
        }
    }
    assert_eq!(server.rows(), 0, "nothing was queued");
    assert!(!server.halted(), "the scheduler was not halted");
    assert_eq!(server.target.halts.load(Ordering::SeqCst), 0);
    assert_eq!(server.target.resumes.load(Ordering::SeqCst), 0);
    assert_eq!(server.reloads.load(Ordering::SeqCst), 0);
    // The same requests with the token do change things.
    let (status, body) = server.call("POST", MUTATING[0], Some(TOKEN));
    assert_eq!(status, 202, "{body}");
    assert_eq!(server.rows(), 2);
    assert_eq!(server.call("POST", "/api/v1/halt", Some(TOKEN)).0, 200);
    assert!(server.halted());
    assert_eq!(server.target.halts.load(Ordering::SeqCst), 1);
    assert_eq!(server.call("POST", "/api/v1/resume", Some(TOKEN)).0, 200);
    assert!(!server.halted());
    let (status, body) = server.call("POST", "/api/v1/schedule/reload", Some(TOKEN));
    assert_eq!(status, 422, "an invalid schedule is refused: {body}");
    assert!(
        body.contains("kept the old schedule") && body.contains("line 3 column 5"),
        "{body}"
    );
    assert_eq!(
        server
            .call("POST", "/api/v1/suites/nope/trigger", Some(TOKEN))
            .0,
        404
    );
}

#[test]
fn reads_need_the_token_unless_open_and_probes_are_always_open() {
    let closed = start(false);
    for path in [
        "/api/v1/runs",
        "/api/v1/runs/1",
        "/api/v1/schedules",
        "/metrics",
        "/",
    ] {
        assert_eq!(closed.call("GET", path, None).0, 401, "GET {path}");
        assert_eq!(
            closed.call("GET", path, Some("nope-nope-nope-nope")).0,
            401,
            "GET {path}"
        );
    }
    assert_eq!(closed.call("GET", "/api/v1/schedules", Some(TOKEN)).0, 200);
    for server in [&closed, &start(true)] {
        assert_eq!(
            server.call("GET", "/healthz", None),
            (200, "ok\n".to_owned())
        );
        assert_eq!(server.call("GET", "/readyz", None).0, 200);
    }
    let open = start(true);
    assert_eq!(open.call("GET", "/api/v1/runs", None).0, 200);
    assert_eq!(
        open.call("POST", "/api/v1/halt", None).0,
        401,
        "writes stay closed"
    );
}

#[test]
fn the_api_the_metrics_and_the_page_agree_with_the_index() {
    let server = start(true);
    assert_eq!(
        server
            .call("POST", "/api/v1/suites/nightly/trigger", Some(TOKEN))
            .0,
        202
    );
    server.drain();
    let (status, body) = server.call("GET", "/api/v1/runs", None);
    assert_eq!(status, 200);
    let runs: serde_json::Value = serde_json::from_str(&body).expect("json");
    let runs = runs.as_array().expect("array");
    assert_eq!(runs.len(), 2);
    assert!(runs
        .iter()
        .all(|r| r["status"] == "failed" && r["trigger"] == "api"));
    let id = runs[0]["id"].as_i64().expect("id");
    let (status, body) = server.call("GET", &format!("/api/v1/runs/{id}"), None);
    assert_eq!(status, 200);
    let run: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(run["anomalies"]["lost"], 2);
    assert_eq!(run["ttr"][0]["ttr_ms"], 4500);
    assert_eq!(server.call("GET", "/api/v1/runs/999", None).0, 404);

    let (status, metrics) = server.call("GET", "/metrics", None);
    assert_eq!(status, 200);
    for line in [
        "faultline_runs_total{suite=\"nightly\",scenario=\"az-failure\",verdict=\"failed\"} 1",
        "faultline_runs_total{suite=\"nightly\",scenario=\"pod-failure\",verdict=\"failed\"} 1",
        "faultline_anomalies_total{kind=\"lost\"} 4",
        "faultline_run_ttr_seconds{scenario=\"az-failure\"} 4.5",
        "faultline_faults_active 1",
        "faultline_background_ops_total{outcome=\"ok\"} 41",
        "faultline_runs_queued 0",
        "faultline_halted 0",
    ] {
        assert!(metrics.contains(line), "missing `{line}` in:\n{metrics}");
    }
    // 2026-06-04T02:00:00Z, the nightly suite's next run.
    assert!(
        metrics.contains("faultline_next_run_timestamp_seconds{suite=\"nightly\"} 1780538400"),
        "{metrics}"
    );

    let (status, page) = server.call("GET", "/", None);
    assert_eq!(status, 200);
    assert_eq!(page.matches("class=\"run\"").count(), 2);
    assert_eq!(page.matches("badge-failed").count(), 2);
    assert!(page.contains("data-suite=\"nightly\""));
    assert!(page.contains("f-1 on a1"));
    assert!(page.contains("id=\"halt\""));
    assert!(page.contains("<svg class=\"trend\" data-scenario=\"az-failure\""));
}

/// Loads the page in an iframe, counts what it shows, types `token` into it and clicks Halt;
/// the outcome the page displays is copied out for `--dump-dom`.
const HARNESS: &str = r#"<!doctype html><html><body>
<pre id="seen"></pre><pre id="answer"></pre>
<iframe id="page" src="/" width="1200" height="900"></iframe>
<script>
var token = new URLSearchParams(location.search).get('token');
var frame = document.getElementById('page');
var clicked = false;
frame.onload = function () {
  if (clicked) { return; }
  clicked = true;
  var d = frame.contentDocument;
  document.getElementById('seen').textContent =
    'runs=' + d.querySelectorAll('tr.run').length +
    ' failed=' + d.querySelectorAll('.badge-failed').length +
    ' plots=' + d.querySelectorAll('svg.trend').length +
    ' next=' + d.querySelectorAll('tr.next').length +
    ' faults=' + d.querySelectorAll('li.fault').length;
  d.getElementById('token').value = token;
  d.getElementById('halt').click();
  setTimeout(function () {
    document.getElementById('answer').textContent = 'answer=' + d.getElementById('result').textContent;
  }, 300);
};
</script></body></html>"#;

#[test]
fn the_page_works_in_headless_chromium_and_its_halt_button_needs_the_token() {
    let Some(chromium) = browser::chromium() else {
        eprintln!("skipping: no chromium (apt-get install chromium)");
        return;
    };
    let harness = axum::Router::new().route(
        "/harness",
        axum::routing::get(|| async { axum::response::Html(HARNESS) }),
    );
    let server = start_with(true, harness);
    assert_eq!(
        server
            .call("POST", "/api/v1/suites/nightly/trigger", Some(TOKEN))
            .0,
        202
    );
    server.drain();

    let wrong = browser::dump_dom(
        chromium,
        &format!(
            "http://{}/harness?token=wrong-token-000000000",
            server.address
        ),
    );
    assert!(
        wrong.contains("runs=2 failed=2 plots=2 next=1 faults=1"),
        "the page as Chromium shows it:\n{wrong}"
    );
    assert!(wrong.contains("answer=401"), "{wrong}");
    assert!(!server.halted(), "a wrong token halts nothing");
    assert_eq!(server.target.halts.load(Ordering::SeqCst), 0);

    let right = browser::dump_dom(
        chromium,
        &format!("http://{}/harness?token={TOKEN}", server.address),
    );
    assert!(right.contains("answer=200"), "{right}");
    assert!(server.halted(), "the Halt button halted the scheduler");
    assert_eq!(server.target.halts.load(Ordering::SeqCst), 1);
}
