//! `events.publish`: publish an event (which may trigger event tasks), once per step.

use serde::Deserialize;
use serde_json::{Value, json};

use super::{
    Tool, ToolContext, ToolError, ToolFuture, ToolResult, child_depth, parse_input, schema_of,
};
use crate::events::{self, Envelope};

pub struct PublishEvent;

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PublishInput {
    /// Topic name, e.g. `orders.approved`.
    pub topic: String,
    #[serde(default)]
    #[schema(value_type = Object, required = false)]
    pub payload: Value,
    /// Defaults to one key per job and step, so a resumed pipeline never publishes twice.
    pub idempotency_key: Option<String>,
}

impl Tool for PublishEvent {
    fn name(&self) -> &'static str {
        "events.publish"
    }

    fn description(&self) -> &'static str {
        "Publish an event on a topic; tasks triggered by that topic get a job."
    }

    fn input_schema(&self) -> Value {
        schema_of::<PublishInput>()
    }

    fn call<'a>(&'a self, ctx: &'a ToolContext, input: Value) -> ToolFuture<'a> {
        Box::pin(async move {
            let input: PublishInput = parse_input(input)?;
            if !docket_rules::topic::is_valid_topic(&input.topic) {
                return Err(ToolError::permanent(
                    "topic must be 1-200 letters, digits or . _ - : /",
                ));
            }
            let depth = child_depth(ctx)?;
            let key = input
                .idempotency_key
                .unwrap_or_else(|| format!("pipeline:{}:{}", ctx.job_id, ctx.step_id));
            let app = &ctx.app;
            let mut event = Envelope::internal(&ctx.tenant_id, &input.topic, input.payload);
            event.source = "pipeline".to_owned();
            let failed = |e: sqlx::Error| ToolError::transient(format!("database: {e}"));
            let mut tx = app.store.begin().await.map_err(failed)?;
            let recorded = events::record(&mut tx, &app.queue.settings, &event, Some(&key), depth)
                .await
                .map_err(failed)?;
            if recorded.as_ref().is_some_and(|jobs| !jobs.is_empty()) {
                let quotas = crate::queue::quota::Quotas::from_config(&app.config);
                let refused = crate::queue::quota::check(
                    &mut tx,
                    quotas,
                    &ctx.tenant_id,
                    0,
                    event.occurred_at,
                )
                .await
                .map_err(failed)?;
                if let Some(refused) = refused {
                    return Err(ToolError::transient(refused.to_string()));
                }
            }
            tx.commit().await.map_err(failed)?;
            let duplicate = recorded.is_none();
            if let Some(jobs) = recorded {
                app.events.publish(event.clone());
                app.queue.enqueued(&jobs);
            }
            Ok(ToolResult::Done(json!({
                "event_id": event.id,
                "topic": event.topic,
                "duplicate": duplicate,
            })))
        })
    }
}
