//! `/console/reason-codes`: the tenant's reason codes, which reviewers pick when they act on a
//! case. Admins add codes, change a code's label, the actions it may justify and whether it needs
//! notes, and deactivate codes (never delete them: past decisions keep their meaning). Everyone
//! else sees the list.

use axum::extract::Path;
use axum::response::Response;
use axum_extra::extract::Form;
use maud::{Markup, html};
use serde::Deserialize;
use serde_json::{Value, json};

use super::segment;
use crate::auth::Role;
use crate::console::layout::{self, badge, csrf_input};
use crate::console::pages::review::{ACTIONS, ReasonCode, action_label};
use crate::console::session::{self, Console};

const PATH: &str = "/console/reason-codes";

#[derive(Deserialize)]
pub struct CreateForm {
    #[serde(default)]
    code: String,
    #[serde(default)]
    label: String,
    #[serde(default)]
    actions: Vec<String>,
    requires_notes: Option<String>,
}

/// One row's forms: the edit form (label, actions, notes), or the switch (`active`).
#[derive(Deserialize)]
pub struct UpdateForm {
    active: Option<String>,
    label: Option<String>,
    #[serde(default)]
    actions: Vec<String>,
    requires_notes: Option<String>,
}

pub async fn page(console: Console) -> Response {
    let codes: Vec<ReasonCode> = match console.api.get("/reason-codes?include_inactive=true").await
    {
        Ok(codes) => codes,
        Err(failure) => return console.fail(&failure),
    };
    let admin = console.user.at_least(Role::Admin);
    let content = html! {
        h1 { "Reason codes" }
        p {
            "Reviewers pick these when they act on a case; each code justifies only the actions it names. "
            "Deactivate a code to stop it being given: decisions that used it keep it."
        }
        table #reason-codes {
            caption.visually-hidden { "Reason codes of this tenant" }
            thead { tr {
                th scope="col" { "Code" } th scope="col" { "Label" } th scope="col" { "For" }
                th scope="col" { "Notes" } th scope="col" { "Status" }
                @if admin { th scope="col" { "Change" } }
            } }
            tbody {
                @for code in &codes { (row(&console.csrf, code, admin)) }
                @if codes.is_empty() {
                    tr { td colspan="6" { span.muted { "No reason codes yet." } } }
                }
            }
        }
        @if admin { (create_form(&console.csrf)) }
    };
    layout::page(&console, "Reason codes", PATH, content)
}

fn actions_text(actions: &[String]) -> String {
    actions
        .iter()
        .map(|a| action_label(a))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Checkboxes for the actions a code may justify; `prefix` keeps the ids of each form apart.
fn action_boxes(prefix: &str, checked: &[String]) -> Markup {
    html! {
        fieldset.scopes {
            legend { "For the actions" }
            @for (action, words) in ACTIONS {
                @let field = format!("{prefix}-{action}");
                label for=(field) {
                    input id=(field) type="checkbox" name="actions" value=(action)
                        checked[checked.iter().any(|a| a == action)];
                    (words)
                }
            }
        }
    }
}

fn row(csrf: &str, code: &ReasonCode, admin: bool) -> Markup {
    let action = format!("{PATH}/{}", segment(&code.code));
    let prefix = format!("edit-{}", code.code);
    html! {
        tr data-code=(code.code) {
            td { code { (code.code) } }
            td { (code.label) }
            td { (actions_text(&code.actions)) }
            td { @if code.requires_notes { "required" } @else { span.muted { "optional" } } }
            td { (badge(if code.active { "active" } else { "inactive" })) }
            @if admin {
                td {
                    details {
                        summary { "Edit" }
                        form.stack method="post" action=(action) {
                            (csrf_input(csrf))
                            div {
                                label for={ (prefix) "-label" } { "Label" }
                                input id={ (prefix) "-label" } type="text" name="label" value=(code.label)
                                    required maxlength="200";
                            }
                            (action_boxes(&prefix, &code.actions))
                            label for={ (prefix) "-notes" } {
                                input id={ (prefix) "-notes" } type="checkbox" name="requires_notes" value="true"
                                    checked[code.requires_notes];
                                " Notes required"
                            }
                            div { button.secondary id={ (prefix) "-save" } type="submit" { "Save" } }
                        }
                    }
                    form.inline method="post" action=(action) {
                        (csrf_input(csrf))
                        @if code.active {
                            input type="hidden" name="active" value="false";
                            button.danger id={ "deactivate-" (code.code) } type="submit"
                                data-confirm={ "Deactivate " (code.code) "? Reviewers can no longer give it." } {
                                "Deactivate"
                            }
                        } @else {
                            input type="hidden" name="active" value="true";
                            button.secondary id={ "activate-" (code.code) } type="submit" { "Reactivate" }
                        }
                    }
                }
            }
        }
    }
}

fn create_form(csrf: &str) -> Markup {
    html! {
        section aria-labelledby="new-code-heading" {
            h2 #new-code-heading { "New reason code" }
            form #new-reason-code .stack method="post" action=(PATH) {
                (csrf_input(csrf))
                div {
                    label for="code-code" {
                        "Code"
                        span.hint { "Up to 32 letters, digits, '_', '-' or '.', e.g. NSF. It cannot be changed later." }
                    }
                    input #code-code type="text" name="code" required maxlength="32" autocomplete="off";
                }
                div {
                    label for="code-label" { "Label" span.hint { "What reviewers read, e.g. Insufficient funds." } }
                    input #code-label type="text" name="label" required maxlength="200" autocomplete="off";
                }
                (action_boxes("new-code", &[]))
                label for="code-notes" {
                    input #code-notes type="checkbox" name="requires_notes" value="true";
                    " Notes required: a decision giving this code must also carry notes"
                }
                div { button #create-reason-code type="submit" { "Add reason code" } }
            }
        }
    }
}

pub async fn create(console: Console, Form(form): Form<CreateForm>) -> Response {
    let code = form.code.trim();
    let body = json!({
        "code": code,
        "label": form.label.trim(),
        "actions": form.actions,
        "requires_notes": form.requires_notes.is_some(),
    });
    match console.api.post::<Value>("/reason-codes", &body).await {
        Ok(_) => session::success(PATH, format!("Reason code {code} added.")),
        Err(failure) => session::error(PATH, failure.message),
    }
}

pub async fn update(
    console: Console,
    Path(code): Path<String>,
    Form(form): Form<UpdateForm>,
) -> Response {
    let (body, done) = match form.active.as_deref() {
        Some("false") => (
            json!({ "active": false }),
            format!("Reason code {code} deactivated."),
        ),
        Some(_) => (
            json!({ "active": true }),
            format!("Reason code {code} reactivated."),
        ),
        None => (
            json!({
                "label": form.label.as_deref().map(str::trim),
                "actions": form.actions,
                "requires_notes": form.requires_notes.is_some(),
            }),
            format!("Reason code {code} saved."),
        ),
    };
    let path = format!("/reason-codes/{}", segment(&code));
    match console.api.patch::<Value>(&path, &body).await {
        Ok(_) => session::success(PATH, done),
        Err(failure) => session::error(PATH, failure.message),
    }
}
