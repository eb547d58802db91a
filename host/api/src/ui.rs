//! The web UI (`web-ui/` at the repository's top): static files built into the binary, a
//! thin client of the same REST API, so it needs no token of its own to be served.

use axum::extract::Path;
use axum::http::header;
use axum::response::{Html, IntoResponse, Response};

use crate::ApiError;
use weir_jobmanager::ErrorCode;

const INDEX: &str = include_str!("../../../web-ui/index.html");
const APP: &str = include_str!("../../../web-ui/app.js");
const STYLE: &str = include_str!("../../../web-ui/style.css");

pub(crate) async fn index() -> Html<&'static str> {
    Html(INDEX)
}

pub(crate) async fn asset(Path(file): Path<String>) -> Response {
    let (body, content_type) = match file.as_str() {
        "app.js" => (APP, "text/javascript; charset=utf-8"),
        "style.css" => (STYLE, "text/css; charset=utf-8"),
        _ => return ApiError::new(ErrorCode::NotFound, "no such file").into_response(),
    };
    ([(header::CONTENT_TYPE, content_type)], body).into_response()
}
