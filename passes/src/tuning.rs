//! Measured kernel times (`xforge tune` fills them on a GPU): the fusion cost model prices a
//! contraction e-node by its measured time where the table has it, and a GEMM group takes the
//! generated kernel instead of the library call where that measured faster. Keys describe what
//! runs, never where: an op (or a whole fusion group) with its attributes and operand types.
//!
//! The file is one line per measurement, tab-separated: target, GPU, key, way, microseconds.
//! Lines that do not parse are ignored; a later line for the same (key, way) wins; a table is
//! read for one target and one GPU (by default the GPU of the file's last line for the target).
use crate::fusion::FusionGroup;
use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::Path;
use xforge_ir::{Attrs, Graph, Op, ValueType};

/// The table's file name in xforge's cache folder.
pub const FILE: &str = "tuning.tsv";

/// How a measured thing ran.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Way {
    /// A GEMM group as a vendor-library call (its epilogue split after it where needed).
    Library,
    /// A GEMM group as one generated kernel.
    Generated,
    /// One contraction node alone, the way the compiler runs it by default.
    Alone,
}

impl Way {
    pub fn name(self) -> &'static str {
        match self {
            Way::Library => "library",
            Way::Generated => "generated",
            Way::Alone => "alone",
        }
    }

    fn parse(s: &str) -> Option<Way> {
        [Way::Library, Way::Generated, Way::Alone].into_iter().find(|w| w.name() == s)
    }
}

/// One measurement.
#[derive(Clone, Debug, PartialEq)]
pub struct Measurement {
    pub target: String,
    pub gpu: String,
    pub key: String,
    pub way: Way,
    pub micros: f64,
}

impl Measurement {
    /// Its line in a table file (None where a field would break the format).
    pub fn line(&self) -> Option<String> {
        let clean = |s: &str| !s.is_empty() && !s.contains(['\t', '\n', '\r']);
        let ok = clean(&self.target) && clean(&self.gpu) && clean(&self.key) && self.micros.is_finite();
        ok.then(|| format!("{}\t{}\t{}\t{}\t{:.3}\n", self.target, self.gpu, self.key, self.way.name(), self.micros))
    }

    fn parse(l: &str) -> Option<Measurement> {
        let f: Vec<&str> = l.split('\t').collect();
        let [target, gpu, key, way, micros] = f[..] else { return None };
        let micros: f64 = micros.trim().parse().ok()?;
        if target.is_empty() || gpu.is_empty() || key.is_empty() || !micros.is_finite() || micros <= 0.0 {
            return None;
        }
        Some(Measurement { target: target.into(), gpu: gpu.into(), key: key.into(), way: Way::parse(way)?, micros })
    }
}

/// The measurements of one target on one GPU.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TuningTable {
    pub target: String,
    pub gpu: String,
    times: HashMap<(String, Way), f64>,
}

impl TuningTable {
    pub fn new(target: &str, gpu: &str) -> TuningTable {
        TuningTable { target: target.into(), gpu: gpu.into(), times: HashMap::new() }
    }

    /// The table of `target` (and `gpu`, else the GPU of the last line for the target) in the
    /// text of a table file.
    pub fn parse(text: &str, target: &str, gpu: Option<&str>) -> TuningTable {
        let lines: Vec<Measurement> =
            text.lines().filter_map(Measurement::parse).filter(|m| m.target == target).collect();
        let gpu = match gpu {
            Some(g) => g.to_string(),
            None => lines.last().map(|m| m.gpu.clone()).unwrap_or_default(),
        };
        let mut t = TuningTable::new(target, &gpu);
        for m in lines.into_iter().filter(|m| m.gpu == gpu) {
            t.times.insert((m.key, m.way), m.micros);
        }
        t
    }

    /// Reads a table file; a file that is not there is an empty table.
    pub fn read(path: &Path, target: &str, gpu: Option<&str>) -> std::io::Result<TuningTable> {
        match std::fs::read_to_string(path) {
            Ok(s) => Ok(TuningTable::parse(&s, target, gpu)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(TuningTable::new(target, gpu.unwrap_or(""))),
            Err(e) => Err(e),
        }
    }

    pub fn insert(&mut self, key: &str, way: Way, micros: f64) {
        self.times.insert((key.to_string(), way), micros);
    }

    pub fn get(&self, key: &str, way: Way) -> Option<f64> {
        self.times.get(&(key.to_string(), way)).copied()
    }

    pub fn len(&self) -> usize {
        self.times.len()
    }

    pub fn is_empty(&self) -> bool {
        self.times.is_empty()
    }

    /// Whether a GEMM group of key `key` should be a generated kernel: both ways measured and
    /// the generated one faster by the margin (`knobs::TUNED_GENERATED_MARGIN`).
    pub fn prefers_generated(&self, key: &str) -> bool {
        match (self.get(key, Way::Library), self.get(key, Way::Generated)) {
            (Some(lib), Some(gen)) => gen * crate::knobs::TUNED_GENERATED_MARGIN < lib,
            _ => false,
        }
    }

    /// The measured microseconds of a contraction node alone (the faster way when a GEMM was
    /// measured both ways as a bare group).
    pub fn node_micros(&self, key: &str) -> Option<f64> {
        self.get(key, Way::Alone)
    }
}

/// Appends measurements to a table file, creating it (and its folder) where needed.
pub fn append(path: &Path, ms: &[Measurement]) -> std::io::Result<()> {
    use std::io::Write;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let text: String = ms.iter().filter_map(Measurement::line).collect();
    let mut f = std::fs::OpenOptions::new().create(true).append(true).open(path)?;
    f.write_all(text.as_bytes())
}

/// Whether measured times price an op's e-nodes (the contractions the tuner times alone).
pub fn is_measured_op(op: Op) -> bool {
    matches!(op, Op::MatMul | Op::Gemm | Op::Conv | Op::ConvNhwc)
}

/// A 64-bit FNV-1a hash: stable across builds and platforms (std's hasher is not).
fn fnv(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ b as u64).wrapping_mul(0x0100_0000_01b3))
}

/// The key of one op with its attributes and operand types: the op, the types, and a hash of
/// the attributes (readable, and short enough for a line).
pub fn op_key(op: Op, attrs: &Attrs, inputs: &[&ValueType]) -> String {
    let types: Vec<String> = inputs.iter().map(|t| t.to_string()).collect();
    let types = types.join(",");
    format!("{op} {types} #{:016x}", fnv(&format!("{op}|{types}|{attrs:?}")))
}

/// The key of graph node `n` (absent optional operands skipped, as in the e-graph).
pub fn node_key(g: &Graph, n: usize) -> String {
    let node = &g.nodes[n];
    let types: Vec<&ValueType> = node.input_ids().map(|v| g.ty(v)).collect();
    op_key(node.op, &node.attrs, &types)
}

/// The key of a fusion group: its nodes' ops, attributes and operand types, operands named by
/// position (the group's inputs in order, then node outputs), so equal work has equal keys
/// wherever it sits.
pub fn group_key(g: &Graph, grp: &FusionGroup) -> String {
    let mut local: HashMap<xforge_ir::ValueId, usize> = HashMap::new();
    let mut text = String::new();
    for &v in &grp.inputs {
        let k = local.len();
        local.insert(v, k);
        let _ = write!(text, "in{k}:{}{};", g.ty(v), if g.weights.contains_key(&v) { "w" } else { "" });
    }
    for &n in &grp.nodes {
        let node = &g.nodes[n];
        let args: Vec<String> = node
            .inputs
            .iter()
            .map(|i| match i {
                Some(v) => local.get(v).map(|k| k.to_string()).unwrap_or_else(|| "?".into()),
                None => "_".into(),
            })
            .collect();
        let _ = write!(text, "{}({})[{:?}]->", node.op, args.join(","), node.attrs);
        for o in node.output_ids() {
            let k = local.len();
            local.insert(o, k);
            let _ = write!(text, "{k}:{},", g.ty(o));
        }
        text.push(';');
    }
    let outs: Vec<String> =
        grp.outputs.iter().map(|o| local.get(o).map(|k| k.to_string()).unwrap_or_default()).collect();
    let _ = write!(text, "out:{}", outs.join(","));
    let first = grp.inputs.first().map(|&v| g.ty(v).to_string()).unwrap_or_default();
    format!("{} {first} #{:016x}", grp.op_names(g).join("+"), fnv(&text))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(target: &str, gpu: &str, key: &str, way: Way, micros: f64) -> Measurement {
        Measurement { target: target.into(), gpu: gpu.into(), key: key.into(), way, micros }
    }

    #[test]
    fn a_table_is_one_target_on_one_gpu_and_garbage_is_ignored() {
        let dir = std::env::temp_dir().join(format!("xforge-tuning-test-{}", std::process::id()));
        let path = dir.join("sub").join(FILE);
        let _ = std::fs::remove_dir_all(&dir);
        assert!(TuningTable::read(&path, "sm_90", None).unwrap().is_empty());
        append(
            &path,
            &[
                m("sm_90", "H100", "Conv f16[1,3,8,8] #1", Way::Alone, 12.5),
                m("sm_90", "H100", "gemm #2", Way::Library, 10.0),
                m("sm_90", "H100", "gemm #2", Way::Generated, 9.7),
                m("sm_80", "A100", "gemm #2", Way::Generated, 1.0),
                // not written: a tab in a field, a time that is not finite
                m("sm_90", "H100", "bad\tkey", Way::Alone, 1.0),
                m("sm_90", "H100", "nan", Way::Alone, f64::NAN),
            ],
        )
        .unwrap();
        let mut f = std::fs::OpenOptions::new().append(true).open(&path).unwrap();
        std::io::Write::write_all(&mut f, b"torn\nsm_90\tH100\tk\tsideways\t1\nsm_90\tH100\tk\talone\t-3\n").unwrap();
        let t = TuningTable::read(&path, "sm_90", None).unwrap();
        assert_eq!((t.gpu.as_str(), t.len()), ("H100", 3), "{t:?}");
        assert_eq!(t.node_micros("Conv f16[1,3,8,8] #1"), Some(12.5));
        // 9.7 µs against 10 is inside the margin: the library call stays
        assert!(!t.prefers_generated("gemm #2"));
        // a later line of the same key and way wins; another GPU's lines are another table
        append(&path, &[m("sm_90", "H200", "gemm #2", Way::Generated, 2.0)]).unwrap();
        let h200 = TuningTable::read(&path, "sm_90", None).unwrap();
        assert_eq!((h200.gpu.as_str(), h200.len()), ("H200", 1));
        append(&path, &[m("sm_90", "H100", "gemm #2", Way::Generated, 5.0)]).unwrap();
        let t = TuningTable::read(&path, "sm_90", Some("H100")).unwrap();
        assert!(t.prefers_generated("gemm #2"));
        assert_eq!(TuningTable::read(&path, "sm_80", None).unwrap().get("gemm #2", Way::Generated), Some(1.0));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn keys_tell_attributes_and_types_apart() {
        use xforge_ir::{Attr, DType};
        let t = |s: &[usize]| ValueType::known(DType::F16, s);
        let (x, w) = (t(&[1, 8, 8, 8]), t(&[8, 8, 3, 3]));
        let mut a = Attrs::new();
        let k0 = op_key(Op::Conv, &a, &[&x, &w]);
        assert_eq!(k0, op_key(Op::Conv, &a, &[&x, &w]));
        assert!(k0.starts_with("Conv f16[1,8,8,8],f16[8,8,3,3] #"), "{k0}");
        a.insert("pads".into(), Attr::Ints(vec![1; 4]));
        assert_ne!(k0, op_key(Op::Conv, &a, &[&x, &w]));
        assert_ne!(k0, op_key(Op::ConvNhwc, &Attrs::new(), &[&x, &w]));
        assert_ne!(k0, op_key(Op::Conv, &Attrs::new(), &[&t(&[2, 8, 8, 8]), &w]));
    }
}
