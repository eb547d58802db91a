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
    /// Our fault (500); details go to the log.
    Internal,
}

/// A failed cluster operation.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct ClusterError {
    /// The kind.
    pub kind: ErrorKind,
    /// Stable, machine-readable code (`not_found`, `quota_exceeded`, ...).
    pub code: &'static str,
    /// What went wrong, for people.
    pub message: String,
}

impl ClusterError {
    /// An error of `kind` with `code`.
    pub fn new(kind: ErrorKind, code: &'static str, message: impl Into<String>) -> Self {
        ClusterError {
            kind,
            code,
            message: message.into(),
        }
    }

    /// `what` `id` does not exist (or belongs to another tenant).
    pub fn not_found(what: &str, id: &str) -> Self {
        Self::new(
            ErrorKind::NotFound,
            "not_found",
            format!("no {what} with id '{id}'"),
        )
    }

    /// The request is wrong.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::BadRequest, "bad_request", message)
    }

    /// The component cannot be used.
    pub fn invalid_component(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Unprocessable, "invalid_component", message)
    }

    /// A quota would be exceeded.
    pub fn quota(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Conflict, "quota_exceeded", message)
    }

    /// Not possible in the current state.
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Conflict, "conflict", message)
    }

    /// Something broke on our side.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Internal, "internal", message)
    }
}
