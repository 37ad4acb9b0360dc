//! TOTP multi-factor authentication (RFC 6238): enrol, confirm, disable, and one-time recovery codes.
//! Required for every admin: until an admin has confirmed enrolment, their sessions may only enrol.

use axum::Json as ResponseJson;
use axum::extract::State;
use axum::http::StatusCode;

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use hkdf::Hkdf;
use serde::{Deserialize, Serialize};
use serde_json::json;
use sha2::Sha256;
use totp_rs::{Algorithm, Builder, Totp};

use super::principal::{Authorized, MfaEnrolment, Principal, SignedIn};
use super::users::{self, UserRow};
use super::{AuthError, tokens};
use crate::app::AppState;
use crate::config::Secret;
use crate::http::error::ApiError;
use crate::http::extract::Json;
use crate::store::{Store, Tx};
use crate::{with_pool, with_tx};

const RECOVERY_CODES: usize = 10;
const ISSUER: &str = "Docket";
/// A sealed TOTP secret is this prefix and hex of nonce ‖ ciphertext ‖ tag (XChaCha20-Poly1305).
/// A value without it is a plaintext secret from before encryption, sealed at the next start.
const SEALED_PREFIX: &str = "enc1:";
const NONCE_LEN: usize = 24;
/// HKDF context: the TOTP key is used for nothing else, and a new version gets a new label.
const KEY_INFO: &[u8] = b"docket totp-secret v1";

fn cipher(secret_key: &Secret) -> Result<XChaCha20Poly1305, AuthError> {
    let mut key = [0_u8; 32];
    Hkdf::<Sha256>::new(None, secret_key.expose().as_bytes())
        .expand(KEY_INFO, &mut key)
        .map_err(|e| AuthError::Internal(format!("cannot derive the TOTP key: {e}")))?;
    XChaCha20Poly1305::new_from_slice(&key)
        .map_err(|e| AuthError::Internal(format!("cannot derive the TOTP key: {e}")))
}

/// Encrypts a base32 TOTP secret for storage. The user id is the associated data, so a sealed
/// secret copied onto another user's row does not open.
pub fn seal(secret_key: &Secret, user_id: &str, secret: &str) -> Result<String, AuthError> {
    let nonce: [u8; NONCE_LEN] = rand::random();
    let sealed = cipher(secret_key)?
        .encrypt(
            &XNonce::from(nonce),
            Payload {
                msg: secret.as_bytes(),
                aad: user_id.as_bytes(),
            },
        )
        .map_err(|e| AuthError::Internal(format!("cannot seal the TOTP secret: {e}")))?;
    Ok(format!(
        "{SEALED_PREFIX}{}{}",
        hex::encode(nonce),
        hex::encode(sealed)
    ))
}

/// The base32 secret of a stored value (sealed, or plaintext from before encryption).
pub fn open(secret_key: &Secret, user_id: &str, stored: &str) -> Result<String, AuthError> {
    let Some(sealed) = stored.strip_prefix(SEALED_PREFIX) else {
        return Ok(stored.to_owned());
    };
    let unreadable =
        || AuthError::Internal("stored TOTP secret unreadable (was SECRET_KEY changed?)".into());
    let bytes = hex::decode(sealed).map_err(|_| unreadable())?;
    if bytes.len() <= NONCE_LEN {
        return Err(unreadable());
    }
    let (nonce, ciphertext) = bytes.split_at(NONCE_LEN);
    let nonce: [u8; NONCE_LEN] = nonce.try_into().map_err(|_| unreadable())?;
    let plain = cipher(secret_key)?
        .decrypt(
            &XNonce::from(nonce),
            Payload {
                msg: ciphertext,
                aad: user_id.as_bytes(),
            },
        )
        .map_err(|_| unreadable())?;
    String::from_utf8(plain).map_err(|_| unreadable())
}

/// Seals every TOTP secret still stored in plain text (rows from before encryption); run at start.
/// Each row is rewritten only if it still holds the value read, so concurrent starts are harmless.
/// Returns how many rows were sealed.
pub async fn seal_plaintext_secrets(store: &Store, secret_key: &Secret) -> Result<u64, AuthError> {
    let plain: Vec<(String, String)> = with_pool!(store, pool => {
        sqlx::query_as(
            "SELECT id, totp_secret FROM users WHERE totp_secret IS NOT NULL AND totp_secret NOT LIKE 'enc1:%'",
        )
        .fetch_all(pool)
        .await
    })?;
    let mut sealed = 0;
    for (user_id, secret) in plain {
        let value = seal(secret_key, &user_id, &secret)?;
        sealed += crate::with_writer!(store, pool => {
            sqlx::query("UPDATE users SET totp_secret = $1 WHERE id = $2 AND totp_secret = $3")
                .bind(&value)
                .bind(&user_id)
                .bind(&secret)
                .execute(pool)
                .await
                .map(|done| done.rows_affected())
        })?;
    }
    Ok(sealed)
}

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

fn user_totp(secret_key: &Secret, user: &UserRow) -> Result<Totp, AuthError> {
    let stored = user
        .totp_secret
        .as_deref()
        .ok_or(AuthError::InvalidMfaCode)?;
    let secret = open(secret_key, &user.id, stored)?;
    let bytes = totp_rs::Secret::try_from_base32(&secret)
        .map_err(|e| AuthError::Internal(format!("stored TOTP secret unreadable: {e:?}")))?;
    totp(bytes.as_bytes().to_vec(), &user.email)
}

/// How long the second sign-in step may take after the password was accepted.
const CHALLENGE_TTL_SECONDS: i64 = 5 * 60;

/// After a correct password, a token that stands in for it in the second step (the TOTP or recovery
/// code), so that nothing has to hold the password meanwhile. Single use; expired ones are removed.
pub async fn issue_challenge(store: &Store, user: &UserRow) -> Result<String, AuthError> {
    let token = tokens::new_secret("dm_");
    let now = crate::clock::now();
    crate::with_writer!(store, pool => {
        sqlx::query("DELETE FROM mfa_challenges WHERE expires_at <= $1").bind(now).execute(pool).await.map(|_| ())
    })?;
    crate::with_writer!(store, pool => {
        sqlx::query(
            "INSERT INTO mfa_challenges (token_hash, tenant_id, user_id, created_at, expires_at) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(tokens::hash_secret(&token))
        .bind(&user.tenant_id)
        .bind(&user.id)
        .bind(now)
        .bind(now + chrono::Duration::seconds(CHALLENGE_TTL_SECONDS))
        .execute(pool)
        .await
        .map(|_| ())
    })?;
    Ok(token)
}

/// The user a live challenge token was issued to; the token is used up by this call.
pub async fn take_challenge(store: &Store, token: &str) -> Result<UserRow, AuthError> {
    let now = crate::clock::now();
    let owner: Option<(String, String)> = crate::with_writer!(store, pool => {
        sqlx::query_as(
            "UPDATE mfa_challenges SET used_at = $1 \
             WHERE token_hash = $2 AND used_at IS NULL AND expires_at > $1 RETURNING tenant_id, user_id",
        )
        .bind(now)
        .bind(tokens::hash_secret(token))
        .fetch_optional(pool)
        .await
    })?;
    let expired =
        || AuthError::InvalidToken("the sign-in step expired or was already used; sign in again");
    let (tenant_id, user_id) = owner.ok_or_else(expired)?;
    users::find(store, &tenant_id, &user_id)
        .await?
        .ok_or_else(expired)
}

/// Accepts a code once: the matched time step must be newer than the last accepted one.
async fn accept_code(
    tx: &mut Tx,
    secret_key: &Secret,
    user: &UserRow,
    code: &str,
) -> Result<(), AuthError> {
    let step = user_totp(secret_key, user)?
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
    secret_key: &Secret,
    user: &UserRow,
    code: Option<&str>,
    recovery: Option<&str>,
) -> Result<(), AuthError> {
    match (code, recovery) {
        (Some(code), _) => accept_code(tx, secret_key, user, code).await,
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
#[utoipa::path(post, path = "/auth/mfa/enrol", operation_id = "enrol_in_mfa", tag = "auth",
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
    let sealed = seal(&state.secret_key, &user.id, &encoded)?;
    crate::with_writer!(&state.store, pool => {
        sqlx::query("UPDATE users SET totp_secret = $1, totp_last_step = NULL WHERE tenant_id = $2 AND id = $3")
            .bind(&sealed)
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
#[utoipa::path(post, path = "/auth/mfa/confirm", operation_id = "confirm_mfa_enrolment", tag = "auth",
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
    accept_code(&mut tx, &state.secret_key, &user, &body.code).await?;
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
#[utoipa::path(post, path = "/auth/mfa/disable", operation_id = "disable_mfa", tag = "auth",
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
    accept_code(&mut tx, &state.secret_key, &user, &body.code).await?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_secrets_open_only_with_their_key_and_user() {
        let key = Secret::new("a secret key of enough length for tests");
        let sealed = seal(&key, "user-1", "JBSWY3DPEHPK3PXP").unwrap();
        assert!(sealed.starts_with(SEALED_PREFIX));
        assert!(!sealed.contains("JBSWY3DPEHPK3PXP"));
        assert_ne!(
            sealed,
            seal(&key, "user-1", "JBSWY3DPEHPK3PXP").unwrap(),
            "fresh nonce each time"
        );
        assert_eq!(open(&key, "user-1", &sealed).unwrap(), "JBSWY3DPEHPK3PXP");
        assert!(open(&key, "user-2", &sealed).is_err(), "bound to the user");
        assert!(open(&Secret::new("another key"), "user-1", &sealed).is_err());
        assert!(open(&key, "user-1", "enc1:00ff").is_err());
        assert!(open(&key, "user-1", "enc1:not hex").is_err());
        assert_eq!(
            open(&key, "user-1", "JBSWY3DPEHPK3PXP").unwrap(),
            "JBSWY3DPEHPK3PXP",
            "legacy plaintext"
        );
    }
}
