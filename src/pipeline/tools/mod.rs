//! The tools pipeline steps use (`uses`). Adding one is one file implementing [`Tool`] and one line
//! in [`Tools::builtin`]; `GET /tools` publishes each tool's input schema.

pub mod cases_assess;
pub mod http_request;
pub mod knowledge_search;
pub mod llm;
pub mod publish;
pub mod review;
pub mod run_task;
pub mod wait;

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::app::AppState;

/// What a tool's work future returns.
pub type ToolFuture<'a> = Pin<Box<dyn Future<Output = Result<ToolResult, ToolError>> + Send + 'a>>;

/// Where a step runs: the application, the tenant and job it belongs to, and its time budget.
#[derive(Clone)]
pub struct ToolContext {
    pub app: AppState,
    pub tenant_id: String,
    pub job_id: String,
    pub task_id: Option<String>,
    pub step_id: String,
    /// The job's call depth: jobs this step starts (`tasks.run`, `events.publish`) are one deeper.
    pub depth: u32,
    /// The step's timeout; tools that call out pass it on (the executor also enforces it).
    pub timeout: Duration,
}

/// How a step ended.
#[derive(Debug, Clone, PartialEq)]
pub enum ToolResult {
    /// The step's output, saved as `steps.<save_as>`.
    Done(Value),
    /// The step waits without holding a worker; see [`Tool::resume`].
    Suspend(Suspension),
}

/// A step parked until a time, or until a wake-up on `wait_key` (with `until` as a re-check).
#[derive(Debug, Clone, PartialEq)]
pub struct Suspension {
    pub until: DateTime<Utc>,
    pub wait_key: Option<String>,
    /// Kept with the step and handed to [`Tool::resume`].
    pub state: Value,
}

/// Why a step failed. `retryable` errors are retried per the step's `retry`; others fail at once.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{message}")]
pub struct ToolError {
    pub message: String,
    pub retryable: bool,
}

impl ToolError {
    /// A failure that may succeed on a retry (network, 5xx, timeouts).
    pub fn transient(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            retryable: true,
        }
    }

    /// A failure a retry cannot fix (bad input, refused host, budget exhausted).
    pub fn permanent(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            retryable: false,
        }
    }
}

/// One tool. Implementations are stateless; everything a call needs comes in `ctx` and `input`.
pub trait Tool: Send + Sync + 'static {
    /// Dotted name used in `uses`, e.g. `http.request`.
    fn name(&self) -> &'static str;

    /// One sentence for `GET /tools`.
    fn description(&self) -> &'static str;

    /// JSON Schema of `with` (object with `properties` and `required`); definitions are checked
    /// against its keys when a task is saved, the rendered input against the full type when run.
    fn input_schema(&self) -> Value;

    /// Runs the step with its rendered input.
    fn call<'a>(&'a self, ctx: &'a ToolContext, input: Value) -> ToolFuture<'a>;

    /// Continues a suspended step with the state it saved. May suspend again.
    fn resume<'a>(&'a self, _ctx: &'a ToolContext, _state: Value) -> ToolFuture<'a> {
        Box::pin(async {
            Err(ToolError::permanent(
                "this tool does not suspend, so it cannot resume",
            ))
        })
    }
}

/// The call depth of a job started by this step, or the error that fails the step when it would
/// be deeper than `PIPELINE_CALL_DEPTH` (a pipeline that starts itself, directly or by an event).
pub fn child_depth(ctx: &ToolContext) -> Result<u32, ToolError> {
    let limit = ctx.app.config.pipeline_call_depth;
    let depth = ctx.depth.saturating_add(1);
    if depth > limit {
        return Err(ToolError::permanent(format!(
            "call depth limit reached: this job is {} calls deep and PIPELINE_CALL_DEPTH is {limit}, \
             so it cannot start another job",
            ctx.depth
        )));
    }
    Ok(depth)
}

/// The JSON Schema of a type deriving `utoipa::ToSchema`, for [`Tool::input_schema`].
pub fn schema_of<T: utoipa::PartialSchema>() -> Value {
    serde_json::to_value(T::schema()).unwrap_or(Value::Null)
}

/// Parses a step's rendered input into the tool's input type; a mismatch is a permanent error
/// naming what is wrong.
pub fn parse_input<T: serde::de::DeserializeOwned>(input: Value) -> Result<T, ToolError> {
    serde_json::from_value(input).map_err(|e| ToolError::permanent(format!("invalid input: {e}")))
}

/// The tools a process knows, by name.
#[derive(Clone, Default)]
pub struct Tools {
    tools: BTreeMap<&'static str, Arc<dyn Tool>>,
}

impl Tools {
    pub fn builtin(config: &crate::config::Config) -> Self {
        let mut tools = Self::default();
        tools.add(wait::Wait);
        tools.add(review::ReviewRequest {
            recheck: Duration::from_secs(config.pipeline_wait_recheck_seconds),
        });
        tools.add(publish::PublishEvent);
        tools.add(run_task::RunTask);
        tools.add(cases_assess::CasesAssess);
        tools.add(knowledge_search::KnowledgeSearch);
        tools.add(llm::LlmChat);
        tools.add(llm::LlmEmbed);
        tools.add(http_request::HttpRequest::new(config));
        tools
    }

    pub fn add(&mut self, tool: impl Tool) {
        self.tools.insert(tool.name(), Arc::new(tool));
    }

    pub fn get(&self, name: &str) -> Option<Arc<dyn Tool>> {
        self.tools.get(name).cloned()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Arc<dyn Tool>> {
        self.tools.values()
    }

    pub fn names(&self) -> Vec<&'static str> {
        self.tools.keys().copied().collect()
    }
}
