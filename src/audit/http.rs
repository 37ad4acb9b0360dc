//! Audit endpoints: list with filters, verify the chain, export for compliance.

use std::collections::HashMap;

use axum::Json as ResponseJson;
use axum::extract::{Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use super::{Filter, Record, Verification};
use crate::app::AppState;
use crate::auth::principal::{Authorized, ReadAudit};
use crate::http::error::ApiError;
use crate::http::pagination::{Page, PageParams};

/// Most records one export returns; narrow the time range for more.
const EXPORT_LIMIT: i64 = 100_000;

fn cursor(page: &PageParams) -> Result<Option<i64>, ApiError> {
    page.cursor
        .as_deref()
        .map(|c| {
            c.parse::<i64>().map_err(|_| {
                ApiError::invalid_field("cursor", "is not a cursor from a previous page")
            })
        })
        .transpose()
}

/// The tenant's audit records, newest first.
#[utoipa::path(get, path = "/audit", operation_id = "list_audit_events", tag = "audit",
    description = "Requires: supervisor or admin (`ReadAudit`), or an API key with `audit:read`.",
    params(Filter, PageParams),
    responses((status = 200, body = Page<Record>)))]
pub async fn list(
    State(state): State<AppState>,
    Authorized(principal, ..): Authorized<ReadAudit>,
    Query(filter): Query<Filter>,
    Query(page): Query<PageParams>,
) -> Result<ResponseJson<Page<Record>>, ApiError> {
    let limit = page.limit()?;
    let records = super::list(
        &state.store,
        &principal.tenant_id,
        &filter,
        cursor(&page)?,
        i64::from(limit) + 1,
    )
    .await?;
    Ok(ResponseJson(Page::from_overfetch(
        records,
        limit,
        |r: &Record| r.seq.to_string(),
    )))
}

/// Check the tenant's hash chain: reports the first changed, missing or reordered record.
#[utoipa::path(get, path = "/audit/verify", operation_id = "verify_audit_chain", tag = "audit",
    description = "Requires: supervisor or admin (`ReadAudit`), or an API key with `audit:read`.",
    responses((status = 200, body = Verification)))]
pub async fn verify(
    State(state): State<AppState>,
    Authorized(principal, ..): Authorized<ReadAudit>,
) -> Result<ResponseJson<Verification>, ApiError> {
    Ok(ResponseJson(
        super::verify(&state.store, &principal.tenant_id).await?,
    ))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct ExportParams {
    /// `csv` or `jsonl`.
    pub format: String,
}

/// Export the tenant's audit records (oldest first) as CSV or JSON lines.
#[utoipa::path(get, path = "/audit/export", operation_id = "export_audit_log", tag = "audit",
    description = "Requires: supervisor or admin (`ReadAudit`), or an API key with `audit:read`.",
    params(ExportParams, Filter),
    responses((status = 200, description = "The records: CSV with a header row (`format=csv`) or one JSON \
                                             object per line (`format=jsonl`)",
               content((String = "text/csv"), (String = "application/x-ndjson")))))]
pub async fn export(
    State(state): State<AppState>,
    Authorized(principal, ..): Authorized<ReadAudit>,
    Query(params): Query<ExportParams>,
    Query(filter): Query<Filter>,
) -> Result<Response, ApiError> {
    let mut records = super::list(
        &state.store,
        &principal.tenant_id,
        &filter,
        None,
        EXPORT_LIMIT,
    )
    .await?;
    records.reverse();
    match params.format.as_str() {
        "jsonl" => {
            let mut body = String::new();
            for record in &records {
                body.push_str(&serde_json::to_string(record).map_err(ApiError::internal)?);
                body.push('\n');
            }
            Ok(([(header::CONTENT_TYPE, "application/x-ndjson")], body).into_response())
        }
        "csv" => {
            let directory =
                crate::auth::people::directory(&state.store, &principal.tenant_id).await?;
            let names: HashMap<String, &str> = directory
                .users
                .iter()
                .chain(&directory.api_keys)
                .map(|p| (p.actor.clone(), p.name.as_str()))
                .collect();
            let mut writer = csv::Writer::from_writer(Vec::new());
            for record in &records {
                let actor = format!("{}:{}", record.actor_type, record.actor_id);
                let actor_name =
                    names
                        .get(&actor)
                        .copied()
                        .unwrap_or(match record.actor_type.as_str() {
                            "system" => "Docket",
                            "anonymous" => "anonymous",
                            _ => &record.actor_id,
                        });
                writer
                    .serialize(CsvRecord::new(record, actor_name))
                    .map_err(ApiError::internal)?;
            }
            let bytes = writer.into_inner().map_err(ApiError::internal)?;
            Ok(([(header::CONTENT_TYPE, "text/csv; charset=utf-8")], bytes).into_response())
        }
        _ => Err(ApiError::invalid_field("format", "must be csv or jsonl")),
    }
}

/// A record as one CSV row: the summary is its JSON text in one cell.
#[derive(Serialize)]
struct CsvRecord<'a> {
    tenant_id: &'a str,
    seq: i64,
    id: &'a str,
    occurred_at: chrono::DateTime<chrono::Utc>,
    actor_type: &'a str,
    actor_id: &'a str,
    /// Who the actor is, for people reading the file: the user's or API key's name.
    actor_name: &'a str,
    action: &'a str,
    target_type: &'a str,
    target_id: &'a str,
    summary: &'a str,
    request_id: Option<&'a str>,
    ip: Option<&'a str>,
    prev_hash: &'a str,
    hash: &'a str,
}

impl<'a> CsvRecord<'a> {
    fn new(record: &'a Record, actor_name: &'a str) -> Self {
        Self {
            actor_name,
            tenant_id: &record.tenant_id,
            seq: record.seq,
            id: &record.id,
            occurred_at: record.occurred_at,
            actor_type: &record.actor_type,
            actor_id: &record.actor_id,
            action: &record.action,
            target_type: &record.target_type,
            target_id: &record.target_id,
            summary: &record.summary,
            request_id: record.request_id.as_deref(),
            ip: record.ip.as_deref(),
            prev_hash: &record.prev_hash,
            hash: &record.hash,
        }
    }
}
