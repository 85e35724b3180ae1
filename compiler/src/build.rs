//! The compiler's last step: a fused graph → an artifact (`.xfa`). Kernels for every group that
//! is not a library call, one PTX module for them, the weights they read, one arena for every
//! other buffer (placed by liveness over the groups in order) and the steps of a run.
use crate::library::{self, LibraryPlan};
use std::collections::HashMap;
use xforge_ir::{Graph, ValueId};
use xforge_kernel::Kernel;
use xforge_passes::fusion::{Fused, Schedule};
use xforge_passes::memory::{place, Lifetime};
use xforge_runtime::{
    Arg, Artifact, ArtifactHeader, BatchDim, Binding, KernelImage, LibraryCall, MemoryPlan, Plan, Step, StepCost,
};

/// Buffers start on this boundary in the arena and in the weights.
pub const ALIGN: u64 = 256;

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("{0} of the model's groups have no kernel template yet:\n  {1}")]
    Missing(usize, String),
    #[error("value '{0}' has no static shape (give --shape for the symbolic dims)")]
    Symbolic(String),
    #[error(transparent)]
    Codegen(#[from] xforge_codegen_ptx::CodegenError),
    #[error(transparent)]
    CodegenAmd(#[from] xforge_codegen_hip::CodegenError),
    /// The plan's memory is beyond any device (a shape bound to 2^40, say).
    #[error(
        "the plan needs {arena} bytes of device memory (value '{value}' alone {bytes}), over the limit of {limit}"
    )]
    TooLarge { arena: u64, value: String, bytes: u64, limit: u64 },
}

/// The most device memory a plan's arena may take (more than any GPU has: a larger plan comes
/// from a shape nobody can run, and is refused at compile time).
pub const MAX_ARENA_BYTES: u64 = 1 << 39;

/// FNV-1a (64-bit) of the model's bytes, as hex: the artifact's record of its source.
pub fn digest(bytes: &[u8]) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("{h:016x}")
}

/// The buffer a value lives in: views (free groups) share their source's buffer.
fn root(g: &Graph, fused: &Fused, producer: &HashMap<ValueId, usize>, v: ValueId) -> ValueId {
    let mut v = v;
    while let Some(&n) = producer.get(&v) {
        let node = &g.nodes[n];
        let in_view_group = fused.partition.groups[fused.partition.group_of[n]].schedule == Schedule::View;
        match node.inputs.first().copied().flatten() {
            Some(x) if in_view_group => v = x,
            _ => break,
        }
    }
    v
}

fn bytes_of(g: &Graph, v: ValueId) -> Result<u64, BuildError> {
    let ty = g.ty(v);
    let s = ty.static_shape().ok_or_else(|| BuildError::Symbolic(g.name_of(v).to_string()))?;
    // saturating: a shape past u64 is refused by the arena limit, not wrapped into a small one
    Ok(s.iter().chain([&ty.dtype.size()]).fold(1u64, |a, &d| a.saturating_mul(d as u64)))
}

/// For a value a `Prefix` node makes (the valid entries of a padded result): (the padded data,
/// the length value).
fn valid_length(g: &Graph, producer: &HashMap<ValueId, usize>, v: ValueId) -> Option<(ValueId, ValueId)> {
    let n = &g.nodes[*producer.get(&v)?];
    if n.op != xforge_ir::Op::Prefix {
        return None;
    }
    Some((n.inputs.first().copied().flatten()?, n.inputs.get(1).copied().flatten()?))
}

/// The groups in an order that runs every producer before its readers: group numbers follow
/// the nodes that started them, and a later node may have joined an earlier group. Among the
/// groups that are ready, the lowest number runs first.
pub fn run_order(fused: &Fused, producer: &HashMap<ValueId, usize>) -> Vec<usize> {
    let groups = &fused.partition.groups;
    let group_of = &fused.partition.group_of;
    let mut waits_on: Vec<std::collections::BTreeSet<usize>> = vec![Default::default(); groups.len()];
    for (i, grp) in groups.iter().enumerate() {
        for &n in &grp.nodes {
            for v in fused.graph.node_reads(&fused.graph.nodes[n]) {
                if let Some(&p) = producer.get(&v) {
                    if group_of[p] != i {
                        waits_on[i].insert(group_of[p]);
                    }
                }
            }
        }
    }
    let mut done = vec![false; groups.len()];
    let mut order = Vec::with_capacity(groups.len());
    // the partition never makes two groups depend on each other, so each sweep adds one
    while order.len() < groups.len() {
        let next = (0..groups.len()).find(|&i| !done[i] && waits_on[i].iter().all(|&d| done[d]));
        let Some(i) = next else { unreachable!("the partition's groups form a cycle") };
        done[i] = true;
        order.push(i);
    }
    order
}

/// Cuts every generated GEMM whose epilogue cuBLASLt runs in part: the GEMM with that part as
/// a library call, the rest a kernel of its own (cuBLASLt's GEMM plus one elementwise pass beats
/// the generated GEMM). A cut is made only when both halves have a runner. Returns the count.
pub fn split_library_epilogues(fused: &mut Fused, keep: &std::collections::HashSet<usize>) -> usize {
    let mut n = 0;
    // backwards: a split shifts only the groups after it, so `keep`'s indices stay valid
    for i in (0..fused.partition.groups.len()).rev() {
        if keep.contains(&i) {
            continue;
        }
        let Some((head, tail)) =
            xforge_passes::fusion::partition::split_library_epilogue(&fused.graph, &fused.partition.groups[i])
        else {
            continue;
        };
        let lib = library::gemm(&fused.graph, &head);
        let kernel = xforge_kernel::generate(&fused.graph, &tail, i + 1);
        tracing::debug!(
            "group {i}: library {:?}, tail kernel {:?}",
            lib.as_ref().err(),
            kernel.as_ref().err().map(|e| e.to_string())
        );
        if lib.is_ok() && kernel.is_ok() {
            fused.partition.split(i, head, tail);
            pull_tail_into_reader(fused, i + 1);
            n += 1;
        }
    }
    n
}

/// A library GEMM's cut-off tail that only moves data (a merged gate-and-up projection's
/// Split) and feeds one elementwise group joins it when the template then runs that group:
/// its readers pull each element from the GEMM's output where it lies (one kernel, and no
/// copy of the halves). Group `t` is the tail; the groups after it keep their count.
fn pull_tail_into_reader(fused: &mut Fused, t: usize) {
    let g = &fused.graph;
    let tail = &fused.partition.groups[t];
    if tail.schedule != Schedule::Injective || !tail.nodes.iter().all(|&k| g.nodes[k].op == xforge_ir::Op::Split) {
        return;
    }
    if tail.outputs.iter().any(|o| g.outputs.contains(o)) {
        return;
    }
    let readers: std::collections::BTreeSet<usize> = g
        .nodes
        .iter()
        .enumerate()
        .filter(|(_, n)| g.node_reads(n).iter().any(|v| tail.outputs.contains(v)))
        .map(|(k, _)| fused.partition.group_of[k])
        .collect();
    let [r] = readers.into_iter().collect::<Vec<_>>()[..] else { return };
    if r <= t || !matches!(fused.partition.groups[r].schedule, Schedule::Elementwise | Schedule::Injective) {
        return;
    }
    let merged = fused.partition.merged(g, t, r, Schedule::Injective);
    match xforge_kernel::generate(g, &merged, r) {
        Ok(_) => fused.partition.merge_into(t, r, merged),
        Err(e) => tracing::debug!("group {t}: the tail stays a kernel of its own: {e}"),
    }
}

/// Whether every value a group writes is empty (zero elements): it needs no step.
pub fn writes_nothing(g: &Graph, grp: &xforge_passes::fusion::FusionGroup) -> bool {
    !grp.outputs.is_empty()
        && grp.outputs.iter().all(|&o| g.ty(o).static_shape().is_some_and(|s| xforge_ir::tensor::numel(&s) == 0))
}

/// The groups that run as vendor-library calls, by group index, and the errors of the library
/// groups that neither a library nor a template can run. A GEMM the library cannot express
/// exactly (or every GEMM, with `generated_gemm`) runs as a generated kernel instead.
pub fn library_plans(fused: &Fused, generated_gemm: bool) -> (HashMap<usize, LibraryPlan>, Vec<String>) {
    let g = &fused.graph;
    let mut plans = HashMap::new();
    let mut missing = vec![];
    let libraries = xforge_kernel::target::current().libraries;
    for (i, grp) in fused.partition.groups.iter().enumerate() {
        let anchor = &g.nodes[grp.nodes[0]];
        if writes_nothing(g, grp) {
            continue;
        }
        match grp.schedule {
            Schedule::LibraryGemm if !generated_gemm && libraries => match library::gemm(g, grp) {
                Ok(p) => {
                    plans.insert(i, p);
                }
                Err(why) => tracing::info!("group {i} ({} '{}'): generated GEMM: {why}", anchor.op, anchor.name),
            },
            Schedule::LibraryConv if !libraries => missing.push(format!(
                "group {i} ({} '{}'): {} has no convolution library and the group was not cut into generic kernels",
                anchor.op,
                anchor.name,
                xforge_kernel::target::current().chip
            )),
            Schedule::LibraryConv => match library::conv(g, grp) {
                Ok(p) => {
                    plans.insert(i, p);
                }
                Err(why) => missing.push(format!(
                    "group {i} ({} '{}'): cuDNN cannot run it ({why}) and there is no generated convolution template",
                    anchor.op, anchor.name
                )),
            },
            _ => {}
        }
    }
    (plans, missing)
}

/// The generated kernels of a fused graph, by group index, and the errors of the groups that
/// have no template; views and library calls need no kernel.
pub fn generate_kernels(fused: &Fused, library: &HashMap<usize, LibraryPlan>) -> (Vec<(usize, Kernel)>, Vec<String>) {
    let mut kernels = vec![];
    let mut missing = vec![];
    for (i, grp) in fused.partition.groups.iter().enumerate() {
        if grp.schedule == Schedule::View || library.contains_key(&i) || writes_nothing(&fused.graph, grp) {
            continue;
        }
        if grp.schedule == Schedule::LibraryConv {
            continue; // reported by `library_plans`
        }
        match xforge_kernel::generate(&fused.graph, grp, i) {
            Ok(k) => kernels.push((i, k)),
            Err(e) => missing.push(e.to_string()),
        }
    }
    (kernels, missing)
}

/// The kernels of an artifact, each once (by name: identical groups give identical kernels).
#[derive(Default)]
struct KernelSet {
    kernels: Vec<Kernel>,
}

impl KernelSet {
    /// The kernel's index in the artifact, adding it if it is new.
    fn add(&mut self, k: &Kernel) -> usize {
        match self.kernels.iter().position(|x| x.name == k.name) {
            Some(i) => i,
            None => {
                self.kernels.push(k.clone());
                self.kernels.len() - 1
            }
        }
    }
}

/// The weights section: each distinct byte string once, on ALIGN boundaries (buckets and
/// equal constants share their bytes).
#[derive(Default)]
struct WeightPool {
    bytes: Vec<u8>,
    /// (length, digest of the ends) → offsets of the strings with that key.
    seen: HashMap<(usize, u64), Vec<u64>>,
}

impl WeightPool {
    fn put(&mut self, data: &[u8]) -> u64 {
        use std::hash::{Hash, Hasher};
        // an empty tensor still gets bytes: every argument points inside the section
        let data = if data.is_empty() { &[0u8; 16][..] } else { data };
        let mut h = std::collections::hash_map::DefaultHasher::new();
        data[..data.len().min(256)].hash(&mut h);
        data[data.len().saturating_sub(256)..].hash(&mut h);
        let key = (data.len(), h.finish());
        let found = self
            .seen
            .get(&key)
            .and_then(|offs| offs.iter().copied().find(|&o| &self.bytes[o as usize..o as usize + data.len()] == data));
        if let Some(o) = found {
            return o;
        }
        self.bytes.resize((self.bytes.len() as u64).div_ceil(ALIGN) as usize * ALIGN as usize, 0);
        let at = self.bytes.len() as u64;
        self.bytes.extend_from_slice(data);
        self.seen.entry(key).or_default().push(at);
        at
    }
}

/// A symbolic batch dim compiled for several sizes: its name, the axis of each graph input
/// that holds it, and the outputs' batch axes where every node keeps rows apart (else why not).
pub struct BatchSpec {
    pub symbol: String,
    pub input_axes: Vec<Option<usize>>,
    pub output_axes: Result<Vec<Option<usize>>, String>,
}

/// Builds an artifact from one fused graph per batch-size bucket (`buckets`: batch, graph; a
/// single bucket of batch 0 and no `batch` for a static model). The buckets share the kernels
/// and the weights. With `generated_gemm`, GEMM groups a vendor library would run get generated
/// kernels too.
pub fn build(
    buckets: &[(u64, &Fused)],
    batch: Option<&BatchSpec>,
    target: &str,
    model_digest: String,
    generated_gemm: bool,
    precision: &str,
) -> Result<Artifact, BuildError> {
    let mut kernels = KernelSet::default();
    let mut weights = WeightPool::default();
    let mut plans = vec![];
    for &(b, fused) in buckets {
        let (memory, steps, costs) = plan(fused, generated_gemm, &mut kernels, &mut weights)?;
        let mut memory = MemoryPlan { batch: b, ..memory };
        if let Some(spec) = batch {
            for (bd, a) in memory.inputs.iter_mut().zip(&spec.input_axes) {
                bd.batch_axis = a.map(|a| a as u32);
            }
            if let Ok(axes) = &spec.output_axes {
                for (bd, a) in memory.outputs.iter_mut().zip(axes) {
                    bd.batch_axis = a.map(|a| a as u32);
                }
            }
        }
        plans.push(Plan { memory, steps, costs });
    }
    let kernels = kernels.kernels;
    let (ptx, code_object) = if xforge_codegen_hip::CHIPS.contains(&target) {
        (String::new(), xforge_codegen_hip::compile(&kernels, target)?)
    } else if kernels.is_empty() {
        (String::new(), vec![])
    } else {
        (xforge_codegen_ptx::compile(&kernels, target)?, vec![])
    };
    let names = kernels.iter().map(|k| k.name.clone()).collect();
    Ok(Artifact {
        header: ArtifactHeader {
            compiler_version: env!("CARGO_PKG_VERSION").into(),
            target: target.into(),
            precision: precision.into(),
            options: [
                ("tf32".to_string(), "off".to_string()),
                ("generated_gemm".into(), if generated_gemm { "on" } else { "off" }.into()),
            ]
            .into_iter()
            .chain(knob_overrides())
            .collect(),
            model_digest,
            batch: batch.map(|s| BatchDim { symbol: s.symbol.clone(), padding: s.output_axes.clone().map(|_| ()) }),
        },
        kernels: KernelImage { ptx, code_object, names },
        weights: weights.bytes,
        plans,
    })
}

/// One bucket's memory plan (batch 0, no batch axes yet) and steps; its kernels and weights go
/// to the artifact's shared sets.
fn plan(
    fused: &Fused,
    generated_gemm: bool,
    kernels: &mut KernelSet,
    weights: &mut WeightPool,
) -> Result<(MemoryPlan, Vec<Step>, Vec<StepCost>), BuildError> {
    let g = &fused.graph;
    let groups = &fused.partition.groups;
    let (library, mut missing) = library_plans(fused, generated_gemm);
    let (generated, missing_kernels) = generate_kernels(fused, &library);
    missing.extend(missing_kernels);
    if !missing.is_empty() {
        return Err(BuildError::Missing(missing.len(), missing.join("\n  ")));
    }
    // per generated group: its kernel (whose parameters are the group's own values: identical
    // groups share the code, not the buffers) and the kernel's index in the artifact
    let kernel_of: HashMap<usize, (usize, Kernel)> =
        generated.into_iter().map(|(i, k)| (i, (kernels.add(&k), k))).collect();
    // per convolution group: its bare convolution's epilogue (a kernel, and the call's buffer
    // each kernel parameter takes)
    let mut epilogue_of: HashMap<usize, (usize, Vec<i64>)> = HashMap::new();
    let mut convs: Vec<_> = library
        .iter()
        .filter_map(|(i, p)| match &p.desc {
            xforge_runtime::LibraryDesc::Conv(d) => Some((*i, d)),
            _ => None,
        })
        .collect();
    convs.sort_by_key(|(i, _)| *i);
    // convolutions with one descriptor share one epilogue (generated once)
    let mut made: HashMap<String, Option<(usize, Vec<i64>)>> = HashMap::new();
    for (i, d) in convs {
        let key = format!("{d:?}");
        if !made.contains_key(&key) {
            let e = library::conv_epilogue(d)
                .map_err(|why| BuildError::Missing(1, format!("group {i}'s convolution epilogue: {why}")))?;
            made.insert(key.clone(), e.map(|(k, roles)| (kernels.add(&k), roles)));
        }
        if let Some(e) = &made[&key] {
            epilogue_of.insert(i, e.clone());
        }
    }
    let mut producer: HashMap<ValueId, usize> = HashMap::new();
    for (n, node) in g.nodes.iter().enumerate() {
        for o in node.output_ids() {
            producer.insert(o, n);
        }
    }
    let order = run_order(fused, &producer);
    let (offset, arena_bytes) = place_buffers(fused, &producer, &order)?;
    let mut weight_at: HashMap<ValueId, u64> = HashMap::new();
    let mut arg = |v: ValueId, weights: &mut WeightPool| -> Arg {
        if let Some(t) = g.weights.get(&v) {
            Arg::Weight(*weight_at.entry(v).or_insert_with(|| weights.put(&t.data().to_le_bytes())))
        } else {
            Arg::Arena(offset[&root(g, fused, &producer, v)])
        }
    };
    let mut steps = vec![];
    let mut costs = vec![];
    for &i in &order {
        let grp = &groups[i];
        match grp.schedule {
            Schedule::View => {}
            _ if writes_nothing(g, grp) => {}
            _ if library.contains_key(&i) => {
                let plan = &library[&i];
                let mut args = vec![];
                for (k, &v) in plan.buffers.iter().enumerate() {
                    args.push(match &plan.relaid {
                        // a weight in the library's layout: its own copy
                        Some((r, bytes)) if *r == k => Arg::Weight(weights.put(bytes)),
                        _ => arg(v, weights),
                    });
                }
                let mut params = plan.desc.to_params();
                if let Some((k, roles)) = epilogue_of.get(&i) {
                    params.extend(epilogue_params(&kernels.kernels[*k], *k, roles));
                }
                steps.push(Step::Library(LibraryCall { kind: plan.desc.kind().into(), group: i as u32, params, args }));
                costs.push(crate::cost::of_group(g, grp));
            }
            _ => {
                let (kernel, k) = &kernel_of[&i];
                let args = k
                    .params
                    .iter()
                    .enumerate()
                    .map(|(pi, p)| match k.constant(pi) {
                        // a generic kernel's table: bytes that travel with the kernel
                        Some(bytes) => Arg::Weight(weights.put(bytes)),
                        None => arg(p.value, weights),
                    })
                    .collect();
                steps.push(Step::Launch { kernel: *kernel as u32, grid: k.grid, block: k.block, args });
                costs.push(crate::cost::of_group(g, grp));
            }
        }
    }
    // outputs that are constants (folded at compile time) are copied into their buffers
    for &o in &g.outputs {
        let r = root(g, fused, &producer, o);
        if let Some(t) = g.weights.get(&r) {
            let k = xforge_kernel::generic::copy(t.dtype(), t.len(), r);
            let index = kernels.add(&k);
            let args = vec![Arg::Weight(weights.put(&t.data().to_le_bytes())), Arg::Arena(offset[&r])];
            steps.push(Step::Launch { kernel: index as u32, grid: k.grid, block: k.block, args });
            costs.push(crate::cost::of_copy(g, r));
        }
    }
    let binding = |v: ValueId| -> Result<Binding, BuildError> {
        let ty = g.ty(v);
        // a padded result's valid entries: the bound's shape, and where the length lives
        let valid = valid_length(g, &producer, v);
        let shaped = valid.map(|(data, _)| data).unwrap_or(v);
        let shape = g.ty(shaped).static_shape().ok_or_else(|| BuildError::Symbolic(g.name_of(v).to_string()))?;
        let valid = valid.map(|(_, len)| {
            let axis = match g.nodes[producer[&v]].attr("axis") {
                Some(xforge_ir::Attr::Int(a)) => *a as u32,
                _ => 0,
            };
            (axis, offset[&root(g, fused, &producer, len)])
        });
        Ok(Binding {
            name: g.name_of(v).to_string(),
            dtype: ty.dtype.name().to_string(),
            shape: shape.iter().map(|&d| d as u64).collect(),
            offset: offset[&root(g, fused, &producer, v)],
            batch_axis: None,
            valid,
        })
    };
    let inputs = g.inputs.iter().map(|&v| binding(v)).collect::<Result<_, _>>()?;
    let outputs = g.outputs.iter().map(|&v| binding(v)).collect::<Result<_, _>>()?;
    let memory = MemoryPlan { batch: 0, arena_bytes: arena_bytes.max(ALIGN), alignment: ALIGN, inputs, outputs };
    Ok((memory, steps, costs))
}

thread_local! {
    static DISTINCT_BUFFERS: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Runs `f` with every buffer of the plans it builds (on this thread) at its own offset.
pub fn with_distinct_buffers<R>(f: impl FnOnce() -> R) -> R {
    DISTINCT_BUFFERS.with(|d| d.set(true));
    let r = f();
    DISTINCT_BUFFERS.with(|d| d.set(false));
    r
}

/// The arena offset of every buffer (values computed by groups, and the inputs; views share
/// their source's) and the arena's size: placed by liveness over the groups in `order`.
/// XFORGE_DISTINCT_BUFFERS=1 gives every buffer its own bytes (to inspect intermediate values).
fn place_buffers(
    fused: &Fused,
    producer: &HashMap<ValueId, usize>,
    order: &[usize],
) -> Result<(HashMap<ValueId, u64>, u64), BuildError> {
    let g = &fused.graph;
    let groups = &fused.partition.groups;
    let producer = producer.clone();
    let last_step = groups.len();
    let mut life: HashMap<ValueId, (usize, usize)> = HashMap::new();
    let touch = |v: ValueId, step: usize, life: &mut HashMap<ValueId, (usize, usize)>| {
        let e = life.entry(v).or_insert((step, step));
        e.0 = e.0.min(step);
        e.1 = e.1.max(step);
    };
    // inputs stay intact for the whole run, so a plan can be replayed on the same inputs
    for &v in &g.inputs {
        touch(root(g, fused, &producer, v), 0, &mut life);
        touch(root(g, fused, &producer, v), last_step, &mut life);
    }
    // outputs nothing reads (the count of a bounded op whose data is all that is used) are
    // still written by their kernel: a buffer for the step that writes them
    let read: std::collections::HashSet<ValueId> =
        g.nodes.iter().flat_map(|n| g.node_reads(n)).chain(g.outputs.iter().copied()).collect();
    for (step, &i) in order.iter().enumerate() {
        let grp = &groups[i];
        if grp.schedule == Schedule::View {
            continue;
        }
        let dead = grp.nodes.iter().flat_map(|&n| g.nodes[n].output_ids()).filter(|v| !read.contains(v));
        for v in grp.inputs.iter().chain(&grp.outputs).copied().chain(dead) {
            if !g.weights.contains_key(&v) {
                touch(root(g, fused, &producer, v), step, &mut life);
            }
        }
    }
    // outputs own their bytes for the whole run too: a caller's buffer can stand in for an
    // input's or an output's bytes (`Session::run_device`) without meeting another value there
    for &v in &g.outputs {
        touch(root(g, fused, &producer, v), 0, &mut life);
        touch(root(g, fused, &producer, v), last_step, &mut life);
        // an output trimmed to its valid length keeps the length to the end too
        if let Some((_, len)) = valid_length(g, &producer, v) {
            touch(root(g, fused, &producer, len), last_step, &mut life);
        }
    }
    let mut buffers: Vec<ValueId> = life.keys().copied().collect();
    buffers.sort_by_key(|v| v.index());
    let lifetimes: Vec<Lifetime> = buffers
        .iter()
        .map(|&v| Ok(Lifetime { bytes: bytes_of(g, v)?.max(1), first: life[&v].0, last: life[&v].1 }))
        .collect::<Result<_, BuildError>>()?;
    // one buffer past the limit is refused before placing (sums of such sizes would overflow)
    let total = lifetimes.iter().fold(0u64, |a, l| a.saturating_add(l.bytes));
    if total > MAX_ARENA_BYTES {
        let (k, l) =
            lifetimes.iter().enumerate().max_by_key(|(_, l)| l.bytes).expect("a plan over the limit has buffers");
        if l.bytes > MAX_ARENA_BYTES {
            return Err(BuildError::TooLarge {
                arena: total,
                value: g.name_of(buffers[k]).to_string(),
                bytes: l.bytes,
                limit: MAX_ARENA_BYTES,
            });
        }
    }
    let distinct = DISTINCT_BUFFERS.with(|d| d.get()) || std::env::var_os("XFORGE_DISTINCT_BUFFERS").is_some();
    let (offsets, arena_bytes) = if distinct {
        let mut at = 0;
        let mut v = vec![];
        for l in &lifetimes {
            v.push(at);
            at += l.bytes.div_ceil(ALIGN) * ALIGN;
        }
        (v, at)
    } else {
        place(&lifetimes, ALIGN)
    };
    if arena_bytes > MAX_ARENA_BYTES {
        let (k, l) =
            lifetimes.iter().enumerate().max_by_key(|(_, l)| l.bytes).expect("a plan over the limit has buffers");
        return Err(BuildError::TooLarge {
            arena: arena_bytes,
            value: g.name_of(buffers[k]).to_string(),
            bytes: l.bytes,
            limit: MAX_ARENA_BYTES,
        });
    }
    Ok((buffers.iter().copied().zip(offsets).collect(), arena_bytes))
}

/// Where each value of a fused graph lives in its plan's arena (views at their source's
/// offset; weights are not in the arena): for checks that read intermediate buffers.
pub fn value_offsets(fused: &Fused) -> Result<HashMap<ValueId, u64>, BuildError> {
    let g = &fused.graph;
    let mut producer: HashMap<ValueId, usize> = HashMap::new();
    for (n, node) in g.nodes.iter().enumerate() {
        for o in node.output_ids() {
            producer.insert(o, n);
        }
    }
    let order = run_order(fused, &producer);
    let (offset, _) = place_buffers(fused, &producer, &order)?;
    let mut out = HashMap::new();
    for (i, v) in g.values.iter().enumerate() {
        let _ = v;
        let id = ValueId(i as u32);
        if let Some(&o) = offset.get(&root(g, fused, &producer, id)) {
            out.insert(id, o);
        }
    }
    Ok(out)
}

/// A library call's parameters naming its epilogue kernel: `epilogue` (the kernel's entry),
/// `epilogue_grid.0..2`, `epilogue_block.0..2`, `epilogue_params` and `epilogue_param.K` (the
/// call's buffer parameter K takes: 0 y, 1 bias, 2 the residual).
fn epilogue_params(k: &Kernel, index: usize, roles: &[i64]) -> Vec<(String, i64)> {
    let mut p = vec![("epilogue".to_string(), index as i64)];
    for (d, (g, b)) in k.grid.iter().zip(&k.block).enumerate() {
        p.push((format!("epilogue_grid.{d}"), *g as i64));
        p.push((format!("epilogue_block.{d}"), *b as i64));
    }
    p.push(("epilogue_params".into(), roles.len() as i64));
    p.extend(roles.iter().enumerate().map(|(j, r)| (format!("epilogue_param.{j}"), *r)));
    p
}

/// The kernel-knob overrides a tuning sweep set in the environment (`XFORGE_SSM_*`,
/// `XFORGE_ATTN_*`, see
/// ir/kernel/src/knobs.rs), recorded among the artifact's options so an artifact built under them
/// says so.
fn knob_overrides() -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = std::env::vars()
        .filter(|(k, _)| k.starts_with("XFORGE_SSM_") || k.starts_with("XFORGE_ATTN_"))
        .map(|(k, x)| (k.to_lowercase(), x))
        .collect();
    v.sort();
    v
}
