//! `/collections`, their documents and search.

use axum::Json as ResponseJson;
use axum::extract::{FromRequest, Multipart, Path, Query, Request, State};
use axum::http::{StatusCode, header};
use object_store::ObjectStoreExt;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::search::{SearchError, SearchRequest, SearchResponse};
use super::vectors::Scope;
use super::{Collection, DOCUMENT_COLUMNS, Document, DocumentRow, StoredChunk};
use crate::app::AppState;
use crate::auth::principal::{Authorized, Principal, ReadKnowledge, WriteKnowledge};
use crate::http::error::ApiError;
use crate::http::extract::Json;
use crate::http::pagination::{Page, PageParams};
use crate::queue::{self, NewJob};
use crate::{with_pool, with_tx};
use docket_rules::document::Format;

/// How the document upload route's template ends, for the body limit middleware.
pub const DOCUMENTS_ROUTE_SUFFIX: &str = "/collections/{id}/documents";
/// Room for multipart framing and the small extra fields on top of the document.
pub const MULTIPART_OVERHEAD: usize = 64 * 1024;

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewCollection {
    /// Unique per tenant: letters, digits, `_ . -`, and not shaped like a UUID.
    pub name: String,
    #[serde(default)]
    pub description: String,
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 100
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
}

pub(super) async fn collection_or_404(
    state: &AppState,
    principal: &Principal,
    id: &str,
) -> Result<Collection, ApiError> {
    super::find_collection(&state.store, &principal.tenant_id, id)
        .await?
        .ok_or_else(|| ApiError::not_found("No such collection."))
}

/// Create a collection.
#[utoipa::path(post, path = "/collections", tag = "knowledge",
    description = "Requires: supervisor or admin (`WriteKnowledge`), or an API key with `knowledge:write`.",
    request_body = NewCollection,
    responses((status = 201, body = Collection), (status = 409, body = crate::http::error::ErrorBody), (status = 422, body = crate::http::error::ErrorBody)))]
pub async fn create_collection(
    State(state): State<AppState>,
    Authorized(principal, ..): Authorized<WriteKnowledge>,
    Json(body): Json<NewCollection>,
) -> Result<(StatusCode, ResponseJson<Collection>), ApiError> {
    if !valid_name(&body.name) {
        return Err(ApiError::invalid_field(
            "name",
            "must be 1-100 letters, digits, '_', '.' or '-'",
        ));
    }
    // Collections are addressed by id or by name; a name that reads as an id would be ambiguous.
    if Uuid::parse_str(&body.name).is_ok() {
        return Err(ApiError::invalid_field(
            "name",
            "must not look like a collection id (a UUID)",
        ));
    }
    if body.description.len() > 2000 {
        return Err(ApiError::invalid_field(
            "description",
            "must be at most 2000 characters",
        ));
    }
    let now = crate::clock::now();
    let collection = Collection {
        id: Uuid::now_v7().to_string(),
        name: body.name,
        description: body.description,
        created_at: now,
        updated_at: now,
    };
    let mut tx = state.store.begin().await?;
    let inserted = with_tx!(&mut tx, conn => {
        sqlx::query(
            "INSERT INTO collections (id, tenant_id, name, description, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $5) \
             ON CONFLICT (tenant_id, name) DO NOTHING",
        )
        .bind(&collection.id)
        .bind(&principal.tenant_id)
        .bind(&collection.name)
        .bind(&collection.description)
        .bind(now)
        .execute(conn)
        .await
        .map(|done| done.rows_affected())
    })?;
    if inserted == 0 {
        return Err(ApiError::conflict(format!(
            "A collection named {:?} exists already.",
            collection.name
        ))
        .with_code("duplicate_name"));
    }
    principal
        .audit(
            &mut tx,
            "knowledge.collection_create",
            "collection",
            &collection.id,
            json!({ "name": collection.name }),
        )
        .await?;
    tx.commit().await?;
    Ok((StatusCode::CREATED, ResponseJson(collection)))
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Collections {
    pub items: Vec<Collection>,
}

/// The tenant's collections.
#[utoipa::path(get, path = "/collections", tag = "knowledge",
    description = "Requires: any role (`ReadKnowledge`), or an API key with `knowledge:read`.",
    responses((status = 200, body = Collections)))]
pub async fn list_collections(
    State(state): State<AppState>,
    Authorized(principal, ..): Authorized<ReadKnowledge>,
) -> Result<ResponseJson<Collections>, ApiError> {
    let items: Vec<Collection> = with_pool!(&state.store, pool => {
        sqlx::query_as("SELECT id, name, description, created_at, updated_at FROM collections WHERE tenant_id = $1 ORDER BY name")
            .bind(&principal.tenant_id)
            .fetch_all(pool)
            .await
    })?;
    Ok(ResponseJson(Collections { items }))
}

/// A collection (by id or name).
#[utoipa::path(get, path = "/collections/{id}", tag = "knowledge",
    description = "Requires: any role (`ReadKnowledge`), or an API key with `knowledge:read`.",
    params(("id" = String, Path)),
    responses((status = 200, body = Collection), (status = 404, body = crate::http::error::ErrorBody)))]
pub async fn get_collection(
    State(state): State<AppState>,
    Authorized(principal, ..): Authorized<ReadKnowledge>,
    Path(id): Path<String>,
) -> Result<ResponseJson<Collection>, ApiError> {
    Ok(ResponseJson(
        collection_or_404(&state, &principal, &id).await?,
    ))
}

/// Delete a collection with its documents, chunks, vectors and files.
#[utoipa::path(delete, path = "/collections/{id}", tag = "knowledge",
    description = "Requires: supervisor or admin (`WriteKnowledge`), or an API key with `knowledge:write`.",
    params(("id" = String, Path)),
    responses((status = 204), (status = 404, body = crate::http::error::ErrorBody)))]
pub async fn delete_collection(
    State(state): State<AppState>,
    Authorized(principal, ..): Authorized<WriteKnowledge>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let collection = collection_or_404(&state, &principal, &id).await?;
    let documents: Vec<(String, String)> = with_pool!(&state.store, pool => {
        sqlx::query_as("SELECT id, object_key FROM documents WHERE tenant_id = $1 AND collection_id = $2")
            .bind(&principal.tenant_id)
            .bind(&collection.id)
            .fetch_all(pool)
            .await
    })?;
    let mut tx = state.store.begin().await?;
    for (document_id, _) in &documents {
        super::delete_chunks(&mut tx, &principal.tenant_id, document_id).await?;
    }
    with_tx!(&mut tx, conn => {
        sqlx::query("DELETE FROM documents WHERE tenant_id = $1 AND collection_id = $2")
            .bind(&principal.tenant_id)
            .bind(&collection.id)
            .execute(conn)
            .await
            .map(|_| ())
    })?;
    with_tx!(&mut tx, conn => {
        sqlx::query("DELETE FROM collections WHERE tenant_id = $1 AND id = $2")
            .bind(&principal.tenant_id)
            .bind(&collection.id)
            .execute(conn)
            .await
            .map(|_| ())
    })?;
    principal
        .audit(
            &mut tx,
            "knowledge.collection_delete",
            "collection",
            &collection.id,
            json!({ "name": collection.name, "documents": documents.len() }),
        )
        .await?;
    tx.commit().await?;
    let scope = Scope {
        tenant_id: principal.tenant_id.clone(),
        collection_id: collection.id.clone(),
    };
    if let Err(e) = state.knowledge.vectors.delete_collection(&scope).await {
        tracing::warn!(error = %e, "cannot remove the collection's vectors");
    }
    for (_, key) in documents {
        let _ = state
            .objects
            .delete(&object_store::path::Path::from(key))
            .await;
    }
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewTextDocument {
    pub title: String,
    pub text: String,
    #[serde(default)]
    #[schema(value_type = Object, required = false)]
    pub metadata: Value,
    /// `text/plain` (default), `text/markdown` or `text/html`.
    pub content_type: Option<String>,
}

/// The document and whether it was already there (same content).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AddedDocument {
    #[serde(flatten)]
    pub document: Document,
    /// True when a document with the same content exists; nothing was added.
    pub duplicate: bool,
}

/// A document to add: its title, bytes, declared content type and metadata.
pub struct Upload {
    pub title: String,
    pub bytes: Vec<u8>,
    pub content_type: Option<String>,
    pub metadata: Value,
}

async fn read_upload(request: Request, state: &AppState) -> Result<Upload, ApiError> {
    let is_multipart = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("multipart/form-data"));
    if !is_multipart {
        let Json(body) = Json::<NewTextDocument>::from_request(request, state).await?;
        return Ok(Upload {
            title: body.title,
            bytes: body.text.into_bytes(),
            content_type: Some(body.content_type.unwrap_or_else(|| "text/plain".to_owned())),
            metadata: body.metadata,
        });
    }
    let mut multipart = Multipart::from_request(request, state)
        .await
        .map_err(|e| ApiError::bad_request("invalid_multipart", e.body_text()))?;
    let mut upload = Upload {
        title: String::new(),
        bytes: Vec::new(),
        content_type: None,
        metadata: Value::Null,
    };
    let mut got_file = false;
    let limit = state.config.max_document_bytes;
    while let Some(mut field) = multipart
        .next_field()
        .await
        .map_err(|e| ApiError::bad_request("invalid_multipart", e.body_text()))?
    {
        match field.name() {
            Some("file") => {
                if upload.title.is_empty() {
                    upload.title = field.file_name().unwrap_or_default().to_owned();
                }
                upload.content_type = field.content_type().map(str::to_owned);
                while let Some(chunk) = field
                    .chunk()
                    .await
                    .map_err(|e| ApiError::bad_request("invalid_multipart", e.body_text()))?
                {
                    if upload.bytes.len() + chunk.len() > limit {
                        return Err(ApiError::new(
                            StatusCode::PAYLOAD_TOO_LARGE,
                            "document_too_large",
                            format!("Documents may be at most {} MiB.", limit / (1024 * 1024)),
                        ));
                    }
                    upload.bytes.extend_from_slice(&chunk);
                }
                got_file = true;
            }
            Some("title") => {
                upload.title = field
                    .text()
                    .await
                    .map_err(|e| ApiError::bad_request("invalid_multipart", e.body_text()))?;
            }
            Some("metadata") => {
                let text = field
                    .text()
                    .await
                    .map_err(|e| ApiError::bad_request("invalid_multipart", e.body_text()))?;
                upload.metadata = serde_json::from_str(&text)
                    .map_err(|_| ApiError::invalid_field("metadata", "must be a JSON object"))?;
            }
            _ => {}
        }
    }
    if !got_file {
        return Err(ApiError::invalid_field("file", "is required"));
    }
    Ok(upload)
}

/// Add a document: JSON `{title, text, metadata}` or a multipart upload (`file`, optional `title`
/// and `metadata`) of text, Markdown, HTML or PDF. It is ingested by a background job; the same
/// content again returns the existing document.
#[utoipa::path(post, path = "/collections/{id}/documents", tag = "knowledge",
    description = "Requires: supervisor or admin (`WriteKnowledge`), or an API key with `knowledge:write`.",
    params(("id" = String, Path)),
    request_body(content = NewTextDocument, description = "JSON, or multipart/form-data with `file`"),
    responses((status = 202, body = AddedDocument), (status = 200, description = "same content exists", body = AddedDocument),
               (status = 404, body = crate::http::error::ErrorBody), (status = 413, body = crate::http::error::ErrorBody),
               (status = 415, body = crate::http::error::ErrorBody), (status = 422, body = crate::http::error::ErrorBody)))]
pub async fn add_document(
    State(state): State<AppState>,
    Authorized(principal, ..): Authorized<WriteKnowledge>,
    Path(id): Path<String>,
    request: Request,
) -> Result<(StatusCode, ResponseJson<AddedDocument>), ApiError> {
    let collection = collection_or_404(&state, &principal, &id).await?;
    let upload = read_upload(request, &state).await?;
    let (document, duplicate) = add(&state, &principal, &collection, upload).await?;
    let status = if duplicate {
        StatusCode::OK
    } else {
        StatusCode::ACCEPTED
    };
    Ok((
        status,
        ResponseJson(AddedDocument {
            document,
            duplicate,
        }),
    ))
}

/// Stores a document and enqueues its ingestion; the same content again returns the existing
/// document and `true`.
pub async fn add(
    state: &AppState,
    principal: &Principal,
    collection: &Collection,
    upload: Upload,
) -> Result<(Document, bool), ApiError> {
    let title = upload.title.trim().to_owned();
    if title.is_empty() || title.len() > 500 {
        return Err(ApiError::invalid_field("title", "must be 1-500 characters"));
    }
    if upload.bytes.is_empty() {
        return Err(ApiError::invalid_field("text", "must not be empty"));
    }
    let metadata = match upload.metadata {
        Value::Null => json!({}),
        m @ Value::Object(_) => m,
        _ => return Err(ApiError::invalid_field("metadata", "must be a JSON object")),
    };
    let format = Format::detect(upload.content_type.as_deref(), Some(&title), &upload.bytes)
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_document_type",
                "Documents may be plain text, Markdown, HTML or PDF.",
            )
        })?;
    let sha256 = hex::encode(Sha256::digest(&upload.bytes));
    if let Some(existing) =
        find_by_hash(state, &principal.tenant_id, &collection.id, &sha256).await?
    {
        return Ok((existing, true));
    }

    let now = crate::clock::now();
    let document_id = Uuid::now_v7().to_string();
    let object_key = format!(
        "{}/knowledge/{}/{}",
        principal.tenant_id, collection.id, document_id
    );
    let path = object_store::path::Path::from(object_key.as_str());
    let size = upload.bytes.len();
    state
        .objects
        .put(&path, upload.bytes.into())
        .await
        .map_err(|e| ApiError::internal(format!("object store: {e}")))?;
    let mut tx = state.store.begin().await?;
    let job = queue::enqueue(
        &mut tx,
        &state.queue.settings,
        NewJob {
            tenant_id: principal.tenant_id.clone(),
            kind: super::INGEST_JOB_KIND.to_owned(),
            payload: json!({ "document_id": document_id }),
            ..NewJob::default()
        },
        now,
    )
    .await?;
    let inserted = with_tx!(&mut tx, conn => {
        sqlx::query(
            "INSERT INTO documents (id, tenant_id, collection_id, title, content_type, size_bytes, sha256, object_key, metadata, \
             status, chunk_count, job_id, created_by, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 'pending', 0, $10, $11, $12, $12) \
             ON CONFLICT (collection_id, sha256) DO NOTHING",
        )
        .bind(&document_id)
        .bind(&principal.tenant_id)
        .bind(&collection.id)
        .bind(&title)
        .bind(format.content_type())
        .bind(i64::try_from(size).unwrap_or(i64::MAX))
        .bind(&sha256)
        .bind(&object_key)
        .bind(metadata.to_string())
        .bind(&job.id)
        .bind(principal.actor.to_string())
        .bind(now)
        .execute(conn)
        .await
        .map(|done| done.rows_affected())
    })?;
    if inserted == 0 {
        // The same content arrived at the same moment; keep the first.
        drop(tx);
        let _ = state.objects.delete(&path).await;
        let existing = find_by_hash(state, &principal.tenant_id, &collection.id, &sha256)
            .await?
            .ok_or_else(|| ApiError::conflict("The document changed while it was added; retry."))?;
        return Ok((existing, true));
    }
    principal
        .audit(&mut tx, "knowledge.document_add", "document", &document_id,
               json!({ "collection_id": collection.id, "title": title, "sha256": sha256, "size_bytes": size }))
        .await?;
    tx.commit().await?;
    state.queue.enqueued(std::slice::from_ref(&job));
    let document = super::find_document(&state.store, &principal.tenant_id, &document_id)
        .await?
        .ok_or_else(|| ApiError::internal("the new document vanished"))?;
    Ok((document, false))
}

async fn find_by_hash(
    state: &AppState,
    tenant_id: &str,
    collection_id: &str,
    sha256: &str,
) -> Result<Option<Document>, sqlx::Error> {
    let row: Option<DocumentRow> = with_pool!(&state.store, pool => {
        sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {DOCUMENT_COLUMNS} FROM documents WHERE tenant_id = $1 AND collection_id = $2 AND sha256 = $3"
        )))
        .bind(tenant_id)
        .bind(collection_id)
        .bind(sha256)
        .fetch_optional(pool)
        .await
    })?;
    Ok(row.map(Document::from))
}

/// Documents of a collection, oldest first.
#[utoipa::path(get, path = "/collections/{id}/documents", tag = "knowledge",
    description = "Requires: any role (`ReadKnowledge`), or an API key with `knowledge:read`.",
    params(("id" = String, Path), PageParams),
    responses((status = 200, body = Page<Document>), (status = 404, body = crate::http::error::ErrorBody)))]
pub async fn list_documents(
    State(state): State<AppState>,
    Authorized(principal, ..): Authorized<ReadKnowledge>,
    Path(id): Path<String>,
    Query(page): Query<PageParams>,
) -> Result<ResponseJson<Page<Document>>, ApiError> {
    let collection = collection_or_404(&state, &principal, &id).await?;
    let limit = page.limit()?;
    let rows: Vec<DocumentRow> = with_pool!(&state.store, pool => {
        sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {DOCUMENT_COLUMNS} FROM documents WHERE tenant_id = $1 AND collection_id = $2 AND ($3 IS NULL OR id > $3) \
             ORDER BY id LIMIT $4"
        )))
        .bind(&principal.tenant_id)
        .bind(&collection.id)
        .bind(&page.cursor)
        .bind(i64::from(limit) + 1)
        .fetch_all(pool)
        .await
    })?;
    let documents = rows.into_iter().map(Document::from).collect();
    Ok(ResponseJson(Page::from_overfetch(
        documents,
        limit,
        |d: &Document| d.id.clone(),
    )))
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct DocumentDetail {
    #[serde(flatten)]
    pub document: Document,
    pub chunks: Vec<StoredChunk>,
}

async fn document_or_404(
    state: &AppState,
    principal: &Principal,
    collection: &Collection,
    doc: &str,
) -> Result<Document, ApiError> {
    super::find_document(&state.store, &principal.tenant_id, doc)
        .await?
        .filter(|d| d.collection_id == collection.id)
        .ok_or_else(|| ApiError::not_found("No such document."))
}

/// A document with its chunks.
#[utoipa::path(get, path = "/collections/{id}/documents/{doc}", tag = "knowledge",
    description = "Requires: any role (`ReadKnowledge`), or an API key with `knowledge:read`.",
    params(("id" = String, Path), ("doc" = String, Path)),
    responses((status = 200, body = DocumentDetail), (status = 404, body = crate::http::error::ErrorBody)))]
pub async fn get_document(
    State(state): State<AppState>,
    Authorized(principal, ..): Authorized<ReadKnowledge>,
    Path((id, doc)): Path<(String, String)>,
) -> Result<ResponseJson<DocumentDetail>, ApiError> {
    let collection = collection_or_404(&state, &principal, &id).await?;
    let document = document_or_404(&state, &principal, &collection, &doc).await?;
    let chunks = super::chunks_of(&state.store, &principal.tenant_id, &document.id).await?;
    Ok(ResponseJson(DocumentDetail { document, chunks }))
}

/// Delete a document, its chunks, vectors and file.
#[utoipa::path(delete, path = "/collections/{id}/documents/{doc}", tag = "knowledge",
    description = "Requires: supervisor or admin (`WriteKnowledge`), or an API key with `knowledge:write`.",
    params(("id" = String, Path), ("doc" = String, Path)),
    responses((status = 204), (status = 404, body = crate::http::error::ErrorBody)))]
pub async fn delete_document(
    State(state): State<AppState>,
    Authorized(principal, ..): Authorized<WriteKnowledge>,
    Path((id, doc)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let collection = collection_or_404(&state, &principal, &id).await?;
    let document = document_or_404(&state, &principal, &collection, &doc).await?;
    let mut tx = state.store.begin().await?;
    super::delete_chunks(&mut tx, &principal.tenant_id, &document.id).await?;
    with_tx!(&mut tx, conn => {
        sqlx::query("DELETE FROM documents WHERE tenant_id = $1 AND id = $2")
            .bind(&principal.tenant_id)
            .bind(&document.id)
            .execute(conn)
            .await
            .map(|_| ())
    })?;
    principal
        .audit(&mut tx, "knowledge.document_delete", "document", &document.id,
               json!({ "collection_id": collection.id, "title": document.title, "sha256": document.sha256 }))
        .await?;
    tx.commit().await?;
    let scope = Scope {
        tenant_id: principal.tenant_id.clone(),
        collection_id: collection.id.clone(),
    };
    if let Err(e) = state
        .knowledge
        .vectors
        .delete_document(&scope, &document.id)
        .await
    {
        tracing::warn!(error = %e, "cannot remove the document's vectors");
    }
    let _ = state
        .objects
        .delete(&object_store::path::Path::from(
            document.object_key.as_str(),
        ))
        .await;
    Ok(StatusCode::NO_CONTENT)
}

/// Search a collection.
#[utoipa::path(post, path = "/collections/{id}/search", operation_id = "search_collection", tag = "knowledge",
    description = "Requires: any role (`ReadKnowledge`), or an API key with `knowledge:read`.",
    params(("id" = String, Path)), request_body = SearchRequest,
    responses((status = 200, body = SearchResponse), (status = 404, body = crate::http::error::ErrorBody),
               (status = 422, body = crate::http::error::ErrorBody), (status = 502, body = crate::http::error::ErrorBody)))]
pub async fn search(
    State(state): State<AppState>,
    Authorized(principal, ..): Authorized<ReadKnowledge>,
    Path(id): Path<String>,
    Json(body): Json<SearchRequest>,
) -> Result<ResponseJson<SearchResponse>, ApiError> {
    let collection = collection_or_404(&state, &principal, &id).await?;
    let scope = Scope {
        tenant_id: principal.tenant_id.clone(),
        collection_id: collection.id,
    };
    super::search::search(&state, &scope, &body, (&principal.tenant_id).into())
        .await
        .map(ResponseJson)
        .map_err(|e| match e {
            SearchError::Invalid(m) => ApiError::validation(m).with_code("invalid_search"),
            SearchError::NoEmbeddings => {
                ApiError::validation(e.to_string()).with_code("vector_search_unavailable")
            }
            SearchError::Upstream(m) => ApiError::new(StatusCode::BAD_GATEWAY, "upstream_error", m),
            SearchError::Database(e) => ApiError::internal(e),
        })
}
