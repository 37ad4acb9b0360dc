//! `tasks.run`: start another task of the tenant now (once per step, even if resumed), unless it is
//! paused or the call depth limit is reached.

use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::{
    Tool, ToolContext, ToolError, ToolFuture, ToolResult, child_depth, parse_input, schema_of,
};
use crate::queue;
use crate::scheduler::tasks::{COLUMNS, TaskRow};
use crate::with_pool;

pub struct RunTask;

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RunTaskInput {
    pub task_id: String,
    /// Merged over the started task's pipeline `params`.
    #[serde(default)]
    #[schema(value_type = Object, required = false)]
    pub params: Map<String, Value>,
}

impl Tool for RunTask {
    fn name(&self) -> &'static str {
        "tasks.run"
    }

    fn description(&self) -> &'static str {
        "Start another task now, optionally overriding its pipeline params."
    }

    fn input_schema(&self) -> Value {
        schema_of::<RunTaskInput>()
    }

    fn call<'a>(&'a self, ctx: &'a ToolContext, input: Value) -> ToolFuture<'a> {
        Box::pin(async move {
            let input: RunTaskInput = parse_input(input)?;
            let depth = child_depth(ctx)?;
            let app = &ctx.app;
            let failed = |e: sqlx::Error| ToolError::transient(format!("database: {e}"));
            let task: Option<TaskRow> = with_pool!(&app.store, pool => {
                sqlx::query_as(sqlx::AssertSqlSafe(format!(
                    "SELECT {COLUMNS} FROM tasks WHERE tenant_id = $1 AND id = $2 AND status <> 'deleted'"
                )))
                .bind(&ctx.tenant_id)
                .bind(&input.task_id)
                .fetch_optional(pool)
                .await
            })
            .map_err(failed)?;
            let task = task.ok_or_else(|| {
                ToolError::permanent(format!("no task {:?} in this tenant", input.task_id))
            })?;
            if task.status == "paused" {
                return Err(ToolError::permanent(format!(
                    "task {:?} is paused; resume it to run it",
                    task.id
                )));
            }
            let now = crate::clock::now();
            let mut job = task.job_for(now);
            if !input.params.is_empty() {
                let params = &mut job.payload["payload"]["params"];
                if !params.is_object() {
                    *params = Value::Object(Map::new());
                }
                if let Value::Object(existing) = params {
                    existing.extend(input.params);
                }
            }
            TaskRow::set_call_depth(&mut job, depth);
            task.render_keys(&mut job);
            job.unique_key = Some(format!(
                "task:{}:pipeline:{}:{}",
                task.id, ctx.job_id, ctx.step_id
            ));
            let mut tx = app.store.begin().await.map_err(failed)?;
            let job = queue::enqueue(&mut tx, &app.queue.settings, job, now)
                .await
                .map_err(failed)?;
            let quotas = queue::quota::Quotas::from_config(&app.config);
            if let Some(refused) = queue::quota::check(&mut tx, quotas, &ctx.tenant_id, 0, now)
                .await
                .map_err(failed)?
            {
                return Err(ToolError::transient(refused.to_string()));
            }
            tx.commit().await.map_err(failed)?;
            app.queue.enqueued(std::slice::from_ref(&job));
            Ok(ToolResult::Done(
                json!({ "job_id": job.id, "task_id": task.id }),
            ))
        })
    }
}
