//! `wait`: a durable timer. The job is parked until the time comes; no worker is held.

use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{
    Suspension, Tool, ToolContext, ToolError, ToolFuture, ToolResult, parse_input, schema_of,
};

pub struct Wait;

/// Wait for a number of seconds or until an instant (one of the two).
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WaitInput {
    /// Seconds from now (up to a year).
    pub seconds: Option<u64>,
    /// An RFC 3339 instant.
    pub until: Option<DateTime<Utc>>,
}

const MAX_SECONDS: u64 = 366 * 86_400;

fn settle(until: DateTime<Utc>) -> ToolResult {
    if crate::clock::now() >= until {
        ToolResult::Done(json!({ "waited_until": until }))
    } else {
        ToolResult::Suspend(Suspension {
            until,
            wait_key: None,
            state: json!({ "until": until }),
        })
    }
}

impl Tool for Wait {
    fn name(&self) -> &'static str {
        "wait"
    }

    fn description(&self) -> &'static str {
        "Pause the pipeline for `seconds` or until an instant, without holding a worker."
    }

    fn input_schema(&self) -> Value {
        schema_of::<WaitInput>()
    }

    fn call<'a>(&'a self, _ctx: &'a ToolContext, input: Value) -> ToolFuture<'a> {
        Box::pin(async move {
            let input: WaitInput = parse_input(input)?;
            let until = match (input.seconds, input.until) {
                (Some(seconds), None) if seconds <= MAX_SECONDS => {
                    crate::clock::now()
                        + chrono::Duration::seconds(i64::try_from(seconds).unwrap_or(0))
                }
                (None, Some(until)) => until,
                (Some(_), None) => {
                    return Err(ToolError::permanent(format!(
                        "seconds must be at most {MAX_SECONDS}"
                    )));
                }
                _ => {
                    return Err(ToolError::permanent(
                        "give either seconds or until, not both or neither",
                    ));
                }
            };
            Ok(settle(until))
        })
    }

    fn resume<'a>(&'a self, _ctx: &'a ToolContext, state: Value) -> ToolFuture<'a> {
        Box::pin(async move {
            let until = state
                .get("until")
                .and_then(|u| serde_json::from_value::<DateTime<Utc>>(u.clone()).ok())
                .ok_or_else(|| ToolError::permanent("the saved wait state is unreadable"))?;
            Ok(settle(until))
        })
    }
}
