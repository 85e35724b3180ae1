//! Running a compiled artifact on the GPU for the checks (conformance `--gpu`), and finding the
//! first group whose GPU result differs from the host's.
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use xforge_ir::{DType, Graph, Tensor, TensorData, ValueId};
use xforge_passes::fusion::{Fused, Schedule};
use xforge_runtime::{Artifact, Session};

/// A session of `artifact` on GPU 0 (written to a file of its own first).
pub fn session(artifact: &Artifact) -> Result<Session, String> {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!("xforge-check-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let path = dir.join(format!("case{}.xfa", NEXT.fetch_add(1, Ordering::Relaxed)));
    artifact.write(&path).map_err(|e| e.to_string())?;
    let s = Session::load(&path, 0).map_err(|e| e.to_string());
    let _ = std::fs::remove_file(&path);
    s
}

/// Runs a session on `feed` (by input name); outputs in the artifact's order.
pub fn run(session: &mut Session, feed: &HashMap<String, Tensor>) -> Result<Vec<Tensor>, String> {
    let mem = &session.artifact.plans[0].memory;
    let names: Vec<String> = mem.inputs.iter().map(|b| b.name.clone()).collect();
    let dtypes: Vec<String> = mem.outputs.iter().map(|b| b.dtype.clone()).collect();
    let bytes: Vec<Vec<u8>> = names
        .iter()
        .map(|n| feed.get(n).map(|t| t.data().to_le_bytes()).ok_or_else(|| format!("no value for input '{n}'")))
        .collect::<Result<_, _>>()?;
    let refs: Vec<&[u8]> = bytes.iter().map(|b| b.as_slice()).collect();
    let got = session.run_shaped(&refs).map_err(|e| e.to_string())?;
    got.into_iter()
        .zip(dtypes)
        .map(|((b, shape), dt)| {
            let dt = DType::from_name(&dt).ok_or_else(|| format!("unknown dtype {dt}"))?;
            let data = TensorData::from_le_bytes(dt, &b).ok_or("output bytes do not decode")?;
            Ok(Tensor::new(shape.iter().map(|&d| d as usize).collect(), data))
        })
        .collect()
}

/// Runs `artifact` (compiled from `g`) on GPU 0 with `feed`; outputs in the graph's order.
pub fn run_artifact(artifact: &Artifact, g: &Graph, feed: &HashMap<String, Tensor>) -> Result<Vec<Tensor>, String> {
    let _ = g;
    run(&mut session(artifact)?, feed)
}

/// After a run of an artifact built with distinct buffers from `fused`: the first group (in
/// run order) whose output in the arena differs from the host's value, described; the graph's
/// outputs are checked last, at the offsets their bindings name.
pub fn first_wrong_group(
    session: &Session,
    fused: &Fused,
    host: &HashMap<ValueId, Tensor>,
) -> Result<Option<String>, String> {
    let g = &fused.graph;
    // the offsets of the artifact the session runs: built with distinct buffers
    let offsets = xforge_compiler::build::with_distinct_buffers(|| xforge_compiler::build::value_offsets(fused))
        .map_err(|e| e.to_string())?;
    let mut producer = HashMap::new();
    for (n, node) in g.nodes.iter().enumerate() {
        for o in node.output_ids() {
            producer.insert(o, n);
        }
    }
    for gi in xforge_compiler::build::run_order(fused, &producer) {
        let grp = &fused.partition.groups[gi];
        if grp.schedule == Schedule::View {
            continue;
        }
        for &v in &grp.outputs {
            let (Some(want), Some(&at)) = (host.get(&v), offsets.get(&v)) else { continue };
            let bytes = session.read_arena(at, want.nbytes()).map_err(|e| e.to_string())?;
            let got = Tensor::new(
                want.shape().to_vec(),
                TensorData::from_le_bytes(want.dtype(), &bytes).ok_or("bytes do not decode")?,
            );
            let (rtol, atol) = crate::conformance::tolerance(want.dtype());
            if let Err(e) = crate::compare::allclose(&got, want, rtol.max(1e-3), atol.max(1e-4)) {
                let ops: Vec<String> =
                    grp.nodes.iter().map(|&n| format!("{} '{}'", g.nodes[n].op, g.nodes[n].name)).collect();
                return Ok(Some(format!(
                    "first wrong group {gi} ({}: {}), value '{}': {e}",
                    grp.schedule,
                    ops.join(", "),
                    g.name_of(v)
                )));
            }
        }
    }
    let mem = &session.artifact.plans[0].memory;
    for (b, &o) in mem.outputs.iter().zip(&g.outputs) {
        if offsets.get(&o) != Some(&b.offset) {
            return Ok(Some(format!(
                "output '{}' is bound at {} but its value lives at {:?}",
                b.name,
                b.offset,
                offsets.get(&o)
            )));
        }
    }
    Ok(None)
}
