use docket::app::{AppState, Role};
use reqwest::StatusCode;
use tower::ServiceExt;

use crate::on_both_backends;
use crate::support::{TestApp, TestDatabase, shared_redis, test_config};

on_both_backends! {
    async fn health_reports_ok_and_version(backend) {
        let Some(app) = TestApp::spawn(backend).await else { return };
        for path in ["/health", "/health/live", "/api/v1/health"] {
            let (status, body) = app.get_json(path).await;
            assert_eq!(status, StatusCode::OK, "{path}");
            assert_eq!(body["status"], "ok", "{path}");
            assert_eq!(body["version"], env!("CARGO_PKG_VERSION"), "{path}");
        }
    }

    async fn healthcheck_path_and_prefix_are_configurable(backend) {
        let overrides = [("HEALTHCHECK_PATH", "/healthz"), ("API_V1_PREFIX", "/v2")];
        let Some(app) = TestApp::spawn_with(backend, Role::All, &overrides).await else { return };
        assert_eq!(app.get("/healthz").await.status(), StatusCode::OK);
        assert_eq!(app.get("/v2/health").await.status(), StatusCode::OK);
        assert_eq!(app.get("/v2/openapi.json").await.status(), StatusCode::OK);
        assert_eq!(app.get("/api/v1/health").await.status(), StatusCode::NOT_FOUND);
    }

    async fn healthcheck_path_may_name_an_existing_probe(backend) {
        let overrides = [("HEALTHCHECK_PATH", "/health/ready")];
        let Some(app) = TestApp::spawn_with(backend, Role::All, &overrides).await else { return };
        let (status, body) = app.get_json("/health/ready").await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["status"], "ready", "the readiness probe, not a second /health");
    }

    async fn ready_when_database_is_migrated(backend) {
        let Some(app) = TestApp::spawn(backend).await else { return };
        let (status, body) = app.get_json("/health/ready").await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["status"], "ready");
        assert_eq!(body["failing"], serde_json::json!([]));
        assert_eq!(body["checks"]["database"]["status"], "up");
        assert_eq!(body["checks"]["migrations"]["status"], "up");
        assert_eq!(body["checks"]["redis"]["status"], "skipped");
    }

    async fn not_ready_until_migrations_are_applied(backend) {
        let overrides = [("AUTO_MIGRATE", "false")];
        let Some(app) = TestApp::spawn_with(backend, Role::Api, &overrides).await else { return };
        let (status, body) = app.get_json("/health/ready").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
        assert_eq!(body["failing"], serde_json::json!(["migrations"]));
        assert!(body["checks"]["migrations"]["detail"].as_str().unwrap().contains("docket migrate"));

        app.state.store.migrate().await.unwrap();
        let (status, body) = app.get_json("/health/ready").await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }

    async fn ready_checks_redis_when_configured(backend) {
        let Some(redis) = shared_redis() else { return };
        let url = redis.url();
        let Some(app) = TestApp::spawn_with(backend, Role::All, &[("REDIS_URL", &url)]).await else { return };
        let (status, body) = app.get_json("/health/ready").await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["checks"]["redis"]["status"], "up");

        let dead = format!("redis://127.0.0.1:{}/0", crate::support::free_port());
        let Some(app) = TestApp::spawn_with(backend, Role::All, &[("REDIS_URL", &dead)]).await else { return };
        let (status, body) = app.get_json("/health/ready").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
        assert_eq!(body["status"], "unavailable");
        assert_eq!(body["failing"], serde_json::json!(["redis"]));
        assert_eq!(body["checks"]["database"]["status"], "up");
    }

    async fn readiness_fails_while_draining(backend) {
        let Some(db) = TestDatabase::new(backend).await else { return };
        let state = AppState::initialise(test_config(&db, &[])).await.unwrap();
        // Once shutdown begins the listener closes, so ask the router directly, as a request that
        // was already being handled would.
        let router = docket::http::router(state.clone(), Role::All);
        state.shutdown.cancel();
        let request = axum::http::Request::get("/health/ready").body(axum::body::Body::empty()).unwrap();
        let response = router.oneshot(request).await.unwrap();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX).await.unwrap();
        let body: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(body["failing"], serde_json::json!(["shutdown"]));
        state.store.close().await;
    }

    async fn worker_and_scheduler_roles_serve_only_health_and_metrics(backend) {
        for role in [Role::Worker, Role::Scheduler] {
            let Some(app) = TestApp::spawn_with(backend, role, &[]).await else { return };
            assert_eq!(app.get("/health/live").await.status(), StatusCode::OK);
            assert_eq!(app.get("/health/ready").await.status(), StatusCode::OK);
            assert_eq!(app.get("/metrics").await.status(), StatusCode::OK);
            assert_eq!(app.get("/docs").await.status(), StatusCode::NOT_FOUND);
            assert_eq!(app.get("/api/v1/health").await.status(), StatusCode::NOT_FOUND);
        }
    }

    async fn docs_pages_and_openapi_document(backend) {
        let Some(app) = TestApp::spawn(backend).await else { return };
        let (status, spec) = app.get_json("/api/v1/openapi.json").await;
        assert_eq!(status, StatusCode::OK);
        assert!(spec["openapi"].as_str().unwrap().starts_with("3."));
        for path in ["/health", "/health/live", "/health/ready", "/metrics", "/api/v1/health"] {
            assert!(spec["paths"][path]["get"].is_object(), "{path} missing from the spec");
        }
        let ids: Vec<&str> = spec["paths"]
            .as_object()
            .unwrap()
            .values()
            .flat_map(|item| item.as_object().unwrap().values())
            .filter_map(|op| op["operationId"].as_str())
            .collect();
        let mut unique = ids.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(ids.len(), unique.len(), "operation ids must be unique: {ids:?}");

        // Every operation lists the refusals the middleware and extractors may give it.
        let mut public = Vec::new();
        for (path, item) in spec["paths"].as_object().unwrap() {
            for (method, operation) in item.as_object().unwrap() {
                let listed = operation["responses"].as_object().unwrap();
                let lacks = |statuses: &[&str]| -> Vec<String> {
                    statuses.iter().filter(|s| !listed.contains_key(**s)).map(|s| (*s).to_owned()).collect()
                };
                if operation["security"].as_array().is_some_and(|any_of| any_of.contains(&serde_json::json!({}))) {
                    public.push(format!("{method} {path}"));
                } else if path.starts_with("/api/v1/") {
                    assert_eq!(lacks(&["401", "403", "429"]), Vec::<String>::new(), "{method} {path}");
                }
                if operation["requestBody"].is_object() {
                    assert_eq!(lacks(&["400", "413", "415", "422"]), Vec::<String>::new(), "{method} {path}");
                }
                if operation["parameters"].as_array().is_some_and(|p| !p.is_empty()) {
                    assert_eq!(lacks(&["400", "422"]), Vec::<String>::new(), "{method} {path}");
                }
                if path.contains('{') {
                    assert_eq!(lacks(&["404"]), Vec::<String>::new(), "{method} {path}");
                }
            }
        }
        public.sort();
        assert_eq!(public, ["get /api/v1/health", "get /health", "get /health/live", "get /health/ready",
                            "post /api/v1/auth/login", "post /api/v1/auth/refresh"]);
        let metrics = spec["paths"]["/metrics"]["get"]["responses"].as_object().unwrap();
        assert_eq!(metrics.keys().collect::<Vec<_>>(), ["200", "401", "405", "408", "500"],
                   "only what the metrics endpoint answers, and what any request may meet");

        // What OpenAPI 3.1 requires and generators rely on.
        assert_eq!(spec["servers"], serde_json::json!([{ "url": "/" }]));
        for (path, item) in spec["paths"].as_object().unwrap() {
            for (method, operation) in item.as_object().unwrap() {
                let id = operation["operationId"].as_str().unwrap_or_default();
                assert!(id.contains('_'), "{method} {path}: operation id {id:?} should say what it does on what");
                for (status, response) in operation["responses"].as_object().unwrap() {
                    let description = response["description"].as_str().unwrap_or_default();
                    assert!(!description.is_empty(), "{method} {path} {status} has no description");
                }
                for status in ["405", "408", "500"] {
                    assert!(operation["responses"][status].is_object(), "{method} {path} lacks {status}");
                }
                if let Some(limited) = operation["responses"].get("429") {
                    assert_eq!(limited["headers"]["Retry-After"]["schema"]["type"], "integer", "{method} {path}");
                }
            }
        }
        let schemas = spec["components"]["schemas"].as_object().unwrap();
        for (name, schema) in schemas.iter().filter(|(name, _)| name.starts_with("Page_")) {
            let item = name.trim_start_matches("Page_");
            assert_eq!(schema["properties"]["items"]["items"]["$ref"], format!("#/components/schemas/{item}"), "{name}");
        }
        for (schema, field) in [("CreateTask", "payload"), ("UpdateTask", "payload"), ("NewCase", "subject")] {
            let required = schemas[schema]["required"].as_array().cloned().unwrap_or_default();
            assert!(!required.contains(&serde_json::json!(field)), "{schema}.{field} is optional");
        }
        assert_eq!(schemas["CreateTask"]["properties"]["payload"]["$ref"], "#/components/schemas/TaskPayload");
        assert_eq!(schemas["TaskPayload"]["properties"]["pipeline"]["items"]["$ref"], "#/components/schemas/PipelineStep");
        let policy = &spec["paths"]["/api/v1/policy"]["put"]["requestBody"]["content"]["application/json"]["schema"];
        assert_eq!(policy["$ref"], "#/components/schemas/PolicyDocument");
        assert_eq!(schemas["PolicyRule"]["properties"]["when"]["$ref"], "#/components/schemas/PolicyCondition");
        let limit = spec["paths"]["/api/v1/tasks"]["get"]["parameters"].as_array().unwrap().iter()
            .find(|p| p["name"] == "limit").unwrap();
        assert_eq!((limit["schema"]["minimum"].as_i64(), limit["schema"]["maximum"].as_i64()), (Some(1), Some(500)));
        assert_eq!(schemas["PreviewSchedule"]["properties"]["count"]["minimum"], 1);
        let export = &spec["paths"]["/api/v1/audit/export"]["get"]["responses"]["200"]["content"];
        assert!(export["text/csv"].is_object() && export["application/x-ndjson"].is_object(), "{export}");
        let stream = &spec["paths"]["/api/v1/events/stream"]["get"]["responses"]["200"]["content"];
        assert!(stream["text/event-stream"].is_object(), "{stream}");
        let members = &spec["components"]["schemas"]["ErrorDetail"]["properties"]["details"]["properties"];
        assert_eq!(members["field"]["type"], "string", "details declare their members");
        let details = &spec["components"]["schemas"]["ErrorDetail"]["properties"]["details"];
        assert!(details.to_string().contains("null"), "details may be null: {details}");
        let payload = &spec["components"]["schemas"]["Envelope"]["properties"]["payload"];
        assert!(payload.get("type").is_none(), "an event's payload is any JSON value: {payload}");

        for (path, marker) in [("/docs", "swagger-ui"), ("/redoc", "redoc")] {
            let response = app.get(path).await;
            assert_eq!(response.status(), StatusCode::OK, "{path}");
            assert!(response.headers()["content-type"].to_str().unwrap().starts_with("text/html"));
            let html = response.text().await.unwrap();
            assert!(html.contains(marker), "{path}");
            assert!(html.contains("/api/v1/openapi.json"), "{path} must point at the spec");
            // Everything the page loads comes from Docket itself (no CDN: it works offline).
            assert!(!html.contains("http:") && !html.contains("https:"), "{path}: {html}");
            let assets: Vec<&str> = html.split(['"']).filter(|part| part.starts_with(&format!("{path}/assets/"))).collect();
            assert!(!assets.is_empty(), "{path}: {html}");
            for asset in assets {
                let response = app.get(asset).await;
                assert_eq!(response.status(), StatusCode::OK, "{asset}");
                let content_type = response.headers()["content-type"].to_str().unwrap().to_owned();
                assert!(content_type.starts_with(if asset.ends_with(".css") { "text/css" } else { "text/javascript" }), "{asset}: {content_type}");
                assert!(response.headers()["cache-control"].to_str().unwrap().contains("immutable"), "{asset}");
                assert!(!response.bytes().await.unwrap().is_empty(), "{asset}");
            }
        }
        let swagger = app.get("/docs/assets/swagger-ui-5.36.0/swagger-ui-bundle.js").await.text().await.unwrap();
        assert!(swagger.contains("SwaggerUIBundle"), "the vendored Swagger UI bundle");
        let redoc = app.get("/redoc/assets/redoc-2.5.4/redoc.standalone.js").await.text().await.unwrap();
        assert!(redoc.contains("Redoc"), "the vendored ReDoc bundle");
    }
}
