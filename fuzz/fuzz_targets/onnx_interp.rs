//! The reference interpreter on what the importer accepts: small models (at most 64 nodes, static
//! inputs of at most 4096 elements, fed ones) run under a 2^20-element limit per tensor; a result
//! or an error naming the node, never a panic, an abort or a hang.
#![no_main]
use libfuzzer_sys::fuzz_target;
mod capped_alloc;
use std::collections::HashMap;
use xforge_ir::Tensor;

fuzz_target!(|data: &[u8]| {
    let Ok(m) = xforge_frontend::parse(data, None, &xforge_frontend::ImportOptions::default()) else { return };
    let g = &m.graph;
    if g.nodes.len() > 64 {
        return;
    }
    let mut feeds = HashMap::new();
    for &v in &g.inputs {
        let ty = g.ty(v);
        let Some(shape) = ty.static_shape() else { return };
        let n: usize = shape.iter().product();
        if n > 4096 {
            return;
        }
        feeds.insert(g.name_of(v).to_string(), Tensor::from_f64(ty.dtype, shape, &vec![1.0; n]));
    }
    let _ = xforge_ir::interp::with_element_limit(1 << 20, || xforge_ir::interp::run(g, &feeds));
});
