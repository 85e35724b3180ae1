//! The generic kernels, op by op and dtype by dtype: each case builds a one-node graph, makes
//! the node's generic kernel (schedule `Generic`), runs it on the host (MLIR's execution engine)
//! on random inputs and compares every output with the interpreter. `generic_cases!` expands one
//! test per case, run over the dtypes it lists.
use std::collections::HashMap;
use xforge_ir::{interp, Attr, DType, Graph, GraphBuilder, Op, Tensor};
use xforge_passes::fusion::partition::group_of_nodes;
use xforge_passes::fusion::Schedule;
use xforge_testsuite::compare::allclose;
use xforge_testsuite::host_kernels::run_kernel;

/// Deterministic values of `dt`: floats in [-1, 1), signed integers in [-5, 5), unsigned in
/// [0, 10), bools half and half.
fn random(dt: DType, shape: &[usize], seed: u64) -> Tensor {
    let n: usize = shape.iter().product();
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let v: Vec<f64> = (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            let u = (s >> 11) as f64 / (1u64 << 53) as f64;
            match dt {
                d if d.is_float() => u * 2.0 - 1.0,
                DType::Bool => (u < 0.5) as u8 as f64,
                d if d.is_signed_int() => (u * 10.0).floor() - 5.0,
                _ => (u * 10.0).floor(),
            }
        })
        .collect();
    Tensor::from_f64(dt, shape.to_vec(), &v)
}

fn tolerance(dt: DType) -> (f64, f64) {
    match dt {
        DType::F16 => (2e-3, 2e-3),
        DType::BF16 => (1.6e-2, 1.6e-2),
        DType::F32 => (1e-4, 1e-5),
        DType::F64 => (1e-9, 1e-12),
        _ => (0.0, 0.0),
    }
}

/// Runs the generic kernel of `g`'s only node on its (random or given) inputs against the
/// interpreter.
fn check(mut g: Graph, given: &[(usize, Tensor)]) {
    xforge_ir::infer::infer_graph(&mut g).expect("types");
    assert_eq!(g.nodes.len(), 1, "one node");
    let node = &g.nodes[0];
    let mut feed: HashMap<xforge_ir::ValueId, Tensor> = HashMap::new();
    for (k, &i) in g.inputs.iter().enumerate() {
        let t = match given.iter().find(|(j, _)| *j == k) {
            Some((_, t)) => t.clone(),
            None => random(g.ty(i).dtype, &g.ty(i).static_shape().unwrap(), k as u64 + 7),
        };
        feed.insert(i, t);
    }
    let ins: Vec<Option<Tensor>> =
        node.inputs.iter().map(|v| v.map(|v| feed.get(&v).or_else(|| g.weights.get(&v)).unwrap().clone())).collect();
    let want = interp::eval_node(node, &ins, g.opset).expect("the interpreter runs the case");
    let grp = group_of_nodes(&g, Schedule::Generic, vec![0]);
    let k = xforge_kernel::generate(&g, &grp, 0).unwrap_or_else(|e| panic!("{} has no generic kernel: {e}", node.op));
    let mut bufs: Vec<Vec<u8>> = k
        .params
        .iter()
        .enumerate()
        .map(|(pi, p)| {
            let mut b = match (k.constant(pi), p.output) {
                (Some(c), _) => c.to_vec(),
                (None, true) => vec![0xAB; p.elements * p.dtype.size()],
                (None, false) => feed.get(&p.value).or_else(|| g.weights.get(&p.value)).unwrap().data().to_le_bytes(),
            };
            b.resize(b.len().max(p.elements.max(1) * p.dtype.size()), 0);
            b
        })
        .collect();
    run_kernel(&k, &mut bufs).expect("the kernel runs on the host");
    for (j, o) in node.outputs.iter().enumerate() {
        let Some(o) = o else { continue };
        let pi = k.params.iter().position(|p| p.output && p.value == *o).expect("every output is a parameter");
        let p = &k.params[pi];
        let shape = g.ty(*o).static_shape().unwrap();
        let n: usize = shape.iter().product();
        let got =
            Tensor::new(shape, xforge_ir::TensorData::from_le_bytes(p.dtype, &bufs[pi][..n * p.dtype.size()]).unwrap());
        let (rtol, atol) = tolerance(p.dtype);
        allclose(&got, &want[j], rtol, atol).unwrap_or_else(|e| panic!("{} output {j} ({}): {e}", node.op, p.dtype));
    }
}

/// A one-node graph: inputs of the given dtypes and shapes, weights, attributes.
fn one(op: Op, ins: &[(DType, &[usize])], weights: &[Tensor], attrs: Vec<(&str, Attr)>, outs: usize) -> Graph {
    let mut b = GraphBuilder::new("case", 21);
    let mut ids = vec![];
    for (k, (dt, shape)) in ins.iter().enumerate() {
        ids.push(b.input(&format!("x{k}"), *dt, shape));
    }
    for (k, t) in weights.iter().enumerate() {
        ids.push(b.weight(&format!("w{k}"), t.clone()));
    }
    let ids: Vec<Option<xforge_ir::ValueId>> = ids.into_iter().map(Some).collect();
    let outs = b.node_multi(op, &ids, attrs, vec![xforge_ir::ValueType::unranked(DType::F32); outs]);
    for &o in &outs {
        b.output(o);
    }
    let mut g = b.finish();
    // the outputs' types are the op's to say
    g.undeclared.extend(outs);
    g
}

macro_rules! generic_cases {
    ($($name:ident: [$($dt:ident),*] => |$d:ident| $body:expr;)*) => {
        $(
            #[test]
            fn $name() {
                for $d in [$(DType::$dt),*] {
                    $body
                }
            }
        )*
    };
}

const F: &[usize] = &[3, 5, 7];

generic_cases! {
    unary_float_math: [F32, F16, BF16, F64] => |d| {
        for op in [Op::Exp, Op::Tanh, Op::Erf, Op::Sigmoid, Op::Softplus, Op::Atan, Op::Asinh, Op::Round, Op::Sign, Op::Mish, Op::Selu] {
            check(one(op, &[(d, F)], &[], vec![], 1), &[]);
        }
    };
    integer_arithmetic: [I64, I32, I16, I8, U8, U16, U32, U64] => |d| {
        for op in [Op::Add, Op::Sub, Op::Mul, Op::Max, Op::Min] {
            check(one(op, &[(d, F), (d, &[5, 1])], &[], vec![], 1), &[]);
        }
    };
    integer_division_and_mod: [I64, I32, I8] => |d| {
        // divisors that are never 0: 1..=5 with both signs
        let div = Tensor::from_f64(d, vec![5, 7], &(0..35).map(|i| ((i % 5) + 1) as f64 * if i % 2 == 0 { 1.0 } else { -1.0 }).collect::<Vec<_>>());
        check(one(Op::Div, &[(d, F)], &[div.clone()], vec![], 1), &[]);
        check(one(Op::Mod, &[(d, F)], &[div.clone()], vec![], 1), &[]);
        check(one(Op::Mod, &[(d, F)], &[div], vec![("fmod", Attr::Int(1))], 1), &[]);
    };
    comparisons_and_logic: [F32, I32, U8] => |d| {
        for op in [Op::Equal, Op::Less, Op::GreaterOrEqual] {
            check(one(op, &[(d, F), (d, &[7])], &[], vec![], 1), &[]);
        }
        check(one(Op::Where, &[(DType::Bool, &[5, 7]), (d, F), (d, &[1])], &[], vec![], 1), &[]);
        check(one(Op::Xor, &[(DType::Bool, F), (DType::Bool, F)], &[], vec![], 1), &[]);
    };
    casts_between_every_dtype: [F32, F16, BF16, F64, I64, I32, I8, U8, Bool] => |d| {
        for to in [DType::F32, DType::F16, DType::F64, DType::I64, DType::I32, DType::U8, DType::Bool] {
            check(one(Op::Cast, &[(d, F)], &[], vec![("to", Attr::Int(to.onnx_code() as i64))], 1), &[]);
        }
    };
    gathers_with_negative_indices: [F32, I64, F16] => |d| {
        let idx = Tensor::from_i64(vec![2, 3], vec![0, -1, 2, -3, 1, 4]);
        check(one(Op::Gather, &[(d, &[5, 4])], &[idx], vec![("axis", Attr::Int(0))], 1), &[]);
        let el = Tensor::from_i64(vec![5, 2], vec![0, -1, 3, 2, 1, 1, -4, 0, 3, 3]);
        check(one(Op::GatherElements, &[(d, &[5, 4])], &[el], vec![("axis", Attr::Int(1))], 1), &[]);
        let nd = Tensor::from_i64(vec![3, 2], vec![0, 1, -1, 2, 4, -4]);
        check(one(Op::GatherND, &[(d, &[5, 4, 2])], &[nd], vec![], 1), &[]);
    };
    scatters_in_update_order: [F32, I32] => |d| {
        // repeated indices (given as inputs): the interpreter's order decides
        let idx = Tensor::from_i64(vec![3, 1], vec![1, 3, 1]);
        for red in ["none", "add", "max"] {
            let g = one(Op::ScatterND, &[(d, &[5, 4]), (DType::I64, &[3, 1]), (d, &[3, 4])], &[], vec![("reduction", Attr::Str(red.into()))], 1);
            check(g, &[(1, idx.clone())]);
        }
        let el = Tensor::from_i64(vec![2, 3], vec![1, 0, 2, 0, 2, -1]);
        let g = one(Op::ScatterElements, &[(d, &[3, 3]), (DType::I64, &[2, 3]), (d, &[2, 3])], &[], vec![("axis", Attr::Int(0)), ("reduction", Attr::Str("add".into()))], 1);
        check(g, &[(1, el)]);
    };
    movement_by_index_tables: [F32, U8] => |d| {
        let pads = Tensor::from_i64(vec![4], vec![1, 2, 2, 1]);
        for mode in ["reflect", "edge", "wrap"] {
            check(one(Op::Pad, &[(d, &[4, 5])], &[pads.clone()], vec![("mode", Attr::Str(mode.into()))], 1), &[]);
        }
        check(one(Op::Tile, &[(d, &[2, 3])], &[Tensor::from_i64(vec![2], vec![2, 3])], vec![], 1), &[]);
        check(one(Op::DepthToSpace, &[(d, &[1, 8, 2, 3])], &[], vec![("blocksize", Attr::Int(2)), ("mode", Attr::Str("CRD".into()))], 1), &[]);
        check(one(Op::Trilu, &[(d, &[4, 5])], &[Tensor::from_i64(vec![], vec![-1])], vec![("upper", Attr::Int(0))], 1), &[]);
    };
    slices_with_negative_steps: [F32, I64] => |d| {
        let w = [Tensor::from_i64(vec![2], vec![-1, 1]), Tensor::from_i64(vec![2], vec![-100, 7]), Tensor::from_i64(vec![2], vec![0, 1]), Tensor::from_i64(vec![2], vec![-2, 3])];
        check(one(Op::Slice, &[(d, &[6, 8])], &w, vec![], 1), &[]);
    };
    resize_modes: [F32, F16] => |d| {
        let scales = Tensor::from_f64(DType::F32, vec![4], &[1.0, 1.0, 1.7, 0.6]);
        for (mode, coord) in [("linear", "half_pixel"), ("cubic", "align_corners"), ("nearest", "asymmetric")] {
            let empty = Tensor::from_f64(DType::F32, vec![0], &[]);
            check(one(Op::Resize, &[(d, &[1, 2, 5, 6])], &[empty, scales.clone()], vec![("mode", Attr::Str(mode.into())), ("coordinate_transformation_mode", Attr::Str(coord.into()))], 1), &[]);
        }
    };
    reductions_over_any_axes: [F32, I32, F16] => |d| {
        for op in [Op::ReduceSum, Op::ReduceMax, Op::ReduceMean, Op::ReduceProd] {
            let axes = Tensor::from_i64(vec![2], vec![0, 2]);
            check(one(op, &[(d, &[3, 4, 5])], &[axes], vec![("keepdims", Attr::Int(0))], 1), &[]);
        }
        check(one(Op::ArgMax, &[(d, &[3, 4, 5])], &[], vec![("axis", Attr::Int(1)), ("select_last_index", Attr::Int(1))], 1), &[]);
    };
    softmax_cumsum_topk: [F32, F16] => |d| {
        check(one(Op::LogSoftmax, &[(d, &[3, 4, 5])], &[], vec![("axis", Attr::Int(1))], 1), &[]);
        check(one(Op::CumSum, &[(d, &[3, 6])], &[Tensor::from_i64(vec![], vec![1])], vec![("exclusive", Attr::Int(1)), ("reverse", Attr::Int(1))], 1), &[]);
        check(one(Op::TopK, &[(d, &[3, 9])], &[Tensor::from_i64(vec![1], vec![4])], vec![("largest", Attr::Int(0))], 2), &[]);
    };
    nms_overlap_mask: [F32, F16, F64] => |d| {
        // 70 boxes: three words a row, the last one partial; a shuffled order with entries
        // past either end (clamped); corner boxes and center boxes
        let (n, classes) = (70usize, 3usize);
        let order: Vec<i64> = (0..2 * classes * n).map(|i| ((i * 37 + 11) % (n + 4)) as i64 - 2).collect();
        let order = Tensor::from_i64(vec![2, classes, n], order);
        for center in [0, 1] {
            let iou = Tensor::from_f64(d, vec![1], &[0.2]);
            let g = one(Op::NmsOverlapMask, &[(d, &[2, n, 4]), (DType::I64, &[2, classes, n])], &[iou], vec![("center_point_box", Attr::Int(center))], 1);
            check(g, &[(1, order.clone())]);
        }
    };
    normalizations: [F32, F16] => |d| {
        check(one(Op::GroupNormalization, &[(d, &[2, 6, 3, 3]), (d, &[6]), (d, &[6])], &[], vec![("num_groups", Attr::Int(3))], 1), &[]);
        check(one(Op::InstanceNormalization, &[(d, &[2, 3, 4, 4]), (d, &[3]), (d, &[3])], &[], vec![], 1), &[]);
        check(one(Op::LRN, &[(d, &[1, 5, 3, 3])], &[], vec![("size", Attr::Int(3))], 1), &[]);
        check(one(Op::LayerNormalization, &[(d, &[2, 3, 8]), (d, &[8]), (d, &[8])], &[], vec![("axis", Attr::Int(-1))], 3), &[]);
    };
    contractions_of_any_dtype: [F32, I32, F16] => |d| {
        check(one(Op::MatMul, &[(d, &[2, 1, 3, 4]), (d, &[3, 4, 5])], &[], vec![], 1), &[]);
        check(one(Op::Einsum, &[(d, &[2, 3, 4]), (d, &[2, 4, 5])], &[], vec![("equation", Attr::Str("bij,bjk->bik".into()))], 1), &[]);
        check(one(Op::Einsum, &[(d, &[4, 4])], &[], vec![("equation", Attr::Str("ii->i".into()))], 1), &[]);
    };
    convolutions_of_any_rank: [F32, F16] => |d| {
        // 3-D, groups, dilations, asymmetric pads: what cuDNN is not asked to do
        check(one(Op::Conv, &[(d, &[1, 4, 5, 6, 5]), (d, &[6, 2, 2, 3, 2])], &[], vec![("group", Attr::Int(2)), ("dilations", Attr::Ints(vec![1, 2, 1])), ("pads", Attr::Ints(vec![1, 0, 2, 0, 1, 0]))], 1), &[]);
        check(one(Op::ConvTranspose, &[(d, &[1, 2, 4, 3]), (d, &[2, 3, 3, 2])], &[], vec![("strides", Attr::Ints(vec![2, 1])), ("output_padding", Attr::Ints(vec![1, 0]))], 1), &[]);
    };
    pools_with_indices: [F32, F16] => |d| {
        check(one(Op::MaxPool, &[(d, &[1, 2, 7, 6])], &[], vec![("kernel_shape", Attr::Ints(vec![3, 2])), ("strides", Attr::Ints(vec![2, 2])), ("pads", Attr::Ints(vec![1, 0, 1, 1])), ("ceil_mode", Attr::Int(1))], 2), &[]);
        check(one(Op::AveragePool, &[(d, &[1, 2, 7, 6])], &[], vec![("kernel_shape", Attr::Ints(vec![3, 3])), ("pads", Attr::Ints(vec![1, 1, 1, 1])), ("count_include_pad", Attr::Int(1))], 1), &[]);
        check(one(Op::LpPool, &[(d, &[1, 2, 6, 6])], &[], vec![("kernel_shape", Attr::Ints(vec![2, 2])), ("p", Attr::Int(3))], 1), &[]);
    };
    losses_and_roi_align: [F32] => |d| {
        let labels = Tensor::from_i64(vec![3, 2], vec![0, 4, 2, 1, 3, 3]);
        check(one(Op::SoftmaxCrossEntropyLoss, &[(d, &[3, 5, 2])], &[labels.clone()], vec![("reduction", Attr::Str("mean".into()))], 2), &[]);
        check(one(Op::NegativeLogLikelihoodLoss, &[(d, &[3, 5, 2])], &[labels], vec![("reduction", Attr::Str("none".into())), ("ignore_index", Attr::Int(3))], 1), &[]);
        let rois = Tensor::from_f64(DType::F32, vec![2, 4], &[0.5, 0.5, 6.0, 5.0, 1.0, 0.0, 3.5, 7.0]);
        let bidx = Tensor::from_i64(vec![2], vec![0, 1]);
        for mode in ["avg", "max"] {
            check(one(Op::RoiAlign, &[(d, &[2, 3, 8, 8])], &[rois.clone(), bidx.clone()], vec![("output_height", Attr::Int(3)), ("output_width", Attr::Int(2)), ("mode", Attr::Str(mode.into()))], 1), &[]);
        }
    };
    attention_grouped_heads_with_a_mask: [F32, F16] => |d| {
        let mask = Tensor::from_f64(d, vec![4, 6], &(0..24).map(|i| if i % 5 == 0 { f64::NEG_INFINITY } else { 0.1 * (i % 3) as f64 }).collect::<Vec<_>>());
        check(one(Op::Attention, &[(d, &[2, 4, 4, 8]), (d, &[2, 2, 6, 8]), (d, &[2, 2, 6, 8])], &[mask], vec![("is_causal", Attr::Int(0))], 1), &[]);
    };
}
