//! `knowledge.search`: look things up in one of the tenant's knowledge collections.

use serde::Deserialize;
use serde_json::{Map, Value};

use super::{Tool, ToolContext, ToolError, ToolFuture, ToolResult, parse_input, schema_of};
use crate::knowledge::search::{Mode, SearchError, SearchRequest};
use crate::knowledge::vectors::Scope;

pub struct KnowledgeSearch;

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct KnowledgeSearchInput {
    /// Collection id or name.
    pub collection: String,
    pub query: String,
    /// Results wanted (1-50, default 5).
    pub k: Option<usize>,
    /// `lexical`, `vector` or `hybrid` (default: hybrid with embeddings, else lexical).
    #[schema(inline)]
    pub mode: Option<Mode>,
    /// Only documents whose metadata has these key/value pairs.
    #[serde(default)]
    #[schema(value_type = Object, required = false)]
    pub filter: Map<String, Value>,
}

impl Tool for KnowledgeSearch {
    fn name(&self) -> &'static str {
        "knowledge.search"
    }

    fn description(&self) -> &'static str {
        "Search a knowledge collection; returns the best chunks with their documents and snippets."
    }

    fn input_schema(&self) -> Value {
        schema_of::<KnowledgeSearchInput>()
    }

    fn call<'a>(&'a self, ctx: &'a ToolContext, input: Value) -> ToolFuture<'a> {
        Box::pin(async move {
            let input: KnowledgeSearchInput = parse_input(input)?;
            let app = &ctx.app;
            let collection =
                crate::knowledge::find_collection(&app.store, &ctx.tenant_id, &input.collection)
                    .await
                    .map_err(|e| ToolError::transient(format!("database: {e}")))?
                    .ok_or_else(|| {
                        ToolError::permanent(format!("no collection {:?}", input.collection))
                    })?;
            let scope = Scope {
                tenant_id: ctx.tenant_id.clone(),
                collection_id: collection.id,
            };
            let request = SearchRequest {
                query: input.query,
                k: input.k,
                filter: input.filter,
                mode: input.mode,
            };
            let case_id = super::llm::case_of_job(ctx).await;
            let caller = super::llm::caller(ctx, case_id.as_deref());
            let found = crate::knowledge::search::search(app, &scope, &request, caller)
                .await
                .map_err(|e| match e {
                    SearchError::Upstream(m) => ToolError::transient(m),
                    SearchError::Database(e) => ToolError::transient(format!("database: {e}")),
                    other => ToolError::permanent(other.to_string()),
                })?;
            serde_json::to_value(found)
                .map(ToolResult::Done)
                .map_err(|e| ToolError::permanent(e.to_string()))
        })
    }
}
