//! Writing MLIR text: fresh SSA names, exact float constants, element types.
use xforge_ir::DType;

/// The lines of a function body under construction.
#[derive(Default)]
pub struct Body {
    pub lines: Vec<String>,
    next: usize,
}

impl Body {
    /// Emits `%vN = <rhs>` and returns `%vN`.
    pub fn emit(&mut self, rhs: impl AsRef<str>) -> String {
        self.next += 1;
        let v = format!("%v{}", self.next);
        self.lines.push(format!("{v} = {}", rhs.as_ref()));
        v
    }

    /// Emits `%vN:k = <rhs>` for an op with `k` results and returns `%vN` (use `%vN#i`).
    pub fn emit_multi(&mut self, k: usize, rhs: impl AsRef<str>) -> String {
        self.next += 1;
        let v = format!("%v{}", self.next);
        self.lines.push(format!("{v}:{k} = {}", rhs.as_ref()));
        v
    }

    /// A fresh SSA name `%<prefix>N` for a name the caller binds (loop variables, block
    /// arguments).
    pub fn fresh(&mut self, prefix: &str) -> String {
        self.next += 1;
        format!("%{prefix}{}", self.next)
    }

    pub fn stmt(&mut self, line: impl Into<String>) {
        self.lines.push(line.into());
    }

    /// A float constant of the compute type, written by its bits (exact).
    pub fn float(&mut self, x: f64, ty: &str) -> String {
        let lit =
            if ty == "f64" { format!("0x{:016X}", x.to_bits()) } else { format!("0x{:08X}", (x as f32).to_bits()) };
        self.emit(format!("arith.constant {lit} : {ty}"))
    }

    /// The grid-stride loop bounds: (block · block_dim + thread, block_dim · grid_dim).
    pub fn grid_stride(&mut self) -> (String, String) {
        let tid = self.emit("gpu.thread_id x");
        let bid = self.emit("gpu.block_id x");
        let bdim = self.emit("gpu.block_dim x");
        let gdim = self.emit("gpu.grid_dim x");
        let start = self.emit(format!("arith.muli {bid}, {bdim} : index"));
        let start = self.emit(format!("arith.addi {start}, {tid} : index"));
        let step = self.emit(format!("arith.muli {bdim}, {gdim} : index"));
        (start, step)
    }

    /// Opens `scf.for %<var>` over tiles of 32 of `n` items, the block's tiles grid-strided: the
    /// loop is uniform across the block, so every thread reaches barriers inside it. Thread x
    /// takes item tile·32 + x; returns (whether that item exists, its index clamped to n − 1).
    /// The caller closes the loop.
    pub fn tile_loop(&mut self, var: &str, n: usize, tx: &str) -> (String, String) {
        let bx = self.emit("gpu.block_id x");
        let gx = self.emit("gpu.grid_dim x");
        let (total, last, ntiles, c32) = (self.index(n), self.index(n - 1), self.index(n.div_ceil(32)), self.index(32));
        self.stmt(format!("scf.for %{var} = {bx} to {ntiles} step {gx} {{"));
        let t32 = self.emit(format!("arith.muli %{var}, {c32} : index"));
        let i0 = self.emit(format!("arith.addi {t32}, {tx} : index"));
        let valid = self.emit(format!("arith.cmpi ult, {i0}, {total} : index"));
        let i = self.emit(format!("arith.minui {i0}, {last} : index"));
        (valid, i)
    }

    pub fn index(&mut self, n: usize) -> String {
        self.emit(format!("arith.constant {n} : index"))
    }
}

/// The MLIR element type a dtype is stored as (bool as one byte).
pub fn storage_type(dt: DType) -> Option<&'static str> {
    Some(match dt {
        DType::F32 => "f32",
        DType::F16 => "f16",
        DType::BF16 => "bf16",
        DType::F64 => "f64",
        DType::Bool | DType::U8 | DType::I8 => "i8",
        // index operands (Gather), and what generic kernels move
        DType::I64 | DType::U64 => "i64",
        DType::I32 | DType::U32 => "i32",
        DType::I16 | DType::U16 => "i16",
        _ => return None, // narrow types: the compiler refuses them before kernels
    })
}

/// The type floats of `dt` compute in: f32 for f16/bf16/f32, f64 for f64.
pub fn compute_type(dt: DType) -> &'static str {
    if dt == DType::F64 {
        "f64"
    } else {
        "f32"
    }
}
