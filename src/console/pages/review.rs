//! The reviewer's pages: the review desk (next case, the cases they hold, the waiting queue) and
//! the case page (amount, subject, routing, AI assessment, attachments, history, dual control and
//! the decision form). Also the small pieces the supervision pages share: the case as the API
//! shows it, SLA classes, amounts and people's names.

use std::collections::HashMap;

use axum::Router;
use axum::extract::{Form, Path};
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use chrono::{DateTime, Duration, Utc};
use maud::{Markup, html};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::app::AppState;
use crate::auth::Role;
use crate::console::client::ApiFailure;
use crate::console::layout::{self, badge, csrf_input, kbd};
use crate::console::session::{self, Console};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/console/review", get(desk))
        .route("/console/review/queue", get(queue_fragment))
        .route("/console/review/next", post(next_case))
        .route("/console/cases/{id}", get(case_page))
        .route("/console/cases/{id}/claim", post(claim))
        .route("/console/cases/{id}/decision", post(decide))
        .route("/console/cases/{id}/release", post(release))
        .route(
            "/console/cases/{id}/attachments/{attachment_id}",
            get(attachment),
        )
}

/// A case as the API shows it (`GET /cases`, `GET /cases/{id}`), with the fields the pages use.
#[derive(Debug, Clone, Deserialize)]
pub(super) struct Case {
    pub id: String,
    #[serde(rename = "type")]
    pub case_type: String,
    pub reference: String,
    pub amount: String,
    pub currency: String,
    #[serde(default)]
    pub subject: Value,
    pub ai_assessment: Option<AiAssessment>,
    pub state: String,
    pub priority: String,
    pub queue: String,
    pub required_role: String,
    pub dual_control: bool,
    pub sla_hours: i32,
    pub sla_due_at: DateTime<Utc>,
    pub sla_breached_at: Option<DateTime<Utc>>,
    pub sla_status: String,
    pub policy_version: i32,
    #[serde(default)]
    pub policy_trace: Value,
    pub submitted_by: String,
    pub first_decision: Option<FirstDecision>,
    pub assignee_id: Option<String>,
    pub lease_expires_at: Option<DateTime<Utc>>,
    pub decision: Option<String>,
    pub decided_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
}

impl Case {
    pub fn href(&self) -> String {
        format!("/console/cases/{}", self.id)
    }

    pub fn is_open(&self) -> bool {
        OPEN_STATES.contains(&self.state.as_str())
    }

    pub fn sla(&self, now: DateTime<Utc>) -> Sla {
        Sla::of(&self.sla_status, self.sla_due_at, now)
    }

    pub fn amount_text(&self) -> String {
        format_amount(&self.amount, &self.currency)
    }

    /// The role the case needs, as a [`Role`] (unknown names need the least: a reviewer).
    pub fn required(&self) -> Role {
        Role::parse(&self.required_role).unwrap_or(Role::Reviewer)
    }
}

#[derive(Debug, Clone, Deserialize)]
pub(super) struct FirstDecision {
    pub decision: String,
    pub by: String,
}

#[derive(Debug, Clone, Deserialize)]
pub(super) struct AiAssessment {
    pub recommendation: String,
    pub confidence: f64,
    #[serde(default)]
    pub reasons: Vec<String>,
}

#[derive(Debug, Deserialize)]
struct CaseDetail {
    #[serde(flatten)]
    case: Case,
    history: Vec<HistoryEntry>,
}

#[derive(Debug, Clone, Deserialize)]
pub(super) struct HistoryEntry {
    pub action: String,
    pub from_state: Option<String>,
    pub to_state: String,
    pub actor: String,
    pub decision: Option<String>,
    pub reason: Option<String>,
    pub notes: Option<String>,
    #[serde(default)]
    pub details: Value,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Deserialize)]
struct Attachment {
    id: String,
    filename: String,
    content_type: String,
    size_bytes: i64,
    uploaded_by: String,
    created_at: DateTime<Utc>,
}

#[derive(Debug, Deserialize)]
struct Attachments {
    items: Vec<Attachment>,
}

/// One page of an API list.
#[derive(Debug, Deserialize)]
pub(super) struct Page<T> {
    pub items: Vec<T>,
    pub next_cursor: Option<String>,
}

/// States in which a case waits for, or is with, a person.
pub(super) const OPEN_STATES: [&str; 4] =
    ["queued", "in_review", "awaiting_second_review", "escalated"];

/// How many cases of one state a page asks the API for.
pub(super) const LIST_LIMIT: u32 = 200;

/// Open cases due within this time are shown as due soon (amber); the API itself only knows on
/// track, breached and met.
pub(super) const DUE_SOON_MINUTES: i64 = 60;

/// How a case stands against its SLA, as the pages colour it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Sla {
    Breached,
    DueSoon,
    OnTrack,
    Met,
}

impl Sla {
    /// From the API's `sla_status` and the deadline: an open case within [`DUE_SOON_MINUTES`] of
    /// its deadline is due soon, and one past it is breached even before the sweep marks it.
    pub fn of(status: &str, due: DateTime<Utc>, now: DateTime<Utc>) -> Self {
        match status {
            "breached" => Self::Breached,
            "met" => Self::Met,
            _ if due <= now => Self::Breached,
            _ if due - now <= Duration::minutes(DUE_SOON_MINUTES) => Self::DueSoon,
            _ => Self::OnTrack,
        }
    }

    /// The table row class (`tr.breached` red, `tr.due-soon` amber).
    pub fn row_class(self) -> Option<&'static str> {
        match self {
            Self::Breached => Some("breached"),
            Self::DueSoon => Some("due-soon"),
            Self::OnTrack | Self::Met => None,
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Self::Breached => "breached",
            Self::DueSoon => "due soon",
            Self::OnTrack => "on track",
            Self::Met => "met",
        }
    }
}

/// The SLA deadline with its standing, for a table cell.
pub(super) fn sla_cell(case: &Case, now: DateTime<Utc>) -> Markup {
    let sla = case.sla(now);
    let class = match sla {
        Sla::Breached => Some("sla-breached"),
        Sla::DueSoon => Some("sla-due-soon"),
        Sla::OnTrack | Sla::Met => None,
    };
    html! {
        (layout::time(&case.sla_due_at))
        " "
        span class=[class] { "(" (sla.label()) ")" }
    }
}

/// Queue order, as `POST /reviews/next` takes cases: priority, then SLA deadline, then age.
pub(super) fn by_urgency(cases: &mut [Case]) {
    cases.sort_by(|a, b| {
        priority_rank(&b.priority)
            .cmp(&priority_rank(&a.priority))
            .then(a.sla_due_at.cmp(&b.sla_due_at))
            .then(a.id.cmp(&b.id))
    });
}

pub(super) fn priority_rank(priority: &str) -> u8 {
    match priority {
        "urgent" => 3,
        "high" => 2,
        "normal" => 1,
        _ => 0,
    }
}

/// An exact decimal amount with thousands separators, as many decimals as the currency has (more
/// only when they are not zeros), and the currency code: `1,234,567.50 USD`. Done on the text, so
/// nothing is lost to floating point; text that is not a plain decimal is shown as it is.
pub(super) fn format_amount(amount: &str, currency: &str) -> String {
    let (whole, fraction) = amount.split_once('.').unwrap_or((amount, ""));
    let plain = !whole.is_empty()
        && whole.bytes().all(|b| b.is_ascii_digit())
        && fraction.bytes().all(|b| b.is_ascii_digit());
    if !plain {
        return format!("{amount} {currency}");
    }
    let mut grouped = String::with_capacity(whole.len() + whole.len() / 3);
    for (i, digit) in whole.chars().enumerate() {
        if i > 0 && (whole.len() - i) % 3 == 0 {
            grouped.push(',');
        }
        grouped.push(digit);
    }
    let decimals = iso_currency::Currency::from_code(currency)
        .and_then(|c| c.exponent())
        .map_or(fraction.len(), usize::from);
    let mut fraction = fraction.to_owned();
    while fraction.len() > decimals && fraction.ends_with('0') {
        fraction.pop();
    }
    while fraction.len() < decimals {
        fraction.push('0');
    }
    if fraction.is_empty() {
        format!("{grouped} {currency}")
    } else {
        format!("{grouped}.{fraction} {currency}")
    }
}

/// A length of time in words: `45 s`, `12 min`, `3 h 5 min`, `2 d 4 h`.
pub(super) fn duration_text(seconds: i64) -> String {
    let s = seconds.max(0);
    match s {
        0..60 => format!("{s} s"),
        60..3600 => format!("{} min", s / 60),
        3600..86_400 => match (s % 3600) / 60 {
            0 => format!("{} h", s / 3600),
            m => format!("{} h {m} min", s / 3600),
        },
        _ => match (s % 86_400) / 3600 {
            0 => format!("{} d", s / 86_400),
            h => format!("{} d {h} h", s / 86_400),
        },
    }
}

/// A user of the tenant, as `GET /users` lists them.
#[derive(Debug, Clone, Deserialize)]
pub(super) struct TenantUser {
    pub id: String,
    pub email: String,
    pub name: String,
    pub role: Role,
    pub status: String,
}

impl TenantUser {
    fn label(&self) -> &str {
        if self.name.is_empty() {
            &self.email
        } else {
            &self.name
        }
    }
}

/// Names for the `user:<id>` actors the API reports. Supervisors and admins may list the tenant's
/// users; for reviewers only "you" is known, and others stay ids.
pub(super) struct People {
    me: String,
    my_name: String,
    pub users: Vec<TenantUser>,
    names: HashMap<String, String>,
}

impl People {
    /// The tenant's users when the signed-in user may read them; names are a convenience, so a
    /// refusal leaves ids rather than failing the page.
    pub async fn load(console: &Console) -> Self {
        let users = if console.user.at_least(Role::Supervisor) {
            console
                .api
                .get::<Page<TenantUser>>("/users?limit=500")
                .await
                .map(|page| page.items)
                .unwrap_or_default()
        } else {
            Vec::new()
        };
        Self::new(&console.user.id, console.user.name(), users)
    }

    pub fn new(me: &str, my_name: &str, users: Vec<TenantUser>) -> Self {
        let names = users
            .iter()
            .map(|u| (u.id.clone(), u.label().to_owned()))
            .collect();
        Self {
            me: me.to_owned(),
            my_name: format!("{my_name} (you)"),
            users,
            names,
        }
    }

    /// A user id as a name: theirs (marked "you" for the signed-in user), or the id.
    pub fn user(&self, id: &str) -> String {
        if id == self.me {
            self.my_name.clone()
        } else {
            self.names.get(id).cloned().unwrap_or_else(|| id.to_owned())
        }
    }

    /// An actor (`user:<id>`, `api_key:<id>`, `system`) as a name.
    pub fn actor(&self, actor: &str) -> String {
        match actor.split_once(':') {
            Some(("user", id)) => self.user(id),
            Some(("api_key", id)) => format!("API key {id}"),
            _ if actor == "system" => "Docket".to_owned(),
            _ => actor.to_owned(),
        }
    }
}

/// Ids in console URLs are the API's UUIDs; anything else is refused before it reaches an API path.
pub(super) fn valid_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

pub(super) fn not_found() -> Response {
    layout::message_page(StatusCode::NOT_FOUND, "Not found", "No such case.")
}

/// The response to a failed form post: sign in again (then back to `back`), or `back` with the
/// API's message.
pub(super) fn post_failed(back: &str, failure: &ApiFailure) -> Response {
    if failure.needs_sign_in() {
        session::sign_in_redirect(back)
    } else {
        session::error(back, failure.message.clone())
    }
}

pub(super) fn encode(value: &str) -> String {
    url::form_urlencoded::byte_serialize(value.as_bytes()).collect()
}

/// Cases in `states` (only those nobody holds, if `unheld`), most urgent first; and whether the
/// API had more than the pages asked for.
pub(super) async fn cases_in(
    console: &Console,
    states: &[&str],
    unheld: bool,
) -> Result<(Vec<Case>, bool), ApiFailure> {
    let filter = if unheld { "&assignee=none" } else { "" };
    let pages = states.iter().map(|state| async move {
        let path = format!("/cases?state={state}{filter}&limit={LIST_LIMIT}");
        console.api.get::<Page<Case>>(&path).await
    });
    let mut cases = Vec::new();
    let mut more = false;
    for page in futures_util::future::join_all(pages).await {
        let page = page?;
        more |= page.next_cursor.is_some();
        cases.extend(page.items);
    }
    by_urgency(&mut cases);
    Ok((cases, more))
}

/// The states a user's waiting queue shows: escalated cases only to those who may decide them.
fn waiting_states(console: &Console) -> Vec<&'static str> {
    let mut states = vec!["queued", "awaiting_second_review"];
    if console.user.at_least(Role::Supervisor) {
        states.push("escalated");
    }
    states
}

/// Why `user_id` (with `role`) cannot take `case`, mirroring the API's rules; `None` if they can.
fn cannot_take(case: &Case, user_id: &str, role: Role) -> Option<String> {
    if role < case.required() {
        Some(format!("Needs a {}", case.required_role))
    } else if case.submitted_by == format!("user:{user_id}") {
        Some("You submitted it".to_owned())
    } else if case
        .first_decision
        .as_ref()
        .is_some_and(|f| f.by == user_id)
    {
        Some("You made the first decision".to_owned())
    } else {
        None
    }
}

/// The desk is for people who review; viewers may read cases but never take one, so the page
/// says so rather than offering work the API would refuse.
fn reviewers_only(console: &Console) -> Option<Response> {
    (!console.user.at_least(Role::Reviewer)).then(|| {
        layout::message_page(
            StatusCode::FORBIDDEN,
            "Not allowed",
            "The review desk is for reviewers, supervisors and admins.",
        )
    })
}

async fn desk(console: Console) -> Response {
    if let Some(refusal) = reviewers_only(&console) {
        return refusal;
    }
    let mine_path = format!(
        "/cases?assignee={}&limit={LIST_LIMIT}",
        encode(&console.user.id)
    );
    let mine = console.api.get::<Page<Case>>(&mine_path);
    let states = waiting_states(&console);
    let (mine, waiting) = tokio::join!(mine, cases_in(&console, &states, true));
    let (mut mine, (waiting, more)) = match (mine, waiting) {
        (Ok(mine), Ok(waiting)) => (mine.items, waiting),
        (Err(failure), _) | (_, Err(failure)) => return console.fail(&failure),
    };
    by_urgency(&mut mine);
    let now = crate::clock::now();
    let mut queues: Vec<&str> = waiting.iter().map(|c| c.queue.as_str()).collect();
    queues.sort_unstable();
    queues.dedup();
    let content = html! {
        h1 { "Review desk" }
        div.actions {
            form.inline method="post" action="/console/review/next" {
                (csrf_input(&console.csrf))
                @if queues.len() > 1 {
                    label for="next-queue" { "Queue" }
                    select #next-queue name="queue" {
                        option value="" { "Any queue" }
                        @for queue in &queues { option value=(queue) { (queue) } }
                    }
                }
                button #next-case type="submit" data-shortcut="n" data-autofocus { "Next case" }
            }
        }
        p.shortcuts { "Press " (kbd("n")) " for the next case; on a case, " (kbd("a")) " approves, "
            (kbd("r")) " rejects, " (kbd("e")) " escalates and " (kbd("t")) " types the reason." }
        h2 { "Cases you hold" }
        @if mine.is_empty() {
            p.muted { "You hold no cases. Take the next one from the queue." }
        } @else {
            table #my-cases {
                thead { tr {
                    th scope="col" { "Case" } th scope="col" { "State" } th scope="col" { "Priority" }
                    th scope="col" { "Amount" } th scope="col" { "SLA due" } th scope="col" { "Yours until" }
                } }
                tbody {
                    @for case in &mine {
                        tr class=[case.sla(now).row_class()] data-case-id=(case.id) {
                            td { a href=(case.href()) { (case.reference) } " " span.muted { (case.case_type) } }
                            td { (badge(&case.state)) }
                            td { (badge(&case.priority)) }
                            td { (case.amount_text()) }
                            td { (sla_cell(case, now)) }
                            td { (layout::optional_time(case.lease_expires_at.as_ref())) }
                        }
                    }
                }
            }
        }
        h2 { "Waiting" }
        p { span.live { "Updates live" } }
        div data-live="/console/review/queue" {
            (queue_table(&console, &waiting, more, now))
        }
    };
    layout::page(&console, "Review desk", "/console/review", content)
}

/// The waiting queue alone, for the desk's live region.
async fn queue_fragment(console: Console) -> Response {
    if let Some(refusal) = reviewers_only(&console) {
        return refusal;
    }
    let states = waiting_states(&console);
    match cases_in(&console, &states, true).await {
        Ok((waiting, more)) => {
            let now = crate::clock::now();
            let fragment = html! {
                div data-live-fragment { (queue_table(&console, &waiting, more, now)) }
            };
            Html(fragment.into_string()).into_response()
        }
        Err(failure) => console.fail(&failure),
    }
}

/// The header cells every case table starts with (the desk's queue, the supervision overview).
pub(super) fn case_columns() -> Markup {
    html! {
        th scope="col" { "Case" } th scope="col" { "Priority" } th scope="col" { "State" }
        th scope="col" { "Amount" } th scope="col" { "Queue" } th scope="col" { "SLA due" }
    }
}

/// The cells of a case row under [`case_columns`].
pub(super) fn case_cells(case: &Case, now: DateTime<Utc>) -> Markup {
    html! {
        td { a href=(case.href()) { (case.reference) } " " span.muted { (case.case_type) } }
        td { (badge(&case.priority)) }
        td { (badge(&case.state)) }
        td { (case.amount_text()) }
        td { (case.queue) }
        td { (sla_cell(case, now)) }
    }
}

fn queue_table(console: &Console, waiting: &[Case], more: bool, now: DateTime<Utc>) -> Markup {
    html! {
        p.muted {
            (waiting.len()) @if more { "+" } " waiting, most urgent first."
            @if more { " Only the most recent " (LIST_LIMIT) " of each state are listed." }
        }
        table #queue {
            thead { tr {
                (case_columns())
                th scope="col" { "Note" }
            } }
            tbody {
                @for case in waiting {
                    tr class=[case.sla(now).row_class()] data-case-id=(case.id) {
                        (case_cells(case, now))
                        td {
                            @if let Some(why) = cannot_take(case, &console.user.id, console.user.role) {
                                span.muted { (why) }
                            } @else if case.dual_control {
                                "Dual control"
                            }
                        }
                    }
                }
                @if waiting.is_empty() {
                    tr { td colspan="7" { span.muted { "No cases waiting." } } }
                }
            }
        }
    }
}

#[derive(Deserialize)]
struct NextForm {
    #[serde(default)]
    queue: String,
}

/// A reference to the case `POST /reviews/next` claimed.
#[derive(Deserialize)]
struct Claimed {
    id: String,
}

async fn next_case(console: Console, Form(form): Form<NextForm>) -> Response {
    let queue = form.queue.trim();
    let body = if queue.is_empty() {
        json!({})
    } else {
        json!({ "queue": queue })
    };
    match console
        .api
        .post::<Option<Claimed>>("/reviews/next", &body)
        .await
    {
        Ok(Some(case)) => {
            axum::response::Redirect::to(&format!("/console/cases/{}", case.id)).into_response()
        }
        Ok(None) => session::success("/console/review", "No cases waiting for you."),
        Err(failure) => post_failed("/console/review", &failure),
    }
}

async fn case_page(console: Console, Path(id): Path<String>) -> Response {
    if !valid_id(&id) {
        return not_found();
    }
    let (case_path, attachments_path) =
        (format!("/cases/{id}"), format!("/cases/{id}/attachments"));
    let detail = console.api.get::<CaseDetail>(&case_path);
    let attachments = console.api.get::<Attachments>(&attachments_path);
    let (detail, attachments, people) = tokio::join!(detail, attachments, People::load(&console));
    let (CaseDetail { case, history }, attachments) = match (detail, attachments) {
        (Ok(detail), Ok(attachments)) => (detail, attachments.items),
        (Err(failure), _) | (_, Err(failure)) => return console.fail(&failure),
    };
    let now = crate::clock::now();
    let title = format!("Case {}", case.reference);
    let content = html! {
        h1 { "Case " (case.reference) " " span.muted { (case.case_type) } }
        p {
            "Status: " strong #case-status { (case.state) } " "
            (badge(&case.priority))
            @if let Some(decision) = &case.decision { " · decision: " (decision) }
        }
        div.grid {
            section.panel aria-labelledby="amount-heading" {
                h2 #amount-heading { "Amount" }
                p.amount { (case.amount_text()) }
                (holder_line(&case, &people, now))
            }
            section.panel aria-labelledby="routing-heading" {
                h2 #routing-heading { "Routing" }
                (routing(&case, now))
            }
            @if case.dual_control {
                section.panel aria-labelledby="dual-heading" {
                    h2 #dual-heading { "Dual control" }
                    (dual_control_panel(&case, &history, &people))
                }
            }
        }
        (actions(&console, &case, &people, now))
        div.grid {
            section.panel aria-labelledby="subject-heading" {
                h2 #subject-heading { "Subject" }
                (subject(&case.subject))
            }
            section.panel aria-labelledby="policy-heading" {
                h2 #policy-heading { "Policy" }
                (policy_trace(&case.policy_trace, case.policy_version))
            }
            section.panel aria-labelledby="ai-heading" {
                h2 #ai-heading { "AI assessment" }
                (ai(case.ai_assessment.as_ref()))
            }
        }
        section aria-labelledby="attachments-heading" {
            h2 #attachments-heading { "Attachments" }
            (attachment_list(&case, &attachments, &people))
        }
        section aria-labelledby="history-heading" {
            h2 #history-heading { "History" }
            (history_table(&history, &people))
        }
    };
    layout::page(&console, &title, "/console/review", content)
}

fn holder_line(case: &Case, people: &People, now: DateTime<Utc>) -> Markup {
    html! {
        @match (&case.assignee_id, case.lease_expires_at) {
            (Some(holder), Some(until)) if until > now => {
                p { "Held by " strong { (people.user(holder)) } " until " (layout::time(&until)) "." }
            }
            _ if case.is_open() => { p.muted { "Nobody holds this case." } }
            _ => {
                @if let Some(at) = &case.decided_at { p { "Decided " (layout::time(at)) "." } }
            }
        }
    }
}

fn routing(case: &Case, now: DateTime<Utc>) -> Markup {
    html! {
        dl.facts {
            dt { "Priority" } dd { (badge(&case.priority)) }
            dt { "Queue" } dd { (case.queue) }
            dt { "Decided by" } dd { "a " (case.required_role) " or above" }
            dt { "Dual control" } dd { @if case.dual_control { "yes: two different people must agree" } @else { "no" } }
            dt { "SLA" } dd { (case.sla_hours) " h, due " (sla_cell(case, now)) }
            @if let Some(at) = &case.sla_breached_at {
                dt { "Breached" } dd { (layout::time(at)) }
            }
            dt { "Submitted" } dd { (layout::time(&case.created_at)) }
        }
    }
}

/// Where dual control stands: the tally of agreeing decisions and the people who decided.
#[derive(Debug, PartialEq, Eq)]
struct DualControl {
    summary: String,
    /// (decision, actor) of each reviewer's decision so far, oldest first.
    decisions: Vec<(String, String)>,
}

fn decision_noun(decision: &str) -> &'static str {
    if decision == "reject" {
        "rejections"
    } else {
        "approvals"
    }
}

fn dual_control(case: &Case, history: &[HistoryEntry]) -> DualControl {
    let decided: Vec<&HistoryEntry> = history
        .iter()
        .filter(|h| h.decision.is_some() && matches!(h.action.as_str(), "decided" | "escalated"))
        .collect();
    let first = case.first_decision.as_ref();
    let summary = match case.state.as_str() {
        "awaiting_second_review" => {
            let decision = first.map_or("approve", |f| f.decision.as_str());
            format!(
                "1 of 2 {}: a different reviewer must agree",
                decision_noun(decision)
            )
        }
        "escalated" => "Escalated: a supervisor decides".to_owned(),
        "approved" | "rejected" => {
            let after_escalation = decided
                .last()
                .is_some_and(|h| h.from_state.as_deref() == Some("escalated"));
            if after_escalation {
                "Decided by a supervisor after escalation".to_owned()
            } else {
                let decision = case.decision.as_deref().unwrap_or("approve");
                format!("2 of 2 {}", decision_noun(decision))
            }
        }
        "queued" | "in_review" => "0 of 2 approvals".to_owned(),
        _ => "No reviewer decided this case".to_owned(),
    };
    DualControl {
        summary,
        decisions: decided
            .iter()
            .filter_map(|h| Some((h.decision.clone()?, h.actor.clone())))
            .collect(),
    }
}

fn dual_control_panel(case: &Case, history: &[HistoryEntry], people: &People) -> Markup {
    let tally = dual_control(case, history);
    html! {
        div #dual-control {
            p { strong { (tally.summary) } }
            @if !tally.decisions.is_empty() {
                ul {
                    @for (decision, actor) in &tally.decisions {
                        li { (people.actor(actor)) ": " (decision) }
                    }
                }
            }
        }
    }
}

fn actions(console: &Console, case: &Case, people: &People, now: DateTime<Utc>) -> Markup {
    let holder = case
        .lease_expires_at
        .filter(|until| *until > now)
        .and(case.assignee_id.as_deref());
    let mine = holder == Some(console.user.id.as_str());
    let held_by_other = holder.is_some() && !mine;
    let reviews = console.user.at_least(Role::Reviewer);
    let back = case.href();
    html! {
        section.panel aria-labelledby="decide-heading" {
            h2 #decide-heading { "Decision" }
            @if !case.is_open() {
                p.muted { "This case is " (case.state) "; there is nothing left to decide." }
            } @else if !reviews {
                p.muted { "Your role may read cases but not decide them." }
            } @else if held_by_other {
                p { "Another reviewer holds this case; it is theirs to decide until their lease ends." }
            } @else {
                @if let Some(why) = cannot_take(case, &console.user.id, console.user.role) {
                    p.field-error { (why) ": the API will refuse your decision." }
                }
                form.stack method="post" action=(format!("{back}/decision")) {
                    (csrf_input(&console.csrf))
                    div {
                        label for="decision-reason" {
                            "Reason"
                            span.hint { "Required to reject or escalate; recorded in the history and the audit log." }
                        }
                        textarea #decision-reason name="reason" maxlength="2000" data-shortcut="t" {}
                    }
                    div {
                        label for="decision-notes" { "Notes" span.hint { "Optional." } }
                        textarea #decision-notes name="notes" maxlength="10000" {}
                    }
                    @if !mine {
                        p.muted { "Deciding claims the case for you first." }
                    }
                    div.actions {
                        button #approve .approve type="submit" name="decision" value="approve" data-shortcut="a" { "Approve" }
                        button #reject .danger type="submit" name="decision" value="reject" data-shortcut="r" { "Reject" }
                        @if case.state != "escalated" {
                            button #escalate .secondary type="submit" name="decision" value="escalate" data-shortcut="e" { "Escalate" }
                        }
                    }
                }
            }
            @if reviews { div.actions {
                @if case.is_open() && mine {
                    form.inline method="post" action=(format!("{back}/release")) {
                        (csrf_input(&console.csrf))
                        button #release .secondary type="submit" { "Release to the queue" }
                    }
                } @else if case.is_open() && holder.is_none() {
                    form.inline method="post" action=(format!("{back}/claim")) {
                        (csrf_input(&console.csrf))
                        button #claim .secondary type="submit" { "Claim" }
                    }
                }
                form.inline method="post" action="/console/review/next" {
                    (csrf_input(&console.csrf))
                    button #next-case .secondary type="submit" data-shortcut="n" { "Next case" }
                }
            } }
            @if case.is_open() && console.user.at_least(Role::Supervisor) {
                (super::supervise::reassign_form(&console.csrf, case, people, &back))
            }
            p.shortcuts {
                "Keys: " (kbd("a")) " approve · " (kbd("r")) " reject · " (kbd("e")) " escalate · "
                (kbd("t")) " reason · " (kbd("n")) " next case"
            }
        }
    }
}

fn subject(subject: &Value) -> Markup {
    html! {
        @match subject.as_object() {
            Some(fields) if !fields.is_empty() => {
                dl.facts {
                    @for (name, value) in fields {
                        dt { (name) }
                        dd { (value_text(value)) }
                    }
                }
            }
            _ => { p.muted { "No subject fields." } }
        }
    }
}

fn value_text(value: &Value) -> Markup {
    html! {
        @match value {
            Value::Null => span.muted { "—" },
            Value::String(text) => (text),
            Value::Bool(_) | Value::Number(_) => (value.to_string()),
            Value::Array(_) | Value::Object(_) => code { (value.to_string()) },
        }
    }
}

fn policy_trace(trace: &Value, version: i32) -> Markup {
    let fired = trace
        .get("fired")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    html! {
        @if let Some(reason) = trace.get("reason").and_then(Value::as_str) {
            p { (reason) }
        }
        @if fired.is_empty() {
            p.muted { "No rule fired; the policy's defaults applied." }
        } @else {
            p { "Rules that fired:" }
            ol {
                @for rule in fired {
                    li {
                        strong { (rule.get("name").and_then(Value::as_str).unwrap_or("(unnamed)")) }
                        @if let Some(because) = rule.get("because").and_then(Value::as_array) {
                            ": "
                            (because.iter().filter_map(Value::as_str).collect::<Vec<_>>().join("; "))
                        }
                        @if let Some(effects) = rule.get("effects").filter(|e| !e.is_null()) {
                            br;
                            span.muted { "then " } code { (effects.to_string()) }
                        }
                    }
                }
            }
        }
        p.muted { "Policy version " (version) "." }
    }
}

fn ai(assessment: Option<&AiAssessment>) -> Markup {
    html! {
        @match assessment {
            None => p.muted { "No AI assessment was submitted with this case." },
            Some(ai) => {
                dl.facts {
                    dt { "Recommendation" } dd { (badge(&ai.recommendation)) }
                    dt { "Confidence" } dd { (confidence_text(ai.confidence)) }
                }
                @if !ai.reasons.is_empty() {
                    p { "Rationale:" }
                    ul { @for reason in &ai.reasons { li { (reason) } } }
                }
            }
        }
    }
}

fn confidence_text(confidence: f64) -> String {
    format!("{:.0}%", (confidence * 100.0).clamp(0.0, 100.0))
}

/// Types every browser shows in an `<img>` (TIFF is not one of them, so it is a link).
fn shown_inline(content_type: &str) -> bool {
    matches!(content_type, "image/jpeg" | "image/png" | "image/webp")
}

fn size_text(bytes: i64) -> String {
    match bytes {
        b if b < 1024 => format!("{b} B"),
        b if b < 1024 * 1024 => format!("{:.1} KiB", b as f64 / 1024.0),
        b => format!("{:.1} MiB", b as f64 / (1024.0 * 1024.0)),
    }
}

fn attachment_list(case: &Case, attachments: &[Attachment], people: &People) -> Markup {
    html! {
        @if attachments.is_empty() {
            p.muted { "No files are attached." }
        }
        @for file in attachments {
            @let href = format!("{}/attachments/{}", case.href(), file.id);
            @let caption = html! {
                a href=(href) download=(file.filename) { (file.filename) }
                " · " (file.content_type) " · " (size_text(file.size_bytes))
                " · uploaded by " (people.actor(&file.uploaded_by)) " " (layout::time(&file.created_at))
            };
            @if shown_inline(&file.content_type) {
                figure.attachment {
                    div.zoom-frame {
                        img src=(href) alt=(format!("{} (attached to case {})", file.filename, case.reference))
                            data-zoom tabindex="0";
                    }
                    figcaption { (caption) " · click the image to zoom" }
                }
            } @else {
                p.attachment { (caption) }
            }
        }
    }
}

fn history_table(history: &[HistoryEntry], people: &People) -> Markup {
    html! {
        table #history {
            thead { tr {
                th scope="col" { "When" } th scope="col" { "What" } th scope="col" { "State" }
                th scope="col" { "Who" } th scope="col" { "Decision" } th scope="col" { "Reason and notes" }
            } }
            tbody {
                @for entry in history {
                    tr {
                        td { (layout::time(&entry.created_at)) }
                        td { (entry.action) }
                        td {
                            @if let Some(from) = &entry.from_state { @if *from != entry.to_state { (from) " → " } }
                            (entry.to_state)
                        }
                        td { (people.actor(&entry.actor)) }
                        td { @if let Some(decision) = &entry.decision { (decision) } }
                        td {
                            @if let Some(reason) = &entry.reason { (reason) }
                            @if let Some(notes) = &entry.notes { br; span.muted { (notes) } }
                            @if entry.details.as_object().is_some_and(|d| !d.is_empty()) {
                                details {
                                    summary { "Details" }
                                    (layout::json_block(&entry.details))
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

async fn claim(console: Console, Path(id): Path<String>) -> Response {
    if !valid_id(&id) {
        return not_found();
    }
    let back = format!("/console/cases/{id}");
    match console
        .api
        .post::<Case>(&format!("/cases/{id}/claim"), &json!({}))
        .await
    {
        Ok(case) => {
            let until = case
                .lease_expires_at
                .map(|t| format!(" until {}", t.format("%H:%M UTC")))
                .unwrap_or_default();
            session::success(&back, format!("You hold this case{until}."))
        }
        Err(failure) => post_failed(&back, &failure),
    }
}

#[derive(Deserialize)]
struct DecisionForm {
    decision: String,
    #[serde(default)]
    reason: String,
    #[serde(default)]
    notes: String,
}

/// The flash after a decision: what happened, with the dual-control tally.
fn decision_message(verdict: &str, before: &str, after: &Case) -> String {
    let past = if verdict == "reject" {
        "rejected"
    } else {
        "approved"
    };
    match after.state.as_str() {
        _ if verdict == "escalate" => "Case escalated to a supervisor.".to_owned(),
        "escalated" => "The reviewers disagreed: the case went to a supervisor.".to_owned(),
        "awaiting_second_review" => format!(
            "Case {past} (1 of 2 {}); a different reviewer must agree.",
            decision_noun(verdict)
        ),
        _ if after.dual_control && before == "awaiting_second_review" => {
            format!("Case {past} (2 of 2 {}).", decision_noun(verdict))
        }
        _ => format!("Case {past}."),
    }
}

async fn decide(
    console: Console,
    Path(id): Path<String>,
    Form(form): Form<DecisionForm>,
) -> Response {
    if !valid_id(&id) {
        return not_found();
    }
    let back = format!("/console/cases/{id}");
    if !matches!(form.decision.as_str(), "approve" | "reject" | "escalate") {
        return session::error(&back, "Choose approve, reject or escalate.");
    }
    let before = match console.api.get::<Case>(&format!("/cases/{id}")).await {
        Ok(case) => case.state,
        Err(failure) => return post_failed(&back, &failure),
    };
    let text = |t: &str| Some(t.trim()).filter(|t| !t.is_empty()).map(str::to_owned);
    let body = json!({
        "decision": form.decision,
        "reason": text(&form.reason),
        "notes": text(&form.notes),
    });
    let path = format!("/cases/{id}/decision");
    let mut decided = console.api.post::<Case>(&path, &body).await;
    // A case nobody holds is claimed for the reviewer first; the API checks everything else
    // (the reason, the role, dual control) before it asks for the claim.
    if let Err(failure) = &decided
        && failure.code == "not_claimed"
    {
        decided = match console
            .api
            .post::<Case>(&format!("/cases/{id}/claim"), &json!({}))
            .await
        {
            Ok(_) => console.api.post::<Case>(&path, &body).await,
            Err(failure) => Err(failure),
        };
    }
    match decided {
        Ok(case) => session::success(
            "/console/review",
            decision_message(&form.decision, &before, &case),
        ),
        Err(failure) => post_failed(&back, &failure),
    }
}

async fn release(console: Console, Path(id): Path<String>) -> Response {
    if !valid_id(&id) {
        return not_found();
    }
    match console
        .api
        .post::<Case>(&format!("/cases/{id}/release"), &json!({}))
        .await
    {
        Ok(case) => session::success(
            "/console/review",
            format!("Case {} released.", case.reference),
        ),
        Err(failure) => post_failed(&format!("/console/cases/{id}"), &failure),
    }
}

/// An attachment's bytes, passed through from the API with its type, so the case page can show
/// images inline.
async fn attachment(
    console: Console,
    Path((id, attachment_id)): Path<(String, String)>,
) -> Response {
    if !valid_id(&id) || !valid_id(&attachment_id) {
        return not_found();
    }
    let upstream = match console
        .api
        .raw(&format!("/cases/{id}/attachments/{attachment_id}"))
        .await
    {
        Ok(upstream) => upstream,
        Err(failure) => return console.fail(&failure),
    };
    let (parts, body) = upstream.into_parts();
    let mut response = Response::new(body);
    for name in [
        header::CONTENT_TYPE,
        header::CONTENT_LENGTH,
        header::CONTENT_DISPOSITION,
        header::ETAG,
        header::CACHE_CONTROL,
        header::X_CONTENT_TYPE_OPTIONS,
    ] {
        if let Some(value) = parts.headers.get(&name) {
            response.headers_mut().insert(name, value.clone());
        }
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> DateTime<Utc> {
        text.parse().unwrap()
    }

    fn case(fields: Value) -> Case {
        let mut base = json!({
            "id": "c1", "type": "cheque", "reference": "CHQ-1", "amount": "7500.00", "currency": "USD",
            "subject": {}, "ai_assessment": null, "state": "queued", "priority": "normal", "queue": "default",
            "required_role": "reviewer", "dual_control": true, "sla_hours": 4,
            "sla_due_at": "2030-01-01T12:00:00Z", "sla_breached_at": null, "sla_status": "on_track",
            "policy_version": 0, "policy_trace": {}, "submitted_by": "user:carl", "first_decision": null,
            "assignee_id": null, "lease_expires_at": null, "decision": null, "decided_at": null,
            "created_at": "2030-01-01T08:00:00Z"
        });
        if let (Some(base), Some(fields)) = (base.as_object_mut(), fields.as_object()) {
            base.extend(fields.clone());
        }
        serde_json::from_value(base).unwrap()
    }

    fn decided(action: &str, from: &str, to: &str, actor: &str, decision: &str) -> HistoryEntry {
        serde_json::from_value(json!({
            "action": action, "from_state": from, "to_state": to, "actor": actor, "decision": decision,
            "reason": null, "notes": null, "details": {}, "created_at": "2030-01-01T09:00:00Z"
        }))
        .unwrap()
    }

    #[test]
    fn sla_is_breached_due_soon_on_track_or_met() {
        let now = at("2030-01-01T11:00:00Z");
        assert_eq!(
            Sla::of("on_track", at("2030-01-01T13:00:00Z"), now),
            Sla::OnTrack
        );
        assert_eq!(
            Sla::of("on_track", at("2030-01-01T12:00:00Z"), now),
            Sla::DueSoon,
            "an hour left"
        );
        assert_eq!(
            Sla::of("on_track", at("2030-01-01T11:30:00Z"), now),
            Sla::DueSoon
        );
        assert_eq!(
            Sla::of("on_track", at("2030-01-01T10:59:00Z"), now),
            Sla::Breached,
            "past due before the sweep has marked it"
        );
        assert_eq!(
            Sla::of("breached", at("2030-01-02T00:00:00Z"), now),
            Sla::Breached
        );
        assert_eq!(Sla::of("met", at("2029-01-01T00:00:00Z"), now), Sla::Met);
        assert_eq!(Sla::Breached.row_class(), Some("breached"));
        assert_eq!(Sla::DueSoon.row_class(), Some("due-soon"));
        assert_eq!(Sla::OnTrack.row_class(), None);
    }

    #[test]
    fn amounts_are_grouped_and_padded_to_the_currency() {
        assert_eq!(
            format_amount("1234567890123.45", "USD"),
            "1,234,567,890,123.45 USD"
        );
        assert_eq!(format_amount("1250", "EUR"), "1,250.00 EUR");
        assert_eq!(format_amount("0.1", "EUR"), "0.10 EUR");
        assert_eq!(format_amount("999", "USD"), "999.00 USD");
        assert_eq!(format_amount("5000", "JPY"), "5,000 JPY");
        assert_eq!(format_amount("1.500", "BHD"), "1.500 BHD");
        assert_eq!(
            format_amount("12.3400", "USD"),
            "12.34 USD",
            "only zeros are dropped"
        );
        assert_eq!(
            format_amount("12.3456", "XXX"),
            "12.3456 XXX",
            "unknown currency: as given"
        );
        assert_eq!(format_amount("n/a", "USD"), "n/a USD");
    }

    #[test]
    fn durations_read_in_the_largest_units() {
        assert_eq!(duration_text(-5), "0 s");
        assert_eq!(duration_text(45), "45 s");
        assert_eq!(duration_text(125), "2 min");
        assert_eq!(duration_text(3600), "1 h");
        assert_eq!(duration_text(3600 * 3 + 300), "3 h 5 min");
        assert_eq!(duration_text(86_400 * 2 + 3600 * 4), "2 d 4 h");
        assert_eq!(confidence_text(0.925), "92%");
        assert_eq!(confidence_text(1.0), "100%");
    }

    #[test]
    fn queue_order_is_priority_then_deadline() {
        let mut cases = vec![
            case(json!({ "id": "a", "priority": "normal", "sla_due_at": "2030-01-01T10:00:00Z" })),
            case(json!({ "id": "b", "priority": "urgent", "sla_due_at": "2030-01-01T18:00:00Z" })),
            case(json!({ "id": "c", "priority": "normal", "sla_due_at": "2030-01-01T09:00:00Z" })),
        ];
        by_urgency(&mut cases);
        let ids: Vec<&str> = cases.iter().map(|c| c.id.as_str()).collect();
        assert_eq!(ids, ["b", "c", "a"]);
    }

    #[test]
    fn the_queue_says_who_cannot_take_a_case() {
        let open = case(json!({}));
        assert_eq!(cannot_take(&open, "ann", Role::Reviewer), None);
        assert_eq!(
            cannot_take(&open, "carl", Role::Reviewer).as_deref(),
            Some("You submitted it")
        );
        let second = case(json!({ "first_decision": { "decision": "approve", "by": "ann" } }));
        assert_eq!(
            cannot_take(&second, "ann", Role::Reviewer).as_deref(),
            Some("You made the first decision")
        );
        let escalated = case(json!({ "state": "escalated", "required_role": "supervisor" }));
        assert_eq!(
            cannot_take(&escalated, "bob", Role::Reviewer).as_deref(),
            Some("Needs a supervisor")
        );
        assert_eq!(cannot_take(&escalated, "sue", Role::Supervisor), None);
    }

    #[test]
    fn dual_control_counts_agreeing_decisions() {
        let waiting = case(json!({}));
        assert_eq!(dual_control(&waiting, &[]).summary, "0 of 2 approvals");

        let first = decided(
            "decided",
            "in_review",
            "awaiting_second_review",
            "user:ann",
            "approve",
        );
        let half = case(json!({
            "state": "awaiting_second_review", "first_decision": { "decision": "approve", "by": "ann" }
        }));
        let tally = dual_control(&half, std::slice::from_ref(&first));
        assert!(
            tally.summary.starts_with("1 of 2 approvals"),
            "{}",
            tally.summary
        );
        assert_eq!(
            tally.decisions,
            [("approve".to_owned(), "user:ann".to_owned())]
        );

        let second = decided(
            "decided",
            "awaiting_second_review",
            "approved",
            "user:bob",
            "approve",
        );
        let done = case(json!({
            "state": "approved", "decision": "approve", "first_decision": { "decision": "approve", "by": "ann" }
        }));
        let tally = dual_control(&done, &[first.clone(), second]);
        assert_eq!(tally.summary, "2 of 2 approvals");
        assert_eq!(tally.decisions.len(), 2);

        let rejected_first = case(json!({
            "state": "awaiting_second_review", "first_decision": { "decision": "reject", "by": "ann" }
        }));
        assert!(
            dual_control(&rejected_first, &[])
                .summary
                .starts_with("1 of 2 rejections")
        );

        let disagreement = decided(
            "escalated",
            "awaiting_second_review",
            "escalated",
            "user:bob",
            "reject",
        );
        let settled = decided("decided", "escalated", "rejected", "user:sue", "reject");
        let by_supervisor = case(json!({ "state": "rejected", "decision": "reject" }));
        let tally = dual_control(&by_supervisor, &[first, disagreement, settled]);
        assert_eq!(tally.summary, "Decided by a supervisor after escalation");
        assert_eq!(tally.decisions.len(), 3);
    }

    #[test]
    fn decision_messages_carry_the_tally() {
        let half = case(json!({ "state": "awaiting_second_review" }));
        assert_eq!(
            decision_message("approve", "in_review", &half),
            "Case approved (1 of 2 approvals); a different reviewer must agree."
        );
        let done = case(json!({ "state": "approved" }));
        assert_eq!(
            decision_message("approve", "awaiting_second_review", &done),
            "Case approved (2 of 2 approvals)."
        );
        assert_eq!(
            decision_message("approve", "escalated", &done),
            "Case approved."
        );
        let single = case(json!({ "state": "rejected", "dual_control": false }));
        assert_eq!(
            decision_message("reject", "in_review", &single),
            "Case rejected."
        );
        let escalated = case(json!({ "state": "escalated" }));
        assert_eq!(
            decision_message("reject", "awaiting_second_review", &escalated),
            "The reviewers disagreed: the case went to a supervisor."
        );
        assert_eq!(
            decision_message("escalate", "in_review", &escalated),
            "Case escalated to a supervisor."
        );
    }

    #[test]
    fn people_are_named_when_known() {
        let ann: TenantUser = serde_json::from_value(json!({
            "id": "ann", "email": "ann@acme.test", "name": "Ann", "role": "reviewer", "status": "active"
        }))
        .unwrap();
        let people = People::new("me", "Rita Reviewer", vec![ann]);
        assert_eq!(people.actor("user:ann"), "Ann");
        assert_eq!(people.actor("user:me"), "Rita Reviewer (you)");
        assert_eq!(people.actor("user:zed"), "zed");
        assert_eq!(people.actor("api_key:k1"), "API key k1");
        assert_eq!(people.actor("system"), "Docket");
    }

    #[test]
    fn only_plain_ids_reach_api_paths() {
        assert!(valid_id("0190a5c2-7b1e-7cc0-9f00-1234567890ab"));
        for bad in ["", "../users", "a/b", "a?b", "a%2Fb", "a b"] {
            assert!(!valid_id(bad), "{bad:?}");
        }
    }
}
