//! The axum application: routes, per-route body limits, request timeouts,
//! CORS, `/healthz` and `/readyz`, request tracing (paths only: query
//! strings can carry tokens), the static page, the background task that
//! samples (and expires) sessions, and the drain on shutdown.

use std::future::{Future, IntoFuture};
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, HeaderValue, Method, Request, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use tokio::net::TcpListener;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::services::ServeDir;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;

use super::state::AppState;
use super::{drain, room_ws, sessions, speech, talk_ws, whip};

/// Build the whole application.
pub fn router(state: AppState) -> Router {
    let cfg = state.config.clone();
    // JSON bodies carry the image as base64 (4/3 of its size).
    let create_limit = cfg.max_image_bytes / 3 * 4 + 16 * 1024;
    let http = Router::new()
        .route("/v1/sessions", post(sessions::create_session).layer(RequestBodyLimitLayer::new(create_limit)))
        .route("/v1/sessions/{id}", get(sessions::get_session).delete(sessions::delete_session))
        .route(
            "/v1/sessions/{id}/whip",
            post(whip::post_offer).layer(RequestBodyLimitLayer::new(cfg.max_sdp_bytes)).options(whip::options),
        )
        .route("/v1/sessions/{id}/whip/{resource}", delete(whip::delete_resource))
        .route("/v1/sessions/{id}/say", post(speech::say).layer(RequestBodyLimitLayer::new(cfg.max_wav_bytes)))
        .route(
            "/v1/sessions/{id}/speak",
            post(speech::speak).layer(RequestBodyLimitLayer::new(cfg.max_speak_chars * 4 + 1024)),
        )
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .layer(TimeoutLayer::with_status_code(StatusCode::REQUEST_TIMEOUT, cfg.request_timeout));
    // WebSockets live as long as the call: no request timeout.
    let sockets = Router::new()
        .route("/v1/sessions/{id}/talk", get(talk_ws::talk_upgrade))
        .route("/v1/rooms/{room}/ws", get(room_ws::room_upgrade));
    let mut app = http.merge(sockets);
    if let Some(dir) = &cfg.web_dir {
        app = app.fallback_service(ServeDir::new(dir).append_index_html_on_directories(true));
    }
    let trace = TraceLayer::new_for_http().make_span_with(|req: &Request<_>| {
        // Path only: `?token=` must never reach the logs.
        tracing::info_span!("http", method = %req.method(), path = %req.uri().path())
    });
    let mut app = app.layer(DefaultBodyLimit::disable()).layer(trace).with_state(state);
    if let Some(cors) = cors_layer(&cfg.cors_origins) {
        // tower-http answers every OPTIONS itself once CORS is on; keep the
        // WHIP `Accept-Post` advertisement on those answers too.
        app = app.layer(cors).layer(middleware::from_fn(whip_options_headers));
    }
    app
}

async fn whip_options_headers(req: axum::extract::Request, next: Next) -> Response {
    let is_whip_options = req.method() == Method::OPTIONS && req.uri().path().ends_with("/whip");
    let mut resp = next.run(req).await;
    if is_whip_options {
        let h = resp.headers_mut();
        h.entry(header::HeaderName::from_static("accept-post")).or_insert(HeaderValue::from_static("application/sdp"));
        h.entry(header::ALLOW).or_insert(HeaderValue::from_static("OPTIONS, POST"));
    }
    resp
}

/// CORS for browsers on other origins; `None` = same-origin only.
fn cors_layer(origins: &[String]) -> Option<CorsLayer> {
    if origins.is_empty() {
        return None;
    }
    let allow = if origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        let list: Vec<HeaderValue> = origins
            .iter()
            .filter_map(|o| match HeaderValue::from_str(o) {
                Ok(v) => Some(v),
                Err(_) => {
                    tracing::warn!(origin = %o, "ignoring invalid CORS origin");
                    None
                }
            })
            .collect();
        AllowOrigin::list(list)
    };
    Some(
        CorsLayer::new()
            .allow_origin(allow)
            .allow_methods([Method::GET, Method::POST, Method::DELETE, Method::OPTIONS, Method::PATCH])
            .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE, header::IF_MATCH])
            .expose_headers([header::LOCATION, header::ETAG, header::LINK, header::RETRY_AFTER])
            .max_age(Duration::from_secs(600)),
    )
}

/// Liveness: 200 while the process serves, draining or not.
async fn healthz(State(state): State<AppState>) -> impl IntoResponse {
    let draining = state.drain.is_draining();
    Json(serde_json::json!({
        "status": if draining { "draining" } else { "ok" },
        "draining": draining,
        "sessions_active": state.sessions.active(),
        "capacity": state.sessions.capacity(),
    }))
}

/// Readiness: 503 once draining (the pod leaves the Service endpoints);
/// a full server stays ready (its live calls need their follow-up requests).
async fn readyz(State(state): State<AppState>) -> Response {
    if state.drain.is_draining() {
        (StatusCode::SERVICE_UNAVAILABLE, Json(serde_json::json!({"ready": false, "reason": "draining"})))
            .into_response()
    } else {
        Json(serde_json::json!({"ready": true})).into_response()
    }
}

async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    state.reap_and_sample().await;
    ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], state.metrics.render())
}

/// After a drain, how long open connections (room WebSockets, slow
/// clients) may take to close before `serve` returns anyway.
const CONNECTION_CLOSE_GRACE: Duration = Duration::from_secs(3);

/// Serve on `listener` until `shutdown` resolves; then drain (`drain.rs`):
/// refuse new sessions, let live calls run up to `config.drain_grace`, hang
/// up the rest, stop.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let sampler_state = state.clone();
    let interval = state.config.stats_interval;
    let sampler = tokio::spawn(async move {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            sampler_state.reap_and_sample().await;
        }
    });
    let (drained_tx, drained_rx) = tokio::sync::oneshot::channel::<()>();
    let drain_state = state.clone();
    let stop_accepting = async move {
        shutdown.await;
        drain::drain_sessions(&drain_state, drain_state.config.drain_grace).await;
        let _ = drained_tx.send(());
    };
    let server = axum::serve(listener, router(state.clone())).with_graceful_shutdown(stop_accepting).into_future();
    let connections_closed = async {
        match drained_rx.await {
            Ok(()) => tokio::time::sleep(CONNECTION_CLOSE_GRACE).await,
            Err(_) => std::future::pending().await,
        }
    };
    let result = tokio::select! {
        r = server => r,
        _ = connections_closed => {
            tracing::info!("connections still open {CONNECTION_CLOSE_GRACE:?} after the drain; closing them");
            Ok(())
        }
    };
    sampler.abort();
    for entry in state.sessions.list() {
        state.end_session(&entry.id, "server shutting down").await;
    }
    result
}
