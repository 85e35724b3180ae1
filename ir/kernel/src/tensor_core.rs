//! Tensor-core products for the GEMM and attention templates: `mma.sync` m16n8k16 with f32
//! accumulators. f16 goes through nvgpu; bf16 through nvvm directly, because MLIR's nvgpu
//! lowering does not deduce bf16 PTX types. Fragment layout (g = lane/4, t = lane%4): A holds
//! rows g and g+8 at columns 2t, 2t+1 (and + 8); B holds rows (k) 2t, 2t+1 (and + 8) of
//! column g; C holds rows g and g+8 at columns 2t, 2t+1.
use crate::body::Body;

/// One m16n8k16 tensor-core product c + a·b: `a` four and `bf` two registers of two
/// elements (vector<2xT>), `c` four f32 (rows g, g, g+8, g+8 of the warp's 16).
pub fn mma(b: &mut Body, t: &str, a: &[String], bf: &[String], c: &[String]) -> Vec<String> {
    if t == "f16" {
        let mut av = b.emit("arith.constant dense<0.0> : vector<4x2xf16>");
        for (i, r) in a.iter().enumerate() {
            av = b.emit(format!("vector.insert {r}, {av} [{i}] : vector<2xf16> into vector<4x2xf16>"));
        }
        let mut bv = b.emit("arith.constant dense<0.0> : vector<2x2xf16>");
        for (i, r) in bf.iter().enumerate() {
            bv = b.emit(format!("vector.insert {r}, {bv} [{i}] : vector<2xf16> into vector<2x2xf16>"));
        }
        let cv = b.emit(format!("vector.from_elements {} : vector<2x2xf32>", c.join(", ")));
        let r = b.emit(format!(
            "nvgpu.mma.sync ({av}, {bv}, {cv}) {{mmaShape = [16, 8, 16]}} : (vector<4x2xf16>, vector<2x2xf16>, vector<2x2xf32>) -> vector<2x2xf32>"
        ));
        [(0, 0), (0, 1), (1, 0), (1, 1)]
            .iter()
            .map(|(i, j)| b.emit(format!("vector.extract {r}[{i}, {j}] : f32 from vector<2x2xf32>")))
            .collect()
    } else {
        let word = |b: &mut Body, r: &String| {
            let w = b.emit(format!("vector.bitcast {r} : vector<2x{t}> to vector<1xi32>"));
            b.emit(format!("vector.extract {w}[0] : i32 from vector<1xi32>"))
        };
        let aw: Vec<String> = a.iter().map(|r| word(b, r)).collect();
        let bw: Vec<String> = bf.iter().map(|r| word(b, r)).collect();
        let st = "!llvm.struct<(f32, f32, f32, f32)>";
        let r = b.emit(format!(
            "nvvm.mma.sync A[{}] B[{}] C[{}] {{layoutA = #nvvm.mma_layout<row>, layoutB = #nvvm.mma_layout<col>, multiplicandAPtxType = #nvvm.mma_type<{t}>, multiplicandBPtxType = #nvvm.mma_type<{t}>, shape = #nvvm.shape<m = 16, n = 8, k = 16>}} : (i32, i32, f32) -> {st}",
            aw.join(", "),
            bw.join(", "),
            c.join(", ")
        ));
        (0..4).map(|i| b.emit(format!("llvm.extractvalue {r}[{i}] : {st}"))).collect()
    }
}

/// A thread's place in its warp for the fragment layout: the warp, its lane, g = lane/4 and 2t.
pub struct Lane {
    pub warp: String,
    pub lane: String,
    pub g: String,
    pub t2: String,
}

pub fn lane(b: &mut Body, tid: &str) -> Lane {
    let (c32, c4) = (b.index(32), b.index(4));
    let lane = b.emit(format!("arith.remui {tid}, {c32} : index"));
    let warp = b.emit(format!("arith.divui {tid}, {c32} : index"));
    let g = b.emit(format!("arith.divui {lane}, {c4} : index"));
    let t = b.emit(format!("arith.remui {lane}, {c4} : index"));
    let t2 = b.emit(format!("arith.addi {t}, {t} : index"));
    Lane { warp, lane, g, t2 }
}
