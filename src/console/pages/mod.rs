//! The console's pages, one module per audience.

pub mod admin;
pub mod auth;
pub mod operate;
pub mod reports;
pub mod review;
pub mod supervise;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};

use super::layout;
use super::session::Console;
use crate::auth::Role;

/// Any other `/console/…` address: a page for people, not the API's JSON.
pub async fn not_found() -> Response {
    layout::message_page(
        StatusCode::NOT_FOUND,
        "Not found",
        "There is no console page at this address.",
    )
}

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
