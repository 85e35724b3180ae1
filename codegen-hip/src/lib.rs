//! MLIR `gpu` modules → ROCDL → LLVM → one AMDGPU code object (HSACO) per artifact, through
//! MLIR's ROCDL serializer (which links Debian's ocml/ockl bitcode and runs `ld.lld`).
//!
//! Every kernel goes into one `gpu.module`, so one code object holds them all (`<name>.kd`
//! per kernel), with 64-bit indices: MLIR 22's ROCDL lowering with `index-bitwidth=32` leaves
//! i32/i64 mixes that LLVM's verifier rejects (`mul i32 %a, i64 %b`). Code object version 4
//! (`abi=400`): Debian's HIP 5.2 runtime loads v4; LLVM 22's default, v6, needs ROCm ≥ 6.3, and
//! v5 came to ROCm as the default only after 5.2.
pub mod report;
pub mod toolchain;

use melior::pass::PassManager;
use melior::utility::parse_pass_pipeline;
use xforge_kernel::{mlir, Kernel};

/// AMD chips the generator emits code objects for: CDNA2 (MI200), CDNA3 (MI300), RDNA3.
pub const CHIPS: &[&str] = &["gfx90a", "gfx942", "gfx1100"];

/// The code object version (`rocdl-attach-target{abi=…}`).
pub const CODE_OBJECT_ABI: u32 = 400;

#[derive(Debug, thiserror::Error)]
pub enum CodegenError {
    #[error("unknown AMD target '{0}' (known: gfx90a, gfx942, gfx1100)")]
    UnknownTarget(String),
    #[error(transparent)]
    Kernel(#[from] xforge_kernel::KernelError),
    #[error("lowering to ROCDL failed: {0}")]
    Lowering(String),
    #[error("ROCm toolchain: {0}")]
    Toolchain(String),
}

/// What `emit` returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    /// The one `gpu.module` holding every kernel, as generated for the chip.
    Mlir,
    /// AMDGPU assembly (`--emit amdgcn`).
    Amdgcn,
}

/// The chip `chip` if the generator knows it. Checked before MLIR sees it: LLVM aborts the
/// process on a chip it does not know.
fn known(chip: &str) -> Result<(), CodegenError> {
    if CHIPS.contains(&chip) {
        Ok(())
    } else {
        Err(CodegenError::UnknownTarget(chip.to_string()))
    }
}

/// Every kernel's `gpu.func` in one `gpu.module @xforge_kernels` (identical kernels, by name,
/// once).
pub fn merged_module(kernels: &[Kernel]) -> String {
    let mut seen = std::collections::BTreeSet::new();
    let mut funcs = String::new();
    for k in kernels.iter().filter(|k| seen.insert(k.name.clone())) {
        // a kernel's module is `gpu.module @name {` … `}`: its body is the function
        let body = k.module.split_once('{').map_or("", |(_, rest)| rest);
        funcs.push_str(body.trim_end().strip_suffix('}').unwrap_or(body));
    }
    format!("  gpu.module @xforge_kernels {{\n{funcs}  }}\n")
}

/// The pass pipeline from `gpu` modules to a code object (`format=bin`) or assembly
/// (`format=isa`) for `chip`. `allowed-dialects` keeps the lowering to the dialects kernels
/// use: with the nvvm dialect loaded in the same context, the default set lowers f32 tanh to an
/// intrinsic that has no AMDGPU libcall.
fn pipeline(chip: &str, bits: u32, format: &str, root: &str) -> String {
    format!(
        "builtin.module(rocdl-attach-target{{chip={chip} abi={CODE_OBJECT_ABI} O=3}},gpu.module(convert-scf-to-cf,convert-gpu-to-rocdl{{chipset={chip} use-bare-ptr-memref-call-conv=true runtime=HIP index-bitwidth={bits} allowed-dialects=func,arith,cf,memref,math,vector}}),reconcile-unrealized-casts,gpu-module-to-binary{{format={format} toolkit={root}}})"
    )
}

/// The kernels lowered for `chip` to `format` (`bin` or `isa`): the bytes of the one binary.
fn lower(kernels: &[Kernel], chip: &str, format: &str) -> Result<Vec<u8>, CodegenError> {
    known(chip)?;
    let root = toolchain::rocm_root().map_err(CodegenError::Toolchain)?;
    let bits = if kernels.iter().all(Kernel::fits_narrow_index) { 32 } else { 64 };
    let ctx = mlir::context();
    let mut module = mlir::parse(&ctx, &mlir::container(&merged_module(kernels)))?;
    let pm = PassManager::new(&ctx);
    parse_pass_pipeline(pm.as_operation_pass_manager(), &pipeline(chip, bits, format, &root.display().to_string()))
        .map_err(|e| CodegenError::Lowering(e.to_string()))?;
    pm.run(&mut module).map_err(|e| CodegenError::Lowering(format!("{e:?}")))?;
    let key = if format == "isa" { "assembly" } else { "bin" };
    let mut objects = mlir::binary_objects(&module.as_operation().to_string(), key)
        .ok_or_else(|| CodegenError::Lowering(format!("no {key} in gpu.binary")))?;
    match objects.len() {
        1 => Ok(objects.remove(0)),
        n => Err(CodegenError::Lowering(format!("{n} binaries for one module"))),
    }
}

/// Kernels to one code object for `chip`. Kernels must have been generated for that chip
/// (`xforge_kernel::target::with`).
pub fn compile(kernels: &[Kernel], chip: &str) -> Result<Vec<u8>, CodegenError> {
    if kernels.is_empty() {
        known(chip)?;
        return Ok(vec![]);
    }
    lower(kernels, chip, "bin")
}

/// All kernels as one module at `stage` for `chip`.
pub fn emit(kernels: &[Kernel], chip: &str, stage: Stage) -> Result<String, CodegenError> {
    match stage {
        Stage::Mlir => {
            known(chip)?;
            let text = mlir::container(&merged_module(kernels));
            mlir::parse(&mlir::context(), &text)?;
            Ok(text)
        }
        Stage::Amdgcn => Ok(String::from_utf8_lossy(&lower(kernels, chip, "isa")?).into_owned()),
    }
}
