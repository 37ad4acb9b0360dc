//! Decision policy: a tenant's versioned, ordered rules that route each case (priority, risk
//! level, flags, dual control, required reason, SLA, queue, required role, AI auto-decision).
//! The language is described in docs/policy.md. Until an admin stores one, the default
//! built from the environment (`DUAL_CONTROL_THRESHOLD`, `HIGH_PRIORITY_THRESHOLD`, …) applies as
//! version 0. Every change is a new version; cases record the version that routed them.

pub mod http;

use chrono::{DateTime, Utc};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::config::Config;
use crate::store::Tx;
use crate::with_tx;
use docket_rules::policy::Policy;

/// The policy in force until a tenant stores one (version 0), from the environment.
pub fn environment_default(config: &Config) -> Policy {
    Policy::from_settings(
        config.high_priority_threshold,
        config.dual_control_threshold,
        config.default_sla_hours,
        config.ai_enabled,
        config.ai_confidence_threshold,
    )
}

pub fn routes() -> OpenApiRouter<crate::app::AppState> {
    OpenApiRouter::new()
        .routes(routes!(http::get_policy, http::put_policy))
        .routes(routes!(http::list_versions))
        .routes(routes!(http::simulate))
}

/// A policy version as stored (or the environment default, version 0).
#[derive(Debug, Clone)]
pub struct Versioned {
    pub version: i32,
    pub policy: Policy,
    pub created_by: Option<String>,
    pub created_at: Option<DateTime<Utc>>,
}

#[derive(sqlx::FromRow)]
struct PolicyRow {
    version: i32,
    document: String,
    created_by: String,
    created_at: DateTime<Utc>,
}

impl PolicyRow {
    /// Stored documents were validated when saved; one that no longer parses (a newer binary's
    /// format read by an older one) falls back to the environment default rather than failing cases.
    fn into_versioned(self, config: &Config) -> Versioned {
        let policy = serde_json::from_str(&self.document)
            .ok()
            .and_then(|doc| Policy::parse(&doc).ok())
            .unwrap_or_else(|| {
                tracing::error!(
                    version = self.version,
                    "stored policy does not parse; using the environment default"
                );
                environment_default(config)
            });
        Versioned {
            version: self.version,
            policy,
            created_by: Some(self.created_by),
            created_at: Some(self.created_at),
        }
    }
}

/// The policy in force for `tenant_id`, read inside `tx` so a case is routed by the version it records.
pub async fn current(
    tx: &mut Tx,
    config: &Config,
    tenant_id: &str,
) -> Result<Versioned, sqlx::Error> {
    let row: Option<PolicyRow> = with_tx!(tx, conn => {
        sqlx::query_as(
            "SELECT version, document, created_by, created_at FROM policies \
             WHERE tenant_id = $1 ORDER BY version DESC LIMIT 1",
        )
        .bind(tenant_id)
        .fetch_optional(conn)
        .await
    })?;
    Ok(match row {
        Some(row) => row.into_versioned(config),
        None => Versioned {
            version: 0,
            policy: environment_default(config),
            created_by: None,
            created_at: None,
        },
    })
}

/// Stores `policy` as the tenant's next version and returns the version number.
async fn save(
    tx: &mut Tx,
    tenant_id: &str,
    policy: &Policy,
    created_by: &str,
    now: DateTime<Utc>,
) -> Result<i32, sqlx::Error> {
    let latest: Option<i32> = with_tx!(tx, conn => {
        sqlx::query_scalar("SELECT MAX(version) FROM policies WHERE tenant_id = $1")
            .bind(tenant_id)
            .fetch_one(conn)
            .await
    })?;
    let version = latest.unwrap_or(0) + 1;
    with_tx!(tx, conn => {
        sqlx::query(
            "INSERT INTO policies (tenant_id, version, document, created_by, created_at) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(tenant_id)
        .bind(version)
        .bind(policy.to_document().to_string())
        .bind(created_by)
        .bind(now)
        .execute(conn)
        .await
        .map(|_| ())
    })?;
    Ok(version)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_environment_default_uses_the_environment() {
        let vars = [
            ("DUAL_CONTROL_THRESHOLD", "2500.50"),
            ("HIGH_PRIORITY_THRESHOLD", "7000"),
            ("DEFAULT_SLA_HOURS", "12"),
            ("AI_ENABLED", "true"),
            ("AI_CONFIDENCE_THRESHOLD", "0.9"),
        ];
        let config = Config::from_lookup(|name| {
            vars.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        })
        .expect("config");
        let decimal = |s: &str| s.parse::<rust_decimal::Decimal>().unwrap();
        assert_eq!(
            environment_default(&config),
            Policy::from_settings(decimal("7000"), decimal("2500.5"), 12, true, 0.9)
        );
    }
}
