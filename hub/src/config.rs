//! The server's configuration: a toml file (`xforge hub serve --config hub.toml`), flags over it.
use crate::HubError;
use serde::Deserialize;
use std::path::{Path, PathBuf};

/// ```toml
/// dir = "/var/lib/xforge-hub"     # blobs/, hub.db, hub.key, admin.token
/// listen = "127.0.0.1:8765"
/// max_model_bytes = 1073741824    # a pushed ONNX file
/// max_artifact_bytes = 4294967296 # an uploaded artifact
/// max_json_bytes = 65536          # a JSON request body
/// lease_seconds = 60              # a build job's lease (a worker heartbeats at a third of it)
/// max_attempts = 3                # leases lost before a job fails
/// public_url = "https://hub.example.com"  # for the usage snippets on the web pages
/// database = "postgres://hub@127.0.0.1:5432/hub"   # default: SQLite in DIR/hub.db
///
/// [s3]                            # default: blobs in DIR/blobs
/// url = "s3://BUCKET/PREFIX"
/// endpoint = "http://127.0.0.1:9000"
/// region = "us-east-1"
/// access_key_id = "…"             # else AWS_ACCESS_KEY_ID
/// secret_access_key = "…"         # else AWS_SECRET_ACCESS_KEY
/// ```
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    pub dir: PathBuf,
    pub listen: String,
    pub max_model_bytes: u64,
    pub max_artifact_bytes: u64,
    pub max_json_bytes: usize,
    pub lease_seconds: u64,
    pub max_attempts: u32,
    pub public_url: Option<String>,
    /// A `postgres://` (or `sqlite://`) URL; SQLite in `dir` when absent.
    pub database: Option<String>,
    /// An S3-compatible object store for the blobs; `dir/blobs` when absent.
    pub s3: Option<crate::s3::S3Config>,
}

impl Default for ServerConfig {
    fn default() -> ServerConfig {
        ServerConfig {
            dir: PathBuf::from("xforge-hub"),
            listen: "127.0.0.1:8765".into(),
            max_model_bytes: 1 << 30,
            max_artifact_bytes: 4 << 30,
            max_json_bytes: 64 * 1024,
            lease_seconds: 60,
            max_attempts: 3,
            public_url: None,
            database: None,
            s3: None,
        }
    }
}

impl ServerConfig {
    pub fn load(path: &Path) -> Result<ServerConfig, HubError> {
        let meta = std::fs::metadata(path).map_err(|e| HubError::io(format!("reading {}", path.display()), e))?;
        if meta.len() > 1 << 20 {
            return Err(HubError::Config(format!("{}: larger than 1 MiB", path.display())));
        }
        let text = std::fs::read_to_string(path).map_err(|e| HubError::io(format!("reading {}", path.display()), e))?;
        let c: ServerConfig =
            toml::from_str(&text).map_err(|e| HubError::Config(format!("{}: {e}", path.display())))?;
        c.check()?;
        Ok(c)
    }

    pub fn check(&self) -> Result<(), HubError> {
        if self.lease_seconds == 0 || self.lease_seconds > 24 * 3600 {
            return Err(HubError::Config("lease_seconds: must be in 1..=86400".into()));
        }
        if self.max_attempts == 0 || self.max_attempts > 100 {
            return Err(HubError::Config("max_attempts: must be in 1..=100".into()));
        }
        if self.max_json_bytes < 1024 || self.max_json_bytes > 16 << 20 {
            return Err(HubError::Config("max_json_bytes: must be in 1 KiB..=16 MiB".into()));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kubernetes_secret_holds_a_config_the_server_takes() {
        // deploy/k8s/hub-secrets.yaml: the block under `hub.toml: |`, indented four spaces
        let yaml = include_str!("../../deploy/k8s/hub-secrets.yaml");
        let mut lines = yaml.lines().skip_while(|l| l.trim() != "hub.toml: |").skip(1);
        let block: Vec<&str> = lines
            .by_ref()
            .take_while(|l| l.is_empty() || l.starts_with("    "))
            .map(|l| l.get(4..).unwrap_or(""))
            .collect();
        assert!(block.len() > 5, "{block:?}");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hub.toml");
        std::fs::write(&path, block.join("\n")).unwrap();
        let c = ServerConfig::load(&path).unwrap();
        assert_eq!(c.listen, "0.0.0.0:8765");
        assert!(c.database.as_deref().is_some_and(|d| d.starts_with("postgres://")) && c.s3.is_some());
    }

    #[test]
    fn parse() {
        let c: ServerConfig = toml::from_str("dir = \"/tmp/h\"\nlease_seconds = 5").unwrap();
        assert_eq!(c.lease_seconds, 5);
        assert_eq!(c.max_attempts, 3);
        assert!(toml::from_str::<ServerConfig>("dri = 1").unwrap_err().to_string().contains("dri"));
    }
}
