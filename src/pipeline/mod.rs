//! Pipelines: a task's payload may hold declarative steps (`uses`, `with`, `save_as`, `if`,
//! `retry`, `timeout_seconds`, `on_error`) that the worker runs one by one with the tools in
//! [`tools`]. Templates (`${params.x}`, `${steps.id.path}`, …) feed results forward; JMESPath
//! conditions decide whether a step runs.

pub mod definition;
pub mod executor;
pub mod http;
pub mod steps;
pub mod tools;
pub mod usage;

use serde_json::{Map, Value};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub use definition::{Definition, DefinitionError};

use crate::queue::Outcome;
use crate::queue::worker::JobContext;

pub fn routes() -> OpenApiRouter<crate::app::AppState> {
    OpenApiRouter::new()
        .routes(routes!(http::list_tools))
        .routes(routes!(usage::get_usage))
}

/// Keys whose values are never stored or shown.
const SECRET_KEYS: &[&str] = &[
    "authorization",
    "proxy-authorization",
    "api_key",
    "apikey",
    "api-key",
    "x-api-key",
    "password",
    "secret",
    "token",
    "access_token",
    "refresh_token",
    "cookie",
    "set-cookie",
];

/// A copy of a step input fit for storing: values under secret-looking keys, and any text that
/// came from `${env.…}`, are replaced by `[redacted]`.
pub fn redact(value: &Value, secrets: &[String]) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| {
                    let secret = SECRET_KEYS.contains(&k.to_ascii_lowercase().as_str());
                    let v = if secret {
                        Value::String("[redacted]".to_owned())
                    } else {
                        redact(v, secrets)
                    };
                    (k.clone(), v)
                })
                .collect::<Map<_, _>>(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(|v| redact(v, secrets)).collect()),
        Value::String(text) => {
            let mut text = text.clone();
            for secret in secrets.iter().filter(|s| s.len() >= 4) {
                text = text.replace(secret.as_str(), "[redacted]");
            }
            Value::String(text)
        }
        other => other.clone(),
    }
}

/// The handler of task jobs: runs the task payload's pipeline, or hands the payload back for
/// tasks without one.
pub async fn run_task_job(job: JobContext) -> Outcome {
    let task_payload = job.payload.get("payload").cloned().unwrap_or(Value::Null);
    if task_payload.get("pipeline").is_none() {
        return Outcome::Succeeded(job.payload);
    }
    let Some(app) = job.app.clone() else {
        return Outcome::FailedPermanently(
            "this worker was started without the application, so it cannot run pipelines"
                .to_owned(),
        );
    };
    match Definition::from_payload(
        &task_payload,
        &app.tools,
        &app.config.pipeline_env_allowlist,
    ) {
        Ok(Some(definition)) => executor::run(&app, &job, definition).await,
        Ok(None) => Outcome::Succeeded(job.payload),
        // Validated when the task was saved; a tool removed since then lands here.
        Err(e) => Outcome::FailedPermanently(format!("the pipeline is not valid: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn secrets_are_redacted_by_key_and_by_origin() {
        let input = json!({
            "url": "https://api.test/?key=s3cr3t-value",
            "headers": { "Authorization": "Bearer abc", "Accept": "application/json" },
            "json": { "password": "hunter2", "note": ["s3cr3t-value"] },
        });
        let out = redact(&input, &["s3cr3t-value".to_owned()]);
        assert_eq!(out["url"], "https://api.test/?key=[redacted]");
        assert_eq!(out["headers"]["Authorization"], "[redacted]");
        assert_eq!(out["headers"]["Accept"], "application/json");
        assert_eq!(out["json"]["password"], "[redacted]");
        assert_eq!(out["json"]["note"][0], "[redacted]");
    }
}
