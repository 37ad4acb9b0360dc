//! The review desk beyond approve/reject: every action and the state it leads to, holds that come
//! back (with an injected clock), requests for information, reason codes and their rules, and the
//! record of who viewed which case.

use chrono::{DateTime, Utc};
use docket::app::Role as ProcessRole;
use docket::auth::Role;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::on_both_backends;
use crate::support::{Login, TestApp};

fn cheque(reference: &str) -> Value {
    json!({ "type": "cheque", "reference": reference, "amount": "120.00", "currency": "USD",
            "subject": { "payee": "Ann" } })
}

fn path(case: &Value, action: &str) -> String {
    format!("/api/v1/cases/{}/{action}", case["id"].as_str().unwrap())
}

async fn submit(app: &TestApp, who: &Login, reference: &str) -> Value {
    let (status, case) = app
        .call(
            Method::POST,
            "/api/v1/cases",
            &who.access_token,
            Some(cheque(reference)),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{case}");
    case
}

async fn claim(app: &TestApp, who: &Login, case: &Value) {
    let (status, body) = app
        .call(Method::POST, &path(case, "claim"), &who.access_token, None)
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

async fn decide(app: &TestApp, who: &Login, case: &Value, body: Value) -> (StatusCode, Value) {
    app.call(
        Method::POST,
        &path(case, "decision"),
        &who.access_token,
        Some(body),
    )
    .await
}

async fn get(app: &TestApp, who: &Login, case: &Value) -> Value {
    let (status, detail) = app
        .call(
            Method::GET,
            &format!("/api/v1/cases/{}", case["id"].as_str().unwrap()),
            &who.access_token,
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{detail}");
    detail
}

fn time(value: &Value) -> DateTime<Utc> {
    value.as_str().unwrap().parse().unwrap()
}

async fn add_codes(app: &TestApp, admin: &Login) {
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
                &admin.access_token,
                Some(code),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }
}

on_both_backends! {
    async fn every_action_leads_to_its_state_and_illegal_ones_are_refused(backend) {
        let Some(app) = TestApp::spawn_with(backend, ProcessRole::Api, &[]).await else { return };
        let admin = app.sign_in("acme", "ada@acme.test", Role::Admin).await;
        let clerk = app.sign_in("acme", "carl@acme.test", Role::Reviewer).await;
        let rita = app.sign_in("acme", "rita@acme.test", Role::Reviewer).await;
        add_codes(&app, &admin).await;

        // return: final, with its reason codes on the case and in the history.
        let case = submit(&app, &clerk, "A-1").await;
        claim(&app, &rita, &case).await;
        let (status, error) = decide(&app, &rita, &case, json!({ "decision": "return" })).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "a return needs a reason: {error}");
        let (status, returned) = decide(&app, &rita, &case, json!({ "decision": "return", "reason_codes": ["NSF"] })).await;
        assert_eq!(status, StatusCode::OK, "{returned}");
        assert_eq!(returned["state"], "returned");
        assert_eq!(returned["decision"], "return");
        assert_eq!(returned["reason_codes"], json!(["NSF"]));
        let detail = get(&app, &rita, &case).await;
        let last = detail["history"].as_array().unwrap().last().unwrap().clone();
        assert_eq!((last["action"].as_str(), last["decision"].as_str()), (Some("decided"), Some("return")));
        assert_eq!(last["reason_codes"], json!(["NSF"]));
        let (status, error) = decide(&app, &rita, &case, json!({ "decision": "approve" })).await;
        assert_eq!(status, StatusCode::CONFLICT, "decided cases stay decided: {error}");

        // hold: parked until a time; the sweep brings it back, its SLA deadline moved on.
        let case = submit(&app, &clerk, "A-2").await;
        claim(&app, &rita, &case).await;
        let now = docket::clock::now();
        for (body, field) in [
            (json!({ "decision": "hold", "reason_codes": ["CLEARING"] }), "hold_until"),
            (json!({ "decision": "hold", "reason_codes": ["CLEARING"], "hold_until": now - chrono::Duration::minutes(1) }), "hold_until"),
            (json!({ "decision": "hold", "reason_codes": ["CLEARING"], "hold_until": now + chrono::Duration::days(91) }), "hold_until"),
            (json!({ "decision": "approve", "hold_until": now + chrono::Duration::hours(2) }), "hold_until"),
        ] {
            let (status, error) = decide(&app, &rita, &case, body.clone()).await;
            assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}: {error}");
            assert_eq!(error["error"]["details"]["field"], field, "{error}");
        }
        let until = now + chrono::Duration::hours(2);
        let (status, held) = decide(&app, &rita, &case, json!({ "decision": "hold", "reason_codes": ["CLEARING"], "hold_until": until })).await;
        assert_eq!(status, StatusCode::OK, "{held}");
        assert_eq!(held["state"], "on_hold");
        assert_eq!(time(&held["hold_until"]), until);
        assert_eq!(held["assignee_id"], Value::Null);
        assert_eq!(held["sla_status"], "on_track", "a parked case's clock is stopped");
        let (status, error) = app.call(Method::POST, &path(&case, "claim"), &rita.access_token, None).await;
        assert_eq!(status, StatusCode::CONFLICT, "held cases are not claimable: {error}");
        let (status, _) = app.call(Method::POST, "/api/v1/reviews/next", &rita.access_token, None).await;
        assert_eq!(status, StatusCode::NO_CONTENT, "held cases are not offered");
        let swept = docket::review::sweep(&app.state, now + chrono::Duration::hours(1)).await.unwrap();
        assert_eq!(swept.holds_ended, 0, "the hold has not ended");
        let swept = docket::review::sweep(&app.state, now + chrono::Duration::hours(3)).await.unwrap();
        assert_eq!((swept.holds_ended, swept.breached), (1, 0), "back, and not breached by the hold");
        let back = get(&app, &rita, &case).await;
        assert_eq!(back["state"], "queued");
        assert_eq!(back["hold_until"], Value::Null);
        let moved = time(&back["sla_due_at"]) - time(&held["sla_due_at"]);
        assert!(moved >= chrono::Duration::hours(3) - chrono::Duration::seconds(5), "deadline moved by the hold: {moved}");
        assert_eq!(back["history"].as_array().unwrap().last().unwrap()["action"], "hold_ended");

        // needs_more_info: parked until the submitter answers through the API.
        let case = submit(&app, &clerk, "A-3").await;
        claim(&app, &rita, &case).await;
        let (status, parked) = decide(&app, &rita, &case, json!({ "decision": "needs_more_info", "reason_codes": ["ID"], "notes": "send the drawer's ID" })).await;
        assert_eq!(status, StatusCode::OK, "{parked}");
        assert_eq!(parked["state"], "needs_more_info");
        let answer = json!({ "notes": "ID attached", "subject": { "id_checked": true } });
        let (status, error) = app.call(Method::POST, &path(&case, "information"), &rita.access_token, Some(answer.clone())).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "only the submitter (or a supervisor) answers: {error}");
        let (status, error) = app.call(Method::POST, &path(&case, "information"), &clerk.access_token, Some(json!({ "notes": " " }))).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{error}");
        let (status, requeued) = app.call(Method::POST, &path(&case, "information"), &clerk.access_token, Some(answer.clone())).await;
        assert_eq!(status, StatusCode::OK, "{requeued}");
        assert_eq!(requeued["state"], "queued");
        assert_eq!(requeued["subject"], json!({ "payee": "Ann", "id_checked": true }));
        let (status, error) = app.call(Method::POST, &path(&case, "information"), &clerk.access_token, Some(answer)).await;
        assert_eq!(status, StatusCode::CONFLICT, "only a case waiting for information takes it: {error}");
        let detail = get(&app, &rita, &case).await;
        let actions: Vec<&str> = detail["history"].as_array().unwrap().iter().map(|h| h["action"].as_str().unwrap()).collect();
        assert_eq!(actions, ["created", "routed", "claimed", "information_requested", "information_added"]);
        assert_eq!(detail["history"][4]["notes"], "ID attached");

        // escalate, then hold from escalated: it comes back to supervisors.
        let case = submit(&app, &clerk, "A-4").await;
        claim(&app, &rita, &case).await;
        let (_, escalated) = decide(&app, &rita, &case, json!({ "decision": "escalate", "reason": "looks altered" })).await;
        assert_eq!(escalated["state"], "escalated");
        let sue = app.sign_in("acme", "sue@acme.test", Role::Supervisor).await;
        claim(&app, &sue, &case).await;
        let (status, error) = decide(&app, &sue, &case, json!({ "decision": "escalate", "reason": "again" })).await;
        assert_eq!(status, StatusCode::CONFLICT, "escalated cases are not escalated again: {error}");
        let (status, parked) = decide(&app, &sue, &case, json!({ "decision": "needs_more_info", "reason": "call the branch" })).await;
        assert_eq!(status, StatusCode::OK, "{parked}");
        let (_, back) = app.call(Method::POST, &path(&case, "information"), &sue.access_token, Some(json!({ "notes": "branch confirmed" }))).await;
        assert_eq!(back["state"], "escalated", "supervisors may answer too; it returns to supervisors");

        // Parked cases can still be cancelled by their submitter.
        let case = submit(&app, &clerk, "A-5").await;
        claim(&app, &rita, &case).await;
        decide(&app, &rita, &case, json!({ "decision": "hold", "reason": "wait", "hold_until": now + chrono::Duration::hours(1) })).await;
        let (status, cancelled) = app.call(Method::POST, &path(&case, "cancel"), &clerk.access_token, Some(json!({ "reason": "withdrawn" }))).await;
        assert_eq!(status, StatusCode::OK, "{cancelled}");
        assert_eq!(cancelled["state"], "cancelled");
        let swept = docket::review::sweep(&app.state, now + chrono::Duration::hours(2)).await.unwrap();
        assert_eq!(swept.holds_ended, 0, "a cancelled hold does not come back");

        let (_, page) = app.call(Method::GET, "/api/v1/cases?state=on_hold", &clerk.access_token, None).await;
        assert_eq!(page["items"].as_array().unwrap().len(), 0, "{page}");
        let (_, page) = app.call(Method::GET, "/api/v1/cases?state=returned", &clerk.access_token, None).await;
        assert_eq!(page["items"].as_array().unwrap().len(), 1, "{page}");
    }

    async fn reason_codes_are_managed_by_admins_and_enforced_on_decisions(backend) {
        let Some(app) = TestApp::spawn(backend).await else { return };
        let admin = app.sign_in("acme", "ada@acme.test", Role::Admin).await;
        let clerk = app.sign_in("acme", "carl@acme.test", Role::Reviewer).await;
        let rita = app.sign_in("acme", "rita@acme.test", Role::Reviewer).await;
        let other = app.sign_in("globex", "gil@globex.test", Role::Admin).await;

        let new = json!({ "code": "NSF", "label": "Insufficient funds", "actions": ["return"] });
        let (status, _) = app.call(Method::POST, "/api/v1/reason-codes", &rita.access_token, Some(new.clone())).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "reviewers do not define codes");
        add_codes(&app, &admin).await;
        let (status, error) = app.call(Method::POST, "/api/v1/reason-codes", &admin.access_token, Some(new)).await;
        assert_eq!(status, StatusCode::CONFLICT, "{error}");
        assert_eq!(error["error"]["code"], "reason_code_exists");
        for (body, field) in [
            (json!({ "code": "has space", "label": "x", "actions": ["reject"] }), "code"),
            (json!({ "code": "X", "label": " ", "actions": ["reject"] }), "label"),
            (json!({ "code": "X", "label": "x", "actions": [] }), "actions"),
        ] {
            let (status, error) = app.call(Method::POST, "/api/v1/reason-codes", &admin.access_token, Some(body.clone())).await;
            assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}: {error}");
            assert_eq!(error["error"]["details"]["field"], field, "{error}");
        }
        let (status, _) = app.call(Method::POST, "/api/v1/reason-codes", &admin.access_token,
            Some(json!({ "code": "X", "label": "x", "actions": ["sign"] }))).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "unknown actions are refused");

        let (_, codes) = app.call(Method::GET, "/api/v1/reason-codes", &rita.access_token, None).await;
        let listed: Vec<&str> = codes.as_array().unwrap().iter().map(|c| c["code"].as_str().unwrap()).collect();
        assert_eq!(listed, ["CLEARING", "ID", "NSF", "SIG"]);
        let (_, codes) = app.call(Method::GET, "/api/v1/reason-codes?action=reject", &rita.access_token, None).await;
        let listed: Vec<&str> = codes.as_array().unwrap().iter().map(|c| c["code"].as_str().unwrap()).collect();
        assert_eq!(listed, ["NSF", "SIG"]);
        let (_, codes) = app.call(Method::GET, "/api/v1/reason-codes", &other.access_token, None).await;
        assert_eq!(codes, json!([]), "codes are per tenant");

        let case = submit(&app, &clerk, "R-1").await;
        claim(&app, &rita, &case).await;
        for (body, field, why) in [
            (json!({ "decision": "reject", "reason_codes": ["NOPE"] }), "reason_codes", "unknown"),
            (json!({ "decision": "reject", "reason_codes": ["CLEARING"] }), "reason_codes", "not for rejections"),
            (json!({ "decision": "reject", "reason_codes": ["NSF", "SIG"] }), "notes", "SIG requires notes"),
            (json!({ "decision": "reject", "reason_codes": ["NSF"], "notes": "x", "bogus": 1 }), "bogus", "unknown field"),
        ] {
            let (status, error) = decide(&app, &rita, &case, body.clone()).await;
            assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{why}: {error}");
            if !field.is_empty() {
                assert_eq!(error["error"]["details"]["field"], field, "{why}: {error}");
            }
        }
        let unchanged = get(&app, &rita, &case).await;
        assert_eq!(unchanged["state"], "in_review", "refused decisions change nothing");
        assert_eq!(unchanged["assignee_id"], rita.user_id.as_str());

        // A deactivated code may no longer be given; its label can change.
        let (status, patched) = app.call(Method::PATCH, "/api/v1/reason-codes/NSF", &admin.access_token,
            Some(json!({ "active": false, "label": "Not sufficient funds" }))).await;
        assert_eq!(status, StatusCode::OK, "{patched}");
        assert_eq!((patched["active"].as_bool(), patched["label"].as_str()), (Some(false), Some("Not sufficient funds")));
        let (status, error) = decide(&app, &rita, &case, json!({ "decision": "reject", "reason_codes": ["NSF"] })).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{error}");
        let (_, codes) = app.call(Method::GET, "/api/v1/reason-codes?include_inactive=true", &rita.access_token, None).await;
        assert_eq!(codes.as_array().unwrap().len(), 4);
        let (status, _) = app.call(Method::PATCH, "/api/v1/reason-codes/GONE", &admin.access_token, Some(json!({ "active": true }))).await;
        assert_eq!(status, StatusCode::NOT_FOUND);

        // Several codes on one decision, with the notes one of them needs.
        app.call(Method::PATCH, "/api/v1/reason-codes/NSF", &admin.access_token, Some(json!({ "active": true }))).await;
        let (status, decided) = decide(&app, &rita, &case,
            json!({ "decision": "reject", "reason_codes": ["SIG", "NSF", "SIG"], "notes": "signature and funds" })).await;
        assert_eq!(status, StatusCode::OK, "{decided}");
        assert_eq!(decided["reason_codes"], json!(["SIG", "NSF"]), "in the order given, once each");

        let (_, audit) = app.call(Method::GET, "/api/v1/audit?limit=100", &admin.access_token, None).await;
        let actions: Vec<&str> = audit["items"].as_array().unwrap().iter().map(|r| r["action"].as_str().unwrap()).collect();
        assert!(actions.contains(&"reason_code.created") && actions.contains(&"reason_code.updated"), "{actions:?}");
    }

    async fn every_view_of_a_case_is_recorded(backend) {
        let Some(app) = TestApp::spawn(backend).await else { return };
        let clerk = app.sign_in("acme", "carl@acme.test", Role::Reviewer).await;
        let rita = app.sign_in("acme", "rita@acme.test", Role::Reviewer).await;
        let sue = app.sign_in("acme", "sue@acme.test", Role::Supervisor).await;
        let case = submit(&app, &clerk, "V-1").await;
        let views = format!("/api/v1/cases/{}/views", case["id"].as_str().unwrap());

        let (_, listed) = app.call(Method::GET, "/api/v1/cases", &rita.access_token, None).await;
        assert_eq!(listed["items"].as_array().unwrap().len(), 1);
        let (_, seen) = app.call(Method::GET, &views, &sue.access_token, None).await;
        assert_eq!(seen, json!([]), "a list is not a view of the case");

        get(&app, &rita, &case).await;
        get(&app, &clerk, &case).await;
        get(&app, &rita, &case).await;
        let (status, seen) = app.call(Method::GET, &views, &sue.access_token, None).await;
        assert_eq!(status, StatusCode::OK, "{seen}");
        let actors: Vec<&str> = seen.as_array().unwrap().iter().map(|v| v["actor"].as_str().unwrap()).collect();
        let (rita_actor, clerk_actor) = (format!("user:{}", rita.user_id), format!("user:{}", clerk.user_id));
        assert_eq!(actors, [rita_actor.as_str(), clerk_actor.as_str(), rita_actor.as_str()], "most recent first");
        assert!(seen[0]["viewed_at"].is_string());
        let (_, only) = app.call(Method::GET, &format!("{views}?actor={clerk_actor}"), &sue.access_token, None).await;
        assert_eq!(only.as_array().unwrap().len(), 1);

        let (status, _) = app.call(Method::GET, &views, &rita.access_token, None).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "reviewers do not read the view log");
        let (status, _) = app.call(Method::GET, &format!("{views}?limit=0"), &sue.access_token, None).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
        let (status, _) = app.call(Method::GET, "/api/v1/cases/no-such-case/views", &sue.access_token, None).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
    }
}

on_both_backends! {
    async fn policies_on_account_context_set_risk_flags_and_required_reasons(backend) {
        let Some(app) = TestApp::spawn(backend).await else { return };
        let admin = app.sign_in("acme", "ada@acme.test", Role::Admin).await;
        let clerk = app.sign_in("acme", "carl@acme.test", Role::Reviewer).await;
        let rita = app.sign_in("acme", "rita@acme.test", Role::Reviewer).await;
        add_codes(&app, &admin).await;
        let policy = json!({
            "defaults": { "risk_level": "low" },
            "rules": [
                { "name": "new account", "when": { "field": "subject.tenure_days", "op": "<", "value": 30 },
                  "then": { "add_flag": "NEW_ACCOUNT", "risk_level": "high" } },
                { "name": "unusual amount", "when": { "field": "amount / subject.avg_amount", "op": ">", "value": 3 },
                  "then": { "add_flag": "UNUSUAL_AMOUNT", "risk_level": "medium", "require_reason": true } },
                { "name": "returns", "when": { "field": "subject.recent_returns", "op": "between", "value": [2, 5] },
                  "then": { "add_flag": "RECENT_RETURNS" } },
                { "name": "watched payees", "when": { "field": "subject.payee", "op": "in", "value": ["Mallory", "Trudy"] },
                  "then": { "risk_level": "critical" } }
            ]
        });
        let (status, body) = app.call(Method::PUT, "/api/v1/policy", &admin.access_token, Some(policy)).await;
        assert_eq!(status, StatusCode::OK, "{body}");

        let submit_with = |reference: &str, amount: &str, subject: Value| {
            let body = json!({ "type": "cheque", "reference": reference, "amount": amount, "currency": "USD", "subject": subject });
            let app = &app;
            let token = clerk.access_token.clone();
            async move {
                let (status, case) = app.call(Method::POST, "/api/v1/cases", &token, Some(body)).await;
                assert_eq!(status, StatusCode::CREATED, "{case}");
                case
            }
        };
        // 4,000 is 4× the average: unusual; tenure 10 days: new account, which set the risk first.
        let both = submit_with("P-1", "4000.00", json!({ "tenure_days": 10, "avg_amount": "1000", "recent_returns": 2 })).await;
        assert_eq!(both["flags"], json!(["NEW_ACCOUNT", "UNUSUAL_AMOUNT", "RECENT_RETURNS"]), "{both}");
        assert_eq!(both["risk_level"], "high", "the first rule to set it wins");
        assert_eq!(both["require_reason"], true);
        // Exactly 3× is not more than 3×; no average means the ratio cannot be computed: no flag.
        let plain = submit_with("P-2", "3000.00", json!({ "tenure_days": 400, "avg_amount": "1000", "recent_returns": 6 })).await;
        assert_eq!((plain["flags"].clone(), plain["risk_level"].clone(), plain["require_reason"].clone()), (json!([]), json!("low"), json!(false)), "{plain}");
        let unknown = submit_with("P-3", "9000.00", json!({ "tenure_days": 400, "avg_amount": "0" })).await;
        assert_eq!(unknown["flags"], json!([]), "division by zero fires nothing: {unknown}");
        let watched = submit_with("P-4", "10.00", json!({ "payee": "Mallory", "tenure_days": 400 })).await;
        assert_eq!(watched["risk_level"], "critical");

        // require_reason: a decision without a reason code is refused, with one it is taken.
        claim(&app, &rita, &both).await;
        let (status, error) = decide(&app, &rita, &both, json!({ "decision": "reject", "reason": "free text is not enough" })).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{error}");
        assert_eq!(error["error"]["details"]["field"], "reason_codes");
        let (status, error) = decide(&app, &rita, &both, json!({ "decision": "approve" })).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "approvals too: {error}");
        let (status, decided) = decide(&app, &rita, &both, json!({ "decision": "reject", "reason_codes": ["NSF"] })).await;
        assert_eq!(status, StatusCode::OK, "{decided}");
        claim(&app, &rita, &plain).await;
        let (status, _) = decide(&app, &rita, &plain, json!({ "decision": "approve" })).await;
        assert_eq!(status, StatusCode::OK, "no reason required where the policy does not ask");
    }
}
