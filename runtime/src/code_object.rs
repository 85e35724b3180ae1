//! AMDGPU code objects (HSACO) as the artifact holds them: a 64-bit little-endian ELF for
//! `EM_AMDGPU` whose flags name the chip, with one `<kernel>.kd` descriptor symbol per kernel.
//! Read without trusting a byte: every offset and size is checked against the file.

/// `e_machine` of AMDGPU code objects.
pub const EM_AMDGPU: u16 = 224;
/// The chip bits of `e_flags` (`EF_AMDGPU_MACH`).
const MACH_MASK: u32 = 0xff;

/// The `EF_AMDGPU_MACH` value of each chip xforge compiles for (LLVM's `ELF.h`).
pub const CHIPS: &[(&str, u32)] = &[("gfx90a", 0x3f), ("gfx942", 0x4c), ("gfx1100", 0x41)];

/// What a code object says about itself.
#[derive(Clone, Debug, PartialEq)]
pub struct CodeObject {
    /// The chip its flags name (`gfx942`), or `mach 0x..` for one xforge does not compile for.
    pub chip: String,
    /// Names of the defined symbols (kernels, `<kernel>.kd` descriptors, ...).
    pub symbols: Vec<String>,
}

impl CodeObject {
    /// The kernels it declares: symbols `<name>.kd`, without the suffix.
    pub fn kernels(&self) -> impl Iterator<Item = &str> {
        self.symbols.iter().filter_map(|s| s.strip_suffix(".kd"))
    }
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(at..at.checked_add(2)?)?.try_into().ok()?))
}
fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at.checked_add(4)?)?.try_into().ok()?))
}
fn u64_at(b: &[u8], at: usize) -> Option<usize> {
    usize::try_from(u64::from_le_bytes(b.get(at..at.checked_add(8)?)?.try_into().ok()?)).ok()
}

/// Parses the ELF header and the symbol tables; the error says which field is wrong.
pub fn parse(b: &[u8]) -> Result<CodeObject, String> {
    if b.get(..4) != Some(b"\x7fELF") {
        return Err("the code object is not ELF".into());
    }
    if b.get(4) != Some(&2) || b.get(5) != Some(&1) {
        return Err("the code object is not 64-bit little-endian ELF".into());
    }
    let machine = u16_at(b, 18).ok_or("the ELF header is truncated")?;
    if machine != EM_AMDGPU {
        return Err(format!("the code object's e_machine is {machine}, not EM_AMDGPU ({EM_AMDGPU})"));
    }
    let flags = u32_at(b, 48).ok_or("the ELF header is truncated")?;
    let mach = flags & MACH_MASK;
    let chip = CHIPS.iter().find(|c| c.1 == mach).map_or(format!("mach {mach:#x}"), |c| c.0.to_string());
    let shoff = u64_at(b, 40).ok_or("the ELF header is truncated")?;
    let shentsize = u16_at(b, 58).ok_or("the ELF header is truncated")? as usize;
    let shnum = u16_at(b, 60).ok_or("the ELF header is truncated")? as usize;
    if shnum > 0 && shentsize < 64 {
        return Err(format!("section header size {shentsize} is below 64"));
    }
    let section = |i: usize| -> Result<(u32, usize, usize, usize, usize), String> {
        let at = i.checked_mul(shentsize).and_then(|o| o.checked_add(shoff)).ok_or("section table overflows")?;
        // a header near the top of the address space: its fields' offsets overflow, so checked
        let outside = || format!("section header {i} lies outside the file");
        let field = |o: usize| at.checked_add(o).and_then(|p| u64_at(b, p)).ok_or_else(outside);
        let kind = at.checked_add(4).and_then(|p| u32_at(b, p)).ok_or_else(outside)?;
        let link = at.checked_add(40).and_then(|p| u32_at(b, p)).ok_or_else(outside)? as usize;
        let (offset, size, entsize) = (field(24)?, field(32)?, field(56)?);
        if offset.checked_add(size).is_none_or(|end| end > b.len()) && kind != 8 {
            return Err(format!("section {i} ({size} bytes at {offset}) lies outside the file"));
        }
        Ok((kind, offset, size, link, entsize))
    };
    let mut symbols = vec![];
    for i in 0..shnum {
        let (kind, offset, size, link, entsize) = section(i)?;
        // SHT_SYMTAB and SHT_DYNSYM: 24-byte entries, names in the linked string table
        if kind != 2 && kind != 11 {
            continue;
        }
        if entsize != 24 || link >= shnum {
            return Err(format!("symbol table {i} has entries of {entsize} bytes or string table {link}"));
        }
        let (skind, soff, ssize, _, _) = section(link)?;
        if skind != 3 {
            return Err(format!("symbol table {i} links section {link}, which is not a string table"));
        }
        let strings = &b[soff..soff + ssize];
        for e in (offset..offset + size / 24 * 24).step_by(24) {
            let name = u32_at(b, e).ok_or("symbol outside the file")? as usize;
            let shndx = u16_at(b, e + 6).ok_or("symbol outside the file")?;
            if name == 0 || shndx == 0 {
                continue; // unnamed or undefined
            }
            let s = strings.get(name..).ok_or(format!("symbol name {name} lies outside its string table"))?;
            let end = s.iter().position(|&c| c == 0).ok_or("a symbol name is not terminated")?;
            symbols.push(String::from_utf8_lossy(&s[..end]).into_owned());
        }
    }
    // the static and the dynamic symbol tables name the same kernels
    symbols.sort();
    symbols.dedup();
    Ok(CodeObject { chip, symbols })
}

/// The code object against an artifact's kernel table: for `target`, and declaring every name.
pub fn check(b: &[u8], target: &str, names: &[String]) -> Result<(), String> {
    let co = parse(b)?;
    if co.chip != target {
        return Err(format!("the code object is for {}, not {target}", co.chip));
    }
    let declared: std::collections::HashSet<&str> = co.kernels().collect();
    if let Some(n) = names.iter().find(|n| !declared.contains(n.as_str())) {
        return Err(format!("kernel {n} has no descriptor ({n}.kd) in the code object"));
    }
    Ok(())
}
