"""Hugging Face ViTForImageClassification and BertForSequenceClassification -> a model file.

The graph follows the HF modules op for op (docs/FORMAT.md's transformer ops); dropout is left
out. Tensors keep the checkpoint's own keys. Two ViT key layouts are read: the Hub's
(`vit.encoder.layer.N.attention.attention.query`, what transformers 4 modules and the published
checkpoints use) and transformers 5's module names (`vit.layers.N.attention.q_proj`).

Legend: D hidden size, I FFN size, H heads, L labels, V vocabulary, P positions, C channels,
S image side, p patch side.
"""
import json
import re
from dataclasses import dataclass

from checkpoint import check_keys, fold_pruning
from cupyprune.export.torchlib import import_torch
from cupyprune.ops.activation import ACTIVATIONS as RUNTIME_ACTIVATIONS

from .errors import ExportError
from .graph_builder import GraphBuilder

import_torch()                   # torchvision's op schemas first, where transformers needs them

# hidden_act (transformers' ACT2FN names) -> (op, attrs): HF's GELU names, and the runtime
# activations (ops/activation.py) that HF spells the same
ACTIVATIONS = {
    "gelu": ("gelu", {"approximate": "none"}),
    "gelu_python": ("gelu", {"approximate": "none"}),
    "gelu_new": ("gelu", {"approximate": "tanh"}),
    "gelu_pytorch_tanh": ("gelu", {"approximate": "tanh"}),
    "swish": ("silu", {}),
    **{name: (name, {}) for name in ("relu", "silu", "sigmoid", "tanh")
       if name in RUNTIME_ACTIVATIONS},
}
# HF's config defaults, for hand-written configs that leave a field out
DEFAULTS = {"hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12,
            "intermediate_size": 3072, "hidden_act": "gelu", "layer_norm_eps": 1e-12,
            "image_size": 224, "patch_size": 16, "num_channels": 3, "qkv_bias": True,
            "vocab_size": 30522, "max_position_embeddings": 512, "type_vocab_size": 2}
SIZES = ("hidden_size", "intermediate_size", "num_attention_heads", "num_hidden_layers")
# buffers BertEmbeddings rebuilds at run time; older checkpoints still hold them
NON_PERSISTENT = re.compile(r"embeddings\.(position_ids|token_type_ids)$")

BERT_LAYER = {"query": "attention.self.query", "key": "attention.self.key",
              "value": "attention.self.value", "attention": "attention.self",
              "attn_out": "attention.output.dense", "ln1": "attention.output.LayerNorm",
              "fc1": "intermediate.dense", "fc2": "output.dense", "ln2": "output.LayerNorm"}
VIT_LAYOUTS = {   # layout -> (layer prefix, role -> key)
    "hub": ("vit.encoder.layer.{}", {
        "query": "attention.attention.query", "key": "attention.attention.key",
        "value": "attention.attention.value", "attention": "attention.attention",
        "attn_out": "attention.output.dense", "ln1": "layernorm_before",
        "ln2": "layernorm_after", "fc1": "intermediate.dense", "fc2": "output.dense"}),
    "modules": ("vit.layers.{}", {
        "query": "attention.q_proj", "key": "attention.k_proj", "value": "attention.v_proj",
        "attention": "attention", "attn_out": "attention.o_proj", "ln1": "layernorm_before",
        "ln2": "layernorm_after", "fc1": "mlp.fc1", "fc2": "mlp.fc2"}),
}


@dataclass
class Config:
    raw: dict
    D: int                  # hidden size
    I: int                  # FFN size
    H: int                  # heads
    layers: int
    eps: float
    act: tuple              # (op, attrs)
    L: int                  # labels

    def get(self, field):
        return config_field(self.raw, field)


def config_field(raw, field):
    return raw.get(field, DEFAULTS.get(field))


def read_config(path, arch):
    try:
        with open(path) as f:
            raw = json.load(f)
    except OSError as e:
        raise ExportError(f"{path}: cannot read the config: {e.strerror or e}") from None
    except ValueError as e:
        raise ExportError(f"{path}: not a JSON config: {e}") from None
    if not isinstance(raw, dict):
        raise ExportError(f"{path}: not a JSON config object")
    if raw.get("model_type", arch) != arch:
        raise ExportError(f"{path}: model_type is {raw['model_type']!r}, not {arch!r}")
    sizes = [config_field(raw, k) for k in SIZES]
    for k, v in zip(SIZES, sizes):
        if not isinstance(v, int) or v < 1:
            raise ExportError(f"{path}: {k} must be a positive integer, got {v!r}")
    D, I, H, layers = sizes
    if D % H:
        raise ExportError(f"{path}: hidden_size {D} is not divisible by num_attention_heads {H}")
    act = config_field(raw, "hidden_act")
    if act not in ACTIVATIONS:
        raise ExportError(f"{path}: hidden_act {act!r} is not supported (use one of "
                          f"{', '.join(ACTIVATIONS)})")
    L = len(raw["id2label"]) if raw.get("id2label") else raw.get("num_labels", 2)
    return Config(raw, D, I, H, layers, float(config_field(raw, "layer_norm_eps")),
                  ACTIVATIONS[act], L)


def config_labels(cfg):
    """id2label's names in class order, or None when they are HF's generic LABEL_i."""
    id2label = cfg.raw.get("id2label") or {}
    names = [id2label[k] for k in sorted(id2label, key=int)]
    if not names or all(n == f"LABEL_{i}" for i, n in enumerate(names)):
        return None
    return names


class Recorder:
    """The graph as an arch describes it, and the shape it expects of every key it names, so
    that the checkpoint is checked (checkpoint.check_keys) before any node is built."""

    def __init__(self):
        self.expected, self.nodes = {}, []

    def key(self, key, shape):
        self.expected[key] = tuple(shape)
        return key

    def node(self, name, op, inputs, params=None, attrs=None):
        self.nodes.append((name, op, inputs, params, attrs))
        return name                                 # GraphBuilder names values after nodes


# -- building blocks ----------------------------------------------------------------------------

def linear(g, prefix, x, n_in, n_out, bias=True):
    params = {"weight": g.key(prefix + ".weight", (n_out, n_in))}
    if bias:
        params["bias"] = g.key(prefix + ".bias", (n_out,))
    return g.node(prefix, "linear", x, params)


def layer_norm(g, prefix, x, c):
    params = {"weight": g.key(prefix + ".weight", (c.D,)), "bias": g.key(prefix + ".bias", (c.D,))}
    return g.node(prefix, "layer_norm", x, params, {"eps": c.eps})


def attention(g, n, x, mask, c, qkv_bias=True):
    """q, k, v projections, multi-head attention, output projection: (N, T, D) -> (N, T, D)."""
    q, k, v = (linear(g, n[r], x, c.D, c.D, qkv_bias) for r in ("query", "key", "value"))
    ctx = g.node(n["attention"], "self_attention", [q, k, v] + ([mask] if mask else []),
                 attrs={"num_heads": c.H})
    return linear(g, n["attn_out"], ctx, c.D, c.D)


def mlp(g, n, x, c):
    """D -> I, activation, I -> D."""
    h = linear(g, n["fc1"], x, c.D, c.I)
    h = g.node(n["fc1"] + ".act", c.act[0], h, attrs=c.act[1])
    return linear(g, n["fc2"], h, c.I, c.D)


def roles(prefix, layout):
    return {r: f"{prefix}.{k}" for r, k in layout.items()}


# -- BERT (post-LN) -----------------------------------------------------------------------------

def bert_layer(g, prefix, x, c):
    n = roles(prefix, BERT_LAYER)
    a = attention(g, n, x, "attention_mask", c)
    x = layer_norm(g, n["ln1"], g.node(prefix + ".attention.residual", "add", [a, x]), c)
    m = mlp(g, n, x, c)
    return layer_norm(g, n["ln2"], g.node(prefix + ".output.residual", "add", [m, x]), c)


def bert(g, c, tensors):
    V, P, TV = (c.get(k) for k in ("vocab_size", "max_position_embeddings", "type_vocab_size"))
    e = "bert.embeddings."
    x = g.node(e + "word_embeddings", "embedding", "input_ids",
               {"weight": g.key(e + "word_embeddings.weight", (V, c.D))})
    x = g.node(e + "token_type_embeddings", "token_type_embedding", [x, "token_type_ids"],
               {"weight": g.key(e + "token_type_embeddings.weight", (TV, c.D))})
    x = g.node(e + "position_embeddings", "position_embedding", x,
               {"weight": g.key(e + "position_embeddings.weight", (P, c.D))})
    x = layer_norm(g, e + "LayerNorm", x, c)
    for i in range(c.layers):
        x = bert_layer(g, f"bert.encoder.layer.{i}", x, c)
    x = g.node("bert.pooler.first_token", "select_token", x, attrs={"index": 0})   # (N, D)
    x = g.node("bert.pooler.activation", "tanh", linear(g, "bert.pooler.dense", x, c.D, c.D))
    return linear(g, "classifier", x, c.D, c.L)


def bert_spec(c):
    ids = {"shape": [None, None], "dtype": "int64"}
    return [{"name": "input_ids", **ids, "kind": "token_ids", "vocab_size": c.get("vocab_size"),
             "max_length": c.get("max_position_embeddings")},
            {"name": "token_type_ids", **ids, "kind": "token_type_ids",
             "vocab_size": c.get("type_vocab_size")},
            {"name": "attention_mask", **ids, "kind": "attention_mask"}]


# -- ViT (pre-LN) -------------------------------------------------------------------------------

def vit_layer(g, prefix, layout, x, c):
    n = roles(prefix, layout)
    a = attention(g, n, layer_norm(g, n["ln1"], x, c), None, c, bool(c.get("qkv_bias")))
    x = g.node(prefix + ".attention.residual", "add", [a, x])
    m = mlp(g, n, layer_norm(g, n["ln2"], x, c), c)
    return g.node(prefix + ".output.residual", "add", [m, x])


def pair(v):
    return tuple(v) if isinstance(v, (list, tuple)) else (v, v)


def vit(g, c, tensors):
    C, (Sh, Sw), (ph, pw) = c.get("num_channels"), pair(c.get("image_size")), \
        pair(c.get("patch_size"))
    e = "vit.embeddings."
    conv = e + "patch_embeddings.projection"
    x = g.node(conv, "conv2d", "pixel_values",
               {"weight": g.key(conv + ".weight", (c.D, C, ph, pw)),
                "bias": g.key(conv + ".bias", (c.D,))},
               {"stride": [ph, pw], "padding": [0, 0], "dilation": [1, 1]})   # (N, D, h, w)
    x = g.node(e + "patch_embeddings.flatten", "patches_to_tokens", x)        # (N, h*w, D)
    x = g.node(e + "cls_token", "prepend_token", x,
               {"token": g.key(e + "cls_token", (1, 1, c.D))})                # (N, 1+h*w, D)
    tokens = (Sh // ph) * (Sw // pw) + 1
    x = g.node(e + "position_embeddings", "add_param", x,
               {"weight": g.key(e + "position_embeddings", (1, tokens, c.D))})
    layout = "modules" if any(k.startswith("vit.layers.") for k in tensors) else "hub"
    prefix, keys = VIT_LAYOUTS[layout]
    for i in range(c.layers):
        x = vit_layer(g, prefix.format(i), keys, x, c)
    x = layer_norm(g, "vit.layernorm", x, c)
    x = g.node("vit.first_token", "select_token", x, attrs={"index": 0})        # (N, D)
    return linear(g, "classifier", x, c.D, c.L)


def vit_spec(c):
    (Sh, Sw) = pair(c.get("image_size"))
    return [{"name": "pixel_values", "shape": [None, c.get("num_channels"), Sh, Sw],
             "dtype": "float32", "layout": "NCHW", "kind": "image"}]


ARCHS = {"vit": (vit, vit_spec, "ViTForImageClassification"),
         "bert": (bert, bert_spec, "BertForSequenceClassification")}


def check_options(arch, c, num_classes, image_size):
    """tools/export.py's --num-classes and --image-size may only restate the config."""
    if num_classes is not None and num_classes != c.L:
        raise ExportError(f"--num-classes {num_classes} does not match the config's {c.L} labels")
    if image_size is None:
        return
    if arch != "vit":
        raise ExportError(f"--image-size is for vit, not {arch}")
    if pair(image_size) != pair(c.get("image_size")):
        raise ExportError(f"--image-size {image_size} does not match the config's image_size "
                          f"{c.get('image_size')}")


LAYER_INDEX = re.compile(r"^(?:bert\.encoder\.layer|vit\.encoder\.layer|vit\.layers)\.(\d+)\.")
QKV_BIAS = re.compile(r"\.(?:query|q_proj)\.bias$")


def key_names_config(arch, tensors):
    """A Config for checking key NAMES only (no config.json): the layer count and ViT's qkv
    bias read off the checkpoint, sizes left at 1 (shapes are not checked)."""
    layers = [int(m.group(1)) for m in map(LAYER_INDEX.match, tensors) if m]
    raw = {"qkv_bias": any(QKV_BIAS.search(k) for k in tensors)} if arch == "vit" else {}
    return Config(raw, 1, 1, 1, max(layers, default=-1) + 1, 1e-12, ACTIVATIONS["gelu"], 1)


def check_checkpoint(arch, tensors, config_path=None):
    """Raise ExportError naming the first key of `tensors` ({key: array}, pruning folded) that
    does not fit `arch`: its shape too when config.json is given, else its name alone."""
    if arch not in ARCHS:
        raise ExportError(f"unknown Hugging Face arch {arch!r}: use one of {', '.join(ARCHS)}")
    build, _, hf_class = ARCHS[arch]
    tensors = {k: v for k, v in tensors.items() if not NON_PERSISTENT.search(k)}
    c = key_names_config(arch, tensors) if config_path is None else read_config(config_path, arch)
    g = Recorder()
    build(g, c, tensors)
    expected = g.expected
    if config_path is None:          # names only: a present key is taken at its own shape
        expected = {k: tuple(tensors[k].shape) if k in tensors else s for k, s in expected.items()}
    check_keys(tensors, expected, f"{hf_class} of {config_path}" if config_path
               else f"{hf_class} (key names; give --config to check shapes too)")


def export_hf(arch, state_dict, config_path, out, labels=None, pattern=None, num_classes=None,
              image_size=None):
    """state_dict: the HF classifier's {key: torch.Tensor}, torch.nn.utils.prune re-params
    allowed; config_path: its config.json; pattern: a --pattern text declared for every masked
    layer, or None to let the runtime infer each layer's pattern."""
    if arch not in ARCHS:
        raise ExportError(f"unknown Hugging Face arch {arch!r}: use one of {', '.join(ARCHS)}")
    build, spec, hf_class = ARCHS[arch]
    c = read_config(config_path, arch)
    check_options(arch, c, num_classes, image_size)
    tensors, masks = fold_pruning({k: v for k, v in state_dict.items()
                                   if not NON_PERSISTENT.search(k)})
    g = Recorder()
    logits = build(g, c, tensors)
    check_keys(tensors, g.expected, f"{hf_class} of {config_path}")
    labels = config_labels(c) if labels is None else list(labels)
    if labels is not None and len(labels) != c.L:
        raise ExportError(f"{len(labels)} labels given for a classifier of {c.L} classes")
    input_spec = spec(c)
    b = GraphBuilder(tensors, masks, inputs=[s["name"] for s in input_spec])
    for node in g.nodes:
        b.add_node(*node)
    b.write(out, outputs={"logits": logits}, input_spec=input_spec, pattern=pattern,
            labels=labels, exporter=f"tools/export.py --arch {arch} (Hugging Face {hf_class})")
