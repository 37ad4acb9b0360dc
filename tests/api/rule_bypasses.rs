//! Regression tests for ways past the review desk's rules found by the security review: a
//! submitter approving their own case through an AI assessment or through their own API key, and
//! a pipeline assessing a case that is not its own.

use docket::app::Role as ProcessRole;
use docket::auth::Role;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::on_both_backends;
use crate::support::{Login, TestApp};

fn cheque(reference: &str, amount: &str) -> Value {
    json!({ "type": "cheque", "reference": reference, "amount": amount, "currency": "USD",
            "subject": { "payee": "Ann" } })
}

fn confident_approval() -> Value {
    json!({ "recommendation": "approve", "confidence": 0.99, "summary": "Looks fine to me." })
}

async fn submit_with(app: &TestApp, token: &str, body: Value) -> Value {
    let (status, case) = app
        .call(Method::POST, "/api/v1/cases", token, Some(body))
        .await;
    assert!(status.is_success(), "{status}: {case}");
    case
}

async fn act(
    app: &TestApp,
    who: &Login,
    case: &Value,
    action: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let path = format!("/api/v1/cases/{}/{action}", case["id"].as_str().unwrap());
    app.call(Method::POST, &path, &who.access_token, body).await
}

async fn api_key(app: &TestApp, admin: &Login, scopes: &[&str]) -> String {
    let (status, key) = app
        .call(
            Method::POST,
            "/api/v1/api-keys",
            &admin.access_token,
            Some(json!({ "name": "intake", "scopes": scopes })),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{key}");
    key["secret"]
        .as_str()
        .expect("the secret is returned once")
        .to_owned()
}

on_both_backends! {
    async fn an_assessment_sent_with_the_case_is_advisory_and_never_decides_it(backend) {
        let env = [("AI_ENABLED", "true"), ("AI_CONFIDENCE_THRESHOLD", "0.8")];
        let Some(app) = TestApp::spawn_with(backend, ProcessRole::All, &env).await else { return };
        let rita = app.sign_in("acme", "rita@acme.test", Role::Reviewer).await;
        let admin = app.sign_in("acme", "ada@acme.test", Role::Admin).await;
        let key = api_key(&app, &admin, &["cases:write", "cases:read"]).await;

        let mut body = cheque("SELF-1", "120.00");
        body["ai_assessment"] = confident_approval();
        let by_person = submit_with(&app, &rita.access_token, body).await;
        let mut body = cheque("SELF-2", "120.00");
        body["ai_assessment"] = confident_approval();
        let by_key = submit_with(&app, &key, body).await;
        for case in [&by_person, &by_key] {
            assert_eq!(case["state"], "queued", "people decide: {case}");
            assert_eq!(case["decision"], Value::Null);
            assert_eq!(case["ai_assessment_source"], "submitted");
            assert_eq!(case["ai_assessment"]["confidence"], 0.99, "still shown to reviewers");
            let reason = case["policy_trace"]["reason"].as_str().unwrap();
            assert!(reason.contains("advisory"), "{reason}");
        }
        // Without an assessment the same policy also leaves it to people: the gate is what changed.
        let plain = submit_with(&app, &rita.access_token, cheque("SELF-3", "120.00")).await;
        assert_eq!(plain["state"], "queued");
        assert_eq!(plain["ai_assessment_source"], Value::Null);
    }

    async fn only_the_cases_own_assessment_job_may_assess_it(backend) {
        let env = [("AI_ENABLED", "true"), ("AI_CONFIDENCE_THRESHOLD", "0.8")];
        let Some(app) = TestApp::spawn_with(backend, ProcessRole::All, &env).await else { return };
        let admin = app.sign_in("acme", "ada@acme.test", Role::Admin).await;
        let rita = app.sign_in("acme", "rita@acme.test", Role::Reviewer).await;
        // The real assessment pipeline waits, so the case stays `assessing` while another pipeline tries.
        let (status, assessor) = app.call(Method::POST, "/api/v1/tasks", &admin.access_token, Some(json!({
            "title": "Assess cheques", "schedule_kind": "manual",
            "payload": { "pipeline": [{ "id": "pause", "uses": "wait", "with": { "seconds": 3600 } }] }
        }))).await;
        assert_eq!(status, StatusCode::CREATED, "{assessor}");
        let (status, body) = app.call(Method::PUT, "/api/v1/case-types/cheque/assessment", &admin.access_token,
            Some(json!({ "task_id": assessor["id"] }))).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let case = submit_with(&app, &rita.access_token, cheque("ASSESS-1", "120.00")).await;
        assert_eq!(case["state"], "assessing");

        let (status, intruder) = app.call(Method::POST, "/api/v1/tasks", &admin.access_token, Some(json!({
            "title": "Not the assessor", "schedule_kind": "manual",
            "payload": { "pipeline": [{ "id": "assess", "uses": "cases.assess", "on_error": "continue",
                "with": { "case_id": case["id"], "recommendation": "approve", "confidence": 0.99 } }] }
        }))).await;
        assert_eq!(status, StatusCode::CREATED, "{intruder}");
        let (status, job) = app.call(Method::POST, &format!("/api/v1/tasks/{}/run_now", intruder["id"].as_str().unwrap()),
            &admin.access_token, None).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{job}");
        let job_id = job["id"].as_str().unwrap();
        app.wait_for_job(&rita.tenant_id, job_id, "succeeded").await;
        let steps = docket::pipeline::steps::load(&app.state.store, job_id).await.unwrap();
        let error = steps[0].error.as_deref().unwrap_or_default();
        assert!(error.contains("Only the assessment pipeline's job"), "{error}");
        let (_, after) = app.call(Method::GET, &format!("/api/v1/cases/{}", case["id"].as_str().unwrap()), &rita.access_token, None).await;
        assert_eq!(after["state"], "assessing", "{after}");
        assert_eq!(after["ai_assessment"], Value::Null);
    }

    async fn a_case_submitted_through_your_own_key_is_still_your_own(backend) {
        let Some(app) = TestApp::spawn(backend).await else { return };
        let admin = app.sign_in("acme", "ada@acme.test", Role::Admin).await;
        let ann = app.sign_in("acme", "ann@acme.test", Role::Reviewer).await;
        let bob = app.sign_in("acme", "bob@acme.test", Role::Reviewer).await;
        let key = api_key(&app, &admin, &["cases:write"]).await;

        // Dual control (over 5,000 by default), so the key's creator could also be the checker.
        let case = submit_with(&app, &key, cheque("KEY-1", "7500.00")).await;
        assert_eq!(case["submitted_by"].as_str().unwrap().split(':').next(), Some("api_key"));
        assert_eq!(case["submitter_user_id"], admin.user_id.as_str());
        let (status, error) = act(&app, &admin, &case, "claim", None).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{error}");
        assert_eq!(error["error"]["code"], "own_case");
        let (status, offered) = app.call(Method::POST, "/api/v1/reviews/next", &admin.access_token, None).await;
        assert_eq!(status, StatusCode::NO_CONTENT, "next never offers your own case: {offered}");

        act(&app, &ann, &case, "claim", None).await;
        let (status, proposed) = act(&app, &ann, &case, "decision", Some(json!({ "decision": "approve" }))).await;
        assert_eq!(status, StatusCode::OK, "{proposed}");
        assert_eq!(proposed["state"], "pending_dual_control");
        let (status, error) = act(&app, &admin, &case, "claim", None).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "the submitter cannot be the checker: {error}");
        assert_eq!(error["error"]["code"], "own_case");
        let (status, error) = act(&app, &admin, &case, "check", Some(json!({ "verdict": "approve" }))).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{error}");
        assert_eq!(error["error"]["code"], "own_case");
        let (_, still) = app.call(Method::GET, &format!("/api/v1/cases/{}", case["id"].as_str().unwrap()), &bob.access_token, None).await;
        assert_eq!(still["state"], "pending_dual_control");

        // A supervisor cannot hand the case to its submitter either.
        let sue = app.sign_in("acme", "sue@acme.test", Role::Supervisor).await;
        let other = submit_with(&app, &key, cheque("KEY-2", "120.00")).await;
        let (status, error) = act(&app, &sue, &other, "reassign", Some(json!({ "assignee_id": admin.user_id, "reason": "cover" }))).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{error}");
    }
}
