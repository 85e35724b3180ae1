//! A generated kernel: its module text, parameters and launch shape.
use crate::body::{storage_type, Body};
use std::hash::{Hash, Hasher};
use xforge_ir::{DType, ValueId};

/// One kernel argument: a bare pointer to a buffer of `elements` values.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Param {
    pub value: ValueId,
    pub dtype: DType,
    pub elements: usize,
    pub output: bool,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Kernel {
    /// `k_<content hash>`: identical groups give identical kernels.
    pub name: String,
    /// A `gpu.module` holding one `gpu.func` of that name.
    pub module: String,
    pub params: Vec<Param>,
    pub grid: [u32; 3],
    pub block: [u32; 3],
    /// Parameters whose bytes are compiled in (generic kernels' tables), by parameter index;
    /// their `value` names no graph value.
    pub constants: Vec<(usize, std::sync::Arc<[u8]>)>,
}

impl Kernel {
    /// The compiled-in bytes of parameter `k`, if it is a table.
    pub fn constant(&self, k: usize) -> Option<&[u8]> {
        self.constants.iter().find(|(i, _)| *i == k).map(|(_, b)| &b[..])
    }

    /// Whether its index arithmetic fits 32 bits: every buffer and the launch's threads stay
    /// within NARROW_INDEX_MAX (sums of an index and a stride then stay below 2^31).
    /// XFORGE_WIDE_INDEX=1 keeps 64-bit indices everywhere (to bisect). nvgpu's memref
    /// operations (ldmatrix, cp.async) take 64-bit indices: MLIR's nvgpu lowering has no index
    /// width of its own, and its memref descriptors would not match 32-bit ones.
    pub fn fits_narrow_index(&self) -> bool {
        let threads = self.grid.iter().chain(&self.block).map(|&d| d as u64).product::<u64>();
        std::env::var("XFORGE_WIDE_INDEX").map_or(true, |v| v != "1")
            && threads <= crate::knobs::NARROW_INDEX_MAX
            && self.params.iter().all(|p| p.elements as u64 <= crate::knobs::NARROW_INDEX_MAX)
            && !["nvgpu.ldmatrix", "nvgpu.device_async_copy"].iter().any(|op| self.module.contains(op))
    }
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum KernelError {
    #[error("fusion group {group}: {why}")]
    Unsupported { group: usize, why: String },
    #[error("generated MLIR does not verify: {0}")]
    Invalid(String),
}

/// A stable name from the body text (the placeholder `@KERNEL` stands for the name).
pub fn content_name(body: &str) -> String {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    body.hash(&mut h);
    format!("k_{:016x}", h.finish())
}

/// `memref<N×T>` of a parameter (bool and bytes as i8).
pub fn memref(p: &Param) -> String {
    format!("memref<{}x{}>", p.elements.max(1), storage_type(p.dtype).expect("parameters have storage types"))
}

/// Wraps a finished body into a `gpu.module` holding one `gpu.func` named by its content;
/// `workgroup` declares the function's workgroup memory.
pub fn finish(params: Vec<Param>, body: &Body, workgroup: Option<&str>, grid: [u32; 3], block: [u32; 3]) -> Kernel {
    finish_bounded(params, body, workgroup, grid, block, None)
}

/// `finish`, and with `min_blocks` the launch bounds: the block's thread count and at least that
/// many resident blocks per multiprocessor (ptxas caps the registers to fit).
pub fn finish_bounded(
    params: Vec<Param>,
    body: &Body,
    workgroup: Option<&str>,
    grid: [u32; 3],
    block: [u32; 3],
    min_blocks: Option<u32>,
) -> Kernel {
    let args: Vec<String> = params.iter().enumerate().map(|(k, p)| format!("%arg{k}: {}", memref(p))).collect();
    let amd = crate::target::current().is_amd();
    let lines: String = body
        .lines
        .iter()
        .map(|l| if amd { launch_constant(l, grid, block) } else { l.clone() })
        .map(|l| format!("      {l}\n"))
        .collect();
    let wg = workgroup.map(|w| format!(" workgroup({w})")).unwrap_or_default();
    let [x, y, z] = block;
    let bounds = if crate::target::current().is_amd() {
        // AMD's default workgroup bound is 256 threads: every kernel states its block
        format!(" attributes {{known_block_size = array<i32: {x}, {y}, {z}>}}")
    } else {
        min_blocks
            .map(|m| format!(" attributes {{nvvm.maxntid = array<i32: {x}, {y}, {z}>, nvvm.minctasm = {m} : i32}}"))
            .unwrap_or_default()
    };
    let func =
        format!("    gpu.func @KERNEL({}){wg} kernel{bounds} {{\n{lines}      gpu.return\n    }}\n", args.join(", "));
    let name = content_name(&func);
    let module = format!("  gpu.module @{name} {{\n{}  }}\n", func.replace("@KERNEL", &format!("@{name}")));
    Kernel { name, module, params, grid, block, constants: vec![] }
}

/// `%v = gpu.block_dim x` (or grid_dim, any axis) as the launch's constant. On AMD, MLIR lowers
/// those to ockl calls whose 64-bit results do not match 32-bit indices; the constant is
/// also what they return.
fn launch_constant(line: &str, grid: [u32; 3], block: [u32; 3]) -> String {
    let Some((lhs, rhs)) = line.split_once(" = ") else { return line.to_string() };
    for (op, dims) in [("gpu.block_dim", block), ("gpu.grid_dim", grid)] {
        for (axis, d) in ["x", "y", "z"].iter().zip(dims) {
            if rhs == format!("{op} {axis}") {
                return format!("{lhs} = arith.constant {d} : index");
            }
        }
    }
    line.to_string()
}

/// Blocks for `work` items of `block` threads each (at least one, at most 2^20).
pub fn blocks(work: usize, block: u32) -> u32 {
    (work as u64).div_ceil(block as u64).clamp(1, 1 << 20) as u32
}

/// A group's inputs as kernel parameters, except one-element float weights, which are returned
/// as constants to fold into the code, and `skip` (values a template compiles in, such as a
/// reduction's axes). With `floats_only`, integer inputs are refused.
#[allow(clippy::type_complexity)]
pub fn input_params(
    g: &xforge_ir::Graph,
    inputs: &[ValueId],
    skip: &[ValueId],
    floats_only: bool,
) -> Result<(Vec<Param>, std::collections::HashMap<ValueId, f64>), String> {
    let mut params = vec![];
    let mut scalars = std::collections::HashMap::new();
    for &v in inputs.iter().filter(|v| !skip.contains(v)) {
        let ty = g.ty(v);
        let shape = ty.static_shape().ok_or_else(|| format!("input '{}' has no static shape", g.name_of(v)))?;
        match g.weights.get(&v) {
            Some(t) if t.len() == 1 && t.dtype().is_float() => {
                scalars.insert(v, t.to_f64()[0]);
            }
            _ => {
                storage_type(ty.dtype)
                    .filter(|_| ty.dtype.is_float() || !floats_only)
                    .ok_or_else(|| format!("input dtype {} is not supported", ty.dtype))?;
                params.push(Param { value: v, dtype: ty.dtype, elements: shape.iter().product(), output: false });
            }
        }
    }
    Ok((params, scalars))
}

/// The group's outputs as kernel parameters, each of `elements` float elements (`what` names
/// that size in the error).
pub fn output_params(
    g: &xforge_ir::Graph,
    outputs: &[ValueId],
    elements: usize,
    what: &str,
) -> Result<Vec<Param>, String> {
    outputs
        .iter()
        .map(|&o| {
            let ty = g.ty(o);
            if ty.static_shape().map(|s| xforge_ir::tensor::numel(&s)) != Some(elements) {
                return Err(format!("output '{}' is not of {what}", g.name_of(o)));
            }
            storage_type(ty.dtype)
                .filter(|_| ty.dtype.is_float())
                .ok_or_else(|| format!("output dtype {} is not supported", ty.dtype))?;
            Ok(Param { value: o, dtype: ty.dtype, elements, output: true })
        })
        .collect()
}

/// A reduce-* node's axes (attribute or constant input; empty means all), refusing axes known
/// only at run time and reductions over no axes.
pub fn reduce_axes(g: &xforge_ir::Graph, node: &xforge_ir::Node) -> Result<Vec<i64>, String> {
    let axes: Vec<i64> = match node.attr("axes") {
        Some(xforge_ir::Attr::Ints(v)) => v.clone(),
        _ => match node.inputs.get(1).copied().flatten() {
            None => vec![],
            // axes known only at run time cannot be compiled in
            Some(v) => g.weights.get(&v).map(|t| t.to_i64()).ok_or("the reduced axes are not constant")?,
        },
    };
    if axes.is_empty() && matches!(node.attr("noop_with_empty_axes"), Some(xforge_ir::Attr::Int(1))) {
        return Err("a reduction over no axes (noop_with_empty_axes) is not a kernel".into());
    }
    Ok(axes)
}
