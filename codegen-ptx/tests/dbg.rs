#[test]
fn dbg_tc() {
    let g = xforge_codegen_ptx::samples::gemm_bias_gelu(xforge_ir::DType::F16, &[2, 70], 96, 136);
    let f = xforge_passes::fusion::fuse(&g).unwrap();
    for (i, grp) in f.partition.groups.iter().enumerate() {
        if let Ok(k) = xforge_kernel::generate(&f.graph, grp, i) {
            std::fs::write("/tmp/tc.mlir", xforge_kernel::mlir::container(&k.module)).unwrap();
        }
    }
}
