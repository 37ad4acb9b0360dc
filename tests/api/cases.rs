//! Cases, policy routing, the review queue, maker-checker dual control and the SLA sweep, through
//! the HTTP API. The rest of the review desk (actions, reason codes, views) is in `review_desk.rs`.

use std::collections::HashSet;
use std::time::Duration;

use docket::app::Role as ProcessRole;
use docket::auth::Role;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::on_both_backends;
use crate::support::{Login, TestApp};

fn cheque(reference: &str, amount: &str) -> Value {
    json!({ "type": "cheque", "reference": reference, "amount": amount, "currency": "USD",
            "subject": { "payee": "Ann", "account_age_days": 12 } })
}

async fn submit(app: &TestApp, who: &Login, body: Value) -> Value {
    let (status, case) = app
        .call(Method::POST, "/api/v1/cases", &who.access_token, Some(body))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{case}");
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

async fn decide(
    app: &TestApp,
    who: &Login,
    case: &Value,
    decision: &str,
    reason: Option<&str>,
) -> (StatusCode, Value) {
    act(
        app,
        who,
        case,
        "decision",
        Some(json!({ "decision": decision, "reason": reason })),
    )
    .await
}

async fn reassign(
    app: &TestApp,
    who: &Login,
    case: &Value,
    to: Option<&str>,
) -> (StatusCode, Value) {
    let body = json!({ "assignee_id": to, "reason": "rita is away" });
    act(app, who, case, "reassign", Some(body)).await
}

async fn history_actions(app: &TestApp, who: &Login, case: &Value) -> Vec<String> {
    let (_, detail) = app
        .call(
            Method::GET,
            &format!("/api/v1/cases/{}", case["id"].as_str().unwrap()),
            &who.access_token,
            None,
        )
        .await;
    detail["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["action"].as_str().unwrap().to_owned())
        .collect()
}

on_both_backends! {
    async fn cases_are_validated_idempotent_and_exact(backend) {
        let Some(app) = TestApp::spawn(backend).await else { return };
        let clerk = app.sign_in("acme", "carl@acme.test", Role::Reviewer).await;

        let case = submit(&app, &clerk, cheque("CHQ-1", "1234567890123.45")).await;
        assert_eq!(case["amount"], "1234567890123.45", "stored exactly");
        assert_eq!(case["currency"], "USD");

        let small = submit(&app, &clerk, cheque("CHQ-2", "120.50")).await;
        assert_eq!(small["state"], "queued");
        assert_eq!(small["priority"], "normal");
        assert_eq!(small["dual_control"], false);
        assert_eq!(small["sla_status"], "on_track");
        assert_eq!(small["policy_version"], 0);

        let (status, dup) = app.call(Method::POST, "/api/v1/cases", &clerk.access_token, Some(cheque("CHQ-2", "1.00"))).await;
        assert_eq!(status, StatusCode::CONFLICT);
        assert_eq!(dup["error"]["code"], "duplicate_reference");
        assert_eq!(dup["error"]["details"]["case_id"], small["id"]);

        let post = |key: &'static str, body: Value| {
            app.client.post(app.url("/api/v1/cases")).bearer_auth(&clerk.access_token).header("idempotency-key", key).json(&body).send()
        };
        let first = post("k-1", cheque("CHQ-3", "10.00")).await.unwrap();
        assert_eq!(first.status(), StatusCode::CREATED);
        let first: Value = first.json().await.unwrap();
        let again = post("k-1", cheque("CHQ-3", "10.00")).await.unwrap();
        assert_eq!(again.status(), StatusCode::OK);
        assert_eq!(again.json::<Value>().await.unwrap()["id"], first["id"]);
        let conflicting = post("k-1", cheque("CHQ-4", "10.00")).await.unwrap();
        assert_eq!(conflicting.status(), StatusCode::CONFLICT);
        assert_eq!(conflicting.json::<Value>().await.unwrap()["error"]["code"], "idempotency_conflict");

        for (body, field) in [
            (json!({ "type": "cheque", "reference": "X", "amount": 12.5, "currency": "USD" }), "amount"),
            (json!({ "type": "cheque", "reference": "X", "amount": "12.345", "currency": "USD" }), "amount"),
            (json!({ "type": "cheque", "reference": "X", "amount": "12", "currency": "XXQ" }), "currency"),
            (json!({ "type": "cheque", "reference": "X", "amount": "12.5", "currency": "JPY" }), "amount"),
            (json!({ "type": "bad type!", "reference": "X", "amount": "1", "currency": "USD" }), "type"),
            (json!({ "type": "cheque", "reference": "X", "amount": "1", "currency": "USD", "ai_assessment": { "recommendation": "approve", "confidence": 1.5 } }), "ai_assessment"),
        ] {
            let (status, error) = app.call(Method::POST, "/api/v1/cases", &clerk.access_token, Some(body.clone())).await;
            assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}: {error}");
            assert_eq!(error["error"]["details"]["field"], field, "{error}");
        }
        let (_, page) = app.call(Method::GET, "/api/v1/cases?limit=100", &clerk.access_token, None).await;
        assert_eq!(page["items"].as_array().unwrap().len(), 3, "refused cases changed nothing");

        let (_, page) = app.call(Method::GET, "/api/v1/cases?amount_min=100&amount_max=120.50", &clerk.access_token, None).await;
        let ids: Vec<&Value> = page["items"].as_array().unwrap().iter().map(|c| &c["id"]).collect();
        assert_eq!(ids, [&small["id"]], "inclusive exact range");
        let (_, page) = app.call(Method::GET, "/api/v1/cases?q=chq-1&state=queued", &clerk.access_token, None).await;
        assert_eq!(page["items"][0]["id"], case["id"]);
        let (_, page) = app.call(Method::GET, "/api/v1/cases?limit=2", &clerk.access_token, None).await;
        let (_, rest) = app.call(Method::GET, &format!("/api/v1/cases?limit=2&cursor={}", page["next_cursor"].as_str().unwrap()), &clerk.access_token, None).await;
        assert_eq!(rest["items"].as_array().unwrap().len(), 1);
        assert_eq!(rest["next_cursor"], Value::Null);
        let (status, _) = app.call(Method::GET, "/api/v1/cases?sla=late", &clerk.access_token, None).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);

        assert_eq!(history_actions(&app, &clerk, &small).await, ["created", "routed"]);
        let outsider = app.sign_in("globex", "gil@globex.test", Role::Supervisor).await;
        let (status, _) = app.call(Method::GET, &format!("/api/v1/cases/{}", small["id"].as_str().unwrap()), &outsider.access_token, None).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "other tenants see nothing");
    }

    async fn the_default_policy_routes_by_thresholds_and_ai(backend) {
        let env = [("AI_ENABLED", "true"), ("AI_CONFIDENCE_THRESHOLD", "0.9")];
        let Some(app) = TestApp::spawn_with(backend, ProcessRole::All, &env).await else { return };
        let clerk = app.sign_in("acme", "carl@acme.test", Role::Reviewer).await;
        let admin = app.sign_in("acme", "ada@acme.test", Role::Admin).await;
        // Only the case type's assessment pipeline may decide a case; this one takes its confidence
        // from the subject so each case below gets the one it needs.
        let (status, assessor) = app.call(Method::POST, "/api/v1/tasks", &admin.access_token, Some(json!({
            "title": "Assess", "schedule_kind": "manual", "payload": { "pipeline": [{
                "id": "assess", "uses": "cases.assess",
                "with": { "case_id": "${params.case.id}", "recommendation": "approve",
                          "confidence": "${params.case.subject.confidence}", "reasons": ["signature matches"] } }] }
        }))).await;
        assert_eq!(status, StatusCode::CREATED, "{assessor}");
        let (status, body) = app.call(Method::PUT, "/api/v1/case-types/cheque/assessment", &admin.access_token,
            Some(json!({ "task_id": assessor["id"] }))).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let assessed = |reference: &str, amount: &str, confidence: f64| {
            let mut body = cheque(reference, amount);
            body["subject"]["confidence"] = json!(confidence);
            let (app, clerk) = (&app, &clerk);
            async move {
                let (status, case) = app.call(Method::POST, "/api/v1/cases", &clerk.access_token, Some(body)).await;
                assert_eq!((status, case["state"].as_str()), (StatusCode::ACCEPTED, Some("assessing")), "{case}");
                let path = format!("/api/v1/cases/{}", case["id"].as_str().unwrap());
                let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
                loop {
                    let (_, case) = app.call(Method::GET, &path, &clerk.access_token, None).await;
                    if case["state"] != "assessing" {
                        assert_eq!(case["ai_assessment_source"], "pipeline", "{case}");
                        return case;
                    }
                    assert!(tokio::time::Instant::now() < deadline, "still assessing: {case}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        };

        let auto = assessed("A-1", "100.00", 0.95).await;
        assert_eq!(auto["state"], "auto_approved");
        assert_eq!(auto["decision"], "approve");

        assert_eq!(assessed("A-2", "100.00", 0.85).await["state"], "queued", "below the confidence threshold");

        let dual = assessed("A-3", "5000.00", 0.99).await;
        assert_eq!(dual["state"], "queued", "dual control blocks auto-decision");
        assert_eq!(dual["dual_control"], true);
        assert_eq!(dual["priority"], "normal");

        let (status, _) = app.call(Method::DELETE, "/api/v1/case-types/cheque/assessment", &admin.access_token, None).await;
        assert!(status.is_success());
        let big = submit(&app, &clerk, cheque("A-4", "10000.00")).await;
        assert_eq!(big["priority"], "high");
        assert_eq!(big["dual_control"], true);
        let fired: Vec<&str> = big["policy_trace"]["fired"].as_array().unwrap().iter().map(|r| r["name"].as_str().unwrap()).collect();
        assert_eq!(fired.len(), 2, "{}", big["policy_trace"]);
        assert_eq!(submit(&app, &clerk, cheque("A-5", "9999.99")).await["priority"], "normal");
    }

    async fn a_case_moves_through_review_and_illegal_moves_are_refused(backend) {
        let Some(app) = TestApp::spawn(backend).await else { return };
        let clerk = app.sign_in("acme", "carl@acme.test", Role::Reviewer).await;
        let rita = app.sign_in("acme", "rita@acme.test", Role::Reviewer).await;
        let viewer = app.sign_in("acme", "vic@acme.test", Role::Viewer).await;
        let case = submit(&app, &clerk, cheque("R-1", "250.00")).await;

        let (status, _) = decide(&app, &rita, &case, "approve", None).await;
        assert_eq!(status, StatusCode::CONFLICT, "claim first");
        let (status, _) = act(&app, &viewer, &case, "claim", None).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "viewers do not review");
        let (status, error) = act(&app, &clerk, &case, "claim", None).await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        assert_eq!(error["error"]["code"], "own_case");

        let (status, claimed) = app.call(Method::POST, "/api/v1/reviews/next", &rita.access_token, None).await;
        assert_eq!(status, StatusCode::OK, "{claimed}");
        assert_eq!(claimed["id"], case["id"]);
        assert_eq!(claimed["state"], "in_review");
        assert_eq!(claimed["assignee_id"], rita.user_id.as_str());
        let (status, _) = app.call(Method::POST, "/api/v1/reviews/next", &rita.access_token, None).await;
        assert_eq!(status, StatusCode::NO_CONTENT, "nothing else is waiting");

        let (status, released) = act(&app, &rita, &case, "release", None).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(released["state"], "queued");
        assert_eq!(released["assignee_id"], Value::Null);
        act(&app, &rita, &case, "claim", None).await;

        let (status, error) = decide(&app, &rita, &case, "reject", None).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "a rejection needs a reason");
        assert_eq!(error["error"]["details"]["field"], "reason");
        let (status, decided) = decide(&app, &rita, &case, "reject", Some("signature mismatch")).await;
        assert_eq!(status, StatusCode::OK, "{decided}");
        assert_eq!(decided["state"], "rejected");
        assert_eq!(decided["decision"], "reject");

        let (status, error) = act(&app, &rita, &case, "claim", None).await;
        assert_eq!(status, StatusCode::CONFLICT);
        assert_eq!(error["error"]["code"], "invalid_state");
        assert_eq!(error["error"]["details"]["state"], "rejected");
        let (status, error) = act(&app, &clerk, &case, "cancel", Some(json!({ "reason": "typo" }))).await;
        assert_eq!(status, StatusCode::CONFLICT);
        assert!(error["error"]["message"].as_str().unwrap().contains("rejected"), "{error}");

        let other = submit(&app, &clerk, cheque("R-2", "10.00")).await;
        let (status, cancelled) = act(&app, &clerk, &other, "cancel", Some(json!({ "reason": "duplicate" }))).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(cancelled["state"], "cancelled");

        assert_eq!(history_actions(&app, &clerk, &case).await, ["created", "routed", "claimed", "released", "claimed", "decided"]);
        let auditor = app.sign_in("acme", "sue@acme.test", Role::Supervisor).await;
        let (_, audit) = app.call(Method::GET, "/api/v1/audit?limit=100", &auditor.access_token, None).await;
        let actions: Vec<&str> = audit["items"].as_array().unwrap().iter().map(|r| r["action"].as_str().unwrap()).collect();
        for expected in ["case.created", "case.routed", "case.claimed", "case.released", "case.decided", "case.cancelled"] {
            assert!(actions.contains(&expected), "{expected} missing from {actions:?}");
        }
        let (_, verified) = app.call(Method::GET, "/api/v1/audit/verify", &auditor.access_token, None).await;
        assert_eq!(verified["valid"], true, "{verified}");
    }

    async fn dual_control_is_maker_checker_with_two_different_people(backend) {
        let Some(app) = TestApp::spawn(backend).await else { return };
        let clerk = app.sign_in("acme", "carl@acme.test", Role::Reviewer).await;
        let ann = app.sign_in("acme", "ann@acme.test", Role::Reviewer).await;
        let bob = app.sign_in("acme", "bob@acme.test", Role::Reviewer).await;
        let sue = app.sign_in("acme", "sue@acme.test", Role::Supervisor).await;

        // The checker approves: the maker's proposal is applied.
        let case = submit(&app, &clerk, cheque("D-1", "7500.00")).await;
        assert_eq!(case["dual_control"], true);
        act(&app, &ann, &case, "claim", None).await;
        let (status, proposed) = decide(&app, &ann, &case, "reject", Some("signature differs")).await;
        assert_eq!(status, StatusCode::OK, "{proposed}");
        assert_eq!(proposed["state"], "pending_dual_control");
        assert_eq!(proposed["decision"], Value::Null, "nothing is decided yet");
        assert_eq!(proposed["proposal"]["action"], "reject");
        assert_eq!(proposed["proposal"]["proposed_by"], format!("user:{}", ann.user_id));
        assert_eq!(proposed["proposal"]["reason"], "signature differs");
        let (status, error) = act(&app, &ann, &case, "claim", None).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "the maker cannot check their own proposal");
        assert_eq!(error["error"]["code"], "same_reviewer");
        let (status, error) = act(&app, &ann, &case, "check", Some(json!({ "verdict": "approve" }))).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "the maker is told why, not asked to claim: {error}");
        assert_eq!(error["error"]["code"], "same_reviewer");
        let (status, _) = app.call(Method::POST, "/api/v1/reviews/next", &ann.access_token, None).await;
        assert_eq!(status, StatusCode::NO_CONTENT, "next never offers your own proposal");
        let (_, offered) = app.call(Method::POST, "/api/v1/reviews/next", &bob.access_token, None).await;
        assert_eq!(offered["id"], case["id"]);
        let (status, error) = decide(&app, &bob, &case, "approve", None).await;
        assert_eq!(status, StatusCode::CONFLICT, "a proposal is checked, not decided again: {error}");
        assert_eq!(error["error"]["code"], "pending_dual_control");
        let (status, done) = act(&app, &bob, &case, "check", Some(json!({ "verdict": "approve" }))).await;
        assert_eq!(status, StatusCode::OK, "{done}");
        assert_eq!(done["state"], "rejected", "the proposed action is applied");
        assert_eq!(done["decision"], "reject");
        let (status, error) = act(&app, &sue, &case, "check", Some(json!({ "verdict": "approve" }))).await;
        assert_eq!(status, StatusCode::CONFLICT, "{error}");
        assert_eq!(history_actions(&app, &sue, &case).await, ["created", "routed", "claimed", "proposed", "claimed", "confirmed"]);

        // Both steps are audited with what each person saw.
        let (_, audit) = app.call(Method::GET, "/api/v1/audit?limit=100", &sue.access_token, None).await;
        for (action, actor) in [("case.proposed", &ann.user_id), ("case.confirmed", &bob.user_id)] {
            let record = audit["items"].as_array().unwrap().iter()
                .find(|r| r["action"] == action && r["target_id"] == case["id"])
                .unwrap_or_else(|| panic!("{action} missing: {audit}")).clone();
            assert_eq!(record["actor_id"], actor.as_str());
            let summary: Value = record["summary"].clone();
            let evidence = &summary["details"]["evidence"];
            assert_eq!(evidence["amount"], "7500.00", "{summary}");
            assert_eq!(evidence["reference"], "D-1");
            assert_eq!(evidence["subject"]["payee"], "Ann");
            assert_eq!(evidence["policy_version"], 0);
            assert!(evidence["policy_trace"]["fired"].is_array(), "{summary}");
        }

        // The checker rejects: back to review with the checker's notes; the maker may try again.
        let case = submit(&app, &clerk, cheque("D-2", "7500.00")).await;
        act(&app, &ann, &case, "claim", None).await;
        decide(&app, &ann, &case, "approve", None).await;
        act(&app, &bob, &case, "claim", None).await;
        let (status, error) = act(&app, &bob, &case, "check", Some(json!({ "verdict": "reject" }))).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "sending back needs notes: {error}");
        assert_eq!(error["error"]["details"]["field"], "notes");
        let (status, back) = act(&app, &bob, &case, "check", Some(json!({ "verdict": "reject", "notes": "words and figures differ" }))).await;
        assert_eq!(status, StatusCode::OK, "{back}");
        assert_eq!(back["state"], "queued");
        assert_eq!(back["proposal"], Value::Null);
        assert_eq!(back["decision"], Value::Null);
        let (_, detail) = app.call(Method::GET, &format!("/api/v1/cases/{}", case["id"].as_str().unwrap()), &sue.access_token, None).await;
        let sent_back = detail["history"].as_array().unwrap().iter().find(|h| h["action"] == "sent_back").unwrap().clone();
        assert_eq!(sent_back["notes"], "words and figures differ");
        assert_eq!(sent_back["details"]["proposal"]["action"], "approve");
        let (_, again) = app.call(Method::POST, "/api/v1/reviews/next", &ann.access_token, None).await;
        assert_eq!(again["id"], case["id"], "the maker may take it again after it was sent back");
        let (_, proposed) = decide(&app, &ann, &case, "reject", Some("agreed with bob")).await;
        assert_eq!(proposed["state"], "pending_dual_control");

        // Escalated cases: the checker must be a supervisor too.
        let case = submit(&app, &clerk, cheque("D-3", "7500.00")).await;
        act(&app, &ann, &case, "claim", None).await;
        decide(&app, &ann, &case, "escalate", Some("looks altered")).await;
        act(&app, &sue, &case, "claim", None).await;
        let (_, proposed) = decide(&app, &sue, &case, "approve", None).await;
        assert_eq!(proposed["state"], "pending_dual_control");
        let (status, error) = act(&app, &bob, &case, "claim", None).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{error}");
        assert_eq!(error["error"]["code"], "role_required");
        let mia = app.sign_in("acme", "mia@acme.test", Role::Supervisor).await;
        act(&app, &mia, &case, "claim", None).await;
        let (_, back) = act(&app, &mia, &case, "check", Some(json!({ "verdict": "reject", "notes": "call the drawer first" }))).await;
        assert_eq!(back["state"], "escalated", "sent back to supervisors, where it was");
    }

    async fn supervisors_reassign_cases_to_people_who_may_decide_them(backend) {
        let Some(app) = TestApp::spawn(backend).await else { return };
        let clerk = app.sign_in("acme", "carl@acme.test", Role::Reviewer).await;
        let rita = app.sign_in("acme", "rita@acme.test", Role::Reviewer).await;
        let bob = app.sign_in("acme", "bob@acme.test", Role::Reviewer).await;
        let vic = app.sign_in("acme", "vic@acme.test", Role::Viewer).await;
        let sue = app.sign_in("acme", "sue@acme.test", Role::Supervisor).await;
        let gil = app.sign_in("globex", "gil@globex.test", Role::Supervisor).await;

        let case = submit(&app, &clerk, cheque("RA-1", "250.00")).await;
        let (_, claimed) = app.call(Method::POST, "/api/v1/reviews/next", &rita.access_token, None).await;
        assert_eq!(claimed["id"], case["id"]);

        let (status, error) = reassign(&app, &rita, &case, Some(&bob.user_id)).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{error}");
        assert_eq!(error["error"]["code"], "supervisor_required");
        for (to, why) in [
            (clerk.user_id.as_str(), "the submitter"),
            (vic.user_id.as_str(), "a viewer"),
            (rita.user_id.as_str(), "the holder"),
            (gil.user_id.as_str(), "another tenant's user"),
            ("no-such-user", "nobody"),
        ] {
            let (status, error) = reassign(&app, &sue, &case, Some(to)).await;
            assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{why}: {error}");
            assert_eq!(error["error"]["details"]["field"], "assignee_id", "{why}: {error}");
        }

        let (status, moved) = reassign(&app, &sue, &case, Some(&bob.user_id)).await;
        assert_eq!(status, StatusCode::OK, "{moved}");
        assert_eq!(moved["assignee_id"], bob.user_id.as_str());
        assert_eq!(moved["state"], "in_review");
        assert!(moved["lease_expires_at"].is_string(), "{moved}");
        let (status, error) = decide(&app, &rita, &case, "approve", None).await;
        assert_eq!(status, StatusCode::CONFLICT, "rita no longer holds it: {error}");
        assert_eq!(error["error"]["code"], "not_claimed");
        let (status, decided) = decide(&app, &bob, &case, "approve", None).await;
        assert_eq!(status, StatusCode::OK, "{decided}");
        let (status, error) = reassign(&app, &sue, &case, Some(&rita.user_id)).await;
        assert_eq!(status, StatusCode::CONFLICT, "decided cases stay decided: {error}");
        assert_eq!(error["error"]["code"], "invalid_state");

        let (_, detail) = app.call(Method::GET, &format!("/api/v1/cases/{}", case["id"].as_str().unwrap()), &sue.access_token, None).await;
        let entry = detail["history"].as_array().unwrap().iter().find(|h| h["action"] == "reassigned").unwrap().clone();
        assert_eq!(entry["actor"], format!("user:{}", sue.user_id));
        assert_eq!(entry["reason"], "rita is away");
        assert_eq!(entry["details"]["from"], rita.user_id.as_str());
        assert_eq!(entry["details"]["to"], bob.user_id.as_str());
        assert_eq!(history_actions(&app, &sue, &case).await, ["created", "routed", "claimed", "reassigned", "decided"]);
        let (_, audit) = app.call(Method::GET, "/api/v1/audit?limit=100", &sue.access_token, None).await;
        let record = audit["items"].as_array().unwrap().iter().find(|r| r["action"] == "case.reassigned").unwrap().clone();
        assert_eq!(record["target_id"], case["id"]);
        assert_eq!(record["actor_id"], sue.user_id.as_str(), "{record}");
        let summary: Value = record["summary"].clone();
        assert_eq!(summary["details"]["to"], bob.user_id.as_str(), "{summary}");

        // Escalated cases go only to supervisors; a case can also go back to the queue.
        let urgent = submit(&app, &clerk, cheque("RA-2", "40.00")).await;
        act(&app, &rita, &urgent, "claim", None).await;
        let (_, escalated) = decide(&app, &rita, &urgent, "escalate", Some("looks forged")).await;
        assert_eq!(escalated["state"], "escalated");
        let (status, error) = reassign(&app, &sue, &urgent, Some(&bob.user_id)).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{error}");
        assert!(error["error"]["message"].as_str().unwrap().contains("supervisor"), "{error}");
        let (status, error) = reassign(&app, &sue, &urgent, None).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "nobody holds it: {error}");
        let (status, mine) = reassign(&app, &sue, &urgent, Some(&sue.user_id)).await;
        assert_eq!(status, StatusCode::OK, "{mine}");
        assert_eq!(mine["state"], "escalated");
        let (status, back) = reassign(&app, &sue, &urgent, None).await;
        assert_eq!(status, StatusCode::OK, "{back}");
        assert_eq!(back["assignee_id"], Value::Null);
        assert_eq!(back["state"], "escalated", "still waiting for a supervisor");
    }

    async fn concurrent_reviewers_never_get_the_same_case(backend) {
        let Some(app) = TestApp::spawn(backend).await else { return };
        let clerk = app.sign_in("acme", "carl@acme.test", Role::Reviewer).await;
        for n in 0..24 {
            submit(&app, &clerk, cheque(&format!("C-{n}"), "10.00")).await;
        }
        let mut reviewers = Vec::new();
        for n in 0..6 {
            reviewers.push(app.sign_in("acme", &format!("r{n}@acme.test"), Role::Reviewer).await);
        }
        let claims = futures_util::future::join_all(reviewers.iter().map(|r| {
            let app = &app;
            async move {
                let mut mine = Vec::new();
                loop {
                    let (status, case) = app.call(Method::POST, "/api/v1/reviews/next", &r.access_token, None).await;
                    match status {
                        StatusCode::OK => mine.push(case["id"].as_str().unwrap().to_owned()),
                        StatusCode::NO_CONTENT => return mine,
                        other => panic!("{other}: {case}"),
                    }
                }
            }
        }))
        .await;
        let all: Vec<&String> = claims.iter().flatten().collect();
        let unique: HashSet<&&String> = all.iter().collect();
        assert_eq!(all.len(), 24, "every case claimed once: {claims:?}");
        assert_eq!(unique.len(), 24, "no case given to two reviewers");
    }

    async fn the_sla_sweep_marks_breaches_once_and_raises_priority(backend) {
        let Some(app) = TestApp::spawn_with(backend, ProcessRole::Api, &[]).await else { return };
        let clerk = app.sign_in("acme", "carl@acme.test", Role::Reviewer).await;
        let sue = app.sign_in("acme", "sue@acme.test", Role::Supervisor).await;
        let late = submit(&app, &clerk, cheque("S-1", "10.00")).await;
        let stream = app.client.get(app.url("/api/v1/events/stream?topic=case.sla_breached")).bearer_auth(&sue.access_token).send().await.unwrap();

        let now = docket::clock::now();
        let swept = docket::review::sweep(&app.state, now + chrono::Duration::hours(3)).await.unwrap();
        assert_eq!(swept.breached, 0, "the default SLA is four hours");
        let swept = docket::review::sweep(&app.state, now + chrono::Duration::hours(5)).await.unwrap();
        assert_eq!(swept.breached, 1);
        let swept = docket::review::sweep(&app.state, now + chrono::Duration::hours(6)).await.unwrap();
        assert_eq!(swept.breached, 0, "a breach is marked once");

        let (_, case) = app.call(Method::GET, &format!("/api/v1/cases/{}", late["id"].as_str().unwrap()), &clerk.access_token, None).await;
        assert_eq!(case["sla_status"], "breached");
        assert_eq!(case["priority"], "high", "raised one step");
        assert!(case["history"].as_array().unwrap().iter().any(|h| h["action"] == "sla_breached"));
        let (_, breached) = app.call(Method::GET, "/api/v1/cases?sla=breached", &clerk.access_token, None).await;
        assert_eq!(breached["items"][0]["id"], late["id"]);
        let event = crate::events::next_event(stream, "case.sla_breached").await;
        assert_eq!(event["payload"]["case_id"], late["id"]);

        let (status, stats) = app.call(Method::GET, "/api/v1/reviews/stats", &sue.access_token, None).await;
        assert_eq!(status, StatusCode::OK, "{stats}");
        assert_eq!(stats["open_cases"], 1);
        assert_eq!(stats["depth_by_priority"]["high"], 1);
        assert_eq!(stats["breaches"], 1);

        // A reviewer's lease that runs out puts the case back in the queue.
        let rita = app.sign_in("acme", "rita@acme.test", Role::Reviewer).await;
        act(&app, &rita, &late, "claim", None).await;
        let swept = docket::review::sweep(&app.state, docket::clock::now() + chrono::Duration::hours(2)).await.unwrap();
        assert_eq!(swept.leases_returned, 1);
        let (_, case) = app.call(Method::GET, &format!("/api/v1/cases/{}", late["id"].as_str().unwrap()), &clerk.access_token, None).await;
        assert_eq!(case["state"], "queued");
        let (_, decided) = { act(&app, &rita, &late, "claim", None).await; decide(&app, &rita, &late, "approve", None).await };
        assert_eq!(decided["state"], "approved");
        let (_, stats) = app.call(Method::GET, "/api/v1/reviews/stats", &sue.access_token, None).await;
        assert_eq!(stats["open_cases"], 0);
        assert_eq!(stats["decisions_per_reviewer"][0]["reviewer"], format!("user:{}", rita.user_id));
        assert!(stats["median_time_to_decision_seconds"].as_i64().is_some(), "{stats}");
    }

    async fn policies_are_versioned_validated_and_simulated(backend) {
        let Some(app) = TestApp::spawn(backend).await else { return };
        let admin = app.sign_in("acme", "ada@acme.test", Role::Admin).await;
        let clerk = app.sign_in("acme", "carl@acme.test", Role::Reviewer).await;
        let (status, _) = app.call(Method::GET, "/api/v1/policy", &clerk.access_token, None).await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        let (status, current) = app.call(Method::GET, "/api/v1/policy", &admin.access_token, None).await;
        assert_eq!(status, StatusCode::OK, "{current}");
        assert_eq!(current["version"], 0);
        assert_eq!(current["source"], "environment");

        let before = submit(&app, &clerk, cheque("P-1", "600.00")).await;
        assert_eq!(before["priority"], "normal");

        let (status, error) = app.call(Method::PUT, "/api/v1/policy", &admin.access_token, Some(json!({
            "rules": [{ "name": "ok", "when": { "field": "amount", "op": ">=", "value": "1" }, "then": { "priority": "high" } },
                      { "name": "bad", "when": { "field": "amount", "op": "~", "value": "1" }, "then": { "priority": "high" } }]
        }))).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(error["error"]["details"]["path"], "/rules/1/when/op", "{error}");

        let draft = json!({
            "defaults": { "sla_hours": 8 },
            "rules": [{ "name": "young accounts", "when": { "field": "subject.account_age_days", "op": "<", "value": 30 },
                        "then": { "priority": "urgent", "queue": "risk" } }]
        });
        let (status, simulated) = app.call(Method::POST, "/api/v1/policy/simulate", &admin.access_token, Some(json!({
            "policy": draft, "case_ids": [before["id"]],
            "cases": [{ "type": "cheque", "reference": "inline", "amount": "5.00", "currency": "USD", "subject": { "account_age_days": 400 } }]
        }))).await;
        assert_eq!(status, StatusCode::OK, "{simulated}");
        assert_eq!(simulated["results"][0]["outcome"]["priority"], "normal", "old account");
        assert_eq!(simulated["results"][1]["outcome"]["priority"], "urgent");
        assert_eq!(simulated["results"][1]["outcome"]["fired"][0]["name"], "young accounts");
        assert_eq!(simulated["results"][1]["current"]["priority"], "normal");
        let (_, unchanged) = app.call(Method::GET, &format!("/api/v1/cases/{}", before["id"].as_str().unwrap()), &clerk.access_token, None).await;
        assert_eq!(unchanged["priority"], "normal", "simulation changes nothing");

        let (status, saved) = app.call(Method::PUT, "/api/v1/policy", &admin.access_token, Some(draft)).await;
        assert_eq!(status, StatusCode::OK, "{saved}");
        assert_eq!(saved["version"], 1);
        let after = submit(&app, &clerk, cheque("P-2", "600.00")).await;
        assert_eq!(after["policy_version"], 1);
        assert_eq!(after["priority"], "urgent");
        assert_eq!(after["queue"], "risk");
        assert_eq!(after["sla_hours"], 8);
        let (_, versions) = app.call(Method::GET, "/api/v1/policy/versions", &admin.access_token, None).await;
        let numbers: Vec<i64> = versions["items"].as_array().unwrap().iter().map(|v| v["version"].as_i64().unwrap()).collect();
        assert_eq!(numbers, [1, 0]);
    }

    async fn decisions_trigger_event_tasks(backend) {
        let Some(app) = TestApp::spawn(backend).await else { return };
        let clerk = app.sign_in("acme", "carl@acme.test", Role::Reviewer).await;
        let rita = app.sign_in("acme", "rita@acme.test", Role::Reviewer).await;
        let sue = app.sign_in("acme", "sue@acme.test", Role::Supervisor).await;
        let (status, task) = app.call(Method::POST, "/api/v1/tasks", &sue.access_token, Some(json!({ "title": "Pay out", "schedule_kind": "event", "schedule_expr": "case.approved" }))).await;
        assert_eq!(status, StatusCode::CREATED, "{task}");
        let case = submit(&app, &clerk, cheque("E-1", "10.00")).await;
        act(&app, &rita, &case, "claim", None).await;
        decide(&app, &rita, &case, "approve", None).await;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let (_, runs) = app.call(Method::GET, &format!("/api/v1/runs?task_id={}", task["id"].as_str().unwrap()), &sue.access_token, None).await;
            if let Some(run) = runs["items"].as_array().and_then(|r| r.first())
                && run["status"] == "succeeded"
            {
                assert_eq!(run["input"]["event"]["payload"]["case_id"], case["id"]);
                break;
            }
            assert!(tokio::time::Instant::now() < deadline, "no finished run for the case.approved task");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}
