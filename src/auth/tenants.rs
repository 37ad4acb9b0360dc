//! Tenants: the unit of isolation. Every domain row carries a `tenant_id`.

use axum::Json as ResponseJson;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;
use uuid::Uuid;

use super::principal::{Authorized, PlatformAdmin, TenantAdmin};
use super::users::{self, NewUser, User};
use super::{AuthError, Role};
use crate::app::AppState;
use crate::audit::{self, Event};
use crate::config::parse_cidr;
use crate::http::error::ApiError;
use crate::http::extract::Json;
use crate::http::pagination::{Page, PageParams};
use crate::store::{Store, Tx};
use crate::{with_pool, with_tx};

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Tenant {
    pub id: String,
    pub slug: String,
    pub name: String,
    /// `active` or `suspended` (no sign-ins, no API access).
    pub status: String,
    /// CIDR blocks admin operations must come from; empty allows any address.
    pub ip_allowlist: Vec<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(sqlx::FromRow)]
struct TenantRow {
    id: String,
    slug: String,
    name: String,
    status: String,
    ip_allowlist: String,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl From<TenantRow> for Tenant {
    fn from(row: TenantRow) -> Self {
        Self {
            id: row.id,
            slug: row.slug,
            name: row.name,
            status: row.status,
            ip_allowlist: serde_json::from_str(&row.ip_allowlist).unwrap_or_default(),
            created_at: row.created_at,
            updated_at: row.updated_at,
        }
    }
}

const COLUMNS: &str = "id, slug, name, status, ip_allowlist, created_at, updated_at";

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTenant {
    /// Lower-case letters, digits and dashes, 2–63 characters; unique.
    pub slug: String,
    pub name: String,
    #[serde(default)]
    pub ip_allowlist: Vec<String>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateTenant {
    pub name: Option<String>,
    /// `active` or `suspended`; platform admins only.
    pub status: Option<String>,
    pub ip_allowlist: Option<Vec<String>>,
}

fn validate_slug(slug: &str) -> Result<(), AuthError> {
    let valid = (2..=63).contains(&slug.len())
        && slug
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !slug.starts_with('-')
        && !slug.ends_with('-');
    if valid {
        Ok(())
    } else {
        Err(AuthError::Invalid {
            field: "slug",
            message: "use 2-63 lower-case letters, digits and dashes".to_owned(),
        })
    }
}

fn validate_name(field: &'static str, name: &str) -> Result<String, AuthError> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > 200 {
        return Err(AuthError::Invalid {
            field,
            message: "must be 1-200 characters".to_owned(),
        });
    }
    Ok(name.to_owned())
}

fn validate_allowlist(list: &[String]) -> Result<Vec<String>, AuthError> {
    list.iter()
        .map(|item| {
            parse_cidr(item.trim())
                .map(|net| net.to_string())
                .ok_or_else(|| AuthError::Invalid {
                    field: "ip_allowlist",
                    message: format!("{item:?} is not an IP address or CIDR block"),
                })
        })
        .collect()
}

/// Inserts a tenant inside `tx` (used by the API and by `docket admin create`).
pub async fn insert(
    tx: &mut Tx,
    slug: &str,
    name: &str,
    ip_allowlist: &[String],
) -> Result<Tenant, AuthError> {
    validate_slug(slug)?;
    let name = validate_name("name", name)?;
    let allowlist = validate_allowlist(ip_allowlist)?;
    let now = crate::clock::now();
    let tenant = Tenant {
        id: Uuid::now_v7().to_string(),
        slug: slug.to_owned(),
        name,
        status: "active".to_owned(),
        ip_allowlist: allowlist,
        created_at: now,
        updated_at: now,
    };
    let inserted = with_tx!(tx, conn => {
        sqlx::query(
            "INSERT INTO tenants (id, slug, name, status, ip_allowlist, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (slug) DO NOTHING",
        )
        .bind(&tenant.id)
        .bind(&tenant.slug)
        .bind(&tenant.name)
        .bind(&tenant.status)
        .bind(json!(tenant.ip_allowlist).to_string())
        .bind(tenant.created_at)
        .bind(tenant.updated_at)
        .execute(conn)
        .await
        .map(|done| done.rows_affected())
    })?;
    if inserted == 0 {
        return Err(AuthError::Conflict(format!(
            "a tenant with slug {slug:?} already exists"
        )));
    }
    Ok(tenant)
}

pub async fn find_by_slug(store: &Store, slug: &str) -> Result<Option<Tenant>, sqlx::Error> {
    let row: Option<TenantRow> = with_pool!(store, pool => {
        sqlx::query_as(sqlx::AssertSqlSafe(format!("SELECT {COLUMNS} FROM tenants WHERE slug = $1")))
            .bind(slug)
            .fetch_optional(pool)
            .await
    })?;
    Ok(row.map(Tenant::from))
}

async fn find(store: &Store, id: &str) -> Result<Option<Tenant>, sqlx::Error> {
    let row: Option<TenantRow> = with_pool!(store, pool => {
        sqlx::query_as(sqlx::AssertSqlSafe(format!("SELECT {COLUMNS} FROM tenants WHERE id = $1")))
            .bind(id)
            .fetch_optional(pool)
            .await
    })?;
    Ok(row.map(Tenant::from))
}

/// The tenant's admin allow-list, parsed.
pub async fn ip_allowlist(
    store: &Store,
    tenant_id: &str,
) -> Result<Vec<ipnet::IpNet>, sqlx::Error> {
    let raw: Option<String> = with_pool!(store, pool => {
        sqlx::query_scalar("SELECT ip_allowlist FROM tenants WHERE id = $1")
            .bind(tenant_id)
            .fetch_optional(pool)
            .await
    })?;
    let list: Vec<String> = raw
        .and_then(|r| serde_json::from_str(&r).ok())
        .unwrap_or_default();
    Ok(list.iter().filter_map(|item| parse_cidr(item)).collect())
}

/// Create a tenant. Platform admins only.
#[utoipa::path(post, path = "/tenants", tag = "tenants",
    description = "Requires: platform admin (`PlatformAdmin`). API keys cannot call it.",
    request_body = CreateTenant,
    responses((status = 201, body = Tenant), (status = 409, body = crate::http::error::ErrorBody), (status = 422, body = crate::http::error::ErrorBody)))]
pub async fn create_tenant(
    State(state): State<AppState>,
    Authorized(principal, ..): Authorized<PlatformAdmin>,
    Json(body): Json<CreateTenant>,
) -> Result<(StatusCode, ResponseJson<Tenant>), ApiError> {
    let mut tx = state.store.begin().await?;
    let tenant = insert(&mut tx, &body.slug, &body.name, &body.ip_allowlist).await?;
    audit::append(
        &mut tx,
        Event {
            tenant_id: &tenant.id,
            actor: &principal.actor,
            action: "tenant.create",
            target_type: "tenant",
            target_id: &tenant.id,
            summary: json!({ "after": { "slug": tenant.slug, "name": tenant.name, "ip_allowlist": tenant.ip_allowlist } }),
            origin: &principal.origin,
        },
    )
    .await?;
    tx.commit().await?;
    Ok((StatusCode::CREATED, ResponseJson(tenant)))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTenantAdmin {
    pub email: String,
    pub name: String,
    /// At least 12 characters. The admin sets up two-factor authentication at first sign-in.
    pub password: String,
}

/// Create an admin in a tenant, so a platform admin can onboard a tenant without shell access
/// to the database. Platform admins only; the new user is an ordinary tenant admin.
#[utoipa::path(post, path = "/tenants/{id}/admins", tag = "tenants",
    description = "Requires: platform admin (`PlatformAdmin`). API keys cannot call it.",
    params(("id" = String, Path)), request_body = CreateTenantAdmin,
    responses((status = 201, body = User), (status = 404, body = crate::http::error::ErrorBody),
               (status = 409, body = crate::http::error::ErrorBody), (status = 422, body = crate::http::error::ErrorBody)))]
pub async fn create_tenant_admin(
    State(state): State<AppState>,
    Authorized(principal, ..): Authorized<PlatformAdmin>,
    Path(id): Path<String>,
    Json(body): Json<CreateTenantAdmin>,
) -> Result<(StatusCode, ResponseJson<User>), ApiError> {
    let tenant = find(&state.store, &id)
        .await?
        .ok_or(AuthError::NotFound("tenant"))?;
    let mut tx = state.store.begin().await?;
    let user = users::insert(
        &mut tx,
        &state.hashing,
        NewUser {
            tenant_id: &tenant.id,
            email: &body.email,
            name: &body.name,
            role: Role::Admin,
            platform_admin: false,
            password: &body.password,
        },
    )
    .await?;
    // Recorded in the new admin's tenant, whose chain is the one its admins read.
    audit::append(
        &mut tx,
        Event {
            tenant_id: &tenant.id,
            actor: &principal.actor,
            action: "user.create",
            target_type: "user",
            target_id: &user.id,
            summary: json!({ "after": users::summary(&user) }),
            origin: &principal.origin,
        },
    )
    .await?;
    tx.commit().await?;
    Ok((StatusCode::CREATED, ResponseJson(user.public())))
}

/// List tenants. Platform admins only.
#[utoipa::path(get, path = "/tenants", tag = "tenants",
    description = "Requires: platform admin (`PlatformAdmin`).",
    params(PageParams),
    responses((status = 200, body = Page<Tenant>)))]
pub async fn list_tenants(
    State(state): State<AppState>,
    _platform_admin: Authorized<PlatformAdmin>,
    Query(page): Query<PageParams>,
) -> Result<ResponseJson<Page<Tenant>>, ApiError> {
    let limit = page.limit()?;
    let rows: Vec<TenantRow> = with_pool!(&state.store, pool => {
        sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM tenants WHERE ($1 IS NULL OR id > $1) ORDER BY id LIMIT $2"
        )))
        .bind(&page.cursor)
        .bind(i64::from(limit) + 1)
        .fetch_all(pool)
        .await
    })?;
    let items = rows.into_iter().map(Tenant::from).collect();
    Ok(ResponseJson(Page::from_overfetch(
        items,
        limit,
        |t: &Tenant| t.id.clone(),
    )))
}

/// Get a tenant: platform admins any, tenant admins their own.
#[utoipa::path(get, path = "/tenants/{id}", tag = "tenants",
    description = "Requires: admin (`TenantAdmin`); other tenants than one's own need platform admin.",
    params(("id" = String, Path)),
    responses((status = 200, body = Tenant), (status = 404, body = crate::http::error::ErrorBody)))]
pub async fn get_tenant(
    State(state): State<AppState>,
    Authorized(principal, ..): Authorized<TenantAdmin>,
    Path(id): Path<String>,
) -> Result<ResponseJson<Tenant>, ApiError> {
    if !principal.platform_admin && principal.tenant_id != id {
        return Err(AuthError::NotFound("tenant").into());
    }
    let tenant = find(&state.store, &id)
        .await?
        .ok_or(AuthError::NotFound("tenant"))?;
    Ok(ResponseJson(tenant))
}

/// Update a tenant's name, status or admin IP allow-list.
#[utoipa::path(patch, path = "/tenants/{id}", tag = "tenants",
    description = "Requires: admin (`TenantAdmin`) of the tenant, or platform admin; `status` needs platform admin.",
    params(("id" = String, Path)), request_body = UpdateTenant,
    responses((status = 200, body = Tenant), (status = 404, body = crate::http::error::ErrorBody), (status = 422, body = crate::http::error::ErrorBody)))]
pub async fn update_tenant(
    State(state): State<AppState>,
    Authorized(principal, ..): Authorized<TenantAdmin>,
    Path(id): Path<String>,
    Json(body): Json<UpdateTenant>,
) -> Result<ResponseJson<Tenant>, ApiError> {
    if !principal.platform_admin && principal.tenant_id != id {
        return Err(AuthError::NotFound("tenant").into());
    }
    if body.status.is_some() && !principal.platform_admin {
        return Err(AuthError::Forbidden(
            "only platform administrators may change a tenant's status",
        )
        .into());
    }
    let before = find(&state.store, &id)
        .await?
        .ok_or(AuthError::NotFound("tenant"))?;
    let mut after = before.clone();
    if let Some(name) = &body.name {
        after.name = validate_name("name", name)?;
    }
    if let Some(status) = &body.status {
        if !matches!(status.as_str(), "active" | "suspended") {
            return Err(ApiError::invalid_field(
                "status",
                "must be active or suspended",
            ));
        }
        after.status = status.clone();
    }
    if let Some(list) = &body.ip_allowlist {
        after.ip_allowlist = validate_allowlist(list)?;
    }
    after.updated_at = crate::clock::now();
    let mut tx = state.store.begin().await?;
    with_tx!(&mut tx, conn => {
        sqlx::query("UPDATE tenants SET name = $1, status = $2, ip_allowlist = $3, updated_at = $4 WHERE id = $5")
            .bind(&after.name)
            .bind(&after.status)
            .bind(json!(after.ip_allowlist).to_string())
            .bind(after.updated_at)
            .bind(&id)
            .execute(conn)
            .await
            .map(|_| ())
    })?;
    audit::append(
        &mut tx,
        Event {
            tenant_id: &id,
            actor: &principal.actor,
            action: "tenant.update",
            target_type: "tenant",
            target_id: &id,
            summary: json!({
                "before": { "name": before.name, "status": before.status, "ip_allowlist": before.ip_allowlist },
                "after": { "name": after.name, "status": after.status, "ip_allowlist": after.ip_allowlist },
            }),
            origin: &principal.origin,
        },
    )
    .await?;
    tx.commit().await?;
    Ok(ResponseJson(after))
}
