//! Grounded answers: `POST /collections/{id}/ask` answers a question from the collection's own
//! chunks, through the configured OpenAI-compatible model, with citations — or says it has no
//! answer. Retrieval decides first: when nothing retrieved is relevant the model is not called
//! at all. The model sees only the numbered sources and must cite them; an answer that cites no
//! source it was given is not an answer.
//!
//! Per-tenant instructions (`GET/PUT /knowledge/settings`) are added to the system prompt.

use axum::Json as ResponseJson;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::search::{Mode, SearchError, SearchHit, SearchRequest, SearchResponse, terms};
use super::vectors::Scope;
use crate::app::AppState;
use crate::auth::principal::{Authorized, ReadKnowledge, WriteKnowledge};
use crate::http::error::ApiError;
use crate::http::extract::Json;
use crate::pipeline::tools::llm::{
    self, ChatInput, ChatMessage, LlmSettings, ResponseFormat, Role, TokenUsage,
};
use crate::{with_pool, with_tx};

const MAX_QUESTION_CHARS: usize = 2000;
const MAX_INSTRUCTIONS_CHARS: usize = 8000;
/// A chunk that contains at least this share of the question's content words is relevant.
const MIN_TERM_COVERAGE: f64 = 0.5;
/// Most characters of one source put in the prompt.
const MAX_SOURCE_CHARS: usize = 4000;

/// Words that say nothing about what a question is about; a chunk sharing only these with the
/// question is not relevant to it.
const STOPWORDS: &[&str] = &[
    "a", "about", "an", "and", "are", "as", "at", "be", "by", "can", "could", "do", "does", "for",
    "from", "how", "i", "if", "in", "is", "it", "its", "may", "me", "must", "my", "of", "on", "or",
    "our", "should", "so", "that", "the", "their", "there", "this", "to", "us", "was", "we",
    "what", "when", "where", "which", "who", "why", "will", "with", "would", "you", "your",
];

const RULES: &str = "You answer questions for the staff of a business using ONLY the numbered \
sources you are given. Do not use any other knowledge. If the sources do not contain the answer, \
say so. Reply with a JSON object: {\"answer\": string or null, \"sources\": [numbers of the \
sources the answer relies on]}. Use null for the answer when the sources do not answer the \
question. Cite sources in the answer text as [1], [2].";

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AskRequest {
    /// 1-2000 characters.
    pub question: String,
    /// Chunks to retrieve and give the model (1-20, default 5).
    pub k: Option<usize>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AskStatus {
    Answered,
    NoAnswer,
}

/// A source the answer relies on.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Citation {
    /// The number the answer text cites it by (`[1]`).
    pub source: usize,
    pub document_id: String,
    pub document_title: String,
    pub chunk_id: String,
    pub position: i32,
    pub heading: Option<String>,
    pub snippet: String,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AskResponse {
    pub status: AskStatus,
    /// The answer, citing sources as `[n]`; null with `no_answer`.
    pub answer: Option<String>,
    pub citations: Vec<Citation>,
    /// Why there is no answer: nothing relevant was retrieved, or the model found none in the sources.
    pub reason: Option<String>,
    /// Chunks retrieved and judged relevant (given to the model).
    pub sources_considered: usize,
    /// The model that answered; null when it was not asked.
    pub model: Option<String>,
    pub usage: Option<TokenUsage>,
    /// How the sources were retrieved: `hybrid`, or `lexical` (no embeddings, or the question could
    /// not be embedded: then `retrieval_fallback` says why).
    pub retrieval: Mode,
    pub retrieval_fallback: Option<String>,
}

impl AskResponse {
    fn no_answer(reason: &str, considered: usize, found: &SearchResponse) -> Self {
        Self {
            status: AskStatus::NoAnswer,
            answer: None,
            citations: Vec::new(),
            reason: Some(reason.to_owned()),
            sources_considered: considered,
            model: None,
            usage: None,
            retrieval: found.mode,
            retrieval_fallback: found.fallback.clone(),
        }
    }
}

/// Whether a retrieved chunk bears on the question: close in meaning (vector similarity), or
/// containing most of the question's content words.
fn relevant(hit: &SearchHit, content_terms: &[String], min_similarity: f64) -> bool {
    if hit.similarity.is_some_and(|s| s >= min_similarity) {
        return true;
    }
    if content_terms.is_empty() {
        return false;
    }
    let words = terms(&hit.text);
    let found = content_terms.iter().filter(|t| words.contains(t)).count();
    found as f64 / content_terms.len() as f64 >= MIN_TERM_COVERAGE
}

fn content_terms(question: &str) -> Vec<String> {
    let mut out: Vec<String> = terms(question)
        .into_iter()
        .filter(|t| t.chars().count() > 1 && !STOPWORDS.contains(&t.as_str()))
        .collect();
    out.sort();
    out.dedup();
    out
}

fn prompt(question: &str, sources: &[&SearchHit]) -> String {
    let mut text = String::from("Sources:\n");
    for (n, hit) in sources.iter().enumerate() {
        let heading = hit
            .heading
            .as_deref()
            .map(|h| format!(" — {h}"))
            .unwrap_or_default();
        let body: String = hit.text.chars().take(MAX_SOURCE_CHARS).collect();
        text.push_str(&format!(
            "\n[{}] {}{heading}\n{body}\n",
            n + 1,
            hit.document_title
        ));
    }
    text.push_str(&format!("\nQuestion: {question}"));
    text
}

/// What the model replied, read leniently: `sources` may hold numbers or numeric strings.
fn read_reply(reply: &Value) -> (Option<String>, Vec<usize>) {
    let answer = reply
        .get("answer")
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|a| !a.is_empty())
        .map(str::to_owned);
    let mut cited: Vec<usize> = reply
        .get("sources")
        .and_then(Value::as_array)
        .map(|list| {
            list.iter()
                .filter_map(|v| {
                    v.as_u64()
                        .and_then(|n| usize::try_from(n).ok())
                        .or_else(|| v.as_str().and_then(|s| s.trim().parse().ok()))
                })
                .collect()
        })
        .unwrap_or_default();
    cited.sort_unstable();
    cited.dedup();
    (answer, cited)
}

async fn instructions(state: &AppState, tenant_id: &str) -> Result<Option<String>, sqlx::Error> {
    with_pool!(&state.store, pool => {
        sqlx::query_scalar("SELECT instructions FROM knowledge_settings WHERE tenant_id = $1")
            .bind(tenant_id)
            .fetch_optional(pool)
            .await
    })
}

/// Answer a question from a collection, with citations.
#[utoipa::path(post, path = "/collections/{id}/ask", operation_id = "ask_collection", tag = "knowledge",
    description = "Requires: any role (`ReadKnowledge`), or an API key with `knowledge:read`. Retrieves the \
                   `k` best chunks (hybrid search when embeddings are configured); if none is relevant the \
                   answer is `no_answer` without calling the model. Otherwise the configured model \
                   (`LLM_BASE_URL`, `LLM_MODEL`) answers from those chunks only, citing them; an answer that \
                   cites none of them is `no_answer`. 422 `llm_not_configured` when no model is configured, 502 when it fails.",
    params(("id" = String, Path)), request_body = AskRequest,
    responses((status = 200, body = AskResponse), (status = 404, body = crate::http::error::ErrorBody),
               (status = 422, body = crate::http::error::ErrorBody), (status = 502, body = crate::http::error::ErrorBody)))]
pub async fn ask(
    State(state): State<AppState>,
    Authorized(principal, ..): Authorized<ReadKnowledge>,
    Path(id): Path<String>,
    Json(body): Json<AskRequest>,
) -> Result<ResponseJson<AskResponse>, ApiError> {
    let question = body.question.trim();
    if question.is_empty() || question.chars().count() > MAX_QUESTION_CHARS {
        return Err(ApiError::invalid_field(
            "question",
            format!("must be 1-{MAX_QUESTION_CHARS} characters"),
        ));
    }
    let k = body.k.unwrap_or(5);
    if !(1..=20).contains(&k) {
        return Err(ApiError::invalid_field("k", "must be between 1 and 20"));
    }
    let settings = LlmSettings::from_config(&state.config);
    // Like vector search without embeddings: this deployment cannot answer the request, which is
    // not a server fault (5xx) but nothing the client can retry either.
    if settings.base_url.is_none() {
        return Err(ApiError::validation(
            "Answers need a model: set LLM_BASE_URL (and LLM_MODEL).",
        )
        .with_code("llm_not_configured"));
    }
    let collection = super::http::collection_or_404(&state, &principal, &id).await?;
    let scope = Scope {
        tenant_id: principal.tenant_id.clone(),
        collection_id: collection.id,
    };
    let request = SearchRequest {
        query: question.to_owned(),
        k: Some(k),
        filter: serde_json::Map::new(),
        mode: None,
    };
    let found = super::search::search(&state, &scope, &request, (&principal.tenant_id).into())
        .await
        .map_err(|e| match e {
            SearchError::Upstream(m) => ApiError::new(StatusCode::BAD_GATEWAY, "upstream_error", m),
            SearchError::Database(e) => ApiError::internal(e),
            other => ApiError::validation(other.to_string()),
        })?;
    let words = content_terms(question);
    let sources: Vec<&SearchHit> = found
        .results
        .iter()
        .filter(|hit| relevant(hit, &words, state.config.ask_min_similarity))
        .collect();
    if sources.is_empty() {
        return Ok(ResponseJson(AskResponse::no_answer(
            "Nothing relevant to the question was found in this collection.",
            0,
            &found,
        )));
    }
    let mut system = RULES.to_owned();
    if let Some(extra) = instructions(&state, &principal.tenant_id).await? {
        system.push_str("\n\n");
        system.push_str(&extra);
    }
    let input = ChatInput {
        messages: vec![
            ChatMessage {
                role: Role::System,
                content: system,
            },
            ChatMessage {
                role: Role::User,
                content: prompt(question, &sources),
            },
        ],
        model: None,
        temperature: Some(0.0),
        max_tokens: Some(1024),
        response_format: Some(ResponseFormat::Json),
        timeout_seconds: None,
    };
    let caller = llm::Caller {
        tenant_id: &principal.tenant_id,
        prices: &state.config.llm_prices,
        ..llm::Caller::default()
    };
    let reply = llm::chat(&settings, &state.store, caller, &input, settings.timeout)
        .await
        .map_err(|e| {
            let status = if e.retryable {
                StatusCode::BAD_GATEWAY
            } else {
                StatusCode::UNPROCESSABLE_ENTITY
            };
            ApiError::new(status, "model_failed", e.message)
        })?;
    let (answer, cited) = read_reply(reply.json.as_ref().unwrap_or(&Value::Null));
    let citations: Vec<Citation> = cited
        .into_iter()
        .filter_map(|n| {
            let hit = sources.get(n.checked_sub(1)?)?;
            Some(Citation {
                source: n,
                document_id: hit.document_id.clone(),
                document_title: hit.document_title.clone(),
                chunk_id: hit.chunk_id.clone(),
                position: hit.position,
                heading: hit.heading.clone(),
                snippet: hit.snippet.clone(),
            })
        })
        .collect();
    let mut response = match answer {
        Some(_) if citations.is_empty() => AskResponse::no_answer(
            "The model's answer cited none of the sources it was given.",
            sources.len(),
            &found,
        ),
        Some(answer) => AskResponse {
            status: AskStatus::Answered,
            answer: Some(answer),
            citations,
            reason: None,
            sources_considered: sources.len(),
            model: None,
            usage: None,
            retrieval: found.mode,
            retrieval_fallback: found.fallback.clone(),
        },
        None => AskResponse::no_answer(
            "The sources retrieved do not answer the question.",
            sources.len(),
            &found,
        ),
    };
    response.model = Some(reply.model);
    response.usage = Some(reply.usage);
    Ok(ResponseJson(response))
}

/// The tenant's settings for answers.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct KnowledgeSettings {
    /// Added to the system prompt of every answer (up to 8,000 characters; empty for none).
    pub instructions: String,
    #[serde(default, skip_deserializing)]
    pub updated_by: Option<String>,
    #[serde(default, skip_deserializing)]
    pub updated_at: Option<DateTime<Utc>>,
}

/// The tenant's settings for answers.
#[utoipa::path(get, path = "/knowledge/settings", tag = "knowledge",
    description = "Requires: any role (`ReadKnowledge`), or an API key with `knowledge:read`.",
    responses((status = 200, body = KnowledgeSettings)))]
pub async fn get_knowledge_settings(
    State(state): State<AppState>,
    Authorized(principal, ..): Authorized<ReadKnowledge>,
) -> Result<ResponseJson<KnowledgeSettings>, ApiError> {
    let row: Option<(String, String, DateTime<Utc>)> = with_pool!(&state.store, pool => {
        sqlx::query_as("SELECT instructions, updated_by, updated_at FROM knowledge_settings WHERE tenant_id = $1")
            .bind(&principal.tenant_id)
            .fetch_optional(pool)
            .await
    })?;
    Ok(ResponseJson(match row {
        Some((instructions, by, at)) => KnowledgeSettings {
            instructions,
            updated_by: Some(by),
            updated_at: Some(at),
        },
        None => KnowledgeSettings {
            instructions: String::new(),
            updated_by: None,
            updated_at: None,
        },
    }))
}

/// Change the tenant's settings for answers.
#[utoipa::path(put, path = "/knowledge/settings", tag = "knowledge",
    description = "Requires: supervisor or admin (`WriteKnowledge`), or an API key with `knowledge:write`.",
    request_body = KnowledgeSettings,
    responses((status = 200, body = KnowledgeSettings), (status = 422, body = crate::http::error::ErrorBody)))]
pub async fn put_knowledge_settings(
    State(state): State<AppState>,
    Authorized(principal, ..): Authorized<WriteKnowledge>,
    Json(body): Json<KnowledgeSettings>,
) -> Result<ResponseJson<KnowledgeSettings>, ApiError> {
    let instructions = body.instructions.trim().to_owned();
    if instructions.chars().count() > MAX_INSTRUCTIONS_CHARS {
        return Err(ApiError::invalid_field(
            "instructions",
            format!("must be at most {MAX_INSTRUCTIONS_CHARS} characters"),
        ));
    }
    let now = crate::clock::now();
    let by = principal.actor.to_string();
    let mut tx = state.store.begin().await?;
    with_tx!(&mut tx, conn => {
        sqlx::query(
            "INSERT INTO knowledge_settings (tenant_id, instructions, updated_by, updated_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (tenant_id) DO UPDATE SET instructions = excluded.instructions, \
             updated_by = excluded.updated_by, updated_at = excluded.updated_at",
        )
        .bind(&principal.tenant_id)
        .bind(&instructions)
        .bind(&by)
        .bind(now)
        .execute(conn)
        .await
        .map(|_| ())
    })?;
    principal
        .audit(
            &mut tx,
            "knowledge.settings_changed",
            "tenant",
            &principal.tenant_id,
            json!({ "instructions": instructions }),
        )
        .await?;
    tx.commit().await?;
    Ok(ResponseJson(KnowledgeSettings {
        instructions,
        updated_by: Some(by),
        updated_at: Some(now),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hit(text: &str, similarity: Option<f64>) -> SearchHit {
        SearchHit {
            chunk_id: "c".into(),
            document_id: "d".into(),
            document_title: "Cheque rules".into(),
            position: 0,
            heading: None,
            text: text.into(),
            snippet: text.into(),
            score: 0.1,
            lexical_rank: Some(1),
            vector_rank: similarity.map(|_| 1),
            similarity,
        }
    }

    #[test]
    fn relevance_needs_meaning_or_most_content_words_not_stopwords() {
        let words = content_terms("What is the limit for a cheque deposit?");
        assert_eq!(words, ["cheque", "deposit", "limit"]);
        assert!(relevant(
            &hit("The cheque deposit limit is 5,000 USD.", None),
            &words,
            0.35
        ));
        assert!(
            !relevant(
                &hit("What is the weather? It is the best.", None),
                &words,
                0.35
            ),
            "stopwords only"
        );
        assert!(
            !relevant(&hit("Cheque books are free.", None), &words, 0.35),
            "one word of three"
        );
        assert!(relevant(
            &hit("Daily ceiling for paper instruments", Some(0.8)),
            &words,
            0.35
        ));
        assert!(!relevant(&hit("Opening hours", Some(0.1)), &words, 0.35));
        assert!(!relevant(
            &hit("anything", None),
            &content_terms("what is it?"),
            0.35
        ));
    }

    #[test]
    fn replies_are_read_leniently_and_numbers_deduplicated() {
        let (answer, cited) =
            read_reply(&json!({ "answer": " 5,000 USD [1] ", "sources": [2, "1", 2, "x"] }));
        assert_eq!(answer.as_deref(), Some("5,000 USD [1]"));
        assert_eq!(cited, [1, 2]);
        assert_eq!(
            read_reply(&json!({ "answer": null, "sources": [] })),
            (None, vec![])
        );
        assert_eq!(read_reply(&json!("not an object")), (None, vec![]));
    }

    #[test]
    fn the_prompt_numbers_sources_from_one() {
        let a = hit("alpha", None);
        let b = hit("beta", None);
        let text = prompt("why?", &[&a, &b]);
        assert!(text.contains("[1] Cheque rules\nalpha"), "{text}");
        assert!(text.contains("[2] Cheque rules\nbeta"), "{text}");
        assert!(text.ends_with("Question: why?"));
    }
}
