//! Real models through the importer and the interpreter against onnxruntime (run through
//! `scripts/ort_run.py`; `scripts/setup` installs it). Requires 1e-4 relative L2.
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use xforge_ir::{npy, Tensor};
use xforge_testsuite::compare::rel_l2;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn check(model: &str, input: Tensor) {
    let path = root().join("models").join(model);
    let dir = tempfile::tempdir().unwrap();
    let in_path = dir.path().join("input.npy");
    std::fs::write(&in_path, npy::to_bytes(&input)).unwrap();
    let ref_dir = dir.path().join("ort");
    let st = std::process::Command::new("python3")
        .arg(root().join("testsuite/scripts/ort_run.py"))
        .arg(&path)
        .arg(&ref_dir)
        .arg(format!("input={}", in_path.display()))
        .output()
        .expect("python3 must be installed (scripts/setup)");
    assert!(st.status.success(), "onnxruntime reference failed: {}", String::from_utf8_lossy(&st.stderr));
    let m = xforge_frontend::load(&path, &Default::default()).unwrap();
    let outs = xforge_ir::interp::run(&m.graph, &HashMap::from([("input".to_string(), input)])).unwrap();
    for (&id, got) in m.graph.outputs.iter().zip(&outs) {
        let name = m.graph.name_of(id);
        let want = npy::from_bytes(&std::fs::read(ref_dir.join(format!("{name}.npy"))).unwrap()).unwrap();
        assert_eq!(got.shape(), want.shape());
        let err = rel_l2(got, &want);
        println!("{model} {name}: relative L2 {err:.3e}");
        assert!(err < 1e-4, "{model} output {name}: relative L2 {err:.3e} exceeds 1e-4");
    }
}

fn noise(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed;
    (0..n)
        .map(|_| {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            // sum of uniforms: roughly normal, like an image after normalization
            (0..4).map(|k| ((s >> (16 * k)) & 0xffff) as f32 / 65536.0).sum::<f32>() - 2.0
        })
        .collect()
}

#[test]
fn mnasnet0_5_matches_onnxruntime() {
    check("mnasnet0_5.onnx", Tensor::from_f32(vec![1, 3, 224, 224], noise(3 * 224 * 224, 1)));
}

#[test]
fn bert_tiny_matches_onnxruntime() {
    let ids: Vec<i64> = noise(32, 2).iter().map(|v| ((v + 2.0) * 1000.0) as i64 % 4000).collect();
    check("bert_tiny.onnx", Tensor::from_i64(vec![1, 32], ids));
}
