//! batch_rows: graphs whose nodes keep batch rows apart get their outputs' batch axes, and the
//! interpreter agrees (new values in the padding rows leave the real rows' outputs bit for bit);
//! graphs that mix rows are refused naming the node, and the interpreter shows the mixing.
mod common;
use common::random_inputs;
use xforge_ir::{infer::infer_graph, interp, Attr, DType, Graph, GraphBuilder, Op, Tensor, ValueType};
use xforge_passes::batch_rows::{batch_rows, view_rows};

const BATCH: usize = 4;
/// Rows kept; the rest are padding.
const REAL: usize = 2;

fn vals(n: usize, seed: f32) -> Vec<f32> {
    (0..n).map(|i| (i as f32 * 0.37 + seed).sin()).collect()
}

fn u() -> ValueType {
    ValueType::unranked(DType::F32)
}

fn finish(mut b: GraphBuilder, outs: &[xforge_ir::ValueId]) -> Graph {
    for &o in outs {
        b.output(o);
    }
    let mut g = b.finish();
    infer_graph(&mut g).unwrap();
    g
}

fn ints(v: &[i64]) -> Attr {
    Attr::Ints(v.to_vec())
}

/// Block `o`'s rows `r` of a tensor whose batch axis is `a`: flat element ranges.
fn rows(shape: &[usize], a: usize, keep: impl Fn(usize) -> bool) -> Vec<usize> {
    let outer: usize = shape[..a].iter().product();
    let per_row = shape[a..].iter().product::<usize>() / BATCH;
    let mut idx = vec![];
    for o in 0..outer {
        for r in (0..BATCH).filter(|&r| keep(r)) {
            let start = o * BATCH * per_row + r * per_row;
            idx.extend(start..start + per_row);
        }
    }
    idx
}

/// Whether the outputs' real rows stay bit for bit when the inputs' padding rows change.
fn real_rows_kept(g: &Graph, ins: &[Option<usize>], outs: &[Option<usize>]) -> bool {
    let feed = random_inputs(g, 1);
    let other = random_inputs(g, 2);
    let mut padded = feed.clone();
    for (&v, a) in g.inputs.iter().zip(ins) {
        let Some(a) = *a else { continue };
        let name = g.name_of(v);
        let (x, y) = (feed[name].to_f64(), other[name].to_f64());
        let mut z = x.clone();
        for i in rows(feed[name].shape(), a, |r| r >= REAL) {
            z[i] = y[i];
        }
        padded.insert(name.to_string(), Tensor::from_f64(feed[name].dtype(), feed[name].shape().to_vec(), &z));
    }
    let (p, q) = (interp::run(g, &feed).unwrap(), interp::run(g, &padded).unwrap());
    p.iter().zip(&q).zip(outs).all(|((x, y), a)| {
        let (x, y) = (x.to_f64(), y.to_f64());
        match a {
            Some(a) => rows(p[0].shape(), *a, |r| r < REAL).iter().all(|&i| x[i].to_bits() == y[i].to_bits()),
            None => x == y,
        }
    })
}

/// x [B, 3, 8, 8] → Conv → Relu → GlobalAveragePool → Flatten → Gemm → Softmax(-1): a classifier.
fn classifier() -> Graph {
    let mut b = GraphBuilder::new("classifier", 17);
    let x = b.input("x", DType::F32, &[BATCH, 3, 8, 8]);
    let w = b.weight("w", Tensor::from_f32(vec![4, 3, 3, 3], vals(108, 0.1)));
    let c = b.node(Op::Conv, &[x, w], vec![("pads", ints(&[1, 1, 1, 1]))], u());
    let r = b.node(Op::Relu, &[c], vec![], u());
    let p = b.node(Op::GlobalAveragePool, &[r], vec![], u());
    let f = b.node(Op::Flatten, &[p], vec![], u());
    let fc = b.weight("fc", Tensor::from_f32(vec![5, 4], vals(20, 0.3)));
    let bias = b.weight("fb", Tensor::from_f32(vec![5], vals(5, 0.5)));
    let y = b.node(Op::Gemm, &[f, fc, bias], vec![("transB", Attr::Int(1))], u());
    let s = b.node(Op::Softmax, &[y], vec![("axis", Attr::Int(-1))], u());
    finish(b, &[s])
}

/// x [S=3, B, 8] (sequence first) → Reshape [3, B·2, 4] → Transpose(1,0,2) → MatMul with
/// its own transpose (per-head scores) → Softmax(-1) → ReduceSum over the head's rows.
fn sequence_first() -> Graph {
    let mut b = GraphBuilder::new("seq_first", 17);
    let x = b.input("x", DType::F32, &[3, BATCH, 8]);
    let shape = b.weight("s", Tensor::from_i64(vec![3], vec![3, (BATCH * 2) as i64, 4]));
    let h = b.node(Op::Reshape, &[x, shape], vec![], u());
    let t = b.node(Op::Transpose, &[h], vec![("perm", ints(&[1, 0, 2]))], u());
    let kt = b.node(Op::Transpose, &[t], vec![("perm", ints(&[0, 2, 1]))], u());
    let s = b.node(Op::MatMul, &[t, kt], vec![], u());
    let p = b.node(Op::Softmax, &[s], vec![("axis", Attr::Int(-1))], u());
    let axes = b.weight("axes", Tensor::from_i64(vec![1], vec![2]));
    let r = b.node(Op::ReduceSum, &[p, axes], vec![("keepdims", Attr::Int(0))], u());
    finish(b, &[r, t])
}

/// x [S=3, B, 8] → [S·B, 8] (rows interleaved: index s·B + b) → MatMul → back to [3, B, 8]:
/// sequence-first attention's output projection.
fn interleaved() -> Graph {
    let mut b = GraphBuilder::new("interleaved", 17);
    let x = b.input("x", DType::F32, &[3, BATCH, 8]);
    let flat = b.weight("flat", Tensor::from_i64(vec![2], vec![(3 * BATCH) as i64, 8]));
    let back = b.weight("back", Tensor::from_i64(vec![3], vec![3, BATCH as i64, 8]));
    let w = b.weight("w", Tensor::from_f32(vec![8, 8], vals(64, 0.6)));
    let f = b.node(Op::Reshape, &[x, flat], vec![], u());
    let m = b.node(Op::MatMul, &[f, w], vec![], u());
    let y = b.node(Op::Reshape, &[m, back], vec![], u());
    finish(b, &[y])
}

/// Embedding ids [B, 5] → Gather from a table → LayerNormalization → Concat with a constant
/// row expanded to the batch (a class token), along the sequence.
fn embedding() -> Graph {
    let mut b = GraphBuilder::new("embedding", 17);
    let ids = b.input("ids", DType::I64, &[BATCH, 5]);
    let table = b.weight("table", Tensor::from_f32(vec![4, 6], vals(24, 0.2)));
    let e = b.node(Op::Gather, &[table, ids], vec![], u());
    let scale = b.weight("g", Tensor::from_f32(vec![6], vals(6, 0.9)));
    let n = b.node(Op::LayerNormalization, &[e, scale], vec![("axis", Attr::Int(-1))], u());
    let cls = b.weight("cls", Tensor::from_f32(vec![1, 1, 6], vals(6, 0.4)));
    let to = b.weight("to", Tensor::from_i64(vec![3], vec![BATCH as i64, 1, 6]));
    let c = b.node(Op::Expand, &[cls, to], vec![], u());
    let cat = b.node(Op::Concat, &[c, n], vec![("axis", Attr::Int(1))], u());
    finish(b, &[cat])
}

#[test]
fn row_keeping_graphs_get_their_output_axes_and_the_interpreter_agrees() {
    for (name, g, ins, want) in [
        ("classifier", classifier(), vec![Some(0)], vec![Some(0)]),
        ("sequence first", sequence_first(), vec![Some(1)], vec![Some(0), Some(0)]),
        ("embedding", embedding(), vec![Some(0)], vec![Some(0)]),
        ("interleaved", interleaved(), vec![Some(1)], vec![Some(1)]),
    ] {
        let got = batch_rows(&g, BATCH, &ins).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(got, want, "{name}");
        assert!(real_rows_kept(&g, &ins, &got), "{name}: padding rows changed real rows");
    }
}

/// x [B, 6] → one op that mixes rows → y.
fn mixer(op: Op, extra: Option<Tensor>, attrs: Vec<(&str, Attr)>) -> Graph {
    let mut b = GraphBuilder::new("mixer", 17);
    let x = b.input("x", DType::F32, &[BATCH, 6]);
    let mut ins = vec![x];
    if let Some(t) = extra {
        ins.push(b.weight("p", t));
    }
    let y = b.node(op, &ins, attrs, u());
    finish(b, &[y])
}

#[test]
fn row_mixing_graphs_are_refused_naming_the_node() {
    let i64s = |v: &[i64]| Some(Tensor::from_i64(vec![v.len()], v.to_vec()));
    let cases = [
        ("Softmax", mixer(Op::Softmax, None, vec![("axis", Attr::Int(0))]), "normalizes along the batch axis"),
        ("ReduceMean", mixer(Op::ReduceMean, None, vec![("axes", ints(&[0]))]), "reduces along the batch axis"),
        // reversed: a forward scan would leave the leading (real) rows alone, and is refused anyway
        (
            "CumSum",
            mixer(Op::CumSum, Some(Tensor::scalar_i64(0)), vec![("reverse", Attr::Int(1))]),
            "scans along the batch axis",
        ),
        ("Reshape", mixer(Op::Reshape, i64s(&[6, BATCH as i64]), vec![]), "regroups the batch rows"),
    ];
    for (name, g, needle) in cases {
        let e = batch_rows(&g, BATCH, &[Some(0)]).expect_err(name);
        assert!(e.contains(&format!("({})", g.nodes[0].op)) && e.contains(needle), "{name}: {e}");
        // and the interpreter shows the mixing (the whole output compared where it has no
        // batch axis left)
        let axis = if matches!(name, "Reshape" | "ReduceMean") { None } else { Some(0) };
        assert!(!real_rows_kept(&g, &[Some(0)], &[axis]), "{name}: expected the rows to mix");
    }
    // x[::-1] keeps the shape but reverses the rows
    let mut b = GraphBuilder::new("reverse", 17);
    let x = b.input("x", DType::F32, &[BATCH, 6]);
    let t = |b: &mut GraphBuilder, n: &str, v: i64| b.weight(n, Tensor::from_i64(vec![1], vec![v]));
    let (s, e, a, st) = (t(&mut b, "s", -1), t(&mut b, "e", i64::MIN), t(&mut b, "a", 0), t(&mut b, "st", -1));
    let y = b.node(Op::Slice, &[x, s, e, a, st], vec![], u());
    let g = finish(b, &[y]);
    let e = batch_rows(&g, BATCH, &[Some(0)]).unwrap_err();
    assert!(e.contains("(Slice) slices the batch axis 0"), "{e}");
    assert!(!real_rows_kept(&g, &[Some(0)], &[Some(0)]));
    // an op the analysis does not know
    let mut b = GraphBuilder::new("einsum", 17);
    let x = b.input("x", DType::F32, &[BATCH, 6]);
    let n = b.node(Op::Einsum, &[x], vec![("equation", Attr::Str("ij->ji".into()))], u());
    let g = finish(b, &[n]);
    let e = batch_rows(&g, BATCH, &[Some(0)]).unwrap_err();
    assert!(e.contains("(Einsum) is not known to keep batch rows apart"), "{e}");
}

#[test]
fn reshapes_follow_the_rows_through_the_layout() {
    // [B, 197, 768] ↔ [B·197, 768]: one block per row, then 197 entries per row
    assert_eq!(view_rows(&[4, 197, 768], 0, 1, &[4 * 197, 768], 4), Some((0, 197)));
    assert_eq!(view_rows(&[4 * 197, 768], 0, 197, &[4, 197, 768], 4), Some((0, 1)));
    assert_eq!(view_rows(&[4, 3, 8], 0, 1, &[1, 4, 24], 4), Some((1, 1)));
    // sequence first: [S, B, H·d] → [S, B·H, d] and [S, B, H, d] → [S·B, H·d] (the rows interleave)
    assert_eq!(view_rows(&[3, 4, 8], 1, 1, &[3, 8, 4], 4), Some((1, 2)));
    assert_eq!(view_rows(&[197, 4, 12, 64], 1, 1, &[197 * 4, 768], 4), Some((0, 1)));
    // a reshape that cuts through the rows: [B, 6] → [6, B] puts parts of two rows in one index
    assert_eq!(view_rows(&[4, 6], 0, 1, &[6, 4], 4), None);
    assert_eq!(view_rows(&[4, 6], 0, 1, &[3, 8], 4), None);
}
