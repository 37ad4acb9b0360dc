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

/// Topics of the frames a stream sends until `topic` arrives (which is last).
async fn topics_until(mut response: reqwest::Response, topic: &str) -> Vec<String> {
    let mut buffer = String::new();
    let mut seen = Vec::new();
    let read = async {
        while let Some(chunk) = response.chunk().await.unwrap() {
            buffer.push_str(&String::from_utf8_lossy(&chunk));
            while let Some(end) = buffer.find("\n\n") {
                let frame: String = buffer.drain(..end + 2).collect();
                if let Some(event) = frame.lines().find_map(|l| l.strip_prefix("event:")) {
                    seen.push(event.trim().to_owned());
                    if event.trim() == topic {
                        return;
                    }
                }
            }
        }
        panic!("the stream ended before {topic} arrived");
    };
    tokio::time::timeout(std::time::Duration::from_secs(20), read)
        .await
        .expect("the event arrives");
    seen
}

/// Waits for the server to end a stream (it may send keep-alives until then).
async fn ends(mut response: reqwest::Response) -> bool {
    let read = async {
        loop {
            match response.chunk().await {
                Ok(Some(_)) => continue,
                Ok(None) | Err(_) => return,
            }
        }
    };
    tokio::time::timeout(std::time::Duration::from_secs(15), read)
        .await
        .is_ok()
}

async fn open_stream(app: &TestApp, token: &str) -> reqwest::Response {
    app.client
        .get(app.url("/api/v1/events/stream"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
}

on_both_backends! {
    async fn case_events_reach_only_callers_who_may_read_cases(backend) {
        let Some(app) = TestApp::spawn(backend).await else { return };
        let admin = app.sign_in("acme", "ada@acme.test", Role::Admin).await;
        let rita = app.sign_in("acme", "rita@acme.test", Role::Reviewer).await;
        let tasks_only = api_key(&app, &admin, &["tasks:read", "events:write"]).await;
        let with_cases = api_key(&app, &admin, &["tasks:read", "cases:read"]).await;
        let blind = open_stream(&app, &tasks_only).await;
        let sighted = open_stream(&app, &with_cases).await;
        assert_eq!((blind.status(), sighted.status()), (StatusCode::OK, StatusCode::OK));

        submit_with(&app, &rita.access_token, cheque("STREAM-1", "250.00")).await;
        let (status, _) = app.call(Method::POST, "/api/v1/events", &tasks_only, Some(json!({ "topic": "marker.done" }))).await;
        assert_eq!(status, StatusCode::ACCEPTED);
        let blind_saw = topics_until(blind, "marker.done").await;
        assert!(blind_saw.iter().all(|t| !t.starts_with("case.")), "{blind_saw:?}");
        let sighted_saw = topics_until(sighted, "marker.done").await;
        assert!(sighted_saw.iter().any(|t| t == "case.queued"), "{sighted_saw:?}");
    }

    async fn an_open_stream_ends_with_the_session_or_key_behind_it(backend) {
        let env = [("EVENT_STREAM_RECHECK_SECONDS", "1")];
        let Some(app) = TestApp::spawn_with(backend, ProcessRole::All, &env).await else { return };
        let admin = app.sign_in("acme", "ada@acme.test", Role::Admin).await;
        let sue = app.sign_in("acme", "sue@acme.test", Role::Supervisor).await;

        let stream = open_stream(&app, &sue.access_token).await;
        assert_eq!(stream.status(), StatusCode::OK);
        let (status, _) = app.call(Method::POST, "/api/v1/auth/logout", &sue.access_token, None).await;
        assert!(status.is_success(), "{status}");
        assert!(ends(stream).await, "the stream closes after logout");

        let (status, key) = app.call(Method::POST, "/api/v1/api-keys", &admin.access_token,
            Some(json!({ "name": "watcher", "scopes": ["tasks:read"] }))).await;
        assert_eq!(status, StatusCode::CREATED, "{key}");
        let stream = open_stream(&app, key["secret"].as_str().unwrap()).await;
        assert_eq!(stream.status(), StatusCode::OK);
        let (status, _) = app.call(Method::DELETE, &format!("/api/v1/api-keys/{}", key["id"].as_str().unwrap()), &admin.access_token, None).await;
        assert!(status.is_success(), "{status}");
        assert!(ends(stream).await, "the stream closes after the key is revoked");

        // A stream whose session is still good stays open past several re-checks.
        let ops = app.sign_in("acme", "ops@acme.test", Role::Supervisor).await;
        let stream = open_stream(&app, &ops.access_token).await;
        tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
        app.call(Method::POST, "/api/v1/events", &ops.access_token, Some(json!({ "topic": "still.here" }))).await;
        assert_eq!(topics_until(stream, "still.here").await.last().map(String::as_str), Some("still.here"));
    }

    async fn a_caller_may_hold_only_so_many_streams_open(backend) {
        let env = [("EVENT_STREAMS_PER_PRINCIPAL", "2")];
        let Some(app) = TestApp::spawn_with(backend, ProcessRole::All, &env).await else { return };
        let sue = app.sign_in("acme", "sue@acme.test", Role::Supervisor).await;
        let ops = app.sign_in("acme", "ops@acme.test", Role::Supervisor).await;
        let first = open_stream(&app, &sue.access_token).await;
        let second = open_stream(&app, &sue.access_token).await;
        assert_eq!((first.status(), second.status()), (StatusCode::OK, StatusCode::OK));
        let third = open_stream(&app, &sue.access_token).await;
        assert_eq!(third.status(), StatusCode::TOO_MANY_REQUESTS);
        assert!(third.headers().contains_key("retry-after"));
        let body: Value = third.json().await.unwrap();
        assert_eq!(body["error"]["code"], "too_many_streams");
        assert_eq!(open_stream(&app, &ops.access_token).await.status(), StatusCode::OK, "others are not affected");

        drop(first);
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let again = open_stream(&app, &sue.access_token).await;
            if again.status() == StatusCode::OK {
                break;
            }
            assert!(tokio::time::Instant::now() < deadline, "a closed stream frees its slot");
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        drop(second);
    }

    async fn runs_of_an_assessment_leave_out_the_case_for_keys_that_may_not_read_cases(backend) {
        let Some(app) = TestApp::spawn(backend).await else { return };
        let admin = app.sign_in("acme", "ada@acme.test", Role::Admin).await;
        let rita = app.sign_in("acme", "rita@acme.test", Role::Reviewer).await;
        let (status, assessor) = app.call(Method::POST, "/api/v1/tasks", &admin.access_token, Some(json!({
            "title": "Assess", "schedule_kind": "manual", "payload": { "pipeline": [{
                "id": "note", "uses": "events.publish",
                "with": { "topic": "assessing", "payload": { "payee": "${params.case.subject.payee}" } } }] }
        }))).await;
        assert_eq!(status, StatusCode::CREATED, "{assessor}");
        let (status, _) = app.call(Method::PUT, "/api/v1/case-types/cheque/assessment", &admin.access_token,
            Some(json!({ "task_id": assessor["id"] }))).await;
        assert_eq!(status, StatusCode::OK);
        let case = submit_with(&app, &rita.access_token, cheque("RUNS-1", "250.00")).await;
        let job_id = case["assessment_job_id"].as_str().unwrap().to_owned();
        app.wait_for_job(&rita.tenant_id, &job_id, "succeeded").await;

        let runs_only = api_key(&app, &admin, &["runs:read"]).await;
        let with_cases = api_key(&app, &admin, &["runs:read", "cases:read"]).await;
        let (status, page) = app.call(Method::GET, &format!("/api/v1/runs?job_id={job_id}"), &runs_only, None).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        let listed = &page["items"][0];
        assert_eq!(listed["case_data_withheld"], true);
        assert_eq!(listed["input"]["payload"]["params"]["case"], json!({ "id": case["id"] }));
        let (_, run) = app.call(Method::GET, &format!("/api/v1/runs/{}", listed["id"].as_str().unwrap()), &runs_only, None).await;
        assert!(!run.to_string().contains("Ann"), "no trace of the subject: {run}");
        assert_eq!(run["steps"][0]["input"], Value::Null);

        let (_, run) = app.call(Method::GET, &format!("/api/v1/runs/{}", listed["id"].as_str().unwrap()), &with_cases, None).await;
        assert_eq!(run["case_data_withheld"], false);
        assert_eq!(run["input"]["payload"]["params"]["case"]["subject"]["payee"], "Ann");
        assert_eq!(run["steps"][0]["input"]["payload"]["payee"], "Ann");
    }
}
