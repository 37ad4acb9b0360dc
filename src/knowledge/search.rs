//! Search within a collection: lexical (BM25 from SQLite's FTS5; PostgreSQL's full-text ranking),
//! vector (cosine similarity of embeddings) and hybrid (both, fused by reciprocal rank).

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::vectors::Scope;
use crate::app::AppState;
use crate::pipeline::tools::llm::Caller;
use crate::store::Store;
use crate::with_pool;

/// Reciprocal rank fusion constant (the usual 60).
const RRF_K: f64 = 60.0;
/// Candidates taken from each method before filtering and fusion, per result wanted.
const CANDIDATES_PER_RESULT: usize = 10;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    Lexical,
    Vector,
    Hybrid,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SearchRequest {
    pub query: String,
    /// Results wanted (1-50, default 5).
    pub k: Option<usize>,
    /// Documents whose metadata has all these key/value pairs.
    #[serde(default)]
    #[schema(value_type = Object, required = false)]
    pub filter: serde_json::Map<String, Value>,
    /// Default: hybrid when an embedding endpoint is configured, else lexical.
    pub mode: Option<Mode>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct SearchHit {
    pub chunk_id: String,
    pub document_id: String,
    pub document_title: String,
    pub position: i32,
    pub heading: Option<String>,
    pub text: String,
    /// The best-matching passage, matches wrapped in `<mark>`…`</mark>`.
    pub snippet: String,
    /// Higher is better: BM25/full-text rank (lexical), cosine similarity (vector) or fused RRF (hybrid).
    pub score: f64,
    /// 1-based rank in the lexical results, if it was among them.
    pub lexical_rank: Option<usize>,
    /// 1-based rank in the vector results, if it was among them.
    pub vector_rank: Option<usize>,
    /// Cosine similarity of the chunk to the query, if it was among the vector results.
    pub similarity: Option<f64>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SearchResponse {
    /// The retrieval that produced the results: `lexical` also when hybrid was asked for (or the
    /// default) but the query could not be embedded, with the reason in `fallback`.
    pub mode: Mode,
    /// Why the search fell back to lexical retrieval; null when it did not.
    pub fallback: Option<String>,
    pub results: Vec<SearchHit>,
}

#[derive(Debug, thiserror::Error)]
pub enum SearchError {
    #[error("{0}")]
    Invalid(String),
    #[error("vector search needs an embedding endpoint (EMBEDDING_BASE_URL or LLM_BASE_URL)")]
    NoEmbeddings,
    #[error("{0}")]
    Upstream(String),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// Words of the query, lower-cased, for full-text queries and highlighting.
pub(super) fn terms(query: &str) -> Vec<String> {
    query
        .split(|c: char| !c.is_alphanumeric())
        .filter(|t| !t.is_empty())
        .map(str::to_lowercase)
        .take(32)
        .collect()
}

/// A lexical candidate: chunk id, score (higher is better) and snippet.
type Lexical = (String, f64, String);

async fn lexical(
    store: &Store,
    scope: &Scope,
    query: &str,
    limit: usize,
) -> Result<Vec<Lexical>, sqlx::Error> {
    let terms = terms(query);
    if terms.is_empty() {
        return Ok(Vec::new());
    }
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    match store {
        Store::Sqlite(pool, _) => {
            // Any term may match; BM25 ranks chunks with more (and rarer) terms first.
            let fts = terms
                .iter()
                .map(|t| format!("\"{t}\""))
                .collect::<Vec<_>>()
                .join(" OR ");
            sqlx::query_as::<_, (String, f64, String)>(
                "SELECT chunk_id, -bm25(chunks_fts), snippet(chunks_fts, 4, '<mark>', '</mark>', '…', 24) \
                 FROM chunks_fts WHERE chunks_fts MATCH $1 AND tenant_id = $2 AND collection_id = $3 \
                 ORDER BY bm25(chunks_fts) LIMIT $4",
            )
            .bind(fts)
            .bind(&scope.tenant_id)
            .bind(&scope.collection_id)
            .bind(limit)
            .fetch_all(pool)
            .await
        }
        Store::Postgres(pool) => {
            let tsquery = terms.join(" | ");
            // Rank every match, but build headlines (expensive) only for the ones kept.
            sqlx::query_as::<_, (String, f64, String)>(
                "SELECT top.id, top.score, \
                 ts_headline('english', top.text, to_tsquery('english', $1), 'StartSel=<mark>, StopSel=</mark>, MaxFragments=1, MaxWords=30, MinWords=10') \
                 FROM (SELECT c.id, c.text, ts_rank_cd(c.search, q)::float8 AS score \
                       FROM chunks c, to_tsquery('english', $1) q \
                       WHERE c.tenant_id = $2 AND c.collection_id = $3 AND c.search @@ q \
                       ORDER BY score DESC, c.id LIMIT $4) top \
                 ORDER BY top.score DESC, top.id",
            )
            .bind(tsquery)
            .bind(&scope.tenant_id)
            .bind(&scope.collection_id)
            .bind(limit)
            .fetch_all(pool)
            .await
        }
    }
}

#[derive(sqlx::FromRow)]
struct ChunkRow {
    id: String,
    document_id: String,
    position: i32,
    heading: Option<String>,
    text: String,
    title: String,
    metadata: String,
}

async fn load_chunks(
    store: &Store,
    scope: &Scope,
    ids: &[String],
) -> Result<HashMap<String, ChunkRow>, sqlx::Error> {
    let mut found = HashMap::new();
    for id in ids {
        let row: Option<ChunkRow> = with_pool!(store, pool => {
            sqlx::query_as(
                "SELECT c.id, c.document_id, c.position, c.heading, c.text, d.title, d.metadata \
                 FROM chunks c JOIN documents d ON d.id = c.document_id \
                 WHERE c.tenant_id = $1 AND c.collection_id = $2 AND c.id = $3",
            )
            .bind(&scope.tenant_id)
            .bind(&scope.collection_id)
            .bind(id)
            .fetch_optional(pool)
            .await
        })?;
        if let Some(row) = row {
            found.insert(id.clone(), row);
        }
    }
    Ok(found)
}

/// A snippet for a chunk found without full-text matching: the start of the text, query words marked.
fn highlight(text: &str, terms: &[String]) -> String {
    let excerpt: String = text.chars().take(240).collect();
    let mut out = String::with_capacity(excerpt.len() + 32);
    for (i, word) in excerpt.split(' ').enumerate() {
        if i > 0 {
            out.push(' ');
        }
        let bare: String = word.chars().filter(|c| c.is_alphanumeric()).collect();
        if !bare.is_empty() && terms.contains(&bare.to_lowercase()) {
            out.push_str("<mark>");
            out.push_str(word);
            out.push_str("</mark>");
        } else {
            out.push_str(word);
        }
    }
    if text.chars().count() > 240 {
        out.push('…');
    }
    out
}

fn matches_filter(metadata: &str, filter: &serde_json::Map<String, Value>) -> bool {
    if filter.is_empty() {
        return true;
    }
    let metadata: Value = serde_json::from_str(metadata).unwrap_or(Value::Null);
    filter.iter().all(|(k, v)| metadata.get(k) == Some(v))
}

/// One chunk's standing across the result lists.
#[derive(Default)]
struct Fused<'a> {
    score: f64,
    lexical_rank: Option<usize>,
    vector_rank: Option<usize>,
    similarity: Option<f64>,
    snippet: Option<&'a str>,
}

/// Runs a search in the collection `scope`. Embedding the query counts towards `caller`.
pub async fn search(
    app: &AppState,
    scope: &Scope,
    request: &SearchRequest,
    caller: Caller<'_>,
) -> Result<SearchResponse, SearchError> {
    let query = request.query.trim();
    if query.is_empty() || query.chars().count() > 2000 {
        return Err(SearchError::Invalid(
            "query must be 1-2000 characters".to_owned(),
        ));
    }
    let k = request.k.unwrap_or(5);
    if !(1..=50).contains(&k) {
        return Err(SearchError::Invalid(
            "k must be between 1 and 50".to_owned(),
        ));
    }
    let embeddings = app.knowledge.embeddings.as_ref();
    let mut mode = request.mode.unwrap_or(if embeddings.is_some() {
        Mode::Hybrid
    } else {
        Mode::Lexical
    });
    let candidates = k * CANDIDATES_PER_RESULT;
    let lexical_hits = if mode == Mode::Vector {
        Vec::new()
    } else {
        lexical(&app.store, scope, query, candidates).await?
    };
    let mut fallback = None;
    let vector_hits = if mode == Mode::Lexical {
        Vec::new()
    } else {
        let embedder = embeddings.ok_or(SearchError::NoEmbeddings)?;
        match vector(app, embedder.as_ref(), scope, query, candidates, caller).await {
            Ok(hits) => hits,
            // Hybrid without its vector half is lexical search: answer with that, and say so.
            Err(reason) if mode == Mode::Hybrid => {
                tracing::warn!(%reason, "search falls back to lexical retrieval");
                mode = Mode::Lexical;
                fallback = Some(reason);
                Vec::new()
            }
            Err(reason) => return Err(SearchError::Upstream(reason)),
        }
    };

    let mut ids: Vec<String> = lexical_hits.iter().map(|(id, ..)| id.clone()).collect();
    ids.extend(vector_hits.iter().map(|h| h.chunk_id.clone()));
    ids.sort();
    ids.dedup();
    let rows = load_chunks(&app.store, scope, &ids).await?;
    let terms = terms(query);

    // Rank positions among the candidates that pass the filter.
    let lexical_ranked: Vec<&Lexical> = lexical_hits
        .iter()
        .filter(|(id, ..)| {
            rows.get(id)
                .is_some_and(|r| matches_filter(&r.metadata, &request.filter))
        })
        .collect();
    let vector_ranked: Vec<&super::vectors::Hit> = vector_hits
        .iter()
        .filter(|h| {
            rows.get(&h.chunk_id)
                .is_some_and(|r| matches_filter(&r.metadata, &request.filter))
        })
        .collect();
    let mut scored: HashMap<&str, Fused> = HashMap::new();
    for (rank, (id, score, snippet)) in lexical_ranked.iter().map(|h| (&h.0, h.1, &h.2)).enumerate()
    {
        let entry = scored.entry(id.as_str()).or_default();
        entry.score += match mode {
            Mode::Hybrid => 1.0 / (RRF_K + rank as f64 + 1.0),
            _ => score,
        };
        entry.lexical_rank = Some(rank + 1);
        entry.snippet = Some(snippet.as_str());
    }
    for (rank, hit) in vector_ranked.iter().enumerate() {
        let entry = scored.entry(hit.chunk_id.as_str()).or_default();
        entry.score += match mode {
            Mode::Hybrid => 1.0 / (RRF_K + rank as f64 + 1.0),
            _ => f64::from(hit.score),
        };
        entry.vector_rank = Some(rank + 1);
        entry.similarity = Some(f64::from(hit.score));
    }
    let mut results: Vec<SearchHit> = scored
        .into_iter()
        .filter_map(
            |(
                id,
                Fused {
                    score,
                    lexical_rank,
                    vector_rank,
                    similarity,
                    snippet,
                },
            )| {
                let row = rows.get(id)?;
                Some(SearchHit {
                    chunk_id: row.id.clone(),
                    document_id: row.document_id.clone(),
                    document_title: row.title.clone(),
                    position: row.position,
                    heading: row.heading.clone(),
                    snippet: snippet
                        .map(str::to_owned)
                        .unwrap_or_else(|| highlight(&row.text, &terms)),
                    text: row.text.clone(),
                    score,
                    lexical_rank,
                    vector_rank,
                    similarity,
                })
            },
        )
        .collect();
    results.sort_by(|a, b| {
        b.score
            .total_cmp(&a.score)
            .then_with(|| a.chunk_id.cmp(&b.chunk_id))
    });
    results.truncate(k);
    Ok(SearchResponse {
        mode,
        fallback,
        results,
    })
}

/// The chunks nearest to the query's embedding, or why there are none.
async fn vector(
    app: &AppState,
    embedder: &dyn super::embed::Embedder,
    scope: &Scope,
    query: &str,
    candidates: usize,
    caller: Caller<'_>,
) -> Result<Vec<super::vectors::Hit>, String> {
    let vectors = embedder
        .embed(&app.store, caller, &[query.to_owned()])
        .await
        .map_err(|e| format!("embedding the query: {}", e.message))?;
    let vector = vectors.into_iter().next().unwrap_or_default();
    app.knowledge
        .vectors
        .query(scope, &vector, candidates)
        .await
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_terms_are_plain_words() {
        assert_eq!(
            terms("Cheque \"limits\" -- OR NEAR(x)"),
            ["cheque", "limits", "or", "near", "x"]
        );
        assert!(terms("*** !!!").is_empty());
    }

    #[test]
    fn snippets_mark_query_words() {
        assert_eq!(
            highlight(
                "Cheques above 5000 need two signatures.",
                &["cheques".into(), "signatures".into()]
            ),
            "<mark>Cheques</mark> above 5000 need two <mark>signatures.</mark>"
        );
    }

    #[test]
    fn filters_match_all_pairs() {
        let mut filter = serde_json::Map::new();
        filter.insert("team".into(), Value::from("ops"));
        assert!(matches_filter(r#"{"team":"ops","lang":"en"}"#, &filter));
        assert!(!matches_filter(r#"{"team":"risk"}"#, &filter));
        assert!(matches_filter("{}", &serde_json::Map::new()));
    }
}
