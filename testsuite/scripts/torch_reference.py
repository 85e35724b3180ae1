"""Exports the benchmark models with random weights and writes PyTorch's fp32 output on one
random input, so xforge's artifacts can be checked against PyTorch itself.

    python3 torch_reference.py BENCH_DIR OUTDIR NAME ...     (BENCH_DIR holds export_models.py)

For each NAME (BATCH=N in the environment, default 1): OUTDIR/NAME.onnx, OUTDIR/NAME.input.npy
and OUTDIR/NAME.ref/output.npy (fp32 on the GPU, no TF32; on the CPU where there is none).
With BATCHES="1 5 8" (each at most BATCH) the model is exported with a symbolic leading dim
`batch` on its input and output, and each batch n gets OUTDIR/NAME.input.bN.npy (the first n
rows of the drawn input) and OUTDIR/NAME.ref.bN/output.npy.
"""
import importlib.util
import os
import sys

import numpy as np
import torch
import torchvision

torch.backends.cuda.matmul.allow_tf32 = False
torch.backends.cudnn.allow_tf32 = False
spec = importlib.util.spec_from_file_location("export_models", f"{sys.argv[1]}/export_models.py")
em = importlib.util.module_from_spec(spec)
spec.loader.exec_module(em)



class Block(torch.nn.Module):
    """A small convolution case: conv (+ BN) (+ residual) (+ activation)."""

    def __init__(self, cin, cout, k=3, stride=1, groups=1, bn=True, act=None, residual=False):
        super().__init__()
        self.conv = torch.nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=not bn)
        self.bn = torch.nn.BatchNorm2d(cout) if bn else torch.nn.Identity()
        self.act = act or torch.nn.Identity()
        self.residual = residual

    def forward(self, x):
        y = self.bn(self.conv(x))
        return self.act(y + x if self.residual else y)


def case(block, c=16, s=20):
    return lambda: (block, torch.randn(em.B, c, s, s))


# library cases: each cuDNN/cuBLASLt epilogue on its own
em.MODELS.update({
    "conv": case(Block(16, 32)),
    "conv_relu": case(Block(16, 32, act=torch.nn.ReLU())),
    "conv_add_relu": case(Block(16, 16, act=torch.nn.ReLU(), residual=True)),
    "conv_relu6": case(Block(16, 32, act=torch.nn.ReLU6())),
    "dwconv_relu6": case(Block(16, 16, groups=16, act=torch.nn.ReLU6())),
    "conv_stride2_nobias": case(Block(16, 32, k=1, stride=2, bn=False)),
    "maxpool": case(torch.nn.MaxPool2d(3, 2, 1)),
    "stem": lambda: (torch.nn.Sequential(torch.nn.Conv2d(3, 16, 7, 2, 3, bias=False), torch.nn.BatchNorm2d(16),
                                         torch.nn.ReLU(), torch.nn.MaxPool2d(3, 2, 1)), torch.randn(em.B, 3, 64, 64)),
    "basic_block": case(torchvision.models.resnet.BasicBlock(16, 16)),
    "basic_down": case(torchvision.models.resnet.BasicBlock(
        16, 32, stride=2, downsample=torch.nn.Sequential(torch.nn.Conv2d(16, 32, 1, 2, bias=False),
                                                         torch.nn.BatchNorm2d(32)))),
    "linear_gelu": lambda: (torch.nn.Sequential(torch.nn.Linear(64, 96), torch.nn.GELU(approximate="tanh")),
                            torch.randn(em.B, 8, 64)),
})

out = sys.argv[2]
os.makedirs(out, exist_ok=True)
for name in sys.argv[3:]:
    torch.manual_seed(0)
    model, x = em.MODELS[name]()
    model = model.eval()
    # zero-initialised parameters (vit_b_16's head) would make every output 0: draw them too
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() > 0 and not p.any():
                p.normal_(0, 0.02)
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.1)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.data.normal_(1, 0.1)
                m.bias.data.normal_(0, 0.1)
    path = os.path.join(out, name)
    batches = [int(b) for b in os.environ.get("BATCHES", "").split()]
    dynamic = {"input": {0: "batch"}, "output": {0: "batch"}} if batches else None
    # no torch.no_grad() for the export (see export_models.py)
    torch.onnx.export(model, (x,), path + ".onnx", opset_version=17, dynamo=False, dynamic_axes=dynamic,
                      input_names=["input"], output_names=["output"], do_constant_folding=True)
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    model = model.to(dev)
    for n in batches or [None]:
        xs = x if n is None else x[:n]
        tag = "" if n is None else f".b{n}"
        np.save(path + f".input{tag}.npy", xs.numpy())
        with torch.inference_mode():
            y = model(xs.to(dev)).float().cpu().numpy()
        os.makedirs(path + f".ref{tag}", exist_ok=True)
        np.save(path + f".ref{tag}/output.npy", y)
        print(f"{name}: input {tuple(xs.shape)}, output {y.shape}", flush=True)
