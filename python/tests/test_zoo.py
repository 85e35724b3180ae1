"""xforge.zoo on the reference interpreter (CPU): the wrappers' results against NumPy
references of the same pre- and post-processing, images of every accepted kind, and errors."""
import os

import numpy as np
import pytest

import xforge
from xforge.zoo import Classifier, Detector, Segmenter, TextEmbedder

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
CLASSIFIER = os.path.join(ROOT, "models", "batch", "classifier.onnx")
ZOO = os.path.join(ROOT, "zoo", "tests", "models")


def image(w, h, seed):
    rng = np.random.default_rng(seed)
    x = np.arange(w)[None, :, None] * 80 // w + np.arange(h)[:, None, None] * 60 // h
    return (rng.integers(0, 96, (h, w, 3)) + x + np.arange(3) * 10).astype(np.uint8)


def bilinear(img, oh, ow):
    """PyTorch's bilinear resize (half-pixel centres, edges clamped, no antialias) of HWC."""
    h, w = img.shape[:2]
    ys = np.clip((np.arange(oh) + 0.5) * h / oh - 0.5, 0, h - 1)
    xs = np.clip((np.arange(ow) + 0.5) * w / ow - 0.5, 0, w - 1)
    y0, x0 = np.floor(ys).astype(int), np.floor(xs).astype(int)
    y1, x1 = np.minimum(y0 + 1, h - 1), np.minimum(x0 + 1, w - 1)
    ty, tx = (ys - y0)[:, None, None], (xs - x0)[None, :, None]
    f = img.astype(np.float64)
    top = f[y0][:, x0] * (1 - tx) + f[y0][:, x1] * tx
    bottom = f[y1][:, x0] * (1 - tx) + f[y1][:, x1] * tx
    return top * (1 - ty) + bottom * ty


def test_classifier_matches_numpy_preprocessing_and_the_interpreter():
    mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
    c = Classifier(CLASSIFIER, input_size=[16, 16], softmax=False, top_k=3)
    imgs = [image(40, 30, 1), image(17, 53, 2)]
    got = c(imgs)
    for img, classes in zip(imgs, got):
        x = ((bilinear(img, 16, 16) / 255 - mean) / std).transpose(2, 0, 1)[None].astype(np.float32)
        probs = xforge.interpret(CLASSIFIER, {"x": x})["y"][0]
        assert [k.index for k in classes] == list(np.argsort(-probs)[:3])
        assert np.allclose([k.score for k in classes], probs[[k.index for k in classes]], atol=1e-5)
        assert classes[0].label == f"class {classes[0].index}"


def png(img):
    """An RGB8 PNG file's bytes (zlib and the chunk layout are all it takes)."""
    import struct
    import zlib

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    h, w, _ = img.shape
    rows = b"".join(b"\x00" + img[y].tobytes() for y in range(h))
    head = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", head) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


def test_images_as_paths_bytes_and_arrays_agree(tmp_path):
    img = image(24, 20, 3)
    path = tmp_path / "a.png"
    path.write_bytes(png(img))
    c = Classifier(CLASSIFIER, input_size=[16, 16], softmax=False)
    a, b, arr = c([str(path), path.read_bytes(), img])
    assert a == b == arr


def test_a_bad_image_raises_or_returns_its_error():
    c = Classifier(CLASSIFIER, input_size=[16, 16], softmax=False, labels=[f"n{i}" for i in range(10)])
    good = image(20, 20, 4)
    with pytest.raises(xforge.BadInputError, match="image 1"):
        c([good, b"not an image"])
    out = c([good, b"not an image", good], errors="return")
    assert isinstance(out[1], xforge.BadInputError) and out[0] == out[2]
    assert out[0][0].label.startswith("n")
    with pytest.raises(xforge.BadInputError, match="uint8"):
        c([np.zeros((4, 4, 3), np.float32)])


def test_detector_segmenter_and_embedder_return_their_kinds():
    d = Detector(os.path.join(ZOO, "yolo.onnx"), input_size=[32, 32], fit="letterbox", score_threshold=0.3)
    dets = d([image(40, 30, 5)])[0]
    assert dets and all(0 <= x <= 40 for det in dets for x in det.box[0::2])
    assert [x.score for x in dets] == sorted((x.score for x in dets), reverse=True)
    ssd = Detector(
        os.path.join(ZOO, "ssd.onnx"),
        input_size=[32, 32],
        head={"kind": "anchors", "anchors": os.path.join(ZOO, "anchors.npy")},
        score_threshold=0.4,
    )
    assert all(x.cls >= 1 for x in ssd([image(33, 31, 6)])[0]), "class 0 is the background"
    s = Segmenter(os.path.join(ZOO, "segmenter.onnx"), input_size=[32, 32])
    m = s([image(23, 57, 7)])[0]
    assert m.shape == (57, 23) and m.dtype == np.int32 and 0 <= m.min() and m.max() < 5
    e = TextEmbedder(os.path.join(ROOT, "models", "bert_tiny.onnx"), tokenizer=os.path.join(ZOO, "tokenizer.json"))
    v = e(["the cat sat", "a red car"])
    assert v.shape == (2, 128) and np.allclose(np.linalg.norm(v, axis=1), 1, atol=1e-5)


def test_configurations_that_do_not_fit_are_errors_naming_the_field(tmp_path):
    with pytest.raises(xforge.BadInputError, match="input_size"):
        Classifier(CLASSIFIER, input_size=[224, 224])
    with pytest.raises(xforge.BadInputError, match="score_treshold"):
        Detector(os.path.join(ZOO, "yolo.onnx"), input_size=[32, 32], score_treshold=0.5)
    cfg = tmp_path / "task.toml"
    cfg.write_text("input_size = [16, 16]\nlabels_file = \"labels.txt\"\n")
    with pytest.raises(xforge.BadInputError, match="labels.txt"):
        Classifier(CLASSIFIER, config=cfg)
    (tmp_path / "labels.txt").write_text("\n".join(f"l{i}" for i in range(10)))
    assert Classifier(CLASSIFIER, config=cfg, softmax=False)([image(16, 16, 8)])[0][0].label.startswith("l")
    with pytest.raises(xforge.BadModelError):
        Classifier(str(tmp_path / "missing.onnx"))
