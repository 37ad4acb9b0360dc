//! A tenant's reason codes (`GET/POST /reason-codes`, `PATCH /reason-codes/{code}`): the
//! standard justifications reviewers pick from (e.g. `NSF` "insufficient funds" for a returned
//! cheque), which actions each may justify, and whether it needs free-text notes as well.

use axum::Json as ResponseJson;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::Action;
use crate::app::AppState;
use crate::auth::principal::{Authorized, ManagePolicy, ReadCases};
use crate::cases::CaseError;
use crate::http::error::ApiError;
use crate::http::extract::Json;
use crate::store::Tx;
use crate::{with_pool, with_tx};

/// Most reason codes one decision may carry.
pub const MAX_PER_DECISION: usize = 10;
const MAX_CODE_CHARS: usize = 32;
const MAX_LABEL_CHARS: usize = 200;

/// A reason code as the API shows it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ReasonCode {
    pub code: String,
    pub label: String,
    /// The actions this code may justify.
    pub actions: Vec<Action>,
    /// A decision giving this code must also carry notes.
    pub requires_notes: bool,
    /// Inactive codes are kept for old decisions but may no longer be given.
    pub active: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(sqlx::FromRow)]
struct ReasonCodeRow {
    code: String,
    label: String,
    actions: String,
    requires_notes: bool,
    active: bool,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl From<ReasonCodeRow> for ReasonCode {
    fn from(row: ReasonCodeRow) -> Self {
        Self {
            actions: serde_json::from_str(&row.actions).unwrap_or_default(),
            code: row.code,
            label: row.label,
            requires_notes: row.requires_notes,
            active: row.active,
            created_at: row.created_at,
            updated_at: row.updated_at,
        }
    }
}

const COLUMNS: &str = "code, label, actions, requires_notes, active, created_at, updated_at";

/// Checks the reason codes given with `action` on a case: each must exist, be active and apply
/// to the action; a code that requires notes needs notes; a case whose policy requires a reason
/// needs at least one code.
pub async fn check(
    tx: &mut Tx,
    tenant_id: &str,
    action: Action,
    codes: &[String],
    notes: Option<&str>,
    case_requires_reason: bool,
) -> Result<(), CaseError> {
    if codes.is_empty() {
        return if case_requires_reason {
            Err(CaseError::invalid(
                "reason_codes",
                "this case's policy requires at least one reason code",
            ))
        } else {
            Ok(())
        };
    }
    let mut found = Vec::with_capacity(codes.len());
    for code in codes {
        let row: Option<ReasonCodeRow> = with_tx!(tx, conn => {
            sqlx::query_as(sqlx::AssertSqlSafe(format!(
                "SELECT {COLUMNS} FROM reason_codes WHERE tenant_id = $1 AND code = $2"
            )))
            .bind(tenant_id)
            .bind(code)
            .fetch_optional(conn)
            .await
        })?;
        let Some(row) = row.filter(|r| r.active) else {
            return Err(CaseError::invalid(
                "reason_codes",
                format!("{code} is not an active reason code of this tenant"),
            ));
        };
        found.push(ReasonCode::from(row));
    }
    if let Some(code) = found.iter().find(|c| !c.actions.contains(&action)) {
        return Err(CaseError::invalid(
            "reason_codes",
            format!("{} does not apply to {}", code.code, action.as_str()),
        ));
    }
    if notes.is_none()
        && let Some(code) = found.iter().find(|c| c.requires_notes)
    {
        return Err(CaseError::invalid(
            "notes",
            format!("are required with reason code {}", code.code),
        ));
    }
    Ok(())
}

/// Normalises the codes of a request: trimmed, without duplicates, in the order given.
pub fn normalise(codes: &[String]) -> Result<Vec<String>, ApiError> {
    if codes.len() > MAX_PER_DECISION {
        return Err(ApiError::invalid_field(
            "reason_codes",
            format!("at most {MAX_PER_DECISION} codes"),
        ));
    }
    let mut out: Vec<String> = Vec::with_capacity(codes.len());
    for code in codes {
        let code = code.trim();
        if code.is_empty() || code.len() > MAX_CODE_CHARS {
            return Err(ApiError::invalid_field(
                "reason_codes",
                format!("each code must be 1-{MAX_CODE_CHARS} characters"),
            ));
        }
        if !out.iter().any(|c| c == code) {
            out.push(code.to_owned());
        }
    }
    Ok(out)
}

fn valid_code(code: &str) -> Result<(), ApiError> {
    let ok = !code.is_empty()
        && code.len() <= MAX_CODE_CHARS
        && code
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(ApiError::invalid_field(
            "code",
            format!("must be 1-{MAX_CODE_CHARS} letters, digits, '_', '-' or '.'"),
        ))
    }
}

fn valid_label(label: &str) -> Result<String, ApiError> {
    let label = label.trim();
    if label.is_empty() || label.chars().count() > MAX_LABEL_CHARS {
        return Err(ApiError::invalid_field(
            "label",
            format!("must be 1-{MAX_LABEL_CHARS} characters"),
        ));
    }
    Ok(label.to_owned())
}

fn valid_actions(actions: &[Action]) -> Result<String, ApiError> {
    if actions.is_empty() {
        return Err(ApiError::invalid_field(
            "actions",
            "must name at least one action",
        ));
    }
    let mut sorted = actions.to_vec();
    sorted.sort_by_key(|a| a.as_str());
    sorted.dedup();
    Ok(json!(sorted).to_string())
}

#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ReasonCodeFilter {
    /// Only codes that apply to this action.
    pub action: Option<Action>,
    /// Include inactive codes (default false).
    pub include_inactive: Option<bool>,
}

/// The tenant's reason codes, by code.
#[utoipa::path(get, path = "/reason-codes", tag = "reviews",
    description = "Requires: any role (`ReadCases`), or an API key with `cases:read`.",
    params(ReasonCodeFilter),
    responses((status = 200, body = [ReasonCode])))]
pub async fn list_reason_codes(
    State(state): State<AppState>,
    Authorized(principal, ..): Authorized<ReadCases>,
    Query(filter): Query<ReasonCodeFilter>,
) -> Result<ResponseJson<Vec<ReasonCode>>, ApiError> {
    let rows: Vec<ReasonCodeRow> = with_pool!(&state.store, pool => {
        sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM reason_codes WHERE tenant_id = $1 AND ($2 OR active) ORDER BY code"
        )))
        .bind(&principal.tenant_id)
        .bind(filter.include_inactive.unwrap_or(false))
        .fetch_all(pool)
        .await
    })?;
    Ok(ResponseJson(
        rows.into_iter()
            .map(ReasonCode::from)
            .filter(|c| filter.action.is_none_or(|a| c.actions.contains(&a)))
            .collect(),
    ))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewReasonCode {
    /// 1-32 letters, digits, `_`, `-` or `.`; unique in the tenant.
    pub code: String,
    pub label: String,
    pub actions: Vec<Action>,
    #[serde(default)]
    pub requires_notes: bool,
}

/// Add a reason code.
#[utoipa::path(post, path = "/reason-codes", tag = "reviews",
    description = "Requires: admin (`ManagePolicy`).",
    request_body = NewReasonCode,
    responses((status = 201, body = ReasonCode), (status = 409, body = crate::http::error::ErrorBody),
               (status = 422, body = crate::http::error::ErrorBody)))]
pub async fn create_reason_code(
    State(state): State<AppState>,
    Authorized(principal, ..): Authorized<ManagePolicy>,
    Json(body): Json<NewReasonCode>,
) -> Result<(StatusCode, ResponseJson<ReasonCode>), ApiError> {
    let code = body.code.trim();
    valid_code(code)?;
    let label = valid_label(&body.label)?;
    let actions = valid_actions(&body.actions)?;
    let now = crate::clock::now();
    let mut tx = state.store.begin().await?;
    let inserted = with_tx!(&mut tx, conn => {
        sqlx::query(
            "INSERT INTO reason_codes (tenant_id, code, label, actions, requires_notes, active, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, TRUE, $6, $6) ON CONFLICT (tenant_id, code) DO NOTHING",
        )
        .bind(&principal.tenant_id)
        .bind(code)
        .bind(&label)
        .bind(&actions)
        .bind(body.requires_notes)
        .bind(now)
        .execute(conn)
        .await
        .map(|done| done.rows_affected())
    })?;
    if inserted == 0 {
        tx.rollback().await?;
        return Err(
            ApiError::conflict(format!("The reason code {code} already exists."))
                .with_code("reason_code_exists"),
        );
    }
    let created = fetch(&mut tx, &principal.tenant_id, code).await?;
    principal
        .audit(
            &mut tx,
            "reason_code.created",
            "reason_code",
            code,
            json!(created),
        )
        .await?;
    tx.commit().await?;
    Ok((StatusCode::CREATED, ResponseJson(created)))
}

async fn fetch(tx: &mut Tx, tenant_id: &str, code: &str) -> Result<ReasonCode, ApiError> {
    let row: Option<ReasonCodeRow> = with_tx!(tx, conn => {
        sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM reason_codes WHERE tenant_id = $1 AND code = $2"
        )))
        .bind(tenant_id)
        .bind(code)
        .fetch_optional(conn)
        .await
    })?;
    row.map(ReasonCode::from)
        .ok_or_else(|| ApiError::not_found("No such reason code."))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReasonCodeChange {
    pub label: Option<String>,
    pub actions: Option<Vec<Action>>,
    pub requires_notes: Option<bool>,
    pub active: Option<bool>,
}

/// Change a reason code (its code stays; deactivate instead of deleting, so past decisions keep
/// their meaning).
#[utoipa::path(patch, path = "/reason-codes/{code}", tag = "reviews",
    description = "Requires: admin (`ManagePolicy`).",
    params(("code" = String, Path)), request_body = ReasonCodeChange,
    responses((status = 200, body = ReasonCode), (status = 404, body = crate::http::error::ErrorBody),
               (status = 422, body = crate::http::error::ErrorBody)))]
pub async fn update_reason_code(
    State(state): State<AppState>,
    Authorized(principal, ..): Authorized<ManagePolicy>,
    Path(code): Path<String>,
    Json(body): Json<ReasonCodeChange>,
) -> Result<ResponseJson<ReasonCode>, ApiError> {
    let label = body.label.as_deref().map(valid_label).transpose()?;
    let actions = body.actions.as_deref().map(valid_actions).transpose()?;
    let now = crate::clock::now();
    let mut tx = state.store.begin().await?;
    let before = fetch(&mut tx, &principal.tenant_id, &code).await?;
    with_tx!(&mut tx, conn => {
        sqlx::query(
            "UPDATE reason_codes SET label = COALESCE($1, label), actions = COALESCE($2, actions), \
             requires_notes = COALESCE($3, requires_notes), active = COALESCE($4, active), updated_at = $5 \
             WHERE tenant_id = $6 AND code = $7",
        )
        .bind(&label)
        .bind(&actions)
        .bind(body.requires_notes)
        .bind(body.active)
        .bind(now)
        .bind(&principal.tenant_id)
        .bind(&code)
        .execute(conn)
        .await
        .map(|_| ())
    })?;
    let after = fetch(&mut tx, &principal.tenant_id, &code).await?;
    principal
        .audit(
            &mut tx,
            "reason_code.updated",
            "reason_code",
            &code,
            json!({ "before": before, "after": after }),
        )
        .await?;
    tx.commit().await?;
    Ok(ResponseJson(after))
}
