//! Depthwise convolution in channels-last layout (`ConvNhwc`, one filter per channel) or a
//! channels-last max pool (`MaxPoolNhwc`: the same windows, combined by max), then the group's
//! elementwise epilogue. Each thread computes `cols` neighbouring output columns of
//! `vec` neighbouring channels (pairs of halves load and store as one vector); neighbouring
//! threads take neighbouring channels, so loads stay coalesced; an input column that several of
//! a thread's windows share is loaded once. (The NCHW form is the pooling template's.)
use crate::body::{compute_type, storage_type, Body};
use crate::elementwise::{compute, coords, store_outputs};
use crate::kernel::{blocks, finish, input_params, output_params, Kernel, KernelError};
use crate::knobs::{BLOCK, POOL_OUTPUTS};
use crate::pooling::{store_run, Taps};
use std::collections::HashMap;
use xforge_ir::group::FusionGroup;
use xforge_ir::tensor::numel;
use xforge_ir::window::node_depthwise_window;
use xforge_ir::{Attr, Graph, Node, Op};

fn pair(n: &Node, k: &str, d: i64) -> [i64; 2] {
    match n.attr(k) {
        Some(Attr::Ints(v)) if v.len() == 2 => [v[0], v[1]],
        _ => [d, d],
    }
}

pub fn depthwise_nhwc(g: &Graph, grp: &FusionGroup, gi: usize) -> Result<Kernel, KernelError> {
    let unsupported = |why: String| KernelError::Unsupported { group: gi, why };
    let nodes: Vec<&Node> = grp.nodes.iter().map(|&n| &g.nodes[n]).collect();
    let conv = nodes[0];
    // a max pool: no weights, -inf where a window leaves the image
    let is_max = conv.op == Op::MaxPoolNhwc;
    let [kh, kw] = if is_max {
        match conv.attr("kernel_shape") {
            Some(Attr::Ints(k)) if k.len() == 2 && k.iter().all(|&d| d > 0) => [k[0] as usize, k[1] as usize],
            _ => return Err(unsupported("a max pool needs a 2-D kernel_shape".into())),
        }
    } else {
        node_depthwise_window(g, conv).ok_or_else(|| unsupported("not a depthwise convolution".into()))?
    };
    if kh * kw > xforge_ir::window::MAX_WINDOW {
        return Err(unsupported(format!("window {kh}x{kw} is not unrolled")));
    }
    if matches!(conv.attr("auto_pad"), Some(Attr::Str(s)) if s.starts_with("SAME")) {
        return Err(unsupported("auto_pad SAME_* is not generated yet".into()));
    }
    let x = conv.inputs[0].ok_or_else(|| unsupported("no input".into()))?;
    let y = conv.outputs[0].ok_or_else(|| unsupported("no output".into()))?;
    let xs = g.ty(x).static_shape().ok_or_else(|| unsupported("shapes are not static".into()))?;
    let ys = g.ty(y).static_shape().ok_or_else(|| unsupported("shapes are not static".into()))?;
    let (s, d) = (pair(conv, "strides", 1), pair(conv, "dilations", 1));
    let p = match conv.attr("pads") {
        Some(Attr::Ints(v)) if v.len() == 4 => [v[0], v[1]],
        _ => [0, 0],
    };
    let (mut params, scalars) = input_params(g, &grp.inputs, &[], true).map_err(unsupported)?;
    params.extend(output_params(g, &grp.outputs, numel(&ys), "the convolution's output size").map_err(unsupported)?);
    let xp = params
        .iter()
        .position(|q| q.value == x && !q.output)
        .ok_or_else(|| unsupported("the convolved value is computed in the group".into()))?;
    let mut taps = if is_max { None } else { Some(Taps::of(g, conv, &params, &scalars).map_err(unsupported)?) };
    // a constant weight is read tap-major: a warp's threads (neighbouring channels) read one
    // tap's neighbouring weights
    let table = taps.as_mut().map(|t| t.tap_major(g, conv, xs[3])).unwrap_or_default();
    let dt = g.ty(x).dtype;
    let c = compute_type(dt);
    let st = storage_type(dt).unwrap();
    let ch = xs[3];
    // halves of an even number of channels move as aligned pairs
    let vec = if st != c && ch % 2 == 0 { 2 } else { 1 };
    let cols = [4, 2, 1].into_iter().find(|q| ys[2] % q == 0 && *q <= POOL_OUTPUTS).unwrap_or(1);
    let groups = [ys[0], ys[1], ys[2] / cols, ch / vec];
    let mut b = Body::default();
    let (start, step) = b.grid_stride();
    let total = b.index(numel(&groups));
    b.stmt(format!("scf.for %i = {start} to {total} step {step} {{"));
    let co = coords(&mut b, "%i", &groups);
    let vec_v = b.index(vec);
    let c0 = b.emit(format!("arith.muli {}, {vec_v} : index", co[3]));
    let chans: Vec<String> = (0..vec)
        .map(|e| {
            let ev = b.index(e);
            b.emit(format!("arith.addi {c0}, {ev} : index"))
        })
        .collect();
    let cols_v = b.index(cols);
    let ow0 = b.emit(format!("arith.muli {}, {cols_v} : index", co[2]));
    let (sh, sw, pbh, pbw) =
        (b.index(s[0] as usize), b.index(s[1] as usize), b.index(p[0] as usize), b.index(p[1] as usize));
    let h0 = b.emit(format!("arith.muli {}, {sh} : index", co[1]));
    let h0 = b.emit(format!("arith.subi {h0}, {pbh} : index"));
    let w0 = b.emit(format!("arith.muli {ow0}, {sw} : index"));
    let w0 = b.emit(format!("arith.subi {w0}, {pbw} : index"));
    let (zero_i, hi, wi, cv) = (b.index(0), b.index(xs[1]), b.index(xs[2]), b.index(ch));
    let nh = b.index(xs[1]);
    let row0 = b.emit(format!("arith.muli {}, {nh} : index", co[0]));
    // every weight of the thread's channels, then the input columns its windows cover
    let wts: Vec<Vec<String>> = match taps.as_mut() {
        Some(taps) => chans.iter().map(|chn| (0..kh * kw).map(|t| taps.weight(&mut b, chn, t, c)).collect()).collect(),
        None => vec![],
    };
    // the sum's zero, or the max's -inf (also what a tap outside the image reads)
    let zero = b.float(if is_max { f64::NEG_INFINITY } else { 0.0 }, c);
    let mut acc: Vec<Vec<String>> = vec![vec![zero.clone(); vec]; cols];
    let span = (cols - 1) * s[1] as usize + (kw - 1) * d[1] as usize + 1;
    for r in 0..kh {
        let dr = b.index(r * d[0] as usize);
        let h = b.emit(format!("arith.addi {h0}, {dr} : index"));
        let c1 = b.emit(format!("arith.cmpi sge, {h}, {zero_i} : index"));
        let c2 = b.emit(format!("arith.cmpi slt, {h}, {hi} : index"));
        let inh = b.emit(format!("arith.andi {c1}, {c2} : i1"));
        let row = b.emit(format!("arith.addi {row0}, {h} : index"));
        let row = b.emit(format!("arith.muli {row}, {wi} : index"));
        for col in 0..span {
            // the (output column, tap) pairs that read this input column
            let users: Vec<(usize, usize)> = (0..cols)
                .flat_map(|l| (0..kw).map(move |t| (l, t)))
                .filter(|&(l, t)| l * s[1] as usize + t * d[1] as usize == col)
                .collect();
            if users.is_empty() {
                continue;
            }
            let cv_ = b.index(col);
            let w = b.emit(format!("arith.addi {w0}, {cv_} : index"));
            let c3 = b.emit(format!("arith.cmpi sge, {w}, {zero_i} : index"));
            let c4 = b.emit(format!("arith.cmpi slt, {w}, {wi} : index"));
            let inw = b.emit(format!("arith.andi {c3}, {c4} : i1"));
            let inb = b.emit(format!("arith.andi {inh}, {inw} : i1"));
            let at = b.emit(format!("arith.addi {row}, {w} : index"));
            let at = b.emit(format!("arith.muli {at}, {cv} : index"));
            let at = b.emit(format!("arith.addi {at}, {c0} : index"));
            let vals: Vec<String> = if vec > 1 {
                let vt = format!("vector<{vec}x{c}>");
                let pv = b.emit(format!("scf.if {inb} -> ({vt}) {{"));
                let raw = b.emit(format!(
                    "vector.load %arg{xp}[{at}] {{alignment = {}}} : memref<{}x{st}>, vector<{vec}x{st}>",
                    vec * dt.size(),
                    numel(&xs)
                ));
                let val = b.emit(format!("arith.extf {raw} : vector<{vec}x{st}> to {vt}"));
                b.stmt(format!("scf.yield {val} : {vt}"));
                b.stmt("} else {");
                let zv = b.emit(format!("vector.broadcast {zero} : {c} to {vt}"));
                b.stmt(format!("scf.yield {zv} : {vt}"));
                b.stmt("}");
                (0..vec).map(|e| b.emit(format!("vector.extract {pv}[{e}] : {c} from {vt}"))).collect()
            } else {
                let v = b.emit(format!("scf.if {inb} -> ({c}) {{"));
                let raw = b.emit(format!("memref.load %arg{xp}[{at}] : memref<{}x{st}>", numel(&xs)));
                let val = if st != c { b.emit(format!("arith.extf {raw} : {st} to {c}")) } else { raw };
                b.stmt(format!("scf.yield {val} : {c}"));
                b.stmt("} else {");
                b.stmt(format!("scf.yield {zero} : {c}"));
                b.stmt("}");
                vec![v]
            };
            for (l, t) in users {
                for e in 0..vec {
                    acc[l][e] = if is_max {
                        b.emit(format!("arith.maximumf {}, {} : {c}", vals[e], acc[l][e]))
                    } else {
                        let wv = &wts[e][r * kw + t];
                        b.emit(format!("math.fma {}, {wv}, {} : {c}", vals[e], acc[l][e]))
                    };
                }
            }
        }
    }
    let bias: Vec<Option<String>> = chans.iter().map(|chn| taps.as_mut().map(|t| t.bias(&mut b, chn, c))).collect();
    let (ow_v, oh_v) = (b.index(ys[2]), b.index(ys[1]));
    let orow = b.emit(format!("arith.muli {}, {oh_v} : index", co[0]));
    let orow = b.emit(format!("arith.addi {orow}, {} : index", co[1]));
    let orow = b.emit(format!("arith.muli {orow}, {ow_v} : index"));
    let orow = b.emit(format!("arith.addi {orow}, {ow0} : index"));
    for (l, accs) in acc.iter().enumerate() {
        let lv = b.index(l);
        let at = b.emit(format!("arith.addi {orow}, {lv} : index"));
        let at = b.emit(format!("arith.muli {at}, {cv} : index"));
        let mut lanes = vec![];
        for e in 0..vec {
            let iq = b.emit(format!("arith.addi {at}, {} : index", chans[e]));
            let v = match &bias[e] {
                Some(bv) => b.emit(format!("arith.addf {}, {bv} : {c}", accs[e])),
                None => accs[e].clone(),
            };
            let mut seed = HashMap::new();
            seed.insert(y, v);
            let vals =
                compute(&mut b, g, &nodes[1..], &params, &scalars, &ys, &iq, c, dt, None, seed, &[], &unsupported)?;
            if vec == 1 {
                store_outputs(&mut b, &params, &vals, &iq, c).map_err(unsupported)?;
            } else {
                lanes.push((iq, vals));
            }
        }
        if vec > 1 {
            store_run(&mut b, &params, &lanes, c).map_err(unsupported)?;
        }
    }
    b.stmt("}");
    let mut k = finish(params, &b, None, [blocks(numel(&groups), BLOCK), 1, 1], [BLOCK, 1, 1]);
    k.constants.extend(table);
    Ok(k)
}
