"""The runtime's own transformer kernels (cupyprune/gpu/rowwise.py, attention.py) against
float64 torch.nn.functional on fresh random inputs, in fp32 and fp16 (layer norm also bf16), at
odd sizes and at BERT-base's."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from conftest import host_values, rel_err, stored

pytestmark = pytest.mark.gpu
TOL = {"fp32": 2e-6, "fp16": 2e-3, "bf16": 1.6e-2}


@pytest.mark.parametrize("precision", ["fp32", "fp16", "bf16"])
# 1,024 rows or more, of up to 1,024 values, run warp-per-row from registers (16-byte packs
# where D and the pointers allow: 768, 1024, 520 with a part-filled last pack round); fewer
# rows, or longer ones, a block per row
@pytest.mark.parametrize("rows,D", [(1030, 37), (1024, 768), (1100, 1024), (1024, 520), (5, 37),
                                    (64, 768), (3, 1500), (2000, 1500)])
@pytest.mark.parametrize("aligned", [True, False])
def test_layer_norm(rng, precision, rows, D, aligned):
    import cupy
    from cupyprune.gpu import rowwise
    x, dx = stored(rng.standard_normal((rows, D)) * 3 + 1.5, precision)
    (w, dw), (b, db) = stored(rng.standard_normal(D), precision), \
        stored(rng.standard_normal(D), precision)
    if not aligned:                      # the same values one element into a larger buffer
        buf = cupy.empty(dx.size + 1, dtype=dx.dtype)
        buf[1:] = dx.ravel()
        dx = buf[1:].reshape(rows, D)
        assert dx.flags.c_contiguous and dx.data.ptr % 16
    rowwise._KERNELS.clear()
    out = rowwise.layer_norm(dx, dw, db, 1e-12)
    T = lambda a: torch.from_numpy(a)                                    # noqa: E731
    ref = F.layer_norm(T(x), (D,), T(w), T(b), 1e-12).numpy()
    assert out.dtype == dx.dtype
    got = host_values(out)
    assert rel_err(got, ref) <= TOL[precision]
    packed = aligned and rows >= 1024 and D <= 1024 and D % (16 // dx.dtype.itemsize) == 0
    assert any(k[0] == "layer_norm_packed" for k in rowwise._KERNELS) == packed


def _reference_attention(q, k, v, heads, mask):
    N, T, D = q.shape
    dh = D // heads
    split = lambda a: torch.from_numpy(a.astype(np.float64)).reshape(  # noqa: E731
        N, T, heads, dh).transpose(1, 2)
    s = split(q) @ split(k).transpose(-1, -2) / np.sqrt(dh)             # (N, H, T, T)
    if mask is not None:
        s = s.masked_fill(torch.from_numpy(mask == 0)[:, None, None, :], -1e30)
    out = torch.softmax(s, -1) @ split(v)                               # (N, H, T, dh)
    return out.transpose(1, 2).reshape(N, T, D).numpy()


@pytest.mark.parametrize("precision", ["fp32", "fp16", "bf16"])
# softmax rows: BERT's 128, ViT-tiny's 257 and odd lengths from registers; 1,100 loops; ViT
# CIFAR's 65 tokens of 12 heads; the fused kernel's key chunks: 100 tokens in seven chunks of 16,
# 90 in two of 48, 128 in two of 64
@pytest.mark.parametrize("N,T,heads,dh", [(3, 7, 2, 8), (4, 128, 12, 64), (2, 33, 3, 16),
                                           (1, 257, 3, 8), (1, 1100, 1, 8), (2, 65, 12, 64),
                                           (2, 100, 2, 32), (3, 90, 2, 64)])
@pytest.mark.parametrize("masked", [False, True])
# padded_kv copies k and v per head with zero rows up to a 16-byte multiple of T, and runs
# unpadded where T is already one; fused is one tensor-core kernel for 16-bit storage at
# dh 16/32/64 and T <= 128, padded_kv elsewhere
@pytest.mark.parametrize("layout", ["unpadded", "padded_kv", "fused"])
def test_self_attention(rng, precision, N, T, heads, dh, masked, layout):
    import cupy
    from cupyprune.gpu import attention, fused_attention
    D = heads * dh
    (q, dq), (k, dk), (v, dv) = (stored(rng.standard_normal((N, T, D)), precision)
                                 for _ in range(3))
    mask = None
    if masked:
        mask = np.ones((N, T), dtype=np.int64)
        for n in range(N):                                      # each row keeps >= 1 key
            mask[n, rng.integers(1, T + 1):] = 0
    attention._KERNELS.clear()
    fused_attention._KERNELS.clear()
    out = attention.self_attention(dq, dk, dv, heads,
                                   None if mask is None else cupy.asarray(mask), layout=layout)
    ref = _reference_attention(q, k, v, heads, mask)
    assert out.shape == (N, T, D) and out.dtype == dq.dtype
    got = host_values(out)
    assert rel_err(got, ref) <= TOL[precision] * 5
    fused = layout == "fused" and precision != "fp32" and dh in (16, 32, 64) and T <= 128
    padded = layout != "unpadded" and not fused and T % (16 // dq.dtype.itemsize) != 0
    assert bool(fused_attention._KERNELS) == fused
    assert ("pad_kv" in attention._KERNELS) == padded


@pytest.mark.parametrize("precision", ["fp16", "bf16"])
@pytest.mark.parametrize("T,dh", [(128, 64), (100, 32), (65, 64), (20, 16)])
@pytest.mark.parametrize("warps", [1, 2, 3, 4, 8])
def test_fused_attention_block_shapes(rng, precision, T, dh, warps):
    """Every block shape (warps of 16 query rows a block, idle warps in the last block included)
    gives float64's values, with a mask that leaves the first key chunks without a single kept
    key in some samples (their running sums must be dropped once a kept key arrives) and only
    the first key kept in another."""
    import cupy
    from cupyprune.gpu.fused_attention import fused_self_attention
    N, heads = 3, 2
    D = heads * dh
    (q, dq), (k, dk), (v, dv) = (stored(rng.standard_normal((N, T, D)) * 2, precision)
                                 for _ in range(3))
    mask = np.ones((N, T), dtype=np.int64)
    mask[0, :T - 3] = 0                                  # only the last three keys kept
    mask[1, 1:] = 0                                      # only the first
    out = fused_self_attention(dq, dk, dv, heads, cupy.asarray(mask), warps=warps)
    ref = _reference_attention(q, k, v, heads, mask)
    assert rel_err(host_values(out), ref) <= TOL[precision] * 5


def test_fused_attention_needs_sm80(rng, monkeypatch):
    """On a GPU older than compute capability 8.0 (no 16-bit mma.m16n8k16, ldmatrix, cp.async)
    the fused layout takes the GEMM path, with the same values."""
    import cupy
    from cupyprune.gpu import attention, fused_attention
    N, T, heads, D = 2, 65, 2, 64
    values = [stored(rng.standard_normal((N, T, D)), "fp16") for _ in range(3)]
    monkeypatch.setitem(fused_attention._CAPABLE, cupy.cuda.Device().id, False)
    fused_attention._KERNELS.clear()
    out = attention.self_attention(*(d for _, d in values), heads, layout="fused")
    assert not fused_attention._KERNELS
    ref = _reference_attention(*(h for h, _ in values), heads, None)
    assert rel_err(host_values(out), ref) <= TOL["fp16"] * 5


@pytest.mark.parametrize("precision", ["fp16", "bf16"])
@pytest.mark.parametrize("layout", ["padded_kv", "fused"])
def test_attention_falls_back_on_misaligned_heads(rng, precision, layout):
    """k and v one element into their buffers: no 16-byte loads or copies (neither the fused
    kernel nor padded_kv), the unpadded GEMMs, and the same values."""
    import cupy
    from cupyprune.gpu import attention, fused_attention
    N, T, heads, D = 2, 9, 1, 16
    values = [stored(rng.standard_normal((N, T, D)), precision) for _ in range(3)]
    shifted = []
    for _, d in values[1:]:
        buf = cupy.empty(d.size + 1, dtype=d.dtype)
        buf[1:] = d.ravel()
        shifted.append(buf[1:].reshape(N, T, D))
    attention._KERNELS.clear()
    fused_attention._KERNELS.clear()
    out = attention.self_attention(values[0][1], *shifted, heads, layout=layout)
    assert "pad_kv" not in attention._KERNELS and not fused_attention._KERNELS
    ref = _reference_attention(*(h for h, _ in values), heads, None)
    assert rel_err(host_values(out), ref) <= TOL[precision] * 5


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
@pytest.mark.parametrize("L,ld", [(65, 72), (5, 8), (33, 36)])
def test_softmax_of_padded_rows_zeroes_the_padding(rng, precision, L, ld):
    """Rows ld long, softmax over the first L (scale and mask applied); columns L..ld-1, which
    held random values, come back zero."""
    import cupy
    from cupyprune.gpu.rowwise import attention_softmax_
    N, heads, T = 3, 2, 4
    s, ds = stored(rng.standard_normal((N * heads, T, ld)) * 4, precision)
    mask = np.ones((N, L), dtype=np.int64)
    mask[1, L // 2:] = 0
    attention_softmax_(ds, 0.5, cupy.asarray(mask), heads, length=L)
    got = host_values(ds)
    ref = torch.from_numpy(s[..., :L] * 0.5).reshape(N, heads, T, L)
    ref = ref.masked_fill(torch.from_numpy(mask == 0)[:, None, None, :], -1e30)
    ref = torch.softmax(ref, -1).reshape(N * heads, T, L).numpy()
    assert rel_err(got[..., :L], ref) <= TOL[precision]
    assert np.all(got[..., L:] == 0) and np.all(s[..., L:] != 0)


# fp32 (unpadded GEMMs), bf16 at an odd T with dh 8 (padded_kv), fp16 at ViT's 65 tokens with
# dh 16 (the fused kernel)
@pytest.mark.parametrize("precision,T,D", [("fp32", 16, 32), ("bf16", 17, 32), ("fp16", 65, 64)])
def test_attention_replays_in_a_cuda_graph(rng, precision, T, D):
    """Pointer arrays are written by a kernel, so a captured graph replays correctly on new
    values copied into the same buffers, in each of the default layouts."""
    from cupyprune.gpu.attention import self_attention
    from cupyprune.gpu.graph import capture_stream
    q, k, v = (stored(rng.standard_normal((2, T, D)), precision)[1] for _ in range(3))
    stream = capture_stream()
    with stream:
        self_attention(q, k, v, 4)
        stream.synchronize()
        stream.begin_capture()
        out = self_attention(q, k, v, 4)
        graph = stream.end_capture()
        fresh = [stored(rng.standard_normal((2, T, D)), precision) for _ in range(3)]
        for buf, (_, value) in zip((q, k, v), fresh):
            buf[...] = value
        graph.launch(stream)
        stream.synchronize()
    got = host_values(out)
    ref = _reference_attention(*(f[0] for f in fresh), 4, None)
    assert rel_err(got, ref) <= (1e-5 if precision == "fp32" else TOL[precision] * 5)


@pytest.mark.parametrize("dtype", [np.int64, np.int32, np.uint8, np.uint64, np.int16])
def test_count_outside_matches_numpy(rng, dtype):
    """The id range check of the GPU path (gpu/checks.py) counts what NumPy counts, for every
    integer type, strided views included, several arrays in one call, and calls in a row."""
    import cupy
    from cupyprune.gpu.checks import count_outside
    info = np.iinfo(dtype)
    arrays, limits = [], []
    for shape, limit in (((7, 300), 50), ((1, 5), 3), ((64, 128), 200)):
        lo, hi = max(int(info.min), -40), min(int(info.max), limit + 40)
        arrays.append(rng.integers(lo, hi + 1, size=shape).astype(dtype))
        limits.append(limit)
    arrays.append(arrays[0][:, ::3])                                      # a strided view
    limits.append(10)
    want = [int(np.count_nonzero((a.astype(np.float64) < 0) | (a.astype(np.float64) >= lim)))
            for a, lim in zip(arrays, limits)]
    assert sum(want) > 0
    got = count_outside([cupy.asarray(arrays[0])[:, ::3] if i == 3 else cupy.asarray(a)
                         for i, a in enumerate(arrays)], limits)
    assert got == want
    clipped = cupy.asarray(np.clip(arrays[2], 0, 199))
    assert count_outside([clipped], [200]) == [0]
    # the same buffers again (kept for reuse by array count): each call starts from zero
    assert count_outside([cupy.asarray(arrays[2])], [200]) == [want[2]]
    assert count_outside([clipped], [200]) == [0]


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
# kept counts that take each pack width (8, 4, 2, 1 values per thread), rows from 1 to BERT's
@pytest.mark.parametrize("rows,R,T", [(8192, 768, 384), (3, 50, 12), (7, 33, 6), (5, 40, 9),
                                      (1, 3072, 1536), (64, 4096, 1000)])
def test_gather_columns_matches_numpy(rng, dtype, rows, R, T):
    """The group-wise linear's gather (gpu/gather.py) copies exactly NumPy's x[:, cols], for any
    column order (repeats included) and for a strided view of a wider array."""
    import cupy
    from cupyprune.gpu.gather import gather_columns
    x = rng.standard_normal((rows, R + 5)).astype(dtype)
    cols = rng.choice(R, size=T, replace=T > R // 2).astype(np.int32)
    view = cupy.asarray(x)[:, 2:R + 2]                             # rows R + 5 apart
    got = gather_columns(view, cupy.asarray(cols))
    assert got.shape == (rows, T) and got.dtype == dtype
    assert np.array_equal(cupy.asnumpy(got), x[:, 2:R + 2][:, cols])
    odd = x[::2, 1:R + 1]
    got = gather_columns(cupy.asarray(x)[::2, 1:R + 1].T.copy().T, cupy.asarray(cols))  # F order
    assert np.array_equal(cupy.asnumpy(got), odd[:, cols])
