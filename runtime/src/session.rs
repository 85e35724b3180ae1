//! A loaded artifact on one GPU: the kernels loaded once, the weights uploaded once, one arena;
//! `run` copies the inputs in, executes the plan's steps on the session's stream and copies the
//! outputs out. Vendor-library steps (cuBLASLt, cuDNN) are not executed yet: an artifact that
//! has them is refused at load, before anything runs.
use crate::artifact::{Artifact, ArtifactError};
use crate::plan::{binding_bytes, Arg, Step};
use cudarc::driver::{CudaContext, CudaFunction, CudaSlice, CudaStream, DevicePtr, LaunchConfig, PushKernelArg};
use cudarc::nvrtc::Ptx;
use std::path::Path;
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error(transparent)]
    Artifact(#[from] ArtifactError),
    #[error("CUDA: {0}")]
    Cuda(String),
    #[error("{0} of the plan's steps are vendor-library calls, which this runtime does not execute yet (compile with --generated-gemm for GEMMs)")]
    LibraryCalls(usize),
    #[error("input '{name}': {why}")]
    Input { name: String, why: String },
}

fn cuda(e: impl std::fmt::Display) -> RuntimeError {
    RuntimeError::Cuda(e.to_string())
}

pub struct Session {
    pub artifact: Artifact,
    stream: Arc<CudaStream>,
    functions: Vec<CudaFunction>,
    arena: CudaSlice<u8>,
    weights: CudaSlice<u8>,
}

impl Session {
    /// Loads an artifact onto GPU `device`: checks the file and the target first.
    pub fn load(path: &Path, device: usize) -> Result<Session, RuntimeError> {
        let artifact = Artifact::read(path)?;
        let library = artifact.steps.iter().filter(|s| matches!(s, Step::Library(_))).count();
        if library > 0 {
            return Err(RuntimeError::LibraryCalls(library));
        }
        // SAFETY: only probes whether the driver library can be opened
        if !unsafe { cudarc::driver::sys::is_culib_present() } {
            return Err(RuntimeError::Cuda("no CUDA driver (libcuda.so) on this machine".into()));
        }
        let ctx = CudaContext::new(device).map_err(cuda)?;
        let (major, minor) = ctx.compute_capability().map_err(cuda)?;
        artifact.header.runs_on(major as u32, minor as u32)?;
        let stream = ctx.default_stream();
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
        Ok(Session { artifact, stream, functions, arena, weights })
    }

    /// Runs the plan on raw little-endian input bytes (in the artifact's input order); returns
    /// the outputs' bytes in output order.
    pub fn run(&mut self, inputs: &[Vec<u8>]) -> Result<Vec<Vec<u8>>, RuntimeError> {
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
            self.stream.memcpy_htod(bytes, &mut view).map_err(cuda)?;
        }
        let (arena_base, weight_base) = {
            let (a, _ga) = self.arena.device_ptr(&self.stream);
            let (w, _gw) = self.weights.device_ptr(&self.stream);
            (a, w)
        };
        for step in &self.artifact.steps {
            let Step::Launch { kernel, grid, block, args } = step else { unreachable!("refused at load") };
            let ptrs: Vec<u64> = args
                .iter()
                .map(|a| match a {
                    Arg::Arena(o) => arena_base + o,
                    Arg::Weight(o) => weight_base + o,
                })
                .collect();
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
        }
        let mut outs = vec![];
        for b in &mem.outputs {
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
}
