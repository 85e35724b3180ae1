//! Checks of an AMD artifact's code object without an AMD GPU: the runtime's reader accepts it
//! (ELF for EM_AMDGPU, the header's chip in the flags, a `.kd` descriptor per kernel),
//! `llvm-readelf` agrees on the machine and chip, `llvm-objdump --mcpu=<chip>` disassembles
//! every kernel, and no kernel spills or uses more LDS than a block may.
use xforge_codegen_hip::report::{self, KernelUsage};
use xforge_codegen_hip::toolchain::llvm_tool;
use xforge_runtime::Artifact;

/// The kernels' resource usage, or the first thing wrong with the code object.
pub fn check(artifact: &Artifact) -> Result<Vec<KernelUsage>, String> {
    Artifact::from_bytes(&artifact.to_bytes()).map_err(|e| format!("the runtime refuses the artifact: {e}"))?;
    check_code_object(&artifact.header.target, &artifact.kernels.code_object, &artifact.kernels.names)
}

/// `check` of a code object for `chip` that should declare the kernels `names`.
pub fn check_code_object(chip: &str, code: &[u8], names: &[String]) -> Result<Vec<KernelUsage>, String> {
    let limits = report::limits(chip).ok_or_else(|| format!("{chip} is not an AMD target xforge compiles for"))?;
    if names.is_empty() {
        return if code.is_empty() { Ok(vec![]) } else { Err("a code object without kernels".into()) };
    }
    xforge_runtime::code_object::check(code, chip, names)?;
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let file = dir.path().join("kernels.hsaco");
    std::fs::write(&file, code).map_err(|e| e.to_string())?;
    let header = report::readelf(&file, "-h")?;
    let line = |key: &str| header.lines().find(|l| l.trim_start().starts_with(key)).unwrap_or("").to_string();
    if !line("Machine:").contains("EM_AMDGPU") {
        return Err(format!("llvm-readelf: {}", line("Machine:").trim()));
    }
    if !line("Flags:").split([',', ' ']).any(|w| w == chip) {
        return Err(format!("llvm-readelf: {} (not {chip})", line("Flags:").trim()));
    }
    let out = std::process::Command::new(llvm_tool("llvm-objdump"))
        .args(["-d", &format!("--mcpu={chip}")])
        .arg(&file)
        .output()
        .map_err(|e| format!("llvm-objdump: {e}"))?;
    let asm = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        return Err(format!("llvm-objdump: {}", String::from_utf8_lossy(&out.stderr)));
    }
    if let Some(n) = names.iter().find(|n| !asm.contains(&format!("<{n}>:"))) {
        return Err(format!("llvm-objdump shows no code for kernel {n}"));
    }
    let usage = report::usage(&file)?;
    if usage.len() != names.len() {
        return Err(format!("metadata for {} kernels, the artifact has {}", usage.len(), names.len()));
    }
    if let Some(p) = usage.iter().find_map(|k| k.problem(&limits)) {
        return Err(p);
    }
    if let Some(k) = usage.iter().find(|k| k.wave as usize != xforge_kernel::target::find(chip).map_or(0, |t| t.wave)) {
        return Err(format!("{} runs in waves of {}, {chip}'s are not", k.name, k.wave));
    }
    Ok(usage)
}
