//! The pooling template: 2-D MaxPool, AveragePool (pads, strides, dilations, ceil mode,
//! count_include_pad) or depthwise Conv (a pool weighted per channel, plus its bias), the
//! window unrolled, then the group's elementwise epilogue (any: not only what cuDNN fuses). Each thread
//! pools a small block of neighbouring outputs (overlapping windows load shared elements once;
//! halves of even-width planes load as aligned pairs; power-of-two column runs store as one
//! vector); neighbouring threads take neighbouring columns.
use crate::body::{compute_type, storage_type, Body};
use crate::elementwise::{compute, coords, store_outputs, stored};
use crate::kernel::{blocks, finish, input_params, output_params, Kernel, KernelError};
use std::collections::HashMap;
use xforge_ir::group::FusionGroup;
use xforge_ir::tensor::numel;
use xforge_ir::{Attr, Graph, Node, Op};

use crate::knobs::{BLOCK, POOL_OUTPUTS};
use xforge_ir::window::{node_depthwise_window, MAX_WINDOW};

fn ints(n: &Node, k: &str, d: Vec<i64>) -> Vec<i64> {
    match n.attr(k) {
        Some(Attr::Ints(v)) => v.clone(),
        _ => d,
    }
}

pub fn pooling(g: &Graph, grp: &FusionGroup, gi: usize) -> Result<Kernel, KernelError> {
    let unsupported = |why: String| KernelError::Unsupported { group: gi, why };
    let nodes: Vec<&Node> = grp.nodes.iter().map(|&n| &g.nodes[n]).collect();
    let pool = nodes[0];
    let window = node_depthwise_window(g, pool);
    if (pool.op == Op::ConvNhwc && window.is_some()) || pool.op == Op::MaxPoolNhwc {
        return crate::depthwise::depthwise_nhwc(g, grp, gi);
    }
    if !(matches!(pool.op, Op::MaxPool | Op::AveragePool) || (pool.op == Op::Conv && window.is_some())) {
        return Err(unsupported(format!("{} is not a windowed pool this template knows", pool.op)));
    }
    if pool.outputs.iter().skip(1).any(|o| o.is_some()) {
        return Err(unsupported("MaxPool's indices output is not generated".into()));
    }
    if !matches!(pool.attr("auto_pad"), None | Some(Attr::Str(_)))
        || matches!(pool.attr("auto_pad"), Some(Attr::Str(s)) if s.starts_with("SAME"))
    {
        return Err(unsupported("auto_pad SAME_* is not generated yet".into()));
    }
    let x = pool.inputs[0].ok_or_else(|| unsupported("no input".into()))?;
    let y = pool.outputs[0].unwrap();
    let xs = g.ty(x).static_shape().ok_or_else(|| unsupported("shapes are not static".into()))?;
    let ys = g.ty(y).static_shape().ok_or_else(|| unsupported("shapes are not static".into()))?;
    if xs.len() != 4 {
        return Err(unsupported("only 2-D pooling (N, C, H, W) is generated".into()));
    }
    let k = match window {
        Some([kh, kw]) => vec![kh as i64, kw as i64],
        None => ints(pool, "kernel_shape", vec![]),
    };
    let s = ints(pool, "strides", vec![1, 1]);
    let d = ints(pool, "dilations", vec![1, 1]);
    let p = ints(pool, "pads", vec![0; 4]);
    if k.len() != 2 || (k[0] * k[1]) as usize > MAX_WINDOW {
        return Err(unsupported(format!("window {k:?} is not unrolled")));
    }
    let include_pad = matches!(pool.attr("count_include_pad"), Some(Attr::Int(1)));
    let is_max = pool.op == Op::MaxPool;
    // parameters: the pooled input, the epilogue's other inputs, then outputs
    let (mut params, scalars) = input_params(g, &grp.inputs, &[], true).map_err(unsupported)?;
    params.extend(output_params(g, &grp.outputs, numel(&ys), "the pooled size").map_err(unsupported)?);
    let xp = params
        .iter()
        .position(|q| q.value == x && !q.output)
        .ok_or_else(|| unsupported("the pooled value is computed in the group".into()))?;
    let taps = if window.is_some() { Some(Taps::of(g, pool, &params, &scalars).map_err(unsupported)?) } else { None };
    let dt = g.ty(x).dtype;
    let c = compute_type(dt);
    let st = storage_type(dt).unwrap();
    let mut b = Body::default();
    let (start, step) = b.grid_stride();
    // each thread pools up to POOL_OUTPUTS outputs: `cols` neighbouring columns (2, else 3;
    // a warp then covers twice or three times the width) of `per` rows, sharing the index
    // math and the loads of overlapping windows; neighbouring threads keep neighbouring
    // columns, so loads stay coalesced
    let cols = [2, 3, 1].into_iter().find(|q| ys[3] % q == 0 && *q <= POOL_OUTPUTS).unwrap_or(1);
    let per = (1..=POOL_OUTPUTS / cols).rev().find(|q| ys[2] % q == 0).unwrap_or(1);
    let groups = [ys[0], ys[1], ys[2] / per, ys[3] / cols];
    let total = b.index(numel(&groups));
    b.stmt(format!("scf.for %i = {start} to {total} step {step} {{"));
    let co = coords(&mut b, "%i", &groups);
    let (h_in, w_in) = (xs[2] as i64, xs[3] as i64);
    let plane = b.index(xs[2] * xs[3]);
    let cdim = b.index(xs[1]);
    let ncw = b.emit(format!("arith.muli {}, {cdim} : index", co[0]));
    let nc = b.emit(format!("arith.addi {ncw}, {} : index", co[1]));
    let base = b.emit(format!("arith.muli {nc}, {plane} : index"));
    let (sh, sw) = (b.index(s[0] as usize), b.index(s[1] as usize));
    let (pbh, pbw) = (b.index(p[0] as usize), b.index(p[1] as usize));
    let cols_v = b.index(cols);
    let ow0 = b.emit(format!("arith.muli {}, {cols_v} : index", co[3]));
    let w0 = b.emit(format!("arith.muli {ow0}, {sw} : index"));
    let w0 = b.emit(format!("arith.subi {w0}, {pbw} : index"));
    let per_v = b.index(per);
    let oh0 = b.emit(format!("arith.muli {}, {per_v} : index", co[2]));
    let (out_plane, w_out) = (b.index(ys[2] * ys[3]), b.index(ys[3]));
    // a depthwise convolution's weights and bias: loaded once per thread (its channel is fixed)
    let weights: Option<(Vec<String>, String)> = taps.as_ref().map(|t| {
        let w = (0..(k[0] * k[1]) as usize).map(|tap| t.weight(&mut b, &co[1], tap, c)).collect();
        (w, t.bias(&mut b, &co[1], c))
    });
    let out_base = b.emit(format!("arith.muli {nc}, {out_plane} : index"));
    let out_base = b.emit(format!("arith.addi {out_base}, {ow0} : index"));
    let mut loaded: HashMap<(usize, i64), String> = HashMap::new();
    // halves of an even-width plane load as aligned pairs when every thread's first window
    // column has the same parity
    let pairs = st != c && xs[3] % 2 == 0 && (cols as i64 * s[1]) % 2 == 0;
    let mut pair_loaded: HashMap<(usize, i64), String> = HashMap::new();
    let mut lanes: Vec<(String, HashMap<xforge_ir::ValueId, String>)> = vec![];
    for (q, l) in (0..per).flat_map(|q| (0..cols).map(move |l| (q, l))) {
        let qv = b.index(q);
        let oh = b.emit(format!("arith.addi {oh0}, {qv} : index"));
        let row = b.emit(format!("arith.muli {oh}, {w_out} : index"));
        let iq = b.emit(format!("arith.addi {out_base}, {row} : index"));
        let lv = b.index(l);
        let iq = b.emit(format!("arith.addi {iq}, {lv} : index"));
        let lw = b.index(l * s[1] as usize);
        let w0 = b.emit(format!("arith.addi {w0}, {lw} : index"));
        let h0 = b.emit(format!("arith.muli {oh}, {sh} : index"));
        let h0 = b.emit(format!("arith.subi {h0}, {pbh} : index"));
        let mut acc = b.float(if is_max { f64::NEG_INFINITY } else { 0.0 }, c);
        let mut count = b.float(0.0, c);
        let one = b.float(1.0, c);
        let zero_i = b.index(0);
        let (hi, wi) = (b.index(h_in as usize), b.index(w_in as usize));
        // the padded extent counts toward averages with count_include_pad
        let (lo_h, lo_w) = (
            b.emit(format!("arith.subi {zero_i}, {pbh} : index")),
            b.emit(format!("arith.subi {zero_i}, {pbw} : index")),
        );
        let (hip, wip) = (b.index((h_in + p[2]) as usize), b.index((w_in + p[3]) as usize));
        let ident = b.float(if is_max { f64::NEG_INFINITY } else { 0.0 }, c);
        for kh in 0..k[0] {
            for kw in 0..k[1] {
                let (oh, ow) = (b.index((kh * d[0]) as usize), b.index((kw * d[1]) as usize));
                let h = b.emit(format!("arith.addi {h0}, {oh} : index"));
                let w = b.emit(format!("arith.addi {w0}, {ow} : index"));
                let c1 = b.emit(format!("arith.cmpi sge, {h}, {zero_i} : index"));
                let c2 = b.emit(format!("arith.cmpi slt, {h}, {hi} : index"));
                let c3 = b.emit(format!("arith.cmpi sge, {w}, {zero_i} : index"));
                let c4 = b.emit(format!("arith.cmpi slt, {w}, {wi} : index"));
                let a1 = b.emit(format!("arith.andi {c1}, {c2} : i1"));
                let a2 = b.emit(format!("arith.andi {c3}, {c4} : i1"));
                let inb = b.emit(format!("arith.andi {a1}, {a2} : i1"));
                // windows of a thread's rows overlap when the stride is below the window: an
                // input element is loaded once (the same row and column give the same value)
                let key = (q * s[0] as usize + (kh * d[0]) as usize, l as i64 * s[1] + kw * d[1]);
                let off = l as i64 * s[1] + kw * d[1];
                let lane = (off + p[1]).rem_euclid(2);
                let v = match loaded.get(&key) {
                    Some(v) => v.clone(),
                    None if pairs => {
                        // the aligned pair holding the element, loaded once for both
                        let pkey = (key.0, off - lane);
                        let pv = match pair_loaded.get(&pkey) {
                            Some(v) => v.clone(),
                            None => {
                                let pv = b.emit(format!("scf.if {inb} -> (vector<2x{c}>) {{"));
                                let hw = b.emit(format!("arith.muli {h}, {wi} : index"));
                                let hw = b.emit(format!("arith.addi {hw}, {w} : index"));
                                let lv = b.index(lane as usize);
                                let hw = b.emit(format!("arith.subi {hw}, {lv} : index"));
                                let at = b.emit(format!("arith.addi {base}, {hw} : index"));
                                let raw = b.emit(format!(
                                    "vector.load %arg{xp}[{at}] {{alignment = 4}} : memref<{}x{st}>, vector<2x{st}>",
                                    numel(&xs)
                                ));
                                let val = b.emit(format!("arith.extf {raw} : vector<2x{st}> to vector<2x{c}>"));
                                b.stmt(format!("scf.yield {val} : vector<2x{c}>"));
                                b.stmt("} else {");
                                let iv = b.emit(format!("vector.broadcast {ident} : {c} to vector<2x{c}>"));
                                b.stmt(format!("scf.yield {iv} : vector<2x{c}>"));
                                b.stmt("}");
                                pair_loaded.insert(pkey, pv.clone());
                                pv
                            }
                        };
                        let v = b.emit(format!("vector.extract {pv}[{lane}] : {c} from vector<2x{c}>"));
                        loaded.insert(key, v.clone());
                        v
                    }
                    None => {
                        let v = b.emit(format!("scf.if {inb} -> ({c}) {{"));
                        let hw = b.emit(format!("arith.muli {h}, {wi} : index"));
                        let hw = b.emit(format!("arith.addi {hw}, {w} : index"));
                        let at = b.emit(format!("arith.addi {base}, {hw} : index"));
                        let raw = b.emit(format!("memref.load %arg{xp}[{at}] : memref<{}x{st}>", numel(&xs)));
                        let val = if st != c { b.emit(format!("arith.extf {raw} : {st} to {c}")) } else { raw };
                        b.stmt(format!("scf.yield {val} : {c}"));
                        b.stmt("} else {");
                        b.stmt(format!("scf.yield {ident} : {c}"));
                        b.stmt("}");
                        loaded.insert(key, v.clone());
                        v
                    }
                };
                if let Some((w, _)) = &weights {
                    let wv = &w[(kh * k[1] + kw) as usize];
                    acc = b.emit(format!("math.fma {v}, {wv}, {acc} : {c}"));
                    continue;
                }
                acc = b.emit(format!("arith.{} {acc}, {v} : {c}", if is_max { "maximumf" } else { "addf" }));
                if !is_max {
                    let counted = if include_pad {
                        let e1 = b.emit(format!("arith.cmpi sge, {h}, {lo_h} : index"));
                        let e2 = b.emit(format!("arith.cmpi slt, {h}, {hip} : index"));
                        let e3 = b.emit(format!("arith.cmpi sge, {w}, {lo_w} : index"));
                        let e4 = b.emit(format!("arith.cmpi slt, {w}, {wip} : index"));
                        let f1 = b.emit(format!("arith.andi {e1}, {e2} : i1"));
                        let f2 = b.emit(format!("arith.andi {e3}, {e4} : i1"));
                        b.emit(format!("arith.andi {f1}, {f2} : i1"))
                    } else {
                        inb.clone()
                    };
                    let zf = b.float(0.0, c);
                    let inc = b.emit(format!("arith.select {counted}, {one}, {zf} : {c}"));
                    count = b.emit(format!("arith.addf {count}, {inc} : {c}"));
                }
            }
        }
        let pooled = if let Some((_, bias)) = &weights {
            b.emit(format!("arith.addf {acc}, {bias} : {c}"))
        } else if is_max {
            acc
        } else {
            let safe = b.emit(format!("arith.maximumf {count}, {one} : {c}"));
            b.emit(format!("arith.divf {acc}, {safe} : {c}"))
        };
        let mut seed = HashMap::new();
        seed.insert(y, pooled);
        let vals = compute(&mut b, g, &nodes[1..], &params, &scalars, &ys, &iq, c, dt, None, seed, &[], &unsupported)?;
        if !cols.is_power_of_two() || cols == 1 {
            store_outputs(&mut b, &params, &vals, &iq, c).map_err(unsupported)?;
            continue;
        }
        // a row's neighbouring columns leave as one vector per output
        lanes.push((iq, vals));
        if l + 1 < cols {
            continue;
        }
        store_run(&mut b, &params, &lanes, c).map_err(unsupported)?;
        lanes.clear();
    }
    b.stmt("}");
    Ok(finish(params, &b, None, [blocks(numel(&groups), BLOCK), 1, 1], [BLOCK, 1, 1]))
}

/// A depthwise convolution's weight [C, 1, kh, kw] and optional bias [C]: each a kernel
/// parameter or a compiled-in scalar.
pub struct Taps {
    weight: Operand,
    bias: Option<Operand>,
    window: usize,
    /// Channels, where the weight is read tap-major ([kh·kw, C], see `tap_major`).
    tap_major: Option<usize>,
}

enum Operand {
    Param { index: usize, elements: usize, storage: &'static str },
    Scalar(f64),
}

impl Operand {
    fn of(
        v: xforge_ir::ValueId,
        params: &[crate::kernel::Param],
        scalars: &HashMap<xforge_ir::ValueId, f64>,
    ) -> Result<Self, String> {
        if let Some(x) = scalars.get(&v) {
            return Ok(Operand::Scalar(*x));
        }
        let index = params.iter().position(|q| q.value == v && !q.output).ok_or("a weight is computed in the group")?;
        let p = &params[index];
        Ok(Operand::Param { index, elements: p.elements, storage: storage_type(p.dtype).ok_or("weight dtype")? })
    }

    /// The element at `at` (an index value), in the compute type `c`.
    fn load(&self, b: &mut Body, at: &str, c: &str) -> String {
        match self {
            Operand::Scalar(x) => b.float(*x, c),
            Operand::Param { index, elements, storage } => {
                let raw = b.emit(format!("memref.load %arg{index}[{at}] : memref<{elements}x{storage}>"));
                if *storage != c {
                    b.emit(format!("arith.extf {raw} : {storage} to {c}"))
                } else {
                    raw
                }
            }
        }
    }
}

impl Taps {
    pub fn of(
        g: &Graph,
        conv: &Node,
        params: &[crate::kernel::Param],
        scalars: &HashMap<xforge_ir::ValueId, f64>,
    ) -> Result<Self, String> {
        let w = conv.inputs.get(1).copied().flatten().ok_or("no weight")?;
        let window = node_depthwise_window(g, conv).ok_or("not a depthwise convolution")?;
        let bias = match conv.inputs.get(2).copied().flatten() {
            Some(v) => Some(Operand::of(v, params, scalars)?),
            None => None,
        };
        Ok(Taps { weight: Operand::of(w, params, scalars)?, bias, window: window[0] * window[1], tap_major: None })
    }

    /// A constant weight read tap-major: its bytes reordered to [kh·kw, C] as the kernel's table
    /// for its parameter (the parameter index and the bytes), so that threads of neighbouring
    /// channels read neighbouring weights (channel-major, a warp's 32 reads of one tap touch 32
    /// sectors). None where the weight is not a constant parameter (it stays channel-major).
    pub fn tap_major(&mut self, g: &Graph, conv: &Node, channels: usize) -> Option<(usize, std::sync::Arc<[u8]>)> {
        let Operand::Param { index, elements, .. } = self.weight else { return None };
        let t = g.weights.get(&conv.inputs.get(1).copied().flatten()?)?;
        if elements != channels * self.window || t.len() != elements {
            return None;
        }
        // [C, 1, kh, kw] as [kh, kw, 1, C]
        let bytes = t.transposed(&[2, 3, 1, 0])?.data().to_le_bytes();
        self.tap_major = Some(channels);
        Some((index, bytes.into()))
    }

    /// Weight `tap` (kh * kw_len + kw) of channel `channel` (an index value), in the compute
    /// type `c`.
    pub fn weight(&self, b: &mut Body, channel: &str, tap: usize, c: &str) -> String {
        let at = match self.tap_major {
            Some(channels) => {
                let t = b.index(tap * channels);
                b.emit(format!("arith.addi {t}, {channel} : index"))
            }
            None => {
                let kk = b.index(self.window);
                let base = b.emit(format!("arith.muli {channel}, {kk} : index"));
                let t = b.index(tap);
                b.emit(format!("arith.addi {base}, {t} : index"))
            }
        };
        self.weight.load(b, &at, c)
    }

    /// The bias of channel `channel` (0 without one).
    pub fn bias(&self, b: &mut Body, channel: &str, c: &str) -> String {
        match &self.bias {
            Some(o) => o.load(b, channel, c),
            None => b.float(0.0, c),
        }
    }
}

/// Stores runs of neighbouring outputs as one vector per output parameter: `lanes` holds each
/// element's flat index (the first is the run's start, aligned to the run) and computed values.
pub fn store_run(
    b: &mut Body,
    params: &[crate::kernel::Param],
    lanes: &[(String, HashMap<xforge_ir::ValueId, String>)],
    c: &str,
) -> Result<(), String> {
    let width = lanes.len();
    for (pk, prm) in params.iter().enumerate().filter(|(_, prm)| prm.output) {
        let vs: Vec<String> = lanes
            .iter()
            .map(|(_, vals)| vals.get(&prm.value).map(|v| stored(b, prm, v, c)))
            .collect::<Option<_>>()
            .ok_or("an output is not computed")?;
        let pst = storage_type(prm.dtype).unwrap();
        let vec_ty = format!("vector<{width}x{pst}>");
        let v = b.emit(format!("vector.from_elements {} : {vec_ty}", vs.join(", ")));
        let align = width * prm.dtype.size();
        b.stmt(format!(
            "vector.store {v}, %arg{pk}[{}] {{alignment = {align}}} : memref<{}x{pst}>, {vec_ty}",
            lanes[0].0, prm.elements
        ));
    }
    Ok(())
}
