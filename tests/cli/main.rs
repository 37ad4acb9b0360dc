//! The `docket` binary as operators run it: subcommands, configuration errors, JSON logs, signals.

#[path = "../support/mod.rs"]
mod support;

mod backup;
mod chaos;
mod deploy_files;
mod deploy_manifests;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::Value;
use sqlx::Connection;
use support::{Backend, PgServer, TestDatabase, docket_bin, free_port, in_ci};

/// A `docket` command with a clean environment (so the developer's variables do not leak in),
/// run in `dir` so `data/` and `.env` are the test's own.
fn docket(dir: &Path, env: &[(&str, &str)]) -> Command {
    let mut command = Command::new(docket_bin());
    command
        .current_dir(dir)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .envs(env.iter().copied());
    command
}

fn run(dir: &Path, env: &[(&str, &str)], args: &[&str]) -> Output {
    docket(dir, env).args(args).output().expect("run docket")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A running `docket` process whose stdout lines are collected.
struct Process {
    child: Child,
    port: u16,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Process {
    fn start(dir: &Path, env: &[(&str, &str)], args: &[&str]) -> Self {
        let port = env
            .iter()
            .find(|(k, _)| *k == "PORT")
            .map(|(_, v)| v.parse().unwrap())
            .expect("tests set PORT");
        let mut child = docket(dir, env)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn docket");
        let stdout = child.stdout.take().unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        Self { child, port, lines }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// Waits until the process answers `/health/live`.
    async fn wait_live(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!(
                    "docket exited early with {status}: {:?}",
                    self.lines.lock().unwrap()
                );
            }
            if support::get(self.url("/health/live"))
                .await
                .is_ok_and(|r| r.status().is_success())
            {
                return;
            }
            assert!(Instant::now() < deadline, "docket did not come up");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn readiness(&self) -> (StatusCode, Value) {
        let response = support::get(self.url("/health/ready"))
            .await
            .expect("ready answers");
        (response.status(), response.json().await.unwrap())
    }

    /// Polls readiness until it has `status`, for changes that take a moment to be noticed.
    async fn wait_readiness(&self, status: StatusCode) -> Value {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let (got, body) = self.readiness().await;
            if got == status {
                return body;
            }
            assert!(Instant::now() < deadline, "readiness stayed {got}: {body}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Sends SIGTERM and returns the exit status.
    fn terminate(mut self) -> (std::process::ExitStatus, Vec<String>) {
        // SAFETY: kill has no memory-safety preconditions.
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                std::thread::sleep(Duration::from_millis(100));
                let lines = self.lines.lock().unwrap().clone();
                return (status, lines);
            }
            assert!(Instant::now() < deadline, "docket ignored SIGTERM");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn help_explains_every_subcommand() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(dir.path(), &[], &["--help"]);
    assert!(out.status.success());
    let help = text(&out.stdout);
    for command in [
        "all",
        "api",
        "worker",
        "scheduler",
        "migrate",
        "healthcheck",
        "config",
    ] {
        assert!(
            help.lines().any(|l| l.trim_start().starts_with(command)),
            "{command} missing:\n{help}"
        );
    }
}

#[test]
fn bad_configuration_exits_with_one_line_naming_the_variable() {
    let dir = tempfile::tempdir().unwrap();
    let cases: &[(&[(&str, &str)], &str)] = &[
        (&[("PORT", "abc")], "PORT"),
        (&[("ENVIRONMENT", "production")], "SECRET_KEY"),
        (
            &[("DATABASE_URL", "mysql://localhost/docket")],
            "DATABASE_URL",
        ),
        (&[("CORS_ORIGINS", "not json")], "CORS_ORIGINS"),
    ];
    for (env, var) in cases {
        for command in ["api", "migrate", "config"] {
            let out = run(dir.path(), env, &[command]);
            assert_eq!(out.status.code(), Some(2), "{command} {env:?}");
            let stderr = text(&out.stderr);
            assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
            assert!(stderr.contains(var), "{stderr}");
        }
    }
    assert!(
        !dir.path().join("data").exists(),
        "nothing is created on a configuration error"
    );
}

#[test]
fn configuration_is_read_from_a_dotenv_file_and_printed_redacted() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join(".env"),
        "PORT=9123\nSECRET_KEY=0123456789abcdef0123456789abcdef-secret\nDATABASE_URL=postgres://u:hunter2@db/docket\n",
    )
    .unwrap();
    let out = run(dir.path(), &[("PORT", "9124")], &["config"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let printed = text(&out.stdout);
    assert!(
        printed.contains("PORT=9124"),
        "the environment wins over .env:\n{printed}"
    );
    assert!(
        printed.contains("DATABASE_URL=postgres://u:REDACTED@db/docket"),
        "{printed}"
    );
    assert!(printed.contains("SECRET_KEY=<redacted>"), "{printed}");
    assert!(
        !printed.contains("hunter2") && !printed.contains("-secret"),
        "{printed}"
    );
}

#[test]
fn healthcheck_fails_when_nothing_answers() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port().to_string();
    let out = run(dir.path(), &[("PORT", &port)], &["healthcheck"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains(&format!("127.0.0.1:{port}/health")));
}

#[test]
fn commands_that_read_data_fail_where_there_is_no_database() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(dir.path(), &[], &["audit", "verify"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("there is no database at") && stderr.contains("DATABASE_URL="),
        "{stderr}"
    );
    // Nothing was created to report on.
    assert!(
        !dir.path().join("data").exists(),
        "{:?}",
        std::fs::read_dir(dir.path()).unwrap().collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn the_default_run_needs_no_configuration() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port().to_string();
    let mut docket = Process::start(dir.path(), &[("PORT", &port)], &[]);
    docket.wait_live().await;
    let (status, body) = docket.readiness().await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(dir.path().join("data/docket.db").exists());
    assert!(dir.path().join("data/secret_key").exists());
    let health: Value = support::get(docket.url("/health"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(health["version"], env!("CARGO_PKG_VERSION"));
    let (exit, _) = docket.terminate();
    assert!(exit.success(), "{exit}");
}

/// Records a migration this binary does not know, as a newer docket would have.
async fn insert_future_migration(backend: Backend, url: &str) {
    match backend {
        Backend::Sqlite => {
            let mut conn = sqlx::SqliteConnection::connect(url).await.unwrap();
            sqlx::query(
                "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
                 VALUES (99991231000000, 'from a newer docket', TRUE, x'00', 0)",
            )
            .execute(&mut conn)
            .await
            .unwrap();
        }
        Backend::Postgres => {
            let mut conn = sqlx::PgConnection::connect(url).await.unwrap();
            sqlx::query(
                "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
                 VALUES (99991231000000, 'from a newer docket', TRUE, '\\x00', 0)",
            )
            .execute(&mut conn)
            .await
            .unwrap();
        }
    }
}

on_both_backends! {
    async fn migrate_serve_probe_and_stop_gracefully(backend) {
        let Some(db) = TestDatabase::new(backend).await else { return };
        let dir = db.dir.path();
        let port = free_port().to_string();
        let env = [
            ("DATABASE_URL", db.url.as_str()),
            ("PORT", port.as_str()),
            ("AUTO_MIGRATE", "false"),
            ("LOG_FORMAT", "json"),
            ("SHUTDOWN_GRACE_SECONDS", "5"),
        ];
        let out = run(dir, &env, &["migrate"]);
        assert!(out.status.success(), "{}", text(&out.stderr));
        assert!(text(&out.stdout).contains("schema is at version"));

        let mut api = Process::start(dir, &env, &["api"]);
        api.wait_live().await;
        let (status, body) = api.readiness().await;
        assert_eq!(status, StatusCode::OK, "{body}");

        let out = run(dir, &env, &["healthcheck"]);
        assert!(out.status.success(), "{}", text(&out.stderr));

        let response = reqwest::Client::new()
            .get(api.url("/api/v1/health"))
            .header("x-request-id", "cli-trace-7")
            .send()
            .await
            .unwrap();
        assert_eq!(response.headers()["x-request-id"], "cli-trace-7");

        let (exit, lines) = api.terminate();
        assert!(exit.success(), "{exit}");
        let records: Vec<Value> = lines
            .iter()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|_| panic!("not a JSON log line: {l}")))
            .collect();
        let request_log = records
            .iter()
            .find(|r| r["span"]["request_id"] == "cli-trace-7")
            .unwrap_or_else(|| panic!("no log line for the request: {lines:#?}"));
        assert_eq!(request_log["status"], 200);
        assert_eq!(request_log["span"]["method"], "GET");
        assert_eq!(request_log["span"]["path"], "/api/v1/health");
        assert!(request_log["latency_ms"].is_number());
        assert!(records.iter().any(|r| r["message"] == "docket stopped"));

        let out = run(dir, &env, &["healthcheck"]);
        assert_eq!(out.status.code(), Some(1), "nothing answers after exit");
    }

    async fn a_newer_schema_is_refused_at_start(backend) {
        let Some(db) = TestDatabase::new(backend).await else { return };
        let dir = db.dir.path();
        let port = free_port().to_string();
        let env = [("DATABASE_URL", db.url.as_str()), ("PORT", port.as_str())];
        assert!(run(dir, &env, &["migrate"]).status.success());
        insert_future_migration(backend, &db.url).await;
        for command in ["migrate", "api"] {
            let out = run(dir, &env, &[command]);
            assert_eq!(out.status.code(), Some(1), "{command}");
            let stderr = text(&out.stderr);
            assert!(stderr.contains("newer than this binary"), "{command}: {stderr}");
        }
    }

    async fn worker_and_scheduler_processes_serve_probes(backend) {
        let Some(db) = TestDatabase::new(backend).await else { return };
        for role in ["worker", "scheduler"] {
            let port = free_port().to_string();
            let env = [("DATABASE_URL", db.url.as_str()), ("PORT", port.as_str())];
            let mut process = Process::start(db.dir.path(), &env, &[role]);
            process.wait_live().await;
            assert_eq!(process.readiness().await.0, StatusCode::OK);
            let docs = support::get(process.url("/docs")).await.unwrap();
            assert_eq!(docs.status(), StatusCode::NOT_FOUND, "{role} serves no API");
            let (exit, _) = process.terminate();
            assert!(exit.success(), "{role}: {exit}");
        }
    }
}

#[tokio::test]
async fn readiness_follows_postgres_going_away_and_coming_back() {
    let pg = match PgServer::start() {
        Ok(pg) => pg,
        Err(why) => {
            assert!(!in_ci(), "PostgreSQL is required when CI is set: {why}");
            eprintln!("skipping: {why}");
            return;
        }
    };
    let dir = tempfile::tempdir().unwrap();
    let url = pg.url("postgres");
    let port = free_port().to_string();
    let env = [("DATABASE_URL", url.as_str()), ("PORT", port.as_str())];
    let mut api = Process::start(dir.path(), &env, &["api"]);
    api.wait_live().await;
    api.wait_readiness(StatusCode::OK).await;

    pg.stop();
    let body = api.wait_readiness(StatusCode::SERVICE_UNAVAILABLE).await;
    assert_eq!(body["checks"]["database"]["status"], "down", "{body}");
    assert!(
        body["failing"]
            .as_array()
            .unwrap()
            .contains(&Value::from("database"))
    );
    // Liveness does not depend on the database: no restart is wanted.
    assert!(
        support::get(api.url("/health/live"))
            .await
            .unwrap()
            .status()
            .is_success()
    );

    pg.resume().unwrap();
    api.wait_readiness(StatusCode::OK).await;
    let (exit, _) = api.terminate();
    assert!(exit.success());
}

on_both_backends! {
    async fn the_queue_benchmark_runs_and_reports(backend) {
        let Some(db) = TestDatabase::new(backend).await else { return };
        let env = [("DATABASE_URL", db.url.as_str())];
        let out = run(db.dir.path(), &env, &["bench", "queue", "--jobs", "200", "--workers", "2"]);
        assert!(out.status.success(), "{}", text(&out.stderr));
        let report = text(&out.stdout);
        for line in ["jobs                      200", "processing rate", "enqueue-to-start p99"] {
            assert!(report.contains(line), "{line} missing:\n{report}");
        }
        let out = run(db.dir.path(), &env, &["bench", "queue", "--jobs", "200", "--tasks", "3", "--keys", "5"]);
        assert!(out.status.success(), "{}", text(&out.stderr));
        let report = text(&out.stdout);
        for line in ["tasks                     3 (concurrency 4 each)", "concurrency keys          5 (limit 4 each)"] {
            assert!(report.contains(line), "{line} missing:\n{report}");
        }
    }

    async fn a_worker_process_killed_with_sigkill_loses_its_jobs_to_another(backend) {
        let Some(db) = TestDatabase::new(backend).await else { return };
        let start_worker = || {
            let port = free_port().to_string();
            let env = [
                ("DATABASE_URL", db.url.as_str()),
                ("PORT", port.as_str()),
                ("WORKER_LEASE_SECONDS", "2"),
                ("WORKER_CONCURRENCY", "4"),
                ("WORKER_POLL_INTERVAL", "0.1"),
            ];
            Process::start(db.dir.path(), &env, &["worker"])
        };
        let mut doomed = start_worker();
        doomed.wait_live().await;
        let state = docket::app::AppState::initialise(support::test_config(&db, &[])).await.unwrap();
        let mut ids = Vec::new();
        for _ in 0..8 {
            let job = docket::queue::NewJob {
                tenant_id: "t1".to_owned(),
                kind: "sleep".to_owned(),
                payload: serde_json::json!({ "seconds": 1.5 }),
                ..docket::queue::NewJob::default()
            };
            ids.push(state.queue.enqueue(job).await.unwrap().id);
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        let in_hand = loop {
            let mut running = Vec::new();
            for id in &ids {
                let job = docket::queue::get(&state.store, "t1", id).await.unwrap().unwrap();
                if job.status == "running" {
                    running.push(id.clone());
                }
            }
            if running.len() == 4 {
                break running;
            }
            assert!(Instant::now() < deadline, "the worker never filled its slots");
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        // SIGKILL: no drain, no release, no last heartbeat.
        doomed.child.kill().unwrap();
        doomed.child.wait().unwrap();

        let mut rescuer = start_worker();
        rescuer.wait_live().await;
        let deadline = Instant::now() + Duration::from_secs(60);
        for id in &ids {
            loop {
                let job = docket::queue::get(&state.store, "t1", id).await.unwrap().unwrap();
                if job.status == "succeeded" {
                    break;
                }
                assert!(Instant::now() < deadline, "job {id} stuck in {}", job.status);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        let mut lost_by = std::collections::HashSet::new();
        for id in &ids {
            let runs = docket::queue::runs_of(&state.store, "t1", id).await.unwrap();
            let succeeded: Vec<_> = runs.iter().filter(|r| r.status == "succeeded").collect();
            assert_eq!(succeeded.len(), 1, "job {id} ran to completion exactly once: {runs:?}");
            if in_hand.contains(id) {
                let statuses: Vec<(&str, i32)> = runs.iter().map(|r| (r.status.as_str(), r.attempt)).collect();
                assert_eq!(statuses, [("lost", 1), ("succeeded", 2)], "job {id}");
                assert_ne!(runs[0].worker_id, runs[1].worker_id, "another worker finished it");
                lost_by.insert(runs[0].worker_id.clone());
            } else {
                assert_eq!(runs.len(), 1, "job {id} was never in the dead worker's hands: {runs:?}");
            }
        }
        assert_eq!(lost_by.len(), 1, "all lost runs belong to the killed process");
        let (exit, _) = rescuer.terminate();
        assert!(exit.success());
    }

    async fn the_knowledge_benchmark_ingests_and_searches(backend) {
        let Some(db) = TestDatabase::new(backend).await else { return };
        let env = [("DATABASE_URL", db.url.as_str())];
        let out = run(db.dir.path(), &env, &["bench", "knowledge", "--documents", "20", "--kilobytes", "4", "--searches", "10"]);
        assert!(out.status.success(), "{}", text(&out.stderr));
        let report = text(&out.stdout);
        for line in ["documents                 20", "ingest rate", "search p99"] {
            assert!(report.contains(line), "{line} missing:\n{report}");
        }
        let chunks: i64 = report
            .lines()
            .find_map(|l| l.strip_prefix("chunks"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no chunk count:\n{report}"));
        assert!(chunks >= 20, "every document was chunked: {report}");
    }

    async fn the_scheduler_benchmark_runs_each_occurrence_once(backend) {
        let Some(db) = TestDatabase::new(backend).await else { return };
        let env = [("DATABASE_URL", db.url.as_str())];
        let out = run(db.dir.path(), &env, &["bench", "scheduler", "--tasks", "3", "--seconds", "2"]);
        assert!(out.status.success(), "{}", text(&out.stderr));
        let report = text(&out.stdout);
        assert!(report.contains("enqueued twice            0"), "{report}");
        let ran: i64 = report
            .lines()
            .find_map(|l| l.strip_prefix("occurrences run"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no occurrence count:\n{report}"));
        assert!(ran >= 3, "every task fired at least once: {report}");
    }
}

#[tokio::test]
async fn sslmode_require_is_honoured() {
    let Some(db) = TestDatabase::new(Backend::Postgres).await else {
        return;
    };
    // The throwaway server has no TLS, so a client that honours sslmode=require must refuse it.
    let url = format!("{}?sslmode=require", db.url);
    let out = run(db.dir.path(), &[("DATABASE_URL", &url)], &["migrate"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr).to_lowercase();
    assert!(stderr.contains("tls") || stderr.contains("ssl"), "{stderr}");
}

on_both_backends! {
    async fn audit_verify_refuses_a_database_docket_never_wrote(backend) {
        let Some(db) = TestDatabase::new(backend).await else { return };
        let out = run(db.dir.path(), &[("DATABASE_URL", db.url.as_str())], &["audit", "verify"]);
        assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
        let stderr = text(&out.stderr);
        assert!(stderr.contains("there is no database at") || stderr.contains("holds no Docket data"), "{stderr}");
    }
}

on_both_backends! {
    async fn admin_create_bootstraps_a_fresh_install_and_audit_verify_checks_it(backend) {
        let Some(db) = TestDatabase::new(backend).await else { return };
        let dir = db.dir.path();
        let env = [("DATABASE_URL", db.url.as_str()), ("DOCKET_ADMIN_PASSWORD", "correct horse battery staple")];
        let out = run(dir, &env, &["admin", "create", "--email", "Root@Example.test", "--tenant", "acme"]);
        assert!(out.status.success(), "{}", text(&out.stderr));
        assert!(text(&out.stdout).contains("created platform admin root@example.test in tenant acme (new tenant)"));

        let out = run(dir, &env, &["admin", "create", "--email", "root@example.test", "--tenant", "acme"]);
        assert_eq!(out.status.code(), Some(1), "duplicate email");
        assert!(text(&out.stderr).contains("already exists"));
        let short = [("DATABASE_URL", db.url.as_str()), ("DOCKET_ADMIN_PASSWORD", "short")];
        let out = run(dir, &short, &["admin", "create", "--email", "second@example.test", "--tenant", "acme"]);
        assert_eq!(out.status.code(), Some(1));
        assert!(text(&out.stderr).contains("at least 12 characters"));

        let out = run(dir, &env, &["admin", "create", "--email", "second@example.test", "--tenant", "acme"]);
        assert!(out.status.success());
        assert!(text(&out.stdout).contains("created admin second@example.test in tenant acme\n"), "{}", text(&out.stdout));

        let out = run(dir, &env, &["audit", "verify"]);
        assert!(out.status.success(), "{}", text(&out.stdout));
        // Chains are named by the tenant's slug, as people know them.
        assert!(text(&out.stdout).contains("acme: ok, 3 records"), "{}", text(&out.stdout));
        let out = run(dir, &env, &["audit", "verify", "--tenant", "acme"]);
        assert!(out.status.success());
        let out = run(dir, &env, &["audit", "verify", "--tenant", "nope"]);
        assert_eq!(out.status.code(), Some(1));
    }
}
