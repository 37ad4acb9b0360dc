//! Embedding providers behind one trait. The built-in one calls any OpenAI-compatible
//! `/embeddings` endpoint (OpenAI, Azure OpenAI, vLLM, Ollama …) in batches, with at most
//! `EMBEDDING_CONCURRENCY` requests in flight per process and transient failures retried.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use tokio::sync::Semaphore;

use crate::config::ModelPrice;
use crate::pipeline::tools::ToolError;
use crate::pipeline::tools::llm::{self, LlmSettings};
use crate::store::Store;

pub type EmbedFuture<'a> =
    Pin<Box<dyn Future<Output = Result<Vec<Vec<f32>>, ToolError>> + Send + 'a>>;

pub trait Embedder: Send + Sync + 'static {
    /// One vector per text, in order. Token use and cost are recorded for `caller` (the tenant,
    /// and the job, task and case the embedding is for, when there is one).
    fn embed<'a>(
        &'a self,
        store: &'a Store,
        caller: llm::Caller<'a>,
        texts: &'a [String],
    ) -> EmbedFuture<'a>;
}

/// Tries per batch before a transient failure is handed to the caller (the ingestion job then
/// retries the whole document with its own backoff).
const TRIES: u32 = 3;
const FIRST_DELAY: Duration = Duration::from_millis(200);

pub struct OpenAiCompatible {
    settings: LlmSettings,
    /// `LLM_PRICES`, so embedding calls carry their cost in the usage records.
    prices: Vec<ModelPrice>,
    in_flight: Semaphore,
}

impl OpenAiCompatible {
    pub fn new(settings: LlmSettings, prices: Vec<ModelPrice>, concurrency: usize) -> Self {
        Self {
            settings,
            prices,
            in_flight: Semaphore::new(concurrency.max(1)),
        }
    }
}

impl Embedder for OpenAiCompatible {
    fn embed<'a>(
        &'a self,
        store: &'a Store,
        caller: llm::Caller<'a>,
        texts: &'a [String],
    ) -> EmbedFuture<'a> {
        Box::pin(async move {
            let _permit = self
                .in_flight
                .acquire()
                .await
                .map_err(|_| ToolError::transient("the embedder is shutting down"))?;
            let mut delay = FIRST_DELAY;
            let mut tries = 0;
            loop {
                tries += 1;
                let caller = llm::Caller {
                    prices: &self.prices,
                    ..caller
                };
                match llm::embed(&self.settings, store, caller, texts).await {
                    Err(e) if e.retryable && tries < TRIES => {
                        tracing::info!(error = %e.message, tries, "embedding failed; retrying");
                        tokio::time::sleep(delay).await;
                        delay *= 2;
                    }
                    other => return other,
                }
            }
        })
    }
}
