"""When a traced scaled_dot_product_attention takes the GPU's self-attention (ops/sdpa_plan.py):
decided from shapes, strides and dtypes alone, so NumPy arrays of the same layouts stand in for
CuPy ones here. Legend: N batch, H heads, T tokens, dh head size, D = H * dh."""
import numpy as np
import pytest

from cupyprune.attention_masks import KEY_PADDING, NONE
from cupyprune.gpu.traced_attention import key_mask, merged, split
from cupyprune.ops.sdpa_plan import FastPlan, heads_merged, pads_keys_only, plan

N, H, T, DH = 3, 4, 5, 8


def heads(dtype=np.float32, n=N, t=T):
    """What a traced encoder hands the op: linear (N, T, D) -> view -> transpose(1, 2)."""
    base = np.zeros((n, t, H * DH), dtype=dtype)
    return base.reshape(n, t, H, DH).transpose(0, 2, 1, 3)           # (N, H, T, dh)


def mha_heads(dtype=np.float32):
    """nn.MultiheadAttention's: a (T, N*H, dh) array transposed and viewed as (N, H, T, dh)."""
    return np.zeros((T, N * H, DH), dtype=dtype).transpose(1, 0, 2).reshape(N, H, T, DH)


def qkv(**kw):
    return heads(**kw), heads(**kw), heads(**kw)


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.uint16])
def test_encoder_heads_are_read_in_place(dtype):
    assert plan(*qkv(dtype=dtype)) == FastPlan(H, (False, False, False), NONE)


@pytest.mark.parametrize("n", [1, 2])
def test_any_batch_and_single_token(n):
    assert plan(*qkv(n=n)) == FastPlan(H, (False, False, False), NONE)
    assert plan(*qkv(n=n, t=1)) == FastPlan(H, (False, False, False), NONE)


def test_multihead_attention_layout_takes_copies():
    q = mha_heads()
    assert not heads_merged(q.shape, q.strides, q.itemsize)
    assert plan(q, heads(), mha_heads()) == FastPlan(H, (True, False, True), NONE)
    contiguous = np.zeros((N, H, T, DH), np.float32)                   # heads not interleaved
    assert plan(contiguous, contiguous, contiguous).copies == (True, True, True)


@pytest.mark.parametrize("scale", [None, DH ** -0.5, 1 / np.sqrt(DH)])
def test_default_scale(scale):
    assert isinstance(plan(*qkv(), scale=scale), FastPlan)


@pytest.mark.parametrize("case, why", [
    (lambda: dict(scale=0.5), "scale"),
    (lambda: dict(is_causal=True), "causal"),
    (lambda: dict(k=heads(t=T + 1), v=heads(t=T + 1)), "shapes differ"),
    (lambda: dict(q=heads(dtype=np.float64), k=heads(dtype=np.float64),
                  v=heads(dtype=np.float64)), "dtype"),
    (lambda: dict(v=heads(dtype=np.float16)), "dtype"),
    (lambda: dict(q=np.zeros((N * H, T, DH), np.float32), k=np.zeros((N * H, T, DH), np.float32),
                  v=np.zeros((N * H, T, DH), np.float32)), "not (N, H, T, dh)"),
    (lambda: dict(q=heads(n=0), k=heads(n=0), v=heads(n=0)), "empty"),
])
def test_generic_cases(case, why):
    args = dict(zip("qkv", qkv()))
    args.update(case())
    got = plan(args.pop("q"), args.pop("k"), args.pop("v"), **args)
    assert isinstance(got, str) and why in got


def padding_rows():
    keep = np.ones((N, T), bool)
    keep[1, -2:] = False
    return keep


KEY_MASKS = {
    "(N, 1, 1, S)": lambda: padding_rows()[:, None, None, :],
    "expanded (N, 1, T, S)": lambda: np.broadcast_to(padding_rows()[:, None, None, :],
                                                     (N, 1, T, T)),
    "expanded (N, H, T, S)": lambda: np.broadcast_to(padding_rows()[:, None, None, :],
                                                     (N, H, T, T)),
    "(S,)": lambda: padding_rows()[0],
    "(1, 1, 1, S)": lambda: padding_rows()[1:2, None, None, :],
}


@pytest.mark.parametrize("name", KEY_MASKS)
def test_key_padding_masks_by_layout(name):
    mask = KEY_MASKS[name]()
    assert pads_keys_only(mask.shape, mask.strides)
    assert plan(*qkv(), mask=mask) == FastPlan(H, (False, False, False), KEY_PADDING)
    rows = key_mask(np, mask, N, T)                                   # (N, S) of 0/1
    assert rows.shape == (N, T) and rows.dtype == np.int64 and rows.flags.c_contiguous
    want = np.broadcast_to(mask, (N, H, T, T))
    assert (rows[:, None, None, :] == want).all()


def test_materialised_mask_needs_the_graphs_word():
    """HF's (N, 1, T, S) mask is materialised by a logical_and: padding only by what the graph
    proves (attention_masks.py), always true when the graph proves that."""
    mask = np.ascontiguousarray(np.broadcast_to(padding_rows()[:, None, None, :], (N, 1, T, T)))
    assert not pads_keys_only(mask.shape, mask.strides)
    assert "varies" in plan(*qkv(), mask=mask)
    assert plan(*qkv(), mask=mask, mask_kind=KEY_PADDING).mask == KEY_PADDING
    assert plan(*qkv(), mask=np.ones((N, 1, T, T), bool), mask_kind=NONE).mask == NONE


@pytest.mark.parametrize("mask, why", [
    (lambda: np.tril(np.ones((T, T), bool)), "varies"),                   # causal
    (lambda: np.ones((N, H, T, T), bool), "varies"),                      # a full mask
    (lambda: np.zeros((N, 1, 1, T), np.float32), "additive"),             # float: a bias
    (lambda: np.ones((N + 1, 1, 1, T), bool), "broadcast"),
    (lambda: np.ones((N, 1, 1, T + 1), bool), "broadcast"),
    (lambda: np.ones((1, N, 1, 1, T), bool), "more than 4"),
])
def test_masks_that_go_generic(mask, why):
    got = plan(*qkv(), mask=mask(), mask_kind=None)
    assert isinstance(got, str) and why in got


def test_float_mask_goes_generic_whatever_the_graph_says():
    assert "additive" in plan(*qkv(), mask=np.zeros((N, 1, T, T), np.float16),
                              mask_kind=KEY_PADDING)


def test_merged_and_split_are_views_of_encoder_heads():
    q = heads()
    q3 = merged(np, q)                                                  # (N, T, D)
    assert q3.shape == (N, T, H * DH) and np.shares_memory(q3, q)
    out = split(q3, H)                                                  # (N, H, T, dh)
    assert out.shape == q.shape and np.shares_memory(out, q3)
    after = out.transpose(0, 2, 1, 3).reshape(N, T, H * DH)              # the graph's merge
    assert np.shares_memory(after, q3)
    mha = mha_heads()
    assert not np.shares_memory(merged(np, mha), mha)                   # one copy


def test_fast_path_arithmetic_matches_the_generic_code(rng):
    """The key mask and the (N, T, D) views, through a NumPy self-attention, give the generic
    op's values (the GPU kernels' own parity is tested in test_gpu_kernels.py)."""
    from cupyprune.ops.transformer import softmax
    base = [rng.standard_normal((N, T, H * DH)) for _ in range(3)]
    q, k, v = (b.reshape(N, T, H, DH).transpose(0, 2, 1, 3) for b in base)
    mask = np.broadcast_to(padding_rows()[:, None, None, :], (N, 1, T, T))
    scores = np.where(mask, q @ k.transpose(0, 1, 3, 2) / np.sqrt(DH), -np.inf)
    want = softmax(np, scores) @ v                                      # (N, H, T, dh)
    q3, k3, v3 = (merged(np, a) for a in (q, k, v))
    rows = key_mask(np, mask, N, T)
    s = split(q3, H) @ split(k3, H).transpose(0, 1, 3, 2) / np.sqrt(DH)
    s = s + np.where(rows == 0, np.finfo(np.float64).min, 0.0)[:, None, None, :]
    got = split(np.ascontiguousarray((softmax(np, s) @ split(v3, H)).transpose(0, 2, 1, 3))
                .reshape(N, T, H * DH), H)
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
