//! `cases.assess`: an assessment pipeline's verdict on the case it was started for
//! (`${params.case.id}`). Writes the case's `ai_assessment` and routes the case by the policy in
//! force; the step's result is `{case_id, state, decision, priority, queue, reason}`. Repeating the
//! step after it succeeded returns the same routing.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value;

use super::{Tool, ToolContext, ToolError, ToolFuture, ToolResult, parse_input, schema_of};
use crate::cases::{CaseError, assessment};
use docket_rules::policy::engine::{AiAssessment, Citation, Recommendation};

pub struct CasesAssess;

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AssessInput {
    /// The case, usually `${params.case.id}`; it must be `assessing`.
    pub case_id: String,
    /// `approve` or `reject`.
    #[schema(inline)]
    pub recommendation: Recommendation,
    /// From 0 to 1.
    #[schema(minimum = 0, maximum = 1)]
    pub confidence: f64,
    #[serde(default)]
    pub reasons: Vec<String>,
    /// A few sentences for the reviewer.
    #[serde(default)]
    pub summary: Option<String>,
    /// Factor name → weight.
    #[serde(default)]
    pub factors: Option<BTreeMap<String, f64>>,
    /// Sources, e.g. from `knowledge.search`: `{document_id, chunk_id, snippet}`.
    #[serde(default)]
    #[schema(inline)]
    pub citations: Option<Vec<Citation>>,
}

impl Tool for CasesAssess {
    fn name(&self) -> &'static str {
        "cases.assess"
    }

    fn description(&self) -> &'static str {
        "Record an AI assessment of a case waiting for it and route the case by the policy."
    }

    fn input_schema(&self) -> Value {
        schema_of::<AssessInput>()
    }

    fn call<'a>(&'a self, ctx: &'a ToolContext, input: Value) -> ToolFuture<'a> {
        Box::pin(async move {
            let input: AssessInput = parse_input(input)?;
            let ai = AiAssessment {
                recommendation: input.recommendation,
                confidence: input.confidence,
                reasons: input.reasons,
                summary: input.summary,
                factors: input.factors,
                citations: input.citations,
            };
            let routed =
                assessment::assess(&ctx.app, &ctx.tenant_id, &ctx.job_id, &input.case_id, ai)
                    .await
                    .map_err(|e| match e {
                        CaseError::Database(e) => ToolError::transient(format!("database: {e}")),
                        other => ToolError::permanent(other.to_string()),
                    })?;
            serde_json::to_value(routed)
                .map(ToolResult::Done)
                .map_err(|e| ToolError::permanent(format!("cannot encode the output: {e}")))
        })
    }
}
