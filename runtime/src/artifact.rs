//! The `.xfa` file: a fixed preamble, a section table, then the sections.
//!
//! ```text
//! magic (8) | format version u32 | section count u32
//! section table: per section kind u32, crc32 u32, offset u64, length u64
//! crc32 of everything above u32
//! sections (the weights start on a WEIGHT_ALIGN boundary, so they can be memory-mapped)
//! ```
//!
//! Sections: header (compiler version, target, precision, options, model digest), kernels
//! (PTX), weights (raw bytes), memory (arena size, inputs, outputs), plan (steps). Every
//! section is checksummed; a file is rejected before anything runs if it is truncated,
//! corrupted, foreign, of a newer format, or inconsistent (an argument outside the arena).
use crate::checksum::crc32;
use crate::codec::{ReadError, Reader, Writer};
use crate::plan::{decode_steps, encode_steps, Arg, KernelImage, MemoryPlan, Step};
use std::path::Path;

pub const MAGIC: [u8; 8] = *b"XFORGEA\0";
/// Bumped whenever the layout or a section's encoding changes.
/// 2: library calls carry typed GEMM/convolution descriptors (`library.rs`).
pub const FORMAT_VERSION: u32 = 2;
/// File alignment of the weights section.
pub const WEIGHT_ALIGN: u64 = 4096;

const SECTIONS: [(u32, &str); 5] = [(1, "header"), (2, "kernels"), (3, "weights"), (4, "memory"), (5, "plan")];

#[derive(Clone, Debug, PartialEq)]
pub struct ArtifactHeader {
    pub compiler_version: String,
    /// `sm_80`, `sm_86`, `sm_89`, `sm_90`, `sm_90a`.
    pub target: String,
    /// `fp32`, `fp16` or `bf16`.
    pub precision: String,
    pub options: Vec<(String, String)>,
    /// A digest of the source model's bytes (hex).
    pub model_digest: String,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Artifact {
    pub header: ArtifactHeader,
    pub kernels: KernelImage,
    pub weights: Vec<u8>,
    pub memory: MemoryPlan,
    pub steps: Vec<Step>,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ArtifactError {
    #[error("not an xforge artifact (no XFORGEA magic at the start)")]
    Foreign,
    #[error(
        "artifact format {found} is newer than this runtime's ({supported}): recompile the model or update xforge"
    )]
    NewerFormat { found: u32, supported: u32 },
    #[error("artifact format {0} is not supported")]
    UnknownFormat(u32),
    #[error("the artifact is truncated: {0}")]
    Truncated(String),
    #[error("the artifact is corrupted: the {0} section's checksum does not match")]
    Corrupted(String),
    #[error("the artifact's {section} section is malformed: {why}")]
    Malformed { section: String, why: String },
    #[error("the artifact targets {target}, which this GPU (sm_{major}{minor}) cannot run")]
    WrongTarget { target: String, major: u32, minor: u32 },
    #[error("{0}")]
    Io(String),
}

fn malformed(section: &str) -> impl Fn(ReadError) -> ArtifactError + '_ {
    move |e| ArtifactError::Malformed { section: section.into(), why: e.0 }
}

impl ArtifactHeader {
    fn encode(&self) -> Vec<u8> {
        let mut w = Writer::default();
        w.str(&self.compiler_version);
        w.str(&self.target);
        w.str(&self.precision);
        w.u64(self.options.len() as u64);
        for (k, v) in &self.options {
            w.str(k);
            w.str(v);
        }
        w.str(&self.model_digest);
        w.bytes
    }

    fn decode(bytes: &[u8]) -> Result<Self, ReadError> {
        let mut r = Reader::new(bytes);
        let compiler_version = r.str("compiler version")?;
        let target = r.str("target")?;
        let precision = r.str("precision")?;
        let n = r.len("option count")?;
        let options = (0..n).map(|_| Ok((r.str("option name")?, r.str("option value")?))).collect::<Result<_, _>>()?;
        let model_digest = r.str("model digest")?;
        r.done("the header section")?;
        Ok(ArtifactHeader { compiler_version, target, precision, options, model_digest })
    }

    /// Whether a GPU of compute capability `major.minor` runs this target's PTX: the driver
    /// compiles PTX for newer GPUs, except the architecture-specific `a` targets.
    pub fn runs_on(&self, major: u32, minor: u32) -> Result<(), ArtifactError> {
        let wrong = || ArtifactError::WrongTarget { target: self.target.clone(), major, minor };
        let t = self.target.strip_prefix("sm_").ok_or_else(wrong)?;
        let (digits, specific) = match t.strip_suffix('a') {
            Some(d) => (d, true),
            None => (t, false),
        };
        let cc: u32 = digits.parse().map_err(|_| wrong())?;
        let have = major * 10 + minor;
        if have < cc || (specific && have != cc) {
            return Err(wrong());
        }
        Ok(())
    }
}

impl Artifact {
    /// The file's bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let (header, kernels, memory, steps) =
            (self.header.encode(), self.kernels.encode(), self.memory.encode(), encode_steps(&self.steps));
        // the weights are written from where they are (they can be most of the file)
        let bodies: [&[u8]; 5] = [&header, &kernels, &self.weights, &memory, &steps];
        let table_len = 16 + 24 * bodies.len() as u64 + 4;
        let mut offsets = vec![];
        let mut at = table_len;
        for (i, b) in bodies.iter().enumerate() {
            if SECTIONS[i].0 == 3 {
                at = at.div_ceil(WEIGHT_ALIGN) * WEIGHT_ALIGN;
            }
            offsets.push(at);
            at += b.len() as u64;
        }
        let mut out = Vec::with_capacity(at as usize);
        out.extend_from_slice(&MAGIC);
        out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
        out.extend_from_slice(&(bodies.len() as u32).to_le_bytes());
        for (i, b) in bodies.iter().enumerate() {
            out.extend_from_slice(&SECTIONS[i].0.to_le_bytes());
            out.extend_from_slice(&crc32(b).to_le_bytes());
            out.extend_from_slice(&offsets[i].to_le_bytes());
            out.extend_from_slice(&(b.len() as u64).to_le_bytes());
        }
        let table_crc = crc32(&out);
        out.extend_from_slice(&table_crc.to_le_bytes());
        for (i, b) in bodies.iter().enumerate() {
            out.resize(offsets[i] as usize, 0);
            out.extend_from_slice(b);
        }
        out
    }

    /// Parses and checks an artifact: preamble, table, every checksum, then the consistency of
    /// the plan with the arena and the weights.
    pub fn from_bytes(bytes: &[u8]) -> Result<Artifact, ArtifactError> {
        if bytes.len() < 8 || bytes[..8] != MAGIC {
            return Err(ArtifactError::Foreign);
        }
        let u32_at =
            |at: usize| -> Option<u32> { bytes.get(at..at + 4).map(|b| u32::from_le_bytes(b.try_into().unwrap())) };
        let u64_at =
            |at: usize| -> Option<u64> { bytes.get(at..at + 8).map(|b| u64::from_le_bytes(b.try_into().unwrap())) };
        let short = |what: &str| ArtifactError::Truncated(format!("it ends inside the {what}"));
        let version = u32_at(8).ok_or_else(|| short("preamble"))?;
        if version > FORMAT_VERSION {
            return Err(ArtifactError::NewerFormat { found: version, supported: FORMAT_VERSION });
        }
        if version != FORMAT_VERSION {
            return Err(ArtifactError::UnknownFormat(version));
        }
        let count = u32_at(12).ok_or_else(|| short("preamble"))? as usize;
        if count != SECTIONS.len() {
            return Err(ArtifactError::Malformed {
                section: "table".into(),
                why: format!("{count} sections, expected {}", SECTIONS.len()),
            });
        }
        let table_end = 16 + 24 * count;
        let table_crc = u32_at(table_end).ok_or_else(|| short("section table"))?;
        if crc32(&bytes[..table_end]) != table_crc {
            return Err(ArtifactError::Corrupted("table".into()));
        }
        let mut bodies: Vec<&[u8]> = vec![];
        for (i, (kind, name)) in SECTIONS.iter().enumerate() {
            let e = 16 + 24 * i;
            let (k, crc, off, len) =
                (u32_at(e).unwrap(), u32_at(e + 4).unwrap(), u64_at(e + 8).unwrap(), u64_at(e + 16).unwrap());
            if k != *kind {
                return Err(ArtifactError::Malformed {
                    section: "table".into(),
                    why: format!("entry {i} is kind {k}, expected the {name} section"),
                });
            }
            let end = off.checked_add(len).filter(|&x| x <= bytes.len() as u64).ok_or_else(|| {
                ArtifactError::Truncated(format!(
                    "the {name} section ends at byte {} of {}",
                    off.saturating_add(len),
                    bytes.len()
                ))
            })?;
            let body = &bytes[off as usize..end as usize];
            if crc32(body) != crc {
                return Err(ArtifactError::Corrupted((*name).into()));
            }
            bodies.push(body);
        }
        let header = ArtifactHeader::decode(bodies[0]).map_err(malformed("header"))?;
        let kernels = KernelImage::decode(bodies[1]).map_err(malformed("kernels"))?;
        let weights = bodies[2].to_vec();
        let memory = MemoryPlan::decode(bodies[3]).map_err(malformed("memory"))?;
        let steps = decode_steps(bodies[4]).map_err(malformed("plan"))?;
        let a = Artifact { header, kernels, weights, memory, steps };
        a.check_plan()?;
        Ok(a)
    }

    /// Every launch names a kernel and every buffer lies inside the arena or the weights.
    fn check_plan(&self) -> Result<(), ArtifactError> {
        let bad = |why: String| ArtifactError::Malformed { section: "plan".into(), why };
        let in_bounds = |a: &Arg| match a {
            Arg::Arena(o) => *o < self.memory.arena_bytes.max(1),
            Arg::Weight(o) => *o < (self.weights.len() as u64).max(1),
        };
        for (i, s) in self.steps.iter().enumerate() {
            let args = match s {
                Step::Launch { kernel, args, .. } => {
                    if *kernel as usize >= self.kernels.names.len() {
                        return Err(bad(format!("step {i} launches kernel {kernel} of {}", self.kernels.names.len())));
                    }
                    args
                }
                Step::Library(c) => {
                    crate::library::LibraryDesc::of_call(c, self.memory.arena_bytes, self.weights.len() as u64)
                        .map_err(|why| bad(format!("step {i} ({} call of group {}): {why}", c.kind, c.group)))?;
                    &c.args
                }
            };
            if let Some(a) = args.iter().find(|a| !in_bounds(a)) {
                return Err(bad(format!("step {i} has an argument outside its buffer: {a:?}")));
            }
        }
        for b in self.memory.inputs.iter().chain(&self.memory.outputs) {
            let end = crate::plan::binding_bytes(b).and_then(|n| n.checked_add(b.offset));
            if end.is_none_or(|e| e > self.memory.arena_bytes) {
                return Err(ArtifactError::Malformed {
                    section: "memory".into(),
                    why: format!("'{}' lies outside the arena", b.name),
                });
            }
        }
        Ok(())
    }

    pub fn read(path: &Path) -> Result<Artifact, ArtifactError> {
        let bytes =
            std::fs::read(path).map_err(|e| ArtifactError::Io(format!("cannot read {}: {e}", path.display())))?;
        Artifact::from_bytes(&bytes)
    }

    /// Writes the file whole or not at all (a temporary file renamed into place).
    pub fn write(&self, path: &Path) -> Result<(), ArtifactError> {
        let io = |e: std::io::Error| ArtifactError::Io(format!("cannot write {}: {e}", path.display()));
        let tmp = path.with_extension("xfa.partial");
        std::fs::write(&tmp, self.to_bytes()).map_err(io)?;
        std::fs::rename(&tmp, path).map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            io(e)
        })
    }
}
