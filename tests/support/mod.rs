//! Test harness shared by the integration test binaries: throwaway PostgreSQL and Redis servers
//! (started once per test binary), a fresh database per test, and a Docket server on a free port.
//!
//! Without PostgreSQL or Redis binaries the tests that need them are skipped with a note, unless
//! `CI` is set: then they fail, so CI never passes by skipping.

// Each test binary uses a different subset of these helpers.
#![allow(dead_code)]

use std::collections::HashMap;
use std::net::TcpListener as StdTcpListener;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use docket::app::{AppState, Role, Server, StartError};
use docket::config::Config;
use sqlx::Connection;
use tempfile::TempDir;
use tokio::task::JoinHandle;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Runs an async test body once on SQLite and once on PostgreSQL, as two named tests.
#[macro_export]
macro_rules! on_both_backends {
    ($(async fn $name:ident($backend:ident) $body:block)*) => {$(
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            async fn test_body($backend: $crate::support::Backend) $body

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                test_body($crate::support::Backend::Sqlite).await
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                test_body($crate::support::Backend::Postgres).await
            }
        }
    )*};
}

/// An API refusal: `code` in the one error shape, with a message for people.
pub fn assert_error(body: &serde_json::Value, code: &str) {
    assert_eq!(body["error"]["code"], code, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{body}"
    );
}

pub fn in_ci() -> bool {
    std::env::var_os("CI").is_some_and(|v| !v.is_empty() && v != "0" && v != "false")
}

/// Reports a missing server: fatal in CI, a skip note otherwise.
pub fn unavailable(what: &str, why: &str) {
    assert!(!in_ci(), "{what} is required when CI is set: {why}");
    eprintln!("skipping: {what} is not available here ({why}); set CI=1 to make this fatal");
}

pub fn free_port() -> u16 {
    StdTcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("no free port")
}

/// Spawns `command` so that the child dies with this process. The spawning thread is kept alive
/// for good, because `PR_SET_PDEATHSIG` fires when the *thread* that forked the child exits.
pub fn spawn_tied_to_process(mut command: Command) -> std::io::Result<Child> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
        unsafe {
            command.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let _ = tx.send(command.spawn());
        loop {
            std::thread::park();
        }
    });
    rx.recv().expect("spawner thread died")
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// uid and gid of the `postgres` user, which initdb and postgres need when tests run as root.
fn postgres_ids() -> Result<(u32, u32), String> {
    let id = |flag: &str| -> Result<u32, String> {
        let out = Command::new("id")
            .args([flag, "postgres"])
            .output()
            .map_err(|e| e.to_string())?;
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .map_err(|_| "no postgres user to run PostgreSQL as (tests run as root)".to_owned())
    };
    Ok((id("-u")?, id("-g")?))
}

fn postgres_bin_dir() -> Result<PathBuf, String> {
    if let Some(dir) = std::env::var_os("PG_BIN") {
        return Ok(PathBuf::from(dir));
    }
    for version in ["17", "16", "15"] {
        let dir = PathBuf::from(format!("/usr/lib/postgresql/{version}/bin"));
        if dir.join("initdb").exists() {
            return Ok(dir);
        }
    }
    Err("no PostgreSQL 15+ binaries under /usr/lib/postgresql (or PG_BIN)".to_owned())
}

/// A PostgreSQL cluster in a temporary directory, on a free loopback port.
pub struct PgServer {
    pub port: u16,
    bin: PathBuf,
    data: PathBuf,
    ids: Option<(u32, u32)>,
    child: Mutex<Option<Child>>,
    root: TempDir,
}

impl PgServer {
    pub fn start() -> Result<Self, String> {
        let bin = postgres_bin_dir()?;
        let ids = if is_root() {
            Some(postgres_ids()?)
        } else {
            None
        };
        let root = tempfile::Builder::new()
            .prefix("docket-pg-")
            .tempdir()
            .map_err(|e| e.to_string())?;
        std::fs::set_permissions(root.path(), std::fs::Permissions::from_mode(0o755))
            .map_err(|e| e.to_string())?;
        let data = root.path().join("data");
        std::fs::create_dir(&data).map_err(|e| e.to_string())?;
        if let Some((uid, gid)) = ids {
            std::os::unix::fs::chown(&data, Some(uid), Some(gid)).map_err(|e| e.to_string())?;
        }
        let mut initdb = Command::new(bin.join("initdb"));
        initdb
            .args([
                "-A",
                "trust",
                "-U",
                "postgres",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
                "-D",
            ])
            .arg(&data)
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        if let Some((uid, gid)) = ids {
            initdb.uid(uid).gid(gid);
        }
        let out = initdb.output().map_err(|e| format!("initdb: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "initdb failed: {}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        let server = Self {
            port: free_port(),
            bin,
            data,
            ids,
            child: Mutex::new(None),
            root,
        };
        server.resume()?;
        Ok(server)
    }

    /// Starts (or restarts after [`PgServer::stop`]) the server on the same port and data.
    pub fn resume(&self) -> Result<(), String> {
        let mut command = Command::new(self.bin.join("postgres"));
        command
            .arg("-D")
            .arg(&self.data)
            .args(["-p", &self.port.to_string()])
            .args(["-c", "listen_addresses=127.0.0.1"])
            .arg("-c")
            .arg(format!("unix_socket_directories={}", self.data.display()))
            .args([
                "-c",
                "fsync=off",
                "-c",
                "synchronous_commit=off",
                "-c",
                "full_page_writes=off",
            ])
            .args(["-c", "max_connections=300"])
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if let Some((uid, gid)) = self.ids {
            command.uid(uid).gid(gid);
        }
        let child = spawn_tied_to_process(command).map_err(|e| format!("postgres: {e}"))?;
        *self.child.lock().unwrap() = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ready = Command::new(self.bin.join("pg_isready"))
                .args([
                    "-h",
                    "127.0.0.1",
                    "-p",
                    &self.port.to_string(),
                    "-U",
                    "postgres",
                ])
                .stdout(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if ready {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err("postgres did not become ready within 30 s".to_owned());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops the server (fast shutdown: open connections are closed).
    pub fn stop(&self) {
        if let Some(mut child) = self.child.lock().unwrap().take() {
            // SIGINT is PostgreSQL's "fast" shutdown.
            // SAFETY: kill has no memory-safety preconditions.
            unsafe {
                libc::kill(child.id() as i32, libc::SIGINT);
            }
            let _ = child.wait();
        }
    }

    pub fn url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }

    /// Creates an empty database and returns its URL.
    pub async fn create_database(&self) -> String {
        let name = format!("t_{}", uuid::Uuid::new_v4().simple());
        let mut admin = sqlx::PgConnection::connect(&self.url("postgres"))
            .await
            .expect("connect to the test PostgreSQL");
        // The name is generated here, never taken from input.
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut admin)
            .await
            .expect("create test database");
        admin.close().await.ok();
        self.url(&name)
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        self.stop();
    }
}

static SHARED_POSTGRES: OnceLock<Result<PgServer, String>> = OnceLock::new();

/// The PostgreSQL server shared by all tests of this binary (each test gets its own database).
pub fn shared_postgres() -> Option<&'static PgServer> {
    let mut started = false;
    let server = SHARED_POSTGRES.get_or_init(|| {
        started = true;
        PgServer::start()
    });
    if started && server.is_ok() {
        // Statics are never dropped, so without this every test run would leave its cluster
        // (often more than 1 GB) behind in the temporary directory.
        // SAFETY: the handler only runs at process exit and touches nothing but this static.
        unsafe {
            libc::atexit(remove_shared_postgres);
        }
    }
    match server {
        Ok(server) => Some(server),
        Err(why) => {
            unavailable("PostgreSQL", why);
            None
        }
    }
}

extern "C" fn remove_shared_postgres() {
    if let Some(Ok(server)) = SHARED_POSTGRES.get() {
        server.stop();
        let _ = std::fs::remove_dir_all(server.root.path());
    }
}

/// A Redis server on a free loopback port, without persistence.
pub struct RedisServer {
    pub port: u16,
    _child: Child,
}

impl RedisServer {
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }
}

fn start_redis() -> Result<RedisServer, String> {
    let port = free_port();
    let mut command = Command::new("redis-server");
    command
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let child = spawn_tied_to_process(command).map_err(|e| format!("redis-server: {e}"))?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if Instant::now() > deadline {
            return Err("redis-server did not listen within 10 s".to_owned());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(RedisServer {
        port,
        _child: child,
    })
}

pub fn shared_redis() -> Option<&'static RedisServer> {
    static SERVER: OnceLock<Result<RedisServer, String>> = OnceLock::new();
    match SERVER.get_or_init(start_redis) {
        Ok(server) => Some(server),
        Err(why) => {
            unavailable("Redis", why);
            None
        }
    }
}

/// A fresh, empty database for one test, and the directory that holds its files.
pub struct TestDatabase {
    pub url: String,
    pub dir: TempDir,
}

impl TestDatabase {
    pub async fn new(backend: Backend) -> Option<Self> {
        let dir = tempfile::Builder::new()
            .prefix("docket-test-")
            .tempdir()
            .expect("temp dir");
        let url = match backend {
            Backend::Sqlite => format!("sqlite://{}/docket.db", dir.path().display()),
            Backend::Postgres => shared_postgres()?.create_database().await,
        };
        Some(Self { url, dir })
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }
}

/// Configuration for a test: the test database plus `overrides`.
pub fn test_config(db: &TestDatabase, overrides: &[(&str, &str)]) -> Config {
    let mut vars: HashMap<String, String> = HashMap::from([
        ("DATABASE_URL".to_owned(), db.url.clone()),
        ("DATA_DIR".to_owned(), db.data_dir().display().to_string()),
        ("DB_POOL_SIZE".to_owned(), "5".to_owned()),
    ]);
    for (k, v) in overrides {
        vars.insert((*k).to_owned(), (*v).to_owned());
    }
    Config::from_lookup(|name| vars.get(name).cloned()).expect("valid test configuration")
}

/// A Docket server running in this process on a free port.
pub struct TestApp {
    pub base: String,
    pub state: AppState,
    pub client: reqwest::Client,
    pub db: TestDatabase,
    server: Option<JoinHandle<Result<(), StartError>>>,
}

impl TestApp {
    pub async fn spawn(backend: Backend) -> Option<Self> {
        Self::spawn_with(backend, Role::All, &[]).await
    }

    pub async fn spawn_with(
        backend: Backend,
        role: Role,
        overrides: &[(&str, &str)],
    ) -> Option<Self> {
        let db = TestDatabase::new(backend).await?;
        let state = AppState::initialise(test_config(&db, overrides))
            .await
            .expect("app starts");
        let router = docket::http::router(state.clone(), role);
        Some(Self::serve(db, state, role, router).await)
    }

    /// Serves a custom router (e.g. the real one plus a test route) with the real server loop.
    pub async fn serve(
        db: TestDatabase,
        state: AppState,
        role: Role,
        router: axum::Router,
    ) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let server = Server::new(state.clone(), role, listener, router);
        let base = format!("http://{}", server.local_addr().expect("local addr"));
        let handle = tokio::spawn(server.run());
        Self {
            base,
            state,
            client: http_client(),
            db,
            server: Some(handle),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client
            .get(self.url(path))
            .send()
            .await
            .expect("request")
    }

    pub async fn get_json(&self, path: &str) -> (reqwest::StatusCode, serde_json::Value) {
        let response = self.get(path).await;
        let status = response.status();
        (status, response.json().await.expect("JSON body"))
    }

    /// Triggers graceful shutdown and waits for the server loop to finish.
    pub async fn shutdown(mut self) -> Result<(), StartError> {
        self.state.shutdown.cancel();
        let handle = self.server.take().expect("running");
        tokio::time::timeout(Duration::from_secs(30), handle)
            .await
            .expect("server stops")
            .expect("server task")
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.state.shutdown.cancel();
    }
}

/// Path of the `docket` binary built for these tests.
pub fn docket_bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_docket"))
}

/// The password every test user gets.
pub const PASSWORD: &str = "correct horse battery staple";

/// The current TOTP code for a base32 secret, `steps_ahead` 30-second steps in the future.
pub fn totp_code(secret: &str, steps_ahead: u64) -> String {
    let bytes = totp_rs::Secret::try_from_base32(secret).expect("base32 secret");
    let totp = totp_rs::Builder::new()
        .with_secret(bytes.as_bytes().to_vec())
        .build()
        .expect("totp");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    totp.generate(now + steps_ahead * 30).to_string()
}

/// A signed-in user of a test app.
pub struct Login {
    pub user_id: String,
    pub tenant_id: String,
    pub access_token: String,
    pub refresh_token: String,
    /// The TOTP secret, for admins (who must enrol).
    pub totp_secret: Option<String>,
}

impl TestApp {
    /// Creates a tenant (through the storage layer) and returns its id.
    pub async fn create_tenant(&self, slug: &str) -> String {
        let mut tx = self.state.store.begin().await.unwrap();
        let tenant = docket::auth::tenants::insert(&mut tx, slug, slug, &[])
            .await
            .unwrap();
        tx.commit().await.unwrap();
        tenant.id
    }

    /// Creates a user in the tenant `slug` (created when missing) and returns the user id.
    pub async fn create_user(
        &self,
        slug: &str,
        email: &str,
        role: docket::auth::Role,
        platform_admin: bool,
    ) -> String {
        let tenant_id = match docket::auth::tenants::find_by_slug(&self.state.store, slug)
            .await
            .unwrap()
        {
            Some(t) => t.id,
            None => self.create_tenant(slug).await,
        };
        let mut tx = self.state.store.begin().await.unwrap();
        let user = docket::auth::users::insert(
            &mut tx,
            &self.state.hashing,
            docket::auth::users::NewUser {
                tenant_id: &tenant_id,
                email,
                name: email,
                role,
                platform_admin,
                password: PASSWORD,
            },
        )
        .await
        .unwrap();
        tx.commit().await.unwrap();
        user.id
    }

    /// `POST /auth/login`; returns status and body.
    pub async fn login(&self, body: serde_json::Value) -> (reqwest::StatusCode, serde_json::Value) {
        let response = self
            .client
            .post(self.url("/api/v1/auth/login"))
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = response.status();
        (status, response.json().await.unwrap())
    }

    /// Waits (at most 30 s) until job `job_id` of `tenant` is in `status`, and returns it.
    pub async fn wait_for_job(
        &self,
        tenant: &str,
        job_id: &str,
        status: &str,
    ) -> docket::queue::Job {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let job = docket::queue::get(&self.state.store, tenant, job_id)
                .await
                .unwrap()
                .unwrap();
            if job.status == status {
                return job;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "job stuck in {} (last error {:?})",
                job.status,
                job.last_error
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Creates a user with `role` and signs them in; admins are enrolled in MFA on the way, as they
    /// must be before they can do anything else.
    pub async fn sign_in(&self, slug: &str, email: &str, role: docket::auth::Role) -> Login {
        self.sign_in_as(slug, email, role, false).await
    }

    pub async fn sign_in_as(
        &self,
        slug: &str,
        email: &str,
        role: docket::auth::Role,
        platform_admin: bool,
    ) -> Login {
        let user_id = self.create_user(slug, email, role, platform_admin).await;
        let (status, body) = self
            .login(serde_json::json!({ "email": email, "password": PASSWORD }))
            .await;
        assert_eq!(status, reqwest::StatusCode::OK, "{body}");
        let mut login = Login {
            user_id,
            tenant_id: String::new(),
            access_token: body["access_token"].as_str().unwrap().to_owned(),
            refresh_token: body["refresh_token"].as_str().unwrap().to_owned(),
            totp_secret: None,
        };
        if body["mfa_enrolment_required"] == true {
            let enrolment: serde_json::Value = self
                .call(
                    reqwest::Method::POST,
                    "/api/v1/auth/mfa/enrol",
                    &login.access_token,
                    None,
                )
                .await
                .1;
            let secret = enrolment["secret"].as_str().unwrap().to_owned();
            let code = totp_code(&secret, 0);
            let (status, body) = self
                .call(
                    reqwest::Method::POST,
                    "/api/v1/auth/mfa/confirm",
                    &login.access_token,
                    Some(serde_json::json!({ "code": code })),
                )
                .await;
            assert_eq!(status, reqwest::StatusCode::OK, "{body}");
            login.totp_secret = Some(secret);
        }
        let me = self
            .call(
                reqwest::Method::GET,
                "/api/v1/auth/me",
                &login.access_token,
                None,
            )
            .await
            .1;
        login.tenant_id = me["user"]["tenant_id"].as_str().unwrap().to_owned();
        login
    }

    /// An authenticated request; returns status and JSON body (`null` when there is none).
    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        token: &str,
        body: Option<serde_json::Value>,
    ) -> (reqwest::StatusCode, serde_json::Value) {
        let mut request = self
            .client
            .request(method, self.url(path))
            .bearer_auth(token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        let text = response.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(serde_json::Value::Null),
        )
    }
}

/// An HTTP client for tests (the TLS provider Docket uses must be installed before any is built).
pub fn http_client() -> reqwest::Client {
    docket::tls::install_crypto_provider();
    reqwest::Client::new()
}

/// `reqwest::get` with the TLS provider installed.
pub async fn get(url: impl reqwest::IntoUrl) -> reqwest::Result<reqwest::Response> {
    http_client().get(url).send().await
}
