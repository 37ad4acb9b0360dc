//! `review.request`: ask people for a decision. Creates a case through the policy engine and
//! suspends the pipeline (no worker held) until the case is decided; a case the policy decides
//! automatically continues at once. The step's result is `{case_id, state, decision, reviewers,
//! reason_codes, reason}` with `decision` one of `approved`, `rejected`, `returned` or `cancelled`.

use std::time::Duration;

use serde::Deserialize;
use serde_json::{Value, json};

use super::{
    Suspension, Tool, ToolContext, ToolError, ToolFuture, ToolResult, child_depth, parse_input,
    schema_of,
};
use crate::auth::principal::Principal;
use crate::cases::{self, CaseError, CaseRow};
use docket_rules::policy::engine::AiAssessment;

pub struct ReviewRequest {
    /// How often a waiting step looks at its case even without a wake-up.
    pub recheck: Duration,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReviewInput {
    /// Case type, e.g. `briefing` or `payment`.
    #[serde(rename = "type")]
    pub case_type: String,
    /// Defaults to one reference per job and step.
    pub reference: Option<String>,
    /// Decimal string; defaults to "0".
    pub amount: Option<String>,
    /// ISO 4217; defaults to XXX (no currency).
    pub currency: Option<String>,
    #[serde(default)]
    #[schema(value_type = Object, required = false)]
    pub subject: Value,
    pub ai_assessment: Option<AiAssessment>,
}

fn database(e: CaseError) -> ToolError {
    match e {
        CaseError::Database(e) => ToolError::transient(format!("database: {e}")),
        other => ToolError::permanent(other.to_string()),
    }
}

impl ReviewRequest {
    /// Done when the case is settled, otherwise wait for it.
    async fn settle(&self, ctx: &ToolContext, case: CaseRow) -> Result<ToolResult, ToolError> {
        if !case.is_final() {
            return Ok(ToolResult::Suspend(Suspension {
                until: crate::clock::now()
                    + chrono::Duration::from_std(self.recheck)
                        .unwrap_or(chrono::Duration::minutes(5)),
                wait_key: Some(cases::wait_key(&case.id)),
                state: json!({ "case_id": case.id }),
            }));
        }
        let history = cases::history(&ctx.app.store, &ctx.tenant_id, &case.id)
            .await
            .map_err(|e| ToolError::transient(format!("database: {e}")))?;
        let decisions: Vec<_> = history
            .iter()
            .filter(|h| h.decision.is_some() || h.action == "cancelled")
            .collect();
        // Under maker-checker both the maker (proposed) and the checker (confirmed) decided.
        let mut reviewers: Vec<&str> = Vec::new();
        for entry in &history {
            if matches!(entry.action.as_str(), "decided" | "proposed" | "confirmed")
                && !reviewers.contains(&entry.actor.as_str())
            {
                reviewers.push(entry.actor.as_str());
            }
        }
        let reason = decisions.last().and_then(|h| h.reason.clone());
        let decision = match case.state.as_str() {
            "approved" | "auto_approved" => "approved",
            "rejected" | "auto_rejected" => "rejected",
            "returned" => "returned",
            _ => "cancelled",
        };
        Ok(ToolResult::Done(json!({
            "case_id": case.id,
            "state": case.state,
            "decision": decision,
            "reason_codes": case.reason_codes(),
            "reviewers": reviewers,
            "reason": reason,
        })))
    }
}

impl Tool for ReviewRequest {
    fn name(&self) -> &'static str {
        "review.request"
    }

    fn description(&self) -> &'static str {
        "Ask people to decide: creates a case routed by the policy and waits for its decision."
    }

    fn input_schema(&self) -> Value {
        schema_of::<ReviewInput>()
    }

    fn call<'a>(&'a self, ctx: &'a ToolContext, input: Value) -> ToolFuture<'a> {
        Box::pin(async move {
            let input: ReviewInput = parse_input(input)?;
            let new_case = cases::http::NewCase {
                case_type: input.case_type,
                reference: input
                    .reference
                    .unwrap_or_else(|| format!("{}:{}", ctx.job_id, ctx.step_id)),
                amount: Value::String(input.amount.unwrap_or_else(|| "0".to_owned())),
                currency: input.currency.unwrap_or_else(|| "XXX".to_owned()),
                subject: input.subject,
                ai_assessment: input.ai_assessment,
            };
            let depth = child_depth(ctx)?;
            let principal = Principal::system(&ctx.tenant_id);
            // One key per job and step: a step repeated after a crash finds its case again.
            let key = format!("pipeline:{}:{}", ctx.job_id, ctx.step_id);
            let (case, _) = cases::http::submit(&ctx.app, &principal, new_case, Some(key), depth)
                .await
                .map_err(database)?;
            let row = cases::find(&ctx.app.store, &ctx.tenant_id, &case.id)
                .await
                .map_err(database)?;
            self.settle(ctx, row).await
        })
    }

    fn resume<'a>(&'a self, ctx: &'a ToolContext, state: Value) -> ToolFuture<'a> {
        Box::pin(async move {
            let case_id = state
                .get("case_id")
                .and_then(Value::as_str)
                .ok_or_else(|| ToolError::permanent("the saved review state is unreadable"))?;
            let row = cases::find(&ctx.app.store, &ctx.tenant_id, case_id)
                .await
                .map_err(database)?;
            self.settle(ctx, row).await
        })
    }
}
