//! The getting-started panel an admin sees on their first sign-in, instead of a page of zeros: the
//! steps that make a tenant ready for its review team, each ticked once done (read from the API,
//! so it is ticked however it was done), with one-click help for the two that need no choices.

use axum::response::Response;
use maud::{Markup, html};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::auth::Role;
use crate::console::layout::csrf_input;
use crate::console::session::{self, Console};

pub const REASON_CODES_PATH: &str = "/console/getting-started/reason-codes";
pub const TEST_CASE_PATH: &str = "/console/getting-started/test-case";
const BACK: &str = "/console/supervise";

/// A starter set of reason codes for a payments review desk; admins edit or deactivate them later.
const STARTER_REASON_CODES: [(&str, &str, &[&str], bool); 7] = [
    (
        "VERIFIED",
        "Verified against the source",
        &["approve"],
        false,
    ),
    ("NSF", "Insufficient funds", &["reject", "return"], false),
    (
        "SIGNATURE",
        "Signature differs",
        &["reject", "return"],
        true,
    ),
    ("DUPLICATE", "Duplicate submission", &["reject"], false),
    (
        "ID_NEEDED",
        "Identity document needed",
        &["needs_more_info"],
        false,
    ),
    ("CLEARING", "Funds still clearing", &["hold"], false),
    (
        "OTHER",
        "Other (explained in the notes)",
        &[
            "approve",
            "reject",
            "return",
            "hold",
            "escalate",
            "needs_more_info",
        ],
        true,
    ),
];

#[derive(Deserialize)]
struct Listed {
    items: Vec<Value>,
}

#[derive(Deserialize)]
struct Policy {
    source: String,
}

struct Step {
    id: &'static str,
    done: bool,
    title: &'static str,
    how: Markup,
}

/// The panel for an admin whose tenant is not set up yet; `None` once every step is done, for
/// other roles, and when the API cannot tell (the page then shows without it).
pub async fn panel(console: &Console) -> Option<Markup> {
    if console.user.role != Role::Admin {
        return None;
    }
    let api = &console.api;
    let (users, keys, codes, policy, cases) = tokio::join!(
        api.get::<Listed>("/users?limit=2"),
        api.get::<Listed>("/api-keys?limit=1"),
        api.get::<Vec<Value>>("/reason-codes?include_inactive=true"),
        api.get::<Policy>("/policy"),
        api.get::<Listed>("/cases?limit=1"),
    );
    let csrf = &console.csrf;
    let steps = [
        Step {
            id: "users",
            done: users.ok()?.items.len() > 1,
            title: "Add your team",
            how: html! { "Create reviewers and supervisors on " a href="/console/users" { "Users" } "." },
        },
        Step {
            id: "api-key",
            done: !keys.ok()?.items.is_empty(),
            title: "Create an API key for the system that sends cases",
            how: html! { "On " a href="/console/api-keys" { "API keys" } ", with the scope " code { "cases:write" } "." },
        },
        Step {
            id: "reason-codes",
            done: !codes.ok()?.is_empty(),
            title: "Set up reason codes",
            how: html! {
                "Reviewers give them with each decision. Start from a set of seven and edit them on "
                a href="/console/reason-codes" { "Reason codes" } ": "
                form.inline method="post" action=(REASON_CODES_PATH) {
                    (csrf_input(csrf))
                    button #add-starter-reason-codes .secondary type="submit" { "Add the starter set" }
                }
            },
        },
        Step {
            id: "policy",
            done: policy.ok()?.source == "tenant",
            title: "Review the decision policy and save it as yours",
            how: html! {
                "It routes cases to queues, sets priorities and SLAs and decides when two people must agree: "
                a href="/console/policy" { "Policy" } "."
            },
        },
        Step {
            id: "test-case",
            done: !cases.ok()?.items.is_empty(),
            title: "Submit a test case",
            how: html! {
                "See it arrive on the review desk; a reviewer decides it (not you: you submitted it). "
                form.inline method="post" action=(TEST_CASE_PATH) {
                    (csrf_input(csrf))
                    button #submit-test-case .secondary type="submit" { "Submit a test case" }
                }
            },
        },
    ];
    if steps.iter().all(|s| s.done) {
        return None;
    }
    let done = steps.iter().filter(|s| s.done).count();
    Some(html! {
        section #getting-started .panel aria-labelledby="getting-started-heading" {
            h2 #getting-started-heading { "Getting started" }
            p { (done) " of " (steps.len()) " steps done. This panel goes away when all are." }
            ol.steps {
                @for step in &steps {
                    li #{ "step-" (step.id) } data-status=(if step.done { "done" } else { "to_do" }) {
                        h3 {
                            @if step.done { span aria-hidden="true" { "✓ " } span.visually-hidden { "Done: " } }
                            (step.title)
                        }
                        @if !step.done { div { (step.how) } }
                    }
                }
            }
        }
    })
}

/// Adds the starter reason codes the tenant does not have yet.
pub async fn add_starter_reason_codes(console: Console) -> Response {
    let mut added = 0;
    for (code, label, actions, requires_notes) in STARTER_REASON_CODES {
        let body = json!({ "code": code, "label": label, "actions": actions, "requires_notes": requires_notes });
        match console.api.post::<Value>("/reason-codes", &body).await {
            Ok(_) => added += 1,
            // Already there (made by hand, or by an earlier click): keep it as it is.
            Err(failure) if failure.status == axum::http::StatusCode::CONFLICT => {}
            Err(failure) => return session::error(BACK, failure.message),
        }
    }
    session::success(
        BACK,
        format!("{added} reason codes added; edit them on Reason codes."),
    )
}

/// Submits a small test case as the admin, to see the review desk work end to end.
pub async fn submit_test_case(console: Console) -> Response {
    let reference = format!("TEST-{}", crate::clock::now().format("%Y%m%d-%H%M%S"));
    let body = json!({
        "type": "test",
        "reference": reference,
        "amount": "1.00",
        "currency": "USD",
        "subject": { "note": "A test case from the getting-started panel." },
    });
    match console.api.post::<Value>("/cases", &body).await {
        Ok(_) => session::success(
            BACK,
            format!("Test case {reference} submitted: a reviewer finds it with Next case."),
        ),
        Err(failure) => session::error(BACK, failure.message),
    }
}
