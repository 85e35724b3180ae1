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

/// libdevice bitcode (PyPI `nvidia-nvvm`).
pub fn libdevice() -> Option<PathBuf> {
    find("XFORGE_LIBDEVICE")
}

/// ptxas (PyPI `nvidia-cuda-nvcc`), for checking PTX without a GPU.
pub fn ptxas() -> Option<PathBuf> {
    find("XFORGE_PTXAS")
}
