//! MLIR `gpu` modules → NVVM → LLVM bitcode (MLIR's pipeline) → inkwell: libdevice linked with
//! its functions internalized, O3, and the NVPTX target machine writes PTX.
pub mod samples;
pub mod toolchain;

use inkwell::context::Context as LlvmContext;
use inkwell::memory_buffer::MemoryBuffer;
use inkwell::module::{Linkage, Module};
use inkwell::passes::PassBuilderOptions;
use inkwell::targets::{CodeModel, FileType, InitializationConfig, RelocMode, Target, TargetMachine, TargetTriple};
use inkwell::OptimizationLevel;
use melior::pass::PassManager;
use melior::utility::parse_pass_pipeline;
use std::path::Path;
use xforge_kernel::{mlir, Kernel};

/// NVIDIA architectures the generator emits PTX for.
pub const CHIPS: &[&str] = &["sm_80", "sm_86", "sm_89", "sm_90", "sm_90a"];

#[derive(Debug, thiserror::Error)]
pub enum CodegenError {
    #[error("unknown target '{0}' (known: sm_80, sm_86, sm_89, sm_90, sm_90a)")]
    UnknownTarget(String),
    #[error(transparent)]
    Kernel(#[from] xforge_kernel::KernelError),
    #[error("lowering to NVVM failed: {0}")]
    Lowering(String),
    #[error("LLVM: {0}")]
    Llvm(String),
    #[error("libdevice at {path}: {msg}")]
    Libdevice { path: String, msg: String },
}

/// MLIR part: the kernels' `gpu.module`s to LLVM bitcode for `chip`, in order. Kernels that fit
/// (`Kernel::fits_narrow_index`) are lowered with 32-bit indices, the others with 64-bit ones.
pub fn to_bitcode(kernels: &[&Kernel], chip: &str) -> Result<Vec<Vec<u8>>, CodegenError> {
    if !CHIPS.contains(&chip) {
        return Err(CodegenError::UnknownTarget(chip.to_string()));
    }
    type Indexed<'a> = Vec<(usize, &'a Kernel)>;
    let (narrow, wide): (Indexed, Indexed) =
        kernels.iter().copied().enumerate().partition(|(_, k)| k.fits_narrow_index());
    let mut out: Vec<Option<Vec<u8>>> = vec![None; kernels.len()];
    for (part, bits) in [(narrow, 32), (wide, 64)] {
        if part.is_empty() {
            continue;
        }
        let ks: Vec<&Kernel> = part.iter().map(|(_, k)| *k).collect();
        for ((i, _), b) in part.iter().zip(lower(&ks, chip, bits)?) {
            out[*i] = Some(b);
        }
    }
    Ok(out.into_iter().map(|b| b.expect("every kernel lowered")).collect())
}

/// `to_bitcode` for kernels lowered with `bits`-bit indices.
fn lower(kernels: &[&Kernel], chip: &str, bits: u32) -> Result<Vec<Vec<u8>>, CodegenError> {
    let ctx = mlir::context();
    let text = mlir::container(&kernels.iter().map(|k| k.module.as_str()).collect::<String>());
    let mut module = mlir::parse(&ctx, &text)?;
    let pm = PassManager::new(&ctx);
    let pipeline = format!(
        "builtin.module(nvvm-attach-target{{chip={chip} features=+ptx80 O=3}},gpu.module(convert-scf-to-cf,convert-nvgpu-to-nvvm,convert-gpu-to-nvvm{{use-bare-ptr-memref-call-conv=true index-bitwidth={bits}}},convert-math-to-llvm,reconcile-unrealized-casts),gpu-module-to-binary{{format=llvm}})"
    );
    parse_pass_pipeline(pm.as_operation_pass_manager(), &pipeline)
        .map_err(|e| CodegenError::Lowering(e.to_string()))?;
    pm.run(&mut module).map_err(|e| CodegenError::Lowering(format!("{e:?}")))?;
    mlir::binary_objects(&module.as_operation().to_string(), "offload")
        .ok_or_else(|| CodegenError::Lowering("no bitcode in gpu.binary".into()))
}

fn machine(chip: &str) -> Result<TargetMachine, CodegenError> {
    Target::initialize_nvptx(&InitializationConfig::default());
    let triple = TargetTriple::create("nvptx64-nvidia-cuda");
    let target = Target::from_triple(&triple).map_err(|e| CodegenError::Llvm(e.to_string()))?;
    let (cpu, features) = (chip, "+ptx80");
    target
        .create_target_machine(
            &triple,
            cpu,
            features,
            OptimizationLevel::Aggressive,
            RelocMode::Default,
            CodeModel::Default,
        )
        .ok_or_else(|| CodegenError::Llvm(format!("no NVPTX target machine for {chip}")))
}

/// LLVM part: link libdevice (internalized), run O3, emit PTX.
pub fn to_ptx(bitcode: &[Vec<u8>], chip: &str, libdevice: Option<&Path>) -> Result<String, CodegenError> {
    llvm_stage(bitcode, chip, libdevice, FileType::Assembly)
}

/// The optimized LLVM IR (libdevice linked, O3) as text.
pub fn to_llvm_ir(bitcode: &[Vec<u8>], chip: &str, libdevice: Option<&Path>) -> Result<String, CodegenError> {
    llvm_stage(bitcode, chip, libdevice, FileType::Object)
}

/// `FileType::Assembly` gives PTX; `FileType::Object` stands for the IR text here.
fn llvm_stage(
    bitcode: &[Vec<u8>],
    chip: &str,
    libdevice: Option<&Path>,
    out: FileType,
) -> Result<String, CodegenError> {
    let llvm = LlvmContext::create();
    let tm = machine(chip)?;
    let parse = |b: &[u8], name: &str| -> Result<Module<'_>, CodegenError> {
        let buf = MemoryBuffer::create_from_memory_range_copy(b, name);
        Module::parse_bitcode_from_buffer(&buf, &llvm).map_err(|e| CodegenError::Llvm(e.to_string()))
    };
    let module = parse(bitcode.first().ok_or_else(|| CodegenError::Llvm("nothing to compile".into()))?, "kernels")?;
    for (i, b) in bitcode.iter().enumerate().skip(1) {
        module.link_in_module(parse(b, &format!("kernel{i}"))?).map_err(|e| CodegenError::Llvm(e.to_string()))?;
    }
    let needs_libdevice =
        module.get_functions().any(|f| f.get_name().to_bytes().starts_with(b"__nv_") && f.count_basic_blocks() == 0);
    if needs_libdevice {
        let path = libdevice.ok_or_else(|| CodegenError::Libdevice {
            path: "(none)".into(),
            msg: "the kernels call libdevice math; set XFORGE_LIBDEVICE (scripts/setup finds it)".into(),
        })?;
        let lib = Module::parse_bitcode_from_path(path, &llvm)
            .map_err(|e| CodegenError::Libdevice { path: path.display().to_string(), msg: e.to_string() })?;
        let ours: std::collections::HashSet<Vec<u8>> = module
            .get_functions()
            .filter(|f| f.count_basic_blocks() > 0)
            .map(|f| f.get_name().to_bytes().to_vec())
            .collect();
        lib.set_triple(&module.get_triple());
        module
            .link_in_module(lib)
            .map_err(|e| CodegenError::Libdevice { path: path.display().to_string(), msg: e.to_string() })?;
        // internal linkage lets O3 drop every libdevice function the kernels do not call
        for f in module.get_functions() {
            if f.count_basic_blocks() > 0 && !ours.contains(f.get_name().to_bytes()) {
                f.set_linkage(Linkage::Internal);
            }
        }
    }
    module.set_triple(&tm.get_triple());
    module.set_data_layout(&tm.get_target_data().get_data_layout());
    module
        .run_passes("default<O3>", &tm, PassBuilderOptions::create())
        .map_err(|e| CodegenError::Llvm(e.to_string()))?;
    if out == FileType::Object {
        return Ok(module.print_to_string().to_string());
    }
    let buf = tm.write_to_memory_buffer(&module, FileType::Assembly).map_err(|e| CodegenError::Llvm(e.to_string()))?;
    Ok(String::from_utf8_lossy(buf.as_slice()).into_owned())
}

/// What `emit` returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    /// The `gpu` dialect modules, as generated.
    Mlir,
    /// LLVM IR after libdevice linking and O3.
    Llvm,
    /// PTX for the target.
    Ptx,
}

/// `to_bitcode` on chunks of kernels, one MLIR context per worker thread; bitcode in order.
pub fn parallel_bitcode(kernels: &[&Kernel], chip: &str) -> Result<Vec<Vec<u8>>, CodegenError> {
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get()).min(8);
    if workers < 2 || kernels.len() < 2 {
        return to_bitcode(kernels, chip);
    }
    let chunk = kernels.len().div_ceil(workers);
    let results: Vec<Result<Vec<Vec<u8>>, CodegenError>> = std::thread::scope(|s| {
        let handles: Vec<_> = kernels.chunks(chunk).map(|c| s.spawn(move || to_bitcode(c, chip))).collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| Err(CodegenError::Lowering("a lowering thread panicked".into()))))
            .collect()
    });
    let mut out = vec![];
    for r in results {
        out.extend(r?);
    }
    Ok(out)
}

/// Identical kernels (by content-hash name) once each, in first-seen order.
fn unique(kernels: &[Kernel]) -> Vec<&Kernel> {
    let mut seen = std::collections::BTreeSet::new();
    kernels.iter().filter(|k| seen.insert(k.name.clone())).collect()
}

/// All kernels as one module at `stage` for `chip`.
pub fn emit(kernels: &[Kernel], chip: &str, stage: Stage) -> Result<String, CodegenError> {
    let ks = unique(kernels);
    match stage {
        Stage::Mlir => {
            if !CHIPS.contains(&chip) {
                return Err(CodegenError::UnknownTarget(chip.to_string()));
            }
            let text = mlir::container(&ks.iter().map(|k| k.module.as_str()).collect::<String>());
            // parse and verify before printing
            mlir::parse(&mlir::context(), &text)?;
            Ok(text)
        }
        Stage::Llvm => to_llvm_ir(&parallel_bitcode(&ks, chip)?, chip, toolchain::libdevice().as_deref()),
        Stage::Ptx => to_ptx(&parallel_bitcode(&ks, chip)?, chip, toolchain::libdevice().as_deref()),
    }
}

/// Kernels to one PTX module for `chip` (identical kernels, by name, compile once).
pub fn compile(kernels: &[Kernel], chip: &str) -> Result<String, CodegenError> {
    emit(kernels, chip, Stage::Ptx)
}
