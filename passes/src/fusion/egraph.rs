//! Between graphs and e-graphs: every value becomes an e-class, every node an e-node; after
//! saturation, the chosen e-nodes become a graph again (original names kept where they exist).
use super::analysis::{FusionAnalysis, FusionGraph};
use super::language::{ENode, Head, RULE_WEIGHTS};
use egg::Id;
use std::collections::{HashMap, HashSet};
use xforge_ir::{Graph, Node, Op, ValueId, ValueType};

/// A graph loaded into an e-graph.
pub struct Loaded {
    pub egraph: FusionGraph,
    /// E-classes of the graph outputs, in order.
    pub roots: Vec<Id>,
    /// A name for the value of an e-class (the source graph's), by e-class.
    pub names: HashMap<Id, String>,
}

pub fn load(g: &Graph) -> Loaded {
    let analysis = FusionAnalysis {
        inputs: g.inputs.iter().map(|&i| g.ty(i).clone()).collect(),
        weights: g.weights.iter().map(|(k, t)| (k.0, t.clone())).collect(),
        opset: g.opset,
        ..Default::default()
    };
    let mut eg = FusionGraph::new(analysis);
    let mut class: Vec<Option<Id>> = vec![None; g.values.len()];
    let mut names = HashMap::new();
    for (k, &i) in g.inputs.iter().enumerate() {
        let id = eg.add(ENode { head: Head::Input(k as u32), args: vec![] });
        class[i.index()] = Some(id);
        names.insert(id, g.name_of(i).to_string());
    }
    for &w in g.weights.keys() {
        let id = eg.add(ENode { head: Head::Weight(w.0), args: vec![] });
        class[w.index()] = Some(id);
        names.insert(id, g.name_of(w).to_string());
    }
    let absent = eg.add(ENode { head: Head::Absent, args: vec![] });
    for n in &g.nodes {
        let args: Vec<Id> =
            n.inputs.iter().map(|i| i.map_or(absent, |v| class[v.index()].expect("topological order"))).collect();
        let attrs = eg.analysis.table.add(n.name.clone(), n.attrs.clone(), n.outputs.len());
        let id = eg.add(ENode { head: Head::Op { op: n.op, attrs }, args });
        if n.outputs.len() == 1 {
            if let Some(o) = n.outputs[0] {
                class[o.index()] = Some(id);
                names.insert(id, g.name_of(o).to_string());
            }
        } else {
            for (k, o) in n.outputs.iter().enumerate() {
                if let Some(o) = o {
                    let p = eg.add(ENode { head: Head::Out(k as u32), args: vec![id] });
                    class[o.index()] = Some(p);
                    names.insert(p, g.name_of(*o).to_string());
                }
            }
        }
    }
    let roots = g.outputs.iter().map(|o| class[o.index()].expect("outputs are defined")).collect();
    eg.rebuild();
    Loaded { egraph: eg, roots, names }
}

/// Names of the values being built, kept unique.
struct Names {
    used: HashSet<String>,
    counter: usize,
}

impl Names {
    fn fresh(&mut self, base: Option<&str>) -> String {
        let base = base.unwrap_or("fused");
        let mut n = base.to_string();
        while self.used.contains(&n) {
            self.counter += 1;
            n = format!("{base}_{}", self.counter);
        }
        self.used.insert(n.clone());
        n
    }
}

/// Rebuilds a graph from an e-graph, one chosen e-node per e-class.
struct Builder<'a> {
    l: &'a Loaded,
    choice: &'a dyn Fn(Id) -> ENode,
    template: &'a Graph,
    g: Graph,
    values: HashMap<Id, Option<ValueId>>,
    class_names: HashMap<Id, String>,
    names: Names,
}

impl Builder<'_> {
    fn build(&mut self, id: Id) -> Option<ValueId> {
        let eg = &self.l.egraph;
        let id = eg.find(id);
        if let Some(v) = self.values.get(&id) {
            return *v;
        }
        let node = (self.choice)(id);
        let v = match &node.head {
            Head::Absent => None,
            Head::Input(_) => unreachable!("inputs are bound first"),
            Head::Weight(w) if *w >= RULE_WEIGHTS => {
                let a = &eg.analysis;
                let t = a.weights[w].clone();
                let name = self.names.fresh(Some(&a.rule_weight_names[w]));
                let v = self.g.add_value(name, ValueType::known(t.dtype(), t.shape()));
                self.g.weights.insert(v, t);
                Some(v)
            }
            Head::Weight(w) => {
                let src = ValueId(*w);
                let name = self.names.fresh(Some(self.template.name_of(src)));
                let v = self.g.add_value(name, self.template.ty(src).clone());
                self.g.weights.insert(v, self.template.weights[&src].clone());
                Some(v)
            }
            Head::Out(_) => {
                // building the tuple binds every projection that is read
                self.build(node.args[0]);
                return self.values.get(&id).copied().flatten();
            }
            Head::Op { op, attrs } => {
                let inputs: Vec<Option<ValueId>> = node.args.iter().map(|&c| self.build(c)).collect();
                let eg = &self.l.egraph;
                let a = *attrs as usize;
                let n_out = eg.analysis.table.outputs[a];
                let facts = eg[id].data.facts.clone();
                let mut outputs = vec![];
                if n_out == 1 {
                    // a value the source graph named keeps its name; a rule-built one is named for its op
                    let base = self.class_names.get(&id).cloned().unwrap_or_else(|| eg.analysis.table.names[a].clone());
                    let name = self.names.fresh(Some(&base));
                    outputs.push(Some(self.g.add_value(name, facts[0].ty.clone())));
                } else {
                    for k in 0..n_out {
                        let proj = eg.lookup(ENode { head: Head::Out(k as u32), args: vec![id] }).map(|p| eg.find(p));
                        let v = proj.map(|p| {
                            let name = self.names.fresh(self.class_names.get(&p).map(|s| s.as_str()));
                            let ty = facts.get(k).map_or(ValueType::unranked(facts[0].ty.dtype), |f| f.ty.clone());
                            self.g.add_value(name, ty)
                        });
                        if let Some(p) = proj {
                            self.values.insert(p, v);
                        }
                        outputs.push(v);
                    }
                }
                let table = &self.l.egraph.analysis.table;
                let name = self.names.fresh(Some(&table.names[a]));
                let attrs = table.attrs[a].clone();
                self.g.nodes.push(Node { name, op: *op, inputs, outputs: outputs.clone(), attrs });
                if n_out == 1 {
                    outputs[0]
                } else {
                    None
                }
            }
        };
        self.values.insert(id, v);
        v
    }
}

/// The e-classes the chosen e-nodes reach from `roots`, each after the classes it reads.
fn post_order(eg: &FusionGraph, choice: &dyn Fn(Id) -> ENode, roots: &[Id]) -> Vec<Id> {
    let mut order = vec![];
    let mut seen: HashSet<Id> = HashSet::new();
    let mut stack: Vec<(Id, bool)> = roots.iter().rev().map(|&r| (eg.find(r), false)).collect();
    while let Some((id, done)) = stack.pop() {
        if done {
            order.push(id);
            continue;
        }
        if !seen.insert(id) {
            continue;
        }
        stack.push((id, true));
        for &c in choice(id).args.iter().rev() {
            let c = eg.find(c);
            if !seen.contains(&c) {
                stack.push((c, false));
            }
        }
    }
    order
}

/// Builds the graph that the chosen e-node of each e-class (`choice`) describes.
pub fn unload(l: &Loaded, choice: &dyn Fn(Id) -> ENode, template: &Graph) -> Graph {
    let eg = &l.egraph;
    let out_names: Vec<String> = template.outputs.iter().map(|&o| template.name_of(o).to_string()).collect();
    let mut used: HashSet<String> = out_names.iter().cloned().collect();
    used.extend(template.inputs.iter().map(|&i| template.name_of(i).to_string()));
    let mut b = Builder {
        l,
        choice,
        template,
        g: Graph { name: template.name.clone(), opset: template.opset, ..Graph::default() },
        values: HashMap::new(),
        class_names: l.names.iter().map(|(k, v)| (eg.find(*k), v.clone())).collect(),
        names: Names { used, counter: 0 },
    };
    // inputs keep their order and names even when unused
    for (k, &i) in template.inputs.iter().enumerate() {
        let v = b.g.add_value(template.name_of(i), template.ty(i).clone());
        b.g.inputs.push(v);
        let id = eg.lookup(ENode { head: Head::Input(k as u32), args: vec![] }).expect("input class");
        b.values.insert(eg.find(id), Some(v));
    }
    // children before parents, found without recursion (a 20,000-node chain overflowed the
    // stack when `build` recursed), so each `build` finds its operands already built
    for id in post_order(eg, choice, &l.roots) {
        b.build(id);
    }
    let outs: Vec<ValueId> = l.roots.iter().map(|&r| b.build(r).expect("a graph output has a value")).collect();
    let mut g = b.g;
    for (v, want) in outs.into_iter().zip(out_names) {
        let v = if g.inputs.contains(&v) && g.name_of(v) == want {
            v
        } else if g.outputs.contains(&v) || g.inputs.contains(&v) || g.weights.contains_key(&v) {
            // a value that is already an output, an input or a weight: copy it under the name
            let o = g.add_value(want.clone(), g.ty(v).clone());
            g.nodes.push(Node {
                name: format!("{want}_identity"),
                op: Op::Identity,
                inputs: vec![Some(v)],
                outputs: vec![Some(o)],
                attrs: Default::default(),
            });
            o
        } else {
            g.values[v.index()].name = want;
            v
        };
        g.outputs.push(v);
    }
    g
}
