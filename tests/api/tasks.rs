use std::time::Duration;

use docket::auth::Role;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::on_both_backends;
use crate::support::TestApp;

fn cron_task(title: &str) -> Value {
    json!({ "title": title, "schedule_kind": "cron", "schedule_expr": "0 8 * * 1-5", "timezone": "Europe/Chisinau", "payload": { "city": "Chisinau" } })
}

on_both_backends! {
    async fn tasks_are_created_with_their_next_fire_times(backend) {
        let Some(app) = TestApp::spawn(backend).await else { return };
        let ops = app.sign_in("acme", "sue@acme.test", Role::Supervisor).await;
        let (status, task) = app.call(Method::POST, "/api/v1/tasks", &ops.access_token, Some(cron_task("Morning brief"))).await;
        assert_eq!(status, StatusCode::CREATED, "{task}");
        assert_eq!(task["status"], "active");
        assert_eq!(task["payload"], json!({ "city": "Chisinau" }));
        assert_eq!(task["misfire_grace_seconds"], 30);
        let times: Vec<chrono::DateTime<chrono::Utc>> = serde_json::from_value(task["next_fire_times"].clone()).unwrap();
        assert_eq!(times.len(), 5);
        assert!(times.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(task["next_run_at"], json!(times[0]));
        for t in &times {
            let local = t.with_timezone(&chrono_tz::Europe::Chisinau);
            assert_eq!(local.format("%H:%M").to_string(), "08:00");
            assert!(!matches!(chrono::Datelike::weekday(&local), chrono::Weekday::Sat | chrono::Weekday::Sun));
        }
        let id = task["id"].as_str().unwrap();
        let (status, fetched) = app.call(Method::GET, &format!("/api/v1/tasks/{id}"), &ops.access_token, None).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(fetched["next_fire_times"], task["next_fire_times"]);

        let rrule = json!({ "title": "Weekdays", "schedule_kind": "rrule", "schedule_expr": "FREQ=WEEKLY;BYDAY=MO,TU,WE,TH,FR;BYHOUR=8;BYMINUTE=30", "timezone": "UTC" });
        let (status, task) = app.call(Method::POST, "/api/v1/tasks", &ops.access_token, Some(rrule)).await;
        assert_eq!(status, StatusCode::CREATED, "{task}");
        assert!(task["schedule_expr"].as_str().unwrap().starts_with("DTSTART;TZID=UTC:"));
        assert_eq!(task["next_fire_times"].as_array().unwrap().len(), 5);
    }

    async fn invalid_tasks_get_422_naming_the_field(backend) {
        let Some(app) = TestApp::spawn(backend).await else { return };
        let ops = app.sign_in("acme", "sue@acme.test", Role::Supervisor).await;
        let cases = [
            (json!({ "title": "x", "schedule_kind": "cron", "schedule_expr": "99 * * * *" }), "schedule_expr"),
            (json!({ "title": "x", "schedule_kind": "cron", "schedule_expr": "* * * * *", "timezone": "Nowhere/Land" }), "timezone"),
            (json!({ "title": "x", "schedule_kind": "once", "schedule_expr": "2001-01-01T00:00:00Z" }), "schedule_expr"),
            (json!({ "title": "x", "schedule_kind": "sometimes" }), "schedule_kind"),
            (json!({ "title": "", "schedule_kind": "manual" }), "title"),
            (json!({ "title": "x", "schedule_kind": "manual", "max_retries": -1 }), "max_retries"),
            (json!({ "title": "x", "schedule_kind": "manual", "concurrency": 0 }), "concurrency"),
            (json!({ "title": "x", "schedule_kind": "manual", "payload": { "pipeline": [] } }), "payload.pipeline"),
        ];
        for (body, field) in cases {
            let (status, response) = app.call(Method::POST, "/api/v1/tasks", &ops.access_token, Some(body.clone())).await;
            assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}: {response}");
            assert_eq!(response["error"]["details"]["field"], field, "{body}: {response}");
        }
        let (_, list) = app.call(Method::GET, "/api/v1/tasks", &ops.access_token, None).await;
        assert_eq!(list["items"], json!([]), "nothing was created");
    }

    async fn schedules_are_previewed_without_creating_a_task(backend) {
        let Some(app) = TestApp::spawn(backend).await else { return };
        let ops = app.sign_in("acme", "sue@acme.test", Role::Supervisor).await;
        let viewer = app.sign_in("acme", "val@acme.test", Role::Viewer).await;
        let schedule = json!({ "schedule_kind": "cron", "schedule_expr": "0 8 * * 1-5", "timezone": "Europe/Chisinau" });
        let (status, preview) = app.call(Method::POST, "/api/v1/tasks/preview", &viewer.access_token, Some(schedule)).await;
        assert_eq!(status, StatusCode::OK, "{preview}");
        assert_eq!(preview["schedule_expr"], "0 8 * * 1-5");
        assert_eq!(preview["timezone"], "Europe/Chisinau");
        let (_, task) = app.call(Method::POST, "/api/v1/tasks", &ops.access_token, Some(cron_task("Morning brief"))).await;
        assert_eq!(preview["next_fire_times"], task["next_fire_times"], "the same times the task gets");

        let rrule = json!({ "schedule_kind": "rrule", "schedule_expr": "FREQ=DAILY;BYHOUR=9;BYMINUTE=0;BYSECOND=0", "count": 3 });
        let (status, preview) = app.call(Method::POST, "/api/v1/tasks/preview", &ops.access_token, Some(rrule)).await;
        assert_eq!(status, StatusCode::OK, "{preview}");
        assert!(preview["schedule_expr"].as_str().unwrap().starts_with("DTSTART;TZID=UTC:"), "{preview}");
        assert_eq!(preview["timezone"], "UTC");
        let times: Vec<chrono::DateTime<chrono::Utc>> = serde_json::from_value(preview["next_fire_times"].clone()).unwrap();
        assert_eq!(times.len(), 3);
        assert!(times.windows(2).all(|w| w[1] - w[0] == chrono::Duration::days(1)), "{times:?}");
        assert!(times.iter().all(|t| t.format("%H:%M:%S").to_string() == "09:00:00"), "{times:?}");

        let once = json!({ "schedule_kind": "once", "schedule_expr": "2031-05-01T08:00:00+02:00" });
        let (_, preview) = app.call(Method::POST, "/api/v1/tasks/preview", &ops.access_token, Some(once)).await;
        assert_eq!(preview["next_fire_times"], json!(["2031-05-01T06:00:00Z"]));
        let (_, preview) = app.call(Method::POST, "/api/v1/tasks/preview", &ops.access_token, Some(json!({ "schedule_kind": "manual" }))).await;
        assert_eq!(preview["next_fire_times"], json!([]));

        let invalid = [
            (json!({ "schedule_kind": "cron", "schedule_expr": "99 * * * *" }), "schedule_expr"),
            (json!({ "schedule_kind": "cron", "schedule_expr": "* * * * *", "timezone": "Nowhere/Land" }), "timezone"),
            (json!({ "schedule_kind": "once", "schedule_expr": "2001-01-01T00:00:00Z" }), "schedule_expr"),
            (json!({ "schedule_kind": "sometimes" }), "schedule_kind"),
            (json!({ "schedule_kind": "manual", "count": 0 }), "count"),
        ];
        for (body, field) in invalid {
            let (status, response) = app.call(Method::POST, "/api/v1/tasks/preview", &ops.access_token, Some(body.clone())).await;
            assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}: {response}");
            assert_eq!(response["error"]["details"]["field"], field, "{body}: {response}");
        }
        let (_, list) = app.call(Method::GET, "/api/v1/tasks", &ops.access_token, None).await;
        assert_eq!(list["items"].as_array().unwrap().len(), 1, "previews create nothing");
        let (status, _) = app.call(Method::POST, "/api/v1/tasks/preview", "", Some(json!({ "schedule_kind": "manual" }))).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }

    async fn tasks_are_listed_filtered_and_changed(backend) {
        let Some(app) = TestApp::spawn(backend).await else { return };
        let ops = app.sign_in("acme", "sue@acme.test", Role::Supervisor).await;
        let viewer = app.sign_in("acme", "val@acme.test", Role::Viewer).await;
        let (_, a) = app.call(Method::POST, "/api/v1/tasks", &ops.access_token, Some(cron_task("Morning brief"))).await;
        app.call(Method::POST, "/api/v1/tasks", &ops.access_token, Some(json!({ "title": "Reindex", "schedule_kind": "manual" }))).await;
        app.call(Method::POST, "/api/v1/tasks", &ops.access_token, Some(json!({ "title": "On order", "schedule_kind": "event", "schedule_expr": "orders.created" }))).await;

        let (status, all) = app.call(Method::GET, "/api/v1/tasks", &viewer.access_token, None).await;
        assert_eq!(status, StatusCode::OK, "viewers may read");
        assert_eq!(all["items"].as_array().unwrap().len(), 3);
        let (_, manual) = app.call(Method::GET, "/api/v1/tasks?kind=manual", &viewer.access_token, None).await;
        assert_eq!(manual["items"][0]["title"], "Reindex");
        let (_, found) = app.call(Method::GET, "/api/v1/tasks?q=MORNING", &viewer.access_token, None).await;
        assert_eq!(found["items"].as_array().unwrap().len(), 1);
        let (_, page) = app.call(Method::GET, "/api/v1/tasks?limit=2", &viewer.access_token, None).await;
        assert_eq!(page["items"].as_array().unwrap().len(), 2);
        assert!(page["next_cursor"].is_string());
        let (status, _) = app.call(Method::POST, "/api/v1/tasks", &viewer.access_token, Some(cron_task("nope"))).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "viewers may not write");

        let id = a["id"].as_str().unwrap();
        let (status, changed) = app.call(Method::PATCH, &format!("/api/v1/tasks/{id}"), &ops.access_token, Some(json!({ "schedule_expr": "0 9 * * *", "timezone": "UTC", "title": "Nine" }))).await;
        assert_eq!(status, StatusCode::OK, "{changed}");
        let next: chrono::DateTime<chrono::Utc> = serde_json::from_value(changed["next_run_at"].clone()).unwrap();
        assert_eq!(next.format("%H:%M").to_string(), "09:00");
        let (status, bad) = app.call(Method::PATCH, &format!("/api/v1/tasks/{id}"), &ops.access_token, Some(json!({ "timezone": "Mars/Base" }))).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{bad}");

        let (_, paused) = app.call(Method::POST, &format!("/api/v1/tasks/{id}/pause"), &ops.access_token, None).await;
        assert_eq!(paused["status"], "paused");
        assert_eq!(paused["next_fire_times"], json!([]));
        let (status, conflict) = app.call(Method::POST, &format!("/api/v1/tasks/{id}/pause"), &ops.access_token, None).await;
        assert_eq!(status, StatusCode::CONFLICT);
        assert_eq!(conflict["error"]["details"]["status"], "paused");
        let (_, resumed) = app.call(Method::POST, &format!("/api/v1/tasks/{id}/resume"), &ops.access_token, None).await;
        assert_eq!(resumed["status"], "active");

        let until = chrono::Utc::now() + chrono::Duration::days(3);
        let (status, snoozed) = app.call(Method::POST, &format!("/api/v1/tasks/{id}/snooze"), &ops.access_token, Some(json!({ "until": until }))).await;
        assert_eq!(status, StatusCode::OK, "{snoozed}");
        let next: chrono::DateTime<chrono::Utc> = serde_json::from_value(snoozed["next_run_at"].clone()).unwrap();
        assert!(next >= until && next - until <= chrono::Duration::days(1), "{next} vs {until}");
        let (status, _) = app.call(Method::POST, &format!("/api/v1/tasks/{id}/snooze"), &ops.access_token, Some(json!({ "seconds": 0 }))).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
        // Nothing is postponed past the horizon of computed fire times.
        for (body, field) in [(json!({ "until": "9999-12-31T00:00:00Z" }), "until"),
                              (json!({ "skip_until": "2100-01-01T00:00:00Z" }), "skip_until"),
                              (json!({ "seconds": u32::MAX }), "seconds")] {
            let (status, refused) = app.call(Method::POST, &format!("/api/v1/tasks/{id}/snooze"), &ops.access_token, Some(body)).await;
            assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{refused}");
            assert_eq!(refused["error"]["details"]["field"], field, "{refused}");
        }
        let (_, unchanged) = app.call(Method::GET, &format!("/api/v1/tasks/{id}"), &ops.access_token, None).await;
        let stored: chrono::DateTime<chrono::Utc> = serde_json::from_value(unchanged["next_run_at"].clone()).unwrap();
        assert_eq!(stored.timestamp_micros(), next.timestamp_micros(), "(PostgreSQL keeps microseconds)");

        let (status, _) = app.call(Method::DELETE, &format!("/api/v1/tasks/{id}"), &ops.access_token, None).await;
        assert_eq!(status, StatusCode::NO_CONTENT);
        assert_eq!(app.call(Method::GET, &format!("/api/v1/tasks/{id}"), &ops.access_token, None).await.0, StatusCode::NOT_FOUND);

        let (_, audit) = app.call(Method::GET, "/api/v1/audit?target_type=task&limit=100", &ops.access_token, None).await;
        let actions: Vec<&str> = audit["items"].as_array().unwrap().iter().map(|r| r["action"].as_str().unwrap()).collect();
        for action in ["task.create", "task.update", "task.pause", "task.resume", "task.snooze", "task.delete"] {
            assert!(actions.contains(&action), "{action} not audited: {actions:?}");
        }
    }

    async fn run_now_executes_and_delete_cancels_queued_work(backend) {
        let Some(app) = TestApp::spawn(backend).await else { return };
        let ops = app.sign_in("acme", "sue@acme.test", Role::Supervisor).await;
        let (_, task) = app.call(Method::POST, "/api/v1/tasks", &ops.access_token, Some(json!({ "title": "Ping", "schedule_kind": "manual", "payload": { "hello": "world" } }))).await;
        let id = task["id"].as_str().unwrap().to_owned();
        let (status, job) = app.call(Method::POST, &format!("/api/v1/tasks/{id}/run_now"), &ops.access_token, None).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{job}");
        let job_id = job["id"].as_str().unwrap().to_owned();
        // The app runs a worker (role `all`): the job completes with the task's payload.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let job = docket::queue::get(&app.state.store, &ops.tenant_id, &job_id).await.unwrap().unwrap();
            if job.status == "succeeded" {
                break;
            }
            assert!(tokio::time::Instant::now() < deadline, "job stuck in {}", job.status);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let (status, runs) = app.call(Method::GET, &format!("/api/v1/runs?task_id={id}"), &ops.access_token, None).await;
        assert_eq!(status, StatusCode::OK, "{runs}");
        let run = &runs["items"][0];
        assert_eq!(runs["items"].as_array().unwrap().len(), 1);
        assert_eq!(run["status"], "succeeded");
        assert_eq!(run["attempt"], 1);
        assert_eq!(run["input"]["payload"], json!({ "hello": "world" }));
        assert_eq!(run["output"]["payload"], json!({ "hello": "world" }));
        assert!(run["duration_seconds"].as_f64().unwrap() >= 0.0);
        let run_id = run["id"].as_str().unwrap();
        let (status, detail) = app.call(Method::GET, &format!("/api/v1/runs/{run_id}"), &ops.access_token, None).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(detail["job_id"], Value::from(job_id.clone()));
        let outsider = app.sign_in("globex", "gil@globex.test", Role::Supervisor).await;
        assert_eq!(app.call(Method::GET, &format!("/api/v1/runs/{run_id}"), &outsider.access_token, None).await.0, StatusCode::NOT_FOUND);
        let (_, none) = app.call(Method::GET, "/api/v1/runs", &outsider.access_token, None).await;
        assert_eq!(none["items"], json!([]));

        let (status, workers) = app.call(Method::GET, "/api/v1/workers", &ops.access_token, None).await;
        assert_eq!(status, StatusCode::OK, "{workers}");
        assert_eq!(workers.as_array().unwrap().len(), 1);
        assert_eq!(workers[0]["role"], "all");
        let (status, queues) = app.call(Method::GET, "/api/v1/queues", &ops.access_token, None).await;
        assert_eq!(status, StatusCode::OK, "{queues}");
        assert!(queues.is_array());

        // A job due in the future is cancelled when its task is deleted.
        let (_, later) = app.call(Method::POST, "/api/v1/tasks", &ops.access_token, Some(json!({ "title": "Later", "schedule_kind": "manual" }))).await;
        let later_id = later["id"].as_str().unwrap().to_owned();
        let mut tx = app.state.store.begin().await.unwrap();
        let row = docket::scheduler::tasks::find(&app.state.store, &ops.tenant_id, &later_id).await.unwrap().unwrap();
        let queued = docket::queue::enqueue(&mut tx, &app.state.queue.settings, row.job_for(chrono::Utc::now() + chrono::Duration::hours(1)), chrono::Utc::now()).await.unwrap();
        tx.commit().await.unwrap();
        let (_, queues) = app.call(Method::GET, "/api/v1/queues", &ops.access_token, None).await;
        assert_eq!(queues, json!([{ "kind": "task", "status": "queued", "jobs": 1, "oldest_run_at": queued.run_at }]));
        let metrics = app.get("/metrics").await.text().await.unwrap();
        assert!(metrics.contains(r#"docket_queue_depth{kind="task",status="queued"} 1"#), "{metrics}");
        assert_eq!(app.call(Method::DELETE, &format!("/api/v1/tasks/{later_id}"), &ops.access_token, None).await.0, StatusCode::NO_CONTENT);
        let cancelled = docket::queue::get(&app.state.store, &ops.tenant_id, &queued.id).await.unwrap().unwrap();
        assert_eq!(cancelled.status, "cancelled");
        let (_, queues) = app.call(Method::GET, "/api/v1/queues", &ops.access_token, None).await;
        assert_eq!(queues, json!([]));
    }

    async fn a_scheduled_task_runs_end_to_end(backend) {
        let Some(app) = TestApp::spawn(backend).await else { return };
        let ops = app.sign_in("acme", "sue@acme.test", Role::Supervisor).await;
        let (status, task) = app.call(Method::POST, "/api/v1/tasks", &ops.access_token, Some(json!({ "title": "Tick", "schedule_kind": "cron", "schedule_expr": "* * * * * *" }))).await;
        assert_eq!(status, StatusCode::CREATED);
        let id = task["id"].as_str().unwrap().to_owned();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let succeeded: i64 = docket::with_pool!(&app.state.store, pool => {
                sqlx::query_scalar("SELECT COUNT(*) FROM jobs WHERE task_id = $1 AND status = 'succeeded'").bind(&id).fetch_one(pool).await
            })
            .unwrap();
            if succeeded >= 2 {
                break;
            }
            assert!(tokio::time::Instant::now() < deadline, "the scheduler and worker did not run the task");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn other_tenants_tasks_are_invisible(backend) {
        let Some(app) = TestApp::spawn(backend).await else { return };
        let a = app.sign_in("alpha", "sue@alpha.test", Role::Supervisor).await;
        let b = app.sign_in("beta", "sam@beta.test", Role::Supervisor).await;
        let (_, task) = app.call(Method::POST, "/api/v1/tasks", &b.access_token, Some(cron_task("B's"))).await;
        let id = task["id"].as_str().unwrap();
        let probes = [
            (Method::GET, format!("/api/v1/tasks/{id}"), None),
            (Method::PATCH, format!("/api/v1/tasks/{id}"), Some(json!({ "title": "pwned" }))),
            (Method::DELETE, format!("/api/v1/tasks/{id}"), None),
            (Method::POST, format!("/api/v1/tasks/{id}/run_now"), None),
            (Method::POST, format!("/api/v1/tasks/{id}/pause"), None),
            (Method::POST, format!("/api/v1/tasks/{id}/resume"), None),
            (Method::POST, format!("/api/v1/tasks/{id}/snooze"), Some(json!({ "seconds": 60 }))),
        ];
        for (method, path, body) in probes {
            let (status, response) = app.call(method.clone(), &path, &a.access_token, body).await;
            assert_eq!(status, StatusCode::NOT_FOUND, "{method} {path}: {response}");
        }
        let (_, list) = app.call(Method::GET, "/api/v1/tasks", &a.access_token, None).await;
        assert_eq!(list["items"], json!([]));
        let (_, mine) = app.call(Method::GET, &format!("/api/v1/tasks/{id}"), &b.access_token, None).await;
        assert_eq!(mine["title"], "B's");
        assert_eq!(mine["status"], "active");
    }
}

on_both_backends! {
    async fn tasks_give_their_jobs_concurrency_rate_and_dedupe_keys(backend) {
        let Some(app) = TestApp::spawn(backend).await else { return };
        let ops = app.sign_in("acme", "sue@acme.test", Role::Supervisor).await;
        let body = json!({
            "title": "Sync customer", "schedule_kind": "manual", "payload": { "params": { "customer": "c-42" } },
            "concurrency_key": "customer:${params.customer}", "concurrency_limit": 2,
            "rate_limit": { "count": 10, "per_seconds": 60 },
            "dedupe_key": "sync:${params.customer}", "dedupe_window_seconds": 120,
        });
        let (status, task) = app.call(Method::POST, "/api/v1/tasks", &ops.access_token, Some(body)).await;
        assert_eq!(status, StatusCode::CREATED, "{task}");
        assert_eq!(task["concurrency_key"], "customer:${params.customer}");
        assert_eq!(task["concurrency_limit"], 2);
        assert_eq!(task["rate_limit"], json!({ "count": 10, "per_seconds": 60 }));
        assert_eq!(task["dedupe_key"], "sync:${params.customer}");
        assert_eq!(task["dedupe_window_seconds"], 120);
        let id = task["id"].as_str().unwrap();

        let (status, job) = app.call(Method::POST, &format!("/api/v1/tasks/{id}/run_now"), &ops.access_token, None).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{job}");
        assert_eq!(job["concurrency_key"], "customer:c-42", "rendered from the params");
        assert_eq!(job["dedupe_key"], "sync:c-42");
        let (_, again) = app.call(Method::POST, &format!("/api/v1/tasks/{id}/run_now"), &ops.access_token, None).await;
        assert_eq!(again["id"], job["id"], "within the dedupe window the first job is the answer");

        // Removing a key removes the limits that belong to it; a dedupe key gets the default window.
        let (status, changed) = app.call(Method::PATCH, &format!("/api/v1/tasks/{id}"), &ops.access_token,
            Some(json!({ "concurrency_key": null, "dedupe_key": null }))).await;
        assert_eq!(status, StatusCode::OK, "{changed}");
        for field in ["concurrency_key", "concurrency_limit", "rate_limit", "dedupe_key", "dedupe_window_seconds"] {
            assert_eq!(changed[field], Value::Null, "{field}: {changed}");
        }
        let (status, changed) = app.call(Method::PATCH, &format!("/api/v1/tasks/{id}"), &ops.access_token,
            Some(json!({ "dedupe_key": "once", "rate_limit": { "count": 1, "per_seconds": 5 }, "concurrency_key": "k" }))).await;
        assert_eq!(status, StatusCode::OK, "{changed}");
        assert_eq!(changed["dedupe_window_seconds"], 3600);
        assert_eq!(changed["rate_limit"], json!({ "count": 1, "per_seconds": 5 }));
        assert_eq!(changed["concurrency_limit"], Value::Null);
        let (_, fetched) = app.call(Method::GET, &format!("/api/v1/tasks/{id}"), &ops.access_token, None).await;
        assert_eq!(fetched["rate_limit"], changed["rate_limit"], "stored");

        let (_, spec) = app.get_json("/api/v1/openapi.json").await;
        let schemas = &spec["components"]["schemas"];
        // A task's response schema is its row's fields (flattened) plus its own.
        let task_schema = format!("{}{}", schemas["Task"], schemas["TaskRow"]);
        for (schema, text) in [("CreateTask", schemas["CreateTask"].to_string()), ("UpdateTask", schemas["UpdateTask"].to_string()), ("Task", task_schema)] {
            for field in ["concurrency_key", "concurrency_limit", "rate_limit", "dedupe_key", "dedupe_window_seconds"] {
                assert!(text.contains(&format!("\"{field}\"")), "{schema}.{field} missing from the spec: {text}");
            }
        }
        assert!(schemas["RateLimit"]["properties"]["per_seconds"].is_object(), "{}", schemas["RateLimit"]);
        assert!(schemas["Job"]["properties"]["concurrency_key"].is_object());
    }

    async fn invalid_task_keys_get_422_naming_the_field(backend) {
        let Some(app) = TestApp::spawn(backend).await else { return };
        let ops = app.sign_in("acme", "sue@acme.test", Role::Supervisor).await;
        let task = |extra: Value| {
            let mut body = json!({ "title": "x", "schedule_kind": "manual" });
            body.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
            body
        };
        let long = "k".repeat(201);
        let cases = [
            (json!({ "concurrency_key": "k" }), "concurrency_key"),
            (json!({ "concurrency_key": "", "concurrency_limit": 1 }), "concurrency_key"),
            (json!({ "concurrency_key": long, "concurrency_limit": 1 }), "concurrency_key"),
            (json!({ "concurrency_key": "a:${secrets.x}", "concurrency_limit": 1 }), "concurrency_key"),
            (json!({ "concurrency_key": "a:${params.x", "concurrency_limit": 1 }), "concurrency_key"),
            (json!({ "concurrency_key": "a:${params..x}", "concurrency_limit": 1 }), "concurrency_key"),
            (json!({ "concurrency_key": "k", "concurrency_limit": 0 }), "concurrency_limit"),
            (json!({ "concurrency_key": "k", "concurrency_limit": 10_001 }), "concurrency_limit"),
            (json!({ "concurrency_limit": 3 }), "concurrency_limit"),
            (json!({ "rate_limit": { "count": 3, "per_seconds": 60 } }), "rate_limit"),
            (json!({ "concurrency_key": "k", "rate_limit": { "count": 0, "per_seconds": 60 } }), "rate_limit.count"),
            (json!({ "concurrency_key": "k", "rate_limit": { "count": 1, "per_seconds": 0 } }), "rate_limit.per_seconds"),
            (json!({ "concurrency_key": "k", "rate_limit": { "count": 1, "per_seconds": 86_401 } }), "rate_limit.per_seconds"),
            (json!({ "dedupe_window_seconds": 60 }), "dedupe_window_seconds"),
            (json!({ "dedupe_key": "d", "dedupe_window_seconds": 0 }), "dedupe_window_seconds"),
            (json!({ "dedupe_key": "d", "dedupe_window_seconds": 604_801 }), "dedupe_window_seconds"),
            (json!({ "dedupe_key": "${event.}" }), "dedupe_key"),
        ];
        for (extra, field) in cases {
            let body = task(extra);
            let (status, response) = app.call(Method::POST, "/api/v1/tasks", &ops.access_token, Some(body.clone())).await;
            assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}: {response}");
            assert_eq!(response["error"]["details"]["field"], field, "{body}: {response}");
        }
        let (_, list) = app.call(Method::GET, "/api/v1/tasks", &ops.access_token, None).await;
        assert_eq!(list["items"], json!([]), "nothing was created");

        let (_, created) = app.call(Method::POST, "/api/v1/tasks", &ops.access_token,
            Some(task(json!({ "concurrency_key": "k", "concurrency_limit": 2 })))).await;
        let id = created["id"].as_str().unwrap();
        let (status, response) = app.call(Method::PATCH, &format!("/api/v1/tasks/{id}"), &ops.access_token,
            Some(json!({ "concurrency_limit": null }))).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "a key left without limits: {response}");
        assert_eq!(response["error"]["details"]["field"], "concurrency_key");
        let (_, unchanged) = app.call(Method::GET, &format!("/api/v1/tasks/{id}"), &ops.access_token, None).await;
        assert_eq!(unchanged["concurrency_limit"], 2);
    }
}

on_both_backends! {
    async fn snooze_postpones_the_next_occurrence(backend) {
        let Some(app) = TestApp::spawn(backend).await else { return };
        let ops = app.sign_in("acme", "sue@acme.test", Role::Supervisor).await;
        let daily = json!({ "title": "Daily", "schedule_kind": "cron", "schedule_expr": "0 9 * * *", "timezone": "UTC", "payload": {} });
        let (status, task) = app.call(Method::POST, "/api/v1/tasks", &ops.access_token, Some(daily)).await;
        assert_eq!(status, StatusCode::CREATED, "{task}");
        let id = task["id"].as_str().unwrap();
        let at = |task: &Value| serde_json::from_value::<chrono::DateTime<chrono::Utc>>(task["next_run_at"].clone()).unwrap();
        let first = at(&task);
        let path = format!("/api/v1/tasks/{id}/snooze");
        let snooze = |body: Value| app.call(Method::POST, &path, &ops.access_token, Some(body));

        // A daily task snoozed by a minute runs a minute later; the occurrence after keeps its time.
        let (status, snoozed) = snooze(json!({ "seconds": 60 })).await;
        assert_eq!(status, StatusCode::OK, "{snoozed}");
        assert_eq!(at(&snoozed), first + chrono::Duration::seconds(60));
        assert_eq!(snoozed["next_fire_times"][1], json!(first + chrono::Duration::days(1)), "{snoozed}");

        // `until` moves the next occurrence to that instant.
        let later = first + chrono::Duration::hours(5);
        let (status, moved) = snooze(json!({ "until": later })).await;
        assert_eq!(status, StatusCode::OK, "{moved}");
        assert_eq!(at(&moved), later);

        // `skip_until` skips the occurrences before it: the next is the first at or after it.
        let (status, skipped) = snooze(json!({ "skip_until": first + chrono::Duration::days(2) + chrono::Duration::hours(1) })).await;
        assert_eq!(status, StatusCode::OK, "{skipped}");
        assert_eq!(at(&skipped), first + chrono::Duration::days(3));

        let (status, error) = snooze(json!({ "seconds": 60, "until": later })).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{error}");
    }
}

async fn manual_task(app: &TestApp, who: &crate::support::Login, payload: Value) -> String {
    let (status, task) = app
        .call(
            Method::POST,
            "/api/v1/tasks",
            &who.access_token,
            Some(json!({ "title": "Quota", "schedule_kind": "manual", "payload": payload })),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{task}");
    task["id"].as_str().unwrap().to_owned()
}

async fn run_now_raw(
    app: &TestApp,
    who: &crate::support::Login,
    task_id: &str,
) -> reqwest::Response {
    app.client
        .post(format!("{}/api/v1/tasks/{task_id}/run_now", app.base))
        .bearer_auth(&who.access_token)
        .send()
        .await
        .unwrap()
}

async fn tenant_jobs(app: &TestApp, tenant: &str) -> i64 {
    let sql = "SELECT COUNT(*) FROM jobs WHERE tenant_id = $1";
    match &app.state.store {
        docket::store::Store::Sqlite(pool, _) => sqlx::query_scalar(sql)
            .bind(tenant)
            .fetch_one(pool)
            .await
            .unwrap(),
        docket::store::Store::Postgres(pool) => sqlx::query_scalar(sql)
            .bind(tenant)
            .fetch_one(pool)
            .await
            .unwrap(),
    }
}

on_both_backends! {
    async fn queued_jobs_beyond_the_tenant_quota_are_refused_with_429(backend) {
        // API only: the jobs stay queued.
        let Some(app) = TestApp::spawn_with(backend, docket::app::Role::Api, &[("TENANT_QUEUED_JOBS_MAX", "2")]).await else { return };
        let sue = app.sign_in("acme", "sue@acme.test", Role::Supervisor).await;
        let task = manual_task(&app, &sue, json!({})).await;
        for _ in 0..2 {
            assert_eq!(run_now_raw(&app, &sue, &task).await.status(), StatusCode::ACCEPTED);
        }
        let refused = run_now_raw(&app, &sue, &task).await;
        assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(refused.headers()["retry-after"], "30");
        let body: Value = refused.json().await.unwrap();
        assert_eq!(body["error"]["code"], "queue_quota_exceeded", "{body}");
        assert_eq!(body["error"]["details"]["reason"], "queued_jobs");
        assert_eq!(body["error"]["details"]["limit"], 2);
        assert_eq!(tenant_jobs(&app, &sue.tenant_id).await, 2, "the refused job was not enqueued");

        // An event that would start a job is refused as a whole: not stored either.
        let (status, _) = app.call(Method::POST, "/api/v1/tasks", &sue.access_token, Some(json!({ "title": "On order", "schedule_kind": "event", "schedule_expr": "orders.created" }))).await;
        assert_eq!(status, StatusCode::CREATED);
        let (status, body) = app.call(Method::POST, "/api/v1/events", &sue.access_token, Some(json!({ "topic": "orders.created", "payload": {} }))).await;
        assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
        assert_eq!(body["error"]["code"], "queue_quota_exceeded");
        assert_eq!(tenant_jobs(&app, &sue.tenant_id).await, 2);

        // Other tenants have quotas of their own.
        let ann = app.sign_in("globex", "ann@globex.test", Role::Supervisor).await;
        let other = manual_task(&app, &ann, json!({})).await;
        assert_eq!(run_now_raw(&app, &ann, &other).await.status(), StatusCode::ACCEPTED);

        let metrics = app.get("/metrics").await.text().await.unwrap();
        assert!(metrics.contains("docket_queue_refused_total{reason=\"queued_jobs\"}"), "{metrics}");
    }

    async fn enqueues_beyond_the_tenants_rate_are_refused_and_fail_pipeline_steps(backend) {
        let Some(app) = TestApp::spawn_with(backend, docket::app::Role::All, &[("TENANT_ENQUEUES_PER_MINUTE", "3")]).await else { return };
        let sue = app.sign_in("acme", "sue@acme.test", Role::Supervisor).await;
        let target = manual_task(&app, &sue, json!({})).await;
        let caller = manual_task(&app, &sue, json!({ "pipeline": [{ "id": "start", "uses": "tasks.run", "with": { "task_id": target } }] })).await;
        assert_eq!(run_now_raw(&app, &sue, &target).await.status(), StatusCode::ACCEPTED);
        let job: Value = run_now_raw(&app, &sue, &caller).await.json().await.unwrap();
        // The caller's step starts the third job of the minute.
        app.wait_for_job(&sue.tenant_id, job["id"].as_str().unwrap(), "succeeded").await;
        let job: Value = run_now_raw(&app, &sue, &caller).await.json().await.unwrap();
        assert!(job["id"].is_null(), "the fourth run is refused: {job}");
        assert_eq!(job["error"]["details"]["reason"], "enqueue_rate");
        assert_eq!(tenant_jobs(&app, &sue.tenant_id).await, 3);
    }

    async fn a_pipeline_step_over_the_quota_fails_and_enqueues_nothing(backend) {
        let Some(app) = TestApp::spawn_with(backend, docket::app::Role::All, &[("TENANT_ENQUEUES_PER_MINUTE", "1")]).await else { return };
        let sue = app.sign_in("acme", "sue@acme.test", Role::Supervisor).await;
        let target = manual_task(&app, &sue, json!({})).await;
        let caller = manual_task(&app, &sue, json!({ "pipeline": [{ "id": "start", "uses": "tasks.run", "with": { "task_id": target } }] })).await;
        let job: Value = run_now_raw(&app, &sue, &caller).await.json().await.unwrap();
        let dead = app.wait_for_job(&sue.tenant_id, job["id"].as_str().unwrap(), "dead").await;
        let error = dead.last_error.unwrap();
        assert!(error.contains("queue quota exceeded") && error.contains("TENANT_ENQUEUES_PER_MINUTE"), "{error}");
        assert_eq!(tenant_jobs(&app, &sue.tenant_id).await, 1, "only the caller's job");
    }
}

on_both_backends! {
    async fn an_rrule_has_one_zone_and_the_task_shows_it(backend) {
        let Some(app) = TestApp::spawn(backend).await else { return };
        let ops = app.sign_in("acme", "sue@acme.test", Role::Supervisor).await;
        let create = |expr: &str, timezone: Option<&str>| {
            let mut body = json!({ "title": "Standup", "schedule_kind": "rrule", "schedule_expr": expr });
            if let Some(zone) = timezone {
                body["timezone"] = json!(zone);
            }
            app.call(Method::POST, "/api/v1/tasks", &ops.access_token, Some(body))
        };
        // A floating DTSTART is local time in the task's zone, not the server's.
        let (status, floating) = create("DTSTART:20300104T090000\nRRULE:FREQ=DAILY", Some("Asia/Tokyo")).await;
        assert_eq!(status, StatusCode::CREATED, "{floating}");
        assert_eq!(floating["schedule_expr"], "DTSTART;TZID=Asia/Tokyo:20300104T090000\nRRULE:FREQ=DAILY");
        assert_eq!(floating["timezone"], "Asia/Tokyo");
        assert_eq!(floating["next_fire_times"][0], "2030-01-04T00:00:00Z");
        // A TZID names the zone when none is given, and the task says so.
        let (status, named) = create("DTSTART;TZID=America/New_York:20300104T090000\nRRULE:FREQ=DAILY", None).await;
        assert_eq!(status, StatusCode::CREATED, "{named}");
        assert_eq!(named["timezone"], "America/New_York");
        assert_eq!(named["next_fire_times"][0], "2030-01-04T14:00:00Z");
        // Two different zones are refused, and nothing is created.
        let (status, conflict) = create("DTSTART;TZID=America/New_York:20300104T090000\nRRULE:FREQ=DAILY", Some("Europe/Berlin")).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{conflict}");
        assert_eq!(conflict["error"]["details"]["field"], "timezone");
        let (_, list) = app.call(Method::GET, "/api/v1/tasks", &ops.access_token, None).await;
        assert_eq!(list["items"].as_array().unwrap().len(), 2);
        // Changing only the zone keeps the local times and moves them into the new zone.
        let id = floating["id"].as_str().unwrap();
        let (status, moved) = app
            .call(Method::PATCH, &format!("/api/v1/tasks/{id}"), &ops.access_token, Some(json!({ "timezone": "Europe/Berlin" })))
            .await;
        assert_eq!(status, StatusCode::OK, "{moved}");
        assert_eq!(moved["schedule_expr"], "DTSTART;TZID=Europe/Berlin:20300104T090000\nRRULE:FREQ=DAILY");
        assert_eq!(moved["next_fire_times"][0], "2030-01-04T08:00:00Z");
    }

    async fn schedules_that_break_the_rfc_or_never_fire_are_refused(backend) {
        let Some(app) = TestApp::spawn(backend).await else { return };
        let ops = app.sign_in("acme", "sue@acme.test", Role::Supervisor).await;
        let refused = [
            ("rrule", "FREQ=WEEKLY;BYDAY=1MO", "numbered weekday"),
            ("rrule", "FREQ=DAILY;INTERVAL=0", "INTERVAL=0"),
            ("rrule", "FREQ=DAILY;COUNT=0", "COUNT=0"),
            ("rrule", "FREQ=MONTHLY;BYMONTHDAY=0", "BYMONTHDAY=0"),
            ("rrule", "FREQ=DAILY;COUNT=2;UNTIL=20300101T000000Z", "COUNT and UNTIL"),
            ("cron", "0 0 30 2 *", "matches no date"),
            ("once", "9999-12-31T00:00:00Z", "2100-01-01"),
        ];
        for (kind, expr, says) in refused {
            let body = json!({ "title": "Never", "schedule_kind": kind, "schedule_expr": expr });
            let (status, response) = app.call(Method::POST, "/api/v1/tasks", &ops.access_token, Some(body)).await;
            assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{expr}: {response}");
            assert_eq!(response["error"]["details"]["field"], "schedule_expr", "{expr}: {response}");
            assert!(response["error"]["message"].as_str().unwrap().contains(says), "{expr}: {response}");
        }
        let (_, list) = app.call(Method::GET, "/api/v1/tasks", &ops.access_token, None).await;
        assert_eq!(list["items"], json!([]), "nothing was created");

        // Valid by the RFC, and fires: the -53rd Sunday of a year.
        let body = json!({ "title": "Rare", "schedule_kind": "rrule", "schedule_expr": "FREQ=YEARLY;BYDAY=-53SU;BYHOUR=9;BYMINUTE=0;BYSECOND=0" });
        let (status, rare) = app.call(Method::POST, "/api/v1/tasks", &ops.access_token, Some(body)).await;
        assert_eq!(status, StatusCode::CREATED, "{rare}");
        assert_eq!(rare["next_fire_times"][0], "2028-01-02T09:00:00Z");
        // A COUNT without DTSTART fires COUNT times.
        let body = json!({ "title": "Thrice", "schedule_kind": "rrule", "schedule_expr": "FREQ=DAILY;COUNT=3" });
        let (status, thrice) = app.call(Method::POST, "/api/v1/tasks", &ops.access_token, Some(body)).await;
        assert_eq!(status, StatusCode::CREATED, "{thrice}");
        assert_eq!(thrice["next_fire_times"].as_array().unwrap().len(), 3, "{thrice}");
    }

    async fn a_preview_looks_at_a_window_across_a_midnight_dst_change(backend) {
        let Some(app) = TestApp::spawn(backend).await else { return };
        let viewer = app.sign_in("acme", "val@acme.test", Role::Viewer).await;
        let preview = |kind: &str, expr: &str| {
            let body = json!({ "schedule_kind": kind, "schedule_expr": expr, "timezone": "America/Santiago",
                               "after": "2027-09-04T12:00:00Z", "count": 2 });
            app.call(Method::POST, "/api/v1/tasks/preview", &viewer.access_token, Some(body))
        };
        // Santiago's clocks go from 00:00 to 01:00 on 2027-09-05. RRULE shifts 00:15 by the gap
        // (RFC 5545); cron runs a skipped fixed time at the end of the gap (Vixie cron).
        let (status, rrule) = preview("rrule", "FREQ=DAILY;BYHOUR=0;BYMINUTE=15;BYSECOND=0").await;
        assert_eq!(status, StatusCode::OK, "{rrule}");
        assert_eq!(rrule["next_fire_times"], json!(["2027-09-05T04:15:00Z", "2027-09-06T03:15:00Z"]));
        let (status, cron) = preview("cron", "15 0 * * *").await;
        assert_eq!(status, StatusCode::OK, "{cron}");
        assert_eq!(cron["next_fire_times"], json!(["2027-09-05T04:00:00Z", "2027-09-06T03:15:00Z"]));

        // A list of fixed times in New York's gap (2027-03-14, 02:00 → 03:00) runs once at 03:00,
        // as a single time does.
        let body = json!({ "schedule_kind": "cron", "schedule_expr": "15,45 2 14 3 *", "timezone": "America/New_York",
                           "after": "2027-03-13T12:00:00Z", "count": 3 });
        let (status, list) = app.call(Method::POST, "/api/v1/tasks/preview", &viewer.access_token, Some(body)).await;
        assert_eq!(status, StatusCode::OK, "{list}");
        assert_eq!(list["next_fire_times"], json!(["2027-03-14T07:00:00Z", "2028-03-14T06:15:00Z", "2028-03-14T06:45:00Z"]));

        // The review's CPU case: every second from 380 days back answers at once, with the times.
        let start = (chrono::Utc::now() - chrono::Duration::days(380)).format("%Y%m%dT%H%M%SZ");
        let body = json!({ "schedule_kind": "rrule", "schedule_expr": format!("DTSTART:{start}\nRRULE:FREQ=SECONDLY"), "count": 3 });
        let (status, secondly) = app.call(Method::POST, "/api/v1/tasks/preview", &viewer.access_token, Some(body)).await;
        assert_eq!(status, StatusCode::OK, "{secondly}");
        let times: Vec<chrono::DateTime<chrono::Utc>> = serde_json::from_value(secondly["next_fire_times"].clone()).unwrap();
        assert_eq!(times.len(), 3, "{secondly}");
        assert!(times.windows(2).all(|w| w[1] - w[0] == chrono::Duration::seconds(1)), "{times:?}");
    }
}
