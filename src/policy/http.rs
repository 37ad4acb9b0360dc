//! `GET/PUT /policy`, `GET /policy/versions` and `POST /policy/simulate`.

use axum::Json as ResponseJson;
use axum::extract::State;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::app::AppState;
use crate::auth::principal::{Authorized, ManagePolicy};
use crate::cases::{self, CaseRow};
use crate::http::error::ApiError;
use crate::http::extract::Json;
use crate::with_pool;
use docket_rules::policy::engine::{AiAssessment, CaseFacts, Outcome, Policy, PolicyError};

/// A policy version.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct PolicyVersion {
    /// 0 is the default built from the environment, in force until an admin stores a policy.
    pub version: i32,
    /// `environment` or `tenant`.
    pub source: String,
    #[schema(schema_with = docket_rules::policy::schema::document)]
    pub document: Value,
    pub created_by: Option<String>,
    pub created_at: Option<DateTime<Utc>>,
}

impl From<super::Versioned> for PolicyVersion {
    fn from(v: super::Versioned) -> Self {
        Self {
            source: if v.version == 0 {
                "environment"
            } else {
                "tenant"
            }
            .to_owned(),
            version: v.version,
            document: v.policy.to_document(),
            created_by: v.created_by,
            created_at: v.created_at,
        }
    }
}

fn invalid_policy(e: PolicyError, prefix: &str) -> ApiError {
    ApiError::validation(format!(
        "The policy is invalid at {prefix}{}: {}",
        e.path, e.message
    ))
    .with_code("invalid_policy")
    .with_details(json!({ "path": format!("{prefix}{}", e.path), "message": e.message }))
}

/// The policy in force.
#[utoipa::path(get, path = "/policy", tag = "policy",
    description = "Requires: admin (`ManagePolicy`).",
    responses((status = 200, body = PolicyVersion)))]
pub async fn get_policy(
    State(state): State<AppState>,
    Authorized(principal, ..): Authorized<ManagePolicy>,
) -> Result<ResponseJson<PolicyVersion>, ApiError> {
    let mut tx = state.store.begin().await?;
    let current = super::current(&mut tx, &state.config, &principal.tenant_id).await?;
    tx.commit().await?;
    Ok(ResponseJson(current.into()))
}

/// Store a new policy version; it routes every case submitted from now on.
#[utoipa::path(put, path = "/policy", tag = "policy",
    description = "Requires: admin (`ManagePolicy`). A document that does not validate is 422 with the JSON pointer of the failing element in `details.path`.",
    request_body(content = ref("#/components/schemas/PolicyDocument"), description = "The new policy"),
    responses((status = 200, body = PolicyVersion), (status = 422, body = crate::http::error::ErrorBody)))]
pub async fn put_policy(
    State(state): State<AppState>,
    Authorized(principal, ..): Authorized<ManagePolicy>,
    Json(document): Json<Value>,
) -> Result<ResponseJson<PolicyVersion>, ApiError> {
    let policy = Policy::parse(&document).map_err(|e| invalid_policy(e, ""))?;
    let now = crate::clock::now();
    let created_by = principal.actor.to_string();
    let mut tx = state.store.begin().await?;
    let previous = super::current(&mut tx, &state.config, &principal.tenant_id).await?;
    let version = super::save(&mut tx, &principal.tenant_id, &policy, &created_by, now)
        .await
        .map_err(|e| {
            if e.as_database_error()
                .is_some_and(|d| d.is_unique_violation())
            {
                ApiError::conflict(
                    "Another policy version was stored at the same moment; reload and retry.",
                )
                .with_code("policy_changed")
            } else {
                ApiError::internal(e)
            }
        })?;
    principal
        .audit(
            &mut tx,
            "policy.update",
            "policy",
            &version.to_string(),
            json!({ "from_version": previous.version, "to_version": version, "document": policy.to_document() }),
        )
        .await?;
    tx.commit().await?;
    Ok(ResponseJson(PolicyVersion {
        version,
        source: "tenant".to_owned(),
        document: policy.to_document(),
        created_by: Some(created_by),
        created_at: Some(now),
    }))
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct PolicyVersions {
    /// Newest first; version 0 (the environment default) is always last.
    pub items: Vec<PolicyVersion>,
}

/// Every stored version of the policy.
#[utoipa::path(get, path = "/policy/versions", tag = "policy",
    description = "Requires: admin (`ManagePolicy`).",
    responses((status = 200, body = PolicyVersions)))]
pub async fn list_versions(
    State(state): State<AppState>,
    Authorized(principal, ..): Authorized<ManagePolicy>,
) -> Result<ResponseJson<PolicyVersions>, ApiError> {
    let rows: Vec<super::PolicyRow> = with_pool!(&state.store, pool => {
        sqlx::query_as(
            "SELECT version, document, created_by, created_at FROM policies WHERE tenant_id = $1 ORDER BY version DESC",
        )
        .bind(&principal.tenant_id)
        .fetch_all(pool)
        .await
    })?;
    let mut items: Vec<PolicyVersion> = rows
        .into_iter()
        .map(|row| row.into_versioned(&state.config).into())
        .collect();
    items.push(
        super::Versioned {
            version: 0,
            policy: super::environment_default(&state.config),
            created_by: None,
            created_at: None,
        }
        .into(),
    );
    Ok(ResponseJson(PolicyVersions { items }))
}

/// A case to simulate, given inline.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SimulatedCase {
    #[serde(rename = "type")]
    pub case_type: String,
    #[serde(default)]
    pub reference: String,
    /// Decimal string.
    pub amount: String,
    pub currency: String,
    #[serde(default)]
    #[schema(value_type = Object, required = false)]
    pub subject: Value,
    pub ai_assessment: Option<AiAssessment>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SimulateRequest {
    /// A draft policy document; the policy in force when omitted.
    #[schema(schema_with = docket_rules::policy::schema::optional_document)]
    pub policy: Option<Value>,
    /// Cases given inline.
    #[serde(default)]
    pub cases: Vec<SimulatedCase>,
    /// Stored cases by id. With neither `cases` nor `case_ids`, the 100 most recent stored cases.
    #[serde(default)]
    pub case_ids: Vec<String>,
}

/// How a stored case is routed today.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CurrentRouting {
    pub state: String,
    pub priority: String,
    pub dual_control: bool,
    pub policy_version: i32,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SimulatedResult {
    pub case_id: Option<String>,
    pub reference: String,
    /// What the draft policy would do, with the rules that fired and why.
    pub outcome: Outcome,
    /// For stored cases: how they were actually routed.
    pub current: Option<CurrentRouting>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SimulateResponse {
    pub results: Vec<SimulatedResult>,
}

/// Evaluate a draft (or the current) policy against given or stored cases; nothing changes.
#[utoipa::path(post, path = "/policy/simulate", operation_id = "simulate_policy", tag = "policy",
    description = "Requires: admin (`ManagePolicy`).",
    request_body = SimulateRequest,
    responses((status = 200, body = SimulateResponse), (status = 404, body = crate::http::error::ErrorBody), (status = 422, body = crate::http::error::ErrorBody)))]
pub async fn simulate(
    State(state): State<AppState>,
    Authorized(principal, ..): Authorized<ManagePolicy>,
    Json(body): Json<SimulateRequest>,
) -> Result<ResponseJson<SimulateResponse>, ApiError> {
    if body.cases.len() + body.case_ids.len() > 500 {
        return Err(ApiError::invalid_field(
            "cases",
            "at most 500 cases per simulation",
        ));
    }
    let policy = match &body.policy {
        Some(document) => Policy::parse(document).map_err(|e| invalid_policy(e, "/policy"))?,
        None => {
            let mut tx = state.store.begin().await?;
            let current = super::current(&mut tx, &state.config, &principal.tenant_id).await?;
            tx.commit().await?;
            current.policy
        }
    };
    let mut results = Vec::new();
    for (i, case) in body.cases.iter().enumerate() {
        let field = |name: &str| format!("cases[{i}].{name}");
        let (amount, _) =
            cases::parse_amount(&case.amount, &case.currency).map_err(|e| match e {
                cases::CaseError::Invalid { field: f, message } => {
                    ApiError::invalid_field(&field(&f), message)
                }
                other => other.into(),
            })?;
        if let Some(ai) = &case.ai_assessment {
            ai.validate()
                .map_err(|m| ApiError::invalid_field(&field("ai_assessment"), m))?;
        }
        let outcome = policy.evaluate(&CaseFacts {
            case_type: &case.case_type,
            reference: &case.reference,
            amount,
            currency: &case.currency,
            subject: &case.subject,
            ai: case.ai_assessment.as_ref(),
            advisory_ai: false,
        });
        results.push(SimulatedResult {
            case_id: None,
            reference: case.reference.clone(),
            outcome,
            current: None,
        });
    }
    let stored: Vec<CaseRow> = if body.case_ids.is_empty() && body.cases.is_empty() {
        with_pool!(&state.store, pool => {
            sqlx::query_as(sqlx::AssertSqlSafe(format!(
                "SELECT {} FROM cases WHERE tenant_id = $1 ORDER BY id DESC LIMIT 100",
                cases::COLUMNS
            )))
            .bind(&principal.tenant_id)
            .fetch_all(pool)
            .await
        })?
    } else {
        let mut rows = Vec::with_capacity(body.case_ids.len());
        for id in &body.case_ids {
            rows.push(cases::find(&state.store, &principal.tenant_id, id).await?);
        }
        rows
    };
    for row in stored {
        let outcome = row.evaluate(&policy);
        results.push(SimulatedResult {
            case_id: Some(row.id.clone()),
            reference: row.reference.clone(),
            outcome,
            current: Some(CurrentRouting {
                state: row.state,
                priority: row.priority,
                dual_control: row.dual_control,
                policy_version: row.policy_version,
            }),
        });
    }
    Ok(ResponseJson(SimulateResponse { results }))
}
