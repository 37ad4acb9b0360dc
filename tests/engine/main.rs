//! The job queue and workers against real databases (SQLite and PostgreSQL).

#[path = "../support/mod.rs"]
mod support;

mod job_keys;
mod outage;
mod queue;
mod scheduler;
