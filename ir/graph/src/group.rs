//! Fusion groups: the sets of nodes that become one kernel (or one library call, or nothing for
//! views), and how each is scheduled. The partitioner (xforge-passes) makes them; the kernel
//! templates (xforge-kernel) and the artifact builder read them.
use crate::graph::ValueId;
use std::fmt;

/// How a group's kernel is scheduled.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Schedule {
    /// One thread per vector of elements.
    Elementwise,
    /// Data movement (transpose, slice, concat, gather, pad, resize, ...).
    Injective,
    /// A reduction along the innermost axis with its prologue and epilogue.
    RowReduction,
    /// A reduction along outer axes.
    ColumnReduction,
    /// Windowed pooling.
    Pooling,
    /// A vendor-library GEMM (cuBLASLt) with an epilogue it accepts: bias, one residual
    /// through C, then ReLU or tanh-GELU.
    LibraryGemm,
    /// A vendor-library convolution (cuDNN conv-bias-activation): bias, one residual `z`, then
    /// ReLU, sigmoid, tanh or clip.
    LibraryConv,
    /// A generated GEMM kernel: epilogues the library cannot express (erf-GELU, strided
    /// head-major stores, ...).
    GeneratedGemm,
    /// A generated convolution kernel, likewise.
    GeneratedConv,
    /// Fused softmax(q·kᵀ)·v.
    Attention,
    /// A linear recurrence along one axis.
    Scan,
    /// Host-side or data-dependent work (shapes known only at run time, control flow).
    Opaque,
    /// Reinterprets a buffer: no kernel.
    View,
    /// One op by its generic kernel (any dtype, shape and attribute the interpreter takes):
    /// what a group falls back to, node by node, where no fused template runs it.
    Generic,
}

impl fmt::Display for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Schedule::Elementwise => "elementwise",
            Schedule::Injective => "injective",
            Schedule::RowReduction => "row-reduction",
            Schedule::ColumnReduction => "column-reduction",
            Schedule::Pooling => "pooling",
            Schedule::LibraryGemm => "library-gemm",
            Schedule::LibraryConv => "library-conv",
            Schedule::GeneratedGemm => "generated-gemm",
            Schedule::GeneratedConv => "generated-conv",
            Schedule::Attention => "attention",
            Schedule::Scan => "scan",
            Schedule::Opaque => "opaque",
            Schedule::View => "view",
            Schedule::Generic => "generic",
        })
    }
}

/// A set of nodes that becomes one kernel.
#[derive(Clone, Debug, PartialEq)]
pub struct FusionGroup {
    pub schedule: Schedule,
    /// Node indices into the partitioned graph, in graph order.
    pub nodes: Vec<usize>,
    /// Values the kernel reads (weights included), in first-use order.
    pub inputs: Vec<ValueId>,
    /// Values it writes that something outside the group (or the caller) reads.
    pub outputs: Vec<ValueId>,
}

impl FusionGroup {
    /// Its ops in node order, consecutive repeats once (a chain of Adds reads as one `Add`).
    pub fn op_names(&self, g: &crate::Graph) -> Vec<String> {
        let mut ops: Vec<String> = vec![];
        for &n in &self.nodes {
            let op = g.nodes[n].op.to_string();
            if ops.last() != Some(&op) {
                ops.push(op);
            }
        }
        ops
    }
}
