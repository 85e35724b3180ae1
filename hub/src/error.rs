//! The hub's error type: one enum for the server, the client and the worker. The server maps
//! each variant to an HTTP status; the client maps a status back to the same variant, so a
//! caller matches `HubError::NotFound` whichever side found it.
use std::fmt;

#[derive(Debug, thiserror::Error)]
pub enum HubError {
    /// Malformed input: the message names the field.
    #[error("bad request: {0}")]
    BadRequest(String),
    #[error("unauthorized: {0}")]
    Unauthorized(String),
    #[error("forbidden: {0}")]
    Forbidden(String),
    /// Missing, or not visible to the caller (a private repository is not found, never forbidden).
    #[error("not found: {0}")]
    NotFound(String),
    #[error("conflict: {0}")]
    Conflict(String),
    #[error("too large: {0}")]
    TooLarge(String),
    /// A byte range outside the blob (its size).
    #[error("range not satisfiable: the blob has {0} bytes")]
    RangeNotSatisfiable(u64),
    /// A blob or manifest that does not verify (signature, sha256, size, or the fields asked for).
    #[error("verification failed: {0}")]
    Verification(String),
    /// A build job that failed (the compiler's message).
    #[error("build failed: {0}")]
    BuildFailed(String),
    /// Offline and not in the cache.
    #[error("offline: {0}")]
    Offline(String),
    #[error("config: {0}")]
    Config(String),
    #[error("{context}: {source}")]
    Io { context: String, source: std::io::Error },
    #[error("database: {0}")]
    Db(String),
    /// A transport error talking to the server (connection refused, cut, timed out).
    #[error("http: {0}")]
    Http(String),
    /// A status the client does not map (the server's message).
    #[error("server answered {status}: {message}")]
    Server { status: u16, message: String },
    #[error("timed out: {0}")]
    Timeout(String),
    #[error("internal error: {0}")]
    Internal(String),
}

impl HubError {
    pub fn io(context: impl fmt::Display, source: std::io::Error) -> HubError {
        HubError::Io { context: context.to_string(), source }
    }

    /// Whether the caller's input is at fault (a name, a token, a missing model, a failed
    /// verification) rather than the hub or the network: the CLI's exit code 2.
    pub fn is_user_error(&self) -> bool {
        matches!(
            self,
            HubError::BadRequest(_)
                | HubError::Unauthorized(_)
                | HubError::Forbidden(_)
                | HubError::NotFound(_)
                | HubError::Conflict(_)
                | HubError::TooLarge(_)
                | HubError::RangeNotSatisfiable(_)
                | HubError::Verification(_)
                | HubError::BuildFailed(_)
                | HubError::Offline(_)
                | HubError::Config(_)
        )
    }

    /// The HTTP status the server answers with.
    pub fn status(&self) -> u16 {
        match self {
            HubError::BadRequest(_) | HubError::Verification(_) | HubError::Config(_) => 400,
            HubError::Unauthorized(_) => 401,
            HubError::Forbidden(_) => 403,
            HubError::NotFound(_) | HubError::Offline(_) => 404,
            HubError::Conflict(_) | HubError::BuildFailed(_) => 409,
            HubError::TooLarge(_) => 413,
            HubError::RangeNotSatisfiable(_) => 416,
            HubError::Timeout(_) => 504,
            _ => 500,
        }
    }

    /// A short machine-readable code for the JSON error body.
    pub fn code(&self) -> &'static str {
        match self {
            HubError::BadRequest(_) => "bad_request",
            HubError::Unauthorized(_) => "unauthorized",
            HubError::Forbidden(_) => "forbidden",
            HubError::NotFound(_) => "not_found",
            HubError::Conflict(_) => "conflict",
            HubError::TooLarge(_) => "too_large",
            HubError::RangeNotSatisfiable(_) => "range_not_satisfiable",
            HubError::Verification(_) => "verification_failed",
            HubError::BuildFailed(_) => "build_failed",
            HubError::Offline(_) => "offline",
            HubError::Config(_) => "config",
            HubError::Timeout(_) => "timeout",
            _ => "internal",
        }
    }

    /// The error a client builds from a server's status and message.
    pub fn from_status(status: u16, message: String) -> HubError {
        match status {
            400 => HubError::BadRequest(message),
            401 => HubError::Unauthorized(message),
            403 => HubError::Forbidden(message),
            404 => HubError::NotFound(message),
            409 => HubError::Conflict(message),
            413 => HubError::TooLarge(message),
            _ => HubError::Server { status, message },
        }
    }
}

impl From<sqlx::Error> for HubError {
    fn from(e: sqlx::Error) -> HubError {
        HubError::Db(e.to_string())
    }
}

impl From<reqwest::Error> for HubError {
    fn from(e: reqwest::Error) -> HubError {
        // the chain names the cause (connection refused, reset, ...)
        let mut msg = e.to_string();
        let mut src = std::error::Error::source(&e);
        while let Some(s) = src {
            msg.push_str(": ");
            msg.push_str(&s.to_string());
            src = s.source();
        }
        HubError::Http(msg)
    }
}
