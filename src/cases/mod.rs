//! Cases: items that need a decision (a cheque, a payment, an agent's proposed action), routed by
//! the tenant's policy to an automatic decision or to the review queue, with their history and
//! attachments.
//!
//! States: `new → (auto_approved | auto_rejected | queued) → in_review → approved | rejected |
//! returned`, by way of `escalated` (supervisors), `pending_dual_control` (a proposal waiting for
//! its checker), and the parked states `on_hold` (until a time) and `needs_more_info` (until the
//! submitter adds information), which come back to the queue; `cancelled` from any open or parked
//! state. A case of a type with an assessment pipeline ([`assessment`]) waits in `assessing` until
//! the pipeline (or the sweep, when it fails) routes it. See `crate::review` for the actions. `new` only exists inside
//! the transaction that creates the case. Every change writes the case row, a history entry, an
//! audit record and an event in one transaction; the event reaches subscribers after the commit.

pub mod assessment;
pub mod attachments;
pub mod http;
pub mod views;

use std::fmt;

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::app::AppState;
use crate::auth::principal::Principal;
use crate::events::Envelope;
use crate::http::error::ApiError;
use crate::queue::Job;
use crate::store::{Store, Tx};
use crate::{with_pool, with_tx};
use docket_rules::policy::engine::{AiAssessment, CaseFacts};

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(http::create_case, http::list_cases))
        .routes(routes!(http::get_case))
        .routes(routes!(http::cancel_case))
        .routes(routes!(views::list_views))
        .merge(attachments::routes())
        .merge(assessment::routes())
}

/// States in which a case waits for, or is with, a person.
pub const OPEN_STATES: &str = "('queued', 'in_review', 'pending_dual_control', 'escalated')";

/// States in which a case waits for something outside the review queue (a time, information).
pub const PARKED_STATES: &str = "('on_hold', 'needs_more_info')";

/// Amounts are stored exactly as text and, for range filters, as an integer of 1/10,000 units.
pub const AMOUNT_SCALE: u32 = 4;

/// Why a case operation was refused. Mapped to HTTP once, below.
#[derive(Debug, thiserror::Error)]
pub enum CaseError {
    #[error("no such case")]
    NotFound,
    #[error("{field}: {message}")]
    Invalid { field: String, message: String },
    #[error("the case is {current}; it cannot be {attempted}")]
    IllegalTransition {
        current: String,
        attempted: &'static str,
    },
    #[error("{message}")]
    Forbidden { code: &'static str, message: String },
    #[error("{message}")]
    Conflict {
        code: &'static str,
        message: String,
        details: Value,
    },
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

impl CaseError {
    pub fn invalid(field: &str, message: impl Into<String>) -> Self {
        Self::Invalid {
            field: field.to_owned(),
            message: message.into(),
        }
    }

    pub fn forbidden(code: &'static str, message: impl Into<String>) -> Self {
        Self::Forbidden {
            code,
            message: message.into(),
        }
    }
}

impl From<CaseError> for ApiError {
    fn from(e: CaseError) -> Self {
        match e {
            CaseError::NotFound => ApiError::not_found("No such case."),
            CaseError::Invalid { field, message } => ApiError::invalid_field(&field, message),
            CaseError::IllegalTransition { current, attempted } => {
                ApiError::conflict(format!("The case is {current}; it cannot be {attempted}."))
                    .with_code("invalid_state")
                    .with_details(json!({ "state": current }))
            }
            CaseError::Forbidden { code, message } => ApiError::forbidden(message).with_code(code),
            CaseError::Conflict {
                code,
                message,
                details,
            } => ApiError::conflict(message)
                .with_code(code)
                .with_details(details),
            CaseError::Database(e) => ApiError::internal(e),
        }
    }
}

/// How a case stands against its deadline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum SlaStatus {
    /// Open and before its deadline.
    OnTrack,
    /// Open past its deadline, or decided after it.
    Breached,
    /// Decided in time (or decided automatically).
    Met,
}

impl SlaStatus {
    pub fn parse(value: &str) -> Option<Self> {
        match value {
            "on_track" => Some(Self::OnTrack),
            "breached" => Some(Self::Breached),
            "met" => Some(Self::Met),
            _ => None,
        }
    }
}

/// A case as the database holds it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct CaseRow {
    pub id: String,
    pub tenant_id: String,
    #[sqlx(rename = "type")]
    pub case_type: String,
    pub reference: String,
    pub amount: String,
    pub amount_e4: i64,
    pub currency: String,
    pub subject: String,
    pub ai_assessment: Option<String>,
    pub state: String,
    pub priority: String,
    pub priority_rank: i32,
    pub queue: String,
    pub required_role: String,
    pub required_rank: i32,
    pub dual_control: bool,
    pub sla_hours: i32,
    pub sla_due_at: DateTime<Utc>,
    pub sla_breached_at: Option<DateTime<Utc>>,
    pub policy_version: i32,
    pub policy_trace: String,
    pub submitted_by: String,
    /// The person who answers for the submission: the submitting user, or the creator of the API
    /// key that submitted it. `None` for cases Docket raised itself (pipelines).
    pub submitter_user_id: Option<String>,
    /// Where `ai_assessment` came from; only an assessment pipeline's may decide the case.
    pub ai_assessment_source: Option<String>,
    pub first_decision: Option<String>,
    pub first_decider: Option<String>,
    pub assignee_id: Option<String>,
    pub lease_expires_at: Option<DateTime<Utc>>,
    pub decision: Option<String>,
    pub decided_at: Option<DateTime<Utc>>,
    pub idempotency_key: Option<String>,
    pub request_hash: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub risk_level: String,
    /// JSON array of the policy's flags.
    pub flags: String,
    pub require_reason: bool,
    /// JSON array of the final decision's reason codes.
    pub reason_codes: String,
    /// The maker's proposal while the case is `pending_dual_control` (JSON).
    pub proposal: Option<String>,
    pub hold_until: Option<DateTime<Utc>>,
    pub resume_state: Option<String>,
    pub parked_at: Option<DateTime<Utc>>,
    /// The job of the assessment pipeline the case waits for (`assessing`) or was assessed by.
    pub assessment_job_id: Option<String>,
    /// The call depth of the pipeline step that raised the case (0 when a person or the API did):
    /// the jobs its events and its assessment start are this deep, so a loop through cases stops
    /// at `PIPELINE_CALL_DEPTH` like any other.
    pub call_depth: i32,
}

pub const COLUMNS: &str = "id, tenant_id, type, reference, amount, amount_e4, currency, subject, ai_assessment, \
    state, priority, priority_rank, queue, required_role, required_rank, dual_control, sla_hours, sla_due_at, \
    sla_breached_at, policy_version, policy_trace, submitted_by, first_decision, first_decider, assignee_id, \
    lease_expires_at, decision, decided_at, idempotency_key, request_hash, created_at, updated_at, risk_level, flags, \
    require_reason, reason_codes, proposal, hold_until, resume_state, parked_at, assessment_job_id, \
    submitter_user_id, ai_assessment_source, call_depth";

impl CaseRow {
    pub fn depth(&self) -> u32 {
        u32::try_from(self.call_depth).unwrap_or(0)
    }

    pub fn is_open(&self) -> bool {
        matches!(
            self.state.as_str(),
            "queued" | "in_review" | "pending_dual_control" | "escalated"
        )
    }

    /// Waiting outside the queue, for a time or for information.
    pub fn is_parked(&self) -> bool {
        matches!(self.state.as_str(), "on_hold" | "needs_more_info")
    }

    /// Decided (by people or policy) or cancelled: nothing more will happen to it.
    pub fn is_final(&self) -> bool {
        matches!(
            self.state.as_str(),
            "approved" | "rejected" | "returned" | "auto_approved" | "auto_rejected" | "cancelled"
        )
    }

    /// Whether `principal` may act for the submitter (cancel, answer a request for information):
    /// the submitter themselves, or a supervisor or admin.
    pub fn answers_to(&self, principal: &Principal) -> bool {
        self.submitted_by == principal.actor.to_string()
            || principal
                .role
                .is_some_and(|r| r >= crate::auth::Role::Supervisor)
    }

    /// Who holds the case right now (a lease that ran out holds nothing).
    pub fn holder(&self, now: DateTime<Utc>) -> Option<&str> {
        match (&self.assignee_id, self.lease_expires_at) {
            (Some(who), Some(until)) if until > now => Some(who),
            _ => None,
        }
    }

    pub fn amount(&self) -> Decimal {
        self.amount.parse().unwrap_or_default()
    }

    pub fn subject(&self) -> Value {
        serde_json::from_str(&self.subject).unwrap_or(Value::Null)
    }

    pub fn flags(&self) -> Vec<String> {
        serde_json::from_str(&self.flags).unwrap_or_default()
    }

    pub fn reason_codes(&self) -> Vec<String> {
        serde_json::from_str(&self.reason_codes).unwrap_or_default()
    }

    /// The case as a reviewer sees it at `now`: what maker-checker steps keep as evidence.
    pub fn evidence(&self) -> Value {
        json!({
            "type": self.case_type,
            "reference": self.reference,
            "amount": self.amount,
            "currency": self.currency,
            "subject": self.subject(),
            "risk_level": self.risk_level,
            "flags": self.flags(),
            "priority": self.priority,
            "policy_version": self.policy_version,
            "policy_trace": serde_json::from_str::<Value>(&self.policy_trace).unwrap_or(Value::Null),
            "ai_assessment": self.ai(),
        })
    }

    pub fn ai(&self) -> Option<AiAssessment> {
        self.ai_assessment
            .as_deref()
            .and_then(|a| serde_json::from_str(a).ok())
    }

    pub fn sla_status(&self, now: DateTime<Utc>) -> SlaStatus {
        if self.sla_breached_at.is_some() {
            return SlaStatus::Breached;
        }
        let pending = self.is_open() || self.is_parked();
        match self.decided_at {
            // A parked case's clock is stopped (its deadline moves on when it comes back).
            _ if self.is_parked() => SlaStatus::OnTrack,
            _ if pending && now >= self.sla_due_at => SlaStatus::Breached,
            _ if pending => SlaStatus::OnTrack,
            Some(at) if at > self.sla_due_at => SlaStatus::Breached,
            _ => SlaStatus::Met,
        }
    }

    pub fn assessment_source(&self) -> Option<AssessmentSource> {
        self.ai_assessment.as_ref()?;
        match self.ai_assessment_source.as_deref() {
            Some("pipeline") => Some(AssessmentSource::Pipeline),
            _ => Some(AssessmentSource::Submitted),
        }
    }

    /// Evaluates `policy` against this case's facts. Only an assessment pipeline's assessment is
    /// a fact: one sent with the case came from the submitter, who could otherwise approve their
    /// own case (or steer its routing) by claiming a high confidence.
    pub fn evaluate(
        &self,
        policy: &docket_rules::policy::Policy,
    ) -> docket_rules::policy::engine::Outcome {
        let subject = self.subject();
        let source = self.assessment_source();
        let ai = self
            .ai()
            .filter(|_| source == Some(AssessmentSource::Pipeline));
        policy.evaluate(&CaseFacts {
            case_type: &self.case_type,
            reference: &self.reference,
            amount: self.amount(),
            currency: &self.currency,
            subject: &subject,
            ai: ai.as_ref(),
            advisory_ai: source == Some(AssessmentSource::Submitted),
        })
    }
}

/// Where a case's AI assessment came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AssessmentSource {
    /// Sent with the case by its submitter: shown to people as advisory, never read by the
    /// policy, never decides the case.
    Submitted,
    /// Written by the case type's assessment pipeline (`cases.assess` in the job enqueued for
    /// this case): the policy may act on it.
    Pipeline,
}

impl AssessmentSource {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Submitted => "submitted",
            Self::Pipeline => "pipeline",
        }
    }
}

/// The maker's proposal under dual control, waiting for a checker.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Proposal {
    /// approve, reject or return.
    pub action: String,
    /// `user:<id>` of the maker.
    pub proposed_by: String,
    pub proposed_at: DateTime<Utc>,
    pub reason_codes: Vec<String>,
    pub reason: Option<String>,
    pub notes: Option<String>,
}

/// A case as the API shows it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Case {
    pub id: String,
    #[serde(rename = "type")]
    pub case_type: String,
    pub reference: String,
    /// Exact decimal string, as submitted.
    pub amount: String,
    /// ISO 4217 code.
    pub currency: String,
    #[schema(value_type = Object)]
    pub subject: Value,
    pub ai_assessment: Option<AiAssessment>,
    /// Where `ai_assessment` came from: `submitted` ones are advisory.
    pub ai_assessment_source: Option<AssessmentSource>,
    pub state: String,
    /// low, normal, high or urgent.
    pub priority: String,
    pub queue: String,
    /// Lowest role that may decide the case.
    pub required_role: String,
    /// Two different people must agree.
    pub dual_control: bool,
    pub sla_hours: i32,
    pub sla_due_at: DateTime<Utc>,
    pub sla_breached_at: Option<DateTime<Utc>>,
    pub sla_status: SlaStatus,
    /// The policy version that routed the case, and why (rules that fired, the reason).
    pub policy_version: i32,
    #[schema(value_type = Object)]
    pub policy_trace: Value,
    /// `user:<id>` or `api_key:<id>`.
    pub submitted_by: String,
    /// The user who answers for the submission: the submitter, or the creator of the submitting
    /// API key. They may not decide or check the case. `null` for cases Docket raised itself.
    pub submitter_user_id: Option<String>,
    /// low, medium, high or critical, from the policy.
    pub risk_level: String,
    /// The policy's flags, e.g. `UNUSUAL_AMOUNT`.
    pub flags: Vec<String>,
    /// A decision must carry at least one reason code.
    pub require_reason: bool,
    /// Under dual control, the maker's proposal while the case is `pending_dual_control`.
    pub proposal: Option<Proposal>,
    /// When an `on_hold` case comes back to the queue.
    pub hold_until: Option<DateTime<Utc>>,
    /// Since when an `on_hold` or `needs_more_info` case has been out of the queue (its SLA clock
    /// stopped then).
    pub parked_at: Option<DateTime<Utc>>,
    /// The job of the case type's assessment pipeline (its runs: `GET /runs?job_id=`), while the case is
    /// `assessing` and after.
    pub assessment_job_id: Option<String>,
    /// The user holding the case, while their lease lasts.
    pub assignee_id: Option<String>,
    pub lease_expires_at: Option<DateTime<Utc>>,
    pub decision: Option<String>,
    pub reason_codes: Vec<String>,
    pub decided_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl Case {
    pub fn from_row(row: CaseRow, now: DateTime<Utc>) -> Self {
        let sla_status = row.sla_status(now);
        let holder = row.holder(now).map(str::to_owned);
        let lease_expires_at = holder.as_ref().and(row.lease_expires_at);
        Self {
            subject: row.subject(),
            ai_assessment: row.ai(),
            ai_assessment_source: row.assessment_source(),
            policy_trace: serde_json::from_str(&row.policy_trace).unwrap_or(Value::Null),
            flags: row.flags(),
            reason_codes: row.reason_codes(),
            proposal: row
                .proposal
                .as_deref()
                .and_then(|p| serde_json::from_str::<Proposal>(p).ok()),
            sla_status,
            assignee_id: holder,
            lease_expires_at,
            id: row.id,
            case_type: row.case_type,
            reference: row.reference,
            amount: row.amount,
            currency: row.currency,
            state: row.state,
            priority: row.priority,
            queue: row.queue,
            required_role: row.required_role,
            dual_control: row.dual_control,
            sla_hours: row.sla_hours,
            sla_due_at: row.sla_due_at,
            sla_breached_at: row.sla_breached_at,
            policy_version: row.policy_version,
            submitted_by: row.submitted_by,
            submitter_user_id: row.submitter_user_id,
            decision: row.decision,
            decided_at: row.decided_at,
            created_at: row.created_at,
            updated_at: row.updated_at,
            risk_level: row.risk_level,
            require_reason: row.require_reason,
            hold_until: row.hold_until,
            parked_at: row.parked_at,
            assessment_job_id: row.assessment_job_id,
        }
    }
}

/// One entry of a case's history.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema, sqlx::FromRow)]
pub struct HistoryEntry {
    pub id: String,
    /// E.g. `created`, `assessment_requested`, `assessed`, `assessment_failed`, `routed`, `claimed`,
    /// `released`, `decided`, `escalated`, `sla_breached`.
    pub action: String,
    pub from_state: Option<String>,
    pub to_state: String,
    pub actor: String,
    pub decision: Option<String>,
    #[schema(value_type = Vec<String>)]
    #[sqlx(try_from = "Option<String>")]
    pub reason_codes: Codes,
    pub reason: Option<String>,
    pub notes: Option<String>,
    #[schema(value_type = Object)]
    #[sqlx(try_from = "String")]
    pub details: JsonText,
    pub created_at: DateTime<Utc>,
}

/// JSON kept as text in the database.
#[derive(Debug, Clone, Serialize)]
#[serde(transparent)]
pub struct JsonText(pub Value);

impl TryFrom<String> for JsonText {
    type Error = serde_json::Error;
    fn try_from(text: String) -> Result<Self, Self::Error> {
        serde_json::from_str(&text).map(Self)
    }
}

/// A JSON array of reason codes kept as text (or NULL for none).
#[derive(Debug, Clone, Default, Serialize)]
#[serde(transparent)]
pub struct Codes(pub Vec<String>);

impl TryFrom<Option<String>> for Codes {
    type Error = serde_json::Error;
    fn try_from(text: Option<String>) -> Result<Self, Self::Error> {
        text.map_or(Ok(Self::default()), |t| serde_json::from_str(&t).map(Self))
    }
}

/// What happened, for the history, the audit log and the event.
pub struct Change<'a> {
    pub action: &'static str,
    pub from_state: Option<&'a str>,
    pub actor: String,
    pub decision: Option<&'a str>,
    pub reason_codes: &'a [String],
    pub reason: Option<&'a str>,
    pub notes: Option<&'a str>,
    pub details: Value,
}

impl<'a> Change<'a> {
    pub fn new(
        action: &'static str,
        from_state: Option<&'a str>,
        actor: impl fmt::Display,
    ) -> Self {
        Self {
            action,
            from_state,
            actor: actor.to_string(),
            decision: None,
            reason_codes: &[],
            reason: None,
            notes: None,
            details: json!({}),
        }
    }
}

/// Loads a case of the tenant, locking its row on PostgreSQL (SQLite's write transaction already
/// excludes other writers).
pub async fn lock(
    tx: &mut Tx,
    store: &Store,
    tenant_id: &str,
    id: &str,
) -> Result<CaseRow, CaseError> {
    let sql = format!(
        "SELECT {COLUMNS} FROM cases WHERE tenant_id = $1 AND id = $2 {}",
        store.lock_rows()
    );
    let row: Option<CaseRow> = with_tx!(tx, conn => {
        sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(tenant_id).bind(id).fetch_optional(conn).await
    })?;
    row.ok_or(CaseError::NotFound)
}

pub async fn find(store: &Store, tenant_id: &str, id: &str) -> Result<CaseRow, CaseError> {
    let row: Option<CaseRow> = with_pool!(store, pool => {
        sqlx::query_as(sqlx::AssertSqlSafe(format!("SELECT {COLUMNS} FROM cases WHERE tenant_id = $1 AND id = $2")))
            .bind(tenant_id)
            .bind(id)
            .fetch_optional(pool)
            .await
    })?;
    row.ok_or(CaseError::NotFound)
}

pub async fn history(
    store: &Store,
    tenant_id: &str,
    case_id: &str,
) -> Result<Vec<HistoryEntry>, sqlx::Error> {
    with_pool!(store, pool => {
        sqlx::query_as(
            "SELECT id, action, from_state, to_state, actor, decision, reason_codes, reason, notes, details, created_at \
             FROM case_history WHERE tenant_id = $1 AND case_id = $2 ORDER BY id",
        )
        .bind(tenant_id)
        .bind(case_id)
        .fetch_all(pool)
        .await
    })
}

pub async fn insert(tx: &mut Tx, row: &CaseRow) -> Result<(), sqlx::Error> {
    with_tx!(tx, conn => {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "INSERT INTO cases ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, \
             $17, $18, $19, $20, $21, $22, $23, $24, $25, $26, $27, $28, $29, $30, $31, $32, $33, $34, $35, $36, $37, $38, \
             $39, $40, $41, $42, $43, $44)"
        )))
        .bind(&row.id)
        .bind(&row.tenant_id)
        .bind(&row.case_type)
        .bind(&row.reference)
        .bind(&row.amount)
        .bind(row.amount_e4)
        .bind(&row.currency)
        .bind(&row.subject)
        .bind(&row.ai_assessment)
        .bind(&row.state)
        .bind(&row.priority)
        .bind(row.priority_rank)
        .bind(&row.queue)
        .bind(&row.required_role)
        .bind(row.required_rank)
        .bind(row.dual_control)
        .bind(row.sla_hours)
        .bind(row.sla_due_at)
        .bind(row.sla_breached_at)
        .bind(row.policy_version)
        .bind(&row.policy_trace)
        .bind(&row.submitted_by)
        .bind(&row.first_decision)
        .bind(&row.first_decider)
        .bind(&row.assignee_id)
        .bind(row.lease_expires_at)
        .bind(&row.decision)
        .bind(row.decided_at)
        .bind(&row.idempotency_key)
        .bind(&row.request_hash)
        .bind(row.created_at)
        .bind(row.updated_at)
        .bind(&row.risk_level)
        .bind(&row.flags)
        .bind(row.require_reason)
        .bind(&row.reason_codes)
        .bind(&row.proposal)
        .bind(row.hold_until)
        .bind(&row.resume_state)
        .bind(row.parked_at)
        .bind(&row.assessment_job_id)
        .bind(&row.submitter_user_id)
        .bind(&row.ai_assessment_source)
        .bind(row.call_depth)
        .execute(conn)
        .await
        .map(|_| ())
    })
}

/// Writes back every column that can change after a case is created, so no path that changes a
/// case (a decision, the sweep, an assessment's routing) can leave part of it unsaved.
pub async fn save(tx: &mut Tx, row: &CaseRow) -> Result<(), sqlx::Error> {
    with_tx!(tx, conn => {
        sqlx::query(
            "UPDATE cases SET subject = $1, ai_assessment = $2, state = $3, priority = $4, priority_rank = $5, \
             queue = $6, required_role = $7, required_rank = $8, dual_control = $9, sla_hours = $10, \
             sla_due_at = $11, sla_breached_at = $12, policy_version = $13, policy_trace = $14, \
             first_decision = $15, first_decider = $16, assignee_id = $17, lease_expires_at = $18, \
             decision = $19, decided_at = $20, updated_at = $21, risk_level = $22, flags = $23, \
             require_reason = $24, reason_codes = $25, proposal = $26, hold_until = $27, \
             resume_state = $28, parked_at = $29, ai_assessment_source = $30 \
             WHERE tenant_id = $31 AND id = $32",
        )
        .bind(&row.subject)
        .bind(&row.ai_assessment)
        .bind(&row.state)
        .bind(&row.priority)
        .bind(row.priority_rank)
        .bind(&row.queue)
        .bind(&row.required_role)
        .bind(row.required_rank)
        .bind(row.dual_control)
        .bind(row.sla_hours)
        .bind(row.sla_due_at)
        .bind(row.sla_breached_at)
        .bind(row.policy_version)
        .bind(&row.policy_trace)
        .bind(&row.first_decision)
        .bind(&row.first_decider)
        .bind(&row.assignee_id)
        .bind(row.lease_expires_at)
        .bind(&row.decision)
        .bind(row.decided_at)
        .bind(row.updated_at)
        .bind(&row.risk_level)
        .bind(&row.flags)
        .bind(row.require_reason)
        .bind(&row.reason_codes)
        .bind(&row.proposal)
        .bind(row.hold_until)
        .bind(&row.resume_state)
        .bind(row.parked_at)
        .bind(&row.ai_assessment_source)
        .bind(&row.tenant_id)
        .bind(&row.id)
        .execute(conn)
        .await
        .map(|_| ())
    })
}

/// Records `change` (the case row must already hold its new state): history, audit record and the
/// `case.<action>` event with its event-triggered jobs. Returns the event and jobs to announce after
/// the commit.
pub async fn record(
    tx: &mut Tx,
    state: &AppState,
    principal: Option<&Principal>,
    row: &CaseRow,
    change: Change<'_>,
    now: DateTime<Utc>,
) -> Result<(Envelope, Vec<Job>), sqlx::Error> {
    with_tx!(tx, conn => {
        sqlx::query(
            "INSERT INTO case_history (id, tenant_id, case_id, action, from_state, to_state, actor, decision, reason, notes, details, \
             created_at, reason_codes) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
        )
        .bind(Uuid::now_v7().to_string())
        .bind(&row.tenant_id)
        .bind(&row.id)
        .bind(change.action)
        .bind(change.from_state)
        .bind(&row.state)
        .bind(&change.actor)
        .bind(change.decision)
        .bind(change.reason)
        .bind(change.notes)
        .bind(change.details.to_string())
        .bind(now)
        .bind((!change.reason_codes.is_empty()).then(|| json!(change.reason_codes).to_string()))
        .execute(conn)
        .await
        .map(|_| ())
    })?;
    let summary = json!({
        "from_state": change.from_state,
        "to_state": row.state,
        "decision": change.decision,
        "reason_codes": change.reason_codes,
        "reason": change.reason,
        "details": change.details,
    });
    let audit_action = format!("case.{}", change.action);
    match principal {
        Some(principal) => {
            principal
                .audit(tx, &audit_action, "case", &row.id, summary)
                .await?;
        }
        None => {
            crate::audit::append(
                tx,
                crate::audit::Event {
                    tenant_id: &row.tenant_id,
                    actor: &crate::audit::Actor::System,
                    action: &audit_action,
                    target_type: "case",
                    target_id: &row.id,
                    summary,
                    origin: &crate::audit::Origin::default(),
                },
            )
            .await?;
        }
    }
    let mut event = Envelope::internal(
        &row.tenant_id,
        &format!("case.{}", event_topic(change.action, &row.state)),
        json!({
            "case_id": row.id,
            "type": row.case_type,
            "reference": row.reference,
            "amount": row.amount,
            "currency": row.currency,
            "state": row.state,
            "from_state": change.from_state,
            "priority": row.priority,
            "decision": change.decision.or(row.decision.as_deref()),
            "reason_codes": change.reason_codes,
            "actor": change.actor,
        }),
    );
    event.occurred_at = now;
    let mut jobs = crate::events::record(tx, &state.queue.settings, &event, None, row.depth())
        .await?
        .unwrap_or_default();
    if row.is_final() {
        // Pipelines suspended on this case (`review.request`) continue.
        jobs.extend(crate::queue::wake_waiting(tx, &row.tenant_id, &wait_key(&row.id), now).await?);
    }
    Ok((event, jobs))
}

/// The key a job suspended until this case is decided waits on.
pub fn wait_key(case_id: &str) -> String {
    format!("case:{case_id}")
}

/// Decisions and routing are named after the state they lead to (`case.approved`,
/// `case.queued`, …) so consumers subscribe to outcomes; other changes after the action.
fn event_topic<'a>(action: &'a str, to_state: &'a str) -> &'a str {
    match action {
        "decided" | "confirmed" | "routed" | "escalated" | "cancelled" => to_state,
        other => other,
    }
}

/// Publishes what [`record`] prepared, once the transaction has committed.
pub fn announce(state: &AppState, recorded: Vec<(Envelope, Vec<Job>)>) {
    for (event, jobs) in recorded {
        state.events.publish(event);
        state.queue.enqueued(&jobs);
    }
}

/// Parses a decimal amount string for `currency`: no floats, no exponent, no more decimals than
/// the currency has (at most four).
pub fn parse_amount(text: &str, currency: &str) -> Result<(Decimal, i64), CaseError> {
    let iso = iso_currency::Currency::from_code(currency).ok_or_else(|| {
        CaseError::invalid("currency", "must be an ISO 4217 code such as USD or EUR")
    })?;
    let trimmed = text.trim();
    let max_units = i64::MAX / 10_i64.pow(AMOUNT_SCALE);
    let too_large = || CaseError::invalid("amount", format!("is too large: at most {max_units}"));
    let decimal_chars = !trimmed.is_empty()
        && trimmed
            .bytes()
            .all(|b| b.is_ascii_digit() || b == b'.' || b == b'-');
    let integer_digits = trimmed
        .trim_start_matches('-')
        .split('.')
        .next()
        .unwrap_or_default()
        .trim_start_matches('0')
        .len();
    if decimal_chars && integer_digits > max_units.to_string().len() {
        return Err(too_large());
    }
    let well_formed = decimal_chars && trimmed.len() <= 40;
    let amount: Decimal = well_formed
        .then(|| trimmed.parse().ok())
        .flatten()
        .ok_or_else(|| {
            CaseError::invalid("amount", "must be a decimal string such as \"1250.00\"")
        })?;
    if amount.is_sign_negative() {
        return Err(CaseError::invalid("amount", "must not be negative"));
    }
    let decimals = u32::from(iso.exponent().unwrap_or(4)).min(AMOUNT_SCALE);
    if amount.scale() > decimals && amount.normalize().scale() > decimals {
        return Err(CaseError::invalid(
            "amount",
            format!("{currency} amounts have at most {decimals} decimal places"),
        ));
    }
    let scaled = amount
        .checked_mul(Decimal::from(10_i64.pow(AMOUNT_SCALE)))
        .and_then(|v| i64::try_from(v.trunc()).ok())
        .ok_or_else(too_large)?;
    Ok((amount, scaled))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts_are_exact_and_respect_the_currency() {
        let (amount, scaled) = parse_amount("1234567890123.45", "USD").unwrap();
        assert_eq!(amount.to_string(), "1234567890123.45");
        assert_eq!(scaled, 12_345_678_901_234_500);
        assert_eq!(parse_amount("5000", "JPY").unwrap().1, 50_000_000);
        assert_eq!(parse_amount("0.1", "EUR").unwrap().1, 1_000);
        assert_eq!(parse_amount("1.500", "BHD").unwrap().1, 15_000);
        assert_eq!(
            parse_amount("12.50", "JPY").unwrap_err().to_string(),
            "amount: JPY amounts have at most 0 decimal places"
        );
        assert!(parse_amount("12.345", "USD").is_err());
        assert_eq!(
            parse_amount("12.3400", "USD").unwrap().1,
            123_400,
            "trailing zeros are fine"
        );
        for bad in ["", "1e5", "-5", "12,50", " ", "NaN", "1.2.3"] {
            assert!(parse_amount(bad, "USD").is_err(), "{bad:?}");
        }
        assert!(
            matches!(parse_amount("1", "XYZ"), Err(CaseError::Invalid { field, .. }) if field == "currency")
        );
        for huge in [
            "99999999999999999999",
            "922337203685478",
            &"9".repeat(60),
            &format!("1{}.5", "0".repeat(45)),
        ] {
            assert_eq!(
                parse_amount(huge, "USD").unwrap_err().to_string(),
                "amount: is too large: at most 922337203685477",
                "{huge}"
            );
        }
        assert!(parse_amount("922337203685477", "USD").is_ok());
        assert!(parse_amount("000000000000000000001.5", "USD").is_ok());
    }

    #[test]
    fn events_are_named_after_outcomes() {
        assert_eq!(event_topic("decided", "approved"), "approved");
        assert_eq!(event_topic("routed", "auto_rejected"), "auto_rejected");
        assert_eq!(event_topic("claimed", "in_review"), "claimed");
        assert_eq!(event_topic("sla_breached", "queued"), "sla_breached");
    }
}
