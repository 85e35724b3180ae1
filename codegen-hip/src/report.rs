//! What each kernel of a code object uses, from its AMDGPU metadata note (as `llvm-readelf
//! --notes` prints it): registers, workgroup memory (LDS), scratch and spills, and the waves
//! per SIMD those allow. CI fails on a spill or on LDS past the chip's limit.
use std::path::Path;

/// One kernel's resources.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct KernelUsage {
    pub name: String,
    pub vgprs: u32,
    pub agprs: u32,
    pub sgprs: u32,
    /// Static workgroup memory (LDS) bytes.
    pub lds_bytes: u32,
    /// Per-thread scratch bytes (stack, spills).
    pub scratch_bytes: u32,
    pub vgpr_spills: u32,
    pub sgpr_spills: u32,
    pub wave: u32,
    /// The block size the kernel was compiled for (its most threads).
    pub max_block: u32,
}

/// A chip's limits, per SIMD and per workgroup (LLVM's AMDGPU subtarget numbers).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ChipLimits {
    /// Vector registers per lane per SIMD, their allocation granule, and resident waves per SIMD.
    pub vgprs: u32,
    pub vgpr_granule: u32,
    pub max_waves: u32,
    /// SIMDs per compute unit (work-group processor on RDNA).
    pub simds: u32,
    /// Workgroup memory one block may use, and one compute unit holds.
    pub lds_per_block: u32,
    pub lds_per_cu: u32,
}

/// The limits of `chip` (one of `crate::CHIPS`).
pub fn limits(chip: &str) -> Option<ChipLimits> {
    match chip {
        // CDNA2/3: 512 unified VGPRs (architectural + accumulation) per lane, granule 8
        "gfx90a" | "gfx942" => Some(ChipLimits {
            vgprs: 512,
            vgpr_granule: 8,
            max_waves: 8,
            simds: 4,
            lds_per_block: 64 * 1024,
            lds_per_cu: 64 * 1024,
        }),
        // RDNA3 (gfx1100, wave32): 1536 VGPRs per lane, granule 24; a WGP has 4 SIMDs, 128 KiB
        "gfx1100" => Some(ChipLimits {
            vgprs: 1536,
            vgpr_granule: 24,
            max_waves: 16,
            simds: 4,
            lds_per_block: 64 * 1024,
            lds_per_cu: 128 * 1024,
        }),
        _ => None,
    }
}

impl KernelUsage {
    /// Waves of this kernel resident per SIMD: the least of the register and LDS bounds.
    pub fn waves_per_simd(&self, l: &ChipLimits) -> u32 {
        let regs = (self.vgprs.next_multiple_of(4) + self.agprs).max(1).next_multiple_of(l.vgpr_granule);
        let by_regs = (l.vgprs / regs).min(l.max_waves);
        let waves_per_block = self.max_block.div_ceil(self.wave.max(1)).max(1);
        // blocks a compute unit holds by LDS (unbounded without LDS)
        let by_lds = l
            .lds_per_cu
            .checked_div(self.lds_bytes)
            .map_or(l.max_waves, |blocks| (blocks * waves_per_block / l.simds).min(l.max_waves));
        by_regs.min(by_lds)
    }

    /// Why CI refuses it: a spill, scratch use, or LDS past the block's limit.
    pub fn problem(&self, l: &ChipLimits) -> Option<String> {
        if self.vgpr_spills > 0 || self.sgpr_spills > 0 {
            return Some(format!("{}: spills {} VGPRs and {} SGPRs", self.name, self.vgpr_spills, self.sgpr_spills));
        }
        if self.lds_bytes > l.lds_per_block {
            return Some(format!(
                "{}: {} bytes of LDS, over the {} a block may use",
                self.name, self.lds_bytes, l.lds_per_block
            ));
        }
        None
    }
}

/// Each kernel's usage, from `llvm-readelf --notes` of the code object in `file`.
pub fn usage(file: &Path) -> Result<Vec<KernelUsage>, String> {
    parse_notes(&readelf(file, "--notes")?)
}

/// `llvm-readelf <flag> file`'s output.
pub fn readelf(file: &Path, flag: &str) -> Result<String, String> {
    let exe = crate::toolchain::llvm_tool("llvm-readelf");
    let out = std::process::Command::new(&exe)
        .arg(flag)
        .arg(file)
        .output()
        .map_err(|e| format!("{}: {e} (install Debian's llvm-22)", exe.display()))?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The `amdhsa.kernels` list of printed AMDGPU metadata: an entry starts at `  - .key:` and
/// holds the `    .key: value` lines after it (deeper lines are its arguments').
pub fn parse_notes(text: &str) -> Result<Vec<KernelUsage>, String> {
    let mut kernels: Vec<KernelUsage> = vec![];
    let mut inside = false;
    for line in text.lines() {
        if line.starts_with("amdhsa.kernels:") {
            inside = true;
            continue;
        }
        if !inside {
            continue;
        }
        let field = if let Some(rest) = line.strip_prefix("  - ") {
            kernels.push(KernelUsage::default());
            rest
        } else if let Some(rest) = line.strip_prefix("    ").filter(|r| r.starts_with('.')) {
            rest
        } else {
            if !line.starts_with(' ') {
                inside = false; // the next top-level key
            }
            continue;
        };
        let Some(k) = kernels.last_mut() else { continue };
        let Some((key, value)) = field.split_once(':') else { continue };
        let value = value.trim();
        let num = || value.parse::<u32>().map_err(|_| format!("{key}: {value:?} is not a count"));
        match key {
            ".name" => k.name = value.to_string(),
            ".vgpr_count" => k.vgprs = num()?,
            ".agpr_count" => k.agprs = num()?,
            ".sgpr_count" => k.sgprs = num()?,
            ".group_segment_fixed_size" => k.lds_bytes = num()?,
            ".private_segment_fixed_size" => k.scratch_bytes = num()?,
            ".vgpr_spill_count" => k.vgpr_spills = num()?,
            ".sgpr_spill_count" => k.sgpr_spills = num()?,
            ".wavefront_size" => k.wave = num()?,
            ".max_flat_workgroup_size" => k.max_block = num()?,
            _ => {}
        }
    }
    if let Some(k) = kernels.iter().find(|k| k.name.is_empty() || k.wave == 0) {
        return Err(format!("a kernel's metadata lacks its name or wavefront size: {k:?}"));
    }
    Ok(kernels)
}

/// The report's table: a line per kernel.
pub fn table(chip: &str, kernels: &[KernelUsage]) -> String {
    let l = limits(chip);
    let mut s = format!("{chip}: kernel  vgpr agpr sgpr  lds  scratch spills  waves/SIMD\n");
    for k in kernels {
        let waves = l.map_or("?".to_string(), |l| k.waves_per_simd(&l).to_string());
        s.push_str(&format!(
            "  {} {:4} {:4} {:4} {:6} {:4} {:3}/{:<3} {}\n",
            k.name, k.vgprs, k.agprs, k.sgprs, k.lds_bytes, k.scratch_bytes, k.vgpr_spills, k.sgpr_spills, waves
        ));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two kernels as `llvm-readelf --notes` prints them (argument lists shortened).
    const NOTES: &str = "amdhsa.kernels:
  - .agpr_count:     0
    .args:
      - .address_space:  generic
        .offset:         0
        .size:           8
    .group_segment_fixed_size: 0
    .max_flat_workgroup_size: 256
    .name:           k_a
    .private_segment_fixed_size: 0
    .sgpr_count:     28
    .sgpr_spill_count: 0
    .vgpr_count:     24
    .vgpr_spill_count: 0
    .wavefront_size: 64
  - .agpr_count:     4
    .group_segment_fixed_size: 32768
    .max_flat_workgroup_size: 1024
    .name:           k_b
    .private_segment_fixed_size: 16
    .sgpr_count:     100
    .sgpr_spill_count: 3
    .vgpr_count:     130
    .vgpr_spill_count: 0
    .wavefront_size: 64
amdhsa.target:   amdgcn-amd-amdhsa--gfx942
";

    #[test]
    fn notes_give_each_kernels_usage_waves_and_problems() {
        let ks = parse_notes(NOTES).unwrap();
        assert_eq!(ks.len(), 2);
        assert_eq!((ks[0].name.as_str(), ks[0].vgprs, ks[0].sgprs, ks[0].wave), ("k_a", 24, 28, 64));
        assert_eq!((ks[1].agprs, ks[1].lds_bytes, ks[1].scratch_bytes, ks[1].sgpr_spills), (4, 32768, 16, 3));
        let l = limits("gfx942").unwrap();
        // 24 VGPRs: 512 / 24 = 21 → the 8 a SIMD holds
        assert_eq!(ks[0].waves_per_simd(&l), 8);
        // 132 + 4 → 136 registers: 3 waves; LDS: 2 blocks of 16 waves over 4 SIMDs = 8
        assert_eq!(ks[1].waves_per_simd(&l), 3);
        assert_eq!(ks[0].problem(&l), None);
        assert!(ks[1].problem(&l).unwrap().contains("3 SGPRs"));
        let big = KernelUsage { lds_bytes: 70000, ..ks[0].clone() };
        assert!(big.problem(&l).unwrap().contains("LDS"));
        assert!(parse_notes("amdhsa.kernels:\n  - .vgpr_count: x\n").is_err());
        assert!(parse_notes("amdhsa.kernels:\n  - .vgpr_count: 3\n").unwrap_err().contains("name"));
        assert!(table("gfx942", &ks).contains("k_b"));
    }
}
