//! Cases: items that need a decision (a cheque, a payment, an agent's proposed action), routed by
//! the tenant's policy to an automatic decision or to the review queue, with their history and
//! attachments.

pub mod attachments;

use utoipa_axum::router::OpenApiRouter;

pub fn routes() -> OpenApiRouter<crate::app::AppState> {
    OpenApiRouter::new().merge(attachments::routes())
}
