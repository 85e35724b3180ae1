//! padded.rs: after `bounded.rs`, the readers of a data-dependent value work on its padded data
//! and length. Each case: the graph's shapes all static but the final Prefix, and the
//! interpreter's outputs the same before and after, for counts from none to all.
use std::collections::HashMap;
use xforge_ir::{interp, Attr, DType, Graph, GraphBuilder, Op, Tensor, ValueId, ValueType};
use xforge_passes::{bounded::bound_data_dependent, padded::pad_data_dependent};

fn any(dt: DType) -> ValueType {
    ValueType::unranked(dt)
}

/// `x` [8] f32 → the positions where x > 0 as a 1-D [?] tensor, fed to `tail`.
fn positive_positions(tail: impl FnOnce(&mut GraphBuilder, ValueId) -> ValueId) -> Graph {
    let mut b = GraphBuilder::new("padded", 17);
    let x = b.input("x", DType::F32, &[8]);
    let z = b.weight("z", Tensor::scalar_f32(0.0));
    let pos = b.node(Op::Greater, &[x, z], vec![], ValueType::known(DType::Bool, &[8]));
    let nz = b.node(Op::NonZero, &[pos], vec![], any(DType::I64));
    let axes = b.weight("axes", Tensor::from_i64(vec![1], vec![0]));
    let idx = b.node(Op::Squeeze, &[nz, axes], vec![], any(DType::I64));
    let y = tail(&mut b, idx);
    b.output(y);
    let mut g = b.finish();
    xforge_ir::infer::infer_graph(&mut g).unwrap();
    g
}

/// The pass run as the compiler runs it (bounded, folded, padded, inferred).
fn padded(g: &Graph) -> Result<Graph, xforge_passes::padded::NotPadded> {
    let mut h = g.clone();
    assert!(bound_data_dependent(&mut h) > 0);
    xforge_ir::infer::infer_graph(&mut h).unwrap();
    xforge_passes::canonicalize(&mut h).unwrap();
    pad_data_dependent(&mut h)?;
    xforge_ir::infer::infer_graph(&mut h).unwrap();
    xforge_ir::verify::verify(&h).unwrap();
    Ok(h)
}

fn same_after_padding(g: &Graph) {
    let h = padded(g).unwrap();
    for n in &h.nodes {
        for o in n.output_ids() {
            assert!(n.op == Op::Prefix || h.ty(o).static_shape().is_some(), "{} ({}) gives {}", n.name, n.op, h.ty(o));
        }
    }
    for positive in [0, 1, 3, 5, 8] {
        let x: Vec<f64> = (0..8).map(|i| if (i * 3) % 8 < positive { 1.0 + i as f64 } else { -1.0 }).collect();
        let feed = HashMap::from([("x".to_string(), Tensor::from_f64(DType::F32, vec![8], &x))]);
        let (a, b) = (interp::run(g, &feed).unwrap(), interp::run(&h, &feed).unwrap());
        for (p, q) in a.iter().zip(&b) {
            assert_eq!(p.shape(), q.shape(), "{positive} positive");
            assert_eq!(p.to_f64(), q.to_f64(), "{positive} positive");
        }
    }
}

#[test]
fn a_slice_of_the_padded_axis_shortens_the_length() {
    same_after_padding(&positive_positions(|b, idx| {
        let w = |b: &mut GraphBuilder, n: &str, v: i64| b.weight(n, Tensor::from_i64(vec![1], vec![v]));
        let (s, e, a) = (w(b, "s", 1), w(b, "e", 4), w(b, "a", 0));
        b.node(Op::Slice, &[idx, s, e, a], vec![], any(DType::I64))
    }));
}

#[test]
fn a_fill_sized_by_a_runtime_length_is_padded_and_reduced_over_its_valid_entries() {
    // ConstantOfShape(Shape(idx)) summed: the count, from a fill padded to the bound
    same_after_padding(&positive_positions(|b, idx| {
        let n = b.node(Op::Shape, &[idx], vec![], any(DType::I64));
        let one = Tensor::from_f64(DType::F32, vec![1], &[1.0]);
        let f = b.node(Op::ConstantOfShape, &[n], vec![("value", Attr::Tensor(one))], any(DType::F32));
        b.node(Op::ReduceSum, &[f], vec![("keepdims", Attr::Int(0))], any(DType::F32))
    }));
}

#[test]
fn elementwise_work_and_a_transpose_keep_the_padding() {
    same_after_padding(&positive_positions(|b, idx| {
        let f = b.node(Op::Cast, &[idx], vec![("to", Attr::Int(DType::F32.onnx_code() as i64))], any(DType::F32));
        let two = b.weight("two", Tensor::scalar_f32(2.0));
        let y = b.node(Op::Mul, &[f, two], vec![], any(DType::F32));
        let axes = b.weight("ax", Tensor::from_i64(vec![1], vec![0]));
        let col = b.node(Op::Unsqueeze, &[y, axes], vec![], any(DType::F32));
        b.node(Op::Transpose, &[col], vec![("perm", Attr::Ints(vec![1, 0]))], any(DType::F32))
    }));
}

#[test]
fn a_reader_with_no_padded_form_is_an_error_naming_it() {
    let g = positive_positions(|b, idx| {
        let axis = b.weight("axis", Tensor::from_i64(vec![], vec![0]));
        b.node(Op::CumSum, &[idx, axis], vec![], any(DType::I64))
    });
    let e = padded(&g).unwrap_err();
    assert_eq!(e.op, "CumSum");
    assert!(e.node.starts_with("cumsum"), "{e:?}");
    assert!(e.why.contains("not padded yet"), "{e:?}");
}

/// A [8, 3] weight whose rows are distinct.
fn table(b: &mut GraphBuilder) -> ValueId {
    b.weight(
        "table",
        Tensor::from_f64(DType::F32, vec![8, 3], &(0..24).map(|i| i as f64 * 0.5 - 3.0).collect::<Vec<_>>()),
    )
}

#[test]
fn a_nonzero_of_padded_data_sees_only_the_valid_entries() {
    // the padding of idx is 0 and 0 > -1 holds: the valid length must keep it out
    same_after_padding(&positive_positions(|b, idx| {
        let m = b.weight("m", Tensor::from_i64(vec![], vec![-1]));
        let gt = b.node(Op::Greater, &[idx, m], vec![], any(DType::Bool));
        b.node(Op::NonZero, &[gt], vec![], any(DType::I64))
    }));
}

#[test]
fn gathered_rows_through_a_matmul_and_a_merging_reshape_stay_a_prefix() {
    same_after_padding(&positive_positions(|b, idx| {
        let t = table(b);
        let rows = b.node(Op::Gather, &[t, idx], vec![("axis", Attr::Int(0))], any(DType::F32));
        let w = b.weight("w", Tensor::from_f64(DType::F32, vec![3, 2], &[1.0, -1.0, 0.5, 2.0, -0.25, 1.5]));
        let y = b.node(Op::MatMul, &[rows, w], vec![], any(DType::F32));
        let flat = b.weight("flat", Tensor::from_i64(vec![1], vec![-1]));
        b.node(Op::Reshape, &[y, flat], vec![], any(DType::F32))
    }));
}

#[test]
fn rows_scattered_back_by_padded_indices_leave_the_others_alone() {
    // torchvision's MultiScaleRoIAlign: zeros, then the rows of one level put back in place
    same_after_padding(&positive_positions(|b, idx| {
        let t = table(b);
        let rows = b.node(Op::Gather, &[t, idx], vec![("axis", Attr::Int(0))], any(DType::F32));
        let two = b.weight("two", Tensor::scalar_f32(2.0));
        let upd = b.node(Op::Mul, &[rows, two], vec![], any(DType::F32));
        let one = b.weight("one", Tensor::from_i64(vec![1], vec![1]));
        let col = b.node(Op::Unsqueeze, &[idx, one], vec![], any(DType::I64));
        let n = b.node(Op::Shape, &[idx], vec![], any(DType::I64));
        let three = b.weight("three", Tensor::from_i64(vec![1], vec![3]));
        let shape = b.node(Op::Concat, &[n, three], vec![("axis", Attr::Int(0))], any(DType::I64));
        let at = b.node(Op::Expand, &[col, shape], vec![], any(DType::I64));
        let zeros = b.weight("zeros", Tensor::from_f64(DType::F32, vec![8, 3], &[0.0; 24]));
        b.node(Op::ScatterElements, &[zeros, at, upd], vec![("axis", Attr::Int(0))], any(DType::F32))
    }));
}

#[test]
fn a_range_up_to_a_runtime_count_is_padded() {
    // torch.arange(len(x)): the values up to the bound, the count as its length
    same_after_padding(&positive_positions(|b, idx| {
        let n = b.node(Op::Shape, &[idx], vec![], any(DType::I64));
        let zero = b.weight("zero", Tensor::from_i64(vec![], vec![0]));
        let count = b.node(Op::Gather, &[n, zero], vec![("axis", Attr::Int(0))], any(DType::I64));
        let one = b.weight("one", Tensor::from_i64(vec![], vec![1]));
        let r = b.node(Op::Range, &[zero, count, one], vec![], any(DType::I64));
        b.node(Op::Add, &[r, idx], vec![], any(DType::I64))
    }));
}

#[test]
fn a_range_from_a_later_start_has_the_shorter_length() {
    same_after_padding(&positive_positions(|b, idx| {
        let n = b.node(Op::Shape, &[idx], vec![], any(DType::I64));
        let zero = b.weight("zero", Tensor::from_i64(vec![], vec![0]));
        let count = b.node(Op::Gather, &[n, zero], vec![("axis", Attr::Int(0))], any(DType::I64));
        let (two, one) =
            (b.weight("two", Tensor::from_i64(vec![], vec![2])), b.weight("one", Tensor::from_i64(vec![], vec![1])));
        b.node(Op::Range, &[two, count, one], vec![], any(DType::I64))
    }));
}
