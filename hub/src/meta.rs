//! Metadata and the build queue: users, tokens (hashed), repositories, revisions, artifacts and
//! jobs with leases, behind [`MetaStore`]. [`SqlMeta`] implements it with one set of queries
//! (sqlx's `Any` driver, `$N` placeholders) on SQLite, the embedded default, or PostgreSQL.
//! Every claim, heartbeat and completion is one atomic statement or a transaction that starts
//! with its write, so concurrent workers never take the same job; on PostgreSQL the claim's
//! row is taken with `FOR UPDATE SKIP LOCKED`.
use crate::names::batch_text;
use crate::HubError;
use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{AnyPool, Row};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// The most log a job keeps (its tail).
pub const MAX_LOG: usize = 1 << 20;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    pub id: i64,
    pub name: String,
    pub admin: bool,
    pub created: i64,
}

/// A token as its owner sees it: never the token or its hash.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenInfo {
    pub id: i64,
    pub scopes: String,
    pub label: String,
    pub created: i64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Repo {
    pub id: i64,
    pub owner_id: i64,
    pub owner: String,
    pub name: String,
    pub private: bool,
    pub created: i64,
}

impl Repo {
    pub fn full_name(&self) -> String {
        format!("{}/{}", self.owner, self.name)
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Revision {
    pub id: i64,
    pub repo_id: i64,
    /// 1, 2, ... within the repository.
    pub number: i64,
    /// sha256 of the ONNX file.
    pub digest: String,
    pub size: i64,
    pub filename: String,
    pub created: i64,
}

/// What an artifact is keyed by.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArtifactKey {
    pub model_digest: String,
    pub target: String,
    pub precision: String,
    pub batch: Vec<u64>,
    pub compiler_version: String,
    pub options: BTreeMap<String, String>,
}

impl ArtifactKey {
    fn options_text(&self) -> String {
        serde_json::to_string(&self.options).expect("a string map serializes")
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArtifactRecord {
    pub id: i64,
    pub key: ArtifactKey,
    /// sha256 of the artifact's bytes.
    pub blob: String,
    pub size: i64,
    pub manifest: crate::SignedManifest,
    pub created: i64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    Queued,
    Running,
    Done,
    Failed,
}

impl JobState {
    pub fn name(self) -> &'static str {
        match self {
            JobState::Queued => "queued",
            JobState::Running => "running",
            JobState::Done => "done",
            JobState::Failed => "failed",
        }
    }

    fn parse(s: &str) -> Result<JobState, HubError> {
        Ok(match s {
            "queued" => JobState::Queued,
            "running" => JobState::Running,
            "done" => JobState::Done,
            "failed" => JobState::Failed,
            _ => return Err(HubError::Db(format!("jobs.state: unknown state {s}"))),
        })
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Job {
    pub id: i64,
    pub repo_id: i64,
    /// `owner/name`.
    pub repo: String,
    pub revision: i64,
    pub key: ArtifactKey,
    pub state: JobState,
    pub worker: Option<String>,
    pub lease_expires: Option<i64>,
    pub attempts: i64,
    pub error: Option<String>,
    pub log: String,
    pub artifact_id: Option<i64>,
    pub created: i64,
    pub updated: i64,
}

/// A member's role in an organization: `read` sees its private repositories, `write` also
/// pushes and builds, `admin` also manages members.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Read,
    Write,
    Admin,
}

impl Role {
    pub fn name(self) -> &'static str {
        match self {
            Role::Read => "read",
            Role::Write => "write",
            Role::Admin => "admin",
        }
    }

    pub fn parse(s: &str) -> Result<Role, HubError> {
        Ok(match s {
            "read" => Role::Read,
            "write" => Role::Write,
            "admin" => Role::Admin,
            _ => return Err(HubError::BadRequest(format!("role: '{s}' is not read, write or admin"))),
        })
    }
}

/// Storage of everything but blobs.
#[async_trait]
pub trait MetaStore: Send + Sync + 'static {
    async fn create_user(&self, name: &str, admin: bool) -> Result<User, HubError>;
    async fn user(&self, name: &str) -> Result<Option<User>, HubError>;
    async fn count_users(&self) -> Result<i64, HubError>;
    /// Stores a token's hash and scopes (`read,write`); returns its id.
    async fn add_token(&self, user_id: i64, hash: &str, scopes: &str, label: &str) -> Result<i64, HubError>;
    /// The user and scopes of a token hash.
    async fn token(&self, hash: &str) -> Result<Option<(User, String)>, HubError>;
    /// A user's tokens, oldest first.
    async fn tokens(&self, user_id: i64) -> Result<Vec<TokenInfo>, HubError>;
    /// Deletes a user's token; whether there was one.
    async fn delete_token(&self, user_id: i64, id: i64) -> Result<bool, HubError>;

    /// An organization: a name that owns repositories, with `creator` as its first admin.
    async fn create_org(&self, name: &str, creator: i64) -> Result<User, HubError>;
    async fn is_org(&self, id: i64) -> Result<bool, HubError>;
    /// Sets a member's role (adds the member); `remove_member` takes one out.
    async fn set_member(&self, org: i64, user: i64, role: Role) -> Result<(), HubError>;
    async fn remove_member(&self, org: i64, user: i64) -> Result<bool, HubError>;
    /// The role of `user` in `org`, if a member.
    async fn role(&self, org: i64, user: i64) -> Result<Option<Role>, HubError>;
    /// (member name, role), by name.
    async fn members(&self, org: i64) -> Result<Vec<(String, Role)>, HubError>;

    async fn create_repo(&self, owner_id: i64, name: &str, private: bool) -> Result<Repo, HubError>;
    async fn repo(&self, owner: &str, name: &str) -> Result<Option<Repo>, HubError>;
    async fn repo_by_id(&self, id: i64) -> Result<Option<Repo>, HubError>;
    /// Repositories `viewer` sees (public ones, its own, every one with `all`), names containing
    /// `query`, at most `limit`.
    async fn list_repos(
        &self,
        viewer: Option<i64>,
        all: bool,
        query: Option<&str>,
        limit: i64,
    ) -> Result<Vec<Repo>, HubError>;
    /// Deletes a repository with its revisions and jobs; returns the blobs nothing references
    /// any more (the caller removes them), the artifacts of models no repository holds included.
    async fn delete_repo(&self, id: i64) -> Result<Vec<String>, HubError>;

    async fn add_revision(&self, repo_id: i64, digest: &str, size: i64, filename: &str) -> Result<Revision, HubError>;
    /// Newest first.
    async fn revisions(&self, repo_id: i64) -> Result<Vec<Revision>, HubError>;
    /// Whether a revision or an artifact of a repository `viewer` sees references the blob.
    async fn blob_visible(&self, digest: &str, viewer: Option<i64>, all: bool) -> Result<bool, HubError>;
    /// Whether a revision or an artifact names the blob.
    async fn blob_referenced(&self, digest: &str) -> Result<bool, HubError>;

    async fn artifact(&self, key: &ArtifactKey) -> Result<Option<ArtifactRecord>, HubError>;
    async fn artifacts_of_model(&self, model_digest: &str) -> Result<Vec<ArtifactRecord>, HubError>;

    /// Queues a build, or returns the queued or running job of the same key.
    async fn enqueue(&self, repo_id: i64, revision_id: i64, key: &ArtifactKey) -> Result<Job, HubError>;
    async fn job(&self, id: i64) -> Result<Option<Job>, HubError>;
    async fn jobs_of_repo(&self, repo_id: i64, limit: i64) -> Result<Vec<Job>, HubError>;
    /// Takes the oldest queued job for (target, compiler version), or a running one whose lease
    /// expired; a job that lost `max_attempts` leases fails instead.
    async fn claim(
        &self,
        target: &str,
        compiler_version: &str,
        worker: &str,
        lease: Duration,
        max_attempts: u32,
    ) -> Result<Option<Job>, HubError>;
    /// Extends the lease of a job `worker` holds and appends to its log; `Conflict` when it does
    /// not hold it (any more).
    async fn heartbeat(&self, id: i64, worker: &str, lease: Duration, log: &str) -> Result<Job, HubError>;
    /// Records the artifact (or finds the one of the same key) and marks the job done.
    async fn complete(
        &self,
        id: i64,
        worker: &str,
        blob: &str,
        size: i64,
        manifest: &crate::SignedManifest,
        log: &str,
    ) -> Result<Job, HubError>;
    async fn fail(&self, id: i64, worker: &str, error: &str, log: &str) -> Result<Job, HubError>;
}

const SCHEMA_SQLITE: &str = r#"
CREATE TABLE IF NOT EXISTS users (
    id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, admin INTEGER NOT NULL, created INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS tokens (
    id INTEGER PRIMARY KEY, user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    hash TEXT NOT NULL UNIQUE, scopes TEXT NOT NULL, label TEXT NOT NULL, created INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS repos (
    id INTEGER PRIMARY KEY, owner_id INTEGER NOT NULL REFERENCES users(id), name TEXT NOT NULL,
    private INTEGER NOT NULL, created INTEGER NOT NULL, UNIQUE(owner_id, name));
CREATE TABLE IF NOT EXISTS orgs (id INTEGER PRIMARY KEY REFERENCES users(id) ON DELETE CASCADE);
CREATE TABLE IF NOT EXISTS members (
    org_id INTEGER NOT NULL REFERENCES orgs(id) ON DELETE CASCADE,
    user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    role TEXT NOT NULL, created INTEGER NOT NULL, PRIMARY KEY (org_id, user_id));
CREATE INDEX IF NOT EXISTS members_user ON members(user_id);
CREATE TABLE IF NOT EXISTS revisions (
    id INTEGER PRIMARY KEY, repo_id INTEGER NOT NULL REFERENCES repos(id) ON DELETE CASCADE,
    number INTEGER NOT NULL, digest TEXT NOT NULL, size INTEGER NOT NULL, filename TEXT NOT NULL,
    created INTEGER NOT NULL, UNIQUE(repo_id, number));
CREATE INDEX IF NOT EXISTS revisions_digest ON revisions(digest);
CREATE TABLE IF NOT EXISTS artifacts (
    id INTEGER PRIMARY KEY, model_digest TEXT NOT NULL, target TEXT NOT NULL, precision TEXT NOT NULL,
    batch TEXT NOT NULL, compiler_version TEXT NOT NULL, options TEXT NOT NULL, blob TEXT NOT NULL,
    size INTEGER NOT NULL, manifest TEXT NOT NULL, signature TEXT NOT NULL, key TEXT NOT NULL,
    created INTEGER NOT NULL,
    UNIQUE(model_digest, target, precision, batch, compiler_version, options));
CREATE INDEX IF NOT EXISTS artifacts_blob ON artifacts(blob);
CREATE TABLE IF NOT EXISTS jobs (
    id INTEGER PRIMARY KEY, repo_id INTEGER NOT NULL REFERENCES repos(id) ON DELETE CASCADE,
    revision_id INTEGER NOT NULL, model_digest TEXT NOT NULL, target TEXT NOT NULL,
    precision TEXT NOT NULL, batch TEXT NOT NULL, compiler_version TEXT NOT NULL, options TEXT NOT NULL,
    state TEXT NOT NULL, worker TEXT, lease_expires INTEGER, attempts INTEGER NOT NULL DEFAULT 0,
    error TEXT, log TEXT NOT NULL DEFAULT '', artifact_id INTEGER, created INTEGER NOT NULL,
    updated INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS jobs_claim ON jobs(state, target, compiler_version);
CREATE UNIQUE INDEX IF NOT EXISTS jobs_live ON jobs(model_digest, target, precision, batch, compiler_version, options)
    WHERE state IN ('queued', 'running');
"#;

const SCHEMA_POSTGRES: &str = r#"
CREATE TABLE IF NOT EXISTS users (
    id BIGSERIAL PRIMARY KEY, name TEXT NOT NULL UNIQUE, admin BIGINT NOT NULL, created BIGINT NOT NULL);
CREATE TABLE IF NOT EXISTS tokens (
    id BIGSERIAL PRIMARY KEY, user_id BIGINT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    hash TEXT NOT NULL UNIQUE, scopes TEXT NOT NULL, label TEXT NOT NULL, created BIGINT NOT NULL);
CREATE TABLE IF NOT EXISTS repos (
    id BIGSERIAL PRIMARY KEY, owner_id BIGINT NOT NULL REFERENCES users(id), name TEXT NOT NULL,
    private BIGINT NOT NULL, created BIGINT NOT NULL, UNIQUE(owner_id, name));
CREATE TABLE IF NOT EXISTS orgs (id BIGINT PRIMARY KEY REFERENCES users(id) ON DELETE CASCADE);
CREATE TABLE IF NOT EXISTS members (
    org_id BIGINT NOT NULL REFERENCES orgs(id) ON DELETE CASCADE,
    user_id BIGINT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    role TEXT NOT NULL, created BIGINT NOT NULL, PRIMARY KEY (org_id, user_id));
CREATE INDEX IF NOT EXISTS members_user ON members(user_id);
CREATE TABLE IF NOT EXISTS revisions (
    id BIGSERIAL PRIMARY KEY, repo_id BIGINT NOT NULL REFERENCES repos(id) ON DELETE CASCADE,
    number BIGINT NOT NULL, digest TEXT NOT NULL, size BIGINT NOT NULL, filename TEXT NOT NULL,
    created BIGINT NOT NULL, UNIQUE(repo_id, number));
CREATE INDEX IF NOT EXISTS revisions_digest ON revisions(digest);
CREATE TABLE IF NOT EXISTS artifacts (
    id BIGSERIAL PRIMARY KEY, model_digest TEXT NOT NULL, target TEXT NOT NULL, precision TEXT NOT NULL,
    batch TEXT NOT NULL, compiler_version TEXT NOT NULL, options TEXT NOT NULL, blob TEXT NOT NULL,
    size BIGINT NOT NULL, manifest TEXT NOT NULL, signature TEXT NOT NULL, key TEXT NOT NULL,
    created BIGINT NOT NULL,
    UNIQUE(model_digest, target, precision, batch, compiler_version, options));
CREATE INDEX IF NOT EXISTS artifacts_blob ON artifacts(blob);
CREATE TABLE IF NOT EXISTS jobs (
    id BIGSERIAL PRIMARY KEY, repo_id BIGINT NOT NULL REFERENCES repos(id) ON DELETE CASCADE,
    revision_id BIGINT NOT NULL, model_digest TEXT NOT NULL, target TEXT NOT NULL,
    precision TEXT NOT NULL, batch TEXT NOT NULL, compiler_version TEXT NOT NULL, options TEXT NOT NULL,
    state TEXT NOT NULL, worker TEXT, lease_expires BIGINT, attempts BIGINT NOT NULL DEFAULT 0,
    error TEXT, log TEXT NOT NULL DEFAULT '', artifact_id BIGINT, created BIGINT NOT NULL,
    updated BIGINT NOT NULL);
CREATE INDEX IF NOT EXISTS jobs_claim ON jobs(state, target, compiler_version);
CREATE UNIQUE INDEX IF NOT EXISTS jobs_live ON jobs(model_digest, target, precision, batch, compiler_version, options)
    WHERE state IN ('queued', 'running');
"#;

const JOB_COLS: &str = "j.id, j.repo_id, u.name || '/' || r.name AS repo, j.revision_id, j.model_digest, j.target, \
    j.precision, j.batch, j.compiler_version, j.options, j.state, j.worker, j.lease_expires, j.attempts, j.error, \
    j.log, j.artifact_id, j.created, j.updated";

/// Which database a [`SqlMeta`] talks to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
}

/// The metadata store on SQLite (WAL, synchronous=FULL: an acknowledged write survives a crash)
/// or PostgreSQL, through sqlx.
pub struct SqlMeta {
    pool: AnyPool,
    dialect: Dialect,
    /// SQLite: one writer at a time, queued here, writing through a connection of its own. SQLite itself lets one connection write and
    /// makes the others retry in its busy handler, which sleeps (1 ms, 2 ms, 5 ms … 100 ms) while
    /// holding a pooled connection: under load the readers then waited for connections held by
    /// sleeping writers. A writer waiting here holds no connection. (Another process writing the
    /// same file is still waited for by `busy_timeout`.) None on PostgreSQL (row locks).
    writer: Option<(Arc<tokio::sync::Mutex<()>>, AnyPool)>,
    /// SQLite: revisions waiting for the next group commit (see `add_revision`).
    pending: Arc<std::sync::Mutex<Vec<PendingRevision>>>,
}

/// A revision to record, and who waits for it.
struct PendingRevision {
    repo_id: i64,
    digest: String,
    size: i64,
    filename: String,
    done: tokio::sync::oneshot::Sender<Result<Revision, HubError>>,
}

const INSERT_REVISION: &str = "INSERT INTO revisions (repo_id, number, digest, size, filename, created) \
     VALUES ($1, (SELECT coalesce(max(number), 0) + 1 FROM revisions WHERE repo_id = $1), $2, $3, $4, $5) \
     RETURNING id, repo_id, number, digest, size, filename, created";

/// Records `batch` in one transaction (one fsync for all) and answers each waiter: its revision,
/// or the error of its own statement (a failed INSERT undoes only itself), or the commit's.
async fn write_revisions(pool: AnyPool, batch: Vec<PendingRevision>) {
    let mut tx = match pool.begin().await {
        Ok(tx) => tx,
        Err(e) => {
            for p in batch {
                let _ = p.done.send(Err(HubError::Db(e.to_string())));
            }
            return;
        }
    };
    let mut results = Vec::with_capacity(batch.len());
    for p in &batch {
        let r = sqlx::query(INSERT_REVISION)
            .bind(p.repo_id)
            .bind(&p.digest)
            .bind(p.size)
            .bind(&p.filename)
            .bind(crate::now_ms())
            .fetch_one(&mut *tx)
            .await;
        results.push(r.map_err(HubError::from).and_then(|r| revision_row(&r)));
    }
    match tx.commit().await {
        Ok(()) => {
            for (p, r) in batch.into_iter().zip(results) {
                let _ = p.done.send(r);
            }
        }
        Err(e) => {
            for p in batch {
                let _ = p.done.send(Err(HubError::Db(e.to_string())));
            }
        }
    }
}

/// A pool of at most `max` connections (SQLite's pragmas set on each).
async fn connect(url: &str, dialect: Dialect, max: u32) -> Result<AnyPool, HubError> {
    Ok(AnyPoolOptions::new()
        .max_connections(max)
        .after_connect(move |conn, _| {
            Box::pin(async move {
                if dialect == Dialect::Sqlite {
                    sqlx::raw_sql(
                        "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA busy_timeout = 10000; \
                         PRAGMA foreign_keys = ON;",
                    )
                    .execute(conn)
                    .await?;
                }
                Ok(())
            })
        })
        .connect(url)
        .await?)
}

fn user_row(r: &AnyRow) -> Result<User, HubError> {
    Ok(User {
        id: r.try_get("id")?,
        name: r.try_get("name")?,
        admin: r.try_get::<i64, _>("admin")? != 0,
        created: r.try_get("created")?,
    })
}

fn repo_row(r: &AnyRow) -> Result<Repo, HubError> {
    Ok(Repo {
        id: r.try_get("id")?,
        owner_id: r.try_get("owner_id")?,
        owner: r.try_get("owner")?,
        name: r.try_get("name")?,
        private: r.try_get::<i64, _>("private")? != 0,
        created: r.try_get("created")?,
    })
}

fn revision_row(r: &AnyRow) -> Result<Revision, HubError> {
    Ok(Revision {
        id: r.try_get("id")?,
        repo_id: r.try_get("repo_id")?,
        number: r.try_get("number")?,
        digest: r.try_get("digest")?,
        size: r.try_get("size")?,
        filename: r.try_get("filename")?,
        created: r.try_get("created")?,
    })
}

fn key_row(r: &AnyRow) -> Result<ArtifactKey, HubError> {
    let batch: String = r.try_get("batch")?;
    let options: String = r.try_get("options")?;
    Ok(ArtifactKey {
        model_digest: r.try_get("model_digest")?,
        target: r.try_get("target")?,
        precision: r.try_get("precision")?,
        batch: crate::names::parse_batch(&batch).map_err(|e| HubError::Db(e.to_string()))?,
        compiler_version: r.try_get("compiler_version")?,
        options: serde_json::from_str(&options).map_err(|e| HubError::Db(format!("options: {e}")))?,
    })
}

fn artifact_row(r: &AnyRow) -> Result<ArtifactRecord, HubError> {
    Ok(ArtifactRecord {
        id: r.try_get("id")?,
        key: key_row(r)?,
        blob: r.try_get("blob")?,
        size: r.try_get("size")?,
        manifest: crate::SignedManifest {
            manifest: r.try_get("manifest")?,
            signature: r.try_get("signature")?,
            key: r.try_get("key")?,
        },
        created: r.try_get("created")?,
    })
}

fn job_row(r: &AnyRow) -> Result<Job, HubError> {
    let state: String = r.try_get("state")?;
    Ok(Job {
        id: r.try_get("id")?,
        repo_id: r.try_get("repo_id")?,
        repo: r.try_get("repo")?,
        revision: r.try_get("revision_id")?,
        key: key_row(r)?,
        state: JobState::parse(&state)?,
        worker: r.try_get("worker")?,
        lease_expires: r.try_get("lease_expires")?,
        attempts: r.try_get("attempts")?,
        error: r.try_get("error")?,
        log: r.try_get("log")?,
        artifact_id: r.try_get("artifact_id")?,
        created: r.try_get("created")?,
        updated: r.try_get("updated")?,
    })
}

fn unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.is_unique_violation())
}

/// The last `MAX_LOG` bytes of `s`, cut at a character boundary.
fn log_tail(s: &str) -> &str {
    if s.len() <= MAX_LOG {
        return s;
    }
    let mut i = s.len() - MAX_LOG;
    while !s.is_char_boundary(i) {
        i += 1;
    }
    &s[i..]
}

impl SqlMeta {
    /// The embedded default: a SQLite file.
    pub async fn open_sqlite(path: &Path) -> Result<SqlMeta, HubError> {
        let p = path.to_str().ok_or_else(|| HubError::Config(format!("{}: not a UTF-8 path", path.display())))?;
        SqlMeta::open(&format!("sqlite://{p}?mode=rwc")).await
    }

    /// `sqlite://PATH?mode=rwc` or `postgres://USER[:PASSWORD]@HOST:PORT/DB`.
    pub async fn open(url: &str) -> Result<SqlMeta, HubError> {
        sqlx::any::install_default_drivers();
        let dialect = if url.starts_with("sqlite:") {
            Dialect::Sqlite
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            Dialect::Postgres
        } else {
            return Err(HubError::Config("database: a sqlite:// or postgres:// URL".into()));
        };
        let pool = connect(url, dialect, if dialect == Dialect::Sqlite { 8 } else { 16 }).await?;
        let schema = if dialect == Dialect::Sqlite { SCHEMA_SQLITE } else { SCHEMA_POSTGRES };
        if dialect == Dialect::Postgres {
            // one schema creation at a time (servers starting together)
            let mut tx = pool.begin().await?;
            sqlx::query("SELECT pg_advisory_xact_lock(7243)").execute(&mut *tx).await?;
            sqlx::raw_sql(schema).execute(&mut *tx).await?;
            tx.commit().await?;
        } else {
            sqlx::raw_sql(schema).execute(&pool).await?;
        }
        let writer = match dialect {
            Dialect::Sqlite => Some((Arc::new(tokio::sync::Mutex::new(())), connect(url, dialect, 1).await?)),
            Dialect::Postgres => None,
        };
        Ok(SqlMeta { pool, dialect, writer, pending: Default::default() })
    }

    pub fn dialect(&self) -> Dialect {
        self.dialect
    }

    /// The turn to write (SQLite; nothing to wait for on PostgreSQL): held until the write's
    /// statement or transaction has committed.
    async fn writing(&self) -> Option<tokio::sync::MutexGuard<'_, ()>> {
        match &self.writer {
            Some((m, _)) => Some(m.lock().await),
            None => None,
        }
    }

    /// Where writes go: SQLite's one writing connection (free whenever `writing` is held, so a
    /// write never waits for a reader's connection), PostgreSQL's pool.
    fn wpool(&self) -> &AnyPool {
        self.writer.as_ref().map_or(&self.pool, |(_, p)| p)
    }

    /// The pool, for tests that reach under the API (tampering with stored rows).
    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    async fn job_log_tail(&self, id: i64) -> Result<(), HubError> {
        // keep the log bounded: cut to its tail when it grew past MAX_LOG
        let row = sqlx::query("SELECT log FROM jobs WHERE id = $1 AND length(log) > $2")
            .bind(id)
            .bind(MAX_LOG as i64)
            .fetch_optional(self.wpool())
            .await?;
        if let Some(r) = row {
            let log: String = r.try_get("log")?;
            sqlx::query("UPDATE jobs SET log = $1 WHERE id = $2")
                .bind(log_tail(&log))
                .bind(id)
                .execute(self.wpool())
                .await?;
        }
        Ok(())
    }

    async fn job_or_conflict(&self, id: i64, worker: &str) -> HubError {
        match self.job(id).await {
            Ok(Some(j)) => HubError::Conflict(format!(
                "job {id}: held by {} ({}), not by {worker}",
                j.worker.as_deref().unwrap_or("no worker"),
                j.state.name()
            )),
            Ok(None) => HubError::NotFound(format!("job {id}")),
            Err(e) => e,
        }
    }
}

#[async_trait]
impl MetaStore for SqlMeta {
    async fn create_user(&self, name: &str, admin: bool) -> Result<User, HubError> {
        let _w = self.writing().await;
        let r = sqlx::query(
            "INSERT INTO users (name, admin, created) VALUES ($1, $2, $3) RETURNING id, name, admin, created",
        )
        .bind(name)
        .bind(admin as i64)
        .bind(crate::now_ms())
        .fetch_one(self.wpool())
        .await
        .map_err(|e| {
            if unique_violation(&e) {
                HubError::Conflict(format!("user {name} exists"))
            } else {
                e.into()
            }
        })?;
        user_row(&r)
    }

    async fn user(&self, name: &str) -> Result<Option<User>, HubError> {
        let r = sqlx::query("SELECT id, name, admin, created FROM users WHERE name = $1")
            .bind(name)
            .fetch_optional(&self.pool)
            .await?;
        r.as_ref().map(user_row).transpose()
    }

    async fn count_users(&self) -> Result<i64, HubError> {
        Ok(sqlx::query("SELECT count(*) AS n FROM users").fetch_one(&self.pool).await?.try_get("n")?)
    }

    async fn add_token(&self, user_id: i64, hash: &str, scopes: &str, label: &str) -> Result<i64, HubError> {
        let _w = self.writing().await;
        let r = sqlx::query(
            "INSERT INTO tokens (user_id, hash, scopes, label, created) VALUES ($1, $2, $3, $4, $5) RETURNING id",
        )
        .bind(user_id)
        .bind(hash)
        .bind(scopes)
        .bind(label)
        .bind(crate::now_ms())
        .fetch_one(self.wpool())
        .await?;
        Ok(r.try_get("id")?)
    }

    async fn tokens(&self, user_id: i64) -> Result<Vec<TokenInfo>, HubError> {
        let rows =
            sqlx::query("SELECT id, scopes, label, created FROM tokens WHERE user_id = $1 ORDER BY id LIMIT 1000")
                .bind(user_id)
                .fetch_all(&self.pool)
                .await?;
        rows.iter()
            .map(|r| {
                Ok(TokenInfo {
                    id: r.try_get("id")?,
                    scopes: r.try_get("scopes")?,
                    label: r.try_get("label")?,
                    created: r.try_get("created")?,
                })
            })
            .collect()
    }

    async fn delete_token(&self, user_id: i64, id: i64) -> Result<bool, HubError> {
        let _w = self.writing().await;
        let r = sqlx::query("DELETE FROM tokens WHERE user_id = $1 AND id = $2")
            .bind(user_id)
            .bind(id)
            .execute(self.wpool())
            .await?;
        Ok(r.rows_affected() > 0)
    }

    async fn token(&self, hash: &str) -> Result<Option<(User, String)>, HubError> {
        let r = sqlx::query(
            "SELECT u.id, u.name, u.admin, u.created, t.scopes FROM tokens t JOIN users u ON u.id = t.user_id WHERE t.hash = $1",
        )
        .bind(hash)
        .fetch_optional(&self.pool)
        .await?;
        match r {
            Some(r) => Ok(Some((user_row(&r)?, r.try_get("scopes")?))),
            None => Ok(None),
        }
    }

    async fn create_org(&self, name: &str, creator: i64) -> Result<User, HubError> {
        let _w = self.writing().await;
        let mut tx = self.wpool().begin().await?;
        let r = sqlx::query(
            "INSERT INTO users (name, admin, created) VALUES ($1, 0, $2) RETURNING id, name, admin, created",
        )
        .bind(name)
        .bind(crate::now_ms())
        .fetch_one(&mut *tx)
        .await
        .map_err(|e| {
            if unique_violation(&e) {
                HubError::Conflict(format!("the name {name} is taken"))
            } else {
                e.into()
            }
        })?;
        let org = user_row(&r)?;
        sqlx::query("INSERT INTO orgs (id) VALUES ($1)").bind(org.id).execute(&mut *tx).await?;
        sqlx::query("INSERT INTO members (org_id, user_id, role, created) VALUES ($1, $2, $3, $4)")
            .bind(org.id)
            .bind(creator)
            .bind(Role::Admin.name())
            .bind(crate::now_ms())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(org)
    }

    async fn is_org(&self, id: i64) -> Result<bool, HubError> {
        Ok(sqlx::query("SELECT 1 FROM orgs WHERE id = $1").bind(id).fetch_optional(&self.pool).await?.is_some())
    }

    async fn set_member(&self, org: i64, user: i64, role: Role) -> Result<(), HubError> {
        let _w = self.writing().await;
        sqlx::query(
            "INSERT INTO members (org_id, user_id, role, created) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (org_id, user_id) DO UPDATE SET role = excluded.role",
        )
        .bind(org)
        .bind(user)
        .bind(role.name())
        .bind(crate::now_ms())
        .execute(self.wpool())
        .await?;
        Ok(())
    }

    async fn remove_member(&self, org: i64, user: i64) -> Result<bool, HubError> {
        let _w = self.writing().await;
        let r = sqlx::query("DELETE FROM members WHERE org_id = $1 AND user_id = $2")
            .bind(org)
            .bind(user)
            .execute(self.wpool())
            .await?;
        Ok(r.rows_affected() > 0)
    }

    async fn role(&self, org: i64, user: i64) -> Result<Option<Role>, HubError> {
        let r = sqlx::query("SELECT role FROM members WHERE org_id = $1 AND user_id = $2")
            .bind(org)
            .bind(user)
            .fetch_optional(&self.pool)
            .await?;
        r.map(|r| Role::parse(&r.try_get::<String, _>("role")?)).transpose()
    }

    async fn members(&self, org: i64) -> Result<Vec<(String, Role)>, HubError> {
        let rows = sqlx::query(
            "SELECT u.name, m.role FROM members m JOIN users u ON u.id = m.user_id WHERE m.org_id = $1 ORDER BY u.name LIMIT 10000",
        )
        .bind(org)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(|r| Ok((r.try_get("name")?, Role::parse(&r.try_get::<String, _>("role")?)?))).collect()
    }

    async fn create_repo(&self, owner_id: i64, name: &str, private: bool) -> Result<Repo, HubError> {
        let _w = self.writing().await;
        let r =
            sqlx::query("INSERT INTO repos (owner_id, name, private, created) VALUES ($1, $2, $3, $4) RETURNING id")
                .bind(owner_id)
                .bind(name)
                .bind(private as i64)
                .bind(crate::now_ms())
                .fetch_one(self.wpool())
                .await
                .map_err(|e| {
                    if unique_violation(&e) {
                        HubError::Conflict(format!("repository {name} exists"))
                    } else {
                        e.into()
                    }
                })?;
        let id: i64 = r.try_get("id")?;
        self.repo_by_id(id).await?.ok_or_else(|| HubError::Db("a repository vanished after its insert".into()))
    }

    async fn repo(&self, owner: &str, name: &str) -> Result<Option<Repo>, HubError> {
        let r = sqlx::query(
            "SELECT r.id, r.owner_id, u.name AS owner, r.name, r.private, r.created FROM repos r JOIN users u ON u.id = r.owner_id \
             WHERE u.name = $1 AND r.name = $2",
        )
        .bind(owner)
        .bind(name)
        .fetch_optional(&self.pool)
        .await?;
        r.as_ref().map(repo_row).transpose()
    }

    async fn repo_by_id(&self, id: i64) -> Result<Option<Repo>, HubError> {
        let r = sqlx::query(
            "SELECT r.id, r.owner_id, u.name AS owner, r.name, r.private, r.created FROM repos r JOIN users u ON u.id = r.owner_id \
             WHERE r.id = $1",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        r.as_ref().map(repo_row).transpose()
    }

    async fn list_repos(
        &self,
        viewer: Option<i64>,
        all: bool,
        query: Option<&str>,
        limit: i64,
    ) -> Result<Vec<Repo>, HubError> {
        let pattern = query.map(|q| format!("%{}%", q.replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_")));
        let rows = sqlx::query(
            "SELECT r.id, r.owner_id, u.name AS owner, r.name, r.private, r.created FROM repos r JOIN users u ON u.id = r.owner_id \
             WHERE (r.private = 0 OR r.owner_id = $1 OR $2 OR r.owner_id IN (SELECT org_id FROM members WHERE user_id = $1)) AND ($3 IS NULL OR (u.name || '/' || r.name) LIKE $4 ESCAPE '\\') \
             ORDER BY u.name, r.name LIMIT $5",
        )
        .bind(viewer.unwrap_or(-1))
        .bind(all)
        .bind(pattern.as_deref())
        .bind(pattern.as_deref())
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(repo_row).collect()
    }

    async fn delete_repo(&self, id: i64) -> Result<Vec<String>, HubError> {
        let _w = self.writing().await;
        let mut tx = self.wpool().begin().await?;
        // the write first: the transaction takes SQLite's write lock before it reads
        let digests: Vec<String> = sqlx::query("DELETE FROM revisions WHERE repo_id = $1 RETURNING digest")
            .bind(id)
            .fetch_all(&mut *tx)
            .await?
            .iter()
            .map(|r| r.try_get("digest"))
            .collect::<Result<_, _>>()?;
        sqlx::query("DELETE FROM jobs WHERE repo_id = $1").bind(id).execute(&mut *tx).await?;
        sqlx::query("DELETE FROM repos WHERE id = $1").bind(id).execute(&mut *tx).await?;
        let mut orphans = vec![];
        for d in digests {
            let still = sqlx::query("SELECT 1 FROM revisions WHERE digest = $1 LIMIT 1")
                .bind(&d)
                .fetch_optional(&mut *tx)
                .await?;
            if still.is_some() {
                continue;
            }
            // no repository holds the model: its artifacts go too
            let blobs: Vec<String> = sqlx::query("DELETE FROM artifacts WHERE model_digest = $1 RETURNING blob")
                .bind(&d)
                .fetch_all(&mut *tx)
                .await?
                .iter()
                .map(|r| r.try_get("blob"))
                .collect::<Result<_, _>>()?;
            orphans.push(d);
            orphans.extend(blobs);
        }
        let mut out = vec![];
        for d in orphans {
            let used = sqlx::query(
                "SELECT 1 FROM revisions WHERE digest = $1 UNION ALL SELECT 1 FROM artifacts WHERE blob = $1 LIMIT 1",
            )
            .bind(&d)
            .fetch_optional(&mut *tx)
            .await?;
            if used.is_none() && !out.contains(&d) {
                out.push(d);
            }
        }
        tx.commit().await?;
        Ok(out)
    }

    async fn add_revision(&self, repo_id: i64, digest: &str, size: i64, filename: &str) -> Result<Revision, HubError> {
        let Some((turn, wpool)) = &self.writer else {
            let r = sqlx::query(INSERT_REVISION)
                .bind(repo_id)
                .bind(digest)
                .bind(size)
                .bind(filename)
                .bind(crate::now_ms())
                .fetch_one(&self.pool)
                .await?;
            return revision_row(&r);
        };
        // SQLite, group commit: the pushes waiting for the writer's turn are recorded by the
        // transaction of whichever gets the turn, one fsync for all (synchronous=FULL: each is
        // durable when answered). The write runs in a task of its own, so that a request
        // dropped while it writes does not take the others' revisions with it.
        let (done, mut answer) = tokio::sync::oneshot::channel();
        self.pending.lock().unwrap_or_else(|e| e.into_inner()).push(PendingRevision {
            repo_id,
            digest: digest.to_string(),
            size,
            filename: filename.to_string(),
            done,
        });
        let turn = turn.clone().lock_owned().await;
        if let Ok(r) = answer.try_recv() {
            // written by the commit that held the turn while this one waited
            return r;
        }
        let batch = std::mem::take(&mut *self.pending.lock().unwrap_or_else(|e| e.into_inner()));
        let wpool = wpool.clone();
        tokio::spawn(async move {
            write_revisions(wpool, batch).await;
            drop(turn);
        });
        answer.await.map_err(|_| HubError::Internal("the group commit of revisions stopped".into()))?
    }

    async fn revisions(&self, repo_id: i64) -> Result<Vec<Revision>, HubError> {
        let rows = sqlx::query(
            "SELECT id, repo_id, number, digest, size, filename, created FROM revisions WHERE repo_id = $1 ORDER BY number DESC LIMIT 1000",
        )
        .bind(repo_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(revision_row).collect()
    }

    async fn blob_visible(&self, digest: &str, viewer: Option<i64>, all: bool) -> Result<bool, HubError> {
        let r = sqlx::query(
            "SELECT 1 FROM revisions v JOIN repos r ON r.id = v.repo_id \
             WHERE (v.digest = $1 OR v.digest IN (SELECT model_digest FROM artifacts WHERE blob = $1)) \
             AND (r.private = 0 OR r.owner_id = $2 OR $3 OR r.owner_id IN (SELECT org_id FROM members WHERE user_id = $2)) LIMIT 1",
        )
        .bind(digest)
        .bind(viewer.unwrap_or(-1))
        .bind(all)
        .fetch_optional(&self.pool)
        .await?;
        Ok(r.is_some())
    }

    async fn blob_referenced(&self, digest: &str) -> Result<bool, HubError> {
        let r = sqlx::query(
            "SELECT 1 FROM revisions WHERE digest = $1 UNION ALL SELECT 1 FROM artifacts WHERE blob = $1 LIMIT 1",
        )
        .bind(digest)
        .fetch_optional(&self.pool)
        .await?;
        Ok(r.is_some())
    }

    async fn artifact(&self, key: &ArtifactKey) -> Result<Option<ArtifactRecord>, HubError> {
        let r = sqlx::query(
            "SELECT * FROM artifacts WHERE model_digest = $1 AND target = $2 AND precision = $3 AND batch = $4 \
             AND compiler_version = $5 AND options = $6",
        )
        .bind(&key.model_digest)
        .bind(&key.target)
        .bind(&key.precision)
        .bind(batch_text(&key.batch))
        .bind(&key.compiler_version)
        .bind(key.options_text())
        .fetch_optional(&self.pool)
        .await?;
        r.as_ref().map(artifact_row).transpose()
    }

    async fn artifacts_of_model(&self, model_digest: &str) -> Result<Vec<ArtifactRecord>, HubError> {
        let rows =
            sqlx::query("SELECT * FROM artifacts WHERE model_digest = $1 ORDER BY target, precision, batch LIMIT 1000")
                .bind(model_digest)
                .fetch_all(&self.pool)
                .await?;
        rows.iter().map(artifact_row).collect()
    }

    async fn enqueue(&self, repo_id: i64, revision_id: i64, key: &ArtifactKey) -> Result<Job, HubError> {
        let _w = self.writing().await;
        let now = crate::now_ms();
        // one statement: insert unless a live job of the same key exists
        let r = sqlx::query(
            "INSERT INTO jobs (repo_id, revision_id, model_digest, target, precision, batch, compiler_version, options, state, \
             log, created, updated) \
             SELECT $1, $2, $3, $4, $5, $6, $7, $8, 'queued', '', $9, $9 WHERE NOT EXISTS (SELECT 1 FROM jobs WHERE \
             model_digest = $3 AND target = $4 AND precision = $5 AND batch = $6 AND compiler_version = $7 AND options = $8 \
             AND state IN ('queued', 'running')) RETURNING id",
        )
        .bind(repo_id)
        .bind(revision_id)
        .bind(&key.model_digest)
        .bind(&key.target)
        .bind(&key.precision)
        .bind(batch_text(&key.batch))
        .bind(&key.compiler_version)
        .bind(key.options_text())
        .bind(now)
        .fetch_optional(self.wpool())
        .await;
        let r = match r {
            Err(e) if unique_violation(&e) => None,
            r => r?,
        };
        let id: i64 = match r {
            Some(r) => r.try_get("id")?,
            None => sqlx::query(
                "SELECT id FROM jobs WHERE model_digest = $1 AND target = $2 AND precision = $3 AND batch = $4 AND \
                 compiler_version = $5 AND options = $6 AND state IN ('queued', 'running') ORDER BY id LIMIT 1",
            )
            .bind(&key.model_digest)
            .bind(&key.target)
            .bind(&key.precision)
            .bind(batch_text(&key.batch))
            .bind(&key.compiler_version)
            .bind(key.options_text())
            .fetch_optional(self.wpool())
            .await?
            .ok_or_else(|| HubError::Conflict("the build finished while it was requested: ask again".into()))?
            .try_get("id")?,
        };
        self.job(id).await?.ok_or_else(|| HubError::Db(format!("job {id} vanished")))
    }

    async fn job(&self, id: i64) -> Result<Option<Job>, HubError> {
        let r = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {JOB_COLS} FROM jobs j JOIN repos r ON r.id = j.repo_id JOIN users u ON u.id = r.owner_id WHERE j.id = $1"
        )))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        r.as_ref().map(job_row).transpose()
    }

    async fn jobs_of_repo(&self, repo_id: i64, limit: i64) -> Result<Vec<Job>, HubError> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {JOB_COLS} FROM jobs j JOIN repos r ON r.id = j.repo_id JOIN users u ON u.id = r.owner_id \
             WHERE j.repo_id = $1 ORDER BY j.id DESC LIMIT $2"
        )))
        .bind(repo_id)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(job_row).collect()
    }

    async fn claim(
        &self,
        target: &str,
        compiler_version: &str,
        worker: &str,
        lease: Duration,
        max_attempts: u32,
    ) -> Result<Option<Job>, HubError> {
        let _w = self.writing().await;
        let now = crate::now_ms();
        let expired = sqlx::query(
            "UPDATE jobs SET state = 'failed', error = 'the worker stopped answering ' || attempts || ' times (lease expired)', \
             log = log || 'lease of ' || coalesce(worker, '?') || ' expired; no attempts left' || '\n', updated = $1 \
             WHERE state = 'running' AND lease_expires < $1 AND attempts >= $2 RETURNING id",
        )
        .bind(now)
        .bind(max_attempts as i64)
        .fetch_all(self.wpool())
        .await?;
        for r in &expired {
            let id: i64 = r.try_get("id")?;
            tracing::warn!(job = id, "job failed: its leases expired {max_attempts} times");
        }
        // PostgreSQL: the row is locked by the first claim; concurrent claims skip it
        let sql = match self.dialect {
            Dialect::Sqlite => {
                "UPDATE jobs SET state = 'running', worker = $1, lease_expires = $2, attempts = attempts + 1, updated = $3, \
                 log = log || CASE WHEN state = 'running' THEN 'lease of ' || coalesce(worker, '?') || ' expired' || '\n' ELSE '' END \
                 || 'claimed by ' || $1 || ' (attempt ' || (attempts + 1) || ')' || '\n' \
                 WHERE id = (SELECT id FROM jobs WHERE target = $4 AND compiler_version = $5 \
                 AND (state = 'queued' OR (state = 'running' AND lease_expires < $3)) ORDER BY id LIMIT 1) RETURNING id"
            }
            Dialect::Postgres => {
                "UPDATE jobs SET state = 'running', worker = $1, lease_expires = $2, attempts = attempts + 1, updated = $3, \
                 log = log || CASE WHEN state = 'running' THEN 'lease of ' || coalesce(worker, '?') || ' expired' || '\n' ELSE '' END \
                 || 'claimed by ' || $1 || ' (attempt ' || (attempts + 1) || ')' || '\n' \
                 WHERE id = (SELECT id FROM jobs WHERE target = $4 AND compiler_version = $5 \
                 AND (state = 'queued' OR (state = 'running' AND lease_expires < $3)) ORDER BY id LIMIT 1 \
                 FOR UPDATE SKIP LOCKED) RETURNING id"
            }
        };
        let r = sqlx::query(sql)
            .bind(worker)
            .bind(now + lease.as_millis() as i64)
            .bind(now)
            .bind(target)
            .bind(compiler_version)
            .fetch_optional(self.wpool())
            .await?;
        match r {
            Some(r) => {
                let id: i64 = r.try_get("id")?;
                self.job_log_tail(id).await?;
                self.job(id).await
            }
            None => Ok(None),
        }
    }

    async fn heartbeat(&self, id: i64, worker: &str, lease: Duration, log: &str) -> Result<Job, HubError> {
        let _w = self.writing().await;
        let now = crate::now_ms();
        let r = sqlx::query(
            "UPDATE jobs SET lease_expires = $1, updated = $2, log = log || $3 WHERE id = $4 AND state = 'running' AND worker = $5 \
             RETURNING id",
        )
        .bind(now + lease.as_millis() as i64)
        .bind(now)
        .bind(log_tail(log))
        .bind(id)
        .bind(worker)
        .fetch_optional(self.wpool())
        .await?;
        if r.is_none() {
            return Err(self.job_or_conflict(id, worker).await);
        }
        self.job_log_tail(id).await?;
        self.job(id).await?.ok_or_else(|| HubError::NotFound(format!("job {id}")))
    }

    async fn complete(
        &self,
        id: i64,
        worker: &str,
        blob: &str,
        size: i64,
        manifest: &crate::SignedManifest,
        log: &str,
    ) -> Result<Job, HubError> {
        let _w = self.writing().await;
        let m: crate::Manifest =
            serde_json::from_str(&manifest.manifest).map_err(|e| HubError::Internal(format!("manifest: {e}")))?;
        let now = crate::now_ms();
        let mut tx = self.wpool().begin().await?;
        let held = sqlx::query(
            "UPDATE jobs SET state = 'done', updated = $1, lease_expires = NULL, log = log || $2 WHERE id = $3 AND state = 'running' \
             AND worker = $4 RETURNING id",
        )
        .bind(now)
        .bind(log_tail(log))
        .bind(id)
        .bind(worker)
        .fetch_optional(&mut *tx)
        .await?;
        if held.is_none() {
            drop(tx);
            return Err(self.job_or_conflict(id, worker).await);
        }
        let key = ArtifactKey {
            model_digest: m.model_digest.clone(),
            target: m.target.clone(),
            precision: m.precision.clone(),
            batch: m.batch.clone(),
            compiler_version: m.compiler_version.clone(),
            options: m.options.clone(),
        };
        sqlx::query(
            "INSERT INTO artifacts (model_digest, target, precision, batch, compiler_version, options, blob, size, manifest, \
             signature, key, created) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) \
             ON CONFLICT(model_digest, target, precision, batch, compiler_version, options) DO NOTHING",
        )
        .bind(&key.model_digest)
        .bind(&key.target)
        .bind(&key.precision)
        .bind(batch_text(&key.batch))
        .bind(&key.compiler_version)
        .bind(key.options_text())
        .bind(blob)
        .bind(size)
        .bind(&manifest.manifest)
        .bind(&manifest.signature)
        .bind(&manifest.key)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "UPDATE jobs SET artifact_id = (SELECT id FROM artifacts WHERE model_digest = $1 AND target = $2 AND precision = $3 \
             AND batch = $4 AND compiler_version = $5 AND options = $6) WHERE id = $7",
        )
        .bind(&key.model_digest)
        .bind(&key.target)
        .bind(&key.precision)
        .bind(batch_text(&key.batch))
        .bind(&key.compiler_version)
        .bind(key.options_text())
        .bind(id)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        self.job_log_tail(id).await?;
        self.job(id).await?.ok_or_else(|| HubError::NotFound(format!("job {id}")))
    }

    async fn fail(&self, id: i64, worker: &str, error: &str, log: &str) -> Result<Job, HubError> {
        let _w = self.writing().await;
        let r = sqlx::query(
            "UPDATE jobs SET state = 'failed', error = $1, updated = $2, lease_expires = NULL, log = log || $3 WHERE id = $4 \
             AND state = 'running' AND worker = $5 RETURNING id",
        )
        .bind(log_tail(error))
        .bind(crate::now_ms())
        .bind(log_tail(log))
        .bind(id)
        .bind(worker)
        .fetch_optional(self.wpool())
        .await?;
        if r.is_none() {
            return Err(self.job_or_conflict(id, worker).await);
        }
        self.job_log_tail(id).await?;
        self.job(id).await?.ok_or_else(|| HubError::NotFound(format!("job {id}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Concurrent pushes to one repository on SQLite, recorded in group commits: every revision
    /// once, numbered 1..=n without a gap; one for a repository that does not exist fails alone.
    #[test]
    fn revisions_are_committed_in_groups() {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        rt.block_on(async {
            let dir = tempfile::tempdir().unwrap();
            let m = Arc::new(SqlMeta::open_sqlite(&dir.path().join("hub.db")).await.unwrap());
            let u = m.create_user("alice", false).await.unwrap();
            let repo = m.create_repo(u.id, "r", false).await.unwrap();
            let tasks: Vec<_> = (0..40i64)
                .map(|i| {
                    let m = m.clone();
                    let repo_id = if i == 7 { repo.id + 1000 } else { repo.id };
                    tokio::spawn(async move { m.add_revision(repo_id, &format!("{i:064x}"), i, "m.onnx").await })
                })
                .collect();
            let mut numbers = vec![];
            for (i, t) in tasks.into_iter().enumerate() {
                match t.await.unwrap() {
                    Ok(r) => {
                        assert_ne!(i, 7, "a revision of a repository that does not exist");
                        assert_eq!(r.digest, format!("{i:064x}"));
                        numbers.push(r.number);
                    }
                    Err(e) => assert_eq!(i, 7, "{e}"),
                }
            }
            numbers.sort();
            assert_eq!(numbers, (1..=39).collect::<Vec<i64>>());
            assert_eq!(m.revisions(repo.id).await.unwrap().len(), 39);
        });
    }
}
