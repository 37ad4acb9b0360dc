//! Storage: the database pools, migrations and the few places where SQLite and PostgreSQL differ.
//!
//! Domain modules write portable SQL (`$1` placeholders work on both backends through sqlx) and run it
//! with [`with_pool!`](crate::with_pool); anything backend-specific lives in this module.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use sqlx::migrate::{MigrateError, Migrator};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::config::{Config, DatabaseKind};

static SQLITE_MIGRATIONS: Migrator = sqlx::migrate!("migrations/sqlite");
static POSTGRES_MIGRATIONS: Migrator = sqlx::migrate!("migrations/postgres");

/// How long a request waits for a pooled connection before failing instead of hanging.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a write transaction waits for its turn behind the others of this process (SQLite).
const WRITE_QUEUE_TIMEOUT: Duration = Duration::from_secs(60);
/// How long SQLite waits on a locked database before giving up with SQLITE_BUSY.
const SQLITE_BUSY_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open the database: {0}")]
    Connect(#[source] sqlx::Error),
    #[error(
        "there is no database at {path} (DATABASE_URL={url}); run this where Docket keeps its data, or set DATABASE_URL or DATA_DIR"
    )]
    Missing { path: String, url: String },
    #[error("cannot create or protect the database file or directory {path}: {source}")]
    Files {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "the database schema (version {database}) is newer than this binary knows (version {binary}); \
         run a newer docket or restore a matching backup"
    )]
    SchemaTooNew { database: i64, binary: i64 },
    #[error("migration failed: {0}")]
    Migrate(#[from] MigrateError),
    #[error(transparent)]
    Sqlx(#[from] sqlx::Error),
}

/// Creates the database's directory (0700) and an empty database file (0600) before SQLite opens
/// it, so neither is ever readable by others; SQLite gives its WAL files the database file's mode.
fn create_private_database(file: &std::path::Path) -> Result<(), StoreError> {
    let io_error = |path: &std::path::Path| {
        let path = path.display().to_string();
        move |source| StoreError::Files { path, source }
    };
    if let Some(dir) = file.parent().filter(|d| !d.as_os_str().is_empty()) {
        crate::private_files::create_dir(dir).map_err(io_error(dir))?;
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    match options.open(file) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(io_error(file)(e)),
    }
}

/// Narrows a database (and its WAL and shared-memory files) created before Docket set modes.
fn restrict_database_files(file: &std::path::Path) -> Result<(), StoreError> {
    for suffix in ["", "-wal", "-shm"] {
        let mut path = file.as_os_str().to_owned();
        path.push(suffix);
        let path = std::path::PathBuf::from(path);
        let narrowed =
            crate::private_files::restrict(&path).map_err(|source| StoreError::Files {
                path: path.display().to_string(),
                source,
            })?;
        if narrowed {
            tracing::warn!(path = %path.display(), "database file was readable by others; it is now 0600");
        }
    }
    Ok(())
}

/// The application database: an SQLite file (embedded default) or a PostgreSQL server.
#[derive(Clone, Debug)]
pub enum Store {
    Sqlite(SqlitePool, WriteGate),
    Postgres(PgPool),
}

/// SQLite has one writer at a time, and its busy handler is not fair: a writer waiting for the
/// lock sleeps and retries, and under sustained load (ingestion jobs, the queue) it can lose every
/// race for longer than the busy timeout and fail with "database is locked". Write transactions
/// of a process therefore queue here first, in arrival order, so each gets its turn.
#[derive(Clone, Debug)]
pub struct WriteGate(Arc<Semaphore>);

impl WriteGate {
    fn new() -> Self {
        Self(Arc::new(Semaphore::new(1)))
    }

    async fn enter(&self) -> Result<OwnedSemaphorePermit, sqlx::Error> {
        match tokio::time::timeout(WRITE_QUEUE_TIMEOUT, self.0.clone().acquire_owned()).await {
            Ok(Ok(permit)) => Ok(permit),
            _ => Err(sqlx::Error::PoolTimedOut),
        }
    }
}

/// Runs one expression against whichever pool backs `store`; the expression is compiled once per
/// backend, so portable query code is written once.
#[macro_export]
macro_rules! with_pool {
    ($store:expr, $pool:ident => $body:expr) => {
        match $store {
            $crate::store::Store::Sqlite($pool, _) => $body,
            $crate::store::Store::Postgres($pool) => $body,
        }
    };
}

/// Runs one write statement (an expression over `$conn`, as in [`with_pool!`]). On SQLite it runs
/// in its own transaction, so it waits its turn behind this process's other writers (see
/// [`WriteGate`]) instead of racing them in SQLite's busy handler, which it can lose for longer
/// than the busy timeout under load; on PostgreSQL it runs on the pool as is.
#[macro_export]
macro_rules! with_writer {
    ($store:expr, $conn:ident => $body:expr) => {
        match $store {
            store @ $crate::store::Store::Sqlite(..) => {
                async {
                    let mut tx = store.begin().await?;
                    let result = $crate::with_tx!(&mut tx, $conn => $body)?;
                    tx.commit().await?;
                    Ok::<_, sqlx::Error>(result)
                }
                .await
            }
            $crate::store::Store::Postgres($conn) => $body,
        }
    };
}

/// One database transaction. Every state change writes its row and its audit record in one of these.
pub enum Tx {
    /// The permit holds this process's place as SQLite's writer until the transaction ends.
    Sqlite(
        sqlx::Transaction<'static, sqlx::Sqlite>,
        OwnedSemaphorePermit,
    ),
    Postgres(sqlx::Transaction<'static, sqlx::Postgres>),
}

/// Runs one expression against the connection of a [`Tx`], compiled once per backend.
#[macro_export]
macro_rules! with_tx {
    ($tx:expr, $conn:ident => $body:expr) => {
        match $tx {
            $crate::store::Tx::Sqlite(tx, _) => {
                let $conn = &mut **tx;
                $body
            }
            $crate::store::Tx::Postgres(tx) => {
                let $conn = &mut **tx;
                $body
            }
        }
    };
}

impl Tx {
    pub async fn commit(self) -> Result<(), sqlx::Error> {
        match self {
            Self::Sqlite(tx, _) => tx.commit().await,
            Self::Postgres(tx) => tx.commit().await,
        }
    }

    /// Ends the transaction now. Dropping one also rolls back, but only when its connection is
    /// next used, so row locks taken with `FOR UPDATE` would linger (and `SKIP LOCKED` readers skip
    /// the row) until then: refusals after locking roll back explicitly.
    pub async fn rollback(self) -> Result<(), sqlx::Error> {
        match self {
            Self::Sqlite(tx, _) => tx.rollback().await,
            Self::Postgres(tx) => tx.rollback().await,
        }
    }

    pub fn kind(&self) -> DatabaseKind {
        match self {
            Self::Sqlite(..) => DatabaseKind::Sqlite,
            Self::Postgres(_) => DatabaseKind::Postgres,
        }
    }
}

/// Where the database schema stands relative to the migrations compiled into this binary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchemaStatus {
    /// Highest migration applied to the database, if any.
    pub database_version: Option<i64>,
    /// Highest migration this binary ships.
    pub binary_version: i64,
    /// Migrations this binary ships that the database has not applied yet.
    pub pending: usize,
}

impl SchemaStatus {
    pub fn is_current(&self) -> bool {
        self.pending == 0 && !self.is_too_new()
    }

    pub fn is_too_new(&self) -> bool {
        self.database_version
            .is_some_and(|v| v > self.binary_version)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolStats {
    pub size: u32,
    pub idle: u32,
    pub max: u32,
}

impl Store {
    /// Opens the pool. SQLite files (and their directory) are created when missing and run in WAL
    /// mode with a busy timeout, so the API, worker and scheduler of one process can share them.
    pub async fn connect(config: &Config) -> Result<Self, StoreError> {
        Self::open(config, true).await
    }

    /// Opens the pool of a database that must exist already: an SQLite file is not created. For
    /// commands that only read, which would otherwise report on a new, empty database.
    pub async fn connect_existing(config: &Config) -> Result<Self, StoreError> {
        Self::open(config, false).await
    }

    async fn open(config: &Config, create: bool) -> Result<Self, StoreError> {
        let url = config.database_url.expose();
        match config.database_kind {
            DatabaseKind::Sqlite => {
                let options = SqliteConnectOptions::from_str(url).map_err(StoreError::Connect)?;
                if !create && !options.get_filename().exists() {
                    return Err(StoreError::Missing {
                        path: options.get_filename().display().to_string(),
                        url: crate::config::redact_url(url),
                    });
                }
                let options = options
                    .create_if_missing(create)
                    .journal_mode(SqliteJournalMode::Wal)
                    .synchronous(SqliteSynchronous::Normal)
                    .busy_timeout(SQLITE_BUSY_TIMEOUT)
                    .foreign_keys(true);
                let file = options.get_filename().to_owned();
                let on_disk = !(file.as_os_str() == ":memory:" || url.contains("mode=memory"));
                if on_disk && create {
                    create_private_database(&file)?;
                }
                let pool = SqlitePoolOptions::new()
                    .max_connections(config.db_pool_size)
                    .acquire_timeout(ACQUIRE_TIMEOUT)
                    .connect_with(options)
                    .await
                    .map_err(StoreError::Connect)?;
                if on_disk {
                    restrict_database_files(&file)?;
                }
                Ok(Self::Sqlite(pool, WriteGate::new()))
            }
            DatabaseKind::Postgres => {
                let options = PgConnectOptions::from_str(url)
                    .map_err(StoreError::Connect)?
                    .application_name("docket");
                // Lazy: a process that starts while PostgreSQL is briefly down still starts, reports
                // itself unready, and recovers once the server answers.
                let pool = PgPoolOptions::new()
                    .max_connections(config.db_pool_size)
                    .acquire_timeout(ACQUIRE_TIMEOUT)
                    .connect_lazy_with(options);
                Ok(Self::Postgres(pool))
            }
        }
    }

    pub fn kind(&self) -> DatabaseKind {
        match self {
            Self::Sqlite(..) => DatabaseKind::Sqlite,
            Self::Postgres(_) => DatabaseKind::Postgres,
        }
    }

    fn migrator(&self) -> &'static Migrator {
        match self {
            Self::Sqlite(..) => &SQLITE_MIGRATIONS,
            Self::Postgres(_) => &POSTGRES_MIGRATIONS,
        }
    }

    /// Applies pending migrations. Refuses a database whose schema is newer than this binary.
    /// Concurrent callers are serialised by the migrator's database lock.
    pub async fn migrate(&self) -> Result<SchemaStatus, StoreError> {
        self.ensure_not_too_new().await?;
        match self {
            Self::Sqlite(pool, _) => self.migrator().run(pool).await?,
            Self::Postgres(pool) => self.migrator().run(pool).await?,
        }
        self.schema_status().await
    }

    /// Fails with [`StoreError::SchemaTooNew`] when a newer binary already migrated this database.
    pub async fn ensure_not_too_new(&self) -> Result<SchemaStatus, StoreError> {
        let status = self.schema_status().await?;
        if status.is_too_new() {
            return Err(StoreError::SchemaTooNew {
                database: status.database_version.unwrap_or_default(),
                binary: status.binary_version,
            });
        }
        Ok(status)
    }

    pub async fn schema_status(&self) -> Result<SchemaStatus, StoreError> {
        let applied = self.applied_migrations().await?;
        let migrator = self.migrator();
        let binary_version = migrator.iter().map(|m| m.version).max().unwrap_or(0);
        let pending = migrator
            .iter()
            .filter(|m| !applied.contains(&m.version))
            .count();
        Ok(SchemaStatus {
            database_version: applied.iter().copied().max(),
            binary_version,
            pending,
        })
    }

    async fn applied_migrations(&self) -> Result<Vec<i64>, sqlx::Error> {
        let table_exists: bool = match self {
            Self::Sqlite(pool, _) => {
                sqlx::query_scalar(
                    "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = '_sqlx_migrations')",
                )
                .fetch_one(pool)
                .await?
            }
            Self::Postgres(pool) => {
                sqlx::query_scalar("SELECT to_regclass('_sqlx_migrations') IS NOT NULL")
                    .fetch_one(pool)
                    .await?
            }
        };
        if !table_exists {
            return Ok(Vec::new());
        }
        with_pool!(self, pool => {
            sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success ORDER BY version")
                .fetch_all(pool)
                .await
        })
    }

    /// Starts a write transaction. On SQLite it takes the write lock up front (`BEGIN IMMEDIATE`):
    /// a deferred transaction that reads and then writes fails with `SQLITE_BUSY` when another
    /// writer got in between, instead of waiting its turn.
    pub async fn begin(&self) -> Result<Tx, sqlx::Error> {
        match self {
            Self::Sqlite(pool, gate) => {
                let permit = gate.enter().await?;
                let tx = pool.begin_with("BEGIN IMMEDIATE").await?;
                Ok(Tx::Sqlite(tx, permit))
            }
            Self::Postgres(pool) => pool.begin().await.map(Tx::Postgres),
        }
    }

    /// Waits at most `within` for a working database connection (PostgreSQL; SQLite is always
    /// there), for a worker recovering from a failed claim.
    pub async fn reachable_within(&self, within: Duration) -> Result<(), sqlx::Error> {
        match self {
            Self::Sqlite(..) => Ok(()),
            Self::Postgres(pool) => tokio::time::timeout(within, pool.acquire())
                .await
                .map_err(|_| sqlx::Error::PoolTimedOut)?
                .map(drop),
        }
    }

    /// The row-locking clause for claim queries: PostgreSQL skips rows other transactions hold;
    /// SQLite has one writer at a time, so there is nothing to skip.
    pub fn skip_locked(&self) -> &'static str {
        match self {
            Self::Sqlite(..) => "",
            Self::Postgres(_) => "FOR UPDATE SKIP LOCKED",
        }
    }

    /// The clause that locks selected rows until the transaction ends (PostgreSQL); SQLite's write
    /// transaction already excludes other writers.
    pub fn lock_rows(&self) -> &'static str {
        match self {
            Self::Sqlite(..) => "",
            Self::Postgres(_) => "FOR UPDATE",
        }
    }

    /// A collation that orders text by its bytes, like Rust's `str` ordering (append it to an
    /// `ORDER BY` column): rows locked in that order cannot deadlock with locks taken in Rust's
    /// sorted order. SQLite's default collation already is bytewise.
    pub fn byte_order(&self) -> &'static str {
        match self {
            Self::Sqlite(..) => "",
            Self::Postgres(_) => " COLLATE \"C\"",
        }
    }

    /// A round trip to the database.
    pub async fn ping(&self) -> Result<(), sqlx::Error> {
        with_pool!(self, pool => sqlx::query("SELECT 1").execute(pool).await.map(|_| ()))
    }

    pub fn pool_stats(&self) -> PoolStats {
        let (size, idle, max) = with_pool!(self, pool => {
            (pool.size(), pool.num_idle(), pool.options().get_max_connections())
        });
        PoolStats {
            size,
            idle: u32::try_from(idle).unwrap_or(u32::MAX),
            max,
        }
    }

    /// Waits for checked-out connections to return, then closes the pool.
    pub async fn close(&self) {
        with_pool!(self, pool => pool.close().await)
    }
}

/// Forwards PostgreSQL notifications on `channel` to `notify` until `shutdown`, reconnecting after
/// connection loss (meanwhile the waiters' own poll timers cover for it).
pub fn spawn_listener(
    pool: PgPool,
    channel: &'static str,
    notify: std::sync::Arc<tokio::sync::Notify>,
    shutdown: tokio_util::sync::CancellationToken,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let listen = async {
                let mut listener = sqlx::postgres::PgListener::connect_with(&pool).await?;
                listener.listen(channel).await?;
                // Whatever was sent while no listener was connected (an outage, a restart of the
                // server) was lost: wake everyone once so it is not left for the next poll.
                notify.notify_waiters();
                // `None`: the connection was lost; reconnect here, so the wake-up above follows.
                while listener.try_recv().await?.is_some() {
                    notify.notify_waiters();
                }
                Ok(())
            };
            let result: Result<(), sqlx::Error> = tokio::select! {
                () = shutdown.cancelled() => return,
                result = listen => result,
            };
            match result {
                Ok(()) => {
                    tracing::debug!(
                        channel,
                        "notification listener lost its connection; reconnecting"
                    );
                    continue;
                }
                Err(e) => {
                    tracing::debug!(channel, error = %e, "notification listener cannot connect; retrying");
                }
            }
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sqlite_config(dir: &std::path::Path) -> Config {
        let url = format!("sqlite://{}/nested/docket.db", dir.display());
        Config::from_lookup(|name| (name == "DATABASE_URL").then(|| url.clone())).unwrap()
    }

    #[tokio::test]
    async fn sqlite_file_and_directory_are_created_and_migrated() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::connect(&sqlite_config(dir.path())).await.unwrap();
        assert!(dir.path().join("nested/docket.db").exists());

        let before = store.schema_status().await.unwrap();
        assert_eq!(before.database_version, None);
        assert!(before.pending > 0);
        assert!(!before.is_current());

        let after = store.migrate().await.unwrap();
        assert!(after.is_current());
        assert_eq!(after.database_version, Some(after.binary_version));

        let journal: String = with_pool!(&store, pool => {
            sqlx::query_scalar("PRAGMA journal_mode").fetch_one(pool).await.unwrap()
        });
        assert_eq!(journal, "wal");
    }

    #[cfg(unix)]
    #[tokio::test]
    async fn sqlite_files_are_readable_only_by_their_owner() {
        use std::os::unix::fs::PermissionsExt;
        let mode =
            |path: &std::path::Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
        let dir = tempfile::tempdir().unwrap();
        let store = Store::connect(&sqlite_config(dir.path())).await.unwrap();
        store.migrate().await.unwrap();
        let db = dir.path().join("nested/docket.db");
        assert_eq!(mode(&dir.path().join("nested")), 0o700);
        for file in ["docket.db", "docket.db-wal", "docket.db-shm"] {
            assert_eq!(mode(&dir.path().join("nested").join(file)), 0o600, "{file}");
        }
        store.close().await;

        // A database left world-readable by an earlier version is narrowed at the next start.
        std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o644)).unwrap();
        let store = Store::connect(&sqlite_config(dir.path())).await.unwrap();
        assert_eq!(mode(&db), 0o600);
        store.close().await;
    }

    /// Many transactions holding the write lock for a while, and single writes between them: every
    /// one gets its turn (none fails with "database is locked") and every row is there.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn sqlite_writers_under_contention_all_get_their_turn() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::connect(&sqlite_config(dir.path())).await.unwrap();
        with_pool!(&store, pool => {
            sqlx::query("CREATE TABLE contention (writer INTEGER, n INTEGER)").execute(pool).await.map(|_| ())
        })
        .unwrap();
        let mut tasks = tokio::task::JoinSet::new();
        for writer in 0..24 {
            let store = store.clone();
            tasks.spawn(async move {
                for n in 0..20 {
                    let mut tx = store.begin().await?;
                    with_tx!(&mut tx, conn => {
                        sqlx::query("INSERT INTO contention VALUES ($1, $2)").bind(writer).bind(n).execute(conn).await.map(|_| ())
                    })?;
                    tokio::time::sleep(Duration::from_millis(2)).await;
                    tx.commit().await?;
                }
                Ok::<_, sqlx::Error>(())
            });
        }
        for writer in 100..108 {
            let store = store.clone();
            tasks.spawn(async move {
                for n in 0..20 {
                    with_writer!(&store, conn => {
                        sqlx::query("INSERT INTO contention VALUES ($1, $2)").bind(writer).bind(n).execute(conn).await.map(|_| ())
                    })?;
                }
                Ok(())
            });
        }
        while let Some(result) = tasks.join_next().await {
            result.unwrap().unwrap();
        }
        let rows: i64 = with_pool!(&store, pool => {
            sqlx::query_scalar("SELECT COUNT(*) FROM contention").fetch_one(pool).await.unwrap()
        });
        assert_eq!(rows, 32 * 20);
    }

    #[tokio::test]
    async fn a_newer_schema_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::connect(&sqlite_config(dir.path())).await.unwrap();
        let status = store.migrate().await.unwrap();
        with_pool!(&store, pool => {
            sqlx::query(
                "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
                 VALUES ($1, 'from the future', TRUE, x'00', 0)",
            )
            .bind(status.binary_version + 1)
            .execute(pool)
            .await
            .map(|_| ())
            .unwrap()
        });
        let err = store.migrate().await.unwrap_err();
        assert!(matches!(err, StoreError::SchemaTooNew { .. }), "{err}");
        assert!(store.schema_status().await.unwrap().is_too_new());
    }
}
