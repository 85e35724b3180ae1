//! ONNX `ModelProto` → xforge `Graph`.
use crate::error::ImportError;
use crate::tensor_proto::decode;
use onnx_protobuf::{
    attribute_proto::AttributeType, AttributeProto, GraphProto, ModelProto, NodeProto, ValueInfoProto,
};
use protobuf::Message;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;
use xforge_ir::dtype::onnx_type_name;
use xforge_ir::{Attr, DType, Dim, Graph, Node, Op, ValueId, ValueType};

/// Default-domain opsets whose op semantics the interpreter implements.
pub const MIN_OPSET: i64 = 7;
pub const MAX_OPSET: i64 = 28;
/// The newest IR version read (onnxruntime's limit too).
pub const MAX_IR_VERSION: i64 = 14;

/// How to bind symbolic dims at import: an input name with a full shape, or a dim symbol with a size.
#[derive(Clone, Debug, Default)]
pub struct ImportOptions {
    pub shapes: BTreeMap<String, Vec<usize>>,
    /// Inputs whose values are given at compile time: they become constants (initializers),
    /// so what depends only on them folds (shape operands, axes, pads, ...).
    pub constants: BTreeMap<String, xforge_ir::Tensor>,
}

/// An imported model.
#[derive(Clone, Debug)]
pub struct Model {
    pub graph: Graph,
    pub ir_version: i64,
    pub opset: i64,
    pub producer: String,
}

/// Loads an ONNX file; external data is read relative to its folder.
pub fn load(path: &Path, opts: &ImportOptions) -> Result<Model, ImportError> {
    let bytes = std::fs::read(path).map_err(|source| ImportError::Io { path: path.to_path_buf(), source })?;
    let base = path.parent().map(|p| if p.as_os_str().is_empty() { Path::new(".") } else { p });
    parse(&bytes, base, opts).map_err(|e| match e {
        ImportError::Decode { msg, .. } => ImportError::Decode { path: path.to_path_buf(), msg },
        e => e,
    })
}

/// Parses an ONNX model from bytes.
pub fn parse(bytes: &[u8], base: Option<&Path>, opts: &ImportOptions) -> Result<Model, ImportError> {
    let m = ModelProto::parse_from_bytes(bytes)
        .map_err(|e| ImportError::Decode { path: "<bytes>".into(), msg: e.to_string() })?;
    crate::wire::check_unambiguous(bytes).map_err(|msg| ImportError::Decode { path: "<bytes>".into(), msg })?;
    let opset = m.opset_import.iter().find(|o| o.domain.is_empty() || o.domain == "ai.onnx").map(|o| o.version);
    let Some(opset) = opset else {
        // a model of other domains only: name its first op
        let n = m.graph.as_ref().and_then(|g| g.node.first());
        return Err(match n {
            Some(n) => ImportError::UnsupportedOp {
                node: node_name(n, 0),
                op: n.op_type.clone(),
                domain: format!(" of domain '{}'", n.domain),
            },
            None => ImportError::NoDefaultOpset,
        });
    };
    if !(MIN_OPSET..=MAX_OPSET).contains(&opset) {
        return Err(ImportError::UnsupportedOpset { version: opset, min: MIN_OPSET, max: MAX_OPSET });
    }
    // the IR version says how to read the rest (onnxruntime refuses a model without one)
    if !(1..=MAX_IR_VERSION).contains(&m.ir_version) {
        return Err(ImportError::UnsupportedIrVersion { version: m.ir_version, max: MAX_IR_VERSION });
    }
    let gp = m.graph.as_ref().ok_or(ImportError::NoGraph)?;
    if gp.node.is_empty() && gp.output.is_empty() {
        return Err(ImportError::NoGraph);
    }
    let cx = Ctx { opset, base };
    let mut graph = cx.graph(gp, &HashSet::new())?;
    bind_constants(&mut graph, &opts.constants)?;
    bind_shapes(&mut graph, &opts.shapes)?;
    xforge_ir::infer::infer_graph(&mut graph)?;
    crate::operand_types::check(&graph)?;
    xforge_ir::verify::verify(&graph)?;
    Ok(Model {
        graph,
        ir_version: m.ir_version,
        opset,
        producer: format!("{} {}", m.producer_name, m.producer_version).trim().to_string(),
    })
}

/// Turns the named inputs into constants holding the given values.
fn bind_constants(g: &mut Graph, constants: &BTreeMap<String, xforge_ir::Tensor>) -> Result<(), ImportError> {
    for (name, t) in constants {
        let Some(at) = g.inputs.iter().position(|&i| g.name_of(i) == name) else {
            return Err(ImportError::BadBinding(format!(
                "'{name}' is not a graph input (only inputs can be made constant)"
            )));
        };
        let id = g.inputs[at];
        let ty = g.ty(id);
        if ty.dtype != t.dtype() || !ty.admits(t.shape()) {
            return Err(ImportError::BadBinding(format!(
                "{name}: the input is {ty}, the constant {} {:?}",
                t.dtype(),
                t.shape()
            )));
        }
        g.inputs.remove(at);
        g.values[id.index()].ty = ValueType::known(t.dtype(), t.shape());
        g.weights.insert(id, t.clone());
    }
    Ok(())
}

fn bind_shapes(g: &mut Graph, shapes: &BTreeMap<String, Vec<usize>>) -> Result<(), ImportError> {
    let mut syms: HashMap<String, usize> = HashMap::new();
    for (name, dims) in shapes {
        match g.inputs.iter().find(|&&i| g.name_of(i) == name) {
            Some(&id) => {
                let ty = &mut g.values[id.index()].ty;
                let declared = ty.shape.clone().unwrap_or_else(|| dims.iter().map(|_| Dim::Sym("?".into())).collect());
                if declared.len() != dims.len() {
                    return Err(ImportError::BadBinding(format!(
                        "{name}: the input has rank {}, the binding {}",
                        declared.len(),
                        dims.len()
                    )));
                }
                for (d, &v) in declared.iter().zip(dims) {
                    match d {
                        Dim::Known(k) if *k != v => {
                            return Err(ImportError::BadBinding(format!(
                                "{name}: the model fixes {} but the binding says {dims:?}",
                                xforge_ir::shape::shape_str(&Some(declared.clone()))
                            )))
                        }
                        Dim::Sym(s) => {
                            if let Some(&prev) = syms.get(s) {
                                if prev != v {
                                    return Err(ImportError::BadBinding(format!(
                                        "{name}: dim '{s}' is bound to both {prev} and {v}"
                                    )));
                                }
                            }
                            syms.insert(s.clone(), v);
                        }
                        _ => {}
                    }
                }
                ty.shape = Some(dims.iter().map(|&v| Dim::Known(v)).collect());
            }
            None if dims.len() == 1 && mentions_symbol(g, name) => {
                syms.insert(name.clone(), dims[0]);
            }
            None => return Err(ImportError::BadBinding(format!("'{name}' is neither a graph input nor a dim symbol"))),
        }
    }
    for &id in &g.inputs {
        if let Some(shape) = &mut g.values[id.index()].ty.shape {
            for d in shape.iter_mut() {
                if let Dim::Sym(s) = d {
                    if let Some(&v) = syms.get(s) {
                        *d = Dim::Known(v);
                    }
                }
            }
        }
    }
    Ok(())
}

/// Whether any graph input has a dim named `sym`.
fn mentions_symbol(g: &Graph, sym: &str) -> bool {
    g.inputs
        .iter()
        .any(|&i| g.ty(i).shape.as_ref().is_some_and(|s| s.iter().any(|d| matches!(d, Dim::Sym(x) if x == sym))))
}

struct Ctx<'a> {
    opset: i64,
    base: Option<&'a Path>,
}

/// Names a graph uses but does not define (what its subgraph nodes capture), recursively.
fn free_names(g: &GraphProto) -> HashSet<String> {
    let mut defined: HashSet<&str> = g.input.iter().map(|v| v.name.as_str()).collect();
    defined.extend(g.initializer.iter().map(|t| t.name.as_str()));
    for n in &g.node {
        defined.extend(n.output.iter().map(|s| s.as_str()));
    }
    let mut free = HashSet::new();
    for n in &g.node {
        for i in n.input.iter().filter(|s| !s.is_empty()) {
            if !defined.contains(i.as_str()) {
                free.insert(i.clone());
            }
        }
        for a in &n.attribute {
            for sub in a.g.as_ref().into_iter().chain(a.graphs.iter()) {
                free.extend(free_names(sub).into_iter().filter(|s| !defined.contains(s.as_str())));
            }
        }
    }
    for o in &g.output {
        if !defined.contains(o.name.as_str()) {
            free.insert(o.name.clone());
        }
    }
    free
}

/// Placeholder type of a value whose type is not declared (listed in `Graph::undeclared`).
const OPEN: ValueType = ValueType { dtype: DType::F32, shape: None };

/// The declared type of a value, `None` when the model leaves it open.
/// A tensor type whose element type is 0 (UNDEFINED).
fn undefined_elem(v: &ValueInfoProto) -> bool {
    matches!(v.type_.as_ref().and_then(|t| t.value.as_ref()),
        Some(onnx_protobuf::type_proto::Value::TensorType(t)) if t.elem_type == 0)
}

fn value_type(v: &ValueInfoProto, what: &'static str, fresh: &mut usize) -> Result<Option<ValueType>, ImportError> {
    let Some(tp) = v.type_.as_ref() else { return Ok(None) };
    use onnx_protobuf::type_proto::Value;
    match &tp.value {
        None => Ok(None),
        Some(Value::TensorType(t)) => {
            if t.elem_type == 0 {
                return Ok(None);
            }
            let dtype = DType::from_onnx_code(t.elem_type).ok_or_else(|| ImportError::UnsupportedDtype {
                what,
                name: v.name.clone(),
                dtype: onnx_type_name(t.elem_type).to_string(),
            })?;
            let shape = t.shape.as_ref().map(|s| {
                s.dim
                    .iter()
                    .map(|d| {
                        use onnx_protobuf::tensor_shape_proto::dimension::Value as D;
                        match &d.value {
                            Some(D::DimValue(n)) if *n >= 0 => Dim::Known(*n as usize),
                            Some(D::DimParam(p)) if !p.is_empty() => Dim::Sym(p.clone()),
                            _ => {
                                *fresh += 1;
                                Dim::Sym(format!("?{}_{}", v.name, fresh))
                            }
                        }
                    })
                    .collect()
            });
            Ok(Some(ValueType { dtype, shape }))
        }
        Some(other) => Err(ImportError::UnsupportedDtype {
            what,
            name: v.name.clone(),
            dtype: match other {
                Value::SequenceType(_) => "sequence",
                Value::MapType(_) => "map",
                Value::OptionalType(_) => "optional",
                _ => "non-tensor type",
            }
            .to_string(),
        }),
    }
}

impl Ctx<'_> {
    /// Converts a graph; `outer` holds the names enclosing graphs define.
    fn graph(&self, gp: &GraphProto, outer: &HashSet<String>) -> Result<Graph, ImportError> {
        let mut g = Graph { name: gp.name.clone(), opset: self.opset, ..Graph::default() };
        let mut ids: HashMap<String, ValueId> = HashMap::new();
        let mut origin: HashMap<String, String> = HashMap::new();
        let mut fresh = 0usize;
        let mut define = |g: &mut Graph, ids: &mut HashMap<String, ValueId>, name: &str, ty: ValueType, by: String| {
            if let Some(first) = origin.get(name) {
                return Err(ImportError::Redefined { name: name.to_string(), first: first.clone(), second: by });
            }
            origin.insert(name.to_string(), by);
            let id = g.add_value(name, ty);
            ids.insert(name.to_string(), id);
            Ok(id)
        };
        for t in &gp.initializer {
            let tensor = decode(t, self.base)?;
            let id = define(
                &mut g,
                &mut ids,
                &t.name,
                ValueType::known(tensor.dtype(), tensor.shape()),
                format!("initializer '{}'", t.name),
            )?;
            g.weights.insert(id, tensor);
        }
        if !gp.sparse_initializer.is_empty() {
            return Err(ImportError::BadTensor {
                name: "<sparse initializer>".into(),
                msg: "sparse initializers are not supported".into(),
            });
        }
        for v in &gp.input {
            if let Some(&id) = ids.get(&v.name) {
                // IR < 4 lists initializers as inputs too: the initializer is the value
                if g.weights.contains_key(&id) {
                    continue;
                }
            }
            // a tensor type of element type 0 (onnxruntime refuses it; a body input may leave
            // its type out altogether)
            if undefined_elem(v) && !outer.is_empty() {
                return Err(ImportError::BadType {
                    name: v.name.clone(),
                    msg: "subgraph input has element type 0 (undefined)".into(),
                });
            }
            let ty = value_type(v, "input", &mut fresh)?;
            if ty.is_none() && outer.is_empty() {
                return Err(ImportError::BadType {
                    name: v.name.clone(),
                    msg: "graph input has no tensor type".into(),
                });
            }
            let id =
                define(&mut g, &mut ids, &v.name, ty.clone().unwrap_or(OPEN), format!("graph input '{}'", v.name))?;
            if ty.is_none() {
                g.undeclared.insert(id);
            }
            g.inputs.push(id);
        }
        let declared: HashMap<&str, &ValueInfoProto> =
            gp.value_info.iter().chain(gp.output.iter()).map(|v| (v.name.as_str(), v)).collect();
        // topological order: stable Kahn over data and capture dependencies
        let producer: HashMap<&str, usize> = gp
            .node
            .iter()
            .enumerate()
            .flat_map(|(i, n)| n.output.iter().filter(|o| !o.is_empty()).map(move |o| (o.as_str(), i)))
            .collect();
        let mut deps: Vec<Vec<usize>> = vec![vec![]; gp.node.len()];
        let mut captures: Vec<String> = vec![];
        for (i, n) in gp.node.iter().enumerate() {
            let mut names: Vec<String> = n.input.iter().filter(|s| !s.is_empty()).cloned().collect();
            for a in &n.attribute {
                for sub in a.g.as_ref().into_iter().chain(a.graphs.iter()) {
                    names.extend(free_names(sub));
                }
            }
            for name in names {
                if let Some(&p) = producer.get(name.as_str()) {
                    deps[i].push(p);
                } else if !ids.contains_key(&name) {
                    if outer.contains(&name) {
                        if !captures.contains(&name) {
                            captures.push(name);
                        }
                    } else if n.input.contains(&name) {
                        return Err(ImportError::Dangling {
                            node: node_name(n, i),
                            op: n.op_type.clone(),
                            input: name,
                        });
                    } else {
                        return Err(ImportError::Dangling {
                            node: node_name(n, i),
                            op: format!("{} subgraph", n.op_type),
                            input: name,
                        });
                    }
                }
            }
        }
        for o in &gp.output {
            if !producer.contains_key(o.name.as_str())
                && !ids.contains_key(&o.name)
                && outer.contains(&o.name)
                && !captures.contains(&o.name)
            {
                captures.push(o.name.clone());
            }
        }
        for name in &captures {
            let id = define(&mut g, &mut ids, name, OPEN, format!("enclosing graph's '{name}'"))?;
            g.undeclared.insert(id);
            g.captures.push(id);
        }
        let order = topo_order(gp, &deps)?;
        let mut visible: HashSet<String> = outer.clone();
        visible.extend(ids.keys().cloned());
        visible.extend(producer.keys().map(|s| s.to_string()));
        for i in order {
            let n = &gp.node[i];
            let name = node_name(n, i);
            // default-domain ops by their ONNX names; xforge's own (com.xforge) in their domain
            let domain = if n.domain == "ai.onnx" { "" } else { n.domain.as_str() };
            let op =
                Op::from_name(&n.op_type).filter(|op| !op.is_internal() && op.domain() == domain).ok_or_else(|| {
                    ImportError::UnsupportedOp {
                        node: name.clone(),
                        op: n.op_type.clone(),
                        domain: if domain.is_empty() { String::new() } else { format!(" of domain '{domain}'") },
                    }
                })?;
            let mut attrs = BTreeMap::new();
            // default-domain ops take only the attributes their schema names (the ONNX checker
            // and onnxruntime refuse others: a misspelt attribute must not be ignored silently)
            let known = if domain.is_empty() { crate::attr_names::attr_schema(&n.op_type) } else { None };
            for a in &n.attribute {
                let bad = |msg: String| ImportError::BadAttribute {
                    node: name.clone(),
                    op: n.op_type.clone(),
                    attr: a.name.clone(),
                    msg,
                };
                let kinds = known.map(|k| k.iter().find(|(an, _)| *an == a.name).map(|(_, kinds)| *kinds));
                if let Some(None) = kinds {
                    let k: Vec<&str> = known.unwrap_or_default().iter().map(|(an, _)| *an).collect();
                    let takes = if k.is_empty() { "none".to_string() } else { k.join(", ") };
                    return Err(bad(format!("{} takes no such attribute (it takes: {takes})", n.op_type)));
                }
                let v = self.attr(a, n, &name, &visible)?;
                // of the type its schema gives (the ONNX checker and onnxruntime refuse others)
                if let Some(Some(kinds)) = kinds {
                    if !kinds.contains(&v.kind()) {
                        return Err(bad(format!("must be {}, got {}", kinds.join(" or "), v.kind())));
                    }
                }
                if attrs.insert(a.name.clone(), v).is_some() {
                    return Err(bad("the attribute is given twice".into()));
                }
            }
            let inputs = n.input.iter().map(|s| if s.is_empty() { None } else { Some(ids[s]) }).collect();
            let mut outputs = vec![];
            for o in &n.output {
                if o.is_empty() {
                    outputs.push(None);
                    continue;
                }
                let ty = match declared.get(o.as_str()) {
                    Some(v) => value_type(v, "value", &mut fresh)?,
                    None => None,
                };
                let id = define(&mut g, &mut ids, o, ty.clone().unwrap_or(OPEN), format!("node '{name}'"))?;
                if ty.is_none() {
                    g.undeclared.insert(id);
                }
                outputs.push(Some(id));
            }
            g.nodes.push(Node { name, op, inputs, outputs, attrs });
        }
        for o in &gp.output {
            let id = *ids.get(&o.name).ok_or_else(|| ImportError::DanglingOutput(o.name.clone()))?;
            // the model's outputs name their element type (onnxruntime: "Invalid tensor data type
            // 0"; it lets a branch's outputs leave it to inference)
            if undefined_elem(o) && outer.is_empty() {
                return Err(ImportError::BadType {
                    name: o.name.clone(),
                    msg: "graph output has element type 0 (undefined)".into(),
                });
            }
            if let Some(ty) = value_type(o, "output", &mut fresh)? {
                let cur = g.ty(id).clone();
                if g.undeclared.contains(&id) && !g.captures.contains(&id) {
                    g.values[id.index()].ty = ty;
                    g.undeclared.remove(&id);
                } else if cur.dtype != ty.dtype && !g.undeclared.contains(&id) {
                    return Err(ImportError::BadType {
                        name: o.name.clone(),
                        msg: format!("declared as {} but defined as {}", ty.dtype, cur.dtype),
                    });
                }
            }
            g.outputs.push(id);
        }
        Ok(g)
    }

    fn attr(
        &self,
        a: &AttributeProto,
        n: &NodeProto,
        node: &str,
        visible: &HashSet<String>,
    ) -> Result<Attr, ImportError> {
        let bad = |msg: String| ImportError::BadAttribute {
            node: node.to_string(),
            op: n.op_type.clone(),
            attr: a.name.clone(),
            msg,
        };
        if !a.ref_attr_name.is_empty() {
            return Err(bad("attribute references are only valid inside functions".into()));
        }
        let text = |b: &[u8]| String::from_utf8(b.to_vec()).map_err(|_| bad("string is not UTF-8".into()));
        Ok(match a.type_.enum_value() {
            Ok(AttributeType::FLOAT) => Attr::Float(a.f),
            Ok(AttributeType::INT) => Attr::Int(a.i),
            Ok(AttributeType::STRING) => Attr::Str(text(&a.s)?),
            Ok(AttributeType::FLOATS) => Attr::Floats(a.floats.clone()),
            Ok(AttributeType::INTS) => Attr::Ints(a.ints.clone()),
            Ok(AttributeType::STRINGS) => Attr::Strs(a.strings.iter().map(|s| text(s)).collect::<Result<_, _>>()?),
            Ok(AttributeType::TENSOR) => Attr::Tensor(decode(
                a.t.as_ref().ok_or_else(|| bad("tensor attribute has no tensor".into()))?,
                self.base,
            )?),
            Ok(AttributeType::GRAPH) => {
                let sub = a.g.as_ref().ok_or_else(|| bad("graph attribute has no graph".into()))?;
                Attr::Graph(Arc::new(self.graph(sub, visible)?))
            }
            Ok(t) => return Err(bad(format!("attributes of type {t:?} are not supported"))),
            Err(code) => return Err(bad(format!("unknown attribute type {code}"))),
        })
    }
}

fn node_name(n: &NodeProto, i: usize) -> String {
    if n.name.is_empty() {
        format!("{}_{i}", n.op_type)
    } else {
        n.name.clone()
    }
}

fn topo_order(gp: &GraphProto, deps: &[Vec<usize>]) -> Result<Vec<usize>, ImportError> {
    xforge_ir::graph::stable_topo_order(deps).map_err(|stuck| ImportError::Cycle(node_name(&gp.node[stuck], stuck)))
}
