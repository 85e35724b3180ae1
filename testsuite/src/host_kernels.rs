//! Generated kernels run on the host, to check them without a GPU. A kernel without barriers,
//! shuffles or workgroup memory (every generic kernel, the elementwise template's) computes the
//! same result whatever order its threads run in, so its MLIR body, looped over the grid and the
//! block, is lowered for the CPU and run through MLIR's execution engine. `run_plan` plays a
//! compiled model's groups in order: such kernels on the host, every other group (vendor
//! library calls, kernels with barriers) through the interpreter.
use melior::ir::operation::OperationLike;
use melior::ir::Module;
use melior::pass::PassManager;
use melior::utility::parse_pass_pipeline;
use melior::{Context, ExecutionEngine};
use std::collections::HashMap;
use xforge_ir::{interp, Graph, Tensor, TensorData, ValueId};
use xforge_kernel::Kernel;
use xforge_passes::fusion::{Fused, Schedule};

/// Whether a kernel can run on the host (no inter-thread communication).
pub fn emulable(k: &Kernel) -> bool {
    !["gpu.barrier", "gpu.shuffle", "workgroup(", "nvvm.", "gpu.subgroup", "gpu.lane_id"]
        .iter()
        .any(|s| k.module.contains(s))
}

/// The kernel as a host function of the same name: its body inside loops over blocks and
/// threads, the `gpu` index ops replaced by the loop variables and the launch's constants.
pub fn host_module(k: &Kernel) -> Result<String, String> {
    let lines: Vec<&str> = k.module.lines().collect();
    let head = lines.iter().position(|l| l.contains("gpu.func @")).ok_or("no gpu.func")?;
    let ret = lines.iter().rposition(|l| l.trim() == "gpu.return").ok_or("no gpu.return")?;
    let h = lines[head];
    let open = h.find('(').ok_or("no argument list")?;
    let mut depth = 0;
    let mut close = None;
    for (i, c) in h[open..].char_indices() {
        match c {
            '(' => depth += 1,
            ')' => {
                depth -= 1;
                if depth == 0 {
                    close = Some(open + i);
                    break;
                }
            }
            _ => {}
        }
    }
    let args = &h[open + 1..close.ok_or("unbalanced argument list")?];
    let mut body = String::new();
    for l in &lines[head + 1..ret] {
        let t = l.trim();
        let replaced = ["x", "y", "z"].iter().enumerate().find_map(|(d, axis)| {
            let (lhs, rhs) = t.split_once(" = ")?;
            Some(match rhs {
                r if r == format!("gpu.thread_id {axis}") => format!("{lhs} = arith.addi %__t{axis}, %__zero : index"),
                r if r == format!("gpu.block_id {axis}") => format!("{lhs} = arith.addi %__b{axis}, %__zero : index"),
                r if r == format!("gpu.block_dim {axis}") => format!("{lhs} = arith.constant {} : index", k.block[d]),
                r if r == format!("gpu.grid_dim {axis}") => format!("{lhs} = arith.constant {} : index", k.grid[d]),
                _ => return None,
            })
        });
        body.push_str(&replaced.unwrap_or_else(|| t.to_string()));
        body.push('\n');
    }
    let mut s = format!("module {{\n  func.func @{}({args}) attributes {{llvm.emit_c_interface}} {{\n", k.name);
    s += "%__zero = arith.constant 0 : index\n%__one = arith.constant 1 : index\n";
    for (d, axis) in ["x", "y", "z"].iter().enumerate() {
        s += &format!(
            "%__g{axis}n = arith.constant {} : index\n%__t{axis}n = arith.constant {} : index\n",
            k.grid[d], k.block[d]
        );
    }
    for axis in ["z", "y", "x"] {
        s += &format!("scf.for %__b{axis} = %__zero to %__g{axis}n step %__one {{\n");
    }
    for axis in ["z", "y", "x"] {
        s += &format!("scf.for %__t{axis} = %__zero to %__t{axis}n step %__one {{\n");
    }
    s += &body;
    s += &"}\n".repeat(6);
    s += "return\n}\n}\n";
    Ok(s)
}

thread_local! {
    // one context per thread, kept for the thread's life (modules borrow it)
    static CONTEXT: &'static Context = Box::leak(Box::new(xforge_kernel::mlir::context()));
}

const PIPELINE: &str = "builtin.module(convert-scf-to-cf,convert-math-to-libm,convert-vector-to-llvm,\
expand-strided-metadata,finalize-memref-to-llvm,convert-math-to-llvm,convert-arith-to-llvm,convert-index-to-llvm,\
convert-func-to-llvm{use-bare-ptr-memref-call-conv=true},convert-cf-to-llvm,reconcile-unrealized-casts)";

/// Runs kernel `k` on the host over `buffers` (one per parameter, in order, of the
/// parameter's bytes).
/// f32 → bf16, rounded to nearest even (NaN stays a quiet NaN), returned as compiler-rt's
/// `__truncsfbf2` returns it: the 16 bits in the low half of an xmm register.
extern "C" fn truncsfbf2(x: f32) -> f32 {
    let b = x.to_bits();
    let h = if x.is_nan() { (b >> 16) | 0x40 } else { (b + 0x7fff + ((b >> 16) & 1)) >> 16 };
    f32::from_bits(h)
}

pub fn run_kernel(k: &Kernel, buffers: &mut [Vec<u8>]) -> Result<(), String> {
    if !emulable(k) {
        return Err(format!("kernel {} needs a GPU (barriers or shuffles)", k.name));
    }
    if buffers.len() != k.params.len() {
        return Err(format!("{} buffers for {} parameters", buffers.len(), k.params.len()));
    }
    for (b, p) in buffers.iter().zip(&k.params) {
        if b.len() < p.elements.max(1) * p.dtype.size() {
            return Err(format!("a buffer of {} bytes for {} elements of {}", b.len(), p.elements, p.dtype));
        }
    }
    let text = host_module(k)?;
    CONTEXT.with(|ctx| {
        let mut module =
            Module::parse(ctx, &text).ok_or_else(|| format!("the host form of {} does not parse:\n{text}", k.name))?;
        if !module.as_operation().verify() {
            return Err(format!("the host form of {} does not verify", k.name));
        }
        let pm = PassManager::new(ctx);
        parse_pass_pipeline(pm.as_operation_pass_manager(), PIPELINE).map_err(|e| e.to_string())?;
        pm.run(&mut module).map_err(|e| format!("lowering {} for the host: {e:?}", k.name))?;
        let engine = ExecutionEngine::new(&module, 2, &[], false, false);
        // LLVM lowers f32 → bf16 to compiler-rt's `__truncsfbf2`, which libgcc before GCC 13
        // (Debian 12's) lacks: without it the module does not link and has no entry
        // SAFETY: the function has the libcall's signature (the bf16 in the low bits of xmm0)
        unsafe { engine.register_symbol("__truncsfbf2", truncsfbf2 as *mut ()) };
        let mut ptrs: Vec<*mut u8> = buffers.iter_mut().map(|b| b.as_mut_ptr()).collect();
        let mut args: Vec<*mut ()> = ptrs.iter_mut().map(|p| p as *mut *mut u8 as *mut ()).collect();
        // the engine's packed wrapper `_mlir_<name>` takes the array of argument pointers (the C
        // API's invoke looks for a C-interface wrapper, which bare-pointer functions lack)
        let f = engine.lookup(&format!("_mlir_{}", k.name));
        if f.is_null() {
            return Err(format!("the host form of {} has no entry", k.name));
        }
        // SAFETY: `f` is the packed wrapper (void(void**)); each argument points to a pointer to
        // a buffer at least as large as the parameter's memref (checked above), and the kernel
        // indexes within its memrefs.
        unsafe {
            let f: extern "C" fn(*mut *mut ()) = std::mem::transmute(f);
            f(args.as_mut_ptr());
        }
        Ok(())
    })
}

/// How the groups of a plan ran.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PlanStats {
    /// Generated kernels run on the host.
    pub host_kernels: usize,
    /// Groups run by the interpreter (library calls, kernels with barriers).
    pub interpreted: usize,
}

fn tensor_bytes(t: &Tensor) -> Vec<u8> {
    t.data().to_le_bytes()
}

/// Runs a fused graph's groups in order; `kernels` holds the generated kernel of each group
/// that has one (library calls and views have none).
pub fn run_plan(
    fused: &Fused,
    kernels: &HashMap<usize, Kernel>,
    inputs: &HashMap<String, Tensor>,
) -> Result<(Vec<Tensor>, PlanStats), String> {
    let (env, stats) = run_plan_values(fused, kernels, inputs)?;
    let g = &fused.graph;
    let outs = g
        .outputs
        .iter()
        .map(|&o| {
            env.get(&o)
                .or_else(|| g.weights.get(&o))
                .cloned()
                .ok_or_else(|| format!("'{}' is not computed", g.name_of(o)))
        })
        .collect::<Result<_, _>>()?;
    Ok((outs, stats))
}

/// `run_plan`, returning every value computed (by id).
pub fn run_plan_values(
    fused: &Fused,
    kernels: &HashMap<usize, Kernel>,
    inputs: &HashMap<String, Tensor>,
) -> Result<(HashMap<ValueId, Tensor>, PlanStats), String> {
    let g: &Graph = &fused.graph;
    let mut env: HashMap<ValueId, Tensor> = HashMap::new();
    for &i in &g.inputs {
        let t = inputs.get(g.name_of(i)).ok_or_else(|| format!("no value for input '{}'", g.name_of(i)))?;
        env.insert(i, t.clone());
    }
    let get = |env: &HashMap<ValueId, Tensor>, v: ValueId| -> Result<Tensor, String> {
        env.get(&v)
            .or_else(|| g.weights.get(&v))
            .cloned()
            .ok_or_else(|| format!("'{}' is not computed yet", g.name_of(v)))
    };
    let mut producer = HashMap::new();
    for (n, node) in g.nodes.iter().enumerate() {
        for o in node.output_ids() {
            producer.insert(o, n);
        }
    }
    let mut stats = PlanStats::default();
    for gi in xforge_compiler::build::run_order(fused, &producer) {
        let grp = &fused.partition.groups[gi];
        match kernels.get(&gi) {
            Some(k) if grp.schedule != Schedule::View && emulable(k) => {
                let mut bufs = vec![];
                for (pi, p) in k.params.iter().enumerate() {
                    bufs.push(match (k.constant(pi), p.output) {
                        (Some(b), _) => b.to_vec(),
                        // poisoned: an element the kernel leaves unwritten shows
                        (None, true) => vec![0xAB; p.elements.max(1) * p.dtype.size()],
                        (None, false) => tensor_bytes(&get(&env, p.value)?),
                    });
                    // empty tensors still get one element (memrefs have at least one)
                    let need = p.elements.max(1) * p.dtype.size();
                    if bufs[pi].len() < need {
                        bufs[pi].resize(need, 0);
                    }
                }
                run_kernel(k, &mut bufs)?;
                for (p, b) in k.params.iter().zip(bufs) {
                    if p.output {
                        let shape = g.ty(p.value).static_shape().ok_or("an output has no static shape")?;
                        let n = xforge_ir::tensor::numel(&shape);
                        let data = TensorData::from_le_bytes(p.dtype, &b[..n * p.dtype.size()])
                            .ok_or("output bytes do not decode")?;
                        env.insert(p.value, Tensor::new(shape, data));
                    }
                }
                for &o in &grp.outputs {
                    if !env.contains_key(&o) {
                        return Err(format!("group {gi}'s kernel does not write '{}'", g.name_of(o)));
                    }
                }
                stats.host_kernels += 1;
            }
            _ => {
                for &n in &grp.nodes {
                    let node = &g.nodes[n];
                    let ins: Vec<Option<Tensor>> =
                        node.inputs.iter().map(|v| v.map(|v| get(&env, v)).transpose()).collect::<Result<_, _>>()?;
                    let outs = interp::eval_node(node, &ins, g.opset).map_err(|e| e.to_string())?;
                    for (o, t) in node.outputs.iter().zip(outs) {
                        if let Some(o) = o {
                            env.insert(*o, t);
                        }
                    }
                }
                if grp.schedule != Schedule::View {
                    stats.interpreted += 1;
                }
            }
        }
    }
    Ok((env, stats))
}
