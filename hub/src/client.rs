//! The hub's client (blocking, reqwest): push models, request builds, pull verified artifacts
//! through the per-user [`Cache`]; also the calls a build worker makes.
//!
//! A pull trusts nothing it downloads: the manifest's signature is checked with the server's
//! key (given in the configuration, or pinned at first use), the manifest must name what was
//! asked for (model digest, target, precision, batch), the blob's size and sha256 must match
//! the manifest, and the bytes must parse as an artifact.
use crate::cache::{Cache, CachedManifest};
use crate::manifest::{parse_key, Expected, Manifest, SignedManifest};
use crate::meta::{Job, JobState, Repo, Revision, User};
use crate::names::{self, RepoName};
use crate::server::{
    ArtifactResponse, BuildRequest, BuildResponse, ClaimRequest, FailRequest, GcReport, HeartbeatRequest, RepoDetail,
};
use crate::stream::{copy_hashing, CopyStop};
use crate::HubError;
use ed25519_dalek::VerifyingKey;
use indicatif::{ProgressBar, ProgressStyle};
use reqwest::blocking::{RequestBuilder, Response};
use reqwest::header;
use reqwest::StatusCode;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashSet};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// What to build (and pull): target, precision, batch buckets, options.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BuildSpec {
    pub target: String,
    pub precision: String,
    pub batch: Vec<u64>,
    pub options: BTreeMap<String, String>,
}

impl BuildSpec {
    /// fp32, the model's own shapes, no options.
    pub fn new(target: &str) -> BuildSpec {
        BuildSpec { target: target.into(), precision: "fp32".into(), batch: vec![], options: BTreeMap::new() }
    }

    pub fn precision(mut self, p: &str) -> BuildSpec {
        self.precision = p.into();
        self
    }

    pub fn batch(mut self, b: &[u64]) -> BuildSpec {
        self.batch = b.to_vec();
        self
    }

    pub fn option(mut self, k: &str, v: &str) -> BuildSpec {
        self.options.insert(k.into(), v.into());
        self
    }

    pub fn check(&self) -> Result<(), HubError> {
        names::check_target(&self.target)?;
        names::check_precision(&self.precision)?;
        names::check_batch(&self.batch)?;
        names::check_options(&self.options)
    }

    /// A file name for this spec (validated fields only).
    pub(crate) fn file_stem(&self) -> String {
        let b = if self.batch.is_empty() { "static".into() } else { names::batch_text(&self.batch).replace(',', "-") };
        let o = if self.options.is_empty() {
            String::new()
        } else {
            format!(
                "_{}",
                &crate::sha256_hex(serde_json::to_string(&self.options).unwrap_or_default().as_bytes())[..12]
            )
        };
        format!("{}_{}_{b}{o}", self.target, self.precision)
    }

    fn query(&self) -> Vec<(String, String)> {
        let mut q =
            vec![("target".to_string(), self.target.clone()), ("precision".to_string(), self.precision.clone())];
        if !self.batch.is_empty() {
            q.push(("batch".into(), names::batch_text(&self.batch)));
        }
        for (k, v) in &self.options {
            q.push((format!("option.{k}"), v.clone()));
        }
        q
    }
}

/// The client's settings. `from_env` reads them from `$XDG_CONFIG_HOME/xforge/hub.toml`
/// (written by `xforge hub login`) and the environment.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClientConfig {
    /// `http://127.0.0.1:8765`.
    pub server: String,
    pub token: Option<String>,
    /// The server's ed25519 key (hex); when absent, the key pinned in the cache, else the
    /// server's own answer, pinned from then on (trust on first use).
    pub server_key: Option<String>,
    /// The cache folder (`cache::default_root()` when absent).
    pub cache_dir: Option<PathBuf>,
    /// Serve from the cache only; never reach the server.
    pub offline: bool,
    /// Progress bars on stderr.
    pub progress: bool,
}

/// Where `login` keeps the configuration: `$XFORGE_HUB_CONFIG`, else
/// `$XDG_CONFIG_HOME/xforge/hub.toml`, else `~/.config/xforge/hub.toml`.
pub fn config_path() -> PathBuf {
    if let Some(p) = std::env::var_os("XFORGE_HUB_CONFIG").filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    std::env::var_os("XDG_CONFIG_HOME")
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))
        .unwrap_or_else(|| PathBuf::from("."))
        .join("xforge")
        .join("hub.toml")
}

impl ClientConfig {
    /// The saved configuration (if any), then `XFORGE_HUB_URL`, `XFORGE_HUB_TOKEN`,
    /// `XFORGE_HUB_KEY` and `XFORGE_HUB_OFFLINE=1` over it.
    pub fn from_env() -> Result<ClientConfig, HubError> {
        let p = config_path();
        let mut c = match std::fs::read_to_string(&p) {
            Ok(t) => toml::from_str(&t).map_err(|e| HubError::Config(format!("{}: {e}", p.display())))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => ClientConfig::default(),
            Err(e) => return Err(HubError::io(format!("reading {}", p.display()), e)),
        };
        if let Ok(v) = std::env::var("XFORGE_HUB_URL") {
            c.server = v;
        }
        if let Ok(v) = std::env::var("XFORGE_HUB_TOKEN") {
            c.token = Some(v);
        }
        if let Ok(v) = std::env::var("XFORGE_HUB_KEY") {
            c.server_key = Some(v);
        }
        if std::env::var("XFORGE_HUB_OFFLINE").is_ok_and(|v| v == "1") {
            c.offline = true;
        }
        Ok(c)
    }

    /// Saves server, token and key (mode 0600: it holds a token).
    pub fn save(&self, path: &Path) -> Result<(), HubError> {
        if let Some(d) = path.parent() {
            std::fs::create_dir_all(d).map_err(|e| HubError::io(format!("creating {}", d.display()), e))?;
        }
        let keep = ClientConfig {
            server: self.server.clone(),
            token: self.token.clone(),
            server_key: self.server_key.clone(),
            ..Default::default()
        };
        let text = toml::to_string(&keep).map_err(|e| HubError::Internal(e.to_string()))?;
        crate::manifest::write_private(path, text.as_bytes())
    }
}

/// A pulled, verified artifact.
#[derive(Clone, Debug)]
pub struct Pulled {
    /// The verified blob in the cache.
    pub path: PathBuf,
    pub manifest: Manifest,
    pub signed: SignedManifest,
    /// The repository revision it was compiled from.
    pub revision: i64,
    /// Whether it came from the cache without a download.
    pub from_cache: bool,
    /// Bytes downloaded by this pull.
    pub downloaded: u64,
    /// Where the download resumed (0: from the start).
    pub resumed_from: u64,
    /// The build job this pull requested and waited for, if any.
    pub built_by: Option<i64>,
}

/// Who a token belongs to.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct WhoAmI {
    pub user: String,
    pub admin: bool,
    pub scopes: Vec<crate::auth::Scope>,
}

/// Cheap to clone (the connection pool is shared).
#[derive(Clone)]
pub struct Client {
    cfg: ClientConfig,
    base: String,
    http: reqwest::blocking::Client,
    cache: Cache,
    key: OnceLock<VerifyingKey>,
    /// Repositories this client pushed to: the next push uploads at once instead of asking for
    /// the repository first (a 404 goes back to asking: it may have been deleted).
    pushed_to: Arc<Mutex<HashSet<String>>>,
}

/// The largest JSON answer the client reads.
const MAX_JSON: u64 = 64 << 20;
/// The largest model a worker downloads.
const MAX_MODEL: u64 = 8 << 30;

fn server_error(r: Response) -> HubError {
    let status = r.status().as_u16();
    let mut body = String::new();
    let _ = r.take(64 * 1024).read_to_string(&mut body);
    let msg = serde_json::from_str::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_string))
        .unwrap_or_else(|| body.chars().take(500).collect());
    // the server's message already says what it is ("not found: ..."): keep its text
    let msg = ["bad request: ", "unauthorized: ", "forbidden: ", "not found: ", "conflict: ", "too large: "]
        .iter()
        .find_map(|p| msg.strip_prefix(p))
        .map(str::to_string)
        .unwrap_or(msg);
    HubError::from_status(status, msg)
}

fn check(r: Response) -> Result<Response, HubError> {
    if r.status().is_success() {
        Ok(r)
    } else {
        Err(server_error(r))
    }
}

fn json<T: DeserializeOwned>(r: Response) -> Result<T, HubError> {
    let r = check(r)?;
    let mut buf = Vec::new();
    r.take(MAX_JSON).read_to_end(&mut buf).map_err(|e| HubError::Http(format!("reading an answer: {e}")))?;
    serde_json::from_slice(&buf)
        .map_err(|e| HubError::Http(format!("the server's answer is not what this client reads: {e}")))
}

fn bar(show: bool, len: u64, what: &str) -> ProgressBar {
    if !show {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::new(len);
    pb.set_style(
        ProgressStyle::with_template("{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    pb.set_message(what.to_string());
    pb
}

impl Client {
    pub fn new(cfg: ClientConfig) -> Result<Client, HubError> {
        let base = cfg.server.trim_end_matches('/').to_string();
        if !(cfg.offline || base.starts_with("http://") || base.starts_with("https://")) {
            return Err(HubError::Config(format!(
                "server: '{}' is not an http:// or https:// URL (xforge hub login --server URL, or XFORGE_HUB_URL)",
                names::clip(&base)
            )));
        }
        if let Some(t) = &cfg.token {
            crate::auth::check_token_form(t)
                .map_err(|_| HubError::Config("token: not an xforge hub token (xfh_…)".into()))?;
        }
        let http = reqwest::blocking::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .timeout(None)
            .user_agent(concat!("xforge-hub/", env!("CARGO_PKG_VERSION")))
            .build()?;
        let cache = Cache::open(&cfg.cache_dir.clone().unwrap_or_else(crate::cache::default_root))?;
        let key = OnceLock::new();
        if let Some(k) = &cfg.server_key {
            let _ = key.set(parse_key(k)?);
        }
        Ok(Client { cfg, base, http, cache, key, pushed_to: Default::default() })
    }

    /// A client from the saved configuration and the environment, progress bars on.
    pub fn from_env() -> Result<Client, HubError> {
        let mut c = ClientConfig::from_env()?;
        c.progress = true;
        Client::new(c)
    }

    pub fn cache(&self) -> &Cache {
        &self.cache
    }

    pub fn config(&self) -> &ClientConfig {
        &self.cfg
    }

    fn online(&self) -> Result<(), HubError> {
        if self.cfg.offline {
            Err(HubError::Offline("this needs the server".into()))
        } else {
            Ok(())
        }
    }

    fn req(&self, method: reqwest::Method, path: &str) -> RequestBuilder {
        let r = self.http.request(method, format!("{}{}", self.base, path));
        match &self.cfg.token {
            Some(t) => r.bearer_auth(t),
            None => r,
        }
    }

    fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, HubError> {
        self.online()?;
        json(self.req(reqwest::Method::GET, path).send()?)
    }

    fn post<B: Serialize, T: DeserializeOwned>(&self, path: &str, body: &B) -> Result<T, HubError> {
        self.online()?;
        json(self.req(reqwest::Method::POST, path).json(body).send()?)
    }

    /// The key manifests are verified with: configured, else pinned, else the server's answer
    /// (then pinned: later answers must agree).
    pub fn trusted_key(&self) -> Result<VerifyingKey, HubError> {
        if let Some(k) = self.key.get() {
            return Ok(*k);
        }
        let k = match self.cache.pinned_key(&self.base)? {
            Some(k) => parse_key(&k)?,
            None => {
                let served = self.server_key()?;
                tracing::warn!("trusting the hub's key {served} on first use (pinned in the cache from now on)");
                self.cache.pin_key(&self.base, &served)?;
                parse_key(&served)?
            }
        };
        let _ = self.key.set(k);
        Ok(k)
    }

    /// The key the server says it signs with (hex).
    pub fn server_key(&self) -> Result<String, HubError> {
        #[derive(Deserialize)]
        struct K {
            key: String,
        }
        let k: K = self.get("/api/v1/key")?;
        parse_key(&k.key)?;
        Ok(k.key)
    }

    pub fn whoami(&self) -> Result<WhoAmI, HubError> {
        self.get("/api/v1/whoami")
    }

    /// Admin: a new user.
    pub fn create_user(&self, name: &str, admin: bool) -> Result<User, HubError> {
        names::check_name("name", name)?;
        self.post("/api/v1/users", &serde_json::json!({ "name": name, "admin": admin }))
    }

    /// A new token for a user, with scopes (`read`, `write`, `admin`, `worker`): an admin's for
    /// anyone, or one's own, with at most the scopes of the token that asks.
    pub fn create_token(&self, user: &str, scopes: &[&str], label: &str) -> Result<String, HubError> {
        names::check_name("user", user)?;
        #[derive(Deserialize)]
        struct T {
            token: String,
        }
        let t: T = self
            .post(&format!("/api/v1/users/{user}/tokens"), &serde_json::json!({ "scopes": scopes, "label": label }))?;
        Ok(t.token)
    }

    /// `user`'s tokens (the caller's own, or anyone's for an admin): ids, scopes, labels; never
    /// the tokens themselves.
    pub fn tokens(&self, user: &str) -> Result<Vec<crate::meta::TokenInfo>, HubError> {
        names::check_name("user", user)?;
        #[derive(Deserialize)]
        struct L {
            tokens: Vec<crate::meta::TokenInfo>,
        }
        let l: L = self.get(&format!("/api/v1/users/{user}/tokens"))?;
        Ok(l.tokens)
    }

    /// Revokes token `id` of `user` (the caller's own, or anyone's for an admin): it stops
    /// working at once.
    pub fn revoke_token(&self, user: &str, id: i64) -> Result<(), HubError> {
        self.online()?;
        names::check_name("user", user)?;
        let _: serde_json::Value =
            json(self.req(reqwest::Method::DELETE, &format!("/api/v1/users/{user}/tokens/{id}")).send()?)?;
        Ok(())
    }

    /// Admin: removes the blobs nothing references that were stored more than `grace_s` seconds
    /// ago (see `Hub::collect_garbage`).
    pub fn collect_garbage(&self, grace_s: u64) -> Result<GcReport, HubError> {
        self.online()?;
        json(self.req(reqwest::Method::POST, &format!("/api/v1/admin/gc?grace_s={grace_s}")).send()?)
    }

    /// A new organization, with the caller as its admin. Its repositories are `org/name`;
    /// members see its private ones (`read`), push and build (`write`), manage members (`admin`).
    pub fn create_org(&self, name: &str) -> Result<(), HubError> {
        names::check_name("organization", name)?;
        let _: serde_json::Value = self.post("/api/v1/orgs", &serde_json::json!({ "name": name }))?;
        Ok(())
    }

    /// Org admin: adds `user` to `org` with `role` (`read`, `write`, `admin`), or changes the role.
    pub fn set_member(&self, org: &str, user: &str, role: &str) -> Result<(), HubError> {
        names::check_name("organization", org)?;
        names::check_name("user", user)?;
        let r = self.req(reqwest::Method::PUT, &format!("/api/v1/orgs/{org}/members/{user}"));
        let _: serde_json::Value = json(r.json(&serde_json::json!({ "role": role })).send()?)?;
        Ok(())
    }

    /// Org admin: takes `user` out of `org` (an organization keeps at least one admin).
    pub fn remove_member(&self, org: &str, user: &str) -> Result<(), HubError> {
        names::check_name("organization", org)?;
        names::check_name("user", user)?;
        let _: serde_json::Value =
            json(self.req(reqwest::Method::DELETE, &format!("/api/v1/orgs/{org}/members/{user}")).send()?)?;
        Ok(())
    }

    /// (member, role) of an organization the caller belongs to.
    pub fn members(&self, org: &str) -> Result<Vec<(String, String)>, HubError> {
        names::check_name("organization", org)?;
        #[derive(Deserialize)]
        struct M {
            user: String,
            role: String,
        }
        #[derive(Deserialize)]
        struct L {
            members: Vec<M>,
        }
        let l: L = self.get(&format!("/api/v1/orgs/{org}/members"))?;
        Ok(l.members.into_iter().map(|m| (m.user, m.role)).collect())
    }

    pub fn create_repo(&self, repo: &str, private: bool) -> Result<Repo, HubError> {
        let rn = RepoName::parse(repo)?;
        self.post("/api/v1/repos", &serde_json::json!({ "name": rn.to_string(), "private": private }))
    }

    pub fn repo(&self, repo: &str) -> Result<RepoDetail, HubError> {
        let rn = RepoName::parse(repo)?;
        self.get(&format!("/api/v1/repos/{}/{}", rn.owner, rn.name))
    }

    /// Repositories the caller sees, names containing `query`.
    pub fn list(&self, query: Option<&str>) -> Result<Vec<Repo>, HubError> {
        self.online()?;
        let mut r = self.req(reqwest::Method::GET, "/api/v1/repos");
        if let Some(q) = query {
            r = r.query(&[("q", q)]);
        }
        json(r.send()?)
    }

    pub fn delete(&self, repo: &str) -> Result<(), HubError> {
        self.online()?;
        let rn = RepoName::parse(repo)?;
        let _: serde_json::Value =
            json(self.req(reqwest::Method::DELETE, &format!("/api/v1/repos/{}/{}", rn.owner, rn.name)).send()?)?;
        Ok(())
    }

    /// Uploads an ONNX file as the repository's next revision (creating the repository, private
    /// or not, when it does not exist).
    pub fn push(&self, repo: &str, model: &Path, private: bool) -> Result<Revision, HubError> {
        self.online()?;
        let rn = RepoName::parse(repo)?;
        let key = rn.to_string();
        let known = self.pushed_to.lock().unwrap_or_else(|e| e.into_inner()).contains(&key);
        if !known {
            match self.repo(repo) {
                Ok(_) => {}
                Err(HubError::NotFound(_)) => {
                    self.create_repo(repo, private)?;
                }
                Err(e) => return Err(e),
            }
        }
        match self.upload_revision(&rn, model) {
            Ok(rev) => {
                self.pushed_to.lock().unwrap_or_else(|e| e.into_inner()).insert(key);
                Ok(rev)
            }
            Err(e) => {
                self.pushed_to.lock().unwrap_or_else(|e| e.into_inner()).remove(&key);
                match e {
                    // deleted since the last push: ask (and create it) as for a first push
                    HubError::NotFound(_) if known => self.push(repo, model, private),
                    e => Err(e),
                }
            }
        }
    }

    /// Uploads an ONNX file as the next revision of an existing repository.
    fn upload_revision(&self, rn: &RepoName, model: &Path) -> Result<Revision, HubError> {
        let file = std::fs::File::open(model).map_err(|e| HubError::io(format!("reading {}", model.display()), e))?;
        let len = file.metadata().map_err(|e| HubError::io(format!("reading {}", model.display()), e))?.len();
        let filename = model
            .file_name()
            .and_then(|f| f.to_str())
            .filter(|f| names::check_name("filename", f).is_ok())
            .unwrap_or("model.onnx")
            .to_string();
        let pb = bar(self.cfg.progress, len, &format!("push {rn}"));
        let body = reqwest::blocking::Body::sized(pb.wrap_read(file), len);
        let r = self
            .req(reqwest::Method::POST, &format!("/api/v1/repos/{}/{}/revisions", rn.owner, rn.name))
            .query(&[("filename", filename.as_str())])
            .header(header::CONTENT_TYPE, "application/octet-stream")
            .body(body)
            .send();
        pb.finish_and_clear();
        json(r?)
    }

    /// Requests a build of the newest revision (the artifact at once when it exists).
    pub fn build(&self, repo: &str, spec: &BuildSpec) -> Result<BuildResponse, HubError> {
        let rn = RepoName::parse(repo)?;
        spec.check()?;
        let req = BuildRequest {
            target: spec.target.clone(),
            precision: spec.precision.clone(),
            batch: spec.batch.clone(),
            revision: None,
            options: spec.options.clone(),
            compiler_version: None,
        };
        self.post(&format!("/api/v1/repos/{}/{}/builds", rn.owner, rn.name), &req)
    }

    pub fn job(&self, id: i64) -> Result<Job, HubError> {
        self.get(&format!("/api/v1/jobs/{id}"))
    }

    /// Waits for a job to finish: the job when done, `BuildFailed` with the compiler's message
    /// when it failed, `Timeout` after `timeout`.
    pub fn wait(&self, id: i64, timeout: Duration) -> Result<Job, HubError> {
        let t0 = Instant::now();
        let mut delay = Duration::from_millis(100);
        loop {
            let j = self.job(id)?;
            match j.state {
                JobState::Done => return Ok(j),
                JobState::Failed => return Err(HubError::BuildFailed(j.error.unwrap_or_else(|| "no message".into()))),
                _ => {}
            }
            if t0.elapsed() > timeout {
                return Err(HubError::Timeout(format!(
                    "build {id} is still {} after {} s",
                    j.state.name(),
                    timeout.as_secs()
                )));
            }
            std::thread::sleep(delay);
            delay = (delay * 2).min(Duration::from_secs(2));
        }
    }

    /// The newest revision's artifact for `spec`, its manifest not yet verified.
    pub fn artifact(&self, repo: &str, spec: &BuildSpec) -> Result<ArtifactResponse, HubError> {
        self.online()?;
        let rn = RepoName::parse(repo)?;
        spec.check()?;
        json(
            self.req(reqwest::Method::GET, &format!("/api/v1/repos/{}/{}/artifact", rn.owner, rn.name))
                .query(&spec.query())
                .send()?,
        )
    }

    /// Pulls the artifact of `repo` for `spec`: from the cache when it verifies, else downloaded
    /// (resuming a cut download); when none is built, requests a build and waits for it.
    pub fn pull(&self, repo: &str, spec: &BuildSpec) -> Result<Pulled, HubError> {
        self.pull_with(repo, spec, true, Duration::from_secs(3600))
    }

    /// `pull`, saying whether to request a missing build and how long to wait for it.
    pub fn pull_with(&self, repo: &str, spec: &BuildSpec, build: bool, wait: Duration) -> Result<Pulled, HubError> {
        let rn = RepoName::parse(repo)?;
        spec.check()?;
        if self.cfg.offline {
            return self.pull_offline(&rn, spec);
        }
        let key = self.trusted_key()?;
        let mut built_by = None;
        let found = match self.artifact(repo, spec) {
            Ok(a) => a,
            Err(HubError::NotFound(why)) if build => {
                tracing::info!("{why}");
                let b = self.build(repo, spec)?;
                if b.artifact.is_none() {
                    let job =
                        b.job.ok_or_else(|| HubError::Http("a build answer with neither artifact nor job".into()))?;
                    built_by = Some(job.id);
                    tracing::info!("waiting for build {}", job.id);
                    self.wait(job.id, wait)?;
                }
                self.artifact(repo, spec)?
            }
            Err(e) => return Err(e),
        };
        let signed = found.artifact.manifest.clone();
        let m = signed.verify(&key)?;
        m.check(&Expected {
            model_digest: Some(&found.revision.digest),
            target: &spec.target,
            precision: &spec.precision,
            batch: &spec.batch,
        })?;
        if m.options != spec.options {
            return Err(HubError::Verification("manifest: options differ from the ones asked for".into()));
        }
        let (path, from_cache, downloaded, resumed_from) = match self.cache.verified_blob(&m)? {
            Some(p) => (p, true, 0, 0),
            None => {
                let (n, from) = self.download(&m)?;
                (self.cache.commit_partial(&m.artifact.sha256)?, false, n, from)
            }
        };
        let cached = CachedManifest {
            revision: found.revision.number,
            model_digest: found.revision.digest.clone(),
            signed: signed.clone(),
        };
        self.cache.save_manifest(&self.base, &rn, spec, &cached)?;
        Ok(Pulled {
            path,
            manifest: m,
            signed,
            revision: found.revision.number,
            from_cache,
            downloaded,
            resumed_from,
            built_by,
        })
    }

    fn pull_offline(&self, rn: &RepoName, spec: &BuildSpec) -> Result<Pulled, HubError> {
        let cached = self.cache.load_manifest(&self.base, rn, spec)?.ok_or_else(|| {
            HubError::Offline(format!("{rn} for {} {} is not in the cache", spec.target, spec.precision))
        })?;
        let key =
            match self.key.get() {
                Some(k) => *k,
                None => parse_key(&self.cache.pinned_key(&self.base)?.ok_or_else(|| {
                    HubError::Offline("no key pinned for this server: pull once online first".into())
                })?)?,
            };
        let m = cached.signed.verify(&key)?;
        m.check(&Expected {
            model_digest: Some(&cached.model_digest),
            target: &spec.target,
            precision: &spec.precision,
            batch: &spec.batch,
        })?;
        let path = self.cache.verified_blob(&m)?.ok_or_else(|| {
            HubError::Verification(format!("the cached blob {} is missing or does not verify", m.artifact.sha256))
        })?;
        Ok(Pulled {
            path,
            manifest: m,
            signed: cached.signed,
            revision: cached.revision,
            from_cache: true,
            downloaded: 0,
            resumed_from: 0,
            built_by: None,
        })
    }

    /// Downloads a manifest's blob into the cache's partial file, resuming what is there, and
    /// verifies it; returns (bytes downloaded now, offset resumed from).
    fn download(&self, m: &Manifest) -> Result<(u64, u64), HubError> {
        use sha2::Digest;
        let d = &m.artifact.sha256;
        let size = m.artifact.size;
        let part = self.cache.partial_path(d)?;
        let mut have = std::fs::metadata(&part).map(|x| x.len()).unwrap_or(0);
        if have > size {
            have = 0;
        }
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&part)
            .map_err(|e| HubError::io(format!("opening {}", part.display()), e))?;
        if have == 0 {
            f.set_len(0).map_err(|e| HubError::io(format!("truncating {}", part.display()), e))?;
        }
        let resumed_from = have;
        let (mut got, mut hasher) = (0u64, None);
        if have < size {
            let mut r = self.req(reqwest::Method::GET, &format!("/api/v1/blobs/{d}"));
            if have > 0 {
                tracing::info!("resuming {d} at byte {have} of {size}");
                r = r.header(header::RANGE, format!("bytes={have}-")).header(header::IF_RANGE, format!("\"{d}\""));
            }
            let resp = check(r.send()?)?;
            match resp.status() {
                StatusCode::PARTIAL_CONTENT => {
                    let cr = resp.headers().get(header::CONTENT_RANGE).and_then(|v| v.to_str().ok()).unwrap_or("");
                    if !cr.starts_with(&format!("bytes {have}-")) {
                        return Err(HubError::Http(format!("asked for bytes {have}-, the server sent {cr}")));
                    }
                }
                StatusCode::OK => {
                    // the whole blob: start over
                    f.set_len(0).map_err(|e| HubError::io(format!("truncating {}", part.display()), e))?;
                    have = 0;
                }
                s => return Err(HubError::Http(format!("download of {d}: status {s}"))),
            }
            let pb = bar(self.cfg.progress, size, &format!("pull {}", &d[..12]));
            pb.set_position(have);
            let prefix = if have > 0 { crate::cache::hasher_of_file(&part)?.0 } else { sha2::Sha256::new() };
            let mut body = resp.take(size - have + 1);
            match copy_hashing(&mut body, &mut f, prefix, size - have, &mut |k| pb.inc(k)) {
                Ok((h, n)) => (hasher, got) = (Some(h), n),
                Err(CopyStop::Read(e, n)) => {
                    let _ = f.flush();
                    pb.abandon();
                    return Err(HubError::Http(format!(
                        "the download of {d} was cut at byte {} of {size} ({e}); pull again to resume",
                        have + n
                    )));
                }
                Err(CopyStop::Write(e)) => return Err(HubError::io(format!("writing {}", part.display()), e)),
                Err(CopyStop::TooLong) => {
                    let _ = std::fs::remove_file(&part);
                    return Err(HubError::Verification(format!(
                        "blob {d}: longer than the {size} bytes of its manifest"
                    )));
                }
            }
            pb.finish_and_clear();
        }
        f.sync_all().map_err(|e| HubError::io(format!("fsync {}", part.display()), e))?;
        drop(f);
        // hashed as it arrived; a partial file that was already whole is hashed from the disk
        let (h, n) = match hasher {
            Some(h) => (h, have + got),
            None => crate::cache::hasher_of_file(&part)?,
        };
        let digest = hex::encode(h.finalize());
        if n != size {
            return Err(HubError::Http(format!(
                "the download of {d} ended at byte {n} of {size}; pull again to resume"
            )));
        }
        if &digest != d {
            let _ = std::fs::remove_file(&part);
            return Err(HubError::Verification(format!(
                "blob {d}: its bytes hash to {digest} (tampered or corrupt; removed)"
            )));
        }
        Ok((got, resumed_from))
    }

    /// The library call: the artifact of `repo` for `target` (fp32, the model's shapes), built
    /// first when needed, verified (signature, sha256, size, the format parses).
    pub fn pull_artifact(&self, repo: &str, target: &str) -> Result<xforge_runtime::Artifact, HubError> {
        let p = self.pull(repo, &BuildSpec::new(target))?;
        self.verified_artifact(&p, target)
    }

    /// A pulled artifact read back from the cache and verified again (signature, sha256, size,
    /// the format parses, the target is `target`).
    pub fn verified_artifact(&self, p: &Pulled, target: &str) -> Result<xforge_runtime::Artifact, HubError> {
        let bytes = std::fs::read(&p.path).map_err(|e| HubError::io(format!("reading {}", p.path.display()), e))?;
        p.manifest.check_blob(&bytes)?;
        let a = xforge_runtime::Artifact::from_bytes(&bytes)
            .map_err(|e| HubError::Verification(format!("artifact: {e}")))?;
        if a.header.target != target {
            return Err(HubError::Verification(format!("artifact: target {}, asked for {target}", a.header.target)));
        }
        Ok(a)
    }

    /// The artifact of `repo` for the GPU this process runs on (device 0's target, e.g. `sm_90`):
    /// downloaded and verified, built first when none exists (`pull_artifact`).
    pub fn from_hub(&self, repo: &str) -> Result<xforge_runtime::Artifact, HubError> {
        let target = xforge_runtime::device_target(0)
            .map_err(|e| HubError::BadRequest(format!("the GPU's target: {e} (name one with pull_artifact)")))?;
        self.pull_artifact(repo, &target)
    }

    // ---- what a build worker calls ----

    /// Claims a job for `target` (None when there is none).
    pub fn claim(&self, target: &str, worker: &str, compiler_version: &str) -> Result<Option<Job>, HubError> {
        self.online()?;
        let req =
            ClaimRequest { target: target.into(), worker: worker.into(), compiler_version: compiler_version.into() };
        let r = check(self.req(reqwest::Method::POST, "/api/v1/jobs/claim").json(&req).send()?)?;
        if r.status() == StatusCode::NO_CONTENT {
            return Ok(None);
        }
        json(r).map(Some)
    }

    /// Extends a job's lease and appends `log` to its log; `Conflict` when the lease was lost.
    pub fn heartbeat(&self, id: i64, worker: &str, log: &str) -> Result<(), HubError> {
        let _: serde_json::Value = self.post(
            &format!("/api/v1/jobs/{id}/heartbeat"),
            &HeartbeatRequest { worker: worker.into(), log: log.into() },
        )?;
        Ok(())
    }

    pub fn fail_job(&self, id: i64, worker: &str, error: &str, log: &str) -> Result<Job, HubError> {
        self.post(
            &format!("/api/v1/jobs/{id}/fail"),
            &FailRequest { worker: worker.into(), error: error.into(), log: log.into() },
        )
    }

    /// Uploads a job's artifact; the server signs its manifest and marks the job done.
    pub fn upload_artifact(&self, id: i64, worker: &str, bytes: Vec<u8>) -> Result<Job, HubError> {
        self.online()?;
        let len = bytes.len() as u64;
        let pb = bar(self.cfg.progress, len, &format!("upload job {id}"));
        let body = reqwest::blocking::Body::sized(pb.wrap_read(std::io::Cursor::new(bytes)), len);
        let r = self
            .req(reqwest::Method::POST, &format!("/api/v1/jobs/{id}/artifact"))
            .query(&[("worker", worker)])
            .header(header::CONTENT_TYPE, "application/octet-stream")
            .body(body)
            .send();
        pb.finish_and_clear();
        json(r?)
    }

    /// Downloads a blob into `dest`, checking it against its digest (a worker reading the model
    /// it builds); returns its size.
    pub fn fetch_blob(&self, digest: &str, dest: &Path) -> Result<u64, HubError> {
        use sha2::Digest;
        self.online()?;
        let d = names::check_digest("digest", digest)?;
        let mut r = check(self.req(reqwest::Method::GET, &format!("/api/v1/blobs/{d}")).send()?)?;
        let mut f = std::fs::File::create(dest).map_err(|e| HubError::io(format!("creating {}", dest.display()), e))?;
        let (h, n) = match copy_hashing(&mut r, &mut f, sha2::Sha256::new(), MAX_MODEL, &mut |_| {}) {
            Ok(x) => x,
            Err(CopyStop::Read(e, _)) => return Err(HubError::Http(format!("downloading blob {d}: {e}"))),
            Err(CopyStop::Write(e)) => return Err(HubError::io(format!("writing {}", dest.display()), e)),
            Err(CopyStop::TooLong) => return Err(HubError::TooLarge(format!("blob {d}: more than {MAX_MODEL} bytes"))),
        };
        let got = hex::encode(h.finalize());
        if got != d {
            return Err(HubError::Verification(format!("blob {d}: its bytes hash to {got}")));
        }
        Ok(n)
    }
}
