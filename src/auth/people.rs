//! The tenant's directory of names: who the ids in cases, history and reports are. Anyone who may
//! read cases may read it, so every role sees "Ann Lee" where the API records `user:<id>`; it
//! holds names only (no email, role or status, which stay behind `users:read`).

use axum::Json as ResponseJson;
use axum::extract::State;
use serde::Serialize;

use super::principal::{Authorized, ReadCases};
use crate::app::AppState;
use crate::http::error::ApiError;
use crate::store::Store;
use crate::with_pool;

/// More names than any review team has; a tenant past it gets the newest ones.
const MAX_PEOPLE: i64 = 5_000;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Person {
    /// As other records name them: `user:<id>` or `api_key:<id>`.
    pub actor: String,
    pub id: String,
    /// The user's name (their email when they have none), or the API key's name.
    pub name: String,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Directory {
    pub users: Vec<Person>,
    pub api_keys: Vec<Person>,
}

/// Everyone and every API key of `tenant_id` by name, including people since removed: history
/// still names them.
pub async fn directory(store: &Store, tenant_id: &str) -> Result<Directory, sqlx::Error> {
    let users: Vec<(String, String, String)> = with_pool!(store, pool => {
        sqlx::query_as("SELECT id, name, email FROM users WHERE tenant_id = $1 ORDER BY id DESC LIMIT $2")
            .bind(tenant_id)
            .bind(MAX_PEOPLE)
            .fetch_all(pool)
            .await
    })?;
    let api_keys: Vec<(String, String)> = with_pool!(store, pool => {
        sqlx::query_as("SELECT id, name FROM api_keys WHERE tenant_id = $1 ORDER BY id DESC LIMIT $2")
            .bind(tenant_id)
            .bind(MAX_PEOPLE)
            .fetch_all(pool)
            .await
    })?;
    Ok(Directory {
        users: users
            .into_iter()
            .map(|(id, name, email)| Person {
                actor: format!("user:{id}"),
                name: if name.trim().is_empty() { email } else { name },
                id,
            })
            .collect(),
        api_keys: api_keys
            .into_iter()
            .map(|(id, name)| Person {
                actor: format!("api_key:{id}"),
                id,
                name,
            })
            .collect(),
    })
}

/// Names of the tenant's users and API keys, for showing people instead of ids.
#[utoipa::path(get, path = "/people", tag = "users",
    description = "Requires: viewer or above (`ReadCases`), or an API key with `cases:read`.",
    responses((status = 200, body = Directory)))]
pub async fn list_people(
    State(state): State<AppState>,
    Authorized(principal, ..): Authorized<ReadCases>,
) -> Result<ResponseJson<Directory>, ApiError> {
    Ok(ResponseJson(
        directory(&state.store, &principal.tenant_id).await?,
    ))
}
