//! Users: people who sign in, each in one tenant with one role.

use axum::Json as ResponseJson;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;
use uuid::Uuid;

use super::password::{self, Hashing};
use super::principal::{Authorized, Principal, ReadUsers, SignedIn, TenantAdmin};
use super::{AuthError, Role, api_keys, sessions};
use crate::app::AppState;
use crate::http::error::ApiError;
use crate::http::extract::Json;
use crate::http::pagination::{Page, PageParams};
use crate::store::{Store, Tx};
use crate::{with_pool, with_tx};

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct User {
    pub id: String,
    pub tenant_id: String,
    pub email: String,
    pub name: String,
    pub role: Role,
    pub platform_admin: bool,
    /// `active`, `disabled` or `deleted`.
    pub status: String,
    pub mfa_enabled: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// A user row including the secrets that never leave this module.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct UserRow {
    pub id: String,
    pub tenant_id: String,
    pub email: String,
    pub name: String,
    pub role: String,
    pub platform_admin: bool,
    pub password_hash: String,
    pub status: String,
    pub totp_secret: Option<String>,
    pub totp_enabled: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl UserRow {
    pub fn role(&self) -> Role {
        // Roles are only ever written from the enum; an unknown one gets the least privilege.
        Role::parse(&self.role).unwrap_or(Role::Viewer)
    }

    /// Admins (and platform admins) must use MFA.
    pub fn requires_mfa(&self) -> bool {
        self.platform_admin || self.role() == Role::Admin
    }

    pub fn public(&self) -> User {
        User {
            id: self.id.clone(),
            tenant_id: self.tenant_id.clone(),
            email: self.email.clone(),
            name: self.name.clone(),
            role: self.role(),
            platform_admin: self.platform_admin,
            status: self.status.clone(),
            mfa_enabled: self.totp_enabled,
            created_at: self.created_at,
            updated_at: self.updated_at,
        }
    }
}

pub const COLUMNS: &str = "id, tenant_id, email, name, role, platform_admin, password_hash, status, totp_secret, \
                           totp_enabled, created_at, updated_at";

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateUser {
    pub email: String,
    pub name: String,
    pub role: Role,
    /// At least 12 characters.
    pub password: String,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateUser {
    pub name: Option<String>,
    pub role: Option<Role>,
    /// `active` or `disabled`; disabling ends the user's sessions.
    pub status: Option<String>,
    /// Sets a new password (ends the user's sessions).
    pub password: Option<String>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChangePassword {
    pub current_password: String,
    pub new_password: String,
}

pub fn normalise_email(email: &str) -> Result<String, AuthError> {
    let email = email.trim().to_lowercase();
    let valid = email.len() <= 254
        && !email.contains(char::is_whitespace)
        && email.split_once('@').is_some_and(|(local, domain)| {
            !local.is_empty()
                && domain.contains('.')
                && !domain.starts_with('.')
                && !domain.ends_with('.')
        });
    if valid {
        Ok(email)
    } else {
        Err(AuthError::Invalid {
            field: "email",
            message: "must be an email address".to_owned(),
        })
    }
}

pub struct NewUser<'a> {
    pub tenant_id: &'a str,
    pub email: &'a str,
    pub name: &'a str,
    pub role: Role,
    pub platform_admin: bool,
    pub password: &'a str,
}

/// Validates and inserts a user inside `tx` (hashing the password in `hashing`).
pub async fn insert(
    tx: &mut Tx,
    hashing: &Hashing,
    new: NewUser<'_>,
) -> Result<UserRow, AuthError> {
    let email = normalise_email(new.email)?;
    let name = new.name.trim();
    if name.is_empty() || name.chars().count() > 200 {
        return Err(AuthError::Invalid {
            field: "name",
            message: "must be 1-200 characters".to_owned(),
        });
    }
    password::validate("password", new.password)?;
    let password_hash = hashing.hash(new.password).await?;
    let now = crate::clock::now();
    let row = UserRow {
        id: Uuid::now_v7().to_string(),
        tenant_id: new.tenant_id.to_owned(),
        email,
        name: name.to_owned(),
        role: new.role.as_str().to_owned(),
        platform_admin: new.platform_admin,
        password_hash,
        status: "active".to_owned(),
        totp_secret: None,
        totp_enabled: false,
        created_at: now,
        updated_at: now,
    };
    let inserted = with_tx!(tx, conn => {
        sqlx::query(
            "INSERT INTO users (id, tenant_id, email, name, role, platform_admin, password_hash, status, \
             totp_enabled, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) ON CONFLICT (tenant_id, email) DO NOTHING",
        )
        .bind(&row.id)
        .bind(&row.tenant_id)
        .bind(&row.email)
        .bind(&row.name)
        .bind(&row.role)
        .bind(row.platform_admin)
        .bind(&row.password_hash)
        .bind(&row.status)
        .bind(false)
        .bind(row.created_at)
        .bind(row.updated_at)
        .execute(conn)
        .await
        .map(|done| done.rows_affected())
    })?;
    if inserted == 0 {
        return Err(AuthError::Conflict(format!(
            "a user with email {} already exists in this tenant",
            row.email
        )));
    }
    Ok(row)
}

/// Whom a sign-in with `email` (and the tenant's slug, when given) is for. Emails are unique per
/// tenant, so without a tenant an address with accounts in several tenants names no one.
pub async fn find_for_sign_in(
    store: &Store,
    email: &str,
    tenant_slug: Option<&str>,
) -> Result<SignInCandidate, sqlx::Error> {
    let mut found: Vec<UserRow> = with_pool!(store, pool => {
        sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM users WHERE email = $1 AND status <> 'deleted' \
             AND ($2 IS NULL OR tenant_id = (SELECT id FROM tenants WHERE slug = $2)) LIMIT 2"
        )))
        .bind(email.trim().to_lowercase())
        .bind(tenant_slug.map(str::trim))
        .fetch_all(pool)
        .await
    })?;
    Ok(match found.len() {
        0 => SignInCandidate::Unknown,
        1 => SignInCandidate::One(Box::new(found.remove(0))),
        _ => SignInCandidate::SeveralTenants,
    })
}

pub enum SignInCandidate {
    One(Box<UserRow>),
    Unknown,
    /// The address has accounts in more than one tenant and the sign-in named none.
    SeveralTenants,
}

pub async fn find(
    store: &Store,
    tenant_id: &str,
    id: &str,
) -> Result<Option<UserRow>, sqlx::Error> {
    with_pool!(store, pool => {
        sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM users WHERE tenant_id = $1 AND id = $2 AND status <> 'deleted'"
        )))
        .bind(tenant_id)
        .bind(id)
        .fetch_optional(pool)
        .await
    })
}

/// Create a user in the caller's tenant.
#[utoipa::path(post, path = "/users", tag = "users",
    description = "Requires: admin (`TenantAdmin`), from the tenant's IP allow-list.",
    request_body = CreateUser,
    responses((status = 201, body = User), (status = 409, body = crate::http::error::ErrorBody), (status = 422, body = crate::http::error::ErrorBody)))]
pub async fn create_user(
    State(state): State<AppState>,
    Authorized(principal, ..): Authorized<TenantAdmin>,
    Json(body): Json<CreateUser>,
) -> Result<(StatusCode, ResponseJson<User>), ApiError> {
    let mut tx = state.store.begin().await?;
    let user = insert(
        &mut tx,
        &state.hashing,
        NewUser {
            tenant_id: &principal.tenant_id,
            email: &body.email,
            name: &body.name,
            role: body.role,
            platform_admin: false,
            password: &body.password,
        },
    )
    .await?;
    principal
        .audit(
            &mut tx,
            "user.create",
            "user",
            &user.id,
            json!({ "after": summary(&user) }),
        )
        .await?;
    tx.commit().await?;
    Ok((StatusCode::CREATED, ResponseJson(user.public())))
}

/// A platform admin can run every tenant, so a tenant admin who could reset their password or
/// disable them could take over the platform: only another platform admin may change one.
fn guard_platform_admin(principal: &Principal, target: &UserRow) -> Result<(), ApiError> {
    if target.platform_admin && !principal.platform_admin {
        return Err(ApiError::forbidden(
            "Only a platform administrator may change a platform administrator.",
        )
        .with_code("platform_admin_protected"));
    }
    Ok(())
}

pub(super) fn summary(user: &UserRow) -> serde_json::Value {
    json!({ "email": user.email, "name": user.name, "role": user.role, "status": user.status })
}

/// List the tenant's users.
#[utoipa::path(get, path = "/users", tag = "users",
    description = "Requires: supervisor or admin (`ReadUsers`), or an API key with `users:read`.",
    params(PageParams), responses((status = 200, body = Page<User>)))]
pub async fn list_users(
    State(state): State<AppState>,
    Authorized(principal, ..): Authorized<ReadUsers>,
    Query(page): Query<PageParams>,
) -> Result<ResponseJson<Page<User>>, ApiError> {
    let limit = page.limit()?;
    let rows: Vec<UserRow> = with_pool!(&state.store, pool => {
        sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM users WHERE tenant_id = $1 AND status <> 'deleted' \
             AND ($2 IS NULL OR id > $2) ORDER BY id LIMIT $3"
        )))
        .bind(&principal.tenant_id)
        .bind(&page.cursor)
        .bind(i64::from(limit) + 1)
        .fetch_all(pool)
        .await
    })?;
    let users = rows.iter().map(UserRow::public).collect();
    Ok(ResponseJson(Page::from_overfetch(
        users,
        limit,
        |u: &User| u.id.clone(),
    )))
}

/// Get one of the tenant's users.
#[utoipa::path(get, path = "/users/{id}", tag = "users",
    description = "Requires: supervisor or admin (`ReadUsers`), or an API key with `users:read`.",
    params(("id" = String, Path)),
    responses((status = 200, body = User), (status = 404, body = crate::http::error::ErrorBody)))]
pub async fn get_user(
    State(state): State<AppState>,
    Authorized(principal, ..): Authorized<ReadUsers>,
    Path(id): Path<String>,
) -> Result<ResponseJson<User>, ApiError> {
    let user = find(&state.store, &principal.tenant_id, &id)
        .await?
        .ok_or(AuthError::NotFound("user"))?;
    Ok(ResponseJson(user.public()))
}

/// Change a user's name, role, status or password.
#[utoipa::path(patch, path = "/users/{id}", tag = "users",
    description = "Requires: admin (`TenantAdmin`), from the tenant's IP allow-list.",
    params(("id" = String, Path)), request_body = UpdateUser,
    responses((status = 200, body = User), (status = 404, body = crate::http::error::ErrorBody), (status = 422, body = crate::http::error::ErrorBody)))]
pub async fn update_user(
    State(state): State<AppState>,
    Authorized(principal, ..): Authorized<TenantAdmin>,
    Path(id): Path<String>,
    Json(body): Json<UpdateUser>,
) -> Result<ResponseJson<User>, ApiError> {
    let before = find(&state.store, &principal.tenant_id, &id)
        .await?
        .ok_or(AuthError::NotFound("user"))?;
    guard_platform_admin(&principal, &before)?;
    let mut after = before.clone();
    if let Some(name) = &body.name {
        let name = name.trim();
        if name.is_empty() || name.chars().count() > 200 {
            return Err(ApiError::invalid_field("name", "must be 1-200 characters"));
        }
        after.name = name.to_owned();
    }
    if let Some(role) = body.role {
        after.role = role.as_str().to_owned();
    }
    if let Some(status) = &body.status {
        if !matches!(status.as_str(), "active" | "disabled") {
            return Err(ApiError::invalid_field(
                "status",
                "must be active or disabled",
            ));
        }
        after.status = status.clone();
    }
    let is_self = principal.user_id() == Some(id.as_str());
    if is_self && (after.status != "active" || after.role() < Role::Admin) {
        return Err(ApiError::conflict(
            "You cannot disable or demote yourself; ask another admin.",
        ));
    }
    if let Some(new_password) = &body.password {
        password::validate("password", new_password)?;
        after.password_hash = state.hashing.hash(new_password).await?;
    }
    after.updated_at = crate::clock::now();
    let ends_sessions =
        after.status != "active" || body.password.is_some() || after.role != before.role;

    let mut tx = state.store.begin().await?;
    with_tx!(&mut tx, conn => {
        sqlx::query(
            "UPDATE users SET name = $1, role = $2, status = $3, password_hash = $4, updated_at = $5 \
             WHERE tenant_id = $6 AND id = $7",
        )
        .bind(&after.name)
        .bind(&after.role)
        .bind(&after.status)
        .bind(&after.password_hash)
        .bind(after.updated_at)
        .bind(&principal.tenant_id)
        .bind(&id)
        .execute(conn)
        .await
        .map(|_| ())
    })?;
    if ends_sessions {
        sessions::revoke_all_for_user(&mut tx, &principal.tenant_id, &id, "account_changed", None)
            .await?;
    }
    if after.status != "active" {
        api_keys::revoke_all_created_by(&mut tx, &principal, &id, "creator_disabled").await?;
    }
    let mut changes = json!({ "before": summary(&before), "after": summary(&after) });
    if body.password.is_some() {
        changes["password_reset"] = json!(true);
    }
    principal
        .audit(&mut tx, "user.update", "user", &id, changes)
        .await?;
    tx.commit().await?;
    Ok(ResponseJson(after.public()))
}

/// Delete a user: they can no longer sign in; their audit history stays.
#[utoipa::path(delete, path = "/users/{id}", tag = "users",
    description = "Requires: admin (`TenantAdmin`), from the tenant's IP allow-list.",
    params(("id" = String, Path)),
    responses((status = 204), (status = 404, body = crate::http::error::ErrorBody)))]
pub async fn delete_user(
    State(state): State<AppState>,
    Authorized(principal, ..): Authorized<TenantAdmin>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    if principal.user_id() == Some(id.as_str()) {
        return Err(ApiError::conflict(
            "You cannot delete yourself; ask another admin.",
        ));
    }
    let before = find(&state.store, &principal.tenant_id, &id)
        .await?
        .ok_or(AuthError::NotFound("user"))?;
    guard_platform_admin(&principal, &before)?;
    let mut tx = state.store.begin().await?;
    with_tx!(&mut tx, conn => {
        sqlx::query("UPDATE users SET status = 'deleted', updated_at = $1 WHERE tenant_id = $2 AND id = $3")
            .bind(crate::clock::now())
            .bind(&principal.tenant_id)
            .bind(&id)
            .execute(conn)
            .await
            .map(|_| ())
    })?;
    sessions::revoke_all_for_user(&mut tx, &principal.tenant_id, &id, "account_deleted", None)
        .await?;
    api_keys::revoke_all_created_by(&mut tx, &principal, &id, "creator_deleted").await?;
    principal
        .audit(
            &mut tx,
            "user.delete",
            "user",
            &id,
            json!({ "before": summary(&before) }),
        )
        .await?;
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Change your own password; your other sessions end.
#[utoipa::path(post, path = "/users/me/password", tag = "users",
    description = "Requires: any signed-in user (`SignedIn`).",
    request_body = ChangePassword,
    responses((status = 204), (status = 401, body = crate::http::error::ErrorBody), (status = 422, body = crate::http::error::ErrorBody)))]
pub async fn change_password(
    State(state): State<AppState>,
    Authorized(principal, ..): Authorized<SignedIn>,
    Json(body): Json<ChangePassword>,
) -> Result<StatusCode, ApiError> {
    let user_id = principal
        .user_id()
        .ok_or(AuthError::Forbidden("only users have passwords"))?
        .to_owned();
    let user = find(&state.store, &principal.tenant_id, &user_id)
        .await?
        .ok_or(AuthError::NotFound("user"))?;
    password::validate("new_password", &body.new_password)?;
    if !state
        .hashing
        .verify(&body.current_password, &user.password_hash)
        .await?
    {
        return Err(ApiError::invalid_field("current_password", "is wrong"));
    }
    let new_hash = state.hashing.hash(&body.new_password).await?;
    let mut tx = state.store.begin().await?;
    with_tx!(&mut tx, conn => {
        sqlx::query("UPDATE users SET password_hash = $1, updated_at = $2 WHERE tenant_id = $3 AND id = $4")
            .bind(&new_hash)
            .bind(crate::clock::now())
            .bind(&principal.tenant_id)
            .bind(&user_id)
            .execute(conn)
            .await
            .map(|_| ())
    })?;
    sessions::revoke_all_for_user(
        &mut tx,
        &principal.tenant_id,
        &user_id,
        "password_changed",
        principal.session_id.as_deref(),
    )
    .await?;
    principal
        .audit(&mut tx, "user.password_change", "user", &user_id, json!({}))
        .await?;
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}
