//! The operator set. Every op listed here has an interpreter implementation (the match in
//! `interp::eval` is exhaustive), so an op without one cannot exist.
use std::fmt;

/// How an op touches memory; fusion legality is decided on this.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum OpKind {
    /// One output element from the same element of each input of one shape.
    Elementwise,
    /// Elementwise with numpy broadcasting between inputs.
    Broadcast,
    /// Moves or selects elements without arithmetic (transpose, slice, gather, ...).
    Injective,
    /// Reduces along axes (reduce-*, softmax, normalizations, pooling, scans).
    Reduction,
    /// Matrix products and convolutions.
    Contraction,
    /// Data-dependent or otherwise unfusable (NonZero, NMS, control flow, ...).
    Opaque,
}

macro_rules! ops {
    ($($name:ident : $kind:ident),* $(,)?) => {
        /// An operator of the default ONNX domain (the names are ONNX's).
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum Op { $($name),* }

        impl Op {
            pub const ALL: &'static [Op] = &[$(Op::$name),*];

            pub fn name(self) -> &'static str {
                match self { $(Op::$name => stringify!($name)),* }
            }

            pub fn kind(self) -> OpKind {
                match self { $(Op::$name => OpKind::$kind),* }
            }

            pub fn from_name(s: &str) -> Option<Op> {
                match s { $(stringify!($name) => Some(Op::$name),)* _ => None }
            }
        }
    };
}

ops! {
    // unary math and activations
    Abs: Elementwise, Neg: Elementwise, Exp: Elementwise, Log: Elementwise, Sqrt: Elementwise,
    Reciprocal: Elementwise, Sin: Elementwise, Cos: Elementwise, Tan: Elementwise,
    Asin: Elementwise, Acos: Elementwise, Atan: Elementwise, Sinh: Elementwise, Cosh: Elementwise,
    Asinh: Elementwise, Acosh: Elementwise, Atanh: Elementwise, Tanh: Elementwise,
    Sigmoid: Elementwise, Relu: Elementwise, Erf: Elementwise, Floor: Elementwise,
    Ceil: Elementwise, Round: Elementwise, Sign: Elementwise, Softplus: Elementwise,
    Softsign: Elementwise, Elu: Elementwise, Selu: Elementwise, Celu: Elementwise,
    LeakyRelu: Elementwise, HardSigmoid: Elementwise, HardSwish: Elementwise,
    ThresholdedRelu: Elementwise, Shrink: Elementwise, Mish: Elementwise, Gelu: Elementwise,
    Swish: Elementwise, IsNaN: Elementwise, IsInf: Elementwise, Not: Elementwise,
    BitwiseNot: Elementwise, Identity: Elementwise, Cast: Elementwise, CastLike: Elementwise,
    Clip: Broadcast, Dropout: Elementwise,
    // binary and variadic with broadcasting
    Add: Broadcast, Sub: Broadcast, Mul: Broadcast, Div: Broadcast, Pow: Broadcast,
    Mod: Broadcast, Min: Broadcast, Max: Broadcast, Sum: Broadcast, Mean: Broadcast,
    Equal: Broadcast, Less: Broadcast, Greater: Broadcast, LessOrEqual: Broadcast,
    GreaterOrEqual: Broadcast, And: Broadcast, Or: Broadcast, Xor: Broadcast,
    BitShift: Broadcast, BitwiseAnd: Broadcast, BitwiseOr: Broadcast, BitwiseXor: Broadcast,
    PRelu: Broadcast, Where: Broadcast,
    // reductions and normalizations
    ReduceSum: Reduction, ReduceMean: Reduction, ReduceMax: Reduction, ReduceMin: Reduction,
    ReduceProd: Reduction, ReduceL1: Reduction, ReduceL2: Reduction, ReduceLogSum: Reduction,
    ReduceLogSumExp: Reduction, ReduceSumSquare: Reduction, ArgMax: Reduction, ArgMin: Reduction,
    Softmax: Reduction, LogSoftmax: Reduction, Hardmax: Reduction, CumSum: Reduction,
    CumProd: Reduction,
    BatchNormalization: Broadcast, LayerNormalization: Reduction,
    InstanceNormalization: Reduction, GroupNormalization: Reduction,
    RMSNormalization: Reduction, LpNormalization: Reduction,
    MeanVarianceNormalization: Reduction, LRN: Reduction,
    MaxPool: Reduction, AveragePool: Reduction, GlobalAveragePool: Reduction,
    GlobalMaxPool: Reduction, LpPool: Reduction,
    // contractions
    MatMul: Contraction, Gemm: Contraction, Einsum: Contraction, Conv: Contraction,
    // linear quantization (interp/quant.rs)
    MatMulInteger: Contraction, ConvInteger: Contraction, QLinearMatMul: Contraction, QLinearConv: Contraction,
    QuantizeLinear: Broadcast, DequantizeLinear: Broadcast, DynamicQuantizeLinear: Opaque,
    // xforge's own: Conv on channels-last (N, H, W, C) data, weights as Conv's (M, C/g, kH, kW)
    ConvNhwc: Contraction,
    // xforge's own: MaxPool (2-D, one output) on channels-last (N, H, W, C) data
    MaxPoolNhwc: Reduction,
    // domain com.xforge: Mamba's selective scan (interp/selective_scan.rs)
    SelectiveScan: Opaque,
    // xforge's own, for data-dependent shapes (interp/bounded.rs): the op named by attribute
    // `bounded_op` with its output padded along `bounded_axis` to the static `bound`, and the
    // valid length as a second output; and the first `length` entries of a tensor along `axis`
    Bounded: Opaque, Prefix: Opaque,
    // on padded tensors (their valid length an input): TopK over the valid entries with a runtime
    // K padded to `bound`; Concat of (data, length) pairs compacted along `axis`; a reduction over
    // the valid entries along `axis`; and the choice of a whole tensor by a condition (an If whose
    // branches differ in shape)
    TopKBounded: Opaque, ConcatBounded: Opaque, ReduceBounded: Opaque, Choose: Opaque,
    // xforge's own (interp/detection.rs): which later boxes of NonMaxSuppression's score order
    // each box overlaps, one bit each (the parallel half of a large NonMaxSuppression)
    NmsOverlapMask: Opaque,
    ConvTranspose: Contraction, Attention: Contraction,
    // sequence models (opsets 23-28; interp/sequence.rs): rotary embeddings, KV-cache writes and
    // the gated activation (written out as primitive ops before fusion), the stateful causal
    // convolution and the linear-attention recurrences
    RotaryEmbedding: Opaque, TensorScatter: Opaque, SwiGLU: Opaque, CausalConvWithState: Opaque,
    LinearAttention: Opaque,
    // the recurrent networks (interp/recurrent.rs), unrolled into GEMMs and gates before fusion
    RNN: Opaque, GRU: Opaque, LSTM: Opaque,
    // data movement and shapes
    Shape: Opaque, Size: Opaque, Reshape: Injective, Flatten: Injective, Expand: Injective,
    Gather: Injective, GatherElements: Injective, GatherND: Injective, Slice: Injective,
    Concat: Injective, Split: Injective, Squeeze: Injective, Unsqueeze: Injective,
    Transpose: Injective, Tile: Injective, Pad: Injective, DepthToSpace: Injective,
    SpaceToDepth: Injective, Trilu: Injective, Resize: Injective, Upsample: Injective,
    ReverseSequence: Injective, CenterCropPad: Injective,
    ScatterElements: Opaque, ScatterND: Opaque, Scatter: Opaque,
    Range: Opaque, ConstantOfShape: Opaque, Constant: Opaque, EyeLike: Opaque,
    OneHot: Opaque, NonZero: Opaque, Compress: Opaque, TopK: Opaque,
    NonMaxSuppression: Opaque, RoiAlign: Opaque,
    // losses
    SoftmaxCrossEntropyLoss: Opaque, NegativeLogLikelihoodLoss: Opaque,
    // control flow
    If: Opaque, Loop: Opaque, Scan: Opaque,
}

impl Op {
    /// Ops xforge introduces itself; an ONNX file cannot name them.
    pub fn is_internal(self) -> bool {
        matches!(
            self,
            Op::ConvNhwc
                | Op::MaxPoolNhwc
                | Op::Bounded
                | Op::Prefix
                | Op::TopKBounded
                | Op::ConcatBounded
                | Op::ReduceBounded
                | Op::Choose
                | Op::NmsOverlapMask
        )
    }

    /// Whether input `k` is a shape operand: its values decide the output's shape or the
    /// kernel's form (shapes, axes, pads, sizes, K, ...), so compiling needs them constant.
    pub fn shape_operand(self, k: usize) -> bool {
        use Op::*;
        match self {
            Reshape | Expand | Tile | Upsample | Squeeze | Unsqueeze | Split | TopK | CumSum | CumProd | Trilu => {
                k == 1
            }
            ReduceSum | ReduceMean | ReduceMax | ReduceMin | ReduceProd | ReduceL1 | ReduceL2 | ReduceLogSum
            | ReduceLogSumExp | ReduceSumSquare => k == 1,
            Slice => (1..=4).contains(&k),
            Pad => k == 1 || k == 3,
            Resize => (1..=3).contains(&k),
            Range => k <= 2,
            ConstantOfShape => k == 0,
            OneHot => k == 1,
            CenterCropPad => k == 1,
            Dropout => k == 1 || k == 2,
            ReverseSequence => k == 1,
            _ => false,
        }
    }

    /// The ONNX domain an op is imported from ("" for the default domain).
    pub fn domain(self) -> &'static str {
        match self {
            Op::SelectiveScan => XFORGE_DOMAIN,
            _ => "",
        }
    }
}

/// The domain of xforge's own ONNX ops.
pub const XFORGE_DOMAIN: &str = "com.xforge";

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}
