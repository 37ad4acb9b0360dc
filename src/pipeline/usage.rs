//! `GET /llm/usage`: the tenant's model calls (`llm_calls`) summed per task, case, model or day
//! over a time range, as JSON or CSV: tokens, requests and cost (from `LLM_PRICES` at the time of
//! each call).

use axum::Json as ResponseJson;
use axum::extract::{Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Datelike, NaiveDate, TimeZone, Utc};
use serde::{Deserialize, Serialize};

use crate::app::AppState;
use crate::auth::principal::{Authorized, ReadOperations};
use crate::http::error::ApiError;
use crate::store::Store;
use crate::with_pool;

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct UsageParams {
    /// RFC 3339 instant or `YYYY-MM-DD` (UTC midnight), inclusive; default the start of this month.
    pub from: Option<String>,
    /// RFC 3339 instant or `YYYY-MM-DD` (UTC midnight), exclusive; default now.
    pub to: Option<String>,
    /// `task`, `case`, `model` (default) or `day`.
    pub group_by: Option<String>,
    /// `json` (default) or `csv`.
    pub format: Option<String>,
}

/// One group's calls.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct UsageRow {
    /// The task id, case id, model or day (`YYYY-MM-DD`); null for calls outside any task or case
    /// (e.g. knowledge ingestion).
    #[sqlx(rename = "group_key")]
    pub key: Option<String>,
    pub requests: i64,
    pub prompt_tokens: i64,
    pub completion_tokens: i64,
    pub total_tokens: i64,
    /// Millionths of a US dollar, summed over the calls with a price; null when none had one.
    pub cost_micros: Option<i64>,
    /// Calls to models without a price in `LLM_PRICES` (not in `cost_micros`).
    pub unpriced_requests: i64,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct UsageReport {
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    pub group_by: String,
    /// Largest total first.
    pub items: Vec<UsageRow>,
    /// All calls in the range (`key` is null).
    pub total: UsageRow,
}

fn instant(field: &str, raw: Option<&str>) -> Result<Option<DateTime<Utc>>, ApiError> {
    let Some(raw) = raw.map(str::trim).filter(|r| !r.is_empty()) else {
        return Ok(None);
    };
    if let Ok(at) = DateTime::parse_from_rfc3339(raw) {
        return Ok(Some(at.with_timezone(&Utc)));
    }
    NaiveDate::parse_from_str(raw, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|d| Some(Utc.from_utc_datetime(&d)))
        .ok_or_else(|| ApiError::invalid_field(field, "must be an RFC 3339 instant or YYYY-MM-DD"))
}

/// The SQL that names a call's group. Only these fixed expressions reach the query.
fn group_expression(store: &Store, group_by: &str) -> Option<&'static str> {
    Some(match (group_by, store) {
        ("task", _) => "task_id",
        ("case", _) => "case_id",
        ("model", _) => "model",
        // Times are RFC 3339 text on SQLite, so the day is its first ten characters.
        ("day", Store::Sqlite(..)) => "substr(created_at, 1, 10)",
        ("day", Store::Postgres(_)) => "to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD')",
        _ => return None,
    })
}

/// The tenant's model calls in `[from, to)` summed per `group_by`, largest total first.
pub async fn report(
    store: &Store,
    tenant_id: &str,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    group_by: &str,
) -> Result<Option<Vec<UsageRow>>, sqlx::Error> {
    let Some(key) = group_expression(store, group_by) else {
        return Ok(None);
    };
    // SUM of BIGINT is NUMERIC on PostgreSQL, hence the casts.
    let sql = format!(
        "SELECT {key} AS group_key, COUNT(*) AS requests, \
         CAST(SUM(prompt_tokens) AS BIGINT) AS prompt_tokens, \
         CAST(SUM(completion_tokens) AS BIGINT) AS completion_tokens, \
         CAST(SUM(total_tokens) AS BIGINT) AS total_tokens, \
         CAST(SUM(cost_micros) AS BIGINT) AS cost_micros, \
         COUNT(*) - COUNT(cost_micros) AS unpriced_requests \
         FROM llm_calls WHERE tenant_id = $1 AND created_at >= $2 AND created_at < $3 \
         GROUP BY {key} ORDER BY total_tokens DESC, group_key LIMIT 10000"
    );
    let rows: Vec<UsageRow> = with_pool!(store, pool => {
        sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(tenant_id)
            .bind(from)
            .bind(to)
            .fetch_all(pool)
            .await
    })?;
    Ok(Some(rows))
}

fn total(rows: &[UsageRow]) -> UsageRow {
    rows.iter().fold(UsageRow::default(), |mut sum, row| {
        sum.requests += row.requests;
        sum.prompt_tokens += row.prompt_tokens;
        sum.completion_tokens += row.completion_tokens;
        sum.total_tokens += row.total_tokens;
        sum.unpriced_requests += row.unpriced_requests;
        sum.cost_micros = match (sum.cost_micros, row.cost_micros) {
            (None, None) => None,
            (a, b) => Some(a.unwrap_or(0) + b.unwrap_or(0)),
        };
        sum
    })
}

/// Model tokens, requests and cost per task, case, model or day.
#[utoipa::path(get, path = "/llm/usage", tag = "tasks",
    description = "Requires: supervisor or admin (`ReadOperations`), or an API key with `tasks:read`. \
                   `format=csv` answers `text/csv` with the columns of `items`.",
    params(UsageParams),
    responses((status = 200, body = UsageReport), (status = 422, body = crate::http::error::ErrorBody)))]
pub async fn get_usage(
    State(state): State<AppState>,
    Authorized(principal, ..): Authorized<ReadOperations>,
    Query(params): Query<UsageParams>,
) -> Result<Response, ApiError> {
    let now = crate::clock::now();
    let month_start = NaiveDate::from_ymd_opt(now.year(), now.month(), 1)
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map_or(now, |d| Utc.from_utc_datetime(&d));
    let from = instant("from", params.from.as_deref())?.unwrap_or(month_start);
    let to = instant("to", params.to.as_deref())?.unwrap_or(now);
    if from >= to {
        return Err(ApiError::invalid_field("to", "must be after from"));
    }
    let group_by = params.group_by.as_deref().unwrap_or("model");
    let items = report(&state.store, &principal.tenant_id, from, to, group_by)
        .await?
        .ok_or_else(|| ApiError::invalid_field("group_by", "must be task, case, model or day"))?;
    match params.format.as_deref().unwrap_or("json") {
        "json" => Ok(ResponseJson(UsageReport {
            from,
            to,
            group_by: group_by.to_owned(),
            total: total(&items),
            items,
        })
        .into_response()),
        "csv" => {
            let mut writer = csv::Writer::from_writer(Vec::new());
            for row in &items {
                writer.serialize(row).map_err(ApiError::internal)?;
            }
            let bytes = writer.into_inner().map_err(ApiError::internal)?;
            Ok(([(header::CONTENT_TYPE, "text/csv; charset=utf-8")], bytes).into_response())
        }
        _ => Err(ApiError::invalid_field("format", "must be json or csv")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_accept_instants_and_days() {
        assert_eq!(
            instant("from", Some("2026-11-03")).unwrap(),
            Some(Utc.with_ymd_and_hms(2026, 11, 3, 0, 0, 0).unwrap())
        );
        assert_eq!(
            instant("from", Some("2026-11-03T10:00:00+02:00")).unwrap(),
            Some(Utc.with_ymd_and_hms(2026, 11, 3, 8, 0, 0).unwrap())
        );
        assert_eq!(instant("from", None).unwrap(), None);
        assert!(instant("from", Some("yesterday")).is_err());
    }

    #[test]
    fn totals_keep_unknown_costs_apart() {
        let row = |cost: Option<i64>, unpriced: i64| UsageRow {
            requests: 2,
            total_tokens: 10,
            cost_micros: cost,
            unpriced_requests: unpriced,
            ..UsageRow::default()
        };
        assert_eq!(total(&[]).cost_micros, None);
        assert_eq!(total(&[row(None, 2)]).cost_micros, None);
        let sum = total(&[row(Some(5), 0), row(None, 2), row(Some(7), 1)]);
        assert_eq!(
            (
                sum.requests,
                sum.total_tokens,
                sum.cost_micros,
                sum.unpriced_requests
            ),
            (6, 30, Some(12), 3)
        );
    }
}
