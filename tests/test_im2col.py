"""im2col of kept taps, channels-last: the NumPy builder and the CUDA kernel, each against an
independent reference (torch.nn.functional.unfold), on random inputs and random tap subsets."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from conftest import devices
from cupyprune.gpu.cuda_source import values_per_pack
from cupyprune.ops.im2col import TapPlan, TapTable, im2col_cupy, im2col_numpy

GEOMETRIES = [  # kh, kw, stride, padding, dilation, H, W
    (3, 3, (1, 1), (1, 1), (1, 1), 7, 6),
    (3, 3, (2, 2), (1, 1), (1, 1), 9, 9),
    (7, 7, (2, 2), (3, 3), (1, 1), 16, 15),
    (3, 3, (1, 2), (2, 0), (2, 1), 10, 11),
    (1, 1, (2, 2), (0, 0), (1, 1), 8, 8),
]


def unfold_reference(x_nchw, kh, kw, stride, padding, dilation):
    """F.unfold gives (N, C*kh*kw, L) in (c, i, j) order -> (M, kh*kw*C) in (i, j, c) order."""
    cols = F.unfold(torch.from_numpy(x_nchw).double(), (kh, kw), dilation=dilation,
                    padding=padding, stride=stride)
    N, CK, L = cols.shape
    C = x_nchw.shape[1]
    cols = cols.reshape(N, C, kh * kw, L).permute(0, 3, 2, 1)       # (N, L, kh*kw, C)
    return cols.reshape(N * L, kh * kw * C).numpy()


@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize("dtype", [np.float32, np.float16])
@pytest.mark.parametrize("geom", GEOMETRIES)
@pytest.mark.parametrize("keep", [1.0, 0.5, 0.1])
@pytest.mark.parametrize("pad_to", [1, 4, 8])
def test_im2col_kept_taps(rng, device, dtype, geom, keep, pad_to):
    if device == "cpu" and pad_to != 1:
        pytest.skip("padding is a GPU-kernel detail")
    kh, kw, stride, padding, dilation, H, W = geom
    N, C = 2, 5
    x = (rng.standard_normal((N, C, H, W)) + 0.5).astype(dtype)   # no exact zeros
    R = kh * kw * C
    taps = np.sort(rng.permutation(R)[: max(1, int(keep * R))])
    ref = unfold_reference(x.astype(np.float64), kh, kw, stride, padding, dilation)[:, taps]
    geometry = (kh, kw, stride, padding, dilation)
    x_nhwc = np.ascontiguousarray(x.transpose(0, 2, 3, 1))
    if device == "cpu":
        out = im2col_numpy(x_nhwc, TapPlan(taps, kh, kw, C), geometry)
    else:
        import cupy
        table = TapTable(taps, geometry, C, pad_to=pad_to)
        out = cupy.asnumpy(im2col_cupy(cupy.asarray(x_nhwc), table, geometry))
        assert out.shape == (ref.shape[0], -(-ref.shape[1] // pad_to) * pad_to)
        assert not out[:, ref.shape[1]:].any()                      # padding columns are zero
        out = out[:, : ref.shape[1]]
    assert out.shape == ref.shape
    assert out.dtype == dtype
    np.testing.assert_array_equal(out.astype(np.float64), ref)   # a copy: exact


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [np.float32, np.float16])
@pytest.mark.parametrize("C,keep,N,H,stride", [
    (64, 0.5, 2, 5, 1), (512, 0.5, 2, 6, 1), (256, 0.5, 2, 56, 1), (300, 0.9, 1, 30, 2)])
def test_im2col_rows_wider_than_one_block(rng, dtype, C, keep, N, H, stride):
    """Rows of 36 to 576 packs, more than one block's width: every block column writes its
    packs, the part-filled last one included; at 56x57 each thread walks six pixels, across
    output rows (the small geometries above never leave one block or one pixel)."""
    import cupy
    kh, kw, padding, dilation, W = 3, 3, (1, 1), (1, 1), H + 1
    stride = (stride, stride)
    x = (rng.standard_normal((N, C, H, W)) + 0.5).astype(dtype)
    R = kh * kw * C
    taps = np.sort(rng.permutation(R)[: int(keep * R)])
    ref = unfold_reference(x.astype(np.float64), kh, kw, stride, padding, dilation)[:, taps]
    geometry = (kh, kw, stride, padding, dilation)
    table = TapTable(taps, geometry, C, pad_to=values_per_pack(np.dtype(dtype).itemsize))
    x_nhwc = cupy.asarray(np.ascontiguousarray(x.transpose(0, 2, 3, 1)))
    out = cupy.asnumpy(im2col_cupy(x_nhwc, table, geometry))
    np.testing.assert_array_equal(out[:, : taps.size].astype(np.float64), ref)
    assert not out[:, taps.size:].any()
