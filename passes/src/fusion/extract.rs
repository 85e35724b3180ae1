//! DAG-aware extraction: the cost of choosing an e-node is its own price plus the price of
//! every distinct e-class its choice depends on, each counted once (a tree cost counts shared
//! values once per use, which doubles at every residual connection). Greedy, to a fixed point.
use super::analysis::FusionGraph;
use super::cost::NodeCost;
use super::language::ENode;
use egg::Id;
use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;

/// The chosen node of a class, its own price, and the classes (with prices) below it.
#[derive(Clone)]
struct Choice {
    node: ENode,
    total: f64,
    below: Rc<BTreeMap<Id, f64>>,
    /// The price of the classes dropped from `below` (the farthest back) to bound its size.
    far: f64,
}

/// Entries of all the `below` sets together that extraction may hold: on larger graphs each set
/// keeps only its nearest classes (ids grow children first) and the rest is one price, taken as
/// shared between children (exact for chains and common trunks); a 20,000-node chain otherwise
/// held 2·10⁸ entries (5.8 GB).
const BELOW_BUDGET: usize = 40_000_000;

/// One e-node per e-class, cheapest by DAG cost; sweeps until nothing changes (at most
/// `max_passes`, a safety bound).
pub fn extract(eg: &FusionGraph, price: &NodeCost<'_>, max_passes: usize) -> HashMap<Id, ENode> {
    let mut best: HashMap<Id, Choice> = HashMap::new();
    let own: HashMap<(Id, usize), f64> = eg
        .classes()
        .flat_map(|c| c.nodes.iter().enumerate().map(move |(k, n)| ((c.id, k), price(eg, n, c.id))))
        .collect();
    // ids grow as classes are made, children first: ascending order settles most in one sweep
    let mut classes: Vec<&egg::EClass<ENode, _>> = eg.classes().collect();
    classes.sort_by_key(|c| c.id);
    let window = (BELOW_BUDGET / classes.len().max(1)).max(256);
    // only a class whose children's choices moved can move: the sweeps after the first
    // revisit those (DenseNet's concatenations made whole sweeps over deep sub-DAGs cost seconds)
    let mut parents: HashMap<Id, Vec<Id>> = HashMap::new();
    for class in &classes {
        for node in &class.nodes {
            for &a in &node.args {
                parents.entry(eg.find(a)).or_default().push(class.id);
            }
        }
    }
    let mut dirty: std::collections::HashSet<Id> = classes.iter().map(|c| c.id).collect();
    for _ in 0..max_passes {
        let mut changed = false;
        for class in &classes {
            if !dirty.remove(&class.id) {
                continue;
            }
            for (k, node) in class.nodes.iter().enumerate() {
                let kids: Option<Vec<(Id, &Choice)>> = node
                    .args
                    .iter()
                    .map(|&a| {
                        let a = eg.find(a);
                        best.get(&a).map(|c| (a, c))
                    })
                    .collect();
                let Some(kids) = kids else { continue };
                // union of the children's sub-DAGs plus the children themselves
                let mut below: BTreeMap<Id, f64> = match kids.iter().max_by_key(|(_, c)| c.below.len()) {
                    Some((_, c)) => (*c.below).clone(),
                    None => BTreeMap::new(),
                };
                let mut far = kids.iter().map(|(_, c)| c.far).fold(0.0, f64::max);
                for (a, c) in &kids {
                    for (id, p) in c.below.iter() {
                        below.entry(*id).or_insert(*p);
                    }
                    below.insert(*a, c.total - c.below.values().sum::<f64>() - c.far);
                }
                if below.contains_key(&class.id) {
                    continue; // would depend on itself
                }
                while below.len() > window {
                    let (_, p) = below.pop_first().expect("over the window");
                    far += p;
                }
                let total = own[&(class.id, k)] + below.values().sum::<f64>() + far;
                let better = match best.get(&class.id) {
                    None => true,
                    Some(cur) => total < cur.total * (1.0 - 1e-9) - 1e-9,
                };
                if better {
                    best.insert(class.id, Choice { node: node.clone(), total, below: Rc::new(below), far });
                    changed = true;
                    dirty.extend(parents.get(&class.id).into_iter().flatten().copied());
                }
            }
        }
        if !changed {
            break;
        }
    }
    best.into_iter().map(|(k, c)| (k, c.node)).collect()
}
