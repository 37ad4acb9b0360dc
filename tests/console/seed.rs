//! Seed data for console tests, made through the JSON API the way a deployment would be set up:
//! the tenant's first admin, then users, a decision policy and cases submitted by an intake system.

// Each test binary that includes this file uses a different subset of it.
#![allow(dead_code)]

use docket::auth::Role;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::support::{Login, PASSWORD, TestApp};

/// A tenant ready for the console: its admin (enrolled in MFA) and an intake API key that submits
/// cases (so that any reviewer may decide them: nobody decides a case they submitted).
pub struct Tenant {
    pub slug: String,
    pub admin: Login,
    pub admin_email: String,
    pub intake_key: String,
}

impl Tenant {
    pub fn admin_totp_secret(&self) -> &str {
        self.admin
            .totp_secret
            .as_deref()
            .expect("admins are enrolled in MFA")
    }
}

/// Creates the tenant `slug` with its first admin (the one account made outside the API, as the
/// `docket` CLI would) and an intake API key.
pub async fn tenant(app: &TestApp, slug: &str) -> Tenant {
    let admin_email = format!("ada@{slug}.test");
    let admin = app.sign_in(slug, &admin_email, Role::Admin).await;
    let (status, key) = app
        .call(
            Method::POST,
            "/api/v1/api-keys",
            &admin.access_token,
            Some(json!({ "name": "intake", "scopes": ["cases:write", "cases:read"] })),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{key}");
    Tenant {
        slug: slug.to_owned(),
        admin,
        admin_email,
        intake_key: key["secret"].as_str().expect("secret").to_owned(),
    }
}

/// Creates a user through `POST /users`; returns the user's id. Everyone gets [`PASSWORD`].
pub async fn user(app: &TestApp, tenant: &Tenant, email: &str, name: &str, role: &str) -> String {
    let (status, user) = app
        .call(
            Method::POST,
            "/api/v1/users",
            &tenant.admin.access_token,
            Some(json!({ "email": email, "name": name, "role": role, "password": PASSWORD })),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{user}");
    user["id"].as_str().expect("id").to_owned()
}

/// The policy the console tests run under: amounts of 5,000 or more need two reviewers (and are
/// high priority with a two-hour SLA); everything else goes to one reviewer within four hours.
pub fn dual_control_document() -> Value {
    json!({
        "defaults": { "priority": "normal", "sla_hours": 4, "dual_control": false, "queue": "default",
                      "required_role": "reviewer", "auto_decision": "never" },
        "ai": { "enabled": false, "confidence_threshold": 0.7 },
        "rules": [
            { "name": "four eyes for large amounts",
              "when": { "field": "amount", "op": ">=", "value": "5000" },
              "then": { "dual_control": true, "priority": "high", "sla_hours": 2 } }
        ]
    })
}

pub async fn dual_control_policy(app: &TestApp, tenant: &Tenant) -> Value {
    let (status, policy) = app
        .call(
            Method::PUT,
            "/api/v1/policy",
            &tenant.admin.access_token,
            Some(dual_control_document()),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{policy}");
    policy
}

/// Submits a cheque case through the intake key; returns the case.
pub async fn case(
    app: &TestApp,
    tenant: &Tenant,
    reference: &str,
    amount: &str,
    payee: &str,
) -> Value {
    let body = json!({
        "type": "cheque", "reference": reference, "amount": amount, "currency": "USD",
        "subject": { "payee": payee, "account_age_days": 412, "branch": "Chisinau Centre" }
    });
    let (status, case) = app
        .call(
            Method::POST,
            "/api/v1/cases",
            &tenant.intake_key,
            Some(body),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{case}");
    case
}

/// Uploads a file to a case through the intake key; returns the attachment.
pub async fn attach(
    app: &TestApp,
    tenant: &Tenant,
    case_id: &str,
    filename: &str,
    content_type: &str,
    bytes: &[u8],
) -> Value {
    const BOUNDARY: &str = "docket-console-seed-41b7";
    let mut body = format!(
        "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{filename}\"\r\n\
         Content-Type: {content_type}\r\n\r\n"
    )
    .into_bytes();
    body.extend_from_slice(bytes);
    body.extend_from_slice(format!("\r\n--{BOUNDARY}--\r\n").as_bytes());
    let response = app
        .client
        .post(app.url(&format!("/api/v1/cases/{case_id}/attachments")))
        .bearer_auth(&tenant.intake_key)
        .header(
            "content-type",
            format!("multipart/form-data; boundary={BOUNDARY}"),
        )
        .body(body)
        .send()
        .await
        .expect("upload");
    let status = response.status();
    let attachment: Value = response.json().await.expect("JSON");
    assert_eq!(status, StatusCode::CREATED, "{attachment}");
    attachment
}

/// The case as the API shows it now, seen by the tenant's admin.
pub async fn case_now(app: &TestApp, tenant: &Tenant, case_id: &str) -> Value {
    let (status, case) = app
        .call(
            Method::GET,
            &format!("/api/v1/cases/{case_id}"),
            &tenant.admin.access_token,
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{case}");
    case
}

/// Moves a case's SLA deadline (as time passing would), straight in the database: no API sets it.
pub async fn set_sla_due(app: &TestApp, case_id: &str, due: chrono::DateTime<chrono::Utc>) {
    docket::with_pool!(&app.state.store, pool => {
        sqlx::query("UPDATE cases SET sla_due_at = $1 WHERE id = $2")
            .bind(due)
            .bind(case_id)
            .execute(pool)
            .await
            .map(|_| ())
    })
    .expect("update the SLA deadline");
}

/// The reason codes the console tests give: `NSF` (return, reject), `SIG` (reject, return; notes
/// required), `CLEARING` (hold) and `ID` (needs more information).
pub async fn reason_codes(app: &TestApp, tenant: &Tenant) {
    for code in [
        json!({ "code": "NSF", "label": "Insufficient funds", "actions": ["return", "reject"] }),
        json!({ "code": "SIG", "label": "Signature differs", "actions": ["reject", "return"], "requires_notes": true }),
        json!({ "code": "CLEARING", "label": "Funds clearing", "actions": ["hold"] }),
        json!({ "code": "ID", "label": "Identity document needed", "actions": ["needs_more_info"] }),
    ] {
        let (status, body) = app
            .call(
                Method::POST,
                "/api/v1/reason-codes",
                &tenant.admin.access_token,
                Some(code),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }
}

/// Sets a case's risk level and flags straight in the database, as a policy that assigns them
/// would have.
pub async fn set_risk(app: &TestApp, case_id: &str, level: &str, flags: &[&str]) {
    let flags = json!(flags).to_string();
    docket::with_pool!(&app.state.store, pool => {
        sqlx::query("UPDATE cases SET risk_level = $1, flags = $2 WHERE id = $3")
            .bind(level)
            .bind(&flags)
            .bind(case_id)
            .execute(pool)
            .await
            .map(|_| ())
    })
    .expect("update the risk level");
}

/// The tenant's reason codes, inactive ones included, by code.
pub async fn reason_codes_now(app: &TestApp, tenant: &Tenant) -> Vec<Value> {
    let (status, codes) = app
        .call(
            Method::GET,
            "/api/v1/reason-codes?include_inactive=true",
            &tenant.admin.access_token,
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{codes}");
    codes.as_array().expect("a list").clone()
}

/// Ends the API session an access token belongs to, as signing out elsewhere would.
pub async fn revoke_session(app: &TestApp, access_token: &str) {
    let (status, body) = app
        .call(Method::POST, "/api/v1/auth/logout", access_token, None)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
}
