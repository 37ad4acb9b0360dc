//! Docket's pure rules: what a schedule means ([`schedule`]), how a decision policy routes a case
//! ([`policy`]), step input templates ([`template`]) and step conditions ([`condition`]), what
//! format a document is ([`document`]) and how its text is cut for retrieval ([`chunk`]), and what
//! a topic name is ([`topic`]).
//! Nothing here does I/O or knows the application: the crate depends on parsing libraries only,
//! so the fuzz targets and unit tests build it alone.

pub mod chunk;
pub mod condition;
pub mod document;
pub mod policy;
pub mod schedule;
pub mod template;
pub mod topic;
