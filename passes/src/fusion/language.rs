//! The e-graph language: one e-node per graph op (attributes interned in `NodeTable`), leaves
//! for inputs and weights, and projections for the outputs of multi-output ops.
use egg::{FromOp, Id, Language};
use std::fmt;
use xforge_ir::{Attrs, Op};

/// What an e-node is, without its children.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Head {
    /// Graph input, by position.
    Input(u32),
    /// A weight, by value index in the source graph (from `RULE_WEIGHTS` up: one a rule made).
    Weight(u32),
    /// An omitted optional input.
    Absent,
    /// An op; `attrs` indexes `NodeTable` (`ANY_ATTRS` in patterns: matches any).
    Op { op: Op, attrs: u32 },
    /// Output `k` of a multi-output op.
    Out(u32),
}

/// Keys of the weights rules make (`FusionAnalysis::rule_weight`), above any source value index.
pub const RULE_WEIGHTS: u32 = 1 << 31;

/// Patterns match ops whatever their attributes; appliers check those they care about.
pub const ANY_ATTRS: u32 = u32::MAX;

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ENode {
    pub head: Head,
    pub args: Vec<Id>,
}

impl Language for ENode {
    type Discriminant = (std::mem::Discriminant<Head>, Option<Op>, usize);

    fn discriminant(&self) -> Self::Discriminant {
        let op = match self.head {
            Head::Op { op, .. } => Some(op),
            _ => None,
        };
        (std::mem::discriminant(&self.head), op, self.args.len())
    }

    fn matches(&self, other: &Self) -> bool {
        self.args.len() == other.args.len()
            && match (&self.head, &other.head) {
                (Head::Op { op: a, attrs: x }, Head::Op { op: b, attrs: y }) => {
                    a == b && (*x == ANY_ATTRS || *y == ANY_ATTRS || x == y)
                }
                (a, b) => a == b,
            }
    }

    fn children(&self) -> &[Id] {
        &self.args
    }

    fn children_mut(&mut self) -> &mut [Id] {
        &mut self.args
    }
}

impl fmt::Display for ENode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.head {
            Head::Input(i) => write!(f, "input{i}"),
            Head::Weight(w) => write!(f, "weight{w}"),
            Head::Absent => f.write_str("absent"),
            Head::Op { op, .. } => write!(f, "{op}"),
            Head::Out(k) => write!(f, "out{k}"),
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("'{0}' is not an op")]
pub struct UnknownOp(String);

impl FromOp for ENode {
    type Error = UnknownOp;

    fn from_op(op: &str, args: Vec<Id>) -> Result<Self, Self::Error> {
        if let Some(k) = op.strip_prefix("out").and_then(|k| k.parse().ok()) {
            return Ok(ENode { head: Head::Out(k), args });
        }
        let op = Op::from_name(op).ok_or_else(|| UnknownOp(op.to_string()))?;
        Ok(ENode { head: Head::Op { op, attrs: ANY_ATTRS }, args })
    }
}

/// Attributes and names of the ops in the e-graph, by index.
#[derive(Debug, Default, Clone)]
pub struct NodeTable {
    pub attrs: Vec<Attrs>,
    pub names: Vec<String>,
    /// Number of outputs each op node has (tuple ops are projected with `Out`).
    pub outputs: Vec<usize>,
    /// Entries of rule-built nodes by content, so a rule applied twice builds the same e-node.
    interned: std::collections::HashMap<String, u32>,
}

impl NodeTable {
    /// The entry for a rule-built node of one output: one per distinct (op, attributes).
    pub fn intern(&mut self, op: Op, attrs: Attrs) -> u32 {
        self.intern_outputs(op, attrs, 1)
    }

    /// The entry for a rule-built node of `outputs` outputs (projected with `Out`).
    pub fn intern_outputs(&mut self, op: Op, attrs: Attrs, outputs: usize) -> u32 {
        let key = format!("{op}{attrs:?}/{outputs}");
        if let Some(&i) = self.interned.get(&key) {
            return i;
        }
        let i = self.add(format!("fused_{}", op.name().to_lowercase()), attrs, outputs);
        self.interned.insert(key, i);
        i
    }

    pub fn add(&mut self, name: String, attrs: Attrs, outputs: usize) -> u32 {
        self.attrs.push(attrs);
        self.names.push(name);
        self.outputs.push(outputs);
        (self.attrs.len() - 1) as u32
    }
}
