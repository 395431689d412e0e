//! The reports on the report volume, over HTTP: `/runs` lists the runs newest first, and
//! `/runs/ID/report.html|json|xml` serves one run's report. Every replica serves them (the
//! volume is shared), so the Service needs no leader. `chaosctl report --context` reaches them
//! through the API server's service proxy.
//!
//! With a schedule, `/metrics` serves the run index's figures in Prometheus text format: the
//! leader's from its scheduler, a follower's with only `faultline_controller_leading 0`.
//!
//! Read-only; a run id is one path segment of letters, digits, `.`, `_` and `-` that does not
//! start with a dot, so no request can leave the reports directory.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::extract::{Path as UrlPath, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

/// What the runner writes next to the reports: which Experiment the run was.
pub const RUN_RECORD: &str = "experiment.json";

/// One run in `/runs`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RunEntry {
    /// The run id.
    pub id: String,
    /// The Experiment, `NAMESPACE/NAME`, when the runner recorded it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub experiment: Option<String>,
    /// The scenario.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scenario: Option<String>,
    /// `valid`, `invalid` or `unknown`; absent while running or when the run ended without one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verdict: Option<String>,
    /// The score.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub score: Option<u64>,
    /// When the run started (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
    /// The report formats present.
    pub reports: Vec<String>,
}

/// Whether `id` may name a run directory.
pub fn valid_run_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 200
        && !id.starts_with('.')
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

fn read_json(path: &Path) -> Option<serde_json::Value> {
    serde_json::from_slice(&std::fs::read(path).ok()?).ok()
}

/// Every run under `dir`, newest first (by start time, then id).
pub fn list_runs(dir: &Path) -> std::io::Result<Vec<RunEntry>> {
    let mut runs = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let id = entry.file_name().to_string_lossy().into_owned();
        if !valid_run_id(&id) || !entry.file_type()?.is_dir() {
            continue;
        }
        let path = entry.path();
        let record = read_json(&path.join(RUN_RECORD)).unwrap_or_default();
        let report = read_json(&path.join("report.json")).unwrap_or_default();
        let text = |v: &serde_json::Value| v.as_str().map(str::to_owned);
        runs.push(RunEntry {
            experiment: text(&record["experiment"]),
            scenario: text(&record["scenario"]).or_else(|| text(&report["experiment"]["scenario"])),
            verdict: text(&report["status"]),
            score: report["score"].as_u64(),
            started_at: text(&record["startedAt"]),
            reports: ["html", "json", "xml"]
                .into_iter()
                .filter(|ext| path.join(format!("report.{ext}")).is_file())
                .map(str::to_owned)
                .collect(),
            id,
        });
    }
    runs.sort_by(|a, b| (&b.started_at, &b.id).cmp(&(&a.started_at, &a.id)));
    Ok(runs)
}

struct Reports {
    dir: PathBuf,
}

fn not_found(message: String) -> Response {
    (StatusCode::NOT_FOUND, message).into_response()
}

async fn runs(State(reports): State<Arc<Reports>>) -> Response {
    match list_runs(&reports.dir) {
        Ok(runs) => Json(runs).into_response(),
        Err(error) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "cannot read the reports directory {}: {error}; is the report volume mounted?",
                reports.dir.display()
            ),
        )
            .into_response(),
    }
}

async fn report(
    State(reports): State<Arc<Reports>>,
    UrlPath((id, file)): UrlPath<(String, String)>,
) -> Response {
    let content_type = match file.as_str() {
        "report.html" => "text/html; charset=utf-8",
        "report.json" => "application/json",
        "report.xml" => "application/xml",
        _ => {
            return not_found(format!(
                "no such report {file:?}; ask for report.html, report.json or report.xml"
            ))
        }
    };
    if !valid_run_id(&id) {
        return not_found(format!("{id:?} is not a run id; `/runs` lists them"));
    }
    let path = reports.dir.join(&id).join(&file);
    match tokio::fs::read(&path).await {
        Ok(bytes) => ([(header::CONTENT_TYPE, content_type)], bytes).into_response(),
        Err(_) if !reports.dir.join(&id).is_dir() => {
            not_found(format!("no run {id}; `/runs` lists them"))
        }
        Err(_) => not_found(format!(
            "run {id} has no {file} (yet): the runner writes the reports when it finishes"
        )),
    }
}

/// The router: `/healthz`, `/runs`, `/runs/ID/report.(html|json|xml)`.
pub fn router(dir: PathBuf) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/runs", get(runs))
        .route("/runs/{id}/{file}", get(report))
        .with_state(Arc::new(Reports { dir }))
}

/// What `/metrics` reads: the hosted scheduler (while leading) and the API, for the count of
/// Faults active on the cluster.
pub type MetricsSource = (
    Arc<std::sync::Mutex<Option<faultline_experiments::schedule::Scheduler>>>,
    kube::Client,
);

async fn metrics(State(source): State<Arc<MetricsSource>>) -> Response {
    use faultline_experiments::kubernetes::crd::Fault;
    let (scheduler, client) = source.as_ref();
    let faults: kube::Api<Fault> = kube::Api::all(client.clone());
    let faults_active = match tokio::time::timeout(
        std::time::Duration::from_secs(5),
        faults.list_metadata(&kube::api::ListParams::default()),
    )
    .await
    {
        Ok(Ok(list)) => list.items.len() as u64,
        _ => return (StatusCode::SERVICE_UNAVAILABLE, "cannot list Faults").into_response(),
    };
    let figures = crate::serve::metrics::TargetFigures {
        faults_active,
        background_ops: None,
    };
    let text = match scheduler.lock().expect("scheduler").as_ref() {
        Some(scheduler) => crate::serve::metrics::render(scheduler, &figures),
        None => Ok("# HELP faultline_controller_leading Whether this replica leads (and schedules).\n# TYPE faultline_controller_leading gauge\nfaultline_controller_leading 0\n# EOF\n".to_owned()),
    };
    match text {
        Ok(text) => (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e).into_response(),
    }
}

/// Serves the reports (and `/metrics` when a schedule is hosted) on `addr` until the task is
/// aborted; returns the bound address.
///
/// # Errors
/// The address cannot be bound.
pub async fn serve(
    dir: PathBuf,
    addr: SocketAddr,
    metrics_source: Option<MetricsSource>,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    let mut app = router(dir);
    if let Some(source) = metrics_source {
        app = app.merge(
            Router::new()
                .route("/metrics", get(metrics))
                .with_state(Arc::new(source)),
        );
    }
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok((local, task))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_ids_are_one_plain_path_segment() {
        for good in ["az-failure-20261202T140000", "a.b_c-1"] {
            assert!(valid_run_id(good), "{good}");
        }
        for bad in ["", "..", ".hidden", "a/b", "a%2Fb", "x\0", "sp ace"] {
            assert!(!valid_run_id(bad), "{bad:?}");
        }
    }

    #[test]
    fn runs_are_listed_newest_first_with_their_verdicts() {
        let dir = tempfile::tempdir().expect("tempdir");
        for (id, started, status) in [
            ("old", "2026-12-01T10:00:00Z", "valid"),
            ("new", "2026-12-02T10:00:00Z", "invalid"),
        ] {
            let run = dir.path().join(id);
            std::fs::create_dir(&run).expect("mkdir");
            std::fs::write(
                run.join(RUN_RECORD),
                serde_json::json!({"experiment": format!("shop/{id}"), "startedAt": started})
                    .to_string(),
            )
            .expect("record");
            std::fs::write(
                run.join("report.json"),
                serde_json::json!({"status": status, "score": 42}).to_string(),
            )
            .expect("report");
        }
        std::fs::write(dir.path().join("stray-file"), "x").expect("stray");
        let runs = list_runs(dir.path()).expect("list");
        let ids: Vec<&str> = runs.iter().map(|r| r.id.as_str()).collect();
        assert_eq!(ids, ["new", "old"]);
        assert_eq!(runs[0].verdict.as_deref(), Some("invalid"));
        assert_eq!(runs[0].experiment.as_deref(), Some("shop/new"));
        assert_eq!(runs[0].reports, ["json"]);
    }
}
