//! Batch rows: which axis of each value holds the batch, and whether every node keeps the
//! batch's rows apart (row i of every output depends on row i of the inputs only). Where it
//! does, a batch smaller than a compiled bucket runs padded to it and the padding rows never
//! touch the real ones.
//!
//! Invariant: a value's batch axis has a size that is a multiple of the batch; row r owns, in
//! each block of the axes before it, one contiguous run of (size / batch) × (inner elements).
use std::collections::HashMap;
use xforge_ir::{Attr, Graph, Node, Op, OpKind, ValueId};

/// The batch axis of each graph output (None: it does not depend on the batch rows), given
/// the batch axis of each graph input in a graph whose shapes are all known, bound at `batch`
/// (which must exceed 1, so that the batch axis is visible in every shape). The error names the
/// first node that mixes rows or that the analysis does not know, or an output whose rows are
/// not one block per batch item.
pub fn batch_rows(g: &Graph, batch: usize, inputs: &[Option<usize>]) -> Result<Vec<Option<usize>>, String> {
    assert!(batch > 1, "batch rows are read at a batch above 1");
    // (axis, step) per value that holds batch rows
    let mut rows: HashMap<ValueId, (usize, usize)> = HashMap::new();
    for (&v, &a) in g.inputs.iter().zip(inputs) {
        if let Some(a) = a {
            let s = shape(g, v)?;
            if s.get(a) != Some(&batch) {
                return Err(format!("input '{}' has shape {s:?}: axis {a} is not the batch {batch}", g.name_of(v)));
            }
            rows.insert(v, (a, 1));
        }
    }
    for node in &g.nodes {
        let held: Vec<Option<(usize, usize)>> =
            node.inputs.iter().map(|i| i.and_then(|v| rows.get(&v).copied())).collect();
        let Some(step) = held.iter().flatten().map(|r| r.1).next() else { continue };
        let named = |why: String| format!("node '{}' ({}) {why}", node.name, node.op);
        let out = if matches!(node.op, Op::Reshape | Op::Flatten | Op::Squeeze | Op::Unsqueeze) {
            let (a, step) = held[0].ok_or_else(|| named("takes the batch rows as its shape".into()))?;
            let out_value = node.output_ids().next().ok_or_else(|| named("has no output".into()))?;
            let (input, out) = (shape(g, node.inputs[0].unwrap())?, shape(g, out_value)?);
            view_rows(&input, a, step, &out, batch)
                .ok_or_else(|| named(format!("regroups the batch rows ({input:?} → {out:?})")))?
        } else {
            if held.iter().flatten().any(|r| r.1 != step) {
                return Err(named("combines inputs whose batch rows are laid out differently".into()));
            }
            let axes: Vec<Option<usize>> = held.iter().map(|r| r.map(|r| r.0)).collect();
            (node_rows(g, node, &axes).map_err(named)?, step)
        };
        for o in node.output_ids() {
            let s = shape(g, o)?;
            if s.get(out.0).is_none_or(|&d| d % (batch * out.1) != 0) {
                return Err(named(format!("gives output shape {s:?} with no batch axis")));
            }
            rows.insert(o, out);
        }
    }
    let mut axes = vec![];
    for &o in &g.outputs {
        axes.push(match rows.get(&o) {
            None => None,
            // the runtime copies one block per batch item out of each block of the outer axes
            Some(&(a, step)) if shape(g, o)?[a] == batch * step => Some(a),
            Some(_) => return Err(format!("output '{}' interleaves the batch rows", g.name_of(o))),
        });
    }
    Ok(axes)
}

fn shape(g: &Graph, v: ValueId) -> Result<Vec<usize>, String> {
    g.ty(v).static_shape().ok_or_else(|| format!("value '{}' has no static shape", g.name_of(v)))
}

fn int_attr(n: &Node, k: &str, d: i64) -> i64 {
    match n.attr(k) {
        Some(Attr::Int(v)) => *v,
        _ => d,
    }
}

fn ints_attr(n: &Node, k: &str) -> Option<Vec<i64>> {
    match n.attr(k) {
        Some(Attr::Ints(v)) => Some(v.clone()),
        _ => None,
    }
}

/// A constant input's integers (None if absent or computed at run time).
fn const_input(g: &Graph, n: &Node, i: usize) -> Option<Vec<i64>> {
    g.weights.get(&n.inputs.get(i).copied().flatten()?).map(|t| t.to_i64())
}

fn norm(a: i64, rank: usize) -> usize {
    if a < 0 {
        (a + rank as i64).max(0) as usize
    } else {
        a as usize
    }
}

/// The batch axis of a node's outputs from its inputs' (`carried`); Err says how it mixes rows.
fn node_rows(g: &Graph, n: &Node, carried: &[Option<usize>]) -> Result<usize, String> {
    use Op::*;
    let ins: Vec<Vec<usize>> =
        n.inputs.iter().map(|i| i.map_or(Ok(vec![]), |v| shape(g, v))).collect::<Result<_, _>>()?;
    let out = shape(g, n.output_ids().next().ok_or("has no output")?)?;
    let rank = |i: usize| ins[i].len();
    // the only input that may carry rows is input 0 (data); the rest are parameters
    let data_only = || -> Result<usize, String> {
        match carried.iter().skip(1).position(Option::is_some) {
            Some(k) => Err(format!("takes the batch rows in input {} (a parameter)", k + 1)),
            None => carried[0].ok_or_else(|| "takes the batch rows as a parameter".to_string()),
        }
    };
    // every carrying input agrees on one output axis
    let agree = |axes: Vec<Option<usize>>| -> Result<usize, String> {
        let mut it = axes.into_iter().flatten();
        let a = it.next().ok_or("has no input with the batch rows")?;
        if it.any(|b| b != a) {
            return Err("combines inputs whose batch rows lie on different axes".into());
        }
        Ok(a)
    };
    // right-aligned broadcasting: the input's axis, unbroadcast, in the output
    let aligned = |i: usize, a: usize| -> Result<usize, String> {
        let oa = a + out.len() - rank(i);
        if ins[i][a] != out[oa] {
            return Err(format!("broadcasts input {i}'s batch axis {a} ({} → {})", ins[i][a], out[oa]));
        }
        Ok(oa)
    };
    let not_along = |a: usize, along: &[usize], what: &str| -> Result<usize, String> {
        if along.contains(&a) {
            return Err(format!("{what} along the batch axis {a}"));
        }
        Ok(a)
    };
    match n.op {
        Shape | Size => Err("reads the batch size as data".into()),
        _ if matches!(n.op.kind(), OpKind::Elementwise | OpKind::Broadcast) => {
            let axes = carried.iter().enumerate().map(|(i, c)| c.map(|a| aligned(i, a)).transpose());
            agree(axes.collect::<Result<_, _>>()?)
        }
        ReduceSum | ReduceMean | ReduceMax | ReduceMin | ReduceProd | ReduceL1 | ReduceL2 | ReduceLogSum
        | ReduceLogSumExp | ReduceSumSquare | ArgMax | ArgMin => {
            let a = data_only()?;
            let r = rank(0);
            let axes = if matches!(n.op, ArgMax | ArgMin) {
                Some(vec![int_attr(n, "axis", 0)])
            } else if g.opset >= if n.op == ReduceSum { 13 } else { 18 } {
                match n.inputs.get(1).copied().flatten() {
                    None => Some(vec![]),
                    Some(_) => const_input(g, n, 1),
                }
            } else {
                Some(ints_attr(n, "axes").unwrap_or_default())
            };
            let axes = axes.ok_or("reduces along axes computed at run time")?;
            let axes: Vec<usize> = if axes.is_empty() {
                if int_attr(n, "noop_with_empty_axes", 0) != 0 {
                    return Ok(a);
                }
                (0..r).collect()
            } else {
                axes.iter().map(|&x| norm(x, r)).collect()
            };
            not_along(a, &axes, "reduces")?;
            let keep = int_attr(n, "keepdims", 1) != 0;
            Ok(if keep { a } else { a - axes.iter().filter(|&&x| x < a).count() })
        }
        Softmax | LogSoftmax | Hardmax => {
            let a = data_only()?;
            let r = rank(0);
            if g.opset >= 13 {
                not_along(a, &[norm(int_attr(n, "axis", -1), r)], "normalizes")
            } else {
                // opset < 13 normalizes over every axis from `axis` on
                not_along(a, &(norm(int_attr(n, "axis", 1), r)..r).collect::<Vec<_>>(), "normalizes")
            }
        }
        LayerNormalization | RMSNormalization => {
            let a = data_only()?;
            let r = rank(0);
            not_along(a, &(norm(int_attr(n, "axis", -1), r)..r).collect::<Vec<_>>(), "normalizes")
        }
        LpNormalization => {
            let a = data_only()?;
            not_along(a, &[norm(int_attr(n, "axis", -1), rank(0))], "normalizes")
        }
        CumSum | CumProd => {
            let a = data_only()?;
            let ax = const_input(g, n, 1).and_then(|v| v.first().copied()).ok_or("scans along a run-time axis")?;
            not_along(a, &[norm(ax, rank(0))], "scans")
        }
        MeanVarianceNormalization => {
            let a = data_only()?;
            let axes: Vec<usize> =
                ints_attr(n, "axes").unwrap_or(vec![0, 2, 3]).iter().map(|&x| norm(x, rank(0))).collect();
            not_along(a, &axes, "normalizes")
        }
        // per-sample ops on (N, C, ...) or (N, ..., C) data: the batch is N
        Conv
        | ConvNhwc
        | ConvTranspose
        | MaxPool
        | MaxPoolNhwc
        | AveragePool
        | LpPool
        | GlobalAveragePool
        | GlobalMaxPool
        | InstanceNormalization
        | GroupNormalization
        | LRN
        | DepthToSpace
        | SpaceToDepth => match data_only()? {
            0 => Ok(0),
            a => Err(format!("runs per sample along axis 0, but the batch rows lie on axis {a}")),
        },
        // Mamba's scan, attention and the linear-attention recurrences take (batch, ...) operands
        SelectiveScan | Attention | LinearAttention => match agree(carried.to_vec())? {
            0 => Ok(0),
            a => Err(format!("takes the batch on axis 0, but the rows lie on axis {a}")),
        },
        MatMul => {
            let (r, mut axes) = (out.len(), vec![]);
            for (i, c) in carried.iter().enumerate().take(2) {
                let Some(a) = *c else { continue };
                let ri = rank(i);
                // A's last and B's second-to-last axes are contracted
                let contracted = if i == 0 { ri - 1 } else { ri.saturating_sub(2) };
                if ri < 2 || a == contracted {
                    return Err(format!("contracts input {i}'s batch axis {a}"));
                }
                axes.push(Some(match (i, a + 2 == ri, a + 1 == ri) {
                    (0, true, _) => r - 2,
                    (1, _, true) => r - 1,
                    _ => aligned(i, a)?,
                }));
            }
            agree(axes)
        }
        Gemm => {
            let (ta, tb) = (int_attr(n, "transA", 0) != 0, int_attr(n, "transB", 0) != 0);
            let axes = carried.iter().enumerate().map(|(i, c)| {
                let Some(a) = *c else { return Ok(None) };
                let ok = match i {
                    0 => (a == 0) != ta,
                    1 => (a == 1) != tb,
                    _ => return aligned(i, a).map(Some),
                };
                if !ok {
                    return Err(format!("contracts input {i}'s batch axis {a}"));
                }
                Ok(Some(i))
            });
            agree(axes.collect::<Result<_, String>>()?)
        }
        Transpose => {
            let a = data_only()?;
            let r = rank(0);
            let perm = ints_attr(n, "perm").unwrap_or_else(|| (0..r as i64).rev().collect());
            perm.iter().position(|&p| p as usize == a).ok_or_else(|| "has a permutation without the batch axis".into())
        }
        Expand => {
            let a = data_only()?;
            aligned(0, a)
        }
        Concat => {
            let ax = norm(int_attr(n, "axis", 0), out.len());
            not_along(agree(carried.to_vec())?, &[ax], "concatenates")
        }
        Split => not_along(data_only()?, &[norm(int_attr(n, "axis", 0), rank(0))], "splits"),
        TopK => not_along(data_only()?, &[norm(int_attr(n, "axis", -1), rank(0))], "selects"),
        GatherElements => not_along(agree(carried.to_vec())?, &[norm(int_attr(n, "axis", 0), rank(0))], "gathers"),
        Gather => {
            let ax = norm(int_attr(n, "axis", 0), rank(0));
            match (carried[0], carried.get(1).copied().flatten()) {
                (Some(a), None) if a < ax => Ok(a),
                (Some(a), None) if a > ax => Ok(a + rank(1) - 1),
                (None, Some(ai)) => Ok(ax + ai),
                _ => Err("gathers along the batch axis".into()),
            }
        }
        Slice => {
            let a = data_only()?;
            let r = rank(0);
            let axes: Vec<usize> = match n.inputs.get(3).copied().flatten() {
                Some(_) => {
                    const_input(g, n, 3).ok_or("slices along run-time axes")?.iter().map(|&x| norm(x, r)).collect()
                }
                None if g.opset >= 10 => (0..const_input(g, n, 1).map_or(r, |s| s.len())).collect(),
                None => ints_attr(n, "axes").map_or((0..r).collect(), |v| v.iter().map(|&x| norm(x, r)).collect()),
            };
            let Some(k) = axes.iter().position(|&x| x == a) else { return Ok(a) };
            let step =
                if g.opset >= 10 { const_input(g, n, 4).map_or(1, |s| s.get(k).copied().unwrap_or(1)) } else { 1 };
            // the whole axis, in order: the rows unchanged
            if step == 1 && ins[0][a] == out[a] {
                return Ok(a);
            }
            Err(format!("slices the batch axis {a}"))
        }
        Pad => {
            let a = data_only()?;
            let r = rank(0);
            let pads = if g.opset >= 11 { const_input(g, n, 1) } else { ints_attr(n, "pads") };
            let pads = pads.ok_or("pads by run-time amounts")?;
            let axes: Vec<usize> = match n.inputs.get(3).copied().flatten() {
                Some(_) => {
                    const_input(g, n, 3).ok_or("pads along run-time axes")?.iter().map(|&x| norm(x, r)).collect()
                }
                None => (0..r).collect(),
            };
            match axes.iter().position(|&x| x == a) {
                Some(k) if pads.get(k) != Some(&0) || pads.get(k + axes.len()) != Some(&0) => {
                    Err(format!("pads the batch axis {a}"))
                }
                _ => Ok(a),
            }
        }
        Tile => {
            let a = data_only()?;
            match const_input(g, n, 1) {
                Some(rep) if rep.get(a) == Some(&1) => Ok(a),
                _ => Err(format!("tiles the batch axis {a}")),
            }
        }
        Trilu => {
            let a = data_only()?;
            not_along(a, &[rank(0) - 2, rank(0) - 1], "masks")
        }
        Resize | Upsample => {
            let a = data_only()?;
            if ins[0][a] != out[a] {
                return Err(format!("resizes the batch axis {a}"));
            }
            Ok(a)
        }
        _ => Err("is not known to keep batch rows apart".into()),
    }
}

/// Where a reshape puts batch rows held on `input`'s axis `a` with `step`: the flat element e
/// belongs to row (e / S) % batch with S = step × (elements after `a`). The output axis k with
/// I elements after it holds them when S is a multiple of I and out[k] × I a multiple of
/// S × batch; its step is S / I. (One axis at most qualifies, as the batch exceeds 1.)
pub fn view_rows(input: &[usize], a: usize, step: usize, out: &[usize], batch: usize) -> Option<(usize, usize)> {
    let s = step * input[a + 1..].iter().product::<usize>();
    (0..out.len()).find_map(|k| {
        let inner: usize = out[k + 1..].iter().product();
        (inner > 0 && s.is_multiple_of(inner) && (out[k] * inner).is_multiple_of(s * batch)).then(|| (k, s / inner))
    })
}
