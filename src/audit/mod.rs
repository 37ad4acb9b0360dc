//! The audit log: append-only, hash-chained per tenant. Each record stores the SHA-256 of its own
//! content together with the previous record's hash, so a changed, removed or reordered row breaks
//! the chain and [`verify`] finds it. No code path updates or deletes records; database triggers
//! refuse it as well.

pub mod http;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::store::{Store, Tx};
use crate::{with_pool, with_tx};

/// The `prev_hash` of a tenant's first record.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// The chain for events that belong to no tenant (e.g. a failed login for an unknown email).
pub const PLATFORM_CHAIN: &str = "platform";

/// Who did it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Actor {
    User(String),
    ApiKey(String),
    /// Docket itself (jobs, sweeps, the CLI).
    System,
    /// Someone not (yet) authenticated, e.g. a failed login.
    Anonymous,
}

impl Actor {
    fn parts(&self) -> (&'static str, &str) {
        match self {
            Self::User(id) => ("user", id),
            Self::ApiKey(id) => ("api_key", id),
            Self::System => ("system", ""),
            Self::Anonymous => ("anonymous", ""),
        }
    }
}

/// `user:<id>`, `api_key:<id>`, `system` or `anonymous`: how other records name who acted.
impl std::fmt::Display for Actor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.parts() {
            (kind, "") => f.write_str(kind),
            (kind, id) => write!(f, "{kind}:{id}"),
        }
    }
}

/// The routes of this module, for the versioned API.
pub fn routes() -> utoipa_axum::router::OpenApiRouter<crate::app::AppState> {
    use utoipa_axum::routes;
    utoipa_axum::router::OpenApiRouter::new()
        .routes(routes!(http::list))
        .routes(routes!(http::verify))
        .routes(routes!(http::export))
}

/// Where a request came from, recorded with every audit record it causes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Origin {
    pub request_id: Option<String>,
    pub ip: Option<String>,
}

/// An audit record to append.
#[derive(Debug, Clone)]
pub struct Event<'a> {
    pub tenant_id: &'a str,
    pub actor: &'a Actor,
    /// Dotted verb such as `user.create` or `auth.login_failed`.
    pub action: &'a str,
    pub target_type: &'a str,
    pub target_id: &'a str,
    /// What changed (before/after summary); never secrets.
    pub summary: Value,
    pub origin: &'a Origin,
}

#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct Record {
    pub tenant_id: String,
    pub seq: i64,
    pub id: String,
    pub occurred_at: DateTime<Utc>,
    pub actor_type: String,
    pub actor_id: String,
    pub action: String,
    pub target_type: String,
    pub target_id: String,
    /// What changed (an object). Stored and hashed as the JSON text it was written as.
    #[serde(serialize_with = "summary_as_json")]
    #[schema(value_type = Object)]
    pub summary: String,
    pub request_id: Option<String>,
    pub ip: Option<String>,
    pub prev_hash: String,
    pub hash: String,
}

/// Writes the stored JSON text as the JSON it is, not as a string holding JSON.
fn summary_as_json<S: serde::Serializer>(summary: &str, serializer: S) -> Result<S::Ok, S::Error> {
    match serde_json::from_str::<Value>(summary) {
        Ok(value) => serde::Serialize::serialize(&value, serializer),
        // Every summary is written from a `Value`; text that is not JSON is still shown, as text.
        Err(_) => serializer.serialize_str(summary),
    }
}

impl Record {
    /// The hash of this record's content and its predecessor's hash.
    fn compute_hash(&self) -> String {
        let canonical = json!([
            self.prev_hash,
            self.tenant_id,
            self.seq,
            self.id,
            self.occurred_at
                .to_rfc3339_opts(SecondsFormat::Micros, true),
            self.actor_type,
            self.actor_id,
            self.action,
            self.target_type,
            self.target_id,
            self.summary,
            self.request_id,
            self.ip,
        ]);
        hex::encode(Sha256::digest(canonical.to_string().as_bytes()))
    }
}

const COLUMNS: &str = "tenant_id, seq, id, occurred_at, actor_type, actor_id, action, target_type, target_id, \
                       summary, request_id, ip, prev_hash, hash";

/// Appends a record inside the caller's transaction, so it commits (or not) with the change it describes.
pub async fn append(tx: &mut Tx, event: Event<'_>) -> Result<Record, sqlx::Error> {
    if let Tx::Postgres(tx) = tx {
        // Serialises appends per tenant chain; SQLite's write transactions are serial already.
        sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))")
            .bind(event.tenant_id)
            .execute(&mut **tx)
            .await?;
    }
    let last: Option<(i64, String)> = with_tx!(tx, conn => {
        sqlx::query_as("SELECT seq, hash FROM audit_log WHERE tenant_id = $1 ORDER BY seq DESC LIMIT 1")
            .bind(event.tenant_id)
            .fetch_optional(conn)
            .await
    })?;
    let (seq, prev_hash) = last.map_or((1, GENESIS_HASH.to_owned()), |(seq, hash)| (seq + 1, hash));
    let (actor_type, actor_id) = event.actor.parts();
    let mut record = Record {
        tenant_id: event.tenant_id.to_owned(),
        seq,
        id: Uuid::now_v7().to_string(),
        // Both databases keep microseconds; hash what will be read back.
        occurred_at: crate::clock::now(),
        actor_type: actor_type.to_owned(),
        actor_id: actor_id.to_owned(),
        action: event.action.to_owned(),
        target_type: event.target_type.to_owned(),
        target_id: event.target_id.to_owned(),
        summary: event.summary.to_string(),
        request_id: event.origin.request_id.clone(),
        ip: event.origin.ip.clone(),
        prev_hash,
        hash: String::new(),
    };
    record.hash = record.compute_hash();
    with_tx!(tx, conn => {
        sqlx::query(
            "INSERT INTO audit_log (tenant_id, seq, id, occurred_at, actor_type, actor_id, action, target_type, \
             target_id, summary, request_id, ip, prev_hash, hash) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)",
        )
        .bind(&record.tenant_id)
        .bind(record.seq)
        .bind(&record.id)
        .bind(record.occurred_at)
        .bind(&record.actor_type)
        .bind(&record.actor_id)
        .bind(&record.action)
        .bind(&record.target_type)
        .bind(&record.target_id)
        .bind(&record.summary)
        .bind(&record.request_id)
        .bind(&record.ip)
        .bind(&record.prev_hash)
        .bind(&record.hash)
        .execute(conn)
        .await
        .map(|_| ())
    })?;
    Ok(record)
}

/// Appends one record in a transaction of its own (for events with no other write, such as a
/// failed login).
pub async fn append_alone(store: &Store, event: Event<'_>) -> Result<Record, sqlx::Error> {
    let mut tx = store.begin().await?;
    let record = append(&mut tx, event).await?;
    tx.commit().await?;
    Ok(record)
}

/// The action of the record a purge appends to each chain it shortens.
pub const CHECKPOINT_ACTION: &str = "audit.checkpoint";

/// What a checkpoint record holds: the last removed record, so the chain can start after it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
struct Checkpoint {
    cutoff: DateTime<Utc>,
    removed_records: u64,
    through_seq: i64,
    through_hash: String,
}

/// Removes records older than `retention_days` before `now` (the retention period; default seven
/// years). The database triggers allow deleting only records older than the cutoff recorded here,
/// and the cutoff only moves forward and never past the present. Each chain loses only its oldest
/// records, the run of them older than the cutoff, and first gets a checkpoint record naming the
/// last one removed, which [`verify`] then requires the remaining chain to start from: removing the
/// head of a chain any other way is found. Returns the number removed.
pub async fn purge_expired(
    store: &Store,
    retention_days: u32,
    now: DateTime<Utc>,
) -> Result<u64, sqlx::Error> {
    let cutoff = now - chrono::Duration::days(i64::from(retention_days));
    let mut tx = store.begin().await?;
    with_tx!(&mut tx, conn => {
        // A lengthened retention leaves the cutoff where it is: what it allowed is gone already.
        sqlx::query("UPDATE audit_retention SET cutoff = $1 WHERE id = 1 AND (cutoff IS NULL OR cutoff < $1)")
            .bind(cutoff)
            .execute(conn)
            .await
            .map(|_| ())
    })?;
    let chains: Vec<String> = with_tx!(&mut tx, conn => {
        sqlx::query_scalar("SELECT DISTINCT tenant_id FROM audit_log WHERE occurred_at < $1 ORDER BY tenant_id")
            .bind(cutoff)
            .fetch_all(conn)
            .await
    })?;
    let mut removed = 0;
    for tenant_id in chains {
        removed += shorten_chain(&mut tx, &tenant_id, cutoff).await?;
    }
    tx.commit().await?;
    Ok(removed)
}

/// Removes the oldest records of one chain that are all older than `cutoff`, after appending the
/// checkpoint that accounts for them.
async fn shorten_chain(
    tx: &mut Tx,
    tenant_id: &str,
    cutoff: DateTime<Utc>,
) -> Result<u64, sqlx::Error> {
    // Everything before the first record still in retention (all of it when none is).
    let first_kept: Option<i64> = with_tx!(tx, conn => {
        sqlx::query_scalar("SELECT MIN(seq) FROM audit_log WHERE tenant_id = $1 AND occurred_at >= $2")
            .bind(tenant_id)
            .bind(cutoff)
            .fetch_one(conn)
            .await
    })?;
    let through: Option<(i64, String, i64)> = with_tx!(tx, conn => {
        sqlx::query_as(
            "SELECT seq, hash, (SELECT COUNT(*) FROM audit_log WHERE tenant_id = $1 AND seq <= a.seq) \
             FROM audit_log a WHERE tenant_id = $1 AND ($2 IS NULL OR seq < $2) ORDER BY seq DESC LIMIT 1",
        )
        .bind(tenant_id)
        .bind(first_kept)
        .fetch_optional(conn)
        .await
    })?;
    let Some((through_seq, through_hash, count)) = through else {
        return Ok(0);
    };
    let checkpoint = Checkpoint {
        cutoff,
        removed_records: u64::try_from(count).unwrap_or_default(),
        through_seq,
        through_hash,
    };
    append(
        tx,
        Event {
            tenant_id,
            actor: &Actor::System,
            action: CHECKPOINT_ACTION,
            target_type: "audit_log",
            target_id: tenant_id,
            summary: json!(checkpoint),
            origin: &Origin::default(),
        },
    )
    .await?;
    with_tx!(tx, conn => {
        sqlx::query("DELETE FROM audit_log WHERE tenant_id = $1 AND seq <= $2")
            .bind(tenant_id)
            .bind(through_seq)
            .execute(conn)
            .await
            .map(|done| done.rows_affected())
    })
}

/// The outcome of checking one tenant's chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Verification {
    pub tenant_id: String,
    pub valid: bool,
    pub records: u64,
    /// Hash of the newest record: keep it elsewhere to detect removal of records at the end.
    pub head_hash: Option<String>,
    /// Sequence number of the first record that does not fit, when `valid` is false.
    pub first_invalid_seq: Option<i64>,
    pub problem: Option<String>,
}

/// Walks a tenant's chain from the oldest record and reports the first record that does not fit.
pub async fn verify(store: &Store, tenant_id: &str) -> Result<Verification, sqlx::Error> {
    let records: Vec<Record> = with_pool!(store, pool => {
        sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM audit_log WHERE tenant_id = $1 ORDER BY seq"
        )))
        .bind(tenant_id)
        .fetch_all(pool)
        .await
    })?;
    let mut report = Verification {
        tenant_id: tenant_id.to_owned(),
        valid: true,
        records: records.len() as u64,
        head_hash: records.last().map(|r| r.hash.clone()),
        first_invalid_seq: None,
        problem: None,
    };
    // The newest checkpoint names the last record a purge removed, so the chain starts right after.
    let checkpoint = records
        .iter()
        .rev()
        .find(|r| r.action == CHECKPOINT_ACTION)
        .and_then(|r| serde_json::from_str::<Checkpoint>(&r.summary).ok());
    let mut previous: Option<&Record> = None;
    for record in &records {
        let link = match previous {
            None if record.seq == 1 => (record.prev_hash != GENESIS_HASH)
                .then(|| "the first record does not start the chain".to_owned()),
            None => match &checkpoint {
                Some(c)
                    if c.through_seq + 1 == record.seq && c.through_hash == record.prev_hash =>
                {
                    None
                }
                Some(c) => Some(format!(
                    "the chain starts at record {}, but the last retention purge removed records up \
                     to {} only (the others were removed otherwise)",
                    record.seq, c.through_seq
                )),
                None => Some(format!(
                    "records 1 to {} are missing and no retention purge removed them",
                    record.seq - 1
                )),
            },
            Some(prev) if record.seq != prev.seq + 1 => Some(format!(
                "record {} is missing (sequence jumps from {} to {})",
                prev.seq + 1,
                prev.seq,
                record.seq
            )),
            Some(prev) if record.prev_hash != prev.hash => Some(format!(
                "record {} does not follow record {} (removed or reordered)",
                record.seq, prev.seq
            )),
            Some(_) => None,
        };
        let problem = link.or_else(|| {
            (record.compute_hash() != record.hash)
                .then(|| format!("record {} was changed", record.seq))
        });
        if let Some(problem) = problem {
            report.valid = false;
            report.first_invalid_seq = Some(record.seq);
            report.problem = Some(problem);
            return Ok(report);
        }
        previous = Some(record);
    }
    Ok(report)
}

/// Filters for listing records; all optional.
#[derive(Debug, Clone, Default, serde::Deserialize, utoipa::IntoParams)]
pub struct Filter {
    pub actor_id: Option<String>,
    pub action: Option<String>,
    pub target_type: Option<String>,
    pub target_id: Option<String>,
    /// Only records at or after this time (RFC 3339).
    pub since: Option<DateTime<Utc>>,
    /// Only records before this time (RFC 3339).
    pub until: Option<DateTime<Utc>>,
}

/// Records newest first, `limit` at a time, starting below sequence number `before` when given.
pub async fn list(
    store: &Store,
    tenant_id: &str,
    filter: &Filter,
    before: Option<i64>,
    limit: i64,
) -> Result<Vec<Record>, sqlx::Error> {
    // Optional filters as `($n IS NULL OR column = $n)` keep one static statement for both backends.
    let sql = format!(
        "SELECT {COLUMNS} FROM audit_log WHERE tenant_id = $1 \
         AND ($2 IS NULL OR actor_id = $2) AND ($3 IS NULL OR action = $3) \
         AND ($4 IS NULL OR target_type = $4) AND ($5 IS NULL OR target_id = $5) \
         AND ($6 IS NULL OR occurred_at >= $6) AND ($7 IS NULL OR occurred_at < $7) \
         AND ($8 IS NULL OR seq < $8) ORDER BY seq DESC LIMIT $9"
    );
    with_pool!(store, pool => {
        sqlx::query_as(sqlx::AssertSqlSafe(sql.clone()))
            .bind(tenant_id)
            .bind(&filter.actor_id)
            .bind(&filter.action)
            .bind(&filter.target_type)
            .bind(&filter.target_id)
            .bind(filter.since)
            .bind(filter.until)
            .bind(before)
            .bind(limit)
            .fetch_all(pool)
            .await
    })
}
