//! Files attached to cases: upload, list and download.
//!
//! An upload is `multipart/form-data` with one part named `file`. Its type is decided from the
//! bytes (never from what the client claims) against a short allow-list, its size is capped while
//! it is read, and its SHA-256 goes into the case history and the audit log. The bytes live in the
//! object store under `{tenant_id}/cases/{case_id}/{attachment_id}`; downloads stream from there.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Json as ResponseJson;
use axum::body::{Body, BodyDataStream, Bytes};
use axum::extract::multipart::{Field, MultipartError};
use axum::extract::{DefaultBodyLimit, FromRequest, Multipart, Path, Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use futures_util::StreamExt;
use object_store::ObjectStoreExt;
use serde::Serialize;
use serde_json::json;
use sha2::{Digest, Sha256};
use utoipa_axum::router::{OpenApiRouter, UtoipaMethodRouterExt};
use utoipa_axum::routes;
use uuid::Uuid;

use crate::app::AppState;
use crate::auth::principal::{Authorized, Principal, ReadCases, WriteCases};
use crate::http::error::ApiError;
use crate::store::{Store, Tx};
use crate::{with_pool, with_tx};

/// The types a file may be, as detected from its first bytes.
pub const ALLOWED_TYPES: [&str; 5] = [
    "application/pdf",
    "image/jpeg",
    "image/png",
    "image/tiff",
    "image/webp",
];

/// How many leading bytes the type is decided from. Always the same prefix, so the decision does not
/// depend on how the upload happened to be chunked.
const SNIFF_BYTES: usize = 8 * 1024;

/// Room for the multipart framing (boundaries, part headers, small extra parts) on top of the file.
const MULTIPART_OVERHEAD: usize = 64 * 1024;

/// How much of a refused upload is still read (and discarded) so the client can read the refusal.
const DRAIN_BYTES: usize = 8 * 1024 * 1024;
const DRAIN_TIME: std::time::Duration = std::time::Duration::from_secs(5);

/// How the upload route's template ends, for the body limit middleware.
pub const UPLOAD_ROUTE_SUFFIX: &str = "/cases/{id}/attachments";

/// The largest request body an upload may need (file, multipart framing and what is drained after
/// a refusal); the server-wide body cap must allow it.
pub fn max_request_body(max_attachment_bytes: usize) -> usize {
    max_attachment_bytes + MULTIPART_OVERHEAD + DRAIN_BYTES
}

const MAX_FILENAME_CHARS: usize = 255;
const FALLBACK_FILENAME: &str = "attachment";

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        // The router-wide `DefaultBodyLimit` is for JSON; the upload enforces its own, from
        // `MAX_ATTACHMENT_MB`, while it reads (see `read_upload`); the server-wide body cap
        // (`http::middleware::limit_body`) allows uploads `max_request_body` on this route.
        .routes(routes!(upload_attachment).layer(DefaultBodyLimit::disable()))
        .routes(routes!(list_attachments))
        .routes(routes!(download_attachment))
}

/// A file attached to a case.
#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct Attachment {
    pub id: String,
    pub case_id: String,
    /// As uploaded, without any path, control characters or direction overrides; at most 255
    /// characters (`attachment` when nothing usable is left).
    pub filename: String,
    /// Detected from the bytes: `application/pdf`, `image/jpeg`, `image/png`, `image/tiff` or
    /// `image/webp`.
    pub content_type: String,
    pub size_bytes: i64,
    /// Hex SHA-256 of the bytes; also the download's `ETag`.
    pub sha256: String,
    /// `user:<id>` or `api_key:<id>`.
    pub uploaded_by: String,
    pub created_at: DateTime<Utc>,
    #[serde(skip)]
    pub object_key: String,
}

const COLUMNS: &str =
    "id, case_id, filename, content_type, size_bytes, sha256, uploaded_by, created_at, object_key";

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AttachmentList {
    /// Oldest first.
    pub items: Vec<Attachment>,
}

/// The upload form (for the API description; the handler reads the parts itself).
#[derive(utoipa::ToSchema)]
pub struct AttachmentUpload {
    /// The file. Its name is taken from the part; its type is detected from its bytes.
    #[schema(value_type = String, format = Binary)]
    pub file: Vec<u8>,
}

/// An attachment's bytes (for the API description of the download).
#[derive(utoipa::ToSchema)]
#[schema(value_type = String, format = Binary)]
pub struct FileBytes(pub Vec<u8>);

/// The allowed type `head` (the first bytes of a file) is, or else what it was detected as (`None`
/// when nothing was recognised).
pub fn sniff(head: &[u8]) -> Result<&'static str, Option<&'static str>> {
    match infer::get(head).map(|t| t.mime_type()) {
        // `infer` only looks at bytes 8..12 for WebP; a real one is a RIFF container.
        Some("image/webp") if !head.starts_with(b"RIFF") => Err(None),
        Some(mime) if ALLOWED_TYPES.contains(&mime) => Ok(mime),
        other => Err(other),
    }
}

/// A filename safe to store and to send back: the last path component (either separator), without
/// control characters or bidirectional overrides (which can disguise an extension), trimmed, at
/// most 255 characters (keeping a short extension), and `attachment` if nothing usable is left.
pub fn sanitize_filename(raw: Option<&str>) -> String {
    let last = raw
        .unwrap_or_default()
        .rsplit(['/', '\\'])
        .next()
        .unwrap_or_default();
    let cleaned: String = last.chars().filter(|c| !is_unsafe_char(*c)).collect();
    let name = cleaned.trim();
    if name.chars().all(|c| c == '.') {
        return FALLBACK_FILENAME.to_owned();
    }
    if name.chars().count() <= MAX_FILENAME_CHARS {
        return name.to_owned();
    }
    let truncated = match name.rsplit_once('.') {
        Some((stem, ext)) if !stem.is_empty() && (1..=16).contains(&ext.chars().count()) => {
            let keep = MAX_FILENAME_CHARS - ext.chars().count() - 1;
            format!(
                "{}.{ext}",
                stem.chars().take(keep).collect::<String>().trim_end()
            )
        }
        _ => name.chars().take(MAX_FILENAME_CHARS).collect(),
    };
    truncated.trim().to_owned()
}

fn is_unsafe_char(c: char) -> bool {
    c.is_control()
        || matches!(c,
            '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}'
            | '\u{2028}' | '\u{2029}' | '\u{FEFF}')
}

/// `attachment; filename="…"`, with an ASCII-only quoted name and, when that lost anything, the
/// exact name as RFC 5987 `filename*`.
fn content_disposition(filename: &str) -> String {
    let ascii: String = filename
        .chars()
        .map(|c| {
            if c.is_ascii() && !c.is_ascii_control() && c != '"' && c != '\\' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let mut value = format!("attachment; filename=\"{ascii}\"");
    if ascii != filename {
        value.push_str("; filename*=UTF-8''");
        for byte in filename.bytes() {
            if byte.is_ascii_alphanumeric() || b"!#$&+-.^_`|~".contains(&byte) {
                value.push(char::from(byte));
            } else {
                value.push_str(&format!("%{byte:02X}"));
            }
        }
    }
    value
}

fn no_such_case() -> ApiError {
    ApiError::not_found("No such case.")
}

fn too_large(max: usize) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "attachment_too_large",
        format!(
            "The file is larger than the limit of {max} bytes ({} MiB).",
            max / (1024 * 1024)
        ),
    )
    .with_details(json!({ "max_bytes": max }))
}

fn unsupported_type(detected: Option<&str>) -> ApiError {
    ApiError::new(
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_attachment_type",
        format!(
            "The file is {}; allowed types are {}.",
            detected.unwrap_or("of no recognised type"),
            ALLOWED_TYPES.join(", ")
        ),
    )
    .with_details(json!({ "detected_type": detected, "allowed_types": ALLOWED_TYPES }))
}

/// Files may be attached at any stage, also after the decision (for the record), but not to a
/// cancelled case.
fn ensure_attachable(state: &str) -> Result<(), ApiError> {
    if state == "cancelled" {
        return Err(ApiError::conflict(
            "The case is cancelled; files can no longer be attached to it.",
        )
        .with_code("invalid_state")
        .with_details(json!({ "state": state })));
    }
    Ok(())
}

async fn case_state(store: &Store, tenant_id: &str, case_id: &str) -> Result<String, ApiError> {
    let state: Option<String> = with_pool!(store, pool => {
        sqlx::query_scalar("SELECT state FROM cases WHERE tenant_id = $1 AND id = $2")
            .bind(tenant_id)
            .bind(case_id)
            .fetch_optional(pool)
            .await
    })?;
    state.ok_or_else(no_such_case)
}

/// The case's state inside `tx`, its row locked on PostgreSQL until the transaction ends.
async fn lock_case_state(
    tx: &mut Tx,
    store: &Store,
    tenant_id: &str,
    case_id: &str,
) -> Result<Option<String>, sqlx::Error> {
    let sql = format!(
        "SELECT state FROM cases WHERE tenant_id = $1 AND id = $2 {}",
        store.lock_rows()
    );
    with_tx!(tx, conn => {
        sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
            .bind(tenant_id)
            .bind(case_id)
            .fetch_optional(conn)
            .await
    })
}

pub async fn find(
    store: &Store,
    tenant_id: &str,
    case_id: &str,
    id: &str,
) -> Result<Option<Attachment>, sqlx::Error> {
    with_pool!(store, pool => {
        sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM attachments WHERE tenant_id = $1 AND case_id = $2 AND id = $3"
        )))
        .bind(tenant_id)
        .bind(case_id)
        .bind(id)
        .fetch_optional(pool)
        .await
    })
}

pub async fn list(
    store: &Store,
    tenant_id: &str,
    case_id: &str,
) -> Result<Vec<Attachment>, sqlx::Error> {
    with_pool!(store, pool => {
        sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM attachments WHERE tenant_id = $1 AND case_id = $2 ORDER BY id"
        )))
        .bind(tenant_id)
        .bind(case_id)
        .fetch_all(pool)
        .await
    })
}

/// A file read from an upload: accepted type, within the size limit, hashed.
struct Upload {
    filename: String,
    content_type: &'static str,
    chunks: Vec<Bytes>,
    size: usize,
    sha256: String,
}

/// The request body, shared between the multipart reader and [`drain`].
type SharedBody = Arc<tokio::sync::Mutex<BodyDataStream>>;

/// Reads the `file` part of a multipart upload, stopping as soon as it exceeds `max` bytes or its
/// first bytes show a type that is not allowed. The whole body is capped too (file plus framing),
/// so other parts cannot be used to send unlimited data. Nothing past the limit is kept.
async fn read_upload(request: Request, max: usize) -> Result<Upload, ApiError> {
    let cap = max.saturating_add(MULTIPART_OVERHEAD);
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared
        .is_some_and(|len| len > u64::try_from(cap.saturating_add(DRAIN_BYTES)).unwrap_or(u64::MAX))
    {
        // Far too large to even drain. A client that sends `Expect: 100-continue` gets this before
        // sending the body; others may see the connection close while they are still sending.
        return Err(too_large(max));
    }
    let (parts, body) = request.into_parts();
    let body: SharedBody = Arc::new(tokio::sync::Mutex::new(body.into_data_stream()));
    let over_cap = Arc::new(AtomicBool::new(false));
    let request = Request::from_parts(parts, capped(body.clone(), cap, over_cap.clone()));
    let result = match Multipart::from_request(request, &()).await {
        Ok(multipart) => read_parts(multipart, max, &over_cap).await,
        Err(_) => Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "Send the file as `multipart/form-data` (with a boundary), in a part named `file`.",
        )),
    };
    if result.is_err() {
        drain(&body).await;
    }
    result
}

async fn read_parts(
    mut multipart: Multipart,
    max: usize,
    over_cap: &AtomicBool,
) -> Result<Upload, ApiError> {
    let mut upload = None;
    loop {
        let mut field = match multipart.next_field().await {
            Ok(Some(field)) => field,
            Ok(None) => break,
            Err(e) => return Err(multipart_error(&e, over_cap, max)),
        };
        if field.name() != Some("file") {
            continue;
        }
        if upload.is_some() {
            return Err(ApiError::invalid_field("file", "send exactly one file"));
        }
        upload = Some(read_file(&mut field, max, over_cap).await?);
    }
    upload.ok_or_else(|| {
        ApiError::invalid_field(
            "file",
            "is missing: send the file in a multipart part named `file`",
        )
    })
}

/// Reads and discards what is left of a refused upload (at most [`DRAIN_BYTES`], for at most
/// [`DRAIN_TIME`]), so that a client still sending gets to read the refusal: closing a connection
/// with unread data resets it, and the client sees a network error instead of the 413 or 415.
async fn drain(body: &SharedBody) {
    let mut body = body.lock().await;
    let mut drained = 0_usize;
    let _ = tokio::time::timeout(DRAIN_TIME, async {
        while let Some(Ok(chunk)) = body.next().await {
            drained = drained.saturating_add(chunk.len());
            if drained > DRAIN_BYTES {
                break;
            }
        }
    })
    .await;
}

async fn read_file(
    field: &mut Field<'_>,
    max: usize,
    over_cap: &AtomicBool,
) -> Result<Upload, ApiError> {
    let filename = sanitize_filename(field.file_name());
    let mut hasher = Sha256::new();
    let mut chunks = Vec::new();
    let mut head = Vec::with_capacity(SNIFF_BYTES);
    let mut content_type = None;
    let mut size = 0_usize;
    while let Some(chunk) = field
        .chunk()
        .await
        .map_err(|e| multipart_error(&e, over_cap, max))?
    {
        size = size.saturating_add(chunk.len());
        if size > max {
            return Err(too_large(max));
        }
        if head.len() < SNIFF_BYTES {
            let take = chunk.len().min(SNIFF_BYTES - head.len());
            head.extend_from_slice(&chunk[..take]);
            if head.len() == SNIFF_BYTES {
                content_type = Some(sniff(&head).map_err(unsupported_type)?);
            }
        }
        hasher.update(&chunk);
        chunks.push(chunk);
    }
    if size == 0 {
        return Err(ApiError::invalid_field("file", "is empty"));
    }
    let content_type = match content_type {
        Some(t) => t,
        None => sniff(&head).map_err(unsupported_type)?,
    };
    Ok(Upload {
        filename,
        content_type,
        chunks,
        size,
        sha256: hex::encode(hasher.finalize()),
    })
}

/// The request body for the multipart reader, failing once more than `cap` bytes have arrived (and
/// saying so in `over_cap`).
fn capped(body: SharedBody, cap: usize, over_cap: Arc<AtomicBool>) -> Body {
    let stream = futures_util::stream::unfold(0_usize, move |seen| {
        let body = body.clone();
        let over_cap = over_cap.clone();
        async move {
            let chunk = match body.lock().await.next().await? {
                Ok(chunk) => chunk,
                Err(e) => return Some((Err(axum::BoxError::from(e)), seen)),
            };
            let seen = seen.saturating_add(chunk.len());
            if seen > cap {
                over_cap.store(true, Ordering::Relaxed);
                return Some((
                    Err(axum::BoxError::from("the upload exceeds its size limit")),
                    seen,
                ));
            }
            Some((Ok(chunk), seen))
        }
    });
    Body::from_stream(stream)
}

fn multipart_error(e: &MultipartError, over_cap: &AtomicBool, max: usize) -> ApiError {
    if over_cap.load(Ordering::Relaxed) {
        return too_large(max);
    }
    match e.status() {
        // A limit outside this handler (the server-wide request body limit).
        StatusCode::PAYLOAD_TOO_LARGE => ApiError::from_status(StatusCode::PAYLOAD_TOO_LARGE),
        // Malformed multipart, or the client went away mid-upload.
        _ => ApiError::bad_request(
            "invalid_multipart",
            format!("The multipart body cannot be read: {}", e.body_text()),
        ),
    }
}

/// Writes the attachment row, the case history entry and the audit record in one transaction,
/// re-checking the case under lock.
async fn record_upload(
    state: &AppState,
    principal: &Principal,
    attachment: &Attachment,
) -> Result<(), ApiError> {
    let tenant_id = &principal.tenant_id;
    let mut tx = state.store.begin().await?;
    let current = lock_case_state(&mut tx, &state.store, tenant_id, &attachment.case_id)
        .await?
        .ok_or_else(no_such_case)?;
    if let Err(refusal) = ensure_attachable(&current) {
        // Release the row lock now rather than whenever the connection is next used.
        tx.rollback().await?;
        return Err(refusal);
    }
    let details = json!({
        "attachment_id": attachment.id,
        "filename": attachment.filename,
        "content_type": attachment.content_type,
        "size_bytes": attachment.size_bytes,
        "sha256": attachment.sha256,
    });
    with_tx!(&mut tx, conn => {
        sqlx::query(
            "INSERT INTO attachments (id, tenant_id, case_id, filename, content_type, size_bytes, sha256, \
             object_key, uploaded_by, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        )
        .bind(&attachment.id)
        .bind(tenant_id)
        .bind(&attachment.case_id)
        .bind(&attachment.filename)
        .bind(&attachment.content_type)
        .bind(attachment.size_bytes)
        .bind(&attachment.sha256)
        .bind(&attachment.object_key)
        .bind(&attachment.uploaded_by)
        .bind(attachment.created_at)
        .execute(conn)
        .await
        .map(|_| ())
    })?;
    with_tx!(&mut tx, conn => {
        sqlx::query(
            "INSERT INTO case_history (id, tenant_id, case_id, action, from_state, to_state, actor, decision, \
             reason, notes, details, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, NULL, NULL, NULL, $8, $9)",
        )
        .bind(Uuid::now_v7().to_string())
        .bind(tenant_id)
        .bind(&attachment.case_id)
        .bind("attachment_added")
        .bind(&current)
        .bind(&current)
        .bind(&attachment.uploaded_by)
        .bind(details.to_string())
        .bind(attachment.created_at)
        .execute(conn)
        .await
        .map(|_| ())
    })?;
    principal
        .audit(
            &mut tx,
            "case.attachment_added",
            "case",
            &attachment.case_id,
            details,
        )
        .await?;
    tx.commit().await?;
    Ok(())
}

/// Puts the bytes in the object store, then records them; removes the object again when the
/// database write fails.
async fn store_upload(
    state: AppState,
    principal: Principal,
    attachment: Attachment,
    chunks: Vec<Bytes>,
) -> Result<(), ApiError> {
    let location = object_store::path::Path::from(attachment.object_key.as_str());
    state
        .objects
        .put(&location, chunks.into_iter().collect())
        .await
        .map_err(ApiError::internal)?;
    let recorded = record_upload(&state, &principal, &attachment).await;
    if recorded.is_err()
        && let Err(e) = state.objects.delete(&location).await
    {
        tracing::warn!(error = %e, key = %attachment.object_key, "cannot remove the object of a failed upload");
    }
    recorded
}

/// Attach a file to a case.
#[utoipa::path(post, path = "/cases/{id}/attachments", tag = "cases",
    description = "Requires: reviewer, supervisor or admin (`WriteCases`), or an API key with `cases:write`.\n\n\
        `multipart/form-data` with one part named `file`. The type is detected from the bytes (the \
        part's `Content-Type` is ignored): PDF, JPEG, PNG, TIFF or WebP. At most `MAX_ATTACHMENT_MB` \
        (default 10 MiB). The SHA-256 is recorded in the case history and the audit log. Files cannot \
        be attached to a cancelled case.",
    params(("id" = String, Path, description = "Case id")),
    request_body(content = inline(AttachmentUpload), content_type = "multipart/form-data"),
    responses(
        (status = 201, body = Attachment, headers(("Location" = String, description = "The download URL"))),
        (status = 400, description = "Malformed multipart body", body = crate::http::error::ErrorBody),
        (status = 404, description = "No such case in this tenant", body = crate::http::error::ErrorBody),
        (status = 409, description = "`invalid_state`: the case is cancelled", body = crate::http::error::ErrorBody),
        (status = 413, description = "`attachment_too_large`", body = crate::http::error::ErrorBody),
        (status = 415, description = "`unsupported_attachment_type` (names the detected and the allowed types), or not multipart", body = crate::http::error::ErrorBody),
        (status = 422, description = "No `file` part, more than one, or an empty file", body = crate::http::error::ErrorBody)))]
pub async fn upload_attachment(
    State(state): State<AppState>,
    Authorized(principal, ..): Authorized<WriteCases>,
    Path(case_id): Path<String>,
    request: Request,
) -> Result<
    (
        StatusCode,
        [(HeaderName, String); 1],
        ResponseJson<Attachment>,
    ),
    ApiError,
> {
    // Refuse early, before reading the file; checked again under lock when recording.
    let attachable = case_state(&state.store, &principal.tenant_id, &case_id)
        .await
        .and_then(|current| ensure_attachable(&current));
    if let Err(e) = attachable {
        let body = request.into_body().into_data_stream();
        drain(&Arc::new(tokio::sync::Mutex::new(body))).await;
        return Err(e);
    }
    let upload = read_upload(request, state.config.max_attachment_bytes).await?;
    let id = Uuid::now_v7().to_string();
    let attachment = Attachment {
        object_key: format!("{}/cases/{case_id}/{id}", principal.tenant_id),
        id,
        case_id,
        filename: upload.filename,
        content_type: upload.content_type.to_owned(),
        size_bytes: i64::try_from(upload.size).unwrap_or(i64::MAX),
        sha256: upload.sha256,
        uploaded_by: principal.actor.to_string(),
        created_at: crate::clock::now(),
    };
    // Store and record in a task of its own: if the client goes away meanwhile, the work still
    // finishes (or is undone), so no object is left without its row.
    let store = tokio::spawn(store_upload(
        state.clone(),
        principal,
        attachment.clone(),
        upload.chunks,
    ));
    store.await.map_err(ApiError::internal)??;
    let url = format!(
        "{}/cases/{}/attachments/{}",
        state.config.api_v1_prefix, attachment.case_id, attachment.id
    );
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, url)],
        ResponseJson(attachment),
    ))
}

/// The files attached to a case, oldest first.
#[utoipa::path(get, path = "/cases/{id}/attachments", tag = "cases",
    description = "Requires: any role (`ReadCases`), or an API key with `cases:read`.",
    params(("id" = String, Path, description = "Case id")),
    responses(
        (status = 200, body = AttachmentList),
        (status = 404, description = "No such case in this tenant", body = crate::http::error::ErrorBody)))]
pub async fn list_attachments(
    State(state): State<AppState>,
    Authorized(principal, ..): Authorized<ReadCases>,
    Path(case_id): Path<String>,
) -> Result<ResponseJson<AttachmentList>, ApiError> {
    case_state(&state.store, &principal.tenant_id, &case_id).await?;
    let items = list(&state.store, &principal.tenant_id, &case_id).await?;
    Ok(ResponseJson(AttachmentList { items }))
}

/// Download an attachment's bytes.
#[utoipa::path(get, path = "/cases/{id}/attachments/{attachment_id}", tag = "cases",
    description = "Requires: any role (`ReadCases`), or an API key with `cases:read`.\n\n\
        Streams the file with its detected `Content-Type`, `Content-Disposition: attachment` and its \
        SHA-256 as the `ETag`. Each download is recorded as a view of the case.",
    params(("id" = String, Path, description = "Case id"), ("attachment_id" = String, Path)),
    responses(
        (status = 200, description = "The file", content(
            (inline(FileBytes) = "application/pdf"), (inline(FileBytes) = "image/jpeg"), (inline(FileBytes) = "image/png"),
            (inline(FileBytes) = "image/tiff"), (inline(FileBytes) = "image/webp")),
            headers(
                ("Content-Disposition" = String, description = "`attachment; filename=\"…\"`"),
                ("ETag" = String, description = "The quoted hex SHA-256 of the bytes"))),
        (status = 404, description = "No such case or attachment in this tenant", body = crate::http::error::ErrorBody)))]
pub async fn download_attachment(
    State(state): State<AppState>,
    Authorized(principal, ..): Authorized<ReadCases>,
    Path((case_id, attachment_id)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let attachment = find(&state.store, &principal.tenant_id, &case_id, &attachment_id)
        .await?
        .ok_or_else(|| ApiError::not_found("No such attachment."))?;
    super::views::record(
        &state.store,
        &principal.tenant_id,
        &case_id,
        &principal.actor.to_string(),
        Some(&attachment_id),
    )
    .await?;
    let location = object_store::path::Path::from(attachment.object_key.as_str());
    let object = state
        .objects
        .get(&location)
        .await
        .map_err(ApiError::internal)?;
    let header_value = |value: &str| HeaderValue::from_str(value).map_err(ApiError::internal);
    let mut headers = HeaderMap::new();
    headers.insert(
        header::CONTENT_TYPE,
        header_value(&attachment.content_type)?,
    );
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(object.meta.size));
    headers.insert(
        header::CONTENT_DISPOSITION,
        header_value(&content_disposition(&attachment.filename))?,
    );
    headers.insert(
        header::ETAG,
        header_value(&format!("\"{}\"", attachment.sha256))?,
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, no-cache"),
    );
    Ok((headers, Body::from_stream(object.into_stream())).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    const PNG: &[u8] = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0\0\x01\0\0\0\x01\x08\x06\0\0\0";

    #[test]
    fn only_allowed_types_pass_whatever_the_name() {
        assert_eq!(sniff(PNG), Ok("image/png"));
        assert_eq!(sniff(b"\xFF\xD8\xFF\xE0\0\x10JFIF\0"), Ok("image/jpeg"));
        assert_eq!(
            sniff(b"%PDF-1.7\n%\xE2\xE3\xCF\xD3\n"),
            Ok("application/pdf")
        );
        assert_eq!(sniff(b"II*\0\x08\0\0\0\0\0\0\0"), Ok("image/tiff"));
        assert_eq!(sniff(b"MM\0*\0\0\0\x08\0\0\0\0"), Ok("image/tiff"));
        assert_eq!(sniff(b"RIFF\x24\0\0\0WEBPVP8 "), Ok("image/webp"));

        assert_eq!(
            sniff(b"MZ\x90\0\x03\0\0\0\x04\0\0\0\xFF\xFF"),
            Err(Some("application/vnd.microsoft.portable-executable"))
        );
        assert_eq!(sniff(b"GIF89a\x01\0\x01\0"), Err(Some("image/gif")));
        assert_eq!(
            sniff(b"PK\x03\x04\x14\0\0\0\x08\0"),
            Err(Some("application/zip"))
        );
        assert_eq!(sniff(b"just some text, not a picture"), Err(None));
        assert_eq!(sniff(b""), Err(None));
        // `infer` alone would call this WebP: it only checks bytes 8..12.
        assert_eq!(sniff(b"<html>\0\0WEBP</html>"), Err(None));
    }

    #[test]
    fn allowed_types_are_what_infer_reports() {
        for mime in ALLOWED_TYPES {
            assert!(infer::is_mime_supported(mime), "{mime}");
        }
    }

    #[test]
    fn filenames_lose_paths_and_control_characters() {
        assert_eq!(sanitize_filename(Some("cheque.png")), "cheque.png");
        assert_eq!(sanitize_filename(Some("../../etc/passwd")), "passwd");
        assert_eq!(
            sanitize_filename(Some(r"C:\Users\ann\Scans\front.jpg")),
            "front.jpg"
        );
        assert_eq!(sanitize_filename(Some("a\r\nb\0c\t.pdf")), "abc.pdf");
        assert_eq!(
            sanitize_filename(Some("invoice\u{202E}fdp.exe")),
            "invoicefdp.exe",
            "a right-to-left override would show this as invoiceexe.pdf"
        );
        assert_eq!(
            sanitize_filename(Some("  spaced name.pdf  ")),
            "spaced name.pdf"
        );
        assert_eq!(sanitize_filename(Some("Chèque №5.pdf")), "Chèque №5.pdf");
        for empty in [
            None,
            Some(""),
            Some("   "),
            Some("dir/"),
            Some(".."),
            Some("."),
            Some("\u{7}"),
        ] {
            assert_eq!(sanitize_filename(empty), "attachment", "{empty:?}");
        }
    }

    #[test]
    fn long_filenames_are_cut_to_255_characters_keeping_the_extension() {
        let long = format!("{}.pdf", "é".repeat(300));
        let cut = sanitize_filename(Some(&long));
        assert_eq!(cut.chars().count(), 255);
        assert!(cut.ends_with("é.pdf"), "{cut}");
        let no_extension = "x".repeat(400);
        assert_eq!(sanitize_filename(Some(&no_extension)), "x".repeat(255));
    }

    #[test]
    fn content_disposition_quotes_safely() {
        assert_eq!(
            content_disposition("scan.pdf"),
            "attachment; filename=\"scan.pdf\""
        );
        assert_eq!(
            content_disposition("a\"b\\c.pdf"),
            "attachment; filename=\"a_b_c.pdf\"; filename*=UTF-8''a%22b%5Cc.pdf"
        );
        assert_eq!(
            content_disposition("Chèque 5.png"),
            "attachment; filename=\"Ch_que 5.png\"; filename*=UTF-8''Ch%C3%A8que%205.png"
        );
        assert!(HeaderValue::from_str(&content_disposition("Chèque №5; x=\"y\".png")).is_ok());
    }
}
