//! Decision policies: the document, its validation and evaluation ([`engine`]), and its shape for
//! the OpenAPI document ([`schema`]). Storage and versions are the application's.

pub mod engine;
pub mod schema;

pub use engine::Policy;
