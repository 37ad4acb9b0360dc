//! API keys for agents and services: scoped, optionally expiring, shown once, stored hashed.

use axum::Json as ResponseJson;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;
use uuid::Uuid;

use super::principal::{Authorized, Principal, TenantAdmin};
use super::{AuthError, tokens};
use crate::app::AppState;
use crate::http::error::ApiError;
use crate::http::extract::Json;
use crate::http::pagination::{Page, PageParams};
use crate::store::{Store, Tx};
use crate::{with_pool, with_tx};

/// Every key starts with this, so it is recognisable (and detectable by secret scanners).
pub const KEY_PREFIX: &str = "dk_";

/// Scopes a key may hold. Each endpoint usable by keys names one of these.
pub const SCOPES: &[&str] = &[
    "audit:read",
    "cases:read",
    "cases:write",
    "events:write",
    "knowledge:read",
    "knowledge:write",
    "reports:read",
    "runs:read",
    "tasks:read",
    "tasks:write",
    "users:read",
];

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ApiKey {
    pub id: String,
    pub name: String,
    /// The first characters of the secret, to recognise the key.
    pub prefix: String,
    pub scopes: Vec<String>,
    pub created_by: String,
    pub created_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
    pub last_used_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
}

#[derive(sqlx::FromRow)]
struct ApiKeyRow {
    id: String,
    tenant_id: String,
    name: String,
    prefix: String,
    scopes: String,
    created_by: String,
    created_at: DateTime<Utc>,
    expires_at: Option<DateTime<Utc>>,
    last_used_at: Option<DateTime<Utc>>,
    revoked_at: Option<DateTime<Utc>>,
}

impl From<ApiKeyRow> for ApiKey {
    fn from(row: ApiKeyRow) -> Self {
        Self {
            id: row.id,
            name: row.name,
            prefix: row.prefix,
            scopes: serde_json::from_str(&row.scopes).unwrap_or_default(),
            created_by: row.created_by,
            created_at: row.created_at,
            expires_at: row.expires_at,
            last_used_at: row.last_used_at,
            revoked_at: row.revoked_at,
        }
    }
}

const COLUMNS: &str = "id, tenant_id, name, prefix, scopes, created_by, created_at, expires_at, last_used_at, revoked_at";

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateApiKey {
    pub name: String,
    /// E.g. `tasks:read`, `tasks:write`, `events:write`, `cases:write`, `knowledge:read`.
    pub scopes: Vec<String>,
    pub expires_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CreatedApiKey {
    #[serde(flatten)]
    pub key: ApiKey,
    /// Send as `Authorization: Bearer <secret>`. Shown only in this response.
    pub secret: String,
}

/// The key's tenant, id and scopes, after checking it is live.
pub struct KeyIdentity {
    pub id: String,
    pub tenant_id: String,
    pub scopes: Vec<String>,
    /// The user who created the key, who answers for what it does.
    pub created_by: String,
}

pub async fn authenticate(store: &Store, secret: &str) -> Result<KeyIdentity, AuthError> {
    let row: Option<ApiKeyRow> = with_pool!(store, pool => {
        sqlx::query_as(sqlx::AssertSqlSafe(format!("SELECT {COLUMNS} FROM api_keys WHERE secret_hash = $1")))
            .bind(tokens::hash_secret(secret))
            .fetch_optional(pool)
            .await
    })?;
    let row = row.ok_or(AuthError::InvalidToken("unknown API key"))?;
    let now = crate::clock::now();
    // Usage time is informational; write it at most once a minute per key.
    let touch = row
        .last_used_at
        .is_none_or(|t| (now - t).num_seconds() >= 60);
    let key = still_usable(store, row, now).await?;
    if touch {
        crate::with_writer!(store, pool => {
            sqlx::query("UPDATE api_keys SET last_used_at = $1 WHERE id = $2").bind(now).bind(&key.id).execute(pool).await.map(|_| ())
        })?;
    }
    Ok(key)
}

/// The key `key_id` as it stands now, if it may still be used (for callers that hold a key's
/// identity for a while, such as an open event stream).
pub async fn current(
    store: &Store,
    tenant_id: &str,
    key_id: &str,
) -> Result<KeyIdentity, AuthError> {
    let row: Option<ApiKeyRow> = with_pool!(store, pool => {
        sqlx::query_as(sqlx::AssertSqlSafe(format!("SELECT {COLUMNS} FROM api_keys WHERE tenant_id = $1 AND id = $2")))
            .bind(tenant_id)
            .bind(key_id)
            .fetch_optional(pool)
            .await
    })?;
    let row = row.ok_or(AuthError::InvalidToken("unknown API key"))?;
    still_usable(store, row, crate::clock::now()).await
}

/// Not revoked, not expired, and its tenant active.
async fn still_usable(
    store: &Store,
    row: ApiKeyRow,
    now: DateTime<Utc>,
) -> Result<KeyIdentity, AuthError> {
    if row.revoked_at.is_some() {
        return Err(AuthError::InvalidToken("the API key was revoked"));
    }
    if row.expires_at.is_some_and(|t| t <= now) {
        return Err(AuthError::InvalidToken("the API key has expired"));
    }
    let tenant_status: Option<String> = with_pool!(store, pool => {
        sqlx::query_scalar("SELECT status FROM tenants WHERE id = $1").bind(&row.tenant_id).fetch_optional(pool).await
    })?;
    if tenant_status.as_deref() != Some("active") {
        return Err(AuthError::InvalidToken("the tenant is suspended"));
    }
    // Disabling or deleting the creator revokes their keys; this check covers the moment before
    // that lands and any key that slipped past it, so a key never outlives its creator's access.
    let creator_status: Option<String> = with_pool!(store, pool => {
        sqlx::query_scalar("SELECT status FROM users WHERE tenant_id = $1 AND id = $2")
            .bind(&row.tenant_id)
            .bind(&row.created_by)
            .fetch_optional(pool)
            .await
    })?;
    if creator_status.as_deref() != Some("active") {
        return Err(AuthError::InvalidToken(
            "the API key's creator is no longer active",
        ));
    }
    let tenant_id = row.tenant_id.clone();
    let key = ApiKey::from(row);
    Ok(KeyIdentity {
        id: key.id,
        tenant_id,
        scopes: key.scopes,
        created_by: key.created_by,
    })
}

/// Revokes every live key `creator_id` made (their account was disabled or deleted), one audit
/// record per key naming `reason`.
pub async fn revoke_all_created_by(
    tx: &mut Tx,
    principal: &Principal,
    creator_id: &str,
    reason: &str,
) -> Result<(), sqlx::Error> {
    let revoked: Vec<String> = with_tx!(tx, conn => {
        sqlx::query_scalar(
            "UPDATE api_keys SET revoked_at = $1 WHERE tenant_id = $2 AND created_by = $3 AND revoked_at IS NULL \
             RETURNING id",
        )
        .bind(crate::clock::now())
        .bind(&principal.tenant_id)
        .bind(creator_id)
        .fetch_all(conn)
        .await
    })?;
    for key_id in revoked {
        principal
            .audit(
                tx,
                "api_key.revoke",
                "api_key",
                &key_id,
                json!({ "reason": reason, "created_by": creator_id }),
            )
            .await?;
    }
    Ok(())
}

/// Create an API key. The secret is in the response and nowhere else.
#[utoipa::path(post, path = "/api-keys", tag = "api-keys",
    description = "Requires: admin (`TenantAdmin`), from the tenant's IP allow-list.",
    request_body = CreateApiKey,
    responses((status = 201, body = CreatedApiKey), (status = 422, body = crate::http::error::ErrorBody)))]
pub async fn create_key(
    State(state): State<AppState>,
    Authorized(principal, ..): Authorized<TenantAdmin>,
    Json(body): Json<CreateApiKey>,
) -> Result<(StatusCode, ResponseJson<CreatedApiKey>), ApiError> {
    let name = body.name.trim();
    if name.is_empty() || name.chars().count() > 200 {
        return Err(ApiError::invalid_field("name", "must be 1-200 characters"));
    }
    if body.scopes.is_empty() {
        return Err(ApiError::invalid_field("scopes", "name at least one scope"));
    }
    if let Some(unknown) = body.scopes.iter().find(|s| !SCOPES.contains(&s.as_str())) {
        return Err(ApiError::invalid_field(
            "scopes",
            format!("unknown scope {unknown:?}; known: {}", SCOPES.join(", ")),
        ));
    }
    if body.expires_at.is_some_and(|t| t <= crate::clock::now()) {
        return Err(ApiError::invalid_field(
            "expires_at",
            "must be in the future",
        ));
    }
    let mut scopes = body.scopes.clone();
    scopes.sort();
    scopes.dedup();
    let secret = tokens::new_secret(KEY_PREFIX);
    let key = ApiKey {
        id: Uuid::now_v7().to_string(),
        name: name.to_owned(),
        prefix: secret.chars().take(KEY_PREFIX.len() + 8).collect(),
        scopes,
        created_by: principal.user_id().unwrap_or_default().to_owned(),
        created_at: crate::clock::now(),
        expires_at: body.expires_at,
        last_used_at: None,
        revoked_at: None,
    };
    let mut tx = state.store.begin().await?;
    with_tx!(&mut tx, conn => {
        sqlx::query(
            "INSERT INTO api_keys (id, tenant_id, name, prefix, secret_hash, scopes, created_by, created_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(&key.id)
        .bind(&principal.tenant_id)
        .bind(&key.name)
        .bind(&key.prefix)
        .bind(tokens::hash_secret(&secret))
        .bind(json!(key.scopes).to_string())
        .bind(&key.created_by)
        .bind(key.created_at)
        .bind(key.expires_at)
        .execute(conn)
        .await
        .map(|_| ())
    })?;
    principal.audit(&mut tx, "api_key.create", "api_key", &key.id, json!({ "after": { "name": key.name, "scopes": key.scopes, "expires_at": key.expires_at } })).await?;
    tx.commit().await?;
    Ok((
        StatusCode::CREATED,
        ResponseJson(CreatedApiKey { key, secret }),
    ))
}

/// The tenant's API keys (without secrets).
#[utoipa::path(get, path = "/api-keys", tag = "api-keys",
    description = "Requires: admin (`TenantAdmin`), from the tenant's IP allow-list.",
    params(PageParams), responses((status = 200, body = Page<ApiKey>)))]
pub async fn list_keys(
    State(state): State<AppState>,
    Authorized(principal, ..): Authorized<TenantAdmin>,
    Query(page): Query<PageParams>,
) -> Result<ResponseJson<Page<ApiKey>>, ApiError> {
    let limit = page.limit()?;
    let rows: Vec<ApiKeyRow> = with_pool!(&state.store, pool => {
        sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM api_keys WHERE tenant_id = $1 AND ($2 IS NULL OR id > $2) ORDER BY id LIMIT $3"
        )))
        .bind(&principal.tenant_id)
        .bind(&page.cursor)
        .bind(i64::from(limit) + 1)
        .fetch_all(pool)
        .await
    })?;
    let keys = rows.into_iter().map(ApiKey::from).collect();
    Ok(ResponseJson(Page::from_overfetch(
        keys,
        limit,
        |k: &ApiKey| k.id.clone(),
    )))
}

/// Revoke an API key; it stops working at once.
#[utoipa::path(delete, path = "/api-keys/{id}", tag = "api-keys",
    description = "Requires: admin (`TenantAdmin`), from the tenant's IP allow-list.",
    params(("id" = String, Path)),
    responses((status = 204), (status = 404, body = crate::http::error::ErrorBody)))]
pub async fn revoke_key(
    State(state): State<AppState>,
    Authorized(principal, ..): Authorized<TenantAdmin>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let mut tx = state.store.begin().await?;
    let revoked = with_tx!(&mut tx, conn => {
        sqlx::query("UPDATE api_keys SET revoked_at = $1 WHERE tenant_id = $2 AND id = $3 AND revoked_at IS NULL")
            .bind(crate::clock::now())
            .bind(&principal.tenant_id)
            .bind(&id)
            .execute(conn)
            .await
            .map(|done| done.rows_affected())
    })?;
    if revoked == 0 {
        return Err(AuthError::NotFound("API key").into());
    }
    principal
        .audit(&mut tx, "api_key.revoke", "api_key", &id, json!({}))
        .await?;
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}
