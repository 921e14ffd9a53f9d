//! The hub's HTTP side: `/health` and `/metrics` (open: keep `/metrics` behind a
//! firewall or a reverse proxy that restricts it), and the fleet API under `/api/v1`
//! (every route authenticated; see [`crate::fleet`]). OCPI and the dashboard come with
//! their issues.

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use std::sync::Arc;

use crate::db::Store;
use crate::fleet::{self, ApiState};
use crate::metrics::Metrics;

/// What the handlers read.
#[derive(Clone)]
pub struct HttpState {
    pub store: Store,
    pub metrics: Arc<Metrics>,
    /// Whether the MQTT client is connected and subscribed.
    pub mqtt_ready: tokio::sync::watch::Receiver<bool>,
}

/// `/health`, `/metrics` and the fleet API at [`fleet::PREFIX`].
pub fn router(state: HttpState, api: ApiState) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .with_state(state)
        .nest(fleet::PREFIX, fleet::router(api))
}

/// 200 when the database answers and the MQTT client is subscribed, else 503; the body
/// says which part is down.
async fn health(State(state): State<HttpState>) -> Response {
    let database = match tokio::time::timeout(std::time::Duration::from_secs(5), state.store.ping()).await {
        Ok(Ok(())) => "ok".to_owned(),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "health: database check failed");
            "unreachable".to_owned()
        }
        Err(_) => "timeout".to_owned(),
    };
    let mqtt = if *state.mqtt_ready.borrow() { "connected" } else { "disconnected" };
    let ok = database == "ok" && mqtt == "connected";
    let code = if ok { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    let body = serde_json::json!({
        "status": if ok { "ok" } else { "degraded" },
        "database": database,
        "database_backend": state.store.backend(),
        "mqtt": mqtt,
    });
    (code, Json(body)).into_response()
}

async fn metrics(State(state): State<HttpState>) -> Response {
    ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], state.metrics.encode())
        .into_response()
}
