//! The ingestion job: fetch the document from the object store, extract its text, chunk it,
//! store the chunks (and their full-text rows), embed them when an embedding endpoint is set, and
//! mark the document `indexed` — or `failed` with the error once retries are exhausted. A document
//! whose chunks are stored is found by lexical search, so embeddings that cannot be made (for good,
//! or after the last attempt) leave it `indexed` with the reason in `embedding_error`.

use object_store::ObjectStoreExt;
use serde_json::json;
use uuid::Uuid;

use super::extract;
use super::vectors::{Entry, Scope};
use super::{Document, find_document};
use crate::app::AppState;
use crate::pipeline::tools::llm::Caller;
use crate::queue::Outcome;
use crate::queue::worker::JobContext;
use crate::store::Tx;
use docket_rules::chunk::{self, ChunkOptions};
use docket_rules::document::Format;

/// Why ingestion stopped: `retry` errors may succeed later (network, database), others never will.
struct Failure {
    message: String,
    retry: bool,
}

impl Failure {
    fn permanent(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            retry: false,
        }
    }

    fn transient(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            retry: true,
        }
    }
}

impl From<sqlx::Error> for Failure {
    fn from(e: sqlx::Error) -> Self {
        Self::transient(format!("database: {e}"))
    }
}

pub async fn run(job: JobContext) -> Outcome {
    let Some(app) = job.app.clone() else {
        return Outcome::FailedPermanently("ingestion needs the application state".to_owned());
    };
    let Some(document_id) = job.payload.get("document_id").and_then(|v| v.as_str()) else {
        return Outcome::FailedPermanently("the job has no document_id".to_owned());
    };
    let document = match find_document(&app.store, &job.tenant_id, document_id).await {
        Ok(Some(document)) => document,
        // Deleted before it was ingested: nothing to do.
        Ok(None) => return Outcome::Succeeded(json!({ "skipped": "the document was deleted" })),
        Err(e) => return Outcome::Failed(format!("database: {e}")),
    };
    let caller = Caller {
        job_id: Some(&job.job_id),
        task_id: job.task_id.as_deref(),
        ..Caller::from(&job.tenant_id)
    };
    let last_attempt = job.attempt >= job.max_attempts;
    match ingest(&app, &document, caller, last_attempt).await {
        Ok(chunks) => Outcome::Succeeded(json!({ "document_id": document.id, "chunks": chunks })),
        Err(failure) => {
            let last = !failure.retry || last_attempt;
            let status = if last { "failed" } else { "pending" };
            let recorded = set_status(&app, &document, status, Some(&failure.message), None, 0);
            if let Err(e) = recorded.await {
                tracing::warn!(error = %e, "cannot record the ingestion failure");
            }
            if failure.retry {
                Outcome::Failed(failure.message)
            } else {
                Outcome::FailedPermanently(failure.message)
            }
        }
    }
}

async fn ingest(
    app: &AppState,
    document: &Document,
    caller: Caller<'_>,
    last_attempt: bool,
) -> Result<usize, Failure> {
    let path = object_store::path::Path::from(document.object_key.as_str());
    let bytes = app
        .objects
        .get(&path)
        .await
        .map_err(|e| Failure::transient(format!("object store: {e}")))?
        .bytes()
        .await
        .map_err(|e| Failure::transient(format!("object store: {e}")))?;
    let format = Format::detect(Some(&document.content_type), Some(&document.title), &bytes)
        .ok_or_else(|| {
            Failure::permanent(format!(
                "unsupported content type {}",
                document.content_type
            ))
        })?;
    let chunks = extract_and_chunk(app, format, bytes).await?;
    let ids: Vec<String> = chunks.iter().map(|_| Uuid::now_v7().to_string()).collect();

    let mut tx = app.store.begin().await?;
    super::delete_chunks(&mut tx, &document.tenant_id, &document.id).await?;
    for (chunk, id) in chunks.iter().zip(&ids) {
        insert_chunk(&mut tx, document, id, chunk).await?;
    }
    tx.commit().await?;

    let embedding_error = match embed(app, document, caller, &chunks, &ids).await {
        Ok(()) => None,
        Err(failure) if failure.retry && !last_attempt => return Err(failure),
        Err(failure) => {
            tracing::warn!(document_id = %document.id, error = %failure.message,
                "the document is indexed for lexical search only");
            Some(failure.message)
        }
    };
    set_status(
        app,
        document,
        "indexed",
        None,
        embedding_error.as_deref(),
        chunks.len(),
    )
    .await?;
    Ok(chunks.len())
}

/// Embeds the chunks and replaces the document's vectors, when an embedding endpoint is set. The
/// old vectors go first, so a document whose new chunks cannot be embedded keeps none pointing at
/// chunks it no longer has.
async fn embed(
    app: &AppState,
    document: &Document,
    caller: Caller<'_>,
    chunks: &[chunk::Chunk],
    ids: &[String],
) -> Result<(), Failure> {
    let Some(embedder) = &app.knowledge.embeddings else {
        return Ok(());
    };
    let scope = Scope {
        tenant_id: document.tenant_id.clone(),
        collection_id: document.collection_id.clone(),
    };
    app.knowledge
        .vectors
        .delete_document(&scope, &document.id)
        .await
        .map_err(|e| Failure::transient(e.to_string()))?;
    let texts: Vec<String> = chunks
        .iter()
        .map(|c| match &c.heading {
            Some(h) => format!("{h}\n{}", c.text),
            None => c.text.clone(),
        })
        .collect();
    let vectors = embedder
        .embed(&app.store, caller, &texts)
        .await
        .map_err(|e| Failure {
            message: format!("embedding: {}", e.message),
            retry: e.retryable,
        })?;
    let entries = ids
        .iter()
        .zip(vectors)
        .map(|(id, vector)| Entry {
            chunk_id: id.clone(),
            document_id: document.id.clone(),
            vector,
        })
        .collect();
    app.knowledge
        .vectors
        .upsert(&scope, entries)
        .await
        .map_err(|e| Failure::transient(e.to_string()))
}

/// Extracts the text and chunks it on a blocking thread (both are CPU-bound, and must not hold
/// up the async workers), within `EXTRACT_TIMEOUT_SECONDS`. Every way this can fail is
/// permanent: the same bytes hit the same limit (or crash) again. On a timeout the thread is
/// abandoned and its result dropped; extraction stops by itself soon after the same deadline, and
/// chunking is bounded by `EXTRACT_MAX_TEXT_BYTES`.
async fn extract_and_chunk(
    app: &AppState,
    format: Format,
    bytes: impl AsRef<[u8]> + Send + 'static,
) -> Result<Vec<chunk::Chunk>, Failure> {
    let limits = app.config.extract_limits;
    let timeout = app.config.extract_timeout;
    let options = ChunkOptions {
        max_tokens: app.config.knowledge_chunk_tokens,
        overlap_tokens: app.config.knowledge_chunk_overlap,
    };
    let deadline = std::time::Instant::now() + timeout;
    let work = tokio::task::spawn_blocking(move || {
        let (text, structure) = extract::extract(format, bytes.as_ref(), &limits, deadline)?;
        Ok::<_, extract::ExtractError>(chunk::chunk(&text, structure, options))
    });
    match tokio::time::timeout(timeout, work).await {
        Ok(Ok(chunks)) => chunks.map_err(|e| Failure::permanent(e.to_string())),
        Ok(Err(crashed)) => Err(Failure::permanent(format!(
            "the text extractor crashed: {crashed}"
        ))),
        Err(_) => Err(Failure::permanent(
            extract::ExtractError::Timeout.to_string(),
        )),
    }
}

async fn insert_chunk(
    tx: &mut Tx,
    document: &Document,
    id: &str,
    chunk: &chunk::Chunk,
) -> Result<(), sqlx::Error> {
    let position = i32::try_from(chunk.position).unwrap_or(i32::MAX);
    let tokens = i32::try_from(chunk.token_count).unwrap_or(i32::MAX);
    crate::with_tx!(tx, conn => {
        sqlx::query(
            "INSERT INTO chunks (id, tenant_id, collection_id, document_id, position, heading, text, token_count) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(id)
        .bind(&document.tenant_id)
        .bind(&document.collection_id)
        .bind(&document.id)
        .bind(position)
        .bind(&chunk.heading)
        .bind(&chunk.text)
        .bind(tokens)
        .execute(conn)
        .await
        .map(|_| ())
    })?;
    if let Tx::Sqlite(tx, _) = tx {
        sqlx::query(
            "INSERT INTO chunks_fts (chunk_id, tenant_id, collection_id, heading, text) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(id)
        .bind(&document.tenant_id)
        .bind(&document.collection_id)
        .bind(chunk.heading.as_deref().unwrap_or(""))
        .bind(&chunk.text)
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}

async fn set_status(
    app: &AppState,
    document: &Document,
    status: &str,
    error: Option<&str>,
    embedding_error: Option<&str>,
    chunks: usize,
) -> Result<(), sqlx::Error> {
    let now = crate::clock::now();
    let indexed_at = (status == "indexed").then_some(now);
    crate::with_writer!(&app.store, pool => {
        sqlx::query(
            "UPDATE documents SET status = $1, error = $2, embedding_error = $3, chunk_count = $4, updated_at = $5, \
             indexed_at = $6 WHERE tenant_id = $7 AND id = $8",
        )
        .bind(status)
        .bind(error)
        .bind(embedding_error)
        .bind(i32::try_from(chunks).unwrap_or(i32::MAX))
        .bind(now)
        .bind(indexed_at)
        .bind(&document.tenant_id)
        .bind(&document.id)
        .execute(pool)
        .await
        .map(|_| ())
    })
}
