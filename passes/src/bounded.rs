//! Data-dependent output shapes as static upper bounds with a count: NonZero, NonMaxSuppression
//! and Compress (with a runtime condition) become `Bounded` (the result padded to a bound known at
//! compile time, and its valid length as a value on the device) followed by `Prefix` (the valid
//! entries). Everything before `Prefix` has static shapes, so it compiles and runs inside the
//! plan's CUDA graph; a graph output that is a `Prefix` is returned at its valid length by the
//! runtime (the artifact's output binding names where the length lives).
use xforge_ir::{Attr, DType, Graph, Node, Op, ValueType};

/// (axis, bound) of a data-dependent node's padded result, where its operands' shapes (and
/// NonMaxSuppression's per-class limit) are known.
fn padded(g: &Graph, n: &Node) -> Option<(usize, usize)> {
    let shape = |k: usize| n.inputs.get(k).copied().flatten().and_then(|v| g.ty(v).static_shape());
    match n.op {
        Op::NonZero => Some((1, shape(0)?.iter().product())),
        Op::Compress => {
            let x = shape(0)?;
            let cond: usize = shape(1)?.iter().product();
            match n.attr("axis") {
                Some(Attr::Int(a)) => {
                    let a = if *a < 0 { *a + x.len() as i64 } else { *a } as usize;
                    Some((a, (*x.get(a)?).min(cond)))
                }
                _ => Some((0, x.iter().product::<usize>().min(cond))),
            }
        }
        Op::NonMaxSuppression => {
            let (b, s) = (shape(0)?, shape(1)?);
            let (batches, classes, boxes) = (*b.first()?, *s.get(1)?, *b.get(1)?);
            let per_class = match n.inputs.get(2).copied().flatten() {
                None => 0,
                Some(v) => match g.weights.get(&v) {
                    Some(t) => (t.to_i64().first().copied().unwrap_or(0).max(0) as usize).min(boxes),
                    None => boxes,
                },
            };
            Some((0, batches * classes * per_class))
        }
        _ => None,
    }
}

/// Rewrites every NonZero, NonMaxSuppression and Compress whose result has no static shape;
/// returns how many.
pub fn bound_data_dependent(g: &mut Graph) -> usize {
    let mut done = 0;
    let mut i = 0;
    while i < g.nodes.len() {
        let n = g.nodes[i].clone();
        // whatever shape a file declares for them, these results depend on the data (a Compress
        // on a constant condition folds or keeps a static shape)
        let dynamic = match n.op {
            Op::NonZero | Op::NonMaxSuppression => true,
            Op::Compress => n.inputs.get(1).copied().flatten().is_some_and(|c| !g.weights.contains_key(&c)),
            _ => false,
        };
        let Some((axis, bound)) = padded(g, &n).filter(|_| dynamic) else {
            i += 1;
            continue;
        };
        let out = n.outputs[0].expect("checked");
        let dt = g.ty(out).dtype;
        let p = g.add_value(format!("{}/padded", n.name), ValueType::unranked(dt));
        let len = g.add_value(format!("{}/length", n.name), ValueType::known(DType::I64, &[]));
        g.undeclared.insert(p);
        let mut attrs = n.attrs.clone();
        attrs.insert("bounded_op".into(), Attr::Str(n.op.name().into()));
        attrs.insert("bounded_axis".into(), Attr::Int(axis as i64));
        attrs.insert("bound".into(), Attr::Int(bound as i64));
        let bounded = Node {
            name: n.name.clone(),
            op: Op::Bounded,
            inputs: n.inputs.clone(),
            outputs: vec![Some(p), Some(len)],
            attrs,
        };
        let mut pa: xforge_ir::Attrs = Default::default();
        pa.insert("axis".into(), Attr::Int(axis as i64));
        let prefix = Node {
            name: format!("{}/prefix", n.name),
            op: Op::Prefix,
            inputs: vec![Some(p), Some(len)],
            outputs: vec![Some(out)],
            attrs: pa,
        };
        g.nodes.splice(i..=i, [bounded, prefix]);
        done += 1;
        i += 2;
    }
    done
}
