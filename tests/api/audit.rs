use docket::auth::Role;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::on_both_backends;
use crate::support::{PASSWORD, TestApp};

/// Runs `statements` (each binding the tenant id as `$1`) against the audit log behind Docket's
/// back, as an attacker with database access would: the append-only triggers are bypassed.
async fn tamper(app: &TestApp, statements: &[&'static str], tenant_id: &str) {
    match &app.state.store {
        docket::store::Store::Sqlite(pool, _) => {
            // SQLite DDL is transactional: drop the triggers, tamper, put them back, commit.
            let mut tx = pool.begin_with("BEGIN IMMEDIATE").await.unwrap();
            let triggers: Vec<(String, String)> =
                sqlx::query_as("SELECT name, sql FROM sqlite_master WHERE type = 'trigger' AND tbl_name = 'audit_log'")
                    .fetch_all(&mut *tx)
                    .await
                    .unwrap();
            for (name, _) in &triggers {
                sqlx::query(sqlx::AssertSqlSafe(format!("DROP TRIGGER {name}")))
                    .execute(&mut *tx)
                    .await
                    .unwrap();
            }
            for sql in statements {
                sqlx::query(*sql)
                    .bind(tenant_id)
                    .execute(&mut *tx)
                    .await
                    .unwrap();
            }
            for (_, create) in triggers {
                sqlx::query(sqlx::AssertSqlSafe(create))
                    .execute(&mut *tx)
                    .await
                    .unwrap();
            }
            tx.commit().await.unwrap();
        }
        docket::store::Store::Postgres(pool) => {
            let mut tx = pool.begin().await.unwrap();
            sqlx::query("SET LOCAL session_replication_role = replica")
                .execute(&mut *tx)
                .await
                .unwrap();
            for sql in statements {
                sqlx::query(*sql)
                    .bind(tenant_id)
                    .execute(&mut *tx)
                    .await
                    .unwrap();
            }
            tx.commit().await.unwrap();
        }
    }
}

async fn verify(app: &TestApp, token: &str) -> Value {
    let (status, report) = app
        .call(Method::GET, "/api/v1/audit/verify", token, None)
        .await;
    assert_eq!(status, StatusCode::OK);
    report
}

/// A signed-in admin and a few more audit records (seq 1.. at least 6).
async fn audited_tenant(app: &TestApp) -> crate::support::Login {
    let admin = app.sign_in("acme", "ada@acme.test", Role::Admin).await;
    for i in 0..3 {
        let body = json!({ "email": format!("u{i}@acme.test"), "name": "U", "role": "viewer", "password": PASSWORD });
        app.call(
            Method::POST,
            "/api/v1/users",
            &admin.access_token,
            Some(body),
        )
        .await;
    }
    admin
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
        let summary: Value = record["summary"].clone();
        assert_eq!(summary["after"]["email"], "new@acme.test");
        assert!(!record["summary"].to_string().contains(PASSWORD), "no secrets in the log");

        let (_, by_target) = app.call(Method::GET, &format!("/api/v1/audit?target_type=user&actor_id={}", admin.user_id), &admin.access_token, None).await;
        assert!(by_target["items"].as_array().unwrap().iter().all(|r| r["target_type"] == "user" && r["actor_id"] == admin.user_id.as_str()));
        assert!(!by_target["items"].as_array().unwrap().is_empty());
        let future = (chrono::Utc::now() + chrono::Duration::hours(1)).to_rfc3339().replace('+', "%2B");
        let (_, none) = app.call(Method::GET, &format!("/api/v1/audit?since={future}"), &admin.access_token, None).await;
        assert_eq!(none["items"], json!([]));
        let past = (chrono::Utc::now() - chrono::Duration::hours(1)).to_rfc3339().replace('+', "%2B");
        let (_, recent) = app.call(Method::GET, &format!("/api/v1/audit?since={past}&limit=500"), &admin.access_token, None).await;
        assert!(!recent["items"].as_array().unwrap().is_empty());

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

    async fn verification_catches_a_changed_record(backend) {
        let Some(app) = TestApp::spawn(backend).await else { return };
        let admin = audited_tenant(&app).await;
        let report = verify(&app, &admin.access_token).await;
        assert_eq!(report["valid"], true, "{report}");
        assert!(report["records"].as_u64().unwrap() >= 5, "{report}");
        assert_eq!(report["head_hash"].as_str().unwrap().len(), 64);

        tamper(&app, &["UPDATE audit_log SET summary = '{\"forged\":true}' WHERE tenant_id = $1 AND seq = 2"], &admin.tenant_id).await;
        let report = verify(&app, &admin.access_token).await;
        assert_eq!(report["valid"], false, "{report}");
        assert_eq!(report["first_invalid_seq"], 2);
        assert!(report["problem"].as_str().unwrap().contains("changed"), "{report}");
    }

    async fn verification_catches_a_removed_record(backend) {
        let Some(app) = TestApp::spawn(backend).await else { return };
        let admin = audited_tenant(&app).await;
        tamper(&app, &["DELETE FROM audit_log WHERE tenant_id = $1 AND seq = 3"], &admin.tenant_id).await;
        let report = verify(&app, &admin.access_token).await;
        assert_eq!(report["valid"], false, "{report}");
        assert_eq!(report["first_invalid_seq"], 4);
        assert!(report["problem"].as_str().unwrap().contains("missing"), "{report}");
    }

    async fn verification_catches_reordered_records(backend) {
        let Some(app) = TestApp::spawn(backend).await else { return };
        let admin = audited_tenant(&app).await;
        // Swap the contents of records 3 and 4 by swapping their sequence numbers.
        tamper(
            &app,
            &[
                "UPDATE audit_log SET seq = -3 WHERE tenant_id = $1 AND seq = 3",
                "UPDATE audit_log SET seq = 3 WHERE tenant_id = $1 AND seq = 4",
                "UPDATE audit_log SET seq = 4 WHERE tenant_id = $1 AND seq = -3",
            ],
            &admin.tenant_id,
        )
        .await;
        let report = verify(&app, &admin.access_token).await;
        assert_eq!(report["valid"], false, "{report}");
        assert_eq!(report["first_invalid_seq"], 3);
    }

    async fn retention_removes_only_expired_records_and_leaves_a_checkpoint(backend) {
        let Some(app) = TestApp::spawn(backend).await else { return };
        let admin = audited_tenant(&app).await;
        let before = verify(&app, &admin.access_token).await["records"].as_u64().unwrap();
        let purge = |retention_days: u32, now: chrono::DateTime<chrono::Utc>| docket::audit::purge_expired(&app.state.store, retention_days, now);
        let now = chrono::Utc::now();
        assert_eq!(purge(2555, now).await.unwrap(), 0, "nothing is old enough");
        assert_eq!(purge(1, now).await.unwrap(), 0, "a day is not over");
        assert_eq!(verify(&app, &admin.access_token).await["records"].as_u64().unwrap(), before);

        // A cutoff in the future would make records written just now deletable: the database refuses.
        let refused = purge(7, now + chrono::Duration::days(10)).await.expect_err("a cutoff in the future");
        assert!(refused.to_string().contains("not past now"), "{refused}");
        assert_eq!(verify(&app, &admin.access_token).await["records"].as_u64().unwrap(), before, "the refusal changed nothing");

        // Seven days on, with a seven-day retention, the cutoff is now: every record so far expires.
        // The chain keeps a checkpoint naming the last record removed and still verifies.
        let removed = purge(7, now + chrono::Duration::days(7)).await.unwrap();
        assert_eq!(removed, before);
        let report = verify(&app, &admin.access_token).await;
        assert_eq!((report["valid"].as_bool(), report["records"].as_u64()), (Some(true), Some(1)), "{report}");
        let (_, listed) = app.call(Method::GET, "/api/v1/audit", &admin.access_token, None).await;
        let checkpoint = &listed["items"][0];
        assert_eq!(checkpoint["action"], "audit.checkpoint", "{listed}");
        assert_eq!(checkpoint["seq"].as_u64(), Some(before + 1));
        assert_eq!(checkpoint["summary"]["through_seq"].as_u64(), Some(before));
        assert_eq!(checkpoint["summary"]["removed_records"].as_u64(), Some(before));
        // A lengthened retention later is no error and removes nothing.
        assert_eq!(purge(30, now + chrono::Duration::days(7)).await.unwrap(), 0);

        // The chain goes on after the checkpoint; removing the checkpoint behind Docket's back (so
        // the head of the chain was cut with no purge to account for it) is found.
        app.call(Method::POST, "/api/v1/api-keys", &admin.access_token, Some(json!({ "name": "k", "scopes": ["audit:read"] }))).await;
        assert_eq!(verify(&app, &admin.access_token).await["valid"], true);
        tamper(&app, &["DELETE FROM audit_log WHERE tenant_id = $1 AND action = 'audit.checkpoint'"], &admin.tenant_id).await;
        let report = verify(&app, &admin.access_token).await;
        assert_eq!(report["valid"], false, "{report}");
        assert_eq!(report["first_invalid_seq"].as_u64(), Some(before + 2));
        assert!(report["problem"].as_str().unwrap().contains("no retention purge removed them"), "{report}");
    }

    async fn a_cut_head_is_found_without_retention(backend) {
        let Some(app) = TestApp::spawn(backend).await else { return };
        let admin = audited_tenant(&app).await;
        tamper(&app, &["DELETE FROM audit_log WHERE tenant_id = $1 AND seq <= 2"], &admin.tenant_id).await;
        let report = verify(&app, &admin.access_token).await;
        assert_eq!(report["valid"], false, "{report}");
        assert_eq!(report["first_invalid_seq"], 3);
        assert_eq!(report["problem"], "records 1 to 2 are missing and no retention purge removed them");
    }

    async fn the_log_refuses_updates_and_deletes(backend) {
        let Some(app) = TestApp::spawn(backend).await else { return };
        app.sign_in("acme", "ada@acme.test", Role::Admin).await;
        for sql in ["UPDATE audit_log SET action = 'x'", "DELETE FROM audit_log"] {
            let result = docket::with_pool!(&app.state.store, pool => sqlx::query(sql).execute(pool).await.map(|_| ()));
            let err = result.expect_err(sql).to_string();
            assert!(err.contains("append-only"), "{sql}: {err}");
        }
        // Nor can the retention cutoff be unset, removed or replaced to make young records deletable.
        for sql in [
            "UPDATE audit_retention SET cutoff = NULL",
            "DELETE FROM audit_retention",
            "INSERT INTO audit_retention (id, cutoff) VALUES (2, NULL)",
        ] {
            let result = docket::with_pool!(&app.state.store, pool => sqlx::query(sql).execute(pool).await.map(|_| ()));
            let err = result.expect_err(sql).to_string();
            assert!(err.contains("audit retention cutoff"), "{sql}: {err}");
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
        // The summary is an object, not a string holding JSON.
        assert!(lines.iter().all(|l| l["summary"].is_object()), "{lines:?}");

        let csv = export("csv").await.unwrap();
        assert!(csv.headers()["content-type"].to_str().unwrap().starts_with("text/csv"));
        let text = csv.text().await.unwrap();
        assert!(text.lines().next().unwrap().starts_with("tenant_id,seq,id,occurred_at"));
        assert_eq!(text.lines().count(), lines.len() + 1);
        // One cell holds the summary's JSON text, encoded once.
        let mut reader = csv::Reader::from_reader(text.as_bytes());
        let column = reader.headers().unwrap().iter().position(|h| h == "summary").unwrap();
        let headers = reader.headers().unwrap().clone();
        let at = |name: &str| headers.iter().position(|h| h == name).unwrap();
        let (_, me) = app.call(Method::GET, "/api/v1/auth/me", &admin.access_token, None).await;
        let my_name = me["user"]["name"].as_str().unwrap().to_owned();
        for (row, line) in reader.records().zip(&lines) {
            let row = row.unwrap();
            let cell: Value = serde_json::from_str(&row[column]).unwrap();
            assert_eq!(cell, line["summary"]);
            // Who acted, by name, next to the id.
            if line["actor_id"] == admin.user_id.as_str() {
                assert_eq!(&row[at("actor_name")], my_name.as_str(), "{row:?}");
            } else if line["actor_type"] == "system" {
                assert_eq!(&row[at("actor_name")], "Docket", "{row:?}");
            }
        }
        assert!(text.contains(&format!(",{my_name},")), "the admin is named in the CSV: {text}");
        let (_, page) = app.call(Method::GET, "/api/v1/audit", &admin.access_token, None).await;
        assert!(page["items"][0]["summary"].is_object(), "{page}");

        let (status, body) = app.call(Method::GET, "/api/v1/audit/export?format=xml", &admin.access_token, None).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    }
}
