//! GPU-only: runs the cases `kernel_cases` writes and checks them against the interpreter.
//!
//!     gpu_check CASE_DIR [CASE_DIR ...]
//!
//! Outputs are poisoned (all bits set) before the launch: an element left poisoned was never
//! written and fails the case. Results are compared by relative L2 against the case's tolerance.
//! Bandwidth cases (`bench`) fill the inputs on the device and report median GB/s over 20 runs
//! (CUDA events after a warm-up). Prints `N passed, M failed` at the end; exit 1 on a failure.
use anyhow::{bail, Context, Result};
use cudarc::driver::{CudaContext, LaunchConfig, PushKernelArg};
use cudarc::nvrtc::Ptx;
use std::path::Path;
use xforge_ir::{npy, DType};

struct Param {
    output: bool,
    dtype: DType,
    elements: usize,
    file: String,
}

struct Meta {
    kernel: String,
    grid: (u32, u32, u32),
    block: (u32, u32, u32),
    tol: f64,
    bench: bool,
    /// Arithmetic of one launch (contractions report TFLOP/s).
    flops: Option<f64>,
    params: Vec<Param>,
}

fn triple(s: &str) -> Result<(u32, u32, u32)> {
    let v: Vec<u32> = s.split_whitespace().map(|x| x.parse()).collect::<Result<_, _>>()?;
    Ok((v[0], v[1], v[2]))
}

fn meta(dir: &Path) -> Result<Meta> {
    let text = std::fs::read_to_string(dir.join("meta.tsv"))?;
    let mut m = Meta {
        kernel: String::new(),
        grid: (1, 1, 1),
        block: (1, 1, 1),
        tol: 0.0,
        bench: false,
        flops: None,
        params: vec![],
    };
    for line in text.lines() {
        let f: Vec<&str> = line.split('\t').collect();
        match f[0] {
            "kernel" => m.kernel = f[1].to_string(),
            "grid" => m.grid = triple(f[1])?,
            "block" => m.block = triple(f[1])?,
            "tol" => m.tol = f[1].parse()?,
            "bench" => m.bench = true,
            "flops" => m.flops = f.get(1).and_then(|x| x.parse().ok()),
            "param" => m.params.push(Param {
                output: f[2] == "out",
                dtype: DType::from_name(f[3]).context("dtype")?,
                elements: f[4].parse()?,
                file: f[5].to_string(),
            }),
            _ => {}
        }
    }
    Ok(m)
}

/// Host bytes back to f64 values of `dt` (bf16 travels as raw bits).
fn values(bytes: &[u8], dt: DType) -> Vec<f64> {
    match dt {
        DType::BF16 => {
            bytes.chunks_exact(2).map(|c| half::bf16::from_bits(u16::from_le_bytes([c[0], c[1]])).to_f64()).collect()
        }
        DType::F16 => {
            bytes.chunks_exact(2).map(|c| half::f16::from_bits(u16::from_le_bytes([c[0], c[1]])).to_f64()).collect()
        }
        DType::F64 => bytes.chunks_exact(8).map(|c| f64::from_le_bytes(c.try_into().unwrap())).collect(),
        // integers as the numbers they are (their bits read as f32 made -1 a NaN)
        DType::I64 => bytes.chunks_exact(8).map(|c| i64::from_le_bytes(c.try_into().unwrap()) as f64).collect(),
        DType::I32 => bytes.chunks_exact(4).map(|c| i32::from_le_bytes(c.try_into().unwrap()) as f64).collect(),
        DType::I16 => bytes.chunks_exact(2).map(|c| i16::from_le_bytes([c[0], c[1]]) as f64).collect(),
        DType::I8 => bytes.iter().map(|&b| b as i8 as f64).collect(),
        DType::U8 | DType::Bool => bytes.iter().map(|&b| b as f64).collect(),
        _ => bytes.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap()) as f64).collect(),
    }
}

fn run_case(ctx: &std::sync::Arc<CudaContext>, dir: &Path) -> Result<String> {
    let m = meta(dir)?;
    let stream = ctx.default_stream();
    let ptx = std::fs::read_to_string(dir.join("kernel.ptx"))?;
    let module = ctx.load_module(Ptx::from_src(ptx))?;
    let func = module.load_function(&m.kernel)?;
    let mut bufs = vec![];
    let mut expected = vec![];
    for p in &m.params {
        let bytes = p.elements * p.dtype.size();
        if m.bench {
            // any finite data will do for timing
            bufs.push(stream.clone_htod(&vec![0x3cu8; bytes])?);
        } else if p.output {
            let want = npy::from_bytes(&std::fs::read(dir.join(&p.file))?)?;
            expected.push(want.data().to_le_bytes());
            bufs.push(stream.clone_htod(&vec![0xffu8; bytes])?);
        } else {
            let t = npy::from_bytes(&std::fs::read(dir.join(&p.file))?)?;
            bufs.push(stream.clone_htod(&t.data().to_le_bytes())?);
        }
    }
    let cfg = LaunchConfig { grid_dim: m.grid, block_dim: m.block, shared_mem_bytes: 0 };
    let launch = |bufs: &Vec<cudarc::driver::CudaSlice<u8>>| -> Result<()> {
        let mut b = stream.launch_builder(&func);
        for buf in bufs {
            b.arg(buf);
        }
        // SAFETY: the kernel takes one pointer per parameter, sized as meta.tsv says
        unsafe { b.launch(cfg) }?;
        Ok(())
    };
    if m.bench {
        launch(&bufs)?;
        stream.synchronize()?;
        let mut ms = vec![];
        for _ in 0..20 {
            let t0 = stream.record_event(Some(cudarc::driver::sys::CUevent_flags::CU_EVENT_DEFAULT))?;
            launch(&bufs)?;
            let t1 = stream.record_event(Some(cudarc::driver::sys::CUevent_flags::CU_EVENT_DEFAULT))?;
            t1.synchronize()?;
            ms.push(t0.elapsed_ms(&t1)? as f64);
        }
        ms.sort_by(|a, b| a.partial_cmp(b).unwrap());
        let bytes: usize = m.params.iter().map(|p| p.elements * p.dtype.size()).sum();
        let med = ms[ms.len() / 2];
        if let Some(fl) = m.flops {
            return Ok(format!("median {med:.3} ms, {:.1} TFLOP/s", fl / med / 1e9));
        }
        return Ok(format!("median {med:.3} ms, {:.0} GB/s moved ({} MiB)", bytes as f64 / med / 1e6, bytes >> 20));
    }
    launch(&bufs)?;
    stream.synchronize()?;
    let mut k = 0;
    let mut report = vec![];
    for (p, buf) in m.params.iter().zip(&bufs) {
        if !p.output {
            continue;
        }
        let got = stream.clone_dtoh(buf)?;
        let size = p.dtype.size();
        let unwritten = got.chunks_exact(size).filter(|c| c.iter().all(|&b| b == 0xff)).count();
        if unwritten > 0 {
            bail!("{unwritten} of {} output elements were never written", p.elements);
        }
        let (g, w) = (values(&got, p.dtype), values(&expected[k], p.dtype));
        let num: f64 = g.iter().zip(&w).map(|(a, b)| (a - b) * (a - b)).sum();
        let den: f64 = w.iter().map(|b| b * b).sum::<f64>().max(1e-30);
        let rel = (num / den).sqrt();
        if rel.is_nan() || rel > m.tol {
            bail!("relative L2 {rel:.3e} exceeds {:.0e}", m.tol);
        }
        report.push(format!("rel L2 {rel:.2e}"));
        k += 1;
    }
    Ok(report.join(", "))
}

fn main() -> Result<()> {
    let ctx = CudaContext::new(0).context("no CUDA device")?;
    let (mut passed, mut failed) = (0, 0);
    for d in std::env::args().skip(1) {
        match run_case(&ctx, Path::new(&d)) {
            Ok(r) => {
                passed += 1;
                println!("ok   {d}: {r}");
            }
            Err(e) => {
                failed += 1;
                println!("FAIL {d}: {e:#}");
            }
        }
    }
    println!("{passed} passed, {failed} failed");
    if failed > 0 {
        std::process::exit(1);
    }
    Ok(())
}
