//! layout: half-precision convolution stacks switch to channels-last when the cost model says
//! so, with the transposes inside the stack cancelled; fp32 stays NCHW; the rewrite is sound.
mod common;
use common::{assert_equivalent, assert_partition_sound};
use xforge_ir::{infer::infer_graph, Attr, DType, Graph, GraphBuilder, Op, Tensor, ValueType};
use xforge_passes::fusion::{
    cost::{measured_cost, node_cost},
    fuse, fuse_with,
    language::Head,
};
use xforge_passes::tuning::{node_key, TuningTable, Way};

/// `blocks` residual blocks (conv → relu → conv → add → relu), then a conv: `c` channels,
/// `s`×`s` images.
fn stack(dtype: DType, n: usize, c: usize, s: usize, blocks: usize) -> Graph {
    stack_with(dtype, n, c, s, blocks, false)
}

/// `stack` with ReLU6 (Clip to [0, 6], bounds as inputs) in place of each ReLU when `relu6`.
fn stack_with(dtype: DType, n: usize, c: usize, s: usize, blocks: usize, relu6: bool) -> Graph {
    let mut b = GraphBuilder::new("stack", 17);
    let lo = b.weight("lo", Tensor::from_f64(dtype, vec![], &[0.0]));
    let hi = b.weight("hi", Tensor::from_f64(dtype, vec![], &[6.0]));
    let act = |b: &mut GraphBuilder, x| {
        if relu6 {
            b.node(Op::Clip, &[x, lo, hi], vec![], ValueType::unranked(dtype))
        } else {
            b.node(Op::Relu, &[x], vec![], ValueType::unranked(dtype))
        }
    };
    let x = b.input("x", dtype, &[n, c, s, s]);
    let u = || ValueType::unranked(dtype);
    let w = |b: &mut GraphBuilder, k: usize| {
        let v: Vec<f64> = (0..c * c * 9).map(|i| (((i * 7919 + k * 31) % 97) as f64 - 48.0) / 400.0).collect();
        b.weight(&format!("w{k}"), Tensor::from_f64(dtype, vec![c, c, 3, 3], &v))
    };
    let bias = |b: &mut GraphBuilder, k: usize| {
        b.weight(&format!("b{k}"), Tensor::from_f64(dtype, vec![c], &vec![0.01 * k as f64; c]))
    };
    let pads = || vec![("pads", Attr::Ints(vec![1; 4]))];
    let mut x = x;
    for k in 0..blocks {
        let (w0, b0, w1, b1) = (w(&mut b, 2 * k), bias(&mut b, 2 * k), w(&mut b, 2 * k + 1), bias(&mut b, 2 * k + 1));
        let c0 = b.node(Op::Conv, &[x, w0, b0], pads(), u());
        let r0 = act(&mut b, c0);
        let c1 = b.node(Op::Conv, &[r0, w1, b1], pads(), u());
        let a = b.node(Op::Add, &[c1, x], vec![], u());
        x = act(&mut b, a);
    }
    let (wl, bl) = (w(&mut b, 99), bias(&mut b, 99));
    let c2 = b.node(Op::Conv, &[x, wl, bl], pads(), u());
    b.output(c2);
    let mut g = b.finish();
    infer_graph(&mut g).unwrap();
    g
}

fn count(g: &Graph, op: Op) -> usize {
    g.nodes.iter().filter(|n| n.op == op).count()
}

#[test]
fn half_precision_stacks_switch_to_channels_last() {
    for dt in [DType::F16, DType::BF16] {
        let f = fuse(&stack(dt, 8, 64, 56, 3)).unwrap();
        assert_eq!(count(&f.graph, Op::ConvNhwc), 7, "{dt}");
        assert_eq!(count(&f.graph, Op::Conv), 0);
        // one transpose into the stack, one out of it
        assert_eq!(count(&f.graph, Op::Transpose), 2);
        assert_partition_sound(&f);
    }
}

#[test]
fn relu6_stacks_switch_too() {
    // Clip with constant bounds sinks through the transposes like ReLU (MobileNet's ReLU6)
    let g = stack_with(DType::F16, 8, 64, 56, 3, true);
    let f = fuse(&g).unwrap();
    assert_eq!((count(&f.graph, Op::ConvNhwc), count(&f.graph, Op::Transpose)), (7, 2));
    assert_partition_sound(&f);
    assert_equivalent(&g, &f.graph, 1e-2);
}

#[test]
fn fp32_stays_nchw() {
    // fp32 has no layout penalty: cuDNN takes NCHW as it is
    for g in [stack(DType::F32, 8, 64, 56, 3), stack(DType::F32, 1, 4, 6, 1)] {
        let f = fuse(&g).unwrap();
        assert_eq!(count(&f.graph, Op::ConvNhwc), 0);
        assert_eq!(count(&f.graph, Op::Transpose), 0);
    }
}

#[test]
fn measured_times_decide_the_layout() {
    // every contraction the extracted graph holds, measured at `us` (keys from the graph's
    // nodes must price the e-graph's e-nodes: the same op, attributes and operand types)
    let measured = |f: &xforge_passes::fusion::Fused, op: Op, us: f64| {
        let mut t = TuningTable::new("sm_90", "test");
        for n in (0..f.graph.nodes.len()).filter(|&n| f.graph.nodes[n].op == op) {
            t.insert(&node_key(&f.graph, n), Way::Alone, us);
        }
        assert_eq!(t.len(), 1, "the seven convolutions do the same work");
        t
    };
    // half precision: channels-last by the model; measured slow there, the stack stays NCHW
    let g = stack(DType::F16, 8, 64, 56, 3);
    let t = measured(&fuse(&g).unwrap(), Op::ConvNhwc, 1e6);
    let f = fuse_with(&g, &measured_cost(&t)).unwrap();
    assert_eq!((count(&f.graph, Op::ConvNhwc), count(&f.graph, Op::Conv), count(&f.graph, Op::Transpose)), (0, 7, 0));
    assert_equivalent(&g, &f.graph, 1e-2);
    // fp32: NCHW by the model; measured slow there, the stack switches
    let g = stack(DType::F32, 8, 64, 56, 3);
    let t = measured(&fuse(&g).unwrap(), Op::Conv, 1e6);
    let f = fuse_with(&g, &measured_cost(&t)).unwrap();
    assert_eq!((count(&f.graph, Op::ConvNhwc), count(&f.graph, Op::Transpose)), (7, 2));
    assert_equivalent(&g, &f.graph, 1e-4);
    // times of other work change nothing
    let mut other = TuningTable::new("sm_90", "test");
    other.insert("Conv f32[1] #0", Way::Alone, 1e6);
    let f = fuse_with(&g, &measured_cost(&other)).unwrap();
    assert_eq!(count(&f.graph, Op::ConvNhwc), 0);
}

#[test]
fn max_pools_go_channels_last_with_their_stack() {
    // VGG: conv → ReLU → MaxPool, twice; the pools pool channels-last, so the stack needs one
    // transpose in and one out; a MaxPool with indices or SAME padding stays as it is
    let pool = |extra: Vec<(&'static str, Attr)>, indices: bool| {
        let dt = DType::F16;
        let mut b = GraphBuilder::new("vgg", 17);
        let u = || ValueType::unranked(dt);
        let mut x = b.input("x", dt, &[8, 32, 28, 28]);
        for k in 0..2 {
            let v: Vec<f64> = (0..32 * 32 * 9).map(|i| ((i * 31 + k) % 17) as f64 / 100.0 - 0.08).collect();
            let w = b.weight(&format!("w{k}"), Tensor::from_f64(dt, vec![32, 32, 3, 3], &v));
            let c = b.node(Op::Conv, &[x, w], vec![("pads", Attr::Ints(vec![1; 4]))], u());
            let r = b.node(Op::Relu, &[c], vec![], u());
            let mut attrs = vec![("kernel_shape", Attr::Ints(vec![2, 2])), ("strides", Attr::Ints(vec![2, 2]))];
            attrs.extend(extra.clone());
            x = if indices {
                let outs = b.node_multi(Op::MaxPool, &[Some(r)], attrs, vec![u(), ValueType::unranked(DType::I64)]);
                outs[0]
            } else {
                b.node(Op::MaxPool, &[r], attrs, u())
            };
        }
        b.output(x);
        let mut g = b.finish();
        infer_graph(&mut g).unwrap();
        g
    };
    let g = pool(vec![], false);
    let f = fuse(&g).unwrap();
    assert_eq!(
        (count(&f.graph, Op::MaxPoolNhwc), count(&f.graph, Op::ConvNhwc), count(&f.graph, Op::Transpose)),
        (2, 2, 2)
    );
    assert_partition_sound(&f);
    assert_equivalent(&g, &f.graph, 1e-2);
    for g in [pool(vec![("auto_pad", Attr::Str("SAME_UPPER".into()))], false), pool(vec![], true)] {
        let f = fuse(&g).unwrap();
        assert_eq!(count(&f.graph, Op::MaxPoolNhwc), 0);
        assert_equivalent(&g, &f.graph, 1e-2);
    }
}

#[test]
fn small_half_precision_stacks_switch_too() {
    // cuDNN turns every NCHW half-precision convolution into three launches of its own (input
    // and filter to NHWC, the result back): even one small block pays for two transposes
    for (g, convs) in [(stack(DType::F16, 8, 64, 56, 1), 3), (stack(DType::F16, 1, 4, 6, 3), 7)] {
        let f = fuse(&g).unwrap();
        assert_eq!((count(&f.graph, Op::ConvNhwc), count(&f.graph, Op::Transpose)), (convs, 2));
        assert_partition_sound(&f);
    }
}

#[test]
fn channels_last_rewrite_is_sound() {
    // force the choice on a graph small enough to interpret
    let g = stack(DType::F16, 1, 4, 6, 2);
    let prefer_nhwc = |eg: &_, n: &xforge_passes::fusion::language::ENode, id| {
        let base = node_cost(eg, n, id);
        if matches!(n.head, Head::Op { op: Op::Conv, .. }) {
            base + 1e12
        } else {
            base
        }
    };
    let f = fuse_with(&g, &prefer_nhwc).unwrap();
    assert_eq!(count(&f.graph, Op::ConvNhwc), 5);
    assert_eq!(count(&f.graph, Op::Transpose), 2);
    assert_partition_sound(&f);
    assert_equivalent(&g, &f.graph, 0.0);
}

/// ConvNeXt-style blocks over x [1, c, s, s]: depthwise 7×7 → channels-last LayerNorm → Linear
/// → GELU → Linear → back to NCHW → per-channel layer scale γ [c, 1, 1] → residual add.
fn convnext_blocks(dtype: DType, c: usize, s: usize, blocks: usize) -> Graph {
    let mut b = GraphBuilder::new("convnext", 17);
    let u = || ValueType::unranked(dtype);
    let t = |b: &mut GraphBuilder, name: &str, shape: Vec<usize>, k: usize| {
        let n: usize = shape.iter().product();
        let v: Vec<f64> = (0..n).map(|i| (((i * 7919 + k * 31) % 97) as f64 - 48.0) / 200.0).collect();
        b.weight(name, Tensor::from_f64(dtype, shape, &v))
    };
    let mut x = b.input("x", dtype, &[1, c, s, s]);
    for k in 0..blocks {
        let wd = t(&mut b, &format!("dw{k}"), vec![c, 1, 7, 7], k);
        let bd = t(&mut b, &format!("dwb{k}"), vec![c], k + 1);
        let attrs = vec![
            ("group", Attr::Int(c as i64)),
            ("pads", Attr::Ints(vec![3; 4])),
            ("kernel_shape", Attr::Ints(vec![7, 7])),
        ];
        let d = b.node(Op::Conv, &[x, wd, bd], attrs, u());
        let p = b.node(Op::Transpose, &[d], vec![("perm", Attr::Ints(vec![0, 2, 3, 1]))], u());
        let (sc, sh) = (t(&mut b, &format!("ln_s{k}"), vec![c], k + 2), t(&mut b, &format!("ln_b{k}"), vec![c], k + 3));
        let ln = b.node(Op::LayerNormalization, &[p, sc, sh], vec![("axis", Attr::Int(-1))], u());
        let (w1, b1) =
            (t(&mut b, &format!("w1_{k}"), vec![c, 4 * c], k + 4), t(&mut b, &format!("b1_{k}"), vec![4 * c], k + 5));
        let m1 = b.node(Op::MatMul, &[ln, w1], vec![], u());
        let a1 = b.node(Op::Add, &[m1, b1], vec![], u());
        let ge = b.node(Op::Gelu, &[a1], vec![], u());
        let (w2, b2) =
            (t(&mut b, &format!("w2_{k}"), vec![4 * c, c], k + 6), t(&mut b, &format!("b2_{k}"), vec![c], k + 7));
        let m2 = b.node(Op::MatMul, &[ge, w2], vec![], u());
        let a2 = b.node(Op::Add, &[m2, b2], vec![], u());
        let back = b.node(Op::Transpose, &[a2], vec![("perm", Attr::Ints(vec![0, 3, 1, 2]))], u());
        let gamma = t(&mut b, &format!("gamma{k}"), vec![c, 1, 1], k + 8);
        let scaled = b.node(Op::Mul, &[gamma, back], vec![], u());
        x = b.node(Op::Add, &[scaled, x], vec![], u());
    }
    b.output(x);
    let mut g = b.finish();
    infer_graph(&mut g).unwrap();
    g
}

#[test]
fn convnext_blocks_stay_channels_last_with_the_layer_scale_folded() {
    // the depthwise convolution runs channels-last (a generated weighted pool), the layer scale
    // sinks through the Transpose with its weight reshaped and folds into the second Linear,
    // whose GEMM keeps a library epilogue (bias + residual); only the entry and exit transposes stay
    for dt in [DType::F32, DType::F16] {
        let g = convnext_blocks(dt, 32, 9, 3);
        let f = fuse(&g).unwrap();
        assert_partition_sound(&f);
        // originally two per block: now the entry's (the first convolution reads NCHW x, the
        // residual x once more) and the exit's, whatever the number of blocks
        let desc = xforge_passes::fusion::describe(&f);
        assert!(count(&f.graph, Op::Transpose) <= 3, "{dt}: {desc}");
        assert!(count(&f.graph, Op::ConvNhwc) >= 2, "{dt}: {desc}");
        assert_eq!(count(&f.graph, Op::Mul), 0, "{dt}: the layer scales fold into the weights: {desc}");
        let mut library_residual = 0;
        for grp in &f.partition.groups {
            let ops: Vec<Op> = grp.nodes.iter().map(|&n| f.graph.nodes[n].op).collect();
            if ops.contains(&Op::ConvNhwc) || ops.contains(&Op::Conv) {
                assert_eq!(grp.schedule, xforge_passes::fusion::Schedule::Pooling, "{dt}");
            }
            if ops == [Op::MatMul, Op::Add, Op::Add] && grp.schedule == xforge_passes::fusion::Schedule::LibraryGemm {
                library_residual += 1;
            }
        }
        assert!(library_residual >= 2, "{dt}: {desc}");
        assert_equivalent(&g, &f.graph, if dt == DType::F32 { 1e-5 } else { 2e-2 });
    }
}

/// An Inception-style block over x [1, 8, s, s] and what follows it in GoogLeNet, DenseNet and
/// RegNet-Y: two convolution branches → Concat → 2×2 average pool → conv → ReLU →
/// squeeze-excite (global pool → 1×1 conv → Sigmoid → Mul broadcast over the map) → conv.
fn branchy_block(dtype: DType, s: usize) -> Graph {
    let mut b = GraphBuilder::new("branchy", 17);
    let u = || ValueType::unranked(dtype);
    let mut k = 0;
    let mut conv = |b: &mut GraphBuilder, x, cin: usize, cout: usize, kk: i64| {
        k += 1;
        let n = cout * cin * (kk * kk) as usize;
        let v: Vec<f64> = (0..n).map(|i| (((i * 7919 + k * 31) % 97) as f64 - 48.0) / 300.0).collect();
        let w = b.weight(&format!("w{k}"), Tensor::from_f64(dtype, vec![cout, cin, kk as usize, kk as usize], &v));
        let bias = b.weight(&format!("b{k}"), Tensor::from_f64(dtype, vec![cout], &vec![0.01 * k as f64; cout]));
        let p = (kk - 1) / 2;
        b.node(Op::Conv, &[x, w, bias], vec![("pads", Attr::Ints(vec![p; 4]))], u())
    };
    let x = b.input("x", dtype, &[1, 8, s, s]);
    let a = conv(&mut b, x, 8, 4, 1);
    let c = conv(&mut b, x, 8, 4, 3);
    let cat = b.node(Op::Concat, &[a, c], vec![("axis", Attr::Int(1))], u());
    let pool = vec![("kernel_shape", Attr::Ints(vec![2, 2])), ("strides", Attr::Ints(vec![2, 2]))];
    let p = b.node(Op::AveragePool, &[cat], pool, u());
    let d = conv(&mut b, p, 8, 8, 1);
    let r = b.node(Op::Relu, &[d], vec![], u());
    let gap = b.node(Op::GlobalAveragePool, &[r], vec![], u());
    let e = conv(&mut b, gap, 8, 8, 1);
    let sig = b.node(Op::Sigmoid, &[e], vec![], u());
    let m = b.node(Op::Mul, &[r, sig], vec![], u());
    let out = conv(&mut b, m, 8, 8, 3);
    b.output(out);
    let mut g = b.finish();
    infer_graph(&mut g).unwrap();
    g
}

#[test]
fn concat_pools_and_squeeze_excite_stay_channels_last() {
    // the transposes sink through Concat (its axis permuted), the 2×2 average pool (a depthwise
    // convolution with equal weights), the global pool (a ReduceMean over the spatial axes,
    // whose [1,1,1,C] → [1,C,1,1] transpose is a view) and the broadcasting Mul: only the
    // entry's and the exit's transposes stay
    let g = branchy_block(DType::F16, 16);
    let f = fuse(&g).unwrap();
    let desc = xforge_passes::fusion::describe(&f);
    assert_eq!(count(&f.graph, Op::Transpose), 2, "{desc}");
    assert_eq!(count(&f.graph, Op::ConvNhwc), 6, "{desc}");
    for op in [Op::Conv, Op::AveragePool, Op::GlobalAveragePool] {
        assert_eq!(count(&f.graph, op), 0, "{op}: {desc}");
    }
    assert_partition_sound(&f);
    assert_equivalent(&g, &f.graph, 1e-2);
    // fp32: nothing to gain, nothing moves
    let g = branchy_block(DType::F32, 16);
    let f = fuse(&g).unwrap();
    assert_eq!((count(&f.graph, Op::Transpose), count(&f.graph, Op::ConvNhwc)), (0, 0));
    assert_equivalent(&g, &f.graph, 1e-6);
}

/// ShuffleNet v2's units over x [1, 16, s, s]: a 1×1 conv, then per unit the channels split in
/// halves by two Slices, the second half through 1×1 conv → ReLU → depthwise 3×3 → 1×1 conv →
/// ReLU, the halves concatenated and shuffled (Reshape [N, 2, C/2, H, W] → Transpose [0, 2, 1,
/// 3, 4] → Reshape [N, C, H, W]); a 1×1 conv at the end. `steps` gives the Slices a steps input.
fn shuffle_units(dtype: DType, s: usize, units: usize, steps: bool) -> Graph {
    let (c, h) = (16usize, 8usize);
    let mut b = GraphBuilder::new("shuffle", 17);
    let u = || ValueType::unranked(dtype);
    let mut k = 0;
    let mut conv = |b: &mut GraphBuilder, x, cin: usize, cout: usize, kk: usize, group: usize| {
        k += 1;
        let n = cout * (cin / group) * kk * kk;
        let v: Vec<f64> = (0..n).map(|i| (((i * 7919 + k * 31) % 97) as f64 - 48.0) / 200.0).collect();
        let w = b.weight(&format!("w{k}"), Tensor::from_f64(dtype, vec![cout, cin / group, kk, kk], &v));
        let bias = b.weight(&format!("b{k}"), Tensor::from_f64(dtype, vec![cout], &vec![0.01 * k as f64; cout]));
        let p = (kk as i64 - 1) / 2;
        let attrs = vec![("pads", Attr::Ints(vec![p; 4])), ("group", Attr::Int(group as i64))];
        b.node(Op::Conv, &[x, w, bias], attrs, u())
    };
    let ints = |b: &mut GraphBuilder, name: &str, v: Vec<i64>| b.weight(name, Tensor::from_i64(vec![v.len()], v));
    let (z, half, full, axis, one) = (
        ints(&mut b, "zero", vec![0]),
        ints(&mut b, "half", vec![h as i64]),
        ints(&mut b, "full", vec![c as i64]),
        ints(&mut b, "axis", vec![1]),
        ints(&mut b, "one", vec![1]),
    );
    let to5 = ints(&mut b, "to5", vec![1, 2, h as i64, s as i64, s as i64]);
    let to4 = ints(&mut b, "to4", vec![1, c as i64, s as i64, s as i64]);
    let x = b.input("x", dtype, &[1, c, s, s]);
    let mut x = conv(&mut b, x, c, c, 1, 1);
    for _ in 0..units {
        let slice = |b: &mut GraphBuilder, from, to| {
            let mut args = vec![x, from, to, axis];
            if steps {
                args.push(one);
            }
            b.node(Op::Slice, &args, vec![], u())
        };
        let (lo, hi) = (slice(&mut b, z, half), slice(&mut b, half, full));
        let a = conv(&mut b, hi, h, h, 1, 1);
        let a = b.node(Op::Relu, &[a], vec![], u());
        let a = conv(&mut b, a, h, h, 3, h);
        let a = conv(&mut b, a, h, h, 1, 1);
        let a = b.node(Op::Relu, &[a], vec![], u());
        let cat = b.node(Op::Concat, &[lo, a], vec![("axis", Attr::Int(1))], u());
        let r5 = b.node(Op::Reshape, &[cat, to5], vec![], u());
        let t = b.node(Op::Transpose, &[r5], vec![("perm", Attr::Ints(vec![0, 2, 1, 3, 4]))], u());
        x = b.node(Op::Reshape, &[t, to4], vec![], u());
    }
    let out = conv(&mut b, x, c, c, 1, 1);
    b.output(out);
    let mut g = b.finish();
    infer_graph(&mut g).unwrap();
    g
}

#[test]
fn channel_splits_and_shuffles_stay_channels_last() {
    // the transposes sink through the Slices (their axes permuted) and the channel shuffle (the
    // same permutation of the last axis): only the entry's and the exit's transposes stay, with
    // or without a steps input
    for steps in [false, true] {
        let g = shuffle_units(DType::F16, 12, 3, steps);
        let f = fuse(&g).unwrap();
        let desc = xforge_passes::fusion::describe(&f);
        let moves = f.graph.nodes.iter().filter(|n| n.op == Op::Transpose && n.inputs.len() == 1).count();
        assert_eq!(count(&f.graph, Op::Conv), 0, "{desc}");
        assert_eq!(count(&f.graph, Op::ConvNhwc), 11, "{desc}");
        // the entry's and the exit's, and the shuffles' own (on the last two axes)
        assert_eq!(moves, 2 + 3, "{desc}");
        // each shuffle is the store of its Concat: one kernel, no tiled transpose of its own
        for grp in &f.partition.groups {
            let has = |op: Op| grp.nodes.iter().any(|&k| f.graph.nodes[k].op == op);
            assert_eq!(has(Op::Concat), has(Op::Transpose) && grp.nodes.len() > 1, "{desc}");
        }
        assert_partition_sound(&f);
        assert_equivalent(&g, &f.graph, 1e-2);
    }
}
