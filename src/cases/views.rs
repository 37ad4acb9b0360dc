//! Who looked at which case, and when: every read of a case's detail or of one of its attachments
//! is recorded (compliance teams must be able to say who saw a customer's cheque). Lists and
//! searches are not views: they show a summary line, not the case.

use axum::Json as ResponseJson;
use axum::extract::{Path, Query, State};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::app::AppState;
use crate::auth::principal::{Authorized, ReadAudit};
use crate::http::error::ApiError;
use crate::store::Store;
use crate::{with_pool, with_writer};

/// Records that `actor` viewed the case (or, with `attachment_id`, one of its attachments).
pub async fn record(
    store: &Store,
    tenant_id: &str,
    case_id: &str,
    actor: &str,
    attachment_id: Option<&str>,
) -> Result<(), sqlx::Error> {
    let now = crate::clock::now();
    with_writer!(store, conn => {
        sqlx::query(
            "INSERT INTO case_views (id, tenant_id, case_id, actor, attachment_id, viewed_at) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(Uuid::now_v7().to_string())
        .bind(tenant_id)
        .bind(case_id)
        .bind(actor)
        .bind(attachment_id)
        .bind(now)
        .execute(conn)
        .await
        .map(|_| ())
    })
}

/// One view of a case.
#[derive(Debug, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct CaseView {
    /// `user:<id>` or `api_key:<id>`.
    pub actor: String,
    /// Set when an attachment was downloaded rather than the case opened.
    pub attachment_id: Option<String>,
    pub viewed_at: DateTime<Utc>,
}

#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ViewFilter {
    /// Only views by this actor (`user:<id>`).
    pub actor: Option<String>,
    /// Most recent first; 1-1000, default 200.
    pub limit: Option<u32>,
}

/// Who viewed a case and its attachments, most recent first.
#[utoipa::path(get, path = "/cases/{id}/views", tag = "cases",
    description = "Requires: supervisor or admin (`ReadAudit`), or an API key with `audit:read`.",
    params(("id" = String, Path), ViewFilter),
    responses((status = 200, body = [CaseView]), (status = 404, body = crate::http::error::ErrorBody),
               (status = 422, body = crate::http::error::ErrorBody)))]
pub async fn list_views(
    State(state): State<AppState>,
    Authorized(principal, ..): Authorized<ReadAudit>,
    Path(id): Path<String>,
    Query(filter): Query<ViewFilter>,
) -> Result<ResponseJson<Vec<CaseView>>, ApiError> {
    let limit = filter.limit.unwrap_or(200);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::invalid_field(
            "limit",
            "must be between 1 and 1000",
        ));
    }
    super::find(&state.store, &principal.tenant_id, &id).await?;
    let views: Vec<CaseView> = with_pool!(&state.store, pool => {
        sqlx::query_as(
            "SELECT actor, attachment_id, viewed_at FROM case_views \
             WHERE tenant_id = $1 AND case_id = $2 AND ($3 IS NULL OR actor = $3) \
             ORDER BY viewed_at DESC, id DESC LIMIT $4",
        )
        .bind(&principal.tenant_id)
        .bind(&id)
        .bind(&filter.actor)
        .bind(i64::from(limit))
        .fetch_all(pool)
        .await
    })?;
    Ok(ResponseJson(views))
}
