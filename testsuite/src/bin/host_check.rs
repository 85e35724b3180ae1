//! A compiled model on the host against the interpreter: every generated kernel without
//! barriers runs through MLIR's execution engine (the rest of the plan through the
//! interpreter), on random inputs, and each output is compared by relative L2.
//!
//!     cargo run --release -p xforge-testsuite --bin host_check -- MODEL.onnx... [--precision fp16] [--tol 1e-4]
//!         [--input FILE.npy] [--dump DIR]
//!
//! `--input` feeds the first graph input from a file (a real image in place of random data);
//! `--dump` writes each output as DIR/<k>.host.npy and DIR/<k>.interp.npy.
//!
//! Prints one line per model: groups run as host kernels, interpreted groups, worst relative
//! L2; exits 1 when a model's outputs are off by more than the tolerance.
use anyhow::{bail, Context, Result};
use std::collections::HashMap;
use xforge_ir::{tensor::rel_l2, DType, Tensor};

fn random(dtype: DType, shape: &[usize], seed: u64) -> Tensor {
    let n: usize = shape.iter().product();
    let mut s = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    let mut next = || {
        s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (s >> 33) as f64 / (1u64 << 31) as f64
    };
    let v: Vec<f64> = (0..n)
        .map(|_| {
            if dtype.is_float() {
                next() * 2.0 - 1.0
            } else if dtype == DType::Bool {
                (next() < 0.5) as u8 as f64
            } else {
                (next() * 10.0).floor()
            }
        })
        .collect();
    Tensor::from_f64(dtype, shape.to_vec(), &v)
}

fn main() -> Result<()> {
    let mut models = vec![];
    let mut precision = xforge_compiler::Precision::Fp32;
    let mut tol = 1e-4;
    let mut input: Option<Tensor> = None;
    let mut dump: Option<std::path::PathBuf> = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--precision" => {
                precision = match args.next().context("--precision needs fp32|fp16|bf16")?.as_str() {
                    "fp16" => xforge_compiler::Precision::Fp16,
                    "bf16" => xforge_compiler::Precision::Bf16,
                    _ => xforge_compiler::Precision::Fp32,
                }
            }
            "--tol" => tol = args.next().context("--tol needs a number")?.parse()?,
            "--input" => {
                let f = args.next().context("--input needs an .npy file")?;
                input = Some(xforge_ir::npy::from_bytes(&std::fs::read(&f).with_context(|| f.clone())?)?);
            }
            "--dump" => dump = Some(args.next().context("--dump needs a folder")?.into()),
            m => models.push(m.to_string()),
        }
    }
    let mut bad = 0;
    for m in &models {
        let compiler = xforge_compiler::Compiler::new("sm_90").precision(precision);
        let model = compiler.load(m.as_ref(), &[]).with_context(|| m.clone())?;
        let g = &model.graph;
        let feed: HashMap<String, Tensor> = g
            .inputs
            .iter()
            .enumerate()
            .map(|(k, &i)| {
                let ty = g.ty(i);
                let shape = ty.static_shape().context("inputs need static shapes")?;
                let t = match (&input, k) {
                    (Some(t), 0) => t.clone(),
                    _ => random(ty.dtype, &shape, k as u64 + 1),
                };
                Ok((g.name_of(i).to_string(), t))
            })
            .collect::<Result<_>>()?;
        let want = xforge_ir::interp::run(g, &feed)?;
        let fused = compiler.fuse(g)?;
        let (library, _) = xforge_compiler::build::library_plans(&fused, false);
        let (kernels, missing) = xforge_compiler::build::generate_kernels(&fused, &library);
        if !missing.is_empty() {
            bail!("{m}: {}", missing.join("; "));
        }
        let kernels: HashMap<usize, xforge_kernel::Kernel> = kernels.into_iter().collect();
        let (got, stats) =
            xforge_testsuite::host_kernels::run_plan(&fused, &kernels, &feed).map_err(anyhow::Error::msg)?;
        let worst =
            got.iter().zip(&want).map(|(a, b)| rel_l2(&a.cast(DType::F64), &b.cast(DType::F64))).fold(0.0, f64::max);
        if let Some(d) = &dump {
            std::fs::create_dir_all(d)?;
            for (k, (a, b)) in got.iter().zip(&want).enumerate() {
                std::fs::write(d.join(format!("{k}.host.npy")), xforge_ir::npy::to_bytes(a))?;
                std::fs::write(d.join(format!("{k}.interp.npy")), xforge_ir::npy::to_bytes(b))?;
            }
        }
        let ok = worst <= tol;
        if !ok {
            bad += 1;
        }
        println!(
            "{m}: {} host kernels, {} interpreted, worst relative L2 {worst:.2e} {}",
            stats.host_kernels,
            stats.interpreted,
            if ok { "ok" } else { "OFF" }
        );
    }
    if bad > 0 {
        bail!("{bad} models off by more than {tol}");
    }
    Ok(())
}
