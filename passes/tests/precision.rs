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
