//! TOTP multi-factor authentication (RFC 6238): enrol, confirm, disable, and one-time recovery codes.
//! Required for every admin: until an admin has confirmed enrolment, their sessions may only enrol.

use axum::Json as ResponseJson;
use axum::extract::State;
use axum::http::StatusCode;

use serde::{Deserialize, Serialize};
use serde_json::json;
use totp_rs::{Algorithm, Builder, Totp};

use super::principal::{Authorized, MfaEnrolment, Principal, SignedIn};
use super::users::{self, UserRow};
use super::{AuthError, tokens};
use crate::app::AppState;
use crate::http::error::ApiError;
use crate::http::extract::Json;
use crate::store::Tx;
use crate::with_tx;

const RECOVERY_CODES: usize = 10;
const ISSUER: &str = "Docket";

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Enrolment {
    /// Base32 secret, for apps that cannot scan the URI.
    pub secret: String,
    /// `otpauth://totp/...` URI to show as a QR code.
    pub otpauth_uri: String,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ConfirmRequest {
    pub code: String,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct RecoveryCodes {
    /// Each works once instead of a TOTP code. Shown only now; store them safely.
    pub recovery_codes: Vec<String>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DisableRequest {
    pub password: String,
    pub code: String,
}

fn totp(secret: Vec<u8>, account: &str) -> Result<Totp, AuthError> {
    Builder::new()
        .with_algorithm(Algorithm::SHA1)
        .with_secret(secret)
        .with_account_name(account)
        .with_issuer(Some(ISSUER))
        .build()
        .map_err(|e| AuthError::Internal(format!("cannot build TOTP: {e}")))
}

fn user_totp(user: &UserRow) -> Result<Totp, AuthError> {
    let secret = user
        .totp_secret
        .as_deref()
        .ok_or(AuthError::InvalidMfaCode)?;
    let bytes = totp_rs::Secret::try_from_base32(secret)
        .map_err(|e| AuthError::Internal(format!("stored TOTP secret unreadable: {e:?}")))?;
    totp(bytes.as_bytes().to_vec(), &user.email)
}

/// Accepts a code once: the matched time step must be newer than the last accepted one.
async fn accept_code(tx: &mut Tx, user: &UserRow, code: &str) -> Result<(), AuthError> {
    let step = user_totp(user)?
        .check_current(code.trim())
        .ok_or(AuthError::InvalidMfaCode)?;
    let step = i64::try_from(step).map_err(|_| AuthError::InvalidMfaCode)?;
    let accepted = with_tx!(tx, conn => {
        sqlx::query("UPDATE users SET totp_last_step = $1 WHERE id = $2 AND (totp_last_step IS NULL OR totp_last_step < $1)")
            .bind(step)
            .bind(&user.id)
            .execute(conn)
            .await
            .map(|done| done.rows_affected())
    })?;
    if accepted == 0 {
        return Err(AuthError::InvalidMfaCode);
    }
    Ok(())
}

/// The second factor at login: a TOTP code or an unused recovery code.
pub async fn verify_login(
    tx: &mut Tx,
    user: &UserRow,
    code: Option<&str>,
    recovery: Option<&str>,
) -> Result<(), AuthError> {
    match (code, recovery) {
        (Some(code), _) => accept_code(tx, user, code).await,
        (None, Some(recovery)) => {
            let used = with_tx!(tx, conn => {
                sqlx::query("UPDATE recovery_codes SET used_at = $1 WHERE user_id = $2 AND code_hash = $3 AND used_at IS NULL")
                    .bind(crate::clock::now())
                    .bind(&user.id)
                    .bind(tokens::hash_secret(&normalise_recovery(recovery)))
                    .execute(conn)
                    .await
                    .map(|done| done.rows_affected())
            })?;
            if used == 1 {
                Ok(())
            } else {
                Err(AuthError::InvalidMfaCode)
            }
        }
        (None, None) => Err(AuthError::MfaRequired),
    }
}

fn normalise_recovery(code: &str) -> String {
    code.trim().to_lowercase().replace([' ', '-'], "")
}

async fn current_user(state: &AppState, principal: &Principal) -> Result<UserRow, AuthError> {
    let user_id = principal
        .user_id()
        .ok_or(AuthError::Forbidden("API keys cannot use MFA"))?;
    users::find(&state.store, &principal.tenant_id, user_id)
        .await?
        .ok_or(AuthError::SessionEnded)
}

/// Start TOTP enrolment: returns a new secret; it takes effect once confirmed with a code.
#[utoipa::path(post, path = "/auth/mfa/enrol", tag = "auth",
    description = "Requires: any signed-in user (`MfaEnrolment`, also before an admin has MFA).",
    responses((status = 200, body = Enrolment), (status = 409, body = crate::http::error::ErrorBody)))]
pub async fn enrol(
    State(state): State<AppState>,
    Authorized(principal, ..): Authorized<MfaEnrolment>,
) -> Result<ResponseJson<Enrolment>, ApiError> {
    let user = current_user(&state, &principal).await?;
    if user.totp_enabled {
        return Err(ApiError::conflict(
            "MFA is already enabled; disable it first to enrol again.",
        ));
    }
    let secret: [u8; 20] = rand::random();
    let totp = totp(secret.to_vec(), &user.email)?;
    let encoded = totp_rs::Secret::from(secret).to_base32();
    let uri = totp
        .to_url()
        .map_err(|e| ApiError::internal(format!("otpauth URI: {e}")))?;
    crate::with_writer!(&state.store, pool => {
        sqlx::query("UPDATE users SET totp_secret = $1, totp_last_step = NULL WHERE tenant_id = $2 AND id = $3")
            .bind(&encoded)
            .bind(&principal.tenant_id)
            .bind(&user.id)
            .execute(pool)
            .await
            .map(|_| ())
    })?;
    Ok(ResponseJson(Enrolment {
        secret: encoded,
        otpauth_uri: uri,
    }))
}

/// Confirm enrolment with a code from the app: MFA is then on, and recovery codes are returned once.
#[utoipa::path(post, path = "/auth/mfa/confirm", tag = "auth",
    description = "Requires: any signed-in user (`MfaEnrolment`).",
    request_body = ConfirmRequest,
    responses((status = 200, body = RecoveryCodes), (status = 401, body = crate::http::error::ErrorBody), (status = 409, body = crate::http::error::ErrorBody)))]
pub async fn confirm(
    State(state): State<AppState>,
    Authorized(principal, ..): Authorized<MfaEnrolment>,
    Json(body): Json<ConfirmRequest>,
) -> Result<ResponseJson<RecoveryCodes>, ApiError> {
    let user = current_user(&state, &principal).await?;
    if user.totp_enabled {
        return Err(ApiError::conflict("MFA is already enabled."));
    }
    if user.totp_secret.is_none() {
        return Err(ApiError::conflict("Start with /auth/mfa/enrol."));
    }
    let codes: Vec<String> = (0..RECOVERY_CODES)
        .map(|_| {
            let bytes: [u8; 5] = rand::random();
            hex::encode(bytes)
        })
        .collect();
    let mut tx = state.store.begin().await?;
    accept_code(&mut tx, &user, &body.code).await?;
    with_tx!(&mut tx, conn => {
        sqlx::query("UPDATE users SET totp_enabled = $1, updated_at = $2 WHERE id = $3")
            .bind(true)
            .bind(crate::clock::now())
            .bind(&user.id)
            .execute(conn)
            .await
            .map(|_| ())
    })?;
    with_tx!(&mut tx, conn => {
        sqlx::query("DELETE FROM recovery_codes WHERE user_id = $1").bind(&user.id).execute(conn).await.map(|_| ())
    })?;
    for code in &codes {
        with_tx!(&mut tx, conn => {
            sqlx::query("INSERT INTO recovery_codes (user_id, code_hash) VALUES ($1, $2)")
                .bind(&user.id)
                .bind(tokens::hash_secret(code))
                .execute(conn)
                .await
                .map(|_| ())
        })?;
    }
    if let Some(session_id) = &principal.session_id {
        with_tx!(&mut tx, conn => {
            sqlx::query("UPDATE sessions SET mfa_verified = $1 WHERE id = $2")
                .bind(true)
                .bind(session_id)
                .execute(conn)
                .await
                .map(|_| ())
        })?;
    }
    principal
        .audit(&mut tx, "user.mfa_enable", "user", &user.id, json!({}))
        .await?;
    tx.commit().await?;
    Ok(ResponseJson(RecoveryCodes {
        recovery_codes: codes,
    }))
}

/// Turn MFA off (password and a current code required). Admins cannot: MFA is mandatory for them.
#[utoipa::path(post, path = "/auth/mfa/disable", tag = "auth",
    description = "Requires: any signed-in user (`SignedIn`) who is not an admin.",
    request_body = DisableRequest,
    responses((status = 204), (status = 401, body = crate::http::error::ErrorBody), (status = 403, body = crate::http::error::ErrorBody)))]
pub async fn disable(
    State(state): State<AppState>,
    Authorized(principal, ..): Authorized<SignedIn>,
    Json(body): Json<DisableRequest>,
) -> Result<StatusCode, ApiError> {
    let user = current_user(&state, &principal).await?;
    if user.requires_mfa() {
        return Err(AuthError::Forbidden("MFA is mandatory for administrators").into());
    }
    if !user.totp_enabled {
        return Err(ApiError::conflict("MFA is not enabled."));
    }
    if !state
        .hashing
        .verify(&body.password, &user.password_hash)
        .await?
    {
        return Err(AuthError::InvalidCredentials.into());
    }
    let mut tx = state.store.begin().await?;
    accept_code(&mut tx, &user, &body.code).await?;
    with_tx!(&mut tx, conn => {
        sqlx::query("UPDATE users SET totp_enabled = $1, totp_secret = NULL, updated_at = $2 WHERE id = $3")
            .bind(false)
            .bind(crate::clock::now())
            .bind(&user.id)
            .execute(conn)
            .await
            .map(|_| ())
    })?;
    with_tx!(&mut tx, conn => {
        sqlx::query("DELETE FROM recovery_codes WHERE user_id = $1").bind(&user.id).execute(conn).await.map(|_| ())
    })?;
    principal
        .audit(&mut tx, "user.mfa_disable", "user", &user.id, json!({}))
        .await?;
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}
