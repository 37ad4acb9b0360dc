//! Sign-in (with the TOTP code when the user has enrolled) and sign-out.

use axum::extract::Query;
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use maud::html;
use serde::Deserialize;
use serde_json::json;

use crate::console::client::IssuedTokens;
use crate::console::layout::{self, csrf_input};
use crate::console::session::{self, Anonymous, Flash, FlashKind, MFA_PATH, safe_next};

#[derive(Deserialize)]
pub struct NextQuery {
    next: Option<String>,
}

#[derive(Deserialize)]
pub struct LoginForm {
    #[serde(default)]
    email: String,
    #[serde(default)]
    password: String,
    /// The tenant's slug, for an email with accounts in several tenants.
    #[serde(default)]
    tenant: String,
    /// The second step's stand-in for the password (from the API, single use, short-lived).
    #[serde(default)]
    mfa_token: String,
    #[serde(default)]
    totp_code: String,
    #[serde(default)]
    next: String,
}

/// What the sign-in form shows again after a failed attempt.
struct LoginView<'a> {
    csrf: &'a str,
    next: &'a str,
    email: &'a str,
    tenant: &'a str,
    /// In the second step (the TOTP code): the API's token for the accepted password, so that the
    /// page never holds the password itself.
    mfa_token: Option<&'a str>,
}

fn login_form(status: StatusCode, view: LoginView<'_>, flash: Option<&Flash>) -> Response {
    let content = html! {
        h1 { "Sign in to Docket" }
        form.stack method="post" action="/console/login" {
            (csrf_input(view.csrf))
            input type="hidden" name="next" value=(view.next);
            @if let Some(token) = view.mfa_token {
                input type="hidden" name="mfa_token" value=(token);
                input type="hidden" name="email" value=(view.email);
                p { "Signing in as " strong { (view.email) } }
                div {
                    label for="totp_code" {
                        "Authentication code"
                        span.hint { "The six digits from your authenticator app, or a recovery code." }
                    }
                    input #totp_code type="text" name="totp_code" inputmode="numeric"
                        autocomplete="one-time-code" required data-autofocus data-no-draft;
                }
            } @else {
                div {
                    label for="email" { "Email" }
                    input #email type="email" name="email" autocomplete="username" required
                        value=(view.email) data-autofocus;
                }
                div {
                    label for="password" { "Password" }
                    input #password type="password" name="password" autocomplete="current-password"
                        required;
                }
                div {
                    label for="tenant" {
                        "Tenant (optional)"
                        span.hint { "Only when your email has accounts in several tenants: the tenant's short name." }
                    }
                    input #tenant type="text" name="tenant" autocomplete="organization"
                        value=(view.tenant);
                }
            }
            div { button type="submit" { "Sign in" } }
        }
    };
    // "login" tells the drafts script to keep what was typed before the session ended.
    layout::bare_page(status, "Sign in", "login", flash, content)
}

pub async fn login_page(anonymous: Anonymous, Query(query): Query<NextQuery>) -> Response {
    let next = query
        .next
        .filter(|n| safe_next(n))
        .unwrap_or_else(|| "/console".to_owned());
    let flash = anonymous.flash.clone().or_else(|| {
        (next != "/console").then(|| Flash {
            kind: FlashKind::Error,
            message:
                "Your session has ended. Sign in again to continue; what you typed has been kept."
                    .to_owned(),
        })
    });
    login_form(
        StatusCode::OK,
        LoginView {
            csrf: &anonymous.csrf,
            next: &next,
            email: "",
            tenant: "",
            mfa_token: None,
        },
        flash.as_ref(),
    )
}

pub async fn login(anonymous: Anonymous, form: axum::Form<LoginForm>) -> Response {
    let form = form.0;
    let next = if safe_next(&form.next) {
        form.next.clone()
    } else {
        "/console".to_owned()
    };
    let mut body = if form.mfa_token.is_empty() {
        let tenant = form.tenant.trim();
        let mut body = json!({ "email": form.email.trim(), "password": form.password });
        if !tenant.is_empty() {
            body["tenant"] = json!(tenant);
        }
        body
    } else {
        json!({ "mfa_token": form.mfa_token })
    };
    let code = form.totp_code.trim();
    if !code.is_empty() {
        // Recovery codes are longer than the six-digit TOTP codes.
        let field = if code.len() > 8 {
            "recovery_code"
        } else {
            "totp_code"
        };
        body[field] = json!(code);
    }
    match anonymous
        .api
        .post::<IssuedTokens>("/auth/login", &body)
        .await
    {
        Ok(issued) => {
            let to = if issued.mfa_enrolment_required {
                MFA_PATH.to_owned()
            } else {
                next
            };
            anonymous.api.adopt(issued.into());
            Redirect::to(&to).into_response()
        }
        Err(failure) => {
            let mfa_token = failure.details["mfa_token"].as_str();
            let message = match failure.code.as_str() {
                "mfa_required" => "Enter the code from your authenticator app.".to_owned(),
                "busy" => "Docket is busy signing other people in. Wait a few seconds and sign in again."
                    .to_owned(),
                "too_many_attempts" => {
                    "Too many failed sign-in attempts from your address. Wait a few minutes and try again."
                        .to_owned()
                }
                _ => failure.message.clone(),
            };
            login_form(
                // Busy is the server's own, temporary refusal, not a failure of the API behind it.
                if failure.status.is_client_error() || failure.code == "busy" {
                    failure.status
                } else {
                    StatusCode::BAD_GATEWAY
                },
                LoginView {
                    csrf: &anonymous.csrf,
                    next: &next,
                    email: form.email.trim(),
                    tenant: form.tenant.trim(),
                    mfa_token,
                },
                Some(&Flash {
                    kind: FlashKind::Error,
                    message,
                }),
            )
        }
    }
}

pub async fn logout(anonymous: Anonymous) -> Response {
    if anonymous.api.has_tokens() {
        // The browser forgets the session either way; a failure here only leaves it to expire.
        if let Err(failure) = anonymous.api.send(Method::POST, "/auth/logout", None).await {
            tracing::info!(
                code = failure.code,
                "console sign-out: the API session was not revoked"
            );
        }
    }
    let mut response = session::success("/console/login", "You have signed out.");
    session::clear_session(&mut response);
    response
}
