//! `/console/policy`: the decision policy in force and its history, and an editor to validate,
//! simulate and save a new version. The three buttons submit one form; validating and simulating
//! re-render the page with what was typed, so nothing is lost between tries.

use axum::Form;
use axum::extract::Query;
use axum::http::StatusCode;
use axum::response::Response;
use chrono::{DateTime, Utc};
use maud::{Markup, html};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{error_box, with_status};
use crate::console::client::ApiFailure;
use crate::console::layout::{self, badge, csrf_input, optional_time};
use crate::console::pages::review::People;
use crate::console::session::{self, Console};

const PATH: &str = "/console/policy";

/// What the sample-case box holds until the admin types their own.
const SAMPLE_CASE: &str = r#"{
  "type": "payment",
  "reference": "SIM-1",
  "amount": "1250.00",
  "currency": "EUR",
  "subject": { "account_age_days": 12 },
  "ai_assessment": { "recommendation": "approve", "confidence": 0.93, "reasons": ["known payee"] }
}"#;

#[derive(Deserialize)]
struct Version {
    version: i32,
    source: String,
    document: Value,
    created_by: Option<String>,
    created_at: Option<DateTime<Utc>>,
}

#[derive(Deserialize)]
struct Versions {
    items: Vec<Version>,
}

#[derive(Deserialize)]
struct Simulation {
    results: Vec<SimulatedResult>,
}

#[derive(Deserialize)]
struct SimulatedResult {
    case_id: Option<String>,
    reference: String,
    outcome: Outcome,
    current: Option<CurrentRouting>,
}

#[derive(Deserialize)]
struct Outcome {
    priority: String,
    dual_control: bool,
    sla_hours: u32,
    queue: String,
    required_role: String,
    auto_decision: Option<String>,
    fired: Vec<FiredRule>,
    reason: String,
}

#[derive(Deserialize)]
struct FiredRule {
    name: String,
    because: Vec<String>,
}

#[derive(Deserialize)]
struct CurrentRouting {
    state: String,
    priority: String,
    dual_control: bool,
    policy_version: i32,
}

#[derive(Deserialize)]
pub struct PageQuery {
    /// A stored version to load into the editor (e.g. to go back to it).
    version: Option<i32>,
}

#[derive(Deserialize)]
pub struct EditorForm {
    #[serde(default)]
    document: String,
    #[serde(default)]
    sample: String,
    #[serde(default)]
    action: String,
}

/// What the editor holds and what the last button produced.
struct Editor<'a> {
    document: &'a str,
    sample: &'a str,
    result: Option<Markup>,
}

pub async fn page(console: Console, Query(params): Query<PageQuery>) -> Response {
    let (current, versions) = match load(&console).await {
        Ok(loaded) => loaded,
        Err(failure) => return console.fail(&failure),
    };
    let shown = params
        .version
        .and_then(|n| versions.items.iter().find(|v| v.version == n))
        .unwrap_or(&current);
    let document = serde_json::to_string_pretty(&shown.document).unwrap_or_default();
    let result = (shown.version != current.version).then(|| {
        html! {
            p role="status" {
                "Version " (shown.version) " is in the editor. Save it to make it the policy in force again."
            }
        }
    });
    let people = People::load(&console).await;
    render(
        &console,
        &people,
        &current,
        &versions,
        Editor {
            document: &document,
            sample: SAMPLE_CASE,
            result,
        },
    )
}

pub async fn act(console: Console, Form(form): Form<EditorForm>) -> Response {
    let (status, result) = match form.action.as_str() {
        "save" => match save(&console, &form.document).await {
            Ok(version) => {
                return session::success(PATH, format!("Policy saved as version {version}."));
            }
            Err(message) => (StatusCode::UNPROCESSABLE_ENTITY, error_box(&message)),
        },
        "simulate" => match simulate(&console, &form.document, &form.sample).await {
            Ok(simulation) => (StatusCode::OK, simulation_table(&simulation)),
            Err(message) => (StatusCode::UNPROCESSABLE_ENTITY, error_box(&message)),
        },
        _ => match validate(&console, &form.document).await {
            Ok(()) => (
                StatusCode::OK,
                html! { p #validation .flash.success role="status" { "valid" } },
            ),
            Err(message) => (
                StatusCode::UNPROCESSABLE_ENTITY,
                html! { div #validation { (error_box(&message)) } },
            ),
        },
    };
    let (current, versions) = match load(&console).await {
        Ok(loaded) => loaded,
        Err(failure) => return console.fail(&failure),
    };
    let editor = Editor {
        document: &form.document,
        sample: &form.sample,
        result: Some(result),
    };
    let people = People::load(&console).await;
    with_status(
        render(&console, &people, &current, &versions, editor),
        status,
    )
}

async fn load(console: &Console) -> Result<(Version, Versions), ApiFailure> {
    let current: Version = console.api.get("/policy").await?;
    let versions: Versions = console.api.get("/policy/versions").await?;
    Ok((current, versions))
}

/// The editor's text as JSON; the API checks the rest.
fn parse_document(text: &str) -> Result<Value, String> {
    serde_json::from_str(text).map_err(|e| format!("The policy is not valid JSON: {e}."))
}

/// The sample box as the simulation's `cases`: one case object or a list of them. Empty means
/// none, and the API then takes the tenant's most recent stored cases.
fn parse_sample(text: &str) -> Result<Vec<Value>, String> {
    if text.trim().is_empty() {
        return Ok(Vec::new());
    }
    match serde_json::from_str(text) {
        Ok(Value::Array(cases)) => Ok(cases),
        Ok(case @ Value::Object(_)) => Ok(vec![case]),
        Ok(_) => Err("The sample case must be a JSON object, or a list of them.".to_owned()),
        Err(e) => Err(format!("The sample case is not valid JSON: {e}.")),
    }
}

/// The API's complaint about a policy. Simulation nests the draft under `/policy`, so its JSON
/// pointers lose that prefix to point into the document as the editor shows it.
fn policy_error(failure: &ApiFailure) -> String {
    let path = failure.details.get("path").and_then(Value::as_str);
    let message = failure.details.get("message").and_then(Value::as_str);
    match (failure.code.as_str(), path, message) {
        ("invalid_policy", Some(path), Some(message)) => {
            let path = path.strip_prefix("/policy").unwrap_or(path);
            if path.is_empty() {
                format!("The policy is invalid: {message}")
            } else {
                format!("The policy is invalid at {path}: {message}")
            }
        }
        _ => failure.message.clone(),
    }
}

/// Validation is a simulation whose results are not shown: the API has no separate check, and a
/// simulation changes nothing.
async fn validate(console: &Console, document: &str) -> Result<(), String> {
    let policy = parse_document(document)?;
    let body = json!({ "policy": policy });
    console
        .api
        .post::<Value>("/policy/simulate", &body)
        .await
        .map(|_| ())
        .map_err(|failure| policy_error(&failure))
}

async fn simulate(console: &Console, document: &str, sample: &str) -> Result<Simulation, String> {
    let policy = parse_document(document)?;
    let cases = parse_sample(sample)?;
    let body = json!({ "policy": policy, "cases": cases });
    console
        .api
        .post("/policy/simulate", &body)
        .await
        .map_err(|failure| policy_error(&failure))
}

async fn save(console: &Console, document: &str) -> Result<i32, String> {
    let policy = parse_document(document)?;
    console
        .api
        .put::<Version>("/policy", &policy)
        .await
        .map(|saved| saved.version)
        .map_err(|failure| policy_error(&failure))
}

fn render(
    console: &Console,
    people: &People,
    current: &Version,
    versions: &Versions,
    editor: Editor<'_>,
) -> Response {
    let content = html! {
        h1 { "Decision policy" }
        section.panel aria-labelledby="current-heading" {
            h2 #current-heading { "In force" }
            dl.facts {
                dt { "Version" }
                dd #policy-version { (current.version) }
                dt { "Source" }
                dd { (source_label(&current.source)) }
                dt { "Saved" }
                dd { (optional_time(current.created_at.as_ref())) }
                dt { "By" }
                dd { (by(people, current)) }
            }
        }
        form #policy-editor method="post" action=(PATH) {
            (csrf_input(&console.csrf))
            div #policy-result aria-live="polite" {
                @if let Some(result) = editor.result { (result) }
            }
            div.grid {
                div {
                    label for="policy-document" {
                        "Policy (JSON)"
                        span.hint { "Saving stores a new version; it routes every case submitted from then on." }
                    }
                    textarea #policy-document .code name="document" spellcheck="false" required {
                        (editor.document)
                    }
                }
                div {
                    label for="sample-case" {
                        "Sample case (JSON)"
                        span.hint {
                            "For Simulate: a case, or a list of cases. Leave empty to simulate the 100 most recent stored cases."
                        }
                    }
                    textarea #sample-case .code name="sample" spellcheck="false" {
                        (editor.sample)
                    }
                }
            }
            div.actions {
                button #validate .secondary type="submit" name="action" value="validate" { "Validate" }
                button #simulate .secondary type="submit" name="action" value="simulate" { "Simulate" }
                button #save type="submit" name="action" value="save" { "Save as new version" }
            }
        }
        h2 { "History" }
        table #policy-versions {
            thead {
                tr {
                    th scope="col" { "Version" }
                    th scope="col" { "Source" }
                    th scope="col" { "Saved" }
                    th scope="col" { "By" }
                    th scope="col" { "Editor" }
                }
            }
            tbody {
                @for version in &versions.items {
                    tr data-version=(version.version) {
                        td {
                            (version.version)
                            @if version.version == current.version { " " (badge("active")) }
                        }
                        td { (source_label(&version.source)) }
                        td { (optional_time(version.created_at.as_ref())) }
                        td { (by(people, version)) }
                        td { a href={ (PATH) "?version=" (version.version) } { "Load version " (version.version) } }
                    }
                }
            }
        }
    };
    layout::page(console, "Policy", PATH, content)
}

/// Who stored a version, by name; "—" for the built-in default.
fn by(people: &People, version: &Version) -> String {
    version
        .created_by
        .as_deref()
        .map_or_else(|| "—".to_owned(), |actor| people.actor(actor))
}

fn source_label(source: &str) -> &str {
    match source {
        "environment" => "default from the environment",
        "tenant" => "stored by an admin",
        other => other,
    }
}

fn simulation_table(simulation: &Simulation) -> Markup {
    html! {
        h2 { "Simulation" }
        @if simulation.results.is_empty() {
            p #simulation { "No cases to simulate." }
        } @else {
            table #simulation .simulation {
                thead {
                    tr {
                        th scope="col" { "Case" }
                        th scope="col" { "Priority" }
                        th scope="col" { "Dual control" }
                        th scope="col" { "SLA" }
                        th scope="col" { "Queue" }
                        th scope="col" { "Decided by" }
                        th scope="col" { "Rules fired" }
                        th scope="col" { "Why" }
                        th scope="col" { "Routed today" }
                    }
                }
                tbody {
                    @for result in &simulation.results { (simulated_row(result)) }
                }
            }
        }
    }
}

fn simulated_row(result: &SimulatedResult) -> Markup {
    let outcome = &result.outcome;
    let reference = if result.reference.is_empty() {
        "(no reference)"
    } else {
        &result.reference
    };
    html! {
        tr {
            td {
                @match &result.case_id {
                    Some(id) => a href={ "/console/cases/" (super::segment(id)) } { (reference) },
                    None => (reference),
                }
            }
            td { (badge(&outcome.priority)) }
            td { @if outcome.dual_control { "yes" } @else { "no" } }
            td { (outcome.sla_hours) " h" }
            td { (outcome.queue) }
            td {
                @match &outcome.auto_decision {
                    Some(decision) => { "automatic: " (badge(decision)) },
                    None => { (outcome.required_role) },
                }
            }
            td {
                @if outcome.fired.is_empty() { span.muted { "none" } }
                ul {
                    @for rule in &outcome.fired {
                        li { strong { (rule.name) } @if !rule.because.is_empty() { ": " (rule.because.join("; ")) } }
                    }
                }
            }
            td { (outcome.reason) }
            td {
                @match &result.current {
                    Some(now) => {
                        (now.state) ", " (now.priority)
                        @if now.dual_control { ", dual control" }
                        " (v" (now.policy_version) ")"
                    },
                    None => span.muted { "—" },
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failure(code: &str, message: &str, details: Value) -> ApiFailure {
        ApiFailure {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            code: code.to_owned(),
            message: message.to_owned(),
            details,
        }
    }

    #[test]
    fn policy_errors_point_into_the_document_as_edited() {
        let nested = failure(
            "invalid_policy",
            "The policy is invalid at /policy/rules/1/when/op: unknown operator",
            json!({ "path": "/policy/rules/1/when/op", "message": "unknown operator" }),
        );
        assert_eq!(
            policy_error(&nested),
            "The policy is invalid at /rules/1/when/op: unknown operator"
        );
        let direct = failure(
            "invalid_policy",
            "…",
            json!({ "path": "/defaults", "message": "must be an object" }),
        );
        assert_eq!(
            policy_error(&direct),
            "The policy is invalid at /defaults: must be an object"
        );
        let whole = failure(
            "invalid_policy",
            "…",
            json!({ "path": "/policy", "message": "must be an object" }),
        );
        assert_eq!(
            policy_error(&whole),
            "The policy is invalid: must be an object"
        );
        let other = failure(
            "validation_failed",
            "cases[0].currency: unknown",
            json!({ "field": "cases[0].currency" }),
        );
        assert_eq!(policy_error(&other), "cases[0].currency: unknown");
    }

    #[test]
    fn the_sample_is_one_case_a_list_or_nothing() {
        assert_eq!(parse_sample("  \n"), Ok(Vec::new()));
        assert_eq!(
            parse_sample(r#"{"type":"a"}"#),
            Ok(vec![json!({ "type": "a" })])
        );
        assert_eq!(
            parse_sample(r#"[{"type":"a"},{"type":"b"}]"#).map(|c| c.len()),
            Ok(2)
        );
        assert!(parse_sample("42").is_err());
        assert!(parse_sample("{").is_err_and(|e| e.contains("not valid JSON")));
    }

    #[test]
    fn the_built_in_sample_is_a_case() {
        assert_eq!(parse_sample(SAMPLE_CASE).map(|c| c.len()), Ok(1));
    }

    #[test]
    fn the_document_must_be_json() {
        assert!(parse_document("{\"rules\": []}").is_ok());
        assert!(
            parse_document("rules: []")
                .is_err_and(|e| e.starts_with("The policy is not valid JSON"))
        );
    }
}
