//! Errors of the cluster's operations, each with a stable code and the kind of HTTP answer
//! it becomes.

/// What kind of failure (the REST layer maps each to a status code).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The request is malformed or names something invalid (400).
    BadRequest,
    /// No valid token (401).
    Unauthorized,
    /// The caller may not do this at all (403), e.g. a tenant asking for cluster operations.
    Forbidden,
    /// Unknown id, or another tenant's (404).
    NotFound,
    /// The thing is in a state that does not allow it, or a quota is used up (409).
    Conflict,
    /// The body is larger than allowed (413).
    TooLarge,
    /// Well-formed but unusable content: a component that is not a weir job (422).
    Unprocessable,
    /// The route exists, the method does not (405).
    MethodNotAllowed,
    /// The body is not of the expected media type (415).
    UnsupportedMediaType,
    /// The server cannot store the request's content now (507).
    InsufficientStorage,
    /// Our fault (500); details go to the log.
    Internal,
}

/// Every machine-readable error code of the REST API: the `code` of an error body.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The request is wrong (a field out of range, a reserved argument name, ...).
    BadRequest,
    /// The body is not JSON.
    InvalidJson,
    /// The body is JSON but not the request's shape (unknown or mistyped fields).
    InvalidRequest,
    /// The query string is wrong.
    InvalidQuery,
    /// No valid token.
    Unauthorized,
    /// The admin token was used for a tenant's operation.
    TenantOnly,
    /// Unknown id, or another tenant's.
    NotFound,
    /// The route exists, the method does not.
    MethodNotAllowed,
    /// The body is not JSON where JSON is expected.
    UnsupportedMediaType,
    /// The thing is in a state that does not allow this.
    Conflict,
    /// Something still uses what is to be deleted.
    InUse,
    /// A tenant's quota would be exceeded.
    QuotaExceeded,
    /// Not enough free slots now (submit with `wait` to queue).
    NoSlots,
    /// The body is larger than allowed.
    TooLarge,
    /// The server has no room to store it now.
    InsufficientStorage,
    /// The upload is not a weir job component.
    InvalidComponent,
    /// The component's plan is invalid or failed.
    InvalidPlan,
    /// A path outside the tenant's directories.
    PathNotAllowed,
    /// Our fault; the details are in the server's log.
    Internal,
}

impl ErrorCode {
    /// The code as it appears in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::InvalidJson => "invalid_json",
            ErrorCode::InvalidRequest => "invalid_request",
            ErrorCode::InvalidQuery => "invalid_query",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::TenantOnly => "tenant_only",
            ErrorCode::NotFound => "not_found",
            ErrorCode::MethodNotAllowed => "method_not_allowed",
            ErrorCode::UnsupportedMediaType => "unsupported_media_type",
            ErrorCode::Conflict => "conflict",
            ErrorCode::InUse => "in_use",
            ErrorCode::QuotaExceeded => "quota_exceeded",
            ErrorCode::NoSlots => "no_slots",
            ErrorCode::TooLarge => "too_large",
            ErrorCode::InsufficientStorage => "insufficient_storage",
            ErrorCode::InvalidComponent => "invalid_component",
            ErrorCode::InvalidPlan => "invalid_plan",
            ErrorCode::PathNotAllowed => "path_not_allowed",
            ErrorCode::Internal => "internal",
        }
    }

    /// The kind of failure, and so the HTTP status.
    pub fn kind(self) -> ErrorKind {
        match self {
            ErrorCode::BadRequest
            | ErrorCode::InvalidJson
            | ErrorCode::InvalidRequest
            | ErrorCode::InvalidQuery
            | ErrorCode::InvalidPlan
            | ErrorCode::PathNotAllowed => ErrorKind::BadRequest,
            ErrorCode::Unauthorized => ErrorKind::Unauthorized,
            ErrorCode::TenantOnly => ErrorKind::Forbidden,
            ErrorCode::NotFound => ErrorKind::NotFound,
            ErrorCode::MethodNotAllowed => ErrorKind::MethodNotAllowed,
            ErrorCode::UnsupportedMediaType => ErrorKind::UnsupportedMediaType,
            ErrorCode::Conflict
            | ErrorCode::InUse
            | ErrorCode::QuotaExceeded
            | ErrorCode::NoSlots => ErrorKind::Conflict,
            ErrorCode::TooLarge => ErrorKind::TooLarge,
            ErrorCode::InsufficientStorage => ErrorKind::InsufficientStorage,
            ErrorCode::InvalidComponent => ErrorKind::Unprocessable,
            ErrorCode::Internal => ErrorKind::Internal,
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Comparable with the code as written in JSON.
impl PartialEq<&str> for ErrorCode {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

/// A failed cluster operation.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct ClusterError {
    /// Stable, machine-readable code; it decides the kind of answer.
    pub code: ErrorCode,
    /// What went wrong, for people.
    pub message: String,
}

impl ClusterError {
    /// An error with `code`.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ClusterError {
            code,
            message: message.into(),
        }
    }

    /// The kind of failure.
    pub fn kind(&self) -> ErrorKind {
        self.code.kind()
    }

    /// `what` `id` does not exist (or belongs to another tenant).
    pub fn not_found(what: &str, id: &str) -> Self {
        Self::new(ErrorCode::NotFound, format!("no {what} with id '{id}'"))
    }

    /// The request is wrong.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::BadRequest, message)
    }

    /// The component cannot be used.
    pub fn invalid_component(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidComponent, message)
    }

    /// A quota would be exceeded.
    pub fn quota(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::QuotaExceeded, message)
    }

    /// Not possible in the current state.
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Conflict, message)
    }

    /// Something broke on our side.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Internal, message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The code written in JSON and the one shown to people (and logged) are the same
    /// words, for every code.
    #[test]
    fn codes_read_the_same_everywhere() {
        let all = [
            ErrorCode::BadRequest,
            ErrorCode::InvalidJson,
            ErrorCode::InvalidRequest,
            ErrorCode::InvalidQuery,
            ErrorCode::Unauthorized,
            ErrorCode::TenantOnly,
            ErrorCode::NotFound,
            ErrorCode::MethodNotAllowed,
            ErrorCode::UnsupportedMediaType,
            ErrorCode::Conflict,
            ErrorCode::InUse,
            ErrorCode::QuotaExceeded,
            ErrorCode::NoSlots,
            ErrorCode::TooLarge,
            ErrorCode::InsufficientStorage,
            ErrorCode::InvalidComponent,
            ErrorCode::InvalidPlan,
            ErrorCode::PathNotAllowed,
            ErrorCode::Internal,
        ];
        for code in all {
            let json = serde_json::to_string(&code).unwrap();
            assert_eq!(json, format!("\"{code}\""));
            assert_eq!(serde_json::from_str::<ErrorCode>(&json).unwrap(), code);
        }
        assert_eq!(ClusterError::quota("x").kind(), ErrorKind::Conflict);
        assert_eq!(ErrorCode::InvalidPlan.kind(), ErrorKind::BadRequest);
    }
}
