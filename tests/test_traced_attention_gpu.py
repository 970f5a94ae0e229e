"""Traced attention on the GPU: Hugging Face BERT, RoBERTa, DistilBERT, ViT, DeiT and torchvision's
ViT, exported by the generic exporter, run their scaled_dot_product_attention nodes through the
GPU's self-attention (ops/sdpa.py): `fused` in fp16 and bf16 (head size 16, up to 128 tokens),
`gemm` in fp32 and past 128 tokens; the logits match the float32 module (text rows padded at
their end), and the whole model replays as one CUDA graph. Then the op on its own: fast path and
generic code agree, for every mask the fast path takes and for those it leaves."""
import math
import os

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("torchvision")

import cupyprune  # noqa: E402
from conftest import rel_err  # noqa: E402
from export_zoo import randomize  # noqa: E402

TOLERANCE = {"fp32": 1e-4, "fp16": 3e-2, "bf16": 5e-2}   # max|out - ref| / max|ref|
TEXT = ("bert", "roberta", "distilbert")
IMAGE = 32                                   # ViT and DeiT images; patches of 8: 16 + 1 (+1)
SDPA = "scaled_dot_product_attention"


def _seed():
    seed = int.from_bytes(os.urandom(4), "little")
    print(f"seed {seed}")
    return seed


def hf_module(kind, seed):
    """A small random HF classifier of `kind`, head size 16 (the fused kernel's smallest)."""
    import transformers as T
    small = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                 intermediate_size=128, num_labels=3, attn_implementation="sdpa")
    config, cls = {
        "bert": (lambda: T.BertConfig(vocab_size=120, max_position_embeddings=64, **small),
                 T.BertForSequenceClassification),
        "roberta": (lambda: T.RobertaConfig(vocab_size=120, max_position_embeddings=66, **small),
                    T.RobertaForSequenceClassification),
        "distilbert": (lambda: T.DistilBertConfig(vocab_size=120, max_position_embeddings=64,
                                                  dim=64, n_layers=2, n_heads=4, hidden_dim=128,
                                                  num_labels=3, attn_implementation="sdpa"),
                       T.DistilBertForSequenceClassification),
        "vit": (lambda: T.ViTConfig(image_size=IMAGE, patch_size=8, **small),
                T.ViTForImageClassification),
        "deit": (lambda: T.DeiTConfig(image_size=IMAGE, patch_size=8, **small),
                 T.DeiTForImageClassification),
    }[kind]
    return randomize(cls(config()), seed)


def torchvision_vit(name, seed):
    """torchvision's VisionTransformer (nn.MultiheadAttention): vit_b_16 at 224 pixels, or
    'small', the same code at 32 pixels, 4 heads of 16."""
    import torchvision
    if name == "vit_b_16":
        module = torchvision.models.vit_b_16(weights=None)
    else:
        from torchvision.models.vision_transformer import VisionTransformer
        module = VisionTransformer(image_size=IMAGE, patch_size=8, num_layers=2, num_heads=4,
                                   hidden_dim=64, mlp_dim=128, num_classes=3)
    return randomize(module, seed)


def text_inputs(rng, batch=4, tokens=24):
    """Ids and a mask whose rows 1 and 3 end in padding."""
    ids = rng.integers(3, 120, (batch, tokens))
    mask = np.ones((batch, tokens), dtype=np.int64)
    mask[1, tokens - 5:] = 0
    mask[3, tokens - 11:] = 0
    return {"input_ids": ids, "attention_mask": mask}


def image_inputs(rng, size, batch=3, name="pixel_values"):
    return {name: rng.standard_normal((batch, 3, size, size)).astype(np.float32)}


def reference(module, inputs):
    with torch.no_grad():
        out = module(**{k: torch.from_numpy(v) for k, v in inputs.items()})
    return (out.logits if hasattr(out, "logits") else out).numpy()


def export_kind(kind, folder):
    """A fresh random model of `kind` exported into `folder` -> (module, file, inputs(rng))."""
    from cupyprune.export import export_module
    rng = np.random.default_rng(_seed())
    path = str(folder / f"{kind}.safetensors")
    if kind in TEXT:
        module = hf_module(kind, int(rng.integers(1 << 30)))
        example = {"input_ids": torch.from_numpy(rng.integers(3, 120, (1, 16))),
                   "attention_mask": torch.ones(1, 16, dtype=torch.long)}
        if kind != "distilbert":                      # left out, HF gathers a buffer
            example["token_type_ids"] = torch.zeros(1, 16, dtype=torch.long)
        export_module(module, example, path, max_length=64)
        return module, path, text_inputs
    if kind in ("vit", "deit"):
        module, size, name = hf_module(kind, int(rng.integers(1 << 30))), IMAGE, "pixel_values"
    else:
        module = torchvision_vit(kind, int(rng.integers(1 << 30)))
        size, name = (224 if kind == "vit_b_16" else IMAGE), "x"
    export_module(module, torch.from_numpy(image_inputs(rng, size, 1, name)[name]), path)
    return module, path, lambda rng: image_inputs(rng, size, name=name)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """kind -> export_kind's (module, file, inputs(rng)), exported once per kind."""
    folder = tmp_path_factory.mktemp("traced-attention")
    cache = {}

    def get(kind):
        if kind not in cache:
            cache[kind] = export_kind(kind, folder)
        return cache[kind]
    return get


def check_model(exported, kind, precision, rng, want_path, copies=False):
    import cupy
    module, path, make = exported(kind)
    draws = [make(rng) for _ in range(2)]
    refs = [reference(module, d) for d in draws]
    model = cupyprune.load(path, device="gpu", precision=precision, cuda_graph=True)
    for inputs, ref in zip(draws, refs):          # capture, then replay on fresh inputs
        out = model(**{k: cupy.asarray(v) for k, v in inputs.items()})
        err = rel_err(out, ref)
        print(f"{kind} {precision}: rel_err {err:.2e}")
        assert err <= TOLERANCE[precision]
    # the replay must see its own inputs: they move the logits far beyond the tolerance
    assert np.abs(refs[0] - refs[1]).max() > 2 * TOLERANCE[precision] * np.abs(refs[0]).max()
    assert model.graph_runner is not None and model.graph_runner.failed is None
    assert len(model.graph_runner.captured) == 1
    ops = [s.op for s in model.steps if s.node.op == SDPA]
    assert ops
    for op in ops:
        d = op.describe()
        assert d["attention"] == want_path, d
        assert ("copied" in d["detail"]) == copies, d
    return model


@pytest.mark.gpu
@pytest.mark.parametrize("precision", ["fp16", "bf16", "fp32"])
@pytest.mark.parametrize("kind", TEXT + ("vit", "deit"))
def test_hugging_face(exported, kind, precision, rng):
    model = check_model(exported, kind, precision, rng,
                        "gemm" if precision == "fp32" else "fused")
    masks = {s.op.mask_kind for s in model.steps if s.node.op == SDPA}
    assert masks == {"key_padding" if kind in TEXT else "none"}


@pytest.mark.gpu
@pytest.mark.parametrize("precision", ["fp16", "fp32"])
def test_torchvision_vit_small(exported, precision, rng):
    """nn.MultiheadAttention's heads come (T, N, H, dh)-ordered: one copy each, then fast."""
    check_model(exported, "small", precision, rng, "gemm" if precision == "fp32" else "fused",
                copies=True)


@pytest.mark.gpu
@pytest.mark.slow
@pytest.mark.parametrize("precision", ["fp16", "fp32"])
def test_torchvision_vit_b_16(exported, precision, rng):
    """197 tokens: past the fused kernel's 128, batched GEMMs in every precision."""
    check_model(exported, "vit_b_16", precision, rng, "gemm", copies=True)


# -- the op alone ------------------------------------------------------------------------------
N, H, T, DH = 3, 4, 20, 16


def sdpa_op(precision, **attrs):
    from cupyprune.graph import parse_graph
    from cupyprune.gpu.gemm import Matmul
    from cupyprune.ops import OPS, LoadContext
    from cupyprune.precision import PRECISIONS
    import cupy
    node = {"name": "sdpa", "op": SDPA, "inputs": ["q", "k", "v", "m"], "outputs": ["sdpa"],
            "attrs": attrs}
    graph = parse_graph({"inputs": ["q", "k", "v", "m"], "outputs": ["sdpa"], "nodes": [node]},
                        OPS)
    ctx = LoadContext(xp=cupy, dtype=PRECISIONS[precision], tensors={}, pruning={},
                      matmul=Matmul(cupy))
    return OPS[SDPA](graph.nodes[0], ctx)


def stored_heads(rng, precision):
    """q, k, v as the traced graph hands them: (N, H, T, dh) views of (N, T, D) arrays in the
    run's storage; and their float64 values."""
    import cupy
    from conftest import stored
    out = []
    for _ in range(3):
        values, arr = stored(rng.standard_normal((N, T, H * DH)), precision)
        view = lambda a: a.reshape(N, T, H, DH).transpose(0, 2, 1, 3)      # noqa: E731
        out.append((view(values), view(arr)))
        assert not view(arr).flags.c_contiguous and isinstance(view(arr), cupy.ndarray)
    return out


def reference_attention(q, k, v, mask):
    """float64 NumPy: softmax(q k^T / sqrt(dh) + mask) v; a bool mask drops its False keys."""
    s = q @ k.transpose(0, 1, 3, 2) / math.sqrt(DH)
    s = np.where(mask, s, -np.inf) if mask is not None and mask.dtype == bool else \
        s + (0 if mask is None else mask)
    e = np.exp(s - s.max(-1, keepdims=True))
    return (e / e.sum(-1, keepdims=True)) @ v


def padding():
    keep = np.ones((N, T), bool)
    keep[1, T - 6:] = False
    keep[2, T - 1:] = False
    return keep


MASKS = {   # name -> (host mask, mask_kind the graph would prove, path expected in fp16)
    "none": (lambda: None, None, "fused"),
    "(N, 1, 1, S)": (lambda: padding()[:, None, None, :], None, "fused"),
    "expanded (N, 1, T, S)": (lambda: np.broadcast_to(padding()[:, None, None, :],
                                                      (N, 1, T, T)), None, "fused"),
    "materialised, proven key padding": (lambda: np.ascontiguousarray(np.broadcast_to(
        padding()[:, None, None, :], (N, 1, T, T))), "key_padding", "fused"),
    "all true, proven": (lambda: np.ones((1, 1, T, 1), bool), "none", "fused"),
    "causal": (lambda: np.tril(np.ones((T, T), bool)), None, "generic"),
    "additive": (lambda: np.where(padding(), 0.0, -1e4)[:, None, None, :].astype(np.float32),
                 None, "generic"),
}


@pytest.mark.gpu
@pytest.mark.parametrize("precision", ["fp16", "bf16", "fp32"])
@pytest.mark.parametrize("name", MASKS)
def test_op_fast_and_generic_agree(rng, precision, name):
    import cupy
    from conftest import host_values, stored
    make, kind, path = MASKS[name]
    (qv, q), (kv, k), (vv, v) = stored_heads(rng, precision)
    host = make()
    mask = None
    if host is not None:
        if host.dtype == bool:
            mask = cupy.asarray(host)
            if 0 in host.strides:                     # an expand: keep its zero strides
                mask = cupy.broadcast_to(cupy.asarray(padding()[:, None, None, :]), host.shape)
        else:
            host, mask = stored(host.astype(np.float64), precision)
    op = sdpa_op(precision)
    op.mask_kind = kind
    out = op(q, k, v, mask)                                            # (N, H, T, dh)
    want = "gemm" if precision == "fp32" and path == "fused" else path
    assert op.describe()["attention"] == want, op.describe()
    assert out.shape == (N, H, T, DH)
    ref = reference_attention(qv, kv, vv, host)
    tol = {"fp32": 1e-5, "fp16": 1e-2, "bf16": 8e-2}[precision]     # test_gpu_kernels.py's
    assert rel_err(host_values(out), ref) <= tol
    if want != "generic":                        # the output is the (N, T, D) result's view
        merged = out.transpose(0, 2, 1, 3)
        assert merged.flags.c_contiguous
