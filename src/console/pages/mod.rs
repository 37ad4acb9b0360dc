//! The console's pages, one module per audience.

pub mod admin;
pub mod auth;
pub mod operate;
pub mod reports;
pub mod review;
pub mod supervise;

use axum::response::{IntoResponse, Redirect, Response};

use super::session::Console;
use crate::auth::Role;

/// `/console`: each role starts where its work is.
pub async fn home(console: Console) -> Response {
    let to = match console.user.role {
        _ if console.user.platform_admin => "/console/supervise",
        Role::Admin | Role::Supervisor => "/console/supervise",
        Role::Reviewer => "/console/review",
        Role::Viewer => "/console/tasks",
    };
    Redirect::to(to).into_response()
}
