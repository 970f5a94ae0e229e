"""The models the generic exporter is tested on: real torchvision and Hugging Face modules with
random weights (every parameter and batch-norm statistic drawn afresh, so no layer is a zero or
an identity), small configs where the architecture allows."""
import math
import tempfile

import numpy as np

from cupyprune.export.torchlib import import_torch

TORCHVISION = {              # name -> image size
    "resnet18": 64, "resnet34": 64, "resnet50": 64, "resnet101": 64, "resnext50_32x4d": 64,
    "wide_resnet50_2": 64, "vgg11": 32, "vgg19_bn": 32, "mobilenet_v2": 64,
    "efficientnet_b0": 64, "convnext_tiny": 64, "vit_b_16": 224,
    "mobilenet_v3_large": 64, "regnet_y_400mf": 64, "swin_t": 64,
}
HF = ("bert", "roberta", "distilbert", "vit", "deit")


def randomize(module, seed):
    """Every parameter ~ N(0, 1/fan_in) (biases and norms around their usual values), batch-norm
    running statistics random and positive."""
    torch = import_torch()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            fan_in = math.prod(p.shape[1:]) if p.dim() > 1 else 1
            scale = 1 / math.sqrt(fan_in) if p.dim() > 1 else 0.1
            base = 1.0 if p.dim() == 1 and name.endswith("weight") else 0.0
            p.copy_(base + scale * torch.randn(p.shape, generator=g))
        for name, b in module.named_buffers():
            if name.endswith("running_mean"):
                b.copy_(0.1 * torch.randn(b.shape, generator=g))
            elif name.endswith("running_var"):
                b.copy_(0.5 + torch.rand(b.shape, generator=g))
    return module.eval()


def torchvision_model(name, seed):
    import_torch()
    import torchvision
    return randomize(torchvision.models.get_model(name, weights=None), seed)


def image(size, batch, rng):
    torch = import_torch()
    return torch.from_numpy(rng.standard_normal((batch, 3, size, size)).astype(np.float32))


def hf_model(kind, seed):
    """(module, its save_pretrained folder) of a small random model of `kind`."""
    import_torch()
    import transformers as T
    small = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64)
    config, cls = {
        "bert": (lambda: T.BertConfig(vocab_size=120, max_position_embeddings=40, num_labels=3,
                                      **small), T.BertForSequenceClassification),
        "roberta": (lambda: T.RobertaConfig(vocab_size=120, max_position_embeddings=42,
                                            num_labels=3, **small),
                    T.RobertaForSequenceClassification),
        "distilbert": (lambda: T.DistilBertConfig(vocab_size=120, max_position_embeddings=40,
                                                  dim=32, n_layers=2, n_heads=4,
                                                  hidden_dim=64, num_labels=3),
                       T.DistilBertForSequenceClassification),
        "vit": (lambda: T.ViTConfig(image_size=32, patch_size=8, num_labels=3, **small),
                T.ViTForImageClassification),
        "deit": (lambda: T.DeiTConfig(image_size=32, patch_size=8, num_labels=3, **small),
                 T.DeiTForImageClassification),
    }[kind]
    module = randomize(cls(config()), seed)
    folder = tempfile.mkdtemp(prefix=f"hf-{kind}-")
    module.save_pretrained(folder)
    return module, folder


def hf_inputs(kind, batch, rng, padded=True):
    """Inputs for a small HF model: ids with some padding at the end of the second sequence."""
    torch = import_torch()
    if kind in ("vit", "deit"):
        return {"pixel_values": torch.from_numpy(
            rng.standard_normal((batch, 3, 32, 32)).astype(np.float32))}
    T = 11
    ids = torch.from_numpy(rng.integers(3, 120, (batch, T)))
    mask = torch.ones(batch, T, dtype=torch.long)
    if padded and batch > 1:
        mask[1, T - 4:] = 0
    out = {"input_ids": ids, "attention_mask": mask}
    if kind == "bert":
        out["token_type_ids"] = torch.from_numpy(rng.integers(0, 2, (batch, T)))
    return out
