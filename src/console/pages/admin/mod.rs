//! Console pages for admins: MFA enrolment (for every user), users, API keys, the decision policy,
//! the reason codes reviewers give, the audit log (which supervisors may read too) and, for platform
//! admins, the tenants.
//!
//! A form whose API call fails redirects back to its page with the API's message; when the failure
//! is an ended session, that page's GET sends the user on to sign in.

mod api_keys;
mod audit;
pub mod getting_started;
mod mfa;
mod policy;
mod reason_codes;
mod tenants;
mod users;

use axum::Router;
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{get, post};
use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};
use maud::{Markup, html};

use crate::app::AppState;
use crate::console::layout;
use crate::console::session::{Flash, FlashKind, MFA_PATH};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route(MFA_PATH, get(mfa::page))
        .route("/console/mfa/confirm", post(mfa::confirm))
        .route("/console/users", get(users::page).post(users::create))
        .route("/console/users/{id}", post(users::update))
        .route(
            tenants::PATH,
            get(tenants::page).post(tenants::create_tenant),
        )
        .route(tenants::ADMINS_PATH, post(tenants::create_admin))
        .route(
            getting_started::REASON_CODES_PATH,
            post(getting_started::add_starter_reason_codes),
        )
        .route(
            getting_started::TEST_CASE_PATH,
            post(getting_started::submit_test_case),
        )
        .route(
            "/console/api-keys",
            get(api_keys::page).post(api_keys::create),
        )
        .route("/console/api-keys/{id}/revoke", post(api_keys::revoke))
        .route("/console/policy", get(policy::page).post(policy::act))
        .route(
            "/console/reason-codes",
            get(reason_codes::page).post(reason_codes::create),
        )
        .route("/console/reason-codes/{code}", post(reason_codes::update))
        .route("/console/audit", get(audit::page))
        .route("/console/audit/export", get(audit::export))
}

/// An id from a URL or a form, made safe to put into an API path as one segment.
fn segment(id: &str) -> String {
    url::form_urlencoded::byte_serialize(id.as_bytes()).collect()
}

/// `?a=1&b=2` from the pairs whose value is not empty; "" when none is.
fn query(pairs: &[(&str, &str)]) -> String {
    let mut serializer = url::form_urlencoded::Serializer::new(String::new());
    let mut any = false;
    for (name, value) in pairs.iter().filter(|(_, v)| !v.trim().is_empty()) {
        serializer.append_pair(name, value.trim());
        any = true;
    }
    if any {
        format!("?{}", serializer.finish())
    } else {
        String::new()
    }
}

/// An RFC 3339 time with its offset (what the console script sends for a `datetime-local` field,
/// typed in the browser's zone), or a `datetime-local` value as sent without the script, read as UTC.
pub(super) fn parse_time(value: &str) -> Option<DateTime<Utc>> {
    let value = value.trim();
    if let Ok(at) = DateTime::parse_from_rfc3339(value) {
        return Some(at.with_timezone(&Utc));
    }
    for format in [
        "%Y-%m-%dT%H:%M",
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%d %H:%M",
        "%Y-%m-%d %H:%M:%S%.f",
    ] {
        if let Ok(at) = NaiveDateTime::parse_from_str(value, format) {
            return Some(at.and_utc());
        }
    }
    NaiveDate::parse_from_str(value, "%Y-%m-%d")
        .ok()
        .and_then(|day| day.and_hms_opt(0, 0, 0))
        .map(|at| at.and_utc())
}

/// An error shown inside the page that the form re-rendered (not carried over a redirect).
fn error_box(message: &str) -> Markup {
    layout::flash_box(&Flash {
        kind: FlashKind::Error,
        message: message.to_owned(),
    })
}

fn with_status(mut response: Response, status: StatusCode) -> Response {
    *response.status_mut() = status;
    response
}

/// "Next page" for a cursor-paginated list, keeping the page's other query parameters.
fn pager(path: &str, params: &[(&str, &str)], cursor: Option<&str>, on_later_page: bool) -> Markup {
    let first = query(params);
    let next = cursor.map(|cursor| {
        let mut with_cursor = params.to_vec();
        with_cursor.push(("cursor", cursor));
        query(&with_cursor)
    });
    html! {
        @if on_later_page || next.is_some() {
            nav.pager aria-label="Pages" {
                @if on_later_page { a href={ (path) (first) } { "First page" } }
                @if let Some(next) = next { a href={ (path) (next) } rel="next" { "Next page" } }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_skips_empty_values_and_encodes() {
        assert_eq!(query(&[]), "");
        assert_eq!(query(&[("a", ""), ("b", "  ")]), "");
        assert_eq!(
            query(&[("action", "user.create"), ("x", ""), ("t", "a&b c")]),
            "?action=user.create&t=a%26b+c"
        );
    }

    #[test]
    fn segments_cannot_leave_their_place_in_the_path() {
        assert_eq!(segment("0190-abc"), "0190-abc");
        assert_eq!(segment("../x?y#z"), "..%2Fx%3Fy%23z");
    }

    #[test]
    fn times_from_forms_are_utc() {
        let expected = "2025-03-01T09:30:00+00:00";
        for typed in [
            "2025-03-01T09:30",
            "2025-03-01T09:30:00",
            "2025-03-01T09:30:00.000",
            "2025-03-01 09:30",
            " 2025-03-01T10:30:00+01:00 ",
            "2025-03-01T09:30:00Z",
        ] {
            let parsed = parse_time(typed).map(|t| t.to_rfc3339());
            assert_eq!(parsed.as_deref(), Some(expected), "{typed}");
        }
        assert_eq!(
            parse_time("2025-03-01").map(|t| t.to_rfc3339()).as_deref(),
            Some("2025-03-01T00:00:00+00:00")
        );
        assert_eq!(parse_time("yesterday"), None);
        assert_eq!(parse_time("2025-13-01T00:00"), None);
    }
}
