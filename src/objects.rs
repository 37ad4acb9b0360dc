//! The object store that holds uploaded files: a local directory by default (`file://…`), any
//! S3-compatible bucket in production (`s3://bucket` with the usual `AWS_*` variables, including
//! `AWS_ENDPOINT` for MinIO and the like). Only Docket's own keys are used, so one bucket may be
//! shared with other applications under a distinct prefix.

use std::sync::Arc;

use object_store::ObjectStore;

#[derive(Debug, thiserror::Error)]
pub enum ObjectsError {
    #[error("OBJECT_STORE_URL: {0}")]
    Config(String),
    #[error(transparent)]
    Store(#[from] object_store::Error),
}

/// Builds the store `OBJECT_STORE_URL` names. A `file://` directory is created if missing.
pub fn open(url: &str) -> Result<Arc<dyn ObjectStore>, ObjectsError> {
    let env = std::env::vars_os()
        .filter_map(|(key, value)| Some((key.into_string().ok()?, value.into_string().ok()?)));
    open_with(url, env)
}

/// [`open`] with the `AWS_*` settings taken from `vars` instead of the process environment, read
/// exactly as `AmazonS3Builder::from_env` reads them (so tests need not mutate the environment).
fn open_with(
    url: &str,
    vars: impl IntoIterator<Item = (String, String)>,
) -> Result<Arc<dyn ObjectStore>, ObjectsError> {
    if let Some(dir) = url.strip_prefix("file://") {
        crate::private_files::create_dir(std::path::Path::new(dir))
            .map_err(|e| ObjectsError::Config(format!("{dir}: {e}")))?;
        let local = object_store::local::LocalFileSystem::new_with_prefix(dir)?
            .with_automatic_cleanup(true);
        return Ok(Arc::new(local));
    }
    if let Some(rest) = url.strip_prefix("s3://") {
        let bucket = rest.trim_end_matches('/');
        if bucket.is_empty() || bucket.contains('/') {
            return Err(ObjectsError::Config(
                "s3:// must be followed by a bucket name only".to_owned(),
            ));
        }
        // What `AmazonS3Builder::from_env()` does, over `vars`.
        let mut builder = object_store::aws::AmazonS3Builder::new();
        for (key, value) in vars {
            if key.starts_with("AWS_")
                && let Ok(config_key) = key.to_ascii_lowercase().parse()
            {
                builder = builder.with_config(config_key, value);
            }
        }
        let s3 = builder.with_bucket_name(bucket).build()?;
        return Ok(Arc::new(s3));
    }
    Err(ObjectsError::Config(
        "must be file://<directory> or s3://<bucket>".to_owned(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use object_store::ObjectStoreExt;

    use std::os::unix::process::CommandExt;
    use std::path::{Path, PathBuf};
    use std::process::{Child, Command, Stdio};
    use std::time::{Duration, Instant};

    #[tokio::test]
    async fn a_file_store_is_created_and_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("objects");
        let store = open(&format!("file://{}", root.display())).unwrap();
        let key = object_store::path::Path::from("t1/a/b");
        store.put(&key, b"bytes".to_vec().into()).await.unwrap();
        let back = store.get(&key).await.unwrap().bytes().await.unwrap();
        assert_eq!(&back[..], b"bytes");
        assert!(root.join("t1/a/b").exists());
    }

    fn in_ci() -> bool {
        std::env::var_os("CI").is_some_and(|v| !v.is_empty() && v != "0" && v != "false")
    }

    /// How to start moto: `MOTO_SERVER_BIN`, else `moto_server` on `PATH`, else the one
    /// scripts/test.sh installed in ~/.cache/docket/moto-<version>.
    fn moto_server_bin() -> Option<PathBuf> {
        if let Some(bin) = std::env::var_os("MOTO_SERVER_BIN").filter(|b| !b.is_empty()) {
            return Some(PathBuf::from(bin));
        }
        let on_path = std::env::var_os("PATH").and_then(|path| {
            std::env::split_paths(&path)
                .map(|dir| dir.join("moto_server"))
                .find(|bin| bin.is_file())
        });
        if on_path.is_some() {
            return on_path;
        }
        let cache = std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cache/docket"));
        let mut installed: Vec<PathBuf> = cache
            .and_then(|dir| std::fs::read_dir(dir).ok())
            .into_iter()
            .flatten()
            .filter_map(|entry| entry.ok())
            .filter(|entry| entry.file_name().to_string_lossy().starts_with("moto-"))
            .map(|entry| entry.path().join("bin/moto_server"))
            .filter(|bin| bin.is_file())
            .collect();
        installed.sort();
        installed.pop()
    }

    /// A throwaway moto S3 server on a free loopback port (state in memory); killed on drop, and
    /// by the kernel if the tests die.
    struct MotoServer {
        endpoint: String,
        child: Child,
        log: tempfile::NamedTempFile,
    }

    impl Drop for MotoServer {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    impl MotoServer {
        async fn start(bin: &Path) -> Self {
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .map(|a| a.port())
                .expect("no free port");
            let log = tempfile::NamedTempFile::new().expect("log file");
            let mut command = Command::new(bin);
            command
                .args(["-H", "127.0.0.1", "-p", &port.to_string()])
                .stdin(Stdio::null())
                .stdout(log.reopen().expect("log file"))
                .stderr(log.reopen().expect("log file"));
            // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
            unsafe {
                command.pre_exec(|| {
                    libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                    Ok(())
                });
            }
            let child = command
                .spawn()
                .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
            let mut server = Self {
                endpoint: format!("http://127.0.0.1:{port}"),
                child,
                log,
            };
            let client = reqwest::Client::new();
            let deadline = Instant::now() + Duration::from_secs(60);
            loop {
                if let Ok(Some(status)) = server.child.try_wait() {
                    let log = std::fs::read_to_string(server.log.path()).unwrap_or_default();
                    panic!("moto_server exited with {status} before answering:\n{log}");
                }
                if client.get(&server.endpoint).send().await.is_ok() {
                    return server;
                }
                assert!(
                    Instant::now() < deadline,
                    "moto_server did not answer in 60 s"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }

    #[tokio::test]
    async fn an_s3_bucket_on_an_s3_compatible_server_round_trips() {
        let Some(bin) = moto_server_bin() else {
            let missing = "moto_server (not in MOTO_SERVER_BIN, on PATH or in \
                           ~/.cache/docket/moto-*; scripts/test.sh installs it)";
            assert!(!in_ci(), "{missing}");
            eprintln!("skipping: no {missing}");
            return;
        };
        crate::tls::install_crypto_provider();
        let server = MotoServer::start(&bin).await;
        let bucket = "docket-objects";
        let created = reqwest::Client::new()
            .put(format!("{}/{bucket}", server.endpoint))
            .send()
            .await
            .unwrap();
        assert!(created.status().is_success(), "create bucket: {created:?}");

        // The settings an operator would export, handed over as a map: the process environment is
        // shared by every test in this binary, so it is left alone.
        let vars = [
            ("AWS_ENDPOINT", server.endpoint.as_str()),
            ("AWS_ALLOW_HTTP", "true"),
            ("AWS_ACCESS_KEY_ID", "test"),
            ("AWS_SECRET_ACCESS_KEY", "test"),
            ("AWS_REGION", "us-east-1"),
            ("NOT_AWS_IGNORED", "x"),
        ]
        .map(|(k, v)| (k.to_owned(), v.to_owned()));
        let store = open_with(&format!("s3://{bucket}/"), vars).unwrap();

        let key = object_store::path::Path::from("t1/uploads/a b.bin");
        let body: Vec<u8> = (0..=255u8).cycle().take(70_000).collect();
        store.put(&key, body.clone().into()).await.unwrap();
        let back = store.get(&key).await.unwrap().bytes().await.unwrap();
        assert_eq!(&back[..], &body[..]);
        assert_eq!(store.head(&key).await.unwrap().size, body.len() as u64);
        store.delete(&key).await.unwrap();
        assert!(matches!(
            store.get(&key).await,
            Err(object_store::Error::NotFound { .. })
        ));
    }

    #[test]
    fn unknown_schemes_and_bucket_paths_are_refused() {
        assert!(matches!(open("gs://x"), Err(ObjectsError::Config(_))));
        assert!(matches!(
            open("s3://bucket/prefix"),
            Err(ObjectsError::Config(_))
        ));
    }
}
