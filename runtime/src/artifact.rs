//! The `.xfa` file: a fixed preamble, a section table, then the sections.
//!
//! ```text
//! magic (8) | format version u32 | section count u32
//! section table: per section kind u32, crc32 u32, offset u64, length u64
//! crc32 of everything above u32
//! sections, in table order, back to back (the weights start on a WEIGHT_ALIGN boundary, so
//! they can be memory-mapped)
//! sha256 of everything above (32 bytes); nothing follows it
//! ```
//!
//! Sections: header (compiler version, target, precision, options, model digest, the batch
//! dim), kernels (PTX), weights (raw bytes), then per batch-size bucket, smallest first, a
//! memory section (batch, arena size, inputs, outputs) and a plan section (steps). The buckets
//! share the kernels and the weights. Every section is checksummed; a file is rejected before
//! anything runs if it is truncated, corrupted, foreign, of another format, or inconsistent (an
//! argument outside the arena, buckets that disagree on the model's interface).
use crate::checksum::crc32;
use crate::codec::{ReadError, Reader, Writer};
use crate::plan::{decode_steps, encode_steps, Arg, KernelImage, MemoryPlan, Plan, Step};
use std::path::Path;

pub const MAGIC: [u8; 8] = *b"XFORGEA\0";
/// Bumped whenever the layout or a section's encoding changes.
/// 2: library calls carry typed GEMM/convolution descriptors (`library.rs`).
/// 3: batch-size buckets (a memory and a plan section per bucket, bindings' batch axes).
/// 4: bounded outputs (a binding's valid length).
/// 5: every input and output binding owns its bytes for the whole run (no other buffer shares
///    them), so a caller's device buffer can stand in for it (`Session::run_device`).
/// 6: a plan section ends with one cost per step (schedule, ops, bytes, FLOPs) for profiles.
/// 7: the file ends with the sha256 of everything before it; sections lie in table order back
///    to back; the header's fields and the kernel table are validated (target, precision, model
///    digest, kernel names declared as `.entry` in PTX for the header's target).
/// 8: the kernel section holds an AMDGPU code object after the PTX (one of the two is empty).
pub const FORMAT_VERSION: u32 = 8;
/// Bytes of the file digest at the end.
const DIGEST_LEN: usize = 32;
/// File alignment of the weights section.
pub const WEIGHT_ALIGN: u64 = 4096;
/// The most batch-size buckets an artifact holds.
pub const MAX_BUCKETS: usize = 64;

/// Section kinds: the three shared sections, then a memory and a plan section per bucket.
const SHARED: [(u32, &str); 3] = [(1, "header"), (2, "kernels"), (3, "weights")];
const PER_BUCKET: [(u32, &str); 2] = [(4, "memory"), (5, "plan")];

/// Kind and name of section `i`: buckets' sections are named with their index (`memory 1`).
fn section(i: usize) -> (u32, String) {
    match SHARED.get(i) {
        Some((k, n)) => (*k, n.to_string()),
        None => {
            let (k, n) = PER_BUCKET[(i - SHARED.len()) % 2];
            (k, format!("{n} {}", (i - SHARED.len()) / 2))
        }
    }
}

/// A symbolic batch dim compiled for several sizes (buckets).
#[derive(Clone, Debug, PartialEq)]
pub struct BatchDim {
    /// The dim's name in the model (`batch`).
    pub symbol: String,
    /// Whether a batch between buckets may run padded to the next bucket: Ok when every node
    /// keeps batch rows apart, otherwise why not (the node that mixes them).
    pub padding: Result<(), String>,
}
#[derive(Clone, Debug, PartialEq)]
pub struct ArtifactHeader {
    pub compiler_version: String,
    /// `sm_80`, `sm_86`, `sm_89`, `sm_90`, `sm_90a` (PTX) or `gfx90a`, `gfx942`, `gfx1100`
    /// (an AMDGPU code object).
    pub target: String,
    /// `fp32`, `fp16` or `bf16`.
    pub precision: String,
    pub options: Vec<(String, String)>,
    /// A digest of the source model's bytes (hex).
    pub model_digest: String,
    /// The bucketed batch dim; None for a model compiled for one static shape.
    pub batch: Option<BatchDim>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Artifact {
    pub header: ArtifactHeader,
    pub kernels: KernelImage,
    pub weights: Vec<u8>,
    /// One per batch-size bucket, by increasing batch (one plan of batch 0 without a batch dim).
    pub plans: Vec<Plan>,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ArtifactError {
    #[error("not an xforge artifact (no XFORGEA magic at the start)")]
    Foreign,
    #[error(
        "artifact format {found} is newer than this runtime's ({supported}): recompile the model or update xforge"
    )]
    NewerFormat { found: u32, supported: u32 },
    #[error("artifact format {found} is older than this runtime's ({supported}): recompile the model")]
    OlderFormat { found: u32, supported: u32 },
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
        match &self.batch {
            None => w.u32(0),
            Some(b) => {
                w.u32(1);
                w.str(&b.symbol);
                w.str(b.padding.as_ref().err().map_or("", String::as_str));
            }
        }
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
        let batch = match r.u32("batch flag")? {
            0 => None,
            1 => {
                let symbol = r.str("batch symbol")?;
                let why = r.str("batch padding")?;
                Some(BatchDim { symbol, padding: if why.is_empty() { Ok(()) } else { Err(why) } })
            }
            f => return Err(ReadError(format!("batch flag {f} is neither 0 nor 1"))),
        };
        r.done("the header section")?;
        Ok(ArtifactHeader { compiler_version, target, precision, options, model_digest, batch })
    }

    /// The fields a build writes, as a build writes them: a known kind of target, a precision,
    /// a hex model digest, a compiler version and options without control characters.
    fn check(&self) -> Result<(), String> {
        if !is_target(&self.target) {
            return Err(format!("target {:?} is not an NVIDIA (sm_NN[a]) or AMD (gfxNNN) target", self.target));
        }
        if !PRECISIONS.contains(&self.precision.as_str()) {
            return Err(format!("precision {:?} is not one of {}", self.precision, PRECISIONS.join(", ")));
        }
        if self.model_digest.len() > 128 || !self.model_digest.bytes().all(|c| c.is_ascii_hexdigit()) {
            return Err(format!("model digest {:?} is not a hex digest", self.model_digest));
        }
        let plain = |s: &str| !s.chars().any(char::is_control) && s.len() <= 256;
        if self.compiler_version.is_empty() || !plain(&self.compiler_version) {
            return Err(format!("compiler version {:?}", self.compiler_version));
        }
        if let Some((k, v)) = self.options.iter().find(|(k, v)| k.is_empty() || !plain(k) || !plain(v)) {
            return Err(format!("option {k:?}={v:?}"));
        }
        Ok(())
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

/// The precisions a build writes.
const PRECISIONS: [&str; 3] = ["fp32", "fp16", "bf16"];

/// `sm_` and two or three digits with an optional `a`, or `gfx` and three or four hex digits.
fn is_target(t: &str) -> bool {
    if let Some(d) = t.strip_prefix("sm_") {
        let d = d.strip_suffix('a').unwrap_or(d);
        (2..=3).contains(&d.len()) && d.bytes().all(|c| c.is_ascii_digit())
    } else if let Some(d) = t.strip_prefix("gfx") {
        (3..=4).contains(&d.len()) && d.bytes().all(|c| c.is_ascii_hexdigit())
    } else {
        false
    }
}

/// The kernel table against the code: distinct names that are identifiers, each declared as an
/// `.entry` of PTX for the header's NVIDIA target, or as a `.kd` descriptor of an AMDGPU code
/// object for the header's `gfx` chip.
fn check_kernels(k: &KernelImage, target: &str) -> Result<(), String> {
    let mut seen = std::collections::HashSet::new();
    for n in &k.names {
        let ident = n.len() <= 512
            && n.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
            && n.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '$');
        if !ident || !seen.insert(n.as_str()) {
            return Err(format!("kernel name {n:?} is not an identifier, or given twice"));
        }
    }
    if target.starts_with("gfx") {
        if !k.ptx.is_empty() {
            return Err(format!("an artifact for {target} holds PTX"));
        }
        if k.names.is_empty() && k.code_object.is_empty() {
            return Ok(());
        }
        return crate::code_object::check(&k.code_object, target, &k.names);
    }
    if !k.code_object.is_empty() {
        return Err(format!("an artifact for {target} holds an AMDGPU code object"));
    }
    if k.names.is_empty() {
        return Ok(());
    }
    let declared: std::collections::HashSet<&str> = k
        .ptx
        .split(".entry")
        .skip(1)
        .filter_map(|rest| rest.trim_start().split(|c: char| c == '(' || c.is_whitespace()).next())
        .collect();
    if !k
        .ptx
        .lines()
        .any(|l| l.trim().strip_prefix(".target").is_some_and(|t| t.split([',', ' ']).any(|w| w == target)))
    {
        return Err(format!("the PTX is not for {target} (no `.target {target}` line)"));
    }
    if let Some(n) = k.names.iter().find(|n| !declared.contains(n.as_str())) {
        return Err(format!("kernel {n} is not an .entry of the PTX"));
    }
    Ok(())
}

/// The sha256 of a file's bytes before its digest.
pub fn file_digest(bytes: &[u8]) -> [u8; DIGEST_LEN] {
    use sha2::Digest;
    sha2::Sha256::digest(bytes).into()
}

impl Artifact {
    /// The file's bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let (header, kernels) = (self.header.encode(), self.kernels.encode());
        let per_bucket: Vec<Vec<u8>> =
            self.plans.iter().flat_map(|p| [p.memory.encode(), encode_steps(&p.steps, &p.costs)]).collect();
        // the weights are written from where they are (they can be most of the file)
        let mut bodies: Vec<&[u8]> = vec![&header, &kernels, &self.weights];
        bodies.extend(per_bucket.iter().map(Vec::as_slice));
        let table_len = 16 + 24 * bodies.len() as u64 + 4;
        let mut offsets = vec![];
        let mut at = table_len;
        for (i, b) in bodies.iter().enumerate() {
            if section(i).0 == 3 {
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
            out.extend_from_slice(&section(i).0.to_le_bytes());
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
        let digest = file_digest(&out);
        out.extend_from_slice(&digest);
        out
    }

    /// Parses and checks an artifact: preamble, table, every checksum, then the consistency of
    /// each plan with the arena and the weights, and of the buckets with each other.
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
            return Err(ArtifactError::OlderFormat { found: version, supported: FORMAT_VERSION });
        }
        let count = u32_at(12).ok_or_else(|| short("preamble"))? as usize;
        let buckets = count.saturating_sub(SHARED.len()) / 2;
        if count < SHARED.len() + 2 || !(count - SHARED.len()).is_multiple_of(2) || buckets > MAX_BUCKETS {
            return Err(ArtifactError::Malformed {
                section: "table".into(),
                why: format!(
                    "{count} sections: expected {} plus two per batch-size bucket (1 to {MAX_BUCKETS})",
                    SHARED.len()
                ),
            });
        }
        let table_end = 16 + 24 * count;
        let table_crc = u32_at(table_end).ok_or_else(|| short("section table"))?;
        if crc32(&bytes[..table_end]) != table_crc {
            return Err(ArtifactError::Corrupted("table".into()));
        }
        let mut bodies: Vec<&[u8]> = vec![];
        // where the next section must start: right after the table (or the previous section),
        // the weights on their alignment
        let mut next = table_end as u64 + 4;
        for i in 0..count {
            let (kind, name) = section(i);
            let e = 16 + 24 * i;
            let (k, crc, off, len) =
                (u32_at(e).unwrap(), u32_at(e + 4).unwrap(), u64_at(e + 8).unwrap(), u64_at(e + 16).unwrap());
            if k != kind {
                return Err(ArtifactError::Malformed {
                    section: "table".into(),
                    why: format!("entry {i} is kind {k}, expected the {name} section"),
                });
            }
            let want = if kind == 3 { next.div_ceil(WEIGHT_ALIGN) * WEIGHT_ALIGN } else { next };
            if off != want {
                return Err(ArtifactError::Malformed {
                    section: "table".into(),
                    why: format!("the {name} section starts at byte {off}, not {want}"),
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
                return Err(ArtifactError::Corrupted(name));
            }
            bodies.push(body);
            next = end;
        }
        let end = next as usize;
        if bytes.len() < end + DIGEST_LEN {
            return Err(short("file digest"));
        }
        if bytes.len() > end + DIGEST_LEN {
            return Err(ArtifactError::Malformed {
                section: "file".into(),
                why: format!("{} bytes follow the file digest", bytes.len() - end - DIGEST_LEN),
            });
        }
        if file_digest(&bytes[..end])[..] != bytes[end..] {
            return Err(ArtifactError::Corrupted("file digest".into()));
        }
        let header = ArtifactHeader::decode(bodies[0]).map_err(malformed("header"))?;
        header.check().map_err(|why| ArtifactError::Malformed { section: "header".into(), why })?;
        let kernels = KernelImage::decode(bodies[1]).map_err(malformed("kernels"))?;
        check_kernels(&kernels, &header.target)
            .map_err(|why| ArtifactError::Malformed { section: "kernels".into(), why })?;
        let weights = bodies[2].to_vec();
        let mut plans = vec![];
        for b in 0..buckets {
            let (m, p) = (SHARED.len() + 2 * b, SHARED.len() + 2 * b + 1);
            let memory = MemoryPlan::decode(bodies[m]).map_err(|e| malformed(&section(m).1)(e))?;
            let (steps, costs) = decode_steps(bodies[p]).map_err(|e| malformed(&section(p).1)(e))?;
            plans.push(Plan { memory, steps, costs });
        }
        let a = Artifact { header, kernels, weights, plans };
        for b in 0..buckets {
            a.check_plan(b)?;
        }
        a.check_buckets()?;
        Ok(a)
    }

    /// Every launch of plan `b` names a kernel and every buffer lies inside the arena or the
    /// weights.
    fn check_plan(&self, b: usize) -> Result<(), ArtifactError> {
        let Plan { memory, steps, .. } = &self.plans[b];
        let bad = |why: String| ArtifactError::Malformed { section: section(SHARED.len() + 2 * b + 1).1, why };
        let in_bounds = |a: &Arg| match a {
            Arg::Arena(o) => *o < memory.arena_bytes.max(1),
            Arg::Weight(o) => *o < (self.weights.len() as u64).max(1),
        };
        for (i, s) in steps.iter().enumerate() {
            let args = match s {
                Step::Launch { kernel, args, .. } => {
                    if *kernel as usize >= self.kernels.names.len() {
                        return Err(bad(format!("step {i} launches kernel {kernel} of {}", self.kernels.names.len())));
                    }
                    args
                }
                Step::Library(c) => {
                    crate::library::LibraryDesc::of_call(c, memory.arena_bytes, self.weights.len() as u64)
                        .map_err(|why| bad(format!("step {i} ({} call of group {}): {why}", c.kind, c.group)))?;
                    &c.args
                }
            };
            if let Some(a) = args.iter().find(|a| !in_bounds(a)) {
                return Err(bad(format!("step {i} has an argument outside its buffer: {a:?}")));
            }
        }
        for bd in memory.inputs.iter().chain(&memory.outputs) {
            let end = crate::plan::binding_bytes(bd).and_then(|n| n.checked_add(bd.offset));
            if end.is_none_or(|e| e > memory.arena_bytes) {
                return Err(ArtifactError::Malformed {
                    section: section(SHARED.len() + 2 * b).1,
                    why: format!("'{}' lies outside the arena", bd.name),
                });
            }
            // a valid length is an i64 inside the arena, and only outputs have one
            if let Some((_, at)) = bd.valid {
                let is_output = memory.outputs.iter().any(|o| std::ptr::eq(o, bd));
                if !is_output || at.checked_add(8).is_none_or(|e| e > memory.arena_bytes) || bd.batch_axis.is_some() {
                    return Err(ArtifactError::Malformed {
                        section: section(SHARED.len() + 2 * b).1,
                        why: format!("'{}' has a valid length outside the arena (or is not a plain output)", bd.name),
                    });
                }
            }
        }
        Ok(())
    }

    /// The buckets grow strictly, match the header's batch dim, and agree on the interface:
    /// the same bindings, whose shapes differ only on the batch axis, where they are the
    /// bucket's batch times one factor.
    fn check_buckets(&self) -> Result<(), ArtifactError> {
        let bad = |b: usize, why: String| ArtifactError::Malformed { section: section(SHARED.len() + 2 * b).1, why };
        let first = &self.plans[0].memory;
        // outputs' batch axes are known only where padding is (a node that mixes rows may
        // change their shapes in any way)
        let unknown_outputs = self.header.batch.as_ref().is_some_and(|h| h.padding.is_err());
        for (b, p) in self.plans.iter().enumerate() {
            let m = &p.memory;
            match &self.header.batch {
                None if self.plans.len() > 1 || m.batch != 0 => {
                    return Err(bad(b, format!("batch {} in an artifact without a batch dim", m.batch)))
                }
                Some(_) if m.batch == 0 || (b > 0 && m.batch <= self.plans[b - 1].memory.batch) => {
                    return Err(bad(b, format!("bucket {b} has batch {}: buckets grow from 1", m.batch)))
                }
                _ => {}
            }
            if m.inputs.len() != first.inputs.len() || m.outputs.len() != first.outputs.len() {
                return Err(bad(b, "its inputs or outputs differ from the first bucket's".into()));
            }
            let pairs = m.inputs.iter().zip(&first.inputs).map(|p| (p, false));
            for ((x, y), output) in pairs.chain(m.outputs.iter().zip(&first.outputs).map(|p| (p, true))) {
                let same_rank = x.shape.len() == y.shape.len();
                if x.name != y.name || x.dtype != y.dtype || x.batch_axis != y.batch_axis || !same_rank {
                    return Err(bad(b, format!("binding '{}' differs from the first bucket's '{}'", x.name, y.name)));
                }
                if x.batch_axis.is_some() && (self.header.batch.is_none() || (output && unknown_outputs)) {
                    return Err(bad(b, format!("binding '{}' has a batch axis the header rules out", x.name)));
                }
                let agrees = x.shape.iter().zip(&y.shape).enumerate().all(|(d, (&u, &v))| {
                    if x.batch_axis == Some(d as u32) {
                        u % m.batch == 0 && v % first.batch == 0 && u / m.batch == v / first.batch
                    } else {
                        u == v || (output && unknown_outputs)
                    }
                });
                if !agrees {
                    return Err(bad(
                        b,
                        format!(
                            "binding '{}' has shape {:?} at batch {} but {:?} at batch {}",
                            x.name, x.shape, m.batch, y.shape, first.batch
                        ),
                    ));
                }
            }
        }
        Ok(())
    }

    /// The buckets' batch sizes as text: `1, 8, 32`.
    pub fn bucket_list(&self) -> String {
        self.plans.iter().map(|p| p.memory.batch.to_string()).collect::<Vec<_>>().join(", ")
    }

    /// The plan that runs batch `n`: the bucket of that size, or with padding the smallest
    /// bucket above it. The error names the buckets.
    pub fn plan_for(&self, n: u64) -> Result<usize, String> {
        let Some(h) = &self.header.batch else {
            return Ok(0);
        };
        if let Some(i) = self.plans.iter().position(|p| p.memory.batch == n) {
            return Ok(i);
        }
        let above = self.plans.iter().position(|p| p.memory.batch > n);
        match (&h.padding, above) {
            _ if n == 0 => Err("batch 0: the batch is empty".into()),
            (_, None) => Err(format!("batch {n} is larger than the largest bucket ({})", self.bucket_list())),
            (Err(why), _) => {
                Err(format!("batch {n} is not one of the buckets ({}) and cannot be padded: {why}", self.bucket_list()))
            }
            (Ok(()), Some(i)) => Ok(i),
        }
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
