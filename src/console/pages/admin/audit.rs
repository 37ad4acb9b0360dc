//! `/console/audit`: the tenant's audit log, newest first, with the API's filters, cursor pages,
//! export (CSV or JSON lines, streamed from the API's export) and a check of the hash chain.

use std::collections::{BTreeSet, HashMap};

use axum::extract::Query;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use maud::{Markup, html};
use serde::Deserialize;
use serde_json::Value;

use super::{error_box, pager, parse_time, query};
use crate::auth::Role;
use crate::console::layout::{self, json_block, time};
use crate::console::session::{self, Console};

const PATH: &str = "/console/audit";
/// Summaries longer than this are cut in the table; the full text is one click away.
const SUMMARY_CHARS: usize = 120;

#[derive(Deserialize)]
struct RecordPage {
    items: Vec<Record>,
    next_cursor: Option<String>,
}

#[derive(Deserialize)]
struct Record {
    seq: i64,
    occurred_at: DateTime<Utc>,
    actor_type: String,
    actor_id: String,
    action: String,
    target_type: String,
    target_id: String,
    summary: Value,
    request_id: Option<String>,
    ip: Option<String>,
}

#[derive(Deserialize)]
struct Verification {
    valid: bool,
    records: u64,
    head_hash: Option<String>,
    first_invalid_seq: Option<i64>,
    problem: Option<String>,
}

#[derive(Deserialize)]
struct Named {
    id: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    email: String,
}

#[derive(Deserialize)]
struct NamedPage {
    items: Vec<Named>,
}

/// The filters as typed into the form (times in UTC), a cursor, and whether to verify the chain.
#[derive(Debug, Default, Deserialize)]
pub struct AuditQuery {
    #[serde(default)]
    action: String,
    #[serde(default)]
    actor_id: String,
    #[serde(default)]
    target_type: String,
    #[serde(default)]
    target_id: String,
    #[serde(default)]
    since: String,
    #[serde(default)]
    until: String,
    #[serde(default)]
    cursor: String,
    #[serde(default)]
    verify: String,
    /// Export only: `csv` (the default) or `jsonl`.
    #[serde(default)]
    format: String,
}

impl AuditQuery {
    /// The filters as the form holds them, for links that keep them.
    fn form_pairs(&self) -> Vec<(&'static str, &str)> {
        vec![
            ("action", &self.action),
            ("actor_id", &self.actor_id),
            ("target_type", &self.target_type),
            ("target_id", &self.target_id),
            ("since", &self.since),
            ("until", &self.until),
        ]
    }

    /// The filters as the API takes them (times in RFC 3339), and the times it could not read.
    fn api_pairs(&self) -> (Vec<(&'static str, String)>, Vec<String>) {
        let mut pairs: Vec<(&'static str, String)> = vec![
            ("action", self.action.trim().to_owned()),
            ("actor_id", self.actor_id.trim().to_owned()),
            ("target_type", self.target_type.trim().to_owned()),
            ("target_id", self.target_id.trim().to_owned()),
        ];
        let mut problems = Vec::new();
        for (name, label, typed) in [
            ("since", "From", &self.since),
            ("until", "Until", &self.until),
        ] {
            if typed.trim().is_empty() {
                continue;
            }
            match parse_time(typed) {
                Some(at) => pairs.push((name, at.to_rfc3339())),
                None => problems.push(format!(
                    "{label}: “{}” is not a date and time; ignored.",
                    typed.trim()
                )),
            }
        }
        (pairs, problems)
    }

    /// `?…` for the API, with `extra` pairs added.
    fn api_query(&self, extra: &[(&str, &str)]) -> (String, Vec<String>) {
        let (pairs, problems) = self.api_pairs();
        let mut all: Vec<(&str, &str)> = pairs.iter().map(|(k, v)| (*k, v.as_str())).collect();
        all.extend_from_slice(extra);
        (query(&all), problems)
    }
}

pub async fn page(console: Console, Query(params): Query<AuditQuery>) -> Response {
    let (api_query, problems) = params.api_query(&[("limit", "50"), ("cursor", &params.cursor)]);
    let records: RecordPage = match console.api.get(&format!("/audit{api_query}")).await {
        Ok(records) => records,
        Err(failure) => return console.fail(&failure),
    };
    let verification = if params.verify.is_empty() {
        None
    } else {
        match console.api.get::<Verification>("/audit/verify").await {
            Ok(report) => Some(report),
            Err(failure) => return console.fail(&failure),
        }
    };
    let names = actor_names(&console).await;
    let form = params.form_pairs();
    let mut export_csv = form.clone();
    export_csv.push(("format", "csv"));
    let mut export_jsonl = form.clone();
    export_jsonl.push(("format", "jsonl"));
    let actions: BTreeSet<&str> = records.items.iter().map(|r| r.action.as_str()).collect();

    let content = html! {
        h1 { "Audit log" }
        @for problem in &problems { (error_box(problem)) }
        @if let Some(report) = &verification { (verification_panel(report)) }
        form.filters method="get" action=(PATH) aria-label="Filters" {
            div {
                label for="action" { "Action" }
                input #action type="text" name="action" value=(params.action) list="known-actions"
                    placeholder="user.create";
                datalist #known-actions { @for action in &actions { option value=(action) {} } }
            }
            div {
                label for="actor_id" { "Actor id" }
                input #actor_id type="text" name="actor_id" value=(params.actor_id);
            }
            div {
                label for="target_type" { "Target type" }
                input #target_type type="text" name="target_type" value=(params.target_type)
                    placeholder="case";
            }
            div {
                label for="target_id" { "Target id" }
                input #target_id type="text" name="target_id" value=(params.target_id);
            }
            div {
                label for="since" { "From (UTC)" }
                input #since type="datetime-local" name="since" value=(params.since);
            }
            div {
                label for="until" { "Until (UTC)" }
                input #until type="datetime-local" name="until" value=(params.until);
            }
            div { button #filter type="submit" { "Filter" } }
            div { a href=(PATH) { "Clear" } }
        }
        div.actions {
            a #export .button.secondary href={ (PATH) "/export" (query(&export_csv)) } download {
                "Export CSV"
            }
            a #export-jsonl .button.secondary href={ (PATH) "/export" (query(&export_jsonl)) } download {
                "Export JSON lines"
            }
            form method="get" action=(PATH) {
                @for (name, value) in form.iter().filter(|(_, v)| !v.is_empty()) {
                    input type="hidden" name=(name) value=(value);
                }
                input type="hidden" name="verify" value="1";
                button #verify-chain .secondary type="submit" { "Verify chain" }
            }
        }
        table #audit {
            caption.visually-hidden { "Audit records, newest first" }
            thead {
                tr {
                    th scope="col" { "Time" }
                    th scope="col" { "Actor" }
                    th scope="col" { "Action" }
                    th scope="col" { "Target" }
                    th scope="col" { "Summary" }
                }
            }
            tbody {
                @for record in &records.items { (row(record, &names)) }
                @if records.items.is_empty() {
                    tr { td colspan="5" { "No records match." } }
                }
            }
        }
        (pager(PATH, &form, records.next_cursor.as_deref(), !params.cursor.is_empty()))
    };
    layout::page(&console, "Audit log", PATH, content)
}

fn verification_panel(report: &Verification) -> Markup {
    html! {
        @if report.valid {
            div #verification .flash.success role="status" {
                "Chain intact: " (report.records) " records verified."
                @if let Some(head) = &report.head_hash {
                    " Newest hash: " code { (head) } " (keep it elsewhere to detect removal at the end)."
                }
            }
        } @else {
            div #verification .flash.error role="alert" {
                "Chain broken"
                @if let Some(seq) = report.first_invalid_seq { " at record " (seq) }
                ": " (report.problem.as_deref().unwrap_or("a record does not fit")) "."
            }
        }
    }
}

fn row(record: &Record, names: &HashMap<String, String>) -> Markup {
    let actor_filter = query(&[("actor_id", &record.actor_id)]);
    let target_filter = query(&[
        ("target_type", &record.target_type),
        ("target_id", &record.target_id),
    ]);
    html! {
        tr data-seq=(record.seq) {
            td { (time(&record.occurred_at)) }
            td {
                @if record.actor_id.is_empty() {
                    (record.actor_type)
                } @else {
                    a href={ (PATH) (actor_filter) } title={ (record.actor_type) " " (record.actor_id) } {
                        (actor_label(record, names))
                    }
                }
            }
            td { code { (record.action) } }
            td {
                @if record.target_type.is_empty() && record.target_id.is_empty() {
                    span.muted { "—" }
                } @else {
                    a href={ (PATH) (target_filter) } { (record.target_type) " " code { (record.target_id) } }
                }
            }
            td { (summary(record)) }
        }
    }
}

fn actor_label(record: &Record, names: &HashMap<String, String>) -> String {
    let name = names.get(&record.actor_id).map(String::as_str);
    match (record.actor_type.as_str(), name) {
        ("api_key", Some(name)) => format!("API key “{name}”"),
        ("api_key", None) => format!("API key {}", record.actor_id),
        (_, Some(name)) => name.to_owned(),
        (_, None) => record.actor_id.clone(),
    }
}

fn summary(record: &Record) -> Markup {
    let empty = match &record.summary {
        Value::Object(map) => map.is_empty(),
        Value::Null => true,
        Value::String(text) => text.trim().is_empty(),
        _ => false,
    };
    let origin = record.ip.is_some() || record.request_id.is_some();
    html! {
        @if empty && !origin {
            span.muted { "—" }
        } @else {
            details {
                summary {
                    @if empty { span.muted { "origin" } } @else { code { (summary_line(&record.summary.to_string(), SUMMARY_CHARS)) } }
                }
                @if !empty { (json_block(&record.summary)) }
                @if origin {
                    p.muted {
                        @if let Some(ip) = &record.ip { "From " (ip) ". " }
                        @if let Some(id) = &record.request_id { "Request " code { (id) } "." }
                    }
                }
            }
        }
    }
}

/// A summary on one line, cut to `max` characters.
fn summary_line(text: &str, max: usize) -> String {
    let line = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if line.chars().count() <= max {
        return line;
    }
    let cut: String = line.chars().take(max.saturating_sub(1)).collect();
    format!("{cut}…")
}

/// Names for the ids in the actor column: users (supervisors may list them) and, for admins, API
/// keys. Only a nicety: when the lists cannot be read, the ids are shown.
async fn actor_names(console: &Console) -> HashMap<String, String> {
    let mut names = HashMap::new();
    if let Ok(users) = console.api.get::<NamedPage>("/users?limit=500").await {
        for user in users.items {
            let label = if user.name.is_empty() || user.name == user.email {
                user.email
            } else {
                format!("{} ({})", user.name, user.email)
            };
            names.insert(user.id, label);
        }
    }
    if console.user.at_least(Role::Admin)
        && let Ok(keys) = console.api.get::<NamedPage>("/api-keys?limit=500").await
    {
        for key in keys.items {
            names.insert(key.id, key.name);
        }
    }
    names
}

/// The API's export as a download, with the page's filters.
pub async fn export(console: Console, Query(params): Query<AuditQuery>) -> Response {
    let format = if params.format == "jsonl" {
        "jsonl"
    } else {
        "csv"
    };
    let (api_query, problems) = params.api_query(&[("format", format)]);
    if let Some(problem) = problems.first() {
        let back = format!("{PATH}{}", query(&params.form_pairs()));
        return session::error(&back, problem.replace("; ignored.", "."));
    }
    let response = match console.api.raw(&format!("/audit/export{api_query}")).await {
        Ok(response) => response,
        Err(failure) => return console.fail(&failure),
    };
    let content_type = response
        .headers()
        .get(header::CONTENT_TYPE)
        .cloned()
        .unwrap_or_else(|| HeaderValue::from_static("application/octet-stream"));
    let filename = format!(
        "docket-audit-{}.{format}",
        crate::clock::now().format("%Y%m%d-%H%M%S")
    );
    let disposition = HeaderValue::from_str(&format!("attachment; filename=\"{filename}\""))
        .unwrap_or_else(|_| HeaderValue::from_static("attachment"));
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CONTENT_DISPOSITION, disposition),
        ],
        response.into_body(),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_go_to_the_api_with_times_in_rfc3339() {
        let params = AuditQuery {
            action: " user.create ".to_owned(),
            target_type: "user".to_owned(),
            since: "2025-03-01T09:30".to_owned(),
            until: "soon".to_owned(),
            ..AuditQuery::default()
        };
        let (query, problems) = params.api_query(&[("limit", "50"), ("cursor", "")]);
        assert_eq!(
            query,
            "?action=user.create&target_type=user&since=2025-03-01T09%3A30%3A00%2B00%3A00&limit=50"
        );
        assert_eq!(problems.len(), 1);
        assert!(problems[0].starts_with("Until:"), "{problems:?}");
    }

    #[test]
    fn no_filters_no_query() {
        let (query, problems) = AuditQuery::default().api_query(&[]);
        assert_eq!(query, "");
        assert!(problems.is_empty());
    }

    #[test]
    fn summaries_are_one_line_and_cut() {
        assert_eq!(summary_line("{\n  \"a\": 1\n}", 20), "{ \"a\": 1 }");
        assert_eq!(summary_line("abcdefghij", 5), "abcd…");
        assert_eq!(summary_line("ééééé", 5), "ééééé");
    }

    fn record(actor_type: &str, actor_id: &str) -> Record {
        Record {
            seq: 1,
            occurred_at: DateTime::<Utc>::MIN_UTC,
            actor_type: actor_type.to_owned(),
            actor_id: actor_id.to_owned(),
            action: "x".to_owned(),
            target_type: String::new(),
            target_id: String::new(),
            summary: serde_json::json!({}),
            request_id: None,
            ip: None,
        }
    }

    #[test]
    fn actors_are_named_when_known() {
        let names = HashMap::from([
            ("u1".to_owned(), "Ann (ann@example.com)".to_owned()),
            ("k1".to_owned(), "agent".to_owned()),
        ]);
        assert_eq!(
            actor_label(&record("user", "u1"), &names),
            "Ann (ann@example.com)"
        );
        assert_eq!(actor_label(&record("user", "u2"), &names), "u2");
        assert_eq!(
            actor_label(&record("api_key", "k1"), &names),
            "API key “agent”"
        );
        assert_eq!(actor_label(&record("api_key", "k2"), &names), "API key k2");
    }
}
