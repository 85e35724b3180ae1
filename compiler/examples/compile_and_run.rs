//! The compiler and the runtime as libraries, through their public API only:
//!
//!     cargo run --release -p xforge-compiler --example compile_and_run -- MODEL.onnx [fp16]
//!
//! Compiles the model for sm_90 (printing progress), writes MODEL.xfa, and where a GPU is present
//! loads it into a session and runs it on zeros; elsewhere says so and stops after compiling.
use std::path::PathBuf;
use xforge_compiler::{Compiler, Precision};
use xforge_runtime::Session;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let model = PathBuf::from(args.next().ok_or("usage: compile_and_run MODEL.onnx [fp16|bf16]")?);
    let precision = match args.next().as_deref() {
        Some("fp16") => Precision::Fp16,
        Some("bf16") => Precision::Bf16,
        _ => Precision::Fp32,
    };
    let artifact = Compiler::new("sm_90")
        .precision(precision)
        .on_progress(|phase, done, all| eprintln!("{phase}: {done}/{all}"))
        .compile_onnx(&model)?;
    let out = model.with_extension("xfa");
    artifact.write(&out)?;
    let plan = &artifact.plans[0];
    println!(
        "{}: {} kernels, {} steps, arena {} bytes, weights {} bytes",
        out.display(),
        artifact.kernels.names.len(),
        plan.steps.len(),
        plan.memory.arena_bytes,
        artifact.weights.len()
    );
    let mut session = match Session::load(&out, 0) {
        Ok(s) => s,
        Err(e) => {
            println!("not run: {e}");
            return Ok(());
        }
    };
    let inputs: Vec<Vec<u8>> =
        plan.memory.inputs.iter().map(|b| vec![0u8; xforge_runtime::binding_bytes(b).unwrap_or(0) as usize]).collect();
    let refs: Vec<&[u8]> = inputs.iter().map(Vec::as_slice).collect();
    for ((bytes, shape), b) in session.run_shaped(&refs)?.iter().zip(&plan.memory.outputs) {
        println!("{}: {} {:?} ({} bytes)", b.name, b.dtype, shape, bytes.len());
    }
    Ok(())
}
