//! Sign-in sessions: login, refresh-token rotation with reuse detection, idle timeout, logout.

use axum::Json as ResponseJson;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;
use uuid::Uuid;

use super::principal::{Authorized, ClientOrigin, MfaEnrolment, SignedIn};
use super::tokens;
use super::users::{self, UserRow};
use super::{AuthError, Role, mfa, password};
use crate::app::AppState;
use crate::audit::{self, Actor, Event, Origin, PLATFORM_CHAIN};
use crate::http::error::ApiError;
use crate::http::extract::Json;
use crate::store::Tx;
use crate::{with_pool, with_tx};

/// Failed logins on one account from one address within the window before that address is locked
/// out of that account. Per address, so that nobody can lock the owner out from elsewhere.
const ACCOUNT_FAILURES_BEFORE_LOCK: u32 = 5;
/// The window of the per-address failure counts (`LOGIN_FAILURES_PER_IP` and the account lock).
const IP_FAILURE_WINDOW_SECONDS: u64 = 15 * 60;
/// `last_seen_at` is written at most this often per session, not on every request.
const TOUCH_INTERVAL_SECONDS: i64 = 60;

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    /// Not needed with `mfa_token`.
    #[serde(default)]
    pub email: String,
    /// Not needed with `mfa_token`.
    #[serde(default)]
    pub password: String,
    /// The tenant's slug. Needed only when the email has accounts in more than one tenant (an
    /// email is unique within a tenant); without it such a sign-in fails like a wrong password.
    pub tenant: Option<String>,
    /// The second step: the token from a `mfa_required` or `invalid_mfa_code` answer (in
    /// `details.mfa_token`, single use, 5 minutes) with `totp_code` or `recovery_code`, instead of
    /// sending the password again.
    pub mfa_token: Option<String>,
    /// Six-digit code from the authenticator app, when MFA is enabled.
    pub totp_code: Option<String>,
    /// A one-time recovery code instead of `totp_code`.
    pub recovery_code: Option<String>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RefreshRequest {
    pub refresh_token: String,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct TokenPair {
    pub access_token: String,
    /// Always `Bearer`.
    pub token_type: &'static str,
    /// Seconds until the access token expires.
    pub expires_in: u64,
    /// Opaque, single use: exchange it at `/auth/refresh` for a new pair.
    pub refresh_token: String,
    pub refresh_expires_in: u64,
    /// True for an admin without MFA: the session may only enrol (`/auth/mfa/enrol`).
    pub mfa_enrolment_required: bool,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Me {
    pub user: users::User,
    pub session_id: String,
    pub mfa_enrolment_required: bool,
}

#[derive(Debug, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct Session {
    pub id: String,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    pub created_at: DateTime<Utc>,
    pub last_seen_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

/// What a valid access token's session says about its user.
pub struct SessionState {
    pub role: Role,
    pub platform_admin: bool,
    pub mfa_satisfied: bool,
}

#[derive(sqlx::FromRow)]
struct SessionCheck {
    revoked_at: Option<DateTime<Utc>>,
    expires_at: DateTime<Utc>,
    last_seen_at: DateTime<Utc>,
    mfa_verified: bool,
    role: String,
    platform_admin: bool,
    user_status: String,
    totp_enabled: bool,
    tenant_status: String,
}

/// The session as it stands now, without recording activity: for callers that hold a session's
/// identity for a while (an open event stream), so that watching does not keep a session from
/// going idle.
pub async fn current(
    state: &AppState,
    tenant_id: &str,
    user_id: &str,
    session_id: &str,
) -> Result<SessionState, AuthError> {
    check(state, tenant_id, user_id, session_id, false).await
}

/// Validates the session behind an access token: not revoked, not expired, not idle for longer than
/// `SESSION_TIMEOUT_MINUTES`, user and tenant active. Records activity (at most once a minute).
pub async fn touch(
    state: &AppState,
    tenant_id: &str,
    user_id: &str,
    session_id: &str,
) -> Result<SessionState, AuthError> {
    check(state, tenant_id, user_id, session_id, true).await
}

async fn check(
    state: &AppState,
    tenant_id: &str,
    user_id: &str,
    session_id: &str,
    record_activity: bool,
) -> Result<SessionState, AuthError> {
    let row: Option<SessionCheck> = with_pool!(&state.store, pool => {
        sqlx::query_as(
            "SELECT s.revoked_at, s.expires_at, s.last_seen_at, s.mfa_verified, u.role, u.platform_admin, \
             u.status AS user_status, u.totp_enabled, t.status AS tenant_status \
             FROM sessions s JOIN users u ON u.id = s.user_id JOIN tenants t ON t.id = s.tenant_id \
             WHERE s.id = $1 AND s.tenant_id = $2 AND s.user_id = $3",
        )
        .bind(session_id)
        .bind(tenant_id)
        .bind(user_id)
        .fetch_optional(pool)
        .await
    })?;
    let row = row.ok_or(AuthError::SessionEnded)?;
    let now = crate::clock::now();
    if row.revoked_at.is_some()
        || row.expires_at <= now
        || row.user_status != "active"
        || row.tenant_status != "active"
    {
        return Err(AuthError::SessionEnded);
    }
    let idle_limit = chrono::Duration::from_std(state.config.session_idle_timeout)
        .unwrap_or(chrono::Duration::minutes(30));
    if row.last_seen_at + idle_limit <= now {
        let mut tx = state.store.begin().await?;
        revoke(&mut tx, tenant_id, session_id, "idle_timeout").await?;
        tx.commit().await?;
        return Err(AuthError::SessionEnded);
    }
    if record_activity && (now - row.last_seen_at).num_seconds() >= TOUCH_INTERVAL_SECONDS {
        crate::with_writer!(&state.store, pool => {
            sqlx::query("UPDATE sessions SET last_seen_at = $1 WHERE id = $2 AND tenant_id = $3")
                .bind(now)
                .bind(session_id)
                .bind(tenant_id)
                .execute(pool)
                .await
                .map(|_| ())
        })?;
    }
    let role = Role::parse(&row.role).unwrap_or(Role::Viewer);
    let needs_mfa = row.platform_admin || role == Role::Admin;
    Ok(SessionState {
        role,
        platform_admin: row.platform_admin,
        mfa_satisfied: !needs_mfa || (row.totp_enabled && row.mfa_verified),
    })
}

async fn revoke(
    tx: &mut Tx,
    tenant_id: &str,
    session_id: &str,
    reason: &str,
) -> Result<(), sqlx::Error> {
    with_tx!(tx, conn => {
        sqlx::query(
            "UPDATE sessions SET revoked_at = $1, revoked_reason = $2 \
             WHERE id = $3 AND tenant_id = $4 AND revoked_at IS NULL",
        )
        .bind(crate::clock::now())
        .bind(reason)
        .bind(session_id)
        .bind(tenant_id)
        .execute(conn)
        .await
        .map(|_| ())
    })
}

/// Ends every session of a user, except `keep` (the caller's own, on a password change).
pub async fn revoke_all_for_user(
    tx: &mut Tx,
    tenant_id: &str,
    user_id: &str,
    reason: &str,
    keep: Option<&str>,
) -> Result<(), sqlx::Error> {
    with_tx!(tx, conn => {
        sqlx::query(
            "UPDATE sessions SET revoked_at = $1, revoked_reason = $2 \
             WHERE tenant_id = $3 AND user_id = $4 AND revoked_at IS NULL AND ($5 IS NULL OR id <> $5)",
        )
        .bind(crate::clock::now())
        .bind(reason)
        .bind(tenant_id)
        .bind(user_id)
        .bind(keep)
        .execute(conn)
        .await
        .map(|_| ())
    })
}

/// Creates a refresh token for `session_id` inside `tx` and returns the secret.
async fn issue_refresh_token(
    tx: &mut Tx,
    session_id: &str,
    now: DateTime<Utc>,
    expires_at: DateTime<Utc>,
) -> Result<String, sqlx::Error> {
    let secret = tokens::new_secret("dr_");
    with_tx!(tx, conn => {
        sqlx::query("INSERT INTO refresh_tokens (token_hash, session_id, issued_at, expires_at) VALUES ($1, $2, $3, $4)")
            .bind(tokens::hash_secret(&secret))
            .bind(session_id)
            .bind(now)
            .bind(expires_at)
            .execute(conn)
            .await
            .map(|_| ())
    })?;
    Ok(secret)
}

fn token_pair(
    state: &AppState,
    user: &UserRow,
    session_id: &str,
    refresh_token: String,
    refresh_expires_at: DateTime<Utc>,
    mfa_enrolment_required: bool,
) -> Result<TokenPair, AuthError> {
    let now = crate::clock::now();
    let ttl = state.config.access_token_ttl;
    Ok(TokenPair {
        access_token: tokens::encode_access(
            &state.secret_key,
            &user.id,
            &user.tenant_id,
            session_id,
            now,
            ttl,
        )?,
        token_type: "Bearer",
        expires_in: ttl.as_secs(),
        refresh_token,
        refresh_expires_in: u64::try_from((refresh_expires_at - now).num_seconds()).unwrap_or(0),
        mfa_enrolment_required,
    })
}

async fn record_failed_login(
    state: &AppState,
    user: Option<&UserRow>,
    email: &str,
    reason: &str,
    origin: &Origin,
) -> Result<(), AuthError> {
    let mut tx = state.store.begin().await?;
    let (tenant_id, target_id) = match user {
        Some(user) => (user.tenant_id.as_str(), user.id.as_str()),
        None => (PLATFORM_CHAIN, ""),
    };
    audit::append(
        &mut tx,
        Event {
            tenant_id,
            actor: &Actor::Anonymous,
            action: "auth.login_failed",
            target_type: "user",
            target_id,
            summary: json!({ "email": email, "reason": reason }),
            origin,
        },
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

/// The failure counters one sign-in attempt counts against: its address, and the account from that
/// address. Counted before the password is checked, taken back when it was no failed guess.
struct LoginAttempt {
    ip_key: Option<String>,
    account_key: Option<String>,
}

impl LoginAttempt {
    fn new(origin: &Origin, email: &str) -> Self {
        let email = email.trim().to_lowercase();
        Self {
            ip_key: origin.ip.as_ref().map(|ip| format!("login-ip:{ip}")),
            account_key: origin
                .ip
                .as_ref()
                .map(|ip| format!("login-account:{email}:{ip}")),
        }
    }

    /// Counts the attempt: 429 when the address is over its limit; `true` when the address is locked
    /// out of this account (answered like a wrong password, so that a lock reveals nothing).
    async fn count(&self, state: &AppState) -> Result<bool, AuthError> {
        if let Some(key) = &self.ip_key
            && let Some(retry_after_seconds) = state
                .rate_limiter
                .attempt(
                    key,
                    state.config.login_failures_per_ip,
                    IP_FAILURE_WINDOW_SECONDS,
                )
                .await?
        {
            return Err(AuthError::Throttled {
                retry_after_seconds,
            });
        }
        match &self.account_key {
            Some(key) => Ok(state
                .rate_limiter
                .attempt(key, ACCOUNT_FAILURES_BEFORE_LOCK, IP_FAILURE_WINDOW_SECONDS)
                .await?
                .is_some()),
            None => Ok(false),
        }
    }

    /// Takes the attempt back: it was no guess (the server was busy, or a code was still missing).
    async fn forgive(&self, state: &AppState) -> Result<(), AuthError> {
        for key in [&self.ip_key, &self.account_key].into_iter().flatten() {
            state.rate_limiter.forgive(key).await?;
        }
        Ok(())
    }

    /// A successful sign-in: the attempt was no failure, and it ends the account's lock count.
    async fn succeeded(&self, state: &AppState) -> Result<(), AuthError> {
        if let Some(key) = &self.ip_key {
            state.rate_limiter.forgive(key).await?;
        }
        if let Some(key) = &self.account_key {
            state.rate_limiter.clear(key).await?;
        }
        Ok(())
    }
}

/// Sign in with email and password (and a TOTP or recovery code when MFA is enabled).
#[utoipa::path(post, path = "/auth/login", operation_id = "sign_in", tag = "auth",
    description = "Public. Unknown email, wrong password and an account locked for this address give the same 401. \
                   An email is unique within a tenant: when it has accounts in several, name the tenant (`tenant`, its slug), \
                   or the sign-in fails with that same 401. \
                   Repeated failures from one address lock it out of that account and throttle it (429). 503 `busy` \
                   (with Retry-After) when password checks are queued too long.",
    request_body = LoginRequest,
    security(()),
    responses((status = 200, body = TokenPair), (status = 401, body = crate::http::error::ErrorBody),
              (status = 429, body = crate::http::error::ErrorBody), (status = 503, body = crate::http::error::ErrorBody)))]
pub async fn login(
    State(state): State<AppState>,
    ClientOrigin(origin): ClientOrigin,
    headers: HeaderMap,
    Json(body): Json<LoginRequest>,
) -> Result<ResponseJson<TokenPair>, ApiError> {
    if body.password.len() > password::MAX_LENGTH {
        return Err(AuthError::InvalidCredentials.into());
    }
    let (user, attempt) = if let Some(token) = &body.mfa_token {
        // The password was accepted when this token was issued; the lock still applies.
        let user = mfa::take_challenge(&state.store, token).await?;
        let attempt = LoginAttempt::new(&origin, &user.email);
        if attempt.count(&state).await? {
            record_failed_login(&state, Some(&user), &user.email, "locked", &origin).await?;
            return Err(AuthError::InvalidCredentials.into());
        }
        (user, attempt)
    } else {
        let attempt = LoginAttempt::new(&origin, &body.email);
        // Counted before any hashing, so that a burst is refused before it costs memory.
        let locked = attempt.count(&state).await?;
        let candidate =
            users::find_for_sign_in(&state.store, &body.email, body.tenant.as_deref()).await?;
        let (user, unknown_reason) = match candidate {
            users::SignInCandidate::One(user) => (Some(*user), "unknown_email"),
            users::SignInCandidate::Unknown => (None, "unknown_email"),
            users::SignInCandidate::SeveralTenants => (None, "tenant_not_named"),
        };
        // Hashed even when locked: the answer must take as long as a wrong password's.
        let checked = match &user {
            Some(user) => {
                state
                    .hashing
                    .verify(&body.password, &user.password_hash)
                    .await
            }
            None => state
                .hashing
                .verify_against_nothing(&body.password)
                .await
                .map(|()| false),
        };
        let matches = match checked {
            Ok(matches) => matches,
            Err(e) => {
                attempt.forgive(&state).await?;
                return Err(e.into());
            }
        };
        match user {
            Some(user) if matches && !locked => (user, attempt),
            user => {
                let reason = match (&user, locked) {
                    (None, _) => unknown_reason,
                    (Some(_), true) => "locked",
                    (Some(_), false) => "wrong_password",
                };
                record_failed_login(&state, user.as_ref(), &body.email, reason, &origin).await?;
                return Err(AuthError::InvalidCredentials.into());
            }
        }
    };
    let now = crate::clock::now();
    if user.status != "active" {
        return Err(AuthError::AccountDisabled.into());
    }
    let tenant_active: Option<String> = with_pool!(&state.store, pool => {
        sqlx::query_scalar("SELECT status FROM tenants WHERE id = $1").bind(&user.tenant_id).fetch_optional(pool).await
    })?;
    if tenant_active.as_deref() != Some("active") {
        return Err(AuthError::AccountDisabled.into());
    }

    let mut tx = state.store.begin().await?;
    let mfa_verified = if user.totp_enabled {
        match mfa::verify_login(
            &mut tx,
            &state.secret_key,
            &user,
            body.totp_code.as_deref(),
            body.recovery_code.as_deref(),
        )
        .await
        {
            Ok(()) => true,
            Err(e) => {
                drop(tx);
                match e {
                    AuthError::InvalidMfaCode => {
                        record_failed_login(
                            &state,
                            Some(&user),
                            &user.email,
                            "wrong_mfa_code",
                            &origin,
                        )
                        .await?;
                    }
                    // The password was right: that attempt is not a failure.
                    AuthError::MfaRequired => attempt.forgive(&state).await?,
                    _ => return Err(e.into()),
                }
                // The password (or an earlier token) was right: the next attempt needs only the
                // code. Wrong codes count as failed logins, so the lock still stops guessing.
                let token = mfa::issue_challenge(&state.store, &user).await?;
                return Err(ApiError::from(e).with_details(json!({ "mfa_token": token })));
            }
        }
    } else {
        false
    };
    let mfa_enrolment_required = user.requires_mfa() && !user.totp_enabled;

    let session_id = Uuid::now_v7().to_string();
    let expires_at = now
        + chrono::Duration::from_std(state.config.refresh_token_ttl)
            .unwrap_or(chrono::Duration::days(7));
    let user_agent = headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .map(|ua| ua.chars().take(300).collect::<String>());
    with_tx!(&mut tx, conn => {
        sqlx::query(
            "INSERT INTO sessions (id, tenant_id, user_id, mfa_verified, ip, user_agent, created_at, last_seen_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $7, $8)",
        )
        .bind(&session_id)
        .bind(&user.tenant_id)
        .bind(&user.id)
        .bind(mfa_verified)
        .bind(&origin.ip)
        .bind(&user_agent)
        .bind(now)
        .bind(expires_at)
        .execute(conn)
        .await
        .map(|_| ())
    })?;
    let refresh_token = issue_refresh_token(&mut tx, &session_id, now, expires_at).await?;
    audit::append(
        &mut tx,
        Event {
            tenant_id: &user.tenant_id,
            actor: &Actor::User(user.id.clone()),
            action: "auth.login",
            target_type: "session",
            target_id: &session_id,
            summary: json!({ "mfa": mfa_verified }),
            origin: &origin,
        },
    )
    .await?;
    tx.commit().await?;
    attempt.succeeded(&state).await?;
    Ok(ResponseJson(token_pair(
        &state,
        &user,
        &session_id,
        refresh_token,
        expires_at,
        mfa_enrolment_required,
    )?))
}

#[derive(sqlx::FromRow)]
struct RefreshRow {
    session_id: String,
    tenant_id: String,
    user_id: String,
    used_at: Option<DateTime<Utc>>,
    token_expires_at: DateTime<Utc>,
}

/// Exchange a refresh token for a new token pair. Each refresh token works once; presenting one
/// that was already used ends the whole session (it was probably stolen).
#[utoipa::path(post, path = "/auth/refresh", operation_id = "refresh_session", tag = "auth",
    description = "Public (the refresh token is the credential).",
    request_body = RefreshRequest,
    security(()),
    responses((status = 200, body = TokenPair), (status = 401, body = crate::http::error::ErrorBody)))]
pub async fn refresh(
    State(state): State<AppState>,
    ClientOrigin(origin): ClientOrigin,
    Json(body): Json<RefreshRequest>,
) -> Result<ResponseJson<TokenPair>, ApiError> {
    let hash = tokens::hash_secret(body.refresh_token.trim());
    let row: Option<RefreshRow> = with_pool!(&state.store, pool => {
        sqlx::query_as(
            "SELECT r.session_id, s.tenant_id, s.user_id, r.used_at, r.expires_at AS token_expires_at \
             FROM refresh_tokens r JOIN sessions s ON s.id = r.session_id WHERE r.token_hash = $1",
        )
        .bind(&hash)
        .fetch_optional(pool)
        .await
    })?;
    let row = row.ok_or(AuthError::InvalidToken("unknown refresh token"))?;
    if row.used_at.is_some() {
        end_session_on_reuse(&state, &row, &origin).await?;
        return Err(AuthError::SessionEnded.into());
    }
    let now = crate::clock::now();
    if row.token_expires_at <= now {
        return Err(AuthError::SessionEnded.into());
    }
    // Same checks as for an access token: revoked, idle, disabled user or tenant.
    let session = touch(&state, &row.tenant_id, &row.user_id, &row.session_id).await?;
    let user = users::find(&state.store, &row.tenant_id, &row.user_id)
        .await?
        .ok_or(AuthError::SessionEnded)?;

    let mut tx = state.store.begin().await?;
    // Claiming the token is one conditional update, so of two concurrent refreshes only one wins.
    let claimed = with_tx!(&mut tx, conn => {
        sqlx::query("UPDATE refresh_tokens SET used_at = $1 WHERE token_hash = $2 AND used_at IS NULL")
            .bind(now)
            .bind(&hash)
            .execute(conn)
            .await
            .map(|done| done.rows_affected())
    })?;
    if claimed == 0 {
        drop(tx);
        end_session_on_reuse(&state, &row, &origin).await?;
        return Err(AuthError::SessionEnded.into());
    }
    let expires_at: DateTime<Utc> = with_tx!(&mut tx, conn => {
        sqlx::query_scalar("SELECT expires_at FROM sessions WHERE id = $1").bind(&row.session_id).fetch_one(conn).await
    })?;
    with_tx!(&mut tx, conn => {
        sqlx::query("UPDATE sessions SET last_seen_at = $1 WHERE id = $2")
            .bind(now)
            .bind(&row.session_id)
            .execute(conn)
            .await
            .map(|_| ())
    })?;
    let refresh_token = issue_refresh_token(&mut tx, &row.session_id, now, expires_at).await?;
    tx.commit().await?;
    Ok(ResponseJson(token_pair(
        &state,
        &user,
        &row.session_id,
        refresh_token,
        expires_at,
        !session.mfa_satisfied,
    )?))
}

/// A used refresh token came back: whoever holds the token family may be an attacker, so the
/// session ends for everyone.
async fn end_session_on_reuse(
    state: &AppState,
    row: &RefreshRow,
    origin: &Origin,
) -> Result<(), AuthError> {
    let mut tx = state.store.begin().await?;
    revoke(
        &mut tx,
        &row.tenant_id,
        &row.session_id,
        "refresh_token_reuse",
    )
    .await?;
    audit::append(
        &mut tx,
        Event {
            tenant_id: &row.tenant_id,
            actor: &Actor::User(row.user_id.clone()),
            action: "auth.refresh_token_reuse",
            target_type: "session",
            target_id: &row.session_id,
            summary: json!({ "revoked": true }),
            origin,
        },
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

/// End the current session.
#[utoipa::path(post, path = "/auth/logout", operation_id = "sign_out", tag = "auth",
    description = "Requires: any signed-in user (`MfaEnrolment`, so it works before MFA enrolment too).",
    responses((status = 204), (status = 401, body = crate::http::error::ErrorBody)))]
pub async fn logout(
    State(state): State<AppState>,
    Authorized(principal, ..): Authorized<MfaEnrolment>,
) -> Result<StatusCode, ApiError> {
    let session_id = principal
        .session_id
        .clone()
        .ok_or(AuthError::Forbidden("API keys have no session"))?;
    let mut tx = state.store.begin().await?;
    revoke(&mut tx, &principal.tenant_id, &session_id, "logout").await?;
    principal
        .audit(&mut tx, "auth.logout", "session", &session_id, json!({}))
        .await?;
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The signed-in user.
#[utoipa::path(get, path = "/auth/me", operation_id = "get_current_user", tag = "auth",
    description = "Requires: any signed-in user (`MfaEnrolment`).",
    responses((status = 200, body = Me), (status = 401, body = crate::http::error::ErrorBody)))]
pub async fn me(
    State(state): State<AppState>,
    Authorized(principal, ..): Authorized<MfaEnrolment>,
) -> Result<ResponseJson<Me>, ApiError> {
    let user_id = principal
        .user_id()
        .ok_or(AuthError::Forbidden("API keys are not users"))?;
    let user = users::find(&state.store, &principal.tenant_id, user_id)
        .await?
        .ok_or(AuthError::SessionEnded)?;
    Ok(ResponseJson(Me {
        user: user.public(),
        session_id: principal.session_id.clone().unwrap_or_default(),
        mfa_enrolment_required: !principal.mfa_satisfied,
    }))
}

/// Your active sessions.
#[utoipa::path(get, path = "/auth/sessions", tag = "auth",
    description = "Requires: any signed-in user (`SignedIn`).",
    responses((status = 200, body = Vec<Session>)))]
pub async fn list_sessions(
    State(state): State<AppState>,
    Authorized(principal, ..): Authorized<SignedIn>,
) -> Result<ResponseJson<Vec<Session>>, ApiError> {
    let user_id = principal
        .user_id()
        .ok_or(AuthError::Forbidden("API keys have no sessions"))?;
    let sessions: Vec<Session> = with_pool!(&state.store, pool => {
        sqlx::query_as(
            "SELECT id, ip, user_agent, created_at, last_seen_at, expires_at FROM sessions \
             WHERE tenant_id = $1 AND user_id = $2 AND revoked_at IS NULL AND expires_at > $3 ORDER BY created_at DESC",
        )
        .bind(&principal.tenant_id)
        .bind(user_id)
        .bind(crate::clock::now())
        .fetch_all(pool)
        .await
    })?;
    Ok(ResponseJson(sessions))
}

/// End one of your sessions (e.g. a lost laptop).
#[utoipa::path(delete, path = "/auth/sessions/{id}", tag = "auth",
    description = "Requires: any signed-in user (`SignedIn`); only their own sessions.",
    params(("id" = String, Path)),
    responses((status = 204), (status = 404, body = crate::http::error::ErrorBody)))]
pub async fn revoke_session(
    State(state): State<AppState>,
    Authorized(principal, ..): Authorized<SignedIn>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let user_id = principal
        .user_id()
        .ok_or(AuthError::Forbidden("API keys have no sessions"))?
        .to_owned();
    let owner: Option<String> = with_pool!(&state.store, pool => {
        sqlx::query_scalar("SELECT user_id FROM sessions WHERE id = $1 AND tenant_id = $2 AND revoked_at IS NULL")
            .bind(&id)
            .bind(&principal.tenant_id)
            .fetch_optional(pool)
            .await
    })?;
    if owner.as_deref() != Some(user_id.as_str()) {
        return Err(AuthError::NotFound("session").into());
    }
    let mut tx = state.store.begin().await?;
    revoke(&mut tx, &principal.tenant_id, &id, "revoked_by_user").await?;
    principal
        .audit(&mut tx, "auth.session_revoke", "session", &id, json!({}))
        .await?;
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}
