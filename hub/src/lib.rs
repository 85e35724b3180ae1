//! The xforge hub: compiled artifacts per hardware target, built once by a farm of workers and
//! cached everywhere.
//!
//! - [`server`]: the HTTP server (axum, JSON API and a small web site) over two storage traits,
//!   [`blobs::BlobStore`] (content-addressed by sha256) and [`meta::MetaStore`] (users, tokens,
//!   repositories, revisions, artifacts, the build queue with leases). The embedded default is a
//!   local directory and SQLite ([`blobs::LocalBlobs`], [`meta::SqlMeta`]); the same server runs on
//!   PostgreSQL and an S3-compatible object store ([`blobs::S3Blobs`]), chosen in the config.
//! - [`manifest`]: every artifact's JSON manifest, signed by the server with ed25519.
//! - [`worker`] (feature `worker`): claims build jobs, compiles in-process through
//!   `xforge_compiler`, checks the artifact parses back, uploads it.
//! - [`client`] and [`cache`]: push, build, pull with a per-user cache (blobs by digest, resumable
//!   downloads, verification before use, offline mode).
//!
//! ```no_run
//! let client = xforge_hub::Client::from_env()?;
//! let artifact = client.pull_artifact("alice/bert_tiny", "sm_90")?;
//! # Ok::<(), xforge_hub::HubError>(())
//! ```
pub mod auth;
pub mod blobs;
pub mod cache;
pub mod client;
pub mod config;
pub mod error;
pub mod latency;
pub mod manifest;
pub mod meta;
pub mod names;
pub mod s3;
pub mod server;
pub mod stream;
mod web;
#[cfg(feature = "worker")]
pub mod worker;

pub use client::{BuildSpec, Client, ClientConfig, Pulled};
pub use config::ServerConfig;
pub use error::HubError;
pub use manifest::{Manifest, SignedManifest};
pub use server::RunningServer;

/// The compiler version artifacts are keyed by: the crate version and the artifact format
/// (a client gets artifacts its runtime can load).
pub fn compiler_version() -> String {
    format!("{}-xfa{}", env!("CARGO_PKG_VERSION"), xforge_runtime::artifact::FORMAT_VERSION)
}

/// Milliseconds since the Unix epoch.
pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// `n` random bytes as lowercase hex (tokens, temporary names).
pub(crate) fn random_hex(n: usize) -> String {
    let mut b = vec![0u8; n];
    getrandom::fill(&mut b).expect("the OS random source failed");
    hex::encode(b)
}

/// The sha256 of `bytes` as lowercase hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}
