"""Task wrappers: an ONNX model and a task configuration in, labels, boxes, masks or embeddings
out, with the pre- and post-processing compiled into the model's graph (on the GPU with
``device="gpu"``, on the reference interpreter otherwise).

    from xforge.zoo import Detector
    det = Detector("yolo.onnx", input_size=[640, 640], fit="letterbox", labels_file="coco.txt")
    for d in det(["street.jpg"])[0]:
        print(d.label, d.score, d.box)

Images are paths, encoded bytes (PNG, JPEG) or ``uint8`` arrays of shape (H, W, 3), RGB.
Configuration is a ``task.toml`` (``config=``) and/or keyword arguments of the same names
(``input_size``, ``mean``, ``std``, ``fit``, ``labels``, ``score_threshold``, ``head={...}``, ...).
A call returns one result per image; an image that cannot be read raises ``BadInputError``
naming it, or, with ``errors="return"``, leaves the exception in its place and the rest run.
"""
import os
from dataclasses import dataclass

import numpy as np

from . import BadInputError, _need_native

__all__ = ["Class", "Detection", "Classifier", "Detector", "Segmenter", "TextEmbedder"]


@dataclass(frozen=True)
class Class:
    index: int
    label: str
    score: float


@dataclass(frozen=True)
class Detection:
    cls: int
    label: str
    score: float
    box: tuple  # (x1, y1, x2, y2) in the image's pixels


def _toml_value(v, where):
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    if isinstance(v, (float, np.floating)):
        return repr(float(v))
    if isinstance(v, (str, os.PathLike)):
        s = os.fspath(v)
        return '"' + s.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x, where) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{k} = {_toml_value(x, where + '.' + k)}" for k, x in v.items()) + "}"
    raise BadInputError(f"{where}: {type(v).__name__} is not a configuration value")


def _config(config, options):
    """The configuration as TOML text and the folder its relative paths start from."""
    text, base = "", os.getcwd()
    if config is not None:
        with open(config) as f:
            text = f.read()
        base = os.path.dirname(os.path.abspath(config))
    for k, v in options.items():
        text += f"\n{k} = {_toml_value(v, k)}"
    return text, base


def _image(x):
    if isinstance(x, (str, os.PathLike)):
        return os.fspath(x)
    if isinstance(x, (bytes, bytearray)):
        return bytes(x)
    a = np.asarray(x)
    if a.dtype != np.uint8 or a.ndim != 3 or a.shape[2] != 3:
        raise BadInputError(f"an image array must be uint8 (H, W, 3), got {a.dtype} {a.shape}")
    return (np.ascontiguousarray(a).tobytes(), a.shape[1], a.shape[0])


class _Task:
    _kind = None

    def __init__(self, model, config=None, device="interp", precision="fp16", **options):
        _need_native()
        from . import _native

        text, base = _config(config, options)
        self._task = _native.ZooTask(self._kind, os.fspath(model), text, base, device, precision)

    def _run(self, items, errors, convert):
        if errors not in ("raise", "return"):
            raise BadInputError(f"errors='{errors}': 'raise' or 'return'")
        out = []
        for i, (ok, r) in enumerate(self._task.run(list(items))):
            if ok:
                out.append(convert(r))
            elif errors == "return":
                out.append(BadInputError(f"image {i}: {r}"))
            else:
                raise BadInputError(f"image {i}: {r}")
        return out

    def _images(self, images, errors, convert):
        if isinstance(images, (str, os.PathLike, bytes, np.ndarray)):
            raise BadInputError("pass a list of images (one image is [image])")
        return self._run([_image(x) for x in images], errors, convert)


def _label(label, index):
    return label if label is not None else f"class {index}"


class Classifier(_Task):
    """The best ``top_k`` classes of each image, best first."""

    _kind = "classifier"

    def __call__(self, images, errors="raise"):
        return self._images(images, errors, lambda r: [Class(i, _label(l, i), s) for i, l, s in r])


class Detector(_Task):
    """Each image's detections (best first), boxes in the image's own pixels."""

    _kind = "detector"

    def __call__(self, images, errors="raise"):
        return self._images(images, errors, lambda r: [Detection(c, _label(l, c), s, tuple(b)) for c, l, s, b in r])


class Segmenter(_Task):
    """Each image's mask: an int32 array (H, W) of class indices at the image's own size."""

    _kind = "segmenter"

    def __call__(self, images, errors="raise"):
        def mask(r):
            w, h, b = r
            return np.frombuffer(b, dtype="<u4").reshape(h, w).astype(np.int32)

        return self._images(images, errors, mask)


class TextEmbedder(_Task):
    """Unit-length sentence embeddings, one row per text (float32 array (N, D))."""

    _kind = "embedder"

    def __call__(self, texts):
        if isinstance(texts, str):
            raise BadInputError("pass a list of texts (one text is [text])")
        rows = self._run([str(t) for t in texts], "raise", lambda b: np.frombuffer(b, dtype="<f4"))
        return np.stack(rows) if rows else np.zeros((0, 0), np.float32)
