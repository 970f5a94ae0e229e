"""The runtime's own transformer kernels (cupyprune/gpu/rowwise.py, attention.py) against
float64 torch.nn.functional on fresh random inputs, in fp32 and fp16, at odd sizes and at
BERT-base's."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from conftest import rel_err

pytestmark = pytest.mark.gpu
TOL = {"fp32": 2e-6, "fp16": 2e-3}
DTYPES = {"fp32": np.float32, "fp16": np.float16}


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
# 1,024 rows or more, of up to 1,024 values, run warp-per-row from registers; fewer rows, or
# longer ones, a block per row
@pytest.mark.parametrize("rows,D", [(1030, 37), (1024, 768), (1100, 1024), (5, 37), (64, 768),
                                    (3, 1500), (2000, 1500)])
def test_layer_norm(rng, precision, rows, D):
    import cupy
    from cupyprune.gpu.rowwise import layer_norm
    dt = DTYPES[precision]
    x = (rng.standard_normal((rows, D)) * 3 + 1.5).astype(dt)
    w, b = rng.standard_normal(D).astype(dt), rng.standard_normal(D).astype(dt)
    out = layer_norm(cupy.asarray(x), cupy.asarray(w), cupy.asarray(b), 1e-12)
    T = lambda a: torch.from_numpy(a.astype(np.float64))                 # noqa: E731
    ref = F.layer_norm(T(x), (D,), T(w), T(b), 1e-12).numpy()
    assert out.dtype == dt
    assert rel_err(cupy.asnumpy(out), ref) <= TOL[precision]


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


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
# softmax rows: BERT's 128, ViT-tiny's 257 and odd lengths from registers; 1,100 loops
@pytest.mark.parametrize("N,T,heads,dh", [(3, 7, 2, 8), (4, 128, 12, 64), (2, 33, 3, 16),
                                           (1, 257, 3, 8), (1, 1100, 1, 8)])
@pytest.mark.parametrize("masked", [False, True])
def test_self_attention(rng, precision, N, T, heads, dh, masked):
    import cupy
    from cupyprune.gpu.attention import self_attention
    dt = DTYPES[precision]
    D = heads * dh
    q, k, v = (rng.standard_normal((N, T, D)).astype(dt) for _ in range(3))
    mask = None
    if masked:
        mask = np.ones((N, T), dtype=np.int64)
        for n in range(N):                                      # each row keeps >= 1 key
            mask[n, rng.integers(1, T + 1):] = 0
    out = self_attention(*(cupy.asarray(a) for a in (q, k, v)), heads,
                         None if mask is None else cupy.asarray(mask))
    ref = _reference_attention(q, k, v, heads, mask)
    assert out.shape == (N, T, D) and out.dtype == dt
    assert rel_err(cupy.asnumpy(out), ref) <= TOL[precision] * 5


def test_attention_replays_in_a_cuda_graph(rng):
    """Pointer arrays are written by a kernel, so a captured graph replays correctly on new
    values copied into the same buffers."""
    import cupy
    from cupyprune.gpu.attention import self_attention
    from cupyprune.gpu.graph import capture_stream
    q, k, v = (cupy.asarray(rng.standard_normal((2, 16, 32)).astype(np.float32))
               for _ in range(3))
    stream = capture_stream()
    with stream:
        self_attention(q, k, v, 4)
        stream.synchronize()
        stream.begin_capture()
        out = self_attention(q, k, v, 4)
        graph = stream.end_capture()
        fresh = [rng.standard_normal((2, 16, 32)).astype(np.float32) for _ in range(3)]
        for buf, value in zip((q, k, v), fresh):
            buf[...] = cupy.asarray(value)
        graph.launch(stream)
        stream.synchronize()
    assert rel_err(cupy.asnumpy(out), _reference_attention(*fresh, 4, None)) <= 1e-5


@pytest.mark.parametrize("dtype", [np.int64, np.int32, np.uint8, np.uint64, np.int16])
def test_count_outside_matches_numpy(rng, dtype):
    """The id range check of the GPU path (gpu/checks.py) counts what NumPy counts, for every
    integer type, strided views included, several arrays in one call."""
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
    assert count_outside([cupy.asarray(np.clip(arrays[2], 0, 199))], [200]) == [0]


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
