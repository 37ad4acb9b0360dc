use docket::app::Role;
use reqwest::StatusCode;

use crate::on_both_backends;
use crate::support::TestApp;

on_both_backends! {
    async fn metrics_expose_requests_pool_and_build_info(backend) {
        let Some(app) = TestApp::spawn(backend).await else { return };
        app.get("/health").await;
        app.get("/does-not-exist").await;
        let response = app.get("/metrics").await;
        assert_eq!(response.status(), StatusCode::OK);
        assert!(response.headers()["content-type"].to_str().unwrap().starts_with("text/plain"));
        let text = response.text().await.unwrap();
        for needle in [
            r#"http_requests_total{method="GET",route="/health",status="200"}"#,
            r#"route="unmatched",status="404""#,
            "http_request_duration_seconds_bucket{",
            r#"db_pool_connections{state="idle"}"#,
            "db_pool_max_connections 5",
            r#"docket_build_info{version=""#,
            r#"docket_processes_alive{role="all"}"#,
        ] {
            assert!(text.contains(needle), "metrics lack {needle}:\n{text}");
        }
    }

    async fn metrics_token_protects_the_endpoint(backend) {
        let overrides = [("METRICS_TOKEN", "scrape-me")];
        let Some(app) = TestApp::spawn_with(backend, Role::All, &overrides).await else { return };
        let (status, body) = app.get_json("/metrics").await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert_eq!(body["error"]["code"], "unauthorized");
        let wrong = app.client.get(app.url("/metrics")).bearer_auth("nope").send().await.unwrap();
        assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
        let right = app.client.get(app.url("/metrics")).bearer_auth("scrape-me").send().await.unwrap();
        assert_eq!(right.status(), StatusCode::OK);
        // Health stays open for probes.
        assert_eq!(app.get("/health").await.status(), StatusCode::OK);
    }

    async fn running_processes_are_registered_and_deregister_on_shutdown(backend) {
        let Some(app) = TestApp::spawn_with(backend, Role::Worker, &[]).await else { return };
        // The process registers before it starts answering, so one answer means it is registered.
        assert_eq!(app.get("/health").await.status(), StatusCode::OK);
        let store = app.state.store.clone();
        let since = chrono::Utc::now() - chrono::Duration::minutes(1);
        let alive = docket::nodes::list_alive(&store, since).await.unwrap();
        assert_eq!(alive.len(), 1, "{alive:?}");
        assert_eq!(alive[0].role, "worker");
        assert_eq!(alive[0].pid, i32::try_from(std::process::id()).unwrap());

        let node = alive[0].clone();
        let later = chrono::Utc::now() + chrono::Duration::seconds(5);
        docket::nodes::heartbeat(&store, &node, later).await.unwrap();
        let refreshed = docket::nodes::list_alive(&store, since).await.unwrap();
        assert_eq!(refreshed[0].heartbeat_at.timestamp(), later.timestamp());

        let check_store = docket::store::Store::connect(&app.state.config).await.unwrap();
        app.shutdown().await.unwrap();
        assert!(docket::nodes::list_alive(&check_store, since).await.unwrap().is_empty());
        check_store.close().await;
    }

    async fn stale_processes_are_pruned(backend) {
        let Some(app) = TestApp::spawn_with(backend, Role::Scheduler, &[]).await else { return };
        assert_eq!(app.get("/health").await.status(), StatusCode::OK);
        let store = &app.state.store;
        let long_ago = chrono::Utc::now() - chrono::Duration::days(3);
        let mut crashed = docket::nodes::Node::this_process("worker", long_ago);
        crashed.pid = 1;
        docket::nodes::register(store, &crashed).await.unwrap();
        let pruned = docket::nodes::prune(store, chrono::Utc::now() - chrono::Duration::days(1)).await.unwrap();
        assert_eq!(pruned, 1);
        let alive = docket::nodes::list_alive(store, long_ago).await.unwrap();
        assert_eq!(alive.len(), 1);
        assert_eq!(alive[0].role, "scheduler");
    }
}
