//! Operations the CLI performs directly against the database (no API, no token needed).

use serde_json::json;

use crate::audit::{self, Actor, Event, Origin, Verification};
use crate::auth::password::Hashing;
use crate::auth::users::{self, NewUser};
use crate::auth::{Role, tenants};
use crate::store::Store;
use crate::with_pool;

pub struct CreatedAdmin {
    pub email: String,
    pub tenant_slug: String,
    pub tenant_created: bool,
    pub platform_admin: bool,
}

/// Creates an admin user (and the tenant when missing), audited as done by the system. The very first
/// user of an install becomes a platform admin, so a fresh install can create tenants.
pub async fn create_admin(
    store: &Store,
    email: &str,
    tenant_slug: &str,
    name: Option<&str>,
    platform_admin: bool,
    password: &str,
) -> Result<CreatedAdmin, String> {
    let first_user: bool = with_pool!(store, pool => {
        sqlx::query_scalar("SELECT NOT EXISTS (SELECT 1 FROM users)").fetch_one(pool).await
    })
    .map_err(|e| e.to_string())?;
    let platform_admin = platform_admin || first_user;
    let existing = tenants::find_by_slug(store, tenant_slug)
        .await
        .map_err(|e| e.to_string())?;
    let origin = Origin::default();
    let mut tx = store.begin().await.map_err(|e| e.to_string())?;
    let (tenant_id, tenant_created) = match existing {
        Some(tenant) => (tenant.id, false),
        None => {
            let tenant = tenants::insert(&mut tx, tenant_slug, tenant_slug, &[])
                .await
                .map_err(|e| e.to_string())?;
            audit::append(
                &mut tx,
                Event {
                    tenant_id: &tenant.id,
                    actor: &Actor::System,
                    action: "tenant.create",
                    target_type: "tenant",
                    target_id: &tenant.id,
                    summary: json!({ "after": { "slug": tenant.slug }, "via": "cli" }),
                    origin: &origin,
                },
            )
            .await
            .map_err(|e| e.to_string())?;
            (tenant.id, true)
        }
    };
    // The CLI creates one user: one slot, and no hurry.
    let hashing = Hashing::new(1, std::time::Duration::from_secs(600));
    let user = users::insert(
        &mut tx,
        &hashing,
        NewUser {
            tenant_id: &tenant_id,
            email,
            name: name.unwrap_or(email),
            role: Role::Admin,
            platform_admin,
            password,
        },
    )
    .await
    .map_err(|e| e.to_string())?;
    audit::append(
        &mut tx,
        Event {
            tenant_id: &tenant_id,
            actor: &Actor::System,
            action: "user.create",
            target_type: "user",
            target_id: &user.id,
            summary: json!({ "after": { "email": user.email, "role": "admin", "platform_admin": platform_admin }, "via": "cli" }),
            origin: &origin,
        },
    )
    .await
    .map_err(|e| e.to_string())?;
    tx.commit().await.map_err(|e| e.to_string())?;
    Ok(CreatedAdmin {
        email: user.email,
        tenant_slug: tenant_slug.to_owned(),
        tenant_created,
        platform_admin,
    })
}

/// Verifies the chain of one tenant (by slug) or of every tenant plus the platform chain. Each
/// report comes with the name people know its chain by: the tenant's slug, or its id when the
/// tenant no longer exists (or for the platform chain).
pub async fn verify_audit(
    store: &Store,
    tenant_slug: Option<&str>,
) -> Result<Vec<(String, Verification)>, String> {
    let chains: Vec<(String, Option<String>)> = match tenant_slug {
        Some(slug) => {
            let tenant = tenants::find_by_slug(store, slug).await.map_err(|e| e.to_string())?;
            let tenant = tenant.ok_or_else(|| format!("no tenant with slug {slug:?}"))?;
            vec![(tenant.id, Some(tenant.slug))]
        }
        None => with_pool!(store, pool => {
            sqlx::query_as(
                "SELECT chains.tenant_id, tenants.slug FROM (SELECT DISTINCT tenant_id FROM audit_log) chains \
                 LEFT JOIN tenants ON tenants.id = chains.tenant_id ORDER BY chains.tenant_id",
            )
            .fetch_all(pool)
            .await
        })
        .map_err(|e| e.to_string())?,
    };
    let mut reports = Vec::with_capacity(chains.len());
    for (chain, slug) in chains {
        let report = audit::verify(store, &chain)
            .await
            .map_err(|e| e.to_string())?;
        reports.push((slug.unwrap_or(chain), report));
    }
    Ok(reports)
}
