//! Process runtime: shared state, start-up checks, the roles a process plays and graceful shutdown.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;

use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::auth::password::Hashing;
use crate::auth::rate_limit::RateLimiter;
use crate::config::{Config, Secret};
use crate::events::EventBus;
use crate::nodes::{self, Node};
use crate::queue::worker::{Registry, Worker};
use crate::queue::{self, Queue};
use crate::scheduler::{self, Scheduler};
use crate::store::{Store, StoreError};
use crate::{audit, http, telemetry};

const PURGE_INTERVAL: Duration = Duration::from_secs(60 * 60);

/// Heartbeats older than this mark a process as gone; its registry row is then pruned.
const NODE_RETENTION: Duration = Duration::from_secs(24 * 60 * 60);

/// What a process does. `All` is the embedded default; the others scale out separately.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    All,
    Api,
    Worker,
    Scheduler,
}

impl Role {
    pub const VARIANTS: [Role; 4] = [Self::All, Self::Api, Self::Worker, Self::Scheduler];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::All => "all",
            Self::Api => "api",
            Self::Worker => "worker",
            Self::Scheduler => "scheduler",
        }
    }

    /// Whether this process executes queued jobs.
    pub fn runs_worker(self) -> bool {
        matches!(self, Self::All | Self::Worker)
    }

    /// Whether this process runs the scheduler (and periodic maintenance such as audit retention).
    pub fn runs_scheduler(self) -> bool {
        matches!(self, Self::All | Self::Scheduler)
    }

    /// Whether this process serves the public API (the others serve only health and metrics).
    pub fn serves_api(self) -> bool {
        matches!(self, Self::All | Self::Api)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot read or create the development secret key at {path}: {source}")]
    SecretKey {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Objects(#[from] crate::objects::ObjectsError),
    #[error("CHROMA_URL: {0}")]
    Vectors(#[from] crate::knowledge::vectors::VectorError),
    #[error("the HTTP server failed: {0}")]
    Serve(#[source] std::io::Error),
}

/// Everything request handlers and background loops share. Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub config: Arc<Config>,
    pub store: Store,
    pub redis: Option<redis::Client>,
    pub secret_key: Secret,
    pub metrics: PrometheusHandle,
    pub queue: Queue,
    pub events: EventBus,
    /// Vector store and embedding settings of the knowledge base.
    pub knowledge: Arc<crate::knowledge::Knowledge>,
    /// The tools pipeline steps can use.
    pub tools: Arc<crate::pipeline::tools::Tools>,
    /// Where attachments are stored (`OBJECT_STORE_URL`).
    pub objects: Arc<dyn object_store::ObjectStore>,
    /// Wakes this process's scheduler when tasks change.
    pub scheduler_wake: Arc<tokio::sync::Notify>,
    /// Job handlers by kind, for this process's worker.
    pub job_handlers: Arc<Registry>,
    /// Per-tenant and per-key request limits and login failure counters (Redis when configured).
    pub rate_limiter: Arc<RateLimiter>,
    /// Where passwords are hashed and verified: a bounded number at once.
    pub hashing: Arc<Hashing>,
    /// Cancelled when the process begins shutting down; readiness reports 503 from then on.
    pub shutdown: CancellationToken,
}

impl AppState {
    /// Opens the database (and Redis client), applies migrations when `AUTO_MIGRATE` is on and
    /// refuses a schema newer than this binary.
    pub async fn initialise(config: Config) -> Result<Self, StartError> {
        crate::tls::install_crypto_provider();
        let store = Store::connect(&config).await?;
        if config.auto_migrate {
            let status = store.migrate().await?;
            tracing::info!(schema_version = status.binary_version, "database migrated");
        } else {
            match store.ensure_not_too_new().await {
                Ok(status) if !status.is_current() => tracing::warn!(
                    pending = status.pending,
                    "database migrations are pending; run `docket migrate` (readiness reports 503 until then)"
                ),
                Ok(_) => {}
                // PostgreSQL may be briefly unreachable at start; readiness reports it until it returns.
                Err(StoreError::Sqlx(e)) => {
                    tracing::warn!(error = %e, "database not reachable at start")
                }
                Err(e) => return Err(e.into()),
            }
        }
        let (secret_key, generated) =
            config
                .resolve_secret_key()
                .map_err(|source| StartError::SecretKey {
                    path: config.dev_secret_key_path().display().to_string(),
                    source,
                })?;
        if generated {
            tracing::warn!(
                path = %config.dev_secret_key_path().display(),
                "SECRET_KEY is not set: generated a development key; set SECRET_KEY in production"
            );
        } else if config.secret_key.is_none() {
            tracing::warn!(
                "SECRET_KEY is not set: using the development key stored under DATA_DIR"
            );
        }
        // TOTP secrets written before they were encrypted at rest are sealed now; a failure (say,
        // migrations still pending) is retried at the next start, and such rows still work meanwhile.
        match crate::auth::mfa::seal_plaintext_secrets(&store, &secret_key).await {
            Ok(0) => {}
            Ok(sealed) => tracing::info!(sealed, "encrypted plaintext TOTP secrets"),
            Err(e) => tracing::warn!(error = %e, "could not encrypt plaintext TOTP secrets"),
        }
        // The URL was validated with the configuration, so opening the client cannot fail here.
        let redis = config
            .redis_url
            .as_ref()
            .and_then(|url| redis::Client::open(url.expose()).ok());
        let rate_limiter = Arc::new(match &redis {
            Some(client) => RateLimiter::redis(client.clone()),
            None => RateLimiter::in_process(),
        });
        let hashing = Arc::new(Hashing::new(
            config.password_hash_concurrency,
            config.password_hash_queue,
        ));
        let events = EventBus::new(redis.clone());
        let objects = crate::objects::open(&config.object_store_url)?;
        let queue = Queue::new(
            store.clone(),
            queue::Settings::from_config(&config),
            events.clone(),
        );
        Ok(Self {
            tools: Arc::new(crate::pipeline::tools::Tools::builtin(&config)),
            knowledge: Arc::new(crate::knowledge::Knowledge::new(&config, &store)?),
            queue,
            events,
            objects,
            job_handlers: Arc::new(job_handlers()),
            scheduler_wake: Arc::new(tokio::sync::Notify::new()),
            config: Arc::new(config),
            store,
            redis,
            rate_limiter,
            hashing,
            secret_key,
            metrics: telemetry::metrics_handle(),
            shutdown: CancellationToken::new(),
        })
    }
}

/// Every job kind this binary can run.
fn job_handlers() -> Registry {
    let mut registry = Registry::builtin();
    scheduler::register_handlers(&mut registry);
    crate::knowledge::register_handlers(&mut registry);
    registry
}

/// A server ready to run: the listener is open (so the address is known) but not yet serving.
pub struct Server {
    state: AppState,
    role: Role,
    listener: TcpListener,
    router: Router,
}

impl Server {
    /// Listens on `HOST:PORT` and serves the router of `role`.
    pub async fn bind(state: AppState, role: Role) -> Result<Self, StartError> {
        let addr = format!("{}:{}", state.config.host, state.config.port);
        let listener = TcpListener::bind(&addr)
            .await
            .map_err(|source| StartError::Bind { addr, source })?;
        let router = http::router(state.clone(), role);
        Ok(Self::new(state, role, listener, router))
    }

    /// Serves `router` on an already open listener.
    pub fn new(state: AppState, role: Role, listener: TcpListener, router: Router) -> Self {
        Self {
            state,
            role,
            listener,
            router,
        }
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `state.shutdown` is cancelled, then lets in-flight requests finish for up to
    /// `SHUTDOWN_GRACE_SECONDS` before giving up on them.
    pub async fn run(self) -> Result<(), StartError> {
        let Self {
            state,
            role,
            listener,
            router,
        } = self;
        let grace = state.config.shutdown_grace;
        let shutdown = state.shutdown.clone();
        let node = Node::this_process(role.as_str(), crate::clock::now());
        if let Err(e) = nodes::register(&state.store, &node).await {
            tracing::warn!(error = %e, "cannot register this process; will retry with the heartbeat");
        }
        let heartbeat = tokio::spawn(heartbeat_loop(
            state.store.clone(),
            node.clone(),
            shutdown.clone(),
        ));
        let worker = role.runs_worker().then(|| {
            let worker = Worker::new(
                state.queue.clone(),
                state.job_handlers.clone(),
                node.id.clone(),
            )
            .with_app(state.clone());
            tokio::spawn(worker.run(shutdown.clone(), grace))
        });
        let purge = role
            .runs_scheduler()
            .then(|| tokio::spawn(purge_loop(state.clone())));
        let review_sweep = role
            .runs_scheduler()
            .then(|| tokio::spawn(crate::review::sweep_loop(state.clone())));
        let scheduler = role
            .runs_scheduler()
            .then(|| tokio::spawn(Scheduler::new(state.clone()).run(shutdown.clone())));

        tracing::info!(
            role = role.as_str(),
            address = %listener.local_addr().map_err(StartError::Serve)?,
            version = env!("CARGO_PKG_VERSION"),
            "docket started"
        );
        let server = axum::serve(
            listener,
            router.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(shutdown.clone().cancelled_owned());
        let mut server = std::pin::pin!(server.into_future());

        let result = tokio::select! {
            result = &mut server => result.map_err(StartError::Serve),
            () = async { shutdown.cancelled().await; tokio::time::sleep(grace).await } => {
                tracing::warn!(grace_seconds = grace.as_secs(), "in-flight requests did not finish within the grace period; closing them");
                Ok(())
            }
        };
        if let Some(worker) = worker {
            // The worker drains on its own within the grace period, then hands back what is left.
            let _ = worker.await;
        }
        heartbeat.abort();
        if let Some(purge) = purge {
            purge.abort();
        }
        if let Some(sweep) = review_sweep {
            let _ = sweep.await;
        }
        if let Some(scheduler) = scheduler {
            let _ = scheduler.await;
        }
        if let Err(e) = nodes::deregister(&state.store, &node.id).await {
            tracing::warn!(error = %e, "cannot deregister this process");
        }
        state.store.close().await;
        tracing::info!("docket stopped");
        result
    }
}

/// Hourly: purges audit records past `AUDIT_RETENTION_DAYS` and dedupe keys whose window ended.
/// Concurrent purges from several schedulers are harmless: they delete the same expired rows.
async fn purge_loop(state: AppState) {
    let mut ticker = tokio::time::interval(PURGE_INTERVAL);
    loop {
        tokio::select! {
            () = state.shutdown.cancelled() => return,
            _ = ticker.tick() => {}
        }
        let now = crate::clock::now();
        match audit::purge_expired(&state.store, state.config.audit_retention_days, now).await {
            Ok(0) => {}
            Ok(removed) => tracing::info!(removed, "expired audit records purged"),
            Err(e) => tracing::warn!(error = %e, "audit retention purge failed"),
        }
        if let Err(e) = queue::purge_expired_dedupe_keys(&state.store, now).await {
            tracing::warn!(error = %e, "purging expired dedupe keys failed");
        }
    }
}

async fn heartbeat_loop(store: Store, node: Node, shutdown: CancellationToken) {
    let mut ticker = tokio::time::interval(nodes::HEARTBEAT_INTERVAL);
    ticker.tick().await;
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = ticker.tick() => {}
        }
        let now = crate::clock::now();
        if let Err(e) = nodes::heartbeat(&store, &node, now).await {
            tracing::warn!(error = %e, "heartbeat failed");
            continue;
        }
        let cutoff =
            now - chrono::Duration::from_std(NODE_RETENTION).unwrap_or(chrono::Duration::days(1));
        if let Err(e) = nodes::prune(&store, cutoff).await {
            tracing::warn!(error = %e, "pruning stale processes failed");
        }
    }
}

/// Cancels `token` on SIGTERM or SIGINT (Ctrl-C).
pub fn cancel_on_signal(token: CancellationToken) {
    tokio::spawn(async move {
        let ctrl_c = async {
            if let Err(e) = tokio::signal::ctrl_c().await {
                tracing::error!(error = %e, "cannot listen for Ctrl-C");
                std::future::pending::<()>().await;
            }
        };
        #[cfg(unix)]
        let terminate = async {
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(mut sig) => {
                    sig.recv().await;
                }
                Err(e) => {
                    tracing::error!(error = %e, "cannot listen for SIGTERM");
                    std::future::pending::<()>().await;
                }
            }
        };
        #[cfg(not(unix))]
        let terminate = std::future::pending::<()>();
        tokio::select! {
            () = ctrl_c => {}
            () = terminate => {}
        }
        tracing::info!("shutdown requested; draining");
        token.cancel();
    });
}
