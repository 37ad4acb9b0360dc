//! `/console/mfa`: TOTP enrolment for the signed-in user. Admins without MFA are sent here by the
//! `Console` extractor and can use nothing else until they confirm a code.

use axum::Form;
use axum::http::StatusCode;
use axum::response::Response;
use maud::{Markup, PreEscaped, html};
use qrcode::QrCode;
use qrcode::render::svg;
use serde::Deserialize;
use serde_json::json;

use super::{error_box, with_status};
use crate::console::layout::{self, csrf_input};
use crate::console::session::{self, Console, MFA_PATH};

#[derive(Deserialize)]
struct Me {
    user: MeUser,
}

#[derive(Deserialize)]
struct MeUser {
    mfa_enabled: bool,
}

/// `POST /auth/mfa/enrol`: the new secret, which takes effect once a code from it is confirmed.
#[derive(Deserialize)]
struct Enrolment {
    secret: String,
    otpauth_uri: String,
}

#[derive(Deserialize)]
struct RecoveryCodes {
    recovery_codes: Vec<String>,
}

/// The confirm form carries the secret it was shown with, so that a mistyped code can be retried
/// against the same secret (the API keeps it until the next enrolment) without scanning again.
#[derive(Deserialize)]
pub struct ConfirmForm {
    #[serde(default)]
    code: String,
    #[serde(default)]
    secret: String,
    #[serde(default)]
    otpauth_uri: String,
}

/// Shows a new secret to enrol with, or says MFA is on already. Each visit starts enrolment anew
/// (the API has no way to show a pending secret again), so the page says that reloading replaces it.
pub async fn page(console: Console) -> Response {
    let me: Me = match console.api.get("/auth/me").await {
        Ok(me) => me,
        Err(failure) => return console.fail(&failure),
    };
    if me.user.mfa_enabled {
        return enabled_page(&console);
    }
    match console
        .api
        .post::<Enrolment>("/auth/mfa/enrol", &json!({}))
        .await
    {
        Ok(enrolment) => enrol_page(&console, &enrolment, None),
        // Enabled meanwhile, in another session.
        Err(failure) if failure.status == StatusCode::CONFLICT => enabled_page(&console),
        Err(failure) => console.fail(&failure),
    }
}

pub async fn confirm(console: Console, Form(form): Form<ConfirmForm>) -> Response {
    let body = json!({ "code": form.code.trim() });
    match console
        .api
        .post::<RecoveryCodes>("/auth/mfa/confirm", &body)
        .await
    {
        Ok(codes) => confirmed_page(&console, &codes.recovery_codes),
        // A wrong code is a 401 from the API, but the session is fine: let the user try again.
        Err(failure) if failure.code == "invalid_mfa_code" => {
            let enrolment = Enrolment {
                secret: form.secret,
                otpauth_uri: form.otpauth_uri,
            };
            with_status(
                enrol_page(
                    &console,
                    &enrolment,
                    Some(
                        "That code is wrong or was already used. Enter the current code from your app.",
                    ),
                ),
                StatusCode::UNPROCESSABLE_ENTITY,
            )
        }
        Err(failure) => session::error(MFA_PATH, failure.message),
    }
}

fn enrol_page(console: &Console, enrolment: &Enrolment, error: Option<&str>) -> Response {
    let content = html! {
        h1 { "Set up two-factor authentication" }
        @if console.mfa_enrolment_required {
            p { "Administrators must use an authenticator app. Set it up to continue." }
        }
        @if let Some(error) = error { (error_box(error)) }
        ol {
            li { "Scan the QR code with an authenticator app, or enter the secret by hand." }
            li { "Enter the six-digit code the app shows, and confirm." }
        }
        div.grid {
            section.panel aria-labelledby="mfa-secret-heading" {
                h2 #mfa-secret-heading { "Your secret" }
                @if let Some(svg) = qr_svg(&enrolment.otpauth_uri) {
                    div.qr role="img" aria-label="QR code of the otpauth URI below" { (svg) }
                }
                p { "Secret:" }
                p { code #mfa-secret .secret { (enrolment.secret) } }
                p { "URI:" }
                p { code #otpauth-uri .secret { (enrolment.otpauth_uri) } }
                p.muted { "Reloading this page replaces the secret with a new one." }
            }
            section.panel aria-labelledby="mfa-confirm-heading" {
                h2 #mfa-confirm-heading { "Confirm" }
                form.stack method="post" action="/console/mfa/confirm" {
                    (csrf_input(&console.csrf))
                    input type="hidden" name="secret" value=(enrolment.secret);
                    input type="hidden" name="otpauth_uri" value=(enrolment.otpauth_uri);
                    div {
                        label for="code" {
                            "Code from the app"
                            span.hint { "Six digits; a new one every 30 seconds." }
                        }
                        input #code type="text" name="code" inputmode="numeric"
                            autocomplete="one-time-code" required maxlength="10"
                            data-autofocus data-no-draft;
                    }
                    div { button #confirm-mfa type="submit" { "Confirm and turn on" } }
                }
            }
        }
    };
    layout::page(console, "Two-factor authentication", MFA_PATH, content)
}

/// The recovery codes, shown this once. The API marks this session as verified when it confirms,
/// so the user goes on without signing in again.
fn confirmed_page(console: &Console, codes: &[String]) -> Response {
    let content = html! {
        h1 { "Two-factor authentication is on" }
        div.flash.success role="status" #mfa-enabled {
            "Your authenticator app is set up. This session goes on; from your next sign-in, Docket asks for a code."
        }
        section.panel aria-labelledby="recovery-heading" {
            h2 #recovery-heading { "Recovery codes" }
            p {
                "Each code works once instead of an app code, for when you lose your phone. "
                strong { "They are shown only now:" }
                " store them somewhere safe, such as a password manager."
            }
            ol #recovery-codes .recovery-codes {
                @for code in codes { li { code { (code) } } }
            }
        }
        p { a #continue .button href="/console" { "Continue to the console" } }
    };
    layout::page(console, "Two-factor authentication", MFA_PATH, content)
}

fn enabled_page(console: &Console) -> Response {
    let content = html! {
        h1 { "Two-factor authentication" }
        @if console.mfa_enrolment_required {
            // Enrolled in another session; this one began before and was never verified with a code.
            p #mfa-status {
                "Two-factor authentication is on for your account, but this session started without a code. "
                "Sign out and sign in again with a code from your app."
            }
            form method="post" action="/console/logout" {
                (csrf_input(&console.csrf))
                button type="submit" { "Sign out" }
            }
        } @else {
            p #mfa-status { "Two-factor authentication is on for your account." }
            p { a href="/console" { "Back to the console" } }
        }
    };
    layout::page(console, "Two-factor authentication", MFA_PATH, content)
}

/// The URI as an inline SVG QR code, drawn here so that nothing is fetched from elsewhere. The SVG
/// holds only geometry and two colours, never text from the URI.
fn qr_svg(uri: &str) -> Option<Markup> {
    let code = QrCode::new(uri.as_bytes()).ok()?;
    let image = code
        .render::<svg::Color<'_>>()
        .min_dimensions(200, 200)
        .dark_color(svg::Color("#000000"))
        .light_color(svg::Color("#ffffff"))
        .build();
    // The XML declaration is for standalone files; inside HTML only the <svg> element belongs.
    let start = image.find("<svg")?;
    Some(PreEscaped(image[start..].to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_qr_code_is_an_svg_element_without_the_uri_text() {
        let uri = "otpauth://totp/Docket:a%40example.com?secret=JBSWY3DPEHPK3PXP&issuer=Docket";
        let svg = qr_svg(uri).map(|m| m.into_string()).unwrap_or_default();
        assert!(svg.starts_with("<svg"), "{svg}");
        assert!(svg.ends_with("</svg>"), "{svg}");
        assert!(!svg.contains("<?xml"));
        assert!(!svg.contains("JBSWY3DP"));
        assert!(!svg.contains("style"), "the CSP forbids inline styles");
    }
}
