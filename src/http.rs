//! The HTTP side: `/metrics`, `/healthz`, a landing page, and routes other components add.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use prometheus_client::registry::Registry;
use tokio::sync::watch;
use tower_http::timeout::TimeoutLayer;

use crate::model::Snapshot;

/// What the handlers share.
#[derive(Debug, Clone)]
pub struct AppState {
    /// Every exported metric.
    pub registry: Arc<Registry>,
    /// The latest snapshot, for `/healthz`.
    pub snapshot: watch::Receiver<Arc<Snapshot>>,
    /// Path `/metrics` is served on.
    pub telemetry_path: String,
}

/// Builds the router; `extra` carries routes owned by other components (violations, reload,
/// anomaly windows) and is merged in.
pub fn router(state: AppState, extra: Router) -> Router {
    let path = state.telemetry_path.clone();
    Router::new()
        .route(&path, get(metrics))
        .route("/healthz", get(healthz))
        .route("/", get(index))
        .with_state(state)
        .merge(extra)
        .layer(TimeoutLayer::with_status_code(
            StatusCode::SERVICE_UNAVAILABLE,
            Duration::from_secs(30),
        ))
}

async fn metrics(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let wants_openmetrics = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("application/openmetrics-text"));
    let registry = state.registry.clone();
    let rendered = if wants_openmetrics {
        crate::metrics::render_openmetrics(&registry).map(|body| {
            (
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
                body,
            )
        })
    } else {
        crate::metrics::render(&registry).map(|body| {
            (
                prometheus_client::encoding::prometheus_text::CONTENT_TYPE,
                body,
            )
        })
    };
    match rendered {
        Ok((content_type, body)) => ([(header::CONTENT_TYPE, content_type)], body).into_response(),
        Err(_) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            "encoding metrics failed\n",
        )
            .into_response(),
    }
}

/// 200 once a cycle has completed, whether or not Docker answered: the exporter itself is
/// healthy and `dockwatch_docker_up` tells the rest.
async fn healthz(State(state): State<AppState>) -> Response {
    let done = state.snapshot.borrow().taken_at.is_some();
    if done {
        (StatusCode::OK, "ok\n").into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "no collection cycle finished yet\n",
        )
            .into_response()
    }
}

async fn index(State(state): State<AppState>) -> Html<String> {
    let path = &state.telemetry_path;
    Html(format!(
        "<!doctype html><html><head><title>dockwatch</title></head><body>\
         <h1>dockwatch {}</h1><ul>\
         <li><a href=\"{path}\">metrics</a></li>\
         <li><a href=\"/violations\">violations</a></li>\
         <li><a href=\"/api/v1/windows\">anomaly windows</a></li>\
         <li><a href=\"/healthz\">health</a></li>\
         </ul></body></html>\n",
        env!("CARGO_PKG_VERSION")
    ))
}
