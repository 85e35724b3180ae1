//! AMD GPUs (feature `hip`): an artifact compiled for a `gfx` chip (`gfx90a`, `gfx942`,
//! `gfx1100`; its kernels are one AMDGPU code object) on one GPU through the HIP runtime. The
//! bindings are hip-runtime-sys's pre-generated HIP 5.4 ones, linked against Debian's
//! libamdhip64 5.2: only calls that 5.2 has are made (no `hipLaunchHostFunc`, no `*_spt`).
//!
//! `HipSession` mirrors `Session`: the code object is loaded and the weights uploaded once, one
//! arena is as large as the largest bucket's; `run` picks the plan for the inputs' batch, copies
//! the inputs in (padded to the bucket's batch), launches the plan's kernels on the session's
//! stream and copies the outputs' rows out. Unlike `Session` it captures no graph (the steps are
//! launched one by one on every run) and has no library steps: artifacts for AMD use generated
//! kernels only, and a cuBLASLt/cuDNN step is refused at load by name.
//!
//! A load checks, in this order, the artifact's target (a `gfx` chip; an NVIDIA artifact is
//! refused by name), its steps (no library calls), then the device: no AMD GPU is a
//! `RuntimeError::Hip` saying "no AMD GPU", never a panic; a GPU of another chip than the
//! artifact's is refused by name.
use crate::artifact::Artifact;
use crate::plan::{binding_bytes, Step};
use crate::remap::Remap;
use crate::session::{
    batch_of_lengths, device_pointers, finish_outputs, library_error, staged_inputs, with_shapes, RuntimeError,
    ShapedOutputs,
};
use hip_runtime_sys as hip;
use hip_runtime_sys::hipError_t;
use std::ffi::{c_int, c_void, CStr, CString};
use std::path::Path;
use std::ptr::null_mut;

/// `hipModuleLaunchKernel`'s `extra` markers (`HIP_LAUNCH_PARAM_*` in hip_runtime_api.h, macros
/// the bindings do not carry): the kernel's arguments as one packed buffer.
const LAUNCH_PARAM_BUFFER_POINTER: usize = 0x01;
const LAUNCH_PARAM_BUFFER_SIZE: usize = 0x02;
const LAUNCH_PARAM_END: usize = 0x03;

/// HIP's name and description of an error code.
fn describe(e: hipError_t) -> String {
    // SAFETY: hipGetErrorString returns a static NUL-terminated string, or null
    let text = unsafe { hip::hipGetErrorString(e) };
    let name = format!("{e:?}");
    if text.is_null() {
        return name;
    }
    // SAFETY: non-null, NUL-terminated and static (above)
    let text = unsafe { CStr::from_ptr(text) }.to_string_lossy();
    // HIP 5.2 describes an error by its name
    if text == name {
        name
    } else {
        format!("{name}: {text}")
    }
}

/// `Ok` for `hipSuccess`, else an error naming the call.
fn check(call: &str, e: hipError_t) -> Result<(), RuntimeError> {
    if e == hipError_t::hipSuccess {
        Ok(())
    } else {
        Err(RuntimeError::Hip(format!("{call}: {}", describe(e))))
    }
}

/// The number of AMD GPUs HIP sees; none (or a HIP runtime that cannot start) is the error
/// "no AMD GPU (HIP reports no device…)".
pub fn device_count() -> Result<usize, RuntimeError> {
    let mut n: c_int = 0;
    // SAFETY: writes one int
    let e = unsafe { hip::hipGetDeviceCount(&mut n) };
    match e {
        hipError_t::hipSuccess if n > 0 => Ok(n as usize),
        hipError_t::hipSuccess => Err(RuntimeError::Hip("no AMD GPU (HIP reports no device)".into())),
        e => Err(RuntimeError::Hip(format!("no AMD GPU (HIP reports no device: {})", describe(e)))),
    }
}

/// GPU `device`'s properties, after checking that HIP sees it.
fn properties(device: usize) -> Result<hip::hipDeviceProp_t, RuntimeError> {
    let count = device_count()?;
    if device >= count {
        return Err(RuntimeError::Hip(format!("no AMD GPU {device}: HIP sees {count}")));
    }
    // the 5.4 layout of the bindings is 5.2's (Debian's header) field for field
    let mut p = hip::hipDeviceProp_t::default();
    // SAFETY: writes one hipDeviceProp_t
    check("hipGetDeviceProperties", unsafe { hip::hipGetDeviceProperties(&mut p, device as c_int) })?;
    Ok(p)
}

/// A C string field of the properties.
fn text(field: &[std::ffi::c_char]) -> String {
    let bytes: Vec<u8> = field.iter().take_while(|&&c| c != 0).map(|&c| c as u8).collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

/// The chip of a device's `gcnArchName` (`gfx90a` of `gfx90a:sramecc+:xnack-`).
fn chip(p: &hip::hipDeviceProp_t) -> String {
    text(&p.gcnArchName).split(':').next().unwrap_or_default().to_string()
}

/// The compilation target of AMD GPU `device` (`gfx942` for an MI300): what to pass to
/// `xforge compile --target`. An error ("no AMD GPU …") without one.
pub fn device_target(device: usize) -> Result<String, RuntimeError> {
    Ok(chip(&properties(device)?))
}

/// The name of AMD GPU `device`, as HIP reports it.
pub fn device_name(device: usize) -> Result<String, RuntimeError> {
    Ok(text(&properties(device)?.name))
}

/// The checks of an artifact that need no GPU: a `gfx` target and no library steps.
fn check_artifact(a: &Artifact) -> Result<(), RuntimeError> {
    let target = &a.header.target;
    if !target.starts_with("gfx") {
        let vendor = if target.starts_with("sm_") { " (NVIDIA)" } else { "" };
        return Err(RuntimeError::Backend(format!(
            "the artifact targets {target}{vendor}; a HIP session runs gfx targets (load it with a CUDA `Session`)"
        )));
    }
    for (p, plan) in a.plans.iter().enumerate() {
        if let Some(i) = plan.steps.iter().position(|s| matches!(s, Step::Library(_))) {
            let why = format!(
                "cuBLASLt/cuDNN calls do not run on AMD GPUs; an artifact for {target} uses generated kernels only"
            );
            return Err(library_error(a, p, i, why));
        }
    }
    Ok(())
}

/// A loaded artifact on one AMD GPU (see the module's documentation).
pub struct HipSession {
    pub artifact: Artifact,
    /// The HIP device (HIP's current device is per thread: set before every call that uses it).
    device: c_int,
    /// The GPU's name.
    name: String,
    stream: hip::hipStream_t,
    /// Null for an artifact without kernels.
    module: hip::hipModule_t,
    functions: Vec<hip::hipFunction_t>,
    arena: *mut c_void,
    arena_bytes: usize,
    weights: *mut c_void,
    /// Per output, its valid length after the last run (outputs whose length depends on the data).
    valid: Vec<Option<u64>>,
}

// SAFETY: a session owns its stream, module and buffers outright and is used through `&mut self`
// (one thread at a time); every call sets the session's device on the calling thread first.
unsafe impl Send for HipSession {}

impl HipSession {
    /// Loads an artifact onto AMD GPU `device`: checks the file, the target and the device first.
    pub fn load(path: &Path, device: usize) -> Result<HipSession, RuntimeError> {
        HipSession::from_artifact(Artifact::read(path)?, device)
    }

    /// Loads an artifact already in memory onto AMD GPU `device`: the target (a `gfx` chip) and
    /// the steps (kernel launches only) first, then the device (present, and of the artifact's
    /// chip), then the code object, the arena and the weights.
    pub fn from_artifact(artifact: Artifact, device: usize) -> Result<HipSession, RuntimeError> {
        check_artifact(&artifact)?;
        let props = properties(device)?;
        let (have, name) = (chip(&props), text(&props.name));
        let target = &artifact.header.target;
        if have != *target {
            return Err(RuntimeError::Backend(format!(
                "the artifact targets {target}; AMD GPU {device} ({name}) is {have}: compile it with --target {have}"
            )));
        }
        let arena_bytes = artifact.plans.iter().map(|p| p.memory.arena_bytes).max().unwrap_or(0).max(1) as usize;
        // what is set up so far is released by `drop` when a later step fails
        let mut s = HipSession {
            artifact,
            device: device as c_int,
            name,
            stream: null_mut(),
            module: null_mut(),
            functions: vec![],
            arena: null_mut(),
            arena_bytes,
            weights: null_mut(),
            valid: vec![],
        };
        s.bind()?;
        // SAFETY: each call writes one handle or pointer into the session, which frees it
        unsafe {
            check("hipStreamCreate", hip::hipStreamCreate(&mut s.stream))?;
            check("hipMalloc (the arena)", hip::hipMalloc(&mut s.arena, arena_bytes))?;
            check("hipMemset (the arena)", hip::hipMemset(s.arena, 0, arena_bytes))?;
            let weights = &s.artifact.weights;
            check("hipMalloc (the weights)", hip::hipMalloc(&mut s.weights, weights.len().max(1)))?;
            if !weights.is_empty() {
                let kind = hip::hipMemcpyKind::hipMemcpyHostToDevice;
                check(
                    "hipMemcpy (the weights)",
                    hip::hipMemcpy(s.weights, weights.as_ptr().cast(), weights.len(), kind),
                )?;
            }
        }
        if !s.artifact.kernels.names.is_empty() {
            let image = &s.artifact.kernels.code_object;
            if image.is_empty() {
                return Err(RuntimeError::Hip(format!(
                    "the artifact's kernels ({}) have no code object",
                    s.artifact.kernels.names.join(", ")
                )));
            }
            // SAFETY: the image is a whole ELF code object in host memory (checked when read)
            check("hipModuleLoadData", unsafe { hip::hipModuleLoadData(&mut s.module, image.as_ptr().cast()) })?;
            for n in &s.artifact.kernels.names {
                let c = CString::new(n.as_str()).map_err(|_| RuntimeError::Hip(format!("kernel name {n:?}")))?;
                let mut f: hip::hipFunction_t = null_mut();
                // SAFETY: a live module and a NUL-terminated name
                check(&format!("hipModuleGetFunction ({n})"), unsafe {
                    hip::hipModuleGetFunction(&mut f, s.module, c.as_ptr())
                })?;
                s.functions.push(f);
            }
        }
        s.synchronize()?;
        Ok(s)
    }

    /// Makes the session's GPU the calling thread's HIP device.
    fn bind(&self) -> Result<(), RuntimeError> {
        // SAFETY: a device index HIP reported at load
        check("hipSetDevice", unsafe { hip::hipSetDevice(self.device) })
    }

    fn synchronize(&self) -> Result<(), RuntimeError> {
        // SAFETY: the session's stream
        check("hipStreamSynchronize", unsafe { hip::hipStreamSynchronize(self.stream) })
    }

    /// The arena's byte range `at..at + len`, checked (an artifact built in memory was not read).
    fn arena_at(&self, at: u64, len: usize) -> Result<*mut c_void, RuntimeError> {
        let at = at as usize;
        if at.checked_add(len).is_none_or(|end| end > self.arena_bytes) {
            return Err(RuntimeError::Input {
                name: "arena".into(),
                why: format!("{len} bytes at {at} are outside it ({} bytes)", self.arena_bytes),
            });
        }
        // SAFETY: inside the arena's allocation (checked above)
        Ok(unsafe { self.arena.cast::<u8>().add(at) }.cast())
    }

    /// Device addresses of the arena and the weights.
    fn bases(&self) -> (u64, u64) {
        (self.arena as u64, self.weights as u64)
    }

    /// The GPU's name, as HIP reports it.
    pub fn device_name(&self) -> String {
        self.name.clone()
    }

    /// The batch of a set of inputs (raw little-endian bytes in the artifact's input order), as
    /// `Session::batch_of`.
    pub fn batch_of(&self, inputs: &[&[u8]]) -> Result<u64, RuntimeError> {
        let lengths: Vec<u64> = inputs.iter().map(|b| b.len() as u64).collect();
        batch_of_lengths(&self.artifact, &lengths)
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
        // the host bytes live until the stream is synchronized below
        let staged = staged_inputs(mem, n, inputs)?;
        self.bind()?;
        let h2d = hip::hipMemcpyKind::hipMemcpyHostToDevice;
        for (b, host) in mem.inputs.iter().zip(&staged) {
            let dst = self.arena_at(b.offset, host.len())?;
            // SAFETY: `host.len()` bytes of the arena (checked) from a live host buffer
            check(&format!("hipMemcpyAsync (input '{}')", b.name), unsafe {
                hip::hipMemcpyAsync(dst, host.as_ptr().cast(), host.len(), h2d, self.stream)
            })?;
        }
        self.launch_steps(p)?;
        let d2h = hip::hipMemcpyKind::hipMemcpyDeviceToHost;
        let mut outs = vec![];
        let mut lengths = vec![[0u8; 8]; mem.outputs.len()];
        for (b, n8) in mem.outputs.iter().zip(lengths.iter_mut()) {
            let mut host = vec![0u8; binding_bytes(b).unwrap_or(0) as usize];
            let src = self.arena_at(b.offset, host.len())?;
            // SAFETY: the arena's bytes (checked) into a host buffer that outlives the
            // synchronize below
            check(&format!("hipMemcpyAsync (output '{}')", b.name), unsafe {
                hip::hipMemcpyAsync(host.as_mut_ptr().cast(), src, host.len(), d2h, self.stream)
            })?;
            if let Some((_, at)) = b.valid {
                let src = self.arena_at(at, 8)?;
                // SAFETY: as above
                check(&format!("hipMemcpyAsync (output '{}''s length)", b.name), unsafe {
                    hip::hipMemcpyAsync(n8.as_mut_ptr().cast(), src, 8, d2h, self.stream)
                })?;
            }
            outs.push(host);
        }
        self.synchronize()?;
        drop(staged);
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

    /// `len` bytes of the arena at `offset`, as the last run left them.
    pub fn read_arena(&self, offset: u64, len: usize) -> Result<Vec<u8>, RuntimeError> {
        let src = self.arena_at(offset, len)?;
        let mut host = vec![0u8; len];
        self.bind()?;
        if len > 0 {
            let d2h = hip::hipMemcpyKind::hipMemcpyDeviceToHost;
            // SAFETY: the arena's bytes (checked) into a host buffer that outlives the synchronize
            check("hipMemcpyAsync (the arena)", unsafe {
                hip::hipMemcpyAsync(host.as_mut_ptr().cast(), src, len, d2h, self.stream)
            })?;
        }
        self.synchronize()?;
        Ok(host)
    }

    /// One execution of plan `p` on whatever the arena holds, waited for.
    pub fn replay(&mut self, p: usize) -> Result<(), RuntimeError> {
        if p >= self.artifact.plans.len() {
            return Err(RuntimeError::Batch(format!("no plan {p} (the artifact has {})", self.artifact.plans.len())));
        }
        self.bind()?;
        self.launch_steps(p)?;
        self.synchronize()
    }

    /// Enqueues every step of plan `p` on the session's stream (kernel launches only: library
    /// steps were refused at load).
    fn launch_steps(&self, p: usize) -> Result<(), RuntimeError> {
        let bases = self.bases();
        for (i, step) in self.artifact.plans[p].steps.iter().enumerate() {
            let Step::Launch { kernel, grid, block, args } = step else {
                let why = "cuBLASLt/cuDNN calls do not run on AMD GPUs".to_string();
                return Err(library_error(&self.artifact, p, i, why));
            };
            let Some(&f) = self.functions.get(*kernel as usize) else {
                return Err(RuntimeError::Hip(format!("step {i}: no kernel {kernel}")));
            };
            // bare pointers, one 8-byte argument each (the kernels' calling convention)
            let mut params = device_pointers(args, bases, &Remap::none());
            let mut size = std::mem::size_of_val(params.as_slice());
            let mut extra = [
                LAUNCH_PARAM_BUFFER_POINTER as *mut c_void,
                params.as_mut_ptr().cast(),
                LAUNCH_PARAM_BUFFER_SIZE as *mut c_void,
                (&mut size as *mut usize).cast(),
                LAUNCH_PARAM_END as *mut c_void,
            ];
            let name = &self.artifact.kernels.names[*kernel as usize];
            // SAFETY: a function of the session's module; its arguments are pointers inside the
            // arena or the weights (checked when the artifact was read), one per parameter; the
            // buffer and its size outlive the call, which copies them
            check(&format!("hipModuleLaunchKernel (step {i}, {name})"), unsafe {
                hip::hipModuleLaunchKernel(
                    f,
                    grid[0],
                    grid[1],
                    grid[2],
                    block[0],
                    block[1],
                    block[2],
                    0,
                    self.stream,
                    null_mut(),
                    extra.as_mut_ptr(),
                )
            })?;
        }
        Ok(())
    }
}

impl Drop for HipSession {
    /// Waits for the stream, then frees the buffers, the module and the stream (errors ignored:
    /// nothing can be done about them here).
    fn drop(&mut self) {
        // SAFETY: each handle is the session's own, or null (never set up)
        unsafe {
            let _ = hip::hipSetDevice(self.device);
            if !self.stream.is_null() {
                let _ = hip::hipStreamSynchronize(self.stream);
            }
            if !self.arena.is_null() {
                let _ = hip::hipFree(self.arena);
            }
            if !self.weights.is_null() {
                let _ = hip::hipFree(self.weights);
            }
            if !self.module.is_null() {
                let _ = hip::hipModuleUnload(self.module);
            }
            if !self.stream.is_null() {
                let _ = hip::hipStreamDestroy(self.stream);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_move_between_threads() {
        fn send<T: Send>() {}
        send::<HipSession>();
    }

    #[test]
    fn the_chip_is_the_arch_name_before_its_features() {
        let mut p = hip::hipDeviceProp_t::default();
        for (d, s) in p.gcnArchName.iter_mut().zip(b"gfx90a:sramecc+:xnack-") {
            *d = *s as std::ffi::c_char;
        }
        assert_eq!(chip(&p), "gfx90a");
        assert_eq!(chip(&hip::hipDeviceProp_t::default()), "");
    }
}
