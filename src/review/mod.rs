//! The review desk: reviewers claim the most urgent case they may take (under a lease) and act on
//! it — approve, reject, return, hold, escalate or ask for more information — with the tenant's
//! reason codes. Dual control is maker-checker: the first reviewer proposes, a different person
//! approves the proposal or sends it back. A periodic sweep marks SLA breaches (raising priority),
//! returns cases whose reviewer's lease ran out and brings held cases back when their hold ends.

pub mod http;
pub mod reason_codes;

use chrono::{DateTime, Duration, Utc};
use serde_json::json;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::app::AppState;
use crate::auth::principal::Principal;
use crate::cases::{self, CaseError, CaseRow, Change, OPEN_STATES, Proposal};
use crate::store::Tx;
use crate::with_tx;
use docket_rules::policy::engine::Priority;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(http::next))
        .routes(routes!(http::stats))
        .routes(routes!(http::claim))
        .routes(routes!(http::release))
        .routes(routes!(http::decide))
        .routes(routes!(http::check))
        .routes(routes!(http::add_information))
        .routes(routes!(http::reassign))
        .routes(routes!(
            reason_codes::list_reason_codes,
            reason_codes::create_reason_code
        ))
        .routes(routes!(reason_codes::update_reason_code))
}

/// Rank of the supervisor role, which escalated cases require.
const SUPERVISOR_RANK: i32 = 2;

/// What a reviewer does with a case they hold.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize, utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Final (a proposal under dual control).
    Approve,
    /// Final (a proposal under dual control).
    Reject,
    /// Final: sent back to the presenter, e.g. a cheque returned unpaid (a proposal under dual control).
    Return,
    /// Parks the case until `hold_until`.
    Hold,
    /// Sends the case to supervisors.
    Escalate,
    /// Parks the case until the submitter adds information.
    NeedsMoreInfo,
}

impl Action {
    pub const ALL: [Action; 6] = [
        Self::Approve,
        Self::Reject,
        Self::Return,
        Self::Hold,
        Self::Escalate,
        Self::NeedsMoreInfo,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Approve => "approve",
            Self::Reject => "reject",
            Self::Return => "return",
            Self::Hold => "hold",
            Self::Escalate => "escalate",
            Self::NeedsMoreInfo => "needs_more_info",
        }
    }

    pub fn parse(value: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.as_str() == value)
    }
}

/// The caller as the queue sees them: a user with a role.
pub struct Reviewer<'a> {
    pub principal: &'a Principal,
    pub user_id: &'a str,
    pub rank: i32,
}

impl<'a> Reviewer<'a> {
    pub fn of(principal: &'a Principal) -> Result<Self, CaseError> {
        let user_id = principal
            .user_id()
            .ok_or_else(|| CaseError::forbidden("people_only", "Only people review cases."))?;
        let rank = match principal.role {
            None | Some(crate::auth::Role::Viewer) => 0,
            Some(role) => cases::http::role_rank(role.as_str()),
        };
        Ok(Self {
            principal,
            user_id,
            rank,
        })
    }

    fn actor(&self) -> String {
        self.principal.actor.to_string()
    }

    /// Why this reviewer may not take `row`, if they may not.
    fn refusal(&self, row: &CaseRow) -> Option<CaseError> {
        if self.rank < row.required_rank {
            return Some(CaseError::forbidden(
                "role_required",
                format!("This case needs a {} or above.", row.required_role),
            ));
        }
        if row.submitted_by == self.actor()
            || row.submitter_user_id.as_deref() == Some(self.user_id)
        {
            return Some(CaseError::forbidden(
                "own_case",
                "You submitted this case; someone else must decide it.",
            ));
        }
        if row.first_decider.as_deref() == Some(self.user_id) {
            return Some(CaseError::forbidden(
                "same_reviewer",
                "Dual control: you made the first decision; a different person must make the second.",
            ));
        }
        None
    }
}

/// What [`cases::record`] prepared, to announce after the commit.
type Recorded = Vec<(crate::events::Envelope, Vec<crate::queue::Job>)>;

/// Gives `row` to `reviewer` under a fresh lease and records the claim (a reviewer re-claiming
/// their own case just extends the lease).
async fn take(
    tx: &mut Tx,
    state: &AppState,
    reviewer: &Reviewer<'_>,
    mut row: CaseRow,
    now: DateTime<Utc>,
) -> Result<(CaseRow, Recorded), CaseError> {
    let lease = Duration::from_std(state.config.review_lease).unwrap_or(Duration::minutes(30));
    let already_mine = row.holder(now) == Some(reviewer.user_id);
    let from = row.state.clone();
    if row.state == "queued" {
        row.state = "in_review".to_owned();
    }
    row.assignee_id = Some(reviewer.user_id.to_owned());
    row.lease_expires_at = Some(now + lease);
    row.updated_at = now;
    cases::save(tx, &row).await?;
    let mut recorded = Vec::new();
    if !already_mine {
        let mut change = Change::new("claimed", Some(&from), &reviewer.principal.actor);
        change.details = json!({ "lease_expires_at": row.lease_expires_at });
        recorded.push(cases::record(tx, state, Some(reviewer.principal), &row, change, now).await?);
    }
    Ok((row, recorded))
}

/// Claims the most urgent case the reviewer may take: priority, then SLA deadline, then age.
pub async fn next(
    state: &AppState,
    reviewer: &Reviewer<'_>,
    queue: Option<&str>,
    case_type: Option<&str>,
) -> Result<Option<CaseRow>, CaseError> {
    let now = crate::clock::now();
    let mut tx = state.store.begin().await?;
    // Ids are UUIDv7, so ordering by id is ordering by age (and matches the `cases_reviewable` index).
    let sql = format!(
        "SELECT {} FROM cases WHERE tenant_id = $1 AND state IN {OPEN_STATES} \
         AND (assignee_id IS NULL OR lease_expires_at <= $2) AND required_rank <= $3 \
         AND submitted_by <> $4 AND (first_decider IS NULL OR first_decider <> $5) \
         AND (submitter_user_id IS NULL OR submitter_user_id <> $5) \
         AND ($6 IS NULL OR queue = $6) AND ($7 IS NULL OR type = $7) \
         ORDER BY priority_rank DESC, sla_due_at, id LIMIT 1 {}",
        cases::COLUMNS,
        state.store.skip_locked()
    );
    let row: Option<CaseRow> = with_tx!(&mut tx, conn => {
        sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(&reviewer.principal.tenant_id)
            .bind(now)
            .bind(reviewer.rank)
            .bind(reviewer.actor())
            .bind(reviewer.user_id)
            .bind(queue)
            .bind(case_type)
            .fetch_optional(conn)
            .await
    })?;
    let Some(row) = row else {
        tx.commit().await?;
        return Ok(None);
    };
    let (row, recorded) = take(&mut tx, state, reviewer, row, now).await?;
    tx.commit().await?;
    cases::announce(state, recorded);
    Ok(Some(row))
}

/// Claims a given case.
pub async fn claim(
    state: &AppState,
    reviewer: &Reviewer<'_>,
    id: &str,
) -> Result<CaseRow, CaseError> {
    let now = crate::clock::now();
    let mut tx = state.store.begin().await?;
    let row = cases::lock(&mut tx, &state.store, &reviewer.principal.tenant_id, id).await?;
    if let Err(refusal) = claimable(&row, reviewer, now) {
        tx.rollback().await?;
        return Err(refusal);
    }
    let (row, recorded) = take(&mut tx, state, reviewer, row, now).await?;
    tx.commit().await?;
    cases::announce(state, recorded);
    Ok(row)
}

fn claimable(row: &CaseRow, reviewer: &Reviewer<'_>, now: DateTime<Utc>) -> Result<(), CaseError> {
    if !row.is_open() {
        return Err(CaseError::IllegalTransition {
            current: row.state.clone(),
            attempted: "claimed",
        });
    }
    if let Some(holder) = row.holder(now)
        && holder != reviewer.user_id
    {
        return Err(CaseError::Conflict {
            code: "held_by_another",
            message: "Another reviewer holds this case.".to_owned(),
            details: json!({ "assignee_id": holder, "lease_expires_at": row.lease_expires_at }),
        });
    }
    match reviewer.refusal(row) {
        Some(refusal) => Err(refusal),
        None => Ok(()),
    }
}

/// Hands a case back: a case in review returns to the queue; one awaiting its second review or
/// escalated stays so, just unassigned.
pub async fn release(
    state: &AppState,
    reviewer: &Reviewer<'_>,
    id: &str,
) -> Result<CaseRow, CaseError> {
    let now = crate::clock::now();
    let mut tx = state.store.begin().await?;
    let mut row = cases::lock(&mut tx, &state.store, &reviewer.principal.tenant_id, id).await?;
    if let Err(refusal) = ensure_holder(&row, reviewer, now, "released") {
        tx.rollback().await?;
        return Err(refusal);
    }
    let from = row.state.clone();
    if row.state == "in_review" {
        row.state = "queued".to_owned();
    }
    row.assignee_id = None;
    row.lease_expires_at = None;
    row.updated_at = now;
    cases::save(&mut tx, &row).await?;
    let change = Change::new("released", Some(&from), &reviewer.principal.actor);
    let recorded =
        cases::record(&mut tx, state, Some(reviewer.principal), &row, change, now).await?;
    tx.commit().await?;
    cases::announce(state, vec![recorded]);
    Ok(row)
}

fn ensure_holder(
    row: &CaseRow,
    reviewer: &Reviewer<'_>,
    now: DateTime<Utc>,
    attempted: &'static str,
) -> Result<(), CaseError> {
    if !row.is_open() {
        return Err(CaseError::IllegalTransition {
            current: row.state.clone(),
            attempted,
        });
    }
    if row.holder(now) != Some(reviewer.user_id) {
        return Err(CaseError::Conflict {
            code: "not_claimed",
            message: "Claim the case first; only the reviewer holding it may act on it.".to_owned(),
            details: json!({ "state": row.state }),
        });
    }
    Ok(())
}

/// What a reviewer asks for on a case they hold.
pub struct Decision<'a> {
    pub action: Action,
    pub reason_codes: &'a [String],
    pub reason: Option<&'a str>,
    pub notes: Option<&'a str>,
    /// For `hold`: when the case comes back to the queue.
    pub hold_until: Option<DateTime<Utc>>,
}

/// The longest a case may be put on hold.
const MAX_HOLD_DAYS: i64 = 90;

/// An action on a case the reviewer holds. `approve`, `reject` and `return` are final, except
/// under dual control, where they become a proposal waiting for a checker ([`check`]). `hold` and
/// `needs_more_info` park the case (its SLA clock stops) until a time or until the submitter adds
/// information ([`add_information`]); `escalate` sends it to supervisors.
pub async fn decide(
    state: &AppState,
    reviewer: &Reviewer<'_>,
    id: &str,
    decision: Decision<'_>,
) -> Result<CaseRow, CaseError> {
    let action = decision.action;
    if action != Action::Approve && decision.reason.is_none() && decision.reason_codes.is_empty() {
        return Err(CaseError::invalid(
            "reason",
            format!("a reason or reason code is required to {}", action.as_str()),
        ));
    }
    let now = crate::clock::now();
    match (action, decision.hold_until) {
        (Action::Hold, None) => {
            return Err(CaseError::invalid(
                "hold_until",
                "is required to hold a case",
            ));
        }
        (Action::Hold, Some(until))
            if until <= now || until > now + Duration::days(MAX_HOLD_DAYS) =>
        {
            return Err(CaseError::invalid(
                "hold_until",
                format!("must be in the future and at most {MAX_HOLD_DAYS} days ahead"),
            ));
        }
        (Action::Hold, Some(_)) | (_, None) => {}
        (_, Some(_)) => {
            return Err(CaseError::invalid(
                "hold_until",
                "is only for the hold action",
            ));
        }
    }
    let mut tx = state.store.begin().await?;
    let mut row = cases::lock(&mut tx, &state.store, &reviewer.principal.tenant_id, id).await?;
    let allowed = ensure_holder(&row, reviewer, now, "decided")
        .and_then(|()| reviewer.refusal(&row).map_or(Ok(()), Err))
        .and_then(|()| {
            if row.state == "pending_dual_control" {
                Err(CaseError::Conflict {
                    code: "pending_dual_control",
                    message:
                        "A decision is proposed and waits for its checker; confirm or send it \
                              back with POST /cases/{id}/check."
                            .to_owned(),
                    details: json!({ "state": row.state, "proposal": row.first_decision }),
                })
            } else if action == Action::Escalate && row.state == "escalated" {
                Err(CaseError::IllegalTransition {
                    current: row.state.clone(),
                    attempted: "escalated",
                })
            } else {
                Ok(())
            }
        });
    if let Err(refusal) = allowed {
        tx.rollback().await?;
        return Err(refusal);
    }
    if let Err(refusal) = reason_codes::check(
        &mut tx,
        &row.tenant_id,
        action,
        decision.reason_codes,
        decision.notes,
        row.require_reason,
    )
    .await
    {
        tx.rollback().await?;
        return Err(refusal);
    }
    let from = row.state.clone();
    row.assignee_id = None;
    row.lease_expires_at = None;
    row.updated_at = now;
    let mut change = Change::new("decided", Some(&from), &reviewer.principal.actor);
    change.decision = Some(action.as_str());
    change.reason_codes = decision.reason_codes;
    change.reason = decision.reason;
    change.notes = decision.notes;
    match action {
        Action::Escalate => {
            escalate(&mut row);
            change.action = "escalated";
        }
        Action::Hold => {
            park(&mut row, "on_hold", now);
            row.hold_until = decision.hold_until;
            change.action = "held";
            change.details = json!({ "hold_until": row.hold_until });
        }
        Action::NeedsMoreInfo => {
            park(&mut row, "needs_more_info", now);
            change.action = "information_requested";
        }
        // The maker's half of maker-checker: the case waits for a different person.
        _ if row.dual_control => {
            let proposal = Proposal {
                action: action.as_str().to_owned(),
                proposed_by: reviewer.actor(),
                proposed_at: now,
                reason_codes: decision.reason_codes.to_vec(),
                reason: decision.reason.map(str::to_owned),
                notes: decision.notes.map(str::to_owned),
            };
            row.resume_state = Some(resume_state(&from).to_owned());
            row.state = "pending_dual_control".to_owned();
            row.first_decision = Some(action.as_str().to_owned());
            row.first_decider = Some(reviewer.user_id.to_owned());
            row.proposal = Some(json!(proposal).to_string());
            change.action = "proposed";
            change.details = json!({ "evidence": row.evidence() });
        }
        _ => settle(&mut row, action, decision.reason_codes, now),
    }
    cases::save(&mut tx, &row).await?;
    let recorded =
        cases::record(&mut tx, state, Some(reviewer.principal), &row, change, now).await?;
    tx.commit().await?;
    cases::announce(state, vec![recorded]);
    Ok(row)
}

/// The checker's verdict on a proposal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum CheckVerdict {
    /// Apply the proposed action.
    Approve,
    /// Send the case back to review with the checker's notes.
    Reject,
}

/// The checker's half of maker-checker on a case they hold: approving applies the maker's
/// proposal; rejecting sends the case back to review (notes required, so the next reviewer knows
/// why). The checker must be a different person from the maker, with the case's required role.
pub async fn check(
    state: &AppState,
    checker: &Reviewer<'_>,
    id: &str,
    verdict: CheckVerdict,
    notes: Option<&str>,
) -> Result<CaseRow, CaseError> {
    if verdict == CheckVerdict::Reject && notes.is_none() {
        return Err(CaseError::invalid(
            "notes",
            "are required to send a proposal back",
        ));
    }
    let now = crate::clock::now();
    let mut tx = state.store.begin().await?;
    let mut row = cases::lock(&mut tx, &state.store, &checker.principal.tenant_id, id).await?;
    // Who may never check comes first: the maker or the submitter holding nothing is told why,
    // not asked to claim a case they can never take.
    let refusal = if row.state == "pending_dual_control" {
        checker
            .refusal(&row)
            .or_else(|| ensure_holder(&row, checker, now, "checked").err())
    } else {
        Some(CaseError::IllegalTransition {
            current: row.state.clone(),
            attempted: "checked",
        })
    };
    let proposed = row
        .proposal
        .as_deref()
        .and_then(|p| serde_json::from_str::<Proposal>(p).ok())
        .and_then(|p| Action::parse(&p.action).map(|action| (p, action)));
    let (proposal, action) = match (refusal, proposed) {
        (None, Some(proposed)) => proposed,
        (refusal, _) => {
            tx.rollback().await?;
            return Err(refusal.unwrap_or_else(|| CaseError::Conflict {
                code: "no_proposal",
                message: "This case holds no readable proposal to check.".to_owned(),
                details: json!({ "state": row.state }),
            }));
        }
    };
    let from = row.state.clone();
    row.assignee_id = None;
    row.lease_expires_at = None;
    row.updated_at = now;
    let evidence = row.evidence();
    let mut change = Change::new("confirmed", Some(&from), &checker.principal.actor);
    change.notes = notes;
    match verdict {
        CheckVerdict::Approve => {
            settle(&mut row, action, &proposal.reason_codes, now);
            change.details = json!({ "proposal": proposal, "evidence": evidence });
        }
        CheckVerdict::Reject => {
            row.state = row
                .resume_state
                .take()
                .unwrap_or_else(|| "queued".to_owned());
            row.first_decision = None;
            row.first_decider = None;
            row.proposal = None;
            change.action = "sent_back";
            change.details = json!({ "proposal": proposal, "evidence": evidence });
        }
    }
    cases::save(&mut tx, &row).await?;
    let recorded =
        cases::record(&mut tx, state, Some(checker.principal), &row, change, now).await?;
    tx.commit().await?;
    cases::announce(state, vec![recorded]);
    Ok(row)
}

/// Information the submitter adds to a case waiting for it.
pub struct Information<'a> {
    pub notes: &'a str,
    /// Keys to add to (or replace in) the case's subject.
    pub subject: Option<&'a serde_json::Map<String, serde_json::Value>>,
}

/// The submitter (or a supervisor) answers a `needs_more_info` request: the notes go into the
/// history, `subject` keys are merged into the case's subject, and the case returns to where it
/// was, its SLA deadline moved on by the time it waited. Routing is not re-evaluated: the policy
/// decided where the case goes when it arrived; the reviewer sees the new information.
pub async fn add_information(
    state: &AppState,
    principal: &Principal,
    id: &str,
    information: Information<'_>,
) -> Result<CaseRow, CaseError> {
    let now = crate::clock::now();
    let mut tx = state.store.begin().await?;
    let mut row = cases::lock(&mut tx, &state.store, &principal.tenant_id, id).await?;
    let refusal = if !row.answers_to(principal) {
        Some(CaseError::forbidden(
            "not_submitter",
            "Only the submitter or a supervisor may add information to a case.",
        ))
    } else if row.state != "needs_more_info" {
        Some(CaseError::IllegalTransition {
            current: row.state.clone(),
            attempted: "given information",
        })
    } else {
        None
    };
    if let Some(refusal) = refusal {
        tx.rollback().await?;
        return Err(refusal);
    }
    let from = row.state.clone();
    let mut keys = Vec::new();
    if let Some(added) = information.subject {
        let mut subject = row.subject();
        if let Some(map) = subject.as_object_mut() {
            for (key, value) in added {
                map.insert(key.clone(), value.clone());
                keys.push(key.clone());
            }
        }
        row.subject = subject.to_string();
        if row.subject.len() > 64 * 1024 {
            tx.rollback().await?;
            return Err(CaseError::invalid(
                "subject",
                "must stay within 64 KiB of JSON",
            ));
        }
    }
    unpark(&mut row, now);
    row.updated_at = now;
    cases::save(&mut tx, &row).await?;
    let mut change = Change::new("information_added", Some(&from), &principal.actor);
    change.notes = Some(information.notes);
    change.details = json!({ "subject_keys": keys, "sla_due_at": row.sla_due_at });
    let recorded = cases::record(&mut tx, state, Some(principal), &row, change, now).await?;
    tx.commit().await?;
    cases::announce(state, vec![recorded]);
    Ok(row)
}

/// A final decision: the case leaves the review desk (a confirmed proposal stays in the history).
fn settle(row: &mut CaseRow, action: Action, reason_codes: &[String], now: DateTime<Utc>) {
    row.state = match action {
        Action::Reject => "rejected",
        Action::Return => "returned",
        _ => "approved",
    }
    .to_owned();
    row.decision = Some(action.as_str().to_owned());
    row.reason_codes = json!(reason_codes).to_string();
    row.decided_at = Some(now);
    row.resume_state = None;
    row.proposal = None;
}

/// Where a case goes back to after a hold, a request for information or a proposal sent back:
/// escalated cases stay with supervisors, everything else returns to the queue.
fn resume_state(from: &str) -> &'static str {
    if from == "escalated" {
        "escalated"
    } else {
        "queued"
    }
}

/// Takes a case out of the queue; its SLA clock stops until [`unpark`].
fn park(row: &mut CaseRow, parked_state: &str, now: DateTime<Utc>) {
    row.resume_state = Some(resume_state(&row.state).to_owned());
    row.state = parked_state.to_owned();
    row.parked_at = Some(now);
}

/// Puts a parked case back where it was, its SLA deadline moved on by the time it was parked
/// (unless it had already been breached: a breach stays a breach).
fn unpark(row: &mut CaseRow, now: DateTime<Utc>) {
    if row.sla_breached_at.is_none()
        && let Some(parked_at) = row.parked_at
    {
        row.sla_due_at += now - parked_at;
    }
    row.state = row
        .resume_state
        .take()
        .unwrap_or_else(|| "queued".to_owned());
    row.parked_at = None;
    row.hold_until = None;
}

/// Gives an open case to another person, or back to the queue (`assignee_id` `None`): how a
/// supervisor moves work away from an absent or overloaded reviewer. The new holder gets a fresh
/// lease and must be someone who may decide the case.
pub async fn reassign(
    state: &AppState,
    supervisor: &Reviewer<'_>,
    id: &str,
    assignee_id: Option<&str>,
    reason: Option<&str>,
) -> Result<CaseRow, CaseError> {
    if supervisor.rank < SUPERVISOR_RANK {
        return Err(CaseError::forbidden(
            "supervisor_required",
            "Only supervisors and admins reassign cases.",
        ));
    }
    let tenant = &supervisor.principal.tenant_id;
    let assignee = match assignee_id {
        Some(user_id) => Some(
            crate::auth::users::find(&state.store, tenant, user_id)
                .await?
                .filter(|user| user.status == "active")
                .ok_or_else(|| {
                    CaseError::invalid("assignee_id", "is not an active user of this tenant")
                })?,
        ),
        None => None,
    };
    let now = crate::clock::now();
    let mut tx = state.store.begin().await?;
    let mut row = cases::lock(&mut tx, &state.store, tenant, id).await?;
    let refusal = if row.is_open() {
        let holder = row.holder(now);
        match &assignee {
            Some(user) if holder == Some(user.id.as_str()) => {
                Some(CaseError::invalid("assignee_id", "already holds this case"))
            }
            Some(user) => unsuitable(&row, user),
            None if holder.is_none() => Some(CaseError::invalid(
                "assignee_id",
                "nobody holds this case; name the person to give it to",
            )),
            None => None,
        }
    } else {
        Some(CaseError::IllegalTransition {
            current: row.state.clone(),
            attempted: "reassigned",
        })
    };
    if let Some(refusal) = refusal {
        tx.rollback().await?;
        return Err(refusal);
    }
    let from = row.state.clone();
    let previous = row.holder(now).map(str::to_owned);
    match &assignee {
        Some(user) => {
            let lease =
                Duration::from_std(state.config.review_lease).unwrap_or(Duration::minutes(30));
            if row.state == "queued" {
                row.state = "in_review".to_owned();
            }
            row.assignee_id = Some(user.id.clone());
            row.lease_expires_at = Some(now + lease);
        }
        None => {
            if row.state == "in_review" {
                row.state = "queued".to_owned();
            }
            row.assignee_id = None;
            row.lease_expires_at = None;
        }
    }
    row.updated_at = now;
    cases::save(&mut tx, &row).await?;
    let mut change = Change::new("reassigned", Some(&from), &supervisor.principal.actor);
    change.reason = reason;
    change.details = json!({
        "from": previous,
        "to": row.assignee_id,
        "lease_expires_at": row.lease_expires_at,
    });
    let recorded = cases::record(
        &mut tx,
        state,
        Some(supervisor.principal),
        &row,
        change,
        now,
    )
    .await?;
    tx.commit().await?;
    cases::announce(state, vec![recorded]);
    Ok(row)
}

/// Why `user` may not be given `row` (the rules [`Reviewer::refusal`] applies to a claim).
fn unsuitable(row: &CaseRow, user: &crate::auth::users::UserRow) -> Option<CaseError> {
    let role = user.role();
    let rank = match role {
        crate::auth::Role::Viewer => 0,
        other => cases::http::role_rank(other.as_str()),
    };
    let message = if rank < row.required_rank {
        format!(
            "is a {}; this case needs a {} or above",
            role.as_str(),
            row.required_role
        )
    } else if row.submitted_by == crate::audit::Actor::User(user.id.clone()).to_string()
        || row.submitter_user_id.as_deref() == Some(user.id.as_str())
    {
        "submitted this case; someone else must decide it".to_owned()
    } else if row.first_decider.as_deref() == Some(user.id.as_str()) {
        "made the first decision; dual control needs a different person for the second".to_owned()
    } else {
        return None;
    };
    Some(CaseError::invalid("assignee_id", message))
}

/// Sends a case to supervisors.
fn escalate(row: &mut CaseRow) {
    row.state = "escalated".to_owned();
    if row.required_rank < SUPERVISOR_RANK {
        row.required_rank = SUPERVISOR_RANK;
        row.required_role = "supervisor".to_owned();
    }
}

/// What one sweep did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Swept {
    pub breached: usize,
    pub leases_returned: usize,
    pub holds_ended: usize,
    /// Cases whose assessment pipeline failed or ran out of time, sent to people without it.
    pub assessments_failed: usize,
}

/// Marks open cases past their SLA as breached (raising their priority one step), returns cases
/// whose reviewer's lease ran out, ends holds, and sends cases whose assessment pipeline failed or
/// ran out of time to people. Safe to run in several processes at once: each case is
/// updated by whichever gets its row first, and only while the condition still holds.
pub async fn sweep(state: &AppState, now: DateTime<Utc>) -> Result<Swept, sqlx::Error> {
    let mut swept = Swept::default();
    loop {
        let mut tx = state.store.begin().await?;
        let sql = format!(
            "SELECT {} FROM cases WHERE sla_breached_at IS NULL AND state IN {OPEN_STATES} AND sla_due_at <= $1 \
             ORDER BY sla_due_at LIMIT 200 {}",
            cases::COLUMNS,
            state.store.skip_locked()
        );
        let due: Vec<CaseRow> = with_tx!(&mut tx, conn => {
            sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(now).fetch_all(conn).await
        })?;
        if due.is_empty() {
            break;
        }
        let mut recorded = Vec::with_capacity(due.len());
        for mut row in due {
            let raised = Priority::from_rank(row.priority_rank)
                .unwrap_or(Priority::Normal)
                .raised();
            let mut change = Change::new("sla_breached", Some(&row.state), "system");
            change.details = json!({
                "sla_due_at": row.sla_due_at,
                "priority": { "from": row.priority, "to": raised.as_str() },
            });
            row.sla_breached_at = Some(now);
            row.priority = raised.as_str().to_owned();
            row.priority_rank = raised.rank();
            row.updated_at = now;
            cases::save(&mut tx, &row).await?;
            recorded.push(cases::record(&mut tx, state, None, &row, change, now).await?);
        }
        tx.commit().await?;
        swept.breached += recorded.len();
        metrics::counter!("docket_sla_breaches_total").increment(recorded.len() as u64);
        cases::announce(state, recorded);
    }
    let mut tx = state.store.begin().await?;
    let sql = format!(
        "SELECT {} FROM cases WHERE state IN {OPEN_STATES} AND assignee_id IS NOT NULL AND lease_expires_at <= $1 \
         LIMIT 500 {}",
        cases::COLUMNS,
        state.store.skip_locked()
    );
    let lapsed: Vec<CaseRow> = with_tx!(&mut tx, conn => {
        sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(now).fetch_all(conn).await
    })?;
    let mut recorded = Vec::with_capacity(lapsed.len());
    for mut row in lapsed {
        let from = row.state.clone();
        let mut change = Change::new("lease_expired", Some(&from), "system");
        change.details = json!({ "assignee_id": row.assignee_id });
        if row.state == "in_review" {
            row.state = "queued".to_owned();
        }
        row.assignee_id = None;
        row.lease_expires_at = None;
        row.updated_at = now;
        cases::save(&mut tx, &row).await?;
        recorded.push(cases::record(&mut tx, state, None, &row, change, now).await?);
    }
    tx.commit().await?;
    swept.leases_returned = recorded.len();
    cases::announce(state, recorded);
    swept.holds_ended = end_holds(state, now).await?;
    swept.assessments_failed = cases::assessment::sweep(state, now).await?;
    Ok(swept)
}

/// Brings held cases whose hold ended back to where they were.
async fn end_holds(state: &AppState, now: DateTime<Utc>) -> Result<usize, sqlx::Error> {
    let mut ended = 0;
    loop {
        let mut tx = state.store.begin().await?;
        let sql = format!(
            "SELECT {} FROM cases WHERE state = 'on_hold' AND hold_until <= $1 ORDER BY hold_until LIMIT 200 {}",
            cases::COLUMNS,
            state.store.skip_locked()
        );
        let due: Vec<CaseRow> = with_tx!(&mut tx, conn => {
            sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(now).fetch_all(conn).await
        })?;
        if due.is_empty() {
            return Ok(ended);
        }
        let mut recorded = Vec::with_capacity(due.len());
        for mut row in due {
            let from = row.state.clone();
            let mut change = Change::new("hold_ended", Some(&from), "system");
            change.details = json!({ "hold_until": row.hold_until });
            unpark(&mut row, now);
            row.updated_at = now;
            cases::save(&mut tx, &row).await?;
            recorded.push(cases::record(&mut tx, state, None, &row, change, now).await?);
        }
        tx.commit().await?;
        ended += recorded.len();
        cases::announce(state, recorded);
    }
}

/// Runs [`sweep`] every `SLA_SWEEP_INTERVAL` until shutdown (scheduler role).
pub async fn sweep_loop(state: AppState) {
    let mut ticker = tokio::time::interval(state.config.sla_sweep_interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = state.shutdown.cancelled() => return,
            _ = ticker.tick() => {}
        }
        match sweep(&state, crate::clock::now()).await {
            Ok(swept) if swept != Swept::default() => {
                tracing::info!(
                    breached = swept.breached,
                    leases_returned = swept.leases_returned,
                    holds_ended = swept.holds_ended,
                    assessments_failed = swept.assessments_failed,
                    "review sweep"
                );
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "review sweep failed"),
        }
    }
}
