//! Differential: what the compiler's graph passes make of a model computes what the model does.
//! Small models the importer accepts (at most 32 nodes, static inputs of at most 4096 elements)
//! run through the reference interpreter as imported and after canonicalization and e-graph
//! fusion (`xforge_passes`), on the same seeded inputs; outputs must agree (floats within
//! 1e-3 relative L2 where both are finite, everything else exactly). A model the interpreter
//! refuses is skipped; one it runs whose rewritten form does not run, or runs to other values,
//! is a crash.
#![no_main]
use libfuzzer_sys::fuzz_target;
mod capped_alloc;
use std::collections::HashMap;
use xforge_ir::{interp, DType, Tensor};

fuzz_target!(|data: &[u8]| {
    let Ok(m) = xforge_frontend::parse(data, None, &xforge_frontend::ImportOptions::default()) else { return };
    let g = m.graph;
    if g.nodes.len() > 32 {
        return;
    }
    let mut s = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        (s >> 11) as f64 / (1u64 << 53) as f64
    };
    let mut feeds = HashMap::new();
    for &v in &g.inputs {
        let ty = g.ty(v);
        let Some(shape) = ty.static_shape() else { return };
        let n: usize = shape.iter().product();
        if n > 4096 {
            return;
        }
        let vals: Vec<f64> = (0..n)
            .map(|_| if ty.dtype.is_float() { 2.0 * next() - 1.0 } else if ty.dtype == DType::Bool { (next() < 0.5) as u8 as f64 } else { (next() * 3.0).floor() })
            .collect();
        feeds.insert(g.name_of(v).to_string(), Tensor::from_f64(ty.dtype, shape, &vals));
    }
    let limit = 1 << 18;
    let Ok(want) = interp::with_element_limit(limit, || interp::run(&g, &feeds)) else { return };
    let mut c = g.clone();
    if xforge_passes::canonicalize(&mut c).is_err() {
        return;
    }
    let Ok(f) = xforge_passes::fusion::fuse(&c) else { return };
    let got = interp::with_element_limit(limit, || interp::run(&f.graph, &feeds))
        .unwrap_or_else(|e| panic!("the model runs, its rewritten form does not: {e}"));
    assert_eq!(want.len(), got.len(), "output count");
    for (k, (w, o)) in want.iter().zip(&got).enumerate() {
        assert_eq!(w.shape(), o.shape(), "output {k}'s shape");
        assert_eq!(w.dtype(), o.dtype(), "output {k}'s type");
        let (a, b) = (w.to_f64(), o.to_f64());
        if !w.dtype().is_float() {
            assert!(a == b, "output {k}: {a:?} became {b:?}");
            continue;
        }
        if a.iter().chain(&b).any(|v| !v.is_finite()) {
            continue;
        }
        let e = xforge_ir::tensor::rel_l2(o, w);
        let scale: f64 = a.iter().map(|v| v * v).sum::<f64>().sqrt();
        assert!(e <= 1e-3 || e * scale <= 1e-5 * (a.len() as f64).sqrt(), "output {k}: relative L2 {e:.3e}");
    }
});
