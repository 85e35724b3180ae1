"""Tiny task models for the zoo's CPU tests (random weights, fixed seed; run to regenerate):
a segmenter (logits at stride 2), a YOLO-style detector ([N, 4 + 3, 64], boxes computed from
the image so that NMS has real work) and an SSD-style one (regressions and logits against 64
grid anchors, in anchors.npy), each with a symbolic batch and a 32×32 input."""
import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

rng = np.random.default_rng(7)


def conv(name, x, cin, cout, k, s, p, gain=1.0):
    w = (rng.standard_normal((cout, cin, k, k)) * gain / np.sqrt(cin * k * k)).astype(np.float32)
    b = (rng.standard_normal(cout) * 0.1).astype(np.float32)
    inits = [numpy_helper.from_array(w, name + "_w"), numpy_helper.from_array(b, name + "_b")]
    node = helper.make_node("Conv", [x, name + "_w", name + "_b"], [name], kernel_shape=[k, k], strides=[s, s], pads=[p] * 4)
    return node, inits


def const(name, v):
    return numpy_helper.from_array(np.asarray(v), name)


def save(name, nodes, inits, outputs):
    x = helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", 3, 32, 32])
    g = helper.make_graph(nodes, name, [x], outputs, inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], producer_name="zoo/tests/models/make.py")
    onnx.checker.check_model(m, full_check=True)
    onnx.save(m, name + ".onnx")


# segmenter: 5 classes at stride 2
n1, i1 = conv("feat", "image", 3, 8, 3, 1, 1, 2.0)
r1 = helper.make_node("Relu", ["feat"], ["feat_r"])
n2, i2 = conv("logits", "feat_r", 8, 5, 3, 2, 1, 3.0)
out = helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 5, 16, 16])
save("segmenter", [n1, r1, n2], i1 + i2, [out])

# YOLO-style: 64 cells of 4×4 pixels, (cx, cy) inside the image, sizes up to 16, 3 classes
n1, i1 = conv("cells", "image", 3, 7, 4, 4, 0, 4.0)
nodes = [n1, helper.make_node("Reshape", ["cells", "flat"], ["raw"]), helper.make_node("Sigmoid", ["raw"], ["unit"]),
         helper.make_node("Mul", ["unit", "gain"], ["pred"])]
gain = np.array([32, 32, 16, 16, 1, 1, 1], np.float32).reshape(1, 7, 1)
out = helper.make_tensor_value_info("pred", TensorProto.FLOAT, ["batch", 7, 64])
save("yolo", nodes, i1 + [const("flat", np.array([0, 7, 64], np.int64)), const("gain", gain)], [out])

# SSD-style: per 4×4 cell, 4 box regressions and 4 class logits (class 0 the background)
n1, i1 = conv("reg", "image", 3, 4, 4, 4, 0, 1.0)
n2, i2 = conv("cls", "image", 3, 4, 4, 4, 0, 6.0)
nodes = [n1, n2]
for src in ("reg", "cls"):
    nodes += [helper.make_node("Reshape", [src, "flat4"], [src + "_f"]),
              helper.make_node("Transpose", [src + "_f"], [src + "_t"], perm=[0, 2, 1])]
outs = [helper.make_tensor_value_info("reg_t", TensorProto.FLOAT, ["batch", 64, 4]),
        helper.make_tensor_value_info("cls_t", TensorProto.FLOAT, ["batch", 64, 4])]
save("ssd", nodes, i1 + i2 + [const("flat4", np.array([0, 4, 64], np.int64))], outs)
cells = [(x * 4.0, y * 4.0) for y in range(8) for x in range(8)]
anchors = np.array([[x - 2, y - 2, x + 6, y + 6] for x, y in cells], np.float32)
np.save("anchors.npy", anchors)

# a WordPiece tokenizer (Hugging Face tokenizer.json) with a small vocabulary, for bert_tiny
import json
words = ("the a an of to and in is it for on with as was at by be this that from or are not have has one two three "
         "cat dog sat mat ran fast slow red blue green house car tree river sun moon star big small new old good bad "
         "compile kernel fusion graph tensor model").split()
pieces = ["##s", "##ed", "##ing", "##er", "##ly"]
vocab = {t: i for i, t in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]"] + words + pieces + list("abcdefghijklmnopqrstuvwxyz") + ["##" + c for c in "abcdefghijklmnopqrstuvwxyz"])}
special = [{"id": i, "content": t, "single_word": False, "lstrip": False, "rstrip": False, "normalized": False, "special": True}
           for t, i in vocab.items() if t.startswith("[")]
tok = {
    "version": "1.0", "truncation": None, "padding": None, "added_tokens": special,
    "normalizer": {"type": "BertNormalizer", "clean_text": True, "handle_chinese_chars": True, "strip_accents": None, "lowercase": True},
    "pre_tokenizer": {"type": "BertPreTokenizer"},
    "post_processor": {"type": "BertProcessing", "sep": ["[SEP]", 3], "cls": ["[CLS]", 2]},
    "decoder": {"type": "WordPiece", "prefix": "##", "cleanup": True},
    "model": {"type": "WordPiece", "unk_token": "[UNK]", "continuing_subword_prefix": "##", "max_input_chars_per_word": 100, "vocab": vocab},
}
with open("tokenizer.json", "w") as f:
    json.dump(tok, f, indent=1)
