//! Pipelines through the API: validation, tools, conditions, suspension for reviews and timers,
//! resuming without repeating steps.

use std::time::Duration;

use docket::app::Role as ProcessRole;
use docket::auth::Role;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::on_both_backends;
use crate::support::{Login, TestApp};

async fn create_task(app: &TestApp, who: &Login, payload: Value) -> (StatusCode, Value) {
    app.call(
        Method::POST,
        "/api/v1/tasks",
        &who.access_token,
        Some(json!({
            "title": "Pipeline", "schedule_kind": "manual", "payload": payload
        })),
    )
    .await
}

async fn run_now(app: &TestApp, who: &Login, task: &Value) -> String {
    let (status, job) = app
        .call(
            Method::POST,
            &format!("/api/v1/tasks/{}/run_now", task["id"].as_str().unwrap()),
            &who.access_token,
            None,
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{job}");
    job["id"].as_str().unwrap().to_owned()
}

async fn steps_of(app: &TestApp, who: &Login, job_id: &str) -> Vec<Value> {
    let (_, runs) = app
        .call(
            Method::GET,
            &format!("/api/v1/runs?job_id={job_id}"),
            &who.access_token,
            None,
        )
        .await;
    let run_id = runs["items"][0]["id"].as_str().unwrap().to_owned();
    let (status, run) = app
        .call(
            Method::GET,
            &format!("/api/v1/runs/{run_id}"),
            &who.access_token,
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{run}");
    run["steps"].as_array().unwrap().clone()
}

async fn events_on(app: &TestApp, tenant: &str, topic: &str) -> i64 {
    match &app.state.store {
        docket::store::Store::Sqlite(pool, _) => {
            sqlx::query_scalar("SELECT COUNT(*) FROM events WHERE tenant_id = $1 AND topic = $2")
                .bind(tenant)
                .bind(topic)
                .fetch_one(pool)
                .await
                .unwrap()
        }
        docket::store::Store::Postgres(pool) => {
            sqlx::query_scalar("SELECT COUNT(*) FROM events WHERE tenant_id = $1 AND topic = $2")
                .bind(tenant)
                .bind(topic)
                .fetch_one(pool)
                .await
                .unwrap()
        }
    }
}

on_both_backends! {
    async fn pipelines_are_validated_when_tasks_are_saved(backend) {
        let Some(app) = TestApp::spawn(backend).await else { return };
        let sue = app.sign_in("acme", "sue@acme.test", Role::Supervisor).await;
        let step = |extra: Value| {
            let mut s = json!({ "id": "a", "uses": "events.publish", "with": { "topic": "x" } });
            s.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
            s
        };
        for (pipeline, field) in [
            (json!([step(json!({ "uses": "shell.exec" }))]), "payload.pipeline[0].uses"),
            (json!([step(json!({ "with": { "topic": "x", "colour": "red" } }))]), "payload.pipeline[0].with.colour"),
            (json!([step(json!({ "with": { "payload": {} } }))]), "payload.pipeline[0].with.topic"),
            (json!([step(json!({ "if": "steps.[" }))]), "payload.pipeline[0].if"),
            // Parsed unbounded, this overflowed the stack and aborted the process.
            (json!([step(json!({ "if": format!("{}params", "!".repeat(3000)) }))]), "payload.pipeline[0].if"),
            (json!([step(json!({})), step(json!({ "id": "b", "if": format!("{}params", "!".repeat(40)) }))]), "payload.pipeline[1].if"),
            (json!([step(json!({ "with": { "topic": "${steps.later.x}" } })), step(json!({ "id": "later" }))]), "payload.pipeline[0].with"),
            (json!([step(json!({ "with": { "topic": "${env.HOME}" } }))]), "payload.pipeline[0].with"),
            (json!([step(json!({ "with": { "topic": "${params.x" } }))]), "payload.pipeline[0].with"),
            (json!([step(json!({})), step(json!({}))]), "payload.pipeline[1].id"),
            (json!([step(json!({ "on_error": "ignore" }))]), "payload.pipeline[0].on_error"),
            (json!([step(json!({ "retry": 99 }))]), "payload.pipeline[0].retry"),
            (json!([step(json!({ "colour": 1 }))]), "payload.pipeline[0].colour"),
            (json!([]), "payload.pipeline"),
        ] {
            let (status, body) = create_task(&app, &sue, json!({ "pipeline": pipeline })).await;
            assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{pipeline}: {body}");
            assert_eq!(body["error"]["details"]["field"], field, "{pipeline}: {body}");
        }
        let (status, _) = create_task(&app, &sue, json!({ "pipeline": [step(json!({}))] })).await;
        assert_eq!(status, StatusCode::CREATED);

        let (status, tools) = app.call(Method::GET, "/api/v1/tools", &sue.access_token, None).await;
        assert_eq!(status, StatusCode::OK);
        let review = tools["items"].as_array().unwrap().iter().find(|t| t["name"] == "review.request").expect("review.request listed");
        assert!(review["input_schema"]["properties"]["type"].is_object(), "{review}");
        assert!(tools["items"].as_array().unwrap().iter().any(|t| t["name"] == "wait"));
    }

    async fn a_stored_condition_beyond_the_bounds_fails_its_job_not_the_process(backend) {
        let Some(app) = TestApp::spawn(backend).await else { return };
        let sue = app.sign_in("acme", "sue@acme.test", Role::Supervisor).await;
        let (_, task) = create_task(&app, &sue, json!({ "pipeline": [
            { "id": "a", "uses": "events.publish", "if": "params.go", "with": { "topic": "x" } }
        ] })).await;
        // As if saved before the bounds existed.
        let bomb = json!({ "pipeline": [
            { "id": "a", "uses": "events.publish", "if": format!("{}params", "!".repeat(3000)), "with": { "topic": "x" } }
        ] }).to_string();
        let task_id = task["id"].as_str().unwrap();
        match &app.state.store {
            docket::store::Store::Sqlite(pool, _) => {
                sqlx::query("UPDATE tasks SET payload = $1 WHERE id = $2").bind(&bomb).bind(task_id).execute(pool).await.unwrap();
            }
            docket::store::Store::Postgres(pool) => {
                sqlx::query("UPDATE tasks SET payload = $1 WHERE id = $2").bind(&bomb).bind(task_id).execute(pool).await.unwrap();
            }
        }
        let job_id = run_now(&app, &sue, &task).await;
        let job = app.wait_for_job(&sue.tenant_id, &job_id, "dead").await;
        let error = job.last_error.unwrap_or_default();
        assert!(error.contains("payload.pipeline[0].if") && error.contains("at most 1024"), "{error}");
        let (status, _) = app.call(Method::GET, "/health", &sue.access_token, None).await;
        assert_eq!(status, StatusCode::OK, "the process is still up");
    }

    async fn a_review_request_suspends_the_pipeline_until_people_decide(backend) {
        let Some(app) = TestApp::spawn(backend).await else { return };
        let sue = app.sign_in("acme", "sue@acme.test", Role::Supervisor).await;
        let rita = app.sign_in("acme", "rita@acme.test", Role::Reviewer).await;
        let (status, task) = create_task(&app, &sue, json!({
            "params": { "city": "Chisinau" },
            "pipeline": [
                { "id": "approve", "uses": "review.request", "with": { "type": "briefing", "subject": { "text": "Weather for ${params.city}" } }, "save_as": "approval" },
                { "id": "send", "uses": "events.publish", "if": "steps.approval.decision == 'approved'",
                  "with": { "topic": "briefing.sent", "payload": { "case": "${steps.approval.case_id}", "by": "${steps.approval.reviewers}" } } },
                { "id": "complain", "uses": "events.publish", "if": "steps.approval.decision == 'rejected'", "with": { "topic": "briefing.rejected" } }
            ]
        })).await;
        assert_eq!(status, StatusCode::CREATED, "{task}");
        let job_id = run_now(&app, &sue, &task).await;
        let waiting = app.wait_for_job(&sue.tenant_id, &job_id, "waiting").await;
        assert_eq!(waiting.attempts, 0, "suspending does not use up an attempt");

        let (status, case) = app.call(Method::POST, "/api/v1/reviews/next", &rita.access_token, None).await;
        assert_eq!(status, StatusCode::OK, "the pipeline's case is in the queue");
        assert_eq!(case["type"], "briefing");
        assert_eq!(case["subject"]["text"], "Weather for Chisinau");
        assert_eq!(case["submitted_by"], "system");
        let (status, decided) = app.call(Method::POST, &format!("/api/v1/cases/{}/decision", case["id"].as_str().unwrap()), &rita.access_token, Some(json!({ "decision": "approve" }))).await;
        assert_eq!(status, StatusCode::OK, "{decided}");

        let done = app.wait_for_job(&sue.tenant_id, &job_id, "succeeded").await;
        assert_eq!(done.attempts, 1);
        let steps = steps_of(&app, &sue, &job_id).await;
        let statuses: Vec<(&str, &str)> = steps.iter().map(|s| (s["id"].as_str().unwrap(), s["status"].as_str().unwrap())).collect();
        assert_eq!(statuses, [("approve", "succeeded"), ("send", "succeeded"), ("complain", "skipped")]);
        assert_eq!(steps[0]["output"]["decision"], "approved");
        assert_eq!(steps[0]["output"]["reviewers"], json!([format!("user:{}", rita.user_id)]));
        assert_eq!(steps[1]["input"]["payload"]["case"], case["id"]);
        assert_eq!(events_on(&app, &sue.tenant_id, "briefing.sent").await, 1);
        assert_eq!(events_on(&app, &sue.tenant_id, "briefing.rejected").await, 0);
        let (_, cases) = app.call(Method::GET, "/api/v1/cases?type=briefing", &sue.access_token, None).await;
        assert_eq!(cases["items"].as_array().unwrap().len(), 1, "one case, even though the job ran twice");

        // Under maker-checker both people are the reviewers; a returned case says so.
        let admin = app.sign_in("acme", "ada@acme.test", Role::Admin).await;
        let policy = json!({ "rules": [{ "name": "briefings need two", "when": { "field": "type", "op": "==", "value": "briefing" },
                                          "then": { "dual_control": true } }] });
        let (status, body) = app.call(Method::PUT, "/api/v1/policy", &admin.access_token, Some(policy)).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let job_id = run_now(&app, &sue, &task).await;
        app.wait_for_job(&sue.tenant_id, &job_id, "waiting").await;
        let bob = app.sign_in("acme", "bob@acme.test", Role::Reviewer).await;
        let (_, case) = app.call(Method::POST, "/api/v1/reviews/next", &rita.access_token, None).await;
        let id = case["id"].as_str().unwrap();
        let (_, proposed) = app.call(Method::POST, &format!("/api/v1/cases/{id}/decision"), &rita.access_token,
            Some(json!({ "decision": "return", "reason": "wrong city" }))).await;
        assert_eq!(proposed["state"], "pending_dual_control", "{proposed}");
        app.call(Method::POST, &format!("/api/v1/cases/{id}/claim"), &bob.access_token, None).await;
        let (status, confirmed) = app.call(Method::POST, &format!("/api/v1/cases/{id}/check"), &bob.access_token,
            Some(json!({ "verdict": "approve" }))).await;
        assert_eq!((status, confirmed["state"].as_str()), (StatusCode::OK, Some("returned")), "{confirmed}");
        app.wait_for_job(&sue.tenant_id, &job_id, "succeeded").await;
        let steps = steps_of(&app, &sue, &job_id).await;
        assert_eq!(steps[0]["output"]["decision"], "returned");
        assert_eq!(steps[0]["output"]["reason"], "wrong city");
        assert_eq!(steps[0]["output"]["reviewers"], json!([format!("user:{}", rita.user_id), format!("user:{}", bob.user_id)]));
        assert_eq!(steps[2]["status"], "skipped", "neither approved nor rejected");
    }

    async fn a_durable_wait_parks_the_job_and_earlier_steps_are_not_repeated(backend) {
        let Some(app) = TestApp::spawn(backend).await else { return };
        let sue = app.sign_in("acme", "sue@acme.test", Role::Supervisor).await;
        let (_, task) = create_task(&app, &sue, json!({ "pipeline": [
            { "id": "before", "uses": "events.publish", "with": { "topic": "step.before" } },
            { "id": "pause", "uses": "wait", "with": { "seconds": 1 } },
            { "id": "after", "uses": "events.publish", "with": { "topic": "step.after", "payload": { "first": "${steps.before.event_id}" } } }
        ] })).await;
        let job_id = run_now(&app, &sue, &task).await;
        let parked = app.wait_for_job(&sue.tenant_id, &job_id, "waiting").await;
        assert!(parked.run_at > docket::clock::now() - chrono::Duration::milliseconds(100), "due again when the wait ends");
        app.wait_for_job(&sue.tenant_id, &job_id, "succeeded").await;
        assert_eq!(events_on(&app, &sue.tenant_id, "step.before").await, 1, "not repeated on resume");
        assert_eq!(events_on(&app, &sue.tenant_id, "step.after").await, 1);
        let runs = docket::queue::runs_of(&app.state.store, &sue.tenant_id, &job_id).await.unwrap();
        let statuses: Vec<&str> = runs.iter().map(|r| r.status.as_str()).collect();
        assert_eq!(statuses, ["suspended", "succeeded"]);
    }

    async fn failing_steps_fail_the_job_or_continue(backend) {
        let Some(app) = TestApp::spawn(backend).await else { return };
        let sue = app.sign_in("acme", "sue@acme.test", Role::Supervisor).await;
        let pipeline = |on_error: &str| json!({ "pipeline": [
            { "id": "start", "uses": "tasks.run", "with": { "task_id": "no-such-task" }, "on_error": on_error, "retry": 2 },
            { "id": "next", "uses": "events.publish", "with": { "topic": format!("after.{on_error}") } }
        ] });
        let (_, failing) = create_task(&app, &sue, pipeline("fail")).await;
        let job_id = run_now(&app, &sue, &failing).await;
        let dead = app.wait_for_job(&sue.tenant_id, &job_id, "dead").await;
        let error = dead.last_error.unwrap();
        assert!(error.contains("step start (tasks.run) failed") && error.contains("no-such-task"), "{error}");
        assert_eq!(events_on(&app, &sue.tenant_id, "after.fail").await, 0);

        let (_, lenient) = create_task(&app, &sue, pipeline("continue")).await;
        let job_id = run_now(&app, &sue, &lenient).await;
        app.wait_for_job(&sue.tenant_id, &job_id, "succeeded").await;
        let steps = steps_of(&app, &sue, &job_id).await;
        assert_eq!(steps[0]["status"], "failed_continued");
        assert_eq!(steps[0]["attempts"], 1, "a permanent error is not retried");
        assert_eq!(events_on(&app, &sue.tenant_id, "after.continue").await, 1);
    }

    async fn a_resumed_job_starts_at_the_first_unfinished_step(backend) {
        // An API-only process: the job waits in the queue until the test starts a worker.
        let Some(app) = TestApp::spawn_with(backend, ProcessRole::Api, &[]).await else { return };
        let sue = app.sign_in("acme", "sue@acme.test", Role::Supervisor).await;
        let (_, task) = create_task(&app, &sue, json!({ "pipeline": [
            { "id": "first", "uses": "events.publish", "with": { "topic": "resume.first" } },
            { "id": "second", "uses": "events.publish", "with": { "topic": "resume.second", "payload": { "from": "${steps.first.event_id}" } } }
        ] })).await;
        let job_id = run_now(&app, &sue, &task).await;
        // As if an earlier worker finished the first step and then died.
        let record = docket::pipeline::steps::StepRecord {
            job_id: job_id.clone(),
            tenant_id: sue.tenant_id.clone(),
            step_id: "first".into(),
            position: 0,
            tool: "events.publish".into(),
            status: "succeeded".into(),
            attempts: 1,
            input: Some(json!({ "topic": "resume.first" })),
            output: Some(json!({ "event_id": "from-the-first-worker" })),
            error: None,
            resume_state: None,
            started_at: docket::clock::now(),
            finished_at: Some(docket::clock::now()),
            duration_seconds: None,
        };
        docket::pipeline::steps::save(&app.state.store, &record).await.unwrap();
        let worker = docket::queue::worker::Worker::new(app.state.queue.clone(), app.state.job_handlers.clone(), "rescuer").with_app(app.state.clone());
        let stop = tokio_util::sync::CancellationToken::new();
        let handle = tokio::spawn(worker.run(stop.clone(), Duration::from_secs(5)));
        app.wait_for_job(&sue.tenant_id, &job_id, "succeeded").await;
        stop.cancel();
        handle.await.unwrap();
        assert_eq!(events_on(&app, &sue.tenant_id, "resume.first").await, 0, "the finished step was not run again");
        assert_eq!(events_on(&app, &sue.tenant_id, "resume.second").await, 1);
        let steps = docket::pipeline::steps::load(&app.state.store, &job_id).await.unwrap();
        assert_eq!(steps[1].input.as_ref().unwrap()["payload"]["from"], "from-the-first-worker");
    }
}

/// A stand-in for an outside API and an OpenAI-compatible model server, on a free local port.
async fn outside_world() -> String {
    use axum::Json;
    use axum::routing::{get, post};
    let calls = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let app = axum::Router::new()
        .route("/weather", get(|| async { Json(json!({ "city": "Chisinau", "temp_c": 4 })) }))
        // Fails twice, then answers.
        .route(
            "/flaky",
            get(move || {
                let calls = calls.clone();
                async move {
                    if calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst) < 2 {
                        (axum::http::StatusCode::SERVICE_UNAVAILABLE, Json(json!({ "error": "busy" })))
                    } else {
                        (axum::http::StatusCode::OK, Json(json!({ "ok": true })))
                    }
                }
            }),
        )
        .route(
            "/v1/chat/completions",
            post(|Json(request): Json<Value>| async move {
                assert_eq!(request["stream"], false);
                let prompt = request["messages"][0]["content"].as_str().unwrap_or_default().to_owned();
                Json(json!({
                    "id": "chatcmpl-1", "object": "chat.completion", "model": request["model"],
                    "choices": [{ "index": 0, "finish_reason": "stop",
                                  "message": { "role": "assistant", "content": format!("Brief: {prompt}") } }],
                    "usage": { "prompt_tokens": 12, "completion_tokens": 5, "total_tokens": 17 }
                }))
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    base
}

fn weather_pipeline(base: &str) -> Value {
    json!({ "params": { "city": "Chisinau" }, "pipeline": [
        { "id": "weather", "uses": "http.request", "with": { "url": format!("{base}/weather?q=${{params.city}}") }, "retry": 1 },
        { "id": "brief", "uses": "llm.chat", "with": { "messages": [{ "role": "user", "content": "Summarise ${steps.weather.body}" }] } }
    ] })
}

on_both_backends! {
    async fn pipelines_call_http_apis_and_models(backend) {
        let base = outside_world().await;
        let llm = format!("{base}/v1");
        let env = [("HTTP_TOOL_ALLOWED_HOSTS", "127.0.0.1"), ("LLM_BASE_URL", llm.as_str()), ("LLM_MODEL", "tiny")];
        let Some(app) = TestApp::spawn_with(backend, ProcessRole::All, &env).await else { return };
        let sue = app.sign_in("acme", "sue@acme.test", Role::Supervisor).await;
        let (status, task) = create_task(&app, &sue, weather_pipeline(&base)).await;
        assert_eq!(status, StatusCode::CREATED, "{task}");
        let job_id = run_now(&app, &sue, &task).await;
        app.wait_for_job(&sue.tenant_id, &job_id, "succeeded").await;
        let steps = steps_of(&app, &sue, &job_id).await;
        assert_eq!(steps[0]["output"]["status"], 200);
        assert_eq!(steps[0]["output"]["body"]["temp_c"], 4);
        assert_eq!(steps[1]["output"]["text"], r#"Brief: Summarise {"city":"Chisinau","temp_c":4}"#);
        assert_eq!(steps[1]["output"]["usage"]["total_tokens"], 17);
        let usage = docket::pipeline::tools::llm::usage(&app.state.store, &sue.tenant_id, &docket::pipeline::tools::llm::current_month()).await.unwrap();
        assert_eq!((usage.total_tokens, usage.requests), (17, 1));
    }

    async fn transient_step_failures_are_retried(backend) {
        let base = outside_world().await;
        let Some(app) = TestApp::spawn_with(backend, ProcessRole::All, &[("HTTP_TOOL_ALLOWED_HOSTS", "127.0.0.0/8")]).await else { return };
        let sue = app.sign_in("acme", "sue@acme.test", Role::Supervisor).await;
        let (_, task) = create_task(&app, &sue, json!({ "pipeline": [
            { "id": "call", "uses": "http.request", "with": { "url": format!("{base}/flaky") }, "retry": 3 }
        ] })).await;
        let job_id = run_now(&app, &sue, &task).await;
        app.wait_for_job(&sue.tenant_id, &job_id, "succeeded").await;
        let steps = steps_of(&app, &sue, &job_id).await;
        assert_eq!(steps[0]["attempts"], 3, "two 503s, then success");
        assert_eq!(steps[0]["output"]["body"], json!({ "ok": true }));
    }

    async fn http_requests_to_internal_addresses_are_refused(backend) {
        let base = outside_world().await;
        let Some(app) = TestApp::spawn(backend).await else { return };
        let sue = app.sign_in("acme", "sue@acme.test", Role::Supervisor).await;
        let (_, task) = create_task(&app, &sue, weather_pipeline(&base)).await;
        let job_id = run_now(&app, &sue, &task).await;
        let dead = app.wait_for_job(&sue.tenant_id, &job_id, "dead").await;
        let error = dead.last_error.unwrap();
        assert!(error.contains("step weather (http.request) failed") && error.contains("loopback"), "{error}");
        let steps = steps_of(&app, &sue, &job_id).await;
        assert_eq!(steps[0]["attempts"], 1, "a refused host is not retried");
        assert_eq!(steps.len(), 1, "nothing after the failed step ran");
    }
}

/// The statuses of a task's jobs, oldest first.
async fn job_statuses(app: &TestApp, tenant: &str, task_id: &str) -> Vec<String> {
    let sql =
        "SELECT status FROM jobs WHERE tenant_id = $1 AND task_id = $2 ORDER BY created_at, id";
    match &app.state.store {
        docket::store::Store::Sqlite(pool, _) => sqlx::query_scalar(sql)
            .bind(tenant)
            .bind(task_id)
            .fetch_all(pool)
            .await
            .unwrap(),
        docket::store::Store::Postgres(pool) => sqlx::query_scalar(sql)
            .bind(tenant)
            .bind(task_id)
            .fetch_all(pool)
            .await
            .unwrap(),
    }
}

/// Waits until the task has a dead job (the one refused at the limit), then a little longer, so a
/// job enqueued too many would be seen.
async fn settled_statuses(app: &TestApp, tenant: &str, task_id: &str) -> Vec<String> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let statuses = job_statuses(app, tenant, task_id).await;
        if statuses.iter().any(|s| s == "dead") {
            tokio::time::sleep(Duration::from_millis(500)).await;
            return job_statuses(app, tenant, task_id).await;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no job was refused: {statuses:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

on_both_backends! {
    async fn a_pipeline_that_runs_itself_stops_at_the_call_depth_limit(backend) {
        let Some(app) = TestApp::spawn_with(backend, ProcessRole::All, &[("PIPELINE_CALL_DEPTH", "3")]).await else { return };
        let sue = app.sign_in("acme", "sue@acme.test", Role::Supervisor).await;
        let (status, task) = create_task(&app, &sue, json!({ "pipeline": [
            { "id": "again", "uses": "tasks.run", "with": { "task_id": "${run.task_id}" } }
        ] })).await;
        assert_eq!(status, StatusCode::CREATED, "{task}");
        let first = run_now(&app, &sue, &task).await;
        let statuses = settled_statuses(&app, &sue.tenant_id, task["id"].as_str().unwrap()).await;
        assert_eq!(statuses, ["succeeded", "succeeded", "succeeded", "dead"], "depths 0 to 3, and no fifth job");
        let (_, runs) = app.call(Method::GET, &format!("/api/v1/runs?task_id={}", task["id"].as_str().unwrap()), &sue.access_token, None).await;
        let errors: Vec<&str> = runs["items"].as_array().unwrap().iter().filter_map(|r| r["error"].as_str()).collect();
        assert_eq!(errors.len(), 1, "{runs}");
        assert!(errors[0].contains("call depth limit reached") && errors[0].contains("PIPELINE_CALL_DEPTH is 3"), "{}", errors[0]);
        assert_ne!(first, "", "the first job was started by the API at depth 0");
    }

    async fn an_event_loop_stops_at_the_call_depth_limit(backend) {
        let Some(app) = TestApp::spawn_with(backend, ProcessRole::All, &[("PIPELINE_CALL_DEPTH", "2")]).await else { return };
        let sue = app.sign_in("acme", "sue@acme.test", Role::Supervisor).await;
        let (status, task) = app.call(Method::POST, "/api/v1/tasks", &sue.access_token, Some(json!({
            "title": "Echo", "schedule_kind": "event", "schedule_expr": "loop.echo",
            "payload": { "pipeline": [{ "id": "echo", "uses": "events.publish", "with": { "topic": "loop.echo" } }] }
        }))).await;
        assert_eq!(status, StatusCode::CREATED, "{task}");
        let (status, event) = app.call(Method::POST, "/api/v1/events", &sue.access_token, Some(json!({ "topic": "loop.echo", "payload": {} }))).await;
        assert!(status.is_success(), "{event}");
        let statuses = settled_statuses(&app, &sue.tenant_id, task["id"].as_str().unwrap()).await;
        assert_eq!(statuses, ["succeeded", "succeeded", "dead"], "depths 0 to 2");
        assert_eq!(events_on(&app, &sue.tenant_id, "loop.echo").await, 3, "the API's event and two published by the pipeline");
    }

    async fn a_loop_through_cases_stops_at_the_call_depth_limit(backend) {
        // Each new case triggers a pipeline that raises another case: the events about a case a
        // pipeline raised are as deep as the step that raised it.
        let Some(app) = TestApp::spawn_with(backend, ProcessRole::All, &[("PIPELINE_CALL_DEPTH", "2")]).await else { return };
        let sue = app.sign_in("acme", "sue@acme.test", Role::Supervisor).await;
        let (status, task) = app.call(Method::POST, "/api/v1/tasks", &sue.access_token, Some(json!({
            "title": "Raise another", "schedule_kind": "event", "schedule_expr": "case.created",
            "payload": { "pipeline": [{ "id": "raise", "uses": "review.request", "with": { "type": "loop" } }] }
        }))).await;
        assert_eq!(status, StatusCode::CREATED, "{task}");
        let (status, case) = app.call(Method::POST, "/api/v1/cases", &sue.access_token, Some(json!({
            "type": "loop", "reference": "first", "amount": "1", "currency": "EUR"
        }))).await;
        assert_eq!(status, StatusCode::CREATED, "{case}");
        let statuses = settled_statuses(&app, &sue.tenant_id, task["id"].as_str().unwrap()).await;
        assert_eq!(statuses, ["waiting", "waiting", "dead"], "depths 0 to 2");
        let (_, runs) = app.call(Method::GET, &format!("/api/v1/runs?task_id={}", task["id"].as_str().unwrap()), &sue.access_token, None).await;
        let errors: Vec<&str> = runs["items"].as_array().unwrap().iter().filter_map(|r| r["error"].as_str()).collect();
        assert!(errors.len() == 1 && errors[0].contains("call depth limit reached"), "{runs}");
        let (_, cases) = app.call(Method::GET, "/api/v1/cases?type=loop", &sue.access_token, None).await;
        assert_eq!(cases["items"].as_array().unwrap().len(), 3, "the API's case and two raised by the pipeline");
    }

    async fn tasks_run_refuses_a_paused_task_but_a_person_may_still_run_it_now(backend) {
        let Some(app) = TestApp::spawn(backend).await else { return };
        let sue = app.sign_in("acme", "sue@acme.test", Role::Supervisor).await;
        let (_, target) = create_task(&app, &sue, json!({ "pipeline": [{ "id": "a", "uses": "events.publish", "with": { "topic": "target.ran" } }] })).await;
        let target_id = target["id"].as_str().unwrap();
        let (status, paused) = app.call(Method::POST, &format!("/api/v1/tasks/{target_id}/pause"), &sue.access_token, None).await;
        assert_eq!(status, StatusCode::OK, "{paused}");
        let (_, caller) = create_task(&app, &sue, json!({ "pipeline": [{ "id": "start", "uses": "tasks.run", "with": { "task_id": target_id } }] })).await;
        let job_id = run_now(&app, &sue, &caller).await;
        let dead = app.wait_for_job(&sue.tenant_id, &job_id, "dead").await;
        let error = dead.last_error.unwrap();
        assert!(error.contains("is paused"), "{error}");
        assert!(job_statuses(&app, &sue.tenant_id, target_id).await.is_empty(), "nothing was enqueued for the paused task");

        // Run now is a person's deliberate action on the task itself, so pausing the schedule does not refuse it.
        let job_id = run_now(&app, &sue, &target).await;
        app.wait_for_job(&sue.tenant_id, &job_id, "succeeded").await;
        assert_eq!(events_on(&app, &sue.tenant_id, "target.ran").await, 1);
    }
}
