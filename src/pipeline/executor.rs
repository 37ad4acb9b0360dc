//! Runs a pipeline job step by step. Each finished step is stored at once, so a job that is
//! resumed (after a crash, a retry or a suspension) starts at the first unfinished step and never
//! repeats one. A step that waits (a review, a timer) suspends the job without holding a worker.

use std::time::Duration;

use serde_json::{Map, Value, json};

use super::definition::{Definition, OnError, Step};
use super::steps::{self, StepRecord};
use super::tools::{ToolContext, ToolError, ToolResult};
use crate::app::AppState;
use crate::queue::Outcome;
use crate::queue::worker::JobContext;
use docket_rules::template::{self, Scope};

/// First delay between step retries; doubles each time, capped at 30 s.
const RETRY_BASE: Duration = Duration::from_millis(500);
const RETRY_CAP: Duration = Duration::from_secs(30);

/// Runs the pipeline in `job` (a task job whose task payload has `pipeline`).
pub async fn run(app: &AppState, job: &JobContext, definition: Definition) -> Outcome {
    let done = match steps::load(&app.store, &job.job_id).await {
        Ok(rows) => rows,
        Err(e) => return Outcome::Failed(format!("cannot read the pipeline's progress: {e}")),
    };
    let run = json!({
        "job_id": job.job_id,
        "task_id": job.task_id,
        "attempt": job.attempt,
        "scheduled_for": job.payload.get("scheduled_for"),
        "event": job.payload.get("event"),
    });
    let env_allowed = &app.config.pipeline_env_allowlist;
    let env = |name: &str| -> Option<String> {
        env_allowed
            .iter()
            .any(|n| n == name)
            .then(|| std::env::var(name).ok())
            .flatten()
    };
    let mut results: Map<String, Value> = Map::new();
    for (position, step) in definition.steps.iter().enumerate() {
        let previous = done.iter().find(|r| r.step_id == step.id);
        if let Some(record) = previous.filter(|r| r.is_settled()) {
            results.insert(step.save_as.clone(), record.result());
            continue;
        }
        let ctx = ToolContext {
            app: app.clone(),
            tenant_id: job.tenant_id.clone(),
            job_id: job.job_id.clone(),
            task_id: job.task_id.clone(),
            step_id: step.id.clone(),
            depth: crate::scheduler::tasks::call_depth(&job.payload),
            timeout: step_timeout(step),
        };
        let started_at = crate::clock::now();
        let mut record = StepRecord::new(job, step, position, started_at);
        // A step that was waiting continues from what it saved; anything else starts over.
        let attempt = match previous.filter(|r| r.status == "waiting") {
            Some(waiting) => {
                record.started_at = waiting.started_at;
                record.input = waiting.input.clone();
                let state = waiting.resume_state.clone().unwrap_or(Value::Null);
                let Some(tool) = app.tools.get(&step.uses) else {
                    return Outcome::FailedPermanently(format!("unknown tool {:?}", step.uses));
                };
                with_timeout(&ctx, tool.resume(&ctx, state)).await
            }
            None => {
                let scope = Scope {
                    params: &definition.params,
                    steps: &results,
                    run: &run,
                    now: started_at,
                    env: &env,
                };
                match should_run(step, &scope) {
                    Ok(false) => {
                        record.status = "skipped".to_owned();
                        record.finished_at = Some(crate::clock::now());
                        if let Err(e) = steps::save(&app.store, &record).await {
                            return Outcome::Failed(format!("cannot save step {}: {e}", step.id));
                        }
                        results.insert(step.save_as.clone(), record.result());
                        continue;
                    }
                    Ok(true) => match template::render(&step.with, &scope) {
                        Ok((input, secrets)) => {
                            record.input = Some(super::redact(&input, &secrets));
                            let (result, tries) = call_with_retries(app, &ctx, step, input).await;
                            record.attempts = tries;
                            result
                        }
                        Err(e) => Err(ToolError::permanent(e.message)),
                    },
                    Err(message) => Err(ToolError::permanent(message)),
                }
            }
        };
        record.attempts = record.attempts.max(1);
        match attempt {
            Ok(ToolResult::Done(output)) => {
                record.status = "succeeded".to_owned();
                record.output = Some(output.clone());
                record.finished_at = Some(crate::clock::now());
                if let Err(e) = steps::save(&app.store, &record).await {
                    return Outcome::Failed(format!("cannot save step {}: {e}", step.id));
                }
                results.insert(step.save_as.clone(), output);
            }
            Ok(ToolResult::Suspend(suspension)) => {
                record.status = "waiting".to_owned();
                record.resume_state = Some(suspension.state.clone());
                if let Err(e) = steps::save(&app.store, &record).await {
                    return Outcome::Failed(format!("cannot save step {}: {e}", step.id));
                }
                return Outcome::Suspended {
                    until: suspension.until,
                    wait_key: suspension.wait_key,
                    output: json!({ "waiting_at_step": step.id, "until": suspension.until }),
                };
            }
            Err(error) => {
                record.status = match step.on_error {
                    OnError::Continue => "failed_continued",
                    OnError::Fail => "failed",
                }
                .to_owned();
                record.error = Some(error.message.clone());
                record.finished_at = Some(crate::clock::now());
                if let Err(e) = steps::save(&app.store, &record).await {
                    return Outcome::Failed(format!("cannot save step {}: {e}", step.id));
                }
                if step.on_error == OnError::Fail {
                    return Outcome::FailedPermanently(format!(
                        "step {} ({}) failed: {}",
                        step.id, step.uses, error.message
                    ));
                }
                results.insert(step.save_as.clone(), record.result());
            }
        }
    }
    Outcome::Succeeded(json!({ "steps": results }))
}

fn step_timeout(step: &Step) -> Duration {
    Duration::from_secs(step.timeout_seconds.unwrap_or(300))
}

/// Evaluates the step's `if` over `{params, steps, run}`.
fn should_run(step: &Step, scope: &Scope) -> Result<bool, String> {
    let Some(condition) = &step.condition else {
        return Ok(true);
    };
    // Bounded again here: definitions saved before the bounds existed may hold anything.
    let expression = docket_rules::condition::compile(condition).map_err(|e| format!("if: {e}"))?;
    let data = json!({ "params": scope.params, "steps": scope.steps, "run": scope.run });
    let result = expression.search(data).map_err(|e| format!("if: {e}"))?;
    Ok(result.is_truthy())
}

async fn with_timeout(
    ctx: &ToolContext,
    work: super::tools::ToolFuture<'_>,
) -> Result<ToolResult, ToolError> {
    match tokio::time::timeout(ctx.timeout, work).await {
        Ok(result) => result,
        Err(_) => Err(ToolError::transient(format!(
            "timed out after {} s",
            ctx.timeout.as_secs()
        ))),
    }
}

/// Calls the step's tool, retrying transient errors up to `retry` times with backoff. Returns the
/// result and how many calls were made.
async fn call_with_retries(
    app: &AppState,
    ctx: &ToolContext,
    step: &Step,
    input: Value,
) -> (Result<ToolResult, ToolError>, u32) {
    let Some(tool) = app.tools.get(&step.uses) else {
        return (
            Err(ToolError::permanent(format!(
                "unknown tool {:?}",
                step.uses
            ))),
            0,
        );
    };
    let mut delay = RETRY_BASE;
    let mut tries = 0;
    loop {
        tries += 1;
        match with_timeout(ctx, tool.call(ctx, input.clone())).await {
            Err(e) if e.retryable && tries <= step.retry => {
                tracing::info!(step = %step.id, attempt = tries, error = %e.message, "step failed; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(RETRY_CAP);
            }
            Err(mut e) if tries > 1 => {
                e.message = format!("{} (after {tries} attempts)", e.message);
                return (Err(e), tries);
            }
            other => return (other, tries),
        }
    }
}
