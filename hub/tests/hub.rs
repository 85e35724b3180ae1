//! The hub end to end on 127.0.0.1: a server in-process on a temporary directory, build workers
//! in threads (compiling in-process), clients with their own caches.
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use xforge_hub::meta::JobState;
use xforge_hub::worker::{Stats, Worker, WorkerConfig};
use xforge_hub::{BuildSpec, Client, ClientConfig, HubError, RunningServer, ServerConfig};

/// Where a test hub keeps its data: the embedded default, or PostgreSQL and an S3-compatible
/// store (s3s-fs), both started on 127.0.0.1 for the test.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Backend {
    Embedded,
    PostgresS3,
}

struct Hub {
    // dropped in this order: the server before the services it uses, the folder last
    server: Option<RunningServer>,
    admin: Client,
    backend: Backend,
    _services: Vec<Service>,
    s3_root: Option<PathBuf>,
    dir: tempfile::TempDir,
}

impl Hub {
    fn start(backend: Backend, tweak: impl FnOnce(&mut ServerConfig)) -> Hub {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = ServerConfig { dir: dir.path().join("hub"), listen: "127.0.0.1:0".into(), ..Default::default() };
        let mut services = vec![];
        let mut s3_root = None;
        if backend == Backend::PostgresS3 {
            let (pg, url) = services::postgres(dir.path());
            services.push(pg);
            cfg.database = Some(url);
            let (s3, s3cfg, root) = services::s3(dir.path());
            services.push(s3);
            cfg.s3 = Some(s3cfg);
            s3_root = Some(root);
        }
        tweak(&mut cfg);
        let server = RunningServer::start(cfg).unwrap();
        let token = server.admin_token.clone().expect("the first start makes an admin token");
        // the token is also in DIR/admin.token, readable by its owner only
        let file = dir.path().join("hub/admin.token");
        assert_eq!(std::fs::read_to_string(&file).unwrap().trim(), token);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(std::fs::metadata(&file).unwrap().permissions().mode() & 0o777, 0o600);
        }
        let admin = client_at(&server.url, Some(&token), &dir.path().join("cache-admin"));
        Hub { server: Some(server), admin, backend, _services: services, s3_root, dir }
    }

    /// Where the store keeps a blob's bytes.
    fn blob_file(&self, digest: &str) -> PathBuf {
        match &self.s3_root {
            None => self.dir.path().join("hub/blobs/sha256").join(&digest[..2]).join(digest),
            Some(r) => r.join(services::BUCKET).join("hub/sha256").join(&digest[..2]).join(digest),
        }
    }

    /// Every file of the blob store.
    fn blob_files(&self) -> Vec<PathBuf> {
        match &self.s3_root {
            None => walk(&self.dir.path().join("hub/blobs")),
            Some(r) => walk(&r.join(services::BUCKET)),
        }
    }

    fn url(&self) -> String {
        self.server.as_ref().unwrap().url.clone()
    }

    /// A user with a read+write token, and its client (its own cache).
    fn user(&self, name: &str) -> (String, Client) {
        self.admin.create_user(name, false).unwrap();
        let t = self.admin.create_token(name, &["read", "write"], "test").unwrap();
        let c = client_at(&self.url(), Some(&t), &self.dir.path().join(format!("cache-{name}")));
        (t, c)
    }

    fn worker_token(&self) -> String {
        match self.admin.create_user("farm", false) {
            Ok(_) | Err(HubError::Conflict(_)) => {}
            Err(e) => panic!("{e}"),
        }
        self.admin.create_token("farm", &["worker"], "workers").unwrap()
    }

    /// A worker thread; set the flag to stop it.
    fn worker(&self, name: &str) -> (Arc<AtomicBool>, std::thread::JoinHandle<Stats>) {
        let mut cfg = WorkerConfig::new(&self.url(), &self.worker_token(), "sm_90");
        cfg.name = name.into();
        cfg.poll = Duration::from_millis(100);
        let w = Worker::new(cfg).unwrap();
        let stop = w.stop_flag();
        (stop, std::thread::spawn(move || w.run()))
    }
}

fn client_at(url: &str, token: Option<&str>, cache: &Path) -> Client {
    Client::new(ClientConfig {
        server: url.into(),
        token: token.map(str::to_string),
        cache_dir: Some(cache.to_path_buf()),
        ..Default::default()
    })
    .unwrap()
}

type Service = services::Service;

/// PostgreSQL and s3s-fs on 127.0.0.1 (scripts/setup installs both).
mod services {
    use std::path::{Path, PathBuf};
    use std::process::{Child, Command};
    use std::time::{Duration, Instant};

    pub const BUCKET: &str = "xforge-test";

    /// A service stopped on drop.
    pub enum Service {
        Postgres { bin: PathBuf, data: PathBuf },
        Process(Child),
    }

    impl Drop for Service {
        fn drop(&mut self) {
            match self {
                Service::Postgres { bin, data } => {
                    let _ = as_postgres(
                        bin.join("pg_ctl"),
                        &["-D", data.to_str().unwrap(), "-m", "immediate", "-w", "stop"],
                    )
                    .output();
                }
                Service::Process(c) => {
                    let _ = c.kill();
                    let _ = c.wait();
                }
            }
        }
    }

    fn free_port() -> u16 {
        std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
    }

    fn is_root() -> bool {
        // the effective uid, from /proc (no libc call)
        std::fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|s| s.lines().find(|l| l.starts_with("Uid:")).map(|l| l.split_whitespace().nth(2) == Some("0")))
            .unwrap_or(false)
    }

    /// PostgreSQL refuses to run as root: as root, run its tools as the user postgres.
    fn as_postgres(tool: PathBuf, args: &[&str]) -> Command {
        if is_root() {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(tool).args(args);
            c
        } else {
            let mut c = Command::new(tool);
            c.args(args);
            c
        }
    }

    fn pg_bin() -> PathBuf {
        if let Some(p) = std::env::var_os("XFORGE_PG_BIN") {
            return PathBuf::from(p);
        }
        let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
            .map(|rd| rd.flatten().map(|e| e.path().join("bin")).filter(|p| p.join("initdb").exists()).collect())
            .unwrap_or_default();
        versions.sort();
        versions.pop().expect("PostgreSQL is not installed (/usr/lib/postgresql/*/bin): run scripts/setup")
    }

    /// A fresh cluster in `root/pg` on a free port; its URL.
    pub fn postgres(root: &Path) -> (Service, String) {
        let bin = pg_bin();
        let data = root.join("pg");
        std::fs::create_dir_all(&data).unwrap();
        if is_root() {
            use std::os::unix::fs::PermissionsExt;
            // the postgres user must reach its folder
            std::fs::set_permissions(root, std::fs::Permissions::from_mode(0o755)).unwrap();
            let ok = Command::new("chown").args(["postgres:postgres", data.to_str().unwrap()]).status().unwrap();
            assert!(ok.success());
        }
        let d = data.to_str().unwrap();
        let out = as_postgres(bin.join("initdb"), &["-D", d, "-U", "test", "--auth=trust", "--no-sync", "-E", "UTF8"])
            .output()
            .unwrap();
        assert!(out.status.success(), "initdb: {}", String::from_utf8_lossy(&out.stderr));
        let port = free_port();
        let opts = format!("-c listen_addresses=127.0.0.1 -p {port} -k {d} -c fsync=off");
        let log = format!("{d}/server.log");
        let out = as_postgres(bin.join("pg_ctl"), &["-D", d, "-w", "-l", &log, "-o", &opts, "start"]).output().unwrap();
        assert!(
            out.status.success(),
            "pg_ctl start: {}{}",
            String::from_utf8_lossy(&out.stderr),
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        (Service::Postgres { bin, data: data.clone() }, format!("postgres://test@127.0.0.1:{port}/postgres"))
    }

    fn s3s_fs() -> PathBuf {
        if let Some(p) = std::env::var_os("XFORGE_S3S_FS") {
            return PathBuf::from(p);
        }
        let home = std::env::var_os("CARGO_HOME")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").unwrap()).join(".cargo"));
        let p = home.join("bin/s3s-fs");
        assert!(p.exists(), "{} is not installed: run scripts/setup", p.display());
        p
    }

    /// s3s-fs serving `root/s3` (the bucket a folder in it) on a free port, checking signatures.
    pub fn s3(root: &Path) -> (Service, xforge_hub::s3::S3Config, PathBuf) {
        let data = root.join("s3");
        std::fs::create_dir_all(data.join(BUCKET)).unwrap();
        let port = free_port();
        let child = Command::new(s3s_fs())
            .args([
                "--host",
                "127.0.0.1",
                "--port",
                &port.to_string(),
                "--access-key",
                "xforge",
                "--secret-key",
                "xforge-secret",
            ])
            .arg(&data)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let t = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(t.elapsed() < Duration::from_secs(20), "s3s-fs did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        let cfg = xforge_hub::s3::S3Config {
            url: format!("s3://{BUCKET}/hub"),
            endpoint: Some(format!("http://127.0.0.1:{port}")),
            region: Some("us-east-1".into()),
            access_key_id: Some("xforge".into()),
            secret_access_key: Some("xforge-secret".into()),
        };
        (Service::Process(child), cfg, data)
    }
}

fn models() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../models")
}

/// A raw request (for what the client never sends): status, headers, body.
fn raw(
    method: &str,
    url: &str,
    token: Option<&str>,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> (u16, reqwest::header::HeaderMap, Vec<u8>) {
    let c = reqwest::blocking::Client::new();
    let mut r = c.request(method.parse().unwrap(), url).body(body);
    if let Some(t) = token {
        r = r.bearer_auth(t);
    }
    for (k, v) in headers {
        r = r.header(*k, *v);
    }
    let resp = r.send().unwrap();
    let status = resp.status().as_u16();
    let h = resp.headers().clone();
    (status, h, resp.bytes().unwrap().to_vec())
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

// ---- small ONNX models ----

fn onnx_value(name: &str, elem: i32, dims: &[i64]) -> onnx_protobuf::ValueInfoProto {
    use onnx_protobuf::tensor_shape_proto::{dimension, Dimension};
    let mut t = onnx_protobuf::type_proto::Tensor::new();
    t.elem_type = elem;
    if !dims.is_empty() {
        let mut shape = onnx_protobuf::TensorShapeProto::new();
        for &d in dims {
            let mut dim = Dimension::new();
            dim.value = Some(dimension::Value::DimValue(d));
            shape.dim.push(dim);
        }
        t.shape = Some(shape).into();
    }
    let mut tp = onnx_protobuf::TypeProto::new();
    tp.value = Some(onnx_protobuf::type_proto::Value::TensorType(t));
    let mut v = onnx_protobuf::ValueInfoProto::new();
    v.name = name.into();
    v.type_ = Some(tp).into();
    v
}

fn onnx_node(op: &str, ins: &[&str], out: &str) -> onnx_protobuf::NodeProto {
    let mut n = onnx_protobuf::NodeProto::new();
    n.op_type = op.into();
    n.name = op.to_lowercase();
    n.input = ins.iter().map(|s| s.to_string()).collect();
    n.output = vec![out.to_string()];
    n
}

fn onnx_weight(name: &str, dims: &[i64], values: &[f32]) -> onnx_protobuf::TensorProto {
    let mut w = onnx_protobuf::TensorProto::new();
    w.name = name.into();
    w.dims = dims.to_vec();
    w.data_type = 1;
    w.raw_data = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    w
}

fn write_onnx(path: &Path, g: onnx_protobuf::GraphProto) {
    use protobuf::Message;
    let mut m = onnx_protobuf::ModelProto::new();
    m.ir_version = 8;
    let mut o = onnx_protobuf::OperatorSetIdProto::new();
    o.version = 17;
    m.opset_import.push(o);
    m.graph = Some(g).into();
    std::fs::write(path, m.write_to_bytes().unwrap()).unwrap();
}

/// y = Relu(x + b), x: f32[4, 256] (compiles in a moment).
fn relu_model(path: &Path) {
    let mut g = onnx_protobuf::GraphProto::new();
    g.name = "relu".into();
    g.input.push(onnx_value("x", 1, &[4, 256]));
    g.output.push(onnx_value("y", 1, &[4, 256]));
    let b: Vec<f32> = (0..256).map(|i| i as f32 * 0.01 - 1.0).collect();
    g.initializer.push(onnx_weight("b", &[256], &b));
    g.node.push(onnx_node("Add", &["x", "b"], "s"));
    g.node.push(onnx_node("Relu", &["s"], "y"));
    write_onnx(path, g);
}

/// y = Dropout(x, 0.5, training) with the training mode a graph input: it cannot compile.
fn dropout_model(path: &Path) {
    let mut g = onnx_protobuf::GraphProto::new();
    g.name = "dropout".into();
    g.input.push(onnx_value("x", 1, &[1, 4]));
    g.input.push(onnx_value("training", 9, &[]));
    g.initializer.push(onnx_weight("ratio", &[], &[0.5]));
    g.output.push(onnx_value("y", 1, &[1, 4]));
    g.node.push(onnx_node("Dropout", &["x", "ratio", "training"], "y"));
    write_onnx(path, g);
}

fn push_build_pull_verify_and_refuse_tampering(backend: Backend) {
    let hub = Hub::start(backend, |_| {});
    let (_, alice) = hub.user("alice");
    let rev = alice.push("alice/bert_tiny", &models().join("bert_tiny.onnx"), false).unwrap();
    assert_eq!(rev.number, 1);
    assert_eq!(rev.digest, xforge_hub::sha256_hex(&std::fs::read(models().join("bert_tiny.onnx")).unwrap()));
    let (stop, worker) = hub.worker("w1");

    // the pull finds no artifact, requests the build, waits, downloads and verifies
    let spec = BuildSpec::new("sm_90");
    let p = alice.pull("alice/bert_tiny", &spec).unwrap();
    let job = p.built_by.expect("the pull requested a build");
    assert!(!p.from_cache && p.resumed_from == 0 && p.downloaded == p.manifest.artifact.size);
    let bytes = std::fs::read(&p.path).unwrap();
    assert_eq!(xforge_hub::sha256_hex(&bytes), p.manifest.artifact.sha256);
    let a = xforge_runtime::Artifact::from_bytes(&bytes).unwrap();
    assert_eq!(a.header.target, "sm_90");
    assert_eq!(a.header.precision, "fp32");
    assert_eq!(p.manifest.model_digest, rev.digest);
    assert_eq!(p.manifest.compiler_version, xforge_hub::compiler_version());
    // the manifest verifies with the server's key and with no other
    let key = xforge_hub::manifest::parse_key(&hub.server.as_ref().unwrap().key).unwrap();
    assert_eq!(p.signed.verify(&key).unwrap(), p.manifest);
    let other = xforge_hub::manifest::Signer::from_seed([1; 32]);
    assert!(p.signed.verify(&xforge_hub::manifest::parse_key(&other.public_hex()).unwrap()).is_err());

    // the job: done by w1, its log says what happened
    let j = alice.job(job).unwrap();
    assert_eq!(j.state, JobState::Done);
    assert_eq!(j.worker.as_deref(), Some("w1"));
    assert!(
        j.log.contains("claimed by w1") && j.log.contains("compiled in") && j.log.contains("artifact uploaded"),
        "{}",
        j.log
    );

    // again: from the cache, verified, no download; a build request answers with the artifact
    let p2 = alice.pull("alice/bert_tiny", &spec).unwrap();
    assert!(p2.from_cache && p2.downloaded == 0 && p2.built_by.is_none());
    let b = alice.build("alice/bert_tiny", &spec).unwrap();
    assert_eq!(b.artifact.unwrap().blob, p.manifest.artifact.sha256);
    // the library call
    let a2 = alice.pull_artifact("alice/bert_tiny", "sm_90").unwrap();
    assert_eq!(a2.header.model_digest, a.header.model_digest);
    // for this machine's GPU: its target's artifact; without a GPU, an error that says so
    match xforge_runtime::device_target(0) {
        Ok(t) if t == "sm_90" => assert_eq!(alice.from_hub("alice/bert_tiny").unwrap().header.target, t),
        Ok(_) => {} // another GPU: the worker here builds for sm_90 only
        Err(_) => match alice.from_hub("alice/bert_tiny") {
            Err(HubError::BadRequest(m)) => assert!(m.contains("the GPU's target"), "{m}"),
            other => panic!("{:?}", other.map(|a| a.header.target)),
        },
    }

    // downloads: ETag, Range, If-None-Match, 416; anonymous reads a public blob
    let blob_url = format!("{}/api/v1/blobs/{}", hub.url(), p.manifest.artifact.sha256);
    let (s, h, body) = raw("GET", &blob_url, None, &[("Range", "bytes=10-19")], vec![]);
    assert_eq!(s, 206);
    assert_eq!(body, bytes[10..20].to_vec());
    assert_eq!(h["etag"], format!("\"{}\"", p.manifest.artifact.sha256).as_str());
    assert_eq!(h["content-range"], format!("bytes 10-19/{}", bytes.len()).as_str());
    let etag = h["etag"].to_str().unwrap().to_string();
    assert_eq!(raw("GET", &blob_url, None, &[("If-None-Match", &etag)], vec![]).0, 304);
    assert_eq!(raw("GET", &blob_url, None, &[("Range", &format!("bytes={}-", bytes.len()))], vec![]).0, 416);
    let (s, h, body) = raw("HEAD", &blob_url, None, &[], vec![]);
    assert_eq!((s, body.len()), (200, 0));
    assert_eq!(h["content-length"], bytes.len().to_string().as_str());

    // the web pages
    let (s, _, page) = raw("GET", &format!("{}/", hub.url()), None, &[], vec![]);
    assert!(s == 200 && text(&page).contains("alice/bert_tiny"));
    let (s, _, page) = raw("GET", &format!("{}/models/alice/bert_tiny", hub.url()), None, &[], vec![]);
    let page = text(&page);
    assert!(
        s == 200
            && page.contains("sm_90")
            && page.contains(&p.manifest.artifact.sha256)
            && page.contains("xforge hub pull"),
        "{page}"
    );
    let (s, _, page) = raw("GET", &format!("{}/builds/{job}", hub.url()), None, &[], vec![]);
    assert!(s == 200 && text(&page).contains("compiled in"), "{}", text(&page));

    // offline: served from the cache, verified
    let offline_cfg = ClientConfig { offline: true, ..alice.config().clone() };
    let offline = Client::new(offline_cfg.clone()).unwrap();
    let p3 = offline.pull("alice/bert_tiny", &spec).unwrap();
    assert!(p3.from_cache && p3.manifest == p.manifest);
    assert!(matches!(offline.pull("alice/bert_tiny", &BuildSpec::new("sm_80")), Err(HubError::Offline(_))));

    // a tampered cached blob: refused offline; online, removed and downloaded again
    let mut bad = bytes.clone();
    bad[100] ^= 1;
    std::fs::write(&p.path, &bad).unwrap();
    assert!(matches!(offline.pull("alice/bert_tiny", &spec), Err(HubError::Verification(_))));
    let p4 = alice.pull("alice/bert_tiny", &spec).unwrap();
    assert!(!p4.from_cache && p4.downloaded == bytes.len() as u64);
    assert_eq!(std::fs::read(&p4.path).unwrap(), bytes);

    // a tampered cached manifest (another target's worth of bytes, same signature): refused
    let mpath = walk(&alice.cache().root().join("manifests"))
        .into_iter()
        .find(|f| f.extension().is_some_and(|e| e == "json"))
        .unwrap();
    let m = std::fs::read_to_string(&mpath).unwrap();
    std::fs::write(
        &mpath,
        m.replace(&format!("\\\"size\\\":{}", bytes.len()), &format!("\\\"size\\\":{}", bytes.len() + 1)),
    )
    .unwrap();
    assert_ne!(std::fs::read_to_string(&mpath).unwrap(), m, "the test edits the manifest");
    let e = Client::new(offline_cfg).unwrap().pull("alice/bert_tiny", &spec).unwrap_err();
    assert!(matches!(e, HubError::Verification(_)) && e.to_string().contains("signature"), "{e}");

    // a blob tampered with on the server: a fresh client refuses it and keeps nothing
    let server_blob = hub.blob_file(&p.manifest.artifact.sha256);
    assert!(server_blob.exists(), "{}", server_blob.display());
    std::fs::write(&server_blob, &bad).unwrap();
    let fresh = client_at(&hub.url(), None, &hub.dir.path().join("cache-fresh"));
    let e = fresh.pull_with("alice/bert_tiny", &spec, false, Duration::from_secs(1)).unwrap_err();
    assert!(matches!(e, HubError::Verification(_)), "{e}");
    assert!(!fresh.cache().blob_path(&p.manifest.artifact.sha256).unwrap().exists());
    assert!(!fresh.cache().partial_path(&p.manifest.artifact.sha256).unwrap().exists());

    stop.store(true, Ordering::SeqCst);
    let stats = worker.join().unwrap();
    assert_eq!(stats, Stats { done: 1, failed: 0, lost: 0 });
}

fn walk(d: &Path) -> Vec<PathBuf> {
    let mut out = vec![];
    for e in std::fs::read_dir(d).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

fn access_control_and_hostile_input(backend: Backend) {
    let hub = Hub::start(backend, |c| c.max_model_bytes = 1 << 20);
    let url = hub.url();
    let (alice_t, alice) = hub.user("alice");
    let (bob_t, bob) = hub.user("bob");
    let dir = hub.dir.path().join("files");
    std::fs::create_dir_all(&dir).unwrap();
    let secret = dir.join("secret.onnx");
    std::fs::write(&secret, b"the private model's bytes").unwrap();
    let rev = alice.push("alice/secret", &secret, true).unwrap();
    let public = dir.join("public.onnx");
    std::fs::write(&public, b"the public model's bytes").unwrap();
    alice.push("alice/open", &public, false).unwrap();

    // a private repository is not found by anyone else: by name, in lists, by digest, by build
    assert!(matches!(bob.repo("alice/secret"), Err(HubError::NotFound(_))));
    assert!(matches!(bob.build("alice/secret", &BuildSpec::new("sm_90")), Err(HubError::NotFound(_))));
    assert!(!bob.list(None).unwrap().iter().any(|r| r.name == "secret"));
    assert!(bob.list(None).unwrap().iter().any(|r| r.name == "open"));
    let anon = client_at(&url, None, &hub.dir.path().join("cache-anon"));
    assert!(matches!(anon.repo("alice/secret"), Err(HubError::NotFound(_))));
    let blob = format!("{url}/api/v1/blobs/{}", rev.digest);
    for t in [Some(bob_t.as_str()), None] {
        let (s, _, body) = raw("GET", &blob, t, &[], vec![]);
        assert_eq!(s, 404, "{}", text(&body));
        assert!(!text(&body).contains("private model"));
        assert_eq!(raw("GET", &format!("{url}/models/alice/secret"), t, &[], vec![]).0, 404);
    }
    // the same answer as for a repository that does not exist
    assert_eq!(raw("GET", &format!("{url}/api/v1/repos/alice/secret"), Some(&bob_t), &[], vec![]).0, 404);
    assert_eq!(raw("GET", &format!("{url}/api/v1/repos/alice/nothing"), Some(&bob_t), &[], vec![]).0, 404);
    let (s, _, body) = raw("GET", &blob, Some(&alice_t), &[], vec![]);
    assert_eq!((s, body.as_slice()), (200, b"the private model's bytes".as_slice()));
    assert!(hub.admin.repo("alice/secret").is_ok());
    // visible but not one's own: forbidden to change
    assert!(matches!(bob.push("alice/open", &public, false), Err(HubError::Forbidden(_))));
    assert!(matches!(bob.delete("alice/open"), Err(HubError::Forbidden(_))));
    assert!(matches!(bob.create_repo("alice/mine", false), Err(HubError::Forbidden(_))));

    // tokens: none, forged, malformed, too few scopes
    assert!(matches!(anon.push("alice/open", &public, false), Err(HubError::Unauthorized(_))));
    // a refused upload is read before the answer: the client sees the 401, not a reset
    // connection, however much it was still sending
    let big = dir.join("big_refused.onnx");
    std::fs::write(&big, vec![7u8; 8 << 20]).unwrap();
    for _ in 0..3 {
        assert!(matches!(anon.push("alice/open", &big, false), Err(HubError::Unauthorized(_))));
        assert!(matches!(bob.push("alice/open", &big, false), Err(HubError::Forbidden(_))));
    }
    let forged = format!("xfh_{}", "0".repeat(64));
    assert_eq!(raw("GET", &format!("{url}/api/v1/whoami"), Some(&forged), &[], vec![]).0, 401);
    assert_eq!(raw("GET", &format!("{url}/api/v1/repos"), None, &[("Authorization", "Bearer ../../x")], vec![]).0, 401);
    assert_eq!(raw("GET", &format!("{url}/api/v1/repos"), None, &[("Authorization", "Basic YTpi")], vec![]).0, 401);
    let reader = hub.admin.create_token("bob", &["read"], "ro").unwrap();
    let ro = client_at(&url, Some(&reader), &hub.dir.path().join("cache-ro"));
    assert!(matches!(ro.push("bob/x", &public, false), Err(HubError::Forbidden(_))));
    assert!(matches!(bob.create_user("mallory", true), Err(HubError::Forbidden(_))));
    assert!(matches!(bob.claim("sm_90", "w", "v"), Err(HubError::Forbidden(_))));
    assert!(matches!(hub.admin.create_token("bob", &["admin"], ""), Err(HubError::BadRequest(_))));
    assert!(matches!(hub.admin.create_token("bob", &["root"], ""), Err(HubError::BadRequest(_))));

    // path traversal in names: refused before any query or path
    let post_repo = |body: &str| {
        raw(
            "POST",
            &format!("{url}/api/v1/repos"),
            Some(&alice_t),
            &[("Content-Type", "application/json")],
            body.into(),
        )
    };
    for name in ["../evil", "alice/..", "alice/.hidden", "alice/a\\b", "..", "alice/a%2f..%2fb", "alice/x y"] {
        let (s, _, body) = post_repo(&format!("{{\"name\": {}}}", serde_json::json!(name)));
        assert_eq!(s, 400, "{name}: {}", text(&body));
        assert!(text(&body).contains("\"code\":\"bad_request\""), "{}", text(&body));
    }
    for path in [
        "/api/v1/repos/%2e%2e/x",
        "/api/v1/repos/alice/%2e%2e",
        "/api/v1/repos/alice/..%2f..%2fhub.db",
        "/api/v1/blobs/..%2f..%2fhub.db",
        "/models/%2e%2e/x",
    ] {
        let s = raw("GET", &format!("{url}{path}"), Some(&alice_t), &[], vec![]).0;
        assert!(s == 400 || s == 404, "{path}: {s}");
    }
    let (s, _, body) = raw(
        "POST",
        &format!("{url}/api/v1/repos/alice/open/revisions?filename=../../x.onnx"),
        Some(&alice_t),
        &[],
        b"x".to_vec(),
    );
    assert_eq!(s, 400, "{}", text(&body));
    assert!(text(&body).contains("filename"));
    // nothing was written outside the hub's folder
    let mut top: Vec<String> = std::fs::read_dir(hub.dir.path().join("hub"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    top.sort();
    top.retain(|f| !f.starts_with("hub.db-"));
    match hub.backend {
        Backend::Embedded => assert_eq!(top, ["admin.token", "blobs", "hub.db", "hub.key"]),
        Backend::PostgresS3 => assert_eq!(top, ["admin.token", "hub.key", "staging"]),
    }
    assert!(walk(hub.dir.path()).iter().all(|p| !p.ends_with("x.onnx") && !p.to_string_lossy().contains("evil")));

    // malformed JSON: a clear error naming what is wrong
    let (s, _, body) = post_repo("{not json");
    assert_eq!(s, 400);
    assert!(text(&body).contains("invalid JSON"), "{}", text(&body));
    let (s, _, body) = post_repo("{\"nmae\": \"x\"}");
    assert_eq!(s, 400);
    assert!(text(&body).contains("nmae"), "{}", text(&body));
    let (s, _, body) = post_repo("{\"name\": 7}");
    assert_eq!(s, 400);
    assert!(text(&body).contains("invalid type"), "{}", text(&body));
    let (s, _, body) = raw(
        "POST",
        &format!("{url}/api/v1/repos/alice/open/builds"),
        Some(&alice_t),
        &[],
        br#"{"target": "sm_90", "precision": "fp64"}"#.to_vec(),
    );
    assert_eq!(s, 400);
    assert!(text(&body).contains("precision"), "{}", text(&body));
    let (s, _, body) = raw(
        "POST",
        &format!("{url}/api/v1/repos/alice/open/builds"),
        Some(&alice_t),
        &[],
        br#"{"target": "sm_90", "batch": [8, 1]}"#.to_vec(),
    );
    assert_eq!(s, 400);
    assert!(text(&body).contains("batch"), "{}", text(&body));
    // an oversized JSON body
    let big = format!("{{\"name\": \"{}\"}}", "a".repeat(100_000));
    assert_eq!(post_repo(&big).0, 413);

    // an oversized upload: refused, nothing stored
    let blobs_before = hub.blob_files().len();
    let huge = dir.join("huge.onnx");
    std::fs::write(&huge, vec![7u8; (1 << 20) + 4096]).unwrap();
    let e = alice.push("alice/open", &huge, false).unwrap_err();
    assert!(matches!(e, HubError::TooLarge(_)), "{e}");
    assert_eq!(hub.blob_files().len(), blobs_before);
    assert_eq!(alice.repo("alice/open").unwrap().revisions.len(), 1);

    // deleting a repository removes its blobs when nothing else holds them
    let blob_file = hub.blob_file(&rev.digest);
    assert!(blob_file.exists());
    alice.delete("alice/secret").unwrap();
    assert!(!blob_file.exists());
    assert!(matches!(alice.repo("alice/secret"), Err(HubError::NotFound(_))));

    // a restart keeps everything acknowledged; no second admin token; the same key
    let key = hub.server.as_ref().unwrap().key.clone();
    let mut hub = hub;
    let cfg = hub.server.as_ref().unwrap().hub.cfg.clone();
    hub.server.take().unwrap().stop().unwrap();
    let again = RunningServer::start(ServerConfig { listen: "127.0.0.1:0".into(), ..cfg }).unwrap();
    assert!(again.admin_token.is_none());
    assert_eq!(again.key, key);
    let alice2 = client_at(&again.url, Some(&alice_t), &hub.dir.path().join("cache-alice2"));
    assert_eq!(alice2.repo("alice/open").unwrap().revisions.len(), 1);
    again.stop().unwrap();
}

fn a_compile_failure_fails_the_job_and_the_worker_goes_on(backend: Backend) {
    let hub = Hub::start(backend, |_| {});
    let (_, alice) = hub.user("alice");
    let dir = hub.dir.path().join("files");
    std::fs::create_dir_all(&dir).unwrap();
    dropout_model(&dir.join("dropout.onnx"));
    relu_model(&dir.join("relu.onnx"));
    alice.push("alice/dropout", &dir.join("dropout.onnx"), false).unwrap();
    alice.push("alice/relu", &dir.join("relu.onnx"), false).unwrap();
    let (stop, worker) = hub.worker("w1");

    let b = alice.build("alice/dropout", &BuildSpec::new("sm_90")).unwrap();
    let id = b.job.unwrap().id;
    let e = alice.wait(id, Duration::from_secs(300)).unwrap_err();
    assert!(
        matches!(&e, HubError::BuildFailed(m) if m.contains("compile") && m.to_lowercase().contains("dropout")),
        "{e}"
    );
    let j = alice.job(id).unwrap();
    assert_eq!(j.state, JobState::Failed);
    assert!(j.log.contains("error: compile"), "{}", j.log);
    // a pull says why
    let e = alice.pull_with("alice/dropout", &BuildSpec::new("sm_90"), true, Duration::from_secs(60)).unwrap_err();
    assert!(matches!(e, HubError::BuildFailed(_)), "{e}");
    let (_, _, page) = raw("GET", &format!("{}/builds/{id}", hub.url()), None, &[], vec![]);
    assert!(text(&page).contains("failed"));

    // the same worker builds the next job
    let p = alice.pull("alice/relu", &BuildSpec::new("sm_90")).unwrap();
    let j = alice.job(p.built_by.unwrap()).unwrap();
    assert_eq!(j.worker.as_deref(), Some("w1"));
    xforge_runtime::Artifact::from_bytes(&std::fs::read(&p.path).unwrap()).unwrap();

    stop.store(true, Ordering::SeqCst);
    let stats = worker.join().unwrap();
    assert_eq!((stats.done, stats.lost), (1, 0));
    assert!(stats.failed >= 1);
}

fn a_worker_that_stops_heartbeating_loses_its_lease(backend: Backend) {
    let hub = Hub::start(backend, |c| c.lease_seconds = 1);
    let (_, alice) = hub.user("alice");
    let dir = hub.dir.path().join("files");
    std::fs::create_dir_all(&dir).unwrap();
    relu_model(&dir.join("relu.onnx"));
    alice.push("alice/relu", &dir.join("relu.onnx"), false).unwrap();
    let id = alice.build("alice/relu", &BuildSpec::new("sm_90")).unwrap().job.unwrap().id;
    // a second request for the same build joins the queued job
    assert_eq!(alice.build("alice/relu", &BuildSpec::new("sm_90")).unwrap().job.unwrap().id, id);

    // "dead" claims the job and never answers again
    let dead = client_at(&hub.url(), Some(&hub.worker_token()), &hub.dir.path().join("cache-dead"));
    let j = dead.claim("sm_90", "dead", &xforge_hub::compiler_version()).unwrap().unwrap();
    assert_eq!((j.id, j.attempts, j.state), (id, 1, JobState::Running));
    // a worker of another compiler version gets nothing
    assert!(dead.claim("sm_90", "old", "0.0.0-xfa1").unwrap().is_none());
    let (stop, worker) = hub.worker("w2");
    let done = alice.wait(id, Duration::from_secs(300)).unwrap();
    assert_eq!(done.worker.as_deref(), Some("w2"));
    assert_eq!(done.attempts, 2);
    assert!(
        done.log.contains("lease of dead expired") && done.log.contains("claimed by w2 (attempt 2)"),
        "{}",
        done.log
    );
    // the dead worker, back, holds nothing
    assert!(matches!(dead.heartbeat(id, "dead", ""), Err(HubError::Conflict(_))));
    assert!(matches!(dead.upload_artifact(id, "dead", b"forged".to_vec()), Err(HubError::Conflict(_))));
    assert!(matches!(dead.fail_job(id, "dead", "x", ""), Err(HubError::Conflict(_))));
    let p = alice.pull("alice/relu", &BuildSpec::new("sm_90")).unwrap();
    assert!(p.built_by.is_none());
    xforge_runtime::Artifact::from_bytes(&std::fs::read(&p.path).unwrap()).unwrap();
    stop.store(true, Ordering::SeqCst);
    assert_eq!(worker.join().unwrap().done, 1);
}

fn a_job_whose_leases_keep_expiring_fails(backend: Backend) {
    let hub = Hub::start(backend, |c| {
        c.lease_seconds = 1;
        c.max_attempts = 2;
    });
    let (_, alice) = hub.user("alice");
    let dir = hub.dir.path().join("files");
    std::fs::create_dir_all(&dir).unwrap();
    relu_model(&dir.join("relu.onnx"));
    alice.push("alice/relu", &dir.join("relu.onnx"), false).unwrap();
    let id = alice.build("alice/relu", &BuildSpec::new("sm_90")).unwrap().job.unwrap().id;
    let w = client_at(&hub.url(), Some(&hub.worker_token()), &hub.dir.path().join("cache-w"));
    let cv = xforge_hub::compiler_version();
    assert_eq!(w.claim("sm_90", "crash1", &cv).unwrap().unwrap().id, id);
    assert!(w.claim("sm_90", "crash2", &cv).unwrap().is_none(), "the lease still holds");
    std::thread::sleep(Duration::from_millis(1100));
    assert_eq!(w.claim("sm_90", "crash2", &cv).unwrap().unwrap().attempts, 2);
    std::thread::sleep(Duration::from_millis(1100));
    assert!(w.claim("sm_90", "crash3", &cv).unwrap().is_none());
    let e = alice.wait(id, Duration::from_secs(5)).unwrap_err();
    assert!(matches!(&e, HubError::BuildFailed(m) if m.contains("lease expired")), "{e}");
}

/// A TCP proxy that cuts the first blob download after `keep` bytes of its body.
struct CutProxy {
    url: String,
    cuts: Arc<AtomicU64>,
}

fn cut_proxy(upstream: std::net::SocketAddr, keep: usize) -> CutProxy {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", l.local_addr().unwrap());
    let cuts = Arc::new(AtomicU64::new(0));
    let c2 = cuts.clone();
    std::thread::spawn(move || {
        for conn in l.incoming().take(64) {
            let Ok(down) = conn else { continue };
            let Ok(up) = TcpStream::connect(upstream) else { continue };
            let (mut d2, mut u2) = (down.try_clone().unwrap(), up.try_clone().unwrap());
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut d2, &mut u2);
                let _ = u2.shutdown(std::net::Shutdown::Write);
            });
            let cuts = c2.clone();
            std::thread::spawn(move || {
                let (mut up, mut down) = (up, down);
                let mut buf = vec![0u8; 1 << 16];
                // body bytes still to pass before the cut, once the blob's answer started
                let mut left: Option<usize> = None;
                loop {
                    let n = match up.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => n,
                    };
                    let mut chunk = &buf[..n];
                    if left.is_none() && cuts.load(Ordering::SeqCst) == 0 && chunk.starts_with(b"HTTP/1.1 200") {
                        let head_end = chunk.windows(4).position(|w| w == b"\r\n\r\n");
                        if let Some(e) =
                            head_end.filter(|&e| text(&chunk[..e]).to_lowercase().contains("application/octet-stream"))
                        {
                            cuts.fetch_add(1, Ordering::SeqCst);
                            if down.write_all(&chunk[..e + 4]).is_err() {
                                break;
                            }
                            chunk = &chunk[e + 4..];
                            left = Some(keep);
                        }
                    }
                    if let Some(l) = left {
                        let k = l.min(chunk.len());
                        let _ = down.write_all(&chunk[..k]);
                        left = Some(l - k);
                        if l - k == 0 {
                            let _ = down.flush();
                            let _ = down.shutdown(std::net::Shutdown::Both);
                            let _ = up.shutdown(std::net::Shutdown::Both);
                            return;
                        }
                        continue;
                    }
                    if down.write_all(chunk).is_err() {
                        break;
                    }
                }
                let _ = down.shutdown(std::net::Shutdown::Write);
            });
        }
    });
    CutProxy { url, cuts }
}

fn a_cut_download_resumes(backend: Backend) {
    let hub = Hub::start(backend, |_| {});
    let (alice_t, alice) = hub.user("alice");
    let dir = hub.dir.path().join("files");
    std::fs::create_dir_all(&dir).unwrap();
    relu_model(&dir.join("relu.onnx"));
    alice.push("alice/relu", &dir.join("relu.onnx"), false).unwrap();
    let (stop, worker) = hub.worker("w1");
    let first = alice.pull("alice/relu", &BuildSpec::new("sm_90")).unwrap();
    stop.store(true, Ordering::SeqCst);
    worker.join().unwrap();
    let size = first.manifest.artifact.size;
    assert!(size > 2000, "{size}");

    let keep = (size / 2) as usize;
    let proxy = cut_proxy(hub.server.as_ref().unwrap().addr, keep);
    let cache = hub.dir.path().join("cache-through-proxy");
    let c = client_at(&proxy.url, Some(&alice_t), &cache);
    // the key pinned from the real address (the proxy is another URL: pin it explicitly)
    let c =
        Client::new(ClientConfig { server_key: Some(hub.server.as_ref().unwrap().key.clone()), ..c.config().clone() })
            .unwrap();
    let e = c.pull_with("alice/relu", &BuildSpec::new("sm_90"), false, Duration::from_secs(1)).unwrap_err();
    assert_eq!(proxy.cuts.load(Ordering::SeqCst), 1);
    assert!(matches!(&e, HubError::Http(m) if m.contains("resume")), "{e}");
    let part = c.cache().partial_path(&first.manifest.artifact.sha256).unwrap();
    let have = std::fs::metadata(&part).unwrap().len();
    assert!(have > 0 && have <= keep as u64, "{have} of {size}");
    // again: the rest only, then verified
    let p = c.pull_with("alice/relu", &BuildSpec::new("sm_90"), false, Duration::from_secs(1)).unwrap();
    assert_eq!(p.resumed_from, have);
    assert_eq!(p.downloaded, size - have);
    assert_eq!(std::fs::read(&p.path).unwrap(), std::fs::read(&first.path).unwrap());
    assert!(!part.exists());
}

fn concurrent_claims_take_each_job_once(backend: Backend) {
    let hub = Hub::start(backend, |_| {});
    let (_, alice) = hub.user("alice");
    let dir = hub.dir.path().join("files");
    std::fs::create_dir_all(&dir).unwrap();
    // 12 distinct builds of one model: a key each (precision, option, target)
    relu_model(&dir.join("relu.onnx"));
    alice.push("alice/relu", &dir.join("relu.onnx"), false).unwrap();
    let mut ids = vec![];
    for p in ["fp32", "fp16", "bf16"] {
        for o in ["true", "false"] {
            for t in ["sm_80", "sm_90"] {
                let spec = BuildSpec::new(t).precision(p).option("generated_gemm", o);
                ids.push(alice.build("alice/relu", &spec).unwrap().job.unwrap().id);
            }
        }
    }
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 12);
    // 6 claimers race for them: every job is claimed exactly once
    let token = hub.worker_token();
    let url = hub.url();
    let cv = xforge_hub::compiler_version();
    let threads: Vec<_> = (0..6)
        .map(|i| {
            let (token, url, cv, cache) =
                (token.clone(), url.clone(), cv.clone(), hub.dir.path().join(format!("cache-c{i}")));
            std::thread::spawn(move || {
                let c = client_at(&url, Some(&token), &cache);
                let mut got = vec![];
                for t in ["sm_80", "sm_90"] {
                    while let Some(j) = c.claim(t, &format!("claimer{i}"), &cv).unwrap() {
                        got.push(j.id);
                    }
                }
                got
            })
        })
        .collect();
    let mut claimed: Vec<i64> = threads.into_iter().flat_map(|t| t.join().unwrap()).collect();
    claimed.sort();
    assert_eq!(claimed, ids);
    for id in ids {
        let j = alice.job(id).unwrap();
        assert_eq!((j.state, j.attempts), (JobState::Running, 1));
    }
}

fn large_blobs_round_trip_with_ranges(backend: Backend) {
    let hub = Hub::start(backend, |_| {});
    let (alice_t, alice) = hub.user("alice");
    let dir = hub.dir.path().join("files");
    std::fs::create_dir_all(&dir).unwrap();
    // 20 MiB of noise: a multipart upload to S3 (8 MiB parts), ranges across part boundaries
    let mut bytes = vec![0u8; 20 << 20];
    let mut x = 0x2545_f491_4f6c_dd1du64;
    for b in bytes.iter_mut() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = x as u8;
    }
    std::fs::write(dir.join("big.onnx"), &bytes).unwrap();
    let rev = alice.push("alice/big", &dir.join("big.onnx"), true).unwrap();
    assert_eq!(rev.digest, xforge_hub::sha256_hex(&bytes));
    assert_eq!(rev.size as usize, bytes.len());
    let url = format!("{}/api/v1/blobs/{}", hub.url(), rev.digest);
    let (s, _, body) = raw("GET", &url, Some(&alice_t), &[], vec![]);
    assert_eq!(s, 200);
    assert!(body == bytes, "the blob reads back whole");
    let a = (8 << 20) - 10;
    let (s, _, body) = raw("GET", &url, Some(&alice_t), &[("Range", &format!("bytes={a}-{}", a + 99))], vec![]);
    assert_eq!(s, 206);
    assert_eq!(body, bytes[a..a + 100].to_vec());
    let (s, _, body) = raw("GET", &url, Some(&alice_t), &[("Range", "bytes=-5")], vec![]);
    assert_eq!((s, body), (206, bytes[bytes.len() - 5..].to_vec()));
    // the same bytes again: stored once
    let files = hub.blob_files().len();
    alice.push("alice/big", &dir.join("big.onnx"), true).unwrap();
    assert_eq!(hub.blob_files().len(), files);
    assert_eq!(alice.repo("alice/big").unwrap().revisions.len(), 2);
}

/// Load: 64 clients (8 users, 8 clients each, every client with its own cache) in threads, 5,000
/// mixed operations in all (`XFORGE_HUB_LOAD_OPS` to change it): pushes of a revision, pulls (every
/// other one into an empty cache: a download, then the signature, sha256, size and format
/// checked), build requests for an artifact that exists, listings. Zero errors; p50/p99 per
/// operation printed (`--nocapture`; BENCH.md keeps them), as the clients saw them and, per
/// route, as the server saw them (handler time: no wait for a core before the request is read,
/// none of the clients' own work). One load at a time: the two back-ends' loads would otherwise
/// run side by side on the same cores (128 clients, each load measured under the other).
fn load_of_64_clients(backend: Backend) {
    static ONE_LOAD_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one = ONE_LOAD_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let hub = Hub::start(backend, |_| {});
    let model = hub.dir.path().join("relu.onnx");
    relu_model(&model);
    let (stop, worker) = hub.worker("w1");
    let spec = BuildSpec::new("sm_90");
    let tokens: Vec<String> = (0..8)
        .map(|u| {
            let (t, c) = hub.user(&format!("u{u}"));
            c.push(&format!("u{u}/relu"), &model, u % 2 == 1).unwrap();
            c.pull(&format!("u{u}/relu"), &spec).unwrap();
            t
        })
        .collect();
    let total: usize = std::env::var("XFORGE_HUB_LOAD_OPS").ok().and_then(|v| v.parse().ok()).unwrap_or(5000);
    let (clients, kinds) = (64, ["push", "pull", "build", "list"]);
    let server_side = &hub.server.as_ref().unwrap().hub.latency;
    server_side.reset();
    let t0 = std::time::Instant::now();
    let results: Vec<Vec<(usize, Duration, Result<(), String>)>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..clients)
            .map(|k| {
                let (url, dir, token, model, spec) =
                    (hub.url(), hub.dir.path().to_path_buf(), tokens[k % 8].clone(), model.clone(), spec.clone());
                scope.spawn(move || {
                    let user = format!("u{}", k % 8);
                    let client = client_at(&url, Some(&token), &dir.join(format!("cache-load-{k}")));
                    let ops = total / clients + usize::from(k < total % clients);
                    (0..ops)
                        .map(|i| {
                            let kind = (i + k) % 4;
                            let t = std::time::Instant::now();
                            let r = match kind {
                                0 => client.push(&format!("{user}/load{k}"), &model, false).map(|_| ()),
                                1 if i % 8 == 1 => {
                                    // into an empty cache: a whole download, verified
                                    let fresh = client_at(&url, Some(&token), &dir.join(format!("cache-load-{k}-{i}")));
                                    fresh.pull(&format!("{user}/relu"), &spec).map(|p| assert!(!p.from_cache))
                                }
                                1 => client.pull(&format!("{user}/relu"), &spec).map(|_| ()),
                                2 => {
                                    client.build(&format!("{user}/relu"), &spec).map(|b| assert!(b.artifact.is_some()))
                                }
                                _ => client.list(None).map(|l| assert!(!l.is_empty())),
                            };
                            (kind, t.elapsed(), r.map_err(|e| e.to_string()))
                        })
                        .collect()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let secs = t0.elapsed().as_secs_f64();
    let all: Vec<_> = results.into_iter().flatten().collect();
    let errors: Vec<&String> = all.iter().filter_map(|(_, _, r)| r.as_ref().err()).collect();
    assert!(errors.is_empty(), "{} of {} operations failed, first: {}", errors.len(), all.len(), errors[0]);
    assert_eq!(all.len(), total);
    let mut line = format!("hub load ({backend:?}): {clients} clients, {total} operations in {secs:.1} s");
    for (k, name) in kinds.iter().enumerate() {
        let mut ms: Vec<f64> =
            all.iter().filter(|(kind, ..)| *kind == k).map(|(_, d, _)| d.as_secs_f64() * 1e3).collect();
        ms.sort_by(|a, b| a.total_cmp(b));
        let q = |f: f64| ms[((ms.len() as f64 * f).ceil() as usize).clamp(1, ms.len()) - 1];
        line.push_str(&format!("; {name} ×{} p50 {:.1} ms p99 {:.1} ms", ms.len(), q(0.5), q(0.99)));
    }
    eprintln!("{line}");
    for r in server_side.snapshot() {
        eprintln!(
            "  server-side ({backend:?}) {} ×{}: p50 {:.2} ms p99 {:.2} ms max {:.1} ms",
            r.route, r.count, r.p50_ms, r.p99_ms, r.max_ms
        );
    }
    stop.store(true, Ordering::SeqCst);
    worker.join().unwrap();
}

/// Download throughput of a 400 MB blob on loopback (embedded store; by hand, it writes 1.2 GB:
/// `cargo test --release -p xforge-hub --test hub -- --ignored --nocapture`): the median of three
/// whole downloads through the client, each checked against the blob's sha256.
#[test]
#[ignore]
fn a_400_mb_blob_downloads_on_loopback() {
    let hub = Hub::start(Backend::Embedded, |c| c.max_model_bytes = 1 << 30);
    let (_, alice) = hub.user("alice");
    let dir = hub.dir.path().join("files");
    std::fs::create_dir_all(&dir).unwrap();
    let mut bytes = vec![0u8; 400_000_000];
    let mut x = 0x2545_f491_4f6c_dd1du64;
    for b in bytes.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        b.copy_from_slice(&x.to_le_bytes()[..b.len()]);
    }
    std::fs::write(dir.join("big.onnx"), &bytes).unwrap();
    let rev = alice.push("alice/big", &dir.join("big.onnx"), false).unwrap();
    drop(bytes);
    let mut secs = vec![];
    for k in 0..3 {
        let dest = dir.join(format!("down{k}"));
        let t = std::time::Instant::now();
        assert_eq!(alice.fetch_blob(&rev.digest, &dest).unwrap() as i64, rev.size);
        secs.push(t.elapsed().as_secs_f64());
        assert_eq!(xforge_hub::sha256_hex(&std::fs::read(&dest).unwrap()), rev.digest);
        std::fs::remove_file(&dest).unwrap();
    }
    secs.sort_by(|a, b| a.total_cmp(b));
    eprintln!(
        "hub download: {} MB in {:.2} s (median of 3): {:.0} MB/s",
        rev.size / 1_000_000,
        secs[1],
        rev.size as f64 / secs[1] / 1e6
    );
}

/// Every test on both back-ends.
/// Organizations: an admin adds members with roles; members see the organization's private
/// repositories (read), push and build (write), manage members (admin); others get 404 for its
/// repositories and its member list; an organization takes no tokens and keeps an admin.
fn organizations_share_repositories_by_role(backend: Backend) {
    let hub = Hub::start(backend, |_| {});
    let url = hub.url();
    let (alice_t, alice) = hub.user("alice");
    let (_, bob) = hub.user("bob");
    let (carol_t, carol) = hub.user("carol");
    let (dave_t, dave) = hub.user("dave");
    alice.create_org("acme").unwrap();
    assert!(matches!(bob.create_org("acme"), Err(HubError::Conflict(_))), "one namespace for users and orgs");
    assert!(matches!(bob.create_org("alice"), Err(HubError::Conflict(_))));
    alice.set_member("acme", "bob", "write").unwrap();
    alice.set_member("acme", "carol", "read").unwrap();
    let mut m = alice.members("acme").unwrap();
    m.sort();
    let want = [("alice", "admin"), ("bob", "write"), ("carol", "read")];
    assert_eq!(m, want.iter().map(|(u, r)| (u.to_string(), r.to_string())).collect::<Vec<_>>());

    // a writer pushes a private model into the organization; every member sees it, nobody else
    let dir = hub.dir.path().join("files");
    std::fs::create_dir_all(&dir).unwrap();
    let model = dir.join("acme.onnx");
    std::fs::write(&model, b"acme's private model").unwrap();
    let rev = bob.push("acme/secret", &model, true).unwrap();
    for c in [&alice, &bob, &carol] {
        assert_eq!(c.repo("acme/secret").unwrap().repo.owner, "acme");
        assert!(c.list(None).unwrap().iter().any(|r| r.owner == "acme" && r.name == "secret"));
    }
    let blob = format!("{url}/api/v1/blobs/{}", rev.digest);
    assert_eq!(raw("GET", &blob, Some(&carol_t), &[], vec![]).0, 200, "a reader downloads");
    assert_eq!(raw("GET", &format!("{url}/models/acme/secret"), Some(&carol_t), &[], vec![]).0, 200);
    assert!(matches!(dave.repo("acme/secret"), Err(HubError::NotFound(_))));
    assert!(!dave.list(None).unwrap().iter().any(|r| r.owner == "acme"));
    assert_eq!(raw("GET", &blob, Some(&dave_t), &[], vec![]).0, 404);
    assert!(matches!(dave.members("acme"), Err(HubError::NotFound(_))), "the member list is private too");

    // roles: a reader neither pushes nor creates repositories (a build, as of any repository one
    // sees, only fills the cache); a writer does, but manages no members
    assert!(matches!(carol.push("acme/secret", &model, true), Err(HubError::Forbidden(_))));
    assert!(matches!(carol.create_repo("acme/other", false), Err(HubError::Forbidden(_))));
    assert!(matches!(carol.delete("acme/secret"), Err(HubError::Forbidden(_))));
    carol.build("acme/secret", &BuildSpec::new("sm_90")).unwrap();
    assert!(matches!(dave.build("acme/secret", &BuildSpec::new("sm_90")), Err(HubError::NotFound(_))));
    bob.create_repo("acme/other", false).unwrap();
    assert!(matches!(bob.set_member("acme", "dave", "read"), Err(HubError::Forbidden(_))));
    assert!(matches!(dave.set_member("acme", "dave", "admin"), Err(HubError::NotFound(_))));
    assert!(matches!(alice.set_member("acme", "dave", "owner"), Err(HubError::BadRequest(_))));
    assert!(matches!(alice.set_member("acme", "acme", "read"), Err(HubError::BadRequest(_))));
    // an organization takes no tokens, and keeps its last admin
    assert!(matches!(hub.admin.create_token("acme", &["read"], ""), Err(HubError::BadRequest(_))));
    assert!(matches!(alice.remove_member("acme", "alice"), Err(HubError::Conflict(_))));

    // a member taken out sees nothing any more
    alice.remove_member("acme", "carol").unwrap();
    assert!(matches!(carol.repo("acme/secret"), Err(HubError::NotFound(_))));
    assert_eq!(raw("GET", &blob, Some(&carol_t), &[], vec![]).0, 404);
    // promoted, a writer manages members; the first admin can then leave
    alice.set_member("acme", "bob", "admin").unwrap();
    bob.set_member("acme", "dave", "read").unwrap();
    assert!(dave.repo("acme/secret").is_ok());
    bob.remove_member("acme", "alice").unwrap();
    assert!(matches!(alice.repo("acme/secret"), Err(HubError::NotFound(_))));
    let (s, _, _) = raw("GET", &format!("{url}/api/v1/orgs/acme/members"), Some(&alice_t), &[], vec![]);
    assert_eq!(s, 404);
}

/// Tokens: a user mints their own (at most the scopes of the token that asks), lists them
/// (never the secrets), and revokes one, which stops working at once; another user neither sees
/// nor revokes them; an admin does both for anyone.
fn tokens_are_self_service_and_revocable(backend: Backend) {
    let hub = Hub::start(backend, |_| {});
    let url = hub.url();
    let (alice_t, alice) = hub.user("alice");
    let (_, bob) = hub.user("bob");
    let read_t = alice.create_token("alice", &["read"], "laptop").unwrap();
    let reader = client_at(&url, Some(&read_t), &hub.dir.path().join("cache-reader"));
    assert_eq!(reader.whoami().unwrap().user, "alice");
    // a read token mints no write token; nobody mints admin without being one, or for another
    assert!(matches!(reader.create_token("alice", &["write"], "x"), Err(HubError::Forbidden(_))));
    assert!(matches!(alice.create_token("alice", &["admin"], "x"), Err(HubError::BadRequest(_))));
    assert!(matches!(alice.create_token("bob", &["read"], "x"), Err(HubError::NotFound(_))));
    let mine = alice.tokens("alice").unwrap();
    let labels: Vec<(&str, &str)> = mine.iter().map(|t| (t.label.as_str(), t.scopes.as_str())).collect();
    assert_eq!(labels, [("test", "read,write"), ("laptop", "read")]);
    let (s, _, body) = raw("GET", &format!("{url}/api/v1/users/alice/tokens"), Some(&alice_t), &[], vec![]);
    assert_eq!(s, 200);
    let text = String::from_utf8_lossy(&body);
    assert!(!text.contains(&read_t) && !text.contains("hash"), "{text}");
    // bob neither lists nor revokes alice's tokens (404, as for a user without tokens)
    assert!(matches!(bob.tokens("alice"), Err(HubError::NotFound(_))));
    assert!(matches!(bob.revoke_token("alice", mine[1].id), Err(HubError::NotFound(_))));
    // revoked: the token is unknown from the next request on
    alice.revoke_token("alice", mine[1].id).unwrap();
    assert!(matches!(reader.whoami(), Err(HubError::Unauthorized(_))));
    assert!(matches!(alice.revoke_token("alice", mine[1].id), Err(HubError::NotFound(_))));
    // an admin lists and revokes anyone's
    assert_eq!(hub.admin.tokens("bob").unwrap().len(), 1);
    let bobs = hub.admin.tokens("bob").unwrap()[0].id;
    hub.admin.revoke_token("bob", bobs).unwrap();
    assert!(matches!(bob.whoami(), Err(HubError::Unauthorized(_))));
    assert_eq!(alice.whoami().unwrap().user, "alice");
}

/// Garbage collection: a blob nothing references (what a crash between storing a blob and
/// recording it leaves) goes once older than the grace period; referenced blobs, however old,
/// and recent orphans stay; only an admin collects; storing an orphan's content again makes it
/// recent (so a collection cannot take it before its new record lands).
fn garbage_collection_removes_only_old_orphans(backend: Backend) {
    use std::time::{Duration, SystemTime};
    let hub = Hub::start(backend, |_| {});
    let (_, alice) = hub.user("alice");
    let dir = hub.dir.path().join("files");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("m.onnx"), b"alice's model").unwrap();
    let rev = alice.push("alice/m", &dir.join("m.onnx"), false).unwrap();
    let age = |digest: &str, secs: u64| {
        let f = std::fs::File::options().write(true).open(hub.blob_file(digest)).unwrap();
        f.set_modified(SystemTime::now() - Duration::from_secs(secs)).unwrap();
    };
    // orphans as a crash leaves them: in the store, in no record
    let orphan = |bytes: &[u8], secs: u64| -> String {
        let d = xforge_hub::sha256_hex(bytes);
        let p = hub.blob_file(&d);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, bytes).unwrap();
        age(&d, secs);
        d
    };
    let old = orphan(b"left by a crash", 7200);
    let recent = orphan(b"an upload on its way", 10);
    age(&rev.digest, 7200);
    assert!(matches!(alice.collect_garbage(0), Err(HubError::Forbidden(_))));
    assert!(matches!(hub.admin.collect_garbage(10 * 365 * 24 * 3600), Err(HubError::BadRequest(_))));
    let r = hub.admin.collect_garbage(3600).unwrap();
    assert_eq!((r.removed, r.bytes_removed, r.examined), (vec![old.clone()], 15, 3));
    assert!(!hub.blob_file(&old).exists());
    assert!(hub.blob_file(&recent).exists() && hub.blob_file(&rev.digest).exists());
    let r = hub.admin.collect_garbage(0).unwrap();
    assert_eq!(r.removed, vec![recent]);
    let back = dir.join("back");
    alice.fetch_blob(&rev.digest, &back).unwrap();
    assert_eq!(std::fs::read(&back).unwrap(), b"alice's model");
    // an old orphan's content pushed again is stored anew: the next collection spares it
    let again = orphan(b"pushed once more", 7200);
    std::fs::write(dir.join("again.onnx"), b"pushed once more").unwrap();
    alice.push("alice/again", &dir.join("again.onnx"), false).unwrap();
    let stored = std::fs::metadata(hub.blob_file(&again)).unwrap().modified().unwrap();
    assert!(stored.elapsed().unwrap() < Duration::from_secs(600), "{backend:?}: the blob was not stored anew");
    assert_eq!(hub.admin.collect_garbage(0).unwrap().removed, Vec::<String>::new());
}

macro_rules! on_both {
    ($($name:ident),* $(,)?) => {
        mod embedded {
            $( #[test] fn $name() { super::$name(super::Backend::Embedded) } )*
        }
        mod postgres_s3 {
            $( #[test] fn $name() { super::$name(super::Backend::PostgresS3) } )*
        }
    };
}

on_both!(
    push_build_pull_verify_and_refuse_tampering,
    access_control_and_hostile_input,
    a_compile_failure_fails_the_job_and_the_worker_goes_on,
    a_worker_that_stops_heartbeating_loses_its_lease,
    a_job_whose_leases_keep_expiring_fails,
    a_cut_download_resumes,
    concurrent_claims_take_each_job_once,
    large_blobs_round_trip_with_ranges,
    load_of_64_clients,
    organizations_share_repositories_by_role,
    tokens_are_self_service_and_revocable,
    garbage_collection_removes_only_old_orphans,
);
