//! The served OpenAPI document against independent tools: a validator accepts it, and a client
//! generated from it by a standard generator drives the real server (tests/contract).

use std::path::{Path, PathBuf};

use docket::auth::Role;
use reqwest::StatusCode;

use crate::on_both_backends;
use crate::support::{self, TestApp};

/// The virtualenv scripts/test.sh makes from tests/contract/requirements.txt: `CONTRACT_TOOLS`,
/// else the newest `~/.cache/docket/contract-tools-*`.
pub fn contract_tools() -> Option<PathBuf> {
    let usable = |dir: &Path| dir.join("bin/openapi-python-client").exists();
    if let Some(dir) = std::env::var_os("CONTRACT_TOOLS").filter(|d| !d.is_empty()) {
        let dir = PathBuf::from(dir);
        return usable(&dir).then_some(dir);
    }
    let cache = PathBuf::from(std::env::var_os("HOME")?).join(".cache/docket");
    let mut found: Vec<PathBuf> = std::fs::read_dir(cache)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("contract-tools-"))
        })
        .filter(|p| usable(p))
        .collect();
    found.sort_by_key(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok());
    let dir = found.pop();
    if dir.is_none() {
        support::unavailable(
            "the contract tools (openapi-spec-validator, openapi-python-client)",
            "no CONTRACT_TOOLS and no ~/.cache/docket/contract-tools-*; scripts/test.sh installs them",
        );
    }
    dir
}

/// Runs a command to its end; panics with its output when it fails.
pub async fn run(what: &str, command: &mut tokio::process::Command) -> String {
    let output = command
        .output()
        .await
        .unwrap_or_else(|e| panic!("{what}: could not start: {e}"));
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "{what} failed ({}):\n{stdout}\n{stderr}",
        output.status
    );
    stdout
}

on_both_backends! {
    async fn a_client_generated_from_the_openapi_document_works(backend) {
        let Some(tools) = contract_tools() else { return };
        let Some(app) = TestApp::spawn(backend).await else { return };
        app.create_user("acme", "gen@acme.test", Role::Supervisor, false).await;
        let (status, spec) = app.get_json("/api/v1/openapi.json").await;
        assert_eq!(status, StatusCode::OK);
        let work = tempfile::tempdir().unwrap();
        let spec_path = work.path().join("openapi.json");
        std::fs::write(&spec_path, serde_json::to_vec_pretty(&spec).unwrap()).unwrap();

        let validated = run(
            "openapi-spec-validator",
            tokio::process::Command::new(tools.join("bin/openapi-spec-validator")).arg(&spec_path),
        )
        .await;
        assert!(validated.contains("OK"), "{validated}");
        let package = work.path().join("docket_client");
        run(
            "openapi-python-client generate",
            tokio::process::Command::new(tools.join("bin/openapi-python-client"))
                .args(["generate", "--meta", "none", "--path"])
                .arg(&spec_path)
                .arg("--output-path")
                .arg(&package),
        )
        .await;
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/contract/generated_client.py");
        let used = run(
            "the generated client",
            tokio::process::Command::new(tools.join("bin/python"))
                .arg(script)
                .env("PYTHONPATH", work.path())
                .env("DOCKET_URL", app.url(""))
                .env("DOCKET_EMAIL", "gen@acme.test")
                .env("DOCKET_PASSWORD", support::PASSWORD),
        )
        .await;
        assert!(used.contains("submitted and read a case"), "{used}");
    }
}

/// Fire times against python-dateutil (RRULE) and a reference of the documented cron convention,
/// across DST changes in a dozen zones (tests/contract/schedule_differential.py). Previews store
/// nothing, so one backend is enough.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fire_times_match_independent_implementations() {
    let Some(tools) = contract_tools() else {
        return;
    };
    let Some(app) = TestApp::spawn_with(
        support::Backend::Sqlite,
        docket::app::Role::All,
        &[("RATE_LIMIT_PER_MINUTE", "100000")],
    )
    .await
    else {
        return;
    };
    let viewer = app.sign_in("acme", "val@acme.test", Role::Viewer).await;
    let script =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/contract/schedule_differential.py");
    let report = run(
        "the schedule differential test",
        tokio::process::Command::new(tools.join("bin/python"))
            .arg(script)
            .env("DOCKET_URL", app.url(""))
            .env("DOCKET_TOKEN", &viewer.access_token),
    )
    .await;
    println!("{report}");
    assert!(report.contains(" 0 differences"), "{report}");
}
