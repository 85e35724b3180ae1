//! The hub's HTTP server: a JSON API under `/api/v1` and a small web site, over a
//! [`MetaStore`] and a [`BlobStore`].
//!
//! Access: a request carries `Authorization: Bearer <token>` or nothing (anonymous: public
//! repositories only). A repository a caller may not see answers 404, by name and by blob
//! digest alike, never 403. Every name is validated before it reaches a query or a path; JSON
//! bodies are bounded (`max_json_bytes`) and parsed strictly (unknown fields refused, the error
//! names the field); uploads stream to the blob store and stop at their limit.
use crate::auth::{self, Scope, Scopes};
use crate::blobs::{BlobStore, ByteStream, LocalBlobs};
use crate::manifest::{BlobRef, Manifest, SignedManifest, Signer, SCHEMA};
use crate::meta::{ArtifactKey, ArtifactRecord, Job, MetaStore, Repo, Revision, Role, SqlMeta, User};
use crate::names::{self, RepoName};
use crate::{HubError, ServerConfig};
use axum::body::Body;
use axum::extract::{Path as UrlPath, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put};
use axum::{Json, Router};
use futures_util::StreamExt;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::ops::Range;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// What an upload over its limit may still send that the server reads and drops, so that the
/// client reads the 413 instead of a connection reset.
const DRAIN_CAP: u64 = 64 << 20;

/// The server's state: storage, signing key, configuration.
pub struct Hub {
    pub meta: Arc<dyn MetaStore>,
    pub blobs: Arc<dyn BlobStore>,
    pub signer: Signer,
    pub cfg: ServerConfig,
    /// Each route's latency as the server sees it (`crate::latency`).
    pub latency: crate::latency::Latency,
}

/// The caller: a user and its token's scopes.
#[derive(Clone, Debug)]
pub struct Principal {
    pub user: User,
    pub scopes: Scopes,
}

impl Hub {
    /// Opens the storage the configuration names (the embedded default: `blobs/` and `hub.db`
    /// in `cfg.dir`; PostgreSQL and S3 when `database` and `s3` say so); the signing key is
    /// `cfg.dir/hub.key`. On the first
    /// start it creates the user `admin` and returns its token (also written to
    /// `DIR/admin.token`, mode 0600).
    pub async fn open(cfg: ServerConfig) -> Result<(Arc<Hub>, Option<String>), HubError> {
        cfg.check()?;
        std::fs::create_dir_all(&cfg.dir).map_err(|e| HubError::io(format!("creating {}", cfg.dir.display()), e))?;
        let blobs: Arc<dyn BlobStore> = match &cfg.s3 {
            Some(s3) => Arc::new(crate::blobs::S3Blobs::new(s3, &cfg.dir.join("staging"))?),
            None => Arc::new(LocalBlobs::open(&cfg.dir.join("blobs"))?),
        };
        let meta = match &cfg.database {
            Some(url) => SqlMeta::open(url).await?,
            None => SqlMeta::open_sqlite(&cfg.dir.join("hub.db")).await?,
        };
        let signer = Signer::load_or_create(&cfg.dir.join("hub.key"))?;
        Hub::with_stores(cfg, Arc::new(meta), blobs, signer).await
    }

    /// A hub over any stores (the bootstrap as in [`Hub::open`]).
    pub async fn with_stores(
        cfg: ServerConfig,
        meta: Arc<dyn MetaStore>,
        blobs: Arc<dyn BlobStore>,
        signer: Signer,
    ) -> Result<(Arc<Hub>, Option<String>), HubError> {
        let mut admin_token = None;
        if meta.count_users().await? == 0 {
            let admin = meta.create_user("admin", true).await?;
            let t = auth::new_token();
            meta.add_token(admin.id, &auth::token_hash(&t), "admin", "bootstrap").await?;
            crate::manifest::write_private(&cfg.dir.join("admin.token"), format!("{t}\n").as_bytes())?;
            admin_token = Some(t);
        }
        Ok((Arc::new(Hub { meta, blobs, signer, cfg, latency: Default::default() }), admin_token))
    }

    /// The caller of a request (None: anonymous). A token that is malformed or unknown is
    /// refused (401), never taken as anonymous.
    pub async fn principal(&self, headers: &HeaderMap) -> Result<Option<Principal>, HubError> {
        let Some(h) = headers.get(header::AUTHORIZATION) else { return Ok(None) };
        let h = h.to_str().map_err(|_| HubError::Unauthorized("the Authorization header is not ASCII".into()))?;
        let t = h
            .strip_prefix("Bearer ")
            .ok_or_else(|| HubError::Unauthorized("the Authorization header is not 'Bearer <token>'".into()))?
            .trim();
        auth::check_token_form(t)?;
        match self.meta.token(&auth::token_hash(t)).await? {
            Some((user, scopes)) => Ok(Some(Principal { user, scopes: Scopes::parse(&scopes)? })),
            None => Err(HubError::Unauthorized("unknown token".into())),
        }
    }

    fn lease(&self) -> Duration {
        Duration::from_secs(self.cfg.lease_seconds)
    }
}

fn require(who: &Option<Principal>, s: Scope) -> Result<&Principal, HubError> {
    match who {
        None => Err(HubError::Unauthorized(format!("this needs a token with the {} scope", s.name()))),
        Some(p) if p.scopes.allows(s) => Ok(p),
        Some(_) => Err(HubError::Forbidden(format!("this needs a token with the {} scope", s.name()))),
    }
}

/// (viewer id, sees everything) for visibility queries.
fn viewer(who: &Option<Principal>) -> (Option<i64>, bool) {
    match who {
        Some(p) if p.scopes.allows(Scope::Admin) => (Some(p.user.id), true),
        Some(p) if p.scopes.allows(Scope::Read) => (Some(p.user.id), false),
        _ => (None, false),
    }
}

/// Whether the caller sees a repository: public, its own, an admin's token, or a private
/// repository of an organization the caller belongs to.
pub(crate) async fn can_see(hub: &Hub, repo: &Repo, who: &Option<Principal>) -> Result<bool, HubError> {
    let (id, all) = viewer(who);
    if all || !repo.private || id == Some(repo.owner_id) {
        return Ok(true);
    }
    Ok(match id {
        Some(u) => hub.meta.role(repo.owner_id, u).await?.is_some(),
        None => false,
    })
}

/// A repository the caller sees, else NotFound (the same answer whether it exists or not).
async fn visible_repo(hub: &Hub, owner: &str, name: &str, who: &Option<Principal>) -> Result<Repo, HubError> {
    let rn = RepoName::new(owner, name)?;
    match hub.meta.repo(&rn.owner, &rn.name).await? {
        Some(r) if can_see(hub, &r, who).await? => Ok(r),
        _ => Err(HubError::NotFound(format!("repository {rn}"))),
    }
}

/// A repository the caller may change: visible, and its own (or an admin's token).
async fn writable_repo(hub: &Hub, owner: &str, name: &str, who: &Option<Principal>) -> Result<Repo, HubError> {
    let repo = visible_repo(hub, owner, name, who).await?;
    let p = require(who, Scope::Write)?;
    // the owner and an admin's token need no membership lookup
    if p.user.id == repo.owner_id || p.scopes.allows(Scope::Admin) {
        return Ok(repo);
    }
    let member_writes = hub.meta.role(repo.owner_id, p.user.id).await?.is_some_and(|r| r >= Role::Write);
    if !member_writes {
        return Err(HubError::Forbidden(format!("repository {} belongs to {}", repo.full_name(), repo.owner)));
    }
    Ok(repo)
}

/// The error body: `{"error": "...", "code": "not_found"}`.
pub struct ApiError(pub HubError);

impl From<HubError> for ApiError {
    fn from(e: HubError) -> ApiError {
        ApiError(e)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let e = self.0;
        let status = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        if status.is_server_error() {
            tracing::error!("{e}");
        } else {
            tracing::debug!("{status}: {e}");
        }
        // internal details stay in the server's log
        let msg =
            if status.is_server_error() { "internal error (see the server's log)".to_string() } else { e.to_string() };
        let mut r = (status, Json(serde_json::json!({ "error": msg, "code": e.code() }))).into_response();
        if let HubError::RangeNotSatisfiable(size) = e {
            if let Ok(v) = HeaderValue::from_str(&format!("bytes */{size}")) {
                r.headers_mut().insert(header::CONTENT_RANGE, v);
            }
        }
        if status == StatusCode::UNAUTHORIZED {
            r.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        r
    }
}

type ApiResult<T> = Result<T, ApiError>;

/// Reads a JSON body of at most `max_json_bytes` and parses it strictly.
async fn json_body<T: DeserializeOwned>(hub: &Hub, body: Body) -> Result<T, HubError> {
    let limit = hub.cfg.max_json_bytes;
    let mut s = body.into_data_stream();
    let mut buf = Vec::new();
    while let Some(c) = s.next().await {
        let c = c.map_err(|e| HubError::BadRequest(format!("body: {e}")))?;
        if buf.len() + c.len() > limit {
            return Err(HubError::TooLarge(format!("body: a JSON body is at most {limit} bytes")));
        }
        buf.extend_from_slice(&c);
    }
    serde_json::from_slice(&buf).map_err(|e| HubError::BadRequest(format!("body: invalid JSON: {e}")))
}

/// The request body as a stream that ends in an error past `limit` bytes (after reading and
/// dropping at most `DRAIN_CAP` more, so the client gets to read the answer); `over` tells.
fn limited(body: Body, limit: u64, over: Arc<AtomicBool>) -> ByteStream {
    let s = body.into_data_stream();
    futures_util::stream::unfold((s, 0u64, false), move |(mut s, mut n, done)| {
        let over = over.clone();
        async move {
            if done {
                return None;
            }
            match s.next().await {
                None => None,
                Some(Err(e)) => Some((Err(std::io::Error::other(e.to_string())), (s, n, true))),
                Some(Ok(c)) => {
                    n += c.len() as u64;
                    if n <= limit {
                        return Some((Ok(c), (s, n, false)));
                    }
                    over.store(true, Ordering::SeqCst);
                    drain(&mut s).await;
                    Some((Err(std::io::Error::other("over the limit")), (s, n, true)))
                }
            }
        }
    })
    .boxed()
}

/// Reads and drops what is left of a request body, at most `DRAIN_CAP` bytes for at most 10 s: a
/// refusal answered before the body was read closes the connection with the body unread, and the
/// client, still writing, may see the connection reset instead of the answer.
async fn drain<S, E>(s: &mut S)
where
    S: futures_util::Stream<Item = Result<axum::body::Bytes, E>> + Unpin,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut drained = 0u64;
    while drained < DRAIN_CAP {
        match tokio::time::timeout_at(deadline, s.next()).await {
            Ok(Some(Ok(c))) => drained += c.len() as u64,
            _ => break,
        }
    }
}

/// An upload refused before its bytes were read: the body drained first (`drain`), then the error.
async fn refuse_upload(body: Body, e: HubError) -> HubError {
    drain(&mut body.into_data_stream()).await;
    e
}

/// Streams an upload into the blob store, refusing it past `limit` bytes.
async fn take_upload(
    hub: &Hub,
    headers: &HeaderMap,
    body: Body,
    limit: u64,
) -> Result<crate::blobs::BlobInfo, HubError> {
    if let Some(len) =
        headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok())
    {
        if len > limit.saturating_add(DRAIN_CAP) {
            return Err(HubError::TooLarge(format!("body: {len} bytes, the limit is {limit}")));
        }
    }
    let over = Arc::new(AtomicBool::new(false));
    let r = hub.blobs.put(limited(body, limit, over.clone()), limit).await;
    if over.load(Ordering::SeqCst) {
        return Err(HubError::TooLarge(format!("body: more than the limit of {limit} bytes")));
    }
    r
}

// ---- the API's JSON types ----

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewUser {
    name: String,
    #[serde(default)]
    admin: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewToken {
    scopes: Vec<String>,
    #[serde(default)]
    label: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewRepo {
    /// `owner/name`, or `name` for one's own.
    name: String,
    #[serde(default)]
    private: bool,
}

/// A build request.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BuildRequest {
    pub target: String,
    #[serde(default = "fp32")]
    pub precision: String,
    #[serde(default)]
    pub batch: Vec<u64>,
    /// A revision number; the newest when absent.
    #[serde(default)]
    pub revision: Option<i64>,
    #[serde(default)]
    pub options: BTreeMap<String, String>,
    /// The compiler version to build with; the server's when absent.
    #[serde(default)]
    pub compiler_version: Option<String>,
}

fn fp32() -> String {
    "fp32".into()
}

/// The answer to a build request: the artifact when it exists, else the job that builds it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct BuildResponse {
    pub artifact: Option<ArtifactRecord>,
    pub job: Option<Job>,
}

/// An artifact and the revision it was compiled from.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ArtifactResponse {
    pub revision: Revision,
    pub artifact: ArtifactRecord,
}

/// A repository with its revisions, the artifacts of its newest revision and its recent jobs
/// (logs left out).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RepoDetail {
    pub repo: Repo,
    pub revisions: Vec<Revision>,
    pub artifacts: Vec<ArtifactRecord>,
    pub jobs: Vec<Job>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClaimRequest {
    pub target: String,
    pub worker: String,
    pub compiler_version: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeartbeatRequest {
    pub worker: String,
    #[serde(default)]
    pub log: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FailRequest {
    pub worker: String,
    pub error: String,
    #[serde(default)]
    pub log: String,
}

// ---- handlers ----

async fn health() -> Json<serde_json::Value> {
    Json(serde_json::json!({ "ok": true, "compiler_version": crate::compiler_version() }))
}

async fn key(State(hub): State<Arc<Hub>>) -> Json<serde_json::Value> {
    Json(serde_json::json!({ "algorithm": "ed25519", "key": hub.signer.public_hex() }))
}

async fn whoami(State(hub): State<Arc<Hub>>, headers: HeaderMap) -> ApiResult<Json<serde_json::Value>> {
    let who = hub.principal(&headers).await?;
    let p = who.ok_or_else(|| HubError::Unauthorized("no token".into()))?;
    Ok(Json(serde_json::json!({ "user": p.user.name, "admin": p.user.admin, "scopes": p.scopes.0 })))
}

async fn create_user(
    State(hub): State<Arc<Hub>>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<(StatusCode, Json<User>)> {
    let who = hub.principal(&headers).await?;
    require(&who, Scope::Admin)?;
    let req: NewUser = json_body(&hub, body).await?;
    names::check_name("name", &req.name)?;
    let u = hub.meta.create_user(&req.name, req.admin).await?;
    tracing::info!(user = u.name, admin = u.admin, "user created");
    Ok((StatusCode::CREATED, Json(u)))
}

async fn create_token(
    State(hub): State<Arc<Hub>>,
    headers: HeaderMap,
    UrlPath(name): UrlPath<String>,
    body: Body,
) -> ApiResult<(StatusCode, Json<serde_json::Value>)> {
    let who = hub.principal(&headers).await?;
    let user = token_owner(&hub, &who, &name).await?;
    let req: NewToken = json_body(&hub, body).await?;
    if hub.meta.is_org(user.id).await? {
        return Err(HubError::BadRequest(format!("{name} is an organization: its members' tokens act for it")).into());
    }
    let scopes = Scopes::parse(&req.scopes.join(","))?;
    if scopes.0.is_empty() {
        return Err(HubError::BadRequest("scopes: empty".into()).into());
    }
    if scopes.0.contains(&Scope::Admin) && !user.admin {
        return Err(HubError::BadRequest(format!("scopes: {name} is not an admin: no admin scope")).into());
    }
    // one's own tokens: at most the scopes of the token that asks (a read token mints no write)
    let caller = who.as_ref().expect("token_owner needs a token");
    if !caller.scopes.allows(Scope::Admin) {
        if let Some(s) = scopes.0.iter().find(|s| !caller.scopes.allows(**s)) {
            return Err(HubError::Forbidden(format!("scopes: this token cannot grant {}", s.name())).into());
        }
    }
    if req.label.len() > 128 {
        return Err(HubError::BadRequest("label: longer than 128 characters".into()).into());
    }
    let t = auth::new_token();
    let id = hub.meta.add_token(user.id, &auth::token_hash(&t), &scopes.text(), &req.label).await?;
    Ok((StatusCode::CREATED, Json(serde_json::json!({ "user": name, "id": id, "token": t, "scopes": scopes.0 }))))
}

/// The user whose tokens `who` manages: any user for an admin, else only the caller (another
/// user's tokens are a 404, as if there were none).
async fn token_owner(hub: &Hub, who: &Option<Principal>, name: &str) -> Result<crate::meta::User, HubError> {
    let caller = match who {
        None => return Err(HubError::Unauthorized("managing tokens needs a token".into())),
        Some(p) => p,
    };
    names::check_name("user", name)?;
    let admin = caller.scopes.allows(Scope::Admin);
    if !admin && caller.user.name != name {
        return Err(HubError::NotFound(format!("user {name}'s tokens")));
    }
    hub.meta.user(name).await?.ok_or_else(|| HubError::NotFound(format!("user {name}")))
}

async fn list_tokens(
    State(hub): State<Arc<Hub>>,
    headers: HeaderMap,
    UrlPath(name): UrlPath<String>,
) -> ApiResult<Json<serde_json::Value>> {
    let who = hub.principal(&headers).await?;
    let user = token_owner(&hub, &who, &name).await?;
    let tokens = hub.meta.tokens(user.id).await?;
    Ok(Json(serde_json::json!({ "user": name, "tokens": tokens })))
}

async fn revoke_token(
    State(hub): State<Arc<Hub>>,
    headers: HeaderMap,
    UrlPath((name, id)): UrlPath<(String, i64)>,
) -> ApiResult<Json<serde_json::Value>> {
    let who = hub.principal(&headers).await?;
    let user = token_owner(&hub, &who, &name).await?;
    if !hub.meta.delete_token(user.id, id).await? {
        return Err(HubError::NotFound(format!("token {id} of {name}")).into());
    }
    tracing::info!(user = name, id, "token revoked");
    Ok(Json(serde_json::json!({ "user": name, "id": id, "revoked": true })))
}

/// What a garbage collection of the blob store did.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GcReport {
    /// Blobs in the store.
    pub examined: usize,
    /// Digests of the blobs removed: nothing referenced them and they were stored before the
    /// grace period.
    pub removed: Vec<String>,
    pub bytes_removed: u64,
}

/// The grace period a collection takes unless told (an hour), in seconds.
pub const DEFAULT_GC_GRACE_S: u64 = 3600;
/// The longest grace period a collection takes (a week), in seconds.
const MAX_GC_GRACE_S: u64 = 7 * 24 * 3600;

impl Hub {
    /// Removes the blobs no revision or artifact names (what a crash between storing a blob and
    /// recording it leaves, or an upload refused after it was stored) that were last stored more
    /// than `grace` ago: an upload whose record is still on its way is younger than that. Each
    /// blob's references are read again just before it goes.
    pub async fn collect_garbage(&self, grace: Duration) -> Result<GcReport, HubError> {
        let now = std::time::SystemTime::now();
        let blobs = self.blobs.list().await?;
        let mut report = GcReport { examined: blobs.len(), removed: vec![], bytes_removed: 0 };
        for b in blobs {
            if now.duration_since(b.stored).unwrap_or_default() < grace || self.meta.blob_referenced(&b.digest).await? {
                continue;
            }
            self.blobs.delete(&b.digest).await?;
            report.bytes_removed += b.size;
            report.removed.push(b.digest);
        }
        tracing::info!(
            examined = report.examined,
            removed = report.removed.len(),
            bytes = report.bytes_removed,
            "blob garbage collected"
        );
        Ok(report)
    }
}

/// `POST /api/v1/admin/gc?grace_s=N` (admin; N defaults to an hour).
async fn collect_garbage(
    State(hub): State<Arc<Hub>>,
    headers: HeaderMap,
    Query(q): Query<BTreeMap<String, String>>,
) -> ApiResult<Json<GcReport>> {
    let who = hub.principal(&headers).await?;
    require(&who, Scope::Admin)?;
    let grace = match q.get("grace_s") {
        None => DEFAULT_GC_GRACE_S,
        Some(v) => v.parse::<u64>().ok().filter(|&g| g <= MAX_GC_GRACE_S).ok_or_else(|| {
            HubError::BadRequest(format!("grace_s: '{v}' is not a number of seconds up to {MAX_GC_GRACE_S}"))
        })?,
    };
    Ok(Json(hub.collect_garbage(Duration::from_secs(grace)).await?))
}

async fn list_repos(
    State(hub): State<Arc<Hub>>,
    headers: HeaderMap,
    Query(q): Query<BTreeMap<String, String>>,
) -> ApiResult<Json<Vec<Repo>>> {
    let who = hub.principal(&headers).await?;
    let (id, all) = viewer(&who);
    let query = q.get("q").map(String::as_str).filter(|s| !s.is_empty());
    if query.is_some_and(|s| s.len() > 128) {
        return Err(HubError::BadRequest("q: longer than 128 characters".into()).into());
    }
    let limit = match q.get("limit") {
        Some(l) => l
            .parse::<i64>()
            .ok()
            .filter(|&l| (1..=1000).contains(&l))
            .ok_or_else(|| HubError::BadRequest("limit: not in 1..=1000".into()))?,
        None => 100,
    };
    Ok(Json(hub.meta.list_repos(id, all, query, limit).await?))
}

/// A new organization.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct NewOrg {
    name: String,
}

/// A member's role.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct MemberRole {
    role: String,
}

/// The organization `name` with the caller's role in it; NotFound for a non-member (as for a
/// private repository), Forbidden for a member below `need`. An admin token acts as an admin.
async fn org_for(hub: &Hub, name: &str, who: &Option<Principal>, need: Role) -> Result<(User, Role), HubError> {
    names::check_name("organization", name)?;
    let p = require(who, if need == Role::Read { Scope::Read } else { Scope::Write })?;
    let missing = || HubError::NotFound(format!("organization {name}"));
    let org = hub.meta.user(name).await?.ok_or_else(missing)?;
    if !hub.meta.is_org(org.id).await? {
        return Err(missing());
    }
    let role = if p.scopes.allows(Scope::Admin) { Some(Role::Admin) } else { hub.meta.role(org.id, p.user.id).await? };
    match role {
        None => Err(missing()),
        Some(r) if r < need => {
            Err(HubError::Forbidden(format!("{} is a {} of {name}; this needs {}", p.user.name, r.name(), need.name())))
        }
        Some(r) => Ok((org, r)),
    }
}

/// The user a member path names (checked, then looked up).
async fn member_user(hub: &Hub, user: &str) -> Result<User, HubError> {
    names::check_name("user", user)?;
    hub.meta.user(user).await?.ok_or_else(|| HubError::NotFound(format!("user {user}")))
}

async fn create_org(
    State(hub): State<Arc<Hub>>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<(StatusCode, Json<serde_json::Value>)> {
    let who = hub.principal(&headers).await?;
    let p = require(&who, Scope::Write)?.clone();
    let req: NewOrg = json_body(&hub, body).await?;
    names::check_name("name", &req.name)?;
    let org = hub.meta.create_org(&req.name, p.user.id).await?;
    tracing::info!(org = org.name, admin = p.user.name, "organization created");
    Ok((StatusCode::CREATED, Json(serde_json::json!({ "name": org.name, "admin": p.user.name }))))
}

async fn list_members(
    State(hub): State<Arc<Hub>>,
    headers: HeaderMap,
    UrlPath(name): UrlPath<String>,
) -> ApiResult<Json<serde_json::Value>> {
    let who = hub.principal(&headers).await?;
    let (org, _) = org_for(&hub, &name, &who, Role::Read).await?;
    let members: Vec<serde_json::Value> = hub
        .meta
        .members(org.id)
        .await?
        .into_iter()
        .map(|(user, role)| serde_json::json!({ "user": user, "role": role }))
        .collect();
    Ok(Json(serde_json::json!({ "org": org.name, "members": members })))
}

async fn set_member(
    State(hub): State<Arc<Hub>>,
    headers: HeaderMap,
    UrlPath((name, user)): UrlPath<(String, String)>,
    body: Body,
) -> ApiResult<Json<serde_json::Value>> {
    let who = hub.principal(&headers).await?;
    let (org, _) = org_for(&hub, &name, &who, Role::Admin).await?;
    names::check_name("user", &user)?;
    let req: MemberRole = json_body(&hub, body).await?;
    let role = Role::parse(&req.role)?;
    let u = member_user(&hub, &user).await?;
    if hub.meta.is_org(u.id).await? {
        return Err(HubError::BadRequest(format!("{user} is an organization, not a user")).into());
    }
    hub.meta.set_member(org.id, u.id, role).await?;
    tracing::info!(org = org.name, user, role = role.name(), "member set");
    Ok(Json(serde_json::json!({ "org": org.name, "user": user, "role": role })))
}

async fn remove_member(
    State(hub): State<Arc<Hub>>,
    headers: HeaderMap,
    UrlPath((name, user)): UrlPath<(String, String)>,
) -> ApiResult<Json<serde_json::Value>> {
    let who = hub.principal(&headers).await?;
    let (org, _) = org_for(&hub, &name, &who, Role::Admin).await?;
    let u = member_user(&hub, &user).await?;
    // an organization keeps at least one admin
    let admins = hub.meta.members(org.id).await?.into_iter().filter(|(n, r)| *r == Role::Admin && *n != user).count();
    if admins == 0 {
        return Err(HubError::Conflict(format!("{user} is the last admin of {}", org.name)).into());
    }
    if !hub.meta.remove_member(org.id, u.id).await? {
        return Err(HubError::NotFound(format!("{user} in organization {}", org.name)).into());
    }
    tracing::info!(org = org.name, user, "member removed");
    Ok(Json(serde_json::json!({ "org": org.name, "user": user, "removed": true })))
}

async fn create_repo(
    State(hub): State<Arc<Hub>>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<(StatusCode, Json<Repo>)> {
    let who = hub.principal(&headers).await?;
    let p = require(&who, Scope::Write)?.clone();
    let req: NewRepo = json_body(&hub, body).await?;
    let rn = if req.name.contains('/') { RepoName::parse(&req.name)? } else { RepoName::new(&p.user.name, &req.name)? };
    let owner = if rn.owner == p.user.name {
        p.user.clone()
    } else {
        let other = hub.meta.user(&rn.owner).await?;
        let role = match &other {
            Some(o) => hub.meta.role(o.id, p.user.id).await?,
            None => None,
        };
        match other {
            Some(o) if p.scopes.allows(Scope::Admin) || role.is_some_and(|r| r >= Role::Write) => o,
            None if p.scopes.allows(Scope::Admin) => {
                return Err(HubError::NotFound(format!("user or organization {}", rn.owner)).into())
            }
            _ => {
                return Err(
                    HubError::Forbidden(format!("{} cannot create repositories for {}", p.user.name, rn.owner)).into()
                )
            }
        }
    };
    let repo = hub.meta.create_repo(owner.id, &rn.name, req.private).await?;
    tracing::info!(repo = repo.full_name(), private = repo.private, "repository created");
    Ok((StatusCode::CREATED, Json(repo)))
}

pub(crate) async fn repo_detail(hub: &Hub, repo: Repo) -> Result<RepoDetail, HubError> {
    let revisions = hub.meta.revisions(repo.id).await?;
    let artifacts = match revisions.first() {
        Some(r) => hub.meta.artifacts_of_model(&r.digest).await?,
        None => vec![],
    };
    let mut jobs = hub.meta.jobs_of_repo(repo.id, 50).await?;
    for j in &mut jobs {
        j.log.clear();
    }
    Ok(RepoDetail { repo, revisions, artifacts, jobs })
}

async fn get_repo(
    State(hub): State<Arc<Hub>>,
    headers: HeaderMap,
    UrlPath((owner, name)): UrlPath<(String, String)>,
) -> ApiResult<Json<RepoDetail>> {
    let who = hub.principal(&headers).await?;
    let repo = visible_repo(&hub, &owner, &name, &who).await?;
    Ok(Json(repo_detail(&hub, repo).await?))
}

async fn delete_repo(
    State(hub): State<Arc<Hub>>,
    headers: HeaderMap,
    UrlPath((owner, name)): UrlPath<(String, String)>,
) -> ApiResult<Json<serde_json::Value>> {
    let who = hub.principal(&headers).await?;
    let repo = writable_repo(&hub, &owner, &name, &who).await?;
    let orphans = hub.meta.delete_repo(repo.id).await?;
    for d in &orphans {
        hub.blobs.delete(d).await?;
    }
    tracing::info!(repo = repo.full_name(), blobs = orphans.len(), "repository deleted");
    Ok(Json(serde_json::json!({ "deleted": repo.full_name(), "blobs_removed": orphans.len() })))
}

async fn push_revision(
    State(hub): State<Arc<Hub>>,
    headers: HeaderMap,
    UrlPath((owner, name)): UrlPath<(String, String)>,
    Query(q): Query<BTreeMap<String, String>>,
    body: Body,
) -> ApiResult<(StatusCode, Json<Revision>)> {
    let checked = async {
        let who = hub.principal(&headers).await?;
        let repo = writable_repo(&hub, &owner, &name, &who).await?;
        let filename = q.get("filename").map(String::as_str).unwrap_or("model.onnx");
        names::check_name("filename", filename)?;
        Ok::<_, HubError>((repo, filename.to_string()))
    };
    let (repo, filename) = match checked.await {
        Ok(v) => v,
        Err(e) => return Err(refuse_upload(body, e).await.into()),
    };
    let filename = filename.as_str();
    let info = take_upload(&hub, &headers, body, hub.cfg.max_model_bytes).await?;
    let rev = hub.meta.add_revision(repo.id, &info.digest, info.size as i64, filename).await?;
    tracing::info!(
        repo = repo.full_name(),
        revision = rev.number,
        digest = info.digest,
        size = info.size,
        "revision pushed"
    );
    Ok((StatusCode::CREATED, Json(rev)))
}

fn revision_of(revs: &[Revision], n: Option<i64>, repo: &Repo) -> Result<Revision, HubError> {
    match n {
        None => revs
            .first()
            .cloned()
            .ok_or_else(|| HubError::NotFound(format!("repository {} has no revision", repo.full_name()))),
        Some(n) => revs
            .iter()
            .find(|r| r.number == n)
            .cloned()
            .ok_or_else(|| HubError::NotFound(format!("revision {n} of {}", repo.full_name()))),
    }
}

fn build_key(model_digest: &str, req: &BuildRequest) -> Result<ArtifactKey, HubError> {
    names::check_target(&req.target)?;
    names::check_precision(&req.precision)?;
    names::check_batch(&req.batch)?;
    names::check_options(&req.options)?;
    let cv = req.compiler_version.clone().unwrap_or_else(crate::compiler_version);
    if cv.is_empty() || cv.len() > 64 || !cv.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-+".contains(&b)) {
        return Err(HubError::BadRequest("compiler_version: 1-64 of [A-Za-z0-9._+-]".into()));
    }
    Ok(ArtifactKey {
        model_digest: model_digest.to_string(),
        target: req.target.clone(),
        precision: req.precision.clone(),
        batch: req.batch.clone(),
        compiler_version: cv,
        options: req.options.clone(),
    })
}

async fn get_artifact(
    State(hub): State<Arc<Hub>>,
    headers: HeaderMap,
    UrlPath((owner, name)): UrlPath<(String, String)>,
    Query(q): Query<BTreeMap<String, String>>,
) -> ApiResult<Json<ArtifactResponse>> {
    let who = hub.principal(&headers).await?;
    let repo = visible_repo(&hub, &owner, &name, &who).await?;
    let mut options = BTreeMap::new();
    for (k, v) in &q {
        if let Some(o) = k.strip_prefix("option.") {
            options.insert(o.to_string(), v.clone());
        } else if !["target", "precision", "batch", "revision", "compiler_version"].contains(&k.as_str()) {
            return Err(HubError::BadRequest(format!("query: unknown parameter '{}'", names::clip(k))).into());
        }
    }
    let req = BuildRequest {
        target: q.get("target").cloned().ok_or_else(|| HubError::BadRequest("target: missing".into()))?,
        precision: q.get("precision").cloned().unwrap_or_else(fp32),
        batch: names::parse_batch(q.get("batch").map(String::as_str).unwrap_or(""))?,
        revision: match q.get("revision") {
            Some(r) => Some(r.parse().map_err(|_| HubError::BadRequest("revision: not a number".into()))?),
            None => None,
        },
        options,
        compiler_version: q.get("compiler_version").cloned(),
    };
    let revs = hub.meta.revisions(repo.id).await?;
    let rev = revision_of(&revs, req.revision, &repo)?;
    let key = build_key(&rev.digest, &req)?;
    match hub.meta.artifact(&key).await? {
        Some(a) => Ok(Json(ArtifactResponse { revision: rev, artifact: a })),
        None => Err(HubError::NotFound(format!(
            "no artifact of {} revision {} for {} {}{}: request a build",
            repo.full_name(),
            rev.number,
            key.target,
            key.precision,
            if key.batch.is_empty() { String::new() } else { format!(" batch {}", names::batch_text(&key.batch)) }
        ))
        .into()),
    }
}

async fn request_build(
    State(hub): State<Arc<Hub>>,
    headers: HeaderMap,
    UrlPath((owner, name)): UrlPath<(String, String)>,
    body: Body,
) -> ApiResult<(StatusCode, Json<BuildResponse>)> {
    let who = hub.principal(&headers).await?;
    let repo = visible_repo(&hub, &owner, &name, &who).await?;
    require(&who, Scope::Write)?;
    let req: BuildRequest = json_body(&hub, body).await?;
    let revs = hub.meta.revisions(repo.id).await?;
    let rev = revision_of(&revs, req.revision, &repo)?;
    let key = build_key(&rev.digest, &req)?;
    if let Some(a) = hub.meta.artifact(&key).await? {
        return Ok((StatusCode::OK, Json(BuildResponse { artifact: Some(a), job: None })));
    }
    let job = hub.meta.enqueue(repo.id, rev.id, &key).await?;
    tracing::info!(job = job.id, repo = repo.full_name(), target = key.target, "build queued");
    Ok((StatusCode::ACCEPTED, Json(BuildResponse { artifact: None, job: Some(job) })))
}

fn parse_id(s: &str) -> Result<i64, HubError> {
    s.parse::<i64>()
        .ok()
        .filter(|&i| i > 0)
        .ok_or_else(|| HubError::BadRequest(format!("job: '{}' is not a job id", names::clip(s))))
}

/// A job the caller sees (through its repository, or as a worker).
async fn visible_job(hub: &Hub, id: &str, who: &Option<Principal>) -> Result<Job, HubError> {
    let id = parse_id(id)?;
    let job = hub.meta.job(id).await?.ok_or_else(|| HubError::NotFound(format!("job {id}")))?;
    if who.as_ref().is_some_and(|p| p.scopes.allows(Scope::Worker)) {
        return Ok(job);
    }
    match hub.meta.repo_by_id(job.repo_id).await? {
        Some(r) if can_see(hub, &r, who).await? => Ok(job),
        _ => Err(HubError::NotFound(format!("job {id}"))),
    }
}

async fn get_job(
    State(hub): State<Arc<Hub>>,
    headers: HeaderMap,
    UrlPath(id): UrlPath<String>,
) -> ApiResult<Json<Job>> {
    let who = hub.principal(&headers).await?;
    Ok(Json(visible_job(&hub, &id, &who).await?))
}

async fn claim(State(hub): State<Arc<Hub>>, headers: HeaderMap, body: Body) -> ApiResult<Response> {
    let who = hub.principal(&headers).await?;
    require(&who, Scope::Worker)?;
    let req: ClaimRequest = json_body(&hub, body).await?;
    names::check_target(&req.target)?;
    names::check_name("worker", &req.worker)?;
    if req.compiler_version.len() > 64 {
        return Err(HubError::BadRequest("compiler_version: longer than 64 characters".into()).into());
    }
    match hub.meta.claim(&req.target, &req.compiler_version, &req.worker, hub.lease(), hub.cfg.max_attempts).await? {
        Some(j) => {
            tracing::info!(job = j.id, worker = req.worker, attempt = j.attempts, "job claimed");
            Ok(Json(j).into_response())
        }
        None => Ok(StatusCode::NO_CONTENT.into_response()),
    }
}

async fn heartbeat(
    State(hub): State<Arc<Hub>>,
    headers: HeaderMap,
    UrlPath(id): UrlPath<String>,
    body: Body,
) -> ApiResult<Json<serde_json::Value>> {
    let who = hub.principal(&headers).await?;
    require(&who, Scope::Worker)?;
    let id = parse_id(&id)?;
    let req: HeartbeatRequest = json_body(&hub, body).await?;
    names::check_name("worker", &req.worker)?;
    let j = hub.meta.heartbeat(id, &req.worker, hub.lease(), &req.log).await?;
    Ok(Json(serde_json::json!({ "id": j.id, "state": j.state, "lease_expires": j.lease_expires })))
}

async fn fail_job(
    State(hub): State<Arc<Hub>>,
    headers: HeaderMap,
    UrlPath(id): UrlPath<String>,
    body: Body,
) -> ApiResult<Json<Job>> {
    let who = hub.principal(&headers).await?;
    require(&who, Scope::Worker)?;
    let id = parse_id(&id)?;
    let req: FailRequest = json_body(&hub, body).await?;
    names::check_name("worker", &req.worker)?;
    let j = hub.meta.fail(id, &req.worker, &req.error, &req.log).await?;
    tracing::warn!(job = id, worker = req.worker, error = req.error, "job failed");
    Ok(Json(j))
}

async fn upload_artifact(
    State(hub): State<Arc<Hub>>,
    headers: HeaderMap,
    UrlPath(id): UrlPath<String>,
    Query(q): Query<BTreeMap<String, String>>,
    body: Body,
) -> ApiResult<(StatusCode, Json<Job>)> {
    let checked = async {
        let who = hub.principal(&headers).await?;
        require(&who, Scope::Worker)?;
        let id = parse_id(&id)?;
        let worker = q.get("worker").ok_or_else(|| HubError::BadRequest("worker: missing".into()))?;
        names::check_name("worker", worker)?;
        let job = hub.meta.job(id).await?.ok_or_else(|| HubError::NotFound(format!("job {id}")))?;
        // refused before the bytes are stored when the worker lost the job
        if job.state != crate::meta::JobState::Running || job.worker.as_deref() != Some(worker) {
            return Err(HubError::Conflict(format!("job {id}: not held by {worker}")));
        }
        Ok((id, worker.clone(), job))
    };
    let (id, worker, job) = match checked.await {
        Ok(v) => v,
        Err(e) => return Err(refuse_upload(body, e).await.into()),
    };
    let worker = worker.as_str();
    let info = take_upload(&hub, &headers, body, hub.cfg.max_artifact_bytes).await?;
    let m = Manifest {
        schema: SCHEMA.into(),
        artifact: BlobRef { sha256: info.digest.clone(), size: info.size },
        model_digest: job.key.model_digest.clone(),
        target: job.key.target.clone(),
        precision: job.key.precision.clone(),
        batch: job.key.batch.clone(),
        compiler_version: job.key.compiler_version.clone(),
        options: job.key.options.clone(),
        created: crate::now_ms(),
    };
    let signed: SignedManifest = hub.signer.sign(&m);
    let log = format!("artifact uploaded: sha256 {} ({} bytes), manifest signed\n", info.digest, info.size);
    let j = hub.meta.complete(id, worker, &info.digest, info.size as i64, &signed, &log).await?;
    tracing::info!(job = id, worker, digest = info.digest, "artifact published");
    Ok((StatusCode::CREATED, Json(j)))
}

/// `bytes=a-b`, `bytes=a-`, `bytes=-n` against a blob of `size` bytes: None for the whole blob
/// (no header, several ranges, or a form it does not know), or the range.
pub fn parse_range(h: &str, size: u64) -> Result<Option<Range<u64>>, HubError> {
    let Some(spec) = h.trim().strip_prefix("bytes=") else { return Ok(None) };
    if spec.contains(',') {
        return Ok(None);
    }
    let Some((a, b)) = spec.split_once('-') else { return Ok(None) };
    let (a, b) = (a.trim(), b.trim());
    let r = if a.is_empty() {
        let Ok(n) = b.parse::<u64>() else { return Ok(None) };
        if n == 0 {
            return Err(HubError::RangeNotSatisfiable(size));
        }
        size.saturating_sub(n)..size
    } else {
        let Ok(start) = a.parse::<u64>() else { return Ok(None) };
        let end = if b.is_empty() {
            size
        } else {
            let Ok(e) = b.parse::<u64>() else { return Ok(None) };
            if e < start {
                return Ok(None);
            }
            e.saturating_add(1).min(size)
        };
        start..end
    };
    if r.start >= size {
        return Err(HubError::RangeNotSatisfiable(size));
    }
    Ok(Some(r))
}

async fn download(
    State(hub): State<Arc<Hub>>,
    method: Method,
    headers: HeaderMap,
    UrlPath(digest): UrlPath<String>,
) -> ApiResult<Response> {
    let who = hub.principal(&headers).await?;
    let d = names::check_digest("digest", &digest)?;
    let (id, mut all) = viewer(&who);
    // a worker reads every model it may be asked to build
    all |= who.as_ref().is_some_and(|p| p.scopes.allows(Scope::Worker));
    if !hub.meta.blob_visible(&d, id, all).await? {
        return Err(HubError::NotFound(format!("blob {d}")).into());
    }
    let size = hub.blobs.size(&d).await?.ok_or_else(|| HubError::NotFound(format!("blob {d}")))?;
    let etag = format!("\"{d}\"");
    let mut h = HeaderMap::new();
    h.insert(header::ETAG, HeaderValue::from_str(&etag).expect("hex is a header value"));
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/octet-stream"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("private, max-age=31536000, immutable"));
    let matches = |v: &HeaderValue| v.to_str().is_ok_and(|s| s.split(',').any(|t| t.trim() == etag || t.trim() == "*"));
    if headers.get(header::IF_NONE_MATCH).is_some_and(matches) {
        return Ok((StatusCode::NOT_MODIFIED, h).into_response());
    }
    let mut range = None;
    let if_range_ok = headers.get(header::IF_RANGE).is_none_or(|v| v.to_str().is_ok_and(|s| s.trim() == etag));
    if let (Some(r), true) = (headers.get(header::RANGE), if_range_ok) {
        range = parse_range(r.to_str().unwrap_or(""), size)?;
    }
    let (status, r) = match range {
        Some(r) => {
            let v = format!("bytes {}-{}/{size}", r.start, r.end - 1);
            h.insert(header::CONTENT_RANGE, HeaderValue::from_str(&v).expect("digits are a header value"));
            (StatusCode::PARTIAL_CONTENT, r)
        }
        None => (StatusCode::OK, 0..size),
    };
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(r.end - r.start));
    if method == Method::HEAD {
        return Ok((status, h).into_response());
    }
    let stream = hub.blobs.read(&d, r).await?;
    Ok((status, h, Body::from_stream(stream)).into_response())
}

/// Records how long the handler took to answer (`Hub::latency`), by method and route pattern.
async fn timed(
    State(hub): State<Arc<Hub>>,
    path: axum::extract::MatchedPath,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let t = std::time::Instant::now();
    let route = format!("{} {}", req.method(), path.as_str());
    let r = next.run(req).await;
    hub.latency.record(&route, t.elapsed());
    r
}

async fn not_found() -> ApiError {
    ApiError(HubError::NotFound("no such route".into()))
}

/// The routes: the JSON API and the web pages.
pub fn router(hub: Arc<Hub>) -> Router {
    Router::new()
        .route("/api/v1/health", get(health))
        .route("/api/v1/key", get(key))
        .route("/api/v1/whoami", get(whoami))
        .route("/api/v1/users", post(create_user))
        .route("/api/v1/users/{name}/tokens", get(list_tokens).post(create_token))
        .route("/api/v1/users/{name}/tokens/{id}", delete(revoke_token))
        .route("/api/v1/orgs", post(create_org))
        .route("/api/v1/orgs/{org}/members", get(list_members))
        .route("/api/v1/orgs/{org}/members/{user}", put(set_member).delete(remove_member))
        .route("/api/v1/repos", get(list_repos).post(create_repo))
        .route("/api/v1/repos/{owner}/{name}", get(get_repo).delete(delete_repo))
        .route("/api/v1/repos/{owner}/{name}/revisions", post(push_revision))
        .route("/api/v1/repos/{owner}/{name}/artifact", get(get_artifact))
        .route("/api/v1/repos/{owner}/{name}/builds", post(request_build))
        .route("/api/v1/jobs/claim", post(claim))
        .route("/api/v1/jobs/{id}", get(get_job))
        .route("/api/v1/jobs/{id}/heartbeat", post(heartbeat))
        .route("/api/v1/jobs/{id}/fail", post(fail_job))
        .route("/api/v1/jobs/{id}/artifact", post(upload_artifact))
        .route("/api/v1/blobs/{digest}", get(download).head(download))
        .route("/api/v1/admin/gc", post(collect_garbage))
        .merge(crate::web::routes())
        .route_layer(axum::middleware::from_fn_with_state(hub.clone(), timed))
        .fallback(not_found)
        .with_state(hub)
}

/// Serves until `shutdown` resolves.
pub async fn serve(
    hub: Arc<Hub>,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), HubError> {
    axum::serve(listener, router(hub)).with_graceful_shutdown(shutdown).await.map_err(|e| HubError::io("serving", e))
}

/// A server on its own thread and runtime (the tests, the demo, `xforge hub serve`).
pub struct RunningServer {
    pub addr: SocketAddr,
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    /// The admin token when this start created it (the first start in a directory).
    pub admin_token: Option<String>,
    /// The server's public key (hex).
    pub key: String,
    pub hub: Arc<Hub>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<Result<(), HubError>>>,
}

impl RunningServer {
    /// Opens the storage in `cfg.dir`, binds `cfg.listen` (port 0: any free port) and serves.
    pub fn start(cfg: ServerConfig) -> Result<RunningServer, HubError> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(4)
            .enable_all()
            .thread_name("xforge-hub")
            .build()
            .map_err(|e| HubError::io("starting the runtime", e))?;
        let listen = cfg.listen.clone();
        let (hub, admin_token, listener) = rt.block_on(async move {
            let (hub, token) = Hub::open(cfg).await?;
            let l = tokio::net::TcpListener::bind(&listen)
                .await
                .map_err(|e| HubError::io(format!("binding {listen}"), e))?;
            Ok::<_, HubError>((hub, token, l))
        })?;
        let addr = listener.local_addr().map_err(|e| HubError::io("local address", e))?;
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let h = hub.clone();
        let thread = std::thread::Builder::new()
            .name("xforge-hub-server".into())
            .spawn(move || {
                rt.block_on(serve(h, listener, async move {
                    let _ = rx.await;
                }))
            })
            .map_err(|e| HubError::io("spawning the server thread", e))?;
        tracing::info!("hub listening on http://{addr}");
        Ok(RunningServer {
            addr,
            url: format!("http://{addr}"),
            admin_token,
            key: hub.signer.public_hex(),
            hub,
            stop: Some(tx),
            thread: Some(thread),
        })
    }

    /// Stops accepting, finishes the requests in flight, and returns.
    pub fn stop(mut self) -> Result<(), HubError> {
        self.shutdown()
    }

    /// Serves until SIGINT or SIGTERM, then stops gracefully.
    pub fn wait_for_signal(self) -> Result<(), HubError> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| HubError::io("runtime", e))?;
        rt.block_on(async {
            #[cfg(unix)]
            {
                let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                    .map_err(|e| HubError::io("SIGTERM handler", e))?;
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            #[cfg(not(unix))]
            let _ = tokio::signal::ctrl_c().await;
            Ok::<(), HubError>(())
        })?;
        tracing::info!("stopping");
        self.stop()
    }

    /// Waits until the server stops (an error, or never for a healthy one).
    pub fn wait(mut self) -> Result<(), HubError> {
        match self.thread.take() {
            Some(t) => t.join().map_err(|_| HubError::Internal("the server thread panicked".into()))?,
            None => Ok(()),
        }
    }

    fn shutdown(&mut self) -> Result<(), HubError> {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        match self.thread.take() {
            Some(t) => t.join().map_err(|_| HubError::Internal("the server thread panicked".into()))?,
            None => Ok(()),
        }
    }
}

impl Drop for RunningServer {
    fn drop(&mut self) {
        let _ = self.shutdown();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        assert_eq!(parse_range("bytes=0-9", 100).unwrap(), Some(0..10));
        assert_eq!(parse_range("bytes=90-", 100).unwrap(), Some(90..100));
        assert_eq!(parse_range("bytes=-10", 100).unwrap(), Some(90..100));
        assert_eq!(parse_range("bytes=95-200", 100).unwrap(), Some(95..100));
        assert!(matches!(parse_range("bytes=100-", 100), Err(HubError::RangeNotSatisfiable(100))));
        assert_eq!(parse_range("bytes=0-1,5-6", 100).unwrap(), None);
        assert_eq!(parse_range("items=0-1", 100).unwrap(), None);
        assert_eq!(parse_range("bytes=x-1", 100).unwrap(), None);
    }
}
