"""The model zoo check's architectures: torchvision classification, segmentation and detection,
transformers encoders and decoders, timm. Random weights, nothing downloaded.

    python3 zoo_models.py OUTDIR [NAME ...]        exports NAME.onnx and NAME.input.npy (batch 1,
                                                   or ZOO_BATCH)

`build(name)` returns (module in eval mode, example input) for the checks that run PyTorch.
Zero-initialized layers (torchvision ViT's head) are re-initialized so outputs can differ.
"""
import os
import sys

import numpy as np
import torch
import torchvision

tv = torchvision.models


class Tokens(torch.nn.Module):
    """A transformers model as input_ids -> last hidden state."""

    def __init__(self, m):
        super().__init__()
        self.m = m

    def forward(self, ids):
        # an explicit mask keeps newer transformers off ops opset 17 lacks
        mask = torch.ones_like(ids)
        return self.m(input_ids=ids, attention_mask=mask, use_cache=False, return_dict=True).last_hidden_state


class Pixels(torch.nn.Module):
    def __init__(self, m):
        super().__init__()
        self.m = m

    def forward(self, x):
        return self.m(pixel_values=x, return_dict=True).last_hidden_state


class Features(torch.nn.Module):
    """An audio encoder on log-mel features."""

    def __init__(self, m):
        super().__init__()
        self.m = m

    def forward(self, x):
        return self.m(input_features=x, return_dict=True).last_hidden_state


class Seg(torch.nn.Module):
    def __init__(self, m):
        super().__init__()
        self.m = m

    def forward(self, x):
        return self.m(x)["out"]


class Det(torch.nn.Module):
    """A torchvision detector on one image: boxes, scores, labels."""

    def __init__(self, m):
        super().__init__()
        self.m = m

    def forward(self, x):
        o = self.m([x[0]])[0]
        return o["boxes"], o["scores"], o["labels"]


class First(torch.nn.Module):
    def __init__(self, m):
        super().__init__()
        self.m = m

    def forward(self, x):
        y = self.m(x)
        return y[0] if isinstance(y, (tuple, list)) else y


def calibrated(m, size):
    """BatchNorm statistics taken from two random images (the rest of the weights stay random):
    ssdlite's random-init activations otherwise vanish (about 1e-13 at its heads), every class
    score ties at 1/91 in fp32 and fp16 alike, and only tie-breaking picks the detections."""
    bns = [b for b in m.modules() if isinstance(b, torch.nn.modules.batchnorm._BatchNorm)]
    for b in bns:
        b.reset_running_stats()
        b.momentum = None
        b.train()
    with torch.no_grad():
        m.m([torch.randn(3, size, size), torch.randn(3, size, size)])
    for b in bns:
        b.eval()
    return m


def img(s=224):
    return torch.randn(1, 3, s, s)


def vit_b_16():
    m = tv.vit_b_16()
    torch.nn.init.normal_(m.heads.head.weight, std=0.02)
    return m, img()


def swin_t():
    m = tv.swin_t()
    torch.nn.init.normal_(m.head.weight, std=0.02)
    return m, img()


def bert():
    from transformers import BertConfig, BertModel
    cfg = BertConfig(hidden_size=256, num_hidden_layers=4, num_attention_heads=4, intermediate_size=1024, vocab_size=4000)
    return Tokens(BertModel(cfg)), torch.randint(0, 4000, (1, 64))


def gpt2():
    from transformers import GPT2Config, GPT2Model
    cfg = GPT2Config(n_embd=256, n_layer=4, n_head=4, vocab_size=4000, n_positions=128)
    return Tokens(GPT2Model(cfg)), torch.randint(0, 4000, (1, 64))


def llama():
    # RMSNorm, rotary position embeddings, grouped-query attention (8 query heads on 2 KV heads)
    from transformers import LlamaConfig, LlamaModel
    cfg = LlamaConfig(hidden_size=256, intermediate_size=688, num_hidden_layers=4, num_attention_heads=8,
                      num_key_value_heads=2, vocab_size=4000, max_position_embeddings=256)
    return Tokens(LlamaModel(cfg)), torch.randint(0, 4000, (1, 64))


def t5_encoder():
    from transformers import T5Config, T5EncoderModel
    cfg = T5Config(d_model=256, d_kv=32, d_ff=1024, num_layers=4, num_heads=8, vocab_size=4000)

    class Enc(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.m = T5EncoderModel(cfg)

        def forward(self, ids):
            return self.m(input_ids=ids, attention_mask=torch.ones_like(ids), return_dict=True).last_hidden_state

    return Enc(), torch.randint(0, 4000, (1, 64))


def whisper_encoder():
    from transformers import WhisperConfig, WhisperModel
    cfg = WhisperConfig(d_model=256, encoder_layers=4, encoder_attention_heads=4, decoder_layers=1,
                        decoder_attention_heads=4, encoder_ffn_dim=1024, decoder_ffn_dim=1024, num_mel_bins=80,
                        max_source_positions=1500)
    return Features(WhisperModel(cfg).encoder), torch.randn(1, 80, 3000)


def clip_vision():
    from transformers import CLIPVisionConfig, CLIPVisionModel
    cfg = CLIPVisionConfig(hidden_size=256, intermediate_size=1024, num_hidden_layers=4, num_attention_heads=4,
                           image_size=224, patch_size=16)
    return Pixels(CLIPVisionModel(cfg)), img()


def hf_vit():
    from transformers import ViTConfig, ViTModel
    cfg = ViTConfig(hidden_size=256, num_hidden_layers=4, num_attention_heads=4, intermediate_size=1024, image_size=224,
                    patch_size=16)
    return Pixels(ViTModel(cfg)), img()


def distilbert():
    from transformers import DistilBertConfig, DistilBertModel
    cfg = DistilBertConfig(dim=256, n_layers=4, n_heads=4, hidden_dim=1024, vocab_size=4000)
    return Tokens(DistilBertModel(cfg)), torch.randint(0, 4000, (1, 64))


def timm_model(name, size=224):
    def make():
        import timm
        m = timm.create_model(name, pretrained=False)
        return m, img(size)
    return make


MODELS = {
    # torchvision classification
    "resnet18": lambda: (tv.resnet18(), img()),
    "resnet50": lambda: (tv.resnet50(), img()),
    "resnext50_32x4d": lambda: (tv.resnext50_32x4d(), img()),
    "mobilenet_v2": lambda: (tv.mobilenet_v2(), img()),
    "mobilenet_v3_small": lambda: (tv.mobilenet_v3_small(), img()),
    "mobilenet_v3_large": lambda: (tv.mobilenet_v3_large(), img()),
    "efficientnet_b0": lambda: (tv.efficientnet_b0(), img()),
    "efficientnet_v2_s": lambda: (tv.efficientnet_v2_s(), img()),
    "shufflenet_v2_x1_0": lambda: (tv.shufflenet_v2_x1_0(), img()),
    "squeezenet1_1": lambda: (tv.squeezenet1_1(), img()),
    "mnasnet0_5": lambda: (tv.mnasnet0_5(), img()),
    "densenet121": lambda: (tv.densenet121(), img()),
    "regnet_y_400mf": lambda: (tv.regnet_y_400mf(), img()),
    "convnext_tiny": lambda: (tv.convnext_tiny(), img()),
    "googlenet": lambda: (First(tv.googlenet(aux_logits=False, init_weights=True)), img()),
    "vgg11": lambda: (tv.vgg11(), img()),
    "alexnet": lambda: (tv.alexnet(), img()),
    "vit_b_16": vit_b_16,
    "swin_t": swin_t,
    # torchvision segmentation
    "deeplabv3_mobilenet_v3_large": lambda: (Seg(tv.segmentation.deeplabv3_mobilenet_v3_large(weights_backbone=None)), img(256)),
    "lraspp_mobilenet_v3_large": lambda: (Seg(tv.segmentation.lraspp_mobilenet_v3_large(weights_backbone=None)), img(256)),
    "fcn_resnet50": lambda: (Seg(tv.segmentation.fcn_resnet50(weights_backbone=None)), img(256)),
    # torchvision detection
    "ssdlite320_mobilenet_v3_large": lambda: (calibrated(Det(tv.detection.ssdlite320_mobilenet_v3_large(weights_backbone=None, score_thresh=0.0)).eval(), 320), img(320)),
    "retinanet_resnet50_fpn": lambda: (Det(tv.detection.retinanet_resnet50_fpn(weights_backbone=None, score_thresh=0.0, min_size=320, max_size=320)), img(320)),
    "fasterrcnn_mobilenet_v3_large_320_fpn": lambda: (Det(tv.detection.fasterrcnn_mobilenet_v3_large_320_fpn(weights_backbone=None, box_score_thresh=0.0)), img(320)),
    # transformers
    "bert": bert,
    "distilbert": distilbert,
    "gpt2": gpt2,
    "llama": llama,
    "t5_encoder": t5_encoder,
    "whisper_encoder": whisper_encoder,
    "clip_vision": clip_vision,
    "hf_vit": hf_vit,
    # timm
    "timm_deit_tiny": timm_model("deit_tiny_patch16_224"),
    "timm_convnext_nano": timm_model("convnext_nano"),
    "timm_regnetx_002": timm_model("regnetx_002"),
    "timm_efficientnet_lite0": timm_model("efficientnet_lite0"),
}


def batch():
    """The batch size of the example inputs: ZOO_BATCH (default 1); rows repeat the batch-1 input."""
    return int(os.environ.get("ZOO_BATCH", "1"))


def build(name):
    torch.manual_seed(0)
    m, x = MODELS[name]()
    if batch() > 1:
        if isinstance(m, Det):
            raise ValueError("detection models take one image (ZOO_BATCH=1)")
        x = x.repeat(batch(), *[1] * (x.dim() - 1))
    return m.eval(), x


def export(name, out):
    m, x = build(name)
    path = os.path.join(out, name + ".onnx")
    # not under no_grad: torchvision's attention would take its fused fast path, which has no ONNX form
    torch.onnx.export(m, (x,), path, opset_version=17, dynamo=False, input_names=["input"], do_constant_folding=True)
    np.save(os.path.join(out, name + ".input.npy"), x.numpy())
    return path


if __name__ == "__main__":
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    for n in sys.argv[2:] or list(MODELS):
        try:
            print(export(n, out), flush=True)
        except Exception as e:  # report and go on
            print(f"{n}: export failed: {type(e).__name__}: {str(e)[:300]}", flush=True)
