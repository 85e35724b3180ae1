//! The verifier: structural rules (SSA, order, arity) and per-op dtype/shape rules (through
//! inference), for graphs from the importer, the builder or a pass.
use crate::graph::{Graph, ValueId};
use crate::infer::{infer_with, merge, Fresh};
use crate::op::Op;
use std::collections::BTreeSet;

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum VerifyError {
    #[error("value '{0}' has more than one definition")]
    Redefined(String),
    #[error("value id {0} does not exist")]
    BadId(u32),
    #[error("node '{node}' ({op}): input '{input}' is not defined before it")]
    UseBeforeDef { node: String, op: Op, input: String },
    #[error("node '{node}' ({op}): takes {min}..={max} inputs, has {got}")]
    Arity { node: String, op: Op, min: usize, max: usize, got: usize },
    #[error("weight '{name}': tensor is {got} but the value is typed {want}")]
    WeightType { name: String, got: String, want: String },
    #[error("graph output '{0}' is never defined")]
    Undefined(String),
    #[error("node '{node}' ({op}): {msg}")]
    Type { node: String, op: Op, msg: String },
}

/// Inclusive bounds on the number of inputs of each op (`usize::MAX`: variadic).
pub fn input_arity(op: Op) -> (usize, usize) {
    use Op::*;
    const V: usize = usize::MAX;
    match op {
        Constant => (0, 0),
        Sum | Mean | Min | Max | Concat => (1, V),
        Add | Sub | Mul | Div | Pow | Mod | Equal | Less | Greater | LessOrEqual | GreaterOrEqual | And | Or | Xor
        | BitShift | BitwiseAnd | BitwiseOr | BitwiseXor | PRelu | MatMul | CastLike | Expand | Gather
        | GatherElements | GatherND | Tile | Compress | CumSum | CumProd | ReverseSequence | CenterCropPad => (2, 2),
        Where | ScatterElements | ScatterND | Scatter | OneHot => (3, 3),
        Range => (3, 3),
        Gemm | Conv | ConvNhwc | ConvTranspose => (2, 3),
        BatchNormalization => (5, 5),
        LayerNormalization => (2, 3),
        RMSNormalization | Reshape => (1, 2),
        InstanceNormalization | GroupNormalization => (3, 3),
        Clip => (1, 3),
        Dropout => (1, 3),
        Slice => (1, 5),
        Pad | Resize => (1, 4),
        Split | Squeeze | Unsqueeze | Trilu | TopK | Upsample | ReduceSum | ReduceMean | ReduceMax | ReduceMin
        | ReduceProd | ReduceL1 | ReduceL2 | ReduceLogSum | ReduceLogSumExp | ReduceSumSquare => (1, 2),
        NonMaxSuppression => (2, 5),
        Bounded => (1, 8),
        NmsOverlapMask => (2, 3),
        Prefix | ReduceBounded => (2, 2),
        TopKBounded | Choose => (3, 3),
        ConcatBounded => (2, V),
        RoiAlign => (3, 3),
        SoftmaxCrossEntropyLoss | NegativeLogLikelihoodLoss => (2, 3),
        Attention => (3, 7),
        SelectiveScan => (5, 8),
        RotaryEmbedding => (3, 4),
        TensorScatter => (2, 3),
        SwiGLU => (2, 2),
        CausalConvWithState => (2, 4),
        LinearAttention => (3, 6),
        RNN | GRU => (3, 6),
        LSTM => (3, 8),
        Einsum => (1, V),
        QuantizeLinear | DequantizeLinear => (2, 3),
        DynamicQuantizeLinear => (1, 1),
        MatMulInteger | ConvInteger => (2, 4),
        QLinearMatMul => (8, 8),
        QLinearConv => (8, 9),
        If => (1, 1),
        Loop => (2, V),
        Scan => (1, V),
        _ => (1, 1),
    }
}

/// Verifies `g` and its subgraphs.
pub fn verify(g: &Graph) -> Result<(), VerifyError> {
    verify_in(g, &|_| true)
}

fn verify_in(g: &Graph, outer_has: &dyn Fn(&str) -> bool) -> Result<(), VerifyError> {
    let n = g.values.len();
    let check = |id: ValueId| if id.index() < n { Ok(()) } else { Err(VerifyError::BadId(id.0)) };
    let mut defined: BTreeSet<ValueId> = BTreeSet::new();
    let define = |defined: &mut BTreeSet<ValueId>, id: ValueId| -> Result<(), VerifyError> {
        check(id)?;
        if !defined.insert(id) {
            return Err(VerifyError::Redefined(g.name_of(id).to_string()));
        }
        Ok(())
    };
    for &i in g.inputs.iter().chain(&g.captures).chain(g.weights.keys()) {
        define(&mut defined, i)?;
    }
    for &c in &g.captures {
        if !outer_has(g.name_of(c)) {
            return Err(VerifyError::Undefined(g.name_of(c).to_string()));
        }
    }
    for (&id, t) in &g.weights {
        let ty = g.ty(id);
        if ty.dtype != t.dtype() || !ty.admits(t.shape()) {
            return Err(VerifyError::WeightType {
                name: g.name_of(id).to_string(),
                got: format!("{}{:?}", t.dtype(), t.shape()),
                want: ty.to_string(),
            });
        }
    }
    for node in &g.nodes {
        let (min, max) = input_arity(node.op);
        let got = node.inputs.len();
        if got < min || got > max {
            return Err(VerifyError::Arity { node: node.name.clone(), op: node.op, min, max, got });
        }
        for i in node.input_ids() {
            check(i)?;
            if !defined.contains(&i) {
                return Err(VerifyError::UseBeforeDef {
                    node: node.name.clone(),
                    op: node.op,
                    input: g.name_of(i).to_string(),
                });
            }
        }
        for (_, sub) in node.subgraphs() {
            let visible = |name: &str| g.find_value(name).is_some_and(|id| defined.contains(&id)) || outer_has(name);
            verify_in(sub, &visible)?;
        }
        for o in node.output_ids() {
            define(&mut defined, o)?;
        }
    }
    for &o in &g.outputs {
        check(o)?;
        if !defined.contains(&o) {
            return Err(VerifyError::Undefined(g.name_of(o).to_string()));
        }
    }
    // types: what inference derives must agree with what the graph says
    let mut copy = g.clone();
    copy.undeclared.clear();
    let facts = infer_with(&mut copy, &|_| None, &mut Fresh::default()).map_err(|e| VerifyError::Type {
        node: e.node,
        op: e.op,
        msg: e.msg,
    })?;
    for node in &g.nodes {
        for o in node.output_ids() {
            merge(g.ty(o), &facts[o.index()].ty).map_err(|m| VerifyError::Type {
                node: node.name.clone(),
                op: node.op,
                msg: format!("output '{}': {m}", g.name_of(o)),
            })?;
        }
    }
    Ok(())
}
