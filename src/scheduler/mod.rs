//! Scheduled work: tasks, their schedules, and the scheduler that turns due occurrences into jobs.

pub mod schedule;
