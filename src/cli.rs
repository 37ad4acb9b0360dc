//! Command-line interface: one binary, one subcommand per role or operation.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};

use crate::admin;
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
    /// Administration without the API (bootstrap a fresh install).
    #[command(subcommand)]
    Admin(AdminCommand),
    /// Audit log tools.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Back up the embedded deployment (SQLite) into one .tar.gz while it runs.
    ///
    /// The archive holds a consistent snapshot of the SQLite database, the file:// object store and
    /// the development signing key, with a manifest of SHA-256 sums. For PostgreSQL use pg_dump
    /// (docs/backup.md).
    Backup {
        /// Archive to write, or a directory to write docket-backup-<UTC time>.tar.gz into [default:
        /// the working directory].
        #[arg(long, value_name = "PATH")]
        output: Option<PathBuf>,
    },
    /// Restore a `docket backup` archive (stop Docket first).
    ///
    /// Restores into DATABASE_URL, the file:// OBJECT_STORE_URL and DATA_DIR. Every checksum is
    /// verified before anything is replaced.
    Restore {
        /// Archive written by `docket backup`.
        file: PathBuf,
        /// Replace a database or object store that already holds data (the current data is deleted).
        #[arg(long)]
        force: bool,
    },
    /// Benchmarks against the configured database (not tests: they print measurements).
    #[command(subcommand)]
    Bench(BenchCommand),
}

#[derive(Debug, Subcommand)]
enum BenchCommand {
    /// Enqueue no-op jobs while workers drain them; report enqueue rate, processing rate and
    /// enqueue-to-start latency (p50/p99). Worker concurrency comes from WORKER_CONCURRENCY.
    Queue {
        /// Number of jobs.
        #[arg(long, default_value_t = 10_000)]
        jobs: usize,
        /// Worker loops in this process (each runs WORKER_CONCURRENCY jobs at once).
        #[arg(long, default_value_t = 2)]
        workers: usize,
        /// Spread the jobs over this many concurrency keys, each limited to 4 running jobs
        /// (0: jobs without keys).
        #[arg(long, default_value_t = 0)]
        keys: usize,
        /// Spread the jobs over this many tasks, each with `concurrency` 4 (0: jobs without a task).
        #[arg(long, default_value_t = 0)]
        tasks: usize,
        /// Enqueue every job before the workers start (a backlog), and count the processing rate
        /// from the first job's start: how other queues' benchmarks measure.
        #[arg(long)]
        enqueue_first: bool,
    },
    /// Ingest generated Markdown documents with this process's workers, then search them; report
    /// documents/s and search latency (p50/p99).
    Knowledge {
        /// Number of documents.
        #[arg(long, default_value_t = 1_000)]
        documents: usize,
        /// Size of each document in KiB.
        #[arg(long, default_value_t = 10)]
        kilobytes: usize,
        /// Number of searches afterwards.
        #[arg(long, default_value_t = 500)]
        searches: usize,
    },
    /// Validate and preview the worst schedules a caller can send (`POST /tasks/preview`), each
    /// ITERATIONS times; report the median and slowest time per schedule. Needs no database.
    Schedules {
        #[arg(long, default_value_t = 20)]
        iterations: usize,
    },
    /// Run tasks that fire every second with this process's scheduler and worker; report how late
    /// occurrences start (p50/p99/max) and whether any was enqueued twice.
    Scheduler {
        /// Number of tasks.
        #[arg(long, default_value_t = 50)]
        tasks: usize,
        /// How long to run, in seconds.
        #[arg(long, default_value_t = 10)]
        seconds: u64,
    },
    /// Crash test on PostgreSQL: start `docket worker` processes and SIGKILL a random one every
    /// second while they drain small jobs, then the same with `docket scheduler` processes and
    /// tasks firing every second, restarting PostgreSQL once in each part (--restart-postgres).
    /// Reports lost, failed and repeated work against its bound; exits 1 if an invariant broke.
    /// Use a scratch database: the workers it starts take any due job.
    Chaos(crate::chaos::Args),
}

#[derive(Debug, Subcommand)]
enum AdminCommand {
    /// Create an admin user (and the tenant, if it does not exist yet). The password is read from
    /// DOCKET_ADMIN_PASSWORD or prompted for. The first user of an install is a platform admin.
    Create {
        /// Email address to sign in with.
        #[arg(long)]
        email: String,
        /// Tenant slug (lower-case letters, digits, dashes); created when missing.
        #[arg(long)]
        tenant: String,
        /// Display name (defaults to the email address).
        #[arg(long)]
        name: Option<String>,
        /// Also make this user a platform admin (may manage all tenants).
        #[arg(long)]
        platform_admin: bool,
    },
}

#[derive(Debug, Subcommand)]
enum AuditCommand {
    /// Check the hash chains; exit 1 if any record was changed, removed or reordered.
    Verify {
        /// Only this tenant (slug); all tenants when omitted.
        #[arg(long)]
        tenant: Option<String>,
    },
}

/// Parses the command line and runs it; the process exit code comes from here.
pub async fn run() -> ExitCode {
    crate::tls::install_crypto_provider();
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
        Command::Admin(AdminCommand::Create {
            email,
            tenant,
            name,
            platform_admin,
        }) => admin_create(config, &email, &tenant, name.as_deref(), platform_admin).await,
        Command::Audit(AuditCommand::Verify { tenant }) => {
            audit_verify(config, tenant.as_deref()).await
        }
        Command::Backup { output } => backup(config, output).await,
        Command::Restore { file, force } => restore(config, file, force).await,
        Command::Bench(BenchCommand::Scheduler { tasks, seconds }) => {
            bench_scheduler(config, tasks, seconds).await
        }
        Command::Bench(BenchCommand::Knowledge {
            documents,
            kilobytes,
            searches,
        }) => bench_knowledge(config, documents, kilobytes, searches).await,
        Command::Bench(BenchCommand::Queue {
            jobs,
            workers,
            keys,
            tasks,
            enqueue_first,
        }) => bench_queue(config, jobs, workers, keys, tasks, enqueue_first).await,
        Command::Bench(BenchCommand::Chaos(args)) => bench_chaos(config, args).await,
        Command::Bench(BenchCommand::Schedules { iterations }) => {
            for figure in crate::scheduler::schedule_bench::run(iterations) {
                println!(
                    "{:<66} median {:>10.3?}  max {:>10.3?}  {}",
                    figure.case, figure.median, figure.max, figure.outcome
                );
            }
            ExitCode::SUCCESS
        }
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

fn read_admin_password() -> Result<String, String> {
    if let Ok(password) = std::env::var("DOCKET_ADMIN_PASSWORD") {
        return Ok(password);
    }
    let first = rpassword::prompt_password("Password: ")
        .map_err(|e| format!("cannot read the password: {e}"))?;
    let second = rpassword::prompt_password("Repeat password: ")
        .map_err(|e| format!("cannot read the password: {e}"))?;
    if first != second {
        return Err("the passwords differ".to_owned());
    }
    Ok(first)
}

/// Opens the database the way a server start does (migrating when `AUTO_MIGRATE` is on).
async fn open_store(config: &Config) -> Result<Store, String> {
    let store = Store::connect(config).await.map_err(|e| e.to_string())?;
    let status = if config.auto_migrate {
        store.migrate().await
    } else {
        store.ensure_not_too_new().await
    };
    match status {
        Ok(status) if status.is_current() => Ok(store),
        Ok(_) => Err("database migrations are pending; run `docket migrate` first".to_owned()),
        Err(e) => Err(e.to_string()),
    }
}

/// Opens a database that must exist and be migrated already, for commands that only read: they
/// fail instead of creating an empty database and reporting on it.
async fn open_existing_store(config: &Config) -> Result<Store, String> {
    let store = Store::connect_existing(config)
        .await
        .map_err(|e| e.to_string())?;
    match store.ensure_not_too_new().await {
        Ok(status) if status.database_version.is_none() => Err(format!(
            "the database at DATABASE_URL={} holds no Docket data (it was never migrated)",
            crate::config::redact_url(config.database_url.expose())
        )),
        Ok(status) if status.is_current() => Ok(store),
        Ok(_) => Err("database migrations are pending; run `docket migrate` first".to_owned()),
        Err(e) => Err(e.to_string()),
    }
}

async fn admin_create(
    config: Config,
    email: &str,
    tenant: &str,
    name: Option<&str>,
    platform_admin: bool,
) -> ExitCode {
    let result = async {
        let password = read_admin_password()?;
        let store = open_store(&config).await?;
        let created =
            admin::create_admin(&store, email, tenant, name, platform_admin, &password).await;
        store.close().await;
        created
    }
    .await;
    match result {
        Ok(created) => {
            println!(
                "created {} {} in tenant {}{}",
                if created.platform_admin {
                    "platform admin"
                } else {
                    "admin"
                },
                created.email,
                created.tenant_slug,
                if created.tenant_created {
                    " (new tenant)"
                } else {
                    ""
                }
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("docket: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn audit_verify(config: Config, tenant: Option<&str>) -> ExitCode {
    let result = async {
        let store = open_existing_store(&config).await?;
        let reports = admin::verify_audit(&store, tenant).await;
        store.close().await;
        reports
    }
    .await;
    match result {
        Ok(reports) => {
            let mut all_valid = true;
            for (chain, report) in reports {
                all_valid &= report.valid;
                match &report.problem {
                    None => println!(
                        "{chain}: ok, {} records, head {}",
                        report.records,
                        report.head_hash.unwrap_or_default()
                    ),
                    Some(problem) => println!(
                        "{chain}: BROKEN at record {}: {problem}",
                        report.first_invalid_seq.unwrap_or_default()
                    ),
                }
            }
            if all_valid {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("docket: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn backup(config: Config, output: Option<PathBuf>) -> ExitCode {
    match crate::backup::backup(&config, output).await {
        Ok(report) => {
            print!("{report}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("docket: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn restore(config: Config, file: PathBuf, force: bool) -> ExitCode {
    match crate::backup::restore(&config, &file, force).await {
        Ok(report) => {
            print!("{report}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("docket: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn bench_queue(
    config: Config,
    jobs: usize,
    workers: usize,
    keys: usize,
    tasks: usize,
    enqueue_first: bool,
) -> ExitCode {
    let result = async {
        let store = open_store(&config).await?;
        let queue = crate::queue::Queue::new(
            store.clone(),
            crate::queue::Settings::from_config(&config),
            crate::events::EventBus::new(None),
        );
        let report = crate::queue::bench::run(&queue, jobs, workers, keys, tasks, enqueue_first)
            .await
            .map_err(|e| e.to_string());
        store.close().await;
        report
    }
    .await;
    match result {
        Ok(report) => {
            println!(
                "backend                   {}",
                if config.database_url.expose().starts_with("sqlite") {
                    "sqlite"
                } else {
                    "postgres"
                }
            );
            println!("{report}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("docket: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn bench_knowledge(
    config: Config,
    documents: usize,
    kilobytes: usize,
    searches: usize,
) -> ExitCode {
    // Ingestion runs in this process: its warnings and errors (LOG_LEVEL) explain a failed run.
    telemetry::init_logging(&config);
    let result = async {
        let state = AppState::initialise(config)
            .await
            .map_err(|e| e.to_string())?;
        let report = crate::knowledge::bench::run(&state, documents, kilobytes, searches).await;
        state.store.close().await;
        report
    }
    .await;
    match result {
        Ok(report) => {
            println!("{report}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("docket: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn bench_scheduler(config: Config, tasks: usize, seconds: u64) -> ExitCode {
    let result = async {
        let state = AppState::initialise(config)
            .await
            .map_err(|e| e.to_string())?;
        let report = crate::scheduler::bench::run(&state, tasks, seconds)
            .await
            .map_err(|e| e.to_string());
        state.store.close().await;
        report
    }
    .await;
    match result {
        Ok(report) => {
            println!("{report}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("docket: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn bench_chaos(config: Config, args: crate::chaos::Args) -> ExitCode {
    let result = async {
        let program = std::env::current_exe()
            .map_err(|e| format!("cannot find this binary to start workers from: {e}"))?;
        let store = open_store(&config).await?;
        let options = crate::chaos::Options::from_args(program, &args);
        // Interrupted, the run is dropped, and with it the processes it started.
        let report = tokio::select! {
            report = crate::chaos::run(&config, &store, options) => report,
            _ = tokio::signal::ctrl_c() => Err("interrupted".to_owned()),
        };
        store.close().await;
        report
    }
    .await;
    match result {
        Ok(report) => {
            println!("{report}");
            if report.problems().is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("docket: {e}");
            ExitCode::FAILURE
        }
    }
}
