//! Configuration: read from the environment (plus an optional `.env` file) once at start,
//! validated into one [`Config`]. A bad value is reported as a single line naming the variable.

use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::PgConnectOptions;
use sqlx::sqlite::SqliteConnectOptions;

/// Minimum length of `SECRET_KEY`; HS256 keys shorter than the hash output are weak.
pub const MIN_SECRET_KEY_BYTES: usize = 32;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Environment {
    Development,
    Production,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Json,
    Pretty,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DatabaseKind {
    Sqlite,
    Postgres,
}

/// A value that must never be printed or logged.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

#[derive(Debug, Clone)]
pub struct Config {
    pub environment: Environment,
    pub host: String,
    pub port: u16,
    pub database_url: Secret,
    pub database_kind: DatabaseKind,
    pub db_pool_size: u32,
    pub redis_url: Option<Secret>,
    pub data_dir: PathBuf,
    pub log_level: String,
    pub log_format: LogFormat,
    /// `None` in development when unset: a key is then generated under `data_dir`.
    pub secret_key: Option<Secret>,
    pub api_v1_prefix: String,
    pub cors_origins: Vec<String>,
    pub healthcheck_path: String,
    pub auto_migrate: bool,
    pub shutdown_grace: Duration,
    pub request_timeout: Duration,
    pub max_body_bytes: usize,
    pub metrics_token: Option<Secret>,
    pub access_token_ttl: Duration,
    pub refresh_token_ttl: Duration,
    pub session_idle_timeout: Duration,
    /// Requests one user may make per minute (their own budget, not their tenant's).
    pub rate_limit_per_minute: u32,
    /// Requests one API key may make per minute.
    pub api_key_rate_limit_per_minute: u32,
    /// Background console refreshes (`X-Docket-Live: 1`) one user may make per minute, counted apart
    /// from their own budget so open live pages cannot starve the desk.
    pub live_rate_limit_per_minute: u32,
    /// Requests all users and keys of one tenant may make per minute together: an outer bound.
    pub tenant_rate_limit_per_minute: u32,
    /// Password hashes (Argon2, 19 MiB each) computed at once; more wait for a free slot.
    pub password_hash_concurrency: usize,
    /// How long a password check waits for a slot before the request gets 503 `busy`.
    pub password_hash_queue: Duration,
    /// Failed sign-ins one address may make per 15 minutes before it gets 429.
    pub login_failures_per_ip: u32,
    /// Rejected bearer tokens or API keys one address may present per 15 minutes before 429.
    pub auth_failures_per_ip: u32,
    /// Open `GET /events/stream` responses one user or API key may hold in one process.
    pub event_streams_per_principal: usize,
    /// How often an open event stream re-checks the session or key behind it (at most a minute).
    pub event_stream_recheck: Duration,
    /// Proxies whose `X-Forwarded-For` is believed; requests from anywhere else use the peer address.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    pub audit_retention_days: u32,
    /// How long a claimed job stays leased without a heartbeat before another worker may take it.
    pub worker_lease: Duration,
    /// Fallback poll interval when no wake-up notification arrives.
    pub worker_poll_interval: Duration,
    /// Upper bound of the retry backoff.
    pub worker_backoff_max_delay: Duration,
    /// Retries after the first attempt, unless a job says otherwise.
    pub worker_max_retries: u32,
    /// Jobs one worker process runs at once.
    pub worker_concurrency: u32,
    /// Default for tasks: an occurrence found later than this after its time is recorded as missed.
    pub scheduler_misfire_grace: Duration,
    /// The default decision policy: amounts at or above this need two reviewers.
    pub dual_control_threshold: rust_decimal::Decimal,
    /// The default decision policy: amounts at or above this get high priority.
    pub high_priority_threshold: rust_decimal::Decimal,
    pub default_sla_hours: u32,
    /// Whether an AI assessment may decide a case on its own (never under dual control).
    pub ai_enabled: bool,
    pub ai_confidence_threshold: f64,
    /// How long a reviewer holds a claimed case without acting before it returns to the queue.
    pub review_lease: Duration,
    /// How often the SLA sweep looks for breached cases.
    pub sla_sweep_interval: Duration,
    /// Where attachments live: `file://<dir>` (relative to the working directory) or `s3://bucket`.
    pub object_store_url: String,
    pub max_attachment_bytes: usize,
    /// Hosts (`name`, `*.suffix`, IP or CIDR) the `http.request` tool may reach even when they
    /// resolve to private or loopback addresses; public addresses are always allowed.
    pub http_tool_allowed_hosts: Vec<String>,
    pub http_tool_max_response_bytes: usize,
    /// An OpenAI-compatible API (`…/v1`) for `llm.chat` and `llm.embed`.
    pub llm_base_url: Option<String>,
    pub llm_api_key: Option<Secret>,
    pub llm_model: String,
    pub llm_embedding_model: String,
    pub llm_timeout: Duration,
    /// Tokens a tenant may use per calendar month (UTC); 0 means no limit.
    pub llm_monthly_token_budget: u64,
    /// Prices per model, for the cost of each call; a model not listed has no known cost.
    pub llm_prices: Vec<ModelPrice>,
    /// A case waiting longer than this for its assessment pipeline goes to people without one.
    pub assessment_timeout: Duration,
    /// Environment variables pipelines may read as `${env.NAME}`.
    pub pipeline_env_allowlist: Vec<String>,
    /// How often a pipeline waiting for a wake-up (a review) checks anyway, in case one was missed.
    pub pipeline_wait_recheck_seconds: u64,
    /// How many jobs deep `tasks.run` and `events.publish` may start further jobs (a job started by
    /// one at depth d has depth d+1), so a pipeline that starts itself stops.
    pub pipeline_call_depth: u32,
    /// Jobs a tenant may have queued or running at once; 0 means no limit.
    pub tenant_queued_jobs_max: u64,
    /// Jobs a tenant may enqueue per minute; 0 means no limit.
    pub tenant_enqueues_per_minute: u64,
    /// `EMBEDDINGS`: off embeds nothing although an endpoint is configured.
    pub embeddings: bool,
    /// OpenAI-compatible `/embeddings` for the knowledge base; defaults to `LLM_BASE_URL`; `None`
    /// when `EMBEDDINGS` is off.
    pub embedding_base_url: Option<String>,
    pub embedding_api_key: Option<Secret>,
    pub embedding_model: String,
    /// ChromaDB server for knowledge vectors; unset keeps vectors in the database.
    pub chroma_url: Option<String>,
    pub chroma_token: Option<Secret>,
    /// Embedding requests in flight per process.
    pub embedding_concurrency: usize,
    /// Cosine similarity from which a retrieved chunk counts as relevant to a question
    /// (`POST /collections/{id}/ask`); depends on the embedding model.
    pub ask_min_similarity: f64,
    pub knowledge_chunk_tokens: usize,
    pub knowledge_chunk_overlap: usize,
    pub max_document_bytes: usize,
    /// What extracting one document's text may use (`EXTRACT_*`).
    pub extract_limits: crate::knowledge::extract::Limits,
    pub extract_timeout: Duration,
}

/// A configuration problem, always tied to the variable that caused it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid configuration: {var}: {message}")]
pub struct ConfigError {
    pub var: &'static str,
    pub message: String,
}

impl ConfigError {
    fn new(var: &'static str, message: impl Into<String>) -> Self {
        Self {
            var,
            message: message.into(),
        }
    }
}

impl Config {
    /// Loads `.env` (if present in the working directory) and then reads the process environment.
    /// Variables already set in the environment win over `.env`.
    pub fn from_env() -> Result<Self, ConfigError> {
        match dotenvy::dotenv() {
            Ok(_) => {}
            Err(e) if e.not_found() => {}
            Err(e) => return Err(ConfigError::new(".env", e.to_string())),
        }
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Builds the configuration from any variable source; the environment in production, a map in tests.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let get = |name: &str| lookup(name).filter(|v| !v.trim().is_empty());

        let environment = match get("ENVIRONMENT").as_deref().map(str::trim) {
            None | Some("development") => Environment::Development,
            Some("production") => Environment::Production,
            Some(other) => {
                return Err(ConfigError::new(
                    "ENVIRONMENT",
                    format!("must be \"development\" or \"production\", got {other:?}"),
                ));
            }
        };
        let production = environment == Environment::Production;

        let host = get("HOST").unwrap_or_else(|| "127.0.0.1".to_owned());
        if host != "localhost" && host.parse::<IpAddr>().is_err() {
            return Err(ConfigError::new(
                "HOST",
                format!("must be an IP address (e.g. 0.0.0.0) or \"localhost\", got {host:?}"),
            ));
        }
        let port = parse_number::<u16>("PORT", get("PORT"), 8000)?;
        if port == 0 {
            return Err(ConfigError::new("PORT", "must be between 1 and 65535"));
        }

        let data_dir = PathBuf::from(get("DATA_DIR").unwrap_or_else(|| "data".to_owned()));
        let database_url =
            get("DATABASE_URL").unwrap_or_else(|| "sqlite://data/docket.db".to_owned());
        let database_kind = database_kind(&database_url)?;
        let db_pool_size = parse_number::<u32>("DB_POOL_SIZE", get("DB_POOL_SIZE"), 10)?;
        if db_pool_size == 0 {
            return Err(ConfigError::new("DB_POOL_SIZE", "must be at least 1"));
        }

        let redis_url = get("REDIS_URL")
            .map(|url| validate_redis_url(&url).map(|()| Secret(url)))
            .transpose()?;

        let log_level = get("LOG_LEVEL").unwrap_or_else(|| "info".to_owned());
        validate_log_level(&log_level)?;
        let log_format = match get("LOG_FORMAT").as_deref() {
            None if production => LogFormat::Json,
            None => LogFormat::Pretty,
            Some("json") => LogFormat::Json,
            Some("pretty") => LogFormat::Pretty,
            Some(other) => {
                return Err(ConfigError::new(
                    "LOG_FORMAT",
                    format!("must be \"json\" or \"pretty\", got {other:?}"),
                ));
            }
        };

        let secret_key = match get("SECRET_KEY") {
            Some(key) if production && key.len() < MIN_SECRET_KEY_BYTES => {
                return Err(ConfigError::new(
                    "SECRET_KEY",
                    format!(
                        "must be at least {MIN_SECRET_KEY_BYTES} bytes in production (got {}); generate one with `openssl rand -hex 32`",
                        key.len()
                    ),
                ));
            }
            Some(key) => Some(Secret(key)),
            None if production => {
                return Err(ConfigError::new(
                    "SECRET_KEY",
                    "is required in production; generate one with `openssl rand -hex 32`",
                ));
            }
            None => None,
        };

        let api_v1_prefix = get("API_V1_PREFIX").unwrap_or_else(|| "/api/v1".to_owned());
        validate_path_prefix("API_V1_PREFIX", &api_v1_prefix)?;
        let healthcheck_path = get("HEALTHCHECK_PATH").unwrap_or_else(|| "/health".to_owned());
        validate_path_prefix("HEALTHCHECK_PATH", &healthcheck_path)?;
        // An extra health route must not collide with the API's or the console's routes.
        let under = |prefix: &str| {
            healthcheck_path == prefix || healthcheck_path.starts_with(&format!("{prefix}/"))
        };
        if under(&api_v1_prefix)
            || under("/console")
            || ["/docs", "/redoc"].contains(&healthcheck_path.as_str())
        {
            return Err(ConfigError::new(
                "HEALTHCHECK_PATH",
                "must not be under API_V1_PREFIX or /console, nor /docs or /redoc",
            ));
        }

        let cors_origins = match get("CORS_ORIGINS") {
            None => Vec::new(),
            Some(raw) => parse_cors_origins(&raw)?,
        };

        let auto_migrate = parse_bool("AUTO_MIGRATE", get("AUTO_MIGRATE"), !production)?;
        let shutdown_grace = Duration::from_secs(parse_number::<u64>(
            "SHUTDOWN_GRACE_SECONDS",
            get("SHUTDOWN_GRACE_SECONDS"),
            30,
        )?);
        let request_timeout = Duration::from_secs(parse_number::<u64>(
            "REQUEST_TIMEOUT_SECONDS",
            get("REQUEST_TIMEOUT_SECONDS"),
            30,
        )?);
        if request_timeout.is_zero() {
            return Err(ConfigError::new(
                "REQUEST_TIMEOUT_SECONDS",
                "must be at least 1",
            ));
        }
        let max_body_bytes =
            parse_number::<usize>("MAX_BODY_BYTES", get("MAX_BODY_BYTES"), 2 * 1024 * 1024)?;
        if max_body_bytes == 0 {
            return Err(ConfigError::new("MAX_BODY_BYTES", "must be at least 1"));
        }
        let metrics_token = get("METRICS_TOKEN").map(Secret);
        let access_minutes = positive::<u64>(
            "ACCESS_TOKEN_EXPIRE_MINUTES",
            get("ACCESS_TOKEN_EXPIRE_MINUTES"),
            30,
        )?;
        let refresh_days = positive::<u64>(
            "REFRESH_TOKEN_EXPIRE_DAYS",
            get("REFRESH_TOKEN_EXPIRE_DAYS"),
            7,
        )?;
        let idle_minutes = positive::<u64>(
            "SESSION_TIMEOUT_MINUTES",
            get("SESSION_TIMEOUT_MINUTES"),
            30,
        )?;
        let rate_limit_per_minute =
            positive::<u32>("RATE_LIMIT_PER_MINUTE", get("RATE_LIMIT_PER_MINUTE"), 600)?;
        let api_key_rate_limit_per_minute = positive::<u32>(
            "API_KEY_RATE_LIMIT_PER_MINUTE",
            get("API_KEY_RATE_LIMIT_PER_MINUTE"),
            1200,
        )?;
        let live_rate_limit_per_minute = positive::<u32>(
            "LIVE_RATE_LIMIT_PER_MINUTE",
            get("LIVE_RATE_LIMIT_PER_MINUTE"),
            600,
        )?;
        let tenant_rate_limit_per_minute = positive::<u32>(
            "TENANT_RATE_LIMIT_PER_MINUTE",
            get("TENANT_RATE_LIMIT_PER_MINUTE"),
            20_000,
        )?;
        let password_hash_concurrency = positive::<usize>(
            "PASSWORD_HASH_CONCURRENCY",
            get("PASSWORD_HASH_CONCURRENCY"),
            std::thread::available_parallelism().map_or(1, std::num::NonZero::get),
        )?;
        let password_hash_queue = seconds(
            "PASSWORD_HASH_QUEUE_SECONDS",
            get("PASSWORD_HASH_QUEUE_SECONDS"),
            2.0,
        )?;
        let login_failures_per_ip =
            positive::<u32>("LOGIN_FAILURES_PER_IP", get("LOGIN_FAILURES_PER_IP"), 20)?;
        let auth_failures_per_ip =
            positive::<u32>("AUTH_FAILURES_PER_IP", get("AUTH_FAILURES_PER_IP"), 100)?;
        let event_streams_per_principal = positive::<usize>(
            "EVENT_STREAMS_PER_PRINCIPAL",
            get("EVENT_STREAMS_PER_PRINCIPAL"),
            8,
        )?;
        let recheck_seconds = positive::<u64>(
            "EVENT_STREAM_RECHECK_SECONDS",
            get("EVENT_STREAM_RECHECK_SECONDS"),
            30,
        )?;
        if recheck_seconds > 60 {
            return Err(ConfigError::new(
                "EVENT_STREAM_RECHECK_SECONDS",
                format!("must be 1-60, got {recheck_seconds}"),
            ));
        }
        let trusted_proxies = match get("TRUSTED_PROXIES") {
            None => Vec::new(),
            Some(raw) => parse_cidr_list("TRUSTED_PROXIES", &raw)?,
        };
        let audit_retention_days =
            positive::<u32>("AUDIT_RETENTION_DAYS", get("AUDIT_RETENTION_DAYS"), 2555)?;
        let worker_lease = Duration::from_secs(positive::<u64>(
            "WORKER_LEASE_SECONDS",
            get("WORKER_LEASE_SECONDS"),
            60,
        )?);
        let worker_poll_interval =
            seconds("WORKER_POLL_INTERVAL", get("WORKER_POLL_INTERVAL"), 0.5)?;
        let worker_backoff_max_delay = seconds(
            "WORKER_BACKOFF_MAX_DELAY",
            get("WORKER_BACKOFF_MAX_DELAY"),
            60.0,
        )?;
        let worker_max_retries =
            parse_number::<u32>("WORKER_MAX_RETRIES", get("WORKER_MAX_RETRIES"), 3)?;
        let worker_concurrency =
            positive::<u32>("WORKER_CONCURRENCY", get("WORKER_CONCURRENCY"), 8)?;
        let scheduler_misfire_grace = Duration::from_secs(parse_number::<u64>(
            "SCHEDULER_MISFIRE_GRACE_TIME",
            get("SCHEDULER_MISFIRE_GRACE_TIME"),
            30,
        )?);
        let dual_control_threshold = decimal(
            "DUAL_CONTROL_THRESHOLD",
            get("DUAL_CONTROL_THRESHOLD"),
            "5000.0",
        )?;
        let high_priority_threshold = decimal(
            "HIGH_PRIORITY_THRESHOLD",
            get("HIGH_PRIORITY_THRESHOLD"),
            "10000.0",
        )?;
        let default_sla_hours = positive::<u32>("DEFAULT_SLA_HOURS", get("DEFAULT_SLA_HOURS"), 4)?;
        let ai_enabled = parse_bool("AI_ENABLED", get("AI_ENABLED"), false)?;
        let ai_confidence_threshold = parse_number::<f64>(
            "AI_CONFIDENCE_THRESHOLD",
            get("AI_CONFIDENCE_THRESHOLD"),
            0.7,
        )?;
        if !(0.0..=1.0).contains(&ai_confidence_threshold) {
            return Err(ConfigError::new(
                "AI_CONFIDENCE_THRESHOLD",
                "must be between 0 and 1",
            ));
        }
        let review_lease = Duration::from_secs(
            60 * positive::<u64>("REVIEW_LEASE_MINUTES", get("REVIEW_LEASE_MINUTES"), 30)?,
        );
        let sla_sweep_interval = seconds("SLA_SWEEP_INTERVAL", get("SLA_SWEEP_INTERVAL"), 60.0)?;
        let object_store_url = get("OBJECT_STORE_URL")
            .unwrap_or_else(|| format!("file://{}/objects", data_dir.display()));
        if !(object_store_url.starts_with("file://") || object_store_url.starts_with("s3://")) {
            return Err(ConfigError::new(
                "OBJECT_STORE_URL",
                "must be file://<directory> or s3://<bucket>",
            ));
        }
        let max_attachment_bytes =
            positive::<usize>("MAX_ATTACHMENT_MB", get("MAX_ATTACHMENT_MB"), 10)? * 1024 * 1024;

        let list = |raw: Option<String>| -> Vec<String> {
            raw.map(|r| {
                r.split(',')
                    .map(|s| s.trim().to_owned())
                    .filter(|s| !s.is_empty())
                    .collect()
            })
            .unwrap_or_default()
        };
        let http_tool_allowed_hosts = list(get("HTTP_TOOL_ALLOWED_HOSTS"));
        let http_tool_max_response_bytes = positive::<usize>(
            "HTTP_TOOL_MAX_RESPONSE_BYTES",
            get("HTTP_TOOL_MAX_RESPONSE_BYTES"),
            1024 * 1024,
        )?;
        let llm_base_url = get("LLM_BASE_URL")
            .map(|raw| {
                let trimmed = raw.trim().trim_end_matches('/').to_owned();
                match url::Url::parse(&trimmed) {
                    Ok(u) if matches!(u.scheme(), "http" | "https") => Ok(trimmed),
                    _ => Err(ConfigError::new(
                        "LLM_BASE_URL",
                        "must be an http(s) URL such as https://api.openai.com/v1",
                    )),
                }
            })
            .transpose()?;
        let llm_api_key = get("LLM_API_KEY").map(Secret);
        let llm_model = get("LLM_MODEL").unwrap_or_else(|| "gpt-4o-mini".to_owned());
        let llm_embedding_model =
            get("LLM_EMBEDDING_MODEL").unwrap_or_else(|| "text-embedding-3-small".to_owned());
        let llm_timeout = seconds("LLM_TIMEOUT_SECONDS", get("LLM_TIMEOUT_SECONDS"), 60.0)?;
        let llm_monthly_token_budget = parse_number::<u64>(
            "LLM_MONTHLY_TOKEN_BUDGET",
            get("LLM_MONTHLY_TOKEN_BUDGET"),
            0,
        )?;
        let llm_prices = get("LLM_PRICES")
            .map(|raw| parse_prices(&raw))
            .transpose()?
            .unwrap_or_default();
        let assessment_timeout = seconds(
            "ASSESSMENT_TIMEOUT_SECONDS",
            get("ASSESSMENT_TIMEOUT_SECONDS"),
            600.0,
        )?;
        let pipeline_env_allowlist = list(get("PIPELINE_ENV_ALLOWLIST"));
        let http_url = |var: &'static str| -> Result<Option<String>, ConfigError> {
            get(var)
                .map(|raw| {
                    let trimmed = raw.trim().trim_end_matches('/').to_owned();
                    match url::Url::parse(&trimmed) {
                        Ok(u) if matches!(u.scheme(), "http" | "https") => Ok(trimmed),
                        _ => Err(ConfigError::new(var, "must be an http(s) URL")),
                    }
                })
                .transpose()
        };
        // EMBEDDINGS=off: a chat-only provider (no `/embeddings`) still serves answers, lexically.
        let embeddings = parse_bool("EMBEDDINGS", get("EMBEDDINGS"), true)?;
        let embedding_base_url = http_url("EMBEDDING_BASE_URL")?
            .or_else(|| llm_base_url.clone())
            .filter(|_| embeddings);
        let embedding_api_key = get("EMBEDDING_API_KEY")
            .map(Secret)
            .or_else(|| llm_api_key.clone());
        let embedding_model = get("EMBEDDING_MODEL").unwrap_or_else(|| llm_embedding_model.clone());
        let embedding_concurrency =
            positive::<usize>("EMBEDDING_CONCURRENCY", get("EMBEDDING_CONCURRENCY"), 4)?;
        let ask_min_similarity = parse_number::<f64>(
            "KNOWLEDGE_ASK_MIN_SIMILARITY",
            get("KNOWLEDGE_ASK_MIN_SIMILARITY"),
            0.35,
        )?;
        if !(-1.0..=1.0).contains(&ask_min_similarity) {
            return Err(ConfigError::new(
                "KNOWLEDGE_ASK_MIN_SIMILARITY",
                "must be between -1 and 1",
            ));
        }
        let chroma_url = http_url("CHROMA_URL")?;
        let chroma_token = get("CHROMA_TOKEN").map(Secret);
        let knowledge_chunk_tokens =
            positive::<usize>("KNOWLEDGE_CHUNK_TOKENS", get("KNOWLEDGE_CHUNK_TOKENS"), 400)?;
        let knowledge_chunk_overlap = parse_number::<usize>(
            "KNOWLEDGE_CHUNK_OVERLAP",
            get("KNOWLEDGE_CHUNK_OVERLAP"),
            50,
        )?;
        if knowledge_chunk_overlap >= knowledge_chunk_tokens {
            return Err(ConfigError::new(
                "KNOWLEDGE_CHUNK_OVERLAP",
                "must be smaller than KNOWLEDGE_CHUNK_TOKENS",
            ));
        }
        let max_document_bytes =
            positive::<usize>("MAX_DOCUMENT_MB", get("MAX_DOCUMENT_MB"), 20)? * 1024 * 1024;
        let extract_defaults = crate::knowledge::extract::Limits::default();
        let extract_limits = crate::knowledge::extract::Limits {
            max_stream_bytes: positive(
                "EXTRACT_MAX_STREAM_BYTES",
                get("EXTRACT_MAX_STREAM_BYTES"),
                extract_defaults.max_stream_bytes,
            )?,
            max_document_bytes: positive(
                "EXTRACT_MAX_DOCUMENT_BYTES",
                get("EXTRACT_MAX_DOCUMENT_BYTES"),
                extract_defaults.max_document_bytes,
            )?,
            max_text_bytes: positive(
                "EXTRACT_MAX_TEXT_BYTES",
                get("EXTRACT_MAX_TEXT_BYTES"),
                extract_defaults.max_text_bytes,
            )?,
            max_pages: positive(
                "EXTRACT_MAX_PAGES",
                get("EXTRACT_MAX_PAGES"),
                extract_defaults.max_pages,
            )?,
        };
        if extract_limits.max_stream_bytes > extract_limits.max_document_bytes {
            return Err(ConfigError::new(
                "EXTRACT_MAX_STREAM_BYTES",
                "must not be more than EXTRACT_MAX_DOCUMENT_BYTES",
            ));
        }
        let extract_timeout = seconds(
            "EXTRACT_TIMEOUT_SECONDS",
            get("EXTRACT_TIMEOUT_SECONDS"),
            60.0,
        )?;
        let pipeline_wait_recheck_seconds = positive::<u64>(
            "PIPELINE_WAIT_RECHECK_SECONDS",
            get("PIPELINE_WAIT_RECHECK_SECONDS"),
            300,
        )?;
        let pipeline_call_depth =
            parse_number::<u32>("PIPELINE_CALL_DEPTH", get("PIPELINE_CALL_DEPTH"), 8)?;
        let tenant_queued_jobs_max = parse_number::<u64>(
            "TENANT_QUEUED_JOBS_MAX",
            get("TENANT_QUEUED_JOBS_MAX"),
            10_000,
        )?;
        let tenant_enqueues_per_minute = parse_number::<u64>(
            "TENANT_ENQUEUES_PER_MINUTE",
            get("TENANT_ENQUEUES_PER_MINUTE"),
            6_000,
        )?;

        Ok(Self {
            environment,
            host,
            port,
            database_url: Secret(database_url),
            database_kind,
            db_pool_size,
            redis_url,
            data_dir,
            log_level,
            log_format,
            secret_key,
            api_v1_prefix,
            cors_origins,
            healthcheck_path,
            auto_migrate,
            shutdown_grace,
            request_timeout,
            max_body_bytes,
            metrics_token,
            access_token_ttl: Duration::from_secs(access_minutes * 60),
            refresh_token_ttl: Duration::from_secs(refresh_days * 24 * 60 * 60),
            session_idle_timeout: Duration::from_secs(idle_minutes * 60),
            rate_limit_per_minute,
            api_key_rate_limit_per_minute,
            live_rate_limit_per_minute,
            tenant_rate_limit_per_minute,
            password_hash_concurrency,
            password_hash_queue,
            login_failures_per_ip,
            auth_failures_per_ip,
            event_streams_per_principal,
            event_stream_recheck: Duration::from_secs(recheck_seconds),
            trusted_proxies,
            audit_retention_days,
            worker_lease,
            worker_poll_interval,
            worker_backoff_max_delay,
            worker_max_retries,
            worker_concurrency,
            scheduler_misfire_grace,
            dual_control_threshold,
            high_priority_threshold,
            default_sla_hours,
            ai_enabled,
            ai_confidence_threshold,
            review_lease,
            sla_sweep_interval,
            object_store_url,
            max_attachment_bytes,
            http_tool_allowed_hosts,
            http_tool_max_response_bytes,
            llm_base_url,
            llm_api_key,
            llm_model,
            llm_embedding_model,
            llm_timeout,
            llm_monthly_token_budget,
            llm_prices,
            assessment_timeout,
            pipeline_env_allowlist,
            pipeline_wait_recheck_seconds,
            pipeline_call_depth,
            tenant_queued_jobs_max,
            tenant_enqueues_per_minute,
            embeddings,
            embedding_base_url,
            embedding_api_key,
            embedding_model,
            embedding_concurrency,
            ask_min_similarity,
            chroma_url,
            chroma_token,
            knowledge_chunk_tokens,
            knowledge_chunk_overlap,
            max_document_bytes,
            extract_limits,
            extract_timeout,
        })
    }

    /// The effective configuration as `NAME=value` lines, secrets and URL passwords redacted.
    pub fn redacted_lines(&self) -> Vec<String> {
        let environment = match self.environment {
            Environment::Development => "development",
            Environment::Production => "production",
        };
        let log_format = match self.log_format {
            LogFormat::Json => "json",
            LogFormat::Pretty => "pretty",
        };
        let secret = |s: &Option<Secret>| match s {
            Some(_) => "<redacted>".to_owned(),
            None => "<unset>".to_owned(),
        };
        let secret_key = match &self.secret_key {
            Some(_) => "<redacted>".to_owned(),
            None => format!(
                "<generated, stored in {}>",
                self.dev_secret_key_path().display()
            ),
        };
        vec![
            format!("ENVIRONMENT={environment}"),
            format!("HOST={}", self.host),
            format!("PORT={}", self.port),
            format!("DATABASE_URL={}", redact_url(self.database_url.expose())),
            format!("DB_POOL_SIZE={}", self.db_pool_size),
            format!(
                "REDIS_URL={}",
                self.redis_url
                    .as_ref()
                    .map_or_else(|| "<unset>".to_owned(), |u| redact_url(u.expose()))
            ),
            format!("DATA_DIR={}", self.data_dir.display()),
            format!("LOG_LEVEL={}", self.log_level),
            format!("LOG_FORMAT={log_format}"),
            format!("SECRET_KEY={secret_key}"),
            format!("API_V1_PREFIX={}", self.api_v1_prefix),
            format!(
                "CORS_ORIGINS={}",
                serde_json::to_string(&self.cors_origins).unwrap_or_default()
            ),
            format!("HEALTHCHECK_PATH={}", self.healthcheck_path),
            format!("AUTO_MIGRATE={}", self.auto_migrate),
            format!("SHUTDOWN_GRACE_SECONDS={}", self.shutdown_grace.as_secs()),
            format!("REQUEST_TIMEOUT_SECONDS={}", self.request_timeout.as_secs()),
            format!("MAX_BODY_BYTES={}", self.max_body_bytes),
            format!("METRICS_TOKEN={}", secret(&self.metrics_token)),
            format!(
                "ACCESS_TOKEN_EXPIRE_MINUTES={}",
                self.access_token_ttl.as_secs() / 60
            ),
            format!(
                "REFRESH_TOKEN_EXPIRE_DAYS={}",
                self.refresh_token_ttl.as_secs() / 86_400
            ),
            format!(
                "SESSION_TIMEOUT_MINUTES={}",
                self.session_idle_timeout.as_secs() / 60
            ),
            format!("RATE_LIMIT_PER_MINUTE={}", self.rate_limit_per_minute),
            format!(
                "API_KEY_RATE_LIMIT_PER_MINUTE={}",
                self.api_key_rate_limit_per_minute
            ),
            format!(
                "LIVE_RATE_LIMIT_PER_MINUTE={}",
                self.live_rate_limit_per_minute
            ),
            format!(
                "TENANT_RATE_LIMIT_PER_MINUTE={}",
                self.tenant_rate_limit_per_minute
            ),
            format!(
                "PASSWORD_HASH_CONCURRENCY={}",
                self.password_hash_concurrency
            ),
            format!(
                "PASSWORD_HASH_QUEUE_SECONDS={}",
                self.password_hash_queue.as_secs_f64()
            ),
            format!("LOGIN_FAILURES_PER_IP={}", self.login_failures_per_ip),
            format!("AUTH_FAILURES_PER_IP={}", self.auth_failures_per_ip),
            format!(
                "EVENT_STREAMS_PER_PRINCIPAL={}",
                self.event_streams_per_principal
            ),
            format!(
                "EVENT_STREAM_RECHECK_SECONDS={}",
                self.event_stream_recheck.as_secs()
            ),
            format!(
                "TRUSTED_PROXIES={}",
                self.trusted_proxies
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(",")
            ),
            format!("AUDIT_RETENTION_DAYS={}", self.audit_retention_days),
            format!("WORKER_LEASE_SECONDS={}", self.worker_lease.as_secs()),
            format!(
                "WORKER_POLL_INTERVAL={}",
                self.worker_poll_interval.as_secs_f64()
            ),
            format!(
                "WORKER_BACKOFF_MAX_DELAY={}",
                self.worker_backoff_max_delay.as_secs_f64()
            ),
            format!("WORKER_MAX_RETRIES={}", self.worker_max_retries),
            format!("WORKER_CONCURRENCY={}", self.worker_concurrency),
            format!(
                "SCHEDULER_MISFIRE_GRACE_TIME={}",
                self.scheduler_misfire_grace.as_secs()
            ),
            format!("DUAL_CONTROL_THRESHOLD={}", self.dual_control_threshold),
            format!("HIGH_PRIORITY_THRESHOLD={}", self.high_priority_threshold),
            format!("DEFAULT_SLA_HOURS={}", self.default_sla_hours),
            format!("AI_ENABLED={}", self.ai_enabled),
            format!("AI_CONFIDENCE_THRESHOLD={}", self.ai_confidence_threshold),
            format!("REVIEW_LEASE_MINUTES={}", self.review_lease.as_secs() / 60),
            format!(
                "SLA_SWEEP_INTERVAL={}",
                self.sla_sweep_interval.as_secs_f64()
            ),
            format!("OBJECT_STORE_URL={}", redact_url(&self.object_store_url)),
            format!(
                "MAX_ATTACHMENT_MB={}",
                self.max_attachment_bytes / (1024 * 1024)
            ),
            format!(
                "HTTP_TOOL_ALLOWED_HOSTS={}",
                self.http_tool_allowed_hosts.join(",")
            ),
            format!(
                "HTTP_TOOL_MAX_RESPONSE_BYTES={}",
                self.http_tool_max_response_bytes
            ),
            format!(
                "LLM_BASE_URL={}",
                self.llm_base_url
                    .as_deref()
                    .map_or_else(|| "<unset>".to_owned(), redact_url)
            ),
            format!("LLM_API_KEY={}", secret(&self.llm_api_key)),
            format!("LLM_MODEL={}", self.llm_model),
            format!("LLM_EMBEDDING_MODEL={}", self.llm_embedding_model),
            format!("LLM_TIMEOUT_SECONDS={}", self.llm_timeout.as_secs_f64()),
            format!("LLM_MONTHLY_TOKEN_BUDGET={}", self.llm_monthly_token_budget),
            format!(
                "LLM_PRICES={}",
                self.llm_prices
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(",")
            ),
            format!(
                "ASSESSMENT_TIMEOUT_SECONDS={}",
                self.assessment_timeout.as_secs_f64()
            ),
            format!(
                "PIPELINE_ENV_ALLOWLIST={}",
                self.pipeline_env_allowlist.join(",")
            ),
            format!(
                "PIPELINE_WAIT_RECHECK_SECONDS={}",
                self.pipeline_wait_recheck_seconds
            ),
            format!("PIPELINE_CALL_DEPTH={}", self.pipeline_call_depth),
            format!("TENANT_QUEUED_JOBS_MAX={}", self.tenant_queued_jobs_max),
            format!(
                "TENANT_ENQUEUES_PER_MINUTE={}",
                self.tenant_enqueues_per_minute
            ),
            format!("EMBEDDINGS={}", if self.embeddings { "on" } else { "off" }),
            format!(
                "EMBEDDING_BASE_URL={}",
                self.embedding_base_url
                    .as_deref()
                    .map_or_else(|| "<unset>".to_owned(), redact_url)
            ),
            format!("EMBEDDING_API_KEY={}", secret(&self.embedding_api_key)),
            format!("EMBEDDING_MODEL={}", self.embedding_model),
            format!("EMBEDDING_CONCURRENCY={}", self.embedding_concurrency),
            format!("KNOWLEDGE_ASK_MIN_SIMILARITY={}", self.ask_min_similarity),
            format!(
                "CHROMA_URL={}",
                self.chroma_url
                    .as_deref()
                    .map_or_else(|| "<unset>".to_owned(), redact_url)
            ),
            format!("CHROMA_TOKEN={}", secret(&self.chroma_token)),
            format!("KNOWLEDGE_CHUNK_TOKENS={}", self.knowledge_chunk_tokens),
            format!("KNOWLEDGE_CHUNK_OVERLAP={}", self.knowledge_chunk_overlap),
            format!(
                "MAX_DOCUMENT_MB={}",
                self.max_document_bytes / (1024 * 1024)
            ),
            format!(
                "EXTRACT_MAX_STREAM_BYTES={}",
                self.extract_limits.max_stream_bytes
            ),
            format!(
                "EXTRACT_MAX_DOCUMENT_BYTES={}",
                self.extract_limits.max_document_bytes
            ),
            format!(
                "EXTRACT_MAX_TEXT_BYTES={}",
                self.extract_limits.max_text_bytes
            ),
            format!("EXTRACT_MAX_PAGES={}", self.extract_limits.max_pages),
            format!(
                "EXTRACT_TIMEOUT_SECONDS={}",
                self.extract_timeout.as_secs_f64()
            ),
        ]
    }

    pub fn dev_secret_key_path(&self) -> PathBuf {
        self.data_dir.join("secret_key")
    }

    /// The signing key: the configured one, or in development a random key persisted under
    /// `data_dir` so sessions survive restarts. Returns whether the key was generated just now.
    pub fn resolve_secret_key(&self) -> std::io::Result<(Secret, bool)> {
        if let Some(key) = &self.secret_key {
            return Ok((key.clone(), false));
        }
        load_or_create_dev_key(&self.dev_secret_key_path())
    }
}

fn load_or_create_dev_key(path: &Path) -> std::io::Result<(Secret, bool)> {
    match std::fs::read_to_string(path) {
        Ok(existing) if existing.trim().len() >= MIN_SECRET_KEY_BYTES => {
            return Ok((Secret(existing.trim().to_owned()), false));
        }
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    if let Some(parent) = path.parent() {
        crate::private_files::create_dir(parent)?;
    }
    let bytes: [u8; 32] = rand::random();
    let key: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    write_private_file(path, &key)?;
    Ok((Secret(key), true))
}

#[cfg(unix)]
fn write_private_file(path: &Path, contents: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(contents.as_bytes())
}

#[cfg(not(unix))]
fn write_private_file(path: &Path, contents: &str) -> std::io::Result<()> {
    std::fs::write(path, contents)
}

/// What a model costs, in US dollars per million prompt and completion tokens.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelPrice {
    pub model: String,
    pub prompt_per_million: rust_decimal::Decimal,
    pub completion_per_million: rust_decimal::Decimal,
}

impl std::fmt::Display for ModelPrice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}={}/{}",
            self.model, self.prompt_per_million, self.completion_per_million
        )
    }
}

/// `LLM_PRICES`: `model=prompt/completion` pairs separated by commas, e.g.
/// `gpt-4o-mini=0.15/0.60,text-embedding-3-small=0.02/0`; a single price applies to both.
fn parse_prices(raw: &str) -> Result<Vec<ModelPrice>, ConfigError> {
    let bad = |item: &str| {
        ConfigError::new(
            "LLM_PRICES",
            format!(
                "{item:?} is not model=prompt/completion (US dollars per million tokens, e.g. gpt-4o-mini=0.15/0.60)"
            ),
        )
    };
    let price = |text: &str, item: &str| {
        text.trim()
            .parse::<rust_decimal::Decimal>()
            .ok()
            .filter(|p| !p.is_sign_negative())
            .ok_or_else(|| bad(item))
    };
    let mut prices: Vec<ModelPrice> = Vec::new();
    for item in raw.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        let (model, rest) = item.split_once('=').ok_or_else(|| bad(item))?;
        let model = model.trim();
        if model.is_empty() || prices.iter().any(|p| p.model == model) {
            return Err(bad(item));
        }
        let (prompt, completion) = rest.split_once('/').unwrap_or((rest, rest));
        prices.push(ModelPrice {
            model: model.to_owned(),
            prompt_per_million: price(prompt, item)?,
            completion_per_million: price(completion, item)?,
        });
    }
    Ok(prices)
}

fn parse_number<T: FromStr>(
    var: &'static str,
    raw: Option<String>,
    default: T,
) -> Result<T, ConfigError> {
    match raw {
        None => Ok(default),
        Some(raw) => raw.trim().parse().map_err(|_| {
            ConfigError::new(
                var,
                format!("must be a non-negative whole number, got {raw:?}"),
            )
        }),
    }
}

/// A positive number of seconds, fractions allowed (e.g. `0.5`).
fn seconds(var: &'static str, raw: Option<String>, default: f64) -> Result<Duration, ConfigError> {
    let value = match raw {
        None => default,
        Some(raw) => raw.trim().parse::<f64>().map_err(|_| {
            ConfigError::new(var, format!("must be a number of seconds, got {raw:?}"))
        })?,
    };
    if !(value.is_finite() && value > 0.0 && value <= 86_400.0) {
        return Err(ConfigError::new(
            var,
            "must be more than 0 and at most 86400 seconds",
        ));
    }
    Ok(Duration::from_secs_f64(value))
}

fn positive<T: FromStr + PartialEq + Default>(
    var: &'static str,
    raw: Option<String>,
    default: T,
) -> Result<T, ConfigError> {
    let value = parse_number(var, raw, default)?;
    if value == T::default() {
        return Err(ConfigError::new(var, "must be at least 1"));
    }
    Ok(value)
}

/// A comma-separated (or JSON) list of CIDR blocks or single addresses.
pub fn parse_cidr_list(var: &'static str, raw: &str) -> Result<Vec<ipnet::IpNet>, ConfigError> {
    let items: Vec<String> = match serde_json::from_str::<Vec<String>>(raw) {
        Ok(list) => list,
        Err(_) => raw
            .split(',')
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
            .collect(),
    };
    items
        .iter()
        .map(|item| {
            parse_cidr(item).ok_or_else(|| {
                ConfigError::new(var, format!("{item:?} is not an IP address or CIDR block"))
            })
        })
        .collect()
}

/// `10.0.0.0/8`, `2001:db8::/32` or a single address (a /32 or /128 block).
pub fn parse_cidr(item: &str) -> Option<ipnet::IpNet> {
    item.parse::<ipnet::IpNet>()
        .ok()
        .or_else(|| item.parse::<IpAddr>().ok().map(ipnet::IpNet::from))
}

/// A non-negative decimal amount, kept exact.
fn decimal(
    var: &'static str,
    raw: Option<String>,
    default: &str,
) -> Result<rust_decimal::Decimal, ConfigError> {
    let text = raw.as_deref().map_or(default, str::trim);
    match text.parse::<rust_decimal::Decimal>() {
        Ok(value) if !value.is_sign_negative() => Ok(value.normalize()),
        _ => Err(ConfigError::new(
            var,
            format!("must be a non-negative decimal number, got {text:?}"),
        )),
    }
}

fn parse_bool(var: &'static str, raw: Option<String>, default: bool) -> Result<bool, ConfigError> {
    match raw.as_deref().map(|r| r.trim().to_ascii_lowercase()) {
        None => Ok(default),
        Some(v) if matches!(v.as_str(), "true" | "1" | "yes" | "on") => Ok(true),
        Some(v) if matches!(v.as_str(), "false" | "0" | "no" | "off") => Ok(false),
        Some(v) => Err(ConfigError::new(
            var,
            format!("must be true or false, got {v:?}"),
        )),
    }
}

/// Accepts a level (`info`) or comma-separated `target=level` directives. A bare unknown word would
/// otherwise be read as a target name and silently log nothing useful.
fn validate_log_level(value: &str) -> Result<(), ConfigError> {
    const LEVELS: [&str; 6] = ["trace", "debug", "info", "warn", "error", "off"];
    let is_level = |s: &str| LEVELS.contains(&s.trim().to_ascii_lowercase().as_str());
    let directives_ok = value
        .split(',')
        .all(|directive| match directive.rsplit_once('=') {
            Some((target, level)) => !target.trim().is_empty() && is_level(level),
            None => is_level(directive),
        });
    if directives_ok
        && tracing_subscriber::EnvFilter::builder()
            .parse(value)
            .is_ok()
    {
        Ok(())
    } else {
        Err(ConfigError::new(
            "LOG_LEVEL",
            format!(
                "must be a level (trace, debug, info, warn, error) or directives such as docket=debug,info; got {value:?}"
            ),
        ))
    }
}

fn validate_path_prefix(var: &'static str, value: &str) -> Result<(), ConfigError> {
    let valid = value.starts_with('/')
        && value.len() > 1
        && !value.ends_with('/')
        && !value.contains(['?', '#', ' ', '{', '}']);
    if valid {
        Ok(())
    } else {
        Err(ConfigError::new(
            var,
            format!(
                "must be a path such as /api/v1 (leading slash, no trailing slash), got {value:?}"
            ),
        ))
    }
}

fn database_kind(url: &str) -> Result<DatabaseKind, ConfigError> {
    let var = "DATABASE_URL";
    if url.starts_with("sqlite:") {
        SqliteConnectOptions::from_str(url)
            .map_err(|e| ConfigError::new(var, format!("not a valid SQLite URL: {e}")))?;
        Ok(DatabaseKind::Sqlite)
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        PgConnectOptions::from_str(url)
            .map_err(|e| ConfigError::new(var, format!("not a valid PostgreSQL URL: {e}")))?;
        Ok(DatabaseKind::Postgres)
    } else {
        Err(ConfigError::new(
            var,
            "must start with sqlite:// or postgres:// (e.g. sqlite://data/docket.db)",
        ))
    }
}

fn validate_redis_url(url: &str) -> Result<(), ConfigError> {
    let var = "REDIS_URL";
    let parsed =
        url::Url::parse(url).map_err(|e| ConfigError::new(var, format!("not a valid URL: {e}")))?;
    match parsed.scheme() {
        "redis" => {}
        "rediss" => {
            return Err(ConfigError::new(
                var,
                "rediss:// (TLS) is not supported yet; use redis://",
            ));
        }
        other => {
            return Err(ConfigError::new(
                var,
                format!("must use the redis:// scheme, got {other}://"),
            ));
        }
    }
    redis::Client::open(url)
        .map_err(|e| ConfigError::new(var, format!("not a valid Redis URL: {e}")))?;
    Ok(())
}

fn parse_cors_origins(raw: &str) -> Result<Vec<String>, ConfigError> {
    let var = "CORS_ORIGINS";
    let origins: Vec<String> = serde_json::from_str(raw).map_err(|_| {
        ConfigError::new(
            var,
            format!(
                "must be a JSON list of origins such as [\"https://app.example.com\"], got {raw:?}"
            ),
        )
    })?;
    for origin in &origins {
        if origin == "*" {
            continue;
        }
        let valid = url::Url::parse(origin).is_ok_and(|u| {
            matches!(u.scheme(), "http" | "https")
                && u.host().is_some()
                && u.path() == "/"
                && !origin.ends_with('/')
        });
        if !valid {
            return Err(ConfigError::new(
                var,
                format!(
                    "{origin:?} is not an origin (scheme://host[:port], no path or trailing slash)"
                ),
            ));
        }
    }
    Ok(origins)
}

/// Replaces the password of a URL (if any) so it can be printed.
pub fn redact_url(raw: &str) -> String {
    let Ok(mut url) = url::Url::parse(raw) else {
        // What cannot be parsed cannot be redacted reliably, so none of it is shown.
        return "<not shown: not a valid URL>".to_owned();
    };
    if url.password().is_some() {
        // Setting a password only fails for URLs that cannot have one, which we just ruled out.
        let _ = url.set_password(Some("REDACTED"));
    }
    // libpq and the Redis client also take credentials as query parameters (`?password=…`).
    if url.query().is_some() {
        let pairs: Vec<(String, String)> = url
            .query_pairs()
            .map(|(key, value)| {
                let value = if is_secret_parameter(&key) {
                    "REDACTED".to_owned()
                } else {
                    value.into_owned()
                };
                (key.into_owned(), value)
            })
            .collect();
        url.query_pairs_mut().clear().extend_pairs(pairs);
    }
    url.to_string()
}

fn is_secret_parameter(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    [
        "pass",
        "pwd",
        "secret",
        "token",
        "key",
        "credential",
        "signature",
    ]
    .iter()
    .any(|word| key.contains(word))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn load(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::from_lookup(|name| map.get(name).cloned())
    }

    #[test]
    fn defaults_are_the_embedded_development_setup() {
        let config = load(&[]).unwrap();
        assert_eq!(config.environment, Environment::Development);
        assert_eq!(config.host, "127.0.0.1");
        assert_eq!(config.port, 8000);
        assert_eq!(config.database_url.expose(), "sqlite://data/docket.db");
        assert_eq!(config.database_kind, DatabaseKind::Sqlite);
        assert_eq!(config.log_format, LogFormat::Pretty);
        assert_eq!(config.api_v1_prefix, "/api/v1");
        assert_eq!(config.healthcheck_path, "/health");
        assert!(config.auto_migrate);
        assert!(config.secret_key.is_none());
        assert!(config.redis_url.is_none());
        assert!(config.cors_origins.is_empty());
    }

    #[test]
    fn extraction_limits_default_and_parse() {
        let config = load(&[]).unwrap();
        assert_eq!(
            config.extract_limits,
            crate::knowledge::extract::Limits::default()
        );
        assert_eq!(config.extract_limits.max_stream_bytes, 64 * 1024 * 1024);
        assert_eq!(config.extract_timeout, Duration::from_secs(60));
        let config = load(&[
            ("EXTRACT_MAX_STREAM_BYTES", "1000"),
            ("EXTRACT_MAX_DOCUMENT_BYTES", "5000"),
            ("EXTRACT_MAX_TEXT_BYTES", "300"),
            ("EXTRACT_MAX_PAGES", "7"),
            ("EXTRACT_TIMEOUT_SECONDS", "2.5"),
        ])
        .unwrap();
        assert_eq!(config.extract_limits.max_stream_bytes, 1000);
        assert_eq!(config.extract_limits.max_document_bytes, 5000);
        assert_eq!(config.extract_limits.max_text_bytes, 300);
        assert_eq!(config.extract_limits.max_pages, 7);
        assert_eq!(config.extract_timeout, Duration::from_millis(2500));
        for (vars, var) in [
            (
                &[("EXTRACT_MAX_STREAM_BYTES", "0")][..],
                "EXTRACT_MAX_STREAM_BYTES",
            ),
            (&[("EXTRACT_MAX_PAGES", "many")][..], "EXTRACT_MAX_PAGES"),
            (
                &[("EXTRACT_TIMEOUT_SECONDS", "0")][..],
                "EXTRACT_TIMEOUT_SECONDS",
            ),
            (
                &[
                    ("EXTRACT_MAX_STREAM_BYTES", "10"),
                    ("EXTRACT_MAX_DOCUMENT_BYTES", "5"),
                ][..],
                "EXTRACT_MAX_STREAM_BYTES",
            ),
        ] {
            assert_eq!(load(vars).unwrap_err().var, var);
        }
    }

    #[test]
    fn production_defaults_to_json_logs_and_no_auto_migrate() {
        let key = "k".repeat(32);
        let config = load(&[("ENVIRONMENT", "production"), ("SECRET_KEY", &key)]).unwrap();
        assert_eq!(config.log_format, LogFormat::Json);
        assert!(!config.auto_migrate);
    }

    #[test]
    fn bad_values_name_the_variable() {
        let cases: &[(&[(&str, &str)], &str)] = &[
            (&[("PORT", "abc")], "PORT"),
            (&[("PORT", "0")], "PORT"),
            (&[("PORT", "70000")], "PORT"),
            (&[("HOST", "not a host")], "HOST"),
            (&[("ENVIRONMENT", "staging")], "ENVIRONMENT"),
            (&[("ENVIRONMENT", "production")], "SECRET_KEY"),
            (
                &[("ENVIRONMENT", "production"), ("SECRET_KEY", "short")],
                "SECRET_KEY",
            ),
            (&[("DATABASE_URL", "mysql://x")], "DATABASE_URL"),
            (&[("REDIS_URL", "http://x")], "REDIS_URL"),
            (&[("LOG_LEVEL", "loud")], "LOG_LEVEL"),
            (&[("LOG_LEVEL", "docket=loud")], "LOG_LEVEL"),
            (&[("LOG_FORMAT", "xml")], "LOG_FORMAT"),
            (&[("API_V1_PREFIX", "api")], "API_V1_PREFIX"),
            (&[("API_V1_PREFIX", "/api/")], "API_V1_PREFIX"),
            (&[("HEALTHCHECK_PATH", "health")], "HEALTHCHECK_PATH"),
            (
                &[("HEALTHCHECK_PATH", "/api/v1/health")],
                "HEALTHCHECK_PATH",
            ),
            (&[("HEALTHCHECK_PATH", "/console")], "HEALTHCHECK_PATH"),
            (&[("CORS_ORIGINS", "https://a.example")], "CORS_ORIGINS"),
            (
                &[("CORS_ORIGINS", "[\"https://a.example/path\"]")],
                "CORS_ORIGINS",
            ),
            (&[("AUTO_MIGRATE", "maybe")], "AUTO_MIGRATE"),
            (
                &[("SHUTDOWN_GRACE_SECONDS", "-1")],
                "SHUTDOWN_GRACE_SECONDS",
            ),
            (&[("DB_POOL_SIZE", "0")], "DB_POOL_SIZE"),
            (&[("MAX_BODY_BYTES", "lots")], "MAX_BODY_BYTES"),
            (
                &[("ACCESS_TOKEN_EXPIRE_MINUTES", "0")],
                "ACCESS_TOKEN_EXPIRE_MINUTES",
            ),
            (&[("RATE_LIMIT_PER_MINUTE", "x")], "RATE_LIMIT_PER_MINUTE"),
            (
                &[("API_KEY_RATE_LIMIT_PER_MINUTE", "0")],
                "API_KEY_RATE_LIMIT_PER_MINUTE",
            ),
            (
                &[("TENANT_RATE_LIMIT_PER_MINUTE", "-5")],
                "TENANT_RATE_LIMIT_PER_MINUTE",
            ),
            (
                &[("PASSWORD_HASH_CONCURRENCY", "0")],
                "PASSWORD_HASH_CONCURRENCY",
            ),
            (
                &[("PASSWORD_HASH_QUEUE_SECONDS", "0")],
                "PASSWORD_HASH_QUEUE_SECONDS",
            ),
            (
                &[("LOGIN_FAILURES_PER_IP", "many")],
                "LOGIN_FAILURES_PER_IP",
            ),
            (&[("TRUSTED_PROXIES", "10.0.0.0/33")], "TRUSTED_PROXIES"),
            (&[("WORKER_POLL_INTERVAL", "0")], "WORKER_POLL_INTERVAL"),
            (&[("WORKER_CONCURRENCY", "0")], "WORKER_CONCURRENCY"),
            (&[("LLM_PRICES", "gpt-4o=cheap")], "LLM_PRICES"),
            (&[("LLM_PRICES", "a=1/2,a=3/4")], "LLM_PRICES"),
            (&[("LLM_PRICES", "a=-1/2")], "LLM_PRICES"),
            (
                &[("ASSESSMENT_TIMEOUT_SECONDS", "0")],
                "ASSESSMENT_TIMEOUT_SECONDS",
            ),
            (&[("PIPELINE_CALL_DEPTH", "-1")], "PIPELINE_CALL_DEPTH"),
            (
                &[("TENANT_QUEUED_JOBS_MAX", "many")],
                "TENANT_QUEUED_JOBS_MAX",
            ),
            (
                &[("TENANT_ENQUEUES_PER_MINUTE", "1.5")],
                "TENANT_ENQUEUES_PER_MINUTE",
            ),
        ];
        for (vars, expected) in cases {
            let err = load(vars).expect_err(&format!("{vars:?} should be rejected"));
            assert_eq!(err.var, *expected, "{vars:?}");
            let line = err.to_string();
            assert!(!line.contains('\n'), "one line: {line}");
            assert!(line.contains(expected), "{line}");
        }
    }

    #[test]
    fn rate_limits_are_per_principal_with_an_outer_tenant_bound() {
        let config = load(&[]).unwrap();
        assert_eq!(config.rate_limit_per_minute, 600);
        assert_eq!(config.api_key_rate_limit_per_minute, 1200);
        assert_eq!(config.live_rate_limit_per_minute, 600);
        assert_eq!(config.tenant_rate_limit_per_minute, 20_000);
        assert!(config.password_hash_concurrency >= 1);
        assert_eq!(config.password_hash_queue, Duration::from_secs(2));
        assert_eq!(config.login_failures_per_ip, 20);
        assert_eq!(config.auth_failures_per_ip, 100);
        let config = load(&[
            ("PASSWORD_HASH_CONCURRENCY", "3"),
            ("PASSWORD_HASH_QUEUE_SECONDS", "0.5"),
        ])
        .unwrap();
        assert_eq!(config.password_hash_concurrency, 3);
        assert_eq!(config.password_hash_queue, Duration::from_millis(500));
    }

    #[test]
    fn llm_prices_are_per_million_tokens_per_model() {
        let config = load(&[(
            "LLM_PRICES",
            " gpt-4o-mini=0.15/0.60 , text-embedding-3-small=0.02",
        )])
        .unwrap();
        let shown: Vec<String> = config.llm_prices.iter().map(ToString::to_string).collect();
        assert_eq!(
            shown,
            ["gpt-4o-mini=0.15/0.60", "text-embedding-3-small=0.02/0.02"]
        );
        assert!(load(&[]).unwrap().llm_prices.is_empty());
        assert_eq!(
            load(&[]).unwrap().assessment_timeout,
            Duration::from_secs(600)
        );
    }

    #[test]
    fn embeddings_follow_the_model_unless_turned_off() {
        let model = [("LLM_BASE_URL", "http://llm.local/v1")];
        assert_eq!(
            load(&model).unwrap().embedding_base_url.as_deref(),
            Some("http://llm.local/v1")
        );
        let off = [model[0], ("EMBEDDINGS", "off")];
        let config = load(&off).unwrap();
        assert_eq!(config.embedding_base_url, None);
        assert_eq!(config.llm_base_url.as_deref(), Some("http://llm.local/v1"));
        let explicit = [
            ("EMBEDDING_BASE_URL", "http://emb.local/v1"),
            ("EMBEDDINGS", "false"),
        ];
        assert_eq!(load(&explicit).unwrap().embedding_base_url, None);
        assert!(load(&[("EMBEDDINGS", "sometimes")]).is_err());
    }

    #[test]
    fn accepts_postgres_urls_with_sslmode_and_cors_lists() {
        let config = load(&[
            (
                "DATABASE_URL",
                "postgres://docket:pw@db.internal:5432/docket?sslmode=require",
            ),
            ("REDIS_URL", "redis://:pw@127.0.0.1:6379/0"),
            (
                "CORS_ORIGINS",
                r#"["https://app.example.com", "http://localhost:3000"]"#,
            ),
            ("AUTO_MIGRATE", "false"),
            ("LOG_LEVEL", "docket=debug,tower_http=warn,info"),
            ("TRUSTED_PROXIES", "10.0.0.0/8, 192.168.1.1"),
        ])
        .unwrap();
        assert_eq!(config.trusted_proxies.len(), 2);
        assert_eq!(config.database_kind, DatabaseKind::Postgres);
        assert_eq!(config.cors_origins.len(), 2);
        assert!(!config.auto_migrate);
    }

    #[test]
    fn redacted_lines_hide_secrets_and_url_passwords() {
        let key = "s3cr3t-s3cr3t-s3cr3t-s3cr3t-s3cr3t";
        let config = load(&[
            ("SECRET_KEY", key),
            ("DATABASE_URL", "postgres://docket:hunter2@db/docket"),
            ("REDIS_URL", "redis://:redispw@127.0.0.1:6379"),
            ("METRICS_TOKEN", "metrics-token-value"),
        ])
        .unwrap();
        let text = config.redacted_lines().join("\n");
        for secret in [key, "hunter2", "redispw", "metrics-token-value"] {
            assert!(!text.contains(secret), "{secret} leaked: {text}");
        }
        assert!(
            text.contains("DATABASE_URL=postgres://docket:REDACTED@db/docket"),
            "{text}"
        );
    }

    #[test]
    fn redacted_urls_hide_credentials_in_query_parameters() {
        let redacted = redact_url(
            "postgres://docket@db/docket?sslmode=verify-full&password=hunter2&sslpassword=keypw",
        );
        assert_eq!(
            redacted,
            "postgres://docket@db/docket?sslmode=verify-full&password=REDACTED&sslpassword=REDACTED"
        );
        let redacted =
            redact_url("s3://bucket/prefix?access_key_id=AKIA&secret_access_key=shh&region=eu");
        assert!(
            !redacted.contains("AKIA") && !redacted.contains("shh"),
            "{redacted}"
        );
        assert!(redacted.contains("region=eu"), "{redacted}");
        assert_eq!(
            redact_url("sqlite://data/docket.db?mode=rwc"),
            "sqlite://data/docket.db?mode=rwc"
        );
        assert_eq!(
            redact_url("not a url :hunter2"),
            "<not shown: not a valid URL>"
        );
    }

    #[test]
    fn development_key_is_generated_once_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let data_dir = dir.path().join("data");
        let config = load(&[("DATA_DIR", data_dir.to_str().unwrap())]).unwrap();
        let (first, generated) = config.resolve_secret_key().unwrap();
        assert!(generated);
        assert!(first.expose().len() >= MIN_SECRET_KEY_BYTES);
        let (second, generated_again) = config.resolve_secret_key().unwrap();
        assert!(!generated_again);
        assert_eq!(first, second);
    }
}
