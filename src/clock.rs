//! The current time as Docket stores it: UTC, truncated to microseconds (PostgreSQL's precision),
//! so a value read back equals the value written on both backends.

use chrono::{DateTime, SubsecRound, Utc};

pub fn now() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(6)
}
