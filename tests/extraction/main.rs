//! Extraction bombs through the HTTP API, in a test binary of their own: the peak resident set
//! this process reaches is what the bombs cost (the server runs in it), not what other tests
//! running alongside them cost.

#[path = "../support/mod.rs"]
mod support;

use std::time::Duration;

use docket::app::Role as ProcessRole;
use docket::auth::Role;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::support::{Login, TestApp};

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

/// Uploads `bytes` as a multipart form.
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

/// 1 GiB of zeros as one zlib stream, without compressing a gigabyte: a fully flushed deflate
/// block of 1 MiB of zeros refers to nothing before it, so 1024 copies of it are a valid stream.
fn gibibyte_of_zeros_zlib() -> Vec<u8> {
    use flate2::{Compress, Compression, FlushCompress};
    let mut compress = Compress::new(Compression::best(), false);
    let mut block = Vec::with_capacity(64 * 1024);
    compress
        .compress_vec(&vec![0u8; 1024 * 1024], &mut block, FlushCompress::Full)
        .unwrap();
    let mut stream = vec![0x78, 0x01];
    for _ in 0..1024 {
        stream.extend_from_slice(&block);
    }
    // A final empty stored block, then the Adler-32 of 2^30 zero bytes (a = 1, b = n mod 65521).
    stream.extend_from_slice(&[0x01, 0x00, 0x00, 0xFF, 0xFF]);
    let b = (1u32 << 30) % 65521;
    stream.extend_from_slice(&((b << 16) | 1).to_be_bytes());
    stream
}

fn zlib(data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut encoder = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::best());
    encoder.write_all(data).unwrap();
    encoder.finish().unwrap()
}

/// The PDF bomb: one page whose content stream is 1 GiB behind three `/FlateDecode`
/// filters, a few kilobytes on disk.
fn pdf_bomb() -> Vec<u8> {
    let data = zlib(&zlib(&gibibyte_of_zeros_zlib()));
    let mut content = format!(
        "<< /Length {} /Filter [/FlateDecode /FlateDecode /FlateDecode] >>\nstream\n",
        data.len()
    )
    .into_bytes();
    content.extend_from_slice(&data);
    content.extend_from_slice(b"\nendstream");
    pdf_of(&[
        b"<< /Type /Catalog /Pages 2 0 R >>".to_vec(),
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>".to_vec(),
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R >>".to_vec(),
        content,
    ])
}

/// A PDF of `pages` pages, each with a line of text.
fn long_pdf(pages: usize) -> Vec<u8> {
    let kids: Vec<String> = (0..pages).map(|i| format!("{} 0 R", 4 + 2 * i)).collect();
    let mut objects = vec![
        b"<< /Type /Catalog /Pages 2 0 R >>".to_vec(),
        format!(
            "<< /Type /Pages /Kids [{}] /Count {pages} >>",
            kids.join(" ")
        )
        .into_bytes(),
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>".to_vec(),
    ];
    for i in 0..pages {
        let content = format!("BT\n/F1 12 Tf\n72 700 Td\n(Page {i} of the cheque manual) Tj\nET\n");
        objects.push(format!("<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Resources << /Font << /F1 3 0 R >> >> /Contents {} 0 R >>", 5 + 2 * i).into_bytes());
        objects.push(
            format!(
                "<< /Length {} >>\nstream\n{content}endstream",
                content.len()
            )
            .into_bytes(),
        );
    }
    pdf_of(&objects)
}

/// A PDF of these objects, numbered from 1 (the catalog), with its cross-reference table.
fn pdf_of(objects: &[Vec<u8>]) -> Vec<u8> {
    let mut out = b"%PDF-1.4\n".to_vec();
    let mut offsets = Vec::new();
    for (i, object) in objects.iter().enumerate() {
        offsets.push(out.len());
        out.extend_from_slice(format!("{} 0 obj\n", i + 1).as_bytes());
        out.extend_from_slice(object);
        out.extend_from_slice(b"\nendobj\n");
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

/// The peak resident set of this process (the test binary, which runs the server too), in MiB.
fn peak_rss_mib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    let kib: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kib / 1024
}

#[test]
fn the_generated_pdf_bomb_really_inflates_to_a_gibibyte() {
    let stream = gibibyte_of_zeros_zlib();
    let mut decoder = flate2::read::ZlibDecoder::new(stream.as_slice());
    let inflated = std::io::copy(&mut decoder, &mut std::io::sink()).unwrap();
    assert_eq!(inflated, 1 << 30);
    let bomb = pdf_bomb();
    assert!(bomb.len() < 8 * 1024, "{} bytes", bomb.len());
}

crate::on_both_backends! {
    async fn extraction_bombs_fail_the_document_once_and_the_server_carries_on(backend) {
        let Some(app) = TestApp::spawn(backend).await else { return };
        let sue = app.sign_in("acme", "sue@acme.test", Role::Supervisor).await;
        let kb = collection(&app, &sue, "hostile").await;
        let bomb = pdf_bomb();
        let (status, doc) = upload(&app, &sue, &kb, "bomb.pdf", "application/pdf", &bomb).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{doc}");
        let failed = wait_status(&app, &sue, &kb, &doc, "failed").await;
        assert_eq!(
            failed["error"],
            "refused: a PDF stream decodes to more than 64 MiB (EXTRACT_MAX_STREAM_BYTES)",
            "{failed}"
        );
        // 200,000 nested elements (1 MB) would keep the HTML parser busy for hours: its cost per
        // element grows with the depth.
        let html = format!("<html><body>{}deep</body></html>", "<div>".repeat(200_000));
        let (status, page) = upload(&app, &sue, &kb, "deep.html", "text/html", html.as_bytes()).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{page}");
        let failed_page = wait_status(&app, &sue, &kb, &page, "failed").await;
        assert_eq!(failed_page["error"], "refused: the HTML nests elements more than 256 deep", "{failed_page}");

        // A refusal is permanent: one run, and the job is finished, not waiting for a retry.
        for document in [&doc, &page] {
            let job_id = document["job_id"].as_str().unwrap();
            tokio::time::sleep(Duration::from_millis(300)).await;
            let runs = docket::queue::runs_of(&app.state.store, &sue.tenant_id, job_id).await.unwrap();
            let statuses: Vec<&str> = runs.iter().map(|r| r.status.as_str()).collect();
            assert_eq!(statuses, ["failed"], "{document}");
            let job = docket::queue::get(&app.state.store, &sue.tenant_id, job_id).await.unwrap().unwrap();
            assert_eq!((job.status.as_str(), job.attempts), ("dead", 1), "{job:?}");
        }

        // The server still answers and still ingests.
        let (status, _) = app.call(Method::GET, "/health", "", None).await;
        assert_eq!(status, StatusCode::OK);
        let (status, fine) = app.call(Method::POST, &format!("/api/v1/collections/{kb}/documents"), &sue.access_token,
            Some(json!({ "title": "After the bombs", "text": "# Still here\n\nIngestion carries on.", "content_type": "text/markdown" }))).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{fine}");
        wait_status(&app, &sue, &kb, &fine, "indexed").await;

        let peak = peak_rss_mib();
        eprintln!("peak RSS of the test process after a 1 GiB PDF bomb: {peak} MiB");
        assert!(peak < 400, "peak RSS {peak} MiB");
    }

    async fn an_extraction_over_its_time_budget_fails_the_document_once(backend) {
        let env = [("EXTRACT_TIMEOUT_SECONDS", "0.001")];
        let Some(app) = TestApp::spawn_with(backend, ProcessRole::All, &env).await else { return };
        let sue = app.sign_in("acme", "sue@acme.test", Role::Supervisor).await;
        let kb = collection(&app, &sue, "slow").await;
        let (status, doc) = upload(&app, &sue, &kb, "manual.pdf", "application/pdf", &long_pdf(1_000)).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{doc}");
        let failed = wait_status(&app, &sue, &kb, &doc, "failed").await;
        assert_eq!(failed["error"], "refused: extraction took longer than EXTRACT_TIMEOUT_SECONDS allows", "{failed}");
        tokio::time::sleep(Duration::from_millis(300)).await;
        let job_id = doc["job_id"].as_str().unwrap();
        let job = docket::queue::get(&app.state.store, &sue.tenant_id, job_id).await.unwrap().unwrap();
        assert_eq!((job.status.as_str(), job.attempts), ("dead", 1), "{job:?}");
    }
}
