//! The selective-scan template (com.xforge `SelectiveScan`, docs/ops/selective_scan.md): one
//! kernel, the state in registers (it never reaches device memory).
//!
//! Threads: a line is one (batch, channel) row. Each line's sequence is cut into `chunks`
//! consecutive chunks (a power of two, more while the lines alone leave the GPU idle) and each
//! line's state into `parts` slices of at most SSM_STATES_PER_THREAD states on neighbouring
//! lanes (their partial outputs meet by shuffles). A thread is (part, line, chunk), the part
//! fastest, then the block's `lines`: lanes of one chunk read the same B and C (one transaction
//! for the warp where they share a group), and u, delta, z once each.
//!
//! With one chunk, one pass. With several: pass 1 runs each chunk from a zero state and leaves
//! its end state and its summed Δ in workgroup memory; one thread per (line, state) then turns
//! those into each chunk's incoming state (h ← exp(A·ΣΔ)·h + end, in chunk order); pass 2 reruns
//! each chunk from its incoming state and writes the outputs. Steps past the sequence's end take
//! Δ = 0, which leaves the state unchanged (exp(0·A) = 1, 0·B·u = 0), and store nothing.
use crate::body::{compute_type, storage_type, Body};
use crate::elementwise::{load_param, stored};
use crate::kernel::{finish_bounded, memref, Kernel, KernelError, Param};
use crate::knobs::{
    ssm_knob, SSM_BLOCK, SSM_FILL_THREADS, SSM_GRID_BLOCKS, SSM_MAX_STATE, SSM_MIN_CHUNK, SSM_MIN_THREADS,
    SSM_ONE_PASS_THREADS, SSM_SPLIT_THREADS, SSM_STATES_PER_THREAD, SSM_STATES_PER_THREAD_MIN, SSM_UNROLL_STATES,
    SSM_VECTOR_STEPS_F32, SSM_VECTOR_STEPS_HALF, SSM_WORKGROUP_BYTES,
};
use xforge_ir::group::FusionGroup;
use xforge_ir::tensor::numel;
use xforge_ir::{Attr, Graph, Op, ValueId};

/// How a selective scan of `lines` rows of `len` steps and `state` states maps onto threads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ScanLayout {
    /// lanes sharing one line's state (a power of two), each holding `state / parts` states
    pub parts: usize,
    /// chunks of one line's sequence (a power of two), `chunk` steps each
    pub chunks: usize,
    pub chunk: usize,
    /// lines per block
    pub lines: usize,
    /// steps per loop iteration
    pub unroll: usize,
    /// u, delta, z, out, B and C move `unroll` steps per vector (the length is a multiple)
    pub vector: bool,
    /// chunked: pass 1 keeps each step's Δ and u in workgroup memory and pass 2 takes them from
    /// there (u and delta are read once)
    pub stash: bool,
}

impl ScanLayout {
    /// None where no split of `state` over at most 32 lanes has SSM_STATES_PER_THREAD or fewer.
    /// `elem`: the size of u's elements in bytes.
    pub fn new(lines: usize, len: usize, state: usize, elem: usize) -> Option<ScanLayout> {
        let per_thread = ssm_knob("XFORGE_SSM_STATES_PER_THREAD", SSM_STATES_PER_THREAD);
        let mut parts = (0..=5).map(|k| 1 << k).find(|p| state.is_multiple_of(*p) && state / p <= per_thread)?;
        let one_pass = lines * parts >= ssm_knob("XFORGE_SSM_ONE_PASS_THREADS", SSM_ONE_PASS_THREADS);
        // 16-bit types in one pass: the state spreads over more lanes (down to
        // SSM_STATES_PER_THREAD_MIN states each) while the lines are too few to fill the GPU
        let split_fill = ssm_knob("XFORGE_SSM_SPLIT_THREADS", SSM_SPLIT_THREADS);
        while one_pass
            && elem < 4
            && lines * parts < split_fill
            && state.is_multiple_of(parts * 2)
            && state / (parts * 2) >= SSM_STATES_PER_THREAD_MIN
            && parts < 32
        {
            parts *= 2;
        }
        let fill = ssm_knob("XFORGE_SSM_FILL_THREADS", SSM_FILL_THREADS);
        let mut chunks = 1;
        // invariant: every chunk keeps at least SSM_MIN_CHUNK steps, and a block holds all the chunks
        while !one_pass
            && lines * parts * chunks < fill
            && len >= 2 * chunks * SSM_MIN_CHUNK
            && parts * chunks * 2 <= SSM_BLOCK
        {
            chunks *= 2;
        }
        // 16-bit types: shorter vectors where a thread holds a whole state for a whole line (its
        // registers are the scarcest there)
        let whole = parts == 1 && chunks == 1;
        let tight = crate::target::current().tight_registers();
        let vec = if elem >= 4 || (!whole && !tight) { SSM_VECTOR_STEPS_F32 } else { SSM_VECTOR_STEPS_HALF };
        let vec = ssm_knob("XFORGE_SSM_VECTOR_STEPS", vec);
        let vector = len.is_multiple_of(vec);
        let unroll = if vector {
            vec
        } else {
            (ssm_knob("XFORGE_SSM_UNROLL_STATES", SSM_UNROLL_STATES) / (state / parts)).clamp(1, 4)
        };
        let chunk = len.div_ceil(chunks).div_ceil(unroll) * unroll;
        // fewer lines per block (down to a warp) while the blocks alone would leave multiprocessors idle
        let spread = (lines / ssm_knob("XFORGE_SSM_GRID_BLOCKS", SSM_GRID_BLOCKS)).max(1);
        let spread = 1 << spread.ilog2();
        let warp = 32usize.div_ceil(parts * chunks);
        let block_lines = (SSM_BLOCK / (parts * chunks)).min(spread.max(warp)).clamp(1, lines.next_power_of_two());
        // chunked: the stash where it fits these blocks (fewer lines a block would multiply the
        // B and C reads, which cost more than pass 2's second reads of u and delta from L2)
        let l = ScanLayout { parts, chunks, chunk, lines: block_lines, unroll, vector, stash: chunks > 1 };
        let limit = ssm_knob("XFORGE_SSM_WORKGROUP_BYTES", SSM_WORKGROUP_BYTES);
        let stash = l.stash && l.workgroup_bytes(state, elem.max(4)) <= limit;
        Some(ScanLayout { parts, chunks, chunk, lines: block_lines, unroll, vector, stash })
    }

    pub fn threads(&self) -> usize {
        self.parts * self.lines * self.chunks
    }

    /// Steps of Δ (or of u) a block's stash holds: every (line, chunk)'s chunk.
    fn stash_steps(&self) -> usize {
        if self.stash {
            self.lines * self.chunks * self.chunk
        } else {
            0
        }
    }

    /// A block's workgroup memory in bytes for `state` states of `celem`-byte compute elements:
    /// the carry across chunks (n end states and ΣΔ per (chunk, line)) and the stash (Δ and u).
    pub fn workgroup_bytes(&self, state: usize, celem: usize) -> usize {
        let carry = if self.chunks > 1 { self.chunks * self.lines * (state + 1) } else { 0 };
        (carry + 2 * self.stash_steps()) * celem
    }
}

pub fn selective_scan(g: &Graph, grp: &FusionGroup, gi: usize) -> Result<Kernel, KernelError> {
    let unsupported = |why: String| KernelError::Unsupported { group: gi, why };
    let [node] = grp.nodes.as_slice() else {
        return Err(unsupported("a selective scan with a prologue or epilogue is not generated yet".into()));
    };
    let node = &g.nodes[*node];
    if node.op != Op::SelectiveScan {
        return Err(unsupported(format!("{} is not a selective scan", node.op)));
    }
    let input = |k: usize| node.inputs.get(k).copied().flatten();
    let shape = |v: ValueId| g.ty(v).static_shape().ok_or_else(|| unsupported("shapes are not static".into()));
    let (u, a) = (input(0).unwrap(), input(2).unwrap());
    let us = shape(u)?;
    let [nb, nd, nl] = us[..] else { return Err(unsupported("u is not (batch, dim, len)".into())) };
    let n = shape(a)?[1];
    let bs = shape(input(3).unwrap())?;
    let groups = if bs.len() == 4 { bs[1] } else { 1 };
    let layout = ScanLayout::new(nb * nd, nl, n, g.ty(u).dtype.size()).filter(|_| n <= SSM_MAX_STATE);
    let (Some(lay), true) = (layout, n > 0 && groups > 0 && nd % groups == 0 && nb * nd * nl > 0) else {
        return Err(unsupported(format!(
            "state size {n} (at most {SSM_MAX_STATE}, split over at most 32 lanes of \
             {SSM_STATES_PER_THREAD}), {groups} groups"
        )));
    };
    // parameters: the present inputs in order, then out and (when asked) the last state
    let mut params = vec![];
    let mut slot = [None; 8];
    for (k, s) in slot.iter_mut().enumerate() {
        if let Some(v) = input(k) {
            let ty = g.ty(v);
            storage_type(ty.dtype)
                .filter(|_| ty.dtype.is_float())
                .ok_or_else(|| unsupported(format!("input {k} is {}", ty.dtype)))?;
            *s = Some(params.len());
            params.push(Param { value: v, dtype: ty.dtype, elements: numel(&shape(v)?), output: false });
        }
    }
    let outs: Vec<ValueId> = node.output_ids().collect();
    for (k, &o) in outs.iter().enumerate() {
        if !grp.outputs.contains(&o) && k > 0 {
            continue;
        }
        params.push(Param { value: o, dtype: g.ty(o).dtype, elements: numel(&shape(o)?), output: true });
    }
    let out_param = slot.iter().flatten().count();
    let last_param = (params.len() > out_param + 1).then_some(out_param + 1);
    let c = compute_type(g.ty(u).dtype);
    let softplus = matches!(node.attr("delta_softplus"), Some(Attr::Int(v)) if *v != 0);
    let ns = n / lay.parts;
    let mut b = Body::default();
    // input k's value at `i`, widened to the compute type
    let load = |b: &mut Body, k: usize, i: &str| load_param(b, &params, input(k).unwrap(), i, c).unwrap();
    let store = |b: &mut Body, k: usize, i: &str, v: &str| {
        let sv = stored(b, &params[k], v, c);
        b.stmt(format!("memref.store {sv}, %arg{k}[{i}] : {}", memref(&params[k])));
    };
    // f32 math on NVIDIA through the hardware's approximations (as mamba_ssm's kernel, built
    // with fast math): 2^x, log2(x) and 1/x, subnormals flushed to 0; exact forms for other
    // types and on AMD (whose math library inlines its own fast forms)
    let nvidia = !crate::target::current().is_amd();
    let approx = |b: &mut Body, op: &str, x: &str| -> String {
        if c == "f32" && nvidia {
            b.emit(format!("llvm.call_intrinsic \"llvm.nvvm.{op}.approx.ftz.f\"({x}) : (f32) -> f32"))
        } else {
            match op {
                "ex2" => b.emit(format!("math.exp2 {x} : {c}")),
                "lg2" => b.emit(format!("math.log2 {x} : {c}")),
                _ => {
                    let one = b.float(1.0, c);
                    b.emit(format!("arith.divf {one}, {x} : {c}"))
                }
            }
        }
    };
    let exp2 = |b: &mut Body, x: &str| approx(b, "ex2", x);
    let ix = |b: &mut Body, op: &str, x: &str, y: &str| b.emit(format!("arith.{op} {x}, {y} : index"));
    let fl = |b: &mut Body, op: &str, x: &str, y: &str| b.emit(format!("arith.{op} {x}, {y} : {c}"));

    // thread → (part, line, chunk)
    let tid = b.emit("gpu.thread_id x");
    let bid = b.emit("gpu.block_id x");
    let (cparts, cblines) = (b.index(lay.parts), b.index(lay.lines));
    let part = ix(&mut b, "remui", &tid, &cparts);
    let rest = ix(&mut b, "divui", &tid, &cparts);
    let bline = ix(&mut b, "remui", &rest, &cblines);
    let chunk = ix(&mut b, "divui", &rest, &cblines);
    let first = ix(&mut b, "muli", &bid, &cblines);
    let line = ix(&mut b, "addi", &first, &bline);
    let (lines_v, last_line) = (b.index(nb * nd), b.index(nb * nd - 1));
    let line_ok = b.emit(format!("arith.cmpi ult, {line}, {lines_v} : index"));
    // lines past the end compute on the last line (every thread reaches the barriers) and store nothing
    let line = ix(&mut b, "minui", &line, &last_line);
    let (dv, lv, nv) = (b.index(nd), b.index(nl), b.index(n));
    let (zero_i, last_t) = (b.index(0), b.index(nl - 1));
    let ch = ix(&mut b, "remui", &line, &dv);
    // B/C row base of (batch, group): ((batch·G + group)·n)·L
    let per_group = b.index(nd / groups);
    let bi = ix(&mut b, "divui", &line, &dv);
    let grp_i = ix(&mut b, "divui", &ch, &per_group);
    let gv = b.index(groups);
    let bg = ix(&mut b, "muli", &bi, &gv);
    let bg = ix(&mut b, "addi", &bg, &grp_i);
    let bg = ix(&mut b, "muli", &bg, &nv);
    let proj_base = ix(&mut b, "muli", &bg, &lv);
    let row_base = ix(&mut b, "muli", &line, &lv);
    // this thread's states: A·log2(e) (the decays are exp2), D, delta_bias
    let log2e = b.float(std::f64::consts::LOG2_E, c);
    let cns = b.index(ns);
    let my_first = ix(&mut b, "muli", &part, &cns);
    let a_base = ix(&mut b, "muli", &ch, &nv);
    let a_base = ix(&mut b, "addi", &a_base, &my_first);
    let a2: Vec<String> = (0..ns)
        .map(|s| {
            let off = b.index(s);
            let i = ix(&mut b, "addi", &a_base, &off);
            let av = load(&mut b, 2, &i);
            fl(&mut b, "mulf", &av, &log2e)
        })
        .collect();
    // B and C of state s at step t: proj_base + (first + s)·L + t
    let proj_rows: Vec<String> = (0..ns)
        .map(|s| {
            let off = b.index(s);
            let st = ix(&mut b, "addi", &my_first, &off);
            let r = ix(&mut b, "muli", &st, &lv);
            ix(&mut b, "addi", &r, &proj_base)
        })
        .collect();
    let d_val = slot[5].map(|_| load(&mut b, 5, &ch));
    let bias = slot[7].map(|_| load(&mut b, 7, &ch));
    let zero = b.float(0.0, c);
    let one = b.float(1.0, c);
    let twenty = b.float(20.0, c);
    let ln2 = b.float(std::f64::consts::LN_2, c);
    let neg_log2e = b.float(-std::f64::consts::LOG2_E, c);
    let clen = b.index(lay.chunk);
    let t0 = ix(&mut b, "muli", &chunk, &clen);
    let t1 = ix(&mut b, "addi", &t0, &clen);
    let cunroll = b.index(lay.unroll);

    // A group of `unroll` steps from `t`: per step, Δ (0 past the end), u, z (when asked), the
    // step clamped into the sequence, and whether it is inside. With vectors (the length a
    // multiple of the group), a group lies wholly inside or wholly past the end, and u, delta
    // and z arrive in one vector load each.
    struct Step {
        dt: String,
        u: String,
        z: Option<String>,
        tc: String,
        inside: String,
    }
    // the lanes of a vector of `unroll` steps stored as `st`, widened to the compute type
    let lanes = |b: &mut Body, v: &str, st: &str| -> Vec<String> {
        let w = lay.unroll;
        (0..w)
            .map(|j| {
                let x = b.emit(format!("vector.extract {v}[{j}] : {st} from vector<{w}x{st}>"));
                if st == c {
                    x
                } else {
                    b.emit(format!("arith.extf {x} : {st} to {c}"))
                }
            })
            .collect()
    };
    // the inputs a pass loads from device memory: u and delta (unless the stash holds them), z
    // when asked
    let vk = |with_z: bool, stashed: bool| {
        let mut ks = if stashed { vec![] } else { vec![0, 1] };
        ks.extend(with_z.then_some(6));
        ks
    };
    // vector mode: the raw vectors of inputs `ks` of the group from `t` (clamped into the
    // sequence)
    let vec_ty = |k: usize| {
        let p = &params[slot[k].unwrap()];
        format!("vector<{}x{}>", lay.unroll, storage_type(p.dtype).unwrap())
    };
    let row_vecs = |b: &mut Body, t: &str, ks: &[usize]| -> Vec<String> {
        let last_group = b.index(nl - lay.unroll);
        let tb = b.emit(format!("arith.minui {t}, {last_group} : index"));
        let i = b.emit(format!("arith.addi {row_base}, {tb} : index"));
        ks.iter()
            .map(|&k| {
                let p = &params[slot[k].unwrap()];
                b.emit(format!(
                    "vector.load %arg{}[{i}] {{alignment = {}}} : {}, {}",
                    slot[k].unwrap(),
                    lay.unroll * p.dtype.size(),
                    memref(p),
                    vec_ty(k)
                ))
            })
            .collect()
    };
    // The stash (workgroup memory `%wt`): Δ in [0, S), u in [S, 2S), S = lines·chunks·chunk.
    // A (line, chunk) `rest`'s group from `t` lies in sub-vectors of `sv` steps at
    // base + h·R·sv (h < unroll/sv, R = lines·chunks), base = (t − t0)·R + rest·sv: a warp's
    // sub-vectors are contiguous (no bank conflicts). Every part of a line shares its slots.
    let sv = [4, 2, 1].into_iter().find(|v| lay.unroll.is_multiple_of(*v)).unwrap();
    let (stash_rows, stash_half) = (lay.lines * lay.chunks, lay.lines * lay.chunks * lay.chunk);
    let stash_ty = format!("memref<{}x{c}, #gpu.address_space<workgroup>>", 2 * stash_half);
    let stash_base = |b: &mut Body, t: &str| -> String {
        let off = b.emit(format!("arith.subi {t}, {t0} : index"));
        let rows = b.index(stash_rows);
        let off = b.emit(format!("arith.muli {off}, {rows} : index"));
        let svi = b.index(sv);
        let mine = b.emit(format!("arith.muli {rest}, {svi} : index"));
        b.emit(format!("arith.addi {off}, {mine} : index"))
    };
    // the stash's sub-vector h of array `which` (0: Δ, 1: u) at `base`
    let stash_at = |b: &mut Body, base: &str, which: usize, h: usize| -> String {
        let off = b.index(which * stash_half + h * stash_rows * sv);
        b.emit(format!("arith.addi {base}, {off} : index"))
    };
    let stash_vec = format!("vector<{sv}x{c}>");
    let stash_align = sv * if c == "f64" { 8 } else { 4 };
    let stash_write = |b: &mut Body, base: &str, which: usize, vals: &[String]| {
        for (h, part) in vals.chunks(sv).enumerate() {
            let mut v = b.emit(format!("arith.constant dense<0.0> : {stash_vec}"));
            for (j, x) in part.iter().enumerate() {
                v = b.emit(format!("vector.insert {x}, {v} [{j}] : {c} into {stash_vec}"));
            }
            let at = stash_at(b, base, which, h);
            b.stmt(format!("vector.store {v}, %wt[{at}] {{alignment = {stash_align}}} : {stash_ty}, {stash_vec}"));
        }
    };
    let stash_read = |b: &mut Body, base: &str, which: usize| -> Vec<String> {
        (0..lay.unroll / sv)
            .flat_map(|h| {
                let at = stash_at(b, base, which, h);
                let v =
                    b.emit(format!("vector.load %wt[{at}] {{alignment = {stash_align}}} : {stash_ty}, {stash_vec}"));
                (0..sv).map(|j| b.emit(format!("vector.extract {v}[{j}] : {c} from {stash_vec}"))).collect::<Vec<_>>()
            })
            .collect()
    };
    // `pre`: the group's vectors of `vk(with_z, stashed)`, loaded one iteration ahead (vector
    // mode); `stashed`: the stash's base for the group, whose Δ (final) and u come from there
    let group_in = |b: &mut Body, t: &str, with_z: bool, pre: &[String], stashed: Option<&str>| -> Vec<Step> {
        let ks = vk(with_z, stashed.is_some());
        // per step: the step clamped into the sequence and whether it is inside
        let at: Vec<(String, String)> = if lay.vector {
            let inside = b.emit(format!("arith.cmpi ult, {t}, {lv} : index"));
            let last_group = b.index(nl - lay.unroll);
            let tb = b.emit(format!("arith.minui {t}, {last_group} : index"));
            (0..lay.unroll)
                .map(|j| {
                    let off = b.index(j);
                    (b.emit(format!("arith.addi {tb}, {off} : index")), inside.clone())
                })
                .collect()
        } else {
            (0..lay.unroll)
                .map(|j| {
                    let off = b.index(j);
                    let tj = b.emit(format!("arith.addi {t}, {off} : index"));
                    let inside = b.emit(format!("arith.cmpi ult, {tj}, {lv} : index"));
                    (b.emit(format!("arith.minui {tj}, {last_t} : index")), inside)
                })
                .collect()
        };
        // input k's values over the group, from its vector or one load a step
        let values = |b: &mut Body, k: usize| -> Vec<String> {
            match ks.iter().position(|&x| x == k) {
                Some(pos) if lay.vector => lanes(b, &pre[pos], storage_type(params[slot[k].unwrap()].dtype).unwrap()),
                _ => at
                    .iter()
                    .map(|(tc, _)| {
                        let i = b.emit(format!("arith.addi {row_base}, {tc} : index"));
                        load(b, k, &i)
                    })
                    .collect(),
            }
        };
        let (dts, us) = match stashed {
            Some(base) => (stash_read(b, base, 0), stash_read(b, base, 1)),
            None => {
                let us = values(b, 0);
                let dts = values(b, 1)
                    .into_iter()
                    .zip(&at)
                    .map(|(mut dt, (_, inside))| {
                        if let Some(bias) = &bias {
                            dt = b.emit(format!("arith.addf {dt}, {bias} : {c}"));
                        }
                        if softplus {
                            // PyTorch's softplus: x above 20 is kept, else log(1 + exp(x)) = ln 2 ·
                            // log2(1 + 2^(x·log2 e))
                            let x2 = b.emit(format!("arith.mulf {dt}, {log2e} : {c}"));
                            let e = approx(b, "ex2", &x2);
                            let e1 = b.emit(format!("arith.addf {one}, {e} : {c}"));
                            let l2 = approx(b, "lg2", &e1);
                            let l1p = b.emit(format!("arith.mulf {l2}, {ln2} : {c}"));
                            let big = b.emit(format!("arith.cmpf ogt, {dt}, {twenty} : {c}"));
                            dt = b.emit(format!("arith.select {big}, {dt}, {l1p} : {c}"));
                        }
                        b.emit(format!("arith.select {inside}, {dt}, {zero} : {c}"))
                    })
                    .collect();
                (dts, us)
            }
        };
        let zs = with_z.then(|| values(b, 6));
        at.into_iter()
            .enumerate()
            .zip(dts.into_iter().zip(us))
            .map(|((j, (tc, inside)), (dt, u))| Step { dt, u, z: zs.as_ref().map(|z| z[j].clone()), tc, inside })
            .collect()
    };
    // h ← exp2(Δ·A2)·h + Δ·u·B, for this thread's states; returns the new states
    // input k (B or C) of state s over the group's steps: one vector load (broadcast to the lanes
    // of a chunk) or one load per step
    let proj_run = |b: &mut Body, k: usize, s: usize, steps: &[Step]| -> Vec<String> {
        if lay.vector {
            let p = &params[slot[k].unwrap()];
            let st = storage_type(p.dtype).unwrap();
            let w = lay.unroll;
            let at = b.emit(format!("arith.addi {}, {} : index", proj_rows[s], steps[0].tc));
            let v = b.emit(format!(
                "vector.load %arg{}[{at}] {{alignment = {}}} : {}, vector<{w}x{st}>",
                slot[k].unwrap(),
                w * p.dtype.size(),
                memref(p)
            ));
            lanes(b, &v, st)
        } else {
            steps
                .iter()
                .map(|st| {
                    let pi = b.emit(format!("arith.addi {}, {} : index", proj_rows[s], st.tc));
                    load(b, k, &pi)
                })
                .collect()
        }
    };
    // the group's steps, one state at a time (the state's B and C for the whole group, then its
    // recurrence): h ← exp2(Δ·A2)·h + Δ·u·B, and with `with_y` each step's Σ C·h over this
    // thread's states. Returns the new states and the partial outputs.
    let advance = |b: &mut Body, h: &[String], steps: &[Step], with_y: bool| -> (Vec<String>, Vec<String>) {
        let du: Vec<String> = steps.iter().map(|st| b.emit(format!("arith.mulf {}, {} : {c}", st.dt, st.u))).collect();
        let mut ys = vec![zero.clone(); if with_y { steps.len() } else { 0 }];
        let mut next = vec![];
        for s in 0..ns {
            let bs = proj_run(b, 3, s, steps);
            let cs = if with_y { proj_run(b, 4, s, steps) } else { vec![] };
            let mut hs = h[s].clone();
            for (j, st) in steps.iter().enumerate() {
                let x = b.emit(format!("arith.mulf {}, {} : {c}", st.dt, a2[s]));
                let decay = exp2(b, &x);
                let kept = b.emit(format!("arith.mulf {decay}, {hs} : {c}"));
                hs = b.emit(format!("math.fma {}, {}, {kept} : {c}", du[j], bs[j]));
                if with_y {
                    ys[j] = b.emit(format!("math.fma {hs}, {}, {} : {c}", cs[j], ys[j]));
                }
            }
            next.push(hs);
        }
        (next, ys)
    };
    let types = vec![c; ns].join(", ");
    let names = |pfx: &str, k: usize| (0..k).map(|s| format!("%{pfx}{s}")).collect::<Vec<_>>();

    // Opens a pass's loop over the thread's chunk (`%var`) carrying `inits` (of types `ty`) and,
    // with vectors, the group's u/delta(/z) vectors loaded one group ahead (`%{tag}vJ`): the
    // next group's vectors are on their way while this one computes. Returns the loop's results,
    // this group's vectors, the next group's, and the carried types.
    let open_pass = |b: &mut Body, var: &str, tag: &str, mut inits: Vec<String>, mut ty: String, ks: &[usize]| {
        if lay.vector {
            for (j, (v, &k)) in row_vecs(b, &t0, ks).iter().zip(ks).enumerate() {
                inits.push(format!("%{tag}v{j} = {v}"));
                ty += &format!(", {}", vec_ty(k));
            }
        }
        let res = b.emit_multi(
            inits.len(),
            format!("scf.for %{var} = {t0} to {t1} step {cunroll} iter_args({}) -> ({ty}) {{", inits.join(", ")),
        );
        let (pre, ahead) = if lay.vector {
            let next_t = b.emit(format!("arith.addi %{var}, {cunroll} : index"));
            (names(&format!("{tag}v"), ks.len()), row_vecs(b, &next_t, ks))
        } else {
            (vec![], vec![])
        };
        (res, pre, ahead, ty)
    };

    // the incoming state of this thread's chunk
    let h_in: Vec<String> = if lay.chunks == 1 {
        vec![zero.clone(); ns]
    } else {
        // pass 1: each chunk from a zero state; its end state and ΣΔ
        let inits: Vec<String> = names("p", ns + 1).iter().map(|v| format!("{v} = {zero}")).collect();
        let (ends, pre, ahead, carried_ty) =
            open_pass(&mut b, "t1", "q", inits, format!("{types}, {c}"), &vk(false, false));
        let mut h = names("p", ns);
        let mut sum = format!("%p{ns}");
        let steps = group_in(&mut b, "%t1", false, &pre, None);
        if lay.stash {
            // Δ and u for pass 2
            let base = stash_base(&mut b, "%t1");
            stash_write(&mut b, &base, 0, &steps.iter().map(|st| st.dt.clone()).collect::<Vec<_>>());
            stash_write(&mut b, &base, 1, &steps.iter().map(|st| st.u.clone()).collect::<Vec<_>>());
        }
        for st in &steps {
            sum = fl(&mut b, "addf", &sum, &st.dt);
        }
        h = advance(&mut b, &h, &steps, false).0;
        let yielded: Vec<String> = h.iter().cloned().chain([sum]).chain(ahead).collect();
        b.stmt(format!("scf.yield {} : {carried_ty}", yielded.join(", ")));
        b.stmt("}");
        // workgroup memory: per (chunk, line) n states then ΣΔ
        let wg = wg_type(lay, n, c);
        let stride = b.index(n + 1);
        let slot_of = |b: &mut Body, k: &str, l: &str| {
            let s = b.emit(format!("arith.muli {k}, {cblines} : index"));
            let s = b.emit(format!("arith.addi {s}, {l} : index"));
            b.emit(format!("arith.muli {s}, {stride} : index"))
        };
        let base = slot_of(&mut b, &chunk, &bline);
        let mine = ix(&mut b, "addi", &base, &my_first);
        for s in 0..ns {
            let off = b.index(s);
            let at = ix(&mut b, "addi", &mine, &off);
            b.stmt(format!("memref.store {ends}#{s}, %ws[{at}] : {wg}"));
        }
        // every part holds the same ΣΔ
        let sum_at = ix(&mut b, "addi", &base, &nv);
        b.stmt(format!("memref.store {ends}#{ns}, %ws[{sum_at}] : {wg}"));
        b.stmt("gpu.barrier");
        // one thread per (line, state) carries the state across the chunks in order
        let (work, threads) = (b.index(lay.lines * n), b.index(lay.threads()));
        b.stmt(format!("scf.for %j = {tid} to {work} step {threads} {{"));
        let jl = ix(&mut b, "divui", "%j", &nv);
        let js = ix(&mut b, "remui", "%j", &nv);
        let jline = ix(&mut b, "addi", &first, &jl);
        let jline = ix(&mut b, "minui", &jline, &last_line);
        let jch = ix(&mut b, "remui", &jline, &dv);
        let ja = ix(&mut b, "muli", &jch, &nv);
        let ja = ix(&mut b, "addi", &ja, &js);
        let av = load(&mut b, 2, &ja);
        let av = fl(&mut b, "mulf", &av, &log2e);
        let (cchunks, one_i) = (b.index(lay.chunks), b.index(1));
        b.stmt(format!(
            "%carried = scf.for %k = {zero_i} to {cchunks} step {one_i} iter_args(%carry = {zero}) -> ({c}) {{"
        ));
        let kb = slot_of(&mut b, "%k", &jl);
        let at = ix(&mut b, "addi", &kb, &js);
        let end = b.emit(format!("memref.load %ws[{at}] : {wg}"));
        let sat = ix(&mut b, "addi", &kb, &nv);
        let sum = b.emit(format!("memref.load %ws[{sat}] : {wg}"));
        b.stmt(format!("memref.store %carry, %ws[{at}] : {wg}"));
        let x = fl(&mut b, "mulf", &sum, &av);
        let decay = exp2(&mut b, &x);
        let next = b.emit(format!("math.fma {decay}, %carry, {end} : {c}"));
        b.stmt(format!("scf.yield {next} : {c}"));
        b.stmt("}");
        b.stmt("}");
        b.stmt("gpu.barrier");
        (0..ns)
            .map(|s| {
                let off = b.index(s);
                let at = ix(&mut b, "addi", &mine, &off);
                b.emit(format!("memref.load %ws[{at}] : {wg}"))
            })
            .collect()
    };

    // pass 2 (the only pass with one chunk): from the incoming state, writing the outputs
    let inits: Vec<String> = names("h", ns).iter().zip(&h_in).map(|(v, i)| format!("{v} = {i}")).collect();
    let with_z = slot[6].is_some();
    let (finals, pre, ahead, carried_ty) = open_pass(&mut b, "t2", "r", inits, types.clone(), &vk(with_z, lay.stash));
    let is_first_part = b.emit(format!("arith.cmpi eq, {part}, {zero_i} : index"));
    let writer = b.emit(format!("arith.andi {line_ok}, {is_first_part} : i1"));
    let width = b.emit("arith.constant 32 : i32");
    let mut h = names("h", ns);
    let mut ys = vec![];
    let stashed = lay.stash.then(|| stash_base(&mut b, "%t2"));
    let steps = group_in(&mut b, "%t2", with_z, &pre, stashed.as_deref());
    let (next, partial) = advance(&mut b, &h, &steps, true);
    h = next;
    for (st, mut y) in steps.iter().zip(partial) {
        // the parts' partial sums meet on every lane of the line
        let mut off = 1;
        while off < lay.parts {
            let o = b.emit(format!("arith.constant {off} : i32"));
            let other = b.emit_multi(2, format!("gpu.shuffle xor {y}, {o}, {width} : {c}"));
            y = fl(&mut b, "addf", &y, &format!("{other}#0"));
            off *= 2;
        }
        if let Some(dv) = &d_val {
            y = b.emit(format!("math.fma {dv}, {}, {y} : {c}", st.u));
        }
        if let Some(z) = &st.z {
            // silu(z) = z / (1 + 2^(−z·log2 e))
            let nz = b.emit(format!("arith.mulf {z}, {neg_log2e} : {c}"));
            let e = exp2(&mut b, &nz);
            let den = fl(&mut b, "addf", &one, &e);
            let inv = approx(&mut b, "rcp", &den);
            let silu = fl(&mut b, "mulf", z, &inv);
            y = fl(&mut b, "mulf", &y, &silu);
        }
        ys.push(y);
    }
    let op = &params[out_param];
    if lay.vector {
        // one vector store of the group, which lies wholly inside or wholly past the end
        let write = b.emit(format!("arith.andi {writer}, {} : i1", steps[0].inside));
        b.stmt(format!("scf.if {write} {{"));
        let st = storage_type(op.dtype).unwrap();
        let w = lay.unroll;
        let mut v = b.emit(format!("arith.constant dense<0.0> : vector<{w}x{st}>"));
        for (j, y) in ys.iter().enumerate() {
            let x = stored(&mut b, op, y, c);
            v = b.emit(format!("vector.insert {x}, {v} [{j}] : {st} into vector<{w}x{st}>"));
        }
        let i = ix(&mut b, "addi", &row_base, &steps[0].tc);
        b.stmt(format!(
            "vector.store {v}, %arg{out_param}[{i}] {{alignment = {}}} : {}, vector<{w}x{st}>",
            w * op.dtype.size(),
            memref(op)
        ));
        b.stmt("}");
    } else {
        for (st, y) in steps.iter().zip(&ys) {
            let write = b.emit(format!("arith.andi {writer}, {} : i1", st.inside));
            b.stmt(format!("scf.if {write} {{"));
            let i = ix(&mut b, "addi", &row_base, &st.tc);
            store(&mut b, out_param, &i, y);
            b.stmt("}");
        }
    }
    let yielded: Vec<String> = h.iter().cloned().chain(ahead).collect();
    b.stmt(format!("scf.yield {} : {carried_ty}", yielded.join(", ")));
    b.stmt("}");
    if let Some(k) = last_param {
        // the last chunk's end state is the line's
        let last_chunk = b.index(lay.chunks - 1);
        let is_last = b.emit(format!("arith.cmpi eq, {chunk}, {last_chunk} : index"));
        let write = b.emit(format!("arith.andi {line_ok}, {is_last} : i1"));
        b.stmt(format!("scf.if {write} {{"));
        let base = ix(&mut b, "muli", &line, &nv);
        let base = ix(&mut b, "addi", &base, &my_first);
        for s in 0..ns {
            let off = b.index(s);
            let at = ix(&mut b, "addi", &base, &off);
            store(&mut b, k, &at, &format!("{finals}#{s}"));
        }
        b.stmt("}");
    }
    let shared = (lay.chunks > 1).then(|| {
        let carry = format!("%ws : {}", wg_type(lay, n, c));
        if lay.stash {
            format!("{carry}, %wt : {stash_ty}")
        } else {
            carry
        }
    });
    let grid = [(nb * nd).div_ceil(lay.lines) as u32, 1, 1];
    let min_threads = ssm_knob("XFORGE_SSM_MIN_THREADS", SSM_MIN_THREADS);
    let min_blocks = (min_threads / lay.threads()).max(1) as u32;
    Ok(finish_bounded(params, &b, shared.as_deref(), grid, [lay.threads() as u32, 1, 1], Some(min_blocks)))
}

/// The workgroup memory of a chunked scan: per (chunk, line), n end states and ΣΔ.
fn wg_type(lay: ScanLayout, n: usize, c: &str) -> String {
    format!("memref<{}x{c}, #gpu.address_space<workgroup>>", lay.chunks * lay.lines * (n + 1))
}

#[cfg(test)]
mod tests {
    use super::ScanLayout;
    use crate::knobs::{SSM_BLOCK, SSM_FILL_THREADS, SSM_MIN_CHUNK, SSM_ONE_PASS_THREADS, SSM_WORKGROUP_BYTES};

    #[test]
    fn few_lines_are_chunked_over_the_sequence_until_the_gpu_fills() {
        // Mamba-1.4B at batch 1: 1536 lines need 64 chunks of 32 steps, four lines a block (384
        // blocks of 256 threads), whose Δ and u (64 KiB) do not fit the stash
        let l = ScanLayout::new(1536, 2048, 16, 4).unwrap();
        assert_eq!(l, ScanLayout { parts: 1, chunks: 64, chunk: 32, lines: 4, unroll: 8, vector: true, stash: false });
        assert_eq!(l.workgroup_bytes(16, 4), 64 * 4 * 17 * 4);
        // 768 lines: two lines a block, whose stash (32 KiB) and carry (8.5 KiB) fit
        let half = ScanLayout::new(768, 2048, 16, 4).unwrap();
        assert_eq!((half.chunks, half.lines, half.stash), (64, 2, true));
        assert_eq!(half.workgroup_bytes(16, 4), (64 * 2 * 17 + 2 * 2 * 64 * 32) * 4);
        assert_eq!(ScanLayout::new(1536, 2048, 16, 2).unwrap(), l);
        // batch 16 (24576 lines) and batch 8 of 5120 channels: one pass; batch 16 in bf16 on two
        // lanes a line, 8 steps a vector; batch 8 in bf16 whole states, 4 steps a vector
        let b16 = ScanLayout::new(16 * 1536, 2048, 16, 4).unwrap();
        assert_eq!((b16.parts, b16.chunks, b16.unroll), (1, 1, 8));
        let b16 = ScanLayout::new(16 * 1536, 2048, 16, 2).unwrap();
        assert_eq!((b16.parts, b16.chunks, b16.unroll), (2, 1, 8));
        let big = ScanLayout::new(8 * 5120, 2048, 16, 2).unwrap();
        assert_eq!((big.parts, big.chunks, big.chunk, big.unroll), (1, 1, 2048, 4));
        // blocks of 128 lines, 320 of them (256 lines would leave a 132-multiprocessor GPU
        // with 160 blocks)
        assert_eq!(big.lines, 128);
        for (lines, len) in [(1, 100_000), (7, 777), (1536, 2048), (40960, 2048), (3, 31)] {
            let l = ScanLayout::new(lines, len, 16, 4).unwrap();
            // chunks cover the sequence with SSM_MIN_CHUNK steps or more each, and stop
            // doubling once the threads fill the GPU
            assert!(l.chunks * l.chunk >= len && l.chunk.is_multiple_of(l.unroll), "{l:?}");
            assert!(l.chunks == 1 || l.chunk >= SSM_MIN_CHUNK, "{l:?}");
            assert!(l.chunks == 1 || lines * l.chunks / 2 < SSM_FILL_THREADS, "{l:?}");
            assert!(l.chunks == 1 || lines < SSM_ONE_PASS_THREADS, "{l:?}");
            assert!(l.threads() <= SSM_BLOCK, "{l:?}");
            // a stash only in chunked layouts, and only where it fits
            assert!(!l.stash || (l.chunks > 1 && l.workgroup_bytes(16, 4) <= SSM_WORKGROUP_BYTES), "{l:?}");
        }
        // 7 lines of 777 steps: 16 chunks of 50 steps, two lines a block, stashed (12.5 KiB)
        let short = ScanLayout::new(7, 777, 16, 4).unwrap();
        assert_eq!((short.chunks, short.chunk, short.lines, short.stash), (16, 50, 2, true));
        // one line of 100000 steps: 256 chunks of 392 steps, whose stash (800 KiB) does not fit
        let long = ScanLayout::new(1, 100_000, 16, 4).unwrap();
        assert_eq!((long.chunks, long.chunk, long.stash), (256, 392, false));
    }

    #[test]
    fn large_states_split_over_lanes_and_odd_ones_are_refused() {
        let l = ScanLayout::new(4, 66, 256, 4).unwrap();
        assert_eq!((l.parts, l.unroll, l.vector), (8, 1, false));
        assert_eq!(ScanLayout::new(4, 64, 64, 4).unwrap().parts, 2);
        assert_eq!(ScanLayout::new(4, 64, 48, 4).unwrap().parts, 2);
        assert_eq!(ScanLayout::new(4, 64, 5, 4).unwrap().parts, 1);
        // 33 states cannot be cut into equal slices of at most 32
        assert_eq!(ScanLayout::new(4, 64, 33, 4), None);
    }
}
