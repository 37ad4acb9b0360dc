use docket::app::Role as ProcessRole;
use docket::auth::Role;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::on_both_backends;
use crate::support::{PASSWORD, TestApp, assert_error, totp_code};

on_both_backends! {
    async fn login_refresh_rotation_and_reuse_detection(backend) {
        let Some(app) = TestApp::spawn(backend).await else { return };
        let login = app.sign_in("acme", "rita@acme.test", Role::Reviewer).await;
        let (status, me) = app.call(Method::GET, "/api/v1/auth/me", &login.access_token, None).await;
        assert_eq!(status, StatusCode::OK, "{me}");
        assert_eq!(me["user"]["email"], "rita@acme.test");
        assert_eq!(me["user"]["role"], "reviewer");

        let refresh = |token: String| {
            let app = &app;
            async move {
                let response = app.client.post(app.url("/api/v1/auth/refresh")).json(&json!({ "refresh_token": token })).send().await.unwrap();
                let status = response.status();
                (status, response.json::<Value>().await.unwrap())
            }
        };
        let (status, second) = refresh(login.refresh_token.clone()).await;
        assert_eq!(status, StatusCode::OK, "{second}");
        assert_ne!(second["refresh_token"], Value::from(login.refresh_token.clone()), "rotated");
        let second_access = second["access_token"].as_str().unwrap().to_owned();
        assert_eq!(app.call(Method::GET, "/api/v1/auth/me", &second_access, None).await.0, StatusCode::OK);

        // Presenting the first (already used) refresh token again ends the whole session.
        let (status, body) = refresh(login.refresh_token.clone()).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert_error(&body, "session_ended");
        let (status, body) = app.call(Method::GET, "/api/v1/auth/me", &second_access, None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert_error(&body, "session_ended");
        let (status, _) = refresh(second["refresh_token"].as_str().unwrap().to_owned()).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "the rotated token died with its family");

        let (status, body) = refresh("dr_unknown".to_owned()).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert_error(&body, "invalid_token");
    }

    async fn unknown_email_and_wrong_password_look_the_same(backend) {
        let Some(app) = TestApp::spawn(backend).await else { return };
        app.create_user("acme", "vera@acme.test", Role::Viewer, false).await;
        let (s1, wrong_password) = app.login(json!({ "email": "vera@acme.test", "password": "not the password" })).await;
        let (s2, unknown) = app.login(json!({ "email": "nobody@acme.test", "password": "not the password" })).await;
        assert_eq!(s1, StatusCode::UNAUTHORIZED);
        assert_eq!(s2, StatusCode::UNAUTHORIZED);
        assert_eq!(wrong_password, unknown);
        assert_error(&unknown, "invalid_credentials");
        // Email is case-insensitive.
        let (status, _) = app.login(json!({ "email": "VERA@acme.test", "password": PASSWORD })).await;
        assert_eq!(status, StatusCode::OK);
    }

    async fn logout_and_session_revocation_end_access(backend) {
        let Some(app) = TestApp::spawn(backend).await else { return };
        let first = app.sign_in("acme", "sam@acme.test", Role::Supervisor).await;
        let (_, second) = app.login(json!({ "email": "sam@acme.test", "password": PASSWORD })).await;
        let second_token = second["access_token"].as_str().unwrap().to_owned();

        let (status, sessions) = app.call(Method::GET, "/api/v1/auth/sessions", &first.access_token, None).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(sessions.as_array().unwrap().len(), 2, "{sessions}");

        let (_, me) = app.call(Method::GET, "/api/v1/auth/me", &second_token, None).await;
        let second_session = me["session_id"].as_str().unwrap().to_owned();
        let (status, _) = app.call(Method::DELETE, &format!("/api/v1/auth/sessions/{second_session}"), &first.access_token, None).await;
        assert_eq!(status, StatusCode::NO_CONTENT);
        assert_eq!(app.call(Method::GET, "/api/v1/auth/me", &second_token, None).await.0, StatusCode::UNAUTHORIZED);

        let (status, _) = app.call(Method::POST, "/api/v1/auth/logout", &first.access_token, None).await;
        assert_eq!(status, StatusCode::NO_CONTENT);
        assert_eq!(app.call(Method::GET, "/api/v1/auth/me", &first.access_token, None).await.0, StatusCode::UNAUTHORIZED);
    }

    async fn idle_sessions_end(backend) {
        let Some(app) = TestApp::spawn(backend).await else { return };
        let login = app.sign_in("acme", "ida@acme.test", Role::Viewer).await;
        let (_, me) = app.call(Method::GET, "/api/v1/auth/me", &login.access_token, None).await;
        let session_id = me["session_id"].as_str().unwrap().to_owned();
        // Pretend the session was last used two hours ago (SESSION_TIMEOUT_MINUTES is 30).
        let two_hours_ago = chrono::Utc::now() - chrono::Duration::hours(2);
        docket::with_pool!(&app.state.store, pool => {
            sqlx::query("UPDATE sessions SET last_seen_at = $1 WHERE id = $2").bind(two_hours_ago).bind(&session_id).execute(pool).await.map(|_| ())
        })
        .unwrap();
        let (status, body) = app.call(Method::GET, "/api/v1/auth/me", &login.access_token, None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert_error(&body, "session_ended");
        let response = app.client.post(app.url("/api/v1/auth/refresh")).json(&json!({ "refresh_token": login.refresh_token })).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "refresh cannot revive an idle session");
    }

    async fn repeated_failures_lock_the_address_out_of_the_account_not_the_owner(backend) {
        let Some(app) = TestApp::spawn_with(backend, ProcessRole::All, &[("TRUSTED_PROXIES", "127.0.0.1")]).await else { return };
        app.create_user("acme", "lou@acme.test", Role::Viewer, false).await;
        let login_from = |ip: &'static str, password: &'static str| {
            let app = &app;
            async move {
                let response = app.client.post(app.url("/api/v1/auth/login")).header("x-forwarded-for", ip)
                    .json(&json!({ "email": "lou@acme.test", "password": password })).send().await.unwrap();
                let status = response.status();
                (status, response.json::<Value>().await.unwrap())
            }
        };
        let (status, wrong) = login_from("203.0.113.7", "wrong password!").await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        for _ in 0..4 {
            assert_eq!(login_from("203.0.113.7", "wrong password!").await.0, StatusCode::UNAUTHORIZED);
        }
        // Locked for the attacker's address, and answered exactly like a wrong password.
        let (status, locked) = login_from("203.0.113.7", PASSWORD).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "locked even with the right password: {locked}");
        assert_eq!(locked, wrong, "a lock is no oracle");
        // The owner, from elsewhere, still signs in, and that does not unlock the attacker.
        let (status, body) = login_from("198.51.100.20", PASSWORD).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(login_from("203.0.113.7", PASSWORD).await.0, StatusCode::UNAUTHORIZED);
    }

    async fn bursts_of_bad_logins_are_refused_before_hashing(backend) {
        let Some(app) = TestApp::spawn(backend).await else { return };
        // Forty at once from one address with a limit of twenty: counted before hashing, so only
        // twenty get as far as a password check.
        let attempts = (0..40).map(|i| app.login(json!({ "email": format!("ghost{i}@acme.test"), "password": "whatever it is" })));
        let results = futures_util::future::join_all(attempts).await;
        let count = |status| results.iter().filter(|(s, _)| *s == status).count();
        assert_eq!(count(StatusCode::TOO_MANY_REQUESTS), 20, "{results:?}");
        assert_eq!(count(StatusCode::UNAUTHORIZED) + count(StatusCode::SERVICE_UNAVAILABLE), 20, "{results:?}");
    }

    async fn password_hashing_is_bounded_and_says_busy(backend) {
        let overrides = [("PASSWORD_HASH_CONCURRENCY", "1"), ("PASSWORD_HASH_QUEUE_SECONDS", "0.01"), ("LOGIN_FAILURES_PER_IP", "1000")];
        let Some(app) = TestApp::spawn_with(backend, ProcessRole::All, &overrides).await else { return };
        let attempts = (0..30).map(|i| {
            let app = &app;
            async move {
                let response = app.client.post(app.url("/api/v1/auth/login"))
                    .json(&json!({ "email": format!("ghost{i}@acme.test"), "password": "whatever it is" })).send().await.unwrap();
                let (status, retry_after) = (response.status(), response.headers().get("retry-after").cloned());
                (status, retry_after, response.json::<Value>().await.unwrap())
            }
        });
        let results = futures_util::future::join_all(attempts).await;
        assert!(results.iter().all(|(s, ..)| [StatusCode::UNAUTHORIZED, StatusCode::SERVICE_UNAVAILABLE].contains(s)), "{results:?}");
        let (_, retry_after, body) = results.iter().find(|(s, ..)| *s == StatusCode::SERVICE_UNAVAILABLE).expect("one slot cannot serve thirty at once");
        assert_error(body, "busy");
        assert_eq!(retry_after.as_ref().map(|v| v.to_str().unwrap()), Some("1"));
    }

    async fn rejected_tokens_from_one_address_are_throttled(backend) {
        let overrides = [("TRUSTED_PROXIES", "127.0.0.1"), ("AUTH_FAILURES_PER_IP", "3")];
        let Some(app) = TestApp::spawn_with(backend, ProcessRole::All, &overrides).await else { return };
        let user = app.sign_in("acme", "val@acme.test", Role::Viewer).await;
        let me_from = |ip: &'static str, token: &str| {
            app.client.get(app.url("/api/v1/auth/me")).bearer_auth(token).header("x-forwarded-for", ip).send()
        };
        for token in ["dk_not_a_key", "not.a.jwt", "dk_nor_this"] {
            assert_eq!(me_from("203.0.113.7", token).await.unwrap().status(), StatusCode::UNAUTHORIZED);
        }
        let refused = me_from("203.0.113.7", &user.access_token).await.unwrap();
        assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
        assert!(refused.headers().contains_key("retry-after"));
        let body: Value = refused.json().await.unwrap();
        assert_error(&body, "too_many_attempts");
        assert_eq!(me_from("198.51.100.20", &user.access_token).await.unwrap().status(), StatusCode::OK, "other addresses are unaffected");
    }

    async fn repeated_failures_from_one_address_are_throttled(backend) {
        let Some(app) = TestApp::spawn(backend).await else { return };
        for i in 0..20 {
            let (status, _) = app.login(json!({ "email": format!("ghost{i}@acme.test"), "password": "whatever it is" })).await;
            assert_eq!(status, StatusCode::UNAUTHORIZED);
        }
        app.create_user("acme", "real@acme.test", Role::Viewer, false).await;
        let (status, body) = app.login(json!({ "email": "real@acme.test", "password": PASSWORD })).await;
        assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
        assert_error(&body, "too_many_attempts");
    }

    async fn admins_must_enrol_in_mfa_and_use_it(backend) {
        let Some(app) = TestApp::spawn(backend).await else { return };
        app.create_user("acme", "ada@acme.test", Role::Admin, false).await;
        let (status, login) = app.login(json!({ "email": "ada@acme.test", "password": PASSWORD })).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(login["mfa_enrolment_required"], true);
        let token = login["access_token"].as_str().unwrap().to_owned();
        let (status, body) = app.call(Method::GET, "/api/v1/users", &token, None).await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        assert_error(&body, "mfa_enrolment_required");

        let (status, enrolment) = app.call(Method::POST, "/api/v1/auth/mfa/enrol", &token, None).await;
        assert_eq!(status, StatusCode::OK);
        assert!(enrolment["otpauth_uri"].as_str().unwrap().starts_with("otpauth://totp/Docket:"));
        let secret = enrolment["secret"].as_str().unwrap().to_owned();
        let (status, body) = app.call(Method::POST, "/api/v1/auth/mfa/confirm", &token, Some(json!({ "code": "000000" }))).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
        let code = totp_code(&secret, 0);
        let (status, codes) = app.call(Method::POST, "/api/v1/auth/mfa/confirm", &token, Some(json!({ "code": code }))).await;
        assert_eq!(status, StatusCode::OK, "{codes}");
        let recovery: Vec<String> = serde_json::from_value(codes["recovery_codes"].clone()).unwrap();
        assert_eq!(recovery.len(), 10);
        assert_eq!(app.call(Method::GET, "/api/v1/users", &token, None).await.0, StatusCode::OK);

        let (status, body) = app.login(json!({ "email": "ada@acme.test", "password": PASSWORD })).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert_error(&body, "mfa_required");
        let (status, body) = app.login(json!({ "email": "ada@acme.test", "password": PASSWORD, "totp_code": code })).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "a code is accepted once");
        assert_error(&body, "invalid_mfa_code");
        let (status, body) = app.login(json!({ "email": "ada@acme.test", "password": PASSWORD, "totp_code": totp_code(&secret, 1) })).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["mfa_enrolment_required"], false);
        let (status, _) = app.login(json!({ "email": "ada@acme.test", "password": PASSWORD, "recovery_code": recovery[0] })).await;
        assert_eq!(status, StatusCode::OK);
        let (status, _) = app.login(json!({ "email": "ada@acme.test", "password": PASSWORD, "recovery_code": recovery[0] })).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "recovery codes work once");

        let (status, _) = app.call(Method::POST, "/api/v1/auth/mfa/disable", &token, Some(json!({ "password": PASSWORD, "code": totp_code(&secret, 1) }))).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "admins cannot turn MFA off");
    }

    async fn api_keys_carry_scopes(backend) {
        let Some(app) = TestApp::spawn(backend).await else { return };
        let admin = app.sign_in("acme", "ada@acme.test", Role::Admin).await;
        let (status, body) = app.call(Method::POST, "/api/v1/api-keys", &admin.access_token, Some(json!({ "name": "bot", "scopes": ["nope:read"] }))).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(body["error"]["details"]["field"], "scopes");

        let (status, created) = app.call(Method::POST, "/api/v1/api-keys", &admin.access_token, Some(json!({ "name": "bot", "scopes": ["users:read"] }))).await;
        assert_eq!(status, StatusCode::CREATED, "{created}");
        let secret = created["secret"].as_str().unwrap().to_owned();
        assert!(secret.starts_with("dk_"));
        let key_id = created["id"].as_str().unwrap().to_owned();

        assert_eq!(app.call(Method::GET, "/api/v1/users", &secret, None).await.0, StatusCode::OK);
        let (status, body) = app.call(Method::GET, "/api/v1/audit", &secret, None).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "lacks audit:read");
        assert_error(&body, "forbidden");
        let new_user = json!({ "email": "x@acme.test", "name": "X", "role": "viewer", "password": PASSWORD });
        assert_eq!(app.call(Method::POST, "/api/v1/users", &secret, Some(new_user)).await.0, StatusCode::FORBIDDEN);

        let (_, list) = app.call(Method::GET, "/api/v1/api-keys", &admin.access_token, None).await;
        assert_eq!(list["items"].as_array().unwrap().len(), 1);
        assert!(!list.to_string().contains(&secret), "the secret is shown once");

        let (status, _) = app.call(Method::DELETE, &format!("/api/v1/api-keys/{key_id}"), &admin.access_token, None).await;
        assert_eq!(status, StatusCode::NO_CONTENT);
        let (status, body) = app.call(Method::GET, "/api/v1/users", &secret, None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert_error(&body, "invalid_token");

        let (_, expiring) = app.call(Method::POST, "/api/v1/api-keys", &admin.access_token, Some(json!({ "name": "temp", "scopes": ["users:read"], "expires_at": (chrono::Utc::now() + chrono::Duration::hours(1)).to_rfc3339() }))).await;
        let expiring_secret = expiring["secret"].as_str().unwrap().to_owned();
        assert_eq!(app.call(Method::GET, "/api/v1/users", &expiring_secret, None).await.0, StatusCode::OK);
        let an_hour_ago = chrono::Utc::now() - chrono::Duration::hours(1);
        docket::with_pool!(&app.state.store, pool => {
            sqlx::query("UPDATE api_keys SET expires_at = $1 WHERE id = $2").bind(an_hour_ago).bind(expiring["id"].as_str().unwrap()).execute(pool).await.map(|_| ())
        })
        .unwrap();
        let (status, body) = app.call(Method::GET, "/api/v1/users", &expiring_secret, None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "expired keys stop working");
        assert!(body["error"]["message"].as_str().unwrap().contains("expired"));

        let past = (chrono::Utc::now() - chrono::Duration::minutes(1)).to_rfc3339();
        let (status, _) = app.call(Method::POST, "/api/v1/api-keys", &admin.access_token, Some(json!({ "name": "old", "scopes": ["users:read"], "expires_at": past }))).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    }

    async fn roles_are_enforced_per_endpoint(backend) {
        let Some(app) = TestApp::spawn(backend).await else { return };
        let platform = app.sign_in_as("acme", "root@acme.test", Role::Admin, true).await;
        let admin = app.sign_in("acme", "ada@acme.test", Role::Admin).await;
        let supervisor = app.sign_in("acme", "sue@acme.test", Role::Supervisor).await;
        let reviewer = app.sign_in("acme", "rob@acme.test", Role::Reviewer).await;
        let viewer = app.sign_in("acme", "val@acme.test", Role::Viewer).await;
        let people = [("platform", &platform), ("admin", &admin), ("supervisor", &supervisor), ("reviewer", &reviewer), ("viewer", &viewer)];

        // (method, path, body, who may) — everyone else gets 403.
        let new_user = |n: usize| json!({ "email": format!("new{n}@acme.test"), "name": "New", "role": "viewer", "password": PASSWORD });
        let matrix: Vec<(Method, &str, Option<Value>, &[&str])> = vec![
            (Method::GET, "/api/v1/tenants", None, &["platform"]),
            (Method::POST, "/api/v1/tenants", Some(json!({ "slug": "other", "name": "Other" })), &["platform"]),
            (Method::GET, "/api/v1/users", None, &["platform", "admin", "supervisor"]),
            (Method::POST, "/api/v1/users", Some(new_user(0)), &["platform", "admin"]),
            (Method::GET, "/api/v1/api-keys", None, &["platform", "admin"]),
            (Method::GET, "/api/v1/audit", None, &["platform", "admin", "supervisor"]),
            (Method::GET, "/api/v1/audit/verify", None, &["platform", "admin", "supervisor"]),
            (Method::GET, "/api/v1/auth/me", None, &["platform", "admin", "supervisor", "reviewer", "viewer"]),
        ];
        for (i, (method, path, body, allowed)) in matrix.into_iter().enumerate() {
            for (who, login) in people {
                let body = body.clone().map(|b| if path == "/api/v1/users" { new_user(i * 10 + who.len()) } else if path == "/api/v1/tenants" { json!({ "slug": format!("t-{who}"), "name": "T" }) } else { b });
                let (status, response) = app.call(method.clone(), path, &login.access_token, body).await;
                if allowed.contains(&who) {
                    assert!(status.is_success(), "{who} {method} {path}: {status} {response}");
                } else {
                    assert_eq!(status, StatusCode::FORBIDDEN, "{who} {method} {path}: {response}");
                    assert_error(&response, "forbidden");
                }
            }
        }
        let (status, _) = app.call(Method::GET, "/api/v1/users", "", None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "no token");
    }

    async fn tenants_cannot_see_each_other(backend) {
        let Some(app) = TestApp::spawn(backend).await else { return };
        let a = app.sign_in("alpha", "ann@alpha.test", Role::Admin).await;
        let b = app.sign_in("beta", "ben@beta.test", Role::Admin).await;
        let b_viewer = app.create_user("beta", "bea@beta.test", Role::Viewer, false).await;
        let (_, b_key) = app.call(Method::POST, "/api/v1/api-keys", &b.access_token, Some(json!({ "name": "k", "scopes": ["users:read"] }))).await;
        let b_key_id = b_key["id"].as_str().unwrap();
        let (_, b_me) = app.call(Method::GET, "/api/v1/auth/me", &b.access_token, None).await;
        let b_session = b_me["session_id"].as_str().unwrap();

        let (_, users) = app.call(Method::GET, "/api/v1/users", &a.access_token, None).await;
        let emails: Vec<&str> = users["items"].as_array().unwrap().iter().map(|u| u["email"].as_str().unwrap()).collect();
        assert_eq!(emails, ["ann@alpha.test"]);

        let probes: Vec<(Method, String, Option<Value>)> = vec![
            (Method::GET, format!("/api/v1/users/{b_viewer}"), None),
            (Method::PATCH, format!("/api/v1/users/{b_viewer}"), Some(json!({ "name": "pwned" }))),
            (Method::DELETE, format!("/api/v1/users/{b_viewer}"), None),
            (Method::GET, format!("/api/v1/tenants/{}", b.tenant_id), None),
            (Method::PATCH, format!("/api/v1/tenants/{}", b.tenant_id), Some(json!({ "name": "pwned" }))),
            (Method::DELETE, format!("/api/v1/api-keys/{b_key_id}"), None),
            (Method::DELETE, format!("/api/v1/auth/sessions/{b_session}"), None),
        ];
        for (method, path, body) in probes {
            let (status, response) = app.call(method.clone(), &path, &a.access_token, body).await;
            assert_eq!(status, StatusCode::NOT_FOUND, "{method} {path}: {response}");
        }
        // Nothing of B's changed.
        let (_, viewer) = app.call(Method::GET, &format!("/api/v1/users/{b_viewer}"), &b.access_token, None).await;
        assert_eq!(viewer["name"], "bea@beta.test");
        assert_eq!(app.call(Method::GET, "/api/v1/auth/me", &b.access_token, None).await.0, StatusCode::OK);
        let (_, audit) = app.call(Method::GET, "/api/v1/audit", &a.access_token, None).await;
        let records = audit["items"].as_array().unwrap();
        assert!(!records.is_empty());
        assert!(records.iter().all(|r| r["tenant_id"] == a.tenant_id.as_str()));
    }

    async fn bad_tokens_are_401_with_the_error_shape(backend) {
        let Some(app) = TestApp::spawn(backend).await else { return };
        let login = app.sign_in("acme", "tom@acme.test", Role::Viewer).await;
        let claims: Value = {
            let payload = login.access_token.split('.').nth(1).unwrap();
            use base64::Engine;
            serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap()
        };
        let sign = |key: &str, exp: i64| {
            let mut claims = claims.clone();
            claims["exp"] = json!(exp);
            jsonwebtoken::encode(&jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256), &claims, &jsonwebtoken::EncodingKey::from_secret(key.as_bytes())).unwrap()
        };
        let key = app.state.secret_key.expose().to_owned();
        let now = chrono::Utc::now().timestamp();
        let alg_none = {
            use base64::Engine;
            let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
            format!("{}.{}.", b64.encode(r#"{"alg":"none","typ":"JWT"}"#), b64.encode(claims.to_string()))
        };
        let cases = [
            ("garbage", "not-a-token".to_owned()),
            ("expired", sign(&key, now - 10)),
            ("wrong signature", sign("another-key-another-key-another-key", now + 600)),
            ("alg none", alg_none),
            ("unknown key", "dk_0000".to_owned()),
        ];
        for (what, token) in cases {
            let (status, body) = app.call(Method::GET, "/api/v1/auth/me", &token, None).await;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{what}");
            assert_error(&body, "invalid_token");
        }
        assert_eq!(app.call(Method::GET, "/api/v1/auth/me", &sign(&key, now + 600), None).await.0, StatusCode::OK, "control");
        let response = app.client.get(app.url("/api/v1/auth/me")).header("authorization", "Basic abc").send().await.unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(response.headers()["www-authenticate"], "Bearer");
    }

    async fn bad_input_is_rejected_and_changes_nothing(backend) {
        let Some(app) = TestApp::spawn(backend).await else { return };
        let admin = app.sign_in("acme", "ada@acme.test", Role::Admin).await;
        let cases = [
            (json!({ "email": "a@acme.test", "name": "A", "role": "viewer", "password": "short" }), "password"),
            (json!({ "email": "not-an-email", "name": "A", "role": "viewer", "password": PASSWORD }), "email"),
        ];
        for (body, field) in cases {
            let (status, response) = app.call(Method::POST, "/api/v1/users", &admin.access_token, Some(body)).await;
            assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{response}");
            assert_eq!(response["error"]["details"]["field"], field);
        }
        let (status, response) = app.call(Method::POST, "/api/v1/users", &admin.access_token, Some(json!({ "email": "a@acme.test", "role": "emperor" }))).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{response}");
        let response = app.client.post(app.url("/api/v1/users")).bearer_auth(&admin.access_token).header("content-type", "application/json").body("{oops").send().await.unwrap();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        let body: Value = response.json().await.unwrap();
        assert_error(&body, "malformed_json");
        let (_, users) = app.call(Method::GET, "/api/v1/users", &admin.access_token, None).await;
        assert_eq!(users["items"].as_array().unwrap().len(), 1, "nothing was created");

        let (status, _) = app.call(Method::POST, "/api/v1/users", &admin.access_token, Some(json!({ "email": "ADA@acme.test", "name": "Dup", "role": "viewer", "password": PASSWORD }))).await;
        assert_eq!(status, StatusCode::CONFLICT);
        let (status, _) = app.call(Method::PATCH, &format!("/api/v1/users/{}", admin.user_id), &admin.access_token, Some(json!({ "status": "disabled" }))).await;
        assert_eq!(status, StatusCode::CONFLICT, "admins cannot lock themselves out");
    }

    async fn users_lifecycle(backend) {
        let Some(app) = TestApp::spawn(backend).await else { return };
        let admin = app.sign_in("acme", "ada@acme.test", Role::Admin).await;
        let (status, created) = app.call(Method::POST, "/api/v1/users", &admin.access_token, Some(json!({ "email": "New@Acme.test", "name": "Newt", "role": "reviewer", "password": PASSWORD }))).await;
        assert_eq!(status, StatusCode::CREATED, "{created}");
        assert_eq!(created["email"], "new@acme.test");
        assert!(created.get("password_hash").is_none());
        let id = created["id"].as_str().unwrap().to_owned();

        let (status, login) = app.login(json!({ "email": "new@acme.test", "password": PASSWORD })).await;
        assert_eq!(status, StatusCode::OK);
        let token = login["access_token"].as_str().unwrap().to_owned();
        let new_password = "an even better passphrase";
        let (status, _) = app.call(Method::POST, "/api/v1/users/me/password", &token, Some(json!({ "current_password": "wrong one here", "new_password": new_password }))).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
        let (status, _) = app.call(Method::POST, "/api/v1/users/me/password", &token, Some(json!({ "current_password": PASSWORD, "new_password": new_password }))).await;
        assert_eq!(status, StatusCode::NO_CONTENT);
        assert_eq!(app.login(json!({ "email": "new@acme.test", "password": new_password })).await.0, StatusCode::OK);

        let (status, updated) = app.call(Method::PATCH, &format!("/api/v1/users/{id}"), &admin.access_token, Some(json!({ "role": "supervisor", "status": "disabled" }))).await;
        assert_eq!(status, StatusCode::OK, "{updated}");
        assert_eq!(updated["role"], "supervisor");
        assert_eq!(app.call(Method::GET, "/api/v1/auth/me", &token, None).await.0, StatusCode::UNAUTHORIZED, "disabling ends sessions");
        let (status, body) = app.login(json!({ "email": "new@acme.test", "password": new_password })).await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        assert_error(&body, "account_disabled");

        let (status, _) = app.call(Method::DELETE, &format!("/api/v1/users/{id}"), &admin.access_token, None).await;
        assert_eq!(status, StatusCode::NO_CONTENT);
        assert_eq!(app.call(Method::GET, &format!("/api/v1/users/{id}"), &admin.access_token, None).await.0, StatusCode::NOT_FOUND);
        assert_eq!(app.login(json!({ "email": "new@acme.test", "password": new_password })).await.0, StatusCode::UNAUTHORIZED);
    }

    async fn an_email_is_unique_within_a_tenant_and_tells_nothing_about_others(backend) {
        let Some(app) = TestApp::spawn(backend).await else { return };
        let acme = app.sign_in("acme", "ada@acme.test", Role::Admin).await;
        let globex = app.sign_in("globex", "gus@globex.test", Role::Admin).await;
        let create = |token: String| {
            let app = &app;
            async move {
                app.call(Method::POST, "/api/v1/users", &token, Some(json!({
                    "email": "Sam@Shared.test", "name": "Sam", "role": "reviewer", "password": PASSWORD
                }))).await
            }
        };
        let (status, in_acme) = create(acme.access_token.clone()).await;
        assert_eq!(status, StatusCode::CREATED, "{in_acme}");
        // Another tenant's admin learns nothing: the address is theirs to use too.
        let (status, in_globex) = create(globex.access_token.clone()).await;
        assert_eq!(status, StatusCode::CREATED, "{in_globex}");
        let (status, body) = create(acme.access_token.clone()).await;
        assert_eq!(status, StatusCode::CONFLICT, "{body}");
        assert!(body["error"]["message"].as_str().unwrap().contains("in this tenant"), "{body}");

        // Without the tenant such a sign-in is refused exactly like an unknown email.
        let (status, ambiguous) = app.login(json!({ "email": "sam@shared.test", "password": PASSWORD })).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        let (_, unknown) = app.login(json!({ "email": "nobody@shared.test", "password": PASSWORD })).await;
        assert_eq!(ambiguous["error"]["code"], unknown["error"]["code"]);
        assert_eq!(ambiguous["error"]["message"], unknown["error"]["message"]);
        let (status, _) = app.login(json!({ "email": "sam@shared.test", "password": PASSWORD, "tenant": "initech" })).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "a tenant that does not exist names no one");
        for (slug, user) in [("acme", &in_acme), ("globex", &in_globex)] {
            let (status, login) = app.login(json!({ "email": "sam@shared.test", "password": PASSWORD, "tenant": slug })).await;
            assert_eq!(status, StatusCode::OK, "{login}");
            let (_, me) = app.call(Method::GET, "/api/v1/auth/me", login["access_token"].as_str().unwrap(), None).await;
            assert_eq!(me["user"]["id"], user["id"], "{slug}");
        }
        // An address in one tenant needs no tenant, and a wrong one is refused.
        assert_eq!(app.login(json!({ "email": "ada@acme.test", "password": PASSWORD, "tenant": "globex" })).await.0, StatusCode::UNAUTHORIZED);
        let (status, login) = app.login(json!({ "email": "ada@acme.test", "password": PASSWORD })).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{login}");
        assert_error(&login, "mfa_required");
    }

    async fn tenants_are_managed_by_platform_admins(backend) {
        let Some(app) = TestApp::spawn(backend).await else { return };
        let root = app.sign_in_as("platform", "root@platform.test", Role::Admin, true).await;
        let (status, tenant) = app.call(Method::POST, "/api/v1/tenants", &root.access_token, Some(json!({ "slug": "globex", "name": "Globex" }))).await;
        assert_eq!(status, StatusCode::CREATED, "{tenant}");
        let id = tenant["id"].as_str().unwrap().to_owned();
        let (status, _) = app.call(Method::POST, "/api/v1/tenants", &root.access_token, Some(json!({ "slug": "globex", "name": "Again" }))).await;
        assert_eq!(status, StatusCode::CONFLICT);
        let (status, body) = app.call(Method::POST, "/api/v1/tenants", &root.access_token, Some(json!({ "slug": "Bad Slug", "name": "x" }))).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(body["error"]["details"]["field"], "slug");

        let (status, page) = app.call(Method::GET, "/api/v1/tenants?limit=1", &root.access_token, None).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(page["items"].as_array().unwrap().len(), 1);
        let cursor = page["next_cursor"].as_str().unwrap().to_owned();
        let (_, next) = app.call(Method::GET, &format!("/api/v1/tenants?limit=1&cursor={cursor}"), &root.access_token, None).await;
        assert_eq!(next["items"].as_array().unwrap().len(), 1);
        assert_ne!(next["items"][0]["id"], page["items"][0]["id"]);

        let (status, updated) = app.call(Method::PATCH, &format!("/api/v1/tenants/{id}"), &root.access_token, Some(json!({ "status": "suspended" }))).await;
        assert_eq!(status, StatusCode::OK, "{updated}");
        assert_eq!(updated["status"], "suspended");
    }
}

on_both_backends! {
    async fn admin_operations_respect_the_ip_allowlist(backend) {
        let overrides = [("TRUSTED_PROXIES", "127.0.0.1")];
        let Some(app) = TestApp::spawn_with(backend, ProcessRole::All, &overrides).await else { return };
        let admin = app.sign_in("acme", "ada@acme.test", Role::Admin).await;
        let (status, body) = app.call(Method::PATCH, &format!("/api/v1/tenants/{}", admin.tenant_id), &admin.access_token, Some(json!({ "ip_allowlist": ["10.0.0.0/8"] }))).await;
        assert_eq!(status, StatusCode::OK, "{body}");

        // Direct from 127.0.0.1 (not in the list): refused. Through the trusted proxy for 10.1.2.3: allowed.
        let (status, body) = app.call(Method::GET, "/api/v1/api-keys", &admin.access_token, None).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
        let via_proxy = |ip: &'static str| {
            app.client.get(app.url("/api/v1/api-keys")).bearer_auth(&admin.access_token).header("x-forwarded-for", ip).send()
        };
        assert_eq!(via_proxy("10.1.2.3").await.unwrap().status(), StatusCode::OK);
        assert_eq!(via_proxy("192.168.0.9").await.unwrap().status(), StatusCode::FORBIDDEN);
        // Non-admin operations are not restricted by the list.
        assert_eq!(app.call(Method::GET, "/api/v1/auth/me", &admin.access_token, None).await.0, StatusCode::OK);
    }

    async fn forwarded_for_is_ignored_from_untrusted_peers(backend) {
        let Some(app) = TestApp::spawn(backend).await else { return };
        let admin = app.sign_in("acme", "ada@acme.test", Role::Admin).await;
        let (status, _) = app.call(Method::PATCH, &format!("/api/v1/tenants/{}", admin.tenant_id), &admin.access_token, Some(json!({ "ip_allowlist": ["10.0.0.0/8"] }))).await;
        assert_eq!(status, StatusCode::OK);
        let response = app.client.get(app.url("/api/v1/api-keys")).bearer_auth(&admin.access_token).header("x-forwarded-for", "10.1.2.3").send().await.unwrap();
        assert_eq!(response.status(), StatusCode::FORBIDDEN);
    }

    async fn rate_limits_per_user_within_an_outer_tenant_bound(backend) {
        let overrides = [("RATE_LIMIT_PER_MINUTE", "10"), ("TENANT_RATE_LIMIT_PER_MINUTE", "15")];
        let Some(app) = TestApp::spawn_with(backend, ProcessRole::All, &overrides).await else { return };
        let user = app.sign_in("acme", "val@acme.test", Role::Viewer).await;
        let mut statuses = Vec::new();
        let mut limited = None;
        for _ in 0..14 {
            let response = app.client.get(app.url("/api/v1/auth/me")).bearer_auth(&user.access_token).send().await.unwrap();
            statuses.push(response.status());
            if response.status() == StatusCode::TOO_MANY_REQUESTS && limited.is_none() {
                limited = Some(response);
            }
        }
        // sign_in itself made one authenticated request.
        assert!(statuses[..9].iter().all(|s| *s == StatusCode::OK), "{statuses:?}");
        let limited = limited.expect("the limit applies");
        assert!(limited.headers().contains_key("retry-after"));
        assert_eq!(limited.headers()["x-ratelimit-limit"], "10");
        let body: Value = limited.json().await.unwrap();
        assert_error(&body, "rate_limited");
        // Another user of the same tenant has their own budget...
        let other = app.sign_in("acme", "vic@acme.test", Role::Viewer).await;
        assert_eq!(app.call(Method::GET, "/api/v1/auth/me", &other.access_token, None).await.0, StatusCode::OK);
        // ...within the tenant's outer bound (what Val was refused did not count against it).
        let mut tenant_limited = None;
        for _ in 0..8 {
            let response = app.client.get(app.url("/api/v1/auth/me")).bearer_auth(&other.access_token).send().await.unwrap();
            if response.status() == StatusCode::TOO_MANY_REQUESTS {
                tenant_limited = Some(response);
                break;
            }
        }
        let tenant_limited = tenant_limited.expect("the tenant bound applies before Vic's own");
        assert_eq!(tenant_limited.headers()["x-ratelimit-limit"], "15");
        // Another tenant has its own bound.
        let elsewhere = app.sign_in("globex", "gil@globex.test", Role::Viewer).await;
        assert_eq!(app.call(Method::GET, "/api/v1/auth/me", &elsewhere.access_token, None).await.0, StatusCode::OK);
    }

    async fn rate_limits_are_shared_through_redis(backend) {
        let Some(redis) = crate::support::shared_redis() else { return };
        let url = redis.url();
        // A unique rate: the Redis keys are per tenant id anyway, but keep the runs apart.
        let overrides = [("RATE_LIMIT_PER_MINUTE", "10"), ("REDIS_URL", url.as_str())];
        let Some(first) = TestApp::spawn_with(backend, ProcessRole::Api, &overrides).await else { return };
        let user = first.sign_in("acme", "val@acme.test", Role::Viewer).await;
        // A second API replica on the same database and Redis.
        let second_state = docket::app::AppState::initialise(first.state.config.as_ref().clone()).await.unwrap();
        let second_router = docket::http::router(second_state.clone(), ProcessRole::Api);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let second_url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(docket::app::Server::new(second_state.clone(), ProcessRole::Api, listener, second_router).run());

        let mut statuses = Vec::new();
        for i in 0..14 {
            let base = if i % 2 == 0 { first.base.clone() } else { second_url.clone() };
            let response = first.client.get(format!("{base}/api/v1/auth/me")).bearer_auth(&user.access_token).send().await.unwrap();
            statuses.push(response.status());
        }
        assert!(statuses[..9].iter().all(|s| *s == StatusCode::OK), "{statuses:?}");
        assert!(statuses.contains(&StatusCode::TOO_MANY_REQUESTS), "the budget is shared: {statuses:?}");
        second_state.shutdown.cancel();
    }

    async fn sign_in_counts_are_kept_and_taken_back_in_redis(backend) {
        let Some(redis) = crate::support::shared_redis() else { return };
        let url = redis.url();
        // Addresses of their own: the Redis counters outlive this test's app.
        let ip = format!("198.18.{}.{}", rand::random::<u8>(), rand::random::<u8>());
        let overrides = [("LOGIN_FAILURES_PER_IP", "3"), ("TRUSTED_PROXIES", "127.0.0.1"), ("REDIS_URL", url.as_str())];
        let Some(app) = TestApp::spawn_with(backend, ProcessRole::Api, &overrides).await else { return };
        let email = format!("lou{}@acme.test", rand::random::<u32>());
        app.create_user("acme", &email, Role::Viewer, false).await;
        let login = |password: &'static str| {
            let (app, ip, email) = (&app, ip.clone(), email.clone());
            async move {
                let response = app.client.post(app.url("/api/v1/auth/login")).header("x-forwarded-for", ip)
                    .json(&json!({ "email": email, "password": password })).send().await.unwrap();
                response.status()
            }
        };
        for _ in 0..2 {
            assert_eq!(login("wrong password!").await, StatusCode::UNAUTHORIZED);
        }
        // Successful sign-ins are counted first and then taken back: they use up nothing.
        for _ in 0..3 {
            assert_eq!(login(PASSWORD).await, StatusCode::OK);
        }
        assert_eq!(login("wrong password!").await, StatusCode::UNAUTHORIZED);
        assert_eq!(login(PASSWORD).await, StatusCode::TOO_MANY_REQUESTS, "the third failure used the budget");
    }

    async fn responses_carry_security_headers(backend) {
        let Some(app) = TestApp::spawn(backend).await else { return };
        let response = app.get("/api/v1/health").await;
        let headers = response.headers();
        assert_eq!(headers["x-content-type-options"], "nosniff");
        assert_eq!(headers["x-frame-options"], "DENY");
        assert!(headers["content-security-policy"].to_str().unwrap().contains("default-src 'none'"));
        assert!(headers.get("strict-transport-security").is_none(), "HSTS only in production");
        let docs = app.get("/docs").await;
        let docs_csp = docs.headers()["content-security-policy"].to_str().unwrap().to_owned();
        assert!(docs_csp.contains("script-src 'self';") && !docs_csp.contains("http"), "the docs load only what Docket serves: {docs_csp}");

        let key = "p".repeat(40);
        let production = [("ENVIRONMENT", "production"), ("SECRET_KEY", key.as_str()), ("AUTO_MIGRATE", "true")];
        let Some(app) = TestApp::spawn_with(backend, ProcessRole::Api, &production).await else { return };
        let response = app.get("/api/v1/health").await;
        assert!(response.headers()["strict-transport-security"].to_str().unwrap().starts_with("max-age="));
    }
}

on_both_backends! {
    async fn a_platform_admin_onboards_a_tenant_and_its_first_admin(backend) {
        let Some(app) = TestApp::spawn(backend).await else { return };
        let root = app.sign_in_as("platform", "root@platform.test", Role::Admin, true).await;
        let (status, tenant) = app.call(Method::POST, "/api/v1/tenants", &root.access_token, Some(json!({ "slug": "globex", "name": "Globex" }))).await;
        assert_eq!(status, StatusCode::CREATED, "{tenant}");
        let admins = format!("/api/v1/tenants/{}/admins", tenant["id"].as_str().unwrap());
        let first = json!({ "email": "Gina@Globex.test", "name": "Gina", "password": PASSWORD });

        // Only a platform admin may: a tenant admin (of any tenant) is refused and nothing is created.
        let ada = app.sign_in("acme", "ada@acme.test", Role::Admin).await;
        let (status, body) = app.call(Method::POST, &admins, &ada.access_token, Some(first.clone())).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
        assert_error(&body, "forbidden");
        assert_eq!(app.login(json!({ "email": "gina@globex.test", "password": PASSWORD })).await.0, StatusCode::UNAUTHORIZED);

        for (bad, field) in [
            (json!({ "email": "nope", "name": "Gina", "password": PASSWORD }), "email"),
            (json!({ "email": "g@globex.test", "name": "Gina", "password": "short" }), "password"),
            (json!({ "email": "g@globex.test", "name": "Gina", "password": PASSWORD, "role": "viewer" }), "role"),
        ] {
            let (status, body) = app.call(Method::POST, &admins, &root.access_token, Some(bad)).await;
            assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
            assert_eq!(body["error"]["details"]["field"], field, "{body}");
        }
        let (status, body) = app.call(Method::POST, "/api/v1/tenants/no-such-tenant/admins", &root.access_token, Some(first.clone())).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{body}");

        let (status, gina) = app.call(Method::POST, &admins, &root.access_token, Some(first.clone())).await;
        assert_eq!(status, StatusCode::CREATED, "{gina}");
        assert_eq!((gina["email"].as_str(), gina["role"].as_str(), gina["tenant_id"].as_str()), (Some("gina@globex.test"), Some("admin"), tenant["id"].as_str()));
        assert_eq!(gina["platform_admin"], false);
        let (status, body) = app.call(Method::POST, &admins, &root.access_token, Some(first)).await;
        assert_eq!(status, StatusCode::CONFLICT, "{body}");

        // The new admin signs in to their tenant and finds the creation in its audit log.
        let (status, login) = app.login(json!({ "email": "gina@globex.test", "password": PASSWORD })).await;
        assert_eq!(status, StatusCode::OK, "{login}");
        let token = login["access_token"].as_str().unwrap();
        let (_, me) = app.call(Method::GET, "/api/v1/auth/me", token, None).await;
        assert_eq!(me["user"]["tenant_id"], tenant["id"]);
        assert_eq!(login["mfa_enrolment_required"], true, "an admin sets up MFA first");
        let (_, enrolment) = app.call(Method::POST, "/api/v1/auth/mfa/enrol", token, None).await;
        let code = totp_code(enrolment["secret"].as_str().unwrap(), 0);
        let (status, body) = app.call(Method::POST, "/api/v1/auth/mfa/confirm", token, Some(json!({ "code": code }))).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let (status, audit) = app.call(Method::GET, "/api/v1/audit?action=user.create", token, None).await;
        assert_eq!(status, StatusCode::OK, "{audit}");
        assert_eq!(audit["items"][0]["target_id"], gina["id"], "{audit}");
        assert_eq!((audit["items"][0]["actor_type"].as_str(), audit["items"][0]["actor_id"].as_str()), (Some("user"), Some(root.user_id.as_str())), "{audit}");
    }
}

on_both_backends! {
    async fn every_role_reads_names_but_not_more(backend) {
        let Some(app) = TestApp::spawn(backend).await else { return };
        let admin = app.sign_in("acme", "ada@acme.test", Role::Admin).await;
        let viewer = app.sign_in("acme", "val@acme.test", Role::Viewer).await;
        let other = app.sign_in("globex", "gil@globex.test", Role::Admin).await;
        let (_, key) = app.call(Method::POST, "/api/v1/api-keys", &admin.access_token, Some(json!({ "name": "intake", "scopes": ["cases:write"] }))).await;
        let secret = key["secret"].as_str().unwrap();

        let (status, people) = app.call(Method::GET, "/api/v1/people", &viewer.access_token, None).await;
        assert_eq!(status, StatusCode::OK, "{people}");
        let actors: Vec<&str> = people["users"].as_array().unwrap().iter().map(|p| p["actor"].as_str().unwrap()).collect();
        assert!(actors.contains(&format!("user:{}", admin.user_id).as_str()), "{people}");
        assert!(!actors.contains(&format!("user:{}", other.user_id).as_str()), "only the caller's tenant: {people}");
        assert_eq!(people["api_keys"][0]["name"], "intake");
        assert_eq!(people["api_keys"][0]["actor"], format!("api_key:{}", key["id"].as_str().unwrap()));
        let mut fields: Vec<&str> = people["users"][0].as_object().unwrap().keys().map(String::as_str).collect();
        fields.sort_unstable();
        assert_eq!(fields, ["actor", "id", "name"], "names only: no email, role or status: {people}");

        // A key without cases:read may not read the directory.
        let (status, body) = app.call(Method::GET, "/api/v1/people", secret, None).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    }
}
