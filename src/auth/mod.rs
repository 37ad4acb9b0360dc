//! Tenants, users, sessions, tokens, API keys, MFA, rate limits and the checks that guard every
//! endpoint. Errors of this module map to HTTP in one place ([`AuthError`]).

pub mod api_keys;
pub mod mfa;
pub mod password;
pub mod people;
pub mod principal;
pub mod rate_limit;
pub mod sessions;
pub mod tenants;
pub mod tokens;
pub mod users;

use axum::http::{HeaderName, StatusCode, header};
use axum::response::{IntoResponse, Response};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::app::AppState;
use crate::http::error::ApiError;

pub use docket_types::Role;

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("authentication required")]
    MissingCredentials,
    #[error("invalid token: {0}")]
    InvalidToken(&'static str),
    #[error("invalid email or password")]
    InvalidCredentials,
    #[error("the session has ended")]
    SessionEnded,
    #[error("a TOTP code is required")]
    MfaRequired,
    #[error("the TOTP or recovery code is wrong")]
    InvalidMfaCode,
    #[error("administrators must enrol in MFA first")]
    MfaEnrolmentRequired,
    #[error("too many failed attempts")]
    Throttled { retry_after_seconds: u64 },
    #[error("too many rejected tokens or keys from this address")]
    CredentialsThrottled { retry_after_seconds: u64 },
    #[error("password hashing is busy")]
    Busy { retry_after_seconds: u64 },
    #[error("rate limit exceeded")]
    RateLimited {
        limit: u32,
        retry_after_seconds: u64,
    },
    #[error("account disabled")]
    AccountDisabled,
    #[error("{0}")]
    Forbidden(&'static str),
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error("{0}")]
    Conflict(String),
    #[error("{field}: {message}")]
    Invalid {
        field: &'static str,
        message: String,
    },
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    #[error("{0}")]
    Internal(String),
}

impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> Self {
        let unauthorized = |code: &'static str, message: &str| {
            ApiError::new(StatusCode::UNAUTHORIZED, code, message)
                .with_header(header::WWW_AUTHENTICATE, "Bearer")
        };
        match e {
            AuthError::MissingCredentials => {
                unauthorized("unauthorized", "Authentication is required.")
            }
            AuthError::InvalidToken(why) => {
                unauthorized("invalid_token", &format!("The token is not valid: {why}."))
            }
            AuthError::InvalidCredentials => {
                unauthorized("invalid_credentials", "Invalid email or password.")
            }
            AuthError::SessionEnded => {
                unauthorized("session_ended", "The session has ended; sign in again.")
            }
            AuthError::MfaRequired => unauthorized(
                "mfa_required",
                "Enter the code from your authenticator app.",
            ),
            AuthError::InvalidMfaCode => {
                unauthorized("invalid_mfa_code", "The authentication code is wrong.")
            }
            AuthError::MfaEnrolmentRequired => ApiError::new(
                StatusCode::FORBIDDEN,
                "mfa_enrolment_required",
                "Administrators must enrol in multi-factor authentication before doing anything else.",
            ),
            AuthError::Throttled {
                retry_after_seconds,
            } => ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "too_many_attempts",
                "Too many failed sign-in attempts; try again later.",
            )
            .with_header(header::RETRY_AFTER, retry_after_seconds),
            AuthError::CredentialsThrottled {
                retry_after_seconds,
            } => ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "too_many_attempts",
                "Too many rejected tokens or API keys from this address; try again later.",
            )
            .with_header(header::RETRY_AFTER, retry_after_seconds),
            AuthError::Busy {
                retry_after_seconds,
            } => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "busy",
                "The server is busy checking passwords; try again shortly.",
            )
            .with_header(header::RETRY_AFTER, retry_after_seconds),
            AuthError::RateLimited {
                limit,
                retry_after_seconds,
            } => ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                format!("Rate limit of {limit} requests per minute exceeded."),
            )
            .with_header(header::RETRY_AFTER, retry_after_seconds)
            .with_header(HeaderName::from_static("x-ratelimit-limit"), limit)
            .with_header(HeaderName::from_static("x-ratelimit-remaining"), 0)
            .with_header(
                HeaderName::from_static("x-ratelimit-reset"),
                retry_after_seconds,
            ),
            AuthError::AccountDisabled => {
                ApiError::forbidden("This account is disabled.").with_code("account_disabled")
            }
            AuthError::Forbidden(why) => ApiError::forbidden(format!("Forbidden: {why}.")),
            AuthError::NotFound(what) => ApiError::not_found(format!("No such {what}.")),
            AuthError::Conflict(message) => ApiError::conflict(message),
            AuthError::Invalid { field, message } => ApiError::invalid_field(field, message),
            AuthError::Database(e) => ApiError::internal(e),
            AuthError::Internal(e) => ApiError::internal(e),
        }
    }
}

impl IntoResponse for AuthError {
    fn into_response(self) -> Response {
        ApiError::from(self).into_response()
    }
}

/// The routes of this module, for the versioned API.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(sessions::login))
        .routes(routes!(sessions::refresh))
        .routes(routes!(sessions::logout))
        .routes(routes!(sessions::me))
        .routes(routes!(sessions::list_sessions))
        .routes(routes!(sessions::revoke_session))
        .routes(routes!(mfa::enrol))
        .routes(routes!(mfa::confirm))
        .routes(routes!(mfa::disable))
        .routes(routes!(tenants::create_tenant, tenants::list_tenants))
        .routes(routes!(tenants::get_tenant, tenants::update_tenant))
        .routes(routes!(tenants::create_tenant_admin))
        .routes(routes!(users::create_user, users::list_users))
        .routes(routes!(
            users::get_user,
            users::update_user,
            users::delete_user
        ))
        .routes(routes!(users::change_password))
        .routes(routes!(people::list_people))
        .routes(routes!(api_keys::create_key, api_keys::list_keys))
        .routes(routes!(api_keys::revoke_key))
}
