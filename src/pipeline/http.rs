//! `GET /tools`: the tools pipelines can use, with the JSON Schema of each one's `with`.

use axum::Json;
use axum::extract::State;
use serde::Serialize;
use serde_json::Value;

use crate::app::AppState;
use crate::auth::principal::{Authorized, ReadTasks};

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ToolInfo {
    pub name: String,
    pub description: String,
    /// JSON Schema of the step's `with`.
    #[schema(value_type = Object)]
    pub input_schema: Value,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ToolList {
    pub items: Vec<ToolInfo>,
}

/// The tools pipeline steps can `use`.
#[utoipa::path(get, path = "/tools", tag = "tasks",
    description = "Requires: any role (`ReadTasks`), or an API key with `tasks:read`.",
    responses((status = 200, body = ToolList)))]
pub async fn list_tools(
    State(state): State<AppState>,
    Authorized(_caller, ..): Authorized<ReadTasks>,
) -> Json<ToolList> {
    Json(ToolList {
        items: state
            .tools
            .iter()
            .map(|tool| ToolInfo {
                name: tool.name().to_owned(),
                description: tool.description().to_owned(),
                input_schema: tool.input_schema(),
            })
            .collect(),
    })
}
