//! What an artifact asks the runtime to do: its kernels, where every buffer lives in the one
//! arena, and the steps of a run (kernel launches and vendor-library calls) in order.
use crate::codec::{ReadError, Reader, Writer};

/// The kernels of an artifact: one PTX module (NVIDIA targets) or one AMDGPU code object
/// (HSACO, AMD targets; the other is empty) and the entry names the plan launches by index.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct KernelImage {
    pub ptx: String,
    /// An ELF code object for the header's `gfx` target holding every kernel (`<name>.kd`).
    pub code_object: Vec<u8>,
    pub names: Vec<String>,
}

/// A graph input or output: its name, dtype name (`f32`, `i64`, ...), shape and place in the
/// arena; `batch_axis` is the axis that grows with the batch (its size is the plan's batch
/// times a fixed factor), None where the shape does not depend on it or where it is not known.
#[derive(Clone, Debug, PartialEq)]
pub struct Binding {
    pub name: String,
    pub dtype: String,
    pub shape: Vec<u64>,
    pub offset: u64,
    pub batch_axis: Option<u32>,
    /// An output whose length along an axis depends on the data: (axis, arena offset of the
    /// valid length, an i64). `shape` holds the bound; the run returns the valid entries.
    pub valid: Option<(u32, u64)>,
}

impl Binding {
    /// Its shape at batch `n` in a plan of batch `plan_batch` (the batch axis scaled).
    pub fn shape_at(&self, plan_batch: u64, n: u64) -> Vec<u64> {
        let mut s = self.shape.clone();
        if let Some(a) = self.batch_axis {
            let a = a as usize;
            s[a] = s[a] / plan_batch.max(1) * n;
        }
        s
    }

    /// Its bytes at batch `n` in a plan of batch `plan_batch` (None for an unknown dtype).
    pub fn bytes_at(&self, plan_batch: u64, n: u64) -> Option<u64> {
        match self.rows(plan_batch) {
            Some((outer, row)) => Some(outer * row * n),
            None => binding_bytes(self),
        }
    }

    /// The row-major layout around the batch axis: (outer elements before it, bytes of one
    /// batch row after it, including the axis' own factor). None without a batch axis.
    pub fn rows(&self, plan_batch: u64) -> Option<(u64, u64)> {
        let a = self.batch_axis? as usize;
        let outer: u64 = self.shape[..a].iter().product();
        let bytes = binding_bytes(self)?;
        Some((outer, bytes / outer.max(1) / plan_batch.max(1)))
    }
}

/// Bytes of a binding: its elements times its dtype's size (None for an unknown dtype or an
/// overflow).
pub fn binding_bytes(b: &Binding) -> Option<u64> {
    let size = match b.dtype.as_str() {
        "bool" | "u8" | "i8" => 1,
        "f16" | "bf16" | "i16" | "u16" => 2,
        "f32" | "i32" | "u32" => 4,
        "f64" | "i64" | "u64" => 8,
        _ => return None,
    };
    b.shape.iter().try_fold(size, |acc: u64, &d| acc.checked_mul(d))
}

/// One arena for every intermediate, input and output; offsets are multiples of `alignment`.
/// `batch` is the batch size the plan was built for (0 for a model without a batch dim).
#[derive(Clone, Debug, PartialEq)]
pub struct MemoryPlan {
    pub batch: u64,
    pub arena_bytes: u64,
    pub alignment: u64,
    pub inputs: Vec<Binding>,
    pub outputs: Vec<Binding>,
}

/// A kernel or library argument: a buffer at an offset in the arena or in the weights.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Arg {
    Arena(u64),
    Weight(u64),
}

/// A vendor-library call (cuBLASLt GEMM, cuDNN convolution) with its descriptor: the fusion
/// group it runs, named integer parameters (sizes, transposes, epilogue) and its buffers.
#[derive(Clone, Debug, PartialEq)]
pub struct LibraryCall {
    pub kind: String,
    pub group: u32,
    pub params: Vec<(String, i64)>,
    pub args: Vec<Arg>,
}

/// What runs one batch size: its memory and its steps.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    pub memory: MemoryPlan,
    pub steps: Vec<Step>,
    /// What each step computes, for profiles: one per step, or none.
    pub costs: Vec<StepCost>,
}

/// What a step computes, as the compiler saw it: its fusion group's schedule (`elementwise`,
/// `library-conv`, ...), its ops (`Conv+Add+Relu`), the bytes it must move at least (every
/// input and output once) and its arithmetic (multiply-adds of GEMMs, convolutions and
/// attention, as 2 FLOPs each; 0 for the rest).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct StepCost {
    pub schedule: String,
    pub ops: String,
    pub bytes: u64,
    pub flops: u64,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Step {
    Launch { kernel: u32, grid: [u32; 3], block: [u32; 3], args: Vec<Arg> },
    Library(LibraryCall),
}

fn write_args(w: &mut Writer, args: &[Arg]) {
    w.u64(args.len() as u64);
    for a in args {
        let (tag, off) = match a {
            Arg::Arena(o) => (0, *o),
            Arg::Weight(o) => (1, *o),
        };
        w.u32(tag);
        w.u64(off);
    }
}

fn read_args(r: &mut Reader) -> Result<Vec<Arg>, ReadError> {
    let n = r.len("argument count")?;
    (0..n)
        .map(|_| match r.u32("argument kind")? {
            0 => Ok(Arg::Arena(r.u64("arena offset")?)),
            1 => Ok(Arg::Weight(r.u64("weight offset")?)),
            k => Err(ReadError(format!("argument kind {k} is unknown"))),
        })
        .collect()
}

impl KernelImage {
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::default();
        w.str(&self.ptx);
        w.blob(&self.code_object);
        w.u64(self.names.len() as u64);
        for n in &self.names {
            w.str(n);
        }
        w.bytes
    }
    pub fn decode(bytes: &[u8]) -> Result<Self, ReadError> {
        let mut r = Reader::new(bytes);
        let ptx = r.str("PTX")?;
        let code_object = r.blob("code object")?.to_vec();
        let n = r.len("kernel count")?;
        let names = (0..n).map(|_| r.str("kernel name")).collect::<Result<_, _>>()?;
        r.done("the kernel section")?;
        Ok(KernelImage { ptx, code_object, names })
    }
}

fn write_binding(w: &mut Writer, b: &Binding) {
    w.str(&b.name);
    w.str(&b.dtype);
    w.u64(b.shape.len() as u64);
    for &d in &b.shape {
        w.u64(d);
    }
    w.u64(b.offset);
    w.u64(b.batch_axis.map_or(u64::MAX, u64::from));
    let (axis, at) = b.valid.map_or((u64::MAX, 0), |(a, o)| (a as u64, o));
    w.u64(axis);
    w.u64(at);
}

fn read_binding(r: &mut Reader) -> Result<Binding, ReadError> {
    let name = r.str("binding name")?;
    let dtype = r.str("binding dtype")?;
    let rank = r.len("binding rank")?;
    let shape = (0..rank).map(|_| r.u64("binding dim")).collect::<Result<_, _>>()?;
    let offset = r.u64("binding offset")?;
    let batch_axis = match r.u64("binding batch axis")? {
        u64::MAX => None,
        a if a < rank as u64 => Some(a as u32),
        a => return Err(ReadError(format!("binding '{name}' has batch axis {a} of rank {rank}"))),
    };
    let valid = match (r.u64("binding valid axis")?, r.u64("binding valid length")?) {
        (u64::MAX, _) => None,
        (a, o) if a < rank as u64 => Some((a as u32, o)),
        (a, _) => return Err(ReadError(format!("binding '{name}' has a valid-length axis {a} of rank {rank}"))),
    };
    Ok(Binding { name, dtype, shape, offset, batch_axis, valid })
}

impl MemoryPlan {
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::default();
        w.u64(self.batch);
        w.u64(self.arena_bytes);
        w.u64(self.alignment);
        for list in [&self.inputs, &self.outputs] {
            w.u64(list.len() as u64);
            for b in list {
                write_binding(&mut w, b);
            }
        }
        w.bytes
    }
    pub fn decode(bytes: &[u8]) -> Result<Self, ReadError> {
        let mut r = Reader::new(bytes);
        let batch = r.u64("plan batch")?;
        let arena_bytes = r.u64("arena size")?;
        let alignment = r.u64("arena alignment")?;
        let mut lists = vec![];
        for what in ["input count", "output count"] {
            let n = r.len(what)?;
            lists.push((0..n).map(|_| read_binding(&mut r)).collect::<Result<Vec<_>, _>>()?);
        }
        r.done("the memory section")?;
        let outputs = lists.pop().unwrap();
        let inputs = lists.pop().unwrap();
        Ok(MemoryPlan { batch, arena_bytes, alignment, inputs, outputs })
    }
}

/// The plan section: its steps, then one cost per step (or none).
pub fn encode_steps(steps: &[Step], costs: &[StepCost]) -> Vec<u8> {
    let mut w = Writer::default();
    w.u64(steps.len() as u64);
    for s in steps {
        match s {
            Step::Launch { kernel, grid, block, args } => {
                w.u32(0);
                w.u32(*kernel);
                for v in grid.iter().chain(block) {
                    w.u32(*v);
                }
                write_args(&mut w, args);
            }
            Step::Library(c) => {
                w.u32(1);
                w.str(&c.kind);
                w.u32(c.group);
                w.u64(c.params.len() as u64);
                for (k, v) in &c.params {
                    w.str(k);
                    w.u64(*v as u64);
                }
                write_args(&mut w, &c.args);
            }
        }
    }
    w.u64(costs.len() as u64);
    for c in costs {
        w.str(&c.schedule);
        w.str(&c.ops);
        w.u64(c.bytes);
        w.u64(c.flops);
    }
    w.bytes
}

pub fn decode_steps(bytes: &[u8]) -> Result<(Vec<Step>, Vec<StepCost>), ReadError> {
    let mut r = Reader::new(bytes);
    let n = r.len("step count")?;
    let mut steps = Vec::with_capacity(n.min(1 << 16));
    for _ in 0..n {
        steps.push(match r.u32("step kind")? {
            0 => {
                let kernel = r.u32("kernel index")?;
                let mut dims = [0u32; 6];
                for d in dims.iter_mut() {
                    *d = r.u32("launch dimension")?;
                }
                let args = read_args(&mut r)?;
                Step::Launch { kernel, grid: [dims[0], dims[1], dims[2]], block: [dims[3], dims[4], dims[5]], args }
            }
            1 => {
                let kind = r.str("library call kind")?;
                let group = r.u32("library call group")?;
                let np = r.len("library parameter count")?;
                let params = (0..np)
                    .map(|_| Ok((r.str("library parameter name")?, r.u64("library parameter")? as i64)))
                    .collect::<Result<_, ReadError>>()?;
                let args = read_args(&mut r)?;
                Step::Library(LibraryCall { kind, group, params, args })
            }
            k => return Err(ReadError(format!("step kind {k} is unknown"))),
        });
    }
    let nc = r.len("step cost count")?;
    if nc != 0 && nc != steps.len() {
        return Err(ReadError(format!("{nc} step costs for {} steps", steps.len())));
    }
    let costs = (0..nc)
        .map(|_| {
            Ok(StepCost {
                schedule: r.str("step schedule")?,
                ops: r.str("step ops")?,
                bytes: r.u64("step bytes")?,
                flops: r.u64("step flops")?,
            })
        })
        .collect::<Result<Vec<_>, ReadError>>()?;
    r.done("the plan section")?;
    Ok((steps, costs))
}
