//! `xforge hub …`: the hub's server, build worker and client. The logic lives in `xforge-hub`;
//! this module parses flags and prints.
use anyhow::Context;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;
use xforge_hub::{BuildSpec, Client, ClientConfig, HubError, ServerConfig};

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Subcommand)]
enum Command {
    /// Run a hub server (SQLite and a blob folder in --dir). The first start prints an admin token.
    Serve(ServeArgs),
    /// Run a build worker: claim jobs for a target, compile them in-process, upload the artifacts.
    Worker(WorkerArgs),
    /// Check a token against a server and save both (and the server's signing key) for later commands.
    Login(LoginArgs),
    /// Show who the saved token belongs to.
    Whoami(Conn),
    /// Upload an ONNX model as a repository's next revision (the repository is created if needed).
    Push(PushArgs),
    /// Request a build of a repository's newest revision for a target.
    Build(BuildArgs),
    /// Download a verified artifact (requesting a build and waiting for it when none exists).
    Pull(PullArgs),
    /// List repositories (names containing QUERY), or show one (OWNER/NAME).
    Ls(LsArgs),
    /// Delete a repository (its revisions, builds, and the blobs nothing else holds).
    Rm(RmArgs),
    /// Organizations: create one, list, add or remove members (repositories `ORG/NAME`).
    #[command(subcommand)]
    Org(OrgCommand),
    /// Admin: create a user.
    UserAdd(UserAddArgs),
    /// Create a token for a user (yourself, or anyone as an admin), printed once.
    TokenAdd(TokenAddArgs),
    /// List a user's tokens (id, scopes, label; never the tokens).
    TokenLs(TokenLsArgs),
    /// Revoke a user's token by id: it stops working at once.
    TokenRm(TokenRmArgs),
    /// Admin: remove the blobs nothing references (left by crashes or refused uploads).
    Gc(GcArgs),
}

/// Where the server is and who asks (defaults: the saved login, XFORGE_HUB_URL, XFORGE_HUB_TOKEN).
#[derive(clap::Args, Clone)]
struct Conn {
    /// The hub's URL (http://HOST:PORT).
    #[arg(long)]
    server: Option<String>,
    /// A token (xfh_…).
    #[arg(long)]
    token: Option<String>,
}

impl Conn {
    fn client(&self, offline: bool) -> anyhow::Result<Client> {
        let mut c = ClientConfig::from_env()?;
        if let Some(s) = &self.server {
            if c.server.trim_end_matches('/') != s.trim_end_matches('/') {
                // another server: the saved key is not its key
                c.server_key = None;
            }
            c.server = s.clone();
        }
        if let Some(t) = &self.token {
            c.token = Some(t.clone());
        }
        c.offline |= offline;
        c.progress = true;
        if c.server.is_empty() && !c.offline {
            anyhow::bail!(HubError::Config(
                "no server: xforge hub login --server URL --token T (or XFORGE_HUB_URL)".into()
            ));
        }
        Ok(Client::new(c)?)
    }
}

#[derive(clap::Args)]
struct ServeArgs {
    /// A toml configuration (see hub/README.md); the flags below override it.
    #[arg(long)]
    config: Option<PathBuf>,
    /// The folder for the database, the blobs and the signing key.
    #[arg(long)]
    dir: Option<PathBuf>,
    /// The address to listen on (127.0.0.1:8765; port 0 picks a free one).
    #[arg(long)]
    listen: Option<String>,
}

#[derive(clap::Args)]
struct WorkerArgs {
    #[arg(long)]
    server: String,
    /// A token with the worker scope.
    #[arg(long)]
    token: String,
    /// The target to build for (sm_80, sm_86, sm_89, sm_90, sm_90a).
    #[arg(long)]
    target: String,
    /// The worker's name in leases and logs (default: host and process id).
    #[arg(long)]
    name: Option<String>,
    /// Milliseconds between claims when the queue is empty.
    #[arg(long, default_value_t = 1000)]
    poll_ms: u64,
}

#[derive(clap::Args)]
struct LoginArgs {
    #[arg(long)]
    server: String,
    #[arg(long)]
    token: String,
    /// The server's signing key (hex), when known out of band; otherwise the server's answer is pinned.
    #[arg(long)]
    key: Option<String>,
}

#[derive(clap::Args)]
struct PushArgs {
    /// OWNER/NAME.
    repo: String,
    /// The ONNX file.
    model: PathBuf,
    /// Create the repository private (invisible to others).
    #[arg(long)]
    private: bool,
    #[command(flatten)]
    conn: Conn,
}

#[derive(clap::Args)]
struct SpecArgs {
    /// The target (sm_90, ...); default: this machine's GPU's.
    #[arg(long)]
    target: Option<String>,
    #[arg(long, default_value = "fp32")]
    precision: String,
    /// Batch-size buckets (1,8,32); none: the model's own shapes.
    #[arg(long, value_delimiter = ',')]
    batch: Vec<u64>,
    /// A build option KEY=VALUE (generated_gemm=true); repeatable.
    #[arg(long = "option", value_name = "KEY=VALUE")]
    options: Vec<String>,
}

impl SpecArgs {
    fn spec(&self) -> anyhow::Result<BuildSpec> {
        let mut options = BTreeMap::new();
        for o in &self.options {
            let (k, v) =
                o.split_once('=').ok_or_else(|| HubError::BadRequest(format!("--option '{o}' must be KEY=VALUE")))?;
            options.insert(k.to_string(), v.to_string());
        }
        let target = match &self.target {
            Some(t) => t.clone(),
            None => xforge_runtime::device_target(0).map_err(|e| {
                HubError::BadRequest(format!("--target: not given, and no GPU here to take it from ({e})"))
            })?,
        };
        let s = BuildSpec { target, precision: self.precision.clone(), batch: self.batch.clone(), options };
        s.check()?;
        Ok(s)
    }
}

#[derive(clap::Args)]
struct BuildArgs {
    repo: String,
    #[command(flatten)]
    spec: SpecArgs,
    /// Wait for the build and print its log.
    #[arg(long)]
    wait: bool,
    /// Seconds to wait.
    #[arg(long, default_value_t = 3600)]
    timeout: u64,
    #[command(flatten)]
    conn: Conn,
}

#[derive(clap::Args)]
struct PullArgs {
    repo: String,
    #[command(flatten)]
    spec: SpecArgs,
    /// Also copy the artifact here (it stays in the cache either way).
    #[arg(short, long)]
    output: Option<PathBuf>,
    /// Fail instead of requesting a build when none exists.
    #[arg(long)]
    no_build: bool,
    /// Serve from the cache only.
    #[arg(long)]
    offline: bool,
    /// Seconds to wait for a build.
    #[arg(long, default_value_t = 3600)]
    timeout: u64,
    #[command(flatten)]
    conn: Conn,
}

#[derive(clap::Args)]
struct LsArgs {
    /// A search string, or OWNER/NAME for one repository.
    query: Option<String>,
    #[command(flatten)]
    conn: Conn,
}

#[derive(clap::Args)]
struct RmArgs {
    repo: String,
    #[command(flatten)]
    conn: Conn,
}

#[derive(clap::Subcommand)]
enum OrgCommand {
    /// Create an organization, with yourself as its admin.
    Create {
        name: String,
        #[command(flatten)]
        conn: Conn,
    },
    /// List an organization's members and roles.
    Ls {
        org: String,
        #[command(flatten)]
        conn: Conn,
    },
    /// Add a member, or change a member's role (org admins).
    Add {
        org: String,
        user: String,
        /// read (sees private repositories), write (also pushes), admin (also manages members).
        #[arg(long, default_value = "read")]
        role: String,
        #[command(flatten)]
        conn: Conn,
    },
    /// Remove a member (org admins; the last admin stays).
    Rm {
        org: String,
        user: String,
        #[command(flatten)]
        conn: Conn,
    },
}

fn org(cmd: OrgCommand) -> anyhow::Result<()> {
    match cmd {
        OrgCommand::Create { name, conn } => {
            conn.client(false)?.create_org(&name)?;
            println!("organization {name}");
        }
        OrgCommand::Ls { org, conn } => {
            for (user, role) in conn.client(false)?.members(&org)? {
                println!("{user} {role}");
            }
        }
        OrgCommand::Add { org, user, role, conn } => {
            conn.client(false)?.set_member(&org, &user, &role)?;
            println!("{user}: {role} of {org}");
        }
        OrgCommand::Rm { org, user, conn } => {
            conn.client(false)?.remove_member(&org, &user)?;
            println!("{user} removed from {org}");
        }
    }
    Ok(())
}

#[derive(clap::Args)]
struct UserAddArgs {
    name: String,
    #[arg(long)]
    admin: bool,
    #[command(flatten)]
    conn: Conn,
}

#[derive(clap::Args)]
struct TokenLsArgs {
    /// The user.
    name: String,
    #[command(flatten)]
    conn: Conn,
}

#[derive(clap::Args)]
struct GcArgs {
    /// Spare blobs stored within this many seconds (uploads whose records are on their way).
    #[arg(long, default_value_t = xforge_hub::server::DEFAULT_GC_GRACE_S)]
    grace: u64,
    #[command(flatten)]
    conn: Conn,
}

#[derive(clap::Args)]
struct TokenRmArgs {
    /// The user.
    name: String,
    /// The token's id (`xforge hub token-ls`).
    id: i64,
    #[command(flatten)]
    conn: Conn,
}

#[derive(clap::Args)]
struct TokenAddArgs {
    /// The user.
    name: String,
    /// read, write, admin, worker (comma-separated).
    #[arg(long, value_delimiter = ',', required = true)]
    scopes: Vec<String>,
    #[arg(long, default_value = "")]
    label: String,
    #[command(flatten)]
    conn: Conn,
}

pub fn hub(a: Args) -> anyhow::Result<()> {
    match a.command {
        Command::Serve(a) => serve(a),
        Command::Worker(a) => worker(a),
        Command::Login(a) => login(a),
        Command::Whoami(c) => {
            let w = c.client(false)?.whoami()?;
            let scopes: Vec<&str> = w.scopes.iter().map(|s| s.name()).collect();
            println!("{} ({}){}", w.user, scopes.join(","), if w.admin { ", admin" } else { "" });
            Ok(())
        }
        Command::Push(a) => {
            let c = a.conn.client(false)?;
            let r = c.push(&a.repo, &a.model, a.private).with_context(|| format!("pushing {}", a.model.display()))?;
            println!("{} revision {}: {} ({} bytes, sha256 {})", a.repo, r.number, r.filename, r.size, r.digest);
            Ok(())
        }
        Command::Build(a) => build(a),
        Command::Pull(a) => pull(a),
        Command::Ls(a) => ls(a),
        Command::Rm(a) => {
            a.conn.client(false)?.delete(&a.repo)?;
            println!("deleted {}", a.repo);
            Ok(())
        }
        Command::Org(cmd) => org(cmd),
        Command::UserAdd(a) => {
            let u = a.conn.client(false)?.create_user(&a.name, a.admin)?;
            println!("user {}{}", u.name, if u.admin { " (admin)" } else { "" });
            Ok(())
        }
        Command::TokenAdd(a) => {
            let scopes: Vec<&str> = a.scopes.iter().map(String::as_str).collect();
            println!("{}", a.conn.client(false)?.create_token(&a.name, &scopes, &a.label)?);
            Ok(())
        }
        Command::TokenLs(a) => {
            for t in a.conn.client(false)?.tokens(&a.name)? {
                println!("{}\t{}\t{}", t.id, t.scopes, t.label);
            }
            Ok(())
        }
        Command::TokenRm(a) => {
            a.conn.client(false)?.revoke_token(&a.name, a.id)?;
            println!("token {} of {} revoked", a.id, a.name);
            Ok(())
        }
        Command::Gc(a) => {
            let r = a.conn.client(false)?.collect_garbage(a.grace)?;
            for d in &r.removed {
                println!("removed {d}");
            }
            println!("{} blobs examined, {} removed ({} bytes)", r.examined, r.removed.len(), r.bytes_removed);
            Ok(())
        }
    }
}

fn serve(a: ServeArgs) -> anyhow::Result<()> {
    let mut cfg = match &a.config {
        Some(p) => ServerConfig::load(p)?,
        None => ServerConfig::default(),
    };
    if let Some(d) = a.dir {
        cfg.dir = d;
    }
    if let Some(l) = a.listen {
        cfg.listen = l;
    }
    let dir = cfg.dir.clone();
    let s = xforge_hub::RunningServer::start(cfg)?;
    let mut out = std::io::stdout();
    writeln!(out, "xforge hub: listening on {}", s.url)?;
    writeln!(out, "xforge hub: signing key {}", s.key)?;
    match &s.admin_token {
        Some(t) => writeln!(out, "xforge hub: admin token {t} (also in {})", dir.join("admin.token").display())?,
        None => writeln!(out, "xforge hub: the admin token is in {}", dir.join("admin.token").display())?,
    }
    out.flush()?;
    s.wait_for_signal()?;
    Ok(())
}

fn worker(a: WorkerArgs) -> anyhow::Result<()> {
    let mut cfg = xforge_hub::worker::WorkerConfig::new(&a.server, &a.token, &a.target);
    if let Some(n) = a.name {
        cfg.name = n;
    }
    cfg.poll = Duration::from_millis(a.poll_ms.max(10));
    let w = xforge_hub::worker::Worker::new(cfg)?;
    eprintln!("xforge hub worker {}: building {} jobs from {}", w.name(), a.target, a.server);
    let stats = w.run();
    eprintln!("xforge hub worker: {} built, {} failed, {} lost", stats.done, stats.failed, stats.lost);
    Ok(())
}

fn login(a: LoginArgs) -> anyhow::Result<()> {
    let cfg = ClientConfig {
        server: a.server.clone(),
        token: Some(a.token.clone()),
        server_key: a.key.clone(),
        ..Default::default()
    };
    let c = Client::new(cfg.clone())?;
    let who = c.whoami().context("checking the token")?;
    let served = c.server_key()?;
    if let Some(k) = &a.key {
        if k.trim() != served {
            anyhow::bail!(HubError::Verification(format!("the server signs with {served}, not with the key given")));
        }
    }
    let saved = ClientConfig { server_key: Some(served.clone()), ..cfg };
    let path = xforge_hub::client::config_path();
    saved.save(&path)?;
    c.cache().pin_key(a.server.trim_end_matches('/'), &served)?;
    println!("logged in to {} as {}; signing key {served} pinned; saved in {}", a.server, who.user, path.display());
    Ok(())
}

fn build(a: BuildArgs) -> anyhow::Result<()> {
    let c = a.conn.client(false)?;
    let spec = a.spec.spec()?;
    let r = c.build(&a.repo, &spec)?;
    if let Some(art) = r.artifact {
        println!("already built: sha256 {} ({} bytes)", art.blob, art.size);
        return Ok(());
    }
    let job = r.job.ok_or_else(|| anyhow::anyhow!("the server answered with neither artifact nor job"))?;
    println!("build {} {} ({})", job.id, job.state.name(), job.repo);
    if a.wait {
        let res = c.wait(job.id, Duration::from_secs(a.timeout));
        let j = c.job(job.id)?;
        print!("{}", j.log);
        res?;
        println!("build {} done", job.id);
    }
    Ok(())
}

fn pull(a: PullArgs) -> anyhow::Result<()> {
    let c = a.conn.client(a.offline)?;
    let spec = a.spec.spec()?;
    let p = c.pull_with(&a.repo, &spec, !a.no_build, Duration::from_secs(a.timeout))?;
    // verified again before use: the signed manifest's sha256 and size, then the format
    let bytes = std::fs::read(&p.path).with_context(|| format!("reading {}", p.path.display()))?;
    p.manifest.check_blob(&bytes)?;
    let art = xforge_runtime::Artifact::from_bytes(&bytes)?;
    if let Some(o) = &a.output {
        let tmp = o.with_extension("xfa.part");
        std::fs::write(&tmp, &bytes).with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, o).with_context(|| format!("writing {}", o.display()))?;
    }
    println!(
        "{} revision {} {} {}: verified (ed25519 signature, sha256 {}, {} bytes, an artifact of xforge {} with {} plan(s)){}",
        a.repo,
        p.revision,
        p.manifest.target,
        p.manifest.precision,
        p.manifest.artifact.sha256,
        p.manifest.artifact.size,
        art.header.compiler_version,
        art.plans.len(),
        if p.from_cache { ", from the cache" } else if p.resumed_from > 0 { ", download resumed" } else { "" }
    );
    println!("{}", a.output.as_ref().unwrap_or(&p.path).display());
    Ok(())
}

fn ls(a: LsArgs) -> anyhow::Result<()> {
    let c = a.conn.client(false)?;
    match a.query.as_deref() {
        Some(q) if q.contains('/') => {
            let d = c.repo(q)?;
            println!("{}{}", d.repo.full_name(), if d.repo.private { " (private)" } else { "" });
            for r in &d.revisions {
                println!("  revision {}: {} ({} bytes, sha256 {})", r.number, r.filename, r.size, r.digest);
            }
            for x in &d.artifacts {
                let batch = if x.key.batch.is_empty() {
                    "static".to_string()
                } else {
                    xforge_hub::names::batch_text(&x.key.batch)
                };
                println!(
                    "  artifact {} {} batch {} ({}): sha256 {} ({} bytes)",
                    x.key.target, x.key.precision, batch, x.key.compiler_version, x.blob, x.size
                );
            }
            for j in &d.jobs {
                println!(
                    "  build {} {} {}: {}{}",
                    j.id,
                    j.key.target,
                    j.key.precision,
                    j.state.name(),
                    j.error.as_deref().map(|e| format!(" ({e})")).unwrap_or_default()
                );
            }
        }
        q => {
            for r in c.list(q)? {
                println!("{}{}", r.full_name(), if r.private { " (private)" } else { "" });
            }
        }
    }
    Ok(())
}
