use std::time::Duration;

use docket::app::Role as ProcessRole;
use docket::auth::Role;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::on_both_backends;
use crate::support::{TestApp, shared_redis};

/// Reads server-sent events from `response` until one of topic `topic` arrives; returns its data.
pub(crate) async fn next_event(mut response: reqwest::Response, topic: &str) -> Value {
    let mut buffer = String::new();
    let read = async {
        while let Some(chunk) = response.chunk().await.unwrap() {
            buffer.push_str(&String::from_utf8_lossy(&chunk));
            while let Some(end) = buffer.find("\n\n") {
                let frame: String = buffer.drain(..end + 2).collect();
                let event = frame
                    .lines()
                    .find_map(|l| l.strip_prefix("event:"))
                    .map(str::trim);
                let data = frame
                    .lines()
                    .find_map(|l| l.strip_prefix("data:"))
                    .map(str::trim);
                if let (Some(event), Some(data)) = (event, data)
                    && event == topic
                {
                    return serde_json::from_str(data).unwrap();
                }
            }
        }
        panic!("the stream ended before {topic} arrived");
    };
    tokio::time::timeout(Duration::from_secs(20), read)
        .await
        .expect("event arrives")
}

on_both_backends! {
    async fn events_trigger_tasks_and_are_idempotent(backend) {
        let Some(app) = TestApp::spawn(backend).await else { return };
        let ops = app.sign_in("acme", "sue@acme.test", Role::Supervisor).await;
        let (_, task) = app.call(Method::POST, "/api/v1/tasks", &ops.access_token, Some(json!({ "title": "On order", "schedule_kind": "event", "schedule_expr": "orders.created" }))).await;
        let task_id = task["id"].as_str().unwrap().to_owned();

        let publish = |key: &'static str| {
            app.client
                .post(app.url("/api/v1/events"))
                .bearer_auth(&ops.access_token)
                .header("idempotency-key", key)
                .json(&json!({ "topic": "orders.created", "payload": { "order": 42 } }))
                .send()
        };
        let response = publish("order-42").await.unwrap();
        assert_eq!(response.status(), StatusCode::ACCEPTED);
        let first: Value = response.json().await.unwrap();
        assert_eq!(first["duplicate"], false);
        assert_eq!(first["job_ids"].as_array().unwrap().len(), 1);
        let job_id = first["job_ids"][0].as_str().unwrap().to_owned();

        let response = publish("order-42").await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let again: Value = response.json().await.unwrap();
        assert_eq!(again["duplicate"], true);
        assert_eq!(again["event"]["id"], first["event"]["id"]);
        assert_eq!(again["job_ids"], first["job_ids"], "no second job");

        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let job = docket::queue::get(&app.state.store, &ops.tenant_id, &job_id).await.unwrap().unwrap();
            if job.status == "succeeded" {
                assert_eq!(job.task_id.as_deref(), Some(task_id.as_str()));
                assert_eq!(job.payload["event"]["payload"], json!({ "order": 42 }));
                break;
            }
            assert!(tokio::time::Instant::now() < deadline, "event job stuck in {}", job.status);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }

        let (status, other) = app.call(Method::POST, "/api/v1/events", &ops.access_token, Some(json!({ "topic": "nobody.listens" }))).await;
        assert_eq!(status, StatusCode::ACCEPTED);
        assert_eq!(other["job_ids"], json!([]));
        let (status, body) = app.call(Method::POST, "/api/v1/events", &ops.access_token, Some(json!({ "topic": "bad topic!" }))).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(body["error"]["details"]["field"], "topic");
    }

    async fn the_event_stream_shows_the_tenants_events_live(backend) {
        let Some(app) = TestApp::spawn(backend).await else { return };
        let ops = app.sign_in("acme", "sue@acme.test", Role::Supervisor).await;
        let outsider = app.sign_in("globex", "gil@globex.test", Role::Supervisor).await;
        let stream = app.client.get(app.url("/api/v1/events/stream")).bearer_auth(&ops.access_token).send().await.unwrap();
        assert_eq!(stream.status(), StatusCode::OK);
        assert!(stream.headers()["content-type"].to_str().unwrap().starts_with("text/event-stream"));
        // Another tenant's event must not show up; ours must.
        app.call(Method::POST, "/api/v1/events", &outsider.access_token, Some(json!({ "topic": "secret.thing", "payload": { "x": 1 } }))).await;
        app.call(Method::POST, "/api/v1/events", &ops.access_token, Some(json!({ "topic": "orders.created", "payload": { "order": 7 } }))).await;
        let event = next_event(stream, "orders.created").await;
        assert_eq!(event["payload"], json!({ "order": 7 }));
        assert_eq!(event["tenant_id"], ops.tenant_id.as_str());

        // Job state changes are published too.
        let stream = app.client.get(app.url("/api/v1/events/stream?topic=job.")).bearer_auth(&ops.access_token).send().await.unwrap();

        let (_, task) = app.call(Method::POST, "/api/v1/tasks", &ops.access_token, Some(json!({ "title": "Ping", "schedule_kind": "manual" }))).await;
        let (status, job) = app.call(Method::POST, &format!("/api/v1/tasks/{}/run_now", task["id"].as_str().unwrap()), &ops.access_token, None).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{job}");

        let done = next_event(stream, "job.succeeded").await;
        assert_eq!(done["payload"]["task_id"], task["id"]);

        // Jobs the scheduler makes are announced when queued.
        let stream = app.client.get(app.url("/api/v1/events/stream?topic=job.queued")).bearer_auth(&ops.access_token).send().await.unwrap();
        let (_, ticking) = app.call(Method::POST, "/api/v1/tasks", &ops.access_token, Some(json!({ "title": "Tick", "schedule_kind": "cron", "schedule_expr": "* * * * * *" }))).await;
        let queued = next_event(stream, "job.queued").await;
        assert_eq!(queued["payload"]["task_id"], ticking["id"]);
    }

    async fn a_reconnecting_stream_resumes_after_the_last_event_id_without_redis(backend) {
        let Some(app) = TestApp::spawn(backend).await else { return };
        assert!(app.state.events.redis().is_none(), "this test is about the embedded stand-in");
        let ops = app.sign_in("acme", "sue@acme.test", Role::Supervisor).await;
        let mut ids = Vec::new();
        for n in 1..=3 {
            let (status, published) = app.call(Method::POST, "/api/v1/events", &ops.access_token, Some(json!({ "topic": format!("orders.n{n}"), "payload": { "n": n } }))).await;
            assert_eq!(status, StatusCode::ACCEPTED);
            ids.push(published["event"]["id"].as_str().unwrap().to_owned());
        }
        // The client saw event 1, lost its connection, and comes back: 2 and 3 are replayed.
        let resumed = || app.client.get(app.url("/api/v1/events/stream?topic=orders.")).bearer_auth(&ops.access_token).header("last-event-id", &ids[0]).send();
        let second = next_event(resumed().await.unwrap(), "orders.n2").await;
        assert_eq!(second["id"], ids[1].as_str());
        let third = next_event(resumed().await.unwrap(), "orders.n3").await;
        assert_eq!(third["payload"], json!({ "n": 3 }));
        // Event 1 itself is not sent again: the first frame after resuming is event 2.
        let mut response = resumed().await.unwrap();
        let mut text = String::new();
        while !text.contains("\n\n") {
            text.push_str(&String::from_utf8_lossy(&response.chunk().await.unwrap().unwrap()));
        }
        assert!(text.contains(&format!("id: {}", ids[1])) || text.contains(&format!("id:{}", ids[1])), "{text}");
    }

    async fn events_travel_between_processes_through_redis(backend) {
        let Some(redis) = shared_redis() else { return };
        let url = redis.url();
        let Some(app) = TestApp::spawn_with(backend, ProcessRole::All, &[("REDIS_URL", url.as_str())]).await else { return };
        let ops = app.sign_in("acme", "sue@acme.test", Role::Supervisor).await;
        // A second API process on the same database and Redis.
        let other = docket::app::AppState::initialise(app.state.config.as_ref().clone()).await.unwrap();
        let router = docket::http::router(other.clone(), ProcessRole::Api);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let other_url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(docket::app::Server::new(other.clone(), ProcessRole::Api, listener, router).run());

        let stream = app.client.get(format!("{other_url}/api/v1/events/stream")).bearer_auth(&ops.access_token).send().await.unwrap();
        assert_eq!(stream.status(), StatusCode::OK);
        let marker = uuid::Uuid::new_v4().to_string();
        app.call(Method::POST, "/api/v1/events", &ops.access_token, Some(json!({ "topic": "orders.created", "payload": { "marker": marker } }))).await;
        let event = next_event(stream, "orders.created").await;
        assert_eq!(event["payload"]["marker"], marker.as_str());

        let mut conn = redis::Client::open(url.as_str()).unwrap().get_multiplexed_async_connection().await.unwrap();
        let entries: redis::streams::StreamRangeReply = redis::cmd("XREVRANGE").arg(docket::events::STREAM_KEY).arg("+").arg("-").arg("COUNT").arg(50).query_async(&mut conn).await.unwrap();
        assert!(entries.ids.iter().any(|e| docket::events::from_stream_entry(&e.map).is_some_and(|ev| ev.payload["marker"] == marker.as_str())), "the event is on the Redis Stream");
        other.shutdown.cancel();
    }
}
