//! The schema check every imported node passes after type inference: the op exists in the
//! model's opset, has its required attributes, takes as many inputs and outputs as the node
//! gives, and each operand has an
//! element type its schema allows, operands bound to one type parameter sharing one type (the
//! ONNX checker's and onnxruntime's rules; the table is `op_types.rs`, generated from onnx.defs).
use crate::op_types::{op_versions, Arity, OpVersion};
use crate::ImportError;
use xforge_ir::{Attr, DType, Graph, Node};

/// Checks every node of `g` and of its subgraphs.
pub fn check(g: &Graph) -> Result<(), ImportError> {
    for n in &g.nodes {
        check_node(g, n).map_err(|msg| ImportError::Schema { node: n.name.clone(), op: n.op.name().into(), msg })?;
        for a in n.attrs.values() {
            if let Attr::Graph(sub) = a {
                check(sub)?;
            }
        }
    }
    Ok(())
}

/// The schema version in force at `opset`: the newest one not newer than it.
fn version(op: &str, opset: i64) -> Result<Option<&'static OpVersion>, String> {
    let Some(vs) = op_versions(op) else { return Ok(None) };
    match vs.iter().rev().find(|v| v.since <= opset) {
        Some(v) => Ok(Some(v)),
        None => Err(format!("{op} does not exist in opset {opset} (it arrives in opset {})", vs[0].since)),
    }
}

fn check_node(g: &Graph, n: &Node) -> Result<(), String> {
    // xforge's own ops (com.xforge) have no ONNX schema
    if !n.op.domain().is_empty() {
        return Ok(());
    }
    let Some(v) = version(n.op.name(), g.opset)? else { return Ok(()) };
    let count = |what: &str, k: usize, (lo, hi): (usize, usize)| {
        if k < lo || k > hi {
            let range = if lo == hi {
                format!("{lo}")
            } else if hi >= i32::MAX as usize {
                format!("at least {lo}")
            } else {
                format!("{lo} to {hi}")
            };
            return Err(format!("has {k} {what}, opset {} {} takes {range}", g.opset, n.op.name()));
        }
        Ok(())
    };
    if let Some(a) = v.required.iter().find(|a| n.attr(a).is_none()) {
        return Err(format!("the required attribute '{a}' is missing"));
    }
    count("inputs", n.inputs.len(), v.inputs)?;
    count("outputs", n.outputs.len(), v.outputs)?;
    // each type parameter's first binding: (type, formal input that bound it)
    let mut bound: Vec<(&str, DType, &str)> = vec![];
    for (i, x) in n.inputs.iter().enumerate() {
        let Some(f) = v.formal.get(i).or_else(|| v.formal.last().filter(|f| f.arity == Arity::Variadic)) else {
            continue;
        };
        let Some(id) = x else {
            if f.arity == Arity::Single {
                return Err(format!("input {i} ({}) is required but left empty", f.name));
            }
            continue;
        };
        let dt = g.ty(*id).dtype;
        let allowed = v.allows.iter().find(|(p, _)| *p == f.ty).map(|(_, c)| *c).unwrap_or(&[]);
        if !allowed.contains(&dt.onnx_code()) {
            let names: Vec<String> =
                allowed.iter().filter_map(|&c| DType::from_onnx_code(c)).map(|d| d.to_string()).collect();
            let takes = if names.is_empty() { "no tensor".to_string() } else { names.join(", ") };
            return Err(format!(
                "input {i} ({}, '{}') is {dt}, which type {} does not allow (it takes {takes})",
                f.name,
                g.name_of(*id),
                f.ty
            ));
        }
        if !f.homogeneous {
            continue;
        }
        match bound.iter().find(|(p, _, _)| *p == f.ty) {
            Some(&(_, first, by)) if first != dt => {
                return Err(format!(
                    "input {i} ({}, '{}') is {dt} but type {} is {first}, bound by input {by}",
                    f.name,
                    g.name_of(*id),
                    f.ty
                ))
            }
            Some(_) => {}
            None => bound.push((f.ty, dt, f.name)),
        }
    }
    Ok(())
}
