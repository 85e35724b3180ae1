//! Artifact manifests, signed by the server with ed25519.
//!
//! The signature covers the manifest's exact bytes: the server sends the manifest as a JSON
//! string beside its signature, and the client verifies the signature before it parses it, then
//! checks that the fields are the ones it asked for and that the blob's sha256 and size match.
use crate::HubError;
use ed25519_dalek::{Signature, Signer as _, SigningKey, Verifier, VerifyingKey};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;

pub const SCHEMA: &str = "xforge-hub/manifest/v1";

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BlobRef {
    /// sha256 of the artifact's bytes, lowercase hex.
    pub sha256: String,
    pub size: u64,
}

/// What a signed manifest states about an artifact.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub schema: String,
    pub artifact: BlobRef,
    /// sha256 of the ONNX model it was compiled from.
    pub model_digest: String,
    pub target: String,
    pub precision: String,
    pub batch: Vec<u64>,
    pub compiler_version: String,
    pub options: BTreeMap<String, String>,
    /// When the server signed it (ms since the epoch).
    pub created: i64,
}

/// A manifest as the server sends it: the exact signed bytes (as a string), the signature and
/// the signing key (both hex).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedManifest {
    pub manifest: String,
    pub signature: String,
    pub key: String,
}

/// The fields a client asked for; a manifest must state exactly these.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Expected<'a> {
    pub model_digest: Option<&'a str>,
    pub target: &'a str,
    pub precision: &'a str,
    pub batch: &'a [u64],
}

pub fn parse_key(hex_key: &str) -> Result<VerifyingKey, HubError> {
    let b: [u8; 32] = hex::decode(hex_key.trim())
        .ok()
        .and_then(|v| v.try_into().ok())
        .ok_or_else(|| HubError::Config("server key: not 64 hex digits".into()))?;
    VerifyingKey::from_bytes(&b).map_err(|e| HubError::Config(format!("server key: {e}")))
}

impl SignedManifest {
    /// Verifies the signature with `trusted` (never with the key the manifest carries) and
    /// parses the manifest.
    pub fn verify(&self, trusted: &VerifyingKey) -> Result<Manifest, HubError> {
        if self.manifest.len() > 64 * 1024 {
            return Err(HubError::Verification("manifest: larger than 64 KiB".into()));
        }
        let sig: [u8; 64] = hex::decode(&self.signature)
            .ok()
            .and_then(|v| v.try_into().ok())
            .ok_or_else(|| HubError::Verification("signature: not 128 hex digits".into()))?;
        trusted.verify(self.manifest.as_bytes(), &Signature::from_bytes(&sig)).map_err(|_| {
            HubError::Verification("the manifest's signature does not verify with the server's key".into())
        })?;
        let m: Manifest =
            serde_json::from_str(&self.manifest).map_err(|e| HubError::Verification(format!("manifest: {e}")))?;
        if m.schema != SCHEMA {
            return Err(HubError::Verification(format!("manifest: schema {} (this client reads {SCHEMA})", m.schema)));
        }
        crate::names::check_digest("manifest.artifact.sha256", &m.artifact.sha256)
            .map_err(|e| HubError::Verification(e.to_string()))?;
        Ok(m)
    }
}

impl Manifest {
    /// Checks that the manifest is for what was asked.
    pub fn check(&self, want: &Expected) -> Result<(), HubError> {
        let bad = |f: &str, got: &str, want: &str| {
            Err(HubError::Verification(format!("manifest: {f} is {got}, asked for {want}")))
        };
        if let Some(d) = want.model_digest {
            if self.model_digest != d {
                return bad("model_digest", &self.model_digest, d);
            }
        }
        if self.target != want.target {
            return bad("target", &self.target, want.target);
        }
        if self.precision != want.precision {
            return bad("precision", &self.precision, want.precision);
        }
        if self.batch != want.batch {
            return bad("batch", &crate::names::batch_text(&self.batch), &crate::names::batch_text(want.batch));
        }
        Ok(())
    }

    /// Checks a blob's bytes against the manifest.
    pub fn check_blob(&self, bytes: &[u8]) -> Result<(), HubError> {
        if bytes.len() as u64 != self.artifact.size {
            return Err(HubError::Verification(format!(
                "artifact: {} bytes, the manifest says {}",
                bytes.len(),
                self.artifact.size
            )));
        }
        let d = crate::sha256_hex(bytes);
        if d != self.artifact.sha256 {
            return Err(HubError::Verification(format!(
                "artifact: sha256 {d}, the manifest says {}",
                self.artifact.sha256
            )));
        }
        Ok(())
    }
}

/// The server's signing key.
pub struct Signer {
    key: SigningKey,
}

impl Signer {
    /// Loads the key (32 bytes of seed, hex) from `path`, or creates it there (mode 0600).
    pub fn load_or_create(path: &Path) -> Result<Signer, HubError> {
        match std::fs::read_to_string(path) {
            Ok(text) => {
                let seed: [u8; 32] =
                    hex::decode(text.trim()).ok().and_then(|v| v.try_into().ok()).ok_or_else(|| {
                        HubError::Config(format!("{}: not a signing key (64 hex digits)", path.display()))
                    })?;
                Ok(Signer { key: SigningKey::from_bytes(&seed) })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut seed = [0u8; 32];
                getrandom::fill(&mut seed).map_err(|e| HubError::Internal(format!("random source: {e}")))?;
                write_private(path, hex::encode(seed).as_bytes())?;
                tracing::info!("created the signing key {}", path.display());
                Ok(Signer { key: SigningKey::from_bytes(&seed) })
            }
            Err(e) => Err(HubError::io(format!("reading {}", path.display()), e)),
        }
    }

    pub fn from_seed(seed: [u8; 32]) -> Signer {
        Signer { key: SigningKey::from_bytes(&seed) }
    }

    pub fn public_hex(&self) -> String {
        hex::encode(self.key.verifying_key().to_bytes())
    }

    pub fn sign(&self, m: &Manifest) -> SignedManifest {
        let text = serde_json::to_string(m).expect("a manifest serializes");
        let sig = self.key.sign(text.as_bytes());
        SignedManifest { manifest: text, signature: hex::encode(sig.to_bytes()), key: self.public_hex() }
    }
}

/// Writes a secret file atomically, readable by its owner only.
pub(crate) fn write_private(path: &Path, bytes: &[u8]) -> Result<(), HubError> {
    use std::io::Write;
    let tmp = path.with_extension("tmp");
    let mut o = std::fs::OpenOptions::new();
    o.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut o, 0o600);
    let mut f = o.open(&tmp).map_err(|e| HubError::io(format!("creating {}", tmp.display()), e))?;
    f.write_all(bytes).and_then(|_| f.sync_all()).map_err(|e| HubError::io(format!("writing {}", tmp.display()), e))?;
    std::fs::rename(&tmp, path).map_err(|e| HubError::io(format!("renaming to {}", path.display()), e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest() -> Manifest {
        Manifest {
            schema: SCHEMA.into(),
            artifact: BlobRef { sha256: crate::sha256_hex(b"xfa"), size: 3 },
            model_digest: crate::sha256_hex(b"onnx"),
            target: "sm_90".into(),
            precision: "fp32".into(),
            batch: vec![],
            compiler_version: crate::compiler_version(),
            options: BTreeMap::new(),
            created: 1,
        }
    }

    #[test]
    fn sign_verify_tamper() {
        let s = Signer::from_seed([7; 32]);
        let key = parse_key(&s.public_hex()).unwrap();
        let sm = s.sign(&manifest());
        let m = sm.verify(&key).unwrap();
        m.check(&Expected { model_digest: None, target: "sm_90", precision: "fp32", batch: &[] }).unwrap();
        m.check_blob(b"xfa").unwrap();
        assert!(matches!(m.check_blob(b"xfb"), Err(HubError::Verification(_))));
        assert!(m.check(&Expected { model_digest: None, target: "sm_80", precision: "fp32", batch: &[] }).is_err());
        // a changed byte of the manifest, or another key
        let mut bad = sm.clone();
        bad.manifest = bad.manifest.replace("sm_90", "sm_80");
        assert!(matches!(bad.verify(&key), Err(HubError::Verification(_))));
        let other = Signer::from_seed([8; 32]);
        let forged = other.sign(&manifest());
        assert!(forged.verify(&key).is_err());
        // the key a manifest carries is never trusted
        assert!(SignedManifest { key: s.public_hex(), ..forged }.verify(&key).is_err());
    }
}
