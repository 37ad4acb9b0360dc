//! HTTP API tests: the real router served on a free port, against SQLite and PostgreSQL.

#[path = "../support/mod.rs"]
mod support;

mod accounts;
mod assessment;
mod attachments;
mod audit;
mod auth;
mod cases;
mod console;
mod contract;
mod errors;
mod events;
mod health;
mod knowledge;
mod observability;
mod pipelines;
mod policy;
mod reports;
mod review_desk;
mod review_machine;
mod rule_bypasses;
mod shutdown;
mod tasks;
