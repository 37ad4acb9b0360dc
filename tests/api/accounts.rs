//! Account and tenant rules: who may change whom, what outlives an account, what is shown to whom.

use docket::auth::Role;
use reqwest::{Method, StatusCode};

use crate::on_both_backends;
use crate::support::TestApp;

on_both_backends! {
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
