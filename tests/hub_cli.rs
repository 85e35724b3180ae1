//! `xforge hub` through the binary: the commands' exit codes; a server killed with SIGKILL
//! in the middle of an upload, then restarted on the same folder: what was acknowledged is
//! there, no partial blob is ever visible, the upload's temporary file is gone; a worker process
//! and then the server killed in the middle of a build: another worker finishes the job.
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

struct Server {
    child: Child,
    url: String,
    addr: String,
    admin: Option<String>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn serve(dir: &Path) -> Server {
    serve_with(dir, &[])
}

fn serve_with(dir: &Path, extra: &[&str]) -> Server {
    let mut child = Command::new(env!("CARGO_BIN_EXE_xforge"))
        .args(["hub", "serve", "--dir", dir.to_str().unwrap(), "--listen", "127.0.0.1:0"])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let (mut url, mut admin) = (None, None);
    while url.is_none() || admin.is_none() {
        let l = lines.next().expect("the server printed its address and token").unwrap();
        if let Some(u) = l.strip_prefix("xforge hub: listening on ") {
            url = Some(u.to_string());
        } else if let Some(t) = l.strip_prefix("xforge hub: admin token ") {
            admin = Some(Some(t.split_whitespace().next().unwrap().to_string()));
        } else if l.starts_with("xforge hub: the admin token is in") {
            admin = Some(None);
        }
    }
    let url = url.unwrap();
    let addr = url.strip_prefix("http://").unwrap().to_string();
    Server { child, url, addr, admin: admin.unwrap() }
}

/// `xforge hub ARGS` with its own login and cache folders: (exit code, stdout, stderr).
fn hub(home: &Path, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_xforge"))
        .arg("hub")
        .args(args)
        .env("XFORGE_HUB_CONFIG", home.join("hub.toml"))
        .env("XFORGE_HUB_CACHE", home.join("cache"))
        .env_remove("XFORGE_HUB_URL")
        .env_remove("XFORGE_HUB_TOKEN")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A GET over a fresh connection: (status, body).
fn get(addr: &str, path: &str, token: &str) -> (u16, Vec<u8>) {
    let mut s = TcpStream::connect(addr).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut buf = vec![];
    s.read_to_end(&mut buf).unwrap();
    let head_end = buf.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    let mut body = buf[head_end + 4..].to_vec();
    if head.to_lowercase().contains("transfer-encoding: chunked") {
        // de-chunk
        let mut out = vec![];
        let mut rest = &body[..];
        loop {
            let e = rest.windows(2).position(|w| w == b"\r\n").unwrap();
            let n = usize::from_str_radix(String::from_utf8_lossy(&rest[..e]).trim(), 16).unwrap();
            if n == 0 {
                break;
            }
            out.extend_from_slice(&rest[e + 2..e + 2 + n]);
            rest = &rest[e + 4 + n..];
        }
        body = out;
    }
    (status, body)
}

fn sha256_file_names_match(dir: &Path) -> usize {
    let mut n = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p: PathBuf = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let bytes = std::fs::read(&p).unwrap();
                assert_eq!(xforge_hub::sha256_hex(&bytes), p.file_name().unwrap().to_str().unwrap(), "{}", p.display());
                n += 1;
            }
        }
    }
    n
}

#[test]
fn hub_commands_and_a_server_killed_mid_upload() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("server");
    let home = tmp.path().join("client");
    let s = serve(&dir);
    let admin = s.admin.clone().expect("the first start prints the admin token");
    let url = s.url.clone();

    // users, tokens, login; exit codes
    assert_eq!(hub(&home, &["user-add", "alice", "--server", &url, "--token", &admin]).0, 0);
    let (code, out, err) =
        hub(&home, &["token-add", "alice", "--scopes", "read,write", "--server", &url, "--token", &admin]);
    assert_eq!(code, 0, "{err}");
    let alice = out.trim().to_string();
    let (code, _, err) = hub(&home, &["login", "--server", &url, "--token", &alice]);
    assert_eq!(code, 0, "{err}");
    let (code, out, _) = hub(&home, &["whoami"]);
    assert_eq!((code, out.trim()), (0, "alice (read,write)"));
    // her own tokens: one more (read), listed, revoked; an unknown id is a clean error
    let (code, _, err) = hub(&home, &["token-add", "alice", "--scopes", "read", "--label", "ci"]);
    assert_eq!(code, 0, "{err}");
    let (code, out, _) = hub(&home, &["token-ls", "alice"]);
    let ids: Vec<&str> = out.lines().map(|l| l.split('\t').next().unwrap()).collect();
    assert_eq!((code, ids.len()), (0, 2), "{out}");
    assert!(out.lines().nth(1).unwrap().ends_with("\tread\tci"), "{out}");
    assert_eq!(hub(&home, &["token-rm", "alice", ids[1]]).0, 0);
    let (code, _, err) = hub(&home, &["token-rm", "alice", ids[1]]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains(&format!("token {} of alice", ids[1])), "{err}");
    let model = tmp.path().join("m.onnx");
    std::fs::write(&model, b"acknowledged model bytes").unwrap();
    let (code, out, err) = hub(&home, &["push", "alice/m", model.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    let digest = xforge_hub::sha256_hex(b"acknowledged model bytes");
    assert!(out.contains(&digest), "{out}");
    // organizations: create, add a member, list, push into it
    assert_eq!(hub(&home, &["user-add", "bob", "--server", &url, "--token", &admin]).0, 0);
    let (code, _, err) = hub(&home, &["org", "create", "acme"]);
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = hub(&home, &["org", "add", "acme", "bob", "--role", "write"]);
    assert_eq!(code, 0, "{err}");
    let (code, out, _) = hub(&home, &["org", "ls", "acme"]);
    assert_eq!((code, out.as_str()), (0, "alice admin\nbob write\n"));
    let (code, _, err) = hub(&home, &["push", "acme/m", model.to_str().unwrap(), "--private"]);
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = hub(&home, &["org", "add", "acme", "bob", "--role", "owner"]);
    assert_eq!(code, 2);
    assert!(err.contains("role"), "{err}");
    // the caller's errors exit 2 and say what is wrong
    let (code, _, err) = hub(&home, &["push", "alice/../x", model.to_str().unwrap()]);
    assert_eq!(code, 2);
    assert!(err.contains("name"), "{err}");
    let (code, _, err) = hub(&home, &["ls", "bob/none"]);
    assert_eq!(code, 2);
    assert!(err.contains("not found"), "{err}");
    let (code, _, err) = hub(&home, &["pull", "alice/m", "--target", "sm_90", "--offline"]);
    assert_eq!(code, 2);
    assert!(err.contains("offline"), "{err}");
    // no --target: this machine's GPU's, and without a GPU an error that says to give one
    let (code, _, err) = hub(&home, &["pull", "alice/m", "--offline"]);
    assert_eq!(code, 2);
    match xforge_runtime::device_target(0) {
        Ok(_) => assert!(err.contains("offline"), "{err}"),
        Err(_) => assert!(err.contains("--target: not given, and no GPU"), "{err}"),
    }
    let (code, _, _) = hub(&home, &["whoami", "--token", &format!("xfh_{}", "0".repeat(64))]);
    assert_eq!(code, 2);
    // garbage collection: an admin's, which keeps every referenced blob; not alice's
    let (code, out, err) = hub(&home, &["gc", "--grace", "0", "--server", &url, "--token", &admin]);
    assert_eq!(code, 0, "{err}");
    assert!(out.ends_with("removed (0 bytes)\n") && out.contains("blobs examined, 0 removed"), "{out}");
    let (code, _, err) = hub(&home, &["gc"]);
    assert_eq!(code, 2);
    assert!(err.contains("admin"), "{err}");

    // an upload in flight when the server is killed
    let mut up = TcpStream::connect(&s.addr).unwrap();
    let total = 64 << 20;
    write!(
        up,
        "POST /api/v1/repos/alice/m/revisions HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {alice}\r\n\
         Content-Type: application/octet-stream\r\nContent-Length: {total}\r\n\r\n",
        s.addr
    )
    .unwrap();
    let chunk = vec![0x5au8; 1 << 20];
    for _ in 0..16 {
        up.write_all(&chunk).unwrap();
    }
    up.flush().unwrap();
    // the server is writing it to a temporary file
    let tmpdir = dir.join("blobs/tmp");
    let t = std::time::Instant::now();
    while std::fs::read_dir(&tmpdir).unwrap().count() == 0 {
        assert!(t.elapsed().as_secs() < 20, "no upload in progress");
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    drop(s); // SIGKILL
    drop(up);
    assert_eq!(std::fs::read_dir(&tmpdir).unwrap().count(), 1, "the killed upload left its temporary file");
    // no blob but complete ones, each under its own digest
    assert_eq!(sha256_file_names_match(&dir.join("blobs/sha256")), 1);

    // restarted on the same folder: the temporary file is gone, the acknowledged push is there
    let s = serve(&dir);
    assert!(s.admin.is_none(), "no second admin token");
    assert_eq!(std::fs::read_dir(&tmpdir).unwrap().count(), 0);
    let (status, body) = get(&s.addr, &format!("/api/v1/blobs/{digest}"), &alice);
    assert_eq!((status, body.as_slice()), (200, b"acknowledged model bytes".as_slice()));
    let (code, out, err) = hub(&home, &["ls", "alice/m", "--server", &s.url]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("revision 1:") && !out.contains("revision 2:"), "{out}");
    assert_eq!(sha256_file_names_match(&dir.join("blobs/sha256")), 1);
}

/// A worker process: `xforge hub worker` for sm_90, polling every 50 ms.
fn worker(url: &str, token: &str, name: &str) -> Child {
    Command::new(env!("CARGO_BIN_EXE_xforge"))
        .args(["hub", "worker", "--server", url, "--token", token, "--target", "sm_90", "--name", name])
        .args(["--poll-ms", "50"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

fn client(url: &str, token: &str, cache: &Path) -> xforge_hub::Client {
    xforge_hub::Client::new(xforge_hub::ClientConfig {
        server: url.into(),
        token: Some(token.into()),
        cache_dir: Some(cache.to_path_buf()),
        ..Default::default()
    })
    .unwrap()
}

#[test]
fn a_worker_process_killed_mid_job_and_a_server_killed_mid_build() {
    // leases of 2 s: a job whose worker died runs again 2 s later
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("server");
    let config = tmp.path().join("hub.toml");
    std::fs::write(&config, "lease_seconds = 2\nmax_attempts = 5\n").unwrap();
    let s = serve_with(&dir, &["--config", config.to_str().unwrap()]);
    let admin = client(&s.url, &s.admin.clone().unwrap(), &tmp.path().join("cache-admin"));
    admin.create_user("alice", false).unwrap();
    admin.create_user("farm", false).unwrap();
    let alice_t = admin.create_token("alice", &["read", "write"], "t").unwrap();
    let farm_t = admin.create_token("farm", &["worker"], "w").unwrap();
    let alice = client(&s.url, &alice_t, &tmp.path().join("cache-alice"));
    // mnasnet0_5: about a second of compiling, the window in which its worker is killed
    let model = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/mnasnet0_5.onnx");
    alice.push("alice/mnas", &model, false).unwrap();
    let mut w1 = worker(&s.url, &farm_t, "w1");
    let spec = xforge_hub::BuildSpec::new("sm_90");
    let job = alice.build("alice/mnas", &spec).unwrap().job.expect("a build job").id;
    let t = std::time::Instant::now();
    loop {
        let j = alice.job(job).unwrap();
        if j.state == xforge_hub::meta::JobState::Running {
            assert_eq!(j.worker.as_deref(), Some("w1"));
            break;
        }
        assert!(t.elapsed().as_secs() < 30, "w1 never claimed the job: {:?}", j.state);
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    // w1 dies in the middle of the job, then the server too; the job survives both
    w1.kill().unwrap();
    w1.wait().unwrap();
    assert_eq!(alice.job(job).unwrap().state, xforge_hub::meta::JobState::Running, "w1 finished before it was killed");
    drop(s); // SIGKILL
    let s = serve_with(&dir, &["--config", config.to_str().unwrap()]);
    let alice = client(&s.url, &alice_t, &tmp.path().join("cache-alice"));
    assert_eq!(alice.job(job).unwrap().state, xforge_hub::meta::JobState::Running);
    // another worker takes it once w1's lease has expired, and finishes it
    let mut w2 = worker(&s.url, &farm_t, "w2");
    let done = alice.wait(job, std::time::Duration::from_secs(120)).unwrap();
    assert_eq!(done.state, xforge_hub::meta::JobState::Done, "{}", done.log);
    assert_eq!(done.worker.as_deref(), Some("w2"));
    assert!(done.attempts >= 2, "{} attempts", done.attempts);
    // the artifact pulls and verifies; the blob folder holds complete blobs only
    let p = alice.pull("alice/mnas", &spec).unwrap();
    let a = xforge_runtime::Artifact::from_bytes(&std::fs::read(&p.path).unwrap()).unwrap();
    assert_eq!(a.header.target, "sm_90");
    assert_eq!(sha256_file_names_match(&dir.join("blobs/sha256")), 2);
    w2.kill().unwrap();
    w2.wait().unwrap();
}
