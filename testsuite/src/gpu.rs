//! Running a compiled artifact on the GPU for the checks (conformance `--gpu`).
use std::collections::HashMap;
use xforge_ir::{DType, Graph, Tensor, TensorData};
use xforge_runtime::{Artifact, Session};

/// Runs `artifact` (compiled from `g`) on GPU 0 with `feed` (by input name); outputs in the
/// graph's order.
pub fn run_artifact(artifact: &Artifact, g: &Graph, feed: &HashMap<String, Tensor>) -> Result<Vec<Tensor>, String> {
    let dir = std::env::temp_dir().join(format!("xforge-check-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let path = dir.join("case.xfa");
    artifact.write(&path).map_err(|e| e.to_string())?;
    let mut session = Session::load(&path, 0).map_err(|e| e.to_string())?;
    let mem = &session.artifact.plans[0].memory;
    let names: Vec<String> = mem.inputs.iter().map(|b| b.name.clone()).collect();
    let outs: Vec<(String, Vec<usize>)> =
        mem.outputs.iter().map(|b| (b.dtype.clone(), b.shape.iter().map(|&d| d as usize).collect())).collect();
    let bytes: Vec<Vec<u8>> = names
        .iter()
        .map(|n| feed.get(n).map(|t| t.data().to_le_bytes()).ok_or_else(|| format!("no value for input '{n}'")))
        .collect::<Result<_, _>>()?;
    let refs: Vec<&[u8]> = bytes.iter().map(|b| b.as_slice()).collect();
    let got = session.run(&refs).map_err(|e| e.to_string())?;
    let _ = g;
    got.into_iter()
        .zip(outs)
        .map(|(b, (dt, shape))| {
            let dt = DType::from_name(&dt).ok_or_else(|| format!("unknown dtype {dt}"))?;
            let data = TensorData::from_le_bytes(dt, &b).ok_or("output bytes do not decode")?;
            Ok(Tensor::new(shape, data))
        })
        .collect()
}
