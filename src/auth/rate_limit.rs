//! Request rate limits and failure counters. With `REDIS_URL` they live in Redis and are shared by
//! every API replica; otherwise in this process. The limit is a sliding window over two one-minute
//! buckets (the previous bucket weighted by how much of it still overlaps the last 60 seconds).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use redis::AsyncCommands;
use tokio::sync::OnceCell;

use super::AuthError;

/// In-process maps are pruned of stale entries once they grow past this many keys.
const PRUNE_AT: usize = 100_000;

pub struct RateLimiter {
    backend: Backend,
}

enum Backend {
    InProcess {
        windows: Mutex<HashMap<String, Window>>,
        failures: Mutex<HashMap<String, (u32, u64)>>,
    },
    Redis {
        client: redis::Client,
        connection: OnceCell<redis::aio::ConnectionManager>,
    },
}

#[derive(Clone, Copy, Default)]
struct Window {
    minute: u64,
    current: u32,
    previous: u32,
}

fn now_seconds() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

/// Weighted count of the last 60 seconds and whether it exceeds `limit`.
fn sliding_count(previous: u32, current: u32, now: u64) -> f64 {
    let elapsed = (now % 60) as f64 / 60.0;
    f64::from(previous) * (1.0 - elapsed) + f64::from(current)
}

fn limited(limit: u32, count: f64, now: u64) -> Result<(), AuthError> {
    if count > f64::from(limit) {
        Err(AuthError::RateLimited {
            limit,
            retry_after_seconds: (60 - now % 60).max(1),
        })
    } else {
        Ok(())
    }
}

impl RateLimiter {
    pub fn in_process() -> Self {
        Self {
            backend: Backend::InProcess {
                windows: Mutex::new(HashMap::new()),
                failures: Mutex::new(HashMap::new()),
            },
        }
    }

    pub fn redis(client: redis::Client) -> Self {
        Self {
            backend: Backend::Redis {
                client,
                connection: OnceCell::new(),
            },
        }
    }

    async fn connection(
        client: &redis::Client,
        cell: &OnceCell<redis::aio::ConnectionManager>,
    ) -> Option<redis::aio::ConnectionManager> {
        let result = cell
            .get_or_try_init(|| redis::aio::ConnectionManager::new(client.clone()))
            .await;
        match result {
            Ok(connection) => Some(connection.clone()),
            Err(e) => {
                // Limits are a safeguard, not the source of truth: while Redis is away, let requests through.
                tracing::warn!(error = %e, "Redis unavailable; rate limits not enforced");
                None
            }
        }
    }

    /// Counts one request for `key` and fails with 429 when the last minute exceeds `per_minute`.
    pub async fn check(&self, key: &str, per_minute: u32) -> Result<(), AuthError> {
        let now = now_seconds();
        let minute = now / 60;
        match &self.backend {
            Backend::InProcess { windows, .. } => {
                let mut windows = windows
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner());
                if windows.len() > PRUNE_AT {
                    windows.retain(|_, w| w.minute + 1 >= minute);
                }
                let window = windows.entry(key.to_owned()).or_default();
                if window.minute != minute {
                    window.previous = if window.minute + 1 == minute {
                        window.current
                    } else {
                        0
                    };
                    window.current = 0;
                    window.minute = minute;
                }
                window.current += 1;
                limited(
                    per_minute,
                    sliding_count(window.previous, window.current, now),
                    now,
                )
            }
            Backend::Redis { client, connection } => {
                let Some(mut conn) = Self::connection(client, connection).await else {
                    return Ok(());
                };
                let current_key = format!("docket:rl:{key}:{minute}");
                let previous_key = format!("docket:rl:{key}:{}", minute.saturating_sub(1));
                let result: redis::RedisResult<(u32, (), Option<u32>)> = redis::pipe()
                    .atomic()
                    .incr(&current_key, 1)
                    .expire(&current_key, 120)
                    .get(&previous_key)
                    .query_async(&mut conn)
                    .await;
                match result {
                    Ok((current, (), previous)) => limited(
                        per_minute,
                        sliding_count(previous.unwrap_or(0), current, now),
                        now,
                    ),
                    Err(e) => {
                        tracing::warn!(error = %e, "Redis rate limit check failed; not enforced");
                        Ok(())
                    }
                }
            }
        }
    }

    /// Counts a failure (e.g. a failed login) for `key`, forgotten `window_seconds` after the first.
    /// Returns the count in the window and the seconds until it ends (0 and the whole window when
    /// Redis is away: not enforced then).
    pub async fn record_failure(
        &self,
        key: &str,
        window_seconds: u64,
    ) -> Result<(u32, u64), AuthError> {
        let now = now_seconds();
        match &self.backend {
            Backend::InProcess { failures, .. } => {
                let mut failures = failures
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner());
                if failures.len() > PRUNE_AT {
                    failures.retain(|_, (_, expires)| *expires > now);
                }
                let entry = failures
                    .entry(key.to_owned())
                    .or_insert((0, now + window_seconds));
                if entry.1 <= now {
                    *entry = (0, now + window_seconds);
                }
                entry.0 += 1;
                Ok((entry.0, entry.1 - now))
            }
            Backend::Redis { client, connection } => {
                let Some(mut conn) = Self::connection(client, connection).await else {
                    return Ok((0, window_seconds));
                };
                let key = format!("docket:fail:{key}");
                let count: redis::RedisResult<u32> = conn.incr(&key, 1).await;
                if count.as_ref().is_ok_and(|c| *c == 1) {
                    let _: redis::RedisResult<()> = conn
                        .expire(&key, i64::try_from(window_seconds).unwrap_or(i64::MAX))
                        .await;
                }
                let ttl: i64 = conn.ttl(&key).await.unwrap_or(-1);
                match count {
                    Ok(count) => Ok((count, u64::try_from(ttl).unwrap_or(1).max(1))),
                    Err(e) => {
                        tracing::warn!(error = %e, "Redis failure counter not updated");
                        Ok((0, window_seconds))
                    }
                }
            }
        }
    }

    /// Counts an attempt for `key` before it is made, so that a parallel burst is refused before it
    /// costs anything (failures counted afterwards would let the whole burst through). When the
    /// attempt makes more than `limit` in the window: the seconds until the window ends. An attempt
    /// that turns out not to be a failure is taken back with [`Self::forgive`].
    pub async fn attempt(
        &self,
        key: &str,
        limit: u32,
        window_seconds: u64,
    ) -> Result<Option<u64>, AuthError> {
        let (count, retry_after) = self.record_failure(key, window_seconds).await?;
        Ok((count > limit).then_some(retry_after.max(1)))
    }

    /// Takes back one failure counted for `key` (an attempt that succeeded).
    pub async fn forgive(&self, key: &str) -> Result<(), AuthError> {
        match &self.backend {
            Backend::InProcess { failures, .. } => {
                let mut failures = failures
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner());
                if let Some(entry) = failures.get_mut(key) {
                    entry.0 = entry.0.saturating_sub(1);
                }
                Ok(())
            }
            Backend::Redis { client, connection } => {
                let Some(mut conn) = Self::connection(client, connection).await else {
                    return Ok(());
                };
                // Only an existing counter: a plain DECR would create one without an expiry.
                let result: redis::RedisResult<i64> = redis::cmd("EVAL")
                    .arg("if redis.call('EXISTS', KEYS[1]) == 1 then return redis.call('DECR', KEYS[1]) end return 0")
                    .arg(1)
                    .arg(format!("docket:fail:{key}"))
                    .query_async(&mut conn)
                    .await;
                if let Err(e) = result {
                    tracing::warn!(error = %e, "Redis failure counter not taken back");
                }
                Ok(())
            }
        }
    }

    /// Forgets every failure counted for `key` (a successful sign-in ends a lockout).
    pub async fn clear(&self, key: &str) -> Result<(), AuthError> {
        match &self.backend {
            Backend::InProcess { failures, .. } => {
                failures
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner())
                    .remove(key);
                Ok(())
            }
            Backend::Redis { client, connection } => {
                let Some(mut conn) = Self::connection(client, connection).await else {
                    return Ok(());
                };
                let result: redis::RedisResult<()> = conn.del(format!("docket:fail:{key}")).await;
                if let Err(e) = result {
                    tracing::warn!(error = %e, "Redis failure counter not cleared");
                }
                Ok(())
            }
        }
    }

    /// When `key` has at least `limit` failures in its window: the seconds until the window ends.
    pub async fn failures_exceeded(&self, key: &str, limit: u32) -> Result<Option<u64>, AuthError> {
        let now = now_seconds();
        match &self.backend {
            Backend::InProcess { failures, .. } => {
                let failures = failures
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner());
                Ok(failures
                    .get(key)
                    .filter(|(count, expires)| *count >= limit && *expires > now)
                    .map(|(_, expires)| expires - now))
            }
            Backend::Redis { client, connection } => {
                let Some(mut conn) = Self::connection(client, connection).await else {
                    return Ok(None);
                };
                let key = format!("docket:fail:{key}");
                let result: redis::RedisResult<(Option<u32>, i64)> = redis::pipe()
                    .get(&key)
                    .ttl(&key)
                    .query_async(&mut conn)
                    .await;
                match result {
                    Ok((Some(count), ttl)) if count >= limit => {
                        Ok(Some(u64::try_from(ttl).unwrap_or(1).max(1)))
                    }
                    Ok(_) => Ok(None),
                    Err(e) => {
                        tracing::warn!(error = %e, "Redis failure counter unreadable");
                        Ok(None)
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn in_process_limit_counts_per_key() {
        let limiter = RateLimiter::in_process();
        for _ in 0..3 {
            limiter.check("a", 3).await.unwrap();
        }
        let err = limiter.check("a", 3).await.unwrap_err();
        assert!(
            matches!(err, AuthError::RateLimited { limit: 3, retry_after_seconds } if (1..=60).contains(&retry_after_seconds))
        );
        limiter.check("b", 3).await.unwrap();
    }

    #[tokio::test]
    async fn failures_count_until_the_limit() {
        let limiter = RateLimiter::in_process();
        for _ in 0..2 {
            assert_eq!(limiter.failures_exceeded("ip", 3).await.unwrap(), None);
            limiter.record_failure("ip", 600).await.unwrap();
        }
        limiter.record_failure("ip", 600).await.unwrap();
        let retry = limiter.failures_exceeded("ip", 3).await.unwrap().unwrap();
        assert!((590..=600).contains(&retry), "{retry}");
    }

    #[tokio::test]
    async fn attempts_count_before_and_can_be_taken_back() {
        let limiter = RateLimiter::in_process();
        for _ in 0..2 {
            assert_eq!(limiter.attempt("k", 2, 600).await.unwrap(), None);
        }
        let retry = limiter.attempt("k", 2, 600).await.unwrap().unwrap();
        assert!((590..=600).contains(&retry), "{retry}");
        limiter.forgive("k").await.unwrap();
        limiter.forgive("k").await.unwrap();
        assert_eq!(limiter.attempt("k", 2, 600).await.unwrap(), None);
        limiter.clear("k").await.unwrap();
        assert_eq!(limiter.failures_exceeded("k", 1).await.unwrap(), None);
    }

    #[test]
    fn the_previous_minute_weighs_less_as_it_ages() {
        assert!((sliding_count(60, 0, 0) - 60.0).abs() < 1e-9);
        assert!((sliding_count(60, 0, 30) - 30.0).abs() < 1e-9);
        assert!((sliding_count(60, 10, 45) - 25.0).abs() < 1e-9);
    }
}
