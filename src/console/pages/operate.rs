//! Operator pages: tasks (list, create with a schedule preview, detail with pause / resume / run
//! now), runs with their pipeline steps, queue depth and live workers, and the console's proxy of
//! the API's event stream that keeps `[data-live]` regions fresh.

use std::str::FromStr;

use axum::body::{Body, Bytes};
use axum::extract::{Path, Query};
use axum::http::{HeaderName, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Form, Router};
use chrono::{DateTime, Utc};
use futures_util::StreamExt;
use maud::{Markup, html};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::app::AppState;
use crate::auth::Role;
use crate::console::client::ApiFailure;
use crate::console::layout::{self, badge, csrf_input, json_block, optional_time, time};
use crate::console::session::{self, Console};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/console/tasks", get(tasks_page).post(create_task))
        .route("/console/tasks/new", get(new_task_page))
        .route("/console/tasks/{id}", get(task_page))
        .route("/console/tasks/{id}/runs", get(task_runs_fragment))
        .route("/console/tasks/{id}/pause", post(pause))
        .route("/console/tasks/{id}/resume", post(resume))
        .route("/console/tasks/{id}/run-now", post(run_now))
        .route("/console/runs", get(runs_page))
        .route("/console/runs/table", get(runs_fragment))
        .route("/console/runs/{id}", get(run_page))
        .route("/console/runs/{id}/detail", get(run_fragment))
        .route("/console/workers", get(workers_page))
        .route("/console/workers/live", get(workers_fragment))
        .route("/console/events", get(events))
}

const TASK_STATUSES: &[&str] = &["active", "paused", "completed"];
const SCHEDULE_KINDS: &[&str] = &["cron", "rrule", "once", "event", "manual"];
const RUN_STATUSES: &[&str] = &[
    "running",
    "succeeded",
    "failed",
    "lost",
    "released",
    "missed",
];
/// Runs shown on a task's page (the runs page lists the rest).
const TASK_RUNS: &str = "20";
/// Job events are what change runs, queues and workers; other topics need no refresh here.
const JOB_EVENTS: &str = "/console/events?topic=job.";
/// Heartbeats publish no events, so the workers page also refreshes on a timer (seconds).
const WORKERS_REFRESH: u32 = 10;

// ---------------------------------------------------------------------------------------------
// What the API returns (only the fields these pages show).

#[derive(Deserialize)]
struct ApiPage<T> {
    items: Vec<T>,
    next_cursor: Option<String>,
}

#[derive(Deserialize)]
struct Task {
    id: String,
    title: String,
    description: String,
    schedule_kind: String,
    schedule_expr: String,
    timezone: String,
    payload: Value,
    priority: i32,
    max_retries: i32,
    timeout_seconds: i32,
    misfire_grace_seconds: i32,
    concurrency: i32,
    status: String,
    next_run_at: Option<DateTime<Utc>>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    #[serde(default)]
    next_fire_times: Vec<DateTime<Utc>>,
}

#[derive(Deserialize)]
struct Created {
    id: String,
}

#[derive(Deserialize)]
struct Preview {
    next_fire_times: Vec<DateTime<Utc>>,
}

#[derive(Deserialize)]
struct Job {
    id: String,
}

#[derive(Deserialize)]
struct Run {
    id: String,
    job_id: String,
    task_id: Option<String>,
    kind: String,
    attempt: i32,
    status: String,
    worker_id: String,
    queued_at: DateTime<Utc>,
    started_at: DateTime<Utc>,
    finished_at: Option<DateTime<Utc>>,
    start_delay_seconds: f64,
    duration_seconds: Option<f64>,
    #[serde(default)]
    input: Value,
    output: Option<Value>,
    error: Option<String>,
    #[serde(default)]
    steps: Vec<Step>,
}

#[derive(Deserialize)]
struct Step {
    id: String,
    position: i32,
    tool: String,
    status: String,
    attempts: u32,
    input: Option<Value>,
    output: Option<Value>,
    error: Option<String>,
    started_at: DateTime<Utc>,
    duration_seconds: Option<f64>,
}

#[derive(Deserialize)]
struct Worker {
    id: String,
    role: String,
    /// Only platform admins are shown where workers run.
    hostname: Option<String>,
    pid: Option<i32>,
    version: String,
    started_at: DateTime<Utc>,
    heartbeat_at: DateTime<Utc>,
    jobs_in_hand: i64,
}

#[derive(Deserialize)]
struct QueueDepth {
    kind: String,
    status: String,
    jobs: i64,
    oldest_run_at: Option<DateTime<Utc>>,
}

// ---------------------------------------------------------------------------------------------
// Tasks

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct TaskFilters {
    status: Option<String>,
    kind: Option<String>,
    q: Option<String>,
    cursor: Option<String>,
}

pub async fn tasks_page(console: Console, Query(filters): Query<TaskFilters>) -> Response {
    let pairs = [
        ("status", filters.status.as_deref()),
        ("kind", filters.kind.as_deref()),
        ("q", filters.q.as_deref()),
    ];
    let mut api_pairs = pairs.to_vec();
    api_pairs.push(("cursor", filters.cursor.as_deref()));
    let page: ApiPage<Task> = match console.api.get(&with_query("/tasks", &api_pairs)).await {
        Ok(page) => page,
        Err(failure) => return console.fail(&failure),
    };
    let next = page.next_cursor.as_deref().map(|cursor| {
        let mut next_pairs = pairs.to_vec();
        next_pairs.push(("cursor", Some(cursor)));
        with_query("/console/tasks", &next_pairs)
    });
    let first = non_empty(filters.cursor.as_deref())
        .is_some()
        .then(|| with_query("/console/tasks", &pairs));
    let content = html! {
        h1 { "Tasks" }
        @if console.user.at_least(Role::Supervisor) {
            p { a #new-task .button href="/console/tasks/new" { "New task" } }
        }
        form.filters method="get" action="/console/tasks" {
            div {
                label for="filter-status" { "Status" }
                (select("filter-status", "status", "Any status", TASK_STATUSES, filters.status.as_deref()))
            }
            div {
                label for="filter-kind" { "Schedule" }
                (select("filter-kind", "kind", "Any schedule", SCHEDULE_KINDS, filters.kind.as_deref()))
            }
            div {
                label for="filter-q" { "Title or description contains" }
                input #filter-q type="search" name="q" value=[filters.q.as_deref()];
            }
            button.secondary type="submit" { "Filter" }
        }
        table #tasks {
            thead {
                tr {
                    th scope="col" { "Title" }
                    th scope="col" { "Schedule" }
                    th scope="col" { "Status" }
                    th scope="col" { "Next run" }
                    th scope="col" { "Priority" }
                }
            }
            tbody {
                @for task in &page.items {
                    tr data-task-id=(task.id) {
                        td { a href={ "/console/tasks/" (task.id) } { (task.title) } }
                        td { (task.schedule_kind) " " code { (task.schedule_expr) } " " span.muted { (task.timezone) } }
                        td { (badge(&task.status)) }
                        td { (optional_time(task.next_run_at.as_ref())) }
                        td { (task.priority) }
                    }
                }
                @if page.items.is_empty() {
                    tr { td colspan="5" .muted { "No tasks match." } }
                }
            }
        }
        (pager(first.as_deref(), next.as_deref()))
    };
    layout::page(&console, "Tasks", "/console/tasks", content)
}

/// The create form as typed: every field is text so that what was typed comes back unchanged
/// when the API refuses it.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct TaskForm {
    title: String,
    description: String,
    schedule_kind: String,
    schedule_expr: String,
    timezone: String,
    payload: String,
    priority: String,
    max_retries: String,
    timeout_seconds: String,
    /// Which button was pressed: `preview` or `create`.
    action: String,
}

impl Default for TaskForm {
    /// A new task starts with the API's defaults, shown so they can be changed.
    fn default() -> Self {
        Self {
            title: String::new(),
            description: String::new(),
            schedule_kind: "cron".to_owned(),
            schedule_expr: String::new(),
            timezone: "UTC".to_owned(),
            payload: "{}".to_owned(),
            priority: "0".to_owned(),
            max_retries: "3".to_owned(),
            timeout_seconds: "300".to_owned(),
            action: String::new(),
        }
    }
}

/// A problem with one form field (or with the whole form when `field` is `None`).
#[derive(Debug, Clone, PartialEq, Eq)]
struct FormError {
    field: Option<&'static str>,
    message: String,
}

impl FormError {
    fn from_failure(failure: &ApiFailure) -> Self {
        let api_field = failure.field();
        let field = api_field.and_then(form_field);
        // Beside the field its reason is enough; a path inside the payload stays in the message.
        let message = match field {
            Some(field) if api_field == Some(field) => failure
                .details
                .get("reason")
                .and_then(Value::as_str)
                .unwrap_or(&failure.message)
                .to_owned(),
            _ => failure.message.clone(),
        };
        Self { field, message }
    }
}

/// The form field for a field the API named in a 422 (payload errors name a path inside it).
fn form_field(api_field: &str) -> Option<&'static str> {
    const FIELDS: &[&str] = &[
        "title",
        "description",
        "schedule_kind",
        "schedule_expr",
        "timezone",
        "priority",
        "max_retries",
        "timeout_seconds",
    ];
    if api_field == "payload" || api_field.starts_with("payload.") {
        return Some("payload");
    }
    FIELDS.iter().find(|f| **f == api_field).copied()
}

fn timezone_or_utc(form: &TaskForm) -> &str {
    match form.timezone.trim() {
        "" => "UTC",
        tz => tz,
    }
}

/// The body of `POST /tasks/preview`.
fn preview_body(form: &TaskForm) -> Value {
    json!({
        "schedule_kind": form.schedule_kind,
        "schedule_expr": form.schedule_expr,
        "timezone": timezone_or_utc(form),
    })
}

/// The body of `POST /tasks`, or the field that is not even well-formed (the API checks the rest).
fn create_body(form: &TaskForm) -> Result<Value, FormError> {
    let mut body = Map::new();
    body.insert("title".into(), json!(form.title));
    body.insert("description".into(), json!(form.description));
    body.insert("schedule_kind".into(), json!(form.schedule_kind));
    body.insert("schedule_expr".into(), json!(form.schedule_expr));
    body.insert("timezone".into(), json!(timezone_or_utc(form)));
    if !form.payload.trim().is_empty() {
        let payload: Value = serde_json::from_str(&form.payload).map_err(|e| FormError {
            field: Some("payload"),
            message: format!("is not valid JSON: {e}"),
        })?;
        body.insert("payload".into(), payload);
    }
    for (field, text) in [
        ("priority", &form.priority),
        ("max_retries", &form.max_retries),
        ("timeout_seconds", &form.timeout_seconds),
    ] {
        let text = text.trim();
        if text.is_empty() {
            continue;
        }
        let number: i32 = text.parse().map_err(|_| FormError {
            field: Some(field),
            message: "must be a whole number".to_owned(),
        })?;
        body.insert(field.into(), json!(number));
    }
    Ok(Value::Object(body))
}

/// What the create form shows besides the values: an error, and the fire times of a preview.
#[derive(Default)]
struct FormView {
    error: Option<FormError>,
    preview: Option<Vec<DateTime<Utc>>>,
}

pub async fn new_task_page(console: Console) -> Response {
    task_form_page(
        &console,
        StatusCode::OK,
        &TaskForm::default(),
        &FormView::default(),
    )
}

/// Creates the task, or (the `#preview` button) shows the schedule's next fire times first.
pub async fn create_task(console: Console, Form(form): Form<TaskForm>) -> Response {
    if form.action == "preview" {
        return match console
            .api
            .post::<Preview>("/tasks/preview", &preview_body(&form))
            .await
        {
            Ok(preview) => {
                let view = FormView {
                    error: None,
                    preview: Some(preview.next_fire_times),
                };
                task_form_page(&console, StatusCode::OK, &form, &view)
            }
            Err(failure) => form_failed(&console, &form, &failure),
        };
    }
    let body = match create_body(&form) {
        Ok(body) => body,
        Err(error) => {
            let view = FormView {
                error: Some(error),
                preview: None,
            };
            return task_form_page(&console, StatusCode::UNPROCESSABLE_ENTITY, &form, &view);
        }
    };
    match console.api.post::<Created>("/tasks", &body).await {
        Ok(task) => session::success(&format!("/console/tasks/{}", task.id), "Task created."),
        Err(failure) => form_failed(&console, &form, &failure),
    }
}

/// The form again with the API's objection beside the field it named, values kept.
fn form_failed(console: &Console, form: &TaskForm, failure: &ApiFailure) -> Response {
    if failure.needs_sign_in() {
        return session::sign_in_redirect("/console/tasks/new");
    }
    let status = if failure.status.is_client_error() {
        failure.status
    } else {
        StatusCode::BAD_GATEWAY
    };
    let view = FormView {
        error: Some(FormError::from_failure(failure)),
        preview: None,
    };
    task_form_page(console, status, form, &view)
}

fn task_form_page(
    console: &Console,
    status: StatusCode,
    form: &TaskForm,
    view: &FormView,
) -> Response {
    let error_for = |field: &str| {
        view.error
            .as_ref()
            .filter(|e| e.field == Some(field))
            .map(|e| e.message.as_str())
    };
    let focus = view.error.as_ref().and_then(|e| e.field).unwrap_or("title");
    let content = html! {
        h1 { "New task" }
        @if !console.user.at_least(Role::Supervisor) {
            p.muted { "You can preview schedules here; creating tasks needs the supervisor role." }
        }
        @if let Some(error) = &view.error {
            div.flash.error role="alert" #form-error {
                @match error.field {
                    Some(field) => { "Check " a href={ "#" (field) } { (label_of(field)) } ": " (error.message) }
                    None => { (error.message) }
                }
            }
        }
        form.stack.task-form method="post" action="/console/tasks" {
            (csrf_input(&console.csrf))
            fieldset {
                legend { "Task" }
                div {
                    label for="title" { "Title" }
                    input #title type="text" name="title" required maxlength="200" value=(form.title)
                        aria-invalid=[error_for("title").map(|_| "true")]
                        aria-describedby=[error_for("title").map(|_| "title-error")]
                        data-autofocus[focus == "title"];
                    (field_error("title", error_for("title")))
                }
                div {
                    label for="description" { "Description" span.hint { "Optional." } }
                    textarea #description name="description"
                        aria-invalid=[error_for("description").map(|_| "true")]
                        aria-describedby=[error_for("description").map(|_| "description-error")]
                        data-autofocus[focus == "description"] {
                        (form.description)
                    }
                    (field_error("description", error_for("description")))
                }
            }
            fieldset {
                legend { "Schedule" }
                div {
                    label for="schedule_kind" { "Kind" }
                    select #schedule_kind name="schedule_kind"
                        aria-invalid=[error_for("schedule_kind").map(|_| "true")]
                        aria-describedby=[error_for("schedule_kind").map(|_| "schedule_kind-error")]
                        data-autofocus[focus == "schedule_kind"] {
                        @for kind in SCHEDULE_KINDS {
                            option value=(kind) selected[form.schedule_kind == *kind] { (kind_label(kind)) }
                        }
                    }
                    (field_error("schedule_kind", error_for("schedule_kind")))
                }
                div {
                    label for="schedule_expr" {
                        "Expression"
                        span.hint {
                            "Cron: " code { "0 8 * * 1-5" } " (5 or 6 fields). RRULE: " code { "FREQ=WEEKLY;BYDAY=MO" }
                            ". Once: " code { "2030-01-01T08:00:00Z" } ". Event: a topic such as "
                            code { "orders.created" } ". Manual: leave empty."
                        }
                    }
                    input #schedule_expr type="text" name="schedule_expr" value=(form.schedule_expr)
                        autocomplete="off" spellcheck="false"
                        aria-invalid=[error_for("schedule_expr").map(|_| "true")]
                        aria-describedby=[error_for("schedule_expr").map(|_| "schedule_expr-error")]
                        data-autofocus[focus == "schedule_expr"];
                    (field_error("schedule_expr", error_for("schedule_expr")))
                }
                div {
                    label for="timezone" { "Time zone" span.hint { "IANA name such as Europe/Chisinau." } }
                    input #timezone type="text" name="timezone" value=(form.timezone) autocomplete="off"
                        spellcheck="false"
                        aria-invalid=[error_for("timezone").map(|_| "true")]
                        aria-describedby=[error_for("timezone").map(|_| "timezone-error")]
                        data-autofocus[focus == "timezone"];
                    (field_error("timezone", error_for("timezone")))
                }
                div {
                    // Without `formnovalidate` an empty title would block the preview.
                    button #preview .secondary type="submit" name="action" value="preview" formnovalidate {
                        "Preview fire times"
                    }
                }
                @if let Some(times) = &view.preview {
                    div.preview aria-live="polite" {
                        (fire_times(times, &form.schedule_kind, &form.schedule_expr, timezone_or_utc(form)))
                    }
                }
            }
            fieldset {
                legend { "Work" }
                div {
                    label for="payload" {
                        "Payload"
                        span.hint { "JSON handed to the job; a " code { "pipeline" } " list makes it a pipeline." }
                    }
                    textarea #payload .payload name="payload" spellcheck="false"
                        aria-invalid=[error_for("payload").map(|_| "true")]
                        aria-describedby=[error_for("payload").map(|_| "payload-error")]
                        data-autofocus[focus == "payload"] {
                        (form.payload)
                    }
                    (field_error("payload", error_for("payload")))
                }
                div.grid {
                    (number_field("priority", "Priority", "-1000 to 1000; higher runs first.", &form.priority, error_for("priority")))
                    (number_field("max_retries", "Max retries", "0 to 100.", &form.max_retries, error_for("max_retries")))
                    (number_field("timeout_seconds", "Timeout (seconds)", "1 to 86400.", &form.timeout_seconds, error_for("timeout_seconds")))
                }
            }
            div.actions {
                button #create-task type="submit" name="action" value="create" { "Create task" }
                a.button.secondary href="/console/tasks" { "Cancel" }
            }
        }
    };
    let mut response = layout::page(console, "New task", "/console/tasks", content);
    *response.status_mut() = status;
    response
}

fn label_of(field: &str) -> &str {
    match field {
        "title" => "Title",
        "description" => "Description",
        "schedule_kind" => "Kind",
        "schedule_expr" => "Expression",
        "timezone" => "Time zone",
        "payload" => "Payload",
        "priority" => "Priority",
        "max_retries" => "Max retries",
        "timeout_seconds" => "Timeout",
        other => other,
    }
}

fn kind_label(kind: &str) -> &str {
    match kind {
        "cron" => "Cron expression",
        "rrule" => "Recurrence rule (RRULE)",
        "once" => "Once, at an instant",
        "event" => "On an event",
        "manual" => "Manual (run now only)",
        other => other,
    }
}

fn field_error(field: &str, message: Option<&str>) -> Markup {
    html! {
        @if let Some(message) = message {
            p.field-error id={ (field) "-error" } { (message) }
        }
    }
}

fn number_field(name: &str, label: &str, hint: &str, value: &str, error: Option<&str>) -> Markup {
    html! {
        div {
            label for=(name) { (label) span.hint { (hint) } }
            input id=(name) type="number" name=(name) value=(value) step="1"
                aria-invalid=[error.map(|_| "true")]
                aria-describedby=[error.map(|_| format!("{name}-error"))]
                data-autofocus[error.is_some()];
            (field_error(name, error))
        }
    }
}

/// The next fire times as `#fire-times` (one `<li>` each, in UTC and the task's zone), or what
/// starts the task when it has no clock.
fn fire_times(times: &[DateTime<Utc>], kind: &str, expr: &str, timezone: &str) -> Markup {
    let tz = chrono_tz::Tz::from_str(timezone).ok();
    html! {
        @match kind {
            "event" => p { "Runs each time an event on topic " code { (expr.trim()) } " is published." },
            "manual" => p { "Runs only when started with Run now." },
            _ if times.is_empty() => p { "No more fire times." },
            _ => p { "Next fire times:" },
        }
        ol #fire-times {
            @for at in times {
                li {
                    (time(at))
                    @if let Some(tz) = tz.filter(|tz| *tz != chrono_tz::UTC) {
                        " · " span.muted { (at.with_timezone(&tz).format("%a %Y-%m-%d %H:%M:%S")) " " (timezone) }
                    }
                }
            }
        }
    }
}

pub async fn task_page(console: Console, Path(id): Path<String>) -> Response {
    if !valid_id(&id) {
        return not_found();
    }
    let runs_path = with_query(
        "/runs",
        &[("task_id", Some(id.as_str())), ("limit", Some(TASK_RUNS))],
    );
    let task_path = format!("/tasks/{id}");
    let (task, runs) = tokio::join!(
        console.api.get::<Task>(&task_path),
        console.api.get::<ApiPage<Run>>(&runs_path),
    );
    let (task, runs) = match (task, runs) {
        (Ok(task), Ok(runs)) => (task, runs),
        (Err(failure), _) | (_, Err(failure)) => return console.fail(&failure),
    };
    let can_write = console.user.at_least(Role::Supervisor);
    let content = html! {
        h1 { (task.title) " " span #task-status { (badge(&task.status)) } }
        @if !task.description.is_empty() { p { (task.description) } }
        @if can_write {
            div.actions {
                form.inline method="post" action={ "/console/tasks/" (task.id) "/pause" } {
                    (csrf_input(&console.csrf))
                    button #pause .secondary type="submit" disabled[task.status != "active"] { "Pause" }
                }
                form.inline method="post" action={ "/console/tasks/" (task.id) "/resume" } {
                    (csrf_input(&console.csrf))
                    button #resume .secondary type="submit" disabled[task.status != "paused"] { "Resume" }
                }
                form.inline method="post" action={ "/console/tasks/" (task.id) "/run-now" } {
                    (csrf_input(&console.csrf))
                    button #run-now type="submit" {
                        "Run now"
                    }
                }
            }
        }
        div.grid {
            section.panel aria-labelledby="schedule-heading" {
                h2 #schedule-heading { "Schedule" }
                dl.facts {
                    dt { "Kind" } dd { (kind_label(&task.schedule_kind)) }
                    @if !task.schedule_expr.is_empty() {
                        dt { "Expression" } dd { pre { code { (task.schedule_expr) } } }
                    }
                    dt { "Time zone" } dd { (task.timezone) }
                    dt { "Next run" } dd { (optional_time(task.next_run_at.as_ref())) }
                    dt { "Misfire grace" } dd { (task.misfire_grace_seconds) " s" }
                }
                (fire_times(&task.next_fire_times, &task.schedule_kind, &task.schedule_expr, &task.timezone))
            }
            section.panel aria-labelledby="limits-heading" {
                h2 #limits-heading { "Execution" }
                dl.facts {
                    dt { "Priority" } dd { (task.priority) }
                    dt { "Max retries" } dd { (task.max_retries) }
                    dt { "Timeout" } dd { (task.timeout_seconds) " s" }
                    dt { "Concurrency" } dd { (task.concurrency) }
                    dt { "Created" } dd { (time(&task.created_at)) }
                    dt { "Updated" } dd { (time(&task.updated_at)) }
                    dt { "ID" } dd { code { (task.id) } }
                }
            }
        }
        h2 { "Payload" }
        (json_block(&task.payload))
        h2 { "Recent runs " span.live { "live" } }
        div #task-runs data-live={ "/console/tasks/" (task.id) "/runs" } data-live-events=(JOB_EVENTS) {
            (runs_table(&runs.items, false))
        }
        p { a href=(with_query("/console/runs", &[("task_id", Some(task.id.as_str()))])) { "All runs of this task" } }
    };
    layout::page(&console, &task.title, "/console/tasks", content)
}

pub async fn task_runs_fragment(console: Console, Path(id): Path<String>) -> Response {
    if !valid_id(&id) {
        return not_found();
    }
    let path = with_query(
        "/runs",
        &[("task_id", Some(id.as_str())), ("limit", Some(TASK_RUNS))],
    );
    match console.api.get::<ApiPage<Run>>(&path).await {
        Ok(runs) => fragment(runs_table(&runs.items, false)),
        Err(failure) => fragment_failed(&failure),
    }
}

pub async fn pause(console: Console, Path(id): Path<String>) -> Response {
    task_action(&console, &id, "pause", "Task paused.").await
}

pub async fn resume(console: Console, Path(id): Path<String>) -> Response {
    task_action(&console, &id, "resume", "Task resumed.").await
}

pub async fn run_now(console: Console, Path(id): Path<String>) -> Response {
    if !valid_id(&id) {
        return not_found();
    }
    let back = format!("/console/tasks/{id}");
    match console
        .api
        .post::<Job>(&format!("/tasks/{id}/run_now"), &json!({}))
        .await
    {
        Ok(job) => session::success(&back, format!("Run queued (job {}).", job.id)),
        Err(failure) => post_failed(&back, &failure),
    }
}

async fn task_action(console: &Console, id: &str, action: &str, done: &str) -> Response {
    if !valid_id(id) {
        return not_found();
    }
    let back = format!("/console/tasks/{id}");
    match console
        .api
        .send(
            axum::http::Method::POST,
            &format!("/tasks/{id}/{action}"),
            None,
        )
        .await
    {
        Ok(()) => session::success(&back, done),
        Err(failure) => post_failed(&back, &failure),
    }
}

// ---------------------------------------------------------------------------------------------
// Runs

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct RunFilters {
    status: Option<String>,
    task_id: Option<String>,
    job_id: Option<String>,
    cursor: Option<String>,
}

impl RunFilters {
    fn pairs(&self) -> [(&'static str, Option<&str>); 3] {
        [
            ("status", self.status.as_deref()),
            ("task_id", self.task_id.as_deref()),
            ("job_id", self.job_id.as_deref()),
        ]
    }
}

pub async fn runs_page(console: Console, Query(filters): Query<RunFilters>) -> Response {
    let pairs = filters.pairs();
    let mut api_pairs = pairs.to_vec();
    api_pairs.push(("cursor", filters.cursor.as_deref()));
    let page: ApiPage<Run> = match console.api.get(&with_query("/runs", &api_pairs)).await {
        Ok(page) => page,
        Err(failure) => return console.fail(&failure),
    };
    let next = page.next_cursor.as_deref().map(|cursor| {
        let mut next_pairs = pairs.to_vec();
        next_pairs.push(("cursor", Some(cursor)));
        with_query("/console/runs", &next_pairs)
    });
    let paged = non_empty(filters.cursor.as_deref()).is_some();
    let first = paged.then(|| with_query("/console/runs", &pairs));
    let content = html! {
        h1 { "Runs" }
        form.filters method="get" action="/console/runs" {
            div {
                label for="filter-status" { "Status" }
                (select("filter-status", "status", "Any status", RUN_STATUSES, filters.status.as_deref()))
            }
            @if let Some(task_id) = non_empty(filters.task_id.as_deref()) {
                div {
                    label for="filter-task" { "Task ID" }
                    input #filter-task type="text" name="task_id" value=(task_id);
                }
            }
            @if let Some(job_id) = non_empty(filters.job_id.as_deref()) {
                div {
                    label for="filter-job" { "Job ID" }
                    input #filter-job type="text" name="job_id" value=(job_id);
                }
            }
            button.secondary type="submit" { "Filter" }
        }
        @if paged {
            (runs_table(&page.items, true))
        } @else {
            p { span.live { "live" } }
            div #recent-runs data-live=(with_query("/console/runs/table", &pairs)) data-live-events=(JOB_EVENTS) {
                (runs_table(&page.items, true))
            }
        }
        (pager(first.as_deref(), next.as_deref()))
    };
    layout::page(&console, "Runs", "/console/runs", content)
}

/// The first page of the runs list, for its live region.
pub async fn runs_fragment(console: Console, Query(filters): Query<RunFilters>) -> Response {
    match console
        .api
        .get::<ApiPage<Run>>(&with_query("/runs", &filters.pairs()))
        .await
    {
        Ok(page) => fragment(runs_table(&page.items, true)),
        Err(failure) => fragment_failed(&failure),
    }
}

fn runs_table(runs: &[Run], show_task: bool) -> Markup {
    html! {
        table #runs {
            thead {
                tr {
                    th scope="col" { "Run" }
                    @if show_task { th scope="col" { "Task" } }
                    th scope="col" { "Status" }
                    th scope="col" { "Attempt" }
                    th scope="col" { "Started" }
                    th scope="col" { "Duration" }
                    th scope="col" { "Worker" }
                    th scope="col" { "Error" }
                }
            }
            tbody {
                @for run in runs {
                    tr data-run-id=(run.id) data-status=(run.status) {
                        td { a href={ "/console/runs/" (run.id) } title=(run.id) { code { (short_id(&run.id)) } } }
                        @if show_task {
                            td {
                                @match &run.task_id {
                                    Some(task_id) => a href={ "/console/tasks/" (task_id) } title=(task_id) { code { (short_id(task_id)) } },
                                    None => span.muted { (run.kind) },
                                }
                            }
                        }
                        td { (badge(&run.status)) }
                        td { (run.attempt) }
                        td { (time(&run.started_at)) }
                        td { (run.duration_seconds.map(duration).unwrap_or_else(|| "—".to_owned())) }
                        td { code { (short_id(&run.worker_id)) } }
                        td { @if let Some(error) = &run.error { (truncate(error, 120)) } }
                    }
                }
                @if runs.is_empty() {
                    tr { td colspan=(if show_task { 8 } else { 7 }) .muted { "No runs yet." } }
                }
            }
        }
    }
}

pub async fn run_page(console: Console, Path(id): Path<String>) -> Response {
    if !valid_id(&id) {
        return not_found();
    }
    let run: Run = match console.api.get(&format!("/runs/{id}")).await {
        Ok(run) => run,
        Err(failure) => return console.fail(&failure),
    };
    // Finished runs do not change; refreshing them would only fold open details.
    let live = (run.status == "running").then(|| format!("/console/runs/{}/detail", run.id));
    let content = html! {
        h1 { "Run " code { (short_id(&run.id)) } }
        @if live.is_some() { p { span.live { "live" } } }
        div #run-detail data-live=[live.as_deref()] data-live-events=[live.as_ref().map(|_| JOB_EVENTS)] {
            (run_detail(&run))
        }
    };
    layout::page(&console, "Run", "/console/runs", content)
}

pub async fn run_fragment(console: Console, Path(id): Path<String>) -> Response {
    if !valid_id(&id) {
        return not_found();
    }
    match console.api.get::<Run>(&format!("/runs/{id}")).await {
        Ok(run) => fragment(run_detail(&run)),
        Err(failure) => fragment_failed(&failure),
    }
}

fn run_detail(run: &Run) -> Markup {
    html! {
        dl.facts {
            dt { "Status" } dd #run-status { (badge(&run.status)) }
            dt { "Task" }
            dd {
                @match &run.task_id {
                    Some(task_id) => a href={ "/console/tasks/" (task_id) } { code { (task_id) } },
                    None => span.muted { "—" },
                }
            }
            dt { "Job" }
            dd {
                code { (run.job_id) } " · "
                a href=(with_query("/console/runs", &[("job_id", Some(run.job_id.as_str()))])) { "all attempts" }
            }
            dt { "Kind" } dd { (run.kind) }
            dt { "Attempt" } dd { (run.attempt) }
            dt { "Worker" } dd { code { (run.worker_id) } }
            dt { "Due" } dd { (time(&run.queued_at)) }
            dt { "Started" } dd { (time(&run.started_at)) " (" (duration(run.start_delay_seconds)) " after due)" }
            dt { "Finished" } dd { (optional_time(run.finished_at.as_ref())) }
            dt { "Duration" } dd { (run.duration_seconds.map(duration).unwrap_or_else(|| "—".to_owned())) }
        }
        @if let Some(error) = &run.error {
            h2 { "Error" }
            pre.error { (error) }
        }
        h2 { "Steps" }
        @if run.steps.is_empty() {
            p.muted { "This job has no pipeline steps." }
        } @else {
            p.muted { "Every step of the job so far, across its attempts." }
        }
        ol #steps .steps {
            @for step in &run.steps {
                li data-step-id=(step.id) data-status=(step.status) {
                    h3 { (step.position + 1) ". " (step.id) " " (badge(&step.status)) }
                    dl.facts {
                        dt { "Tool" } dd { code { (step.tool) } }
                        dt { "Started" } dd { (time(&step.started_at)) }
                        dt { "Duration" } dd { (step.duration_seconds.map(duration).unwrap_or_else(|| "—".to_owned())) }
                        dt { "Attempts" } dd { (step.attempts) }
                    }
                    @if let Some(error) = &step.error {
                        p.field-error { (error) }
                    }
                    @if let Some(output) = &step.output {
                        details open {
                            summary { "Output" }
                            (json_block(output))
                        }
                    }
                    @if let Some(input) = &step.input {
                        details {
                            summary { "Input (secrets redacted)" }
                            (json_block(input))
                        }
                    }
                }
            }
        }
        h2 { "Output" }
        @match &run.output {
            Some(output) => (json_block(output)),
            None => p.muted { "No output." },
        }
        details {
            summary { "Input" }
            (json_block(&run.input))
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Queues and workers

pub async fn workers_page(console: Console) -> Response {
    let (queues, workers) = match operations(&console).await {
        Ok(found) => found,
        Err(failure) => return console.fail(&failure),
    };
    let content = html! {
        h1 { "Queues & workers " span.live { "live" } }
        div #operations data-live="/console/workers/live" data-live-events=(JOB_EVENTS)
            data-live-interval=(WORKERS_REFRESH) {
            (operations_view(&queues, &workers, Utc::now()))
        }
    };
    layout::page(&console, "Queues & workers", "/console/workers", content)
}

pub async fn workers_fragment(console: Console) -> Response {
    match operations(&console).await {
        Ok((queues, workers)) => fragment(operations_view(&queues, &workers, Utc::now())),
        Err(failure) => fragment_failed(&failure),
    }
}

async fn operations(console: &Console) -> Result<(Vec<QueueDepth>, Vec<Worker>), ApiFailure> {
    let (queues, workers) = tokio::join!(
        console.api.get::<Vec<QueueDepth>>("/queues"),
        console.api.get::<Vec<Worker>>("/workers"),
    );
    Ok((queues?, workers?))
}

fn operations_view(queues: &[QueueDepth], workers: &[Worker], now: DateTime<Utc>) -> Markup {
    html! {
        h2 { "Queue depth" }
        table #queues {
            thead {
                tr {
                    th scope="col" { "Kind" }
                    th scope="col" { "Status" }
                    th scope="col" { "Jobs" }
                    th scope="col" { "Oldest due" }
                }
            }
            tbody {
                @for queue in queues {
                    tr data-kind=(queue.kind) data-status=(queue.status) {
                        td { (queue.kind) }
                        td { (badge(&queue.status)) }
                        td { (queue.jobs) }
                        td { (optional_time(queue.oldest_run_at.as_ref())) }
                    }
                }
                @if queues.is_empty() {
                    tr { td colspan="4" .muted { "No unfinished jobs." } }
                }
            }
        }
        h2 { "Live workers" }
        table #workers {
            thead {
                tr {
                    th scope="col" { "Worker" }
                    th scope="col" { "Host" }
                    th scope="col" { "Role" }
                    th scope="col" { "Version" }
                    th scope="col" { "Started" }
                    th scope="col" { "Last heartbeat" }
                    th scope="col" { "Jobs in hand" }
                }
            }
            tbody {
                @for worker in workers {
                    tr data-worker-id=(worker.id) {
                        td { code { (worker.id) } }
                        td {
                            @if let Some(hostname) = &worker.hostname { (hostname) " " }
                            @if let Some(pid) = worker.pid { span.muted { "pid " (pid) } }
                            @if worker.hostname.is_none() && worker.pid.is_none() { span.muted { "—" } }
                        }
                        td { (worker.role) }
                        td { (worker.version) }
                        td { (time(&worker.started_at)) }
                        td {
                            (duration(seconds_between(worker.heartbeat_at, now))) " ago"
                        }
                        td { (worker.jobs_in_hand) }
                    }
                }
                @if workers.is_empty() {
                    tr { td colspan="7" .muted { "No worker has sent a heartbeat in the last 30 seconds." } }
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The event stream

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct StreamQuery {
    /// Only topics starting with this prefix, as the API's stream filters them.
    topic: Option<String>,
}

/// The API's live events of the user's tenant, as server-sent events for the page's script. Each
/// event is renamed `change` (the API names events after their topic, and `EventSource` cannot
/// listen to every name); the topic is still in the event's data.
pub async fn events(console: Console, Query(query): Query<StreamQuery>) -> Response {
    let path = with_query("/events/stream", &[("topic", query.topic.as_deref())]);
    let upstream = match console.api.raw(&path).await {
        Ok(response) => response,
        // An `EventSource` cannot follow a sign-in page; the status alone stops it.
        Err(failure) => return (failure.status, failure.message).into_response(),
    };
    let mut renamer = ChangeEvents::default();
    let stream = upstream
        .into_body()
        .into_data_stream()
        .filter_map(move |chunk| {
            let chunk = chunk.map(|bytes| renamer.feed(&bytes));
            std::future::ready(match chunk {
                Ok(bytes) if bytes.is_empty() => None,
                other => Some(other),
            })
        });
    (
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            // Reverse proxies must pass events on as they come.
            (HeaderName::from_static("x-accel-buffering"), "no"),
        ],
        Body::from_stream(stream),
    )
        .into_response()
}

/// Rewrites the `event:` line of every server-sent event to `event: change`. A line split across
/// chunks is held back until its end arrives, so lines are always rewritten whole.
#[derive(Default)]
struct ChangeEvents {
    partial: Vec<u8>,
}

impl ChangeEvents {
    fn feed(&mut self, chunk: &[u8]) -> Bytes {
        self.partial.extend_from_slice(chunk);
        let Some(end) = self.partial.iter().rposition(|b| *b == b'\n') else {
            return Bytes::new();
        };
        let rest = self.partial.split_off(end + 1);
        let complete = std::mem::replace(&mut self.partial, rest);
        let mut out = Vec::with_capacity(complete.len());
        for line in complete.split_inclusive(|b| *b == b'\n') {
            if line.starts_with(b"event:") {
                out.extend_from_slice(b"event: change\n");
            } else {
                out.extend_from_slice(line);
            }
        }
        Bytes::from(out)
    }
}

// ---------------------------------------------------------------------------------------------
// Shared pieces

/// The content of a live region: the script swaps in the `[data-live-fragment]` element's content.
fn fragment(content: Markup) -> Response {
    html! { div data-live-fragment { (content) } }.into_response()
}

/// A failed refresh keeps what the region shows: the script ignores responses that are not OK.
fn fragment_failed(failure: &ApiFailure) -> Response {
    (failure.status, failure.message.clone()).into_response()
}

/// After a failed action: back to the page with the API's reason, or to sign-in (returning to
/// that page, since the post itself cannot be repeated).
fn post_failed(back: &str, failure: &ApiFailure) -> Response {
    if failure.needs_sign_in() {
        session::sign_in_redirect(back)
    } else {
        session::error(back, failure.message.clone())
    }
}

fn not_found() -> Response {
    layout::message_page(StatusCode::NOT_FOUND, "Not found", "There is no such page.")
}

/// Ids go into API paths, so only the characters of Docket's ids are accepted.
fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 100
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn non_empty(value: Option<&str>) -> Option<&str> {
    value.map(str::trim).filter(|v| !v.is_empty())
}

/// `base?k=v&…` with the values URL-encoded and empty ones left out.
fn with_query(base: &str, pairs: &[(&str, Option<&str>)]) -> String {
    let mut query = url::form_urlencoded::Serializer::new(String::new());
    let mut any = false;
    for (key, value) in pairs {
        if let Some(value) = non_empty(*value) {
            query.append_pair(key, value);
            any = true;
        }
    }
    if any {
        format!("{base}?{}", query.finish())
    } else {
        base.to_owned()
    }
}

fn select(id: &str, name: &str, any: &str, options: &[&str], current: Option<&str>) -> Markup {
    let current = non_empty(current);
    html! {
        select id=(id) name=(name) {
            option value="" selected[current.is_none()] { (any) }
            @for option in options {
                option value=(option) selected[current == Some(*option)] { (option) }
            }
        }
    }
}

fn pager(first: Option<&str>, next: Option<&str>) -> Markup {
    html! {
        @if first.is_some() || next.is_some() {
            nav.pager aria-label="Pages" {
                @if let Some(first) = first { a href=(first) { "First page" } }
                @if let Some(next) = next { a href=(next) rel="next" { "Next page" } }
            }
        }
    }
}

/// The end of an id: Docket's ids are UUIDv7, whose leading digits are a timestamp shared by
/// neighbours, so the random tail tells them apart.
fn short_id(id: &str) -> &str {
    let start = id.len().saturating_sub(8);
    id.get(start..).unwrap_or(id)
}

fn truncate(text: &str, max_chars: usize) -> String {
    if text.chars().count() <= max_chars {
        text.to_owned()
    } else {
        let mut short: String = text.chars().take(max_chars.saturating_sub(1)).collect();
        short.push('…');
        short
    }
}

fn seconds_between(from: DateTime<Utc>, to: DateTime<Utc>) -> f64 {
    (to - from).num_milliseconds().max(0) as f64 / 1000.0
}

/// A duration for people: milliseconds below a second, then seconds, minutes and hours.
fn duration(seconds: f64) -> String {
    if !seconds.is_finite() || seconds < 0.0 {
        return "—".to_owned();
    }
    if seconds < 1.0 {
        return format!("{} ms", (seconds * 1000.0).round() as u64);
    }
    if seconds < 60.0 {
        return format!("{seconds:.1} s");
    }
    let whole = seconds.round() as u64;
    if whole < 3600 {
        format!("{} min {} s", whole / 60, whole % 60)
    } else {
        format!("{} h {} min", whole / 3600, whole % 3600 / 60)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn form() -> TaskForm {
        TaskForm {
            title: "Morning brief".to_owned(),
            schedule_expr: "0 8 * * 1-5".to_owned(),
            ..TaskForm::default()
        }
    }

    #[test]
    fn the_create_body_carries_typed_values_and_defaults() {
        let mut typed = form();
        typed.timezone = "  ".to_owned();
        typed.payload = r#"{"city": "Chisinau"}"#.to_owned();
        typed.priority = " 5 ".to_owned();
        typed.max_retries = String::new();
        let body = create_body(&typed).unwrap();
        assert_eq!(
            body,
            json!({
                "title": "Morning brief", "description": "", "schedule_kind": "cron",
                "schedule_expr": "0 8 * * 1-5", "timezone": "UTC", "payload": { "city": "Chisinau" },
                "priority": 5, "timeout_seconds": 300
            })
        );
        typed.payload = "  ".to_owned();
        assert!(create_body(&typed).unwrap().get("payload").is_none());
    }

    #[test]
    fn malformed_fields_are_named_before_calling_the_api() {
        let mut bad_json = form();
        bad_json.payload = "{ nope".to_owned();
        assert_eq!(create_body(&bad_json).unwrap_err().field, Some("payload"));
        let mut bad_number = form();
        bad_number.timeout_seconds = "ten".to_owned();
        let error = create_body(&bad_number).unwrap_err();
        assert_eq!(error.field, Some("timeout_seconds"));
        assert_eq!(error.message, "must be a whole number");
    }

    #[test]
    fn the_preview_sends_only_the_schedule() {
        let mut typed = form();
        typed.timezone = "Europe/Chisinau".to_owned();
        assert_eq!(
            preview_body(&typed),
            json!({ "schedule_kind": "cron", "schedule_expr": "0 8 * * 1-5", "timezone": "Europe/Chisinau" })
        );
    }

    #[test]
    fn api_fields_map_to_form_fields() {
        assert_eq!(form_field("schedule_expr"), Some("schedule_expr"));
        assert_eq!(form_field("payload"), Some("payload"));
        assert_eq!(form_field("payload.pipeline[0].uses"), Some("payload"));
        assert_eq!(form_field("payloads"), None);
        assert_eq!(form_field("concurrency"), None);
    }

    #[test]
    fn api_errors_show_their_reason_beside_the_field() {
        let failure = ApiFailure {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            code: "validation_failed".to_owned(),
            message: "timezone: \"Mars\" is not an IANA time zone".to_owned(),
            details: json!({ "field": "timezone", "reason": "\"Mars\" is not an IANA time zone" }),
        };
        assert_eq!(
            FormError::from_failure(&failure),
            FormError {
                field: Some("timezone"),
                message: "\"Mars\" is not an IANA time zone".to_owned()
            }
        );
        let conflict = ApiFailure {
            status: StatusCode::FORBIDDEN,
            code: "forbidden".to_owned(),
            message: "You are not allowed to do this.".to_owned(),
            details: Value::Null,
        };
        assert_eq!(FormError::from_failure(&conflict).field, None);
        let step = ApiFailure {
            details: json!({ "field": "payload.pipeline[0].uses", "reason": "no such tool" }),
            message: "payload.pipeline[0].uses: no such tool".to_owned(),
            ..failure
        };
        assert_eq!(
            FormError::from_failure(&step),
            FormError {
                field: Some("payload"),
                message: "payload.pipeline[0].uses: no such tool".to_owned()
            }
        );
    }

    #[test]
    fn queries_leave_out_empty_values_and_encode_the_rest() {
        assert_eq!(
            with_query("/tasks", &[("status", Some("")), ("q", None)]),
            "/tasks"
        );
        assert_eq!(
            with_query(
                "/tasks",
                &[
                    ("status", Some("active")),
                    ("q", Some("a&b c")),
                    ("kind", Some(" "))
                ]
            ),
            "/tasks?status=active&q=a%26b+c"
        );
    }

    #[test]
    fn only_id_characters_reach_api_paths() {
        assert!(valid_id("0192f1c2-7d7e-7a4b-9c1d-1f2e3d4c5b6a"));
        for bad in ["", "../users", "a/b", "a?b=c", "a%2Fb", "a b"] {
            assert!(!valid_id(bad), "{bad}");
        }
    }

    #[test]
    fn durations_read_naturally() {
        assert_eq!(duration(0.0123), "12 ms");
        assert_eq!(duration(2.44), "2.4 s");
        assert_eq!(duration(192.4), "3 min 12 s");
        assert_eq!(duration(3900.0), "1 h 5 min");
        assert_eq!(duration(-1.0), "—");
        assert_eq!(duration(f64::NAN), "—");
    }

    #[test]
    fn ids_and_errors_are_shortened() {
        assert_eq!(short_id("0192f1c2-7d7e-7a4b-9c1d-1f2e3d4c5b6a"), "3d4c5b6a");
        assert_eq!(short_id("abc"), "abc");
        assert_eq!(truncate("short", 10), "short");
        assert_eq!(truncate("ééééé", 3), "éé…");
    }

    #[test]
    fn every_event_becomes_a_change_event() {
        let mut renamer = ChangeEvents::default();
        let out =
            renamer.feed(b"id: 1\nevent: job.succeeded\ndata: {\"topic\":\"job.succeeded\"}\n\n");
        assert_eq!(
            out.as_ref(),
            b"id: 1\nevent: change\ndata: {\"topic\":\"job.succeeded\"}\n\n"
        );
        assert_eq!(
            renamer.feed(b": keep-alive\n\n").as_ref(),
            b": keep-alive\n\n"
        );
    }

    #[test]
    fn lines_split_across_chunks_are_rewritten_whole() {
        let mut renamer = ChangeEvents::default();
        assert!(renamer.feed(b"id: 2\nev").as_ref() == b"id: 2\n");
        assert!(renamer.feed(b"ent: task.pa").is_empty());
        assert_eq!(
            renamer.feed(b"used\r\ndata: {}\n\n").as_ref(),
            b"event: change\ndata: {}\n\n"
        );
    }
}
