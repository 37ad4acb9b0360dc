//! Docket: a self-hosted backend for scheduled automation and AI-assisted decisions.
//! See `DESIGN.md` in the shared docs for the architecture; each module owns one domain.

pub mod admin;
pub mod app;
pub mod audit;
pub mod auth;
pub mod backup;
pub mod cases;
pub mod chaos;
pub mod cli;
pub mod clock;
pub mod config;
pub mod console;
pub mod events;
pub mod http;
pub mod knowledge;
pub mod nodes;
pub mod objects;
pub mod ops;
pub mod pipeline;
pub mod policy;
pub mod private_files;
pub mod queue;
pub mod reports;
pub mod review;
pub mod runs;
pub mod scheduler;
pub mod store;
pub mod telemetry;
pub mod tls;
