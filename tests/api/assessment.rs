//! Case assessment pipelines end to end, against a local OpenAI-compatible model server: a case of
//! a type with an assessment pipeline waits in `assessing` (202), the pipeline's `cases.assess`
//! step routes it by the policy, a failing model sends it to people without losing it, and every
//! model call's tokens and cost are reported per task and per case.

use std::time::Duration;

use docket::app::Role as ProcessRole;
use docket::auth::Role;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::on_both_backends;
use crate::support::{Login, TestApp};

/// An OpenAI-compatible chat endpoint. Model `broken` always fails with a 500; otherwise a prompt
/// containing `CRITIC` gets the critic's verdict, and any other prompt a recommendation, confident
/// unless the prompt mentions `doubtful`. Every answer uses 12 prompt and 5 completion tokens.
async fn model_server() -> String {
    use axum::Json;
    use axum::http::StatusCode as Status;
    use axum::routing::post;
    let app = axum::Router::new().route(
        "/v1/chat/completions",
        post(|Json(request): Json<Value>| async move {
            if request["model"] == "broken" {
                return (
                    Status::INTERNAL_SERVER_ERROR,
                    Json(json!({ "error": { "message": "model overloaded" } })),
                );
            }
            let prompt = request["messages"][0]["content"].as_str().unwrap_or_default();
            let doubtful = prompt.contains("doubtful");
            let answer = if prompt.contains("CRITIC") {
                json!({ "agree": true, "confidence": if doubtful { 0.55 } else { 0.93 } })
            } else {
                json!({
                    "recommendation": "approve",
                    "confidence": 0.9,
                    "summary": "Account in good standing; similar cheques were paid.",
                    "factors": { "account_age": 0.6, "amount_vs_history": -0.1 }
                })
            };
            (
                Status::OK,
                Json(json!({
                    "id": "chatcmpl-1", "object": "chat.completion", "model": request["model"],
                    "choices": [{ "index": 0, "finish_reason": "stop",
                                  "message": { "role": "assistant", "content": answer.to_string() } }],
                    "usage": { "prompt_tokens": 12, "completion_tokens": 5, "total_tokens": 17 }
                })),
            )
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}/v1", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    base
}

/// Retrieve similar decisions, recommend, criticise, assess: the pipeline the issue describes.
fn assessment_pipeline(model: &str) -> Value {
    json!({ "pipeline": [
        { "id": "similar", "uses": "knowledge.search", "with": { "collection": "decisions", "query": "cheque ${params.case.reference}", "k": 3 } },
        { "id": "recommend", "uses": "llm.chat", "retry": 1, "with": { "model": model, "response_format": "json", "messages": [
            { "role": "user", "content": "Recommend approve or reject for cheque ${params.case.reference} of ${params.case.amount} ${params.case.currency}: ${params.case.subject}. Similar: ${steps.similar.results}" }
        ] } },
        { "id": "critic", "uses": "llm.chat", "retry": 1, "with": { "model": model, "response_format": "json", "messages": [
            { "role": "user", "content": "CRITIC: check ${steps.recommend.text} against ${params.case.subject}" }
        ] } },
        { "id": "assess", "uses": "cases.assess", "with": {
            "case_id": "${params.case.id}",
            "recommendation": "${steps.recommend.json.recommendation}",
            "confidence": "${steps.critic.json.confidence}",
            "summary": "${steps.recommend.json.summary}",
            "factors": "${steps.recommend.json.factors}",
            "citations": [{ "document_id": "policy-cheques", "chunk_id": "c-3", "snippet": "Cheques under 1000 from accounts older than a year are paid." }]
        } }
    ] })
}

async fn create_task(app: &TestApp, who: &Login, payload: Value) -> Value {
    let (status, task) = app
        .call(
            Method::POST,
            "/api/v1/tasks",
            &who.access_token,
            Some(json!({ "title": "Assess", "schedule_kind": "manual", "payload": payload, "max_retries": 1 })),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{task}");
    task
}

async fn attach(
    app: &TestApp,
    admin: &Login,
    case_type: &str,
    task_id: &str,
) -> (StatusCode, Value) {
    app.call(
        Method::PUT,
        &format!("/api/v1/case-types/{case_type}/assessment"),
        &admin.access_token,
        Some(json!({ "task_id": task_id })),
    )
    .await
}

async fn submit(
    app: &TestApp,
    who: &Login,
    reference: &str,
    subject: Value,
) -> (StatusCode, Value) {
    app.call(
        Method::POST,
        "/api/v1/cases",
        &who.access_token,
        Some(json!({ "type": "cheque", "reference": reference, "amount": "120.00", "currency": "USD", "subject": subject })),
    )
    .await
}

async fn case(app: &TestApp, who: &Login, id: &str) -> Value {
    let (status, case) = app
        .call(
            Method::GET,
            &format!("/api/v1/cases/{id}"),
            &who.access_token,
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{case}");
    case
}

/// Polls the case until it leaves `assessing`, as a client would.
async fn routed(app: &TestApp, who: &Login, id: &str) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let case = case(app, who, id).await;
        if case["state"] != "assessing" {
            return case;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "still assessing: {case}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn actions(case: &Value) -> Vec<&str> {
    case["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["action"].as_str().unwrap())
        .collect()
}

on_both_backends! {
    async fn an_assessment_pipeline_routes_each_new_case_by_the_policy(backend) {
        let llm = model_server().await;
        let (embeddings, _) = crate::knowledge::embedding_server(0, false).await;
        let env = [("LLM_BASE_URL", llm.as_str()), ("LLM_MODEL", "tiny"), ("LLM_PRICES", "tiny=1/2,tiny-embed=0.5"),
                   ("EMBEDDING_BASE_URL", embeddings.as_str()), ("EMBEDDING_MODEL", "tiny-embed"),
                   ("AI_ENABLED", "true"), ("AI_CONFIDENCE_THRESHOLD", "0.8")];
        let Some(app) = TestApp::spawn_with(backend, ProcessRole::All, &env).await else { return };
        let admin = app.sign_in("acme", "ada@acme.test", Role::Admin).await;
        let rita = app.sign_in("acme", "rita@acme.test", Role::Reviewer).await;
        let (status, body) = app.call(Method::POST, "/api/v1/collections", &admin.access_token, Some(json!({ "name": "decisions" }))).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");

        // Attaching: the task must be the tenant's and hold a pipeline; reviewers may not.
        let plain = create_task(&app, &admin, json!({ "note": "no pipeline" })).await;
        let (status, body) = attach(&app, &admin, "cheque", "no-such-task").await;
        assert_eq!((status, body["error"]["details"]["field"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("task_id")), "{body}");
        let (status, body) = attach(&app, &admin, "cheque", plain["id"].as_str().unwrap()).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
        let task = create_task(&app, &admin, assessment_pipeline("tiny")).await;
        let task_id = task["id"].as_str().unwrap();
        let (status, _) = attach(&app, &rita, "cheque", task_id).await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        let (status, attached) = attach(&app, &admin, "cheque", task_id).await;
        assert_eq!(status, StatusCode::OK, "{attached}");
        let (status, shown) = app.call(Method::GET, "/api/v1/case-types/cheque/assessment", &admin.access_token, None).await;
        assert_eq!((status, &shown["task_id"]), (StatusCode::OK, &json!(task_id)));

        // A confident assessment: decided automatically, as the policy allows.
        let (status, waiting) = submit(&app, &rita, "CHQ-1", json!({ "account_age_days": 900 })).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{waiting}");
        assert_eq!(waiting["state"], "assessing");
        let job_id = waiting["assessment_job_id"].as_str().expect("the job to follow").to_owned();
        let confident = routed(&app, &rita, waiting["id"].as_str().unwrap()).await;
        assert_eq!(confident["state"], "auto_approved", "{confident}");
        assert_eq!(confident["ai_assessment"]["recommendation"], "approve");
        assert_eq!(confident["ai_assessment"]["confidence"], 0.93, "the critic's confidence");
        assert_eq!(confident["ai_assessment"]["factors"]["account_age"], 0.6);
        assert_eq!(confident["ai_assessment"]["summary"], "Account in good standing; similar cheques were paid.");
        assert_eq!(confident["ai_assessment"]["citations"][0]["document_id"], "policy-cheques");
        assert_eq!(actions(&confident), ["created", "assessment_requested", "assessed", "routed"]);
        assert_eq!(confident["history"][2]["details"]["job_id"], job_id.as_str());
        let job = app.wait_for_job(&admin.tenant_id, &job_id, "succeeded").await;
        assert_eq!(job.payload["payload"]["params"]["case"]["reference"], "CHQ-1");

        // Repeating the step after success changes nothing; another job cannot assess it.
        let ai: docket_rules::policy::engine::AiAssessment = serde_json::from_value(json!({ "recommendation": "reject", "confidence": 1.0 })).unwrap();
        let again = docket::cases::assessment::assess(&app.state, &admin.tenant_id, &job_id, confident["id"].as_str().unwrap(), ai.clone()).await.unwrap();
        assert_eq!((again.state.as_str(), again.decision.as_deref()), ("auto_approved", Some("approve")));
        let other = docket::cases::assessment::assess(&app.state, &admin.tenant_id, "another-job", confident["id"].as_str().unwrap(), ai).await;
        assert!(matches!(other, Err(docket::cases::CaseError::Forbidden { code: "not_assessment_job", .. })), "{other:?}");
        assert_eq!(actions(&case(&app, &rita, confident["id"].as_str().unwrap()).await).len(), 4);

        // A doubtful one goes to people, with the assessment for them to read and the policy's
        // risk and flags from it.
        let policy = json!({ "ai": { "enabled": true, "confidence_threshold": 0.8 }, "rules": [
            { "name": "doubtful AI", "when": { "field": "ai.confidence", "op": "<", "value": 0.7 },
              "then": { "add_flag": "LOW_AI_CONFIDENCE", "risk_level": "high" } }] });
        let (status, body) = app.call(Method::PUT, "/api/v1/policy", &admin.access_token, Some(policy)).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let (status, waiting) = submit(&app, &rita, "CHQ-2", json!({ "note": "doubtful signature" })).await;
        assert_eq!(status, StatusCode::ACCEPTED);
        let doubtful = routed(&app, &rita, waiting["id"].as_str().unwrap()).await;
        assert_eq!(doubtful["state"], "queued", "{doubtful}");
        assert_eq!(doubtful["ai_assessment"]["confidence"], 0.55);
        assert_eq!((doubtful["risk_level"].as_str(), &doubtful["flags"]), (Some("high"), &json!(["LOW_AI_CONFIDENCE"])), "{doubtful}");
        let (status, again) = app.call(Method::GET, "/api/v1/cases?state=assessing", &rita.access_token, None).await;
        assert_eq!((status, again["items"].as_array().unwrap().len()), (StatusCode::OK, 0));

        // Without the pipeline, cases are routed at once again.
        let (status, _) = app.call(Method::DELETE, "/api/v1/case-types/cheque/assessment", &admin.access_token, None).await;
        assert_eq!(status, StatusCode::NO_CONTENT);
        let (status, direct) = submit(&app, &rita, "CHQ-3", json!({})).await;
        assert_eq!((status, direct["state"].as_str()), (StatusCode::CREATED, Some("queued")), "{direct}");

        // Tokens and cost per case and per task. Each assessed case made two chat calls (12 × 1 +
        // 5 × 2 micros each) and embedded its search query (10 tokens × 0.5 micros).
        let (status, by_case) = app.call(Method::GET, "/api/v1/llm/usage?group_by=case", &admin.access_token, None).await;
        assert_eq!(status, StatusCode::OK, "{by_case}");
        let items = by_case["items"].as_array().unwrap();
        assert_eq!(items.len(), 2, "{by_case}");
        for item in items {
            assert!([&confident["id"], &doubtful["id"]].contains(&&item["key"]), "{item}");
            assert_eq!((item["requests"].as_i64(), item["total_tokens"].as_i64(), item["cost_micros"].as_i64()), (Some(3), Some(44), Some(49)), "{item}");
        }
        assert_eq!(by_case["total"]["cost_micros"], 98);
        let (_, by_task) = app.call(Method::GET, "/api/v1/llm/usage?group_by=task", &admin.access_token, None).await;
        assert_eq!(by_task["items"][0]["key"], task_id);
        assert_eq!(by_task["items"][0]["requests"], 6);
        let response = app.client.get(app.url("/api/v1/llm/usage?group_by=model&format=csv")).bearer_auth(&admin.access_token).send().await.unwrap();
        assert_eq!(response.headers()["content-type"], "text/csv; charset=utf-8");
        let csv = response.text().await.unwrap();
        let mut rows: Vec<&str> = csv.lines().collect();
        rows[1..].sort_unstable();
        assert_eq!(rows, [
            "key,requests,prompt_tokens,completion_tokens,total_tokens,cost_micros,unpriced_requests",
            "tiny,4,48,20,68,88,0",
            "tiny-embed,2,20,0,20,10,0",
        ]);
        let (status, _) = app.call(Method::GET, "/api/v1/llm/usage", &rita.access_token, None).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "supervisors and admins only");
        let (status, _) = app.call(Method::GET, "/api/v1/llm/usage?group_by=colour", &admin.access_token, None).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    }

    async fn a_failing_or_silent_pipeline_never_loses_the_case(backend) {
        let llm = model_server().await;
        let (embeddings, _) = crate::knowledge::embedding_server(0, false).await;
        let env = [("LLM_BASE_URL", llm.as_str()), ("EMBEDDING_BASE_URL", embeddings.as_str()), ("AI_ENABLED", "true"),
                   ("WORKER_BACKOFF_MAX_DELAY", "0.2")];
        let Some(app) = TestApp::spawn_with(backend, ProcessRole::All, &env).await else { return };
        let admin = app.sign_in("acme", "ada@acme.test", Role::Admin).await;
        let (status, body) = app.call(Method::POST, "/api/v1/collections", &admin.access_token, Some(json!({ "name": "decisions" }))).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        let rita = app.sign_in("acme", "rita@acme.test", Role::Reviewer).await;
        let sam = app.sign_in("acme", "sam@acme.test", Role::Reviewer).await;

        // The model fails every time: the step retries, the job dies, and the sweep sends the case
        // to people.
        let task = create_task(&app, &admin, assessment_pipeline("broken")).await;
        attach(&app, &admin, "cheque", task["id"].as_str().unwrap()).await;
        let (status, waiting) = submit(&app, &rita, "CHQ-1", json!({})).await;
        assert_eq!(status, StatusCode::ACCEPTED);
        let job_id = waiting["assessment_job_id"].as_str().unwrap();
        app.wait_for_job(&admin.tenant_id, job_id, "dead").await;
        let steps = docket::pipeline::steps::load(&app.state.store, job_id).await.unwrap();
        let ran: Vec<(&str, u32)> = steps.iter().map(|s| (s.step_id.as_str(), s.attempts)).collect();
        assert_eq!(ran, [("similar", 1), ("recommend", 2)], "the model step retried once, and nothing after it");
        let swept = docket::review::sweep(&app.state, docket::clock::now()).await.unwrap();
        assert_eq!(swept.assessments_failed, 1);
        let failed = case(&app, &rita, waiting["id"].as_str().unwrap()).await;
        assert_eq!(failed["state"], "queued", "{failed}");
        assert!(failed["ai_assessment"].is_null());
        assert_eq!(actions(&failed), ["created", "assessment_requested", "assessment_failed", "routed"]);
        let noted = &failed["history"][2];
        assert_eq!(noted["details"]["job_status"], "dead");
        let error = noted["details"]["error"].as_str().unwrap();
        assert!(error.contains("step recommend (llm.chat) failed") && error.contains("model overloaded")
                && error.contains("after 2 attempts"), "{error}");
        let (status, claimed) = app.call(Method::POST, "/api/v1/reviews/next", &sam.access_token, None).await;
        assert_eq!((status, &claimed["id"]), (StatusCode::OK, &failed["id"]), "people can take it");
        assert_eq!(docket::review::sweep(&app.state, docket::clock::now()).await.unwrap().assessments_failed, 0, "once");

        // A pipeline that never answers: the case waits until ASSESSMENT_TIMEOUT_SECONDS, then goes to people.
        let slow = create_task(&app, &admin, json!({ "pipeline": [{ "id": "pause", "uses": "wait", "with": { "seconds": 3600 } }] })).await;
        attach(&app, &admin, "cheque", slow["id"].as_str().unwrap()).await;
        let keyed = || {
            app.client.post(app.url("/api/v1/cases")).bearer_auth(&rita.access_token).header("Idempotency-Key", "chq-2")
                .json(&json!({ "type": "cheque", "reference": "CHQ-2", "amount": "120.00", "currency": "USD" }))
        };
        let first = keyed().send().await.unwrap();
        assert_eq!(first.status(), StatusCode::ACCEPTED);
        let waiting: Value = first.json().await.unwrap();
        let repeat = keyed().send().await.unwrap();
        assert_eq!(repeat.status(), StatusCode::ACCEPTED, "a repeat while it waits is still 202");
        assert_eq!(repeat.json::<Value>().await.unwrap()["id"], waiting["id"]);
        app.wait_for_job(&admin.tenant_id, waiting["assessment_job_id"].as_str().unwrap(), "waiting").await;
        let now = docket::clock::now();
        assert_eq!(docket::review::sweep(&app.state, now).await.unwrap().assessments_failed, 0, "not yet");
        let later = now + chrono::Duration::minutes(11);
        assert_eq!(docket::review::sweep(&app.state, later).await.unwrap().assessments_failed, 1);
        let late = case(&app, &rita, waiting["id"].as_str().unwrap()).await;
        assert_eq!(late["state"], "queued");
        let reason = late["history"][2]["reason"].as_str().unwrap();
        assert!(reason.contains("no assessment within 600 s"), "{reason}");

        // A case waiting for its assessment can be withdrawn, which cancels its pipeline's job; the
        // sweep then leaves it alone.
        let (_, withdrawn) = submit(&app, &rita, "CHQ-4", json!({})).await;
        let withdrawn_job = withdrawn["assessment_job_id"].as_str().unwrap();
        app.wait_for_job(&admin.tenant_id, withdrawn_job, "waiting").await;
        let cancel = format!("/api/v1/cases/{}/cancel", withdrawn["id"].as_str().unwrap());
        let (status, cancelled) = app.call(Method::POST, &cancel, &rita.access_token, Some(json!({ "reason": "sent twice" }))).await;
        assert_eq!((status, cancelled["state"].as_str()), (StatusCode::OK, Some("cancelled")), "{cancelled}");
        let job = docket::queue::get(&app.state.store, &admin.tenant_id, withdrawn_job).await.unwrap().unwrap();
        assert_eq!(job.status, "cancelled", "the pipeline stops with the case");
        let cancelled = case(&app, &rita, withdrawn["id"].as_str().unwrap()).await;
        let last = cancelled["history"].as_array().unwrap().last().unwrap().clone();
        assert_eq!((&last["action"], &last["details"]["assessment_job_cancelled"]), (&json!("cancelled"), &json!(withdrawn_job)), "{last}");
        let much_later = later + chrono::Duration::minutes(11);
        assert_eq!(docket::review::sweep(&app.state, much_later).await.unwrap().assessments_failed, 0, "cancelled stays cancelled");

        // A pipeline that ends without assessing.
        let silent = create_task(&app, &admin, json!({ "pipeline": [{ "id": "note", "uses": "events.publish", "with": { "topic": "looked" } }] })).await;
        attach(&app, &admin, "cheque", silent["id"].as_str().unwrap()).await;
        let (_, waiting) = submit(&app, &rita, "CHQ-3", json!({})).await;
        app.wait_for_job(&admin.tenant_id, waiting["assessment_job_id"].as_str().unwrap(), "succeeded").await;
        assert_eq!(docket::review::sweep(&app.state, docket::clock::now()).await.unwrap().assessments_failed, 1);
        let silent_case = case(&app, &rita, waiting["id"].as_str().unwrap()).await;
        assert_eq!(silent_case["state"], "queued");
        assert!(silent_case["history"][2]["reason"].as_str().unwrap().contains("without assessing"));
    }

    async fn cases_assess_refuses_what_it_may_not_assess(backend) {
        let Some(app) = TestApp::spawn(backend).await else { return };
        let sue = app.sign_in("acme", "sue@acme.test", Role::Supervisor).await;
        let rita = app.sign_in("acme", "rita@acme.test", Role::Reviewer).await;
        let gus = app.sign_in("globex", "gus@globex.test", Role::Reviewer).await;
        let (status, queued) = submit(&app, &rita, "CHQ-1", json!({})).await;
        assert_eq!((status, queued["state"].as_str()), (StatusCode::CREATED, Some("queued")));
        let (_, foreign) = submit(&app, &gus, "CHQ-1", json!({})).await;
        let step = |id: &str, case_id: &Value, confidence: f64| json!({
            "id": id, "uses": "cases.assess", "on_error": "continue",
            "with": { "case_id": case_id, "recommendation": "approve", "confidence": confidence }
        });
        let task = create_task(&app, &sue, json!({ "pipeline": [
            step("queued", &queued["id"], 0.9),
            step("foreign", &foreign["id"], 0.9),
            step("unsure", &queued["id"], 1.5),
        ] })).await;
        let (status, job) = app.call(Method::POST, &format!("/api/v1/tasks/{}/run_now", task["id"].as_str().unwrap()), &sue.access_token, None).await;
        assert_eq!(status, StatusCode::ACCEPTED);
        app.wait_for_job(&sue.tenant_id, job["id"].as_str().unwrap(), "succeeded").await;
        let steps = docket::pipeline::steps::load(&app.state.store, job["id"].as_str().unwrap()).await.unwrap();
        let errors: Vec<&str> = steps.iter().map(|s| s.error.as_deref().unwrap_or_default()).collect();
        assert!(errors[0].contains("Only the assessment pipeline's job enqueued for this case"), "{errors:?}");
        assert_eq!(errors[1], "no such case", "another tenant's case does not exist here");
        assert!(errors[2].contains("confidence must be a number from 0 to 1"), "{errors:?}");
        assert!(steps.iter().all(|s| s.attempts == 1), "permanent errors are not retried");
        let untouched = case(&app, &rita, queued["id"].as_str().unwrap()).await;
        assert!(untouched["ai_assessment"].is_null());
        assert_eq!(actions(&untouched), ["created", "routed"]);
    }
}
