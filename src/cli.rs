//! Command-line interface: one binary, one subcommand per role or operation.

use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};

use crate::app::{self, AppState, Role, Server};
use crate::config::Config;
use crate::store::Store;
use crate::telemetry;

/// Docket: scheduler, durable job queue, pipelines, review decisions and knowledge search in one
/// binary. Configured only through environment variables (and an optional `.env` file); run
/// `docket config` to see the effective settings.
#[derive(Debug, Parser)]
#[command(name = "docket", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the API, worker and scheduler in one process (the default; embedded SQLite needs nothing else).
    All,
    /// Run only the HTTP API (stateless; run any number behind a load balancer).
    Api,
    /// Run only a worker that executes queued jobs (stateless; run any number).
    Worker,
    /// Run only the scheduler that turns due tasks into jobs (safe to run more than one).
    Scheduler,
    /// Apply database migrations and exit (the production migration job).
    Migrate,
    /// Probe http://127.0.0.1:$PORT$HEALTHCHECK_PATH; exit 0 when healthy, 1 otherwise (for container health checks).
    Healthcheck,
    /// Print the effective configuration with secrets redacted.
    Config,
}

/// Parses the command line and runs it; the process exit code comes from here.
pub async fn run() -> ExitCode {
    let cli = Cli::parse();
    let config = match Config::from_env() {
        Ok(config) => config,
        Err(e) => {
            eprintln!("docket: {e}");
            return ExitCode::from(2);
        }
    };
    match cli.command.unwrap_or(Command::All) {
        Command::All => serve(config, Role::All).await,
        Command::Api => serve(config, Role::Api).await,
        Command::Worker => serve(config, Role::Worker).await,
        Command::Scheduler => serve(config, Role::Scheduler).await,
        Command::Migrate => migrate(config).await,
        Command::Healthcheck => healthcheck(&config).await,
        Command::Config => {
            for line in config.redacted_lines() {
                println!("{line}");
            }
            ExitCode::SUCCESS
        }
    }
}

async fn serve(config: Config, role: Role) -> ExitCode {
    telemetry::init_logging(&config);
    let result = async {
        let state = AppState::initialise(config).await?;
        app::cancel_on_signal(state.shutdown.clone());
        Server::bind(state, role).await?.run().await
    }
    .await;
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "docket failed");
            eprintln!("docket: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn migrate(config: Config) -> ExitCode {
    let result = async {
        let store = Store::connect(&config).await?;
        let status = store.migrate().await;
        store.close().await;
        status
    }
    .await;
    match result {
        Ok(status) => {
            println!("database schema is at version {}", status.binary_version);
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("docket: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn healthcheck(config: &Config) -> ExitCode {
    let host = match config.host.as_str() {
        "0.0.0.0" | "::" | "localhost" => "127.0.0.1",
        other => other,
    };
    let host = if host.contains(':') {
        format!("[{host}]")
    } else {
        host.to_owned()
    };
    let url = format!("http://{host}:{}{}", config.port, config.healthcheck_path);
    let client = match reqwest::Client::builder()
        .timeout(Duration::from_secs(3))
        .build()
    {
        Ok(client) => client,
        Err(e) => {
            eprintln!("docket: cannot build an HTTP client: {e}");
            return ExitCode::FAILURE;
        }
    };
    match client.get(&url).send().await {
        Ok(response) if response.status().is_success() => ExitCode::SUCCESS,
        Ok(response) => {
            eprintln!("docket: {url} answered {}", response.status());
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("docket: {url} did not answer: {e}");
            ExitCode::FAILURE
        }
    }
}
