//! Crash test, small size: `docket worker` and `docket scheduler` processes killed with SIGKILL at
//! random and PostgreSQL restarted while they work. Every job succeeds exactly once, runs beyond one
//! per job stay within what the kills and the restart can explain, and no task occurrence is lost or
//! enqueued twice. `docket bench chaos` runs the same harness at full size.

use std::sync::Arc;

use docket::chaos::{Args, Options, RestartPostgres};
use docket::config::Config;
use docket::store::Store;

use crate::support::{PgServer, docket_bin, in_ci};

/// The last lines each process wrote, to explain a failure.
fn log_tails(dir: &std::path::Path) -> String {
    let mut tails = String::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return tails;
    };
    for entry in entries.flatten() {
        let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let tail = lines[lines.len().saturating_sub(15)..].join("\n");
        tails.push_str(&format!("--- {}\n{tail}\n", entry.path().display()));
    }
    tails
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_workers_and_schedulers_lose_nothing_and_repeat_little() {
    // A server of its own: restarting the shared one would break the other tests' connections.
    let pg = match PgServer::start() {
        Ok(pg) => Arc::new(pg),
        Err(why) => {
            assert!(!in_ci(), "PostgreSQL is required when CI is set: {why}");
            eprintln!("skipping: {why}");
            return;
        }
    };
    let dir = tempfile::tempdir().unwrap();
    let url = pg.url("postgres");
    let data_dir = dir.path().join("data").display().to_string();
    let config = Config::from_lookup(|name| match name {
        "DATABASE_URL" => Some(url.clone()),
        "DATA_DIR" => Some(data_dir.clone()),
        "DB_POOL_SIZE" => Some("4".to_owned()),
        "WORKER_CONCURRENCY" => Some("8".to_owned()),
        _ => None,
    })
    .unwrap();
    let store = Store::connect(&config).await.unwrap();
    store.migrate().await.unwrap();

    // 2,000 jobs of 150 ms on 4 × 8 slots take at least 9 s, so the kills (one a second for
    // 10 s) land while the workers are busy. Nothing below depends on how long anything takes.
    let args = Args {
        jobs: 2_000,
        workers: 4,
        job_ms: 150,
        // Long enough that a busy machine does not let a live worker's lease lapse (which the
        // bound does not cover), short enough that killed workers' jobs come back soon.
        lease_seconds: 5,
        kill_every_ms: 1_000,
        kill_seconds: Some(10),
        tasks: 40,
        schedulers: 2,
        scheduler_seconds: 8,
        restart_postgres: None,
        logs: Some(dir.path().join("logs")),
        deadline_seconds: 180,
    };
    let mut options = Options::from_args(docket_bin().to_path_buf(), &args);
    options.working_dir = Some(dir.path().to_path_buf());
    options.clear_env = true;
    options.env = vec![("DB_POOL_SIZE".to_owned(), "4".to_owned())];
    // Down for 2 s: longer than the tasks' period, so at least one fire and some job outcomes
    // meet a database that is not there.
    let server = pg.clone();
    options.restart_postgres = Some(Arc::new(move || {
        server.stop();
        std::thread::sleep(std::time::Duration::from_secs(2));
        server.resume()
    }) as RestartPostgres);

    let report = docket::chaos::run(&config, &store, options)
        .await
        .unwrap_or_else(|e| {
            panic!(
                "the run failed: {e}\n{}",
                log_tails(&dir.path().join("logs"))
            )
        });
    eprintln!("{report}");
    let problems = report.problems();
    assert!(
        problems.is_empty(),
        "{report}\n{}",
        log_tails(&dir.path().join("logs"))
    );

    let queue = report.queue.as_ref().expect("the queue part ran");
    assert_eq!(queue.succeeded, 2_000, "{report}");
    assert_eq!(queue.jobs_not_succeeded_once, 0, "{report}");
    assert_eq!(queue.postgres_restarts, 1, "{report}");
    assert!(
        queue.kills >= 3,
        "the workers were killed while busy: {report}"
    );
    assert!(queue.extra_runs <= queue.bound, "{report}");
    assert_eq!(
        queue.bound,
        (queue.kills + queue.unprompted_exits + 4) as i64 * 8,
        "{report}"
    );
    let scheduler = report.scheduler.as_ref().expect("the scheduler part ran");
    assert_eq!(scheduler.postgres_restarts, 1, "{report}");
    assert!(scheduler.kills >= 3, "{report}");
    assert!(scheduler.caught_up, "{report}");
    assert!(scheduler.expected >= 40 * 3, "{report}");
    assert_eq!(scheduler.duplicates, 0, "{report}");
    assert_eq!(scheduler.lost, 0, "{report}");
    assert_eq!(
        scheduler.enqueued + scheduler.missed,
        scheduler.expected,
        "{report}"
    );
    for line in [
        "worker kills (SIGKILL)",
        "all succeeded                 yes",
        "duplicate occurrences         0",
        "lost occurrences              0",
        "result                          PASS",
    ] {
        assert!(
            report.to_string().contains(line),
            "{line} missing:\n{report}"
        );
    }
    store.close().await;
}

#[test]
fn the_chaos_benchmark_refuses_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/docket.db", dir.path().display());
    let out = crate::run(
        dir.path(),
        &[("DATABASE_URL", url.as_str())],
        &["bench", "chaos", "--jobs", "10"],
    );
    assert_eq!(out.status.code(), Some(1));
    let stderr = crate::text(&out.stderr);
    assert!(stderr.contains("needs PostgreSQL"), "{stderr}");
}
