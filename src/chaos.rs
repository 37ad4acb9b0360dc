//! `docket bench chaos`: a crash test of the queue and the scheduler on PostgreSQL, with real
//! `docket worker` and `docket scheduler` processes killed with SIGKILL while they work.
//!
//! Queue part: enqueue small jobs, run several worker processes, SIGKILL a random one every
//! interval and start it again, restart PostgreSQL once half the jobs are done, and wait until
//! every job has succeeded. Runs beyond one per job are then bounded: a killed worker loses at most
//! the `WORKER_CONCURRENCY` jobs it held (their leases expire and another worker runs them again),
//! and a PostgreSQL restart costs each worker at most the jobs it held at that moment (the outcomes
//! it could not record, and a claim whose commit it never heard back about). So
//! `extra runs ≤ (kills + exits + restarts × workers) × concurrency`, and for one worker process
//! `≤ concurrency × (1 + restarts)`.
//!
//! Scheduler part: tasks firing every second, several scheduler processes, a random one SIGKILLed
//! every interval, PostgreSQL restarted once; then every occurrence of the window must have become
//! exactly one job, or be covered by a `missed` record when it was found later than its misfire
//! grace. None may be enqueued twice and none may be lost.
//!
//! Everything is counted from what the engine itself records: runs (one per claim, inserted by the
//! claiming transaction, so a run is an upper bound on an execution) and the jobs of task
//! occurrences. Nothing in the engine knows it is being tested.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, DurationRound, Utc};
use serde_json::{Value, json};
use sqlx::PgPool;
use tokio::process::{Child, Command};
use tokio::task::JoinHandle;
use tokio::time::MissedTickBehavior;
use uuid::Uuid;

use crate::config::Config;
use crate::queue::{self, NewJob};
use crate::scheduler::tasks::{self, TaskRow};
use crate::store::Store;

/// Restarts PostgreSQL and returns once it accepts connections again. It blocks, so it is run on a
/// blocking thread while the kills go on.
pub type RestartPostgres = Arc<dyn Fn() -> Result<(), String> + Send + Sync>;

/// Attempts each chaos job may use. A lost lease counts as an attempt (so a job that keeps crashing
/// its worker ends up dead instead of looping); here the crashes are the harness's doing, and a job
/// unlucky enough to be in hand at several kills must not die of it, or the test would measure luck.
/// The report shows the most attempts any job needed.
const MAX_ATTEMPTS: u32 = 100;
/// Jobs per enqueue transaction.
const ENQUEUE_BATCH: usize = 500;
/// How long a process gets to exit after SIGTERM before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(30);

/// `docket bench chaos` arguments.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Jobs for the worker processes.
    #[arg(long, default_value_t = 20_000)]
    pub jobs: usize,
    /// Worker processes (each runs WORKER_CONCURRENCY jobs at once).
    #[arg(long, default_value_t = 4)]
    pub workers: usize,
    /// How long each job runs, in milliseconds (a `sleep` job; 0 enqueues `noop` jobs).
    #[arg(long, default_value_t = 50)]
    pub job_ms: u64,
    /// WORKER_LEASE_SECONDS of the workers: how long a killed worker's jobs wait for another.
    #[arg(long, default_value_t = 5)]
    pub lease_seconds: u64,
    /// Milliseconds between two kills.
    #[arg(long, default_value_t = 1000)]
    pub kill_every_ms: u64,
    /// Stop killing workers after this many seconds [default: once every job has succeeded].
    #[arg(long)]
    pub kill_seconds: Option<u64>,
    /// Tasks firing every second for the scheduler processes (0 skips the scheduler part).
    #[arg(long, default_value_t = 100)]
    pub tasks: usize,
    /// Scheduler processes.
    #[arg(long, default_value_t = 2)]
    pub schedulers: usize,
    /// How long the schedulers are killed at random, in seconds.
    #[arg(long, default_value_t = 30)]
    pub scheduler_seconds: u64,
    /// Shell command that restarts PostgreSQL and returns once it accepts connections again
    /// (e.g. `pg_ctl -D /path -m fast -w restart`); run once in the middle of each part.
    #[arg(long)]
    pub restart_postgres: Option<String>,
    /// Directory for the output of the processes it starts [default: discarded].
    #[arg(long)]
    pub logs: Option<PathBuf>,
    /// Give up waiting for the jobs (or for the schedulers to catch up) after this many seconds.
    #[arg(long, default_value_t = 600)]
    pub deadline_seconds: u64,
}

/// What to run and how hard to hit it.
#[derive(Clone)]
pub struct Options {
    /// The `docket` binary whose `worker` and `scheduler` subcommands are started.
    pub program: PathBuf,
    /// Working directory of the processes [default: this one].
    pub working_dir: Option<PathBuf>,
    /// Start the processes with only `PATH` from this environment (tests), plus `env` and what the
    /// harness sets itself.
    pub clear_env: bool,
    /// Extra environment of the processes.
    pub env: Vec<(String, String)>,
    /// Where each process slot appends its output [default: discarded].
    pub log_dir: Option<PathBuf>,
    pub jobs: usize,
    pub workers: usize,
    /// A `sleep` job of this length; zero means `noop` jobs.
    pub job_duration: Duration,
    pub lease: Duration,
    pub kill_every: Duration,
    /// Stop killing workers after this long (`None`: until every job has succeeded).
    pub kill_for: Option<Duration>,
    pub tasks: usize,
    pub schedulers: usize,
    pub scheduler_duration: Duration,
    /// Longest wait for the jobs to finish, and for the schedulers to catch up.
    pub deadline: Duration,
    pub restart_postgres: Option<RestartPostgres>,
}

impl Options {
    pub fn from_args(program: PathBuf, args: &Args) -> Self {
        let restart_postgres = args
            .restart_postgres
            .clone()
            .map(|command| Arc::new(move || run_shell(&command)) as RestartPostgres);
        Self {
            program,
            working_dir: None,
            clear_env: false,
            env: Vec::new(),
            log_dir: args.logs.clone(),
            jobs: args.jobs,
            workers: args.workers,
            job_duration: Duration::from_millis(args.job_ms),
            lease: Duration::from_secs(args.lease_seconds.max(1)),
            kill_every: Duration::from_millis(args.kill_every_ms.max(1)),
            kill_for: args.kill_seconds.map(Duration::from_secs),
            tasks: args.tasks,
            schedulers: args.schedulers,
            scheduler_duration: Duration::from_secs(args.scheduler_seconds),
            deadline: Duration::from_secs(args.deadline_seconds),
            restart_postgres,
        }
    }
}

/// Runs `command` with `sh -c`; its standard output is discarded, its errors are shown.
fn run_shell(command: &str) -> Result<(), String> {
    let status = std::process::Command::new("sh")
        .arg("-c")
        .arg(command)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .status()
        .map_err(|e| format!("cannot run `{command}`: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("`{command}` failed ({status})"))
    }
}

#[derive(Debug, Clone, Default)]
pub struct QueueReport {
    pub jobs: usize,
    pub workers: usize,
    pub concurrency: u32,
    pub lease_seconds: u64,
    pub job_ms: u128,
    pub kills: usize,
    /// Worker processes that exited without being killed (and were started again).
    pub unprompted_exits: usize,
    pub postgres_restarts: usize,
    pub succeeded: i64,
    pub dead: i64,
    /// Runs by status, e.g. `succeeded`, `lost`.
    pub runs_by_status: Vec<(String, i64)>,
    pub runs: i64,
    /// Runs beyond one per job: the executions (at most) that were repeated.
    pub extra_runs: i64,
    /// `(kills + unprompted exits + restarts × workers) × concurrency`.
    pub bound: i64,
    /// The most runs other than a success that one worker process left behind.
    pub most_extra_runs_of_one_worker: i64,
    /// `concurrency × (1 + restarts)`.
    pub bound_per_worker: i64,
    /// Jobs without exactly one succeeded run.
    pub jobs_not_succeeded_once: i64,
    pub most_attempts: i32,
    pub timed_out: bool,
    pub seconds: f64,
}

#[derive(Debug, Clone, Default)]
pub struct SchedulerReport {
    pub tasks: usize,
    pub schedulers: usize,
    pub misfire_grace_seconds: i32,
    pub window_seconds: i64,
    /// Occurrences due in the window, tasks × seconds.
    pub expected: i64,
    /// Occurrences of the window that became a job.
    pub enqueued: i64,
    /// Occurrences of the window recorded as missed (found later than the misfire grace).
    pub missed: i64,
    /// Occurrences that became more than one job (or a job and a missed record).
    pub duplicates: i64,
    /// Occurrences of the window with neither a job nor a missed record.
    pub lost: i64,
    /// Jobs of these tasks that match no occurrence of their schedule.
    pub off_schedule: i64,
    pub kills: usize,
    pub unprompted_exits: usize,
    pub postgres_restarts: usize,
    /// Whether the schedulers caught up with the end of the window before the deadline.
    pub caught_up: bool,
    /// The latest any occurrence of the window was enqueued, after its instant.
    pub max_enqueue_lateness_ms: i64,
}

#[derive(Debug, Clone, Default)]
pub struct Report {
    pub queue: Option<QueueReport>,
    pub scheduler: Option<SchedulerReport>,
}

impl Report {
    /// The invariants that broke; empty when the run passed.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if let Some(q) = &self.queue {
            if q.timed_out {
                problems.push("the jobs did not all finish before the deadline".to_owned());
            }
            if q.succeeded != q.jobs as i64 {
                problems.push(format!(
                    "{} of {} jobs did not succeed ({} dead)",
                    q.jobs as i64 - q.succeeded,
                    q.jobs,
                    q.dead
                ));
            }
            if q.jobs_not_succeeded_once > 0 {
                problems.push(format!(
                    "{} jobs do not have exactly one succeeded run",
                    q.jobs_not_succeeded_once
                ));
            }
            if q.extra_runs > q.bound {
                problems.push(format!(
                    "{} extra runs exceed the bound of {}",
                    q.extra_runs, q.bound
                ));
            }
            if q.most_extra_runs_of_one_worker > q.bound_per_worker {
                problems.push(format!(
                    "one worker process left {} extra runs, more than the {} it can hold",
                    q.most_extra_runs_of_one_worker, q.bound_per_worker
                ));
            }
        }
        if let Some(s) = &self.scheduler {
            if !s.caught_up {
                problems.push(
                    "the schedulers did not reach the end of the window before the deadline"
                        .to_owned(),
                );
            }
            if s.duplicates > 0 {
                problems.push(format!("{} occurrences enqueued twice", s.duplicates));
            }
            if s.lost > 0 {
                problems.push(format!("{} occurrences lost", s.lost));
            }
            if s.off_schedule > 0 {
                problems.push(format!(
                    "{} jobs match no occurrence of their schedule",
                    s.off_schedule
                ));
            }
        }
        problems
    }
}

fn yes_no(value: bool) -> &'static str {
    if value { "yes" } else { "no" }
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if let Some(q) = &self.queue {
            let kind = if q.job_ms == 0 {
                "noop jobs".to_owned()
            } else {
                format!("jobs sleep {} ms", q.job_ms)
            };
            writeln!(
                f,
                "queue: {} worker processes × {} jobs at once, lease {} s, {kind}",
                q.workers, q.concurrency, q.lease_seconds
            )?;
            writeln!(f, "  jobs                          {}", q.jobs)?;
            writeln!(f, "  worker kills (SIGKILL)        {}", q.kills)?;
            writeln!(f, "  unprompted worker exits       {}", q.unprompted_exits)?;
            writeln!(f, "  PostgreSQL restarts           {}", q.postgres_restarts)?;
            writeln!(
                f,
                "  all succeeded                 {} ({} of {}, {} dead)",
                yes_no(q.succeeded == q.jobs as i64 && q.jobs_not_succeeded_once == 0),
                q.succeeded,
                q.jobs,
                q.dead
            )?;
            let statuses: Vec<String> = q
                .runs_by_status
                .iter()
                .map(|(status, n)| format!("{status} {n}"))
                .collect();
            writeln!(
                f,
                "  runs                          {} ({})",
                q.runs,
                statuses.join(", ")
            )?;
            writeln!(f, "  extra executions              {}", q.extra_runs)?;
            writeln!(
                f,
                "  bound                         {} = ({} kills + {} exits + {} restarts × {} workers) × {}",
                q.bound, q.kills, q.unprompted_exits, q.postgres_restarts, q.workers, q.concurrency
            )?;
            writeln!(
                f,
                "  within bound                  {}",
                yes_no(q.extra_runs <= q.bound)
            )?;
            writeln!(
                f,
                "  most extra of one worker      {} (bound {} = {} × (1 + {} restarts))",
                q.most_extra_runs_of_one_worker,
                q.bound_per_worker,
                q.concurrency,
                q.postgres_restarts
            )?;
            writeln!(f, "  most attempts of one job      {}", q.most_attempts)?;
            writeln!(f, "  duration                      {:.1} s", q.seconds)?;
        }
        if let Some(s) = &self.scheduler {
            writeln!(
                f,
                "scheduler: {} scheduler processes, {} tasks every second, misfire grace {} s",
                s.schedulers, s.tasks, s.misfire_grace_seconds
            )?;
            writeln!(
                f,
                "  window                        {} s, {} occurrences expected",
                s.window_seconds, s.expected
            )?;
            writeln!(f, "  scheduler kills (SIGKILL)     {}", s.kills)?;
            writeln!(f, "  unprompted scheduler exits    {}", s.unprompted_exits)?;
            writeln!(f, "  PostgreSQL restarts           {}", s.postgres_restarts)?;
            writeln!(f, "  enqueued                      {}", s.enqueued)?;
            writeln!(f, "  missed (beyond grace)         {}", s.missed)?;
            writeln!(f, "  duplicate occurrences         {}", s.duplicates)?;
            writeln!(f, "  lost occurrences              {}", s.lost)?;
            writeln!(f, "  off-schedule jobs             {}", s.off_schedule)?;
            writeln!(
                f,
                "  latest enqueue                {} ms after its instant",
                s.max_enqueue_lateness_ms
            )?;
        }
        let problems = self.problems();
        if problems.is_empty() {
            write!(f, "result                          PASS")
        } else {
            write!(
                f,
                "result                          FAIL: {}",
                problems.join("; ")
            )
        }
    }
}

/// Runs both parts against `store` (PostgreSQL, migrated). Leaves the jobs and runs of its two
/// tenants (`chaos-…`) for inspection; the tasks are deleted and their pending jobs cancelled.
pub async fn run(config: &Config, store: &Store, options: Options) -> Result<Report, String> {
    let Store::Postgres(pool) = store else {
        return Err(
            "bench chaos needs PostgreSQL: worker and scheduler processes share the database, \
             which SQLite (one process) cannot"
                .to_owned(),
        );
    };
    let spawner = Spawner::new(config, &options)?;
    let mut report = Report::default();
    if options.jobs > 0 && options.workers > 0 {
        report.queue = Some(queue_part(pool, store, config, &options, &spawner).await?);
    }
    if options.tasks > 0 && options.schedulers > 0 {
        report.scheduler = Some(scheduler_part(pool, store, config, &options, &spawner).await?);
    }
    Ok(report)
}

/// Starts `docket <role>` processes with the harness's settings.
struct Spawner {
    program: PathBuf,
    working_dir: Option<PathBuf>,
    clear_env: bool,
    env: Vec<(String, String)>,
    log_dir: Option<PathBuf>,
}

impl Spawner {
    fn new(config: &Config, options: &Options) -> Result<Self, String> {
        // Resolved once here: processes starting together would otherwise race to create the
        // development key (with SECRET_KEY set this only reads it).
        config
            .resolve_secret_key()
            .map_err(|e| format!("cannot prepare the secret key: {e}"))?;
        let data_dir = std::fs::canonicalize(&config.data_dir).unwrap_or(config.data_dir.clone());
        if let Some(dir) = &options.log_dir {
            std::fs::create_dir_all(dir)
                .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        }
        let mut env: Vec<(String, String)> = options.env.clone();
        // Last wins: the harness decides the database and the settings its bounds depend on.
        env.extend(
            [
                ("DATABASE_URL", config.database_url.expose().to_owned()),
                ("DATA_DIR", data_dir.display().to_string()),
                ("HOST", "127.0.0.1".to_owned()),
                // Migrated by the caller; a process restarted while PostgreSQL is down must start
                // anyway (it reports itself unready until the database answers).
                ("AUTO_MIGRATE", "false".to_owned()),
                ("WORKER_CONCURRENCY", config.worker_concurrency.to_string()),
                ("WORKER_LEASE_SECONDS", options.lease.as_secs().to_string()),
                ("SHUTDOWN_GRACE_SECONDS", "10".to_owned()),
            ]
            .map(|(k, v)| (k.to_owned(), v)),
        );
        Ok(Self {
            program: options.program.clone(),
            working_dir: options.working_dir.clone(),
            clear_env: options.clear_env,
            env,
            log_dir: options.log_dir.clone(),
        })
    }

    fn spawn(&self, role: &str, slot: usize) -> Result<Child, String> {
        let mut command = Command::new(&self.program);
        command.arg(role).stdin(Stdio::null()).kill_on_drop(true);
        if let Some(dir) = &self.working_dir {
            command.current_dir(dir);
        }
        if self.clear_env {
            command.env_clear();
            if let Some(path) = std::env::var_os("PATH") {
                command.env("PATH", path);
            }
        }
        command.envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        command.env("PORT", free_port()?.to_string());
        match &self.log_dir {
            Some(dir) => {
                let path = dir.join(format!("{role}-{slot}.log"));
                let file = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&path)
                    .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
                let copy = file
                    .try_clone()
                    .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
                command.stdout(copy).stderr(file);
            }
            None => {
                command.stdout(Stdio::null()).stderr(Stdio::null());
            }
        }
        command
            .spawn()
            .map_err(|e| format!("cannot start `{} {role}`: {e}", self.program.display()))
    }
}

/// A loopback port nobody listens on right now. Another process may take it before the child
/// binds it; the child then exits and is started again on another.
fn free_port() -> Result<u16, String> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .map_err(|e| format!("no free port: {e}"))
}

/// Processes of one role, each in a slot that is refilled when its process dies.
struct Fleet<'a> {
    spawner: &'a Spawner,
    role: &'static str,
    children: Vec<Child>,
    kills: usize,
    unprompted_exits: usize,
}

impl<'a> Fleet<'a> {
    fn start(spawner: &'a Spawner, role: &'static str, size: usize) -> Result<Self, String> {
        let children = (0..size)
            .map(|slot| spawner.spawn(role, slot))
            .collect::<Result<_, _>>()?;
        Ok(Self {
            spawner,
            role,
            children,
            kills: 0,
            unprompted_exits: 0,
        })
    }

    /// Starts again the processes that exited on their own (e.g. a port taken meanwhile).
    fn respawn_exited(&mut self) -> Result<(), String> {
        for slot in 0..self.children.len() {
            if let Ok(Some(_)) = self.children[slot].try_wait() {
                self.unprompted_exits += 1;
                self.children[slot] = self.spawner.spawn(self.role, slot)?;
            }
        }
        Ok(())
    }

    /// SIGKILL to a random process (no drain, no release, no last heartbeat), then its replacement.
    async fn kill_random(&mut self) -> Result<(), String> {
        let slot = rand::random_range(0..self.children.len());
        match self.children[slot].kill().await {
            Ok(()) => self.kills += 1,
            // It had exited by itself just before.
            Err(_) => self.unprompted_exits += 1,
        }
        self.children[slot] = self.spawner.spawn(self.role, slot)?;
        Ok(())
    }

    /// SIGTERM to all (a graceful stop hands back whatever they hold), SIGKILL after the grace.
    async fn stop(mut self) {
        for child in &self.children {
            if let Some(pid) = child.id() {
                // Through kill(1): the standard library can only send SIGKILL.
                let _ = Command::new("kill")
                    .arg("-TERM")
                    .arg(pid.to_string())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status()
                    .await;
            }
        }
        for child in &mut self.children {
            if tokio::time::timeout(STOP_GRACE, child.wait())
                .await
                .is_err()
            {
                let _ = child.kill().await;
            }
        }
    }
}

/// Runs the PostgreSQL restart once, on a blocking thread, while the harness keeps killing.
struct Restarter {
    hook: Option<RestartPostgres>,
    running: Option<JoinHandle<Result<(), String>>>,
    started: bool,
    done: usize,
}

impl Restarter {
    fn new(hook: Option<RestartPostgres>) -> Self {
        Self {
            hook,
            running: None,
            started: false,
            done: 0,
        }
    }

    fn start_once(&mut self) {
        if self.started {
            return;
        }
        if let Some(hook) = self.hook.clone() {
            self.started = true;
            self.running = Some(tokio::task::spawn_blocking(move || hook()));
        }
    }

    /// Collects a finished restart; a failed one ends the run.
    async fn poll(&mut self) -> Result<(), String> {
        if self.running.as_ref().is_some_and(JoinHandle::is_finished) {
            self.finish().await?;
        }
        Ok(())
    }

    /// Waits for a restart in progress.
    async fn finish(&mut self) -> Result<(), String> {
        if let Some(running) = self.running.take() {
            running
                .await
                .map_err(|e| format!("the PostgreSQL restart did not finish: {e}"))?
                .map_err(|e| format!("cannot restart PostgreSQL: {e}"))?;
            self.done += 1;
        }
        Ok(())
    }
}

fn sql_error(e: sqlx::Error) -> String {
    format!("database: {e}")
}

async fn queue_part(
    pool: &PgPool,
    store: &Store,
    config: &Config,
    options: &Options,
    spawner: &Spawner,
) -> Result<QueueReport, String> {
    let tenant = format!("chaos-{}", Uuid::now_v7());
    let settings = queue::Settings::from_config(config);
    let (kind, payload) = if options.job_duration.is_zero() {
        ("noop", json!({}))
    } else {
        (
            "sleep",
            json!({ "seconds": options.job_duration.as_secs_f64() }),
        )
    };
    // All enqueued before the workers start, so the whole run is spent draining under fire.
    let mut enqueued = 0;
    while enqueued < options.jobs {
        let batch = ENQUEUE_BATCH.min(options.jobs - enqueued);
        let jobs = (0..batch)
            .map(|_| NewJob {
                tenant_id: tenant.clone(),
                kind: kind.to_owned(),
                payload: payload.clone(),
                max_attempts: Some(MAX_ATTEMPTS),
                ..NewJob::default()
            })
            .collect();
        let mut tx = store.begin().await.map_err(sql_error)?;
        queue::enqueue_many(&mut tx, &settings, jobs, crate::clock::now())
            .await
            .map_err(sql_error)?;
        tx.commit().await.map_err(sql_error)?;
        enqueued += batch;
    }

    let started = Instant::now();
    let mut fleet = Fleet::start(spawner, "worker", options.workers)?;
    let mut restarter = Restarter::new(options.restart_postgres.clone());
    let mut ticker = tokio::time::interval(options.kill_every);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    ticker.tick().await;
    let jobs = options.jobs as i64;
    let mut timed_out = false;
    loop {
        ticker.tick().await;
        restarter.poll().await?;
        fleet.respawn_exited()?;
        // Unreadable while PostgreSQL restarts: then the kills simply go on.
        if let Ok((succeeded, dead)) = progress(pool, &tenant).await {
            if succeeded + dead >= jobs {
                break;
            }
            if succeeded * 2 >= jobs {
                restarter.start_once();
            }
        }
        if started.elapsed() > options.deadline {
            timed_out = true;
            break;
        }
        if options
            .kill_for
            .is_none_or(|limit| started.elapsed() < limit)
        {
            fleet.kill_random().await?;
        }
    }
    restarter.finish().await?;
    let seconds = started.elapsed().as_secs_f64();
    let (kills, unprompted_exits) = (fleet.kills, fleet.unprompted_exits);
    fleet.stop().await;

    let (total, succeeded, dead, most_attempts): (i64, i64, i64, i32) = sqlx::query_as(
        "SELECT COUNT(*), COUNT(*) FILTER (WHERE status = 'succeeded'), COUNT(*) FILTER (WHERE status = 'dead'), \
         COALESCE(MAX(attempts), 0) FROM jobs WHERE tenant_id = $1",
    )
    .bind(&tenant)
    .fetch_one(pool)
    .await
    .map_err(sql_error)?;
    let runs_by_status: Vec<(String, i64)> = sqlx::query_as(
        "SELECT status, COUNT(*) FROM runs WHERE tenant_id = $1 GROUP BY status ORDER BY COUNT(*) DESC",
    )
    .bind(&tenant)
    .fetch_all(pool)
    .await
    .map_err(sql_error)?;
    let jobs_not_succeeded_once: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM jobs j WHERE j.tenant_id = $1 AND \
         (SELECT COUNT(*) FROM runs r WHERE r.job_id = j.id AND r.status = 'succeeded') <> 1",
    )
    .bind(&tenant)
    .fetch_one(pool)
    .await
    .map_err(sql_error)?;
    let most_extra_runs_of_one_worker: i64 = sqlx::query_scalar(
        "SELECT COALESCE(MAX(n), 0) FROM (SELECT COUNT(*) AS n FROM runs \
         WHERE tenant_id = $1 AND status <> 'succeeded' GROUP BY worker_id) per_worker",
    )
    .bind(&tenant)
    .fetch_one(pool)
    .await
    .map_err(sql_error)?;
    let runs: i64 = runs_by_status.iter().map(|(_, n)| n).sum();
    let concurrency = i64::from(config.worker_concurrency);
    let restarts = restarter.done;
    Ok(QueueReport {
        jobs: usize::try_from(total).unwrap_or(options.jobs),
        workers: options.workers,
        concurrency: config.worker_concurrency,
        lease_seconds: options.lease.as_secs(),
        job_ms: options.job_duration.as_millis(),
        kills,
        unprompted_exits,
        postgres_restarts: restarts,
        succeeded,
        dead,
        runs_by_status,
        runs,
        extra_runs: runs - total,
        bound: (kills + unprompted_exits + restarts * options.workers) as i64 * concurrency,
        most_extra_runs_of_one_worker,
        bound_per_worker: concurrency * (1 + restarts as i64),
        jobs_not_succeeded_once,
        most_attempts,
        timed_out,
        seconds,
    })
}

/// Succeeded and dead jobs of the tenant so far.
async fn progress(pool: &PgPool, tenant: &str) -> Result<(i64, i64), sqlx::Error> {
    sqlx::query_as(
        "SELECT COUNT(*) FILTER (WHERE status = 'succeeded'), COUNT(*) FILTER (WHERE status = 'dead') \
         FROM jobs WHERE tenant_id = $1",
    )
    .bind(tenant)
    .fetch_one(pool)
    .await
}

async fn scheduler_part(
    pool: &PgPool,
    store: &Store,
    config: &Config,
    options: &Options,
    spawner: &Spawner,
) -> Result<SchedulerReport, String> {
    let tenant = format!("chaos-{}", Uuid::now_v7());
    let grace = i32::try_from(config.scheduler_misfire_grace.as_secs()).unwrap_or(30);
    let second = chrono::Duration::seconds(1);
    let now = crate::clock::now();
    // Whole seconds, like the cron schedule, a little ahead so the processes are up by then.
    let first = now.duration_trunc(second).unwrap_or(now) + chrono::Duration::seconds(2);
    let mut tx = store.begin().await.map_err(sql_error)?;
    let mut task_ids = HashSet::new();
    for i in 0..options.tasks {
        let task = TaskRow {
            id: Uuid::now_v7().to_string(),
            tenant_id: tenant.clone(),
            title: format!("chaos {i}"),
            description: String::new(),
            schedule_kind: "cron".to_owned(),
            schedule_expr: "* * * * * *".to_owned(),
            timezone: "UTC".to_owned(),
            payload: "{}".to_owned(),
            priority: 0,
            max_retries: 0,
            timeout_seconds: 60,
            misfire_grace_seconds: grace,
            concurrency: 1,
            concurrency_key: None,
            concurrency_limit: None,
            rate_count: None,
            rate_per_seconds: None,
            dedupe_key: None,
            dedupe_window_seconds: None,
            status: "active".to_owned(),
            next_run_at: Some(first),
            created_by: "chaos".to_owned(),
            created_at: now,
            updated_at: now,
        };
        tasks::insert(&mut tx, &task).await.map_err(sql_error)?;
        task_ids.insert(task.id);
    }
    tx.commit().await.map_err(sql_error)?;

    let started = Instant::now();
    let mut fleet = Fleet::start(spawner, "scheduler", options.schedulers)?;
    let mut restarter = Restarter::new(options.restart_postgres.clone());
    let mut ticker = tokio::time::interval(options.kill_every);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    ticker.tick().await;
    while started.elapsed() < options.scheduler_duration {
        ticker.tick().await;
        restarter.poll().await?;
        fleet.respawn_exited()?;
        if started.elapsed() * 2 >= options.scheduler_duration {
            restarter.start_once();
        }
        fleet.kill_random().await?;
    }
    // The window ends with the kills: every occurrence up to here must be accounted for.
    let now = crate::clock::now();
    let window_end = now.duration_trunc(second).unwrap_or(now);
    restarter.finish().await?;
    // No kills from here on; wait until the schedulers have handled every occurrence of the window.
    let waiting = Instant::now();
    let caught_up = loop {
        fleet.respawn_exited()?;
        let behind: Result<i64, _> = sqlx::query_scalar(
            "SELECT COUNT(*) FROM tasks WHERE tenant_id = $1 AND status = 'active' AND next_run_at <= $2",
        )
        .bind(&tenant)
        .bind(window_end)
        .fetch_one(pool)
        .await;
        if matches!(behind, Ok(0)) {
            break true;
        }
        if waiting.elapsed() > options.deadline {
            break false;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let (kills, unprompted_exits) = (fleet.kills, fleet.unprompted_exits);
    fleet.stop().await;

    let rows: Vec<OccurrenceRow> = sqlx::query_as(
        "SELECT task_id, run_at, status, payload, created_at FROM jobs WHERE tenant_id = $1",
    )
    .bind(&tenant)
    .fetch_all(pool)
    .await
    .map_err(sql_error)?;
    let mut report = SchedulerReport {
        tasks: options.tasks,
        schedulers: options.schedulers,
        misfire_grace_seconds: grace,
        kills,
        unprompted_exits,
        postgres_restarts: restarter.done,
        caught_up,
        ..SchedulerReport::default()
    };
    let window = if window_end >= first {
        (window_end - first).num_seconds() + 1
    } else {
        0
    };
    report.window_seconds = window;
    report.expected = window * options.tasks as i64;
    account_occurrences(&mut report, &rows, &task_ids, first, window);

    // Like deleting the tasks through the API: no more occurrences, pending ones cancelled.
    let now = crate::clock::now();
    sqlx::query(
        "UPDATE tasks SET status = 'deleted', next_run_at = NULL, updated_at = $2 WHERE tenant_id = $1",
    )
    .bind(&tenant)
    .bind(now)
    .execute(pool)
    .await
    .map_err(sql_error)?;
    sqlx::query(
        "UPDATE jobs SET status = 'cancelled', finished_at = $2, updated_at = $2 \
         WHERE tenant_id = $1 AND status IN ('queued', 'failed')",
    )
    .bind(&tenant)
    .bind(now)
    .execute(pool)
    .await
    .map_err(sql_error)?;
    Ok(report)
}

/// A job of a task: task id, due instant, status, payload, when it was enqueued.
type OccurrenceRow = (Option<String>, DateTime<Utc>, String, String, DateTime<Utc>);

/// Matches the tenant's jobs against the schedule: occurrence `k` of a task is `first + k s`;
/// the window is occurrences `0..window`.
fn account_occurrences(
    report: &mut SchedulerReport,
    rows: &[OccurrenceRow],
    task_ids: &HashSet<String>,
    first: DateTime<Utc>,
    window: i64,
) {
    // The index of an instant on the every-second grid, if it is on it.
    let index = |at: DateTime<Utc>| -> Option<i64> {
        let micros = (at - first).num_microseconds()?;
        (micros >= 0 && micros % 1_000_000 == 0).then_some(micros / 1_000_000)
    };
    // How many times each occurrence was handled: enqueued, or covered by a missed record.
    let mut handled: HashMap<(&str, i64), i64> = HashMap::new();
    let mut enqueued: HashSet<(&str, i64)> = HashSet::new();
    for (task_id, run_at, status, payload, created_at) in rows {
        let Some(task_id) = task_id.as_deref().filter(|id| task_ids.contains(*id)) else {
            report.off_schedule += 1;
            continue;
        };
        if status == "missed" {
            // One record covers a run of consecutive occurrences: {"first": …, "last": …}.
            let range: Option<(i64, i64)> =
                serde_json::from_str::<Value>(payload).ok().and_then(|p| {
                    let at = |key: &str| {
                        serde_json::from_value::<DateTime<Utc>>(p[key].clone())
                            .ok()
                            .and_then(index)
                    };
                    Some((at("first")?, at("last")?))
                });
            match range {
                Some((from, to)) => {
                    for k in from..=to {
                        *handled.entry((task_id, k)).or_default() += 1;
                    }
                }
                None => report.off_schedule += 1,
            }
            continue;
        }
        let Some(k) = index(*run_at) else {
            report.off_schedule += 1;
            continue;
        };
        *handled.entry((task_id, k)).or_default() += 1;
        enqueued.insert((task_id, k));
        if k < window {
            let lateness = (*created_at - *run_at).num_milliseconds();
            report.max_enqueue_lateness_ms = report.max_enqueue_lateness_ms.max(lateness);
        }
    }
    report.duplicates = handled.values().map(|n| (n - 1).max(0)).sum();
    for task_id in task_ids {
        for k in 0..window {
            let key = (task_id.as_str(), k);
            if enqueued.contains(&key) {
                report.enqueued += 1;
            } else if handled.contains_key(&key) {
                report.missed += 1;
            } else {
                report.lost += 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + seconds, 0).unwrap()
    }

    fn row(task: &str, seconds: i64) -> OccurrenceRow {
        (
            Some(task.to_owned()),
            at(seconds),
            "queued".to_owned(),
            "{}".to_owned(),
            at(seconds),
        )
    }

    #[test]
    fn occurrences_are_counted_once_lost_or_twice() {
        let tasks: HashSet<String> = ["a".to_owned(), "b".to_owned()].into();
        let missed = json!({ "first": at(2), "last": at(3) }).to_string();
        let rows = vec![
            row("a", 0),
            row("a", 1),
            row("a", 1),
            (
                Some("a".to_owned()),
                at(2),
                "missed".to_owned(),
                missed,
                at(40),
            ),
            row("a", 3),
            row("b", 0),
            row("b", 5),
            (
                Some("b".to_owned()),
                at(1) + chrono::Duration::milliseconds(500),
                "queued".to_owned(),
                "{}".to_owned(),
                at(1),
            ),
        ];
        let mut report = SchedulerReport::default();
        account_occurrences(&mut report, &rows, &tasks, at(0), 4);
        // a: 0, 1 (twice), 2 missed, 3 missed and enqueued; b: 0 only, 5 is after the window.
        assert_eq!(report.enqueued, 4);
        assert_eq!(report.missed, 1);
        assert_eq!(report.duplicates, 2);
        assert_eq!(report.lost, 3);
        assert_eq!(report.off_schedule, 1);
    }

    #[test]
    fn the_defaults_are_the_full_size() {
        #[derive(clap::Parser)]
        struct Command {
            #[command(flatten)]
            args: Args,
        }
        let args = <Command as clap::Parser>::try_parse_from(["chaos"])
            .unwrap()
            .args;
        let options = Options::from_args(PathBuf::from("docket"), &args);
        assert_eq!(options.jobs, 20_000);
        assert_eq!(options.workers, 4);
        assert_eq!(options.kill_every, Duration::from_secs(1));
        assert!(options.kill_for.is_none() && options.restart_postgres.is_none());
    }
}
