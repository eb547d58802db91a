//! The handlers, each documented for the OpenAPI document.

use axum::body::{Body, Bytes};
use axum::extract::{FromRequest, Path, Query, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures_util::StreamExt as _;
use serde::{Deserialize, Serialize};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{IntoParams, Modify, OpenApi, ToSchema};
use weir_jobmanager::components::{
    ComponentInfo, PlanEdge, PlanOperator, PlanSummary, UploadError,
};
use weir_jobmanager::disk::{DiskUsage, SavepointInfo, TenantUsage};
use weir_jobmanager::job::{
    CheckpointEntry, CheckpointStats, ExceptionEntry, JobDetails, JobOverview, JobState,
    OperatorStatus, SavepointStatus, StateEntry, SubmitJob, TriggerStatus,
};
use weir_jobmanager::{ClusterOverview, ErrorCode, TaskManagerInfo};

use crate::error::{ApiError, ErrorBody, ErrorDetail};
use crate::{AppState, Auth};

/// The OpenAPI document.
#[derive(OpenApi)]
#[openapi(
    info(title = "weir session cluster", description = "Run stream-processing jobs written as WebAssembly components."),
    paths(
        upload_component, list_components, get_component, delete_component,
        submit_job, list_jobs, get_job, patch_job, cancel_job, job_exceptions, job_checkpoints,
        trigger_savepoint, savepoint_status, stop_job, list_savepoints, delete_savepoint,
        delete_checkpoints,
        overview, taskmanagers, metrics
    ),
    components(schemas(
        ComponentInfo, ComponentList, PlanSummary, PlanOperator, PlanEdge, SubmitJob, JobList,
        JobOverview, JobDetails, JobState, StateEntry, OperatorStatus, ExceptionEntry,
        ExceptionList, CheckpointEntry, CheckpointStats, SavepointStatus, TriggerStatus,
        TriggerAnswer, StopRequest, ClusterOverview, TaskManagerInfo, TaskManagerList,
        SavepointInfo, SavepointList, TenantUsage, DiskUsage, DeletedCheckpoints, ErrorBody,
        ErrorDetail
    )),
    modifiers(&BearerAuth),
    security(("bearer" = []))
)]
pub struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// JSON in, with our error body when it is malformed.
pub struct ApiJson<T>(pub T);

impl<T: serde::de::DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let Json(v) = Json::<T>::from_request(req, state).await?;
        Ok(ApiJson(v))
    }
}

/// `GET /v1/components`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ComponentList {
    /// The caller's components.
    pub components: Vec<ComponentInfo>,
}

/// `GET /v1/jobs`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct JobList {
    /// The caller's jobs, newest first.
    pub jobs: Vec<JobOverview>,
}

/// `GET /v1/jobs/{id}/exceptions`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ExceptionList {
    /// Newest first.
    pub exceptions: Vec<ExceptionEntry>,
}

/// `GET /v1/taskmanagers`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct TaskManagerList {
    /// The TaskManagers.
    pub taskmanagers: Vec<TaskManagerInfo>,
}

/// `GET /v1/savepoints`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct SavepointList {
    /// The caller's savepoints, newest first.
    pub savepoints: Vec<SavepointInfo>,
}

/// `DELETE /v1/jobs/{id}/checkpoints`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct DeletedCheckpoints {
    /// The job.
    pub job: String,
    /// Bytes freed.
    pub bytes: u64,
}

/// A savepoint was triggered.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct TriggerAnswer {
    /// Poll `GET /v1/jobs/{id}/savepoints/{trigger_id}`.
    pub trigger_id: String,
}

/// `POST /v1/jobs/{id}/stop` (the body is optional).
#[derive(Debug, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StopRequest {
    /// End the input first: the final watermark fires every window.
    #[serde(default)]
    pub drain: bool,
}

/// `?name=` of a raw upload.
#[derive(Debug, Deserialize, IntoParams)]
pub struct UploadQuery {
    /// A name for the component (e.g. its file name).
    pub name: Option<String>,
}

/// `?mode=cancel`.
#[derive(Debug, Deserialize, IntoParams)]
pub struct PatchQuery {
    /// Only `cancel`.
    pub mode: String,
}

pub(crate) async fn openapi() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, weir_jobmanager::ClusterError> + Send + 'static,
) -> Result<T, ApiError> {
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r.map_err(ApiError::from),
        Err(e) => Err(ApiError::new(
            ErrorCode::Internal,
            format!("the request's work failed: {e}"),
        )),
    }
}

/// Uploads a component: the raw bytes (`Content-Type: application/wasm`) or a multipart
/// form with one file. Checked at once: a weir job of a supported WIT version.
#[utoipa::path(post, path = "/v1/components", params(UploadQuery),
    request_body(content = Vec<u8>, content_type = "application/wasm"),
    responses(
        (status = 201, description = "Stored", body = ComponentInfo),
        (status = 200, description = "The same bytes were stored before", body = ComponentInfo),
        (status = 413, description = "Larger than the tenant's max_component_bytes", body = ErrorBody),
        (status = 415, description = "Neither application/wasm nor multipart/form-data", body = ErrorBody),
        (status = 422, description = "Not a weir job component", body = ErrorBody),
    ))]
pub(crate) async fn upload_component(
    State(s): State<AppState>,
    Auth(p): Auth,
    query: Result<Query<UploadQuery>, axum::extract::rejection::QueryRejection>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let Query(query) = query?;
    // Only a tenant uploads (the admin is refused here, by its role).
    let limit = s.jm.max_component_bytes(&p)?;
    // The boundary of a form is case-sensitive: only the media type is compared as lower case.
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let media_type = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    let multipart = media_type == "multipart/form-data";
    let raw = media_type == "application/wasm" || media_type == "application/octet-stream";
    if !multipart && !raw {
        return Err(ApiError::new(
            ErrorCode::UnsupportedMediaType,
            format!(
                "send the component as 'application/wasm' (or a multipart form), not '{media_type}'"
            ),
        ));
    }
    let too_large = || {
        ApiError::new(
            ErrorCode::TooLarge,
            format!("the upload is larger than the tenant's max_component_bytes ({limit})"),
        )
    };
    // A form carries some bytes around the file.
    let slack: u64 = if multipart { 64 << 10 } else { 0 };
    // Refused by its announced length before a byte of it is read.
    let announced = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if announced.is_some_and(|n| n > limit.saturating_add(slack)) {
        return Err(too_large());
    }
    // Streamed to a temporary file, the limit enforced while reading; the file is removed on
    // every way out of here but success.
    let mut upload = {
        // Measuring the tenant's disk use walks its directories.
        let (jm, p) = (s.jm.clone(), p.clone());
        blocking(move || jm.begin_upload(&p)).await?
    };
    let write = |upload: &mut weir_jobmanager::components::Upload, chunk: &[u8]| {
        upload.write(chunk).map_err(|e| match e {
            e @ UploadError::TooLarge { .. } => ApiError::new(ErrorCode::TooLarge, e.to_string()),
            UploadError::Io(e) => {
                tracing::warn!(error = %e, "cannot store an upload");
                ApiError::new(
                    ErrorCode::InsufficientStorage,
                    "the server cannot store the upload now",
                )
            }
        })
    };
    let name = if multipart {
        let boundary = multer::parse_boundary(content_type)
            .map_err(|e| ApiError::bad_request(format!("malformed multipart form: {e}")))?;
        let constraints = multer::Constraints::new().size_limit(
            multer::SizeLimit::new()
                .whole_stream(limit.saturating_add(slack))
                .per_field(limit.saturating_add(1)),
        );
        let mut form =
            multer::Multipart::with_constraints(body.into_data_stream(), boundary, constraints);
        let form_error = |e: multer::Error| match e {
            multer::Error::StreamSizeExceeded { .. } | multer::Error::FieldSizeExceeded { .. } => {
                too_large()
            }
            e => ApiError::bad_request(format!("malformed multipart form: {e}")),
        };
        let mut found = None;
        while let Some(mut field) = form.next_field().await.map_err(form_error)? {
            if field.file_name().is_some() || field.name() == Some("file") {
                let name = field.file_name().map(str::to_string);
                while let Some(chunk) = field.chunk().await.map_err(form_error)? {
                    write(&mut upload, &chunk)?;
                }
                found = Some(name);
                break;
            }
        }
        found.ok_or_else(|| ApiError::bad_request("the form has no file field"))?
    } else {
        let mut stream = body.into_data_stream();
        while let Some(chunk) = stream.next().await {
            let chunk =
                chunk.map_err(|e| ApiError::bad_request(format!("cannot read the upload: {e}")))?;
            write(&mut upload, &chunk)?;
        }
        query.name
    };
    let jm = s.jm.clone();
    let (info, created) = blocking(move || jm.upload(&p, name, upload)).await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(info)).into_response())
}

/// The caller's components.
#[utoipa::path(get, path = "/v1/components", responses((status = 200, body = ComponentList)))]
pub(crate) async fn list_components(
    State(s): State<AppState>,
    Auth(p): Auth,
) -> Json<ComponentList> {
    Json(ComponentList {
        components: s.jm.components(&p),
    })
}

/// One component: digest, size, uploader, time, plan.
#[utoipa::path(get, path = "/v1/components/{id}", params(("id" = String, Path)),
    responses((status = 200, body = ComponentInfo), (status = 404, body = ErrorBody)))]
pub(crate) async fn get_component(
    State(s): State<AppState>,
    Auth(p): Auth,
    Path(id): Path<String>,
) -> Result<Json<ComponentInfo>, ApiError> {
    Ok(Json(s.jm.component(&p, &id)?))
}

/// Deletes a component; jobs running it go on.
#[utoipa::path(delete, path = "/v1/components/{id}", params(("id" = String, Path)),
    responses((status = 200, body = ComponentInfo), (status = 404, body = ErrorBody)))]
pub(crate) async fn delete_component(
    State(s): State<AppState>,
    Auth(p): Auth,
    Path(id): Path<String>,
) -> Result<Json<ComponentInfo>, ApiError> {
    Ok(Json(s.jm.delete_component(&p, &id)?))
}

/// Submits a job.
#[utoipa::path(post, path = "/v1/jobs", request_body = SubmitJob,
    responses(
        (status = 201, body = JobDetails),
        (status = 400, description = "Bad request, invalid plan, or a path outside allowed_paths", body = ErrorBody),
        (status = 404, description = "Unknown component", body = ErrorBody),
        (status = 409, description = "A quota, or no free slots", body = ErrorBody),
    ))]
pub(crate) async fn submit_job(
    State(s): State<AppState>,
    Auth(p): Auth,
    ApiJson(req): ApiJson<SubmitJob>,
) -> Result<(StatusCode, Json<JobDetails>), ApiError> {
    let jm = s.jm.clone();
    let details = blocking(move || jm.submit(&p, req)).await?;
    Ok((StatusCode::CREATED, Json(details)))
}

/// The caller's jobs, newest first.
#[utoipa::path(get, path = "/v1/jobs", responses((status = 200, body = JobList)))]
pub(crate) async fn list_jobs(State(s): State<AppState>, Auth(p): Auth) -> Json<JobList> {
    Json(JobList {
        jobs: s.jm.jobs_overview(&p),
    })
}

/// A job: state, plan, records and rates per operator, watermarks, last checkpoint, failure.
#[utoipa::path(get, path = "/v1/jobs/{id}", params(("id" = String, Path)),
    responses((status = 200, body = JobDetails), (status = 404, body = ErrorBody)))]
pub(crate) async fn get_job(
    State(s): State<AppState>,
    Auth(p): Auth,
    Path(id): Path<String>,
) -> Result<Json<JobDetails>, ApiError> {
    Ok(Json(s.jm.job(&p, &id)?))
}

/// Cancels a job, as Flink's `PATCH /jobs/{id}?mode=cancel`.
#[utoipa::path(patch, path = "/v1/jobs/{id}", params(("id" = String, Path), PatchQuery),
    responses((status = 202, body = JobDetails), (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub(crate) async fn patch_job(
    State(s): State<AppState>,
    Auth(p): Auth,
    Path(id): Path<String>,
    query: Result<Query<PatchQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<(StatusCode, Json<JobDetails>), ApiError> {
    let Query(q) = query?;
    if q.mode != "cancel" {
        return Err(ApiError::bad_request(format!(
            "mode '{}': only 'cancel' (stop with a savepoint: POST /v1/jobs/{{id}}/stop)",
            q.mode
        )));
    }
    Ok((StatusCode::ACCEPTED, Json(s.jm.cancel(&p, &id)?)))
}

/// Cancels a job.
#[utoipa::path(post, path = "/v1/jobs/{id}/cancel", params(("id" = String, Path)),
    responses((status = 202, body = JobDetails), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody)))]
pub(crate) async fn cancel_job(
    State(s): State<AppState>,
    Auth(p): Auth,
    Path(id): Path<String>,
) -> Result<(StatusCode, Json<JobDetails>), ApiError> {
    Ok((StatusCode::ACCEPTED, Json(s.jm.cancel(&p, &id)?)))
}

/// A job's failures (restarts included), newest first.
#[utoipa::path(get, path = "/v1/jobs/{id}/exceptions", params(("id" = String, Path)),
    responses((status = 200, body = ExceptionList), (status = 404, body = ErrorBody)))]
pub(crate) async fn job_exceptions(
    State(s): State<AppState>,
    Auth(p): Auth,
    Path(id): Path<String>,
) -> Result<Json<ExceptionList>, ApiError> {
    Ok(Json(ExceptionList {
        exceptions: s.jm.exceptions(&p, &id)?,
    }))
}

/// A job's checkpoints: counts, the latest, history with duration and size.
#[utoipa::path(get, path = "/v1/jobs/{id}/checkpoints", params(("id" = String, Path)),
    responses((status = 200, body = CheckpointStats), (status = 404, body = ErrorBody)))]
pub(crate) async fn job_checkpoints(
    State(s): State<AppState>,
    Auth(p): Auth,
    Path(id): Path<String>,
) -> Result<Json<CheckpointStats>, ApiError> {
    Ok(Json(s.jm.checkpoints(&p, &id)?))
}

/// Takes a savepoint; the job goes on.
#[utoipa::path(post, path = "/v1/jobs/{id}/savepoints", params(("id" = String, Path)),
    responses((status = 202, body = TriggerAnswer), (status = 404, body = ErrorBody),
        (status = 409, description = "The job is not RUNNING", body = ErrorBody)))]
pub(crate) async fn trigger_savepoint(
    State(s): State<AppState>,
    Auth(p): Auth,
    Path(id): Path<String>,
) -> Result<(StatusCode, Json<TriggerAnswer>), ApiError> {
    let trigger_id = s.jm.trigger_savepoint(&p, &id)?;
    Ok((StatusCode::ACCEPTED, Json(TriggerAnswer { trigger_id })))
}

/// A savepoint's progress and location.
#[utoipa::path(get, path = "/v1/jobs/{id}/savepoints/{trigger}",
    params(("id" = String, Path), ("trigger" = String, Path)),
    responses((status = 200, body = SavepointStatus), (status = 404, body = ErrorBody)))]
pub(crate) async fn savepoint_status(
    State(s): State<AppState>,
    Auth(p): Auth,
    Path((id, trigger)): Path<(String, String)>,
) -> Result<Json<SavepointStatus>, ApiError> {
    Ok(Json(s.jm.savepoint_status(&p, &id, &trigger)?))
}

/// Stops a job with a savepoint (optionally draining its input first).
#[utoipa::path(post, path = "/v1/jobs/{id}/stop", params(("id" = String, Path)),
    request_body(content = Option<StopRequest>),
    responses((status = 202, body = TriggerAnswer), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody)))]
pub(crate) async fn stop_job(
    State(s): State<AppState>,
    Auth(p): Auth,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<(StatusCode, Json<TriggerAnswer>), ApiError> {
    let req: StopRequest = if body.iter().all(u8::is_ascii_whitespace) {
        StopRequest::default()
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| ApiError::new(ErrorCode::InvalidJson, e.to_string()))?
    };
    let trigger_id = s.jm.stop(&p, &id, req.drain)?;
    Ok((StatusCode::ACCEPTED, Json(TriggerAnswer { trigger_id })))
}

/// Deletes the checkpoints an ended job kept (a failed job keeps them to resume from).
#[utoipa::path(delete, path = "/v1/jobs/{id}/checkpoints", params(("id" = String, Path)),
    responses((status = 200, body = DeletedCheckpoints), (status = 404, body = ErrorBody),
        (status = 409, description = "The job has not ended, or a job that has not ended was started from them", body = ErrorBody)))]
pub(crate) async fn delete_checkpoints(
    State(s): State<AppState>,
    Auth(p): Auth,
    Path(id): Path<String>,
) -> Result<Json<DeletedCheckpoints>, ApiError> {
    let jm = s.jm.clone();
    let job = id.clone();
    let bytes = blocking(move || jm.delete_checkpoints(&p, &id)).await?;
    Ok(Json(DeletedCheckpoints { job, bytes }))
}

/// The caller's savepoints, newest first.
#[utoipa::path(get, path = "/v1/savepoints", responses((status = 200, body = SavepointList)))]
pub(crate) async fn list_savepoints(
    State(s): State<AppState>,
    Auth(p): Auth,
) -> Result<Json<SavepointList>, ApiError> {
    let jm = s.jm.clone();
    let savepoints = blocking(move || jm.savepoints(&p)).await?;
    Ok(Json(SavepointList { savepoints }))
}

/// Deletes a savepoint (by its name in `GET /v1/savepoints`), unless a job that has not
/// ended was started from it.
#[utoipa::path(delete, path = "/v1/savepoints/{name}", params(("name" = String, Path)),
    responses((status = 200, body = SavepointInfo), (status = 404, body = ErrorBody),
        (status = 409, description = "A job that has not ended was started from it", body = ErrorBody)))]
pub(crate) async fn delete_savepoint(
    State(s): State<AppState>,
    Auth(p): Auth,
    Path(name): Path<String>,
) -> Result<Json<SavepointInfo>, ApiError> {
    let jm = s.jm.clone();
    Ok(Json(
        blocking(move || jm.delete_savepoint(&p, &name)).await?,
    ))
}

/// Slots, jobs by state, tenants; a tenant's own disk use and quota.
#[utoipa::path(get, path = "/v1/overview", responses((status = 200, body = ClusterOverview)))]
pub(crate) async fn overview(
    State(s): State<AppState>,
    Auth(p): Auth,
) -> Result<Json<ClusterOverview>, ApiError> {
    let jm = s.jm.clone();
    Ok(Json(blocking(move || Ok(jm.overview(&p))).await?))
}

/// The TaskManagers and their slots.
#[utoipa::path(get, path = "/v1/taskmanagers", responses((status = 200, body = TaskManagerList)))]
pub(crate) async fn taskmanagers(
    State(s): State<AppState>,
    Auth(p): Auth,
) -> Json<TaskManagerList> {
    Json(TaskManagerList {
        taskmanagers: s.jm.taskmanagers(&p),
    })
}

/// Prometheus metrics of the jobs the caller may see.
#[utoipa::path(get, path = "/metrics",
    responses((status = 200, description = "OpenMetrics text", content_type = "text/plain")))]
pub(crate) async fn metrics(State(s): State<AppState>, Auth(p): Auth) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        s.jm.metrics(&p),
    )
}
