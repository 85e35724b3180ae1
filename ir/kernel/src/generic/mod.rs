//! Generic kernels: one op, any dtype, shape and attribute the interpreter takes. They are what
//! completion falls back to, node by node, where no fused template runs a group, so every op
//! that computes a tensor of static shape has one. Each is written for plainness, not speed:
//! one thread per output element in a grid-stride loop (or per row, line or input element where
//! elements share work), no barriers, no workgroup memory — so the host emulator can run them.
//! The exceptions set `Kern::one_block` (and `Kern::blocks`): kernels whose threads cooperate
//! through barriers and workgroup memory where one thread an output would leave the machine idle
//! — the NonMaxSuppression walks, NonZero's scans, TopKBounded by selection, order-free
//! reductions of long rows; `gpu_check` runs them, the host emulator leaves them to the
//! interpreter.
//! Semantics follow the interpreter op by op (interp/*.rs); attributes are read with its
//! `NodeAttrs`, so defaults and errors match.
pub mod scalar;

mod attention;
mod bounded;
mod linalg;
mod loss;
mod math;
mod movement;
mod norm;
mod reduce;
mod scatter;
mod select;
mod sequence;
mod window;

use crate::body::Body;
use crate::elementwise::{coords, flat};
use crate::kernel::{blocks, finish, Kernel, KernelError, Param};
use scalar::{storage, Ty, Val};
use std::sync::Arc;
use xforge_ir::group::FusionGroup;
use xforge_ir::interp::NodeAttrs;
use xforge_ir::tensor::strides;
use xforge_ir::{DType, Graph, Node, Op, Tensor, ValueId};

/// Threads per block of a generic kernel.
const BLOCK: u32 = 256;

/// The most elements a compile-time table (index maps, resize taps) may hold.
pub const MAX_TABLE: usize = 1 << 25;

pub type R<T> = Result<T, String>;

/// A generic kernel under construction: the node, its parameters and the body.
pub struct Kern<'a> {
    pub g: &'a Graph,
    pub n: &'a Node,
    pub b: Body,
    pub params: Vec<Param>,
    /// Parameters whose bytes are compiled in (tables), by parameter index.
    pub constants: Vec<(usize, Arc<[u8]>)>,
    /// One block of this many threads with this workgroup memory, in place of the grid-stride
    /// launch: for the few kernels whose threads cooperate (barriers; not host-emulated).
    pub one_block: Option<(u32, String)>,
    /// How many such blocks (each its own workgroup memory, no barrier between them): 1 but for
    /// kernels that split their work into independent tiles (`gpu.block_id x` names the tile).
    pub blocks: u32,
}

impl<'a> Kern<'a> {
    fn new(g: &'a Graph, n: &'a Node) -> Kern<'a> {
        Kern { g, n, b: Body::default(), params: vec![], constants: vec![], one_block: None, blocks: 1 }
    }

    pub fn attrs(&self) -> NodeAttrs<'a> {
        NodeAttrs(self.n)
    }

    pub fn opset(&self) -> i64 {
        self.g.opset
    }

    /// Input `k` of the node, if present.
    pub fn in_val(&self, k: usize) -> Option<ValueId> {
        self.n.inputs.get(k).copied().flatten()
    }

    pub fn out_val(&self, k: usize) -> Option<ValueId> {
        self.n.outputs.get(k).copied().flatten()
    }

    fn shape_of(&self, v: ValueId) -> R<Vec<usize>> {
        self.g.ty(v).static_shape().ok_or_else(|| format!("'{}' has no static shape", self.g.name_of(v)))
    }

    pub fn in_shape(&self, k: usize) -> R<Vec<usize>> {
        self.shape_of(self.in_val(k).ok_or_else(|| format!("input {k} is missing"))?)
    }

    pub fn out_shape(&self, k: usize) -> R<Vec<usize>> {
        self.shape_of(self.out_val(k).ok_or_else(|| format!("output {k} is missing"))?)
    }

    pub fn in_dtype(&self, k: usize) -> R<DType> {
        Ok(self.g.ty(self.in_val(k).ok_or_else(|| format!("input {k} is missing"))?).dtype)
    }

    pub fn out_dtype(&self, k: usize) -> R<DType> {
        Ok(self.g.ty(self.out_val(k).ok_or_else(|| format!("output {k} is missing"))?).dtype)
    }

    /// Input `k` when it is a constant (a weight).
    pub fn konst(&self, k: usize) -> Option<&'a Tensor> {
        self.in_val(k).and_then(|v| self.g.weights.get(&v))
    }

    /// Input `k`'s values, which must be constant (they shape the kernel).
    pub fn konst_i64(&self, k: usize, what: &str) -> R<Vec<i64>> {
        match self.in_val(k) {
            None => Err(format!("{what} (input {k}) is missing")),
            Some(v) => self
                .g
                .weights
                .get(&v)
                .map(|t| t.to_i64())
                .ok_or_else(|| format!("{what} ('{}') is known only at run time", self.g.name_of(v))),
        }
    }

    fn param(&mut self, v: ValueId, output: bool) -> R<usize> {
        if let Some(k) = self.params.iter().position(|p| p.value == v && p.output == output) {
            return Ok(k);
        }
        let ty = self.g.ty(v);
        let shape = self.shape_of(v)?;
        self.params.push(Param { value: v, dtype: ty.dtype, elements: shape.iter().product(), output });
        Ok(self.params.len() - 1)
    }

    /// Input `k` as a parameter.
    pub fn input(&mut self, k: usize) -> R<usize> {
        let v = self.in_val(k).ok_or_else(|| format!("input {k} is missing"))?;
        self.param(v, false)
    }

    /// Output `k` as a parameter.
    pub fn output(&mut self, k: usize) -> R<usize> {
        let v = self.out_val(k).ok_or_else(|| format!("output {k} is missing"))?;
        self.param(v, true)
    }

    /// A table compiled into the artifact: a parameter of `dtype` holding `t`'s bytes.
    pub fn table(&mut self, t: &Tensor) -> R<usize> {
        if t.len() > MAX_TABLE {
            return Err(format!("its index table of {} entries is over the limit of {MAX_TABLE}", t.len()));
        }
        let at = self.params.len();
        // no value of the graph: the bytes travel with the kernel
        self.params.push(Param { value: ValueId(u32::MAX), dtype: t.dtype(), elements: t.len().max(1), output: false });
        let mut bytes = t.data().to_le_bytes();
        if bytes.is_empty() {
            bytes = vec![0; t.dtype().size()];
        }
        self.constants.push((at, bytes.into()));
        Ok(at)
    }

    fn memref(&self, p: usize) -> String {
        let p = &self.params[p];
        format!("memref<{}x{}>", p.elements.max(1), storage(p.dtype))
    }

    /// Loads element `at` of parameter `p` into its register type.
    pub fn load(&mut self, p: usize, at: &str) -> Val {
        let m = self.memref(p);
        let raw = self.b.emit(format!("memref.load %arg{p}[{at}] : {m}"));
        scalar::widen(&mut self.b, raw, self.params[p].dtype)
    }

    /// Stores `v` (converted to the parameter's dtype) at element `at` of parameter `p`.
    pub fn store(&mut self, p: usize, at: &str, v: &Val) {
        let dt = self.params[p].dtype;
        let v = scalar::cast(&mut self.b, v, Ty::of(dt));
        let raw = scalar::narrow(&mut self.b, &v, dt);
        let m = self.memref(p);
        self.b.stmt(format!("memref.store {raw}, %arg{p}[{at}] : {m}"));
    }

    pub fn index(&mut self, n: usize) -> String {
        self.b.index(n)
    }

    /// `a <op> b` on indices (`addi`, `muli`, `divui`, `remui`, `subi`, ...).
    pub fn ix(&mut self, op: &str, a: &str, c: &str) -> String {
        self.b.emit(format!("arith.{op} {a}, {c} : index"))
    }

    /// `a <op> n` for a constant n.
    pub fn ixc(&mut self, op: &str, a: &str, n: usize) -> String {
        let c = self.index(n);
        self.ix(op, a, &c)
    }

    /// Row-major coordinates of flat index `i` in `shape`.
    pub fn coords(&mut self, i: &str, shape: &[usize]) -> Vec<String> {
        coords(&mut self.b, i, shape)
    }

    /// Flat index of coordinates in `shape`.
    pub fn flat(&mut self, cs: &[String], shape: &[usize]) -> String {
        flat(&mut self.b, cs, shape)
    }

    /// Flat index into an operand of `shape` broadcast (numpy rules) to coordinates `oc`.
    pub fn broadcast_at(&mut self, oc: &[String], shape: &[usize]) -> String {
        let off = oc.len() - shape.len();
        let st = strides(shape);
        let mut acc = self.index(0);
        for d in 0..shape.len() {
            if shape[d] == 1 {
                continue;
            }
            let t = self.ixc("muli", &oc[d + off], st[d]);
            acc = self.ix("addi", &acc, &t);
        }
        acc
    }

    /// A grid-stride loop over `n` items: `body` gets the item's index.
    pub fn for_each(&mut self, n: usize, body: impl FnOnce(&mut Kern<'a>, &str) -> R<()>) -> R<()> {
        let (start, step) = self.b.grid_stride();
        let end = self.index(n);
        let i = self.b.fresh("i");
        self.b.stmt(format!("scf.for {i} = {start} to {end} step {step} {{"));
        body(self, &i)?;
        self.b.stmt("}");
        Ok(())
    }

    /// A sequential loop from `lo` to `hi` (index values) carrying `init`: `body` gets the loop
    /// index and the carried values and returns their next values; returns the final ones.
    pub fn fold(
        &mut self,
        lo: &str,
        hi: &str,
        init: &[Val],
        body: impl FnOnce(&mut Kern<'a>, &str, &[Val]) -> R<Vec<Val>>,
    ) -> R<Vec<Val>> {
        let one = self.index(1);
        let iv = self.b.fresh("k");
        if init.is_empty() {
            self.b.stmt(format!("scf.for {iv} = {lo} to {hi} step {one} {{"));
            body(self, &iv, &[])?;
            self.b.stmt("}");
            return Ok(vec![]);
        }
        let args: Vec<String> = init.iter().map(|_| self.b.fresh("a")).collect();
        let carried: Vec<Val> = args.iter().zip(init).map(|(a, v)| Val::new(a.clone(), v.ty)).collect();
        let types: Vec<String> = init.iter().map(|v| v.ty.mlir()).collect();
        let iter_args: Vec<String> = args.iter().zip(init).map(|(a, v)| format!("{a} = {}", v.v)).collect();
        let head = format!(
            "scf.for {iv} = {lo} to {hi} step {one} iter_args({}) -> ({}) {{",
            iter_args.join(", "),
            types.join(", ")
        );
        let r = if init.len() == 1 { self.b.emit(head) } else { self.b.emit_multi(init.len(), head) };
        let next = body(self, &iv, &carried)?;
        let names: Vec<String> = next.iter().map(|v| v.v.clone()).collect();
        self.b.stmt(format!("scf.yield {} : {}", names.join(", "), types.join(", ")));
        self.b.stmt("}");
        Ok(if init.len() == 1 {
            vec![Val::new(r, init[0].ty)]
        } else {
            init.iter().enumerate().map(|(k, v)| Val::new(format!("{r}#{k}"), v.ty)).collect()
        })
    }

    /// `fold` from 0 to a constant `n`.
    pub fn fold_n(
        &mut self,
        n: usize,
        init: &[Val],
        body: impl FnOnce(&mut Kern<'a>, &str, &[Val]) -> R<Vec<Val>>,
    ) -> R<Vec<Val>> {
        let (lo, hi) = (self.index(0), self.index(n));
        self.fold(&lo, &hi, init, body)
    }

    /// `if cond then a else b` yielding values of `types` (nothing when empty).
    pub fn if_else(
        &mut self,
        cond: &Val,
        types: &[Ty],
        then: impl FnOnce(&mut Kern<'a>) -> R<Vec<Val>>,
        other: impl FnOnce(&mut Kern<'a>) -> R<Vec<Val>>,
    ) -> R<Vec<Val>> {
        let ts: Vec<String> = types.iter().map(|t| t.mlir()).collect();
        let r = match types.len() {
            0 => {
                self.b.stmt(format!("scf.if {} {{", cond.v));
                String::new()
            }
            1 => self.b.emit(format!("scf.if {} -> ({}) {{", cond.v, ts[0])),
            k => self.b.emit_multi(k, format!("scf.if {} -> ({}) {{", cond.v, ts.join(", "))),
        };
        let yield_ = |k: &mut Kern<'a>, vs: Vec<Val>| {
            if !vs.is_empty() {
                let names: Vec<String> = vs.iter().map(|v| v.v.clone()).collect();
                k.b.stmt(format!("scf.yield {} : {}", names.join(", "), ts.join(", ")));
            }
        };
        let a = then(self)?;
        yield_(self, a);
        if types.is_empty() {
            // no results: the else region may be left out, but an empty one is also fine
            self.b.stmt("} else {");
            other(self)?;
        } else {
            self.b.stmt("} else {");
            let c = other(self)?;
            yield_(self, c);
        }
        self.b.stmt("}");
        Ok(match types.len() {
            0 => vec![],
            1 => vec![Val::new(r, types[0])],
            _ => types.iter().enumerate().map(|(k, t)| Val::new(format!("{r}#{k}"), *t)).collect(),
        })
    }

    /// `if cond { then }` with no results.
    pub fn when(&mut self, cond: &Val, then: impl FnOnce(&mut Kern<'a>) -> R<()>) -> R<()> {
        self.b.stmt(format!("scf.if {} {{", cond.v));
        then(self)?;
        self.b.stmt("}");
        Ok(())
    }

    /// Inclusive prefix sums of the `threads` counts (of MLIR type `ty`: `i32`, `index`) at
    /// `base` of the workgroup memory `%wg : wg_ty`, one a thread (log₂ rounds: every thread
    /// reads both, then writes). For the cooperating kernels (`one_block`).
    pub fn inclusive_scan(&mut self, wg_ty: &str, ty: &str, base: usize, tid: &str, threads: usize) {
        let mut d = 1;
        while d < threads {
            let dd = self.index(d);
            let back = self.icmp("uge", tid, &dd);
            let prev = self.ix("subi", tid, &dd);
            let z = self.index(0);
            let prev = self.isel(&back, &prev, &z);
            let (own_at, prev_at) = (self.ixc("addi", tid, base), self.ixc("addi", &prev, base));
            let own = self.b.emit(format!("memref.load %wg[{own_at}] : {wg_ty}"));
            let other = self.b.emit(format!("memref.load %wg[{prev_at}] : {wg_ty}"));
            let zero = self.b.emit(format!("arith.constant 0 : {ty}"));
            let other = self.b.emit(format!("arith.select {}, {other}, {zero} : {ty}", back.v));
            let sum = self.b.emit(format!("arith.addi {own}, {other} : {ty}"));
            self.b.stmt("gpu.barrier");
            self.b.stmt(format!("memref.store {sum}, %wg[{own_at}] : {wg_ty}"));
            self.b.stmt("gpu.barrier");
            d *= 2;
        }
    }

    /// Index comparison as an i1.
    pub fn icmp(&mut self, pred: &str, a: &str, c: &str) -> Val {
        Val::new(self.b.emit(format!("arith.cmpi {pred}, {a}, {c} : index")), Ty::Bool)
    }

    pub fn and(&mut self, a: &Val, c: &Val) -> Val {
        Val::new(self.b.emit(format!("arith.andi {}, {} : i1", a.v, c.v)), Ty::Bool)
    }

    pub fn isel(&mut self, c: &Val, a: &str, d: &str) -> String {
        self.b.emit(format!("arith.select {}, {a}, {d} : index", c.v))
    }

    /// The kernel: `work` items spread over blocks of BLOCK threads.
    fn finish(self, work: usize) -> Kernel {
        let mut k = match &self.one_block {
            Some((threads, wg)) => finish(self.params, &self.b, Some(wg), [self.blocks, 1, 1], [*threads, 1, 1]),
            None => finish(self.params, &self.b, None, [blocks(work, BLOCK), 1, 1], [BLOCK, 1, 1]),
        };
        k.constants = self.constants;
        k
    }
}

/// A kernel that copies `elements` of `dt` from parameter 0 to parameter 1 (both named
/// `value`): a constant graph output's bytes into its arena buffer.
pub fn copy(dt: DType, elements: usize, value: ValueId) -> Kernel {
    let n = elements.max(1);
    let params = vec![
        Param { value, dtype: dt, elements: n, output: false },
        Param { value, dtype: dt, elements: n, output: true },
    ];
    let st = storage(dt);
    let mut b = Body::default();
    let (start, step) = b.grid_stride();
    let end = b.index(n);
    b.stmt(format!("scf.for %i = {start} to {end} step {step} {{"));
    let v = b.emit(format!("memref.load %arg0[%i] : memref<{n}x{st}>"));
    b.stmt(format!("memref.store {v}, %arg1[%i] : memref<{n}x{st}>"));
    b.stmt("}");
    finish(params, &b, None, [blocks(n, BLOCK), 1, 1], [BLOCK, 1, 1])
}

/// The generic kernel of a group of one node (schedule `Generic`), numbered `gi` for errors.
pub fn generic(g: &Graph, grp: &FusionGroup, gi: usize) -> Result<Kernel, KernelError> {
    let unsupported = |why: String| KernelError::Unsupported { group: gi, why };
    let [n] = grp.nodes[..] else {
        return Err(unsupported(format!("a generic kernel runs one node, the group has {}", grp.nodes.len())));
    };
    let node = &g.nodes[n];
    let mut k = Kern::new(g, node);
    let work = build(&mut k).map_err(|why| unsupported(format!("node '{}' ({}): {why}", node.name, node.op)))?;
    Ok(k.finish(work))
}

/// Writes the op's body; returns the number of work items (threads wanted).
fn build(k: &mut Kern) -> R<usize> {
    use Op::*;
    for o in k.n.output_ids() {
        k.shape_of(o)?;
    }
    match k.n.op {
        ReduceSum | ReduceMean | ReduceMax | ReduceMin | ReduceProd | ReduceL1 | ReduceL2 | ReduceLogSum
        | ReduceLogSumExp | ReduceSumSquare => reduce::reduce(k),
        ArgMax | ArgMin => reduce::arg_reduce(k),
        Softmax | LogSoftmax | Hardmax => reduce::softmax(k),
        CumSum | CumProd => reduce::cumulative(k),
        TopK => reduce::topk(k),
        TopKBounded => reduce::topk_bounded(k),
        ReduceBounded => reduce::reduce_bounded(k),
        ConcatBounded => bounded::concat(k),
        NmsOverlapMask => bounded::overlap_mask(k),
        Choose => Err("a choice between results of different shapes runs only where both are padded alike".into()),
        LayerNormalization | RMSNormalization => norm::layer_norm(k),
        InstanceNormalization | GroupNormalization => norm::instance_group_norm(k),
        LpNormalization => norm::lp_norm(k),
        MeanVarianceNormalization => norm::mean_variance(k),
        LRN => norm::lrn(k),
        BatchNormalization => norm::batch_norm(k),
        MatMul => linalg::matmul(k),
        Gemm => linalg::gemm(k),
        Einsum => linalg::einsum(k),
        Conv | ConvNhwc => window::conv(k),
        ConvTranspose => window::conv_transpose(k),
        MaxPool | AveragePool | LpPool | GlobalAveragePool | GlobalMaxPool => window::pool(k),
        RoiAlign => window::roi_align(k),
        Attention => attention::attention(k),
        LinearAttention => sequence::linear_attention(k),
        RNN | GRU | LSTM => {
            Err("recurrent networks run unrolled before fusion; this one has more steps than are unrolled".into())
        }
        SoftmaxCrossEntropyLoss | NegativeLogLikelihoodLoss => loss::loss(k),
        ScatterElements | Scatter | ScatterND => scatter::scatter(k),
        Transpose | Slice | Expand | Concat | Split | Gather | GatherElements | GatherND | Pad | OneHot | EyeLike
        | Reshape | Flatten | Squeeze | Unsqueeze | Tile | DepthToSpace | SpaceToDepth | Trilu | ReverseSequence
        | CenterCropPad | Compress | Resize | Upsample => movement::movement(k),
        op if matches!(op.kind(), xforge_ir::OpKind::Elementwise | xforge_ir::OpKind::Broadcast) => {
            math::elementwise(k)
        }
        Bounded => bounded::bounded(k),
        NonZero | NonMaxSuppression => Err("its output shape depends on the data".into()),
        Shape | Size | Range | ConstantOfShape | Constant => {
            Err("its value is known only at run time (constant folding could not fold it)".into())
        }
        If | Loop | Scan => Err("control flow is not compiled yet".into()),
        op => Err(format!("no generic kernel for {op} yet")),
    }
}
