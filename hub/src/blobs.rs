//! Content-addressed blob storage: a blob's name is the sha256 of its bytes.
//!
//! The embedded default, [`LocalBlobs`], keeps `ROOT/sha256/ab/abcdef…` and writes every blob
//! to `ROOT/tmp/` first, fsyncs it, renames it into place and fsyncs the folder: a crash never
//! leaves a partial blob under its digest. Temporary files left by a crash are removed at open.
use crate::HubError;
use async_trait::async_trait;
use bytes::Bytes;
use futures_util::stream::BoxStream;
use futures_util::StreamExt;
use sha2::{Digest, Sha256};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::SystemTime;
use tokio::io::AsyncWriteExt;

pub use crate::s3::{S3Blobs, S3Config};

/// A stream of bytes (an upload's body, a download's content).
pub type ByteStream = BoxStream<'static, Result<Bytes, std::io::Error>>;

/// What a store knows of a blob it took.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlobInfo {
    /// sha256, lowercase hex.
    pub digest: String,
    pub size: u64,
}

#[async_trait]
pub trait BlobStore: Send + Sync + 'static {
    /// Stores a stream; refuses it (`TooLarge`, nothing stored) past `limit` bytes. The blob is
    /// visible only once complete and durable.
    async fn put(&self, body: ByteStream, limit: u64) -> Result<BlobInfo, HubError>;
    /// The size of a stored blob, None when absent.
    async fn size(&self, digest: &str) -> Result<Option<u64>, HubError>;
    /// Bytes `range` of a blob (the caller checks the range against `size`).
    async fn read(&self, digest: &str, range: Range<u64>) -> Result<ByteStream, HubError>;
    /// Removes a blob; absent is not an error.
    async fn delete(&self, digest: &str) -> Result<(), HubError>;
    /// Every stored blob with its size and when it was last stored (garbage collection spares
    /// recent ones). Objects whose names are not digests are not listed (nor ever removed).
    async fn list(&self) -> Result<Vec<StoredBlob>, HubError>;
}

/// A blob as the store lists it.
#[derive(Clone, Debug)]
pub struct StoredBlob {
    pub digest: String,
    pub size: u64,
    pub stored: SystemTime,
}

/// Blobs in a local directory.
pub struct LocalBlobs {
    root: PathBuf,
}

/// Removes a temporary file unless disarmed (an upload cut off, refused, or its future dropped).
struct TempGuard(Option<PathBuf>);

impl Drop for TempGuard {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = std::fs::remove_file(p);
        }
    }
}

impl LocalBlobs {
    pub fn open(root: &Path) -> Result<LocalBlobs, HubError> {
        for d in ["sha256", "tmp"] {
            std::fs::create_dir_all(root.join(d))
                .map_err(|e| HubError::io(format!("creating {}", root.join(d).display()), e))?;
        }
        // what a crash left in tmp/ was never acknowledged
        if let Ok(rd) = std::fs::read_dir(root.join("tmp")) {
            for e in rd.flatten() {
                let _ = std::fs::remove_file(e.path());
            }
        }
        Ok(LocalBlobs { root: root.to_path_buf() })
    }

    /// Where a blob lives (the digest is checked first: it becomes a path).
    pub fn path(&self, digest: &str) -> Result<PathBuf, HubError> {
        let d = crate::names::check_digest("digest", digest)?;
        Ok(self.root.join("sha256").join(&d[..2]).join(&d))
    }
}

/// An upload written to a temporary file (fsynced), with its digest and size; the file is
/// removed on drop unless moved away.
pub(crate) struct Staged {
    guard: TempGuard,
    pub digest: String,
    pub size: u64,
}

impl Staged {
    pub fn path(&self) -> &Path {
        self.guard.0.as_deref().expect("a staged file is there until moved")
    }
}

/// Streams `body` into a new file of `dir`, hashing it; refuses it past `limit` bytes.
pub(crate) async fn stage(dir: &Path, mut body: ByteStream, limit: u64) -> Result<Staged, HubError> {
    let tmp = dir.join(format!("{}.part", crate::random_hex(16)));
    let guard = TempGuard(Some(tmp.clone()));
    let mut f =
        tokio::fs::File::create(&tmp).await.map_err(|e| HubError::io(format!("creating {}", tmp.display()), e))?;
    let mut h = Sha256::new();
    let mut n = 0u64;
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| HubError::BadRequest(format!("body: the upload was cut off ({e})")))?;
        n += chunk.len() as u64;
        if n > limit {
            return Err(HubError::TooLarge(format!("body: more than the limit of {limit} bytes")));
        }
        h.update(&chunk);
        f.write_all(&chunk).await.map_err(|e| HubError::io("writing a blob", e))?;
    }
    f.flush().await.map_err(|e| HubError::io("writing a blob", e))?;
    f.sync_all().await.map_err(|e| HubError::io("fsync of a blob", e))?;
    Ok(Staged { guard, digest: hex::encode(h.finalize()), size: n })
}

async fn fsync_dir(dir: &Path) -> Result<(), HubError> {
    let d = dir.to_path_buf();
    tokio::task::spawn_blocking(move || std::fs::File::open(&d).and_then(|f| f.sync_all()))
        .await
        .map_err(|e| HubError::Internal(e.to_string()))?
        .map_err(|e| HubError::io(format!("fsync {}", dir.display()), e))
}

/// Bytes per chunk of a blob read from a file: one blocking read straight into the buffer that
/// goes out (tokio's File reads into its own buffer, then copies; 256 KiB chunks through it cost
/// a blocking-pool round trip and two copies per 256 KiB).
const READ_CHUNK: u64 = 1 << 20;

/// The next `len` bytes of `f` as a stream of chunks, each read on the blocking pool.
pub(crate) fn file_chunks(f: std::fs::File, len: u64) -> ByteStream {
    futures_util::stream::try_unfold((f, len), |(f, left)| async move {
        if left == 0 {
            return Ok(None);
        }
        let want = left.min(READ_CHUNK);
        let (f, buf) = tokio::task::spawn_blocking(move || {
            let mut buf = Vec::with_capacity(want as usize);
            std::io::Read::read_to_end(&mut std::io::Read::take(&f, want), &mut buf)?;
            Ok::<_, std::io::Error>((f, buf))
        })
        .await
        .map_err(std::io::Error::other)??;
        if buf.is_empty() {
            return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "the blob is shorter than its size"));
        }
        let k = buf.len() as u64;
        Ok(Some((Bytes::from(buf), (f, left - k))))
    })
    .boxed()
}

#[async_trait]
impl BlobStore for LocalBlobs {
    async fn put(&self, body: ByteStream, limit: u64) -> Result<BlobInfo, HubError> {
        let mut staged = stage(&self.root.join("tmp"), body, limit).await?;
        let (digest, n) = (staged.digest.clone(), staged.size);
        let dest = self.path(&digest)?;
        let dir = dest.parent().expect("a blob path has a parent").to_path_buf();
        tokio::fs::create_dir_all(&dir).await.map_err(|e| HubError::io(format!("creating {}", dir.display()), e))?;
        match tokio::fs::metadata(&dest).await {
            // the same content is already there (content addressing): keep it, as stored now
            // (garbage collection spares blobs stored within its grace period)
            Ok(m) if m.len() == n => {
                let d = dest.clone();
                tokio::task::spawn_blocking(move || {
                    std::fs::File::options().write(true).open(&d).and_then(|f| f.set_modified(SystemTime::now()))
                })
                .await
                .map_err(|e| HubError::Internal(e.to_string()))?
                .map_err(|e| HubError::io(format!("touching {}", dest.display()), e))?;
            }
            _ => {
                let tmp = staged.path().to_path_buf();
                tokio::fs::rename(&tmp, &dest)
                    .await
                    .map_err(|e| HubError::io(format!("renaming into {}", dest.display()), e))?;
                staged.guard.0 = None;
                fsync_dir(&dir).await?;
            }
        }
        tracing::debug!(digest, size = n, "blob stored");
        Ok(BlobInfo { digest, size: n })
    }

    async fn size(&self, digest: &str) -> Result<Option<u64>, HubError> {
        match tokio::fs::metadata(self.path(digest)?).await {
            Ok(m) => Ok(Some(m.len())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(HubError::io(format!("blob {digest}"), e)),
        }
    }

    async fn read(&self, digest: &str, range: Range<u64>) -> Result<ByteStream, HubError> {
        let p = self.path(digest)?;
        let start = range.start;
        let opened = tokio::task::spawn_blocking(move || {
            let mut f = std::fs::File::open(&p)?;
            std::io::Seek::seek(&mut f, std::io::SeekFrom::Start(start))?;
            Ok::<_, std::io::Error>(f)
        })
        .await
        .map_err(|e| HubError::Internal(e.to_string()))?;
        let f = match opened {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(HubError::NotFound(format!("blob {digest}")))
            }
            Err(e) => return Err(HubError::io(format!("blob {digest}"), e)),
        };
        Ok(file_chunks(f, range.end.saturating_sub(range.start)))
    }

    async fn delete(&self, digest: &str) -> Result<(), HubError> {
        match tokio::fs::remove_file(self.path(digest)?).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(HubError::io(format!("removing blob {digest}"), e)),
        }
    }

    async fn list(&self) -> Result<Vec<StoredBlob>, HubError> {
        let root = self.root.join("sha256");
        tokio::task::spawn_blocking(move || {
            let mut out = vec![];
            let read = |p: &Path| std::fs::read_dir(p).map_err(|e| HubError::io(format!("listing {}", p.display()), e));
            for fan in read(&root)?.flatten() {
                for e in read(&fan.path())?.flatten() {
                    let name = e.file_name().to_string_lossy().into_owned();
                    let Ok(m) = e.metadata() else { continue };
                    if m.is_file() && crate::names::check_digest("digest", &name).is_ok() {
                        let stored = m.modified().unwrap_or(SystemTime::UNIX_EPOCH);
                        out.push(StoredBlob { digest: name, size: m.len(), stored });
                    }
                }
            }
            Ok(out)
        })
        .await
        .map_err(|e| HubError::Internal(e.to_string()))?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream(parts: Vec<Result<Bytes, std::io::Error>>) -> ByteStream {
        futures_util::stream::iter(parts).boxed()
    }

    #[tokio::test]
    async fn put_read_limit_and_cut() {
        let dir = tempfile::tempdir().unwrap();
        let s = LocalBlobs::open(dir.path()).unwrap();
        let info = s
            .put(stream(vec![Ok(Bytes::from_static(b"hello ")), Ok(Bytes::from_static(b"world"))]), 100)
            .await
            .unwrap();
        assert_eq!(info.digest, crate::sha256_hex(b"hello world"));
        assert_eq!(s.size(&info.digest).await.unwrap(), Some(11));
        let mut r = s.read(&info.digest, 6..11).await.unwrap();
        let mut got = vec![];
        while let Some(c) = r.next().await {
            got.extend_from_slice(&c.unwrap());
        }
        assert_eq!(got, b"world");
        // over the limit: refused, nothing left behind
        let e = s.put(stream(vec![Ok(Bytes::from(vec![0u8; 101]))]), 100).await.unwrap_err();
        assert!(matches!(e, HubError::TooLarge(_)), "{e}");
        // cut off mid-way: nothing left behind either
        let e = s
            .put(stream(vec![Ok(Bytes::from_static(b"abc")), Err(std::io::Error::other("reset"))]), 100)
            .await
            .unwrap_err();
        assert!(matches!(e, HubError::BadRequest(_)), "{e}");
        assert_eq!(std::fs::read_dir(dir.path().join("tmp")).unwrap().count(), 0);
        assert_eq!(s.size(&crate::sha256_hex(b"abc")).await.unwrap(), None);
        assert!(s.path("../../etc/passwd").is_err());
        s.delete(&info.digest).await.unwrap();
        assert_eq!(s.size(&info.digest).await.unwrap(), None);
    }
}
