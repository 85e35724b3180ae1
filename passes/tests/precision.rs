//! precision: the shipped models in f16 and bf16 storage verify, keep their input and output
//! types and names, and match the f32 model within the half types' tolerance.
mod common;
use common::random_inputs;
use std::path::Path;
use xforge_ir::tensor::rel_l2;
use xforge_ir::{interp, DType};
use xforge_passes::precision::convert;

fn shipped(name: &str) -> xforge_ir::Graph {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../models").join(name);
    xforge_frontend::load(&p, &Default::default()).unwrap().graph
}

#[test]
fn half_storage_matches_the_f32_model() {
    // mnasnet0_5's random weights shrink its activations to ~1e-8 by the classifier, below f16's
    // range (not bf16's): it is checked in bf16 only. The Mamba block (PyTorch export, its
    // selective scan a com.xforge op) has 9 weights.
    let cases = [
        ("bert_tiny.onnx", vec![DType::F16, DType::BF16], 10),
        ("mnasnet0_5.onnx", vec![DType::BF16], 10),
        ("mamba_block/model.onnx", vec![DType::F16, DType::BF16], 5),
    ];
    for (name, targets, min_weights) in cases {
        let g = shipped(name);
        for target in targets {
            let mut h = g.clone();
            let n = convert(&mut h, target).unwrap();
            assert!(n > min_weights, "{name}: {n} weights converted");
            xforge_ir::verify::verify(&h).unwrap_or_else(|e| panic!("{name} {target}: {e}"));
            // the interface is unchanged: same names, same types
            for (a, b) in g.inputs.iter().zip(&h.inputs).chain(g.outputs.iter().zip(&h.outputs)) {
                assert_eq!((g.name_of(*a), g.ty(*a)), (h.name_of(*b), h.ty(*b)), "{name}");
            }
            // and the computation runs in the target type, except the selective scan's A, D and
            // delta_bias, which stay f32
            let scan_f32: Vec<_> = h
                .nodes
                .iter()
                .filter(|n| n.op == xforge_ir::Op::SelectiveScan)
                .flat_map(|n| [2, 5, 7].into_iter().filter_map(|k| n.inputs.get(k).copied().flatten()))
                .collect();
            for (id, t) in h.weights.iter().filter(|(_, t)| t.dtype().is_float()) {
                let want = if scan_f32.contains(id) { DType::F32 } else { target };
                assert_eq!(t.dtype(), want, "{name}: weight {}", h.name_of(*id));
            }
            assert_eq!(scan_f32.len(), if name.starts_with("mamba") { 3 } else { 0 }, "{name}");
            let feed = random_inputs(&g, 5);
            let want = interp::run(&g, &feed).unwrap();
            let got = interp::run(&h, &feed).unwrap();
            let e = rel_l2(&got[0], &want[0]);
            let bound = if target == DType::F16 { 1e-2 } else { 3e-2 };
            assert!(e <= bound, "{name} in {target}: relative L2 {e:.2e}");
            eprintln!("{name} {target}: {e:.2e}");
        }
    }
}

/// Index arithmetic stays f32: a bilinear read of a 4096-entry table at positions near 3000
/// (f16 steps 2 there). Before: `pos` f32 input, `p = pos·1.5 + 1000.3`, `lo = floor(p)`,
/// `i = cast<i64>(lo)`, `frac = p − lo`, `y = table[i]·(1 − frac) + table[i + 1]·frac`. After
/// f16 conversion: the table is f16, `pos`, `p`, `lo` and `frac` stay f32 (no entry cast for
/// `pos`), `frac` is cast to f16 once where the table's values read it, and the result matches
/// the f32 graph; converting everything would read entries up to a step away.
#[test]
fn index_arithmetic_stays_f32() {
    use xforge_ir::{Attr, GraphBuilder, Op, Tensor, ValueType};
    let mut b = GraphBuilder::new("lookup", 17);
    let pos = b.input("pos", DType::F32, &[64]);
    let table: Vec<f32> = (0..4096).map(|i| (i as f32 * 0.37).sin()).collect();
    let table = b.weight("table", Tensor::from_f32(vec![4096], table));
    let gain = b.weight("gain", Tensor::scalar_f32(1.5));
    let base = b.weight("base", Tensor::scalar_f32(1000.3));
    let one = b.weight("one", Tensor::scalar_f32(1.0));
    let one_i = b.weight("one_i", Tensor::scalar_i64(1));
    let f = |dt| ValueType::unranked(dt);
    let p = b.node(Op::Mul, &[pos, gain], vec![], f(DType::F32));
    let p = b.node(Op::Add, &[p, base], vec![], f(DType::F32));
    let lo = b.node(Op::Floor, &[p], vec![], f(DType::F32));
    let i = b.node(Op::Cast, &[lo], vec![("to", Attr::Int(7))], f(DType::I64));
    let i1 = b.node(Op::Add, &[i, one_i], vec![], f(DType::I64));
    let frac = b.node(Op::Sub, &[p, lo], vec![], f(DType::F32));
    let v0 = b.node(Op::Gather, &[table, i], vec![("axis", Attr::Int(0))], f(DType::F32));
    let v1 = b.node(Op::Gather, &[table, i1], vec![("axis", Attr::Int(0))], f(DType::F32));
    let keep = b.node(Op::Sub, &[one, frac], vec![], f(DType::F32));
    let a = b.node(Op::Mul, &[v0, keep], vec![], f(DType::F32));
    let c = b.node(Op::Mul, &[v1, frac], vec![], f(DType::F32));
    let y = b.node(Op::Add, &[a, c], vec![], f(DType::F32));
    b.output(y);
    let mut g = b.finish();
    xforge_ir::infer::infer_graph(&mut g).unwrap();
    let mut h = g.clone();
    convert(&mut h, DType::F16).unwrap();
    xforge_ir::verify::verify(&h).unwrap();
    let ty = |name: &str| h.ty(h.find_value(name).unwrap_or_else(|| panic!("{name}"))).dtype;
    assert_eq!(ty("table"), DType::F16);
    for kept in
        ["pos", "gain", "base", &h.name_of(p).to_string(), &h.name_of(lo).to_string(), &h.name_of(frac).to_string()]
    {
        assert_eq!(ty(kept), DType::F32, "{kept}");
    }
    assert!(!h.nodes.iter().any(|n| n.name.starts_with("precision_in")), "pos is read as it is");
    let narrowed: Vec<_> = h.nodes.iter().filter(|n| n.name.starts_with("precision_narrow")).collect();
    assert_eq!(narrowed.len(), 2, "frac and 1 − frac, each cast once for the f16 products");
    let pos_v: Vec<f32> = (0..64).map(|k| k as f32 * 21.3).collect();
    let feed = std::collections::HashMap::from([("pos".to_string(), Tensor::from_f32(vec![64], pos_v))]);
    let want = interp::run(&g, &feed).unwrap();
    let got = interp::run(&h, &feed).unwrap();
    let e = rel_l2(&got[0], &want[0]);
    assert!(e < 2e-3, "relative L2 {e:.2e}");
}
