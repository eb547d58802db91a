//! The REST API of a weir session cluster (design note 0004): JSON over HTTP under `/v1`,
//! shaped like Flink's, with bearer-token authentication, errors as
//! `{"error": {"code", "message"}}` and an OpenAPI document at `/v1/openapi.json` generated
//! from the handlers below.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let env = |k: &str| std::env::var(k).ok();
//! let keys = weir_api::HttpConfig::KEYS;
//! let (config, _, http) = weir_jobmanager::ClusterConfig::load(None, env, keys)?;
//! let http = weir_api::HttpConfig::load(http, env)?;
//! let jm = weir_jobmanager::JobManager::start(config)?;
//! let listener = tokio::net::TcpListener::bind(http.rest_address).await?;
//! let app = weir_api::router(jm, &http);
//! weir_api::serve(listener, app, http.limits(), std::future::pending()).await;
//! # Ok(()) }
//! ```
#![deny(missing_docs)]

mod config;
mod error;
mod http;
mod routes;
mod ui;

use axum::extract::{DefaultBodyLimit, FromRequestParts, Request};
use axum::http::header;
use axum::http::request::Parts;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::Router;
use std::time::Duration;
use weir_jobmanager::{ErrorCode, JobManager, Principal};

pub use config::HttpConfig;
pub use error::{ApiError, ErrorBody, ErrorDetail};
pub use http::{serve, HttpLimits};
pub use routes::{ApiDoc, ComponentList, JobList, SavepointList, StopRequest, TriggerAnswer};

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    jm: JobManager,
}

/// The caller, from `Authorization: Bearer <token>`.
pub struct Auth(pub Principal);

impl FromRequestParts<AppState> for Auth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let value = parts
            .headers
            .get(header::AUTHORIZATION)
            .ok_or_else(|| ApiError::unauthorized("missing 'Authorization: Bearer <token>'"))?;
        // The scheme is case-insensitive (RFC 9110, section 11.1).
        let token = value
            .to_str()
            .ok()
            .and_then(|v| v.trim_start().split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, token)| token.trim())
            .ok_or_else(|| ApiError::unauthorized("expected 'Authorization: Bearer <token>'"))?;
        state
            .jm
            .authenticate(token)
            .map(Auth)
            .ok_or_else(|| ApiError::unauthorized("the token is not valid"))
    }
}

/// The API's router.
pub fn router(jm: JobManager, http: &HttpConfig) -> Router {
    let json_limit = http.max_request_bytes;
    let body_timeout = Duration::from_millis(http.body_read_timeout_ms);
    let state = AppState { jm };
    let v1 = Router::new()
        .route("/openapi.json", get(routes::openapi))
        .route(
            "/components",
            post(routes::upload_component).get(routes::list_components),
        )
        .route(
            "/components/{id}",
            get(routes::get_component).delete(routes::delete_component),
        )
        .route("/jobs", post(routes::submit_job).get(routes::list_jobs))
        .route("/jobs/{id}", get(routes::get_job).patch(routes::patch_job))
        .route("/jobs/{id}/cancel", post(routes::cancel_job))
        .route("/jobs/{id}/exceptions", get(routes::job_exceptions))
        .route(
            "/jobs/{id}/checkpoints",
            get(routes::job_checkpoints).delete(routes::delete_checkpoints),
        )
        .route("/jobs/{id}/savepoints", post(routes::trigger_savepoint))
        .route(
            "/jobs/{id}/savepoints/{trigger}",
            get(routes::savepoint_status),
        )
        .route("/jobs/{id}/stop", post(routes::stop_job))
        .route("/savepoints", get(routes::list_savepoints))
        .route("/savepoints/{name}", delete(routes::delete_savepoint))
        .route("/overview", get(routes::overview))
        .route("/taskmanagers", get(routes::taskmanagers));
    Router::new()
        .nest("/v1", v1)
        .route("/metrics", get(routes::metrics))
        .route("/", get(ui::index))
        .route("/ui/{file}", get(ui::asset))
        .fallback(|| async { ApiError::new(ErrorCode::NotFound, "no such route") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                ErrorCode::MethodNotAllowed,
                "this route does not take that method",
            )
        })
        .layer(DefaultBodyLimit::max(json_limit))
        // A client that stops sending its body mid-way is cut off.
        .layer(tower_http::timeout::RequestBodyTimeoutLayer::new(
            body_timeout,
        ))
        .layer(axum::middleware::from_fn(log_request))
        .layer(axum::middleware::from_fn(close_after_refused_body))
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(
            |_: Box<dyn std::any::Any + Send>| {
                ApiError::new(
                    ErrorCode::Internal,
                    "the server failed to answer this request",
                )
                .into_response()
            },
        ))
        .with_state(state)
}

/// A request refused with a body the handler may not have read (a wrong token before a large
/// upload, say): the answer says the connection closes, as it will, so that no client sends
/// its next request on it.
async fn close_after_refused_body(request: Request, next: Next) -> Response {
    let headers = request.headers();
    let has_body = headers.contains_key(header::TRANSFER_ENCODING)
        || headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
            .is_some_and(|n| n > 0);
    let mut response = next.run(request).await;
    let refused = response.status().is_client_error() || response.status().is_server_error();
    if has_body && refused {
        response.headers_mut().insert(
            header::CONNECTION,
            header::HeaderValue::from_static("close"),
        );
    }
    response
}

/// Logs each request's method, path and status; never its headers (they carry tokens).
async fn log_request(request: Request, next: Next) -> Response {
    let method = request.method().clone();
    let path = request.uri().path().to_string();
    let started = std::time::Instant::now();
    let response = next.run(request).await;
    tracing::debug!(
        %method,
        %path,
        status = response.status().as_u16(),
        ms = started.elapsed().as_millis() as u64,
        "request"
    );
    response
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::http::{Request, StatusCode};
    use tower::ServiceExt;
    use weir_jobmanager::{ClusterConfig, JobManager};

    async fn call(app: &axum::Router, request: Request<Body>) -> (StatusCode, serde_json::Value) {
        let response = app.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .unwrap();
        (status, serde_json::from_slice(&bytes).unwrap())
    }

    fn app(dir: &std::path::Path) -> axum::Router {
        let env = |k: &str| match k {
            "WEIR_DATA_DIR" => Some(dir.display().to_string()),
            "WEIR_TOKEN" => Some("t0ken".to_string()),
            _ => None,
        };
        let (config, _, _) = ClusterConfig::load(None, env, &[]).unwrap();
        super::router(
            JobManager::start(config).unwrap(),
            &super::HttpConfig::default(),
        )
    }

    #[tokio::test]
    async fn every_answer_is_json_even_errors() {
        let dir = tempfile::tempdir().unwrap();
        let app = app(dir.path());
        let get = |path: &str, token: Option<&str>| {
            let mut r = Request::get(path);
            if let Some(t) = token {
                r = r.header("authorization", format!("Bearer {t}"));
            }
            r.body(Body::empty()).unwrap()
        };
        let (s, v) = call(&app, get("/v1/jobs", None)).await;
        assert_eq!(
            (s, v["error"]["code"].as_str()),
            (StatusCode::UNAUTHORIZED, Some("unauthorized"))
        );
        let (s, v) = call(&app, get("/v1/jobs", Some("t0ken"))).await;
        assert_eq!((s, v), (StatusCode::OK, serde_json::json!({"jobs": []})));
        let (s, v) = call(&app, get("/v1/jobs/nope", Some("t0ken"))).await;
        assert_eq!(
            (s, v["error"]["code"].as_str()),
            (StatusCode::NOT_FOUND, Some("not_found"))
        );
        let (s, v) = call(&app, get("/nowhere", None)).await;
        assert_eq!(
            (s, v["error"]["code"].as_str()),
            (StatusCode::NOT_FOUND, Some("not_found"))
        );
        let bad = Request::post("/v1/jobs")
            .header("authorization", "Bearer t0ken")
            .header("content-type", "application/json")
            .body(Body::from("{"))
            .unwrap();
        let (s, v) = call(&app, bad).await;
        assert_eq!(
            (s, v["error"]["code"].as_str()),
            (StatusCode::BAD_REQUEST, Some("invalid_json"))
        );
        let (s, v) = call(&app, get("/v1/openapi.json", None)).await;
        assert_eq!(s, StatusCode::OK);
        assert!(v["paths"]["/v1/jobs/{id}/savepoints/{trigger}"].is_object());
    }
}
