//! Kernels as MLIR `gpu` dialect modules, one per fusion group. Templates write the portable
//! `gpu`, `arith`, `math`, `memref` and `scf` dialects so the NVVM and ROCDL paths share them;
//! `mlir::verify` parses and verifies every module with melior.
pub mod attention;
pub mod body;
pub mod column_reduction;
pub mod concat;
pub mod depthwise;
pub mod elementwise;
pub mod gemm;
pub mod generic;
pub mod kernel;
pub mod knobs;
pub mod mlir;
pub mod pooling;
pub mod resize;
pub mod route;
pub mod routed_copy;
pub mod row_reduction;
pub mod scan;
pub mod selective_scan;
pub mod target;
pub mod tensor_core;
pub mod transpose;

pub use kernel::{Kernel, KernelError, Param};

use xforge_ir::group::{FusionGroup, Schedule};

/// The kernel of group `gi` of a fused graph, by its schedule's template.
pub fn generate(g: &xforge_ir::Graph, grp: &FusionGroup, gi: usize) -> Result<Kernel, KernelError> {
    // the narrow types (FP8, FP4, 4/2-bit integers) have no storage type in a kernel
    let values = grp.nodes.iter().flat_map(|&n| g.nodes[n].inputs.iter().chain(&g.nodes[n].outputs).flatten());
    if let Some(v) = values.into_iter().find(|&&v| g.ty(v).dtype.is_narrow()) {
        return Err(KernelError::Unsupported {
            group: gi,
            why: format!("'{}' is {}, which no kernel reads or writes", g.name_of(*v), g.ty(*v).dtype),
        });
    }
    // zero-size values (valid ONNX: a [0, 5] Softmax, a reduction over an empty axis) go to the
    // generic kernels, whose loops simply run no steps; templates assume whole rows and tiles
    let empty = grp.nodes.iter().any(|&n| {
        let n = &g.nodes[n];
        n.inputs
            .iter()
            .flatten()
            .chain(n.outputs.iter().flatten())
            .any(|&v| g.ty(v).static_shape().is_some_and(|s| s.contains(&0)))
    });
    if empty && grp.schedule != Schedule::Generic {
        return match grp.nodes[..] {
            [_] => generic::generic(g, grp, gi),
            _ => Err(KernelError::Unsupported {
                group: gi,
                why: "a zero-size value runs in generic kernels, one node each".into(),
            }),
        };
    }
    match grp.schedule {
        // data movement feeding elementwise work shares the elementwise template
        // a lone transpose that swaps two runs of axes moves through workgroup-memory tiles
        Schedule::Injective if transpose::batched_swap(g, grp).is_some() => transpose::transpose(g, grp, gi),
        // a store tail alone (a library GEMM's head split): read once, write where it goes
        Schedule::Injective if routed_copy::applies(g, grp) => routed_copy::routed_copy(g, grp, gi),
        // a Concat of inputs: one loop per operand, no per-element test of which holds it
        Schedule::Injective if concat::applies(g, grp) => concat::concat(g, grp, gi),
        // a constant-shaped Resize or Upsample: unrolled taps from compiled-in tables
        Schedule::Injective if resize::applies(g, grp) => resize::resize(g, grp, gi),
        Schedule::Elementwise | Schedule::Injective => elementwise::elementwise(g, grp, gi),
        Schedule::RowReduction => row_reduction::row_reduction(g, grp, gi),
        Schedule::Pooling => pooling::pooling(g, grp, gi),
        Schedule::ColumnReduction => column_reduction::column_reduction(g, grp, gi),
        Schedule::Scan if g.nodes[grp.nodes[0]].op == xforge_ir::Op::SelectiveScan => {
            selective_scan::selective_scan(g, grp, gi)
        }
        Schedule::Scan => scan::scan(g, grp, gi),
        // library GEMMs get the generated kernel too where no library runs them (checks, HIP)
        Schedule::GeneratedGemm | Schedule::LibraryGemm => gemm::gemm(g, grp, gi),
        Schedule::Attention => attention::attention(g, grp, gi),
        Schedule::Generic => generic::generic(g, grp, gi),
        s => Err(KernelError::Unsupported { group: gi, why: format!("no template for {s} groups yet") }),
    }
}
