//! The knowledge base through the API: collections, background ingestion, lexical, vector and
//! hybrid search, deletion and tenant isolation.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use docket::app::Role as ProcessRole;
use docket::auth::Role;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::on_both_backends;
use crate::support::{Login, TestApp};

const CORPUS: [(&str, &str, &str); 4] = [
    (
        "Cheque handling",
        "ops",
        "# Cheques\n\nA lost cheque must be stopped at once: place a stop payment instruction and inform the drawer.\n\n## Large cheques\n\nCheques above 5000 need two signatures and a supervisor check.",
    ),
    (
        "Refund policy",
        "ops",
        "# Refunds\n\nCard refunds are issued to the original card within five working days. Cash refunds need a receipt.",
    ),
    (
        "Holiday rota",
        "hr",
        "# Holidays\n\nStaff book annual leave through the rota at least two weeks ahead. Public holidays are paid.",
    ),
    (
        "Password rules",
        "it",
        "# Passwords\n\nPasswords must be at least fourteen characters and are never shared, not even with the help desk.",
    ),
];

/// A deterministic stand-in for an embedding model: each word adds to one of 64 dimensions, so
/// texts sharing words point the same way. `failures` makes the first calls answer 503.
pub(crate) async fn embedding_server(
    failures: usize,
    permanent: bool,
) -> (String, Arc<AtomicUsize>) {
    use axum::Json;
    use axum::routing::post;
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = calls.clone();
    let app = axum::Router::new().route(
        "/v1/embeddings",
        post(move |Json(request): Json<Value>| {
            let calls = counter.clone();
            async move {
                let n = calls.fetch_add(1, Ordering::SeqCst);
                if permanent {
                    return (
                        axum::http::StatusCode::BAD_REQUEST,
                        Json(json!({ "error": { "message": "model not found" } })),
                    );
                }
                if n < failures {
                    return (
                        axum::http::StatusCode::SERVICE_UNAVAILABLE,
                        Json(json!({ "error": { "message": "warming up" } })),
                    );
                }
                let inputs: Vec<String> = match &request["input"] {
                    Value::String(s) => vec![s.clone()],
                    Value::Array(items) => items
                        .iter()
                        .map(|v| v.as_str().unwrap_or_default().to_owned())
                        .collect(),
                    _ => Vec::new(),
                };
                let data: Vec<Value> = inputs
                    .iter()
                    .enumerate()
                    .map(|(i, text)| {
                        let mut v = vec![0.0_f32; 64];
                        for word in text
                            .split(|c: char| !c.is_alphanumeric())
                            .filter(|w| w.len() > 3)
                        {
                            let h = word
                                .to_lowercase()
                                .bytes()
                                .fold(7_u32, |h, b| h.wrapping_mul(31).wrapping_add(u32::from(b)));
                            v[(h % 64) as usize] += 1.0;
                        }
                        json!({ "object": "embedding", "index": i, "embedding": v })
                    })
                    .collect();
                (
                    axum::http::StatusCode::OK,
                    Json(
                        json!({ "object": "list", "data": data, "model": request["model"],
                    "usage": { "prompt_tokens": 10, "total_tokens": 10 } }),
                    ),
                )
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}/v1", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (base, calls)
}

async fn collection(app: &TestApp, who: &Login, name: &str) -> String {
    let (status, body) = app
        .call(
            Method::POST,
            "/api/v1/collections",
            &who.access_token,
            Some(json!({ "name": name })),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    body["id"].as_str().unwrap().to_owned()
}

async fn add(
    app: &TestApp,
    who: &Login,
    collection: &str,
    title: &str,
    team: &str,
    text: &str,
) -> Value {
    let (status, body) = app.call(Method::POST, &format!("/api/v1/collections/{collection}/documents"), &who.access_token,
        Some(json!({ "title": title, "text": text, "content_type": "text/markdown", "metadata": { "team": team } }))).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    body
}

async fn wait_status(
    app: &TestApp,
    who: &Login,
    collection: &str,
    document: &Value,
    status: &str,
) -> Value {
    let path = format!(
        "/api/v1/collections/{collection}/documents/{}",
        document["id"].as_str().unwrap()
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (_, doc) = app.call(Method::GET, &path, &who.access_token, None).await;
        if doc["status"] == status {
            return doc;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "document stuck: {doc}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn search(app: &TestApp, who: &Login, collection: &str, body: Value) -> (StatusCode, Value) {
    app.call(
        Method::POST,
        &format!("/api/v1/collections/{collection}/search"),
        &who.access_token,
        Some(body),
    )
    .await
}

fn titles(results: &Value) -> Vec<String> {
    results["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["document_title"].as_str().unwrap().to_owned())
        .collect()
}

/// A one-page PDF with `text` in Helvetica; the cross-reference offsets are computed as it is written.
fn pdf(text: &str) -> Vec<u8> {
    let content = format!("BT\n/F1 18 Tf\n72 700 Td\n({text}) Tj\nET\n");
    let objects = [
        "<< /Type /Catalog /Pages 2 0 R >>".to_owned(),
        "<< /Type /Pages /Kids [4 0 R] /Count 1 >>".to_owned(),
        "<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>".to_owned(),
        "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Resources << /Font << /F1 3 0 R >> >> /Contents 5 0 R >>".to_owned(),
        format!("<< /Length {} >>\nstream\n{content}endstream", content.len()),
    ];
    let mut out = b"%PDF-1.4\n".to_vec();
    let mut offsets = Vec::new();
    for (i, object) in objects.iter().enumerate() {
        offsets.push(out.len());
        out.extend_from_slice(format!("{} 0 obj\n{object}\nendobj\n", i + 1).as_bytes());
    }
    let xref_at = out.len();
    let mut xref = format!("xref\n0 {}\n0000000000 65535 f \n", objects.len() + 1);
    for offset in offsets {
        xref.push_str(&format!("{offset:010} 00000 n \n"));
    }
    xref.push_str(&format!(
        "trailer\n<< /Size {} /Root 1 0 R >>\nstartxref\n{xref_at}\n%%EOF\n",
        objects.len() + 1
    ));
    out.extend_from_slice(xref.as_bytes());
    out
}

/// Uploads `bytes` as a multipart form (file plus title and metadata fields).
async fn upload(
    app: &TestApp,
    who: &Login,
    collection: &str,
    filename: &str,
    content_type: &str,
    bytes: &[u8],
) -> (StatusCode, Value) {
    let boundary = "docket-test-boundary";
    let mut body = Vec::new();
    body.extend_from_slice(format!("--{boundary}\r\nContent-Disposition: form-data; name=\"metadata\"\r\n\r\n{{\"team\":\"ops\"}}\r\n").as_bytes());
    body.extend_from_slice(format!("--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{filename}\"\r\nContent-Type: {content_type}\r\n\r\n").as_bytes());
    body.extend_from_slice(bytes);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    let response = app
        .client
        .post(app.url(&format!("/api/v1/collections/{collection}/documents")))
        .bearer_auth(&who.access_token)
        .header(
            "content-type",
            format!("multipart/form-data; boundary={boundary}"),
        )
        .body(body)
        .send()
        .await
        .unwrap();
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

on_both_backends! {
    async fn pdf_and_html_uploads_are_extracted(backend) {
        let Some(app) = TestApp::spawn(backend).await else { return };
        let sue = app.sign_in("acme", "sue@acme.test", Role::Supervisor).await;
        let kb = collection(&app, &sue, "scans").await;
        // Sent as octet-stream: the PDF is recognised by its content.
        let (status, doc) = upload(&app, &sue, &kb, "policy.pdf", "application/octet-stream", &pdf("Stopped cheques are reported to the clearing house")).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{doc}");
        assert_eq!(doc["content_type"], "application/pdf");
        assert_eq!(doc["metadata"]["team"], "ops");
        wait_status(&app, &sue, &kb, &doc, "indexed").await;
        let html = "<html><head><style>p{}</style><script>var secret = 1;</script></head><body><h1>Branch hours</h1><p>Branches open at nine.</p></body></html>";
        let (status, page) = upload(&app, &sue, &kb, "hours.html", "text/html", html.as_bytes()).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{page}");
        let indexed = wait_status(&app, &sue, &kb, &page, "indexed").await;
        let text = indexed["chunks"][0]["text"].as_str().unwrap();
        assert!(text.contains("Branches open at nine") && !text.contains("secret"), "{text}");
        let (_, found) = search(&app, &sue, &kb, json!({ "query": "clearing house" })).await;
        assert_eq!(titles(&found), ["policy.pdf"]);
        let (status, error) = upload(&app, &sue, &kb, "tool.exe", "application/octet-stream", b"MZ\x90\x00binary").await;
        assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE, "{error}");
        let broken = pdf("x").into_iter().take(40).collect::<Vec<u8>>();
        let (status, bad) = upload(&app, &sue, &kb, "broken.pdf", "application/pdf", &broken).await;
        assert_eq!(status, StatusCode::ACCEPTED);
        let failed = wait_status(&app, &sue, &kb, &bad, "failed").await;
        assert!(failed["error"].as_str().unwrap().contains("PDF"), "{failed}");
    }

    async fn documents_are_ingested_and_found_by_lexical_search(backend) {
        let Some(app) = TestApp::spawn(backend).await else { return };
        let sue = app.sign_in("acme", "sue@acme.test", Role::Supervisor).await;
        let viewer = app.sign_in("acme", "vic@acme.test", Role::Viewer).await;
        let kb = collection(&app, &sue, "procedures").await;
        let (status, _) = app.call(Method::POST, "/api/v1/collections", &sue.access_token, Some(json!({ "name": "procedures" }))).await;
        assert_eq!(status, StatusCode::CONFLICT);
        let (status, _) = app.call(Method::POST, "/api/v1/collections", &viewer.access_token, Some(json!({ "name": "mine" }))).await;
        assert_eq!(status, StatusCode::FORBIDDEN);

        let mut docs = Vec::new();
        for (title, team, text) in CORPUS {
            docs.push(add(&app, &sue, &kb, title, team, text).await);
        }
        for doc in &docs {
            let indexed = wait_status(&app, &sue, &kb, doc, "indexed").await;
            assert!(indexed["chunk_count"].as_i64().unwrap() >= 1, "{indexed}");
            assert!(!indexed["chunks"].as_array().unwrap().is_empty());
        }
        let cheques = wait_status(&app, &sue, &kb, &docs[0], "indexed").await;
        let headings: Vec<&str> = cheques["chunks"].as_array().unwrap().iter().filter_map(|c| c["heading"].as_str()).collect();
        assert!(headings.iter().any(|h| h.contains("Large cheques")), "{headings:?}");

        let (status, again) = app.call(Method::POST, &format!("/api/v1/collections/{kb}/documents"), &sue.access_token,
            Some(json!({ "title": "Copy", "text": CORPUS[1].2, "content_type": "text/markdown" }))).await;
        assert_eq!(status, StatusCode::OK, "same content: {again}");
        assert_eq!(again["duplicate"], true);
        assert_eq!(again["id"], docs[1]["id"]);

        let (status, found) = search(&app, &viewer, &kb, json!({ "query": "lost cheque stop payment", "k": 3 })).await;
        assert_eq!(status, StatusCode::OK, "{found}");
        assert_eq!(found["mode"], "lexical", "no embedding endpoint: lexical");
        assert_eq!(titles(&found)[0], "Cheque handling");
        let snippet = found["results"][0]["snippet"].as_str().unwrap();
        assert!(snippet.contains("<mark>"), "{snippet}");
        let (_, found) = search(&app, &viewer, &kb, json!({ "query": "how long do card refunds take", "mode": "lexical" })).await;
        assert_eq!(titles(&found)[0], "Refund policy");
        let (_, filtered) = search(&app, &viewer, &kb, json!({ "query": "cheque refunds passwords holidays", "k": 10, "filter": { "team": "it" } })).await;
        assert_eq!(titles(&filtered), ["Password rules"]);
        let (status, body) = search(&app, &viewer, &kb, json!({ "query": "cheque", "mode": "vector" })).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
        let (status, _) = search(&app, &viewer, &kb, json!({ "query": "  " })).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);

        // Deleting removes the chunks from search.
        let (status, _) = app.call(Method::DELETE, &format!("/api/v1/collections/{kb}/documents/{}", docs[0]["id"].as_str().unwrap()), &sue.access_token, None).await;
        assert_eq!(status, StatusCode::NO_CONTENT);
        let (_, found) = search(&app, &viewer, &kb, json!({ "query": "lost cheque stop payment" })).await;
        assert!(!titles(&found).contains(&"Cheque handling".to_owned()), "{found}");
    }

    async fn other_tenants_never_see_a_chunk(backend) {
        let Some(app) = TestApp::spawn(backend).await else { return };
        let sue = app.sign_in("acme", "sue@acme.test", Role::Supervisor).await;
        let gil = app.sign_in("globex", "gil@globex.test", Role::Supervisor).await;
        let ours = collection(&app, &sue, "procedures").await;
        let doc = add(&app, &sue, &ours, CORPUS[0].0, "ops", CORPUS[0].2).await;
        wait_status(&app, &sue, &ours, &doc, "indexed").await;
        let theirs = collection(&app, &gil, "procedures").await;
        let (status, found) = search(&app, &gil, &theirs, json!({ "query": "lost cheque stop payment" })).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(found["results"], json!([]));
        for path in [format!("/api/v1/collections/{ours}"), format!("/api/v1/collections/{ours}/documents")] {
            let (status, _) = app.call(Method::GET, &path, &gil.access_token, None).await;
            assert_eq!(status, StatusCode::NOT_FOUND, "{path}");
        }
        let (status, _) = search(&app, &gil, &ours, json!({ "query": "cheque" })).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
    }

    async fn vector_and_hybrid_search_use_the_embedding_endpoint(backend) {
        // Three failures: more than one embedding call retries, so the ingestion job itself fails
        // once and is retried.
        let (base, calls) = embedding_server(3, false).await;
        let env = [("EMBEDDING_BASE_URL", base.as_str()), ("EMBEDDING_MODEL", "tiny-embed"), ("WORKER_BACKOFF_MAX_DELAY", "0.2")];
        let Some(app) = TestApp::spawn_with(backend, ProcessRole::All, &env).await else { return };
        let sue = app.sign_in("acme", "sue@acme.test", Role::Supervisor).await;
        let kb = collection(&app, &sue, "procedures").await;
        let first = add(&app, &sue, &kb, CORPUS[0].0, CORPUS[0].1, CORPUS[0].2).await;
        let indexed = wait_status(&app, &sue, &kb, &first, "indexed").await;
        assert_eq!(indexed["error"], Value::Null, "a later success clears the error");
        let job_id = first["job_id"].as_str().unwrap();
        // The handler marks the document indexed; the worker records the job's completion after
        // it returns (completions are written in batches), so the run may still be running here.
        app.wait_for_job(&sue.tenant_id, job_id, "succeeded").await;
        let runs = docket::queue::runs_of(&app.state.store, &sue.tenant_id, job_id).await.unwrap();
        let statuses: Vec<&str> = runs.iter().map(|r| r.status.as_str()).collect();
        assert_eq!(statuses, ["failed", "succeeded"], "the job failed after three tries and was retried");
        assert_eq!(calls.load(Ordering::SeqCst), 4);
        let mut docs = vec![first];
        for (title, team, text) in &CORPUS[1..] {
            docs.push(add(&app, &sue, &kb, title, team, text).await);
        }
        for doc in &docs {
            wait_status(&app, &sue, &kb, doc, "indexed").await;
        }
        let (status, found) = search(&app, &sue, &kb, json!({ "query": "signatures supervisor cheques", "mode": "vector", "k": 2 })).await;
        assert_eq!(status, StatusCode::OK, "{found}");
        assert_eq!(titles(&found)[0], "Cheque handling");
        assert!(found["results"][0]["vector_rank"] == 1 && found["results"][0]["lexical_rank"].is_null());
        let (_, hybrid) = search(&app, &sue, &kb, json!({ "query": "annual leave rota" })).await;
        assert_eq!(hybrid["mode"], "hybrid");
        assert_eq!(titles(&hybrid)[0], "Holiday rota");
        assert_eq!(hybrid["results"][0]["lexical_rank"], 1);
        assert_eq!(hybrid["results"][0]["vector_rank"], 1);
    }

    async fn ingestion_that_cannot_succeed_marks_the_document_failed(backend) {
        let Some(app) = TestApp::spawn(backend).await else { return };
        let sue = app.sign_in("acme", "sue@acme.test", Role::Supervisor).await;
        let kb = collection(&app, &sue, "procedures").await;
        let (status, doc) = upload(&app, &sue, &kb, "scan.pdf", "application/pdf", b"%PDF-1.4 this is no PDF at all").await;
        assert_eq!(status, StatusCode::ACCEPTED, "{doc}");
        let failed = wait_status(&app, &sue, &kb, &doc, "failed").await;
        assert!(!failed["error"].as_str().unwrap_or_default().is_empty(), "{failed}");
        assert_eq!(failed["embedding_error"], Value::Null);
    }

    // The lexical index does not need embeddings: a document whose chunks cannot be embedded (an
    // endpoint that refuses for good) is indexed, says why it has no embeddings, and is found.
    async fn a_document_that_cannot_be_embedded_is_indexed_for_lexical_search(backend) {
        let (base, _) = embedding_server(0, true).await;
        let Some(app) = TestApp::spawn_with(backend, ProcessRole::All, &[("EMBEDDING_BASE_URL", base.as_str())]).await else { return };
        let sue = app.sign_in("acme", "sue@acme.test", Role::Supervisor).await;
        let kb = collection(&app, &sue, "procedures").await;
        let doc = add(&app, &sue, &kb, "Cheques", "ops", CORPUS[0].2).await;
        let indexed = wait_status(&app, &sue, &kb, &doc, "indexed").await;
        assert!(indexed["embedding_error"].as_str().unwrap().contains("model not found"), "{indexed}");
        assert_eq!(indexed["error"], Value::Null);
        assert!(indexed["chunk_count"].as_u64().unwrap() >= 1, "{indexed}");
        let (status, found) = search(&app, &sue, &kb, json!({ "query": "cheque signatures" })).await;
        assert_eq!(status, StatusCode::OK, "{found}");
        assert_eq!((found["mode"].as_str(), titles(&found).first().map(String::as_str)), (Some("lexical"), Some("Cheques")), "{found}");
        assert!(found["fallback"].as_str().unwrap().contains("embedding the query"), "{found}");
        // Asked for vector search only, there is nothing to fall back on.
        let (status, error) = search(&app, &sue, &kb, json!({ "query": "cheque signatures", "mode": "vector" })).await;
        assert_eq!(status, StatusCode::BAD_GATEWAY, "{error}");
    }
}

/// A stand-in for an OpenAI-compatible chat model that answers from the sources it is given,
/// the way the question asks it to misbehave; it records every request.
async fn answering_model() -> (String, Arc<std::sync::Mutex<Vec<Value>>>) {
    use axum::Json;
    use axum::routing::post;
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = seen.clone();
    let app = axum::Router::new().route(
        "/v1/chat/completions",
        post(move |Json(request): Json<Value>| {
            let log = log.clone();
            async move {
                log.lock().unwrap().push(request.clone());
                let user = request["messages"][1]["content"].as_str().unwrap_or_default().to_owned();
                let question = user.rsplit("Question: ").next().unwrap_or_default();
                let reply = if question.contains("broken") {
                    return (axum::http::StatusCode::BAD_REQUEST, Json(json!({ "error": { "message": "context too long" } })));
                } else if question.contains("stranger") {
                    json!({ "answer": "Ask the drawer [7].", "sources": [7] })
                } else if question.contains("annual leave") && question.contains("cheque") {
                    json!({ "answer": null, "sources": [] })
                } else {
                    let source = user.lines().find(|l| l.starts_with('[') && l.contains("Cheque handling")).map(|l| l[1..2].to_owned()).unwrap_or_default();
                    json!({ "answer": format!("Two signatures and a supervisor check [{source}]."), "sources": [source] })
                };
                (axum::http::StatusCode::OK, Json(json!({
                    "id": "chatcmpl-1", "object": "chat.completion", "model": request["model"],
                    "choices": [{ "index": 0, "finish_reason": "stop", "message": { "role": "assistant", "content": reply.to_string() } }],
                    "usage": { "prompt_tokens": 120, "completion_tokens": 12, "total_tokens": 132 }
                })))
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}/v1", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (base, seen)
}

on_both_backends! {
    async fn questions_are_answered_only_from_retrieved_chunks_with_citations(backend) {
        let (llm, seen) = answering_model().await;
        let (embeddings, _) = embedding_server(0, false).await;
        // Waiting for four documents polls the API more often than the default limit allows.
        let env = [("LLM_BASE_URL", llm.as_str()), ("LLM_MODEL", "tiny"), ("EMBEDDING_BASE_URL", embeddings.as_str()),
                   ("RATE_LIMIT_PER_MINUTE", "100000")];
        let Some(app) = TestApp::spawn_with(backend, ProcessRole::All, &env).await else { return };
        let sue = app.sign_in("acme", "sue@acme.test", Role::Supervisor).await;
        let viewer = app.sign_in("acme", "vic@acme.test", Role::Viewer).await;
        let kb = collection(&app, &sue, "procedures").await;
        for (title, team, text) in CORPUS {
            let doc = add(&app, &sue, &kb, title, team, text).await;
            wait_status(&app, &sue, &kb, &doc, "indexed").await;
        }
        let ask = |who: &Login, body: Value| {
            let path = format!("/api/v1/collections/{kb}/ask");
            let token = who.access_token.clone();
            let app = &app;
            async move { app.call(Method::POST, &path, &token, Some(body)).await }
        };

        let instructions = json!({ "instructions": "Answer in one sentence. Never give legal advice." });
        let (status, _) = app.call(Method::PUT, "/api/v1/knowledge/settings", &viewer.access_token, Some(instructions.clone())).await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        let (status, saved) = app.call(Method::PUT, "/api/v1/knowledge/settings", &sue.access_token, Some(instructions)).await;
        assert_eq!(status, StatusCode::OK, "{saved}");
        let (_, settings) = app.call(Method::GET, "/api/v1/knowledge/settings", &viewer.access_token, None).await;
        assert_eq!(settings["instructions"], "Answer in one sentence. Never give legal advice.");

        let (status, answer) = ask(&viewer, json!({ "question": "What do large cheques above 5000 need?", "k": 3 })).await;
        assert_eq!(status, StatusCode::OK, "{answer}");
        assert_eq!(answer["status"], "answered", "{answer}");
        assert!(answer["answer"].as_str().unwrap().starts_with("Two signatures"), "{answer}");
        let citation = &answer["citations"][0];
        assert_eq!(citation["document_title"], "Cheque handling", "{answer}");
        assert!(citation["chunk_id"].is_string() && citation["snippet"].as_str().unwrap().contains("<mark>"), "{answer}");
        assert_eq!(answer["usage"]["total_tokens"], 132);
        let request = seen.lock().unwrap().last().unwrap().clone();
        let system = request["messages"][0]["content"].as_str().unwrap();
        assert!(system.contains("ONLY the numbered sources") && system.contains("Never give legal advice"), "{system}");
        let user = request["messages"][1]["content"].as_str().unwrap();
        assert!(user.contains("two signatures and a supervisor check"), "the chunk text is the source: {user}");
        assert!(!user.contains("fourteen characters"), "irrelevant chunks are not sent: {user}");
        assert_eq!(request["response_format"]["type"], "json_object");

        // Nothing relevant retrieved: no answer, and the model is not asked.
        let calls = seen.lock().unwrap().len();
        let (status, none) = ask(&viewer, json!({ "question": "Who won the football match yesterday?" })).await;
        assert_eq!(status, StatusCode::OK, "{none}");
        assert_eq!((none["status"].as_str(), none["answer"].as_str()), (Some("no_answer"), None));
        assert_eq!(none["citations"], json!([]));
        assert_eq!(seen.lock().unwrap().len(), calls, "the model was not called");

        // The model finds no answer in the sources, or cites one it was not given.
        let (_, none) = ask(&viewer, json!({ "question": "Can a cheque pay for annual leave?" })).await;
        assert_eq!(none["status"], "no_answer", "{none}");
        assert!(none["sources_considered"].as_u64().unwrap() >= 1, "{none}");
        let (_, uncited) = ask(&viewer, json!({ "question": "What do large cheques need, stranger?" })).await;
        assert_eq!(uncited["status"], "no_answer", "an answer citing no given source is not an answer: {uncited}");

        let (status, error) = ask(&viewer, json!({ "question": "Why do large cheques need broken signatures?" })).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{error}");
        assert_eq!(error["error"]["code"], "model_failed");
        for body in [json!({ "question": " " }), json!({ "question": "x", "k": 0 }), json!({ "question": "x", "k": 21 })] {
            let (status, _) = ask(&viewer, body.clone()).await;
            assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
        }
        let (status, _) = app.call(Method::POST, "/api/v1/collections/nope/ask", &viewer.access_token, Some(json!({ "question": "x" }))).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
    }

    async fn asking_without_a_model_is_refused(backend) {
        let Some(app) = TestApp::spawn(backend).await else { return };
        let sue = app.sign_in("acme", "sue@acme.test", Role::Supervisor).await;
        let kb = collection(&app, &sue, "procedures").await;
        let (status, error) = app.call(Method::POST, &format!("/api/v1/collections/{kb}/ask"), &sue.access_token, Some(json!({ "question": "x" }))).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{error}");
        assert_eq!(error["error"]["code"], "llm_not_configured");
    }
}

on_both_backends! {
    async fn a_collection_name_cannot_shadow_a_collection_id(backend) {
        let Some(app) = TestApp::spawn(backend).await else { return };
        let sue = app.sign_in("acme", "sue@acme.test", Role::Supervisor).await;
        let policies = collection(&app, &sue, "policies").await;
        // A name shaped like an id is refused, whether it names an existing collection or not.
        for name in [policies.clone(), uuid::Uuid::now_v7().to_string(), uuid::Uuid::now_v7().simple().to_string()] {
            let (status, body) = app
                .call(Method::POST, "/api/v1/collections", &sue.access_token, Some(json!({ "name": name })))
                .await;
            assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
            assert_eq!(body["error"]["details"]["field"], "name", "{body}");
        }
        // A row named like another collection's id (written before names were checked) does not
        // shadow it: the id is resolved first, whatever order the database meets the rows in.
        let decoy = "00000000-0000-7000-8000-000000000000";
        docket::with_pool!(&app.state.store, pool => {
            sqlx::query("INSERT INTO collections (id, tenant_id, name, description, created_at, updated_at) VALUES ($1, $2, $3, '', $4, $4)")
                .bind(decoy).bind(&sue.tenant_id).bind(&policies).bind(docket::clock::now())
                .execute(pool).await.unwrap();
        });
        let (status, found) = app.call(Method::GET, &format!("/api/v1/collections/{policies}"), &sue.access_token, None).await;
        assert_eq!(status, StatusCode::OK, "{found}");
        assert_eq!(found["id"], policies.as_str(), "{found}");
        assert_eq!(found["name"], "policies", "{found}");
    }
}

on_both_backends! {
    // A provider with chat but no /embeddings: answers come from lexical retrieval, with
    // embeddings implied by LLM_BASE_URL (and failing) or turned off (and never called).
    async fn a_chat_only_model_answers_from_lexical_retrieval(backend) {
        let (llm, _) = answering_model().await;
        let (unused_embeddings, embedding_calls) = embedding_server(0, false).await;
        for off in [false, true] {
            let mut env = vec![("LLM_BASE_URL", llm.as_str()), ("LLM_MODEL", "tiny"), ("RATE_LIMIT_PER_MINUTE", "100000")];
            if off {
                env.extend([("EMBEDDINGS", "off"), ("EMBEDDING_BASE_URL", unused_embeddings.as_str())]);
            }
            let Some(app) = TestApp::spawn_with(backend, ProcessRole::All, &env).await else { return };
            let sue = app.sign_in("acme", "sue@acme.test", Role::Supervisor).await;
            let kb = collection(&app, &sue, "procedures").await;
            for (title, team, text) in CORPUS {
                let doc = add(&app, &sue, &kb, title, team, text).await;
                let indexed = wait_status(&app, &sue, &kb, &doc, "indexed").await;
                assert_eq!(indexed["embedding_error"].is_null(), off, "EMBEDDINGS=off: {off}, {indexed}");
            }
            let (status, answer) = app.call(Method::POST, &format!("/api/v1/collections/{kb}/ask"), &sue.access_token,
                Some(json!({ "question": "What do large cheques above 5000 need?", "k": 3 }))).await;
            assert_eq!(status, StatusCode::OK, "{answer}");
            assert_eq!(answer["status"], "answered", "{answer}");
            assert_eq!(answer["citations"][0]["document_title"], "Cheque handling", "{answer}");
            assert_eq!(answer["retrieval"], "lexical", "{answer}");
            assert_eq!(answer["retrieval_fallback"].is_null(), off, "{answer}");
            let (_, found) = search(&app, &sue, &kb, json!({ "query": "cheque signatures" })).await;
            assert_eq!((found["mode"].as_str(), found["fallback"].is_null()), (Some("lexical"), off), "{found}");
        }
        assert_eq!(embedding_calls.load(Ordering::SeqCst), 0, "EMBEDDINGS=off calls no embedding endpoint");
    }
}
