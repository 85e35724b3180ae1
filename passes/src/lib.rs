//! Graph passes: canonicalization before fusion, then operator fusion with e-graphs.
pub mod batch_rows;
pub mod bn_fold;
pub mod bounded;
pub mod control;
pub mod conv1d;
pub mod cse;
pub mod dce;
pub mod decompose;
pub mod fold;
pub mod fusion;
pub mod gather_split;
pub mod integer_ops;
pub mod knobs;
pub mod memory;
pub mod noop;
pub mod padded;
pub mod patch_conv;
pub mod precision;
pub mod qdq;
pub mod rewrite;
pub mod sibling_gemm;
pub mod slice_concat;
pub mod tuning;
pub mod variadic;
pub mod window_attention;

use xforge_ir::Graph;

/// What the canonicalization pipeline changed.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct CanonStats {
    pub inlined: usize,
    pub integer_ops: usize,
    pub decomposed: usize,
    pub folded: usize,
    pub noops: usize,
    pub batch_norms: usize,
    pub merged_gemms: usize,
    pub patch_convs: usize,
    pub conv1d: usize,
    pub attention_blocks: usize,
    pub common: usize,
    pub dead: usize,
}

/// The passes that run before fusion, to a fixed point: control flow inlined, integer contractions written in f64,
/// sequence-model ops written as the ops ONNX defines them by, constant folding, no-op removal,
/// BatchNorm folding, sibling-GEMM merging, 1-D convolutions as 2-D, patch convolutions as GEMMs, common subexpressions
/// merged, dead-code elimination. Types are re-inferred.
pub fn canonicalize(g: &mut Graph) -> Result<CanonStats, xforge_ir::infer::InferError> {
    let mut st = CanonStats::default();
    for _ in 0..8 {
        let before = st.clone();
        st.inlined += control::inline_control_flow(g);
        st.integer_ops += integer_ops::lower_integer_contractions(g);
        st.decomposed += decompose::decompose(g);
        if st.inlined > before.inlined || st.integer_ops > before.integer_ops || st.decomposed > before.decomposed {
            xforge_ir::infer::infer_graph(g)?;
        }
        st.folded += fold::fold_constants(g);
        st.noops += variadic::split_wide_variadics(g);
        st.noops += noop::remove_noops(g);
        st.batch_norms += bn_fold::fold_batch_norms(g);
        st.batch_norms += bn_fold::batch_norms_to_affine(g);
        st.merged_gemms += sibling_gemm::merge_sibling_matmuls(g);
        st.conv1d += conv1d::conv1d_as_2d(g);
        st.patch_convs += patch_conv::patch_convs_to_gemms(g);
        st.attention_blocks += window_attention::attention_blocks(g);
        st.noops += slice_concat::concats_of_slices_to_gathers(g);
        st.noops += slice_concat::concats_of_phases_to_transposes(g);
        st.common += cse::merge_common(g);
        st.dead += dce::dce(g);
        xforge_ir::infer::infer_graph(g)?;
        if st == before {
            break;
        }
    }
    Ok(st)
}
