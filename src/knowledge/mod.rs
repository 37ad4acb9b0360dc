//! Knowledge base: per-tenant collections of documents, ingested by background jobs (text
//! extraction, chunking, embedding) and searched lexically (full-text, BM25 on SQLite's FTS5,
//! PostgreSQL full-text ranking on PostgreSQL), by vector similarity, or both fused by reciprocal
//! rank.

pub mod ask;
pub mod bench;
pub mod chroma;
pub mod embed;
pub mod extract;
pub mod http;
pub mod ingest;
pub mod pdf_guard;
pub mod search;
pub mod vectors;

use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use utoipa_axum::router::{OpenApiRouter, UtoipaMethodRouterExt};
use utoipa_axum::routes;

use crate::config::Config;
use crate::pipeline::tools::llm::LlmSettings;
use crate::store::Store;
use crate::with_pool;
use vectors::VectorStore;

/// Job kind that ingests one document.
pub const INGEST_JOB_KIND: &str = "knowledge.ingest";

pub fn routes() -> OpenApiRouter<crate::app::AppState> {
    OpenApiRouter::new()
        .routes(routes!(http::create_collection, http::list_collections))
        .routes(routes!(http::get_collection, http::delete_collection))
        // Documents may be larger than JSON bodies; the upload enforces MAX_DOCUMENT_MB itself.
        .routes(
            routes!(http::add_document, http::list_documents)
                .layer(axum::extract::DefaultBodyLimit::disable()),
        )
        .routes(routes!(http::get_document, http::delete_document))
        .routes(routes!(http::search))
        .routes(routes!(ask::ask))
        .routes(routes!(
            ask::get_knowledge_settings,
            ask::put_knowledge_settings
        ))
}

pub fn register_handlers(registry: &mut crate::queue::worker::Registry) {
    registry.register_outcome(INGEST_JOB_KIND, ingest::run);
}

/// What the knowledge base works with: where vectors live and how texts become vectors.
pub struct Knowledge {
    pub vectors: Arc<dyn VectorStore>,
    /// `None` without an embedding endpoint: lexical search only.
    pub embeddings: Option<Arc<dyn embed::Embedder>>,
}

impl Knowledge {
    pub fn new(config: &Config, store: &Store) -> Result<Self, vectors::VectorError> {
        let embeddings = config.embedding_base_url.as_ref().map(|url| {
            let settings = LlmSettings {
                base_url: Some(url.clone()),
                api_key: config.embedding_api_key.clone(),
                model: config.llm_model.clone(),
                embedding_model: config.embedding_model.clone(),
                timeout: config.llm_timeout,
                monthly_token_budget: config.llm_monthly_token_budget,
            };
            Arc::new(embed::OpenAiCompatible::new(
                settings,
                config.llm_prices.clone(),
                config.embedding_concurrency,
            )) as Arc<dyn embed::Embedder>
        });
        let vectors: Arc<dyn VectorStore> = match &config.chroma_url {
            Some(url) => Arc::new(chroma::Chroma::new(
                url,
                config.chroma_token.as_ref().map(|t| t.expose().to_owned()),
            )?),
            None => Arc::new(vectors::Embedded::new(store.clone())),
        };
        Ok(Self {
            vectors,
            embeddings,
        })
    }
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema, sqlx::FromRow)]
pub struct Collection {
    pub id: String,
    pub name: String,
    pub description: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// A document as stored; `status` is `pending`, `indexed` or `failed` (with `error`).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Document {
    pub id: String,
    pub collection_id: String,
    pub title: String,
    pub content_type: String,
    pub size_bytes: i64,
    pub sha256: String,
    #[schema(value_type = Object)]
    pub metadata: Value,
    pub status: String,
    pub error: Option<String>,
    /// Why the chunks have no embeddings although the document is `indexed` (it is found by
    /// lexical search); null when they have them or no embedding endpoint is configured.
    pub embedding_error: Option<String>,
    pub chunk_count: i32,
    /// The ingestion job (its runs are in `GET /runs?job_id=`).
    pub job_id: Option<String>,
    pub created_by: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub indexed_at: Option<DateTime<Utc>>,
    #[serde(skip)]
    pub tenant_id: String,
    #[serde(skip)]
    pub object_key: String,
}

#[derive(sqlx::FromRow)]
pub(crate) struct DocumentRow {
    id: String,
    tenant_id: String,
    collection_id: String,
    title: String,
    content_type: String,
    size_bytes: i64,
    sha256: String,
    object_key: String,
    metadata: String,
    status: String,
    error: Option<String>,
    embedding_error: Option<String>,
    chunk_count: i32,
    job_id: Option<String>,
    created_by: String,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    indexed_at: Option<DateTime<Utc>>,
}

pub(crate) const DOCUMENT_COLUMNS: &str = "id, tenant_id, collection_id, title, content_type, size_bytes, sha256, object_key, \
    metadata, status, error, embedding_error, chunk_count, job_id, created_by, created_at, updated_at, indexed_at";

impl From<DocumentRow> for Document {
    fn from(row: DocumentRow) -> Self {
        Self {
            metadata: serde_json::from_str(&row.metadata).unwrap_or(Value::Null),
            id: row.id,
            tenant_id: row.tenant_id,
            collection_id: row.collection_id,
            title: row.title,
            content_type: row.content_type,
            size_bytes: row.size_bytes,
            sha256: row.sha256,
            object_key: row.object_key,
            status: row.status,
            error: row.error,
            embedding_error: row.embedding_error,
            chunk_count: row.chunk_count,
            job_id: row.job_id,
            created_by: row.created_by,
            created_at: row.created_at,
            updated_at: row.updated_at,
            indexed_at: row.indexed_at,
        }
    }
}

/// A stored chunk.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema, sqlx::FromRow)]
pub struct StoredChunk {
    pub id: String,
    pub document_id: String,
    pub position: i32,
    pub heading: Option<String>,
    pub text: String,
    pub token_count: i32,
}

pub async fn find_collection(
    store: &Store,
    tenant_id: &str,
    id: &str,
) -> Result<Option<Collection>, sqlx::Error> {
    with_pool!(store, pool => {
        sqlx::query_as(
            // An id wins over a name, so a collection named like another one's id cannot shadow it.
            "SELECT id, name, description, created_at, updated_at FROM collections WHERE tenant_id = $1 AND (id = $2 OR name = $2) \
             ORDER BY CASE WHEN id = $2 THEN 0 ELSE 1 END LIMIT 1",
        )
        .bind(tenant_id)
        .bind(id)
        .fetch_optional(pool)
        .await
    })
}

pub async fn find_document(
    store: &Store,
    tenant_id: &str,
    id: &str,
) -> Result<Option<Document>, sqlx::Error> {
    let row: Option<DocumentRow> = with_pool!(store, pool => {
        sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {DOCUMENT_COLUMNS} FROM documents WHERE tenant_id = $1 AND id = $2"
        )))
        .bind(tenant_id)
        .bind(id)
        .fetch_optional(pool)
        .await
    })?;
    Ok(row.map(Document::from))
}

pub async fn chunks_of(
    store: &Store,
    tenant_id: &str,
    document_id: &str,
) -> Result<Vec<StoredChunk>, sqlx::Error> {
    with_pool!(store, pool => {
        sqlx::query_as(
            "SELECT id, document_id, position, heading, text, token_count FROM chunks \
             WHERE tenant_id = $1 AND document_id = $2 ORDER BY position",
        )
        .bind(tenant_id)
        .bind(document_id)
        .fetch_all(pool)
        .await
    })
}

/// Removes a document's chunks (and their full-text rows) inside `tx`.
pub(crate) async fn delete_chunks(
    tx: &mut crate::store::Tx,
    tenant_id: &str,
    document_id: &str,
) -> Result<(), sqlx::Error> {
    if let crate::store::Tx::Sqlite(tx, _) = tx {
        sqlx::query(
            "DELETE FROM chunks_fts WHERE chunk_id IN (SELECT id FROM chunks WHERE tenant_id = $1 AND document_id = $2)",
        )
        .bind(tenant_id)
        .bind(document_id)
        .execute(&mut **tx)
        .await?;
    }
    crate::with_tx!(tx, conn => {
        sqlx::query("DELETE FROM chunks WHERE tenant_id = $1 AND document_id = $2")
            .bind(tenant_id)
            .bind(document_id)
            .execute(conn)
            .await
            .map(|_| ())
    })
}
