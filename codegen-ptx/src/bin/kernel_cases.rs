//! Writes GPU check cases for the kernel templates: PTX, launch shape, inputs and the
//! interpreter's outputs, for `gpu_check` (testsuite) to run on a GPU machine.
//!
//!     cargo run --release -p xforge-codegen-ptx --bin kernel_cases -- OUTDIR [sm_90]
//!
//! Each case is OUTDIR/<name>/{kernel.ptx, meta.tsv, in<k>.npy, out<k>.npy}; bandwidth cases
//! (`bench` in meta.tsv) carry no data: the runner fills the inputs and only times the kernel.
use anyhow::{Context, Result};
use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::Path;
use xforge_codegen_ptx::compile;
use xforge_ir::{infer::infer_graph, interp, npy, DType, Graph, GraphBuilder, Op, Tensor, ValueType};
use xforge_kernel::Kernel;
use xforge_passes::fusion::{fuse, Schedule};

fn random(dt: DType, shape: &[usize], seed: u64) -> Tensor {
    let mut s = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let n: usize = shape.iter().product();
    let v: Vec<f64> = (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s >> 11) as f64 / (1u64 << 53) as f64) * 4.0 - 2.0
        })
        .collect();
    Tensor::from_f64(dt, shape.to_vec(), &v)
}

/// gelu(x + b)·σ(x) − clip(x, −1, 1), then HardSwish; b broadcast along the last axis.
fn mix(dt: DType, shape: &[usize]) -> Graph {
    let mut b = GraphBuilder::new("mix", 17);
    let x = b.input("x", dt, shape);
    let u = || ValueType::unranked(dt);
    let last = *shape.last().unwrap();
    let bias = b.weight("bias", random(dt, &[last], 7));
    let lo = b.weight("lo", Tensor::from_f64(dt, vec![], &[-1.0]));
    let hi = b.weight("hi", Tensor::from_f64(dt, vec![], &[1.0]));
    let a = b.node(Op::Add, &[x, bias], vec![], u());
    let ge = b.node(Op::Gelu, &[a], vec![], u());
    let s = b.node(Op::Sigmoid, &[x], vec![], u());
    let m = b.node(Op::Mul, &[ge, s], vec![], u());
    let c = b.node(Op::Clip, &[x, lo, hi], vec![], u());
    let y = b.node(Op::Sub, &[m, c], vec![], u());
    let z = b.node(Op::HardSwish, &[y], vec![], u());
    b.output(z);
    let mut g = b.finish();
    infer_graph(&mut g).unwrap();
    g
}

/// y = relu(x): one read and one write per element, for the bandwidth floor.
fn copy_like(dt: DType, n: usize) -> Graph {
    let mut b = GraphBuilder::new("relu", 17);
    let x = b.input("x", dt, &[n]);
    let y = b.node(Op::Relu, &[x], vec![], ValueType::unranked(dt));
    b.output(y);
    let mut g = b.finish();
    infer_graph(&mut g).unwrap();
    g
}

/// A row-reduction graph: `kind` is softmax, layernorm (scale, bias, ReLU epilogue), rmsnorm
/// or mean (keepdims, tanh epilogue).
fn reduction(kind: &str, dt: DType, rows: usize, len: usize) -> Graph {
    let u = || ValueType::unranked(dt);
    let mut b = GraphBuilder::new(kind, 23);
    let x = b.input("x", dt, &[rows, len]);
    let y = match kind {
        "softmax" => b.node(Op::Softmax, &[x], vec![("axis", xforge_ir::Attr::Int(-1))], u()),
        "layernorm" => {
            let w = b.weight("w", random(dt, &[len], 3));
            let bias = b.weight("b", random(dt, &[len], 4));
            let l = b.node(Op::LayerNormalization, &[x, w, bias], vec![], u());
            b.node(Op::Relu, &[l], vec![], u())
        }
        "rmsnorm" => {
            let w = b.weight("w", random(dt, &[len], 5));
            b.node(Op::RMSNormalization, &[x, w], vec![], u())
        }
        _ => {
            let axes = b.weight("axes", Tensor::from_i64(vec![1], vec![-1]));
            let m = b.node(Op::ReduceMean, &[x, axes], vec![], u());
            b.node(Op::Tanh, &[m], vec![], u())
        }
    };
    b.output(y);
    let mut g = b.finish();
    infer_graph(&mut g).unwrap();
    g
}

/// Embedding lookup (i64 ids, negative ones too) plus positions; a transpose scaled by 2; a
/// padded ceil-mode 3×3/2 MaxPool and a 2×2 AveragePool, each followed by ReLU.
fn movement_and_pools(dt: DType) -> Vec<(&'static str, Graph)> {
    let u = || ValueType::unranked(dt);
    let mut out = vec![];
    let mut b = GraphBuilder::new("embed", 17);
    let ids = b.input("ids", DType::I64, &[4, 64]);
    let table = b.weight("table", random(dt, &[50, 96], 21));
    let pos = b.weight("pos", random(dt, &[64, 96], 22));
    let e = b.node(Op::Gather, &[table, ids], vec![], u());
    let y = b.node(Op::Add, &[e, pos], vec![], u());
    b.output(y);
    out.push(("gather", b.finish()));
    let mut b = GraphBuilder::new("transpose", 17);
    let x = b.input("x", dt, &[6, 20, 33]);
    let t = b.node(Op::Transpose, &[x], vec![("perm", xforge_ir::Attr::Ints(vec![2, 0, 1]))], u());
    let two = b.weight("two", Tensor::from_f64(dt, vec![], &[2.0]));
    let y = b.node(Op::Mul, &[t, two], vec![], u());
    b.output(y);
    out.push(("transpose", b.finish()));
    use xforge_ir::Attr;
    for (name, op, attrs) in [
        (
            "maxpool",
            Op::MaxPool,
            vec![
                ("kernel_shape", Attr::Ints(vec![3, 3])),
                ("strides", Attr::Ints(vec![2, 2])),
                ("pads", Attr::Ints(vec![1, 1, 1, 1])),
                ("ceil_mode", Attr::Int(1)),
            ],
        ),
        (
            "avgpool",
            Op::AveragePool,
            vec![
                ("kernel_shape", Attr::Ints(vec![2, 2])),
                ("strides", Attr::Ints(vec![2, 2])),
                ("pads", Attr::Ints(vec![0, 0, 1, 1])),
            ],
        ),
        ("globalavgpool", Op::GlobalAveragePool, vec![]),
    ] {
        let mut b = GraphBuilder::new(name, 17);
        let x = b.input("x", dt, &[2, 16, 29, 29]);
        let p = b.node(op, &[x], attrs, u());
        let y = b.node(Op::Relu, &[p], vec![], u());
        b.output(y);
        out.push((name, b.finish()));
    }
    out.into_iter()
        .map(|(n, mut g)| {
            infer_graph(&mut g).unwrap();
            (n, g)
        })
        .collect()
}

fn kernels(g: &Graph) -> Result<(Graph, Vec<Kernel>)> {
    let f = fuse(g)?;
    let ks = f
        .partition
        .groups
        .iter()
        .enumerate()
        .filter(|(_, grp)| grp.schedule != Schedule::View)
        .map(|(i, grp)| xforge_kernel::generate(&f.graph, grp, i))
        .collect::<Result<Vec<_>, _>>()?;
    Ok((f.graph, ks))
}

fn write_case(dir: &Path, name: &str, g: &Graph, chip: &str, tol: f64, bench: bool) -> Result<()> {
    let (fused, ks) = kernels(g)?;
    anyhow::ensure!(ks.len() == 1, "{name}: expected one kernel, got {}", ks.len());
    let k = &ks[0];
    let d = dir.join(name);
    std::fs::create_dir_all(&d)?;
    std::fs::write(d.join("kernel.ptx"), compile(&ks, chip)?)?;
    let mut meta = String::new();
    writeln!(meta, "kernel\t{}", k.name)?;
    writeln!(meta, "grid\t{} {} {}", k.grid[0], k.grid[1], k.grid[2])?;
    writeln!(meta, "block\t{} {} {}", k.block[0], k.block[1], k.block[2])?;
    writeln!(meta, "tol\t{tol}")?;
    if bench {
        writeln!(meta, "bench\t1")?;
    }
    // inputs by graph name, the interpreter's outputs by value
    let feed: HashMap<String, Tensor> = if bench {
        HashMap::new()
    } else {
        fused
            .inputs
            .iter()
            .enumerate()
            .map(|(i, &v)| {
                (
                    fused.name_of(v).to_string(),
                    random(fused.ty(v).dtype, &fused.ty(v).static_shape().unwrap(), 11 + i as u64),
                )
            })
            .collect()
    };
    let expected = if bench { vec![] } else { interp::run(&fused, &feed)? };
    for (i, p) in k.params.iter().enumerate() {
        let file = format!("{}{i}.npy", if p.output { "out" } else { "in" });
        writeln!(
            meta,
            "param\t{i}\t{}\t{}\t{}\t{file}",
            if p.output { "out" } else { "in" },
            p.dtype.name(),
            p.elements
        )?;
        if bench {
            continue;
        }
        let t = if p.output {
            let at = fused.outputs.iter().position(|&o| o == p.value).context("kernel output is a graph output")?;
            expected[at].clone()
        } else if let Some(w) = fused.weights.get(&p.value) {
            w.clone()
        } else {
            feed[fused.name_of(p.value)].clone()
        };
        // bf16 goes as its raw bits (u16) so the runner can upload it unchanged
        let bytes = if t.dtype() == DType::BF16 {
            npy::to_bytes(&Tensor::new(
                t.shape().to_vec(),
                xforge_ir::TensorData::U16(match t.data() {
                    xforge_ir::TensorData::BF16(v) => v.iter().map(|x| x.to_bits()).collect(),
                    _ => unreachable!(),
                }),
            ))
        } else {
            npy::to_bytes(&t)
        };
        std::fs::write(d.join(file), bytes)?;
    }
    std::fs::write(d.join("meta.tsv"), meta)?;
    println!("{name}: {} ({} params)", k.name, k.params.len());
    Ok(())
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let dir = Path::new(args.get(1).context("usage: kernel_cases OUTDIR [CHIP]")?);
    let chip = args.get(2).map(String::as_str).unwrap_or("sm_90");
    for (dt, tol) in [(DType::F32, 1e-5), (DType::F16, 1e-2), (DType::BF16, 1e-2)] {
        write_case(dir, &format!("elementwise_mix_{dt}"), &mix(dt, &[8, 33, 96]), chip, tol, false)?;
    }
    for kind in ["softmax", "layernorm", "rmsnorm", "mean"] {
        for (dt, tol) in [(DType::F32, 1e-5), (DType::F16, 1e-2), (DType::BF16, 1e-2)] {
            write_case(dir, &format!("row_{kind}_{dt}"), &reduction(kind, dt, 37, 1000), chip, tol, false)?;
        }
    }
    for (dt, tol) in [(DType::F32, 1e-5), (DType::F16, 1e-2)] {
        for (name, g) in movement_and_pools(dt) {
            write_case(dir, &format!("{name}_{dt}"), &g, chip, tol, false)?;
        }
    }
    write_case(dir, "row_layernorm_wide_f32", &reduction("layernorm", DType::F32, 5, 12288), chip, 1e-5, false)?;
    // softmax and LayerNorm over 4096×4096 f16: 32 MiB in, 32 MiB out
    write_case(dir, "bench_softmax_f16", &reduction("softmax", DType::F16, 4096, 4096), chip, 0.0, true)?;
    write_case(dir, "bench_layernorm_f16", &reduction("layernorm", DType::F16, 4096, 4096), chip, 0.0, true)?;
    // 256 MiB of f32 in, 256 MiB out; and the same bytes in f16
    write_case(dir, "bench_elementwise_f32", &copy_like(DType::F32, 64 << 20), chip, 0.0, true)?;
    write_case(dir, "bench_elementwise_f16", &copy_like(DType::F16, 128 << 20), chip, 0.0, true)?;
    Ok(())
}
