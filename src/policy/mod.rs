//! Decision policy: a tenant's versioned, ordered rules that route each case.

pub mod engine;
