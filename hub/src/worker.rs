//! The build worker: claims jobs for one target with a lease, keeps the lease with heartbeats
//! (which also carry the log), compiles in-process through `xforge_compiler`, checks that the
//! artifact parses back and states what was asked (target, precision, model), and uploads it;
//! the server signs its manifest. A compile error (or a compiler panic) fails the job with the
//! message and the worker goes on to the next job. A worker that dies stops heartbeating: its
//! lease expires and another worker claims the job.
use crate::client::{Client, ClientConfig};
use crate::meta::Job;
use crate::HubError;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use xforge_compiler::{Compiler, Precision};

#[derive(Clone, Debug)]
pub struct WorkerConfig {
    pub server: String,
    pub token: String,
    /// `sm_90`, ...
    pub target: String,
    /// The worker's name in leases and logs (`[A-Za-z0-9._-]`).
    pub name: String,
    /// How long to wait between claims when the queue is empty.
    pub poll: Duration,
}

impl WorkerConfig {
    pub fn new(server: &str, token: &str, target: &str) -> WorkerConfig {
        let host = std::fs::read_to_string("/etc/hostname").unwrap_or_default();
        let host: String = host
            .trim()
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
            .take(40)
            .collect();
        let host = if host.is_empty() || host.starts_with('.') { "worker".to_string() } else { host };
        WorkerConfig {
            server: server.into(),
            token: token.into(),
            target: target.into(),
            name: format!("{host}-{}", std::process::id()),
            poll: Duration::from_secs(1),
        }
    }
}

/// What became of a claimed job.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Built and uploaded (the artifact's sha256).
    Done { job: i64, digest: String },
    /// Failed with this message (recorded on the job).
    Failed { job: i64, error: String },
    /// The lease was lost (another worker took the job): the result was dropped.
    Lost { job: i64 },
}

/// A worker's counts so far.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    pub done: usize,
    pub failed: usize,
    pub lost: usize,
}

pub struct Worker {
    cfg: WorkerConfig,
    client: Client,
    stop: Arc<AtomicBool>,
}

fn precision(p: &str) -> Result<Precision, String> {
    match p {
        "fp32" => Ok(Precision::Fp32),
        "fp16" => Ok(Precision::Fp16),
        "bf16" => Ok(Precision::Bf16),
        _ => Err(format!("precision {p}: this worker builds fp32, fp16 and bf16")),
    }
}

fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic".into())
}

impl Worker {
    pub fn new(cfg: WorkerConfig) -> Result<Worker, HubError> {
        crate::names::check_name("worker", &cfg.name)?;
        crate::names::check_target(&cfg.target)?;
        if !xforge_codegen_targets().any(|t| t == cfg.target) {
            return Err(HubError::Config(format!(
                "target {}: this worker compiles for {}",
                cfg.target,
                xforge_codegen_targets().collect::<Vec<_>>().join(", ")
            )));
        }
        let client = Client::new(ClientConfig {
            server: cfg.server.clone(),
            token: Some(cfg.token.clone()),
            // a worker's cache is never used: models are read into memory
            cache_dir: Some(std::env::temp_dir().join("xforge-worker-cache")),
            ..Default::default()
        })?;
        Ok(Worker { cfg, client, stop: Arc::new(AtomicBool::new(false)) })
    }

    /// Set it to stop the loop of [`Worker::run`] after the job in hand.
    pub fn stop_flag(&self) -> Arc<AtomicBool> {
        self.stop.clone()
    }

    pub fn name(&self) -> &str {
        &self.cfg.name
    }

    /// Claims and builds jobs until stopped. Transport errors (the server restarting) are
    /// logged and retried; they never end the loop.
    pub fn run(&self) -> Stats {
        let mut stats = Stats::default();
        tracing::info!(worker = self.cfg.name, target = self.cfg.target, server = self.cfg.server, "worker started");
        while !self.stop.load(Ordering::SeqCst) {
            match self.run_once() {
                Ok(Some(Outcome::Done { .. })) => stats.done += 1,
                Ok(Some(Outcome::Failed { .. })) => stats.failed += 1,
                Ok(Some(Outcome::Lost { .. })) => stats.lost += 1,
                Ok(None) => self.sleep(self.cfg.poll),
                Err(e) => {
                    tracing::warn!("worker: {e}");
                    self.sleep(self.cfg.poll.max(Duration::from_millis(500)));
                }
            }
        }
        tracing::info!(worker = self.cfg.name, ?stats, "worker stopped");
        stats
    }

    fn sleep(&self, d: Duration) {
        let t = Instant::now();
        while t.elapsed() < d && !self.stop.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(20).min(d));
        }
    }

    /// Claims one job and builds it; None when the queue is empty.
    pub fn run_once(&self) -> Result<Option<Outcome>, HubError> {
        let Some(job) = self.client.claim(&self.cfg.target, &self.cfg.name, &crate::compiler_version())? else {
            return Ok(None);
        };
        tracing::info!(job = job.id, repo = job.repo, attempt = job.attempts, "building");
        Ok(Some(self.build(job)))
    }

    fn build(&self, job: Job) -> Outcome {
        let id = job.id;
        let pending = Arc::new(Mutex::new(String::new()));
        let log = |line: String| {
            tracing::info!(job = id, "{line}");
            if let Ok(mut p) = pending.lock() {
                p.push_str(&line);
                p.push('\n');
            }
        };
        // the heartbeat: a third of the lease, at least every 100 ms
        let lease_ms = job.lease_expires.map(|e| e - crate::now_ms()).unwrap_or(60_000).max(300);
        let every = Duration::from_millis((lease_ms / 3) as u64);
        let finished = Arc::new(AtomicBool::new(false));
        let lost = Arc::new(AtomicBool::new(false));
        let beat = {
            let (client, name, pending, finished, lost) =
                (self.client_clone(), self.cfg.name.clone(), pending.clone(), finished.clone(), lost.clone());
            std::thread::spawn(move || {
                let mut last = Instant::now();
                while !finished.load(Ordering::SeqCst) {
                    std::thread::sleep(Duration::from_millis(20));
                    if last.elapsed() < every {
                        continue;
                    }
                    last = Instant::now();
                    let text = pending.lock().map(|mut p| std::mem::take(&mut *p)).unwrap_or_default();
                    match client.heartbeat(id, &name, &text) {
                        Ok(()) => {}
                        Err(HubError::Conflict(m)) | Err(HubError::NotFound(m)) => {
                            tracing::warn!(job = id, "lease lost: {m}");
                            lost.store(true, Ordering::SeqCst);
                            return;
                        }
                        Err(e) => {
                            // keep the text for the next beat
                            if let Ok(mut p) = pending.lock() {
                                p.insert_str(0, &text);
                            }
                            tracing::warn!(job = id, "heartbeat: {e}");
                        }
                    }
                }
            })
        };
        let result = self.compile(&job, &log);
        finished.store(true, Ordering::SeqCst);
        let _ = beat.join();
        let rest = pending.lock().map(|mut p| std::mem::take(&mut *p)).unwrap_or_default();
        if lost.load(Ordering::SeqCst) {
            return Outcome::Lost { job: id };
        }
        match result {
            Ok(bytes) => {
                let digest = crate::sha256_hex(&bytes);
                if let Err(e) = self.client.heartbeat(id, &self.cfg.name, &rest) {
                    tracing::warn!(job = id, "before the upload: {e}");
                }
                match self.client.upload_artifact(id, &self.cfg.name, bytes) {
                    Ok(_) => {
                        tracing::info!(job = id, digest, "artifact published");
                        Outcome::Done { job: id, digest }
                    }
                    Err(HubError::Conflict(m)) => {
                        tracing::warn!(job = id, "lease lost before the upload finished: {m}");
                        Outcome::Lost { job: id }
                    }
                    Err(e) => {
                        let msg = format!("upload: {e}");
                        let _ = self.client.fail_job(id, &self.cfg.name, &msg, "");
                        Outcome::Failed { job: id, error: msg }
                    }
                }
            }
            Err(msg) => {
                tracing::warn!(job = id, "build failed: {msg}");
                match self.client.fail_job(id, &self.cfg.name, &msg, &format!("{rest}error: {msg}\n")) {
                    Err(HubError::Conflict(_)) => Outcome::Lost { job: id },
                    _ => Outcome::Failed { job: id, error: msg },
                }
            }
        }
    }

    fn client_clone(&self) -> Client {
        self.client.clone()
    }

    /// Downloads the model, compiles it, checks the artifact; the artifact's bytes, or the
    /// error message for the job.
    fn compile(&self, job: &Job, log: &(dyn Fn(String) + Sync)) -> Result<Vec<u8>, String> {
        let dir = std::env::temp_dir().join(format!("xforge-worker-{}-{}", std::process::id(), crate::random_hex(6)));
        std::fs::create_dir_all(&dir).map_err(|e| format!("worker: creating {}: {e}", dir.display()))?;
        struct Cleanup(std::path::PathBuf);
        impl Drop for Cleanup {
            fn drop(&mut self) {
                let _ = std::fs::remove_dir_all(&self.0);
            }
        }
        let _cleanup = Cleanup(dir.clone());
        let path = dir.join("model.onnx");
        let size = self.client.fetch_blob(&job.key.model_digest, &path).map_err(|e| format!("model: {e}"))?;
        log(format!("model {} ({size} bytes) downloaded by {}", job.key.model_digest, self.cfg.name));
        let mut c = Compiler::new(&job.key.target).precision(precision(&job.key.precision)?);
        if !job.key.batch.is_empty() {
            c = c.batch(&job.key.batch, None);
        }
        if job.key.options.get("generated_gemm").is_some_and(|v| v == "true") {
            c = c.generated_gemm(true);
        }
        let phases = Arc::new(Mutex::new(String::new()));
        let (p2, log_lines) = (phases.clone(), Arc::new(Mutex::new(Vec::<String>::new())));
        let l2 = log_lines.clone();
        c = c.on_progress(move |phase, done, all| {
            if let Ok(mut p) = p2.lock() {
                if *p != phase {
                    *p = phase.to_string();
                    if let Ok(mut l) = l2.lock() {
                        l.push(format!("{phase} ({done}/{all})"));
                    }
                }
            }
        });
        log(format!(
            "compiling for {} {}{} with xforge {}",
            job.key.target,
            job.key.precision,
            if job.key.batch.is_empty() {
                String::new()
            } else {
                format!(" batch {}", crate::names::batch_text(&job.key.batch))
            },
            crate::compiler_version()
        ));
        let t = Instant::now();
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| c.compile_onnx(&path)));
        for l in log_lines.lock().map(|l| l.clone()).unwrap_or_default() {
            log(l);
        }
        let artifact = match r {
            Ok(Ok(a)) => a,
            Ok(Err(e)) => return Err(format!("compile: {e}")),
            Err(p) => return Err(format!("compile: the compiler panicked: {}", panic_message(&*p))),
        };
        log(format!("compiled in {:.2} s", t.elapsed().as_secs_f64()));
        let bytes = artifact.to_bytes();
        let back = xforge_runtime::Artifact::from_bytes(&bytes)
            .map_err(|e| format!("check: the artifact does not parse back: {e}"))?;
        let h = &back.header;
        if h.target != job.key.target || h.precision != job.key.precision {
            return Err(format!(
                "check: the artifact is for {} {}, the job asks {} {}",
                h.target, h.precision, job.key.target, job.key.precision
            ));
        }
        let model = std::fs::read(&path).map_err(|e| format!("worker: reading {}: {e}", path.display()))?;
        if h.model_digest != xforge_compiler::digest(&model) {
            return Err("check: the artifact names another model".into());
        }
        log(format!("artifact checked: {} bytes, {} plan(s)", bytes.len(), back.plans.len()));
        Ok(bytes)
    }
}

/// The targets the linked compiler knows: NVIDIA's (PTX) and AMD's (code objects).
fn xforge_codegen_targets() -> impl Iterator<Item = &'static str> {
    xforge_codegen_ptx::CHIPS.iter().chain(xforge_codegen_hip::CHIPS).copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workers_take_the_targets_the_compiler_knows_and_refuse_others_by_name() {
        // a well-formed token (nothing connects here)
        let token = format!("xfh_{}", "0".repeat(64));
        for t in ["sm_90", "sm_80", "gfx90a", "gfx942", "gfx1100"] {
            Worker::new(WorkerConfig::new("http://127.0.0.1:9", &token, t)).unwrap_or_else(|e| panic!("{t}: {e}"));
        }
        let e = Worker::new(WorkerConfig::new("http://127.0.0.1:9", &token, "gfx940")).err().unwrap().to_string();
        assert!(e.contains("gfx940") && e.contains("gfx942") && e.contains("sm_90"), "{e}");
    }
}
