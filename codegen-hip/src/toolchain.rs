//! The ROCm pieces MLIR's ROCDL serializer looks for, from Debian's packages: `lld-22`
//! (`ld.lld`) and `rocm-device-libs` (ocml/ockl bitcode). MLIR expects them under one root laid
//! out as `<root>/amdgcn/bitcode/*.bc` and `<root>/llvm/bin/ld.lld`; Debian spreads them, so a
//! root of symlinks is made once per process under the temp folder. `XFORGE_ROCM_ROOT` names a
//! root that already has that layout (a real ROCm install).
use std::path::{Path, PathBuf};

/// Where Debian puts the device libraries and LLVM 22.
const DEVICE_LIBS: &str = "/usr/lib/x86_64-linux-gnu/amdgcn";
const LLVM: &str = "/usr/lib/llvm-22";

/// Whether `root` has the layout MLIR expects.
fn complete(root: &Path) -> bool {
    root.join("amdgcn/bitcode/ocml.bc").exists() && root.join("llvm/bin/ld.lld").exists()
}

/// The toolkit root for `gpu-module-to-binary{toolkit=…}`, or what is missing.
pub fn rocm_root() -> Result<PathBuf, String> {
    if let Some(r) = std::env::var_os("XFORGE_ROCM_ROOT").map(PathBuf::from) {
        return if complete(&r) {
            Ok(r)
        } else {
            Err(format!("XFORGE_ROCM_ROOT={} lacks amdgcn/bitcode/ocml.bc or llvm/bin/ld.lld", r.display()))
        };
    }
    for (what, path, package) in [
        ("ocml bitcode", format!("{DEVICE_LIBS}/bitcode/ocml.bc"), "rocm-device-libs"),
        ("ld.lld", format!("{LLVM}/bin/ld.lld"), "lld-22"),
    ] {
        if !Path::new(&path).exists() {
            return Err(format!("{what} not found at {path}: install Debian's {package} (scripts/setup does)"));
        }
    }
    let root = std::env::temp_dir().join(format!("xforge-rocm-{}", std::process::id()));
    if complete(&root) {
        return Ok(root);
    }
    std::fs::create_dir_all(&root).map_err(|e| format!("{}: {e}", root.display()))?;
    for (name, to) in [("amdgcn", DEVICE_LIBS), ("llvm", LLVM)] {
        let link = root.join(name);
        if !link.exists() {
            // another thread may have made it meanwhile
            if let Err(e) = std::os::unix::fs::symlink(to, &link) {
                if !link.exists() {
                    return Err(format!("{}: {e}", link.display()));
                }
            }
        }
    }
    Ok(root)
}

/// An LLVM 22 tool (`llvm-readelf`, `llvm-objdump`), for checking code objects.
pub fn llvm_tool(name: &str) -> PathBuf {
    Path::new(LLVM).join("bin").join(name)
}
