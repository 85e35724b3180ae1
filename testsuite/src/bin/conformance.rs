//! ONNX backend node tests through the importer and the reference interpreter, or compiled.
//!
//!     cargo run --release -p xforge-testsuite --bin conformance [-- --cache DIR] [--floor FILE] [--verbose] [FILTER]
//!     ... --bin conformance -- --compile [--gpu] [--no-ptxas] [--target CHIP,..] [--jobs N] [--floor FILE] [FILTER]
//!
//! The cache is written once by `testsuite/scripts/dump_node_tests.py` (run here if missing).
//! Ends with the line `N passed, M failed, K skipped`. With `--floor FILE`, exits 1 when fewer
//! cases pass than the number in FILE, or when fewer than 90% of the cases of supported ops pass.
//!
//! `--compile` compiles every case the interpreter passes into an artifact for sm_90 (inputs
//! that feed shape operands are compiled in as constants), assembles its PTX with ptxas, and
//! runs it: on the host (kernels without barriers through MLIR's execution engine, other groups
//! through the interpreter), or with `--gpu` on the GPU through the runtime. Cases the
//! interpreter does not pass are skipped; the floor then also requires 97% of the compiled ones.
//! `--target gfx90a,gfx942,gfx1100` compiles for AMD instead: each case runs on the host as
//! generated for the first chip and is built for the others, every code object checked
//! (`xforge_testsuite::amdgpu::check`: readelf, objdump, no spill, LDS within the chip's).
//! `--build-only` runs nothing: a case passes when it builds (and its code checks) everywhere.
use anyhow::{bail, Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use std::path::PathBuf;
use xforge_testsuite::conformance::{compile_all, manifest, run_all, Backend, Outcome};

/// What the dump script writes (its version): bf16 and the narrow types as bits (an .onnxtype file beside), every array row-major.
const CACHE_FORMAT: &str = "5";

fn main() -> Result<()> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let mut cache = root.join("../target/onnx-node-tests");
    let mut floor: Option<PathBuf> = None;
    let mut verbose = false;
    let mut filter: Option<String> = None;
    let (mut compile, mut gpu, mut ptxas, mut jobs) = (false, false, true, 2usize);
    let mut targets = vec!["sm_90".to_string()];
    let mut build_only = false;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--cache" => cache = PathBuf::from(args.next().context("--cache needs a folder")?),
            "--floor" => floor = Some(PathBuf::from(args.next().context("--floor needs a file")?)),
            "--verbose" | "-v" => verbose = true,
            "--compile" => compile = true,
            "--gpu" => gpu = true,
            "--build-only" => build_only = true,
            "--no-ptxas" => ptxas = false,
            "--target" => {
                let list = args.next().context("--target needs a chip list (sm_90 or gfx90a,gfx942,gfx1100)")?;
                targets = list.split(',').map(str::to_string).collect();
            }
            "--jobs" => {
                jobs = args.next().context("--jobs needs a number")?.parse().context("--jobs needs a number")?
            }
            f if !f.starts_with('-') => filter = Some(f.to_string()),
            other => bail!("unknown argument '{other}'"),
        }
    }
    // a cache written by an older dump script is written again
    let stamp = std::fs::read_to_string(cache.join("format")).unwrap_or_default();
    if !cache.join("manifest.tsv").exists() || stamp.trim() != CACHE_FORMAT {
        let script = root.join("scripts/dump_node_tests.py");
        eprintln!("writing the ONNX node test cases to {}", cache.display());
        let st = std::process::Command::new("python3").arg(&script).arg(&cache).status().context("running python3")?;
        if !st.success() {
            bail!("{} failed (is the `onnx` Python package installed? scripts/setup installs it)", script.display());
        }
        std::fs::write(cache.join("format"), CACHE_FORMAT).context("writing the cache's format stamp")?;
    }
    let mut cases = manifest(&cache).map_err(anyhow::Error::msg)?;
    if let Some(f) = &filter {
        cases.retain(|(n, op)| n.contains(f.as_str()) || op == f);
    }
    let bar = ProgressBar::new(cases.len() as u64);
    bar.set_style(ProgressStyle::with_template("{bar:40} {pos}/{len} {msg}").unwrap());
    let report = if compile || gpu {
        let backend = if gpu {
            Backend::Gpu
        } else if build_only {
            Backend::Build
        } else {
            Backend::Host
        };
        compile_all(&cache, &cases, &targets, backend, ptxas, jobs.max(1), || bar.inc(1))
    } else {
        run_all(&cache, &cases, || bar.inc(1))
    };
    bar.finish_and_clear();

    println!("{:<34} {:>6} {:>6} {:>7}", "op", "passed", "failed", "skipped");
    for (op, t) in &report.by_op {
        println!("{op:<34} {:>6} {:>6} {:>7}", t.passed, t.failed, t.skipped);
    }
    let mut reasons: std::collections::BTreeMap<String, usize> = Default::default();
    for (name, _, o) in &report.results {
        match o {
            Outcome::Failed(why) if verbose => println!("FAIL {name}: {why}"),
            Outcome::Skipped(why) => *reasons.entry(why.clone()).or_default() += 1,
            _ => {}
        }
    }
    println!("skipped, by reason:");
    for (why, n) in &reasons {
        println!("  {n:>4}  {why}");
    }
    let t = report.totals();
    let ratio = t.passed as f64 / (t.passed + t.failed).max(1) as f64;
    println!("supported-op pass rate: {:.1}%", 100.0 * ratio);
    println!("{} passed, {} failed, {} skipped", t.passed, t.failed, t.skipped);
    if let Some(f) = floor {
        let want: usize = std::fs::read_to_string(&f)
            .with_context(|| format!("reading {}", f.display()))?
            .lines()
            .find(|l| !l.trim().is_empty() && !l.starts_with('#'))
            .context("floor file holds no number")?
            .trim()
            .parse()
            .context("floor is not a number")?;
        if t.passed < want {
            bail!("conformance regressed: {} passed, the floor is {want}", t.passed);
        }
        if (compile || gpu) && ratio < 0.97 {
            bail!(
                "only {:.1}% of the cases the interpreter passes compile and pass (at least 97% required)",
                100.0 * ratio
            );
        }
        if ratio < 0.9 {
            bail!("only {:.1}% of the cases of supported ops pass (at least 90% required)", 100.0 * ratio);
        }
    }
    Ok(())
}
