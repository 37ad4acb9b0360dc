//! `GET /reports/decisions` and `GET /reports/sla`, as JSON or CSV.

use axum::Json as ResponseJson;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde::Deserialize;

use super::{DecisionReport, Dimension, SlaCounts, SlaReport, Window};
use crate::app::AppState;
use crate::auth::principal::{Authorized, ReadReports};
use crate::http::error::ApiError;

#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DecisionParams {
    /// Start of the window, inclusive (RFC 3339); default 30 days before `to`.
    pub from: Option<String>,
    /// End of the window, exclusive (RFC 3339); default now. At most 366 days after `from`.
    pub to: Option<String>,
    /// Comma-separated, distinct, in sort order: `reviewer`, `action`, `reason_code`, `day`.
    /// Default all four in that order.
    pub group_by: Option<String>,
    /// IANA time zone of `day`, e.g. `Europe/Paris`; default UTC.
    pub tz: Option<String>,
    /// `json` or `csv`; without it, `Accept: text/csv` asks for CSV.
    pub format: Option<String>,
}

#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SlaParams {
    /// Start of the window, inclusive (RFC 3339); default 30 days before `to`.
    pub from: Option<String>,
    /// End of the window, exclusive (RFC 3339); default now. At most 366 days after `from`.
    pub to: Option<String>,
    /// `json` or `csv`; without it, `Accept: text/csv` asks for CSV.
    pub format: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Json,
    Csv,
}

/// The `format` parameter wins; otherwise CSV when the client accepts `text/csv` (and says
/// nothing of JSON), else JSON.
fn format(param: Option<&str>, headers: &HeaderMap) -> Result<Format, ApiError> {
    match param.map(str::trim) {
        Some("json") => Ok(Format::Json),
        Some("csv") => Ok(Format::Csv),
        Some(_) => Err(ApiError::invalid_field("format", "must be json or csv")),
        None => {
            let accepts = |media: &str| {
                headers
                    .get_all(header::ACCEPT)
                    .iter()
                    .filter_map(|v| v.to_str().ok())
                    .flat_map(|v| v.split(','))
                    .filter_map(|v| v.split(';').next())
                    .any(|v| v.trim().eq_ignore_ascii_case(media))
            };
            Ok(if accepts("text/csv") && !accepts("application/json") {
                Format::Csv
            } else {
                Format::Json
            })
        }
    }
}

/// Decisions counted by reviewer, action, reason code and day.
#[utoipa::path(get, path = "/reports/decisions", operation_id = "report_decisions", tag = "reports",
    description = "Requires: supervisor or admin (`ReadReports`), or an API key with `reports:read`.\n\n\
                   Counts the decisions (`case_history` rows with a decision) made in `[from, to)`. \
                   Grouped by `reason_code`, a decision with several codes counts once under each \
                   code and one without a code under `null` (an empty CSV cell); `total` counts \
                   every decision once. Decisions made by the policy itself have the reviewer \
                   `system`. Rows are sorted by the grouped values in `group_by` order. CSV: a header \
                   of the grouped dimensions and `count`, RFC 4180 quoting, CRLF line ends.",
    params(DecisionParams),
    responses((status = 200, content((DecisionReport = "application/json"), (String = "text/csv"))),
              (status = 403, body = crate::http::error::ErrorBody),
              (status = 422, body = crate::http::error::ErrorBody)))]
pub async fn decisions(
    State(state): State<AppState>,
    Authorized(principal, ..): Authorized<ReadReports>,
    headers: HeaderMap,
    Query(params): Query<DecisionParams>,
) -> Result<Response, ApiError> {
    let window = Window::parse(
        params.from.as_deref(),
        params.to.as_deref(),
        crate::clock::now(),
    )?;
    let group_by = Dimension::parse_list(params.group_by.as_deref())?;
    let tz = super::parse_tz(params.tz.as_deref())?;
    let format = format(params.format.as_deref(), &headers)?;
    let mut report =
        super::decisions(&state.store, &principal.tenant_id, window, &group_by, tz).await?;
    if group_by.contains(&Dimension::Reviewer) {
        let directory = crate::auth::people::directory(&state.store, &principal.tenant_id).await?;
        report.name_reviewers(&directory);
    }
    Ok(match format {
        Format::Json => ResponseJson(report).into_response(),
        Format::Csv => csv_response("decisions", window, decisions_csv(&report, &group_by)?),
    })
}

/// SLA compliance per queue and priority.
#[utoipa::path(get, path = "/reports/sla", operation_id = "report_sla_compliance", tag = "reports",
    description = "Requires: supervisor or admin (`ReadReports`), or an API key with `reports:read`.\n\n\
                   Per queue and (current) priority: `decided`, cases a person approved, rejected or \
                   returned in `[from, to)`; `met`, those decided by their SLA deadline; \
                   `compliance_pct`, met/decided in percent with one decimal (`null` when nothing was \
                   decided); `breaches`, cases whose SLA breach was recorded in the window; and \
                   `open_breached`, cases open or parked now with a breached SLA. `totals` sums all \
                   rows; in CSV it is the last row, with the queue `(total)` and no priority.",
    params(SlaParams),
    responses((status = 200, content((SlaReport = "application/json"), (String = "text/csv"))),
              (status = 403, body = crate::http::error::ErrorBody),
              (status = 422, body = crate::http::error::ErrorBody)))]
pub async fn sla(
    State(state): State<AppState>,
    Authorized(principal, ..): Authorized<ReadReports>,
    headers: HeaderMap,
    Query(params): Query<SlaParams>,
) -> Result<Response, ApiError> {
    let window = Window::parse(
        params.from.as_deref(),
        params.to.as_deref(),
        crate::clock::now(),
    )?;
    let format = format(params.format.as_deref(), &headers)?;
    let report = super::sla(&state.store, &principal.tenant_id, window).await?;
    Ok(match format {
        Format::Json => ResponseJson(report).into_response(),
        Format::Csv => csv_response("sla", window, sla_csv(&report)?),
    })
}

/// RFC 4180: quoted only where needed, quotes doubled, CRLF line ends.
fn csv_writer() -> csv::Writer<Vec<u8>> {
    csv::WriterBuilder::new()
        .terminator(csv::Terminator::CRLF)
        .from_writer(Vec::new())
}

fn decisions_csv(report: &DecisionReport, group_by: &[Dimension]) -> Result<Vec<u8>, ApiError> {
    let mut writer = csv_writer();
    // The reviewer's name follows the reviewer's id, for people reading the file.
    let header = group_by
        .iter()
        .flat_map(|d| match d {
            Dimension::Reviewer => vec![d.as_str(), "reviewer_name"],
            _ => vec![d.as_str()],
        })
        .chain(["count"]);
    writer.write_record(header).map_err(ApiError::internal)?;
    for row in &report.rows {
        let count = row.count.to_string();
        let values = group_by
            .iter()
            .flat_map(|d| match d {
                Dimension::Reviewer => vec![
                    row.value(*d),
                    row.reviewer_name.as_deref().unwrap_or_default(),
                ],
                _ => vec![row.value(*d)],
            })
            .chain([count.as_str()]);
        writer.write_record(values).map_err(ApiError::internal)?;
    }
    writer.into_inner().map_err(ApiError::internal)
}

fn sla_csv(report: &SlaReport) -> Result<Vec<u8>, ApiError> {
    let mut writer = csv_writer();
    writer
        .write_record([
            "queue",
            "priority",
            "decided",
            "met",
            "compliance_pct",
            "breaches",
            "open_breached",
        ])
        .map_err(ApiError::internal)?;
    let record = |queue: &str, priority: &str, counts: &SlaCounts| {
        [
            queue.to_owned(),
            priority.to_owned(),
            counts.decided.to_string(),
            counts.met.to_string(),
            counts
                .compliance_pct
                .map(|pct| format!("{pct:.1}"))
                .unwrap_or_default(),
            counts.breaches.to_string(),
            counts.open_breached.to_string(),
        ]
    };
    for row in &report.rows {
        writer
            .write_record(record(&row.queue, &row.priority, &row.counts))
            .map_err(ApiError::internal)?;
    }
    writer
        .write_record(record("(total)", "", &report.totals))
        .map_err(ApiError::internal)?;
    writer.into_inner().map_err(ApiError::internal)
}

/// A CSV download named after the report and its window.
fn csv_response(report: &str, window: Window, body: Vec<u8>) -> Response {
    let stamp = |t: DateTime<Utc>| t.format("%Y%m%dT%H%M%SZ");
    let filename = format!(
        "docket-{report}-{}-{}.csv",
        stamp(window.from),
        stamp(window.to)
    );
    let disposition = HeaderValue::from_str(&format!("attachment; filename=\"{filename}\""))
        .unwrap_or_else(|_| HeaderValue::from_static("attachment"));
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/csv; charset=utf-8"),
            ),
            (header::CONTENT_DISPOSITION, disposition),
        ],
        body,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_format_parameter_wins_over_accept() {
        let mut csv = HeaderMap::new();
        csv.insert(header::ACCEPT, HeaderValue::from_static("text/csv"));
        let mut both = HeaderMap::new();
        both.insert(
            header::ACCEPT,
            HeaderValue::from_static("application/json, text/csv;q=0.5"),
        );
        assert_eq!(format(None, &HeaderMap::new()).unwrap(), Format::Json);
        assert_eq!(format(None, &csv).unwrap(), Format::Csv);
        assert_eq!(format(None, &both).unwrap(), Format::Json);
        assert_eq!(format(Some("json"), &csv).unwrap(), Format::Json);
        assert_eq!(format(Some("csv"), &HeaderMap::new()).unwrap(), Format::Csv);
        let error = format(Some("xml"), &HeaderMap::new()).unwrap_err();
        assert_eq!(error.details["field"], "format");
    }

    #[test]
    fn csv_cells_are_quoted_as_rfc_4180_says() {
        let report = DecisionReport {
            from: Utc::now(),
            to: Utc::now(),
            group_by: vec!["reason_code", "action"],
            tz: "UTC".to_owned(),
            rows: vec![
                super::super::DecisionRow {
                    reviewer: None,
                    reviewer_name: None,
                    action: Some("reject".to_owned()),
                    reason_code: Some(Some("SAYS \"NO\", TWICE".to_owned())),
                    day: None,
                    count: 3,
                },
                super::super::DecisionRow {
                    reviewer: None,
                    reviewer_name: None,
                    action: Some("approve".to_owned()),
                    reason_code: Some(None),
                    day: None,
                    count: 1,
                },
            ],
            total: 4,
        };
        let bytes = decisions_csv(&report, &[Dimension::ReasonCode, Dimension::Action]).unwrap();
        assert_eq!(
            String::from_utf8(bytes).unwrap(),
            "reason_code,action,count\r\n\"SAYS \"\"NO\"\", TWICE\",reject,3\r\n,approve,1\r\n"
        );
    }
}
