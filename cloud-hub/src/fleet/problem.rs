//! Errors of the fleet API as problem JSON (RFC 9457): `type` `about:blank`, `title` the
//! status's reason phrase, `status`, and `detail`, the precise reason. Internals (SQL,
//! driver messages) are logged, never sent.

use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::db::DbError;

/// The media type of every error body.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// An error answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    pub detail: String,
    /// `WWW-Authenticate` for a 401 (RFC 6750 §3).
    pub www_authenticate: Option<&'static str>,
}

pub type ApiResult<T> = Result<T, ApiError>;

impl ApiError {
    pub fn new(status: StatusCode, detail: impl Into<String>) -> Self {
        ApiError { status, detail: detail.into(), www_authenticate: None }
    }

    pub fn bad_request(detail: impl Into<String>) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, detail)
    }

    pub fn unprocessable(detail: impl Into<String>) -> Self {
        ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, detail)
    }

    pub fn not_found(detail: impl Into<String>) -> Self {
        ApiError::new(StatusCode::NOT_FOUND, detail)
    }

    pub fn forbidden(detail: impl Into<String>) -> Self {
        ApiError::new(StatusCode::FORBIDDEN, detail)
    }

    /// Unauthorized (401). `token_presented`: a token came but is not valid (RFC 6750
    /// `invalid_token`); false: none came.
    pub fn unauthorized(detail: impl Into<String>, token_presented: bool) -> Self {
        ApiError {
            status: StatusCode::UNAUTHORIZED,
            detail: detail.into(),
            www_authenticate: Some(if token_presented {
                "Bearer realm=\"sitepilot-hub\", error=\"invalid_token\""
            } else {
                "Bearer realm=\"sitepilot-hub\""
            }),
        }
    }

    /// The database failed: logged here with what was being done; the client gets 503
    /// when it may help to retry (the pool or the server is unreachable), else 500.
    pub fn db(doing: &str, e: &DbError) -> Self {
        tracing::error!(error = %e, "fleet API: {doing}");
        let unavailable = matches!(
            e,
            DbError::Sql(sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_))
                | DbError::Connect { .. }
        );
        if unavailable {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("the database is unavailable ({doing}); retry later"),
            )
        } else {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("the database failed ({doing}); see the hub's log"),
            )
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({
            "type": "about:blank",
            "title": self.status.canonical_reason().unwrap_or("Error"),
            "status": self.status.as_u16(),
            "detail": self.detail,
        });
        let mut response = (self.status, [(header::CONTENT_TYPE, PROBLEM_JSON)], body.to_string()).into_response();
        if let Some(value) = self.www_authenticate {
            response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static(value));
        }
        response
    }
}

impl From<PathRejection> for ApiError {
    fn from(e: PathRejection) -> Self {
        ApiError::bad_request(format!("invalid path: {}", e.body_text()))
    }
}

impl From<BytesRejection> for ApiError {
    fn from(e: BytesRejection) -> Self {
        ApiError::new(e.status(), format!("cannot read the body: {}", e.body_text()))
    }
}
