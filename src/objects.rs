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
    if let Some(dir) = url.strip_prefix("file://") {
        std::fs::create_dir_all(dir).map_err(|e| ObjectsError::Config(format!("{dir}: {e}")))?;
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
        let s3 = object_store::aws::AmazonS3Builder::from_env()
            .with_bucket_name(bucket)
            .build()?;
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

    #[test]
    fn unknown_schemes_and_bucket_paths_are_refused() {
        assert!(matches!(open("gs://x"), Err(ObjectsError::Config(_))));
        assert!(matches!(
            open("s3://bucket/prefix"),
            Err(ObjectsError::Config(_))
        ));
    }
}
