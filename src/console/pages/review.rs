//! The reviewer's pages: the review desk (next case, the cases they hold, the waiting queue) and
//! the case page (amount, risk, subject, routing, AI assessment, attachments, history, who viewed
//! it, maker-checker dual control and the decision form with the tenant's reason codes). Also the
//! small pieces the supervision pages share: the case as the API shows it, SLA classes, risk and
//! flag badges, amounts and people's names.

use std::collections::HashMap;

use axum::Router;
use axum::extract::Path;
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum_extra::extract::Form;
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
        .route("/console/cases/{id}/check", post(check))
        .route("/console/cases/{id}/information", post(add_information))
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
    #[serde(default)]
    pub submitter_user_id: Option<String>,
    pub risk_level: String,
    pub flags: Vec<String>,
    pub require_reason: bool,
    pub proposal: Option<Proposal>,
    pub hold_until: Option<DateTime<Utc>>,
    pub parked_at: Option<DateTime<Utc>>,
    pub assignee_id: Option<String>,
    pub lease_expires_at: Option<DateTime<Utc>>,
    pub decision: Option<String>,
    pub reason_codes: Vec<String>,
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

    /// Waiting outside the queue: for a time (`on_hold`) or for information (`needs_more_info`).
    pub fn is_parked(&self) -> bool {
        PARKED_STATES.contains(&self.state.as_str())
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

    /// Whether `user_id` answers for the submission (directly or through their API key).
    pub fn submitted_by_user(&self, user_id: &str) -> bool {
        self.submitted_by == format!("user:{user_id}")
            || self.submitter_user_id.as_deref() == Some(user_id)
    }

    /// Whether `user_id` made the proposal this case waits on (and so may not check it).
    pub fn proposed_by(&self, user_id: &str) -> bool {
        self.proposal
            .as_ref()
            .is_some_and(|p| p.proposed_by == format!("user:{user_id}"))
    }
}

/// The maker's proposal under dual control, while the case is `pending_dual_control`.
#[derive(Debug, Clone, Deserialize)]
pub(super) struct Proposal {
    pub action: String,
    /// `user:<id>`.
    pub proposed_by: String,
    pub proposed_at: DateTime<Utc>,
    #[serde(default)]
    pub reason_codes: Vec<String>,
    pub reason: Option<String>,
    pub notes: Option<String>,
}

/// A reason code of the tenant (`GET /reason-codes`).
#[derive(Debug, Clone, Deserialize)]
pub(super) struct ReasonCode {
    pub code: String,
    pub label: String,
    pub actions: Vec<String>,
    pub requires_notes: bool,
    pub active: bool,
}

/// One view of a case (`GET /cases/{id}/views`).
#[derive(Debug, Deserialize)]
struct CaseView {
    actor: String,
    attachment_id: Option<String>,
    viewed_at: DateTime<Utc>,
}

/// The actions a reviewer may take on a case they hold, as the API names them, with the words
/// the console uses for them.
pub(super) const ACTIONS: [(&str, &str); 6] = [
    ("approve", "Approve"),
    ("reject", "Reject"),
    ("return", "Return"),
    ("hold", "Hold"),
    ("escalate", "Escalate"),
    ("needs_more_info", "Needs more info"),
];

/// An action's name as people read it ("needs more info" rather than `needs_more_info`).
pub(super) fn action_label(action: &str) -> String {
    ACTIONS
        .iter()
        .find(|(name, _)| *name == action)
        .map_or_else(
            || action.replace('_', " "),
            |(_, label)| label.to_lowercase(),
        )
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
    #[serde(default)]
    pub reason_codes: Vec<String>,
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

/// States in which a case is out of the queue until a time or until the submitter answers.
pub(super) const PARKED_STATES: [&str; 2] = ["on_hold", "needs_more_info"];

/// States in which a case waits for, or is with, a person.
pub(super) const OPEN_STATES: [&str; 4] =
    ["queued", "in_review", "pending_dual_control", "escalated"];

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

/// The case's risk level (from the policy) and the policy's flags, as badges.
pub(super) fn risk_badges(case: &Case) -> Markup {
    html! {
        span class={ "badge risk risk-" (case.risk_level) } { (case.risk_level) " risk" }
        @for flag in &case.flags { " " span.badge.flag { (flag) } }
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

/// `GET /people`: the names of the tenant's users and API keys, readable by every role.
#[derive(Deserialize)]
struct Directory {
    users: Vec<Named>,
    api_keys: Vec<Named>,
}

#[derive(Deserialize)]
struct Named {
    id: String,
    name: String,
}

/// Names for the `user:<id>` and `api_key:<id>` actors the API reports, from the tenant's
/// directory. Supervisors and admins also get the users themselves (for assigning cases).
pub(super) struct People {
    me: String,
    my_name: String,
    pub users: Vec<TenantUser>,
    names: HashMap<String, String>,
    key_names: HashMap<String, String>,
}

impl People {
    /// Names are a convenience: a refusal or failure leaves ids rather than failing the page.
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
        let mut people = Self::new(&console.user.id, console.user.name(), users);
        if let Ok(directory) = console.api.get::<Directory>("/people").await {
            people.learn(directory);
        }
        people
    }

    fn learn(&mut self, directory: Directory) {
        for user in directory.users {
            self.names.entry(user.id).or_insert(user.name);
        }
        self.key_names
            .extend(directory.api_keys.into_iter().map(|k| (k.id, k.name)));
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
            key_names: HashMap::new(),
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
            Some(("api_key", id)) => match self.key_names.get(id) {
                Some(name) => format!("API key “{name}”"),
                None => format!("API key {id}"),
            },
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
    let mut states = vec!["queued", "pending_dual_control"];
    if console.user.at_least(Role::Supervisor) {
        states.push("escalated");
    }
    states
}

/// Why `user_id` (with `role`) cannot take `case`, mirroring the API's rules; `None` if they can.
fn cannot_take(case: &Case, user_id: &str, role: Role) -> Option<String> {
    if role < case.required() {
        Some(format!("Needs a {}", case.required_role))
    } else if case.submitted_by_user(user_id) {
        Some("You submitted it".to_owned())
    } else if case.proposed_by(user_id) {
        Some("You proposed this decision".to_owned())
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
            (kbd("r")) " rejects, " (kbd("u")) " returns, " (kbd("e")) " escalates and " (kbd("t"))
            " types the reason." }
        h2 { "Cases you hold" }
        @if mine.is_empty() {
            p.muted { "You hold no cases. Take the next one from the queue." }
        } @else {
            table #my-cases {
                thead { tr {
                    th scope="col" { "Case" } th scope="col" { "State" } th scope="col" { "Priority" }
                    th scope="col" { "Risk" } th scope="col" { "Amount" } th scope="col" { "SLA due" }
                    th scope="col" { "Yours until" }
                } }
                tbody {
                    @for case in &mine {
                        tr class=[case.sla(now).row_class()] data-case-id=(case.id) {
                            td { a href=(case.href()) { (case.reference) } " " span.muted { (case.case_type) } }
                            td { (badge(&case.state)) }
                            td { (badge(&case.priority)) }
                            td { (risk_badges(case)) }
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
        th scope="col" { "Case" } th scope="col" { "Priority" } th scope="col" { "Risk" }
        th scope="col" { "State" } th scope="col" { "Amount" } th scope="col" { "Queue" }
        th scope="col" { "SLA due" }
    }
}

/// The cells of a case row under [`case_columns`].
pub(super) fn case_cells(case: &Case, now: DateTime<Utc>) -> Markup {
    html! {
        td { a href=(case.href()) { (case.reference) } " " span.muted { (case.case_type) } }
        td { (badge(&case.priority)) }
        td { (risk_badges(case)) }
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
                            } @else if case.state == "pending_dual_control" {
                                "Waiting for a checker"
                            } @else if case.dual_control {
                                "Dual control"
                            }
                        }
                    }
                }
                @if waiting.is_empty() {
                    tr { td colspan="8" { span.muted { "No cases waiting." } } }
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
    let codes = console.api.get::<Vec<ReasonCode>>("/reason-codes");
    let (detail, attachments, codes, people) =
        tokio::join!(detail, attachments, codes, People::load(&console));
    let (CaseDetail { case, history }, attachments, codes) = match (detail, attachments, codes) {
        (Ok(detail), Ok(attachments), Ok(codes)) => (detail, attachments.items, codes),
        (Err(failure), _, _) | (_, Err(failure), _) | (_, _, Err(failure)) => {
            return console.fail(&failure);
        }
    };
    // Asked after reading the case, which recorded this view, so the list includes it. Views are
    // for supervisors and admins (the API's `ReadAudit`); others get no section.
    let views = if console.user.at_least(Role::Supervisor) {
        let path = format!("/cases/{id}/views?limit={VIEWS_SHOWN}");
        match console.api.get::<Vec<CaseView>>(&path).await {
            Ok(views) => Some(views),
            Err(failure) => return console.fail(&failure),
        }
    } else {
        None
    };
    let now = crate::clock::now();
    let title = format!("Case {}", case.reference);
    let content = html! {
        h1 { "Case " (case.reference) " " span.muted { (case.case_type) } }
        p {
            "Status: " strong #case-status { (case.state) } " "
            (badge(&case.priority)) " " (risk_badges(&case))
            @if let Some(decision) = &case.decision { " · decision: " (decision) }
            @if !case.reason_codes.is_empty() {
                " · reason codes: " span #case-reason-codes { (codes_text(&case.reason_codes, &codes)) }
            }
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
        (actions(&console, &case, &codes, &people, now))
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
            (history_table(&history, &codes, &people))
        }
        @if let Some(views) = &views {
            section aria-labelledby="views-heading" {
                h2 #views-heading { "Viewed by" }
                (views_table(views, &attachments, &people))
            }
        }
    };
    layout::page(&console, &title, "/console/review", content)
}

/// How many of a case's most recent views its page lists.
const VIEWS_SHOWN: u32 = 50;

fn holder_line(case: &Case, people: &People, now: DateTime<Utc>) -> Markup {
    html! {
        @match (&case.assignee_id, case.lease_expires_at) {
            (Some(holder), Some(until)) if until > now => {
                p { "Held by " strong { (people.user(holder)) } " until " (layout::time(&until)) "." }
            }
            _ if case.state == "on_hold" => {
                p #parked { "On hold until " (layout::optional_time(case.hold_until.as_ref()))
                    "; it comes back to the queue then." }
            }
            _ if case.state == "needs_more_info" => {
                p #parked { "Waiting for information from the submitter; it comes back to the queue when they add it." }
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
            dt { "Risk" } dd { (risk_badges(case)) }
            dt { "Queue" } dd { (case.queue) }
            dt { "Decided by" } dd { "a " (case.required_role) " or above" }
            dt { "Dual control" } dd {
                @if case.dual_control { "yes: one person proposes, a different person confirms" } @else { "no" }
            }
            @if case.require_reason {
                dt { "Reason codes" } dd { "required: every decision needs at least one" }
            }
            dt { "SLA" } dd { (case.sla_hours) " h, due " (sla_cell(case, now)) }
            @if let Some(at) = &case.sla_breached_at {
                dt { "Breached" } dd { (layout::time(at)) }
            }
            dt { "Submitted" } dd { (layout::time(&case.created_at)) }
        }
    }
}

/// Reason codes with their labels where the tenant's active codes know them: `NSF (Insufficient
/// funds), SIG`.
fn codes_text(given: &[String], codes: &[ReasonCode]) -> String {
    given
        .iter()
        .map(|code| match codes.iter().find(|c| c.code == *code) {
            Some(known) => format!("{code} ({})", known.label),
            None => code.clone(),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Where maker-checker stands: a one-line summary and each step so far, oldest first.
#[derive(Debug, PartialEq, Eq)]
struct DualControl {
    summary: String,
    steps: Vec<String>,
}

fn dual_control(case: &Case, history: &[HistoryEntry], people: &People) -> DualControl {
    let steps = history
        .iter()
        .filter_map(|entry| {
            let who = people.actor(&entry.actor);
            match (entry.action.as_str(), &entry.notes) {
                ("proposed", _) => Some(format!(
                    "{who} proposed: {}",
                    action_label(entry.decision.as_deref().unwrap_or("decide"))
                )),
                ("confirmed", _) => Some(format!("{who} confirmed")),
                ("sent_back", Some(notes)) => Some(format!("{who} sent it back: {notes}")),
                ("sent_back", None) => Some(format!("{who} sent it back")),
                _ => None,
            }
        })
        .collect();
    let confirmed = history.iter().rev().find(|h| h.action == "confirmed");
    let summary = match (&case.proposal, confirmed) {
        (Some(proposal), _) if case.state == "pending_dual_control" => format!(
            "Proposed: {} by {} — waiting for a checker",
            action_label(&proposal.action),
            people.actor(&proposal.proposed_by)
        ),
        (_, Some(entry)) if case.decision.is_some() => {
            let proposal = entry.details.get("proposal");
            let field = |name: &str| proposal.and_then(|p| p.get(name)).and_then(Value::as_str);
            match (field("action"), field("proposed_by")) {
                (Some(action), Some(maker)) => format!(
                    "Confirmed by {}: {} proposed by {}",
                    people.actor(&entry.actor),
                    action_label(action),
                    people.actor(maker)
                ),
                _ => format!("Confirmed by {}", people.actor(&entry.actor)),
            }
        }
        _ if case.state == "escalated" => {
            "Escalated: a supervisor proposes, a different supervisor confirms".to_owned()
        }
        _ if case.is_open() || case.is_parked() => {
            "No proposal yet: one person proposes, a different person confirms".to_owned()
        }
        _ => "No decision was confirmed".to_owned(),
    };
    DualControl { summary, steps }
}

fn dual_control_panel(case: &Case, history: &[HistoryEntry], people: &People) -> Markup {
    let tally = dual_control(case, history, people);
    html! {
        div #dual-control {
            p { strong { (tally.summary) } }
            @if !tally.steps.is_empty() {
                ol { @for step in &tally.steps { li { (step) } } }
            }
        }
    }
}

fn actions(
    console: &Console,
    case: &Case,
    codes: &[ReasonCode],
    people: &People,
    now: DateTime<Utc>,
) -> Markup {
    let holder = case
        .lease_expires_at
        .filter(|until| *until > now)
        .and(case.assignee_id.as_deref());
    let mine = holder == Some(console.user.id.as_str());
    let held_by_other = holder.is_some() && !mine;
    let reviews = console.user.at_least(Role::Reviewer);
    let refusal = cannot_take(case, &console.user.id, console.user.role);
    let back = case.href();
    html! {
        section.panel aria-labelledby="decide-heading" {
            h2 #decide-heading { "Decision" }
            @if case.state == "on_hold" {
                p.muted { "This case is on hold until " (layout::optional_time(case.hold_until.as_ref()))
                    "; there is nothing to decide until then." }
            } @else if case.state == "needs_more_info" {
                p.muted { "This case waits for information from the submitter; there is nothing to decide until they add it." }
                @if console.user.at_least(Role::Supervisor) { (information_form(&console.csrf, &back)) }
            } @else if !case.is_open() {
                p.muted { "This case is " (case.state) "; there is nothing left to decide." }
            } @else if !reviews {
                p.muted { "Your role may read cases but not decide them." }
            } @else if held_by_other {
                p { "Another reviewer holds this case; it is theirs to decide until their lease ends." }
            } @else if case.state == "pending_dual_control" {
                @if let Some(proposal) = &case.proposal { (proposal_facts(proposal, codes, people)) }
                @match &refusal {
                    Some(why) => p #check-refused { (why) ". Someone else must confirm this proposal or send it back." },
                    None => (check_form(&console.csrf, case, mine)),
                }
            } @else {
                @if let Some(why) = &refusal {
                    p.field-error { (why) ": the API will refuse your decision." }
                }
                (decision_form(&console.csrf, case, codes, mine))
            }
            @if reviews { div.actions {
                @if case.is_open() && mine {
                    form.inline method="post" action=(format!("{back}/release")) {
                        (csrf_input(&console.csrf))
                        button #release .secondary type="submit" { "Release to the queue" }
                    }
                } @else if case.is_open() && holder.is_none() && refusal.is_none() {
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
                "Keys: " (kbd("a")) " approve · " (kbd("r")) " reject · " (kbd("u")) " return · "
                (kbd("e")) " escalate · " (kbd("t")) " reason · " (kbd("n")) " next case"
            }
        }
    }
}

/// The form for a case open for a decision: the tenant's reason codes, reason, notes, the hold
/// time, and one button per action.
fn decision_form(csrf: &str, case: &Case, codes: &[ReasonCode], mine: bool) -> Markup {
    html! {
        form #decision .stack method="post" action=(format!("{}/decision", case.href())) {
            (csrf_input(csrf))
            @if !codes.is_empty() {
                fieldset.reason-codes {
                    legend { "Reason codes" }
                    @if case.require_reason {
                        p.muted { "This case's policy requires at least one." }
                    }
                    @for code in codes {
                        @let field = format!("code-{}", code.code);
                        label for=(field) {
                            input id=(field) type="checkbox" name="reason_codes" value=(code.code);
                            " " strong { (code.code) } " " (code.label)
                            span.hint {
                                "for " (code.actions.iter().map(|a| action_label(a)).collect::<Vec<_>>().join(", "))
                                @if code.requires_notes { " · " span.needs-notes { "notes required" } }
                            }
                        }
                    }
                }
            } @else if case.require_reason {
                p.field-error { "This case's policy requires a reason code, and the tenant has none: ask an admin to add them." }
            }
            div {
                label for="decision-reason" {
                    "Reason"
                    span.hint { "Every action but approve needs a reason or a reason code; recorded in the history and the audit log." }
                }
                textarea #decision-reason name="reason" maxlength="2000" data-shortcut="t" {}
            }
            div {
                label for="decision-notes" { "Notes" span.hint { "Optional, unless a reason code requires them." } }
                textarea #decision-notes name="notes" maxlength="10000" {}
            }
            div {
                label for="hold-until" {
                    "Hold until (" span data-time-zone { "UTC" } ")"
                    span.hint { "For Hold only: the case comes back to the queue then, at most 90 days ahead." }
                }
                input #hold-until type="datetime-local" name="hold_until";
            }
            @if !mine {
                p.muted { "Deciding claims the case for you first." }
            }
            @if case.dual_control {
                p.muted { "Dual control: approve, reject and return become a proposal that a different person confirms." }
            }
            div.actions {
                button #approve .approve type="submit" name="decision" value="approve" data-shortcut="a" { "Approve" }
                button #reject .danger type="submit" name="decision" value="reject" data-shortcut="r" { "Reject" }
                button #return .danger type="submit" name="decision" value="return" data-shortcut="u" { "Return" }
                button #hold .secondary type="submit" name="decision" value="hold" { "Hold" }
                @if case.state != "escalated" {
                    button #escalate .secondary type="submit" name="decision" value="escalate" data-shortcut="e" { "Escalate" }
                }
                button #needs-more-info .secondary type="submit" name="decision" value="needs_more_info" { "Needs more info" }
            }
        }
    }
}

/// What the maker proposed, for the checker to weigh.
fn proposal_facts(proposal: &Proposal, codes: &[ReasonCode], people: &People) -> Markup {
    html! {
        div #proposal {
            p {
                "Proposed: " strong { (action_label(&proposal.action)) } " by "
                (people.actor(&proposal.proposed_by)) ", " (layout::time(&proposal.proposed_at)) "."
            }
            dl.facts {
                dt { "Reason codes" }
                dd {
                    @if proposal.reason_codes.is_empty() { span.muted { "none" } }
                    @else { (codes_text(&proposal.reason_codes, codes)) }
                }
                dt { "Reason" }
                dd { @match &proposal.reason { Some(reason) => (reason), None => span.muted { "none" } } }
                dt { "Notes" }
                dd { @match &proposal.notes { Some(notes) => (notes), None => span.muted { "none" } } }
            }
        }
    }
}

/// The checker's half of maker-checker: confirm the proposal, or send it back with notes.
fn check_form(csrf: &str, case: &Case, mine: bool) -> Markup {
    let action = case
        .proposal
        .as_ref()
        .map_or_else(String::new, |p| action_label(&p.action));
    html! {
        form #check .stack method="post" action=(format!("{}/check", case.href())) {
            (csrf_input(csrf))
            div {
                label for="check-notes" {
                    "Notes"
                    span.hint { "Required to send the proposal back, so the next reviewer knows why; recorded in the history." }
                }
                textarea #check-notes name="notes" maxlength="10000" data-shortcut="t" {}
            }
            @if !mine {
                p.muted { "Confirming or sending back claims the case for you first." }
            }
            div.actions {
                button #confirm .approve type="submit" name="verdict" value="approve" { "Confirm: " (action) }
                button #send-back .danger type="submit" name="verdict" value="reject" { "Send back" }
            }
        }
    }
}

/// A supervisor answers a request for information on the submitter's behalf (e.g. after a call).
fn information_form(csrf: &str, back: &str) -> Markup {
    html! {
        form #information .stack method="post" action=(format!("{back}/information")) {
            (csrf_input(csrf))
            div {
                label for="information-notes" {
                    "Information"
                    span.hint { "What the submitter provided; the case goes back to review with it." }
                }
                textarea #information-notes name="notes" required maxlength="10000" {}
            }
            div { button #add-information type="submit" { "Add information" } }
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

fn history_table(history: &[HistoryEntry], codes: &[ReasonCode], people: &People) -> Markup {
    html! {
        table #history {
            thead { tr {
                th scope="col" { "When" } th scope="col" { "What" } th scope="col" { "State" }
                th scope="col" { "Who" } th scope="col" { "Decision" } th scope="col" { "Reason codes, reason and notes" }
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
                            @if !entry.reason_codes.is_empty() {
                                span.codes { (codes_text(&entry.reason_codes, codes)) } br;
                            }
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

fn views_table(views: &[CaseView], attachments: &[Attachment], people: &People) -> Markup {
    html! {
        @if views.is_empty() {
            p.muted { "Nobody has viewed this case." }
        } @else {
            table #views {
                thead { tr { th scope="col" { "When" } th scope="col" { "Who" } th scope="col" { "What" } } }
                tbody {
                    @for view in views {
                        tr {
                            td { (layout::time(&view.viewed_at)) }
                            td { (people.actor(&view.actor)) }
                            td {
                                @match &view.attachment_id {
                                    None => "the case",
                                    Some(id) => {
                                        "attachment "
                                        (attachments.iter().find(|a| a.id == *id).map_or(id.as_str(), |a| a.filename.as_str()))
                                    }
                                }
                            }
                        }
                    }
                }
            }
            @if views.len() >= VIEWS_SHOWN as usize {
                p.muted { "Only the most recent " (VIEWS_SHOWN) " views are listed." }
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
    reason_codes: Vec<String>,
    #[serde(default)]
    reason: String,
    #[serde(default)]
    notes: String,
    #[serde(default)]
    hold_until: String,
}

/// Form text as the API wants it: trimmed, and absent when empty.
fn optional_text(text: &str) -> Option<&str> {
    Some(text.trim()).filter(|t| !t.is_empty())
}

/// The flash after an action: what happened to the case.
fn decision_message(action: &str, after: &Case) -> String {
    match after.state.as_str() {
        "pending_dual_control" => format!(
            "Proposed: {}. A different person must confirm it (dual control).",
            action_label(action)
        ),
        "escalated" => "Case escalated to a supervisor.".to_owned(),
        "on_hold" => match after.hold_until {
            Some(until) => format!("Case on hold until {}.", until.format("%Y-%m-%d %H:%M UTC")),
            None => "Case on hold.".to_owned(),
        },
        "needs_more_info" => "Case waiting for information from the submitter.".to_owned(),
        "approved" | "rejected" | "returned" => format!("Case {}.", after.state),
        other => format!("Done: the case is now {other}."),
    }
}

/// Posts `body` to `path`, an action on case `id`; a case nobody holds is claimed for the user
/// first. The API checks the request itself (a reason, notes, the hold time) before it asks for
/// the claim, so such mistakes come back without claiming anything.
async fn claiming_first(
    console: &Console,
    id: &str,
    path: &str,
    body: &Value,
) -> Result<Case, ApiFailure> {
    match console.api.post::<Case>(path, body).await {
        Err(failure) if failure.code == "not_claimed" => {
            let claim = format!("/cases/{id}/claim");
            console.api.post::<Case>(&claim, &json!({})).await?;
            console.api.post::<Case>(path, body).await
        }
        done => done,
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
    if !ACTIONS.iter().any(|(action, _)| *action == form.decision) {
        return session::error(
            &back,
            "Choose approve, reject, return, hold, escalate or needs more info.",
        );
    }
    // `datetime-local` carries no zone: the console script sends it in RFC 3339 with the browser's
    // offset; without the script the field is labelled UTC and read as UTC.
    let hold_until = match form.decision.as_str() {
        "hold" => match super::admin::parse_time(&form.hold_until) {
            Some(until) => Some(until),
            None => return session::error(&back, "Enter until when to hold the case."),
        },
        _ => None,
    };
    let body = json!({
        "decision": form.decision,
        "reason_codes": form.reason_codes,
        "reason": optional_text(&form.reason),
        "notes": optional_text(&form.notes),
        "hold_until": hold_until,
    });
    match claiming_first(&console, &id, &format!("/cases/{id}/decision"), &body).await {
        Ok(case) => session::success("/console/review", decision_message(&form.decision, &case)),
        Err(failure) => post_failed(&back, &failure),
    }
}

#[derive(Deserialize)]
struct CheckForm {
    verdict: String,
    #[serde(default)]
    notes: String,
}

/// The flash after checking a proposal.
fn check_message(verdict: &str, after: &Case) -> String {
    match (verdict, after.state.as_str()) {
        ("approve", state) => format!("Confirmed: case {state}."),
        (_, "escalated") => "Sent back: the case is with the supervisors again.".to_owned(),
        _ => "Sent back: the case is in the queue again.".to_owned(),
    }
}

async fn check(console: Console, Path(id): Path<String>, Form(form): Form<CheckForm>) -> Response {
    if !valid_id(&id) {
        return not_found();
    }
    let back = format!("/console/cases/{id}");
    if !matches!(form.verdict.as_str(), "approve" | "reject") {
        return session::error(&back, "Choose confirm or send back.");
    }
    let body = json!({ "verdict": form.verdict, "notes": optional_text(&form.notes) });
    match claiming_first(&console, &id, &format!("/cases/{id}/check"), &body).await {
        Ok(case) => session::success("/console/review", check_message(&form.verdict, &case)),
        Err(failure) => post_failed(&back, &failure),
    }
}

#[derive(Deserialize)]
struct InformationForm {
    #[serde(default)]
    notes: String,
}

async fn add_information(
    console: Console,
    Path(id): Path<String>,
    Form(form): Form<InformationForm>,
) -> Response {
    if !valid_id(&id) {
        return not_found();
    }
    let back = format!("/console/cases/{id}");
    let Some(notes) = optional_text(&form.notes) else {
        return session::error(&back, "Write the information to add.");
    };
    let path = format!("/cases/{id}/information");
    match console
        .api
        .post::<Case>(&path, &json!({ "notes": notes }))
        .await
    {
        Ok(case) if case.state == "escalated" => session::success(
            &back,
            "Information added; the case is with the supervisors again.",
        ),
        Ok(_) => session::success(&back, "Information added; the case is in the queue again."),
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
            "policy_version": 0, "policy_trace": {}, "submitted_by": "user:carl", "risk_level": "low",
            "flags": [], "require_reason": false, "proposal": null, "hold_until": null, "parked_at": null,
            "assignee_id": null, "lease_expires_at": null, "decision": null, "reason_codes": [],
            "decided_at": null, "created_at": "2030-01-01T08:00:00Z"
        });
        if let (Some(base), Some(fields)) = (base.as_object_mut(), fields.as_object()) {
            base.extend(fields.clone());
        }
        serde_json::from_value(base).unwrap()
    }

    fn step(action: &str, from: &str, to: &str, actor: &str, fields: Value) -> HistoryEntry {
        let mut entry = json!({
            "action": action, "from_state": from, "to_state": to, "actor": actor, "decision": null,
            "reason": null, "notes": null, "details": {}, "created_at": "2030-01-01T09:00:00Z"
        });
        if let (Some(entry), Some(fields)) = (entry.as_object_mut(), fields.as_object()) {
            entry.extend(fields.clone());
        }
        serde_json::from_value(entry).unwrap()
    }

    fn proposal(action: &str, by: &str) -> Value {
        json!({ "action": action, "proposed_by": format!("user:{by}"), "proposed_at": "2030-01-01T09:00:00Z",
                "reason_codes": ["NSF"], "reason": "no funds", "notes": null })
    }

    fn people() -> People {
        let users = ["ann", "bob"]
            .map(|id| {
                serde_json::from_value(json!({
                    "id": id, "email": format!("{id}@acme.test"), "name": id.to_uppercase(),
                    "role": "reviewer", "status": "active"
                }))
                .unwrap()
            })
            .to_vec();
        People::new("me", "Rita", users)
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
        let proposed = case(json!({
            "state": "pending_dual_control", "proposal": proposal("approve", "ann")
        }));
        assert_eq!(
            cannot_take(&proposed, "ann", Role::Reviewer).as_deref(),
            Some("You proposed this decision")
        );
        assert_eq!(cannot_take(&proposed, "bob", Role::Reviewer), None);
        let escalated = case(json!({ "state": "escalated", "required_role": "supervisor" }));
        assert_eq!(
            cannot_take(&escalated, "bob", Role::Reviewer).as_deref(),
            Some("Needs a supervisor")
        );
        assert_eq!(cannot_take(&escalated, "sue", Role::Supervisor), None);
    }

    #[test]
    fn dual_control_follows_maker_and_checker() {
        let people = people();
        let waiting = case(json!({}));
        let tally = dual_control(&waiting, &[], &people);
        assert!(
            tally.summary.starts_with("No proposal yet"),
            "{}",
            tally.summary
        );
        assert!(tally.steps.is_empty());

        let proposed_step = step(
            "proposed",
            "in_review",
            "pending_dual_control",
            "user:ann",
            json!({ "decision": "reject" }),
        );
        let pending = case(json!({
            "state": "pending_dual_control", "proposal": proposal("reject", "ann")
        }));
        let tally = dual_control(&pending, std::slice::from_ref(&proposed_step), &people);
        assert_eq!(
            tally.summary,
            "Proposed: reject by ANN — waiting for a checker"
        );
        assert_eq!(tally.steps, ["ANN proposed: reject"]);

        let confirmed = step(
            "confirmed",
            "pending_dual_control",
            "rejected",
            "user:bob",
            json!({ "details": { "proposal": proposal("reject", "ann") } }),
        );
        let done = case(json!({ "state": "rejected", "decision": "reject" }));
        let tally = dual_control(&done, &[proposed_step.clone(), confirmed], &people);
        assert_eq!(tally.summary, "Confirmed by BOB: reject proposed by ANN");
        assert_eq!(tally.steps, ["ANN proposed: reject", "BOB confirmed"]);

        let sent_back = step(
            "sent_back",
            "pending_dual_control",
            "queued",
            "user:me",
            json!({ "notes": "words and figures differ" }),
        );
        let again = case(json!({ "state": "queued" }));
        let tally = dual_control(&again, &[proposed_step, sent_back], &people);
        assert!(
            tally.summary.starts_with("No proposal yet"),
            "{}",
            tally.summary
        );
        assert_eq!(
            tally.steps,
            [
                "ANN proposed: reject",
                "Rita (you) sent it back: words and figures differ"
            ]
        );

        let escalated = case(json!({ "state": "escalated" }));
        assert!(
            dual_control(&escalated, &[], &people)
                .summary
                .starts_with("Escalated")
        );
        let cancelled = case(json!({ "state": "cancelled" }));
        assert_eq!(
            dual_control(&cancelled, &[], &people).summary,
            "No decision was confirmed"
        );
    }

    #[test]
    fn decision_messages_say_what_happened() {
        let pending = case(json!({ "state": "pending_dual_control" }));
        assert_eq!(
            decision_message("return", &pending),
            "Proposed: return. A different person must confirm it (dual control)."
        );
        for (action, state, message) in [
            ("approve", "approved", "Case approved."),
            ("reject", "rejected", "Case rejected."),
            ("return", "returned", "Case returned."),
            ("escalate", "escalated", "Case escalated to a supervisor."),
            (
                "needs_more_info",
                "needs_more_info",
                "Case waiting for information from the submitter.",
            ),
        ] {
            let after = case(json!({ "state": state }));
            assert_eq!(decision_message(action, &after), message, "{action}");
        }
        let held = case(json!({ "state": "on_hold", "hold_until": "2030-01-03T09:30:00Z" }));
        assert_eq!(
            decision_message("hold", &held),
            "Case on hold until 2030-01-03 09:30 UTC."
        );
        let confirmed = case(json!({ "state": "returned" }));
        assert_eq!(
            check_message("approve", &confirmed),
            "Confirmed: case returned."
        );
        let back = case(json!({ "state": "queued" }));
        assert_eq!(
            check_message("reject", &back),
            "Sent back: the case is in the queue again."
        );
        let back_up = case(json!({ "state": "escalated" }));
        assert!(check_message("reject", &back_up).contains("supervisors"));
        assert_eq!(action_label("needs_more_info"), "needs more info");
        assert_eq!(action_label("approve"), "approve");
    }

    #[test]
    fn reason_codes_are_shown_with_their_labels() {
        let codes: Vec<ReasonCode> = serde_json::from_value(json!([
            { "code": "NSF", "label": "Insufficient funds", "actions": ["return"], "requires_notes": false,
              "active": true, "created_at": "2030-01-01T08:00:00Z", "updated_at": "2030-01-01T08:00:00Z" }
        ]))
        .unwrap();
        assert_eq!(
            codes_text(&["NSF".to_owned(), "OLD".to_owned()], &codes),
            "NSF (Insufficient funds), OLD"
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

        // The directory names everyone, also for roles that may not list users.
        let mut people = People::new("me", "Rita Reviewer", Vec::new());
        people.learn(
            serde_json::from_value(json!({
                "users": [{ "id": "zed", "name": "Zed Checker" }, { "id": "me", "name": "Rita" }],
                "api_keys": [{ "id": "k1", "name": "intake" }],
            }))
            .unwrap(),
        );
        assert_eq!(people.actor("user:zed"), "Zed Checker");
        assert_eq!(people.actor("user:me"), "Rita Reviewer (you)");
        assert_eq!(people.actor("api_key:k1"), "API key “intake”");
        assert_eq!(people.user("zed"), "Zed Checker");
    }

    #[test]
    fn only_plain_ids_reach_api_paths() {
        assert!(valid_id("0190a5c2-7b1e-7cc0-9f00-1234567890ab"));
        for bad in ["", "../users", "a/b", "a?b", "a%2Fb", "a b"] {
            assert!(!valid_id(bad), "{bad:?}");
        }
    }
}
