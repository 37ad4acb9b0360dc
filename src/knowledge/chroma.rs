//! The ChromaDB vector store (`CHROMA_URL`): vectors live in a Chroma server, spoken to over its v2
//! HTTP API (`/api/v2/tenants/{tenant}/databases/{database}/collections/…`; tested against
//! ChromaDB 1.5.9). Everything goes into Chroma's default tenant and database, one Chroma
//! collection per Docket (tenant, collection), named `docket_` + the first 32 hex digits of
//! SHA-256(`{tenant_id}/{collection_id}`) and created with cosine distance on the first upsert.
//! Each record carries `{document_id, tenant_id}` as metadata; queries also filter by `tenant_id`.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use reqwest::header::{AUTHORIZATION, HeaderMap, HeaderName, HeaderValue};
use reqwest::{Method, StatusCode};
use serde::de::{DeserializeOwned, IgnoredAny};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::vectors::{Entry, Hit, Scope, VectorError, VectorFuture, VectorStore};

/// Chroma's own tenant and database, which every server has from the start.
const CHROMA_TENANT: &str = "default_tenant";
const CHROMA_DATABASE: &str = "default_database";
/// Records per upsert request (Chroma caps a batch; 500 stays well below it).
const BATCH: usize = 500;
const TIMEOUT: Duration = Duration::from_secs(30);
/// How much of an error response's body goes into the error.
const EXCERPT: usize = 300;

pub struct Chroma {
    client: reqwest::Client,
    /// `{base}/api/v2/tenants/default_tenant/databases/default_database/collections`.
    collections_url: String,
    /// Chroma collection ids of the scopes seen so far.
    ids: Mutex<HashMap<Scope, String>>,
}

/// The name of the Chroma collection for a scope: Chroma names are at most 512 characters of
/// `[a-zA-Z0-9._-]`, so the ids are hashed.
pub fn collection_name(scope: &Scope) -> String {
    let digest = Sha256::digest(format!("{}/{}", scope.tenant_id, scope.collection_id));
    let hex = hex::encode(digest);
    format!("docket_{}", &hex[..32])
}

#[derive(Deserialize)]
struct Collection {
    id: String,
    #[serde(default)]
    configuration_json: Option<Value>,
    #[serde(default)]
    metadata: Option<Value>,
}

impl Collection {
    /// The distance function, where the server says which.
    fn space(&self) -> Option<&str> {
        let config = self.configuration_json.as_ref();
        ["hnsw", "spann"]
            .iter()
            .find_map(|index| config?.get(index)?.get("space")?.as_str())
            .or_else(|| self.metadata.as_ref()?.get("hnsw:space")?.as_str())
    }
}

#[derive(Serialize)]
struct Metadata<'a> {
    document_id: &'a str,
    tenant_id: &'a str,
}

#[derive(Serialize)]
struct Upsert<'a> {
    ids: Vec<&'a str>,
    embeddings: Vec<&'a [f32]>,
    metadatas: Vec<Metadata<'a>>,
}

#[derive(Deserialize)]
struct QueryResponse {
    ids: Vec<Vec<String>>,
    #[serde(default)]
    distances: Option<Vec<Vec<Option<f32>>>>,
}

fn remote(message: impl Into<String>) -> VectorError {
    VectorError::Remote(message.into())
}

/// An error and its causes on one line (reqwest keeps "connection refused" in the source chain).
fn describe(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Whether a 404's body is Chroma's own "no such collection" (`{"error": "NotFoundError", …}`),
/// not a wrong URL answered by something else, which must not pass for an empty collection.
fn is_chroma_not_found(body: &str) -> bool {
    serde_json::from_str::<Value>(body).is_ok_and(|v| {
        v.get("error")
            .and_then(Value::as_str)
            .is_some_and(|e| e.contains("NotFound"))
    })
}

fn excerpt(body: &str) -> &str {
    let body = body.trim();
    match body.char_indices().nth(EXCERPT) {
        Some((end, _)) => &body[..end],
        None => body,
    }
}

impl Chroma {
    /// A client for the Chroma server at `base_url` (e.g. `http://127.0.0.1:8000`), sending
    /// `token` (`CHROMA_TOKEN`), if any, as both `Authorization: Bearer` and `X-Chroma-Token`.
    pub fn new(base_url: &str, token: Option<String>) -> Result<Self, VectorError> {
        let url = url::Url::parse(base_url)
            .map_err(|e| remote(format!("invalid Chroma URL {base_url:?}: {e}")))?;
        if !matches!(url.scheme(), "http" | "https")
            || url.host_str().is_none()
            || url.query().is_some()
            || url.fragment().is_some()
        {
            return Err(remote(format!(
                "invalid Chroma URL {base_url:?}: expected http(s)://host[:port]"
            )));
        }
        let mut headers = HeaderMap::new();
        if let Some(token) = token.filter(|t| !t.is_empty()) {
            let value = |text: String| {
                HeaderValue::from_str(&text)
                    .map(|mut v| {
                        v.set_sensitive(true);
                        v
                    })
                    .map_err(|_| remote("CHROMA_TOKEN is not a valid HTTP header value"))
            };
            headers.insert(AUTHORIZATION, value(format!("Bearer {token}"))?);
            headers.insert(HeaderName::from_static("x-chroma-token"), value(token)?);
        }
        crate::tls::install_crypto_provider();
        let client = reqwest::Client::builder()
            .user_agent(concat!("docket/", env!("CARGO_PKG_VERSION")))
            .default_headers(headers)
            .timeout(TIMEOUT)
            // A redirect could carry the token elsewhere; Chroma does not redirect.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| remote(format!("cannot build an HTTP client: {}", describe(&e))))?;
        Ok(Self {
            client,
            collections_url: format!(
                "{}/api/v2/tenants/{CHROMA_TENANT}/databases/{CHROMA_DATABASE}/collections",
                url.as_str().trim_end_matches('/')
            ),
            ids: Mutex::new(HashMap::new()),
        })
    }

    /// One request: `Ok(None)` for a 404, an error for any other failure.
    async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        url: &str,
        body: Option<&(impl Serialize + Sync)>,
    ) -> Result<Option<T>, VectorError> {
        let mut request = self.client.request(method.clone(), url);
        if let Some(body) = body {
            request = request.json(body);
        }
        let failed = |e: reqwest::Error| remote(format!("Chroma {method} {url}: {}", describe(&e)));
        let response = request.send().await.map_err(failed)?;
        let status = response.status();
        let text = response.text().await.map_err(failed)?;
        if status == StatusCode::NOT_FOUND && is_chroma_not_found(&text) {
            return Ok(None);
        }
        if !status.is_success() {
            return Err(remote(format!(
                "Chroma {method} {url}: HTTP {status}: {}",
                excerpt(&text)
            )));
        }
        serde_json::from_str(&text).map(Some).map_err(|e| {
            remote(format!(
                "Chroma {method} {url}: unexpected response ({e}): {}",
                excerpt(&text)
            ))
        })
    }

    fn cached(&self, scope: &Scope) -> Option<String> {
        self.ids
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(scope)
            .cloned()
    }

    fn remember(&self, scope: &Scope, id: &str) {
        self.ids
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(scope.clone(), id.to_owned());
    }

    /// Drops a cached id that turned out to be gone (the collection was deleted, maybe by another
    /// process), unless it was replaced meanwhile.
    fn forget(&self, scope: &Scope, id: &str) {
        let mut ids = self.ids.lock().unwrap_or_else(|e| e.into_inner());
        if ids.get(scope).is_some_and(|cached| cached == id) {
            ids.remove(scope);
        }
    }

    fn checked(scope: &Scope, collection: Collection) -> Result<String, VectorError> {
        match collection.space() {
            Some(space) if space != "cosine" => Err(remote(format!(
                "Chroma collection {} uses {space} distance, not cosine",
                collection_name(scope)
            ))),
            _ => Ok(collection.id),
        }
    }

    /// The scope's Chroma collection id, if the collection exists.
    async fn existing(&self, scope: &Scope) -> Result<Option<String>, VectorError> {
        if let Some(id) = self.cached(scope) {
            return Ok(Some(id));
        }
        let url = format!("{}/{}", self.collections_url, collection_name(scope));
        let Some(collection) = self
            .call::<Collection>(Method::GET, &url, None::<&()>)
            .await?
        else {
            return Ok(None);
        };
        let id = Self::checked(scope, collection)?;
        self.remember(scope, &id);
        Ok(Some(id))
    }

    /// The scope's Chroma collection id, creating the collection if needed.
    async fn ensure(&self, scope: &Scope) -> Result<String, VectorError> {
        if let Some(id) = self.cached(scope) {
            return Ok(id);
        }
        let body = json!({
            "name": collection_name(scope),
            "metadata": {"hnsw:space": "cosine"},
            "get_or_create": true,
        });
        let collection = self
            .call::<Collection>(Method::POST, &self.collections_url, Some(&body))
            .await?
            .ok_or_else(|| remote("Chroma answered 404 to creating a collection"))?;
        let id = Self::checked(scope, collection)?;
        self.remember(scope, &id);
        Ok(id)
    }

    fn records_url(&self, id: &str, action: &str) -> String {
        format!("{}/{id}/{action}", self.collections_url)
    }
}

impl VectorStore for Chroma {
    fn upsert<'a>(&'a self, scope: &'a Scope, entries: Vec<Entry>) -> VectorFuture<'a, ()> {
        Box::pin(async move {
            for batch in entries.chunks(BATCH) {
                let body = Upsert {
                    ids: batch.iter().map(|e| e.chunk_id.as_str()).collect(),
                    embeddings: batch.iter().map(|e| e.vector.as_slice()).collect(),
                    metadatas: batch
                        .iter()
                        .map(|e| Metadata {
                            document_id: &e.document_id,
                            tenant_id: &scope.tenant_id,
                        })
                        .collect(),
                };
                let mut done = false;
                // A cached id may be stale (the collection deleted elsewhere): recreate once.
                for _ in 0..2 {
                    let id = self.ensure(scope).await?;
                    let url = self.records_url(&id, "upsert");
                    if self
                        .call::<IgnoredAny>(Method::POST, &url, Some(&body))
                        .await?
                        .is_some()
                    {
                        done = true;
                        break;
                    }
                    self.forget(scope, &id);
                }
                if !done {
                    return Err(remote(format!(
                        "Chroma collection {} vanished during an upsert",
                        collection_name(scope)
                    )));
                }
            }
            Ok(())
        })
    }

    fn delete_document<'a>(
        &'a self,
        scope: &'a Scope,
        document_id: &'a str,
    ) -> VectorFuture<'a, ()> {
        Box::pin(async move {
            let body = json!({"where": {"document_id": document_id}});
            for _ in 0..2 {
                let Some(id) = self.existing(scope).await? else {
                    return Ok(());
                };
                let url = self.records_url(&id, "delete");
                if self
                    .call::<IgnoredAny>(Method::POST, &url, Some(&body))
                    .await?
                    .is_some()
                {
                    return Ok(());
                }
                self.forget(scope, &id);
            }
            Ok(())
        })
    }

    fn delete_collection<'a>(&'a self, scope: &'a Scope) -> VectorFuture<'a, ()> {
        Box::pin(async move {
            // Chroma deletes collections by name; a missing one is already deleted.
            let url = format!("{}/{}", self.collections_url, collection_name(scope));
            let result = self
                .call::<IgnoredAny>(Method::DELETE, &url, None::<&()>)
                .await;
            self.ids
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(scope);
            result.map(|_| ())
        })
    }

    fn query<'a>(
        &'a self,
        scope: &'a Scope,
        vector: &'a [f32],
        k: usize,
    ) -> VectorFuture<'a, Vec<Hit>> {
        Box::pin(async move {
            if k == 0 {
                return Ok(Vec::new());
            }
            let body = json!({
                "query_embeddings": [vector],
                "n_results": k.min(i32::MAX as usize),
                "where": {"tenant_id": scope.tenant_id},
                "include": ["distances"],
            });
            for _ in 0..2 {
                let Some(id) = self.existing(scope).await? else {
                    return Ok(Vec::new());
                };
                let url = self.records_url(&id, "query");
                let Some(response) = self
                    .call::<QueryResponse>(Method::POST, &url, Some(&body))
                    .await?
                else {
                    self.forget(scope, &id);
                    continue;
                };
                let ids = response.ids.into_iter().next().unwrap_or_default();
                let distances = response
                    .distances
                    .and_then(|d| d.into_iter().next())
                    .unwrap_or_default();
                if distances.len() != ids.len() {
                    return Err(remote(
                        "Chroma returned ids and distances of different lengths",
                    ));
                }
                // Chroma's cosine distance is 1 - cosine similarity.
                let mut hits: Vec<Hit> = ids
                    .into_iter()
                    .zip(distances)
                    .map(|(chunk_id, distance)| Hit {
                        chunk_id,
                        score: distance.map_or(f32::NEG_INFINITY, |d| 1.0 - d),
                    })
                    .collect();
                hits.sort_by(|a, b| b.score.total_cmp(&a.score));
                hits.truncate(k);
                return Ok(hits);
            }
            Ok(Vec::new())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::os::unix::process::CommandExt;
    use std::path::PathBuf;
    use std::process::{Child, Command, Stdio};
    use std::time::Instant;

    fn in_ci() -> bool {
        std::env::var_os("CI").is_some_and(|v| !v.is_empty() && v != "0" && v != "false")
    }

    /// How to start Chroma: `CHROMA_BIN`, else `chroma` on `PATH`, else the one scripts/test.sh
    /// installed, else the Python module.
    fn chroma_command() -> Result<Command, String> {
        if let Some(bin) = std::env::var_os("CHROMA_BIN").filter(|b| !b.is_empty()) {
            return Ok(Command::new(bin));
        }
        let on_path = std::env::var_os("PATH").and_then(|path| {
            std::env::split_paths(&path)
                .map(|dir| dir.join("chroma"))
                .find(|bin| bin.is_file())
        });
        if let Some(bin) = on_path {
            return Ok(Command::new(bin));
        }
        // Where scripts/test.sh installs it: ~/.cache/docket/chromadb-<version>/bin/chroma.
        let cache = std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cache/docket"));
        let mut installed: Vec<PathBuf> = cache
            .and_then(|dir| std::fs::read_dir(dir).ok())
            .into_iter()
            .flatten()
            .filter_map(|entry| entry.ok())
            .filter(|entry| entry.file_name().to_string_lossy().starts_with("chromadb-"))
            .map(|entry| entry.path().join("bin/chroma"))
            .filter(|bin| bin.is_file())
            .collect();
        installed.sort();
        if let Some(bin) = installed.pop() {
            return Ok(Command::new(bin));
        }
        let module = Command::new("python3")
            .args(["-c", "import chromadb.cli.cli"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if module {
            // The module has no `__main__` entry; this is what the `chroma` script runs.
            let mut command = Command::new("python3");
            command.args([
                "-c",
                "import sys; from chromadb.cli.cli import app; sys.argv[0] = 'chroma'; app()",
            ]);
            return Ok(command);
        }
        Err(
            "no `chroma` on PATH, in CHROMA_BIN or in ~/.cache/docket/chromadb-*, and python3 \
             cannot import chromadb; scripts/test.sh installs it"
                .to_owned(),
        )
    }

    /// A throwaway Chroma server on a free loopback port, with its data in a temporary directory;
    /// killed (and the directory removed) on drop, and by the kernel if the tests die.
    struct ChromaServer {
        url: String,
        child: Child,
        _dir: tempfile::TempDir,
    }

    impl ChromaServer {
        fn start() -> Result<Self, String> {
            let mut command = chroma_command()?;
            let dir = tempfile::Builder::new()
                .prefix("docket-chroma-")
                .tempdir()
                .map_err(|e| format!("temp dir: {e}"))?;
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .map(|a| a.port())
                .map_err(|e| format!("no free port: {e}"))?;
            let log_path = dir.path().join("chroma.log");
            let log = std::fs::File::create(&log_path).map_err(|e| format!("log file: {e}"))?;
            let err_log = log.try_clone().map_err(|e| format!("log file: {e}"))?;
            command
                .arg("run")
                .arg("--path")
                .arg(dir.path().join("data"))
                .args(["--host", "127.0.0.1", "--port", &port.to_string()])
                .env("ANONYMIZED_TELEMETRY", "False")
                .stdin(Stdio::null())
                .stdout(log)
                .stderr(err_log);
            // SAFETY: prctl is async-signal-safe and touches no memory of the parent. The kernel
            // kills the server when the spawning (test) thread ends, should Drop never run.
            unsafe {
                command.pre_exec(|| {
                    libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                    Ok(())
                });
            }
            let child = command
                .spawn()
                .map_err(|e| format!("cannot start chroma: {e}"))?;
            let mut server = Self {
                url: format!("http://127.0.0.1:{port}"),
                child,
                _dir: dir,
            };
            let log_tail = |path: &PathBuf| {
                let text = std::fs::read_to_string(path).unwrap_or_default();
                let start = text.len().saturating_sub(2000);
                let start = (start..text.len())
                    .find(|&i| text.is_char_boundary(i))
                    .unwrap_or(text.len());
                text[start..].to_owned()
            };
            let heartbeat = format!("{}/api/v2/heartbeat", server.url);
            let deadline = Instant::now() + Duration::from_secs(60);
            loop {
                if let Ok(Some(status)) = server.child.try_wait() {
                    return Err(format!(
                        "chroma exited with {status} before answering:\n{}",
                        log_tail(&log_path)
                    ));
                }
                if heartbeat_ok(&heartbeat) {
                    return Ok(server);
                }
                if Instant::now() > deadline {
                    return Err(format!(
                        "chroma did not answer {heartbeat} within 60 s:\n{}",
                        log_tail(&log_path)
                    ));
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }

    /// A blocking `GET` of the heartbeat, without an async runtime.
    fn heartbeat_ok(url: &str) -> bool {
        use std::io::{Read, Write};
        let Some(rest) = url.strip_prefix("http://") else {
            return false;
        };
        let (host, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        let Ok(mut stream) = std::net::TcpStream::connect(host) else {
            return false;
        };
        let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
        let request = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
        let mut response = String::new();
        stream.write_all(request.as_bytes()).is_ok()
            && stream.read_to_string(&mut response).is_ok()
            && response.starts_with("HTTP/1.1 200")
            && response.contains("heartbeat")
    }

    impl Drop for ChromaServer {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    /// A server for one test, or `None` (with a note) when Chroma is not installed outside CI.
    fn server() -> Option<ChromaServer> {
        match ChromaServer::start() {
            Ok(server) => Some(server),
            Err(why) => {
                assert!(!in_ci(), "ChromaDB is required when CI is set: {why}");
                eprintln!(
                    "skipping: ChromaDB is not available here ({why}); set CI=1 to make this fatal"
                );
                None
            }
        }
    }

    fn scope(tenant: &str, collection: &str) -> Scope {
        Scope {
            tenant_id: tenant.to_owned(),
            collection_id: collection.to_owned(),
        }
    }

    fn entry(chunk: &str, document: &str, vector: &[f32]) -> Entry {
        Entry {
            chunk_id: chunk.to_owned(),
            document_id: document.to_owned(),
            vector: vector.to_vec(),
        }
    }

    fn ids(hits: &[Hit]) -> Vec<&str> {
        hits.iter().map(|h| h.chunk_id.as_str()).collect()
    }

    /// Three chunks of two documents in `scope`.
    async fn seed(store: &Chroma, scope: &Scope) {
        store
            .upsert(
                scope,
                vec![
                    entry("a1", "doc-a", &[1.0, 0.0, 0.0]),
                    entry("a2", "doc-a", &[0.8, 0.6, 0.0]),
                    entry("b1", "doc-b", &[0.0, 1.0, 0.0]),
                ],
            )
            .await
            .expect("upsert");
    }

    #[test]
    fn collection_names_are_short_stable_and_distinct() {
        let a = collection_name(&scope("tenant-1", "kb"));
        assert_eq!(a, collection_name(&scope("tenant-1", "kb")));
        assert_ne!(a, collection_name(&scope("tenant-2", "kb")));
        assert!(a.starts_with("docket_") && a.len() == 39, "{a}");
        assert!(a.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'));
    }

    #[test]
    fn only_chromas_own_404_means_missing() {
        assert!(is_chroma_not_found(
            r#"{"error":"NotFoundError","message":"Collection [x] does not exist"}"#
        ));
        assert!(!is_chroma_not_found("<html>404 Not Found</html>"));
        assert!(!is_chroma_not_found(r#"{"detail":"Not Found"}"#));
    }

    #[test]
    fn new_rejects_bad_urls_and_tokens() {
        assert!(Chroma::new("not a url", None).is_err());
        assert!(Chroma::new("ftp://127.0.0.1", None).is_err());
        assert!(Chroma::new("http://127.0.0.1:8000/?x=1", None).is_err());
        assert!(Chroma::new("http://127.0.0.1:8000", Some("bad\ntoken".to_owned())).is_err());
        assert!(Chroma::new("http://127.0.0.1:8000/", Some("token".to_owned())).is_ok());
    }

    #[tokio::test]
    async fn query_returns_nearest_first_with_cosine_similarity() {
        let Some(server) = server() else { return };
        let store = Chroma::new(&server.url, None).unwrap();
        let kb = scope("tenant-1", "kb");
        seed(&store, &kb).await;

        let hits = store.query(&kb, &[1.0, 0.0, 0.0], 10).await.unwrap();
        assert_eq!(ids(&hits), ["a1", "a2", "b1"]);
        assert!((hits[0].score - 1.0).abs() < 1e-4, "{hits:?}");
        assert!((hits[1].score - 0.8).abs() < 1e-4, "{hits:?}");
        assert!(hits[2].score.abs() < 1e-4, "{hits:?}");

        // Scale does not matter for cosine similarity, and k limits the hits.
        let hits = store.query(&kb, &[0.0, 5.0, 0.0], 1).await.unwrap();
        assert_eq!(ids(&hits), ["b1"]);
        assert!((hits[0].score - 1.0).abs() < 1e-4, "{hits:?}");
        assert!(
            store
                .query(&kb, &[1.0, 0.0, 0.0], 0)
                .await
                .unwrap()
                .is_empty()
        );

        // Another client (a restarted process) finds the existing collection by name.
        let other = Chroma::new(&server.url, None).unwrap();
        assert_eq!(
            other.query(&kb, &[1.0, 0.0, 0.0], 10).await.unwrap().len(),
            3
        );
    }

    #[tokio::test]
    async fn delete_document_removes_only_that_documents_vectors() {
        let Some(server) = server() else { return };
        let store = Chroma::new(&server.url, None).unwrap();
        let kb = scope("tenant-1", "kb");
        seed(&store, &kb).await;

        store.delete_document(&kb, "doc-a").await.unwrap();
        let hits = store.query(&kb, &[1.0, 0.0, 0.0], 10).await.unwrap();
        assert_eq!(ids(&hits), ["b1"]);
        // Deleting a document that has no vectors, or in a collection never created, is fine.
        store.delete_document(&kb, "doc-a").await.unwrap();
        store
            .delete_document(&scope("tenant-1", "never"), "doc-a")
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn scopes_are_isolated() {
        let Some(server) = server() else { return };
        let store = Chroma::new(&server.url, None).unwrap();
        let kb = scope("tenant-1", "kb");
        seed(&store, &kb).await;

        let same_collection_other_tenant = scope("tenant-2", "kb");
        let other_collection = scope("tenant-1", "other");
        for other in [&same_collection_other_tenant, &other_collection] {
            assert!(
                store
                    .query(other, &[1.0, 0.0, 0.0], 10)
                    .await
                    .unwrap()
                    .is_empty()
            );
        }
        store
            .upsert(
                &same_collection_other_tenant,
                vec![entry("x1", "doc-a", &[1.0, 0.0, 0.0])],
            )
            .await
            .unwrap();
        // Same document id under another tenant: deleting it there leaves tenant-1 alone.
        store
            .delete_document(&same_collection_other_tenant, "doc-a")
            .await
            .unwrap();
        let hits = store.query(&kb, &[1.0, 0.0, 0.0], 10).await.unwrap();
        assert_eq!(ids(&hits), ["a1", "a2", "b1"]);
        store
            .delete_collection(&same_collection_other_tenant)
            .await
            .unwrap();
        assert_eq!(
            store.query(&kb, &[1.0, 0.0, 0.0], 10).await.unwrap().len(),
            3
        );
    }

    #[tokio::test]
    async fn delete_collection_empties_it_and_ignores_missing_ones() {
        let Some(server) = server() else { return };
        let store = Chroma::new(&server.url, None).unwrap();
        let kb = scope("tenant-1", "kb");
        seed(&store, &kb).await;

        store.delete_collection(&kb).await.unwrap();
        assert!(
            store
                .query(&kb, &[1.0, 0.0, 0.0], 10)
                .await
                .unwrap()
                .is_empty()
        );
        store.delete_collection(&kb).await.unwrap();
        store
            .delete_collection(&scope("tenant-1", "never"))
            .await
            .unwrap();
        assert!(
            store
                .query(&scope("tenant-1", "never"), &[1.0, 0.0, 0.0], 10)
                .await
                .unwrap()
                .is_empty()
        );

        // Deleted behind this client's back (its cached id is stale): upsert recreates it.
        let other = Chroma::new(&server.url, None).unwrap();
        seed(&store, &kb).await;
        other.delete_collection(&kb).await.unwrap();
        assert!(
            store
                .query(&kb, &[1.0, 0.0, 0.0], 10)
                .await
                .unwrap()
                .is_empty()
        );
        seed(&store, &kb).await;
        other.delete_collection(&kb).await.unwrap();
        seed(&store, &kb).await;
        assert_eq!(
            store.query(&kb, &[1.0, 0.0, 0.0], 10).await.unwrap().len(),
            3
        );
    }

    #[tokio::test]
    async fn upsert_replaces_an_existing_vector_and_batches() {
        let Some(server) = server() else { return };
        let store = Chroma::new(&server.url, None).unwrap();
        let kb = scope("tenant-1", "kb");
        seed(&store, &kb).await;

        store
            .upsert(&kb, vec![entry("a1", "doc-a", &[0.0, 0.0, 1.0])])
            .await
            .unwrap();
        let hits = store.query(&kb, &[0.0, 0.0, 1.0], 1).await.unwrap();
        assert_eq!(ids(&hits), ["a1"]);
        assert!((hits[0].score - 1.0).abs() < 1e-4, "{hits:?}");
        // a1 is now orthogonal to this query, b1 nearly so, a2 close.
        let hits = store.query(&kb, &[1.0, 0.1, 0.0], 10).await.unwrap();
        assert_eq!(ids(&hits), ["a2", "b1", "a1"], "{hits:?}");
        assert!(hits[2].score.abs() < 1e-4, "{hits:?}");

        // More than one batch.
        let many: Vec<Entry> = (0..BATCH + 20)
            .map(|i| entry(&format!("m{i}"), "doc-m", &[1.0, i as f32 / 100.0, 0.5]))
            .collect();
        store.upsert(&kb, many).await.unwrap();
        let hits = store.query(&kb, &[1.0, 0.0, 0.5], 5).await.unwrap();
        assert_eq!(hits.len(), 5);
        assert_eq!(hits[0].chunk_id, "m0");
        assert!(
            hits.windows(2).all(|w| w[0].score >= w[1].score),
            "{hits:?}"
        );
        store.delete_document(&kb, "doc-m").await.unwrap();
        assert_eq!(
            store
                .query(&kb, &[1.0, 0.0, 0.5], 1000)
                .await
                .unwrap()
                .len(),
            3
        );
    }

    #[tokio::test]
    async fn server_errors_and_unreachable_servers_are_remote_errors() {
        let Some(server) = server() else { return };
        let store = Chroma::new(&server.url, None).unwrap();
        let kb = scope("tenant-1", "kb");
        seed(&store, &kb).await;
        // A vector of the wrong dimension: Chroma answers 4xx with a message.
        match store.query(&kb, &[1.0, 0.0], 3).await {
            Err(VectorError::Remote(message)) => {
                assert!(message.contains("dimension"), "{message}")
            }
            other => panic!("expected a remote error, got {other:?}"),
        }

        // A wrong base URL: the server's 404 for an unknown route is an error, not "no hits".
        let wrong = Chroma::new(&format!("{}/not-chroma", server.url), None).unwrap();
        match wrong.query(&kb, &[1.0, 0.0, 0.0], 3).await {
            Err(VectorError::Remote(message)) => assert!(message.contains("404"), "{message}"),
            other => panic!("expected a remote error, got {other:?}"),
        }

        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .unwrap();
        let nowhere = Chroma::new(&format!("http://127.0.0.1:{port}"), None).unwrap();
        match nowhere
            .upsert(&kb, vec![entry("a1", "doc-a", &[1.0])])
            .await
        {
            Err(VectorError::Remote(message)) => {
                assert!(message.contains("127.0.0.1"), "{message}")
            }
            other => panic!("expected a remote error, got {other:?}"),
        }
    }
}
