"""xforge: a kernel-fusion compiler for ONNX models.

    import xforge
    art = xforge.compile("model.onnx", target="sm_90", precision="fp16")
    art.save("model.xfa")
    outs = xforge.Session(art).run({"input": x})          # on a GPU machine
    ref = xforge.interpret("model.onnx", {"input": x})    # the reference interpreter, any machine

Errors are `XforgeError` subclasses: `BadModelError`, `UnsupportedError` (names the node),
`BadArtifactError`, `NoGpuError`, `BadInputError`.
"""
import threading

import numpy as np

try:
    from . import _xforge as _native
except ImportError as _e:  # the source tree without the built extension (fixture scripts use xforge.ops)
    _native = None
    _why = _e

__all__ = [
    "Artifact", "Session", "compile", "from_hub", "interpret", "export", "XforgeError", "BadModelError",
    "UnsupportedError", "BadArtifactError", "NoGpuError", "BadInputError", "__version__",
]

if _native is not None:
    __version__ = _native.__version__
    Artifact = _native.Artifact
    XforgeError = _native.XforgeError
    BadModelError = _native.BadModelError
    UnsupportedError = _native.UnsupportedError
    BadArtifactError = _native.BadArtifactError
    NoGpuError = _native.NoGpuError
    BadInputError = _native.BadInputError


def _need_native():
    if _native is None:
        raise ImportError(f"xforge's native module is not built ({_why}); install the package (scripts/setup)")


def _find_libdevice():
    """Points the compiler at libdevice (math functions of the kernels) from the nvidia-nvvm
    wheel when XFORGE_LIBDEVICE is not set."""
    import glob
    import os

    if os.environ.get("XFORGE_LIBDEVICE"):
        return
    try:
        import nvidia
    except ImportError:
        return
    for root in list(getattr(nvidia, "__path__", [])):
        hits = sorted(glob.glob(os.path.join(root, "cu*", "nvvm", "libdevice", "libdevice*.bc")))
        hits += sorted(glob.glob(os.path.join(root, "cuda_nvcc", "nvvm", "libdevice", "libdevice*.bc")))
        if hits:
            os.environ["XFORGE_LIBDEVICE"] = hits[-1]
            return


_find_libdevice()


# xforge dtype names and NumPy's
_TO_NUMPY = {
    "f32": np.float32, "f16": np.float16, "f64": np.float64, "i64": np.int64, "i32": np.int32,
    "i16": np.int16, "i8": np.int8, "u8": np.uint8, "u16": np.uint16, "u32": np.uint32, "u64": np.uint64,
    "bool": np.bool_,
}
_FROM_NUMPY = {np.dtype(v): k for k, v in _TO_NUMPY.items()}


class _TorchDtypes(dict):
    """xforge dtype names and torch's (torch imported on first use)."""

    def __missing__(self, k):
        import torch

        self.update({"f32": torch.float32, "f16": torch.float16, "bf16": torch.bfloat16, "f64": torch.float64,
                     "i64": torch.int64, "i32": torch.int32, "i16": torch.int16, "i8": torch.int8,
                     "u8": torch.uint8, "bool": torch.bool})
        if k not in self:
            raise BadInputError(f"dtype {k} has no torch dtype")
        return self[k]


_TORCH = _TorchDtypes()


def _is_device(a):
    """A CUDA tensor (torch's, or another DLPack producer's on a CUDA device)."""
    if hasattr(a, "is_cuda"):
        return bool(a.is_cuda)
    dev = getattr(a, "__dlpack_device__", None)
    return dev is not None and dev()[0] == 2


def _raw(a, what):
    """An array-like (NumPy, or a torch tensor) as (bytes, dtype name, shape)."""
    if hasattr(a, "detach") and hasattr(a, "cpu"):  # a torch tensor: copied to the host
        a = a.detach().cpu().numpy()
    a = np.asarray(a)
    dt = _FROM_NUMPY.get(a.dtype)
    if dt is None:
        raise BadInputError(f"{what}: dtype {a.dtype} is not supported")
    return (np.ascontiguousarray(a).tobytes(), dt, list(a.shape))


def _array(b, dt, shape):
    return np.frombuffer(b, dtype=_TO_NUMPY[dt]).reshape(shape).copy()


def compile(model, target="sm_90", precision="fp32", batch=None, batch_dim=None, shapes=None, generated_gemm=False,
            tuning=None):
    """Compiles an ONNX model (a path or the file's bytes) into an `Artifact`.

    precision: "fp32", "fp16" or "bf16" (storage; kernels compute in f32). batch: bucket sizes
    for a symbolic batch dim (e.g. [1, 8, 32]). shapes: {input or dim name: dims} bindings.
    tuning: a table of measured kernel times (`xforge tune` writes one on a GPU).
    The GIL is released while compiling.
    """
    _need_native()
    if isinstance(model, bytearray):
        model = bytes(model)
    elif not isinstance(model, bytes):
        model = str(model)
    return _native.compile(model, target=target, precision=precision, batch=list(batch) if batch else None,
                           batch_dim=batch_dim, shapes={k: list(v) for k, v in (shapes or {}).items()},
                           generated_gemm=generated_gemm, tuning=None if tuning is None else str(tuning))


def from_hub(repo, target=None, precision="fp32", batch=None, server=None, token=None, cache_dir=None, offline=False,
             timeout_s=600):
    """The artifact of hub repository `repo` ("owner/name") for `target` (default: this machine's
    GPU), `precision` and batch buckets, downloaded into the hub cache and verified (signature,
    sha256, size, format), built by the hub's workers first when none exists. Server, token and cache default to `xforge hub
    login`'s configuration and the XFORGE_HUB_* variables; `offline` reads the cache only."""
    _need_native()
    return _native.from_hub(repo, target=target, precision=precision, batch=list(batch) if batch else None,
                            server=server, token=token,
                            cache_dir=None if cache_dir is None else str(cache_dir), offline=offline,
                            timeout_s=int(timeout_s))


class Session:
    """An artifact loaded onto a GPU. `run` takes NumPy arrays (or torch tensors) by input name
    or in input order and returns NumPy arrays in output order. Safe to share between threads
    (runs are serialized)."""

    def __init__(self, artifact, device=0):
        _need_native()
        if not isinstance(artifact, Artifact):
            artifact = str(artifact)
        self._s = _native.Session(artifact, device)
        self._lock = threading.Lock()

    @property
    def inputs(self):
        return self._s.inputs

    @property
    def outputs(self):
        return self._s.outputs

    def run(self, inputs, outputs=None):
        """Runs the model. NumPy arrays (or CPU tensors) in, NumPy arrays out. CUDA tensors
        (torch, or any DLPack producer) in, CUDA tensors out: nothing is copied, the work is
        enqueued on the tensors' current torch stream (the caller's), the outputs are new torch
        tensors or `outputs`, written in place. Device and host inputs do not mix."""
        names = [n for n, _, _ in self._s.inputs]
        if isinstance(inputs, dict):
            missing = [n for n in names if n not in inputs]
            extra = [n for n in inputs if n not in names]
            if missing or extra:
                raise BadInputError(f"inputs: missing {missing}, unknown {extra} (the model takes {names})")
            inputs = [inputs[n] for n in names]
        inputs = list(inputs)
        on_device = [_is_device(a) for a in inputs]
        if any(on_device) or outputs is not None:
            if not all(on_device):
                raise BadInputError("inputs: CUDA tensors and host arrays do not mix (nothing is copied between them)")
            return self._run_device(inputs, outputs)
        raw = [_raw(a, n) for a, n in zip(inputs, names)]
        with self._lock:
            outs = self._s.run_raw(raw)
        return [_array(b, dt, s) for b, dt, s in outs]

    def _output_shapes(self, inputs):
        """Each output's shape for these inputs' batch (a bucket's)."""
        top = self._s.buckets[-1]
        n = None
        for (_, _, want), a, (_, axis) in zip(self._s.inputs, inputs, self._s.input_axes):
            if axis is not None and top and len(a.shape) == len(want):
                n = int(a.shape[axis]) * top // int(want[axis])
                break
        shapes = []
        for (_, _, want), (_, axis, _) in zip(self._s.outputs, self._s.output_axes):
            s = list(want)
            if axis is not None and n is not None:
                s[axis] = s[axis] // top * n
            shapes.append(s)
        return shapes

    def _run_device(self, inputs, outputs):
        import torch

        dev = inputs[0].device if inputs else torch.device("cuda", 0)
        if outputs is None:
            outputs = [torch.empty(s, dtype=_TORCH[dt], device=dev)
                       for s, (_, dt, _) in zip(self._output_shapes(inputs), self._s.outputs)]
        stream = torch.cuda.current_stream(dev).cuda_stream
        with self._lock:
            valid = self._s.run_dlpack(inputs, list(outputs), stream)
        outs = list(outputs)
        for k, ((_, _, axis), n) in enumerate(zip(self._s.output_axes, valid)):
            if n is not None:
                outs[k] = outs[k].narrow(axis, 0, n)
        return outs


def interpret(model, inputs, shapes=None):
    """Runs an ONNX model on xforge's reference interpreter (CPU): inputs by name; returns a dict
    of NumPy arrays by output name."""
    _need_native()
    raw = {k: _raw(v, k) for k, v in inputs.items()}
    outs = _native.interpret(str(model), raw, {k: list(v) for k, v in (shapes or {}).items()} or None)
    return {name: _array(b, dt, s) for name, b, dt, s in outs}


def export(model, example_inputs, path, **kwargs):
    """Exports a torch module to ONNX for `compile` (torch.onnx.export with xforge's custom ops)."""
    from .ops import export as _export
    return _export(model, tuple(example_inputs), path, **kwargs)
