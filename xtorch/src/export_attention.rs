//! `MultiheadAttention` into xforge's graph (opset 17 ops only): the input projection as one
//! MatMul and Add, Split into q, k, v, each reshaped to [N, T, H, D] and transposed to heads
//! (k straight to [N, H, D, T]), the scores q·kᵀ scaled by 1/√D (plus the causal mask, a
//! [T, T] weight "<name>.causal_mask" with −∞ above the diagonal), Softmax on the last axis,
//! the weighted sum of v, the heads transposed and reshaped back to [N, T, E], and the output
//! projection. The weights keep PyTorch's names ("3.in_proj_weight", "3.out_proj.weight", ...).
use crate::attention::MultiheadAttention;
use crate::export::{ints, op, scalar, to_ir, ExportError};
use tch::Tensor;
use xforge_ir::{Attr, GraphBuilder, Op, ValueId};

pub(crate) type Param<'a> = dyn Fn(&str, &Tensor) -> Result<xforge_ir::Tensor, ExportError> + 'a;

pub(crate) fn emit(
    b: &mut GraphBuilder,
    names: &mut Vec<String>,
    name: &str,
    a: &MultiheadAttention,
    x: ValueId,
    shape: &[i64],
    param: &Param,
) -> Result<ValueId, ExportError> {
    let [n, t, e] = shape[..] else { unreachable!("checked: [N, T, E]") };
    let (h, d) = (a.num_heads, a.head_dim());
    let k = "MultiheadAttention";
    let nm = |part: &str| format!("{name}.{k}.{part}");
    let perm = |p: &[i64]| vec![("perm", Attr::Ints(p.to_vec()))];

    let w_in = b.weight(&format!("{name}.in_proj_weight"), param("in_proj_weight", &a.in_proj_weight)?);
    let b_in = b.weight(&format!("{name}.in_proj_bias"), param("in_proj_bias", &a.in_proj_bias)?);
    let w_in_t = op(b, names, nm("in_proj.transpose"), Op::Transpose, &[w_in], perm(&[1, 0]));
    let qkv = op(b, names, nm("in_proj.matmul"), Op::MatMul, &[x, w_in_t], vec![]);
    let qkv = op(b, names, nm("in_proj.bias"), Op::Add, &[qkv, b_in], vec![]);
    let sizes = ints(b, &format!("{name}.split"), &[e, e, e]);
    names.push(nm("split"));
    let u = xforge_ir::ValueType::unranked(xforge_ir::DType::F32);
    let parts = b.node_multi(
        Op::Split,
        &[Some(qkv), Some(sizes)],
        vec![("axis", Attr::Int(-1))],
        vec![u.clone(), u.clone(), u],
    );
    let heads_shape = ints(b, &format!("{name}.heads_shape"), &[n, t, h, d]);
    let q = op(b, names, nm("q.reshape"), Op::Reshape, &[parts[0], heads_shape], vec![]);
    let q = op(b, names, nm("q.transpose"), Op::Transpose, &[q], perm(&[0, 2, 1, 3]));
    let kk = op(b, names, nm("k.reshape"), Op::Reshape, &[parts[1], heads_shape], vec![]);
    let kt = op(b, names, nm("k.transpose"), Op::Transpose, &[kk], perm(&[0, 2, 3, 1]));
    let v = op(b, names, nm("v.reshape"), Op::Reshape, &[parts[2], heads_shape], vec![]);
    let v = op(b, names, nm("v.transpose"), Op::Transpose, &[v], perm(&[0, 2, 1, 3]));
    let scores = op(b, names, nm("scores"), Op::MatMul, &[q, kt], vec![]);
    let scale = scalar(b, &format!("{name}.scale"), a.scale() as f32);
    let mut scores = op(b, names, nm("scale"), Op::Mul, &[scores, scale], vec![]);
    if a.causal {
        let mask =
            b.weight(&format!("{name}.causal_mask"), to_ir(&MultiheadAttention::causal_mask(t, tch::Device::Cpu)));
        scores = op(b, names, nm("mask"), Op::Add, &[scores, mask], vec![]);
    }
    let probs = op(b, names, nm("softmax"), Op::Softmax, &[scores], vec![("axis", Attr::Int(-1))]);
    let y = op(b, names, nm("context"), Op::MatMul, &[probs, v], vec![]);
    let y = op(b, names, nm("merge.transpose"), Op::Transpose, &[y], perm(&[0, 2, 1, 3]));
    let merged = ints(b, &format!("{name}.merged_shape"), &[n, t, e]);
    let y = op(b, names, nm("merge.reshape"), Op::Reshape, &[y, merged], vec![]);
    let w_out = b.weight(&format!("{name}.out_proj.weight"), param("out_proj.weight", &a.out_proj.ws)?);
    let w_out_t = op(b, names, nm("out_proj.transpose"), Op::Transpose, &[w_out], perm(&[1, 0]));
    let y = op(b, names, nm("out_proj.matmul"), Op::MatMul, &[y, w_out_t], vec![]);
    match &a.out_proj.bs {
        Some(bs) => {
            let bias = b.weight(&format!("{name}.out_proj.bias"), param("out_proj.bias", bs)?);
            Ok(op(b, names, nm("out_proj.bias"), Op::Add, &[y, bias], vec![]))
        }
        None => Ok(y),
    }
}
