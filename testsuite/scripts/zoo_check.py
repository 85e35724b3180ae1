"""Import and interpret the architectures the foundation issue names, against onnxruntime.

    python3 zoo_check.py XFORGE_BINARY WORKDIR [NAME ...]

Exports each model with random weights (nothing is downloaded; torch, torchvision,
transformers and, for YOLOv8, ultralytics must be installed), runs it through `xforge run --backend interp` and through
onnxruntime on the same random input, and prints one line per model: relative L2 of each output
(or the error). Detection heads get score thresholds of 0 so their outputs are not empty.
"""
import os
import re
import subprocess
import sys
import time

import numpy as np
import torch
import torchvision

torch.manual_seed(0)
tv = torchvision.models


class Tokens(torch.nn.Module):
    def __init__(self, m):
        super().__init__()
        self.m = m

    def forward(self, ids):
        # an explicit mask keeps newer transformers off `aten::diff`, which opset 17 lacks
        mask = torch.ones_like(ids)
        return self.m(input_ids=ids, attention_mask=mask, use_cache=False, return_dict=True).last_hidden_state


class Pixels(torch.nn.Module):
    def __init__(self, m):
        super().__init__()
        self.m = m

    def forward(self, x):
        return self.m(pixel_values=x, return_dict=True).last_hidden_state


class Seg(torch.nn.Module):
    def __init__(self, m):
        super().__init__()
        self.m = m

    def forward(self, x):
        return self.m(x)["out"]


class Det(torch.nn.Module):
    def __init__(self, m):
        super().__init__()
        self.m = m

    def forward(self, x):
        o = self.m([x[0]])[0]
        return o["boxes"], o["scores"], o["labels"]


def img(s=224):
    return torch.randn(1, 3, s, s)


def vit_b_16():
    m = tv.vit_b_16()
    # torchvision zero-initializes the head: randomize it so the output can differ
    torch.nn.init.normal_(m.heads.head.weight, std=0.02)
    return m, img()


def bert():
    from transformers import BertConfig, BertModel
    return Tokens(BertModel(BertConfig(hidden_size=128, num_hidden_layers=2, num_attention_heads=2, intermediate_size=512, vocab_size=1000))), torch.randint(0, 1000, (1, 16))


def gpt2():
    from transformers import GPT2Config, GPT2Model
    return Tokens(GPT2Model(GPT2Config(n_embd=128, n_layer=2, n_head=2, vocab_size=1000, n_positions=64))), torch.randint(0, 1000, (1, 16))


def hf_vit():
    from transformers import ViTConfig, ViTModel
    return Pixels(ViTModel(ViTConfig(hidden_size=128, num_hidden_layers=2, num_attention_heads=2, intermediate_size=256, image_size=64, patch_size=16))), torch.randn(1, 3, 64, 64)


class First(torch.nn.Module):
    def __init__(self, m):
        super().__init__()
        self.m = m

    def forward(self, x):
        y = self.m(x)
        return y[0] if isinstance(y, (tuple, list)) else y


def yolov8n():
    os.environ.setdefault("YOLO_OFFLINE", "1")
    from ultralytics.nn.tasks import DetectionModel
    return First(DetectionModel("yolov8n.yaml", verbose=False)), img(320)


MODELS = {
    "resnet50": lambda: (tv.resnet50(), img()),
    "mobilenet_v2": lambda: (tv.mobilenet_v2(), img()),
    "mobilenet_v3_large": lambda: (tv.mobilenet_v3_large(), img()),
    "efficientnet_b0": lambda: (tv.efficientnet_b0(), img()),
    "shufflenet_v2_x1_0": lambda: (tv.shufflenet_v2_x1_0(), img()),
    "squeezenet1_1": lambda: (tv.squeezenet1_1(), img()),
    "mnasnet0_5": lambda: (tv.mnasnet0_5(), img()),
    "vit_b_16": vit_b_16,
    "deeplabv3_mobilenet_v3_large": lambda: (Seg(tv.segmentation.deeplabv3_mobilenet_v3_large(weights_backbone=None)), img(256)),
    "lraspp_mobilenet_v3_large": lambda: (Seg(tv.segmentation.lraspp_mobilenet_v3_large(weights_backbone=None)), img(256)),
    "fcn_resnet50": lambda: (Seg(tv.segmentation.fcn_resnet50(weights_backbone=None)), img(256)),
    "ssdlite320_mobilenet_v3_large": lambda: (Det(tv.detection.ssdlite320_mobilenet_v3_large(weights_backbone=None, score_thresh=0.0)), img(320)),
    "retinanet_resnet50_fpn": lambda: (Det(tv.detection.retinanet_resnet50_fpn(weights_backbone=None, score_thresh=0.0, min_size=320, max_size=320)), img(320)),
    "fasterrcnn_mobilenet_v3_large_320_fpn": lambda: (Det(tv.detection.fasterrcnn_mobilenet_v3_large_320_fpn(weights_backbone=None, box_score_thresh=0.0)), img(320)),
    "bert": bert,
    "gpt2": gpt2,
    "hf_vit": hf_vit,
    "yolov8n": yolov8n,
}


def rel_l2(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape:
        return f"shape {a.shape} vs {b.shape}"
    d = np.linalg.norm(b)
    return float(np.linalg.norm(a - b) / d) if d else float(np.linalg.norm(a - b))


def check(xforge, work, name):
    import onnxruntime as ort
    model, x = MODELS[name]()
    model.eval()
    path = os.path.join(work, name + ".onnx")
    torch.onnx.export(model, (x,), path, opset_version=17, dynamo=False, input_names=["input"], do_constant_folding=True)
    inp = os.path.join(work, name + "_in.npy")
    np.save(inp, x.numpy())
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    want = sess.run(names, {"input": x.numpy()})
    out = os.path.join(work, name + "_out")
    t = time.time()
    r = subprocess.run([xforge, "run", path, "--input", f"input={inp}", "--output-dir", out], capture_output=True, text=True)
    secs = time.time() - t
    if r.returncode != 0:
        return f"{name}: xforge exit {r.returncode}: {r.stderr.strip()[:300]}"
    errs = []
    gots = [np.load(os.path.join(out, re.sub(r"[^A-Za-z0-9._-]", "_", n) + ".npy")) for n in names]
    if isinstance(model, Det) and all(g.shape == w.shape for g, w in zip(gots, want)):
        # detections with near-equal scores may swap order: compare in a canonical order
        def canon(boxes, scores, labels):
            keys = [np.round(boxes[:, k], 2) for k in (3, 2, 1, 0)]
            o = np.lexsort(keys + [np.round(scores, 4), labels])
            return boxes[o], scores[o], labels[o]
        gots, want = canon(*gots), canon(*want)
    for n, got, w in zip(names, gots, want):
        errs.append(f"{n}{list(w.shape)} {rel_l2(got, w) if got.dtype.kind == 'f' else ('exact' if np.array_equal(got, w) else 'DIFFERS')}")
    return f"{name}: {secs:.1f}s  " + "  ".join(str(e) for e in errs)


if __name__ == "__main__":
    xforge, work = sys.argv[1], sys.argv[2]
    os.makedirs(work, exist_ok=True)
    for n in sys.argv[3:] or list(MODELS):
        try:
            print(check(xforge, work, n), flush=True)
        except Exception as e:  # report and go on to the next model
            print(f"{n}: export or reference failed: {type(e).__name__}: {str(e)[:300]}", flush=True)
