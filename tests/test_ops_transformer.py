"""Transformer ops against independent references: torch.nn.functional and float64 NumPy."""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from conftest import devices, rel_err
from cupyprune.backend import array_module, to_numpy
from cupyprune.errors import InputError
from cupyprune.graph import Node
from cupyprune.ops import OPS, LoadContext
from cupyprune.ops.schema import check_attrs
from cupyprune.ops.transformer import softmax

N, T, D, HEADS = 3, 7, 32, 4


def build(dev, op, tensors=None, params=None, attrs=None, n_inputs=1):
    """One op compiled for `dev` from tensors (host NumPy)."""
    xp = array_module(dev)
    node = Node(f"test.{op}", op, [f"in{i}" for i in range(n_inputs)], ["out"],
                params or {}, attrs or {})
    check_attrs(node, OPS[op])                 # what the graph parser does for every node
    ctx = LoadContext(xp=xp, dtype=np.float32, tensors=tensors or {}, pruning={})
    return OPS[op](node, ctx), xp


def f32(rng, *shape):
    return rng.standard_normal(shape).astype(np.float32)


def t(a):
    return torch.from_numpy(np.ascontiguousarray(a))


@pytest.mark.parametrize("dev", devices())
def test_layer_norm(dev, rng):
    x, w, b = f32(rng, N, T, D) * 3 + 1, f32(rng, D), f32(rng, D)
    op, xp = build(dev, "layer_norm", {"w": w, "b": b}, {"weight": "w", "bias": "b"},
                   {"eps": 1e-12})
    y = op(xp.asarray(x))
    ref = F.layer_norm(t(x).double(), (D,), t(w).double(), t(b).double(), eps=1e-12).numpy()
    assert y.shape == (N, T, D) and y.dtype == np.float32
    assert rel_err(y, ref) <= 1e-5


@pytest.mark.parametrize("approximate", ["none", "tanh"])
@pytest.mark.parametrize("dev", devices())
def test_gelu_both_forms(dev, approximate, rng):
    x = f32(rng, N, T, D) * 4
    op, xp = build(dev, "gelu", attrs={"approximate": approximate})
    ref = F.gelu(t(x).double(), approximate=approximate).numpy()
    assert rel_err(op(xp.asarray(x)), ref) <= 1e-6


def _softmax64(x):
    x = x.astype(np.float64)
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


@pytest.mark.parametrize("dev", devices())
def test_softmax_is_stable_for_large_logits(dev, rng):
    x = f32(rng, 4, 9)
    x[0] += 1e4                                        # exp(1e4) overflows without the max shift
    x[1, :3] += 3e4
    x[2] -= 1e4
    x[3, 0] = np.finfo(np.float32).min                 # a masked key
    xp = array_module(dev)
    y = to_numpy(softmax(xp, xp.asarray(x)))
    assert np.isfinite(y).all()
    assert np.abs(y - _softmax64(x)).max() <= 1e-6
    np.testing.assert_allclose(y.sum(axis=-1), 1.0, rtol=1e-6)


def _attention64(q, k, v, mask, heads):
    """float64 loops over batch and head: softmax(q k^T / sqrt(dh) + masked) v."""
    n, tt, d = q.shape
    dh = d // heads
    out = np.zeros((n, tt, d))
    for b in range(n):
        for h in range(heads):
            sl = slice(h * dh, (h + 1) * dh)
            s = q[b, :, sl].astype(np.float64) @ k[b, :, sl].T.astype(np.float64) / math.sqrt(dh)
            if mask is not None:
                s = np.where(mask[b][None, :] > 0, s, -np.inf)
            out[b, :, sl] = _softmax64(s) @ v[b, :, sl]
    return out


def _padding_mask(rng):
    mask = np.ones((N, T), dtype=np.int64)
    for b, pad in enumerate(rng.integers(0, T - 1, size=N)):
        if pad:
            mask[b, -pad:] = 0
    mask[0, -2:] = 0                                   # at least one row is padded
    return mask


@pytest.mark.parametrize("masked", [True, False])
@pytest.mark.parametrize("dev", devices())
def test_self_attention(dev, masked, rng):
    q, k, v = f32(rng, N, T, D), f32(rng, N, T, D), f32(rng, N, T, D)
    mask = _padding_mask(rng) if masked else None
    op, xp = build(dev, "self_attention", attrs={"num_heads": HEADS}, n_inputs=4 if masked else 3)
    args = [xp.asarray(a) for a in (q, k, v)] + ([xp.asarray(mask)] if masked else [])
    y = op(*args)
    assert y.shape == (N, T, D) and y.dtype == np.float32
    assert rel_err(y, _attention64(q, k, v, mask, HEADS)) <= 1e-5
    # and torch's fused attention, heads split the same way
    split = [t(a).view(N, T, HEADS, D // HEADS).transpose(1, 2) for a in (q, k, v)]
    keep = None if mask is None else t(mask > 0)[:, None, None, :]
    ref = F.scaled_dot_product_attention(*split, attn_mask=keep)
    assert rel_err(y, ref.transpose(1, 2).reshape(N, T, D).numpy()) <= 1e-5


@pytest.mark.parametrize("dev", devices())
def test_attention_with_large_scores(dev, rng):
    q, k, v = f32(rng, N, T, D) * 30, f32(rng, N, T, D) * 30, f32(rng, N, T, D)  # scores ~1e3
    op, xp = build(dev, "self_attention", attrs={"num_heads": HEADS}, n_inputs=3)
    y = op(*(xp.asarray(a) for a in (q, k, v)))
    assert rel_err(y, _attention64(q, k, v, None, HEADS)) <= 1e-4


@pytest.mark.parametrize("dev", devices())
def test_embeddings(dev, rng):
    V, P, TYPES = 50, 10, 2
    word, pos, typ = f32(rng, V, D), f32(rng, P, D), f32(rng, TYPES, D)
    ids = rng.integers(0, V, size=(N, T))
    types = rng.integers(0, TYPES, size=(N, T))
    emb, xp = build(dev, "embedding", {"w": word}, {"weight": "w"})
    tte, _ = build(dev, "token_type_embedding", {"w": typ}, {"weight": "w"}, n_inputs=2)
    pe, _ = build(dev, "position_embedding", {"w": pos}, {"weight": "w"})
    y = pe(tte(emb(xp.asarray(ids)), xp.asarray(types)))
    ref = (F.embedding(t(ids), t(word)) + F.embedding(t(types), t(typ))
           + t(pos)[:T][None]).numpy()
    assert y.shape == (N, T, D) and y.dtype == np.float32
    assert rel_err(y, ref) <= 1e-6


@pytest.mark.parametrize("dev", devices())
def test_vit_token_ops(dev, rng):
    h, w = 3, 4
    x = f32(rng, N, D, h, w)                           # what the patch conv gives, NCHW
    cls, pos = f32(rng, 1, 1, D), f32(rng, 1, h * w + 1, D)
    p2t, xp = build(dev, "patches_to_tokens")
    pre, _ = build(dev, "prepend_token", {"c": cls}, {"token": "c"})
    add, _ = build(dev, "add_param", {"p": pos}, {"weight": "p"})
    sel, _ = build(dev, "select_token", attrs={"index": 0})
    tokens = add(pre(p2t(xp.asarray(x.transpose(0, 2, 3, 1)))))   # runtime is channels-last
    ref = torch.cat([t(cls).expand(N, 1, D), t(x).flatten(2).transpose(1, 2)], 1) + t(pos)
    assert tokens.shape == (N, h * w + 1, D)
    assert rel_err(tokens, ref.numpy()) <= 1e-6
    assert rel_err(sel(tokens), ref[:, 0].numpy()) <= 1e-6


# -- bad inputs: each an InputError whose message names the problem ---------------------------

@pytest.mark.parametrize("dev", devices())
def test_token_id_out_of_vocab(dev, rng):
    emb, xp = build(dev, "embedding", {"w": f32(rng, 50, D)}, {"weight": "w"})
    ids = rng.integers(0, 50, size=(N, T))
    ids[1, 2] = 57
    with pytest.raises(InputError, match=r"token id 57 .*50"):
        emb(xp.asarray(ids))
    with pytest.raises(InputError, match=r"token id -1 "):
        emb(xp.asarray(np.full((1, 2), -1)))


@pytest.mark.parametrize("dev", devices())
def test_token_type_out_of_range(dev, rng):
    tte, xp = build(dev, "token_type_embedding", {"w": f32(rng, 2, D)}, {"weight": "w"},
                    n_inputs=2)
    with pytest.raises(InputError, match=r"token type id 2 .*2 token types"):
        tte(xp.asarray(f32(rng, N, T, D)), xp.asarray(np.full((N, T), 2)))
    with pytest.raises(InputError, match=r"token type ids have shape \(3, 5\)"):
        tte(xp.asarray(f32(rng, N, T, D)), xp.asarray(np.zeros((N, 5), dtype=np.int64)))


@pytest.mark.parametrize("dev", devices())
def test_sequence_longer_than_position_table(dev, rng):
    pe, xp = build(dev, "position_embedding", {"w": f32(rng, 5, D)}, {"weight": "w"})
    with pytest.raises(InputError, match=r"sequence of 7 tokens is longer than the 5 positions"):
        pe(xp.asarray(f32(rng, N, T, D)))


@pytest.mark.parametrize("dev", devices())
def test_attention_mask_shape(dev, rng):
    op, xp = build(dev, "self_attention", attrs={"num_heads": HEADS}, n_inputs=4)
    q = xp.asarray(f32(rng, N, T, D))
    with pytest.raises(InputError, match=r"attention mask has shape \(3, 5\).*\(3, 7\)"):
        op(q, q, q, xp.ones((N, 5), dtype=xp.int64))


@pytest.mark.parametrize("dev", devices())
def test_patch_grid_does_not_fit_position_table(dev, rng):
    add, xp = build(dev, "add_param", {"p": f32(rng, 1, 65, D)}, {"weight": "p"})
    with pytest.raises(InputError, match=r"145 tokens .* 65.*image size"):
        add(xp.asarray(f32(rng, 1, 145, D)))
