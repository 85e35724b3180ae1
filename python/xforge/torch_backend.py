"""`torch.compile(model, backend="xforge")`: the captured FX graph is exported to ONNX, compiled
by xforge (cached by the graph's bytes, target and precision in the per-user cache folder) and
run by a Session on PyTorch's own tensors and stream: CUDA inputs are read and the outputs
written in place through DLPack, nothing is copied. Anything that fails — an export, an op
xforge does not compile, no GPU — falls back to PyTorch for that graph with a warning that says
why.

Parameters and buffers (the graph inputs dynamo marks static) are baked into the artifact as
constants, so the compiler can fold them (BatchNorm into convolutions, scales into GEMMs): this
backend is for inference; the cache key covers their values.

Registered for dynamo through the `torch_dynamo_backends` entry point; `xforge_backend` may also
be passed directly: `torch.compile(model, backend=xforge_backend)`.
"""
import hashlib
import io
import os
import warnings

import xforge

TARGET = os.environ.get("XFORGE_TARGET", "sm_90")
# None: from the inputs' floating dtype (fp16 inputs compile in fp16)
PRECISION = os.environ.get("XFORGE_PRECISION")


def _cache_dir():
    d = os.environ.get("XFORGE_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "xforge")
    d = os.path.join(d, "torch")
    os.makedirs(d, exist_ok=True)
    return d


def _is_static(t):
    """A parameter or buffer dynamo passes as a graph input (it marks them static)."""
    import torch

    return isinstance(t, torch.nn.Parameter) or getattr(t, "_dynamo_static_input_type", None) is not None


def _precision(tensors):
    import torch

    dts = {t.dtype for t in tensors if hasattr(t, "dtype") and t.is_floating_point()}
    if torch.float16 in dts:
        return "fp16"
    if torch.bfloat16 in dts:
        return "bf16"
    return "fp32"


def _frozen(gm, example_inputs, static):
    """The graph as a module with its static inputs fixed as buffers: takes the other inputs."""
    import torch

    class Frozen(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.gm = gm
            for i in static:
                self.register_buffer(f"c{i}", example_inputs[i].detach())

        def forward(self, *dynamic):
            it = iter(dynamic)
            args = [getattr(self, f"c{i}") if i in static else next(it) for i in range(len(example_inputs))]
            return self.gm(*args)

    return Frozen()


def compile_graph(gm, example_inputs, target=TARGET, precision=PRECISION):
    """The artifact of an FX graph (exported to ONNX with its static inputs as constants), from
    the cache when it was built before; and the positions of the inputs it takes."""
    import torch

    static = {i for i, t in enumerate(example_inputs) if _is_static(t)}
    dynamic = [i for i in range(len(example_inputs)) if i not in static]
    module = _frozen(gm, example_inputs, static)
    # the inputs' floating dtype, else the parameters' (token ids are integers: a half model
    # takes int64 ids and compiles in fp16)
    floating = [t for t in example_inputs if hasattr(t, "dtype") and t.is_floating_point()]
    precision = precision or _precision([example_inputs[i] for i in dynamic if example_inputs[i].is_floating_point()]
                                        or floating)
    buf = io.BytesIO()
    names = [f"arg{i}" for i in dynamic]
    with torch.no_grad():
        # xforge folds constants itself; the exporter's folding mixed devices on CUDA graphs
        torch.onnx.export(module, tuple(example_inputs[i] for i in dynamic), buf, opset_version=17, dynamo=False,
                          input_names=names, do_constant_folding=False)
    onnx_bytes = buf.getvalue()
    key = hashlib.sha256(onnx_bytes + f"|{target}|{precision}|{xforge.__version__}".encode()).hexdigest()[:32]
    path = os.path.join(_cache_dir(), key + ".xfa")
    if os.path.exists(path):
        try:
            return xforge.Artifact.load(path), dynamic
        except xforge.BadArtifactError:
            pass  # a stale or broken entry: build it again
    art = xforge.compile(onnx_bytes, target=target, precision=precision)
    art.save(path)  # written whole, then renamed: a concurrent reader never sees half a file
    return art, dynamic


def xforge_backend(gm, example_inputs, **options):
    import torch

    try:
        art, dynamic = compile_graph(gm, example_inputs, options.get("target", TARGET),
                                     options.get("precision", PRECISION))
        session = xforge.Session(art)
    except Exception as e:  # noqa: BLE001 - any failure means PyTorch runs this graph
        if os.environ.get("XFORGE_TORCH_STRICT"):
            raise  # torch.compile fails with the whole traceback (for diagnosis and tests)
        warnings.warn(f"xforge: PyTorch runs this graph ({type(e).__name__}: {e})", stacklevel=2)
        return gm.forward

    # the lean path of a call (the graph's shapes are static): outputs made here, the native run
    # enqueued on the current stream on raw addresses (dynamo's guards hold every input to the
    # dtype, shape and device checked here once); outputs of data-dependent length go through
    # Session.run
    native = session._s
    specs = [(list(shape), xforge._TORCH[dt]) for _, dt, shape in session.outputs]
    bounded = any(v is not None for _, _, v in native.output_axes)
    want = [(xforge._TORCH[dt], tuple(shape)) for _, dt, shape in session.inputs]
    got = [(example_inputs[i].dtype, tuple(example_inputs[i].shape)) for i in dynamic]
    lean = not bounded and got == want and all(example_inputs[i].is_cuda for i in dynamic)
    sizes = [torch.Size(shape).numel() * torch.empty(0, dtype=d).element_size() for d, shape in want]
    out_sizes = [torch.Size(s).numel() * torch.empty(0, dtype=d).element_size() for s, d in specs]

    def run(*args):
        # ONNX sees each input in its logical order: a strided view is made contiguous first
        xs = [args[i] if args[i].is_contiguous() else args[i].contiguous() for i in dynamic]
        if lean and all(x.is_cuda for x in xs):
            run.lean_calls += 1
            dev = xs[0].device if xs else torch.device("cuda", torch.cuda.current_device())
            outs = [torch.empty(s, dtype=d, device=dev) for s, d in specs]
            native._run_pointers([(x.data_ptr(), n) for x, n in zip(xs, sizes)],
                                 [(o.data_ptr(), n) for o, n in zip(outs, out_sizes)],
                                 torch.cuda.current_stream(dev).cuda_stream)
            return tuple(outs)
        if xs and all(x.is_cuda for x in xs):
            return tuple(session.run(xs))
        device = xs[0].device if xs else torch.device("cpu")
        return tuple(torch.from_numpy(o).to(device) for o in session.run(xs))

    # why a call takes the lean path or not (for checks): the graph's inputs against the artifact's
    run.lean_calls = 0
    run.lean_why = "lean" if lean else f"inputs {got} (artifact {want}), bounded outputs {bounded}"

    return run
