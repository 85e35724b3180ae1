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

/// Decodes a string attribute as LLVM's `printEscapedString` writes it: `\\` for a backslash,
/// `\XX` (hex) for a quote or an unprintable byte, everything else as is.
fn unescape(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 1 < b.len() {
            if b[i + 1] == b'\\' {
                out.push(b'\\');
                i += 2;
                continue;
            }
            let hex = std::str::from_utf8(&b[i + 1..(i + 3).min(b.len())]).unwrap_or("");
            if let Ok(v) = u8::from_str_radix(hex, 16) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    out
}

/// The objects of the `gpu.binary` ops in a printed module, one per binary in order: each one's
/// string attribute `key` (`offload` for LLVM bitcode, `bin` for a code object, `assembly` for
/// ISA text), decoded; None where a binary lacks it.
pub fn binary_objects(printed: &str, key: &str) -> Option<Vec<Vec<u8>>> {
    let mut out = vec![];
    let mut rest = printed;
    let open = format!("{key} = \"");
    while let Some(at) = rest.find("gpu.binary") {
        rest = &rest[at + 1..];
        let end = rest.find("gpu.binary").unwrap_or(rest.len());
        let body = &rest[..end];
        let from = body.find(&open)? + open.len();
        // the string ends at the first unescaped quote (quotes inside are escaped as \22)
        let len = body[from..].find('"')?;
        out.push(unescape(&body[from..from + len]));
    }
    Some(out)
}
