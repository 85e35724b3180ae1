"""The zoo's task wrappers against the reference pipelines (issue 17, proof point 1): PIL-decoded
images through torchvision's transforms, the PyTorch model and torchvision's own post-processing
(the detectors' `postprocess_detections` + `transform.postprocess`, i.e. `model([image])`;
ultralytics' `non_max_suppression` logic written with `torchvision.ops.batched_nms` for the
YOLOv8-shaped model), against `xforge zoo … --json` on the same JPEG files.

    python3 zoo_reference.py all XFORGE WORK DEV... [--dry] [--only NAME,...]
        DEV: interp | gpu:fp32 | gpu:fp16. Prepares WORK (images, ONNX models, task.toml,
        reference results), runs `XFORGE zoo` per model and device, prints one row per
        model/device and exits 1 on any FAIL.
    python3 zoo_reference.py prepare XFORGE WORK [--dry] [--only …]
    python3 zoo_reference.py run XFORGE WORK DEV...
    python3 zoo_reference.py compare WORK DEV...

--dry: small images and model inputs, for the interpreter on a machine without a GPU.

Random weights, nothing downloaded. BatchNorm statistics are taken from random images (as
zoo_models.py's `calibrated`), so activations neither vanish nor overflow; heads are scaled so
scores spread (see `spread_*`, printed). Every deviation from the models' standard pipelines is
printed in the NOTES at the start of a run.
"""
import json
import math
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor, ProcessPoolExecutor

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision
from torchvision.transforms.v2 import functional as TF

tv = torchvision.models

NOTES = [
    "images: synthetic JPEGs (PIL, quality 90), decoded by PIL for the reference and by the `image` crate in xforge",
    "resizes are bilinear without antialiasing in both (the zoo has no antialiased resize; torchvision's detectors "
    "do not antialias either; the classifiers' and segmenters' standard transforms do, here antialias=False)",
    "classifiers: the weights' transforms (Resize(256) + CenterCrop(224) + ImageNet normalize) on float tensors; "
    "zoo: fit = \"crop\", resize = 256",
    "ssdlite: fixed 320x320 as torchvision; score_thresh raised from 0.001 to the value printed so that its per-class "
    "top-300 candidates cut never binds (checked per image: the zoo has no top-k before its NMS); zoo: head.clip",
    "retinanet: fixed_size=(S, S) in torchvision's transform (the zoo's fixed-shape input cannot take min_size 800 "
    "keeping aspect with padding to /32); per-level top-1000 checked not to bind; zoo: head.clip",
    "yolov8: ultralytics' LetterBox geometry on image sizes where it is exact (integer scaled size, even padding), "
    "resized as float without cv2's uint8 rounding; NMS as ultralytics' non_max_suppression with multi_label=True "
    "(its val mode: every class over conf per box, as the zoo's class-aware NMS); boxes not clipped before NMS",
    "segmenters: fixed SxS stretch (the standard transform resizes the shorter side to 520 keeping aspect, which "
    "a fixed-shape ONNX input cannot), logits upsampled bilinear to the image's size, argmax",
]


def calibrate(m, size, forward=None, n=2):
    """BatchNorm running statistics from `n` random images, the rest of the weights random."""
    bns = [b for b in m.modules() if isinstance(b, nn.modules.batchnorm._BatchNorm)]
    for b in bns:
        b.reset_running_stats()
        b.momentum = None
        b.train()
    torch.manual_seed(1)
    with torch.no_grad():
        x = torch.rand(n, 3, size[0], size[1])
        (forward or m)(x)
    for b in bns:
        b.eval()
    return m


# ----------------------------------------------------------------------------------------- images
def make_images(d, sizes):
    """Smooth gradients with a few filled shapes and a little noise, saved as JPEG."""
    from PIL import Image, ImageDraw, ImageFilter
    os.makedirs(d, exist_ok=True)
    rng = np.random.default_rng(0)
    paths = []
    for i, (w, h) in enumerate(sizes):
        y, x = np.mgrid[0:h, 0:w].astype(np.float32)
        base = np.stack([
            127 + 100 * np.sin(x / w * math.pi * (1 + i) + c) * np.cos(y / h * math.pi * (2 + c)) for c in range(3)
        ], -1)
        img = Image.fromarray(np.clip(base, 0, 255).astype(np.uint8))
        dr = ImageDraw.Draw(img)
        for k in range(6):
            x0, y0 = rng.integers(0, w * 3 // 4), rng.integers(0, h * 3 // 4)
            x1, y1 = x0 + rng.integers(w // 10, w // 3), y0 + rng.integers(h // 10, h // 3)
            col = tuple(int(c) for c in rng.integers(0, 255, 3))
            [dr.ellipse, dr.rectangle][k % 2]([x0, y0, x1, y1], fill=col)
        dr.polygon([(w // 2, h // 8), (w * 7 // 8, h * 7 // 8), (w // 8, h * 3 // 4)], outline=(250, 250, 250), width=3)
        img = img.filter(ImageFilter.GaussianBlur(1))
        arr = np.asarray(img).astype(np.int16) + rng.integers(-6, 7, (h, w, 3))
        p = os.path.join(d, f"img{i}_{w}x{h}.jpg")
        Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8)).save(p, quality=90)
        paths.append(p)
    return paths


def load(path):
    """The reference's decode: PIL, RGB, float [3, H, W] in [0, 1]."""
    from PIL import Image
    a = np.asarray(Image.open(path).convert("RGB"))
    return torch.from_numpy(a.copy()).permute(2, 0, 1).float() / 255.0


class Decoded:
    """The pixels xforge decoded (written by `xforge zoo detect --out` with nothing detected), as `load`."""

    def __init__(self, mapping):
        self.mapping = mapping

    def __call__(self, path):
        from PIL import Image
        a = np.asarray(Image.open(self.mapping[path]).convert("RGB"))
        return torch.from_numpy(a.copy()).permute(2, 0, 1).float() / 255.0


def decoded_by_xforge(xforge, work, images, canvas):
    """Each image as xforge's decoder reads it: the zoo's drawing of no detections (the tiny test
    detector, score_threshold 1.0) is the decoded picture itself, PNG. Also how far PIL's is."""
    from PIL import Image
    here = os.path.dirname(os.path.abspath(__file__))
    d = os.path.join(work, "decoded")
    toml = os.path.join(work, "decode.toml")
    open(toml, "w").write(f"input_size = [32, 32]\nscore_threshold = 1.0\nmax_image_size = {toml_list(canvas)}\n")
    subprocess.run([xforge, "zoo", "detect", os.path.join(here, "../../zoo/tests/models/yolo.onnx"), *images,
                    "--config", toml, "--out", d], check=True, capture_output=True)
    mapping, diff, worst = {}, [], 0
    for k, p in enumerate(images):
        stem = os.path.splitext(os.path.basename(p))[0]
        mapping[p] = os.path.join(d, f"{k:03}_{stem}.png")
        a = np.asarray(Image.open(p).convert("RGB")).astype(int) - np.asarray(Image.open(mapping[p])).astype(int)
        diff.append((a != 0).mean())
        worst = max(worst, int(abs(a).max()))
    print(f"JPEG decoders: xforge's (image crate) and PIL's differ on {np.mean(diff):.2%} of pixel values, by at "
          f"most {worst} levels", flush=True)
    return Decoded(mapping)


def toml_list(v):
    return "[" + ", ".join(repr(float(x)) if isinstance(x, float) else str(x) for x in v) + "]"


# ---------------------------------------------------------------------------------- classifiers
def classifier(name, cfg):
    torch.manual_seed(0)
    m = {"resnet50": tv.resnet50, "mobilenet_v3_large": tv.mobilenet_v3_large}[name]()
    weights = {"resnet50": tv.ResNet50_Weights.IMAGENET1K_V1,
               "mobilenet_v3_large": tv.MobileNet_V3_Large_Weights.IMAGENET1K_V1}[name]
    t = weights.transforms(antialias=False)
    resize, crop = t.resize_size[0], t.crop_size[0]
    if cfg["dry"]:
        resize, crop = 40, 32
        t = type(t)(crop_size=crop, resize_size=resize, antialias=False)
    m.eval()
    calibrate(m, (crop, crop))
    last = m.fc if name == "resnet50" else m.classifier[-1]
    with torch.no_grad():  # spread: logits of standard deviation 2 on image 0 (top-1 ≈ 5–30%)
        gain = 2.0 / float(m(t(cfg["load"](cfg["images"][0]))[None]).std())
        last.weight.mul_(gain)
        last.bias.mul_(gain)
    m.eval()
    toml = (f"input_size = [{crop}, {crop}]\nfit = \"crop\"\nresize = {resize}\nmean = {toml_list(t.mean)}\n"
            f"std = {toml_list(t.std)}\ntop_k = 5\nmax_image_size = {toml_list(cfg['canvas'])}\n")

    def reference(paths, loader):
        out = []
        with torch.no_grad():
            for p in paths:
                x = t(loader(p))[None]
                prob = m(x).softmax(-1)[0]
                s, i = prob.topk(6)
                out.append({"index": i[:5].tolist(), "score": s[:5].tolist(), "gap": float(s[4] - s[5]),
                            "margins": (s[:5] - s[1:6]).tolist()})
        return out

    reference.torch = {"model": m, "transform": t}  # the pipeline itself, for zoo_throughput.py

    return m, torch.rand(1, 3, crop, crop), toml, reference, f"last linear layer x{gain:.3g} (logit std 2 on image 0)"


# -------------------------------------------------------------------------------- segmenters
class SegOut(nn.Module):
    def __init__(self, m):
        super().__init__()
        self.m = m

    def forward(self, x):
        return self.m(x)["out"]


def segmenter(name, cfg):
    torch.manual_seed(0)
    m = {"deeplabv3_mobilenet_v3_large": tv.segmentation.deeplabv3_mobilenet_v3_large,
         "lraspp_mobilenet_v3_large": tv.segmentation.lraspp_mobilenet_v3_large}[name](weights_backbone=None)
    s = 64 if cfg["dry"] else 384
    m = SegOut(m).eval()
    calibrate(m, (s, s))
    mean, std = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
    toml = (f"input_size = [{s}, {s}]\nmean = {toml_list(mean)}\nstd = {toml_list(std)}\n"
            f"max_image_size = {toml_list(cfg['canvas'])}\n")

    def reference(paths, loader):
        out = []
        with torch.no_grad():
            for p in paths:
                img = loader(p)
                h, w = img.shape[1:]
                x = TF.resize(img, [s, s], interpolation=TF.InterpolationMode.BILINEAR, antialias=False)
                x = TF.normalize(x, mean, std)[None]
                logits = F.interpolate(m(x), size=(h, w), mode="bilinear", align_corners=False)[0]
                top2 = logits.topk(2, dim=0).values
                out.append({"mask": logits.argmax(0).numpy().astype(np.int32),
                            "margin": (top2[0] - top2[1]).numpy()})
        return out

    return m, torch.rand(1, 3, s, s), toml, reference, "none (BatchNorm statistics from random images)"


# ---------------------------------------------------------------------------- torchvision detectors
class RawHead(nn.Module):
    """A torchvision single-stage detector's raw outputs on a pre-processed batch."""

    def __init__(self, m):
        super().__init__()
        self.m = m

    def forward(self, x):
        f = self.m.backbone(x)
        f = list(f.values()) if isinstance(f, dict) else f
        h = self.m.head(f)
        return h["bbox_regression"], h["cls_logits"]


def tv_detector(name, cfg):
    torch.manual_seed(0)
    if name == "ssdlite320_mobilenet_v3_large":
        s = 96 if cfg["dry"] else 320
        m = tv.detection.ssdlite320_mobilenet_v3_large(weights_backbone=None)
        m.transform.fixed_size = (s, s)
        m.transform.min_size, m.transform.max_size = (s,), s
        scores = "softmax"
        cls = m.head.classification_head.module_list
        spread = 4.0
    else:
        s = 64 if cfg["dry"] else 512
        m = tv.detection.retinanet_resnet50_fpn(weights_backbone=None, fixed_size=(s, s))
        scores = "sigmoid"
        cls = [m.head.classification_head.cls_logits]
        spread = 1.0
    m.eval()
    raw = RawHead(m).eval()
    mean, std = m.transform.image_mean, m.transform.image_std
    calibrate(m, (s, s), forward=lambda x: raw((x - torch.tensor(mean)[:, None, None]) / torch.tensor(std)[:, None, None]))
    # spread: the class logits' last layers scaled so that a few hundred boxes pass the threshold
    with torch.no_grad():
        for c in cls:
            last = c[-1] if isinstance(c, nn.Sequential) else c
            last = last if isinstance(last, nn.Conv2d) else [k for k in last.modules() if isinstance(k, nn.Conv2d)][-1]
            last.weight.mul_(spread)
    m.eval()
    # the threshold (SSD) or the class bias (RetinaNet) set on the first image so that a few hundred
    # candidates pass: SSD's most per class stays under its top-300, RetinaNet's first level under 1000
    with torch.no_grad():
        images, _ = m.transform([cfg["load"](cfg["images"][0])])
        _, logits = raw(images.tensors)
        if scores == "softmax":
            per_class = logits[0].softmax(-1)[:, 1:].sort(0, descending=True).values
            m.score_thresh = round(float(per_class[min(100, per_class.shape[0] - 1)].max()), 3)
            how = f"class logits' last convs x{spread}, score_thresh {m.score_thresh} (100 per class at most on image 0)"
        else:
            first = logits[0][: images.tensors.shape[-1] ** 2 // 64 * 9].flatten()
            v = float(first.sort(descending=True).values[min(400, first.numel() - 1)])
            shift = math.log(m.score_thresh / (1 - m.score_thresh)) - v
            cls[0].bias.add_(shift)
            how = f"class bias shifted by {shift:+.2f} (400 candidates on image 0's first level)"
    x = torch.rand(1, 3, s, s)
    with torch.no_grad():
        images, _ = m.transform([x[0]])
        feats = list(m.backbone(images.tensors).values())
        anchors = m.anchor_generator(images, feats)[0].numpy().astype(np.float32)
    weights = list(m.box_coder.weights)
    toml = (f"input_size = [{s}, {s}]\nmean = {toml_list(mean)}\nstd = {toml_list(std)}\n"
            f"score_threshold = {m.score_thresh}\niou_threshold = {m.nms_thresh}\n"
            f"max_detections = {m.detections_per_img}\nmax_per_class = {m.detections_per_img}\n"
            f"max_image_size = {toml_list(cfg['canvas'])}\n"
            f"[head]\nkind = \"anchors\"\nanchors = \"anchors.npy\"\nweights = {toml_list(weights)}\n"
            f"scores = \"{scores}\"\nclip = true\n")

    def reference(paths, loader):
        out = []
        with torch.no_grad():
            for p in paths:
                img = loader(p)
                r = m([img])[0]
                # whether torchvision's top-k before its NMS cut anything (the zoo has none)
                images, _ = m.transform([img])
                _, logits = raw(images.tensors)
                if scores == "softmax":
                    pr = logits[0].softmax(-1)[:, 1:]
                    most = int((pr > m.score_thresh).sum(0).max())
                    binding = most > m.topk_candidates
                else:
                    pr = logits[0].sigmoid()
                    sizes = [f.shape[-2] * f.shape[-1] * m.anchor_generator.num_anchors_per_location()[0]
                             for f in list(m.backbone(images.tensors).values())]
                    counts = [int((lv > m.score_thresh).sum()) for lv in pr.split(sizes, 0)]
                    most = max(counts)
                    binding = most > m.topk_candidates
                out.append({"boxes": r["boxes"].tolist(), "scores": r["scores"].tolist(),
                            "labels": r["labels"].tolist(), "topk_binding": bool(binding), "most": most})
        return out

    extra = {"anchors.npy": anchors}
    reference.torch = {"model": m}  # the whole torchvision detector (transform + postprocess), for zoo_throughput.py
    return raw, images.tensors, toml, reference, how, extra


# ------------------------------------------------------------------------------------- YOLOv8n
class Conv(nn.Module):
    def __init__(self, c1, c2, k=1, s=1):
        super().__init__()
        self.conv = nn.Conv2d(c1, c2, k, s, k // 2, bias=False)
        self.bn = nn.BatchNorm2d(c2, eps=1e-3, momentum=0.03)
        self.act = nn.SiLU()

    def forward(self, x):
        return self.act(self.bn(self.conv(x)))


class Bottleneck(nn.Module):
    def __init__(self, c, shortcut):
        super().__init__()
        self.cv1, self.cv2, self.add = Conv(c, c, 3), Conv(c, c, 3), shortcut

    def forward(self, x):
        y = self.cv2(self.cv1(x))
        return x + y if self.add else y


class C2f(nn.Module):
    def __init__(self, c1, c2, n=1, shortcut=False):
        super().__init__()
        self.c = c2 // 2
        self.cv1 = Conv(c1, 2 * self.c, 1)
        self.cv2 = Conv((2 + n) * self.c, c2, 1)
        self.m = nn.ModuleList(Bottleneck(self.c, shortcut) for _ in range(n))

    def forward(self, x):
        y = list(self.cv1(x).chunk(2, 1))
        y.extend(m(y[-1]) for m in self.m)
        return self.cv2(torch.cat(y, 1))


class SPPF(nn.Module):
    def __init__(self, c1, c2, k=5):
        super().__init__()
        c_ = c1 // 2
        self.cv1, self.cv2 = Conv(c1, c_, 1), Conv(c_ * 4, c2, 1)
        self.m = nn.MaxPool2d(k, 1, k // 2)

    def forward(self, x):
        y = [self.cv1(x)]
        y.extend(self.m(y[-1]) for _ in range(3))
        return self.cv2(torch.cat(y, 1))


class DFL(nn.Module):
    def __init__(self, c1=16):
        super().__init__()
        self.conv = nn.Conv2d(c1, 1, 1, bias=False).requires_grad_(False)
        self.conv.weight.data[:] = torch.arange(c1, dtype=torch.float).view(1, c1, 1, 1)
        self.c1 = c1

    def forward(self, x):
        b, _, a = x.shape
        return self.conv(x.view(b, 4, self.c1, a).transpose(2, 1).softmax(1)).view(b, 4, a)


class YOLOv8n(nn.Module):
    """YOLOv8n's layout (width 0.25, depth 0.33: C2f, SPPF, PAN neck) with its Detect head: DFL box
    distributions (reg_max 16) and sigmoid class scores; output [N, 4 + nc, anchors] with
    (cx, cy, w, h) in input pixels, as ultralytics exports it."""

    def __init__(self, nc=80):
        super().__init__()
        self.nc, self.reg_max, self.stride = nc, 16, [8, 16, 32]
        self.b = nn.ModuleList([Conv(3, 16, 3, 2), Conv(16, 32, 3, 2), C2f(32, 32, 1, True), Conv(32, 64, 3, 2),
                                C2f(64, 64, 2, True), Conv(64, 128, 3, 2), C2f(128, 128, 2, True),
                                Conv(128, 256, 3, 2), C2f(256, 256, 1, True), SPPF(256, 256)])
        self.n12, self.n15 = C2f(384, 128), C2f(192, 64)
        self.d16, self.n18, self.d19, self.n21 = Conv(64, 64, 3, 2), C2f(192, 128), Conv(128, 128, 3, 2), C2f(384, 256)
        ch, c2, c3 = (64, 128, 256), 64, 80
        self.cv2 = nn.ModuleList(nn.Sequential(Conv(x, c2, 3), Conv(c2, c2, 3), nn.Conv2d(c2, 4 * 16, 1)) for x in ch)
        self.cv3 = nn.ModuleList(nn.Sequential(Conv(x, c3, 3), Conv(c3, c3, 3), nn.Conv2d(c3, nc, 1)) for x in ch)
        self.dfl = DFL(16)

    def forward(self, x):
        y = []
        for i, m in enumerate(self.b):
            x = m(x)
            y.append(x)
        up = lambda t: F.interpolate(t, scale_factor=2.0, mode="nearest")
        p12 = self.n12(torch.cat([up(y[9]), y[6]], 1))
        p3 = self.n15(torch.cat([up(p12), y[4]], 1))
        p4 = self.n18(torch.cat([self.d16(p3), p12], 1))
        p5 = self.n21(torch.cat([self.d19(p4), y[9]], 1))
        xs = [torch.cat([self.cv2[i](p), self.cv3[i](p)], 1) for i, p in enumerate([p3, p4, p5])]
        b = xs[0].shape[0]
        cat = torch.cat([t.view(b, 4 * 16 + self.nc, -1) for t in xs], 2)
        # make_anchors(offset 0.5) from the (traced, constant) feature sizes
        pts, strides = [], []
        for t, s in zip(xs, self.stride):
            h, w = t.shape[2:]
            sy, sx = torch.meshgrid(torch.arange(h, dtype=torch.float) + 0.5,
                                    torch.arange(w, dtype=torch.float) + 0.5, indexing="ij")
            pts.append(torch.stack((sx, sy), -1).view(-1, 2))
            strides.append(torch.full((h * w, 1), float(s)))
        anchors, strides = torch.cat(pts).transpose(0, 1)[None], torch.cat(strides).transpose(0, 1)
        box, cls = cat.split((4 * 16, self.nc), 1)
        lt, rb = self.dfl(box).chunk(2, 1)
        x1y1, x2y2 = anchors - lt, anchors + rb
        dbox = torch.cat(((x1y1 + x2y2) / 2, x2y2 - x1y1), 1) * strides
        return torch.cat((dbox, cls.sigmoid()), 1)


def xywh2xyxy(x):
    y = x.clone()
    y[..., 0], y[..., 1] = x[..., 0] - x[..., 2] / 2, x[..., 1] - x[..., 3] / 2
    y[..., 2], y[..., 3] = x[..., 0] + x[..., 2] / 2, x[..., 1] + x[..., 3] / 2
    return y


def ultralytics_nms(pred, conf_thres, iou_thres, max_det=300, max_nms=30000):
    """ultralytics.utils.ops.non_max_suppression (multi_label=True, agnostic=False, no masks) with
    torchvision.ops.batched_nms in place of its class-offset trick (the same thing)."""
    nc = pred.shape[1] - 4
    xc = pred[:, 4:].amax(1) > conf_thres
    pred = pred.transpose(-1, -2)
    out = []
    for xi, x in enumerate(pred):
        x = x[xc[xi]]
        box, cls = xywh2xyxy(x[:, :4]), x[:, 4:]
        i, j = torch.where(cls > conf_thres)
        x = torch.cat((box[i], x[i, 4 + j, None], j[:, None].float()), 1)
        if x.shape[0] > max_nms:
            x = x[x[:, 4].argsort(descending=True)[:max_nms]]
        keep = torchvision.ops.batched_nms(x[:, :4], x[:, 4], x[:, 5].long(), iou_thres)[:max_det]
        out.append(x[keep])
    return out


def letterbox(img, s):
    """ultralytics' LetterBox (center, scaleup, pad 114) on a float [3, H, W] image in [0, 1]."""
    h, w = img.shape[1:]
    r = min(s / h, s / w)
    nw, nh = int(round(w * r)), int(round(h * r))
    dw, dh = (s - nw) / 2, (s - nh) / 2
    if (nw, nh) != (w, h):
        img = F.interpolate(img[None], size=(nh, nw), mode="bilinear", align_corners=False)[0]
    top, bottom, left, right = int(round(dh - 0.1)), int(round(dh + 0.1)), int(round(dw - 0.1)), int(round(dw + 0.1))
    return F.pad(img, (left, right, top, bottom), value=114 / 255.0)


def scale_boxes(s, boxes, h, w):
    gain = min(s / h, s / w)
    pw, ph = round((s - w * gain) / 2 - 0.1), round((s - h * gain) / 2 - 0.1)
    boxes = boxes.clone()
    boxes[:, [0, 2]] -= pw
    boxes[:, [1, 3]] -= ph
    boxes[:, :4] /= gain
    boxes[:, [0, 2]] = boxes[:, [0, 2]].clamp(0, w)
    boxes[:, [1, 3]] = boxes[:, [1, 3]].clamp(0, h)
    return boxes


def yolo(name, cfg):
    torch.manual_seed(0)
    s = 64 if cfg["dry"] else 320
    m = YOLOv8n().eval()
    calibrate(m, (s, s))
    conf, iou = 0.25, 0.7
    x0 = letterbox(cfg["load"](cfg["images"][0]), s)[None]
    with torch.no_grad():
        # random convs give the head's logits a standard deviation of ~200 (saturated DFL bins and
        # scores): class logits brought to 1.5 and box-bin logits to 2 on image 0, then the class
        # bias shifted so that 300 (anchor, class) pairs pass conf there
        for heads, want in ((m.cv3, 1.5), (m.cv2, 2.0)):
            outs = []
            hooks = [h[-1].register_forward_hook(lambda mod, i, o: outs.append(o)) for h in heads]
            m(x0)
            for h in hooks:
                h.remove()
            g = want / float(torch.cat([o.flatten() for o in outs]).std())
            for h in heads:
                h[-1].weight.mul_(g)
                h[-1].bias.mul_(g)
        p = m(x0)[0, 4:].flatten().clamp(1e-7, 1 - 1e-7)
        v = float((p.log() - (-p).log1p()).sort(descending=True).values[300])
        shift = math.log(conf / (1 - conf)) - v
        for seq in m.cv3:
            seq[-1].bias.add_(shift)
    m.eval()
    toml = (f"input_size = [{s}, {s}]\nfit = \"letterbox\"\npad_value = 114.0\nmean = [0.0, 0.0, 0.0]\n"
            f"std = [1.0, 1.0, 1.0]\nscore_threshold = {conf}\niou_threshold = {iou}\nmax_detections = 300\n"
            f"max_per_class = 300\nmax_image_size = {toml_list(cfg['canvas'])}\n[head]\nkind = \"yolo\"\n")

    def reference(paths, loader):
        out = []
        with torch.no_grad():
            for p in paths:
                img = loader(p)
                h, w = img.shape[1:]
                det = ultralytics_nms(m(letterbox(img, s)[None]), conf, iou)[0]
                boxes = scale_boxes(s, det[:, :4], h, w)
                out.append({"boxes": boxes.tolist(), "scores": det[:, 4].tolist(), "labels": det[:, 5].long().tolist(),
                            "topk_binding": False, "most": int(det.shape[0])})
        return out

    return m, torch.rand(1, 3, s, s), toml, reference, f"DFL head (reg_max 16); cls bias {shift:+.2f} (300 over conf on image 0)"


# ---------------------------------------------------------------------------------------- BERT
SEQ = 32
TEXTS = [
    "the cat sat on the mat",
    "a red car ran fast in the rain",
    "It was the best of times, it was the worst of times.",
    "zebra quokka xylophone",
    "the",
]


class PlainBert(nn.Module):
    """A BERT encoder in plain torch with Hugging Face's parameter names (absolute positions, post-LN,
    GELU (erf), LayerNorm eps 1e-12): the reference where transformers is not installed."""

    def __init__(self, vocab, hidden, layers, heads, inter, positions=128):
        super().__init__()
        self.heads = heads
        self.embeddings = nn.Module()
        e = self.embeddings
        e.word_embeddings, e.position_embeddings = nn.Embedding(vocab, hidden), nn.Embedding(positions, hidden)
        e.token_type_embeddings, e.LayerNorm = nn.Embedding(2, hidden), nn.LayerNorm(hidden, eps=1e-12)
        self.layers = nn.ModuleList()
        for _ in range(layers):
            l = nn.Module()
            l.q, l.k, l.v, l.o = (nn.Linear(hidden, hidden) for _ in range(4))
            l.ln1, l.ln2 = nn.LayerNorm(hidden, eps=1e-12), nn.LayerNorm(hidden, eps=1e-12)
            l.up, l.down = nn.Linear(hidden, inter), nn.Linear(inter, hidden)
            self.layers.append(l)
        for p in self.parameters():
            if p.dim() > 1:
                nn.init.normal_(p, std=0.02)

    def forward(self, input_ids, attention_mask, token_type_ids):
        e = self.embeddings
        pos = torch.arange(input_ids.shape[1])[None]
        x = e.LayerNorm(e.word_embeddings(input_ids) + e.position_embeddings(pos) + e.token_type_embeddings(token_type_ids))
        bias = (1.0 - attention_mask[:, None, None, :].float()) * torch.finfo(torch.float32).min
        b, s, d = x.shape
        split = lambda t: t.view(b, s, self.heads, d // self.heads).transpose(1, 2)
        for l in self.layers:
            q, k, v = split(l.q(x)), split(l.k(x)), split(l.v(x))
            a = (q @ k.transpose(-1, -2) / math.sqrt(d // self.heads) + bias).softmax(-1) @ v
            x = l.ln1(x + l.o(a.transpose(1, 2).reshape(b, s, d)))
            x = l.ln2(x + l.down(F.gelu(l.up(x))))
        return x


class HFBert(nn.Module):
    def __init__(self, m):
        super().__init__()
        self.m = m

    def forward(self, input_ids, attention_mask, token_type_ids):
        return self.m(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids,
                      return_dict=True).last_hidden_state


def wordpiece(tok_json):
    """The tokenizer.json's encoding: `tokenizers` when installed, else BERT's normalizer, pre-tokenizer
    and WordPiece written out (lowercase, split on whitespace and punctuation, longest match first)."""
    try:
        from tokenizers import Tokenizer
        t = Tokenizer.from_file(tok_json)
        return (lambda text: t.encode(text).ids), "tokenizers"
    except ImportError:
        pass
    import unicodedata
    spec = json.load(open(tok_json))
    vocab, unk = spec["model"]["vocab"], spec["model"]["unk_token"]
    cls, sep = spec["post_processor"]["cls"][1], spec["post_processor"]["sep"][1]

    def encode(text):
        words, cur = [], ""
        for ch in text.lower():
            if ch.isspace():
                words, cur = words + ([cur] if cur else []), ""
            elif unicodedata.category(ch).startswith("P") or (33 <= ord(ch) <= 47 or 58 <= ord(ch) <= 64):
                words, cur = words + ([cur] if cur else []) + [ch], ""
            else:
                cur += ch
        words += [cur] if cur else []
        ids = [cls]
        for w in words:
            pieces, start = [], 0
            while start < len(w):
                end = len(w)
                while end > start and (("##" if start else "") + w[start:end]) not in vocab:
                    end -= 1
                if end == start:
                    pieces = [vocab[unk]]
                    break
                pieces.append(vocab[("##" if start else "") + w[start:end]])
                start = end
            ids += pieces
        return ids + [sep]

    return encode, "plain python WordPiece"


def bert(name, cfg):
    torch.manual_seed(0)
    tok_json = cfg["tokenizer"]
    vocab = max(json.load(open(tok_json))["model"]["vocab"].values()) + 1
    try:
        if cfg.get("plain_bert"):
            raise ImportError("transformers' BertModel did not export")
        from transformers import BertConfig, BertModel
        c = BertConfig(vocab_size=vocab, hidden_size=128, num_hidden_layers=2, num_attention_heads=4,
                       intermediate_size=512, max_position_embeddings=128, attn_implementation="eager")
        m, kind = HFBert(BertModel(c, add_pooling_layer=False)), "transformers BertModel"
    except ImportError:
        m, kind = PlainBert(vocab, 128, 2, 4, 512), "plain-torch BERT (transformers not installed or not exported)"
    m.eval()
    encode, how = wordpiece(tok_json)
    toml = f"tokenizer = \"{os.path.abspath(tok_json)}\"\n"

    def reference(texts, loader):
        out = []
        with torch.no_grad():
            # the ONNX model takes 32 tokens (fixed): the zoo pads every text to them, masked
            ids = [encode(t)[:SEQ] for t in texts]
            s = SEQ
            x = torch.zeros(len(ids), s, dtype=torch.long)
            mask = torch.zeros(len(ids), s, dtype=torch.long)
            for k, i in enumerate(ids):
                x[k, :len(i)], mask[k, :len(i)] = torch.tensor(i), 1
            h = m(x, mask, torch.zeros_like(x))
            mf = mask[..., None].float()
            e = F.normalize((h * mf).sum(1) / mf.sum(1).clamp(min=1e-9), dim=-1)
            out = [{"embedding": v.tolist(), "tokens": len(i)} for v, i in zip(e, ids)]
        return out

    ex = torch.tensor([encode(TEXTS[0]) + [0] * (SEQ - len(encode(TEXTS[0])))])
    return m, ex, toml, reference, f"{kind}, {how}"


# ---------------------------------------------------------------------------------------- plan
MODELS = {
    "resnet50": ("classify", classifier),
    "mobilenet_v3_large": ("classify", classifier),
    "ssdlite320_mobilenet_v3_large": ("detect", tv_detector),
    "retinanet_resnet50_fpn": ("detect", tv_detector),
    "yolov8n": ("detect", yolo),
    "deeplabv3_mobilenet_v3_large": ("segment", segmenter),
    "lraspp_mobilenet_v3_large": ("segment", segmenter),
    "bert": ("embed", bert),
}


def prepare_one(name, work, cfg):
    torch.set_num_threads(cfg["threads"])
    t0 = time.time()
    task, make = MODELS[name]
    built = make(name, cfg)
    m, example, toml, reference, spread = built[:5]
    extra = built[5] if len(built) > 5 else {}
    d = os.path.join(work, name)
    os.makedirs(d, exist_ok=True)
    for k, v in extra.items():
        np.save(os.path.join(d, k), v)
    open(os.path.join(d, "task.toml"), "w").write(toml)
    path = os.path.join(d, "model.onnx")
    if task == "embed":
        def export(m, ids):
            args = (ids, (ids != 0).long(), torch.zeros_like(ids))
            torch.onnx.export(m, args, path, opset_version=17, dynamo=False,
                              input_names=["input_ids", "attention_mask", "token_type_ids"], output_names=["hidden"],
                              dynamic_axes={k: {0: "batch"} for k in ["input_ids", "attention_mask", "token_type_ids"]})
        try:
            export(m, example)
        except Exception as e:
            print(f"{name}: export failed ({type(e).__name__}: {str(e)[:200]}), plain-torch BERT instead", flush=True)
            m, example, toml, reference, spread = make(name, {**cfg, "plain_bert": True})
            export(m, example)
        inputs = TEXTS
    else:
        names = ["boxes", "logits"] if task == "detect" and name != "yolov8n" else ["out"]
        # zoo_throughput.py: a symbolic batch, so one model serves every batch size
        axes = {k: {0: "batch"} for k in ["image", *names]} if cfg.get("dynamic_batch") else None
        with torch.no_grad():
            torch.onnx.export(m, (example,), path, opset_version=17, dynamo=False, input_names=["image"],
                              output_names=names, do_constant_folding=True, dynamic_axes=axes)
        if axes:  # the exporter names data-independent output sizes symbolically too: fix all but the batch
            import onnx
            with torch.no_grad():
                outs = m(example)
            outs = outs if isinstance(outs, (tuple, list)) else [outs]
            g = onnx.load(path)
            for o, t in zip(g.graph.output, outs):
                for k, dim in enumerate(o.type.tensor_type.shape.dim):
                    if k > 0:
                        dim.Clear()
                        dim.dim_value = t.shape[k]
            onnx.save(g, path)
        inputs = cfg["images"]
    # the reference twice: on the pixels xforge decoded (the wrappers' proof) and on PIL's decode
    refs = {"ref": reference(inputs, cfg["load_same"]), "ref_pil": reference(inputs, load)}
    if task == "segment":
        for key, ref in refs.items():
            for k, r in enumerate(ref):
                np.save(os.path.join(d, f"{key}_mask{k}.npy"), r.pop("mask"))
                np.save(os.path.join(d, f"{key}_margin{k}.npy"), r.pop("margin"))
    json.dump({"task": task, "inputs": inputs, "spread": spread, **refs}, open(os.path.join(d, "ref.json"), "w"))
    return f"{name}: prepared in {time.time() - t0:.1f} s ({spread})"


def prepare(xforge, work, dry, only, **extra):
    """Writes WORK (images, and per model its ONNX file, task.toml, reference results); returns the
    configuration the model builders take (`extra` added to it)."""
    os.makedirs(work, exist_ok=True)
    sizes = [(64, 48), (48, 64), (40, 40)] if dry else [(640, 480), (480, 640), (800, 600), (500, 375), (400, 400)]
    images = make_images(os.path.join(work, "images"), sizes)
    canvas = [max(h for w, h in sizes), max(w for w, h in sizes)]
    here = os.path.dirname(os.path.abspath(__file__))
    cfg = {"dry": dry, "images": images, "canvas": canvas, "load": load,
           "load_same": decoded_by_xforge(xforge, work, images, canvas),
           "tokenizer": os.path.join(here, "../../zoo/tests/models/tokenizer.json"),
           "threads": 2 if dry else 4, **extra}
    names = only or list(MODELS)
    workers = 1 if dry else 4
    print("NOTES:\n- " + "\n- ".join(NOTES), flush=True)
    with ProcessPoolExecutor(workers) as ex:
        futs = {n: ex.submit(prepare_one, n, work, cfg) for n in names}
        for n, f in futs.items():
            try:
                print(f.result(), flush=True)
            except Exception as e:
                print(f"{n}: prepare FAILED: {type(e).__name__}: {str(e)[:400]}", flush=True)
    json.dump({"names": names, "images": images}, open(os.path.join(work, "plan.json"), "w"))
    return cfg


# ----------------------------------------------------------------------------------------- run
def dev_tag(dev):
    return dev.replace(":", "_")


def run_one(xforge, work, name, dev):
    d = os.path.join(work, name)
    if not os.path.exists(os.path.join(d, "ref.json")):
        return f"{name} {dev}: not prepared"
    r = json.load(open(os.path.join(d, "ref.json")))
    args = [xforge, "zoo", r["task"], os.path.join(d, "model.onnx"), *r["inputs"], "--config",
            os.path.join(d, "task.toml"), "--json", "--device", dev.split(":")[0]]
    if ":" in dev:
        args += ["--precision", dev.split(":")[1]]
    if r["task"] == "segment":
        args += ["--out", os.path.join(d, f"out_{dev_tag(dev)}")]
    t0 = time.time()
    limit = float(os.environ.get("ZOO_TIMEOUT", "170"))
    try:
        p = subprocess.run(args, capture_output=True, text=True, timeout=limit)
        out, err, rc = p.stdout, p.stderr, p.returncode
    except subprocess.TimeoutExpired as e:
        out, err, rc = "", f"timed out after {limit:.0f} s (ZOO_TIMEOUT)", "timeout"
    open(os.path.join(d, f"{dev_tag(dev)}.jsonl"), "w").write(out)
    open(os.path.join(d, f"{dev_tag(dev)}.log"), "w").write(err)
    tail = "" if rc == 0 else f" rc {rc}: {err.strip()[-300:]}"
    return f"{name} {dev}: xforge zoo {time.time() - t0:.1f} s{tail}"


def run(xforge, work, devs, jobs):
    names = json.load(open(os.path.join(work, "plan.json")))["names"]
    with ThreadPoolExecutor(jobs) as ex:
        # the slowest first
        slow = ["retinanet_resnet50_fpn", "deeplabv3_mobilenet_v3_large", "ssdlite320_mobilenet_v3_large"]
        order = sorted(names, key=lambda n: (n not in slow, slow.index(n) if n in slow else 0))
        for line in ex.map(lambda a: run_one(xforge, work, *a), [(n, d) for n in order for d in devs]):
            print(line, flush=True)


# ------------------------------------------------------------------------------------- compare
def iou(a, b):
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    if union > 0:
        return inter / union
    # boxes clipped flat at the image's border: the same box when every corner agrees to 0.05 px
    return float(max(abs(x - y) for x, y in zip(a, b)) <= 0.05)


def compare_detections(ref, got, tol, cap, nms_iou):
    """One-to-one: each reference box (best first) takes the unmatched xforge box of its class with
    the highest IoU, which must be ≥ 0.99 with its score within `tol`. Where both lists hold `cap`
    boxes (max_detections), a box left over within `tol` of its list's lowest score was cut by a
    near-tie at the cap and does not count against the match; so is a box left over whose IoU with
    a better box of its class is within 1e-3 of the NMS threshold (torchvision's batched_nms offsets
    boxes by class × (max coordinate + 1), which moves such IoUs by about 1e-4 in fp32)."""
    n_ref = n_got = matched = cut = edge = 0
    worst_iou, worst_score, binding, most, left = 1.0, 0.0, 0, 0, 0
    odd = []  # the first few boxes left over: which side, class, score, IoU to a better box of its class
    for r, g in zip(ref, got):
        dets = g.get("detections", [])
        n_ref, n_got = n_ref + len(r["scores"]), n_got + len(dets)
        binding += r["topk_binding"]
        most = max(most, r["most"])
        free = list(range(len(dets)))
        lost = []
        for b, s, l in zip(r["boxes"], r["scores"], r["labels"]):
            best, bi = -1.0, None
            for k in free:
                if dets[k]["class"] == l:
                    v = iou(b, dets[k]["box"])
                    if v > best:
                        best, bi = v, k
            if bi is not None and best >= 0.99 and abs(dets[bi]["score"] - s) <= tol:
                matched += 1
                free.remove(bi)
                worst_iou, worst_score = min(worst_iou, best), max(worst_score, abs(dets[bi]["score"] - s))
            else:
                lost.append((b, s, l))
        full = len(dets) == len(r["scores"]) == cap
        tie = lambda v, vs: full and v <= min(vs) + tol
        every = [(b, s, l) for b, s, l in zip(r["boxes"], r["scores"], r["labels"])]
        every += [(x["box"], x["score"], x["class"]) for x in dets]
        near = lambda b, s, l: any(l2 == l and s2 > s and abs(iou(b, b2) - nms_iou) <= 1e-3 for b2, s2, l2 in every)
        for b, s, l in lost:
            if tie(s, r["scores"]):
                cut += 1
            elif near(b, s, l):
                edge += 1
            else:
                left += 1
                odd.append(("ref", l, s, b))
        for k in free:
            x = dets[k]
            if tie(x["score"], [y["score"] for y in dets]):
                continue
            if near(x["box"], x["score"], x["class"]):
                edge += 1
            else:
                left += 1
                odd.append(("xforge", x["class"], x["score"], x["box"]))
        odd = [o if len(o) == 5 else (*o, max([iou(o[3], b2) for b2, s2, l2 in every if l2 == o[1] and s2 > o[2]],
                                               default=0.0)) for o in odd]
    ok = left == 0 and n_ref > 0 and binding == 0
    note = (f"{matched}/{n_ref} ref boxes matched ({cut} more cut by a near-tie at max_detections, {edge} boxes "
            f"either side at IoU within 1e-3 of the NMS threshold), xforge {n_got}; "
            f"min IoU {worst_iou:.4f}, max |dscore| {worst_score:.1e}; top-k cut binding on {binding} images "
            f"(most candidates {most})")
    if odd:
        note += "; left over (side, class, score, IoU to a better box of its class): " + ", ".join(
            f"({side}, {l}, {s:.4f}, {v:.4f})" for side, l, s, b, v in odd[:4])
    return ok, note


def compare_classes(ref, got, tol):
    same = 0
    err = 0.0
    for r, g in zip(ref, got):
        idx = [c["index"] for c in g.get("classes", [])]
        same += idx == r["index"]
        if idx == r["index"]:
            err = max(err, max(abs(c["score"] - s) for c, s in zip(g["classes"], r["score"])))
    gap = min(min(r["margins"]) for r in ref)
    ok = same == len(ref) and err <= tol
    return ok, f"top-5 identical {same}/{len(ref)}, max |dscore| {err:.1e} (smallest ref top-6 margin {gap:.1e})"


def compare_masks(d, ref, got, dev, tol, key):
    from PIL import Image
    agree, total, worst, near = 0, 0, 1.0, 0
    for k, g in enumerate(got):
        want = np.load(os.path.join(d, f"{key}_mask{k}.npy"))
        margin = np.load(os.path.join(d, f"{key}_margin{k}.npy"))
        stem = os.path.splitext(os.path.basename(g["image"]))[0]
        mp = os.path.join(d, f"out_{dev_tag(dev)}", f"{k:03}_{stem}.mask.png")
        have = np.asarray(Image.open(mp)).astype(np.int32)
        same = have == want
        agree, total = agree + same.sum(), total + same.size
        worst = min(worst, same.mean())
        near += int((~same & (margin < tol)).sum())
    frac = agree / max(total, 1)
    ok = worst >= 0.999
    return ok, (f"pixels agreeing {frac:.5%} (worst image {worst:.5%}); of the {total - agree} differing, {near} "
                f"have a reference top-2 logit margin < {tol:g}")


def compare_embeddings(ref, got, floor):
    cos = [float(np.dot(r["embedding"], g["embedding"]) /
                 (np.linalg.norm(r["embedding"]) * np.linalg.norm(g["embedding"]))) for r, g in zip(ref, got)]
    return min(cos) >= floor, f"min cosine {min(cos):.7f} over {len(cos)} texts"


def compare(work, devs):
    names = json.load(open(os.path.join(work, "plan.json")))["names"]
    rows, bad = [], 0
    for dev in devs:
        half = dev.endswith("fp16")
        for name in names:
            d = os.path.join(work, name)
            try:
                r = json.load(open(os.path.join(d, "ref.json")))
                got = [json.loads(l) for l in open(os.path.join(d, f"{dev_tag(dev)}.jsonl")) if l.strip()]
                if len(got) != len(r["ref"]) or any("error" in g for g in got):
                    raise RuntimeError(f"{len(got)} results for {len(r['ref'])} inputs: "
                                       + open(os.path.join(d, f"{dev_tag(dev)}.log")).read().strip()[-300:])
                task, tol = r["task"], 1e-2 if half else 1e-3

                def check(key):
                    if task == "detect":
                        cap = int([l for l in open(os.path.join(d, "task.toml")) if l.startswith("max_detections")][0]
                                  .split("=")[1])
                        iou_t = float([l for l in open(os.path.join(d, "task.toml")) if l.startswith("iou_threshold")][0]
                                      .split("=")[1])
                        return compare_detections(r[key], got, tol, cap, iou_t)
                    if task == "classify":
                        return compare_classes(r[key], got, tol)
                    if task == "segment":
                        return compare_masks(d, r[key], got, dev, tol, key)
                    return compare_embeddings(r[key], got, 0.999 if half else 0.9999)

                ok, note = check("ref")
                pil_ok, pil_note = check("ref_pil")
            except Exception as e:
                ok, note, pil_ok, pil_note = False, f"{type(e).__name__}: {str(e)[:300]}", False, "-"
            bad += not ok
            rows.append(f"| {name} | {dev} | {'PASS' if ok else 'FAIL'} | {note} | {'pass' if pil_ok else 'fail'}: "
                        f"{pil_note} |")
    print("Verdict: the reference on the pixels xforge decoded (the wrappers' proof); last column: the reference on")
    print("PIL's decode of the same JPEGs (decoder differences included; information only).")
    print("| model | device | verdict | agreement with the reference pipeline | against PIL-decoded reference |")
    print("| --- | --- | --- | --- | --- |")
    print("\n".join(rows))
    print(f"zoo against the reference pipelines: {'PASS' if bad == 0 else f'{bad} of {len(rows)} FAILED'}")
    return bad


def main():
    a = sys.argv[1:]
    dry = "--dry" in a
    only = None
    if "--only" in a:
        only = a[a.index("--only") + 1].split(",")
        del a[a.index("--only"):a.index("--only") + 2]
    a = [x for x in a if x != "--dry"]
    jobs = int(os.environ.get("JOBS", "1" if dry else "5"))
    cmd = a[0]
    if cmd == "prepare":
        prepare(a[1], a[2], dry, only)
    elif cmd == "run":
        run(a[1], a[2], a[3:], jobs)
    elif cmd == "compare":
        sys.exit(1 if compare(a[1], a[2:]) else 0)
    elif cmd == "all":
        t0 = time.time()
        prepare(a[1], a[2], dry, only)
        print(f"prepared in {time.time() - t0:.0f} s", flush=True)
        run(a[1], a[2], a[3:], jobs)
        print(f"ran in {time.time() - t0:.0f} s", flush=True)
        sys.exit(1 if compare(a[2], a[3:]) else 0)
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
