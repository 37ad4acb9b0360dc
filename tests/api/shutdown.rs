use std::time::Duration;

use axum::routing::get;
use docket::app::{AppState, Role};
use reqwest::StatusCode;
use tokio::sync::mpsc;

use crate::on_both_backends;
use crate::support::{Backend, TestApp, TestDatabase, test_config};

/// The real router plus a route that takes `seconds` to answer, served by the real server loop.
/// The receiver yields once for every request that has reached the slow handler.
async fn app_with_slow_route(
    backend: Backend,
    grace_seconds: &str,
    seconds: u64,
) -> Option<(TestApp, mpsc::UnboundedReceiver<()>)> {
    let db = TestDatabase::new(backend).await?;
    let config = test_config(&db, &[("SHUTDOWN_GRACE_SECONDS", grace_seconds)]);
    let state = AppState::initialise(config).await.unwrap();
    let (arrived, arrivals) = mpsc::unbounded_channel();
    let router = docket::http::router(state.clone(), Role::All).route(
        "/slow",
        get(move || async move {
            let _ = arrived.send(());
            tokio::time::sleep(Duration::from_secs(seconds)).await;
            "done"
        }),
    );
    Some((TestApp::serve(db, state, Role::All, router).await, arrivals))
}

on_both_backends! {
    async fn in_flight_requests_finish_before_exit(backend) {
        let Some((app, mut arrivals)) = app_with_slow_route(backend, "30", 1).await else { return };
        let in_flight = tokio::spawn(app.client.get(app.url("/slow")).send());
        arrivals.recv().await.unwrap();
        let base = app.base.clone();
        app.shutdown().await.unwrap();

        let response = in_flight.await.unwrap().unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.text().await.unwrap(), "done");
        // The listener is closed once the server has stopped.
        assert!(crate::support::get(format!("{base}/health")).await.is_err());
    }

    async fn the_server_stops_after_the_grace_period_even_if_requests_hang(backend) {
        let Some((app, mut arrivals)) = app_with_slow_route(backend, "1", 600).await else { return };
        let in_flight = tokio::spawn(app.client.get(app.url("/slow")).send());
        arrivals.recv().await.unwrap();
        // Returns after the 1 s grace period (the helper allows 30 s); the process then exits,
        // which ends the hung request.
        app.shutdown().await.unwrap();
        assert!(!in_flight.is_finished(), "the slow request cannot have completed");
        in_flight.abort();
    }
}
