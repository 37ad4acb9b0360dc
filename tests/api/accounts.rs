//! Account and tenant rules: who may change whom, what outlives an account, what is shown to whom.

use docket::auth::Role;
use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::on_both_backends;
use crate::support::{PASSWORD, TestApp, assert_error, totp_code};

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

    async fn disabling_or_deleting_a_user_revokes_their_api_keys(backend) {
        let Some(app) = TestApp::spawn(backend).await else { return };
        let boss = app.sign_in("acme", "boss@acme.test", Role::Admin).await;
        let mut secrets = Vec::new();
        for who in ["dora@acme.test", "dave@acme.test"] {
            let admin = app.sign_in("acme", who, Role::Admin).await;
            let (status, key) = app.call(Method::POST, "/api/v1/api-keys", &admin.access_token, Some(json!({ "name": who, "scopes": ["users:read"] }))).await;
            assert_eq!(status, StatusCode::CREATED, "{key}");
            let secret = key["secret"].as_str().unwrap().to_owned();
            assert_eq!(app.call(Method::GET, "/api/v1/users", &secret, None).await.0, StatusCode::OK);
            secrets.push((admin.user_id, key["id"].as_str().unwrap().to_owned(), secret));
        }
        let (dora, dora_key, dora_secret) = &secrets[0];
        let (dave, dave_key, dave_secret) = &secrets[1];
        let (status, body) = app.call(Method::PATCH, &format!("/api/v1/users/{dora}"), &boss.access_token, Some(json!({ "status": "disabled" }))).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let (status, body) = app.call(Method::DELETE, &format!("/api/v1/users/{dave}"), &boss.access_token, None).await;
        assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
        for secret in [dora_secret, dave_secret] {
            let (status, body) = app.call(Method::GET, "/api/v1/users", secret, None).await;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
        }
        let (_, keys) = app.call(Method::GET, "/api/v1/api-keys", &boss.access_token, None).await;
        for key in keys["items"].as_array().unwrap() {
            assert!(key["revoked_at"].is_string(), "{key}");
        }
        let revocations: Vec<(String, String)> = docket::with_pool!(&app.state.store, pool => {
            sqlx::query_as("SELECT target_id, summary FROM audit_log WHERE action = 'api_key.revoke' ORDER BY seq")
                .fetch_all(pool)
                .await
        })
        .unwrap();
        assert_eq!(revocations.len(), 2, "{revocations:?}");
        assert_eq!(&revocations[0].0, dora_key);
        assert!(revocations[0].1.contains("creator_disabled"), "{revocations:?}");
        assert_eq!(&revocations[1].0, dave_key);
        assert!(revocations[1].1.contains("creator_deleted"), "{revocations:?}");
    }

    async fn a_key_of_a_disabled_creator_is_refused_before_any_revoke(backend) {
        let Some(app) = TestApp::spawn(backend).await else { return };
        let admin = app.sign_in("acme", "ann@acme.test", Role::Admin).await;
        let (_, key) = app.call(Method::POST, "/api/v1/api-keys", &admin.access_token, Some(json!({ "name": "bot", "scopes": ["users:read"] }))).await;
        let secret = key["secret"].as_str().unwrap();
        assert_eq!(app.call(Method::GET, "/api/v1/users", secret, None).await.0, StatusCode::OK);
        // The account changes without going through the API (say, another process mid-update).
        docket::with_pool!(&app.state.store, pool => {
            sqlx::query("UPDATE users SET status = 'disabled' WHERE id = $1").bind(&admin.user_id).execute(pool).await.map(|_| ())
        })
        .unwrap();
        let (status, body) = app.call(Method::GET, "/api/v1/users", secret, None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
        assert_error(&body, "invalid_token");
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

    async fn totp_secrets_are_encrypted_at_rest_and_old_rows_are_sealed_at_start(backend) {
        let Some(app) = TestApp::spawn(backend).await else { return };
        let ada = app.sign_in("acme", "ada@acme.test", Role::Admin).await;
        let secret = ada.totp_secret.clone().unwrap();
        let stored = |app: &TestApp, id: String| {
            let store = app.state.store.clone();
            async move {
                docket::with_pool!(&store, pool => {
                    sqlx::query_scalar::<_, String>("SELECT totp_secret FROM users WHERE id = $1").bind(&id).fetch_one(pool).await
                })
                .unwrap()
            }
        };
        let sealed = stored(&app, ada.user_id.clone()).await;
        assert!(sealed.starts_with("enc1:"), "{sealed}");
        assert!(!sealed.contains(&secret), "the column is not the base32 secret");
        let (status, body) = app.login(json!({ "email": "ada@acme.test", "password": PASSWORD, "totp_code": totp_code(&secret, 1) })).await;
        assert_eq!(status, StatusCode::OK, "sign-in with TOTP works on a sealed secret: {body}");

        // A row written before encryption holds the plain base32 secret.
        let bob = app.sign_in("acme", "bob@acme.test", Role::Admin).await;
        let bob_secret = bob.totp_secret.clone().unwrap();
        docket::with_pool!(&app.state.store, pool => {
            sqlx::query("UPDATE users SET totp_secret = $1 WHERE id = $2").bind(&bob_secret).bind(&bob.user_id).execute(pool).await.map(|_| ())
        })
        .unwrap();
        // A restart on the same database seals it, and the user signs in as before.
        let config = app.state.config.as_ref().clone();
        let restarted = docket::app::AppState::initialise(config).await.unwrap();
        let resealed = docket::with_pool!(&restarted.store, pool => {
            sqlx::query_scalar::<_, String>("SELECT totp_secret FROM users WHERE id = $1").bind(&bob.user_id).fetch_one(pool).await
        })
        .unwrap();
        assert!(resealed.starts_with("enc1:") && !resealed.contains(&bob_secret), "{resealed}");
        assert_eq!(stored(&app, bob.user_id.clone()).await, resealed);
        let (status, body) = app.login(json!({ "email": "bob@acme.test", "password": PASSWORD, "totp_code": totp_code(&bob_secret, 1) })).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        // Starting again changes nothing.
        let config = app.state.config.as_ref().clone();
        docket::app::AppState::initialise(config).await.unwrap();
        assert_eq!(stored(&app, bob.user_id.clone()).await, resealed);
    }

    async fn the_second_sign_in_step_uses_a_single_use_expiring_token(backend) {
        let Some(app) = TestApp::spawn(backend).await else { return };
        let ada = app.sign_in("acme", "ada@acme.test", Role::Admin).await;
        let secret = ada.totp_secret.clone().unwrap();
        let first_step = || app.login(json!({ "email": "ada@acme.test", "password": PASSWORD }));
        let (status, body) = first_step().await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert_error(&body, "mfa_required");
        let token = body["error"]["details"]["mfa_token"].as_str().unwrap().to_owned();
        let stored: i64 = docket::with_pool!(&app.state.store, pool => {
            sqlx::query_scalar("SELECT COUNT(*) FROM mfa_challenges WHERE token_hash = $1").bind(&token).fetch_one(pool).await
        })
        .unwrap();
        assert_eq!(stored, 0, "only a hash of the token is stored");

        // A wrong code uses the token up and hands out a new one (and counts as a failure).
        let (status, body) = app.login(json!({ "mfa_token": token, "totp_code": "000000" })).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert_error(&body, "invalid_mfa_code");
        let retry = body["error"]["details"]["mfa_token"].as_str().unwrap().to_owned();
        assert_ne!(retry, token);
        let (status, body) = app.login(json!({ "mfa_token": token, "totp_code": totp_code(&secret, 1) })).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "single use: {body}");
        assert_error(&body, "invalid_token");
        let (status, body) = app.login(json!({ "mfa_token": retry, "totp_code": totp_code(&secret, 1) })).await;
        assert_eq!(status, StatusCode::OK, "the token and the code sign in, no password: {body}");
        assert!(body["access_token"].is_string());
        let (status, body) = app.login(json!({ "mfa_token": retry, "recovery_code": "whatever" })).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "used: {body}");
        assert_error(&body, "invalid_token");

        // Five minutes later the token is worthless.
        let (_, body) = first_step().await;
        let stale = body["error"]["details"]["mfa_token"].as_str().unwrap().to_owned();
        docket::with_pool!(&app.state.store, pool => {
            sqlx::query("UPDATE mfa_challenges SET expires_at = $1 WHERE used_at IS NULL")
                .bind(chrono::Utc::now() - chrono::Duration::seconds(1))
                .execute(pool)
                .await
                .map(|_| ())
        })
        .unwrap();
        let (status, body) = app.login(json!({ "mfa_token": stale, "totp_code": totp_code(&secret, 2) })).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
        assert_error(&body, "invalid_token");
        let (status, body) = app.login(json!({ "mfa_token": "dm_made_up", "totp_code": totp_code(&secret, 2) })).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
        assert_error(&body, "invalid_token");
    }
}
