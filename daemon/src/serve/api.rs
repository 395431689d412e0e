//! The HTTP API of `faultlined serve` (axum): health, readiness, metrics, the page, and a JSON
//! API to list runs, get a run, trigger a suite, halt, resume, reload and list schedules.
//!
//! Every mutating endpoint needs `Authorization: Bearer <token>`; read-only endpoints need it
//! too unless the daemon was started with `--open-reads`. `/healthz` and `/readyz` are always
//! open, for probes.

use std::sync::{Arc, Mutex};

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::Utc;
use serde::Deserialize;
use serde_json::json;

use faultline_experiments::schedule::{RunFilter, Scheduler};

use super::metrics::{self, TargetFigures};

/// What the daemon runs on, as the API needs it: readiness, active faults, halt and resume.
pub trait ServeTarget: Send + Sync {
    /// Whether the target can take a run now; the error says why not.
    fn ready(&self) -> Result<(), String>;
    /// Active faults, described.
    fn active_faults(&self) -> Vec<String>;
    /// Reverts every active fault and blocks new ones.
    fn halt(&self) -> Result<String, String>;
    /// Allows faults again.
    fn resume(&self) -> Result<String, String>;
    /// Background load operations by outcome, when it runs.
    fn background_ops(&self) -> Option<std::collections::BTreeMap<String, u64>> {
        None
    }
}

/// Reloads the schedule from wherever it came from; `Ok` says what was loaded.
pub type Reload = dyn Fn(&mut Scheduler) -> Result<String, String> + Send + Sync;

/// Shared state of the handlers.
pub struct AppState {
    /// The scheduler (and through it, the run index).
    pub scheduler: Arc<Mutex<Scheduler>>,
    /// The target.
    pub target: Arc<dyn ServeTarget>,
    /// The bearer token.
    pub token: String,
    /// Whether read-only endpoints are open without a token.
    pub open_reads: bool,
    /// Schedule reload.
    pub reload: Arc<Reload>,
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({ "error": message.into() }))).into_response()
}

/// Constant-time comparison, so the token cannot be guessed byte by byte from timings.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// `Err` holds the 401 answer (boxed: a response is large and the error path is rare).
fn authorize(state: &AppState, headers: &HeaderMap, mutating: bool) -> Result<(), Box<Response>> {
    if !mutating && state.open_reads {
        return Ok(());
    }
    let unauthorized = |message: &str| {
        let mut response = error(StatusCode::UNAUTHORIZED, message);
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, "Bearer".parse().expect("header"));
        response
    };
    let Some(value) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    else {
        return Err(Box::new(unauthorized(
            "missing bearer token: send `Authorization: Bearer <token>` with the token from the daemon's --token-file",
        )));
    };
    match value.strip_prefix("Bearer ") {
        Some(token) if same(token.trim().as_bytes(), state.token.as_bytes()) => Ok(()),
        _ => Err(Box::new(unauthorized(
            "wrong bearer token: use the token from the daemon's --token-file",
        ))),
    }
}

/// The router.
pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .route("/", get(page))
        .route("/api/v1/runs", get(list_runs))
        .route("/api/v1/runs/{id}", get(get_run))
        .route("/api/v1/schedules", get(schedules))
        .route("/api/v1/suites/{suite}/trigger", post(trigger))
        .route("/api/v1/halt", post(halt))
        .route("/api/v1/resume", post(resume))
        .route("/api/v1/schedule/reload", post(reload))
        .with_state(state)
}

fn lock(state: &AppState) -> std::sync::MutexGuard<'_, Scheduler> {
    // A panic while holding the lock must not take the API down with it.
    state
        .scheduler
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(state): State<Arc<AppState>>) -> Response {
    let index = lock(&state).status().map(|_| ());
    match index.map(|()| state.target.ready()) {
        Ok(Ok(())) => (StatusCode::OK, "ready\n").into_response(),
        Ok(Err(why)) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {why}\n"),
        )
            .into_response(),
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {e}\n")).into_response(),
    }
}

async fn metrics_text(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    if let Err(denied) = authorize(&state, &headers, false) {
        return *denied;
    }
    let figures = TargetFigures {
        faults_active: state.target.active_faults().len() as u64,
        background_ops: state.target.background_ops(),
    };
    match metrics::render(&lock(&state), &figures) {
        Ok(text) => (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e),
    }
}

async fn page(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    if let Err(denied) = authorize(&state, &headers, false) {
        return *denied;
    }
    let faults = state.target.active_faults();
    let scheduler = lock(&state);
    let rendered = scheduler.status().and_then(|status| {
        let rows = scheduler.index().list(&RunFilter {
            limit: Some(100),
            ..RunFilter::default()
        })?;
        let trend_rows = scheduler.index().list(&RunFilter {
            since: Some(status.now - chrono::Duration::weeks(8)),
            ..RunFilter::default()
        })?;
        Ok(super::page::render(&status, &rows, &trend_rows, &faults))
    });
    match rendered {
        Ok(html) => Html(html).into_response(),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

#[derive(Deserialize)]
struct RunsQuery {
    suite: Option<String>,
    scenario: Option<String>,
    since: Option<String>,
    limit: Option<usize>,
}

async fn list_runs(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Query(query): Query<RunsQuery>,
) -> Response {
    if let Err(denied) = authorize(&state, &headers, false) {
        return *denied;
    }
    let since = match query
        .since
        .as_deref()
        .map(chrono::DateTime::parse_from_rfc3339)
    {
        None => None,
        Some(Ok(t)) => Some(t.with_timezone(&Utc)),
        Some(Err(e)) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("since: not an RFC 3339 time ({e}); e.g. 2026-06-01T00:00:00Z"),
            )
        }
    };
    let filter = RunFilter {
        suite: query.suite,
        scenario: query.scenario,
        since,
        limit: Some(query.limit.unwrap_or(100)),
    };
    match lock(&state).index().list(&filter) {
        Ok(rows) => Json(rows).into_response(),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

async fn get_run(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    if let Err(denied) = authorize(&state, &headers, false) {
        return *denied;
    }
    match lock(&state).index().get(&id) {
        Ok(Some(row)) => Json(row).into_response(),
        Ok(None) => error(
            StatusCode::NOT_FOUND,
            format!("no run {id}; GET /api/v1/runs lists them"),
        ),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

async fn schedules(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    if let Err(denied) = authorize(&state, &headers, false) {
        return *denied;
    }
    match lock(&state).status() {
        Ok(status) => Json(status).into_response(),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

async fn trigger(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(suite): Path<String>,
) -> Response {
    if let Err(denied) = authorize(&state, &headers, true) {
        return *denied;
    }
    match lock(&state).trigger(&suite) {
        Ok(ids) => (
            StatusCode::ACCEPTED,
            Json(json!({ "suite": suite, "queued": ids })),
        )
            .into_response(),
        Err(e) => error(StatusCode::NOT_FOUND, e.to_string()),
    }
}

async fn halt(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    if let Err(denied) = authorize(&state, &headers, true) {
        return *denied;
    }
    let stopped = lock(&state).halt("halted through the API");
    match state.target.halt() {
        Ok(target) => Json(json!({ "halted": true, "stopped_run": stopped, "target": target }))
            .into_response(),
        Err(e) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("the scheduler is halted, but the target's halt failed: {e}"),
        ),
    }
}

async fn resume(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    if let Err(denied) = authorize(&state, &headers, true) {
        return *denied;
    }
    lock(&state).resume();
    match state.target.resume() {
        Ok(target) => Json(json!({ "halted": false, "target": target })).into_response(),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e),
    }
}

async fn reload(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    if let Err(denied) = authorize(&state, &headers, true) {
        return *denied;
    }
    let result = (state.reload)(&mut lock(&state));
    match result {
        Ok(what) => Json(json!({ "reloaded": what })).into_response(),
        Err(e) => error(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("kept the old schedule: {e}"),
        ),
    }
}
