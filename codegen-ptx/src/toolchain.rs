//! Where libdevice and ptxas are: `XFORGE_LIBDEVICE` / `XFORGE_PTXAS`, else the
//! `target/toolchain.env` that `scripts/setup` writes (searched upward from the working folder).
use std::path::PathBuf;

fn from_env_file(key: &str) -> Option<PathBuf> {
    let mut dir = std::env::current_dir().ok()?;
    loop {
        let f = dir.join("target/toolchain.env");
        if let Ok(text) = std::fs::read_to_string(&f) {
            return text
                .lines()
                .find_map(|l| l.strip_prefix(&format!("{key}=")))
                .filter(|v| !v.is_empty())
                .map(PathBuf::from);
        }
        if !dir.pop() {
            return None;
        }
    }
}

fn find(key: &str) -> Option<PathBuf> {
    std::env::var_os(key).map(PathBuf::from).or_else(|| from_env_file(key)).filter(|p| p.exists())
}

/// libdevice bitcode (PyPI `nvidia-nvvm`; a CUDA toolkit's where there is one).
pub fn libdevice() -> Option<PathBuf> {
    find("XFORGE_LIBDEVICE").or_else(|| {
        ["/usr/local/cuda/nvvm/libdevice/libdevice.10.bc", "/usr/lib/nvidia-cuda-toolkit/libdevice/libdevice.10.bc"]
            .iter()
            .map(PathBuf::from)
            .find(|p| p.exists())
    })
}

/// ptxas (PyPI `nvidia-cuda-nvcc`), for checking PTX without a GPU.
pub fn ptxas() -> Option<PathBuf> {
    find("XFORGE_PTXAS")
}

/// Assembles PTX for `arch` with ptxas (found as `ptxas()` says): Ok, or ptxas's complaint.
pub fn assemble(ptx: &str, arch: &str) -> Result<(), String> {
    let exe = ptxas().ok_or("ptxas not found: run scripts/setup (or set XFORGE_PTXAS)")?;
    let dir =
        std::env::temp_dir().join(format!("xforge-ptxas-{}-{:?}", std::process::id(), std::thread::current().id()));
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let (src, bin) = (dir.join("k.ptx"), dir.join("k.cubin"));
    std::fs::write(&src, ptx).map_err(|e| e.to_string())?;
    let out = std::process::Command::new(exe)
        .arg(format!("-arch={arch}"))
        .arg(&src)
        .arg("-o")
        .arg(&bin)
        .output()
        .map_err(|e| e.to_string())?;
    let _ = std::fs::remove_dir_all(&dir);
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).lines().take(8).collect::<Vec<_>>().join("\n"))
    }
}
