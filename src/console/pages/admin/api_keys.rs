//! `/console/api-keys`: the tenant's API keys; create one (its secret is shown once, on the response
//! to the form, never in a cookie or a URL) and revoke.

use axum::extract::{Path, Query};
use axum::http::Method;
use axum::response::Response;
use axum_extra::extract::Form;
use chrono::{DateTime, Utc};
use maud::{Markup, html};
use serde::Deserialize;
use serde_json::json;

use super::{error_box, pager, parse_time, segment};
use crate::auth::api_keys::SCOPES;
use crate::console::layout::{self, badge, csrf_input, optional_time, time};
use crate::console::session::{self, Console};

const PATH: &str = "/console/api-keys";

#[derive(Deserialize)]
struct KeyPage {
    items: Vec<Key>,
    next_cursor: Option<String>,
}

#[derive(Deserialize)]
struct Key {
    id: String,
    name: String,
    prefix: String,
    scopes: Vec<String>,
    created_at: DateTime<Utc>,
    expires_at: Option<DateTime<Utc>>,
    last_used_at: Option<DateTime<Utc>>,
    revoked_at: Option<DateTime<Utc>>,
}

/// `POST /api-keys`: the key and, this once, its secret.
#[derive(Deserialize)]
struct Created {
    name: String,
    secret: String,
}

#[derive(Deserialize)]
pub struct PageQuery {
    cursor: Option<String>,
}

#[derive(Deserialize)]
pub struct CreateForm {
    #[serde(default)]
    name: String,
    #[serde(default)]
    scopes: Vec<String>,
    /// `datetime-local` (RFC 3339 with the browser's offset when the console script runs, else read
    /// as UTC); empty for a key that does not expire.
    #[serde(default)]
    expires_at: String,
}

pub async fn page(console: Console, Query(params): Query<PageQuery>) -> Response {
    render(&console, params.cursor.as_deref().unwrap_or_default(), None).await
}

async fn render(console: &Console, cursor: &str, created: Option<&Created>) -> Response {
    let path = format!(
        "/api-keys{}",
        super::query(&[("limit", "100"), ("cursor", cursor)])
    );
    let keys: KeyPage = match (console.api.get(&path).await, created) {
        (Ok(keys), _) => keys,
        // The secret exists only in this response: show it even when the list cannot be.
        (Err(failure), Some(created)) => {
            let content = html! {
                h1 { "API keys" }
                (new_secret(created))
                (error_box(&failure.message))
            };
            return layout::page(console, "API keys", PATH, content);
        }
        (Err(failure), None) => return console.fail(&failure),
    };
    let now = crate::clock::now();
    let content = html! {
        h1 { "API keys" }
        @if let Some(created) = created { (new_secret(created)) }
        table #api-keys {
            caption.visually-hidden { "API keys of this tenant" }
            thead {
                tr {
                    th scope="col" { "Name" }
                    th scope="col" { "Key" }
                    th scope="col" { "Scopes" }
                    th scope="col" { "Created" }
                    th scope="col" { "Expires" }
                    th scope="col" { "Last used" }
                    th scope="col" { "Revoked" }
                    th scope="col" { "Revoke" }
                }
            }
            tbody {
                @for key in &keys.items { (row(console, key, now)) }
                @if keys.items.is_empty() {
                    tr { td colspan="8" { "No API keys yet." } }
                }
            }
        }
        (pager(PATH, &[], keys.next_cursor.as_deref(), !cursor.is_empty()))
        (create_form(&console.csrf))
    };
    layout::page(console, "API keys", PATH, content)
}

fn new_secret(created: &Created) -> Markup {
    html! {
        section.panel role="status" aria-labelledby="new-secret-heading" {
            h2 #new-secret-heading { "Key “" (created.name) "” created" }
            p {
                strong { "Copy the secret now: it is shown only this once." }
                " Clients send it as " code { "Authorization: Bearer <secret>" } "."
            }
            p { code #new-secret .secret { (created.secret) } }
        }
    }
}

fn row(console: &Console, key: &Key, now: DateTime<Utc>) -> Markup {
    let expired = key.expires_at.is_some_and(|at| at <= now);
    html! {
        tr data-key-id=(key.id) {
            td { (key.name) }
            td { code { (key.prefix) "…" } }
            td { (key.scopes.join(", ")) }
            td { (time(&key.created_at)) }
            td {
                (optional_time(key.expires_at.as_ref()))
                @if expired && key.revoked_at.is_none() { " " (badge("expired")) }
            }
            td { (optional_time(key.last_used_at.as_ref())) }
            td {
                @if let Some(at) = &key.revoked_at { (badge("revoked")) " " (time(at)) }
                @else { span.muted { "—" } }
            }
            td {
                @if key.revoked_at.is_none() {
                    form.inline method="post" action={ (PATH) "/" (segment(&key.id)) "/revoke" } {
                        (csrf_input(&console.csrf))
                        button.danger type="submit"
                            data-confirm={ "Revoke the key “" (key.name) "”? Clients using it stop working at once." } {
                            "Revoke"
                        }
                    }
                }
            }
        }
    }
}

fn create_form(csrf: &str) -> Markup {
    html! {
        section aria-labelledby="new-key-heading" {
            h2 #new-key-heading { "New API key" }
            form #new-api-key .stack method="post" action=(PATH) {
                (csrf_input(csrf))
                div {
                    label for="key-name" {
                        "Name"
                        span.hint { "Who or what uses it, e.g. “intake agent”." }
                    }
                    input #key-name type="text" name="name" required maxlength="200" autocomplete="off";
                }
                fieldset.scopes {
                    legend { "Scopes" }
                    @for scope in SCOPES {
                        @let id = format!("scope-{}", scope.replace(':', "-"));
                        label for=(id) {
                            input id=(id) type="checkbox" name="scopes" value=(scope);
                            (scope)
                        }
                    }
                }
                div {
                    label for="key-expires" {
                        "Expires (" span data-time-zone { "UTC" } ", optional)"
                        span.hint { "Leave empty for a key that does not expire." }
                    }
                    input #key-expires type="datetime-local" name="expires_at";
                }
                div { button #create-api-key type="submit" { "Create key" } }
            }
        }
    }
}

/// Creates the key and shows its secret on this response (200, `no-store`), so the secret is in no
/// redirect, cookie or history entry.
pub async fn create(console: Console, Form(form): Form<CreateForm>) -> Response {
    let expires_at = match form.expires_at.trim() {
        "" => None,
        typed => match parse_time(typed) {
            Some(at) => Some(at),
            None => return session::error(PATH, "Expires: not a date and time."),
        },
    };
    let body = json!({ "name": form.name.trim(), "scopes": form.scopes, "expires_at": expires_at });
    match console.api.post::<Created>("/api-keys", &body).await {
        Ok(created) => render(&console, "", Some(&created)).await,
        Err(failure) => session::error(PATH, failure.message),
    }
}

pub async fn revoke(console: Console, Path(id): Path<String>) -> Response {
    let path = format!("/api-keys/{}", segment(&id));
    match console.api.send(Method::DELETE, &path, None).await {
        Ok(()) => session::success(PATH, "API key revoked."),
        Err(failure) => session::error(PATH, failure.message),
    }
}
