//! A pipeline as a task's payload declares it, validated when the task is saved:
//! `{"params": {...}, "pipeline": [{"id", "uses", "with", "save_as", "if", "retry",
//! "timeout_seconds", "on_error"}, ...]}`.

use std::collections::HashSet;

use serde_json::{Map, Value};

use super::tools::Tools;
use docket_rules::condition;
use docket_rules::template::{self, Expr, Segment};

pub const MAX_STEPS: usize = 100;
pub const MAX_RETRIES: u32 = 10;
pub const MAX_STEP_TIMEOUT_SECONDS: u64 = 86_400;

const STEP_KEYS: &[&str] = &[
    "id",
    "uses",
    "with",
    "save_as",
    "if",
    "retry",
    "timeout_seconds",
    "on_error",
];

/// What happens when a step fails after its retries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnError {
    /// The pipeline (and the job) fails.
    Fail,
    /// The step's result becomes `{"error": "…"}` and the pipeline goes on.
    Continue,
}

#[derive(Debug, Clone)]
pub struct Step {
    pub id: String,
    pub uses: String,
    pub with: Value,
    /// Where the output goes: `steps.<save_as>`. Defaults to the id.
    pub save_as: String,
    /// A JMESPath expression over `{params, steps, run}`; the step runs when it is truthy.
    pub condition: Option<String>,
    pub retry: u32,
    pub timeout_seconds: Option<u64>,
    pub on_error: OnError,
}

#[derive(Debug, Clone)]
pub struct Definition {
    pub params: Value,
    pub steps: Vec<Step>,
}

/// The OpenAPI components for a task payload, as [`Definition::from_payload`] reads it:
/// `TaskPayload` (any object; `params` and `pipeline` have meaning) and `PipelineStep`.
pub fn openapi_components() -> Vec<(String, utoipa::openapi::RefOr<utoipa::openapi::Schema>)> {
    use utoipa::openapi::schema::{AdditionalProperties, ArrayBuilder, ObjectBuilder, Type};
    use utoipa::openapi::{Ref, RefOr};

    let name = || {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .pattern(Some("^[A-Za-z0-9_-]{1,64}$"))
    };
    let step = ObjectBuilder::new()
        .schema_type(Type::Object)
        .description(Some("One step of a pipeline (docs/pipelines.md)."))
        .property("id", name().description(Some("Unique within the pipeline.")))
        .required("id")
        .property(
            "uses",
            ObjectBuilder::new()
                .schema_type(Type::String)
                .description(Some("The tool, one of `GET /tools`.")),
        )
        .required("uses")
        .property(
            "with",
            ObjectBuilder::new()
                .schema_type(Type::Object)
                .description(Some(
                    "The tool's inputs (its `input_schema`); string values may hold templates \
                     such as `${params.x}` or `${steps.fetch.body}`.",
                )),
        )
        .property(
            "save_as",
            name().description(Some("Where the output goes, `steps.<save_as>`; default the id.")),
        )
        .property(
            "if",
            ObjectBuilder::new()
                .schema_type(Type::String)
                .description(Some("A JMESPath expression over `{params, steps, run}`; the step runs when it is truthy.")),
        )
        .property(
            "retry",
            ObjectBuilder::new()
                .schema_type(Type::Integer)
                .minimum(Some(0))
                .maximum(Some(MAX_RETRIES)),
        )
        .property(
            "timeout_seconds",
            ObjectBuilder::new()
                .schema_type(Type::Integer)
                .minimum(Some(1))
                .maximum(Some(MAX_STEP_TIMEOUT_SECONDS)),
        )
        .property(
            "on_error",
            ObjectBuilder::new()
                .schema_type(Type::String)
                .enum_values(Some(["fail", "continue"]))
                .description(Some("`fail` (default) fails the job; `continue` saves `{\"error\": …}` and goes on.")),
        )
        .additional_properties(Some(AdditionalProperties::FreeForm(false)));
    let payload = ObjectBuilder::new()
        .schema_type(Type::Object)
        .description(Some(
            "A task's payload: handed to its jobs; with `pipeline`, the steps they run. Other \
             members are kept and passed on.",
        ))
        .property(
            "params",
            ObjectBuilder::new()
                .schema_type(Type::Object)
                .description(Some("Values the steps read as `${params.…}`.")),
        )
        .property(
            "pipeline",
            ArrayBuilder::new()
                .items(RefOr::Ref(Ref::from_schema_name("PipelineStep")))
                .min_items(Some(1))
                .max_items(Some(MAX_STEPS)),
        )
        .additional_properties(Some(AdditionalProperties::FreeForm(true)));
    vec![
        ("TaskPayload".to_owned(), RefOr::T(payload.into())),
        ("PipelineStep".to_owned(), RefOr::T(step.into())),
    ]
}

/// Where a payload field refers to [`openapi_components`].
pub fn payload_schema() -> utoipa::openapi::Ref {
    utoipa::openapi::Ref::from_schema_name("TaskPayload")
}

/// A validation failure, naming the field (e.g. `payload.pipeline[2].with.url`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct DefinitionError {
    pub field: String,
    pub message: String,
}

fn fail(field: impl Into<String>, message: impl Into<String>) -> DefinitionError {
    DefinitionError {
        field: field.into(),
        message: message.into(),
    }
}

fn is_name(text: &str) -> bool {
    !text.is_empty()
        && text.len() <= 64
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

impl Definition {
    /// The pipeline in a task payload, if it has one. `env_allowed` says which `${env.NAME}`
    /// variables may be used.
    pub fn from_payload(
        payload: &Value,
        tools: &Tools,
        env_allowed: &[String],
    ) -> Result<Option<Self>, DefinitionError> {
        let Some(pipeline) = payload.get("pipeline") else {
            return Ok(None);
        };
        let params = match payload.get("params") {
            None | Some(Value::Null) => Value::Object(Map::new()),
            Some(p @ Value::Object(_)) => p.clone(),
            Some(_) => return Err(fail("payload.params", "must be an object")),
        };
        let Value::Array(raw_steps) = pipeline else {
            return Err(fail("payload.pipeline", "must be an array of steps"));
        };
        if raw_steps.is_empty() || raw_steps.len() > MAX_STEPS {
            return Err(fail(
                "payload.pipeline",
                format!("must have 1-{MAX_STEPS} steps"),
            ));
        }
        let mut ids = HashSet::new();
        let mut saved = HashSet::new();
        let mut steps = Vec::with_capacity(raw_steps.len());
        for (index, raw) in raw_steps.iter().enumerate() {
            let at = format!("payload.pipeline[{index}]");
            let step = parse_step(raw, &at, tools)?;
            if !ids.insert(step.id.clone()) {
                return Err(fail(
                    format!("{at}.id"),
                    format!("{:?} is used twice", step.id),
                ));
            }
            // Templates may only look at results of earlier steps.
            for (source, expr) in template::expressions(&step.with)
                .map_err(|e| fail(format!("{at}.with"), e.message))?
            {
                check_reference(&source, &expr, &saved, env_allowed)
                    .map_err(|m| fail(format!("{at}.with"), m))?;
            }
            if !saved.insert(step.save_as.clone()) {
                return Err(fail(
                    format!("{at}.save_as"),
                    format!("{:?} is already used by an earlier step", step.save_as),
                ));
            }
            steps.push(step);
        }
        Ok(Some(Self { params, steps }))
    }
}

fn check_reference(
    source: &str,
    expr: &Expr,
    saved: &HashSet<String>,
    env_allowed: &[String],
) -> Result<(), String> {
    match expr {
        Expr::Path { root, path } if root == "steps" => match path.first() {
            Some(Segment::Key(step)) if saved.contains(step) => Ok(()),
            Some(Segment::Key(step)) => Err(format!(
                "${{{source}}} refers to {step:?}, which is not the result of an earlier step"
            )),
            _ => Err(format!("${{{source}}}: name a step, as in steps.<id>")),
        },
        Expr::Env(name) if !env_allowed.iter().any(|n| n == name) => Err(format!(
            "${{{source}}}: {name} is not in PIPELINE_ENV_ALLOWLIST"
        )),
        _ => Ok(()),
    }
}

fn parse_step(raw: &Value, at: &str, tools: &Tools) -> Result<Step, DefinitionError> {
    let Value::Object(map) = raw else {
        return Err(fail(at, "must be an object"));
    };
    if let Some(unknown) = map.keys().find(|k| !STEP_KEYS.contains(&k.as_str())) {
        return Err(fail(
            format!("{at}.{unknown}"),
            format!("unknown key; a step has {}", STEP_KEYS.join(", ")),
        ));
    }
    let text = |key: &str| -> Result<Option<&str>, DefinitionError> {
        match map.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(fail(format!("{at}.{key}"), "must be a string")),
        }
    };
    let id = text("id")?.ok_or_else(|| fail(format!("{at}.id"), "is required"))?;
    if !is_name(id) {
        return Err(fail(
            format!("{at}.id"),
            "must be 1-64 letters, digits, '_' or '-'",
        ));
    }
    let uses = text("uses")?.ok_or_else(|| fail(format!("{at}.uses"), "is required"))?;
    let tool = tools.get(uses).ok_or_else(|| {
        fail(
            format!("{at}.uses"),
            format!(
                "unknown tool {uses:?}; available: {}",
                tools.names().join(", ")
            ),
        )
    })?;
    let with = match map.get("with") {
        None | Some(Value::Null) => Value::Object(Map::new()),
        Some(w @ Value::Object(_)) => w.clone(),
        Some(_) => return Err(fail(format!("{at}.with"), "must be an object")),
    };
    check_keys(&with, &tool.input_schema(), &format!("{at}.with"))?;
    let save_as = text("save_as")?.unwrap_or(id);
    if !is_name(save_as) {
        return Err(fail(
            format!("{at}.save_as"),
            "must be 1-64 letters, digits, '_' or '-'",
        ));
    }
    let condition = text("if")?.map(str::to_owned);
    if let Some(expression) = &condition {
        condition::compile(expression).map_err(|e| fail(format!("{at}.if"), e.to_string()))?;
    }
    let number = |key: &str, max: u64| -> Result<Option<u64>, DefinitionError> {
        match map.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => v.as_u64().filter(|n| *n <= max).map(Some).ok_or_else(|| {
                fail(
                    format!("{at}.{key}"),
                    format!("must be a whole number 0-{max}"),
                )
            }),
        }
    };
    let retry = number("retry", u64::from(MAX_RETRIES))?.unwrap_or(0);
    let timeout_seconds = number("timeout_seconds", MAX_STEP_TIMEOUT_SECONDS)?;
    if timeout_seconds == Some(0) {
        return Err(fail(format!("{at}.timeout_seconds"), "must be at least 1"));
    }
    let on_error = match text("on_error")? {
        None | Some("fail") => OnError::Fail,
        Some("continue") => OnError::Continue,
        Some(_) => return Err(fail(format!("{at}.on_error"), "must be fail or continue")),
    };
    Ok(Step {
        id: id.to_owned(),
        uses: uses.to_owned(),
        with,
        save_as: save_as.to_owned(),
        condition,
        retry: u32::try_from(retry).unwrap_or(MAX_RETRIES),
        timeout_seconds,
        on_error,
    })
}

/// `with` has the tool's required keys and no others (values may still be templates, so their
/// types are checked when the step runs).
fn check_keys(with: &Value, schema: &Value, at: &str) -> Result<(), DefinitionError> {
    let Value::Object(given) = with else {
        return Ok(());
    };
    let properties = schema.get("properties").and_then(Value::as_object);
    if let Some(properties) = properties
        && let Some(unknown) = given.keys().find(|k| !properties.contains_key(*k))
    {
        let mut known: Vec<&String> = properties.keys().collect();
        known.sort();
        return Err(fail(
            format!("{at}.{unknown}"),
            format!(
                "unknown input; this tool takes {}",
                known
                    .iter()
                    .map(|k| k.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ));
    }
    for required in schema
        .get("required")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
    {
        if !given.contains_key(required) {
            return Err(fail(format!("{at}.{required}"), "is required"));
        }
    }
    Ok(())
}
