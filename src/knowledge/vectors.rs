//! Vector stores behind one trait: the embedded default keeps vectors in the database next to the
//! chunks with an in-process index per collection; ChromaDB (`CHROMA_URL`) keeps them in a Chroma
//! server. A pgvector store would implement the same trait.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use crate::store::Store;
use crate::with_pool;

pub type VectorFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, VectorError>> + Send + 'a>>;

#[derive(Debug, thiserror::Error)]
pub enum VectorError {
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("vector store: {0}")]
    Remote(String),
}

/// Which collection of which tenant; every call is scoped by both.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Scope {
    pub tenant_id: String,
    pub collection_id: String,
}

/// One chunk's vector.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub chunk_id: String,
    pub document_id: String,
    pub vector: Vec<f32>,
}

/// A match: the chunk and its cosine similarity (higher is closer).
#[derive(Debug, Clone, PartialEq)]
pub struct Hit {
    pub chunk_id: String,
    pub score: f32,
}

pub trait VectorStore: Send + Sync + 'static {
    /// Adds or replaces the vectors of chunks.
    fn upsert<'a>(&'a self, scope: &'a Scope, entries: Vec<Entry>) -> VectorFuture<'a, ()>;

    /// Removes every vector of a document.
    fn delete_document<'a>(
        &'a self,
        scope: &'a Scope,
        document_id: &'a str,
    ) -> VectorFuture<'a, ()>;

    /// Removes a whole collection.
    fn delete_collection<'a>(&'a self, scope: &'a Scope) -> VectorFuture<'a, ()>;

    /// The `k` nearest chunks to `vector`, closest first.
    fn query<'a>(
        &'a self,
        scope: &'a Scope,
        vector: &'a [f32],
        k: usize,
    ) -> VectorFuture<'a, Vec<Hit>>;
}

/// Little-endian f32s, as stored in `chunks.embedding`.
pub fn to_bytes(vector: &[f32]) -> Vec<u8> {
    vector.iter().flat_map(|v| v.to_le_bytes()).collect()
}

pub fn from_bytes(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

/// Normalised to unit length, so cosine similarity is a dot product.
fn normalised(mut vector: Vec<f32>) -> Vec<f32> {
    let norm = vector.iter().map(|v| v * v).sum::<f32>().sqrt();
    if norm > 0.0 {
        vector.iter_mut().for_each(|v| *v /= norm);
    }
    vector
}

/// A collection's vectors in memory, valid for one `vectors_version`.
struct Loaded {
    version: i64,
    ids: Vec<String>,
    vectors: Vec<Vec<f32>>,
}

/// The embedded store: vectors in `chunks.embedding`, searched exactly (every vector compared) from
/// an in-process copy that is reloaded when the collection's `vectors_version` changes — also when
/// another process changed it.
pub struct Embedded {
    store: Store,
    loaded: Mutex<HashMap<Scope, Arc<Loaded>>>,
}

impl Embedded {
    pub fn new(store: Store) -> Self {
        Self {
            store,
            loaded: Mutex::new(HashMap::new()),
        }
    }

    async fn bump(&self, scope: &Scope) -> Result<(), sqlx::Error> {
        crate::with_writer!(&self.store, pool => {
            sqlx::query("UPDATE collections SET vectors_version = vectors_version + 1 WHERE tenant_id = $1 AND id = $2")
                .bind(&scope.tenant_id)
                .bind(&scope.collection_id)
                .execute(pool)
                .await
                .map(|_| ())
        })
    }

    async fn index(&self, scope: &Scope) -> Result<Arc<Loaded>, sqlx::Error> {
        let version: Option<i64> = with_pool!(&self.store, pool => {
            sqlx::query_scalar("SELECT vectors_version FROM collections WHERE tenant_id = $1 AND id = $2")
                .bind(&scope.tenant_id)
                .bind(&scope.collection_id)
                .fetch_optional(pool)
                .await
        })?;
        let version = version.unwrap_or(-1);
        if let Some(cached) = self
            .loaded
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(scope)
            .filter(|l| l.version == version)
        {
            return Ok(cached.clone());
        }
        let rows: Vec<(String, Vec<u8>)> = with_pool!(&self.store, pool => {
            sqlx::query_as(
                "SELECT id, embedding FROM chunks WHERE tenant_id = $1 AND collection_id = $2 AND embedding IS NOT NULL",
            )
            .bind(&scope.tenant_id)
            .bind(&scope.collection_id)
            .fetch_all(pool)
            .await
        })?;
        let (ids, vectors) = rows
            .into_iter()
            .map(|(id, bytes)| (id, normalised(from_bytes(&bytes))))
            .unzip();
        let loaded = Arc::new(Loaded {
            version,
            ids,
            vectors,
        });
        self.loaded
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(scope.clone(), loaded.clone());
        Ok(loaded)
    }
}

impl VectorStore for Embedded {
    fn upsert<'a>(&'a self, scope: &'a Scope, entries: Vec<Entry>) -> VectorFuture<'a, ()> {
        Box::pin(async move {
            let mut tx = self.store.begin().await?;
            for entry in &entries {
                crate::with_tx!(&mut tx, conn => {
                    sqlx::query("UPDATE chunks SET embedding = $1 WHERE tenant_id = $2 AND collection_id = $3 AND id = $4")
                        .bind(to_bytes(&entry.vector))
                        .bind(&scope.tenant_id)
                        .bind(&scope.collection_id)
                        .bind(&entry.chunk_id)
                        .execute(conn)
                        .await
                        .map(|_| ())
                })?;
            }
            tx.commit().await?;
            self.bump(scope).await?;
            Ok(())
        })
    }

    fn delete_document<'a>(
        &'a self,
        scope: &'a Scope,
        _document_id: &'a str,
    ) -> VectorFuture<'a, ()> {
        // The vectors live in the chunk rows, which the caller deletes; the index just reloads.
        Box::pin(async move { Ok(self.bump(scope).await?) })
    }

    fn delete_collection<'a>(&'a self, scope: &'a Scope) -> VectorFuture<'a, ()> {
        Box::pin(async move {
            self.loaded
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(scope);
            Ok(())
        })
    }

    fn query<'a>(
        &'a self,
        scope: &'a Scope,
        vector: &'a [f32],
        k: usize,
    ) -> VectorFuture<'a, Vec<Hit>> {
        Box::pin(async move {
            let index = self.index(scope).await?;
            let query = normalised(vector.to_vec());
            let mut hits: Vec<Hit> = index
                .ids
                .iter()
                .zip(&index.vectors)
                .filter(|(_, v)| v.len() == query.len())
                .map(|(id, v)| Hit {
                    chunk_id: id.clone(),
                    score: v.iter().zip(&query).map(|(a, b)| a * b).sum(),
                })
                .collect();
            hits.sort_by(|a, b| b.score.total_cmp(&a.score));
            hits.truncate(k);
            Ok(hits)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vectors_round_trip_through_bytes_and_normalise() {
        let v = vec![3.0_f32, -4.0, 0.5];
        assert_eq!(from_bytes(&to_bytes(&v)), v);
        let n = normalised(vec![3.0, 4.0]);
        assert!((n[0] - 0.6).abs() < 1e-6 && (n[1] - 0.8).abs() < 1e-6);
        assert_eq!(normalised(vec![0.0, 0.0]), vec![0.0, 0.0]);
    }
}
