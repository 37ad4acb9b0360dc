//! `docket backup` and `docket restore` on the embedded default: a backup taken while `docket all`
//! serves and writes restores every row and file into a fresh directory; damaged archives, busy or
//! non-empty targets, newer schemas and PostgreSQL are refused; older schemas are migrated.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use reqwest::Method;
use serde_json::json;
use support::{PASSWORD, totp_code};

use super::*;

/// A client signed in to a running Docket.
#[derive(Clone)]
struct Api {
    base: String,
    client: reqwest::Client,
    token: String,
}

impl Api {
    /// Signs in as a freshly created admin, enrolling in MFA as admins must.
    async fn sign_in(base: String, email: &str) -> Self {
        let client = support::http_client();
        let body: Value = client
            .post(format!("{base}/api/v1/auth/login"))
            .json(&json!({ "email": email, "password": PASSWORD }))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let api = Self {
            base,
            client,
            token: body["access_token"].as_str().expect("signed in").to_owned(),
        };
        assert_eq!(body["mfa_enrolment_required"], true, "{body}");
        let (_, enrolment) = api.call(Method::POST, "/api/v1/auth/mfa/enrol", None).await;
        let code = totp_code(enrolment["secret"].as_str().unwrap(), 0);
        let (status, body) = api
            .call(
                Method::POST,
                "/api/v1/auth/mfa/confirm",
                Some(json!({ "code": code })),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        api
    }

    async fn call(&self, method: Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        let mut request = self
            .client
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        let text = response.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    async fn create_case(&self, reference: &str) -> String {
        let body = json!({ "type": "cheque", "reference": reference, "amount": "1250.00",
                           "currency": "USD", "subject": { "payee": "Ann" } });
        let (status, case) = self.call(Method::POST, "/api/v1/cases", Some(body)).await;
        assert_eq!(status, StatusCode::CREATED, "{case}");
        case["id"].as_str().unwrap().to_owned()
    }

    async fn attach(&self, case_id: &str, filename: &str, bytes: &[u8]) -> String {
        const BOUNDARY: &str = "docket-backup-test-boundary";
        let mut body = format!(
            "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{filename}\"\r\n\
             Content-Type: application/octet-stream\r\n\r\n"
        )
        .into_bytes();
        body.extend_from_slice(bytes);
        body.extend_from_slice(format!("\r\n--{BOUNDARY}--\r\n").as_bytes());
        let response = self
            .client
            .post(format!("{}/api/v1/cases/{case_id}/attachments", self.base))
            .bearer_auth(&self.token)
            .header(
                "content-type",
                format!("multipart/form-data; boundary={BOUNDARY}"),
            )
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::CREATED);
        let attachment: Value = response.json().await.unwrap();
        attachment["id"].as_str().unwrap().to_owned()
    }

    async fn download(&self, case_id: &str, attachment_id: &str) -> Vec<u8> {
        let response = self
            .client
            .get(format!(
                "{}/api/v1/cases/{case_id}/attachments/{attachment_id}",
                self.base
            ))
            .bearer_auth(&self.token)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        response.bytes().await.unwrap().to_vec()
    }
}

/// A PNG signature and header followed by bytes that differ per `seed`, so every attachment is
/// distinct and any mangled byte shows.
fn png(seed: u8) -> Vec<u8> {
    let mut bytes =
        b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0\0\x01\0\0\0\x01\x08\x06\0\0\0\x1f\x15\xc4\x89\
                      \0\0\0\rIDATx\x9cc\xf8\x0f\x04\0\x09\xfb\x03\xfd\xe3U\xf2\x9c\
                      \0\0\0\0IEND\xaeB`\x82"
            .to_vec();
    bytes.extend((0..=255_u8).cycle().take(5000).map(|b| b ^ seed));
    bytes
}

/// Every row of every table (virtual tables aside: their shadow tables are included), each row
/// rendered with SQLite's `quote()` so text, numbers, NULLs and blobs compare exactly.
async fn dump(database: &Path) -> BTreeMap<String, Vec<String>> {
    let url = format!("sqlite://{}?mode=ro", database.display());
    let mut conn = sqlx::SqliteConnection::connect(&url).await.unwrap();
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' \
         AND sql NOT LIKE 'CREATE VIRTUAL TABLE%' ORDER BY name",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap();
    let mut dump = BTreeMap::new();
    for table in tables {
        let columns: Vec<String> =
            sqlx::query_scalar("SELECT name FROM pragma_table_info($1) ORDER BY cid")
                .bind(&table)
                .fetch_all(&mut conn)
                .await
                .unwrap();
        let row = columns
            .iter()
            .map(|c| format!("quote(\"{c}\")"))
            .collect::<Vec<_>>()
            .join(" || '|' || ");
        let mut rows: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT {row} FROM \"{table}\""
        )))
        .fetch_all(&mut conn)
        .await
        .unwrap();
        rows.sort();
        dump.insert(table, rows);
    }
    conn.close().await.unwrap();
    dump
}

/// Every file under `dir` with its bytes, by path relative to `dir`.
fn files(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut found = BTreeMap::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(next) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&next) else {
            continue;
        };
        for entry in entries.map(Result::unwrap) {
            if entry.file_type().unwrap().is_dir() {
                pending.push(entry.path());
            } else {
                let relative = entry.path().strip_prefix(dir).unwrap().to_path_buf();
                found.insert(relative, std::fs::read(entry.path()).unwrap());
            }
        }
    }
    found
}

/// The database and object files of a data directory created by the default configuration.
fn database_of(dir: &Path) -> PathBuf {
    dir.join("data/docket.db")
}

fn objects_of(dir: &Path) -> PathBuf {
    dir.join("data/objects")
}

/// Work directories restore or backup leave behind (there should be none).
fn leftovers(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .filter(|name| name.starts_with(".docket-"))
                .collect()
        })
        .unwrap_or_default()
}

/// Runs a command off the async runtime, so the runtime's other tasks keep going meanwhile.
async fn run_blocking(dir: &Path, env: &[(&str, &str)], args: &[&str]) -> Output {
    let dir = dir.to_path_buf();
    let env: Vec<(String, String)> = env
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
    tokio::task::spawn_blocking(move || {
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        run(&dir, &env, &args)
    })
    .await
    .unwrap()
}

const ADMIN: &str = "admin@acme.test";

/// The tables whose existing rows Docket itself rewrites while it runs (heartbeats, session
/// activity): their rows in the backup may be of any moment during it. Every other table only
/// gained rows while the backup ran.
const CHANGING_TABLES: [&str; 2] = ["nodes", "sessions"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_taken_while_docket_serves_restores_every_row_and_file() {
    let source = tempfile::tempdir().unwrap();
    let port = free_port().to_string();
    let env = [
        ("PORT", port.as_str()),
        ("DOCKET_ADMIN_PASSWORD", PASSWORD),
        ("RATE_LIMIT_PER_MINUTE", "100000"),
    ];
    let mut server = Process::start(source.path(), &env, &["all"]);
    server.wait_live().await;
    let out = run_blocking(
        source.path(),
        &env,
        &["admin", "create", "--email", ADMIN, "--tenant", "acme"],
    )
    .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let api = Api::sign_in(server.url(""), ADMIN).await;

    // Real data through the API: cases with attachments, knowledge documents, tasks; each write
    // leaves audit records.
    let mut attachments = Vec::new();
    for n in 0..3_u8 {
        let case_id = api.create_case(&format!("CHQ-{n}")).await;
        let bytes = png(n);
        let id = api
            .attach(&case_id, &format!("front-{n}.png"), &bytes)
            .await;
        attachments.push((case_id, id, bytes));
    }
    let (status, collection) = api
        .call(
            Method::POST,
            "/api/v1/collections",
            Some(json!({ "name": "procedures" })),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{collection}");
    let collection = collection["id"].as_str().unwrap().to_owned();
    let documents = [
        (
            "Lost cheques",
            "# Lost cheques\n\nPlace a stop payment on a lost cheque at once, then call the payee.",
        ),
        (
            "Refunds",
            "# Refunds\n\nCard refunds take five working days to reach the customer.",
        ),
    ];
    let mut document_ids = Vec::new();
    for (title, body) in documents {
        let (status, document) = api
            .call(
                Method::POST,
                &format!("/api/v1/collections/{collection}/documents"),
                Some(json!({ "title": title, "text": body, "content_type": "text/markdown" })),
            )
            .await;
        assert_eq!(status, StatusCode::ACCEPTED, "{document}");
        document_ids.push(document["id"].as_str().unwrap().to_owned());
    }
    for id in &document_ids {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let path = format!("/api/v1/collections/{collection}/documents/{id}");
            let (_, document) = api.call(Method::GET, &path, None).await;
            if document["status"] == "indexed" {
                break;
            }
            assert!(Instant::now() < deadline, "not indexed: {document}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    for title in ["Nightly reconciliation", "Month end"] {
        let (status, task) = api
            .call(
                Method::POST,
                "/api/v1/tasks",
                Some(json!({ "title": title, "schedule_kind": "manual" })),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{task}");
    }

    // The ingestion jobs finish just after their documents are indexed; wait for them, so that
    // nothing but the cases written below changes while the backup runs.
    let url = format!("sqlite://{}?mode=ro", database_of(source.path()).display());
    let mut conn = sqlx::SqliteConnection::connect(&url).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let unfinished: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM jobs WHERE status <> 'succeeded'")
                .fetch_one(&mut conn)
                .await
                .unwrap();
        if unfinished == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{unfinished} jobs never finished"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    conn.close().await.unwrap();
    let before = dump(&database_of(source.path())).await;
    let objects_before = files(&objects_of(source.path()));
    assert_eq!(objects_before.len(), 5, "3 attachments and 2 documents");

    // Cases keep arriving while the backup runs.
    let stop = Arc::new(AtomicBool::new(false));
    let written = Arc::new(AtomicUsize::new(0));
    let writer = {
        let (api, stop, written) = (api.clone(), stop.clone(), written.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let n = written.load(Ordering::Relaxed);
                api.create_case(&format!("LIVE-{n}")).await;
                written.fetch_add(1, Ordering::Relaxed);
            }
        })
    };
    while written.load(Ordering::Relaxed) < 3 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let backups = tempfile::tempdir().unwrap();
    let archive = backups.path().join("nightly.tar.gz");
    let out = run_blocking(
        source.path(),
        &env,
        &["backup", "--output", archive.to_str().unwrap()],
    )
    .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let report = text(&out.stdout);
    assert!(report.contains("nightly.tar.gz"), "{report}");
    assert!(report.contains("5 files from data/objects"), "{report}");
    let during = written.load(Ordering::Relaxed);
    while written.load(Ordering::Relaxed) < during + 3 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    stop.store(true, Ordering::Relaxed);
    writer.await.unwrap();
    assert!(
        server.child.try_wait().unwrap().is_none(),
        "the backup did not stop the server"
    );
    assert_eq!(leftovers(backups.path()), Vec::<String>::new());
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(&archive).unwrap().permissions(),
    );
    assert_eq!(mode & 0o777, 0o600, "the archive holds secrets");

    let (exit, _) = server.terminate();
    assert!(exit.success());
    let after = dump(&database_of(source.path())).await;
    let objects_after = files(&objects_of(source.path()));

    // Restore into a fresh directory, and compare before anything starts there.
    let target = tempfile::tempdir().unwrap();
    let target_port = free_port().to_string();
    let target_env = [
        ("PORT", target_port.as_str()),
        ("RATE_LIMIT_PER_MINUTE", "100000"),
    ];
    let out = run_blocking(
        target.path(),
        &target_env,
        &["restore", archive.to_str().unwrap()],
    )
    .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("restored the backup"),
        "{}",
        text(&out.stdout)
    );
    assert_eq!(leftovers(&target.path().join("data")), Vec::<String>::new());

    let restored = dump(&database_of(target.path())).await;
    assert_eq!(
        restored.keys().collect::<Vec<_>>(),
        before.keys().collect::<Vec<_>>(),
        "the same tables"
    );
    assert_eq!(
        restored["nodes"],
        Vec::<String>::new(),
        "no ghost processes"
    );
    for (table, rows) in &restored {
        if CHANGING_TABLES.contains(&table.as_str()) {
            continue;
        }
        let rows: BTreeSet<&String> = rows.iter().collect();
        let earlier: BTreeSet<&String> = before[table].iter().collect();
        let later: BTreeSet<&String> = after[table].iter().collect();
        assert!(
            earlier.is_subset(&rows),
            "{table}: rows from before the backup are missing: {:?}",
            earlier.difference(&rows).collect::<Vec<_>>()
        );
        assert!(
            rows.is_subset(&later),
            "{table}: restored rows the source never had: {:?}",
            rows.difference(&later).collect::<Vec<_>>()
        );
    }
    let cases_restored = restored["cases"].len();
    assert!(
        cases_restored >= 3 + 3 && cases_restored < after["cases"].len(),
        "the snapshot holds the cases written before it and none from after it: \
         {cases_restored} of {}",
        after["cases"].len()
    );
    let objects_restored = files(&objects_of(target.path()));
    for (path, bytes) in &objects_before {
        assert_eq!(
            objects_restored.get(path),
            Some(bytes),
            "{}",
            path.display()
        );
    }
    for path in objects_restored.keys() {
        assert!(objects_after.contains_key(path), "{}", path.display());
    }

    // The restored install serves it all; the signing key came along, so the old token still works.
    let mut restored_server = Process::start(target.path(), &target_env, &["all"]);
    restored_server.wait_live().await;
    let api = Api {
        base: restored_server.url(""),
        ..api
    };
    for (case_id, attachment_id, bytes) in &attachments {
        assert_eq!(&api.download(case_id, attachment_id).await, bytes);
    }
    let (status, listed) = api.call(Method::GET, "/api/v1/cases?limit=200", None).await;
    assert_eq!(status, StatusCode::OK, "{listed}");
    let (status, found) = api
        .call(
            Method::POST,
            &format!("/api/v1/collections/{collection}/search"),
            Some(json!({ "query": "stop payment on a lost cheque" })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{found}");
    assert_eq!(
        found["results"][0]["document_title"], "Lost cheques",
        "{found}"
    );
    let (_, tasks) = api.call(Method::GET, "/api/v1/tasks", None).await;
    assert_eq!(tasks["items"].as_array().unwrap().len(), 2, "{tasks}");
    let (_, verification) = api.call(Method::GET, "/api/v1/audit/verify", None).await;
    assert_eq!(verification["valid"], true, "{verification}");
    let out = run_blocking(target.path(), &target_env, &["audit", "verify"]).await;
    assert!(out.status.success(), "{}", text(&out.stdout));
    assert!(
        text(&out.stdout).contains(": ok, "),
        "{}",
        text(&out.stdout)
    );

    // Never under a running server, not even with --force.
    let out = run_blocking(
        target.path(),
        &target_env,
        &["restore", "--force", archive.to_str().unwrap()],
    )
    .await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("docket is running on"),
        "{}",
        text(&out.stderr)
    );
    let (exit, _) = restored_server.terminate();
    assert!(exit.success());

    // A target that holds data is replaced only with --force.
    let database = std::fs::read(database_of(target.path())).unwrap();
    let out = run_blocking(
        target.path(),
        &target_env,
        &["restore", archive.to_str().unwrap()],
    )
    .await;
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("already holds data") && stderr.contains("--force"),
        "{stderr}"
    );
    assert!(stderr.contains("cases"), "names what is there: {stderr}");
    assert_eq!(
        std::fs::read(database_of(target.path())).unwrap(),
        database,
        "untouched"
    );
    let out = run_blocking(
        target.path(),
        &target_env,
        &["restore", "--force", archive.to_str().unwrap()],
    )
    .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        dump(&database_of(target.path())).await["cases"],
        restored["cases"]
    );
    assert_eq!(leftovers(&target.path().join("data")), Vec::<String>::new());
}

/// A small install made without a server: an admin (so there is an audit chain) and one object.
fn small_install(dir: &Path) -> Vec<(&'static str, &'static str)> {
    let env = vec![("DOCKET_ADMIN_PASSWORD", PASSWORD)];
    let out = run(
        dir,
        &env,
        &["admin", "create", "--email", ADMIN, "--tenant", "acme"],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let object = objects_of(dir).join("t1/cases/c1");
    std::fs::create_dir_all(&object).unwrap();
    std::fs::write(object.join("a1"), png(7)).unwrap();
    env
}

/// Rewrites a `.tar.gz`, passing each entry's (path, bytes) through `change`, then appending `extra`.
fn rewrite_archive(
    from: &Path,
    to: &Path,
    change: impl Fn(&str, &mut Vec<u8>),
    extra: &[(&str, &[u8])],
) {
    let file = std::fs::File::open(from).unwrap();
    let mut reader = tar::Archive::new(flate2::read::GzDecoder::new(file));
    let writer = flate2::write::GzEncoder::new(
        std::fs::File::create(to).unwrap(),
        flate2::Compression::fast(),
    );
    let mut builder = tar::Builder::new(writer);
    let mut template = None;
    for entry in reader.entries().unwrap() {
        let mut entry = entry.unwrap();
        let path = entry.path().unwrap().to_str().unwrap().to_owned();
        let mut bytes = Vec::new();
        entry.read_to_end(&mut bytes).unwrap();
        change(&path, &mut bytes);
        let mut header = entry.header().clone();
        header.set_size(bytes.len() as u64);
        builder
            .append_data(&mut header, &path, bytes.as_slice())
            .unwrap();
        template = Some(entry.header().clone());
    }
    for (path, bytes) in extra {
        let mut header = template.clone().unwrap();
        header.set_size(bytes.len() as u64);
        builder.append_data(&mut header, path, *bytes).unwrap();
    }
    builder.into_inner().unwrap().finish().unwrap();
}

/// The entry names of a `.tar.gz`, in order.
fn entry_names(archive: &Path) -> Vec<String> {
    let file = std::fs::File::open(archive).unwrap();
    let mut reader = tar::Archive::new(flate2::read::GzDecoder::new(file));
    reader
        .entries()
        .unwrap()
        .map(|e| e.unwrap().path().unwrap().to_str().unwrap().to_owned())
        .collect()
}

#[test]
fn damaged_archives_are_refused_before_anything_is_touched() {
    let source = tempfile::tempdir().unwrap();
    let env = small_install(source.path());
    let out = run(source.path(), &env, &["backup", "--output", "good.tar.gz"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let good = source.path().join("good.tar.gz");

    // One flipped byte in an attachment, in an archive that is otherwise well formed.
    let tampered = source.path().join("tampered.tar.gz");
    rewrite_archive(
        &good,
        &tampered,
        |path, bytes| {
            if path.starts_with("objects/") {
                bytes[100] ^= 1;
            }
        },
        &[],
    );
    // A file the manifest does not list, slipped in at the end.
    let smuggled = source.path().join("smuggled.tar.gz");
    rewrite_archive(
        &good,
        &smuggled,
        |_, _| {},
        &[("objects/t1/evil", b"surprise")],
    );
    // Cut off half way.
    let truncated = source.path().join("truncated.tar.gz");
    let bytes = std::fs::read(&good).unwrap();
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    // Not an archive at all.
    let garbage = source.path().join("garbage.tar.gz");
    std::fs::write(&garbage, b"this is not a backup").unwrap();

    for (archive, expected) in [
        (&tampered, "checksum mismatch"),
        (&smuggled, "is not in the manifest"),
        (&truncated, "damaged"),
        (&garbage, "damaged"),
    ] {
        let target = tempfile::tempdir().unwrap();
        let out = run(target.path(), &[], &["restore", archive.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(1), "{}", archive.display());
        let stderr = text(&out.stderr);
        assert!(stderr.contains(expected), "{}: {stderr}", archive.display());
        assert!(
            !database_of(target.path()).exists() && !objects_of(target.path()).exists(),
            "{}: nothing restored",
            archive.display()
        );
        assert_eq!(leftovers(&target.path().join("data")), Vec::<String>::new());
    }

    // The good one restores, and its audit chain verifies.
    let target = tempfile::tempdir().unwrap();
    let out = run(target.path(), &[], &["restore", good.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        std::fs::read(objects_of(target.path()).join("t1/cases/c1/a1")).unwrap(),
        png(7)
    );
    let out = run(target.path(), &[], &["audit", "verify"]);
    assert!(out.status.success(), "{}", text(&out.stdout));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_newer_schema_is_refused_and_an_older_one_is_migrated_at_start() {
    // Newer: the database records a migration this binary does not know.
    let newer = tempfile::tempdir().unwrap();
    let env = small_install(newer.path());
    let url = format!("sqlite://{}", database_of(newer.path()).display());
    insert_future_migration(Backend::Sqlite, &url).await;
    let out = run(newer.path(), &env, &["backup", "--output", "newer.tar.gz"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let target = tempfile::tempdir().unwrap();
    let archive = newer.path().join("newer.tar.gz");
    let out = run(target.path(), &[], &["restore", archive.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("newer than this binary knows"), "{stderr}");
    assert!(!database_of(target.path()).exists());

    // Older: a database migrated with all but the last migration, as an older docket left it.
    let older = tempfile::tempdir().unwrap();
    let migrations = older.path().join("migrations");
    std::fs::create_dir(&migrations).unwrap();
    let mut shipped: Vec<PathBuf> =
        std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations/sqlite"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
    shipped.sort();
    let latest = shipped.pop().unwrap();
    for file in &shipped {
        std::fs::copy(file, migrations.join(file.file_name().unwrap())).unwrap();
    }
    std::fs::create_dir_all(older.path().join("data")).unwrap();
    let url = format!("sqlite://{}?mode=rwc", database_of(older.path()).display());
    {
        let mut conn = sqlx::SqliteConnection::connect(&url).await.unwrap();
        sqlx::migrate::Migrator::new(migrations.as_path())
            .await
            .unwrap()
            .run(&mut conn)
            .await
            .unwrap();
        conn.close().await.unwrap();
    }
    let out = run(older.path(), &[], &["backup", "--output", "older.tar.gz"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let target = tempfile::tempdir().unwrap();
    let archive = older.path().join("older.tar.gz");
    let out = run(target.path(), &[], &["restore", archive.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("1 migration is pending"),
        "{}",
        text(&out.stdout)
    );

    let port = free_port().to_string();
    let mut server = Process::start(target.path(), &[("PORT", &port)], &["all"]);
    server.wait_live().await;
    server.wait_readiness(StatusCode::OK).await;
    let (exit, _) = server.terminate();
    assert!(exit.success());
    let latest_version: i64 = latest.file_name().unwrap().to_str().unwrap()[..14]
        .parse()
        .unwrap();
    let url = format!("sqlite://{}?mode=ro", database_of(target.path()).display());
    let mut conn = sqlx::SqliteConnection::connect(&url).await.unwrap();
    let applied: i64 =
        sqlx::query_scalar("SELECT MAX(version) FROM _sqlx_migrations WHERE success")
            .fetch_one(&mut conn)
            .await
            .unwrap();
    assert_eq!(
        applied, latest_version,
        "the start brought the schema up to date"
    );
}

#[test]
fn postgres_is_sent_to_pg_dump_and_an_s3_bucket_is_left_to_its_store() {
    let dir = tempfile::tempdir().unwrap();
    let env = [("DATABASE_URL", "postgres://docket@127.0.0.1:1/docket")];
    for args in [&["backup"][..], &["restore", "backup.tar.gz"][..]] {
        let out = run(dir.path(), &env, args);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let stderr = text(&out.stderr);
        assert!(
            stderr.contains("pg_dump") && stderr.contains("docs/backup.md"),
            "{args:?}: {stderr}"
        );
    }

    let env = small_install(dir.path());
    let s3 = [env[0], ("OBJECT_STORE_URL", "s3://docket-attachments")];
    std::fs::create_dir(dir.path().join("backups")).unwrap();
    let out = run(dir.path(), &s3, &["backup", "--output", "backups"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("not in the archive: protect s3://docket-attachments"),
        "{}",
        text(&out.stdout)
    );
    let written: Vec<PathBuf> = std::fs::read_dir(dir.path().join("backups"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(written.len(), 1, "{written:?}");
    let name = written[0].file_name().unwrap().to_str().unwrap();
    assert!(
        name.starts_with("docket-backup-") && name.ends_with("Z.tar.gz"),
        "a directory gets a timestamped name: {name}"
    );
    assert_eq!(
        entry_names(&written[0]),
        ["manifest.json", "docket.db"],
        "the database only (`admin create` generates no signing key)"
    );
}
