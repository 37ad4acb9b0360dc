use docket::auth::Role;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::on_both_backends;
use crate::support::{PASSWORD, TestApp};

/// Changes a stored audit record behind Docket's back, as an attacker with database access would
/// (the append-only triggers have to be bypassed for that).
async fn tamper(app: &TestApp, tenant_id: &str, seq: i64) {
    match &app.state.store {
        docket::store::Store::Sqlite(pool) => {
            let mut conn = pool.acquire().await.unwrap();
            sqlx::query("DROP TRIGGER audit_log_no_update")
                .execute(&mut *conn)
                .await
                .unwrap();
            sqlx::query("UPDATE audit_log SET summary = '{\"forged\":true}' WHERE tenant_id = $1 AND seq = $2")
                .bind(tenant_id)
                .bind(seq)
                .execute(&mut *conn)
                .await
                .unwrap();
        }
        docket::store::Store::Postgres(pool) => {
            let mut tx = pool.begin().await.unwrap();
            sqlx::query("SET LOCAL session_replication_role = replica")
                .execute(&mut *tx)
                .await
                .unwrap();
            sqlx::query("UPDATE audit_log SET summary = '{\"forged\":true}' WHERE tenant_id = $1 AND seq = $2")
                .bind(tenant_id)
                .bind(seq)
                .execute(&mut *tx)
                .await
                .unwrap();
            tx.commit().await.unwrap();
        }
    }
}

on_both_backends! {
    async fn writes_are_audited_with_request_context(backend) {
        let Some(app) = TestApp::spawn(backend).await else { return };
        let admin = app.sign_in("acme", "ada@acme.test", Role::Admin).await;
        let response = app
            .client
            .post(app.url("/api/v1/users"))
            .bearer_auth(&admin.access_token)
            .header("x-request-id", "audit-req-1")
            .json(&json!({ "email": "new@acme.test", "name": "New", "role": "viewer", "password": PASSWORD }))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::CREATED);
        app.login(json!({ "email": "new@acme.test", "password": "wrong password x" })).await;

        let (status, page) = app.call(Method::GET, "/api/v1/audit?action=user.create", &admin.access_token, None).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        let record = &page["items"][0];
        assert_eq!(record["actor_type"], "user");
        assert_eq!(record["actor_id"], Value::from(admin.user_id.clone()));
        assert_eq!(record["request_id"], "audit-req-1");
        assert_eq!(record["ip"], "127.0.0.1");
        let summary: Value = serde_json::from_str(record["summary"].as_str().unwrap()).unwrap();
        assert_eq!(summary["after"]["email"], "new@acme.test");
        assert!(!record["summary"].as_str().unwrap().contains(PASSWORD), "no secrets in the log");

        let (_, all) = app.call(Method::GET, "/api/v1/audit?limit=500", &admin.access_token, None).await;
        let actions: Vec<&str> = all["items"].as_array().unwrap().iter().map(|r| r["action"].as_str().unwrap()).collect();
        for expected in ["auth.login", "user.mfa_enable", "user.create", "auth.login_failed"] {
            assert!(actions.contains(&expected), "{expected} missing from {actions:?}");
        }

        let (_, page) = app.call(Method::GET, "/api/v1/audit?limit=2", &admin.access_token, None).await;
        let cursor = page["next_cursor"].as_str().unwrap();
        let (_, next) = app.call(Method::GET, &format!("/api/v1/audit?limit=2&cursor={cursor}"), &admin.access_token, None).await;
        assert!(next["items"][0]["seq"].as_i64().unwrap() < page["items"][1]["seq"].as_i64().unwrap());
    }

    async fn verification_catches_a_tampered_record(backend) {
        let Some(app) = TestApp::spawn(backend).await else { return };
        let admin = app.sign_in("acme", "ada@acme.test", Role::Admin).await;
        for i in 0..3 {
            app.call(Method::POST, "/api/v1/users", &admin.access_token, Some(json!({ "email": format!("u{i}@acme.test"), "name": "U", "role": "viewer", "password": PASSWORD }))).await;
        }
        let (status, report) = app.call(Method::GET, "/api/v1/audit/verify", &admin.access_token, None).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(report["valid"], true, "{report}");
        let records = report["records"].as_u64().unwrap();
        assert!(records >= 5, "{report}");

        tamper(&app, &admin.tenant_id, 2).await;
        let (_, report) = app.call(Method::GET, "/api/v1/audit/verify", &admin.access_token, None).await;
        assert_eq!(report["valid"], false, "{report}");
        assert_eq!(report["first_invalid_seq"], 2);
        assert!(report["problem"].as_str().unwrap().contains("changed"));
    }

    async fn the_log_refuses_updates_and_deletes(backend) {
        let Some(app) = TestApp::spawn(backend).await else { return };
        app.sign_in("acme", "ada@acme.test", Role::Admin).await;
        for sql in ["UPDATE audit_log SET action = 'x'", "DELETE FROM audit_log"] {
            let result = docket::with_pool!(&app.state.store, pool => sqlx::query(sql).execute(pool).await.map(|_| ()));
            let err = result.expect_err(sql).to_string();
            assert!(err.contains("append-only"), "{sql}: {err}");
        }
    }

    async fn export_as_csv_and_jsonl(backend) {
        let Some(app) = TestApp::spawn(backend).await else { return };
        let admin = app.sign_in("acme", "ada@acme.test", Role::Admin).await;
        let export = |format: &'static str| {
            app.client.get(app.url(&format!("/api/v1/audit/export?format={format}"))).bearer_auth(&admin.access_token).send()
        };
        let jsonl = export("jsonl").await.unwrap();
        assert_eq!(jsonl.headers()["content-type"], "application/x-ndjson");
        let lines: Vec<Value> = jsonl.text().await.unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        assert!(lines.len() >= 2);
        assert!(lines.windows(2).all(|w| w[0]["seq"].as_i64() < w[1]["seq"].as_i64()), "oldest first");

        let csv = export("csv").await.unwrap();
        assert!(csv.headers()["content-type"].to_str().unwrap().starts_with("text/csv"));
        let text = csv.text().await.unwrap();
        assert!(text.lines().next().unwrap().starts_with("tenant_id,seq,id,occurred_at"));
        assert_eq!(text.lines().count(), lines.len() + 1);

        let (status, body) = app.call(Method::GET, "/api/v1/audit/export?format=xml", &admin.access_token, None).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    }
}
