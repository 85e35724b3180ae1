//! Small graphs that tests in several crates share.
use xforge_ir::{Attr, DType, Graph, GraphBuilder, Op, Tensor, ValueType};

fn any(dt: DType) -> ValueType {
    ValueType::unranked(dt)
}

fn ints(b: &mut GraphBuilder, name: &str, v: &[i64]) -> xforge_ir::ValueId {
    b.weight(name, Tensor::from_i64(vec![v.len()], v.to_vec()))
}

/// A detector's post-processing, the shape of torchvision's SSD tail: for each of two classes
/// the boxes whose score passes a threshold (NonZero), the best `min(count, 5)` of them (TopK
/// with K from a Shape), concatenated; the highest score over them (a reduction over a
/// data-dependent length); and NonMaxSuppression over the kept boxes, whose survivors are
/// gathered. Inputs: `scores` [2, 12], `boxes` [12, 4]; outputs: the surviving boxes [?, 4], the
/// kept scores [?] and their maximum [].
pub fn detection_tail() -> Graph {
    let mut b = GraphBuilder::new("detection_tail", 17);
    let scores = b.input("scores", DType::F32, &[2, 12]);
    let boxes = b.input("boxes", DType::F32, &[12, 4]);
    let th = b.weight("threshold", Tensor::scalar_f32(0.3));
    let five = ints(&mut b, "five", &[5]);
    let zero = ints(&mut b, "zero", &[0]);
    let mut kept_scores = vec![];
    let mut kept_boxes = vec![];
    for c in 0..2 {
        let ci = b.weight(&format!("class{c}"), Tensor::from_i64(vec![], vec![c]));
        let row = b.node(Op::Gather, &[scores, ci], vec![("axis", Attr::Int(0))], ValueType::known(DType::F32, &[12]));
        let pass = b.node(Op::Greater, &[row, th], vec![], ValueType::known(DType::Bool, &[12]));
        let nz = b.node(Op::NonZero, &[pass], vec![], any(DType::I64));
        let idx = b.node(Op::Squeeze, &[nz, zero], vec![], any(DType::I64));
        let s = b.node(Op::Gather, &[row, idx], vec![("axis", Attr::Int(0))], any(DType::F32));
        let n = b.node(Op::Shape, &[s], vec![], any(DType::I64));
        let both = b.node(Op::Concat, &[n, five], vec![("axis", Attr::Int(0))], any(DType::I64));
        let k = b.node(Op::ReduceMin, &[both], vec![("keepdims", Attr::Int(1))], any(DType::I64));
        let top = b.node_multi(
            Op::TopK,
            &[Some(s), Some(k)],
            vec![("axis", Attr::Int(0))],
            vec![any(DType::F32), any(DType::I64)],
        );
        let at = b.node(Op::Gather, &[idx, top[1]], vec![("axis", Attr::Int(0))], any(DType::I64));
        let bx = b.node(Op::Gather, &[boxes, at], vec![("axis", Attr::Int(0))], any(DType::F32));
        kept_scores.push(top[0]);
        kept_boxes.push(bx);
    }
    let all_s = b.node(Op::Concat, &kept_scores, vec![("axis", Attr::Int(0))], any(DType::F32));
    let all_b = b.node(Op::Concat, &kept_boxes, vec![("axis", Attr::Int(0))], any(DType::F32));
    let best = b.node(Op::ReduceMax, &[all_s], vec![("keepdims", Attr::Int(0))], any(DType::F32));
    let b3 = b.node(Op::Unsqueeze, &[all_b, zero], vec![], any(DType::F32));
    let s2 = b.node(Op::Unsqueeze, &[all_s, zero], vec![], any(DType::F32));
    let s3 = b.node(Op::Unsqueeze, &[s2, zero], vec![], any(DType::F32));
    let per_class = ints(&mut b, "per_class", &[3]);
    let iou = b.weight("iou", Tensor::from_f64(DType::F32, vec![1], &[0.5]));
    let sel = b.node(Op::NonMaxSuppression, &[b3, s3, per_class, iou], vec![], any(DType::I64));
    let two = b.weight("col", Tensor::from_i64(vec![], vec![2]));
    let keep = b.node(Op::Gather, &[sel, two], vec![("axis", Attr::Int(1))], any(DType::I64));
    let out = b.node(Op::Gather, &[all_b, keep], vec![("axis", Attr::Int(0))], any(DType::F32));
    b.output(out);
    b.output(all_s);
    b.output(best);
    let mut g = b.finish();
    xforge_ir::infer::infer_graph(&mut g).expect("the detection tail infers");
    g
}

/// Inputs for `detection_tail`: scores where `passing` of each class's 12 boxes are over the
/// threshold (in a mixed order), and boxes that overlap in pairs.
pub fn detection_inputs(passing: usize) -> std::collections::HashMap<String, Tensor> {
    let scores: Vec<f64> = (0..24)
        .map(|i| {
            let (c, j) = (i / 12, (i * 7 + 3) % 12);
            if j < passing {
                0.9 - 0.05 * j as f64 + 0.01 * c as f64
            } else {
                0.1
            }
        })
        .collect();
    let boxes: Vec<f64> = (0..12)
        .flat_map(|i| {
            let (x, y) = ((i / 2) as f64 * 10.0 + (i % 2) as f64, (i % 3) as f64 * 4.0);
            [y, x, y + 8.0, x + 8.0]
        })
        .collect();
    std::collections::HashMap::from([
        ("scores".to_string(), Tensor::from_f64(DType::F32, vec![2, 12], &scores)),
        ("boxes".to_string(), Tensor::from_f64(DType::F32, vec![12, 4], &boxes)),
    ])
}
