//! `docket bench knowledge`: ingest N generated Markdown documents with this process's workers and
//! report documents/s and MB/s, then run lexical searches and report their latency p50/p99.

use std::time::{Duration, Instant};

use serde_json::json;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::search::{Mode, SearchRequest};
use super::vectors::Scope;
use crate::app::AppState;
use crate::auth::principal::Principal;
use crate::queue::worker::Worker;
use crate::with_pool;

#[derive(Debug)]
pub struct Report {
    pub documents: usize,
    pub megabytes: f64,
    pub chunks: i64,
    pub ingest_seconds: f64,
    pub searches: usize,
    pub search_p50_ms: f64,
    pub search_p99_ms: f64,
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "documents                 {}", self.documents)?;
        writeln!(f, "text                      {:.1} MB", self.megabytes)?;
        writeln!(f, "chunks                    {}", self.chunks)?;
        writeln!(f, "ingest time               {:.1} s", self.ingest_seconds)?;
        writeln!(
            f,
            "ingest rate               {:.0} documents/s ({:.2} MB/s)",
            self.documents as f64 / self.ingest_seconds,
            self.megabytes / self.ingest_seconds
        )?;
        writeln!(f, "searches (lexical)        {}", self.searches)?;
        writeln!(f, "search p50                {:.1} ms", self.search_p50_ms)?;
        write!(f, "search p99                {:.1} ms", self.search_p99_ms)
    }
}

const SYLLABLES: [&str; 24] = [
    "ba", "ce", "di", "fo", "gu", "ha", "je", "ki", "lo", "mu", "na", "pe", "qui", "ro", "su",
    "ta", "ve", "wi", "xo", "yu", "za", "bre", "cla", "dro",
];

/// Word `n` of a made-up vocabulary of 24³ words.
fn word(n: usize) -> String {
    let n = n % (24 * 24 * 24);
    format!(
        "{}{}{}",
        SYLLABLES[n / 576],
        SYLLABLES[(n / 24) % 24],
        SYLLABLES[n % 24]
    )
}

/// A small pseudo-random generator, so every run writes the same corpus.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        self.0 >> 33
    }

    /// A word index skewed towards common words, roughly as in real text.
    fn zipf(&mut self) -> usize {
        let u = (self.next() % 1_000_000) as f64 / 1_000_000.0;
        (13_824.0 * u.powi(4)) as usize
    }
}

/// A Markdown document of about `bytes` bytes, different for every `seed`.
fn document(seed: usize, bytes: usize) -> String {
    let mut rng = Lcg(seed as u64 + 1);
    let mut text = format!("# Procedure {seed}\n\n");
    let mut section = 0;
    while text.len() < bytes {
        if rng.next().is_multiple_of(12) {
            section += 1;
            text.push_str(&format!("\n## Section {section}\n\n"));
        }
        for _ in 0..(8 + rng.next() % 12) {
            text.push_str(&word(rng.zipf()));
            text.push(' ');
        }
        text.push_str(".\n");
        if rng.next().is_multiple_of(4) {
            text.push('\n');
        }
    }
    text
}

pub async fn run(
    state: &AppState,
    documents: usize,
    kilobytes: usize,
    searches: usize,
) -> Result<Report, String> {
    let tenant = format!("bench-{}", Uuid::now_v7());
    let principal = Principal::system(&tenant);
    let now = crate::clock::now();
    let collection = super::Collection {
        id: Uuid::now_v7().to_string(),
        name: "bench".to_owned(),
        description: String::new(),
        created_at: now,
        updated_at: now,
    };
    with_pool!(&state.store, pool => {
        sqlx::query("INSERT INTO collections (id, tenant_id, name, description, created_at, updated_at) VALUES ($1, $2, $3, '', $4, $4)")
            .bind(&collection.id)
            .bind(&tenant)
            .bind(&collection.name)
            .bind(now)
            .execute(pool)
            .await
            .map(|_| ())
    })
    .map_err(|e| e.to_string())?;

    let shutdown = CancellationToken::new();
    let worker = Worker::new(
        state.queue.clone(),
        state.job_handlers.clone(),
        format!("{tenant}-w"),
    )
    .with_app(state.clone());
    let handle = tokio::spawn(worker.run(shutdown.clone(), Duration::from_secs(30)));
    let started = Instant::now();
    let mut total_bytes = 0;
    for i in 0..documents {
        let text = document(i, kilobytes * 1024);
        total_bytes += text.len();
        let upload = super::http::Upload {
            title: format!("procedure-{i}.md"),
            bytes: text.into_bytes(),
            content_type: Some("text/markdown".to_owned()),
            metadata: json!({ "n": i }),
        };
        super::http::add(state, &principal, &collection, upload)
            .await
            .map_err(|e| e.message)?;
    }
    loop {
        let pending: i64 = with_pool!(&state.store, pool => {
            sqlx::query_scalar("SELECT COUNT(*) FROM documents WHERE tenant_id = $1 AND status = 'pending'")
                .bind(&tenant)
                .fetch_one(pool)
                .await
        })
        .map_err(|e| e.to_string())?;
        if pending == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let ingest_seconds = started.elapsed().as_secs_f64();
    shutdown.cancel();
    let _ = handle.await;
    let chunks: i64 = with_pool!(&state.store, pool => {
        sqlx::query_scalar("SELECT COUNT(*) FROM chunks WHERE tenant_id = $1")
            .bind(&tenant)
            .fetch_one(pool)
            .await
    })
    .map_err(|e| e.to_string())?;

    let scope = Scope {
        tenant_id: tenant.clone(),
        collection_id: collection.id.clone(),
    };
    let mut latencies = Vec::with_capacity(searches);
    for i in 0..searches {
        let mut rng = Lcg(1_000_000 + i as u64);
        let query = format!(
            "{} {} {}",
            word(rng.zipf()),
            word(rng.zipf()),
            word(rng.zipf())
        );
        let request = SearchRequest {
            query,
            k: Some(10),
            filter: serde_json::Map::new(),
            mode: Some(Mode::Lexical),
        };
        let t = Instant::now();
        super::search::search(state, &scope, &request, (&scope.tenant_id).into())
            .await
            .map_err(|e| e.to_string())?;
        latencies.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    latencies.sort_by(f64::total_cmp);
    let percentile = |p: f64| {
        latencies
            .get(((latencies.len() as f64 - 1.0) * p).round() as usize)
            .copied()
            .unwrap_or(0.0)
    };
    Ok(Report {
        documents,
        megabytes: total_bytes as f64 / 1e6,
        chunks,
        ingest_seconds,
        searches,
        search_p50_ms: percentile(0.5),
        search_p99_ms: percentile(0.99),
    })
}
