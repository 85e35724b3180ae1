"""`torch.compile(model, backend="xforge")`: the captured FX graph is exported to ONNX, compiled
by xforge (cached by the graph's bytes, target and precision in the per-user cache folder) and
run by a Session. Anything that fails — an export, an op xforge does not compile, no GPU — falls
back to PyTorch for that graph with a warning that says why.

Registered for dynamo through the `torch_dynamo_backends` entry point; `xforge_backend` may also
be passed directly: `torch.compile(model, backend=xforge_backend)`.
"""
import hashlib
import io
import os
import warnings

import xforge

TARGET = os.environ.get("XFORGE_TARGET", "sm_90")
PRECISION = os.environ.get("XFORGE_PRECISION", "fp32")


def _cache_dir():
    d = os.environ.get("XFORGE_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "xforge")
    d = os.path.join(d, "torch")
    os.makedirs(d, exist_ok=True)
    return d


def compile_graph(gm, example_inputs, target=TARGET, precision=PRECISION):
    """The artifact of an FX graph (exported to ONNX), from the cache when it was built before."""
    import torch

    buf = io.BytesIO()
    names = [f"arg{i}" for i in range(len(example_inputs))]
    torch.onnx.export(gm, tuple(example_inputs), buf, opset_version=17, dynamo=False, input_names=names)
    onnx_bytes = buf.getvalue()
    key = hashlib.sha256(onnx_bytes + f"|{target}|{precision}|{xforge.__version__}".encode()).hexdigest()[:32]
    path = os.path.join(_cache_dir(), key + ".xfa")
    if os.path.exists(path):
        try:
            return xforge.Artifact.load(path)
        except xforge.BadArtifactError:
            pass  # a stale or broken entry: build it again
    art = xforge.compile(onnx_bytes, target=target, precision=precision)
    art.save(path)
    return art


def xforge_backend(gm, example_inputs, **options):
    import torch

    try:
        art = compile_graph(gm, example_inputs, options.get("target", TARGET), options.get("precision", PRECISION))
        session = xforge.Session(art)
    except Exception as e:  # noqa: BLE001 - any failure means PyTorch runs this graph
        warnings.warn(f"xforge: PyTorch runs this graph ({type(e).__name__}: {e})", stacklevel=2)
        return gm.forward

    def run(*args):
        device = args[0].device if args and hasattr(args[0], "device") else torch.device("cpu")
        outs = session.run(list(args))
        return tuple(torch.from_numpy(o).to(device) for o in outs)

    return run
