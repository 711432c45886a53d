//! `[agent] listen`: `/healthz`, `/readyz` and `/metrics` on a small HTTP server.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State as AxState;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use tokio_util::sync::CancellationToken;

use crate::health::Health;
use crate::metrics;
use crate::state::State;

/// What the handlers read.
#[derive(Clone)]
pub struct Probe {
    pub health: Arc<Health>,
    pub state: State,
    /// A source failing for longer than this makes `/readyz` answer 503.
    pub unready_after: Duration,
    /// A source loop that has not turned for this long makes `/healthz` answer 503.
    pub stale: Duration,
}

fn json(status: StatusCode, body: serde_json::Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

async fn healthz(AxState(p): AxState<Probe>) -> Response {
    let stuck = p.health.stuck(p.stale);
    if stuck.is_empty() {
        json(StatusCode::OK, serde_json::json!({"status": "ok"}))
    } else {
        json(
            StatusCode::SERVICE_UNAVAILABLE,
            serde_json::json!({"status": "stuck", "sources": stuck}),
        )
    }
}

async fn readyz(AxState(p): AxState<Probe>) -> Response {
    // The state must answer (a cheap query on its thread, or the database) within a second.
    let state_ok = matches!(
        tokio::time::timeout(Duration::from_secs(1), p.state.ping()).await,
        Ok(Ok(()))
    );
    let sources = p.health.readiness(p.unready_after);
    let sinks = p.health.sink_readiness(p.unready_after);
    // The server answers from before the sources are started (opening sinks and building the
    // HTTP client take a moment): no sources yet is not ready.
    let started = p.health.is_started();
    let ready =
        started && state_ok && sources.values().all(|s| s.ready) && sinks.values().all(|s| s.ready);
    let mut body = serde_json::json!({
        "status": if ready { "ready" } else { "not ready" },
        "state": if state_ok { "ok" } else { "not answering" },
        "sources": sources,
        "sinks": sinks,
    });
    if !ready {
        let reasons: Vec<String> = sources
            .iter()
            .filter_map(|(n, s)| s.reason.as_ref().map(|r| format!("{n}: {r}")))
            .chain(
                sinks
                    .iter()
                    .filter_map(|(n, s)| s.reason.as_ref().map(|r| format!("sink {n}: {r}"))),
            )
            .chain((!state_ok).then(|| "state: not answering".to_string()))
            .chain((!started).then(|| "starting: the sources are not started yet".to_string()))
            .collect();
        body["reason"] = serde_json::Value::String(reasons.join("; "));
    }
    json(
        if ready {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        },
        body,
    )
}

async fn metrics_text(AxState(p): AxState<Probe>) -> Response {
    for (name, s) in p.health.sink_readiness(p.unready_after) {
        metrics::sink_up(&name, s.ready);
    }
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        metrics::render(),
    )
        .into_response()
}

/// Binds `addr` (an error here is a start-up failure) and serves until `cancel`.
pub async fn serve(
    addr: SocketAddr,
    probe: Probe,
    cancel: CancellationToken,
) -> std::io::Result<tokio::task::JoinHandle<()>> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let app = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .with_state(probe);
    tracing::info!(%addr, "serving /healthz /readyz /metrics");
    Ok(tokio::spawn(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(async move { cancel.cancelled().await })
            .await;
    }))
}
