//! The policy language through the HTTP API: risk level, flags, `require_reason`, computed fields
//! and `between`, as `PUT /policy` validates them and `POST /policy/simulate` shows them.

use docket::auth::Role;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::on_both_backends;
use crate::support::TestApp;

/// The worked example of docs/policy.md.
fn unusual_amounts() -> Value {
    json!({
        "defaults": { "risk_level": "low" },
        "rules": [
            { "name": "new account", "when": { "field": "subject.tenure_days", "op": "<", "value": 30 },
              "then": { "add_flag": "NEW_ACCOUNT", "risk_level": "high" } },
            { "name": "unusual amount", "when": { "field": "amount / subject.avg_amount", "op": ">", "value": 3 },
              "then": { "add_flag": "UNUSUAL_AMOUNT", "risk_level": "medium", "require_reason": true } },
            { "name": "mid-sized", "when": { "field": "amount", "op": "between", "value": ["500", "1000"] },
              "then": { "add_flag": ["MID_SIZED", "NEW_ACCOUNT"] } }
        ]
    })
}

fn payment(reference: &str, amount: &str, subject: Value) -> Value {
    json!({ "type": "payment", "reference": reference, "amount": amount, "currency": "EUR", "subject": subject })
}

on_both_backends! {
    async fn simulation_shows_risk_level_flags_and_require_reason(backend) {
        let Some(app) = TestApp::spawn(backend).await else { return };
        let admin = app.sign_in("acme", "ada@acme.test", Role::Admin).await;
        let clerk = app.sign_in("acme", "carl@acme.test", Role::Reviewer).await;
        let (status, stored) = app.call(Method::POST, "/api/v1/cases", &clerk.access_token, Some(
            payment("STORED-1", "900.00", json!({ "tenure_days": 12, "avg_amount": "200" })),
        )).await;
        assert_eq!(status, StatusCode::CREATED, "{stored}");

        let (status, simulated) = app.call(Method::POST, "/api/v1/policy/simulate", &admin.access_token, Some(json!({
            "policy": unusual_amounts(),
            "cases": [
                payment("ROUTINE", "150.00", json!({ "tenure_days": 400, "avg_amount": 200 })),
                payment("NO-HISTORY", "150.00", json!({ "tenure_days": 400, "avg_amount": 0 })),
            ],
            "case_ids": [stored["id"]],
        }))).await;
        assert_eq!(status, StatusCode::OK, "{simulated}");
        let outcome = |i: usize| simulated["results"][i]["outcome"].clone();

        let routine = outcome(0);
        assert_eq!(routine["risk_level"], "low", "{routine}");
        assert_eq!(routine["flags"], json!([]));
        assert_eq!(routine["require_reason"], false);

        // Dividing by an average of 0 makes the comparison false instead of failing the request.
        let no_history = outcome(1);
        assert_eq!(no_history["risk_level"], "low", "{no_history}");
        assert_eq!(no_history["flags"], json!([]));

        // The stored case's subject carries the account context.
        assert_eq!(simulated["results"][2]["case_id"], stored["id"]);
        let unusual = outcome(2);
        assert_eq!(unusual["risk_level"], "high", "the first rule to set it wins: {unusual}");
        assert_eq!(unusual["flags"], json!(["NEW_ACCOUNT", "UNUSUAL_AMOUNT", "MID_SIZED"]));
        assert_eq!(unusual["require_reason"], true);
        assert_eq!(unusual["fired"][1]["because"][0], "amount 900.00 / subject.avg_amount 200 = 4.5 > 3");
        assert_eq!(unusual["fired"][2]["because"][0], "amount 900.00 between 500 and 1000");
        assert_eq!(unusual["fired"][2]["effects"]["add_flag"], json!(["MID_SIZED", "NEW_ACCOUNT"]));
    }

    async fn new_policy_keys_are_validated_stored_and_returned(backend) {
        let Some(app) = TestApp::spawn(backend).await else { return };
        let admin = app.sign_in("acme", "ada@acme.test", Role::Admin).await;

        let (_, current) = app.call(Method::GET, "/api/v1/policy", &admin.access_token, None).await;
        assert_eq!(current["document"]["defaults"]["risk_level"], "low", "{current}");
        assert_eq!(current["document"]["defaults"]["require_reason"], false);

        let mut bad_flag = unusual_amounts();
        bad_flag["rules"][2]["then"]["add_flag"] = json!(["MID_SIZED", "new account"]);
        let (status, error) = app.call(Method::PUT, "/api/v1/policy", &admin.access_token, Some(bad_flag)).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{error}");
        assert_eq!(error["error"]["code"], "invalid_policy");
        assert_eq!(error["error"]["details"]["path"], "/rules/2/then/add_flag/1", "{error}");

        let mut two_operators = unusual_amounts();
        two_operators["rules"][1]["when"]["field"] = json!("amount / subject.avg_amount * 2");
        let (status, error) = app.call(Method::POST, "/api/v1/policy/simulate", &admin.access_token, Some(json!({
            "policy": two_operators, "cases": [],
        }))).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{error}");
        assert_eq!(error["error"]["details"]["path"], "/policy/rules/1/when/field", "{error}");
        assert!(error["error"]["message"].as_str().unwrap().contains("only one is supported"), "{error}");

        let mut upside_down = unusual_amounts();
        upside_down["rules"][2]["when"]["value"] = json!(["1000", 500]);
        let (status, error) = app.call(Method::PUT, "/api/v1/policy", &admin.access_token, Some(upside_down)).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{error}");
        assert_eq!(error["error"]["details"]["path"], "/rules/2/when/value", "{error}");

        let (status, saved) = app.call(Method::PUT, "/api/v1/policy", &admin.access_token, Some(unusual_amounts())).await;
        assert_eq!(status, StatusCode::OK, "{saved}");
        let (_, current) = app.call(Method::GET, "/api/v1/policy", &admin.access_token, None).await;
        assert_eq!(current["version"], saved["version"]);
        let document = &current["document"];
        assert_eq!(document["rules"][0]["then"], json!({ "add_flag": "NEW_ACCOUNT", "risk_level": "high" }));
        assert_eq!(document["rules"][1]["when"]["field"], "amount / subject.avg_amount");
        assert_eq!(document["rules"][1]["then"]["require_reason"], true);
        assert_eq!(document["rules"][2]["when"], unusual_amounts()["rules"][2]["when"]);
        assert_eq!(document["rules"][2]["then"]["add_flag"], json!(["MID_SIZED", "NEW_ACCOUNT"]));

        // Without a draft, simulation uses the stored version.
        let (status, simulated) = app.call(Method::POST, "/api/v1/policy/simulate", &admin.access_token, Some(json!({
            "cases": [payment("NEW", "40.00", json!({ "tenure_days": 3 }))],
        }))).await;
        assert_eq!(status, StatusCode::OK, "{simulated}");
        assert_eq!(simulated["results"][0]["outcome"]["risk_level"], "high");
        assert_eq!(simulated["results"][0]["outcome"]["flags"], json!(["NEW_ACCOUNT"]));
        assert_eq!(simulated["results"][0]["outcome"]["require_reason"], false);
    }
}
