//! What a template may assume about the GPU it generates for. Templates read the target of the
//! generation in progress (`current`), set for a scope by `with` (as tinygrad's `Context`): a
//! compile for `gfx942` generates every kernel under that target. Outside any scope the target
//! is NVIDIA's (`sm_90`), whose kernels are those generated before targets existed.
use std::cell::RefCell;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Vendor {
    Nvidia,
    Amd,
}

/// The matrix units a template may use for f16/bf16 products.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MatrixUnit {
    /// NVIDIA `mma.sync` m16n8k16 (with `ldmatrix` and `cp.async` feeding it).
    MmaSync,
    /// AMD CDNA MFMA (`rocdl.mfma.*`); the templates take the scalar path until they use it.
    Mfma,
    /// None a template uses (RDNA's WMMA is not used yet): the scalar path.
    None,
}

/// A GPU target as the templates see it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GpuTarget {
    /// `sm_90`, `gfx942`, ...
    pub chip: &'static str,
    pub vendor: Vendor,
    /// Threads that run in lockstep and exchange registers by shuffles: 32 on NVIDIA and RDNA,
    /// 64 on CDNA.
    pub wave: usize,
    /// Bytes of static workgroup (shared / LDS) memory one block may declare.
    pub workgroup_bytes: usize,
    /// The most threads in a block.
    pub max_block: usize,
    /// The most 32-bit vector registers a thread holds before the compiler spills (CDNA adds
    /// 256 accumulation registers to its 256 architectural ones).
    pub registers: usize,
    pub matrix: MatrixUnit,
    /// Whether vendor libraries (cuBLASLt, cuDNN) run contractions: on AMD every GEMM and
    /// convolution is a generated kernel.
    pub libraries: bool,
}

const fn nvidia(chip: &'static str) -> GpuTarget {
    GpuTarget {
        chip,
        vendor: Vendor::Nvidia,
        wave: 32,
        workgroup_bytes: 48 * 1024,
        max_block: 1024,
        registers: 255,
        matrix: MatrixUnit::MmaSync,
        libraries: true,
    }
}

const fn amd(chip: &'static str, wave: usize, registers: usize, matrix: MatrixUnit) -> GpuTarget {
    GpuTarget {
        chip,
        vendor: Vendor::Amd,
        wave,
        workgroup_bytes: 64 * 1024,
        max_block: 1024,
        registers,
        matrix,
        libraries: false,
    }
}

/// Every target the generator knows.
pub const TARGETS: &[GpuTarget] = &[
    nvidia("sm_80"),
    nvidia("sm_86"),
    nvidia("sm_89"),
    nvidia("sm_90"),
    nvidia("sm_90a"),
    // CDNA2 (MI200) and CDNA3 (MI300): wave64, MFMA
    amd("gfx90a", 64, 512, MatrixUnit::Mfma),
    amd("gfx942", 64, 512, MatrixUnit::Mfma),
    // RDNA3: wave32 (the compiler's default there), WMMA
    amd("gfx1100", 32, 256, MatrixUnit::None),
];

/// The target named `chip`, if the generator knows it.
pub fn find(chip: &str) -> Option<GpuTarget> {
    TARGETS.iter().copied().find(|t| t.chip == chip)
}

/// Targets outside any `with` scope.
pub const DEFAULT: GpuTarget = nvidia("sm_90");

thread_local! {
    static CURRENT: RefCell<GpuTarget> = const { RefCell::new(DEFAULT) };
}

/// The target of the generation in progress on this thread.
pub fn current() -> GpuTarget {
    CURRENT.with(|c| *c.borrow())
}

/// Runs `f` with `t` as this thread's target (restored after, also when `f` panics).
pub fn with<R>(t: GpuTarget, f: impl FnOnce() -> R) -> R {
    struct Restore(GpuTarget);
    impl Drop for Restore {
        fn drop(&mut self) {
            CURRENT.with(|c| *c.borrow_mut() = self.0);
        }
    }
    let _restore = Restore(CURRENT.with(|c| std::mem::replace(&mut *c.borrow_mut(), t)));
    f()
}

impl GpuTarget {
    pub fn is_amd(&self) -> bool {
        self.vendor == Vendor::Amd
    }

    /// AMD with no more than 256 registers a thread (RDNA): LLVM's AMDGPU backend spills the
    /// register-heavy forms (8-step vectors of 16-bit scans, 32-key attention rows) there.
    pub fn tight_registers(&self) -> bool {
        self.is_amd() && self.registers <= 256
    }
}
