//! The per-user cache, laid out like the Hugging Face cache:
//!
//! ```text
//! ROOT/blobs/sha256/<digest>       verified artifacts, by digest (shared by every server and repository)
//! ROOT/partial/<digest>.part       downloads in progress (resumed with a Range request)
//! ROOT/manifests/<server>/<owner>/<name>/<spec>.json   the signed manifest a pull used (offline mode)
//! ROOT/keys/<server>.key           the server's public key, pinned at first use
//! ```
//!
//! ROOT is `$XFORGE_HUB_CACHE`, else `$XDG_CACHE_HOME/xforge/hub`, else `~/.cache/xforge/hub`.
//! `<server>` is a digest of the server's URL. A blob is verified (size and sha256 against a
//! signed manifest) every time it is used, not only when it is downloaded.
use crate::manifest::{Manifest, SignedManifest};
use crate::HubError;
use serde::{Deserialize, Serialize};
use std::io::Read;
use std::path::{Path, PathBuf};

#[derive(Clone, Debug)]
pub struct Cache {
    root: PathBuf,
}

/// What a pull keeps for offline use: the signed manifest and the revision it came from.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CachedManifest {
    pub revision: i64,
    pub model_digest: String,
    pub signed: SignedManifest,
}

/// The default cache folder.
pub fn default_root() -> PathBuf {
    if let Some(p) = std::env::var_os("XFORGE_HUB_CACHE").filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(|| std::env::temp_dir().join("xforge-cache"));
    base.join("xforge").join("hub")
}

/// A short, path-safe name for a server URL.
pub fn server_id(url: &str) -> String {
    crate::sha256_hex(url.trim_end_matches('/').as_bytes())[..16].to_string()
}

fn mkdirs(p: &Path) -> Result<(), HubError> {
    std::fs::create_dir_all(p).map_err(|e| HubError::io(format!("creating {}", p.display()), e))
}

/// The sha256 and length of a file, read in chunks.
pub fn hash_file(p: &Path) -> Result<(String, u64), HubError> {
    use sha2::Digest;
    let (h, n) = hasher_of_file(p)?;
    Ok((hex::encode(h.finalize()), n))
}

/// A sha256 state fed with the file's bytes (a resumed download goes on from it), and its length.
pub fn hasher_of_file(p: &Path) -> Result<(sha2::Sha256, u64), HubError> {
    use sha2::Digest;
    let mut f = std::fs::File::open(p).map_err(|e| HubError::io(format!("reading {}", p.display()), e))?;
    let mut h = sha2::Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut n = 0u64;
    loop {
        let k = f.read(&mut buf).map_err(|e| HubError::io(format!("reading {}", p.display()), e))?;
        if k == 0 {
            break;
        }
        h.update(&buf[..k]);
        n += k as u64;
    }
    Ok((h, n))
}

impl Cache {
    pub fn open(root: &Path) -> Result<Cache, HubError> {
        for d in ["blobs/sha256", "partial", "manifests", "keys"] {
            mkdirs(&root.join(d))?;
        }
        Ok(Cache { root: root.to_path_buf() })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn blob_path(&self, digest: &str) -> Result<PathBuf, HubError> {
        let d = crate::names::check_digest("digest", digest)?;
        Ok(self.root.join("blobs/sha256").join(d))
    }

    pub fn partial_path(&self, digest: &str) -> Result<PathBuf, HubError> {
        let d = crate::names::check_digest("digest", digest)?;
        Ok(self.root.join("partial").join(format!("{d}.part")))
    }

    /// The cached blob of a manifest, verified; None when absent. A cached blob that does not
    /// verify is removed (and reported as absent, so that it is downloaded again).
    pub fn verified_blob(&self, m: &Manifest) -> Result<Option<PathBuf>, HubError> {
        let p = self.blob_path(&m.artifact.sha256)?;
        if !p.exists() {
            return Ok(None);
        }
        let (d, n) = hash_file(&p)?;
        if d != m.artifact.sha256 || n != m.artifact.size {
            tracing::warn!("cached blob {} does not verify (sha256 {d}, {n} bytes): removed", p.display());
            let _ = std::fs::remove_file(&p);
            return Ok(None);
        }
        Ok(Some(p))
    }

    /// Moves a complete, verified download into the blobs.
    pub fn commit_partial(&self, digest: &str) -> Result<PathBuf, HubError> {
        let from = self.partial_path(digest)?;
        let to = self.blob_path(digest)?;
        std::fs::rename(&from, &to)
            .map_err(|e| HubError::io(format!("renaming {} to {}", from.display(), to.display()), e))?;
        Ok(to)
    }

    fn manifest_path(&self, server: &str, repo: &crate::names::RepoName, spec: &crate::BuildSpec) -> PathBuf {
        self.root
            .join("manifests")
            .join(server_id(server))
            .join(&repo.owner)
            .join(&repo.name)
            .join(format!("{}.json", spec.file_stem()))
    }

    pub fn save_manifest(
        &self,
        server: &str,
        repo: &crate::names::RepoName,
        spec: &crate::BuildSpec,
        m: &CachedManifest,
    ) -> Result<(), HubError> {
        let p = self.manifest_path(server, repo, spec);
        mkdirs(p.parent().expect("a manifest path has a parent"))?;
        let tmp = p.with_extension(format!("tmp{}", crate::random_hex(4)));
        let text = serde_json::to_vec_pretty(m).map_err(|e| HubError::Internal(e.to_string()))?;
        std::fs::write(&tmp, text).map_err(|e| HubError::io(format!("writing {}", tmp.display()), e))?;
        std::fs::rename(&tmp, &p).map_err(|e| HubError::io(format!("writing {}", p.display()), e))
    }

    pub fn load_manifest(
        &self,
        server: &str,
        repo: &crate::names::RepoName,
        spec: &crate::BuildSpec,
    ) -> Result<Option<CachedManifest>, HubError> {
        let p = self.manifest_path(server, repo, spec);
        let text = match std::fs::read(&p) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(HubError::io(format!("reading {}", p.display()), e)),
        };
        if text.len() > 256 * 1024 {
            return Err(HubError::Verification(format!("{}: larger than 256 KiB", p.display())));
        }
        serde_json::from_slice(&text).map(Some).map_err(|e| HubError::Verification(format!("{}: {e}", p.display())))
    }

    /// The key pinned for a server.
    pub fn pinned_key(&self, server: &str) -> Result<Option<String>, HubError> {
        let p = self.root.join("keys").join(format!("{}.key", server_id(server)));
        match std::fs::read_to_string(&p) {
            Ok(t) => Ok(Some(t.trim().to_string())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(HubError::io(format!("reading {}", p.display()), e)),
        }
    }

    pub fn pin_key(&self, server: &str, key: &str) -> Result<(), HubError> {
        let p = self.root.join("keys").join(format!("{}.key", server_id(server)));
        std::fs::write(&p, format!("{key}\n")).map_err(|e| HubError::io(format!("writing {}", p.display()), e))
    }
}
