use docket::app::Role;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::on_both_backends;
use crate::support::TestApp;

/// Sends `request` as written (for bodies reqwest would frame differently) and reads the reply.
async fn raw_http(host: &str, request: &[u8]) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(host).await.unwrap();
    stream.write_all(request).await.unwrap();
    let mut reply = Vec::new();
    // The server may answer and close before it has read the whole body.
    let _ = stream.read_to_end(&mut reply).await;
    String::from_utf8_lossy(&reply).into_owned()
}

fn assert_error_shape(body: &Value, code: &str) {
    assert_eq!(body["error"]["code"], code, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{body}"
    );
    assert!(body["error"].get("details").is_some(), "{body}");
}

on_both_backends! {
    async fn unknown_routes_are_404_json(backend) {
        let Some(app) = TestApp::spawn(backend).await else { return };
        for path in ["/nope", "/api/v1/nope", "/health/whatever"] {
            let (status, body) = app.get_json(path).await;
            assert_eq!(status, StatusCode::NOT_FOUND, "{path}");
            assert_error_shape(&body, "not_found");
        }
    }

    async fn wrong_methods_are_405_json_with_allow(backend) {
        let Some(app) = TestApp::spawn(backend).await else { return };
        let response = app.client.delete(app.url("/health")).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert!(response.headers()["allow"].to_str().unwrap().contains("GET"));
        assert_eq!(response.headers()["content-type"], "application/json");
        let body: Value = response.json().await.unwrap();
        assert_error_shape(&body, "method_not_allowed");
    }

    // Found by bench/api/schemathesis.sh: a NUL in `cursor` reached PostgreSQL as text and failed
    // with "invalid byte sequence for encoding UTF8: 0x00", a 500.
    async fn nul_characters_are_refused_not_500(backend) {
        let Some(app) = TestApp::spawn(backend).await else { return };
        let admin = app.sign_in("acme", "ada@acme.test", docket::auth::Role::Admin).await;
        // PostgreSQL refuses NUL in text parameters; these used to be 500s there (found by schemathesis).
        for path in ["/api/v1/users?cursor=a%00b", "/api/v1/api-keys?cursor=a%00b", "/api/v1/tasks?cursor=a%00b", "/api/v1/runs?task_id=x%00y"] {
            let (status, body) = app.call(Method::GET, path, &admin.access_token, None).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{path}: {body}");
            assert_error_shape(&body, "invalid_characters");
        }
        for path in ["/api/v1/users?cursor=zzz", "/api/v1/runs?task_id=xy"] {
            let (status, body) = app.call(Method::GET, path, &admin.access_token, None).await;
            assert_eq!(status, StatusCode::OK, "{path}: {body}");
        }
        let body = json!({ "topic": "case.note", "payload": {}, "idempotency_key": "a\u{0}b" });
        let (status, reply) = app.call(Method::POST, "/api/v1/events", &admin.access_token, Some(body)).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{reply}");
        assert_error_shape(&reply, "validation_failed");
        let (status, reply) = app.call(Method::POST, "/api/v1/reviews/next", &admin.access_token, Some(json!({ "queue": "\u{0}" }))).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{reply}");
        // An escaped backslash followed by "u0000" is ordinary text, not a NUL.
        let body = json!({ "topic": "case.note", "payload": { "text": "C:\\u0000" } });
        let (status, reply) = app.call(Method::POST, "/api/v1/events", &admin.access_token, Some(body)).await;
        assert!(status.is_success(), "{status}: {reply}");
    }

    async fn refusals_name_the_field_and_say_what_is_wrong(backend) {
        let Some(app) = TestApp::spawn(backend).await else { return };
        let ops = app.sign_in("acme", "ada@acme.test", docket::auth::Role::Admin).await;
        let clerk = app.sign_in("acme", "carl@acme.test", docket::auth::Role::Reviewer).await;
        let refused = |body: &Value| (body["error"]["details"]["field"].clone(), body["error"]["message"].as_str().unwrap_or_default().to_owned());

        let task = json!({ "title": "x", "schedule_kind": "manual", "payload": {}, "colour": "red" });
        let (status, body) = app.call(Method::POST, "/api/v1/tasks", &ops.access_token, Some(task)).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
        assert_eq!(refused(&body).0, "colour", "{body}");
        assert!(refused(&body).1.contains("unknown field `colour`"), "{body}");

        let cron = |expr: &str| json!({ "title": "x", "schedule_kind": "cron", "schedule_expr": expr, "payload": {} });
        let (status, body) = app.call(Method::POST, "/api/v1/tasks", &ops.access_token, Some(cron("0 25 * * *"))).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
        assert_eq!(refused(&body).0, "schedule_expr");
        assert!(refused(&body).1.contains(r#"the hour field "25" is invalid"#), "{body}");
        let (_, body) = app.call(Method::POST, "/api/v1/tasks", &ops.access_token, Some(cron("0 0 9 * * * 2030"))).await;
        assert!(refused(&body).1.contains("has 7 fields; a cron expression has 5"), "{body}");

        let cheque = |reference: &str, amount: &str| json!({ "type": "cheque", "reference": reference, "amount": amount, "currency": "USD" });
        let huge = format!("1{}", "0".repeat(30));
        let (status, body) = app.call(Method::POST, "/api/v1/cases", &clerk.access_token, Some(cheque("R-1", &huge))).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
        assert_eq!(refused(&body), (json!("amount"), "amount: is too large: at most 922337203685477".to_owned()), "{body}");

        // Limits count characters: 200 "é" are 200 characters (400 bytes).
        let (status, body) = app.call(Method::POST, "/api/v1/cases", &clerk.access_token, Some(cheque(&"é".repeat(200), "1.00"))).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        let (status, body) = app.call(Method::POST, "/api/v1/cases", &clerk.access_token, Some(cheque(&"é".repeat(201), "1.00"))).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
        assert_eq!(refused(&body).0, "reference");
        let (status, body) = app.call(Method::GET, "/api/v1/cases", &clerk.access_token, None).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body["items"].as_array().map(Vec::len), Some(1), "refused cases change nothing: {body}");
    }

    async fn oversized_bodies_are_413_json(backend) {
        let overrides = [("MAX_BODY_BYTES", "1024")];
        let Some(app) = TestApp::spawn_with(backend, Role::All, &overrides).await else { return };
        let response = app
            .client
            .post(app.url("/api/v1/health"))
            .header("content-type", "application/json")
            .body(vec![b'x'; 4096])
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
        let body: Value = response.json().await.unwrap();
        assert_error_shape(&body, "payload_too_large");
        assert_eq!(body["error"]["details"]["limit_bytes"], 1024, "{body}");
        assert_eq!(body["error"]["details"]["setting"], "MAX_BODY_BYTES", "{body}");
        assert!(body["error"]["message"].as_str().unwrap().contains("1024 bytes"), "{body}");

        // Without Content-Length the cap is found while reading; the answer still states it.
        let admin = app.sign_in("acme", "ada@acme.test", docket::auth::Role::Admin).await;
        let payload = format!(r#"{{"topic":"case.note","payload":{{"text":"{}"}}}}"#, "x".repeat(4096));
        let host = app.url("").trim_start_matches("http://").trim_end_matches('/').to_owned();
        let request = format!(
            "POST /api/v1/events HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {}\r\n\
             Content-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n\
             {:x}\r\n{payload}\r\n0\r\n\r\n",
            admin.access_token,
            payload.len(),
        );
        let reply = raw_http(&host, request.as_bytes()).await;
        assert!(reply.starts_with("HTTP/1.1 413"), "{reply}");
        assert!(reply.contains(r#""limit_bytes":1024"#), "{reply}");
    }

    async fn request_ids_are_echoed_or_generated(backend) {
        let Some(app) = TestApp::spawn(backend).await else { return };
        let response = app.client.get(app.url("/health")).header("x-request-id", "client-42").send().await.unwrap();
        assert_eq!(response.headers()["x-request-id"], "client-42");

        let response = app.get("/nope").await;
        let generated = response.headers()["x-request-id"].to_str().unwrap().to_owned();
        assert!(uuid::Uuid::parse_str(&generated).is_ok(), "{generated}");

        let unusable = "x".repeat(500);
        let response = app.client.get(app.url("/health")).header("x-request-id", &unusable).send().await.unwrap();
        let replaced = response.headers()["x-request-id"].to_str().unwrap();
        assert!(uuid::Uuid::parse_str(replaced).is_ok(), "{replaced}");
    }

    async fn cors_allows_only_configured_origins(backend) {
        let overrides = [("CORS_ORIGINS", r#"["https://app.example.com"]"#)];
        let Some(app) = TestApp::spawn_with(backend, Role::All, &overrides).await else { return };
        let preflight = |origin: &'static str| {
            app.client
                .request(reqwest::Method::OPTIONS, app.url("/api/v1/health"))
                .header("origin", origin)
                .header("access-control-request-method", "GET")
                .send()
        };
        let allowed = preflight("https://app.example.com").await.unwrap();
        assert_eq!(allowed.headers()["access-control-allow-origin"], "https://app.example.com");
        let denied = preflight("https://evil.example.com").await.unwrap();
        assert!(denied.headers().get("access-control-allow-origin").is_none());
    }

    async fn responses_are_compressed_on_request(backend) {
        let Some(app) = TestApp::spawn(backend).await else { return };
        let response = app
            .client
            .get(app.url("/api/v1/openapi.json"))
            .header("accept-encoding", "gzip")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers()["content-encoding"], "gzip");
    }
}
