//! `/console/users`: the tenant's users; admins create them, change roles, disable and enable.

use axum::Form;
use axum::extract::{Path, Query};
use axum::response::Response;
use maud::{Markup, html};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{pager, segment};
use crate::auth::Role;
use crate::console::layout::{self, badge, csrf_input};
use crate::console::session::{self, Console};

const PATH: &str = "/console/users";
const ROLES: [Role; 4] = [Role::Viewer, Role::Reviewer, Role::Supervisor, Role::Admin];

#[derive(Deserialize)]
struct UserPage {
    items: Vec<UserRow>,
    next_cursor: Option<String>,
}

#[derive(Deserialize)]
struct UserRow {
    id: String,
    email: String,
    name: String,
    role: Role,
    #[serde(default)]
    platform_admin: bool,
    status: String,
    mfa_enabled: bool,
}

#[derive(Deserialize)]
pub struct PageQuery {
    cursor: Option<String>,
}

#[derive(Deserialize)]
pub struct CreateForm {
    #[serde(default)]
    email: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    role: String,
    #[serde(default)]
    password: String,
}

/// One row's form: a new role, or a new status (`active` / `disabled`).
#[derive(Deserialize)]
pub struct UpdateForm {
    role: Option<String>,
    status: Option<String>,
}

pub async fn page(console: Console, Query(params): Query<PageQuery>) -> Response {
    let cursor = params.cursor.unwrap_or_default();
    let path = format!(
        "/users{}",
        super::query(&[("limit", "100"), ("cursor", &cursor)])
    );
    let users: UserPage = match console.api.get(&path).await {
        Ok(users) => users,
        Err(failure) => return console.fail(&failure),
    };
    let admin = console.user.at_least(Role::Admin);
    let content = html! {
        h1 { "Users" }
        table #users {
            caption.visually-hidden { "Users of this tenant" }
            thead {
                tr {
                    th scope="col" { "Email" }
                    th scope="col" { "Name" }
                    th scope="col" { "Role" }
                    th scope="col" { "Status" }
                    th scope="col" { "MFA" }
                    @if admin { th scope="col" { "Change" } }
                }
            }
            tbody {
                @for user in &users.items { (row(&console, user, admin)) }
                @if users.items.is_empty() {
                    tr { td colspan="6" { "No users." } }
                }
            }
        }
        (pager(PATH, &[], users.next_cursor.as_deref(), !cursor.is_empty()))
        @if admin { (create_form(&console.csrf)) }
    };
    layout::page(&console, "Users", PATH, content)
}

fn row(console: &Console, user: &UserRow, admin: bool) -> Markup {
    let is_self = user.id == console.user.id;
    let who = if user.name.is_empty() {
        &user.email
    } else {
        &user.name
    };
    let role_field = format!("role-{}", user.id);
    html! {
        tr data-user-id=(user.id) data-email=(user.email) {
            td { (user.email) @if is_self { " " span.muted { "(you)" } } }
            td { (user.name) }
            td {
                (user.role.as_str())
                @if user.platform_admin { " " (badge("platform admin")) }
            }
            td { (badge(&user.status)) }
            td {
                @if user.mfa_enabled { "on" }
                @else if user.role == Role::Admin { span.sla-due-soon { "not set up" } }
                @else { span.muted { "off" } }
            }
            @if admin {
                td {
                    @if is_self {
                        span.muted { "Ask another admin to change your own account." }
                    } @else {
                        div.actions {
                            form.inline method="post" action={ (PATH) "/" (segment(&user.id)) } {
                                (csrf_input(&console.csrf))
                                label.visually-hidden for=(role_field) { "Role of " (who) }
                                select id=(role_field) name="role" {
                                    @for role in ROLES {
                                        option value=(role.as_str()) selected[role == user.role] {
                                            (role.as_str())
                                        }
                                    }
                                }
                                button.secondary type="submit" { "Change role" }
                            }
                            form.inline method="post" action={ (PATH) "/" (segment(&user.id)) } {
                                (csrf_input(&console.csrf))
                                @if user.status == "active" {
                                    input type="hidden" name="status" value="disabled";
                                    button.danger type="submit"
                                        data-confirm={ "Disable " (who) "? Their sessions end at once." } {
                                        "Disable"
                                    }
                                } @else {
                                    input type="hidden" name="status" value="active";
                                    button.secondary type="submit" { "Enable" }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

fn create_form(csrf: &str) -> Markup {
    html! {
        section aria-labelledby="new-user-heading" {
            h2 #new-user-heading { "New user" }
            form #new-user .stack method="post" action=(PATH) {
                (csrf_input(csrf))
                div {
                    label for="user-email" { "Email" }
                    input #user-email type="email" name="email" required autocomplete="off";
                }
                div {
                    label for="user-name" { "Name" }
                    input #user-name type="text" name="name" required maxlength="200" autocomplete="off";
                }
                div {
                    label for="user-role" {
                        "Role"
                        span.hint { "Admins must set up two-factor authentication at their first sign-in." }
                    }
                    select #user-role name="role" {
                        @for role in ROLES {
                            option value=(role.as_str()) selected[role == Role::Reviewer] { (role.as_str()) }
                        }
                    }
                }
                div {
                    label for="user-password" {
                        "Initial password"
                        span.hint { "At least 12 characters. Give it to the user by a safe channel." }
                    }
                    input #user-password type="password" name="password" required minlength="12"
                        autocomplete="new-password";
                }
                div { button #create-user type="submit" { "Create user" } }
            }
        }
    }
}

pub async fn create(console: Console, Form(form): Form<CreateForm>) -> Response {
    let body = json!({
        "email": form.email.trim(),
        "name": form.name.trim(),
        "role": form.role,
        "password": form.password,
    });
    match console.api.post::<Value>("/users", &body).await {
        Ok(_) => session::success(PATH, format!("User {} created.", form.email.trim())),
        Err(failure) => session::error(PATH, failure.message),
    }
}

pub async fn update(
    console: Console,
    Path(id): Path<String>,
    Form(form): Form<UpdateForm>,
) -> Response {
    let (body, done) = match (form.role, form.status) {
        (Some(role), _) => (json!({ "role": role }), format!("Role changed to {role}.")),
        (None, Some(status)) if status == "disabled" => (
            json!({ "status": status }),
            "User disabled; their sessions have ended.".to_owned(),
        ),
        (None, Some(status)) => (json!({ "status": status }), "User enabled.".to_owned()),
        (None, None) => return session::error(PATH, "Nothing to change."),
    };
    let path = format!("/users/{}", segment(&id));
    match console.api.patch::<Value>(&path, &body).await {
        Ok(_) => session::success(PATH, done),
        Err(failure) => session::error(PATH, failure.message),
    }
}
