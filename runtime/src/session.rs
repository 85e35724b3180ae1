//! A loaded artifact on one GPU: the kernels loaded once, the weights uploaded once, one arena;
//! `run` copies the inputs in, replays the plan (captured once as a CUDA graph on the session's
//! own stream) and copies the outputs out. GEMM steps run through cuBLASLt and convolutions
//! through cuDNN, their descriptors and algorithms chosen once at load.
use crate::artifact::{Artifact, ArtifactError};
use crate::conv::{ConvStep, Dnn, Epilogue};
use crate::gemm::{Blas, GemmStep};
use crate::library::LibraryDesc;
use crate::plan::{binding_bytes, Arg, Step};
use cudarc::driver::{
    sys, CudaContext, CudaFunction, CudaGraph, CudaSlice, CudaStream, DevicePtr, LaunchConfig, PushKernelArg,
};
use cudarc::nvrtc::Ptx;
use std::path::Path;
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error(transparent)]
    Artifact(#[from] ArtifactError),
    #[error("CUDA: {0}")]
    Cuda(String),
    #[error("step {step} ({kind} call of group {group}): {why}")]
    Library { step: usize, kind: String, group: u32, why: String },
    #[error("input '{name}': {why}")]
    Input { name: String, why: String },
}

fn cuda(e: impl std::fmt::Display) -> RuntimeError {
    RuntimeError::Cuda(e.to_string())
}

/// The error of library step `i` (a `Step::Library`), naming its kind and group.
fn library_error(steps: &[Step], i: usize, why: String) -> RuntimeError {
    let Step::Library(c) = &steps[i] else { unreachable!("step {i} is a library call") };
    RuntimeError::Library { step: i, kind: c.kind.clone(), group: c.group, why }
}

/// A library step, ready to enqueue.
enum LibraryStep {
    Gemm(GemmStep),
    Conv(ConvStep),
}

pub struct Session {
    pub artifact: Artifact,
    /// Per step: its library call, prepared (None for kernel launches). Dropped before the
    /// handles below.
    library: Vec<Option<LibraryStep>>,
    blas: Option<Blas>,
    dnn: Option<Dnn>,
    stream: Arc<CudaStream>,
    functions: Vec<CudaFunction>,
    arena: CudaSlice<u8>,
    /// Owned for the session's life: the kernels read it through `bases`.
    _weights: CudaSlice<u8>,
    /// Device addresses of the arena and the weights (fixed for the session's life).
    bases: (u64, u64),
    /// The plan as a CUDA graph, captured on the first run.
    graph: Option<CudaGraph>,
}

impl Session {
    /// Loads an artifact onto GPU `device`: checks the file and the target first.
    pub fn load(path: &Path, device: usize) -> Result<Session, RuntimeError> {
        let artifact = Artifact::read(path)?;
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
        let arena = stream.alloc_zeros::<u8>(artifact.memory.arena_bytes.max(1) as usize).map_err(cuda)?;
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
        let mut session = Session {
            artifact,
            library: vec![],
            blas: None,
            dnn: None,
            stream,
            functions,
            arena,
            _weights: weights,
            bases,
            graph: None,
        };
        let prepared = session.prepare_library_steps();
        // a session that failed here drops (and takes the lock in `drop`) after the guard
        drop(setup);
        prepared?;
        Ok(session)
    }

    /// Descriptors, algorithms and handles for the library steps (cuBLASLt and cuDNN are opened
    /// only when the plan has such steps).
    fn prepare_library_steps(&mut self) -> Result<(), RuntimeError> {
        let a = &self.artifact;
        let mut descs = vec![];
        for (i, s) in a.steps.iter().enumerate() {
            if let Step::Library(c) = s {
                let d = LibraryDesc::of_call(c, a.memory.arena_bytes, a.weights.len() as u64)
                    .map_err(|why| library_error(&a.steps, i, why))?;
                descs.push((i, d));
            }
        }
        let err = |i: usize, why: String| library_error(&self.artifact.steps, i, why);
        if let Some((i, _)) = descs.iter().find(|(_, d)| matches!(d, LibraryDesc::Gemm(_))) {
            self.blas = Some(Blas::new(&self.stream).map_err(|e| err(*i, e))?);
        }
        let max_channels = descs
            .iter()
            .filter_map(|(_, d)| if let LibraryDesc::Conv(c) = d { Some(c.out_channels) } else { None })
            .max();
        if let (Some(m), Some((i, _))) = (max_channels, descs.iter().find(|(_, d)| matches!(d, LibraryDesc::Conv(_)))) {
            self.dnn = Some(Dnn::new(&self.stream, m).map_err(|e| err(*i, e))?);
        }
        let mut library: Vec<Option<LibraryStep>> = (0..self.artifact.steps.len()).map(|_| None).collect();
        for (i, d) in descs {
            let Step::Library(c) = &self.artifact.steps[i] else { unreachable!() };
            let ptrs = self.pointers(&c.args);
            let prepared = match &d {
                LibraryDesc::Gemm(g) => GemmStep::new(self.blas.as_ref().unwrap(), g, &ptrs).map(LibraryStep::Gemm),
                LibraryDesc::Conv(cv) => Epilogue::of_call(c, cv, &self.functions, &ptrs).and_then(|e| {
                    ConvStep::new(self.dnn.as_ref().unwrap(), &self.stream, cv, &ptrs, e).map(LibraryStep::Conv)
                }),
            };
            library[i] = Some(prepared.map_err(|e| err(i, e))?);
        }
        self.stream.synchronize().map_err(cuda)?;
        self.library = library;
        Ok(())
    }

    /// Runs the plan on raw little-endian input bytes (in the artifact's input order); returns
    /// the outputs' bytes in output order.
    pub fn run(&mut self, inputs: &[&[u8]]) -> Result<Vec<Vec<u8>>, RuntimeError> {
        let mem = &self.artifact.memory;
        if inputs.len() != mem.inputs.len() {
            return Err(RuntimeError::Input {
                name: "*".into(),
                why: format!("{} inputs given, the model takes {}", inputs.len(), mem.inputs.len()),
            });
        }
        for (b, bytes) in mem.inputs.iter().zip(inputs) {
            let want = binding_bytes(b).ok_or_else(|| RuntimeError::Input {
                name: b.name.clone(),
                why: format!("dtype {} is not known", b.dtype),
            })?;
            if bytes.len() as u64 != want {
                return Err(RuntimeError::Input {
                    name: b.name.clone(),
                    why: format!("{} bytes given, {want} expected", bytes.len()),
                });
            }
            let at = b.offset as usize;
            let mut view = self.arena.slice_mut(at..at + bytes.len());
            self.stream.memcpy_htod(*bytes, &mut view).map_err(cuda)?;
        }
        self.replay()?;
        let mut outs = vec![];
        for b in &self.artifact.memory.outputs {
            let n = binding_bytes(b).unwrap_or(0) as usize;
            let mut host = vec![0u8; n];
            let at = b.offset as usize;
            let view = self.arena.slice(at..at + n);
            self.stream.memcpy_dtoh(&view, &mut host).map_err(cuda)?;
            outs.push(host);
        }
        self.stream.synchronize().map_err(cuda)?;
        Ok(outs)
    }

    /// Launches every step on the stream (recorded into the graph while capturing).
    fn launch_steps(&self) -> Result<(), RuntimeError> {
        // library calls do not bind the context themselves (the session may have moved threads)
        self.stream.context().bind_to_thread().map_err(cuda)?;
        (0..self.artifact.steps.len()).try_for_each(|i| self.launch_step(i))
    }

    /// Device addresses of a step's buffers (fixed for the session's life).
    fn pointers(&self, args: &[Arg]) -> Vec<u64> {
        let (arena_base, weight_base) = self.bases;
        args.iter()
            .map(|a| match a {
                Arg::Arena(o) => arena_base + o,
                Arg::Weight(o) => weight_base + o,
            })
            .collect()
    }

    /// Enqueues step `i`: a kernel launch or a prepared library call.
    fn launch_step(&self, i: usize) -> Result<(), RuntimeError> {
        let step = &self.artifact.steps[i];
        let Step::Launch { kernel, grid, block, args } = step else {
            let launched = match &self.library[i] {
                Some(LibraryStep::Gemm(g)) => g.launch(self.blas.as_ref().unwrap(), &self.stream),
                Some(LibraryStep::Conv(c)) => c.launch(self.dnn.as_ref().unwrap(), &self.stream),
                None => unreachable!("every library step is prepared at load"),
            };
            return launched.map_err(|why| library_error(&self.artifact.steps, i, why));
        };
        let ptrs = self.pointers(args);
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

    /// Median milliseconds of each step over `runs` step-by-step executions of the plan (no
    /// graph: each step between two CUDA events), after one untimed execution.
    pub fn time_steps(&mut self, runs: usize) -> Result<Vec<f64>, RuntimeError> {
        self.launch_steps()?;
        let flags = Some(sys::CUevent_flags::CU_EVENT_DEFAULT);
        let n = self.artifact.steps.len();
        let mut ms = vec![Vec::with_capacity(runs); n];
        for _ in 0..runs {
            for (i, m) in ms.iter_mut().enumerate() {
                let t0 = self.stream.record_event(flags).map_err(cuda)?;
                self.launch_step(i)?;
                let t1 = self.stream.record_event(flags).map_err(cuda)?;
                t1.synchronize().map_err(cuda)?;
                m.push(t0.elapsed_ms(&t1).map_err(cuda)? as f64);
            }
        }
        Ok(ms
            .into_iter()
            .map(|mut v| {
                v.sort_by(|a, b| a.total_cmp(b));
                v[v.len() / 2]
            })
            .collect())
    }

    /// One execution of the plan: the captured graph (captured on first use).
    pub fn replay(&mut self) -> Result<(), RuntimeError> {
        if std::env::var_os("XFORGE_NO_GRAPH").is_some() {
            return self.launch_steps();
        }
        if self.graph.is_none() {
            let _setup = setup_lock();
            self.stream.begin_capture(sys::CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_THREAD_LOCAL).map_err(cuda)?;
            let launched = self.launch_steps();
            let graph = self.stream.end_capture(sys::CUgraphInstantiate_flags(0)).map_err(cuda)?;
            launched?;
            self.graph = graph;
        }
        match &self.graph {
            // launches too: with cuDNN steps, concurrent sessions' captures were invalidated on
            // an H100 while loads and captures alone were under the lock (BENCH.md)
            Some(g) => {
                let _setup = setup_lock();
                g.launch().map_err(cuda)
            }
            // an empty plan captures no graph
            None => Ok(()),
        }
    }

    /// Milliseconds of `runs` replays, each timed with CUDA events on the stream (after
    /// `warmup` untimed ones); the inputs are whatever the arena holds.
    pub fn time(&mut self, warmup: usize, runs: usize) -> Result<Vec<f64>, RuntimeError> {
        for _ in 0..warmup {
            self.replay()?;
        }
        self.stream.synchronize().map_err(cuda)?;
        let flags = Some(sys::CUevent_flags::CU_EVENT_DEFAULT);
        let mut ms = Vec::with_capacity(runs);
        for _ in 0..runs {
            let t0 = self.stream.record_event(flags).map_err(cuda)?;
            self.replay()?;
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
        let _setup = setup_lock();
        self.graph = None;
        self.library.clear();
        self.dnn = None;
        self.blas = None;
    }
}

/// Loading a session (allocations, module loading, cuDNN timing with its one-call graph captures),
/// capturing a plan, launching it and dropping its handles take this process-wide lock. With several sessions in
/// threads, plans with cuDNN steps failed to capture (CUDA_ERROR_STREAM_CAPTURE_INVALIDATED, on
/// an H100) while only loads and captures took it (see BENCH.md).
fn setup_lock() -> std::sync::MutexGuard<'static, ()> {
    static SETUP: std::sync::Mutex<()> = std::sync::Mutex::new(());
    SETUP.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    #[test]
    fn sessions_move_between_threads() {
        fn send<T: Send>() {}
        send::<super::Session>();
    }
}
