//! Console sessions: the API's access and refresh tokens kept in HttpOnly cookies, a double-submit
//! CSRF token checked on every form, one-shot flash messages, and the [`Console`] extractor that
//! hands every page the signed-in user and an API client acting as them.

use std::net::SocketAddr;

use axum::body::Body;
use axum::extract::{ConnectInfo, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use axum_extra::extract::cookie::{Cookie, CookieJar, SameSite};
use http_body_util::BodyExt;
use serde::Deserialize;
use subtle::ConstantTimeEq;

use super::client::{Api, InternalApi, NewTokens, Tokens};
use super::layout;
use crate::app::AppState;
use crate::audit::Actor;
use crate::auth::Role;
use crate::config::Environment;

pub const ACCESS_COOKIE: &str = "docket_access";
pub const REFRESH_COOKIE: &str = "docket_refresh";
pub const CSRF_COOKIE: &str = "docket_csrf";
pub const FLASH_COOKIE: &str = "docket_flash";
/// The hidden form field that carries the CSRF token.
pub const CSRF_FIELD: &str = "_csrf";
/// Where an admin who has not enrolled in MFA yet is sent: the only page such a session may use.
pub const MFA_PATH: &str = "/console/mfa";
const COOKIE_PATH: &str = "/console";
/// Console forms are small; larger bodies are refused before they are read.
const MAX_FORM_BYTES: usize = 1024 * 1024;

/// The signed-in user, as `/auth/me` describes them.
#[derive(Debug, Clone, Deserialize)]
pub struct User {
    pub id: String,
    pub tenant_id: String,
    pub email: String,
    pub name: String,
    pub role: Role,
    #[serde(default)]
    pub platform_admin: bool,
}

impl User {
    pub fn name(&self) -> &str {
        if self.name.is_empty() {
            &self.email
        } else {
            &self.name
        }
    }

    /// Whether the user's role is at least `role` (platform admins may do everything).
    pub fn at_least(&self, role: Role) -> bool {
        self.platform_admin || self.role >= role
    }
}

#[derive(Deserialize)]
struct Me {
    user: User,
    #[serde(default)]
    mfa_enrolment_required: bool,
}

/// What every console page gets: the user, an API client acting as them, the CSRF token for its
/// forms and the flash message left by the previous action.
pub struct Console {
    pub user: User,
    pub api: Api,
    pub csrf: String,
    pub flash: Option<Flash>,
    /// An admin who must enrol in MFA before anything else.
    pub mfa_enrolment_required: bool,
    /// The path (and query) of this request, for links back to it.
    pub path: String,
}

/// Per-request values the console middleware prepares for the extractors.
#[derive(Clone)]
pub struct RequestContext {
    pub csrf: String,
    pub new_tokens: NewTokens,
}

/// Why a console request cannot go on: sign in first, or an error page.
pub enum Rejection {
    SignIn { next: String },
    Page(Response),
}

impl IntoResponse for Rejection {
    fn into_response(self) -> Response {
        match self {
            Self::SignIn { next } => sign_in_redirect(&next),
            Self::Page(response) => response,
        }
    }
}

pub fn sign_in_redirect(next: &str) -> Response {
    let query = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("next", next)
        .finish();
    Redirect::to(&format!("/console/login?{query}")).into_response()
}

impl FromRequestParts<AppState> for Console {
    type Rejection = Rejection;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let next = return_path(parts);
        let api = api_for(parts).map_err(|why| Rejection::Page(layout::internal_page(why)))?;
        if !api.has_tokens() {
            return Err(Rejection::SignIn { next });
        }
        let me: Me = match api.get("/auth/me").await {
            Ok(me) => me,
            Err(failure) if failure.needs_sign_in() => return Err(Rejection::SignIn { next }),
            Err(failure) => return Err(Rejection::Page(layout::failure_page(&failure))),
        };
        // One console page counts once against the user's budget (a background refresh against
        // their live budget), however many API calls it makes (those are marked as console calls
        // and not counted again).
        if let Err(e) = crate::auth::principal::count_request(
            state,
            &me.user.tenant_id,
            &Actor::User(me.user.id.clone()),
            crate::auth::principal::is_live(parts),
        )
        .await
        {
            let failure = crate::http::error::ApiError::from(e);
            return Err(Rejection::Page(layout::message_page(
                failure.status,
                "Slow down",
                &failure.message,
            )));
        }
        if me.mfa_enrolment_required && !parts.uri.path().starts_with(MFA_PATH) {
            // Such a session may only enrol (the API refuses everything else).
            return Err(Rejection::Page(Redirect::to(MFA_PATH).into_response()));
        }
        let context = context(parts).map_err(|why| Rejection::Page(layout::internal_page(why)))?;
        let jar = CookieJar::from_headers(&parts.headers);
        Ok(Self {
            user: me.user,
            api,
            csrf: context.csrf,
            flash: jar.get(FLASH_COOKIE).and_then(|c| Flash::decode(c.value())),
            mfa_enrolment_required: me.mfa_enrolment_required,
            path: parts
                .uri
                .path_and_query()
                .map(|p| p.as_str().to_owned())
                .unwrap_or_else(|| parts.uri.path().to_owned()),
        })
    }
}

impl Console {
    /// The response for a failed API call: back to sign-in when the session is over, otherwise an
    /// error page with the API's status and message.
    pub fn fail(&self, failure: &super::client::ApiFailure) -> Response {
        if failure.needs_sign_in() {
            sign_in_redirect(&self.path)
        } else {
            layout::failure_page(failure)
        }
    }
}

/// A console request before sign-in (the login page): an API client without tokens.
pub struct Anonymous {
    pub api: Api,
    pub csrf: String,
    pub flash: Option<Flash>,
}

impl FromRequestParts<AppState> for Anonymous {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut Parts,
        _state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let api = api_for(parts).map_err(layout::internal_page)?;
        let context = context(parts).map_err(layout::internal_page)?;
        let jar = CookieJar::from_headers(&parts.headers);
        Ok(Self {
            api,
            csrf: context.csrf,
            flash: jar.get(FLASH_COOKIE).and_then(|c| Flash::decode(c.value())),
        })
    }
}

/// Errors here mean the console's routes were wired without their middleware: a bug, not input.
fn context(parts: &Parts) -> Result<RequestContext, &'static str> {
    parts
        .extensions
        .get::<RequestContext>()
        .cloned()
        .ok_or("the console middleware is missing")
}

fn api_for(parts: &Parts) -> Result<Api, &'static str> {
    let internal = parts
        .extensions
        .get::<InternalApi>()
        .cloned()
        .ok_or("the console has no API to call")?;
    let new_tokens = context(parts)?.new_tokens;
    let jar = CookieJar::from_headers(&parts.headers);
    let tokens = match (jar.get(ACCESS_COOKIE), jar.get(REFRESH_COOKIE)) {
        (access, Some(refresh)) => Some(Tokens {
            access: access.map(|c| c.value().to_owned()).unwrap_or_default(),
            refresh: refresh.value().to_owned(),
        }),
        _ => None,
    };
    Ok(Api::new(
        internal,
        tokens,
        new_tokens,
        &parts.headers,
        parts.extensions.get::<ConnectInfo<SocketAddr>>().copied(),
    ))
}

/// Where to come back to after signing in. For a form post that is the page the form was on (the
/// console sends same-origin referrers), since the post itself cannot be repeated by a GET.
fn return_path(parts: &Parts) -> String {
    if parts.method == Method::GET {
        return parts
            .uri
            .path_and_query()
            .map(|p| p.as_str().to_owned())
            .unwrap_or_else(|| "/console".to_owned());
    }
    parts
        .headers
        .get(header::REFERER)
        .and_then(|v| v.to_str().ok())
        .and_then(|referer| url::Url::parse(referer).ok())
        .map(|url| match url.query() {
            Some(query) => format!("{}?{query}", url.path()),
            None => url.path().to_owned(),
        })
        .filter(|path| safe_next(path))
        .unwrap_or_else(|| "/console".to_owned())
}

/// Only console paths are followed after sign-in, so `next` cannot send anyone elsewhere.
pub fn safe_next(path: &str) -> bool {
    (path == "/console" || path.starts_with("/console/") || path.starts_with("/console?"))
        && !path.starts_with("/console/login")
        && !path.contains("//")
        && !path.contains('\\')
        && !has_dot_segment(path)
}

/// `/console/../api` (also percent-encoded) leaves the console once the browser resolves it.
fn has_dot_segment(path: &str) -> bool {
    let path = path.split('?').next().unwrap_or_default();
    path.to_ascii_lowercase()
        .replace("%2e", ".")
        .split('/')
        .any(|segment| segment == "." || segment == "..")
}

/// A message shown once on the next page, e.g. "Case approved".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Flash {
    pub kind: FlashKind,
    pub message: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlashKind {
    Success,
    Error,
}

impl Flash {
    fn encode(&self) -> String {
        let kind = match self.kind {
            FlashKind::Success => "s",
            FlashKind::Error => "e",
        };
        url::form_urlencoded::Serializer::new(String::new())
            .append_pair(kind, &self.message)
            .finish()
    }

    fn decode(value: &str) -> Option<Self> {
        let (kind, message) = url::form_urlencoded::parse(value.as_bytes()).next()?;
        let kind = match kind.as_ref() {
            "s" => FlashKind::Success,
            "e" => FlashKind::Error,
            _ => return None,
        };
        Some(Self {
            kind,
            message: message.chars().take(500).collect(),
        })
    }
}

/// Redirects (303, so the browser follows with a GET) and leaves a message for the next page.
pub fn redirect_with(to: &str, kind: FlashKind, message: impl Into<String>) -> Response {
    let flash = Flash {
        kind,
        message: message.into(),
    };
    let cookie = cookie(FLASH_COOKIE, flash.encode(), false);
    let mut response = Redirect::to(to).into_response();
    append_cookie(&mut response, &cookie);
    response
}

pub fn success(to: &str, message: impl Into<String>) -> Response {
    redirect_with(to, FlashKind::Success, message)
}

pub fn error(to: &str, message: impl Into<String>) -> Response {
    redirect_with(to, FlashKind::Error, message)
}

fn cookie(name: &'static str, value: String, secure: bool) -> Cookie<'static> {
    Cookie::build((name, value))
        .path(COOKIE_PATH)
        .http_only(true)
        .secure(secure)
        .same_site(SameSite::Strict)
        .build()
}

fn expired(name: &'static str) -> Cookie<'static> {
    let mut cookie = Cookie::build((name, ""))
        .path(COOKIE_PATH)
        .http_only(true)
        .same_site(SameSite::Strict)
        .build();
    cookie.make_removal();
    cookie
}

fn append_cookie(response: &mut Response, cookie: &Cookie<'_>) {
    if let Ok(value) = HeaderValue::from_str(&cookie.to_string()) {
        response.headers_mut().append(header::SET_COOKIE, value);
    }
}

/// Ends the console session in the browser (the API session is revoked separately).
pub fn clear_session(response: &mut Response) {
    append_cookie(response, &expired(ACCESS_COOKIE));
    append_cookie(response, &expired(REFRESH_COOKIE));
}

/// The console's own middleware: checks the CSRF token of every form post, hands the extractors
/// their [`RequestContext`], turns tokens issued during the request into cookies, clears a shown
/// flash message, and sets the console's security headers.
pub async fn middleware(
    axum::extract::State(state): axum::extract::State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let secure = state.config.environment == Environment::Production;
    let jar = CookieJar::from_headers(request.headers());
    let existing_csrf = jar
        .get(CSRF_COOKIE)
        .map(|c| c.value().to_owned())
        .filter(|v| v.len() >= 32);
    let is_form_post = !matches!(*request.method(), Method::GET | Method::HEAD);

    let (mut request, csrf) = if is_form_post {
        let Some(expected) = existing_csrf.clone() else {
            return with_console_headers(csrf_refused());
        };
        match check_csrf(request, &expected).await {
            Ok(request) => (request, expected),
            Err(response) => return with_console_headers(response),
        }
    } else {
        let csrf = existing_csrf
            .clone()
            .unwrap_or_else(|| crate::auth::tokens::new_secret(""));
        (request, csrf)
    };
    let had_flash = jar.get(FLASH_COOKIE).is_some();
    let new_tokens = NewTokens::default();
    request.extensions_mut().insert(RequestContext {
        csrf: csrf.clone(),
        new_tokens: new_tokens.clone(),
    });

    let mut response = next.run(request).await;

    if existing_csrf.is_none() {
        append_cookie(&mut response, &cookie(CSRF_COOKIE, csrf, secure));
    }
    let ends_session = response
        .headers()
        .get_all(header::SET_COOKIE)
        .iter()
        .any(|v| v.as_bytes().starts_with(ACCESS_COOKIE.as_bytes()));
    if let Some(tokens) = new_tokens.take().filter(|_| !ends_session) {
        append_cookie(&mut response, &cookie(ACCESS_COOKIE, tokens.access, secure));
        append_cookie(
            &mut response,
            &cookie(REFRESH_COOKIE, tokens.refresh, secure),
        );
    }
    let sets_flash = response
        .headers()
        .get_all(header::SET_COOKIE)
        .iter()
        .any(|v| v.as_bytes().starts_with(FLASH_COOKIE.as_bytes()));
    if had_flash && !sets_flash && response.status() == StatusCode::OK {
        append_cookie(&mut response, &expired(FLASH_COOKIE));
    }
    with_console_headers(response)
}

/// The console's security headers, on its pages and on its refusals alike (a refusal page under the
/// API's stricter policy would load without its stylesheet).
fn with_console_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONSOLE_CSP),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    headers
        .entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    response
}

/// Nothing inline, nothing from elsewhere: the console's scripts and styles are its own files.
pub const CONSOLE_CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     img-src 'self' blob: data:; connect-src 'self'; form-action 'self'; base-uri 'none'; \
     frame-ancestors 'none'";

#[derive(Deserialize)]
struct CsrfField {
    #[serde(rename = "_csrf")]
    csrf: Option<String>,
}

/// Reads the form body, compares its `_csrf` field with the cookie, and puts the body back.
async fn check_csrf(request: Request, expected: &str) -> Result<Request, Response> {
    let (parts, body) = request.into_parts();
    let is_form = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    if !is_form {
        return Err(layout::message_page(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "Unsupported form",
            "Console forms are sent as application/x-www-form-urlencoded.",
        ));
    }
    let bytes = match http_body_util::Limited::new(body, MAX_FORM_BYTES)
        .collect()
        .await
    {
        Ok(collected) => collected.to_bytes(),
        Err(_) => {
            return Err(layout::message_page(
                StatusCode::PAYLOAD_TOO_LARGE,
                "Form too large",
                "The form is larger than the console accepts.",
            ));
        }
    };
    let sent = serde_html_form::from_bytes::<CsrfField>(&bytes)
        .ok()
        .and_then(|f| f.csrf)
        .unwrap_or_default();
    if !bool::from(sent.as_bytes().ct_eq(expected.as_bytes())) {
        return Err(csrf_refused());
    }
    Ok(Request::from_parts(parts, Body::from(bytes)))
}

fn csrf_refused() -> Response {
    layout::message_page(
        StatusCode::FORBIDDEN,
        "Form expired",
        "This form could not be verified (CSRF check). Reload the page and submit it again.",
    )
}
