//! `xforge._xforge`, the native half of the Python package: the compiler (`compile`), the
//! artifact (`Artifact`), the runtime (`Session`) and the reference interpreter (`interpret`),
//! each the same library call the CLI makes. Tensors cross as (bytes, dtype name, shape); the
//! Python half (`xforge/__init__.py`) turns them into NumPy arrays. The GIL is released while
//! compiling, loading and running.
use pyo3::create_exception;
use pyo3::exceptions::PyException;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyCapsule, PyDict, PyList};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use xforge_compiler::{CompileError, Compiler, Precision};
use xforge_ir::{DType, Tensor, TensorData};
use xforge_runtime::{DeviceBuffer, RuntimeError, Step};

mod zoo;

create_exception!(_xforge, XforgeError, PyException, "Every xforge error.");
create_exception!(_xforge, BadModelError, XforgeError, "The model file cannot be read or is not valid ONNX.");
create_exception!(_xforge, UnsupportedError, XforgeError, "A node the compiler cannot compile (named in the message).");
create_exception!(_xforge, BadArtifactError, XforgeError, "A truncated, corrupt, foreign or wrong-target artifact.");
create_exception!(_xforge, NoGpuError, XforgeError, "No CUDA driver or device to run on.");
create_exception!(_xforge, BadInputError, XforgeError, "An input or option of the wrong name, dtype or shape.");

fn compile_error(e: CompileError) -> PyErr {
    let msg = e.to_string();
    match e {
        CompileError::Import(_) | CompileError::Read { .. } => BadModelError::new_err(msg),
        CompileError::Unsupported(_) | CompileError::Dtype(_) => UnsupportedError::new_err(msg),
        CompileError::Option(_) => BadInputError::new_err(msg),
        _ => XforgeError::new_err(msg),
    }
}

fn runtime_error(e: RuntimeError) -> PyErr {
    let msg = e.to_string();
    match e {
        RuntimeError::Cuda(_) => NoGpuError::new_err(msg),
        RuntimeError::Artifact(_) => BadArtifactError::new_err(msg),
        RuntimeError::Input { .. } | RuntimeError::Batch(_) => BadInputError::new_err(msg),
        _ => XforgeError::new_err(msg),
    }
}

/// A file of its own in the temporary folder (removed when dropped).
struct TempFile(PathBuf);

impl TempFile {
    fn new(ext: &str) -> TempFile {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        TempFile(std::env::temp_dir().join(format!("xforge-py-{}-{n}.{ext}", std::process::id())))
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn precision(p: &str) -> PyResult<Precision> {
    Ok(match p {
        "fp32" => Precision::Fp32,
        "fp16" => Precision::Fp16,
        "bf16" => Precision::Bf16,
        o => return Err(BadInputError::new_err(format!("precision '{o}': fp32, fp16 or bf16"))),
    })
}

/// Compiles an ONNX model (a path, or the file's bytes) into an `Artifact` for an NVIDIA target.
#[pyfunction]
#[pyo3(signature = (model, target = "sm_90", precision = "fp32", batch = None, batch_dim = None, shapes = None, generated_gemm = false, tuning = None))]
#[allow(clippy::too_many_arguments)]
fn compile(
    py: Python<'_>,
    model: &Bound<'_, PyAny>,
    target: &str,
    precision: &str,
    batch: Option<Vec<u64>>,
    batch_dim: Option<String>,
    shapes: Option<BTreeMap<String, Vec<usize>>>,
    generated_gemm: bool,
    tuning: Option<PathBuf>,
) -> PyResult<Artifact> {
    let mut c = Compiler::new(target)
        .precision(self::precision(precision)?)
        .generated_gemm(generated_gemm)
        .batch(&batch.unwrap_or_default(), batch_dim.as_deref());
    for (k, v) in shapes.unwrap_or_default() {
        c = c.shape(&k, &v);
    }
    // measured kernel times (`xforge tune`): a table file for this target
    if let Some(t) = tuning {
        if !t.is_file() {
            return Err(BadInputError::new_err(format!("tuning {}: no such file", t.display())));
        }
        let table = xforge_compiler::TuningTable::read(&t, target, None)
            .map_err(|e| BadInputError::new_err(format!("tuning {}: {e}", t.display())))?;
        c = c.tuning(table);
    }
    // bytes go through a file of their own: batch buckets import the model once per bucket
    let (path, _tmp) = if let Ok(b) = model.downcast::<PyBytes>() {
        let t = TempFile::new("onnx");
        std::fs::write(&t.0, b.as_bytes()).map_err(|e| XforgeError::new_err(e.to_string()))?;
        (t.0.clone(), Some(t))
    } else {
        (PathBuf::from(model.extract::<String>().map_err(|_| BadInputError::new_err("model: a path or bytes"))?), None)
    };
    let inner = py.allow_threads(|| c.compile_onnx(&path)).map_err(compile_error)?;
    Ok(Artifact { inner })
}

fn hub_error(e: xforge_hub::HubError) -> PyErr {
    let msg = e.to_string();
    if e.is_user_error() {
        BadInputError::new_err(msg)
    } else {
        XforgeError::new_err(msg)
    }
}

/// The artifact of hub repository `repo` for `target` (default: the target of this machine's
/// GPU), downloaded into the hub cache and verified (the server's signature, sha256, size, the
/// format), built by the hub's workers first when none exists yet. Server, token and cache come
/// from the arguments, else from `xforge hub login`'s configuration and the XFORGE_HUB_*
/// variables. With `offline`, only the cache is read.
#[pyfunction]
#[pyo3(signature = (repo, target = None, precision = "fp32", batch = None, server = None, token = None, cache_dir = None, offline = false, timeout_s = 600))]
#[allow(clippy::too_many_arguments)]
fn from_hub(
    py: Python<'_>,
    repo: &str,
    target: Option<String>,
    precision: &str,
    batch: Option<Vec<u64>>,
    server: Option<String>,
    token: Option<String>,
    cache_dir: Option<PathBuf>,
    offline: bool,
    timeout_s: u64,
) -> PyResult<Artifact> {
    let mut cfg = xforge_hub::ClientConfig::from_env().map_err(hub_error)?;
    if let Some(s) = server {
        cfg.server = s;
    }
    if token.is_some() {
        cfg.token = token;
    }
    if cache_dir.is_some() {
        cfg.cache_dir = cache_dir;
    }
    cfg.offline |= offline;
    cfg.progress = false;
    let target = match target {
        Some(t) => t,
        None => xforge_runtime::device_target(0).map_err(runtime_error)?,
    };
    let inner = py
        .allow_threads(|| {
            let client = xforge_hub::Client::new(cfg)?;
            let spec = xforge_hub::BuildSpec::new(&target).precision(precision).batch(&batch.unwrap_or_default());
            let p = client.pull_with(repo, &spec, true, std::time::Duration::from_secs(timeout_s))?;
            client.verified_artifact(&p, &target)
        })
        .map_err(hub_error)?;
    Ok(Artifact { inner })
}

/// A compiled model: kernels (PTX), weights, and the plan of each batch bucket.
#[pyclass(module = "xforge._xforge", frozen)]
struct Artifact {
    inner: xforge_runtime::Artifact,
}

fn artifact_error(e: xforge_runtime::ArtifactError) -> PyErr {
    BadArtifactError::new_err(e.to_string())
}

#[pymethods]
impl Artifact {
    /// Reads an artifact file (checked: truncated, corrupt or foreign files are refused).
    #[staticmethod]
    fn load(path: &str) -> PyResult<Artifact> {
        Ok(Artifact { inner: xforge_runtime::Artifact::read(Path::new(path)).map_err(artifact_error)? })
    }

    /// An artifact from its bytes.
    #[staticmethod]
    fn from_bytes(b: &[u8]) -> PyResult<Artifact> {
        Ok(Artifact { inner: xforge_runtime::Artifact::from_bytes(b).map_err(artifact_error)? })
    }

    /// Writes the artifact (atomically: never a half-written file).
    fn save(&self, path: &str) -> PyResult<()> {
        self.inner.write(Path::new(path)).map_err(artifact_error)
    }

    fn to_bytes<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        PyBytes::new(py, &self.inner.to_bytes())
    }

    /// The kernels' names, in the artifact's order.
    #[getter]
    fn kernels(&self) -> Vec<String> {
        self.inner.kernels.names.clone()
    }

    /// The steps of plan `plan` (a batch bucket), each a dict: a kernel launch or a library call.
    #[pyo3(signature = (plan = 0))]
    fn steps<'py>(&self, py: Python<'py>, plan: usize) -> PyResult<Bound<'py, PyList>> {
        let p = self.inner.plans.get(plan).ok_or_else(|| BadInputError::new_err(format!("no plan {plan}")))?;
        let out = PyList::empty(py);
        for s in &p.steps {
            let d = PyDict::new(py);
            match s {
                Step::Launch { kernel, grid, block, args } => {
                    d.set_item("kind", "kernel")?;
                    d.set_item("kernel", &self.inner.kernels.names[*kernel as usize])?;
                    d.set_item("grid", grid.to_vec())?;
                    d.set_item("block", block.to_vec())?;
                    d.set_item("buffers", args.len())?;
                }
                Step::Library(c) => {
                    d.set_item("kind", c.kind.as_str())?;
                    d.set_item("group", c.group)?;
                    let params: BTreeMap<String, i64> = c.params.iter().cloned().collect();
                    d.set_item("params", params)?;
                    d.set_item("buffers", c.args.len())?;
                }
            }
            out.append(d)?;
        }
        Ok(out)
    }

    /// The header, the interface and the size of each plan, as a dict.
    fn inspect<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let a = &self.inner;
        let d = PyDict::new(py);
        d.set_item("compiler_version", &a.header.compiler_version)?;
        d.set_item("target", &a.header.target)?;
        d.set_item("precision", &a.header.precision)?;
        d.set_item("model_digest", &a.header.model_digest)?;
        let options: BTreeMap<String, String> = a.header.options.iter().cloned().collect();
        d.set_item("options", options)?;
        d.set_item("batch_dim", a.header.batch.as_ref().map(|b| b.symbol.clone()))?;
        d.set_item("kernels", a.kernels.names.len())?;
        d.set_item("weight_bytes", a.weights.len())?;
        let plans = PyList::empty(py);
        for p in &a.plans {
            let pd = PyDict::new(py);
            pd.set_item("batch", p.memory.batch)?;
            pd.set_item("arena_bytes", p.memory.arena_bytes)?;
            pd.set_item("steps", p.steps.len())?;
            for (key, bs) in [("inputs", &p.memory.inputs), ("outputs", &p.memory.outputs)] {
                let l = PyList::empty(py);
                for b in bs.iter() {
                    let bd = PyDict::new(py);
                    bd.set_item("name", &b.name)?;
                    bd.set_item("dtype", &b.dtype)?;
                    bd.set_item("shape", b.shape.clone())?;
                    bd.set_item("data_dependent", b.valid.is_some())?;
                    l.append(bd)?;
                }
                pd.set_item(key, l)?;
            }
            plans.append(pd)?;
        }
        d.set_item("plans", plans)?;
        Ok(d)
    }
}

/// A tensor crossing into Rust: its bytes, dtype name and shape, checked against each other.
fn tensor(bytes: &[u8], dtype: &str, shape: &[usize], what: &str) -> PyResult<Tensor> {
    let dt =
        DType::from_name(dtype).ok_or_else(|| BadInputError::new_err(format!("{what}: unknown dtype '{dtype}'")))?;
    let n: usize = shape.iter().product();
    if bytes.len() != n * dt.size() {
        return Err(BadInputError::new_err(format!(
            "{what}: {} bytes for {dtype}{shape:?} ({} expected)",
            bytes.len(),
            n * dt.size()
        )));
    }
    let data =
        TensorData::from_le_bytes(dt, bytes).ok_or_else(|| BadInputError::new_err(format!("{what}: bad bytes")))?;
    Ok(Tensor::new(shape.to_vec(), data))
}

type Raw<'py> = (Bound<'py, PyBytes>, String, Vec<usize>);

fn raw<'py>(py: Python<'py>, t: &Tensor) -> Raw<'py> {
    (PyBytes::new(py, &t.data().to_le_bytes()), t.dtype().name().to_string(), t.shape().to_vec())
}

// DLPack (v0.8 "dltensor" capsules): a device buffer described by its producer, read here and
// left to its producer (the capsule is not consumed, so its own destructor frees it)
#[repr(C)]
struct DlDevice {
    device_type: i32,
    device_id: i32,
}

#[repr(C)]
struct DlDataType {
    code: u8,
    bits: u8,
    lanes: u16,
}

#[repr(C)]
struct DlTensor {
    data: *mut std::ffi::c_void,
    device: DlDevice,
    ndim: i32,
    dtype: DlDataType,
    shape: *const i64,
    strides: *const i64,
    byte_offset: u64,
}

/// DLPack's kDLCUDA.
const DL_CUDA: i32 = 2;
/// The most dims a DLPack tensor may claim here.
const DL_MAX_DIMS: i32 = 32;

/// The xforge dtype name of a DLPack dtype (one lane).
fn dl_dtype(t: &DlDataType) -> Option<&'static str> {
    Some(match (t.code, t.bits, t.lanes) {
        (2, 32, 1) => "f32",
        (2, 16, 1) => "f16",
        (2, 64, 1) => "f64",
        (4, 16, 1) => "bf16",
        (0, 8, 1) => "i8",
        (0, 16, 1) => "i16",
        (0, 32, 1) => "i32",
        (0, 64, 1) => "i64",
        (1, 8, 1) => "u8",
        (1, 16, 1) => "u16",
        (1, 32, 1) => "u32",
        (1, 64, 1) => "u64",
        (6, 8, 1) => "bool",
        _ => return None,
    })
}

/// A CUDA tensor given through DLPack (an object with `__dlpack__`): its device buffer, dtype
/// name and shape, checked to be on `device` and compact row-major. The capsule is returned to be
/// kept alive while the buffer is used.
fn dl_buffer<'py>(
    obj: &Bound<'py, PyAny>,
    stream: usize,
    device: usize,
    what: &str,
) -> PyResult<(DeviceBuffer, String, Vec<u64>, Bound<'py, PyAny>)> {
    let py = obj.py();
    let capsule = if obj.downcast::<PyCapsule>().is_ok() {
        obj.clone()
    } else {
        if !obj.hasattr("__dlpack__")? {
            return Err(BadInputError::new_err(format!("{what}: not a DLPack tensor (no __dlpack__)")));
        }
        let kw = PyDict::new(py);
        // DLPack names CUDA's legacy default stream 1 (0 is not allowed)
        kw.set_item("stream", if stream == 0 { 1 } else { stream })?;
        obj.call_method("__dlpack__", (), Some(&kw))?
    };
    let cap = capsule
        .downcast::<PyCapsule>()
        .map_err(|_| BadInputError::new_err(format!("{what}: __dlpack__ gave no capsule")))?;
    let named = cap.name()?.map(|n| n.to_bytes() == b"dltensor").unwrap_or(false);
    if !named {
        return Err(BadInputError::new_err(format!("{what}: the DLPack capsule is used or not a 'dltensor'")));
    }
    let t = cap.pointer() as *const DlTensor;
    if t.is_null() {
        return Err(BadInputError::new_err(format!("{what}: an empty DLPack capsule")));
    }
    // SAFETY: a live "dltensor" capsule points at a DLManagedTensor, whose first field is the
    // DLTensor; its shape and strides hold ndim entries (checked to be in range first)
    let (buf, dtype, shape) = unsafe {
        let t = &*t;
        if t.device.device_type != DL_CUDA {
            return Err(BadInputError::new_err(format!(
                "{what}: on DLPack device type {}, not CUDA (pass host arrays to run on copies)",
                t.device.device_type
            )));
        }
        if t.device.device_id as i64 != device as i64 {
            return Err(BadInputError::new_err(format!(
                "{what}: on cuda:{}, the session is on cuda:{device}",
                t.device.device_id
            )));
        }
        let dtype = dl_dtype(&t.dtype).ok_or_else(|| {
            BadInputError::new_err(format!(
                "{what}: DLPack dtype (code {}, bits {}, lanes {}) is not supported",
                t.dtype.code, t.dtype.bits, t.dtype.lanes
            ))
        })?;
        if !(0..=DL_MAX_DIMS).contains(&t.ndim) || (t.ndim > 0 && t.shape.is_null()) {
            return Err(BadInputError::new_err(format!("{what}: a DLPack rank of {}", t.ndim)));
        }
        let dims = std::slice::from_raw_parts(t.shape, t.ndim as usize);
        if dims.iter().any(|&d| d < 0) {
            return Err(BadInputError::new_err(format!("{what}: negative DLPack dims {dims:?}")));
        }
        let shape: Vec<u64> = dims.iter().map(|&d| d as u64).collect();
        if !t.strides.is_null() {
            let strides = std::slice::from_raw_parts(t.strides, t.ndim as usize);
            let mut want = 1i64;
            for (k, (&d, &st)) in dims.iter().zip(strides).enumerate().rev() {
                if d != 1 && st != want {
                    return Err(BadInputError::new_err(format!(
                        "{what}: not contiguous (stride {st} on axis {k}, {want} expected); call .contiguous()"
                    )));
                }
                want = want.saturating_mul(d);
            }
        }
        let size = DType::from_name(dtype).map(|d| d.size() as u64).unwrap_or(1);
        let bytes = shape
            .iter()
            .try_fold(size, |a, &d| a.checked_mul(d))
            .ok_or_else(|| BadInputError::new_err(format!("{what}: {shape:?} overflows")))?;
        let ptr = (t.data as u64)
            .checked_add(t.byte_offset)
            .ok_or_else(|| BadInputError::new_err(format!("{what}: a bad address")))?;
        (DeviceBuffer { ptr, bytes }, dtype.to_string(), shape)
    };
    Ok((buf, dtype, shape, capsule))
}

/// An input's or output's dtype and shape against its binding (the batch axis may be any size).
fn check_dl(name: &str, dt: &str, shape: &[u64], want_dt: &str, want: &[u64], batch_axis: Option<u32>) -> PyResult<()> {
    if dt != want_dt {
        return Err(BadInputError::new_err(format!("'{name}' is {want_dt}, got {dt}")));
    }
    let fits = shape.len() == want.len()
        && shape.iter().zip(want).enumerate().all(|(d, (&g, &w))| g == w || Some(d as u32) == batch_axis);
    if !fits {
        return Err(BadInputError::new_err(format!("'{name}' has shape {want:?}, got {shape:?}")));
    }
    Ok(())
}

/// A loaded artifact on a GPU. Runs from several Python threads are serialized.
#[pyclass(module = "xforge._xforge", frozen)]
struct Session {
    inner: Mutex<xforge_runtime::Session>,
    device: usize,
    inputs: Vec<(String, String, Vec<u64>, Option<u32>)>,
    outputs: Vec<(String, String, Vec<u64>)>,
    /// Per output: its batch axis and valid-length axis
    output_axes: Vec<(Option<u32>, Option<u32>)>,
}

impl Session {
    /// An output that shares bytes with an input or another output is refused.
    fn no_overlaps(&self, ins: &[DeviceBuffer], outs: &[DeviceBuffer]) -> PyResult<()> {
        let all: Vec<&DeviceBuffer> = ins.iter().chain(outs).collect();
        for (k, o) in outs.iter().enumerate() {
            let overlaps = all.iter().enumerate().any(|(j, b)| {
                j != ins.len() + k && o.bytes > 0 && b.bytes > 0 && o.ptr < b.ptr + b.bytes && b.ptr < o.ptr + o.bytes
            });
            if overlaps {
                return Err(BadInputError::new_err(format!(
                    "output '{}' overlaps another input or output",
                    self.outputs.get(k).map(|o| o.0.as_str()).unwrap_or("?")
                )));
            }
        }
        Ok(())
    }
}

#[pymethods]
impl Session {
    /// Loads an artifact (an `Artifact` or a path) onto GPU `device`.
    #[new]
    #[pyo3(signature = (artifact, device = 0))]
    fn new(py: Python<'_>, artifact: &Bound<'_, PyAny>, device: usize) -> PyResult<Session> {
        let (path, _tmp) = match artifact.downcast::<Artifact>() {
            Ok(a) => {
                let t = TempFile::new("xfa");
                a.get().inner.write(&t.0).map_err(artifact_error)?;
                (t.0.clone(), Some(t))
            }
            Err(_) => (
                PathBuf::from(
                    artifact
                        .extract::<String>()
                        .map_err(|_| BadInputError::new_err("artifact: an Artifact or a path"))?,
                ),
                None,
            ),
        };
        let s = py.allow_threads(|| xforge_runtime::Session::load(&path, device)).map_err(runtime_error)?;
        let m = &s.artifact.plans[s.artifact.plans.len() - 1].memory;
        let inputs =
            m.inputs.iter().map(|b| (b.name.clone(), b.dtype.clone(), b.shape.clone(), b.batch_axis)).collect();
        let outputs = m.outputs.iter().map(|b| (b.name.clone(), b.dtype.clone(), b.shape.clone())).collect();
        let output_axes = m.outputs.iter().map(|b| (b.batch_axis, b.valid.map(|(a, _)| a))).collect();
        Ok(Session { inner: Mutex::new(s), device, inputs, outputs, output_axes })
    }

    /// (name, dtype, shape at the largest batch) of each input.
    #[getter]
    fn inputs(&self) -> Vec<(String, String, Vec<u64>)> {
        self.inputs.iter().map(|(n, d, s, _)| (n.clone(), d.clone(), s.clone())).collect()
    }

    #[getter]
    fn outputs(&self) -> Vec<(String, String, Vec<u64>)> {
        self.outputs.clone()
    }

    /// Runs on raw tensors in input order; returns the outputs the same way.
    fn run_raw<'py>(&self, py: Python<'py>, inputs: Vec<(Vec<u8>, String, Vec<usize>)>) -> PyResult<Vec<Raw<'py>>> {
        if inputs.len() != self.inputs.len() {
            return Err(BadInputError::new_err(format!(
                "{} inputs given, the model takes {}",
                inputs.len(),
                self.inputs.len()
            )));
        }
        for ((bytes, dt, shape), (name, want_dt, want, batch_axis)) in inputs.iter().zip(&self.inputs) {
            if dt != want_dt {
                return Err(BadInputError::new_err(format!("input '{name}' is {want_dt}, got {dt}")));
            }
            let fits = shape.len() == want.len()
                && shape
                    .iter()
                    .zip(want)
                    .enumerate()
                    .all(|(d, (&g, &w))| g as u64 == w || Some(d as u32) == *batch_axis);
            if !fits {
                return Err(BadInputError::new_err(format!("input '{name}' has shape {want:?}, got {shape:?}")));
            }
            tensor(bytes, dt, shape, name)?;
        }
        let refs: Vec<&[u8]> = inputs.iter().map(|(b, _, _)| b.as_slice()).collect();
        let outs = py
            .allow_threads(|| {
                let mut s = self.inner.lock().unwrap_or_else(|p| p.into_inner());
                s.run_shaped(&refs)
            })
            .map_err(runtime_error)?;
        Ok(outs
            .into_iter()
            .zip(&self.outputs)
            .map(|((b, shape), (_, dt, _))| {
                (PyBytes::new(py, &b), dt.clone(), shape.iter().map(|&d| d as usize).collect())
            })
            .collect())
    }

    /// (name, batch axis) of each input.
    #[getter]
    fn input_axes(&self) -> Vec<(String, Option<u32>)> {
        self.inputs.iter().map(|(n, _, _, b)| (n.clone(), *b)).collect()
    }

    /// The batch sizes of the artifact's buckets, smallest first ([0] without a batch dim).
    #[getter]
    fn buckets(&self) -> Vec<u64> {
        let s = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        s.artifact.plans.iter().map(|p| p.memory.batch).collect()
    }

    /// (name, batch axis, valid-length axis) of each output.
    #[getter]
    fn output_axes(&self) -> Vec<(String, Option<u32>, Option<u32>)> {
        self.outputs.iter().zip(&self.output_axes).map(|((n, _, _), &(b, v))| (n.clone(), b, v)).collect()
    }

    /// Runs on raw device addresses: `(address, bytes)` per input and output, enqueued on
    /// `stream`. For callers that vouch for the memory themselves — the torch.compile backend,
    /// whose tensors dynamo's guards hold to the graph's dtypes, shapes and device, checked
    /// against the artifact once when the graph was compiled — and skip DLPack's per-call cost.
    /// Sizes, overlaps and alignment are still checked here.
    fn _run_pointers(
        &self,
        py: Python<'_>,
        inputs: Vec<(u64, u64)>,
        outputs: Vec<(u64, u64)>,
        stream: usize,
    ) -> PyResult<Vec<Option<u64>>> {
        let buf = |(ptr, bytes): (u64, u64)| DeviceBuffer { ptr, bytes };
        let ins: Vec<DeviceBuffer> = inputs.into_iter().map(buf).collect();
        let outs: Vec<DeviceBuffer> = outputs.into_iter().map(buf).collect();
        self.no_overlaps(&ins, &outs)?;
        py.allow_threads(|| {
            let mut s = self.inner.lock().unwrap_or_else(|p| p.into_inner());
            // SAFETY: the caller's contract (above): live device memory of these sizes on the
            // session's device until `stream` completes; run_device checks counts and sizes
            unsafe { s.run_device(stream as _, &ins, &outs) }
        })
        .map_err(runtime_error)
    }

    /// Runs on CUDA tensors given through DLPack (objects with `__dlpack__`, e.g. torch tensors),
    /// in input and output order, enqueued on the CUDA stream `stream` (a `cudaStream_t` as an
    /// int; the caller's) without a copy: the outputs are written in place. Returns each output's
    /// valid length (None for outputs of a fixed shape). The GIL is released while enqueuing.
    fn run_dlpack(
        &self,
        py: Python<'_>,
        inputs: Vec<Bound<'_, PyAny>>,
        outputs: Vec<Bound<'_, PyAny>>,
        stream: usize,
    ) -> PyResult<Vec<Option<u64>>> {
        if inputs.len() != self.inputs.len() || outputs.len() != self.outputs.len() {
            return Err(BadInputError::new_err(format!(
                "{} inputs and {} outputs given, the model has {} and {}",
                inputs.len(),
                outputs.len(),
                self.inputs.len(),
                self.outputs.len()
            )));
        }
        let mut keep = vec![];
        let mut ins = vec![];
        for (obj, (name, want_dt, want, batch_axis)) in inputs.iter().zip(&self.inputs) {
            let (buf, dt, shape, cap) = dl_buffer(obj, stream, self.device, &format!("input '{name}'"))?;
            check_dl(name, &dt, &shape, want_dt, want, *batch_axis)?;
            ins.push(buf);
            keep.push(cap);
        }
        let mut outs = vec![];
        for (obj, ((name, want_dt, want), &(batch_axis, _))) in
            outputs.iter().zip(self.outputs.iter().zip(&self.output_axes))
        {
            let (buf, dt, shape, cap) = dl_buffer(obj, stream, self.device, &format!("output '{name}'"))?;
            check_dl(name, &dt, &shape, want_dt, want, batch_axis)?;
            outs.push(buf);
            keep.push(cap);
        }
        self.no_overlaps(&ins, &outs)?;
        let valid = py
            .allow_threads(|| {
                let mut s = self.inner.lock().unwrap_or_else(|p| p.into_inner());
                // SAFETY: the buffers are live CUDA memory of the session's device (DLPack, the
                // capsules kept alive in `keep`), of the sizes checked above, not overlapping as
                // outputs; the stream is the caller's, on the primary context the session uses
                unsafe { s.run_device(stream as _, &ins, &outs) }
            })
            .map_err(runtime_error)?;
        drop(keep);
        Ok(valid)
    }
}

/// Runs an ONNX model on the reference interpreter (CPU): inputs by name as raw tensors; returns
/// (name, bytes, dtype, shape) of each output.
#[pyfunction]
#[pyo3(signature = (model, inputs, shapes = None))]
fn interpret<'py>(
    py: Python<'py>,
    model: &str,
    inputs: HashMap<String, (Vec<u8>, String, Vec<usize>)>,
    shapes: Option<BTreeMap<String, Vec<usize>>>,
) -> PyResult<Vec<(String, Bound<'py, PyBytes>, String, Vec<usize>)>> {
    let opts = xforge_frontend::ImportOptions { shapes: shapes.unwrap_or_default(), ..Default::default() };
    let m = py
        .allow_threads(|| xforge_frontend::load(Path::new(model), &opts))
        .map_err(|e| BadModelError::new_err(e.to_string()))?;
    let g = &m.graph;
    let mut feed = HashMap::new();
    for &i in &g.inputs {
        let name = g.name_of(i);
        let (b, dt, shape) =
            inputs.get(name).ok_or_else(|| BadInputError::new_err(format!("no value for input '{name}'")))?;
        let t = tensor(b, dt, shape, name)?;
        if t.dtype() != g.ty(i).dtype || !g.ty(i).admits(t.shape()) {
            return Err(BadInputError::new_err(format!(
                "input '{name}' is {}, got {}{:?}",
                g.ty(i),
                t.dtype(),
                t.shape()
            )));
        }
        feed.insert(name.to_string(), t);
    }
    let outs =
        py.allow_threads(|| xforge_ir::interp::run(g, &feed)).map_err(|e| XforgeError::new_err(e.to_string()))?;
    Ok(g.outputs
        .iter()
        .zip(&outs)
        .map(|(&o, t)| {
            let (b, dt, s) = raw(py, t);
            (g.name_of(o).to_string(), b, dt, s)
        })
        .collect())
}

#[pymodule]
fn _xforge(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add_function(wrap_pyfunction!(compile, m)?)?;
    m.add_function(wrap_pyfunction!(interpret, m)?)?;
    m.add_function(wrap_pyfunction!(from_hub, m)?)?;
    m.add_class::<Artifact>()?;
    m.add_class::<Session>()?;
    m.add_class::<zoo::ZooTask>()?;
    let py = m.py();
    m.add("XforgeError", py.get_type::<XforgeError>())?;
    m.add("BadModelError", py.get_type::<BadModelError>())?;
    m.add("UnsupportedError", py.get_type::<UnsupportedError>())?;
    m.add("BadArtifactError", py.get_type::<BadArtifactError>())?;
    m.add("NoGpuError", py.get_type::<NoGpuError>())?;
    m.add("BadInputError", py.get_type::<BadInputError>())?;
    Ok(())
}
