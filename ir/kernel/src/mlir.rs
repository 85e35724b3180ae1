//! One melior context per thread, with every dialect, pass and LLVM translation registered.
use crate::kernel::KernelError;
use melior::dialect::DialectRegistry;
use melior::ir::operation::OperationLike;
use melior::ir::Module;
use melior::utility::{register_all_dialects, register_all_llvm_translations, register_all_passes};
use melior::Context;

/// A context ready for `gpu` modules and their lowering.
pub fn context() -> Context {
    static PASSES: std::sync::Once = std::sync::Once::new();
    PASSES.call_once(register_all_passes);
    let registry = DialectRegistry::new();
    register_all_dialects(&registry);
    let ctx = Context::new();
    ctx.append_dialect_registry(&registry);
    ctx.load_all_available_dialects();
    register_all_llvm_translations(&ctx);
    ctx
}

/// Wraps `gpu.module`s into a container module.
pub fn container(gpu_modules: &str) -> String {
    format!("module attributes {{gpu.container_module}} {{\n{gpu_modules}}}\n")
}

/// Parses and verifies a container module.
pub fn parse<'c>(ctx: &'c Context, text: &str) -> Result<Module<'c>, KernelError> {
    let m = Module::parse(ctx, text).ok_or_else(|| KernelError::Invalid(first_lines(text)))?;
    if !m.as_operation().verify() {
        return Err(KernelError::Invalid(first_lines(text)));
    }
    Ok(m)
}

fn first_lines(text: &str) -> String {
    text.lines().take(12).collect::<Vec<_>>().join("\n")
}
