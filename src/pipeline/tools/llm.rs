//! `llm.chat` and `llm.embed`: chat completions and embeddings from any OpenAI-compatible API
//! (OpenAI, Azure OpenAI's v1 API, vLLM, Ollama, LiteLLM, …) at `LLM_BASE_URL`.
//!
//! Every successful call adds its tokens to the tenant's row of `llm_usage` for the current UTC
//! month, and is recorded in `llm_calls` with its job, task and case and its cost from
//! `LLM_PRICES` (reported by `GET /llm/usage`); with `LLM_MONTHLY_TOKEN_BUDGET` set, a tenant
//! whose month is used up is refused before the provider is called. The API key travels only in the `Authorization` header and is scrubbed
//! from every error message.

use std::error::Error as _;
use std::sync::OnceLock;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::{Tool, ToolContext, ToolError, ToolFuture, ToolResult, parse_input, schema_of};
use crate::config::{Config, ModelPrice, Secret};
use crate::store::Store;
use crate::with_pool;

/// Most messages one `llm.chat` call may send.
pub const MAX_MESSAGES: usize = 200;
/// Most texts one embeddings request may carry; [`embed`] splits longer lists into batches.
pub const MAX_EMBED_INPUTS: usize = 256;
/// Largest `max_tokens` a step may ask for.
pub const MAX_COMPLETION_TOKENS: u32 = 32_768;
/// A provider answer larger than this is refused rather than buffered.
const MAX_RESPONSE_BYTES: usize = 64 * 1024 * 1024;
/// How much of a provider's error message or a bad reply is quoted in an error.
const MAX_QUOTED_CHARS: usize = 500;

/// What the LLM tools need from the configuration; a separate type so callers and tests can
/// supply it without a full application.
#[derive(Debug, Clone)]
pub struct LlmSettings {
    /// `…/v1` of an OpenAI-compatible API; `None` when `LLM_BASE_URL` is unset.
    pub base_url: Option<String>,
    pub api_key: Option<Secret>,
    pub model: String,
    pub embedding_model: String,
    pub timeout: Duration,
    /// Tokens per tenant and UTC month; 0 means no limit.
    pub monthly_token_budget: u64,
}

impl LlmSettings {
    pub fn from_config(config: &Config) -> Self {
        Self {
            base_url: config.llm_base_url.clone(),
            api_key: config.llm_api_key.clone(),
            model: config.llm_model.clone(),
            embedding_model: config.llm_embedding_model.clone(),
            timeout: config.llm_timeout,
            monthly_token_budget: config.llm_monthly_token_budget,
        }
    }
}

impl From<&Config> for LlmSettings {
    fn from(config: &Config) -> Self {
        Self::from_config(config)
    }
}

/// Who a model call is for: the tenant and, for pipeline steps, the job, its task and the case
/// the job was started for, so tokens and cost can be reported per task and per case. A bare
/// tenant id converts into one (no job, no prices).
#[derive(Debug, Clone, Copy, Default)]
pub struct Caller<'a> {
    pub tenant_id: &'a str,
    pub job_id: Option<&'a str>,
    pub task_id: Option<&'a str>,
    pub case_id: Option<&'a str>,
    /// `LLM_PRICES`, for the call's cost.
    pub prices: &'a [ModelPrice],
}

impl<'a> From<&'a str> for Caller<'a> {
    fn from(tenant_id: &'a str) -> Self {
        Self {
            tenant_id,
            ..Self::default()
        }
    }
}

impl<'a> From<&'a String> for Caller<'a> {
    fn from(tenant_id: &'a String) -> Self {
        Self::from(tenant_id.as_str())
    }
}

// ---------------------------------------------------------------------------------------------
// Inputs and outputs
// ---------------------------------------------------------------------------------------------

/// Who wrote a chat message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    System,
    User,
    Assistant,
    Tool,
}

/// One message of the conversation sent to the model.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChatMessage {
    #[schema(inline)]
    pub role: Role,
    pub content: String,
}

/// `text` returns the reply as written; `json` asks the model for a JSON object and parses it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ResponseFormat {
    #[default]
    Text,
    Json,
}

/// The `with` of an `llm.chat` step.
#[derive(Debug, Clone, PartialEq, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChatInput {
    /// The conversation, oldest first (1 to 200 messages).
    #[schema(inline, min_items = 1, max_items = 200)]
    pub messages: Vec<ChatMessage>,
    /// Model name; defaults to `LLM_MODEL`.
    #[serde(default)]
    pub model: Option<String>,
    /// Sampling temperature, 0 to 2; the provider's default when omitted.
    #[serde(default)]
    #[schema(minimum = 0, maximum = 2)]
    pub temperature: Option<f64>,
    /// Most tokens the reply may have, 1 to 32768.
    #[serde(default)]
    #[schema(minimum = 1, maximum = 32768)]
    pub max_tokens: Option<u32>,
    /// `text` (default) or `json`.
    #[serde(default)]
    #[schema(inline)]
    pub response_format: Option<ResponseFormat>,
    /// Time limit for this call; the smallest of this, `LLM_TIMEOUT_SECONDS` and the step's
    /// timeout applies.
    #[serde(default)]
    #[schema(exclusive_minimum = 0)]
    pub timeout_seconds: Option<f64>,
}

/// A non-empty string, or a list of 1 to 256 of them.
// `serde(untagged)` here only shapes the schema (ToSchema reads it); `Deserialize` is written out
// below for a clearer error than serde's "did not match any variant".
#[derive(Debug, Clone, PartialEq, Eq, utoipa::ToSchema)]
#[serde(untagged)]
pub enum EmbedText {
    One(String),
    Many(Vec<String>),
}

impl<'de> Deserialize<'de> for EmbedText {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Shape {
            One(String),
            Many(Vec<String>),
        }
        match Shape::deserialize(deserializer) {
            Ok(Shape::One(text)) => Ok(Self::One(text)),
            Ok(Shape::Many(texts)) => Ok(Self::Many(texts)),
            Err(_) => Err(serde::de::Error::custom(
                "input must be a string or an array of strings",
            )),
        }
    }
}

impl EmbedText {
    fn into_vec(self) -> Vec<String> {
        match self {
            Self::One(text) => vec![text],
            Self::Many(texts) => texts,
        }
    }
}

/// The `with` of an `llm.embed` step.
#[derive(Debug, Clone, PartialEq, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EmbedInput {
    // Described on the type: a doc comment here would wrap the inlined `oneOf` in an `allOf`.
    #[schema(inline)]
    pub input: EmbedText,
    /// Model name; defaults to `LLM_EMBEDDING_MODEL`.
    #[serde(default)]
    pub model: Option<String>,
    /// Time limit for this call; the smallest of this, `LLM_TIMEOUT_SECONDS` and the step's
    /// timeout applies.
    #[serde(default)]
    #[schema(exclusive_minimum = 0)]
    pub timeout_seconds: Option<f64>,
}

/// Tokens one call used, as the provider reported them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct TokenUsage {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub total_tokens: u64,
}

/// What an `llm.chat` step saves.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ChatOutput {
    /// The first choice's content.
    pub text: String,
    /// `text` parsed, in JSON mode; otherwise null.
    pub json: Option<Value>,
    /// The model that answered, as the provider names it.
    pub model: String,
    pub finish_reason: Option<String>,
    pub usage: TokenUsage,
}

/// What an `llm.embed` step saves.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EmbedOutput {
    /// One vector per input, in input order.
    pub embeddings: Vec<Vec<f32>>,
    pub model: String,
    pub usage: TokenUsage,
}

/// A tenant's model usage in one month.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Usage {
    /// `YYYY-MM`, UTC.
    #[schema(example = "2026-11")]
    pub month: String,
    pub prompt_tokens: i64,
    pub completion_tokens: i64,
    pub total_tokens: i64,
    pub requests: i64,
}

// ---------------------------------------------------------------------------------------------
// The tools
// ---------------------------------------------------------------------------------------------

/// `llm.chat`: one chat completion.
pub struct LlmChat;

impl Tool for LlmChat {
    fn name(&self) -> &'static str {
        "llm.chat"
    }

    fn description(&self) -> &'static str {
        "Asks a chat model of the configured OpenAI-compatible API for a reply, as text or parsed JSON."
    }

    fn input_schema(&self) -> Value {
        schema_of::<ChatInput>()
    }

    fn call<'a>(&'a self, ctx: &'a ToolContext, input: Value) -> ToolFuture<'a> {
        Box::pin(async move {
            let input: ChatInput = parse_input(input)?;
            let settings = LlmSettings::from_config(&ctx.app.config);
            let case_id = case_of_job(ctx).await;
            let output = chat(
                &settings,
                &ctx.app.store,
                caller(ctx, case_id.as_deref()),
                &input,
                ctx.timeout,
            )
            .await?;
            done(&output)
        })
    }
}

/// `llm.embed`: embedding vectors for one or more texts.
pub struct LlmEmbed;

impl Tool for LlmEmbed {
    fn name(&self) -> &'static str {
        "llm.embed"
    }

    fn description(&self) -> &'static str {
        "Turns one or more texts into embedding vectors with the configured OpenAI-compatible API."
    }

    fn input_schema(&self) -> Value {
        schema_of::<EmbedInput>()
    }

    fn call<'a>(&'a self, ctx: &'a ToolContext, input: Value) -> ToolFuture<'a> {
        Box::pin(async move {
            let input: EmbedInput = parse_input(input)?;
            let settings = LlmSettings::from_config(&ctx.app.config);
            let case_id = case_of_job(ctx).await;
            let output = embeddings(
                &settings,
                &ctx.app.store,
                caller(ctx, case_id.as_deref()),
                input,
                ctx.timeout,
            )
            .await?;
            done(&output)
        })
    }
}

/// A pipeline step's caller.
pub(super) fn caller<'a>(ctx: &'a ToolContext, case_id: Option<&'a str>) -> Caller<'a> {
    Caller {
        tenant_id: &ctx.tenant_id,
        job_id: Some(&ctx.job_id),
        task_id: ctx.task_id.as_deref(),
        case_id,
        prices: &ctx.app.config.llm_prices,
    }
}

/// The case a job was started for (`params.case.id`, as case assessment pipelines get it), so
/// its model calls count towards that case.
pub(super) async fn case_of_job(ctx: &ToolContext) -> Option<String> {
    match crate::queue::get(&ctx.app.store, &ctx.tenant_id, &ctx.job_id).await {
        Ok(job) => job?.payload["payload"]["params"]["case"]["id"]
            .as_str()
            .map(str::to_owned),
        Err(e) => {
            tracing::warn!(job_id = %ctx.job_id, error = %e, "cannot read the job to attribute LLM usage");
            None
        }
    }
}

fn done(output: &impl Serialize) -> Result<ToolResult, ToolError> {
    serde_json::to_value(output)
        .map(ToolResult::Done)
        .map_err(|e| ToolError::permanent(format!("cannot encode the output: {e}")))
}

// ---------------------------------------------------------------------------------------------
// Core calls
// ---------------------------------------------------------------------------------------------

/// Runs one chat completion for `tenant_id`: checks the budget, calls the provider, records the
/// tokens. `step_timeout` is the caller's own limit (the step's timeout).
pub async fn chat<'a>(
    settings: &LlmSettings,
    store: &Store,
    caller: impl Into<Caller<'a>>,
    input: &ChatInput,
    step_timeout: Duration,
) -> Result<ChatOutput, ToolError> {
    let caller = caller.into();
    let base_url = configured(settings)?;
    validate_chat(input)?;
    let model = pick_model(input.model.as_deref(), &settings.model)?;
    let timeout = effective_timeout(settings, input.timeout_seconds, step_timeout);
    let json_mode = input.response_format.unwrap_or_default() == ResponseFormat::Json;

    let mut body = json!({
        "model": model,
        "messages": input.messages,
        "stream": false,
    });
    if let Some(temperature) = input.temperature {
        body["temperature"] = json!(temperature);
    }
    if let Some(max_tokens) = input.max_tokens {
        body["max_tokens"] = json!(max_tokens);
    }
    if json_mode {
        body["response_format"] = json!({ "type": "json_object" });
    }

    check_budget(settings, store, caller.tenant_id).await?;
    let reply: WireChatResponse =
        post_json(settings, base_url, "chat/completions", &body, timeout).await?;
    let usage = reply.usage.map(WireUsage::normalise).unwrap_or_default();
    record_usage(store, settings, &caller, "chat", &model, &usage).await;

    let choice = reply
        .choices
        .into_iter()
        .next()
        .ok_or_else(|| ToolError::permanent("the LLM provider returned no choices"))?;
    let message = choice.message.unwrap_or_default();
    let text = match (message.content, message.refusal) {
        (Some(content), _) => content,
        (None, Some(refusal)) => {
            return Err(ToolError::permanent(format!(
                "the model refused: {}",
                quote(&refusal)
            )));
        }
        (None, None) => String::new(),
    };
    let json = if json_mode {
        Some(parse_json_reply(&text, choice.finish_reason.as_deref())?)
    } else {
        None
    };
    Ok(ChatOutput {
        text,
        json,
        model: reply.model.unwrap_or(model),
        finish_reason: choice.finish_reason,
        usage,
    })
}

/// Runs one embeddings request (at most [`MAX_EMBED_INPUTS`] texts) for `tenant_id`.
pub async fn embeddings<'a>(
    settings: &LlmSettings,
    store: &Store,
    caller: impl Into<Caller<'a>>,
    input: EmbedInput,
    step_timeout: Duration,
) -> Result<EmbedOutput, ToolError> {
    let caller = caller.into();
    let base_url = configured(settings)?;
    let texts = input.input.into_vec();
    validate_embed_texts(&texts)?;
    if let Some(seconds) = input.timeout_seconds {
        validate_timeout(seconds)?;
    }
    let model = pick_model(input.model.as_deref(), &settings.embedding_model)?;
    let timeout = effective_timeout(settings, input.timeout_seconds, step_timeout);
    embed_batch(settings, store, &caller, base_url, &texts, model, timeout).await
}

/// Embeds `inputs` with `LLM_EMBEDDING_MODEL` for `tenant_id`, in batches of
/// [`MAX_EMBED_INPUTS`], with the same budget check and usage accounting as `llm.embed`.
/// Returns one vector per input, in order; no inputs means no call.
pub async fn embed<'a>(
    settings: &LlmSettings,
    store: &Store,
    caller: impl Into<Caller<'a>>,
    inputs: &[String],
) -> Result<Vec<Vec<f32>>, ToolError> {
    let caller = caller.into();
    if inputs.is_empty() {
        return Ok(Vec::new());
    }
    let base_url = configured(settings)?;
    // Checked before the first batch, so a bad text late in the list costs no tokens.
    if let Some(i) = inputs.iter().position(|t| t.trim().is_empty()) {
        return Err(invalid(format!("input text {i} is empty")));
    }
    let mut vectors = Vec::with_capacity(inputs.len());
    for batch in inputs.chunks(MAX_EMBED_INPUTS) {
        let output = embed_batch(
            settings,
            store,
            &caller,
            base_url,
            batch,
            settings.embedding_model.clone(),
            settings.timeout,
        )
        .await?;
        vectors.extend(output.embeddings);
    }
    Ok(vectors)
}

async fn embed_batch(
    settings: &LlmSettings,
    store: &Store,
    caller: &Caller<'_>,
    base_url: &str,
    texts: &[String],
    model: String,
    timeout: Duration,
) -> Result<EmbedOutput, ToolError> {
    let body = json!({ "model": model, "input": texts });
    check_budget(settings, store, caller.tenant_id).await?;
    let reply: WireEmbeddings = post_json(settings, base_url, "embeddings", &body, timeout).await?;
    let usage = reply.usage.map(WireUsage::normalise).unwrap_or_default();
    record_usage(store, settings, caller, "embed", &model, &usage).await;

    let mut data = reply.data;
    if data.len() != texts.len() {
        return Err(ToolError::permanent(format!(
            "the LLM provider returned {} embeddings for {} inputs",
            data.len(),
            texts.len()
        )));
    }
    if data.iter().all(|d| d.index.is_some()) {
        data.sort_by_key(|d| d.index);
    }
    Ok(EmbedOutput {
        embeddings: data.into_iter().map(|d| d.embedding).collect(),
        model: reply.model.unwrap_or(model),
        usage,
    })
}

// ---------------------------------------------------------------------------------------------
// Validation
// ---------------------------------------------------------------------------------------------

fn configured(settings: &LlmSettings) -> Result<&str, ToolError> {
    settings.base_url.as_deref().ok_or_else(|| {
        ToolError::permanent(
            "the LLM tools are not configured: set LLM_BASE_URL to an OpenAI-compatible API \
             (e.g. https://api.openai.com/v1 or http://127.0.0.1:11434/v1)",
        )
    })
}

fn invalid(message: impl std::fmt::Display) -> ToolError {
    ToolError::permanent(format!("invalid input: {message}"))
}

fn validate_chat(input: &ChatInput) -> Result<(), ToolError> {
    if input.messages.is_empty() || input.messages.len() > MAX_MESSAGES {
        return Err(invalid(format!(
            "messages must hold 1 to {MAX_MESSAGES} messages, got {}",
            input.messages.len()
        )));
    }
    if let Some(t) = input.temperature
        && !(0.0..=2.0).contains(&t)
    {
        return Err(invalid(format!(
            "temperature must be between 0 and 2, got {t}"
        )));
    }
    if let Some(n) = input.max_tokens
        && !(1..=MAX_COMPLETION_TOKENS).contains(&n)
    {
        return Err(invalid(format!(
            "max_tokens must be between 1 and {MAX_COMPLETION_TOKENS}, got {n}"
        )));
    }
    if let Some(seconds) = input.timeout_seconds {
        validate_timeout(seconds)?;
    }
    Ok(())
}

fn validate_embed_texts(texts: &[String]) -> Result<(), ToolError> {
    if texts.is_empty() || texts.len() > MAX_EMBED_INPUTS {
        return Err(invalid(format!(
            "input must hold 1 to {MAX_EMBED_INPUTS} texts, got {}",
            texts.len()
        )));
    }
    if let Some(i) = texts.iter().position(|t| t.trim().is_empty()) {
        return Err(invalid(format!("input text {i} is empty")));
    }
    Ok(())
}

fn validate_timeout(seconds: f64) -> Result<(), ToolError> {
    if seconds.is_finite() && seconds > 0.0 && seconds <= 86_400.0 {
        Ok(())
    } else {
        Err(invalid(format!(
            "timeout_seconds must be a positive number of seconds, got {seconds}"
        )))
    }
}

fn pick_model(requested: Option<&str>, default: &str) -> Result<String, ToolError> {
    match requested.map(str::trim) {
        Some("") => Err(invalid("model must not be empty")),
        Some(model) => Ok(model.to_owned()),
        None => Ok(default.to_owned()),
    }
}

/// The smallest of the step's own limit, `LLM_TIMEOUT_SECONDS` and the input's `timeout_seconds`.
fn effective_timeout(settings: &LlmSettings, requested: Option<f64>, step: Duration) -> Duration {
    let mut timeout = settings.timeout.min(step);
    if let Some(seconds) = requested.filter(|s| s.is_finite() && *s > 0.0) {
        timeout = timeout.min(Duration::from_secs_f64(seconds.min(86_400.0)));
    }
    timeout
}

/// Parses a JSON-mode reply, tolerating a Markdown code fence around it.
fn parse_json_reply(text: &str, finish_reason: Option<&str>) -> Result<Value, ToolError> {
    let trimmed = text.trim();
    let body = strip_code_fence(trimmed).unwrap_or(trimmed);
    serde_json::from_str(body).map_err(|e| {
        let hint = if finish_reason == Some("length") {
            " (the reply was cut off at max_tokens)"
        } else {
            ""
        };
        ToolError::permanent(format!(
            "the model's reply is not valid JSON{hint}: {e}; reply: {}",
            quote(text)
        ))
    })
}

fn strip_code_fence(text: &str) -> Option<&str> {
    let rest = text.strip_prefix("```")?.strip_suffix("```")?;
    // Drop an info string such as `json` on the opening line.
    let (first_line, body) = rest.split_once('\n')?;
    if first_line.trim().chars().all(|c| c.is_ascii_alphanumeric()) {
        Some(body.trim())
    } else {
        None
    }
}

// ---------------------------------------------------------------------------------------------
// Usage accounting
// ---------------------------------------------------------------------------------------------

/// The current month as `llm_usage` keys it: `YYYY-MM` in UTC.
pub fn current_month() -> String {
    crate::clock::now().format("%Y-%m").to_string()
}

/// A tenant's usage in `month` (`YYYY-MM`); zeros when it made no calls.
pub async fn usage(store: &Store, tenant_id: &str, month: &str) -> Result<Usage, sqlx::Error> {
    let row: Option<(i64, i64, i64, i64)> = with_pool!(store, pool => {
        sqlx::query_as(
            "SELECT prompt_tokens, completion_tokens, total_tokens, requests \
             FROM llm_usage WHERE tenant_id = $1 AND month = $2",
        )
        .bind(tenant_id)
        .bind(month)
        .fetch_optional(pool)
        .await
    })?;
    let (prompt_tokens, completion_tokens, total_tokens, requests) = row.unwrap_or_default();
    Ok(Usage {
        month: month.to_owned(),
        prompt_tokens,
        completion_tokens,
        total_tokens,
        requests,
    })
}

/// Refuses the call when the tenant's tokens this month have reached the budget.
async fn check_budget(
    settings: &LlmSettings,
    store: &Store,
    tenant_id: &str,
) -> Result<(), ToolError> {
    let budget = settings.monthly_token_budget;
    if budget == 0 {
        return Ok(());
    }
    let month = current_month();
    let used = usage(store, tenant_id, &month)
        .await
        .map_err(|e| ToolError::transient(format!("cannot read this tenant's LLM usage: {e}")))?;
    if u64::try_from(used.total_tokens).unwrap_or(0) >= budget {
        return Err(ToolError::permanent(format!(
            "monthly token budget of {budget} exhausted for this tenant ({} tokens used in {month}); \
             it renews at the start of next month (UTC), or raise LLM_MONTHLY_TOKEN_BUDGET",
            used.total_tokens
        )));
    }
    Ok(())
}

/// What `usage` cost at `prices`, in millionths of a US dollar (prices are dollars per million
/// tokens, so this is tokens × price, rounded); `None` for a model without a price.
pub fn cost_micros(prices: &[ModelPrice], model: &str, usage: &TokenUsage) -> Option<i64> {
    let price = prices.iter().find(|p| p.model == model)?;
    let cost = rust_decimal::Decimal::from(usage.prompt_tokens) * price.prompt_per_million
        + rust_decimal::Decimal::from(usage.completion_tokens) * price.completion_per_million;
    i64::try_from(cost.round()).ok()
}

/// The `model` label of the LLM metrics: configured and priced models by name, anything else
/// (a name a pipeline step made up) as `other`, so the label's values stay few.
fn model_label(settings: &LlmSettings, caller: &Caller<'_>, model: &str) -> String {
    let known = model == settings.model
        || model == settings.embedding_model
        || caller.prices.iter().any(|p| p.model == model);
    if known { model } else { "other" }.to_owned()
}

/// Adds one call's tokens to the tenant's month and records the call with what it was for and
/// what it cost. The call already happened (and was paid for), so a database failure here is
/// logged rather than failing the step into a costly retry.
async fn record_usage(
    store: &Store,
    settings: &LlmSettings,
    caller: &Caller<'_>,
    kind: &'static str,
    model: &str,
    usage: &TokenUsage,
) {
    let tenant_id = caller.tenant_id;
    let label = model_label(settings, caller, model);
    let cost = cost_micros(caller.prices, model, usage);
    let tenant = tenant_id.to_owned();
    metrics::counter!("docket_llm_tokens_total", "kind" => "prompt", "model" => label.clone(), "tenant" => tenant.clone())
        .increment(usage.prompt_tokens);
    metrics::counter!("docket_llm_tokens_total", "kind" => "completion", "model" => label.clone(), "tenant" => tenant.clone())
        .increment(usage.completion_tokens);
    if let Some(cost) = cost {
        metrics::counter!("docket_llm_cost_micros_total", "model" => label, "tenant" => tenant)
            .increment(u64::try_from(cost).unwrap_or(0));
    }
    let month = current_month();
    let as_i64 = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
    let call = crate::with_writer!(store, pool => {
        sqlx::query(
            "INSERT INTO llm_calls (id, tenant_id, job_id, task_id, case_id, kind, model, prompt_tokens, \
             completion_tokens, total_tokens, cost_micros, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
        )
        .bind(uuid::Uuid::now_v7().to_string())
        .bind(tenant_id)
        .bind(caller.job_id)
        .bind(caller.task_id)
        .bind(caller.case_id)
        .bind(kind)
        .bind(model)
        .bind(as_i64(usage.prompt_tokens))
        .bind(as_i64(usage.completion_tokens))
        .bind(as_i64(usage.total_tokens))
        .bind(cost)
        .bind(crate::clock::now())
        .execute(pool)
        .await
        .map(|_| ())
    });
    if let Err(e) = call {
        tracing::warn!(tenant_id, error = %e, "cannot record an LLM call");
    }
    let result = crate::with_writer!(store, pool => {
        sqlx::query(
            "INSERT INTO llm_usage \
                 (tenant_id, month, prompt_tokens, completion_tokens, total_tokens, requests) \
             VALUES ($1, $2, $3, $4, $5, 1) \
             ON CONFLICT (tenant_id, month) DO UPDATE SET \
                 prompt_tokens = llm_usage.prompt_tokens + excluded.prompt_tokens, \
                 completion_tokens = llm_usage.completion_tokens + excluded.completion_tokens, \
                 total_tokens = llm_usage.total_tokens + excluded.total_tokens, \
                 requests = llm_usage.requests + excluded.requests",
        )
        .bind(tenant_id)
        .bind(&month)
        .bind(as_i64(usage.prompt_tokens))
        .bind(as_i64(usage.completion_tokens))
        .bind(as_i64(usage.total_tokens))
        .execute(pool)
        .await
        .map(|_| ())
    });
    if let Err(e) = result {
        tracing::warn!(tenant_id, month, error = %e, "cannot record LLM token usage");
    }
}

// ---------------------------------------------------------------------------------------------
// The provider
// ---------------------------------------------------------------------------------------------

#[derive(Deserialize)]
struct WireChatResponse {
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    choices: Vec<WireChoice>,
    #[serde(default)]
    usage: Option<WireUsage>,
}

#[derive(Deserialize)]
struct WireChoice {
    #[serde(default)]
    message: Option<WireMessage>,
    #[serde(default)]
    finish_reason: Option<String>,
}

#[derive(Deserialize, Default)]
struct WireMessage {
    #[serde(default)]
    content: Option<String>,
    #[serde(default)]
    refusal: Option<String>,
}

#[derive(Deserialize)]
struct WireEmbeddings {
    #[serde(default)]
    model: Option<String>,
    data: Vec<WireEmbedding>,
    #[serde(default)]
    usage: Option<WireUsage>,
}

#[derive(Deserialize)]
struct WireEmbedding {
    #[serde(default)]
    index: Option<usize>,
    embedding: Vec<f32>,
}

#[derive(Deserialize)]
struct WireUsage {
    #[serde(default)]
    prompt_tokens: Option<u64>,
    #[serde(default)]
    completion_tokens: Option<u64>,
    #[serde(default)]
    total_tokens: Option<u64>,
}

impl WireUsage {
    fn normalise(self) -> TokenUsage {
        let prompt_tokens = self.prompt_tokens.unwrap_or(0);
        let completion_tokens = self.completion_tokens.unwrap_or(0);
        TokenUsage {
            prompt_tokens,
            completion_tokens,
            total_tokens: self
                .total_tokens
                .unwrap_or(prompt_tokens.saturating_add(completion_tokens)),
        }
    }
}

/// One HTTP client per process, so connections to the provider are reused.
fn client() -> Result<&'static reqwest::Client, ToolError> {
    static CLIENT: OnceLock<Result<reqwest::Client, String>> = OnceLock::new();
    CLIENT
        .get_or_init(|| {
            crate::tls::install_crypto_provider();
            reqwest::Client::builder()
                .user_agent(concat!("docket/", env!("CARGO_PKG_VERSION")))
                // A redirect would carry the bearer token elsewhere; APIs do not redirect.
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .map_err(|e| e.to_string())
        })
        .as_ref()
        .map_err(|e| ToolError::permanent(format!("cannot build an HTTP client: {e}")))
}

/// `{base}/{path}`, keeping a query string on the base (Azure's `api-version`).
fn endpoint_url(base_url: &str, path: &str) -> Result<url::Url, ToolError> {
    let mut url = url::Url::parse(base_url)
        .map_err(|_| ToolError::permanent("LLM_BASE_URL is not a valid URL"))?;
    let joined = format!("{}/{path}", url.path().trim_end_matches('/'));
    url.set_path(&joined);
    Ok(url)
}

/// The endpoint as errors name it: without credentials or query string.
fn display_endpoint(url: &url::Url) -> String {
    let mut shown = url.clone();
    let _ = shown.set_username("");
    let _ = shown.set_password(None);
    shown.set_query(None);
    shown.set_fragment(None);
    shown.to_string()
}

/// POSTs `body` as JSON and decodes a successful answer, classifying every failure.
async fn post_json<T: serde::de::DeserializeOwned>(
    settings: &LlmSettings,
    base_url: &str,
    path: &str,
    body: &Value,
    timeout: Duration,
) -> Result<T, ToolError> {
    let result = async {
        let url = endpoint_url(base_url, path)?;
        let shown = display_endpoint(&url);
        let mut request = client()?.post(url).timeout(timeout).json(body);
        if let Some(key) = settings.api_key.as_ref().filter(|k| !k.expose().is_empty()) {
            request = request.bearer_auth(key.expose());
        }
        let response = request
            .send()
            .await
            .map_err(|e| request_error(e, &shown, timeout))?;
        let status = response.status();
        let bytes = read_limited(response, &shown).await?;
        if !status.is_success() {
            return Err(status_error(status, &bytes, &shown));
        }
        serde_json::from_slice::<T>(&bytes).map_err(|e| {
            ToolError::permanent(format!(
                "the LLM provider's answer from {shown} is not the expected JSON: {e}; answer: {}",
                quote(&String::from_utf8_lossy(&bytes))
            ))
        })
    }
    .await;
    result.map_err(|e| redact(e, settings.api_key.as_ref()))
}

/// Reads the body, refusing one larger than [`MAX_RESPONSE_BYTES`].
async fn read_limited(mut response: reqwest::Response, shown: &str) -> Result<Vec<u8>, ToolError> {
    let mut bytes = Vec::new();
    loop {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                if bytes.len() + chunk.len() > MAX_RESPONSE_BYTES {
                    return Err(ToolError::permanent(format!(
                        "the LLM provider's answer from {shown} exceeds {} MiB",
                        MAX_RESPONSE_BYTES / (1024 * 1024)
                    )));
                }
                bytes.extend_from_slice(&chunk);
            }
            Ok(None) => return Ok(bytes),
            Err(e) => {
                let what = if e.is_timeout() {
                    "timed out while reading the answer"
                } else {
                    "broke off while reading the answer"
                };
                return Err(ToolError::transient(format!(
                    "LLM request to {shown} {what}: {}",
                    error_chain(e)
                )));
            }
        }
    }
}

fn request_error(e: reqwest::Error, shown: &str, timeout: Duration) -> ToolError {
    if e.is_timeout() {
        ToolError::transient(format!(
            "LLM request to {shown} timed out after {:.1}s",
            timeout.as_secs_f64()
        ))
    } else if e.is_builder() {
        ToolError::permanent(format!(
            "cannot build the LLM request to {shown}: {}",
            error_chain(e)
        ))
    } else {
        ToolError::transient(format!("LLM request to {shown} failed: {}", error_chain(e)))
    }
}

/// The error and its causes, without the URL (which errors name separately, redacted).
fn error_chain(e: reqwest::Error) -> String {
    let e = e.without_url();
    let mut parts = vec![e.to_string()];
    let mut source = e.source();
    while let Some(cause) = source {
        parts.push(cause.to_string());
        source = cause.source();
    }
    parts.dedup();
    parts.join(": ")
}

/// 429, 408 and 5xx may pass; any other refusal will not.
fn status_error(status: reqwest::StatusCode, body: &[u8], shown: &str) -> ToolError {
    let detail = provider_message(body)
        .map(|m| format!(": {}", quote(&m)))
        .unwrap_or_default();
    let message = format!("LLM provider answered {status} for {shown}{detail}");
    if status == reqwest::StatusCode::TOO_MANY_REQUESTS
        || status == reqwest::StatusCode::REQUEST_TIMEOUT
        || status.is_server_error()
    {
        ToolError::transient(message)
    } else {
        ToolError::permanent(message)
    }
}

/// The message of an OpenAI-style error (`{"error":{"message"}}`), of the variants vLLM and
/// Ollama use (`{"message"}`, `{"error": "…"}`), or else a short plain-text body.
fn provider_message(body: &[u8]) -> Option<String> {
    if let Ok(value) = serde_json::from_slice::<Value>(body) {
        let found = value
            .pointer("/error/message")
            .or_else(|| value.get("error").filter(|e| e.is_string()))
            .or_else(|| value.get("message"))
            .or_else(|| value.get("detail"))
            .and_then(Value::as_str)
            .map(str::trim)
            .filter(|m| !m.is_empty());
        return found.map(str::to_owned);
    }
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    (!text.is_empty() && !text.starts_with('<')).then(|| text.to_owned())
}

/// At most [`MAX_QUOTED_CHARS`] characters of `text`.
fn quote(text: &str) -> String {
    let text = text.trim();
    match text.char_indices().nth(MAX_QUOTED_CHARS) {
        Some((end, _)) => format!("{}…", &text[..end]),
        None => text.to_owned(),
    }
}

/// Replaces the API key wherever it appears (some providers echo it back).
fn redact(mut error: ToolError, key: Option<&Secret>) -> ToolError {
    if let Some(key) = key.map(Secret::expose).filter(|k| !k.is_empty())
        && error.message.contains(key)
    {
        error.message = error.message.replace(key, "***");
    }
    error
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::net::SocketAddr;
    use std::sync::{Arc, Mutex};

    use axum::Json;
    use axum::extract::State;
    use axum::http::{HeaderMap, StatusCode};
    use axum::response::{IntoResponse, Response};
    use axum::routing::post;
    use tempfile::TempDir;

    use super::*;

    const KEY: &str = "sk-test-secret-key-123";
    const STEP: Duration = Duration::from_secs(30);

    /// One request the fake provider received.
    #[derive(Debug, Clone)]
    struct Seen {
        path: String,
        authorization: Option<String>,
        body: Value,
    }

    #[derive(Clone, Default)]
    struct Provider {
        seen: Arc<Mutex<Vec<Seen>>>,
    }

    impl Provider {
        fn record(&self, path: &str, headers: &HeaderMap, body: &Value) {
            self.seen.lock().unwrap().push(Seen {
                path: path.to_owned(),
                authorization: headers
                    .get("authorization")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned),
                body: body.clone(),
            });
        }

        fn requests(&self) -> Vec<Seen> {
            self.seen.lock().unwrap().clone()
        }
    }

    fn completion(content: &str, finish_reason: &str) -> Value {
        json!({
            "id": "chatcmpl-1",
            "object": "chat.completion",
            "model": "test-model-0125",
            "choices": [{
                "index": 0,
                "message": {"role": "assistant", "content": content},
                "finish_reason": finish_reason,
            }],
            "usage": {"prompt_tokens": 12, "completion_tokens": 5, "total_tokens": 17},
        })
    }

    /// The model name picks the behaviour, so one server serves every case.
    async fn chat_completions(
        State(provider): State<Provider>,
        headers: HeaderMap,
        Json(body): Json<Value>,
    ) -> Response {
        provider.record("/v1/chat/completions", &headers, &body);
        let json_mode = body.pointer("/response_format/type") == Some(&json!("json_object"));
        match body["model"].as_str().unwrap_or_default() {
            "slow" => {
                tokio::time::sleep(Duration::from_secs(30)).await;
                Json(completion("late", "stop")).into_response()
            }
            "busy" => (
                StatusCode::TOO_MANY_REQUESTS,
                Json(json!({"error": {
                    "message": "Rate limit reached for requests per minute",
                    "type": "requests",
                    "code": "rate_limit_exceeded",
                }})),
            )
                .into_response(),
            "down" => (StatusCode::SERVICE_UNAVAILABLE, "upstream overloaded").into_response(),
            "bad" => (
                StatusCode::BAD_REQUEST,
                Json(json!({"error": {
                    "message": format!("Incorrect API key provided: {KEY}."),
                    "type": "invalid_request_error",
                }})),
            )
                .into_response(),
            "chatty" if json_mode => {
                Json(completion("Sure! Here you go: {\"a\": ", "length")).into_response()
            }
            _ if json_mode => Json(completion(
                "```json\n{\"answer\": 42, \"ok\": true}\n```",
                "stop",
            ))
            .into_response(),
            _ => Json(completion("Hello there", "stop")).into_response(),
        }
    }

    async fn embeddings_endpoint(
        State(provider): State<Provider>,
        headers: HeaderMap,
        Json(body): Json<Value>,
    ) -> Response {
        provider.record("/v1/embeddings", &headers, &body);
        let inputs: Vec<String> = match &body["input"] {
            Value::String(s) => vec![s.clone()],
            other => serde_json::from_value(other.clone()).unwrap_or_default(),
        };
        // Answered in reverse order: clients must sort by `index`.
        let data: Vec<Value> = inputs
            .iter()
            .enumerate()
            .rev()
            .map(|(i, text)| {
                json!({"object": "embedding", "index": i, "embedding": [i as f32, text.len() as f32, 0.5]})
            })
            .collect();
        let tokens = 3 * inputs.len();
        Json(json!({
            "object": "list",
            "data": data,
            "model": body["model"],
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }))
        .into_response()
    }

    async fn start_provider() -> (SocketAddr, Provider) {
        let provider = Provider::default();
        let router = axum::Router::new()
            .route("/v1/chat/completions", post(chat_completions))
            .route("/v1/embeddings", post(embeddings_endpoint))
            .with_state(provider.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, router).await });
        (addr, provider)
    }

    struct Harness {
        _dir: TempDir,
        config: Config,
        settings: LlmSettings,
        store: Store,
        provider: Provider,
    }

    /// A migrated SQLite store in a temporary directory and a fake provider; `overrides` replace
    /// or (with an empty value) remove variables.
    async fn harness(overrides: &[(&str, &str)]) -> Harness {
        crate::tls::install_crypto_provider();
        let (addr, provider) = start_provider().await;
        let dir = tempfile::tempdir().unwrap();
        let mut vars: HashMap<String, String> = HashMap::from([
            (
                "DATABASE_URL".to_owned(),
                format!("sqlite://{}/t.db", dir.path().display()),
            ),
            ("DATA_DIR".to_owned(), dir.path().display().to_string()),
            ("LLM_BASE_URL".to_owned(), format!("http://{addr}/v1")),
            ("LLM_API_KEY".to_owned(), KEY.to_owned()),
            ("LLM_MODEL".to_owned(), "test-model".to_owned()),
            ("LLM_EMBEDDING_MODEL".to_owned(), "test-embed".to_owned()),
        ]);
        for (k, v) in overrides {
            vars.insert((*k).to_owned(), (*v).to_owned());
        }
        let config = Config::from_lookup(|k| vars.get(k).cloned()).expect("valid configuration");
        let store = Store::connect(&config).await.expect("store opens");
        store.migrate().await.expect("migrations run");
        Harness {
            _dir: dir,
            settings: LlmSettings::from_config(&config),
            config,
            store,
            provider,
        }
    }

    fn chat_input(value: Value) -> ChatInput {
        parse_input(value).expect("valid chat input")
    }

    fn hello() -> ChatInput {
        chat_input(json!({
            "messages": [
                {"role": "system", "content": "You are terse."},
                {"role": "user", "content": "Say hello."},
            ],
        }))
    }

    fn with_model(model: &str) -> ChatInput {
        ChatInput {
            model: Some(model.to_owned()),
            ..hello()
        }
    }

    #[tokio::test]
    async fn chat_sends_an_openai_request_and_returns_the_first_choice() {
        let h = harness(&[]).await;
        let input = chat_input(json!({
            "messages": [
                {"role": "system", "content": "You are terse."},
                {"role": "user", "content": "Say hello."},
            ],
            "temperature": 0.2,
            "max_tokens": 64,
        }));
        let out = chat(&h.settings, &h.store, "t1", &input, STEP)
            .await
            .unwrap();
        assert_eq!(
            out,
            ChatOutput {
                text: "Hello there".to_owned(),
                json: None,
                model: "test-model-0125".to_owned(),
                finish_reason: Some("stop".to_owned()),
                usage: TokenUsage {
                    prompt_tokens: 12,
                    completion_tokens: 5,
                    total_tokens: 17
                },
            }
        );
        let value = serde_json::to_value(&out).unwrap();
        assert_eq!(value["json"], Value::Null);
        assert_eq!(value["usage"]["total_tokens"], 17);

        let seen = h.provider.requests();
        assert_eq!(seen.len(), 1);
        let request = &seen[0];
        assert_eq!(request.path, "/v1/chat/completions");
        assert_eq!(
            request.authorization.as_deref(),
            Some(&*format!("Bearer {KEY}"))
        );
        assert_eq!(request.body["stream"], json!(false));
        assert_eq!(request.body["model"], "test-model");
        assert_eq!(
            request.body["messages"],
            json!([
                {"role": "system", "content": "You are terse."},
                {"role": "user", "content": "Say hello."},
            ])
        );
        assert_eq!(request.body["temperature"], json!(0.2));
        assert_eq!(request.body["max_tokens"], json!(64));
        assert!(request.body.get("response_format").is_none());
    }

    #[tokio::test]
    async fn chat_uses_the_requested_model_and_no_key_when_none_is_set() {
        let h = harness(&[("LLM_API_KEY", "")]).await;
        chat(
            &h.settings,
            &h.store,
            "t1",
            &with_model("other-model"),
            STEP,
        )
        .await
        .unwrap();
        let seen = h.provider.requests();
        assert_eq!(seen[0].body["model"], "other-model");
        assert_eq!(seen[0].authorization, None);
    }

    #[tokio::test]
    async fn json_mode_asks_for_an_object_and_parses_the_reply() {
        let h = harness(&[]).await;
        let input = ChatInput {
            response_format: Some(ResponseFormat::Json),
            ..hello()
        };
        let out = chat(&h.settings, &h.store, "t1", &input, STEP)
            .await
            .unwrap();
        assert_eq!(out.json, Some(json!({"answer": 42, "ok": true})));
        assert!(out.text.contains("\"answer\": 42"));
        let seen = h.provider.requests();
        assert_eq!(
            seen[0].body["response_format"],
            json!({"type": "json_object"})
        );
    }

    #[tokio::test]
    async fn json_mode_reply_that_is_not_json_is_permanent_but_still_counted() {
        let h = harness(&[]).await;
        let input = ChatInput {
            response_format: Some(ResponseFormat::Json),
            ..with_model("chatty")
        };
        let err = chat(&h.settings, &h.store, "t1", &input, STEP)
            .await
            .unwrap_err();
        assert!(!err.retryable, "{err:?}");
        assert!(err.message.contains("not valid JSON"), "{}", err.message);
        assert!(
            err.message.contains("cut off at max_tokens"),
            "{}",
            err.message
        );
        let used = usage(&h.store, "t1", &current_month()).await.unwrap();
        assert_eq!((used.total_tokens, used.requests), (17, 1));
    }

    #[tokio::test]
    async fn embed_returns_one_vector_per_input_in_order() {
        let h = harness(&[]).await;
        let input: EmbedInput = parse_input(json!({"input": ["a", "bbb", "cc"]})).unwrap();
        let out = embeddings(&h.settings, &h.store, "t1", input, STEP)
            .await
            .unwrap();
        assert_eq!(
            out.embeddings,
            vec![
                vec![0.0, 1.0, 0.5],
                vec![1.0, 3.0, 0.5],
                vec![2.0, 2.0, 0.5]
            ]
        );
        assert_eq!(out.model, "test-embed");
        assert_eq!(
            out.usage,
            TokenUsage {
                prompt_tokens: 9,
                completion_tokens: 0,
                total_tokens: 9
            }
        );
        let value = serde_json::to_value(&out).unwrap();
        assert_eq!(value["embeddings"][1], json!([1.0, 3.0, 0.5]));

        let single: EmbedInput =
            parse_input(json!({"input": "just one", "model": "other-embed"})).unwrap();
        let out = embeddings(&h.settings, &h.store, "t1", single, STEP)
            .await
            .unwrap();
        assert_eq!(out.embeddings, vec![vec![0.0, 8.0, 0.5]]);
        assert_eq!(out.model, "other-embed");

        let seen = h.provider.requests();
        assert_eq!(seen[0].path, "/v1/embeddings");
        assert_eq!(
            seen[0].body,
            json!({"model": "test-embed", "input": ["a", "bbb", "cc"]})
        );
        assert_eq!(
            seen[0].authorization.as_deref(),
            Some(&*format!("Bearer {KEY}"))
        );
    }

    #[tokio::test]
    async fn embed_function_batches_long_lists_and_records_usage() {
        let h = harness(&[]).await;
        let inputs: Vec<String> = (0..300).map(|i| format!("chunk {i}")).collect();
        let vectors = embed(
            &LlmSettings::from_config(&h.config),
            &h.store,
            "kb",
            &inputs,
        )
        .await
        .unwrap();
        assert_eq!(vectors.len(), 300);
        assert_eq!(vectors[0][0], 0.0);
        assert_eq!(vectors[299][0], 43.0, "second batch restarts its indexes");
        let seen = h.provider.requests();
        assert_eq!(seen.len(), 2);
        assert_eq!(
            seen[0].body["input"].as_array().unwrap().len(),
            MAX_EMBED_INPUTS
        );
        assert_eq!(seen[1].body["input"].as_array().unwrap().len(), 44);
        let used = usage(&h.store, "kb", &current_month()).await.unwrap();
        assert_eq!(
            (used.prompt_tokens, used.total_tokens, used.requests),
            (900, 900, 2)
        );

        assert!(
            embed(&LlmSettings::from_config(&h.config), &h.store, "kb", &[])
                .await
                .unwrap()
                .is_empty()
        );
        let mut late_blank = inputs.clone();
        late_blank[280] = " ".to_owned();
        let err = embed(
            &LlmSettings::from_config(&h.config),
            &h.store,
            "kb",
            &late_blank,
        )
        .await
        .unwrap_err();
        assert!(
            err.message.contains("input text 280 is empty"),
            "{}",
            err.message
        );
        assert_eq!(
            h.provider.requests().len(),
            2,
            "nothing sent for an invalid list"
        );
    }

    #[test]
    fn costs_are_tokens_times_dollars_per_million_in_micros() {
        let prices = [ModelPrice {
            model: "m".to_owned(),
            prompt_per_million: "0.15".parse().unwrap(),
            completion_per_million: "0.60".parse().unwrap(),
        }];
        let used = TokenUsage {
            prompt_tokens: 1_000,
            completion_tokens: 500,
            total_tokens: 1_500,
        };
        assert_eq!(cost_micros(&prices, "m", &used), Some(450));
        assert_eq!(cost_micros(&prices, "other", &used), None);
        assert_eq!(cost_micros(&[], "m", &used), None);
    }

    #[tokio::test]
    async fn every_call_is_recorded_with_its_job_task_case_and_cost() {
        let h = harness(&[]).await;
        let prices = [ModelPrice {
            model: "priced".to_owned(),
            prompt_per_million: "1".parse().unwrap(),
            completion_per_million: "2".parse().unwrap(),
        }];
        let caller = Caller {
            tenant_id: "t1",
            job_id: Some("job-1"),
            task_id: Some("task-1"),
            case_id: Some("case-1"),
            prices: &prices,
        };
        chat(&h.settings, &h.store, caller, &with_model("priced"), STEP)
            .await
            .unwrap();
        chat(&h.settings, &h.store, caller, &hello(), STEP)
            .await
            .unwrap();
        chat(&h.settings, &h.store, "t1", &hello(), STEP)
            .await
            .unwrap();
        let now = crate::clock::now();
        let range = (
            now - chrono::Duration::hours(1),
            now + chrono::Duration::hours(1),
        );
        let report = |group_by: &'static str| {
            crate::pipeline::usage::report(&h.store, "t1", range.0, range.1, group_by)
        };
        let by_case = report("case").await.unwrap().unwrap();
        let row = |key: Option<&str>, requests, cost_micros, unpriced_requests| {
            crate::pipeline::usage::UsageRow {
                key: key.map(str::to_owned),
                requests,
                prompt_tokens: 12 * requests,
                completion_tokens: 5 * requests,
                total_tokens: 17 * requests,
                cost_micros,
                unpriced_requests,
            }
        };
        // 12 prompt and 5 completion tokens per call: 12 × 1 + 5 × 2 micros for the priced one.
        assert_eq!(
            by_case,
            [row(Some("case-1"), 2, Some(22), 1), row(None, 1, None, 1)]
        );
        let by_model = report("model").await.unwrap().unwrap();
        assert_eq!(by_model.len(), 2, "{by_model:?}");
        let by_task = report("task").await.unwrap().unwrap();
        assert_eq!(by_task[0].key.as_deref(), Some("task-1"));
        let by_day = report("day").await.unwrap().unwrap();
        assert_eq!(by_day.len(), 1);
        assert_eq!(by_day[0].key, Some(now.format("%Y-%m-%d").to_string()));
        assert!(report("colour").await.unwrap().is_none());
        let other_tenant = crate::pipeline::usage::report(&h.store, "t2", range.0, range.1, "case");
        assert!(other_tenant.await.unwrap().unwrap().is_empty());
    }

    #[tokio::test]
    async fn usage_accumulates_per_tenant_and_month() {
        let h = harness(&[]).await;
        for _ in 0..2 {
            chat(&h.settings, &h.store, "t1", &hello(), STEP)
                .await
                .unwrap();
        }
        chat(&h.settings, &h.store, "t2", &hello(), STEP)
            .await
            .unwrap();
        let month = current_month();
        assert_eq!(month.len(), 7);
        assert_eq!(
            usage(&h.store, "t1", &month).await.unwrap(),
            Usage {
                month: month.clone(),
                prompt_tokens: 24,
                completion_tokens: 10,
                total_tokens: 34,
                requests: 2,
            }
        );
        assert_eq!(
            usage(&h.store, "t2", &month).await.unwrap().total_tokens,
            17
        );
        assert_eq!(
            usage(&h.store, "t1", "1999-01").await.unwrap(),
            Usage {
                month: "1999-01".to_owned(),
                ..Usage::default()
            }
        );
    }

    #[tokio::test]
    async fn exhausted_budget_refuses_before_calling() {
        let h = harness(&[("LLM_MONTHLY_TOKEN_BUDGET", "20")]).await;
        // 0 and then 17 tokens used: both under 20.
        chat(&h.settings, &h.store, "t1", &hello(), STEP)
            .await
            .unwrap();
        chat(&h.settings, &h.store, "t1", &hello(), STEP)
            .await
            .unwrap();
        let err = chat(&h.settings, &h.store, "t1", &hello(), STEP)
            .await
            .unwrap_err();
        assert!(!err.retryable);
        assert!(
            err.message
                .starts_with("monthly token budget of 20 exhausted for this tenant"),
            "{}",
            err.message
        );
        let input: EmbedInput = parse_input(json!({"input": "x"})).unwrap();
        let err = embeddings(&h.settings, &h.store, "t1", input, STEP)
            .await
            .unwrap_err();
        assert!(err.message.contains("budget"), "{}", err.message);
        assert_eq!(
            h.provider.requests().len(),
            2,
            "refused calls never reach the provider"
        );

        // Other tenants have their own budget.
        chat(&h.settings, &h.store, "t2", &hello(), STEP)
            .await
            .unwrap();
        assert_eq!(h.provider.requests().len(), 3);
    }

    #[tokio::test]
    async fn rate_limit_is_transient_with_the_provider_message() {
        let h = harness(&[]).await;
        let err = chat(&h.settings, &h.store, "t1", &with_model("busy"), STEP)
            .await
            .unwrap_err();
        assert!(err.retryable, "{err:?}");
        assert!(err.message.contains("429"), "{}", err.message);
        assert!(
            err.message
                .contains("Rate limit reached for requests per minute"),
            "{}",
            err.message
        );
        let used = usage(&h.store, "t1", &current_month()).await.unwrap();
        assert_eq!(used.requests, 0, "failed calls are not counted");
    }

    #[tokio::test]
    async fn server_errors_are_transient() {
        let h = harness(&[]).await;
        let err = chat(&h.settings, &h.store, "t1", &with_model("down"), STEP)
            .await
            .unwrap_err();
        assert!(err.retryable, "{err:?}");
        assert!(err.message.contains("503"), "{}", err.message);
        assert!(
            err.message.contains("upstream overloaded"),
            "{}",
            err.message
        );
    }

    #[tokio::test]
    async fn bad_request_is_permanent_and_never_shows_the_key() {
        let h = harness(&[]).await;
        let err = chat(&h.settings, &h.store, "t1", &with_model("bad"), STEP)
            .await
            .unwrap_err();
        assert!(!err.retryable, "{err:?}");
        assert!(err.message.contains("400"), "{}", err.message);
        assert!(
            err.message.contains("Incorrect API key provided: ***"),
            "{}",
            err.message
        );
        assert!(!err.message.contains(KEY), "{}", err.message);
    }

    #[tokio::test]
    async fn slow_provider_times_out_as_transient() {
        let h = harness(&[]).await;
        // The input's own limit.
        let input = ChatInput {
            timeout_seconds: Some(0.2),
            ..with_model("slow")
        };
        let started = std::time::Instant::now();
        let err = chat(&h.settings, &h.store, "t1", &input, STEP)
            .await
            .unwrap_err();
        assert!(err.retryable, "{err:?}");
        assert!(
            err.message.contains("timed out after 0.2s"),
            "{}",
            err.message
        );
        assert!(started.elapsed() < Duration::from_secs(5));

        // The step's limit when it is the smallest.
        let err = chat(
            &h.settings,
            &h.store,
            "t1",
            &with_model("slow"),
            Duration::from_millis(300),
        )
        .await
        .unwrap_err();
        assert!(err.retryable, "{err:?}");
        assert!(
            err.message.contains("timed out after 0.3s"),
            "{}",
            err.message
        );
    }

    #[tokio::test]
    async fn unreachable_provider_is_transient() {
        crate::tls::install_crypto_provider();
        let h = harness(&[]).await;
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let settings = LlmSettings {
            base_url: Some(format!("http://127.0.0.1:{port}/v1")),
            ..h.settings.clone()
        };
        let err = chat(&settings, &h.store, "t1", &hello(), STEP)
            .await
            .unwrap_err();
        assert!(err.retryable, "{err:?}");
        assert!(err.message.contains("failed"), "{}", err.message);
        assert!(!err.message.contains(KEY));
    }

    #[tokio::test]
    async fn unset_base_url_is_permanent_and_names_the_variable() {
        let h = harness(&[("LLM_BASE_URL", "")]).await;
        assert_eq!(h.settings.base_url, None);
        let err = chat(&h.settings, &h.store, "t1", &hello(), STEP)
            .await
            .unwrap_err();
        assert!(!err.retryable);
        assert!(err.message.contains("LLM_BASE_URL"), "{}", err.message);
        let input: EmbedInput = parse_input(json!({"input": "x"})).unwrap();
        let err = embeddings(&h.settings, &h.store, "t1", input, STEP)
            .await
            .unwrap_err();
        assert!(err.message.contains("LLM_BASE_URL"), "{}", err.message);
        let err = embed(
            &LlmSettings::from_config(&h.config),
            &h.store,
            "t1",
            &["x".to_owned()],
        )
        .await
        .unwrap_err();
        assert!(!err.retryable && err.message.contains("LLM_BASE_URL"));
    }

    #[tokio::test]
    async fn invalid_input_is_permanent_and_not_sent() {
        let h = harness(&[]).await;
        let cases = [
            json!({"messages": []}),
            json!({"messages": [{"role": "user", "content": "x"}], "temperature": 2.5}),
            json!({"messages": [{"role": "user", "content": "x"}], "max_tokens": 0}),
            json!({"messages": [{"role": "user", "content": "x"}], "max_tokens": 40000}),
            json!({"messages": [{"role": "user", "content": "x"}], "timeout_seconds": 0}),
            json!({"messages": [{"role": "user", "content": "x"}], "model": " "}),
            json!({"messages": vec![json!({"role": "user", "content": "x"}); 201]}),
        ];
        for case in cases {
            let input = chat_input(case.clone());
            let err = chat(&h.settings, &h.store, "t1", &input, STEP)
                .await
                .unwrap_err();
            assert!(!err.retryable, "{case}: {err:?}");
            assert!(
                err.message.starts_with("invalid input"),
                "{case}: {}",
                err.message
            );
        }
        for bad in [
            json!({"messages": [{"role": "robot", "content": "x"}]}),
            json!({"messages": [{"role": "user"}]}),
            json!({"messages": [{"role": "user", "content": "x"}], "response_format": "xml"}),
            json!({"messages": [{"role": "user", "content": "x"}], "stream": true}),
        ] {
            let err = parse_input::<ChatInput>(bad.clone()).unwrap_err();
            assert!(!err.retryable, "{bad}");
        }
        for case in [
            json!({"input": []}),
            json!({"input": ["ok", ""]}),
            json!({"input": vec!["x"; 257]}),
        ] {
            let input: EmbedInput = parse_input(case.clone()).unwrap();
            let err = embeddings(&h.settings, &h.store, "t1", input, STEP)
                .await
                .unwrap_err();
            assert!(
                err.message.starts_with("invalid input"),
                "{case}: {}",
                err.message
            );
        }
        let err = parse_input::<EmbedInput>(json!({"input": 5})).unwrap_err();
        assert!(
            err.message.contains("a string or an array of strings"),
            "{}",
            err.message
        );
        assert!(h.provider.requests().is_empty());
    }

    #[test]
    fn input_schemas_are_self_contained_objects() {
        for (tool, required) in [
            (&LlmChat as &dyn Tool, "messages"),
            (&LlmEmbed as &dyn Tool, "input"),
        ] {
            let schema = tool.input_schema();
            assert!(
                schema["properties"].is_object(),
                "{}: {schema}",
                tool.name()
            );
            assert!(
                schema["required"]
                    .as_array()
                    .is_some_and(|r| r.contains(&json!(required))),
                "{}: {schema}",
                tool.name()
            );
            assert!(
                !schema.to_string().contains("$ref"),
                "{}: {schema}",
                tool.name()
            );
        }
        let embed = LlmEmbed.input_schema();
        assert_eq!(
            embed["properties"]["input"]["oneOf"],
            json!([{"type": "string"}, {"type": "array", "items": {"type": "string"}}]),
            "{embed}"
        );
        let chat = LlmChat.input_schema();
        for key in [
            "messages",
            "model",
            "temperature",
            "max_tokens",
            "response_format",
            "timeout_seconds",
        ] {
            assert!(chat["properties"].get(key).is_some(), "{key}: {chat}");
        }
        assert_eq!(LlmChat.name(), "llm.chat");
        assert_eq!(LlmEmbed.name(), "llm.embed");
    }

    #[test]
    fn endpoints_keep_the_query_and_errors_hide_credentials() {
        let url = endpoint_url(
            "https://res.openai.azure.com/openai/v1?api-version=preview",
            "chat/completions",
        )
        .unwrap();
        assert_eq!(
            url.as_str(),
            "https://res.openai.azure.com/openai/v1/chat/completions?api-version=preview"
        );
        let url = endpoint_url("http://user:pw@127.0.0.1:11434/v1", "embeddings").unwrap();
        assert_eq!(
            display_endpoint(&url),
            "http://127.0.0.1:11434/v1/embeddings"
        );
    }

    #[test]
    fn provider_messages_and_json_replies() {
        assert_eq!(
            provider_message(br#"{"error":{"message":"nope","type":"x"}}"#).as_deref(),
            Some("nope")
        );
        assert_eq!(
            provider_message(br#"{"error":"model not found"}"#).as_deref(),
            Some("model not found")
        );
        assert_eq!(
            provider_message(br#"{"object":"error","message":"too long"}"#).as_deref(),
            Some("too long")
        );
        assert_eq!(provider_message(b"<html>bad gateway</html>"), None);
        assert_eq!(provider_message(b""), None);

        assert_eq!(
            parse_json_reply(" {\"a\":1} ", None).unwrap(),
            json!({"a": 1})
        );
        assert_eq!(
            parse_json_reply("```\n[1,2]\n```", None).unwrap(),
            json!([1, 2])
        );
        assert!(parse_json_reply("nope", Some("stop")).is_err());
    }
}
