use docket::auth::Role;
use futures_util::StreamExt;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::on_both_backends;
use crate::support::{Backend, TestApp};

const BOUNDARY: &str = "docket-test-7MA4YWxkTrZu0gW";

/// A 1×1 PNG (signature, IHDR, IDAT, IEND) followed by every byte value, so a round trip that
/// mangles any byte shows.
fn png() -> Vec<u8> {
    let mut bytes =
        b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0\0\x01\0\0\0\x01\x08\x06\0\0\0\x1f\x15\xc4\x89\
                      \0\0\0\rIDATx\x9cc\xf8\x0f\x04\0\x09\xfb\x03\xfd\xe3U\xf2\x9c\
                      \0\0\0\0IEND\xaeB`\x82"
            .to_vec();
    bytes.extend(0..=255_u8);
    bytes
}

fn pdf() -> Vec<u8> {
    b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<< /Type /Catalog /Pages 2 0 R >>\nendobj\n\
      2 0 obj\n<< /Type /Pages /Kids [] /Count 0 >>\nendobj\ntrailer\n<< /Root 1 0 R >>\n%%EOF\n"
        .to_vec()
}

fn exe() -> Vec<u8> {
    let mut bytes = b"MZ\x90\0\x03\0\0\0\x04\0\0\0\xff\xff\0\0".to_vec();
    bytes.extend(b"This program cannot be run in DOS mode.");
    bytes
}

fn sha256(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// A `multipart/form-data` body, built by hand (the test client has no multipart support).
fn form_parts(parts: &[(&str, &str, &str, &[u8])]) -> Vec<u8> {
    let mut body = Vec::new();
    for (name, filename, content_type, bytes) in parts {
        body.extend_from_slice(
            format!(
                "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"{name}\"; filename=\"{filename}\"\r\n\
                 Content-Type: {content_type}\r\n\r\n"
            )
            .as_bytes(),
        );
        body.extend_from_slice(bytes);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{BOUNDARY}--\r\n").as_bytes());
    body
}

fn form(name: &str, filename: &str, content_type: &str, bytes: &[u8]) -> Vec<u8> {
    form_parts(&[(name, filename, content_type, bytes)])
}

async fn post_form(app: &TestApp, token: &str, case_id: &str, body: Vec<u8>) -> reqwest::Response {
    app.client
        .post(app.url(&format!("/api/v1/cases/{case_id}/attachments")))
        .bearer_auth(token)
        .header(
            "content-type",
            format!("multipart/form-data; boundary={BOUNDARY}"),
        )
        .body(body)
        .send()
        .await
        .unwrap()
}

async fn upload(
    app: &TestApp,
    token: &str,
    case_id: &str,
    filename: &str,
    content_type: &str,
    bytes: &[u8],
) -> (StatusCode, Value) {
    let response = post_form(
        app,
        token,
        case_id,
        form("file", filename, content_type, bytes),
    )
    .await;
    let status = response.status();
    let text = response.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

async fn download(app: &TestApp, token: &str, case_id: &str, id: &str) -> reqwest::Response {
    app.client
        .get(app.url(&format!("/api/v1/cases/{case_id}/attachments/{id}")))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
}

async fn list(app: &TestApp, token: &str, case_id: &str) -> (StatusCode, Value) {
    app.call(
        Method::GET,
        &format!("/api/v1/cases/{case_id}/attachments"),
        token,
        None,
    )
    .await
}

async fn create_case(app: &TestApp, token: &str, reference: &str) -> String {
    let body = json!({ "type": "cheque", "reference": reference, "amount": "1250.00", "currency": "USD", "subject": { "payee": "Ann" } });
    let (status, case) = app
        .call(Method::POST, "/api/v1/cases", token, Some(body))
        .await;
    assert_eq!(status, StatusCode::CREATED, "creating a case: {case}");
    case["id"].as_str().unwrap().to_owned()
}

/// Every object in the store (keys), to show that refused uploads leave nothing behind.
async fn stored_objects(app: &TestApp) -> Vec<String> {
    app.state
        .objects
        .list(None)
        .map(|meta| meta.unwrap().location.to_string())
        .collect()
        .await
}

on_both_backends! {
    async fn files_round_trip_byte_exact_with_the_detected_type(backend) {
        let Some(app) = TestApp::spawn(backend).await else { return };
        let rita = app.sign_in("acme", "rita@acme.test", Role::Reviewer).await;
        let case_id = create_case(&app, &rita.access_token, "CHQ-1").await;

        // The client's claimed type is ignored: the bytes decide.
        let (status, front) = upload(&app, &rita.access_token, &case_id, "front.png", "application/octet-stream", &png()).await;
        assert_eq!(status, StatusCode::CREATED, "{front}");
        assert_eq!(front["case_id"], case_id.as_str());
        assert_eq!(front["filename"], "front.png");
        assert_eq!(front["content_type"], "image/png");
        assert_eq!(front["size_bytes"], png().len());
        assert_eq!(front["sha256"], sha256(&png()));
        assert_eq!(front["uploaded_by"], format!("user:{}", rita.user_id));
        assert!(front["created_at"].is_string());
        assert!(front.get("object_key").is_none() && front.get("tenant_id").is_none(), "{front}");

        let (status, statement) = upload(&app, &rita.access_token, &case_id, "../../statement.pdf", "image/png", &pdf()).await;
        assert_eq!(status, StatusCode::CREATED, "{statement}");
        assert_eq!(statement["content_type"], "application/pdf");
        assert_eq!(statement["filename"], "statement.pdf", "path components are stripped");

        for (attachment, bytes, content_type) in [(&front, png(), "image/png"), (&statement, pdf(), "application/pdf")] {
            let id = attachment["id"].as_str().unwrap();
            let response = download(&app, &rita.access_token, &case_id, id).await;
            assert_eq!(response.status(), StatusCode::OK);
            let headers = response.headers().clone();
            assert_eq!(headers["content-type"], content_type);
            assert_eq!(headers["content-length"], bytes.len().to_string().as_str());
            assert_eq!(headers["etag"], format!("\"{}\"", sha256(&bytes)).as_str());
            assert_eq!(headers["x-content-type-options"], "nosniff");
            assert_eq!(
                headers["content-disposition"],
                format!("attachment; filename=\"{}\"", attachment["filename"].as_str().unwrap()).as_str()
            );
            assert_eq!(response.bytes().await.unwrap().as_ref(), bytes.as_slice(), "byte-exact");
        }

        let (status, listed) = list(&app, &rita.access_token, &case_id).await;
        assert_eq!(status, StatusCode::OK);
        let ids: Vec<&str> = listed["items"].as_array().unwrap().iter().map(|a| a["id"].as_str().unwrap()).collect();
        assert_eq!(ids, [front["id"].as_str().unwrap(), statement["id"].as_str().unwrap()], "oldest first");

        let objects = stored_objects(&app).await;
        let expected = format!("{}/cases/{case_id}/{}", rita.tenant_id, front["id"].as_str().unwrap());
        assert!(objects.contains(&expected), "{objects:?}");

        // The case history records the addition with the hash, without changing the state.
        let (_, case) = app.call(Method::GET, &format!("/api/v1/cases/{case_id}"), &rita.access_token, None).await;
        let added: Vec<&Value> = case["history"].as_array().unwrap().iter().filter(|h| h["action"] == "attachment_added").collect();
        assert_eq!(added.len(), 2, "{case}");
        assert_eq!(added[0]["details"]["sha256"], sha256(&png()));
        assert_eq!(added[0]["details"]["attachment_id"], front["id"]);
        assert_eq!(added[0]["from_state"], case["state"]);
        assert_eq!(added[0]["to_state"], case["state"]);
        assert_eq!(added[0]["actor"], format!("user:{}", rita.user_id));
        assert_eq!(added[0]["decision"], Value::Null);

        // Each download and the case read above were recorded as views.
        let sue = app.sign_in("acme", "sue@acme.test", Role::Supervisor).await;
        let (_, views) = app.call(Method::GET, &format!("/api/v1/cases/{case_id}/views"), &sue.access_token, None).await;
        let seen: Vec<&Value> = views.as_array().unwrap().iter().map(|v| &v["attachment_id"]).collect();
        assert_eq!(seen, [&Value::Null, &statement["id"], &front["id"]], "{views}");
    }

    async fn uploads_are_audited_with_their_hash(backend) {
        let Some(app) = TestApp::spawn(backend).await else { return };
        let rita = app.sign_in("acme", "rita@acme.test", Role::Reviewer).await;
        let sue = app.sign_in("acme", "sue@acme.test", Role::Supervisor).await;
        let case_id = create_case(&app, &rita.access_token, "CHQ-1").await;
        let (status, attachment) = upload(&app, &rita.access_token, &case_id, "back.pdf", "application/pdf", &pdf()).await;
        assert_eq!(status, StatusCode::CREATED, "{attachment}");

        let (status, audit) = app.call(Method::GET, "/api/v1/audit?action=case.attachment_added", &sue.access_token, None).await;
        assert_eq!(status, StatusCode::OK, "{audit}");
        let records = audit["items"].as_array().unwrap();
        assert_eq!(records.len(), 1, "{audit}");
        let record = &records[0];
        assert_eq!(record["target_type"], "case");
        assert_eq!(record["target_id"], case_id.as_str());
        assert_eq!(record["actor_id"], rita.user_id.as_str());
        let summary: Value = record["summary"].clone();
        assert_eq!(
            summary,
            json!({
                "attachment_id": attachment["id"], "filename": "back.pdf", "content_type": "application/pdf",
                "size_bytes": pdf().len(), "sha256": sha256(&pdf()),
            })
        );
        let (_, verification) = app.call(Method::GET, "/api/v1/audit/verify", &sue.access_token, None).await;
        assert_eq!(verification["valid"], true, "{verification}");
    }

    async fn disallowed_types_are_refused_and_nothing_is_stored(backend) {
        let Some(app) = TestApp::spawn(backend).await else { return };
        let rita = app.sign_in("acme", "rita@acme.test", Role::Reviewer).await;
        let case_id = create_case(&app, &rita.access_token, "CHQ-1").await;
        let refused: [(&str, &str, Vec<u8>, Value); 3] = [
            ("notes.png", "image/png", b"Pay Ann 1250 USD, urgent.\n".to_vec(), Value::Null),
            ("cheque.pdf", "application/pdf", exe(), json!("application/vnd.microsoft.portable-executable")),
            ("scan.gif", "image/gif", b"GIF89a\x01\0\x01\0\x80\0\0\xff\xff\xff\0\0\0!".to_vec(), json!("image/gif")),
        ];
        for (filename, claimed, bytes, detected) in refused {
            let (status, body) = upload(&app, &rita.access_token, &case_id, filename, claimed, &bytes).await;
            assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE, "{filename}: {body}");
            assert_eq!(body["error"]["code"], "unsupported_attachment_type", "{body}");
            assert_eq!(body["error"]["details"]["detected_type"], detected, "{body}");
            assert_eq!(
                body["error"]["details"]["allowed_types"],
                json!(["application/pdf", "image/jpeg", "image/png", "image/tiff", "image/webp"])
            );
            let message = body["error"]["message"].as_str().unwrap();
            assert!(message.contains("image/png") && message.contains("application/pdf"), "{message}");
        }
        let (_, listed) = list(&app, &rita.access_token, &case_id).await;
        assert_eq!(listed["items"], json!([]));
        assert_eq!(stored_objects(&app).await, Vec::<String>::new());
    }

    async fn oversized_files_are_413_and_not_stored(backend) {
        let overrides = [("MAX_ATTACHMENT_MB", "1")];
        let Some(app) = TestApp::spawn_with(backend, docket::app::Role::All, &overrides).await else { return };
        let rita = app.sign_in("acme", "rita@acme.test", Role::Reviewer).await;
        let case_id = create_case(&app, &rita.access_token, "CHQ-1").await;
        let limit = 1024 * 1024;
        let mut big = png();
        big.resize(limit + 1, 0x5a);
        let (status, body) = upload(&app, &rita.access_token, &case_id, "huge.png", "image/png", &big).await;
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{body}");
        assert_eq!(body["error"]["code"], "attachment_too_large", "{body}");
        assert_eq!(body["error"]["details"]["max_bytes"], limit);
        assert_eq!(stored_objects(&app).await, Vec::<String>::new());

        // Well over the limit: reading stops at the limit, and the client still gets the 413.
        let mut bigger = png();
        bigger.resize(limit + limit / 2, 0x5a);
        let (status, body) = upload(&app, &rita.access_token, &case_id, "bigger.png", "image/png", &bigger).await;
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{body}");
        assert_eq!(body["error"]["code"], "attachment_too_large", "{body}");
        assert_eq!(stored_objects(&app).await, Vec::<String>::new());

        // Exactly the limit is fine.
        big.truncate(limit);
        let (status, body) = upload(&app, &rita.access_token, &case_id, "big.png", "image/png", &big).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        assert_eq!(body["size_bytes"], limit);
        let (_, listed) = list(&app, &rita.access_token, &case_id).await;
        assert_eq!(listed["items"].as_array().unwrap().len(), 1);
    }

    async fn other_tenants_see_no_case_no_list_and_no_file(backend) {
        let Some(app) = TestApp::spawn(backend).await else { return };
        let rita = app.sign_in("acme", "rita@acme.test", Role::Reviewer).await;
        let gus = app.sign_in("globex", "gus@globex.test", Role::Supervisor).await;
        let case_id = create_case(&app, &rita.access_token, "CHQ-1").await;
        let (_, attachment) = upload(&app, &rita.access_token, &case_id, "front.png", "image/png", &png()).await;
        let id = attachment["id"].as_str().unwrap();

        let (status, _) = app.call(Method::GET, &format!("/api/v1/cases/{case_id}"), &gus.access_token, None).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        let (status, body) = list(&app, &gus.access_token, &case_id).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
        let response = download(&app, &gus.access_token, &case_id, id).await;
        assert_eq!(response.status(), StatusCode::NOT_FOUND);
        let (status, body) = upload(&app, &gus.access_token, &case_id, "mine.png", "image/png", &png()).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
        assert_eq!(body["error"]["code"], "not_found");

        // Unknown ids in the right tenant are 404 too, including an attachment under another case.
        let other_case = create_case(&app, &rita.access_token, "CHQ-2").await;
        assert_eq!(download(&app, &rita.access_token, &other_case, id).await.status(), StatusCode::NOT_FOUND);
        assert_eq!(download(&app, &rita.access_token, &case_id, "no-such-file").await.status(), StatusCode::NOT_FOUND);
        assert_eq!(list(&app, &rita.access_token, "no-such-case").await.0, StatusCode::NOT_FOUND);
        let (_, listed) = list(&app, &rita.access_token, &case_id).await;
        assert_eq!(listed["items"].as_array().unwrap().len(), 1, "globex's attempt stored nothing");
    }

    async fn viewers_download_but_cannot_upload(backend) {
        let Some(app) = TestApp::spawn(backend).await else { return };
        let rita = app.sign_in("acme", "rita@acme.test", Role::Reviewer).await;
        let val = app.sign_in("acme", "val@acme.test", Role::Viewer).await;
        let case_id = create_case(&app, &rita.access_token, "CHQ-1").await;
        let (_, attachment) = upload(&app, &rita.access_token, &case_id, "front.png", "image/png", &png()).await;

        let (status, body) = upload(&app, &val.access_token, &case_id, "mine.png", "image/png", &png()).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
        let (status, listed) = list(&app, &val.access_token, &case_id).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(listed["items"].as_array().unwrap().len(), 1);
        let response = download(&app, &val.access_token, &case_id, attachment["id"].as_str().unwrap()).await;
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.bytes().await.unwrap().as_ref(), png().as_slice());

        let anonymous = app.client.get(app.url(&format!("/api/v1/cases/{case_id}/attachments"))).send().await.unwrap();
        assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
    }

    async fn cancelled_cases_take_no_attachments(backend) {
        let Some(app) = TestApp::spawn(backend).await else { return };
        let rita = app.sign_in("acme", "rita@acme.test", Role::Reviewer).await;
        let case_id = create_case(&app, &rita.access_token, "CHQ-1").await;
        let (status, cancelled) = app.call(Method::POST, &format!("/api/v1/cases/{case_id}/cancel"), &rita.access_token, Some(json!({ "reason": "duplicate" }))).await;
        assert_eq!(status, StatusCode::OK, "{cancelled}");
        let (status, body) = upload(&app, &rita.access_token, &case_id, "late.png", "image/png", &png()).await;
        assert_eq!(status, StatusCode::CONFLICT, "{body}");
        assert_eq!(body["error"]["code"], "invalid_state");
        assert_eq!(body["error"]["details"]["state"], "cancelled");
        assert_eq!(stored_objects(&app).await, Vec::<String>::new());
    }

    async fn a_failed_database_write_leaves_no_object_behind(backend) {
        let Some(app) = TestApp::spawn(backend).await else { return };
        let rita = app.sign_in("acme", "rita@acme.test", Role::Reviewer).await;
        let case_id = create_case(&app, &rita.access_token, "CHQ-1").await;
        // Break the table behind Docket's back so the insert fails after the bytes were stored.
        let sabotage = "ALTER TABLE attachments RENAME TO attachments_gone";
        match &app.state.store {
            docket::store::Store::Sqlite(pool, _) => sqlx::query(sabotage).execute(pool).await.map(|_| ()),
            docket::store::Store::Postgres(pool) => sqlx::query(sabotage).execute(pool).await.map(|_| ()),
        }
        .unwrap();
        let (status, body) = upload(&app, &rita.access_token, &case_id, "front.png", "image/png", &png()).await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR, "{body}");
        assert_eq!(stored_objects(&app).await, Vec::<String>::new());
        let (_, case) = app.call(Method::GET, &format!("/api/v1/cases/{case_id}"), &rita.access_token, None).await;
        let history = case["history"].as_array().unwrap();
        assert!(history.iter().all(|h| h["action"] != "attachment_added"), "rolled back: {case}");
    }

    async fn malformed_uploads_get_clear_errors(backend) {
        let Some(app) = TestApp::spawn(backend).await else { return };
        let rita = app.sign_in("acme", "rita@acme.test", Role::Reviewer).await;
        let case_id = create_case(&app, &rita.access_token, "CHQ-1").await;
        let error = |response: reqwest::Response| async move {
            let status = response.status();
            let body: Value = response.json().await.unwrap();
            (status, body)
        };

        let (status, body) = error(post_form(&app, &rita.access_token, &case_id, form("document", "front.png", "image/png", &png())).await).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
        assert_eq!(body["error"]["details"]["field"], "file");

        let (status, body) = upload(&app, &rita.access_token, &case_id, "empty.png", "image/png", b"").await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
        assert_eq!(body["error"]["details"]["field"], "file");

        let two = form_parts(&[("file", "a.png", "image/png", &png()), ("file", "b.png", "image/png", &png())]);
        let (status, body) = error(post_form(&app, &rita.access_token, &case_id, two).await).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");

        let truncated = form("file", "front.png", "image/png", &png())[..120].to_vec();
        let (status, body) = error(post_form(&app, &rita.access_token, &case_id, truncated).await).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(body["error"]["code"], "invalid_multipart");

        let (status, body) = app.call(Method::POST, &format!("/api/v1/cases/{case_id}/attachments"), &rita.access_token, Some(json!({ "file": "front.png" }))).await;
        assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE, "{body}");
        assert_eq!(body["error"]["code"], "unsupported_media_type");

        let (status, _) = upload(&app, &rita.access_token, "no-such-case", "front.png", "image/png", &png()).await;
        assert_eq!(status, StatusCode::NOT_FOUND);

        let (_, listed) = list(&app, &rita.access_token, &case_id).await;
        assert_eq!(listed["items"], json!([]));
        assert_eq!(stored_objects(&app).await, Vec::<String>::new());
    }
}

/// Attachments may be up to `MAX_ATTACHMENT_MB` (default 10) although JSON bodies stop at
/// `MAX_BODY_BYTES` (default 2 MiB).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_above_the_json_body_limit_can_be_attached() {
    let Some(app) = TestApp::spawn(Backend::Sqlite).await else {
        return;
    };
    let rita = app.sign_in("acme", "rita@acme.test", Role::Reviewer).await;
    let case_id = create_case(&app, &rita.access_token, "CHQ-1").await;
    let mut scan = png();
    scan.resize(3 * 1024 * 1024, 0x5a);
    let (status, body) = upload(
        &app,
        &rita.access_token,
        &case_id,
        "scan.png",
        "image/png",
        &scan,
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["size_bytes"], 3 * 1024 * 1024);
    let (status, error) = app
        .call(
            reqwest::Method::POST,
            "/api/v1/cases",
            &rita.access_token,
            Some(json!({ "type": "cheque", "reference": "x".repeat(3 * 1024 * 1024), "amount": "1", "currency": "USD" })),
        )
        .await;
    assert_eq!(
        status,
        StatusCode::PAYLOAD_TOO_LARGE,
        "JSON keeps its own limit: {error}"
    );
}
