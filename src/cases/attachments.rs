//! Files attached to cases (being written).

use utoipa_axum::router::OpenApiRouter;

pub fn routes() -> OpenApiRouter<crate::app::AppState> {
    OpenApiRouter::new()
}
