//! A loaded artifact on one GPU: the kernels loaded once, the weights uploaded once, one arena
//! (as large as the largest bucket's); `run` picks the plan for the inputs' batch, copies the
//! inputs in (padded to the bucket's batch), replays the plan (captured once per bucket as a
//! CUDA graph on the session's own stream) and copies the outputs' rows out. GEMM steps run
//! through cuBLASLt and convolutions through cuDNN, their descriptors and algorithms chosen
//! once at load for every bucket.
use crate::artifact::{Artifact, ArtifactError};
use crate::conv::{ConvStep, Dnn, Epilogue};
use crate::gemm::{Blas, GemmStep};
use crate::library::LibraryDesc;
use crate::plan::{binding_bytes, Arg, Binding, MemoryPlan, Step};
use crate::remap::Remap;
use cudarc::driver::{
    result, sys, CudaContext, CudaEvent, CudaFunction, CudaGraph, CudaSlice, CudaStream, DevicePtr, LaunchConfig,
    PushKernelArg,
};
use cudarc::nvrtc::Ptx;
use std::borrow::Cow;
use std::path::Path;
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error(transparent)]
    Artifact(#[from] ArtifactError),
    #[error("CUDA: {0}")]
    Cuda(String),
    #[error("step {step} ({kind} call of group {group}{bucket}): {why}")]
    Library { step: usize, kind: String, group: u32, bucket: String, why: String },
    #[error("input '{name}': {why}")]
    Input { name: String, why: String },
    #[error("{0}")]
    Batch(String),
    /// An artifact for another GPU vendor or chip than the session's (named in the message).
    #[error("{0}")]
    Backend(String),
    /// The HIP runtime (AMD GPUs, feature `hip`): no device, or a call that failed.
    #[error("HIP: {0}")]
    Hip(String),
}

fn cuda(e: impl std::fmt::Display) -> RuntimeError {
    RuntimeError::Cuda(e.to_string())
}

/// The error of library step `i` (a `Step::Library`) of plan `p`, naming its kind, group and
/// bucket.
pub(crate) fn library_error(a: &Artifact, p: usize, i: usize, why: String) -> RuntimeError {
    let plan = &a.plans[p];
    let Step::Library(c) = &plan.steps[i] else { unreachable!("step {i} is a library call") };
    let bucket = if a.header.batch.is_some() { format!(", batch {}", plan.memory.batch) } else { String::new() };
    RuntimeError::Library { step: i, kind: c.kind.clone(), group: c.group, bucket, why }
}

/// The most graphs a plan keeps for callers' buffers (`run_device`), one per set of addresses;
/// the oldest is dropped first.
pub const DEVICE_GRAPHS: usize = 8;

/// A plan's state in a session: its library calls, prepared, and its CUDA graphs.
struct PlanState {
    /// Per step: its library call, prepared (None for kernel launches).
    library: Vec<Option<LibraryStep>>,
    /// The plan as a CUDA graph on the arena's own bindings, captured on its first run.
    graph: Option<CudaGraph>,
    /// The plan captured with callers' buffers standing in for bindings, oldest first.
    device_graphs: Vec<(Remap, Option<CudaGraph>)>,
}

/// A caller's device buffer for one input or output of `Session::run_device`: its address and
/// its length in bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeviceBuffer {
    pub ptr: u64,
    pub bytes: u64,
}

/// The outputs of a run with their shapes (`run_shaped`): per output, its bytes and its dims.
pub type ShapedOutputs = Vec<(Vec<u8>, Vec<u64>)>;

/// A library step, ready to enqueue.
enum LibraryStep {
    Gemm(GemmStep),
    Conv(ConvStep),
}

pub struct Session {
    pub artifact: Artifact,
    /// Per plan (bucket): its prepared library calls and graph. Dropped before the handles below.
    plans: Vec<PlanState>,
    blas: Option<Blas>,
    dnn: Option<Dnn>,
    stream: Arc<CudaStream>,
    functions: Vec<CudaFunction>,
    arena: CudaSlice<u8>,
    /// Owned for the session's life: the kernels read it through `bases`.
    _weights: CudaSlice<u8>,
    /// Device addresses of the arena and the weights (fixed for the session's life).
    bases: (u64, u64),
    /// Per output, its valid length after the last run (outputs whose length depends on the data).
    valid: Vec<Option<u64>>,
    /// Recorded after the last work enqueued, on the stream in `last_stream`: work on another
    /// stream waits for it (the arena is shared by every run).
    done: CudaEvent,
    last_stream: std::cell::Cell<Option<usize>>,
}

/// A loaded artifact on the GPU its target names: `sm_…` on an NVIDIA GPU through a CUDA
/// `Session`, `gfx…` on an AMD GPU through a `HipSession` (runtime feature `hip`; without the
/// feature a `gfx` artifact is refused by name). For programs that take artifacts of either kind:
/// `open(path, device)`, then `run`; `Session`/`HipSession` directly for the rest of their API.
// one per loaded model: the variants' sizes do not matter
#[allow(clippy::large_enum_variant)]
pub enum AnySession {
    Cuda(Session),
    #[cfg(feature = "hip")]
    Hip(crate::hip::HipSession),
}

/// Reads the artifact at `path` and loads it onto GPU `device` (that vendor's device numbering)
/// with the session its target needs (see `AnySession`).
pub fn open(path: &Path, device: usize) -> Result<AnySession, RuntimeError> {
    AnySession::from_artifact(Artifact::read(path)?, device)
}

impl AnySession {
    /// `open`.
    pub fn load(path: &Path, device: usize) -> Result<AnySession, RuntimeError> {
        open(path, device)
    }

    /// Loads an artifact already in memory with the session its target needs.
    pub fn from_artifact(artifact: Artifact, device: usize) -> Result<AnySession, RuntimeError> {
        #[cfg(feature = "hip")]
        if artifact.header.target.starts_with("gfx") {
            return crate::hip::HipSession::from_artifact(artifact, device).map(AnySession::Hip);
        }
        Session::from_artifact(artifact, device).map(AnySession::Cuda)
    }

    /// The loaded artifact.
    pub fn artifact(&self) -> &Artifact {
        match self {
            AnySession::Cuda(s) => &s.artifact,
            #[cfg(feature = "hip")]
            AnySession::Hip(s) => &s.artifact,
        }
    }

    /// The batch of a set of inputs (`Session::batch_of`).
    pub fn batch_of(&self, inputs: &[&[u8]]) -> Result<u64, RuntimeError> {
        let lengths: Vec<u64> = inputs.iter().map(|b| b.len() as u64).collect();
        batch_of_lengths(self.artifact(), &lengths)
    }

    /// `Session::run`.
    pub fn run(&mut self, inputs: &[&[u8]]) -> Result<Vec<Vec<u8>>, RuntimeError> {
        match self {
            AnySession::Cuda(s) => s.run(inputs),
            #[cfg(feature = "hip")]
            AnySession::Hip(s) => s.run(inputs),
        }
    }

    /// `Session::run_batch`.
    pub fn run_batch(&mut self, n: u64, inputs: &[&[u8]]) -> Result<Vec<Vec<u8>>, RuntimeError> {
        match self {
            AnySession::Cuda(s) => s.run_batch(n, inputs),
            #[cfg(feature = "hip")]
            AnySession::Hip(s) => s.run_batch(n, inputs),
        }
    }

    /// `Session::run_shaped`.
    pub fn run_shaped(&mut self, inputs: &[&[u8]]) -> Result<ShapedOutputs, RuntimeError> {
        match self {
            AnySession::Cuda(s) => s.run_shaped(inputs),
            #[cfg(feature = "hip")]
            AnySession::Hip(s) => s.run_shaped(inputs),
        }
    }

    /// The GPU's name, as its driver reports it.
    pub fn device_name(&self) -> String {
        match self {
            AnySession::Cuda(s) => s.device_name(),
            #[cfg(feature = "hip")]
            AnySession::Hip(s) => s.device_name(),
        }
    }
}

/// The compilation target of GPU `device` (`sm_90` for compute capability 9.0): what to ask the
/// hub for, or to pass to `xforge compile --target`. An error without a driver or a device.
pub fn device_target(device: usize) -> Result<String, RuntimeError> {
    // SAFETY: only probes whether the driver library can be opened
    if !unsafe { cudarc::driver::sys::is_culib_present() } {
        return Err(RuntimeError::Cuda("no CUDA driver (libcuda.so) on this machine".into()));
    }
    let ctx = CudaContext::new(device).map_err(cuda)?;
    let (major, minor) = ctx.compute_capability().map_err(cuda)?;
    Ok(format!("sm_{major}{minor}"))
}

/// The name of GPU `device`, as the driver reports it (the tuning table's GPU).
pub fn device_name(device: usize) -> Result<String, RuntimeError> {
    // SAFETY: only probes whether the driver library can be opened
    if !unsafe { cudarc::driver::sys::is_culib_present() } {
        return Err(RuntimeError::Cuda("no CUDA driver (libcuda.so) on this machine".into()));
    }
    CudaContext::new(device).map_err(cuda)?.name().map_err(cuda)
}

impl Session {
    /// Loads an artifact onto GPU `device`: checks the file and the target first.
    pub fn load(path: &Path, device: usize) -> Result<Session, RuntimeError> {
        Session::from_artifact(Artifact::read(path)?, device)
    }

    /// Loads an artifact already in memory (built by the compiler library, or checked by
    /// `Artifact::from_bytes`) onto GPU `device`: checks the target first.
    pub fn from_artifact(artifact: Artifact, device: usize) -> Result<Session, RuntimeError> {
        // an AMD artifact is refused before the CUDA driver is touched
        let target = &artifact.header.target;
        if target.starts_with("gfx") {
            return Err(RuntimeError::Backend(format!(
                "the artifact targets {target} (AMD): load it with a HIP session (runtime feature `hip`)"
            )));
        }
        // SAFETY: only probes whether the driver library can be opened
        if !unsafe { cudarc::driver::sys::is_culib_present() } {
            return Err(RuntimeError::Cuda("no CUDA driver (libcuda.so) on this machine".into()));
        }
        // the whole load (allocations, module loading, library setup) holds the setup lock
        let setup = setup_lock();
        let ctx = CudaContext::new(device).map_err(cuda)?;
        let (major, minor) = ctx.compute_capability().map_err(cuda)?;
        artifact.header.runs_on(major as u32, minor as u32)?;
        // a stream of its own: the legacy default stream cannot be captured into a graph
        let stream = ctx.new_stream().map_err(cuda)?;
        let functions = if artifact.kernels.names.is_empty() {
            vec![]
        } else {
            let module = ctx.load_module(Ptx::from_src(artifact.kernels.ptx.clone())).map_err(cuda)?;
            artifact.kernels.names.iter().map(|n| module.load_function(n).map_err(cuda)).collect::<Result<_, _>>()?
        };
        let arena_bytes = artifact.plans.iter().map(|p| p.memory.arena_bytes).max().unwrap_or(0);
        let arena = stream.alloc_zeros::<u8>(arena_bytes.max(1) as usize).map_err(cuda)?;
        let weights = if artifact.weights.is_empty() {
            stream.alloc_zeros::<u8>(1).map_err(cuda)?
        } else {
            stream.clone_htod(&artifact.weights).map_err(cuda)?
        };
        let bases = {
            let (a, _ga) = arena.device_ptr(&stream);
            let (w, _gw) = weights.device_ptr(&stream);
            (a, w)
        };
        let done = ctx.new_event(None).map_err(cuda)?;
        let mut session = Session {
            artifact,
            plans: vec![],
            blas: None,
            dnn: None,
            stream,
            functions,
            arena,
            _weights: weights,
            bases,
            valid: vec![],
            done,
            last_stream: std::cell::Cell::new(None),
        };
        let prepared = session.prepare_library_steps();
        // a session that failed here drops (and takes the lock in `drop`) after the guard
        drop(setup);
        prepared?;
        Ok(session)
    }

    /// Descriptors, algorithms and handles for every plan's library steps (cuBLASLt and cuDNN
    /// are opened only when a plan has such steps).
    fn prepare_library_steps(&mut self) -> Result<(), RuntimeError> {
        let a = &self.artifact;
        let mut descs = vec![];
        for (p, plan) in a.plans.iter().enumerate() {
            for (i, s) in plan.steps.iter().enumerate() {
                if let Step::Library(c) = s {
                    let d = LibraryDesc::of_call(c, plan.memory.arena_bytes, a.weights.len() as u64)
                        .map_err(|why| library_error(a, p, i, why))?;
                    descs.push((p, i, d));
                }
            }
        }
        let err = |p: usize, i: usize, why: String| library_error(&self.artifact, p, i, why);
        if let Some((p, i, _)) = descs.iter().find(|(_, _, d)| matches!(d, LibraryDesc::Gemm(_))) {
            self.blas = Some(Blas::new(&self.stream).map_err(|e| err(*p, *i, e))?);
        }
        let max_channels = descs
            .iter()
            .filter_map(|(_, _, d)| if let LibraryDesc::Conv(c) = d { Some(c.out_channels) } else { None })
            .max();
        let first_conv = descs.iter().find(|(_, _, d)| matches!(d, LibraryDesc::Conv(_)));
        if let (Some(m), Some((p, i, _))) = (max_channels, first_conv) {
            self.dnn = Some(Dnn::new(&self.stream, m).map_err(|e| err(*p, *i, e))?);
        }
        let mut plans: Vec<PlanState> = self
            .artifact
            .plans
            .iter()
            .map(|p| PlanState {
                library: (0..p.steps.len()).map(|_| None).collect(),
                graph: None,
                device_graphs: vec![],
            })
            .collect();
        for (p, i, d) in descs {
            let Step::Library(c) = &self.artifact.plans[p].steps[i] else { unreachable!() };
            let ptrs = self.pointers(&c.args, &Remap::none());
            let prepared = match &d {
                LibraryDesc::Gemm(g) => GemmStep::new(self.blas.as_ref().unwrap(), g, &ptrs).map(LibraryStep::Gemm),
                LibraryDesc::Conv(cv) => Epilogue::of_call(c, cv, &self.functions, &ptrs).and_then(|e| {
                    ConvStep::new(self.dnn.as_ref().unwrap(), &self.stream, cv, &ptrs, e).map(LibraryStep::Conv)
                }),
            };
            plans[p].library[i] = Some(prepared.map_err(|e| err(p, i, e))?);
        }
        self.stream.synchronize().map_err(cuda)?;
        self.plans = plans;
        Ok(())
    }

    /// The batch of a set of inputs (raw little-endian bytes in the artifact's input order):
    /// from the byte lengths of the inputs with a batch axis, which must agree; 0 for an
    /// artifact without a batch dim.
    pub fn batch_of(&self, inputs: &[&[u8]]) -> Result<u64, RuntimeError> {
        let lengths: Vec<u64> = inputs.iter().map(|b| b.len() as u64).collect();
        self.batch_of_lengths(&lengths)
    }

    /// `batch_of` from the inputs' byte lengths.
    pub fn batch_of_lengths(&self, inputs: &[u64]) -> Result<u64, RuntimeError> {
        batch_of_lengths(&self.artifact, inputs)
    }

    /// Runs the model on raw little-endian input bytes (in the artifact's input order); the
    /// batch comes from their lengths. Returns the outputs' bytes in output order.
    pub fn run(&mut self, inputs: &[&[u8]]) -> Result<Vec<Vec<u8>>, RuntimeError> {
        let n = self.batch_of(inputs)?;
        self.run_batch(n, inputs)
    }

    /// Runs batch `n` (0 without a batch dim): the bucket of that batch, or the next larger one
    /// with the inputs padded by zero rows and only the first `n` rows of each output returned.
    pub fn run_batch(&mut self, n: u64, inputs: &[&[u8]]) -> Result<Vec<Vec<u8>>, RuntimeError> {
        let p = self.artifact.plan_for(n).map_err(RuntimeError::Batch)?;
        let mem = &self.artifact.plans[p].memory;
        let staged = staged_inputs(mem, n, inputs)?;
        self.follow(self.stream.cu_stream())?;
        for (b, host) in mem.inputs.iter().zip(&staged) {
            let at = b.offset as usize;
            let mut view = self.arena.slice_mut(at..at + host.len());
            self.stream.memcpy_htod(&**host, &mut view).map_err(cuda)?;
        }
        self.replay(p)?;
        let mem = &self.artifact.plans[p].memory;
        let mut outs = vec![];
        let mut lengths = vec![];
        for b in &mem.outputs {
            let len = binding_bytes(b).unwrap_or(0) as usize;
            let mut host = vec![0u8; len];
            let at = b.offset as usize;
            let view = self.arena.slice(at..at + len);
            self.stream.memcpy_dtoh(&view, &mut host).map_err(cuda)?;
            let mut n8 = [0u8; 8];
            if let Some((_, at)) = b.valid {
                let view = self.arena.slice(at as usize..at as usize + 8);
                self.stream.memcpy_dtoh(&view, &mut n8).map_err(cuda)?;
            }
            outs.push(host);
            lengths.push(n8);
        }
        self.stream.synchronize().map_err(cuda)?;
        let (outs, valid) = finish_outputs(mem, n, outs, lengths);
        self.valid = valid;
        Ok(outs)
    }

    /// Per output, its valid length (along the axis its binding names) after the last run; None
    /// for outputs of a fixed shape.
    pub fn valid_lengths(&self) -> &[Option<u64>] {
        &self.valid
    }

    /// `run`, with each output's shape (outputs whose length depends on the data are returned at
    /// their valid length).
    pub fn run_shaped(&mut self, inputs: &[&[u8]]) -> Result<ShapedOutputs, RuntimeError> {
        let n = self.batch_of(inputs)?;
        self.run_batch_shaped(n, inputs)
    }

    /// `run_batch`, with each output's shape.
    pub fn run_batch_shaped(&mut self, n: u64, inputs: &[&[u8]]) -> Result<ShapedOutputs, RuntimeError> {
        let outs = self.run_batch(n, inputs)?;
        let p = self.artifact.plan_for(n).map_err(RuntimeError::Batch)?;
        Ok(with_shapes(&self.artifact.plans[p].memory, n, outs))
    }

    /// Runs the model on callers' device buffers, enqueued on the caller's `stream` without
    /// waiting for it: inputs are read and outputs written in place (in the artifact's orders,
    /// each exactly its binding's bytes at a bucket's batch). A plan is captured once per set of
    /// addresses (`DEVICE_GRAPHS` kept per plan) and launched on `stream`. A buffer that cannot
    /// stand in for its binding (misaligned, sharing bytes with another binding, or an address a
    /// library call fixed at load) is copied device to device instead. Returns each output's
    /// valid length (outputs whose length depends on the data; reading it waits for `stream`).
    ///
    /// # Safety
    /// `stream` is a live stream of this session's context; every buffer is live device memory
    /// of at least `bytes` bytes there until the work enqueued on `stream` completes, and the
    /// outputs do not overlap the inputs or each other.
    pub unsafe fn run_device(
        &mut self,
        stream: sys::CUstream,
        inputs: &[DeviceBuffer],
        outputs: &[DeviceBuffer],
    ) -> Result<Vec<Option<u64>>, RuntimeError> {
        let count = |given: usize, want: usize, what: &str| {
            if given == want {
                Ok(())
            } else {
                Err(RuntimeError::Input {
                    name: "*".into(),
                    why: format!("{given} {what} given, the model has {want}"),
                })
            }
        };
        let first = &self.artifact.plans[0].memory;
        count(inputs.len(), first.inputs.len(), "inputs")?;
        count(outputs.len(), first.outputs.len(), "outputs")?;
        let lengths: Vec<u64> = inputs.iter().map(|b| b.bytes).collect();
        let n = self.batch_of_lengths(&lengths)?;
        let p = self.artifact.plan_for(n).map_err(RuntimeError::Batch)?;
        let mem = &self.artifact.plans[p].memory;
        if self.artifact.header.batch.is_some() && mem.batch != n {
            let buckets: Vec<String> = self.artifact.plans.iter().map(|q| q.memory.batch.to_string()).collect();
            return Err(RuntimeError::Batch(format!(
                "batch {n}: device buffers run at a bucket's batch only ({}); pad the batch or pass host arrays",
                buckets.join(", ")
            )));
        }
        let bindings: Vec<(&Binding, DeviceBuffer)> = mem
            .inputs
            .iter()
            .zip(inputs.iter().copied())
            .chain(mem.outputs.iter().zip(outputs.iter().copied()))
            .collect();
        for (b, d) in &bindings {
            let want = binding_bytes(b).ok_or_else(|| RuntimeError::Input {
                name: b.name.clone(),
                why: format!("dtype {} is not known", b.dtype),
            })?;
            if d.bytes != want {
                return Err(RuntimeError::Input {
                    name: b.name.clone(),
                    why: format!("{} bytes given, {want} expected", d.bytes),
                });
            }
            if d.ptr == 0 && want > 0 {
                return Err(RuntimeError::Input { name: b.name.clone(), why: "a null device address".into() });
            }
        }
        let arena = self.bases.0;
        let range = |b: &Binding, d: &DeviceBuffer| (arena + b.offset, arena + b.offset + d.bytes);
        // addresses that prepared library calls fixed at load (a GEMM's bias)
        let pinned: Vec<u64> = self.plans[p]
            .library
            .iter()
            .filter_map(|l| match l {
                Some(LibraryStep::Gemm(g)) => g.pinned(),
                _ => None,
            })
            .collect();
        let align = mem.alignment.max(1);
        let stands_in: Vec<bool> = bindings
            .iter()
            .enumerate()
            .map(|(k, (b, d))| {
                let (s, e) = range(b, d);
                let alone = bindings.iter().enumerate().all(|(j, (c, f))| {
                    let (t, u) = range(c, f);
                    j == k || e <= t || u <= s
                });
                d.bytes > 0 && alone && d.ptr % align == 0 && !pinned.iter().any(|&a| a >= s && a < e)
            })
            .collect();
        let remap = Remap::new(
            bindings
                .iter()
                .zip(&stands_in)
                .filter(|(_, &m)| m)
                .map(|((b, d), _)| {
                    let (s, e) = range(b, d);
                    (s, e, d.ptr)
                })
                .collect(),
        );
        let n_in = inputs.len();
        self.follow(stream)?;
        self.stream.context().bind_to_thread().map_err(cuda)?;
        for (k, (b, d)) in bindings.iter().enumerate().take(n_in) {
            if !stands_in[k] && d.bytes > 0 {
                // SAFETY: the arena range was checked when the artifact was read; the caller's
                // buffer holds `bytes` (this function's contract)
                unsafe { result::memcpy_dtod_async(arena + b.offset, d.ptr, d.bytes as usize, stream) }
                    .map_err(cuda)?;
            }
        }
        let at = match self.plans[p].device_graphs.iter().position(|(r, _)| *r == remap) {
            Some(at) => at,
            None => {
                let graph = self.capture(p, &remap)?;
                let graphs = &mut self.plans[p].device_graphs;
                if graphs.len() == DEVICE_GRAPHS {
                    graphs.remove(0);
                }
                graphs.push((remap.clone(), graph));
                graphs.len() - 1
            }
        };
        if let Some(g) = &self.plans[p].device_graphs[at].1 {
            let _setup = setup_lock();
            // SAFETY: the graph lives in the session; the stream is the caller's (contract)
            unsafe { result::graph::launch(g.cu_graph_exec(), stream) }.map_err(cuda)?;
        }
        for (k, (b, d)) in bindings.iter().enumerate().skip(n_in) {
            if !stands_in[k] && d.bytes > 0 {
                // SAFETY: as for the inputs
                unsafe { result::memcpy_dtod_async(d.ptr, arena + b.offset, d.bytes as usize, stream) }
                    .map_err(cuda)?;
            }
        }
        self.mark(stream)?;
        let mem = &self.artifact.plans[p].memory;
        let mut valid = vec![None; mem.outputs.len()];
        let counted: Vec<(usize, u64)> =
            mem.outputs.iter().enumerate().filter_map(|(k, b)| b.valid.map(|(_, at)| (k, at))).collect();
        let mut lengths = vec![[0u8; 8]; counted.len()];
        for (n8, &(_, at)) in lengths.iter_mut().zip(&counted) {
            // SAFETY: 8 bytes of the arena (checked at read) or of a caller's output standing in
            // for them; the host buffers outlive the synchronize below
            unsafe { result::memcpy_dtoh_async(n8, remap.at(arena + at), stream) }.map_err(cuda)?;
        }
        if !counted.is_empty() {
            // SAFETY: the caller's stream (contract)
            unsafe { result::stream::synchronize(stream) }.map_err(cuda)?;
        }
        for (n8, &(k, _)) in lengths.iter().zip(&counted) {
            let bound = mem.outputs[k].valid.map(|(axis, _)| mem.outputs[k].shape[axis as usize]).unwrap_or(0);
            valid[k] = Some((i64::from_le_bytes(*n8).max(0) as u64).min(bound));
        }
        self.valid = valid.clone();
        Ok(valid)
    }

    /// `len` bytes of the arena at `offset`, as the last run left them (for checks that inspect
    /// intermediate values of an artifact built with distinct buffers).
    pub fn read_arena(&self, offset: u64, len: usize) -> Result<Vec<u8>, RuntimeError> {
        let at = offset as usize;
        if at.checked_add(len).is_none_or(|end| end > self.arena.len()) {
            return Err(RuntimeError::Input {
                name: "arena".into(),
                why: format!("{len} bytes at {offset} are outside it"),
            });
        }
        let mut host = vec![0u8; len];
        self.follow(self.stream.cu_stream())?;
        if len > 0 {
            let view = self.arena.slice(at..at + len);
            self.stream.memcpy_dtoh(&view, &mut host).map_err(cuda)?;
        }
        self.stream.synchronize().map_err(cuda)?;
        Ok(host)
    }

    /// Launches every step of plan `p` on the stream (recorded into the graph while capturing),
    /// its buffers moved by `remap`.
    fn launch_steps(&self, p: usize, remap: &Remap) -> Result<(), RuntimeError> {
        // library calls do not bind the context themselves (the session may have moved threads)
        self.stream.context().bind_to_thread().map_err(cuda)?;
        (0..self.artifact.plans[p].steps.len()).try_for_each(|i| self.launch_step(p, i, remap))
    }

    /// Device addresses of a step's buffers (fixed for the session's life), moved by `remap`.
    fn pointers(&self, args: &[Arg], remap: &Remap) -> Vec<u64> {
        device_pointers(args, self.bases, remap)
    }

    /// Enqueues step `i` of plan `p`: a kernel launch or a prepared library call.
    fn launch_step(&self, p: usize, i: usize, remap: &Remap) -> Result<(), RuntimeError> {
        let step = &self.artifact.plans[p].steps[i];
        let Step::Launch { kernel, grid, block, args } = step else {
            let launched = match &self.plans[p].library[i] {
                Some(LibraryStep::Gemm(g)) => g.launch(self.blas.as_ref().unwrap(), &self.stream, remap),
                Some(LibraryStep::Conv(c)) => c.launch(self.dnn.as_ref().unwrap(), &self.stream, remap),
                None => unreachable!("every library step is prepared at load"),
            };
            return launched.map_err(|why| library_error(&self.artifact, p, i, why));
        };
        let ptrs = self.pointers(args, remap);
        let cfg = LaunchConfig {
            grid_dim: (grid[0], grid[1], grid[2]),
            block_dim: (block[0], block[1], block[2]),
            shared_mem_bytes: 0,
        };
        let mut b = self.stream.launch_builder(&self.functions[*kernel as usize]);
        for p in &ptrs {
            b.arg(p);
        }
        // SAFETY: each pointer lies inside the arena or the weights (checked when the
        // artifact was read) and the kernel takes one pointer per argument
        unsafe { b.launch(cfg) }.map_err(cuda)?;
        Ok(())
    }

    /// Median milliseconds of each step over `runs` step-by-step executions of plan `p` (no
    /// graph: each step between two CUDA events), after one untimed execution.
    pub fn time_steps(&mut self, p: usize, runs: usize) -> Result<Vec<f64>, RuntimeError> {
        self.follow(self.stream.cu_stream())?;
        self.launch_steps(p, &Remap::none())?;
        let flags = Some(sys::CUevent_flags::CU_EVENT_DEFAULT);
        let n = self.artifact.plans[p].steps.len();
        let mut ms = vec![Vec::with_capacity(runs); n];
        for _ in 0..runs {
            for (i, m) in ms.iter_mut().enumerate() {
                let t0 = self.stream.record_event(flags).map_err(cuda)?;
                self.launch_step(p, i, &Remap::none())?;
                let t1 = self.stream.record_event(flags).map_err(cuda)?;
                t1.synchronize().map_err(cuda)?;
                m.push(t0.elapsed_ms(&t1).map_err(cuda)? as f64);
            }
        }
        Ok(medians(ms))
    }

    /// The GPU's name, as the driver reports it.
    pub fn device_name(&self) -> String {
        self.stream.context().name().unwrap_or_default()
    }

    /// Median milliseconds of each step of plan `p` as it runs inside its captured graph: an
    /// event recorded as a graph node between every two steps, read after each of `runs`
    /// replays (after one untimed). Unlike `time_steps`, steps keep the graph's back-to-back
    /// launches; the events add a little time of their own.
    pub fn profile_steps(&mut self, p: usize, runs: usize) -> Result<Vec<f64>, RuntimeError> {
        let n = self.artifact.plans[p].steps.len();
        let own = self.stream.cu_stream();
        let ctx = self.stream.context().clone();
        ctx.bind_to_thread().map_err(cuda)?;
        let events = (0..=n)
            .map(|_| ctx.new_event(Some(sys::CUevent_flags::CU_EVENT_DEFAULT)))
            .collect::<Result<Vec<_>, _>>()
            .map_err(cuda)?;
        // external: a node that records in every replay, readable from the host
        let record = |e: &cudarc::driver::CudaEvent| {
            // SAFETY: the event and the stream live as long as this call
            unsafe {
                sys::cuEventRecordWithFlags(
                    e.cu_event(),
                    own,
                    sys::CUevent_record_flags::CU_EVENT_RECORD_EXTERNAL as u32,
                )
            }
            .result()
            .map_err(cuda)
        };
        self.follow(own)?;
        let graph = {
            let _setup = setup_lock();
            self.stream.begin_capture(sys::CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_THREAD_LOCAL).map_err(cuda)?;
            let launched = (0..n).try_for_each(|i| {
                record(&events[i])?;
                self.launch_step(p, i, &Remap::none())
            });
            let launched = launched.and_then(|_| record(&events[n]));
            let graph = self.stream.end_capture(sys::CUgraphInstantiate_flags(0)).map_err(cuda)?;
            launched?;
            graph
        };
        let mut ms = vec![Vec::with_capacity(runs); n];
        if let Some(g) = graph {
            g.launch().map_err(cuda)?;
            for _ in 0..runs {
                g.launch().map_err(cuda)?;
                events[n].synchronize().map_err(cuda)?;
                for (i, m) in ms.iter_mut().enumerate() {
                    m.push(events[i].elapsed_ms(&events[i + 1]).map_err(cuda)? as f64);
                }
            }
        }
        self.mark(own)?;
        Ok(medians(ms))
    }

    /// One execution of plan `p`: its captured graph (captured on first use).
    pub fn replay(&mut self, p: usize) -> Result<(), RuntimeError> {
        let own = self.stream.cu_stream();
        self.follow(own)?;
        if std::env::var_os("XFORGE_NO_GRAPH").is_some() {
            self.launch_steps(p, &Remap::none())?;
            return self.mark(own);
        }
        if self.plans[p].graph.is_none() {
            self.plans[p].graph = self.capture(p, &Remap::none())?;
        }
        // an empty plan captures no graph
        if let Some(g) = &self.plans[p].graph {
            // launches too: with cuDNN steps, concurrent sessions' captures were invalidated on
            // an H100 while loads and captures alone were under the lock (BENCH.md)
            let _setup = setup_lock();
            g.launch().map_err(cuda)?;
        }
        self.mark(own)
    }

    /// Plan `p` captured as a CUDA graph with its buffers moved by `remap` (None for a plan
    /// without steps).
    fn capture(&self, p: usize, remap: &Remap) -> Result<Option<CudaGraph>, RuntimeError> {
        let _setup = setup_lock();
        self.stream.begin_capture(sys::CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_THREAD_LOCAL).map_err(cuda)?;
        let launched = self.launch_steps(p, remap);
        let graph = self.stream.end_capture(sys::CUgraphInstantiate_flags(0)).map_err(cuda)?;
        launched?;
        Ok(graph)
    }

    /// Makes `stream` wait for the work enqueued last, when that went to another stream.
    fn follow(&self, stream: sys::CUstream) -> Result<(), RuntimeError> {
        let own = self.stream.cu_stream();
        match self.last_stream.get() {
            Some(s) if s != stream as usize => {
                self.stream.context().bind_to_thread().map_err(cuda)?;
                // the session's own stream records lazily: everything on it so far
                if s == own as usize {
                    // SAFETY: the event and the stream live as long as the session
                    unsafe { result::event::record(self.done.cu_event(), own) }.map_err(cuda)?;
                }
                // SAFETY: the event lives as long as the session; the stream is the caller's,
                // valid for this call (run_device's contract), or the session's own
                unsafe {
                    result::stream::wait_event(
                        stream,
                        self.done.cu_event(),
                        sys::CUevent_wait_flags::CU_EVENT_WAIT_DEFAULT,
                    )
                }
                .map_err(cuda)?;
                self.last_stream.set(None);
                Ok(())
            }
            _ => Ok(()),
        }
    }

    /// Records that the last work went to `stream`: a caller's stream records the event now (it
    /// may be gone by the next call), the session's own stream when another stream follows.
    fn mark(&self, stream: sys::CUstream) -> Result<(), RuntimeError> {
        if stream != self.stream.cu_stream() {
            // SAFETY: the event lives as long as the session; the caller's stream is valid for
            // this call
            unsafe { result::event::record(self.done.cu_event(), stream) }.map_err(cuda)?;
        }
        self.last_stream.set(Some(stream as usize));
        Ok(())
    }

    /// Milliseconds of `runs` replays of plan `p`, each timed with CUDA events on the stream
    /// (after `warmup` untimed ones); the inputs are whatever the arena holds.
    pub fn time(&mut self, p: usize, warmup: usize, runs: usize) -> Result<Vec<f64>, RuntimeError> {
        for _ in 0..warmup {
            self.replay(p)?;
        }
        self.stream.synchronize().map_err(cuda)?;
        let flags = Some(sys::CUevent_flags::CU_EVENT_DEFAULT);
        let mut ms = Vec::with_capacity(runs);
        for _ in 0..runs {
            let t0 = self.stream.record_event(flags).map_err(cuda)?;
            self.replay(p)?;
            let t1 = self.stream.record_event(flags).map_err(cuda)?;
            t1.synchronize().map_err(cuda)?;
            ms.push(t0.elapsed_ms(&t1).map_err(cuda)? as f64);
        }
        Ok(ms)
    }
}

// SAFETY: a session owns its stream, buffers and library handles outright and is used through
// `&mut self` (one thread at a time); cuBLASLt and cuDNN handles may move between threads as
// long as two threads never use one at once, which `&mut self` guarantees.
unsafe impl Send for Session {}

impl Drop for Session {
    /// The graph and the library handles go under the setup lock: cuDNN's handle destruction
    /// synchronizes the device, which invalidates another thread's capture (sessions that
    /// finished early were dropped while others captured; with this lock, `device_sessions.sh`
    /// passes on an H100).
    fn drop(&mut self) {
        // a panic during `load` unwinds while that thread holds the lock: taking it again would
        // hang the process instead of reporting the panic
        let _setup = (!std::thread::panicking()).then(setup_lock);
        self.plans.clear();
        self.dnn = None;
        self.blas = None;
    }
}

/// Loading a session (allocations, module loading, cuDNN timing with its one-call graph captures),
/// capturing a plan, launching it and dropping its handles take this process-wide lock. With several sessions in
/// threads, plans with cuDNN steps failed to capture (CUDA_ERROR_STREAM_CAPTURE_INVALIDATED, on
/// an H100) while only loads and captures took it (see BENCH.md).
/// The median of each list of timings (0 for an empty one).
fn medians(ms: Vec<Vec<f64>>) -> Vec<f64> {
    ms.into_iter()
        .map(|mut v| {
            v.sort_by(|a, b| a.total_cmp(b));
            v.get(v.len() / 2).copied().unwrap_or(0.0)
        })
        .collect()
}

/// The batch of inputs of these byte lengths (in `artifact`'s input order): `Session::batch_of`.
pub(crate) fn batch_of_lengths(artifact: &Artifact, inputs: &[u64]) -> Result<u64, RuntimeError> {
    let first = &artifact.plans[0].memory;
    if inputs.len() != first.inputs.len() {
        return Err(RuntimeError::Input {
            name: "*".into(),
            why: format!("{} inputs given, the model takes {}", inputs.len(), first.inputs.len()),
        });
    }
    if artifact.header.batch.is_none() {
        return Ok(0);
    }
    let mut batch: Option<(u64, &str)> = None;
    for (b, &len) in first.inputs.iter().zip(inputs) {
        let Some((outer, row)) = b.rows(first.batch) else { continue };
        let per_item = outer * row;
        if per_item == 0 || !len.is_multiple_of(per_item) {
            return Err(RuntimeError::Input {
                name: b.name.clone(),
                why: format!("{len} bytes given, a multiple of {per_item} (one batch item) expected"),
            });
        }
        let n = len / per_item;
        match batch {
            Some((m, other)) if m != n => {
                return Err(RuntimeError::Input {
                    name: b.name.clone(),
                    why: format!("batch {n}, but input '{other}' has batch {m}"),
                })
            }
            _ => batch = Some((n, &b.name)),
        }
    }
    batch.map(|(n, _)| n).ok_or_else(|| RuntimeError::Batch("no input has the batch dim".into()))
}

/// Device addresses of a step's buffers: offsets into the arena (moved by `remap`) and into the
/// weights, from their bases.
pub(crate) fn device_pointers(args: &[Arg], (arena_base, weight_base): (u64, u64), remap: &Remap) -> Vec<u64> {
    args.iter()
        .map(|a| match a {
            Arg::Arena(o) => remap.at(arena_base + o),
            Arg::Weight(o) => weight_base + o,
        })
        .collect()
}

/// Batch `n`'s inputs (in `mem`'s input order) checked against their bindings: per input, the
/// bytes to copy to its arena offset (padded by zero rows to the plan's batch).
pub(crate) fn staged_inputs<'a>(
    mem: &MemoryPlan,
    n: u64,
    inputs: &[&'a [u8]],
) -> Result<Vec<Cow<'a, [u8]>>, RuntimeError> {
    if inputs.len() != mem.inputs.len() {
        return Err(RuntimeError::Input {
            name: "*".into(),
            why: format!("{} inputs given, the model takes {}", inputs.len(), mem.inputs.len()),
        });
    }
    mem.inputs
        .iter()
        .zip(inputs)
        .map(|(b, &bytes)| {
            let want = b.bytes_at(mem.batch, n).ok_or_else(|| RuntimeError::Input {
                name: b.name.clone(),
                why: format!("dtype {} is not known", b.dtype),
            })?;
            if bytes.len() as u64 != want {
                return Err(RuntimeError::Input {
                    name: b.name.clone(),
                    why: format!("{} bytes given, {want} expected", bytes.len()),
                });
            }
            Ok(match b.rows(mem.batch).filter(|_| mem.batch != n) {
                None => Cow::Borrowed(bytes),
                Some((outer, row)) => Cow::Owned(spread_rows(bytes, outer, row * n, row * mem.batch)),
            })
        })
        .collect()
}

/// The outputs as read from the arena (each its binding's bytes, in `mem`'s output order, with
/// the 8 bytes of its valid length for an output whose length depends on the data) cut to batch
/// `n`'s rows and to their valid lengths; and per output its valid length (None for a fixed shape).
pub(crate) fn finish_outputs(
    mem: &MemoryPlan,
    n: u64,
    outs: Vec<Vec<u8>>,
    lengths: Vec<[u8; 8]>,
) -> (Vec<Vec<u8>>, Vec<Option<u64>>) {
    let mut valid = vec![];
    let outs = outs
        .into_iter()
        .zip(&mem.outputs)
        .zip(lengths)
        .map(|((host, b), n8)| {
            let host = first_rows(host, b, mem.batch, n);
            match b.valid {
                Some((axis, _)) => {
                    let (h, len) = valid_prefix(host, b, axis as usize, i64::from_le_bytes(n8));
                    valid.push(Some(len));
                    h
                }
                None => {
                    valid.push(None);
                    host
                }
            }
        })
        .collect();
    (outs, valid)
}

/// Batch `n`'s outputs of plan `mem` with their shapes (an output whose length depends on the
/// data at its valid length).
pub(crate) fn with_shapes(mem: &MemoryPlan, n: u64, outs: Vec<Vec<u8>>) -> ShapedOutputs {
    outs.into_iter()
        .zip(&mem.outputs)
        .map(|(bytes, b)| {
            let mut shape = b.shape_at(mem.batch, n);
            if let Some((axis, _)) = b.valid {
                // the valid length: the bytes over the other dims and the element size
                let per: u64 = shape.iter().enumerate().filter(|&(d, _)| d != axis as usize).map(|(_, &s)| s).product();
                let size = binding_bytes(b).unwrap_or(0) / b.shape.iter().product::<u64>().max(1);
                shape[axis as usize] = (bytes.len() as u64).checked_div(size * per).unwrap_or(0);
            }
            (bytes, shape)
        })
        .collect()
}

fn setup_lock() -> std::sync::MutexGuard<'static, ()> {
    static SETUP: std::sync::Mutex<()> = std::sync::Mutex::new(());
    SETUP.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// `n` rows of `row` bytes in each of `outer` blocks, laid out with `stride` bytes per block
/// (the rest zero): a batch padded to its bucket.
fn spread_rows(bytes: &[u8], outer: u64, row: u64, stride: u64) -> Vec<u8> {
    let (row, stride) = (row as usize, stride as usize);
    let mut out = vec![0u8; outer as usize * stride];
    for o in 0..outer as usize {
        out[o * stride..o * stride + row].copy_from_slice(&bytes[o * row..(o + 1) * row]);
    }
    out
}

/// Output `b` of a plan of batch `plan_batch`, cut to its first `n` batch rows.
/// The first `len` entries along `axis` of an output padded to its bound (the length clamped to
/// the bound; a negative one is 0), and that length.
fn valid_prefix(host: Vec<u8>, b: &Binding, axis: usize, len: i64) -> (Vec<u8>, u64) {
    let bound = b.shape.get(axis).copied().unwrap_or(0);
    let len = (len.max(0) as u64).min(bound);
    let outer: u64 = b.shape[..axis].iter().product();
    let total: u64 = b.shape.iter().product();
    let size = (host.len() as u64).checked_div(total).unwrap_or(0);
    let inner: u64 = b.shape[axis + 1..].iter().product::<u64>() * size;
    let (keep, stride) = ((len * inner) as usize, (bound * inner) as usize);
    let out = (0..outer as usize).flat_map(|o| host[o * stride..o * stride + keep].iter().copied()).collect();
    (out, len)
}

fn first_rows(host: Vec<u8>, b: &Binding, plan_batch: u64, n: u64) -> Vec<u8> {
    match b.rows(plan_batch) {
        Some((outer, row)) if plan_batch != n => {
            let (keep, stride) = ((row * n) as usize, (row * plan_batch) as usize);
            (0..outer as usize).flat_map(|o| host[o * stride..o * stride + keep].iter().copied()).collect()
        }
        _ => host,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_move_between_threads() {
        fn send<T: Send>() {}
        send::<Session>();
    }

    #[test]
    fn padding_spreads_rows_and_cutting_takes_them_back() {
        // [2 outer, batch axis, 3 bytes]: 2 rows given, a bucket of 4
        let given: Vec<u8> = (1..=12).collect();
        let padded = spread_rows(&given, 2, 6, 12);
        assert_eq!(padded, [1, 2, 3, 4, 5, 6, 0, 0, 0, 0, 0, 0, 7, 8, 9, 10, 11, 12, 0, 0, 0, 0, 0, 0]);
        let b = Binding {
            name: "y".into(),
            dtype: "u8".into(),
            shape: vec![2, 4, 3],
            offset: 0,
            batch_axis: Some(1),
            valid: None,
        };
        assert_eq!(b.rows(4), Some((2, 3)));
        assert_eq!(first_rows(padded, &b, 4, 2), given);
        assert_eq!(b.shape_at(4, 2), [2, 2, 3]);
    }

    #[test]
    fn a_padded_output_is_cut_to_its_valid_length() {
        // NonZero's [rank 2, bound 4] i64 result with 3 valid columns
        let b = Binding {
            name: "nz".into(),
            dtype: "i64".into(),
            shape: vec![2, 4],
            offset: 0,
            batch_axis: None,
            valid: Some((1, 64)),
        };
        let host: Vec<u8> = [1i64, 2, 3, 0, 4, 5, 6, 0].iter().flat_map(|v| v.to_le_bytes()).collect();
        let (cut, n) = valid_prefix(host.clone(), &b, 1, 3);
        let want: Vec<u8> = [1i64, 2, 3, 4, 5, 6].iter().flat_map(|v| v.to_le_bytes()).collect();
        assert_eq!((cut, n), (want, 3));
        // a length past the bound is clamped to it, a negative one is empty
        assert_eq!(valid_prefix(host.clone(), &b, 1, 9).0, host);
        assert!(valid_prefix(host, &b, 1, -2).0.is_empty());
    }
}
