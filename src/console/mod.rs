//! The web console at `/console`: server-rendered pages for reviewers, supervisors, operators and
//! admins, with a little optional JavaScript. Every page is a client of the JSON API, called
//! in-process with the signed-in user's token ([`client::Api`]), so the console can do exactly what
//! the API allows that user, validated and audited the same way, and owns no SQL of its own.

mod assets;
mod client;
mod layout;
mod pages;
mod session;

use axum::Router;
use axum::routing::{any, get, post};

pub use client::InternalApi;

use crate::app::AppState;

/// The console's routes, calling `api` for everything they show or change.
pub fn routes(state: AppState, api: InternalApi) -> Router<AppState> {
    Router::new()
        .route("/console", get(pages::home))
        .route("/console/", get(pages::home))
        .route(
            "/console/login",
            get(pages::auth::login_page).post(pages::auth::login),
        )
        .route("/console/logout", post(pages::auth::logout))
        .merge(pages::review::routes())
        .merge(pages::supervise::routes())
        .merge(pages::reports::routes())
        .merge(pages::operate::routes())
        .merge(pages::admin::routes())
        .route(assets::CSS_PATH, get(assets::css))
        .route(assets::JS_PATH, get(assets::js))
        .route("/console/{*unknown}", any(pages::not_found))
        .layer(axum::middleware::from_fn_with_state(
            state,
            session::middleware,
        ))
        .layer(axum::Extension(api))
}
