//! Pipelines: a task's payload may hold declarative steps that the worker runs one by one.

pub mod tools;
