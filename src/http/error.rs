//! The one HTTP error shape: `{"error": {"code", "message", "details"}}`. Domain errors convert into
//! [`ApiError`] (one `From` impl per domain error enum); nothing else builds error responses.

use std::borrow::Cow;

use axum::Json;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::Value;

#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: Cow<'static, str>,
    pub message: String,
    pub details: Value,
    /// Extra response headers, e.g. `Retry-After` on 429 (boxed: rarely present, and errors travel
    /// through every `Result`).
    pub headers: Option<Box<HeaderMap>>,
}

/// Marks a generic 413 from an extractor, which cannot know which limit applied; the body-limit
/// middleware, which does, replaces it with one that states the limit.
#[derive(Debug, Clone, Copy)]
pub struct UnstatedBodyLimit;

#[derive(Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct ErrorDetail {
    /// Stable, machine-readable snake_case code.
    pub code: String,
    /// Human-readable sentence.
    pub message: String,
    /// Structured context (e.g. the offending field); `null` when there is none.
    #[schema(schema_with = error_details)]
    pub details: Value,
}

/// The members `details` may carry; which appear depends on `code`, and a code may add its own.
fn error_details() -> utoipa::openapi::schema::Object {
    use utoipa::openapi::schema::{ArrayBuilder, ObjectBuilder, Type};

    let member = |kind: Type, description: &str| {
        ObjectBuilder::new()
            .schema_type(kind)
            .description(Some(description))
    };
    let members = [
        (
            "field",
            Type::String,
            "The request field at fault (`validation_failed`), as a dotted path into the body",
        ),
        ("reason", Type::String, "Why the field or body was refused"),
        (
            "state",
            Type::String,
            "The resource's current state, when the request needs another (`invalid_state`, `conflict`)",
        ),
        (
            "status",
            Type::String,
            "A task's current status, when the request needs another",
        ),
        ("limit", Type::Integer, "The limit that was reached (429)"),
        (
            "retry_after_seconds",
            Type::Integer,
            "Seconds until the limit allows the request again, as in `Retry-After`",
        ),
        (
            "limit_bytes",
            Type::Integer,
            "The request body limit in bytes (413)",
        ),
        ("setting", Type::String, "The setting that sets the limit"),
        (
            "max_bytes",
            Type::Integer,
            "The attachment size limit in bytes (413)",
        ),
        (
            "detected_type",
            Type::String,
            "An attachment's detected media type (415)",
        ),
        (
            "mfa_token",
            Type::String,
            "Sign-in needs a second factor: send this back to `/auth/login` with `totp_code` or `recovery_code`",
        ),
        (
            "path",
            Type::String,
            "Where in the policy document the problem is (`invalid_policy`)",
        ),
        (
            "message",
            Type::String,
            "What the problem in the policy document is",
        ),
        ("case_id", Type::String, "The case the conflict is about"),
        (
            "assignee_id",
            Type::String,
            "Who holds the case's review lease",
        ),
        (
            "lease_expires_at",
            Type::String,
            "When that lease ends (RFC 3339)",
        ),
    ];
    let mut details = ObjectBuilder::new()
        .schema_type(utoipa::openapi::schema::SchemaType::from_iter([
            Type::Object,
            Type::Null,
        ]))
        .description(Some(
            "Structured context (e.g. the offending field); `null` when there is none. Which \
             members appear depends on `code`.",
        ))
        .additional_properties(Some(
            utoipa::openapi::schema::AdditionalProperties::FreeForm(true),
        ));
    for (name, kind, description) in members {
        details = details.property(name, member(kind, description));
    }
    details
        .property(
            "allowed_types",
            ArrayBuilder::new()
                .items(ObjectBuilder::new().schema_type(Type::String))
                .description(Some("The media types attachments may have (415)")),
        )
        .property(
            "proposal",
            ObjectBuilder::new()
                .schema_type(Type::Object)
                .description(Some("The first reviewer's decision under dual control")),
        )
        .build()
}

impl ApiError {
    pub fn new(
        status: StatusCode,
        code: impl Into<Cow<'static, str>>,
        message: impl Into<String>,
    ) -> Self {
        Self {
            status,
            code: code.into(),
            message: message.into(),
            details: Value::Null,
            headers: None,
        }
    }

    pub fn with_header(mut self, name: HeaderName, value: impl ToString) -> Self {
        if let Ok(value) = HeaderValue::from_str(&value.to_string()) {
            self.headers
                .get_or_insert_with(Default::default)
                .insert(name, value);
        }
        self
    }

    pub fn with_code(mut self, code: &'static str) -> Self {
        self.code = code.into();
        self
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", message)
    }

    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, "conflict", message)
    }

    /// A field failed validation: 422 naming the field.
    pub fn invalid_field(field: &str, message: impl Into<String>) -> Self {
        let message = message.into();
        Self::validation(format!("{field}: {message}"))
            .with_details(serde_json::json!({ "field": field, "reason": message }))
    }

    /// A failure the client cannot fix. The cause is logged here; the response says nothing about it.
    pub fn internal(cause: impl std::fmt::Display) -> Self {
        tracing::error!(error = %cause, "internal error");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal_error",
            "The server failed to handle the request; it has been logged.",
        )
    }

    pub fn with_details(mut self, details: Value) -> Self {
        self.details = details;
        self
    }

    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    pub fn validation(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
            message,
        )
    }

    /// The generic error for a status produced outside our handlers (routing, limits, timeouts).
    pub fn from_status(status: StatusCode) -> Self {
        let (code, message) = match status {
            StatusCode::BAD_REQUEST => ("bad_request", "The request is malformed."),
            StatusCode::UNAUTHORIZED => ("unauthorized", "Authentication is required."),
            StatusCode::FORBIDDEN => ("forbidden", "You are not allowed to do this."),
            StatusCode::NOT_FOUND => ("not_found", "No such resource."),
            StatusCode::METHOD_NOT_ALLOWED => (
                "method_not_allowed",
                "This method is not allowed on this resource.",
            ),
            StatusCode::NOT_ACCEPTABLE => (
                "not_acceptable",
                "No acceptable representation is available.",
            ),
            StatusCode::REQUEST_TIMEOUT => (
                "request_timeout",
                "The request took too long and was cancelled.",
            ),
            StatusCode::CONFLICT => ("conflict", "The request conflicts with the current state."),
            StatusCode::PAYLOAD_TOO_LARGE => {
                ("payload_too_large", "The request body is too large.")
            }
            StatusCode::UNSUPPORTED_MEDIA_TYPE => (
                "unsupported_media_type",
                "The content type is not supported.",
            ),
            StatusCode::UNPROCESSABLE_ENTITY => ("validation_failed", "The request is invalid."),
            StatusCode::TOO_MANY_REQUESTS => ("rate_limited", "Too many requests; slow down."),
            StatusCode::SERVICE_UNAVAILABLE => (
                "service_unavailable",
                "The service is temporarily unavailable.",
            ),
            s if s.is_server_error() => {
                ("internal_error", "The server failed to handle the request.")
            }
            _ => ("request_failed", "The request failed."),
        };
        Self::new(status, code, message)
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {}: {}",
            self.status.as_u16(),
            self.code,
            self.message
        )
    }
}

impl std::error::Error for ApiError {}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code.into_owned(),
                message: self.message,
                details: self.details,
            },
        };
        let unstated_limit = self.status == StatusCode::PAYLOAD_TOO_LARGE
            && body.error.code == "payload_too_large"
            && body.error.details.is_null();
        let mut response = (self.status, Json(body)).into_response();
        if unstated_limit {
            response.extensions_mut().insert(UnstatedBodyLimit);
        }
        if let Some(headers) = self.headers {
            response.headers_mut().extend(*headers);
        }
        response
    }
}

/// Database failures are the server's problem; domain code maps the expected ones (unique
/// violations and the like) to specific errors before this catch-all applies.
impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> Self {
        Self::internal(e)
    }
}
