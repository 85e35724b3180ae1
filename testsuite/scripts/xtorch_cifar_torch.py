"""PyTorch's side of the xtorch training comparison (issue 18): ResNet-18 with the CIFAR stem
trained on CIFAR-shaped data exactly as `xtorch/examples/cifar_resnet.rs` does — same network
(BasicBlocks, no conv bias, BN, Kaiming-style init is libtorch's default here too), SGD (lr 0.1,
momentum 0.9, weight decay 5e-4, PyTorch's default foreach implementation), batch 256 shuffled,
drop_last, DataLoader workers with pinned memory and non-blocking copies, the same pattern
images (10 class patterns + uniform noise), the loss summed on the GPU and read once an epoch
(no per-step sync: PyTorch's best loop, not its most common one).

    python3 xtorch_cifar_torch.py --precision fp32|bf16 [--epochs 4] [--images 25600]
        [--workers 8] [--tuned]

Default settings are PyTorch eager as it comes (NCHW, cudnn.benchmark off); --tuned sets
channels_last and cudnn.benchmark, the two settings xtorch's example uses. Prints images/s
per epoch and a RESULT line (JSON) like the xtorch example.
"""
import argparse
import json
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F


class Block(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.c1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.b1 = nn.BatchNorm2d(cout)
        self.c2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.b2 = nn.BatchNorm2d(cout)
        self.short = None
        if stride != 1 or cin != cout:
            self.short = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        y = F.relu(self.b1(self.c1(x)))
        y = self.b2(self.c2(y))
        return F.relu(y + (x if self.short is None else self.short(x)))


def resnet18_cifar(classes=10, w=64):
    layers = [nn.Conv2d(3, w, 3, 1, 1, bias=False), nn.BatchNorm2d(w), nn.ReLU()]
    ch = w
    for stage, width in enumerate([w, 2 * w, 4 * w, 8 * w]):
        for i in range(2):
            layers.append(Block(ch, width, 2 if stage > 0 and i == 0 else 1))
            ch = width
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8 * w, classes)]
    return nn.Sequential(*layers)


def pattern_images(n, seed):
    rng = np.random.default_rng(seed)
    patterns = rng.uniform(-1, 1, (10, 3, 32, 32)).astype(np.float32)
    labels = rng.integers(0, 10, n)
    x = patterns[labels] + rng.uniform(-1.5, 1.5, (n, 3, 32, 32)).astype(np.float32)
    return torch.from_numpy(x), torch.from_numpy(labels.astype(np.int64))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--images", type=int, default=25600)
    ap.add_argument("--workers", type=int, default=8)
    ap.add_argument("--tuned", action="store_true")
    a = ap.parse_args()
    dev = torch.device("cuda")
    torch.backends.cudnn.benchmark = a.tuned
    x, y = pattern_images(a.images, 1)
    data = torch.utils.data.TensorDataset(x, y)
    loader = torch.utils.data.DataLoader(data, batch_size=256, shuffle=True, drop_last=True,
                                         num_workers=a.workers, pin_memory=True, prefetch_factor=4,
                                         persistent_workers=True)
    torch.manual_seed(0)
    model = resnet18_cifar().to(dev)
    fmt = torch.channels_last if a.tuned else torch.contiguous_format
    model = model.to(memory_format=fmt)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    amp = a.precision == "bf16"
    rates, losses, window = [], [], [0.0, 0.0]
    per_epoch = len(loader) * 256
    model.train()
    for epoch in range(a.epochs):
        t = time.perf_counter()
        total = torch.zeros((), device=dev)
        for xb, yb in loader:
            xb = xb.to(dev, non_blocking=True).to(memory_format=fmt)
            yb = yb.to(dev, non_blocking=True)
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp):
                loss = F.cross_entropy(model(xb), yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += loss.detach()
        mean = total.item() / len(loader)
        s = time.perf_counter() - t
        rates.append(per_epoch / s)
        losses.append(mean)
        if epoch == 0:
            window[0] = time.time()
        window[1] = time.time()
        print(f"epoch {epoch}: {s:.2f} s, {per_epoch / s:.0f} images/s, train loss {mean:.4f}", flush=True)
    timed = rates[1:]
    hmean = len(timed) / sum(1 / r for r in timed)
    name = "torch-tuned" if a.tuned else "torch"
    print("RESULT " + json.dumps({"framework": name, "precision": a.precision, "images_per_s": round(hmean, 1),
                                  "epochs_timed": len(timed), "window": window,
                                  "loss_first": round(losses[0], 4), "loss_last": round(losses[-1], 4)}), flush=True)


if __name__ == "__main__":
    main()
