//! Blobs in an S3-compatible object store (the `object_store` crate): `PREFIX/sha256/ab/abcd…`.
//! An upload is staged in a local file (hashed, bounded, fsynced), then put under its digest:
//! in one request up to 8 MiB, else as a multipart upload; S3 shows an object whole or not at
//! all, so a crash never leaves a partial blob under a digest.
use crate::blobs::{stage, BlobInfo, BlobStore, ByteStream, StoredBlob};
use crate::HubError;
use async_trait::async_trait;
use futures_util::StreamExt;
use object_store::path::Path as ObjectPath;
use object_store::{GetOptions, GetRange, ObjectStore, ObjectStoreExt, PutPayload, WriteMultipart};
use serde::Deserialize;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::io::AsyncReadExt;

const PART: usize = 8 << 20;
/// A stored object older than this is stored again by a put of the same content (a sixtieth of
/// garbage collection's default grace period).
const REFRESH_AFTER: std::time::Duration = std::time::Duration::from_secs(60);

/// Where the blobs are: `url = "s3://BUCKET/PREFIX"`, and how to reach the store.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct S3Config {
    pub url: String,
    /// `http://127.0.0.1:9000` for a local store; AWS when absent.
    pub endpoint: Option<String>,
    pub region: Option<String>,
    /// Else `AWS_ACCESS_KEY_ID`.
    pub access_key_id: Option<String>,
    /// Else `AWS_SECRET_ACCESS_KEY`.
    pub secret_access_key: Option<String>,
}

pub struct S3Blobs {
    store: Arc<dyn ObjectStore>,
    prefix: String,
    staging: PathBuf,
}

fn s3_error(what: &str, e: object_store::Error) -> HubError {
    HubError::Internal(format!("object store, {what}: {e}"))
}

impl S3Blobs {
    /// A store for `cfg`; uploads are staged in `staging` (created; emptied of what a crash left).
    pub fn new(cfg: &S3Config, staging: &Path) -> Result<S3Blobs, HubError> {
        let rest = cfg
            .url
            .strip_prefix("s3://")
            .ok_or_else(|| HubError::Config(format!("blobs.url: '{}' is not s3://BUCKET[/PREFIX]", cfg.url)))?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(HubError::Config("blobs.url: no bucket".into()));
        }
        let mut b = object_store::aws::AmazonS3Builder::new()
            .with_bucket_name(bucket)
            .with_region(cfg.region.clone().unwrap_or_else(|| "us-east-1".into()));
        if let Some(ep) = &cfg.endpoint {
            b = b.with_endpoint(ep).with_allow_http(ep.starts_with("http://")).with_virtual_hosted_style_request(false);
        }
        let key = cfg.access_key_id.clone().or_else(|| std::env::var("AWS_ACCESS_KEY_ID").ok());
        let secret = cfg.secret_access_key.clone().or_else(|| std::env::var("AWS_SECRET_ACCESS_KEY").ok());
        if let (Some(k), Some(s)) = (key, secret) {
            b = b.with_access_key_id(k).with_secret_access_key(s);
        }
        let store = b.build().map_err(|e| HubError::Config(format!("blobs: {e}")))?;
        std::fs::create_dir_all(staging).map_err(|e| HubError::io(format!("creating {}", staging.display()), e))?;
        if let Ok(rd) = std::fs::read_dir(staging) {
            for e in rd.flatten() {
                let _ = std::fs::remove_file(e.path());
            }
        }
        Ok(S3Blobs {
            store: Arc::new(store),
            prefix: prefix.trim_matches('/').to_string(),
            staging: staging.to_path_buf(),
        })
    }

    /// Where the blobs' objects are: `PREFIX/sha256`.
    fn root(&self) -> String {
        if self.prefix.is_empty() {
            "sha256".into()
        } else {
            format!("{}/sha256", self.prefix)
        }
    }

    /// The object of a digest (checked first: it becomes a key).
    pub fn key(&self, digest: &str) -> Result<ObjectPath, HubError> {
        let d = crate::names::check_digest("digest", digest)?;
        Ok(ObjectPath::from(format!("{}/{}/{d}", self.root(), &d[..2])))
    }
}

#[async_trait]
impl BlobStore for S3Blobs {
    async fn put(&self, body: ByteStream, limit: u64) -> Result<BlobInfo, HubError> {
        let staged = stage(&self.staging, body, limit).await?;
        let (digest, n) = (staged.digest.clone(), staged.size);
        let key = self.key(&digest)?;
        // the same content is already there (content addressing): keep it, unless it was stored
        // so long ago that garbage collection could take it before its new reference lands
        // (objects cannot be touched: it is stored again)
        match self.store.head(&key).await {
            Ok(m)
                if m.size == n
                    && std::time::SystemTime::from(m.last_modified).elapsed().unwrap_or_default() < REFRESH_AFTER =>
            {
                return Ok(BlobInfo { digest, size: n });
            }
            Ok(_) | Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => return Err(s3_error("head", e)),
        }
        let mut f = tokio::fs::File::open(staged.path()).await.map_err(|e| HubError::io("reading a staged blob", e))?;
        if n as usize <= PART {
            let mut buf = Vec::with_capacity(n as usize);
            f.read_to_end(&mut buf).await.map_err(|e| HubError::io("reading a staged blob", e))?;
            self.store.put(&key, PutPayload::from(buf)).await.map_err(|e| s3_error("put", e))?;
        } else {
            let up = self.store.put_multipart(&key).await.map_err(|e| s3_error("multipart upload", e))?;
            let mut w = WriteMultipart::new_with_chunk_size(up, PART);
            let mut buf = vec![0u8; PART];
            loop {
                let k = f.read(&mut buf).await.map_err(|e| HubError::io("reading a staged blob", e))?;
                if k == 0 {
                    break;
                }
                // at most a few parts in memory
                w.wait_for_capacity(4).await.map_err(|e| s3_error("multipart upload", e))?;
                w.write(&buf[..k]);
            }
            w.finish().await.map_err(|e| s3_error("multipart upload", e))?;
        }
        drop(staged);
        tracing::debug!(digest, size = n, "blob stored in the object store");
        Ok(BlobInfo { digest, size: n })
    }

    async fn size(&self, digest: &str) -> Result<Option<u64>, HubError> {
        match self.store.head(&self.key(digest)?).await {
            Ok(m) => Ok(Some(m.size)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(s3_error("head", e)),
        }
    }

    async fn read(&self, digest: &str, range: Range<u64>) -> Result<ByteStream, HubError> {
        if range.start >= range.end {
            return Ok(futures_util::stream::empty().boxed());
        }
        let opts = GetOptions { range: Some(GetRange::Bounded(range)), ..Default::default() };
        match self.store.get_opts(&self.key(digest)?, opts).await {
            Ok(r) => Ok(r.into_stream().map(|c| c.map_err(std::io::Error::other)).boxed()),
            Err(object_store::Error::NotFound { .. }) => Err(HubError::NotFound(format!("blob {digest}"))),
            Err(e) => Err(s3_error("get", e)),
        }
    }

    async fn delete(&self, digest: &str) -> Result<(), HubError> {
        match self.store.delete(&self.key(digest)?).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(s3_error("delete", e)),
        }
    }

    async fn list(&self) -> Result<Vec<StoredBlob>, HubError> {
        let mut objects = self.store.list(Some(&ObjectPath::from(self.root())));
        let mut out = vec![];
        while let Some(m) = objects.next().await {
            let m = m.map_err(|e| s3_error("list", e))?;
            let Some(name) = m.location.filename() else { continue };
            if crate::names::check_digest("digest", name).is_ok() {
                let stored = std::time::SystemTime::from(m.last_modified);
                out.push(StoredBlob { digest: name.to_string(), size: m.size, stored });
            }
        }
        Ok(out)
    }
}
