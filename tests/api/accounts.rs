//! Account and tenant rules: who may change whom, what outlives an account, what is shown to whom.

use docket::auth::Role;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::on_both_backends;
use crate::support::TestApp;

fn assert_error(body: &Value, code: &str) {
    assert_eq!(body["error"]["code"], code, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{body}"
    );
}

async fn user_status(app: &TestApp, user_id: &str) -> (String, String, String) {
    docket::with_pool!(&app.state.store, pool => {
        sqlx::query_as("SELECT status, role, password_hash FROM users WHERE id = $1").bind(user_id).fetch_one(pool).await
    })
    .unwrap()
}

on_both_backends! {
    async fn only_a_platform_admin_may_change_a_platform_admin(backend) {
        let Some(app) = TestApp::spawn(backend).await else { return };
        let root = app.sign_in_as("acme", "root@acme.test", Role::Admin, true).await;
        let admin = app.sign_in("acme", "ann@acme.test", Role::Admin).await;
        let before = user_status(&app, &root.user_id).await;
        let path = format!("/api/v1/users/{}", root.user_id);
        let attempts = [
            json!({ "password": "a brand new password" }),
            json!({ "status": "disabled" }),
            json!({ "role": "viewer" }),
            json!({ "name": "Demoted" }),
        ];
        for attempt in attempts {
            let (status, body) = app.call(Method::PATCH, &path, &admin.access_token, Some(attempt.clone())).await;
            assert_eq!(status, StatusCode::FORBIDDEN, "{attempt}: {body}");
            assert_error(&body, "platform_admin_protected");
        }
        let (status, body) = app.call(Method::DELETE, &path, &admin.access_token, None).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
        assert_error(&body, "platform_admin_protected");
        assert_eq!(user_status(&app, &root.user_id).await, before, "nothing changed");
        let (status, me) = app.call(Method::GET, "/api/v1/auth/me", &root.access_token, None).await;
        assert_eq!(status, StatusCode::OK, "the platform admin's session survives: {me}");
        assert_eq!(me["user"]["name"], "root@acme.test");

        // Another platform admin may.
        let peer = app.sign_in_as("acme", "peer@acme.test", Role::Admin, true).await;
        let (status, body) = app.call(Method::PATCH, &path, &peer.access_token, Some(json!({ "name": "Root" }))).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["name"], "Root");
        // A tenant admin still manages everyone else.
        let rita = app.create_user("acme", "rita@acme.test", Role::Reviewer, false).await;
        let (status, body) = app.call(Method::PATCH, &format!("/api/v1/users/{rita}"), &admin.access_token, Some(json!({ "role": "supervisor" }))).await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    async fn worker_hosts_and_pids_are_for_platform_admins(backend) {
        let Some(app) = TestApp::spawn(backend).await else { return };
        let sue = app.sign_in("acme", "sue@acme.test", Role::Supervisor).await;
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
        let workers = loop {
            let (status, workers) = app.call(Method::GET, "/api/v1/workers", &sue.access_token, None).await;
            assert_eq!(status, StatusCode::OK, "{workers}");
            if !workers.as_array().unwrap().is_empty() {
                break workers;
            }
            assert!(tokio::time::Instant::now() < deadline, "no worker registered");
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        };
        for worker in workers.as_array().unwrap() {
            assert!(worker.get("hostname").is_none() && worker.get("pid").is_none(), "{worker}");
            assert!(worker["id"].is_string() && worker["role"].is_string(), "{worker}");
        }
        let root = app.sign_in_as("acme", "root@acme.test", Role::Admin, true).await;
        let (status, workers) = app.call(Method::GET, "/api/v1/workers", &root.access_token, None).await;
        assert_eq!(status, StatusCode::OK, "{workers}");
        let pid = i64::from(std::process::id());
        assert!(workers.as_array().unwrap().iter().any(|w| w["hostname"].is_string() && w["pid"] == pid), "{workers}");
    }
}
