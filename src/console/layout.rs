//! The page shell every console page shares (header, navigation by role, flash message) and the
//! small pieces pages are built from.

use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use chrono::{DateTime, Utc};
use maud::{DOCTYPE, Markup, html};

use super::client::ApiFailure;
use super::session::{CSRF_FIELD, Console, Flash, FlashKind, User};
use crate::auth::Role;

/// A navigation entry: where it goes, its label, and who sees it.
struct NavItem {
    href: &'static str,
    label: &'static str,
    audience: Audience,
}

enum Audience {
    AtLeast(Role),
    PlatformAdmins,
}

impl Audience {
    fn includes(&self, user: &User) -> bool {
        match self {
            Self::AtLeast(role) => user.at_least(*role),
            Self::PlatformAdmins => user.platform_admin,
        }
    }
}

const NAV: &[NavItem] = &[
    NavItem {
        href: "/console/review",
        label: "Review desk",
        audience: Audience::AtLeast(Role::Reviewer),
    },
    NavItem {
        href: "/console/supervise",
        label: "Supervision",
        audience: Audience::AtLeast(Role::Supervisor),
    },
    NavItem {
        href: "/console/reports",
        label: "Reports",
        audience: Audience::AtLeast(Role::Supervisor),
    },
    NavItem {
        href: "/console/tasks",
        label: "Tasks",
        audience: Audience::AtLeast(Role::Viewer),
    },
    NavItem {
        href: "/console/runs",
        label: "Runs",
        audience: Audience::AtLeast(Role::Viewer),
    },
    NavItem {
        href: "/console/workers",
        label: "Queues & workers",
        audience: Audience::AtLeast(Role::Supervisor),
    },
    NavItem {
        href: "/console/users",
        label: "Users",
        audience: Audience::AtLeast(Role::Admin),
    },
    NavItem {
        href: "/console/api-keys",
        label: "API keys",
        audience: Audience::AtLeast(Role::Admin),
    },
    NavItem {
        href: "/console/policy",
        label: "Policy",
        audience: Audience::AtLeast(Role::Admin),
    },
    NavItem {
        href: "/console/reason-codes",
        label: "Reason codes",
        audience: Audience::AtLeast(Role::Admin),
    },
    NavItem {
        href: "/console/audit",
        label: "Audit log",
        audience: Audience::AtLeast(Role::Supervisor),
    },
    NavItem {
        href: "/console/tenants",
        label: "Tenants",
        audience: Audience::PlatformAdmins,
    },
];

/// A full page for a signed-in user. `active` is the navigation entry's href.
pub fn page(console: &Console, title: &str, active: &str, content: Markup) -> Response {
    let body = html! {
        (DOCTYPE)
        html lang="en" {
            (head(title))
            body data-page=(active) {
                a.skip href="#main" { "Skip to content" }
                header.top {
                    a.brand href="/console" { "Docket" }
                    nav aria-label="Main" {
                        ul {
                            @for item in NAV.iter().filter(|i| i.audience.includes(&console.user)) {
                                li {
                                    a href=(item.href)
                                        aria-current=[(item.href == active).then_some("page")] {
                                        (item.label)
                                    }
                                }
                            }
                        }
                    }
                    (account(&console.user, &console.csrf))
                }
                main #main tabindex="-1" {
                    @if let Some(flash) = &console.flash { (flash_box(flash)) }
                    (content)
                }
            }
        }
    };
    (StatusCode::OK, Html(body.into_string())).into_response()
}

fn head(title: &str) -> Markup {
    html! {
        head {
            meta charset="utf-8";
            meta name="viewport" content="width=device-width, initial-scale=1";
            title { (title) " · Docket" }
            link rel="stylesheet" href=(super::assets::CSS_PATH);
            script src=(super::assets::JS_PATH) defer {}
        }
    }
}

fn account(user: &User, csrf: &str) -> Markup {
    html! {
        div.account {
            span.who { (user.name()) " · " (user.role.as_str()) }
            a #api-docs href="/docs" { "API docs" }
            form method="post" action="/console/logout" {
                (csrf_input(csrf))
                button.link type="submit" { "Sign out" }
            }
        }
    }
}

/// A page without the signed-in shell (sign-in, errors before sign-in).
pub fn bare_page(
    status: StatusCode,
    title: &str,
    page: &str,
    flash: Option<&Flash>,
    content: Markup,
) -> Response {
    let body = html! {
        (DOCTYPE)
        html lang="en" {
            (head(title))
            body.bare data-page=(page) {
                main #main {
                    @if let Some(flash) = flash { (flash_box(flash)) }
                    (content)
                }
            }
        }
    };
    (status, Html(body.into_string())).into_response()
}

pub fn flash_box(flash: &Flash) -> Markup {
    let (class, role) = match flash.kind {
        FlashKind::Success => ("flash success", "status"),
        FlashKind::Error => ("flash error", "alert"),
    };
    html! { div class=(class) role=(role) { (flash.message) } }
}

/// The hidden CSRF field every console form carries.
pub fn csrf_input(csrf: &str) -> Markup {
    html! { input type="hidden" name=(CSRF_FIELD) value=(csrf); }
}

/// A page saying what went wrong, with its status.
pub fn message_page(status: StatusCode, title: &str, message: &str) -> Response {
    bare_page(
        status,
        title,
        "message",
        None,
        html! {
            h1 { (title) }
            p { (message) }
            p { a href="/console" { "Back to the console" } }
        },
    )
}

/// The API refused or failed: its status and message, as a page.
pub fn failure_page(failure: &ApiFailure) -> Response {
    let title = match failure.status {
        StatusCode::FORBIDDEN => "Not allowed",
        StatusCode::NOT_FOUND => "Not found",
        s if s.is_client_error() => "Cannot do that",
        _ => "Something went wrong",
    };
    message_page(failure.status, title, &failure.message)
}

pub fn internal_page(why: &str) -> Response {
    tracing::error!(why, "console error");
    message_page(
        StatusCode::INTERNAL_SERVER_ERROR,
        "Something went wrong",
        "The console could not show this page.",
    )
}

/// A timestamp as UTC text, in a `<time>` element the script shows in the browser's zone.
pub fn time(at: &DateTime<Utc>) -> Markup {
    html! {
        time datetime=(at.to_rfc3339()) { (at.format("%Y-%m-%d %H:%M UTC")) }
    }
}

pub fn optional_time(at: Option<&DateTime<Utc>>) -> Markup {
    match at {
        Some(at) => time(at),
        None => html! { span.muted { "—" } },
    }
}

/// A short coloured label, e.g. a status or priority.
pub fn badge(text: &str) -> Markup {
    html! { span class={ "badge badge-" (text.replace(' ', "-")) } { (text) } }
}

/// Pretty-printed JSON in a scrollable block.
pub fn json_block(value: &serde_json::Value) -> Markup {
    let text = serde_json::to_string_pretty(value).unwrap_or_default();
    html! { pre.json { code { (text) } } }
}

/// A keyboard shortcut hint.
pub fn kbd(key: &str) -> Markup {
    html! { kbd { (key) } }
}
