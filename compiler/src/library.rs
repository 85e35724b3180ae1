//! Library groups → the descriptors the runtime hands to cuBLASLt and cuDNN, with the values
//! of their buffers in the descriptor's order. A group the library cannot express exactly gets
//! an error naming why (a GEMM then runs as a generated kernel).
use xforge_ir::{Attr, Graph, Op, ValueId};
use xforge_kernel::Kernel;
use xforge_passes::fusion::{FusionGroup, Schedule};
use xforge_runtime::{Activation, ConvDesc, GemmDesc, LibDtype, LibraryDesc};

/// A library call's descriptor and its buffers (in the descriptor's argument order).
pub struct LibraryPlan {
    pub desc: LibraryDesc,
    pub buffers: Vec<ValueId>,
    /// The weight buffer the library reads in another layout: which buffer, and its bytes.
    pub relaid: Option<(usize, Vec<u8>)>,
}

fn shape(g: &Graph, v: ValueId) -> Result<Vec<u64>, String> {
    g.ty(v)
        .static_shape()
        .map(|s| s.iter().map(|&d| d as u64).collect())
        .ok_or_else(|| format!("'{}' has no static shape", g.name_of(v)))
}

fn int_attr(node: &xforge_ir::Node, name: &str, default: i64) -> i64 {
    match node.attr(name) {
        Some(Attr::Int(i)) => *i,
        _ => default,
    }
}

fn float_attr(node: &xforge_ir::Node, name: &str, default: f32) -> f32 {
    match node.attr(name) {
        Some(Attr::Float(f)) => *f,
        _ => default,
    }
}

fn ints_attr(node: &xforge_ir::Node, name: &str) -> Option<Vec<i64>> {
    match node.attr(name) {
        Some(Attr::Ints(v)) => Some(v.clone()),
        _ => None,
    }
}

/// The epilogue after a contraction, in the library's order: bias (a weight along the output
/// channels), residual (a value of the output's size), activation.
struct Epilogue {
    bias: Option<ValueId>,
    residual: Option<ValueId>,
    act: Activation,
    out: ValueId,
}

/// Reads the epilogue nodes; `channels` is the bias length the library broadcasts and
/// `elements` the output's element count.
fn epilogue(
    g: &Graph,
    nodes: &[usize],
    conv: bool,
    nhwc: bool,
    channels: u64,
    elements: u64,
) -> Result<Epilogue, String> {
    let anchor = &g.nodes[nodes[0]];
    let mut cur = anchor.outputs.first().copied().flatten().ok_or("the contraction has no output")?;
    let mut e = Epilogue { bias: None, residual: None, act: Activation::None, out: cur };
    for &n in &nodes[1..] {
        let node = &g.nodes[n];
        let ins: Vec<ValueId> = node.input_ids().collect();
        let out = node.outputs.first().copied().flatten().ok_or_else(|| format!("'{}' has no output", node.name))?;
        if !ins.contains(&cur) {
            return Err(format!("'{}' does not read the running result", node.name));
        }
        if e.act != Activation::None {
            return Err(format!("'{}' ({}) follows the activation", node.name, node.op));
        }
        match node.op {
            op if xforge_passes::fusion::cost::is_view(op) => {}
            Op::Add => {
                let other = ins.iter().copied().find(|&v| v != cur).unwrap_or(cur);
                let n_other: u64 = shape(g, other)?.iter().product();
                if let Some(w) = g.weights.get(&other) {
                    let last = w.shape().last().copied().unwrap_or(1) as u64;
                    // a bias runs along the output channels: [.., c] for a GEMM or NHWC, [c, 1, 1] for NCHW
                    let along = if conv && !nhwc {
                        let s = w.shape();
                        s.len() >= 3 && s[s.len() - 3] as u64 == channels && s[s.len() - 2..].iter().all(|&d| d == 1)
                    } else {
                        last == channels
                    };
                    if e.bias.is_some() || e.residual.is_some() || n_other != channels || !along {
                        return Err(format!(
                            "'{}' adds a weight that is not a bias along the output channels",
                            node.name
                        ));
                    }
                    e.bias = Some(other);
                } else {
                    if e.residual.is_some() || n_other != elements || other == cur {
                        return Err(format!(
                            "'{}' adds a value that is not a residual of the output's size",
                            node.name
                        ));
                    }
                    e.residual = Some(other);
                }
            }
            Op::Relu => e.act = Activation::Relu,
            Op::Gelu if !conv && matches!(node.attr("approximate"), Some(Attr::Str(s)) if s == "tanh") => {
                e.act = Activation::GeluTanh
            }
            Op::Sigmoid if conv => e.act = Activation::Sigmoid,
            Op::Tanh if conv => e.act = Activation::Tanh,
            Op::Clip if conv => match xforge_passes::fusion::partition::clip_from_zero(g, node) {
                Some(hi) => e.act = Activation::ClipZero(hi as f32),
                None => return Err(format!("'{}' is a Clip without a zero lower bound", node.name)),
            },
            op => return Err(format!("'{}' ({op}) has no library epilogue", node.name)),
        }
        // every epilogue value but the last stays inside the group
        cur = out;
        e.out = out;
    }
    Ok(e)
}

fn dtype_of(g: &Graph, v: ValueId) -> Result<LibDtype, String> {
    let name = g.ty(v).dtype.name();
    LibDtype::from_name(name)
        .ok_or_else(|| format!("'{}' is {name}; the libraries take f32, f16 and bf16", g.name_of(v)))
}

/// A MatMul or Gemm group as one cuBLASLt call.
pub fn gemm(g: &Graph, grp: &FusionGroup) -> Result<LibraryPlan, String> {
    let node = &g.nodes[grp.nodes[0]];
    let input = |k: usize| node.inputs.get(k).copied().flatten();
    let (a, b) = (input(0).ok_or("no A")?, input(1).ok_or("no B")?);
    let (sa, sb) = (shape(g, a)?, shape(g, b)?);
    let dtype = dtype_of(g, a)?;
    if dtype_of(g, b)? != dtype {
        return Err("A and B differ in dtype".into());
    }
    let (bias, alpha, trans_a, trans_b, batch, m, n, k, stride_a, stride_b);
    match node.op {
        Op::Gemm => {
            (trans_a, trans_b) = (int_attr(node, "transA", 0) != 0, int_attr(node, "transB", 0) != 0);
            if sa.len() != 2 || sb.len() != 2 {
                return Err("Gemm operands are not matrices".into());
            }
            (m, k) = if trans_a { (sa[1], sa[0]) } else { (sa[0], sa[1]) };
            n = if trans_b { sb[0] } else { sb[1] };
            (batch, stride_a, stride_b) = (1, 0, 0);
            alpha = float_attr(node, "alpha", 1.0);
            bias = match input(2) {
                None => None,
                Some(c) => {
                    let sc = shape(g, c)?;
                    let along = sc.iter().product::<u64>() == n && sc.last().copied().unwrap_or(1) == n;
                    if !g.weights.contains_key(&c) || !along || float_attr(node, "beta", 1.0) != 1.0 {
                        return Err("Gemm's C is not a bias along N with beta 1".into());
                    }
                    Some(c)
                }
            };
        }
        Op::MatMul => {
            (trans_a, trans_b, alpha, bias) = (false, false, 1.0, None);
            if sa.len() < 2 || sb.len() < 2 {
                return Err("a MatMul of vectors".into());
            }
            let (ra, rb) = (sa.len(), sb.len());
            (k, n) = (sa[ra - 1], sb[rb - 1]);
            if sb[rb - 2] != k {
                return Err("inner dimensions differ".into());
            }
            let (ba, bb): (u64, u64) = (sa[..ra - 2].iter().product(), sb[..rb - 2].iter().product());
            let rows = sa[ra - 2];
            // B shared: A's batch folds into its rows
            (batch, m, stride_a, stride_b) = if bb == 1 {
                (1, rows * ba, 0, 0)
            } else if sa[..ra - 2] == sb[..rb - 2] {
                (ba, rows, rows * k, k * n)
            } else if ba == 1 {
                (bb, rows, 0, k * n)
            } else {
                return Err("batch dimensions broadcast".into());
            };
        }
        op => return Err(format!("{op} is not a GEMM")),
    }
    finish(g, grp, dtype, [a, b], (batch, m, n, k), (stride_a, stride_b), (trans_a, trans_b), alpha, bias)
}

#[allow(clippy::too_many_arguments)]
fn finish(
    g: &Graph,
    grp: &FusionGroup,
    dtype: LibDtype,
    [a, b]: [ValueId; 2],
    (batch, m, n, k): (u64, u64, u64, u64),
    (stride_a, stride_b): (u64, u64),
    (trans_a, trans_b): (bool, bool),
    alpha: f32,
    anchor_bias: Option<ValueId>,
) -> Result<LibraryPlan, String> {
    let e = epilogue(g, &grp.nodes, false, false, n, batch * m * n)?;
    if anchor_bias.is_some() && e.bias.is_some() {
        return Err("two biases".into());
    }
    let bias = anchor_bias.or(e.bias);
    if grp.outputs != [e.out] {
        return Err("the group's outputs are not its last value".into());
    }
    for v in bias.iter().chain(&e.residual).chain([&e.out]) {
        if dtype_of(g, *v)? != dtype {
            return Err(format!("'{}' differs in dtype from the operands", g.name_of(*v)));
        }
    }
    let desc = GemmDesc {
        dtype,
        batch,
        m,
        n,
        k,
        stride_a,
        stride_b,
        trans_a,
        trans_b,
        alpha,
        beta: 1.0,
        bias: bias.is_some(),
        residual: e.residual.is_some(),
        act: e.act,
    };
    let buffers = [a, b, e.out].into_iter().chain(bias).chain(e.residual).collect();
    Ok(LibraryPlan { desc: LibraryDesc::Gemm(desc), buffers, relaid: None })
}

/// A 2-D Conv (NCHW, or 1-D as height 1) or ConvNhwc group as one cuDNN call.
pub fn conv(g: &Graph, grp: &FusionGroup) -> Result<LibraryPlan, String> {
    let node = &g.nodes[grp.nodes[0]];
    let nhwc = match node.op {
        Op::Conv => false,
        Op::ConvNhwc => true,
        op => return Err(format!("{op} is not a forward convolution")),
    };
    let input = |k: usize| node.inputs.get(k).copied().flatten();
    let (x, w) = (input(0).ok_or("no X")?, input(1).ok_or("no W")?);
    let (mut sx, mut sw) = (shape(g, x)?, shape(g, w)?);
    if nhwc && sx.len() == 4 {
        sx = vec![sx[0], sx[3], sx[1], sx[2]];
    }
    // a 1-D convolution (Mamba's causal conv1d) is a 2-D one of height 1: the same bytes
    let one_d = !nhwc && sx.len() == 3 && sw.len() == 3;
    if one_d {
        sx.insert(2, 1);
        sw.insert(2, 1);
    }
    if sx.len() != 4 || sw.len() != 4 {
        return Err(format!("a {}-D convolution (cuDNN calls are 1-D or 2-D here)", sx.len().saturating_sub(2)));
    }
    match node.attr("auto_pad") {
        None => {}
        Some(Attr::Str(s)) if s == "NOTSET" || s == "VALID" => {}
        Some(a) => return Err(format!("auto_pad {a}")),
    }
    let mut pads = ints_attr(node, "pads").unwrap_or(vec![0; if one_d { 2 } else { 4 }]);
    if one_d && pads.len() == 2 {
        pads = vec![0, pads[0], 0, pads[1]];
    }
    if pads.len() != 4 || pads[0] != pads[2] || pads[1] != pads[3] || pads.iter().any(|&p| p < 0) {
        return Err(format!("pads {pads:?} are not symmetric"));
    }
    let two = |name: &str| -> Result<[u64; 2], String> {
        let mut v = ints_attr(node, name).unwrap_or(vec![1; if one_d { 1 } else { 2 }]);
        if one_d && v.len() == 1 {
            v.insert(0, 1);
        }
        match v[..] {
            [a, b] if a >= 1 && b >= 1 => Ok([a as u64, b as u64]),
            _ => Err(format!("{name} {v:?}")),
        }
    };
    let dtype = dtype_of(g, x)?;
    let out_channels = sw[0];
    let y_elems: u64 = shape(g, grp.outputs.first().copied().ok_or("no output")?)?.iter().product();
    let e = epilogue(g, &grp.nodes, true, nhwc, out_channels, y_elems)?;
    let bias = match (input(2), e.bias) {
        (Some(_), Some(_)) => return Err("two biases".into()),
        (b, None) => b,
        (None, b) => b,
    };
    if grp.outputs != [e.out] {
        return Err("the group's outputs are not its last value".into());
    }
    for v in [w, e.out].iter().chain(&bias).chain(&e.residual) {
        if dtype_of(g, *v)? != dtype {
            return Err(format!("'{}' differs in dtype from the input", g.name_of(*v)));
        }
    }
    let desc = ConvDesc {
        dtype,
        nhwc,
        input: [sx[0], sx[1], sx[2], sx[3]],
        out_channels,
        kernel: [sw[2], sw[3]],
        group: int_attr(node, "group", 1).max(1) as u64,
        pad: [pads[0] as u64, pads[1] as u64],
        stride: two("strides")?,
        dilation: two("dilations")?,
        bias: bias.is_some(),
        residual: e.residual.is_some(),
        act: e.act,
    };
    let [oh, ow] = desc.output().ok_or("the window is larger than the padded input")?;
    if y_elems != sx[0] * out_channels * oh * ow {
        return Err("the output's size does not match the convolution's".into());
    }
    let buffers = [x, w, e.out].into_iter().chain(bias).chain(e.residual).collect();
    let relaid = match (nhwc, g.weights.get(&w)) {
        (false, _) => None,
        // [o, i, h, w] as [o, h, w, i]: cuDNN's channels-last filters
        (true, Some(t)) => {
            Some((1, t.transposed(&[0, 2, 3, 1]).ok_or("a filter that is not 4-D")?.data().to_le_bytes()))
        }
        (true, None) => return Err("a channels-last convolution of a computed filter".into()),
    };
    Ok(LibraryPlan { desc: LibraryDesc::Conv(desc), buffers, relaid })
}

/// The generated pass a bare convolution needs after it: act(y + bias + z) in place over its
/// output y (the runtime runs it where its timing prefers the bare convolution with any
/// algorithm to cuDNN's fused call). The kernel and, per kernel parameter, which of the call's
/// buffers it takes (0: y, 1: the bias, 2: the residual z); None when there is nothing to add.
pub fn conv_epilogue(d: &ConvDesc) -> Result<Option<(Kernel, Vec<i64>)>, String> {
    use xforge_ir::{DType, GraphBuilder, Tensor, ValueType};
    let dt = match d.dtype {
        LibDtype::F32 => DType::F32,
        LibDtype::F16 => DType::F16,
        LibDtype::Bf16 => DType::BF16,
    };
    let [oh, ow] = d.output().ok_or("the convolution has no output")?.map(|v| v as usize);
    let (n, c) = (d.input[0] as usize, d.out_channels as usize);
    let shape = if d.nhwc { vec![n, oh, ow, c] } else { vec![n, c, oh, ow] };
    let mut b = GraphBuilder::new("conv_epilogue", 17);
    let u = || ValueType::unranked(dt);
    let y = b.input("y", dt, &shape);
    let mut v = y;
    if d.residual {
        let z = b.input("z", dt, &shape);
        v = b.node(Op::Add, &[v, z], vec![], u());
    }
    if d.bias {
        let bshape = if d.nhwc { vec![c] } else { vec![c, 1, 1] };
        let bias = b.input("bias", dt, &bshape);
        v = b.node(Op::Add, &[v, bias], vec![], u());
    }
    v = match d.act {
        Activation::None => v,
        Activation::Relu => b.node(Op::Relu, &[v], vec![], u()),
        Activation::Sigmoid => b.node(Op::Sigmoid, &[v], vec![], u()),
        Activation::Tanh => b.node(Op::Tanh, &[v], vec![], u()),
        Activation::ClipZero(m) => {
            let lo = b.weight("lo", Tensor::from_f64(dt, vec![], &[0.0]));
            let hi = b.weight("hi", Tensor::from_f64(dt, vec![], &[m as f64]));
            b.node(Op::Clip, &[v, lo, hi], vec![], u())
        }
        a => return Err(format!("activation {a:?} has no epilogue")),
    };
    if v == y {
        return Ok(None);
    }
    b.output(v);
    let mut g = b.finish();
    xforge_ir::infer::infer_graph(&mut g).map_err(|e| e.to_string())?;
    let f = xforge_passes::fusion::fuse(&g).map_err(|e| e.to_string())?;
    let groups: Vec<(usize, &FusionGroup)> =
        f.partition.groups.iter().enumerate().filter(|(_, grp)| grp.schedule != Schedule::View).collect();
    let [(i, grp)] = groups[..] else { return Err(format!("the epilogue is {} kernels", groups.len())) };
    let k = xforge_kernel::generate(&f.graph, grp, i).map_err(|e| e.to_string())?;
    let roles = k
        .params
        .iter()
        .map(|p| match f.graph.name_of(p.value) {
            _ if p.output => Ok(0),
            "y" => Ok(0),
            "bias" => Ok(1),
            "z" => Ok(2),
            other => Err(format!("the epilogue reads '{other}'")),
        })
        .collect::<Result<_, String>>()?;
    Ok(Some((k, roles)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use xforge_ir::{DType, GraphBuilder, Tensor, ValueType};
    use xforge_passes::fusion::{fuse, Schedule};

    #[test]
    fn bare_convolution_epilogues_take_the_calls_buffers() {
        let base = ConvDesc {
            dtype: LibDtype::F16,
            nhwc: true,
            input: [2, 8, 6, 6],
            out_channels: 16,
            kernel: [3, 3],
            group: 1,
            pad: [1, 1],
            stride: [1, 1],
            dilation: [1, 1],
            bias: true,
            residual: false,
            act: Activation::ClipZero(6.0),
        };
        // (the change, the buffers the kernel's parameters take, sorted)
        let cases = [
            (ConvDesc { ..base.clone() }, vec![0, 0, 1]),
            (ConvDesc { residual: true, act: Activation::None, ..base.clone() }, vec![0, 0, 1, 2]),
            (ConvDesc { bias: false, act: Activation::Relu, nhwc: false, ..base.clone() }, vec![0, 0]),
            (ConvDesc { dtype: LibDtype::F32, nhwc: false, ..base.clone() }, vec![0, 0, 1]),
        ];
        for (d, want) in cases {
            let (k, mut roles) = conv_epilogue(&d).unwrap().unwrap();
            roles.sort();
            assert_eq!(roles, want, "{d:?}");
            // in place: the output is y's size, and the kernel writes it once
            let out: Vec<_> = k.params.iter().filter(|p| p.output).collect();
            assert_eq!(out.len(), 1);
            assert_eq!(out[0].elements, 2 * 16 * 6 * 6);
        }
        // nothing to do after a bare convolution without bias, residual or activation
        let plain = ConvDesc { bias: false, act: Activation::None, ..base };
        assert!(conv_epilogue(&plain).unwrap().is_none());
    }

    fn w(b: &mut GraphBuilder, name: &str, shape: &[usize]) -> ValueId {
        let n: usize = shape.iter().product();
        b.weight(name, Tensor::from_f64(DType::F32, shape.to_vec(), &vec![0.5; n]))
    }

    /// The descriptor (or why not) of the first library group of `g`.
    fn plan_of(g: xforge_ir::Graph) -> Result<LibraryDesc, String> {
        let f = fuse(&g).unwrap();
        let grp = f
            .partition
            .groups
            .iter()
            .find(|grp| matches!(grp.schedule, Schedule::LibraryGemm | Schedule::LibraryConv))
            .expect("a library group");
        let p = if grp.schedule == Schedule::LibraryConv { conv(&f.graph, grp) } else { gemm(&f.graph, grp) }?;
        assert_eq!(p.buffers.len(), LibraryDesc::of_call(&call(&p), u64::MAX, u64::MAX).map(|_| p.buffers.len())?);
        Ok(p.desc)
    }

    fn call(p: &LibraryPlan) -> xforge_runtime::LibraryCall {
        xforge_runtime::LibraryCall {
            kind: p.desc.kind().into(),
            group: 0,
            params: p.desc.to_params(),
            args: p.buffers.iter().map(|_| xforge_runtime::Arg::Arena(0)).collect(),
        }
    }

    #[test]
    fn matmuls_fold_shared_weights_into_rows_and_keep_their_epilogue() {
        // [2, 5, 8]·[8, 6] + bias + residual, ReLU: one GEMM of 10 rows
        let mut b = GraphBuilder::new("mm", 17);
        let u = || ValueType::unranked(DType::F32);
        let x = b.input("x", DType::F32, &[2, 5, 8]);
        let r = b.input("r", DType::F32, &[2, 5, 6]);
        let wt = w(&mut b, "w", &[8, 6]);
        let bias = w(&mut b, "b", &[6]);
        let m = b.node(Op::MatMul, &[x, wt], vec![], u());
        let a = b.node(Op::Add, &[m, bias], vec![], u());
        let s = b.node(Op::Add, &[a, r], vec![], u());
        let y = b.node(Op::Relu, &[s], vec![], u());
        b.output(y);
        let LibraryDesc::Gemm(d) = plan_of(b.finish()).unwrap() else { panic!("not a GEMM") };
        assert_eq!((d.batch, d.m, d.n, d.k, d.bias, d.residual, d.act), (1, 10, 6, 8, true, true, Activation::Relu));
    }

    #[test]
    fn batched_and_transposed_gemms() {
        // activations on both sides: a strided batch
        let mut b = GraphBuilder::new("bmm", 17);
        let x = b.input("x", DType::F32, &[3, 4, 7]);
        let z = b.input("z", DType::F32, &[3, 7, 5]);
        let m = b.node(Op::MatMul, &[x, z], vec![], ValueType::unranked(DType::F32));
        b.output(m);
        let LibraryDesc::Gemm(d) = plan_of(b.finish()).unwrap() else { panic!() };
        assert_eq!((d.batch, d.m, d.n, d.k, d.stride_a, d.stride_b), (3, 4, 5, 7, 28, 35));
        // Gemm with transB and C as a bias
        let mut b = GraphBuilder::new("gemm", 17);
        let x = b.input("x", DType::F32, &[2, 9]);
        let (wt, c) = (w(&mut b, "w", &[4, 9]), w(&mut b, "c", &[4]));
        let attrs = vec![("transB", Attr::Int(1)), ("alpha", Attr::Float(0.5))];
        let m = b.node(Op::Gemm, &[x, wt, c], attrs, ValueType::unranked(DType::F32));
        b.output(m);
        let LibraryDesc::Gemm(d) = plan_of(b.finish()).unwrap() else { panic!() };
        assert_eq!((d.m, d.n, d.k, d.trans_a, d.trans_b, d.alpha, d.bias), (2, 4, 9, false, true, 0.5, true));
    }

    #[test]
    fn what_the_libraries_cannot_express_is_named() {
        // C scaled by beta ≠ 1
        let mut b = GraphBuilder::new("beta", 17);
        let x = b.input("x", DType::F32, &[2, 9]);
        let (wt, c) = (w(&mut b, "w", &[9, 4]), w(&mut b, "c", &[4]));
        let m = b.node(Op::Gemm, &[x, wt, c], vec![("beta", Attr::Float(2.0))], ValueType::unranked(DType::F32));
        b.output(m);
        assert!(plan_of(b.finish()).unwrap_err().contains("beta 1"));
        // batch dims that broadcast on both sides
        let mut b = GraphBuilder::new("bcast", 17);
        let x = b.input("x", DType::F32, &[3, 1, 4, 7]);
        let z = b.input("z", DType::F32, &[1, 2, 7, 5]);
        let m = b.node(Op::MatMul, &[x, z], vec![], ValueType::unranked(DType::F32));
        b.output(m);
        assert!(plan_of(b.finish()).unwrap_err().contains("broadcast"));
        // a Clip whose lower bound is not 0 (here [0.5, 0.5])
        let mut b = GraphBuilder::new("clip", 17);
        let x = b.input("x", DType::F32, &[1, 2, 6, 6]);
        let wt = w(&mut b, "w", &[4, 2, 3, 3]);
        let (lo, hi) = (w(&mut b, "lo", &[]), w(&mut b, "hi", &[]));
        let cv = b.node(Op::Conv, &[x, wt], vec![("pads", Attr::Ints(vec![1; 4]))], ValueType::unranked(DType::F32));
        let y = b.node(Op::Clip, &[cv, lo, hi], vec![], ValueType::unranked(DType::F32));
        b.output(y);
        let f = fuse(&b.finish()).unwrap();
        // the partition keeps the Clip out of the conv group (cuDNN does not fuse it): the conv
        // alone is a library call
        let grp = f.partition.groups.iter().find(|g| g.schedule == Schedule::LibraryConv).unwrap();
        assert_eq!(grp.nodes.len(), 1);
        let LibraryDesc::Conv(d) = conv(&f.graph, grp).unwrap().desc else { panic!() };
        assert_eq!((d.pad, d.act), ([1, 1], Activation::None));
    }

    #[test]
    fn channels_last_convolutions_relay_their_filters() {
        // [o, i, h, w] → [o, h, w, i]
        let t = Tensor::from_f64(DType::F32, vec![2, 3, 1, 2], &(0..12).map(f64::from).collect::<Vec<_>>());
        let bytes = t.transposed(&[0, 2, 3, 1]).unwrap().data().to_le_bytes();
        let got: Vec<f32> = bytes.chunks(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect();
        assert_eq!(got, [0.0, 2.0, 4.0, 1.0, 3.0, 5.0, 6.0, 8.0, 10.0, 7.0, 9.0, 11.0]);
    }
}
